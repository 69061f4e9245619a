//! Where a node reads from: its overlay object (once copied up or made in
//! the view) or its host entry. The one place reads ask "object or host?".
//!
//! An object the tree names but the overlay lacks is damage to the state
//! dir, not a name the agent removed: EIO, with the object in the cause.

use std::fs::File;
use std::io;

use rustix::fs::Stat;

use super::{Error, Result, View};
use crate::error::Errno;
use crate::host::HostRoot;
use crate::overlay::Overlay;
use crate::tree::{Ino, Origin, Tree};

pub(super) enum Source<'a> {
    Object(&'a Overlay, u64),
    Host(&'a HostRoot, String),
}

impl View {
    /// Where node `ino` of `tree` reads from.
    pub(super) fn source(&self, tree: &Tree, ino: Ino) -> Result<Source<'_>> {
        let node = tree.get(ino).ok_or(Errno::ENOENT)?;
        match node.origin {
            Origin::Upper(obj) => Ok(Source::Object(self.objects(obj)?, obj)),
            _ => Ok(Source::Host(
                &self.host,
                tree.host_path(ino).ok_or(Errno::ENOENT)?,
            )),
        }
    }

    /// The overlay holding object `obj`.
    pub(super) fn objects(&self, obj: u64) -> Result<&Overlay> {
        self.overlay().ok_or_else(|| {
            Error::caused_by(
                Errno::EIO,
                format!("object {obj} in a view without an overlay"),
            )
        })
    }
}

impl Source<'_> {
    pub fn lstat(&self) -> Result<Stat> {
        match self {
            Source::Object(ov, obj) => ov.stat(*obj).map_err(|e| object_error(*obj, e)),
            Source::Host(host, path) => Ok(host.lstat(path)?),
        }
    }

    pub fn readlink(&self) -> Result<Vec<u8>> {
        match self {
            Source::Object(ov, obj) => ov.readlink(*obj).map_err(|e| object_error(*obj, e)),
            Source::Host(host, path) => Ok(host.readlink(path)?),
        }
    }

    /// Opens the file for reading, with the object it is (`None`: the host
    /// file). Objects open read-write even for a reader: if the kernel
    /// makes one a passthrough backing file, later writers share it.
    pub fn open(&self) -> Result<(File, Option<u64>)> {
        match self {
            Source::Object(ov, obj) => {
                let file = ov
                    .open_file(*obj, true)
                    .map_err(|e| object_error(*obj, e))?;
                Ok((file, Some(*obj)))
            }
            Source::Host(host, path) => Ok((host.open_file(path)?, None)),
        }
    }

    /// `user.*` attributes only on objects: anything else on them belongs
    /// to the state dir, not the view (see `View::getxattr`).
    pub fn getxattr(&self, name: &str) -> Result<Vec<u8>> {
        match self {
            Source::Object(ov, obj) => {
                let mut buf = vec![0u8; 64 * 1024];
                let n = rustix::fs::lgetxattr(ov.path(*obj), name, &mut buf[..])
                    .map_err(|e| object_error(*obj, e.into()))?;
                buf.truncate(n);
                Ok(buf)
            }
            Source::Host(host, path) => Ok(host.getxattr(path, name)?),
        }
    }

    pub fn listxattr(&self) -> Result<Vec<u8>> {
        match self {
            Source::Object(ov, obj) => {
                let mut buf = vec![0u8; 64 * 1024];
                let n = rustix::fs::llistxattr(ov.path(*obj), &mut buf[..])
                    .map_err(|e| object_error(*obj, e.into()))?;
                buf.truncate(n);
                Ok(buf)
            }
            Source::Host(host, path) => Ok(host.listxattr(path)?),
        }
    }
}

/// An error of object `obj`: a missing object is EIO (see the module doc).
pub(super) fn object_error(obj: u64, e: io::Error) -> Error {
    if e.kind() == io::ErrorKind::NotFound {
        Error::caused_by(Errno::EIO, e).context(format!("overlay object {obj} is missing"))
    } else {
        Error::from(e).context(format!("overlay object {obj}"))
    }
}
