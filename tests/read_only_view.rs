//! A granted read-only view, really mounted: exactly the granted files are
//! visible, everything else is ENOENT through every call, every write is
//! EROFS, and the host tree never changes.

mod common;

use std::ffi::CString;
use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;

/// A host tree with secrets, nested dirs, links out of the root and a
/// denied directory holding allowed-looking names.
fn sample(env: &Env) {
    env.write("README.md", "# sample\n");
    env.write("Makefile", "all:\n\ttrue\n");
    env.write(
        "src/payments/pay.py",
        "def pay(x):\n    return round(x, 2)\n",
    );
    env.write("src/payments/__init__.py", "");
    env.write("src/deep/a/b/c/leaf.txt", "leaf\n");
    env.write("tests/test_pay.py", "from payments.pay import pay\n");
    env.write(".env", "API_KEY=FAKE\n");
    env.write("config/.env.production", "DB_PASSWORD=FAKE\n");
    env.write("deploy/id_rsa", "FAKE KEY\n");
    env.write("deploy/server.pem", "FAKE CERT\n");
    env.write(".aws/credentials", "[default]\n");
    env.write(".git/config", "[core]\n");
    env.write(
        "private/notes.md",
        "allowed-looking name inside a denied dir\n",
    );
    env.write("private/src/pay.py", "def pay(): pass\n");
    env.link("src/readme_link", "../README.md");
    env.link("src/etc_link", "/etc/passwd");
    env.link("src/escape_link", "../../outside");
    env.link("src/env_link", "../.env");
    env.link("etc_dir", "/etc");
}

const VISIBLE: &[&str] = &[
    "Makefile",
    "README.md",
    "src",
    "src/deep",
    "src/deep/a",
    "src/deep/a/b",
    "src/deep/a/b/c",
    "src/deep/a/b/c/leaf.txt",
    "src/payments",
    "src/payments/__init__.py",
    "src/payments/pay.py",
    "src/readme_link",
    "tests",
    "tests/test_pay.py",
];

const HIDDEN: &[&str] = &[
    ".env",
    "config",
    "config/.env.production",
    "deploy",
    "deploy/id_rsa",
    "deploy/server.pem",
    ".aws",
    ".aws/credentials",
    ".git",
    ".git/config",
    "private",
    "private/notes.md",
    "private/src/pay.py",
    "src/etc_link",
    "src/escape_link",
    "src/env_link",
    "etc_dir",
    "etc_dir/passwd",
    "no_such_file",
];

fn setup() -> (Env, String) {
    let env = Env::new();
    sample(&env);
    let g = env.grant(&["--deny", "private"]);
    (env, g)
}

#[test]
fn listing_at_every_depth_is_exactly_the_granted_set() {
    let (env, g) = setup();
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    assert_eq!(list_tree(&m.mp), VISIBLE);
    // `..` of the root and directory link counts reveal nothing more.
    assert_eq!(fs::metadata(m.path("src")).unwrap().nlink(), 2 + 2);
    let names: Vec<_> = fs::read_dir(m.path(""))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 4, "{names:?}");
}

