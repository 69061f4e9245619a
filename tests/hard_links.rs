//! Hard links in writable views, really mounted: `link(2)` as on ext4
//! (one inode under every name, unlink and rename of one name, EPERM for a
//! directory), `ln`, `cp -a` and `rsync -aH` into the view, links across
//! remounts and `kill -9`, and through patch sets to the host: a commit
//! makes one inode, partial commits take every name, an interrupted commit
//! recovers, and hostile sets given with `--from` are refused by name.

mod common;

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn overlay_env(extra: &[&str]) -> (Env, String) {
    let env = Env::new();
    env.write("src/a.txt", "alpha\n");
    env.write("src/b.txt", "beta\n");
    env.write("docs/guide.md", "guide\n");
    env.write(".env", "SECRET=1\n");
    let mut args = vec!["--mode", "read_write_overlay"];
    args.extend_from_slice(extra);
    let g = env.grant(&args);
    (env, g)
}

/// `(st_ino, st_nlink)` of a path.
fn inode(p: &Path) -> (u64, u64) {
    let m = fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    (m.ino(), m.nlink())
}

fn same_file(a: &Path, b: &Path, nlink: u64) {
    let (ia, na) = inode(a);
    let (ib, nb) = inode(b);
    assert_eq!(
        (ia, na, nb),
        (ib, nlink, nlink),
        "{} and {} are not one file with {nlink} names",
        a.display(),
        b.display()
    );
}

fn run(dir: &Path, cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn link_behaves_as_on_ext4() {
    let (env, g) = overlay_env(&[]);
    let before = tree_digest(&env.host);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    let p = |rel: &str| m.path(rel);

    run(&m.mp, &["ln", "src/a.txt", "src/a2.txt"]);
    same_file(&p("src/a.txt"), &p("src/a2.txt"), 2);
    // Writes through one name are read through the other, while open.
    let mut reader = fs::File::open(p("src/a2.txt")).unwrap();
    let writer = OpenOptions::new().write(true).open(p("src/a.txt")).unwrap();
    writer.write_at(b"ALPHA", 0).unwrap();
    let mut got = String::new();
    reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, "ALPHA\n");
    assert_eq!(fs::read_to_string(p("src/a2.txt")).unwrap(), "ALPHA\n");

    // Unlink one name: the other and the open descriptors go on.
    fs::remove_file(p("src/a.txt")).unwrap();
    assert_eq!(errno(fs::metadata(p("src/a.txt"))), libc::ENOENT);
    assert_eq!(inode(&p("src/a2.txt")).1, 1);
    writer.write_at(b"a", 0).unwrap();
    reader.seek(SeekFrom::Start(0)).unwrap();
    got.clear();
    reader.read_to_string(&mut got).unwrap();
    assert_eq!(got, "aLPHA\n");
    assert_eq!(fs::read_to_string(p("src/a2.txt")).unwrap(), "aLPHA\n");
    drop((reader, writer));

    // Rename of one name onto another of the same file changes nothing.
    fs::hard_link(p("src/a2.txt"), p("src/a3.txt")).unwrap();
    fs::rename(p("src/a2.txt"), p("src/a3.txt")).unwrap();
    same_file(&p("src/a2.txt"), &p("src/a3.txt"), 2);
    // Rename of another file over a link: the linked file loses that name.
    fs::rename(p("src/b.txt"), p("src/a3.txt")).unwrap();
    assert_eq!(fs::read_to_string(p("src/a3.txt")).unwrap(), "beta\n");
    assert_eq!(inode(&p("src/a2.txt")).1, 1);

    // Errors: an existing name, a directory, a name outside the grant.
    assert_eq!(
        errno(fs::hard_link(p("src/a2.txt"), p("src/a3.txt"))),
        libc::EEXIST
    );
    assert_eq!(errno(fs::hard_link(p("src"), p("src2"))), libc::EPERM);
    assert_eq!(
        errno(fs::hard_link(p("src/a2.txt"), p(".env"))),
        libc::EACCES,
        "a denied name is not made"
    );
    assert_eq!(errno(fs::metadata(p(".env"))), libc::ENOENT);
    // A link made across directories, and to a file made in the view.
    fs::write(p("docs/new.md"), "new\n").unwrap();
    fs::hard_link(p("docs/new.md"), p("src/new.md")).unwrap();
    fs::hard_link(p("src/a2.txt"), p("docs/a.txt")).unwrap();
    same_file(&p("docs/new.md"), &p("src/new.md"), 2);
    same_file(&p("src/a2.txt"), &p("docs/a.txt"), 2);
    drop(m);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");

    // A remount replays the links: one inode under both names.
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    same_file(&m.path("docs/new.md"), &m.path("src/new.md"), 2);
    same_file(&m.path("src/a2.txt"), &m.path("docs/a.txt"), 2);
    fs::write(m.path("src/new.md"), "changed\n").unwrap();
    assert_eq!(
        fs::read_to_string(m.path("docs/new.md")).unwrap(),
        "changed\n"
    );
    // And a kill -9 loses none of the links that were answered.
    fs::hard_link(m.path("docs/guide.md"), m.path("docs/guide2.md")).unwrap();
    fs::remove_file(m.path("src/a2.txt")).unwrap();
    let pid = m.pid.expect("daemon pid");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until("the daemon to exit", Duration::from_secs(10), || {
        !pid_running(pid)
    });
    env.ok(&["umount", m.mp.to_str().unwrap()]);
    drop(m);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    same_file(&m.path("docs/guide.md"), &m.path("docs/guide2.md"), 2);
    assert_eq!(inode(&m.path("docs/a.txt")).1, 1);
    assert_eq!(errno(fs::metadata(m.path("src/a2.txt"))), libc::ENOENT);
    assert_eq!(
        fs::read_to_string(m.path("docs/new.md")).unwrap(),
        "changed\n"
    );
    drop(m);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
}

