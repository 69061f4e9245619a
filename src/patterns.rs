//! Glob pattern sets with the seed's semantics: `*` and `?` never cross `/`,
//! `**` does. A deny set also covers everything beneath a denied directory.

use globset::{Glob, GlobBuilder, GlobSet, GlobSetBuilder};

use crate::error::{Error, Result};
use crate::paths;

/// Normalizes a user pattern: a leading `/` or `./` anchors at the root
/// (patterns are always relative), and a trailing `/` means "everything
/// beneath", i.e. `dir/` is `dir/**`.
fn normalize(pattern: &str) -> String {
    let p = pattern.trim_start_matches("./").trim_start_matches('/');
    if let Some(dir) = p.strip_suffix('/') {
        format!("{dir}/**")
    } else {
        p.to_string()
    }
}

fn compile(pattern: &str) -> Result<Glob> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .backslash_escape(true)
        .build()
        .map_err(|e| Error::invalid(format!("invalid glob pattern {pattern:?}: {}", e.kind())))
}

/// Where a pattern's matches can sit: in a literal directory (`""` is the
/// root), and whether also in its subdirectories.
#[derive(Clone)]
struct Reach {
    dir: String,
    deep: bool,
}

/// `src/app/**/*.py` reaches `src/app` and beneath, `*.md` only the root,
/// `src/*.rs` only `src`.
fn reach(pattern: &str) -> Reach {
    let meta = pattern
        .find(['*', '?', '[', '{', '\\'])
        .unwrap_or(pattern.len());
    let (dir, rest) = match pattern[..meta].rfind('/') {
        Some(i) => (&pattern[..i], &pattern[i + 1..]),
        None => ("", pattern),
    };
    Reach {
        dir: dir.to_string(),
        deep: rest.contains('/') || rest.contains("**"),
    }
}

/// Allow patterns: a path is allowed when one pattern matches it whole.
#[derive(Clone)]
pub struct AllowSet {
    set: GlobSet,
    /// Where each pattern can match, so a walk skips directories none reaches.
    reaches: Vec<Reach>,
}

impl AllowSet {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut builder = GlobSetBuilder::new();
        let mut reaches = Vec::new();
        for p in patterns {
            let p = normalize(p);
            builder.add(compile(&p)?);
            reaches.push(reach(&p));
        }
        let set = builder
            .build()
            .map_err(|e| Error::invalid(format!("invalid allow patterns: {e}")))?;
        Ok(AllowSet { set, reaches })
    }

    pub fn matches(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    /// Whether a directory may hold an allowed path, so the walk can skip
    /// trees no pattern reaches (e.g. `node_modules` when only `src/**` is allowed).
    pub fn may_contain(&self, dir: &str) -> bool {
        self.reaches
            .iter()
            .any(|r| is_within(&r.dir, dir) || r.deep && is_within(dir, &r.dir))
    }
}

/// Whether `path` is `dir` or lies beneath it (`""` is the root).
fn is_within(path: &str, dir: &str) -> bool {
    dir.is_empty()
        || path == dir
        || path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/')
}

/// Deny patterns: a path is denied when a pattern matches it or any of its
/// ancestor directories. `**/.git/**` also denies the `.git` directory itself,
/// so a walk never descends into it.
#[derive(Clone)]
pub struct DenySet {
    set: GlobSet,
}

impl DenySet {
    pub fn new(patterns: &[String]) -> Result<Self> {
        let mut builder = GlobSetBuilder::new();
        for p in patterns {
            let p = normalize(p);
            builder.add(compile(&p)?);
            if let Some(dir) = p.strip_suffix("/**") {
                if !dir.is_empty() {
                    builder.add(compile(dir)?);
                }
            }
        }
        let set = builder
            .build()
            .map_err(|e| Error::invalid(format!("invalid deny patterns: {e}")))?;
        Ok(DenySet { set })
    }

    /// Matches this path alone (its ancestors are assumed checked already,
    /// as in a top-down walk).
    pub fn matches_self(&self, path: &str) -> bool {
        self.set.is_match(path)
    }

    /// Matches this path or any ancestor directory.
    pub fn matches(&self, path: &str) -> bool {
        self.set.is_match(path) || paths::ancestors(path).any(|a| self.set.is_match(a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn allow(p: &[&str]) -> AllowSet {
        AllowSet::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }
    fn deny(p: &[&str]) -> DenySet {
        DenySet::new(&p.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn star_never_crosses_slash() {
        let a = allow(&["*.py", "src/?.rs"]);
        assert!(a.matches("pay.py"));
        assert!(!a.matches("src/pay.py"));
        assert!(a.matches("src/a.rs"));
        assert!(!a.matches("src/ab.rs"));
        assert!(!a.matches("src/x/a.rs"));
    }

    #[test]
    fn double_star_crosses_slash() {
        let a = allow(&["src/**/*.py"]);
        assert!(a.matches("src/pay.py"));
        assert!(a.matches("src/a/b/pay.py"));
        assert!(!a.matches("lib/pay.py"));
        let all = allow(&["**"]);
        assert!(all.matches("a"));
        assert!(all.matches("a/b/c.txt"));
        assert!(all.matches(".hidden/x"));
    }

    #[test]
    fn trailing_slash_means_everything_beneath() {
        let a = allow(&["docs/", "/README.md"]);
        assert!(a.matches("docs/a/b.md"));
        assert!(a.matches("README.md"));
        assert!(!a.matches("docs"));
    }

    #[test]
    fn deny_covers_descendants_of_denied_dirs() {
        let d = deny(&["**/.git/**", "secrets", "**/.env"]);
        assert!(d.matches(".git"));
        assert!(d.matches(".git/config"));
        assert!(d.matches("sub/.git/HEAD"));
        assert!(d.matches("secrets/public.txt"));
        assert!(d.matches(".env"));
        assert!(d.matches("app/.env"));
        assert!(!d.matches("app/.envrc"));
        assert!(!d.matches("src/secrets.py"));
        assert!(d.matches_self(".git"));
        assert!(!d.matches_self("secrets/public.txt"));
    }

    #[test]
    fn walk_pruning_by_literal_prefix() {
        let a = allow(&["src/app/**/*.py", "docs/index.md"]);
        assert!(a.may_contain(""));
        assert!(a.may_contain("src"));
        assert!(a.may_contain("src/app"));
        assert!(a.may_contain("src/app/deep"));
        assert!(a.may_contain("docs"));
        assert!(!a.may_contain("node_modules"));
        assert!(!a.may_contain("src/other"));
        assert!(!a.may_contain("srcx"));
        assert!(allow(&["**/*.py"]).may_contain("anything"));
        assert!(allow(&["*/x.py"]).may_contain("anything"));
        let top = allow(&["*.md", "Makefile"]);
        assert!(top.may_contain(""));
        assert!(!top.may_contain("src"));
    }

    #[test]
    fn bad_glob_is_named() {
        let err = AllowSet::new(&["src/[".to_string()])
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("src/["), "{err}");
    }
}
