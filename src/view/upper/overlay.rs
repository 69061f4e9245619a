//! Overlay views: changes make and change objects in the session's
//! overlay (copying host entries up first), and every namespace change is
//! journaled under the tree lock, before the tree changes, so the
//! journal's order is the tree's and a refused append leaves both as they
//! were.

use std::fs::File;

use rustix::fs::{self as rfs, AtFlags};

use super::apply_to_fd;
use super::{sync, Closed, Made, Make, Move, NewEntry, Space, Upper, Xattr};
use crate::error::Errno;
use crate::overlay::journal::{self, Record};
use crate::overlay::Overlay;
use crate::tree::{Ino, Kind, Origin, Tree};
use crate::view::copyup::{gid, uid};
use crate::view::setattr::{give_away, timestamps, Caller, SetAttr};
use crate::view::source::object_error;
use crate::view::times::touch_object_ctime;
use crate::view::{Context, Result, View};

impl Upper for Overlay {
    fn overlay(&self) -> Option<&Overlay> {
        Some(self)
    }

    fn make(&self, v: &View, tree: &mut Tree, m: &Make<'_>) -> Result<Made> {
        let kind = m.new.kind();
        let obj = self.new_obj();
        self.quota.add_object(obj, 0, kind == Kind::File)?;
        let made = make_object(self, obj, m).and_then(|file| {
            let (owner, group) = m.owner;
            give_away(rfs::chownat(
                self.objects_fd(),
                Overlay::name(obj),
                Some(uid(owner)),
                Some(gid(group)),
                AtFlags::SYMLINK_NOFOLLOW,
            ))?;
            if let Some(mode) = m.new.setid_mode() {
                let mode = rfs::Mode::from_raw_mode(mode);
                rfs::chmodat(
                    self.objects_fd(),
                    Overlay::name(obj),
                    mode,
                    AtFlags::empty(),
                )?;
            }
            Ok(file)
        });
        let file = match made {
            Ok(file) => file,
            Err(e) => {
                let _ = self.remove(obj, kind);
                return Err(e).with_context(|| format!("making overlay object {obj}"));
            }
        };
        let Some(ino) = tree.insert(m.parent, m.name, kind, Origin::Upper(obj)) else {
            let _ = self.remove(obj, kind);
            return Err(Errno::EIO).context("inserting a new node");
        };
        let rec: Vec<Record> = journal::put_record(tree, ino).into_iter().collect();
        if let Err(e) = self.append(&rec) {
            tree.remove(ino);
            let _ = self.remove(obj, kind);
            return Err(e).context("appending to the overlay journal");
        }
        v.touch_dir(self, tree, m.parent);
        Ok(Made {
            ino,
            obj: Some(obj),
            file,
        })
    }

    fn remove(&self, v: &View, tree: &mut Tree, ino: Ino, path: &str, _dir: bool) -> Result<()> {
        let parent = tree.get(ino).ok_or(Errno::ENOENT)?.parent;
        let mut records = v.vacate_records(tree, ino);
        records.push(Record::Del {
            path: path.to_string(),
        });
        v.journal(self, &records)?;
        v.touch_dir(self, tree, parent);
        v.touch_unlinked(self, tree, ino);
        tree.remove(ino);
        v.drop_objects(self, tree, &[ino]);
        Ok(())
    }

    fn rename(&self, v: &View, tree: &mut Tree, mv: &Move<'_>) -> Result<()> {
        let mut records = v.vacate_records(tree, mv.src);
        if let Some(dst) = mv.dst {
            records.extend(v.vacate_records(tree, dst));
            records.push(Record::Del {
                path: mv.new_path.clone(),
            });
        }
        records.push(Record::Del {
            path: mv.src_path.clone(),
        });
        records.extend(View::moved_puts(tree, mv.src, &mv.new_path));
        v.journal(self, &records)?;
        if let Some(dst) = mv.dst {
            v.touch_unlinked(self, tree, dst);
            tree.remove(dst);
            v.drop_objects(self, tree, &[dst]);
        }
        tree.move_to(mv.src, mv.newparent, mv.newname);
        v.touch_renamed(self, tree, (mv.parent, mv.newparent), &[mv.src]);
        Ok(())
    }

    fn exchange(&self, v: &View, tree: &mut Tree, mv: &Move<'_>, dst: Ino) -> Result<()> {
        let mut records = v.vacate_records(tree, mv.src);
        records.extend(v.vacate_records(tree, dst));
        records.push(Record::Del {
            path: mv.src_path.clone(),
        });
        records.push(Record::Del {
            path: mv.new_path.clone(),
        });
        records.extend(View::moved_puts(tree, mv.src, &mv.new_path));
        records.extend(View::moved_puts(tree, dst, &mv.src_path));
        v.journal(self, &records)?;
        tree.exchange(mv.src, dst);
        v.touch_renamed(self, tree, (mv.parent, mv.newparent), &[mv.src, dst]);
        Ok(())
    }

    fn link(&self, v: &View, file: Ino, parent: Ino, name: &str) -> Result<()> {
        // Outside the tree lock, as every copy-up.
        let obj = copy_up(v, self, file, true)?;
        let mut tree = v.write_tree();
        let path = v.new_name(&tree, parent, name)?;
        if tree.get(file).map(|n| &n.origin) != Some(&Origin::Upper(obj)) {
            return Err(Errno::ENOENT.into()); // unlinked meanwhile
        }
        let put = Record::Put {
            path,
            kind: Kind::File,
            obj: Some(obj),
            host: None,
        };
        v.journal(self, &[put])?;
        tree.link(file, parent, name)
            .ok_or(Errno::EIO)
            .context("linking a checked name")?;
        touch_object_ctime(self, obj);
        v.touch_dir(self, &tree, parent);
        Ok(())
    }

