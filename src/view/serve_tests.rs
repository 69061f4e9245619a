//! How the core tells the kernel to serve open handles (`serve.rs`),
//! driven with a stand-in for the kernel's backing-file registration.

use std::cell::RefCell;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Weak};

use super::write_tests::{fixture, ino, name, open_view, ROOTUSER};
use super::*;

/// A registered backing file: the file the kernel would read and write.
struct Backing(File);

/// Counts registrations; `refuse` answers them as an unprivileged daemon gets.
#[derive(Default)]
struct Kernel {
    registered: RefCell<u32>,
    refuse: bool,
}

impl Kernel {
    fn register(&self) -> impl FnOnce(&File) -> io::Result<Backing> + '_ {
        move |file| {
            *self.registered.borrow_mut() += 1;
            if self.refuse {
                return Err(io::Error::from_raw_os_error(libc::EPERM));
            }
            Ok(Backing(file.try_clone()?))
        }
    }

    fn registered(&self) -> u32 {
        *self.registered.borrow()
    }
}

fn passthrough(o: &Open<Backing>) -> &Arc<Backing> {
    match &o.serve {
        Serve::Passthrough(b) => b,
        other => panic!("expected passthrough, got {other:?}"),
    }
}

fn is_kept_page_cache(o: &Open<Backing>) -> bool {
    matches!(o.serve, Serve::PageCache { keep: true })
}

impl std::fmt::Debug for Backing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Backing")
    }
}

#[test]
fn one_inode_is_never_served_both_ways() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    v.use_passthrough(true);
    let k = Kernel::default();
    let rd = libc::O_RDONLY;

    // Host files are on the page cache (a copy-up would swap the file).
    let host = v.open(ino(&v, "a.txt"), rd, k.register()).unwrap();
    assert!(is_kept_page_cache(&host));
    v.release(host.fh);

    // A new file: its creating writer is served by the daemon (metered)...
    let (attr, w) = v
        .create(ROOT, name("f"), 0o644, ROOTUSER, k.register())
        .unwrap();
    assert!(is_kept_page_cache(&w));
    // ...and a reader meanwhile shares that page cache.
    let r = v.open(attr.ino, rd, k.register()).unwrap();
    assert!(is_kept_page_cache(&r));
    assert_eq!(k.registered(), 0);
    v.release(w.fh);
    v.release(r.fh);

    // Readers of the object share one backing file; a writer joins it.
    let r1 = v.open(attr.ino, rd, k.register()).unwrap();
    let r2 = v.open(attr.ino, rd, k.register()).unwrap();
    let w = v.open(attr.ino, libc::O_WRONLY, k.register()).unwrap();
    assert!(Arc::ptr_eq(passthrough(&r1), passthrough(&r2)));
    assert!(Arc::ptr_eq(passthrough(&r1), passthrough(&w)));
    assert_eq!(k.registered(), 1);

    // The last close drops (closes) the backing file.
    let backing: Weak<Backing> = Arc::downgrade(passthrough(&r1));
    for o in [r1, r2, w] {
        v.release(o.fh);
    }
    assert!(backing.upgrade().is_none());
    let w = v.open(attr.ino, libc::O_WRONLY, k.register()).unwrap();
    assert!(is_kept_page_cache(&w));
    v.release(w.fh);
}

#[test]
fn a_passthrough_writer_settles_the_quota_when_it_closes() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    v.use_passthrough(true);
    let k = Kernel::default();
    let (attr, w) = v
        .create(ROOT, name("f"), 0o644, ROOTUSER, k.register())
        .unwrap();
    v.release(w.fh);
    let quota = || v.overlay().unwrap().quota.bytes();
    let before = quota();
    let r = v.open(attr.ino, libc::O_RDONLY, k.register()).unwrap();
    let w = v.open(attr.ino, libc::O_RDWR, k.register()).unwrap();
    // The kernel writes through the backing file; the daemon sees nothing.
    passthrough(&w).0.write_all_at(&[7; 5000], 0).unwrap();
    assert_eq!(quota(), before);
    v.release(w.fh);
    assert_eq!(quota(), before + 5000);
    v.release(r.fh);
}

#[test]
fn a_refused_registration_turns_passthrough_off() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    v.use_passthrough(true);
    let (attr, w) = v
        .create(ROOT, name("f"), 0o644, ROOTUSER, no_kernel)
        .unwrap();
    v.release(w.fh);
    let k = Kernel {
        refuse: true,
        ..Kernel::default()
    };
    let r = v.open(attr.ino, libc::O_RDONLY, k.register()).unwrap();
    assert!(is_kept_page_cache(&r));
    v.release(r.fh);
    let r = v.open(attr.ino, libc::O_RDONLY, k.register()).unwrap();
    assert!(is_kept_page_cache(&r));
    assert_eq!(k.registered(), 1, "asked once, then never again");
    v.release(r.fh);
}

#[test]
fn without_negotiation_nothing_is_registered() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    let k = Kernel::default();
    let (attr, w) = v
        .create(ROOT, name("f"), 0o644, ROOTUSER, k.register())
        .unwrap();
    v.release(w.fh);
    let r = v.open(attr.ino, libc::O_RDONLY, k.register()).unwrap();
    assert!(is_kept_page_cache(&r));
    assert_eq!(k.registered(), 0);
    v.release(r.fh);
}

fn no_kernel(_: &File) -> io::Result<Backing> {
    Err(io::ErrorKind::Unsupported.into())
}

#[test]
fn what_the_daemon_owns_is_cached_longer_than_host_entries() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    let host = v.getattr(ino(&v, "a.txt")).unwrap();
    assert_eq!(host.ttl, ViewOptions::default().cache_ttl);
    let (created, w) = v
        .create(ROOT, name("f"), 0o644, ROOTUSER, no_kernel)
        .unwrap();
    v.release(w.fh);
    assert_eq!(created.ttl, OWNED_TTL);
    match v.lookup(ROOT, name("f")).unwrap() {
        Lookup::Found(e) => assert_eq!(e.ttl, OWNED_TTL),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_writer_that_cannot_join_the_passthrough_opens_is_eio() {
    let fx = fixture(&[]);
    let v = open_view(&fx, ViewOptions::default());
    v.use_passthrough(true);
    let k = Kernel::default();
    let (attr, w) = v
        .create(ROOT, name("f"), 0o644, ROOTUSER, k.register())
        .unwrap();
    v.release(w.fh);
    let r = v.open(attr.ino, libc::O_RDONLY, k.register()).unwrap();
    passthrough(&r);
    // Another kind of backing id than the readers share: it cannot join.
    let other = |_: &File| -> io::Result<u8> { Ok(0) };
    let e = v.open(attr.ino, libc::O_WRONLY, other).unwrap_err();
    assert_eq!(e, crate::error::Errno::EIO);
    assert!(e.chain().to_string().contains("cannot join"), "{e:?}");
    v.release(r.fh);
    // Nothing of the refused writer is left: the next one is metered.
    let w = v.open(attr.ino, libc::O_WRONLY, k.register()).unwrap();
    assert!(is_kept_page_cache(&w));
    v.release(w.fh);
}
