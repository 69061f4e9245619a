//! The kernel engine's own behaviour, mounted: which engine is picked, how
//! its stack comes and goes (unmount, `kill -9`, expiry, a half-dead pair),
//! hiding through overlayfs, and its quota. What both engines share (POSIX
//! behaviour, sessions, commits) runs on both through the test matrix
//! (`WOPFS_TEST_ENGINE`, see scripts/test.sh).

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use common::*;

fn project(e: &Env) {
    e.write("src/a.txt", "alpha\n");
    e.write("src/b.txt", "beta\n");
    e.write("src/sub/c.txt", "gamma\n");
    e.write("src/secret/key.pem", "KEY\n");
    e.write(".env", "TOKEN=1\n");
    e.write("docs/readme.md", "docs\n");
}

fn writable(e: &Env) -> String {
    e.grant(&[
        "--allow",
        "src/**",
        "--deny",
        "src/secret/**",
        "--mode",
        "read_write_overlay",
    ])
}

fn kernel_mount(e: &Env, g: &str, name: &str, extra: &[&str]) -> Mounted {
    let mp = e.mountpoint(name);
    let mut args = vec!["--engine", "kernel"];
    args.extend_from_slice(extra);
    e.mount(g, &mp, &args)
}

/// Nothing of grant `g` is mounted (the overlay, a lower left by path, the
/// layer) and no loop device still backs its image.
fn nothing_left(e: &Env, g: &str) -> bool {
    let session = e.state.join("sessions").join(g);
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
    let mounted = info.lines().any(|l| {
        l.contains(g)
            || l.split(' ')
                .nth(4)
                .is_some_and(|mp| Path::new(mp).starts_with(&session))
    });
    let image = session.join("kernel/upper.img");
    let attached = fs::read_dir("/sys/block").unwrap().flatten().any(|d| {
        fs::read_to_string(d.path().join("loop/backing_file"))
            .is_ok_and(|b| Path::new(b.trim_end()) == image)
    });
    !mounted && !attached
}

