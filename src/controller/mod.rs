//! The approval controller: commit, reject, recover. The one code path
//! that writes the host tree (`apply.rs`), run by an approver outside the
//! sandbox.

pub mod apply;
pub mod checkpoint;
pub mod git_branch;
mod rebase;
mod symlinks;

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
use crate::tree::Kind;

/// Asks the approver on a terminal; gets the summary of what is approved.
pub type Confirm = Box<dyn Fn(&str) -> bool>;
/// Called after each applied patch with (applied so far, total).
pub type Progress = Box<dyn FnMut(usize, usize)>;

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
    /// What updates kept of the files they replaced (owner, xattrs).
    pub kept: Vec<apply::Kept>,
    /// The commit's id in the journal and the audit log.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commit: Option<String>,
}

/// Refuses to commit while the view is mounted: a write racing the commit
/// could be lost or half-committed. Unmounting first is the approver's step.
pub fn ensure_unmounted(state: &StateDir, grant: &Grant) -> Result<()> {
    if let Some(rec) = state.live_mount(&grant.grant_id) {
        if crate::mountinfo::mount_at(&rec.mountpoint).is_some_and(|m| m.is_wopfs()) {
            if rec.run {
                // Its mountpoint is the run's own: unmounting it would pull
                // the view out from under the command.
                return Err(Error::invalid(format!(
                    "grant {} is served by wopfs run (pid {}); wait for the run to end so no write races the commit",
                    grant.grant_id, rec.pid
                )));
            }
            return Err(Error::invalid(format!(
                "grant {} is mounted at {}; unmount it first (wopfs umount {}) so no write races the commit",
                grant.grant_id,
                rec.mountpoint.display(),
                rec.mountpoint.display()
            )));
        }
    }
    // A kernel engine overlay whose daemon died with its guard still
    // takes writes into the upper layer.
    if let Some(mp) = crate::mount::kernel::overlays_of(&grant.grant_id).first() {
        return Err(Error::invalid(format!(
            "grant {}'s kernel overlay at {} is still mounted with no daemon (half-dead), and still takes writes; remove it first (wopfs umount {}) so no write races the commit",
            grant.grant_id,
            mp.display(),
            mp.display()
        )));
    }
    Ok(())
}

/// The patch set to commit: `--from`, or the session's own, built in
/// memory (no export is written; contents are checked again as applied).
fn patch_set(state: &StateDir, grant: &Grant, from: Option<&Path>) -> Result<Loaded> {
    match from {
        Some(p) => set::load(p),
        None => Loaded::from_session(grant, &state.session_dir(&grant.grant_id)),
    }
}

