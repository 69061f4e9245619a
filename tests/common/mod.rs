//! Shared harness for tests that really mount: a temp host tree, state dir
//! and mountpoint, the wopfs binary, and a mount guard that always unmounts
//! (lazily if it must) and kills a hung daemon after a deadline so a stuck
//! FUSE request can never hang the test run.

#![allow(dead_code)]

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_wopfs");

/// The engine writable views are mounted with: `WOPFS_TEST_ENGINE`
/// (`kernel` or `fuse`), else fuse; tests of one engine pass `--engine`.
pub fn test_engine() -> String {
    std::env::var("WOPFS_TEST_ENGINE").unwrap_or_else(|_| "fuse".into())
}

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
            .env("WOPFS_ENGINE", test_engine())
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
    /// Dropped (disconnecting the watchdog) when the guard tears down.
    watchdog: Option<mpsc::Sender<()>>,
}

impl Mounted {
    pub fn new(mp: PathBuf, pid: Option<u32>) -> Mounted {
        let (tx, rx) = mpsc::channel::<()>();
        let m = mp.clone();
        std::thread::spawn(move || {
            if rx.recv_timeout(MOUNT_DEADLINE) == Err(mpsc::RecvTimeoutError::Timeout) {
                eprintln!(
                    "watchdog: tearing down {} after {MOUNT_DEADLINE:?}",
                    m.display()
                );
                teardown(&m, pid);
            }
        });
        Mounted {
            mp,
            pid,
            watchdog: Some(tx),
        }
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
        drop(self.watchdog.take());
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
        if !poll_until(Duration::from_secs(5), || !pid_running(pid)) {
            unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        }
    }
}

/// Polls `cond` every few milliseconds until it holds or `timeout` has
/// passed; returns whether it held.
pub fn poll_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    loop {
        if cond() {
            return true;
        }
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits for an event instead of sleeping a fixed time: polls `cond` until
/// it holds, and panics naming `what` if it still does not after `timeout`
/// (a generous deadline: it only bounds a hang).
pub fn wait_until(what: &str, timeout: Duration, cond: impl FnMut() -> bool) {
    assert!(
        poll_until(timeout, cond),
        "timed out after {timeout:?} waiting for {what}"
    );
}

/// Waits for `child` to exit; past `timeout` kills it and panics naming
/// `what`.
pub fn wait_child(child: &mut Child, what: &str, timeout: Duration) -> ExitStatus {
    let mut status = None;
    poll_until(timeout, || {
        status = child.try_wait().expect("waiting for a child");
        status.is_some()
    });
    match status {
        Some(st) => st,
        None => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{what} still running after {timeout:?}; killed it");
        }
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

/// Runs `cmd` in its own process group with its output captured; after
/// `limit` the whole group is killed. `Ok(None)` on timeout, `Err` when it
/// cannot start (a missing program).
pub fn try_output_within(cmd: &mut Command, limit: Duration) -> std::io::Result<Option<Output>> {
    use std::io::Read;
    use std::os::unix::process::CommandExt;
    use std::process::Stdio;
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let pipe = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = pipe(Box::new(child.stdout.take().unwrap()));
    let err = pipe(Box::new(child.stderr.take().unwrap()));
    let mut exited = Ok(None);
    poll_until(limit, || {
        exited = child.try_wait();
        !matches!(exited, Ok(None))
    });
    let Some(status) = exited? else {
        unsafe { libc::kill(-(child.id() as i32), libc::SIGKILL) };
        let _ = child.wait();
        return Ok(None);
    };
    Ok(Some(Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }))
}

/// `try_output_within`, panicking when the command cannot start or times out.
pub fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let what = format!("{cmd:?}");
    match try_output_within(cmd, limit) {
        Ok(Some(out)) => out,
        Ok(None) => panic!("{what} did not finish within {limit:?} (killed)"),
        Err(e) => panic!("{what} did not start: {e}"),
    }
}

/// A line on the test's real stderr, shown even when the test passes (the
/// harness captures only `print!`/`eprint!`): why a test skipped.
pub fn say(msg: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "{msg}");
}

/// The script `./agent` that the README's container recipes run in the
/// view: one line per probe, `NAME: ok OUTPUT` or `NAME: ERROR` (the error
/// text the sandbox's libc gives, e.g. "Permission denied").
pub const AGENT: &str = r#"#!/bin/sh
try() {
    what=$1; shift
    if out=$("$@" 2>&1); then echo "$what: ok $out"; else echo "$what: ${out##*: }"; fi
}
echo "id: $(id -u):$(id -g)"
echo "list:" $(ls -A)
try read cat README.md
try secret cat .env
try secret-stat stat .env
try write-in sh -c 'echo new > src/new.py'
try edit-in sh -c 'echo more >> src/a.py'
try write-out sh -c 'echo x > top.txt'
try edit-out sh -c 'echo x >> README.md'
try remove-out rm README.md
try mkdir-out mkdir d
try rename-out mv src/a.py a.py
"#;

