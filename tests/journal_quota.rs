//! The overlay journal under a byte quota, really mounted: a hostile loop of
//! renames, create/unlink, mkdir/rmdir, chmod/utimens/setxattr and long
//! names cannot grow the state dir past the quota (plus the documented
//! removal grace); what does not fit answers EDQUOT; and afterwards the
//! journal replays to the same view, and `status`/`diff` work.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

const QUOTA: u64 = 1 << 20;
/// `overlay::REMOVAL_GRACE`: removals may pass the byte quota by this much.
const GRACE: u64 = 64 << 10;

/// Apparent size of every file and symlink under `dir` (what the byte
/// quota counts; directories are bounded by the entry quota instead).
fn apparent_size(dir: &Path) -> u64 {
    let mut total = 0;
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    for e in entries.flatten() {
        let Ok(m) = fs::symlink_metadata(e.path()) else {
            continue;
        };
        if m.is_dir() {
            total += apparent_size(&e.path());
        } else {
            total += m.len();
        }
    }
    total
}

/// Paths, kinds, modes, contents and link targets of a tree (no times).
fn content_digest(root: &Path) -> Vec<(String, u32, Vec<u8>)> {
    list_tree(root)
        .into_iter()
        .map(|rel| {
            let p = root.join(&rel);
            let m = fs::symlink_metadata(&p).unwrap();
            let body = if m.file_type().is_symlink() {
                fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else if m.is_file() {
                fs::read(&p).unwrap()
            } else {
                Vec::new()
            };
            (rel, m.mode(), body)
        })
        .collect()
}

fn errno_of(e: &std::io::Error) -> i32 {
    e.raw_os_error().unwrap_or(0)
}

struct Bound<'a> {
    env: &'a Env,
    session: std::path::PathBuf,
    /// The state dir's size at mount, before the session changed anything.
    baseline: u64,
    max_journal: u64,
}

impl Bound<'_> {
    fn check(&mut self, when: &str) {
        let overlay = apparent_size(&self.session.join("overlay"));
        let state = apparent_size(&self.env.state);
        let journal = fs::metadata(self.session.join("overlay/journal.jsonl"))
            .map(|m| m.len())
            .unwrap_or(0);
        self.max_journal = self.max_journal.max(journal);
        assert!(
            overlay <= QUOTA + GRACE,
            "{when}: overlay holds {overlay} bytes (journal {journal})"
        );
        assert!(
            state <= self.baseline + QUOTA + GRACE,
            "{when}: state dir holds {state} bytes, {} at mount",
            self.baseline
        );
    }
}

