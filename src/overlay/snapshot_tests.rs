//! Tests of `snapshot.rs`: snapshot, restore and their safety on a layer
//! written by a hostile agent. They run as root (trusted xattrs, chown,
//! device nodes).

use std::collections::BTreeMap;
use std::fs;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::Path;

use rustix::fs::{self as rfs, FileType, Mode, Timespec, Timestamps, XattrFlags, CWD};

use super::snapshot::{changed, materialize, restore, snapshot, Against, LAYER, MANIFEST};

fn no_skip(_: &str) -> bool {
    false
}

/// Lets the layer's ctimes age past the racy window, so that identities
/// prove entries unchanged (what a layer written a moment ago cannot).
fn settle() {
    std::thread::sleep(std::time::Duration::from_millis(60));
}

/// One entry of a tree as compared: everything a checkpoint must keep.
#[derive(Debug, PartialEq, Eq)]
struct Node {
    kind: &'static str,
    content: Vec<u8>,
    target: Option<std::path::PathBuf>,
    mode: u32,
    uid: u32,
    gid: u32,
    rdev: u64,
    xattrs: BTreeMap<String, Vec<u8>>,
    mtime: (i64, i64),
    /// The first path (in sorted order) of the tree sharing this entry's
    /// inode: the link structure.
    link_leader: String,
}

fn xattrs(p: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut list = vec![0u8; 65536];
    let n = rfs::llistxattr(p, &mut list[..]).unwrap();
    let mut out = BTreeMap::new();
    for name in list[..n].split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let mut v = vec![0u8; 65536];
        let len = rfs::lgetxattr(p, name, &mut v[..]).unwrap();
        v.truncate(len);
        out.insert(String::from_utf8(name.to_vec()).unwrap(), v);
    }
    out
}

/// Every entry of the tree at `root` ("" = the root), never following a symlink.
fn describe(root: &Path) -> BTreeMap<String, Node> {
    let mut raw = Vec::new();
    let mut todo = vec![String::new()];
    while let Some(rel) = todo.pop() {
        let p = if rel.is_empty() {
            root.to_path_buf()
        } else {
            root.join(&rel)
        };
        let md = fs::symlink_metadata(&p).unwrap();
        if md.is_dir() {
            for e in fs::read_dir(&p).unwrap() {
                let name = e.unwrap().file_name().into_string().unwrap();
                todo.push(if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                });
            }
        }
        raw.push((rel, p, md));
    }
    raw.sort_by(|a, b| a.0.cmp(&b.0));
    let mut leaders: BTreeMap<u64, String> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for (rel, p, md) in raw {
        let ft = FileType::from_raw_mode(md.mode());
        let kind = match ft {
            FileType::Directory => "dir",
            FileType::RegularFile => "file",
            FileType::Symlink => "symlink",
            FileType::CharacterDevice => "char",
            FileType::Fifo => "fifo",
            _ => "other",
        };
        let link_leader = if kind == "dir" {
            rel.clone()
        } else {
            leaders
                .entry(md.ino())
                .or_insert_with(|| rel.clone())
                .clone()
        };
        let node = Node {
            kind,
            content: if kind == "file" {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            },
            target: (kind == "symlink").then(|| fs::read_link(&p).unwrap()),
            mode: if kind == "symlink" { 0 } else { md.mode() },
            uid: md.uid(),
            gid: md.gid(),
            rdev: md.rdev(),
            xattrs: xattrs(&p),
            mtime: (md.mtime(), md.mtime_nsec()),
            link_leader,
        };
        out.insert(rel, node);
    }
    out
}

/// The state a checkpoint holds: its layer materialized, described.
fn state_of(ck: &Path) -> BTreeMap<String, Node> {
    let t = tempfile::tempdir().unwrap();
    let dest = t.path().join("tree");
    materialize(ck, &dest).unwrap();
    describe(&dest)
}

/// The `at` of each manifest line, by path.
fn ats(ck: &Path) -> BTreeMap<String, Option<String>> {
    fs::read_to_string(ck.join(MANIFEST))
        .unwrap()
        .lines()
        .skip(1)
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["path"].as_str().unwrap().to_string(),
                v.get("at").map(|a| a.as_str().unwrap().to_string()),
            )
        })
        .collect()
}

fn assert_same(a: &BTreeMap<String, Node>, b: &BTreeMap<String, Node>) {
    let ka: Vec<_> = a.keys().collect();
    let kb: Vec<_> = b.keys().collect();
    assert_eq!(ka, kb, "not the same paths");
    for (k, v) in a {
        assert_eq!(Some(v), b.get(k), "{k:?} differs");
    }
}

fn set_xattr(p: &Path, name: &str, value: &[u8]) {
    rfs::lsetxattr(p, name, value, XattrFlags::empty()).unwrap();
}

fn mknod(p: &Path, ft: FileType, dev: u64) {
    rfs::mknodat(CWD, p, ft, Mode::from_raw_mode(0o644), dev).unwrap();
}

fn set_mtime(p: &Path, secs: i64) {
    let t = Timespec {
        tv_sec: secs,
        tv_nsec: 123_456_789,
    };
    let ts = Timestamps {
        last_access: t,
        last_modification: t,
    };
    rfs::utimensat(CWD, p, &ts, rfs::AtFlags::SYMLINK_NOFOLLOW).unwrap();
}

