//! The view core driven directly, without a mount.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::symlink;
use std::time::Duration;

use super::*;
use crate::clock::{ManualClock, SystemClock};
use crate::grant::{resolve, GrantRequest};
use crate::policy::Policy;

struct Fixture {
    _host: tempfile::TempDir,
    root: std::path::PathBuf,
    view: View,
}

fn fixture(ttl: Option<Duration>) -> Fixture {
    fixture_on(ttl, ManualClock::new(SystemTime::now()))
}

/// The fixture's grant made at `clock`'s now, its view judging expiry by
/// `clock`.
fn fixture_on(ttl: Option<Duration>, clock: ManualClock) -> Fixture {
    let host = tempfile::tempdir().unwrap();
    let root = host.path().to_path_buf();
    for (f, c) in [
        ("README.md", "readme\n"),
        ("src/pay.py", "def pay():\n    return 1\n"),
        ("src/deep/er/x.txt", "x"),
        (".env", "SECRET=1"),
        ("secrets/public.txt", "hidden"),
        ("src/.env", "SECRET=2"),
    ] {
        fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
        fs::write(root.join(f), c).unwrap();
    }
    symlink("pay.py", root.join("src/link")).unwrap();
    let req = GrantRequest {
        deny: vec!["secrets".into()],
        ttl,
        ..GrantRequest::for_test(&root, Mode::ReadOnly)
    };
    let grant = resolve(&req, &Policy::builtin_default().unwrap(), &clock).unwrap();
    let opts = ViewOptions {
        clock: clock.shared(),
        ..ViewOptions::default()
    };
    let view = View::new(&grant, None, opts).unwrap();
    Fixture {
        _host: host,
        root,
        view,
    }
}

/// Passthrough is never negotiated here, so nothing is registered.
pub(super) fn no_backing(_: &File) -> std::io::Result<()> {
    Err(std::io::ErrorKind::Unsupported.into())
}

fn names(v: &View, ino: Ino) -> Vec<String> {
    let fh = v.opendir(ino).unwrap().fh;
    let mut out = Vec::new();
    let mut offset = 0;
    loop {
        let batch = v.readdir(ino, fh, offset).unwrap();
        let Some((last, _)) = batch.last() else { break };
        offset = *last;
        out.extend(batch.iter().map(|(_, e)| e.name.to_string()));
    }
    v.releasedir(fh);
    out
}

/// The entry of a name, ENOENT if it is absent.
pub(super) fn found(l: Lookup) -> Result<Entry> {
    match l {
        Lookup::Found(e) => Ok(e),
        Lookup::Absent { .. } => Err(Errno::ENOENT.into()),
    }
}

fn lookup_path(v: &View, path: &str) -> Result<Entry> {
    let mut ino = ROOT;
    let mut entry = v.getattr(ROOT)?;
    for seg in path.split('/') {
        entry = found(v.lookup(ino, OsStr::new(seg))?)?;
        ino = entry.ino;
    }
    Ok(entry)
}

/// A host directory removed under the view lists nothing, not even its
/// dots (as a removed directory does on Linux).
#[test]
fn a_host_directory_gone_lists_nothing() {
    let f = fixture(None);
    let v = &f.view;
    let er = lookup_path(v, "src/deep/er").unwrap();
    assert_eq!(names(v, er.ino), vec![".", "..", "x.txt"]);
    fs::remove_dir_all(f.root.join("src/deep/er")).unwrap();
    assert_eq!(names(v, er.ino), Vec::<String>::new());
}

#[test]
fn lists_exactly_the_granted_tree() {
    let f = fixture(None);
    let v = &f.view;
    assert_eq!(names(v, ROOT), vec![".", "..", "README.md", "src"]);
    let src = lookup_path(v, "src").unwrap();
    assert_eq!(src.kind, Kind::Dir);
    assert_eq!(src.nlink, 3);
    assert_eq!(src.size, DIR_SIZE);
    assert_eq!(names(v, src.ino), vec![".", "..", "deep", "link", "pay.py"]);
    let pay = lookup_path(v, "src/pay.py").unwrap();
    assert_eq!(pay.size, 24);
    assert_eq!(pay.nlink, 1);
    assert_eq!(lookup_path(v, "src/link").unwrap().kind, Kind::Symlink);
}

