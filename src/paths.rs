//! Relative paths inside a host tree: the one normal form every grant, view
//! and patch uses. `/`-separated, no leading `/`, no `.`/`..`, no empty
//! segments, no NUL, valid UTF-8.

use crate::error::{Error, Result};

/// Checks that `path` is already in normal form, with an error that names the fault.
pub fn validate(path: &str) -> Result<()> {
    let bad = |why: &str| Err(Error::invalid(format!("invalid path {path:?}: {why}")));
    if path.is_empty() {
        return bad("it is empty");
    }
    if path.contains('\0') {
        return bad("it contains a NUL byte");
    }
    if path.starts_with('/') {
        return bad("it is absolute");
    }
    for seg in path.split('/') {
        match seg {
            "" => return bad("it has an empty segment"),
            "." | ".." => return bad("it contains '.' or '..'"),
            _ => {}
        }
    }
    Ok(())
}

/// Joins a parent (`""` for the root) and a child name.
pub fn join(parent: &str, name: &str) -> String {
    if parent.is_empty() {
        name.to_string()
    } else {
        format!("{parent}/{name}")
    }
}

/// The parent of a relative path (`""` for top-level names).
pub fn parent(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(p, _)| p)
}

/// Every proper ancestor of `path`, nearest last: `a/b/c` gives `a`, `a/b`.
pub fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/').map(move |(i, _)| &path[..i])
}

/// Resolves a symlink target lexically against the link's directory.
/// Returns `None` when the target is absolute or climbs out of the root.
pub fn resolve_link(link_path: &str, target: &str) -> Option<String> {
    if target.starts_with('/') || target.is_empty() {
        return None;
    }
    let mut parts: Vec<&str> = parent(link_path)
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop()?;
            }
            s => parts.push(s),
        }
    }
    Some(parts.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_names_the_fault() {
        assert!(validate("src/pay.py").is_ok());
        for (p, why) in [
            ("", "empty"),
            ("/etc/passwd", "absolute"),
            ("a//b", "empty segment"),
            ("a/../b", "'..'"),
            ("./a", "'.'"),
            ("a\0b", "NUL"),
        ] {
            let err = validate(p).unwrap_err().to_string();
            assert!(err.contains(why), "{p:?}: {err}");
        }
    }

    #[test]
    fn ancestors_and_parent() {
        assert_eq!(ancestors("a/b/c").collect::<Vec<_>>(), vec!["a", "a/b"]);
        assert_eq!(ancestors("a").count(), 0);
        assert_eq!(parent("a/b/c"), "a/b");
        assert_eq!(parent("a"), "");
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("a", "b"), "a/b");
    }

    #[test]
    fn resolve_link_stays_inside() {
        assert_eq!(
            resolve_link("docs/readme", "../README.md").as_deref(),
            Some("README.md")
        );
        assert_eq!(resolve_link("a/b/l", "./c").as_deref(), Some("a/b/c"));
        assert_eq!(resolve_link("l", "../outside"), None);
        assert_eq!(resolve_link("a/l", "../../x"), None);
        assert_eq!(resolve_link("l", "/etc/passwd"), None);
    }
}
