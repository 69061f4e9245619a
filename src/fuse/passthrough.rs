//! Kernel FUSE passthrough (Linux 6.9+, needs CAP_SYS_ADMIN): reads of an
//! opened file go straight to the backing file without a round trip through
//! the daemon. When the kernel or our privileges do not allow it, files are
//! served by the daemon instead, quietly.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use fuser::{BackingId, InitFlags, KernelConfig};

use crate::view::Ino;

#[derive(Default)]
pub struct Passthrough {
    enabled: AtomicBool,
    state: Mutex<Backings>,
}

#[derive(Default)]
struct Backings {
    /// The kernel allows one backing file per inode at a time, so opens of
    /// the same inode share it while any is open. Beside it: which file it
    /// is, the overlay object or `None` for the host file.
    by_ino: HashMap<Ino, (Option<u64>, Weak<BackingId>)>,
    by_fh: HashMap<u64, (Ino, Arc<BackingId>)>,
}

impl Passthrough {
    pub fn negotiate(&self, config: &mut KernelConfig) {
        if std::env::var_os("WOPFS_NO_PASSTHROUGH").is_some() {
            return;
        }
        let ok = config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        self.enabled.store(ok, Ordering::Relaxed);
        tracing::info!(passthrough = ok, "kernel passthrough negotiated");
    }

    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Registers `file` (overlay object `obj`, or the host file) as the
    /// backing file of open handle `fh`. `None` means serve it otherwise:
    /// passthrough is off, or the inode is backed by another file right now
    /// (the host file, opened before a copy-up).
    pub fn attach(
        &self,
        ino: Ino,
        obj: Option<u64>,
        fh: u64,
        file: &File,
        open_backing: impl FnOnce(&File) -> std::io::Result<BackingId>,
    ) -> Option<Arc<BackingId>> {
        if !self.enabled() {
            return None;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let existing = st
            .by_ino
            .get(&ino)
            .and_then(|(o, w)| w.upgrade().map(|id| (*o, id)));
        let id = match existing {
            Some((o, id)) if o == obj => id,
            Some(_) => return None,
            None => match open_backing(file) {
                Ok(id) => {
                    let id = Arc::new(id);
                    st.by_ino.insert(ino, (obj, Arc::downgrade(&id)));
                    id
                }
                Err(e) => {
                    // EPERM without CAP_SYS_ADMIN, or an unsupported backing fs.
                    tracing::info!(error = %e, "passthrough unavailable; serving reads");
                    self.enabled.store(false, Ordering::Relaxed);
                    return None;
                }
            },
        };
        st.by_fh.insert(fh, (ino, id.clone()));
        Some(id)
    }

    pub fn detach(&self, fh: u64) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((ino, id)) = st.by_fh.remove(&fh) {
            if Arc::strong_count(&id) == 1 {
                // The last open of this inode: dropping `id` closes the backing file.
                st.by_ino.remove(&ino);
            }
        }
    }
}
