//! Applying a checked patch set to the host tree, atomically per set, with
//! the conflict check held up to the moment each path is replaced.
//!
//! 0. Before the controller logs the commit's `start`, it writes the
//!    journal with nothing planned (`Journal::begin`), so a commit stopped
//!    at any later instant is found and closed in the audit log.
//! 1. The commit journal (`STATE/sessions/g-…/commit.json`) is written with
//!    every step planned: temp names beside each target, backup names for
//!    deleted files, the directories made and removed, the times of every
//!    directory touched.
//! 2. Deleted files move to their backup names and are hashed there: what
//!    came out must be exactly what the agent saw, or it goes back and the
//!    set is refused. Directories that become files are removed (they must
//!    be empty by then), new directories made.
//! 3. New contents go to temp files: the replaced file's owner, group and
//!    extended attributes (ACLs included) copied, permission bits from the
//!    patch. A hard link's temp is another name (`linkat`) of its file's
//!    temp, or of its file on the host when that is already as the set
//!    wants it (checked by hash once linked), so every name of a file is
//!    swapped in as the one inode. The journal records each temp's inode;
//!    one `syncfs` puts them all on disk.
//! 4. Each update is swapped in with `renameat2(RENAME_EXCHANGE)`; the old
//!    file, now at the temp name, is hashed and must be exactly what was
//!    checked, or it is swapped back and the set rolled back. Creates use
//!    `RENAME_NOREPLACE`, so a file that appeared meanwhile is a conflict
//!    too. Another `syncfs`.
//! 5. The journal says `done`: the commit point.
//!
//! Recovery (`roll_back`) before the commit point undoes each step by
//! inode, so it is exact at any instant; after it, the controller finishes
//! (`controller::finish`). Either way the host ends exactly before or
//! exactly after the set.
//!
//! Every host access is one name in a directory fd opened beneath the root
//! without symlinks, so no path length limit applies and nothing is
//! followed.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags, RenameFlags, Timestamps};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::host::HostRoot;
use crate::patch::set::{hash_hex, Loaded, WorkspacePatch};
use crate::patch::Op;
use crate::paths;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    Prepared,
    Done,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Step {
    pub path: String,
    pub op: Op,
    /// Temp name in the target's directory: the new content, and after an
    /// update's exchange, the old one.
    pub tmp: String,
    /// Where a deleted file waits until the commit point: in the nearest
    /// directory the set keeps.
    pub bak: String,
    /// The new content's hash.
    pub blob: Option<String>,
    /// The hash of the host content this step replaces or deletes.
    pub base: Option<String>,
    /// The temp's inode once written: tells new from old at any instant.
    #[serde(default)]
    pub tmp_ino: Option<u64>,
}

/// A host directory the set removes (it becomes a file), to rebuild on
/// rollback.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct RemovedDir {
    pub path: String,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

/// A directory's times before the commit touched it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct DirTimes {
    pub path: String,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    pub phase: Phase,
    pub steps: Vec<Step>,
    /// Directories the commit created, parents first.
    pub dirs: Vec<String>,
    /// Directories the commit removed, deepest first.
    #[serde(default)]
    pub removed_dirs: Vec<RemovedDir>,
    /// Every directory whose entries the commit changes, with its times.
    #[serde(default)]
    pub dir_times: Vec<DirTimes>,
    /// What the controller finishes after the commit point.
    #[serde(default)]
    pub after: serde_json::Value,
}

impl Journal {
    /// The journal of a commit about to start: nothing planned yet, so a
    /// rollback of it changes nothing on the host.
    pub fn begin(id: &str, after: serde_json::Value) -> Journal {
        Journal {
            id: id.to_string(),
            phase: Phase::Prepared,
            steps: Vec::new(),
            dirs: Vec::new(),
            removed_dirs: Vec::new(),
            dir_times: Vec::new(),
            after,
        }
    }
}

/// Why an apply stopped. A conflict is the host changing under the commit.
pub enum Failure {
    Conflict(super::Conflict),
    Error(Error),
}

impl From<Error> for Failure {
    fn from(e: Error) -> Failure {
        Failure::Error(e)
    }
}

