//! The command line as a user meets it: help text on every argument and
//! subcommand, shell completions and man pages generated from the clap
//! definitions, `--json` on every command that prints data, colour
//! (`--color`, `NO_COLOR`) and the pager.

mod common;

use std::collections::BTreeSet;
use std::fs;
use std::io::Read;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine;
use clap::CommandFactory;
use common::*;
use serde_json::Value;

/// Every argument (positional or flag, except clap's own help and
/// version) and every subcommand, at every depth, has help text.
#[test]
fn every_argument_and_subcommand_has_help() {
    fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if matches!(id, "help" | "version") {
                continue;
            }
            let text = arg.get_help().or(arg.get_long_help());
            if text.is_none_or(|t| t.to_string().trim().is_empty()) {
                missing.push(format!("{path}: argument {id}"));
            }
        }
        for sub in cmd.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_name() == "help" {
                continue;
            }
            let text = sub.get_about().or(sub.get_long_about());
            if text.is_none_or(|t| t.to_string().trim().is_empty()) {
                missing.push(format!("{name}: no about"));
            }
            walk(sub, &name, missing);
        }
    }
    let mut cmd = wopfs::cli::Cli::command();
    cmd.build();
    let mut missing = Vec::new();
    walk(&cmd, "wopfs", &mut missing);
    assert!(
        missing.is_empty(),
        "without help text:\n{}",
        missing.join("\n")
    );
}

/// Every subcommand path, e.g. `["token", "mint"]`, leaves only (the
/// commands a user runs), without clap's `help` and hidden internal ones
/// (the kernel engine's `guard`).
fn subcommands() -> Vec<Vec<String>> {
    fn walk(cmd: &clap::Command, path: &[String], out: &mut Vec<Vec<String>>) {
        for sub in cmd
            .get_subcommands()
            .filter(|s| s.get_name() != "help" && !s.is_hide_set())
        {
            let mut p = path.to_vec();
            p.push(sub.get_name().to_string());
            if sub.has_subcommands() {
                walk(sub, &p, out);
            } else {
                out.push(p);
            }
        }
    }
    let mut out = Vec::new();
    walk(&wopfs::cli::Cli::command(), &[], &mut out);
    out
}

/// Every subcommand name at every depth (`token`, `mint`, …).
fn subcommand_names() -> BTreeSet<String> {
    subcommands().into_iter().flatten().collect()
}

fn stdout_of(out: &Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn completions_for_every_shell_bash_valid_and_complete() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = wopfs_command()
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = stdout_of(&out, shell);
        assert!(script.contains("wopfs"), "{shell}: {script}");
        for name in subcommand_names() {
            assert!(script.contains(&name), "{shell} script lacks {name}");
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wopfs.bash");
    let out = wopfs_command()
        .args(["completions", "bash"])
        .output()
        .unwrap();
    fs::write(&path, &out.stdout).unwrap();
    let check = Command::new("bash").arg("-n").arg(&path).output().unwrap();
    assert!(
        check.status.success(),
        "bash -n: {}",
        String::from_utf8_lossy(&check.stderr)
    );
    // Sourced, it registers the completion function for wopfs.
    let src = Command::new("bash")
        .arg("-c")
        .arg(format!("source {} && complete -p wopfs", path.display()))
        .output()
        .unwrap();
    let registered = stdout_of(&src, "sourcing the bash completion");
    assert!(registered.contains("wopfs"), "{registered}");
    // An unknown shell is a usage error naming the choices.
    let bad = wopfs_command()
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("bash"));
}

