//! Directory listings cached by the kernel (`FOPEN_CACHE_DIR |
//! FOPEN_KEEP_CACHE`, decided per directory by `View::opendir`), really
//! mounted: a read-only view is listed once and later listings come from
//! the kernel's cache until the host changes the directory; a writable
//! view's listings stay right through every change made through the mount;
//! an expired view lists nothing, cached or not.
//!
//! Listings the daemon serves are counted in its debug log: with
//! `WOPFS_LOG=debug` every FUSE request is logged as it arrives, before it
//! is answered, so a count taken after a listing returns is exact.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Mounts `grant` at `mp` with the daemon logging every request.
fn mount_logged(env: &Env, grant: &str, mp: &Path, extra: &[&str]) -> Mounted {
    let out = wopfs_command()
        .arg("--state-dir")
        .arg(&env.state)
        .args(["mount", grant])
        .arg(mp)
        .args(extra)
        .env_remove("WOPFS_STATE_DIR")
        .env("WOPFS_LOG", "debug")
        .output()
        .expect("running wopfs mount");
    assert!(
        out.status.success(),
        "mount failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Mounted::new(mp.to_path_buf(), env.daemon_pid(grant))
}

/// How many READDIR and READDIRPLUS requests the daemon has had for the
/// directory at `dir` in the view.
fn listings_served(env: &Env, grant: &str, dir: &Path) -> usize {
    let ino = fs::metadata(dir).unwrap().ino();
    let log = env.state.join("sessions").join(grant).join("daemon.log");
    let log = fs::read_to_string(log).unwrap();
    let tag = format!("ino {ino:#018x} READDIR");
    log.lines().filter(|l| l.contains(&tag)).count()
}

/// The names in `dir` as `readdir` gives them, marked with the kind the
/// listing itself carries (no stat): `sub/` a directory, `sym@` a symlink.
fn listing(dir: &Path) -> Vec<String> {
    let mut out: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            let e = e.unwrap();
            let t = e.file_type().unwrap();
            let mark = if t.is_dir() {
                "/"
            } else if t.is_symlink() {
                "@"
            } else {
                ""
            };
            format!("{}{mark}", e.file_name().to_str().unwrap())
        })
        .collect();
    out.sort();
    out
}

fn strings(names: &[&str]) -> Vec<String> {
    names.iter().map(|s| s.to_string()).collect()
}

#[test]
fn a_read_only_listing_comes_from_the_kernel_cache_until_the_host_changes_it() {
    let env = Env::new();
    for f in ["d/a.txt", "d/b.txt", "d/sub/c.txt"] {
        env.write(f, "x");
    }
    let g = env.grant(&[]);
    // With attributes never cached, every listing from the start first asks
    // for the directory's mtime; the cached listing is used while it holds.
    let m = mount_logged(&env, &g, &env.mountpoint("mnt"), &["--cache-ttl", "0"]);
    let d = m.path("d");
    let want = strings(&["a.txt", "b.txt", "sub/"]);
    assert_eq!(listing(&d), want);
    let first = listings_served(&env, &g, &d);
    assert!(first >= 1, "the first listing is the daemon's");
    for _ in 0..3 {
        assert_eq!(listing(&d), want);
    }
    let ls = Command::new("ls").arg("-la").arg(&d).output().unwrap();
    assert!(ls.status.success() && String::from_utf8_lossy(&ls.stdout).contains("b.txt"));
    assert_eq!(
        listings_served(&env, &g, &d),
        first,
        "later listings come from the kernel's cache"
    );
    // A granted file removed on the host moves the directory's mtime: the
    // cached listing is dropped and the name goes with it.
    fs::remove_file(env.host.join("d/a.txt")).unwrap();
    assert_eq!(listing(&d), strings(&["b.txt", "sub/"]));
    assert!(listings_served(&env, &g, &d) > first);
}

