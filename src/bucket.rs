//! Buckets: the name by which a grant token (its `bucket` claim) addresses
//! a host tree. A token mounts only the tree of its own bucket.
//!
//! The names are this machine's, kept in the state dir beside the grants
//! (a policy says what may be granted, and is often shared by many trees;
//! where a tree lives is the machine's business):
//!
//! ```text
//! STATE/buckets.toml     [buckets]
//!                        payments = "/srv/src/payments"
//! ```
//!
//! written by `wopfs bucket set NAME ROOT` (and `unset`, `list`). A name
//! names one tree and a tree has at most one name; roots are stored
//! canonical. A tree without a name accepts only tokens whose bucket is
//! its own canonical path, which is what `wopfs serve` puts in the tokens
//! it delegates for such a tree; a token naming a bucket is refused there
//! with the command that would configure it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// The file, in the state dir.
pub const FILE: &str = "buckets.toml";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct BucketsFile {
    #[serde(default)]
    buckets: BTreeMap<String, PathBuf>,
}

/// The bucket names of one state dir.
#[derive(Debug)]
pub struct Buckets {
    path: PathBuf,
    map: BTreeMap<String, PathBuf>,
}

/// A bucket name: not empty, at most 255 bytes, no control characters,
/// no surrounding whitespace, and not starting with `/` (a path is the
/// implicit bucket of a tree without a name).
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(Error::invalid(format!(
            "invalid bucket name {name:?}: {why}"
        )))
    };
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 255 {
        return bad("it is longer than 255 bytes");
    }
    if name.chars().any(char::is_control) {
        return bad("it contains a control character");
    }
    if name.trim() != name {
        return bad("it starts or ends with whitespace");
    }
    if name.starts_with('/') {
        return bad("it starts with '/' (a path is the implicit bucket of a tree without a name)");
    }
    Ok(())
}

fn canonical(root: &Path) -> Result<PathBuf> {
    let canon = std::fs::canonicalize(root).ctx(|| format!("host tree {}", root.display()))?;
    if !canon.is_dir() {
        return Err(Error::invalid(format!(
            "host tree {} is not a directory",
            root.display()
        )));
    }
    Ok(canon)
}

impl Buckets {
    /// The names configured in the state dir at `state` (none when the
    /// file does not exist). A malformed file is an error naming it.
    pub fn load(state: &Path) -> Result<Buckets> {
        let path = state.join(FILE);
        let map = match std::fs::read_to_string(&path) {
            Ok(text) => {
                let file: BucketsFile = toml::from_str(&text)
                    .map_err(|e| Error::invalid(format!("{}: {}", path.display(), e.message())))?;
                let mut seen: BTreeMap<&Path, &str> = BTreeMap::new();
                for (name, root) in &file.buckets {
                    validate_name(name)
                        .map_err(|e| Error::invalid(format!("{}: {e}", path.display())))?;
                    if !root.is_absolute() {
                        return Err(Error::invalid(format!(
                            "{}: the root of bucket {name} is not an absolute path",
                            path.display()
                        )));
                    }
                    if let Some(other) = seen.insert(root, name) {
                        return Err(Error::invalid(format!(
                            "{}: buckets {other} and {name} name the same tree {}",
                            path.display(),
                            root.display()
                        )));
                    }
                }
                file.buckets
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
        };
        Ok(Buckets { path, map })
    }

    fn save(&self) -> Result<()> {
        let text = toml::to_string(&BucketsFile {
            buckets: self.map.clone(),
        })
        .map_err(|e| Error::invalid(format!("serializing {}: {e}", self.path.display())))?;
        let text = format!("# wopfs buckets: NAME = \"ROOT\" (see `wopfs bucket`)\n{text}");
        crate::state::write_atomic(&self.path, text.as_bytes())
    }

    /// Name, root pairs, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Path)> {
        self.map.iter().map(|(n, r)| (n.as_str(), r.as_path()))
    }

    /// The name of the tree at the canonical path `root`, if it has one.
    pub fn name_of(&self, root: &Path) -> Option<&str> {
        self.iter().find(|(_, r)| *r == root).map(|(n, _)| n)
    }

    /// The tree a name stands for.
    pub fn root_of(&self, name: &str) -> Option<&Path> {
        self.map.get(name).map(PathBuf::as_path)
    }

    /// Names the tree at `root` `name`; returns false when it already was.
    /// A name of another tree, or another name of this tree, is refused.
    pub fn set(&mut self, name: &str, root: &Path) -> Result<bool> {
        validate_name(name)?;
        let root = canonical(root)?;
        if let Some(have) = self.root_of(name) {
            if have == root {
                return Ok(false);
            }
            return Err(Error::invalid(format!(
                "bucket {name} is already the tree {}; `wopfs bucket unset {name}` first",
                have.display()
            )));
        }
        if let Some(other) = self.name_of(&root) {
            return Err(Error::invalid(format!(
                "the tree {} is already bucket {other}; `wopfs bucket unset {other}` first",
                root.display()
            )));
        }
        self.map.insert(name.to_string(), root);
        self.save()?;
        Ok(true)
    }

