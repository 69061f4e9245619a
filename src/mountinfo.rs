//! Reading `/proc/self/mountinfo`, and the checks a mountpoint must pass.

use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// The source every wopfs mount shows in mountinfo: `wopfs:GRANT`. (The
/// type is `fuse`, or `fuse.wopfs` when mounted through fusermount3, or
/// `overlay` for the kernel engine.)
pub const SOURCE_PREFIX: &str = "wopfs:";

#[derive(Clone, Debug)]
pub struct MountEntry {
    pub mountpoint: PathBuf,
    pub fstype: String,
    pub source: String,
}

impl MountEntry {
    pub fn is_wopfs(&self) -> bool {
        (self.fstype.starts_with("fuse") || self.fstype == "overlay")
            && self.source.starts_with(SOURCE_PREFIX)
    }

    /// The grant a wopfs mount serves.
    pub fn grant_id(&self) -> Option<&str> {
        self.source
            .strip_prefix(SOURCE_PREFIX)
            .filter(|_| self.is_wopfs())
    }
}

/// Undoes mountinfo's octal escapes (`\040` is a space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text.
pub fn parse(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (left, right) = line.split_once(" - ")?;
            let mountpoint = left.split(' ').nth(4)?;
            let mut r = right.split(' ');
            let fstype = r.next()?;
            let source = r.next().unwrap_or("");
            Some(MountEntry {
                mountpoint: PathBuf::from(unescape(mountpoint)),
                fstype: fstype.to_string(),
                source: unescape(source),
            })
        })
        .collect()
}

pub fn mounts() -> Vec<MountEntry> {
    std::fs::read_to_string("/proc/self/mountinfo")
        .map(|t| parse(&t))
        .unwrap_or_default()
}

/// The topmost mount at `path`, if `path` is a mount point.
pub fn mount_at(path: &Path) -> Option<MountEntry> {
    mounts().into_iter().rev().find(|m| m.mountpoint == path)
}

/// Whether `inner` is `outer` or lies beneath it.
fn within(inner: &Path, outer: &Path) -> bool {
    inner.starts_with(outer)
}

/// The absolute path of a mountpoint (a relative one is taken from the
/// current directory), resolved through its parent so that a mount on it
/// whose root cannot be stat-ed (a dead FUSE mount answering ENOTCONN, an
/// expired view answering EACCES) still resolves: a path mountinfo lists
/// is never stat-ed through the mount.
pub fn resolve(mp: &Path) -> Result<PathBuf> {
    let missing = || Error::invalid(format!("mountpoint {} does not exist", mp.display()));
    if mp.as_os_str().is_empty() {
        return Err(missing());
    }
    let mut path = std::path::absolute(mp).map_err(|_| missing())?;
    // Symlinks in the last component are followed here, one at a time, so
    // the mount they lead to is not stat-ed either.
    for _ in 0..40 {
        // `std::path::absolute` keeps `..`: canonicalizing the parent
        // resolves it, except in the last component.
        if path.file_name().is_none() {
            return std::fs::canonicalize(&path).map_err(|_| missing());
        }
        let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
            return Ok(path); // "/"
        };
        let parent = std::fs::canonicalize(parent).map_err(|_| missing())?;
        let canon = parent.join(name);
        if mount_at(&canon).is_some() {
            return Ok(canon);
        }
        match std::fs::symlink_metadata(&canon) {
            Ok(m) if m.file_type().is_symlink() => {
                let target = std::fs::read_link(&canon).map_err(|_| missing())?;
                path = parent.join(target); // an absolute target replaces it
            }
            Ok(_) => return Ok(canon),
            Err(e) if is_disconnected(&e) => return Ok(canon),
            Err(_) => return Err(missing()),
        }
    }
    Err(Error::invalid(format!(
        "mountpoint {}: too many levels of symbolic links",
        mp.display()
    )))
}

/// Whether an error is what a FUSE mount whose daemon died answers: ENOTCONN
/// once its connection is aborted, and ECONNABORTED for a request that was
/// waiting for the daemon when the connection was aborted (the daemon had
/// been killed, but a thread of it still held /dev/fuse open).
fn is_disconnected(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOTCONN) | Some(libc::ECONNABORTED)
    )
}

/// Whether a FUSE mount at `mp` lost its daemon (requests answer ENOTCONN).
pub fn is_dead(mp: &Path) -> bool {
    std::fs::symlink_metadata(mp).is_err_and(|e| is_disconnected(&e))
}

