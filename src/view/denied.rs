//! The denied-access log: every request of the agent that the grant
//! refuses — a lookup of a name the grant hides, a change outside the
//! write scope or in a read-only view, an xattr no view may set — counted
//! per session, so an approver learns what the agent reached for before
//! reading its diff.
//!
//! Only names the agent itself named are ever recorded: the decision
//! points are the core's answers to a request that carried the name
//! (`lookup`, `create`, `rename`, ...); a listing never records anything,
//! since the view never lists a hidden name in the first place. A lookup
//! counts when the name is absent from the view but present on the host
//! (a hidden name); a name the host does not have either is the ordinary
//! probing of compilers and interpreters and is not recorded.
//!
//! Bounded: entries are deduplicated by (path, operation, errno, detail)
//! and at most [`CAP`] are kept; attempts on further names are counted as
//! dropped. The log is touched only when a request is refused, under one
//! mutex; the requests the grant allows never see it.

use std::cell::Cell;
use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::error::Errno;

/// The most distinct entries a session's log keeps.
pub const CAP: usize = 1024;

/// The file of a session's log, in its session directory.
pub const FILE: &str = "denied.json";

thread_local! {
    /// The pid of the process whose request this thread is answering.
    static REQUESTER: Cell<u32> = const { Cell::new(0) };
}

/// Names the process whose request the calling thread answers next (the
/// FUSE request's pid, in the daemon's pid namespace; 0: unknown). Set by
/// the adapter before each request that may be refused; read only when
/// one is.
pub fn set_requester(pid: u32) {
    REQUESTER.with(|r| r.set(pid));
}

fn requester() -> u32 {
    REQUESTER.with(Cell::get)
}

/// One kind of refused request, with how often and by whom.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Denied {
    /// The name the agent asked for, as a path in the view.
    pub path: String,
    /// The operation (`lookup`, `create`, `open`, `rename`, `setxattr`, ...).
    pub op: String,
    /// The errno the agent got, and its name.
    pub errno: i32,
    pub error: String,
    /// What else the request named: a rename's target, an xattr's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Why it was refused.
    pub reason: String,
    pub count: u64,
    /// RFC 3339, UTC, milliseconds.
    pub first: String,
    pub last: String,
    /// The process of the first such request (the kernel names the
    /// requesting thread; this is its process) and its command name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comm: Option<String>,
}

/// A session's log as written to `denied.json` and printed by
/// `wopfs denied --json`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// The most distinct entries kept.
    pub cap: usize,
    /// Refused requests in all, dropped ones included.
    pub attempts: u64,
    /// Refused requests on names not kept because the log was full.
    pub dropped: u64,
    /// Most frequent first.
    pub entries: Vec<Denied>,
}

#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    path: String,
    op: String,
    errno: i32,
    detail: Option<String>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<Key, Denied>,
    attempts: u64,
    dropped: u64,
}

/// The log of one session (shared by the views a mount serves).
pub struct DeniedLog {
    inner: Mutex<Inner>,
    cap: usize,
    /// Bumped on every record: what the writer compares to save only
    /// when something changed.
    changes: AtomicU64,
}

impl Default for DeniedLog {
    fn default() -> Self {
        DeniedLog::with_cap(CAP)
    }
}

impl std::fmt::Debug for DeniedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeniedLog")
            .field("cap", &self.cap)
            .field("changes", &self.changes())
            .finish()
    }
}

/// A refused request, as the core reports it.
pub struct Refusal<'a> {
    pub path: &'a str,
    pub op: &'static str,
    pub errno: Errno,
    pub detail: Option<&'a str>,
    pub reason: &'static str,
}

fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// The name of an errno the view answers refusals with.
pub fn errno_name(e: i32) -> String {
    match e {
        libc::ENOENT => "ENOENT".into(),
        libc::EACCES => "EACCES".into(),
        libc::EPERM => "EPERM".into(),
        libc::EROFS => "EROFS".into(),
        libc::EOPNOTSUPP => "EOPNOTSUPP".into(),
        libc::EXDEV => "EXDEV".into(),
        n => format!("errno {n}"),
    }
}

