//! The one walk of a host tree: grant resolution (`grant::resolve`) and
//! intent search (`search`) both list the tree through [`walk`], so what a
//! walk may see is decided here, once.
//!
//! What the walk hands its visitor, one directory at a time (directories in
//! parallel), is every regular file and symlink that passes these rules:
//!
//! - **Beneath the root, never through a symlink.** Each directory is
//!   opened by [`HostRoot::open_dir`] (`openat2(RESOLVE_BENEATH |
//!   RESOLVE_NO_SYMLINKS)`, long paths in chunks) and its entries are
//!   reached from that fd by name. A symlink is never entered nor followed:
//!   it is handed over as a link ([`Kind::Symlink`]) and the visitor
//!   decides (a grant keeps it only if its target stays inside and is not
//!   denied; search skips it).
//! - **Denied names are never seen.** A name the deny set matches is
//!   skipped, and a denied directory is never entered, so nothing beneath
//!   it is listed, stat'ed or opened.
//! - **Allow patterns prune** (grants): a directory no allow pattern can
//!   reach is not entered, and only files the allow set matches are handed
//!   over.
//! - **`.gitignore` is respected** unless `include_ignored`: the
//!   `.gitignore` of every directory entered (its patterns apply beneath
//!   it, the deepest file that matches decides, `!` re-includes, `dir/`
//!   matches directories only) and the root's `.git/info/exclude`, with
//!   git's semantics (the matcher is the `ignore` crate's). An ignored
//!   directory is never entered, so, as in git, nothing beneath it can be
//!   re-included. Ignore files are read from the directory fd with
//!   `O_NOFOLLOW` (a symlinked `.gitignore` is not read, as git does not),
//!   even when denied: they only ever take files away. The user's global
//!   excludes (`core.excludesFile`) are not read: a grant must not depend
//!   on who runs wopfs.
//! - **Never** devices, fifos, sockets, nor names that are not UTF-8.
//! - A directory below the root that is unreadable (`EACCES`) or vanished
//!   during the walk is left out; the root's own errors fail the walk, as
//!   does any error of the visitor (the first one stops the other tasks).
//!
//! Each directory is one task of a rayon scope that spawns its
//! subdirectories instead of recursing, so a tree of any depth needs
//! neither stack nor file descriptors in proportion to its depth.
//!
//! (The `ignore` crate's own `WalkBuilder` is not used for the walk itself:
//! it opens paths from the root by name, so it would follow a directory
//! swapped for a symlink during the walk, and it cannot list paths longer
//! than `PATH_MAX`. Only its gitignore matcher is.)

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ignore::gitignore::{Gitignore, GitignoreBuilder};
use ignore::Match;
use rustix::fs::{self as rfs, FileType as RType, Mode as RMode, OFlags};

use crate::host::{stat_child, HostRoot};
use crate::paths;
use crate::patterns::{AllowSet, DenySet};

/// Ignore files larger than this are not read (and so do not apply).
pub const MAX_IGNORE_FILE_BYTES: u64 = 4 << 20;

/// What a walk may see.
pub struct Rules<'a> {
    /// Names never seen; a denied directory is never entered.
    pub deny: &'a DenySet,
    /// With patterns: directories none reaches are not entered, and only
    /// files one matches are handed over. `None`: every file.
    pub allow: Option<&'a AllowSet>,
    /// Walk what `.gitignore` and `.git/info/exclude` ignore too.
    pub include_ignored: bool,
}

/// What an entry was when its directory was listed. The visitor stats it
/// again when it needs to (the tree may change during the walk).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Symlink,
}

/// One regular file or symlink of a directory.
#[derive(Debug)]
pub struct Entry {
    /// Relative to the root, in the grant's normal form.
    pub path: String,
    /// Where the name starts in `path`.
    name_at: usize,
    pub kind: Kind,
}

impl Entry {
    /// The entry's name in its directory.
    pub fn name(&self) -> &str {
        &self.path[self.name_at..]
    }
}

/// One directory, as the visitor gets it.
pub struct Dir<'a> {
    /// The directory, opened beneath the root: reach entries by name from it.
    pub fd: &'a OwnedFd,
    /// Relative to the root (`""` is the root).
    pub path: &'a str,
    /// Its files and symlinks that pass the rules (never empty).
    pub entries: Vec<Entry>,
}

/// Errors that mean "this entry is gone or out of reach", not "the walk
/// failed": the tree changed during the walk, or a directory is unreadable.
pub fn vanished(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EACCES | libc::ENOENT | libc::ENOTDIR | libc::ELOOP | libc::EXDEV)
    )
}

/// What a walk left out that its caller may want to mention.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Names skipped because an ignore file ignores them (an ignored
    /// directory counts once; nothing beneath it is listed).
    pub ignored: u64,
}