#[test]
fn hidden_names_are_enoent_through_every_call() {
    let (env, g) = setup();
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    for rel in HIDDEN {
        let p = m.path(rel);
        assert_eq!(errno(fs::symlink_metadata(&p)), libc::ENOENT, "lstat {rel}");
        assert_eq!(errno(fs::metadata(&p)), libc::ENOENT, "stat {rel}");
        assert_eq!(errno(fs::File::open(&p)), libc::ENOENT, "open {rel}");
        assert_eq!(errno(fs::read_dir(&p)), libc::ENOENT, "opendir {rel}");
        assert_eq!(errno(fs::read_link(&p)), libc::ENOENT, "readlink {rel}");
        let c = CString::new(p.as_os_str().as_bytes()).unwrap();
        assert_eq!(
            unsafe { libc::access(c.as_ptr(), libc::F_OK) },
            -1,
            "access {rel}"
        );
        assert_eq!(
            std::io::Error::last_os_error().raw_os_error(),
            Some(libc::ENOENT)
        );
        let x = rustix::fs::getxattr(&p, "user.x", &mut [0u8; 64][..]);
        assert_eq!(x.unwrap_err(), rustix::io::Errno::NOENT, "getxattr {rel}");
        let l = rustix::fs::listxattr(&p, &mut [0u8; 256][..]);
        assert_eq!(l.unwrap_err(), rustix::io::Errno::NOENT, "listxattr {rel}");
        let l = rustix::fs::llistxattr(&p, &mut [0u8; 256][..]);
        assert_eq!(l.unwrap_err(), rustix::io::Errno::NOENT, "llistxattr {rel}");
        let parent = p.parent().unwrap();
        if let Ok(entries) = fs::read_dir(parent) {
            let name = p.file_name().unwrap();
            assert!(
                !entries.map(|e| e.unwrap().file_name()).any(|n| n == name),
                "{rel} listed in its directory"
            );
        }
    }
}

#[test]
fn contents_links_and_metadata_come_from_the_host() {
    let (env, g) = setup();
    // Nothing cached: every stat below asks the daemon again.
    let m = env.mount(&g, &env.mountpoint("mnt"), &["--cache-ttl", "0"]);
    assert_eq!(
        fs::read_to_string(m.path("src/payments/pay.py")).unwrap(),
        "def pay(x):\n    return round(x, 2)\n"
    );
    assert_eq!(
        fs::read_link(m.path("src/readme_link")).unwrap(),
        Path::new("../README.md")
    );
    assert_eq!(
        fs::read_to_string(m.path("src/readme_link")).unwrap(),
        "# sample\n"
    );
    for rel in ["README.md", "src/payments/pay.py", "src"] {
        let host = fs::symlink_metadata(env.host.join(rel)).unwrap();
        let view = fs::symlink_metadata(m.path(rel)).unwrap();
        assert_eq!(view.mode(), host.mode(), "{rel}");
        assert_eq!(view.mtime(), host.mtime(), "{rel}");
        assert_eq!(view.mtime_nsec(), host.mtime_nsec(), "{rel}");
        assert_eq!(view.uid(), host.uid(), "{rel}");
        if host.is_file() {
            assert_eq!(view.len(), host.len(), "{rel}");
        }
    }
    // Inode numbers are stable for the mount's life: a fresh lookup (the
    // kernel caches nothing) answers the same one.
    let ino = fs::metadata(m.path("README.md")).unwrap().ino();
    assert_eq!(fs::metadata(m.path("README.md")).unwrap().ino(), ino);
    // statfs works.
    let st = rustix::fs::statvfs(&m.mp).unwrap();
    assert!(st.f_bsize > 0 && st.f_files > 0);
    // access works for granted entries.
    let c = CString::new(m.path("README.md").as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::access(c.as_ptr(), libc::R_OK) }, 0);
}

#[test]
fn xattrs_of_granted_files() {
    let (env, g) = setup();
    let host = env.host.join("README.md");
    if rustix::fs::setxattr(
        &host,
        "user.origin",
        b"host",
        rustix::fs::XattrFlags::empty(),
    )
    .is_err()
    {
        eprintln!("host filesystem lacks user xattrs; checking the empty case only");
    }
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    let mut buf = [0u8; 64];
    match rustix::fs::getxattr(&host, "user.origin", &mut buf[..]) {
        Ok(_) => {
            let n = rustix::fs::getxattr(m.path("README.md"), "user.origin", &mut buf[..]).unwrap();
            assert_eq!(&buf[..n], b"host");
            let mut list = [0u8; 256];
            let n = rustix::fs::listxattr(m.path("README.md"), &mut list[..]).unwrap();
            assert!(list[..n].split(|b| *b == 0).any(|x| x == b"user.origin"));
        }
        Err(_) => {
            let e = rustix::fs::getxattr(m.path("README.md"), "user.origin", &mut buf[..]);
            assert_eq!(e.unwrap_err(), rustix::io::Errno::NODATA);
        }
    }
}