/// A tree with hard links outside the view, copied in by `cp -a` and
/// `rsync -aH`: the copies keep their links, and a commit carries them to
/// the host.
#[test]
fn cp_a_and_rsync_ah_keep_links_through_the_commit() {
    let (env, g) = overlay_env(&[]);
    let outside = env.dir.path().join("outside/tree");
    fs::create_dir_all(outside.join("sub")).unwrap();
    fs::write(outside.join("f"), "linked\n").unwrap();
    fs::hard_link(outside.join("f"), outside.join("sub/g")).unwrap();
    fs::write(outside.join("alone"), "alone\n").unwrap();
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    let tree = outside.to_str().unwrap();
    run(&m.mp, &["cp", "-a", tree, "copy"]);
    same_file(&m.path("copy/f"), &m.path("copy/sub/g"), 2);
    assert_eq!(inode(&m.path("copy/alone")).1, 1);
    let rsync = Command::new("rsync").arg("--version").output().is_ok();
    if rsync {
        run(&m.mp, &["rsync", "-aH", &format!("{tree}/"), "synced/"]);
        same_file(&m.path("synced/f"), &m.path("synced/sub/g"), 2);
    } else {
        say("rsync is not installed: rsync -aH not checked (.ci/run installs it)");
    }
    drop(m);

    env.ok(&["commit", &g, "--yes"]);
    same_file(&env.host.join("copy/f"), &env.host.join("copy/sub/g"), 2);
    assert_eq!(
        fs::read_to_string(env.host.join("copy/sub/g")).unwrap(),
        "linked\n"
    );
    if rsync {
        same_file(
            &env.host.join("synced/f"),
            &env.host.join("synced/sub/g"),
            2,
        );
    }
}

fn schema() -> jsonschema::Validator {
    let text = fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schema/patchset.schema.json"
    ))
    .unwrap();
    jsonschema::validator_for(&serde_json::from_str(&text).unwrap()).unwrap()
}

/// The session of the commit tests: a host file linked under a new name
/// and edited through it, a new file with a second name.
fn linked_session(env: &Env, g: &str) {
    let m = env.mount(g, &env.mountpoint("mnt"), &[]);
    fs::hard_link(m.path("src/a.txt"), m.path("docs/a-link.txt")).unwrap();
    let mut f = OpenOptions::new()
        .append(true)
        .open(m.path("docs/a-link.txt"))
        .unwrap();
    f.write_all(b"more\n").unwrap();
    drop(f);
    fs::write(m.path("src/new.txt"), "new\n").unwrap();
    fs::hard_link(m.path("src/new.txt"), m.path("src/z-new.txt")).unwrap();
    drop(m);
}

