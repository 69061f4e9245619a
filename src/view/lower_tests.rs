//! The kernel engine's lower (`ViewOptions::overlay_lower`) and the kernel
//! caches of views whose names are fixed, driven without a mount: the lower
//! is read-only whatever the grant, writes nothing, answers xattr reads
//! ENOSYS; names get long lifetimes where they cannot change; the kernel
//! keeps only listings whose changes it sees.

use std::fs;
use std::time::Duration;

use super::tests::no_backing;
use super::write_tests::{fixture, ino, name, open_view, Fx, ROOTUSER};
use super::*;
use crate::clock::ManualClock;

/// The lower of the fixture's grant in `mode`, given the session directory
/// as a mount would give it.
fn lower(fx: &Fx, mode: Mode) -> View {
    let mut grant = fx.grant.clone();
    grant.mode = mode;
    let opts = ViewOptions {
        overlay_lower: true,
        ..ViewOptions::default()
    };
    View::new(&grant, Some(&fx.session), opts).unwrap()
}

fn read_only(fx: &Fx) -> View {
    let mut grant = fx.grant.clone();
    grant.mode = Mode::ReadOnly;
    View::new(&grant, None, ViewOptions::default()).unwrap()
}

fn errno<T: std::fmt::Debug>(r: Result<T>) -> i32 {
    r.unwrap_err().errno().0
}

#[test]
fn the_lower_refuses_every_change_and_writes_nothing() {
    let fx = fixture(&[]);
    for mode in [Mode::ReadWriteOverlay, Mode::ReadWriteDirect] {
        let v = lower(&fx, mode);
        let (a, d, e) = (ino(&v, "a.txt"), ino(&v, "d"), ino(&v, "d/e"));
        let chmod = SetAttr {
            mode: Some(0o600),
            ..SetAttr::default()
        };
        let truncate = SetAttr {
            size: Some(0),
            ..SetAttr::default()
        };
        let refused = [
            (
                "create",
                errno(v.create(ROOT, name("n"), 0o644, ROOTUSER, no_backing)),
            ),
            ("mknod", errno(v.mknod(ROOT, name("n"), 0o644, ROOTUSER))),
            ("mkdir", errno(v.mkdir(ROOT, name("n"), 0o755, ROOTUSER))),
            ("symlink", errno(v.symlink(ROOT, name("n"), b"a", ROOTUSER))),
            ("unlink", errno(v.unlink(ROOT, name("a.txt")))),
            ("rmdir", errno(v.rmdir(d, name("e")))),
            (
                "rename",
                errno(v.rename(ROOT, name("a.txt"), e, name("n"), 0)),
            ),
            ("link", errno(v.link(a, d, name("n")))),
            ("chmod", errno(v.setattr(a, None, chmod, ROOTUSER))),
            ("chmod dir", errno(v.setattr(d, None, chmod, ROOTUSER))),
            ("truncate", errno(v.setattr(a, None, truncate, ROOTUSER))),
            (
                "open O_WRONLY",
                errno(v.open(a, libc::O_WRONLY, no_backing)),
            ),
            ("open O_RDWR", errno(v.open(a, libc::O_RDWR, no_backing))),
            ("open O_TRUNC", errno(v.open(a, libc::O_TRUNC, no_backing))),
            ("setxattr", errno(v.setxattr(a, name("user.k"), b"v", 0))),
            ("removexattr", errno(v.removexattr(a, name("user.k")))),
            ("access W_OK", errno(v.access(a, libc::W_OK, 0, 0))),
        ];
        for (op, got) in refused {
            assert_eq!(got, libc::EROFS, "{mode:?}: {op}");
        }
        // Reads are served as in a read-only view, passthrough included.
        assert!(v.wants_passthrough(), "{mode:?}");
        let o = v.open(a, libc::O_RDONLY, no_backing).unwrap();
        assert_eq!(v.read(o.fh, 0, 64).unwrap(), b"alpha\n");
        assert_eq!(errno(v.write(o.fh, 0, b"x", false)), libc::EBADF);
        v.release(o.fh);
        assert_eq!(v.statfs().unwrap().bfree, 0, "{mode:?}: nothing free");
        v.shutdown();
    }
    let made: Vec<_> = fs::read_dir(&fx.session).unwrap().collect();
    assert!(made.is_empty(), "the session dir got {made:?}");
    assert_eq!(fs::read(fx.host.join("a.txt")).unwrap(), b"alpha\n");
    assert!(fx.host.join("d/e/c.txt").exists());
    assert!(!fx.host.join("n").exists() && !fx.host.join("d/e/n").exists());
}

