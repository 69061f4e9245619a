//! The commit boundary against a hostile agent and a live host, really
//! mounted where the agent's moves are the mount's: symlinks that would
//! leave the tree, a human editing while a commit runs, a commit killed at
//! every step (after its commit point too), the owner and extended
//! attributes of updated files, and the test switches absent from builds
//! without the `fault-injection` feature.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

fn sample(env: &Env) {
    env.write("README.md", "# payments\n");
    env.write("src/pay.py", "def pay(x):\n    return int(x)\n");
    env.write("src/old.py", "old = True\n");
    env.write("docs/guide.md", "guide\n");
    env.write("lib/a.py", "a\n");
    env.write("lib/sub/b.py", "b\n");
    env.write("notes", "a file that becomes a directory\n");
    env.write(".env", "SECRET=1\n");
}

fn writable(env: &Env) -> String {
    env.grant(&["--mode", "read_write_overlay"])
}

/// Runs `wopfs commit G --yes` with extra environment.
fn commit_with(env: &Env, g: &str, vars: &[(&str, &str)]) -> std::process::Output {
    let mut c = wopfs_command();
    c.args([
        "--state-dir",
        env.state.to_str().unwrap(),
        "commit",
        g,
        "--yes",
    ]);
    for (k, v) in vars {
        c.env(k, v);
    }
    c.output().expect("running wopfs commit")
}

fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

// ---- 1. symlinks that leave the tree ----------------------------------

#[test]
fn symlinks_leaving_the_tree_are_refused_at_commit() {
    for (name, make, target) in [
        ("a new link to /etc/shadow", "src/evil", "/etc/shadow"),
        (
            "a granted file replaced by a link out",
            "src/pay.py",
            "../../../../etc/passwd",
        ),
        ("a link to a denied secret", "src/env_link", "../.env"),
        (
            "a link to a name the view does not show",
            "src/x",
            "../nowhere/else",
        ),
    ] {
        let env = Env::new();
        sample(&env);
        let g = writable(&env);
        let before = tree_digest(&env.host);
        {
            let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
            if make == "src/pay.py" {
                fs::remove_file(m.path(make)).unwrap();
            }
            symlink(target, m.path(make)).unwrap();
        }
        // The approver sees the link and where it points.
        let stat = env.ok(&["diff", &g, "--stat"]);
        assert!(
            stat.contains("symlink") && stat.contains(target),
            "{name}: {stat}"
        );
        let err = env.fails(&["commit", &g, "--yes"]);
        assert!(
            err.contains(&format!("symlink {make} -> {target} cannot be committed"))
                && err.contains("nothing was written"),
            "{name}: {err}"
        );
        assert_eq!(tree_digest(&env.host), before, "{name}: the host changed");
        // Still pending: the approver can reject it.
        env.ok(&["reject", &g, "--reason", "a link out of the tree"]);
        assert_eq!(tree_digest(&env.host), before);
    }
}

#[test]
fn symlinks_inside_the_view_commit() {
    let env = Env::new();
    sample(&env);
    let g = writable(&env);
    {
        let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
        symlink("pay.py", m.path("src/alias.py")).unwrap();
        symlink("../docs", m.path("src/docs")).unwrap();
        fs::write(m.path("src/new.py"), "new\n").unwrap();
        symlink("new.py", m.path("src/new_alias.py")).unwrap();
    }
    env.ok(&["commit", &g, "--yes"]);
    for (l, t) in [
        ("src/alias.py", "pay.py"),
        ("src/docs", "../docs"),
        ("src/new_alias.py", "new.py"),
    ] {
        assert_eq!(fs::read_link(env.host.join(l)).unwrap(), Path::new(t));
    }
}

