//! How the kernel serves each open file handle: kernel passthrough
//! (Linux 6.9+, CAP_SYS_ADMIN; reads and writes go to a backing file
//! without a round trip through the daemon) or the page cache, with the
//! daemon answering `read` and `write`.
//!
//! The kernel's rules, per inode: one backing file at a time, which every
//! passthrough open of it shares; while it has a passthrough open, every
//! open of it must be passthrough on that file (else EIO); while it has
//! page-cache opens, it cannot get a passthrough one. So:
//!
//! - read-only views: every open shares the host file (nothing changes it
//!   through the view);
//! - writable views: host files are never passthrough (a copy-up would
//!   change the backing file under open readers), and their page cache is
//!   kept across opens; overlay objects opened for reading are
//!   passthrough unless page-cache opens exist; writers use the page cache
//!   (the daemon serves each write and enforces the quota) unless
//!   passthrough opens exist: then they join them, and the quota is
//!   settled when the handle closes.
//!
//! The backing file is whatever the caller's registration returns (a
//! fuser `BackingId` in the adapter): it is shared by the inode's
//! passthrough opens and dropped, which closes it, with the last of them.

use std::any::Any;
use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use super::{Ino, Result, View};
use crate::error::Errno;
use crate::policy::Mode;

/// How the kernel serves an open handle.
#[derive(Debug)]
pub enum Serve<B> {
    /// Reads and writes go straight to the backing file `B`.
    Passthrough(Arc<B>),
    /// The daemon serves reads and writes through the page cache; `keep`:
    /// pages cached by earlier opens stay valid.
    PageCache { keep: bool },
}

/// The answer to `open` and `create`: the handle and how it is served.
#[derive(Debug)]
pub struct Open<B> {
    pub fh: u64,
    pub serve: Serve<B>,
}

/// A file opened by the core, before the kernel is told how to serve it.
pub(super) struct Opened {
    pub fh: u64,
    pub ino: Ino,
    pub file: Arc<File>,
    /// The overlay object opened, or `None` for the host file.
    pub obj: Option<u64>,
    pub writable: bool,
}

type Backing = Arc<dyn Any + Send + Sync>;

/// The passthrough bookkeeping of a view.
#[derive(Default)]
pub(super) struct Serving {
    /// Negotiated with the kernel, and registering backing files works.
    passthrough: AtomicBool,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    by_ino: HashMap<Ino, Inode>,
    by_fh: HashMap<u64, Served>,
}

#[derive(Default)]
struct Inode {
    passthrough: u32,
    cached: u32,
    /// The shared backing file while passthrough opens exist, and which
    /// file it is: the overlay object, or `None` for the host file.
    backing: Option<(Option<u64>, Weak<dyn Any + Send + Sync>)>,
}

struct Served {
    ino: Ino,
    /// Holds the backing file open; `None` for a page-cache open.
    backing: Option<Backing>,
}

impl View {
    /// Whether `init` should ask the kernel for passthrough. Not in direct
    /// views (the host file changes under the kernel's feet), nor with
    /// `WOPFS_NO_PASSTHROUGH` set.
    pub fn wants_passthrough(&self) -> bool {
        self.mode != Mode::ReadWriteDirect && std::env::var_os("WOPFS_NO_PASSTHROUGH").is_none()
    }

    /// Records the outcome of the kernel's negotiation.
    pub fn use_passthrough(&self, negotiated: bool) {
        self.serving
            .passthrough
            .store(negotiated, Ordering::Relaxed);
        tracing::info!(passthrough = negotiated, "kernel passthrough negotiated");
    }

    /// Decides how the kernel serves a new handle and records it; `register`
    /// makes a file a passthrough backing file. Every handle the kernel is
    /// given goes through here, and `release` undoes it. On an error the
    /// handle is released.
    pub(super) fn serve<B: Send + Sync + 'static>(
        &self,
        opened: Opened,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Result<Open<B>> {
        let fh = opened.fh;
        let read_only = self.mode == Mode::ReadOnly;
        let mut guard = self.serving.lock();
        let st = &mut *guard;
        let inode = st.by_ino.entry(opened.ino).or_default();
        let wants_passthrough = match (read_only, opened.obj.is_some(), opened.writable) {
            (true, _, _) => true,
            (false, false, _) => false,
            (false, true, false) => inode.cached == 0,
            (false, true, true) => inode.passthrough > 0,
        };
        if wants_passthrough {
            match self
                .serving
                .attach(inode, opened.obj, &opened.file, register)
            {
                Some((id, backing)) => {
                    inode.passthrough += 1;
                    let backing = Some(backing);
                    st.by_fh.insert(
                        fh,
                        Served {
                            ino: opened.ino,
                            backing,
                        },
                    );
                    return Ok(Open {
                        fh,
                        serve: Serve::Passthrough(id),
                    });
                }
                // A writer is sent here only to join passthrough opens; one
                // that cannot would be refused by the kernel anyway.
                None if opened.writable && !read_only => {
                    drop(guard);
                    self.release(fh);
                    return Err(super::Error::caused_by(
                        Errno::EIO,
                        "a writer cannot join the passthrough opens of its file",
                    ));
                }
                None => {}
            }
        }
        inode.cached += 1;
        st.by_fh.insert(
            fh,
            Served {
                ino: opened.ino,
                backing: None,
            },
        );
        Ok(Open {
            fh,
            serve: Serve::PageCache { keep: !read_only },
        })
    }

    /// Forgets how a released handle was served; whether it was
    /// passthrough (its writes then bypassed the daemon).
    pub(super) fn unserve(&self, fh: u64) -> bool {
        let mut st = self.serving.lock();
        let Some(served) = st.by_fh.remove(&fh) else {
            return false;
        };
        let passthrough = served.backing.is_some();
        // Dropping the last reference closes the backing file.
        drop(served.backing);
        if let Some(inode) = st.by_ino.get_mut(&served.ino) {
            if passthrough {
                inode.passthrough = inode.passthrough.saturating_sub(1);
            } else {
                inode.cached = inode.cached.saturating_sub(1);
            }
            if inode.passthrough == 0 {
                inode.backing = None;
            }
            if inode.passthrough == 0 && inode.cached == 0 {
                st.by_ino.remove(&served.ino);
            }
        }
        passthrough
    }
}

impl Serving {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every critical section leaves the maps consistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The inode's shared backing file, registered with `register` if it
    /// has none. `None`: serve it otherwise (passthrough is off, it failed,
    /// or the inode is backed by another file right now: the host file,
    /// opened before a copy-up).
    fn attach<B: Send + Sync + 'static>(
        &self,
        inode: &mut Inode,
        obj: Option<u64>,
        file: &File,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Option<(Arc<B>, Backing)> {
        let existing = inode
            .backing
            .as_ref()
            .and_then(|(o, w)| w.upgrade().map(|b| (*o, b)));
        match existing {
            Some((o, backing)) if o == obj => {
                let id = backing.clone().downcast::<B>().ok()?;
                return Some((id, backing));
            }
            Some(_) => return None,
            None => {}
        }
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        match register(file) {
            Ok(id) => {
                let id = Arc::new(id);
                let backing: Backing = id.clone();
                inode.backing = Some((obj, Arc::downgrade(&backing)));
                Some((id, backing))
            }
            Err(e) => {
                // EPERM without CAP_SYS_ADMIN, or an unsupported backing fs.
                tracing::info!(error = %e, "passthrough unavailable; serving reads");
                self.passthrough.store(false, Ordering::Relaxed);
                None
            }
        }
    }
}
