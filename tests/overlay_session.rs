//! Overlay sessions, really mounted: durability across `kill -9`, quotas,
//! concurrent writers, a heavy session that must leave the host tree
//! byte-for-byte identical, and a real build inside the mount.

mod common;

use std::fs;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

fn overlay_env() -> (Env, String) {
    let env = Env::new();
    env.write("README.md", "# project\n");
    env.write("src/main.c", "int main(void) { return 0; }\n");
    env.write("src/util/strings.c", "/* strings */\n");
    env.write("docs/guide.md", "guide\n");
    env.write(".env", "SECRET=1\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    (env, g)
}

/// Whether this run mounts writable views with the kernel engine.
fn kernel() -> bool {
    test_engine() == "kernel"
}

/// The errno of a full quota: `EDQUOT` from the fuse engine's own
/// accounting, `ENOSPC` from the kernel engine's layer image (sized to the
/// quota: README, "Two engines").
fn full() -> i32 {
    if kernel() {
        libc::ENOSPC
    } else {
        libc::EDQUOT
    }
}

/// Renames a directory that came from the host. The fuse engine renames
/// it; the kernel engine answers `EXDEV` (overlayfs without redirects,
/// documented), and then what `mv` does (copy, then remove) must work, so
/// the rest of the test checks the same result on both.
fn rename_host_dir(from: &Path, to: &Path) {
    if !kernel() {
        fs::rename(from, to).unwrap();
        return;
    }
    assert_eq!(
        errno(fs::rename(from, to)),
        libc::EXDEV,
        "renaming a host directory on the kernel engine"
    );
    let out = Command::new("mv").arg(from).arg(to).output().unwrap();
    assert!(
        out.status.success(),
        "mv after EXDEV: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(errno(fs::metadata(from)), libc::ENOENT);
}

fn wait_gone(pid: u32) {
    wait_until("the daemon to exit", Duration::from_secs(10), || {
        !pid_running(pid)
    });
}

#[test]
fn kill_9_then_remount_keeps_every_closed_and_fsynced_file() {
    let (env, g) = overlay_env();
    let mp = env.mountpoint("mnt");
    let before = tree_digest(&env.host);
    let m = env.mount(&g, &mp, &[]);
    fs::write(m.path("README.md"), "# edited\n").unwrap();
    fs::create_dir_all(m.path("new/deep")).unwrap();
    fs::write(m.path("new/deep/closed.txt"), "closed\n").unwrap();
    let mut synced = fs::File::create(m.path("new/synced.txt")).unwrap();
    synced.write_all(b"synced\n").unwrap();
    synced.sync_all().unwrap();
    rename_host_dir(&m.path("src/util"), &m.path("util"));
    fs::remove_file(m.path("docs/guide.md")).unwrap();
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i % 251) as u8).collect();
    fs::write(m.path("big.bin"), &big).unwrap();

    let pid = m.pid.expect("daemon pid");
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    wait_gone(pid);
    drop(synced);
    if kernel() {
        // The guard takes the overlay and its layer down when the daemon
        // dies (README, "Two engines"): no dead mount is left to clear.
        wait_until(
            "the guard to unmount the view",
            Duration::from_secs(10),
            || !is_mounted(&mp),
        );
    } else {
        // The dead mount is named as such, and `wopfs umount` clears it.
        let e = env.fails(&["mount", &g, mp.to_str().unwrap()]);
        assert!(e.contains("daemon has died"), "{e}");
        env.ok(&["umount", mp.to_str().unwrap()]);
        assert!(!is_mounted(&mp));
    }
    drop(m);

    let m = env.mount(&g, &mp, &[]);
    assert_eq!(
        fs::read_to_string(m.path("README.md")).unwrap(),
        "# edited\n"
    );
    assert_eq!(
        fs::read_to_string(m.path("new/deep/closed.txt")).unwrap(),
        "closed\n"
    );
    assert_eq!(
        fs::read_to_string(m.path("new/synced.txt")).unwrap(),
        "synced\n"
    );
    assert_eq!(
        fs::read_to_string(m.path("util/strings.c")).unwrap(),
        "/* strings */\n"
    );
    assert_eq!(errno(fs::metadata(m.path("src/util"))), libc::ENOENT);
    assert_eq!(errno(fs::metadata(m.path("docs/guide.md"))), libc::ENOENT);
    assert_eq!(fs::read(m.path("big.bin")).unwrap(), big);
    // And the mount works: more changes, another clean remount.
    fs::write(m.path("after.txt"), "after\n").unwrap();
    drop(m);
    let m = env.mount(&g, &mp, &[]);
    assert_eq!(fs::read_to_string(m.path("after.txt")).unwrap(), "after\n");
    drop(m);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
}

