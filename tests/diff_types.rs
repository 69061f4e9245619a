//! What `wopfs diff` shows an approver about type changes, symlinks and
//! mode changes, really mounted: an agent plants a symlink to
//! `/etc/shadow`, swaps a granted file for a symlink out of the root,
//! retargets a symlink, chmods a script, turns a file into a directory
//! and a directory into a file. Each must be spelled out in the full
//! diff, in `--stat` (what the approval prompt shows) and in `--json`,
//! never folded into an ordinary `2 +-` edit.

mod common;

use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};

use common::*;

fn host_tree(env: &Env) {
    env.write("README.md", "# payments\n");
    env.write("src/pay.py", "def pay(x):\n    return int(x)\n");
    env.write("src/helper.py", "help = 1\n");
    env.write("src/other.py", "other = 1\n");
    env.link("src/link.py", "helper.py");
    env.link("src/alias.py", "helper.py");
    env.link("docs/up", "../README.md");
    // Not granted (it leads out), but there on the host.
    env.link("ext", "/opt");
    env.write("docs/notes", "notes\n");
    env.write("lib/a.py", "a = 1\n");
    env.write("lib/b.py", "b = 1\n");
    env.write("tools/run.sh", "#!/bin/sh\necho run\n");
    fs::set_permissions(env.host.join("lib"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(
        env.host.join("tools/run.sh"),
        fs::Permissions::from_mode(0o644),
    )
    .unwrap();
}

/// The row of `path` in `wopfs diff --json`.
fn row<'a>(rows: &'a serde_json::Value, path: &str) -> &'a serde_json::Value {
    rows.as_array()
        .unwrap()
        .iter()
        .find(|r| r["path"] == path)
        .unwrap_or_else(|| panic!("no row for {path} in {rows:#}"))
}

/// The `--stat` line of `path` (a label starts the line).
fn stat_line<'a>(stat: &'a str, label: &str) -> &'a str {
    stat.lines()
        .find(|l| {
            l.trim_start()
                .strip_prefix(label)
                .is_some_and(|r| r.trim_start().starts_with('|'))
        })
        .unwrap_or_else(|| panic!("no --stat line for {label}:\n{stat}"))
}