/// `groff -man -Tutf8` renders a page without complaint, if groff is here.
fn renders(page: &Path) -> Option<String> {
    let out = Command::new("groff")
        .args(["-k", "-man", "-Tutf8", "-ww", "-P", "-cbou"])
        .arg(page)
        .output()
        .ok()?;
    assert!(out.status.success(), "groff {}", page.display());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.trim().is_empty(),
        "groff warns on {}: {err}",
        page.display()
    );
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn man_pages_for_the_command_and_every_subcommand() {
    // wopfs.1 on stdout.
    let out = wopfs_command().arg("man").output().unwrap();
    let page = stdout_of(&out, "wopfs man");
    assert!(page.contains("\n.TH wopfs 1"), "{page}");
    assert!(
        page.contains(".SH ENVIRONMENT") && page.contains("NO_COLOR"),
        "{page}"
    );
    for sub in subcommands() {
        assert!(page.contains(&sub[0]), "wopfs.1 lacks {}", sub[0]);
    }
    // Every page into a directory.
    let dir = tempfile::tempdir().unwrap();
    let out = wopfs_command()
        .args(["man", "-o"])
        .arg(dir.path())
        .output()
        .unwrap();
    let listed = stdout_of(&out, "wopfs man -o");
    let mut expected = vec!["wopfs".to_string()];
    for sub in subcommands() {
        for n in 1..=sub.len() {
            expected.push(format!("wopfs-{}", sub[..n].join("-")));
        }
    }
    expected.sort();
    expected.dedup();
    let mut found: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let mut want: Vec<String> = expected.iter().map(|n| format!("{n}.1")).collect();
    want.sort();
    assert_eq!(found, want);
    assert_eq!(listed.lines().count(), want.len(), "{listed}");
    for name in &expected {
        let path = dir.path().join(format!("{name}.1"));
        let text = fs::read_to_string(&path).unwrap();
        assert!(text.contains(&format!(".TH {name} 1")), "{name}: {text}");
        if let Some(rendered) = renders(&path) {
            assert!(rendered.contains("NAME"), "{name}: {rendered}");
            assert!(rendered.contains(name.as_str()), "{name}: {rendered}");
        }
    }
    // The mount page documents its options, help text included.
    if let Some(mount) = renders(&dir.path().join("wopfs-mount.1")) {
        assert!(
            mount.contains("--cache-ttl") && mount.contains("--json"),
            "{mount}"
        );
        assert!(mount.contains("FUSE request threads"), "{mount}");
    }
    // `man -l` reads it too, where man is installed.
    if let Ok(out) = Command::new("man")
        .arg("-l")
        .arg(dir.path().join("wopfs.1"))
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
    {
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("completions"));
        }
    }
}

/// `wopfs --state-dir STATE ARGS…` with extra environment variables.
fn wopfs_env(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut cmd = wopfs_command();
    cmd.arg("--state-dir")
        .arg(&env.state)
        .args(args)
        .env_remove("WOPFS_STATE_DIR")
        .env_remove("A2A_GRANT_SIGNING_KEY")
        .env_remove("A2A_GRANT_VERIFYING_KEY");
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output().expect("running wopfs")
}

/// Runs a command with `--json` and parses stdout as one JSON document.
fn json_of(env: &Env, args: &[&str], vars: &[(&str, &str)]) -> Value {
    let out = wopfs_env(env, args, vars);
    let text = stdout_of(&out, &format!("wopfs {args:?}"));
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("wopfs {args:?}: stdout is not JSON ({e}):\n{text}"))
}

