//! Live revocation: `wopfs revoke` (and the API) records the revocation in
//! the session dir (`StateDir::record_revocation`); every process serving
//! the grant polls for that record every [`POLL`] and, once it appears,
//! ends the view: the view answers ENOENT to every request
//! (`View::revoke`), the kernel's caches of it are invalidated through FUSE
//! notifications (`fuse::invalidate`), and the kernel engine's overlay is
//! taken down as at expiry (detached, the lower's connection aborted).
//!
//! Why a poll and not a signal to the pid in the mount record: a signal
//! can reach a recycled pid (SIGUSR1's default action kills), cannot reach
//! a daemon of another user (the API server revoking a root mount), and
//! misses a view served by a `wopfs run` or a daemon whose record was lost.
//! A poll costs one `stat` every 200 ms and finds every server of the grant,
//! whoever revoked it.

use std::path::PathBuf;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use crate::audit::{current_actor, Audit, Event};
use crate::error::{IoContext, Result};
use crate::state::{Revocation, StateDir};
use crate::view::View;

/// How often a serving process looks for a revocation.
pub const POLL: Duration = Duration::from_millis(200);

/// What `revoke` did.
#[derive(Debug, serde::Serialize)]
pub struct Revoked {
    #[serde(flatten)]
    pub revocation: Revocation,
    /// Where the grant was mounted when it was revoked, if it was.
    pub mountpoint: Option<PathBuf>,
}

/// Revokes `grant_id` now: recorded (once; a second revoke is a conflict)
/// and audited. A live view of it ends within [`POLL`] plus the time its
/// daemon takes to invalidate the kernel's caches.
pub fn revoke(
    state: &StateDir,
    grant_id: &str,
    reason: Option<&str>,
    actor: &str,
) -> Result<Revoked> {
    let grant = state.load_grant(grant_id)?;
    let revocation = Revocation {
        grant_id: grant.grant_id.clone(),
        revoked_at: crate::grant::rfc3339(std::time::SystemTime::now()),
        actor: actor.to_string(),
        reason: reason.map(str::to_string),
    };
    state.record_revocation(&revocation)?;
    let mountpoint = state.live_mount(grant_id).map(|r| r.mountpoint);
    Audit::new(state.path()).append(
        "wopfs.grant.revoke",
        Some(grant_id),
        actor,
        Event::Complete,
        "revoked",
        serde_json::json!({"reason": reason, "mountpoint": mountpoint}),
    )?;
    Ok(Revoked {
        revocation,
        mountpoint,
    })
}

/// What a serving process ends when its grant is revoked.
pub(super) struct Ender {
    pub view: Weak<View>,
    pub notifier: fuser::Notifier,
    /// The kernel engine's overlay, taken down as at expiry.
    pub take_down: Option<super::kernel::Expiry>,
}

/// Starts the thread that ends the view once the grant is revoked. It
/// stops by itself when the view is gone (the session ended).
pub(super) fn watch(state: &StateDir, grant_id: &str, ender: Ender) -> Result<()> {
    let marker = state.revocation_path(grant_id);
    let state_path = state.path().to_path_buf();
    let grant_id = grant_id.to_string();
    std::thread::Builder::new()
        .name("revocation".into())
        .spawn(move || loop {
            let Some(view) = ender.view.upgrade() else {
                return;
            };
            if marker.exists() {
                end(&view, &ender, &state_path, &grant_id);
                return;
            }
            drop(view);
            std::thread::sleep(POLL);
        })
        .ctx(|| "starting the revocation thread")?;
    Ok(())
}

fn end(view: &Arc<View>, ender: &Ender, state_path: &std::path::Path, grant_id: &str) {
    let start = Instant::now();
    let known = view.revoke();
    let invalidated = crate::fuse::invalidate(&ender.notifier, &known);
    let ms = start.elapsed().as_millis() as u64;
    tracing::info!(grant = %grant_id, names = known.len(), invalidated, ms, "revoked: the view shows nothing");
    let details = serde_json::json!({
        "names": known.len(), "invalidated": invalidated, "ms": ms,
        "engine_overlay_taken_down": ender.take_down.is_some(),
    });
    if let Err(e) = Audit::new(state_path).append(
        "wopfs.view.revoked",
        Some(grant_id),
        &current_actor(),
        Event::Complete,
        "emptied",
        details,
    ) {
        tracing::error!(error = %e, "cannot write the audit log");
    }
    // Last: aborting the lower's connection ends this process's session
    // at once (the kernel engine), and with it the process.
    if let Some(t) = &ender.take_down {
        t.revoke();
    }
}
