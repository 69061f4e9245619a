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
//!
//! Reads get the same help when they go through a directory in order (as
//! `grep -r`, `cp -r` or `tar c` do): once two files of a directory are
//! opened in listing order, the next [`READ_AHEAD`] files are opened here
//! and their first [`READ_AHEAD_BYTES`] asked of the disk
//! (`POSIX_FADV_WILLNEED`), so their reads find the page cache filled.
//! Again nothing is answered from here; the page cache is the host's own.
//!
//! Only names the view shows are statted or opened, through the same
//! `openat2` beneath the root that serves requests (no symlink is ever
//! followed; what is not a regular file is closed unread). Work is
//! bounded: at most [`MAX_JOBS`] directories and [`MAX_NAMES`] names
//! wait, the newest first (a walk goes depth first; the oldest are
//! dropped), and a directory whose listing has started is dropped from
//! the queue.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use crate::host::{stat_child, HostRoot};
use crate::tree::{Ino, Kind, Origin, Tree};

/// Directories, and names, waiting at most; older ones are dropped past
/// either.
const MAX_JOBS: usize = 256;
const MAX_NAMES: usize = 4 * BUDGET;

/// Names one listing may queue.
pub const BUDGET: usize = 2048;

/// Files read ahead of an in-order reader, and how much of each.
pub const READ_AHEAD: usize = 16;
pub const READ_AHEAD_BYTES: u64 = 128 * 1024;

/// Directories whose readers are followed at most.
const MAX_STREAMS: usize = 64;

/// The entries of one host directory to stat, or files to read ahead.
struct Job {
    /// The view's directory (to drop the job once its listing starts).
    ino: Ino,
    /// Its host path, relative to the root.
    dir: String,
    names: Vec<Box<str>>,
    read: bool,
}

impl Job {
    /// Entries to stat.
    fn new(ino: Ino, dir: String, names: Vec<Box<str>>) -> Job {
        Job {
            ino,
            dir,
            names,
            read: false,
        }
    }
}

/// Where in-order reading of one directory stands, by child index.
struct Stream {
    /// The last file opened.
    last: usize,
    /// Files before this one are read ahead already.
    ahead: usize,
}

#[derive(Default)]
struct Queue {
    /// The newest job last; the worker takes from the end.
    jobs: Vec<Job>,
    /// The worker holds a job.
    busy: bool,
    stop: bool,
    streams: HashMap<Ino, Stream>,
    /// The host paths statted, and read ahead, so far (tests).
    #[cfg(test)]
    statted: Vec<String>,
    #[cfg(test)]
    read: Vec<String>,
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

    /// The first part of `dir`'s listing is out; `rest` is what it left:
    /// warm that, then each subdirectory's entries in order, up to
    /// [`BUDGET`] names in all (a huge directory costs its first request no
    /// more than a small one). Only entries in place on the host.
    pub fn listed(&self, tree: &Tree, dir: Ino, rest: &[(u64, Box<str>)]) {
        let mut budget = BUDGET;
        let take = |budget: &mut usize, names: &mut dyn Iterator<Item = &Box<str>>| {
            let v: Vec<Box<str>> = names.take(*budget).cloned().collect();
            *budget -= v.len();
            v
        };
        let in_place = |ino: Ino| tree.get(ino).filter(|n| n.origin == Origin::InPlace);
        let mut jobs = Vec::new();
        if let Some(p) = tree.path(dir) {
            let mut own = rest
                .iter()
                .filter(|(ino, n)| &**n != "." && &**n != ".." && in_place(*ino).is_some())
                .map(|(_, n)| n);
            jobs.push(Job::new(dir, p, take(&mut budget, &mut own)));
        }
        let children = tree.get(dir).map_or(&[][..], |n| n.children.as_slice());
        for &c in children {
            if budget == 0 {
                break;
            }
            if !in_place(c).is_some_and(|n| n.kind == Kind::Dir) {
                continue;
            }
            let (Some(p), Some(node)) = (tree.path(c), tree.get(c)) else {
                continue;
            };
            let mut names = node
                .children
                .iter()
                .filter_map(|g| in_place(*g))
                .map(|g| &g.name);
            jobs.push(Job::new(c, p, take(&mut budget, &mut names)));
        }
        self.push(jobs);
    }

    /// Host file `ino` was opened to be read: if its directory is being
    /// read in order, the next files are read ahead.
    pub fn opened_file(&self, tree: &Tree, ino: Ino) {
        let Some(node) = tree.get(ino).filter(|n| n.origin == Origin::InPlace) else {
            return;
        };
        let dir = node.parent;
        let Some(from) = tree
            .index_of(dir, &node.name)
            .and_then(|i| self.opened(dir, i))
        else {
            return;
        };
        let (Some(parent), Some(path)) = (tree.get(dir), tree.path(dir)) else {
            return;
        };
        let mut names = Vec::new();
        let mut end = from;
        for c in parent.children.iter().skip(from) {
            if names.len() == READ_AHEAD {
                break;
            }
            end += 1;
            if let Some(c) = tree
                .get(*c)
                .filter(|c| c.kind == Kind::File && c.origin == Origin::InPlace)
            {
                names.push(c.name.clone());
            }
        }
        self.read_ahead(dir, path, names, end);
    }

