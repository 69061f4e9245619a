//! `wopfs commit --git-branch`: a session's set becomes a commit on a
//! branch of the host repository, its parent the commit the grant was cut
//! from, and the working tree, index and current branch stay byte for byte
//! as they were. Checked with git itself (`cat-file`, `ls-tree`, `log`).

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

use common::*;

fn git(repo: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(args)
        .env("GIT_AUTHOR_NAME", "t")
        .env("GIT_AUTHOR_EMAIL", "t@example.org")
        .env("GIT_COMMITTER_NAME", "t")
        .env("GIT_COMMITTER_EMAIL", "t@example.org")
        .output()
        .expect("running git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

/// A repository with one commit on `main`.
fn repo(env: &Env) {
    env.write("README.md", "# project\n");
    env.write("src/a.py", "a = 1\n");
    env.write("src/old.txt", "old\n");
    env.write("src/becomes-dir", "a file\n");
    env.write("run.sh", "#!/bin/sh\necho hi\n");
    fs::set_permissions(env.host.join("run.sh"), fs::Permissions::from_mode(0o755)).unwrap();
    env.link("src/link-to-readme", "../README.md");
    git(&env.host, &["init", "-q", "-b", "main"]);
    git(&env.host, &["add", "-A"]);
    git(&env.host, &["commit", "-q", "-m", "init"]);
}

/// What the agent does in the view (also run natively for the expected tree).
const SCRIPT: &str = "set -e
echo 'a = 2' > src/a.py
echo new > src/new.txt
rm src/old.txt
rm src/becomes-dir && mkdir src/becomes-dir && echo inner > src/becomes-dir/inner.txt
ln -s a.py src/link-to-a
chmod -x run.sh
printf '#!/bin/sh\\necho tool\\n' > tool.sh && chmod +x tool.sh
";

/// Every path of the working tree (`.git` aside) with kind, mode and
/// content, to compare before and after.
fn work_tree(root: &Path) -> String {
    list_tree(root)
        .into_iter()
        .filter(|p| p != ".git" && !p.starts_with(".git/"))
        .map(|p| {
            let full = root.join(&p);
            let m = fs::symlink_metadata(&full).unwrap();
            let body = if m.file_type().is_symlink() {
                format!("-> {}", fs::read_link(&full).unwrap().display())
            } else if m.is_file() {
                format!("{:?}", fs::read(&full).unwrap())
            } else {
                String::new()
            };
            format!("{p} {:o} {body}\n", m.permissions().mode())
        })
        .collect()
}

fn session(env: &Env, extra: &[&str]) -> String {
    let mut args = vec![
        "--allow",
        "**",
        "--mode",
        "read_write_overlay",
        "--reason",
        "ticket 42",
    ];
    args.extend_from_slice(extra);
    let g = env.grant(&args);
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    let out = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .current_dir(&m.mp)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(m);
    g
}

#[test]
fn a_session_becomes_a_commit_on_a_branch_and_the_working_tree_stays() {
    let env = Env::new();
    repo(&env);
    let origin = git(&env.host, &["rev-parse", "HEAD"]);
    let g = session(&env, &[]);
    // main moves on after the grant: the branch still starts where the
    // grant was cut.
    fs::write(env.host.join("later.txt"), "later\n").unwrap();
    git(&env.host, &["add", "later.txt"]);
    git(&env.host, &["commit", "-q", "-m", "later"]);
    let head = git(&env.host, &["rev-parse", "HEAD"]);
    let tree_before = work_tree(&env.host);
    let index_before = fs::read(env.host.join(".git/index")).unwrap();
    let head_ref_before = fs::read(env.host.join(".git/HEAD")).unwrap();

    let out = env.ok(&[
        "commit",
        &g,
        "--git-branch",
        "agent/fix-42",
        "--message",
        "Fix the rounding bug",
        "--author",
        "Agent Smith <agent@example.org>",
        "--approver",
        "alice",
        "--yes",
        "--json",
    ]);
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let commit = made["commit"].as_str().unwrap().to_string();
    assert_eq!(made["parent"], origin.as_str());
    assert_eq!(made["created"], true);

    // The working tree, the index and HEAD: untouched.
    assert_eq!(
        work_tree(&env.host),
        tree_before,
        "the working tree changed"
    );
    assert_eq!(
        fs::read(env.host.join(".git/index")).unwrap(),
        index_before,
        "the index changed"
    );
    assert_eq!(
        fs::read(env.host.join(".git/HEAD")).unwrap(),
        head_ref_before
    );
    assert_eq!(git(&env.host, &["rev-parse", "HEAD"]), head, "main moved");

    // The branch: one new commit on the grant's origin.
    assert_eq!(git(&env.host, &["rev-parse", "agent/fix-42"]), commit);
    assert_eq!(git(&env.host, &["rev-parse", "agent/fix-42^"]), origin);
    let log = git(
        &env.host,
        &["log", "-1", "--format=%an <%ae>%n%B", "agent/fix-42"],
    );
    for want in [
        "Agent Smith <agent@example.org>",
        "Fix the rounding bug",
        &format!("Wopfs-Grant: {g}"),
        "Wopfs-Purpose: test",
        "Wopfs-Reason: ticket 42",
        "Wopfs-Approver: alice",
    ] {
        assert!(log.contains(want), "{want:?} in {log}");
    }

    // Its tree is the origin with the script applied, modes and symlinks
    // included: the same script run on a plain copy of the origin.
    let expected = env.dir.path().join("expected");
    fs::create_dir_all(&expected).unwrap();
    let archive = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "git -C {} archive {origin} | tar -x -C {}",
            env.host.display(),
            expected.display()
        ))
        .status()
        .unwrap();
    assert!(archive.success());
    let out = Command::new("sh")
        .arg("-c")
        .arg(SCRIPT)
        .current_dir(&expected)
        .output()
        .unwrap();
    assert!(out.status.success());
    let mut want: Vec<String> = Vec::new();
    for p in list_tree(&expected) {
        let full = expected.join(&p);
        let m = fs::symlink_metadata(&full).unwrap();
        if m.is_dir() {
            continue;
        }
        let mode = if m.file_type().is_symlink() {
            "120000"
        } else if m.permissions().mode() & 0o111 != 0 {
            "100755"
        } else {
            "100644"
        };
        want.push(format!("{mode} {p}"));
    }
    want.sort();
    let mut got: Vec<String> = git(
        &env.host,
        &[
            "ls-tree",
            "-r",
            "--format=%(objectmode) %(path)",
            "agent/fix-42",
        ],
    )
    .lines()
    .map(str::to_string)
    .collect();
    got.sort();
    assert_eq!(got, want, "the branch's tree");
    for p in list_tree(&expected) {
        let full = expected.join(&p);
        let m = fs::symlink_metadata(&full).unwrap();
        let body = if m.file_type().is_symlink() {
            fs::read_link(&full).unwrap().display().to_string()
        } else if m.is_file() {
            fs::read_to_string(&full).unwrap().trim_end().to_string()
        } else {
            continue;
        };
        assert_eq!(
            git(&env.host, &["cat-file", "-p", &format!("agent/fix-42:{p}")]),
            body,
            "{p}"
        );
    }

    // The session is over, as after any commit; the audit log has it.
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    assert_eq!(status[0]["phase"], "committed");
    let err = env.fails(&["commit", &g, "--yes"]);
    assert!(err.contains("committed"), "{err}");
    let audit = env.ok(&["audit", "--json"]);
    assert!(
        audit.contains("agent/fix-42") && audit.contains(&commit),
        "{audit}"
    );
}

