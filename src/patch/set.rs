//! WorkspacePatch sets: the seed's fields (grant_id, path, operation,
//! content) plus what a safe commit needs (blob, base, mode, size).
//!
//! On disk a set is a directory: `patchset.json`, and `blobs/<hex>` for
//! contents above `INLINE_LIMIT` (named by their blake3). Output is
//! deterministic: patches sorted by path.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::{changes, Op, Source};
use crate::error::{Error, IoContext, Result};
use crate::grant::Grant;
use crate::host::HostRoot;
use crate::overlay::journal::SeenMap;
use crate::paths;
use crate::view::scope::Scope;
use crate::view::tree::{Kind, Tree};

pub const FORMAT: &str = "wopfs.patchset/1";
/// Contents up to this size are inlined as base64; larger ones are blobs.
pub const INLINE_LIMIT: u64 = 64 * 1024;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspacePatch {
    pub grant_id: String,
    pub path: String,
    pub operation: Op,
    /// The new content, base64; absent when it lives in `blobs/`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    /// `blake3:<hex>` of the new content (create, update).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blob: Option<String>,
    /// `blake3:<hex>` of the host content the agent saw (update, delete).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<String>,
    /// `st_mode` of the new entry, type bits included (a symlink's content
    /// is its target).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchSet {
    pub format: String,
    pub grant_id: String,
    pub root: PathBuf,
    pub created_at: String,
    pub patches: Vec<WorkspacePatch>,
}

/// A patch set with where its blobs are.
pub struct Loaded {
    pub set: PatchSet,
    pub blobs: Option<PathBuf>,
}

pub fn hash_hex(data: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(data).to_hex())
}

impl WorkspacePatch {
    pub fn is_symlink(&self) -> bool {
        self.mode.is_some_and(|m| m & libc::S_IFMT == libc::S_IFLNK)
    }
}

/// Reads the new content of every created or updated path of a session.
pub struct Contents<'a> {
    host: &'a HostRoot,
    objects: PathBuf,
}

impl Contents<'_> {
    fn read(&self, source: &Source, kind: Kind) -> Result<(Vec<u8>, u32)> {
        let (data, st) = match source {
            Source::Object(o) => {
                let p = crate::overlay::object_path(&self.objects, *o);
                let st = rustix::fs::lstat(&p)
                    .map_err(|e| Error::io(format!("overlay object {o}"), e.into()))?;
                let data = if kind == Kind::Symlink {
                    std::fs::read_link(&p).map(|t| t.into_os_string().into_encoded_bytes())
                } else {
                    std::fs::read(&p)
                }
                .ctx(|| format!("reading overlay object {o}"))?;
                (data, st)
            }
            Source::Host(h) => {
                let st = self.host.lstat(h).ctx(|| format!("host file {h}"))?;
                let data = if kind == Kind::Symlink {
                    self.host.readlink(h)
                } else {
                    use std::io::Read;
                    let mut v = Vec::new();
                    self.host
                        .open_file(h)
                        .and_then(|mut f| f.read_to_end(&mut v))
                        .map(|_| v)
                }
                .ctx(|| format!("reading host file {h}"))?;
                (data, st)
            }
        };
        Ok((data, st.st_mode))
    }
}

/// Builds the patch set of a session: one patch per changed path, with
/// contents read from the overlay (or, for moved files, the host).
/// `each` is called with every (patch, content) as it is made, so large
/// sets stream to disk instead of memory.
pub fn build(
    grant: &Grant,
    session_dir: &Path,
    mut each: impl FnMut(&WorkspacePatch, Option<&[u8]>) -> Result<()>,
) -> Result<PatchSet> {
    let base = Tree::from_files(&grant.files);
    let mut fin = Tree::from_files(&grant.files);
    let (seen, objects) = crate::overlay::inspect(session_dir, &mut fin)?;
    let host = HostRoot::open(&grant.root).ctx(|| format!("host tree {}", grant.root.display()))?;
    let contents = Contents {
        host: &host,
        objects,
    };
    let mut patches = Vec::new();
    for c in changes(&base, &fin) {
        let mut p = WorkspacePatch {
            grant_id: grant.grant_id.clone(),
            path: c.path.clone(),
            operation: c.op,
            content: None,
            blob: None,
            base: base_of(&seen, &c.path, &host),
            mode: None,
            size: None,
        };
        let data = match &c.source {
            Some(src) => {
                let (data, mode) = contents.read(src, c.kind)?;
                p.blob = Some(hash_hex(&data));
                p.mode = Some(mode);
                p.size = Some(data.len() as u64);
                Some(data)
            }
            None => None,
        };
        if c.op == Op::Create {
            p.base = None;
        }
        each(&p, data.as_deref())?;
        patches.push(p);
    }
    Ok(PatchSet {
        format: FORMAT.into(),
        grant_id: grant.grant_id.clone(),
        root: grant.root.clone(),
        created_at: crate::grant::rfc3339(std::time::SystemTime::now()),
        patches,
    })
}

