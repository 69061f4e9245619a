//! The control API end to end: a live `wopfs serve`, the Python client of
//! the seed's interface (examples/python) run as an unprivileged agent,
//! a delegated read-only token, an approver's commit over the API, and bad
//! requests that get clear errors while the server keeps serving.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;

/// The API's policy: reasons required, `.env` denied, root approves.
const POLICY: &str = "enabled = true\nmax_files = 100\nmax_total_size_bytes = 10000000\n\
     allowed_modes = [\"read_only\", \"read_write_overlay\"]\nrequire_reason = true\n\
     deny_patterns = [\"**/.env\"]\napprover_uids = [0]\n";

fn start_server(env: &Env) -> Server {
    // Widened on purpose: the agents run as other uids.
    Server::start(env, "wopfs.sock", POLICY, &["--socket-mode", "0666"])
}

fn project(env: &Env) {
    env.write("src/payments/pay.py", "def apply_discount(amount):\n    # discount rounding bug\n    return int(amount * 100) / 100\n");
    env.write(
        "src/payments/cart.py",
        "from .pay import apply_discount\n# discount helpers\n",
    );
    env.write("docs/notes.md", "discount notes\n");
    env.write(".env", "DISCOUNT_SECRET=1\n");
}

fn python_dir(env: &Env) -> PathBuf {
    let d = env.dir.path().join("py");
    fs::create_dir_all(&d).unwrap();
    for f in ["wopfs_client.py", "agent_example.py"] {
        fs::copy(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("examples/python")
                .join(f),
            d.join(f),
        )
        .unwrap();
    }
    for p in [env.dir.path(), d.as_path()] {
        fs::set_permissions(p, fs::Permissions::from_mode(0o755)).unwrap();
    }
    for f in ["wopfs_client.py", "agent_example.py"] {
        fs::set_permissions(d.join(f), fs::Permissions::from_mode(0o644)).unwrap();
    }
    d
}

