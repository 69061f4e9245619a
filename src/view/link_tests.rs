//! Hard links in the view core, driven directly (no mount): one file under
//! every name, unlink and rename of one name, errno and scope rules, the
//! quota, a reopen from the journal, and direct views.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use super::tests::{found, no_backing};
use super::*;
use crate::grant::{resolve, GrantRequest};
use crate::policy::Policy;

const ROOTUSER: Caller = Caller { uid: 0, gid: 0 };

struct Fx {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    host: std::path::PathBuf,
    session: std::path::PathBuf,
    grant: Grant,
}

/// A host tree (`a.txt`, `d/b.txt`, `secret.key`, denied) granted in `mode`.
fn fixture(mode: Mode, prefixes: &[&str], policy: Policy) -> Fx {
    let host_dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let host = host_dir.path().to_path_buf();
    for (f, c) in [
        ("a.txt", "alpha\n"),
        ("d/b.txt", "beta\n"),
        ("secret.key", "s"),
    ] {
        fs::create_dir_all(host.join(f).parent().unwrap()).unwrap();
        fs::write(host.join(f), c).unwrap();
    }
    let req = GrantRequest {
        deny: vec!["*.key".into()],
        write_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        ..GrantRequest::for_test(&host, mode)
    };
    let mut policy = policy;
    policy.allowed_modes.push(mode);
    let grant = resolve(&req, &policy, &crate::clock::SystemClock).unwrap();
    let session = state.path().join("s");
    fs::create_dir_all(&session).unwrap();
    Fx {
        _dirs: (host_dir, state),
        host,
        session,
        grant,
    }
}

fn overlay_fx() -> Fx {
    fixture(
        Mode::ReadWriteOverlay,
        &[],
        Policy::builtin_default().unwrap(),
    )
}

fn open_view(fx: &Fx) -> View {
    View::new(&fx.grant, Some(&fx.session), ViewOptions::default()).unwrap()
}

fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// The attributes of the entry at `path`, by lookups from the root (as
/// the kernel finds it).
fn stat(v: &View, path: &str) -> Result<Attr> {
    let mut a = v.getattr(ROOT)?.attr;
    for seg in path.split('/') {
        a = found(v.lookup(a.ino, name(seg))?)?.attr;
    }
    Ok(a)
}

/// Whether `name` in `dir` is absent (a negative entry).
fn absent(v: &View, dir: Ino, leaf: &str) -> bool {
    matches!(v.lookup(dir, name(leaf)), Ok(Lookup::Absent { .. }))
}

fn ino(v: &View, path: &str) -> Ino {
    stat(v, path)
        .unwrap_or_else(|e| panic!("{path}: {e:?}"))
        .ino
}

/// `link(2)` of `from` as `to`.
fn link(v: &View, from: &str, to: &str) -> Result<Entry> {
    let (dir, leaf) = to.rsplit_once('/').unwrap_or(("", to));
    let dir = if dir.is_empty() { ROOT } else { ino(v, dir) };
    v.link(ino(v, from), dir, name(leaf))
}

fn read_all(v: &View, path: &str) -> Vec<u8> {
    let o = v.open(ino(v, path), libc::O_RDONLY, no_backing).unwrap();
    let data = v.read(o.fh, 0, 1 << 20).unwrap();
    v.release(o.fh);
    data
}

fn write_at(v: &View, path: &str, offset: u64, data: &[u8]) {
    let o = v.open(ino(v, path), libc::O_WRONLY, no_backing).unwrap();
    v.write(o.fh, offset, data, false).unwrap();
    v.release(o.fh);
}

/// Waits until the file system clock has moved past `t` (ctime ticks are
/// coarse), so a change made afterwards shows a later ctime.
fn after_tick(dir: &std::path::Path, t: SystemTime) {
    let probe = dir.join("tick");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        fs::write(&probe, "").unwrap();
        let now = fs::metadata(&probe).unwrap();
        let now =
            SystemTime::UNIX_EPOCH + Duration::new(now.ctime() as u64, now.ctime_nsec() as u32);
        if now > t {
            return;
        }
        assert!(Instant::now() < deadline, "the clock did not move");
        std::thread::yield_now();
    }
}

