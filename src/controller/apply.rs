//! Applying a checked patch set to the host tree, atomically per set.
//!
//! 1. The commit journal (`STATE/sessions/g-…/commit.json`) is written with
//!    every step planned: temp and backup names in each target directory.
//! 2. New contents go to the temp files, modes set; one `syncfs` puts them
//!    all on disk.
//! 3. Renames: an updated or deleted file moves to its backup name, the new
//!    content moves into place; another `syncfs` puts the renames on disk.
//! 4. The journal says `done`: the commit point. Backups are removed.
//!
//! Recovery after a crash (`recover`): before the commit point everything
//! is rolled back (backups renamed back, temps and new files removed, new
//! directories removed), after it the cleanup is finished. Either way the
//! host tree ends exactly before or exactly after the set.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, Mode, OFlags, RenameFlags};
use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};
use crate::host::HostRoot;
use crate::patch::set::{Loaded, WorkspacePatch};
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
    /// Temp name (new content) in the target's directory.
    pub tmp: String,
    /// Backup name (old content) in the target's directory.
    pub bak: String,
    /// The new content's hash, to recognise it during a rollback.
    pub blob: Option<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Journal {
    pub id: String,
    pub phase: Phase,
    pub steps: Vec<Step>,
    /// Directories the commit created, parents first.
    pub dirs: Vec<String>,
}

pub fn journal_path(session_dir: &Path) -> PathBuf {
    session_dir.join("commit.json")
}

fn save(session_dir: &Path, j: &Journal) -> Result<()> {
    let json = serde_json::to_vec_pretty(j).map_err(|e| Error::invalid(e.to_string()))?;
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

/// Test-only switches: `WOPFS_TEST_FAULT_AFTER=N` makes the process die
/// after N host changes of a commit, as a crash would (no cleanup runs);
/// `WOPFS_TEST_ERROR_AFTER=N` makes the Nth change fail with an error, as a
/// full disk would (the commit rolls itself back).
fn fault_point(done: &mut u64) -> Result<()> {
    *done += 1;
    if let Some(n) = std::env::var("WOPFS_TEST_ERROR_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        if *done >= n {
            return Err(Error::io(
                "applying the commit",
                std::io::Error::from_raw_os_error(libc::ENOSPC),
            ));
        }
    }
    if let Some(n) = std::env::var("WOPFS_TEST_FAULT_AFTER")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        if *done >= n {
            std::process::exit(86);
        }
    }
    Ok(())
}

fn split(path: &str) -> (&str, &str) {
    path.rsplit_once('/').unwrap_or(("", path))
}

fn dir_of<'a>(
    host: &HostRoot,
    cache: &'a mut std::collections::HashMap<String, OwnedFd>,
    dir: &str,
) -> Result<&'a OwnedFd> {
    if !cache.contains_key(dir) {
        let fd = host.open_dir(dir).map_err(|e| {
            Error::invalid(format!(
                "host directory {:?} cannot be opened beneath the root without following a symlink: {e}",
                if dir.is_empty() { "." } else { dir }
            ))
        })?;
        cache.insert(dir.to_string(), fd);
    }
    cache
        .get(dir)
        .ok_or_else(|| Error::invalid(format!("host directory {dir:?} vanished")))
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

