//! What time it is, for every expiry decision: a grant's `expires_at`, a
//! token's expiry and issue time, the view going dark, the kernel's cache
//! lifetimes. Those decisions take a [`Clock`] instead of reading the system
//! time, so tests drive them with a [`ManualClock`] and never sleep.
//!
//! Timestamps that only record when something happened (audit events, patch
//! sets, session phases) read the system time directly: nothing decides on
//! them.

use std::fmt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A source of the current time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> SystemTime;

    /// Whole seconds since the Unix epoch (0 before it), as tokens count.
    fn unix_secs(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    /// The next whole second (now, if now is one): where a lifetime counted
    /// in whole seconds starts, so it is never shorter than asked.
    fn unix_secs_ceil(&self) -> u64 {
        self.now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() + u64::from(d.subsec_nanos() > 0))
    }
}

/// `t` rounded up to a whole second: an expiry stored to the second must
/// not come before the instant it stands for.
pub fn ceil_to_second(t: SystemTime) -> SystemTime {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) if d.subsec_nanos() > 0 => UNIX_EPOCH + Duration::from_secs(d.as_secs() + 1),
        _ => t,
    }
}

/// A clock shared by everything that holds it (a view and its checks).
pub type SharedClock = Arc<dyn Clock>;

/// The system's real-time clock.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> SystemTime {
        SystemTime::now()
    }
}

/// The system clock as a [`SharedClock`].
pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}

/// A clock that moves only when told: for tests and simulations of expiry.
/// Clones share the same time.
#[derive(Clone, Debug)]
pub struct ManualClock(Arc<Mutex<SystemTime>>);

impl ManualClock {
    pub fn new(start: SystemTime) -> ManualClock {
        ManualClock(Arc::new(Mutex::new(start)))
    }

    /// A manual clock at a Unix time in seconds.
    pub fn at_unix(secs: u64) -> ManualClock {
        ManualClock::new(UNIX_EPOCH + Duration::from_secs(secs))
    }

    pub fn set(&self, t: SystemTime) {
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = t;
    }

    pub fn advance(&self, d: Duration) {
        let mut t = self.0.lock().unwrap_or_else(|p| p.into_inner());
        *t += d;
    }

    /// This clock as a [`SharedClock`] (sharing its time).
    pub fn shared(&self) -> SharedClock {
        Arc::new(self.clone())
    }
}

impl Clock for ManualClock {
    fn now(&self) -> SystemTime {
        *self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told_and_clones_share_it() {
        let c = ManualClock::at_unix(1_000);
        let shared = c.shared();
        assert_eq!(shared.unix_secs(), 1_000);
        c.advance(Duration::from_millis(1_500));
        assert_eq!(shared.unix_secs(), 1_001);
        assert_eq!(shared.now(), UNIX_EPOCH + Duration::from_millis(1_001_500));
        c.set(UNIX_EPOCH);
        assert_eq!(shared.unix_secs(), 0);
    }

    #[test]
    fn times_before_the_epoch_count_as_zero_seconds() {
        let c = ManualClock::new(UNIX_EPOCH - Duration::from_secs(5));
        assert_eq!(c.unix_secs(), 0);
    }

    /// Expiries are stored to the second and rounded up: a grant given
    /// 1 s partway through a second is not born expired.
    #[test]
    fn expiries_round_up_to_the_second() {
        let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
        assert_eq!(ceil_to_second(at(1_000_900)), at(1_001_000));
        assert_eq!(ceil_to_second(at(1_001_000)), at(1_001_000));
        let c = ManualClock::new(at(1_000_001));
        assert_eq!((c.unix_secs(), c.unix_secs_ceil()), (1_000, 1_001));
        let g = crate::grant::expiry(at(1_000_900), Duration::from_secs(1)).unwrap();
        assert_eq!(g, at(1_002_000));
    }
}