#[test]
fn a_python_agent_works_by_intent_and_an_approver_commits() {
    let env = Env::new();
    project(&env);
    let server = start_server(&env);
    let py = python_dir(&env);
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            python(),
        ])
        .arg(py.join("agent_example.py"))
        .arg(&server.socket)
        .env("PYTHONPATH", &py)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "agent: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let files: Vec<&str> = report["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f.as_str().unwrap())
        .collect();
    assert!(files.contains(&"src/payments/pay.py"), "{report}");
    assert!(!files.iter().any(|f| f.contains(".env")));
    assert_eq!(report["secret"], "denied");
    assert!(
        report["self_commit"].as_str().unwrap().starts_with("403"),
        "{report}"
    );
    let patches = report["patches"].as_array().unwrap();
    assert!(
        patches
            .iter()
            .any(|p| p[0] == "src/payments/pay.py" && p[1] == "update"),
        "{report}"
    );
    let g = report["grant_id"].as_str().unwrap().to_string();
    assert!(report["grants"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x == g.as_str()));
    // The sub-agent's token: signed, read-only, narrowed to pay.py.
    let token = report["token"].as_str().unwrap();
    let v = wopfs_command()
        .args([
            "token",
            "verify",
            token,
            "--audience",
            "reviewer-agent",
            "--json",
        ])
        .env("A2A_GRANT_SIGNING_KEY", KEY_B64)
        .output()
        .unwrap();
    assert!(v.status.success(), "{}", String::from_utf8_lossy(&v.stderr));
    let claims: serde_json::Value = serde_json::from_slice(&v.stdout).unwrap();
    assert_eq!(claims["mode"], "read_only");
    assert_eq!(claims["parent_grant_id"], g.as_str());
    assert_eq!(claims["allow_patterns"].as_array().unwrap().len(), 1);
    // The sub-agent mounts the view its token describes: pay.py, read-only.
    let sub = env.mountpoint("sub");
    let out = wopfs_command()
        .args([
            "--state-dir",
            env.state.to_str().unwrap(),
            "mount",
            "--token",
            token,
        ])
        .args([
            "--root",
            env.host.to_str().unwrap(),
            "--audience",
            "reviewer-agent",
            sub.to_str().unwrap(),
        ])
        .env("A2A_GRANT_SIGNING_KEY", KEY_B64)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let sub_grant = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let m = Mounted::new(sub.clone(), env.daemon_pid(&sub_grant));
    assert!(fs::read_to_string(m.path("src/payments/pay.py"))
        .unwrap()
        .contains("def apply_discount"));
    assert_eq!(
        errno(fs::metadata(m.path("src/payments/cart.py"))),
        libc::ENOENT
    );
    assert_eq!(
        errno(fs::write(m.path("src/payments/pay.py"), "x")),
        libc::EROFS
    );
    drop(m);
    let wrong = wopfs_command()
        .args([
            "--state-dir",
            env.state.to_str().unwrap(),
            "mount",
            "--token",
            token,
        ])
        .args([
            "--root",
            env.host.to_str().unwrap(),
            "--audience",
            "someone-else",
            sub.to_str().unwrap(),
        ])
        .env("A2A_GRANT_SIGNING_KEY", KEY_B64)
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(
        String::from_utf8_lossy(&wrong.stderr).contains("someone-else"),
        "{}",
        String::from_utf8_lossy(&wrong.stderr)
    );
    // The host is untouched until an approver commits, over the API.
    assert!(fs::read_to_string(env.host.join("src/payments/pay.py"))
        .unwrap()
        .contains("int(amount"));
    let commit =
        Command::new(python())
            .args([
                "-c",
                &format!(
            "import sys; sys.path.insert(0, {py:?}); from wopfs_client import WopfsClient; \
             print(WopfsClient({sock:?}).commit({g:?}, approver='ci-approver'))",
            py = py.to_str().unwrap(), sock = server.socket.to_str().unwrap()),
            ])
            .output()
            .unwrap();
    assert!(
        commit.status.success(),
        "{}",
        String::from_utf8_lossy(&commit.stderr)
    );
    assert!(fs::read_to_string(env.host.join("src/payments/pay.py"))
        .unwrap()
        .contains("round(amount, 2)"));
    assert!(
        no_mount_of_grant(&g),
        "open_view's mount was not stopped before the commit"
    );
    // Every call was an audited WorkspaceOperation.
    let log: serde_json::Value = serde_json::from_str(&env.ok(&["audit", "--json"])).unwrap();
    let recs = log.as_array().unwrap();
    for op in [
        "wopfs.api.search",
        "wopfs.api.open_view",
        "wopfs.api.delegate",
        "wopfs.api.patches",
        "wopfs.api.commit",
    ] {
        assert!(
            recs.iter()
                .any(|r| r["operationType"] == op && r["details"]["taskState"] == "completed"),
            "{op}"
        );
        assert!(
            recs.iter()
                .any(|r| r["operationType"] == op && r["details"]["taskState"] == "queued"),
            "{op}"
        );
    }
    assert!(
        recs.iter()
            .any(|r| r["operationType"] == "wopfs.api.commit"
                && r["details"]["taskState"] == "failed")
    );
    env.ok(&["audit", "--verify"]);
    drop(server);
}

