//! WorkspacePatch sets: the seed's fields (grant_id, path, operation,
//! content) plus what a safe commit needs (blob, base, mode, size).
//!
//! On disk a set is a directory: `patchset.json`, and `blobs/<hex>` for
//! contents above `INLINE_LIMIT` (named by their blake3). Output is
//! deterministic: patches sorted by path.
//!
//! A set given to `wopfs commit --from` may come from a hostile agent, so
//! loading trusts nothing in it. `patchset.json` and every blob are opened
//! beneath their directory with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)`, and only as regular files:
//! the type is checked on an `O_PATH` fd before the file is opened for
//! reading, so a FIFO or device is not opened (nothing blocks, nothing
//! reads `/dev/zero`; one swapped in between the two opens is opened
//! `O_NONBLOCK`, found to be another file, and refused). `patchset.json`
//! is read up to `MAX_PATCHSET_JSON`;
//! a content is read no further than its declared `size`, which
//! `Loaded::validate` bounds by the grant's `max_total_size_bytes` (each,
//! and the sum), and its size and hash are both checked every time it is
//! read. `mode`, symlink targets, `created_at` and the hashes' form are
//! checked too, all before anything is written.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::OsStr;
use std::fs::File;
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use base64::Engine;
use rustix::fs::{self as rfs, Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use super::{changes, Op, Source};
use crate::error::{Error, IoContext, Result};
use crate::grant::Grant;
use crate::host::HostRoot;
use crate::overlay::journal::SeenMap;
use crate::overlay::Objects;
use crate::paths;
use crate::scope::Scope;
use crate::tree::{Kind, Tree};

pub use super::format::{PatchSet, WorkspacePatch, FORMAT};

/// Contents up to this size are inlined as base64; larger ones are blobs.
pub const INLINE_LIMIT: u64 = 64 * 1024;
/// The most a `patchset.json` may hold (inlined contents included): a set
/// is parsed in memory.
pub const MAX_PATCHSET_JSON: u64 = 1 << 30;
/// The longest symlink target a patch may carry (`PATH_MAX` less its NUL).
pub const MAX_LINK_TARGET: u64 = 4095;
/// Bytes read (or base64 characters decoded) per step while a content is
/// hashed; a multiple of 4.
const CHUNK: usize = 64 * 1024;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A patch set with where its blobs are.
pub struct Loaded {
    pub set: PatchSet,
    /// `blobs/` beside `patchset.json`, when there is one (for messages).
    pub blobs: Option<PathBuf>,
    /// `blobs/`, opened (`O_PATH`) when the set was loaded: every blob is
    /// opened beneath this fd, never by path.
    blob_dir: Option<OwnedFd>,
    /// The largest content `content` reads: unbounded until `validate`
    /// sets it to the grant's `max_total_size_bytes`.
    limit: AtomicU64,
    /// For a set built from the session itself: where each large content
    /// is read again (an overlay object, or an untouched host file that
    /// moved), instead of a blobs directory.
    session: Option<SessionContents>,
    /// Each path's patch (built when a hard link's content is first read).
    by_path: OnceLock<HashMap<String, usize>>,
}

/// Contents of a set built in memory from its session.
struct SessionContents {
    host: HostRoot,
    /// The objects' root, opened (`O_PATH`).
    objects_fd: OwnedFd,
    /// Where each object is; holds a kernel session's layer mounted.
    objects: Objects,
    sources: std::collections::HashMap<String, Source>,
}

/// A session's own set keeps contents up to this size inline in memory,
/// and up to `SESSION_INLINE_TOTAL` in all; larger ones are read again
/// from the overlay when applied.
const SESSION_INLINE_TOTAL: u64 = 64 << 20;

pub fn hash_hex(data: &[u8]) -> String {
    format!("blake3:{}", blake3::hash(data).to_hex())
}

/// Reads the new content of every created or updated path of a session.
pub struct Contents<'a> {
    host: &'a HostRoot,
    objects: &'a Objects,
}

