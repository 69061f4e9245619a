//! Checkpoints and undo (`wopfs checkpoint`, `checkpoints`, `undo`,
//! `diff --since`) with real mounts, on the engine the run tests
//! (`WOPFS_TEST_ENGINE`: fuse or kernel).
//!
//! An orchestrator checkpoints before each agent turn and undoes a bad
//! turn while the view stays mounted: the view shows the old state at
//! once, a file held open keeps what it had (as after a rename-over), and
//! later checkpoints stay (an undo to one is a redo).

mod common;

use std::fs;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

fn read(p: &Path) -> String {
    fs::read_to_string(p).unwrap_or_else(|e| panic!("reading {}: {e}", p.display()))
}

fn gone(p: &Path) -> bool {
    fs::symlink_metadata(p).is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
}

fn json(env: &Env, args: &[&str]) -> Value {
    serde_json::from_str(&env.ok(args)).unwrap()
}

/// The paths `wopfs diff --json` (with `extra`) lists, with their operation.
fn diff_rows(env: &Env, g: &str, extra: &[&str]) -> Vec<(String, String)> {
    let mut args = vec!["diff", "--json", g];
    args.extend_from_slice(extra);
    let v = json(env, &args);
    let mut rows: Vec<(String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["path"].as_str().unwrap().to_string(),
                d["operation"].as_str().unwrap_or("?").to_string(),
            )
        })
        .collect();
    rows.sort();
    rows
}

fn audit_ops(env: &Env, g: &str) -> Vec<String> {
    let v = json(env, &["audit", "--json", g]);
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["operationType"].as_str().unwrap_or("").to_string())
        .collect()
}

fn project(env: &Env) {
    env.write("README.md", "readme\n");
    env.write("src/app.py", "print('host')\n");
    env.write("src/lib/util.py", "def f(): pass\n");
    env.write("docs/guide.md", "guide\n");
}

/// Turn 2 of the scripted session: edits, deletes, renames of files and
/// directories, a new tree, a symlink, a chmod.
fn turn_two(m: &Mounted) {
    fs::write(m.path("src/new.txt"), "turn 2\n").unwrap();
    fs::write(m.path("README.md"), "readme, turn 2\n").unwrap();
    fs::remove_file(m.path("src/app.py")).unwrap();
    fs::rename(m.path("src/lib/util.py"), m.path("src/util2.py")).unwrap();
    fs::rename(m.path("src/made"), m.path("src/moved")).unwrap();
    fs::create_dir_all(m.path("gen/a/b")).unwrap();
    fs::write(m.path("gen/a/b/c.txt"), "generated\n").unwrap();
    std::os::unix::fs::symlink("../README.md", m.path("src/readme-link")).unwrap();
    fs::set_permissions(m.path("docs/guide.md"), fs::Permissions::from_mode(0o600)).unwrap();
}