/// A set made elsewhere (`--from`) gets the same rule.
#[test]
fn a_symlink_patch_in_a_set_from_elsewhere_is_refused() {
    use base64::Engine;
    let env = Env::new();
    sample(&env);
    let g = writable(&env);
    let before = tree_digest(&env.host);
    let target = b"/etc/shadow";
    let set = serde_json::json!({
        "format": "wopfs.patchset/1",
        "grant_id": g,
        "root": env.host,
        "created_at": "2026-01-01T00:00:00Z",
        "patches": [{
            "grant_id": g, "path": "src/evil", "operation": "create",
            "content": base64::engine::general_purpose::STANDARD.encode(target),
            "blob": format!("blake3:{}", blake3::hash(target).to_hex()),
            "mode": libc::S_IFLNK | 0o777, "size": target.len(),
        }],
    });
    let dir = env.dir.path().join("set");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("patchset.json"), set.to_string()).unwrap();
    let err = env.fails(&["commit", &g, "--yes", "--from", dir.to_str().unwrap()]);
    assert!(
        err.contains(
            "symlink src/evil -> /etc/shadow cannot be committed: its target leaves the root"
        ),
        "{err}"
    );
    assert_eq!(tree_digest(&env.host), before);
}

/// `commit_symlinks = false` forbids committing any symlink.
#[test]
fn a_policy_can_forbid_committing_symlinks() {
    let env = Env::new();
    sample(&env);
    let policy = env.dir.path().join("nolinks.toml");
    fs::write(
        &policy,
        "enabled = true\nmax_files = 100\nallowed_modes = [\"read_write_overlay\"]\n\
         require_reason = false\ncommit_symlinks = false\ndeny_patterns = [\"**/.env\"]\n",
    )
    .unwrap();
    let g = env.grant(&[
        "--mode",
        "read_write_overlay",
        "--policy",
        policy.to_str().unwrap(),
    ]);
    {
        let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
        symlink("pay.py", m.path("src/alias.py")).unwrap();
    }
    let before = tree_digest(&env.host);
    let err = env.fails(&["commit", &g, "--yes"]);
    assert!(err.contains("forbids committing symlinks"), "{err}");
    assert_eq!(tree_digest(&env.host), before);
}

// ---- 2. a host edit made during a commit ------------------------------

/// Each line of the host as (path, mode, content or link target): the
/// same before and after means nothing was written (directory times are
/// restored by a rollback, but a human's edit changes them legitimately).
fn host_lines(root: &Path) -> Vec<String> {
    list_tree(root)
        .into_iter()
        .map(|rel| {
            let p = root.join(&rel);
            let m = fs::symlink_metadata(&p).unwrap();
            let what = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&p).unwrap().display())
            } else if m.is_file() {
                String::from_utf8_lossy(&fs::read(&p).unwrap()).into_owned()
            } else {
                "dir".into()
            };
            format!("{rel} {:o} {what}", m.mode())
        })
        .collect()
}

fn edited_session(env: &Env) -> String {
    sample(env);
    let g = writable(env);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::write(
        m.path("src/pay.py"),
        "def pay(x):\n    return round(x, 2)\n",
    )
    .unwrap();
    fs::remove_file(m.path("src/old.py")).unwrap();
    fs::write(m.path("src/new.py"), "new = 1\n").unwrap();
    fs::write(m.path("docs/guide.md"), "better guide\n").unwrap();
    drop(m);
    g
}

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test hooks: cargo test --features fault-injection"
)]
fn a_host_edit_during_a_commit_is_a_conflict_and_is_kept() {
    for (hook, edit, path) in [
        // Saved between the check and the exchange of the update.
        (
            "WOPFS_TEST_HOOK_BEFORE_REPLACE",
            "printf 'human\\n' >> src/pay.py",
            "src/pay.py",
        ),
        // Saved into a file the set deletes, before it is moved aside.
        (
            "WOPFS_TEST_HOOK_AFTER_PLAN",
            "printf 'human\\n' >> src/old.py",
            "src/old.py",
        ),
        // A file the set creates, made by the human meanwhile.
        (
            "WOPFS_TEST_HOOK_BEFORE_REPLACE",
            "printf 'human\\n' > src/new.py",
            "src/new.py",
        ),
        // An edit in place through the same inode, as editors without
        // atomic saves do.
        (
            "WOPFS_TEST_HOOK_BEFORE_REPLACE",
            "printf 'overwritten by a human\\n' 1<> docs/guide.md",
            "docs/guide.md",
        ),
    ] {
        let env = Env::new();
        let g = edited_session(&env);
        let cmd = format!("cd '{}' && {edit}", env.host.display());
        let out = commit_with(&env, &g, &[(hook, &cmd)]);
        let err = stderr(&out);
        assert!(!out.status.success(), "{path}: the commit went through");
        assert!(
            err.contains(path) && err.contains("changed on the host during the commit"),
            "{path}: {err}"
        );
        // The human's edit is there; nothing of the commit is.
        let mut expect = {
            let twin = Env::new();
            sample(&twin);
            let sh = format!("cd '{}' && {edit}", twin.host.display());
            assert!(Command::new("sh")
                .arg("-c")
                .arg(&sh)
                .status()
                .unwrap()
                .success());
            host_lines(&twin.host)
        };
        expect.sort();
        let mut got = host_lines(&env.host);
        got.sort();
        assert_eq!(got, expect, "{path}: the host is not the human's");
        assert!(!env
            .state
            .join("sessions")
            .join(&g)
            .join("commit.json")
            .exists());
        // The audit log closes the commit as a failure with the conflict.
        let recs: Value = serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
        assert!(
            recs.as_array()
                .unwrap()
                .iter()
                .any(|r| r["event"] == "failure"
                    && r["details"]["error"] == "conflict"
                    && r["details"]["rolled_back"] == true),
            "{recs}"
        );
        env.ok(&["audit", "--verify"]);
    }
}