/// What an update kept of the file it replaced.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Kept {
    pub path: String,
    /// `uid:gid` carried over, when the committing user may set it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Set when the owner could not be carried over.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner_lost: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub xattrs: Vec<String>,
    /// Attributes that could not be carried over, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub xattrs_lost: Vec<String>,
}

pub use crate::session::commit_journal_path as journal_path;

pub(crate) fn save(session_dir: &Path, j: &Journal) -> Result<()> {
    let json = serde_json::to_vec(j).map_err(|e| Error::invalid(e.to_string()))?;
    crate::state::write_atomic(&journal_path(session_dir), &json)
}

pub fn load(session_dir: &Path) -> Result<Option<Journal>> {
    match std::fs::read(journal_path(session_dir)) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| Error::invalid(format!("the commit journal is damaged: {e}"))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io("reading the commit journal", e)),
    }
}

/// Test-only switches (cargo feature `fault-injection`, never in release
/// builds): `WOPFS_TEST_FAULT_AFTER=N` makes the process die after N
/// steps of a commit, as a crash would (no cleanup runs);
/// `WOPFS_TEST_ERROR_AFTER=N` makes the Nth step fail with an error, as a
/// full disk would (the commit rolls itself back).
#[cfg(feature = "fault-injection")]
pub(crate) fn fault_point() -> Result<()> {
    static DONE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let done = DONE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
    let at = |var: &str| {
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| done >= n)
    };
    if at("WOPFS_TEST_ERROR_AFTER") {
        return Err(Error::io(
            "applying the commit",
            std::io::Error::from_raw_os_error(libc::ENOSPC),
        ));
    }
    if at("WOPFS_TEST_FAULT_AFTER") {
        std::process::exit(86);
    }
    Ok(())
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub(crate) fn fault_point() -> Result<()> {
    Ok(())
}

