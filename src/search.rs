//! Intent search: which files of a host tree fit a task described in words
//! (the seed's `LocalWorkspaceClient.search`, done properly).
//!
//! The query is split into lowercase terms (on every character that is not
//! a letter, a digit or `_`). One parallel walk of the host tree, the same
//! walk as a grant's ([`crate::walk`]), scores each file:
//!
//! - score = 5 × (occurrences of the terms in the lowercased path) +
//!   (occurrences of the terms in the lowercased content): a path hit
//!   matters more than a content hit;
//! - files scoring 0 are dropped; the rest are sorted by score (highest
//!   first), then path, and cut to the query's limit.
//!
//! What is never searched, hence never returned:
//!
//! - anything the deny patterns match (the policy's plus the caller's): a
//!   denied directory is never entered, a denied file never opened;
//! - what `.gitignore` (nested files, `.git/info/exclude`) ignores, unless
//!   the caller includes ignored files ([`search_with`]): build output and
//!   dependencies are noise, and ignored files are where local secrets
//!   live, so search skips them as grants do;
//! - files with more than one hard link when the policy refuses them
//!   (`allow_hardlinks = false`): a hit's summary is a line of content;
//! - symlinks (never followed, never returned: a link to a secret cannot
//!   leak it), devices, fifos, sockets, names that are not UTF-8;
//! - binary files: a NUL byte in the first 8 KiB, or content that is not
//!   UTF-8;
//! - files larger than 1 MiB ([`MAX_FILE_BYTES`]).
//!
//! Each file is opened by one name inside a directory opened beneath the
//! root (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), with
//! `O_NOFOLLOW`: a symlink planted during the walk makes the open fail.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Mutex;

use rayon::prelude::*;
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::grant::FileType;
use crate::host::HostRoot;
use crate::patterns::DenySet;
use crate::policy::Policy;
use crate::walk::{self, Kind};

/// Files larger than this are not searched.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// A NUL byte in this many leading bytes marks a file as binary.
pub const BINARY_PROBE_BYTES: usize = 8 << 10;
/// The most characters a hit's summary holds.
pub const SUMMARY_CHARS: usize = 120;
/// How much a term found in the path weighs against one found in the content.
pub const PATH_WEIGHT: f64 = 5.0;

/// One file matching a query.
#[derive(Clone, Debug, Serialize)]
pub struct Hit {
    /// Relative to the root, in the grant's normal form.
    pub path: String,
    pub file_type: FileType,
    pub score: f64,
    pub size_bytes: u64,
    /// The first non-empty line holding a term (trimmed, at most
    /// [`SUMMARY_CHARS`] characters), else the first non-empty line.
    pub summary: String,
}

/// What to look for.
pub struct Query<'a> {
    /// Free text; split into lowercase terms on non-word characters.
    pub text: &'a str,
    /// Only files of these types ([`FileType::detect`]); empty means any.
    pub types: &'a [FileType],
    /// At most this many hits (`usize::MAX` for all).
    pub limit: usize,
}

/// The query's terms: lowercase, split on anything but letters, digits and
/// `_`, each once, in order.
pub fn terms(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for t in text
        .split(|c: char| !(c.is_alphanumeric() || c == '_'))
        .filter(|t| !t.is_empty())
    {
        let t = t.to_lowercase();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Searches the host tree at `root` for `q`, never entering or returning
/// what `policy.deny_patterns` or `extra_deny` match, nor what `.gitignore`
/// ignores. Returns the hits, best first (score descending, then path
/// ascending), at most `q.limit`.
pub fn search(root: &Path, policy: &Policy, extra_deny: &[String], q: &Query) -> Result<Vec<Hit>> {
    search_with(root, policy, extra_deny, q, false)
}

/// [`search`], searching what `.gitignore` ignores too when
/// `include_ignored`.
pub fn search_with(
    root: &Path,
    policy: &Policy,
    extra_deny: &[String],
    q: &Query,
    include_ignored: bool,
) -> Result<Vec<Hit>> {
    let terms = terms(q.text);
    if terms.is_empty() {
        return Err(Error::invalid(format!(
            "the query {:?} holds no word to search for",
            q.text
        )));
    }
    let deny_patterns: Vec<String> = extra_deny
        .iter()
        .chain(policy.deny_patterns.iter())
        .cloned()
        .collect();
    let deny = DenySet::new(&deny_patterns)?;

    let root = std::fs::canonicalize(root).ctx(|| format!("host tree {}", root.display()))?;
    if !root.is_dir() {
        return Err(Error::invalid(format!(
            "host tree {} is not a directory",
            root.display()
        )));
    }
    let host = HostRoot::open(&root).ctx(|| format!("opening host tree {}", root.display()))?;
    let ctx = Scorer {
        terms: &terms,
        types: q.types,
        allow_hardlinks: policy.allow_hardlinks,
    };
    let rules = walk::Rules {
        deny: &deny,
        allow: None,
        include_ignored,
    };
    let found = Mutex::new(Vec::new());
    walk::walk(&host, &rules, |dir| {
        // Symlinks are never searched (a link to a secret cannot leak it).
        let mut hits: Vec<Hit> = dir
            .entries
            .into_par_iter()
            .filter(|e| {
                e.kind == Kind::File
                    && (ctx.types.is_empty() || ctx.types.contains(&FileType::detect(&e.path)))
            })
            .filter_map(|e| {
                let at = e.path.len() - e.name().len();
                ctx.file(dir.fd, e.path, at)
            })
            .collect();
        found
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .append(&mut hits);
        Ok(())
    })
    .ctx(|| format!("searching host tree {}", root.display()))?;
    let mut hits = found.into_inner().unwrap_or_else(|e| e.into_inner());
    hits.par_sort_unstable_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.path.cmp(&b.path))
    });
    hits.truncate(q.limit);
    Ok(hits)
}