// ---- 3. killed at every step, after the commit point too ---------------

#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test switches: cargo test --features fault-injection"
)]
fn a_commit_killed_at_every_step_ends_before_or_after_and_closes_its_audit() {
    // A set with creates, updates, deletes, a directory that becomes a file
    // and a file that becomes a directory.
    let session = |env: &Env| -> String {
        let g = edited_session(env);
        let m = env.mount(&g, &env.mountpoint("mnt2"), &[]);
        fs::remove_dir_all(m.path("lib")).unwrap();
        fs::write(m.path("lib"), "lib is a file now\n").unwrap();
        fs::remove_file(m.path("notes")).unwrap();
        fs::create_dir(m.path("notes")).unwrap();
        fs::write(m.path("notes/one.md"), "one\n").unwrap();
        drop(m);
        g
    };
    let reference = Env::new();
    let g = session(&reference);
    let before_lines = host_lines(&reference.host);
    reference.ok(&["commit", &g, "--yes"]);
    let after = host_lines(&reference.host);
    assert_eq!(
        fs::read_to_string(reference.host.join("lib")).unwrap(),
        "lib is a file now\n"
    );

    let mut fault = 1;
    let mut before_count = 0;
    loop {
        assert!(fault < 200, "the commit never completed");
        let env = Env::new();
        let g = session(&env);
        // Exactly before means the same times too, within this host.
        let before = tree_digest(&env.host);
        assert_eq!(host_lines(&env.host), before_lines);
        let out = commit_with(&env, &g, &[("WOPFS_TEST_FAULT_AFTER", &fault.to_string())]);
        if out.status.success() {
            break; // past the last step: done
        }
        assert_eq!(
            out.status.code(),
            Some(86),
            "fault {fault}: {}",
            stderr(&out)
        );
        let status: Value = serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
        assert_eq!(status[0]["phase"], "commit-interrupted", "fault {fault}");
        // A mount must wait for the recovery.
        let err = env.fails(&["mount", &g, env.mountpoint("m3").to_str().unwrap()]);
        assert!(err.contains("interrupted commit"), "fault {fault}: {err}");
        // Alternate the two ways back: recover, or simply commit again.
        let next = if fault % 2 == 0 {
            env.wopfs(&["recover", &g])
        } else {
            env.wopfs(&["commit", &g, "--yes"])
        };
        let said = format!("{}{}", String::from_utf8_lossy(&next.stdout), stderr(&next));
        let now = host_lines(&env.host);
        let status: Value = serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
        let phase = status[0]["phase"].as_str().unwrap().to_string();
        if now == after {
            assert_eq!(phase, "committed", "fault {fault}: {said}");
            assert!(
                env.fails(&["commit", &g, "--yes"])
                    .contains("already been committed"),
                "fault {fault}"
            );
        } else {
            before_count += 1;
            assert_eq!(tree_digest(&env.host), before, "fault {fault}: {said}");
            assert_eq!(phase, "open", "fault {fault}: {said}");
            env.ok(&["commit", &g, "--yes"]);
            assert_eq!(host_lines(&env.host), after, "fault {fault}");
        }
        assert!(
            !list_tree(&env.host).iter().any(|p| p.contains(".wopfs-")),
            "fault {fault}: scratch names left"
        );
        // Every commit the log starts, it closes; the chain verifies.
        env.ok(&["audit", "--verify"]);
        let recs: Value = serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
        let recs = recs.as_array().unwrap();
        for start in recs.iter().filter(|r| r["event"] == "start") {
            let id = &start["details"]["commit"];
            assert!(
                recs.iter()
                    .any(|r| (r["event"] == "complete" || r["event"] == "failure")
                        && &r["details"]["commit"] == id),
                "fault {fault}: commit {id} is never closed: {recs:?}"
            );
        }
        fault += 1;
    }
    assert!(
        before_count >= 5 && fault - 1 > before_count,
        "the faults did not cover both sides of the commit point: {before_count} of {}",
        fault - 1
    );
}

