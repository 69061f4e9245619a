//! Sandboxes and containers, really mounted: `wopfs run` (what the command
//! can and cannot reach, exit codes, signals), bubblewrap and `unshare`
//! bind mounts with another uid, a view unmounted under a running
//! container, and the rootless path through fusermount3.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn project(env: &Env) {
    env.write("README.md", "# project\n");
    env.write("src/a.py", "a = 1\n");
    env.write(".env", "SECRET=1\n");
}

fn run_in(env: &Env, g: &str, at: &std::path::Path, script: &str) -> std::process::Output {
    wopfs_command()
        .args([
            "--state-dir",
            env.state.to_str().unwrap(),
            "run",
            g,
            "--at",
            at.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ])
        .env("WOPFS_ENGINE", test_engine())
        .output()
        .unwrap()
}

#[test]
fn run_shows_only_the_view_and_returns_the_exit_code() {
    let env = Env::new();
    project(&env);
    let g = env.grant(&["--mode", "read_write_overlay", "--write-prefix", "src"]);
    let at = env.dir.path().join("ws");
    let host = env.host.to_str().unwrap();
    let state = env.state.to_str().unwrap();
    let script = format!(
        "set -e; test \"$(pwd)\" = {at}; ls -A | tr '\\n' ' ' > /dev/stderr; \
         test ! -e .env; test ! -e {host}/.env; test -e {host}/README.md; \
         test -z \"$(ls -A {state})\"; \
         echo new > src/new.py; rm src/a.py; \
         if echo x > top.txt 2>/dev/null; then exit 99; fi; \
         umask; exit 3",
        at = at.display()
    );
    let out = run_in(&env, &g, &at, &script);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("README.md src"), "{stderr}");
    assert!(
        stderr.contains("wopfs run: exit 3")
            && stderr.contains("1 created")
            && stderr.contains("1 deleted"),
        "{stderr}"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "0022",
        "the command gets the caller's umask"
    );
    assert!(!at.exists(), "--at made by run is removed");
    assert!(no_mount_of_grant(&g), "the mount outlived the run");
    assert!(env.host.join("src/a.py").exists() && !env.host.join("src/new.py").exists());
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    assert_eq!(st[0]["mounted"], false);
    assert_eq!(st[0]["pending"].as_array().unwrap().len(), 2);
    let e = env.fails(&["run", &g, "--", "/nonexistent/cmd"]);
    assert!(e.contains("/nonexistent/cmd"), "{e}");
    assert!(no_mount_of_grant(&g));
}

