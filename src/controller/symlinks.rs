//! The symlink rule at commit, the same one grant resolution applies to
//! host symlinks: a link is written only if its target, resolved lexically
//! from the link's own directory, stays inside the root and names a path
//! the view shows after the set (a granted file it keeps, a file it
//! creates, or a directory on their paths), never a denied name. A policy
//! may forbid committing symlinks at all (`commit_symlinks = false`).

use std::collections::BTreeSet;

use crate::error::{Error, Result};
use crate::grant::Grant;
use crate::patch::set::Loaded;
use crate::patch::Op;
use crate::paths;
use crate::patterns::DenySet;

/// Refuses the set if any symlink it writes breaks the rule; the error
/// names the path and its target.
pub fn check(grant: &Grant, loaded: &Loaded) -> Result<()> {
    let patches = &loaded.set.patches;
    let links: Vec<_> = patches
        .iter()
        .filter(|p| p.operation != Op::Delete && p.is_symlink())
        .collect();
    if links.is_empty() {
        return Ok(());
    }
    if !grant.commit_symlinks {
        return Err(Error::policy(format!(
            "symlink {} cannot be committed: policy {} forbids committing symlinks; nothing was written",
            links[0].path, grant.policy
        )));
    }
    let deny = DenySet::new(&grant.deny_patterns).map_err(|e| {
        Error::invalid(format!(
            "grant {} has bad deny patterns: {e}",
            grant.grant_id
        ))
    })?;
    // What the view shows after the set: files, and the directories on
    // their paths.
    let deleted: BTreeSet<&str> = patches
        .iter()
        .filter(|p| p.operation == Op::Delete)
        .map(|p| p.path.as_str())
        .collect();
    let mut files: BTreeSet<&str> = grant
        .files
        .iter()
        .map(|f| f.path.as_str())
        .filter(|p| !deleted.contains(p))
        .collect();
    files.extend(
        patches
            .iter()
            .filter(|p| p.operation != Op::Delete)
            .map(|p| p.path.as_str()),
    );
    let dirs: BTreeSet<&str> = files.iter().flat_map(|f| paths::ancestors(f)).collect();

    for p in links {
        let target = loaded.content(p)?;
        let shown = String::from_utf8_lossy(&target).into_owned();
        let refuse = |why: &str| {
            Err(Error::policy(format!(
                "symlink {} -> {shown} cannot be committed: {why}; nothing was written",
                p.path
            )))
        };
        let Ok(text) = std::str::from_utf8(&target) else {
            return refuse("its target is not UTF-8");
        };
        let Some(resolved) = paths::resolve_link(&p.path, text) else {
            return refuse("its target leaves the root");
        };
        if resolved.is_empty() {
            continue; // the root itself
        }
        if deny.matches(&resolved) {
            return refuse(&format!("its target {resolved} is denied by the grant"));
        }
        if !files.contains(resolved.as_str()) && !dirs.contains(resolved.as_str()) {
            return refuse(&format!("its target {resolved} is not in the view"));
        }
    }
    Ok(())
}