/// What scoring every file of one search shares.
struct Scorer<'a> {
    terms: &'a [String],
    types: &'a [FileType],
    allow_hardlinks: bool,
}

impl Scorer<'_> {
    /// Scores one regular file; `None` when it does not match, is binary,
    /// too large, has other hard links the policy refuses, or cannot be
    /// read.
    fn file(&self, dirfd: &OwnedFd, path: String, at: usize) -> Option<Hit> {
        let content = match read_text(dirfd, &path[at..], self.allow_hardlinks) {
            Ok(Some(c)) => c,
            Ok(None) => return None,
            Err(e) => {
                tracing::debug!(path, error = %e, "search skips an unreadable file");
                return None;
            }
        };
        let low_path = path.to_lowercase();
        let path_hits: usize = self.terms.iter().map(|t| count(&low_path, t)).sum();
        let low = lowercase(&content);
        let content_hits: usize = self.terms.iter().map(|t| count(&low, t)).sum();
        if path_hits == 0 && content_hits == 0 {
            return None;
        }
        Some(Hit {
            file_type: FileType::detect(&path),
            score: PATH_WEIGHT * path_hits as f64 + content_hits as f64,
            size_bytes: content.len() as u64,
            summary: summary(&content, &low, self.terms),
            path,
        })
    }
}

/// Reads a regular file named `name` in `dir` as text, without following a
/// symlink. `None` when it is not a regular file, is larger than
/// [`MAX_FILE_BYTES`], is binary, or has more than one hard link and
/// `allow_hardlinks` is false.
fn read_text(dir: &OwnedFd, name: &str, allow_hardlinks: bool) -> std::io::Result<Option<String>> {
    let Some(buf) = walk::read_regular(dir, name, MAX_FILE_BYTES, allow_hardlinks)? else {
        return Ok(None);
    };
    if buf[..buf.len().min(BINARY_PROBE_BYTES)].contains(&0) {
        return Ok(None);
    }
    Ok(String::from_utf8(buf).ok())
}

/// Lowercases text; ASCII text keeps its byte offsets (and line breaks).
fn lowercase(s: &str) -> String {
    if s.is_ascii() {
        s.to_ascii_lowercase()
    } else {
        s.to_lowercase()
    }
}

/// Non-overlapping occurrences of `needle` in `haystack`.
fn count(haystack: &str, needle: &str) -> usize {
    haystack.matches(needle).count()
}

/// The first non-empty line holding a term, else the first non-empty line;
/// trimmed, at most [`SUMMARY_CHARS`] characters. `low` is `content`
/// lowercased.
fn summary(content: &str, low: &str, terms: &[String]) -> String {
    let line = if content.len() == low.len() && content.is_ascii() {
        // Same byte offsets: the line around the earliest term is the first
        // line holding one (terms never span lines).
        terms
            .iter()
            .filter_map(|t| low.find(t.as_str()))
            .min()
            .map(|i| {
                let start = content[..i].rfind('\n').map_or(0, |n| n + 1);
                let end = content[i..].find('\n').map_or(content.len(), |n| i + n);
                &content[start..end]
            })
    } else {
        content.lines().find(|l| {
            let l = l.to_lowercase();
            terms.iter().any(|t| l.contains(t.as_str()))
        })
    };
    let line = line
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .or_else(|| content.lines().map(str::trim).find(|l| !l.is_empty()))
        .unwrap_or("");
    line.chars().take(SUMMARY_CHARS).collect()
}

/// A glob pattern (as the pattern sets compile them, with backslash
/// escapes) that matches exactly `path` and nothing else.
pub fn exact_pattern(path: &str) -> String {
    let mut out = String::with_capacity(path.len() + 8);
    for c in path.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patterns::AllowSet;

    #[test]
    fn terms_split_on_non_word_characters() {
        assert_eq!(
            terms("Fix the ROUNDING-bug in pay_ment.py, fix!"),
            vec!["fix", "the", "rounding", "bug", "in", "pay_ment", "py"]
        );
        assert!(terms(" -- !? ").is_empty());
        assert_eq!(terms("Größe"), vec!["größe"]);
    }

    #[test]
    fn summary_prefers_a_line_with_a_term() {
        let t = vec!["round".to_string()];
        let c = "\n  # header\n\n  def round_half(x):  \nround again\n";
        assert_eq!(summary(c, &lowercase(c), &t), "def round_half(x):");
        let c = "\n\n  first line  \nsecond\n";
        assert_eq!(summary(c, &lowercase(c), &t), "first line");
        assert_eq!(summary("", "", &t), "");
        let long = format!("ROUND {}", "é".repeat(300));
        let s = summary(&long, &lowercase(&long), &t);
        assert_eq!(s.chars().count(), SUMMARY_CHARS);
        assert!(s.starts_with("ROUND é"));
        let c = "Ünïcode\r\nthe Round trip\r\n";
        assert_eq!(summary(c, &lowercase(c), &t), "the Round trip");
    }

    #[test]
    fn exact_patterns_match_only_their_path() {
        for p in [
            "weird[1].py",
            "src/a*b?.py",
            "x/{a,b}.md",
            "back\\slash.txt",
            "src/pay.py",
        ] {
            let pat = exact_pattern(p);
            let set = AllowSet::new(std::slice::from_ref(&pat)).unwrap();
            assert!(set.matches(p), "{pat} must match {p}");
            for other in [
                "weird1.py",
                "src/aXb?.py",
                "src/axbz.py",
                "x/a.md",
                "src/pay.pyc",
            ] {
                assert!(!set.matches(other), "{pat} must not match {other}");
            }
        }
    }
}