#[test]
fn run_forwards_sigterm_and_never_outlives_the_command() {
    let env = Env::new();
    project(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let at = env.dir.path().join("ws");
    // The command says it is ready (its trap is set) through a file outside
    // the view.
    let ready = env.dir.path().join("trap-set");
    let script = format!(
        "trap 'exit 7' TERM; : > '{}'; while true; do sleep 0.1; done",
        ready.display()
    );
    let mut child = wopfs_command()
        .args([
            "--state-dir",
            env.state.to_str().unwrap(),
            "run",
            &g,
            "--at",
            at.to_str().unwrap(),
            "--",
        ])
        .args(["sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_until(
        "wopfs run to mount the view",
        Duration::from_secs(30),
        || !no_mount_of_grant(&g),
    );
    // SIGTERM before the trap is set would end the shell with 143, not 7.
    wait_until(
        "the command to set its TERM trap",
        Duration::from_secs(30),
        || ready.exists(),
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_child(&mut child, "run after SIGTERM", Duration::from_secs(20));
    assert_eq!(status.code(), Some(7), "the command's own exit code");
    assert!(no_mount_of_grant(&g));
}

/// Root runs bubblewrap with a user namespace: the sandbox's uid 1000 is
/// root outside, and the view (owned by root) shows as uid 1000's inside.
#[test]
fn bubblewrap_with_a_mapped_uid_works_in_the_view() {
    let env = Env::new();
    project(&env);
    let before = tree_digest(&env.host);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mountpoint("mnt");
    let inside = env.mountpoint("workspace");
    let m = env.mount(&g, &m, &["--allow-other"]);
    let ws = inside.to_str().unwrap();
    let out = Command::new("bwrap")
        .args(["--unshare-user", "--uid", "1000", "--gid", "1000", "--bind", "/", "/", "--dev", "/dev"])
        .args(["--bind", m.mp.to_str().unwrap(), ws, "--chdir", ws])
        .args(["sh", "-c", "set -e; test $(id -u) = 1000; test $(stat -c %u README.md) = 1000; \
                cat README.md; echo more >> README.md; echo new > src/new.py; rm src/a.py; mkdir d; echo in > d/f"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "bwrap: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "# project\n");
    assert_eq!(
        fs::read_to_string(m.path("README.md")).unwrap(),
        "# project\nmore\n"
    );
    assert_eq!(fs::read_to_string(m.path("d/f")).unwrap(), "in\n");
    drop(m);
    assert_eq!(tree_digest(&env.host), before);
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    let pending: Vec<(&str, &str)> = st[0]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["path"].as_str().unwrap(), p["op"].as_str().unwrap()))
        .collect();
    assert_eq!(
        pending,
        vec![
            ("README.md", "update"),
            ("d/f", "create"),
            ("src/a.py", "delete"),
            ("src/new.py", "create")
        ]
    );
}

/// A real uid 1000 (as a container's user would be) through bubblewrap:
/// the view is presented as theirs with --uid/--gid, and what they create
/// is stored as theirs in the overlay.
#[test]
fn bubblewrap_as_uid_1000_with_a_presented_owner() {
    let env = Env::new();
    project(&env);
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let inside = env.mountpoint("workspace");
    let m = env.mount(
        &g,
        &env.mountpoint("mnt"),
        &["--allow-other", "--uid", "1000", "--gid", "1000"],
    );
    assert_eq!(fs::metadata(m.path("README.md")).unwrap().uid(), 1000);
    let ws = inside.to_str().unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "bwrap",
            "--unshare-user",
            "--uid",
            "1000",
            "--gid",
            "1000",
        ])
        .args([
            "--bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--bind",
            m.mp.to_str().unwrap(),
            ws,
            "--chdir",
            ws,
        ])
        .args([
            "sh",
            "-c",
            "set -e; echo mine > mine.txt; echo edit >> README.md; rm src/a.py; ls",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(fs::read_to_string(m.path("mine.txt")).unwrap(), "mine\n");
    assert_eq!(fs::metadata(m.path("mine.txt")).unwrap().uid(), 1000);
    let engine = serde_json::from_str::<serde_json::Value>(&env.ok(&["status", &g, "--json"]))
        .unwrap()[0]["engine"]
        .clone();
    drop(m);
    if engine == "kernel" {
        // The agent's file in the upper layer is its own by nature.
        return;
    }
    // Stored as uid 1000's in the fuse engine's overlay.
    let journal = fs::read_to_string(
        env.state
            .join("sessions")
            .join(&g)
            .join("overlay/journal.jsonl"),
    )
    .unwrap();
    let obj = journal
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|r| r["path"] == "mine.txt")
        .and_then(|r| r["obj"].as_u64())
        .expect("mine.txt in the journal");
    let objects = env.state.join("sessions").join(&g).join("overlay/objects");
    let p = objects
        .join(format!("{:02x}", obj % 256))
        .join(obj.to_string());
    assert_eq!(fs::metadata(p).unwrap().uid(), 1000);
}

#[test]
fn unshare_mount_and_a_bind_mount_work_in_the_view() {
    let env = Env::new();
    project(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    let target = env.mountpoint("bound");
    let script = format!(
        "set -e; mount --bind {} {}; cd {}; cat README.md; echo u > u.txt; rm src/a.py; mkdir n; echo x > n/x",
        m.mp.display(),
        target.display(),
        target.display()
    );
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "# project\n");
    assert_eq!(fs::read_to_string(m.path("u.txt")).unwrap(), "u\n");
    assert_eq!(fs::read_to_string(m.path("n/x")).unwrap(), "x\n");
    assert_eq!(errno(fs::metadata(m.path("src/a.py"))), libc::ENOENT);
    assert!(
        !is_mounted(&target),
        "the bind mount stayed in its namespace"
    );
}

/// A view unmounted under a running container: its next access fails with
/// a clear error (ENOTCONN), and nothing hangs.
#[test]
fn a_view_unmounted_under_a_running_container_fails_cleanly() {
    let env = Env::new();
    project(&env);
    let g = env.grant(&[]);
    let inside = env.mountpoint("workspace");
    let m = env.mount(&g, &env.mountpoint("mnt"), &["--allow-other"]);
    let ws = inside.to_str().unwrap();
    // Outside the view and the sandbox's bind of it ("/" is bound as is).
    let read_once = env.dir.path().join("read-once");
    let script = format!(
        "cat README.md > /dev/null && : > '{}'; \
         while cat README.md > /dev/null; do sleep 0.1; done; cat README.md",
        read_once.display()
    );
    let mut sandbox = Command::new("bwrap")
        .args([
            "--bind",
            "/",
            "/",
            "--dev",
            "/dev",
            "--bind",
            m.mp.to_str().unwrap(),
            ws,
            "--chdir",
            ws,
        ])
        .args(["sh", "-c", &script])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The sandbox has read through the view at least once.
    wait_until(
        "the sandbox to read through the view",
        Duration::from_secs(30),
        || read_once.exists() || sandbox.try_wait().unwrap().is_some(),
    );
    assert!(
        sandbox.try_wait().unwrap().is_none(),
        "the sandbox should be reading"
    );
    // The daemon is asked to stop; the sandbox keeps the mount busy, so it
    // is detached and the connection aborted.
    unsafe { libc::kill(m.pid.unwrap() as i32, libc::SIGTERM) };
    let status = wait_child(
        &mut sandbox,
        "the sandbox on a dead view",
        Duration::from_secs(20),
    );
    let mut err = String::new();
    use std::io::Read;
    sandbox
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(!status.success());
    assert!(
        err.contains("Transport endpoint is not connected") || err.contains("No such file"),
        "{err}"
    );
    drop(m);
}

/// A user who is not root grants, mounts (through fusermount3), runs and
/// commits within their own tree; passthrough quietly gives way.
#[test]
fn rootless_grant_mount_run_and_commit() {
    let env = Env::new();
    project(&env);
    let (mnt, ws) = (env.mountpoint("mnt"), env.mountpoint("ws"));
    let user = Uid1000::new(&env, &[&mnt, &ws]);
    let ok = |a: &[&str]| user.ok(a);
    let g = ok(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "p",
        "--mode",
        "read_write_overlay",
    ]);
    ok(&["mount", &g, mnt.to_str().unwrap()]);
    let guard = Mounted::new(mnt.clone(), env.daemon_pid(&g));
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            "1000",
            "--regid",
            "1000",
            "--clear-groups",
            "sh",
            "-c",
        ])
        .arg(format!(
            "cat {0}/README.md && echo v2 > {0}/src/a.py",
            mnt.display()
        ))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&["umount", mnt.to_str().unwrap()]);
    drop(guard);
    let out = user.sh(
        &g,
        &ws,
        &format!(
            "set -e; test $(id -u) = 1000; cat src/a.py; echo b > src/b.py; test ! -e {}/.env",
            env.host.display()
        ),
    );
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v2\n");
    ok(&["commit", &g, "--yes"]);
    assert_eq!(
        fs::read_to_string(env.host.join("src/a.py")).unwrap(),
        "v2\n"
    );
    assert_eq!(
        fs::read_to_string(env.host.join("src/b.py")).unwrap(),
        "b\n"
    );
    assert_eq!(fs::metadata(env.host.join("src/b.py")).unwrap().uid(), 1000);
    assert!(no_mount_of_grant(&g));
}