/// Overlayfs asks the lower for its private attributes; ENOSYS turns the
/// questions off, and no host attribute, an `*.overlay.*` one least of
/// all, is ever read for it.
#[test]
fn the_lower_answers_xattr_reads_enosys() {
    let fx = fixture(&[]);
    let set = |path: &str, n: &str| {
        rustix::fs::lsetxattr(fx.host.join(path), n, b"y", rustix::fs::XattrFlags::empty())
    };
    set("a.txt", "user.k").unwrap();
    set("d", "user.overlay.opaque").unwrap();
    // trusted.* needs CAP_SYS_ADMIN; the ENOSYS answers below do not.
    let _ = set("d", "trusted.overlay.opaque");
    // The same grant read-only shows the host's attributes...
    let ro = read_only(&fx);
    let got = ro.getxattr(ino(&ro, "a.txt"), name("user.k"), || true);
    assert_eq!(got.unwrap(), b"y");
    // ...the lower never does.
    let v = lower(&fx, Mode::ReadWriteOverlay);
    let no_privilege_asked = || -> bool { panic!("the lower asked for the caller's privilege") };
    for (path, x) in [
        ("a.txt", "user.k"),
        ("a.txt", "trusted.overlay.metacopy"),
        ("d", "trusted.overlay.origin"),
        ("d", "trusted.overlay.opaque"),
        ("d", "user.overlay.opaque"),
        ("d", "security.capability"),
    ] {
        let got = v.getxattr(ino(&v, path), name(x), no_privilege_asked);
        assert_eq!(errno(got), libc::ENOSYS, "getxattr {path} {x}");
    }
    for path in ["a.txt", "d", "d/e/c.txt"] {
        let got = v.listxattr(ino(&v, path), no_privilege_asked);
        assert_eq!(errno(got), libc::ENOSYS, "listxattr {path}");
    }
    let d = ino(&v, "d");
    assert_eq!(
        errno(v.setxattr(d, name("trusted.overlay.opaque"), b"y", 0)),
        libc::EROFS
    );
    assert_eq!(
        errno(v.removexattr(d, name("user.overlay.opaque"))),
        libc::EROFS
    );
}

/// Where names are fixed (a read-only view, the lower), a name and a name
/// the grant lacks are cached for `NAME_TTL`; attributes, readdirplus
/// entries and granted names missing on the host keep `cache_ttl`. A
/// writable view keeps `cache_ttl` for names too.
#[test]
fn fixed_names_are_cached_long_and_attributes_are_not() {
    let fx = fixture(&[]);
    let ttl = ViewOptions::default().cache_ttl;
    let (ro, low) = (read_only(&fx), lower(&fx, Mode::ReadWriteOverlay));
    for v in [&ro, &low] {
        let Lookup::Found(e) = v.lookup(ROOT, name("a.txt")).unwrap() else {
            panic!("a.txt absent")
        };
        assert_eq!((e.ttl, e.name_ttl), (ttl, NAME_TTL));
        let dir = v.getattr(ino(v, "d")).unwrap();
        assert_eq!((dir.ttl, dir.name_ttl), (ttl, NAME_TTL));
        for absent in ["nope", ".env", "a.txt.swp"] {
            let got = v.lookup(ROOT, name(absent)).unwrap();
            assert_eq!(got, Lookup::Absent { ttl: NAME_TTL }, "{absent}");
        }
        let fh = v.opendir(ROOT).unwrap().fh;
        let listed = v.readdir(ROOT, fh, 0).unwrap();
        v.releasedir(fh);
        // The dots' attributes are never used by the kernel (attr::dot).
        let (dots, named): (Vec<_>, Vec<_>) = listed
            .iter()
            .partition(|(_, e)| matches!(&*e.name, "." | ".."));
        assert!(!named.is_empty() && named.iter().all(|(_, e)| e.ttl == ttl));
        assert_eq!(dots.len(), 2);
        assert!(dots
            .iter()
            .all(|(_, e)| e.ttl.is_zero() && e.attr.kind == Kind::Dir));
    }
    // A granted host file may vanish and come back: not remembered long.
    fs::remove_file(fx.host.join("d/b.txt")).unwrap();
    for v in [&ro, &low] {
        let got = v.lookup(ino(v, "d"), name("b.txt")).unwrap();
        assert_eq!(got, Lookup::Absent { ttl });
    }
    fs::write(fx.host.join("d/b.txt"), "back\n").unwrap();
    assert!(matches!(
        ro.lookup(ino(&ro, "d"), name("b.txt")).unwrap(),
        Lookup::Found(_)
    ));
    let w = open_view(&fx, ViewOptions::default());
    let Lookup::Found(e) = w.lookup(ROOT, name("a.txt")).unwrap() else {
        panic!("a.txt absent")
    };
    assert_eq!((e.ttl, e.name_ttl), (ttl, ttl));
    assert_eq!(
        w.lookup(ROOT, name("nope")).unwrap(),
        Lookup::Absent { ttl }
    );
}