#[test]
fn journal_stays_within_quota_under_many_renames() {
    let env = Env::new();
    env.write("README.md", "# project\n");
    env.write("src/main.c", "int main(void) { return 0; }\n");
    env.write("src/util/strings.c", "/* strings */\n");
    env.write("docs/guide.md", "guide\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mnt");
    let quota = QUOTA.to_string();
    let m = env.mount(&g, &mp, &["--quota-bytes", &quota]);
    let session = env.state.join("sessions").join(&g);
    let mut bound = Bound {
        env: &env,
        session: session.clone(),
        baseline: apparent_size(&env.state),
        max_journal: 0,
    };
    let start = Instant::now();
    let long = "L".repeat(250);

    // 1. Renames back and forth: a host file under a 250-byte name, and a
    //    host directory (whose untouched files get pinned records). Without
    //    compaction this journal would pass 6 MB, six times the quota.
    let (a, b) = (m.path("README.md"), m.path(&long));
    let (d1, d2) = (m.path("src"), m.path(&format!("{long}-dir")));
    for i in 0..12_000 {
        if i % 2 == 0 {
            fs::rename(&a, &b).unwrap();
        } else {
            fs::rename(&b, &a).unwrap();
        }
        if i % 8 == 0 {
            fs::rename(&d1, &d2).unwrap();
            fs::rename(&d2, &d1).unwrap();
        }
        if i % 500 == 0 {
            bound.check(&format!("rename {i}"));
        }
    }
    bound.check("after the renames");
    assert!(
        bound.max_journal <= 128 << 10,
        "the journal reached {} bytes: not compacted as it grew",
        bound.max_journal
    );

    // 2. Create/unlink and mkdir/rmdir loops under long names.
    for i in 0..2_000 {
        let f = m.path(&format!("{long}{}", i % 5));
        fs::write(&f, b"x").unwrap();
        fs::remove_file(&f).unwrap();
        let d = m.path(&format!("docs/{long}"));
        fs::create_dir(&d).unwrap();
        fs::remove_dir(&d).unwrap();
    }
    bound.check("after create/unlink and mkdir/rmdir");
    assert!(
        bound.max_journal <= 128 << 10,
        "journal {}",
        bound.max_journal
    );

    // 3. Metadata loops: chmod, utimens, and one xattr rewritten, on a
    //    copied-up host file. They change the object, never the journal.
    let guide = m.path("docs/guide.md");
    let journal_before = fs::metadata(session.join("overlay/journal.jsonl"))
        .unwrap()
        .len();
    for i in 0..1_000u32 {
        fs::set_permissions(&guide, fs::Permissions::from_mode(0o600 | ((i % 2) * 0o44))).unwrap();
        let f = fs::File::options().write(true).open(&guide).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(u64::from(i)))
            .unwrap();
        rustix::fs::setxattr(
            &guide,
            "user.note",
            format!("note {i}").as_bytes(),
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
    }
    let journal_after = fs::metadata(session.join("overlay/journal.jsonl"))
        .unwrap()
        .len();
    assert!(
        journal_after <= journal_before + 1024,
        "metadata loops grew the journal from {journal_before} to {journal_after}"
    );
    // Distinct xattrs count against the quota: refused before the state
    // dir passes it (EDQUOT, or the state filesystem's own ENOSPC).
    let value = vec![b'v'; 4000];
    let mut refused = None;
    for i in 0..400 {
        let f = m.path(&format!("x{i}"));
        if let Err(e) = fs::write(&f, b"") {
            refused = Some(errno_of(&e));
            break;
        }
        if let Err(e) =
            rustix::fs::setxattr(&f, "user.big", &value, rustix::fs::XattrFlags::empty())
        {
            refused = Some(e.raw_os_error());
            break;
        }
    }
    assert!(
        matches!(refused, Some(libc::EDQUOT) | Some(libc::ENOSPC)),
        "400 x 4 KB of xattrs under a 1 MiB quota: {refused:?}"
    );
    bound.check("after the xattrs");
    for i in 0..400 {
        let _ = fs::remove_file(m.path(&format!("x{i}")));
    }

    // 4. Fill the quota with data, then keep renaming: EDQUOT, never more.
    let big = m.path("big.bin");
    let mut data_len = 0usize;
    {
        use std::io::Write;
        let mut f = fs::File::create(&big).unwrap();
        let chunk = vec![0x5au8; 16 << 10];
        loop {
            match f.write(&chunk) {
                Ok(n) => data_len += n,
                Err(e) => {
                    assert_eq!(errno_of(&e), libc::EDQUOT, "{e}");
                    break;
                }
            }
        }
    }
    assert!(
        data_len as u64 > QUOTA / 2,
        "only {data_len} bytes of data fit"
    );
    // What room is left goes to new names (their records stay live), until
    // even the compacted journal does not fit: EDQUOT.
    let mut created = 0;
    let err = loop {
        match fs::write(m.path(&format!("{}{created}", &long[..240])), b"") {
            Ok(()) => created += 1,
            Err(e) => break e,
        }
        assert!(created < 1000, "1000 names created at a full quota");
    };
    assert_eq!(errno_of(&err), libc::EDQUOT, "{err}");
    bound.check("at a full quota");
    // Renames too are refused whole: both names stay as they were.
    let err = fs::rename(&a, &b).unwrap_err();
    assert_eq!(errno_of(&err), libc::EDQUOT, "{err}");
    assert!(a.exists() && !b.exists());
    bound.check("at a full quota, after a refused rename");
    // Nothing written is lost.
    let got = fs::read(&big).unwrap();
    assert_eq!(got.len(), data_len);
    assert!(got.iter().all(|b| *b == 0x5a), "data damaged");
    // Deleting makes room again, even at a full quota.
    fs::remove_file(&big).unwrap();
    fs::write(m.path("big-copy.bin"), &got[..1000]).unwrap();
    fs::rename(&a, &b).unwrap();
    bound.check("after making room");

    let view = content_digest(&m.mp);
    assert!(view.iter().any(|(p, _, _)| p == "big-copy.bin"));
    assert!(view.iter().any(|(p, _, _)| *p == long));
    drop(m);
    assert!(!is_mounted(&mp));
    eprintln!(
        "journal at most {} bytes; {:.1}s",
        bound.max_journal,
        start.elapsed().as_secs_f64()
    );
    assert!(bound.max_journal <= QUOTA, "journal {}", bound.max_journal);

    // The journal replays to the same view; status and diff read it.
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    let pending = status[0]["pending"].as_array().unwrap();
    let has = |path: &str| pending.iter().any(|c| c["path"] == path);
    assert!(has("big-copy.bin"), "{pending:?}");
    // guide.md went through a thousand copy-up changes but ends with the
    // host's bytes and mode (times and xattrs are never committed): no
    // change, in the pending list as in the patch set.
    assert!(!has("docs/guide.md"), "{pending:?}");
    let diff = env.ok(&["diff", &g, "--stat"]);
    assert!(diff.contains("big-copy.bin"), "{diff}");
    let m = env.mount(&g, &mp, &["--quota-bytes", &quota]);
    assert_eq!(content_digest(&m.mp), view, "the remounted view differs");
    drop(m);
    bound.check("after the remount");
}