#[test]
fn every_write_is_erofs_and_the_host_is_unchanged() {
    let (env, g) = setup();
    let before = tree_digest(&env.host);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    let f = m.path("README.md");
    let d = m.path("src");
    let rofs = libc::EROFS;
    assert_eq!(
        errno(fs::OpenOptions::new().write(true).open(&f)),
        rofs,
        "open for write"
    );
    assert_eq!(
        errno(fs::OpenOptions::new().append(true).open(&f)),
        rofs,
        "append"
    );
    assert_eq!(errno(fs::File::create(m.path("new.txt"))), rofs, "create");
    assert_eq!(
        errno(fs::write(m.path("src/new.py"), "x")),
        rofs,
        "create in subdir"
    );
    assert_eq!(errno(fs::remove_file(&f)), rofs, "unlink");
    assert_eq!(errno(fs::create_dir(m.path("newdir"))), rofs, "mkdir");
    assert_eq!(errno(fs::remove_dir(m.path("tests"))), rofs, "rmdir");
    assert_eq!(errno(fs::rename(&f, m.path("R.md"))), rofs, "rename");
    assert_eq!(
        errno(std::os::unix::fs::symlink("x", m.path("l"))),
        rofs,
        "symlink"
    );
    assert_eq!(errno(fs::hard_link(&f, m.path("h"))), rofs, "link");
    assert_eq!(
        errno(fs::set_permissions(&f, fs::Permissions::from_mode(0o777))),
        rofs,
        "chmod"
    );
    assert_eq!(
        errno(std::os::unix::fs::chown(&f, Some(1), Some(1))),
        rofs,
        "chown"
    );
    let c = CString::new(f.as_os_str().as_bytes()).unwrap();
    assert_eq!(unsafe { libc::truncate(c.as_ptr(), 0) }, -1, "truncate");
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(rofs));
    assert_eq!(
        unsafe { libc::utimes(c.as_ptr(), std::ptr::null()) },
        -1,
        "utimens"
    );
    assert_eq!(std::io::Error::last_os_error().raw_os_error(), Some(rofs));
    let e = rustix::fs::setxattr(&f, "user.x", b"1", rustix::fs::XattrFlags::empty());
    assert_eq!(e.unwrap_err(), rustix::io::Errno::ROFS, "setxattr");
    let e = rustix::fs::removexattr(&f, "user.x");
    assert_eq!(e.unwrap_err(), rustix::io::Errno::ROFS, "removexattr");
    assert_eq!(errno(fs::remove_dir_all(&d)), rofs, "rm -r");
    // Writes through an existing read handle are refused too.
    let mut h = fs::File::open(&f).unwrap();
    let mut s = String::new();
    h.read_to_string(&mut s).unwrap();
    use std::io::Write;
    assert_eq!(h.write(b"x").unwrap_err().raw_os_error(), Some(libc::EBADF));
    drop(m);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
}

#[test]
fn host_changes_under_the_view() {
    let (env, g) = setup();
    let m = env.mount(&g, &env.mountpoint("mnt"), &["--cache-ttl", "0"]);
    env.write("README.md", "# changed on the host\n");
    assert_eq!(
        fs::read_to_string(m.path("README.md")).unwrap(),
        "# changed on the host\n"
    );
    fs::remove_file(env.host.join("tests/test_pay.py")).unwrap();
    assert_eq!(
        errno(fs::metadata(m.path("tests/test_pay.py"))),
        libc::ENOENT
    );
    assert_eq!(
        errno(fs::File::open(m.path("tests/test_pay.py"))),
        libc::ENOENT
    );
    assert!(fs::read_dir(m.path("tests")).unwrap().next().is_none());
    // A file added on the host after the grant is not granted.
    env.write("src/new_on_host.py", "x");
    assert_eq!(
        errno(fs::metadata(m.path("src/new_on_host.py"))),
        libc::ENOENT
    );
    // A granted directory swapped for a link out of the root leads nowhere.
    fs::rename(env.host.join("src/deep"), env.host.join("deep.moved")).unwrap();
    std::os::unix::fs::symlink("/etc", env.host.join("src/deep")).unwrap();
    assert_eq!(errno(fs::metadata(m.path("src/deep"))), libc::ENOENT);
    assert_eq!(errno(fs::read_dir(m.path("src/deep/a"))), libc::ENOENT);
}

