//! Live revocation (`wopfs revoke`, `wopfs token revoke`) with real mounts,
//! on the engine the run tests (`WOPFS_TEST_ENGINE`: fuse or kernel).
//!
//! Within a second of `wopfs revoke` a mounted view shows nothing, also to
//! a process whose cwd is inside it; a later mount is refused; the changes
//! stay for review (diff, reject) and are never committed.

mod common;

use std::fs;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use common::*;
use ed25519_dalek::SigningKey;
use serde_json::Value;

/// What revocation must achieve by: the daemon polls every 200 ms.
const WITHIN: Duration = Duration::from_secs(1);

fn audit_ops(env: &Env, g: &str) -> Vec<String> {
    let out = env.ok(&["audit", "--json", g]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|e| e["operationType"].as_str().unwrap_or("").to_string())
        .collect()
}

fn enoent(p: &Path) -> bool {
    fs::symlink_metadata(p).is_err_and(|e| e.raw_os_error() == Some(libc::ENOENT))
}

#[test]
fn a_revoked_view_shows_nothing_within_a_second_even_to_a_cwd_holder() {
    let engine = test_engine();
    if engine == "kernel" && !kernel_engine_here() {
        return;
    }
    let env = Env::new();
    env.write("README.md", "readme\n");
    env.write("src/app.py", "print('host')\n");
    env.write("src/lib/util.py", "def f(): pass\n");
    let g = env.grant(&["--allow", "**", "--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    fs::write(m.path("src/new.txt"), "agent's\n").unwrap();
    fs::write(m.path("README.md"), "edited\n").unwrap();

    let mut sh = Shell::start(&m.path("src"));
    let (out, rc) = sh.run("cat app.py");
    assert_eq!((out, rc), (vec!["print('host')".to_string()], 0));
    // Cached by the kernel (entries, attributes, pages) before revocation.
    assert!(m.path("src/lib/util.py").exists());
    assert_eq!(fs::read_to_string(m.path("README.md")).unwrap(), "edited\n");

    let said = env.ok(&["revoke", &g, "--reason", "leaked key"]);
    let start = Instant::now();
    assert!(said.contains(&format!("revoked {g}")), "{said}");
    assert!(said.contains(&format!("wopfs diff {g}")), "{said}");

    let names = [
        "README.md",
        "src",
        "src/app.py",
        "src/lib/util.py",
        "src/new.txt",
    ];
    let gone = poll_until(WITHIN, || names.iter().all(|n| enoent(&m.path(n))));
    assert!(
        gone,
        "after {:?}, still visible: {:?}",
        start.elapsed(),
        names
            .iter()
            .filter(|n| !enoent(&m.path(n)))
            .collect::<Vec<_>>()
    );
    eprintln!(
        "{engine}: the view was empty {:?} after wopfs revoke returned",
        start.elapsed()
    );
    // The root lists nothing: the FUSE engine's view answers ENOENT; the
    // kernel engine's overlay is taken down (the empty mountpoint shows).
    match fs::read_dir(&mp) {
        Ok(d) => assert_eq!(d.count(), 0, "the root of a revoked view lists nothing"),
        Err(e) => assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "{e}"),
    }
    // The process inside can no longer read host files by relative path,
    // nor list anything, nor write.
    for cmd in [
        "cat app.py",
        "cat lib/util.py",
        "cat ../README.md",
        "touch x",
    ] {
        let (out, rc) = sh.run(cmd);
        assert_ne!(rc, 0, "{cmd} in the revoked view succeeded: {out:?}");
        assert!(out.is_empty(), "{cmd}: {out:?}");
    }
    let (out, _) = sh.run("ls -a");
    assert!(out.is_empty(), "ls in the revoked view: {out:?}");
    // Its own new file: the FUSE engine's view answers ENOENT; the kernel
    // engine's detached overlay still shows the agent its own upper files
    // (read-only now) until it lets go of its cwd (README, "Revocation").
    let (out, rc) = sh.run("cat new.txt");
    if engine == "kernel" {
        assert_eq!((out, rc), (vec!["agent's".to_string()], 0));
    } else {
        assert_ne!(rc, 0, "{out:?}");
    }
    drop(sh);

    // A new mount (or run) is refused, saying why.
    let mp2 = env.mountpoint("again");
    let err = env.fails(&["mount", &g, mp2.to_str().unwrap()]);
    assert!(
        err.contains(&format!("grant {g} was revoked")) && err.contains("(leaked key)"),
        "{err}"
    );
    let err = env.fails(&["run", &g, "--", "true"]);
    assert!(err.contains("was revoked"), "{err}");
    // Revoking again is a conflict that names the first revocation.
    let err = env.fails(&["revoke", &g]);
    assert!(err.contains("already revoked"), "{err}");

    // The changes stay for review, and are never committed.
    drop(m);
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    assert_eq!(status[0]["phase"], "revoked", "{status}");
    let diff = env.ok(&["diff", &g]);
    assert!(
        diff.contains("src/new.txt") && diff.contains("+edited"),
        "{diff}"
    );
    let err = env.fails(&["commit", &g, "--yes"]);
    assert!(
        err.contains("cannot commit") && err.contains("revoked"),
        "{err}"
    );
    // Nor onto a git branch: every commit starts with the same checks.
    let err = env.fails(&["commit", &g, "--git-branch", "agent/x", "--yes"]);
    assert!(
        err.contains("cannot commit") && err.contains("revoked"),
        "{err}"
    );
    assert_eq!(
        fs::read_to_string(env.host.join("README.md")).unwrap(),
        "readme\n"
    );
    assert!(!env.host.join("src/new.txt").exists());
    env.ok(&["reject", &g, "--reason", "revoked"]);

    let ops = audit_ops(&env, &g);
    for op in ["wopfs.grant.revoke", "wopfs.view.revoked"] {
        assert!(ops.iter().any(|o| o == op), "{op} in {ops:?}");
    }
    assert!(
        no_mount_of_grant(&g),
        "the revoked view is gone after unmount"
    );
}

/// Mounts grant `g` at `mp` read-only, with kernel passthrough or without
/// it (`WOPFS_NO_PASSTHROUGH`), holding `a.txt` open; revokes it; returns
/// what a read of the open file gives then, and after an unmount.
fn open_file_across_revocation(
    passthrough: bool,
) -> (std::io::Result<usize>, std::io::Result<usize>) {
    use std::os::unix::fs::FileExt;
    let env = Env::new();
    env.write("a.txt", "a\n");
    env.write("d/b.txt", "b\n");
    let g = env.grant(&["--allow", "**"]);
    let mp = env.mountpoint("mnt");
    let mut cmd = wopfs_command();
    cmd.arg("--state-dir")
        .arg(&env.state)
        .args(["mount", &g])
        .arg(&mp);
    if !passthrough {
        cmd.env("WOPFS_NO_PASSTHROUGH", "1");
    }
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mounted::new(mp.clone(), env.daemon_pid(&g));
    // Read-only names are cached a day: only the notifications drop them.
    assert_eq!(fs::read_to_string(m.path("d/b.txt")).unwrap(), "b\n");
    let f = fs::File::open(m.path("a.txt")).unwrap();
    let mut buf = [0u8; 8];
    assert_eq!(f.read_at(&mut buf, 0).unwrap(), 2);
    env.ok(&["revoke", &g]);
    let start = Instant::now();
    let gone = poll_until(WITHIN, || {
        enoent(&m.path("a.txt")) && enoent(&m.path("d/b.txt")) && enoent(&m.path("d"))
    });
    assert!(gone, "still visible after {:?}", start.elapsed());
    let revoked = f.read_at(&mut buf, 0);
    // What stops the rest: unmounting (lazily: the file is open) ends the daemon.
    let pid = m.pid.unwrap();
    env.ok(&["umount", "--lazy", mp.to_str().unwrap()]);
    wait_until("the daemon to exit", Duration::from_secs(10), || {
        !pid_running(pid)
    });
    let unmounted = f.read_at(&mut buf, 0);
    drop(f);
    drop(m);
    assert!(no_mount_of_grant(&g));
    (revoked, unmounted)
}

#[test]
fn an_open_file_is_read_by_the_daemon_without_passthrough_and_refused() {
    let (revoked, unmounted) = open_file_across_revocation(false);
    // The page cache was invalidated: the read asks the daemon: ENOENT.
    assert_eq!(errno(revoked), libc::ENOENT);
    assert_eq!(errno(unmounted), libc::ENOTCONN);
}

#[test]
fn an_open_file_served_by_passthrough_reads_on_until_it_is_closed() {
    let (revoked, unmounted) = open_file_across_revocation(true);
    eprintln!("passthrough: after revocation {revoked:?}, after unmount {unmounted:?}");
    // Where the kernel has passthrough (Linux 6.9+) the read goes straight
    // to the host file: neither revocation nor unmounting stops it, only
    // closing the file (README, "Revocation"). Without it, as above.
    match revoked {
        Ok(n) => {
            assert_eq!(n, 2);
            assert_eq!(
                unmounted.unwrap(),
                2,
                "a passthrough fd reads on after unmount"
            );
        }
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(libc::ENOENT), "no passthrough here");
            assert_eq!(errno(unmounted), libc::ENOTCONN);
        }
    }
}