/// Every subcommand that prints data takes `--json` and prints one JSON
/// document with a stable shape; the rest are listed with the reason.
#[test]
fn every_subcommand_prints_json() {
    // Print no data of their own: the agent's command, the server's log,
    // a completion script.
    let exempt: BTreeSet<&str> = ["run", "serve", "completions"].into();
    let mut covered: BTreeSet<String> = BTreeSet::new();
    let env = Env::new();
    env.write("src/pay.py", "def pay(x):\n    return round(x)\n");
    env.write("src/util.py", "def util():\n    pass\n");
    env.write("README.md", "# payments rounding\n");
    let host = env.host.to_str().unwrap();
    let seed = [7u8; 32];
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = b64.encode(seed);
    let pubkey = b64.encode(
        ed25519_dalek::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes(),
    );
    let keyvars = [
        ("A2A_GRANT_SIGNING_KEY", key.as_str()),
        ("A2A_GRANT_VERIFYING_KEY", pubkey.as_str()),
    ];
    let all = subcommands();
    let mut j = |args: &[&str]| {
        let v = json_of(&env, args, &keyvars);
        let sub = all
            .iter()
            .find(|s| s.iter().zip(args).all(|(a, b)| a == b) && s.len() <= args.len())
            .unwrap_or_else(|| panic!("no subcommand in {args:?}"));
        covered.insert(sub.join(" "));
        v
    };

    let g = j(&[
        "grant",
        "--root",
        host,
        "--purpose",
        "rounding",
        "--mode",
        "read_write_overlay",
        "--json",
    ]);
    let gid = g["grant_id"].as_str().unwrap().to_string();
    let hits = j(&["search", "--root", host, "rounding", "--json"]);
    assert!(
        hits.as_array()
            .unwrap()
            .iter()
            .any(|h| h["path"] == "README.md"),
        "{hits}"
    );

    let set = j(&["bucket", "set", "payments", host, "--json"]);
    assert_eq!(
        set,
        serde_json::json!({"name": "payments", "root": host, "changed": true})
    );
    let list = j(&["bucket", "list", "--json"]);
    assert_eq!(list["payments"], host);
    let unset = j(&["bucket", "unset", "payments", "--json"]);
    assert_eq!(unset, serde_json::json!({"name": "payments", "root": host}));

    let minted = j(&[
        "token",
        "mint",
        "--issuer",
        "o",
        "--audience",
        "a",
        "--bucket",
        "payments",
        "--mode",
        "read_only",
        "--json",
    ]);
    let token = minted["token"].as_str().unwrap().to_string();
    assert_eq!(minted["claims"]["audience"], "a");
    let child = j(&["token", "delegate", &token, "--audience", "b", "--json"]);
    assert_eq!(
        child["claims"]["parent_grant_id"],
        minted["claims"]["grant_id"]
    );
    let verified = j(&[
        "token",
        "verify",
        child["token"].as_str().unwrap(),
        "--json",
    ]);
    assert_eq!(verified["audience"], "b");
    let imported = j(&["token", "import", &token, "--json"]);
    assert_eq!(imported[0]["grant_id"], minted["claims"]["grant_id"]);

    let mp = env.mountpoint("mnt");
    let mps = mp.to_str().unwrap();
    let rec = j(&["mount", &gid, mps, "--json"]);
    let m = Mounted::new(mp.clone(), rec["pid"].as_u64().map(|p| p as u32));
    assert_eq!(rec["grant_id"], gid.as_str());
    assert_eq!(rec["mountpoint"], mps);
    assert_eq!(rec["mode"], "read_write_overlay");
    assert!(rec["pid"].as_u64().is_some(), "{rec}");
    let (pay, new) = ("def pay(x):\n    return round(x, 2)\n", "new = 1\n");
    fs::write(m.path("src/pay.py"), pay).unwrap();
    fs::write(m.path("src/new.py"), new).unwrap();
    let st = j(&["status", &gid, "--json"]);
    assert_eq!(st[0]["mounted"], true);
    assert_eq!(st[0]["pending"].as_array().unwrap().len(), 2, "{st}");
    let um = j(&["umount", mps, "--json"]);
    assert_eq!(um["mountpoint"], mps);
    assert_eq!(um["grant_id"], gid.as_str());
    assert_eq!(um["pid"], rec["pid"]);
    drop(m);

    let diff = j(&["diff", &gid, "--json"]);
    assert_eq!(diff.as_array().unwrap().len(), 2, "{diff}");
    let ck = j(&["checkpoint", &gid, "--label", "all of it", "--json"]);
    assert_eq!(
        (&ck["id"], &ck["label"], &ck["live"]),
        (&"c1".into(), &"all of it".into(), &false.into())
    );
    let cks = j(&["checkpoints", &gid, "--json"]);
    assert_eq!(cks.as_array().unwrap().len(), 1, "{cks}");
    let undone = j(&["undo", &gid, "--to", "c1", "--json"]);
    assert_eq!(undone["to"], "c1");
    // Nothing came after c1, so nothing is removed; an entry changed within
    // 50 ms of the checkpoint is copied back even so (racy ctimes are never
    // trusted), so `restored` depends on timing and is not checked.
    assert_eq!(undone["removed"], 0, "{undone}");
    assert!(undone["kept"].as_u64().unwrap() > 0, "{undone}");
    let out = env.dir.path().join("review");
    let exported = j(&["export", &gid, "-o", out.to_str().unwrap(), "--json"]);
    assert_eq!(exported["patches"], 2);
    assert_eq!(exported["created"], 1);
    assert_eq!(exported["updated"], 1);
    assert_eq!(exported["inline"], 2);
    assert_eq!(exported["blobs"], 0);
    assert_eq!(exported["bytes"], pay.len() + new.len());
    assert_eq!(exported["dir"], out.to_str().unwrap());
    assert!(out.join("patchset.json").is_file());
    let committed = j(&["commit", &gid, "--yes", "--path", "src/new.py", "--json"]);
    assert_eq!(committed["complete"], false, "{committed}");
    let rejected = j(&["reject", &gid, "--reason", "not this one", "--json"]);
    assert_eq!(
        rejected,
        serde_json::json!({"grant_id": gid, "phase": "rejected", "reason": "not this one"})
    );
    let recovered = j(&["recover", &gid, "--json"]);
    assert_eq!(
        recovered,
        serde_json::json!({"grant_id": gid, "recovered": null})
    );
    let revoked = j(&["revoke", &gid, "--reason", "done", "--json"]);
    assert_eq!(revoked["grant_id"], gid.as_str());
    assert_eq!(revoked["reason"], "done");
    let token_id = child["claims"]["grant_id"].as_str().unwrap();
    let revoked = j(&["token", "revoke", token_id, "--json"]);
    assert_eq!(revoked["token_id"], token_id);

    let log = j(&["audit", "--json"]);
    assert!(log.as_array().unwrap().len() >= 8, "{log}");
    // Verified first, the same array: stdout stays one document.
    let verified_log = j(&["audit", "--verify", "--json"]);
    assert_eq!(verified_log, log);
    let denied = j(&["denied", &gid, "--json"]);
    assert_eq!(denied["grant_id"], gid.as_str());
    assert_eq!(denied["attempts"], 0, "{denied}");
    let diag_file = env.dir.path().join("diag.json");
    let diag = j(&[
        "diagnostics",
        "--redacted",
        "-o",
        diag_file.to_str().unwrap(),
        "--json",
    ]);
    assert_eq!(diag["output"], diag_file.to_str().unwrap());
    let pages = env.dir.path().join("man");
    let man = j(&["man", "-o", pages.to_str().unwrap(), "--json"]);
    assert!(man["pages"].as_array().unwrap().len() > 20, "{man}");

    // Every subcommand is either covered above or exempt.
    for sub in subcommands() {
        let name = sub.join(" ");
        assert!(
            covered.contains(&name) || exempt.contains(name.as_str()),
            "wopfs {name} is neither tested with --json nor exempt"
        );
    }
    // And every subcommand that is not exempt has the flag.
    let cmd = wopfs::cli::Cli::command();
    for sub in subcommands() {
        let name = sub.join(" ");
        if exempt.contains(name.as_str()) {
            continue;
        }
        let mut c = &cmd;
        for s in &sub {
            c = c.find_subcommand(s).unwrap();
        }
        assert!(
            c.get_arguments().any(|a| a.get_long() == Some("json")),
            "wopfs {name} has no --json"
        );
    }
}