/// Checks that the files `names` of the view hold no more than `quota`
/// bytes: by apparent size on the fuse engine, by disk blocks (what its
/// quota counts) on the kernel engine.
fn assert_within_quota(m: &Mounted, names: &[&str], quota: u64) {
    use std::os::unix::fs::MetadataExt;
    let used: u64 = names
        .iter()
        .filter_map(|n| fs::metadata(m.path(n)).ok())
        .map(|md| {
            if kernel() {
                md.blocks() * 512
            } else {
                md.len()
            }
        })
        .sum();
    assert!(used <= quota, "{names:?} hold {used} bytes, quota {quota}");
}

/// Free entries and bytes of the view, as `df` shows them.
fn statfs_free(mp: &Path) -> (u64, u64) {
    let s = rustix::fs::statvfs(mp).expect("statvfs");
    (s.f_ffree, s.f_bavail * s.f_frsize)
}

/// Both engines hold an overlay to its quota with a clear errno (`full()`)
/// and lose nothing written. The fuse engine counts apparent sizes and
/// entries; the kernel engine's layer image holds exactly the quota's
/// inodes and (whole) blocks, directories and copy-ups included.
#[test]
fn quota_overflow_is_edquot_and_never_damages_written_data() {
    let (env, g) = overlay_env();
    let m = env.mount(
        &g,
        &env.mountpoint("mnt"),
        &["--quota-bytes", "1048576", "--quota-files", "8"],
    );
    // A fresh view offers the quota, no more.
    assert_eq!(statfs_free(&m.mp), (8, 1 << 20), "statfs of a fresh view");
    let first = vec![7u8; 700_000];
    fs::write(m.path("first.bin"), &first).unwrap();
    // Going over the byte quota fails and writes nothing past it.
    let mut f = fs::File::create(m.path("second.bin")).unwrap();
    f.write_all(&vec![1u8; 200_000]).unwrap();
    let e = f.write_all(&vec![2u8; 400_000]).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(full()), "{e}");
    drop(f);
    assert_eq!(
        fs::read(m.path("first.bin")).unwrap(),
        first,
        "earlier data damaged"
    );
    // The kernel may split a write; what fit went in, the rest was refused.
    let second = fs::read(m.path("second.bin")).unwrap();
    assert!(
        second.len() >= 200_000 && second.len() < 600_000,
        "{}",
        second.len()
    );
    assert!(
        second[..200_000].iter().all(|b| *b == 1),
        "earlier data damaged"
    );
    assert!(700_000 + second.len() <= 1 << 20, "over quota");
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.path("second.bin"))
        .unwrap();
    if kernel() {
        // Blocks, not apparent sizes: each write far out takes a block,
        // until none is left. (ext4 may refuse a large write a little
        // early, a large folio at a time, so some may be left above.)
        let mut far = 0u64;
        let e = loop {
            match f.write_at(b"x", (10 << 20) + far * (64 << 10)) {
                Ok(_) => far += 1,
                Err(e) => break e,
            }
            assert!(far <= 256, "{far} blocks written past a full 1 MiB quota");
        };
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    } else {
        // A sparse write far out counts its apparent size.
        assert_eq!(
            f.write_at(b"x", 10 << 20).unwrap_err().raw_os_error(),
            Some(libc::EDQUOT)
        );
    }
    assert_within_quota(&m, &["first.bin", "second.bin"], 1 << 20);
    // Freeing space lets writes through again.
    fs::remove_file(m.path("first.bin")).unwrap();
    f.write_all_at(&[3u8; 500_000], second.len() as u64)
        .unwrap();
    // The entry quota: objects, copy-ups included.
    let mut made = 0;
    let mut last = None;
    for i in 0..20 {
        match fs::write(m.path(&format!("n{i}.txt")), "n") {
            Ok(()) => made += 1,
            Err(e) => {
                last = e.raw_os_error();
                break;
            }
        }
    }
    assert_eq!(last, Some(full()));
    assert!(made < 8, "made {made} files past an 8-entry quota");
    assert_eq!(
        errno(
            fs::OpenOptions::new()
                .append(true)
                .open(m.path("README.md"))
        ),
        full(),
        "copy-up past the entry quota"
    );
    assert_eq!(
        fs::read_to_string(m.path("README.md")).unwrap(),
        "# project\n"
    );
    let (ffree, avail) = statfs_free(&m.mp);
    assert_eq!(ffree, 0, "statfs reports the entry quota used up");
    assert!(
        avail <= 1 << 20,
        "statfs reports the byte quota, got {avail}"
    );
    // Everything written is still there.
    let second_now = fs::read(m.path("second.bin")).unwrap();
    assert_eq!(second_now[..second.len()], second[..], "data damaged");
    let third = &second_now[second.len()..second.len() + 500_000];
    assert!(third.iter().all(|b| *b == 3), "data damaged");
    for i in 0..made {
        assert_eq!(
            fs::read_to_string(m.path(&format!("n{i}.txt"))).unwrap(),
            "n"
        );
    }
}

