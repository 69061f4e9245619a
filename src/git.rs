//! Running git on a host repository: where a grant's root stood in its
//! repository ([`Origin`], recorded at grant time) and the hardened command
//! builder `controller::git_branch` uses to commit onto a branch.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Where a grant's root stood in its git repository when the grant was
/// made.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Origin {
    /// The commit `HEAD` was at.
    pub commit: String,
    /// The branch `HEAD` was on (`None`: detached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// A git command on the repository at `repo`. Nothing the repository's
/// config names is run (hooks, fsmonitor, signing programs, filters), and
/// as root git runs as the owner of `repo`, so the objects and the ref it
/// writes are the owner's and a hostile repository gains no privilege.
pub(crate) fn git(repo: &Path) -> Command {
    use std::os::unix::fs::MetadataExt;
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("git");
    c.args([
        "-c",
        "core.hooksPath=/dev/null",
        "-c",
        "core.fsmonitor=false",
        "-c",
        "commit.gpgSign=false",
        "-c",
        "safe.directory=*",
    ]);
    c.arg("-C").arg(repo);
    c.env("GIT_CONFIG_NOSYSTEM", "1")
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        .env_remove("GIT_INDEX_FILE")
        .env_remove("GIT_OBJECT_DIRECTORY")
        .stdin(Stdio::null());
    if rustix::process::geteuid().is_root() {
        if let Ok(m) = std::fs::metadata(repo) {
            let (uid, gid) = (m.uid(), m.gid());
            if uid != 0 {
                // SAFETY: setgroups/setgid/setuid are async-signal-safe.
                // They fail on a thread that already acts as its caller
                // (the control API's, capabilities dropped, fsuid the
                // caller's): git then writes as that caller, as wanted.
                unsafe {
                    c.pre_exec(move || {
                        libc::setgroups(0, std::ptr::null());
                        libc::setgid(gid);
                        libc::setuid(uid);
                        Ok(())
                    });
                }
            }
        }
    }
    c
}

/// Runs `cmd`; its stdout, or an error naming `what` with git's message.
pub(crate) fn run(mut cmd: Command, what: &str) -> Result<Vec<u8>> {
    let out = cmd
        .output()
        .map_err(|e| Error::io(format!("running git ({what}); is git installed?"), e))?;
    if out.status.success() {
        Ok(out.stdout)
    } else {
        Err(Error::invalid(format!(
            "git {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

pub(crate) fn text(b: Vec<u8>) -> String {
    String::from_utf8_lossy(&b).trim().to_string()
}

/// `git ARGS` on `repo`: its trimmed stdout, or an error with git's message.
pub(crate) fn query(repo: &Path, args: &[&str]) -> Result<String> {
    let mut c = git(repo);
    c.args(args);
    run(c, &args.join(" ")).map(text)
}

/// As [`query`], `None` for a failure or an empty answer (a question git
/// answers with "no", as `rev-parse --verify -q` does).
pub(crate) fn ask(repo: &Path, args: &[&str]) -> Option<String> {
    query(repo, args).ok().filter(|s| !s.is_empty())
}

/// The git origin of a tree at `root`, if it is inside a git work tree
/// with at least one commit (and git is installed).
pub fn origin(root: &Path) -> Option<Origin> {
    Some(Origin {
        commit: ask(root, &["rev-parse", "--verify", "-q", "HEAD^{commit}"])?,
        branch: ask(root, &["symbolic-ref", "-q", "--short", "HEAD"]),
    })
}

/// Runs `cmd` with `input` on its stdin.
pub(crate) fn feed(cmd: &mut Command, input: &[u8], what: &str) -> Result<Vec<u8>> {
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("running git ({what}); is git installed?"), e))?;
    let mut stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::invalid("git has no stdin"))?;
    let data = input.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data));
    let out = child
        .wait_with_output()
        .map_err(|e| Error::io(format!("git {what}"), e))?;
    let wrote = writer
        .join()
        .map_err(|_| Error::invalid("git's stdin writer failed"))?;
    if !out.status.success() {
        return Err(Error::invalid(format!(
            "git {what}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    wrote.map_err(|e| Error::io(format!("writing to git {what}"), e))?;
    Ok(out.stdout)
}