#[test]
fn git_branch_errors_name_the_problem_and_write_nothing() {
    // Not a git work tree.
    let plain = Env::new();
    plain.write("a.txt", "a\n");
    let g = session_plain(&plain);
    let err = plain.fails(&["commit", &g, "--git-branch", "x", "--yes"]);
    assert!(err.contains("not in a git work tree"), "{err}");

    let env = Env::new();
    repo(&env);
    let g = session(&env, &[]);
    let branches = || git(&env.host, &["branch", "--format=%(refname:short)"]);
    let before = branches();
    // The branch checked out.
    let err = env.fails(&["commit", &g, "--git-branch", "main", "--yes"]);
    assert!(err.contains("checked out"), "{err}");
    // A name git refuses.
    let err = env.fails(&["commit", &g, "--git-branch", "bad..name", "--yes"]);
    assert!(err.contains("not a valid branch name"), "{err}");
    // An author git could not record, refused before anything is written.
    let err = env.fails(&[
        "commit",
        &g,
        "--git-branch",
        "fine",
        "--author",
        "nobody",
        "--yes",
    ]);
    assert!(err.contains("expected `Name <email>`"), "{err}");
    // A branch that exists elsewhere.
    git(&env.host, &["branch", "taken"]);
    fs::write(env.host.join("x.txt"), "x\n").unwrap();
    git(&env.host, &["add", "x.txt"]);
    git(&env.host, &["commit", "-q", "-m", "x"]);
    git(&env.host, &["branch", "-f", "taken", "HEAD"]);
    let err = env.fails(&["commit", &g, "--git-branch", "taken", "--yes"]);
    assert!(
        err.contains("exists at") && err.contains("choose a new branch name"),
        "{err}"
    );
    // --path cannot go with it.
    let out = env.wopfs(&["commit", &g, "--git-branch", "y", "--path", "src", "--yes"]);
    assert!(!out.status.success());
    // Nothing of it was written; the session can still commit.
    let mut want = before.clone();
    want.push_str("\ntaken");
    let now = branches();
    let mut got: Vec<&str> = now.lines().collect::<Vec<_>>();
    got.sort();
    let mut want: Vec<&str> = want.lines().collect();
    want.sort();
    assert_eq!(got, want);
    let dry = env.ok(&["commit", &g, "--git-branch", "y", "--dry-run"]);
    assert!(dry.contains("nothing was written"), "{dry}");
    assert!(!branches().lines().any(|b| b == "y"));

    // A file the agent saw differs from the commit the grant was cut from
    // (uncommitted on the host when granted): a conflict, nothing written.
    let env = Env::new();
    repo(&env);
    fs::write(env.host.join("src/a.py"), "a = 'uncommitted'\n").unwrap();
    let g = session(&env, &[]);
    let err = env.fails(&["commit", &g, "--git-branch", "z", "--yes"]);
    assert!(
        err.contains("src/a.py") && err.contains("no branch was written"),
        "{err}"
    );
    assert!(!git(&env.host, &["branch"]).contains('z'));
    let status: serde_json::Value =
        serde_json::from_str(&env.ok(&["status", &g, "--json"])).unwrap();
    assert_ne!(status[0]["phase"], "committed");
}

