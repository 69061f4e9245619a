//! A session's lifecycle: open → pending → committed | rejected. Stored in
//! `STATE/sessions/g-…/session.json`; absent means open.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Phase {
    /// The agent may still change the view.
    Open,
    /// Exported for review; still changeable until committed or rejected.
    Pending,
    Committed,
    Rejected,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SessionState {
    pub phase: Phase,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approver: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at: Option<String>,
}

impl SessionState {
    pub fn load(session_dir: &Path) -> Result<SessionState> {
        match std::fs::read(session_dir.join("session.json")) {
            Ok(b) => serde_json::from_slice(&b)
                .map_err(|e| Error::invalid(format!("session state is damaged: {e}"))),
            Err(_) => Ok(SessionState {
                phase: Phase::Open,
                reason: None,
                approver: None,
                at: None,
            }),
        }
    }

    pub fn save(&self, session_dir: &Path) -> Result<()> {
        let json = serde_json::to_vec_pretty(self).map_err(|e| Error::invalid(e.to_string()))?;
        crate::state::write_atomic(&session_dir.join("session.json"), &json)
    }

    /// Refuses to go on with a session that has ended.
    pub fn check_not_ended(&self, grant_id: &str, what: &str) -> Result<()> {
        match self.phase {
            Phase::Committed => Err(Error::conflict(format!(
                "cannot {what}: grant {grant_id} has already been committed{}",
                self.at
                    .as_deref()
                    .map(|t| format!(" (at {t})"))
                    .unwrap_or_default()
            ))),
            Phase::Rejected => Err(Error::conflict(format!(
                "cannot {what}: grant {grant_id} was rejected{}",
                self.reason
                    .as_deref()
                    .map(|r| format!(" ({r})"))
                    .unwrap_or_default()
            ))),
            _ => Ok(()),
        }
    }
}

pub fn set_phase(
    session_dir: &Path,
    phase: Phase,
    reason: Option<String>,
    approver: Option<String>,
) -> Result<()> {
    SessionState {
        phase,
        reason,
        approver,
        at: Some(crate::grant::rfc3339(std::time::SystemTime::now())),
    }
    .save(session_dir)
}

/// The session lock (`STATE/sessions/g-…/session.lock`): whatever serves
/// the view (a mount daemon, `wopfs run`) holds it shared for as long as it
/// serves; a commit, reject or recover holds it exclusively. So no write
/// can race a commit, and no view can be mounted while one is in flight.
/// The kernel drops the lock when its holder dies, however it dies.
pub struct SessionLock {
    _file: std::fs::File,
}

/// Takes the session lock without waiting for a holder (only out a
/// fork's moment, see below); the error says who holds it.
pub fn lock(session_dir: &Path, exclusive: bool, grant_id: &str) -> Result<SessionLock> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = session_dir.join("session.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path)
        .map_err(|e| Error::io(format!("opening {}", path.display()), e))?;
    let op = if exclusive {
        rustix::fs::FlockOperation::NonBlockingLockExclusive
    } else {
        rustix::fs::FlockOperation::NonBlockingLockShared
    };
    // A lock just released can still be held for a moment by a child that
    // another thread of the releasing process forked and that has not yet
    // exec'd (it holds a copy of the descriptor until then): a few retries
    // tell that moment from a real holder.
    let start = std::time::Instant::now();
    let taken = loop {
        match rustix::fs::flock(&file, op) {
            Err(rustix::io::Errno::WOULDBLOCK)
                if start.elapsed() < std::time::Duration::from_millis(200) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(5));
            }
            r => break r,
        }
    };
    match taken {
        Ok(()) => Ok(SessionLock { _file: file }),
        Err(rustix::io::Errno::WOULDBLOCK) if exclusive => Err(Error::busy(format!(
            "grant {grant_id} is in use: its view is being served, or another commit, reject or recover of it is running; unmount it (wopfs umount) or wait"
        ))),
        Err(rustix::io::Errno::WOULDBLOCK) => Err(Error::busy(format!(
            "grant {grant_id} is being committed, rejected or recovered right now; wait for that to finish"
        ))),
        Err(e) => Err(Error::io(format!("locking {}", path.display()), e.into())),
    }
}

/// The journal of a commit in progress (`controller/apply.rs`): while it
/// exists, the commit was interrupted, and `wopfs recover` must finish or
/// undo it before anything else uses the session.
pub fn commit_journal_path(session_dir: &Path) -> PathBuf {
    session_dir.join("commit.json")
}

/// Refuses to serve (or commit) a session whose commit was interrupted.
pub fn ensure_no_interrupted_commit(session_dir: &Path, grant_id: &str) -> Result<()> {
    if commit_journal_path(session_dir).exists() {
        return Err(Error::invalid(format!(
            "grant {grant_id} has an interrupted commit; run wopfs recover {grant_id} first"
        )));
    }
    Ok(())
}
