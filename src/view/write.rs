//! Changes to the view: namespace (create, mkdir, symlink, unlink, rmdir,
//! rename; link is in `link.rs`) and data (write, truncate, fallocate,
//! metadata, xattrs). Each is checked here (errno rules, the write
//! scope), then made by the upper layer (`upper/`): an overlay object and
//! a journal record, or the host entry and an event log line. Namespace
//! changes hold the tree lock throughout, so the journal's order is the
//! tree's order.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use rustix::fs as rfs;

use super::copyup::seen_of;
use super::handles::Handle;
use super::serve::Opened;
use super::setattr::{clear_setid, Caller, SetAttr};
use super::upper::{self, apply_to_fd, Made, Make, Move, NewEntry, Upper, Xattr};
use super::{Context, Entry, Error, Open, Result, View, MAX_FILE_SIZE};
use super::{OUTSIDE, READ_ONLY, SPECIAL, XATTR};
use crate::error::Errno;
use crate::overlay::journal::{self, Record};
use crate::overlay::Overlay;
use crate::paths;
use crate::tree::{Ino, Kind, Origin, Tree};

const NAME_MAX: usize = 255;
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

pub(super) fn valid_name(name: &OsStr) -> Result<&str> {
    if name.len() > NAME_MAX {
        return Err(Errno(libc::ENAMETOOLONG).into());
    }
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Errno::EINVAL.into());
    }
    Ok(name)
}

impl View {
    /// A live directory `parent` and the path of `name` inside it.
    pub(super) fn dir_and_path(&self, tree: &Tree, parent: Ino, name: &str) -> Result<String> {
        let node = tree.get(parent).ok_or(Errno::ENOENT)?;
        if node.kind != Kind::Dir {
            return Err(Errno::ENOTDIR.into());
        }
        Ok(paths::join(&tree.path(parent).ok_or(Errno::ENOENT)?, name))
    }

    /// Owner of a new entry: the caller, or the directory's group when the
    /// directory is set-group-id (which new directories then inherit).
    fn new_owner(&self, tree: &Tree, parent: Ino, who: Caller) -> (u32, u32, bool) {
        match self.attr_in(tree, parent) {
            Ok(a) if u32::from(a.perm) & libc::S_ISGID != 0 => (who.uid, a.gid, true),
            _ => (who.uid, who.gid, false),
        }
    }

    /// Common path of create, mknod, mkdir and symlink: the checks, then
    /// the upper layer makes the entry and its node and records it.
    fn make_entry(
        &self,
        parent: Ino,
        name: &OsStr,
        new: NewEntry<'_>,
        who: Caller,
    ) -> Result<Made> {
        self.live()?;
        let op = match new.kind() {
            Kind::File => "create",
            Kind::Dir => "mkdir",
            Kind::Symlink => "symlink",
        };
        let Some(upper) = self.upper.as_deref() else {
            return Err(self.refuse_in(parent, name, op, Errno::EROFS, READ_ONLY));
        };
        let name = valid_name(name)?;
        let mut tree = self.write_tree();
        let path = self.dir_and_path(&tree, parent, name)?;
        if tree.child(parent, name).is_some() {
            return Err(Errno(libc::EEXIST).into());
        }
        if !self.scope.may_create(&path, new.kind()) {
            drop(tree);
            let why = self.create_reason(&path, new.kind());
            return Err(self.refuse(&path, op, Errno::EACCES, None, why));
        }
        let (owner, group, setgid) = self.new_owner(&tree, parent, who);
        let make = Make {
            parent,
            name,
            path: &path,
            new,
            owner: (owner, group),
            setgid_dir: setgid && new.kind() == Kind::Dir,
        };
        upper.make(self, &mut tree, &make)
    }

