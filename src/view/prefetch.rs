//! Warms the host's inode cache ahead of listings, on a second thread.
//!
//! A listing (readdirplus) stats every entry it returns, and on a cold
//! cache each stat is a lookup in the host directory and a read of the
//! inode: the same work a native `find` does, done in the request's path.
//! When a directory starts being listed, the rest of its entries and the
//! entries of its subdirectories (which a walk lists next) are statted here
//! meanwhile, so the requests that follow find them cached. The results are
//! thrown away: every answer still comes from the request's own stat, so
//! nothing is staler than without this.
//!
//! Only names the view shows are statted, through the same `openat2`
//! beneath the root that serves requests (no symlink is ever followed).
//! Work is bounded: at most [`MAX_JOBS`] directories wait, the newest
//! first (a walk goes depth first), and a directory whose listing has
//! started is dropped from the queue.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::host::{stat_child, HostRoot};
use crate::tree::Ino;

/// Directories waiting at most; older ones are dropped past it.
const MAX_JOBS: usize = 256;

/// Names one listing may queue.
pub const BUDGET: usize = 2048;

/// The entries of one host directory to stat.
pub struct Job {
    /// The view's directory (to drop the job once its listing starts).
    ino: Ino,
    /// Its host path, relative to the root.
    dir: String,
    names: Vec<Box<str>>,
}

impl Job {
    pub fn new(ino: Ino, dir: String, names: Vec<Box<str>>) -> Job {
        Job { ino, dir, names }
    }
}

#[derive(Default)]
struct Queue {
    /// The newest job last; the worker takes from the end.
    jobs: Vec<Job>,
    /// The worker holds a job.
    busy: bool,
    stop: bool,
    /// The host paths statted so far (tests).
    #[cfg(test)]
    statted: Vec<String>,
}

struct Shared {
    queue: Mutex<Queue>,
    wake: Condvar,
}

/// The prefetcher of one view; its thread ends when this is dropped.
pub struct Prefetch {
    shared: Arc<Shared>,
}

impl Prefetch {
    /// Starts the worker on its own handle of the host root; `None` if the
    /// thread or the handle cannot be had (listings then work as before).
    pub fn start(host: &HostRoot) -> Option<Prefetch> {
        let host = host.try_clone().ok()?;
        let shared = Arc::new(Shared {
            queue: Mutex::default(),
            wake: Condvar::new(),
        });
        let worker = shared.clone();
        std::thread::Builder::new()
            .name("prefetch".into())
            .spawn(move || work(&worker, &host))
            .ok()?;
        Some(Prefetch { shared })
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        lock(&self.shared)
    }

    /// A listing of `ino` started: it no longer needs warming.
    pub fn listing(&self, ino: Ino) {
        let mut q = self.lock();
        q.jobs.retain(|j| j.ino != ino);
    }

    /// Queues `jobs`, the first to be done first, ahead of everything
    /// queued before.
    pub fn push(&self, jobs: Vec<Job>) {
        let mut q = self.lock();
        let before = q.jobs.len();
        for job in jobs.into_iter().rev() {
            if !job.names.is_empty() {
                q.jobs.retain(|j| j.ino != job.ino);
                q.jobs.push(job);
            }
        }
        if q.jobs.len() > MAX_JOBS {
            let over = q.jobs.len() - MAX_JOBS;
            q.jobs.drain(..over);
        }
        if q.jobs.len() != before {
            self.shared.wake.notify_one();
        }
    }

    /// The host paths statted so far, in order.
    #[cfg(test)]
    pub fn statted(&self) -> Vec<String> {
        self.lock().statted.clone()
    }

    /// Waits until every queued job is done (tests).
    #[cfg(test)]
    pub fn idle(&self) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let q = self.lock();
            if q.jobs.is_empty() && !q.busy {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "prefetch never went idle"
            );
            drop(q);
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        self.lock().stop = true;
        self.shared.wake.notify_one();
    }
}

fn lock(shared: &Shared) -> MutexGuard<'_, Queue> {
    shared.queue.lock().unwrap_or_else(|p| p.into_inner())
}

fn work(shared: &Shared, host: &HostRoot) {
    loop {
        let job = {
            let mut q = lock(shared);
            loop {
                if q.stop {
                    return;
                }
                if let Some(job) = q.jobs.pop() {
                    q.busy = true;
                    break job;
                }
                q = shared.wake.wait(q).unwrap_or_else(|p| p.into_inner());
            }
        };
        if let Ok(dir) = host.open_dir(&job.dir) {
            for name in &job.names {
                let _ = stat_child(&dir, name);
            }
            #[cfg(test)]
            lock(shared)
                .statted
                .extend(job.names.iter().map(|n| match &*job.dir {
                    "" => n.to_string(),
                    d => format!("{d}/{n}"),
                }));
        }
        lock(shared).busy = false;
    }
}
