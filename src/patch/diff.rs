//! Showing a patch set like `git diff`: unified text diffs, creations,
//! deletions, mode changes, renames (a delete and a create of identical
//! content and kind) and binary files as sizes and hashes, never dumped.
//!
//! What an approver must not miss is spelled out, never folded into a
//! content diff: type changes (file, symlink, directory), symlinks with
//! their targets (flagged when they point outside the root) and mode
//! changes. `stat` and `approval_summary` give one line per such path.
//!
//! The old side is the host entry now (`HostRoot::lstat`, beneath the
//! root); the new side is the patch (its `mode` carries the type bits). In
//! a patch set a path becomes a directory when patches create paths
//! beneath it while its own file is deleted, and was one when a patch
//! creates it as a file while the paths beneath it are deleted.

use std::borrow::Cow;
use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt::Write as _;

use serde::Serialize;
use serde_json::json;

use super::set::{Loaded, WorkspacePatch};
use super::Op;
use crate::error::Result;
use crate::host::HostRoot;

/// What a path is on one side of a change.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EntryKind {
    File,
    Symlink,
    Directory,
    /// A fifo, socket or device (never granted; the host may hold one now).
    Other,
}

impl EntryKind {
    pub fn of_mode(mode: u32) -> EntryKind {
        match mode & libc::S_IFMT {
            libc::S_IFREG => EntryKind::File,
            libc::S_IFLNK => EntryKind::Symlink,
            libc::S_IFDIR => EntryKind::Directory,
            _ => EntryKind::Other,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            EntryKind::File => "file",
            EntryKind::Symlink => "symlink",
            EntryKind::Directory => "directory",
            EntryKind::Other => "special file",
        }
    }
}

/// Old and new sides of one path, ready to show.
pub struct FileDiff {
    pub path: String,
    pub op: Op,
    /// The old content (a symlink's target), read from the host.
    pub old: Option<Vec<u8>>,
    /// The new content (a symlink's target), from the patch.
    pub new: Option<Vec<u8>>,
    /// The host entry's `st_mode` (of the rename's source for a rename).
    pub old_mode: Option<u32>,
    /// The `st_mode` a commit gives the entry: type bits and the permission
    /// bits a commit writes (set-id and sticky bits are never committed).
    pub new_mode: Option<u32>,
    /// The patch's own `mode` field, as the agent left it.
    pub patch_mode: Option<u32>,
    /// What the path is on the host; `None`: nothing (or unreadable).
    pub old_kind: Option<EntryKind>,
    /// What the path is after the set; `None`: nothing.
    pub new_kind: Option<EntryKind>,
    /// Set on the create half of a rename: where it came from.
    pub renamed_from: Option<String>,
    /// A hard link: the path of the set whose file this path is a name of.
    pub link: Option<String>,
    /// For a new symlink: how it leads out of the root, if it does,
    /// followed through the set's and the host's symlinks.
    pub leaves_root: Option<Leaves>,
    /// Why a commit would refuse this path (outside the grant's scope), set
    /// by [`mark_scope`]: a change the engine could not refuse when it
    /// happened (the kernel engine's overlay, a set made elsewhere).
    pub out_of_scope: Option<String>,
}

fn is_binary(data: &[u8]) -> bool {
    data.iter().take(8000).any(|b| *b == 0) || std::str::from_utf8(data).is_err()
}

/// What the host holds at `path` now, never following a symlink.
fn host_kind(host: &HostRoot, path: &str) -> Option<(EntryKind, Option<u32>)> {
    let st = host.lstat(path).ok()?;
    Some((EntryKind::of_mode(st.st_mode), Some(st.st_mode)))
}

/// What a create or update leaves at its path.
fn patch_kind(p: &WorkspacePatch) -> EntryKind {
    if p.is_symlink() {
        EntryKind::Symlink
    } else {
        EntryKind::File
    }
}

/// The mode a commit gives a create or update (see `controller/apply.rs`:
/// files get `mode & 0o777`, 0o644 without a mode; symlinks are links).
fn committed_mode(p: &WorkspacePatch) -> u32 {
    match patch_kind(p) {
        EntryKind::Symlink => libc::S_IFLNK | 0o777,
        _ => libc::S_IFREG | (p.mode.unwrap_or(0o644) & 0o777),
    }
}

