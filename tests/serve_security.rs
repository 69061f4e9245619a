//! `wopfs serve` never goes around host permissions: every call acts with
//! the caller's own (really uid 1000 and 2000, through setpriv), the socket
//! is private unless widened, one server owns it, stopping the server
//! unmounts its views, and numbers from callers are range-checked.

mod common;

use std::fs;
use std::os::unix::fs::{chown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use common::*;

/// The unprivileged user every test machine has (see tests/api.rs).
const USER: u32 = 1000;
/// A uid with no passwd entry and no groups.
const STRANGER: u32 = 2000;
/// A group the tests create, with USER as a (supplementary) member.
const GROUP: &str = "wopfs-test-readers";

fn sh(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd).args(args).output().unwrap()
}

/// USER's name, and the gid of [`GROUP`] with USER as a member (created
/// once; left in place, so concurrent runs agree).
fn member_group() -> (String, u32) {
    static G: OnceLock<(String, u32)> = OnceLock::new();
    G.get_or_init(|| {
        let pw = String::from_utf8(sh("getent", &["passwd", &USER.to_string()]).stdout).unwrap();
        let user = pw.split(':').next().unwrap().trim().to_string();
        assert!(!user.is_empty(), "uid {USER} has no passwd entry");
        let mut gid = None;
        // /etc/group may be locked by a concurrent change: retry until the
        // membership shows.
        poll_until(Duration::from_secs(10), || {
            let line = String::from_utf8(sh("getent", &["group", GROUP]).stdout).unwrap();
            let fields: Vec<&str> = line.trim().split(':').collect();
            if fields.len() != 4 {
                sh("groupadd", &[GROUP]);
            } else if fields[3].split(',').any(|m| m == user) {
                gid = Some(fields[2].parse().unwrap());
            } else {
                sh("gpasswd", &["-a", &user, GROUP]);
            }
            gid.is_some()
        });
        match gid {
            Some(gid) => (user, gid),
            None => panic!("cannot set up group {GROUP} with member {user}"),
        }
    })
    .clone()
}

/// A test env whose temp dir other users may traverse (the host tree and
/// the socket live in it).
fn env() -> Env {
    let env = Env::new();
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    env
}

/// The servers' policy: every mode, no reason needed, `.env` denied, root
/// approves.
const POLICY: &str = "enabled = true\nmax_files = 100\nmax_total_size_bytes = 10000000\n\
     allowed_modes = [\"read_only\", \"read_write_overlay\", \"read_write_direct\"]\n\
     require_reason = false\ndeny_patterns = [\"**/.env\"]\napprover_uids = [0]\n";

fn serve_cmd(env: &Env, socket: &Path, extra: &[&str]) -> Command {
    env.serve_command(socket, POLICY, extra)
}

fn start(env: &Env, name: &str, extra: &[&str]) -> Server {
    Server::start(env, name, POLICY, extra)
}

/// One raw HTTP request as root; returns (status, body).
fn http(socket: &Path, method: &str, path: &str, body: &str) -> (u16, String) {
    common::http(socket, method, path, body.as_bytes())
}

const CLIENT: &str = r#"
import os, socket, sys
what = sys.argv[1]
if what == "read":
    try:
        with open(sys.argv[2]) as f:
            print("ok " + f.read())
    except OSError as e:
        print("errno %d" % e.errno)
    sys.exit(0)
sock, method, path, body = sys.argv[2:6]
s = socket.socket(socket.AF_UNIX)
try:
    s.connect(sock)
except OSError as e:
    print("connect-errno %d" % e.errno)
    sys.exit(0)
b = body.encode()
s.sendall(("%s %s HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
           "Content-Length: %d\r\nConnection: close\r\n\r\n" % (method, path, len(b))).encode() + b)
out = b""
while True:
    d = s.recv(65536)
    if not d:
        break
    out += d
sys.stdout.write(out.decode())
"#;

/// Who runs a client: a uid with its login groups, or with none.
#[derive(Clone, Copy)]
enum Who {
    /// USER with its groups from the group database (GROUP among them).
    User,
    /// STRANGER: no passwd entry, no groups.
    Stranger,
}

