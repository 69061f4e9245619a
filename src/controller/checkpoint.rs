//! Checkpoints and undo of an overlay view (`wopfs checkpoint`,
//! `checkpoints`, `undo`, `diff --since`).
//!
//! ```text
//! STATE/sessions/G/checkpoints/c3/meta.json       id, label, time, what changed since c2
//! STATE/sessions/G/checkpoints/c3/manifest.jsonl  each layer entry and its identity then
//! STATE/sessions/G/checkpoints/c3/layer/          the layer's directories, and a copy of what changed since c2
//! ```
//!
//! The layer is the FUSE engine's overlay directory or the kernel engine's
//! upper directory: what the session changed, never the granted tree, so a
//! checkpoint costs what the session changed. A file unchanged since the
//! previous checkpoint is shared with it (its manifest line names the
//! checkpoint holding the copy; copies are never written nor removed), and
//! an undo copies back only what changed since the checkpoint
//! (`overlay/snapshot.rs`). A view being served is copied and
//! put back by its serving process (`mount/control.rs`,
//! `mount/checkpoint.rs`), which holds the view still meanwhile and, after
//! an undo, shows the old state at once; a view not mounted is worked on
//! here under the session lock. Later checkpoints stay after an undo: an
//! undo to a later one is a redo.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::audit::{Audit, Event};
use crate::error::{Error, IoContext, Result};
use crate::grant::Grant;
use crate::mount::control::{self, Request};
use crate::overlay::engine::{self, Engine};
use crate::overlay::snapshot;
use crate::patch::diff::{self, FileDiff};
use crate::patch::set::Loaded;
use crate::policy::Mode;
use crate::state::StateDir;

/// A checkpoint's record (`meta.json`).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Checkpoint {
    pub id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub created_at: String,
    /// Layer entries (files, directories, links, whiteouts) copied or gone
    /// since the previous checkpoint: what this turn changed.
    pub changed: u64,
    /// Entries in the layer (what the session has changed in all).
    pub entries: u64,
    /// Bytes copied to make it (the rest is shared with the previous one).
    pub bytes_copied: u64,
    /// Made by the serving process of a mounted view.
    pub live: bool,
    pub ms: f64,
}

/// What an undo did.
#[derive(Clone, Debug, Serialize)]
pub struct Undone {
    pub to: String,
    /// Entries left as they were, put back, and removed.
    pub kept: u64,
    pub restored: u64,
    pub removed: u64,
    pub bytes_copied: u64,
    /// Done by the serving process of a mounted view (shown at once).
    pub live: bool,
    pub ms: f64,
}

fn checkpoints_dir(state: &StateDir, grant_id: &str) -> PathBuf {
    state.session_dir(grant_id).join("checkpoints")
}

/// The number of a checkpoint id (`c12` → 12).
fn number(id: &str) -> Option<u64> {
    id.strip_prefix('c')?.parse().ok()
}

/// Checks that `grant_id` is an overlay view (its record verified, its
/// file list not parsed: that is the cost of a large grant).
fn check_overlay(state: &StateDir, grant_id: &str) -> Result<()> {
    let mode = state.grant_mode(grant_id)?;
    if mode != Mode::ReadWriteOverlay {
        return Err(Error::invalid(format!(
            "grant {grant_id} is a {mode} view: only overlay views have checkpoints (their changes are a layer to go back to)"
        )));
    }
    Ok(())
}

/// Every checkpoint of the grant, oldest first.
pub fn list(state: &StateDir, grant_id: &str) -> Result<Vec<Checkpoint>> {
    check_overlay(state, grant_id)?;
    list_checked(state, grant_id)
}

/// [`list`] of a grant already checked. A directory without its record (a
/// checkpoint killed half way) is not one.
fn list_checked(state: &StateDir, grant_id: &str) -> Result<Vec<Checkpoint>> {
    let dir = checkpoints_dir(state, grant_id);
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(Error::io(format!("listing {}", dir.display()), e)),
    };
    let mut out = Vec::new();
    for e in entries {
        let e = e.ctx(|| format!("listing {}", dir.display()))?;
        let name = e.file_name().to_string_lossy().into_owned();
        if number(&name).is_none() {
            continue;
        }
        let meta = e.path().join("meta.json");
        let text = match std::fs::read(&meta) {
            Ok(t) => t,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => continue,
            Err(err) => return Err(Error::io(format!("reading {}", meta.display()), err)),
        };
        let c: Checkpoint = serde_json::from_slice(&text).map_err(|err| {
            Error::invalid(format!(
                "checkpoint record {} is damaged: {err}",
                meta.display()
            ))
        })?;
        out.push(c);
    }
    out.sort_by_key(|c| number(&c.id));
    Ok(out)
}