#[test]
fn bad_requests_get_clear_errors_and_the_server_keeps_serving() {
    let env = Env::new();
    project(&env);
    let server = start_server(&env);
    let s = &server.socket;
    let health = || {
        assert_eq!(
            http(s, "GET", "/v1/health", b"").0,
            200,
            "the server stopped serving"
        )
    };
    let cases: Vec<(&str, &str, Vec<u8>, u16, &str)> = vec![
        (
            "POST",
            "/v1/search",
            b"{not json".to_vec(),
            400,
            "malformed request",
        ),
        (
            "POST",
            "/v1/search",
            br#"{"query": 3}"#.to_vec(),
            422,
            "malformed request",
        ),
        (
            "POST",
            "/v1/search",
            br#"{"query": "x", "bogus": 1}"#.to_vec(),
            422,
            "bogus",
        ),
        (
            "POST",
            "/v1/request_access",
            br#"{"files": ["src/payments/pay.py"], "mode": "read_only"}"#.to_vec(),
            403,
            "reason is required",
        ),
        (
            "POST",
            "/v1/request_access",
            br#"{"files": [".env"], "mode": "read_only", "reason": "r"}"#.to_vec(),
            400,
            "no file",
        ),
        (
            "POST",
            "/v1/request_access",
            br#"{"files": ["../etc/passwd"], "mode": "read_only", "reason": "r"}"#.to_vec(),
            400,
            "invalid path",
        ),
        (
            "POST",
            "/v1/request_access",
            br#"{"files": ["src/payments/pay.py"], "mode": "read_write_direct", "reason": "r"}"#
                .to_vec(),
            403,
            "not allowed",
        ),
        (
            "GET",
            "/v1/grants/g-0000000000000000/patches",
            vec![],
            404,
            "unknown grant",
        ),
        (
            "POST",
            "/v1/grants/g-0000000000000000/reject",
            br#"{"reason": "x"}"#.to_vec(),
            404,
            "unknown grant",
        ),
        ("POST", "/v1/search", vec![b'{'; 2 << 20], 413, ""),
        ("GET", "/v1/nothing", vec![], 404, "no such endpoint"),
    ];
    for (method, path, body, status, text) in cases {
        let (got, reply) = http(s, method, path, &body);
        assert_eq!(got, status, "{method} {path}: {reply}");
        assert!(reply.contains(text), "{method} {path}: {reply}");
        health();
    }
    // A grant made by uid 1000 is invisible to another user, and its
    // commit is refused to a non-approver.
    let py = python_dir(&env);
    let make = Command::new("setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups", python(), "-c"])
        .arg(format!(
            "import sys; sys.path.insert(0, {py:?}); from wopfs_client import *; \
             c = WopfsClient({sock:?}); g = c.request_access(files=['docs/notes.md'], mode=WorkspaceMode.READ_ONLY, reason='r'); print(g.grant_id)",
            py = py.to_str().unwrap(), sock = s.to_str().unwrap()))
        .output()
        .unwrap();
    assert!(
        make.status.success(),
        "{}",
        String::from_utf8_lossy(&make.stderr)
    );
    let g = String::from_utf8_lossy(&make.stdout).trim().to_string();
    let as_2000 = |code: &str| {
        Command::new("setpriv")
            .args(["--reuid", "2000", "--regid", "2000", "--clear-groups", python(), "-c"])
            .arg(format!("import sys; sys.path.insert(0, {py:?}); from wopfs_client import *; c = WopfsClient({sock:?}); {code}",
                py = py.to_str().unwrap(), sock = s.to_str().unwrap()))
            .output()
            .unwrap()
    };
    let other = as_2000(&format!("c.patches({g:?})"));
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("404: unknown grant"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    let other = as_2000(&format!("c.commit({g:?})"));
    assert!(
        String::from_utf8_lossy(&other.stderr).contains("403"),
        "{}",
        String::from_utf8_lossy(&other.stderr)
    );
    health();
    drop(server);
}

#[test]
fn diagnostics_are_redacted() {
    let env = Env::new();
    project(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::write(m.path("src/payments/pay.py"), "SECRET_CONTENT_MARKER\n").unwrap();
    drop(m);
    let out = env.dir.path().join("diag.json");
    let e = env.fails(&["diagnostics", "-o", out.to_str().unwrap()]);
    assert!(e.contains("--redacted"), "{e}");
    env.ok(&["diagnostics", "--redacted", "-o", out.to_str().unwrap()]);
    let text = fs::read_to_string(&out).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(v["sessions"][0]["grant_id"], g.as_str());
    assert_eq!(v["sessions"][0]["pending"], 1);
    for leak in [
        "SECRET_CONTENT_MARKER",
        "DISCOUNT_SECRET",
        "pay.py",
        "A2A_GRANT",
        KEY_B64,
    ] {
        assert!(!text.contains(leak), "the bundle leaks {leak:?}");
    }
}