#[test]
fn revoking_an_unknown_grant_or_twice_fails_clearly() {
    let env = Env::new();
    env.write("a.txt", "a\n");
    let err = env.fails(&["revoke", "g-0000000000000000"]);
    assert!(err.contains("unknown grant g-0000000000000000"), "{err}");
    let err = env.fails(&["revoke", "nonsense"]);
    assert!(err.contains("unknown grant"), "{err}");
    let g = env.grant(&["--allow", "**"]);
    let v: Value =
        serde_json::from_str(&env.ok(&["revoke", &g, "--json", "--reason", "r"])).unwrap();
    assert_eq!(v["grant_id"], g.as_str());
    assert_eq!(v["reason"], "r");
    assert!(v["mountpoint"].is_null(), "not mounted: {v}");
    let err = env.fails(&["revoke", &g, "--reason", "again"]);
    assert!(
        err.contains(&format!("grant {g} is already revoked")),
        "{err}"
    );
    // Tampering with the record does not undo it.
    let rec = env.state.join("sessions").join(&g).join("revoked");
    let text = fs::read_to_string(&rec).unwrap();
    fs::write(&rec, text.replace("\"r\"", "\"x\"")).unwrap();
    let mp = env.mountpoint("mnt");
    let err = env.fails(&["mount", &g, mp.to_str().unwrap()]);
    assert!(err.contains("tampered"), "{err}");
    assert!(no_mount_of_grant(&g));
}

