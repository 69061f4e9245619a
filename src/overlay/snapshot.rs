//! Checkpoints of a layer directory: an incremental snapshot of it, and
//! the restore that puts the live layer back to a snapshot's state.
//!
//! The layer is any directory (the FUSE engine's `overlay/`, the kernel
//! engine's overlayfs upper): files, directories, symlinks, devices and
//! FIFOs (whiteouts are 0/0 character devices), with their mode (set-id
//! bits included), owner, every xattr (all namespaces the caller may read:
//! `trusted.*` as root), atime and mtime, and hard links inside the layer.
//! Sockets are left out with a warning.
//!
//! ```text
//! CKPT/layer/           every directory of the live layer (with its
//!                       metadata), and a copy of each non-directory that
//!                       changed since the previous checkpoint
//! CKPT/manifest.jsonl   {"version":2}, then one line per entry, parents first:
//!                       its path ("" = the root), kind, the live entry's
//!                       identity (st_ino, ctime) when it was copied, and
//!                       `at`: the sibling checkpoint (`c3`) whose layer
//!                       holds the copy, when it is not this one's
//! ```
//!
//! Checkpoints are siblings (`checkpoints/c1`, `c2`, ...) and are never
//! modified or deleted, so a copy made once is referenced by every later
//! checkpoint in which the entry is unchanged: `at` always names the
//! checkpoint that made the copy (never a chain). An `at` is read only as a
//! sibling name (`c` and digits) and the copy only beneath that sibling's
//! `layer/` (see Safety); a copy missing there is an error naming the
//! checkpoint, the entry and the sibling. [`materialize`] builds the full
//! tree of a checkpoint (hard links to its copies) for a reader that wants
//! one directory. Manifests of version 1 (every copy in the checkpoint's
//! own layer) are read as they are.
//!
//! **Identity.** An entry whose inode number, ctime and type are what the
//! manifest recorded has not changed since: every change of data, mode,
//! owner, xattrs, times or link count moves the ctime. So a snapshot
//! references the previous checkpoint's copy of an unchanged entry instead
//! of copying it (or linking it: a reference costs nothing on disk), and a
//! restore keeps an unchanged live entry as it is: both cost what changed,
//! not what is. The access time is not part of it (reading a file does not
//! move the ctime): a shared or kept entry keeps the atime it had.
//! Hard links inside the layer are the entries recorded with the same
//! inode number: restore and [`materialize`] link them together again,
//! whichever checkpoint holds their copies (a changed file changes the
//! ctime of all its names, so a group is copied or referenced whole).
//! Timestamps come from a coarse clock, so an entry whose ctime was within
//! [`RACY_WINDOW_NS`] of the snapshot's start is recorded `racy` and never
//! trusted by identity (it is copied, or compared byte by byte).
//!
//! **Changes.** [`changed`] lists the non-directories that differ between
//! a checkpoint and the live layer or another checkpoint, comparing bytes
//! and metadata only where identities differ.
//!
//! **Restore.** Changed or missing non-directories are copied from the
//! checkpoint to a temporary name (`.wopfs-restore-PID-N`) in their live
//! directory and renamed over the live name, so a process that holds the
//! old file open keeps reading the old bytes. Directories present on both
//! sides are kept (a process may have its cwd there) and given the
//! checkpoint's mode, owner, xattrs and times after their children. Live
//! entries the checkpoint does not hold are removed, subtrees included (a
//! removed subtree goes as a whole); an entry whose type changed is
//! removed and recreated.
//!
//! **Safety.** The live layer is written by an untrusted agent. It is
//! walked with directory fds only: every entry is reached by one name
//! relative to its opened parent (`O_NOFOLLOW`, `AT_SYMLINK_NOFOLLOW`), a
//! path is resolved only with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`,
//! and xattrs of symlinks and devices go through `/proc/self/fd/DIR/NAME`
//! with the `l*` calls (the parent is the opened fd, the name is never
//! followed). Another filesystem mounted inside the layer is never crossed
//! (a warning names it). A regular file is first opened `O_PATH |
//! O_NOFOLLOW`, refused unless fstat says it is the file lstat saw, and
//! only then reopened for reading through `/proc/self/fd` (so a FIFO or a
//! device put in its place is never opened). Trees nested deeper than
//! [`MAX_DEPTH`] are refused.
//!
//! **Errors.** Each names the entry (its path in the layer) and what was
//! being done. A snapshot that fails removes its partial checkpoint; a
//! restore that fails leaves the live layer partly restored and says so
//! (the temporary copy it was making is removed).

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};

use base64::Engine as _;
use rustix::fs::{
    self as rfs, AtFlags, FileType, Gid, Mode, OFlags, ResolveFlags, Stat, Timespec, Timestamps,
    Uid, XattrFlags,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// What a snapshot did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct SnapStats {
    /// Entries recorded (the root included).
    pub entries: u64,
    /// Non-directories copied.
    pub copied: u64,
    /// Non-directories not copied: unchanged since the previous checkpoint
    /// (their manifest line references the checkpoint holding the copy),
    /// or another name of a file copied in this one (hard-linked to it).
    pub shared: u64,
    /// Data bytes copied.
    pub bytes_copied: u64,
    /// Paths the previous checkpoint held that the live layer no longer does.
    pub gone_since_prev: u64,
}

/// What a restore did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RestoreStats {
    /// Entries left as they were (unchanged non-directories, and
    /// directories present on both sides).
    pub kept: u64,
    /// Entries copied (or linked) from the checkpoint, directories created.
    pub restored: u64,
    /// Live entries removed (those of removed subtrees included).
    pub removed: u64,
    /// Data bytes copied.
    pub bytes_copied: u64,
    /// The paths put back or removed (a removed subtree by its top): what a
    /// reader of the layer must look at again; everything else is as it was.
    #[serde(skip)]
    pub touched: Vec<String>,
}

/// The copy of the layer inside a checkpoint directory.
pub const LAYER: &str = "layer";
/// The manifest inside a checkpoint directory.
pub const MANIFEST: &str = "manifest.jsonl";
const VERSION: u32 = 2;
/// The oldest manifest version read (version 1: no `at`).
const OLDEST_VERSION: u32 = 1;
/// How deep directories may nest in a layer.
pub const MAX_DEPTH: usize = 512;

/// What an entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    Char,
    Block,
    Fifo,
    Socket,
}

impl EntryKind {
    fn of(ft: FileType) -> EntryKind {
        match ft {
            FileType::Directory => EntryKind::Dir,
            FileType::Symlink => EntryKind::Symlink,
            FileType::CharacterDevice => EntryKind::Char,
            FileType::BlockDevice => EntryKind::Block,
            FileType::Fifo => EntryKind::Fifo,
            FileType::Socket => EntryKind::Socket,
            _ => EntryKind::File,
        }
    }
    fn name(self) -> &'static str {
        match self {
            EntryKind::Dir => "a directory",
            EntryKind::File => "a regular file",
            EntryKind::Symlink => "a symlink",
            EntryKind::Char => "a character device",
            EntryKind::Block => "a block device",
            EntryKind::Fifo => "a FIFO",
            EntryKind::Socket => "a socket",
        }
    }
}

/// An entry's identity: equal means unchanged (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Ident {
    kind: EntryKind,
    ino: u64,
    ctime_s: i64,
    ctime_ns: u32,
}

impl Ident {
    #[allow(clippy::unnecessary_cast)] // the field types differ between architectures
    fn of(st: &Stat) -> Ident {
        Ident {
            kind: kind_of(st),
            ino: ino_of(st),
            ctime_s: st.st_ctime as i64,
            ctime_ns: st.st_ctime_nsec as u32,
        }
    }
}

#[derive(Serialize, Deserialize)]
struct Header {
    version: u32,
}

/// One manifest line.
#[derive(Serialize, Deserialize)]
struct Line<'a> {
    /// The path in the layer (lossy when it is not UTF-8: then `path_b64`
    /// holds its bytes).
    #[serde(borrow)]
    path: Cow<'a, str>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    path_b64: Option<String>,
    kind: EntryKind,
    ino: u64,
    ctime_s: i64,
    ctime_ns: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    racy: bool,
    /// The sibling checkpoint whose layer holds the copy (absent: this one).
    #[serde(default, borrow, skip_serializing_if = "Option::is_none")]
    at: Option<Cow<'a, str>>,
}

/// A manifest entry as read.
#[derive(Clone, Debug)]
struct Entry {
    rel: Vec<u8>,
    id: Ident,
    /// The ctime was too recent when it was read to tell a later change
    /// apart (see [`RACY_WINDOW_NS`]): the identity proves nothing.
    racy: bool,
    /// The sibling checkpoint holding the copy (None: the own layer).
    at: Option<String>,
}