// ---- 4. ownership and extended attributes ------------------------------

/// A POSIX access ACL (`system.posix_acl_access`, version 2): the owner
/// rw, user 1001 r, group r, mask r, others r.
fn acl_bytes() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1001),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

#[test]
fn an_update_keeps_owner_group_and_xattrs() {
    let env = Env::new();
    sample(&env);
    let pay = env.host.join("src/pay.py");
    std::os::unix::fs::chown(&pay, Some(1000), Some(1000)).unwrap();
    xattr_set(&pay, "user.origin", b"payments-team");
    let acl = acl_bytes();
    let has_acl = rustix::fs::setxattr(
        &pay,
        "system.posix_acl_access",
        &acl,
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    let g = writable(&env);
    {
        let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
        fs::write(
            m.path("src/pay.py"),
            "def pay(x):\n    return round(x, 2)\n",
        )
        .unwrap();
        fs::write(m.path("src/brand_new.py"), "x = 1\n").unwrap();
    }
    let out: Value = serde_json::from_str(&env.ok(&["commit", &g, "--yes", "--json"])).unwrap();
    let meta = fs::metadata(&pay).unwrap();
    assert_eq!((meta.uid(), meta.gid()), (1000, 1000), "owner lost");
    assert_eq!(xattr_get(&pay, "user.origin"), b"payments-team");
    if has_acl {
        assert_eq!(xattr_get(&pay, "system.posix_acl_access"), acl, "ACL lost");
    }
    // --json says what was kept.
    let kept = out["kept"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["path"] == "src/pay.py")
        .unwrap_or_else(|| panic!("{out}"));
    assert_eq!(kept["owner"], "1000:1000");
    let names: Vec<&str> = kept["xattrs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(names.contains(&"user.origin"), "{kept}");
    // A new file is owned as any file the committing user creates.
    let new = fs::metadata(env.host.join("src/brand_new.py")).unwrap();
    assert_eq!(new.uid(), rustix::process::geteuid().as_raw());
}

fn xattr_set(p: &Path, name: &str, v: &[u8]) {
    rustix::fs::setxattr(p, name, v, rustix::fs::XattrFlags::empty()).unwrap();
}

fn xattr_get(p: &Path, name: &str) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    let n = rustix::fs::getxattr(p, name, &mut buf[..]).unwrap();
    buf.truncate(n);
    buf
}

// ---- 8. the test switches ---------------------------------------------

/// A build without the `fault-injection` feature (what release builds
/// are) ignores the switch: the commit runs to the end. `scripts/test.sh`
/// runs this test in such a build, and also checks the binary for the
/// switches' names.
#[test]
#[cfg_attr(
    feature = "fault-injection",
    ignore = "checks a build without the fault-injection feature (scripts/test.sh runs it)"
)]
fn fault_switch_is_absent_without_the_feature() {
    let env = Env::new();
    let g = edited_session(&env);
    let mark = env.dir.path().join("hook-ran");
    let hook = format!("touch '{}'", mark.display());
    let out = commit_with(
        &env,
        &g,
        &[
            ("WOPFS_TEST_FAULT_AFTER", "1"),
            ("WOPFS_TEST_ERROR_AFTER", "1"),
            ("WOPFS_TEST_HOOK_AFTER_PLAN", &hook),
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!mark.exists(), "a test hook ran");
    assert_eq!(
        fs::read_to_string(env.host.join("src/new.py")).unwrap(),
        "new = 1\n"
    );
}
