//! Change times in overlay views, kept as ext4 keeps them: a namespace
//! change (create, mknod, mkdir, symlink, unlink, rmdir, both sides of a
//! rename or exchange) sets its directories' mtime and ctime to now, and
//! the ctime of the entry it moves, unlinks or replaces. Data and attribute
//! changes land on overlay objects, where the kernel sets the times itself
//! (a `setattr` that changes nothing, `chown(f, -1, -1)`, touches the ctime).
//!
//! Where a changed time lives:
//! - an overlay object (created, or copied up): on the object, by one
//!   `utimensat` (no journal record), so it lasts as long as the object's
//!   other metadata does;
//! - a host entry the view has not copied up: the host is never touched,
//!   so the time is kept in memory per inode ([`Stamps`]) and presented
//!   over the host's (the later of the two). Creating thousands of entries
//!   in a host directory costs no journal append and no copy. When the
//!   entry is copied up (chmod, a write), its kept times go onto the
//!   object. At a clean unmount ([`View::persist_dir_times`]) the host
//!   directories with a kept mtime are copied up, once each, so a remount
//!   shows the same mtime: a directory whose listing differs from the host
//!   must not show the host's old mtime again (caches such as git's
//!   untracked cache compare it). Copied-up directories make no patch
//!   (`patch::changes` lists files and symlinks only). A kept ctime alone
//!   (a moved host file) is not persisted: after a remount it falls back
//!   to the host's, which only hides a rename, never a content change.
//!   After a crash the host's times come back for both.
//!
//! The kept times come from the real clock, not an injected one: they are
//! compared with the kernel's own stamps on objects (the later wins).

