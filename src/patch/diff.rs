//! Showing a patch set like `git diff`: unified text diffs, creations,
//! deletions, mode changes, renames (a delete and a create of identical
//! content) and binary files as sizes and hashes, never dumped.

use std::fmt::Write as _;

use super::set::{Loaded, WorkspacePatch};
use super::Op;
use crate::error::Result;
use crate::host::HostRoot;

/// Old and new sides of one path, ready to show.
pub struct FileDiff {
    pub path: String,
    pub op: Op,
    pub old: Option<Vec<u8>>,
    pub new: Option<Vec<u8>>,
    pub old_mode: Option<u32>,
    pub new_mode: Option<u32>,
    /// Set on the create half of a rename: where it came from.
    pub renamed_from: Option<String>,
}

fn is_binary(data: &[u8]) -> bool {
    data.iter().take(8000).any(|b| *b == 0) || std::str::from_utf8(data).is_err()
}

/// Builds the per-path diffs of a set: the old side is the host file now.
/// A delete and a create of identical content become one rename.
pub fn file_diffs(loaded: &Loaded, host: &HostRoot) -> Result<Vec<FileDiff>> {
    let set = &loaded.set;
    let mut out = Vec::new();
    let created: Vec<&WorkspacePatch> = set
        .patches
        .iter()
        .filter(|p| p.operation == Op::Create)
        .collect();
    let mut renamed_away = std::collections::HashSet::new();
    let mut renamed_to = std::collections::HashMap::new();
    for d in set.patches.iter().filter(|p| p.operation == Op::Delete) {
        if let Some(c) = created.iter().find(|c| {
            c.blob.is_some() && c.blob == d.base && !renamed_to.contains_key(c.path.as_str())
        }) {
            renamed_away.insert(d.path.as_str());
            renamed_to.insert(c.path.as_str(), d.path.clone());
        }
    }
    for p in &set.patches {
        if renamed_away.contains(p.path.as_str()) {
            continue;
        }
        let old_st = host.lstat(&p.path).ok();
        let old = match p.operation {
            Op::Create => None,
            _ => read_host(host, &p.path, old_st.as_ref()),
        };
        let new = match p.operation {
            Op::Delete => None,
            _ => Some(loaded.content(p)?),
        };
        out.push(FileDiff {
            path: p.path.clone(),
            op: p.operation,
            old,
            new,
            old_mode: old_st.map(|s| s.st_mode),
            new_mode: p.mode,
            renamed_from: renamed_to.get(p.path.as_str()).cloned(),
        });
    }
    Ok(out)
}

fn read_host(host: &HostRoot, path: &str, st: Option<&rustix::fs::Stat>) -> Option<Vec<u8>> {
    let st = st?;
    if st.st_mode & libc::S_IFMT == libc::S_IFLNK {
        return host.readlink(path).ok();
    }
    use std::io::Read;
    let mut v = Vec::new();
    host.open_file(path).ok()?.read_to_end(&mut v).ok()?;
    Some(v)
}

struct Colors {
    on: bool,
}

impl Colors {
    fn paint(&self, code: &str, s: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{s}\x1b[0m")
        } else {
            s.to_string()
        }
    }
}