#[test]
fn a_link_is_the_same_file_under_two_names() {
    let fx = overlay_fx();
    let v = open_view(&fx);
    let before = stat(&v, "a.txt").unwrap();
    assert_eq!(before.nlink, 1);
    after_tick(&fx.session, before.ctime);
    let linked = link(&v, "a.txt", "d/a2.txt").unwrap();
    // One file: one number, two names, a new ctime.
    assert_eq!((linked.ino, linked.nlink), (before.ino, 2));
    assert!(linked.ctime > before.ctime, "ctime unchanged by link");
    let a2 = stat(&v, "d/a2.txt").unwrap();
    assert_eq!((a2.ino, a2.nlink, a2.size), (before.ino, 2, 6));
    assert_eq!(v.getattr(before.ino).unwrap().nlink, 2);
    // What is written through one name is read through the other, also
    // through a handle opened before the write.
    let reader = v
        .open(ino(&v, "a.txt"), libc::O_RDONLY, no_backing)
        .unwrap();
    write_at(&v, "d/a2.txt", 0, b"ALPHA");
    assert_eq!(read_all(&v, "a.txt"), b"ALPHA\n");
    assert_eq!(v.read(reader.fh, 0, 100).unwrap(), b"ALPHA\n");
    v.release(reader.fh);
    // A listing shows both names with the file's number.
    let fh = v.opendir(ino(&v, "d")).unwrap().fh;
    let listed: Vec<(String, Ino, u32)> = v
        .readdir(ino(&v, "d"), fh, 2)
        .unwrap()
        .into_iter()
        .map(|(_, e)| (e.name.to_string(), e.ino, e.attr.nlink))
        .collect();
    v.releasedir(fh);
    let b = ino(&v, "d/b.txt");
    assert_eq!(
        listed,
        vec![("a2.txt".into(), before.ino, 2), ("b.txt".into(), b, 1)]
    );
    // The host never changed.
    assert_eq!(fs::read(fx.host.join("a.txt")).unwrap(), b"alpha\n");
    assert!(!fx.host.join("d/a2.txt").exists());
}

#[test]
fn unlinking_one_name_leaves_the_others_and_open_handles() {
    let fx = overlay_fx();
    let v = open_view(&fx);
    let file = ino(&v, "a.txt");
    link(&v, "a.txt", "b1").unwrap();
    link(&v, "b1", "d/b2").unwrap();
    assert_eq!(stat(&v, "d/b2").unwrap().nlink, 3);
    let open = v.open(file, libc::O_RDWR, no_backing).unwrap();
    // A listing opened before the unlink still lists the other names.
    let fh = v.opendir(ROOT).unwrap().fh;
    let t0 = v.getattr(file).unwrap().ctime;
    after_tick(&fx.session, t0);
    v.unlink(ROOT, name("a.txt")).unwrap();
    let listed: Vec<String> = v
        .readdir(ROOT, fh, 2)
        .unwrap()
        .into_iter()
        .map(|(_, e)| e.name.to_string())
        .collect();
    v.releasedir(fh);
    assert_eq!(listed, ["b1", "d"]);
    assert!(absent(&v, ROOT, "a.txt"));
    let left = stat(&v, "b1").unwrap();
    assert_eq!(
        (left.ino, left.nlink),
        (file, 2),
        "same file, one name less"
    );
    assert!(left.ctime > t0, "ctime unchanged by unlink");
    v.write(open.fh, 0, b"A", false).unwrap();
    assert_eq!(read_all(&v, "d/b2"), b"Alpha\n");
    v.unlink(ROOT, name("b1")).unwrap();
    assert_eq!(stat(&v, "d/b2").unwrap().nlink, 1);
    // The last name gone: the open handle still works, with no names.
    v.unlink(ino(&v, "d"), name("b2")).unwrap();
    v.write(open.fh, 1, b"L", false).unwrap();
    assert_eq!(v.read(open.fh, 0, 100).unwrap(), b"ALpha\n");
    assert_eq!(v.getattr_fh(file, open.fh).unwrap().nlink, 0);
    v.release(open.fh);
    assert_eq!(v.getattr(file).unwrap_err(), Errno::ENOENT);
    assert_eq!(v.overlay().unwrap().quota.objects(), 0, "object dropped");
}

