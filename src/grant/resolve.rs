//! Resolving a grant: policy checks, then one walk of the host tree.

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use rayon::prelude::*;
use rustix::fs::{self as rfs, FileType as RType};

use super::{rfc3339, FileMatch, FileType, Grant};
use crate::clock::Clock;
use crate::error::{Error, IoContext, Result};
use crate::host::{stat_child, HostRoot};
use crate::paths;
use crate::patterns::{AllowSet, DenySet};
use crate::policy::{Mode, Policy};
use crate::walk;

/// What `wopfs grant` asks for.
#[derive(Clone, Debug)]
pub struct GrantRequest {
    pub root: PathBuf,
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub write_prefixes: Vec<String>,
    pub mode: Mode,
    pub purpose: String,
    pub reason: Option<String>,
    pub ttl: Option<Duration>,
    pub max_files: Option<u64>,
    /// Grant what `.gitignore` ignores too (`--include-ignored`).
    pub include_ignored: bool,
}

#[cfg(test)]
impl GrantRequest {
    /// A request for the whole tree at `root` in `mode`, everything else
    /// at its default: tests set the field they vary.
    pub(crate) fn for_test(root: &std::path::Path, mode: Mode) -> GrantRequest {
        GrantRequest {
            root: root.to_path_buf(),
            allow: vec![],
            deny: vec![],
            write_prefixes: vec![],
            mode,
            purpose: "t".into(),
            reason: None,
            ttl: None,
            max_files: None,
            include_ignored: false,
        }
    }
}

/// Checks `req` against `policy` and resolves the granted file list with
/// one walk of the host tree; the grant is created, and its lifetime
/// starts, at `clock`'s now. `grant_id` is filled in by the store.
pub fn resolve(req: &GrantRequest, policy: &Policy, clock: &dyn Clock) -> Result<Grant> {
    let rule = |msg: String| Err(Error::policy(format!("{msg} (policy {})", policy.source)));
    if !policy.enabled {
        return rule("workspace access is disabled by policy (enabled = false)".into());
    }
    if !policy.allowed_modes.contains(&req.mode) {
        let allowed: Vec<&str> = policy.allowed_modes.iter().map(|m| m.as_str()).collect();
        return rule(format!(
            "mode {} is not allowed (allowed_modes: {})",
            req.mode,
            if allowed.is_empty() {
                "none".into()
            } else {
                allowed.join(", ")
            }
        ));
    }
    let reason = req.reason.clone().unwrap_or_default();
    if policy.require_reason && reason.trim().is_empty() {
        return rule("a reason is required (require_reason = true); pass --reason".into());
    }
    if req.purpose.trim().is_empty() {
        return Err(Error::invalid("--purpose must not be empty"));
    }
    let max_files = match req.max_files {
        Some(n) if n > policy.max_files => {
            return rule(format!(
                "--max-files {n} exceeds the policy's max_files = {}",
                policy.max_files
            ))
        }
        Some(n) => n,
        None => policy.max_files,
    };
    for p in &req.write_prefixes {
        paths::validate(p.trim_end_matches('/'))
            .map_err(|e| Error::invalid(format!("invalid --write-prefix: {e}")))?;
    }

    let allow_patterns = if req.allow.is_empty() {
        vec!["**".to_string()]
    } else {
        req.allow.clone()
    };
    let deny_patterns: Vec<String> = req
        .deny
        .iter()
        .chain(policy.deny_patterns.iter())
        .cloned()
        .collect();
    let allow = AllowSet::new(&allow_patterns)?;
    let deny = DenySet::new(&deny_patterns)?;

    let root =
        std::fs::canonicalize(&req.root).ctx(|| format!("host tree {}", req.root.display()))?;
    if !root.is_dir() {
        return Err(Error::invalid(format!(
            "host tree {} is not a directory",
            root.display()
        )));
    }
    let host = HostRoot::open(&root).ctx(|| format!("opening host tree {}", root.display()))?;
    let rules = walk::Rules {
        deny: &deny,
        allow: Some(&allow),
        include_ignored: req.include_ignored,
    };
    let Walked {
        files,
        hardlinked,
        hardlinks_left_out,
        ignored,
    } = walk(&host, &rules, policy.allow_hardlinks)
        .ctx(|| format!("reading host tree {}", root.display()))?;

    if files.is_empty() {
        let mut what = String::from("outside the deny patterns");
        if ignored > 0 {
            what.push_str(" and .gitignore (--include-ignored grants ignored files)");
        }
        if !hardlinks_left_out.is_empty() {
            what.push_str(&format!(
                "; {} file(s) with more than one hard link left out (allow_hardlinks = false)",
                hardlinks_left_out.len()
            ));
        }
        return Err(Error::invalid(format!(
            "no file of {} matches the allow patterns ({}) {what}",
            root.display(),
            allow_patterns.join(", ")
        )));
    }
    if files.len() as u64 > max_files {
        return rule(format!(
            "too many files: {} files match, max_files is {max_files}",
            files.len()
        ));
    }
    let total: u64 = files.iter().map(|f| f.size_bytes).sum();
    if total > policy.max_total_size_bytes {
        return rule(format!(
            "total size too large: the files hold {total} bytes, max_total_size_bytes is {}",
            policy.max_total_size_bytes
        ));
    }

    let now = clock.now();
    let root_for_git = root.clone();
    Ok(Grant {
        grant_id: String::new(),
        purpose: req.purpose.clone(),
        reason,
        mode: req.mode,
        root,
        created_at: rfc3339(now),
        expires_at: req
            .ttl
            .map(|ttl| super::expiry(now, ttl).map(rfc3339))
            .transpose()?,
        requires_human_approval: policy.require_human_approval,
        allow_patterns,
        deny_patterns,
        write_prefixes: req
            .write_prefixes
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .collect(),
        policy: policy.source.clone(),
        max_files,
        max_total_size_bytes: policy.max_total_size_bytes,
        total_size_bytes: total,
        files,
        commit_symlinks: policy.commit_symlinks,
        include_ignored: req.include_ignored,
        allow_hardlinks: policy.allow_hardlinks,
        hardlinked_files: hardlinked,
        hardlinks_left_out,
        git: crate::git::origin(&root_for_git),
    })
}

