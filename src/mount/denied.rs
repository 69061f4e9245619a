//! Keeps a session's denied-access log (`view::denied`) on disk while its
//! view is served: `denied.json` in the session directory, rewritten
//! atomically at most once a second when something was refused since,
//! and once more at unmount, when one audit event sums it up. A later
//! mount of the session continues the same log.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use crate::error::{IoContext, Result};
use crate::view::denied::{self, DeniedLog};
use crate::view::ViewOptions;

/// How often the log is saved at most.
const EVERY: Duration = Duration::from_secs(1);

/// How many entries the audit summary names.
const TOP: usize = 10;

/// The writer of one served session's log.
pub struct Keeper {
    log: Arc<DeniedLog>,
    dir: PathBuf,
    stop: mpsc::Sender<()>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The session's log, continued from `denied.json` (a file that cannot be
/// read is set aside, and a new log started), put in `view` and kept on
/// disk by the returned [`Keeper`].
pub fn keep(session_dir: &Path, view: &mut ViewOptions) -> Result<Keeper> {
    let log = match denied::load(session_dir) {
        Ok(report) => DeniedLog::from_report(report),
        Err(e) => {
            tracing::warn!(error = %e, "the denied-access log cannot be read; starting a new one");
            DeniedLog::default()
        }
    };
    let log = Arc::new(log);
    view.denied = log.clone();
    let (stop, stopped) = mpsc::channel::<()>();
    let (l, dir) = (log.clone(), session_dir.to_path_buf());
    let thread = std::thread::Builder::new()
        .name("denied-log".into())
        .spawn(move || {
            let mut saved = l.changes();
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                let now = l.changes();
                if now != saved {
                    saved = now;
                    if let Err(e) = denied::save(&dir, &l.report()) {
                        tracing::warn!(error = %e, "cannot save the denied-access log");
                    }
                }
            }
        })
        .ctx(|| "starting the denied-log thread")?;
    Ok(Keeper {
        log,
        dir: session_dir.to_path_buf(),
        stop,
        thread: Some(thread),
    })
}

impl Keeper {
    /// At unmount: if anything was refused while this mount was served,
    /// saves the log a last time and appends its summary to the audit log
    /// (`wopfs.view.denied`: attempts, distinct names, dropped, the most
    /// frequent entries).
    pub fn finish(mut self, state_dir: &Path, grant_id: &str, actor: &str) {
        let _ = self.stop.send(());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if self.log.changes() == 0 {
            return; // nothing refused while this mount was served
        }
        let report = self.log.report();
        if let Err(e) = denied::save(&self.dir, &report) {
            tracing::warn!(error = %e, "cannot save the denied-access log");
        }
        let top: Vec<_> = report
            .entries
            .iter()
            .take(TOP)
            .map(|d| {
                serde_json::json!({
                    "path": d.path, "op": d.op, "error": d.error, "count": d.count,
                    "comm": d.comm,
                })
            })
            .collect();
        let details = serde_json::json!({
            "attempts": report.attempts,
            "this_mount": self.log.changes(),
            "names": report.entries.len(),
            "dropped": report.dropped,
            "cap": report.cap,
            "top": top,
        });
        let outcome = format!(
            "{} refused request(s) on {} name(s)",
            report.attempts,
            report.entries.len()
        );
        if let Err(e) = crate::audit::Audit::new(state_dir).append(
            "wopfs.view.denied",
            Some(grant_id),
            actor,
            crate::audit::Event::Complete,
            &outcome,
            details,
        ) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    }
}