impl Contents<'_> {
    fn read(&self, source: &Source, kind: Kind) -> Result<(Vec<u8>, u32)> {
        let (data, st) = match source {
            Source::Object(o) => {
                let shown = || match self.objects.path(*o) {
                    Some(p) => format!("overlay object {o} ({})", p.display()),
                    None => format!("overlay object {o}"),
                };
                let st = self.objects.lstat(*o).ctx(shown)?;
                let data = if kind == Kind::Symlink {
                    self.objects.readlink(*o)
                } else {
                    let mut v = Vec::new();
                    self.objects
                        .open_file(*o)
                        .and_then(|mut f| f.read_to_end(&mut v))
                        .map(|_| v)
                }
                .ctx(|| format!("reading {}", shown()))?;
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
    build_from(grant, session_dir, None, |p, data, _| each(p, data)).map(|(set, _)| set)
}

/// `build`, also telling where each content came from; returns the set and
/// the session's objects.
fn build_from(
    grant: &Grant,
    session_dir: &Path,
    saved: Option<&Path>,
    mut each: impl FnMut(&WorkspacePatch, Option<&[u8]>, Option<&Source>) -> Result<()>,
) -> Result<(PatchSet, Objects)> {
    let base = Tree::from_files(&grant.files);
    let mut fin = Tree::from_files(&grant.files);
    let (seen, objects) = match saved {
        Some(layer) => crate::overlay::inspect_saved(grant, session_dir, layer, &mut fin)?,
        None => crate::overlay::inspect(grant, session_dir, &mut fin)?,
    };
    let host = HostRoot::open(&grant.root).ctx(|| format!("host tree {}", grant.root.display()))?;
    let contents = Contents {
        host: &host,
        objects: &objects,
    };
    let mut patches: Vec<WorkspacePatch> = Vec::new();
    let all = changes(&base, &fin);
    // Paths other names link to: their file stays in the set even unchanged.
    let linked: BTreeSet<String> = all.iter().filter_map(|c| c.link.clone()).collect();
    for c in all {
        let mut p = WorkspacePatch {
            grant_id: grant.grant_id.clone(),
            path: c.path.clone(),
            operation: c.op,
            content: None,
            blob: None,
            base: base_of(&seen, &c.path, &host),
            mode: None,
            size: None,
            link: c.link.clone(),
        };
        // A hard link: its file's first path (sorted before it) was read.
        let first = c.link.as_deref().and_then(|t| {
            let i = patches.binary_search_by(|q| q.path.as_str().cmp(t)).ok()?;
            patches.get(i)
        });
        let data = match (&c.source, first) {
            (_, Some(f)) => {
                (p.blob, p.mode, p.size) = (f.blob.clone(), f.mode, f.size);
                None
            }
            (Some(src), None) => {
                let (data, mode) = contents.read(src, c.kind)?;
                p.blob = Some(hash_hex(&data));
                p.mode = Some(mode);
                p.size = Some(data.len() as u64);
                Some(data)
            }
            (None, None) => None,
        };
        if c.op == Op::Create {
            p.base = None;
        }
        // A copy-up that changed nothing (touch, chmod to the same mode, an
        // open for writing with no write) is no change: the bytes are the
        // ones the agent saw and the host still has that mode.
        if c.op == Op::Update
            && p.link.is_none()
            && !linked.contains(&p.path)
            && p.base.is_some()
            && p.base == p.blob
            && host
                .lstat(&p.path)
                .is_ok_and(|st| Some(st.st_mode) == p.mode)
        {
            continue;
        }
        let source = c.source.as_ref().filter(|_| p.link.is_none());
        each(&p, data.as_deref(), source)?;
        patches.push(p);
    }
    let set = PatchSet {
        format: FORMAT.into(),
        grant_id: grant.grant_id.clone(),
        root: grant.root.clone(),
        created_at: crate::grant::rfc3339(std::time::SystemTime::now()),
        patches,
    };
    Ok((set, objects))
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

/// Whether change `c` is a copy-up that changed nothing (touch, chmod to
/// the same mode, an open for writing with no write): its bytes are the
/// ones the agent saw (its base) and the host still has its mode. For the
/// pending list, which has no contents in hand (the set builder compares
/// the hashes it has); sizes first, so a real edit costs no hashing.
pub(crate) fn is_noop_update(
    c: &super::Change,
    seen: &SeenMap,
    host: &HostRoot,
    objects: &Objects,
) -> bool {
    let Some(Source::Object(o)) = c.source else {
        return false;
    };
    if c.op != Op::Update || c.link.is_some() {
        return false;
    }
    let (Ok(obj), Ok(now)) = (objects.lstat(o), host.lstat(&c.path)) else {
        return false;
    };
    if obj.st_mode != now.st_mode || obj.st_size != now.st_size {
        return false;
    }
    let Some(base) = base_of(seen, &c.path, host) else {
        return false;
    };
    let hash = match c.kind {
        Kind::Symlink => objects.readlink(o).map(|t| hash_hex(&t)),
        _ => objects.open_file(o).and_then(|mut f| {
            let mut h = blake3::Hasher::new();
            std::io::copy(&mut f, &mut h)?;
            Ok(format!("blake3:{}", h.finalize().to_hex()))
        }),
    };
    hash.is_ok_and(|h| h == base)
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

fn resolve() -> ResolveFlags {
    ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS
}

/// What a file that is not a regular file is, for refusals.
fn kind_of(mode: u32) -> &'static str {
    match mode & libc::S_IFMT {
        libc::S_IFIFO => "a FIFO (named pipe)",
        libc::S_IFCHR => "a character device",
        libc::S_IFBLK => "a block device",
        libc::S_IFDIR => "a directory",
        libc::S_IFSOCK => "a socket",
        libc::S_IFLNK => "a symbolic link",
        _ => "of an unknown file type",
    }
}

/// Whether `s` is `blake3:` and 64 lowercase hex digits (what `hash_hex`
/// writes, and the only form a blob may be named by).
fn is_hash(s: &str) -> bool {
    s.strip_prefix("blake3:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

/// The length of what a padded base64 string decodes to, without decoding
/// it; `None` when its length cannot be padded base64.
fn decoded_len(b64: &str) -> Option<u64> {
    let n = b64.len();
    if n % 4 != 0 {
        return None;
    }
    let pad = b64.bytes().rev().take(2).take_while(|b| *b == b'=').count();
    Some((n / 4 * 3 - pad) as u64)
}

/// Why a file was not opened by `open_regular`.
enum Refused {
    Symlink,
    NotRegular(&'static str),
    Changed,
    Io(std::io::Error),
}

impl From<Errno> for Refused {
    fn from(e: Errno) -> Refused {
        match e {
            Errno::LOOP => Refused::Symlink,
            e => Refused::Io(e.into()),
        }
    }
}

/// Opens `name` beneath `dir` for reading if it is a regular file, never
/// through a symlink. The type is checked on an `O_PATH` fd first, so a
/// FIFO or device is not opened; the file is then opened (`O_NOFOLLOW |
/// O_NONBLOCK`, so even a FIFO swapped in meanwhile cannot block) and must
/// be the same inode, still regular.
/// Returns the file and its length.
fn open_regular(dir: &OwnedFd, name: &OsStr) -> Result<(File, u64), Refused> {
    let at = |flags: OFlags| {
        rfs::openat2(
            dir,
            name,
            flags | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            resolve(),
        )
    };
    // With O_PATH | O_NOFOLLOW a final symlink is opened itself.
    let path_fd = at(OFlags::PATH)?;
    let st = rfs::fstat(&path_fd)?;
    match st.st_mode & libc::S_IFMT {
        libc::S_IFREG => {}
        libc::S_IFLNK => return Err(Refused::Symlink),
        m => return Err(Refused::NotRegular(kind_of(m))),
    }
    let fd = at(OFlags::RDONLY | OFlags::NONBLOCK)?;
    let now = rfs::fstat(&fd)?;
    if (now.st_dev, now.st_ino) != (st.st_dev, st.st_ino)
        || now.st_mode & libc::S_IFMT != libc::S_IFREG
    {
        return Err(Refused::Changed);
    }
    Ok((File::from(fd), now.st_size as u64))
}

/// Reads into `buf`, retrying on EINTR.
fn read_some(f: &mut File, buf: &mut [u8]) -> std::io::Result<usize> {
    loop {
        match f.read(buf) {
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            r => return r,
        }
    }
}

/// Reads a patch set from a directory (or its `patchset.json`). Errors
/// name the file and what is wrong with it. The directory named is the
/// approver's path (symlinks in it are followed); `patchset.json` and
/// `blobs/` beneath it must be a regular file and a real directory.
pub fn load(path: &Path) -> Result<Loaded> {
    let (dir, name) = if path.is_dir() {
        (path.to_path_buf(), OsStr::new("patchset.json"))
    } else {
        let name = path.file_name().ok_or_else(|| {
            Error::invalid(format!(
                "patch set {} names neither a directory nor a file",
                path.display()
            ))
        })?;
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
            _ => PathBuf::from("."),
        };
        (dir, name)
    };
    let json = dir.join(name);
    let dir_fd = rfs::open(
        &dir,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("reading patch set {}", json.display()), e.into()))?;
    let text = read_json(&dir_fd, name, &json)?;
    let set: PatchSet = serde_json::from_slice(&text)
        .map_err(|e| Error::invalid(format!("patch set {} is malformed: {e}", json.display())))?;
    drop(text);
    if set.format != FORMAT {
        return Err(Error::invalid(format!(
            "patch set {} has format {:?}; this wopfs reads {FORMAT:?}",
            json.display(),
            set.format
        )));
    }
    if let Err(e) = humantime::parse_rfc3339(&set.created_at) {
        return Err(Error::invalid(format!(
            "patch set {} has created_at {:?}, which is not an RFC 3339 UTC time ({e})",
            json.display(),
            set.created_at
        )));
    }
    let blobs = dir.join("blobs");
    let blob_dir = open_blob_dir(&dir_fd, &json, &blobs)?;
    Ok(Loaded {
        set,
        blobs: blob_dir.is_some().then_some(blobs),
        blob_dir,
        limit: AtomicU64::new(u64::MAX),
        session: None,
        by_path: OnceLock::new(),
    })
}

/// `patchset.json`: a regular file (not a link, FIFO or device) of at
/// most `MAX_PATCHSET_JSON` bytes.
fn read_json(dir: &OwnedFd, name: &OsStr, json: &Path) -> Result<Vec<u8>> {
    let show = json.display();
    let (file, len) = open_regular(dir, name).map_err(|r| match r {
        Refused::Symlink => Error::invalid(format!(
            "patch set {show} is a symbolic link; a patch set is read only from a regular file, never through a link"
        )),
        Refused::NotRegular(kind) => Error::invalid(format!(
            "patch set {show} is {kind}, not a regular file"
        )),
        Refused::Changed => Error::invalid(format!(
            "patch set {show} was replaced while it was being opened"
        )),
        Refused::Io(e) => Error::io(format!("reading patch set {show}"), e),
    })?;
    let too_big = |n: u64| {
        Error::invalid(format!(
            "patch set {show} is {n} bytes, more than the 1 GiB ({MAX_PATCHSET_JSON}-byte) limit on a patchset.json"
        ))
    };
    if len > MAX_PATCHSET_JSON {
        return Err(too_big(len));
    }
    let mut text = Vec::new();
    text.try_reserve_exact(len as usize).map_err(|_| {
        Error::invalid(format!(
            "patch set {show}: cannot hold its {len} bytes in memory"
        ))
    })?;
    file.take(MAX_PATCHSET_JSON + 1)
        .read_to_end(&mut text)
        .ctx(|| format!("reading patch set {show}"))?;
    if text.len() as u64 > MAX_PATCHSET_JSON {
        return Err(too_big(text.len() as u64));
    }
    Ok(text)
}

/// `blobs/` beside `patchset.json`, if there is one: a real directory, not
/// a symlink to one.
fn open_blob_dir(dir: &OwnedFd, json: &Path, blobs: &Path) -> Result<Option<OwnedFd>> {
    let (show, bshow) = (json.display(), blobs.display());
    let fd = match rfs::openat2(
        dir,
        "blobs",
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
        resolve(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(None),
        Err(Errno::LOOP) => {
            return Err(Error::invalid(format!(
                "patch set {show}: its blobs directory {bshow} is a symbolic link; blobs are read only from a real directory"
            )))
        }
        Err(Errno::NOTDIR) => {
            return Err(Error::invalid(format!(
                "patch set {show}: {bshow} is not a directory"
            )))
        }
        Err(e) => return Err(Error::io(format!("opening {bshow}"), e.into())),
    };
    let st = rfs::fstat(&fd).map_err(|e| Error::io(format!("opening {bshow}"), e.into()))?;
    if st.st_mode & libc::S_IFMT != libc::S_IFDIR {
        return Err(Error::invalid(format!(
            "patch set {show}: {bshow} is {}, not a directory",
            kind_of(st.st_mode)
        )));
    }
    Ok(Some(fd))
}

impl Loaded {
    /// A set held in memory, every content inline (no blobs directory).
    pub fn inline(set: PatchSet) -> Loaded {
        Loaded {
            set,
            blobs: None,
            blob_dir: None,
            limit: AtomicU64::new(u64::MAX),
            session: None,
            by_path: OnceLock::new(),
        }
    }

    /// The session's own set, built in memory (no export written): small
    /// contents inline, large ones read again from the overlay (or the
    /// host, for a moved file) when applied, each checked against the
    /// hash taken here. The caller holds the session lock, so the overlay
    /// cannot change meanwhile.
    pub fn from_session(grant: &Grant, session_dir: &Path) -> Result<Loaded> {
        Self::from_layer(grant, session_dir, None)
    }

    /// As [`Loaded::from_session`], from a copy of the session's layer at
    /// `saved` (a checkpoint's) when given.
    pub fn from_layer(grant: &Grant, session_dir: &Path, saved: Option<&Path>) -> Result<Loaded> {
        let mut budget = SESSION_INLINE_TOTAL;
        let mut inlined = BTreeMap::new();
        let mut sources = std::collections::HashMap::new();
        let (mut set, objects) = build_from(grant, session_dir, saved, |p, data, source| {
            if let (Some(data), Some(source)) = (data, source) {
                let n = data.len() as u64;
                if p.is_symlink() || (n <= INLINE_LIMIT && n <= budget) {
                    budget -= n.min(budget);
                    inlined.insert(p.path.clone(), B64.encode(data));
                } else {
                    sources.insert(p.path.clone(), source.clone());
                }
            }
            Ok(())
        })?;
        for p in &mut set.patches {
            p.content = inlined.remove(&p.path);
        }
        let objects_fd = rfs::open(
            objects.root(),
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        );
        let objects_fd = match objects_fd {
            Ok(fd) => fd,
            // No overlay objects at all (only deletes, or moved host files).
            Err(_) => rfs::open(
                session_dir,
                OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| Error::io(format!("session dir {}", session_dir.display()), e.into()))?,
        };
        let host =
            HostRoot::open(&grant.root).ctx(|| format!("host tree {}", grant.root.display()))?;
        Ok(Loaded {
            set,
            blobs: None,
            blob_dir: None,
            limit: AtomicU64::new(u64::MAX),
            session: Some(SessionContents {
                host,
                objects_fd,
                objects,
                sources,
            }),
            by_path: OnceLock::new(),
        })
    }

    /// The blob hash of a create or update, in its one valid form.
    fn blob_of<'a>(&self, p: &'a WorkspacePatch) -> Result<&'a str> {
        let blob = p.blob.as_deref().ok_or_else(|| {
            Error::invalid(format!(
                "patch {}: a {:?} needs a blob hash",
                p.path, p.operation
            ))
        })?;
        if !is_hash(blob) {
            return Err(Error::invalid(format!(
                "patch {}: blob {blob:?} is not a blake3 hash (blake3: and 64 lowercase hex digits)",
                p.path
            )));
        }
        Ok(blob)
    }

    /// The blob hash and the declared size of a create or update; the size
    /// is within the grant's limit once `validate` has run.
    fn declared<'a>(&self, p: &'a WorkspacePatch) -> Result<(&'a str, u64)> {
        let blob = self.blob_of(p)?;
        let size = p.size.ok_or_else(|| {
            Error::invalid(format!(
                "patch {} (blob {blob}): a {:?} needs its size",
                p.path, p.operation
            ))
        })?;
        let limit = self.limit.load(Ordering::Relaxed);
        if size > limit {
            return Err(Error::invalid(format!(
                "patch {} (blob {blob}): size {size} is more than the grant's max_total_size_bytes ({limit})",
                p.path
            )));
        }
        Ok((blob, size))
    }

    /// Opens the blob of a create or update (`blobs/<hex>`) beneath the
    /// blobs directory: never through a symlink, and only if it is a
    /// regular file (a FIFO, device or directory is refused without being
    /// opened for reading). Returns the file and its length when opened.
    /// Nothing is checked against the declared size or hash here: read no
    /// further than `size` and verify, or use `content`.
    pub fn open_blob(&self, p: &WorkspacePatch) -> Result<(File, u64)> {
        let blob = self.blob_of(p)?;
        let hex = &blob["blake3:".len()..];
        if let Some(s) = &self.session {
            let path = &p.path;
            let opened = match s.sources.get(path) {
                Some(Source::Object(o)) => match s.objects.rel(*o) {
                    Some(name) => {
                        open_regular(&s.objects_fd, OsStr::new(&name)).map_err(|r| match r {
                            Refused::Io(e) => e,
                            _ => std::io::Error::from_raw_os_error(libc::EINVAL),
                        })
                    }
                    None => Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
                },
                Some(Source::Host(h)) => s.host.open_file(h).and_then(|f| {
                    let len = f.metadata()?.len();
                    Ok((f, len))
                }),
                None => Err(std::io::Error::from_raw_os_error(libc::ENOENT)),
            };
            return opened.map_err(|e| Error::io(format!("patch {path}: reading its content"), e));
        }
        let (Some(dir), Some(shown)) = (&self.blob_dir, &self.blobs) else {
            return Err(Error::invalid(format!(
                "patch {}: no content and no blobs directory beside the patch set",
                p.path
            )));
        };
        let path = &p.path;
        open_regular(dir, OsStr::new(hex)).map_err(|r| match r {
            Refused::Symlink => Error::invalid(format!(
                "patch {path}: blob {hex} is a symbolic link; blobs are read only as regular files beneath {}",
                shown.display()
            )),
            Refused::NotRegular(kind) => Error::invalid(format!(
                "patch {path}: blob {hex} is {kind}, not a regular file"
            )),
            Refused::Changed => Error::invalid(format!(
                "patch {path}: blob {hex} was replaced while it was being opened"
            )),
            Refused::Io(e) if e.raw_os_error() == Some(libc::ENOENT) => Error::invalid(format!(
                "patch {path}: blob {hex} is missing from {}",
                shown.display()
            )),
            Refused::Io(e) => Error::io(format!("patch {path}: opening blob {hex}"), e),
        })
    }

    /// The new content of a create or update, checked against its declared
    /// size and its blob hash. A blob is read no further than its length
    /// when opened, which may not exceed that size, and no more than that
    /// length is allocated.
    pub fn content(&self, p: &WorkspacePatch) -> Result<Vec<u8>> {
        let mut data = Vec::new();
        self.read_checked(self.content_patch(p)?, Some(&mut data))?;
        Ok(data)
    }

    /// The patch holding a patch's content: itself, or for a hard link the
    /// patch of the path it links to.
    fn content_patch<'a>(&'a self, p: &'a WorkspacePatch) -> Result<&'a WorkspacePatch> {
        let Some(target) = &p.link else {
            return Ok(p);
        };
        self.patch_at(target)
            .filter(|t| t.link.is_none() && t.operation != Op::Delete)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "patch {}: a hard link to {target}, which this set does not create or update as a file",
                    p.path
                ))
            })
    }

    /// The patch of `path`, if the set has one.
    fn patch_at(&self, path: &str) -> Option<&WorkspacePatch> {
        let index = self.by_path.get_or_init(|| {
            let paths = self.set.patches.iter().map(|q| q.path.clone());
            paths.zip(0..).collect()
        });
        index.get(path).map(|&i| &self.set.patches[i])
    }

    /// Streams a content (inline base64, decoded a chunk at a time, or its
    /// blob) through the hash, keeping it in `keep` if given, and checks
    /// its length and hash against the patch's `size` and `blob`.
    fn read_checked(&self, p: &WorkspacePatch, mut keep: Option<&mut Vec<u8>>) -> Result<()> {
        let (blob, size) = self.declared(p)?;
        let path = &p.path;
        let reserve = |keep: &mut Option<&mut Vec<u8>>, n: u64| -> Result<()> {
            if let Some(v) = keep {
                usize::try_from(n)
                    .ok()
                    .and_then(|n| v.try_reserve_exact(n).ok())
                    .ok_or_else(|| {
                        Error::invalid(format!(
                            "patch {path} (blob {blob}): its {n}-byte content does not fit in memory"
                        ))
                    })?;
            }
            Ok(())
        };
        let mut hasher = blake3::Hasher::new();
        let mut got = 0u64;
        let mut put = |data: &[u8], keep: &mut Option<&mut Vec<u8>>| {
            hasher.update(data);
            got += data.len() as u64;
            if let Some(v) = keep {
                v.extend_from_slice(data);
            }
        };
        let what = match &p.content {
            Some(b64) => {
                let n = decoded_len(b64).ok_or_else(|| {
                    Error::invalid(format!(
                        "patch {path} (blob {blob}): content is not valid base64 (its length {} is not a multiple of 4)",
                        b64.len()
                    ))
                })?;
                // Longer than declared: hashed for the message (it is in
                // memory already), never kept.
                if n > size {
                    keep = None;
                }
                reserve(&mut keep, n)?;
                let mut buf = vec![0u8; CHUNK / 4 * 3];
                for (i, chunk) in b64.as_bytes().chunks(CHUNK).enumerate() {
                    let k = B64.decode_slice(chunk, &mut buf).map_err(|e| {
                        Error::invalid(format!(
                            "patch {path} (blob {blob}): content is not valid base64 (in the {CHUNK} characters from character {}: {e})",
                            i * CHUNK
                        ))
                    })?;
                    put(&buf[..k], &mut keep);
                }
                format!("patch {path} (blob {blob}): content")
            }
            None => {
                let hex = &blob["blake3:".len()..];
                let (mut f, len) = self.open_blob(p)?;
                if len > size {
                    return Err(Error::invalid(format!(
                        "patch {path}: blob {hex} is {len} bytes, longer than its declared size {size}"
                    )));
                }
                reserve(&mut keep, len)?;
                let mut buf = vec![0u8; CHUNK.min(len as usize).max(1)];
                let mut left = len;
                let read_err = |e| Error::io(format!("patch {path}: reading blob {hex}"), e);
                while left > 0 {
                    let want = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
                    let k = read_some(&mut f, &mut buf[..want]).map_err(read_err)?;
                    if k == 0 {
                        break;
                    }
                    put(&buf[..k], &mut keep);
                    left -= k as u64;
                }
                // Nothing may follow what was there when it was opened.
                if read_some(&mut f, &mut buf[..1]).map_err(read_err)? != 0 {
                    return Err(Error::invalid(format!(
                        "patch {path}: blob {hex} grew past {len} bytes while it was being read"
                    )));
                }
                format!("patch {path}: blob {hex}")
            }
        };
        let hash = format!("blake3:{}", hasher.finalize().to_hex());
        let wrong_size =
            (got != size).then(|| format!("holds {got} bytes, not its declared size {size}"));
        match (hash == blob, wrong_size) {
            (true, None) => Ok(()),
            (true, Some(s)) => Err(Error::invalid(format!("{what} {s}"))),
            (false, s) => Err(Error::invalid(format!(
                "{what} does not match its blob hash (expected {blob}, got {hash}){}",
                s.map(|s| format!(" and {s}")).unwrap_or_default()
            ))),
        }
    }

    /// Checks the set against the grant it claims, before anything is
    /// touched: the grant, every path's form and place, the fields each
    /// operation needs and their ranges (sizes within the grant's
    /// `max_total_size_bytes`, each and together; modes; symlink targets),
    /// then every content against its size and hash. Contents are streamed
    /// through the hash, not held.
    pub fn validate(&self, grant: &Grant) -> Result<()> {
        let set = &self.set;
        if set.grant_id != grant.grant_id {
            return Err(Error::invalid(format!(
                "this patch set is for grant {}, not {}",
                set.grant_id, grant.grant_id
            )));
        }
        let max = grant.max_total_size_bytes;
        self.limit.store(max, Ordering::Relaxed);
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
        let mut total = 0u64;
        // First every field, so a forged size is refused before any
        // content is read.
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
            // A delete beneath a new file is how a directory becomes one.
            let holds = p.operation != Op::Delete;
            if let Some(a) = paths::ancestors(&p.path).find(|a| holds && leaves.contains(a)) {
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
            let granted_file = granted.contains(p.path.as_str());
            if let Some(why) =
                super::scope_refuses(&scope, p.operation, &p.path, kind, granted_file)
            {
                return Err(Error::policy(format!(
                    "patch {} ({:?}) is outside grant {}: {why}",
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
                    if p.mode.is_some() || p.size.is_some() {
                        return Err(Error::invalid(format!(
                            "patch {}: a delete carries no mode or size",
                            p.path
                        )));
                    }
                }
                Op::Create | Op::Update => {
                    let blob = self.blob_of(p)?;
                    let who = format!("patch {} (blob {blob})", p.path);
                    let mode = p.mode.ok_or_else(|| {
                        Error::invalid(format!("{who}: a {:?} needs its mode", p.operation))
                    })?;
                    let t = mode & libc::S_IFMT;
                    if t != libc::S_IFREG && t != libc::S_IFLNK {
                        return Err(Error::invalid(format!(
                            "{who}: mode {mode:o} is neither a regular file nor a symlink"
                        )));
                    }
                    let stray = mode & !(libc::S_IFMT | 0o7777);
                    if stray != 0 {
                        return Err(Error::invalid(format!(
                            "{who}: mode {mode:o} has bits {stray:o} besides the file type and the permission bits (7777)"
                        )));
                    }
                    let size = p.size.ok_or_else(|| {
                        Error::invalid(format!("{who}: a {:?} needs its size", p.operation))
                    })?;
                    if size > max {
                        return Err(Error::invalid(format!(
                            "{who}: size {size} is more than grant {}'s max_total_size_bytes ({max})",
                            grant.grant_id
                        )));
                    }
                    // A hard link adds a name, not bytes.
                    if p.link.is_none() {
                        total = total.saturating_add(size);
                    }
                    if total > max {
                        return Err(Error::invalid(format!(
                            "{who}: its size {size} brings the set's contents to {total} bytes, more than grant {}'s max_total_size_bytes ({max})",
                            grant.grant_id
                        )));
                    }
                    if t == libc::S_IFLNK && size == 0 {
                        return Err(Error::invalid(format!(
                            "{who}: a symlink's target (its content) is empty"
                        )));
                    }
                    if t == libc::S_IFLNK && size > MAX_LINK_TARGET {
                        return Err(Error::invalid(format!(
                            "{who}: a symlink's target is {size} bytes, more than {MAX_LINK_TARGET}"
                        )));
                    }
                }
            }
            match (&p.base, p.operation) {
                (Some(_), Op::Create) => {
                    return Err(Error::invalid(format!(
                        "patch {}: a create has no base (nothing was there)",
                        p.path
                    )))
                }
                (Some(b), _) if !is_hash(b) => {
                    return Err(Error::invalid(format!(
                        "patch {}: base {b:?} is not a blake3 hash",
                        p.path
                    )))
                }
                // A session's own set may not know a base (the host entry
                // changed after the agent's copy was made): the commit takes
                // that as a conflict unless the host already holds the
                // result. A set from elsewhere must say what it expects.
                (None, Op::Update | Op::Delete) if self.session.is_none() => {
                    return Err(Error::invalid(format!(
                        "patch {}: a {:?} needs the base the agent saw (it was not recorded)",
                        p.path, p.operation
                    )))
                }
                _ => {}
            }
        }
        super::links::check(set, grant)?;
        // Then every content, against its size and hash (a session's own
        // set was hashed as it was built, under the session lock; applying
        // checks each content again as it reads it). A hard link's is its
        // file's.
        let contents = set.patches.iter().filter(|p| {
            p.operation != Op::Delete
                && p.link.is_none()
                && (self.session.is_none() || p.is_symlink())
        });
        for p in contents {
            if p.is_symlink() {
                let target = self.content(p)?;
                if target.contains(&0) {
                    return Err(Error::invalid(format!(
                        "patch {} (blob {}): a symlink's target contains a NUL byte",
                        p.path,
                        p.blob.as_deref().unwrap_or_default()
                    )));
                }
            } else {
                self.read_checked(p, None)?;
            }
        }
        Ok(())
    }
}