impl Entry {
    /// The identity, if it can prove the entry unchanged.
    fn trusted(&self) -> Option<Ident> {
        (!self.racy).then_some(self.id)
    }

    fn line(&self) -> Line<'_> {
        let (path, path_b64) = match std::str::from_utf8(&self.rel) {
            Ok(s) => (Cow::Borrowed(s), None),
            Err(_) => (
                Cow::Owned(lossy(&self.rel)),
                Some(base64::engine::general_purpose::STANDARD.encode(&self.rel)),
            ),
        };
        Line {
            path,
            path_b64,
            kind: self.id.kind,
            ino: self.id.ino,
            ctime_s: self.id.ctime_s,
            ctime_ns: self.id.ctime_ns,
            racy: self.racy,
            at: self.at.as_deref().map(Cow::Borrowed),
        }
    }
}

/// A checkpoint's manifest: its entries in walk order, parents first.
struct Manifest {
    entries: Vec<Entry>,
    /// The layer of each sibling an `at` names, opened.
    holders: HashMap<String, OwnedFd>,
}

/// Whether `name` can be a sibling checkpoint an `at` names: `c` and
/// digits (no `/`, no `..`).
fn is_sibling_name(name: &str) -> bool {
    name.len() > 1
        && name.len() <= 21
        && name.starts_with('c')
        && name[1..].bytes().all(|b| b.is_ascii_digit())
}

