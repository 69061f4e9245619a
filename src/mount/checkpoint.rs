//! What the process serving a view does for `wopfs checkpoint` and
//! `wopfs undo` (asked through `control.rs`; the controller keeps the
//! checkpoints and their records, `controller/checkpoint.rs`).
//!
//! FUSE engine: the copy is made with the view held still, and an undo
//! reloads the view (`View::undo`) and drops what the kernel cached of
//! what changed. Kernel engine: an overlay's caches cannot be dropped from
//! outside and its upper must not change under it, so an undo puts the
//! upper back and replaces each overlay by a fresh one (`Remount`); a
//! process with its cwd, root or an open directory in the view would be
//! left in the old overlay, so the undo is refused (busy, naming them)
//! while one is. Files held open are no obstacle on either engine: they
//! keep what they had, as after a rename-over.

use std::path::Path;
use std::sync::Weak;
use std::time::Instant;

use std::path::PathBuf;

use super::control::{checkpoint_dir, Handler, Request};
use super::kernel::Remount;
use crate::error::{Error, Result};
use crate::overlay::engine;
use crate::overlay::snapshot;
use crate::view::View;

/// What of the FUSE engine's overlay directory a checkpoint leaves out:
/// a journal rewrite's temp file.
pub fn fuse_skip(rel: &str) -> bool {
    rel == "journal.jsonl.tmp"
}

/// The directories of checkpoint `id` and of `prev`.
fn paths(session: &Path, id: &str, prev: Option<&str>) -> Result<(PathBuf, Option<PathBuf>)> {
    let prev = match prev {
        Some(p) => Some(checkpoint_dir(session, p)?),
        None => None,
    };
    Ok((checkpoint_dir(session, id)?, prev))
}

fn none(_: &str) -> bool {
    false
}

fn json<T: serde::Serialize>(v: &T, ms: f64) -> Result<serde_json::Value> {
    let mut v = serde_json::to_value(v).map_err(|e| Error::invalid(e.to_string()))?;
    if let Some(o) = v.as_object_mut() {
        o.insert("ms".into(), ms.into());
    }
    Ok(v)
}

fn ms(start: Instant) -> f64 {
    (start.elapsed().as_secs_f64() * 1e5).round() / 100.0
}

/// The FUSE engine's handler.
pub(super) fn fuse_handler(
    session_dir: &Path,
    view: Weak<View>,
    notifier: fuser::Notifier,
) -> Handler {
    let session = session_dir.to_path_buf();
    Box::new(move |req| {
        let view = view
            .upgrade()
            .ok_or_else(|| Error::busy("the view is no longer served"))?;
        let start = Instant::now();
        match req {
            Request::Checkpoint { id, prev } => {
                let (dir, prev) = paths(&session, &id, prev.as_deref())?;
                let stats = view.checkpoint(|layer| {
                    snapshot::snapshot(layer, &dir, prev.as_deref(), &fuse_skip)
                })?;
                json(&stats, ms(start))
            }
            Request::Undo { id } => {
                let dir = checkpoint_dir(&session, &id)?;
                let (stats, stale) = view.undo(|layer| {
                    let stats = snapshot::restore(layer, &dir, &fuse_skip)?;
                    let touched = stats.touched.clone();
                    Ok((stats, Some(touched)))
                })?;
                tracing::debug!(?stale, "undo: what the kernel may hold");
                let taken = crate::fuse::invalidate_stale(&notifier, &stale);
                tracing::info!(
                    names = stale.entries.len(),
                    inodes = stale.inodes.len(),
                    taken,
                    "undo: invalidated the kernel's caches"
                );
                json(&stats, ms(start))
            }
        }
    })
}

/// The kernel engine's handler (root: the overlays are this process's).
pub(super) fn kernel_handler(remount: Remount) -> Handler {
    Box::new(move |req| {
        let start = Instant::now();
        let upper = engine::upper_dir(&remount.session_dir);
        match req {
            Request::Checkpoint { id, prev } => {
                let (dir, prev) = paths(&remount.session_dir, &id, prev.as_deref())?;
                let stats = snapshot::snapshot(&upper, &dir, prev.as_deref(), &none)?;
                json(&stats, ms(start))
            }
            Request::Undo { id } => {
                let dir = checkpoint_dir(&remount.session_dir, &id)?;
                let devs: Vec<u64> = remount
                    .overlays()
                    .iter()
                    .filter_map(|o| rustix::fs::stat(o).ok().map(|s| s.st_dev))
                    .collect();
                let inside = holders(&devs);
                if !inside.is_empty() {
                    return Err(Error::busy(format!(
                        "an undo on the kernel engine replaces the overlay at {}, and these processes would stay in the old one: {}; end them (or move them out of the view) and undo again",
                        remount.mountpoint.display(),
                        inside.join(", ")
                    )));
                }
                let stats = remount.replace(|| snapshot::restore(&upper, &dir, &none))?;
                json(&stats, ms(start))
            }
        }
    })
}

/// The kernel engine rootless (`wopfs run --engine kernel`): the overlay is
/// the run's child's, in its own namespaces, so this process can copy the
/// upper but not replace the overlay.
pub(super) fn lower_handler(session_dir: &Path) -> Handler {
    let upper = engine::upper_dir(session_dir);
    let session = session_dir.to_path_buf();
    Box::new(move |req| {
        let start = Instant::now();
        match req {
            Request::Checkpoint { id, prev } => {
                let (dir, prev) = paths(&session, &id, prev.as_deref())?;
                let stats = snapshot::snapshot(&upper, &dir, prev.as_deref(), &none)?;
                json(&stats, ms(start))
            }
            Request::Undo { .. } => Err(Error::invalid(
                "undo is not possible on the rootless kernel engine (wopfs run --engine kernel): the overlay is mounted in the run's own namespaces, out of reach of a fresh one; end the run and undo then, or use --engine fuse",
            )),
        }
    })
}

/// The processes with their cwd, their root or an open directory on one of
/// the file systems `devs` (an overlay's directories report its own
/// device), as `pid (comm): what`.
fn holders(devs: &[u64]) -> Vec<String> {
    let me = std::process::id().to_string();
    let mut out = Vec::new();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    let on = |p: &Path, want_dir: bool| {
        rustix::fs::stat(p).is_ok_and(|s| {
            devs.contains(&s.st_dev) && (!want_dir || s.st_mode & libc::S_IFMT == libc::S_IFDIR)
        })
    };
    for p in procs.flatten() {
        let pid = p.file_name().to_string_lossy().into_owned();
        if !pid.bytes().all(|b| b.is_ascii_digit()) || pid == me {
            continue;
        }
        let base = p.path();
        let comm = std::fs::read_to_string(base.join("comm")).unwrap_or_default();
        let who = format!("{pid} ({})", comm.trim());
        let mut what = Vec::new();
        for link in ["cwd", "root"] {
            if on(&base.join(link), false) {
                what.push(link.to_string());
            }
        }
        if let Ok(fds) = std::fs::read_dir(base.join("fd")) {
            for fd in fds.flatten() {
                // Pipes, sockets and anonymous inodes are not paths.
                let is_path = std::fs::read_link(fd.path())
                    .is_ok_and(|t| t.as_os_str().as_encoded_bytes().first() == Some(&b'/'));
                if is_path && on(&fd.path(), true) {
                    what.push("an open directory".into());
                    break;
                }
            }
        }
        if !what.is_empty() {
            out.push(format!("{who}: {}", what.join(", ")));
        }
    }
    out
}