#[test]
fn rename_over_a_link_and_onto_another_name_of_the_same_file() {
    let fx = overlay_fx();
    let v = open_view(&fx);
    let file = ino(&v, "a.txt");
    link(&v, "a.txt", "l").unwrap();
    // One name onto another of the same file: nothing happens (POSIX).
    v.rename(ROOT, name("a.txt"), ROOT, name("l"), 0).unwrap();
    v.rename(ROOT, name("l"), ROOT, name("a.txt"), 2).unwrap();
    assert_eq!(
        v.rename(ROOT, name("l"), ROOT, name("a.txt"), 1)
            .unwrap_err()
            .errno()
            .0,
        libc::EEXIST,
        "RENAME_NOREPLACE onto another name of the file, as Linux answers"
    );
    assert_eq!((ino(&v, "a.txt"), ino(&v, "l")), (file, file));
    assert_eq!(v.getattr(file).unwrap().nlink, 2);
    // Another file renamed over a link: the linked file loses that name.
    let b = ino(&v, "d/b.txt");
    v.rename(ino(&v, "d"), name("b.txt"), ROOT, name("l"), 0)
        .unwrap();
    assert_eq!(ino(&v, "l"), b);
    assert_eq!(v.getattr(file).unwrap().nlink, 1);
    assert_eq!(read_all(&v, "a.txt"), b"alpha\n");
    // A link renamed elsewhere stays a name of its file.
    link(&v, "a.txt", "d/x").unwrap();
    v.rename(ino(&v, "d"), name("x"), ROOT, name("y"), 0)
        .unwrap();
    assert_eq!((ino(&v, "y"), v.getattr(file).unwrap().nlink), (file, 2));
    // And the file's first name renamed over its link's directory entry.
    v.rename(ROOT, name("a.txt"), ROOT, name("l"), 0).unwrap();
    assert_eq!((ino(&v, "l"), ino(&v, "y")), (file, file));
    assert_eq!(v.getattr(file).unwrap().nlink, 2);
    assert_eq!(read_all(&v, "l"), b"alpha\n");
}

#[test]
fn link_answers_create_errnos_and_keeps_hidden_names_hidden() {
    let fx = fixture(
        Mode::ReadWriteOverlay,
        &["d"],
        Policy::builtin_default().unwrap(),
    );
    let v = open_view(&fx);
    let d = ino(&v, "d");
    let a = ino(&v, "a.txt");
    let b = ino(&v, "d/b.txt");
    let err = |r: Result<Entry>| r.unwrap_err().errno().0;
    assert_eq!(err(v.link(b, d, name("b.txt"))), libc::EEXIST);
    assert_eq!(
        err(v.link(b, ROOT, name("b2"))),
        libc::EACCES,
        "out of scope"
    );
    // Linux's order: EPERM for a directory before the view's scope.
    assert_eq!(err(v.link(d, ROOT, name("d2"))), libc::EPERM);
    assert_eq!(err(v.link(d, d, name("d2"))), libc::EPERM, "a directory");
    assert_eq!(err(v.link(b, b, name("x"))), libc::ENOTDIR);
    assert_eq!(err(v.link(b, d, name("no/slash"))), libc::EINVAL);
    assert_eq!(err(v.link(b, 9999, name("x"))), libc::ENOENT);
    // The new name must be in the write scope, and the file one the
    // agent may change (writes through the new name would change it).
    assert_eq!(err(v.link(b, ROOT, name("b.txt"))), libc::EACCES);
    assert_eq!(err(v.link(a, d, name("a.txt"))), libc::EACCES);
    // A denied name stays unreachable: not a link target (it cannot be
    // looked up), nor a new name (as for create).
    assert!(absent(&v, ROOT, "secret.key"));
    assert_eq!(err(v.link(b, d, name("new.key"))), libc::EACCES);
    v.symlink(d, name("sl"), b"b.txt", ROOTUSER).unwrap();
    assert_eq!(err(v.link(ino(&v, "d/sl"), d, name("sl2"))), libc::EPERM);
    // Nothing was made.
    assert_eq!(v.getattr(b).unwrap().nlink, 1);
    assert_eq!(v.overlay().unwrap().quota.objects(), 1, "only the symlink");
    // An unlinked file cannot get a name back.
    let (attr, o) = v
        .create(d, name("tmp"), 0o644, ROOTUSER, no_backing)
        .unwrap();
    v.unlink(d, name("tmp")).unwrap();
    assert_eq!(err(v.link(attr.ino, d, name("back"))), libc::ENOENT);
    v.release(o.fh);
}