/// The directory holding checkpoint `ckpt` and its siblings.
fn parent_of(ckpt: &Path) -> &Path {
    match ckpt.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Opens `rel` ("" = the root itself) beneath the directory `root`, never
/// through a symlink or `..`.
fn open_dir_beneath(root: BorrowedFd<'_>, rel: &[u8]) -> io::Result<OwnedFd> {
    let rel: &[u8] = if rel.is_empty() { b"." } else { rel };
    Ok(rfs::openat2(
        root,
        rel,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?)
}

/// The layer of the sibling checkpoint `name` of the checkpoints in `parent`.
fn open_sibling_layer(parent: BorrowedFd<'_>, name: &str) -> io::Result<OwnedFd> {
    open_dir_beneath(parent, format!("{name}/{LAYER}").as_bytes())
}

#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn file_type(st: &Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode as u32)
}

fn kind_of(st: &Stat) -> EntryKind {
    EntryKind::of(file_type(st))
}

#[allow(clippy::unnecessary_cast)] // the field types differ between architectures
fn perm_bits(st: &Stat) -> u32 {
    st.st_mode as u32 & 0o7777
}

#[allow(clippy::unnecessary_cast)]
fn ino_of(st: &Stat) -> u64 {
    st.st_ino as u64
}

#[allow(clippy::unnecessary_cast)]
fn dev_of(st: &Stat) -> u64 {
    st.st_dev as u64
}

fn lossy(rel: &[u8]) -> String {
    String::from_utf8_lossy(rel).into_owned()
}

/// A path for messages: `.` for the root.
fn shown(rel: &[u8]) -> String {
    if rel.is_empty() {
        ".".to_string()
    } else {
        lossy(rel)
    }
}

fn join(rel: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(rel.len() + 1 + name.len());
    if !rel.is_empty() {
        v.extend_from_slice(rel);
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// (parent, last name) of a non-root path.
fn split(rel: &[u8]) -> (&[u8], &[u8]) {
    match rel.iter().rposition(|b| *b == b'/') {
        Some(i) => (&rel[..i], &rel[i + 1..]),
        None => (&[], rel),
    }
}

/// How close to the start of a snapshot a ctime may be and still prove
/// an entry unchanged later. Timestamps come from a coarse clock (a tick
/// of up to 10 ms): a change made in the same tick as the one before it
/// leaves the ctime as it was. So an entry whose ctime is within this
/// window of the snapshot's start (or after it) is recorded `racy`, and
/// is compared (or copied) instead of trusted by identity (git's "racy
/// timestamps"). An entry the agent wrote just before a checkpoint costs a
/// copy at restore; nothing can be missed.
pub const RACY_WINDOW_NS: i64 = 50_000_000;

/// The racy threshold of a snapshot starting now.
fn racy_after() -> (i64, u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let ns = now.as_secs() as i64 * 1_000_000_000 + i64::from(now.subsec_nanos()) - RACY_WINDOW_NS;
    (
        ns.div_euclid(1_000_000_000),
        ns.rem_euclid(1_000_000_000) as u32,
    )
}

fn damaged(file: &Path, line: usize, what: impl std::fmt::Display) -> Error {
    Error::io(
        format!("reading checkpoint manifest {} line {line}", file.display()),
        io::Error::new(io::ErrorKind::InvalidData, what.to_string()),
    )
}

fn read_manifest(ckpt: &Path) -> Result<Manifest> {
    let file = ckpt.join(MANIFEST);
    let f = File::open(&file).ctx(|| format!("opening checkpoint manifest {}", file.display()))?;
    let mut entries: Vec<Entry> = Vec::new();
    let mut dirs: HashSet<Vec<u8>> = HashSet::new();
    let mut seen: HashSet<Vec<u8>> = HashSet::new();
    let mut holders: HashMap<String, OwnedFd> = HashMap::new();
    let mut parent_fd: Option<OwnedFd> = None;
    let mut header = false;
    let mut version = VERSION;
    for (i, line) in io::BufReader::new(f).lines().enumerate() {
        let n = i + 1;
        let line =
            line.ctx(|| format!("reading checkpoint manifest {} line {n}", file.display()))?;
        if !header {
            let h: Header = serde_json::from_str(&line)
                .map_err(|e| damaged(&file, n, format!("not a manifest header: {e}")))?;
            if !(OLDEST_VERSION..=VERSION).contains(&h.version) {
                return Err(damaged(
                    &file,
                    n,
                    format!(
                        "version {} (this wopfs reads versions {OLDEST_VERSION} to {VERSION})",
                        h.version
                    ),
                ));
            }
            header = true;
            version = h.version;
            continue;
        }
        let l: Line = serde_json::from_str(&line).map_err(|e| damaged(&file, n, e))?;
        let rel = match &l.path_b64 {
            Some(b) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .map_err(|e| damaged(&file, n, format!("path_b64: {e}")))?,
            None => l.path.as_bytes().to_vec(),
        };
        let id = Ident {
            kind: l.kind,
            ino: l.ino,
            ctime_s: l.ctime_s,
            ctime_ns: l.ctime_ns,
        };
        if entries.is_empty() {
            if !rel.is_empty() || id.kind != EntryKind::Dir {
                return Err(damaged(
                    &file,
                    n,
                    "the first entry is not the root directory",
                ));
            }
        } else {
            let bad = rel.is_empty()
                || rel
                    .split(|b| *b == b'/')
                    .any(|c| c.is_empty() || c == b"." || c == b".." || c.contains(&0));
            if bad {
                return Err(damaged(&file, n, format!("bad path {:?}", lossy(&rel))));
            }
            let (parent, _) = split(&rel);
            if !dirs.contains(parent) {
                return Err(damaged(
                    &file,
                    n,
                    format!("{:?} comes before its directory", lossy(&rel)),
                ));
            }
        }
        if !seen.insert(rel.clone()) {
            return Err(damaged(&file, n, format!("{:?} twice", lossy(&rel))));
        }
        if id.kind == EntryKind::Dir {
            dirs.insert(rel.clone());
        }
        if let Some(at) = l.at.as_deref() {
            if version < 2 {
                return Err(damaged(&file, n, "an at in a version 1 manifest"));
            }
            if !is_sibling_name(at) {
                return Err(damaged(
                    &file,
                    n,
                    format!("bad at {at:?} (not a sibling checkpoint's name)"),
                ));
            }
            if id.kind == EntryKind::Dir {
                return Err(damaged(
                    &file,
                    n,
                    format!("the directory {:?} has an at", lossy(&rel)),
                ));
            }
            if ckpt.file_name() == Some(OsStr::new(at)) {
                return Err(damaged(
                    &file,
                    n,
                    format!("at {at:?} names this checkpoint"),
                ));
            }
            if !holders.contains_key(at) {
                if parent_fd.is_none() {
                    let p = parent_of(ckpt);
                    parent_fd = Some(
                        open_root(p)
                            .ctx(|| format!("opening the checkpoints in {}", p.display()))?,
                    );
                }
                let fd = match &parent_fd {
                    Some(parent) => open_sibling_layer(parent.as_fd(), at),
                    None => Err(io::Error::from_raw_os_error(libc::ENOENT)),
                };
                let fd = fd.map_err(|e| {
                    damaged(
                        &file,
                        n,
                        format!("at {at:?}: cannot open that checkpoint's {LAYER}: {e}"),
                    )
                })?;
                holders.insert(at.to_string(), fd);
            }
        }
        entries.push(Entry {
            rel,
            id,
            racy: l.racy,
            at: l.at.map(Cow::into_owned),
        });
    }
    if entries.is_empty() {
        return Err(damaged(&file, 1, "no root entry (the file is incomplete)"));
    }
    Ok(Manifest { entries, holders })
}

/// Where the copies of a checkpoint's non-directories are: its own layer
/// and the layers of the siblings its manifest names.
struct Copies {
    own: OwnedFd,
    holders: HashMap<String, OwnedFd>,
    /// The checkpoint, for messages.
    shown: std::path::PathBuf,
    /// The directory of the last copy looked up: (at, its path, it).
    last: Option<(Option<String>, Vec<u8>, OwnedFd)>,
}

impl Copies {
    /// The copies of checkpoint `ckpt`, whose manifest is `m` (its
    /// holders are taken).
    fn open(ckpt: &Path, m: &mut Manifest) -> Result<Copies> {
        let layer = ckpt.join(LAYER);
        let own = open_root(&layer)
            .ctx(|| format!("opening the checkpoint layer {}", layer.display()))?;
        Ok(Copies {
            own,
            holders: std::mem::take(&mut m.holders),
            shown: ckpt.to_path_buf(),
            last: None,
        })
    }

    /// The directory holding `e`'s copy (opened beneath its layer, never
    /// through a symlink) and the copy's lstat, checked to be the kind the
    /// manifest says.
    fn find(&mut self, e: &Entry) -> Result<(OwnedFd, Stat)> {
        let (parent, name) = split(&e.rel);
        let hit = matches!(&self.last, Some((at, p, _)) if *at == e.at && p == parent);
        if !hit {
            self.last = None;
            let root = match &e.at {
                None => self.own.as_fd(),
                Some(at) => match self.holders.get(at) {
                    Some(fd) => fd.as_fd(),
                    None => return Err(self.missing(e, None)),
                },
            };
            let fd = match open_dir_beneath(root, parent) {
                Ok(fd) => fd,
                Err(x) if x.raw_os_error() == Some(libc::ENOENT) => {
                    return Err(self.missing(e, None))
                }
                Err(x) => return Err(self.io(e, x)),
            };
            self.last = Some((e.at.clone(), parent.to_vec(), fd));
        }
        let Some((_, _, fd)) = &self.last else {
            return Err(self.missing(e, None));
        };
        let fd = fd.try_clone().map_err(|x| self.io(e, x))?;
        let st = lstat_at(fd.as_fd(), name).map_err(|x| self.io(e, x))?;
        match st {
            Some(st) if kind_of(&st) == e.id.kind => Ok((fd, st)),
            st => Err(self.missing(e, st.as_ref())),
        }
    }

    /// Where `e`'s copy is, for messages.
    fn held(e: &Entry) -> String {
        match &e.at {
            Some(at) => format!("its sibling checkpoint {at}"),
            None => "its own layer".to_string(),
        }
    }

    /// `e`'s copy is not there, or is `found` instead of what the manifest says.
    fn missing(&self, e: &Entry, found: Option<&Stat>) -> Error {
        let (ck, rel, held) = (self.shown.display(), shown(&e.rel), Self::held(e));
        Error::conflict(match found {
            Some(st) => format!(
                "the checkpoint {ck} is damaged: the copy of {rel} in {held} is {}, its manifest says {}",
                kind_of(st).name(),
                e.id.kind.name()
            ),
            None => format!(
                "the checkpoint {ck} is damaged: its manifest lists {rel}, held by {held}, which has no copy of it"
            ),
        })
    }

    fn io(&self, e: &Entry, x: io::Error) -> Error {
        Error::io(
            format!(
                "checkpoint {}: reading the copy of {} held by {}",
                self.shown.display(),
                shown(&e.rel),
                Self::held(e)
            ),
            x,
        )
    }
}

// ---------------------------------------------------------------------------
// Low-level helpers: every one acts on one name in an opened directory.

fn open_root(path: &Path) -> io::Result<OwnedFd> {
    Ok(rfs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

fn lstat_at(dir: BorrowedFd<'_>, name: &[u8]) -> io::Result<Option<Stat>> {
    match rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Some(st)),
        Err(rustix::io::Errno::NOENT) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

fn same_inode(a: &Stat, b: &Stat) -> bool {
    a.st_ino == b.st_ino && a.st_dev == b.st_dev
}

fn changed_under_us() -> io::Error {
    io::Error::other("the entry changed while it was read")
}

/// Opens the directory `name` (as lstat `st` saw it) in `dir`.
fn open_dir_at(dir: BorrowedFd<'_>, name: &[u8], st: &Stat) -> io::Result<OwnedFd> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    if !same_inode(&rfs::fstat(&fd)?, st) {
        return Err(changed_under_us());
    }
    Ok(fd)
}

/// The names in a directory, sorted.
fn list(dir: BorrowedFd<'_>) -> io::Result<Vec<Vec<u8>>> {
    let mut names = Vec::new();
    for entry in rfs::Dir::read_from(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    Ok(names)
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime as _,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime as _,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// A chown that an unprivileged caller may not do is skipped.
fn owner_result(r: rustix::io::Result<()>) -> io::Result<()> {
    match r {
        Err(rustix::io::Errno::PERM) if !rustix::process::geteuid().is_root() => Ok(()),
        other => Ok(other?),
    }
}

fn owner(st: &Stat) -> (Option<Uid>, Option<Gid>) {
    (
        Some(Uid::from_raw(st.st_uid)),
        Some(Gid::from_raw(st.st_gid)),
    )
}

/// Where an entry's xattrs are read and written: an open file or
/// directory, or one name in an open directory (symlinks, devices, FIFOs),
/// reached as `/proc/self/fd/DIR/NAME` with the `l*` calls: the parent is
/// the opened fd and the name is never followed.
enum XNode<'a> {
    Fd(BorrowedFd<'a>),
    At(Vec<u8>),
}

impl XNode<'_> {
    fn at(dir: BorrowedFd<'_>, name: &[u8]) -> XNode<'static> {
        let mut p = format!("/proc/self/fd/{}/", dir.as_raw_fd()).into_bytes();
        p.extend_from_slice(name);
        XNode::At(p)
    }

    /// Calls `f` with a growing buffer until the answer fits.
    fn sized(mut f: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
        let mut size = 1024;
        loop {
            let mut buf = vec![0u8; size];
            match f(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) if size < 1 << 20 => size *= 8,
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn names(&self) -> io::Result<Vec<Vec<u8>>> {
        let r = match self {
            XNode::Fd(fd) => Self::sized(|b| rfs::flistxattr(fd, b)),
            XNode::At(p) => Self::sized(|b| rfs::llistxattr(p.as_slice(), b)),
        };
        let raw = match r {
            Ok(raw) => raw,
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        Ok(raw
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect())
    }

    /// The value, or None when it is gone.
    fn get(&self, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
        let r = match self {
            XNode::Fd(fd) => Self::sized(|b| rfs::fgetxattr(fd, name, b)),
            XNode::At(p) => Self::sized(|b| rfs::lgetxattr(p.as_slice(), name, b)),
        };
        match r {
            Ok(v) => Ok(Some(v)),
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn set(&self, name: &[u8], value: &[u8]) -> io::Result<()> {
        let flags = XattrFlags::empty();
        Ok(match self {
            XNode::Fd(fd) => rfs::fsetxattr(fd, name, value, flags),
            XNode::At(p) => rfs::lsetxattr(p.as_slice(), name, value, flags),
        }?)
    }

    fn remove(&self, name: &[u8]) -> io::Result<()> {
        let r = match self {
            XNode::Fd(fd) => rfs::fremovexattr(fd, name),
            XNode::At(p) => rfs::lremovexattr(p.as_slice(), name),
        };
        match r {
            Ok(()) | Err(rustix::io::Errno::NODATA) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}

/// Gives `dst` exactly the xattrs `src` has.
fn sync_xattrs(src: &XNode<'_>, dst: &XNode<'_>) -> io::Result<()> {
    let want = src.names()?;
    for name in &want {
        let Some(value) = src.get(name)? else {
            continue;
        };
        if dst.get(name)?.as_deref() != Some(&value[..]) {
            dst.set(name, &value)
                .map_err(|e| annotate(e, &format!("setting xattr {}", lossy(name))))?;
        }
    }
    for name in dst.names()? {
        if !want.contains(&name) {
            dst.remove(&name)
                .map_err(|e| annotate(e, &format!("removing xattr {}", lossy(&name))))?;
        }
    }
    Ok(())
}

/// An io::Error with a few words of what was being done.
fn annotate(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

/// Gives the open file or directory `fd` the owner, xattrs, mode and times
/// of `st`/`src` (in that order: chown clears set-id bits).
fn meta_fd(fd: BorrowedFd<'_>, src: &XNode<'_>, st: &Stat) -> io::Result<()> {
    let (u, g) = owner(st);
    owner_result(rfs::fchown(fd, u, g)).map_err(|e| annotate(e, "setting the owner"))?;
    sync_xattrs(src, &XNode::Fd(fd))?;
    rfs::fchmod(fd, Mode::from_raw_mode(perm_bits(st)))
        .map_err(|e| annotate(e.into(), "setting the mode"))?;
    rfs::futimens(fd, &times(st)).map_err(|e| annotate(e.into(), "setting the times"))?;
    Ok(())
}

/// The same for a symlink, device or FIFO `name` in `dir`.
fn meta_at(dir: BorrowedFd<'_>, name: &[u8], src: &XNode<'_>, st: &Stat) -> io::Result<()> {
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    let (u, g) = owner(st);
    owner_result(rfs::chownat(dir, name, u, g, nofollow))
        .map_err(|e| annotate(e, "setting the owner"))?;
    sync_xattrs(src, &XNode::at(dir, name))?;
    if kind_of(st) != EntryKind::Symlink {
        // chmod follows: through an O_PATH fd of the node itself (checked
        // to be what was made), never through a name.
        let fd = rfs::openat(
            dir,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let now = rfs::fstat(&fd)?;
        if kind_of(&now) != kind_of(st) {
            return Err(changed_under_us());
        }
        rfs::chmod(
            format!("/proc/self/fd/{}", fd.as_raw_fd()).as_str(),
            Mode::from_raw_mode(perm_bits(st)),
        )
        .map_err(|e| annotate(e.into(), "setting the mode"))?;
    }
    rfs::utimensat(dir, name, &times(st), nofollow)
        .map_err(|e| annotate(e.into(), "setting the times"))?;
    Ok(())
}

/// Opens the regular file `name` in `dir` that lstat saw as `st`, for reading.
pub(super) fn open_file_at(dir: BorrowedFd<'_>, name: &[u8], st: &Stat) -> io::Result<File> {
    // First a path-only handle, checked to be the regular file lstat saw:
    // opening whatever the name holds now could open a device or a FIFO.
    let path = rfs::openat(
        dir,
        name,
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let now = rfs::fstat(&path)?;
    if !same_inode(&now, st) || kind_of(&now) != EntryKind::File {
        return Err(changed_under_us());
    }
    // Then that very inode reopened for reading through its fd.
    let proc = format!("/proc/self/fd/{}", path.as_raw_fd());
    let flags = OFlags::RDONLY | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    // Reading a copy should not move the live atime; O_NOATIME needs ownership or CAP_FOWNER.
    let fd = match rfs::open(proc.as_str(), flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rfs::open(proc.as_str(), flags, Mode::empty())?,
        r => r?,
    };
    if !same_inode(&rfs::fstat(&fd)?, st) {
        return Err(changed_under_us());
    }
    Ok(File::from(fd))
}

/// Copies the non-directory `name` in `src` (lstat `st`) as the new name
/// `dst_name` in `dst`: data, owner, xattrs, mode, times. Answers the data
/// bytes copied. What it made is removed if it fails.
fn copy_node(
    src: BorrowedFd<'_>,
    name: &[u8],
    st: &Stat,
    dst: BorrowedFd<'_>,
    dst_name: &[u8],
) -> io::Result<u64> {
    let kind = kind_of(st);
    let made = match kind {
        EntryKind::File => {
            let mut from = open_file_at(src, name, st)?;
            let fd = rfs::openat(
                dst,
                dst_name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )?;
            let mut to = File::from(fd);
            let r = io::copy(&mut from, &mut to).and_then(|n| {
                meta_fd(to.as_fd(), &XNode::Fd(from.as_fd()), st)?;
                Ok(n)
            });
            return r.inspect_err(|_| {
                let _ = rfs::unlinkat(dst, dst_name, AtFlags::empty());
            });
        }
        EntryKind::Symlink => {
            let target = rfs::readlinkat(src, name, Vec::new())?;
            rfs::symlinkat(OsStr::from_bytes(target.as_bytes()), dst, dst_name)
        }
        EntryKind::Char | EntryKind::Block | EntryKind::Fifo => {
            let ft = file_type(st);
            rfs::mknodat(
                dst,
                dst_name,
                ft,
                Mode::from_raw_mode(0o600),
                st.st_rdev as _,
            )
        }
        EntryKind::Dir | EntryKind::Socket => {
            return Err(io::Error::other(format!("cannot copy {}", kind.name())));
        }
    };
    made?;
    meta_at(dst, dst_name, &XNode::at(src, name), st).inspect_err(|_| {
        let _ = rfs::unlinkat(dst, dst_name, AtFlags::empty());
    })?;
    Ok(0)
}

/// Hard-links `rel` beneath `root` (never through a symlink) as `dst_name`
/// in `dst`, if it is a `kind` and (when given) the inode `ino`.
fn link_beneath(
    root: BorrowedFd<'_>,
    rel: &[u8],
    kind: EntryKind,
    ino: Option<u64>,
    dst: BorrowedFd<'_>,
    dst_name: &[u8],
) -> io::Result<()> {
    let (parent, name) = split(rel);
    let parent: &[u8] = if parent.is_empty() { b"." } else { parent };
    let pfd = rfs::openat2(
        root,
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    )?;
    let st = rfs::statat(&pfd, name, AtFlags::SYMLINK_NOFOLLOW)?;
    if kind_of(&st) != kind || ino.is_some_and(|i| i != ino_of(&st)) {
        return Err(changed_under_us());
    }
    Ok(rfs::linkat(&pfd, name, dst, dst_name, AtFlags::empty())?)
}

/// A checkpoint inside the layer it copies would be copied into itself,
/// and removed by a restore: refused. `ckpt`'s parent must exist.
fn refuse_inside(ckpt: &Path, live: &Path, root_st: &Stat) -> Result<()> {
    let abs = if ckpt.is_absolute() {
        ckpt.to_path_buf()
    } else {
        std::env::current_dir()
            .ctx(|| "reading the current directory")?
            .join(ckpt)
    };
    // The ancestors that exist (the checkpoint itself may not yet).
    for dir in abs.ancestors() {
        match rfs::stat(dir) {
            Ok(st) if same_inode(&st, root_st) => {
                return Err(Error::invalid(format!(
                    "the checkpoint directory {} is inside the layer {} it would copy",
                    ckpt.display(),
                    live.display()
                )))
            }
            _ => {}
        }
    }
    Ok(())
}

fn warn_other_fs(rel: &[u8]) {
    tracing::warn!(
        path = %shown(rel),
        "another filesystem is mounted in the layer: left out of the checkpoint"
    );
}

// ---------------------------------------------------------------------------
// Snapshot

/// Copies the layer `live` into the new checkpoint directory `ckpt` (made
/// 0700; an error names it if it exists). `prev`, the previous checkpoint
/// of the same layer (a sibling of `ckpt` named `c` and digits), lends
/// every unchanged non-directory: the new manifest references the
/// checkpoint holding its copy. `skip(rel)` leaves an entry (and its
/// subtree) out.
pub fn snapshot(
    live: &Path,
    ckpt: &Path,
    prev: Option<&Path>,
    skip: &dyn Fn(&str) -> bool,
) -> Result<SnapStats> {
    let root = open_root(live).ctx(|| format!("opening the layer {}", live.display()))?;
    let root_st = rfs::fstat(&root)
        .map_err(io::Error::from)
        .ctx(|| format!("reading the layer {}", live.display()))?;
    if let Some(parent) = ckpt.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent).ctx(|| format!("creating {}", parent.display()))?;
    }
    let prev = match prev {
        Some(p) => Some(read_prev(p, ckpt)?),
        None => None,
    };
    refuse_inside(ckpt, live, &root_st)?;
    match std::fs::DirBuilder::new().mode(0o700).create(ckpt) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::conflict(format!(
                "the checkpoint directory {} already exists",
                ckpt.display()
            )))
        }
        Err(e) => return Err(Error::io(format!("creating {}", ckpt.display()), e)),
    }
    let r = snapshot_into(live, &root, &root_st, ckpt, prev, skip);
    if let Err(e) = r {
        return Err(match std::fs::remove_dir_all(ckpt) {
            Ok(()) => e,
            Err(rm) => Error::io(
                format!(
                    "{e}; removing the partial checkpoint {} failed too",
                    ckpt.display()
                ),
                rm,
            ),
        });
    }
    r
}

struct Prev {
    /// Every path the previous checkpoint holds → its trusted identity and
    /// the checkpoint holding its copy.
    idents: HashMap<Vec<u8>, (Option<Ident>, Rc<str>)>,
}

/// The previous checkpoint `p` of the new checkpoint `ckpt`: its manifest
/// read (and its references checked), as a sibling of `ckpt`.
fn read_prev(p: &Path, ckpt: &Path) -> Result<Prev> {
    let not_sibling = || {
        Error::invalid(format!(
            "the previous checkpoint {} is not a sibling of {} named c and a number: its copies could not be referenced",
            p.display(),
            ckpt.display()
        ))
    };
    let name = p
        .file_name()
        .and_then(OsStr::to_str)
        .filter(|n| is_sibling_name(n))
        .ok_or_else(not_sibling)?;
    let parents = rfs::stat(parent_of(p)).and_then(|a| Ok((a, rfs::stat(parent_of(ckpt))?)));
    match parents {
        Ok((a, b)) if same_inode(&a, &b) => {}
        Ok(_) => return Err(not_sibling()),
        Err(e) => {
            return Err(Error::io(
                format!("reading the directory of {}", p.display()),
                e.into(),
            ))
        }
    }
    let m = read_manifest(p)?;
    let own: Rc<str> = Rc::from(name);
    let mut names: HashMap<String, Rc<str>> = HashMap::new();
    let idents = m
        .entries
        .into_iter()
        .map(|e| {
            let trusted = e.trusted();
            let at = match e.at {
                None => own.clone(),
                Some(at) => names
                    .entry(at)
                    .or_insert_with_key(|k| Rc::from(k.as_str()))
                    .clone(),
            };
            (e.rel, (trusted, at))
        })
        .collect();
    Ok(Prev { idents })
}

struct Snap<'a> {
    dev: u64,
    skip: &'a dyn Fn(&str) -> bool,
    prev: Option<Prev>,
    ck_root: OwnedFd,
    live_shown: &'a Path,
    entries: Vec<Entry>,
    /// A ctime at or after this (seconds, nanoseconds) is racy.
    racy_after: (i64, u32),
    /// Live inode of a file with several links, copied → its first path
    /// in the copy.
    links: HashMap<u64, Vec<u8>>,
    stats: SnapStats,
}

fn snapshot_into(
    live: &Path,
    root: &OwnedFd,
    root_st: &Stat,
    ckpt: &Path,
    prev: Option<Prev>,
    skip: &dyn Fn(&str) -> bool,
) -> Result<SnapStats> {
    let layer = ckpt.join(LAYER);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&layer)
        .ctx(|| format!("creating {}", layer.display()))?;
    let ck_root = open_root(&layer).ctx(|| format!("opening {}", layer.display()))?;
    let mut s = Snap {
        dev: dev_of(root_st),
        skip,
        prev,
        ck_root,
        live_shown: live,
        entries: Vec::new(),
        racy_after: racy_after(),
        links: HashMap::new(),
        stats: SnapStats::default(),
    };
    s.record(Vec::new(), Ident::of(root_st), None);
    let ck_root = s.ck_root.try_clone().ctx(|| "duplicating a descriptor")?;
    s.dir(root.as_fd(), ck_root.as_fd(), b"", 0)?;
    meta_fd(ck_root.as_fd(), &XNode::Fd(root.as_fd()), root_st)
        .map_err(|e| s.err(b"", "copying the metadata of", e))?;
    s.stats.entries = s.entries.len() as u64;
    if let Some(p) = &s.prev {
        let now: HashSet<&[u8]> = s.entries.iter().map(|e| e.rel.as_slice()).collect();
        s.stats.gone_since_prev = p
            .idents
            .keys()
            .filter(|r| !now.contains(r.as_slice()))
            .count() as u64;
    }
    // The copies are on disk before the manifest says the checkpoint is whole.
    rfs::syncfs(&ck_root)
        .map_err(io::Error::from)
        .ctx(|| format!("syncing {}", layer.display()))?;
    write_manifest(ckpt, &s.entries)?;
    Ok(s.stats)
}

fn write_manifest(ckpt: &Path, entries: &[Entry]) -> Result<()> {
    let file = ckpt.join(MANIFEST);
    let tmp = ckpt.join(format!("{MANIFEST}.tmp"));
    let werr = |e: io::Error| Error::io(format!("writing {}", tmp.display()), e);
    let mut w = io::BufWriter::new(File::create(&tmp).map_err(werr)?);
    let header = serde_json::to_string(&Header { version: VERSION }).map_err(|e| werr(e.into()))?;
    writeln!(w, "{header}").map_err(werr)?;
    for e in entries {
        serde_json::to_writer(&mut w, &e.line()).map_err(|e| werr(e.into()))?;
        w.write_all(b"\n").map_err(werr)?;
    }
    let f = w.into_inner().map_err(|e| werr(e.into_error()))?;
    f.sync_all().map_err(werr)?;
    std::fs::rename(&tmp, &file).ctx(|| format!("renaming {} into place", tmp.display()))?;
    File::open(ckpt)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing {}", ckpt.display()))
}

impl Snap<'_> {
    fn is_racy(&self, id: &Ident) -> bool {
        (id.ctime_s, id.ctime_ns) >= self.racy_after
    }

    fn record(&mut self, rel: Vec<u8>, id: Ident, at: Option<String>) {
        let racy = self.is_racy(&id);
        self.entries.push(Entry { rel, id, racy, at });
    }

    fn err(&self, rel: &[u8], what: &str, e: io::Error) -> Error {
        Error::io(
            format!(
                "checkpoint of {}: {what} {}",
                self.live_shown.display(),
                shown(rel)
            ),
            e,
        )
    }

    fn dir(
        &mut self,
        live: BorrowedFd<'_>,
        ck: BorrowedFd<'_>,
        rel: &[u8],
        depth: usize,
    ) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.err(
                rel,
                "copying",
                io::Error::other(format!("directories nest deeper than {MAX_DEPTH}")),
            ));
        }
        let names = list(live).map_err(|e| self.err(rel, "listing", e))?;
        for name in names {
            let crel = join(rel, &name);
            if (self.skip)(&lossy(&crel)) {
                continue;
            }
            let Some(st) = lstat_at(live, &name).map_err(|e| self.err(&crel, "reading", e))? else {
                continue; // gone since the listing
            };
            if dev_of(&st) != self.dev {
                warn_other_fs(&crel);
                continue;
            }
            let id = Ident::of(&st);
            match id.kind {
                EntryKind::Socket => {
                    tracing::warn!(path = %shown(&crel), "a socket in the layer: left out of the checkpoint");
                }
                EntryKind::Dir => {
                    self.record(crel.clone(), id, None);
                    let lfd =
                        open_dir_at(live, &name, &st).map_err(|e| self.err(&crel, "opening", e))?;
                    rfs::mkdirat(ck, name.as_slice(), Mode::from_raw_mode(0o700))
                        .map_err(|e| self.err(&crel, "copying", e.into()))?;
                    let cfd = rfs::openat(
                        ck,
                        name.as_slice(),
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                        Mode::empty(),
                    )
                    .map_err(|e| self.err(&crel, "copying", e.into()))?;
                    self.dir(lfd.as_fd(), cfd.as_fd(), &crel, depth + 1)?;
                    meta_fd(cfd.as_fd(), &XNode::Fd(lfd.as_fd()), &st)
                        .map_err(|e| self.err(&crel, "copying the metadata of", e))?;
                }
                _ => {
                    let at = self.nondir(live, ck, &name, &crel, &st)?;
                    self.record(crel, id, at);
                }
            }
        }
        Ok(())
    }

    /// Copies a non-directory, links it to the copy of another of its
    /// names, or (unchanged since the previous checkpoint) answers the
    /// checkpoint holding its copy.
    fn nondir(
        &mut self,
        live: BorrowedFd<'_>,
        ck: BorrowedFd<'_>,
        name: &[u8],
        rel: &[u8],
        st: &Stat,
    ) -> Result<Option<String>> {
        let id = Ident::of(st);
        if st.st_nlink > 1 {
            if let Some(first) = self.links.get(&id.ino) {
                match link_beneath(self.ck_root.as_fd(), first, id.kind, None, ck, name) {
                    Ok(()) => {
                        self.stats.shared += 1;
                        return Ok(None);
                    }
                    Err(e) => {
                        tracing::debug!(path = %shown(rel), error = %e, "cannot link to the first copy: copying")
                    }
                }
            }
        }
        if let Some(p) = &self.prev {
            if let Some((Some(was), at)) = p.idents.get(rel) {
                if *was == id && !self.is_racy(&id) {
                    self.stats.shared += 1;
                    return Ok(Some(at.to_string()));
                }
            }
        }
        let n = copy_node(live, name, st, ck, name).map_err(|e| self.err(rel, "copying", e))?;
        self.stats.copied += 1;
        self.stats.bytes_copied += n;
        if st.st_nlink > 1 {
            self.links.entry(id.ino).or_insert_with(|| rel.to_vec());
        }
        Ok(None)
    }
}

// ---------------------------------------------------------------------------
// Restore

static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

fn tmp_name() -> Vec<u8> {
    let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    format!(".wopfs-restore-{}-{n}", std::process::id()).into_bytes()
}

/// Makes the live layer `live` equal to checkpoint `ckpt`'s layer (see the
/// module doc). Entries for which `skip(rel)` is true are left alone.
pub fn restore(live: &Path, ckpt: &Path, skip: &dyn Fn(&str) -> bool) -> Result<RestoreStats> {
    let mut m = read_manifest(ckpt)?;
    let copies = Copies::open(ckpt, &mut m)?;
    let ck_root = copies.own.try_clone().ctx(|| "duplicating a descriptor")?;
    let live_root = open_root(live).ctx(|| format!("opening the layer {}", live.display()))?;
    let root_st = rfs::fstat(&live_root)
        .map_err(io::Error::from)
        .ctx(|| format!("reading the layer {}", live.display()))?;
    refuse_inside(ckpt, live, &root_st)?;
    let mut children: HashMap<&[u8], Vec<usize>> = HashMap::new();
    for (i, e) in m.entries.iter().enumerate().skip(1) {
        children.entry(split(&e.rel).0).or_default().push(i);
    }
    let mut r = Restore {
        dev: dev_of(&root_st),
        skip,
        entries: &m.entries,
        children,
        live_root: live_root.as_fd(),
        live_shown: live,
        groups: HashMap::new(),
        copies,
        stats: RestoreStats::default(),
    };
    r.dir(live_root.as_fd(), ck_root.as_fd(), b"", 0)?;
    let ck_st =
        rfs::fstat(&ck_root).map_err(|e| r.err(b"", "reading the checkpoint of", e.into()))?;
    meta_fd(live_root.as_fd(), &XNode::Fd(ck_root.as_fd()), &ck_st)
        .map_err(|e| r.err(b"", "restoring the metadata of", e))?;
    r.stats.kept += 1;
    Ok(r.stats)
}

struct Restore<'a> {
    dev: u64,
    skip: &'a dyn Fn(&str) -> bool,
    entries: &'a [Entry],
    children: HashMap<&'a [u8], Vec<usize>>,
    live_root: BorrowedFd<'a>,
    live_shown: &'a Path,
    /// Recorded inode of a hard-link group → (its first live path, its live inode now).
    groups: HashMap<u64, (Vec<u8>, u64)>,
    copies: Copies,
    stats: RestoreStats,
}

impl Restore<'_> {
    fn err(&self, rel: &[u8], what: &str, e: io::Error) -> Error {
        Error::io(
            format!(
                "restoring {} (left partly restored): {what} {}",
                self.live_shown.display(),
                shown(rel)
            ),
            e,
        )
    }

    fn dir(
        &mut self,
        live: BorrowedFd<'_>,
        ck: BorrowedFd<'_>,
        rel: &[u8],
        depth: usize,
    ) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.err(
                rel,
                "restoring",
                io::Error::other(format!("directories nest deeper than {MAX_DEPTH}")),
            ));
        }
        let kids = self.children.get(rel).cloned().unwrap_or_default();
        let wanted: HashSet<&[u8]> = kids
            .iter()
            .map(|i| split(&self.entries[*i].rel).1)
            .collect();
        // Live entries the checkpoint does not hold go first.
        for name in list(live).map_err(|e| self.err(rel, "listing", e))? {
            if wanted.contains(name.as_slice()) {
                continue;
            }
            let crel = join(rel, &name);
            if (self.skip)(&lossy(&crel)) {
                continue;
            }
            let Some(st) = lstat_at(live, &name).map_err(|e| self.err(&crel, "reading", e))? else {
                continue;
            };
            if dev_of(&st) != self.dev {
                warn_other_fs(&crel);
                continue;
            }
            self.stats.removed +=
                remove_entry(live, &name, &st, 0).map_err(|e| self.err(&crel, "removing", e))?;
            self.stats.touched.push(lossy(&crel));
        }
        for i in kids {
            let entries = self.entries;
            let e = &entries[i];
            let crel = e.rel.clone();
            let name = split(&crel).1.to_vec();
            if (self.skip)(&lossy(&crel)) {
                continue;
            }
            let cur = lstat_at(live, &name).map_err(|x| self.err(&crel, "reading", x))?;
            if cur.as_ref().is_some_and(|st| dev_of(st) != self.dev) {
                warn_other_fs(&crel);
                continue;
            }
            let cur_kind = cur.as_ref().map(kind_of);
            if e.id.kind != EntryKind::Dir {
                self.nondir(live, &name, e, cur.as_ref())?;
                continue;
            }
            let ck_st = lstat_at(ck, &name)
                .map_err(|x| self.err(&crel, "reading the checkpoint's copy of", x))?;
            let ck_st = self.check_copy(&crel, ck_st, EntryKind::Dir)?;
            let cfd = open_dir_at(ck, &name, &ck_st)
                .map_err(|x| self.err(&crel, "opening the checkpoint's copy of", x))?;
            let st = match (cur, cur_kind) {
                (Some(st), Some(EntryKind::Dir)) => {
                    self.stats.kept += 1;
                    st
                }
                (cur, _) => {
                    if let Some(st) = cur {
                        self.stats.removed += remove_entry(live, &name, &st, 0)
                            .map_err(|x| self.err(&crel, "removing", x))?;
                    }
                    rfs::mkdirat(live, name.as_slice(), Mode::from_raw_mode(0o700))
                        .map_err(|x| self.err(&crel, "creating", x.into()))?;
                    self.stats.restored += 1;
                    self.stats.touched.push(lossy(&crel));
                    rfs::statat(live, name.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|x| self.err(&crel, "creating", x.into()))?
                }
            };
            let lfd = open_dir_at(live, &name, &st).map_err(|x| self.err(&crel, "opening", x))?;
            self.dir(lfd.as_fd(), cfd.as_fd(), &crel, depth + 1)?;
            meta_fd(lfd.as_fd(), &XNode::Fd(cfd.as_fd()), &ck_st)
                .map_err(|x| self.err(&crel, "restoring the metadata of", x))?;
        }
        Ok(())
    }

    /// The checkpoint's copy must be what the manifest says.
    fn check_copy(&self, rel: &[u8], st: Option<Stat>, kind: EntryKind) -> Result<Stat> {
        match st {
            Some(st) if kind_of(&st) == kind => Ok(st),
            Some(st) => Err(Error::conflict(format!(
                "the checkpoint is damaged: its copy of {} is {}, its manifest says {}",
                shown(rel),
                kind_of(&st).name(),
                kind.name()
            ))),
            None => Err(Error::conflict(format!(
                "the checkpoint is damaged: it has no copy of {}, which its manifest lists",
                shown(rel)
            ))),
        }
    }

    fn nondir(
        &mut self,
        live: BorrowedFd<'_>,
        name: &[u8],
        e: &Entry,
        cur: Option<&Stat>,
    ) -> Result<()> {
        let (rel, id, trusted) = (e.rel.as_slice(), e.id, e.trusted().is_some());
        let group = self.groups.get(&id.ino).cloned();
        if let Some(st) = cur {
            let same_file = match &group {
                Some((_, ino)) => *ino == ino_of(st),
                None => true,
            };
            if trusted && Ident::of(st) == id && same_file {
                self.stats.kept += 1;
                self.groups
                    .entry(id.ino)
                    .or_insert((rel.to_vec(), ino_of(st)));
                return Ok(());
            }
        }
        let (ck, ck_st) = self.copies.find(e)?;
        let ck = ck.as_fd();
        // A temporary name nobody uses, holding the entry as it should be.
        let mut tries = 0;
        let tmp = loop {
            let tmp = tmp_name();
            let mut r = Err(io::Error::from_raw_os_error(libc::ENOENT));
            if let Some((grel, gino)) = &group {
                r = link_beneath(self.live_root, grel, id.kind, Some(*gino), live, &tmp);
                if let Err(e) = &r {
                    if e.raw_os_error() != Some(libc::EEXIST) {
                        tracing::warn!(path = %shown(rel), error = %e, "cannot link to another name of the same file: copying");
                    }
                }
            }
            if r.is_err() {
                r = copy_node(ck, name, &ck_st, live, &tmp).map(|n| {
                    self.stats.bytes_copied += n;
                });
            }
            match r {
                Ok(()) => break tmp,
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) && tries < 16 => tries += 1,
                Err(e) => return Err(self.err(rel, "copying the checkpoint's copy of", e)),
            }
        };
        let undo = |e: Error| {
            let _ = rfs::unlinkat(live, tmp.as_slice(), AtFlags::empty());
            e
        };
        if let Some(st) = cur.filter(|st| kind_of(st) == EntryKind::Dir) {
            let n =
                remove_entry(live, name, st, 0).map_err(|x| undo(self.err(rel, "removing", x)))?;
            self.stats.removed += n;
        }
        rfs::renameat(live, tmp.as_slice(), live, name)
            .map_err(|x| undo(self.err(rel, "renaming the restored copy over", x.into())))?;
        self.stats.restored += 1;
        self.stats.touched.push(lossy(rel));
        let now = rfs::statat(live, name, AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|x| self.err(rel, "reading", x.into()))?;
        self.groups
            .entry(id.ino)
            .or_insert((rel.to_vec(), ino_of(&now)));
        Ok(())
    }
}