/// The unified diff text of all files; `color` adds ANSI colours.
pub fn render(diffs: &[FileDiff], color: bool) -> String {
    let c = Colors { on: color };
    let mut out = String::new();
    for d in diffs {
        let (a, b) = match &d.renamed_from {
            Some(from) => (from.as_str(), d.path.as_str()),
            None => (d.path.as_str(), d.path.as_str()),
        };
        let _ = writeln!(
            out,
            "{}",
            c.paint("1", &format!("diff --wopfs a/{a} b/{b}"))
        );
        match (d.op, &d.renamed_from) {
            (Op::Create, Some(from)) => {
                let _ = writeln!(
                    out,
                    "similarity index 100%\nrename from {from}\nrename to {}",
                    d.path
                );
                continue;
            }
            (Op::Create, None) => {
                let _ = writeln!(out, "new file mode {:o}", d.new_mode.unwrap_or(0o100644));
            }
            (Op::Delete, _) => {
                let _ = writeln!(
                    out,
                    "deleted file mode {:o}",
                    d.old_mode.unwrap_or(0o100644)
                );
            }
            (Op::Update, _) => {
                if let (Some(o), Some(n)) = (d.old_mode, d.new_mode) {
                    if o != n {
                        let _ = writeln!(out, "old mode {o:o}\nnew mode {n:o}");
                    }
                }
            }
        }
        let old = d.old.as_deref().unwrap_or_default();
        let new = d.new.as_deref().unwrap_or_default();
        if old == new {
            continue;
        }
        if is_binary(old) || is_binary(new) {
            let _ = writeln!(
                out,
                "Binary files differ: {} bytes ({}) -> {} bytes ({})",
                old.len(),
                super::set::hash_hex(old),
                new.len(),
                super::set::hash_hex(new)
            );
            continue;
        }
        let (os, ns) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
        let old_name = if d.op == Op::Create {
            "/dev/null".to_string()
        } else {
            format!("a/{a}")
        };
        let new_name = if d.op == Op::Delete {
            "/dev/null".to_string()
        } else {
            format!("b/{b}")
        };
        let text = similar::TextDiff::from_lines(os.as_ref(), ns.as_ref());
        let body = text
            .unified_diff()
            .context_radius(3)
            .header(&old_name, &new_name)
            .to_string();
        for line in body.lines() {
            let painted = if line.starts_with("+++") || line.starts_with("---") {
                c.paint("1", line)
            } else if line.starts_with('+') {
                c.paint("32", line)
            } else if line.starts_with('-') {
                c.paint("31", line)
            } else if line.starts_with("@@") {
                c.paint("36", line)
            } else {
                line.to_string()
            };
            let _ = writeln!(out, "{painted}");
        }
    }
    out
}

/// Lines added and removed (None for binary files).
pub fn counts(d: &FileDiff) -> Option<(usize, usize)> {
    let old = d.old.as_deref().unwrap_or_default();
    let new = d.new.as_deref().unwrap_or_default();
    if is_binary(old) || is_binary(new) {
        return None;
    }
    let (os, ns) = (String::from_utf8_lossy(old), String::from_utf8_lossy(new));
    let text = similar::TextDiff::from_lines(os.as_ref(), ns.as_ref());
    let (mut add, mut del) = (0, 0);
    for change in text.iter_all_changes() {
        match change.tag() {
            similar::ChangeTag::Insert => add += 1,
            similar::ChangeTag::Delete => del += 1,
            similar::ChangeTag::Equal => {}
        }
    }
    Some((add, del))
}

/// The `--stat` summary, like `git diff --stat`.
pub fn stat(diffs: &[FileDiff]) -> String {
    let mut out = String::new();
    let width = diffs.iter().map(|d| label(d).len()).max().unwrap_or(0);
    let (mut adds, mut dels) = (0, 0);
    for d in diffs {
        let what = match counts(d) {
            Some((a, r)) => {
                adds += a;
                dels += r;
                format!(
                    "{:>5} {}{}",
                    a + r,
                    "+".repeat(a.min(40)),
                    "-".repeat(r.min(40))
                )
            }
            None => format!(
                "  Bin {} -> {} bytes",
                d.old.as_ref().map_or(0, Vec::len),
                d.new.as_ref().map_or(0, Vec::len)
            ),
        };
        let _ = writeln!(out, " {:<width$} |{what}", label(d));
    }
    let _ = writeln!(
        out,
        " {} file{} changed, {adds} insertion{}(+), {dels} deletion{}(-)",
        diffs.len(),
        if diffs.len() == 1 { "" } else { "s" },
        if adds == 1 { "" } else { "s" },
        if dels == 1 { "" } else { "s" }
    );
    out
}

fn label(d: &FileDiff) -> String {
    match (&d.renamed_from, d.op) {
        (Some(from), _) => format!("{from} => {}", d.path),
        (None, Op::Create) => format!("{} (new)", d.path),
        (None, Op::Delete) => format!("{} (gone)", d.path),
        (None, Op::Update) => d.path.clone(),
    }
}
