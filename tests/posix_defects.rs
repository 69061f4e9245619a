//! POSIX defects of a writable view, each checked on a real mount: fsync
//! reaches the disk, a created file that is still open can be opened again,
//! tools that copy permissions (cp -a/-p, rsync -a, sed -i) work, and sizes
//! no file may have answer EFBIG.
//!
//! Needs `strace` and `rsync` (`.ci/run` installs them).

mod common;

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

fn overlay(env: &Env, extra_mount: &[&str]) -> (Mounted, String) {
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), extra_mount);
    (m, g)
}

fn sample(env: &Env) {
    env.write("src/a.txt", "hello world\n");
    env.write("src/sub/b.txt", "bee\n");
    env.link("src/link", "a.txt");
}

// ---- 1. fsync reaches the overlay -----------------------------------------

/// The fsync-family calls the daemon (all its threads) makes while `f`
/// runs, as strace prints them with fd paths (`-y`).
fn traced(pid: u32, f: impl FnOnce()) -> Vec<String> {
    let out = tempfile::NamedTempFile::new().unwrap();
    let mut strace = Command::new("strace")
        .args(["-f", "-y", "-qq", "-e", "trace=fsync,fdatasync,syncfs,sync"])
        .arg("-o")
        .arg(out.path())
        .arg("-p")
        .arg(pid.to_string())
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("strace is needed for this test (.ci/run installs it)");
    // Attached once every thread of the daemon has a tracer.
    wait_until("strace to attach", Duration::from_secs(20), || {
        fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .all(|t| {
                fs::read_to_string(t.path().join("status")).is_ok_and(|s| {
                    s.lines()
                        .find_map(|l| l.strip_prefix("TracerPid:"))
                        .is_some_and(|v| v.trim() != "0")
                })
            })
    });
    // No wait after `f`: a traced thread leaves a syscall only once strace
    // has handled its stop, so every call `f` waited for is in strace's
    // hands; on SIGINT it detaches and writes them all out.
    f();
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    strace.wait().unwrap();
    fs::read_to_string(out.path())
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn calls(lines: &[String], call: &str, path_part: &str) -> usize {
    lines
        .iter()
        .filter(|l| l.contains(&format!("{call}(")) && l.contains(path_part) && l.contains(") = 0"))
        .count()
}

#[test]
fn fsync_and_fdatasync_reach_the_object_and_the_journal() {
    let env = Env::new();
    sample(&env);
    let (m, g) = overlay(&env, &[]);
    let pid = m.pid.expect("daemon pid");
    let journal = format!("{g}/overlay/journal.jsonl");
    let objects = format!("{g}/overlay/objects/");

    // A new file: fsync syncs its object (all of it) and the journal that
    // names it.
    let mut f = File::create(m.path("src/new.txt")).unwrap();
    f.write_all(b"durable\n").unwrap();
    let t = traced(pid, || f.sync_all().unwrap());
    // The object, and (first time) the fanout directory naming it.
    assert!(
        calls(&t, "fsync", &objects) >= 2,
        "object or its directory entry not fsynced: {t:?}"
    );
    assert!(
        calls(&t, "fdatasync", &journal) + calls(&t, "fsync", &journal) >= 1,
        "journal not synced: {t:?}"
    );
    // fdatasync: the object's data only.
    f.write_all(b"more\n").unwrap();
    let t = traced(pid, || f.sync_data().unwrap());
    assert!(
        calls(&t, "fdatasync", &objects) >= 1,
        "object not fdatasynced: {t:?}"
    );
    assert_eq!(
        calls(&t, "fsync", &objects),
        0,
        "fdatasync became fsync: {t:?}"
    );
    assert!(
        calls(&t, "fdatasync", &journal) >= 1,
        "journal not synced: {t:?}"
    );
    drop(f);

    // A host file written in place (copied up at open).
    let f = OpenOptions::new()
        .write(true)
        .open(m.path("src/a.txt"))
        .unwrap();
    f.write_all_at(b"HELLO", 0).unwrap();
    let t = traced(pid, || f.sync_all().unwrap());
    assert!(
        calls(&t, "fsync", &objects) >= 1,
        "copy-up not fsynced: {t:?}"
    );
    assert!(
        calls(&t, "fdatasync", &journal) >= 1,
        "journal not synced: {t:?}"
    );
    drop(f);

    // fsync of a directory after a rename: the journal.
    fs::rename(m.path("src/new.txt"), m.path("src/sub/moved.txt")).unwrap();
    let dir = File::open(m.path("src/sub")).unwrap();
    let t = traced(pid, || dir.sync_all().unwrap());
    assert!(calls(&t, "fdatasync", &journal) >= 1, "fsyncdir: {t:?}");
    drop(dir);
    assert_eq!(
        fs::read(m.path("src/sub/moved.txt")).unwrap(),
        b"durable\nmore\n"
    );
}

// ---- 2. every handle goes through the io-mode bookkeeping -----------------

#[test]
fn a_created_file_still_open_can_be_opened_again() {
    let env = Env::new();
    sample(&env);
    let (m, _g) = overlay(&env, &[]);
    let p = m.path("src/made.txt");
    let mut creator = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .unwrap();
    creator.write_all(b"0123456789").unwrap();
    // A reader while the O_CREAT handle is open (was EIO).
    let mut reader = File::open(&p).unwrap_or_else(|e| panic!("open O_RDONLY: {e}"));
    let mut s = String::new();
    reader.read_to_string(&mut s).unwrap();
    assert_eq!(s, "0123456789");
    // A second writer, too, and both see each other's bytes.
    let writer = OpenOptions::new().write(true).open(&p).unwrap();
    writer.write_all_at(b"AB", 0).unwrap();
    let mut buf = [0u8; 10];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"AB23456789");
    // The creator closes first; opens keep working.
    drop(creator);
    let again = File::open(&p).unwrap();
    drop((reader, writer));
    drop(again);
    // All closed: the bookkeeping is released, a new reader and writer open.
    assert_eq!(fs::read(&p).unwrap(), b"AB23456789");
    fs::write(&p, "new").unwrap();
    assert_eq!(fs::read_to_string(&p).unwrap(), "new");
    // create(O_TRUNC) of an existing file while a reader is open.
    let r = File::open(&p).unwrap();
    let mut w = File::create(&p).unwrap();
    w.write_all(b"x").unwrap();
    let mut s = String::new();
    (&r).read_to_string(&mut s).unwrap();
    assert_eq!(s, "x");
}