/// A pseudo-terminal: what a command writes on the slave side is read
/// from the master, as a terminal would show it.
struct Pty {
    master: OwnedFd,
    slave: OwnedFd,
}

fn pty() -> Pty {
    // SAFETY: plain libc calls on fds this function owns.
    unsafe {
        let m = libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC);
        assert!(m >= 0, "posix_openpt");
        let master = OwnedFd::from_raw_fd(m);
        assert_eq!(libc::grantpt(m), 0);
        assert_eq!(libc::unlockpt(m), 0);
        let mut name = [0 as libc::c_char; 128];
        assert_eq!(libc::ptsname_r(m, name.as_mut_ptr(), name.len()), 0);
        let s = libc::open(
            name.as_ptr(),
            libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC,
        );
        assert!(s >= 0, "opening the pty slave");
        let slave = OwnedFd::from_raw_fd(s);
        let ws = libc::winsize {
            ws_row: 24,
            ws_col: 80,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        libc::ioctl(s, libc::TIOCSWINSZ, &ws);
        Pty { master, slave }
    }
}

/// What a run of wopfs on a terminal gave: the terminal's text (`\r`
/// dropped), stderr when it was not the terminal, the exit status.
struct TtyRun {
    screen: String,
    stderr: String,
    code: Option<i32>,
}

