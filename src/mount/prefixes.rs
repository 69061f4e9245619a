//! Write prefixes as mount structure, for the kernel engine. overlayfs
//! cannot ask wopfs whether a change is in scope, so with `--write-prefix`
//! the read-only lower view itself is at the mountpoint (its file system is
//! read-only: every change outside answers `EROFS`, whatever a container
//! runtime remounts) and each prefix directory gets an overlay of its own,
//! whose upper is that directory's place in the one upper layer (so the
//! layer still reads as one patch set). A rename or hard link across a
//! prefix's edge answers `EXDEV`.
//!
//! A prefix that is no directory in the view yet (the agent is to make it)
//! cannot be a mountpoint: its deepest existing ancestor gets the overlay
//! instead, and what lands there outside the prefix is refused by the
//! commit and marked by `wopfs diff` (the rule of `scope::Scope`).

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::error::{Error, Result};
use crate::overlay::engine;

/// Opens `rel` beneath `root` as a directory (`O_PATH`), never following a
/// symlink nor leaving the mount: an upper layer left by an earlier session
/// may hold a symlink where the host has a directory.
pub fn open_dir(root: BorrowedFd, rel: &str) -> rustix::io::Result<OwnedFd> {
    let rel = if rel.is_empty() { "." } else { rel };
    rustix::fs::openat2(
        root,
        rel,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_XDEV,
    )
}

/// The directories to give an overlay, looked up in the merged view at
/// `root`: for each prefix, itself or its deepest existing ancestor (""
/// is the root); none beneath another.
pub fn anchors(root: BorrowedFd, prefixes: &[String]) -> Vec<String> {
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

/// The work dir of the overlay over `anchor` (overlays never share one).
pub fn work_dir(session_dir: &Path, anchor: &str) -> PathBuf {
    let h = blake3::hash(anchor.as_bytes()).to_hex();
    engine::layer_dir(session_dir)
        .join("work-prefix")
        .join(&h.as_str()[..16])
}

/// Makes `anchor`'s place in the upper layer (and the work dir of its
/// overlay): directories missing in the upper are made with the owner,
/// mode and times the lower shows, as overlayfs' own copy-up would, so
/// the merged view does not change.
pub fn prepare_upper(session_dir: &Path, lower: BorrowedFd, anchor: &str) -> Result<()> {
    let upper_root = engine::upper_dir(session_dir);
    let root = rustix::fs::open(
        &upper_root,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {}", upper_root.display()), e.into()))?;
    let mut at = String::new();
    for part in anchor.split('/').filter(|p| !p.is_empty()) {
        if !at.is_empty() {
            at.push('/');
        }
        at.push_str(part);
        if open_dir(root.as_fd(), &at).is_ok() {
            continue;
        }
        let failed = |what: &str, e: rustix::io::Errno| {
            Error::io(
                format!("{what} /{at} in the upper layer for a write prefix"),
                e.into(),
            )
        };
        let st = rustix::fs::statat(lower, at.as_str(), rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| failed("reading", e))?;
        let parent = match at.rsplit_once('/') {
            Some((p, _)) => open_dir(root.as_fd(), p).map_err(|e| failed("opening", e))?,
            None => open_dir(root.as_fd(), "").map_err(|e| failed("opening", e))?,
        };
        // A whiteout or a file there is a deleted or replaced directory:
        // then the merged view has no directory here, and no anchor is here.
        rustix::fs::mkdirat(&parent, part, Mode::from_raw_mode(0o700))
            .map_err(|e| failed("making", e))?;
        let dir = rustix::fs::openat(
            &parent,
            part,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| failed("opening", e))?;
        rustix::fs::fchown(
            &dir,
            Some(rustix::fs::Uid::from_raw(st.st_uid)),
            Some(rustix::fs::Gid::from_raw(st.st_gid)),
        )
        .map_err(|e| failed("setting the owner of", e))?;
        rustix::fs::fchmod(&dir, Mode::from_raw_mode(st.st_mode & 0o7777))
            .map_err(|e| failed("setting the mode of", e))?;
        let ts = |s: i64, ns: i64| rustix::fs::Timespec {
            tv_sec: s,
            tv_nsec: ns as _,
        };
        let times = rustix::fs::Timestamps {
            last_access: ts(st.st_atime, st.st_atime_nsec as i64),
            last_modification: ts(st.st_mtime, st.st_mtime_nsec as i64),
        };
        rustix::fs::futimens(&dir, &times).map_err(|e| failed("setting the times of", e))?;
    }
    let work = work_dir(session_dir, anchor);
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&work)
        .map_err(|e| Error::io(format!("creating {}", work.display()), e))?;
    Ok(())
}
