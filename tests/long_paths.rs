//! Paths longer than PATH_MAX (4096 bytes), really mounted: a file made that
//! deep inside a writable view is diffed, exported and committed to the
//! host; a host tree that already holds such a path is granted and read
//! through a read-only view. No syscall here ever sees a whole long path:
//! directories are made and opened one component at a time from a dir fd.

mod common;

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};

use common::*;

/// 24 directories of 200-byte names: 4824 bytes before the file name.
fn long_dirs(tag: char) -> Vec<String> {
    (0..24)
        .map(|i| format!("{i:02}{}", tag.to_string().repeat(198)))
        .collect()
}

/// Opens (making them when `create`) the directories `dirs` beneath
/// `base`, one `mkdirat`/`openat` per component.
fn open_chain(base: &Path, dirs: &[String], create: bool) -> OwnedFd {
    let mut fd = rfs::open(base, OFlags::PATH | OFlags::DIRECTORY, Mode::empty())
        .unwrap_or_else(|e| panic!("opening {}: {e}", base.display()));
    for (i, d) in dirs.iter().enumerate() {
        if create {
            match rfs::mkdirat(&fd, d.as_str(), Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                Err(e) => panic!("mkdirat level {i}: {e}"),
            }
        }
        fd = rfs::openat(
            &fd,
            d.as_str(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW,
            Mode::empty(),
        )
        .unwrap_or_else(|e| panic!("openat level {i}: {e}"));
    }
    fd
}

fn write_in(dir: &OwnedFd, name: &str, data: &[u8], flags: OFlags) {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::NOFOLLOW | flags,
        Mode::from_raw_mode(0o644),
    )
    .unwrap_or_else(|e| panic!("writing {name}: {e}"));
    File::from(fd).write_all(data).unwrap();
}

fn read_in(dir: &OwnedFd, name: &str) -> std::io::Result<Vec<u8>> {
    let fd = rfs::openat(dir, name, OFlags::RDONLY | OFlags::NOFOLLOW, Mode::empty())?;
    let mut v = Vec::new();
    File::from(fd).read_to_end(&mut v)?;
    Ok(v)
}

fn names_in(dir: &OwnedFd) -> Vec<String> {
    let d = rfs::openat(dir, ".", OFlags::RDONLY | OFlags::DIRECTORY, Mode::empty()).unwrap();
    let mut names: Vec<String> = rfs::Dir::read_from(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n != "." && n != "..")
        .collect();
    names.sort();
    names
}