/// Runs `wopfs --state-dir STATE ARGS…` with stdout (and, with
/// `stderr_tty`, stderr) on a fresh terminal that is its controlling
/// terminal, like a login shell's. `keys` are typed once the screen shows
/// `wait_for` (if given), each group once, and the last one again every
/// 200 ms until the terminal closes: a Ctrl-C flushes what was typed with
/// it or just after, so a key may be lost. PAGER, LESS, NO_COLOR and
/// WOPFS_PAGER are removed unless `vars` sets them.
fn on_tty(
    env: &Env,
    args: &[&str],
    vars: &[(&str, &str)],
    stderr_tty: bool,
    keys: Option<(&str, &[&[u8]])>,
) -> TtyRun {
    let p = pty();
    let mut cmd = wopfs_command();
    cmd.arg("--state-dir")
        .arg(&env.state)
        .args(args)
        .env_remove("WOPFS_STATE_DIR")
        .env_remove("PAGER")
        .env_remove("WOPFS_PAGER")
        .env_remove("LESS")
        .env_remove("NO_COLOR")
        .env("TERM", "xterm")
        .stdin(Stdio::from(p.slave.try_clone().unwrap()))
        .stdout(Stdio::from(p.slave.try_clone().unwrap()));
    if stderr_tty {
        cmd.stderr(Stdio::from(p.slave.try_clone().unwrap()));
    } else {
        cmd.stderr(Stdio::piped());
    }
    for (k, v) in vars {
        cmd.env(k, v);
    }
    // SAFETY: async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            libc::ioctl(1, libc::TIOCSCTTY, 0);
            Ok(())
        });
    }
    let mut child = cmd.spawn().unwrap();
    drop(cmd);
    drop(p.slave);
    let mut stderr = child.stderr.take();
    let err_reader = std::thread::spawn(move || {
        let mut s = String::new();
        if let Some(e) = stderr.as_mut() {
            let _ = e.read_to_string(&mut s);
        }
        s
    });
    // Read the terminal until every writer has closed it (EIO).
    let mut master = fs::File::from(p.master);
    let mut writer = master.try_clone().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let start = Instant::now();
    let mut screen = Vec::new();
    let mut last_typed: Option<Instant> = None;
    loop {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "wopfs {args:?} on a terminal did not finish: {}",
            String::from_utf8_lossy(&screen)
        );
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(chunk) => screen.extend(chunk),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(_) => {}
        }
        if let Some((wait_for, [first @ .., last])) = keys {
            use std::io::Write;
            // Writes fail once the program has closed the terminal.
            match last_typed {
                None if String::from_utf8_lossy(&screen).contains(wait_for) => {
                    for group in first {
                        let _ = writer.write_all(group);
                    }
                }
                Some(t) if t.elapsed() >= Duration::from_millis(200) => {}
                _ => continue,
            }
            let _ = writer.write_all(last);
            last_typed = Some(Instant::now());
        }
    }
    let status = child.wait().unwrap();
    TtyRun {
        screen: String::from_utf8_lossy(&screen).replace('\r', ""),
        stderr: err_reader.join().unwrap(),
        code: status.code(),
    }
}

/// A session whose diff is long (a 2,000-line file rewritten, 120 new
/// files) and one whose diff is short.
fn sessions_to_page() -> (Env, String, String) {
    let env = Env::new();
    let old: String = (0..2000)
        .map(|i| format!("old line {i:04} of the rounding module\n"))
        .collect();
    env.write("src/big.txt", &old);
    env.write("src/small.txt", "one\n");
    let long = env.grant(&["--mode", "read_write_overlay", "--allow", "src/**"]);
    let short = env.grant(&["--mode", "read_write_overlay", "--allow", "src/small.txt"]);
    let m = env.mount(&long, &env.mountpoint("long"), &[]);
    let new: String = (0..2000)
        .map(|i| format!("new line {i:04} of the rounding module\n"))
        .collect();
    fs::write(m.path("src/big.txt"), new).unwrap();
    for i in 0..120 {
        fs::write(m.path(&format!("src/new{i:03}.txt")), format!("{i}\n")).unwrap();
    }
    drop(m);
    let m = env.mount(&short, &env.mountpoint("short"), &[]);
    fs::write(m.path("src/small.txt"), "two\n").unwrap();
    drop(m);
    (env, long, short)
}

const BOLD: &str = "\x1b[1m";

