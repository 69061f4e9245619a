//! What a session changes: the overlay compared with the grant's host
//! tree, one change per path. Renames are a delete plus a create, as in
//! the patch format. `set.rs` turns the changes into WorkspacePatch sets,
//! `diff.rs` shows them.

pub mod diff;
pub mod format;
pub mod links;
pub mod set;

use serde::{Deserialize, Serialize};

use crate::tree::{Kind, Origin, Tree, ROOT};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Op {
    Create,
    Update,
    Delete,
}

/// Where a created or updated path's content is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    /// An overlay object.
    Object(u64),
    /// An untouched host entry that moved here.
    Host(String),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Change {
    pub path: String,
    pub op: Op,
    pub kind: Kind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source: Option<Source>,
    /// Another name of the file at this path of the same changes (a hard
    /// link): the first of the file's names, by path, carries the content.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

fn is_content(k: Kind) -> bool {
    k != Kind::Dir
}

/// Changes of files and symlinks from `base` (the grant) to `fin` (the
/// view now), sorted by path. Directories are implied by their files. The
/// names of a file with several (one overlay object) all change: the first
/// by path carries the content, the others are links to it.
pub fn changes(base: &Tree, fin: &Tree) -> Vec<Change> {
    let mut out = Vec::new();
    let base_kind = |p: &str| {
        base.lookup_path(p)
            .and_then(|i| base.get(i))
            .map(|n| n.kind)
            .filter(|k| is_content(*k))
    };
    for ino in fin.subtree(ROOT) {
        let (Some(n), Some(path)) = (fin.get(ino), fin.path(ino)) else {
            continue;
        };
        if !is_content(n.kind) {
            continue;
        }
        let source = match &n.origin {
            Origin::InPlace => continue,
            Origin::Host(h) => Source::Host(h.to_string()),
            Origin::Upper(o) => Source::Object(*o),
        };
        let op = match base_kind(&path) {
            Some(_) => Op::Update,
            None => Op::Create,
        };
        out.push(Change {
            path,
            op,
            kind: n.kind,
            source: Some(source),
            link: None,
        });
    }
    for ino in base.subtree(ROOT) {
        let (Some(n), Some(path)) = (base.get(ino), base.path(ino)) else {
            continue;
        };
        if !is_content(n.kind) {
            continue;
        }
        let still = fin
            .lookup_path(&path)
            .and_then(|i| fin.get(i))
            .is_some_and(|f| is_content(f.kind));
        if !still {
            out.push(Change {
                path,
                op: Op::Delete,
                kind: n.kind,
                source: None,
                link: None,
            });
        }
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    let mut first = std::collections::HashMap::new();
    for c in &mut out {
        if let Some(Source::Object(o)) = c.source {
            match first.get(&o) {
                Some(p) => c.link = Some(String::clone(p)),
                None => {
                    first.insert(o, c.path.clone());
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::{FileMatch, FileType};

    /// A grant's file list of these paths.
    fn files(paths: &[&str]) -> Vec<FileMatch> {
        paths
            .iter()
            .map(|p| FileMatch {
                path: p.to_string(),
                file_type: FileType::Other,
                size_bytes: 1,
                symlink: false,
            })
            .collect()
    }

    #[test]
    fn the_names_of_one_file_link_to_its_first_path() {
        let files = files(&["a.txt", "d/b.txt"]);
        let base = Tree::from_files(&files);
        let mut fin = Tree::from_files(&files);
        let a = fin.lookup_path("a.txt").unwrap();
        fin.set_origin(a, Origin::Upper(1));
        fin.link(a, ROOT, "z.txt").unwrap();
        let d = fin.lookup_path("d").unwrap();
        fin.remove(fin.lookup_path("d/b.txt").unwrap());
        fin.link(a, d, "b.txt").unwrap();
        fin.insert(ROOT, "other.txt", Kind::File, Origin::Upper(2));
        let got: Vec<(String, Op, Option<String>)> = changes(&base, &fin)
            .into_iter()
            .map(|c| (c.path, c.op, c.link))
            .collect();
        let a = Some("a.txt".to_string());
        assert_eq!(
            got,
            vec![
                ("a.txt".into(), Op::Update, None),
                ("d/b.txt".into(), Op::Update, a.clone()),
                ("other.txt".into(), Op::Create, None),
                ("z.txt".into(), Op::Create, a),
            ]
        );
    }

    #[test]
    fn renames_are_delete_plus_create() {
        let files = files(&["a.txt", "d/b.txt", "d/c.txt", "keep.txt"]);
        let base = Tree::from_files(&files);
        let mut fin = Tree::from_files(&files);
        let d = fin.lookup_path("d").unwrap();
        fin.move_to(d, ROOT, "e");
        let a = fin.lookup_path("a.txt").unwrap();
        fin.set_origin(a, Origin::Upper(1));
        fin.insert(ROOT, "new.txt", Kind::File, Origin::Upper(2));
        let c = fin.lookup_path("e/c.txt").unwrap();
        fin.remove(c);
        let got: Vec<(String, Op)> = changes(&base, &fin)
            .into_iter()
            .map(|c| (c.path, c.op))
            .collect();
        assert_eq!(
            got,
            vec![
                ("a.txt".into(), Op::Update),
                ("d/b.txt".into(), Op::Delete),
                ("d/c.txt".into(), Op::Delete),
                ("e/b.txt".into(), Op::Create),
                ("new.txt".into(), Op::Create),
            ]
        );
    }
}

/// A change with the size of its new content (0 for deletions).
#[derive(Clone, Debug, Serialize)]
pub struct Pending {
    pub path: String,
    pub op: Op,
    pub kind: Kind,
    pub size: u64,
}

/// Why patch `op` of a `kind` at `path` (`granted`: a granted file) is
/// outside `scope`, or `None`: the one rule of a commit's validation and
/// of `wopfs diff`'s marks.
pub fn scope_refuses(
    scope: &crate::scope::Scope,
    op: Op,
    path: &str,
    kind: Kind,
    granted: bool,
) -> Option<&'static str> {
    match op {
        Op::Update | Op::Delete => scope.refuses_change(path, granted),
        Op::Create => scope.refuses_create(path, kind),
    }
}

/// The pending changes of a session, read from its overlay on disk
/// without touching it (a daemon may be serving it meanwhile).
pub fn pending(
    grant: &crate::grant::Grant,
    session_dir: &std::path::Path,
) -> crate::error::Result<Vec<Pending>> {
    if grant.mode != crate::policy::Mode::ReadWriteOverlay {
        return Ok(Vec::new());
    }
    let base = Tree::from_files(&grant.files);
    let mut fin = Tree::from_files(&grant.files);
    let (seen, objects) = crate::overlay::inspect(grant, session_dir, &mut fin)?;
    let host = crate::host::HostRoot::open(&grant.root).ok();
    let all = changes(&base, &fin);
    // Paths other names link to stay, as in the set.
    let linked: std::collections::BTreeSet<String> =
        all.iter().filter_map(|c| c.link.clone()).collect();
    Ok(all
        .into_iter()
        .filter(|c| {
            linked.contains(&c.path)
                || !host
                    .as_ref()
                    .is_some_and(|h| set::is_noop_update(c, &seen, h, &objects))
        })
        .map(|c| {
            let size = match &c.source {
                // A link adds a name, no bytes.
                _ if c.link.is_some() => 0,
                Some(Source::Object(o)) => objects.lstat(*o).map_or(0, |st| st.st_size as u64),
                Some(Source::Host(h)) => host
                    .as_ref()
                    .and_then(|hr| hr.lstat(h).ok())
                    .map_or(0, |st| st.st_size as u64),
                None => 0,
            };
            Pending {
                path: c.path,
                op: c.op,
                kind: c.kind,
                size,
            }
        })
        .collect())
}

/// "3 created, 1 updated, 2 deleted, 12.0 KiB" for a one-line summary.
pub fn summary(p: &[Pending]) -> String {
    let count = |op| p.iter().filter(|c| c.op == op).count();
    let bytes: u64 = p.iter().map(|c| c.size).sum();
    format!(
        "{} created, {} updated, {} deleted, {}",
        count(Op::Create),
        count(Op::Update),
        count(Op::Delete),
        human_bytes(bytes)
    )
}

pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}
