//! The write half of the view core, driven directly (no mount): errno
//! rules, scope, quotas, copy-up bases, and a reopen from the journal.

use std::ffi::OsStr;
use std::fs;

use super::tests::no_backing;
use super::*;
use crate::grant::{resolve, GrantRequest};
use crate::policy::Policy;

pub(super) const ROOTUSER: Caller = Caller { uid: 0, gid: 0 };

pub(super) struct Fx {
    _dirs: (tempfile::TempDir, tempfile::TempDir),
    pub(super) host: std::path::PathBuf,
    pub(super) session: std::path::PathBuf,
    pub(super) grant: Grant,
}

pub(super) fn fixture(prefixes: &[&str]) -> Fx {
    fixture_with(prefixes, &[])
}

/// The fixture's host tree plus `extra` files.
pub(super) fn fixture_with(prefixes: &[&str], extra: &[(&str, &str)]) -> Fx {
    let host_dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let host = host_dir.path().to_path_buf();
    for &(f, c) in [
        ("a.txt", "alpha\n"),
        ("d/b.txt", "beta\n"),
        ("d/e/c.txt", "gamma\n"),
    ]
    .iter()
    .chain(extra)
    {
        fs::create_dir_all(host.join(f).parent().unwrap()).unwrap();
        fs::write(host.join(f), c).unwrap();
    }
    let req = GrantRequest {
        write_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
        ..GrantRequest::for_test(&host, Mode::ReadWriteOverlay)
    };
    let grant = resolve(
        &req,
        &Policy::builtin_default().unwrap(),
        &crate::clock::SystemClock,
    )
    .unwrap();
    let session = state.path().join("s");
    fs::create_dir_all(&session).unwrap();
    Fx {
        _dirs: (host_dir, state),
        host,
        session,
        grant,
    }
}

pub(super) fn open_view(fx: &Fx, opts: ViewOptions) -> View {
    View::new(&fx.grant, Some(&fx.session), opts).unwrap()
}

pub(super) fn ino(v: &View, path: &str) -> Ino {
    v.read_tree()
        .lookup_path(path)
        .unwrap_or_else(|| panic!("{path} missing"))
}

/// What the view has seen of the host files it changed.
fn seen_by(v: &View) -> crate::overlay::journal::SeenMap {
    v.seen.lock().unwrap().clone()
}

pub(super) fn name(s: &str) -> &OsStr {
    OsStr::new(s)
}

fn listing(v: &View) -> Vec<String> {
    let t = v.read_tree();
    let mut out: Vec<String> = t
        .subtree(ROOT)
        .into_iter()
        .skip(1)
        .filter_map(|i| t.path(i))
        .collect();
    out.sort();
    out
}

fn read_all(v: &View, path: &str) -> Vec<u8> {
    let o = v.open(ino(v, path), libc::O_RDONLY, no_backing).unwrap();
    let data = v.read(o.fh, 0, 1 << 20).unwrap();
    v.release(o.fh);
    data
}

fn write_file(v: &View, parent: &str, file: &str, data: &[u8]) -> Result<()> {
    let (_, o) = v.create(ino(v, parent), name(file), 0o644, ROOTUSER, no_backing)?;
    let r = v.write(o.fh, 0, data, false).map(drop);
    v.release(o.fh);
    r
}