/// Test-only (cargo feature `fault-injection`): runs the shell command in
/// `WOPFS_TEST_HOOK_<NAME>` and waits for it, so a test can change the host
/// at an exact moment of a commit.
#[cfg(feature = "fault-injection")]
fn test_hook(name: &str) {
    if let Ok(cmd) = std::env::var(format!("WOPFS_TEST_HOOK_{name}")) {
        let _ = std::process::Command::new("sh").arg("-c").arg(cmd).status();
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
fn test_hook(_name: &str) {}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn errno(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

/// Open directory fds by relative path, each opened beneath the root
/// without following a symlink.
struct Dirs<'a> {
    host: &'a HostRoot,
    open: HashMap<String, OwnedFd>,
}

impl<'a> Dirs<'a> {
    fn new(host: &'a HostRoot) -> Dirs<'a> {
        Dirs {
            host,
            open: HashMap::new(),
        }
    }

    fn get(&mut self, dir: &str) -> Result<&OwnedFd> {
        if !self.open.contains_key(dir) {
            let fd = self.host.open_dir(dir).map_err(|e| {
                Error::invalid(format!(
                    "host directory {:?} cannot be opened beneath the root without following a symlink: {e}",
                    if dir.is_empty() { "." } else { dir }
                ))
            })?;
            self.open.insert(dir.to_string(), fd);
        }
        self.open
            .get(dir)
            .ok_or_else(|| Error::invalid(format!("host directory {dir:?} vanished")))
    }

    /// Forgets a directory that was removed or replaced.
    fn forget(&mut self, dir: &str) {
        self.open
            .retain(|k, _| k != dir && !k.starts_with(&format!("{dir}/")));
    }
}

fn stat_at(dir: impl AsFd, name: &str) -> std::io::Result<rfs::Stat> {
    Ok(rfs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)?)
}

/// The hash of the entry `name` in `dir` as the patch format hashes it (a
/// symlink's target, a file's bytes), never following a symlink.
pub(crate) fn hash_at(dir: impl AsFd, name: &str) -> std::io::Result<(String, rfs::Stat)> {
    let st = stat_at(&dir, name)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFLNK => {
            let t = rfs::readlinkat(&dir, name, Vec::new())?;
            Ok((hash_hex(t.as_bytes()), st))
        }
        libc::S_IFREG => {
            let fd = rfs::openat(
                &dir,
                name,
                OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
                Mode::empty(),
            )?;
            let now = rfs::fstat(&fd)?;
            if now.st_ino != st.st_ino || now.st_mode & libc::S_IFMT != libc::S_IFREG {
                return Err(std::io::Error::from_raw_os_error(libc::EAGAIN));
            }
            let mut h = blake3::Hasher::new();
            std::io::copy(&mut File::from(fd), &mut h)?;
            Ok((format!("blake3:{}", h.finalize().to_hex()), st))
        }
        _ => Ok(("a directory or special file".to_string(), st)),
    }
}

/// Directories a set needs that the host lacks, parents first. Each one
/// that exists must be a real directory reached without symlinks.
pub fn missing_dirs(host: &HostRoot, patches: &[&WorkspacePatch]) -> Result<Vec<String>> {
    let deleted: BTreeSet<&str> = patches
        .iter()
        .filter(|p| p.operation == Op::Delete)
        .map(|p| p.path.as_str())
        .collect();
    let mut need = BTreeSet::new();
    for p in patches.iter().filter(|p| p.operation != Op::Delete) {
        for anc in paths::ancestors(&p.path) {
            need.insert(anc.to_string());
        }
    }
    let mut missing = Vec::new();
    for d in need {
        match host.lstat(&d) {
            Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => {
                host.open_dir(&d).map_err(|e| {
                    Error::invalid(format!(
                        "host directory {d:?} is reached through a symlink; refusing to write through it ({e})"
                    ))
                })?;
            }
            // A file this set deletes: the directory takes its place.
            Ok(st) if st.st_mode & libc::S_IFMT != libc::S_IFLNK && deleted.contains(d.as_str()) => {
                missing.push(d)
            }
            Ok(_) => {
                return Err(Error::invalid(format!(
                    "host path {d:?} is not a directory (a symlink or a file): refusing to write beneath it"
                )))
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => missing.push(d),
            Err(e) => {
                return Err(Error::invalid(format!(
                    "host directory {d:?} cannot be reached beneath the root without following a symlink ({e})"
                )))
            }
        }
    }
    Ok(missing)
}

/// Host directories that become files in this set, with every directory
/// beneath them, deepest first. Each must hold nothing but what the set
/// deletes (a file the grant does not show keeps the directory, and the
/// set is refused).
fn removed_dirs(host: &HostRoot, patches: &[&WorkspacePatch]) -> Result<Vec<RemovedDir>> {
    let deleted: BTreeSet<&str> = patches
        .iter()
        .filter(|p| p.operation == Op::Delete)
        .map(|p| p.path.as_str())
        .collect();
    let mut out = Vec::new();
    for p in patches.iter().filter(|p| p.operation != Op::Delete) {
        let Ok(st) = host.lstat(&p.path) else {
            continue;
        };
        if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
            continue;
        }
        let mut stack = vec![(p.path.clone(), st)];
        let mut found = Vec::new();
        while let Some((dir, st)) = stack.pop() {
            let fd = host
                .open_dir(&dir)
                .ctx(|| format!("opening host directory {dir}"))?;
            let list = rfs::Dir::read_from(&fd)
                .map_err(|e| Error::io(format!("listing {dir}"), e.into()))?;
            for entry in list {
                let entry = entry.map_err(|e| Error::io(format!("listing {dir}"), e.into()))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if name == "." || name == ".." {
                    continue;
                }
                let child = paths::join(&dir, &name);
                let cst = stat_at(&fd, &name).ctx(|| format!("host path {child}"))?;
                if cst.st_mode & libc::S_IFMT == libc::S_IFDIR {
                    stack.push((child, cst));
                } else if !deleted.contains(child.as_str()) {
                    return Err(Error::policy(format!(
                        "{} cannot become a file: the host directory holds {child}, which this set does not delete; nothing was written",
                        p.path
                    )));
                }
            }
            found.push(RemovedDir {
                path: dir,
                mode: st.st_mode & 0o7777,
                uid: st.st_uid,
                gid: st.st_gid,
            });
        }
        out.extend(found);
    }
    // Deepest first.
    out.sort_by(|a, b| {
        b.path
            .matches('/')
            .count()
            .cmp(&a.path.matches('/').count())
    });
    Ok(out)
}

/// Plans the steps of a set: names, directories, times.
fn plan(host: &HostRoot, patches: &[&WorkspacePatch], id: &str) -> Result<Journal> {
    let removed = removed_dirs(host, patches)?;
    let removed_set: BTreeSet<&str> = removed.iter().map(|d| d.path.as_str()).collect();
    let dirs = missing_dirs(host, patches)?;
    let steps: Vec<Step> = patches
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let (dir, _) = split(&p.path);
            // A deleted file waits in the nearest directory that stays.
            let mut keep = dir;
            while removed_set.contains(keep) {
                keep = paths::parent(keep);
            }
            Step {
                path: p.path.clone(),
                op: p.operation,
                tmp: paths::join(dir, &format!(".wopfs-{id}-{n}.new")),
                bak: paths::join(keep, &format!(".wopfs-{id}-{n}.old")),
                blob: p.blob.clone(),
                base: p.base.clone(),
                tmp_ino: None,
            }
        })
        .collect();
    // Every directory whose entries change, with its times now.
    let new_dirs: BTreeSet<&str> = dirs.iter().map(String::as_str).collect();
    let mut touched = BTreeSet::new();
    for s in &steps {
        touched.insert(paths::parent(&s.tmp).to_string());
        touched.insert(paths::parent(&s.bak).to_string());
    }
    for d in dirs.iter().chain(removed.iter().map(|r| &r.path)) {
        touched.insert(paths::parent(d).to_string());
    }
    // Removed directories get their own times back when rebuilt.
    touched.extend(removed.iter().map(|r| r.path.clone()));
    let mut dir_times = Vec::new();
    for d in touched {
        if new_dirs.contains(d.as_str()) {
            continue;
        }
        if let Ok(st) = host.lstat(&d) {
            dir_times.push(DirTimes {
                path: d,
                atime: (st.st_atime, st.st_atime_nsec as i64),
                mtime: (st.st_mtime, st.st_mtime_nsec as i64),
            });
        }
    }
    Ok(Journal {
        id: id.to_string(),
        phase: Phase::Prepared,
        steps,
        dirs,
        removed_dirs: removed,
        dir_times,
        after: serde_json::Value::Null,
    })
}

