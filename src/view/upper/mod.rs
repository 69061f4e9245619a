//! The upper layer of a writable view: where its changes land. Overlay
//! views make and change objects in the session's overlay and journal
//! each change (`overlay.rs`); direct views change the host tree beneath
//! its root and log each change (`direct.rs`). The checks every change
//! passes first (errno rules, the write scope) are made once, in
//! `write.rs`; this trait is the one place that asks which kind of view
//! it is. A read-only view has no upper layer: every change is EROFS.

mod direct;
mod overlay;

use std::fs::File;

use rustix::fs as rfs;

use super::copyup::{gid, uid};
use super::setattr::{clear_setid, timestamps, Caller, SetAttr};
use super::{Result, View};
use crate::overlay::Overlay;
use crate::tree::{Ino, Kind, Tree};

/// A new entry to make.
#[derive(Clone, Copy)]
pub(super) enum NewEntry<'a> {
    File { mode: u32 },
    Dir { mode: u32 },
    Symlink { target: &'a [u8] },
}

impl NewEntry<'_> {
    /// A new file's mode when it has set-id bits, which the chown that
    /// gives it to its caller clears (even root's): set again after it.
    pub fn setid_mode(&self) -> Option<u32> {
        match *self {
            NewEntry::File { mode } if mode & (libc::S_ISUID | libc::S_ISGID) != 0 => {
                Some(mode & 0o7777)
            }
            _ => None,
        }
    }

    pub fn kind(&self) -> Kind {
        match self {
            NewEntry::File { .. } => Kind::File,
            NewEntry::Dir { .. } => Kind::Dir,
            NewEntry::Symlink { .. } => Kind::Symlink,
        }
    }
}

/// A checked request to make `name` (at `path`) in directory `parent`.
pub(super) struct Make<'a> {
    pub parent: Ino,
    pub name: &'a str,
    pub path: &'a str,
    pub new: NewEntry<'a>,
    pub owner: (u32, u32),
    /// A directory made in a set-group-id directory is set-group-id too.
    pub setgid_dir: bool,
}

/// What `make` made: the node, its object, and a new file opened read-write.
pub(super) struct Made {
    pub ino: Ino,
    pub obj: Option<u64>,
    pub file: Option<File>,
}

/// A checked rename of `src` (at `src_path`, in `parent`) to `newname` in
/// `newparent` (at `new_path`), over `dst` when that name exists.
pub(super) struct Move<'a> {
    pub parent: Ino,
    pub src: Ino,
    pub src_path: String,
    pub dst: Option<Ino>,
    pub newparent: Ino,
    pub newname: &'a str,
    pub new_path: String,
    pub flags: u32,
}

/// Room left for changes, and what the changes use beyond the grant's files.
#[derive(Default)]
pub(super) struct Space {
    pub used_bytes: u64,
    pub free_bytes: u64,
    pub free_files: u64,
}

pub(super) trait Upper: Send + Sync {
    /// The overlay, whose objects nodes may read from.
    fn overlay(&self) -> Option<&Overlay> {
        None
    }

    /// Makes a new entry and its node in `tree`, and records it.
    fn make(&self, v: &View, tree: &mut Tree, m: &Make<'_>) -> Result<Made>;

    /// Removes the entry `ino` at `path` and its node.
    fn remove(&self, v: &View, tree: &mut Tree, ino: Ino, path: &str, dir: bool) -> Result<()>;

    /// Moves `mv.src` to its new name, replacing `mv.dst`.
    fn rename(&self, v: &View, tree: &mut Tree, mv: &Move<'_>) -> Result<()>;

    /// Swaps `mv.src` and `dst` (RENAME_EXCHANGE).
    fn exchange(&self, v: &View, tree: &mut Tree, mv: &Move<'_>, dst: Ino) -> Result<()>;

    /// Gives file `file` (checked: a regular file the agent may change)
    /// another name, `name` in `parent`, and records it. Takes the tree
    /// lock itself and checks the new name again under it (see
    /// `View::new_name`): an overlay copies the file up first, outside it.
    fn link(&self, v: &View, file: Ino, parent: Ino, name: &str) -> Result<()>;

    /// Opens file `ino` for writing, emptied first if `truncate`; returns
    /// its object (`None`: the host file).
    fn open_write(&self, v: &View, ino: Ino, truncate: bool) -> Result<(File, Option<u64>)>;

    /// Applies a checked `setattr` to the entry `ino` (in the tree).
    fn setattr(&self, v: &View, ino: Ino, kind: Kind, set: SetAttr, who: Caller) -> Result<()>;

    fn setxattr(&self, v: &View, x: &Xattr<'_>, value: &[u8], flags: i32) -> Result<()>;

    fn removexattr(&self, v: &View, x: &Xattr<'_>) -> Result<()>;

    /// Accounts for object `obj` (if any) changing to `size` bytes, before
    /// the change is made; `grow_only` leaves a larger size as it is.
    fn resize(&self, obj: Option<u64>, size: u64, grow_only: bool) -> Result<()>;

    /// After an open file's own data is synced: what else must reach the
    /// disk for it to be found again (its directory entry, the records
    /// naming it).
    fn sync_file(&self, v: &View, ino: Ino, obj: Option<u64>, datasync: bool) -> Result<()>;

    /// Every namespace change so far reaches the disk.
    fn sync_namespace(&self) -> Result<()>;

    /// A file handle closed.
    fn closed(&self, v: &View, c: &Closed<'_>);

    fn space(&self, v: &View) -> Result<Space>;
}

/// A file handle that closed.
pub(super) struct Closed<'a> {
    pub ino: Ino,
    pub obj: Option<u64>,
    pub file: &'a File,
    /// The kernel wrote through it straight to the file (passthrough).
    pub passthrough: bool,
    /// Bytes written through the daemon.
    pub written: u64,
}

/// A checked change of extended attribute `name` of `ino` (at `path`).
pub(super) struct Xattr<'a> {
    pub ino: Ino,
    pub path: String,
    pub name: &'a str,
}

/// Syncs an open file's data (and, without `datasync`, its metadata).
pub(super) fn sync(file: &File, datasync: bool) -> Result<()> {
    if datasync {
        file.sync_data()?;
    } else {
        file.sync_all()?;
    }
    Ok(())
}

/// Applies a setattr to an open regular file (an overlay object, or a
/// host file in a direct view), with quota accounting for size changes.
pub(super) fn apply_to_fd(
    file: &std::fs::File,
    obj: Option<u64>,
    upper: &dyn Upper,
    set: SetAttr,
    who: Caller,
) -> Result<()> {
    if let Some(size) = set.size {
        upper.resize(obj, size, false)?;
        file.set_len(size)?;
        if who.uid != 0 {
            clear_setid(file)?;
        }
    }
    if let Some(mode) = set.mode {
        rfs::fchmod(file, rfs::Mode::from_raw_mode(mode & 0o7777))?;
    }
    if set.uid.is_some() || set.gid.is_some() {
        rfs::fchown(file, set.uid.map(uid), set.gid.map(gid))?;
        if set.mode.is_none() {
            clear_setid(file)?;
        }
    }
    if set.atime.is_some() || set.mtime.is_some() {
        rfs::futimens(file, &timestamps(set))?;
    }
    Ok(())
}