/// Applies `patches` (already checked). `progress` is called after each.
pub fn apply(
    session_dir: &Path,
    host: &HostRoot,
    loaded: &Loaded,
    patches: &[&WorkspacePatch],
    mut progress: impl FnMut(&WorkspacePatch),
) -> Result<()> {
    let mut raw = [0u8; 6];
    getrandom::fill(&mut raw)
        .map_err(|e| Error::io("commit id", std::io::Error::other(e.to_string())))?;
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let steps: Vec<Step> = patches
        .iter()
        .enumerate()
        .map(|(n, p)| {
            let (dir, _) = split(&p.path);
            Step {
                path: p.path.clone(),
                op: p.operation,
                tmp: paths::join(dir, &format!(".wopfs-{id}-{n}.new")),
                bak: paths::join(dir, &format!(".wopfs-{id}-{n}.old")),
                blob: p.blob.clone(),
            }
        })
        .collect();
    let mut journal = Journal {
        id,
        phase: Phase::Prepared,
        steps,
        dirs: missing_dirs(host, patches)?,
    };
    save(session_dir, &journal)?;
    let mut done = 0;
    let mut dirs = std::collections::HashMap::new();

    // Deleted files move aside first: a directory may take a file's place.
    for (p, step) in patches.iter().zip(&journal.steps) {
        if p.operation == Op::Delete {
            let (dir, name) = split(&p.path);
            let dfd = dir_of(host, &mut dirs, dir)?;
            rfs::renameat_with(dfd, name, dfd, split(&step.bak).1, RenameFlags::NOREPLACE)
                .map_err(|e| Error::io(format!("moving {} aside", p.path), e.into()))?;
            fault_point(&mut done)?;
        }
    }

    // New directories, then new contents into temp files.
    for d in &journal.dirs {
        host.mkdir(d, 0o755)
            .ctx(|| format!("creating host directory {d}"))?;
        fault_point(&mut done)?;
    }
    for (p, step) in patches.iter().zip(&journal.steps) {
        if p.operation == Op::Delete {
            continue;
        }
        let data = loaded.content(p)?;
        let (dir, _) = split(&p.path);
        let tmp_name = split(&step.tmp).1;
        let dfd = dir_of(host, &mut dirs, dir)?;
        if p.is_symlink() {
            use std::os::unix::ffi::OsStrExt;
            rfs::symlinkat(std::ffi::OsStr::from_bytes(&data), dfd, tmp_name)
                .map_err(|e| Error::io(format!("writing {}", step.tmp), e.into()))?;
        } else {
            let fd = rfs::openat(
                dfd,
                tmp_name,
                OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                Mode::from_raw_mode(0o600),
            )
            .map_err(|e| Error::io(format!("creating {}", step.tmp), e.into()))?;
            let mut f = File::from(fd);
            f.write_all(&data)
                .and_then(|_| {
                    // Permission bits only: a commit never makes a file
                    // set-user-id, set-group-id or sticky.
                    let mode = p.mode.unwrap_or(0o644) & 0o777;
                    rfs::fchmod(&f, Mode::from_raw_mode(mode)).map_err(Into::into)
                })
                .ctx(|| format!("writing {}", step.tmp))?;
        }
        fault_point(&mut done)?;
    }

    // Every new content is on disk before anything moves: one syncfs of
    // the host filesystem instead of an fsync per file.
    let root = dir_of(host, &mut dirs, "")?;
    rfs::syncfs(root).map_err(|e| Error::io("syncing the host filesystem", e.into()))?;

    // Renames.
    for (p, step) in patches.iter().zip(&journal.steps) {
        let (dir, name) = split(&p.path);
        let dfd = dir_of(host, &mut dirs, dir)?;
        let (tmp, bak) = (split(&step.tmp).1, split(&step.bak).1);
        let r = |from: &str, to: &str, flags: RenameFlags| {
            rfs::renameat_with(dfd, from, dfd, to, flags)
                .map_err(|e| Error::io(format!("moving {from} to {to} in {:?}", dir), e.into()))
        };
        match p.operation {
            Op::Update => {
                r(name, bak, RenameFlags::NOREPLACE)?;
                fault_point(&mut done)?;
                r(tmp, name, RenameFlags::NOREPLACE)?;
            }
            Op::Delete => {} // moved aside above
            Op::Create => r(tmp, name, RenameFlags::NOREPLACE)?,
        }
        fault_point(&mut done)?;
        progress(p);
    }
    // The renames are on disk (directories included) before the commit point.
    let root = dir_of(host, &mut dirs, "")?;
    rfs::syncfs(root).map_err(|e| Error::io("syncing the host filesystem", e.into()))?;

    // The commit point.
    journal.phase = Phase::Done;
    save(session_dir, &journal)?;
    fault_point(&mut done)?;
    finish(session_dir, host, &journal)
}

/// After the commit point: removes the backups and the journal.
fn finish(session_dir: &Path, host: &HostRoot, j: &Journal) -> Result<()> {
    for s in &j.steps {
        if s.op != Op::Create {
            let _ = host.remove(&s.bak, false);
        }
        let _ = host.remove(&s.tmp, false);
    }
    std::fs::remove_file(journal_path(session_dir)).ctx(|| "removing the commit journal")
}

/// Before the commit point: removes every new file and directory, then
/// puts every old file back, leaving the host exactly as before.
fn roll_back(session_dir: &Path, host: &HostRoot, j: &Journal) -> Result<()> {
    let exists = |p: &str| host.lstat(p).is_ok();
    // New contents: temps, and what was already moved into place.
    for s in j.steps.iter().rev() {
        if exists(&s.tmp) {
            host.remove(&s.tmp, false)
                .ctx(|| format!("removing {}", s.tmp))?;
        } else if s.op != Op::Delete && exists(&s.path) && is_ours(host, s) {
            // An update's old file is in its backup until restored below.
            if s.op == Op::Create || exists(&s.bak) {
                host.remove(&s.path, false)
                    .ctx(|| format!("removing new {}", s.path))?;
            }
        }
    }
    for d in j.dirs.iter().rev() {
        let _ = host.remove(d, true);
    }
    // Old contents back in place.
    for s in j.steps.iter().rev() {
        if s.op != Op::Create && exists(&s.bak) {
            host.rename(&s.bak, &s.path, 0)
                .ctx(|| format!("restoring {}", s.path))?;
        }
    }
    std::fs::remove_file(journal_path(session_dir)).ctx(|| "removing the commit journal")
}

/// Whether the entry at a step's path holds the content this commit wrote.
fn is_ours(host: &HostRoot, s: &Step) -> bool {
    let Ok(st) = host.lstat(&s.path) else {
        return false;
    };
    let kind = if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        crate::view::Kind::Symlink
    } else {
        crate::view::Kind::File
    };
    let ours = crate::patch::set::host_hash(host, &s.path, kind).ok();
    ours.is_some() && ours == s.blob
}

/// Completes or rolls back an interrupted commit. Returns what it did.
pub fn recover(session_dir: &Path, host: &HostRoot) -> Result<Option<Phase>> {
    let Some(j) = load(session_dir)? else {
        return Ok(None);
    };
    match j.phase {
        Phase::Done => finish(session_dir, host, &j)?,
        Phase::Prepared => roll_back(session_dir, host, &j)?,
    }
    Ok(Some(j.phase))
}

/// Whether a path is one of our temp or backup names (hidden from diffs).
pub fn is_commit_scratch(name: &str) -> bool {
    name.starts_with(".wopfs-") && (name.ends_with(".new") || name.ends_with(".old"))
}