/// Walks the tree beneath `host` by `rules`, calling `visit` once per
/// directory holding anything to hand over (directories in parallel, in
/// no particular order).
pub fn walk<F>(host: &HostRoot, rules: &Rules<'_>, visit: F) -> io::Result<Stats>
where
    F: Fn(Dir<'_>) -> io::Result<()> + Sync,
{
    let ignores = if rules.include_ignored {
        Ignores::default()
    } else {
        Ignores::default().with("", git_exclude(host))
    };
    let w = Walker {
        host,
        rules,
        visit,
        error: Mutex::new(None),
        failed: AtomicBool::new(false),
        ignored: AtomicU64::new(0),
    };
    // The root's own errors (EACCES included) are the walk's.
    let subdirs = w.dir("", &ignores)?;
    rayon::scope(|s| {
        for (d, ig) in subdirs {
            w.spawn(s, d, ig);
        }
    });
    let ignored = w.ignored.load(Ordering::Relaxed);
    match w.error.into_inner().unwrap_or_else(|e| e.into_inner()) {
        Some(e) => Err(e),
        None => Ok(Stats { ignored }),
    }
}

struct Walker<'a, F> {
    host: &'a HostRoot,
    rules: &'a Rules<'a>,
    visit: F,
    /// The first error that fails the walk; `failed` stops the other tasks.
    error: Mutex<Option<io::Error>>,
    failed: AtomicBool,
    ignored: AtomicU64,
}

impl<'a, F> Walker<'a, F>
where
    F: Fn(Dir<'_>) -> io::Result<()> + Sync,
{
    fn fail(&self, e: io::Error) {
        self.failed.store(true, Ordering::Relaxed);
        let mut first = self.error.lock().unwrap_or_else(|e| e.into_inner());
        first.get_or_insert(e);
    }

    /// Walks directory `rel` as a task of `s`, then its subdirectories as
    /// tasks of their own.
    fn spawn<'s>(&'s self, s: &rayon::Scope<'s>, rel: String, ignores: Ignores) {
        s.spawn(move |s| {
            if self.failed.load(Ordering::Relaxed) {
                return;
            }
            match self.dir(&rel, &ignores) {
                Ok(subdirs) => {
                    for (d, ig) in subdirs {
                        self.spawn(s, d, ig);
                    }
                }
                // Unreadable or gone: left out, like a denied directory.
                Err(e) if vanished(&e) => {}
                Err(e) => self.fail(e),
            }
        });
    }

    /// Lists one directory, hands its files to the visitor and returns the
    /// subdirectories worth entering, each with the ignore rules in force
    /// there. A visitor's error is recorded as the walk's.
    fn dir(&self, rel: &str, parent: &Ignores) -> io::Result<Vec<(String, Ignores)>> {
        let dirfd = self.host.open_dir(rel)?;
        let mut names: Vec<(String, RType)> = Vec::new();
        for entry in rfs::Dir::read_from(&dirfd)? {
            let entry = entry?;
            let Ok(name) = entry.file_name().to_str() else {
                tracing::debug!(dir = rel, "the walk skips a name that is not UTF-8");
                continue;
            };
            if name == "." || name == ".." {
                continue;
            }
            names.push((name.to_string(), entry.file_type()));
        }
        let ignores = match names.iter().find(|(n, _)| n == ".gitignore") {
            Some((n, t)) if !self.rules.include_ignored && maybe_file(*t) => {
                parent.with(rel, read_ignore_file(&dirfd, rel, n))
            }
            _ => parent.clone(),
        };

        let mut entries = Vec::new();
        let mut subdirs = Vec::new();
        let mut ignored = 0;
        for (name, kind) in names {
            let path = paths::join(rel, &name);
            if self.rules.deny.matches_self(&path) {
                continue;
            }
            let kind = match kind {
                RType::Unknown => match stat_child(&dirfd, &name) {
                    Ok(st) => RType::from_raw_mode(st.st_mode),
                    Err(e) if vanished(&e) => continue,
                    Err(e) => return Err(e),
                },
                k => k,
            };
            let kind = match kind {
                RType::Directory => {
                    if self.rules.allow.is_none_or(|a| a.may_contain(&path)) {
                        if ignores.ignored(&path, true) {
                            ignored += 1;
                        } else {
                            subdirs.push((path, ignores.clone()));
                        }
                    }
                    continue;
                }
                RType::RegularFile => Kind::File,
                RType::Symlink => Kind::Symlink,
                // Devices, fifos and sockets are never handed over.
                _ => {
                    tracing::debug!(path, "the walk skips a device, fifo or socket");
                    continue;
                }
            };
            if self.rules.allow.is_none_or(|a| a.matches(&path)) {
                if ignores.ignored(&path, false) {
                    ignored += 1;
                } else {
                    entries.push(Entry {
                        name_at: path.len() - name.len(),
                        path,
                        kind,
                    });
                }
            }
        }
        if ignored > 0 {
            self.ignored.fetch_add(ignored, Ordering::Relaxed);
        }
        if !entries.is_empty() {
            let dir = Dir {
                fd: &dirfd,
                path: rel,
                entries,
            };
            if let Err(e) = (self.visit)(dir) {
                self.fail(e);
                return Ok(Vec::new());
            }
        }
        Ok(subdirs)
    }
}

/// Whether a listed entry may be a regular file (`Unknown`: the file
/// system does not say; opening it will).
fn maybe_file(t: RType) -> bool {
    matches!(t, RType::RegularFile | RType::Unknown)
}

/// One ignore file: its patterns apply beneath `dir`.
struct Layer {
    dir: String,
    rules: Gitignore,
}

/// The ignore files in force in a directory, shallowest first (the root's
/// `.git/info/exclude`, then each `.gitignore` from the root down). Only
/// directories holding an ignore file add a layer, so a deep tree shares
/// one short list.
#[derive(Clone, Default)]
struct Ignores(Option<Arc<Vec<Arc<Layer>>>>);

impl Ignores {
    /// These rules plus `rules` (if any) applying beneath `dir`.
    fn with(&self, dir: &str, rules: Option<Gitignore>) -> Ignores {
        let Some(rules) = rules.filter(|r| !r.is_empty()) else {
            return self.clone();
        };
        let mut layers: Vec<Arc<Layer>> = self.0.as_deref().cloned().unwrap_or_default();
        layers.push(Arc::new(Layer {
            dir: dir.to_string(),
            rules,
        }));
        Ignores(Some(Arc::new(layers)))
    }

    /// Whether `path` (beneath every layer's directory) is ignored: the
    /// deepest ignore file with a matching pattern decides, and within one
    /// file the last matching pattern (`!` re-includes).
    fn ignored(&self, path: &str, is_dir: bool) -> bool {
        let Some(layers) = &self.0 else {
            return false;
        };
        for layer in layers.iter().rev() {
            let rel = if layer.dir.is_empty() {
                path
            } else {
                match path
                    .strip_prefix(layer.dir.as_str())
                    .and_then(|p| p.strip_prefix('/'))
                {
                    Some(rel) => rel,
                    None => continue,
                }
            };
            match layer.rules.matched(rel, is_dir) {
                Match::Ignore(_) => return true,
                Match::Whitelist(_) => return false,
                Match::None => {}
            }
        }
        false
    }
}

/// The bytes of the regular file `name` in `dir`, opened without following
/// a symlink. `None` when it is not a regular file, holds more than `max`
/// bytes (or grew past them while read), or has more than one hard link
/// and `hardlinks` is false.
pub fn read_regular(
    dir: &OwnedFd,
    name: &str,
    max: u64,
    hardlinks: bool,
) -> io::Result<Option<Vec<u8>>> {
    let fd = rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
        RMode::empty(),
    )?;
    let st = rfs::fstat(&fd)?;
    if RType::from_raw_mode(st.st_mode) != RType::RegularFile
        || st.st_size as u64 > max
        || (st.st_nlink > 1 && !hardlinks)
    {
        return Ok(None);
    }
    let mut buf = Vec::with_capacity(st.st_size as usize);
    // The file may grow after the fstat: never read past the limit.
    std::fs::File::from(fd)
        .take(max + 1)
        .read_to_end(&mut buf)?;
    Ok((buf.len() as u64 <= max).then_some(buf))
}

