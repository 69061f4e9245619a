//! A real `wopfs commit` process killed with SIGKILL at random instants.
//!
//! One session is built once (creates in new and old directories, updates,
//! deletes, a directory that becomes a file, a file that becomes a
//! directory, a symlink, a chmod), and the host tree and state dir are kept
//! as pristine copies. Each trial restores both, starts `wopfs commit`,
//! kills it after a seeded random delay (anywhere from before it starts
//! writing to after it has finished), then runs `wopfs recover` or
//! `wopfs commit` as the approver's next step, and checks:
//!
//! 1. the host is exactly as before (every mtime included) or exactly as
//!    after (the reference commit's result);
//! 2. no scratch names on the host, no commit journal or staged rebase in
//!    the session;
//! 3. the session says which: committed (a further commit is refused as
//!    such), or open with exactly the original pending changes (and, in
//!    some trials, a following commit succeeds and gives the after state);
//! 4. the audit chain verifies, every commit `start` is closed by exactly
//!    one `complete` or `failure` with its id, and a `complete` exists
//!    exactly when the host is in the after state.
//!
//! No test switch is used: the process is really killed. The seed is
//! printed at the start and is in every assertion message;
//! `WOPFS_TEST_SEED=N` replays the same delays (the instant a delay lands
//! on still depends on the machine). `WOPFS_TEST_KILL_TRIALS=N` changes
//! the number of trials (by default 80, but past 60 s no new trial starts
//! once 50 have run).

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

const DEFAULT_TRIALS: usize = 80;
/// Never fewer trials than this, whatever the time.
const MIN_TRIALS: usize = 50;
/// Past this (after `MIN_TRIALS`), no new trial starts: a loaded machine
/// runs fewer trials rather than a longer test.
const TIME_BUDGET: Duration = Duration::from_secs(60);
/// How long any one wopfs process may run before the test gives up on it.
const PROCESS_DEADLINE: Duration = Duration::from_secs(60);
/// The kill delay is drawn from [0, SPREAD × the commit's duration].
const SPREAD: f64 = 1.3;

/// splitmix64: a tiny seeded generator, enough to spread kill instants.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

fn seed() -> u64 {
    match std::env::var("WOPFS_TEST_SEED") {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("WOPFS_TEST_SEED={s:?} is not a number")),
        Err(_) => SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    }
}

/// The test's directories on tmpfs (`/dev/shm`) when there is one. A
/// SIGKILL leaves the page cache as it was, so what the killed process left
/// is the same on any filesystem; on tmpfs the commit's `fsync`s and
/// `syncfs`es do not wait for every other writer on the machine's disk,
/// which keeps its duration (and so the run's) short and steady under load.
fn env_on_tmpfs() -> Env {
    // scripts/test.sh names a private dir there, so that it can tell the
    // mounts of its own run from any other on the machine.
    let shm_var = std::env::var_os("WOPFS_TEST_SHM").filter(|v| !v.is_empty());
    let shm = shm_var.as_deref().map_or(Path::new("/dev/shm"), Path::new);
    let tmpfs = rustix::fs::statfs(shm)
        .is_ok_and(|s| i128::from(s.f_type) == i128::from(libc::TMPFS_MAGIC));
    if !tmpfs {
        return Env::new();
    }
    let Ok(dir) = tempfile::Builder::new()
        .prefix("wopfs-kill-")
        .tempdir_in(shm)
    else {
        return Env::new();
    };
    let base = dir.path().canonicalize().unwrap();
    let host = base.join("host");
    fs::create_dir_all(&host).unwrap();
    Env {
        state: base.join("state"),
        host,
        dir,
    }
}

/// The host tree: 240 files in 8 directories, a directory that will
/// become a file (with a subdirectory), a file that will become a
/// directory, and a few more.
fn populate(env: &Env) {
    for i in 0..240 {
        env.write(
            &format!("d{}/f{i}.txt", i % 8),
            &format!("original {i}\n{}", "x".repeat(200 + i * 7)),
        );
    }
    env.write("olddir/a.txt", "a\n");
    env.write("olddir/b.txt", "b\n");
    env.write("olddir/inner/c.txt", "c\n");
    env.write("notes", "notes, a file for now\n");
    env.write("keep/README.md", "# kept\n");
}

