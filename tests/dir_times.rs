//! Times in a mounted overlay view behave as on the machine's own
//! filesystem: each change runs once in the view and once in a plain temp
//! directory, and the same times must change (not to the same values).
//! Entries come from the host (never copied up by the view) or are made in
//! the view; their times are first set far in the past, so a changed mtime
//! never depends on the clock's resolution. Each stat before a change also
//! fills the kernel's attribute cache, so a stat after it checks that the
//! kernel asks again.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use common::*;
use rustix::fs::{AtFlags, FileType, Mode, RenameFlags, Timespec, Timestamps, CWD};

/// Every case runs in its own directory holding these (`a/sub` too).
const FILES: [&str; 3] = ["a/x", "a/sub/y", "b/z"];
/// What gets its times set to the past before a case.
const ENTRIES: [&str; 5] = ["a", "b", "a/x", "a/sub", "b/z"];
const PAST: i64 = 1_000_000_000;

type Op = fn(&Path) -> io::Result<()>;

struct Case {
    name: &'static str,
    op: Op,
    /// Watched entries: (path before, path after), in the case directory.
    watch: &'static [(&'static str, &'static str)],
}

const DIRS: &[(&str, &str)] = &[("a", "a"), ("b", "b")];

fn cases() -> Vec<Case> {
    vec![
        // Namespace changes: their directories, and what they move.
        Case {
            name: "create",
            op: |d| File::create(d.join("a/n")).map(drop),
            watch: DIRS,
        },
        Case {
            name: "create-existing",
            op: |d| {
                OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(d.join("a/x"))
                    .map(drop)
            },
            watch: &[("a", "a"), ("a/x", "a/x")],
        },
        Case {
            name: "mknod",
            op: |d| {
                let mode = Mode::from_raw_mode(0o644);
                Ok(rustix::fs::mknodat(
                    CWD,
                    d.join("a/n"),
                    FileType::RegularFile,
                    mode,
                    0,
                )?)
            },
            watch: DIRS,
        },
        Case {
            name: "mkdir",
            op: |d| fs::create_dir(d.join("a/n")),
            watch: DIRS,
        },
        Case {
            name: "symlink",
            op: |d| symlink("x", d.join("a/n")),
            watch: DIRS,
        },
        Case {
            name: "unlink",
            op: |d| fs::remove_file(d.join("a/x")),
            watch: DIRS,
        },
        Case {
            name: "link",
            op: |d| fs::hard_link(d.join("a/x"), d.join("b/l")),
            watch: &[("a", "a"), ("b", "b"), ("a/x", "a/x")],
        },
        Case {
            name: "rmdir",
            op: |d| {
                fs::remove_file(d.join("a/sub/y"))?;
                fs::remove_dir(d.join("a/sub"))
            },
            watch: DIRS,
        },
        Case {
            name: "rename-within",
            op: |d| fs::rename(d.join("a/x"), d.join("a/x2")),
            watch: &[("a", "a"), ("b", "b"), ("a/x", "a/x2")],
        },
        Case {
            name: "rename-across",
            op: |d| fs::rename(d.join("a/x"), d.join("b/x")),
            watch: &[("a", "a"), ("b", "b"), ("a/x", "b/x")],
        },
        Case {
            name: "rename-dir",
            op: |d| fs::rename(d.join("a/sub"), d.join("b/sub")),
            watch: &[("a", "a"), ("b", "b"), ("a/sub", "b/sub")],
        },
        Case {
            name: "rename-over",
            op: |d| fs::rename(d.join("a/x"), d.join("b/z")),
            watch: &[("a", "a"), ("b", "b"), ("a/x", "b/z")],
        },
        Case {
            name: "exchange",
            op: |d| {
                let (a, b) = (d.join("a/x"), d.join("b/z"));
                Ok(rustix::fs::renameat_with(
                    CWD,
                    a,
                    CWD,
                    b,
                    RenameFlags::EXCHANGE,
                )?)
            },
            watch: &[("a", "a"), ("b", "b"), ("a/x", "b/z"), ("b/z", "a/x")],
        },
        // Changes that change nothing, or are refused.
        Case {
            name: "rename-to-itself",
            op: |d| fs::rename(d.join("a/x"), d.join("a/x")),
            watch: &[("a", "a"), ("a/x", "a/x")],
        },
        Case {
            name: "refused",
            op: |d| {
                let refused = [
                    fs::create_dir(d.join("a/x")),
                    fs::remove_dir(d.join("a/sub")),
                    fs::remove_file(d.join("a/missing")),
                    fs::rename(d.join("a/x"), d.join("a/sub")),
                ];
                match refused.into_iter().find(|r| r.is_ok()) {
                    Some(_) => Err(io::Error::other("a refused change succeeded")),
                    None => Ok(()),
                }
            },
            watch: &[("a", "a"), ("a/x", "a/x"), ("a/sub", "a/sub")],
        },
        // Attribute changes.
        Case {
            name: "chmod",
            op: |d| fs::set_permissions(d.join("a/x"), fs::Permissions::from_mode(0o600)),
            watch: &[("a", "a"), ("a/x", "a/x")],
        },
        Case {
            name: "chmod-dir",
            op: |d| fs::set_permissions(d.join("a"), fs::Permissions::from_mode(0o700)),
            watch: DIRS,
        },
        Case {
            name: "chown-nothing",
            op: |d| std::os::unix::fs::chown(d.join("a/x"), None, None),
            watch: &[("a/x", "a/x")],
        },
        Case {
            name: "chown-dir-nothing",
            op: |d| std::os::unix::fs::chown(d.join("a"), None, None),
            watch: DIRS,
        },
        Case {
            name: "chown-same",
            op: |d| {
                let m = fs::metadata(d.join("a/x"))?;
                std::os::unix::fs::chown(d.join("a/x"), Some(m.uid()), Some(m.gid()))
            },
            watch: &[("a/x", "a/x")],
        },
        Case {
            name: "utimes",
            op: |d| set_times(&d.join("a/x"), PAST + 1000),
            watch: &[("a", "a"), ("a/x", "a/x")],
        },
        Case {
            name: "utimes-dir",
            op: |d| set_times(&d.join("a"), PAST + 1000),
            watch: DIRS,
        },
        Case {
            name: "truncate",
            op: |d| File::options().write(true).open(d.join("a/x"))?.set_len(2),
            watch: &[("a", "a"), ("a/x", "a/x")],
        },
        Case {
            name: "truncate-same-size",
            op: |d| {
                let f = File::options().write(true).open(d.join("a/x"))?;
                f.set_len(f.metadata()?.len())
            },
            watch: &[("a/x", "a/x")],
        },
        Case {
            name: "open-trunc",
            op: |d| File::create(d.join("a/x")).map(drop),
            watch: &[("a", "a"), ("a/x", "a/x")],
        },
        Case {
            name: "write",
            op: |d| {
                OpenOptions::new()
                    .append(true)
                    .open(d.join("a/x"))?
                    .write_all(b"more")
            },
            watch: &[("a", "a"), ("a/x", "a/x")],
        },
        Case {
            name: "write-nothing",
            op: |d| {
                OpenOptions::new()
                    .append(true)
                    .open(d.join("a/x"))?
                    .write_all(b"")
            },
            watch: &[("a/x", "a/x")],
        },
    ]
}