/// A fresh commit id.
pub fn new_id() -> Result<String> {
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw)
        .map_err(|e| Error::io("commit id", std::io::Error::other(e.to_string())))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

fn conflict(path: &str, expected: Option<&str>, found: String) -> Failure {
    Failure::Conflict(super::Conflict {
        path: path.to_string(),
        expected: expected.unwrap_or("absent").to_string(),
        found: format!("{found} (changed on the host during the commit)"),
    })
}

/// Copies the replaced entry's owner and extended attributes onto the new
/// one (`new` is an fd of a regular temp file, or `None` for a symlink,
/// which is chowned by name).
fn keep_metadata(
    dir: &OwnedFd,
    name: &str,
    old: &rfs::Stat,
    new: Option<&OwnedFd>,
    tmp_name: &str,
    kept: &mut Kept,
) {
    let owner = (old.st_uid, old.st_gid);
    let chown = match new {
        Some(fd) => rfs::fchown(
            fd,
            Some(rfs::Uid::from_raw(owner.0)),
            Some(rfs::Gid::from_raw(owner.1)),
        ),
        None => rfs::chownat(
            dir,
            tmp_name,
            Some(rfs::Uid::from_raw(owner.0)),
            Some(rfs::Gid::from_raw(owner.1)),
            AtFlags::SYMLINK_NOFOLLOW,
        ),
    };
    match chown {
        Ok(()) => kept.owner = Some(format!("{}:{}", owner.0, owner.1)),
        Err(e) => {
            kept.owner_lost = Some(format!(
                "{}:{} ({})",
                owner.0,
                owner.1,
                std::io::Error::from(e)
            ))
        }
    }
    // Extended attributes live on regular files here (Linux keeps no user
    // attributes on symlinks).
    let Some(new) = new else { return };
    if old.st_mode & libc::S_IFMT != libc::S_IFREG {
        return;
    }
    let Ok(oldfd) = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    let names = match list_xattrs(&oldfd) {
        Ok(n) => n,
        Err(e) => {
            kept.xattrs_lost.push(format!("* ({e})"));
            return;
        }
    };
    for n in names {
        let r = get_xattr(&oldfd, &n).and_then(|v| {
            rfs::fsetxattr(new, n.as_str(), &v, rfs::XattrFlags::empty()).map_err(Into::into)
        });
        match r {
            Ok(()) => kept.xattrs.push(n),
            Err(e) => kept.xattrs_lost.push(format!("{n} ({e})")),
        }
    }
}

