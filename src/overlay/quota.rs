//! Overlay quotas: bytes and objects. The bytes are the apparent size of
//! overlay files, the metadata stored with objects (symlink targets, user
//! xattr names and values) and the overlay journal's size on disk. A write
//! that would go over is refused whole with EDQUOT before anything is
//! written, so data already written is never damaged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::Errno;

pub const EDQUOT: Errno = Errno(libc::EDQUOT);

pub struct Quota {
    pub max_bytes: u64,
    pub max_objects: u64,
    /// Data, object metadata and journal bytes together: one budget.
    bytes: AtomicU64,
    objects: AtomicU64,
    /// The journal's share of `bytes` (its length on disk).
    journal: AtomicU64,
    /// Current size of every overlay file object, by object id.
    sizes: Mutex<HashMap<u64, u64>>,
    /// Metadata bytes of objects (symlink targets, xattrs), by object id.
    extra: Mutex<HashMap<u64, u64>>,
}

impl Quota {
    pub fn new(max_bytes: u64, max_objects: u64) -> Quota {
        Quota {
            max_bytes,
            max_objects,
            bytes: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            journal: AtomicU64::new(0),
            sizes: Mutex::new(HashMap::new()),
            extra: Mutex::new(HashMap::new()),
        }
    }

    /// Forgets everything accounted (an undo accounts the layer again).
    pub fn reset(&self) {
        self.bytes.store(0, Ordering::Relaxed);
        self.objects.store(0, Ordering::Relaxed);
        self.journal.store(0, Ordering::Relaxed);
        self.lock().clear();
        self.lock_extra().clear();
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
    }

    /// The journal's share of `bytes()`.
    pub fn journal_bytes(&self) -> u64 {
        self.journal.load(Ordering::Relaxed)
    }

    /// Accounts `n` more journal bytes, refused with EDQUOT when data and
    /// journal would pass the limit by more than `grace`.
    pub fn charge_journal(&self, n: u64, grace: u64) -> Result<(), Errno> {
        Self::reserve(&self.bytes, self.max_bytes.saturating_add(grace), n)?;
        self.journal.fetch_add(n, Ordering::AcqRel);
        Ok(())
    }