/// Builds the per-path diffs of a set: the old side is the host entry now.
/// A delete and a create of identical content and kind become one rename.
pub fn file_diffs(loaded: &Loaded, host: &HostRoot) -> Result<Vec<FileDiff>> {
    let set = &loaded.set;
    let patches = &set.patches;
    // Paths that hold a file or symlink after the set, and paths deleted.
    let leaves: HashSet<&str> = patches
        .iter()
        .filter(|p| p.operation != Op::Delete)
        .map(|p| p.path.as_str())
        .collect();
    let deleted: HashSet<&str> = patches
        .iter()
        .filter(|p| p.operation == Op::Delete)
        .map(|p| p.path.as_str())
        .collect();
    // Directories the set implies: ancestors of what it creates (new side)
    // and of what it deletes (old side).
    let new_dirs: HashSet<&str> = leaves
        .iter()
        .flat_map(|p| crate::paths::ancestors(p))
        .collect();
    let old_dirs: HashSet<&str> = deleted
        .iter()
        .flat_map(|p| crate::paths::ancestors(p))
        .collect();
    let hosts: HashMap<&str, Option<(EntryKind, Option<u32>)>> = patches
        .iter()
        .map(|p| (p.path.as_str(), host_kind(host, &p.path)))
        .collect();
    // The old kind and mode (unknown for a directory only the set implies).
    let old_side = |p: &WorkspacePatch| -> Option<(EntryKind, Option<u32>)> {
        let now = hosts.get(p.path.as_str()).copied().flatten();
        match p.operation {
            // A create replaces nothing, unless a directory stands there.
            Op::Create => match now {
                Some((EntryKind::Directory, m)) => Some((EntryKind::Directory, m)),
                _ if old_dirs.contains(p.path.as_str()) => Some((EntryKind::Directory, None)),
                _ => None,
            },
            _ => now,
        }
    };
    let new_kind = |p: &WorkspacePatch| match p.operation {
        Op::Delete if new_dirs.contains(p.path.as_str()) => Some(EntryKind::Directory),
        Op::Delete => None,
        _ => Some(patch_kind(p)),
    };

    // Renames: same content, same kind, and neither end is a type change.
    let mut creates: HashMap<&str, Vec<&WorkspacePatch>> = HashMap::new();
    for c in patches
        .iter()
        .filter(|p| p.operation == Op::Create && p.link.is_none())
    {
        if let Some(blob) = &c.blob {
            creates.entry(blob.as_str()).or_default().push(c);
        }
    }
    let mut renamed_away = HashSet::new();
    let mut renamed_to: HashMap<&str, &WorkspacePatch> = HashMap::new();
    for d in patches.iter().filter(|p| p.operation == Op::Delete) {
        let (Some((dkind, _)), None, Some(base)) = (old_side(d), new_kind(d), &d.base) else {
            continue;
        };
        let found = creates.get(base.as_str()).and_then(|cs| {
            cs.iter().copied().find(|c| {
                patch_kind(c) == dkind
                    && old_side(c).is_none()
                    && !renamed_to.contains_key(c.path.as_str())
            })
        });
        if let Some(c) = found {
            renamed_away.insert(d.path.as_str());
            renamed_to.insert(c.path.as_str(), d);
        }
    }

    let mut out = Vec::new();
    for p in patches {
        if renamed_away.contains(p.path.as_str()) {
            continue;
        }
        let from = renamed_to.get(p.path.as_str()).copied();
        let (old_kind, old_mode) = match from {
            Some(d) => old_side(d),
            None => old_side(p),
        }
        .map_or((None, None), |(k, m)| (Some(k), m));
        let old_path = from.map_or(p.path.as_str(), |d| d.path.as_str());
        // A rename's content is the same on both sides: only a target shows.
        let old = match old_kind {
            Some(EntryKind::Symlink) => read_host(host, old_path, old_kind),
            Some(EntryKind::File) if from.is_none() => read_host(host, old_path, old_kind),
            _ => None,
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
            old_mode,
            new_mode: (p.operation != Op::Delete).then(|| committed_mode(p)),
            patch_mode: p.mode,
            old_kind,
            new_kind: new_kind(p),
            renamed_from: from.map(|d| d.path.clone()),
            link: p.link.clone(),
            leaves_root: None,
            out_of_scope: None,
        });
    }
    // Where each new symlink leads: through the set's own symlinks, and
    // through the host's where the set leaves the path alone.
    let new_links: HashMap<String, String> = out
        .iter()
        .filter_map(|d| Some((d.path.clone(), d.symlink_target()?)))
        .collect();
    let in_set: HashSet<&str> = patches.iter().map(|p| p.path.as_str()).collect();
    let link_at = |p: &str| -> Option<String> {
        if let Some(t) = new_links.get(p) {
            return Some(t.clone());
        }
        if in_set.contains(p) || new_dirs.contains(p) {
            return None;
        }
        let st = host.lstat(p).ok()?;
        if st.st_mode & libc::S_IFMT != libc::S_IFLNK {
            return None;
        }
        host.readlink(p)
            .ok()
            .map(|t| String::from_utf8_lossy(&t).into_owned())
    };
    for d in &mut out {
        if let Some(t) = d.symlink_target() {
            d.leaves_root = follow(&d.path, &t, &link_at);
        }
    }
    Ok(out)
}

