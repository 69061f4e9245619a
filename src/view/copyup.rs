//! Copy-up: the first change to a host entry copies it into the overlay
//! (content, mode, owner, times and user xattrs) and records what the agent
//! saw of it — the base a later commit checks for conflicts.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsFd;

use rustix::fs::{self as rfs, AtFlags, Stat, Timespec, Timestamps};

use super::{Result, View};
use crate::error::Errno;
use crate::overlay::journal::{self, Record, Seen};
use crate::overlay::Overlay;
use crate::tree::{Ino, Kind, Origin};

/// The fingerprint of a host entry (and, when read, its content hash).
pub(super) fn seen_of(path: &str, kind: Kind, st: &Stat, base: Option<String>) -> Seen {
    Seen {
        path: path.to_string(),
        kind,
        size: st.st_size as u64,
        mtime_ns: st
            .st_mtime
            .saturating_mul(1_000_000_000)
            .saturating_add(st.st_mtime_nsec as i64),
        ino: st.st_ino,
        mode: st.st_mode,
        base,
    }
}

/// Copies `src` into `dst` (when given) and returns the blake3 of `src`.
fn copy_and_hash(mut src: &File, mut dst: Option<&File>) -> std::io::Result<String> {
    let mut hasher = blake3::Hasher::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match src.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        if let Some(d) = dst.as_mut() {
            d.write_all(&buf[..n])?;
        }
    }
    Ok(format!("blake3:{}", hasher.finalize().to_hex()))
}

fn times(st: &Stat) -> Timestamps {
    Timestamps {
        last_access: Timespec {
            tv_sec: st.st_atime,
            tv_nsec: st.st_atime_nsec as _,
        },
        last_modification: Timespec {
            tv_sec: st.st_mtime,
            tv_nsec: st.st_mtime_nsec as _,
        },
    }
}

/// Gives a directory or symlink object the host entry's owner and times
/// (best effort: an unprivileged daemon cannot give entries away).
fn copy_owner_and_times(ov: &Overlay, obj: u64, st: &Stat) {
    let name = Overlay::name(obj);
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    let owner = (Some(uid(st.st_uid)), Some(gid(st.st_gid)));
    let _ = rfs::chownat(ov.objects_fd(), &name, owner.0, owner.1, nofollow);
    let _ = rfs::utimensat(ov.objects_fd(), &name, &times(st), nofollow);
}

/// Copies user xattrs from an open host entry onto the object at `dst`.
fn copy_xattrs(src: impl AsFd, dst: &std::path::Path) {
    let mut names = vec![0u8; 64 * 1024];
    let Ok(n) = rfs::flistxattr(&src, &mut names[..]) else {
        return;
    };
    for name in names[..n]
        .split(|b| *b == 0)
        .filter(|n| n.starts_with(b"user."))
    {
        let Ok(name) = std::str::from_utf8(name) else {
            continue;
        };
        let mut value = vec![0u8; 64 * 1024];
        if let Ok(len) = rfs::fgetxattr(&src, name, &mut value[..]) {
            let _ = rfs::lsetxattr(dst, name, &value[..len], rfs::XattrFlags::empty());
        }
    }
}

impl View {
    /// Records what the agent saw of a host path, merged with what is known.
    pub(super) fn note_seen(&self, s: Seen) -> Option<Record> {
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        journal::merge_seen(&mut seen, s.clone()).then_some(Record::Seen(s))
    }

    /// Whether the base of a host path is known already.
    pub(super) fn seen_has_base(&self, path: &str) -> bool {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        seen.get(path).is_some_and(|s| s.base.is_some())
    }

    /// `blake3:<hex>` of a host file's content (of a symlink's target).
    pub(super) fn host_hash(&self, path: &str, kind: Kind) -> Result<String> {
        match kind {
            Kind::Symlink => {
                let target = self.host.readlink(path)?;
                Ok(format!("blake3:{}", blake3::hash(&target).to_hex()))
            }
            _ => Ok(copy_and_hash(&self.host.open_file(path)?, None)?),
        }
    }