    /// The journal is rewritten from `old` to `new` bytes. Shrinking is
    /// always accounted; growing is refused with EDQUOT when data and
    /// journal would pass the limit by more than `grace`.
    pub fn rebase_journal(&self, old: u64, new: u64, grace: u64) -> Result<(), Errno> {
        let max = self.max_bytes.saturating_add(grace);
        self.bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                let v = cur.saturating_sub(old).saturating_add(new);
                (new <= old || v <= max).then_some(v)
            })
            .map_err(|_| EDQUOT)?;
        let _ = self
            .journal
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |j| {
                Some(j.saturating_sub(old).saturating_add(new))
            });
        Ok(())
    }

    /// Accounts the journal found (and compacted) at mount time, over a
    /// since-lowered limit too; only growth is refused.
    pub fn restore_journal(&self, n: u64) {
        self.bytes.fetch_add(n, Ordering::AcqRel);
        self.journal.fetch_add(n, Ordering::AcqRel);
    }

    fn reserve(counter: &AtomicU64, max: u64, n: u64) -> Result<(), Errno> {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                cur.checked_add(n).filter(|v| *v <= max)
            })
            .map(|_| ())
            .map_err(|_| EDQUOT)
    }

    /// Accounts a new object of `size` bytes (0 for directories and links).
    pub fn add_object(&self, obj: u64, size: u64, is_file: bool) -> Result<(), Errno> {
        Self::reserve(&self.objects, self.max_objects, 1)?;
        if let Err(e) = Self::reserve(&self.bytes, self.max_bytes, size) {
            self.objects.fetch_sub(1, Ordering::AcqRel);
            return Err(e);
        }
        if is_file {
            self.lock().insert(obj, size);
        }
        Ok(())
    }

    /// What object `obj` counts: its size and its metadata.
    pub fn object_bytes(&self, obj: u64) -> u64 {
        let size = self.lock().get(&obj).copied().unwrap_or(0);
        size.saturating_add(self.lock_extra().get(&obj).copied().unwrap_or(0))
    }

    /// Accounts `n` more metadata bytes of object `obj`.
    pub fn add_extra(&self, obj: u64, n: u64) -> Result<(), Errno> {
        let mut extra = self.lock_extra();
        Self::reserve(&self.bytes, self.max_bytes, n)?;
        *extra.entry(obj).or_default() += n;
        Ok(())
    }

    /// Releases up to `n` metadata bytes of object `obj` (no more than were
    /// accounted).
    pub fn sub_extra(&self, obj: u64, n: u64) {
        let mut extra = self.lock_extra();
        let Some(cur) = extra.get_mut(&obj) else {
            return;
        };
        let n = n.min(*cur);
        *cur -= n;
        if *cur == 0 {
            extra.remove(&obj);
        }
        self.bytes.fetch_sub(n.min(self.bytes()), Ordering::AcqRel);
    }

    /// Accounts metadata found at mount time, over a lowered limit too.
    pub fn restore_extra(&self, obj: u64, n: u64) {
        if n > 0 {
            *self.lock_extra().entry(obj).or_default() += n;
            self.bytes.fetch_add(n, Ordering::AcqRel);
        }
    }

    /// Forgets a removed object.
    pub fn remove_object(&self, obj: u64) {
        let extra = self.lock_extra().remove(&obj).unwrap_or(0);
        let size = self.lock().remove(&obj).unwrap_or(0) + extra;
        self.bytes
            .fetch_sub(size.min(self.bytes()), Ordering::AcqRel);
        let _ = self
            .objects
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |c| c.checked_sub(1));
    }

    /// Accounts a file growing (or shrinking) to at least/exactly `new_size`.
    /// `grow_only` is a write (the size becomes max(old, new)); otherwise a
    /// truncate. Objects not tracked (already removed) are not accounted.
    pub fn resize(&self, obj: u64, new_size: u64, grow_only: bool) -> Result<(), Errno> {
        let mut sizes = self.lock();
        let Some(old) = sizes.get(&obj).copied() else {
            return Ok(());
        };
        let target = if grow_only {
            old.max(new_size)
        } else {
            new_size
        };
        if target > old {
            Self::reserve(&self.bytes, self.max_bytes, target - old)?;
        } else {
            self.bytes
                .fetch_sub((old - target).min(self.bytes()), Ordering::AcqRel);
        }
        sizes.insert(obj, target);
        Ok(())
    }

    /// Accounts an object found at mount time. Existing content counts even
    /// over a since-lowered limit; only growth is refused.
    pub fn restore_object(&self, obj: u64, size: u64, is_file: bool) {
        self.objects.fetch_add(1, Ordering::AcqRel);
        self.bytes.fetch_add(size, Ordering::AcqRel);
        if is_file {
            self.lock().insert(obj, size);
        }
    }

    /// Records an object's actual size after writes the daemon did not see
    /// (passthrough), without a limit check: the growth already happened;
    /// further growth is refused while over the limit.
    pub fn settle(&self, obj: u64, size: u64) {
        let mut sizes = self.lock();
        let Some(old) = sizes.insert(obj, size) else {
            sizes.remove(&obj);
            return;
        };
        if size >= old {
            self.bytes.fetch_add(size - old, Ordering::AcqRel);
        } else {
            self.bytes
                .fetch_sub((old - size).min(self.bytes()), Ordering::AcqRel);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.sizes.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn lock_extra(&self) -> std::sync::MutexGuard<'_, HashMap<u64, u64>> {
        self.extra.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_quota_is_refused_whole() {
        let q = Quota::new(100, 2);
        q.add_object(1, 60, true).unwrap();
        assert_eq!(q.add_object(2, 50, true).unwrap_err(), EDQUOT);
        assert_eq!(q.objects(), 1, "a refused object is not counted");
        q.resize(1, 90, true).unwrap();
        assert_eq!(q.bytes(), 90);
        assert_eq!(q.resize(1, 101, true).unwrap_err(), EDQUOT);
        assert_eq!(q.bytes(), 90);
        q.resize(1, 50, true).unwrap(); // a write inside the file does not shrink it
        assert_eq!(q.bytes(), 90);
        q.resize(1, 10, false).unwrap(); // truncate does
        assert_eq!(q.bytes(), 10);
        q.add_object(2, 0, false).unwrap();
        assert_eq!(q.add_object(3, 0, true).unwrap_err(), EDQUOT);
        q.remove_object(1);
        assert_eq!((q.bytes(), q.objects()), (0, 1));
    }

    #[test]
    fn the_journal_shares_the_byte_budget() {
        let q = Quota::new(100, 10);
        q.add_object(1, 60, true).unwrap();
        q.charge_journal(30, 0).unwrap();
        assert_eq!((q.bytes(), q.journal_bytes()), (90, 30));
        // Data cannot take what the journal holds, nor the journal what data holds.
        assert_eq!(q.resize(1, 71, true).unwrap_err(), EDQUOT);
        assert_eq!(q.charge_journal(11, 0).unwrap_err(), EDQUOT);
        // A grace lets a removal through, up to the limit plus the grace.
        q.charge_journal(15, 5).unwrap();
        assert_eq!(q.bytes(), 105);
        assert_eq!(q.charge_journal(1, 5).unwrap_err(), EDQUOT);
        // Compaction: shrinking always passes, growing only within the limit.
        q.rebase_journal(45, 20, 0).unwrap();
        assert_eq!((q.bytes(), q.journal_bytes()), (80, 20));
        assert_eq!(q.rebase_journal(20, 41, 0).unwrap_err(), EDQUOT);
        q.rebase_journal(20, 40, 0).unwrap();
        assert_eq!((q.bytes(), q.journal_bytes()), (100, 40));
        // Data freed is room for the journal again.
        q.remove_object(1);
        q.charge_journal(60, 0).unwrap();
        assert_eq!((q.bytes(), q.journal_bytes()), (100, 100));
        // What a mount finds counts even over the limit.
        q.restore_journal(10);
        assert_eq!(q.bytes(), 110);
        assert_eq!(q.charge_journal(1, 0).unwrap_err(), EDQUOT);
        q.rebase_journal(110, 90, 0).unwrap();
        assert_eq!((q.bytes(), q.journal_bytes()), (90, 90));
    }

    #[test]
    fn object_metadata_counts_and_leaves_with_the_object() {
        let q = Quota::new(100, 10);
        q.add_object(1, 0, false).unwrap();
        q.add_extra(1, 60).unwrap();
        assert_eq!(q.add_extra(1, 41).unwrap_err(), EDQUOT);
        q.sub_extra(1, 20);
        assert_eq!(q.bytes(), 40);
        q.sub_extra(1, 1000); // never more than was accounted
        assert_eq!(q.bytes(), 0);
        q.add_extra(1, 30).unwrap();
        q.add_object(2, 50, true).unwrap();
        q.remove_object(1);
        assert_eq!((q.bytes(), q.objects()), (50, 1));
        q.restore_extra(2, 70);
        assert_eq!(q.bytes(), 120);
        q.remove_object(2);
        assert_eq!((q.bytes(), q.objects()), (0, 0));
    }
}