    fn open_write(&self, v: &View, ino: Ino, truncate: bool) -> Result<(File, Option<u64>)> {
        let obj = copy_up(v, self, ino, !truncate)?;
        let file = self
            .open_file(obj, true)
            .map_err(|e| object_error(obj, e))?;
        if truncate {
            self.quota.resize(obj, 0, false)?;
            file.set_len(0)?;
        }
        Ok((file, Some(obj)))
    }

    fn setattr(&self, v: &View, ino: Ino, kind: Kind, set: SetAttr, who: Caller) -> Result<()> {
        let obj = copy_up(v, self, ino, set.size != Some(0))?;
        if set.changes_nothing() {
            // chown(path, -1, -1): only the ctime changes, as on ext4.
            v.touch_ctime(self, &v.read_tree(), ino);
            return Ok(());
        }
        if kind == Kind::File {
            let file = self
                .open_file(obj, true)
                .map_err(|e| object_error(obj, e))?;
            return apply_to_fd(&file, Some(obj), self, set, who);
        }
        // Directories and symlinks: by name in the objects directory.
        let name = Overlay::name(obj);
        let dir = self.objects_fd();
        if let Some(mode) = set.mode {
            if kind != Kind::Symlink {
                let mode = rfs::Mode::from_raw_mode(mode & 0o7777);
                rfs::chmodat(dir, &name, mode, AtFlags::empty())?;
            }
        }
        if set.uid.is_some() || set.gid.is_some() {
            let (u, g) = (set.uid.map(uid), set.gid.map(gid));
            rfs::chownat(dir, &name, u, g, AtFlags::SYMLINK_NOFOLLOW)?;
        }
        if set.atime.is_some() || set.mtime.is_some() {
            rfs::utimensat(dir, &name, &timestamps(set), AtFlags::SYMLINK_NOFOLLOW)?;
        }
        Ok(())
    }

    fn setxattr(&self, v: &View, x: &Xattr<'_>, value: &[u8], flags: i32) -> Result<()> {
        let obj = copy_up(v, self, x.ino, true)?;
        Ok(Overlay::setxattr(self, obj, x.name, value, flags)?)
    }

    fn removexattr(&self, v: &View, x: &Xattr<'_>) -> Result<()> {
        let obj = copy_up(v, self, x.ino, true)?;
        Ok(Overlay::removexattr(self, obj, x.name)?)
    }

    fn resize(&self, obj: Option<u64>, size: u64, grow_only: bool) -> Result<()> {
        if let Some(obj) = obj {
            self.quota.resize(obj, size, grow_only)?;
        }
        Ok(())
    }

    /// The object the inode reads from now (a handle opened on the host
    /// file before a copy-up syncs the object), its directory entry (once
    /// per object), and the journal up to now, which holds every record
    /// naming the object (records are appended before a change is
    /// answered, and the journal is synced whole).
    fn sync_file(&self, v: &View, ino: Ino, obj: Option<u64>, datasync: bool) -> Result<()> {
        let now = v.copied_up(ino);
        match (obj, now) {
            (None, Some(o)) => sync(&self.open_file(o, false)?, datasync)?,
            (Some(a), Some(b)) if a != b => sync(&self.open_file(b, false)?, datasync)?,
            _ => {}
        }
        if let Some(o) = now.or(obj) {
            self.sync_entry(o)?;
        }
        Ok(Overlay::sync(self)?)
    }

    /// The journal, where every namespace change (and the journal's own
    /// rename after a compaction) is recorded.
    fn sync_namespace(&self) -> Result<()> {
        Ok(Overlay::sync(self)?)
    }

    /// A passthrough handle's writes went straight to the object, past
    /// the quota: its size is read back.
    fn closed(&self, _v: &View, c: &Closed<'_>) {
        if let (true, Some(obj)) = (c.passthrough, c.obj) {
            if let Ok(st) = rfs::fstat(c.file) {
                self.quota.settle(obj, st.st_size as u64);
            }
        }
    }

    /// The quota's free bytes and objects.
    fn space(&self, _v: &View) -> Result<Space> {
        let q = &self.quota;
        Ok(Space {
            used_bytes: q.bytes(),
            free_bytes: q.max_bytes.saturating_sub(q.bytes()),
            free_files: q.max_objects.saturating_sub(q.objects()),
        })
    }
}

/// `View::copy_up`, saying which path failed to copy.
fn copy_up(v: &View, ov: &Overlay, ino: Ino, content: bool) -> Result<u64> {
    v.copy_up(ov, ino, content).with_context(|| {
        let path = v.read_tree().path(ino);
        format!("copying up {}", path.unwrap_or_default())
    })
}

/// Makes object `obj` as `m` asks; a new file is returned open.
fn make_object(ov: &Overlay, obj: u64, m: &Make<'_>) -> std::io::Result<Option<File>> {
    match m.new {
        NewEntry::File { mode } => return ov.create_file(obj, mode).map(Some),
        NewEntry::Dir { mode } => {
            ov.mkdir(obj, mode)?;
            if m.setgid_dir {
                // mkdir(2) ignores S_ISGID in its mode; set it explicitly.
                let mode = rfs::Mode::from_raw_mode((mode & 0o7777) | libc::S_ISGID);
                rfs::chmodat(ov.objects_fd(), Overlay::name(obj), mode, AtFlags::empty())?;
            }
        }
        NewEntry::Symlink { target } => ov.symlink(obj, target)?,
    }
    Ok(None)
}
