//! Directory and change times of an overlay view (`times.rs`), driven
//! without a mount: which times each change advances, on host entries the
//! view never copies up and on overlay objects, and what a remount keeps.
//! Times are first set far in the past, so "advanced" never depends on
//! the clock's resolution for mtimes; a ctime only moves forward.

use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use rustix::fs::{AtFlags, Timespec, Timestamps, CWD};

use super::tests::{found, no_backing};
use super::write_tests::{fixture_with, ino, name, open_view, Fx, ROOTUSER};
use super::*;

const PAST_SECS: u64 = 1_000_000_000;

fn past() -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(PAST_SECS)
}

/// One namespace change inside a case directory holding `a/x`, `a/sub/y`
/// and `b/z`.
struct Case {
    name: &'static str,
    op: fn(&View, Ino, Ino),
    /// Whether directory `a`, and `b`, change (both times) or not (neither).
    dirs: (bool, bool),
    /// What the change moves, unlinks or replaces: only its ctime changes.
    moved: &'static [&'static str],
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "create",
            op: |v, a, _| {
                let (_, o) = v.create(a, name("n"), 0o644, ROOTUSER, no_backing).unwrap();
                v.release(o.fh);
            },
            dirs: (true, false),
            moved: &[],
        },
        Case {
            name: "mknod",
            op: |v, a, _| {
                v.mknod(a, name("n"), libc::S_IFREG | 0o644, ROOTUSER)
                    .unwrap();
            },
            dirs: (true, false),
            moved: &[],
        },
        Case {
            name: "mkdir",
            op: |v, a, _| {
                v.mkdir(a, name("n"), 0o755, ROOTUSER).unwrap();
            },
            dirs: (true, false),
            moved: &[],
        },
        Case {
            name: "symlink",
            op: |v, a, _| {
                v.symlink(a, name("n"), b"x", ROOTUSER).unwrap();
            },
            dirs: (true, false),
            moved: &[],
        },
        Case {
            name: "unlink",
            op: |v, a, _| v.unlink(a, name("x")).unwrap(),
            dirs: (true, false),
            moved: &[],
        },
        Case {
            name: "rmdir",
            op: |v, a, _| {
                let sub = found(v.lookup(a, name("sub")).unwrap()).unwrap().ino;
                v.unlink(sub, name("y")).unwrap();
                v.rmdir(a, name("sub")).unwrap();
            },
            dirs: (true, false),
            moved: &[],
        },
        Case {
            name: "rename-within",
            op: |v, a, _| v.rename(a, name("x"), a, name("x2"), 0).unwrap(),
            dirs: (true, false),
            moved: &["a/x"],
        },
        Case {
            name: "rename-across",
            op: |v, a, b| v.rename(a, name("x"), b, name("x"), 0).unwrap(),
            dirs: (true, true),
            moved: &["a/x"],
        },
        Case {
            name: "rename-dir",
            op: |v, a, b| v.rename(a, name("sub"), b, name("sub"), 0).unwrap(),
            dirs: (true, true),
            moved: &["a/sub"],
        },
        Case {
            name: "rename-over",
            op: |v, a, b| v.rename(a, name("x"), b, name("z"), 0).unwrap(),
            dirs: (true, true),
            moved: &["a/x"],
        },
        Case {
            name: "exchange",
            op: |v, a, b| v.rename(a, name("x"), b, name("z"), 2).unwrap(),
            dirs: (true, true),
            moved: &["a/x", "b/z"],
        },
    ]
}

const ENTRIES: [&str; 5] = ["a", "b", "a/x", "a/sub", "b/z"];

fn times(v: &View, ino: Ino) -> (SystemTime, SystemTime) {
    let a = v.getattr(ino).unwrap();
    (a.mtime, a.ctime)
}

/// Which of (mtime, ctime) of each of `inos` advanced across `op`.
fn advanced(v: &View, inos: &[Ino], op: impl FnOnce()) -> Vec<(bool, bool)> {
    let before: Vec<_> = inos.iter().map(|&i| times(v, i)).collect();
    op();
    inos.iter()
        .zip(before)
        .map(|(&i, (m, c))| {
            let (m2, c2) = times(v, i);
            (m2 > m, c2 > c)
        })
        .collect()
}

/// Runs every case in its directory under `root` and checks which times
/// advanced. Returns the case directories' inodes.
fn run_cases(v: &View, root: &str) -> Vec<Ino> {
    let mut dirs = Vec::new();
    for c in cases() {
        let at = |rel: &str| ino(v, &format!("{root}/{}/{rel}", c.name));
        let (a, b) = (at("a"), at("b"));
        let moved: Vec<Ino> = c.moved.iter().map(|m| at(m)).collect();
        let watched: Vec<Ino> = [a, b].into_iter().chain(moved.iter().copied()).collect();
        let got = advanced(v, &watched, || (c.op)(v, a, b));
        let both = |x| (x, x);
        let mut want = vec![both(c.dirs.0), both(c.dirs.1)];
        want.extend(moved.iter().map(|_| (false, true)));
        assert_eq!(
            got, want,
            "{root}/{}: (mtime, ctime) of a, b, moved",
            c.name
        );
        dirs.extend([a, b]);
    }
    dirs
}