/// A read-only view's names are fixed: a name outside the grant stays
/// absent, so the kernel may remember it until expiry (here an hour away,
/// sooner than `NAME_TTL`).
#[test]
fn absent_names_are_negative_entries_kept_until_expiry() {
    let f = fixture(Some(Duration::from_secs(3600)));
    let v = &f.view;
    let ttl = ViewOptions::default().cache_ttl;
    for name in ["nothing", ".env", "secrets"] {
        match v.lookup(ROOT, OsStr::new(name)).unwrap() {
            Lookup::Absent { ttl: t } => assert!(
                t > Duration::from_secs(3000) && t <= Duration::from_secs(3601),
                "{name}: {t:?}"
            ),
            other => panic!("{name}: {other:?}"),
        }
    }
    let readme = lookup_path(v, "README.md").unwrap();
    assert!(readme.ttl <= ttl && readme.ttl > ttl / 2);
    // Not a negative entry: an overlong name is an error.
    let long = "x".repeat(256);
    assert_eq!(
        v.lookup(ROOT, OsStr::new(&long)).unwrap_err(),
        Errno(libc::ENAMETOOLONG)
    );
}

#[test]
fn denied_names_are_enoent_everywhere() {
    let f = fixture(None);
    let v = &f.view;
    for p in [
        ".env",
        "secrets",
        "secrets/public.txt",
        "src/.env",
        "nothing",
    ] {
        assert_eq!(lookup_path(v, p).unwrap_err(), Errno::ENOENT, "{p}");
    }
    // Inode numbers never handed out answer ENOENT too.
    let bogus = 1_000_000;
    assert_eq!(v.getattr(bogus).unwrap_err(), Errno::ENOENT);
    assert_eq!(
        v.open(bogus, libc::O_RDONLY, no_backing).unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(v.opendir(bogus).unwrap_err(), Errno::ENOENT);
    assert_eq!(v.readlink(bogus).unwrap_err(), Errno::ENOENT);
    assert_eq!(
        v.getxattr(bogus, OsStr::new("user.x"), || true)
            .unwrap_err(),
        Errno::ENOENT
    );
    assert_eq!(v.listxattr(bogus, || true).unwrap_err(), Errno::ENOENT);
    let root = Caller { uid: 0, gid: 0 };
    assert_eq!(
        v.setattr(bogus, None, SetAttr::default(), root)
            .unwrap_err(),
        Errno::ENOENT
    );
}

#[test]
fn reads_come_from_the_host() {
    let f = fixture(None);
    let v = &f.view;
    let pay = lookup_path(v, "src/pay.py").unwrap();
    let fh = v.open(pay.ino, libc::O_RDONLY, no_backing).unwrap().fh;
    assert_eq!(v.read(fh, 0, 4096).unwrap(), b"def pay():\n    return 1\n");
    assert_eq!(v.read(fh, 4, 3).unwrap(), b"pay");
    assert_eq!(v.read(fh, 1000, 10).unwrap(), b"");
    v.release(fh);
    assert_eq!(v.read(fh, 0, 1).unwrap_err(), Errno::EBADF);
    let link = lookup_path(v, "src/link").unwrap();
    assert_eq!(v.readlink(link.ino).unwrap(), b"pay.py");
    assert_eq!(v.readlink(pay.ino).unwrap_err(), Errno::EINVAL);
    assert_eq!(
        v.open(ROOT, libc::O_RDONLY, no_backing).unwrap_err(),
        Errno::EISDIR
    );
    assert_eq!(v.opendir(pay.ino).unwrap_err(), Errno::ENOTDIR);
}

#[test]
fn read_only_opens_share_the_host_file() {
    let f = fixture(None);
    let v = &f.view;
    let pay = lookup_path(v, "src/pay.py").unwrap();
    let o = v.open(pay.ino, libc::O_RDONLY, no_backing).unwrap();
    assert!(matches!(o.serve, Serve::PageCache { keep: false }));
    v.release(o.fh);
    v.use_passthrough(true);
    let mut registered = 0;
    let mut register = |_: &File| {
        registered += 1;
        Ok(registered)
    };
    let a = v.open(pay.ino, libc::O_RDONLY, &mut register).unwrap();
    let b = v.open(pay.ino, libc::O_RDONLY, &mut register).unwrap();
    match (&a.serve, &b.serve) {
        (Serve::Passthrough(x), Serve::Passthrough(y)) => assert!(Arc::ptr_eq(x, y)),
        other => panic!("{other:?}"),
    }
    assert_eq!(registered, 1);
    v.release(a.fh);
    v.release(b.fh);
}

#[test]
fn read_only_refuses_every_write() {
    let f = fixture(None);
    let v = &f.view;
    let pay = lookup_path(v, "src/pay.py").unwrap();
    for flags in [libc::O_WRONLY, libc::O_RDWR, libc::O_RDONLY | libc::O_TRUNC] {
        assert_eq!(
            v.open(pay.ino, flags, no_backing).unwrap_err(),
            Errno::EROFS
        );
    }
    let root = Caller { uid: 0, gid: 0 };
    let chmod = SetAttr {
        mode: Some(0o600),
        ..SetAttr::default()
    };
    assert_eq!(
        v.setattr(pay.ino, None, chmod, root).unwrap_err(),
        Errno::EROFS
    );
    assert_eq!(
        v.mkdir(ROOT, OsStr::new("d"), 0o755, root).unwrap_err(),
        Errno::EROFS
    );
    assert_eq!(
        v.unlink(ROOT, OsStr::new("README.md")).unwrap_err(),
        Errno::EROFS
    );
    assert_eq!(
        v.access(pay.ino, libc::W_OK, 0, 0).unwrap_err(),
        Errno::EROFS
    );
    assert!(v.access(pay.ino, libc::R_OK, 0, 0).is_ok());
}

#[test]
fn access_checks_mode_bits() {
    let f = fixture(None);
    let v = &f.view;
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(f.root.join("README.md"), fs::Permissions::from_mode(0o640)).unwrap();
    let a = lookup_path(v, "README.md").unwrap();
    assert!(v.access(a.ino, libc::R_OK, a.uid, a.gid).is_ok());
    assert!(v.access(a.ino, libc::R_OK, a.uid + 1, a.gid).is_ok());
    assert_eq!(
        v.access(a.ino, libc::R_OK, a.uid + 1, a.gid + 1)
            .unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(
        v.access(a.ino, libc::X_OK, 0, 0).unwrap_err(),
        Errno::EACCES
    );
    assert!(v.access(a.ino, libc::F_OK, 12345, 12345).is_ok());
}

#[test]
fn host_changes_show_through_and_removals_are_enoent() {
    let f = fixture(None);
    let v = &f.view;
    fs::write(f.root.join("README.md"), "changed on the host\n").unwrap();
    assert_eq!(lookup_path(v, "README.md").unwrap().size, 20);
    fs::remove_file(f.root.join("src/pay.py")).unwrap();
    assert_eq!(lookup_path(v, "src/pay.py").unwrap_err(), Errno::ENOENT);
    assert!(!names(v, lookup_path(v, "src").unwrap().ino).contains(&"pay.py".to_string()));
    // A new host file is not granted, so it stays invisible.
    fs::write(f.root.join("src/new.py"), "x").unwrap();
    assert_eq!(lookup_path(v, "src/new.py").unwrap_err(), Errno::ENOENT);
    // A granted file replaced by a symlink (to a secret) is refused.
    fs::remove_file(f.root.join("README.md")).unwrap();
    symlink(".env", f.root.join("README.md")).unwrap();
    assert_eq!(lookup_path(v, "README.md").unwrap_err(), Errno::ENOENT);
    // A directory replaced by a symlink leading out is refused all the way down.
    fs::rename(f.root.join("src"), f.root.join("src.old")).unwrap();
    symlink("/etc", f.root.join("src")).unwrap();
    assert_eq!(lookup_path(v, "src").unwrap_err(), Errno::ENOENT);
    assert_eq!(
        lookup_path(v, "src/deep/er/x.txt").unwrap_err(),
        Errno::ENOENT
    );
}

/// A grant of 10 s made at T, judged by a clock the test moves.
fn expiring() -> (Fixture, ManualClock, SystemTime) {
    let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
    let clock = ManualClock::new(start);
    let f = fixture_on(Some(Duration::from_secs(10)), clock.clone());
    (f, clock, start + Duration::from_secs(10))
}

#[test]
fn a_view_answers_until_its_grant_expires() {
    let (f, clock, expiry) = expiring();
    let v = &f.view;
    clock.set(expiry - Duration::from_nanos(1));
    let readme = lookup_path(v, "README.md").unwrap();
    assert_eq!(v.getattr(readme.ino).unwrap().size, 7);
    let fh = v.open(readme.ino, libc::O_RDONLY, no_backing).unwrap().fh;
    assert_eq!(v.read(fh, 0, 100).unwrap(), b"readme\n");
    // Dead at its expires_at: even a handle opened before answers EACCES.
    clock.set(expiry);
    assert_eq!(v.read(fh, 0, 100).unwrap_err(), Errno::EACCES);
    assert_eq!(v.getattr_fh(readme.ino, fh).unwrap_err(), Errno::EACCES);
    assert_eq!(v.getattr(ROOT).unwrap_err(), Errno::EACCES);
    assert_eq!(
        v.lookup(ROOT, OsStr::new("README.md")).unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(v.opendir(ROOT).unwrap_err(), Errno::EACCES);
    assert_eq!(v.statfs().unwrap_err(), Errno::EACCES);
    assert_eq!(v.listxattr(ROOT, || true).unwrap_err(), Errno::EACCES);
    let root = Caller { uid: 0, gid: 0 };
    assert_eq!(
        v.mkdir(ROOT, OsStr::new("d"), 0o755, root).unwrap_err(),
        Errno::EACCES
    );
    assert_eq!(v.ttl(), Duration::ZERO);
    clock.advance(Duration::from_secs(3600));
    assert_eq!(lookup_path(v, "README.md").unwrap_err(), Errno::EACCES);
}

#[test]
fn cache_lifetimes_never_reach_past_expiry() {
    let (f, clock, expiry) = expiring();
    let v = &f.view;
    let mut owned = lookup_path(v, "README.md").unwrap().attr;
    owned.owned = true;
    // Far from expiry: the configured lifetimes (1 s, and OWNED_TTL for
    // what the daemon owns) would cross it, so both end at expiry.
    assert_eq!(v.ttl(), Duration::from_secs(1));
    assert_eq!(v.entry(owned).ttl, Duration::from_secs(10));
    for left in [1_500, 1_000, 999, 1, 0] {
        clock.set(expiry - Duration::from_millis(left));
        let left = Duration::from_millis(left);
        assert_eq!(v.ttl(), left.min(Duration::from_secs(1)), "{left:?} left");
        assert_eq!(v.entry(owned).ttl, left, "{left:?} left");
    }
    clock.advance(Duration::from_secs(5));
    assert_eq!(
        (v.ttl(), v.entry(owned).ttl),
        (Duration::ZERO, Duration::ZERO)
    );
}

#[test]
fn a_view_without_expiry_keeps_its_cache_lifetimes() {
    let clock = ManualClock::new(SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000));
    let f = fixture_on(None, clock.clone());
    clock.advance(Duration::from_secs(10 * 365 * 86_400));
    let mut a = lookup_path(&f.view, "README.md").unwrap().attr;
    assert_eq!(f.view.entry(a).ttl, Duration::from_secs(1));
    a.owned = true;
    assert_eq!(f.view.entry(a).ttl, OWNED_TTL);
}

#[test]
fn statfs_and_xattrs() {
    let f = fixture(None);
    let v = &f.view;
    let s = v.statfs().unwrap();
    assert_eq!(s.files, 8); // root, README.md, src, deep, er, x.txt, link, pay.py
                            // The view's size, nothing free: never the host filesystem's numbers.
    let size = 7 + 24 + 1 + 6; // README.md, pay.py, x.txt, link -> pay.py
    assert_eq!((s.bsize, s.frsize), (4096, 4096));
    assert_eq!(s.blocks, (size as u64).div_ceil(4096));
    assert_eq!((s.bfree, s.bavail, s.ffree), (0, 0, 0));
    let readme = lookup_path(v, "README.md").unwrap();
    let p = f.root.join("README.md");
    let set = rustix::fs::setxattr(&p, "user.wopfs", b"v1", rustix::fs::XattrFlags::empty());
    if set.is_ok() {
        assert_eq!(
            v.getxattr(readme.ino, OsStr::new("user.wopfs"), || false)
                .unwrap(),
            b"v1"
        );
        let list = v.listxattr(readme.ino, || false).unwrap();
        assert!(list.split(|b| *b == 0).any(|n| n == b"user.wopfs"));
    }
    assert_eq!(
        v.getxattr(readme.ino, OsStr::new("user.none"), || false)
            .unwrap_err(),
        Errno::ENODATA
    );
    let link = lookup_path(v, "src/link").unwrap();
    assert_eq!(v.listxattr(link.ino, || false).unwrap(), b"");
}

#[test]
fn privileged_xattr_names_are_shown_only_to_privileged_callers() {
    let f = fixture(None);
    let v = &f.view;
    let p = f.root.join("README.md");
    let flags = rustix::fs::XattrFlags::empty();
    // trusted.* needs CAP_SYS_ADMIN to set (and to list) on the host.
    if rustix::fs::setxattr(&p, "trusted.wopfs", b"t", flags).is_err() {
        eprintln!("skipped: cannot set trusted.* here");
        return;
    }
    let _ = rustix::fs::setxattr(&p, "user.wopfs", b"u", flags);
    let readme = lookup_path(v, "README.md").unwrap();
    let names = |privileged: bool| -> Vec<Vec<u8>> {
        v.listxattr(readme.ino, || privileged)
            .unwrap()
            .split(|b| *b == 0)
            .filter(|n| !n.is_empty())
            .map(<[u8]>::to_vec)
            .collect()
    };
    assert!(names(true).contains(&b"trusted.wopfs".to_vec()));
    let plain = names(false);
    assert!(!plain.contains(&b"trusted.wopfs".to_vec()), "{plain:?}");
    assert!(plain.iter().all(|n| !n.starts_with(b"trusted.")));
    let trusted = OsStr::new("trusted.wopfs");
    assert_eq!(v.getxattr(readme.ino, trusted, || true).unwrap(), b"t");
    assert_eq!(
        v.getxattr(readme.ino, trusted, || false).unwrap_err(),
        Errno::ENODATA
    );
    // The privilege is asked only when a privileged name is there.
    let src = lookup_path(v, "src/pay.py").unwrap();
    let _ = v
        .listxattr(src.ino, || panic!("asked without a privileged name"))
        .unwrap();
    assert!(xattr_needs_privilege("trusted.x"));
    assert!(xattr_needs_privilege("system.nfs4_acl"));
    assert!(xattr_needs_privilege("weird"));
    assert!(!xattr_needs_privilege("user.x"));
    assert!(!xattr_needs_privilege("security.selinux"));
    assert!(!xattr_needs_privilege("system.posix_acl_access"));
}

/// A grant whose policy refuses hard links: a granted file that the host
/// turns into another name of a secret after the grant is never served.
#[test]
fn refused_hard_links_are_not_served_even_when_made_after_the_grant() {
    let host = tempfile::tempdir().unwrap();
    let root = host.path().to_path_buf();
    fs::create_dir_all(root.join("src")).unwrap();
    fs::write(root.join(".env"), "SECRET=1").unwrap();
    fs::write(root.join("src/a.py"), "a = 1\n").unwrap();
    fs::write(root.join("src/b.py"), "b = 1\n").unwrap();
    let req = GrantRequest::for_test(&root, Mode::ReadOnly);
    let mut policy = Policy::builtin_default().unwrap();
    policy.allow_hardlinks = false;
    let strict = View::new(
        &resolve(&req, &policy, &SystemClock).unwrap(),
        None,
        ViewOptions::default(),
    )
    .unwrap();
    let default = View::new(
        &resolve(&req, &Policy::builtin_default().unwrap(), &SystemClock).unwrap(),
        None,
        ViewOptions::default(),
    )
    .unwrap();
    fs::remove_file(root.join("src/a.py")).unwrap();
    fs::hard_link(root.join(".env"), root.join("src/a.py")).unwrap();
    let a = lookup_path(&strict, "src/a.py").unwrap().ino;
    assert_eq!(
        strict.open(a, libc::O_RDONLY, no_backing).unwrap_err(),
        Errno::ENOENT
    );
    let b = lookup_path(&strict, "src/b.py").unwrap().ino;
    let o = strict.open(b, libc::O_RDONLY, no_backing).unwrap();
    assert_eq!(strict.read(o.fh, 0, 100).unwrap(), b"b = 1\n");
    strict.release(o.fh);
    // Where the policy allows hard links, the content is live, link or not.
    let a = lookup_path(&default, "src/a.py").unwrap().ino;
    let o = default.open(a, libc::O_RDONLY, no_backing).unwrap();
    assert_eq!(default.read(o.fh, 0, 100).unwrap(), b"SECRET=1");
    default.release(o.fh);
}