// ---- 3. tools that copy permissions ---------------------------------------

/// A POSIX access ACL (version 2): owner rw, user 1001 r, group r, mask
/// r, others r.
fn acl_bytes() -> Vec<u8> {
    let mut v = 2u32.to_le_bytes().to_vec();
    for (tag, perm, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1001),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 4, u32::MAX),
    ] {
        v.extend_from_slice(&tag.to_le_bytes());
        v.extend_from_slice(&perm.to_le_bytes());
        v.extend_from_slice(&id.to_le_bytes());
    }
    v
}

fn run_clean(dir: &Path, cmd: &[&str]) {
    let out = Command::new(cmd[0])
        .args(&cmd[1..])
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("{cmd:?}: {e} (.ci/run installs rsync)"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{cmd:?} failed: {stderr}");
    assert!(stderr.trim().is_empty(), "{cmd:?} warned: {stderr}");
}

fn xerr<T>(r: rustix::io::Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.raw_os_error(),
    }
}

#[test]
fn cp_rsync_and_sed_preserve_what_they_can_without_errors() {
    let env = Env::new();
    sample(&env);
    env.write("src/acl.txt", "with an acl\n");
    let host_acl = rustix::fs::setxattr(
        env.host.join("src/acl.txt"),
        "system.posix_acl_access",
        &acl_bytes(),
        rustix::fs::XattrFlags::empty(),
    )
    .is_ok();
    if !host_acl {
        eprintln!("host filesystem lacks ACLs; not checking a host file with one");
    }
    fs::set_permissions(
        env.host.join("src/a.txt"),
        fs::Permissions::from_mode(0o640),
    )
    .unwrap();
    let before = tree_digest(&env.host);
    let (m, _g) = overlay(&env, &[]);
    let root = m.path("");

    run_clean(&root, &["cp", "-a", "src", "copy-a"]);
    run_clean(&root, &["cp", "-p", "src/a.txt", "src/a-p.txt"]);
    run_clean(&root, &["cp", "-a", "src/acl.txt", "src/acl-a.txt"]);
    run_clean(&root, &["rsync", "-a", "src/", "synced/"]);
    run_clean(&root, &["sed", "-i", "s/hello/bye/", "src/a.txt"]);
    run_clean(&root, &["sed", "-i", "s/with/without/", "src/acl.txt"]);
    run_clean(&root, &["cp", "-a", "copy-a", "copy-b"]);

    assert_eq!(
        fs::read_to_string(m.path("src/a.txt")).unwrap(),
        "bye world\n"
    );
    assert_eq!(
        fs::read_to_string(m.path("copy-a/a.txt")).unwrap(),
        "hello world\n"
    );
    assert_eq!(
        fs::read_to_string(m.path("synced/sub/b.txt")).unwrap(),
        "bee\n"
    );
    assert_eq!(
        fs::read_link(m.path("copy-a/link")).unwrap(),
        Path::new("a.txt")
    );
    for p in ["src/a.txt", "src/a-p.txt", "copy-a/a.txt", "synced/a.txt"] {
        let mode = fs::metadata(m.path(p)).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o640, "{p}: mode not kept");
    }

    // What the tools saw: the view has no ACLs, consistently.
    for p in ["src/acl-a.txt", "src/sub/b.txt", "copy-a/acl.txt"] {
        let p = m.path(p);
        assert_eq!(
            xerr(rustix::fs::setxattr(
                &p,
                "system.posix_acl_access",
                &acl_bytes(),
                rustix::fs::XattrFlags::empty()
            )),
            libc::EOPNOTSUPP,
            "setxattr ACL on {p:?}"
        );
        let mut buf = vec![0u8; 4096];
        assert_eq!(
            xerr(rustix::fs::getxattr(
                &p,
                "system.posix_acl_access",
                &mut buf[..]
            )),
            libc::EOPNOTSUPP,
            "getxattr ACL on {p:?}"
        );
        assert_eq!(
            xerr(rustix::fs::removexattr(&p, "system.posix_acl_access")),
            libc::EOPNOTSUPP,
            "removexattr ACL on {p:?}"
        );
        for name in ["trusted.x", "security.x", "system.other"] {
            assert_eq!(
                xerr(rustix::fs::setxattr(
                    &p,
                    name,
                    b"1",
                    rustix::fs::XattrFlags::empty()
                )),
                libc::EOPNOTSUPP,
                "setxattr {name} on {p:?}"
            );
        }
        let n = rustix::fs::listxattr(&p, &mut buf[..]).unwrap();
        assert!(
            !String::from_utf8_lossy(&buf[..n]).contains("posix_acl"),
            "an ACL is listed on {p:?}"
        );
        // user.* still works.
        rustix::fs::setxattr(&p, "user.k", b"v", rustix::fs::XattrFlags::empty()).unwrap();
        assert_eq!(rustix::fs::getxattr(&p, "user.k", &mut buf[..]).unwrap(), 1);
    }
    drop(m);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
}