/// What changed between two states of one session (`wopfs diff --since`):
/// `then` is the set of a checkpoint, `now` the session's, both against the
/// host. A path differs when one set changes it and the other does not, or
/// both change it differently (operation, content, mode, link); the old
/// side is the checkpoint's content, or the host's where the checkpoint
/// left the path alone.
pub fn since(then: &Loaded, now: &Loaded, host: &HostRoot) -> Result<Vec<FileDiff>> {
    let by_path = |l: &'_ Loaded| -> std::collections::BTreeMap<String, WorkspacePatch> {
        l.set
            .patches
            .iter()
            .map(|p| (p.path.clone(), p.clone()))
            .collect()
    };
    let (a, b) = (by_path(then), by_path(now));
    let paths: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    // What a side leaves at a path: its patch's kind, content and mode, or
    // (no patch) the host's entry.
    type Side = (Option<EntryKind>, Option<Vec<u8>>, Option<u32>, Option<u32>);
    let side = |l: &Loaded, p: Option<&WorkspacePatch>, path: &str| -> Result<Side> {
        Ok(match p {
            Some(p) if p.operation == Op::Delete => (None, None, None, None),
            Some(p) => (
                Some(patch_kind(p)),
                Some(l.content(p)?),
                Some(committed_mode(p)),
                p.mode,
            ),
            None => match host_kind(host, path) {
                Some((kind, mode)) => (Some(kind), read_host(host, path, Some(kind)), mode, None),
                None => (None, None, None, None),
            },
        })
    };
    let mut out = Vec::new();
    for path in paths {
        let (pa, pb) = (a.get(path), b.get(path));
        let same_patch = match (pa, pb) {
            (Some(x), Some(y)) => {
                (x.operation, &x.blob, x.mode, &x.link) == (y.operation, &y.blob, y.mode, &y.link)
            }
            _ => false,
        };
        if same_patch {
            continue;
        }
        let (old_kind, old, old_mode, _) = side(then, pa, path)?;
        let (new_kind, new, new_mode, patch_mode) = side(now, pb, path)?;
        if (old_kind, &old, old_mode) == (new_kind, &new, new_mode) {
            continue;
        }
        let op = match (old_kind, new_kind) {
            (None, _) => Op::Create,
            (_, None) => Op::Delete,
            _ => Op::Update,
        };
        out.push(FileDiff {
            path: path.clone(),
            op,
            old,
            new,
            old_mode,
            new_mode,
            patch_mode,
            old_kind,
            new_kind,
            renamed_from: None,
            link: pb.and_then(|p| p.link.clone()),
            leaves_root: None,
            out_of_scope: None,
        });
    }
    Ok(out)
}

/// Marks each diff a commit of it under `grant` would refuse, with why
/// (the rule of the commit's validation, `Scope::refuses`); a rename is
/// marked when either end is refused.
pub fn mark_scope(diffs: &mut [FileDiff], grant: &crate::grant::Grant) -> Result<()> {
    let scope = crate::scope::Scope::from_grant(grant)?;
    let granted: HashSet<&str> = grant.files.iter().map(|f| f.path.as_str()).collect();
    for d in diffs.iter_mut() {
        let kind = match d.new_kind.or(d.old_kind) {
            Some(EntryKind::Symlink) => crate::tree::Kind::Symlink,
            _ => crate::tree::Kind::File,
        };
        let here = super::scope_refuses(
            &scope,
            d.op,
            &d.path,
            kind,
            granted.contains(d.path.as_str()),
        );
        let from = d.renamed_from.as_deref().and_then(|f| {
            scope
                .refuses_change(f, granted.contains(f))
                .map(|why| format!("{why} (the rename's source {})", shown(f)))
        });
        d.out_of_scope = here.map(str::to_string).or(from);
    }
    Ok(())
}

fn read_host(host: &HostRoot, path: &str, kind: Option<EntryKind>) -> Option<Vec<u8>> {
    if kind == Some(EntryKind::Symlink) {
        return host.readlink(path).ok();
    }
    use std::io::Read;
    let mut v = Vec::new();
    host.open_file(path).ok()?.read_to_end(&mut v).ok()?;
    Some(v)
}

/// A mode as shown: git's `120000` for symlinks (their permission bits
/// mean nothing), the whole `st_mode` otherwise.
pub fn show_mode(mode: u32) -> String {
    if mode & libc::S_IFMT == libc::S_IFLNK {
        "120000".to_string()
    } else {
        format!("{mode:06o}")
    }
}

/// Characters that could hide or fake a line of the display: controls
/// (newlines, carriage returns, escapes) and bidirectional overrides.
fn deceptive(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
        )
}

/// A path or symlink target as shown: quoted with escapes when it holds
/// characters that could hide or fake part of the display (or the arrow
/// and quotes that the display itself uses).
pub fn shown(s: &str) -> Cow<'_, str> {
    if !s
        .chars()
        .any(|c| deceptive(c) || matches!(c, '→' | '"' | '\\'))
    {
        return Cow::Borrowed(s);
    }
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            c if deceptive(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    Cow::Owned(out)
}