fn run_as(who: Who, args: &[&str]) -> String {
    let mut cmd = Command::new("setpriv");
    match who {
        Who::User => cmd.args([
            "--reuid",
            &USER.to_string(),
            "--regid",
            &USER.to_string(),
            "--init-groups",
        ]),
        Who::Stranger => cmd.args([
            "--reuid",
            &STRANGER.to_string(),
            "--regid",
            &STRANGER.to_string(),
            "--clear-groups",
        ]),
    };
    let out = cmd
        .arg(python())
        .args(["-c", CLIENT])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A request as `who`: Ok((status, body)), or Err(errno) if it could not connect.
fn http_as(
    who: Who,
    socket: &Path,
    method: &str,
    path: &str,
    body: &str,
) -> Result<(u16, String), i32> {
    let out = run_as(who, &["http", socket.to_str().unwrap(), method, path, body]);
    match out.strip_prefix("connect-errno ") {
        Some(n) => Err(n.trim().parse().unwrap()),
        None => Ok(http_reply(&out)),
    }
}

/// Reads a file as `who`: Ok(content) or Err(errno).
fn read_as(who: Who, path: &Path) -> Result<String, i32> {
    let out = run_as(who, &["read", path.to_str().unwrap()]);
    match out.strip_prefix("ok ") {
        Some(c) => Ok(c.to_string()),
        None => Err(out.trim().strip_prefix("errno ").unwrap().parse().unwrap()),
    }
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn hit_paths(body: &str) -> Vec<String> {
    let mut v: Vec<String> = json(body)
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["path"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn grant_paths(grant: &serde_json::Value) -> Vec<String> {
    let mut v: Vec<String> = grant["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap().to_string())
        .collect();
    v.sort();
    v
}

fn set_mode(p: &Path, mode: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(mode)).unwrap();
}

/// A host tree in which one common word ("zebrafish") is in every file;
/// what differs is who may read each.
fn tree(env: &Env, marker: &str) {
    let (_, gid) = member_group();
    env.write("src/handler.py", "def handler():\n    return 'zebrafish'\n");
    // Root-only, in a directory everyone may list.
    env.write(
        "src/config_rootonly.py",
        &format!("zebrafish = 'ROOTONLY_PASSWORD_{marker}'\n"),
    );
    set_mode(&env.host.join("src/config_rootonly.py"), 0o600);
    env.write(
        "secret/rootonly.txt",
        &format!("zebrafish ROOTONLY_PASSWORD_{marker}\n"),
    );
    set_mode(&env.host.join("secret/rootonly.txt"), 0o600);
    // World-readable, inside a root-only directory.
    env.write(
        "private/notes.md",
        &format!("zebrafish PRIVATEDIR_{marker}\n"),
    );
    set_mode(&env.host.join("private"), 0o700);
    // Readable through GROUP (a supplementary group of USER) ...
    env.write(
        "team/shared.md",
        &format!("zebrafish GROUPSHARED_{marker}\n"),
    );
    chown(env.host.join("team/shared.md"), None, Some(gid)).unwrap();
    set_mode(&env.host.join("team/shared.md"), 0o640);
    // ... and through USER's primary group.
    env.write(
        "team/primary.md",
        &format!("zebrafish PRIMARYGROUP_{marker}\n"),
    );
    chown(env.host.join("team/primary.md"), None, Some(USER)).unwrap();
    set_mode(&env.host.join("team/primary.md"), 0o640);
}

fn marker() -> String {
    format!(
        "{}{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

const VISIBLE_TO_USER: [&str; 3] = ["src/handler.py", "team/primary.md", "team/shared.md"];

#[test]
fn a_root_only_file_is_never_searched_granted_or_mounted_for_another_uid() {
    let env = env();
    let m = marker();
    tree(&env, &m);
    // Widened on purpose, so both test users may connect.
    let server = start(&env, "api.sock", &["--socket-mode", "0666"]);
    let s = &server.socket;
    let root_only = format!("ROOTONLY_PASSWORD_{m}");
    let search = |q: &str| format!(r#"{{"query": "{q}", "limit": 100}}"#);

    // Search: the marker of a root-only file is not found; what the user
    // may read (through either group) is.
    let (st, body) = http_as(Who::User, s, "POST", "/v1/search", &search(&root_only)).unwrap();
    assert_eq!((st, body.trim()), (200, "[]"));
    let (st, body) = http_as(
        Who::User,
        s,
        "POST",
        "/v1/search",
        &search(&format!("PRIVATEDIR_{m}")),
    )
    .unwrap();
    assert_eq!((st, body.trim()), (200, "[]"));
    let (st, body) = http_as(Who::User, s, "POST", "/v1/search", &search("zebrafish")).unwrap();
    assert_eq!(st, 200, "{body}");
    assert_eq!(hit_paths(&body), VISIBLE_TO_USER);
    assert!(!body.contains(&root_only), "{body}");
    // A uid with no groups sees only the world-readable file.
    let (st, body) = http_as(Who::Stranger, s, "POST", "/v1/search", &search("zebrafish")).unwrap();
    assert_eq!(st, 200, "{body}");
    assert_eq!(hit_paths(&body), ["src/handler.py"]);
    // Root still finds it.
    let (st, body) = http(s, "POST", "/v1/search", &search(&root_only));
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        hit_paths(&body),
        ["secret/rootonly.txt", "src/config_rootonly.py"]
    );

    // request_access: an unreadable file gets the very answer an absent
    // one gets; a group-readable one is granted.
    let ask = |who: Who, files: &[&str]| {
        let body = format!(
            r#"{{"files": {}, "mode": "read_only", "reason": "r"}}"#,
            serde_json::json!(files)
        );
        http_as(who, s, "POST", "/v1/request_access", &body).unwrap()
    };
    for f in [
        "secret/rootonly.txt",
        "src/config_rootonly.py",
        "private/notes.md",
    ] {
        let absent = f.replace(".", "_absent.");
        let (st, reply) = ask(Who::User, &[f]);
        assert_eq!(st, 400, "{f}: {reply}");
        assert_eq!(reply.replace(f, &absent), ask(Who::User, &[&absent]).1);
        // Asked for beside a readable file: an unknown path, like an absent one.
        let (st, reply) = ask(Who::User, &["src/handler.py", f]);
        assert_eq!(st, 400, "{f}: {reply}");
        assert!(reply.contains("unknown path"), "{reply}");
        assert_eq!(
            reply.replace(f, &absent),
            ask(Who::User, &["src/handler.py", &absent]).1
        );
    }
    let body =
        r#"{"files": ["team/shared.md", "team/primary.md"], "mode": "read_only", "reason": "r"}"#;
    let (st, reply) = http_as(Who::User, s, "POST", "/v1/request_access", body).unwrap();
    assert_eq!(st, 200, "{reply}");
    let (st, reply) = http_as(Who::Stranger, s, "POST", "/v1/request_access", body).unwrap();
    assert_eq!(st, 400, "{reply}");
    let body = r#"{"files": ["secret/rootonly.txt"], "mode": "read_only", "reason": "r"}"#;
    let (st, reply) = http(s, "POST", "/v1/request_access", body);
    assert_eq!(st, 200, "root: {reply}");
    // A direct view writes with the server's privileges: not for USER.
    let body = r#"{"files": ["src/handler.py"], "mode": "read_write_direct", "reason": "r"}"#;
    let (st, reply) = http_as(Who::User, s, "POST", "/v1/request_access", body).unwrap();
    assert_eq!(st, 403, "{reply}");
    assert!(reply.contains("read_write_direct"), "{reply}");

    // open_view: the grant and the mount hold only what USER may read.
    let body = r#"{"purpose": "zebrafish", "max_files": 100, "mode": "read_write_overlay"}"#;
    let (st, reply) = http_as(Who::User, s, "POST", "/v1/open_view", body).unwrap();
    assert_eq!(st, 200, "{reply}");
    let v = json(&reply);
    assert_eq!(grant_paths(&v["grant"]), VISIBLE_TO_USER);
    let mp = PathBuf::from(v["mount_path"].as_str().unwrap());
    let _view = Mounted::new(mp.clone(), None);
    assert!(is_mounted(&mp));
    assert!(read_as(Who::User, &mp.join("src/handler.py"))
        .unwrap()
        .contains("zebrafish"));
    assert!(read_as(Who::User, &mp.join("team/shared.md"))
        .unwrap()
        .contains("GROUPSHARED"));
    for f in [
        "secret/rootonly.txt",
        "src/config_rootonly.py",
        "private/notes.md",
    ] {
        assert_eq!(read_as(Who::User, &mp.join(f)), Err(libc::ENOENT), "{f}");
        // Not even root finds it there: it is not in the view at all.
        assert_eq!(errno(fs::metadata(mp.join(f))), libc::ENOENT, "{f}");
    }
    // The same request by root is granted the root-only files.
    let body = r#"{"purpose": "zebrafish", "max_files": 100}"#;
    let (st, reply) = http(s, "POST", "/v1/open_view", body);
    assert_eq!(st, 200, "{reply}");
    let v = json(&reply);
    let rootview = PathBuf::from(v["mount_path"].as_str().unwrap());
    let _rootview = Mounted::new(rootview.clone(), None);
    let files = grant_paths(&v["grant"]);
    assert!(
        files.contains(&"secret/rootonly.txt".to_string()),
        "{files:?}"
    );
    assert!(fs::read_to_string(rootview.join("secret/rootonly.txt"))
        .unwrap()
        .contains(&root_only));
    // The request log names uid, operation and outcome, never contents.
    let (st, _) = http(s, "GET", "/v1/health", "");
    assert_eq!(st, 200);
    let log = server.log();
    assert!(
        log.contains("uid=1000") && log.contains("POST /v1/open_view"),
        "{log}"
    );
    assert!(
        log.contains("refused") && log.contains("status=403"),
        "{log}"
    );
    assert!(
        !log.contains("zebrafish ROOTONLY"),
        "the log holds contents: {log}"
    );
}

#[test]
fn the_socket_is_private_unless_widened_on_purpose() {
    let env = env();
    let (_, gid) = member_group();
    let mut server = start(&env, "private.sock", &[]);
    let meta = fs::metadata(&server.socket).unwrap();
    assert_eq!(meta.mode() & 0o7777, 0o600);
    assert_eq!(
        http_as(Who::User, &server.socket, "GET", "/v1/health", ""),
        Err(libc::EACCES)
    );
    assert_eq!(http(&server.socket, "GET", "/v1/health", "").0, 200);
    let lock = env.dir.path().join("private.sock.lock");
    assert_eq!(fs::metadata(&lock).unwrap().mode() & 0o777, 0o600);
    assert_eq!(
        fs::read_to_string(&lock).unwrap().trim(),
        server.pid().to_string()
    );
    server.stop();

    let server = start(
        &env,
        "group.sock",
        &["--socket-mode", "0660", "--socket-group", GROUP],
    );
    let meta = fs::metadata(&server.socket).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o660, gid));
    let (st, body) = http_as(Who::User, &server.socket, "GET", "/v1/health", "").unwrap();
    assert_eq!(st, 200, "{body}");
    assert_eq!(
        http_as(Who::Stranger, &server.socket, "GET", "/v1/health", ""),
        Err(libc::EACCES)
    );
    drop(server);

    // A group alone means its members may connect: 0660.
    let server = start(&env, "group2.sock", &["--socket-group", &gid.to_string()]);
    let meta = fs::metadata(&server.socket).unwrap();
    assert_eq!((meta.mode() & 0o7777, meta.gid()), (0o660, gid));
    drop(server);

    for (args, text) in [
        (&["--socket-mode", "4777"][..], "beyond 0777"),
        (&["--socket-mode", "rw"][..], "octal"),
        (
            &["--socket-group", "no-such-group-wopfs"][..],
            "unknown group",
        ),
    ] {
        let out = serve_cmd(&env, &env.dir.path().join("bad.sock"), args)
            .output()
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(text), "{args:?}: {err}");
    }
}

#[test]
fn a_second_server_on_the_same_socket_is_refused_and_the_first_keeps_serving() {
    let env = env();
    env.write("a.txt", "a");
    let first = start(&env, "one.sock", &[]);
    let out = serve_cmd(&env, &first.socket, &[])
        .stdout(Stdio::null())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(first.socket.to_str().unwrap())
            && err.contains(&format!("pid {}", first.pid())),
        "{err}"
    );
    assert!(
        first.socket.exists(),
        "the refused server removed the socket"
    );
    assert_eq!(http(&first.socket, "GET", "/v1/health", "").0, 200);

    // Something at the path that is not a socket is refused, not removed.
    let file = env.dir.path().join("file.sock");
    fs::write(&file, "keep me").unwrap();
    let out = serve_cmd(&env, &file, &[]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a socket"));
    assert_eq!(fs::read_to_string(&file).unwrap(), "keep me");
}

#[test]
fn sigterm_unmounts_the_views_the_server_opened_and_removes_its_socket() {
    let env = env();
    env.write("src/handler.py", "def handler():\n    return 'zebrafish'\n");
    let mut server = start(&env, "api.sock", &["--socket-mode", "0666"]);
    let s = server.socket.clone();
    let body = r#"{"purpose": "zebrafish"}"#;
    let mut views = Vec::new();
    for reply in [
        http(&s, "POST", "/v1/open_view", body),
        http_as(Who::User, &s, "POST", "/v1/open_view", body).unwrap(),
    ] {
        assert_eq!(reply.0, 200, "{}", reply.1);
        let v = json(&reply.1);
        let mp = PathBuf::from(v["mount_path"].as_str().unwrap());
        let g = v["grant"]["grant_id"].as_str().unwrap().to_string();
        assert!(is_mounted(&mp));
        let pid = env.daemon_pid(&g);
        views.push((Mounted::new(mp, pid), g, pid));
    }
    let status = server.stop();
    assert!(status.success(), "{status}: {}", server.log());
    let log = server.log();
    for (m, g, pid) in &views {
        assert!(
            !is_mounted(&m.mp),
            "{} is still mounted: {log}",
            m.mp.display()
        );
        assert!(no_mount_of_grant(g));
        assert!(
            log.contains("unmounted the view") && log.contains(g.as_str()),
            "{log}"
        );
        if let Some(pid) = pid {
            assert!(!pid_running(*pid), "the daemon of {g} still runs");
        }
    }
    assert!(!s.exists(), "the socket was left behind");
    // A new server takes the socket over.
    let next = start(&env, "api.sock", &[]);
    assert_eq!(http(&next.socket, "GET", "/v1/health", "").0, 200);
}

#[test]
fn numbers_out_of_range_are_400s_naming_the_field() {
    let env = env();
    env.write("src/handler.py", "def handler():\n    return 'zebrafish'\n");
    let server = start(&env, "api.sock", &[]);
    let s = &server.socket;
    let (st, reply) = http(
        s,
        "POST",
        "/v1/request_access",
        r#"{"files": ["src/handler.py"], "mode": "read_only", "reason": "r", "ttl_seconds": 3600}"#,
    );
    assert_eq!(st, 200, "{reply}");
    let g = json(&reply)["grant_id"].as_str().unwrap().to_string();
    let bad = [
        "18446744073709551615",
        "18446744073709551616",
        "99999999999999999999999999",
        "-1",
        "-9223372036854775808",
        "0",
        "1.5",
        "1e300",
    ];
    let mut n = 0;
    for v in bad {
        let cases = [
            (
                "/v1/search",
                format!(r#"{{"query": "zebrafish", "limit": {v}}}"#),
                "limit",
            ),
            (
                "/v1/request_access",
                format!(
                    r#"{{"files": ["src/handler.py"], "mode": "read_only", "reason": "r", "ttl_seconds": {v}}}"#
                ),
                "ttl_seconds",
            ),
            (
                "/v1/open_view",
                format!(r#"{{"purpose": "zebrafish", "max_files": {v}}}"#),
                "max_files",
            ),
            (
                "/v1/open_view",
                format!(r#"{{"purpose": "zebrafish", "ttl_seconds": {v}}}"#),
                "ttl_seconds",
            ),
            (
                "/v1/delegate",
                format!(r#"{{"grant_id": "{g}", "audience": "a", "ttl_seconds": {v}}}"#),
                "ttl_seconds",
            ),
        ];
        for (path, body, field) in cases {
            let (st, reply) = http(s, "POST", path, &body);
            assert_eq!(st, 400, "{path} {body}: {reply}");
            assert!(reply.contains(field), "{path} {body}: {reply}");
            assert!(!reply.contains("panic"), "{reply}");
            assert_eq!(http(s, "GET", "/v1/health", "").0, 200);
            n += 1;
        }
    }
    // Just past the upper bounds.
    for (path, body, field) in [
        (
            "/v1/search",
            r#"{"query": "zebrafish", "limit": 1001}"#.to_string(),
            "limit",
        ),
        (
            "/v1/open_view",
            r#"{"purpose": "zebrafish", "max_files": 1001}"#.to_string(),
            "max_files",
        ),
        (
            "/v1/request_access",
            format!(
                r#"{{"files": ["src/handler.py"], "mode": "read_only", "reason": "r", "ttl_seconds": {}}}"#,
                10 * 366 * 24 * 3600 + 1
            ),
            "ttl_seconds",
        ),
    ] {
        let (st, reply) = http(s, "POST", path, &body);
        assert_eq!(st, 400, "{path} {body}: {reply}");
        assert!(reply.contains(field), "{reply}");
        n += 1;
    }
    // A number too large for JSON at all is a malformed request (400).
    let (st, reply) = http(
        s,
        "POST",
        "/v1/search",
        r#"{"query": "zebrafish", "limit": 1e400}"#,
    );
    assert_eq!(st, 400, "{reply}");
    assert!(reply.contains("limit"), "{reply}");
    // A string where a number belongs is a field of the wrong shape (422).
    let (st, reply) = http(
        s,
        "POST",
        "/v1/search",
        r#"{"query": "zebrafish", "limit": "5"}"#,
    );
    assert_eq!(st, 422, "{reply}");
    assert!(reply.contains("limit"), "{reply}");
    // In range, they work; a delegated ttl is the grant's own at most.
    let (st, reply) = http(
        s,
        "POST",
        "/v1/search",
        r#"{"query": "zebrafish", "limit": 1000}"#,
    );
    assert_eq!(st, 200, "{reply}");
    let (st, reply) = http(
        s,
        "POST",
        "/v1/delegate",
        &format!(r#"{{"grant_id": "{g}", "audience": "a", "ttl_seconds": 60}}"#),
    );
    assert_eq!(st, 200, "{reply}");
    assert!(n >= 40);
    let log = server.log();
    assert!(!log.contains("panicked"), "{log}");
}

#[test]
fn a_server_that_is_not_root_refuses_other_uids_with_403() {
    use std::os::unix::process::CommandExt;
    let env = env();
    env.write("src/handler.py", "def handler():\n    return 'zebrafish'\n");
    // What the server (USER) writes: its state, its socket's directory.
    let srv = env.dir.path().join("srv");
    fs::create_dir_all(&srv).unwrap();
    fs::create_dir_all(&env.state).unwrap();
    for d in [&srv, &env.state] {
        chown(d, Some(USER), Some(USER)).unwrap();
        set_mode(d, 0o755);
    }
    let views = srv.join("views");
    let extra = ["--socket-mode", "0666", "--views", views.to_str().unwrap()];
    let server = Server::start_with(&env, "srv/api.sock", POLICY, &extra, |c| {
        c.uid(USER).gid(USER);
    });
    let s = &server.socket;
    assert_eq!(fs::metadata(s).unwrap().uid(), USER, "not serving as USER");
    let search = r#"{"query": "zebrafish"}"#;
    let ask = r#"{"files": ["src/handler.py"], "mode": "read_only", "reason": "r"}"#;
    let open = r#"{"purpose": "zebrafish"}"#;

    // Another uid: every call that would act with its permissions is 403,
    // naming why; nothing is granted for it.
    for (path, body) in [
        ("/v1/search", search),
        ("/v1/request_access", ask),
        ("/v1/open_view", open),
    ] {
        let (st, reply) = http_as(Who::Stranger, s, "POST", path, body).unwrap();
        assert_eq!(st, 403, "{path}: {reply}");
        assert!(
            reply.contains(&format!("uid {STRANGER}")) && reply.contains("only root"),
            "{path}: {reply}"
        );
    }
    let (st, reply) = http_as(Who::Stranger, s, "GET", "/v1/grants", "").unwrap();
    assert_eq!((st, reply.trim()), (200, "[]"));

    // The server's own uid, and root, act with the server's permissions.
    let (st, reply) = http_as(Who::User, s, "POST", "/v1/search", search).unwrap();
    assert_eq!(st, 200, "{reply}");
    assert_eq!(hit_paths(&reply), ["src/handler.py"]);
    let (st, reply) = http(s, "POST", "/v1/search", search);
    assert_eq!(st, 200, "root: {reply}");
    assert_eq!(hit_paths(&reply), ["src/handler.py"]);
    let (st, reply) = http_as(Who::User, s, "POST", "/v1/request_access", ask).unwrap();
    assert_eq!(st, 200, "{reply}");
    let log = server.log();
    assert!(
        log.contains(&format!("uid={STRANGER}")) && log.contains("status=403"),
        "{log}"
    );
}

#[test]
fn a_stopping_server_lets_an_open_request_finish() {
    use std::io::{Read, Write};
    let env = env();
    for i in 0..50 {
        env.write(
            &format!("src/mod{i}.py"),
            &format!("def f{i}():\n    return 'zebrafish'\n"),
        );
    }
    let mut server = start(&env, "api.sock", &[]);
    let s = server.socket.clone();
    let body = r#"{"query": "zebrafish", "limit": 100}"#;
    // The full answer, from a server not stopping (this request served also
    // means its SIGTERM handler is in place).
    let (st, expected) = http(&s, "POST", "/v1/search", body);
    assert_eq!(st, 200, "{expected}");
    assert_eq!(hit_paths(&expected).len(), 50);

    // A request left open halfway through its body: `Expect: 100-continue`
    // makes the server say when its handler has started reading it.
    let mut conn = std::os::unix::net::UnixStream::connect(&s).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let head = format!(
        "POST /v1/search HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
        body.len()
    );
    conn.write_all(head.as_bytes()).unwrap();
    let (first, rest) = body.split_at(body.len() / 2);
    let mut interim = Vec::new();
    let mut byte = [0u8];
    while !interim.ends_with(b"\r\n\r\n") {
        assert_eq!(
            conn.read(&mut byte).unwrap(),
            1,
            "closed before 100 Continue"
        );
        interim.push(byte[0]);
    }
    let interim = String::from_utf8_lossy(&interim).to_string();
    assert!(interim.starts_with("HTTP/1.1 100"), "{interim}");
    conn.write_all(first.as_bytes()).unwrap();

    unsafe { libc::kill(server.pid() as i32, libc::SIGTERM) };
    wait_until(
        "the server to start stopping",
        Duration::from_secs(10),
        || server.log().contains("signal received"),
    );
    // The open request still gets its whole answer.
    conn.write_all(rest.as_bytes()).unwrap();
    let mut out = Vec::new();
    conn.read_to_end(&mut out).unwrap();
    let (st, reply) = http_reply(&String::from_utf8_lossy(&out));
    assert_eq!(st, 200, "{reply}");
    assert_eq!(json(&reply), json(&expected));

    let status = server.stop();
    let log = server.log();
    assert!(status.success(), "{status}: {log}");
    assert!(!log.contains("still open"), "{log}");
    assert!(!s.exists(), "the socket was left behind");
}

#[test]
fn the_views_directory_is_created_0711() {
    use std::os::unix::process::CommandExt;
    let env = env();
    env.write("src/handler.py", "def handler():\n    return 'zebrafish'\n");
    let views = env.dir.path().join("srv/views");
    let extra = ["--socket-mode", "0666", "--views", views.to_str().unwrap()];
    // Missing parents too, and even under a umask that would take every bit from others.
    let server = Server::start_with(&env, "api.sock", POLICY, &extra, |c| unsafe {
        c.pre_exec(|| {
            libc::umask(0o077);
            Ok(())
        });
    });
    for d in [&views, &env.dir.path().join("srv")] {
        assert_eq!(fs::metadata(d).unwrap().mode() & 0o7777, 0o711, "{d:?}");
    }
    // Others may reach their own view through it, but not list it.
    let body = r#"{"purpose": "zebrafish"}"#;
    let (st, reply) = http_as(Who::User, &server.socket, "POST", "/v1/open_view", body).unwrap();
    assert_eq!(st, 200, "{reply}");
    let mp = PathBuf::from(json(&reply)["mount_path"].as_str().unwrap());
    let _view = Mounted::new(mp.clone(), None);
    assert!(mp.starts_with(&views), "{}", mp.display());
    assert!(read_as(Who::User, &mp.join("src/handler.py"))
        .unwrap()
        .contains("zebrafish"));
    // Opening it to list it is refused.
    assert_eq!(read_as(Who::Stranger, &views), Err(libc::EACCES));
}
