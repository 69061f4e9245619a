//! The approval controller: commit, reject, recover. The one code path
//! that writes the host tree (`apply.rs`), run by an approver outside the
//! sandbox.

pub mod apply;
mod rebase;

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::json;

use crate::audit::{Audit, Event};
use crate::error::{Error, IoContext, Result};
use crate::grant::Grant;
use crate::host::HostRoot;
use crate::patch::set::{self, Loaded, WorkspacePatch};
use crate::patch::Op;
use crate::session::{self, Phase, SessionState};
use crate::state::StateDir;
use crate::view::Kind;

/// Asks the approver on a terminal; gets the summary of what is approved.
pub type Confirm = Box<dyn Fn(&str) -> bool>;
/// Called after each applied patch.
pub type Progress = Box<dyn FnMut(&WorkspacePatch)>;

pub struct CommitOptions {
    pub yes: bool,
    pub dry_run: bool,
    pub paths: Vec<String>,
    pub approver: Option<String>,
    pub from: Option<PathBuf>,
    /// Ask on the terminal when approval is required and `--yes` is absent.
    pub confirm: Option<Confirm>,
    /// Called after each applied patch (progress bars).
    pub progress: Option<Progress>,
}

/// A change the host made since the agent saw the file.
#[derive(Clone, Debug, Serialize)]
pub struct Conflict {
    pub path: String,
    pub expected: String,
    pub found: String,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    pub applied: Vec<(String, Op)>,
    /// Already in place on the host (an earlier partial commit, say).
    pub skipped: Vec<String>,
    pub dry_run: bool,
    pub complete: bool,
}

/// Refuses to commit while the view is mounted: a write racing the commit
/// could be lost or half-committed. Unmounting first is the approver's step.
pub fn ensure_unmounted(state: &StateDir, grant: &Grant) -> Result<()> {
    if let Some(rec) = state.live_mount(&grant.grant_id) {
        if crate::mount::mountinfo::mount_at(&rec.mountpoint).is_some_and(|m| m.is_wopfs()) {
            return Err(Error::invalid(format!(
                "grant {} is mounted at {}; unmount it first (wopfs umount {}) so no write races the commit",
                grant.grant_id,
                rec.mountpoint.display(),
                rec.mountpoint.display()
            )));
        }
    }
    Ok(())
}

/// The patch set to commit: `--from`, or the session's own, staged in the
/// session directory.
fn patch_set(state: &StateDir, grant: &Grant, from: Option<&Path>) -> Result<Loaded> {
    if let Some(p) = from {
        return set::load(p);
    }
    let staging = state.session_dir(&grant.grant_id).join("staging");
    let _ = std::fs::remove_dir_all(&staging);
    set::export(
        grant,
        &state.session_dir(&grant.grant_id),
        &staging,
        false,
        |_| {},
    )?;
    set::load(&staging)
}