#[test]
fn type_changes_symlinks_and_modes_are_spelled_out() {
    let env = Env::new();
    host_tree(&env);
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    // A new symlink out of the root.
    symlink("/etc/shadow", m.path("src/evil")).unwrap();
    // A granted file replaced by a symlink climbing out (as `ln -sf` does).
    fs::remove_file(m.path("src/pay.py")).unwrap();
    symlink("../../../../etc/passwd", m.path("src/pay.py")).unwrap();
    // Inside the root lexically, but out through the host's `ext`.
    symlink("../ext/secret", m.path("src/cfg")).unwrap();
    // A symlink retargeted (inside the root).
    fs::remove_file(m.path("src/link.py")).unwrap();
    symlink("other.py", m.path("src/link.py")).unwrap();
    // A symlink replaced by a regular file.
    fs::remove_file(m.path("src/alias.py")).unwrap();
    fs::write(m.path("src/alias.py"), "alias = 1\n").unwrap();
    // A symlink moved to where its relative target leaves the root.
    fs::rename(m.path("docs/up"), m.path("up")).unwrap();
    // chmod +x, no content change.
    fs::set_permissions(m.path("tools/run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    // A file that becomes a directory, and a directory that becomes a file.
    fs::remove_file(m.path("docs/notes")).unwrap();
    fs::create_dir(m.path("docs/notes")).unwrap();
    fs::write(m.path("docs/notes/a.md"), "a\n").unwrap();
    fs::remove_dir_all(m.path("lib")).unwrap();
    fs::write(m.path("lib"), "lib = 1\n").unwrap();
    // A new executable, and an ordinary edit.
    fs::write(m.path("tools/new.sh"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(m.path("tools/new.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::write(m.path("src/helper.py"), "help = 2\n").unwrap();
    drop(m);

    let host_before = tree_digest(&env.host);

    // The full diff: git-style headers, targets as `→ target`, never as content.
    let diff = env.ok(&["diff", &g]);
    for want in [
        "diff --wopfs a/src/evil b/src/evil\nnew file mode 120000\n\
         symlink → /etc/shadow (points outside the root)\n",
        "diff --wopfs a/src/pay.py b/src/pay.py\ntype change: file → symlink\n\
         old mode 100644\nnew mode 120000\n\
         symlink → ../../../../etc/passwd (points outside the root)\n\
         --- a/src/pay.py\n+++ /dev/null\n",
        "diff --wopfs a/src/link.py b/src/link.py\nold symlink → helper.py\nsymlink → other.py\n",
        "diff --wopfs a/src/alias.py b/src/alias.py\ntype change: symlink → file\n\
         old mode 120000\nnew mode 100644\nold symlink → helper.py\n\
         --- /dev/null\n+++ b/src/alias.py\n",
        "diff --wopfs a/tools/run.sh b/tools/run.sh\nold mode 100644\nnew mode 100755\n",
        "diff --wopfs a/docs/notes b/docs/notes\ntype change: file → directory\n\
         deleted file mode 100644\n",
        "diff --wopfs a/lib b/lib\ntype change: directory → file\nold mode 040755\nnew mode 100644\n",
        "rename from docs/up\nrename to up\nold symlink → ../README.md\n\
         symlink → ../README.md (points outside the root)",
        "diff --wopfs a/tools/new.sh b/tools/new.sh\nnew file mode 100755\n",
        "-help = 1\n+help = 2",
    ] {
        assert!(diff.contains(want), "{want:?} not in the diff:\n{diff}");
    }
    assert!(
        !diff.contains("+../../../../etc/passwd") && !diff.contains("+/etc/shadow"),
        "a symlink target is not shown as content:\n{diff}"
    );
    assert!(
        !diff.contains(
            "diff --wopfs a/tools/run.sh b/tools/run.sh\nold mode 100644\nnew mode 100755\n---"
        ),
        "a mode-only change has no content diff:\n{diff}"
    );

    // --stat, what the approval prompt shows: one explicit line per path.
    let stat = env.ok(&["diff", &g, "--stat"]);
    for (label, what) in [
        (
            "src/evil (new)",
            "| symlink → /etc/shadow (points outside the root)",
        ),
        (
            "src/pay.py",
            "| file → symlink → ../../../../etc/passwd (points outside the root); 2 --",
        ),
        ("src/link.py", "| symlink → other.py (was → helper.py)"),
        ("src/alias.py", "| symlink → file (was → helper.py); 1 +"),
        ("tools/run.sh", "| mode 100644 → 100755"),
        ("tools/new.sh (new)", "| new file mode 100755; 1 +"),
        ("docs/notes", "| file → directory; 1 -"),
        ("lib", "| directory → file; 1 +"),
        (
            "src/cfg (new)",
            "| symlink → ../ext/secret (points outside the root through ext)",
        ),
        (
            "docs/up => up",
            "| symlink → ../README.md (points outside the root)",
        ),
        ("src/helper.py", "|    2 +-"),
    ] {
        let line = stat_line(&stat, label);
        assert!(line.ends_with(what), "{label}: {line:?}, want {what:?}");
    }
    assert!(
        stat.ends_with(
            "14 files changed, 5 insertions(+), 6 deletions(-)\n \
             4 type changes, 5 symlinks (4 pointing outside the root), 1 mode change, 1 new executable"
        ),
        "{stat}"
    );

    // --json: kinds, modes and targets per path.
    let rows: serde_json::Value = serde_json::from_str(&env.ok(&["diff", &g, "--json"])).unwrap();
    let evil = row(&rows, "src/evil");
    assert_eq!(evil["operation"], "create");
    assert_eq!(evil["old_kind"], serde_json::Value::Null);
    assert_eq!(evil["new_kind"], "symlink");
    assert_eq!(evil["new_mode"], "120000");
    assert_eq!(evil["symlink_target"], "/etc/shadow");
    assert_eq!(evil["target_outside_root"], true);
    let pay = row(&rows, "src/pay.py");
    assert_eq!(
        (&pay["old_kind"], &pay["new_kind"], &pay["type_change"]),
        (&"file".into(), &"symlink".into(), &true.into())
    );
    assert_eq!(
        (&pay["old_mode"], &pay["new_mode"]),
        (&"100644".into(), &"120000".into())
    );
    assert_eq!(pay["symlink_target"], "../../../../etc/passwd");
    assert_eq!(pay["target_outside_root"], true);
    let link = row(&rows, "src/link.py");
    assert_eq!(link["type_change"], false);
    assert_eq!(link["old_symlink_target"], "helper.py");
    assert_eq!(link["symlink_target"], "other.py");
    assert_eq!(link["target_outside_root"], false);
    let run = row(&rows, "tools/run.sh");
    assert_eq!((&run["added"], &run["removed"]), (&0.into(), &0.into()));
    assert_eq!(
        (&run["old_mode"], &run["new_mode"], &run["mode_change"]),
        (&"100644".into(), &"100755".into(), &true.into())
    );
    let notes = row(&rows, "docs/notes");
    assert_eq!(notes["operation"], "delete");
    assert_eq!(
        (&notes["old_kind"], &notes["new_kind"]),
        (&"file".into(), &"directory".into())
    );
    let lib = row(&rows, "lib");
    assert_eq!(lib["operation"], "create");
    assert_eq!(
        (&lib["old_kind"], &lib["new_kind"]),
        (&"directory".into(), &"file".into())
    );
    let cfg = row(&rows, "src/cfg");
    assert_eq!(cfg["target_outside_root"], true);
    assert_eq!(cfg["outside_via"], "ext");
    let up = row(&rows, "up");
    assert_eq!(up["renamed_from"], "docs/up");
    assert_eq!(up["target_outside_root"], true);
    let helper = row(&rows, "src/helper.py");
    assert_eq!(helper["type_change"], false);
    assert_eq!(helper["mode_change"], false);
    assert_eq!(helper["markers"], serde_json::json!([]));
    assert_eq!(tree_digest(&env.host), host_before, "diff writes nothing");
}

/// The smallest hostile session: one planted link. The summary line
/// alone already says so.
#[test]
fn a_lone_planted_symlink_is_counted() {
    let env = Env::new();
    env.write("src/pay.py", "pay = 1\n");
    let g = env.grant(&["--mode", "read_write_overlay", "--write-prefix", "src"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    symlink("/etc/shadow", m.path("src/evil")).unwrap();
    drop(m);
    let stat = env.ok(&["diff", &g, "--stat"]);
    assert_eq!(
        stat,
        "src/evil (new) | symlink → /etc/shadow (points outside the root)\n \
         1 file changed, 0 insertions(+), 0 deletions(-)\n \
         0 type changes, 1 symlink (1 pointing outside the root), 0 mode changes"
    );
}
