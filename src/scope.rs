//! Write scope. With write prefixes (`--write-prefix`), every change —
//! a new name, an edit, a deletion, a rename (both ends), a mode or xattr
//! change — must be beneath one of them. Without prefixes, new names may
//! appear wherever the allow patterns match and no deny pattern does, and
//! granted entries may be changed anywhere in the view.

use crate::error::Result;
use crate::grant::Grant;
use crate::patterns::{AllowSet, DenySet};
use crate::tree::Kind;

pub struct Scope {
    allow: AllowSet,
    deny: DenySet,
    prefixes: Vec<String>,
}

fn beneath(path: &str, dir: &str) -> bool {
    path.len() > dir.len() && path.starts_with(dir) && path.as_bytes()[dir.len()] == b'/'
}

/// A grant's write prefixes as view paths (no slashes at the ends); empty:
/// no prefix bounds the writes.
pub fn write_prefixes(g: &Grant) -> Vec<String> {
    g.write_prefixes
        .iter()
        .map(|p| p.trim_matches('/').to_string())
        .filter(|p| !p.is_empty())
        .collect()
}

impl Scope {
    pub fn from_grant(g: &Grant) -> Result<Scope> {
        Ok(Scope {
            allow: AllowSet::new(&g.allow_patterns)?,
            deny: DenySet::new(&g.deny_patterns)?,
            prefixes: write_prefixes(g),
        })
    }

    /// Whether a deny pattern matches `path`.
    pub fn denies(&self, path: &str) -> bool {
        self.deny.matches(path)
    }

    /// Whether the existing entry at `path` may be changed or removed.
    pub fn may_change(&self, path: &str) -> bool {
        self.prefixes.is_empty() || self.prefixes.iter().any(|p| path == p || beneath(path, p))
    }

    /// Why changing or removing the entry at `path` (`granted`: a granted
    /// file) is outside the grant, or `None` when it is inside. With
    /// [`Scope::refuses_create`], the one rule of a commit's validation
    /// and of `wopfs diff`'s marks (`patch::scope_refuses`).
    pub fn refuses_change(&self, path: &str, granted: bool) -> Option<&'static str> {
        if !granted {
            Some("not a granted file")
        } else if !self.may_change(path) {
            Some("outside the write prefixes")
        } else {
            None
        }
    }

    /// Why a new entry of `kind` at `path` is outside the grant, or `None`.
    pub fn refuses_create(&self, path: &str, kind: Kind) -> Option<&'static str> {
        if self.may_create(path, kind) {
            None
        } else if self.deny.matches(path) {
            Some("a name the grant denies")
        } else if !self.prefixes.is_empty() {
            Some("outside the write prefixes")
        } else {
            Some("not a name the grant allows")
        }
    }

    /// Whether a new entry of `kind` may appear at `path`.
    pub fn may_create(&self, path: &str, kind: Kind) -> bool {
        if self.deny.matches(path) {
            return false;
        }
        if !self.prefixes.is_empty() {
            return self
                .prefixes
                .iter()
                .any(|p| beneath(path, p) || kind == Kind::Dir && (path == p || beneath(p, path)));
        }
        match kind {
            Kind::Dir => self.allow.matches(path) || self.allow.may_contain(path),
            _ => self.allow.matches(path),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scope(allow: &[&str], deny: &[&str], prefixes: &[&str]) -> Scope {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Scope {
            allow: AllowSet::new(&v(allow)).unwrap(),
            deny: DenySet::new(&v(deny)).unwrap(),
            prefixes: v(prefixes),
        }
    }

    #[test]
    fn prefixes_bound_new_names() {
        let s = scope(&["**"], &["**/.env"], &["out", "build/gen"]);
        assert!(s.may_create("out/a.txt", Kind::File));
        assert!(s.may_create("out/deep/a.txt", Kind::File));
        assert!(!s.may_create("out", Kind::File));
        assert!(s.may_create("out", Kind::Dir));
        assert!(
            s.may_create("build", Kind::Dir),
            "ancestors of a prefix may be made"
        );
        assert!(!s.may_create("build/x.txt", Kind::File));
        assert!(!s.may_create("outside.txt", Kind::File));
        assert!(!s.may_create("outx/a", Kind::File));
        assert!(
            !s.may_create("out/.env", Kind::File),
            "deny wins inside prefixes"
        );
    }

    #[test]
    fn without_prefixes_allow_and_deny_decide() {
        let s = scope(&["src/**/*.py", "docs/"], &["**/.git", "**/*.pem"], &[]);
        assert!(s.may_create("src/new.py", Kind::File));
        assert!(s.may_create("src/pkg/new.py", Kind::File));
        assert!(!s.may_create("src/new.rs", Kind::File));
        assert!(s.may_create("src/pkg", Kind::Dir));
        assert!(s.may_create("docs/x/y.md", Kind::File));
        assert!(!s.may_create("docs/key.pem", Kind::File));
        assert!(!s.may_create(".git", Kind::Dir));
        assert!(!s.may_create("src/.git", Kind::Dir));
        assert!(!s.may_create("src/.git/config", Kind::File));
        assert!(!s.may_create("elsewhere", Kind::Dir));
    }
}
