//! Open file and directory handles, by the `fh` number given to the kernel.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Clone)]
pub enum Handle {
    File {
        file: Arc<File>,
        ino: u64,
        /// The overlay object behind it, if any (for quota accounting).
        obj: Option<u64>,
        writable: bool,
        /// Bytes written through it (logged at close in direct views).
        written: Arc<std::sync::atomic::AtomicU64>,
    },
    /// The names of a directory at `opendir`, so offsets stay valid.
    Dir(Arc<Vec<(u64, Box<str>)>>),
}

#[derive(Default)]
pub struct Handles {
    next: AtomicU64,
    map: Mutex<HashMap<u64, Handle>>,
}

impl Handles {
    pub fn insert(&self, h: Handle) -> u64 {
        let fh = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().insert(fh, h);
        fh
    }

    pub fn get(&self, fh: u64) -> Option<Handle> {
        self.lock().get(&fh).cloned()
    }

    /// Any open file handle of `ino` (for calls on an unlinked open file,
    /// which the kernel sends without a handle).
    pub fn any_for(&self, ino: u64) -> Option<Handle> {
        self.lock()
            .values()
            .find(|h| matches!(h, Handle::File { ino: i, .. } if *i == ino))
            .cloned()
    }

    /// An open file handle of `ino` that a change may go through (for a
    /// change of an unlinked open file, which the kernel sends without a
    /// handle): one on an overlay object, or, where `host_ok` (a direct
    /// view), one opened for writing. Never a handle on a host file in an
    /// overlay view: a reader opened before the copy-up (or whose release
    /// has not arrived yet) holds the host file itself.
    pub fn any_to_change(&self, ino: u64, host_ok: bool) -> Option<Handle> {
        self.lock()
            .values()
            .find(|h| {
                matches!(h, Handle::File { ino: i, obj, writable, .. }
                    if *i == ino && (obj.is_some() || host_ok && *writable))
            })
            .cloned()
    }

    /// Replaces the file behind a handle (a reader re-targeted to the
    /// overlay object after a copy-up).
    pub fn retarget(&self, fh: u64, file: Arc<File>, obj: u64) {
        if let Some(Handle::File {
            file: f, obj: o, ..
        }) = self.lock().get_mut(&fh)
        {
            *f = file;
            *o = Some(obj);
        }
    }

    pub fn remove(&self, fh: u64) -> Option<Handle> {
        self.lock().remove(&fh)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every critical section is one map call), so poisoning is ignored.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
