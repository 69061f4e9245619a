//! The denied-access log with real mounts, on the engine under test
//! (`WOPFS_TEST_ENGINE`): hidden, denied, out-of-scope and read-only-view
//! attempts are logged with their operation, errno, count, pid and
//! command; a listing never logs a hidden name; the cap drops and says so;
//! the log outlives the mount and is summed up in the audit log.
//!
//! The engines differ, and each one's behaviour is asserted: the fuse
//! engine refuses changes itself (logged); the kernel engine's overlay
//! never asks the daemon about a change (its lower is read-only, and
//! outside the write prefixes the kernel answers EROFS by itself), so only
//! its lookups of hidden names are logged.

mod common;

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn denied(env: &Env, g: &str) -> Value {
    serde_json::from_str(&env.ok(&["denied", g, "--json"])).expect("denied --json")
}

/// The log once `cond` holds on it (the file is at most a second behind
/// the daemon).
fn denied_when(env: &Env, g: &str, what: &str, cond: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    let held = poll_until(Duration::from_secs(15), || {
        last = denied(env, g);
        cond(&last)
    });
    assert!(held, "timed out waiting for {what}: {last:#}");
    last
}

fn entries(v: &Value) -> Vec<Value> {
    v["entries"].as_array().cloned().unwrap_or_default()
}

/// The entry for (path, op), if any.
fn entry(v: &Value, path: &str, op: &str) -> Option<Value> {
    entries(v)
        .into_iter()
        .find(|e| e["path"] == path && e["op"] == op)
}

fn engine_of(env: &Env, g: &str) -> String {
    let st: Value = serde_json::from_str(&env.ok(&["status", g, "--json"])).unwrap();
    st[0]["engine"].as_str().unwrap_or("none").to_string()
}

/// Runs `prog args` (failure expected or not), returning its pid.
fn run(prog: &str, args: &[&Path], extra: &[&str]) -> (u32, bool) {
    let mut cmd = Command::new(prog);
    cmd.args(extra).args(args);
    let mut child = cmd
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawning");
    let pid = child.id();
    let st = wait_child(&mut child, prog, Duration::from_secs(30));
    (pid, st.success())
}

fn setxattr(p: &Path, name: &str) -> i32 {
    let path = CString::new(p.as_os_str().as_bytes()).unwrap();
    let name = CString::new(name).unwrap();
    let r = unsafe { libc::setxattr(path.as_ptr(), name.as_ptr(), b"1".as_ptr().cast(), 1, 0) };
    if r == 0 {
        0
    } else {
        std::io::Error::last_os_error().raw_os_error().unwrap()
    }
}

fn project(env: &Env) {
    env.write("README.md", "# project\n");
    env.write("src/a.py", "a = 1\n");
    env.write(".env", "SECRET=1\n");
    env.write("notes/public.txt", "hello\n");
    env.write("notes/private.txt", "diary\n");
}