/// The base of a host path: what the agent saw, or (for a session journaled
/// without one) the current content if the file is unchanged since.
fn base_of(seen: &SeenMap, path: &str, host: &HostRoot) -> Option<String> {
    let s = seen.get(path)?;
    if let Some(b) = &s.base {
        return Some(b.clone());
    }
    let st = host.lstat(path).ok()?;
    let now_ns = st
        .st_mtime
        .saturating_mul(1_000_000_000)
        .saturating_add(st.st_mtime_nsec as i64);
    if (st.st_size as u64, now_ns, st.st_ino) != (s.size, s.mtime_ns, s.ino) {
        return None;
    }
    host_hash(host, path, s.kind).ok()
}

/// The current blake3 of a host entry (a symlink's target), if it exists.
pub fn host_hash(host: &HostRoot, path: &str, kind: Kind) -> std::io::Result<String> {
    if kind == Kind::Symlink {
        return Ok(hash_hex(&host.readlink(path)?));
    }
    let mut f = host.open_file(path)?;
    let mut h = blake3::Hasher::new();
    std::io::copy(&mut f, &mut h)?;
    Ok(format!("blake3:{}", h.finalize().to_hex()))
}

/// Writes a session's patch set into `dir` (`patchset.json`, `blobs/`).
/// With `inline`, every content is inline. Returns the set.
pub fn export(
    grant: &Grant,
    session_dir: &Path,
    dir: &Path,
    inline: bool,
    mut progress: impl FnMut(&WorkspacePatch),
) -> Result<PatchSet> {
    std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    let blobs = dir.join("blobs");
    let mut inlined = BTreeMap::new();
    let mut set = build(grant, session_dir, |p, data| {
        progress(p);
        if let Some(data) = data {
            if inline || data.len() as u64 <= INLINE_LIMIT {
                inlined.insert(p.path.clone(), B64.encode(data));
            } else {
                std::fs::create_dir_all(&blobs).ctx(|| format!("creating {}", blobs.display()))?;
                let hex = &p.blob.as_deref().unwrap_or_default()["blake3:".len()..];
                crate::state::write_atomic(&blobs.join(hex), data)?;
            }
        }
        Ok(())
    })?;
    for p in &mut set.patches {
        p.content = inlined.remove(&p.path);
    }
    let json = serde_json::to_vec_pretty(&set).map_err(|e| Error::invalid(e.to_string()))?;
    crate::state::write_atomic(&dir.join("patchset.json"), &json)?;
    Ok(set)
}

/// Reads a patch set from a directory (or its `patchset.json`). Errors
/// name the file and what is wrong with it.
pub fn load(path: &Path) -> Result<Loaded> {
    let (json, dir) = if path.is_dir() {
        (path.join("patchset.json"), path.to_path_buf())
    } else {
        (
            path.to_path_buf(),
            path.parent().map(Path::to_path_buf).unwrap_or_default(),
        )
    };
    let text = std::fs::read(&json).ctx(|| format!("reading patch set {}", json.display()))?;
    let set: PatchSet = serde_json::from_slice(&text)
        .map_err(|e| Error::invalid(format!("patch set {} is malformed: {e}", json.display())))?;
    if set.format != FORMAT {
        return Err(Error::invalid(format!(
            "patch set {} has format {:?}; this wopfs reads {FORMAT:?}",
            json.display(),
            set.format
        )));
    }
    let blobs = dir.join("blobs");
    Ok(Loaded {
        set,
        blobs: blobs.is_dir().then_some(blobs),
    })
}