/// A content line made safe for a terminal: controls other than tab in
/// caret notation (`^[` for ESC, `^M` for CR), bidirectional overrides as
/// `\u{…}`, so a file cannot erase or reorder what the approver reads.
fn safe_line(line: &str) -> Cow<'_, str> {
    if !line.chars().any(|c| c != '\t' && deceptive(c)) {
        return Cow::Borrowed(line);
    }
    let mut out = String::with_capacity(line.len() + 8);
    for c in line.chars() {
        match c {
            '\t' => out.push(c),
            c if (c as u32) < 0x20 => {
                out.push('^');
                out.push(char::from(c as u8 + 0x40));
            }
            '\u{7f}' => out.push_str("^?"),
            c if deceptive(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// How a symlink leads out of the root.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Leaves {
    /// Its target is absolute or climbs out (`paths::resolve_link`).
    Direct,
    /// Its target leads to this symlink (of the set, or of the host where
    /// the set leaves it), which leads out.
    Via(String),
}

impl Leaves {
    fn flag(&self) -> String {
        match self {
            Leaves::Direct => " (points outside the root)".to_string(),
            Leaves::Via(p) => format!(" (points outside the root through {})", shown(p)),
        }
    }
}

/// `→ target`, flagged when it leaves the root.
fn arrow(target: &str, leaves: Option<&Leaves>) -> String {
    let mut s = format!("→ {}", shown(target));
    if let Some(l) = leaves {
        s.push_str(&l.flag());
    }
    s
}

/// Whether a symlink at `link_path` to `target` is absolute or climbs out
/// of the root (resolved lexically, as the grant does).
pub fn points_outside(link_path: &str, target: &str) -> bool {
    crate::paths::resolve_link(link_path, target).is_none()
}

/// At most this many symlinks are followed in one resolution (as Linux).
const MAX_HOPS: usize = 40;

/// Follows a symlink at `link_path` to `target` component by component,
/// as the kernel would, through every symlink it meets (`link_at` says
/// whether a path is one after the set, and its target). `None`: it stays
/// inside the root (or loops, or ends at nothing).
fn follow(
    link_path: &str,
    target: &str,
    link_at: &dyn Fn(&str) -> Option<String>,
) -> Option<Leaves> {
    fn push_front(todo: &mut VecDeque<String>, target: &str) {
        for seg in target.split('/').rev() {
            todo.push_front(seg.to_string());
        }
    }
    let out = |via: Option<String>| Some(via.map_or(Leaves::Direct, Leaves::Via));
    if target.starts_with('/') {
        return out(None);
    }
    let mut stack: Vec<String> = crate::paths::parent(link_path)
        .split('/')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect();
    let mut todo = VecDeque::new();
    push_front(&mut todo, target);
    let (mut via, mut hops) = (None, 0);
    while let Some(seg) = todo.pop_front() {
        match seg.as_str() {
            "" | "." => {}
            ".." => {
                if stack.pop().is_none() {
                    return out(via);
                }
            }
            _ => {
                stack.push(seg);
                let here = stack.join("/");
                if let Some(t) = link_at(&here) {
                    hops += 1;
                    if hops > MAX_HOPS {
                        return None;
                    }
                    stack.pop();
                    via = Some(here);
                    if t.starts_with('/') {
                        return out(via);
                    }
                    push_front(&mut todo, &t);
                }
            }
        }
    }
    None
}

impl FileDiff {
    fn target_of(data: &Option<Vec<u8>>, kind: Option<EntryKind>) -> Option<String> {
        if kind != Some(EntryKind::Symlink) {
            return None;
        }
        data.as_deref()
            .map(|t| String::from_utf8_lossy(t).into_owned())
    }

    /// The new symlink target, when the path becomes or stays a symlink.
    pub fn symlink_target(&self) -> Option<String> {
        Self::target_of(&self.new, self.new_kind)
    }

    /// The old symlink target, when the host holds a symlink.
    pub fn old_symlink_target(&self) -> Option<String> {
        Self::target_of(&self.old, self.old_kind)
    }

    /// Where the old side is: the rename's source, or the path itself.
    pub fn old_path(&self) -> &str {
        self.renamed_from.as_deref().unwrap_or(&self.path)
    }

    /// A hard link where nothing was: its content shows at its file's
    /// first path (a link replacing a file shows what it changes).
    fn new_link(&self) -> bool {
        self.link.is_some() && self.old_kind.is_none()
    }

    /// Whether the new symlink leads out of the root.
    pub fn target_outside(&self) -> bool {
        self.leaves_root.is_some()
    }

    fn new_arrow(&self, target: &str) -> String {
        arrow(target, self.leaves_root.as_ref())
    }

    /// The old target, flagged when it climbs out of the root (lexically:
    /// the host as it was is not there to follow).
    fn old_arrow(&self, target: &str) -> String {
        let leaves = points_outside(self.old_path(), target).then_some(Leaves::Direct);
        arrow(target, leaves.as_ref())
    }

    /// `(old, new)` when the path changes kind.
    pub fn type_change(&self) -> Option<(EntryKind, EntryKind)> {
        match (self.old_kind, self.new_kind) {
            (Some(o), Some(n)) if o != n => Some((o, n)),
            _ => None,
        }
    }

    /// `(old, new)` modes when a file or directory keeps its kind and its
    /// permission bits change (set-id and sticky bits included).
    pub fn mode_change(&self) -> Option<(u32, u32)> {
        match (self.old_kind, self.new_kind, self.old_mode, self.new_mode) {
            (Some(o), Some(n), Some(om), Some(nm))
                if o == n && o != EntryKind::Symlink && om & 0o7777 != nm & 0o7777 =>
            {
                Some((om, nm))
            }
            _ => None,
        }
    }

    /// A new file with an execute bit.
    pub fn new_executable(&self) -> bool {
        self.old_kind.is_none()
            && self.new_kind == Some(EntryKind::File)
            && self.new_mode.is_some_and(|m| m & 0o111 != 0)
    }

    /// Set-id or sticky bits the patch asks for and a commit drops.
    fn dropped_bits(&self) -> Option<u32> {
        let bits = self.patch_mode? & 0o7000;
        (bits != 0 && self.new_kind == Some(EntryKind::File)).then_some(bits)
    }

    /// An update or delete whose host entry is gone (or unreachable).
    fn missing_on_host(&self) -> bool {
        self.op != Op::Create && self.old_kind.is_none()
    }

    /// The old and new file contents (empty where the side is not a file).
    fn file_sides(&self) -> (&[u8], &[u8]) {
        (
            file_side(&self.old, self.old_kind),
            file_side(&self.new, self.new_kind),
        )
    }

    /// What an approver must see about this path, one phrase each: a type
    /// change, a symlink and its target, a mode change, a new executable.
    /// Empty for an ordinary content change.
    pub fn markers(&self) -> Vec<String> {
        let mut out = Vec::new();
        let new_t = self.symlink_target();
        let old_t = self.old_symlink_target();
        match self.type_change() {
            Some((o, n)) => {
                let mut s = format!("{} → {}", o.name(), n.name());
                if let Some(t) = &new_t {
                    let _ = write!(s, " {}", self.new_arrow(t));
                }
                if let Some(t) = &old_t {
                    let _ = write!(s, " (was {})", self.old_arrow(t));
                }
                out.push(s);
            }
            None => {
                if let Some(t) = &new_t {
                    let mut s = format!("symlink {}", self.new_arrow(t));
                    if let Some(o) = old_t.as_ref().filter(|o| *o != t) {
                        let _ = write!(s, " (was {})", self.old_arrow(o));
                    }
                    out.push(s);
                } else if let (Some(t), None) = (&old_t, self.new_kind) {
                    out.push(format!("symlink deleted (was {})", self.old_arrow(t)));
                }
            }
        }
        if let Some((o, n)) = self.mode_change() {
            out.push(format!("mode {} → {}", show_mode(o), show_mode(n)));
        }
        if self.new_executable() {
            if let Some(m) = self.new_mode {
                out.push(format!("new file mode {}", show_mode(m)));
            }
        }
        if let Some(bits) = self.dropped_bits() {
            out.push(format!("set-id/sticky bits {bits:o} not committed"));
        }
        if self.missing_on_host() {
            out.push("missing on the host now".to_string());
        }
        if let Some(t) = &self.link {
            out.push(format!("hard link to {}", shown(t)));
        }
        if let Some(why) = &self.out_of_scope {
            out.push(format!("OUT OF SCOPE ({why}): a commit refuses it"));
        }
        out
    }

    /// Whether this path belongs in the approval summary.
    fn in_summary(&self) -> bool {
        self.type_change().is_some()
            || self.new_kind == Some(EntryKind::Symlink)
            || self.mode_change().is_some()
            || self.new_executable()
            || self.missing_on_host()
            || self.link.is_some()
            || self.out_of_scope.is_some()
    }
}

fn file_side(data: &Option<Vec<u8>>, kind: Option<EntryKind>) -> &[u8] {
    match kind {
        Some(EntryKind::File) => data.as_deref().unwrap_or_default(),
        _ => &[],
    }
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
    let warn = |s: &str| c.paint("1;31", s);
    let mut out = String::new();
    for d in diffs {
        let b = shown(&d.path).into_owned();
        let a = d
            .renamed_from
            .as_deref()
            .map_or_else(|| b.clone(), |f| shown(f).into_owned());
        let _ = writeln!(
            out,
            "{}",
            c.paint("1", &format!("diff --wopfs a/{a} b/{b}"))
        );
        if d.renamed_from.is_some() {
            let _ = writeln!(out, "similarity index 100%\nrename from {a}\nrename to {b}");
        }
        if let Some(why) = &d.out_of_scope {
            let _ = writeln!(
                out,
                "{}",
                warn(&format!("out of scope ({why}): a commit refuses it"))
            );
        }
        if let Some((o, n)) = d.type_change() {
            let _ = writeln!(
                out,
                "{}",
                warn(&format!("type change: {} → {}", o.name(), n.name()))
            );
        }
        match (d.old_mode, d.new_mode) {
            _ if d.missing_on_host() => {
                let _ = writeln!(out, "{}", warn("old side: missing on the host now"));
            }
            (Some(o), Some(n)) if show_mode(o) != show_mode(n) => {
                let _ = writeln!(
                    out,
                    "{}",
                    warn(&format!(
                        "old mode {}\nnew mode {}",
                        show_mode(o),
                        show_mode(n)
                    ))
                );
            }
            (None, Some(n)) if d.renamed_from.is_none() => {
                let line = format!("new file mode {}", show_mode(n));
                let line = if d.new_executable() || d.new_kind == Some(EntryKind::Symlink) {
                    warn(&line)
                } else {
                    line
                };
                let _ = writeln!(out, "{line}");
            }
            // Deleted, or a file replaced by a directory (its entry goes).
            (Some(o), None) => {
                let _ = writeln!(out, "deleted file mode {}", show_mode(o));
            }
            _ => {}
        }
        if let Some(bits) = d.dropped_bits() {
            let _ = writeln!(
                out,
                "note: set-id/sticky bits {bits:o} in the patch are not committed"
            );
        }
        let new_t = d.symlink_target();
        let old_t = d.old_symlink_target();
        if let Some(t) = &old_t {
            if new_t.as_ref() != Some(t) || d.renamed_from.is_some() {
                let _ = writeln!(out, "old symlink {}", d.old_arrow(t));
            }
        }
        if let Some(t) = &new_t {
            let line = format!("symlink {}", d.new_arrow(t));
            let line = if d.target_outside() {
                warn(&line)
            } else {
                line
            };
            let _ = writeln!(out, "{line}");
        }
        if let Some(t) = &d.link {
            let _ = writeln!(out, "{}", warn(&format!("hard link to {}", shown(t))));
        }
        if d.renamed_from.is_some() || d.new_link() {
            continue;
        }
        let (old, new) = d.file_sides();
        let old_is_file = d.old_kind == Some(EntryKind::File);
        let new_is_file = d.new_kind == Some(EntryKind::File);
        if old == new && old_is_file == new_is_file {
            continue;
        }
        if old.is_empty() && new.is_empty() {
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
        let old_name = if old_is_file {
            format!("a/{a}")
        } else {
            "/dev/null".to_string()
        };
        let new_name = if new_is_file {
            format!("b/{b}")
        } else {
            "/dev/null".to_string()
        };
        let text = similar::TextDiff::from_lines(os.as_ref(), ns.as_ref());
        let body = text
            .unified_diff()
            .context_radius(3)
            .header(&old_name, &new_name)
            .to_string();
        for line in body.lines() {
            let line = safe_line(line);
            let painted = if line.starts_with("+++") || line.starts_with("---") {
                c.paint("1", &line)
            } else if line.starts_with('+') {
                c.paint("32", &line)
            } else if line.starts_with('-') {
                c.paint("31", &line)
            } else if line.starts_with("@@") {
                c.paint("36", &line)
            } else {
                line.into_owned()
            };
            let _ = writeln!(out, "{painted}");
        }
    }
    out
}

/// Lines added and removed in the file contents (None for binary files).
/// A symlink or directory side counts as empty: its change is a marker.
pub fn counts(d: &FileDiff) -> Option<(usize, usize)> {
    if d.renamed_from.is_some() || d.new_link() {
        return Some((0, 0));
    }
    let (old, new) = d.file_sides();
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

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// Type changes, symlinks, mode changes (and new executables) in a set.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Notable {
    pub type_changes: usize,
    pub symlinks: usize,
    pub symlinks_outside: usize,
    pub mode_changes: usize,
    pub new_executables: usize,
    pub hard_links: usize,
    /// Paths a commit would refuse (outside the grant's scope).
    pub out_of_scope: usize,
}

pub fn notable(diffs: &[FileDiff]) -> Notable {
    let mut n = Notable::default();
    for d in diffs {
        n.type_changes += usize::from(d.type_change().is_some());
        n.symlinks += usize::from(d.new_kind == Some(EntryKind::Symlink));
        n.symlinks_outside += usize::from(d.target_outside());
        n.mode_changes += usize::from(d.mode_change().is_some());
        n.new_executables += usize::from(d.new_executable());
        n.hard_links += usize::from(d.link.is_some());
        n.out_of_scope += usize::from(d.out_of_scope.is_some());
    }
    n
}

impl std::fmt::Display for Notable {
    /// "2 type changes, 3 symlinks (2 pointing outside the root), 1 mode change".
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}, {}",
            plural(self.type_changes, "type change", "type changes"),
            plural(self.symlinks, "symlink", "symlinks")
        )?;
        if self.symlinks_outside > 0 {
            write!(f, " ({} pointing outside the root)", self.symlinks_outside)?;
        }
        write!(
            f,
            ", {}",
            plural(self.mode_changes, "mode change", "mode changes")
        )?;
        if self.new_executables > 0 {
            write!(
                f,
                ", {}",
                plural(self.new_executables, "new executable", "new executables")
            )?;
        }
        if self.hard_links > 0 {
            write!(
                f,
                ", {}",
                plural(self.hard_links, "hard link", "hard links")
            )?;
        }
        if self.out_of_scope > 0 {
            write!(
                f,
                ", {} OUT OF SCOPE (a commit refuses the set)",
                plural(self.out_of_scope, "path", "paths")
            )?;
        }
        Ok(())
    }
}