/// A pager script that keeps what it was given, and its LESS variable.
fn recording_pager(env: &Env) -> (String, std::path::PathBuf) {
    let out = env.dir.path().join("paged");
    let script = env.dir.path().join("pager.sh");
    fs::write(
        &script,
        format!(
            "#!/bin/sh\ncat > {out}\necho \"LESS=$LESS\" > {out}.env\n",
            out = out.display()
        ),
    )
    .unwrap();
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&script, fs::Permissions::from_mode(0o755)).unwrap();
    (script.display().to_string(), out)
}

#[test]
fn colour_and_pager_like_git() {
    let (env, long, short) = sessions_to_page();
    let (pager, paged) = recording_pager(&env);
    let reset = || {
        let _ = fs::remove_file(&paged);
    };

    // On a terminal the diff goes through $PAGER, coloured, with LESS=FRX.
    let r = on_tty(&env, &["diff", &long], &[("PAGER", &pager)], false, None);
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    let text = fs::read_to_string(&paged).expect("the pager ran");
    assert!(
        text.contains("diff --wopfs a/src/big.txt") && text.contains(BOLD),
        "{}",
        &text[..200]
    );
    assert!(text.contains("+new line 1999"), "the whole diff");
    assert_eq!(
        fs::read_to_string(paged.with_extension("env"))
            .unwrap()
            .trim(),
        "LESS=FRX"
    );
    assert!(!r.screen.contains("diff --wopfs"), "{}", r.screen);
    // --stat and audit are paged too; WOPFS_PAGER comes before PAGER.
    for args in [&["diff", long.as_str(), "--stat"][..], &["audit"]] {
        reset();
        let r = on_tty(
            &env,
            args,
            &[("WOPFS_PAGER", &pager), ("PAGER", "false")],
            false,
            None,
        );
        assert_eq!(r.code, Some(0), "{args:?}: {}", r.stderr);
        assert!(
            fs::metadata(&paged).is_ok_and(|m| m.len() > 0),
            "{args:?} was paged"
        );
    }

    // No pager: piped, --no-pager, PAGER empty or cat, WOPFS_PAGER empty.
    reset();
    let out = wopfs_env(&env, &["diff", &long], &[("PAGER", &pager)]);
    let piped = stdout_of(&out, "diff into a pipe");
    assert!(
        piped.contains("diff --wopfs") && !piped.contains('\x1b'),
        "no colour in a pipe"
    );
    assert!(!paged.exists(), "no pager into a pipe");
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)]);
    let cases: [Case; 4] = [
        (&["--no-pager"], &[("PAGER", pager.as_str())]),
        (&[], &[("PAGER", "")]),
        (&[], &[("PAGER", "cat")]),
        (&[], &[("WOPFS_PAGER", ""), ("PAGER", pager.as_str())]),
    ];
    for (flags, vars) in cases {
        let mut args = vec!["diff", short.as_str()];
        args.extend_from_slice(flags);
        let r = on_tty(&env, &args, vars, false, None);
        assert_eq!(r.code, Some(0), "{flags:?} {vars:?}: {}", r.stderr);
        assert!(!paged.exists(), "{flags:?} {vars:?}: paged");
        assert!(
            r.screen.contains("+two") && r.screen.contains(BOLD),
            "{}",
            r.screen
        );
    }

    // Colour: auto on a terminal unless NO_COLOR is non-empty; the flag wins.
    let colour = |flags: &[&str], vars: &[(&str, &str)], tty: bool| -> bool {
        let mut args = vec!["diff", short.as_str(), "--no-pager"];
        args.extend_from_slice(flags);
        let text = if tty {
            let r = on_tty(&env, &args, vars, false, None);
            assert_eq!(r.code, Some(0), "{}", r.stderr);
            r.screen
        } else {
            stdout_of(&wopfs_env(&env, &args, vars), "diff")
        };
        assert!(text.contains("+two"), "{text}");
        text.contains('\x1b')
    };
    assert!(colour(&[], &[], true));
    assert!(colour(&[], &[("NO_COLOR", "")], true));
    assert!(!colour(&[], &[("NO_COLOR", "1")], true));
    assert!(!colour(&["--color", "never"], &[], true));
    assert!(!colour(&[], &[("TERM", "dumb")], true));
    assert!(colour(&["--color=always"], &[("NO_COLOR", "1")], true));
    assert!(!colour(&[], &[], false));
    assert!(colour(&["--color", "always"], &[], false));
    assert!(!colour(&["--color", "auto"], &[], false));
    // clap's own errors follow the flag too.
    let err = wopfs_env(&env, &["--color", "always", "diff"], &[]);
    assert!(String::from_utf8_lossy(&err.stderr).contains('\x1b'));
    let err = wopfs_env(&env, &["--color=never", "diff"], &[]);
    assert!(!String::from_utf8_lossy(&err.stderr).contains('\x1b'));
    let err = wopfs_env(&env, &["diff", &short, "--color", "sometimes"], &[]);
    assert_eq!(err.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&err.stderr).contains("never"));
}

