//! Open file and directory handles, by the `fh` number given to the kernel.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use super::DirEntry;

#[derive(Clone)]
pub enum Handle {
    File {
        file: Arc<File>,
        /// The overlay object behind it, if any (for quota accounting).
        obj: Option<u64>,
        writable: bool,
    },
    /// A directory listing snapshot taken at `opendir`, so offsets stay valid.
    Dir(Arc<Vec<DirEntry>>),
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

    pub fn remove(&self, fh: u64) -> Option<Handle> {
        self.lock().remove(&fh)
    }

    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Handle>> {
        // A panic while holding the lock cannot leave the map inconsistent
        // (every critical section is one map call), so poisoning is ignored.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }
}