/// The session's edits, through the mount.
fn edit(m: &Mounted) {
    for i in 0..240 {
        let p = m.path(&format!("d{}/f{i}.txt", i % 8));
        match i % 4 {
            0 => fs::write(&p, format!("updated {i}\n")).unwrap(),
            1 => fs::remove_file(&p).unwrap(),
            _ => {}
        }
    }
    // Creates in existing directories and in new ones (nested too).
    for k in 0..16 {
        fs::write(
            m.path(&format!("d{}/added{k}.txt", k % 8)),
            format!("added {k}\n"),
        )
        .unwrap();
    }
    for k in 0..40 {
        let dir = m.path(&format!("new{}", k % 4));
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join(format!("n{k}.txt")), format!("new {k}\n")).unwrap();
    }
    fs::create_dir_all(m.path("new0/sub/deep")).unwrap();
    fs::write(m.path("new0/sub/deep/x.txt"), "deep\n").unwrap();
    // A directory becomes a file.
    fs::remove_dir_all(m.path("olddir")).unwrap();
    fs::write(m.path("olddir"), "olddir is a file now\n").unwrap();
    // A file becomes a directory.
    fs::remove_file(m.path("notes")).unwrap();
    fs::create_dir(m.path("notes")).unwrap();
    fs::write(m.path("notes/x.txt"), "notes is a directory now\n").unwrap();
    // A symlink inside the view, and a mode change.
    symlink("../d3/f3.txt", m.path("new0/link")).unwrap();
    fs::set_permissions(m.path("d2/f2.txt"), fs::Permissions::from_mode(0o755)).unwrap();
}

/// The after state's digest: paths, kinds, modes, contents, link targets,
/// and the mtimes of every file the commit does not write. Left out: the
/// mtimes of what the commit writes (new contents are written at commit
/// time, so they differ from the reference run's by construction) and of
/// directories (the commit adds and removes scratch entries in them; a
/// finished commit does not restore their times, a rolled-back one does,
/// and the before state is compared with every mtime).
fn after_digest(root: &Path, written: &BTreeSet<String>) -> String {
    let mut h = blake3::Hasher::new();
    for rel in list_tree(root) {
        let p = root.join(&rel);
        let m = fs::symlink_metadata(&p).unwrap();
        h.update(rel.as_bytes());
        h.update(&m.mode().to_le_bytes());
        if !m.is_dir() && !written.contains(&rel) {
            h.update(&m.mtime().to_le_bytes());
            h.update(&m.mtime_nsec().to_le_bytes());
        }
        if m.file_type().is_symlink() {
            h.update(fs::read_link(&p).unwrap().as_os_str().as_encoded_bytes());
        } else if m.is_file() {
            h.update(&fs::read(&p).unwrap());
        }
        h.update(b"\0");
    }
    h.finalize().to_hex().to_string()
}

struct Kit {
    env: Env,
    grant: String,
    seed: u64,
    pristine_host: PathBuf,
    pristine_state: PathBuf,
}

