//! Shared harness for tests that really mount: a temp host tree, state dir
//! and mountpoint, the wopfs binary, and a mount guard that always unmounts
//! (lazily if it must) and kills a hung daemon after a deadline so a stuck
//! FUSE request can never hang the test run.

#![allow(dead_code)]

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wopfs");

/// How long one mount may live before the watchdog tears it down.
pub const MOUNT_DEADLINE: Duration = Duration::from_secs(120);

pub struct Env {
    pub dir: tempfile::TempDir,
    pub host: PathBuf,
    pub state: PathBuf,
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = dir.path().canonicalize().unwrap();
        let host = base.join("host");
        let state = base.join("state");
        fs::create_dir_all(&host).unwrap();
        Env { dir, host, state }
    }

    /// A fresh empty directory to mount on.
    pub fn mountpoint(&self, name: &str) -> PathBuf {
        let p = self.dir.path().canonicalize().unwrap().join(name);
        fs::create_dir_all(&p).unwrap();
        p
    }

    pub fn write(&self, rel: &str, content: &str) {
        let p = self.host.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, content).unwrap();
    }

    pub fn link(&self, rel: &str, target: &str) {
        let p = self.host.join(rel);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        symlink(target, p).unwrap();
    }

    /// Runs `wopfs --state-dir STATE ARGS…`.
    pub fn wopfs(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--state-dir")
            .arg(&self.state)
            .args(args)
            .env_remove("WOPFS_STATE_DIR")
            .output()
            .expect("running wopfs")
    }

    /// Runs wopfs and expects success; returns trimmed stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        let out = self.wopfs(args);
        assert!(
            out.status.success(),
            "wopfs {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    /// Runs wopfs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.wopfs(args);
        assert!(
            !out.status.success(),
            "wopfs {args:?} should have failed; stdout: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8(out.stderr).unwrap()
    }

    /// `wopfs grant --root HOST --purpose test ARGS…`, returning the id.
    pub fn grant(&self, extra: &[&str]) -> String {
        let root = self.host.to_str().unwrap();
        let mut args = vec!["grant", "--root", root, "--purpose", "test"];
        args.extend_from_slice(extra);
        self.ok(&args)
    }

    pub fn mount(&self, grant: &str, mp: &Path, extra: &[&str]) -> Mounted {
        let mut args = vec!["mount", grant, mp.to_str().unwrap()];
        args.extend_from_slice(extra);
        self.ok(&args);
        Mounted::new(mp.to_path_buf(), self.daemon_pid(grant))
    }

    pub fn daemon_pid(&self, grant: &str) -> Option<u32> {
        let rec = fs::read(self.state.join("sessions").join(grant).join("mount.json")).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&rec).ok()?;
        v["pid"].as_u64().map(|p| p as u32)
    }
}

/// A live mount. Dropping it unmounts (lazily if busy) and kills the daemon
/// if it does not exit; a watchdog does the same after `MOUNT_DEADLINE`.
pub struct Mounted {
    pub mp: PathBuf,
    pub pid: Option<u32>,
    done: Arc<AtomicBool>,
}

impl Mounted {
    pub fn new(mp: PathBuf, pid: Option<u32>) -> Mounted {
        let done = Arc::new(AtomicBool::new(false));
        let (d, m) = (done.clone(), mp.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !d.load(Ordering::Relaxed) {
                if start.elapsed() > MOUNT_DEADLINE {
                    eprintln!(
                        "watchdog: tearing down {} after {MOUNT_DEADLINE:?}",
                        m.display()
                    );
                    teardown(&m, pid);
                    return;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        Mounted { mp, pid, done }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        if rel.is_empty() {
            self.mp.clone()
        } else {
            self.mp.join(rel)
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        teardown(&self.mp, self.pid);
    }
}

pub fn is_mounted(mp: &Path) -> bool {
    let want = mp.to_str().unwrap();
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|l| l.split(' ').nth(4) == Some(want))
}

fn teardown(mp: &Path, pid: Option<u32>) {
    if is_mounted(mp) {
        let _ = Command::new(BIN).arg("umount").arg(mp).output();
    }
    if is_mounted(mp) {
        let _ = rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH);
    }
    if let Some(pid) = pid {
        let start = Instant::now();
        while pid_running(pid) && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if pid_running(pid) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Waits for an event instead of sleeping a fixed time: polls `cond` every
/// few milliseconds until it holds, and panics naming `what` if it still
/// does not after `timeout` (a generous deadline: it only bounds a hang).
pub fn wait_until(what: &str, timeout: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < timeout,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Whether no wopfs mount of grant `g` is left anywhere in this namespace.
pub fn no_mount_of_grant(g: &str) -> bool {
    !fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .contains(&format!("wopfs:{g}"))
}

/// Whether any thread of process `pid` still runs. A killed process's main
/// thread shows as a zombie while its other threads are still exiting, and
/// its files (a daemon's /dev/fuse, so its connection) are closed only when
/// the last thread has exited: every thread is looked at, not just the first.
pub fn pid_running(pid: u32) -> bool {
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return false;
    };
    tasks.filter_map(|t| t.ok()).any(|t| {
        fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
            s.rsplit_once(") ")
                .is_some_and(|(_, r)| !r.starts_with('Z') && !r.starts_with('X'))
        })
    })
}

/// The errno of a failed std I/O call.
pub fn errno<T: std::fmt::Debug>(r: std::io::Result<T>) -> i32 {
    r.expect_err("expected an error")
        .raw_os_error()
        .expect("an OS error")
}

/// Every path under `root` (files, links and dirs), relative, sorted.
pub fn list_tree(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let mut entries: Vec<_> = fs::read_dir(dir).unwrap().map(|e| e.unwrap()).collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            out.push(p.strip_prefix(root).unwrap().to_str().unwrap().to_string());
            if e.file_type().unwrap().is_dir() {
                walk(root, &p, out);
            }
        }
    }
    walk(root, root, &mut out);
    out.sort();
    out
}

/// A blake3 digest of a whole tree: paths, kinds, modes, mtimes, contents
/// and link targets. Equal digests mean the tree did not change.
pub fn tree_digest(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut h = blake3::Hasher::new();
    for rel in list_tree(root) {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        h.update(rel.as_bytes());
        h.update(&m.mode().to_le_bytes());
        h.update(&m.mtime().to_le_bytes());
        h.update(&m.mtime_nsec().to_le_bytes());
        if m.file_type().is_symlink() {
            h.update(fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            h.update(&fs::read(&p).unwrap());
        }
    }
    h.finalize().to_hex().to_string()
}