#[test]
fn a_commit_makes_one_inode_of_every_linked_file() {
    let (env, g) = overlay_env(&[]);
    linked_session(&env, &g);

    let diff = env.ok(&["diff", &g]);
    // An update that becomes a link shows what it changes.
    assert!(
        diff.contains("hard link to docs/a-link.txt\n--- a/src/a.txt\n+++ b/src/a.txt\n@@ -1 +1,2 @@\n alpha\n+more"),
        "{diff}"
    );
    assert!(diff.contains("hard link to src/new.txt"), "{diff}");
    let stat = env.ok(&["diff", &g, "--stat"]);
    assert!(stat.contains("2 hard links"), "{stat}");
    let out = env.dir.path().join("export");
    env.ok(&["export", &g, "-o", out.to_str().unwrap()]);
    let set: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("patchset.json")).unwrap()).unwrap();
    let errors: Vec<String> = schema().iter_errors(&set).map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "schema: {errors:?}");
    let links: Vec<(&str, &str)> = set["patches"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| Some((p["path"].as_str()?, p["link"].as_str()?)))
        .collect();
    assert_eq!(
        links,
        [
            ("src/a.txt", "docs/a-link.txt"),
            ("src/z-new.txt", "src/new.txt")
        ],
        "each link names its file's first path"
    );

    // A partial commit takes every name of a file or none.
    let e = env.fails(&["commit", &g, "--yes", "--path", "src"]);
    assert!(
        e.contains("src/a.txt is a hard link to docs/a-link.txt")
            && e.contains("--path docs/a-link.txt"),
        "{e}"
    );
    env.ok(&[
        "commit",
        &g,
        "--yes",
        "--path",
        "src/new.txt",
        "--path",
        "src/z-new.txt",
    ]);
    same_file(
        &env.host.join("src/new.txt"),
        &env.host.join("src/z-new.txt"),
        2,
    );

    env.ok(&["commit", &g, "--yes"]);
    same_file(
        &env.host.join("src/a.txt"),
        &env.host.join("docs/a-link.txt"),
        2,
    );
    assert_eq!(
        fs::read_to_string(env.host.join("src/a.txt")).unwrap(),
        "alpha\nmore\n"
    );
    assert!(!list_tree(&env.host).iter().any(|p| p.contains(".wopfs-")));
}

/// Paths, kinds, modes, contents, and each file's inode and link count:
/// what a commit of links changes. (Directory times are left out.)
fn files_digest(root: &Path) -> String {
    let mut h = blake3::Hasher::new();
    for rel in list_tree(root) {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        h.update(rel.as_bytes());
        h.update(&m.mode().to_le_bytes());
        if m.is_file() {
            h.update(&m.ino().to_le_bytes());
            h.update(&m.nlink().to_le_bytes());
            h.update(&fs::read(&p).unwrap());
        }
    }
    h.finalize().to_hex().to_string()
}

/// A commit stopped at any step (fault injection) recovers to exactly
/// before (no link, no new name) or exactly after (one inode).
#[test]
#[cfg_attr(
    not(feature = "fault-injection"),
    ignore = "needs the test switches: cargo test --features fault-injection"
)]
fn an_interrupted_commit_of_links_recovers_to_before_or_after() {
    let (env, g) = overlay_env(&[]);
    linked_session(&env, &g);
    let a = env.host.join("src/a.txt");
    let before = files_digest(&env.host);
    let mut passed = false;
    for fault in 1..60 {
        let out = wopfs_command()
            .args([
                "--state-dir",
                env.state.to_str().unwrap(),
                "commit",
                &g,
                "--yes",
            ])
            .env("WOPFS_TEST_FAULT_AFTER", fault.to_string())
            .output()
            .unwrap();
        env.ok(&["recover", &g]);
        if out.status.code() != Some(86) || env.host.join("docs/a-link.txt").exists() {
            passed = true;
            break;
        }
        assert_eq!(
            files_digest(&env.host),
            before,
            "fault {fault}: not rolled back exactly"
        );
    }
    assert!(passed, "no trial got past the commit point");
    same_file(&a, &env.host.join("docs/a-link.txt"), 2);
    same_file(
        &env.host.join("src/new.txt"),
        &env.host.join("src/z-new.txt"),
        2,
    );
    assert!(!list_tree(&env.host).iter().any(|p| p.contains(".wopfs-")));
}