fn keys(env: &Env) -> (String, String) {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).unwrap();
    let sk = SigningKey::from_bytes(&seed);
    let signing = env.dir.path().join("k.seed");
    let verifying = env.dir.path().join("k.pub");
    fs::write(&signing, STANDARD.encode(seed)).unwrap();
    fs::write(&verifying, STANDARD.encode(sk.verifying_key().to_bytes())).unwrap();
    (
        signing.to_str().unwrap().to_string(),
        verifying.to_str().unwrap().to_string(),
    )
}

fn token_id(env: &Env, verifying: &str, t: &str) -> String {
    let v: Value = serde_json::from_str(&env.ok(&[
        "token",
        "verify",
        t,
        "--json",
        "--verifying-key",
        verifying,
    ]))
    .unwrap();
    v["grant_id"].as_str().unwrap().to_string()
}

#[test]
fn a_revoked_token_and_its_delegated_children_are_refused_at_mount() {
    let env = Env::new();
    env.write("src/a.py", "a\n");
    env.ok(&["bucket", "set", "b-1", env.host.to_str().unwrap()]);
    let (signing, verifying) = keys(&env);
    let parent = env.ok(&[
        "token",
        "mint",
        "--signing-key",
        &signing,
        "--issuer",
        "main",
        "--audience",
        "worker",
        "--bucket",
        "b-1",
        "--allow",
        "src/**",
        "--ttl",
        "600",
    ]);
    let child = env.ok(&[
        "token",
        "delegate",
        &parent,
        "--signing-key",
        &signing,
        "--verifying-key",
        &verifying,
        "--audience",
        "sub",
    ]);
    let grandchild = env.ok(&[
        "token",
        "delegate",
        &child,
        "--signing-key",
        &signing,
        "--verifying-key",
        &verifying,
        "--audience",
        "subsub",
    ]);
    let (pid, cid) = (
        token_id(&env, &verifying, &parent),
        token_id(&env, &verifying, &child),
    );
    let mp = env.mountpoint("mnt");
    let mount = |t: &str, audience: &str| {
        env.wopfs(&[
            "mount",
            "--token",
            t,
            "--root",
            env.host.to_str().unwrap(),
            "--audience",
            audience,
            "--verifying-key",
            &verifying,
            mp.to_str().unwrap(),
        ])
    };
    // Before: the child mounts.
    let out = mount(&child, "sub");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let m = Mounted::new(mp.clone(), env.daemon_pid(&g));
    assert_eq!(fs::read_to_string(m.path("src/a.py")).unwrap(), "a\n");
    drop(m);

    // Revoking the child refuses it and its own child, not its parent.
    let said = env.ok(&["token", "revoke", &cid, "--reason", "sub went rogue"]);
    assert!(said.contains(&format!("revoked token {cid}")), "{said}");
    let out = mount(&child, "sub");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success()
            && err.contains(&format!("token {cid} was revoked"))
            && err.contains("sub went rogue"),
        "{err}"
    );
    let out = mount(&grandchild, "subsub");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains(&format!("delegated from {cid}, which was revoked")),
        "{err}"
    );
    let out = mount(&parent, "worker");
    assert!(
        out.status.success(),
        "the parent is not revoked: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let g = String::from_utf8(out.stdout).unwrap().trim().to_string();
    drop(Mounted::new(mp.clone(), env.daemon_pid(&g)));

    // Revoking the root refuses the whole chain, `wopfs run --token` too.
    env.ok(&["token", "revoke", &pid]);
    let out = mount(&parent, "worker");
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("was revoked"));
    let out = env.wopfs(&[
        "run",
        "--token",
        &child,
        "--root",
        env.host.to_str().unwrap(),
        "--audience",
        "sub",
        "--verifying-key",
        &verifying,
        "--",
        "true",
    ]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("was revoked"));

    // Error paths: twice, and not a token id.
    let err = env.fails(&["token", "revoke", &pid]);
    assert!(
        err.contains(&format!("token {pid} is already revoked")),
        "{err}"
    );
    let err = env.fails(&["token", "revoke", "nonsense"]);
    assert!(err.contains("not a token id"), "{err}");
    assert!(!is_mounted(&mp));
}