/// Checks a mountpoint and returns its canonical path. It must exist, be a
/// directory, not be mounted on already, and neither lie inside nor contain
/// the host tree or the state dir (a view must never hide or loop over them).
pub fn check_mountpoint(mp: &Path, host_root: &Path, state_dir: &Path) -> Result<PathBuf> {
    let canon = resolve(mp)?;
    if let Some(m) = mount_at(&canon).filter(|m| m.is_wopfs() && is_dead(&canon)) {
        return Err(Error::invalid(format!(
            "mountpoint {} holds a wopfs mount ({}) whose daemon has died; run `wopfs umount {}` and mount again",
            mp.display(),
            m.source,
            mp.display()
        )));
    }
    if !canon.is_dir() {
        return Err(Error::invalid(format!(
            "mountpoint {} is not a directory",
            mp.display()
        )));
    }
    if let Some(m) = mount_at(&canon) {
        return Err(Error::invalid(format!(
            "mountpoint {} is busy: {} ({}) is already mounted there",
            mp.display(),
            m.source,
            m.fstype
        )));
    }
    for (what, path) in [("host tree", host_root), ("state dir", state_dir)] {
        if within(&canon, path) {
            return Err(Error::invalid(format!(
                "mountpoint {} is inside the {what} {}; choose a directory outside it",
                mp.display(),
                path.display()
            )));
        }
        if within(path, &canon) {
            return Err(Error::invalid(format!(
                "mountpoint {} contains the {what} {}; choose a directory outside it",
                mp.display(),
                path.display()
            )));
        }
    }
    // Mounting would hide what the directory holds (and a view over it
    // would look like it).
    let first = std::fs::read_dir(&canon)
        .map_err(|e| Error::io(format!("reading mountpoint {}", mp.display()), e))?
        .next();
    if let Some(entry) = first {
        let name = entry
            .map(|e| format!(" (it holds {:?})", e.file_name()))
            .unwrap_or_default();
        return Err(Error::invalid(format!(
            "mountpoint {} is not empty{name}; mount on an empty directory",
            mp.display()
        )));
    }
    Ok(canon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_mountinfo_with_escapes() {
        let text =
            "36 35 98:0 / /mnt/a\\040b rw,noatime master:1 - fuse.wopfs wopfs:g-1 rw,user_id=0\n\
                    22 1 8:1 / / rw - ext4 /dev/vda rw\n";
        let m = parse(text);
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].mountpoint, PathBuf::from("/mnt/a b"));
        assert!(m[0].is_wopfs());
        assert!(!m[1].is_wopfs());
        assert_eq!(m[0].source, "wopfs:g-1");
        assert_eq!(m[1].fstype, "ext4");
    }

    #[test]
    fn mountpoint_errors_name_the_problem() {
        let base = tempfile::tempdir().unwrap();
        let b = base.path().canonicalize().unwrap();
        let (h, s) = (b.join("host"), b.join("state"));
        std::fs::create_dir(&h).unwrap();
        std::fs::create_dir(&s).unwrap();
        let mp = tempfile::tempdir().unwrap();
        assert!(check_mountpoint(mp.path(), &h, &s).is_ok());

        let e = check_mountpoint(&mp.path().join("nope"), &h, &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("does not exist"), "{e}");
        std::fs::write(mp.path().join("f"), "").unwrap();
        let e = check_mountpoint(&mp.path().join("f"), &h, &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a directory"), "{e}");
        let e = check_mountpoint(mp.path(), &h, &s).unwrap_err().to_string();
        assert!(e.contains("is not empty") && e.contains("\"f\""), "{e}");
        std::fs::create_dir(h.join("sub")).unwrap();
        let e = check_mountpoint(&h.join("sub"), &h, &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside the host tree"), "{e}");
        let e = check_mountpoint(&s, &h, &s).unwrap_err().to_string();
        assert!(e.contains("inside the state dir"), "{e}");
        let e = check_mountpoint(&b, &h, &s).unwrap_err().to_string();
        assert!(e.contains("contains the host tree"), "{e}");
        let e = check_mountpoint(Path::new("/proc"), &h, &s)
            .unwrap_err()
            .to_string();
        assert!(e.contains("busy"), "{e}");
    }
}