fn list_xattrs(fd: &OwnedFd) -> std::io::Result<Vec<String>> {
    let mut buf = vec![0u8; 4096];
    loop {
        match rfs::flistxattr(fd, &mut buf[..]) {
            Ok(n) => {
                return Ok(buf[..n]
                    .split(|b| *b == 0)
                    .filter(|s| !s.is_empty())
                    .map(|s| String::from_utf8_lossy(s).into_owned())
                    .collect())
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

fn get_xattr(fd: &OwnedFd, name: &str) -> std::io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 1024];
    loop {
        match rfs::fgetxattr(fd, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) if buf.len() < 1 << 20 => buf.resize(buf.len() * 4, 0),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Writes one temp: new content, the replaced file's owner and xattrs,
/// the patch's permission bits. Returns the temp's inode.
fn write_temp(
    dirs: &mut Dirs,
    loaded: &Loaded,
    p: &WorkspacePatch,
    step: &Step,
    kept: &mut Vec<Kept>,
) -> Result<u64> {
    let data = loaded.content(p)?;
    let (dir, name) = split(&p.path);
    let tmp_name = split(&step.tmp).1;
    let dfd = dirs.get(dir)?;
    // The entry this replaces, if the set keeps its metadata.
    let old = if p.operation == Op::Update {
        stat_at(dfd, name).ok()
    } else {
        None
    };
    let mut k = Kept {
        path: p.path.clone(),
        ..Kept::default()
    };
    let ino = if p.is_symlink() {
        use std::os::unix::ffi::OsStrExt;
        rfs::symlinkat(std::ffi::OsStr::from_bytes(&data), dfd, tmp_name)
            .map_err(|e| Error::io(format!("writing {}", step.tmp), e.into()))?;
        if let Some(old) = &old {
            keep_metadata(dfd, name, old, None, tmp_name, &mut k);
        }
        stat_at(dfd, tmp_name)
            .ctx(|| format!("writing {}", step.tmp))?
            .st_ino
    } else {
        let fd = rfs::openat(
            dfd,
            tmp_name,
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(|e| Error::io(format!("creating {}", step.tmp), e.into()))?;
        let mut f = File::from(fd);
        f.write_all(&data).ctx(|| format!("writing {}", step.tmp))?;
        let fd = OwnedFd::from(f);
        if let Some(old) = &old {
            keep_metadata(dfd, name, old, Some(&fd), tmp_name, &mut k);
        }
        // Permission bits only: a commit never makes a file set-user-id,
        // set-group-id or sticky. Set last, so an ACL copied above keeps
        // the mask the patch asks for.
        let mode = p.mode.unwrap_or(0o644) & 0o777;
        rfs::fchmod(&fd, Mode::from_raw_mode(mode))
            .map_err(|e| Error::io(format!("writing {}", step.tmp), e.into()))?;
        rfs::fstat(&fd)
            .map_err(|e| Error::io(format!("writing {}", step.tmp), e.into()))?
            .st_ino
    };
    if old.is_some() {
        kept.push(k);
    }
    Ok(ino)
}

/// Makes a hard link's temp: another name of `file` (a temp of this
/// commit, or a host path), never following a symlink. Returns its inode.
fn link_temp(dirs: &mut Dirs, p: &WorkspacePatch, step: &Step, file: &str) -> Result<u64> {
    let (fdir, fname) = split(file);
    let (dir, _) = split(&p.path);
    let tmp_name = split(&step.tmp).1;
    let from = dirs.get(fdir)?.try_clone().ctx(|| "duplicating an fd")?;
    let to = dirs.get(dir)?;
    rfs::linkat(&from, fname, to, tmp_name, AtFlags::empty())
        .map_err(|e| Error::io(format!("linking {} as {}", file, step.tmp), e.into()))?;
    Ok(stat_at(to, tmp_name)
        .ctx(|| format!("linking {}", step.tmp))?
        .st_ino)
}

/// Applies `patches` (already checked). `progress` is called after each
/// replacement; `after` is stored in the journal for the controller to
/// finish after the commit point. Returns what updates kept.
pub fn apply(
    session_dir: &Path,
    host: &HostRoot,
    loaded: &Loaded,
    patches: &[&WorkspacePatch],
    id: &str,
    after: serde_json::Value,
    mut progress: impl FnMut(&WorkspacePatch),
) -> std::result::Result<Vec<Kept>, Failure> {
    let mut journal = plan(host, patches, id)?;
    journal.after = after;
    save(session_dir, &journal)?;
    fault_point()?;
    test_hook("AFTER_PLAN");
    let mut dirs = Dirs::new(host);

    // Deleted files move aside, and what moved must be what the agent saw.
    for (p, step) in patches.iter().zip(&journal.steps) {
        if p.operation != Op::Delete {
            continue;
        }
        let (dir, name) = split(&p.path);
        let (bdir, bname) = split(&step.bak);
        let from = dirs.get(dir)?.try_clone().ctx(|| "duplicating an fd")?;
        let to = dirs.get(bdir)?;
        match rfs::renameat_with(&from, name, to, bname, RenameFlags::NOREPLACE) {
            Ok(()) => {}
            Err(rustix::io::Errno::NOENT) => continue, // gone already: nothing to delete
            Err(e) => return Err(Error::io(format!("moving {} aside", p.path), e.into()).into()),
        }
        fault_point()?;
        let found = hash_at(to, bname).map_or_else(|e| format!("unreadable ({e})"), |(h, _)| h);
        if Some(found.as_str()) != p.base.as_deref() {
            let _ = rfs::renameat_with(to, bname, &from, name, RenameFlags::NOREPLACE);
            return Err(conflict(&p.path, p.base.as_deref(), found));
        }
    }

    // Directories that become files go (empty by now), new ones come.
    for d in &journal.removed_dirs {
        dirs.forget(&d.path);
        match host.remove(&d.path, true) {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::ENOTEMPTY || errno(&e) == libc::EEXIST => {
                return Err(conflict(
                    &d.path,
                    Some("an empty directory"),
                    "a directory with new entries".into(),
                ))
            }
            Err(e) => {
                return Err(Error::io(format!("removing host directory {}", d.path), e).into())
            }
        }
        fault_point()?;
    }
    for (i, d) in journal.dirs.iter().enumerate() {
        match host.mkdir(d, 0o755) {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::EEXIST => {
                // Not ours: the rollback must leave it alone.
                let mut j = journal.clone();
                j.dirs.truncate(i);
                save(session_dir, &j)?;
                return Err(conflict(d, None, "a new entry".into()));
            }
            Err(e) => return Err(Error::io(format!("creating host directory {d}"), e).into()),
        }
        fault_point()?;
    }

    // New contents into temp files, files before their other names (hard
    // links), then their inodes into the journal.
    let mut kept = Vec::new();
    let step_of: HashMap<&str, usize> = patches
        .iter()
        .enumerate()
        .map(|(i, p)| (p.path.as_str(), i))
        .collect();
    for links in [false, true] {
        for (i, p) in patches.iter().enumerate() {
            if p.operation == Op::Delete || p.link.is_some() != links {
                continue;
            }
            let ino = match &p.link {
                None => write_temp(&mut dirs, loaded, p, &journal.steps[i], &mut kept)?,
                Some(t) => match step_of.get(t.as_str()) {
                    Some(&f) => link_temp(&mut dirs, p, &journal.steps[i], &journal.steps[f].tmp)?,
                    // Its file is as the set wants it on the host already.
                    None => {
                        let ino = link_temp(&mut dirs, p, &journal.steps[i], t)?;
                        let (dir, _) = split(&p.path);
                        let tmp = split(&journal.steps[i].tmp).1;
                        let found = hash_at(dirs.get(dir)?, tmp)
                            .map_or_else(|e| format!("unreadable ({e})"), |(h, _)| h);
                        if Some(&found) != p.blob.as_ref() {
                            return Err(conflict(t, p.blob.as_deref(), found));
                        }
                        ino
                    }
                },
            };
            journal.steps[i].tmp_ino = Some(ino);
            fault_point()?;
        }
    }
    save(session_dir, &journal)?;
    fault_point()?;

    // Every new content is on disk before anything moves: one syncfs of
    // the host filesystem instead of an fsync per file.
    rfs::syncfs(dirs.get("")?).map_err(|e| Error::io("syncing the host filesystem", e.into()))?;

    // Replacements, each checked at the moment it happens.
    test_hook("BEFORE_REPLACE");
    for (p, step) in patches.iter().zip(&journal.steps) {
        if p.operation == Op::Delete {
            // Moved aside above (its directory may be a file by now).
            progress(p);
            continue;
        }
        let (dir, name) = split(&p.path);
        let tmp = split(&step.tmp).1;
        let dfd = dirs.get(dir)?;
        match p.operation {
            Op::Create => match rfs::renameat_with(dfd, tmp, dfd, name, RenameFlags::NOREPLACE) {
                Ok(()) => {}
                Err(rustix::io::Errno::EXIST) => {
                    let found =
                        hash_at(dfd, name).map_or_else(|e| format!("unreadable ({e})"), |(h, _)| h);
                    return Err(conflict(&p.path, None, found));
                }
                Err(e) => return Err(Error::io(format!("moving {tmp} to {name}"), e.into()).into()),
            },
            Op::Update => {
                match rfs::renameat_with(dfd, tmp, dfd, name, RenameFlags::EXCHANGE) {
                    Ok(()) => {}
                    Err(rustix::io::Errno::NOENT) => {
                        return Err(conflict(&p.path, p.base.as_deref(), "absent".into()))
                    }
                    Err(e) => {
                        return Err(
                            Error::io(format!("exchanging {tmp} with {name}"), e.into()).into()
                        )
                    }
                }
                fault_point()?;
                // What came out is what was checked, or it goes back.
                let found =
                    hash_at(dfd, tmp).map_or_else(|e| format!("unreadable ({e})"), |(h, _)| h);
                if Some(found.as_str()) != p.base.as_deref() {
                    let _ = rfs::renameat_with(dfd, tmp, dfd, name, RenameFlags::EXCHANGE);
                    return Err(conflict(&p.path, p.base.as_deref(), found));
                }
            }
            Op::Delete => {}
        }
        fault_point()?;
        progress(p);
    }
    // The renames are on disk (directories included) before the commit point.
    rfs::syncfs(dirs.get("")?).map_err(|e| Error::io("syncing the host filesystem", e.into()))?;

    // The commit point.
    journal.phase = Phase::Done;
    save(session_dir, &journal)?;
    fault_point()?;
    Ok(kept)
}

/// After the commit point: removes what the old contents left behind
/// (temps holding replaced files, deleted files' backups).
pub fn remove_leftovers(host: &HostRoot, j: &Journal) {
    let mut dirs = Dirs::new(host);
    for s in &j.steps {
        // An update's old content is at its temp name, a delete's at its
        // backup name; a create leaves nothing (its temp is renamed, or
        // was never made if the commit stopped early and was finished).
        let names: &[&str] = match s.op {
            Op::Update => &[&s.tmp],
            Op::Delete => &[&s.bak],
            Op::Create => &[&s.tmp],
        };
        for n in names {
            let (dir, name) = split(n);
            if let Ok(fd) = dirs.get(dir) {
                let _ = rfs::unlinkat(fd, name, AtFlags::empty());
            }
        }
    }
}

/// Before the commit point: undoes every step, newest first, telling new
/// entries from old by the inodes the journal recorded, and leaves the host
/// exactly as before (directory times included).
pub fn roll_back(host: &HostRoot, j: &Journal) -> Result<()> {
    let ino_at = |p: &str| host.lstat(p).ok().map(|st| st.st_ino);
    let mut stuck = Vec::new();
    for s in j.steps.iter().rev() {
        match s.op {
            Op::Create => {
                if s.tmp_ino.is_some() && ino_at(&s.path) == s.tmp_ino {
                    host.remove(&s.path, false)
                        .ctx(|| format!("removing new {}", s.path))?;
                }
                remove_if_ours(host, &s.tmp, s.tmp_ino)?;
            }
            Op::Update => {
                if s.tmp_ino.is_some() && ino_at(&s.path) == s.tmp_ino {
                    // Exchanged: swap the old content back.
                    host.rename(&s.tmp, &s.path, libc::RENAME_EXCHANGE)
                        .ctx(|| format!("restoring {}", s.path))?;
                }
                remove_if_ours(host, &s.tmp, s.tmp_ino)?;
            }
            Op::Delete => {}
        }
    }
    for d in j.dirs.iter().rev() {
        match host.remove(d, true) {
            Ok(()) => {}
            // Not made yet (or a file this set was to replace, still there).
            Err(e) if errno(&e) == libc::ENOENT || errno(&e) == libc::ENOTDIR => {}
            Err(e) => stuck.push(format!("{d} ({e})")),
        }
    }
    for d in j.removed_dirs.iter().rev() {
        match host.mkdir(&d.path, 0o700) {
            Ok(()) => {}
            // Made by an earlier, interrupted recovery: owner and mode again.
            Err(e) if errno(&e) == libc::EEXIST => {}
            Err(e) => return Err(Error::io(format!("restoring directory {}", d.path), e)),
        }
        if host
            .lstat(&d.path)
            .is_ok_and(|st| st.st_mode & libc::S_IFMT == libc::S_IFDIR)
        {
            let _ = host.chown(&d.path, Some(d.uid), Some(d.gid));
            host.chmod(&d.path, d.mode)
                .ctx(|| format!("restoring directory {}", d.path))?;
        }
    }
    for s in j.steps.iter().rev() {
        if s.op != Op::Delete || host.lstat(&s.bak).is_err() {
            continue;
        }
        match host.rename(&s.bak, &s.path, libc::RENAME_NOREPLACE) {
            Ok(()) => {}
            Err(e) if errno(&e) == libc::EEXIST => stuck.push(format!(
                "{} (a new entry took its place; the old file is kept as {})",
                s.path, s.bak
            )),
            Err(e) => return Err(Error::io(format!("restoring {}", s.path), e)),
        }
    }
    for t in &j.dir_times {
        let ts = Timestamps {
            last_access: rfs::Timespec {
                tv_sec: t.atime.0,
                tv_nsec: t.atime.1 as _,
            },
            last_modification: rfs::Timespec {
                tv_sec: t.mtime.0,
                tv_nsec: t.mtime.1 as _,
            },
        };
        let _ = host.utimens(&t.path, &ts);
    }
    if !stuck.is_empty() {
        return Err(Error::invalid(format!(
            "the commit was rolled back, but the host changed meanwhile at: {}",
            stuck.join("; ")
        )));
    }
    Ok(())
}

/// Removes a temp name unless it holds something other than ours (an old
/// content swapped there is restored first by the caller).
fn remove_if_ours(host: &HostRoot, tmp: &str, ino: Option<u64>) -> Result<()> {
    match host.lstat(tmp) {
        Ok(st) if ino.is_none() || Some(st.st_ino) == ino => {
            host.remove(tmp, false).ctx(|| format!("removing {tmp}"))
        }
        Ok(_) => Err(Error::invalid(format!(
            "{tmp} holds an entry this commit did not write; left in place"
        ))),
        Err(_) => Ok(()),
    }
}

/// Plans a set without writing anything (a dry run): every refusal the
/// plan can find (a symlinked directory, a directory that cannot become a
/// file) is found here.
pub fn preview(host: &HostRoot, patches: &[&WorkspacePatch]) -> Result<()> {
    plan(host, patches, "preview").map(|_| ())
}
