//! Direct views: each change is applied to the host tree beneath its root
//! and logged in the session's event log (`view/direct.rs`). Nodes stay
//! (or become) `InPlace`; there is no quota but the host's free space.

use std::fs::File;

use super::{Closed, Made, Make, Move, NewEntry, Space, Upper, Xattr};
use crate::error::Errno;
use crate::host::HostRoot;
use crate::tree::{Ino, Kind, Origin, Tree};
use crate::view::direct::DirectLog;
use crate::view::setattr::{timestamps, Caller, SetAttr};
use crate::view::{Context, Result, View};

impl Upper for DirectLog {
    fn make(&self, v: &View, tree: &mut Tree, m: &Make<'_>) -> Result<Made> {
        let kind = m.new.kind();
        let made = make_on_host(&v.host, m).and_then(|file| {
            let (owner, group) = m.owner;
            match v.host.chown(m.path, Some(owner), Some(group)) {
                // An unprivileged daemon cannot give entries away.
                Err(e) if e.raw_os_error() == Some(libc::EPERM) => {}
                other => other?,
            }
            if let Some(mode) = m.new.setid_mode() {
                v.host.chmod(m.path, mode)?;
            }
            Ok(file)
        });
        let file = match made {
            Ok(file) => file,
            Err(e) => {
                let _ = v.host.remove(m.path, kind == Kind::Dir);
                return Err(e.into());
            }
        };
        let ino = tree
            .insert(m.parent, m.name, kind, Origin::InPlace)
            .ok_or(Errno::EIO)
            .context("inserting a new node")?;
        let op = match kind {
            Kind::File => "create",
            Kind::Dir => "mkdir",
            Kind::Symlink => "symlink",
        };
        self.record(op, m.path, None, None)?;
        Ok(Made {
            ino,
            obj: None,
            file,
        })
    }

    fn remove(&self, v: &View, tree: &mut Tree, ino: Ino, path: &str, dir: bool) -> Result<()> {
        v.host.remove(path, dir)?;
        tree.remove(ino);
        self.record(if dir { "rmdir" } else { "unlink" }, path, None, None)
    }

    fn rename(&self, v: &View, tree: &mut Tree, mv: &Move<'_>) -> Result<()> {
        v.host.rename(&mv.src_path, &mv.new_path, mv.flags)?;
        if let Some(dst) = mv.dst {
            tree.remove(dst);
        }
        tree.move_to(mv.src, mv.newparent, mv.newname);
        tree.mark_in_place(mv.src);
        self.record("rename", &mv.src_path, Some(&mv.new_path), None)
    }

    fn exchange(&self, v: &View, tree: &mut Tree, mv: &Move<'_>, dst: Ino) -> Result<()> {
        v.host.rename(&mv.src_path, &mv.new_path, mv.flags)?;
        tree.exchange(mv.src, dst);
        tree.mark_in_place(mv.src);
        tree.mark_in_place(dst);
        self.record("exchange", &mv.src_path, Some(&mv.new_path), None)
    }

    fn link(&self, v: &View, file: Ino, parent: Ino, name: &str) -> Result<()> {
        let mut tree = v.write_tree();
        let path = v.new_name(&tree, parent, name)?;
        let from = tree.path(file).ok_or(Errno::ENOENT)?;
        v.host.link(&from, &path)?;
        tree.link(file, parent, name)
            .ok_or(Errno::EIO)
            .context("linking a checked name")?;
        self.record("link", &from, Some(&path), None)
    }

    fn open_write(&self, v: &View, ino: Ino, truncate: bool) -> Result<(File, Option<u64>)> {
        let path = v.read_tree().path(ino).ok_or(Errno::ENOENT)?;
        let file = v.host.open_file_rw(&path)?;
        if truncate {
            file.set_len(0)?;
            self.record("truncate", &path, None, Some(0))?;
        }
        self.record("open_write", &path, None, None)?;
        Ok((file, None))
    }

    fn setattr(&self, v: &View, ino: Ino, kind: Kind, set: SetAttr, _who: Caller) -> Result<()> {
        let path = v.read_tree().path(ino).ok_or(Errno::ENOENT)?;
        if let Some(size) = set.size {
            if kind != Kind::File {
                return Err(Errno::EISDIR.into());
            }
            v.host.open_file_rw(&path)?.set_len(size)?;
            self.record("truncate", &path, None, Some(size))?;
        }
        if let Some(mode) = set.mode {
            if kind != Kind::Symlink {
                v.host.chmod(&path, mode)?;
                self.record("chmod", &path, None, None)?;
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            v.host.chown(&path, set.uid, set.gid)?;
            self.record("chown", &path, None, None)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            v.host.utimens(&path, &timestamps(set))?;
            self.record("utimens", &path, None, None)?;
        }
        Ok(())
    }

    fn setxattr(&self, v: &View, x: &Xattr<'_>, value: &[u8], flags: i32) -> Result<()> {
        v.host.setxattr(&x.path, x.name, value, flags)?;
        self.record("setxattr", &x.path, None, None)
    }

    fn removexattr(&self, v: &View, x: &Xattr<'_>) -> Result<()> {
        v.host.removexattr(&x.path, x.name)?;
        self.record("removexattr", &x.path, None, None)
    }

    fn resize(&self, _obj: Option<u64>, _size: u64, _grow_only: bool) -> Result<()> {
        Ok(())
    }

    /// The host file is the file itself: its sync was all there is.
    fn sync_file(&self, _v: &View, _ino: Ino, _obj: Option<u64>, _datasync: bool) -> Result<()> {
        Ok(())
    }

    fn sync_namespace(&self) -> Result<()> {
        Ok(())
    }

    /// Writes are logged once per handle, at close, with their byte count.
    fn closed(&self, v: &View, c: &Closed<'_>) {
        if c.written == 0 {
            return;
        }
        let path = v
            .read_tree()
            .path(c.ino)
            .unwrap_or_else(|| "(unlinked)".into());
        if let Err(e) = self.record("write", &path, None, Some(c.written)) {
            tracing::error!(error = %e.chain(), path, "cannot log a direct write");
        }
    }

    /// The host's free space.
    fn space(&self, v: &View) -> Result<Space> {
        let s = v.host.statvfs()?;
        Ok(Space {
            used_bytes: 0,
            free_bytes: s.f_bavail.saturating_mul(s.f_frsize),
            free_files: s.f_ffree,
        })
    }
}

impl DirectLog {
    /// Logs one change; a failure to log fails the request.
    fn record(&self, op: &str, path: &str, to: Option<&str>, bytes: Option<u64>) -> Result<()> {
        self.log(op, path, to, bytes)
            .context("writing the direct view's event log")
    }
}

/// Makes the host entry `m` asks for; a new file is returned open.
fn make_on_host(host: &HostRoot, m: &Make<'_>) -> std::io::Result<Option<File>> {
    match m.new {
        NewEntry::File { mode } => return host.create_file(m.path, mode).map(Some),
        NewEntry::Dir { mode } => {
            host.mkdir(m.path, mode)?;
            if m.setgid_dir {
                // mkdir(2) ignores S_ISGID in its mode; set it explicitly.
                host.chmod(m.path, (mode & 0o7777) | libc::S_ISGID)?;
            }
        }
        NewEntry::Symlink { target } => host.symlink(m.path, target)?,
    }
    Ok(None)
}
