//! `wopfs status`

use serde::Serialize;

use crate::error::Result;
use crate::patch::{self, Pending};
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this grant, with its pending changes path by path.
    #[arg(value_name = "GRANT")]
    grant: Option<String>,
    /// Print the grants as a JSON array (with a GRANT, its pending changes too).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Row {
    grant_id: String,
    mode: String,
    purpose: String,
    root: String,
    files: usize,
    total_size_bytes: u64,
    expires_at: Option<String>,
    expired: bool,
    /// open, pending, committed, rejected, revoked (`wopfs revoke`: kept
    /// for review until rejected), or commit-interrupted (an interrupted
    /// commit waits for `wopfs recover`).
    phase: String,
    mounted: bool,
    mountpoint: Option<String>,
    pid: Option<u32>,
    /// The engine of a read_write_overlay view: fuse or kernel (`None`
    /// for other modes, and for a session never mounted).
    engine: Option<&'static str>,
    /// Kernel engine overlays of this grant still mounted with no daemon
    /// serving their lower (`wopfs umount` removes them).
    half_dead: Vec<String>,
    pending_summary: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pending: Option<Vec<Pending>>,
    /// Why the pending changes could not be read (an overlay holding what
    /// no patch set can carry, a layer in use): one session's trouble is
    /// shown on its row, never hides the others.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

pub fn run(state: &StateDir, a: &Args) -> Result<()> {
    let ids = match &a.grant {
        Some(g) => vec![g.clone()],
        None => state.grant_ids()?,
    };
    let mut rows = Vec::new();
    for id in ids {
        let g = state.load_grant(&id)?;
        let mount = state
            .live_mount(&id)
            .filter(|m| crate::mountinfo::mount_at(&m.mountpoint).is_some_and(|e| e.is_wopfs()));
        let session = state.session_dir(&id);
        let engine = match mount.as_ref().and_then(|m| m.engine) {
            Some(e) => Some(e),
            None => crate::overlay::engine::record(&session)?.map(|r| r.engine),
        };
        let half_dead: Vec<String> = if mount.is_some() {
            Vec::new()
        } else {
            crate::mount::kernel::overlays_of(&id)
                .into_iter()
                .map(|p| p.display().to_string())
                .collect()
        };
        let revoked = state.revocation(&id).ok().flatten().is_some();
        let phase = if crate::session::commit_journal_path(&session).exists() {
            "commit-interrupted".to_string()
        } else {
            let p = crate::session::SessionState::load(&session)?.phase;
            serde_json::to_value(p)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        };
        // A revoked grant's session stays for review: its phase says so
        // until it is rejected (or committed before the revocation).
        let phase = if revoked && (phase == "open" || phase == "pending") {
            "revoked".to_string()
        } else {
            phase
        };
        let (pending, error) = if phase == "commit-interrupted" {
            (Vec::new(), None)
        } else {
            match patch::pending(&g, &session) {
                Ok(p) => (p, None),
                // Asked for this grant alone, the error is the answer.
                Err(e) if a.grant.is_some() && !a.json => return Err(e),
                Err(e) => (Vec::new(), Some(e.to_string())),
            }
        };
        rows.push(Row {
            phase,
            expired: g.is_expired(&crate::clock::SystemClock)?,
            grant_id: g.grant_id,
            mode: g.mode.to_string(),
            purpose: g.purpose,
            root: g.root.display().to_string(),
            files: g.files.len(),
            total_size_bytes: g.total_size_bytes,
            expires_at: g.expires_at,
            mounted: mount.is_some(),
            mountpoint: mount.as_ref().map(|m| m.mountpoint.display().to_string()),
            pid: mount.map(|m| m.pid),
            engine: engine.map(crate::overlay::engine::Engine::name),
            half_dead,
            pending_summary: match &error {
                Some(_) => "unreadable (see error)".to_string(),
                None => patch::summary(&pending),
            },
            pending: a.grant.is_some().then_some(pending),
            error,
        });
    }
    if a.json {
        return super::print_json(&rows);
    }
    if rows.is_empty() {
        outln!("no grants")?;
        return Ok(());
    }
    let mounted: Vec<&str> = rows
        .iter()
        .map(|r| r.mountpoint.as_deref().unwrap_or("-"))
        .collect();
    let w = mounted
        .iter()
        .map(|m| m.len())
        .max()
        .unwrap_or(0)
        .max("MOUNTED AT".len());
    outln!(
        "{:<18}  {:<18}  {:<6}  {:<18}  {:>7}  {:<20}  {:<w$}  PURPOSE",
        "GRANT",
        "MODE",
        "ENGINE",
        "STATE",
        "FILES",
        "EXPIRES",
        "MOUNTED AT"
    )?;
    for (r, mp) in rows.iter().zip(mounted) {
        let expires = match (&r.expires_at, r.expired) {
            (_, true) => "expired",
            (Some(t), false) => t.as_str(),
            (None, false) => "never",
        };
        outln!(
            "{:<18}  {:<18}  {:<6}  {:<18}  {:>7}  {:<20}  {:<w$}  {}",
            r.grant_id,
            r.mode,
            r.engine.unwrap_or("-"),
            r.phase,
            r.files,
            expires,
            mp,
            r.purpose
        )?;
    }
    for r in &rows {
        if let Some(e) = &r.error {
            outln!(
                "\ngrant {}: its pending changes cannot be read: {e}",
                r.grant_id
            )?;
        }
        for mp in &r.half_dead {
            outln!(
                "\ngrant {}: its kernel overlay at {mp} is still mounted but no daemon serves it (half-dead); wopfs umount {mp} removes it",
                r.grant_id
            )?;
        }
    }
    if let [r] = &rows[..] {
        if r.phase == "commit-interrupted" {
            outln!(
                "\na commit of this grant was interrupted: run wopfs recover {} (the host is exactly before or after it)",
                r.grant_id
            )?;
        }
        if let Some(p) = &r.pending {
            outln!("\npending changes: {}", r.pending_summary)?;
            for c in p {
                let sign = match c.op {
                    patch::Op::Create => '+',
                    patch::Op::Update => '~',
                    patch::Op::Delete => '-',
                };
                outln!("  {sign} {}  ({})", c.path, patch::human_bytes(c.size))?;
            }
        }
    }
    Ok(())
}
