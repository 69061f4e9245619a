//! The view core: every filesystem request answered as a plain function
//! returning `Result<_, Errno>`, so tests drive it without a mount and the
//! FUSE adapter (`crate::fuse`) only translates.
//!
//! Invisible means invisible: a name outside the grant answers `ENOENT` to
//! every call, exactly like a name that does not exist.

mod attr;
mod handles;
pub mod tree;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

pub use attr::{Attr, DIR_SIZE};
use handles::{Handle, Handles};
use tree::Tree;
pub use tree::{Ino, Kind, ROOT};

use crate::error::{Errno, Result as CmdResult};
use crate::grant::Grant;
use crate::host::{stat_child, HostRoot};
use crate::policy::Mode;

pub type Result<T> = std::result::Result<T, Errno>;

/// Tunables of a view.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// How long the kernel may cache entries and attributes of host files.
    pub cache_ttl: Duration,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            cache_ttl: Duration::from_secs(1),
        }
    }
}

/// One entry of a directory listing, with its attributes (for readdirplus).
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: Ino,
    pub name: Box<str>,
    pub attr: Attr,
}

/// Filesystem statistics answered by `statfs`.
#[derive(Clone, Copy, Debug)]
pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

pub struct View {
    grant_id: String,
    mode: Mode,
    expires_at: Option<SystemTime>,
    host: HostRoot,
    tree: Tree,
    handles: Handles,
    opts: ViewOptions,
}

impl View {
    pub fn new(grant: &Grant, opts: ViewOptions) -> CmdResult<View> {
        let host = HostRoot::open(&grant.root).map_err(|e| {
            crate::error::Error::io(format!("opening host tree {}", grant.root.display()), e)
        })?;
        let mut files = grant.files.clone();
        if !files.is_sorted_by(|a, b| a.path < b.path) {
            files.sort_by(|a, b| a.path.cmp(&b.path));
            files.dedup_by(|a, b| a.path == b.path);
        }
        Ok(View {
            grant_id: grant.grant_id.clone(),
            mode: grant.mode,
            expires_at: grant.expires_at_time()?,
            host,
            tree: Tree::from_files(&files),
            handles: Handles::default(),
            opts,
        })
    }

    pub fn grant_id(&self) -> &str {
        &self.grant_id
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Open handles (files and directories), for leak checks.
    pub fn open_handles(&self) -> usize {
        self.handles.len()
    }

    /// How long the kernel may cache what it is told now: never past expiry.
    pub fn ttl(&self) -> Duration {
        match self.expires_at {
            Some(t) => t
                .duration_since(SystemTime::now())
                .unwrap_or_default()
                .min(self.opts.cache_ttl),
            None => self.opts.cache_ttl,
        }
    }

    /// After the grant expires every request answers EACCES.
    fn live(&self) -> Result<()> {
        match self.expires_at {
            Some(t) if SystemTime::now() >= t => Err(Errno::EACCES),
            _ => Ok(()),
        }
    }

    fn node_path(&self, ino: Ino) -> Result<(Kind, String)> {
        let node = self.tree.get(ino).ok_or(Errno::ENOENT)?;
        let path = self.tree.path(ino).ok_or(Errno::ENOENT)?;
        Ok((node.kind, path))
    }

    /// Attributes of a node, from the host entry at its path. A host entry
    /// that is gone or changed kind answers ENOENT.
    fn attr_of(&self, ino: Ino) -> Result<Attr> {
        let (kind, path) = self.node_path(ino)?;
        let st = self.host.lstat(&path)?;
        if attr::kind_of(&st) != Some(kind) {
            return Err(Errno::ENOENT);
        }
        Ok(attr::from_stat(ino, kind, &st, self.dir_nlink(ino)))
    }

    fn dir_nlink(&self, ino: Ino) -> u32 {
        2 + self.tree.subdirs(ino) as u32
    }

    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        self.live()?;
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let child = self.tree.child(parent, name).ok_or(Errno::ENOENT)?;
        self.attr_of(child)
    }

    pub fn getattr(&self, ino: Ino) -> Result<Attr> {
        self.live()?;
        self.attr_of(ino)
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.live()?;
        let (kind, path) = self.node_path(ino)?;
        if kind != Kind::Symlink {
            return Err(Errno::EINVAL);
        }
        Ok(self.host.readlink(&path)?)
    }