fn ino(p: &Path) -> u64 {
    fs::symlink_metadata(p).unwrap().ino()
}

/// Everything a layer may hold. `outside` is a directory beyond the layer
/// that symlinks point to.
fn build(l: &Path, outside: &Path) {
    fs::write(l.join("plain"), "hello").unwrap();
    fs::write(l.join("append"), "start").unwrap();
    fs::write(l.join("setid"), "#!/bin/sh\n").unwrap();
    fs::set_permissions(l.join("setid"), fs::Permissions::from_mode(0o6755)).unwrap();
    fs::write(l.join("xa"), "x").unwrap();
    set_xattr(&l.join("xa"), "user.a", b"1");
    set_xattr(&l.join("xa"), "trusted.b", b"2");
    fs::write(l.join("empty"), "").unwrap();
    let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    fs::write(l.join("big"), &big).unwrap();
    fs::write(l.join("unchanged.txt"), "same").unwrap();
    fs::write(l.join("mode"), "m").unwrap();
    fs::write(l.join("del"), "gone soon").unwrap();
    fs::write(l.join("owned"), "o").unwrap();
    std::os::unix::fs::lchown(l.join("owned"), Some(1234), Some(5678)).unwrap();
    fs::create_dir_all(l.join("d1/d2/d3")).unwrap();
    fs::write(l.join("d1/d2/d3/deep.txt"), "deep").unwrap();
    fs::create_dir(l.join("emptydir")).unwrap();
    fs::create_dir(l.join("opq")).unwrap();
    fs::write(l.join("opq/x"), "x").unwrap();
    set_xattr(&l.join("opq"), "trusted.overlay.opaque", b"y");
    fs::create_dir_all(l.join("gone/a/b")).unwrap();
    fs::write(l.join("gone/a/b/c.txt"), "c").unwrap();
    fs::write(l.join("todir"), "file first").unwrap();
    fs::create_dir(l.join("tofile")).unwrap();
    fs::write(l.join("tofile/child"), "child").unwrap();
    fs::create_dir_all(l.join("objects/ab")).unwrap();
    fs::write(l.join("objects/ab/1"), "object").unwrap();
    symlink("plain", l.join("sym_rel")).unwrap();
    symlink("nowhere/at/all", l.join("sym_dangling")).unwrap();
    symlink("/etc/passwd", l.join("sym_etc")).unwrap();
    symlink(outside, l.join("trap")).unwrap();
    mknod(&l.join("wh"), FileType::CharacterDevice, 0);
    // Xattrs and owners of symlinks and devices (the l* calls).
    set_xattr(&l.join("sym_dangling"), "trusted.sl", b"v");
    set_xattr(&l.join("wh"), "trusted.overlay.origin", b"o");
    std::os::unix::fs::lchown(l.join("sym_rel"), Some(42), Some(43)).unwrap();
    mknod(&l.join("wh2"), FileType::CharacterDevice, 0);
    mknod(&l.join("fifo"), FileType::Fifo, 0);
    fs::write(l.join("h1"), "linked").unwrap();
    fs::hard_link(l.join("h1"), l.join("d1/h2")).unwrap();
    fs::write(l.join("hb1"), "to break").unwrap();
    fs::hard_link(l.join("hb1"), l.join("hb2")).unwrap();
    set_mtime(&l.join("plain"), 1_000_000);
    set_mtime(&l.join("sym_rel"), 2_000_000);
    set_mtime(&l.join("d1/d2"), 3_000_000);
}

