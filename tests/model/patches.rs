//! The session's patch set against the model's diff from the host tree.
//!
//! The patch format carries files and symlinks (directories are implied),
//! with content and `st_mode`, not xattrs. So the expected set is, per
//! path holding a file or symlink before or after: a delete (with the
//! host content's hash as base), a create, or an update when the kind,
//! content or mode differs. An update of a path whose content and mode
//! did not change is accepted too: the core makes one for any entry it
//! copied up (opened for writing, an xattr set, a chmod undone), and the
//! set stays correct.

use std::collections::{BTreeMap, BTreeSet};

use wopfs::patch::set::{hash_hex, Loaded};
use wopfs::patch::Op;

use crate::fixture::Fixture;
use crate::picture::{Entry, Picture};
use crate::walk::Kind;

fn st_mode(e: &Entry) -> u32 {
    let ftype = match e.kind {
        Kind::Symlink => libc::S_IFLNK,
        _ => libc::S_IFREG,
    };
    ftype | e.perm
}

fn leaves(p: &Picture) -> BTreeMap<&String, &Entry> {
    p.entries
        .iter()
        .filter(|(_, e)| e.kind != Kind::Dir)
        .collect()
}

/// Checks the session's own set (as `wopfs commit` builds it) against the
/// diff from `host` to `now`: same paths, ops, contents, modes, bases.
pub fn check(fx: &Fixture, host: &Picture, now: &Picture) -> Result<(), String> {
    let loaded =
        Loaded::from_session(&fx.grant, &fx.session).map_err(|e| format!("building: {e}"))?;
    loaded
        .validate(&fx.grant)
        .map_err(|e| format!("the session's own set is refused: {e}"))?;
    let (before, after) = (leaves(host), leaves(now));
    let mut problems = Vec::new();
    let mut covered = BTreeSet::new();
    for p in &loaded.set.patches {
        covered.insert(&p.path);
        let (old, new) = (before.get(&p.path), after.get(&p.path));
        let want_op = match (old, new) {
            (Some(_), None) => Op::Delete,
            (None, Some(_)) => Op::Create,
            (Some(_), Some(_)) => Op::Update,
            (None, None) => {
                problems.push(format!(
                    "{}: {:?} of a path never holding a file",
                    p.path, p.operation
                ));
                continue;
            }
        };
        if p.operation != want_op {
            problems.push(format!(
                "{}: {:?}, expected {want_op:?}",
                p.path, p.operation
            ));
            continue;
        }
        let want_base = old.map(|o| hash_hex(&o.content));
        if p.base != want_base {
            problems.push(format!(
                "{}: base {:?}, expected {want_base:?}",
                p.path, p.base
            ));
        }
        if let Some(n) = new {
            let content = loaded.content(p).map_err(|e| format!("{}: {e}", p.path))?;
            if content != n.content || p.mode != Some(st_mode(n)) {
                problems.push(format!(
                    "{}: content {:?} mode {:?}, expected {:?} mode {:o}",
                    p.path,
                    String::from_utf8_lossy(&content),
                    p.mode.map(|m| format!("{m:o}")),
                    String::from_utf8_lossy(&n.content),
                    st_mode(n)
                ));
            }
        }
    }
    // Every real change has its patch.
    for path in before.keys().chain(after.keys()).collect::<BTreeSet<_>>() {
        if covered.contains(path) {
            continue;
        }
        let changed = match (before.get(path), after.get(path)) {
            (Some(o), Some(n)) => o.kind != n.kind || o.content != n.content || o.perm != n.perm,
            _ => true,
        };
        if changed {
            problems.push(format!("{path}: changed, but no patch"));
        }
    }
    match problems.is_empty() {
        true => Ok(()),
        false => Err(format!("patch set:\n  {}", problems.join("\n  "))),
    }
}