#[test]
fn hidden_denied_out_of_scope_and_xattr_attempts_are_logged() {
    let env = Env::new();
    project(&env);
    let engine = test_engine();
    let g = env.grant(&[
        "--allow",
        "**",
        "--deny",
        "notes/private.txt",
        "--mode",
        "read_write_overlay",
        "--write-prefix",
        "src",
    ]);
    let m = env.mount(&g, &env.mountpoint("mp"), &[]);
    let kernel = engine_of(&env, &g) == "kernel";
    assert_eq!(kernel, engine == "kernel", "the engine under test serves");

    // A hidden name (the builtin policy denies .env), a --deny name, and
    // a name the host does not have (not logged: ordinary probing).
    let (cat_pid, ok) = run("cat", &[&m.path(".env")], &[]);
    assert!(!ok);
    let (_, ok) = run("cat", &[&m.path("notes/private.txt")], &[]);
    assert!(!ok);
    let (_, ok) = run("cat", &[&m.path("no-such-file")], &[]);
    assert!(!ok);
    // Changes outside the write prefix: refused by the fuse engine
    // (EACCES, logged), by the kernel itself on the kernel engine (EROFS,
    // never reaching the daemon).
    let mut tee_pids = Vec::new();
    for _ in 0..3 {
        let (pid, ok) = run("tee", &[&m.path("README.md")], &["-a"]);
        assert!(!ok);
        tee_pids.push(pid);
    }
    let out = std::fs::create_dir(m.path("newdir"));
    assert_eq!(errno(out), if kernel { libc::EROFS } else { libc::EACCES });
    // An xattr no view lets the agent set, inside the prefix.
    let x = setxattr(&m.path("src/a.py"), "security.wopfs_test");
    if !kernel {
        assert_eq!(x, libc::EOPNOTSUPP);
    }

    let want = |v: &Value| {
        entry(v, ".env", "lookup").is_some()
            && entry(v, "notes/private.txt", "lookup").is_some()
            && (kernel || entry(v, "src/a.py", "setxattr").is_some())
    };
    let v = denied_when(&env, &g, "the refusals in the log", want);
    assert_eq!(v["grant_id"], g);
    assert_eq!(v["cap"], 1024);
    assert_eq!(v["dropped"], 0);

    let e = entry(&v, ".env", "lookup").unwrap();
    assert_eq!(e["errno"], libc::ENOENT);
    assert_eq!(e["error"], "ENOENT");
    assert_eq!(e["reason"], "a name the grant denies");
    assert_eq!(e["pid"], cat_pid, "{e:#}");
    assert_eq!(e["comm"], "cat", "{e:#}");
    assert!(e["count"].as_u64().unwrap() >= 1);
    assert!(e["first"].as_str().unwrap() <= e["last"].as_str().unwrap());
    let p = entry(&v, "notes/private.txt", "lookup").unwrap();
    assert_eq!(p["reason"], "a name the grant denies");
    assert!(
        entries(&v).iter().all(|e| e["path"] != "no-such-file"),
        "a name the host lacks is not logged: {v:#}"
    );

    if kernel {
        // Only lookups reach the kernel engine's daemon.
        let ops: Vec<_> = entries(&v).iter().map(|e| e["op"].clone()).collect();
        assert!(ops.iter().all(|o| o == "lookup"), "{v:#}");
    } else {
        let o = entry(&v, "README.md", "open").expect("the write outside the prefix");
        assert_eq!(o["errno"], libc::EACCES);
        assert_eq!(o["reason"], "outside the write prefixes");
        assert_eq!(o["count"], 3, "one entry, counted: {o:#}");
        assert_eq!(o["comm"], "tee");
        assert_eq!(o["pid"], tee_pids[0], "the first one's process: {o:#}");
        assert!(o["first"].as_str().unwrap() <= o["last"].as_str().unwrap());
        let d = entry(&v, "newdir", "mkdir").expect("mkdir outside the prefix");
        assert_eq!(d["error"], "EACCES");
        assert_eq!(d["pid"], std::process::id());
        let x = entry(&v, "src/a.py", "setxattr").unwrap();
        assert_eq!(x["error"], "EOPNOTSUPP");
        assert_eq!(x["detail"], "security.wopfs_test");
    }

    // The text form names them.
    let text = env.ok(&["denied", &g]);
    assert!(text.contains(".env") && text.contains("ENOENT"), "{text}");

    // Unmounted: the log stays, and the audit log sums it up.
    drop(m);
    let after = denied(&env, &g);
    assert_eq!(entries(&after).len(), entries(&v).len());
    let audit: Value = serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
    let sums: Vec<_> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operationType"] == "wopfs.view.denied")
        .collect();
    assert_eq!(sums.len(), 1, "one summary at unmount: {audit:#}");
    let d = &sums[0]["details"];
    assert_eq!(d["attempts"], after["attempts"]);
    assert!(
        d["top"]
            .as_array()
            .unwrap()
            .iter()
            .any(|t| t["path"] == ".env"),
        "{d:#}"
    );

    // A later mount continues the same log.
    let m = env.mount(&g, &env.mountpoint("mp2"), &[]);
    let (_, ok) = run("cat", &[&m.path(".env")], &[]);
    assert!(!ok);
    let before = after["attempts"].as_u64().unwrap();
    denied_when(&env, &g, "the second mount's attempt", |v| {
        v["attempts"].as_u64().unwrap() > before
    });
}