    /// Makes `ino` an overlay object, if it is not one already, and returns
    /// the object id. `content` false skips copying the data (an open with
    /// O_TRUNC), though the base is still hashed.
    pub(super) fn copy_up(&self, ov: &Overlay, ino: Ino, content: bool) -> Result<u64> {
        let (kind, host_path) = {
            let tree = self.read_tree();
            let node = tree.get(ino).ok_or(Errno::ENOENT)?;
            if let Origin::Upper(obj) = node.origin {
                return Ok(obj);
            }
            (node.kind, tree.host_path(ino).ok_or(Errno::ENOENT)?)
        };

        // Copy outside the tree lock: a large file must not stall the view.
        let obj = ov.new_obj();
        let seen = match kind {
            Kind::File => {
                let src = self.host.open_file(&host_path)?;
                let st = rfs::fstat(&src)?;
                let size = if content { st.st_size as u64 } else { 0 };
                ov.quota.add_object(obj, size, true)?;
                let made = (|| -> Result<String> {
                    let dst = ov.create_file(obj, 0o600)?;
                    let hash = copy_and_hash(&src, content.then_some(&dst))?;
                    rfs::fchmod(&dst, rfs::Mode::from_raw_mode(st.st_mode & 0o7777))?;
                    let _ = rfs::fchown(&dst, Some(uid(st.st_uid)), Some(gid(st.st_gid)));
                    if content {
                        rfs::futimens(&dst, &times(&st))?;
                    }
                    copy_xattrs(&src, &ov.path(obj));
                    Ok(hash)
                })();
                match made {
                    Ok(hash) => seen_of(&host_path, kind, &st, Some(hash)),
                    Err(e) => {
                        let _ = ov.remove(obj, kind);
                        return Err(e);
                    }
                }
            }
            Kind::Dir => {
                let dirfd = self.host.open_dir(&host_path)?;
                let st = rfs::fstat(&dirfd)?;
                ov.quota.add_object(obj, 0, false)?;
                if let Err(e) = ov.mkdir(obj, st.st_mode & 0o7777) {
                    ov.quota.remove_object(obj);
                    return Err(e.into());
                }
                copy_owner_and_times(ov, obj, &st);
                copy_xattrs(&dirfd, &ov.path(obj));
                seen_of(&host_path, kind, &st, None)
            }
            Kind::Symlink => {
                let st = self.host.lstat(&host_path)?;
                let target = self.host.readlink(&host_path)?;
                ov.quota.add_object(obj, 0, false)?;
                if let Err(e) = ov.symlink(obj, &target) {
                    ov.quota.remove_object(obj);
                    return Err(e.into());
                }
                copy_owner_and_times(ov, obj, &st);
                let hash = format!("blake3:{}", blake3::hash(&target).to_hex());
                seen_of(&host_path, kind, &st, Some(hash))
            }
        };

        let mut tree = self.write_tree();
        let before = match tree.get(ino).map(|n| n.origin.clone()) {
            // Another request copied it up meanwhile: use theirs.
            Some(Origin::Upper(existing)) => {
                drop(tree);
                let _ = ov.remove(obj, kind);
                return Ok(existing);
            }
            Some(origin) => origin,
            None => {
                drop(tree);
                let _ = ov.remove(obj, kind);
                return Err(Errno::ENOENT.into());
            }
        };
        tree.set_origin(ino, Origin::Upper(obj));
        let mut records: Vec<Record> = self.note_seen(seen).into_iter().collect();
        records.extend(journal::put_record(&tree, ino));
        if let Err(e) = self.journal(ov, &records) {
            // Refused (EDQUOT): the node reads from the host as before.
            tree.set_origin(ino, before);
            drop(tree);
            let _ = ov.remove(obj, kind);
            return Err(e);
        }
        self.carry_stamp(ov, ino, obj);
        Ok(obj)
    }
}

pub(super) fn uid(n: u32) -> rfs::Uid {
    rfs::Uid::from_raw(n)
}

pub(super) fn gid(n: u32) -> rfs::Gid {
    rfs::Gid::from_raw(n)
}
