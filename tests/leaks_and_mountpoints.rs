//! Small leaks of a mounted view and the mountpoint rules, really mounted:
//! `trusted.*` xattr names are listed only to privileged callers, `statfs`
//! reports the view and never the host filesystem, an expired view can be
//! unmounted, a closed stdout ends a command quietly, a non-empty
//! mountpoint is refused and relative mountpoints work.

mod common;

use std::fs;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

/// Lets uid 1000 reach the mountpoints under the test's temp dir.
fn open_to_others(env: &Env) {
    fs::set_permissions(env.dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
}

fn names(list: &[u8]) -> Vec<String> {
    list.split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect()
}

/// `listxattr` of `path` through rustix, as the test (root).
fn listxattr(path: &Path) -> Vec<String> {
    let mut buf = vec![0u8; 64 * 1024];
    let n = rustix::fs::llistxattr(path, &mut buf[..]).expect("listxattr");
    names(&buf[..n])
}

/// What uid 1000 sees of `path`'s xattrs: its names, one a line, then
/// `trusted.wopfs: <errno or value>`.
fn xattrs_as_uid_1000(path: &Path) -> String {
    let script = "import os, sys\n\
                  p = sys.argv[1]\n\
                  for n in os.listxattr(p, follow_symlinks=False): print(n)\n\
                  try:\n    print('trusted.wopfs: value', os.getxattr(p, 'trusted.wopfs'))\n\
                  except OSError as e:\n    print('trusted.wopfs: errno', e.errno)\n";
    let out = Command::new("setpriv")
        .args(["--reuid", "1000", "--regid", "1000", "--clear-groups"])
        .args(["/usr/bin/python3", "-c", script])
        .arg(path)
        .output()
        .expect("running python3 as uid 1000");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn trusted_xattr_names_are_listed_only_to_privileged_callers() {
    let env = Env::new();
    env.write("a.txt", "a\n");
    env.write("d/b.txt", "b\n");
    let flags = rustix::fs::XattrFlags::empty();
    for rel in ["a.txt", "d"] {
        let p = env.host.join(rel);
        rustix::fs::setxattr(&p, "trusted.wopfs", b"secret-label", flags).unwrap();
        rustix::fs::setxattr(&p, "user.note", b"n", flags).unwrap();
    }
    open_to_others(&env);
    for mode in ["read_only", "read_write_overlay"] {
        let g = env.grant(&["--mode", mode]);
        let m = env.mount(
            &g,
            &env.mountpoint(&format!("mnt-{mode}")),
            &["--allow-other"],
        );
        for rel in ["a.txt", "d"] {
            // Root (CAP_SYS_ADMIN) sees them, as on the host.
            let root = listxattr(&m.path(rel));
            assert!(root.contains(&"trusted.wopfs".to_string()), "{root:?}");
            assert!(root.contains(&"user.note".to_string()), "{root:?}");
            // uid 1000 does not: neither the name nor the value.
            let seen = xattrs_as_uid_1000(&m.path(rel));
            assert!(seen.contains("user.note\n"), "{mode} {rel}: {seen}");
            assert!(!seen.contains("trusted.wopfs\n"), "{mode} {rel}: {seen}");
            assert!(!seen.contains("secret-label"), "{mode} {rel}: {seen}");
            assert!(
                seen.contains(&format!("trusted.wopfs: errno {}", libc::ENODATA)),
                "{mode} {rel}: {seen}"
            );
        }
        // A copied-up file carries only user.* attributes of the view.
        if mode == "read_write_overlay" {
            fs::write(m.path("a.txt"), "changed\n").unwrap();
            let after = listxattr(&m.path("a.txt"));
            assert_eq!(after, vec!["user.note".to_string()], "{after:?}");
        }
    }
}

/// Every entry under `root` (the root included) and the bytes the grant
/// counts for them (file sizes, link target lengths).
fn entries_and_bytes(root: &Path) -> (u64, u64) {
    let all = list_tree(root);
    let bytes = all
        .iter()
        .map(|rel| fs::symlink_metadata(root.join(rel)).unwrap())
        .filter(|m| !m.is_dir())
        .map(|m| m.len())
        .sum();
    (all.len() as u64 + 1, bytes)
}

#[test]
fn statfs_reports_the_view_not_the_host() {
    let env = Env::new();
    env.write("README.md", "# readme\n");
    env.write("src/a.py", &"a = 1\n".repeat(2000));
    env.write("src/deep/b.py", &"b = 2\n".repeat(5000));
    env.link("src/link", "a.py");
    env.write(".env", "SECRET=1\n");
    env.write("private/x.txt", "hidden\n");

    // Read-only: the view's entries and size, nothing free.
    let json = env.ok(&[
        "grant",
        "--root",
        env.host.to_str().unwrap(),
        "--purpose",
        "t",
        "--deny",
        "private",
        "--json",
    ]);
    let grant: serde_json::Value = serde_json::from_str(&json).unwrap();
    let g = grant["grant_id"].as_str().unwrap().to_string();
    let total = grant["total_size_bytes"].as_u64().unwrap();
    let m = env.mount(&g, &env.mountpoint("ro"), &[]);
    let (entries, bytes) = entries_and_bytes(&m.mp);
    assert_eq!(bytes, total);
    let st = rustix::fs::statvfs(&m.mp).unwrap();
    let host = rustix::fs::statvfs(&env.host).unwrap();
    assert_eq!((st.f_bsize, st.f_frsize), (4096, 4096));
    assert_eq!(st.f_files, entries, "entries of the view");
    assert_eq!(st.f_blocks, total.div_ceil(4096), "size of the view");
    assert_eq!((st.f_bfree, st.f_bavail, st.f_ffree), (0, 0, 0));
    assert_ne!(st.f_blocks, host.f_blocks);
    drop(m);

    // Overlay: the same, plus the quota's free bytes and objects.
    let g = env.grant(&["--mode", "read_write_overlay", "--deny", "private"]);
    let quota = 1_000_000u64;
    let mp = env.mountpoint("rw");
    let m = env.mount(
        &g,
        &mp,
        &["--quota-bytes", "1000000", "--quota-files", "50"],
    );
    let st = rustix::fs::statvfs(&m.mp).unwrap();
    assert_eq!(st.f_files, entries + 50);
    assert_eq!(st.f_ffree, 50);
    assert_eq!((st.f_bfree, st.f_bavail), (quota / 4096, quota / 4096));
    assert_eq!(st.f_blocks, total.div_ceil(4096) + quota / 4096);
    fs::write(m.path("new.txt"), vec![b'x'; 10_000]).unwrap();
    let st = rustix::fs::statvfs(&m.mp).unwrap();
    let free = (quota - 10_000) / 4096;
    assert_eq!(st.f_ffree, 49, "one object used");
    assert_eq!(
        st.f_files,
        entries + 1 + 49,
        "one entry more, one object less"
    );
    assert_eq!((st.f_bfree, st.f_bavail), (free, free));
    assert_eq!(st.f_blocks, (total + 10_000).div_ceil(4096) + free);
}

#[test]
fn an_expired_view_can_be_unmounted() {
    let env = Env::new();
    env.write("a.txt", "a\n");
    for (name, lazy) in [("plain", false), ("lazy", true)] {
        let g = env.grant(&["--ttl", "2s"]);
        let mp = env.mountpoint(name);
        let m = env.mount(&g, &mp, &[]);
        let pid = m.pid.expect("daemon pid");
        wait_until("the grant to expire", Duration::from_secs(30), || {
            fs::metadata(&mp).is_err_and(|e| e.raw_os_error() == Some(libc::EACCES))
        });
        // As `wopfs commit` says to: by its path, and by a relative one.
        let mut cmd = wopfs_command();
        cmd.arg("--state-dir").arg(&env.state).arg("umount");
        if lazy {
            cmd.arg("--lazy");
        }
        let out = cmd.arg(name).current_dir(env.dir.path()).output().unwrap();
        assert!(
            out.status.success(),
            "{name}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!is_mounted(&mp), "{name}: still mounted");
        wait_until("the daemon to exit", Duration::from_secs(30), || {
            !pid_running(pid)
        });
        // The mountpoint is an ordinary directory again.
        assert!(fs::read_dir(&mp).unwrap().next().is_none());
        drop(m);
    }
}

/// A session with a diff of many lines (more than a pipe holds).
fn session_with_changes(env: &Env) -> String {
    env.write("README.md", "# readme\n");
    env.write("src/big.txt", &"old line\n".repeat(20_000));
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    fs::write(m.path("src/big.txt"), "new line\n".repeat(20_000)).unwrap();
    fs::write(m.path("src/new.txt"), "new\n").unwrap();
    drop(m);
    g
}

/// Runs wopfs with stdout a pipe whose reader is already gone.
fn with_closed_stdout(env: &Env, args: &[&str]) -> std::process::Output {
    let mut fds = [0; 2];
    // SAFETY: pipe(2) into a two-int array.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: both fds were just made and are owned here.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(r);
    wopfs_command()
        .arg("--state-dir")
        .arg(&env.state)
        .args(args)
        .stdout(Stdio::from(w))
        .stderr(Stdio::piped())
        .output()
        .unwrap()
}

/// Exit 0, 141, or death by SIGPIPE; nothing on stderr.
fn assert_quiet(what: &str, out: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    let ok = matches!(out.status.code(), Some(0) | Some(141))
        || out.status.signal() == Some(libc::SIGPIPE);
    assert!(ok, "{what}: {:?}; stderr: {stderr}", out.status);
    assert!(stderr.is_empty(), "{what}: {stderr}");
}

#[test]
fn a_closed_stdout_ends_commands_quietly() {
    let env = Env::new();
    let g = session_with_changes(&env);
    // The pipeline of the report, with pipefail so wopfs's status shows.
    let out = Command::new("bash")
        .arg("-c")
        .arg(r#"set -o pipefail; "$0" --state-dir "$1" diff "$2" | head -1"#)
        .arg(BIN)
        .arg(&env.state)
        .arg(&g)
        .output()
        .unwrap();
    assert!(
        matches!(out.status.code(), Some(0) | Some(141)),
        "{:?}",
        out.status
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 1);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.is_empty(), "{stderr}");
    // Every command that prints, with its reader gone before it writes.
    let root = env.host.to_str().unwrap();
    for args in [
        &["diff", &g][..],
        &["diff", &g, "--stat"],
        &["diff", &g, "--json"],
        &["export", &g],
        &["status"],
        &["status", &g],
        &["status", "--json"],
        &["audit"],
        &["audit", "--verify"],
        &["search", "--root", root, "readme"],
        &["search", "--root", root, "readme", "--json"],
        &["grant", "--root", root, "--purpose", "p"],
        &["grant", "--root", root, "--purpose", "p", "--json"],
        &["mount", "--help"],
        &["--help"],
    ] {
        assert_quiet(&format!("{args:?}"), &with_closed_stdout(&env, args));
    }
}

#[test]
fn a_non_empty_mountpoint_is_refused() {
    let env = Env::new();
    env.write("a.txt", "a\n");
    let g = env.grant(&[]);
    let mp = env.mountpoint("mnt");
    fs::write(mp.join("mine.txt"), "mine\n").unwrap();
    let err = env.fails(&["mount", &g, mp.to_str().unwrap()]);
    assert!(
        err.contains("is not empty") && err.contains("mine.txt"),
        "{err}"
    );
    assert!(err.starts_with("wopfs: ") && err.trim_end().lines().count() == 1);
    assert!(!is_mounted(&mp));
    assert_eq!(fs::read_to_string(mp.join("mine.txt")).unwrap(), "mine\n");
    // --foreground checks the same, before mounting anything.
    let err = env.fails(&["mount", &g, mp.to_str().unwrap(), "--foreground"]);
    assert!(err.contains("is not empty"), "{err}");
    assert!(!is_mounted(&mp));
    // Emptied, it mounts.
    fs::remove_file(mp.join("mine.txt")).unwrap();
    let m = env.mount(&g, &mp, &[]);
    assert_eq!(fs::read_to_string(m.path("a.txt")).unwrap(), "a\n");
}

#[test]
fn relative_mountpoints_work() {
    let env = Env::new();
    env.write("a.txt", "a\n");
    let g = env.grant(&[]);
    let base = env.dir.path().canonicalize().unwrap();
    let mp = env.mountpoint("m");
    let wopfs = |args: &[&str]| {
        wopfs_command()
            .arg("--state-dir")
            .arg(&env.state)
            .args(args)
            .current_dir(&base)
            .output()
            .unwrap()
    };
    // mount and umount by a path relative to the working directory.
    let out = wopfs(&["mount", &g, "m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let m = Mounted::new(mp.clone(), env.daemon_pid(&g));
    assert!(is_mounted(&mp));
    assert_eq!(fs::read_to_string(m.path("a.txt")).unwrap(), "a\n");
    let status = env.ok(&["status", &g, "--json"]);
    assert!(status.contains(mp.to_str().unwrap()), "{status}");
    let out = wopfs(&["umount", "./m"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!is_mounted(&mp));
    drop(m);
    // `wopfs run --at` relative to the working directory.
    let out = wopfs(&["run", &g, "--at", "ws", "--", "sh", "-c", "pwd; cat a.txt"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text, format!("{}\na\n", base.join("ws").display()));
    assert!(!base.join("ws").exists(), "--at made for the run stays");
}