    /// `create(2)`: a new regular file, opened for writing; `register` as
    /// for [`View::open`].
    pub fn create<B: Send + Sync + 'static>(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        who: Caller,
        register: impl FnOnce(&std::fs::File) -> std::io::Result<B>,
    ) -> Result<(Entry, Open<B>)> {
        let made = self.make_entry(parent, name, NewEntry::File { mode }, who)?;
        let file = made
            .file
            .ok_or(Errno::EIO)
            .context("a new file not opened")?;
        let (ino, obj, file) = (made.ino, made.obj, Arc::new(file));
        let entry = self.getattr(ino)?;
        let fh = self.handles.insert(Handle::File {
            file: file.clone(),
            ino,
            obj,
            writable: true,
            written: Default::default(),
        });
        let opened = Opened {
            fh,
            ino,
            file,
            obj,
            writable: true,
        };
        Ok((entry, self.serve(opened, register)?))
    }

    /// `mknod(2)`: regular files only; fifos, sockets and devices are not
    /// part of a source tree and answer EPERM.
    pub fn mknod(&self, parent: Ino, name: &OsStr, mode: u32, who: Caller) -> Result<Entry> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(self.refuse_in(parent, name, "mknod", Errno::EPERM, SPECIAL));
        }
        let made = self.make_entry(parent, name, NewEntry::File { mode }, who)?;
        self.getattr(made.ino)
    }

    pub fn mkdir(&self, parent: Ino, name: &OsStr, mode: u32, who: Caller) -> Result<Entry> {
        let made = self.make_entry(parent, name, NewEntry::Dir { mode }, who)?;
        self.getattr(made.ino)
    }

    pub fn symlink(&self, parent: Ino, name: &OsStr, target: &[u8], who: Caller) -> Result<Entry> {
        if target.is_empty() {
            return Err(Errno(libc::ENOENT).into());
        }
        let made = self.make_entry(parent, name, NewEntry::Symlink { target }, who)?;
        self.getattr(made.ino)
    }

    /// Seen records for the host entries of a subtree that is about to
    /// leave its place (moved, deleted or replaced), with the content hash
    /// a commit checks against: reading it costs what the files hold, once.
    pub(super) fn vacate_records(&self, tree: &Tree, ino: Ino) -> Vec<Record> {
        let mut out = Vec::new();
        for i in tree.subtree(ino) {
            let Some(n) = tree.get(i) else { continue };
            if matches!(n.origin, Origin::Upper(_)) || n.kind == Kind::Dir {
                continue;
            }
            let Some(path) = tree.host_path(i) else {
                continue;
            };
            if self.seen_has_base(&path) {
                continue;
            }
            if let Ok(st) = self.host.lstat(&path) {
                let base = self.host_hash(&path, n.kind).ok();
                out.extend(self.note_seen(seen_of(&path, n.kind, &st, base)));
            }
        }
        out
    }

    /// Removes a subtree's overlay objects (after it left the tree). A file
    /// that keeps other names keeps its object; its ctime changes.
    pub(super) fn drop_objects(&self, ov: &Overlay, tree: &Tree, inos: &[Ino]) {
        for &i in inos.iter().rev() {
            if let Some(n) = tree.get_any(i) {
                if let Origin::Upper(obj) = n.origin {
                    match tree.holder(obj) {
                        None => drop(ov.remove(obj, n.kind)),
                        Some(_) => super::times::touch_object_ctime(ov, obj),
                    }
                }
            }
        }
    }

    fn remove_entry(&self, parent: Ino, name: &OsStr, dir: bool) -> Result<()> {
        self.live()?;
        let op = if dir { "rmdir" } else { "unlink" };
        let Some(upper) = self.upper.as_deref() else {
            return Err(self.refuse_in(parent, name, op, Errno::EROFS, READ_ONLY));
        };
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let mut tree = self.write_tree();
        self.dir_and_path(&tree, parent, name)?;
        let ino = tree.child(parent, name).ok_or(Errno::ENOENT)?;
        let node = tree.get(ino).ok_or(Errno::ENOENT)?;
        match (dir, node.kind == Kind::Dir) {
            (false, true) => return Err(Errno::EISDIR.into()),
            (true, false) => return Err(Errno::ENOTDIR.into()),
            _ => {}
        }
        let path = tree.path(ino).ok_or(Errno::ENOENT)?;
        if !self.scope.may_change(&path) {
            drop(tree);
            return Err(self.refuse(&path, op, Errno::EACCES, None, OUTSIDE));
        }
        // As Linux orders them: permission (the scope) before emptiness.
        if dir && !node.children.is_empty() {
            return Err(Errno(libc::ENOTEMPTY).into());
        }
        upper.remove(self, &mut tree, ino, &path, dir)
    }

    pub fn unlink(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove_entry(parent, name, false)
    }

    pub fn rmdir(&self, parent: Ino, name: &OsStr) -> Result<()> {
        self.remove_entry(parent, name, true)
    }

    /// Whether every node of `ino`'s subtree may appear under `new_path`.
    fn subtree_in_scope(&self, tree: &Tree, ino: Ino, new_path: &str) -> bool {
        let Some(old) = tree.path(ino) else {
            return false;
        };
        tree.subtree(ino).into_iter().all(|i| {
            let (Some(p), Some(n)) = (tree.path(i), tree.get(i)) else {
                return false;
            };
            let moved = format!("{new_path}{}", &p[old.len()..]);
            self.scope.may_create(&moved, n.kind)
        })
    }

    /// The put records of `ino`'s subtree once moved to `to`, computed
    /// before the move (the journal is written first, so a refused append
    /// leaves the tree as it was). A move pins untouched host nodes to
    /// their old host path, which is what their records name already.
    pub(super) fn moved_puts(tree: &Tree, ino: Ino, to: &str) -> Vec<Record> {
        let Some(from) = tree.path(ino) else {
            return Vec::new();
        };
        tree.subtree(ino)
            .into_iter()
            .filter_map(|i| journal::put_record(tree, i))
            .map(|r| match r {
                Record::Put {
                    path,
                    kind,
                    obj,
                    host,
                } => Record::Put {
                    path: format!("{to}{}", path.get(from.len()..).unwrap_or_default()),
                    kind,
                    obj,
                    host,
                },
                other => other,
            })
            .collect()
    }

    /// Appends records to the overlay journal. When they are refused
    /// (EDQUOT, I/O), what `note_seen` recorded for them is taken back, so
    /// the view knows no more of the host than the journal does.
    pub(super) fn journal(&self, ov: &Overlay, records: &[Record]) -> Result<()> {
        let Err(e) = ov.append(records) else {
            return Ok(());
        };
        let paths: Vec<&str> = records
            .iter()
            .filter_map(|r| match r {
                Record::Seen(s) => Some(s.path.as_str()),
                _ => None,
            })
            .collect();
        if !paths.is_empty() {
            let journaled: Vec<_> = paths.iter().map(|p| ov.journaled_seen(p)).collect();
            let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            for (path, s) in paths.into_iter().zip(journaled) {
                match s {
                    Some(s) => seen.insert(path.to_string(), s),
                    None => seen.remove(path),
                };
            }
        }
        Err(Error::from(e).context("appending to the overlay journal"))
    }

    /// `rename(2)`/`renameat2(2)` with RENAME_NOREPLACE and RENAME_EXCHANGE.
    pub fn rename(
        &self,
        parent: Ino,
        name: &OsStr,
        newparent: Ino,
        newname: &OsStr,
        flags: u32,
    ) -> Result<()> {
        self.live()?;
        let Some(upper) = self.upper.as_deref() else {
            return Err(self.refuse_in(parent, name, "rename", Errno::EROFS, READ_ONLY));
        };
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Errno::EINVAL.into());
        }
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let newname = valid_name(newname)?;
        let mut tree = self.write_tree();
        self.dir_and_path(&tree, parent, name)?;
        let new_path = self.dir_and_path(&tree, newparent, newname)?;
        let src = tree.child(parent, name).ok_or(Errno::ENOENT)?;
        let src_path = tree.path(src).ok_or(Errno::ENOENT)?;
        let src_kind = tree.get(src).ok_or(Errno::ENOENT)?.kind;
        let dst = tree.child(newparent, newname);
        let exchange = flags & RENAME_EXCHANGE != 0;
        // In Linux's order (`do_renameat2`, then `vfs_rename`), which the
        // kernel keeps over FUSE: its checks first, then the filesystem's
        // (the write scope, then a directory's entries).
        match dst {
            Some(_) if flags & RENAME_NOREPLACE != 0 => return Err(Errno(libc::EEXIST).into()),
            None if exchange => return Err(Errno::ENOENT.into()),
            _ => {}
        }
        if tree.is_ancestor(src, newparent) {
            return Err(Errno::EINVAL.into()); // a directory into itself
        }
        if dst.is_some_and(|d| tree.is_ancestor(d, parent)) {
            // Over an ancestor of the source, which is never empty.
            let e = if exchange {
                Errno::EINVAL
            } else {
                Errno(libc::ENOTEMPTY)
            };
            return Err(e.into());
        }
        if dst.is_some_and(|d| tree.inode_of(d) == tree.inode_of(src)) {
            // The same name, or two names of one file: nothing to do (POSIX).
            return Ok(());
        }
        // The target's kind, and whether it is a directory with entries.
        let target = dst
            .and_then(|d| tree.get(d))
            .map(|n| (n.kind, !n.children.is_empty()));
        if !exchange {
            match (src_kind == Kind::Dir, target) {
                (true, Some((k, _))) if k != Kind::Dir => return Err(Errno::ENOTDIR.into()),
                (false, Some((Kind::Dir, _))) => return Err(Errno::EISDIR.into()),
                _ => {}
            }
        }
        let in_scope = self.scope.may_change(&src_path)
            && (dst.is_none() || self.scope.may_change(&new_path))
            && self.subtree_in_scope(&tree, src, &new_path)
            && (!exchange || dst.is_some_and(|d| self.subtree_in_scope(&tree, d, &src_path)));
        if !in_scope {
            drop(tree);
            let why = if self.scope.may_change(&src_path) {
                self.create_reason(&new_path, src_kind)
            } else {
                OUTSIDE
            };
            let e = self.refuse(&src_path, "rename", Errno::EACCES, Some(&new_path), why);
            return Err(e);
        }
        if !exchange && target.is_some_and(|(k, full)| k == Kind::Dir && full) {
            return Err(Errno(libc::ENOTEMPTY).into());
        }
        let mv = Move {
            parent,
            src,
            src_path,
            dst,
            newparent,
            newname,
            new_path,
            flags,
        };
        match (exchange, dst) {
            (true, Some(dst)) => upper.exchange(self, &mut tree, &mv, dst),
            _ => upper.rename(self, &mut tree, &mv),
        }
    }

    /// `setattr`: size, mode, owner and times, on the overlay object
    /// (copied up first), or through an open handle when the file was
    /// unlinked while open. Set-id bits are cleared on chown of a regular
    /// file and on a size change by anyone but root, as the kernel would on
    /// a local filesystem.
    pub fn setattr(&self, ino: Ino, fh: Option<u64>, set: SetAttr, who: Caller) -> Result<Entry> {
        self.live()?;
        let node = self
            .read_tree()
            .get_any(ino)
            .map(|n| (n.kind, n.removed))
            .ok_or(Errno::ENOENT)?;
        let (kind, removed) = node;
        if set.size.is_some() && kind != Kind::File {
            return Err(Errno::EISDIR.into());
        }
        if let Some(size) = set.size {
            file_end(size, 0)?;
        }
        let direct = self.mode == crate::policy::Mode::ReadWriteDirect;
        let handle_file = fh
            .and_then(|fh| self.handles.get(fh))
            .filter(|h| matches!(h, Handle::File { obj, .. } if obj.is_some() || direct))
            .or_else(|| {
                removed
                    .then(|| self.handles.any_to_change(ino, direct))
                    .flatten()
            });
        if !removed {
            self.check_change(ino, "setattr")?;
        }
        if removed {
            let Some(Handle::File { file, obj, .. }) = handle_file else {
                return Err(Errno::ENOENT.into());
            };
            apply_to_fd(&file, obj, self.upper()?, set, who)?;
            return self.getattr_fh(ino, fh.unwrap_or(0));
        }
        self.upper()?.setattr(self, ino, kind, set, who)?;
        self.getattr(ino)
    }

    /// `kill_suidgid`: the writer lacks CAP_FSETID, so set-user-id (and
    /// set-group-id with group execute) are cleared, as POSIX requires.
    pub fn write(&self, fh: u64, offset: u64, data: &[u8], kill_suidgid: bool) -> Result<u32> {
        self.live()?;
        let Some(Handle::File {
            file,
            obj,
            writable: true,
            written,
            ..
        }) = self.handles.get(fh)
        else {
            return Err(Errno::EBADF.into());
        };
        let end = file_end(offset, data.len() as u64)?;
        self.upper()?.resize(obj, end, true)?;
        if kill_suidgid {
            clear_setid(&file)?;
        }
        file.write_all_at(data, offset)?;
        written.fetch_add(data.len() as u64, std::sync::atomic::Ordering::Relaxed);
        Ok(data.len() as u32)
    }

    /// `fallocate(2)`: plain allocation (which may grow the file, within
    /// quota), KEEP_SIZE and PUNCH_HOLE; other modes are not supported.
    pub fn fallocate(&self, fh: u64, offset: u64, length: u64, mode: i32) -> Result<()> {
        self.live()?;
        let Some(Handle::File {
            file,
            obj,
            writable: true,
            ..
        }) = self.handles.get(fh)
        else {
            return Err(Errno::EBADF.into());
        };
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        let punch = libc::FALLOC_FL_PUNCH_HOLE | keep;
        if mode != 0 && mode != keep && mode != punch {
            return Err(Errno(libc::EOPNOTSUPP).into());
        }
        // Past the largest file: EFBIG for every mode, as the VFS answers.
        let end = file_end(offset, length)?;
        if mode == 0 {
            self.upper()?.resize(obj, end, true)?;
        }
        rfs::fallocate(
            &*file,
            rfs::FallocateFlags::from_bits_retain(mode as u32),
            offset,
            length,
        )?;
        Ok(())
    }

    /// `fsync`/`fdatasync` of an open file: its data (and, without
    /// `datasync`, its metadata) reach the disk, and whatever the upper
    /// layer needs to find it again. A read-only view has nothing to sync
    /// beyond what the host already holds.
    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let Some(Handle::File { file, obj, ino, .. }) = self.handles.get(fh) else {
            return Err(Errno::EBADF.into());
        };
        upper::sync(&file, datasync)?;
        match &self.upper {
            Some(upper) => upper.sync_file(self, ino, obj, datasync),
            None => Ok(()),
        }
    }

    /// `fsync` of a directory: every namespace change so far.
    pub fn fsyncdir(&self) -> Result<()> {
        match &self.upper {
            Some(upper) => upper.sync_namespace(),
            None => Ok(()),
        }
    }

    /// The checks of setxattr and removexattr. Only `user.*` attributes
    /// may change: others carry security meaning a view must not let an
    /// agent forge, and answer EOPNOTSUPP (POSIX ACLs included: a writable
    /// view has none, see `View::getxattr`).
    fn xattr_target<'a>(
        &self,
        ino: Ino,
        name: &'a OsStr,
        op: &'static str,
    ) -> Result<(&dyn Upper, Xattr<'a>)> {
        self.live()?;
        let path = self.read_tree().path(ino).ok_or(Errno::ENOENT);
        let attr = name.to_str();
        let Some(upper) = self.upper.as_deref() else {
            let path = path.ok();
            return Err(self.refuse_at(path.as_deref(), op, Errno::EROFS, attr, READ_ONLY));
        };
        let path = path?;
        if !self.scope.may_change(&path) {
            return Err(self.refuse(&path, op, Errno::EACCES, attr, OUTSIDE));
        }
        match attr {
            Some(name) if name.starts_with("user.") => Ok((upper, Xattr { ino, path, name })),
            // As a filesystem without support for them answers: tools (cp
            // -p, sed -i, rsync) take EOPNOTSUPP as "no ACLs, no security
            // labels here" and carry on with the mode bits.
            _ => Err(self.refuse(&path, op, Errno(libc::EOPNOTSUPP), attr, XATTR)),
        }
    }

    pub fn setxattr(&self, ino: Ino, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let (upper, x) = self.xattr_target(ino, name, "setxattr")?;
        upper.setxattr(self, &x, value, flags)
    }

    pub fn removexattr(&self, ino: Ino, name: &OsStr) -> Result<()> {
        let (upper, x) = self.xattr_target(ino, name, "removexattr")?;
        upper.removexattr(self, &x)
    }
}

/// The end of a change of `len` bytes at `offset`, or EFBIG when it lies
/// past [`MAX_FILE_SIZE`]: POSIX's answer for a size no file may have,
/// checked before the quota is (EDQUOT is for sizes a file may have).
fn file_end(offset: u64, len: u64) -> Result<u64> {
    offset
        .checked_add(len)
        .filter(|end| *end <= MAX_FILE_SIZE)
        .ok_or(Errno(libc::EFBIG).into())
}

impl View {
    /// The upper layer of this view, or EROFS for a read-only one.
    pub(super) fn upper(&self) -> Result<&dyn Upper> {
        Ok(self.upper.as_deref().ok_or(Errno::EROFS)?)
    }
}