/// What `.gitignore` ignores on the host is not in the view, but nothing
/// stops the agent from making the same names: an ignored file it creates
/// (a build's output, say) is just a new file of the overlay, pending like
/// any other. Its host namesake stays invisible.
#[test]
fn ignored_names_are_created_like_any_new_file() {
    let fx = fixture_with(
        &[],
        &[
            (".gitignore", "target/\n*.o\n"),
            ("target/old.bin", "host build output"),
            ("d/x.o", "host object"),
        ],
    );
    let v = open_view(&fx, ViewOptions::default());
    assert_eq!(
        listing(&v),
        vec![".gitignore", "a.txt", "d", "d/b.txt", "d/e", "d/e/c.txt"]
    );
    v.mkdir(ROOT, name("target"), 0o755, ROOTUSER).unwrap();
    write_file(&v, "target", "new.bin", b"agent build output").unwrap();
    write_file(&v, "d", "y.o", b"agent object").unwrap();
    assert_eq!(read_all(&v, "target/new.bin"), b"agent build output");
    let absent = |l: Lookup| matches!(l, Lookup::Absent { .. });
    assert!(absent(
        v.lookup(ino(&v, "target"), name("old.bin")).unwrap()
    ));
    assert!(absent(v.lookup(ino(&v, "d"), name("x.o")).unwrap()));
    let pending: Vec<(String, crate::patch::Op)> = crate::patch::pending(&fx.grant, &fx.session)
        .unwrap()
        .into_iter()
        .filter(|p| p.kind == crate::tree::Kind::File)
        .map(|p| (p.path, p.op))
        .collect();
    assert_eq!(
        pending,
        vec![
            ("d/y.o".to_string(), crate::patch::Op::Create),
            ("target/new.bin".to_string(), crate::patch::Op::Create),
        ]
    );
    // The host never changed.
    assert!(!fx.host.join("target/new.bin").exists());
}

#[test]
fn rename_answers_posix_errnos() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    let d = ino(&v, "d");
    v.mkdir(ROOT, name("empty"), 0o755, ROOTUSER).unwrap();
    let err = |r: Result<()>| r.unwrap_err().errno().0;
    assert_eq!(
        err(v.rename(ROOT, name("d"), ino(&v, "d/e"), name("x"), 0)),
        libc::EINVAL
    );
    assert_eq!(
        err(v.rename(ROOT, name("empty"), ROOT, name("d"), 0)),
        libc::ENOTEMPTY
    );
    assert_eq!(
        err(v.rename(ROOT, name("empty"), ROOT, name("a.txt"), 0)),
        libc::ENOTDIR
    );
    assert_eq!(
        err(v.rename(ROOT, name("a.txt"), ROOT, name("empty"), 0)),
        libc::EISDIR
    );
    assert_eq!(
        err(v.rename(ROOT, name("a.txt"), d, name("b.txt"), 1)),
        libc::EEXIST
    );
    assert_eq!(
        err(v.rename(ROOT, name("nope"), ROOT, name("x"), 0)),
        libc::ENOENT
    );
    assert_eq!(
        err(v.rename(ROOT, name("a.txt"), ROOT, name("z"), 2)),
        libc::ENOENT
    );
    assert_eq!(
        err(v.rename(ROOT, name("a.txt"), ROOT, name("z"), 3)),
        libc::EINVAL
    );
    let long = "x".repeat(256);
    assert_eq!(
        err(v.rename(ROOT, name("a.txt"), ROOT, name(&long), 0)),
        libc::ENAMETOOLONG
    );
    // Exchange swaps, a plain rename replaces.
    v.rename(ROOT, name("a.txt"), d, name("b.txt"), 2).unwrap();
    assert_eq!(read_all(&v, "a.txt"), b"beta\n");
    assert_eq!(read_all(&v, "d/b.txt"), b"alpha\n");
    v.rename(d, name("b.txt"), ROOT, name("a.txt"), 0).unwrap();
    assert_eq!(read_all(&v, "a.txt"), b"alpha\n");
    assert!(!listing(&v).contains(&"d/b.txt".to_string()));
    // Removing the root's entries by their errno rules.
    assert_eq!(
        v.rmdir(ROOT, name("d")).unwrap_err().errno().0,
        libc::ENOTEMPTY
    );
    assert_eq!(
        v.rmdir(ROOT, name("a.txt")).unwrap_err().errno().0,
        libc::ENOTDIR
    );
    assert_eq!(
        v.unlink(ROOT, name("d")).unwrap_err().errno().0,
        libc::EISDIR
    );
    assert_eq!(
        v.link(ino(&v, "d"), ROOT, name("d2")).unwrap_err(),
        Errno::EPERM
    );
    assert_eq!(
        v.mkdir(ROOT, name("d"), 0o755, ROOTUSER)
            .unwrap_err()
            .errno()
            .0,
        libc::EEXIST
    );
}

