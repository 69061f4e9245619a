//! What a tree looks like from outside, in one comparable value: every
//! visible path with its kind, mode, size, link count, content and user
//! xattrs (times are left out: they are another change's business), and
//! which paths are hard links of one another.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;

use crate::walk::Kind;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    /// Permission bits, set-id and sticky bits included.
    pub perm: u32,
    /// Directories' sizes are not compared (the view shows a fixed one).
    pub size: Option<u64>,
    pub nlink: u32,
    /// A file's data, a symlink's target, nothing for a directory.
    pub content: Vec<u8>,
    pub xattrs: BTreeMap<String, Vec<u8>>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Picture {
    pub entries: BTreeMap<String, Entry>,
    /// Groups of two or more paths that are one inode.
    pub links: BTreeSet<Vec<String>>,
}

impl Picture {
    /// Groups paths by an inode key into `links`.
    pub fn set_links<K: Ord>(&mut self, keys: impl IntoIterator<Item = (K, String)>) {
        let mut by: BTreeMap<K, Vec<String>> = BTreeMap::new();
        for (k, p) in keys {
            by.entry(k).or_default().push(p);
        }
        self.links = by
            .into_values()
            .filter(|g| g.len() > 1)
            .map(|mut g| {
                g.sort();
                g
            })
            .collect();
    }

    /// A readable account of how `other` differs from `self`, or `None`.
    pub fn diff(&self, other: &Picture, mine: &str, theirs: &str) -> Option<String> {
        let mut out = String::new();
        let paths: BTreeSet<&String> = self.entries.keys().chain(other.entries.keys()).collect();
        for p in paths {
            match (self.entries.get(p), other.entries.get(p)) {
                (Some(a), Some(b)) if a == b => {}
                (a, b) => {
                    let _ = writeln!(
                        out,
                        "  {p}:\n    {mine}: {}\n    {theirs}: {}",
                        show(a),
                        show(b)
                    );
                }
            }
        }
        if self.links != other.links {
            let _ = writeln!(
                out,
                "  hard links:\n    {mine}: {:?}\n    {theirs}: {:?}",
                self.links, other.links
            );
        }
        (!out.is_empty()).then_some(out)
    }
}

fn show(e: Option<&Entry>) -> String {
    match e {
        None => "absent".into(),
        Some(e) => format!(
            "{:?} {:o} size {:?} nlink {} {:?} xattrs {:?}",
            e.kind,
            e.perm,
            e.size,
            e.nlink,
            String::from_utf8_lossy(&e.content),
            e.xattrs
                .iter()
                .map(|(k, v)| format!("{k}={}", String::from_utf8_lossy(v)))
                .collect::<Vec<_>>()
        ),
    }
}