#[test]
fn a_writable_views_listings_follow_every_change_through_the_mount() {
    let env = Env::new();
    for f in ["d/a.txt", "d/b.txt", "e/c.txt"] {
        env.write(f, "x");
    }
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = mount_logged(&env, &g, &env.mountpoint("mnt"), &[]);
    let (d, e) = (m.path("d"), m.path("e"));
    assert_eq!(listing(&d), strings(&["a.txt", "b.txt"]));
    let first = listings_served(&env, &g, &d);
    assert_eq!(listing(&d), strings(&["a.txt", "b.txt"]));
    assert_eq!(
        listings_served(&env, &g, &d),
        first,
        "a host directory's listing is kept in a writable view too"
    );

    let check = |step: &str, want_d: &[&str], want_e: &[&str]| {
        assert_eq!(listing(&d), strings(want_d), "d after {step}");
        assert_eq!(listing(&e), strings(want_e), "e after {step}");
    };
    fs::write(d.join("new.txt"), "n").unwrap();
    check("create", &["a.txt", "b.txt", "new.txt"], &["c.txt"]);
    fs::remove_file(d.join("b.txt")).unwrap();
    check("unlink", &["a.txt", "new.txt"], &["c.txt"]);
    fs::rename(d.join("new.txt"), d.join("renamed.txt")).unwrap();
    check("rename in place", &["a.txt", "renamed.txt"], &["c.txt"]);
    fs::rename(d.join("renamed.txt"), e.join("moved.txt")).unwrap();
    check("rename across", &["a.txt"], &["c.txt", "moved.txt"]);
    fs::create_dir(d.join("sub")).unwrap();
    check("mkdir", &["a.txt", "sub/"], &["c.txt", "moved.txt"]);
    std::os::unix::fs::symlink("a.txt", d.join("sym")).unwrap();
    check(
        "symlink",
        &["a.txt", "sub/", "sym@"],
        &["c.txt", "moved.txt"],
    );
    fs::hard_link(d.join("a.txt"), e.join("a-link")).unwrap();
    let e_now = ["a-link", "c.txt", "moved.txt"];
    check("hard link", &["a.txt", "sub/", "sym@"], &e_now);
    // Same names, kinds swapped: a stale listing would show the old kinds.
    exchange(&d.join("sym"), &e.join("moved.txt")).unwrap();
    let e_now = ["a-link", "c.txt", "moved.txt@"];
    check("exchange", &["a.txt", "sub/", "sym"], &e_now);
    fs::rename(d.join("a.txt"), e.join("c.txt")).unwrap();
    check("rename over a name", &["sub/", "sym"], &e_now);
    fs::remove_dir(d.join("sub")).unwrap();
    check("rmdir", &["sym"], &e_now);

    // A directory that is an overlay object is never cached (a host change
    // beneath it would not move its mtime): each listing is the daemon's.
    let made = m.path("made");
    fs::create_dir(&made).unwrap();
    fs::write(made.join("x"), "x").unwrap();
    assert_eq!(listing(&made), strings(&["x"]));
    let before = listings_served(&env, &g, &made);
    assert_eq!(listing(&made), strings(&["x"]));
    assert!(listings_served(&env, &g, &made) > before);
}

fn exchange(a: &Path, b: &Path) -> std::io::Result<()> {
    rustix::fs::renameat_with(
        rustix::fs::CWD,
        a,
        rustix::fs::CWD,
        b,
        rustix::fs::RenameFlags::EXCHANGE,
    )
    .map_err(Into::into)
}

/// After expiry nothing is listed, though the kernel still holds the
/// listings: a new listing, and one a descriptor opened before expiry
/// starts again from the top, both ask the daemon first (for the opendir;
/// for the directory's attributes, which ran out at expiry), and it
/// answers EACCES. Read-only and writable views alike. (A listing already
/// under way at expiry may finish from the cache: see the README.)
#[test]
fn an_expired_view_lists_nothing_even_what_the_kernel_cached() {
    let env = Env::new();
    env.write("d/a.txt", "a");
    env.write("d/b.txt", "b");
    let want = strings(&["a.txt", "b.txt"]);
    let mut views = Vec::new();
    for mode in ["read_only", "read_write_overlay"] {
        let g = env.grant(&["--mode", mode, "--ttl", "4s"]);
        views.push(env.mount(&g, &env.mountpoint(mode), &[]));
    }
    let mut held = Vec::new();
    for m in &views {
        let d = m.path("d");
        assert_eq!(listing(&d), want);
        assert_eq!(listing(&d), want, "again, from the kernel's cache");
        let f = fs::File::open(&d).unwrap();
        let mut dir = rustix::fs::Dir::read_from(&f).unwrap();
        let read: Vec<_> = std::iter::from_fn(|| dir.read())
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(read.len(), want.len() + 2, "with . and ..");
        held.push(dir);
    }
    // Until the kernel's copy of d's attributes has run out too (fstat
    // asks the daemon only then): the kernel rounds each lifetime up to its
    // clock tick, so its caches may end a few ms apart around expiry.
    for dir in &held {
        wait_until("the grant to expire", Duration::from_secs(30), || {
            rustix::fs::fstat(dir.fd().unwrap()).is_err()
        });
    }
    for (m, dir) in views.iter().zip(&mut held) {
        let mode = m.mp.file_name().unwrap().to_string_lossy();
        assert_eq!(errno(fs::read_dir(m.path("d"))), libc::EACCES, "{mode}");
        assert_eq!(errno(fs::read_dir(m.path(""))), libc::EACCES, "{mode}");
        dir.rewind();
        let again = dir.read().map(|r| r.map(|e| e.file_name().to_owned()));
        assert_eq!(
            again.map(|r| r.map_err(|e| e.raw_os_error())),
            Some(Err(libc::EACCES)),
            "{mode}: a rewound listing"
        );
    }
}
