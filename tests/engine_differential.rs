//! The same scripted session on the kernel engine and on the FUSE engine
//! gives the same patch set and, once committed, the same host tree.

mod common;

use std::fs;
use std::process::Command;

use common::*;

/// A session touching every kind of change: creates, updates, deletes,
/// renames of files and directories (a host directory's rename is EXDEV
/// on the kernel engine, and `mv` copies it), symlinks, hard links, chmod,
/// a file that becomes a directory, a directory that is emptied and made
/// again, and no-op changes (touch, chmod to the same mode) that are no
/// change at all.
const SCRIPT: &str = r#"
set -e
echo created > src/new.txt
mkdir -p src/newdir/deeper && echo deep > src/newdir/deeper/f.txt
echo more >> src/a.txt
printf 'rewritten\n' > src/b.txt
rm src/c.txt
mv src/d.txt src/d-renamed.txt
mv src/tree src/tree-moved
ln -s a.txt src/link-to-a
rm src/old-link && ln -s new.txt src/old-link
ln src/new.txt src/new-hard.txt
chmod 755 src/script.sh
chmod 644 src/same-mode.txt
touch src/touched.txt
rm src/becomes-dir && mkdir src/becomes-dir && echo inner > src/becomes-dir/inner.txt
rm -rf src/remade && mkdir src/remade && echo fresh > src/remade/fresh.txt
rm -rf src/gone
"#;

fn host(e: &Env) {
    for (p, c) in [
        ("src/a.txt", "a\n"),
        ("src/b.txt", "b\n"),
        ("src/c.txt", "c\n"),
        ("src/d.txt", "d\n"),
        ("src/tree/x.txt", "x\n"),
        ("src/tree/sub/y.txt", "y\n"),
        ("src/script.sh", "#!/bin/sh\necho hi\n"),
        ("src/same-mode.txt", "same\n"),
        ("src/touched.txt", "touched\n"),
        ("src/becomes-dir", "file\n"),
        ("src/remade/old.txt", "old\n"),
        ("src/gone/1.txt", "1\n"),
        ("src/gone/2/3.txt", "3\n"),
        ("src/untouched.txt", "u\n"),
    ] {
        e.write(p, c);
    }
    fs::set_permissions(
        e.host.join("src/same-mode.txt"),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    e.link("src/old-link", "a.txt");
}

/// Runs the script in a fresh view on `engine`; returns the exported
/// patch set (without what differs by nature: ids and times) and the host
/// tree after the commit.
fn session(engine: &str) -> (serde_json::Value, Vec<String>, String) {
    let e = Env::new();
    host(&e);
    let g = e.grant(&["--allow", "src/**", "--mode", "read_write_overlay"]);
    let mp = e.mountpoint("mnt");
    {
        let _m = e.mount(&g, &mp, &["--engine", engine]);
        let out = Command::new("sh")
            .arg("-c")
            .arg(SCRIPT)
            .current_dir(&mp)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{engine}: the script failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // `wopfs status` lists what the set holds: no-op copy-ups are no
    // pending change either.
    let status: serde_json::Value = serde_json::from_str(&e.ok(&["status", &g, "--json"])).unwrap();
    let pending: Vec<&str> = status[0]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|p| p["path"].as_str())
        .collect();
    for noop in ["src/touched.txt", "src/same-mode.txt", "src/untouched.txt"] {
        assert!(
            !pending.contains(&noop),
            "{engine}: {noop} pending: {pending:?}"
        );
    }
    assert!(!pending.is_empty(), "{engine}: the script made changes");
    let export = e.dir.path().join("export");
    e.ok(&["export", &g, "--output", export.to_str().unwrap()]);
    let mut set: serde_json::Value =
        serde_json::from_slice(&fs::read(export.join("patchset.json")).unwrap()).unwrap();
    set["grant_id"] = serde_json::Value::Null;
    set["root"] = serde_json::Value::Null;
    set["created_at"] = serde_json::Value::Null;
    for p in set["patches"].as_array_mut().unwrap() {
        p["grant_id"] = serde_json::Value::Null;
    }
    e.ok(&["commit", &g, "--yes"]);
    (set, list_tree(&e.host), contents(&e.host))
}

/// Every path of a tree with its mode and content (or link target), but
/// not its times (the two hosts are committed at different times).
fn contents(root: &std::path::Path) -> String {
    use std::os::unix::fs::MetadataExt;
    let mut out = String::new();
    for rel in list_tree(root) {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        let body = if m.file_type().is_symlink() {
            format!("-> {}", fs::read_link(&p).unwrap().display())
        } else if m.is_file() {
            format!("{:?}", String::from_utf8_lossy(&fs::read(&p).unwrap()))
        } else {
            String::new()
        };
        out += &format!("{rel} {:o} {body}\n", m.mode());
    }
    out
}

#[test]
fn both_engines_make_the_same_patch_set_and_host() {
    if !kernel_engine_here() {
        return;
    }
    let (kset, ktree, kdigest) = session("kernel");
    let (fset, ftree, fdigest) = session("fuse");
    let paths = |s: &serde_json::Value| -> Vec<String> {
        s["patches"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| format!("{} {}", p["operation"], p["path"]))
            .collect()
    };
    assert_eq!(paths(&kset), paths(&fset), "the same changes");
    assert_eq!(kset, fset, "the same patches, field by field");
    assert_eq!(ktree, ftree, "the same host tree after commit");
    assert_eq!(kdigest, fdigest, "the same contents and modes after commit");
    // And the session did what the script says (not two equal failures).
    assert!(
        ktree.iter().any(|p| p == "src/becomes-dir/inner.txt"),
        "{ktree:?}"
    );
    assert!(
        ktree.iter().any(|p| p == "src/tree-moved/sub/y.txt"),
        "{ktree:?}"
    );
    assert!(
        // Directories are not changes: the emptied ones stay on the host.
        !ktree
            .iter()
            .any(|p| p.ends_with(".txt") && p.starts_with("src/gone")),
        "{ktree:?}"
    );
    let untouched = paths(&kset);
    for noop in ["src/touched.txt", "src/same-mode.txt", "src/untouched.txt"] {
        assert!(
            !untouched
                .iter()
                .any(|p| p.ends_with(&format!("\"{noop}\""))),
            "{noop} is no change: {untouched:?}"
        );
    }
}