impl Kit {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = wopfs_command();
        c.arg("--state-dir")
            .arg(&self.env.state)
            .args(args)
            .env_remove("WOPFS_STATE_DIR")
            .env_remove("WOPFS_TEST_FAULT_AFTER")
            .env_remove("WOPFS_TEST_ERROR_AFTER")
            .stdin(Stdio::null());
        c
    }

    /// Runs wopfs to the end (bounded), capturing its output.
    fn run(&self, args: &[&str], ctx: &str) -> Output {
        let mut child = self
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting wopfs");
        // Drain the pipes on threads so a chatty process cannot block.
        let mut out = child.stdout.take().unwrap();
        let mut err = child.stderr.take().unwrap();
        let t_out = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut out, &mut v).unwrap();
            v
        });
        let t_err = std::thread::spawn(move || {
            let mut v = Vec::new();
            std::io::Read::read_to_end(&mut err, &mut v).unwrap();
            v
        });
        let status = wait_child(
            &mut child,
            &format!("{ctx}: wopfs {args:?}"),
            PROCESS_DEADLINE,
        );
        Output {
            status,
            stdout: t_out.join().unwrap(),
            stderr: t_err.join().unwrap(),
        }
    }

    fn ok(&self, args: &[&str], ctx: &str) -> String {
        let out = self.run(args, ctx);
        assert!(
            out.status.success(),
            "{ctx}: wopfs {args:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    fn session_dir(&self) -> PathBuf {
        self.env.state.join("sessions").join(&self.grant)
    }

    /// The host tree and the state dir exactly as the session left them.
    /// The grant records the host root's absolute path, so the host is
    /// restored in place.
    fn restore(&self) {
        for e in fs::read_dir(&self.env.host).unwrap() {
            let p = e.unwrap().path();
            if fs::symlink_metadata(&p).unwrap().is_dir() {
                fs::remove_dir_all(&p).unwrap();
            } else {
                fs::remove_file(&p).unwrap();
            }
        }
        cp_a(&self.pristine_host.join("."), &self.env.host);
        let _ = fs::remove_dir_all(&self.env.state);
        cp_a(&self.pristine_state, &self.env.state);
    }

    /// The session's phase as stored (`open` when never set).
    fn phase(&self) -> String {
        match fs::read(self.session_dir().join("session.json")) {
            Ok(b) => serde_json::from_slice::<serde_json::Value>(&b).unwrap()["phase"]
                .as_str()
                .unwrap()
                .to_string(),
            Err(_) => "open".to_string(),
        }
    }

    /// `wopfs status G --json`: the pending changes.
    fn pending(&self, ctx: &str) -> serde_json::Value {
        let out = self.ok(&["status", &self.grant, "--json"], ctx);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v[0]["pending"].clone()
    }

    /// The commit events of this grant in the audit log, as
    /// (event, commit id) in log order.
    /// The chain is verified first (`--verify` fails the command if not).
    fn commit_events(&self, ctx: &str) -> Vec<(String, Option<String>)> {
        let out = self.ok(&["audit", &self.grant, "--verify", "--json"], ctx);
        // The verification line, then the records.
        let json = &out[out.find('[').expect("audit records")..];
        let v: Vec<serde_json::Value> = serde_json::from_str(json).unwrap();
        v.iter()
            .filter(|r| r["operationType"] == "wopfs.patch.commit")
            .map(|r| {
                (
                    r["event"].as_str().unwrap().to_string(),
                    r["details"]["commit"].as_str().map(str::to_string),
                )
            })
            .collect()
    }

    /// Whether the raw audit log holds a commit `start`, and a close of it
    /// (read without any wopfs process, so nothing is settled or recovered
    /// by reading).
    fn raw_commit_events(&self) -> (bool, bool) {
        let text = fs::read_to_string(self.env.state.join("audit.jsonl")).unwrap_or_default();
        let events: Vec<String> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|r| r["operationType"] == "wopfs.patch.commit")
            .map(|r| r["event"].as_str().unwrap_or("").to_string())
            .collect();
        (
            events.iter().any(|e| e == "start"),
            events.iter().any(|e| e == "complete" || e == "failure"),
        )
    }

    /// The journal's phase, if a commit journal is there.
    fn journal_phase(&self) -> Option<String> {
        let b = fs::read(self.session_dir().join("commit.json")).ok()?;
        Some(
            serde_json::from_slice::<serde_json::Value>(&b)
                .map(|v| v["phase"].as_str().unwrap_or("?").to_string())
                .unwrap_or_else(|_| "damaged".to_string()),
        )
    }

    /// No scratch names on the host, no journal or staged rebase left.
    fn assert_clean(&self, ctx: &str) {
        let scratch: Vec<String> = list_tree(&self.env.host)
            .into_iter()
            .filter(|p| p.contains(".wopfs-"))
            .collect();
        assert!(
            scratch.is_empty(),
            "{ctx}: scratch names left on the host: {scratch:?}"
        );
        // (`staging/`, the exported set a commit reads, is scratch that any
        // commit that stops early leaves, a dry run or a refusal included;
        // the next commit replaces it.)
        for name in ["commit.json", "commit-stage"] {
            assert!(
                !self.session_dir().join(name).exists(),
                "{ctx}: {name} left in the session directory"
            );
        }
    }

    /// The audit chain verifies, every commit start is closed exactly once
    /// after it, and the number of `complete`s says whether the host was
    /// committed. Returns the events.
    fn assert_audit(&self, committed: bool, ctx: &str) -> Vec<(String, Option<String>)> {
        let events = self.commit_events(ctx);
        for (i, (ev, id)) in events.iter().enumerate() {
            if ev != "start" {
                continue;
            }
            let id = id
                .as_deref()
                .unwrap_or_else(|| panic!("{ctx}: a commit start without an id: {events:?}"));
            let closes = events[i + 1..]
                .iter()
                .filter(|(e, c)| (e == "complete" || e == "failure") && c.as_deref() == Some(id))
                .count();
            assert_eq!(
                closes, 1,
                "{ctx}: commit {id} is closed {closes} times in the audit log (want exactly one complete or failure): {events:?}"
            );
        }
        let completes = events.iter().filter(|(e, _)| e == "complete").count();
        assert_eq!(
            completes,
            usize::from(committed),
            "{ctx}: the audit log has {completes} completed commits but the host is {}: {events:?}",
            if committed { "committed" } else { "as before" }
        );
        events
    }
}

