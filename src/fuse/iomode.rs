//! How each open is served in a writable view. The kernel's rules: while an
//! inode has a passthrough open, every open of it must be passthrough with
//! the same backing file (else EIO); while it has page-cache opens, it
//! cannot get a passthrough one. So, per inode:
//!
//! - host files are never passthrough here (a copy-up would change the
//!   backing file under open readers): page cache, kept across opens;
//! - overlay objects opened for reading: passthrough, unless page-cache
//!   opens exist;
//! - writers: the page cache (the daemon serves each write and enforces the
//!   quota), unless passthrough opens exist: then passthrough on the same
//!   backing file, and the quota is settled when that writer closes.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::view::Ino;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IoMode {
    Passthrough,
    Cached,
}

#[derive(Default)]
struct Counts {
    passthrough: u32,
    cached: u32,
}

#[derive(Default)]
pub struct IoModes {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    by_ino: HashMap<Ino, Counts>,
    by_fh: HashMap<u64, (Ino, IoMode)>,
}

impl IoModes {
    /// The mode of a new open of `ino` in a writable view.
    pub fn choose(&self, ino: Ino, is_object: bool, writable: bool) -> IoMode {
        let inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (pt, cached) = inner
            .by_ino
            .get(&ino)
            .map_or((0, 0), |c| (c.passthrough, c.cached));
        match (is_object, writable) {
            (false, _) => IoMode::Cached,
            (true, false) if cached == 0 => IoMode::Passthrough,
            (true, true) if pt > 0 => IoMode::Passthrough,
            _ => IoMode::Cached,
        }
    }

    /// Records an open the kernel was told to serve in `mode`.
    pub fn opened(&self, ino: Ino, fh: u64, mode: IoMode) {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let c = inner.by_ino.entry(ino).or_default();
        match mode {
            IoMode::Passthrough => c.passthrough += 1,
            IoMode::Cached => c.cached += 1,
        }
        inner.by_fh.insert(fh, (ino, mode));
    }

    /// Forgets a released open; returns its mode.
    pub fn released(&self, fh: u64) -> Option<IoMode> {
        let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (ino, mode) = inner.by_fh.remove(&fh)?;
        if let Some(c) = inner.by_ino.get_mut(&ino) {
            match mode {
                IoMode::Passthrough => c.passthrough = c.passthrough.saturating_sub(1),
                IoMode::Cached => c.cached = c.cached.saturating_sub(1),
            }
            if c.passthrough == 0 && c.cached == 0 {
                inner.by_ino.remove(&ino);
            }
        }
        Some(mode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn never_mixes_page_cache_and_passthrough_on_one_inode() {
        let m = IoModes::default();
        // Host files: always the page cache.
        assert_eq!(m.choose(1, false, false), IoMode::Cached);
        assert_eq!(m.choose(1, false, true), IoMode::Cached);
        // Objects: readers passthrough; a writer joins them on passthrough.
        assert_eq!(m.choose(2, true, false), IoMode::Passthrough);
        m.opened(2, 10, IoMode::Passthrough);
        assert_eq!(m.choose(2, true, true), IoMode::Passthrough);
        assert_eq!(m.released(10), Some(IoMode::Passthrough));
        // No passthrough open left: a writer goes through the daemon...
        assert_eq!(m.choose(2, true, true), IoMode::Cached);
        m.opened(2, 11, IoMode::Cached);
        // ...and readers then share the page cache.
        assert_eq!(m.choose(2, true, false), IoMode::Cached);
        m.released(11);
        assert_eq!(m.choose(2, true, false), IoMode::Passthrough);
        assert_eq!(m.released(99), None);
    }
}