/// Removes `name` (lstat `st`) from `dir`, a directory with its whole
/// subtree (never leaving the filesystem). Answers how many entries went.
fn remove_entry(dir: BorrowedFd<'_>, name: &[u8], st: &Stat, depth: usize) -> io::Result<u64> {
    if kind_of(st) != EntryKind::Dir {
        rfs::unlinkat(dir, name, AtFlags::empty())?;
        return Ok(1);
    }
    if depth >= MAX_DEPTH {
        return Err(io::Error::other(format!(
            "directories nest deeper than {MAX_DEPTH}"
        )));
    }
    let fd = open_dir_at(dir, name, st)?;
    let mut n = 0;
    for child in list(fd.as_fd())? {
        let Some(cst) = lstat_at(fd.as_fd(), &child)? else {
            continue;
        };
        if cst.st_dev != st.st_dev {
            return Err(io::Error::other(format!(
                "another filesystem is mounted at {}",
                lossy(&child)
            )));
        }
        n += remove_entry(fd.as_fd(), &child, &cst, depth + 1)
            .map_err(|e| annotate(e, &format!("in {}", lossy(&child))))?;
    }
    rfs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    Ok(n + 1)
}

// ---------------------------------------------------------------------------
// Materialize

/// Builds at `dest` (which must not exist; made 0700 and then given the
/// root's metadata) the full tree of checkpoint `ckpt`'s layer: its
/// directories with their metadata, and every non-directory hard-linked
/// from the checkpoint holding its copy (copied when it cannot be linked:
/// another filesystem, too many links). Names of one file are links of
/// one inode, as in the layer. What it made is removed if it fails. The
/// tree shares its files with the checkpoints: it is for reading.
pub fn materialize(ckpt: &Path, dest: &Path) -> Result<()> {
    let mut m = read_manifest(ckpt)?;
    let mut copies = Copies::open(ckpt, &mut m)?;
    match std::fs::DirBuilder::new().mode(0o700).create(dest) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(Error::conflict(format!(
                "{} already exists: a checkpoint is materialized only into a new directory",
                dest.display()
            )))
        }
        Err(e) => return Err(Error::io(format!("creating {}", dest.display()), e)),
    }
    let r = materialize_into(&m.entries, &mut copies, dest);
    if let Err(e) = r {
        return Err(match std::fs::remove_dir_all(dest) {
            Ok(()) => e,
            Err(rm) => Error::io(
                format!(
                    "{e}; removing the partial tree {} failed too",
                    dest.display()
                ),
                rm,
            ),
        });
    }
    Ok(())
}