#[test]
fn a_policy_refusing_hard_links_refuses_link() {
    let mut policy = Policy::builtin_default().unwrap();
    policy.allow_hardlinks = false;
    let fx = fixture(Mode::ReadWriteOverlay, &[], policy);
    let v = open_view(&fx);
    assert_eq!(link(&v, "a.txt", "a2").unwrap_err(), Errno::EPERM);
    assert!(absent(&v, ROOT, "a2"));
}

#[test]
fn links_count_their_bytes_once_and_survive_a_reopen() {
    let fx = overlay_fx();
    let v = open_view(&fx);
    write_at(&v, "a.txt", 0, &[b'x'; 5000]);
    let q = &v.overlay().unwrap().quota;
    let (bytes, objects) = (q.bytes() - q.journal_bytes(), q.objects());
    link(&v, "a.txt", "l1").unwrap();
    link(&v, "a.txt", "d/l2").unwrap();
    assert_eq!(q.bytes() - q.journal_bytes(), bytes, "data counted once");
    assert_eq!(q.objects(), objects);
    v.unlink(ROOT, name("a.txt")).unwrap();
    assert_eq!(
        q.bytes() - q.journal_bytes(),
        bytes,
        "kept for the other names"
    );
    let want = stat(&v, "l1").unwrap();
    drop(v);

    // Replayed (and compacted) at the next open: one file, two names.
    let v = open_view(&fx);
    let (l1, l2) = (stat(&v, "l1").unwrap(), stat(&v, "d/l2").unwrap());
    assert_eq!((l1.ino, l1.nlink, l1.size), (l2.ino, 2, want.size));
    assert!(absent(&v, ROOT, "a.txt"));
    write_at(&v, "l1", 0, b"y");
    assert_eq!(read_all(&v, "d/l2")[..2], *b"yx");
    let q = &v.overlay().unwrap().quota;
    assert_eq!(
        (q.bytes() - q.journal_bytes(), q.objects()),
        (bytes, objects)
    );
}

#[test]
fn direct_views_link_on_the_host_and_log_it() {
    let mut policy = Policy::builtin_default().unwrap();
    policy.allowed_modes.push(Mode::ReadWriteDirect);
    let fx = fixture(Mode::ReadWriteDirect, &[], policy);
    let v = open_view(&fx);
    let a = link(&v, "a.txt", "d/a2").unwrap();
    assert_eq!((a.nlink, ino(&v, "d/a2")), (2, ino(&v, "a.txt")));
    let (ha, hb) = (
        fs::metadata(fx.host.join("a.txt")).unwrap(),
        fs::metadata(fx.host.join("d/a2")).unwrap(),
    );
    assert_eq!((ha.ino(), ha.nlink()), (hb.ino(), 2));
    v.unlink(ROOT, name("a.txt")).unwrap();
    assert_eq!(stat(&v, "d/a2").unwrap().nlink, 1);
    assert_eq!(fs::metadata(fx.host.join("d/a2")).unwrap().nlink(), 1);
    let log = fs::read_to_string(fx.session.join("events.jsonl")).unwrap();
    let line = log.lines().find(|l| l.contains("\"link\"")).unwrap();
    assert!(line.contains("a.txt") && line.contains("d/a2"), "{line}");
}