/// What the view shows after turn 1 (the checkpoint's state).
/// `kept`: turn 1 also made `src/keep.txt`.
fn assert_turn_one(m: &Mounted, kept: bool) {
    assert_eq!(read(&m.path("README.md")), "readme, turn 1\n");
    assert_eq!(read(&m.path("src/new.txt")), "turn 1\n");
    assert_eq!(read(&m.path("src/app.py")), "print('host')\n");
    assert_eq!(read(&m.path("src/lib/util.py")), "def f(): pass\n");
    assert_eq!(read(&m.path("src/made/x.txt")), "made in turn 1\n");
    for p in ["src/util2.py", "src/moved", "gen", "src/readme-link"] {
        assert!(gone(&m.path(p)), "{p} is from turn 2 and must be gone");
    }
    let mode = fs::metadata(m.path("docs/guide.md"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o644, "the chmod of turn 2 is undone");
    let mut names: Vec<String> = fs::read_dir(m.path("src"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    let mut expected = vec!["app.py", "lib", "made", "new.txt"];
    if kept {
        expected.insert(1, "keep.txt");
    }
    assert_eq!(names, expected);
}

#[test]
fn a_bad_turn_is_undone_in_the_mounted_view_and_redone() {
    let engine = test_engine();
    if engine == "kernel" && !kernel_engine_here() {
        return;
    }
    let env = Env::new();
    project(&env);
    let g = env.grant(&["--allow", "**", "--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);

    // Turn 1.
    fs::write(m.path("README.md"), "readme, turn 1\n").unwrap();
    fs::write(m.path("src/new.txt"), "turn 1\n").unwrap();
    fs::create_dir(m.path("src/made")).unwrap();
    fs::write(m.path("src/made/x.txt"), "made in turn 1\n").unwrap();
    fs::write(m.path("src/keep.txt"), "turn 2 leaves it alone\n").unwrap();
    // Older than the racy window (50 ms), so what turn 2 leaves alone is
    // shared with c1, not copied again (checked below).
    std::thread::sleep(Duration::from_millis(120));
    let c1 = env.ok(&["checkpoint", &g, "--label", "before turn 2"]);
    assert_eq!(c1, "c1");
    let at_c1 = diff_rows(&env, &g, &[]);

    // A reader holds a file open across turn 2 (which rewrites it in
    // place) and the undo (which puts turn 1's bytes back).
    let mut held = fs::File::open(m.path("src/new.txt")).unwrap();
    turn_two(&m);
    let c2 = json(
        &env,
        &["checkpoint", &g, "--label", "after turn 2", "--json"],
    );
    assert_eq!(c2["id"], "c2");
    assert!(c2["changed"].as_u64().unwrap() > 0, "{c2}");
    assert_eq!(c2["live"], true, "{c2}");
    let manifest = fs::read_to_string(
        env.state
            .join("sessions")
            .join(&g)
            .join("checkpoints/c2/manifest.jsonl"),
    )
    .unwrap();
    assert!(
        manifest.contains(r#""at":"c1""#),
        "c2 shares with c1: {manifest}"
    );

    // What happened after c1, and only that.
    let since = diff_rows(&env, &g, &["--since", "c1"]);
    let paths: Vec<&str> = since.iter().map(|(p, _)| p.as_str()).collect();
    for p in [
        "README.md",
        "src/new.txt",
        "src/app.py",
        "src/lib/util.py",
        "src/util2.py",
        "src/made/x.txt",
        "src/moved/x.txt",
        "gen/a/b/c.txt",
        "src/readme-link",
        "docs/guide.md",
    ] {
        assert!(paths.contains(&p), "diff --since c1 lacks {p}: {since:?}");
    }
    let text = env.ok(&["diff", &g, "--since", "c1", "--no-pager"]);
    assert!(
        text.contains("-readme, turn 1") && text.contains("+readme, turn 2"),
        "{text}"
    );
    assert!(
        !text.contains("-readme\n"),
        "the old side is c1's, not the host's: {text}"
    );

    let undone = json(&env, &["undo", &g, "--to", "c1", "--json"]);
    assert_eq!(undone["live"], true, "{undone}");
    assert!(undone["restored"].as_u64().unwrap() > 0, "{undone}");
    // At once: no waiting for a cache to expire.
    assert_turn_one(&m, true);
    assert_eq!(diff_rows(&env, &g, &[]), at_c1);
    // The file held open keeps what it had, as after a rename-over.
    let mut s = String::new();
    held.read_to_string(&mut s).unwrap();
    assert_eq!(s, "turn 2\n");
    // The view goes on working after the undo.
    fs::write(m.path("src/after.txt"), "after the undo\n").unwrap();
    assert_eq!(read(&m.path("src/after.txt")), "after the undo\n");

    // Later checkpoints stay: an undo to c2 is a redo.
    env.ok(&["undo", &g, "--to", "c2"]);
    assert_eq!(read(&m.path("README.md")), "readme, turn 2\n");
    assert_eq!(read(&m.path("src/util2.py")), "def f(): pass\n");
    assert_eq!(read(&m.path("gen/a/b/c.txt")), "generated\n");
    assert!(gone(&m.path("src/after.txt")));
    assert!(gone(&m.path("src/app.py")));

    let list = json(&env, &["checkpoints", &g, "--json"]);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["c1", "c2"]);
    assert_eq!(list[0]["label"], "before turn 2");
    let ops = audit_ops(&env, &g);
    assert_eq!(
        ops.iter().filter(|o| *o == "wopfs.view.checkpoint").count(),
        2,
        "{ops:?}"
    );
    assert_eq!(
        ops.iter().filter(|o| *o == "wopfs.view.undo").count(),
        2,
        "{ops:?}"
    );
    drop(held);
    drop(m);

    // The committed host is the state undone to.
    env.ok(&["commit", &g, "--yes"]);
    assert_eq!(read(&env.host.join("README.md")), "readme, turn 2\n");
    assert!(gone(&env.host.join("src/app.py")));
    assert_eq!(read(&env.host.join("gen/a/b/c.txt")), "generated\n");
}

#[test]
fn a_view_not_mounted_is_undone_on_its_layer() {
    let engine = test_engine();
    if engine == "kernel" && !kernel_engine_here() {
        return;
    }
    let env = Env::new();
    project(&env);
    let g = env.grant(&["--allow", "**", "--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    fs::write(m.path("README.md"), "readme, turn 1\n").unwrap();
    fs::write(m.path("src/new.txt"), "turn 1\n").unwrap();
    fs::create_dir(m.path("src/made")).unwrap();
    fs::write(m.path("src/made/x.txt"), "made in turn 1\n").unwrap();
    env.ok(&["checkpoint", &g]);
    turn_two(&m);
    drop(m);
    assert!(no_mount_of_grant(&g));

    // Not mounted: made here, under the session lock.
    let c2 = json(&env, &["checkpoint", &g, "--json"]);
    assert_eq!(c2["live"], false, "{c2}");
    let undone = json(&env, &["undo", &g, "--to", "c1", "--json"]);
    assert_eq!(undone["live"], false, "{undone}");
    let m = env.mount(&g, &mp, &[]);
    assert_turn_one(&m, false);
}

#[test]
fn undo_with_a_cwd_inside_the_view() {
    let engine = test_engine();
    if engine == "kernel" && !kernel_engine_here() {
        return;
    }
    let env = Env::new();
    project(&env);
    let g = env.grant(&["--allow", "**", "--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    fs::write(m.path("src/new.txt"), "turn 1\n").unwrap();
    env.ok(&["checkpoint", &g]);
    let mut sh = Shell::start(&m.path("src"));
    let (out, rc) = sh.run("(echo turn 2 > new.txt && rm app.py) 2>&1");
    assert_eq!(rc, 0, "{out:?}");

    if engine == "kernel" {
        // The overlay is replaced: a cwd in the old one would be left behind.
        let err = env.fails(&["undo", &g, "--to", "c1"]);
        let pid = sh.child.id().to_string();
        assert!(err.contains(&pid) && err.contains("cwd"), "{err}");
        assert_eq!(
            read(&m.path("src/new.txt")),
            "turn 2\n",
            "nothing was undone"
        );
        drop(sh);
        env.ok(&["undo", &g, "--to", "c1"]);
    } else {
        // The FUSE engine reloads the same mount: the shell stays, and sees it.
        env.ok(&["undo", &g, "--to", "c1"]);
        let (out, rc) = sh.run("(cat new.txt && ls) 2>&1");
        let log = fs::read_to_string(env.state.join("sessions").join(&g).join("daemon.log"))
            .unwrap_or_default();
        assert_eq!(rc, 0, "{out:?}\n{log}");
        assert_eq!(out, ["turn 1", "app.py", "lib", "new.txt"]);
    }
    assert_eq!(read(&m.path("src/new.txt")), "turn 1\n");
    assert_eq!(read(&m.path("src/app.py")), "print('host')\n");
}

#[test]
fn checkpoint_errors_name_the_problem() {
    let env = Env::new();
    project(&env);
    let ro = env.grant(&["--allow", "**", "--mode", "read_only"]);
    let err = env.fails(&["checkpoint", &ro]);
    assert!(err.contains("only overlay views have checkpoints"), "{err}");

    let g = env.grant(&["--allow", "**", "--mode", "read_write_overlay"]);
    let err = env.fails(&["undo", &g, "--to", "c1"]);
    assert!(
        err.contains("no checkpoint \"c1\"") && err.contains("has none"),
        "{err}"
    );
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    env.ok(&["checkpoint", &g]);
    let err = env.fails(&["undo", &g, "--to", "c9"]);
    assert!(err.contains("it has c1"), "{err}");
    let err = env.fails(&["diff", &g, "--since", "../c1"]);
    assert!(err.contains("no checkpoint"), "{err}");
    let err = env.fails(&["checkpoint", "g-nonesuch"]);
    assert!(err.contains("g-nonesuch"), "{err}");
    assert_eq!(env.ok(&["checkpoints", &g]).lines().count(), 2);
    drop(m);
    // A rejected session has ended: its checkpoints go with its changes.
    env.ok(&["reject", &g, "--reason", "no"]);
    assert!(!env
        .state
        .join("sessions")
        .join(&g)
        .join("checkpoints")
        .exists());
    for args in [vec!["checkpoint", &g], vec!["undo", &g, "--to", "c1"]] {
        let err = env.fails(&args);
        assert!(err.contains("rejected"), "{err}");
    }
}

/// The API's policy: root approves.
const POLICY: &str = "enabled = true\nmax_files = 100\nmax_total_size_bytes = 10000000\n\
     allowed_modes = [\"read_only\", \"read_write_overlay\"]\napprover_uids = [0]\n";

#[test]
fn the_api_and_the_python_client_checkpoint_and_undo() {
    let engine = test_engine();
    if engine == "kernel" && !kernel_engine_here() {
        return;
    }
    let env = Env::new();
    env.write("src/pay.py", "def pay():\n    return 1  # discount\n");
    let server = Server::start(&env, "wopfs.sock", POLICY, &[]);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    // An orchestrator checkpoints before the agent's turn and undoes it.
    let script = r#"
import json, os, sys
from wopfs_client import WopfsClient, WorkspaceMode
c = WopfsClient(sys.argv[1])
v = c.open_view(purpose="fix pay", hints=["discount"], mode=WorkspaceMode.READ_WRITE_OVERLAY)
g = v.grant.grant_id
p = os.path.join(v.mount_path, "src", "pay.py")
ck = c.checkpoint(g, label="before turn 1")
with open(p, "w") as f:
    f.write("broken\n")
broken = open(p).read()
u = c.undo(g, to=ck["id"])
print(json.dumps({"grant": g, "checkpoint": ck, "undo": u, "list": c.checkpoints(g),
    "broken": broken, "pay": open(p).read()}))
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
    assert_eq!(r["checkpoint"]["id"], "c1", "{r:#}");
    assert_eq!(r["checkpoint"]["label"], "before turn 1");
    assert_eq!(r["undo"]["live"], true, "{r:#}");
    assert_eq!(r["pay"], "def pay():\n    return 1  # discount\n");
    assert_eq!(r["broken"], "broken\n");
    assert_eq!(r["list"].as_array().unwrap().len(), 1);
    let g = r["grant"].as_str().unwrap();
    // Errors through plain HTTP: an unknown checkpoint, a bad body.
    let (status, body) = http(
        &server.socket,
        "POST",
        &format!("/v1/grants/{g}/undo"),
        br#"{"to":"c7"}"#,
    );
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("no checkpoint"), "{body}");
    let (status, _) = http(
        &server.socket,
        "POST",
        &format!("/v1/grants/{g}/undo"),
        br#"{"ckpt":"c1"}"#,
    );
    assert_eq!(status, 422, "a field it does not know");
}

/// A child killed if the test fails before it has been waited for.
struct KillOnDrop(Option<std::process::Child>);

impl KillOnDrop {
    fn take(&mut self) -> std::process::Child {
        self.0.take().expect("taken once")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The text of a granted host file, which a command inside `wopfs run`
/// sees live (contents are live, names fixed): how this test steps it.
fn signal(env: &Env, step: &str) {
    fs::write(env.host.join("step"), format!("{step}\n")).unwrap();
}

#[test]
fn an_undo_while_wopfs_run_goes_on() {
    let engine = test_engine();
    if engine == "kernel" && !kernel_engine_here() {
        return;
    }
    let env = Env::new();
    project(&env);
    signal(&env, "0");
    let g = env.grant(&["--allow", "**", "--mode", "read_write_overlay"]);
    let at = env.dir.path().join("ws");
    // The agent: a turn, then (after the checkpoint) another, then it
    // reads what it finds once the orchestrator says so.
    // (It gives up after 30 s, so a test that died never leaves it behind.)
    let script = "wait_for() { n=0; until grep -qx \"$1\" step; do \
        n=$((n+1)); [ $n -gt 1500 ] && exit 9; sleep 0.02; done; }; \
        echo one > src/new.txt; wait_for 1; echo two > src/new.txt; rm src/app.py; \
        wait_for 2; cat src/new.txt; test -e src/app.py && echo app-back";
    let mut run = KillOnDrop(Some(
        wopfs_command()
            .args(["--state-dir", env.state.to_str().unwrap(), "run", &g])
            .args(["--at", at.to_str().unwrap(), "--", "sh", "-c", script])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let pending = |path: &str, op: &str| {
        diff_rows(&env, &g, &[]).contains(&(path.to_string(), op.to_string()))
    };
    wait_until("the first turn", Duration::from_secs(30), || {
        pending("src/new.txt", "create")
    });
    env.ok(&["checkpoint", &g]);
    signal(&env, "1");
    wait_until("the second turn", Duration::from_secs(30), || {
        pending("src/app.py", "delete")
    });
    if engine == "kernel" {
        // The command's cwd is in the view: refused while it runs.
        let err = env.fails(&["undo", &g, "--to", "c1"]);
        assert!(err.contains("cwd") && err.contains("(sh)"), "{err}");
        signal(&env, "2");
        let out = run.take().wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.trim(),
            "two",
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        // Once it has ended, on the layer.
        env.ok(&["undo", &g, "--to", "c1"]);
    } else {
        env.ok(&["undo", &g, "--to", "c1"]);
        signal(&env, "2");
        let out = run.take().wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            stdout.lines().collect::<Vec<_>>(),
            ["one", "app-back"],
            "the running command sees the checkpoint at once; {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows = diff_rows(&env, &g, &[]);
    assert_eq!(rows, [("src/new.txt".to_string(), "create".to_string())]);
}