/// The agent's project: a README, `src/a.py`, a secret `.env` (denied by
/// the default policy) and the agent script itself.
pub fn agent_project(env: &Env) {
    use std::os::unix::fs::PermissionsExt;
    env.write("README.md", "# project\n");
    env.write("src/a.py", "a = 1\n");
    env.write(".env", "SECRET=1\n");
    env.write("agent", AGENT);
    fs::set_permissions(env.host.join("agent"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// The agent's report: probe name to its trimmed result.
pub fn agent_report(out: &Output) -> std::collections::BTreeMap<String, String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the agent failed ({}): stdout {stdout}\nstderr {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

/// The C library's message for an errno ("Permission denied").
pub fn strerror(errno: i32) -> String {
    let s = std::io::Error::from_raw_os_error(errno).to_string();
    s.split(" (os error").next().unwrap().to_string()
}

/// Checks the probes every recipe shares: the view's files read, the
/// secret absent, writes inside the write prefix `ok`, every change outside
/// it refused with `outside` (the view answers EACCES, or EROFS when read-only;
/// `inside` likewise for the prefix itself).
pub fn check_agent(
    report: &std::collections::BTreeMap<String, String>,
    inside: Option<i32>,
    outside: i32,
) {
    let get = |k: &str| {
        report
            .get(k)
            .unwrap_or_else(|| panic!("no {k} in {report:?}"))
            .as_str()
    };
    let mut list: Vec<&str> = get("list").split_whitespace().collect();
    list.sort();
    assert_eq!(list, ["README.md", "agent", "src"], "{report:?}");
    assert_eq!(get("read"), "ok # project", "{report:?}");
    let enoent = strerror(libc::ENOENT);
    assert_eq!(get("secret"), enoent, "{report:?}");
    assert_eq!(get("secret-stat"), enoent, "{report:?}");
    let want_in = inside.map_or("ok".to_string(), strerror);
    assert_eq!(get("write-in"), want_in, "{report:?}");
    assert_eq!(get("edit-in"), want_in, "{report:?}");
    for k in [
        "write-out",
        "edit-out",
        "remove-out",
        "mkdir-out",
        "rename-out",
    ] {
        assert_eq!(get(k), strerror(outside), "{k}: {report:?}");
    }
}

/// The README's recipe named `name` (its comment line, before the colon)
/// from the fenced block after "Recipes": its commands, continuation
/// lines joined, exactly as a shell would read them.
pub fn readme_recipe(name: &str) -> Vec<String> {
    let readme = fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let from = readme.find("\nRecipes (").expect("README has Recipes");
    let block = readme[from..]
        .split("```sh\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("a sh block after Recipes");
    for para in block.split("\n\n") {
        let mut lines = para.lines();
        let head = lines.next().unwrap_or_default();
        if head.strip_prefix("# ").and_then(|h| h.split(':').next()) != Some(name) {
            continue;
        }
        let mut cmds = Vec::new();
        let mut cur = String::new();
        for l in lines {
            let l = if cur.is_empty() { l } else { l.trim_start() };
            match l.strip_suffix('\\') {
                Some(part) => cur.push_str(part),
                None => {
                    cur.push_str(l);
                    cmds.push(std::mem::take(&mut cur));
                }
            }
        }
        return cmds;
    }
    panic!("README has no recipe {name:?}");
}

/// `sh -c LINE` for a README recipe line: `/srv/views/agent` is `mp`,
/// `wopfs` is the binary under test (with this env's state dir), and `vars`
/// are in the environment (`G`, `IMAGE`, …). With `uid`, run as that user.
pub fn recipe_command(
    env: &Env,
    line: &str,
    mp: &Path,
    vars: &[(&str, &str)],
    uid: Option<u32>,
) -> Command {
    let line = line.replace("/srv/views/agent", mp.to_str().unwrap());
    let bin_dir = Path::new(BIN).parent().unwrap();
    let path = format!(
        "{}:{}",
        bin_dir.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut c = match uid {
        None => Command::new("sh"),
        Some(uid) => {
            let mut c = Command::new("setpriv");
            let id = uid.to_string();
            c.args(["--reuid", &id, "--regid", &id, "--clear-groups", "sh"]);
            c
        }
    };
    c.arg("-c")
        .arg(line)
        .env("PATH", path)
        .env("WOPFS_STATE_DIR", &env.state);
    for (k, v) in vars {
        c.env(k, v);
    }
    c
}

impl Env {
    /// Runs a recipe's `wopfs mount "$G" /srv/views/agent …` line for grant
    /// `g` on `mp` and guards the mount.
    pub fn mount_by_recipe(&self, line: &str, g: &str, mp: &Path) -> Mounted {
        assert!(
            line.starts_with("wopfs mount \"$G\" /srv/views/agent"),
            "{line}"
        );
        let out = output_within(
            &mut recipe_command(self, line, mp, &[("G", g)], None),
            Duration::from_secs(60),
        );
        let m = Mounted::new(mp.to_path_buf(), self.daemon_pid(g));
        assert!(
            out.status.success(),
            "{line}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(is_mounted(mp), "{line} did not mount");
        m
    }
}

/// A Python every user can run (a per-user interpreter under /root is not).
pub fn python() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

/// The signing key (`A2A_GRANT_SIGNING_KEY`) of the tests' servers and
/// tokens: the bytes 0 to 31, base64.
pub const KEY_B64: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

/// How long a test server may take to start, or to stop once signalled.
pub const SERVER_DEADLINE: Duration = Duration::from_secs(30);

impl Env {
    /// `wopfs serve --socket SOCKET --root HOST --policy POLICY EXTRA…` with
    /// the signing key [`KEY_B64`]; POLICY is `policy` (TOML), written to
    /// `policy.toml` in the env's dir.
    pub fn serve_command(&self, socket: &Path, policy: &str, extra: &[&str]) -> Command {
        let policy_file = self.dir.path().join("policy.toml");
        fs::write(&policy_file, policy).unwrap();
        let mut cmd = Command::new(BIN);
        cmd.arg("--state-dir")
            .arg(&self.state)
            .arg("serve")
            .arg("--socket")
            .arg(socket)
            .arg("--root")
            .arg(&self.host)
            .arg("--policy")
            .arg(&policy_file)
            .args(extra)
            .env("A2A_GRANT_SIGNING_KEY", KEY_B64)
            .env_remove("WOPFS_STATE_DIR")
            .env("WOPFS_ENGINE", test_engine())
            .env_remove("WOPFS_LOG")
            .stdin(std::process::Stdio::null());
        cmd
    }
}

/// A `wopfs serve` daemon of a test. [`Server::start`] returns once its
/// socket is there (the server binds and listens before it puts the socket
/// in place); [`Server::stop`] signals it and waits. Dropping it always
/// stops it, and unmounts any view left mounted under the env's dir.
pub struct Server {
    child: Child,
    pub socket: PathBuf,
    /// The server's stderr.
    pub log: PathBuf,
    dir: PathBuf,
}

impl Server {
    /// Starts [`Env::serve_command`] on the socket `name` in the env's dir,
    /// its stderr in `name.log`; a server that exits first fails the test
    /// with its log.
    pub fn start(env: &Env, name: &str, policy: &str, extra: &[&str]) -> Server {
        Server::start_with(env, name, policy, extra, |_| {})
    }

    /// [`Server::start`], with `adjust` applied to the command first (to
    /// run the server as another user, say).
    pub fn start_with(
        env: &Env,
        name: &str,
        policy: &str,
        extra: &[&str],
        adjust: impl FnOnce(&mut Command),
    ) -> Server {
        let dir = env.dir.path().canonicalize().unwrap();
        let socket = dir.join(name);
        let log = dir.join(format!("{name}.log"));
        let mut cmd = env.serve_command(&socket, policy, extra);
        adjust(&mut cmd);
        let child = cmd
            .stdout(std::process::Stdio::null())
            .stderr(fs::File::create(&log).unwrap())
            .spawn()
            .expect("starting wopfs serve");
        let mut server = Server {
            child,
            socket,
            log,
            dir,
        };
        let mut exited = None;
        let up = poll_until(SERVER_DEADLINE, || {
            exited = server.child.try_wait().unwrap();
            server.socket.exists() || exited.is_some()
        });
        if let Some(st) = exited {
            panic!("the server exited ({st}): {}", server.log());
        }
        assert!(
            up,
            "the server did not start within {SERVER_DEADLINE:?}: {}",
            server.log()
        );
        server
    }

    /// SIGTERM, then its exit status (failing the test past the deadline).
    pub fn stop(&mut self) -> ExitStatus {
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        wait_child(&mut self.child, "the server after SIGTERM", SERVER_DEADLINE)
    }

    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let child = &mut self.child;
            if !poll_until(SERVER_DEADLINE, || !matches!(child.try_wait(), Ok(None))) {
                let _ = self.child.kill();
            }
            let _ = self.child.wait();
        }
        // Views the server mounted and a failed test left behind.
        for mp in wopfs_mounts_under(&self.dir) {
            teardown(&mp, None);
        }
    }
}

/// The mountpoints of wopfs views beneath `dir`.
fn wopfs_mounts_under(dir: &Path) -> Vec<PathBuf> {
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| {
            l.split_once(" - ")
                .and_then(|(_, fs)| fs.split(' ').nth(1))
                .is_some_and(|source| source.starts_with("wopfs:"))
        })
        .filter_map(|l| l.split(' ').nth(4).map(PathBuf::from))
        .filter(|mp| mp.starts_with(dir))
        .collect()
}

/// One HTTP/1.1 request on the Unix socket `socket`, as this process's
/// user; returns the status and the body. A body the server does not read
/// (it answered first) is not an error.
pub fn http(socket: &Path, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    use std::io::{Read, Write};
    let mut s = std::os::unix::net::UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    http_reply(&String::from_utf8_lossy(&out))
}

/// The status and body of a raw HTTP reply (status 0 when there is none).
pub fn http_reply(text: &str) -> (u16, String) {
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Whether the kernel engine can mount here (root, overlayfs, loop
/// devices), probed with a real mount. Tests of it skip, saying why, where
/// it cannot; with `WOPFS_TEST_KERNEL` set they fail instead.
pub fn kernel_engine_here() -> bool {
    let e = Env::new();
    e.write("f", "f");
    let g = e.grant(&["--allow", "**", "--mode", "read_write_overlay"]);
    let mp = e.mountpoint("probe");
    let out = e.wopfs(&["mount", &g, mp.to_str().unwrap(), "--engine", "kernel"]);
    if out.status.success() {
        drop(Mounted::new(mp, e.daemon_pid(&g)));
        return true;
    }
    let why = String::from_utf8_lossy(&out.stderr).trim().to_string();
    assert!(
        std::env::var_os("WOPFS_TEST_KERNEL").is_none(),
        "WOPFS_TEST_KERNEL is set but the kernel engine cannot run: {why}"
    );
    eprintln!("SKIP: the kernel engine cannot run here: {why}");
    false
}

/// The errno a change outside the write prefixes of grant `g`'s writable
/// view gets, by the engine serving it (`wopfs status`): the fuse engine
/// refuses it (EACCES); the kernel engine's overlay is read-only there.
pub fn outside_errno(env: &Env, g: &str) -> i32 {
    let st: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", g, "--json"])).expect("status --json");
    match st[0]["engine"].as_str() {
        Some("kernel") => libc::EROFS,
        _ => libc::EACCES,
    }
}

/// The wopfs binary as a command with the engine writable views get in
/// this run (`test_engine`), as `Env::wopfs` runs it: a test's own
/// commands then never fall back to `auto` (the kernel engine as root)
/// when the suite runs on the fuse engine, with or without scripts/test.sh.
pub fn wopfs_command() -> Command {
    let mut c = Command::new(BIN);
    c.env("WOPFS_ENGINE", test_engine());
    c
}

/// A shell whose cwd is `dir`, run command by command.
pub struct Shell {
    pub child: Child,
    stdin: ChildStdin,
    lines: mpsc::Receiver<String>,
}

impl Shell {
    pub fn start(dir: &Path) -> Shell {
        let mut child = Command::new("sh")
            .arg("-s")
            .current_dir(dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting sh inside the view");
        let stdin = child.stdin.take().unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        Shell {
            child,
            stdin,
            lines,
        }
    }

    /// Runs `cmd` in the shell; returns its output lines and exit status.
    pub fn run(&mut self, cmd: &str) -> (Vec<String>, i32) {
        writeln!(self.stdin, "{cmd}; echo \"rc=$?\"").unwrap();
        self.stdin.flush().unwrap();
        let mut out = Vec::new();
        loop {
            let l = self
                .lines
                .recv_timeout(Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("the shell did not answer {cmd:?}; so far {out:?}"));
            if let Some(rc) = l.strip_prefix("rc=") {
                return (out, rc.parse().unwrap());
            }
            out.push(l);
        }
    }
}

impl Drop for Shell {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