fn cp_a(from: &Path, to: &Path) {
    let st = Command::new("cp")
        .arg("-a")
        .arg(from)
        .arg(to)
        .status()
        .expect("running cp");
    assert!(
        st.success(),
        "cp -a {} {} failed",
        from.display(),
        to.display()
    );
}

#[derive(Default, Debug)]
struct Tally {
    before: usize,
    after: usize,
    /// The commit had exited on its own when the kill came.
    completed: usize,
    /// Killed before its audit start (nothing written on the host yet).
    killed_early: usize,
    /// Killed after its start, with the journal prepared / done, or with
    /// the journal already removed (closed in the audit log).
    mid_prepared: usize,
    mid_done: usize,
    mid_closed: usize,
    follow_ups: usize,
}

#[test]
fn a_killed_commit_process_ends_before_or_after() {
    let seed = seed();
    // An explicit count is run whole; the default one within the budget.
    let (trials, budget) = match std::env::var("WOPFS_TEST_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        Some(n) => (n, None),
        None => (DEFAULT_TRIALS, Some(TIME_BUDGET)),
    };
    println!("commit_kill: seed {seed} (replay with WOPFS_TEST_SEED={seed}), {trials} trials");
    let started = Instant::now();
    let mut rng = Rng(seed);

    // The session, built once.
    let env = env_on_tmpfs();
    populate(&env);
    let grant = env.grant(&["--mode", "read_write_overlay"]);
    let m = env.mount(&grant, &env.mountpoint("mnt"), &[]);
    edit(&m);
    drop(m);
    assert!(
        no_mount_of_grant(&grant),
        "seed {seed}: the view is still mounted"
    );
    let base = env.dir.path().canonicalize().unwrap().join("pristine");
    fs::create_dir_all(&base).unwrap();
    let kit = Kit {
        pristine_host: base.join("host"),
        pristine_state: base.join("state"),
        env,
        grant,
        seed,
    };
    cp_a(&kit.env.host, &kit.pristine_host);
    cp_a(&kit.env.state, &kit.pristine_state);
    let g = kit.grant.clone();
    let ctx0 = format!("seed {}", kit.seed);

    let pending = kit.pending(&ctx0);
    let list = pending.as_array().unwrap();
    let has = |path: &str, op: &str| list.iter().any(|c| c["path"] == path && c["op"] == op);
    assert!(
        has("olddir", "create")
            && has("olddir/inner/c.txt", "delete")
            && has("notes", "delete")
            && has("notes/x.txt", "create")
            && has("new0/link", "create")
            && has("d2/f2.txt", "update")
            && has("d0/f0.txt", "update")
            && has("d1/f1.txt", "delete")
            && has("new3/n3.txt", "create"),
        "{ctx0}: the session's pending changes are not the ones made: {pending}"
    );
    let written: BTreeSet<String> = list
        .iter()
        .filter(|c| c["op"] != "delete")
        .map(|c| c["path"].as_str().unwrap().to_string())
        .collect();
    let before = tree_digest(&kit.pristine_host);

    // The reference: the same session committed without a kill.
    kit.restore();
    assert_eq!(tree_digest(&kit.env.host), before, "{ctx0}: restore");
    let t = Instant::now();
    kit.ok(&["commit", &g, "--yes"], &ctx0);
    let mut t_est = t.elapsed();
    let after = after_digest(&kit.env.host, &written);
    assert_ne!(
        tree_digest(&kit.env.host),
        before,
        "{ctx0}: the commit changed nothing"
    );
    assert!(kit.env.host.join("olddir").is_file() && kit.env.host.join("notes/x.txt").is_file());
    assert_eq!(kit.phase(), "committed", "{ctx0}: reference commit");
    kit.assert_clean(&ctx0);
    kit.assert_audit(true, &ctx0);
    println!(
        "commit_kill: in {}; the fault-free commit of {} changes took {t_est:?}",
        kit.env.dir.path().display(),
        list.len()
    );

    let mut tally = Tally::default();
    let mut ran = 0;
    for trial in 0..trials {
        if trial >= MIN_TRIALS && budget.is_some_and(|b| started.elapsed() > b) {
            println!("commit_kill: time budget spent; stopping after {trial} trials");
            break;
        }
        ran += 1;
        kit.restore();
        let use_recover = trial % 2 == 0;
        let delay = t_est.mul_f64(SPREAD * rng.unit());
        let follow_up = rng.unit() < 0.5;
        let ctx = format!(
            "seed {seed}, trial {trial}: commit killed after {delay:?} (commit estimate {t_est:?}), next step {}",
            if use_recover { "recover" } else { "commit" }
        );
        assert_eq!(tree_digest(&kit.env.host), before, "{ctx}: restore");

        let err_path = kit.env.dir.path().join("killed-commit.stderr");
        let mut child = kit
            .command(&["commit", &g, "--yes"])
            .stdout(Stdio::null())
            .stderr(fs::File::create(&err_path).unwrap())
            .spawn()
            .expect("starting wopfs commit");
        let t0 = Instant::now();
        // Until the delay is up, watch for the commit finishing on its own
        // (its exact duration tunes the next delays); then kill it. A
        // process that exits after the last look is a zombie until waited
        // for, so the kill cannot reach another process: it is a no-op, and
        // the status says the commit finished.
        let mut exited = None;
        while exited.is_none() && t0.elapsed() < delay {
            exited = child.try_wait().unwrap();
            if exited.is_none() {
                std::thread::sleep(
                    (delay.saturating_sub(t0.elapsed())).min(Duration::from_millis(1)),
                );
            }
        }
        let status = match exited {
            Some(st) => {
                t_est = t_est.mul_f64(0.7) + t0.elapsed().mul_f64(0.3);
                st
            }
            None => {
                unsafe { libc::kill(child.id() as i32, libc::SIGKILL) };
                wait_child(
                    &mut child,
                    &format!("{ctx}: the killed commit"),
                    PROCESS_DEADLINE,
                )
            }
        };
        let completed = status.success();
        if completed {
            tally.completed += 1;
        } else {
            use std::os::unix::process::ExitStatusExt;
            assert_eq!(
                status.signal(),
                Some(libc::SIGKILL),
                "{ctx}: the commit failed on its own ({status}): {}",
                fs::read_to_string(&err_path).unwrap_or_default()
            );
            let (started, closed) = kit.raw_commit_events();
            match (started, kit.journal_phase().as_deref()) {
                (false, None | Some("prepared")) => tally.killed_early += 1,
                (false, Some(p)) => panic!("{ctx}: a commit journal ({p}) with no audit start"),
                (true, None) if closed => tally.mid_closed += 1,
                (true, None) => panic!(
                    "{ctx}: a commit start with neither a journal nor a close: nothing would ever close it"
                ),
                (true, Some("prepared")) => tally.mid_prepared += 1,
                (true, Some("done")) => tally.mid_done += 1,
                (true, Some(p)) => panic!("{ctx}: the commit journal's phase is {p}"),
            }
        }
        let at_kill = format!(
            "{ctx} [exited on its own: {completed}, journal at kill: {:?}]",
            kit.journal_phase()
        );
        let ctx = at_kill;

        // The approver's next step.
        let mut refused_as_committed = false;
        if use_recover {
            kit.ok(&["recover", &g], &ctx);
        } else {
            let t1 = Instant::now();
            let out = kit.run(&["commit", &g, "--yes"], &ctx);
            let err = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                t_est = t_est.mul_f64(0.7) + t1.elapsed().mul_f64(0.3);
            } else {
                assert!(
                    err.contains("already been committed"),
                    "{ctx}: the next commit failed: {err}"
                );
                refused_as_committed = true;
            }
        }

        // 1. Exactly before or exactly after.
        let now = tree_digest(&kit.env.host);
        let is_after = if now == before {
            false
        } else if after_digest(&kit.env.host, &written) == after {
            true
        } else {
            let was: BTreeSet<String> = list_tree(&kit.pristine_host).into_iter().collect();
            let is: BTreeSet<String> = list_tree(&kit.env.host).into_iter().collect();
            panic!(
                "{ctx}: the host is neither as before nor as after; only before: {:?}; only now: {:?}",
                was.difference(&is).take(20).collect::<Vec<_>>(),
                is.difference(&was).take(20).collect::<Vec<_>>()
            );
        };
        // 2. Nothing left over.
        kit.assert_clean(&ctx);
        // 3. The session says which; 4. the audit log closes the commit.
        if is_after {
            tally.after += 1;
            assert_eq!(
                kit.phase(),
                "committed",
                "{ctx}: host committed, session not"
            );
            assert_eq!(
                kit.pending(&ctx),
                serde_json::json!([]),
                "{ctx}: host committed, yet changes still pending"
            );
            kit.assert_audit(true, &ctx);
            if !refused_as_committed {
                let out = kit.run(&["commit", &g, "--yes"], &ctx);
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(
                    !out.status.success() && err.contains("already been committed"),
                    "{ctx}: a further commit was not refused as already committed: {err}"
                );
            }
        } else {
            tally.before += 1;
            let phase = kit.phase();
            assert!(
                phase == "open" || phase == "pending",
                "{ctx}: host as before, session {phase}"
            );
            assert_eq!(
                kit.pending(&ctx),
                pending,
                "{ctx}: host as before, yet the pending changes differ"
            );
            kit.assert_audit(false, &ctx);
            if follow_up {
                tally.follow_ups += 1;
                let t1 = Instant::now();
                kit.ok(&["commit", &g, "--yes"], &ctx);
                t_est = t_est.mul_f64(0.7) + t1.elapsed().mul_f64(0.3);
                assert_eq!(
                    after_digest(&kit.env.host, &written),
                    after,
                    "{ctx}: the commit after the rollback did not give the after state"
                );
                assert_eq!(kit.phase(), "committed", "{ctx}: follow-up commit");
                kit.assert_clean(&ctx);
                kit.assert_audit(true, &ctx);
            }
        }
    }

    let mid = tally.mid_prepared + tally.mid_done + tally.mid_closed;
    println!(
        "commit_kill: seed {seed}: {ran} trials in {:.1?}: {} before, {} after \
         ({} commits had completed before the kill); killed before writing {}, mid-way {mid} \
         (journal prepared {}, done {}, already removed {}); \
         {} follow-up commits; last estimate {t_est:?}",
        started.elapsed(),
        tally.before,
        tally.after,
        tally.completed,
        tally.killed_early,
        tally.mid_prepared,
        tally.mid_done,
        tally.mid_closed,
        tally.follow_ups,
    );
    assert!(
        mid > 0,
        "seed {seed}: no kill landed inside a commit (between its start and its end): {tally:?}"
    );
}