/// The right-hand side of a `--stat` line: the markers, then the line
/// counts of file contents when they changed.
fn stat_what(d: &FileDiff) -> String {
    let markers = d.markers();
    let (old, new) = d.file_sides();
    let changed = old != new && d.renamed_from.is_none() && !d.new_link();
    let count = match counts(d) {
        _ if !changed => None,
        Some((a, r)) => Some(format!(
            "{:>5} {}{}",
            a + r,
            "+".repeat(a.min(40)),
            "-".repeat(r.min(40))
        )),
        None => Some(format!("  Bin {} -> {} bytes", old.len(), new.len())),
    };
    match (markers.is_empty(), count) {
        (true, Some(c)) => c,
        // Only times or owner changed: the patch rewrites the same bytes.
        (true, None) if d.op == Op::Update && d.type_change().is_none() => {
            format!("{:>5} (content and mode unchanged)", 0)
        }
        (true, None) => format!("{:>5} ", 0),
        (false, Some(c)) => format!(" {}; {}", markers.join("; "), c.trim_start()),
        (false, None) => format!(" {}", markers.join("; ")),
    }
}

/// The `--stat` summary, like `git diff --stat`, with type changes,
/// symlinks and mode changes spelled out on their lines and counted on a
/// last line.
pub fn stat(diffs: &[FileDiff]) -> String {
    let mut out = String::new();
    let width = diffs
        .iter()
        .map(|d| label(d).chars().count())
        .max()
        .unwrap_or(0);
    let (mut adds, mut dels) = (0, 0);
    for d in diffs {
        if let Some((a, r)) = counts(d) {
            adds += a;
            dels += r;
        }
        let l = label(d);
        let pad = width.saturating_sub(l.chars().count());
        let _ = writeln!(out, " {l}{} |{}", " ".repeat(pad), stat_what(d));
    }
    let _ = writeln!(
        out,
        " {} changed, {}(+), {}(-)",
        plural(diffs.len(), "file", "files"),
        plural(adds, "insertion", "insertions"),
        plural(dels, "deletion", "deletions"),
    );
    let _ = writeln!(out, " {}", notable(diffs));
    out
}

