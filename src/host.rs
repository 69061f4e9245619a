//! The host tree, reached only beneath its root. Every path is resolved with
//! `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)` from a directory fd taken
//! once, so a symlink anywhere in a path (planted before or during a session)
//! makes the access fail instead of leaving the root.
//!
//! A path longer than one syscall takes (`PATH_MAX - 1` bytes) is walked in
//! chunks of whole components, each below that limit: every chunk but the
//! last is opened `O_PATH | O_DIRECTORY` with the same resolve flags from the
//! previous chunk's directory fd, so a symlink anywhere still fails the
//! access, and no syscall ever sees more than one chunk. Shorter paths (all
//! but a few) take the single `openat2` as before.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode as RMode, OFlags, ResolveFlags, Stat};

/// An open handle on the root of a host tree.
pub struct HostRoot {
    dir: OwnedFd,
    path: PathBuf,
    /// Files with more than one hard link answer ENOENT to `open_file*`.
    single_link: bool,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// The longest path one `openat2` accepts: `PATH_MAX` counts the NUL.
const MAX_STEP: usize = libc::PATH_MAX as usize - 1;

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
            single_link: false,
        })
    }

    /// A second handle on the same root (same directory, same rules).
    pub fn try_clone(&self) -> io::Result<HostRoot> {
        Ok(HostRoot {
            dir: self.dir.try_clone()?,
            path: self.path.clone(),
            single_link: self.single_link,
        })
    }

    /// From now on, `open_file` and `open_file_rw` answer ENOENT for a
    /// file with more than one hard link: views of grants whose policy
    /// refuses hard links (`allow_hardlinks = false`) never serve one, even
    /// if the host replaces a granted file by a link after the grant.
    pub fn refuse_hardlinks(&mut self) {
        self.single_link = true;
    }

    /// ENOENT for what `open_file*` never opens: anything but a regular
    /// file, and a hard-linked one when refused.
    fn check_file(&self, fd: &OwnedFd) -> io::Result<()> {
        let st = rfs::fstat(fd)?;
        if rfs::FileType::from_raw_mode(st.st_mode) != rfs::FileType::RegularFile
            || (self.single_link && st.st_nlink > 1)
        {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `rel` beneath the root with `flags` (`O_NOFOLLOW` and
    /// `O_CLOEXEC` are always added). With `O_PATH` the final component may
    /// be a symlink, and the fd then refers to the link itself.
    pub fn open_at(&self, rel: &str, flags: OFlags) -> io::Result<OwnedFd> {
        let flags = flags | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        if rel.len() <= MAX_STEP {
            // The fast path: one syscall from the root.
            return Ok(rfs::openat2(
                &self.dir,
                at(rel),
                flags,
                RMode::empty(),
                resolve(),
            )?);
        }
        let (dir, last) = self.walk_long(rel)?;
        Ok(rfs::openat2(&dir, last, flags, RMode::empty(), resolve())?)
    }

    /// Opens the directories of a path longer than `MAX_STEP` chunk by
    /// chunk, each chunk as many whole components as fit in `MAX_STEP`
    /// bytes, and returns the last directory reached with the rest of the
    /// path (at most `MAX_STEP` bytes, holding the final component).
    ///
    /// Each chunk is resolved beneath the previous directory with the same
    /// flags as a short path, so a symlink anywhere in the path fails the
    /// access, and `..` can never climb above the chunk it starts.
    fn walk_long<'a>(&self, rel: &'a str) -> io::Result<(OwnedFd, &'a str)> {
        let mut dir: Option<OwnedFd> = None;
        let mut rest = rel;
        while rest.len() > MAX_STEP {
            // The last `/` at most MAX_STEP bytes in: the chunk before it
            // fits one syscall. `/` is ASCII, so the split is on a char
            // boundary.
            let cut = rest.as_bytes()[..=MAX_STEP]
                .iter()
                .rposition(|b| *b == b'/')
                // One component longer than a whole syscall: no name is.
                .ok_or_else(|| io::Error::from_raw_os_error(libc::ENAMETOOLONG))?;
            let (chunk, tail) = (&rest[..cut], &rest[cut + 1..]);
            if chunk.is_empty() {
                // A leading or doubled `/`: not a path beneath the root.
                return Err(io::Error::from_raw_os_error(libc::ENOENT));
            }
            let from: BorrowedFd<'_> = match &dir {
                Some(d) => d.as_fd(),
                None => self.dir.as_fd(),
            };
            // No O_NOFOLLOW: RESOLVE_NO_SYMLINKS then refuses a symlink as
            // the chunk's last component with ELOOP, as it does one in the
            // middle of a path (with O_NOFOLLOW it would open the link, and
            // O_DIRECTORY would answer ENOTDIR).
            let next = rfs::openat2(
                from,
                chunk,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                RMode::empty(),
                resolve(),
            )?;
            dir = Some(next);
            rest = tail;
        }
        match dir {
            Some(d) => Ok((d, rest)),
            // Not reached: the caller only walks paths longer than MAX_STEP.
            None => Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG)),
        }
    }

    /// Opens a regular file for reading.
    pub fn open_file(&self, rel: &str) -> io::Result<File> {
        let fd = self.open_at(rel, OFlags::RDONLY | OFlags::NONBLOCK)?;
        self.check_file(&fd)?;
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
        self.check_file(&fd)?;
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

    /// `linkat(2)` of `from` as `to`, never following a symlink: a hard
    /// link (a symlink at `from` is linked itself, never its target).
    pub fn link(&self, from: &str, to: &str) -> io::Result<()> {
        let (fdir, fname) = self.parent_of(from)?;
        let (tdir, tname) = self.parent_of(to)?;
        Ok(rfs::linkat(&fdir, fname, &tdir, tname, AtFlags::empty())?)
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

    /// Opens (creating when asked) directory `comps` one component at a
    /// time from `root`, so no syscall here sees a long path.
    fn chain(root: &Path, comps: &[String], create: bool) -> OwnedFd {
        let mut fd = rfs::open(root, OFlags::PATH | OFlags::DIRECTORY, RMode::empty()).unwrap();
        for c in comps {
            if create {
                match rfs::mkdirat(&fd, c.as_str(), RMode::from_raw_mode(0o755)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => panic!("mkdirat {c}: {e}"),
                }
            }
            fd = rfs::openat(
                &fd,
                c.as_str(),
                OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
                RMode::empty(),
            )
            .unwrap();
        }
        fd
    }

    fn write_at(dir: &OwnedFd, name: &str, data: &[u8]) {
        use std::io::Write;
        let fd = rfs::openat(
            dir,
            name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW,
            RMode::from_raw_mode(0o644),
        )
        .unwrap();
        File::from(fd).write_all(data).unwrap();
    }

    fn read_all(mut f: File) -> Vec<u8> {
        use std::io::Read;
        let mut v = Vec::new();
        f.read_to_end(&mut v).unwrap();
        v
    }

    fn errno_of<T>(r: io::Result<T>) -> i32 {
        match r {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.raw_os_error().unwrap_or(0),
        }
    }

    /// 24 directories of 200 bytes: 4824 bytes of directories, so every
    /// path below crosses at least one chunk boundary.
    fn long_comps() -> Vec<String> {
        (0..24)
            .map(|i| format!("{i:02}{}", "d".repeat(198)))
            .collect()
    }

    #[test]
    fn paths_longer_than_path_max_are_walked_in_chunks() {
        let root = tempfile::tempdir().unwrap();
        let comps = long_comps();
        let deep = chain(root.path(), &comps, true);
        write_at(&deep, "f.txt", b"deep content");
        rfs::symlinkat("f.txt", &deep, "link").unwrap();
        let dir = comps.join("/");
        assert!(dir.len() > libc::PATH_MAX as usize);
        let file = format!("{dir}/f.txt");
        let host = HostRoot::open(root.path()).unwrap();

        // Reads.
        let st = host.lstat(&file).unwrap();
        assert_eq!(st.st_size, 12);
        assert_eq!(read_all(host.open_file(&file).unwrap()), b"deep content");
        assert_eq!(host.readlink(&format!("{dir}/link")).unwrap(), b"f.txt");
        assert!(host.open_file(&format!("{dir}/link")).is_err());
        let d = host.open_dir(&dir).unwrap();
        assert_eq!(stat_child(&d, "f.txt").unwrap().st_size, 12);
        assert_eq!(errno_of(host.lstat(&format!("{dir}/nope"))), libc::ENOENT);

        // Writes: each resolves the (long) parent, then acts on one name.
        let sub = format!("{dir}/sub");
        host.mkdir(&sub, 0o750).unwrap();
        let mut f = host.create_file(&format!("{sub}/new"), 0o600).unwrap();
        use std::io::Write;
        f.write_all(b"new").unwrap();
        drop(f);
        host.rename(&format!("{sub}/new"), &format!("{dir}/moved"), 0)
            .unwrap();
        assert_eq!(
            read_all(host.open_file(&format!("{dir}/moved")).unwrap()),
            b"new"
        );
        // Across a short and a long path.
        host.rename(&format!("{dir}/moved"), "top", 0).unwrap();
        assert_eq!(read_all(host.open_file("top").unwrap()), b"new");
        host.rename("top", &format!("{dir}/back"), 0).unwrap();
        host.chmod(&format!("{dir}/back"), 0o640).unwrap();
        assert_eq!(
            host.lstat(&format!("{dir}/back")).unwrap().st_mode & 0o777,
            0o640
        );
        host.symlink(&format!("{sub}/l"), b"../back").unwrap();
        assert_eq!(host.readlink(&format!("{sub}/l")).unwrap(), b"../back");
        host.remove(&format!("{sub}/l"), false).unwrap();
        host.remove(&sub, true).unwrap();
        host.remove(&format!("{dir}/back"), false).unwrap();
        assert_eq!(errno_of(host.lstat(&sub)), libc::ENOENT);
        // The entries really went where the path says.
        assert_eq!(
            errno_of(
                rfs::statat(&deep, "back", AtFlags::SYMLINK_NOFOLLOW).map_err(io::Error::from)
            ),
            libc::ENOENT
        );
        assert!(rfs::statat(&deep, "f.txt", AtFlags::SYMLINK_NOFOLLOW).is_ok());
    }

    #[test]
    fn many_short_components_and_the_exact_boundary() {
        let root = tempfile::tempdir().unwrap();
        // 2100 levels of "d": 4199 bytes of directories.
        let comps: Vec<String> = vec!["d".to_string(); 2100];
        let deep = chain(root.path(), &comps, true);
        write_at(&deep, "f", b"x");
        let host = HostRoot::open(root.path()).unwrap();
        let file = format!("{}/f", comps.join("/"));
        assert!(file.len() > MAX_STEP);
        assert_eq!(read_all(host.open_file(&file).unwrap()), b"x");

        // Paths of exactly MAX_STEP (one syscall) and MAX_STEP + 1 bytes
        // (two), both ending in a file.
        let short = chain(root.path(), &comps[..2046], false);
        let base = vec!["d"; 2046].join("/"); // 4091 bytes
        write_at(&short, "abc", b"4095");
        write_at(&short, "abcd", b"4096");
        let at_limit = format!("{base}/abc");
        let past = format!("{base}/abcd");
        assert_eq!((at_limit.len(), past.len()), (MAX_STEP, MAX_STEP + 1));
        assert_eq!(read_all(host.open_file(&at_limit).unwrap()), b"4095");
        assert_eq!(read_all(host.open_file(&past).unwrap()), b"4096");
    }

    #[test]
    fn a_symlink_anywhere_in_a_long_path_is_refused() {
        let outside = tempfile::tempdir().unwrap();
        let root = tempfile::tempdir().unwrap();
        let comps = long_comps();
        let deep = chain(root.path(), &comps, true);
        write_at(&deep, "f.txt", b"inside");
        let host = HostRoot::open(root.path()).unwrap();
        let dir = comps.join("/");
        let file = format!("{dir}/f.txt");
        assert!(host.open_file(&file).is_ok());

        // Where chunks end: the first chunk holds the first 20 components
        // (20 * 201 - 1 = 4019 bytes), the second starts at component 20.
        let first_chunk_end = 19;
        // Replace components by symlinks, one at a time: inside the first
        // chunk, at its end, at the start of the next one and deep inside
        // it; each to a copy of the rest of the path outside the root and,
        // relatively, to its own renamed directory inside.
        for i in [0, 5, first_chunk_end, first_chunk_end + 1, 22, 23] {
            let out_dir = chain(outside.path(), &comps[i..], true);
            if rfs::statat(&out_dir, "f.txt", AtFlags::empty()).is_err() {
                write_at(&out_dir, "f.txt", b"outside");
            }
            let parent = chain(root.path(), &comps[..i], false);
            let name = comps[i].as_str();
            rfs::renameat(&parent, name, &parent, "real").unwrap();
            let abs = outside.path().join(name);
            for target in [abs.to_str().unwrap(), "real"] {
                rfs::symlinkat(target, &parent, name).unwrap();
                assert_eq!(errno_of(host.open_file(&file)), libc::ELOOP, "link at {i}");
                assert_eq!(errno_of(host.lstat(&file)), libc::ELOOP, "link at {i}");
                assert_eq!(errno_of(host.readlink(&file)), libc::ELOOP, "link at {i}");
                // (Opening the link itself as a directory: ENOTDIR, as today.)
                assert!(host.open_dir(&dir).is_err(), "link at {i}");
                assert!(host.create_file(&format!("{dir}/x"), 0o644).is_err());
                assert!(host.mkdir(&format!("{dir}/x"), 0o755).is_err());
                assert!(host.remove(&file, false).is_err());
                assert!(host.rename(&file, "stolen", 0).is_err());
                rfs::unlinkat(&parent, name, AtFlags::empty()).unwrap();
            }
            rfs::renameat(&parent, "real", &parent, name).unwrap();
            assert_eq!(read_all(host.open_file(&file).unwrap()), b"inside");
            // Nothing was written or moved outside.
            assert!(rfs::statat(&out_dir, "x", AtFlags::SYMLINK_NOFOLLOW).is_err());
            assert!(rfs::statat(&out_dir, "f.txt", AtFlags::SYMLINK_NOFOLLOW).is_ok());
        }
        // The final component, a symlink, is seen as the link itself.
        rfs::renameat(&deep, "f.txt", &deep, "g.txt").unwrap();
        rfs::symlinkat("g.txt", &deep, "f.txt").unwrap();
        assert_eq!(host.readlink(&file).unwrap(), b"g.txt");
        assert!(host.open_file(&file).is_err());
    }

    #[test]
    fn long_paths_never_climb_out() {
        let root = tempfile::tempdir().unwrap();
        let comps = long_comps();
        chain(root.path(), &comps, true);
        let host = HostRoot::open(root.path()).unwrap();
        let dir = comps.join("/");
        // `..` past the chunk it starts, and past the root.
        let up = format!("{dir}/{}", vec![".."; 30].join("/"));
        assert!(up.len() > MAX_STEP);
        assert!(host.lstat(&up).is_err());
        assert!(host.lstat(&format!("{up}/etc/passwd")).is_err());
        // An absolute path.
        assert!(host.lstat(&format!("/{dir}")).is_err());
        // One component longer than a whole syscall.
        let huge = format!("{}/{}", comps[0], "x".repeat(MAX_STEP + 10));
        assert_eq!(errno_of(host.lstat(&huge)), libc::ENAMETOOLONG);
        // A multi-byte character straddling the cut point is not split.
        let utf = format!("{}/{}", "é".repeat(2100), "f");
        assert_eq!(errno_of(host.lstat(&utf)), libc::ENAMETOOLONG);
        let utf = format!("ab/{}", vec!["é".repeat(100); 21].join("/"));
        assert!(utf.len() > MAX_STEP && !utf.is_char_boundary(MAX_STEP + 1));
        assert_eq!(errno_of(host.lstat(&utf)), libc::ENOENT);
    }
}