/// Cases that change nothing on the machine's filesystem but open a file
/// for writing, which copies a host file up in the view and so gives it a
/// new ctime: they run on entries made in the view only (README, "Times").
const MADE_ONLY: &[&str] = &["create-existing", "write-nothing"];

fn set_times(path: &Path, secs: i64) -> io::Result<()> {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    Ok(rustix::fs::utimensat(
        CWD,
        path,
        &ts,
        AtFlags::SYMLINK_NOFOLLOW,
    )?)
}

/// Makes a case directory's entries under `dir`.
fn make_case(dir: &Path) {
    for f in FILES {
        let p = dir.join(f);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, "data\n").unwrap();
    }
}

fn set_case_times(dir: &Path) {
    for e in ENTRIES {
        set_times(&dir.join(e), PAST).unwrap();
    }
}

/// (mtime, its ns, ctime, its ns) of `path`, not following a symlink.
fn times(path: &Path) -> (i64, i64, i64, i64) {
    let m = fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    (m.mtime(), m.mtime_nsec(), m.ctime(), m.ctime_nsec())
}

/// Runs `case` in `dir` and answers, for each watched entry, which of its
/// mtime and ctime changed ("mc", "m-", "-c" or "--"), and the op's errno.
fn run(case: &Case, dir: &Path) -> (Vec<String>, Option<i32>) {
    let before: Vec<_> = case
        .watch
        .iter()
        .map(|(b, _)| times(&dir.join(b)))
        .collect();
    let result = (case.op)(dir).err().map(|e| e.raw_os_error().unwrap_or(-1));
    let changed = case
        .watch
        .iter()
        .zip(before)
        .map(|((_, after), b)| {
            let a = times(&dir.join(after));
            let m = if (a.0, a.1) != (b.0, b.1) { 'm' } else { '-' };
            let c = if (a.2, a.3) != (b.2, b.3) { 'c' } else { '-' };
            format!("{after}:{m}{c}")
        })
        .collect();
    (changed, result)
}