fn label(d: &FileDiff) -> String {
    let path = shown(&d.path);
    match (&d.renamed_from, d.op) {
        (Some(from), _) => format!("{} => {path}", shown(from)),
        (None, Op::Create) if d.old_kind.is_none() => format!("{path} (new)"),
        (None, Op::Delete) if d.new_kind.is_none() => format!("{path} (gone)"),
        _ => path.into_owned(),
    }
}

/// The short text an approval prompt shows: counts, then one line for
/// every type change, symlink, mode change and new executable.
pub fn approval_summary(diffs: &[FileDiff]) -> String {
    let count = |op| {
        diffs
            .iter()
            .filter(|d| d.op == op && d.renamed_from.is_none())
            .count()
    };
    let renamed = diffs.iter().filter(|d| d.renamed_from.is_some()).count();
    let mut out = format!(
        "{}: {} created, {} updated, {} deleted",
        plural(diffs.len(), "path", "paths"),
        count(Op::Create),
        count(Op::Update),
        count(Op::Delete)
    );
    if renamed > 0 {
        let _ = write!(out, ", {renamed} renamed");
    }
    let _ = writeln!(out, "; {}", notable(diffs));
    let listed: Vec<&FileDiff> = diffs.iter().filter(|d| d.in_summary()).collect();
    let width = listed
        .iter()
        .map(|d| label(d).chars().count())
        .max()
        .unwrap_or(0);
    for d in listed {
        let l = label(d);
        let pad = width.saturating_sub(l.chars().count());
        let _ = writeln!(out, "  {l}{} | {}", " ".repeat(pad), d.markers().join("; "));
    }
    out
}

