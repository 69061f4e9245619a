//! Commits onto a git branch (`wopfs commit --git-branch`): a session's
//! patch set becomes a new commit on a branch of the host repository, built
//! with git's plumbing (`hash-object`, `update-index` on a temporary index,
//! `write-tree`, `commit-tree`, `update-ref`), so the working tree, the
//! repository's index and its current branch are never touched.
//!
//! The parent is the commit the grant was cut from (`git::Origin`, recorded
//! at grant time); the conflict check compares each patch's base with that
//! commit's content, as a commit to the working tree compares it with the
//! host. The branch is created, or moved forward from exactly the parent
//! (compare-and-swap in `update-ref`), never reset from elsewhere.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::error::{Error, Result};
use crate::git::{ask, feed, git, query, run, text, Origin};
use crate::patch::set::{Loaded, WorkspacePatch};
use crate::patch::Op;

/// What `commit_to_branch` made.
#[derive(Clone, Debug, Serialize)]
pub struct BranchCommit {
    pub branch: String,
    pub commit: String,
    pub parent: String,
    pub tree: String,
    pub created: bool,
}

/// The message's trailers and who made it.
pub struct Meta<'a> {
    pub grant_id: &'a str,
    pub purpose: &'a str,
    pub reason: &'a str,
    pub approver: &'a str,
    /// `Name <email>`; default: the approver.
    pub author: Option<&'a str>,
    /// The first paragraph; default: the purpose.
    pub message: Option<&'a str>,
}

/// A tree entry of the parent commit: mode and object id.
struct Entry {
    mode: String,
    oid: String,
}

/// Splits `Name <email>`.
fn person(s: &str) -> Result<(String, String)> {
    let bad = || Error::invalid(format!("--author {s:?}: expected `Name <email>`"));
    let (name, rest) = s.split_once('<').ok_or_else(bad)?;
    let email = rest.strip_suffix('>').ok_or_else(bad)?;
    let name = name.trim();
    if name.is_empty()
        || email.is_empty()
        || email.contains(['<', '>', '\n'])
        || name.contains('\n')
    {
        return Err(bad());
    }
    Ok((name.to_string(), email.to_string()))
}

/// Checks a branch name with git's own rule.
fn check_branch_name(repo: &Path, name: &str) -> Result<()> {
    query(repo, &["check-ref-format", "--branch", name])
        .map(|_| ())
        .map_err(|_| Error::invalid(format!("--git-branch {name:?} is not a valid branch name")))
}