/// The directory of checkpoint `id`, which must exist.
fn find(state: &StateDir, grant_id: &str, id: &str) -> Result<PathBuf> {
    check_overlay(state, grant_id)?;
    let all = list_checked(state, grant_id)?;
    if !all.iter().any(|c| c.id == id) {
        let have: Vec<&str> = all.iter().map(|c| c.id.as_str()).collect();
        return Err(Error::invalid(format!(
            "grant {grant_id} has no checkpoint {id:?} ({})",
            if have.is_empty() {
                "it has none; make one with `wopfs checkpoint`".to_string()
            } else {
                format!("it has {}", have.join(", "))
            }
        )));
    }
    Ok(checkpoints_dir(state, grant_id).join(id))
}

/// The live layer of a view not being served, for this process to copy or
/// put back (under the session lock): the FUSE engine's overlay directory
/// or the kernel engine's upper (its image mounted for as long as the
/// second value is held).
fn offline_layer(session_dir: &Path) -> Result<(PathBuf, Option<engine::ReadableUpper>, bool)> {
    match engine::engine_of(session_dir)? {
        Engine::Kernel => {
            let upper = engine::open_upper(session_dir)?
                .ok_or_else(|| Error::invalid("the session's kernel layer is missing"))?;
            std::fs::create_dir_all(&upper.upper)
                .ctx(|| format!("creating {}", upper.upper.display()))?;
            Ok((upper.upper.clone(), Some(upper), false))
        }
        Engine::Fuse => {
            let dir = session_dir.join("overlay");
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(&dir)
                .ctx(|| format!("creating {}", dir.display()))?;
            Ok((dir, None, true))
        }
    }
}

use std::os::unix::fs::DirBuilderExt;

fn skip_for(fuse: bool) -> &'static dyn Fn(&str) -> bool {
    if fuse {
        &crate::mount::checkpoint::fuse_skip
    } else {
        &|_| false
    }
}

/// Refuses a session that has ended (committed or rejected).
fn check_open(state: &StateDir, grant_id: &str, what: &str) -> Result<()> {
    crate::session::SessionState::load(&state.session_dir(grant_id))?
        .check_not_ended(grant_id, what)
}

/// Asks the serving process, or, when nothing serves the view, runs
/// `offline` here under the session lock. Returns the answer and whether
/// the serving process gave it.
fn served_or_here(
    state: &StateDir,
    grant_id: &str,
    req: &Request,
    offline: impl FnOnce(&Path, bool) -> Result<serde_json::Value>,
) -> Result<(serde_json::Value, bool)> {
    let session = state.session_dir(grant_id);
    if let Some(v) = control::ask(&session, req)? {
        return Ok((v, true));
    }
    if let Some(m) = state.live_mount(grant_id) {
        return Err(Error::busy(format!(
            "grant {grant_id} is mounted at {} (pid {}) but its serving process does not answer on {}: is it an older wopfs? unmount and mount it again",
            m.mountpoint.display(),
            m.pid,
            session.join("control.sock").display()
        )));
    }
    let _lock = crate::session::lock(&session, true, grant_id)?;
    crate::session::ensure_no_interrupted_commit(&session, grant_id)?;
    let (layer, _held, fuse) = offline_layer(&session)?;
    let start = Instant::now();
    let mut v = offline(&layer, fuse)?;
    if let Some(o) = v.as_object_mut() {
        o.insert(
            "ms".into(),
            ((start.elapsed().as_secs_f64() * 1e5).round() / 100.0).into(),
        );
    }
    Ok((v, false))
}

fn num(v: &serde_json::Value, k: &str) -> u64 {
    v.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0)
}