    /// A listing of `ino` started: its entries no longer need warming.
    pub fn listing(&self, ino: Ino) {
        let mut q = self.lock();
        q.jobs.retain(|j| j.ino != ino || j.read);
    }

    /// File `index` (among its directory's children) of `dir` was opened to
    /// be read. If that continues an in-order reading and too little is
    /// read ahead, the index to read ahead from.
    fn opened(&self, dir: Ino, index: usize) -> Option<usize> {
        let mut q = self.lock();
        if q.streams.len() >= MAX_STREAMS && !q.streams.contains_key(&dir) {
            q.streams.clear();
        }
        let s = q.streams.entry(dir).or_insert(Stream {
            last: usize::MAX,
            ahead: 0,
        });
        // Subdirectories and other entries may sit between two files.
        let in_order = s.last < index && index <= s.last.saturating_add(4);
        s.last = index;
        let from = s.ahead.max(index + 1);
        (in_order && s.ahead <= index + READ_AHEAD / 2).then_some(from)
    }

    /// Queues files of `dir` (host path `path`) to read ahead, first; the
    /// children before index `end` need no more.
    fn read_ahead(&self, dir: Ino, path: String, names: Vec<Box<str>>, end: usize) {
        let mut q = self.lock();
        if let Some(s) = q.streams.get_mut(&dir) {
            s.ahead = s.ahead.max(end);
        }
        if names.is_empty() {
            return;
        }
        q.jobs.push(Job {
            ino: dir,
            dir: path,
            names,
            read: true,
        });
        trim(&mut q.jobs);
        self.shared.wake.notify_one();
    }

    /// Queues `jobs`, the first to be done first, ahead of everything
    /// queued before.
    fn push(&self, jobs: Vec<Job>) {
        let mut q = self.lock();
        let mut pushed = false;
        for job in jobs.into_iter().rev() {
            if !job.names.is_empty() {
                q.jobs.retain(|j| j.ino != job.ino || j.read);
                q.jobs.push(job);
                pushed = true;
            }
        }
        trim(&mut q.jobs);
        if pushed {
            self.shared.wake.notify_one();
        }
    }

    /// The host paths statted so far, in order.
    #[cfg(test)]
    pub fn statted(&self) -> Vec<String> {
        self.lock().statted.clone()
    }

    /// The host paths read ahead so far, in order.
    #[cfg(test)]
    pub fn read(&self) -> Vec<String> {
        self.lock().read.clone()
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

/// Drops the oldest jobs past [`MAX_JOBS`] or [`MAX_NAMES`].
fn trim(jobs: &mut Vec<Job>) {
    let mut names: usize = jobs.iter().map(|j| j.names.len()).sum();
    let mut over = 0;
    while jobs.len() - over > MAX_JOBS || names > MAX_NAMES {
        names -= jobs[over].names.len();
        over += 1;
    }
    jobs.drain(..over);
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
        let path = |n: &str| match &*job.dir {
            "" => n.to_string(),
            d => format!("{d}/{n}"),
        };
        if job.read {
            for name in &job.names {
                // open_file refuses all but regular files (NONBLOCK: a FIFO
                // swapped in never blocks here).
                if let Ok(f) = host.open_file(&path(name)) {
                    let len = std::num::NonZeroU64::new(READ_AHEAD_BYTES);
                    let _ = rustix::fs::fadvise(&f, 0, len, rustix::fs::Advice::WillNeed);
                    #[cfg(test)]
                    lock(shared).read.push(path(name));
                }
            }
        } else if let Ok(dir) = host.open_dir(&job.dir) {
            for name in &job.names {
                let _ = stat_child(&dir, name);
            }
            #[cfg(test)]
            lock(shared)
                .statted
                .extend(job.names.iter().map(|n| path(n)));
        }
        lock(shared).busy = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jobs(n: usize, names: usize) -> Vec<Job> {
        (0..n as u64)
            .map(|i| Job::new(i, format!("d{i}"), vec!["x".into(); names]))
            .collect()
    }

    #[test]
    fn the_queue_keeps_the_newest_within_both_bounds() {
        let mut q = jobs(MAX_JOBS + 44, 1);
        trim(&mut q);
        assert_eq!(q.len(), MAX_JOBS);
        assert_eq!(q[0].ino, 44);
        let mut q = jobs(10, BUDGET);
        trim(&mut q);
        assert_eq!(q.len(), MAX_NAMES / BUDGET);
        assert_eq!(q.last().map(|j| j.ino), Some(9));
        let mut q = jobs(3, 1);
        trim(&mut q);
        assert_eq!(q.len(), 3);
    }
}