/// One path of `wopfs diff --json`.
pub fn to_json(d: &FileDiff) -> serde_json::Value {
    let c = counts(d);
    json!({
        "path": d.path,
        "operation": d.op,
        "renamed_from": d.renamed_from,
        "link": d.link,
        "binary": c.is_none(),
        "added": c.map(|x| x.0),
        "removed": c.map(|x| x.1),
        "old_kind": d.old_kind,
        "new_kind": d.new_kind,
        "type_change": d.type_change().is_some(),
        "old_mode": d.old_mode.map(show_mode),
        "new_mode": d.new_mode.map(show_mode),
        "mode_change": d.mode_change().is_some(),
        "symlink_target": d.symlink_target(),
        "old_symlink_target": d.old_symlink_target(),
        "target_outside_root": d.target_outside(),
        "outside_via": match &d.leaves_root {
            Some(Leaves::Via(p)) => Some(p.as_str()),
            _ => None,
        },
        "out_of_scope": d.out_of_scope,
        "markers": d.markers(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::set::{hash_hex, PatchSet, FORMAT};
    use base64::Engine;
    use std::os::unix::fs::PermissionsExt;

    fn patch(
        path: &str,
        op: Op,
        content: Option<&[u8]>,
        base: Option<&[u8]>,
        mode: Option<u32>,
    ) -> WorkspacePatch {
        WorkspacePatch {
            grant_id: "g-test".into(),
            path: path.into(),
            operation: op,
            content: content.map(|c| base64::engine::general_purpose::STANDARD.encode(c)),
            blob: content.map(hash_hex),
            base: base.map(hash_hex),
            mode,
            size: content.map(|c| c.len() as u64),
            link: None,
        }
    }

    fn diffs_of(host: &std::path::Path, mut patches: Vec<WorkspacePatch>) -> Vec<FileDiff> {
        patches.sort_by(|a, b| a.path.cmp(&b.path));
        let loaded = Loaded::inline(PatchSet {
            format: FORMAT.into(),
            grant_id: "g-test".into(),
            root: host.to_path_buf(),
            created_at: "2024-01-01T00:00:00Z".into(),
            patches,
        });
        let root = HostRoot::open(host).unwrap();
        file_diffs(&loaded, &root).unwrap()
    }

    #[test]
    fn kinds_modes_and_targets_are_explicit() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path();
        std::fs::write(host.join("a.txt"), "/etc/shadow").unwrap();
        std::fs::write(host.join("run.sh"), "echo\n").unwrap();
        std::fs::set_permissions(host.join("run.sh"), std::fs::Permissions::from_mode(0o644))
            .unwrap();
        std::fs::create_dir(host.join("d")).unwrap();
        std::fs::write(host.join("d/x"), "x\n").unwrap();
        std::os::unix::fs::symlink("a.txt", host.join("l")).unwrap();
        std::os::unix::fs::symlink("/opt", host.join("ext")).unwrap();
        let reg = libc::S_IFREG;
        let lnk = libc::S_IFLNK | 0o777;
        let diffs = diffs_of(
            host,
            vec![
                // Same bytes as a.txt, but a symlink: not a rename.
                patch("a.txt", Op::Delete, None, Some(b"/etc/shadow"), None),
                patch("b", Op::Create, Some(b"/etc/shadow"), None, Some(lnk)),
                patch(
                    "run.sh",
                    Op::Update,
                    Some(b"echo\n"),
                    Some(b"echo\n"),
                    Some(reg | 0o4755),
                ),
                patch("d/x", Op::Delete, None, Some(b"x\n"), None),
                patch("d", Op::Create, Some(b"d\n"), None, Some(reg | 0o644)),
                patch("l", Op::Update, Some(b"../../x"), Some(b"a.txt"), Some(lnk)),
                patch(
                    "evil\n 0 type changes",
                    Op::Create,
                    Some(b"e\n"),
                    None,
                    Some(reg | 0o644),
                ),
                // Inside lexically, out through the host's `ext`.
                patch("via", Op::Create, Some(b"ext/passwd"), None, Some(lnk)),
            ],
        );
        assert!(diffs.iter().all(|d| d.renamed_from.is_none()));
        let by = |p: &str| diffs.iter().find(|d| d.path == p).unwrap();
        assert_eq!(
            by("b").markers(),
            vec!["symlink → /etc/shadow (points outside the root)"]
        );
        assert_eq!(
            by("run.sh").markers(),
            vec![
                "mode 100644 → 100755",
                "set-id/sticky bits 4000 not committed"
            ]
        );
        assert_eq!(by("d").markers(), vec!["directory → file"]);
        assert_eq!(
            by("via").markers(),
            vec!["symlink → ext/passwd (points outside the root through ext)"]
        );
        assert_eq!(
            by("l").markers(),
            vec!["symlink → ../../x (points outside the root) (was → a.txt)"]
        );
        let stat = stat(&diffs);
        assert!(
            stat.contains(" \"evil\\n 0 type changes\" (new) |"),
            "{stat}"
        );
        assert!(
            stat.contains(
                " 1 type change, 3 symlinks (3 pointing outside the root), 1 mode change\n"
            ),
            "{stat}"
        );
        let summary = approval_summary(&diffs);
        assert!(
            summary.starts_with(
                "8 paths: 4 created, 2 updated, 2 deleted; 1 type change, 3 symlinks (3 pointing outside the root), 1 mode change\n"
            ),
            "{summary}"
        );
        for want in [
            "  b (new)   | symlink → /etc/shadow (points outside the root)\n",
            "  d         | directory → file\n",
            "  l         | symlink → ../../x (points outside the root) (was → a.txt)\n",
            "  run.sh    | mode 100644 → 100755; set-id/sticky bits 4000 not committed\n",
            "  via (new) | symlink → ext/passwd (points outside the root through ext)\n",
        ] {
            assert!(summary.contains(want), "{want:?} in\n{summary}");
        }
        assert_eq!(summary.lines().count(), 6, "{summary}");
        let full = render(&diffs, false);
        assert!(
            full.contains("diff --wopfs a/d b/d\ntype change: directory → file\nold mode 040"),
            "{full}"
        );
        assert!(
            full.contains("old symlink → a.txt\nsymlink → ../../x (points outside the root)\n"),
            "{full}"
        );
    }

    #[test]
    fn links_are_followed_through_other_links() {
        let links: HashMap<&str, &str> = [
            ("ext", "/opt"),
            ("sub/hl", "../ext/z"),
            ("a/in", "../b"),
            ("loop1", "loop2"),
            ("loop2", "loop1"),
        ]
        .into_iter()
        .collect();
        let link_at = |p: &str| links.get(p).map(|t| t.to_string());
        let f = |path: &str, target: &str| follow(path, target, &link_at);
        assert_eq!(f("l", "/etc/shadow"), Some(Leaves::Direct));
        assert_eq!(f("src/l", "../../x"), Some(Leaves::Direct));
        assert_eq!(f("src/l", "../README.md"), None);
        assert_eq!(f("src/l", "../ext/secret"), Some(Leaves::Via("ext".into())));
        // `..` after a link is taken where the link led, not lexically.
        assert_eq!(f("l", "sub/hl/../y"), Some(Leaves::Via("ext".into())));
        assert_eq!(f("l", "a/in/c"), None);
        assert_eq!(f("l", "loop1"), None);
    }

    #[test]
    fn control_characters_cannot_fake_lines() {
        assert_eq!(shown("src/pay.py"), "src/pay.py");
        assert_eq!(shown("a\nb"), "\"a\\nb\"");
        assert_eq!(shown("x\u{202e}y"), "\"x\\u{202e}y\"");
        assert_eq!(safe_line("+ok\x1b[2K\r"), "+ok^[[2K^M");
        assert_eq!(safe_line("+\tfine"), "+\tfine");
    }

    #[test]
    fn hard_links_show_as_links_not_as_contents_or_renames() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path();
        std::fs::write(host.join("old.txt"), "same\n").unwrap();
        let reg = libc::S_IFREG | 0o644;
        let mut link = patch("b.txt", Op::Create, Some(b"same\n"), None, Some(reg));
        link.content = None;
        link.link = Some("a.txt".into());
        let diffs = diffs_of(
            host,
            vec![
                patch("old.txt", Op::Delete, None, Some(b"same\n"), None),
                patch("a.txt", Op::Create, Some(b"same\n"), None, Some(reg)),
                link,
            ],
        );
        let by = |p: &str| diffs.iter().find(|d| d.path == p).unwrap();
        // The rename pairs the delete with the file, never with its link.
        assert_eq!(by("a.txt").renamed_from.as_deref(), Some("old.txt"));
        let b = by("b.txt");
        assert_eq!(b.new.as_deref(), Some(&b"same\n"[..]), "the file's content");
        assert_eq!(b.markers(), vec!["hard link to a.txt"]);
        assert_eq!(counts(b), Some((0, 0)));
        let text = render(&diffs, false);
        assert!(
            text.contains(
                "diff --wopfs a/b.txt b/b.txt\nnew file mode 100644\nhard link to a.txt\n"
            ),
            "{text}"
        );
        assert!(!text.contains("+same"), "a link shows no content: {text}");
        let stat = stat(&diffs);
        assert!(
            stat.contains(" b.txt (new)      | hard link to a.txt"),
            "{stat}"
        );
        assert!(stat.contains(", 1 hard link"), "{stat}");
        assert!(approval_summary(&diffs).contains("hard link to a.txt"));
        assert_eq!(to_json(b)["link"], "a.txt");
    }
}