/// Records the view's current state as a new checkpoint.
pub fn create(
    state: &StateDir,
    grant_id: &str,
    label: Option<&str>,
    actor: &str,
) -> Result<Checkpoint> {
    check_overlay(state, grant_id)?;
    check_open(state, grant_id, "checkpoint")?;
    let session = state.session_dir(grant_id);
    if !session.is_dir() {
        return Err(Error::invalid(format!(
            "grant {grant_id} has no session yet (it was never mounted): nothing to checkpoint"
        )));
    }
    let root = checkpoints_dir(state, grant_id);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(&root)
        .ctx(|| format!("creating {}", root.display()))?;
    let existing = list_checked(state, grant_id)?;
    // Leftovers of a checkpoint killed half way (no record).
    for e in std::fs::read_dir(&root)
        .ctx(|| format!("listing {}", root.display()))?
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if !existing.iter().any(|c| c.id == name) {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
    let n = existing
        .iter()
        .filter_map(|c| number(&c.id))
        .max()
        .unwrap_or(0)
        + 1;
    let id = format!("c{n}");
    let dir = root.join(&id);
    let prev = existing.last().map(|c| root.join(&c.id));
    let req = Request::Checkpoint {
        id: id.clone(),
        prev: existing.last().map(|c| c.id.clone()),
    };
    let (stats, live) = served_or_here(state, grant_id, &req, |layer, fuse| {
        let s = snapshot::snapshot(layer, &dir, prev.as_deref(), skip_for(fuse))?;
        serde_json::to_value(s).map_err(|e| Error::invalid(e.to_string()))
    })?;
    let c = Checkpoint {
        id: id.clone(),
        label: label.map(str::to_string),
        created_at: crate::grant::rfc3339(std::time::SystemTime::now()),
        changed: num(&stats, "copied") + num(&stats, "gone_since_prev"),
        entries: num(&stats, "entries"),
        bytes_copied: num(&stats, "bytes_copied"),
        live,
        ms: stats
            .get("ms")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0),
    };
    let text = serde_json::to_vec_pretty(&c).map_err(|e| Error::invalid(e.to_string()))?;
    crate::state::write_atomic(&dir.join("meta.json"), &text)?;
    Audit::new(state.path()).append(
        "wopfs.view.checkpoint",
        Some(grant_id),
        actor,
        Event::Complete,
        "recorded",
        json!({"checkpoint": c.id, "label": c.label, "changed": c.changed, "ms": c.ms, "live": live}),
    )?;
    Ok(c)
}

/// Puts the view back to checkpoint `to`: a mounted view shows it at once.
pub fn undo(state: &StateDir, grant_id: &str, to: &str, actor: &str) -> Result<Undone> {
    check_overlay(state, grant_id)?;
    check_open(state, grant_id, "undo")?;
    let dir = find(state, grant_id, to)?;
    let req = Request::Undo { id: to.to_string() };
    let result = served_or_here(state, grant_id, &req, |layer, fuse| {
        let s = snapshot::restore(layer, &dir, skip_for(fuse))?;
        serde_json::to_value(s).map_err(|e| Error::invalid(e.to_string()))
    });
    let audit = Audit::new(state.path());
    let (stats, live) = match result {
        Ok(r) => r,
        Err(e) => {
            audit.append(
                "wopfs.view.undo",
                Some(grant_id),
                actor,
                Event::Failure,
                "refused",
                json!({"to": to, "error": e.to_string()}),
            )?;
            return Err(e);
        }
    };
    let u = Undone {
        to: to.to_string(),
        kept: num(&stats, "kept"),
        restored: num(&stats, "restored"),
        removed: num(&stats, "removed"),
        bytes_copied: num(&stats, "bytes_copied"),
        live,
        ms: stats
            .get("ms")
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0),
    };
    audit.append(
        "wopfs.view.undo",
        Some(grant_id),
        actor,
        Event::Complete,
        "undone",
        serde_json::to_value(&u).map_err(|e| Error::invalid(e.to_string()))?,
    )?;
    Ok(u)
}

/// Removes what a `diff --since` killed an hour ago or more left behind
/// (a younger one may be another process's, still reading).
fn remove_stale_trees(session: &Path) {
    let Ok(entries) = std::fs::read_dir(session) else {
        return;
    };
    let hour = std::time::Duration::from_secs(3600);
    for e in entries.flatten() {
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .is_ok_and(|t| t.elapsed().is_ok_and(|age| age > hour));
        if old && e.file_name().to_string_lossy().starts_with(".since-") {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// What changed in the view since checkpoint `since`, per path.
pub fn diff_since(state: &StateDir, grant: &Grant, since: &str) -> Result<Vec<FileDiff>> {
    let dir = find(state, &grant.grant_id, since)?;
    let session = state.session_dir(&grant.grant_id);
    remove_stale_trees(&session);
    // The checkpoint's layer as one tree (links to the copies it shares
    // with earlier checkpoints), removed when done.
    let tree = tempfile::Builder::new()
        .prefix(".since-")
        .tempdir_in(&session)
        .ctx(|| format!("making a temporary directory in {}", session.display()))?;
    let layer = tree.path().join(snapshot::LAYER);
    snapshot::materialize(&dir, &layer)?;
    let then = Loaded::from_layer(grant, &session, Some(&layer))?;
    let now = Loaded::from_session(grant, &session)?;
    let host = crate::host::HostRoot::open(&grant.root)
        .ctx(|| format!("host tree {}", grant.root.display()))?;
    diff::since(&then, &now, &host)
}