/// The README's bubblewrap recipe, run as written (by root): only /usr,
/// /lib64 and the view inside; the agent reads, writes inside the write
/// prefix, is refused outside it and cannot see the secret.
#[test]
fn the_readme_bubblewrap_recipe_runs_as_written() {
    let env = Env::new();
    agent_project(&env);
    let before = tree_digest(&env.host);
    let g = env.grant(&["--mode", "read_write_overlay", "--write-prefix", "src"]);
    let recipe = readme_recipe("bubblewrap");
    assert_eq!(recipe.len(), 2, "{recipe:?}");
    assert!(recipe[1].starts_with("bwrap "), "{recipe:?}");
    let mp = env.mountpoint("agent");
    let m = env.mount_by_recipe(&recipe[0], &g, &mp);
    let out = output_within(
        &mut recipe_command(&env, &recipe[1], &m.mp, &[], None),
        Duration::from_secs(60),
    );
    let report = agent_report(&out);
    assert_eq!(report["id"], "0:0", "{report:?}");
    check_agent(&report, None, outside_errno(&env, &g));
    assert_eq!(fs::read_to_string(m.path("src/new.py")).unwrap(), "new\n");
    drop(m);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    let pending: Vec<&str> = st[0]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(pending, ["src/a.py", "src/new.py"]);
}