#[test]
fn concurrent_writers_on_different_files_and_on_one_file() {
    let (env, g) = overlay_env();
    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    const CHUNK: usize = 64 * 1024;
    std::thread::scope(|s| {
        for t in 0..4u8 {
            let m = &m;
            s.spawn(move || {
                let data = vec![t; 4 << 20];
                fs::write(m.path(&format!("own{t}.bin")), &data).unwrap();
            });
        }
    });
    for t in 0..4u8 {
        assert_eq!(
            fs::read(m.path(&format!("own{t}.bin"))).unwrap(),
            vec![t; 4 << 20]
        );
    }
    // Four writers on one file, each owning interleaved chunks.
    fs::File::create(m.path("shared.bin")).unwrap();
    std::thread::scope(|s| {
        for t in 0..4usize {
            let m = &m;
            s.spawn(move || {
                let f = fs::OpenOptions::new()
                    .write(true)
                    .open(m.path("shared.bin"))
                    .unwrap();
                for i in 0..32usize {
                    let chunk = i * 4 + t;
                    f.write_at(&vec![(chunk % 251) as u8; CHUNK], (chunk * CHUNK) as u64)
                        .unwrap();
                }
            });
        }
    });
    let got = fs::read(m.path("shared.bin")).unwrap();
    assert_eq!(got.len(), 128 * CHUNK);
    for chunk in 0..128 {
        assert!(
            got[chunk * CHUNK..(chunk + 1) * CHUNK]
                .iter()
                .all(|b| *b == (chunk % 251) as u8),
            "chunk {chunk} damaged"
        );
    }
    // Concurrent appends to one host-origin file (copied up once).
    std::thread::scope(|s| {
        for t in 0..4 {
            let m = &m;
            s.spawn(move || {
                for i in 0..50 {
                    let mut f = fs::OpenOptions::new()
                        .append(true)
                        .open(m.path("README.md"))
                        .unwrap();
                    writeln!(f, "line {t}-{i}").unwrap();
                }
            });
        }
    });
    let text = fs::read_to_string(m.path("README.md")).unwrap();
    assert!(text.starts_with("# project\n"));
    assert_eq!(text.lines().count(), 1 + 200, "appends lost");
}