/// What the walk of a grant found.
#[derive(Default)]
struct Walked {
    /// The granted files, sorted by path.
    files: Vec<FileMatch>,
    /// Regular files matching the grant that have more than one hard link
    /// (granted or not).
    hardlinked: u64,
    /// Those of them left out (the policy refuses hard links), sorted.
    hardlinks_left_out: Vec<String>,
    /// Names `.gitignore` took away.
    ignored: u64,
}

/// Walks the host tree once ([`crate::walk`]: directories in parallel,
/// never following a symlink, never entering a denied or ignored directory
/// or one no allow pattern reaches) and keeps what a grant may hold:
/// regular files (with more than one hard link only if `allow_hardlinks`)
/// and symlinks whose target stays inside and is not denied.
fn walk(
    host: &HostRoot,
    rules: &walk::Rules<'_>,
    allow_hardlinks: bool,
) -> std::io::Result<Walked> {
    let found = Mutex::new(Walked::default());
    let stats = walk::walk(host, rules, |dir| {
        let mut files = Vec::with_capacity(dir.entries.len());
        let mut hardlinked = 0;
        let mut left_out = Vec::new();
        for e in dir.entries {
            // The kind again, from the entry itself: it may have changed
            // since the listing.
            let st = match stat_child(dir.fd, e.name()) {
                Ok(st) => st,
                Err(err) if walk::vanished(&err) => continue,
                Err(err) => return Err(err),
            };
            match RType::from_raw_mode(st.st_mode) {
                RType::RegularFile => {
                    if st.st_nlink > 1 {
                        hardlinked += 1;
                        if !allow_hardlinks {
                            left_out.push(e.path);
                            continue;
                        }
                    }
                    files.push(FileMatch {
                        file_type: FileType::detect(&e.path),
                        size_bytes: st.st_size as u64,
                        path: e.path,
                        symlink: false,
                    });
                }
                RType::Symlink => {
                    let target = match rfs::readlinkat(dir.fd, e.name(), Vec::new()) {
                        Ok(t) => t,
                        Err(err) if walk::vanished(&err.into()) => continue,
                        Err(err) => return Err(err.into()),
                    };
                    if link_stays_visible(&e.path, target.to_bytes(), rules.deny) {
                        files.push(FileMatch {
                            file_type: FileType::detect(&e.path),
                            size_bytes: st.st_size as u64,
                            path: e.path,
                            symlink: true,
                        });
                    }
                }
                // Became something else since the listing: not granted.
                _ => {}
            }
        }
        let mut found = found.lock().unwrap_or_else(|e| e.into_inner());
        found.files.append(&mut files);
        found.hardlinked += hardlinked;
        found.hardlinks_left_out.append(&mut left_out);
        Ok(())
    })?;
    let mut found = found.into_inner().unwrap_or_else(|e| e.into_inner());
    found.ignored = stats.ignored;
    found.files.par_sort_unstable_by(|a, b| a.path.cmp(&b.path));
    found.hardlinks_left_out.sort_unstable();
    Ok(found)
}