/// The kernel engine rootless: `wopfs run` (auto) as uid 1000 picks it and
/// mounts the overlay in the run's own user namespace over the lower view
/// served through fusermount3; the session continues in a later run (auto
/// keeps its engine), is refused by `wopfs mount` with a reason, and
/// commits like any other. It has no live quota: a run that ends over the
/// grant's byte limit is warned, and the commit refuses until a later run
/// brings the set back under it.
#[test]
fn rootless_run_on_the_kernel_engine() {
    if !kernel_engine_here() {
        return;
    }
    let env = Env::new();
    project(&env);
    let (ws, mnt) = (env.mountpoint("ws"), env.mountpoint("mnt"));
    let policy = env.dir.path().join("policy.toml");
    fs::write(
        &policy,
        "enabled = true\nmax_files = 100\nmax_total_size_bytes = 10000\nrequire_reason = false\n\
         allowed_modes = [\"read_only\", \"read_write_overlay\"]\n",
    )
    .unwrap();
    let user = Uid1000::new(&env, &[&ws, &mnt]);
    let (as_user, ok) = (|a: &[&str]| user.run(a), |a: &[&str]| user.ok(a));
    let g = ok(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--policy",
        policy.to_str().unwrap(),
        "--purpose",
        "p",
        "--mode",
        "read_write_overlay",
    ]);
    let script = format!(
        "set -e; test $(id -u) = 1000; cat src/a.py; echo v2 > src/a.py; echo b > src/b.py; \
         rm README.md; mkdir -p d/e; echo x > d/e/x; test ! -e {host}/.env; test ! -e .env; \
         grep -q ' {ws} .* - overlay wopfs:{g} ' /proc/self/mountinfo; \
         ! grep -q ' fuse.wopfs ' /proc/self/mountinfo; \
         ! getfattr -d -m - src/a.py 2>/dev/null | grep -q overlay; echo ran",
        host = env.host.display(),
        ws = ws.display(),
    );
    // No --engine: auto, what a user gets.
    let out = user.sh(&g, &ws, &script);
    assert!(
        out.status.success(),
        "run: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a = 1\nran\n");
    let status: serde_json::Value = serde_json::from_str(&ok(&["status", &g, "--json"])).unwrap();
    assert_eq!(status[0]["engine"], "kernel", "{status}");
    let stat = ok(&["diff", &g, "--stat"]);
    for p in ["src/a.py", "src/b.py", "README.md", "d/e/x"] {
        assert!(stat.contains(p), "{p} in {stat}");
    }
    // Not outside a run, nor by root: the layer has no quota image.
    let err = as_user(&["mount", &g, mnt.to_str().unwrap()]);
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("needs root, or wopfs run"), "{err}");
    let err = env.fails(&["mount", &g, mnt.to_str().unwrap(), "--engine", "auto"]);
    assert!(err.contains("made rootless by wopfs run"), "{err}");
    // A later run (auto) continues the session on its engine.
    let out = user.sh(
        &g,
        &ws,
        "set -e; cat src/a.py d/e/x; test ! -e README.md; echo c > src/c.py",
    );
    assert!(
        out.status.success(),
        "second run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v2\nx\n");
    // Past the byte limit: nothing refuses the write, the run warns, the
    // commit refuses and changes nothing; a later run removes it.
    let big = |script: &str| {
        let out = user.sh(&g, &ws, script);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    let warned = big("head -c 20000 /dev/zero > big.bin");
    assert!(
        warned.contains("warning") && warned.contains("max_total_size_bytes (10000)"),
        "{warned}"
    );
    let err = as_user(&["commit", &g, "--yes"]);
    assert!(!err.status.success());
    let err = String::from_utf8_lossy(&err.stderr);
    assert!(err.contains("max_total_size_bytes"), "{err}");
    assert!(!env.host.join("big.bin").exists());
    assert_eq!(
        fs::read_to_string(env.host.join("src/a.py")).unwrap(),
        "a = 1\n"
    );
    let quiet = big("rm big.bin");
    assert!(!quiet.contains("warning"), "{quiet}");
    ok(&["commit", &g, "--yes"]);
    assert_eq!(
        fs::read_to_string(env.host.join("src/a.py")).unwrap(),
        "v2\n"
    );
    assert_eq!(
        fs::read_to_string(env.host.join("src/c.py")).unwrap(),
        "c\n"
    );
    assert_eq!(fs::read_to_string(env.host.join("d/e/x")).unwrap(), "x\n");
    assert!(!env.host.join("README.md").exists());
    assert_eq!(fs::metadata(env.host.join("src/b.py")).unwrap().uid(), 1000);
    assert!(
        !env.state.join("sessions").join(&g).join("kernel").exists(),
        "the committed layer is removed"
    );
    assert!(no_mount_of_grant(&g));
}

