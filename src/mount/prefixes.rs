//! Write prefixes as mount structure, for the kernel engine. overlayfs
//! cannot ask wopfs whether a change is in scope, so with `--write-prefix`
//! the overlay is mounted read-only (every change outside answers `EROFS`
//! at once) and each prefix directory gets a writable bind of the same
//! overlay mounted over it: one upper layer, read as one patch set. A
//! rename or hard link across the boundary answers `EXDEV`.
//!
//! A prefix that is no directory in the view yet (the agent is to make it)
//! cannot be a mountpoint: its deepest existing ancestor is made writable
//! instead, and what lands there outside the prefix is refused by the
//! commit and marked by `wopfs diff` (the rule of `scope::Scope`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::mount::{move_mount, open_tree, MoveMountFlags, OpenTreeFlags};

use crate::error::{Error, Result};
use crate::grant::Grant;

/// The grant's write prefixes as view paths (no slashes at the ends);
/// empty: the whole view is writable.
pub fn prefixes(grant: &Grant) -> Vec<String> {
    grant
        .write_prefixes
        .iter()
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

/// Opens `rel` beneath `root` as a directory (`O_PATH`), never following a
/// symlink nor leaving the mount: an upper layer left by an earlier session
/// may hold a symlink where the host has a directory.
fn open_dir(root: BorrowedFd, rel: &str) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )
}

/// The directories to make writable: for each prefix, itself or its
/// deepest existing ancestor in the view ("" is the root); none beneath
/// another.
fn anchors(root: BorrowedFd, prefixes: &[String]) -> Vec<String> {
    let mut found: Vec<String> = Vec::new();
    for p in prefixes {
        let mut deepest = String::new();
        let mut at = String::new();
        for part in p.split('/') {
            if !at.is_empty() {
                at.push('/');
            }
            at.push_str(part);
            if open_dir(root, &at).is_err() {
                break;
            }
            deepest.clone_from(&at);
        }
        found.push(deepest);
    }
    found.sort();
    found.dedup();
    let under = |a: &str, b: &str| b.is_empty() || a.starts_with(&format!("{b}/"));
    let all = found.clone();
    found.retain(|a| !all.iter().any(|b| b != a && under(a, b)));
    found
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;

/// Clears the read-only flag of the mount `fd` refers to (mount_setattr(2),
/// which rustix does not wrap).
fn make_writable(fd: BorrowedFd) -> rustix::io::Result<()> {
    use std::os::fd::AsRawFd;
    let attr = MountAttr {
        attr_set: 0,
        attr_clr: MOUNT_ATTR_RDONLY,
        propagation: 0,
        userns_fd: 0,
    };
    // SAFETY: a valid fd, a NUL-terminated empty path, a `mount_attr` of
    // the size passed; the kernel only reads it.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(
            rustix::io::Errno::from_io_error(&std::io::Error::last_os_error())
                .unwrap_or(rustix::io::Errno::IO),
        )
    }
}

/// With the read-only overlay at `mp`, mounts a writable bind of it over
/// each prefix directory (see the module comment). Returns the writable
/// directories (view paths; "" is the whole view).
pub fn open_prefixes(mp: &Path, prefixes: &[String]) -> Result<Vec<String>> {
    let failed = |what: String, e: rustix::io::Errno| {
        Error::io(
            format!("making {what} writable in {}", mp.display()),
            e.into(),
        )
    };
    let root = rustix::fs::open(
        mp,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| failed("the write prefixes".into(), e))?;
    let anchors = anchors(root.as_fd(), prefixes);
    for a in &anchors {
        if a.is_empty() {
            tracing::warn!(
                "no write prefix is a directory in the view yet: the whole view is writable, and the commit refuses what lands outside the prefixes"
            );
        } else if !prefixes.contains(a) {
            tracing::info!(dir = %a, "a write prefix does not exist yet: its nearest directory is writable, and the commit refuses what lands outside the prefix");
        }
        let dir = open_dir(root.as_fd(), a).map_err(|e| failed(format!("/{a}"), e))?;
        let clone = open_tree(
            dir.as_fd(),
            "",
            OpenTreeFlags::OPEN_TREE_CLONE
                | OpenTreeFlags::OPEN_TREE_CLOEXEC
                | OpenTreeFlags::AT_EMPTY_PATH,
        )
        .map_err(|e| failed(format!("/{a} (open_tree)"), e))?;
        make_writable(clone.as_fd()).map_err(|e| failed(format!("/{a} (mount_setattr)"), e))?;
        move_mount(
            clone.as_fd(),
            "",
            dir.as_fd(),
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(|e| failed(format!("/{a} (move_mount)"), e))?;
    }
    Ok(anchors)
}