/// Changes the layer in every way an agent can.
fn mutate(l: &Path, outside: &Path) {
    fs::write(l.join("plain"), "HELLO").unwrap(); // edit
    fs::OpenOptions::new()
        .append(true)
        .open(l.join("append"))
        .unwrap()
        .write_all(b" and more")
        .unwrap();
    fs::set_permissions(l.join("mode"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::set_permissions(l.join("emptydir"), fs::Permissions::from_mode(0o711)).unwrap();
    fs::write(l.join("new.txt"), "new").unwrap();
    fs::write(l.join("d1/new-in-kept-dir"), "new").unwrap();
    fs::remove_file(l.join("del")).unwrap();
    fs::remove_dir_all(l.join("gone")).unwrap();
    fs::remove_file(l.join("todir")).unwrap();
    fs::create_dir(l.join("todir")).unwrap();
    fs::write(l.join("todir/inside"), "i").unwrap();
    fs::remove_dir_all(l.join("tofile")).unwrap();
    fs::write(l.join("tofile"), "now a file").unwrap();
    fs::remove_file(l.join("sym_rel")).unwrap();
    symlink("big", l.join("sym_rel")).unwrap();
    set_xattr(&l.join("plain"), "user.new", b"v");
    rfs::lremovexattr(l.join("xa"), "user.a").unwrap();
    rfs::lremovexattr(l.join("sym_dangling"), "trusted.sl").unwrap();
    set_xattr(&l.join("sym_dangling"), "trusted.sl2", b"w");
    rfs::lremovexattr(l.join("opq"), "trusted.overlay.opaque").unwrap();
    std::os::unix::fs::lchown(l.join("owned"), Some(0), Some(0)).unwrap();
    fs::hard_link(l.join("h1"), l.join("h3")).unwrap();
    fs::remove_file(l.join("hb2")).unwrap();
    fs::write(l.join("hb2"), "broken").unwrap();
    fs::remove_file(l.join("wh2")).unwrap();
    fs::write(l.join("wh2"), "").unwrap();
    // The objects directory becomes a trap: a symlink to outside.
    fs::remove_dir_all(l.join("objects")).unwrap();
    symlink(outside, l.join("objects")).unwrap();
}

/// A directory beyond the layer, with a file a trap would expose.
fn outside_dir() -> tempfile::TempDir {
    let o = tempfile::tempdir().unwrap();
    fs::create_dir(o.path().join("ab")).unwrap();
    fs::write(o.path().join("ab/1"), "outside secret").unwrap();
    fs::write(o.path().join("secret"), "outside secret").unwrap();
    o
}

fn outside_unchanged(o: &Path) {
    let mut names: Vec<_> = fs::read_dir(o)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["ab", "secret"]);
    assert_eq!(
        fs::read_to_string(o.join("secret")).unwrap(),
        "outside secret"
    );
    assert_eq!(
        fs::read_to_string(o.join("ab/1")).unwrap(),
        "outside secret"
    );
    assert_eq!(fs::read_dir(o.join("ab")).unwrap().count(), 1);
}

#[test]
fn restore_undoes_every_kind_of_change() {
    let outside = outside_dir();
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir(&live).unwrap();
    fs::set_permissions(&live, fs::Permissions::from_mode(0o750)).unwrap();
    build(&live, outside.path());
    settle();
    let before = describe(&live);

    let ck1 = t.path().join("ckpts/c1");
    let s = snapshot(&live, &ck1, None, &no_skip).unwrap();
    assert_eq!(s.entries as usize, before.len());
    assert_eq!(s.gone_since_prev, 0);
    // Two hard-link pairs: the second name of each is linked to the first copy.
    assert_eq!(s.shared, 2);
    assert_eq!(
        s.copied as usize,
        before.values().filter(|n| n.kind != "dir").count() - 2
    );
    assert!(s.bytes_copied >= 1 << 20);
    assert_eq!(
        fs::metadata(&ck1).unwrap().permissions().mode() & 0o777,
        0o700
    );
    // The copy is the layer, exactly; the symlinks are links, never followed.
    assert_same(&describe(&ck1.join(LAYER)), &before);
    assert_eq!(
        fs::read_link(ck1.join("layer/trap")).unwrap(),
        outside.path()
    );
    assert_eq!(
        fs::read_link(ck1.join("layer/sym_etc")).unwrap(),
        Path::new("/etc/passwd")
    );

    let kept_paths = [
        "unchanged.txt",
        "big",
        "setid",
        "d1/d2/d3/deep.txt",
        "sym_etc",
        "wh",
        "fifo",
        "d1",
        "d1/d2",
    ];
    let inos: Vec<u64> = kept_paths.iter().map(|p| ino(&live.join(p))).collect();

    mutate(&live, outside.path());
    settle();
    let mutated = describe(&live);
    // A process holding a file that the restore replaces.
    let mut held = fs::File::open(live.join("append")).unwrap();

    // A checkpoint of the changed layer: the trap is copied as a symlink.
    let ck2 = t.path().join("ckpts/c2");
    let s2 = snapshot(&live, &ck2, Some(&ck1), &no_skip).unwrap();
    assert_eq!(
        fs::read_link(ck2.join("layer/objects")).unwrap(),
        outside.path()
    );
    assert_same(&state_of(&ck2), &mutated);
    // objects/ab/1, gone/a/b/c.txt, del and tofile/child are gone, and objects/ab, gone, gone/a, gone/a/b.
    assert_eq!(s2.gone_since_prev, 8);
    // What changed, counted three ways.
    let mut want = vec![
        "plain",
        "append",
        "mode",
        "new.txt",
        "d1/new-in-kept-dir",
        "del",
        "gone/a/b/c.txt",
        "todir",
        "todir/inside",
        "tofile",
        "tofile/child",
        "sym_rel",
        "sym_dangling",
        "xa",
        "owned",
        "h3",
        "hb2",
        "wh2",
        "objects",
        "objects/ab/1",
    ];
    want.sort();
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    assert_eq!(
        sorted(changed(&ck1, Against::Live(&live), &no_skip).unwrap()),
        want
    );
    assert_eq!(
        sorted(changed(&ck1, Against::Checkpoint(&ck2), &no_skip).unwrap()),
        want
    );
    assert_eq!(
        changed(&ck2, Against::Live(&live), &no_skip).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        changed(&ck2, Against::Checkpoint(&ck2), &no_skip).unwrap(),
        Vec::<String>::new()
    );
    let skip_plain = |rel: &str| rel == "plain" || rel == "gone";
    let got = changed(&ck1, Against::Live(&live), &skip_plain).unwrap();
    assert_eq!(got.len(), want.len() - 2, "{got:?}");
    // Restoring the checkpoint just taken changes nothing.
    let r0 = restore(&live, &ck2, &no_skip).unwrap();
    assert_eq!(
        (r0.restored, r0.removed, r0.bytes_copied),
        (0, 0, 0),
        "{r0:?}"
    );
    assert_eq!(r0.kept as usize, mutated.len());
    outside_unchanged(outside.path());

    let r = restore(&live, &ck1, &no_skip).unwrap();
    assert_same(&describe(&live), &before);
    outside_unchanged(outside.path());
    assert_eq!(
        changed(&ck1, Against::Live(&live), &no_skip).unwrap(),
        Vec::<String>::new()
    );
    for (p, i) in kept_paths.iter().zip(&inos) {
        assert_eq!(ino(&live.join(p)), *i, "{p} was not kept");
    }
    let mut s = String::new();
    held.rewind().unwrap();
    held.read_to_string(&mut s).unwrap();
    assert_eq!(
        s, "start and more",
        "the held file changed under its reader"
    );
    assert!(r.kept >= kept_paths.len() as u64, "{r:?}");
    assert!(r.restored >= 10, "{r:?}");
    // new.txt, d1/new-in-kept-dir, h3, todir + todir/inside, objects (the
    // trap), and tofile (a file where a directory was).
    assert_eq!(r.removed, 7, "{r:?}");
    assert!(r.bytes_copied > 0 && r.bytes_copied < 1 << 20, "{r:?}");
    // No temporary names are left behind.
    assert!(!describe(&live)
        .keys()
        .any(|k| k.contains(".wopfs-restore-")));
    // The checkpoints themselves are untouched by the restore.
    assert_same(&describe(&ck1.join(LAYER)), &before);
    assert_same(&state_of(&ck2), &mutated);
}

/// Changes every file of the layer of `later_snapshots_reference_...`.
fn change_everything(live: &Path, round: &str) {
    for p in ["a", "d/b", "c", "new"] {
        fs::write(live.join(p), format!("{p} {round}")).unwrap();
    }
    fs::remove_file(live.join("s")).unwrap();
    symlink("c", live.join("s")).unwrap();
    fs::write(live.join("h1"), round).unwrap(); // both names
    fs::remove_file(live.join("d/h2")).unwrap();
    fs::hard_link(live.join("c"), live.join("d/h2")).unwrap();
    fs::write(live.join("extra"), round).unwrap();
    fs::create_dir_all(live.join("d/sub")).unwrap();
    fs::write(live.join("d/sub/x"), round).unwrap();
    settle();
}

#[test]
fn later_snapshots_reference_what_did_not_change() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir_all(live.join("d")).unwrap();
    fs::write(live.join("a"), "a").unwrap();
    fs::write(live.join("d/b"), "b").unwrap();
    fs::write(live.join("c"), "c").unwrap();
    fs::write(live.join("del"), "del").unwrap();
    symlink("a", live.join("s")).unwrap();
    fs::write(live.join("h1"), "h").unwrap();
    fs::hard_link(live.join("h1"), live.join("d/h2")).unwrap();
    set_xattr(&live.join("a"), "user.x", b"1");
    settle();
    let root = t.path().join("checkpoints");
    let (c1, c2, c3) = (root.join("c1"), root.join("c2"), root.join("c3"));
    let s1 = snapshot(&live, &c1, None, &no_skip).unwrap();
    assert_eq!((s1.copied, s1.shared, s1.entries), (6, 1, 9));
    assert!(ats(&c1).values().all(Option::is_none));
    let state1 = describe(&live);
    assert_same(&state_of(&c1), &state1);

    fs::write(live.join("c"), "changed").unwrap();
    fs::write(live.join("new"), "new").unwrap();
    fs::remove_file(live.join("del")).unwrap();
    settle();
    let s2 = snapshot(&live, &c2, Some(&c1), &no_skip).unwrap();
    // a, d/b, s, h1 and d/h2 referenced; c and new copied.
    assert_eq!(
        (s2.copied, s2.shared, s2.gone_since_prev, s2.entries),
        (2, 5, 1, 9),
        "{s2:?}"
    );
    assert_eq!(s2.bytes_copied, "changed".len() as u64 + 3);
    let at2 = ats(&c2);
    for p in ["a", "d/b", "s", "h1", "d/h2"] {
        assert_eq!(at2[p].as_deref(), Some("c1"), "{p}");
        assert!(
            fs::symlink_metadata(c2.join(LAYER).join(p)).is_err(),
            "{p} is in c2's layer"
        );
    }
    for p in ["", "d", "c", "new"] {
        assert_eq!(at2[p], None, "{p}");
    }
    assert!(c2.join("layer/d").is_dir());
    assert_eq!(fs::read_to_string(c2.join("layer/c")).unwrap(), "changed");
    let state2 = describe(&live);
    assert_same(&state_of(&c2), &state2);

    // The third carries the references to c1 (never to c2) and references c2's copies.
    fs::write(live.join("d/b"), "b3").unwrap();
    settle();
    let s3 = snapshot(&live, &c3, Some(&c2), &no_skip).unwrap();
    assert_eq!((s3.copied, s3.shared), (1, 6), "{s3:?}");
    let at3 = ats(&c3);
    for p in ["a", "s", "h1", "d/h2"] {
        assert_eq!(at3[p].as_deref(), Some("c1"), "{p}");
    }
    for p in ["c", "new"] {
        assert_eq!(at3[p].as_deref(), Some("c2"), "{p}");
    }
    assert_eq!(at3["d/b"], None);
    let state3 = describe(&live);
    assert_same(&state_of(&c3), &state3);

    // What changed, across references.
    let sorted = |mut v: Vec<String>| {
        v.sort();
        v
    };
    let cp = |a: &Path, b: &Path| sorted(changed(a, Against::Checkpoint(b), &no_skip).unwrap());
    assert_eq!(cp(&c1, &c3), ["c", "d/b", "del", "new"]);
    assert_eq!(cp(&c3, &c1), ["c", "d/b", "del", "new"]);
    assert_eq!(cp(&c2, &c3), ["d/b"]);
    assert_eq!(cp(&c1, &c2), ["c", "del", "new"]);
    assert!(cp(&c3, &c3).is_empty());
    let lv = |a: &Path| sorted(changed(a, Against::Live(&live), &no_skip).unwrap());
    assert!(lv(&c3).is_empty());
    assert_eq!(lv(&c2), ["d/b"]);
    assert_eq!(lv(&c1), ["c", "d/b", "del", "new"]);
    // The same after everything changed: each entry compared with its copy.
    change_everything(&live, "r1");
    let all = [
        "a", "c", "d/b", "d/h2", "d/sub/x", "extra", "h1", "new", "s",
    ];
    assert_eq!(lv(&c3), all);
    assert_eq!(lv(&c2), all);

    // Restores from the checkpoints holding references give exactly their state.
    let r = restore(&live, &c2, &no_skip).unwrap();
    assert_same(&describe(&live), &state2);
    assert!(r.restored >= 7, "{r:?}");
    assert!(lv(&c2).is_empty());
    change_everything(&live, "r2");
    restore(&live, &c3, &no_skip).unwrap();
    assert_same(&describe(&live), &state3);
    assert!(lv(&c3).is_empty());
    restore(&live, &c1, &no_skip).unwrap();
    assert_same(&describe(&live), &state1);
    restore(&live, &c3, &no_skip).unwrap();
    assert_same(&describe(&live), &state3);
    // The checkpoints are as they were.
    assert_same(&state_of(&c1), &state1);
    assert_same(&state_of(&c2), &state2);
    assert_same(&state_of(&c3), &state3);

    // A materialized tree shares the copies; its destination must be new.
    let dest = t.path().join("tree");
    materialize(&c3, &dest).unwrap();
    assert_eq!(ino(&dest.join("a")), ino(&c1.join("layer/a")));
    assert_eq!(ino(&dest.join("c")), ino(&c2.join("layer/c")));
    assert_eq!(ino(&dest.join("h1")), ino(&dest.join("d/h2")));
    let e = materialize(&c3, &dest).unwrap_err().to_string();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn prev_must_be_a_sibling_checkpoint() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir(&live).unwrap();
    fs::write(live.join("a"), "a").unwrap();
    let c1 = t.path().join("one/c1");
    snapshot(&live, &c1, None, &no_skip).unwrap();
    for (ck, prev) in [
        (t.path().join("two/c2"), c1.clone()),
        (t.path().join("one/c2"), t.path().join("one/x")),
    ] {
        if prev != c1 {
            fs::rename(&c1, &prev).unwrap();
        }
        let e = snapshot(&live, &ck, Some(&prev), &no_skip)
            .unwrap_err()
            .to_string();
        assert!(e.contains("not a sibling"), "{e}");
        assert!(!ck.exists());
    }
}