/// The root's `.git/info/exclude`, when `.git` is a directory beneath the
/// root (reached without following a symlink).
fn git_exclude(host: &HostRoot) -> Option<Gitignore> {
    let dir = host.open_dir(".git/info").ok()?;
    read_ignore_file(&dir, ".git/info", "exclude")
}

/// Reads the ignore file `name` of directory `dir` (`rel` names it in
/// logs), without following a symlink. `None` when it is absent, not a
/// regular file, unreadable or too large.
fn read_ignore_file(dir: &OwnedFd, rel: &str, name: &str) -> Option<Gitignore> {
    let text = match read_regular(dir, name, MAX_IGNORE_FILE_BYTES, true) {
        Ok(Some(t)) => t,
        Ok(None) => {
            tracing::warn!(
                dir = rel,
                name,
                "ignore file is not a regular file or is too large; not applied"
            );
            return None;
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            tracing::debug!(dir = rel, name, "ignore file is a symlink; not applied");
            return None;
        }
        Err(e) => {
            if e.raw_os_error() != Some(libc::ENOENT) {
                tracing::warn!(dir = rel, name, error = %e, "cannot read ignore file; not applied");
            }
            return None;
        }
    };
    Some(parse_ignore(&String::from_utf8_lossy(&text)))
}

/// Compiles ignore-file text; a line that is not a valid pattern is
/// skipped, as git skips it.
fn parse_ignore(text: &str) -> Gitignore {
    let mut b = GitignoreBuilder::new("");
    for line in text.lines() {
        let _ = b.add_line(None, line);
    }
    b.build().unwrap_or_else(|_| Gitignore::empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(files: &[(&str, &str)]) -> Ignores {
        files.iter().fold(Ignores::default(), |ig, (dir, text)| {
            ig.with(dir, Some(parse_ignore(text)))
        })
    }

    #[test]
    fn gitignore_semantics() {
        let ig = layers(&[
            (
                "",
                "target/\n/build\n*.log\n!keep.log\nnode_modules\n# comment\n\n",
            ),
            ("web", "dist\n!important.log\n/local.txt\n"),
        ]);
        // Directory-only patterns match directories only.
        assert!(ig.ignored("target", true));
        assert!(!ig.ignored("target", false));
        assert!(ig.ignored("crates/a/target", true));
        // Anchored patterns match at their file's directory only.
        assert!(ig.ignored("build", true) && ig.ignored("build", false));
        assert!(!ig.ignored("src/build", true));
        // Negation: the last matching pattern of a file decides.
        assert!(ig.ignored("a/debug.log", false));
        assert!(!ig.ignored("a/keep.log", false));
        assert!(ig.ignored("node_modules", true));
        // A nested file applies beneath its directory and wins there.
        assert!(ig.ignored("web/dist", true) && !ig.ignored("dist", true));
        assert!(!ig.ignored("web/important.log", false));
        assert!(ig.ignored("web/other.log", false));
        assert!(ig.ignored("web/local.txt", false));
        assert!(!ig.ignored("web/src/local.txt", false));
        assert!(!ig.ignored("local.txt", false));
        assert!(!ig.ignored("src/main.rs", false));
        // Paths outside a layer's directory are not its business.
        assert!(!ig.ignored("webx/dist", true));
        assert!(!Ignores::default().ignored("a.log", false));
    }

    /// Creates `dirs/file` one directory at a time (no syscall sees the
    /// whole path, which may be longer than PATH_MAX).
    fn deep_file(root: &std::path::Path, dirs: &[String], file: &str, data: &[u8]) {
        use std::io::Write;
        let mut fd = rfs::open(root, OFlags::PATH | OFlags::DIRECTORY, RMode::empty()).unwrap();
        for d in dirs {
            let _ = rfs::mkdirat(&fd, d.as_str(), RMode::from_raw_mode(0o755));
            fd = rfs::openat(
                &fd,
                d.as_str(),
                OFlags::PATH | OFlags::DIRECTORY,
                RMode::empty(),
            )
            .unwrap();
        }
        let f = rfs::openat(
            &fd,
            file,
            OFlags::WRONLY | OFlags::CREATE,
            RMode::from_raw_mode(0o644),
        )
        .unwrap();
        std::fs::File::from(f).write_all(data).unwrap();
    }

    /// Grants and search share the walk: a tree thousands of directories
    /// deep (paths past PATH_MAX) is walked without recursion, with the
    /// root's ignore rules applying all the way down.
    #[test]
    fn deep_trees_are_walked_and_searched() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(".gitignore"), "*.tmp\n").unwrap();
        let many = vec!["d".to_string(); 2100];
        deep_file(d.path(), &many, "leaf.txt", b"needle\n");
        deep_file(d.path(), &many, "leaf.tmp", b"needle\n");
        let host = HostRoot::open(d.path()).unwrap();
        let deny = DenySet::new(&[]).unwrap();
        let rules = Rules {
            deny: &deny,
            allow: None,
            include_ignored: false,
        };
        let found = Mutex::new(Vec::new());
        let stats = walk(&host, &rules, |dir| {
            let mut f = found.lock().unwrap();
            f.extend(dir.entries.into_iter().map(|e| e.path));
            Ok(())
        })
        .unwrap();
        let leaf = format!("{}/leaf.txt", many.join("/"));
        assert_eq!(
            *found.lock().unwrap(),
            vec![".gitignore".to_string(), leaf.clone()]
        );
        assert_eq!(stats.ignored, 1);

        let policy = crate::policy::Policy::builtin_default().unwrap();
        let q = crate::search::Query {
            text: "needle",
            types: &[],
            limit: 10,
        };
        let hits = crate::search::search(d.path(), &policy, &[], &q).unwrap();
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].path, leaf);
        let hits = crate::search::search_with(d.path(), &policy, &[], &q, true).unwrap();
        assert_eq!(hits.len(), 2);
    }

    #[test]
    fn bad_patterns_are_skipped() {
        let ig = layers(&[("", "[\n*.tmp\n")]);
        assert!(ig.ignored("x.tmp", false));
        assert!(!ig.ignored("x.txt", false));
    }
}