use std::collections::HashMap;
use std::sync::{RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::SystemTime;

use rustix::fs::{self as rfs, AtFlags, Timespec, Timestamps};

use super::attr::Attr;
use super::setattr::{timespec, SetTime, OMIT};
use super::View;
use crate::overlay::Overlay;
use crate::tree::{Ino, Kind, Origin, Tree, ROOT};

/// Times set on a host entry by the view, newer than the host's.
#[derive(Clone, Copy, Debug, Default)]
struct Stamp {
    mtime: Option<SystemTime>,
    ctime: Option<SystemTime>,
}

/// The kept times of host entries, by inode (never reused in a mount).
/// Changed under the tree's write lock, so a copy-up (which takes it to
/// install its object) never misses a stamp. Read on every attribute
/// answer of a host entry, hence a read-write lock.
#[derive(Debug, Default)]
pub(super) struct Stamps(RwLock<HashMap<Ino, Stamp>>);

impl Stamps {
    fn read(&self) -> RwLockReadGuard<'_, HashMap<Ino, Stamp>> {
        self.0.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, HashMap<Ino, Stamp>> {
        self.0.write().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, ino: Ino, mtime: bool) {
        let now = SystemTime::now();
        let mut map = self.write();
        let s = map.entry(ino).or_default();
        s.ctime = Some(now);
        if mtime {
            s.mtime = Some(now);
        }
    }

    /// The kept times of `ino`, becoming an object's: the mtime goes with
    /// it; the ctime stays as a floor. The filesystem may stamp the
    /// object's later changes with its coarse clock, which can read up to a
    /// tick earlier than the real clock the kept ctime came from: without
    /// the floor a copy-up could move the ctime back.
    fn take_for_object(&self, ino: Ino) -> Option<Stamp> {
        let mut map = self.write();
        let s = map.get_mut(&ino)?;
        let out = *s;
        s.mtime = None;
        if s.ctime.is_none() {
            map.remove(&ino);
        }
        Some(out)
    }

    /// `a` with the kept times of its inode, where they are later.
    pub(super) fn apply(&self, mut a: Attr) -> Attr {
        if let Some(s) = self.read().get(&a.ino) {
            if let Some(m) = s.mtime {
                a.mtime = a.mtime.max(m);
            }
            if let Some(c) = s.ctime {
                a.ctime = a.ctime.max(c);
            }
        }
        a
    }

    fn with_mtime(&self) -> Vec<Ino> {
        let map = self.read();
        let mut out: Vec<Ino> = map
            .iter()
            .filter(|(_, s)| s.mtime.is_some())
            .map(|(i, _)| *i)
            .collect();
        out.sort_unstable();
        out
    }
}

impl View {
    /// The entries of directory `dir` changed: its mtime and ctime are now.
    /// Called under the tree's write lock, after the change is journaled.
    pub(super) fn touch_dir(&self, ov: &Overlay, tree: &Tree, dir: Ino) {
        self.touch(ov, tree, dir, true);
    }

    /// `ino` was moved (or changed in a way that sets no other time): its
    /// ctime is now.
    pub(super) fn touch_ctime(&self, ov: &Overlay, tree: &Tree, ino: Ino) {
        self.touch(ov, tree, ino, false);
    }

    /// `ino` is about to be unlinked or replaced (still in `tree`): its
    /// ctime is now. Only an open handle can see it afterwards, so without
    /// one nothing is done (an `rm -rf` pays no syscall per file for it).
    pub(super) fn touch_unlinked(&self, ov: &Overlay, tree: &Tree, ino: Ino) {
        if self.handles.any_for(ino).is_some() {
            self.touch(ov, tree, ino, false);
        }
    }

    /// After a rename from directory `dirs.0` to `dirs.1`: both
    /// directories changed, and so did the ctime of each entry `moved`.
    pub(super) fn touch_renamed(&self, ov: &Overlay, tree: &Tree, dirs: (Ino, Ino), moved: &[Ino]) {
        self.touch_dir(ov, tree, dirs.0);
        if dirs.1 != dirs.0 {
            self.touch_dir(ov, tree, dirs.1);
        }
        for &ino in moved {
            self.touch_ctime(ov, tree, ino);
        }
    }

    fn touch(&self, ov: &Overlay, tree: &Tree, ino: Ino, mtime: bool) {
        match tree.get(ino).map(|n| &n.origin) {
            Some(Origin::Upper(obj)) => {
                let now = mtime.then_some(SetTime::Now);
                if let Err(e) = set_object_times(ov, *obj, now) {
                    // The change itself is done; only its time is lost.
                    tracing::warn!(obj, error = %e, "cannot set an object's times");
                }
            }
            Some(_) => self.stamps.set(ino, mtime),
            None => {}
        }
    }

    /// Node `ino` just became object `obj` (copy-up, under the tree's
    /// write lock): the times the view kept for it go onto the object.
    pub(super) fn carry_stamp(&self, ov: &Overlay, ino: Ino, obj: u64) {
        let Some(s) = self.stamps.take_for_object(ino) else {
            return;
        };
        if let Err(e) = set_object_times(ov, obj, s.mtime.map(SetTime::At)) {
            tracing::warn!(obj, error = %e, "cannot carry times onto a copied-up object");
        }
    }

    /// At a clean unmount: copies up the host directories whose mtime the
    /// view changed, so the next mount shows it (see the module doc). The
    /// root is left out: the journal has no record for it.
    pub(super) fn persist_dir_times(&self, ov: &Overlay) {
        for ino in self.stamps.with_mtime() {
            let is_dir = self
                .read_tree()
                .get(ino)
                .is_some_and(|n| n.kind == Kind::Dir);
            if ino == ROOT || !is_dir {
                continue;
            }
            if let Err(e) = self.copy_up(ov, ino, true) {
                let error = e.chain();
                tracing::warn!(ino, %error, "cannot keep a directory's mtime past unmount");
            }
        }
    }
}

/// Sets an object's mtime to `mtime` (when given) and its ctime to now.
/// No call sets ctime alone, but any `utimensat` that changes something
/// sets it: without an mtime the atime is written back with its own value.
/// Unless the mtime is now, the object is read first, which also makes the
/// kernel stamp the change with a fine-grained time (multigrain
/// timestamps): later than the real clock's `now` a kept stamp holds.
fn set_object_times(ov: &Overlay, obj: u64, mtime: Option<SetTime>) -> std::io::Result<()> {
    let name = Overlay::name(obj);
    let nofollow = AtFlags::SYMLINK_NOFOLLOW;
    let stat = || rfs::statat(ov.objects_fd(), &name, nofollow);
    let times = match mtime {
        Some(SetTime::Now) => Timestamps {
            last_access: OMIT,
            last_modification: timespec(SetTime::Now),
        },
        Some(at) => {
            stat()?;
            Timestamps {
                last_access: OMIT,
                last_modification: timespec(at),
            }
        }
        None => {
            let st = stat()?;
            Timestamps {
                last_access: Timespec {
                    tv_sec: st.st_atime,
                    tv_nsec: st.st_atime_nsec as _,
                },
                last_modification: OMIT,
            }
        }
    };
    Ok(rfs::utimensat(ov.objects_fd(), &name, &times, nofollow)?)
}

/// A file gained or lost a name: its ctime changes, as on any filesystem
/// (best effort). Not by a chown to the same owner: that clears set-id
/// bits, even root's.
pub(super) fn touch_object_ctime(ov: &Overlay, obj: u64) {
    if let Err(e) = set_object_times(ov, obj, None) {
        tracing::warn!(obj, error = %e, "cannot set an object's ctime");
    }
}