// ---- 4. sizes no file may have: EFBIG ------------------------------------

fn cvt(r: libc::c_int) -> io::Result<()> {
    if r == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(())
    }
}

fn truncate(p: &Path, len: u64) -> io::Result<()> {
    let c = CString::new(p.as_os_str().as_bytes()).unwrap();
    cvt(unsafe { libc::truncate(c.as_ptr(), len as libc::off_t) })
}

fn ftruncate(f: &File, len: u64) -> io::Result<()> {
    cvt(unsafe { libc::ftruncate(f.as_raw_fd(), len as libc::off_t) })
}

fn fallocate(f: &File, mode: libc::c_int, offset: u64, len: u64) -> io::Result<()> {
    cvt(unsafe {
        libc::fallocate(
            f.as_raw_fd(),
            mode,
            offset as libc::off_t,
            len as libc::off_t,
        )
    })
}

#[test]
fn sizes_past_the_largest_file_answer_efbig_before_the_quota() {
    let env = Env::new();
    sample(&env);
    let (m, _g) = overlay(&env, &["--quota-bytes", "1048576"]);
    let max = 1u64 << 44;
    let huge = 1u64 << 62;
    let new = m.path("src/new.bin");
    fs::write(&new, "n").unwrap();
    for p in [m.path("src/a.txt"), new.clone()] {
        let what = p.display().to_string();
        assert_eq!(errno(truncate(&p, huge)), libc::EFBIG, "truncate {what}");
        assert_eq!(errno(truncate(&p, max + 1)), libc::EFBIG, "truncate {what}");
        // A size a file may have, over the quota: EDQUOT.
        assert_eq!(errno(truncate(&p, max)), libc::EDQUOT, "truncate {what}");
        assert_eq!(
            errno(truncate(&p, 10 << 20)),
            libc::EDQUOT,
            "truncate {what}"
        );
        let f = OpenOptions::new().read(true).write(true).open(&p).unwrap();
        assert_eq!(errno(ftruncate(&f, huge)), libc::EFBIG, "ftruncate {what}");
        assert_eq!(
            errno(fallocate(&f, 0, 0, huge)),
            libc::EFBIG,
            "fallocate {what}"
        );
        assert_eq!(
            errno(fallocate(&f, 0, huge, 1)),
            libc::EFBIG,
            "fallocate {what}"
        );
        assert_eq!(
            errno(fallocate(&f, libc::FALLOC_FL_KEEP_SIZE, max, 1)),
            libc::EFBIG,
            "fallocate KEEP_SIZE {what}"
        );
        assert_eq!(errno(f.write_at(b"x", huge)), libc::EFBIG, "pwrite {what}");
        assert_eq!(errno(f.write_at(b"x", max)), libc::EFBIG, "pwrite {what}");
        assert_eq!(
            errno(f.write_at(b"x", 10 << 20)),
            libc::EDQUOT,
            "pwrite {what}"
        );
        // Nothing changed.
        assert!(fs::metadata(&p).unwrap().len() < 100, "{what} grew");
    }
}