/// A `kill -9` in the middle of a rename storm (so, sometimes, in the middle
/// of a compaction) leaves a journal that replays.
#[test]
fn journal_replays_after_kill_9_during_a_rename_storm() {
    let env = Env::new();
    env.write("README.md", "# project\n");
    env.write("src/main.c", "int main(void) { return 0; }\n");
    let g = env.grant(&["--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mnt");
    let quota = QUOTA.to_string();
    let m = env.mount(&g, &mp, &["--quota-bytes", &quota]);
    fs::write(m.path("kept.txt"), "kept\n").unwrap();
    let long = "K".repeat(250);
    let (a, b) = (m.path("README.md"), m.path(&long));
    let pid = m.pid.expect("daemon pid");
    let renames = std::sync::atomic::AtomicU64::new(0);
    let stopped = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0.. {
                let r = if i % 2 == 0 {
                    fs::rename(&a, &b)
                } else {
                    fs::rename(&b, &a)
                };
                if r.is_err() {
                    stopped.store(true, std::sync::atomic::Ordering::Relaxed);
                    break; // the daemon is gone
                }
                renames.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        // Killed in the middle of the storm: once many renames are
        // journalled, however long they took on a loaded machine.
        wait_until(
            "200 renames through the view",
            Duration::from_secs(60),
            || renames.load(std::sync::atomic::Ordering::Relaxed) >= 200,
        );
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    });
    wait_until("the killed daemon to exit", Duration::from_secs(10), || {
        !pid_running(pid)
    });
    env.ok(&["umount", mp.to_str().unwrap()]);
    drop(m);
    let m = env.mount(&g, &mp, &["--quota-bytes", &quota]);
    let names = list_tree(&m.mp);
    let there = |n: &str| names.iter().any(|p| p == n);
    assert!(
        there("README.md") != there(&long),
        "exactly one of the two names: {names:?}"
    );
    let readme = if there("README.md") { &a } else { &b };
    assert_eq!(fs::read_to_string(readme).unwrap(), "# project\n");
    assert_eq!(fs::read_to_string(m.path("kept.txt")).unwrap(), "kept\n");
    assert!(!env
        .state
        .join("sessions")
        .join(&g)
        .join("overlay/journal.jsonl.tmp")
        .exists());
    drop(m);
    env.ok(&["status", &g]);
}