impl Loaded {
    /// The new content of a create or update, checked against its blob hash.
    pub fn content(&self, p: &WorkspacePatch) -> Result<Vec<u8>> {
        let blob = p.blob.as_deref().ok_or_else(|| {
            Error::invalid(format!(
                "patch {}: a {:?} needs a blob hash",
                p.path, p.operation
            ))
        })?;
        let data = match (&p.content, &self.blobs) {
            (Some(c), _) => B64.decode(c).map_err(|e| {
                Error::invalid(format!(
                    "patch {}: content is not valid base64: {e}",
                    p.path
                ))
            })?,
            (None, Some(dir)) => {
                let hex = blob.strip_prefix("blake3:").unwrap_or(blob);
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Error::invalid(format!(
                        "patch {}: blob {blob:?} is not a blake3 hash",
                        p.path
                    )));
                }
                std::fs::read(dir.join(hex))
                    .ctx(|| format!("patch {}: reading blob {hex}", p.path))?
            }
            (None, None) => {
                return Err(Error::invalid(format!(
                    "patch {}: no content and no blobs directory beside the patch set",
                    p.path
                )))
            }
        };
        let got = hash_hex(&data);
        if got != blob {
            return Err(Error::invalid(format!(
                "patch {}: content does not match its blob hash (expected {blob}, got {got})",
                p.path
            )));
        }
        Ok(data)
    }

    /// Checks the set against the grant it claims, before anything is
    /// touched: the grant, every path's form and place, the fields each
    /// operation needs, and every content against its hash.
    pub fn validate(&self, grant: &Grant) -> Result<()> {
        let set = &self.set;
        if set.grant_id != grant.grant_id {
            return Err(Error::invalid(format!(
                "this patch set is for grant {}, not {}",
                set.grant_id, grant.grant_id
            )));
        }
        let granted: BTreeSet<&str> = grant.files.iter().map(|f| f.path.as_str()).collect();
        // Paths that will hold a file or symlink after the set.
        let leaves: BTreeSet<&str> = set
            .patches
            .iter()
            .filter(|p| p.operation != Op::Delete)
            .map(|p| p.path.as_str())
            .collect();
        let scope = Scope::from_grant(grant)?;
        let mut seen_paths = BTreeSet::new();
        for p in &set.patches {
            if p.grant_id != set.grant_id {
                return Err(Error::invalid(format!(
                    "patch {} names grant {}, but the set is for {}",
                    p.path, p.grant_id, set.grant_id
                )));
            }
            paths::validate(&p.path).map_err(|e| Error::invalid(format!("patch set: {e}")))?;
            if !seen_paths.insert(p.path.as_str()) {
                return Err(Error::invalid(format!("patch set names {} twice", p.path)));
            }
            if let Some(a) = paths::ancestors(&p.path).find(|a| leaves.contains(a)) {
                return Err(Error::invalid(format!(
                    "patch set makes {a} both a file and a directory (it also holds {})",
                    p.path
                )));
            }
            let kind = if p.is_symlink() {
                Kind::Symlink
            } else {
                Kind::File
            };
            let inside = match p.operation {
                Op::Update | Op::Delete => {
                    granted.contains(p.path.as_str()) && scope.may_change(&p.path)
                }
                Op::Create => scope.may_create(&p.path, kind),
            };
            if !inside {
                return Err(Error::policy(format!(
                    "patch {} ({:?}) is outside grant {}",
                    p.path, p.operation, grant.grant_id
                )));
            }
            match p.operation {
                Op::Delete => {
                    if p.content.is_some() || p.blob.is_some() {
                        return Err(Error::invalid(format!(
                            "patch {}: a delete carries no content",
                            p.path
                        )));
                    }
                }
                Op::Create | Op::Update => {
                    let mode = p.mode.unwrap_or(libc::S_IFREG | 0o644);
                    let t = mode & libc::S_IFMT;
                    if t != libc::S_IFREG && t != libc::S_IFLNK {
                        return Err(Error::invalid(format!(
                            "patch {}: mode {mode:o} is neither a regular file nor a symlink",
                            p.path
                        )));
                    }
                    self.content(p)?;
                }
            }
            if p.operation != Op::Create && p.base.is_none() {
                return Err(Error::invalid(format!(
                    "patch {}: a {:?} needs the base the agent saw (it was not recorded)",
                    p.path, p.operation
                )));
            }
        }
        Ok(())
    }
}