fn materialize_into(entries: &[Entry], copies: &mut Copies, dest: &Path) -> Result<()> {
    let ckpt = copies.shown.clone();
    let err = |rel: &[u8], what: &str, e: io::Error| {
        Error::io(
            format!(
                "materializing checkpoint {} into {}: {what} {}",
                ckpt.display(),
                dest.display(),
                shown(rel)
            ),
            e,
        )
    };
    let root = open_root(dest).map_err(|e| err(b"", "opening", e))?;
    // Recorded inode of a non-directory → its first path in `dest`.
    let mut first: HashMap<u64, Vec<u8>> = HashMap::new();
    // The directory of the last entry made: (its path, it).
    let mut last: Option<(Vec<u8>, OwnedFd)> = None;
    for e in entries.iter().skip(1) {
        let (parent, name) = split(&e.rel);
        if !matches!(&last, Some((p, _)) if p == parent) {
            let fd = open_dir_beneath(root.as_fd(), parent)
                .map_err(|x| err(&e.rel, "opening the directory of", x))?;
            last = Some((parent.to_vec(), fd));
        }
        let Some((_, dir)) = &last else {
            continue;
        };
        let dir = dir.as_fd();
        if e.id.kind == EntryKind::Dir {
            rfs::mkdirat(dir, name, Mode::from_raw_mode(0o700))
                .map_err(|x| err(&e.rel, "creating", x.into()))?;
            continue;
        }
        let fallback = |x: &io::Error| {
            matches!(
                x.raw_os_error(),
                Some(libc::EXDEV | libc::EMLINK | libc::EPERM)
            )
        };
        if let Some(f) = first.get(&e.id.ino) {
            match link_beneath(root.as_fd(), f, e.id.kind, None, dir, name) {
                Ok(()) => continue,
                Err(x) if fallback(&x) => {}
                Err(x) => return Err(err(&e.rel, "linking another name of", x)),
            }
        }
        let (src, st) = copies.find(e)?;
        match rfs::linkat(src.as_fd(), name, dir, name, AtFlags::empty()) {
            Ok(()) => {}
            Err(x) if fallback(&x.into()) => {
                copy_node(src.as_fd(), name, &st, dir, name)
                    .map_err(|x| err(&e.rel, "copying", x))?;
            }
            Err(x) => return Err(err(&e.rel, "linking", x.into())),
        }
        first.entry(e.id.ino).or_insert_with(|| e.rel.clone());
    }
    drop(last);
    // Each directory's metadata after its children (deepest first: the
    // manifest lists parents first).
    for e in entries.iter().rev().filter(|e| e.id.kind == EntryKind::Dir) {
        let d = open_dir_beneath(root.as_fd(), &e.rel).map_err(|x| err(&e.rel, "opening", x))?;
        let c = open_dir_beneath(copies.own.as_fd(), &e.rel)
            .map_err(|x| err(&e.rel, "opening the checkpoint's copy of", x))?;
        let st = rfs::fstat(&c)
            .map_err(|x| err(&e.rel, "reading the checkpoint's copy of", x.into()))?;
        meta_fd(d.as_fd(), &XNode::Fd(c.as_fd()), &st)
            .map_err(|x| err(&e.rel, "copying the metadata of", x))?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Change counting

/// What [`changed`] compares a checkpoint with.
#[derive(Clone, Copy, Debug)]
pub enum Against<'a> {
    /// A live layer directory.
    Live(&'a Path),
    /// Another checkpoint directory (its `layer/` and manifest).
    Checkpoint(&'a Path),
}

/// The paths (lossy UTF-8, in walk order) of the regular files, symlinks
/// and devices/FIFOs that differ between checkpoint `ckpt` and `other`:
/// present on one side only, of another kind, or with other content,
/// symlink target, mode, owner, xattrs, mtime or device number. Identities
/// are checked first (the manifest's against the live entry, or both
/// manifests, or one shared copy), so only entries whose identity moved
/// are compared byte by byte. Directories are not listed themselves (their
/// non-directories are), nor is a change of hard-link structure alone.
/// Entries for which `skip(rel)` is true are left out.
pub fn changed(
    ckpt: &Path,
    other: Against<'_>,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<String>> {
    let a = Side::open(ckpt)?;
    match other {
        Against::Live(p) => {
            let root = open_root(p).ctx(|| format!("opening {}", p.display()))?;
            let st = rfs::fstat(&root)
                .map_err(io::Error::from)
                .ctx(|| format!("reading {}", p.display()))?;
            let mut c = Compare {
                a,
                b: None,
                b_dev: dev_of(&st),
                siblings: false,
                skip,
                shown: p,
                out: Vec::new(),
            };
            c.dir(b"", true, B::Live(Some(root.as_fd())), 0)?;
            Ok(c.out)
        }
        Against::Checkpoint(p) => {
            // Siblings share the copies a holder's name designates.
            let siblings = match (rfs::stat(parent_of(ckpt)), rfs::stat(parent_of(p))) {
                (Ok(x), Ok(y)) => same_inode(&x, &y),
                _ => false,
            };
            let mut c = Compare {
                a,
                b: Some(Side::open(p)?),
                b_dev: 0,
                siblings,
                skip,
                shown: p,
                out: Vec::new(),
            };
            c.dir(b"", true, B::Ck(true), 0)?;
            Ok(c.out)
        }
    }
}

/// A checkpoint as [`changed`] reads it: its manifest, and its copies
/// wherever they are held.
struct Side {
    /// The checkpoint directory's name: the holder of its own copies.
    name: String,
    entries: Vec<Entry>,
    index: HashMap<Vec<u8>, usize>,
    /// A directory's path → the names in it.
    children: HashMap<Vec<u8>, Vec<Vec<u8>>>,
    copies: Copies,
}

impl Side {
    fn open(ckpt: &Path) -> Result<Side> {
        let mut m = read_manifest(ckpt)?;
        let copies = Copies::open(ckpt, &mut m)?;
        let mut index = HashMap::with_capacity(m.entries.len());
        let mut children: HashMap<Vec<u8>, Vec<Vec<u8>>> = HashMap::new();
        for (i, e) in m.entries.iter().enumerate() {
            index.insert(e.rel.clone(), i);
            if i > 0 {
                let (parent, name) = split(&e.rel);
                children
                    .entry(parent.to_vec())
                    .or_default()
                    .push(name.to_vec());
            }
        }
        Ok(Side {
            name: ckpt
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            entries: m.entries,
            index,
            children,
            copies,
        })
    }

    fn get(&self, rel: &[u8]) -> Option<&Entry> {
        self.index.get(rel).map(|i| &self.entries[*i])
    }

    /// The checkpoint holding `e`'s copy.
    fn holder<'a>(&'a self, e: &'a Entry) -> &'a str {
        e.at.as_deref().unwrap_or(&self.name)
    }
}

/// The other side of a directory being compared: a live directory (None:
/// absent there), or whether the other checkpoint has it.
#[derive(Clone, Copy)]
enum B<'f> {
    Live(Option<BorrowedFd<'f>>),
    Ck(bool),
}

struct Compare<'a> {
    a: Side,
    /// The other checkpoint (None: the other side is a live layer).
    b: Option<Side>,
    /// The live layer's device.
    b_dev: u64,
    /// Both checkpoints are in the same directory.
    siblings: bool,
    skip: &'a dyn Fn(&str) -> bool,
    shown: &'a Path,
    out: Vec<String>,
}

impl Compare<'_> {
    fn err(&self, rel: &[u8], e: io::Error) -> Error {
        Error::io(
            format!(
                "comparing {} with a checkpoint: {}",
                self.shown.display(),
                shown(rel)
            ),
            e,
        )
    }

    /// Compares directory `rel` of checkpoint a (`a_here`: it has it) with `b`.
    fn dir(&mut self, rel: &[u8], a_here: bool, b: B<'_>, depth: usize) -> Result<()> {
        if depth >= MAX_DEPTH {
            return Err(self.err(
                rel,
                io::Error::other(format!("directories nest deeper than {MAX_DEPTH}")),
            ));
        }
        let mut names = std::collections::BTreeSet::new();
        if a_here {
            if let Some(k) = self.a.children.get(rel) {
                names.extend(k.iter().cloned());
            }
        }
        match b {
            B::Live(Some(fd)) => names.extend(list(fd).map_err(|e| self.err(rel, e))?),
            B::Ck(true) => {
                if let Some(k) = self.b.as_ref().and_then(|s| s.children.get(rel)) {
                    names.extend(k.iter().cloned());
                }
            }
            _ => {}
        }
        for name in names {
            let crel = join(rel, &name);
            if (self.skip)(&lossy(&crel)) {
                continue;
            }
            let ea = if a_here {
                self.a.get(&crel).cloned()
            } else {
                None
            };
            // The other side: a live entry (another filesystem mounted in
            // the live layer is not looked into), or a manifest entry.
            let (sb, eb) = match b {
                B::Live(Some(fd)) => {
                    let st = lstat_at(fd, &name).map_err(|e| self.err(&crel, e))?;
                    (st.filter(|st| dev_of(st) == self.b_dev), None)
                }
                B::Ck(true) => (None, self.b.as_ref().and_then(|s| s.get(&crel)).cloned()),
                _ => (None, None),
            };
            let ka = ea.as_ref().map(|e| e.id.kind);
            let kb = match b {
                B::Live(_) => sb.as_ref().map(kind_of),
                B::Ck(_) => eb.as_ref().map(|e| e.id.kind),
            };
            let (dir_a, dir_b) = (ka == Some(EntryKind::Dir), kb == Some(EntryKind::Dir));
            if dir_a || dir_b {
                // A non-directory facing a directory has changed.
                if (ka.is_some() && !dir_a) || (kb.is_some() && !dir_b) {
                    self.out.push(lossy(&crel));
                }
                match (b, &sb) {
                    (B::Live(Some(fd)), Some(st)) if dir_b => {
                        let sub = open_dir_at(fd, &name, st).map_err(|e| self.err(&crel, e))?;
                        self.dir(&crel, dir_a, B::Live(Some(sub.as_fd())), depth + 1)?;
                    }
                    (B::Live(_), _) => self.dir(&crel, dir_a, B::Live(None), depth + 1)?,
                    (B::Ck(_), _) => self.dir(&crel, dir_a, B::Ck(dir_b), depth + 1)?,
                }
                continue;
            }
            let (Some(ea), Some(kb)) = (ea, kb) else {
                if ka.is_some() || kb.is_some() {
                    self.out.push(lossy(&crel));
                }
                continue;
            };
            if kb == EntryKind::Socket {
                self.out.push(lossy(&crel));
                continue;
            }
            // Identities first: the manifest's against the live entry, or
            // both manifests, or one shared copy.
            let same_id = match (&sb, &eb, &self.b) {
                (Some(sb), _, _) => ea.trusted() == Some(Ident::of(sb)),
                (None, Some(eb), Some(bs)) => {
                    (ea.trusted().is_some() && ea.trusted() == eb.trusted())
                        || (self.siblings && self.a.holder(&ea) == bs.holder(eb))
                }
                _ => false,
            };
            if same_id {
                continue;
            }
            let (pa, sa) = self.a.copies.find(&ea)?;
            let (pb, sb) = match (b, sb, &eb, self.b.as_mut()) {
                (B::Live(Some(fd)), Some(st), _, _) => (fd.try_clone_to_owned(), st),
                (_, _, Some(eb), Some(bs)) => {
                    let (fd, st) = bs.copies.find(eb)?;
                    (Ok(fd), st)
                }
                _ => continue,
            };
            let pb = pb.map_err(|e| self.err(&crel, e))?;
            if same_inode(&sa, &sb) {
                continue;
            }
            if !same_node(pa.as_fd(), &name, &sa, pb.as_fd(), &sb)
                .map_err(|e| self.err(&crel, e))?
            {
                self.out.push(lossy(&crel));
            }
        }
        Ok(())
    }
}

/// Whether two non-directories `name` in `a` and `b` hold the same.
fn same_node(
    a: BorrowedFd<'_>,
    name: &[u8],
    sa: &Stat,
    b: BorrowedFd<'_>,
    sb: &Stat,
) -> io::Result<bool> {
    let kind = kind_of(sa);
    if kind != kind_of(sb)
        || (sa.st_uid, sa.st_gid) != (sb.st_uid, sb.st_gid)
        || (sa.st_mtime, sa.st_mtime_nsec) != (sb.st_mtime, sb.st_mtime_nsec)
        || (kind != EntryKind::Symlink && perm_bits(sa) != perm_bits(sb))
        || (matches!(kind, EntryKind::Char | EntryKind::Block) && sa.st_rdev != sb.st_rdev)
        || (kind == EntryKind::File && sa.st_size != sb.st_size)
    {
        return Ok(false);
    }
    match kind {
        EntryKind::File => {
            let fa = open_file_at(a, name, sa)?;
            let fb = open_file_at(b, name, sb)?;
            if !same_xattrs(&XNode::Fd(fa.as_fd()), &XNode::Fd(fb.as_fd()))? {
                return Ok(false);
            }
            same_bytes(fa, fb)
        }
        EntryKind::Symlink => {
            let ta = rfs::readlinkat(a, name, Vec::new())?;
            let tb = rfs::readlinkat(b, name, Vec::new())?;
            Ok(ta == tb && same_xattrs(&XNode::at(a, name), &XNode::at(b, name))?)
        }
        _ => same_xattrs(&XNode::at(a, name), &XNode::at(b, name)),
    }
}

fn same_xattrs(a: &XNode<'_>, b: &XNode<'_>) -> io::Result<bool> {
    let mut na = a.names()?;
    let mut nb = b.names()?;
    na.sort();
    nb.sort();
    if na != nb {
        return Ok(false);
    }
    for n in &na {
        if a.get(n)? != b.get(n)? {
            return Ok(false);
        }
    }
    Ok(true)
}

fn same_bytes(mut a: File, mut b: File) -> io::Result<bool> {
    use std::io::Read;
    let mut ba = vec![0u8; 64 * 1024];
    let mut bb = vec![0u8; 64 * 1024];
    loop {
        let n = read_full(&mut a, &mut ba)?;
        let m = read_full(&mut b, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
    fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match f.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }
}
