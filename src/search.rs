//! Intent search: which files of a host tree fit a task described in words
//! (the seed's `LocalWorkspaceClient.search`, done properly).
//!
//! The query is split into lowercase terms (on every character that is not
//! a letter, a digit or `_`). One parallel walk of the host tree, with the
//! same primitives and rules as a grant's walk, scores each file:
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
//! - symlinks (never followed, never returned: a link to a secret cannot
//!   leak it), devices, fifos, sockets, names that are not UTF-8;
//! - binary files: a NUL byte in the first 8 KiB, or content that is not
//!   UTF-8;
//! - files larger than 1 MiB ([`MAX_FILE_BYTES`]).
//!
//! Each file is opened by one name inside a directory opened beneath the
//! root (`openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`), with
//! `O_NOFOLLOW`: a symlink planted during the walk makes the open fail.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rayon::prelude::*;
use rustix::fs::{self as rfs, FileType as RType, Mode as RMode, OFlags};
use serde::Serialize;

use crate::error::{Error, IoContext, Result};
use crate::grant::FileType;
use crate::host::{stat_child, HostRoot};
use crate::paths;
use crate::patterns::DenySet;
use crate::policy::Policy;

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
/// what `policy.deny_patterns` or `extra_deny` match. Returns the hits,
/// best first (score descending, then path ascending), at most `q.limit`.
pub fn search(root: &Path, policy: &Policy, extra_deny: &[String], q: &Query) -> Result<Vec<Hit>> {
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
    let ctx = Walk {
        host: &host,
        deny: &deny,
        terms: &terms,
        types: q.types,
    };
    let mut hits = ctx
        .dir("")
        .ctx(|| format!("searching host tree {}", root.display()))?;
    hits.par_sort_unstable_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then_with(|| a.path.cmp(&b.path))
    });
    hits.truncate(q.limit);
    Ok(hits)
}

/// What every directory of one search shares.
struct Walk<'a> {
    host: &'a HostRoot,
    deny: &'a DenySet,
    terms: &'a [String],
    types: &'a [FileType],
}

/// Errors that mean "this entry is gone or out of reach", not "the search
/// failed": the tree changed during the walk, or a directory is unreadable.
fn vanished(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV)
    )
}

impl Walk<'_> {
    /// Scores the files of `rel` (in parallel), then its subdirectories (in
    /// parallel), never entering a denied one nor following a symlink.
    fn dir(&self, rel: &str) -> std::io::Result<Vec<Hit>> {
        let dirfd = self.host.open_dir(rel)?;
        // (path, where the name starts in it)
        let mut files: Vec<(String, usize)> = Vec::new();
        let mut subdirs = Vec::new();
        for entry in rfs::Dir::read_from(&dirfd)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                tracing::debug!(dir = rel, "search skips a name that is not UTF-8");
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            let path = paths::join(rel, name);
            if self.deny.matches_self(&path) {
                continue;
            }
            let kind = match entry.file_type() {
                RType::Unknown => match stat_child(&dirfd, name) {
                    Ok(st) => RType::from_raw_mode(st.st_mode),
                    Err(e) if vanished(&e) => continue,
                    Err(e) => return Err(e),
                },
                k => k,
            };
            match kind {
                RType::Directory => subdirs.push(path),
                RType::RegularFile
                    if self.types.is_empty() || self.types.contains(&FileType::detect(&path)) =>
                {
                    let at = path.len() - name.len();
                    files.push((path, at));
                }
                // Symlinks, devices, fifos and sockets are never searched.
                _ => {}
            }
        }
        let mut hits: Vec<Hit> = files
            .into_par_iter()
            .filter_map(|(path, at)| self.file(&dirfd, path, at))
            .collect();
        drop(dirfd);
        let nested: Vec<std::io::Result<Vec<Hit>>> =
            subdirs.par_iter().map(|d| self.dir(d)).collect();
        for n in nested {
            match n {
                Ok(mut v) => hits.append(&mut v),
                Err(e) if vanished(&e) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(hits)
    }

    /// Scores one regular file; `None` when it does not match, is binary,
    /// too large, or cannot be read.
    fn file(&self, dirfd: &OwnedFd, path: String, at: usize) -> Option<Hit> {
        let content = match read_text(dirfd, &path[at..]) {
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
/// [`MAX_FILE_BYTES`], or is binary.
fn read_text(dir: &OwnedFd, name: &str) -> std::io::Result<Option<String>> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        RMode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    if RType::from_raw_mode(st.st_mode) != RType::RegularFile || st.st_size as u64 > MAX_FILE_BYTES
    {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(st.st_size as usize);
    // The file may grow after the fstat: never read past the limit.
    std::fs::File::from(fd)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > MAX_FILE_BYTES || buf[..buf.len().min(BINARY_PROBE_BYTES)].contains(&0) {
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