#[test]
fn out_of_scope_names_are_eacces_and_leave_nothing() {
    let fx = fixture(&["out"]);
    let v = open_view(&fx, ViewOptions::default());
    let before = listing(&v);
    assert_eq!(
        write_file(&v, "d", "x.txt", b"x").unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(
        v.mkdir(ROOT, name(".git"), 0o755, ROOTUSER).unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(
        v.symlink(ROOT, name("l"), b"a.txt", ROOTUSER).unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(
        v.rename(ROOT, name("a.txt"), ROOT, name("z.txt"), 0)
            .unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(listing(&v), before);
    let objects = fx.session.join("overlay/objects");
    let left: usize = fs::read_dir(&objects)
        .unwrap()
        .map(|d| fs::read_dir(d.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(left, 0, "an object was left behind");
    // Existing files outside the prefix may not change either.
    assert_eq!(
        v.open(ino(&v, "d/b.txt"), libc::O_WRONLY, no_backing)
            .unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(
        v.unlink(ino(&v, "d"), name("b.txt")).unwrap_err(),
        Errno::EACCES
    );
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    assert_eq!(
        v.setattr(ino(&v, "a.txt"), None, chmod, ROOTUSER)
            .unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(
        v.setxattr(ino(&v, "a.txt"), name("user.x"), b"1", 0)
            .unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(listing(&v), before);
    // Inside the prefix: fine.
    v.mkdir(ROOT, name("out"), 0o755, ROOTUSER).unwrap();
    write_file(&v, "out", "x.txt", b"x").unwrap();
    let o = v
        .open(
            ino(&v, "out/x.txt"),
            libc::O_WRONLY | libc::O_TRUNC,
            no_backing,
        )
        .unwrap();
    v.write(o.fh, 0, b"X", false).unwrap();
    v.release(o.fh);
    assert_eq!(read_all(&v, "out/x.txt"), b"X");
    assert_eq!(
        fs::read_to_string(fx.host.join("d/b.txt")).unwrap(),
        "beta\n"
    );
}

#[test]
fn copy_up_records_the_base_and_reopen_replays_the_journal() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    let o = v
        .open(
            ino(&v, "a.txt"),
            libc::O_WRONLY | libc::O_APPEND,
            no_backing,
        )
        .unwrap();
    v.write(o.fh, 6, b"more\n", false).unwrap();
    v.release(o.fh);
    v.rename(ROOT, name("d"), ROOT, name("renamed"), 0).unwrap();
    v.unlink(ino(&v, "renamed/e"), name("c.txt")).unwrap();
    write_file(&v, "", "new.txt", b"new\n").unwrap();
    let seen = seen_by(&v);
    let want = format!("blake3:{}", blake3::hash(b"alpha\n").to_hex());
    assert_eq!(seen["a.txt"].base.as_deref(), Some(want.as_str()));
    assert!(
        seen.contains_key("d/b.txt") && seen.contains_key("d/e/c.txt"),
        "{seen:?}"
    );
    let before = listing(&v);
    drop(v);

    let v = open_view(&fx, ViewOptions::default());
    assert_eq!(listing(&v), before);
    assert_eq!(read_all(&v, "a.txt"), b"alpha\nmore\n");
    assert_eq!(read_all(&v, "renamed/b.txt"), b"beta\n");
    assert_eq!(read_all(&v, "new.txt"), b"new\n");
    assert_eq!(seen_by(&v), seen);
    // The host never changed.
    assert_eq!(
        fs::read_to_string(fx.host.join("a.txt")).unwrap(),
        "alpha\n"
    );
    assert!(fx.host.join("d/e/c.txt").exists());
}

/// A chmod of the view's root copies its metadata up: the journal's put of
/// the root (path "") puts the root back at replay and in a compaction,
/// never a child with an empty name.
#[test]
fn chmod_of_the_root_survives_reopen_and_compaction() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    let who = Caller { uid: 0, gid: 0 };
    let set = |mode| SetAttr {
        mode: Some(mode),
        ..Default::default()
    };
    v.setattr(ROOT, None, set(0o40700), who).unwrap();
    let before = listing(&v);
    drop(v);
    // Reopened twice: the first replays the journal and compacts it, the
    // second replays the compacted journal.
    for _ in 0..2 {
        let v = open_view(&fx, ViewOptions::default());
        assert_eq!(v.getattr(ROOT).unwrap().perm, 0o700);
        assert_eq!(listing(&v), before);
        assert!(matches!(
            v.lookup(ROOT, name("")).unwrap(),
            Lookup::Absent { .. }
        ));
    }
}

#[test]
fn quotas_refuse_whole_writes() {
    let fx = fixture(&[]);
    let v = open_view(
        &fx,
        ViewOptions {
            quota_bytes: Some(1000),
            quota_files: Some(3),
            ..ViewOptions::default()
        },
    );
    v.mkdir(ROOT, name("m"), 0o755, ROOTUSER).unwrap();
    let (_, o) = v
        .create(ROOT, name("f"), 0o644, ROOTUSER, no_backing)
        .unwrap();
    // The byte quota holds the journal too: what is left is for data.
    let room = 1000 - v.overlay().unwrap().quota.journal_bytes() as usize;
    v.write(o.fh, 0, &[1; 60], false).unwrap();
    assert_eq!(
        v.write(o.fh, 60, &vec![2; room - 59], false)
            .unwrap_err()
            .errno()
            .0,
        libc::EDQUOT
    );
    assert_eq!(
        v.write(o.fh, 10_000, &[2; 1], false).unwrap_err().errno().0,
        libc::EDQUOT
    );
    v.write(o.fh, 60, &vec![2; room - 60], false).unwrap();
    v.release(o.fh);
    assert_eq!(read_all(&v, "f").len(), room);
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    // The bytes are used up: copying a.txt up is refused, and leaves no object.
    let a = ino(&v, "a.txt");
    assert_eq!(
        v.setattr(a, None, chmod, ROOTUSER).unwrap_err().errno().0,
        libc::EDQUOT
    );
    let shrink = SetAttr {
        size: Some(50),
        ..SetAttr::default()
    };
    v.setattr(ino(&v, "f"), None, shrink, ROOTUSER).unwrap();
    // Now the copy-up fits: the third object; a fourth is refused.
    v.setattr(a, None, chmod, ROOTUSER).unwrap();
    assert_eq!(
        v.mkdir(ROOT, name("n"), 0o755, ROOTUSER)
            .unwrap_err()
            .errno()
            .0,
        libc::EDQUOT
    );
    // statfs: the entries the view shows, no object left; 100 bytes used
    // of a 100-byte quota, besides the granted files.
    let s = v.statfs().unwrap();
    assert_eq!(s.ffree, 0);
    assert_eq!(s.files, v.read_tree().len() as u64);
    assert_eq!((s.bfree, s.bavail), (0, 0));
    let granted: u64 = fx.grant.files.iter().map(|f| f.size_bytes).sum();
    assert_eq!(
        s.blocks,
        (granted + v.overlay().unwrap().quota.bytes()).div_ceil(4096)
    );
}

#[test]
fn read_only_and_expired_views_refuse_writes() {
    let mut fx = fixture(&[]);
    fx.grant.mode = Mode::ReadOnly;
    let v = View::new(&fx.grant, None, ViewOptions::default()).unwrap();
    assert_eq!(
        v.mkdir(ROOT, name("x"), 0o755, ROOTUSER).unwrap_err(),
        Errno::EROFS
    );
    assert_eq!(v.unlink(ROOT, name("a.txt")).unwrap_err(), Errno::EROFS);
    assert_eq!(
        v.rename(ROOT, name("a.txt"), ROOT, name("b"), 0)
            .unwrap_err(),
        Errno::EROFS
    );
    assert_eq!(
        v.setxattr(ROOT, name("user.x"), b"1", 0).unwrap_err(),
        Errno::EROFS
    );
    fx.grant.mode = Mode::ReadWriteOverlay;
    fx.grant.expires_at = Some("2000-01-01T00:00:00Z".into());
    let v = open_view(&fx, ViewOptions::default());
    assert_eq!(
        v.mkdir(ROOT, name("x"), 0o755, ROOTUSER).unwrap_err(),
        Errno::EACCES
    );
}

/// A name unlinked (or moved) after `opendir` is not listed by a later
/// `readdir`: listing it would make the kernel cache a dentry for a
/// removed inode, and the next create of that name would fail.
#[test]
fn readdir_leaves_out_names_removed_since_opendir() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    let d = ino(&v, "d");
    write_file(&v, "d", "made.txt", b"m").unwrap();
    let fh = v.opendir(d).unwrap().fh;
    v.unlink(d, name("made.txt")).unwrap();
    v.unlink(d, name("b.txt")).unwrap();
    v.rename(d, name("e"), ROOT, name("e2"), 0).unwrap();
    write_file(&v, "d", "made.txt", b"again").unwrap();
    let listed: Vec<(String, Ino)> = v
        .readdir(d, fh, 0)
        .unwrap()
        .into_iter()
        .map(|(_, e)| (e.name.to_string(), e.ino))
        .collect();
    v.releasedir(fh);
    let names: Vec<&str> = listed.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        vec![".", ".."],
        "removed, moved and re-made names are left out"
    );
    // A batch filtered to nothing before the end still goes on.
    let fh = v.opendir(ROOT).unwrap().fh;
    let all = v.readdir(ROOT, fh, 0).unwrap();
    assert!(all.iter().any(|(_, e)| &*e.name == "e2"));
    v.releasedir(fh);
}

#[test]
fn sizes_past_the_largest_file_are_efbig_before_the_quota() {
    let fx = fixture(&[]);
    let v = open_view(
        &fx,
        ViewOptions {
            quota_bytes: Some(100_000),
            ..ViewOptions::default()
        },
    );
    let (_, o) = v
        .create(ROOT, name("f"), 0o644, ROOTUSER, no_backing)
        .unwrap();
    let f = ino(&v, "f");
    let size = |n| SetAttr {
        size: Some(n),
        ..SetAttr::default()
    };
    let err = |r: Result<()>| r.unwrap_err().errno().0;
    let a = ino(&v, "a.txt");
    for n in [u64::MAX, MAX_FILE_SIZE + 1] {
        let efbig = |r: Result<Entry>| r.map(drop).unwrap_err().errno().0;
        assert_eq!(efbig(v.setattr(f, None, size(n), ROOTUSER)), libc::EFBIG);
        assert_eq!(
            efbig(v.setattr(f, Some(o.fh), size(n), ROOTUSER)),
            libc::EFBIG
        );
        assert_eq!(efbig(v.setattr(a, None, size(n), ROOTUSER)), libc::EFBIG);
    }
    // Refused before anything: a.txt was not copied up.
    assert_eq!(v.overlay().unwrap().quota.objects(), 1);
    // A size a file may have, past the quota.
    assert_eq!(
        err(v.setattr(f, None, size(MAX_FILE_SIZE), ROOTUSER).map(drop)),
        libc::EDQUOT
    );
    assert_eq!(
        err(v.write(o.fh, MAX_FILE_SIZE, b"x", false).map(drop)),
        libc::EFBIG
    );
    assert_eq!(
        err(v.write(o.fh, u64::MAX, b"x", false).map(drop)),
        libc::EFBIG
    );
    assert_eq!(err(v.fallocate(o.fh, MAX_FILE_SIZE, 1, 0)), libc::EFBIG);
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    assert_eq!(err(v.fallocate(o.fh, 0, u64::MAX, keep)), libc::EFBIG);
    assert_eq!(err(v.fallocate(o.fh, 0, MAX_FILE_SIZE, 0)), libc::EDQUOT);
    v.release(o.fh);
    assert!(read_all(&v, "f").is_empty());
    assert_eq!(
        v.overlay().unwrap().quota.objects(),
        1,
        "a.txt was copied up"
    );
}

#[test]
fn xattrs_outside_user_are_not_supported_and_acls_absent() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    let a = ino(&v, "a.txt");
    for n in [
        "system.posix_acl_access",
        "system.posix_acl_default",
        "trusted.x",
        "security.x",
        "other.x",
    ] {
        assert_eq!(
            v.setxattr(a, name(n), b"1", 0).unwrap_err().errno().0,
            libc::EOPNOTSUPP,
            "{n}"
        );
        assert_eq!(
            v.removexattr(a, name(n)).unwrap_err().errno().0,
            libc::EOPNOTSUPP,
            "{n}"
        );
    }
    assert_eq!(
        v.getxattr(a, name("system.posix_acl_access"), || true)
            .unwrap_err()
            .errno()
            .0,
        libc::EOPNOTSUPP
    );
    v.setxattr(a, name("user.k"), b"v", 0).unwrap();
    assert_eq!(v.getxattr(a, name("user.k"), || false).unwrap(), b"v");
}

/// What the model test (`tests/model`) found: the errno order of Linux,
/// where the kernel's checks come before the filesystem's (the write
/// scope, then a directory's entries), and create(2)'s set-id bits.
#[test]
fn errnos_in_linux_order_and_set_id_bits_kept() {
    let fx = fixture(&["out"]);
    let v = open_view(&fx, ViewOptions::default());
    let err = |r: Result<()>| r.unwrap_err().errno().0;
    // Outside the prefix, but the kernel's answers come first.
    assert_eq!(
        err(v.rename(ROOT, name("a.txt"), ROOT, name("a.txt"), 1)),
        libc::EEXIST
    );
    assert_eq!(
        err(v.rename(ROOT, name("a.txt"), ROOT, name("nope"), 2)),
        libc::ENOENT
    );
    let e = ino(&v, "d/e");
    assert_eq!(
        err(v.rename(e, name("c.txt"), ROOT, name("d"), 0)),
        libc::ENOTEMPTY,
        "over an ancestor of the source"
    );
    // The scope before the directory's entries.
    assert_eq!(err(v.rmdir(ROOT, name("d"))), libc::EACCES);
    v.mkdir(ROOT, name("out"), 0o755, ROOTUSER).unwrap();
    let (a, o) = v
        .create(
            ino(&v, "out"),
            name("tool"),
            0o4755,
            Caller {
                uid: 1000,
                gid: 1000,
            },
            super::tests::no_backing,
        )
        .unwrap();
    v.release(o.fh);
    assert_eq!(a.perm, 0o4755, "the chown to the caller keeps set-id bits");
}

/// Fifos, sockets and devices are not part of a source tree: `mknod` of
/// any of them answers EPERM and leaves nothing; a regular file (with or
/// without `S_IFREG`) is made as by `create`.
#[test]
fn mknod_of_fifos_sockets_and_devices_is_eperm() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    let before = listing(&v);
    for (kind, what) in [
        (libc::S_IFIFO, "fifo"),
        (libc::S_IFSOCK, "socket"),
        (libc::S_IFCHR, "char device"),
        (libc::S_IFBLK, "block device"),
    ] {
        assert_eq!(
            v.mknod(ROOT, name("n"), kind | 0o644, ROOTUSER)
                .unwrap_err(),
            Errno::EPERM,
            "{what}"
        );
    }
    assert_eq!(listing(&v), before);
    assert_eq!(v.overlay().unwrap().quota.objects(), 0);
    let made = v
        .mknod(ROOT, name("plain"), libc::S_IFREG | 0o640, ROOTUSER)
        .unwrap();
    assert_eq!((made.kind, made.perm), (Kind::File, 0o640));
    let made = v.mknod(ROOT, name("untyped"), 0o600, ROOTUSER).unwrap();
    assert_eq!((made.kind, made.perm), (Kind::File, 0o600));
}

/// Under a set-group-id directory (a host one or one made in the view), a
/// new file and a new directory take the directory's group, not the
/// caller's, and the new directory is set-group-id too; elsewhere new
/// entries take the caller's group.
#[test]
fn new_entries_under_a_setgid_directory_take_its_group() {
    use std::os::unix::fs::PermissionsExt;
    const DIR_GID: u32 = 4242;
    let agent = Caller {
        uid: 1000,
        gid: 1000,
    };
    let fx = fixture(&[]);
    let host_d = fx.host.join("d");
    std::os::unix::fs::chown(&host_d, None, Some(DIR_GID)).unwrap();
    fs::set_permissions(&host_d, fs::Permissions::from_mode(0o2777)).unwrap();
    let v = open_view(&fx, ViewOptions::default());
    let made = v.mkdir(ROOT, name("m"), 0o777, ROOTUSER).unwrap();
    let set_gid = SetAttr {
        mode: Some(libc::S_ISGID | 0o777),
        gid: Some(DIR_GID),
        ..SetAttr::default()
    };
    v.setattr(made.ino, None, set_gid, ROOTUSER).unwrap();
    for dir in ["d", "m"] {
        let parent = ino(&v, dir);
        let (file, o) = v
            .create(parent, name("f"), 0o644, agent, no_backing)
            .unwrap();
        v.release(o.fh);
        assert_eq!((file.uid, file.gid), (1000, DIR_GID), "{dir}/f");
        assert_eq!(u32::from(file.perm) & libc::S_ISGID, 0, "{dir}/f");
        let sub = v.mkdir(parent, name("sub"), 0o755, agent).unwrap();
        assert_eq!((sub.uid, sub.gid), (1000, DIR_GID), "{dir}/sub");
        assert_ne!(u32::from(sub.perm) & libc::S_ISGID, 0, "{dir}/sub");
        // And so on down: the new directory passes both on.
        let deeper = v.mkdir(sub.ino, name("deeper"), 0o755, agent).unwrap();
        assert_eq!(deeper.gid, DIR_GID, "{dir}/sub/deeper");
        assert_ne!(u32::from(deeper.perm) & libc::S_ISGID, 0);
    }
    // Not set-group-id: the caller's group, and no set-group-id bit.
    let (file, o) = v.create(ROOT, name("f"), 0o644, agent, no_backing).unwrap();
    v.release(o.fh);
    assert_eq!((file.uid, file.gid), (1000, 1000));
    let sub = v.mkdir(ROOT, name("plain"), 0o755, agent).unwrap();
    assert_eq!(sub.gid, 1000);
    assert_eq!(u32::from(sub.perm) & libc::S_ISGID, 0);
}

/// A change of an unlinked open file arrives without a handle, and goes
/// through one of the file's open handles: never a reader's that still
/// holds the host file (opened before the copy-up, or whose release has
/// not arrived), which would change the host. Readers are many here, so
/// picking the wrong handle would be likely.
#[test]
fn a_change_of_an_unlinked_file_never_reaches_the_host_through_a_reader() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    let a = ino(&v, "a.txt");
    let readers: Vec<u64> = (0..8)
        .map(|_| v.open(a, libc::O_RDONLY, no_backing).unwrap().fh)
        .collect();
    let w = v.open(a, libc::O_RDWR, no_backing).unwrap();
    v.unlink(ROOT, name("a.txt")).unwrap();
    let host_mode = || {
        use std::os::unix::fs::PermissionsExt;
        fs::metadata(fx.host.join("a.txt"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777
    };
    let before = host_mode();
    for mode in [0o600, 0o640, 0o604] {
        let set = SetAttr {
            mode: Some(mode),
            ..SetAttr::default()
        };
        let e = v.setattr(a, None, set, ROOTUSER).unwrap();
        assert_eq!(u32::from(e.attr.perm), mode, "the object took the change");
        assert_eq!(host_mode(), before, "the host file was changed");
    }
    v.release(w.fh);
    for r in readers {
        v.release(r);
    }
}
