//! Changes to the view: namespace (create, mkdir, symlink, unlink, rmdir,
//! rename) and data (write, truncate, fallocate, metadata, xattrs). Every
//! change lands in the overlay; the journal gets one append per namespace
//! change, made under the tree lock so its order is the tree's order.

use std::ffi::OsStr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::SystemTime;

use rustix::fs::{self as rfs, AtFlags, Timespec, Timestamps};

use super::copyup::{gid, seen_of, uid};
use super::handles::Handle;
use super::{Attr, Opened, Result, View, MAX_FILE_SIZE};
use crate::error::Errno;
use crate::overlay::journal::{self, Record};
use crate::overlay::Overlay;
use crate::paths;
use crate::tree::{Ino, Kind, Origin, Tree};

use super::direct::DirectLog;

/// Where the changes of a writable view go.
pub(super) enum Writer<'a> {
    Overlay(&'a Overlay),
    Direct(&'a DirectLog),
}

/// Where a new entry is made: an overlay object, or the host path itself.
pub(super) enum Place<'a> {
    Object(&'a Overlay, u64),
    Host(&'a str),
}

const NAME_MAX: usize = 255;
const RENAME_NOREPLACE: u32 = 1;
const RENAME_EXCHANGE: u32 = 2;

/// The caller of a request: new entries belong to them.
#[derive(Clone, Copy, Debug)]
pub struct Caller {
    pub uid: u32,
    pub gid: u32,
}

/// A time to set: a given instant or "now".
#[derive(Clone, Copy, Debug)]
pub enum SetTime {
    At(SystemTime),
    Now,
}

/// The attribute changes of one `setattr`.
#[derive(Clone, Copy, Debug, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<SetTime>,
    pub mtime: Option<SetTime>,
}

fn valid_name(name: &OsStr) -> Result<&str> {
    if name.len() > NAME_MAX {
        return Err(Errno(libc::ENAMETOOLONG));
    }
    let name = name.to_str().ok_or(Errno::EINVAL)?;
    if name.is_empty() || name == "." || name == ".." || name.contains('/') {
        return Err(Errno::EINVAL);
    }
    Ok(name)
}

fn timespec(t: SetTime) -> Timespec {
    match t {
        SetTime::Now => Timespec {
            tv_sec: 0,
            tv_nsec: rfs::UTIME_NOW,
        },
        SetTime::At(t) => {
            let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
            Timespec {
                tv_sec: d.as_secs() as i64,
                tv_nsec: d.subsec_nanos() as _,
            }
        }
    }
}

const OMIT: Timespec = Timespec {
    tv_sec: 0,
    tv_nsec: rfs::UTIME_OMIT,
};

impl View {
    /// A live directory `parent` and the path of `name` inside it.
    fn dir_and_path(&self, tree: &Tree, parent: Ino, name: &str) -> Result<String> {
        let node = tree.get(parent).ok_or(Errno::ENOENT)?;
        if node.kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
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

    /// Common path of create, mknod, mkdir and symlink: checks, makes the
    /// entry with `make` (an overlay object, or on the host in direct
    /// mode), gives it to the caller, inserts the node and journals or
    /// logs it. A file's `mode` is set again after the chown when it has
    /// set-id bits: chown(2) clears them, even root's.
    fn make_entry(
        &self,
        parent: Ino,
        name: &OsStr,
        (kind, mode): (Kind, u32),
        who: Caller,
        make: impl FnOnce(Place<'_>, bool) -> std::io::Result<()>,
    ) -> Result<(Ino, Option<u64>)> {
        self.live()?;
        let writer = self.writer()?;
        let name = valid_name(name)?;
        let mut tree = self.write_tree();
        let path = self.dir_and_path(&tree, parent, name)?;
        if tree.child(parent, name).is_some() {
            return Err(Errno(libc::EEXIST));
        }
        if !self.scope.may_create(&path, kind) {
            return Err(Errno::EACCES);
        }
        let (owner, group, setgid) = self.new_owner(&tree, parent, who);
        let setgid_dir = setgid && kind == Kind::Dir;
        let setid_file = kind == Kind::File && mode & (libc::S_ISUID | libc::S_ISGID) != 0;
        let mode = rfs::Mode::from_raw_mode(mode & 0o7777);
        match writer {
            Writer::Overlay(ov) => {
                let obj = ov.new_obj();
                ov.quota.add_object(obj, 0, kind == Kind::File)?;
                let obj_name = Overlay::name(obj);
                let made = make(Place::Object(ov, obj), setgid_dir)
                    .and_then(|_| {
                        give_away(rfs::chownat(
                            ov.objects_fd(),
                            &obj_name,
                            Some(uid(owner)),
                            Some(gid(group)),
                            AtFlags::SYMLINK_NOFOLLOW,
                        ))
                    })
                    .and_then(|_| match setid_file {
                        true => Ok(rfs::chmodat(
                            ov.objects_fd(),
                            &obj_name,
                            mode,
                            AtFlags::empty(),
                        )?),
                        false => Ok(()),
                    });
                if let Err(e) = made {
                    let _ = ov.remove(obj, kind);
                    return Err(e.into());
                }
                let ino = tree
                    .insert(parent, name, kind, Origin::Upper(obj))
                    .ok_or(Errno::EIO)?;
                let rec: Vec<Record> = journal::put_record(&tree, ino).into_iter().collect();
                if let Err(e) = ov.append(&rec) {
                    tree.remove(ino);
                    let _ = ov.remove(obj, kind);
                    return Err(e.into());
                }
                Ok((ino, Some(obj)))
            }
            Writer::Direct(log) => {
                let made = make(Place::Host(&path), setgid_dir)
                    .and_then(|_| {
                        let r = self.host.chown(&path, Some(owner), Some(group));
                        match r {
                            Err(e) if e.raw_os_error() == Some(libc::EPERM) => Ok(()),
                            other => other,
                        }
                    })
                    .and_then(|_| match setid_file {
                        true => self.host.chmod(&path, mode.bits()),
                        false => Ok(()),
                    });
                if let Err(e) = made {
                    let _ = self.host.remove(&path, kind == Kind::Dir);
                    return Err(e.into());
                }
                let ino = tree
                    .insert(parent, name, kind, Origin::InPlace)
                    .ok_or(Errno::EIO)?;
                let op = match kind {
                    Kind::File => "create",
                    Kind::Dir => "mkdir",
                    Kind::Symlink => "symlink",
                };
                log.log(op, &path, None, None)?;
                Ok((ino, None))
            }
        }
    }

    /// `create(2)`: a new regular file, opened for writing.
    pub fn create(
        &self,
        parent: Ino,
        name: &OsStr,
        mode: u32,
        who: Caller,
    ) -> Result<(Attr, Opened)> {
        let mut file = None;
        let (ino, obj) = self.make_entry(parent, name, (Kind::File, mode), who, |place, _| {
            file = Some(match place {
                Place::Object(ov, obj) => ov.create_file(obj, mode)?,
                Place::Host(path) => self.host.create_file(path, mode)?,
            });
            Ok(())
        })?;
        let file = Arc::new(file.ok_or(Errno::EIO)?);
        let attr = self.getattr(ino)?;
        let fh = self.handles.insert(Handle::File {
            file: file.clone(),
            ino,
            obj,
            writable: true,
            written: Default::default(),
        });
        Ok((
            attr,
            Opened {
                fh,
                file,
                obj,
                writable: true,
            },
        ))
    }

    /// `mknod(2)`: regular files only; fifos, sockets and devices are not
    /// part of a source tree and answer EPERM.
    pub fn mknod(&self, parent: Ino, name: &OsStr, mode: u32, who: Caller) -> Result<Attr> {
        if mode & libc::S_IFMT != libc::S_IFREG && mode & libc::S_IFMT != 0 {
            return Err(Errno::EPERM);
        }
        let make = |place: Place<'_>, _| match place {
            Place::Object(ov, obj) => ov.create_file(obj, mode).map(drop),
            Place::Host(path) => self.host.create_file(path, mode).map(drop),
        };
        let (ino, _) = self.make_entry(parent, name, (Kind::File, mode), who, make)?;
        self.getattr(ino)
    }

    pub fn mkdir(&self, parent: Ino, name: &OsStr, mode: u32, who: Caller) -> Result<Attr> {
        let (ino, _) = self.make_entry(parent, name, (Kind::Dir, mode), who, |place, setgid| {
            // mkdir(2) ignores S_ISGID in its mode; set it explicitly.
            let sgid_mode = (mode & 0o7777) | libc::S_ISGID;
            match place {
                Place::Object(ov, obj) => {
                    ov.mkdir(obj, mode)?;
                    if setgid {
                        rfs::chmodat(
                            ov.objects_fd(),
                            Overlay::name(obj),
                            rfs::Mode::from_raw_mode(sgid_mode),
                            AtFlags::empty(),
                        )?;
                    }
                }
                Place::Host(path) => {
                    self.host.mkdir(path, mode)?;
                    if setgid {
                        self.host.chmod(path, sgid_mode)?;
                    }
                }
            }
            Ok(())
        })?;
        self.getattr(ino)
    }

    pub fn symlink(&self, parent: Ino, name: &OsStr, target: &[u8], who: Caller) -> Result<Attr> {
        if target.is_empty() {
            return Err(Errno(libc::ENOENT));
        }
        let make = |place: Place<'_>, _| match place {
            Place::Object(ov, obj) => ov.symlink(obj, target),
            Place::Host(path) => self.host.symlink(path, target),
        };
        let (ino, _) = self.make_entry(parent, name, (Kind::Symlink, 0o777), who, make)?;
        self.getattr(ino)
    }

    /// Hard links are not supported: each path is one patch.
    pub fn link(&self, ino: Ino) -> Result<Attr> {
        self.live()?;
        self.writer()?;
        self.read_tree().get(ino).ok_or(Errno::ENOENT)?;
        Err(Errno::EPERM)
    }

    /// Seen records for the host entries of a subtree that is about to
    /// leave its place (moved, deleted or replaced), with the content hash
    /// a commit checks against: reading it costs what the files hold, once.
    fn vacate_records(&self, tree: &Tree, ino: Ino) -> Vec<Record> {
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

    /// Removes a subtree's overlay objects (after it left the tree).
    fn drop_objects(&self, ov: &Overlay, tree: &Tree, inos: &[Ino]) {
        for &i in inos.iter().rev() {
            if let Some(n) = tree.get_any(i) {
                if let Origin::Upper(obj) = n.origin {
                    let _ = ov.remove(obj, n.kind);
                }
            }
        }
    }

    fn remove_entry(&self, parent: Ino, name: &OsStr, dir: bool) -> Result<()> {
        self.live()?;
        let writer = self.writer()?;
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let mut tree = self.write_tree();
        self.dir_and_path(&tree, parent, name)?;
        let ino = tree.child(parent, name).ok_or(Errno::ENOENT)?;
        let node = tree.get(ino).ok_or(Errno::ENOENT)?;
        match (dir, node.kind == Kind::Dir) {
            (false, true) => return Err(Errno::EISDIR),
            (true, false) => return Err(Errno::ENOTDIR),
            _ => {}
        }
        let path = tree.path(ino).ok_or(Errno::ENOENT)?;
        if !self.scope.may_change(&path) {
            return Err(Errno::EACCES);
        }
        // As Linux orders them: permission (the scope) before emptiness.
        if dir && !node.children.is_empty() {
            return Err(Errno(libc::ENOTEMPTY));
        }
        match writer {
            Writer::Overlay(ov) => {
                let mut records = self.vacate_records(&tree, ino);
                records.push(Record::Del { path });
                self.journal(ov, &records)?;
                tree.remove(ino);
                self.drop_objects(ov, &tree, &[ino]);
            }
            Writer::Direct(log) => {
                self.host.remove(&path, dir)?;
                tree.remove(ino);
                log.log(if dir { "rmdir" } else { "unlink" }, &path, None, None)?;
            }
        }
        Ok(())
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
    fn moved_puts(tree: &Tree, ino: Ino, to: &str) -> Vec<Record> {
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
        Err(e.into())
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
        let writer = self.writer()?;
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Errno::EINVAL);
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
            Some(_) if flags & RENAME_NOREPLACE != 0 => return Err(Errno(libc::EEXIST)),
            None if exchange => return Err(Errno::ENOENT),
            _ => {}
        }
        if tree.is_ancestor(src, newparent) {
            return Err(Errno::EINVAL); // a directory into itself
        }
        if dst.is_some_and(|d| tree.is_ancestor(d, parent)) {
            // Over an ancestor of the source, which is never empty.
            return Err(if exchange {
                Errno::EINVAL
            } else {
                Errno(libc::ENOTEMPTY)
            });
        }
        if dst == Some(src) {
            return Ok(());
        }
        // The target's kind, and whether it is a directory with entries.
        let target = dst
            .and_then(|d| tree.get(d))
            .map(|n| (n.kind, !n.children.is_empty()));
        if !exchange {
            match (src_kind == Kind::Dir, target) {
                (true, Some((k, _))) if k != Kind::Dir => return Err(Errno::ENOTDIR),
                (false, Some((Kind::Dir, _))) => return Err(Errno::EISDIR),
                _ => {}
            }
        }
        let in_scope = self.scope.may_change(&src_path)
            && (dst.is_none() || self.scope.may_change(&new_path))
            && self.subtree_in_scope(&tree, src, &new_path)
            && (!exchange || dst.is_some_and(|d| self.subtree_in_scope(&tree, d, &src_path)));
        if !in_scope {
            return Err(Errno::EACCES);
        }

        if let (true, Some(dst)) = (exchange, dst) {
            let ov = match writer {
                Writer::Overlay(ov) => ov,
                Writer::Direct(log) => {
                    self.host.rename(&src_path, &new_path, flags)?;
                    tree.exchange(src, dst);
                    tree.mark_in_place(src);
                    tree.mark_in_place(dst);
                    return Ok(log.log("exchange", &src_path, Some(&new_path), None)?);
                }
            };
            let mut records = self.vacate_records(&tree, src);
            records.extend(self.vacate_records(&tree, dst));
            records.push(Record::Del {
                path: src_path.clone(),
            });
            records.push(Record::Del {
                path: new_path.clone(),
            });
            records.extend(Self::moved_puts(&tree, src, &new_path));
            records.extend(Self::moved_puts(&tree, dst, &src_path));
            self.journal(ov, &records)?;
            tree.exchange(src, dst);
            return Ok(());
        }

        if target.is_some_and(|(k, full)| k == Kind::Dir && full) {
            return Err(Errno(libc::ENOTEMPTY));
        }
        let mut records = Vec::new();
        let ov = match writer {
            Writer::Overlay(ov) => ov,
            Writer::Direct(log) => {
                self.host.rename(&src_path, &new_path, flags)?;
                if let Some(dst) = dst {
                    tree.remove(dst);
                }
                tree.move_to(src, newparent, newname);
                tree.mark_in_place(src);
                return Ok(log.log("rename", &src_path, Some(&new_path), None)?);
            }
        };
        records.extend(self.vacate_records(&tree, src));
        if let Some(dst) = dst {
            records.extend(self.vacate_records(&tree, dst));
            records.push(Record::Del {
                path: new_path.clone(),
            });
        }
        records.push(Record::Del { path: src_path });
        records.extend(Self::moved_puts(&tree, src, &new_path));
        self.journal(ov, &records)?;
        if let Some(dst) = dst {
            tree.remove(dst);
            self.drop_objects(ov, &tree, &[dst]);
        }
        tree.move_to(src, newparent, newname);
        Ok(())
    }

    /// Opens `ino` for writing: copy-up, then the object read-write.
    pub(super) fn open_for_write(
        &self,
        ino: Ino,
        truncate: bool,
    ) -> Result<(std::fs::File, Option<u64>)> {
        let ov = match self.writer()? {
            Writer::Overlay(ov) => ov,
            Writer::Direct(log) => {
                let path = self.read_tree().path(ino).ok_or(Errno::ENOENT)?;
                let file = self.host.open_file_rw(&path)?;
                if truncate {
                    file.set_len(0)?;
                    log.log("truncate", &path, None, Some(0))?;
                }
                log.log("open_write", &path, None, None)?;
                return Ok((file, None));
            }
        };
        let obj = self.copy_up(ino, !truncate)?;
        let file = ov.open_file(obj, true)?;
        if truncate {
            ov.quota.resize(obj, 0, false)?;
            file.set_len(0)?;
        }
        Ok((file, Some(obj)))
    }

    /// `setattr`: size, mode, owner and times, on the overlay object
    /// (copied up first), or through an open handle when the file was
    /// unlinked while open. Set-id bits are cleared on chown of a regular
    /// file and on a size change by anyone but root, as the kernel would on
    /// a local filesystem.
    pub fn setattr(&self, ino: Ino, fh: Option<u64>, set: SetAttr, who: Caller) -> Result<Attr> {
        self.live()?;
        let node = self
            .read_tree()
            .get_any(ino)
            .map(|n| (n.kind, n.removed))
            .ok_or(Errno::ENOENT)?;
        let (kind, removed) = node;
        if set.size.is_some() && kind != Kind::File {
            return Err(Errno::EISDIR);
        }
        if let Some(size) = set.size {
            file_end(size, 0)?;
        }
        let handle_file = fh
            .and_then(|fh| self.handles.get(fh))
            .or_else(|| removed.then(|| self.handles.any_for(ino)).flatten());
        if !removed {
            self.check_change(ino)?;
        }
        if removed {
            let Some(Handle::File { file, obj, .. }) = handle_file else {
                return Err(Errno::ENOENT);
            };
            apply_to_fd(&file, obj, self.overlay.as_ref(), set, who)?;
            return self.getattr_fh(ino, fh.unwrap_or(0));
        }
        let ov = match self.writer()? {
            Writer::Overlay(ov) => ov,
            Writer::Direct(log) => {
                self.direct_setattr(ino, kind, set, log)?;
                return self.getattr(ino);
            }
        };
        let obj = self.copy_up(ino, set.size != Some(0))?;
        if kind == Kind::File {
            let file = ov.open_file(obj, true)?;
            apply_to_fd(&file, Some(obj), Some(ov), set, who)?;
            return self.getattr(ino);
        }
        // Directories and symlinks: by name in the objects directory.
        let name = Overlay::name(obj);
        let dir = ov.objects_fd();
        if let Some(mode) = set.mode {
            if kind != Kind::Symlink {
                rfs::chmodat(
                    dir,
                    &name,
                    rfs::Mode::from_raw_mode(mode & 0o7777),
                    AtFlags::empty(),
                )?;
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            rfs::chownat(
                dir,
                &name,
                set.uid.map(uid),
                set.gid.map(gid),
                AtFlags::SYMLINK_NOFOLLOW,
            )?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            rfs::utimensat(dir, &name, &timestamps(set), AtFlags::SYMLINK_NOFOLLOW)?;
        }
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
            return Err(Errno::EBADF);
        };
        let end = file_end(offset, data.len() as u64)?;
        if let (Some(obj), Some(ov)) = (obj, &self.overlay) {
            ov.quota.resize(obj, end, true)?;
        }
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
            return Err(Errno::EBADF);
        };
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        let punch = libc::FALLOC_FL_PUNCH_HOLE | keep;
        if mode != 0 && mode != keep && mode != punch {
            return Err(Errno(libc::EOPNOTSUPP));
        }
        // Past the largest file: EFBIG for every mode, as the VFS answers.
        let end = file_end(offset, length)?;
        if mode == 0 {
            if let (Some(obj), Some(ov)) = (obj, &self.overlay) {
                ov.quota.resize(obj, end, true)?;
            }
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
    /// `datasync`, its metadata) reach the disk, so does the object's
    /// directory entry (once per object), and so does the journal up
    /// to now, which holds every record naming the object (records are
    /// appended before a change is answered, and the journal is synced
    /// whole). A handle opened on the host file before a copy-up syncs the
    /// object its inode reads from now. A read-only view has nothing to
    /// sync beyond what the host already holds.
    pub fn fsync(&self, fh: u64, datasync: bool) -> Result<()> {
        let sync = |file: &std::fs::File| -> Result<()> {
            if datasync {
                file.sync_data()?;
            } else {
                file.sync_all()?;
            }
            Ok(())
        };
        let Some(Handle::File { file, obj, ino, .. }) = self.handles.get(fh) else {
            return Err(Errno::EBADF);
        };
        sync(&file)?;
        if let Some(ov) = &self.overlay {
            let now = self.copied_up(ino);
            match (obj, now) {
                (None, Some(o)) => sync(&ov.open_file(o, false)?)?,
                (Some(a), Some(b)) if a != b => sync(&ov.open_file(b, false)?)?,
                _ => {}
            }
            if let Some(o) = now.or(obj) {
                ov.sync_entry(o)?;
            }
            ov.sync()?;
        }
        Ok(())
    }

    /// `fsync` of a directory: the journal, where every namespace change
    /// (and the journal's own rename after a compaction) is recorded.
    pub fn fsyncdir(&self) -> Result<()> {
        if let Some(ov) = &self.overlay {
            ov.sync()?;
        }
        Ok(())
    }

    /// The checks of setxattr and removexattr. Only `user.*` attributes
    /// may change: others carry security meaning a view must not let an
    /// agent forge, and answer EOPNOTSUPP (POSIX ACLs included: a writable
    /// view has none, see `View::getxattr`).
    fn xattr_target<'a>(&self, ino: Ino, name: &'a OsStr) -> Result<(Writer<'_>, &'a str, String)> {
        self.live()?;
        let writer = self.writer()?;
        let path = self.read_tree().path(ino).ok_or(Errno::ENOENT)?;
        if !self.scope.may_change(&path) {
            return Err(Errno::EACCES);
        }
        match name.to_str() {
            Some(n) if n.starts_with("user.") => Ok((writer, n, path)),
            // As a filesystem without support for them answers: tools (cp
            // -p, sed -i, rsync) take EOPNOTSUPP as "no ACLs, no security
            // labels here" and carry on with the mode bits.
            _ => Err(Errno(libc::EOPNOTSUPP)),
        }
    }

    pub fn setxattr(&self, ino: Ino, name: &OsStr, value: &[u8], flags: i32) -> Result<()> {
        let (writer, name, path) = self.xattr_target(ino, name)?;
        let ov = match writer {
            Writer::Overlay(ov) => ov,
            Writer::Direct(log) => {
                self.host.setxattr(&path, name, value, flags)?;
                return Ok(log.log("setxattr", &path, None, None)?);
            }
        };
        let obj = self.copy_up(ino, true)?;
        Ok(ov.setxattr(obj, name, value, flags)?)
    }

    pub fn removexattr(&self, ino: Ino, name: &OsStr) -> Result<()> {
        let (writer, name, path) = self.xattr_target(ino, name)?;
        let ov = match writer {
            Writer::Overlay(ov) => ov,
            Writer::Direct(log) => {
                self.host.removexattr(&path, name)?;
                return Ok(log.log("removexattr", &path, None, None)?);
            }
        };
        let obj = self.copy_up(ino, true)?;
        Ok(ov.removexattr(obj, name)?)
    }
}

fn timestamps(set: SetAttr) -> Timestamps {
    Timestamps {
        last_access: set.atime.map_or(OMIT, timespec),
        last_modification: set.mtime.map_or(OMIT, timespec),
    }
}

/// Applies a setattr to an open regular file (an overlay object, or a
/// host file in a direct view), with quota accounting for size changes.
fn apply_to_fd(
    file: &std::fs::File,
    obj: Option<u64>,
    ov: Option<&Overlay>,
    set: SetAttr,
    who: Caller,
) -> Result<()> {
    if let Some(size) = set.size {
        if let (Some(obj), Some(ov)) = (obj, ov) {
            ov.quota.resize(obj, size, false)?;
        }
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

/// Clears S_ISUID, and S_ISGID when group-execute is set (otherwise it
/// marks mandatory locking and stays), on an open file.
fn clear_setid(file: &std::fs::File) -> Result<()> {
    let st = rfs::fstat(file)?;
    let mut mode = st.st_mode & 0o7777;
    let before = mode;
    mode &= !libc::S_ISUID;
    if mode & libc::S_IXGRP != 0 {
        mode &= !libc::S_ISGID;
    }
    if mode != before {
        rfs::fchmod(file, rfs::Mode::from_raw_mode(mode))?;
    }
    Ok(())
}

/// The end of a change of `len` bytes at `offset`, or EFBIG when it lies
/// past [`MAX_FILE_SIZE`]: POSIX's answer for a size no file may have,
/// checked before the quota is (EDQUOT is for sizes a file may have).
fn file_end(offset: u64, len: u64) -> Result<u64> {
    offset
        .checked_add(len)
        .filter(|end| *end <= MAX_FILE_SIZE)
        .ok_or(Errno(libc::EFBIG))
}

/// An unprivileged daemon cannot give entries away; they stay its own.
fn give_away(r: rustix::io::Result<()>) -> std::io::Result<()> {
    match r {
        Err(rustix::io::Errno::PERM) => Ok(()),
        other => other.map_err(Into::into),
    }
}

impl View {
    /// The writer of this view, or EROFS for a read-only one.
    pub(super) fn writer(&self) -> Result<Writer<'_>> {
        match (&self.overlay, &self.direct) {
            (Some(ov), _) => Ok(Writer::Overlay(ov)),
            (None, Some(log)) => Ok(Writer::Direct(log)),
            (None, None) => Err(Errno::EROFS),
        }
    }

    fn direct_setattr(&self, ino: Ino, kind: Kind, set: SetAttr, log: &DirectLog) -> Result<()> {
        let path = self.read_tree().path(ino).ok_or(Errno::ENOENT)?;
        if let Some(size) = set.size {
            if kind != Kind::File {
                return Err(Errno::EISDIR);
            }
            self.host.open_file_rw(&path)?.set_len(size)?;
            log.log("truncate", &path, None, Some(size))?;
        }
        if let Some(mode) = set.mode {
            if kind != Kind::Symlink {
                self.host.chmod(&path, mode)?;
                log.log("chmod", &path, None, None)?;
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            self.host.chown(&path, set.uid, set.gid)?;
            log.log("chown", &path, None, None)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            self.host.utimens(&path, &timestamps(set))?;
            log.log("utimens", &path, None, None)?;
        }
        Ok(())
    }
}