    /// Opens a file; `flags` are the `open(2)` flags. Returns the handle and
    /// the open host file (which the adapter may hand to the kernel for
    /// passthrough reads).
    pub fn open(&self, ino: Ino, flags: i32) -> Result<(u64, Arc<File>)> {
        self.live()?;
        let (kind, path) = self.node_path(ino)?;
        match kind {
            Kind::File => {}
            Kind::Dir => return Err(Errno::EISDIR),
            Kind::Symlink => return Err(Errno(libc::ELOOP)),
        }
        if wants_write(flags) {
            self.check_writable()?;
        }
        let file = Arc::new(self.host.open_file(&path)?);
        let fh = self.handles.insert(Handle::File(file.clone()));
        Ok((fh, file))
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.live()?;
        let Some(Handle::File(file)) = self.handles.get(fh) else {
            return Err(Errno::EBADF);
        };
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    pub fn release(&self, fh: u64) {
        self.handles.remove(fh);
    }

    /// Takes a snapshot of a directory: `.`, `..` and the children that
    /// still exist on the host with the kind the grant recorded.
    pub fn opendir(&self, ino: Ino) -> Result<u64> {
        self.live()?;
        let (kind, path) = self.node_path(ino)?;
        if kind != Kind::Dir {
            return Err(Errno::ENOTDIR);
        }
        let dirfd = self.host.open_dir(&path)?;
        let st = rustix::fs::fstat(&dirfd)?;
        let me = attr::from_stat(ino, Kind::Dir, &st, self.dir_nlink(ino));
        let node = self.tree.get(ino).ok_or(Errno::ENOENT)?;
        let parent = if ino == ROOT {
            me
        } else {
            self.attr_of(node.parent)?
        };
        let mut entries = Vec::with_capacity(node.children.len() + 2);
        entries.push(DirEntry {
            ino,
            name: ".".into(),
            attr: me,
        });
        entries.push(DirEntry {
            ino: node.parent,
            name: "..".into(),
            attr: parent,
        });
        for &child in &node.children {
            let Some(c) = self.tree.get(child) else {
                continue;
            };
            let Ok(st) = stat_child(&dirfd, &c.name) else {
                continue;
            };
            if attr::kind_of(&st) != Some(c.kind) {
                continue;
            }
            entries.push(DirEntry {
                ino: child,
                name: c.name.clone(),
                attr: attr::from_stat(child, c.kind, &st, self.dir_nlink(child)),
            });
        }
        Ok(self.handles.insert(Handle::Dir(Arc::new(entries))))
    }

    /// The listing snapshot of an open directory; offsets index into it.
    pub fn readdir(&self, fh: u64) -> Result<Arc<Vec<DirEntry>>> {
        self.live()?;
        match self.handles.get(fh) {
            Some(Handle::Dir(entries)) => Ok(entries),
            _ => Err(Errno::EBADF),
        }
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.remove(fh);
    }

    pub fn statfs(&self) -> Result<Statfs> {
        self.live()?;
        let v = self.host.statvfs()?;
        Ok(Statfs {
            blocks: v.f_blocks,
            bfree: v.f_bfree,
            bavail: v.f_bavail,
            files: self.tree.len() as u64,
            ffree: v.f_ffree,
            bsize: v.f_bsize as u32,
            namelen: 255,
            frsize: v.f_frsize as u32,
        })
    }

    pub fn getxattr(&self, ino: Ino, name: &OsStr) -> Result<Vec<u8>> {
        self.live()?;
        let (_, path) = self.node_path(ino)?;
        let name = name.to_str().ok_or(Errno::ENODATA)?;
        Ok(self.host.getxattr(&path, name)?)
    }

    pub fn listxattr(&self, ino: Ino) -> Result<Vec<u8>> {
        self.live()?;
        let (_, path) = self.node_path(ino)?;
        Ok(self.host.listxattr(&path)?)
    }

    /// `access(2)`: existence, a read-only view for W_OK, then mode bits.
    pub fn access(&self, ino: Ino, mask: i32, uid: u32, gid: u32) -> Result<()> {
        let a = self.getattr(ino)?;
        if mask & libc::W_OK != 0 {
            self.check_writable()?;
        }
        if mask == libc::F_OK {
            return Ok(());
        }
        let perm = u32::from(a.perm);
        let bits = if uid == 0 {
            // root may read and write anything, and execute what anyone may
            if mask & libc::X_OK != 0 && a.kind != Kind::Dir && perm & 0o111 == 0 {
                return Err(Errno::EACCES);
            }
            return Ok(());
        } else if uid == a.uid {
            (perm >> 6) & 7
        } else if gid == a.gid {
            (perm >> 3) & 7
        } else {
            perm & 7
        };
        if (mask as u32) & !bits & 7 != 0 {
            return Err(Errno::EACCES);
        }
        Ok(())
    }

    /// The answer to any request that would change `ino` (or create under
    /// it) in a view that cannot be written: ENOENT if it is not visible,
    /// EROFS otherwise.
    pub fn write_denied(&self, ino: Ino) -> Errno {
        if let Err(e) = self.live() {
            return e;
        }
        match self.tree.get(ino) {
            None => Errno::ENOENT,
            Some(_) => Errno::EROFS,
        }
    }

    fn check_writable(&self) -> Result<()> {
        // Writes arrive with the overlay (issue 3); until then every mode is read-only.
        Err(Errno::EROFS)
    }
}

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

#[cfg(test)]
mod tests;