/// Sorts each patch: to apply, already applied, or in conflict. A host
/// path that cannot be reached beneath the root without a symlink is an
/// error: nothing is decided about it.
fn check(
    host: &HostRoot,
    patches: &[&WorkspacePatch],
) -> Result<(Vec<usize>, Vec<String>, Vec<Conflict>)> {
    let (mut todo, mut skipped, mut conflicts) = (Vec::new(), Vec::new(), Vec::new());
    let deleted: std::collections::BTreeSet<&str> = patches
        .iter()
        .filter(|p| p.operation == Op::Delete)
        .map(|p| p.path.as_str())
        .collect();
    for (i, p) in patches.iter().enumerate() {
        let now_s = match host.lstat(&p.path) {
            Ok(st) => {
                let kind = match st.st_mode & libc::S_IFMT {
                    libc::S_IFLNK => Some(Kind::Symlink),
                    libc::S_IFREG => Some(Kind::File),
                    _ => None,
                };
                match kind.map(|k| set::host_hash(host, &p.path, k)) {
                    Some(Ok(h)) => h,
                    Some(Err(e)) => format!("unreadable ({e})"),
                    None => "a directory or special file".to_string(),
                }
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => "absent".to_string(),
            // Beneath a file this set deletes: a directory takes its place.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOTDIR)
                    && crate::paths::ancestors(&p.path).any(|a| deleted.contains(a)) =>
            {
                "absent".to_string()
            }
            Err(e) => {
                return Err(Error::invalid(format!(
                    "host path {} cannot be reached beneath the root without following a symlink ({e}); nothing was written",
                    p.path
                )))
            }
        };
        let exists = now_s != "absent";
        let base = p.base.clone().unwrap_or_else(|| "absent".into());
        let new = p.blob.clone().unwrap_or_else(|| "absent".into());
        let conflict = |expected: String| Conflict {
            path: p.path.clone(),
            expected,
            found: now_s.clone(),
        };
        match p.operation {
            Op::Create if !exists => todo.push(i),
            Op::Create if now_s == new => skipped.push(p.path.clone()),
            Op::Create => conflicts.push(conflict("absent".into())),
            Op::Update if now_s == base => todo.push(i),
            Op::Update if now_s == new => skipped.push(p.path.clone()),
            Op::Update => conflicts.push(conflict(base)),
            Op::Delete if now_s == base => todo.push(i),
            Op::Delete if !exists => skipped.push(p.path.clone()),
            Op::Delete => conflicts.push(conflict(base)),
        }
    }
    Ok((todo, skipped, conflicts))
}

/// `wopfs commit`.
pub fn commit(state: &StateDir, grant: &Grant, mut opts: CommitOptions) -> Result<Outcome> {
    let audit = Audit::new(state.path());
    let session_dir = state.session_dir(&grant.grant_id);
    let approver = opts
        .approver
        .clone()
        .unwrap_or_else(crate::audit::current_actor);
    SessionState::load(&session_dir)?.check_not_ended(&grant.grant_id, "commit")?;
    ensure_unmounted(state, grant)?;
    let host = HostRoot::open(&grant.root).ctx(|| format!("host tree {}", grant.root.display()))?;
    if let Some(phase) = apply::recover(&session_dir, &host)? {
        audit.append(
            "wopfs.patch.recover",
            Some(&grant.grant_id),
            &approver,
            Event::Complete,
            &format!("{phase:?}"),
            json!({}),
        )?;
    }

    let loaded = patch_set(state, grant, opts.from.as_deref())?;
    loaded.validate(grant)?;
    if loaded.set.patches.is_empty() {
        return Err(Error::invalid(format!(
            "grant {} has no pending changes; nothing to commit",
            grant.grant_id
        )));
    }
    let mut chosen: Vec<&WorkspacePatch> = loaded.set.patches.iter().collect();
    if !opts.paths.is_empty() {
        for want in &opts.paths {
            let want = want.trim_end_matches('/');
            if !chosen
                .iter()
                .any(|p| p.path == want || crate::paths::ancestors(&p.path).any(|a| a == want))
            {
                return Err(Error::invalid(format!(
                    "--path {want}: no pending change there"
                )));
            }
        }
        chosen.retain(|p| {
            opts.paths.iter().any(|w| {
                let w = w.trim_end_matches('/');
                p.path == w || crate::paths::ancestors(&p.path).any(|a| a == w)
            })
        });
    }
    let whole = chosen.len() == loaded.set.patches.len() && opts.from.is_none();
    let (todo, skipped, conflicts) = check(&host, &chosen)?;
    let details = json!({"patches": chosen.len(), "from": opts.from, "paths": opts.paths});
    if !conflicts.is_empty() {
        audit.append(
            "wopfs.patch.commit",
            Some(&grant.grant_id),
            &approver,
            Event::Failure,
            "conflict",
            json!({"conflicts": conflicts}),
        )?;
        let list: Vec<String> = conflicts
            .iter()
            .map(|c| format!("{} (expected {}, found {})", c.path, c.expected, c.found))
            .collect();
        return Err(Error::policy(format!(
            "{} path{} changed on the host since the agent saw {}; nothing was written: {}",
            conflicts.len(),
            if conflicts.len() == 1 { "" } else { "s" },
            if conflicts.len() == 1 { "it" } else { "them" },
            list.join("; ")
        )));
    }
    let todo: Vec<&WorkspacePatch> = todo.into_iter().map(|i| chosen[i]).collect();
    let mut outcome = Outcome {
        applied: todo.iter().map(|p| (p.path.clone(), p.operation)).collect(),
        skipped,
        dry_run: opts.dry_run,
        complete: whole,
    };
    if opts.dry_run {
        apply::missing_dirs(&host, &todo)?;
        return Ok(outcome);
    }
    if grant.requires_human_approval && !opts.yes {
        let summary = format!(
            "{} change{} to {}",
            todo.len(),
            if todo.len() == 1 { "" } else { "s" },
            grant.root.display()
        );
        let ok = opts.confirm.as_ref().is_some_and(|ask| ask(&summary));
        if !ok {
            return Err(Error::policy(format!(
                "grant {} requires human approval: run on a terminal to confirm, or pass --yes (recorded with --approver)",
                grant.grant_id
            )));
        }
    }

    audit.append(
        "wopfs.patch.commit",
        Some(&grant.grant_id),
        &approver,
        Event::Start,
        "running",
        details,
    )?;
    let total = todo.len();
    let mut n = 0;
    let mut progress = opts.progress.take();
    let result = apply::apply(&session_dir, &host, &loaded, &todo, |p| {
        n += 1;
        if let Some(f) = progress.as_mut() {
            f(p);
        }
        if total >= 1000 && n % 1000 == 0 {
            let _ = audit.append(
                "wopfs.patch.commit",
                Some(&grant.grant_id),
                &approver,
                Event::Progress,
                "running",
                json!({"applied": n, "of": total}),
            );
        }
    });
    if let Err(e) = result {
        // Whatever was half done is rolled back now.
        let rolled = apply::recover(&session_dir, &host);
        audit.append(
            "wopfs.patch.commit",
            Some(&grant.grant_id),
            &approver,
            Event::Failure,
            "error",
            json!({"error": e.to_string(), "rolled_back": rolled.is_ok()}),
        )?;
        return Err(e);
    }
    if opts.from.is_none() {
        rebase::after_commit(state, grant, &outcome.applied, whole)?;
    }
    if whole {
        session::set_phase(&session_dir, Phase::Committed, None, Some(approver.clone()))?;
    }
    audit.append(
        "wopfs.patch.commit",
        Some(&grant.grant_id),
        &approver,
        Event::Complete,
        "committed",
        json!({"applied": outcome.applied.len(), "skipped": outcome.skipped.len(), "whole": whole}),
    )?;
    outcome.dry_run = false;
    Ok(outcome)
}

/// `wopfs reject`: discards the overlay, keeps the record and the reason.
pub fn reject(state: &StateDir, grant: &Grant, reason: &str) -> Result<()> {
    let session_dir = state.session_dir(&grant.grant_id);
    SessionState::load(&session_dir)?.check_not_ended(&grant.grant_id, "reject")?;
    if reason.trim().is_empty() {
        return Err(Error::invalid(
            "--reason must say why the changes are rejected",
        ));
    }
    ensure_unmounted(state, grant)?;
    let actor = crate::audit::current_actor();
    let _ = std::fs::remove_dir_all(session_dir.join("overlay"));
    let _ = std::fs::remove_dir_all(session_dir.join("staging"));
    session::set_phase(
        &session_dir,
        Phase::Rejected,
        Some(reason.to_string()),
        Some(actor.clone()),
    )?;
    Audit::new(state.path()).append(
        "wopfs.patch.reject",
        Some(&grant.grant_id),
        &actor,
        Event::Complete,
        "rejected",
        json!({"reason": reason}),
    )
}

/// `wopfs recover`: completes or rolls back an interrupted commit.
pub fn recover(state: &StateDir, grant: &Grant) -> Result<Option<apply::Phase>> {
    let host = HostRoot::open(&grant.root).ctx(|| format!("host tree {}", grant.root.display()))?;
    let done = apply::recover(&state.session_dir(&grant.grant_id), &host)?;
    if let Some(phase) = done {
        Audit::new(state.path()).append(
            "wopfs.patch.recover",
            Some(&grant.grant_id),
            &crate::audit::current_actor(),
            Event::Complete,
            match phase {
                apply::Phase::Done => "completed",
                apply::Phase::Prepared => "rolled back",
            },
            json!({}),
        )?;
    }
    Ok(done)
}
