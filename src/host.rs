//! The host tree, reached only beneath its root. Every path is resolved with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from a directory fd taken
//! once, so a symlink anywhere in a path (planted before or during a session)
//! makes the access fail instead of leaving the root.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode as RMode, OFlags, ResolveFlags, Stat};

/// An open handle on the root of a host tree.
pub struct HostRoot {
    dir: OwnedFd,
    path: PathBuf,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// `""` (the root) becomes `.` for the *at calls.
fn at(rel: &str) -> &str {
    if rel.is_empty() {
        "."
    } else {
        rel
    }
}

impl HostRoot {
    /// Opens `path` (which must be a real directory, not a symlink to one).
    pub fn open(path: &Path) -> io::Result<HostRoot> {
        let dir = rfs::open(
            path,
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            RMode::empty(),
        )?;
        Ok(HostRoot {
            dir,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` beneath the root with `flags` (`O_NOFOLLOW` and
    /// `O_CLOEXEC` are always added). With `O_PATH` the final component may
    /// be a symlink, and the fd then refers to the link itself.
    pub fn open_at(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        Ok(rfs::openat2(
            &self.dir,
            at(rel),
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            RMode::empty(),
            resolve(),
        )?)
    }

    /// Opens a regular file for reading.
    pub fn open_file(&self, rel: &str) -> io::Result<File> {
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK)?;
        let st = rfs::fstat(&fd)?;
        if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(File::from(fd))
    }

    /// Opens a directory for listing and for `stat_child`.
    pub fn open_dir(&self, rel: &str) -> io::Result<OwnedFd> {
        self.open_at(rel, OFlags::RDONLY | OFlags::DIRECTORY)
    }

    /// `lstat` of `rel`, never following a symlink.
    pub fn lstat(&self, rel: &str) -> io::Result<Stat> {
        if rel.is_empty() {
            return Ok(rfs::fstat(&self.dir)?);
        }
        let fd = self.open_at(rel, OFlags::PATH)?;
        Ok(rfs::fstat(&fd)?)
    }

    /// The target of the symlink at `rel`.
    pub fn readlink(&self, rel: &str) -> io::Result<Vec<u8>> {
        let fd = self.open_at(rel, OFlags::PATH)?;
        Ok(rfs::readlinkat(&fd, "", Vec::new())?.into_bytes())
    }

    /// Filesystem statistics of the host filesystem holding the root.
    pub fn statvfs(&self) -> io::Result<rfs::StatVfs> {
        Ok(rfs::fstatvfs(&self.dir)?)
    }

    /// Opens `rel` so its extended attributes can be read: regular files and
    /// directories only (symlinks carry none a view exposes).
    fn open_for_xattr(&self, rel: &str) -> io::Result<OwnedFd> {
        let fd = self.open_at(rel, OFlags::PATH)?;
        let st = rfs::fstat(&fd)?;
        match rfs::FileType::from_raw_mode(st.st_mode) {
            rfs::FileType::RegularFile | rfs::FileType::Directory => {
                self.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK)
            }
            _ => Err(io::Error::from_raw_os_error(libc::ENODATA)),
        }
    }

    pub fn getxattr(&self, rel: &str, name: &str) -> io::Result<Vec<u8>> {
        let fd = self.open_for_xattr(rel)?;
        let mut buf = Vec::with_capacity(256);
        loop {
            match rfs::fgetxattr(&fd, name, spare(&mut buf)) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) if buf.capacity() < 1 << 20 => {
                    buf.reserve(buf.capacity() * 4);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Attribute names, NUL-terminated and concatenated as `listxattr(2)` returns them.
    pub fn listxattr(&self, rel: &str) -> io::Result<Vec<u8>> {
        let fd = match self.open_for_xattr(rel) {
            Err(e) if e.raw_os_error() == Some(libc::ENODATA) => return Ok(Vec::new()),
            other => other?,
        };
        let mut buf = Vec::with_capacity(1024);
        loop {
            match rfs::flistxattr(&fd, spare(&mut buf)) {
                Ok(n) => {
                    buf.truncate(n);
                    return Ok(buf);
                }
                Err(rustix::io::Errno::RANGE) if buf.capacity() < 1 << 20 => {
                    buf.reserve(buf.capacity() * 4);
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Changes to the host tree, used only by `read_write_direct` views. Each
/// resolves the parent directory beneath the root (no symlinks), then acts
/// on one name inside it.
impl HostRoot {
    fn parent_of<'a>(&self, rel: &'a str) -> io::Result<(OwnedFd, &'a str)> {
        let (parent, name) = rel.rsplit_once('/').unwrap_or(("", rel));
        Ok((self.open_dir(parent)?, name))
    }

    pub fn create_file(&self, rel: &str, mode: u32) -> io::Result<File> {
        let (dir, name) = self.parent_of(rel)?;
        let fd = rfs::openat(
            &dir,
            name,
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            RMode::from_raw_mode(mode & 0o7777),
        )?;
        Ok(File::from(fd))
    }

    pub fn open_file_rw(&self, rel: &str) -> io::Result<File> {
        let fd = self.open_at(rel, OFlags::RDWR | OFlags::NONBLOCK)?;
        let st = rfs::fstat(&fd)?;
        if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(File::from(fd))
    }

    pub fn mkdir(&self, rel: &str, mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent_of(rel)?;
        Ok(rfs::mkdirat(
            &dir,
            name,
            RMode::from_raw_mode(mode & 0o7777),
        )?)
    }

    pub fn symlink(&self, rel: &str, target: &[u8]) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let (dir, name) = self.parent_of(rel)?;
        Ok(rfs::symlinkat(
            std::ffi::OsStr::from_bytes(target),
            &dir,
            name,
        )?)
    }

    pub fn remove(&self, rel: &str, dir_entry: bool) -> io::Result<()> {
        let (dir, name) = self.parent_of(rel)?;
        let flags = if dir_entry {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        Ok(rfs::unlinkat(&dir, name, flags)?)
    }

    pub fn rename(&self, from: &str, to: &str, flags: u32) -> io::Result<()> {
        let (fdir, fname) = self.parent_of(from)?;
        let (tdir, tname) = self.parent_of(to)?;
        let flags = rfs::RenameFlags::from_bits_retain(flags);
        Ok(rfs::renameat_with(&fdir, fname, &tdir, tname, flags)?)
    }

    pub fn chmod(&self, rel: &str, mode: u32) -> io::Result<()> {
        let (dir, name) = self.parent_of(rel)?;
        Ok(rfs::chmodat(
            &dir,
            name,
            RMode::from_raw_mode(mode & 0o7777),
            AtFlags::empty(),
        )?)
    }

    pub fn chown(&self, rel: &str, uid: Option<u32>, gid: Option<u32>) -> io::Result<()> {
        let (dir, name) = self.parent_of(rel)?;
        Ok(rfs::chownat(
            &dir,
            name,
            uid.map(rfs::Uid::from_raw),
            gid.map(rfs::Gid::from_raw),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    pub fn utimens(&self, rel: &str, ts: &rfs::Timestamps) -> io::Result<()> {
        let (dir, name) = self.parent_of(rel)?;
        Ok(rfs::utimensat(&dir, name, ts, AtFlags::SYMLINK_NOFOLLOW)?)
    }

    pub fn setxattr(&self, rel: &str, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
        let fd = self.open_for_xattr(rel)?;
        let flags = rfs::XattrFlags::from_bits_retain(flags as _);
        Ok(rfs::fsetxattr(&fd, name, value, flags)?)
    }

    pub fn removexattr(&self, rel: &str, name: &str) -> io::Result<()> {
        let fd = self.open_for_xattr(rel)?;
        Ok(rfs::fremovexattr(&fd, name)?)
    }
}

/// `lstat` of one name in an open directory (a single component, so no
/// path traversal is involved).
pub fn stat_child(dir: impl AsFd, name: &str) -> io::Result<Stat> {
    Ok(rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The whole capacity of `buf` as a zeroed slice to read into; the caller
/// truncates to the length the call returns.
fn spare(buf: &mut Vec<u8>) -> &mut [u8] {
    let cap = buf.capacity();
    buf.resize(cap, 0);
    &mut buf[..]
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_never_lead_out() {
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("d")).unwrap();
        std::fs::write(root.path().join("d/f"), "hello").unwrap();
        symlink(outside.path(), root.path().join("out")).unwrap();
        symlink("../d/f", root.path().join("d/rel")).unwrap();
        symlink(outside.path().join("secret"), root.path().join("abs")).unwrap();

        let host = HostRoot::open(root.path()).unwrap();
        let mut s = String::new();
        use std::io::Read;
        host.open_file("d/f")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "hello");
        // A symlinked directory in the middle of a path is refused.
        assert!(host.open_file("out/secret").is_err());
        assert!(host.lstat("out/secret").is_err());
        // Symlinks themselves are seen as links, never followed.
        assert!(host.open_file("abs").is_err());
        assert!(host.open_file("d/rel").is_err());
        assert_eq!(host.readlink("d/rel").unwrap(), b"../d/f");
        let st = host.lstat("abs").unwrap();
        assert_eq!(
            rfs::FileType::from_raw_mode(st.st_mode),
            rfs::FileType::Symlink
        );
        // Climbing out is refused too.
        assert!(host.open_file("../x").is_err());
        // Directories are not files.
        assert!(host.open_file("d").is_err());
    }
}