/// wopfs run as uid 1000 on `env`: its host tree, state dir and `dirs`
/// handed to that user, its temp dir open to it, `/dev/fuse` usable by
/// users (the mode distributions ship; fusermount3 needs it).
struct Uid1000<'a> {
    env: &'a Env,
    home: std::path::PathBuf,
}

impl<'a> Uid1000<'a> {
    fn new(env: &'a Env, dirs: &[&std::path::PathBuf]) -> Uid1000<'a> {
        let dev = fs::metadata("/dev/fuse").unwrap().permissions().mode() & 0o777;
        if dev != 0o666 {
            fs::set_permissions("/dev/fuse", fs::Permissions::from_mode(0o666)).unwrap();
        }
        let home = env.dir.path().canonicalize().unwrap();
        fs::set_permissions(&home, fs::Permissions::from_mode(0o755)).unwrap();
        fs::create_dir_all(&env.state).unwrap();
        for p in [&env.host, &env.state]
            .into_iter()
            .chain(dirs.iter().copied())
        {
            Command::new("chown")
                .args(["-R", "1000:1000", p.to_str().unwrap()])
                .status()
                .unwrap();
        }
        Uid1000 { env, home }
    }

    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new("setpriv")
            .args(["--reuid", "1000", "--regid", "1000", "--clear-groups", BIN])
            .args(["--state-dir", self.env.state.to_str().unwrap()])
            .args(args)
            .env("HOME", &self.home)
            // The suite's engine is for root's mounts: here auto decides,
            // as it does for a user.
            .env_remove("WOPFS_ENGINE")
            .output()
            .unwrap()
    }

    /// `wopfs run G --at AT -- sh -c SCRIPT`.
    fn sh(&self, g: &str, at: &std::path::Path, script: &str) -> std::process::Output {
        self.run(&[
            "run",
            g,
            "--at",
            at.to_str().unwrap(),
            "--",
            "sh",
            "-c",
            script,
        ])
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}