#[test]
fn name_lifetimes_end_at_expiry() {
    let mut fx = fixture(&[]);
    fx.grant.mode = Mode::ReadOnly;
    fx.grant.expires_at = Some("2030-01-01T00:00:00Z".into());
    let expiry = fx.grant.expires_at_time().unwrap().unwrap();
    let clock = ManualClock::new(expiry - Duration::from_secs(100));
    let opts = ViewOptions {
        clock: clock.shared(),
        ..ViewOptions::default()
    };
    let v = View::new(&fx.grant, None, opts).unwrap();
    for left in [Duration::from_secs(100), Duration::from_millis(1)] {
        clock.set(expiry - left);
        let Lookup::Found(e) = v.lookup(ROOT, name("a.txt")).unwrap() else {
            panic!("a.txt absent")
        };
        assert_eq!(
            (e.ttl, e.name_ttl),
            (left.min(Duration::from_secs(1)), left)
        );
        let absent = v.lookup(ROOT, name("nope")).unwrap();
        assert_eq!(absent, Lookup::Absent { ttl: left });
    }
    clock.set(expiry);
    assert_eq!(errno(v.lookup(ROOT, name("a.txt"))), libc::EACCES);
}

/// The kernel may keep a listing where every change of its names reaches
/// it (see `View::opendir`): everywhere in a view whose names are fixed;
/// in a writable view, host directories (a host change moves their
/// mtime), not directories that are overlay objects.
#[test]
fn the_kernel_keeps_listings_whose_changes_it_sees() {
    let fx = fixture(&[]);
    let cached = |v: &View, path: &str| {
        let dir = v.opendir(ino(v, path)).unwrap();
        v.releasedir(dir.fh);
        dir.cache_listing
    };
    for v in [&read_only(&fx), &lower(&fx, Mode::ReadWriteOverlay)] {
        assert!(["", "d", "d/e"].iter().all(|p| cached(v, p)));
    }
    let w = open_view(&fx, ViewOptions::default());
    w.mkdir(ROOT, name("made"), 0o755, ROOTUSER).unwrap();
    let chmod = SetAttr {
        mode: Some(0o700),
        ..SetAttr::default()
    };
    w.setattr(ino(&w, "d/e"), None, chmod, ROOTUSER).unwrap();
    w.unlink(ino(&w, "d"), name("b.txt")).unwrap();
    let got: Vec<_> = ["", "d", "d/e", "made"]
        .iter()
        .map(|p| (*p, cached(&w, p)))
        .collect();
    assert_eq!(
        got,
        [("", true), ("d", true), ("d/e", false), ("made", false)],
        "host dirs (changed or not) are kept; the copied-up d/e and the new dir are not"
    );
}