/// The process of thread `tid` (the kernel names the requesting thread)
/// and its command name (`/proc/PID/comm`), best effort: read once per
/// new entry.
fn process_of(tid: u32) -> (Option<u32>, Option<String>) {
    if tid == 0 {
        return (None, None);
    }
    let tgid = std::fs::read_to_string(format!("/proc/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|t| t.trim().parse::<u32>().ok())
        })
        .filter(|t| *t != 0)
        .unwrap_or(tid);
    let comm = std::fs::read_to_string(format!("/proc/{tgid}/comm"))
        .ok()
        .map(|c| c.trim_end_matches('\n').to_string());
    (Some(tgid), comm)
}

impl DeniedLog {
    pub fn with_cap(cap: usize) -> DeniedLog {
        DeniedLog {
            inner: Mutex::new(Inner::default()),
            cap,
            changes: AtomicU64::new(0),
        }
    }

    /// A log continuing `report` (an earlier mount of the session).
    pub fn from_report(report: Report) -> DeniedLog {
        let log = DeniedLog::with_cap(CAP);
        {
            let mut inner = log.lock();
            inner.attempts = report.attempts;
            inner.dropped = report.dropped;
            for d in report.entries.into_iter().take(CAP) {
                let key = Key {
                    path: d.path.clone(),
                    op: d.op.clone(),
                    errno: d.errno,
                    detail: d.detail.clone(),
                };
                inner.entries.insert(key, d);
            }
        }
        log
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many refusals were recorded since the log was made.
    pub fn changes(&self) -> u64 {
        self.changes.load(Ordering::Relaxed)
    }

    /// Counts a refused request at `now`, by the thread's requester.
    pub fn record(&self, r: &Refusal<'_>, now: SystemTime) {
        self.record_by(r, now, requester());
    }

    /// Counts a refused request at `now` by thread `pid` (0: unknown). A
    /// new entry reads the thread's process and its command name once,
    /// outside the lock.
    pub fn record_by(&self, r: &Refusal<'_>, now: SystemTime, pid: u32) {
        self.changes.fetch_add(1, Ordering::Relaxed);
        let key = Key {
            path: r.path.to_string(),
            op: r.op.to_string(),
            errno: r.errno.0,
            detail: r.detail.map(str::to_string),
        };
        {
            let mut inner = self.lock();
            inner.attempts += 1;
            if let Some(d) = inner.entries.get_mut(&key) {
                d.count += 1;
                d.last = time(now);
                return;
            }
            if inner.entries.len() >= self.cap {
                inner.dropped += 1;
                return;
            }
        }
        let (pid, comm) = process_of(pid);
        let mut inner = self.lock();
        if inner.entries.len() >= self.cap && !inner.entries.contains_key(&key) {
            inner.dropped += 1;
            return;
        }
        let at = time(now);
        inner
            .entries
            .entry(key)
            .and_modify(|d| {
                d.count += 1;
                d.last.clone_from(&at);
            })
            .or_insert_with(|| Denied {
                path: r.path.to_string(),
                op: r.op.to_string(),
                errno: r.errno.0,
                error: errno_name(r.errno.0),
                detail: r.detail.map(str::to_string),
                reason: r.reason.to_string(),
                count: 1,
                first: at.clone(),
                last: at.clone(),
                pid,
                comm,
            });
    }

    /// The log now, most frequent entries first (then by path).
    pub fn report(&self) -> Report {
        let inner = self.lock();
        let mut entries: Vec<Denied> = inner.entries.values().cloned().collect();
        sort_entries(&mut entries);
        Report {
            cap: self.cap,
            attempts: inner.attempts,
            dropped: inner.dropped,
            entries,
        }
    }
}

fn sort_entries(entries: &mut [Denied]) {
    entries.sort_by(|a, b| {
        b.count
            .cmp(&a.count)
            .then_with(|| a.path.cmp(&b.path))
            .then_with(|| a.op.cmp(&b.op))
    });
}

/// Reads a session's log (`denied.json` in `session_dir`); none yet is an
/// empty report.
pub fn load(session_dir: &Path) -> crate::error::Result<Report> {
    let path = session_dir.join(FILE);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| crate::error::Error::invalid(format!("reading {}: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Report {
            cap: CAP,
            ..Report::default()
        }),
        Err(e) => Err(crate::error::Error::io(
            format!("reading {}", path.display()),
            e,
        )),
    }
}