/// A symlink is granted only when its target, resolved lexically, stays
/// inside the root and is not denied: a link never leads out of the view
/// nor names a secret.
fn link_stays_visible(link: &str, target: &[u8], deny: &DenySet) -> bool {
    let Ok(target) = std::str::from_utf8(target) else {
        return false;
    };
    match paths::resolve_link(link, target) {
        Some(t) if t.is_empty() => true,
        Some(t) => !deny.matches(&t),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::SystemClock;
    use std::fs;
    use std::os::unix::fs::symlink;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        for (f, c) in [
            ("README.md", "readme"),
            ("src/pay.py", "def pay(): pass\n"),
            ("src/util/round.py", "x"),
            (".env", "SECRET=1"),
            ("config/.env.production", "SECRET=2"),
            ("deploy/id_rsa", "key"),
            (
                "secrets/public.txt",
                "allowed-looking name inside a denied dir",
            ),
            (".git/config", "[core]"),
            ("node_modules/x/index.js", "js"),
        ] {
            fs::create_dir_all(p.join(f).parent().unwrap()).unwrap();
            fs::write(p.join(f), c).unwrap();
        }
        symlink("/etc/passwd", p.join("src/abs_link")).unwrap();
        symlink("../../outside", p.join("src/up_link")).unwrap();
        symlink("../README.md", p.join("src/readme_link")).unwrap();
        symlink("../.env", p.join("src/env_link")).unwrap();
        symlink("/etc", p.join("etc_dir_link")).unwrap();
        d
    }

    fn req(root: &std::path::Path) -> GrantRequest {
        GrantRequest {
            deny: vec!["secrets".into()],
            purpose: "test".into(),
            ..GrantRequest::for_test(root, Mode::ReadOnly)
        }
    }

    fn paths_of(g: &Grant) -> Vec<&str> {
        g.files.iter().map(|f| f.path.as_str()).collect()
    }

    #[test]
    fn walk_grants_exactly_the_allowed_files() {
        let d = tree();
        let policy = Policy::builtin_default().unwrap();
        let g = resolve(&req(d.path()), &policy, &SystemClock).unwrap();
        assert_eq!(
            paths_of(&g),
            vec![
                "README.md",
                "node_modules/x/index.js",
                "src/pay.py",
                "src/readme_link",
                "src/util/round.py"
            ]
        );
        let link = g
            .files
            .iter()
            .find(|f| f.path == "src/readme_link")
            .unwrap();
        assert!(link.symlink);
        let pay = g.files.iter().find(|f| f.path == "src/pay.py").unwrap();
        assert_eq!(pay.size_bytes, 16);
        assert_eq!(pay.file_type, FileType::Python);
        assert_eq!(
            g.total_size_bytes,
            g.files.iter().map(|f| f.size_bytes).sum::<u64>()
        );
    }

    #[test]
    fn allow_patterns_narrow_and_prune() {
        let d = tree();
        let policy = Policy::builtin_default().unwrap();
        let mut r = req(d.path());
        r.allow = vec!["src/**/*.py".into()];
        let g = resolve(&r, &policy, &SystemClock).unwrap();
        assert_eq!(paths_of(&g), vec!["src/pay.py", "src/util/round.py"]);
        r.allow = vec!["src/*.py".into()];
        assert_eq!(
            paths_of(&resolve(&r, &policy, &SystemClock).unwrap()),
            vec!["src/pay.py"]
        );
    }

    #[test]
    fn limits_name_the_rule_and_numbers() {
        let d = tree();
        let mut policy = Policy::builtin_default().unwrap();
        let r = req(d.path());

        policy.max_files = 2;
        let e = resolve(&r, &policy, &SystemClock).unwrap_err().to_string();
        assert!(
            e.contains("too many files") && e.contains("5 files") && e.contains("2"),
            "{e}"
        );

        policy.max_files = 100;
        policy.max_total_size_bytes = 10;
        let e = resolve(&r, &policy, &SystemClock).unwrap_err().to_string();
        assert!(
            e.contains("total size too large") && e.contains("max_total_size_bytes is 10"),
            "{e}"
        );

        policy.max_total_size_bytes = 1 << 20;
        let mut r2 = r.clone();
        r2.mode = Mode::ReadWriteDirect;
        let e = resolve(&r2, &policy, &SystemClock).unwrap_err().to_string();
        assert!(e.contains("mode read_write_direct is not allowed"), "{e}");
        assert!(e.contains("read_only, read_write_overlay"), "{e}");

        policy.require_reason = true;
        let e = resolve(&r, &policy, &SystemClock).unwrap_err().to_string();
        assert!(e.contains("reason is required"), "{e}");

        policy.enabled = false;
        let e = resolve(&r, &policy, &SystemClock).unwrap_err().to_string();
        assert!(e.contains("disabled"), "{e}");

        let mut policy = Policy::builtin_default().unwrap();
        policy.max_files = 3;
        let mut r3 = r.clone();
        r3.max_files = Some(4);
        let e = resolve(&r3, &policy, &SystemClock).unwrap_err().to_string();
        assert!(
            e.contains("--max-files 4") && e.contains("max_files = 3"),
            "{e}"
        );
    }

    #[test]
    fn nothing_matching_is_an_error() {
        let d = tree();
        let mut r = req(d.path());
        r.allow = vec!["*.rs".into()];
        let e = resolve(&r, &Policy::builtin_default().unwrap(), &SystemClock)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no file"), "{e}");
    }

    #[test]
    fn missing_root_is_named() {
        let r = req(std::path::Path::new("/nonexistent/tree"));
        let e = resolve(&r, &Policy::builtin_default().unwrap(), &SystemClock)
            .unwrap_err()
            .to_string();
        assert!(e.contains("/nonexistent/tree"), "{e}");
    }

    fn write(root: &std::path::Path, files: &[(&str, &str)]) {
        for (f, c) in files {
            fs::create_dir_all(root.join(f).parent().unwrap()).unwrap();
            fs::write(root.join(f), c).unwrap();
        }
    }

    #[test]
    fn gitignore_is_respected_unless_ignored_files_are_included() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        write(
            p,
            &[
                (
                    ".gitignore",
                    "node_modules/\n/target\n*.log\n!keep.log\nbuild/\n",
                ),
                ("src/app.py", "x"),
                ("src/debug.log", "log"),
                ("src/keep.log", "kept"),
                ("node_modules/x/index.js", "js"),
                ("target/debug/app", "bin"),
                ("web/.gitignore", "dist\n!dist.md\n"),
                ("web/dist/bundle.js", "js"),
                ("web/dist.md", "doc"),
                // A pattern without a slash matches at any depth.
                ("web/src/dist", "a file named dist"),
                // Re-including beneath an ignored directory is impossible, as in git.
                ("build/.gitignore", "!*\n"),
                ("build/out.txt", "o"),
                (".git/info/exclude", "local-notes.txt\n"),
                ("local-notes.txt", "mine"),
                ("sub/local-notes.txt", "mine too"),
            ],
        );
        let mut r = req(p);
        r.deny = vec![];
        // Without the default denies, `.git` shows, and exclude still applies.
        let mut open = Policy::parse(
            "enabled = true\nmax_files = 100\nallowed_modes = [\"read_only\"]\nrequire_reason = false\ninherit_default_denies = false\n",
            "open.toml",
        )
        .unwrap();
        let g = resolve(&r, &open, &SystemClock).unwrap();
        assert_eq!(
            paths_of(&g),
            vec![
                ".git/info/exclude",
                ".gitignore",
                "src/app.py",
                "src/keep.log",
                "web/.gitignore",
                "web/dist.md",
            ]
        );
        assert!(!g.include_ignored);
        r.include_ignored = true;
        let g = resolve(&r, &open, &SystemClock).unwrap();
        assert_eq!(g.files.len(), 15);
        assert!(g.include_ignored);
        // Denies still win over --include-ignored.
        open.deny_patterns = vec!["**/.git".into(), "node_modules".into()];
        let g = resolve(&r, &open, &SystemClock).unwrap();
        assert_eq!(g.files.len(), 13);
        assert!(!paths_of(&g).iter().any(|f| f.starts_with("node_modules")));
    }

    #[test]
    fn symlinked_ignore_files_are_not_read() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        write(p, &[("patterns", "*.py\n"), ("a.py", "x")]);
        symlink("patterns", p.join(".gitignore")).unwrap();
        let g = resolve(&req(p), &Policy::builtin_default().unwrap(), &SystemClock).unwrap();
        assert_eq!(paths_of(&g), vec![".gitignore", "a.py", "patterns"]);
        // Nothing matching because of .gitignore says so.
        write(p, &[("b/.gitignore", "*\n"), ("b/c.md", "c")]);
        let mut r = req(p);
        r.allow = vec!["b/c.md".into()];
        let e = resolve(&r, &Policy::builtin_default().unwrap(), &SystemClock)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--include-ignored"), "{e}");
    }

    #[test]
    fn hard_links_are_counted_and_refused_when_the_policy_says_so() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        write(
            p,
            &[(".env", "SECRET=1"), ("src/a.py", "a"), ("b.txt", "b")],
        );
        fs::hard_link(p.join(".env"), p.join("src/hard_env.py")).unwrap();
        fs::hard_link(p.join("b.txt"), p.join("src/b2.txt")).unwrap();
        let mut policy = Policy::builtin_default().unwrap();
        assert!(policy.allow_hardlinks);
        let g = resolve(&req(p), &policy, &SystemClock).unwrap();
        assert_eq!(
            paths_of(&g),
            vec!["b.txt", "src/a.py", "src/b2.txt", "src/hard_env.py"]
        );
        assert_eq!(g.hardlinked_files, 3);
        assert!(g.hardlinks_left_out.is_empty() && g.allow_hardlinks);
        policy.allow_hardlinks = false;
        let g = resolve(&req(p), &policy, &SystemClock).unwrap();
        assert_eq!(paths_of(&g), vec!["src/a.py"]);
        assert_eq!(g.hardlinked_files, 3);
        assert_eq!(
            g.hardlinks_left_out,
            vec!["b.txt", "src/b2.txt", "src/hard_env.py"]
        );
        assert!(!g.allow_hardlinks);
        let mut r = req(p);
        r.allow = vec!["src/hard_env.py".into()];
        let e = resolve(&r, &policy, &SystemClock).unwrap_err().to_string();
        assert!(
            e.contains("hard link") && e.contains("allow_hardlinks"),
            "{e}"
        );
    }

    /// Creates `dirs/file` one directory at a time (no syscall sees the
    /// whole path, which is longer than PATH_MAX).
    fn deep_file(root: &std::path::Path, dirs: &[String], file: &str, data: &[u8]) {
        use rfs::{Mode as M, OFlags as O};
        use std::io::Write;
        let mut fd = rfs::open(root, O::PATH | O::DIRECTORY, M::empty()).unwrap();
        for d in dirs {
            let _ = rfs::mkdirat(&fd, d.as_str(), M::from_raw_mode(0o755));
            fd = rfs::openat(&fd, d.as_str(), O::PATH | O::DIRECTORY, M::empty()).unwrap();
        }
        let f = rfs::openat(&fd, file, O::WRONLY | O::CREATE, M::from_raw_mode(0o644)).unwrap();
        std::fs::File::from(f).write_all(data).unwrap();
    }

    #[test]
    fn paths_longer_than_path_max_are_granted() {
        let d = tree();
        // Long names, and many short ones: both past PATH_MAX.
        let long: Vec<String> = (0..24)
            .map(|i| format!("{i:02}{}", "n".repeat(198)))
            .collect();
        deep_file(d.path(), &long, "deep.py", b"deep = 1\n");
        let many = vec!["d".to_string(); 2100];
        deep_file(d.path(), &many, "leaf.txt", b"leaf");
        let mut r = req(d.path());
        r.allow = vec!["**/*.py".into(), "**/leaf.txt".into()];
        let g = resolve(&r, &Policy::builtin_default().unwrap(), &SystemClock).unwrap();
        let want_long = format!("{}/deep.py", long.join("/"));
        let want_many = format!("{}/leaf.txt", many.join("/"));
        assert!(want_long.len() > 4096 && want_many.len() > 4096);
        let deep = g.files.iter().find(|f| f.path == want_long).unwrap();
        assert_eq!(deep.size_bytes, 9);
        assert!(g
            .files
            .iter()
            .any(|f| f.path == want_many && f.size_bytes == 4));
    }

    /// Log lines written to a shared buffer.
    #[derive(Clone, Default)]
    struct Captured(std::sync::Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Devices, fifos, sockets and names that are not UTF-8 are never
    /// granted, at the root or deeper, and the walk says why it skipped
    /// them (the root's listing runs on this thread, so its lines are the
    /// ones captured here).
    #[test]
    fn devices_fifos_sockets_and_non_utf8_names_are_never_granted() {
        use std::ffi::OsStr;
        use std::os::unix::ffi::OsStrExt;
        use std::os::unix::net::UnixListener;
        let d = tempfile::tempdir().unwrap();
        let p = d.path();
        write(p, &[("kept.py", "x"), ("sub/kept.py", "y")]);
        for dir in [p.to_path_buf(), p.join("sub")] {
            rfs::mknodat(
                rfs::CWD,
                dir.join("pipe.py"),
                RType::Fifo,
                rfs::Mode::from_raw_mode(0o644),
                0,
            )
            .unwrap();
            // /dev/null's numbers (the tests run as root).
            rfs::mknodat(
                rfs::CWD,
                dir.join("null.py"),
                RType::CharacterDevice,
                rfs::Mode::from_raw_mode(0o644),
                rfs::makedev(1, 3),
            )
            .unwrap();
            let _sock = UnixListener::bind(dir.join("sock.py")).unwrap();
            fs::write(dir.join(OsStr::from_bytes(b"bad\xff.py")), "z").unwrap();
            fs::create_dir(dir.join(OsStr::from_bytes(b"dir\xfe"))).unwrap();
            fs::write(dir.join(OsStr::from_bytes(b"dir\xfe/inner.py")), "w").unwrap();
        }
        let out = Captured::default();
        let writer = out.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || writer.clone())
            .finish();
        let g = tracing::subscriber::with_default(subscriber, || {
            resolve(&req(p), &Policy::builtin_default().unwrap(), &SystemClock).unwrap()
        });
        assert_eq!(paths_of(&g), vec!["kept.py", "sub/kept.py"]);
        let log = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        for skipped in ["pipe.py", "null.py", "sock.py"] {
            assert!(
                log.lines()
                    .any(|l| l.contains("skips a device, fifo or socket")
                        && l.contains(&format!("path=\"{skipped}\""))),
                "{skipped} not logged: {log}"
            );
        }
        let not_utf8 = log
            .lines()
            .filter(|l| l.contains("skips a name that is not UTF-8"))
            .count();
        assert_eq!(not_utf8, 2, "{log}");
    }
}