/// Commits `loaded`'s patches (validated against the grant by the caller)
/// onto branch `branch` of the repository holding `root`, on top of
/// `origin`. Refused, writing no ref, when the branch exists elsewhere
/// than at the origin, is the branch checked out, or a patch's base is not
/// what the origin holds at its path.
pub fn commit_to_branch(
    root: &Path,
    origin: &Origin,
    branch: &str,
    loaded: &Loaded,
    meta: &Meta,
    dry_run: bool,
) -> Result<BranchCommit> {
    check_branch_name(root, branch)?;
    // Checked before anything else, also by a dry run.
    let author = match meta.author {
        Some(a) => Some(person(a)?),
        None => None,
    };
    let top = PathBuf::from(query(root, &["rev-parse", "--show-toplevel"])?);
    let prefix = query(root, &["rev-parse", "--show-prefix"])?;
    let full_ref = format!("refs/heads/{branch}");
    // Never the branch checked out: its working tree would fall behind.
    if ask(&top, &["symbolic-ref", "-q", "HEAD"]).as_deref() == Some(full_ref.as_str()) {
        return Err(Error::invalid(format!(
            "--git-branch {branch} is the branch checked out in {}; commit onto another branch (its working tree is never touched)",
            top.display()
        )));
    }
    let existing = ask(
        &top,
        &[
            "rev-parse",
            "--verify",
            "-q",
            &format!("{full_ref}^{{commit}}"),
        ],
    );
    if let Some(tip) = &existing {
        if *tip != origin.commit {
            return Err(Error::invalid(format!(
                "branch {branch} exists at {tip}, not at {} (the commit grant {} was cut from); choose a new branch name",
                origin.commit, meta.grant_id
            )));
        }
    }

    // The origin's entries at the patches' paths.
    let in_repo = |p: &str| format!("{prefix}{p}");
    let mut ls = git(&top);
    ls.args(["ls-tree", "-r", "-z", "--full-tree", &origin.commit]);
    let listing = run(ls, "ls-tree")?;
    let wanted: std::collections::HashSet<String> = loaded
        .set
        .patches
        .iter()
        .map(|p| in_repo(&p.path))
        .collect();
    let mut entries: HashMap<String, Entry> = HashMap::new();
    for rec in listing.split(|b| *b == 0).filter(|r| !r.is_empty()) {
        let rec = String::from_utf8_lossy(rec);
        let Some((head, path)) = rec.split_once('\t') else {
            continue;
        };
        if !wanted.contains(path) {
            continue;
        }
        let mut f = head.split(' ');
        if let (Some(mode), Some(_kind), Some(oid)) = (f.next(), f.next(), f.next()) {
            entries.insert(
                path.to_string(),
                Entry {
                    mode: mode.to_string(),
                    oid: oid.to_string(),
                },
            );
        }
    }
    check_bases(&top, loaded, &entries, &in_repo)?;

    if dry_run {
        return Ok(BranchCommit {
            branch: branch.to_string(),
            commit: String::new(),
            parent: origin.commit.clone(),
            tree: String::new(),
            created: existing.is_none(),
        });
    }
    // The new tree, in a temporary index (the repository's stays as it is).
    let scratch = tempfile::Builder::new()
        .prefix("wopfs-git-index")
        .tempdir()
        .map_err(|e| Error::io("making a scratch dir for the index", e))?;
    if rustix::process::geteuid().is_root() {
        // git runs as the repository's owner (`git::git`): its scratch too.
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&top).map_err(|e| Error::io(format!("{}", top.display()), e))?;
        std::os::unix::fs::chown(scratch.path(), Some(m.uid()), Some(m.gid()))
            .map_err(|e| Error::io("handing the scratch index to the repository's owner", e))?;
    }
    let index = scratch.path().join("index");
    let with_index = |args: &[&str]| {
        let mut c = git(&top);
        c.env("GIT_INDEX_FILE", &index).args(args);
        c
    };
    run(with_index(&["read-tree", &origin.commit]), "read-tree")?;
    let mut lines = Vec::new();
    // Removals first: a file that becomes a directory is removed before
    // what is beneath it is added.
    for p in loaded
        .set
        .patches
        .iter()
        .filter(|p| p.operation == Op::Delete)
    {
        lines.extend_from_slice(
            format!(
                "0 0000000000000000000000000000000000000000\t{}\0",
                in_repo(&p.path)
            )
            .as_bytes(),
        );
    }
    let writes: Vec<&WorkspacePatch> = loaded
        .set
        .patches
        .iter()
        .filter(|p| p.operation != Op::Delete)
        .collect();
    let oids = hash_objects(&top, scratch.path(), loaded, &writes)?;
    for (p, oid) in writes.iter().zip(&oids) {
        let mode = if p.is_symlink() {
            "120000"
        } else if p.mode.unwrap_or(0o644) & 0o111 != 0 {
            "100755"
        } else {
            "100644"
        };
        lines.extend_from_slice(format!("{mode} {oid}\t{}\0", in_repo(&p.path)).as_bytes());
    }
    let mut c = with_index(&["update-index", "-z", "--index-info"]);
    feed(&mut c, &lines, "update-index")?;
    let tree = text(run(with_index(&["write-tree"]), "write-tree")?);

    let (name, email) = match author {
        Some(a) => a,
        None => {
            let local: String = meta
                .approver
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '-'
                    }
                })
                .collect();
            (meta.approver.to_string(), format!("{local}@localhost"))
        }
    };
    let first = meta
        .message
        .map(str::trim)
        .filter(|m| !m.is_empty())
        .unwrap_or(meta.purpose);
    let message = format!(
        "{first}\n\nWopfs-Grant: {}\nWopfs-Purpose: {}\nWopfs-Reason: {}\nWopfs-Approver: {}\n",
        meta.grant_id,
        one_line(meta.purpose),
        one_line(meta.reason),
        one_line(meta.approver)
    );
    let mut c = git(&top);
    c.args(["commit-tree", &tree, "-p", &origin.commit, "-F", "-"])
        .env("GIT_AUTHOR_NAME", &name)
        .env("GIT_AUTHOR_EMAIL", &email)
        .env("GIT_COMMITTER_NAME", &name)
        .env("GIT_COMMITTER_EMAIL", &email);
    let commit = text(feed(&mut c, message.as_bytes(), "commit-tree")?);
    let old = existing
        .clone()
        .unwrap_or_else(|| "0000000000000000000000000000000000000000".to_string());
    let mut c = git(&top);
    c.args([
        "update-ref",
        "-m",
        &format!("wopfs commit {}", meta.grant_id),
        &full_ref,
        &commit,
        &old,
    ]);
    run(c, "update-ref").map_err(|e| {
        Error::invalid(format!(
            "branch {branch} moved while the commit was made ({e}); nothing was changed"
        ))
    })?;
    Ok(BranchCommit {
        branch: branch.to_string(),
        commit,
        parent: origin.commit.clone(),
        tree,
        created: existing.is_none(),
    })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Writes the content of each of `patches` into the repository