#[test]
fn a_listing_never_logs_a_hidden_name_the_agent_did_not_name() {
    let env = Env::new();
    project(&env);
    env.write(".ssh/id_rsa", "key\n");
    env.write("src/.env.local", "X=1\n");
    env.write("src/server.pem", "pem\n");
    let g = env.grant(&[
        "--allow",
        "**",
        "--deny",
        "**/*.pem",
        "--mode",
        "read_write_overlay",
    ]);
    let m = env.mount(&g, &env.mountpoint("mp"), &[]);
    // Every way of listing the view, with attributes.
    let out = output_within(
        Command::new("ls").arg("-laR").arg(&m.mp),
        Duration::from_secs(30),
    );
    assert!(out.status.success());
    let listed = String::from_utf8_lossy(&out.stdout);
    assert!(
        !listed.contains(".env") && !listed.contains("id_rsa"),
        "{listed}"
    );
    let out = output_within(Command::new("find").arg(&m.mp), Duration::from_secs(30));
    assert!(out.status.success());
    assert_eq!(list_tree(&m.mp).len(), 6, "{:?}", list_tree(&m.mp));
    // Then one hidden name, asked for: the sentinel that the log is current.
    let _ = std::fs::metadata(m.path("src/server.pem"));
    let v = denied_when(&env, &g, "the sentinel", |v| {
        entry(v, "src/server.pem", "lookup").is_some()
    });
    let paths: Vec<_> = entries(&v).iter().map(|e| e["path"].clone()).collect();
    assert_eq!(paths, ["src/server.pem"], "only the named one: {v:#}");
}

#[test]
fn a_read_only_view_logs_hidden_lookups_and_the_kernel_refuses_its_writes() {
    let env = Env::new();
    project(&env);
    let g = env.grant(&["--allow", "**", "--mode", "read_only"]);
    let m = env.mount(&g, &env.mountpoint("mp"), &[]);
    // A read-only view is mounted read-only: the kernel answers EROFS to
    // every change before the daemon sees it (whatever the engine of
    // writable views), so these are not in the log.
    let (_, ok) = run("tee", &[&m.path("README.md")], &["-a"]);
    assert!(!ok);
    assert_eq!(errno(std::fs::write(m.path("new.txt"), "x")), libc::EROFS);
    assert_eq!(errno(std::fs::create_dir(m.path("d"))), libc::EROFS);
    let (pid, ok) = run("cat", &[&m.path(".env")], &[]);
    assert!(!ok);
    let v = denied_when(&env, &g, "the hidden lookup", |v| {
        entry(v, ".env", "lookup").is_some()
    });
    assert_eq!(entry(&v, ".env", "lookup").unwrap()["pid"], pid);
    assert_eq!(entries(&v).len(), 1, "{v:#}");
}

#[test]
fn many_hidden_names_are_capped_and_the_rest_counted_as_dropped() {
    let env = Env::new();
    env.write("README.md", "# project\n");
    env.write("secrets/README", "the keys are hidden\n");
    for i in 0..1100 {
        env.write(&format!("secrets/s{i:04}.key"), "k");
    }
    let g = env.grant(&[
        "--allow",
        "**",
        "--deny",
        "secrets/*.key",
        "--mode",
        "read_write_overlay",
    ]);
    let m = env.mount(&g, &env.mountpoint("mp"), &[]);
    // secrets/ shows (its README): the keys in it are hidden.
    for i in 0..1100 {
        assert!(std::fs::metadata(m.path(&format!("secrets/s{i:04}.key"))).is_err());
    }
    let v = denied_when(&env, &g, "1100 attempts", |v| v["attempts"] == 1100);
    assert_eq!(entries(&v).len(), 1024);
    assert_eq!(v["dropped"], 1100 - 1024);
    let text = env.ok(&["denied", &g]);
    assert!(
        text.contains("76 more refused request(s) dropped: the log keeps at most 1024 names"),
        "{}",
        text.lines().last().unwrap_or_default()
    );
}