#[test]
fn a_bad_at_is_refused_naming_its_line() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir(&live).unwrap();
    fs::write(live.join("a"), "a").unwrap();
    fs::write(live.join("b"), "b").unwrap();
    settle();
    let (c1, c2) = (t.path().join("c1"), t.path().join("c2"));
    snapshot(&live, &c1, None, &no_skip).unwrap();
    snapshot(&live, &c2, Some(&c1), &no_skip).unwrap();
    fs::create_dir_all(t.path().join("etc/layer")).unwrap();
    fs::write(t.path().join("etc/layer/a"), "not a checkpoint").unwrap();
    let m = c2.join(MANIFEST);
    let good = fs::read_to_string(&m).unwrap();
    let lines: Vec<&str> = good.lines().collect();
    let n = lines
        .iter()
        .position(|l| l.contains(r#""path":"a""#))
        .unwrap();
    assert!(lines[n].contains(r#""at":"c1""#), "{good}");
    fs::write(live.join("a"), "changed").unwrap();
    for bad in [
        "../x",
        "c1/../../etc",
        "../etc",
        "c1/",
        "c",
        "",
        "x1",
        "c9",
        "c2",
    ] {
        let mut l = lines.clone();
        let line = lines[n].replace(r#""at":"c1""#, &format!(r#""at":"{bad}""#));
        l[n] = &line;
        fs::write(&m, l.join("\n")).unwrap();
        let want = format!("line {}", n + 1);
        let check = |e: String| {
            assert!(
                e.contains(&want) && e.contains(&m.display().to_string()),
                "{bad}: {e}"
            )
        };
        check(restore(&live, &c2, &no_skip).unwrap_err().to_string());
        check(
            changed(&c2, Against::Live(&live), &no_skip)
                .unwrap_err()
                .to_string(),
        );
        check(
            materialize(&c2, &t.path().join("tree"))
                .unwrap_err()
                .to_string(),
        );
        check(
            snapshot(&live, &t.path().join("c3"), Some(&c2), &no_skip)
                .unwrap_err()
                .to_string(),
        );
        assert!(!t.path().join("tree").exists() && !t.path().join("c3").exists());
        assert_eq!(fs::read_to_string(live.join("a")).unwrap(), "changed");
    }
    // An at on a directory.
    let mut l = lines.clone();
    let root_line = lines[1].replace('}', r#","at":"c1"}"#);
    l[1] = &root_line;
    fs::write(&m, l.join("\n")).unwrap();
    let e = restore(&live, &c2, &no_skip).unwrap_err().to_string();
    assert!(e.contains("line 2") && e.contains("has an at"), "{e}");
    // An at in a version 1 manifest (made before references).
    fs::write(&m, good.replacen(r#"{"version":2}"#, r#"{"version":1}"#, 1)).unwrap();
    let e = restore(&live, &c2, &no_skip).unwrap_err().to_string();
    assert!(e.contains("version 1"), "{e}");
    // Good again.
    fs::write(&m, &good).unwrap();
    restore(&live, &c2, &no_skip).unwrap();
    assert_eq!(fs::read_to_string(live.join("a")).unwrap(), "a");
}

#[test]
fn a_referenced_copy_replaced_by_a_symlink_is_never_followed() {
    let outside = outside_dir();
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir_all(live.join("ab")).unwrap();
    fs::write(live.join("secret"), "mine").unwrap();
    fs::write(live.join("ab/1"), "mine too").unwrap();
    settle();
    let (c1, c2) = (t.path().join("c1"), t.path().join("c2"));
    snapshot(&live, &c1, None, &no_skip).unwrap();
    snapshot(&live, &c2, Some(&c1), &no_skip).unwrap();
    let at = ats(&c2);
    assert_eq!(at["secret"].as_deref(), Some("c1"));
    assert_eq!(at["ab/1"].as_deref(), Some("c1"));
    fs::write(live.join("secret"), "changed").unwrap();
    fs::write(live.join("ab/1"), "changed too").unwrap();
    settle();

    // c1's copy of a file becomes a symlink to a file outside.
    fs::remove_file(c1.join("layer/secret")).unwrap();
    symlink(outside.path().join("secret"), c1.join("layer/secret")).unwrap();
    let names = |e: &str| {
        assert!(
            e.contains(&c2.display().to_string())
                && e.contains("secret")
                && e.contains("c1")
                && e.contains("a symlink"),
            "{e}"
        )
    };
    names(&restore(&live, &c2, &no_skip).unwrap_err().to_string());
    assert_eq!(fs::read_to_string(live.join("secret")).unwrap(), "changed");
    let dest = t.path().join("tree");
    names(&materialize(&c2, &dest).unwrap_err().to_string());
    assert!(!dest.exists());
    names(
        &changed(&c2, Against::Live(&live), &no_skip)
            .unwrap_err()
            .to_string(),
    );
    // Gone: named as missing.
    fs::remove_file(c1.join("layer/secret")).unwrap();
    let e = restore(&live, &c2, &no_skip).unwrap_err().to_string();
    assert!(
        e.contains("secret") && e.contains("c1") && e.contains("no copy"),
        "{e}"
    );
    fs::write(c1.join("layer/secret"), "mine").unwrap();
    // (ab/1, before secret, was put back by the partial restores.)
    fs::write(live.join("ab/1"), "changed too").unwrap();
    settle();

    // A directory of c1's copy becomes a symlink to a directory outside.
    fs::rename(c1.join("layer/ab"), c1.join("ab.real")).unwrap();
    symlink(outside.path().join("ab"), c1.join("layer/ab")).unwrap();
    let e = restore(&live, &c2, &no_skip).unwrap_err().to_string();
    assert!(e.contains("ab/1") && e.contains("c1"), "{e}");
    assert_eq!(
        fs::read_to_string(live.join("ab/1")).unwrap(),
        "changed too"
    );
    let e = materialize(&c2, &dest).unwrap_err().to_string();
    assert!(e.contains("ab/1") && e.contains("c1"), "{e}");
    assert!(!dest.exists());
    outside_unchanged(outside.path());
}

#[test]
fn an_existing_checkpoint_dir_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir(&live).unwrap();
    let ck = t.path().join("ck");
    fs::create_dir(&ck).unwrap();
    fs::write(ck.join("keep"), "mine").unwrap();
    let e = snapshot(&live, &ck, None, &no_skip)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&ck.display().to_string()) && e.contains("already exists"),
        "{e}"
    );
    assert_eq!(fs::read_to_string(ck.join("keep")).unwrap(), "mine");
}

#[test]
fn a_damaged_manifest_is_named_with_its_line() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir(&live).unwrap();
    fs::write(live.join("a"), "a").unwrap();
    fs::write(live.join("b"), "b").unwrap();
    let ck = t.path().join("c1");
    snapshot(&live, &ck, None, &no_skip).unwrap();
    let m = ck.join(MANIFEST);
    let text = fs::read_to_string(&m).unwrap();
    let mut lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 4);
    assert_eq!(lines[0], r#"{"version":2}"#);
    lines[2] = "{not json";
    fs::write(&m, lines.join("\n")).unwrap();
    let e = restore(&live, &ck, &no_skip).unwrap_err().to_string();
    assert!(
        e.contains(&m.display().to_string()) && e.contains("line 3"),
        "{e}"
    );
    let e = snapshot(&live, &t.path().join("c2"), Some(&ck), &no_skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("line 3"), "{e}");
    assert!(!t.path().join("c2").exists());
    // A path leaving the layer is damage too.
    lines[2] = r#"{"path":"../x","kind":"file","ino":1,"ctime_s":0,"ctime_ns":0}"#;
    fs::write(&m, lines.join("\n")).unwrap();
    let e = restore(&live, &ck, &no_skip).unwrap_err().to_string();
    assert!(e.contains("line 3") && e.contains("bad path"), "{e}");
    // And a newer version.
    fs::write(&m, "{\"version\":3}\n").unwrap();
    let e = restore(&live, &ck, &no_skip).unwrap_err().to_string();
    assert!(e.contains("line 1") && e.contains("version 3"), "{e}");
    // Nothing was changed by the refused restores.
    assert_eq!(fs::read_to_string(live.join("a")).unwrap(), "a");
}

#[test]
fn restore_never_writes_through_a_planted_symlink() {
    let outside = outside_dir();
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir_all(live.join("objects/ab")).unwrap();
    fs::write(live.join("objects/ab/1"), "mine").unwrap();
    fs::write(live.join("objects/secret"), "mine too").unwrap();
    let ck = t.path().join("ck");
    snapshot(&live, &ck, None, &no_skip).unwrap();
    // Deeper: a directory inside becomes a trap too, in a kept directory.
    fs::remove_dir_all(live.join("objects/ab")).unwrap();
    symlink(outside.path().join("ab"), live.join("objects/ab")).unwrap();
    fs::remove_file(live.join("objects/secret")).unwrap();
    symlink(outside.path().join("secret"), live.join("objects/secret")).unwrap();
    restore(&live, &ck, &no_skip).unwrap();
    outside_unchanged(outside.path());
    assert_eq!(
        fs::read_to_string(live.join("objects/ab/1")).unwrap(),
        "mine"
    );
    assert!(fs::symlink_metadata(live.join("objects/ab"))
        .unwrap()
        .is_dir());
    // The whole objects directory as a trap.
    fs::remove_dir_all(live.join("objects")).unwrap();
    symlink(outside.path(), live.join("objects")).unwrap();
    restore(&live, &ck, &no_skip).unwrap();
    outside_unchanged(outside.path());
    assert_same(&describe(&live), &describe(&ck.join(LAYER)));
}

#[test]
fn skipped_entries_are_left_alone() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir_all(live.join("tmpdir")).unwrap();
    fs::write(live.join("tmpdir/x"), "x").unwrap();
    fs::write(live.join("journal.jsonl"), "j").unwrap();
    fs::write(live.join("journal.jsonl.tmp"), "compacting").unwrap();
    let skip = |rel: &str| rel == "journal.jsonl.tmp" || rel == "tmpdir";
    let ck = t.path().join("ck");
    let s = snapshot(&live, &ck, None, &skip).unwrap();
    assert_eq!(s.entries, 2);
    assert!(!ck.join("layer/journal.jsonl.tmp").exists());
    assert!(!ck.join("layer/tmpdir").exists());
    fs::write(live.join("journal.jsonl.tmp"), "compacting more").unwrap();
    fs::write(live.join("journal.jsonl"), "j2").unwrap();
    fs::write(live.join("tmpdir/y"), "y").unwrap();
    restore(&live, &ck, &skip).unwrap();
    assert_eq!(fs::read_to_string(live.join("journal.jsonl")).unwrap(), "j");
    assert_eq!(
        fs::read_to_string(live.join("journal.jsonl.tmp")).unwrap(),
        "compacting more"
    );
    assert!(live.join("tmpdir/x").exists() && live.join("tmpdir/y").exists());
}

#[test]
fn an_entry_written_just_before_the_snapshot_is_not_trusted_by_identity() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir(&live).unwrap();
    fs::write(live.join("old"), "old").unwrap();
    settle();
    // Written in the same clock tick as a later change could be: its
    // ctime may not move when it changes again.
    fs::write(live.join("fresh"), "fresh").unwrap();
    let ino_old = ino(&live.join("old"));
    let ck = t.path().join("c1");
    snapshot(&live, &ck, None, &no_skip).unwrap();
    let m = fs::read_to_string(ck.join(MANIFEST)).unwrap();
    let racy: Vec<&str> = m.lines().filter(|l| l.contains(r#""racy":true"#)).collect();
    // The root (its mtime moved with `fresh`) and fresh.
    assert_eq!(racy.len(), 2, "{m}");
    assert!(racy.iter().any(|l| l.contains(r#""path":"fresh""#)), "{m}");
    // A racy file is copied back even though its identity is the same;
    // old is kept.
    let r = restore(&live, &ck, &no_skip).unwrap();
    assert_eq!((r.restored, r.removed), (1, 0), "{r:?}");
    assert_eq!(ino(&live.join("old")), ino_old);
    assert_eq!(fs::read_to_string(live.join("fresh")).unwrap(), "fresh");
    // And compared byte by byte by changed(): no difference.
    assert!(changed(&ck, Against::Live(&live), &no_skip)
        .unwrap()
        .is_empty());
    // A second snapshot copies it again instead of referencing it.
    settle();
    let ck2 = t.path().join("c2");
    let s = snapshot(&live, &ck2, Some(&ck), &no_skip).unwrap();
    assert_eq!((s.copied, s.shared), (1, 1), "{s:?}");
    let at = ats(&ck2);
    assert_eq!(at["fresh"], None);
    assert_eq!(at["old"].as_deref(), Some("c1"));
}

#[test]
fn a_file_swapped_for_a_fifo_or_device_is_refused_unopened() {
    let t = tempfile::tempdir().unwrap();
    let f = t.path().join("f");
    fs::write(&f, "x").unwrap();
    let st = rfs::lstat(&f).unwrap();
    let dir = rfs::open(
        t.path(),
        rfs::OFlags::RDONLY | rfs::OFlags::DIRECTORY,
        Mode::empty(),
    )
    .unwrap();
    assert!(super::snapshot::open_file_at(std::os::fd::AsFd::as_fd(&dir), b"f", &st).is_ok());
    for (ft, dev) in [
        (FileType::Fifo, 0),
        (FileType::CharacterDevice, rfs::makedev(1, 3)),
    ] {
        fs::remove_file(&f).unwrap();
        mknod(&f, ft, dev);
        // Would block forever if it opened the FIFO for reading.
        let e =
            super::snapshot::open_file_at(std::os::fd::AsFd::as_fd(&dir), b"f", &st).unwrap_err();
        assert!(e.to_string().contains("changed while it was read"), "{e}");
    }
}

/// Unmounts (lazily) when dropped, even if the test fails.
struct Mounted(std::path::PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = rustix::mount::unmount(&self.0, rustix::mount::UnmountFlags::DETACH);
    }
}

#[test]
fn another_filesystem_inside_the_layer_is_never_crossed() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir_all(live.join("mnt")).unwrap();
    fs::write(live.join("a"), "a").unwrap();
    rustix::mount::mount(
        "tmpfs",
        live.join("mnt"),
        "tmpfs",
        rustix::mount::MountFlags::empty(),
        None,
    )
    .unwrap();
    let _m = Mounted(live.join("mnt"));
    fs::write(live.join("mnt/inside"), "on another fs").unwrap();
    let ck = t.path().join("ck");
    let s = snapshot(&live, &ck, None, &no_skip).unwrap();
    assert_eq!(s.entries, 2, "{s:?}");
    assert!(!ck.join("layer/mnt").exists());
    // The restore leaves the mount point (not in the checkpoint) alone.
    restore(&live, &ck, &no_skip).unwrap();
    assert_eq!(
        fs::read_to_string(live.join("mnt/inside")).unwrap(),
        "on another fs"
    );
    assert!(changed(&ck, Against::Live(&live), &no_skip)
        .unwrap()
        .is_empty());
}

#[test]
fn a_checkpoint_inside_its_layer_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    fs::create_dir_all(live.join("sub")).unwrap();
    let e = snapshot(&live, &live.join("sub/ck"), None, &no_skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside the layer"), "{e}");
    assert!(!live.join("sub/ck").exists());
    let ck = t.path().join("ck");
    snapshot(&live, &ck, None, &no_skip).unwrap();
    // A checkpoint moved inside the layer would be removed by its own restore.
    fs::rename(&ck, live.join("ck")).unwrap();
    let e = restore(&live, &live.join("ck"), &no_skip)
        .unwrap_err()
        .to_string();
    assert!(e.contains("inside the layer"), "{e}");
    assert!(live.join("ck").join(MANIFEST).exists());
}

/// Timing, by hand: `cargo test --release --lib snapshot_timing -- --ignored --nocapture`.
/// A layer of 10,000 files (100 directories of 100) checkpointed once,
/// then 100 of them changed and checkpointed again with the first as `prev`.
#[test]
#[ignore]
fn snapshot_timing() {
    let t = tempfile::tempdir().unwrap();
    let live = t.path().join("live");
    for d in 0..100 {
        fs::create_dir_all(live.join(format!("d{d}"))).unwrap();
        for f in 0..100 {
            fs::write(live.join(format!("d{d}/f{f}")), [b'x'; 1000]).unwrap();
        }
    }
    settle();
    let root = t.path().join("checkpoints");
    let start = std::time::Instant::now();
    snapshot(&live, &root.join("c1"), None, &no_skip).unwrap();
    eprintln!(
        "first snapshot (10,000 files copied): {:?}",
        start.elapsed()
    );
    for round in 2..6 {
        for f in 0..100 {
            let d = (f * 7 + round) % 100;
            fs::write(live.join(format!("d{d}/f{f}")), format!("round {round}")).unwrap();
        }
        settle();
        let prev = root.join(format!("c{}", round - 1));
        let start = std::time::Instant::now();
        let s = snapshot(
            &live,
            &root.join(format!("c{round}")),
            Some(&prev),
            &no_skip,
        )
        .unwrap();
        eprintln!(
            "snapshot c{round} (100 changed): {:?} {s:?}",
            start.elapsed()
        );
    }
}