#[test]
fn large_files_read_back_exactly_under_concurrency() {
    let env = Env::new();
    let mut data = vec![0u8; 8 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i * 7 + i / 4096) as u8;
    }
    fs::write(env.host.join("big.bin"), &data).unwrap();
    let g = env.grant(&[]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    let want = blake3::hash(&data);
    std::thread::scope(|s| {
        for _ in 0..4 {
            s.spawn(|| {
                let got = fs::read(m.path("big.bin")).unwrap();
                assert_eq!(blake3::hash(&got), want);
            });
        }
    });
    use std::os::unix::fs::FileExt;
    let f = fs::File::open(m.path("big.bin")).unwrap();
    let mut buf = [0u8; 100];
    f.read_exact_at(&mut buf, 5_000_001).unwrap();
    assert_eq!(&buf[..], &data[5_000_001..5_000_101]);
}

/// Through a real mount: expiry takes the view dark by itself. (The core's
/// tests check the instant and the cache lifetimes on a manual clock.) The
/// shortest lifetime that reliably outlives the mount: expiry is kept to
/// the second, so `--ttl 1s` may leave almost nothing.
#[test]
fn expired_grant_answers_eacces() {
    let env = Env::new();
    env.write("a.txt", "a");
    env.write("d/b.txt", "b");
    let g = env.grant(&["--ttl", "2s"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    assert_eq!(fs::read_to_string(m.path("a.txt")).unwrap(), "a");
    wait_until("the grant to expire", Duration::from_secs(30), || {
        fs::metadata(m.path("a.txt")).is_err()
    });
    assert_eq!(errno(fs::metadata(m.path("a.txt"))), libc::EACCES);
    assert_eq!(errno(fs::read_to_string(m.path("d/b.txt"))), libc::EACCES);
    assert_eq!(errno(fs::read_dir(m.path(""))), libc::EACCES);
    let e = rustix::fs::statvfs(&m.mp).err();
    assert_eq!(e, Some(rustix::io::Errno::ACCESS));
    // And a new mount of the expired grant is refused by name.
    let err = env.fails(&["mount", &g, env.mountpoint("mnt2").to_str().unwrap()]);
    assert!(err.contains("expired"), "{err}");
}

#[test]
fn sigterm_unmounts_cleanly() {
    signal_unmounts_cleanly(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sighup_unmounts_cleanly() {
    signal_unmounts_cleanly(libc::SIGHUP, "SIGHUP");
}

/// `signal` to the mount daemon unmounts the view and ends the daemon.
fn signal_unmounts_cleanly(signal: i32, name: &str) {
    let (env, g) = setup();
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    let pid = m.pid.expect("daemon pid");
    assert!(is_mounted(&mp));
    unsafe { libc::kill(pid as i32, signal) };
    poll_until(Duration::from_secs(10), || {
        !is_mounted(&mp) && !pid_running(pid)
    });
    // The daemon's log tells why, if this ever fails.
    let log = || {
        fs::read_to_string(env.state.join("sessions").join(&g).join("daemon.log"))
            .unwrap_or_default()
    };
    assert!(
        !is_mounted(&mp),
        "still mounted after {name} (daemon running: {}); daemon.log:\n{}",
        pid_running(pid),
        log()
    );
    assert!(
        !pid_running(pid),
        "daemon still running after {name}; daemon.log:\n{}",
        log()
    );
    let status = env.ok(&["status", &g, "--json"]);
    assert!(status.contains("\"mounted\": false"), "{status}");
}

/// The daemon moves its output onto the session log before it says it is
/// ready, so nothing is written to the parent's pipes once the parent may
/// have gone. (It used to log a SIGTERM that arrived in between to the
/// closed pipe, and the logger's panic killed the signal thread: the
/// signal was lost and the view stayed mounted.)
#[test]
fn daemon_leaves_the_parents_pipes_before_it_is_ready() {
    use std::io::BufRead;
    use std::os::fd::AsRawFd;
    use std::process::Stdio;
    let (env, g) = setup();
    let mp = env.mountpoint("mnt");
    let mut child = wopfs_command()
        .arg("--state-dir")
        .arg(&env.state)
        .args([
            "mount",
            &g,
            mp.to_str().unwrap(),
            "--foreground",
            "--daemon",
        ])
        .env_remove("WOPFS_STATE_DIR")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    let m = Mounted::new(mp.clone(), Some(child.id()));
    assert_eq!(ready.trim(), "wopfs-ready");
    // No writer is left: a non-blocking read reaches EOF at once (after
    // what the daemon logged while starting); EAGAIN would mean the daemon
    // still holds the pipe.
    let mut err = child.stderr.take().unwrap();
    let fd = err.as_raw_fd();
    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    let mut buf = Vec::new();
    let read = err.read_to_end(&mut buf).map_err(|e| e.kind());
    assert!(read.is_ok(), "{read:?}: {}", String::from_utf8_lossy(&buf));
    drop(err);
    // Signalled right away, with both pipes closed, it unmounts and exits.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!is_mounted(&mp));
    drop(m);
}

#[test]
fn sigint_while_busy_detaches_and_exits() {
    let (env, g) = setup();
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    let pid = m.pid.expect("daemon pid");
    let busy = fs::File::open(m.path("README.md")).unwrap();
    unsafe { libc::kill(pid as i32, libc::SIGINT) };
    wait_until(
        "the busy view to detach and its daemon to exit",
        Duration::from_secs(10),
        || !is_mounted(&mp) && !pid_running(pid),
    );
    drop(busy);
}

#[test]
fn umount_command_and_status() {
    let (env, g) = setup();
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    let json: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(json[0]["grant_id"], g.as_str());
    assert_eq!(json[0]["mounted"], true);
    assert_eq!(json[0]["mode"], "read_only");
    assert_eq!(json[0]["files"], 7);
    assert_eq!(json[0]["mountpoint"], mp.to_str().unwrap());
    let table = env.ok(&["status"]);
    assert!(
        table.contains(&g) && table.contains(mp.to_str().unwrap()),
        "{table}"
    );
    // Busy: a clear error, still mounted.
    let busy = fs::read_dir(m.path("src")).unwrap();
    let cwd_holder = std::process::Command::new("sleep")
        .arg("30")
        .current_dir(m.path("src"))
        .spawn()
        .unwrap();
    let err = env.fails(&["umount", mp.to_str().unwrap()]);
    assert!(err.contains("busy"), "{err}");
    assert!(is_mounted(&mp));
    let mut cwd_holder = cwd_holder;
    cwd_holder.kill().unwrap();
    cwd_holder.wait().unwrap();
    drop(busy);
    env.ok(&["umount", mp.to_str().unwrap()]);
    assert!(!is_mounted(&mp));
    let err = env.fails(&["umount", mp.to_str().unwrap()]);
    assert!(err.contains("not mounted"), "{err}");
    let err = env.fails(&["umount", "/proc"]);
    assert!(err.contains("not a wopfs mount"), "{err}");
    drop(m);
}

#[test]
fn lazy_umount_detaches_a_busy_mount() {
    let (env, g) = setup();
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    let pid = m.pid.expect("daemon pid");
    // Busy twice over: an open file, and a process whose cwd is inside.
    let open_file = fs::File::open(m.path("README.md")).unwrap();
    let mut cwd_holder = std::process::Command::new("sleep")
        .arg("60")
        .current_dir(m.path("src/payments"))
        .spawn()
        .unwrap();
    // Without --lazy the busy mount is refused and stays.
    let err = env.fails(&["umount", mp.to_str().unwrap()]);
    assert!(err.contains("busy") && err.contains("--lazy"), "{err}");
    assert!(is_mounted(&mp));
    // With it the mount is detached while both still hold it.
    let out = env.ok(&["umount", mp.to_str().unwrap(), "--lazy", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["lazy"], true, "{out}");
    assert_eq!(v["grant_id"], g.as_str(), "{out}");
    assert!(!is_mounted(&mp));
    assert!(no_mount_of_grant(&g));
    assert_eq!(
        cwd_holder.try_wait().unwrap(),
        None,
        "the process holding the cwd was killed"
    );
    // The mountpoint is the plain empty directory again, and the view is
    // no longer listed as mounted.
    assert_eq!(fs::read_dir(&mp).unwrap().count(), 0);
    let status: serde_json::Value = serde_json::from_str(&env.ok(&["status", "--json"])).unwrap();
    assert_eq!(status[0]["mounted"], false, "{status}");
    wait_until("the daemon to exit", Duration::from_secs(15), || {
        !pid_running(pid)
    });
    cwd_holder.kill().unwrap();
    cwd_holder.wait().unwrap();
    drop(open_file);
    drop(m);
}

#[test]
fn mount_errors_are_clear() {
    let (env, g) = setup();
    let unknown = env.fails(&[
        "mount",
        "g-0123456789abcdef",
        env.mountpoint("m1").to_str().unwrap(),
    ]);
    assert!(
        unknown.contains("unknown grant g-0123456789abcdef"),
        "{unknown}"
    );
    let bad_id = env.fails(&["mount", "../x", env.mountpoint("m1").to_str().unwrap()]);
    assert!(bad_id.contains("unknown grant"), "{bad_id}");
    let missing = env.dir.path().join("nowhere");
    let e = env.fails(&["mount", &g, missing.to_str().unwrap()]);
    assert!(e.contains("does not exist"), "{e}");
    let inside = env.host.join("src");
    let e = env.fails(&["mount", &g, inside.to_str().unwrap()]);
    assert!(e.contains("inside the host tree"), "{e}");
    fs::create_dir_all(env.state.join("mnt")).unwrap();
    let e = env.fails(&["mount", &g, env.state.join("mnt").to_str().unwrap()]);
    assert!(e.contains("inside the state dir"), "{e}");
    // Busy: something is mounted there already.
    let other = Env::new();
    other.write("x.txt", "x");
    let g2 = other.grant(&[]);
    let mp = env.mountpoint("busy");
    let _m = other.mount(&g2, &mp, &[]);
    let e = env.fails(&["mount", &g, mp.to_str().unwrap()]);
    assert!(e.contains("busy"), "{e}");
    // The same grant twice.
    let mp2 = env.mountpoint("once");
    let _m2 = env.mount(&g, &mp2, &[]);
    let e = env.fails(&["mount", &g, env.mountpoint("twice").to_str().unwrap()]);
    assert!(e.contains("already mounted"), "{e}");
    // A tampered grant.
    let gj = env.state.join("sessions").join(&g).join("grant.json");
    let text = fs::read_to_string(&gj).unwrap();
    fs::write(
        &gj,
        text.replace("\"--deny\"", "x").replace("private", "public"),
    )
    .unwrap();
    let e = env.fails(&["mount", &g, env.mountpoint("t").to_str().unwrap()]);
    assert!(e.contains("tampered"), "{e}");
}

#[test]
fn foreground_mount_serves_until_signalled() {
    let (env, g) = setup();
    let mp = env.mountpoint("fg");
    let mut child = wopfs_command()
        .args([
            "--state-dir",
            env.state.to_str().unwrap(),
            "mount",
            &g,
            mp.to_str().unwrap(),
            "--foreground",
        ])
        .spawn()
        .unwrap();
    let guard = Mounted::new(mp.clone(), Some(child.id()));
    wait_until("the foreground mount", Duration::from_secs(10), || {
        is_mounted(&mp)
    });
    assert_eq!(
        fs::read_to_string(mp.join("README.md")).unwrap(),
        "# sample\n"
    );
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    assert!(status.success(), "{status:?}");
    assert!(!is_mounted(&mp));
    drop(guard);
}