#[test]
fn a_pager_quitting_early_is_no_error() {
    let (env, long, short) = sessions_to_page();
    // A pager that reads a little and leaves (q): over 200 KB were due.
    for pager in ["head -c 100 >/dev/null", "true", "exit 3"] {
        let r = on_tty(&env, &["diff", &long], &[("PAGER", pager)], false, None);
        assert_eq!(r.code, Some(0), "{pager}: {}", r.stderr);
        assert_eq!(r.stderr, "", "{pager}: quiet");
    }
    // A pager that is not there: sh says so, the diff is shown anyway.
    let r = on_tty(
        &env,
        &["diff", &short],
        &[("PAGER", "no-such-pager-here")],
        false,
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.stderr);
    assert!(r.screen.contains("+two"), "{}", r.screen);
    // Into a pipe closed early (no terminal, no pager): quiet, and status
    // 141 (128 + SIGPIPE), as git's.
    let sh = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "{BIN} --state-dir {} diff {long} | head -n 1 >/dev/null; exit ${{PIPESTATUS[0]}}",
            env.state.display()
        ))
        .env_remove("WOPFS_STATE_DIR")
        .output()
        .unwrap();
    assert_eq!(
        sh.status.code(),
        Some(141),
        "{}",
        String::from_utf8_lossy(&sh.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&sh.stderr), "");
}

#[test]
fn less_by_default_quits_on_q_and_on_short_diffs() {
    let has_less = Command::new("sh")
        .args(["-c", "command -v less"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_less {
        eprintln!("less is not installed; skipped");
        return;
    }
    let (env, long, short) = sessions_to_page();
    // A short diff fits on the screen: less -F shows it and quits at once.
    let r = on_tty(&env, &["diff", &short], &[], true, None);
    assert_eq!(r.code, Some(0), "{}", r.screen);
    assert!(r.screen.contains("+two"), "{}", r.screen);
    // A long one waits for the reader; q ends it, and wopfs exits 0 quietly.
    let r = on_tty(
        &env,
        &["diff", &long],
        &[],
        true,
        Some(("big.txt", &[b"q"])),
    );
    assert_eq!(r.code, Some(0), "{}", r.screen);
    assert!(!r.screen.contains("+new line 1999"), "paged, not dumped");
    assert!(
        !r.screen.contains("wopfs:") && !r.screen.contains("panicked"),
        "{}",
        r.screen
    );
    // Ctrl-C is the pager's: wopfs waits for it, then exits 0 on q.
    let r = on_tty(
        &env,
        &["diff", &long],
        &[],
        true,
        Some(("big.txt", &[b"\x03", b"q"])),
    );
    assert_eq!(r.code, Some(0), "{}", r.screen);
}

#[test]
fn progress_bars_only_on_a_terminal() {
    let (env, long, _) = sessions_to_page();
    let out = env.dir.path().join("x");
    let r = on_tty(
        &env,
        &["export", &long, "-o", out.to_str().unwrap()],
        &[],
        true,
        None,
    );
    assert_eq!(r.code, Some(0), "{}", r.screen);
    assert!(r.screen.contains("exporting"), "{:?}", r.screen);
    // No estimate in a run this short: it never settled.
    assert!(!r.screen.contains(" left"), "{:?}", r.screen);
    let piped = wopfs_env(&env, &["export", &long, "-o", out.to_str().unwrap()], &[]);
    assert!(piped.status.success());
    assert_eq!(String::from_utf8_lossy(&piped.stderr), "");
}
