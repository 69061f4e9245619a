//! The overlay journal: JSON lines describing how the view differs from the
//! grant's host tree. Replaying it on the tree built from the grant gives
//! the view back after a restart or a crash.
//!
//! ```text
//! {"op":"put","path":"src/new.py","kind":"file","obj":7}      a node, content in object 7
//! {"op":"put","path":"lib/a.py","kind":"file","host":"src/a.py"}  a moved, untouched host file
//! {"op":"put","path":"src/b.py","kind":"file","obj":7}       object 7 is held already: a hard link
//! {"op":"del","path":"src/old.py"}                             a node removed (with its subtree)
//! {"op":"seen","path":"src/a.py","size":…,"mtime_ns":…,"ino":…,"mode":…,"base":"blake3:…"}
//! ```
//!
//! `seen` records what the host file looked like when the agent first
//! changed, moved or deleted it: the base a commit checks for conflicts.
//!
//! Hard links need no record of their own: one object is one file, so a
//! `put` of an object that a live file holds adds a name to that file, in
//! any order (a `del` of a file's first name leaves it under the others).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::tree::{Kind, Origin, Tree, ROOT};

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Record {
    Put {
        path: String,
        kind: Kind,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        obj: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        host: Option<String>,
    },
    Del {
        path: String,
    },
    Seen(Seen),
}

/// What a host file was when the agent first touched it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seen {
    pub path: String,
    pub kind: Kind,
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
    pub mode: u32,
    /// `blake3:<hex>` of the content, when it was read (copy-up reads it
    /// anyway; a delete only records the fingerprint above).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
}

pub type SeenMap = BTreeMap<String, Seen>;

/// Adds what was seen of a host path. The first sighting wins, except that
/// a content hash taken later fills in a sighting that had none, provided
/// the file is unchanged since. Returns whether anything was recorded.
pub fn merge_seen(map: &mut SeenMap, s: Seen) -> bool {
    match map.get_mut(&s.path) {
        None => {
            map.insert(s.path.clone(), s);
            true
        }
        Some(old) if old.base.is_none() && s.base.is_some() => {
            let same = (old.size, old.mtime_ns, old.ino) == (s.size, s.mtime_ns, s.ino);
            if same {
                old.base = s.base;
            }
            same
        }
        Some(_) => false,
    }
}

/// The record that recreates node `ino` at its current path.
pub fn put_record(tree: &Tree, ino: crate::tree::Ino) -> Option<Record> {
    let n = tree.get(ino)?;
    let path = tree.path(ino)?;
    let (obj, host) = match &n.origin {
        Origin::InPlace => (None, Some(path.clone())),
        Origin::Host(h) => (None, Some(h.to_string())),
        Origin::Upper(o) => (Some(*o), None),
    };
    Some(Record::Put {
        path,
        kind: n.kind,
        obj,
        host,
    })
}

/// Applies one record to the tree. Errors name what is inconsistent.
pub fn apply(tree: &mut Tree, seen: &mut SeenMap, rec: &Record) -> Result<(), String> {
    match rec {
        Record::Put {
            path,
            kind,
            obj,
            host,
        } => {
            let origin = match (obj, host) {
                (Some(o), None) => Origin::Upper(*o),
                (None, Some(h)) if h == path => Origin::InPlace,
                (None, Some(h)) => Origin::Host(h.as_str().into()),
                _ => return Err(format!("put {path:?} needs exactly one of obj and host")),
            };
            if path.is_empty() {
                // The root itself (its metadata was copied up): it has no
                // name in a parent to put it under.
                if *kind != Kind::Dir {
                    return Err(format!("put of the root as a {kind:?}"));
                }
                tree.set_origin(ROOT, origin);
                return Ok(());
            }
            let (parent, name) = match path.rsplit_once('/') {
                Some((p, n)) => (p, n),
                None => ("", path.as_str()),
            };
            let parent_ino = tree
                .lookup_path(parent)
                .filter(|p| tree.get(*p).is_some_and(|n| n.kind == Kind::Dir))
                .ok_or_else(|| format!("put {path:?}: its directory does not exist"))?;
            let existing = tree.child(parent_ino, name);
            // An object a live file holds already: this is another name of it.
            if let Some(file) = obj.and_then(|o| tree.holder(o)) {
                if existing.is_some_and(|e| tree.inode_of(e) == file) {
                    return Ok(());
                }
                if *kind != Kind::File || tree.get(file).is_none_or(|n| n.kind != Kind::File) {
                    return Err(format!(
                        "put {path:?}: its object is another entry's, and only files have several names"
                    ));
                }
                if let Some(e) = existing {
                    tree.remove(e);
                }
                tree.link(file, parent_ino, name)
                    .ok_or_else(|| format!("put {path:?}: cannot add the name"))?;
                return Ok(());
            }
            match existing {
                Some(existing) if tree.get(existing).is_some_and(|n| n.kind == *kind) => {
                    tree.set_origin(existing, origin);
                }
                Some(existing) => {
                    tree.remove(existing);
                    tree.insert(parent_ino, name, *kind, origin);
                }
                None => {
                    tree.insert(parent_ino, name, *kind, origin);
                }
            }
        }
        Record::Del { path } => {
            let ino = tree
                .lookup_path(path)
                .filter(|i| *i != ROOT)
                .ok_or_else(|| format!("del {path:?}: no such node"))?;
            tree.remove(ino);
        }
        Record::Seen(s) => {
            merge_seen(seen, s.clone());
        }
    }
    Ok(())
}