/// The API's policy: `.env` denied (and the builtin denies), root approves.
const POLICY: &str = "enabled = true\nmax_files = 100\nmax_total_size_bytes = 10000000\n\
     allowed_modes = [\"read_only\", \"read_write_overlay\"]\n\
     deny_patterns = [\"**/.env\"]\napprover_uids = [0]\n";

#[test]
fn the_api_and_the_python_client_show_the_log() {
    let env = Env::new();
    env.write("src/pay.py", "def pay():\n    return 1  # discount\n");
    env.write(".env", "SECRET=1\n");
    let server = Server::start(&env, "wopfs.sock", POLICY, &[]);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    // An agent opens a view by intent, reaches for .env through the
    // mount, and reads its own denied log back through the client.
    let script = r#"
import json, os, sys, time
from wopfs_client import WopfsClient, WorkspaceMode
c = WopfsClient(sys.argv[1])
v = c.open_view(purpose="fix pay", hints=["discount"], mode=WorkspaceMode.READ_WRITE_OVERLAY)
try:
    open(os.path.join(v.mount_path, ".env")).read()
    print("READ"); sys.exit(1)
except FileNotFoundError:
    pass
for _ in range(150):
    d = c.denied(v.grant.grant_id)
    if any(e["path"] == ".env" for e in d["entries"]):
        break
    time.sleep(0.1)
print(json.dumps({"pid": os.getpid(), "denied": d}))
"#;
    let out = output_within(
        Command::new(python())
            .arg("-c")
            .arg(script)
            .arg(&server.socket)
            .env("PYTHONPATH", &client),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "python: {}\n{}",
        String::from_utf8_lossy(&out.stderr),
        server.log()
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    let d = &r["denied"];
    let g = d["grant_id"].as_str().unwrap().to_string();
    let e = entry(d, ".env", "lookup").expect("the .env attempt");
    assert_eq!(e["pid"], r["pid"], "{e:#}");
    assert_eq!(e["error"], "ENOENT");
    // The same through plain HTTP, and the CLI agrees.
    let (status, body) = http(
        &server.socket,
        "GET",
        &format!("/v1/grants/{g}/denied"),
        b"",
    );
    assert_eq!(status, 200, "{body}");
    let v: Value = serde_json::from_str(&body).unwrap();
    assert!(entry(&v, ".env", "lookup").is_some(), "{v:#}");
    assert_eq!(
        entries(&denied(&env, &g)).len(),
        entries(&v).len(),
        "CLI and API read the same log"
    );
    let (status, _) = http(
        &server.socket,
        "GET",
        "/v1/grants/g-0000000000000000/denied",
        b"",
    );
    assert_eq!(status, 404);
}

#[test]
fn wopfs_run_logs_what_its_command_tried() {
    let env = Env::new();
    project(&env);
    let g = env.grant(&["--allow", "**", "--mode", "read_write_overlay"]);
    let at = env.dir.path().join("ws");
    let out = output_within(
        wopfs_command()
            .arg("--state-dir")
            .arg(&env.state)
            .args(["run", &g, "--at"])
            .arg(&at)
            .args(["--", "sh", "-c", "cat .env; true"])
            .env("WOPFS_ENGINE", test_engine()),
        Duration::from_secs(60),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The run has ended: the log was saved and summed up at its end.
    let v = denied(&env, &g);
    let e = entry(&v, ".env", "lookup").expect("the run's attempt");
    assert_eq!(e["comm"], "cat", "{e:#}");
    let audit: Value = serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
    assert!(
        audit
            .as_array()
            .unwrap()
            .iter()
            .any(|r| r["operationType"] == "wopfs.view.denied"),
        "{audit:#}"
    );
}
