//! Where a session's new contents are, for whoever reads them back (patch
//! sets, `status`, the rebase after a commit). `Origin::Upper(obj)` names
//! an object: for the FUSE engine the file `overlay/objects/<fanout>/obj`,
//! for the kernel engine the entry the reader found in the upper directory
//! (`kernel.rs` numbers them as it walks).
//!
//! Objects are read beneath their root (`openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS)`, through `HostRoot`): a kernel upper can be read
//! while the agent still writes to it (`wopfs diff` of a mounted view), and
//! a directory swapped for a symlink meanwhile must not lead anywhere.

use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::Stat;

use super::engine::{Engine, ReadableUpper};
use crate::host::HostRoot;

pub struct Objects {
    /// `overlay/objects/`, or the kernel engine's upper directory.
    root: PathBuf,
    /// The root, opened; `None` when it does not exist (nothing written yet).
    dir: Option<HostRoot>,
    kernel: Option<KernelObjects>,
}

struct KernelObjects {
    /// Object → its path relative to the upper directory.
    rels: HashMap<u64, String>,
    /// Keeps an image mounted just to be read mounted while this is held.
    upper: ReadableUpper,
}

impl Objects {
    /// The FUSE engine's objects directory.
    pub fn fuse(objects_dir: PathBuf) -> Objects {
        Objects {
            dir: HostRoot::open(&objects_dir).ok(),
            root: objects_dir,
            kernel: None,
        }
    }

    /// The kernel engine's upper directory and the entries its reader
    /// numbered.
    pub fn kernel(upper: ReadableUpper, rels: HashMap<u64, String>) -> Objects {
        Objects {
            dir: HostRoot::open(&upper.upper).ok(),
            root: upper.upper.clone(),
            kernel: Some(KernelObjects { rels, upper }),
        }
    }

    pub fn engine(&self) -> Engine {
        match self.kernel {
            Some(_) => Engine::Kernel,
            None => Engine::Fuse,
        }
    }

    /// The directory objects are named relative to.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Object `obj`'s path relative to `root()`; `None` for a number the
    /// kernel reader never gave out.
    pub fn rel(&self, obj: u64) -> Option<String> {
        match &self.kernel {
            Some(k) => k.rels.get(&obj).cloned(),
            None => Some(super::object_rel(obj)),
        }
    }

    /// Object `obj`'s path (for messages and for files to drop).
    pub fn path(&self, obj: u64) -> Option<PathBuf> {
        self.rel(obj).map(|r| self.root.join(r))
    }

    fn at(&self, obj: u64) -> io::Result<(&HostRoot, String)> {
        let none = || io::Error::from_raw_os_error(libc::ENOENT);
        let dir = self.dir.as_ref().ok_or_else(none)?;
        Ok((dir, self.rel(obj).ok_or_else(none)?))
    }

    /// Kernel engine: whether removing the upper entry at `rel` would show
    /// the lower's entry at that path again (no opaque directory above it).
    /// Always false for the FUSE engine, whose objects hide nothing.
    pub fn lower_shows_through(&self, rel: &str) -> bool {
        match (&self.kernel, &self.dir) {
            (Some(k), Some(dir)) => !super::kernel::opaque_above(dir, k.upper.ns, rel),
            _ => false,
        }
    }

    /// `lstat` of the object, never following a symlink.
    pub fn lstat(&self, obj: u64) -> io::Result<Stat> {
        let (dir, rel) = self.at(obj)?;
        dir.lstat(&rel)
    }

    /// Opens a regular file object for reading (anything else is ENOENT).
    pub fn open_file(&self, obj: u64) -> io::Result<File> {
        let (dir, rel) = self.at(obj)?;
        dir.open_file(&rel)
    }

    /// A symlink object's target.
    pub fn readlink(&self, obj: u64) -> io::Result<Vec<u8>> {
        let (dir, rel) = self.at(obj)?;
        dir.readlink(&rel)
    }
}
