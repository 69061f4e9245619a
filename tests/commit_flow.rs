//! The approver's workflow, really mounted: grant, mount, edit, diff,
//! export (checked against the JSON Schema), commit (the host changes as
//! shown), reject (the host does not), the audit chain, partial commits,
//! and crash safety: a commit interrupted at many points recovers to
//! exactly before or exactly after.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use common::*;

fn schema() -> jsonschema::Validator {
    let text = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/patchset.schema.json"
    ))
    .unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

fn check_schema(json: &serde_json::Value) {
    let v = schema();
    let errors: Vec<String> = v
        .iter_errors(json)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "schema errors: {errors:?}");
}

/// Paths, kinds, modes, contents and link targets: what a commit changes.
/// (Directory mtimes are left out: writing a file in a directory changes
/// them, even when the commit is rolled back.)
fn content_digest(root: &Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut h = blake3::Hasher::new();
    for rel in list_tree(root) {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        h.update(rel.as_bytes());
        h.update(&m.mode().to_le_bytes());
        if m.file_type().is_symlink() {
            h.update(fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            h.update(&fs::read(&p).unwrap());
        }
    }
    h.finalize().to_hex().to_string()
}

fn sample(env: &Env) {
    env.write("README.md", "# payments\n");
    env.write("src/pay.py", "def pay(x):\n    return int(x)\n");
    env.write("src/old.py", "old = True\n");
    env.write("docs/guide.md", "guide\n");
    env.write("run.sh", "#!/bin/sh\necho run\n");
    env.write(".env", "SECRET=1\n");
}

#[test]
fn a_whole_session_committed_and_another_rejected() {
    let env = Env::new();
    sample(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::write(
        m.path("src/pay.py"),
        "def pay(x):\n    return round(x, 2)\n",
    )
    .unwrap();
    fs::remove_file(m.path("src/old.py")).unwrap();
    fs::write(m.path("src/new.py"), "new = 1\n").unwrap();
    fs::rename(m.path("docs/guide.md"), m.path("docs/GUIDE.md")).unwrap();
    fs::set_permissions(m.path("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink("pay.py", m.path("src/pay_link.py")).unwrap();
    let big: Vec<u8> = (0..200_000u32).map(|i| (i % 253) as u8).collect();
    fs::write(m.path("data.bin"), &big).unwrap();
    let view = list_tree(&m.mp);
    let err = env.fails(&["commit", &g, "--yes"]);
    assert!(
        err.contains("is mounted") && err.contains("umount"),
        "{err}"
    );
    drop(m);
    let before = content_digest(&env.host);

    // diff: a unified diff, a rename, a mode change, a binary file, no contents dumped.
    let diff = env.ok(&["diff", &g]);
    assert!(
        diff.contains("-    return int(x)\n+    return round(x, 2)"),
        "{diff}"
    );
    assert!(
        diff.contains("rename from docs/guide.md\nrename to docs/GUIDE.md"),
        "{diff}"
    );
    assert!(diff.contains("old mode 100644\nnew mode 100755"), "{diff}");
    assert!(
        diff.contains("deleted file mode") && diff.contains("new file mode"),
        "{diff}"
    );
    assert!(
        diff.contains("Binary files differ") && diff.contains("200000 bytes"),
        "{diff}"
    );
    assert!(!diff.contains('\x1b'), "no colour when piped");
    let stat = env.ok(&["diff", &g, "--stat"]);
    assert!(
        stat.contains("src/pay.py") && stat.contains("files changed"),
        "{stat}"
    );
    let dj: serde_json::Value = serde_json::from_str(&env.ok(&["diff", &g, "--json"])).unwrap();
    assert!(dj
        .as_array()
        .unwrap()
        .iter()
        .any(|d| d["path"] == "data.bin" && d["binary"] == true));

    // export: schema-valid, sorted, blobs for large contents, inline on request.
    let out = env.dir.path().join("set");
    env.ok(&["export", &g, "-o", out.to_str().unwrap()]);
    let set: serde_json::Value =
        serde_json::from_str(&fs::read_to_string(out.join("patchset.json")).unwrap()).unwrap();
    check_schema(&set);
    let patches = set["patches"].as_array().unwrap();
    let paths: Vec<&str> = patches
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    let mut sorted = paths.clone();
    sorted.sort();
    assert_eq!(paths, sorted);
    let pay = patches.iter().find(|p| p["path"] == "src/pay.py").unwrap();
    assert_eq!(pay["operation"], "update");
    let want_base = format!(
        "blake3:{}",
        blake3::hash(b"def pay(x):\n    return int(x)\n").to_hex()
    );
    assert_eq!(pay["base"], want_base.as_str());
    let bin = patches.iter().find(|p| p["path"] == "data.bin").unwrap();
    assert!(bin.get("content").is_none(), "large content goes to blobs/");
    let hex = &bin["blob"].as_str().unwrap()["blake3:".len()..];
    assert_eq!(fs::read(out.join("blobs").join(hex)).unwrap(), big);
    let inline: serde_json::Value =
        serde_json::from_str(&env.ok(&["export", &g, "--inline"])).unwrap();
    check_schema(&inline);
    assert!(inline["patches"]
        .as_array()
        .unwrap()
        .iter()
        .all(|p| p["operation"] == "delete" || p.get("content").is_some()));
    let mut again = inline.clone();
    again["created_at"] = set["created_at"].clone();
    let mut first = set.clone();
    for p in first["patches"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("content");
    }
    for p in again["patches"].as_array_mut().unwrap() {
        p.as_object_mut().unwrap().remove("content");
    }
    assert_eq!(first, again, "exports are deterministic");

    // dry run: says what, writes nothing.
    let dry = env.ok(&["commit", &g, "--dry-run"]);
    assert!(
        dry.contains("would update src/pay.py") && dry.contains("would delete src/old.py"),
        "{dry}"
    );
    assert_eq!(content_digest(&env.host), before);

    // commit: the host becomes what the view showed.
    env.ok(&["commit", &g, "--yes", "--approver", "alice"]);
    let mut host_now = list_tree(&env.host);
    host_now.retain(|p| p != ".env");
    assert_eq!(host_now, view);
    assert_eq!(
        fs::read_to_string(env.host.join("src/pay.py")).unwrap(),
        "def pay(x):\n    return round(x, 2)\n"
    );
    assert_eq!(fs::read(env.host.join("data.bin")).unwrap(), big);
    assert_eq!(
        fs::read_link(env.host.join("src/pay_link.py")).unwrap(),
        Path::new("pay.py")
    );
    assert_eq!(
        fs::metadata(env.host.join("run.sh"))
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o755
    );
    assert!(!env.host.join("src/old.py").exists() && !env.host.join("docs/guide.md").exists());
    assert_eq!(
        fs::read_to_string(env.host.join(".env")).unwrap(),
        "SECRET=1\n"
    );
    assert!(!fs::read_dir(env.host.join("src")).unwrap().any(|e| e
        .unwrap()
        .file_name()
        .to_string_lossy()
        .starts_with(".wopfs-")));
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    assert_eq!(st[0]["pending"].as_array().unwrap().len(), 0);
    assert!(
        !env.state.join("sessions").join(&g).join("overlay").exists(),
        "overlay released"
    );
    let e = env.fails(&["mount", &g, env.mountpoint("again").to_str().unwrap()]);
    assert!(e.contains("already been committed"), "{e}");

    // Another session, rejected: the host does not change.
    let g2 = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g2, &env.mountpoint("mnt2"), &[]);
    fs::write(m.path("README.md"), "# vandalised\n").unwrap();
    fs::remove_file(m.path("src/pay.py")).unwrap();
    drop(m);
    let before = tree_digest(&env.host);
    env.ok(&["reject", &g2, "--reason", "not what we asked for"]);
    assert_eq!(tree_digest(&env.host), before);
    let e = env.fails(&["commit", &g2, "--yes"]);
    assert!(
        e.contains("was rejected") && e.contains("not what we asked for"),
        "{e}"
    );

    // The audit log: every step, a verified chain, no contents.
    let verify = env.ok(&["audit", "--verify"]);
    assert!(verify.contains("verified"), "{verify}");
    let log: serde_json::Value = serde_json::from_str(&env.ok(&["audit", "--json"])).unwrap();
    let ops: Vec<(String, String)> = log
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["operationType"].as_str().unwrap().to_string(),
                r["event"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    for want in [
        ("wopfs.grant.create", "complete"),
        ("wopfs.view.mount", "complete"),
        ("wopfs.view.umount", "complete"),
        ("wopfs.patch.export", "complete"),
        ("wopfs.patch.commit", "start"),
        ("wopfs.patch.commit", "complete"),
        ("wopfs.patch.reject", "complete"),
    ] {
        assert!(
            ops.iter().any(|(o, e)| o == want.0 && e == want.1),
            "missing {want:?} in {ops:?}"
        );
    }
    assert!(log
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["actor"] == "alice"));
    let raw = fs::read_to_string(env.state.join("audit.jsonl")).unwrap();
    assert!(
        !raw.contains("round(x, 2)") && !raw.contains("vandalised"),
        "contents in the audit log"
    );
}

#[test]
fn a_partial_commit_leaves_the_rest_pending() {
    let env = Env::new();
    sample(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::write(m.path("src/pay.py"), "def pay(x):\n    return x\n").unwrap();
    fs::write(m.path("docs/new.md"), "new\n").unwrap();
    fs::remove_file(m.path("README.md")).unwrap();
    drop(m);
    env.ok(&["commit", &g, "--path", "src", "--path", "README.md"]);
    assert_eq!(
        fs::read_to_string(env.host.join("src/pay.py")).unwrap(),
        "def pay(x):\n    return x\n"
    );
    assert!(!env.host.join("README.md").exists());
    assert!(!env.host.join("docs/new.md").exists());
    let st: serde_json::Value = serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    let pending: Vec<&str> = st[0]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(pending, vec!["docs/new.md"]);
    let e = env.fails(&["commit", &g, "--path", "nothing/here"]);
    assert!(e.contains("no pending change"), "{e}");
    // The session goes on: mount again, change more, commit the rest.
    let m = env.mount(&g, &env.mountpoint("mnt2"), &[]);
    assert_eq!(
        fs::read_to_string(m.path("src/pay.py")).unwrap(),
        "def pay(x):\n    return x\n"
    );
    fs::remove_file(m.path("src/pay.py")).unwrap();
    drop(m);
    env.ok(&["commit", &g]);
    assert!(env.host.join("docs/new.md").exists() && !env.host.join("src/pay.py").exists());
}

/// The crash test's host tree: 120 files in 6 directories.
fn crash_populate(env: &Env) {
    for i in 0..120 {
        env.write(&format!("d{}/f{i}.txt", i % 6), &format!("original {i}\n"));
    }
}

/// The crash test's session: a third of the files changed, a third
/// deleted, and 100 new files in 5 new directories.
fn crash_session_edits(m: &Mounted) {
    for i in 0..120 {
        let p = m.path(&format!("d{}/f{i}.txt", i % 6));
        match i % 3 {
            0 => fs::write(&p, format!("changed {i}\n")).unwrap(),
            1 => fs::remove_file(&p).unwrap(),
            _ => {}
        }
    }
    for i in 0..100 {
        fs::create_dir_all(m.path(&format!("new{}", i % 5))).unwrap();
        fs::write(
            m.path(&format!("new{}/n{i}.txt", i % 5)),
            format!("new {i}\n"),
        )
        .unwrap();
    }
}

/// The crash test's host and session, unmounted and ready to commit.
fn crash_session() -> (Env, String) {
    let env = Env::new();
    crash_populate(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    crash_session_edits(&m);
    drop(m);
    (env, g)
}

/// Where to interrupt a commit of `g`'s pending set: the first steps one
/// by one, then evenly up to a bound on the steps a commit takes, so the
/// last point is past the commit point whatever the engine's set. The
/// bound (`controller/apply.rs`): at most three steps a patch (a
/// directory removed, the temp, the replacement; an exchange and its
/// check), one a directory made, and three of its own (plan, temps
/// saved, done).
fn fault_points(env: &Env, g: &str) -> Vec<u64> {
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["status", g, "--json"])).unwrap();
    let pending = json[0]["pending"].as_array().unwrap();
    let mut dirs = std::collections::BTreeSet::new();
    for c in pending.iter().filter(|c| c["op"] == "create") {
        let path = c["path"].as_str().unwrap();
        dirs.extend(path.match_indices('/').map(|(i, _)| &path[..i]));
    }
    let bound = 3 * pending.len() as u64 + dirs.len() as u64 + 3;
    let mut points: Vec<u64> = [1, 2, 3, 5, 8].into();
    points.extend((1..=16).map(|k| bound * k / 16));
    points.sort_unstable();
    points.dedup();
    points
}

/// A commit of a few hundred files is killed at many points (a test-only
/// switch makes the process exit, as a crash would); `wopfs recover` must
/// then leave the host exactly as before or exactly as after.
///
/// After each rollback the next trial needs the session as it was. On the
/// fuse engine the same session is committed again over a host reset to
/// the same content (its bases are content hashes). On the kernel engine a
/// host file's base is known only while its ctime is before the upper
/// entry's birth (`overlay/kernel.rs`), and a rollback renames host files
/// back (new ctimes): a retried commit of that session finds those bases
/// unknown and refuses them as conflicts, writing nothing (asserted once
/// below), so each trial there gets a fresh session with the same edits.
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test switches: cargo test --features fault-injection"
)]
fn an_interrupted_commit_recovers_to_before_or_after() {
    let kernel = test_engine() == "kernel";
    let (env, g) = crash_session();
    let pre = content_digest(&env.host);
    let faults = fault_points(&env, &g);
    let reset = |env: &Env| {
        for e in fs::read_dir(&env.host).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
        crash_populate(env);
        assert_eq!(content_digest(&env.host), pre);
    };

    let mut outcomes = Vec::new();
    for &fault in &faults {
        let out = wopfs_command()
            .args([
                "--state-dir",
                env.state.to_str().unwrap(),
                "commit",
                &g,
                "--yes",
            ])
            .env("WOPFS_ENGINE", test_engine())
            .env("WOPFS_TEST_FAULT_AFTER", fault.to_string())
            .output()
            .unwrap();
        let crashed = out.status.code() == Some(86);
        env.ok(&["recover", &g]);
        let after = content_digest(&env.host);
        outcomes.push((fault, crashed, after.clone()));
        if after != pre {
            break; // the commit point was passed: this is the after state
        }
        assert!(
            crashed,
            "fault {fault}: the commit finished without reaching the fault ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !list_tree(&env.host).iter().any(|p| p.contains(".wopfs-")),
            "fault {fault}: scratch files left"
        );
        if kernel {
            // The rollback put the host back as it was, and vouched for
            // the files it moved back (their ctimes are new): the same
            // session is tried again as it is, so every later trial is a
            // retry after a rollback.
            continue;
        }
        reset(&env);
    }
    let (last_fault, _, post) = outcomes.last().unwrap().clone();
    assert_ne!(
        post, pre,
        "no trial got past the commit point (last fault {last_fault} of {faults:?})"
    );
    assert!(
        outcomes.len() >= 6,
        "too few trials before the commit point: {outcomes:?}"
    );
    // The after state is exactly the session's result: a fresh copy of the
    // same changes committed without faults gives the same digest.
    let (env2, g2) = crash_session();
    env2.ok(&["commit", &g2, "--yes"]);
    assert_eq!(
        content_digest(&env2.host),
        post,
        "the recovered host is not the committed state"
    );
    // A commit finished (by recovery, or whole) leaves nothing mounted.
    assert!(!mounted_beneath(&env.state) && !mounted_beneath(&env2.state));
}

/// Whether anything is mounted beneath `dir` (a kernel session's layer).
fn mounted_beneath(dir: &Path) -> bool {
    let beneath = format!("{}/", dir.display());
    fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .any(|mp| mp.starts_with(&beneath))
}

/// An agent's set-user-id bit never reaches the host: a commit run as root
/// would otherwise plant a root-owned setuid file.
#[test]
fn set_id_bits_are_never_committed() {
    let env = Env::new();
    sample(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::write(m.path("tool"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(m.path("tool"), fs::Permissions::from_mode(0o6755)).unwrap();
    fs::set_permissions(m.path("run.sh"), fs::Permissions::from_mode(0o4755)).unwrap();
    drop(m);
    env.ok(&["commit", &g, "--yes"]);
    for f in ["tool", "run.sh"] {
        let mode = fs::metadata(env.host.join(f)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o755, "{f} committed with mode {mode:o}");
    }
}

/// A directory (with a subdirectory) that becomes a file, and a file that
/// becomes a directory, are committed as such.
#[test]
fn type_changes_between_file_and_directory_are_committed() {
    let env = Env::new();
    env.write("olddir/a.txt", "a\n");
    env.write("olddir/inner/b.txt", "b\n");
    env.write("notes", "a file for now\n");
    env.write("keep.txt", "kept\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::remove_dir_all(m.path("olddir")).unwrap();
    fs::write(m.path("olddir"), "a file now\n").unwrap();
    fs::remove_file(m.path("notes")).unwrap();
    fs::create_dir(m.path("notes")).unwrap();
    fs::write(m.path("notes/x.txt"), "a directory now\n").unwrap();
    drop(m);
    env.ok(&["commit", &g, "--yes"]);
    assert_eq!(
        list_tree(&env.host),
        ["keep.txt", "notes", "notes/x.txt", "olddir"]
    );
    assert_eq!(
        fs::read_to_string(env.host.join("olddir")).unwrap(),
        "a file now\n"
    );
    assert_eq!(
        fs::read_to_string(env.host.join("notes/x.txt")).unwrap(),
        "a directory now\n"
    );
    env.ok(&["audit", "--verify"]);
}

/// Every commit `start` in the audit log is closed by exactly one
/// `complete` or `failure` with its id.
fn assert_commits_closed(env: &Env, g: &str) {
    env.ok(&["audit", "--verify"]);
    let recs: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["audit", g, "--json"])).unwrap();
    let commits: Vec<(&str, Option<&str>)> = recs
        .iter()
        .filter(|r| r["operationType"] == "wopfs.patch.commit")
        .map(|r| {
            (
                r["event"].as_str().unwrap(),
                r["details"]["commit"].as_str(),
            )
        })
        .collect();
    for (i, (ev, id)) in commits.iter().enumerate() {
        if *ev == "start" {
            let closes = commits[i + 1..]
                .iter()
                .filter(|(e, c)| (*e == "complete" || *e == "failure") && c == id)
                .count();
            assert_eq!(
                closes, 1,
                "commit {id:?} closed {closes} times: {commits:?}"
            );
        }
    }
}

/// A commit refused while planning (a directory that cannot become a
/// file: it holds a file the grant does not show) is closed in the audit
/// log, and writes nothing.
#[test]
fn a_commit_refused_while_planning_is_closed_in_the_audit_log() {
    let env = Env::new();
    env.write("olddir/a.txt", "a\n");
    env.write("olddir/.env", "SECRET=1\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::remove_dir_all(m.path("olddir")).unwrap();
    fs::write(m.path("olddir"), "a file now\n").unwrap();
    drop(m);
    let before = tree_digest(&env.host);
    let err = env.fails(&["commit", &g, "--yes"]);
    assert!(err.contains("cannot become a file"), "{err}");
    assert_eq!(tree_digest(&env.host), before);
    assert!(!env
        .state
        .join("sessions")
        .join(&g)
        .join("commit.json")
        .exists());
    assert_commits_closed(&env, &g);
}

/// A file that becomes a directory, killed right after the plan is saved
/// (the file not yet moved aside, the directory not made): the recovery
/// leaves the host exactly as before, and the commit then succeeds.
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test switches: cargo test --features fault-injection"
)]
fn a_file_becoming_a_directory_rolls_back_before_it_moved() {
    let env = Env::new();
    env.write("notes", "a file for now\n");
    env.write("keep.txt", "kept\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::remove_file(m.path("notes")).unwrap();
    fs::create_dir(m.path("notes")).unwrap();
    fs::write(m.path("notes/x.txt"), "a directory now\n").unwrap();
    drop(m);
    let before = tree_digest(&env.host);
    let out = wopfs_command()
        .args([
            "--state-dir",
            env.state.to_str().unwrap(),
            "commit",
            &g,
            "--yes",
        ])
        .env("WOPFS_TEST_FAULT_AFTER", "1")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(86),
        "the commit did not stop at the fault"
    );
    env.ok(&["recover", &g]);
    assert_eq!(tree_digest(&env.host), before);
    env.ok(&["commit", &g, "--yes"]);
    assert_eq!(list_tree(&env.host), ["keep.txt", "notes", "notes/x.txt"]);
    assert_commits_closed(&env, &g);
}

/// A commit killed after it marked the session committed, with its
/// journal still there: the next `commit` finishes it (journal removed,
/// audit closed) before refusing the ended session.
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test switches: cargo test --features fault-injection"
)]
fn a_commit_killed_after_setting_the_phase_is_finished_by_the_next_commit() {
    let env = Env::new();
    env.write("a.txt", "old\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::write(m.path("a.txt"), "new\n").unwrap();
    drop(m);
    // One update has six fault points; the sixth is just past the commit
    // point (the journal says done).
    let out = wopfs_command()
        .args([
            "--state-dir",
            env.state.to_str().unwrap(),
            "commit",
            &g,
            "--yes",
        ])
        .env("WOPFS_TEST_FAULT_AFTER", "6")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(86),
        "the commit did not stop at the fault"
    );
    let session = env.state.join("sessions").join(&g);
    let journal: serde_json::Value =
        serde_json::from_slice(&fs::read(session.join("commit.json")).unwrap()).unwrap();
    assert_eq!(journal["phase"], "done");
    // What the finish leaves when killed right after it set the phase.
    fs::write(session.join("session.json"), r#"{"phase":"committed"}"#).unwrap();
    let err = env.fails(&["commit", &g, "--yes"]);
    assert!(err.contains("already been committed"), "{err}");
    assert!(
        !session.join("commit.json").exists(),
        "the journal was left"
    );
    assert_eq!(fs::read_to_string(env.host.join("a.txt")).unwrap(), "new\n");
    assert_commits_closed(&env, &g);
    let recs: Vec<serde_json::Value> =
        serde_json::from_str(&env.ok(&["audit", &g, "--json"])).unwrap();
    assert!(
        recs.iter()
            .any(|r| r["operationType"] == "wopfs.patch.commit" && r["event"] == "complete"),
        "no complete commit in the audit log: {recs:?}"
    );
}