    /// Removes a name; returns the tree it named.
    pub fn unset(&mut self, name: &str) -> Result<PathBuf> {
        let Some(root) = self.map.remove(name) else {
            return Err(Error::invalid(format!("no bucket is named {name}")));
        };
        self.save()?;
        Ok(root)
    }
}

/// The configured name of the tree at `root` (any path to it), if any.
pub fn name_of_root(state: &Path, root: &Path) -> Result<Option<String>> {
    let root = canonical(root)?;
    Ok(Buckets::load(state)?.name_of(&root).map(str::to_string))
}

/// The bucket a token must carry to reach the tree at `root`: its
/// configured name, else its canonical path.
pub fn of_root(state: &Path, root: &Path) -> Result<String> {
    let root = canonical(root)?;
    let buckets = Buckets::load(state)?;
    Ok(match buckets.name_of(&root) {
        Some(n) => n.to_string(),
        None => root.display().to_string(),
    })
}

/// Refuses grant token `token` (for bucket `want`) on the tree at `root`
/// unless that tree is bucket `want`, naming both buckets. Returns the
/// tree's bucket.
pub fn check_token(state: &Path, root: &Path, token: &str, want: &str) -> Result<String> {
    let root = canonical(root)?;
    let buckets = Buckets::load(state)?;
    let elsewhere = match buckets.root_of(want) {
        Some(r) => format!(" (bucket {want} is the tree {})", r.display()),
        None => String::new(),
    };
    match buckets.name_of(&root) {
        Some(have) if have == want => Ok(have.to_string()),
        Some(have) => Err(Error::policy(format!(
            "grant token {token} is for bucket {want}, but {} is bucket {have}{elsewhere}: a token mounts only the tree of its own bucket",
            root.display()
        ))),
        None if want == root.display().to_string() => Ok(want.to_string()),
        None if want.starts_with('/') => Err(Error::policy(format!(
            "grant token {token} is for the tree {want} (its bucket), not for {}",
            root.display()
        ))),
        None if !elsewhere.is_empty() => Err(Error::policy(format!(
            "grant token {token} is for bucket {want}, but {} has no bucket{elsewhere}: a token mounts only the tree of its own bucket",
            root.display()
        ))),
        None => Err(Error::policy(format!(
            "grant token {token} is for bucket {want}, but no bucket is configured for {root}: if that tree is bucket {want}, run `wopfs bucket set {want} {root}`",
            root = root.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_roots_are_one_to_one() {
        let state = tempfile::tempdir().unwrap();
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let (ca, cb) = (canonical(a.path()).unwrap(), canonical(b.path()).unwrap());
        let mut bk = Buckets::load(state.path()).unwrap();
        assert!(bk.set("payments", a.path()).unwrap());
        assert!(!bk.set("payments", a.path()).unwrap());
        let err = bk.set("payments", b.path()).unwrap_err().to_string();
        assert!(err.contains("already the tree"), "{err}");
        let err = bk.set("billing", a.path()).unwrap_err().to_string();
        assert!(err.contains("already bucket payments"), "{err}");
        assert!(bk.set("billing", b.path()).unwrap());
        let bk = Buckets::load(state.path()).unwrap();
        assert_eq!(bk.name_of(&ca), Some("payments"));
        assert_eq!(bk.root_of("billing"), Some(cb.as_path()));
        for bad in ["", "/x", " x", "a\nb"] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }

        let id = "g-0";
        assert_eq!(
            check_token(state.path(), a.path(), id, "payments").unwrap(),
            "payments"
        );
        let err = check_token(state.path(), a.path(), id, "billing")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("for bucket billing") && err.contains("is bucket payments"),
            "{err}"
        );
        let c = tempfile::tempdir().unwrap();
        let cc = canonical(c.path()).unwrap();
        let err = check_token(state.path(), c.path(), id, "other")
            .unwrap_err()
            .to_string();
        assert!(err.contains("wopfs bucket set other"), "{err}");
        let err = check_token(state.path(), c.path(), id, "payments")
            .unwrap_err()
            .to_string();
        assert!(err.contains("has no bucket"), "{err}");
        let own = cc.display().to_string();
        assert_eq!(check_token(state.path(), c.path(), id, &own).unwrap(), own);
        assert_eq!(of_root(state.path(), c.path()).unwrap(), own);
        assert!(check_token(state.path(), a.path(), id, &ca.display().to_string()).is_err());
    }
}