fn session_plain(env: &Env) -> String {
    let g = env.grant(&["--allow", "**", "--mode", "read_write_overlay"]);
    let mp = env.mountpoint("mnt");
    let m = env.mount(&g, &mp, &[]);
    fs::write(m.path("b.txt"), "b\n").unwrap();
    drop(m);
    g
}

/// The same through the control API and the Python client.
#[test]
fn the_python_client_commits_onto_a_branch() {
    let env = Env::new();
    repo(&env);
    let origin = git(&env.host, &["rev-parse", "HEAD"]);
    let g = session(&env, &[]);
    let server = Server::start(
        &env,
        "wopfs.sock",
        "enabled = true\nmax_files = 100\nmax_total_size_bytes = 10000000\napprover_uids = [0]\n",
        &[],
    );
    let client = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/python");
    let out = Command::new(python())
        .args([
            "-c",
            &format!(
                "import sys, json; sys.path.insert(0, {py:?}); from wopfs_client import WopfsClient; \
                 print(json.dumps(WopfsClient({sock:?}).commit({g:?}, git_branch='agent/api', \
                 message='From the API', approver='ci')))",
                py = client.to_str().unwrap(),
                sock = server.socket.to_str().unwrap()
            ),
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let made: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(made["branch"], "agent/api");
    assert_eq!(git(&env.host, &["rev-parse", "agent/api^"]), origin);
    let log = git(&env.host, &["log", "-1", "--format=%B", "agent/api"]);
    assert!(
        log.starts_with("From the API") && log.contains("Wopfs-Approver: ci"),
        "{log}"
    );
    assert_eq!(git(&env.host, &["show", "agent/api:src/a.py"]), "a = 2");
    // The working tree is the origin's still.
    assert_eq!(
        fs::read_to_string(env.host.join("src/a.py")).unwrap(),
        "a = 1\n"
    );
}