fn set_host_times(path: &Path, to: SystemTime) {
    let secs = to.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 0,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rustix::fs::utimensat(CWD, path, &ts, AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn set_times(v: &View, ino: Ino, to: SystemTime) {
    let set = SetAttr {
        atime: Some(SetTime::At(to)),
        mtime: Some(SetTime::At(to)),
        ..SetAttr::default()
    };
    v.setattr(ino, None, set, ROOTUSER).unwrap();
}

/// A fixture whose host tree holds a case directory per case under `h/`,
/// with every entry's times in the past.
fn host_cases_fixture() -> Fx {
    let files: Vec<String> = cases()
        .iter()
        .flat_map(|c| ["a/x", "a/sub/y", "b/z"].map(|f| format!("h/{}/{f}", c.name)))
        .collect();
    let extra: Vec<(&str, &str)> = files.iter().map(|f| (f.as_str(), "data\n")).collect();
    let fx = fixture_with(&[], &extra);
    for c in cases() {
        for e in ENTRIES {
            set_host_times(&fx.host.join(format!("h/{}/{e}", c.name)), past());
        }
    }
    fx
}

#[test]
fn changes_in_host_directories_advance_their_times_without_copy_up() {
    let fx = host_cases_fixture();
    let v = open_view(&fx, ViewOptions::default());
    let dirs = run_cases(&v, "h");
    let tree = v.read_tree();
    for d in dirs {
        let origin = &tree.get(d).unwrap().origin;
        assert!(!matches!(origin, Origin::Upper(_)), "{d} copied up");
    }
}

#[test]
fn changes_in_overlay_directories_advance_their_objects_times() {
    let fx = fixture_with(&[], &[]);
    let v = open_view(&fx, ViewOptions::default());
    let m = v.mkdir(ROOT, name("m"), 0o755, ROOTUSER).unwrap().ino;
    for c in cases() {
        let dir = v.mkdir(m, name(c.name), 0o755, ROOTUSER).unwrap().ino;
        let a = v.mkdir(dir, name("a"), 0o755, ROOTUSER).unwrap().ino;
        let b = v.mkdir(dir, name("b"), 0o755, ROOTUSER).unwrap().ino;
        let sub = v.mkdir(a, name("sub"), 0o755, ROOTUSER).unwrap().ino;
        for (parent, file) in [(a, "x"), (sub, "y"), (b, "z")] {
            let (_, o) = v
                .create(parent, name(file), 0o644, ROOTUSER, no_backing)
                .unwrap();
            v.release(o.fh);
        }
        for e in ENTRIES {
            set_times(&v, ino(&v, &format!("m/{}/{e}", c.name)), past());
        }
    }
    let dirs = run_cases(&v, "m");
    // The times are the objects' own: they last as long as the objects.
    let ov = v.overlay().unwrap();
    for d in dirs {
        let Origin::Upper(obj) = v.read_tree().get(d).unwrap().origin else {
            panic!("{d} is not an overlay object");
        };
        let st = ov.stat(obj).unwrap();
        let a = v.getattr(d).unwrap();
        let secs = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs() as i64;
        assert_eq!((st.st_mtime, st.st_ctime), (secs(a.mtime), secs(a.ctime)));
    }
}

#[test]
fn refused_and_empty_changes_leave_times_alone() {
    let fx = fixture_with(&[], &[]);
    let v = open_view(&fx, ViewOptions::default());
    let m = v.mkdir(ROOT, name("m"), 0o755, ROOTUSER).unwrap().ino;
    let e = v.mkdir(m, name("e"), 0o755, ROOTUSER).unwrap().ino;
    for (dir, file) in [(m, "c.txt"), (e, "c.txt")] {
        let (_, o) = v
            .create(dir, name(file), 0o644, ROOTUSER, no_backing)
            .unwrap();
        v.release(o.fh);
    }
    set_times(&v, m, past());
    // `d` (from the host) and `m` (made here) each hold a file `*.txt`
    // and a directory `e` that is not empty.
    for (dir, file) in [(ino(&v, "d"), "b.txt"), (m, "c.txt")] {
        let entries = [dir, found(v.lookup(dir, name(file)).unwrap()).unwrap().ino];
        let got = advanced(&v, &entries, || {
            assert!(v
                .create(dir, name(file), 0o644, ROOTUSER, no_backing)
                .is_err());
            assert!(v.mkdir(dir, name(file), 0o755, ROOTUSER).is_err());
            assert!(v.unlink(dir, name("missing")).is_err());
            assert!(v.rmdir(dir, name("e")).is_err());
            assert!(v.rename(dir, name(file), dir, name("e"), 0).is_err());
            v.rename(dir, name(file), dir, name(file), 0).unwrap();
        });
        assert_eq!(got, vec![(false, false); 2], "{file}");
    }
}

#[test]
fn a_setattr_that_sets_nothing_advances_only_the_ctime() {
    let fx = fixture_with(&[], &[]);
    let v = open_view(&fx, ViewOptions::default());
    for path in ["a.txt", "d"] {
        let i = ino(&v, path);
        set_times(&v, i, past());
        let got = advanced(&v, &[i], || {
            v.setattr(i, None, SetAttr::default(), ROOTUSER).unwrap();
        });
        assert_eq!(got, vec![(false, true)], "{path}");
    }
}

#[test]
fn copy_up_keeps_the_times_the_view_set_on_a_host_entry() {
    let fx = fixture_with(&[], &[]);
    set_host_times(&fx.host.join("d"), past());
    set_host_times(&fx.host.join("d/b.txt"), past());
    let v = open_view(&fx, ViewOptions::default());
    let (d, b) = (ino(&v, "d"), ino(&v, "d/b.txt"));
    v.symlink(d, name("l"), b"b.txt", ROOTUSER).unwrap();
    v.rename(d, name("b.txt"), d, name("c.txt"), 0).unwrap();
    let (dm, dc) = times(&v, d);
    let (bm, bc) = times(&v, b);
    assert!(dm > past() && bm == past());
    // chmod copies the directory up, a write the file: their times stay.
    let chmod = SetAttr {
        mode: Some(0o700),
        ..SetAttr::default()
    };
    v.setattr(d, None, chmod, ROOTUSER).unwrap();
    let o = v.open(b, libc::O_WRONLY, no_backing).unwrap();
    v.release(o.fh);
    assert!(matches!(
        v.read_tree().get(d).unwrap().origin,
        Origin::Upper(_)
    ));
    let (dm2, dc2) = times(&v, d);
    let (bm2, bc2) = times(&v, b);
    assert_eq!((dm2, bm2), (dm, bm), "copy-up changed an mtime");
    // Never back (the filesystem's coarse clock may read a little earlier
    // than the real clock the view kept the first ctime from).
    assert!(
        dc2 >= dc && bc2 >= bc,
        "a ctime went back: dir {dc:?} -> {dc2:?}, file {bc:?} -> {bc2:?}"
    );
}

#[test]
fn changed_directory_times_survive_a_clean_remount_and_make_no_patch() {
    let fx = fixture_with(&[], &[]);
    set_host_times(&fx.host.join("d/e"), past());
    let v = open_view(&fx, ViewOptions::default());
    let e = ino(&v, "d/e");
    let (_, o) = v
        .create(e, name("new.txt"), 0o644, ROOTUSER, no_backing)
        .unwrap();
    v.release(o.fh);
    let (m, _) = times(&v, e);
    assert!(m > past());
    v.shutdown();
    drop(v);

    let v = open_view(&fx, ViewOptions::default());
    assert_eq!(times(&v, ino(&v, "d/e")).0, m);
    let base = crate::tree::Tree::from_files(&fx.grant.files);
    let paths: Vec<String> = crate::patch::changes(&base, &v.read_tree())
        .into_iter()
        .map(|c| c.path)
        .collect();
    assert_eq!(paths, vec!["d/e/new.txt"]);
}

#[test]
fn unlinked_and_replaced_files_get_a_new_ctime_seen_through_their_handles() {
    let fx = fixture_with(&[], &[]);
    set_host_times(&fx.host.join("a.txt"), past());
    set_host_times(&fx.host.join("d/b.txt"), past());
    let v = open_view(&fx, ViewOptions::default());
    let (made, o) = v
        .create(ROOT, name("made"), 0o644, ROOTUSER, no_backing)
        .unwrap();
    v.release(o.fh);
    set_times(&v, made.ino, past());
    let (_, o) = v
        .create(ROOT, name("new"), 0o644, ROOTUSER, no_backing)
        .unwrap();
    v.release(o.fh);
    let d = ino(&v, "d");
    // Unlinked: a host file and a made one; replaced: a host file.
    let open = ["a.txt", "made", "d/b.txt"].map(|p| {
        let i = ino(&v, p);
        (i, v.open(i, libc::O_RDONLY, no_backing).unwrap().fh)
    });
    let of = |(i, fh): (Ino, u64)| {
        let a = v.getattr_fh(i, fh).unwrap();
        (a.mtime, a.ctime)
    };
    let before = open.map(of);
    v.unlink(ROOT, name("a.txt")).unwrap();
    v.unlink(ROOT, name("made")).unwrap();
    v.rename(ROOT, name("new"), d, name("b.txt"), 0).unwrap();
    for (h, (m, c)) in open.into_iter().zip(before) {
        let (m2, c2) = of(h);
        assert_eq!((m2 > m, c2 > c), (false, true), "inode {}", h.0);
        v.release(h.1);
    }
}