fn status_json(e: &Env, g: &str) -> serde_json::Value {
    let out = e.ok(&["status", g, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v[0].clone()
}

#[test]
fn the_engine_is_chosen_recorded_and_kept() {
    if !kernel_engine_here() {
        return;
    }
    let e = Env::new();
    project(&e);
    // auto as root: the kernel engine, shown by status and the audit log.
    let g = writable(&e);
    let mp = e.mountpoint("auto");
    {
        let _m = e.mount(&g, &mp, &["--engine", "auto"]);
        assert_eq!(status_json(&e, &g)["engine"], "kernel");
        let info = fs::read_to_string("/proc/self/mountinfo").unwrap();
        let line = info
            .lines()
            .find(|l| l.split(' ').nth(4) == mp.to_str())
            .expect("the view is mounted");
        assert!(line.contains(" - overlay wopfs:"), "{line}");
        // The lower is attached nowhere: the only mount naming the grant
        // is the overlay (or, on kernels before 6.15, one in the state dir).
        let named: Vec<&str> = info.lines().filter(|l| l.contains(&g)).collect();
        assert!(
            named.iter().all(|l| l.contains(" - overlay ")
                || l.split(' ')
                    .nth(4)
                    .is_some_and(|p| Path::new(p).starts_with(&e.state))),
            "{named:?}"
        );
    }
    let audit = e.ok(&["audit", "--json"]);
    assert!(
        audit.contains("\"engine\":\"kernel\"") || audit.contains("\"engine\": \"kernel\""),
        "{audit}"
    );
    // The session keeps its engine: fuse is refused, naming the kernel one.
    let err = e.fails(&["mount", &g, mp.to_str().unwrap(), "--engine", "fuse"]);
    assert!(err.contains("started with the kernel engine"), "{err}");

    // A session started with the fuse engine stays there.
    let g2 = writable(&e);
    {
        let _m = e.mount(&g2, &mp, &["--engine", "fuse"]);
        fs::write(mp.join("src/new.txt"), "n").unwrap();
        assert_eq!(status_json(&e, &g2)["engine"], "fuse");
    }
    let err = e.fails(&["mount", &g2, mp.to_str().unwrap(), "--engine", "kernel"]);
    assert!(err.contains("started with the fuse engine"), "{err}");
    {
        // auto follows the session.
        let _m = e.mount(&g2, &mp, &["--engine", "auto"]);
        assert_eq!(status_json(&e, &g2)["engine"], "fuse");
        assert_eq!(fs::read_to_string(mp.join("src/new.txt")).unwrap(), "n");
    }

    // Read-only views have no engine to choose.
    let ro = e.grant(&["--allow", "src/**"]);
    // The flag itself (WOPFS_ENGINE=kernel is only a default for writable
    // views, which read-only views ignore).
    let out = wopfs_command()
        .args(["--state-dir", e.state.to_str().unwrap()])
        .args(["mount", &ro, mp.to_str().unwrap(), "--engine", "kernel"])
        .env_remove("WOPFS_ENGINE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--engine kernel is for read_write_overlay views"),
        "{err}"
    );
}

#[test]
fn hidden_names_stay_hidden_through_the_overlay() {
    if !kernel_engine_here() {
        return;
    }
    let e = Env::new();
    project(&e);
    let g = writable(&e);
    let m = kernel_mount(&e, &g, "mnt", &[]);
    // Make the directories overlay directories (copied up, merged).
    fs::write(m.path("src/new.txt"), "new").unwrap();
    fs::remove_file(m.path("src/b.txt")).unwrap();
    for hidden in [
        ".env",
        "docs",
        "docs/readme.md",
        "src/secret",
        "src/secret/key.pem",
    ] {
        let p = m.path(hidden);
        assert_eq!(
            errno(fs::symlink_metadata(&p)),
            libc::ENOENT,
            "stat {hidden}"
        );
        assert_eq!(errno(fs::File::open(&p)), libc::ENOENT, "open {hidden}");
        assert_eq!(errno(xattr_list(&p)), libc::ENOENT, "listxattr {hidden}");
        assert_eq!(
            errno(fs::rename(&p, m.path("src/moved"))),
            libc::ENOENT,
            "rename {hidden}"
        );
    }
    for dir in ["", "src"] {
        let names: Vec<String> = fs::read_dir(m.path(dir))
            .unwrap()
            .map(|d| d.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        for n in &names {
            assert!(
                ![".env", "docs", "secret", "b.txt"].contains(&n.as_str()),
                "{dir}: {names:?}"
            );
        }
    }
    // No overlay attribute shows on anything, merged or new.
    for p in ["", "src", "src/a.txt", "src/new.txt", "src/sub"] {
        // Entries only the lower holds answer EOPNOTSUPP: the lower
        // answers no xattr question (none of the host's reach the agent).
        let names = match xattr_list(&m.path(p)) {
            Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => Vec::new(),
            r => r.unwrap(),
        };
        assert!(
            !names.iter().any(|n| n.contains("overlay")),
            "{p}: {names:?}"
        );
    }
    // The whiteout of b.txt is not reachable as anything.
    assert_eq!(
        errno(fs::symlink_metadata(m.path("src/b.txt"))),
        libc::ENOENT
    );
}

/// The names of `p`'s xattrs (llistxattr).
fn xattr_list(p: &Path) -> std::io::Result<Vec<String>> {
    let c = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    let mut buf = vec![0u8; 4096];
    let n = unsafe { libc::llistxattr(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(buf[..n as usize]
        .split(|b| *b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect())
}

#[test]
fn unmount_kill_and_expiry_leave_nothing_mounted_and_the_upper_intact() {
    if !kernel_engine_here() {
        return;
    }
    let e = Env::new();
    project(&e);
    let g = writable(&e);
    let mp = e.mountpoint("mnt");
    // Unmount.
    {
        let _m = e.mount(&g, &mp, &["--engine", "kernel"]);
        fs::write(mp.join("src/one.txt"), "1").unwrap();
    }
    wait_until(
        "the stack to go after umount",
        Duration::from_secs(10),
        || nothing_left(&e, &g),
    );
    // kill -9 of the daemon: the guard takes the stack down.
    {
        let m = e.mount(&g, &mp, &["--engine", "kernel"]);
        assert_eq!(fs::read_to_string(mp.join("src/one.txt")).unwrap(), "1");
        fs::write(mp.join("src/two.txt"), "2").unwrap();
        let pid = m.pid.expect("daemon pid");
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        wait_until(
            "the guard to take the stack down",
            Duration::from_secs(10),
            || nothing_left(&e, &g),
        );
    }
    // Remount resumes: everything written before the kill is there.
    {
        let _m = e.mount(&g, &mp, &["--engine", "kernel"]);
        assert_eq!(fs::read_to_string(mp.join("src/one.txt")).unwrap(), "1");
        assert_eq!(fs::read_to_string(mp.join("src/two.txt")).unwrap(), "2");
    }
    wait_until("the stack to go", Duration::from_secs(10), || {
        nothing_left(&e, &g)
    });

    // Expiry takes the view down by itself.
    let g2 = e.grant(&[
        "--allow",
        "src/**",
        "--mode",
        "read_write_overlay",
        "--ttl",
        "2s",
    ]);
    let _m = e.mount(&g2, &mp, &["--engine", "kernel"]);
    fs::write(mp.join("src/late.txt"), "late").unwrap();
    wait_until(
        "expiry to take the stack down",
        Duration::from_secs(30),
        || nothing_left(&e, &g2),
    );
}

#[test]
fn a_half_dead_pair_is_named_blocks_commit_and_umount_removes_it() {
    if !kernel_engine_here() {
        return;
    }
    let e = Env::new();
    project(&e);
    let g = writable(&e);
    let mp = e.mountpoint("mnt");
    let m = e.mount(&g, &mp, &["--engine", "kernel"]);
    fs::write(mp.join("src/x.txt"), "x").unwrap();
    // Stop the guard, then kill the daemon and the guard: nothing is left
    // to take the overlay down.
    let guard = guard_pid(&g).expect("the guard runs");
    unsafe { libc::kill(guard as i32, libc::SIGSTOP) };
    let pid = m.pid.expect("daemon pid");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_until("the daemon to die", Duration::from_secs(10), || {
        !pid_running(pid)
    });
    unsafe { libc::kill(guard as i32, libc::SIGKILL) };
    wait_until("the guard to die", Duration::from_secs(10), || {
        !pid_running(guard)
    });
    assert!(is_mounted(&mp), "the overlay outlives its daemon and guard");

    let text = e.ok(&["status", &g]);
    assert!(text.contains("half-dead"), "{text}");
    assert_eq!(status_json(&e, &g)["half_dead"][0], mp.to_str().unwrap());
    let err = e.fails(&["commit", &g, "--yes"]);
    assert!(err.contains("half-dead"), "{err}");
    e.ok(&["umount", mp.to_str().unwrap()]);
    wait_until("umount to remove the pair", Duration::from_secs(10), || {
        nothing_left(&e, &g)
    });
    // The upper is intact: a remount shows the file.
    let _m = e.mount(&g, &mp, &["--engine", "kernel"]);
    assert_eq!(fs::read_to_string(mp.join("src/x.txt")).unwrap(), "x");
    drop(m);
}

/// The pid of grant `g`'s guard (`wopfs … guard g …`).
fn guard_pid(g: &str) -> Option<u32> {
    fs::read_dir("/proc").ok()?.flatten().find_map(|d| {
        let pid: u32 = d.file_name().to_str()?.parse().ok()?;
        let cmd = fs::read(d.path().join("cmdline")).ok()?;
        let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
        let is_guard = args.contains(&&b"guard"[..]) && args.contains(&g.as_bytes());
        is_guard.then_some(pid)
    })
}

#[test]
fn the_quota_answers_enospc_and_keeps_what_was_written() {
    if !kernel_engine_here() {
        return;
    }
    let e = Env::new();
    project(&e);
    let g = writable(&e);
    let mp = e.mountpoint("mnt");
    let quota = 4 << 20;
    {
        let _m = e.mount(
            &g,
            &mp,
            &[
                "--engine",
                "kernel",
                "--quota-bytes",
                &quota.to_string(),
                "--quota-files",
                "200",
            ],
        );
        fs::write(mp.join("src/kept.txt"), "kept").unwrap();
        // Bytes: a file larger than the image can hold stops with ENOSPC.
        let mut f = fs::File::create(mp.join("src/big.bin")).unwrap();
        let chunk = vec![7u8; 1 << 20];
        let mut written = 0u64;
        let err = loop {
            match f.write_all(&chunk) {
                Ok(()) => written += chunk.len() as u64,
                Err(e) => break e,
            }
            assert!(written < 1 << 30, "no limit met after {written} bytes");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        drop(f);
        fs::remove_file(mp.join("src/big.bin")).unwrap();
        // Files: creating past the inode limit stops with ENOSPC.
        let mut made = 0;
        let err = loop {
            match fs::write(mp.join(format!("src/f{made}")), "") {
                Ok(()) => made += 1,
                Err(e) => break e,
            }
            assert!(made < 100_000, "no file limit met after {made} files");
        };
        assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
        assert!(made >= 150, "only {made} files fit under a 200-file quota");
        assert_eq!(fs::read_to_string(mp.join("src/kept.txt")).unwrap(), "kept");
    }
    // Survives the unmount.
    let _m = e.mount(&g, &mp, &["--engine", "kernel"]);
    assert_eq!(fs::read_to_string(mp.join("src/kept.txt")).unwrap(), "kept");
    assert_eq!(fs::metadata(mp.join("src/f0")).unwrap().size(), 0);
}

/// With write prefixes the read-only lower view is at the mountpoint and
/// each prefix has an overlay of its own: `wopfs umount` of a busy view
/// keeps it whole (the prefix still writable), a `kill -9` takes every
/// part down, and the remount has the prefixes writable again with what
/// was written.
#[test]
fn write_prefix_binds_come_and_go_with_the_view() {
    if !kernel_engine_here() {
        return;
    }
    let e = Env::new();
    project(&e);
    let g = e.grant(&[
        "--allow",
        "**",
        "--mode",
        "read_write_overlay",
        "--write-prefix",
        "src/sub",
    ]);
    let mp = e.mountpoint("mnt");
    let overlays = |g: &str| -> Vec<String> {
        fs::read_to_string("/proc/self/mountinfo")
            .unwrap()
            .lines()
            .filter(|l| l.contains(&format!(" wopfs:{g} ")))
            .filter_map(|l| Some(l.split(' ').nth(4)?.to_string()))
            .collect()
    };
    {
        let m = e.mount(&g, &mp, &["--engine", "kernel"]);
        let at = |rel: &str| mp.join(rel).display().to_string();
        assert_eq!(
            overlays(&g),
            [at(""), at("src/sub")].map(|p| p.trim_end_matches('/').to_string())
        );
        assert_eq!(
            errno(fs::write(mp.join("src/x.txt"), "x")),
            libc::EROFS,
            "outside the prefix"
        );
        fs::write(mp.join("src/sub/in.txt"), "in").unwrap();
        // A process inside the prefix: the view is busy, and stays whole.
        let busy = fs::File::open(mp.join("src/sub/in.txt")).unwrap();
        let err = e.fails(&["umount", mp.to_str().unwrap()]);
        assert!(err.contains("busy"), "{err}");
        fs::write(mp.join("src/sub/after.txt"), "after")
            .expect("the prefix is writable again after a refused umount");
        drop(busy);
        // Busy outside the prefix: the prefix's overlay was unmounted first,
        // and is mounted again when the view itself turns out busy.
        let busy = fs::File::open(mp.join("docs/readme.md")).unwrap();
        let err = e.fails(&["umount", mp.to_str().unwrap()]);
        assert!(err.contains("busy"), "{err}");
        assert_eq!(overlays(&g).len(), 2, "the prefix's overlay is back");
        fs::write(mp.join("src/sub/after2.txt"), "after2")
            .expect("the prefix is writable again after a refused umount");
        drop(busy);
        // kill -9: the guard takes the overlay, its binds and the layer down.
        let pid = m.pid.expect("daemon pid");
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
        wait_until(
            "the guard to take every part down",
            Duration::from_secs(10),
            || nothing_left(&e, &g),
        );
        assert!(overlays(&g).is_empty());
    }
    let _m = e.mount(&g, &mp, &["--engine", "kernel"]);
    assert_eq!(fs::read_to_string(mp.join("src/sub/in.txt")).unwrap(), "in");
    assert_eq!(
        fs::read_to_string(mp.join("src/sub/after.txt")).unwrap(),
        "after"
    );
    fs::write(mp.join("src/sub/again.txt"), "again").expect("writable after remount");
    assert_eq!(errno(fs::write(mp.join("top.txt"), "t")), libc::EROFS);
}