#[test]
fn times_change_as_on_the_machines_filesystem() {
    let env = Env::new();
    let all = cases();
    let on_host = |c: &Case| !MADE_ONLY.contains(&c.name);
    // Host entries: in the host tree, times set before the mount.
    for c in all.iter().filter(|c| on_host(c)) {
        make_case(&env.host.join("h").join(c.name));
    }
    let g = env.grant(&["--mode", "read_write_overlay"]);
    for c in all.iter().filter(|c| on_host(c)) {
        set_case_times(&env.host.join("h").join(c.name));
    }
    let reference = env.dir.path().join("reference");
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    let mut failures = Vec::new();
    for c in &all {
        // Made in the view: times set through the mount.
        let made = m.path("m").join(c.name);
        make_case(&made);
        set_case_times(&made);
        let refdir = reference.join(c.name);
        make_case(&refdir);
        set_case_times(&refdir);
        let want = run(c, &refdir);
        let mut got = vec![("made", run(c, &made))];
        if on_host(c) {
            got.push(("host", run(c, &m.path("h").join(c.name))));
        }
        for (origin, got) in got {
            if got != want {
                failures.push(format!(
                    "{} on {origin} entries: view {got:?}, machine {want:?}",
                    c.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The new mtime of a host directory lasts past a clean remount (a
/// listing that differs from the host's must not show the host's old
/// mtime), and a directory whose times changed is no change of the
/// session: only the file is pending.
#[test]
fn a_host_directorys_new_mtime_survives_a_remount_and_is_not_pending() {
    let env = Env::new();
    env.write("src/lib.rs", "fn main() {}\n");
    set_times(&env.host.join("src"), PAST).unwrap();
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    fs::write(m.path("src/new.rs"), "\n").unwrap();
    let mtime = times(&m.path("src"));
    assert!(mtime.0 > PAST, "creating a file left src's mtime");
    drop(m);

    let m = env.mount(&g, &mp, &[]);
    let after = times(&m.path("src"));
    assert_eq!(
        (after.0, after.1),
        (mtime.0, mtime.1),
        "src's mtime after a remount"
    );
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    let pending: Vec<&str> = status[0]["pending"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["path"].as_str().unwrap())
        .collect();
    assert_eq!(pending, vec!["src/new.rs"]);
    drop(m);
}