/// A tiny C project, packed with tar, unpacked and built inside the mount.
#[test]
fn tar_x_and_make_j2_inside_the_mount() {
    let (env, g) = overlay_env();
    let before = tree_digest(&env.host);
    let proj = env.dir.path().join("proj/calc");
    fs::create_dir_all(&proj).unwrap();
    fs::write(
        proj.join("add.c"),
        "int add(int a, int b) { return a + b; }\n",
    )
    .unwrap();
    fs::write(
        proj.join("mul.c"),
        "int mul(int a, int b) { return a * b; }\n",
    )
    .unwrap();
    fs::write(
        proj.join("main.c"),
        "#include <stdio.h>\nint add(int,int); int mul(int,int);\n\
         int main(void) { printf(\"%d\\n\", add(2, mul(3, 4))); return 0; }\n",
    )
    .unwrap();
    fs::write(
        proj.join("Makefile"),
        "calc: main.o add.o mul.o\n\tcc -o $@ $^\n%.o: %.c\n\tcc -c -o $@ $<\nclean:\n\trm -f *.o calc\n",
    )
    .unwrap();
    let tarball = env.dir.path().join("calc.tar");
    let st = Command::new("tar")
        .args([
            "cf",
            tarball.to_str().unwrap(),
            "-C",
            env.dir.path().join("proj").to_str().unwrap(),
            "calc",
        ])
        .status()
        .unwrap();
    assert!(st.success());

    let m = env.mount(&g, &env.mountpoint("mnt"), &[]);
    let st = Command::new("tar")
        .args(["xf", tarball.to_str().unwrap()])
        .current_dir(m.path("src"))
        .status()
        .unwrap();
    assert!(st.success(), "tar x failed");
    let out = Command::new("make")
        .args(["-j2"])
        .current_dir(m.path("src/calc"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "make failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let run = Command::new(m.path("src/calc/calc")).output().unwrap();
    assert_eq!(String::from_utf8_lossy(&run.stdout), "14\n");
    // A second make has nothing to do: mtimes are right.
    let again = Command::new("make")
        .current_dir(m.path("src/calc"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&again.stdout).contains("up to date"),
        "{}",
        String::from_utf8_lossy(&again.stdout)
    );
    let clean = Command::new("make")
        .arg("clean")
        .current_dir(m.path("src/calc"))
        .status()
        .unwrap();
    assert!(clean.success());
    let st = Command::new("rm")
        .args(["-rf", "src/calc"])
        .current_dir(&m.mp)
        .status()
        .unwrap();
    assert!(st.success());
    assert_eq!(errno(fs::metadata(m.path("src/calc"))), libc::ENOENT);
    drop(m);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
}

#[test]
fn heavy_session_leaves_the_host_identical_and_status_shows_it() {
    let (env, g) = overlay_env();
    for i in 0..200 {
        env.write(
            &format!("many/d{}/f{i}.txt", i % 10),
            &format!("file {i}\n"),
        );
    }
    let g2 = env.grant(&["--mode", "read_write_overlay"]);
    let _ = g;
    let before = tree_digest(&env.host);
    let m = env.mount(&g2, &env.mountpoint("mnt"), &[]);
    for i in 0..200 {
        let p = m.path(&format!("many/d{}/f{i}.txt", i % 10));
        match i % 4 {
            0 => fs::write(&p, format!("changed {i}\n")).unwrap(),
            1 => fs::remove_file(&p).unwrap(),
            2 => fs::rename(&p, m.path(&format!("many/moved{i}.txt"))).unwrap(),
            _ => {
                use std::os::unix::fs::PermissionsExt;
                fs::set_permissions(&p, fs::Permissions::from_mode(0o600)).unwrap()
            }
        }
    }
    rename_host_dir(&m.path("many/d3"), &m.path("d3-renamed"));
    fs::create_dir(m.path("many/d3")).unwrap();
    fs::write(m.path("many/d3/fresh.txt"), "fresh\n").unwrap();
    fs::remove_dir_all(m.path("many/d9")).unwrap();
    let listing = list_tree(&m.mp);
    assert!(
        listing.contains(&"d3-renamed/f3.txt".to_string()),
        "{listing:?}"
    );
    assert_eq!(
        fs::read_to_string(m.path("d3-renamed/f3.txt")).unwrap(),
        "file 3\n"
    );
    let json: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", &g2, "--json"])).unwrap();
    let pending = json[0]["pending"].as_array().unwrap();
    let has = |path: &str, op: &str| pending.iter().any(|c| c["path"] == path && c["op"] == op);
    assert!(has("many/d0/f0.txt", "update"));
    assert!(has("many/d1/f1.txt", "delete"));
    assert!(has("many/moved2.txt", "create") && has("many/d2/f2.txt", "delete"));
    assert!(has("many/d7/f7.txt", "update"), "chmod is an update");
    assert!(has("d3-renamed/f3.txt", "create") && has("many/d3/f3.txt", "delete"));
    assert!(has("many/d3/fresh.txt", "create"));
    assert!(has("many/d9/f9.txt", "delete"));
    let text = env.ok(&["status", &g2]);
    assert!(text.contains("pending changes:"), "{text}");
    drop(m);
    assert_eq!(tree_digest(&env.host), before, "the host tree changed");
}

/// Readers and a writer arriving while they are open share one file: the
/// readers see the writes at once, on both engines. On the fuse engine
/// overlay files are read through FUSE passthrough and the joining writer
/// shares the readers' backing file, bypassing the per-write quota check
/// (documented, README "Speed"): its growth is settled into the quota
/// when it closes. The kernel engine has no such exception: readers and
/// writers all reach the upper file through overlayfs, and every write is
/// bounded by the layer image (`ENOSPC` once it is full).
#[test]
fn passthrough_readers_and_a_joining_writer_share_the_overlay_file() {
    let (env, g) = overlay_env();
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &["--quota-bytes", "1000000"]);
    fs::write(m.path("made.txt"), "0123456789").unwrap();
    // The kernel sends the writer's RELEASE after close returns: until the
    // daemon has it, a reader opening the file is not given passthrough
    // (a writer is still open). Unmounting waits for every release.
    drop(m);
    let m = env.mount(&g, &mp, &["--quota-bytes", "1000000"]);
    let reader = fs::File::open(m.path("made.txt")).unwrap();
    let mut buf = [0u8; 10];
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"0123456789");
    let writer = fs::OpenOptions::new()
        .write(true)
        .open(m.path("made.txt"))
        .unwrap();
    writer.write_all_at(b"ABCDE", 0).unwrap();
    reader.read_exact_at(&mut buf, 0).unwrap();
    assert_eq!(&buf, b"ABCDE56789", "the reader sees the writer's bytes");
    let grown = writer.write_all_at(&vec![b'x'; 1_200_000], 10);
    if kernel() {
        // Refused at the layer's limit; what fit went in.
        let e = grown.unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
    } else {
        // Past the quota: at close the growth is accounted.
        grown.unwrap();
    }
    drop(writer);
    drop(reader);
    let len = fs::metadata(m.path("made.txt")).unwrap().len();
    if kernel() {
        assert!(len > 10 && len <= 1_000_000, "{len}");
    } else {
        assert_eq!(len, 1_200_010);
    }
    let mut check = fs::File::open(m.path("made.txt")).unwrap();
    let mut head = [0u8; 10];
    std::io::Read::read_exact(&mut check, &mut head).unwrap();
    assert_eq!(&head, b"ABCDE56789", "written data damaged");
    // Further growth elsewhere is refused (on the kernel engine once the
    // few blocks a large write may leave are taken).
    let more = fill(&m.path("more.txt"));
    if kernel() {
        assert!(len + more <= 1_000_000, "{len} + {more} bytes");
        assert_within_quota(&m, &["made.txt", "more.txt"], 1_000_000);
    } else {
        assert_eq!(more, 0, "grew past the settled quota");
    }
    // Without a passthrough reader open, fuse writers are metered per
    // write and refused whole; the kernel engine's layer takes what fits,
    // then refuses.
    fs::remove_file(m.path("made.txt")).unwrap();
    let _ = fs::remove_file(m.path("more.txt"));
    fs::write(m.path("small.txt"), "s").unwrap();
    let f = fs::OpenOptions::new()
        .write(true)
        .open(m.path("small.txt"))
        .unwrap();
    let e = f.write_all_at(&vec![1u8; 1_100_000], 0).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(full()), "{e}");
    if kernel() {
        assert_within_quota(&m, &["small.txt"], 1_000_000);
    } else {
        assert_eq!(fs::read(m.path("small.txt")).unwrap(), b"s");
    }
}

/// Creates `path` and appends 4 KiB at a time until the create or a write
/// fails, which must be with the full quota's errno; returns the bytes
/// written.
fn fill(path: &Path) -> u64 {
    // The fuse engine refuses the create itself past the byte quota.
    let mut f = match fs::OpenOptions::new().create(true).append(true).open(path) {
        Ok(f) => f,
        Err(e) => {
            assert_eq!(e.raw_os_error(), Some(full()), "{e}");
            return 0;
        }
    };
    let chunk = [9u8; 4096];
    let mut n = 0u64;
    loop {
        match f.write(&chunk) {
            Ok(k) => n += k as u64,
            Err(e) => {
                assert_eq!(e.raw_os_error(), Some(full()), "{e}");
                return n;
            }
        }
        assert!(n < 64 << 20, "no quota met after {n} bytes");
    }
}