/// The shortest record list that turns `base` (the grant's tree) into
/// `fin`: deletions of base nodes that are gone or changed kind, then a put
/// for every node not in place, parents first; then the seen records.
pub fn compact(base: &Tree, fin: &Tree, seen: &SeenMap) -> Vec<Record> {
    let mut out = Vec::new();
    for ino in base.subtree(ROOT).into_iter().skip(1) {
        let (Some(path), Some(bn)) = (base.path(ino), base.get(ino)) else {
            continue;
        };
        let parent_gone = {
            let parent = crate::paths::parent(&path);
            !parent.is_empty()
                && fin
                    .lookup_path(parent)
                    .is_none_or(|p| fin.get(p).is_none_or(|n| n.kind != Kind::Dir))
        };
        let kept = fin
            .lookup_path(&path)
            .and_then(|i| fin.get(i))
            .is_some_and(|n| n.kind == bn.kind);
        if !kept && !parent_gone {
            out.push(Record::Del { path });
        }
    }
    // The root too: its metadata may have been copied up.
    for ino in fin.subtree(ROOT) {
        let Some(n) = fin.get(ino) else { continue };
        let in_base = fin
            .path(ino)
            .and_then(|p| base.lookup_path(&p))
            .and_then(|i| base.get(i))
            .is_some_and(|b| b.kind == n.kind);
        if n.origin != Origin::InPlace || !in_base {
            out.extend(put_record(fin, ino));
        }
    }
    out.extend(seen.values().cloned().map(Record::Seen));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grant::{FileMatch, FileType};

    fn base() -> Tree {
        let files: Vec<FileMatch> = ["README.md", "src/a.py", "src/b.py", "src/sub/c.py"]
            .iter()
            .map(|p| FileMatch {
                path: p.to_string(),
                file_type: FileType::Other,
                size_bytes: 0,
                symlink: false,
            })
            .collect();
        Tree::from_files(&files)
    }

    fn listing(t: &Tree) -> Vec<(String, Kind, Origin)> {
        let mut v: Vec<_> = t
            .subtree(ROOT)
            .into_iter()
            .skip(1)
            .map(|i| {
                (
                    t.path(i).unwrap(),
                    t.get(i).unwrap().kind,
                    t.get(i).unwrap().origin.clone(),
                )
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    #[test]
    fn records_round_trip_as_json() {
        let r = Record::Put {
            path: "a".into(),
            kind: Kind::File,
            obj: Some(3),
            host: None,
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(line, r#"{"op":"put","path":"a","kind":"file","obj":3}"#);
        assert_eq!(serde_json::from_str::<Record>(&line).unwrap(), r);
        assert!(serde_json::from_str::<Record>(r#"{"op":"zap","path":"a"}"#).is_err());
    }

    #[test]
    fn compacted_records_rebuild_the_same_tree() {
        // A session: rename a dir, delete a file, create files and dirs,
        // replace a host file by a new one, copy a directory up.
        let mut fin = base();
        let mut seen = SeenMap::new();
        let src = fin.lookup_path("src").unwrap();
        let sub = fin.lookup_path("src/sub").unwrap();
        fin.move_to(sub, crate::tree::ROOT, "moved");
        let b = fin.lookup_path("src/b.py").unwrap();
        fin.remove(b);
        fin.insert(src, "b.py", Kind::File, Origin::Upper(1));
        let d = fin
            .insert(ROOT, "new", Kind::Dir, Origin::Upper(2))
            .unwrap();
        fin.insert(d, "x.txt", Kind::File, Origin::Upper(3));
        fin.set_origin(src, Origin::Upper(4));
        let readme = fin.lookup_path("README.md").unwrap();
        fin.remove(readme);
        fin.insert(ROOT, "README.md", Kind::Dir, Origin::Upper(5));
        seen.insert(
            "src/b.py".into(),
            Seen {
                path: "src/b.py".into(),
                kind: Kind::File,
                size: 1,
                mtime_ns: 2,
                ino: 3,
                mode: 0o644,
                base: None,
            },
        );

        let recs = compact(&base(), &fin, &seen);
        let mut rebuilt = base();
        let mut seen2 = SeenMap::new();
        for r in &recs {
            apply(&mut rebuilt, &mut seen2, r).unwrap();
        }
        assert_eq!(listing(&rebuilt), listing(&fin));
        assert_eq!(seen2, seen);
        // Untouched host files produce no records.
        assert!(!recs
            .iter()
            .any(|r| matches!(r, Record::Put { path, .. } if path == "src/a.py")));
    }

    #[test]
    fn inconsistent_records_are_named() {
        let mut t = base();
        let mut s = SeenMap::new();
        let e = apply(
            &mut t,
            &mut s,
            &Record::Del {
                path: "nope".into(),
            },
        )
        .unwrap_err();
        assert!(e.contains("nope"));
        let put = Record::Put {
            path: "x/y".into(),
            kind: Kind::File,
            obj: Some(1),
            host: None,
        };
        assert!(apply(&mut t, &mut s, &put)
            .unwrap_err()
            .contains("directory"));
    }

    #[test]
    fn hard_links_replay_from_puts_of_one_object() {
        // A host file copied up and linked twice, one link over a host file.
        let mut fin = base();
        let src = fin.lookup_path("src").unwrap();
        let a = fin.lookup_path("src/a.py").unwrap();
        fin.set_origin(a, Origin::Upper(1));
        fin.link(a, ROOT, "top.py").unwrap();
        let b = fin.lookup_path("src/b.py").unwrap();
        fin.remove(b);
        fin.link(a, src, "b.py").unwrap();
        let names = |t: &Tree| -> Vec<u64> {
            ["src/a.py", "top.py", "src/b.py"]
                .iter()
                .map(|p| t.inode_of(t.lookup_path(p).unwrap()))
                .collect()
        };

        let recs = compact(&base(), &fin, &SeenMap::new());
        let mut rebuilt = base();
        for r in &recs {
            apply(&mut rebuilt, &mut SeenMap::new(), r).unwrap();
        }
        assert_eq!(listing(&rebuilt), listing(&fin));
        let inos = names(&rebuilt);
        assert!(inos.iter().all(|i| *i == inos[0]), "{inos:?}");
        assert_eq!(rebuilt.nlink(inos[0]), 3);

        // The first name deleted, then put elsewhere (a rename of it): the
        // file lives on under its other names and gains the new one.
        let put = |path: &str| Record::Put {
            path: path.into(),
            kind: Kind::File,
            obj: Some(1),
            host: None,
        };
        let del = Record::Del {
            path: "src/a.py".into(),
        };
        for r in [del, put("src/moved.py")] {
            apply(&mut rebuilt, &mut SeenMap::new(), &r).unwrap();
        }
        let file = rebuilt.inode_of(rebuilt.lookup_path("top.py").unwrap());
        assert_eq!(rebuilt.lookup_path("src/a.py"), None);
        assert_eq!(
            rebuilt.inode_of(rebuilt.lookup_path("src/moved.py").unwrap()),
            file
        );
        assert_eq!(rebuilt.nlink(file), 3);
        // An object held by a directory is not a file's to share.
        let d = rebuilt
            .insert(ROOT, "dir", Kind::Dir, Origin::Upper(2))
            .unwrap();
        assert!(rebuilt.get(d).is_some());
        let e = apply(
            &mut rebuilt,
            &mut SeenMap::new(),
            &Record::Put {
                path: "other".into(),
                kind: Kind::File,
                obj: Some(2),
                host: None,
            },
        )
        .unwrap_err();
        assert!(e.contains("other") && e.contains("several names"), "{e}");
    }
}