/// (`hash-object -w`, one process for all, reading them from files in the
/// scratch dir `dir`); their ids in order.
fn hash_objects(
    top: &Path,
    dir: &Path,
    loaded: &Loaded,
    patches: &[&WorkspacePatch],
) -> Result<Vec<String>> {
    use std::os::unix::fs::PermissionsExt;
    let mut paths = Vec::new();
    for (i, p) in patches.iter().enumerate() {
        let f = dir.join(format!("blob-{i}"));
        // One content in memory at a time.
        std::fs::write(&f, loaded.content(p)?)
            .map_err(|e| Error::io(format!("writing {}", f.display()), e))?;
        // git may run as the repository's owner (`git::git`).
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644))
            .map_err(|e| Error::io(format!("{}", f.display()), e))?;
        paths.extend_from_slice(f.as_os_str().as_encoded_bytes());
        paths.push(b'\n');
    }
    let mut c = git(top);
    c.args(["hash-object", "-w", "--no-filters", "--stdin-paths"]);
    let out = String::from_utf8_lossy(&feed(&mut c, &paths, "hash-object")?).into_owned();
    let oids: Vec<String> = out.lines().map(str::to_string).collect();
    if oids.len() != patches.len() {
        return Err(Error::invalid(format!(
            "git hash-object answered {} ids for {} contents",
            oids.len(),
            patches.len()
        )));
    }
    Ok(oids)
}

/// The blake3 of each object `oids` names (a blob's bytes; a symlink's
/// target is its blob), read by one `cat-file --batch`.
fn blob_hashes(top: &Path, oids: &[&str]) -> Result<HashMap<String, String>> {
    let mut out = HashMap::new();
    if oids.is_empty() {
        return Ok(out);
    }
    let mut c = git(top);
    c.args(["cat-file", "--batch"]);
    let input: Vec<u8> = oids
        .iter()
        .flat_map(|o| format!("{o}\n").into_bytes())
        .collect();
    let answer = feed(&mut c, &input, "cat-file --batch")?;
    let bad = || Error::invalid("git cat-file --batch answered something unexpected");
    let mut rest = &answer[..];
    while !rest.is_empty() {
        let nl = rest.iter().position(|b| *b == b'\n').ok_or_else(bad)?;
        let head = String::from_utf8_lossy(&rest[..nl]).into_owned();
        let mut f = head.split(' ');
        let (Some(oid), Some(_kind), Some(size)) = (f.next(), f.next(), f.next()) else {
            return Err(bad());
        };
        let size: usize = size.parse().map_err(|_| bad())?;
        let body = rest.get(nl + 1..nl + 1 + size).ok_or_else(bad)?;
        out.insert(oid.to_string(), crate::patch::set::hash_hex(body));
        rest = rest.get(nl + 2 + size..).ok_or_else(bad)?;
    }
    Ok(out)
}

/// Each patch's base against the origin: an update or delete needs the
/// origin's file (or symlink) to be what the agent saw; a create needs the
/// path free in the origin (or already holding the result). One error
/// names every conflict; nothing is written.
fn check_bases(
    top: &Path,
    loaded: &Loaded,
    entries: &HashMap<String, Entry>,
    in_repo: &dyn Fn(&str) -> String,
) -> Result<()> {
    let oids: Vec<&str> = entries.values().map(|e| e.oid.as_str()).collect();
    let hashes = blob_hashes(top, &oids)?;
    let mut conflicts = Vec::new();
    for p in &loaded.set.patches {
        let at = entries.get(&in_repo(&p.path));
        let found = match at {
            Some(e) if e.mode == "160000" || e.mode == "040000" => {
                conflicts.push(format!(
                    "{} (a submodule or directory in the branch's parent)",
                    p.path
                ));
                continue;
            }
            Some(e) => Some(
                hashes
                    .get(&e.oid)
                    .cloned()
                    .ok_or_else(|| Error::invalid(format!("git has no object {}", e.oid)))?,
            ),
            None => None,
        };
        let ok = match (p.operation, &found) {
            (Op::Create, None) => true,
            (Op::Create, Some(h)) => same_result(p, h, at),
            (Op::Update | Op::Delete, Some(h)) => {
                p.base.as_ref() == Some(h) || (p.operation == Op::Update && same_result(p, h, at))
            }
            (Op::Update | Op::Delete, None) => false,
        };
        if !ok {
            conflicts.push(format!(
                "{} (expected {}, the parent commit has {})",
                p.path,
                p.base
                    .as_deref()
                    .unwrap_or("nothing, or the content is unknown"),
                found.as_deref().unwrap_or("nothing")
            ));
        }
    }
    if conflicts.is_empty() {
        return Ok(());
    }
    Err(Error::conflict(format!(
        "{} path{} differ from what the agent saw in the commit the grant was cut from; no branch was written: {}",
        conflicts.len(),
        if conflicts.len() == 1 { "" } else { "s" },
        conflicts.join("; ")
    )))
}

/// Whether the origin already holds what the patch makes there.
fn same_result(p: &WorkspacePatch, found: &str, at: Option<&Entry>) -> bool {
    let link = at.is_some_and(|e| e.mode == "120000");
    p.blob.as_deref() == Some(found) && link == p.is_symlink()
}