/// A grant's log, as `wopfs denied --json` and the API show it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct GrantDenied {
    pub grant_id: String,
    #[serde(flatten)]
    pub report: Report,
}

/// The log of grant `grant_id`'s session (checked to be a grant of
/// `state`). While the view is mounted the file is at most a second
/// behind the daemon.
pub fn of_grant(
    state: &crate::state::StateDir,
    grant_id: &str,
) -> crate::error::Result<GrantDenied> {
    let grant = state.load_grant(grant_id)?;
    let report = load(&state.session_dir(&grant.grant_id))?;
    Ok(GrantDenied {
        grant_id: grant.grant_id,
        report,
    })
}

/// Writes `report` to `denied.json` in `session_dir`, atomically.
pub fn save(session_dir: &Path, report: &Report) -> crate::error::Result<()> {
    let json = serde_json::to_vec_pretty(report)
        .map_err(|e| crate::error::Error::invalid(format!("serializing the denied log: {e}")))?;
    crate::state::write_atomic(&session_dir.join(FILE), &json)
}

/// The granted host paths (files and their directories) of a writable
/// view, as 64-bit hashes: a lookup of a name the view no longer shows
/// but the host still has is a hidden name only if the grant never held
/// it (the agent may have deleted or moved a granted one). 8 bytes a
/// path, searched only when a lookup finds nothing.
#[derive(Default)]
pub struct Granted(Vec<u64>);

fn hash(path: &str) -> u64 {
    use std::hash::{BuildHasher, BuildHasherDefault};
    BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default().hash_one(path)
}

impl Granted {
    pub fn new<'a>(paths: impl IntoIterator<Item = &'a str>) -> Granted {
        let mut v = Vec::new();
        for p in paths {
            let mut at = p;
            loop {
                v.push(hash(at));
                match at.rsplit_once('/') {
                    Some((parent, _)) => at = parent,
                    None => break,
                }
            }
        }
        v.sort_unstable();
        v.dedup();
        Granted(v)
    }

    pub fn contains(&self, path: &str) -> bool {
        self.0.binary_search(&hash(path)).is_ok()
    }
}

/// Why a change was refused, as the log says it.
pub const READ_ONLY: &str = "the view is read-only";
pub const OUTSIDE: &str = "outside the write prefixes";
pub const SPECIAL: &str = "not a regular file, directory or symlink";
pub const NO_LINKS: &str = "the policy refuses hard links";
pub const XATTR: &str = "only user.* attributes may change";
const HIDDEN: &str = "not granted";
const DENIED_NAME: &str = "a name the grant denies";

impl super::View {
    /// Records the agent's refused `op` on `path` and returns the error
    /// to answer it with.
    pub(super) fn refuse(
        &self,
        path: &str,
        op: &'static str,
        errno: Errno,
        detail: Option<&str>,
        reason: &'static str,
    ) -> super::Error {
        self.refuse_at(Some(path), op, errno, detail, reason)
    }

    /// [`View::refuse`] where the path may be unknown (then only the
    /// error is returned).
    pub(super) fn refuse_at(
        &self,
        path: Option<&str>,
        op: &'static str,
        errno: Errno,
        detail: Option<&str>,
        reason: &'static str,
    ) -> super::Error {
        if let Some(path) = path {
            let r = Refusal {
                path,
                op,
                errno,
                detail,
                reason,
            };
            self.opts.denied.record(&r, self.opts.clock.now());
        }
        errno.into()
    }

    /// [`View::refuse`] of a change to `name` in directory `parent`
    /// (refused before its path was known, EROFS).
    pub(super) fn refuse_in(
        &self,
        parent: super::Ino,
        name: &std::ffi::OsStr,
        op: &'static str,
        errno: Errno,
        reason: &'static str,
    ) -> super::Error {
        let path = name.to_str().and_then(|n| {
            let dir = self.read_tree().path(parent)?;
            Some(crate::paths::join(&dir, n))
        });
        self.refuse_at(path.as_deref(), op, errno, None, reason)
    }