/// The API's policy: root approves.
const POLICY: &str = "enabled = true\nmax_files = 100\nmax_total_size_bytes = 10000000\n\
     allowed_modes = [\"read_only\", \"read_write_overlay\"]\napprover_uids = [0]\n";

/// `POST /v1/grants/{id}/revoke` through the Python client's `revoke()`.
#[test]
fn the_api_and_the_python_client_revoke_a_view_they_opened() {
    let env = Env::new();
    env.write("src/pay.py", "def pay(): pass\n");
    let server = Server::start(&env, "wopfs.sock", POLICY, &[]);
    let client = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    let py = |code: &str| {
        let out = Command::new(python())
            .arg("-c")
            .arg(format!(
                "import sys, json; sys.path.insert(0, {client:?}); from wopfs_client import *; \
                 c = WopfsClient({sock:?}); {code}",
                client = client.to_str().unwrap(),
                sock = server.socket.to_str().unwrap()
            ))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let (ok, out, err) = py(&format!(
        "v = c.open_view(purpose='pay', hints=['pay'], mode=WorkspaceMode.READ_WRITE_OVERLAY, \
         reason='fix', engine={:?}); print(v.aio.grant.grant_id, v.aio.mount_path)",
        test_engine()
    ));
    assert!(ok, "{err}");
    let (g, mp) = out.split_once(' ').unwrap();
    let mp = Path::new(mp);
    assert_eq!(
        fs::read_to_string(mp.join("src/pay.py")).unwrap(),
        "def pay(): pass\n"
    );
    fs::write(mp.join("src/pay.py"), "def pay(): return 1\n").unwrap();

    let (ok, out, err) = py(&format!(
        "print(json.dumps(c.revoke({g:?}, reason='agent misbehaved')))"
    ));
    assert!(ok, "{err}");
    let start = Instant::now();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["grant_id"], g);
    assert_eq!(v["reason"], "agent misbehaved");
    assert!(v["actor"].as_str().unwrap().contains("(api)"), "{v}");
    let gone = poll_until(WITHIN, || {
        enoent(&mp.join("src/pay.py")) && enoent(&mp.join("src"))
    });
    assert!(gone, "still visible after {:?}", start.elapsed());

    // Twice: a conflict. The changes are still there to review.
    let (ok, _, err) = py(&format!("c.revoke({g:?})"));
    assert!(
        !ok && err.contains("409") && err.contains("already revoked"),
        "{err}"
    );
    let (ok, out, err) = py(&format!("print([p.path for p in c.patches({g:?})])"));
    assert!(ok && out.contains("src/pay.py"), "{out} {err}");
    // Unknown grants: 404.
    let (ok, _, err) = py("c.revoke('g-0000000000000000')");
    assert!(!ok && err.contains("404"), "{err}");
    drop(server);
    assert!(no_mount_of_grant(g));
}