/// Sorts each patch: to apply, already applied, or in conflict. A host
/// path that cannot be reached beneath the root without a symlink is an
/// error: nothing is decided about it. Host files are hashed in parallel.
/// A hard link is already applied only when its file is, and the host
/// path is already that file (the same inode): the same bytes in another
/// file are not the link the set makes.
fn check(
    host: &HostRoot,
    patches: &[&WorkspacePatch],
) -> Result<(Vec<usize>, Vec<String>, Vec<Conflict>)> {
    use rayon::prelude::*;
    let (mut todo, mut skipped, mut conflicts) = (Vec::new(), Vec::new(), Vec::new());
    let deleted: std::collections::BTreeSet<&str> = patches
        .iter()
        .filter(|p| p.operation == Op::Delete)
        .map(|p| p.path.as_str())
        .collect();
    let now: Vec<Result<String>> = patches
        .par_iter()
        .map(|p| match host.lstat(&p.path) {
            Ok(st) => {
                let kind = match st.st_mode & libc::S_IFMT {
                    libc::S_IFLNK => Some(Kind::Symlink),
                    libc::S_IFREG => Some(Kind::File),
                    libc::S_IFDIR => return Ok(DIRECTORY.to_string()),
                    _ => None,
                };
                Ok(match kind.map(|k| (k, set::host_hash(host, &p.path, k))) {
                    // Kinds are compared too: a file holding a new
                    // symlink's target text is not that symlink.
                    Some((Kind::Symlink, Ok(h))) => format!("symlink {h}"),
                    Some((_, Ok(h))) => h,
                    Some((_, Err(e))) => format!("unreadable ({e})"),
                    None => "a special file".to_string(),
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok("absent".to_string()),
            // Beneath a file this set deletes: a directory takes its place.
            Err(e)
                if e.raw_os_error() == Some(libc::ENOTDIR)
                    && crate::paths::ancestors(&p.path).any(|a| deleted.contains(a)) =>
            {
                Ok("absent".to_string())
            }
            Err(e) => Err(Error::invalid(format!(
                "host path {} cannot be reached beneath the root without following a symlink ({e}); nothing was written",
                p.path
            ))),
        })
        .collect();
    for (i, (p, now_s)) in patches.iter().zip(now).enumerate() {
        let now_s = now_s?;
        let exists = now_s != "absent";
        let new = match (&p.blob, p.is_symlink()) {
            (Some(b), false) => b.clone(),
            (Some(b), true) => format!("symlink {b}"),
            (None, _) => "absent".into(),
        };
        // The base's kind is not recorded: a base matches either kind.
        let base = p.base.clone().unwrap_or_else(|| "absent".into());
        let now_s = match now_s.strip_prefix("symlink ") {
            Some(h) if h == base => h.to_string(),
            _ => now_s,
        };
        let conflict = |expected: String| Conflict {
            path: p.path.clone(),
            expected,
            found: now_s.clone(),
        };
        let known = p.base.is_some();
        match p.operation {
            // An unknown base (the host changed after the agent's copy):
            // never written over, only found already so.
            Op::Update if !known && now_s == new => skipped.push(p.path.clone()),
            Op::Delete if !known && !exists => skipped.push(p.path.clone()),
            Op::Update | Op::Delete if !known => conflicts.push(conflict(UNKNOWN_BASE.into())),
            Op::Create if !exists => todo.push(i),
            // A directory the set empties becomes this file (the apply
            // refuses if the directory holds anything else).
            Op::Create if now_s == DIRECTORY => todo.push(i),
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
    let done: std::collections::BTreeSet<String> = skipped.iter().cloned().collect();
    for p in patches {
        let Some(t) = p.link.as_deref() else { continue };
        if !done.contains(&p.path) || (done.contains(t) && same_file(host, &p.path, t)) {
            continue;
        }
        skipped.retain(|s| *s != p.path);
        conflicts.push(Conflict {
            path: p.path.clone(),
            expected: p.base.clone().unwrap_or_else(|| "absent".into()),
            found: format!("the same content, but not as the hard link to {t} the set makes"),
        });
    }
    Ok((todo, skipped, conflicts))
}

/// Whether two host paths are one regular file (hard links of each other).
fn same_file(host: &HostRoot, a: &str, b: &str) -> bool {
    match (host.lstat(a), host.lstat(b)) {
        (Ok(x), Ok(y)) => {
            x.st_mode & libc::S_IFMT == libc::S_IFREG
                && (x.st_dev, x.st_ino) == (y.st_dev, y.st_ino)
        }
        _ => false,
    }
}

const DIRECTORY: &str = "a directory";

/// What a conflict expects when the session never knew the base.
const UNKNOWN_BASE: &str =
    "the content the agent saw, which is unknown (the host changed it after the agent's copy was made)";

/// What the journal carries for the steps after the commit point.
#[derive(serde::Serialize, serde::Deserialize)]
struct After {
    approver: String,
    whole: bool,
    from: bool,
    applied: usize,
    skipped: usize,
}

/// Whether the audit log already closes commit `id` (a recovery must not
/// close it twice).
fn audit_closed(audit: &Audit, grant_id: &str, id: &str) -> bool {
    audit_has(audit, grant_id, id, |e| {
        matches!(e, Event::Complete | Event::Failure)
    })
}

/// Whether the audit log holds a commit `id` event of this kind.
fn audit_has(audit: &Audit, grant_id: &str, id: &str, kind: impl Fn(Event) -> bool) -> bool {
    audit.records(Some(grant_id)).is_ok_and(|recs| {
        recs.iter().any(|r| {
            r.operation_type == "wopfs.patch.commit"
                && kind(r.event)
                && r.details.get("commit").and_then(|c| c.as_str()) == Some(id)
        })
    })
}

/// Everything after the commit point, each step safe to repeat: old
/// contents removed, the session rebased, its phase, the audit event, and
/// last the journal itself.
fn finish(
    state: &StateDir,
    grant_id: &str,
    host: &HostRoot,
    j: &apply::Journal,
    recovered: bool,
) -> Result<()> {
    let session_dir = state.session_dir(grant_id);
    let after: After = serde_json::from_value(j.after.clone())
        .map_err(|e| Error::invalid(format!("the commit journal is damaged: {e}")))?;
    apply::remove_leftovers(host, j);
    apply::fault_point()?;
    if !after.from {
        rebase::install(state, grant_id)?;
        apply::fault_point()?;
    }
    if after.whole {
        session::set_phase(
            &session_dir,
            Phase::Committed,
            None,
            Some(after.approver.clone()),
        )?;
        apply::fault_point()?;
    }
    let audit = Audit::new(state.path());
    // Only a recovery can find the operation closed already.
    if !(recovered && audit_closed(&audit, grant_id, &j.id)) {
        audit.append(
            "wopfs.patch.commit",
            Some(grant_id),
            &after.approver,
            Event::Complete,
            "committed",
            json!({"commit": j.id, "applied": after.applied, "skipped": after.skipped,
                   "whole": after.whole, "recovered": recovered}),
        )?;
        apply::fault_point()?;
    }
    std::fs::remove_file(apply::journal_path(&session_dir)).ctx(|| "removing the commit journal")
}

/// The files a rollback put back, each with the base the commit found
/// there, where the host holds exactly that now (what may be vouched for).
fn restored_bases(host: &HostRoot, steps: &[apply::Step]) -> Vec<(String, String)> {
    steps
        .iter()
        .filter(|s| s.op != crate::patch::Op::Create)
        .filter_map(|s| Some((s.path.as_str(), s.base.as_deref()?)))
        .filter(|(p, base)| {
            let kind = match host.lstat(p).map(|st| st.st_mode & libc::S_IFMT) {
                Ok(libc::S_IFREG) => Kind::File,
                Ok(libc::S_IFLNK) => Kind::Symlink,
                _ => return false,
            };
            crate::patch::set::host_hash(host, p, kind).is_ok_and(|h| h == *base)
        })
        .map(|(p, base)| (p.to_string(), base.to_string()))
        .collect()
}

/// Undoes a commit that did not reach its commit point, closes it in the
/// audit log, and removes its journal. Returns what could not be put back
/// because the host changed meanwhile (named, never overwritten).
fn undo(
    state: &StateDir,
    grant_id: &str,
    host: &HostRoot,
    j: &apply::Journal,
    why: serde_json::Value,
) -> Result<()> {
    let session_dir = state.session_dir(grant_id);
    let rolled = apply::roll_back(host, j);
    if rolled.is_ok() {
        // The kernel engine reads bases from ctimes, which putting files
        // back changed: vouch for what was put back.
        let restored = restored_bases(host, &j.steps);
        if let Err(e) = crate::overlay::kernel::vouch_restored(&session_dir, host, &restored) {
            tracing::warn!(error = %e, "cannot record the bases the rollback put back");
        }
    }
    rebase::discard(state, grant_id);
    let approver = serde_json::from_value::<After>(j.after.clone())
        .map(|a| a.approver)
        .unwrap_or_else(|_| crate::audit::current_actor());
    let audit = Audit::new(state.path());
    // A commit killed before its start reached the log left only its
    // first journal: nothing was written, and there is nothing to close.
    let started = audit_has(&audit, grant_id, &j.id, |e| e == Event::Start);
    if started && !audit_closed(&audit, grant_id, &j.id) {
        let mut details = why;
        details["commit"] = json!(j.id);
        details["rolled_back"] = json!(rolled.is_ok());
        if let Err(e) = &rolled {
            details["rollback_error"] = json!(e.to_string());
        }
        audit.append(
            "wopfs.patch.commit",
            Some(grant_id),
            &approver,
            Event::Failure,
            "rolled back",
            details,
        )?;
    }
    rolled?;
    std::fs::remove_file(apply::journal_path(&session_dir)).ctx(|| "removing the commit journal")
}

/// Finishes or rolls back an interrupted commit; the caller holds the
/// session lock.
fn recover_locked(
    state: &StateDir,
    grant: &Grant,
    host: &HostRoot,
) -> Result<Option<apply::Phase>> {
    let session_dir = state.session_dir(&grant.grant_id);
    let Some(j) = apply::load(&session_dir)? else {
        rebase::discard(state, &grant.grant_id);
        return Ok(None);
    };
    match j.phase {
        apply::Phase::Done => {
            finish(state, &grant.grant_id, host, &j, true)?;
            // A kernel session's layer, maybe left mounted by the killed
            // commit, goes once the whole commit is finished.
            let session_dir = state.session_dir(&grant.grant_id);
            if SessionState::load(&session_dir)?.phase == Phase::Committed {
                if let Err(e) = crate::overlay::engine::discard_layer(&session_dir) {
                    tracing::warn!(grant = %grant.grant_id, error = %e, "cannot remove the committed layer");
                }
            }
        }
        apply::Phase::Prepared => undo(
            state,
            &grant.grant_id,
            host,
            &j,
            json!({"error": "interrupted", "recovered": true}),
        )?,
    }
    Ok(Some(j.phase))
}

/// `wopfs commit`.
/// What every commit (to the working tree or onto a git branch) starts
/// with: the grant not revoked (a revoked session is kept for review,
/// never applied; `wopfs recover` still finishes an interrupted commit),
/// the view unmounted, the session locked, an interrupted commit finished
/// or undone (it may have ended the session), and the set loaded,
/// validated and not empty.
fn open_for_commit(
    state: &StateDir,
    grant: &Grant,
    from: Option<&Path>,
) -> Result<(session::SessionLock, HostRoot, Loaded)> {
    let session_dir = state.session_dir(&grant.grant_id);
    state.check_not_revoked(&grant.grant_id, "commit")?;
    ensure_unmounted(state, grant)?;
    let lock = session::lock(&session_dir, true, &grant.grant_id)?;
    let host = HostRoot::open(&grant.root).ctx(|| format!("host tree {}", grant.root.display()))?;
    recover_locked(state, grant, &host)?;
    SessionState::load(&session_dir)?.check_not_ended(&grant.grant_id, "commit")?;
    let loaded = patch_set(state, grant, from)?;
    loaded.validate(grant)?;
    symlinks::check(grant, &loaded)?;
    if loaded.set.patches.is_empty() {
        return Err(Error::invalid(format!(
            "grant {} has no pending changes; nothing to commit",
            grant.grant_id
        )));
    }
    Ok((lock, host, loaded))
}

pub fn commit(state: &StateDir, grant: &Grant, mut opts: CommitOptions) -> Result<Outcome> {
    let audit = Audit::new(state.path());
    let session_dir = state.session_dir(&grant.grant_id);
    let approver = opts
        .approver
        .clone()
        .unwrap_or_else(crate::audit::current_actor);
    let (_lock, host, loaded) = open_for_commit(state, grant, opts.from.as_deref())?;
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
        crate::patch::links::check_whole(&loaded.set.patches, &chosen)?;
    }
    let whole = chosen.len() == loaded.set.patches.len() && opts.from.is_none();
    let (todo, skipped, conflicts) = check(&host, &chosen)?;
    if !conflicts.is_empty() {
        return Err(refuse_conflicts(&audit, grant, &approver, &conflicts));
    }
    // What the host holds after the commit: applied and already-so paths.
    let settled: Vec<&WorkspacePatch> = chosen
        .iter()
        .copied()
        .filter(|p| !conflicts.iter().any(|c| c.path == p.path))
        .collect();
    let todo: Vec<&WorkspacePatch> = todo.into_iter().map(|i| chosen[i]).collect();
    let mut outcome = Outcome {
        applied: todo.iter().map(|p| (p.path.clone(), p.operation)).collect(),
        skipped,
        dry_run: opts.dry_run,
        complete: whole,
        kept: Vec::new(),
        commit: None,
    };
    if opts.dry_run {
        apply::preview(&host, &todo)?;
        return Ok(outcome);
    }
    if grant.requires_human_approval && !opts.yes {
        // The approver sees exactly what is approved: the stat of the
        // chosen paths, then every type change, symlink and mode change.
        let chosen_paths: std::collections::BTreeSet<&str> =
            chosen.iter().map(|p| p.path.as_str()).collect();
        let diffs: Vec<_> = crate::patch::diff::file_diffs(&loaded, &host)?
            .into_iter()
            .filter(|d| chosen_paths.contains(d.path.as_str()))
            .collect();
        let summary = format!(
            "{}\n{}\nApply {} change{} to {}?",
            crate::patch::diff::stat(&diffs).trim_end(),
            crate::patch::diff::approval_summary(&diffs).trim_end(),
            todo.len(),
            if todo.len() == 1 { "" } else { "s" },
            grant.root.display()
        );
        let ok = opts.confirm.as_ref().is_some_and(|ask| ask(&summary));
        if !ok {
            return Err(Error::policy(format!(
                "grant {} requires human approval, and the commit was not approved; nothing was written (off a terminal, pass --yes, recorded with --approver)",
                grant.grant_id
            )));
        }
    }

    if opts.from.is_none() {
        rebase::prepare(state, grant, &settled, whole)?;
    }
    let id = apply::new_id()?;
    outcome.commit = Some(id.clone());
    let after = After {
        approver: approver.clone(),
        whole,
        from: opts.from.is_some(),
        applied: todo.len(),
        skipped: outcome.skipped.len(),
    };
    let after = serde_json::to_value(&after).map_err(|e| Error::invalid(e.to_string()))?;
    // The journal exists before the start is logged, so whatever stops the
    // commit from here on (an error, a kill) is closed in the audit log by
    // the rollback or the recovery that finds it.
    apply::save(&session_dir, &apply::Journal::begin(&id, after.clone()))?;
    audit.append(
        "wopfs.patch.commit",
        Some(&grant.grant_id),
        &approver,
        Event::Start,
        "running",
        json!({"commit": id, "patches": chosen.len(), "from": opts.from, "paths": opts.paths}),
    )?;
    let total = todo.len();
    let mut n = 0;
    let mut progress = opts.progress.take();
    let result = apply::apply(&session_dir, &host, &loaded, &todo, &id, after, |p| {
        n += 1;
        let _ = p;
        if let Some(f) = progress.as_mut() {
            f(n, total);
        }
        if total >= 1000 && n % 1000 == 0 {
            let _ = audit.append(
                "wopfs.patch.commit",
                Some(&grant.grant_id),
                &approver,
                Event::Progress,
                "running",
                json!({"commit": id, "applied": n, "of": total}),
            );
        }
    });
    match result {
        Ok(kept) => outcome.kept = kept,
        Err(failure) => {
            let (err, why) = match failure {
                apply::Failure::Conflict(c) => {
                    let why = json!({"error": "conflict", "conflicts": [&c]});
                    (conflict_error(std::slice::from_ref(&c)), why)
                }
                apply::Failure::Error(e) => {
                    let why = json!({"error": e.to_string()});
                    (e, why)
                }
            };
            // Whatever was half done is rolled back now.
            match apply::load(&session_dir)? {
                Some(j) => undo(state, &grant.grant_id, &host, &j, why)?,
                None => rebase::discard(state, &grant.grant_id),
            }
            return Err(err);
        }
    }
    let journal = apply::load(&session_dir)?
        .ok_or_else(|| Error::invalid("the commit journal vanished after the commit point"))?;
    finish(state, &grant.grant_id, &host, &journal, false)?;
    outcome.dry_run = false;
    // A kernel session committed whole has no more use for its layer; the
    // set (which may hold the layer mounted to read it) goes first.
    drop(loaded);
    if SessionState::load(&session_dir)?.phase == Phase::Committed {
        if let Err(e) = crate::overlay::engine::discard_layer(&session_dir) {
            tracing::warn!(grant = %grant.grant_id, error = %e, "cannot remove the committed layer");
        }
    }
    Ok(outcome)
}

fn conflict_error(conflicts: &[Conflict]) -> Error {
    let list: Vec<String> = conflicts
        .iter()
        .map(|c| format!("{} (expected {}, found {})", c.path, c.expected, c.found))
        .collect();
    Error::conflict(format!(
        "{} path{} changed on the host since the agent saw {}; nothing was written: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        if conflicts.len() == 1 { "it" } else { "them" },
        list.join("; ")
    ))
}

fn refuse_conflicts(audit: &Audit, grant: &Grant, approver: &str, conflicts: &[Conflict]) -> Error {
    if let Err(e) = audit.append(
        "wopfs.patch.commit",
        Some(&grant.grant_id),
        approver,
        Event::Failure,
        "conflict",
        json!({"conflicts": conflicts}),
    ) {
        return e;
    }
    conflict_error(conflicts)
}

/// `wopfs reject`: discards the overlay, keeps the record and the reason.
pub fn reject(state: &StateDir, grant: &Grant, reason: &str) -> Result<()> {
    let session_dir = state.session_dir(&grant.grant_id);
    if reason.trim().is_empty() {
        return Err(Error::invalid(
            "--reason must say why the changes are rejected",
        ));
    }
    ensure_unmounted(state, grant)?;
    let _lock = session::lock(&session_dir, true, &grant.grant_id)?;
    let host = HostRoot::open(&grant.root).ctx(|| format!("host tree {}", grant.root.display()))?;
    recover_locked(state, grant, &host)?;
    SessionState::load(&session_dir)?.check_not_ended(&grant.grant_id, "reject")?;
    let actor = crate::audit::current_actor();
    crate::overlay::engine::discard_layer(&session_dir)?;
    let _ = std::fs::remove_dir_all(session_dir.join("overlay"));
    // Checkpoints are copies of the changes rejected.
    let _ = std::fs::remove_dir_all(session_dir.join("checkpoints"));
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
    let session_dir = state.session_dir(&grant.grant_id);
    let _lock = session::lock(&session_dir, true, &grant.grant_id)?;
    let host = HostRoot::open(&grant.root).ctx(|| format!("host tree {}", grant.root.display()))?;
    recover_locked(state, grant, &host)
}

/// What `wopfs commit --git-branch` asks besides the set.
pub struct BranchOptions {
    pub branch: String,
    pub message: Option<String>,
    pub author: Option<String>,
    pub approver: Option<String>,
    pub from: Option<PathBuf>,
    pub yes: bool,
    pub dry_run: bool,
    pub confirm: Option<Confirm>,
}

/// `wopfs commit --git-branch`: the session's whole set becomes a commit on
/// a branch of the host repository (`git_branch`), never the working tree.
/// The same validation as a commit; the conflict check is against the
/// commit the grant was cut from. Ends the session as a commit does.
pub fn commit_to_git_branch(
    state: &StateDir,
    grant: &Grant,
    opts: BranchOptions,
) -> Result<git_branch::BranchCommit> {
    let session_dir = state.session_dir(&grant.grant_id);
    let approver = opts
        .approver
        .clone()
        .unwrap_or_else(crate::audit::current_actor);
    let (_lock, host, loaded) = open_for_commit(state, grant, opts.from.as_deref())?;
    let origin = grant.git.clone().ok_or_else(|| {
        Error::invalid(format!(
            "grant {}'s root {} was not in a git work tree with a commit when the grant was made; --git-branch needs one (commit to the working tree instead)",
            grant.grant_id,
            grant.root.display()
        ))
    })?;
    let meta = git_branch::Meta {
        grant_id: &grant.grant_id,
        purpose: &grant.purpose,
        reason: &grant.reason,
        approver: &approver,
        author: opts.author.as_deref(),
        message: opts.message.as_deref(),
    };
    // The checks first (a dry run), so the approver is asked only about
    // a commit that can be made.
    let checked =
        git_branch::commit_to_branch(&grant.root, &origin, &opts.branch, &loaded, &meta, true)?;
    if opts.dry_run {
        return Ok(checked);
    }
    if grant.requires_human_approval && !opts.yes {
        let diffs = crate::patch::diff::file_diffs(&loaded, &host)?;
        let summary = format!(
            "{}\n{}\nCommit {} change{} onto branch {} (parent {})?",
            crate::patch::diff::stat(&diffs).trim_end(),
            crate::patch::diff::approval_summary(&diffs).trim_end(),
            loaded.set.patches.len(),
            if loaded.set.patches.len() == 1 {
                ""
            } else {
                "s"
            },
            opts.branch,
            origin.commit
        );
        if !opts.confirm.as_ref().is_some_and(|ask| ask(&summary)) {
            return Err(Error::policy(format!(
                "grant {} requires human approval, and the commit was not approved; nothing was written (off a terminal, pass --yes, recorded with --approver)",
                grant.grant_id
            )));
        }
    }
    let audit = Audit::new(state.path());
    audit.append(
        "wopfs.patch.commit",
        Some(&grant.grant_id),
        &approver,
        Event::Start,
        "committing onto a git branch",
        json!({"git_branch": opts.branch, "parent": origin.commit,
               "patches": loaded.set.patches.len()}),
    )?;
    let made =
        git_branch::commit_to_branch(&grant.root, &origin, &opts.branch, &loaded, &meta, false);
    let made = match made {
        Ok(m) => m,
        Err(e) => {
            audit.append(
                "wopfs.patch.commit",
                Some(&grant.grant_id),
                &approver,
                Event::Failure,
                "not committed onto the git branch",
                json!({"git_branch": opts.branch, "error": e.to_string()}),
            )?;
            return Err(e);
        }
    };
    // The session is done, as after a whole commit: its changes are the
    // branch's now. (The set holds the layer open: let it go first.)
    let applied = loaded.set.patches.len();
    drop(loaded);
    session::set_phase(
        &session_dir,
        Phase::Committed,
        Some(format!(
            "committed onto git branch {} as {}",
            made.branch, made.commit
        )),
        Some(approver.clone()),
    )?;
    if let Err(e) = crate::overlay::engine::discard_layer(&session_dir) {
        tracing::warn!(error = %e, "the committed session's layer stays; wopfs reject or a later commit removes it");
    }
    let _ = std::fs::remove_dir_all(session_dir.join("overlay"));
    audit.append(
        "wopfs.patch.commit",
        Some(&grant.grant_id),
        &approver,
        Event::Complete,
        "committed onto a git branch",
        json!({"git_branch": made.branch, "commit": made.commit, "parent": made.parent,
               "tree": made.tree, "created": made.created, "applied": applied}),
    )?;
    Ok(made)
}

#[cfg(test)]
mod vouch_tests {
    use super::*;
    use crate::overlay::journal::SeenMap;
    use crate::overlay::kernel::{add_vouched, vouch_restored};

    fn step(path: &str, op: crate::patch::Op, base: &str) -> apply::Step {
        apply::Step {
            path: path.into(),
            op,
            tmp: String::new(),
            bak: String::new(),
            blob: None,
            base: Some(base.into()),
            tmp_ino: None,
        }
    }

    #[test]
    fn a_vouched_base_holds_only_while_the_host_file_is_untouched() {
        let d = tempfile::tempdir().unwrap();
        let (host_dir, session) = (d.path().join("host"), d.path().join("s"));
        std::fs::create_dir_all(&host_dir).unwrap();
        std::fs::create_dir_all(crate::overlay::engine::kernel_dir(&session)).unwrap();
        std::fs::write(host_dir.join("f"), "a").unwrap();
        std::fs::write(host_dir.join("g"), "g").unwrap();
        let host = HostRoot::open(&host_dir).unwrap();
        let hash = |b: &[u8]| crate::patch::set::hash_hex(b);
        // g's claimed base is not what the host holds: not vouched for.
        let steps = [
            step("f", crate::patch::Op::Update, &hash(b"a")),
            step("g", crate::patch::Op::Delete, &hash(b"other")),
        ];
        vouch_restored(&session, &host, &restored_bases(&host, &steps)).unwrap();
        let mut seen = SeenMap::new();
        add_vouched(&session, &host, &mut seen);
        assert_eq!(seen.get("f").and_then(|s| s.base.clone()), Some(hash(b"a")));
        assert!(!seen.contains_key("g"));
        // Replaced since (another inode): no longer.
        std::fs::write(host_dir.join("f.new"), "a").unwrap();
        std::fs::rename(host_dir.join("f.new"), host_dir.join("f")).unwrap();
        let mut seen = SeenMap::new();
        add_vouched(&session, &host, &mut seen);
        assert!(seen.is_empty(), "{seen:?}");
    }
}
