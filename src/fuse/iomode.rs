//! How each open of an inode is served. The kernel refuses to mix cached
//! opens and passthrough opens of one inode (ETXTBSY), while direct-io
//! opens mix with either. So: reads prefer passthrough, writes are served
//! by the daemon (which enforces the overlay quota) through the page
//! cache, and whichever would clash with the opens already there falls
//! back to direct io.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::view::Ino;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    Passthrough,
    Cached,
    Direct,
}

#[derive(Default)]
struct Counts {
    passthrough: u32,
    cached: u32,
}

#[derive(Default)]
pub struct IoModes {
    by_ino: Mutex<HashMap<Ino, Counts>>,
    by_fh: Mutex<HashMap<u64, (Ino, IoMode)>>,
}

impl IoModes {
    /// Chooses the mode of a new open. `want_passthrough` is false for
    /// writable opens and when passthrough is unavailable.
    pub fn choose(&self, ino: Ino, want_passthrough: bool) -> IoMode {
        let map = self.by_ino.lock().unwrap_or_else(|p| p.into_inner());
        let c = map.get(&ino);
        let (pt, cached) = c.map_or((0, 0), |c| (c.passthrough, c.cached));
        match (want_passthrough, pt > 0, cached > 0) {
            (true, _, false) => IoMode::Passthrough,
            (true, _, true) => IoMode::Cached,
            (false, true, _) => IoMode::Direct,
            (false, false, _) => IoMode::Cached,
        }
    }

    /// Records an open that the kernel accepted in `mode`.
    pub fn opened(&self, ino: Ino, fh: u64, mode: IoMode) {
        let mut map = self.by_ino.lock().unwrap_or_else(|p| p.into_inner());
        let c = map.entry(ino).or_default();
        match mode {
            IoMode::Passthrough => c.passthrough += 1,
            IoMode::Cached => c.cached += 1,
            IoMode::Direct => {}
        }
        drop(map);
        self.by_fh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(fh, (ino, mode));
    }

    pub fn released(&self, fh: u64) {
        let Some((ino, mode)) = self
            .by_fh
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&fh)
        else {
            return;
        };
        let mut map = self.by_ino.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(c) = map.get_mut(&ino) {
            match mode {
                IoMode::Passthrough => c.passthrough = c.passthrough.saturating_sub(1),
                IoMode::Cached => c.cached = c.cached.saturating_sub(1),
                IoMode::Direct => {}
            }
            if c.passthrough == 0 && c.cached == 0 {
                map.remove(&ino);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_mixes_cached_and_passthrough_on_one_inode() {
        let m = IoModes::default();
        assert_eq!(m.choose(1, true), IoMode::Passthrough);
        m.opened(1, 10, IoMode::Passthrough);
        // A writer while a passthrough reader is open: direct io.
        assert_eq!(m.choose(1, false), IoMode::Direct);
        m.opened(1, 11, IoMode::Direct);
        assert_eq!(m.choose(1, true), IoMode::Passthrough);
        m.released(10);
        // No passthrough left: writers go through the page cache.
        assert_eq!(m.choose(1, false), IoMode::Cached);
        m.opened(1, 12, IoMode::Cached);
        // A reader while a cached writer is open: cached too.
        assert_eq!(m.choose(1, true), IoMode::Cached);
        m.released(12);
        m.released(11);
        assert_eq!(m.choose(1, true), IoMode::Passthrough);
        // Other inodes are independent.
        m.opened(1, 13, IoMode::Cached);
        assert_eq!(m.choose(2, true), IoMode::Passthrough);
    }
}
