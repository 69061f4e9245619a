//! Kernel FUSE passthrough (Linux 6.9+, needs CAP_SYS_ADMIN): reads of an
//! opened file go straight to the host file without a round trip through
//! the daemon. When the kernel or our privileges do not allow it, files are
//! served by plain reads instead, quietly.

use std::collections::HashMap;
use std::fs::File;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};

use fuser::{BackingId, InitFlags, KernelConfig, ReplyOpen};

use crate::view::Ino;

#[derive(Default)]
pub struct Passthrough {
    enabled: AtomicBool,
    state: Mutex<Backings>,
}

#[derive(Default)]
struct Backings {
    /// The kernel allows one backing file per inode at a time, so opens of
    /// the same inode share it while any is open.
    by_ino: HashMap<Ino, Weak<BackingId>>,
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

    /// Registers `file` as the backing file of open handle `fh`, or returns
    /// `None` to serve it with plain reads.
    pub fn attach(
        &self,
        ino: Ino,
        fh: u64,
        file: &File,
        reply: &ReplyOpen,
    ) -> Option<Arc<BackingId>> {
        if !self.enabled.load(Ordering::Relaxed) {
            return None;
        }
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let id = match st.by_ino.get(&ino).and_then(Weak::upgrade) {
            Some(id) => id,
            None => match reply.open_backing(file) {
                Ok(id) => {
                    let id = Arc::new(id);
                    st.by_ino.insert(ino, Arc::downgrade(&id));
                    id
                }
                Err(e) => {
                    // EPERM without CAP_SYS_ADMIN, or an unsupported backing fs.
                    tracing::info!(error = %e, "passthrough unavailable; using plain reads");
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