#[test]
fn paths_longer_than_path_max_commit() {
    let env = Env::new();
    env.write("README.md", "# long paths\n");
    // Already on the host at grant time, as deep as the new file will be.
    let dirs = long_dirs('d');
    let host_deep = open_chain(&env.host, &dirs, true);
    write_in(&host_deep, "old.txt", b"old line\n", OFlags::CREATE);
    write_in(&host_deep, "gone.txt", b"to delete\n", OFlags::CREATE);
    drop(host_deep);
    let dir = dirs.join("/");
    let new_path = format!("{dir}/new.txt");
    assert!(new_path.len() > 4096, "{}", new_path.len());

    let g = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    // The granted deep file is there; new directories and a new file go
    // deeper still, made one level at a time through the mount.
    let view_deep = open_chain(&m.mp, &dirs, false);
    assert_eq!(read_in(&view_deep, "old.txt").unwrap(), b"old line\n");
    write_in(
        &view_deep,
        "new.txt",
        b"hello long path\n",
        OFlags::CREATE | OFlags::EXCL,
    );
    write_in(&view_deep, "old.txt", b"new line\n", OFlags::TRUNC);
    rfs::unlinkat(&view_deep, "gone.txt", AtFlags::empty()).unwrap();
    let more = long_dirs('e')[..3].to_vec();
    let deeper = open_chain(
        &m.mp,
        &dirs.iter().chain(&more).cloned().collect::<Vec<_>>(),
        true,
    );
    write_in(
        &deeper,
        "deeper.txt",
        b"deeper\n",
        OFlags::CREATE | OFlags::EXCL,
    );
    assert_eq!(
        names_in(&view_deep),
        vec![more[0].clone(), "new.txt".into(), "old.txt".into()]
    );
    drop((view_deep, deeper));
    drop(m);
    // The host is untouched until the commit.
    assert_eq!(
        read_in(&open_chain(&env.host, &dirs, false), "old.txt").unwrap(),
        b"old line\n"
    );

    let status = env.ok(&["status", &g]);
    assert!(status.contains(&new_path), "{status}");

    let diff = env.ok(&["diff", &g]);
    assert!(
        diff.contains(&format!("diff --wopfs a/{new_path} b/{new_path}")),
        "{diff}"
    );
    assert!(diff.contains("+hello long path"), "{diff}");
    assert!(diff.contains("-old line\n+new line"), "{diff}");
    assert!(diff.contains(&format!("{dir}/gone.txt")), "{diff}");
    assert!(diff.contains("deleted file mode"), "{diff}");

    let out = env.dir.path().join("set");
    env.ok(&["export", &g, "-o", out.to_str().unwrap()]);
    let set: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("patchset.json")).unwrap()).unwrap();
    let ops: Vec<(String, String)> = set["patches"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["path"].as_str().unwrap().to_string(),
                p["operation"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let deeper_path = format!("{dir}/{}/deeper.txt", more.join("/"));
    assert_eq!(
        ops,
        vec![
            (deeper_path.clone(), "create".into()),
            (format!("{dir}/gone.txt"), "delete".into()),
            (new_path.clone(), "create".into()),
            (format!("{dir}/old.txt"), "update".into()),
        ]
    );

    env.ok(&["commit", &g, "--yes"]);
    let host_deep = open_chain(&env.host, &dirs, false);
    assert_eq!(
        read_in(&host_deep, "new.txt").unwrap(),
        b"hello long path\n"
    );
    assert_eq!(read_in(&host_deep, "old.txt").unwrap(), b"new line\n");
    assert_eq!(
        read_in(&host_deep, "gone.txt").unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    let host_deeper = open_chain(
        &env.host,
        &dirs.iter().chain(&more).cloned().collect::<Vec<_>>(),
        false,
    );
    assert_eq!(read_in(&host_deeper, "deeper.txt").unwrap(), b"deeper\n");
    // No temp or backup names left beside them.
    assert_eq!(
        names_in(&host_deep),
        vec![more[0].clone(), "new.txt".into(), "old.txt".into()]
    );
    assert_eq!(names_in(&host_deeper), vec!["deeper.txt".to_string()]);
    // Nothing is pending any more.
    let status = env.ok(&["status", &g]);
    assert!(!status.contains(&new_path), "{status}");
}

#[test]
fn host_paths_longer_than_path_max_are_granted_and_read() {
    let env = Env::new();
    env.write("README.md", "# long paths\n");
    let dirs = long_dirs('h');
    let host_deep = open_chain(&env.host, &dirs, true);
    write_in(&host_deep, "deep.md", b"deep content\n", OFlags::CREATE);
    write_in(&host_deep, ".env", b"SECRET=1\n", OFlags::CREATE);
    rfs::symlinkat("deep.md", &host_deep, "link.md").unwrap();
    rfs::symlinkat("/etc/passwd", &host_deep, "out.md").unwrap();
    drop(host_deep);
    let deep_path = format!("{}/deep.md", dirs.join("/"));
    assert!(deep_path.len() > 4096);

    let g = env.grant(&[]);
    let rec: serde_json::Value = serde_json::from_slice(
        &std::fs::read(env.state.join("sessions").join(&g).join("grant.json")).unwrap(),
    )
    .unwrap();
    let granted: Vec<&str> = rec["files"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["path"].as_str().unwrap())
        .collect();
    let link_path = format!("{}/link.md", dirs.join("/"));
    assert_eq!(
        granted,
        vec![deep_path.as_str(), link_path.as_str(), "README.md"]
    );
    // Nothing cached, so a host change shows at once (below).
    let m = env.mount(&g, &env.mountpoint("mnt"), &["--cache-ttl", "0"]);
    let view_deep = open_chain(&m.mp, &dirs, false);
    assert_eq!(read_in(&view_deep, "deep.md").unwrap(), b"deep content\n");
    // The same rules as at any depth: the secret and the link leading out
    // are not there, the link inside is a link.
    assert_eq!(names_in(&view_deep), vec!["deep.md", "link.md"]);
    assert_eq!(
        read_in(&view_deep, ".env").unwrap_err().raw_os_error(),
        Some(libc::ENOENT)
    );
    let target = rfs::readlinkat(&view_deep, "link.md", Vec::new()).unwrap();
    assert_eq!(target.to_bytes(), b"deep.md");
    let st = rfs::statat(&view_deep, "deep.md", AtFlags::SYMLINK_NOFOLLOW).unwrap();
    assert_eq!(st.st_size, 13);
    // Read-only.
    let e = rfs::openat(
        &view_deep,
        "new.md",
        OFlags::WRONLY | OFlags::CREATE,
        Mode::from_raw_mode(0o644),
    )
    .unwrap_err();
    assert_eq!(e, rustix::io::Errno::ROFS);
    drop(view_deep);

    // The host file changed under the view: live content, as anywhere.
    let host_deep = open_chain(&env.host, &dirs, false);
    write_in(&host_deep, "deep.md", b"changed\n", OFlags::TRUNC);
    let view_deep = open_chain(&m.mp, &dirs, false);
    assert_eq!(read_in(&view_deep, "deep.md").unwrap(), b"changed\n");
    drop(view_deep);
    drop(m);
}
