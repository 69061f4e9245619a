//! Hard links in patch sets. A set carries a file with several names as
//! one patch per name: the first path (by sort order) holds the content,
//! every other one names it in its `link` field (see `format::WorkspacePatch`).
//! `check` holds a set, possibly from a hostile agent, to those rules
//! before anything is written; `check_whole` keeps a partial commit from
//! splitting a file's names (a link without its file, or a file whose
//! other names stay pending, would leave the host and the session apart).

use std::collections::{HashMap, HashSet};

use super::format::{PatchSet, WorkspacePatch};
use super::Op;
use crate::error::{Error, Result};
use crate::grant::Grant;
use crate::paths;

/// Every `link` of `set` names another path of the set that creates or
/// updates a regular file and is no link itself, and carries that path's
/// blob, mode and size and no content; the grant's policy allows hard
/// links. (Each path's place in the write scope is checked with the
/// others.) Errors name the patch and its target.
pub fn check(set: &PatchSet, grant: &Grant) -> Result<()> {
    let by_path: HashMap<&str, &WorkspacePatch> =
        set.patches.iter().map(|p| (p.path.as_str(), p)).collect();
    let dirs: HashSet<&str> = set
        .patches
        .iter()
        .filter(|p| p.operation != Op::Delete)
        .flat_map(|p| paths::ancestors(&p.path))
        .collect();
    for p in &set.patches {
        let Some(t) = p.link.as_deref() else {
            continue;
        };
        let who = format!("patch {} (a hard link to {t})", p.path);
        let bad = |why: String| Err(Error::invalid(format!("{who}: {why}")));
        if !grant.allow_hardlinks {
            return Err(Error::policy(format!(
                "{who}: grant {}'s policy refuses hard links (allow_hardlinks = false)",
                grant.grant_id
            )));
        }
        if p.operation == Op::Delete {
            return bad("a delete removes a name and links to nothing".into());
        }
        if t == p.path {
            return bad("a path cannot be a hard link to itself".into());
        }
        if p.content.is_some() {
            return bad(format!(
                "a link carries no content of its own (its bytes are {t}'s)"
            ));
        }
        let target = match by_path.get(t) {
            Some(q) => q,
            None if dirs.contains(t) => {
                return bad(format!(
                    "{t} is a directory in this set; only regular files have several names"
                ))
            }
            None => {
                return bad(format!(
                    "{t} is not in this set (a link names a file the set creates or updates)"
                ))
            }
        };
        if target.operation == Op::Delete {
            return bad(format!("this set deletes {t}"));
        }
        if let Some(tt) = &target.link {
            return bad(format!(
                "{t} is itself a hard link (to {tt}); every link names its file's first path, so links form no chain or cycle"
            ));
        }
        if target.is_symlink() {
            return bad(format!(
                "{t} is a symlink; only regular files have several names"
            ));
        }
        if (&p.blob, p.mode, p.size) != (&target.blob, target.mode, target.size) {
            return bad(format!("it must carry {t}'s blob, mode and size"));
        }
    }
    Ok(())
}