/// Sets from a hostile agent (`--from`): every bad link is refused with
/// its path named, before anything is written.
#[test]
fn bad_links_in_sets_from_elsewhere_are_refused_by_name() {
    let (env, g) = overlay_env(&["--write-prefix", "src"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::write(m.path("src/n.txt"), "n\n").unwrap();
    fs::hard_link(m.path("src/n.txt"), m.path("src/n2.txt")).unwrap();
    drop(m);
    let out = env.dir.path().join("export");
    env.ok(&["export", &g, "-o", out.to_str().unwrap()]);
    let good: serde_json::Value =
        serde_json::from_slice(&fs::read(out.join("patchset.json")).unwrap()).unwrap();
    let before = tree_digest(&env.host);

    type Edit = Box<dyn Fn(&mut Vec<serde_json::Value>)>;
    let cases: Vec<(&str, Edit, &[&str])> = vec![
        (
            "a path not in the set",
            Box::new(|ps| ps[1]["link"] = "src/missing.txt".into()),
            &["src/n2.txt", "src/missing.txt is not in this set"],
        ),
        (
            "itself",
            Box::new(|ps| ps[1]["link"] = "src/n2.txt".into()),
            &["src/n2.txt", "itself"],
        ),
        (
            "a cycle",
            Box::new(|ps| {
                ps[0]["link"] = "src/n2.txt".into();
                ps[0].as_object_mut().unwrap().remove("content");
            }),
            &["itself a hard link"],
        ),
        (
            "a directory",
            Box::new(|ps| ps[1]["link"] = "src".into()),
            &["src/n2.txt", "src is a directory"],
        ),
        (
            "a symlink",
            Box::new(|ps| {
                ps[0]["mode"] = (libc::S_IFLNK | 0o777).into();
                ps[1]["mode"] = (libc::S_IFLNK | 0o777).into();
            }),
            &["src/n2.txt", "src/n.txt is a symlink"],
        ),
        (
            "out of the write scope",
            Box::new(|ps| ps[1]["path"] = "docs/n2.txt".into()),
            &["docs/n2.txt", "outside grant"],
        ),
        (
            "other content",
            Box::new(|ps| ps[1]["size"] = 1.into()),
            &["src/n2.txt", "blob, mode and size"],
        ),
    ];
    for (what, edit, words) in cases {
        let mut set = good.clone();
        let mut patches = set["patches"].as_array().unwrap().clone();
        assert_eq!(patches.len(), 2, "{patches:?}");
        edit(&mut patches);
        set["patches"] = patches.into();
        let dir = env.dir.path().join("bad");
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("patchset.json"), serde_json::to_vec(&set).unwrap()).unwrap();
        let e = env.fails(&["commit", &g, "--yes", "--from", dir.to_str().unwrap()]);
        for w in words {
            assert!(e.contains(w), "{what}: {w:?} not in: {e}");
        }
        assert_eq!(tree_digest(&env.host), before, "{what}: the host changed");
    }
    // The set as exported commits.
    env.ok(&["commit", &g, "--yes", "--from", out.to_str().unwrap()]);
    same_file(&env.host.join("src/n.txt"), &env.host.join("src/n2.txt"), 2);
}

/// A set applied where the host already has part of it: a link whose file
/// is already as the set wants it links to that file; a link is skipped
/// only when the host path is already that file, and the same bytes in a
/// separate file are a conflict, not a link.
#[test]
fn links_to_files_already_on_the_host() {
    let (env, g) = overlay_env(&[]);
    linked_session(&env, &g);
    let out = env.dir.path().join("export");
    env.ok(&["export", &g, "-o", out.to_str().unwrap()]);
    let from = ["commit", &g, "--yes", "--from", out.to_str().unwrap()];
    let (file, link) = (env.host.join("docs/a-link.txt"), env.host.join("src/a.txt"));
    // Someone made the file on the host already: the link is made to it.
    env.write("docs/a-link.txt", "alpha\nmore\n");
    let host_file = inode(&file).0;
    let done = env.ok(&from);
    assert!(done.contains("skip docs/a-link.txt"), "{done}");
    assert!(done.contains("update src/a.txt"), "{done}");
    same_file(&file, &link, 2);
    assert_eq!(inode(&link).0, host_file);
    // Applied again: nothing left to do.
    let again = env.ok(&from);
    assert!(again.contains("skip src/a.txt"), "{again}");
    // The same bytes in a separate file are not the link.
    fs::remove_file(&link).unwrap();
    fs::write(&link, "alpha\nmore\n").unwrap();
    let e = env.fails(&from);
    assert!(
        e.contains("src/a.txt") && e.contains("not as the hard link to docs/a-link.txt"),
        "{e}"
    );
    assert_eq!(inode(&file).1, 1, "nothing was written");
}
