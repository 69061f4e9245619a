//! Overlay quotas: bytes (apparent size of overlay files) and objects. A
//! write that would go over is refused whole with EDQUOT before anything
//! is written, so data already written is never damaged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::Errno;

pub const EDQUOT: Errno = Errno(libc::EDQUOT);

pub struct Quota {
    pub max_bytes: u64,
    pub max_objects: u64,
    bytes: AtomicU64,
    objects: AtomicU64,
    /// Current size of every overlay file object, by object id.
    sizes: Mutex<HashMap<u64, u64>>,
}

impl Quota {
    pub fn new(max_bytes: u64, max_objects: u64) -> Quota {
        Quota {
            max_bytes,
            max_objects,
            bytes: AtomicU64::new(0),
            objects: AtomicU64::new(0),
            sizes: Mutex::new(HashMap::new()),
        }
    }

    pub fn bytes(&self) -> u64 {
        self.bytes.load(Ordering::Relaxed)
    }

    pub fn objects(&self) -> u64 {
        self.objects.load(Ordering::Relaxed)
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

    /// Forgets a removed object.
    pub fn remove_object(&self, obj: u64) {
        let size = self.lock().remove(&obj).unwrap_or(0);
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
}