    /// Why a new entry of `kind` at `path` is refused (`Scope::refuses_create`).
    pub(super) fn create_reason(&self, path: &str, kind: crate::tree::Kind) -> &'static str {
        self.scope.refuses_create(path, kind).unwrap_or(OUTSIDE)
    }

    /// A lookup of `name` in `parent` found nothing: recorded when the
    /// name is hidden, i.e. the view does not show it, the grant never
    /// held it (a granted name the agent deleted or moved is not hidden)
    /// and the host has it (one `lstat` beneath the root, only on this
    /// path). A directory of the view with no host counterpart (made by
    /// the agent) hides nothing.
    pub(super) fn note_hidden(&self, parent: super::Ino, name: &std::ffi::OsStr) {
        let Some(name) = name.to_str() else { return };
        if name == "." || name == ".." {
            return;
        }
        let (host_path, path) = {
            let tree = self.read_tree();
            if tree.child(parent, name).is_some() {
                return; // granted, but its host entry is gone
            }
            let (Some(host_dir), Some(dir)) = (tree.host_path(parent), tree.path(parent)) else {
                return;
            };
            (
                crate::paths::join(&host_dir, name),
                crate::paths::join(&dir, name),
            )
        };
        if self.upper.is_some() && self.granted.contains(&host_path) {
            return;
        }
        if self.host.lstat(&host_path).is_err() {
            return;
        }
        let reason = if self.scope.denies(&host_path) {
            DENIED_NAME
        } else {
            HIDDEN
        };
        self.refuse(&path, "lookup", Errno::ENOENT, None, reason);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn refusal<'a>(path: &'a str, op: &'static str, errno: i32) -> Refusal<'a> {
        Refusal {
            path,
            op,
            errno: Errno(errno),
            detail: None,
            reason: "test",
        }
    }

    #[test]
    fn repeats_are_counted_once_with_first_and_last_times() {
        let log = DeniedLog::default();
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let t1 = t0 + Duration::from_secs(5);
        log.record_by(&refusal(".env", "lookup", libc::ENOENT), t0, 0);
        log.record_by(&refusal(".env", "lookup", libc::ENOENT), t1, 0);
        log.record_by(&refusal(".env", "create", libc::EACCES), t1, 0);
        let r = log.report();
        assert_eq!(r.attempts, 3);
        assert_eq!(r.dropped, 0);
        assert_eq!(r.entries.len(), 2);
        let e = &r.entries[0];
        assert_eq!(
            (e.path.as_str(), e.op.as_str(), e.count),
            (".env", "lookup", 2)
        );
        assert_eq!(e.error, "ENOENT");
        assert_eq!(e.first, time(t0));
        assert_eq!(e.last, time(t1));
        assert_eq!(e.pid, None);
        assert_eq!(r.entries[1].op, "create");
        assert_eq!(r.entries[1].error, "EACCES");
    }

    #[test]
    fn the_cap_keeps_the_first_names_and_counts_the_rest_as_dropped() {
        let log = DeniedLog::with_cap(3);
        let now = SystemTime::now();
        for i in 0..10 {
            log.record_by(&refusal(&format!("n{i}"), "lookup", libc::ENOENT), now, 0);
        }
        // A kept name is still counted once the log is full.
        log.record_by(&refusal("n0", "lookup", libc::ENOENT), now, 0);
        let r = log.report();
        assert_eq!(r.entries.len(), 3);
        assert_eq!(r.attempts, 11);
        assert_eq!(r.dropped, 7);
        assert_eq!(r.entries[0].path, "n0");
        assert_eq!(r.entries[0].count, 2);
        let mut kept: Vec<_> = r.entries.iter().map(|e| e.path.as_str()).collect();
        kept.sort();
        assert_eq!(kept, ["n0", "n1", "n2"]);
    }

    #[test]
    fn the_requester_is_recorded_with_its_command_name() {
        let log = DeniedLog::default();
        // The kernel names a thread: its process is what is recorded.
        set_requester(rustix::thread::gettid().as_raw_nonzero().get() as u32);
        log.record(
            &refusal("secret", "lookup", libc::ENOENT),
            SystemTime::now(),
        );
        set_requester(0);
        let r = log.report();
        assert_eq!(r.entries[0].pid, Some(std::process::id()));
        let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(r.entries[0].comm.as_deref(), Some(comm.trim_end()));
    }

    #[test]
    fn a_report_survives_a_save_and_a_reload() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap().entries, []);
        let log = DeniedLog::default();
        let d = Refusal {
            path: "a",
            op: "rename",
            errno: Errno::EACCES,
            detail: Some("b"),
            reason: "outside the write prefixes",
        };
        log.record_by(&d, SystemTime::now(), 0);
        save(dir.path(), &log.report()).unwrap();
        let back = load(dir.path()).unwrap();
        assert_eq!(back, log.report());
        let again = DeniedLog::from_report(back);
        again.record_by(&d, SystemTime::now(), 0);
        assert_eq!(again.report().entries[0].count, 2);
        assert_eq!(again.report().attempts, 2);
    }

    #[test]
    fn the_core_logs_what_the_agent_named_and_never_what_it_listed() {
        use super::super::tests::no_backing;
        use super::super::write_tests::{fixture_with, ino, open_view, ROOTUSER};
        use super::super::{ViewOptions, ROOT};
        use std::ffi::OsStr;
        let fx = fixture_with(&["d"], &[(".env", "S"), ("d/.env", "S"), ("d/x.pem", "k")]);
        let v = open_view(&fx, ViewOptions::default());
        let log = v.opts.denied.clone();
        for dir in [ROOT, ino(&v, "d")] {
            let fh = v.opendir(dir).unwrap().fh;
            assert!(!v.readdir(dir, fh, 0).unwrap().is_empty());
            v.releasedir(fh);
        }
        assert_eq!(log.report().attempts, 0, "a listing logs nothing");
        let n = OsStr::new;
        let d = ino(&v, "d");
        assert!(matches!(
            v.lookup(ROOT, n(".env")),
            Ok(super::super::Lookup::Absent { .. })
        ));
        v.lookup(ROOT, n("no-such-name")).unwrap();
        v.lookup(ROOT, n("a.txt")).unwrap();
        // A granted file the agent deleted is not a hidden name.
        v.unlink(d, n("b.txt")).unwrap();
        v.lookup(d, n("b.txt")).unwrap();
        let a = ino(&v, "a.txt");
        assert_eq!(
            v.open(a, libc::O_WRONLY, no_backing).unwrap_err(),
            Errno::EACCES
        );
        assert_eq!(
            v.mkdir(ROOT, n("new"), 0o755, ROOTUSER).unwrap_err(),
            Errno::EACCES
        );
        assert_eq!(
            v.create(d, n("y.pem"), 0o644, ROOTUSER, no_backing)
                .unwrap_err(),
            Errno::EACCES
        );
        let c = ino(&v, "d/e/c.txt");
        assert_eq!(
            v.setxattr(c, n("trusted.x"), b"1", 0).unwrap_err(),
            Errno(libc::EOPNOTSUPP)
        );
        let r = log.report();
        let mut got: Vec<_> = r
            .entries
            .iter()
            .map(|e| {
                (
                    e.path.as_str(),
                    e.op.as_str(),
                    e.error.as_str(),
                    e.reason.as_str(),
                )
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (".env", "lookup", "ENOENT", DENIED_NAME),
                ("a.txt", "open", "EACCES", OUTSIDE),
                ("d/e/c.txt", "setxattr", "EOPNOTSUPP", XATTR),
                ("d/y.pem", "create", "EACCES", "a name the grant denies"),
                ("new", "mkdir", "EACCES", OUTSIDE),
            ]
        );
        assert_eq!(
            r.entries
                .iter()
                .find(|e| e.op == "setxattr")
                .unwrap()
                .detail
                .as_deref(),
            Some("trusted.x")
        );
    }

    #[test]
    fn granted_paths_include_their_directories() {
        let g = Granted::new(["src/a/b.rs", "README.md"]);
        for p in ["src", "src/a", "src/a/b.rs", "README.md"] {
            assert!(g.contains(p), "{p}");
        }
        assert!(!g.contains(".env"));
        assert!(!g.contains("src/a/c.rs"));
    }
}