/// A partial commit takes all names of a file or none: refuses `chosen`
/// (a part of `all`) when it holds a link without the path it links to,
/// or that path without one of its links.
pub fn check_whole(all: &[WorkspacePatch], chosen: &[&WorkspacePatch]) -> Result<()> {
    let taken: HashSet<&str> = chosen.iter().map(|p| p.path.as_str()).collect();
    for p in all {
        let Some(t) = p.link.as_deref() else {
            continue;
        };
        let missing = match (taken.contains(p.path.as_str()), taken.contains(t)) {
            (true, false) => t,
            (false, true) => p.path.as_str(),
            _ => continue,
        };
        return Err(Error::invalid(format!(
            "{} is a hard link to {t}: a commit takes every name of a file or none; add --path {missing}",
            p.path
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::{resolve, GrantRequest};
    use crate::patch::set::{hash_hex, FORMAT};
    use crate::policy::{Mode, Policy};

    fn grant(allow_hardlinks: bool) -> (tempfile::TempDir, Grant) {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "a").unwrap();
        let mut policy = Policy::builtin_default().unwrap();
        policy.allow_hardlinks = allow_hardlinks;
        let req = GrantRequest {
            ..GrantRequest::for_test(dir.path(), Mode::ReadWriteOverlay)
        };
        let g = resolve(&req, &policy, &crate::clock::SystemClock).unwrap();
        (dir, g)
    }

    fn file(path: &str, content: &[u8], mode: u32) -> WorkspacePatch {
        WorkspacePatch {
            grant_id: "g".into(),
            path: path.into(),
            operation: Op::Create,
            content: None,
            blob: Some(hash_hex(content)),
            base: None,
            mode: Some(mode),
            size: Some(content.len() as u64),
            link: None,
        }
    }

    fn link(path: &str, to: &str) -> WorkspacePatch {
        WorkspacePatch {
            link: Some(to.into()),
            ..file(path, b"x", libc::S_IFREG | 0o644)
        }
    }

    fn set(patches: Vec<WorkspacePatch>) -> PatchSet {
        PatchSet {
            format: FORMAT.into(),
            grant_id: "g".into(),
            root: "/".into(),
            created_at: "2024-01-01T00:00:00Z".into(),
            patches,
        }
    }

    #[test]
    fn links_name_a_file_of_the_set_and_carry_its_fields() {
        let (_d, g) = grant(true);
        let reg = libc::S_IFREG | 0o644;
        let x = || file("x", b"x", reg);
        check(&set(vec![x(), link("y", "x"), link("z/w", "x")]), &g).unwrap();
        let refused = |patches: Vec<WorkspacePatch>, words: &[&str]| {
            let e = check(&set(patches), &g).unwrap_err().to_string();
            for w in words {
                assert!(e.contains(w), "{w:?} not in: {e}");
            }
        };
        refused(vec![x(), link("y", "y")], &["patch y", "itself"]);
        refused(
            vec![x(), link("y", "nope")],
            &["patch y", "nope is not in this set"],
        );
        refused(
            vec![x(), link("y", "z")],
            &["patch y", "z is not in this set"],
        );
        refused(
            vec![file("d/f", b"x", reg), link("y", "d")],
            &["patch y", "d is a directory"],
        );
        refused(
            vec![x(), link("y", "x"), link("w", "y")],
            &["patch w", "y is itself a hard link (to x)"],
        );
        // A cycle has a link to a link in it.
        refused(
            vec![link("p", "q"), link("q", "p")],
            &["itself a hard link"],
        );
        refused(
            vec![file("s", b"x", libc::S_IFLNK | 0o777), link("y", "s")],
            &["patch y", "s is a symlink"],
        );
        let deleted = WorkspacePatch {
            operation: Op::Delete,
            ..file("x", b"x", reg)
        };
        refused(vec![deleted, link("y", "x")], &["patch y", "deletes x"]);
        let inline = WorkspacePatch {
            content: Some("eA==".into()),
            ..link("y", "x")
        };
        refused(vec![x(), inline], &["patch y", "no content of its own"]);
        let other_mode = WorkspacePatch {
            mode: Some(libc::S_IFREG | 0o755),
            ..link("y", "x")
        };
        refused(
            vec![x(), other_mode],
            &["patch y", "x's blob, mode and size"],
        );
        let delete_link = WorkspacePatch {
            operation: Op::Delete,
            ..link("y", "x")
        };
        refused(vec![x(), delete_link], &["patch y", "a delete"]);
        let (_d, strict) = grant(false);
        let e = check(&set(vec![x(), link("y", "x")]), &strict).unwrap_err();
        assert!(e.to_string().contains("allow_hardlinks = false"), "{e}");
    }

    #[test]
    fn a_partial_commit_takes_every_name_or_none() {
        let reg = libc::S_IFREG | 0o644;
        let all = vec![file("a", b"x", reg), link("b", "a"), file("c", b"c", reg)];
        let pick = |paths: &[&str]| -> Vec<&WorkspacePatch> {
            all.iter()
                .filter(|p| paths.contains(&p.path.as_str()))
                .collect()
        };
        check_whole(&all, &pick(&["a", "b"])).unwrap();
        check_whole(&all, &pick(&["c"])).unwrap();
        let e = check_whole(&all, &pick(&["b", "c"]))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("b is a hard link to a") && e.contains("--path a"),
            "{e}"
        );
        let e = check_whole(&all, &pick(&["a"])).unwrap_err().to_string();
        assert!(e.contains("--path b"), "{e}");
    }
}
