//! The upper layer on disk, in the session's state dir. Every write of a
//! `read_write_overlay` view lands here; the host tree is never touched.
//!
//! ```text
//! STATE/sessions/g-…/overlay/objects/N    one object per overlay node: a file,
//!                                         a directory (holding its metadata) or a symlink
//! STATE/sessions/g-…/overlay/journal.jsonl  how the view differs from the grant (see journal.rs)
//! ```
//!
//! Durability: objects are written in place, so whatever a write(2)
//! returned for survives a `kill -9` of the daemon; the journal gets one
//! append per namespace change, before the change is answered. `fsync` on a
//! file also fsyncs its object's directory entry (once) and the journal;
//! on a directory, the journal. An object created just before
//! a crash but not yet journaled is an orphan and is deleted at the next mount.
//!
//! The journal is bounded: its bytes on disk count against the byte quota
//! with the data (`quota.rs`), and it is compacted online. The overlay keeps
//! the grant's tree and a mirror of the journal's own state (the replay of
//! what it holds: two more trees the size of the view's), so
//! `journal::compact` can rewrite it without the view. An append compacts
//! first when the journal has grown by its compacted size (at least
//! [`COMPACT_MIN_GROWTH`], and [`COMPACT_GROWTH_PER_NODE`] per node of the
//! grant) since the last compaction, or when the quota refuses it and at
//! least [`PRESSURE_MIN_GAIN`] (or an eighth of the journal) may be
//! reclaimed. The rewrite is atomic (temp file, fsync, rename; the
//! directory is fsynced by the next `sync`), so a `kill -9` at any point
//! leaves either journal, whole. If even the compacted journal, this append
//! and the data do not fit, the append is refused with EDQUOT and nothing
//! is recorded. Appends that only remove (`del` and `seen` records) are
//! never refused when the objects they remove hold at least as many bytes
//! as they add, and may otherwise go past the limit by [`REMOVAL_GRACE`]:
//! deleting files to make room works at a full quota. So data plus journal
//! stay within the byte quota plus `REMOVAL_GRACE` (plus, while a rewrite
//! runs, the new copy; and the passthrough exception settled when such a
//! writer closes, see `view/serve.rs`).

pub mod engine;
pub mod journal;
pub mod kernel;
#[cfg(test)]
mod kernel_session_tests;
#[cfg(test)]
mod kernel_tests;
mod loopdev;
pub mod objects;
pub mod quota;
pub mod snapshot;
#[cfg(test)]
mod snapshot_tests;
#[cfg(test)]
mod tests;

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::fs::{self as rfs, AtFlags, Mode as RMode, OFlags, Stat};

use crate::error::{Error, IoContext, Result};
use crate::tree::{Kind, Origin, Tree, ROOT};
use journal::{Record, SeenMap};
pub use objects::Objects;
use quota::Quota;

pub struct Overlay {
    dir: PathBuf,
    objects: OwnedFd,
    journal: Mutex<Journal>,
    /// The grant's tree, what the journal describes changes to.
    base: Tree,
    /// How much the journal grows at least between compactions.
    min_growth: u64,
    next_obj: AtomicU64,
    pub quota: Quota,
    /// Serializes xattr changes, which measure what they replace.
    xattrs: Mutex<()>,
    /// Objects whose directory entry has been fsynced (`sync_entry`).
    entries_synced: Mutex<std::collections::HashSet<u64>>,
}

/// An append compacts the journal once it has grown by its compacted size,
/// and at least by this much, since the last compaction (amortized: a
/// rewrite writes less than twice what was appended since the last one).
pub const COMPACT_MIN_GROWTH: u64 = 64 * 1024;

/// ... and at least by this much per node of the grant's tree, which a
/// compaction walks (some 2 µs a node): a large grant's walk is amortized
/// over as many appends.
pub const COMPACT_GROWTH_PER_NODE: u64 = 64;

/// When the quota refuses an append, the journal is compacted only if it
/// has grown by this much (or by an eighth of its compacted size, if more)
/// since the last rewrite: at a full quota, a loop of renames must not
/// rewrite the journal on every call.
pub const PRESSURE_MIN_GAIN: u64 = 4 * 1024;

/// How far an append of only `del` and `seen` records (a removal) may take
/// data plus journal past the byte quota: deleting a file to make room must
/// work at a full quota.
pub const REMOVAL_GRACE: u64 = 64 * 1024;

/// The journal file and what it holds.
struct Journal {
    /// Open for appending.
    file: File,
    /// Its length on disk.
    len: u64,
    /// Its length right after the last compaction (rewrite, or a
    /// compaction that found nothing to reclaim).
    compacted: u64,
    /// The replay of the journal on the grant's tree: what a compaction
    /// writes out.
    mirror: Tree,
    seen: SeenMap,
    /// A record did not apply to the mirror (a bug elsewhere): online
    /// compaction is off for this mount; the journal still counts.
    broken: bool,
    /// Rewritten since the directory was last synced.
    renamed: bool,
}

/// Objects fan out over 256 subdirectories (`objects/2a/298`): a single
/// flat directory would draw every inode from one ext4 block group, where
/// creating files after many deletions gets slow.
const FANOUT: u64 = 256;

fn name(obj: u64) -> String {
    format!("{:02x}/{obj}", obj % FANOUT)
}

impl Overlay {
    /// Opens (creating) the overlay of a session, replays its journal onto
    /// `tree` (built from the grant), compacts the journal, drops orphan
    /// objects and sets up quotas. Returns the seen records.
    pub fn open(
        session_dir: &Path,
        tree: &mut Tree,
        base: &Tree,
        max_bytes: u64,
        max_objects: u64,
    ) -> Result<(Overlay, SeenMap)> {
        let dir = session_dir.join("overlay");
        let objects_path = dir.join("objects");
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&objects_path)
            .ctx(|| format!("creating overlay {}", objects_path.display()))?;
        for i in 0..FANOUT {
            match std::fs::DirBuilder::new()
                .mode(0o700)
                .create(objects_path.join(format!("{i:02x}")))
            {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(Error::io(format!("creating {}", objects_path.display()), e))
                }
                _ => {}
            }
        }
        let objects = rfs::open(
            &objects_path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            RMode::empty(),
        )
        .map_err(|e| Error::io(format!("opening {}", objects_path.display()), e.into()))?;

        let journal_path = dir.join("journal.jsonl");
        // A compaction killed before its rename leaves its temp file.
        match std::fs::remove_file(dir.join(JOURNAL_TMP)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => {
                return Err(Error::io(format!("removing {}", dir.display()), e))
            }
            _ => {}
        }
        let mut seen = SeenMap::new();
        replay(&journal_path, tree, &mut seen)?;

        // Compact: rewrite the journal as the shortest equivalent list.
        let text = serialize(&journal::compact(base, tree, &seen))?;
        let file = write_journal(&dir, &text)
            .and_then(|f| sync_dir(&dir).map(|_| f))
            .ctx(|| format!("writing {}", journal_path.display()))?;
        let len = text.len() as u64;

        let overlay = Overlay {
            dir,
            objects,
            journal: Mutex::new(Journal {
                file,
                len,
                compacted: len,
                mirror: copy_tree(tree),
                seen: seen.clone(),
                broken: false,
                renamed: false,
            }),
            // A clone keeps the numbers of the view's tree (an undo starts from it).
            base: base.clone(),
            min_growth: COMPACT_MIN_GROWTH
                .max((base.len() as u64).saturating_mul(COMPACT_GROWTH_PER_NODE)),
            next_obj: AtomicU64::new(1),
            quota: Quota::new(max_bytes, max_objects),
            xattrs: Mutex::new(()),
            entries_synced: Mutex::new(std::collections::HashSet::new()),
        };
        overlay.quota.restore_journal(len);
        overlay.collect_garbage(tree)?;
        Ok((overlay, seen))
    }

    /// Deletes unreferenced objects (in every fanout directory), accounts
    /// the referenced ones, and starts numbering after the highest object
    /// seen.
    fn collect_garbage(&self, tree: &Tree) -> Result<()> {
        let mut referenced = std::collections::HashMap::new();
        for ino in tree.subtree(ROOT) {
            if let Some(n) = tree.get(ino) {
                if let Origin::Upper(o) = n.origin {
                    referenced.insert(o, n.kind);
                }
            }
        }
        let mut max = 0;
        let dir = self.dir.join("objects");
        for i in 0..FANOUT {
            let sub = dir.join(format!("{i:02x}"));
            for entry in std::fs::read_dir(&sub).ctx(|| format!("listing {}", sub.display()))? {
                let entry = entry.ctx(|| format!("listing {}", sub.display()))?;
                let Some(obj) = entry
                    .file_name()
                    .to_str()
                    .and_then(|n| n.parse::<u64>().ok())
                    .filter(|o| o % FANOUT == i)
                else {
                    continue;
                };
                max = max.max(obj);
                if !referenced.contains_key(&obj) {
                    let kind = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                        Kind::Dir
                    } else {
                        Kind::File
                    };
                    let _ = self.remove(obj, kind);
                }
            }
        }
        for (obj, kind) in referenced {
            max = max.max(obj);
            let size = match kind {
                Kind::File => self.stat(obj).map(|s| s.st_size as u64).unwrap_or(0),
                _ => 0,
            };
            self.quota.restore_object(obj, size, kind == Kind::File);
            self.quota.restore_extra(obj, self.extra_bytes(obj, kind));
        }
        self.next_obj.store(max + 1, Ordering::Relaxed);
        Ok(())
    }

    /// The overlay's directory (objects and journal): the layer a
    /// checkpoint copies and an undo puts back.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The grant's tree (numbered as the view's tree was at mount).
    pub fn base(&self) -> &Tree {
        &self.base
    }

    /// Runs `f` with the journal held still (no append, no compaction):
    /// a checkpoint copies the layer meanwhile.
    pub fn with_journal_still<T>(&self, f: impl FnOnce() -> T) -> T {
        let _still = self.lock_journal();
        f()
    }

    /// After the layer on disk was put back to a checkpoint (an undo):
    /// replays its journal onto `tree` (a clone of the grant's tree), then
    /// accounts and collects objects as at open. Object numbers go on from
    /// where they were, so a handle still open on an object the undo
    /// dropped never meets a new object of the same number.
    pub fn reload(&self, tree: &mut Tree) -> Result<SeenMap> {
        use std::os::unix::fs::OpenOptionsExt;
        // Objects are reached through the directory opened at mount: a
        // restore puts files back in it, never replaces it.
        let objects = self.dir.join("objects");
        let held = rfs::fstat(&self.objects).map(|s| (s.st_dev, s.st_ino));
        let now = rfs::stat(&objects).map(|s| (s.st_dev, s.st_ino));
        if held.is_err() || held != now {
            return Err(Error::invalid(format!(
                "{} is no longer the directory the view opened: remount the view",
                objects.display()
            )));
        }
        let path = self.dir.join("journal.jsonl");
        let mut seen = SeenMap::new();
        let start = std::time::Instant::now();
        replay(&path, tree, &mut seen)?;
        let replay_ms = start.elapsed().as_secs_f64() * 1e3;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        let len = file
            .metadata()
            .ctx(|| format!("reading {}", path.display()))?
            .len();
        *self.lock_journal() = Journal {
            file,
            len,
            compacted: len,
            // A clone, not a copy: it keeps the numbers (cheaper, and the
            // mirror only answers by path).
            mirror: tree.clone(),
            seen: seen.clone(),
            broken: false,
            renamed: true,
        };
        let mirror_ms = start.elapsed().as_secs_f64() * 1e3 - replay_ms;
        self.quota.reset();
        self.quota.restore_journal(len);
        let next = self.next_obj.load(Ordering::Relaxed);
        self.collect_garbage(tree)?;
        self.next_obj.fetch_max(next, Ordering::Relaxed);
        tracing::debug!(
            replay_ms,
            mirror_ms,
            objects_ms = start.elapsed().as_secs_f64() * 1e3 - replay_ms - mirror_ms,
            "overlay reloaded"
        );
        self.entries_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        Ok(seen)
    }

    pub fn new_obj(&self) -> u64 {
        self.next_obj.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends records to the journal in one write, within the byte quota,
    /// compacting it first when it is due (see the module doc). Callers
    /// hold the tree lock, so the journal's order is the tree's. On an error
    /// (EDQUOT, or I/O) nothing of `records` is in the journal.
    pub fn append(&self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let buf = serialize_io(records)?;
        let n = buf.len() as u64;
        let mut j = self.lock_journal();
        let grace = if records.iter().any(|r| matches!(r, Record::Put { .. })) {
            0
        } else if self.frees(&j, records) >= n {
            // Removes objects holding at least what it adds: never refused
            // (even over a lowered limit, or past the passthrough exception).
            u64::MAX
        } else {
            REMOVAL_GRACE
        };
        let grown = j.len.saturating_sub(j.compacted);
        let due = grown.saturating_add(n) > j.compacted.max(self.min_growth);
        if !due || j.broken {
            match self.quota.charge_journal(n, grace) {
                Ok(()) => {
                    return self
                        .write_locked(&mut j, &buf, records)
                        .inspect_err(|_| self.uncharge(n))
                }
                Err(e) if j.broken || grown < PRESSURE_MIN_GAIN.max(j.compacted / 8) => {
                    return Err(edquot(e))
                }
                Err(_) => {}
            }
        }
        self.compact_locked(&mut j, &buf, records, grace)
    }

    /// Appends `buf` (the serialized `records`, already charged).
    fn write_locked(&self, j: &mut Journal, buf: &[u8], records: &[Record]) -> io::Result<()> {
        if let Err(e) = j.file.write_all(buf) {
            // Cut a partial line: later appends must not follow a torn one.
            let _ = j.file.set_len(j.len);
            return Err(e);
        }
        j.len += buf.len() as u64;
        j.apply(records);
        Ok(())
    }

    /// Rewrites the journal as `compact(mirror)` followed by `buf`, if that
    /// fits the quota; otherwise still rewrites it compactly when that
    /// frees room, and refuses the records with EDQUOT.
    fn compact_locked(
        &self,
        j: &mut Journal,
        buf: &[u8],
        records: &[Record],
        grace: u64,
    ) -> io::Result<()> {
        let mut text = serialize_io(&journal::compact(&self.base, &j.mirror, &j.seen))?;
        let compacted = text.len() as u64;
        let with_op = compacted + buf.len() as u64;
        let old = j.len;
        if compacted >= old {
            // Nothing to reclaim: no rewrite, and none again until the
            // journal has grown by as much once more.
            j.compacted = old;
            self.quota
                .charge_journal(buf.len() as u64, grace)
                .map_err(edquot)?;
            return self
                .write_locked(j, buf, records)
                .inspect_err(|_| self.uncharge(buf.len() as u64));
        }
        let (target, refused) = match self.quota.rebase_journal(old, with_op, grace) {
            Ok(()) => {
                text.extend_from_slice(buf);
                (with_op, false)
            }
            Err(_) => {
                // Shrinking always passes.
                let _ = self.quota.rebase_journal(old, compacted, 0);
                (compacted, true)
            }
        };
        match write_journal(&self.dir, &text) {
            Ok(file) => {
                tracing::debug!(old, new = target, "compacted the overlay journal");
                j.file = file;
                j.renamed = true;
                j.len = target;
                j.compacted = target;
                j.mirror = copy_tree(&j.mirror);
                if refused {
                    Err(io::Error::from_raw_os_error(libc::EDQUOT))
                } else {
                    j.apply(records);
                    Ok(())
                }
            }
            Err(e) => {
                // The old journal is still in place, whole.
                let _ = self.quota.rebase_journal(target, old, u64::MAX);
                Err(e)
            }
        }
    }

    /// The bytes of the objects that the `del` records remove (the caller
    /// drops those objects once the records are journaled).
    fn frees(&self, j: &Journal, records: &[Record]) -> u64 {
        let mut freed = 0u64;
        for r in records {
            let Record::Del { path } = r else { continue };
            let Some(ino) = j.mirror.lookup_path(path) else {
                continue;
            };
            for i in j.mirror.subtree(ino) {
                // A file with other names keeps its object.
                let file = j.mirror.inode_of(i);
                if j.mirror.nlink(file) > 1 {
                    continue;
                }
                if let Some(Origin::Upper(o)) = j.mirror.get(i).map(|n| &n.origin) {
                    freed = freed.saturating_add(self.quota.object_bytes(*o));
                }
            }
        }
        freed
    }

    fn uncharge(&self, n: u64) {
        let _ = self.quota.rebase_journal(n, 0, 0);
    }

    fn lock_journal(&self) -> std::sync::MutexGuard<'_, Journal> {
        self.journal.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What the journal holds about a host path seen (for a caller whose
    /// records were refused, to forget what it noted ahead of them).
    pub fn journaled_seen(&self, path: &str) -> Option<journal::Seen> {
        self.lock_journal().seen.get(path).cloned()
    }

    /// The journal's length on disk, and its length after the last compaction.
    pub fn journal_len(&self) -> (u64, u64) {
        let j = self.lock_journal();
        (j.len, j.compacted)
    }

    pub fn sync(&self) -> io::Result<()> {
        let mut j = self.lock_journal();
        if j.renamed {
            sync_dir(&self.dir)?;
            j.renamed = false;
        }
        j.file.sync_data()
    }

    /// Makes object `obj`'s name durable: fsyncs its fanout directory,
    /// once per object (an fsync of the file alone need not persist the
    /// entry that names it).
    pub fn sync_entry(&self, obj: u64) -> io::Result<()> {
        let lock = || {
            self.entries_synced
                .lock()
                .unwrap_or_else(|p| p.into_inner())
        };
        if lock().contains(&obj) {
            return Ok(());
        }
        let dir = rfs::openat(
            &self.objects,
            format!("{:02x}", obj % FANOUT),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            RMode::empty(),
        )?;
        rfs::fsync(&dir)?;
        lock().insert(obj);
        Ok(())
    }

    pub fn create_file(&self, obj: u64, mode: u32) -> io::Result<File> {
        let fd = rfs::openat(
            &self.objects,
            name(obj),
            OFlags::RDWR | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC,
            RMode::from_raw_mode(mode & 0o7777),
        )?;
        Ok(File::from(fd))
    }

    pub fn open_file(&self, obj: u64, write: bool) -> io::Result<File> {
        let acc = if write { OFlags::RDWR } else { OFlags::RDONLY };
        let fd = rfs::openat(
            &self.objects,
            name(obj),
            acc | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            RMode::empty(),
        )?;
        Ok(File::from(fd))
    }

    pub fn mkdir(&self, obj: u64, mode: u32) -> io::Result<()> {
        Ok(rfs::mkdirat(
            &self.objects,
            name(obj),
            RMode::from_raw_mode(mode & 0o7777),
        )?)
    }

    /// Makes a symlink object; its target counts against the byte quota.
    pub fn symlink(&self, obj: u64, target: &[u8]) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let n = target.len() as u64;
        self.quota.add_extra(obj, n).map_err(edquot)?;
        rfs::symlinkat(
            std::ffi::OsStr::from_bytes(target),
            &self.objects,
            name(obj),
        )
        .inspect_err(|_| self.quota.sub_extra(obj, n))?;
        Ok(())
    }

    /// Sets a user xattr on an object; names and values count against the
    /// byte quota (a loop of setxattr calls cannot grow the state dir
    /// past it).
    pub fn setxattr(&self, obj: u64, name: &str, value: &[u8], flags: i32) -> io::Result<()> {
        let _one = self.xattrs.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(obj);
        let old = match xattr_len(&path, name) {
            Ok(len) => name.len() + len,
            Err(rustix::io::Errno::NODATA) => 0,
            Err(e) => return Err(e.into()),
        } as u64;
        let new = (name.len() + value.len()) as u64;
        if new > old {
            self.quota.add_extra(obj, new - old).map_err(edquot)?;
        }
        let flags = rfs::XattrFlags::from_bits_retain(flags as _);
        if let Err(e) = rfs::lsetxattr(&path, name, value, flags) {
            if new > old {
                self.quota.sub_extra(obj, new - old);
            }
            return Err(e.into());
        }
        if new < old {
            self.quota.sub_extra(obj, old - new);
        }
        Ok(())
    }

    pub fn removexattr(&self, obj: u64, name: &str) -> io::Result<()> {
        let _one = self.xattrs.lock().unwrap_or_else(|p| p.into_inner());
        let path = self.path(obj);
        let old = xattr_len(&path, name).map(|len| name.len() + len);
        rfs::lremovexattr(&path, name)?;
        if let Ok(old) = old {
            self.quota.sub_extra(obj, old as u64);
        }
        Ok(())
    }

    /// What an object's metadata counts at mount: its symlink target, its
    /// user xattrs (those copied up from the host included).
    fn extra_bytes(&self, obj: u64, kind: Kind) -> u64 {
        let path = self.path(obj);
        let mut n = match kind {
            Kind::Symlink => self.stat(obj).map_or(0, |s| s.st_size as u64),
            _ => 0,
        };
        // The size first: most objects have no xattrs, and then that one
        // call is all (a 64 KiB buffer per object cost 3 µs to zero, each).
        let size = xattr_size_query(&path, None).unwrap_or(0);
        if size == 0 {
            return n;
        }
        let mut names = vec![0u8; size];
        if let Ok(len) = rfs::llistxattr(&path, &mut names[..]) {
            for x in names[..len.min(names.len())].split(|b| *b == 0) {
                // Only user.* xattrs are ever set or copied up.
                let Some(x) = std::str::from_utf8(x)
                    .ok()
                    .filter(|x| x.starts_with("user."))
                else {
                    continue;
                };
                if let Ok(v) = xattr_len(&path, x) {
                    n += (x.len() + v) as u64;
                }
            }
        }
        n
    }

    pub fn readlink(&self, obj: u64) -> io::Result<Vec<u8>> {
        Ok(rfs::readlinkat(&self.objects, name(obj), Vec::new())?.into_bytes())
    }

    pub fn remove(&self, obj: u64, kind: Kind) -> io::Result<()> {
        let flags = if kind == Kind::Dir {
            AtFlags::REMOVEDIR
        } else {
            AtFlags::empty()
        };
        rfs::unlinkat(&self.objects, name(obj), flags)?;
        self.quota.remove_object(obj);
        self.entries_synced
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&obj);
        Ok(())
    }

    pub fn stat(&self, obj: u64) -> io::Result<Stat> {
        Ok(rfs::statat(
            &self.objects,
            name(obj),
            AtFlags::SYMLINK_NOFOLLOW,
        )?)
    }

    /// The object's path, for the xattr and metadata calls that need one.
    /// The state dir is outside every view, so this path is trusted.
    pub fn path(&self, obj: u64) -> PathBuf {
        self.dir.join("objects").join(name(obj))
    }

    /// The object's name relative to `objects_fd()`, for *at calls.
    pub fn name(obj: u64) -> String {
        name(obj)
    }

    pub fn objects_fd(&self) -> &OwnedFd {
        &self.objects
    }
}

impl Journal {
    /// Applies appended records to the mirror.
    fn apply(&mut self, records: &[Record]) {
        if self.broken {
            return;
        }
        for r in records {
            if let Err(e) = journal::apply(&mut self.mirror, &mut self.seen, r) {
                tracing::warn!(
                    "overlay journal record does not apply ({e}); online compaction is off"
                );
                self.broken = true;
                return;
            }
        }
    }
}

/// The length of an xattr's value (a size query: nothing is read).
fn xattr_len(path: &Path, name: &str) -> rustix::io::Result<usize> {
    xattr_size_query(path, Some(name))
}

/// `lgetxattr` (or, without a name, `llistxattr`) asked only for the size
/// (rustix's buffer calls answer how much they filled, 0 for an empty one).
fn xattr_size_query(path: &Path, name: Option<&str>) -> rustix::io::Result<usize> {
    use std::os::unix::ffi::OsStrExt;
    let c = |b: &[u8]| std::ffi::CString::new(b).map_err(|_| rustix::io::Errno::INVAL);
    let p = c(path.as_os_str().as_bytes())?;
    // SAFETY: both strings are NUL-terminated and outlive the call; a null
    // buffer of size 0 asks the kernel only for the size.
    let n = unsafe {
        match name {
            Some(name) => {
                let name = c(name.as_bytes())?;
                libc::lgetxattr(p.as_ptr(), name.as_ptr(), std::ptr::null_mut(), 0)
            }
            None => libc::llistxattr(p.as_ptr(), std::ptr::null_mut(), 0),
        }
    };
    if n < 0 {
        return Err(rustix::io::Errno::from_raw_os_error(
            std::io::Error::last_os_error()
                .raw_os_error()
                .unwrap_or(libc::EIO),
        ));
    }
    Ok(n as usize)
}

fn edquot(e: crate::error::Errno) -> io::Error {
    io::Error::from_raw_os_error(e.0)
}

/// The temp file of a journal rewrite, beside the journal.
const JOURNAL_TMP: &str = "journal.jsonl.tmp";

/// Replaces the journal in `dir` atomically with `text`: a temp file,
/// fsync, rename over the journal. Returns the new journal open for
/// appending. A crash at any point leaves the old journal or the new one,
/// whole (and perhaps the temp file, removed at mount). The rename is made
/// durable by the next `Overlay::sync` (a machine crash before it may bring
/// back the old journal, which is whole too, and lacks only appends that no
/// fsync promised).
fn write_journal(dir: &Path, text: &[u8]) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(JOURNAL_TMP);
    let _ = std::fs::remove_file(&tmp);
    let made = (|| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(text)?;
        f.sync_data()?;
        std::fs::rename(&tmp, dir.join("journal.jsonl"))?;
        Ok(f)
    })();
    if made.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    made
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Records as journal lines.
fn serialize_io(records: &[Record]) -> io::Result<Vec<u8>> {
    let mut buf = Vec::with_capacity(128 * records.len());
    for r in records {
        serde_json::to_writer(&mut buf, r).map_err(io::Error::other)?;
        buf.push(b'\n');
    }
    Ok(buf)
}

fn serialize(records: &[Record]) -> Result<Vec<u8>> {
    serialize_io(records).map_err(|e| Error::invalid(e.to_string()))
}

/// A copy of `t`'s live nodes (tombstones left out, so numbers change).
fn copy_tree(t: &Tree) -> Tree {
    let mut out = Tree::from_files(&[]);
    if let Some(root) = t.get(ROOT) {
        out.set_origin(ROOT, root.origin.clone());
    }
    let mut map = std::collections::HashMap::from([(ROOT, ROOT)]);
    for ino in t.subtree(ROOT).into_iter().skip(1) {
        let Some(n) = t.get(ino) else { continue };
        let Some(&parent) = map.get(&n.parent) else {
            continue;
        };
        // A file's names share its object: the first one copied is the file.
        let file = match n.origin {
            Origin::Upper(o) => out.holder(o),
            _ => None,
        };
        let made = match file {
            Some(f) => out.link(f, parent, &n.name),
            None => out.insert(parent, &n.name, n.kind, n.origin.clone()),
        };
        if let Some(new) = made {
            map.insert(ino, new);
        }
    }
    out
}

/// Reads a session's changes without changing anything (the daemon may be
/// writing meanwhile) onto `tree`, built from `grant`'s files: the view's
/// tree, the seen records, and where the objects are. A FUSE session's
/// journal is replayed; a kernel session's upper directory is read
/// (`kernel.rs`), its image mounted for as long as the objects are held.
pub fn inspect(
    grant: &crate::grant::Grant,
    session_dir: &Path,
    tree: &mut Tree,
) -> Result<(SeenMap, Objects)> {
    if let Some(upper) = engine::open_upper(session_dir)? {
        let host = crate::host::HostRoot::open(&grant.root)
            .ctx(|| format!("host tree {}", grant.root.display()))?;
        let mut read = kernel::read_upper(&upper.upper, upper.ns, &host, tree)?;
        kernel::add_vouched(session_dir, &host, &mut read.seen);
        return Ok((read.seen, Objects::kernel(upper, read.rels)));
    }
    let dir = session_dir.join("overlay");
    let mut seen = SeenMap::new();
    replay(&dir.join("journal.jsonl"), tree, &mut seen)?;
    Ok((seen, Objects::fuse(dir.join("objects"))))
}

/// As [`inspect`], for a copy of the session's layer at `layer` (a
/// checkpoint's): the FUSE engine's overlay directory, or the kernel
/// engine's upper directory, as the session's engine record says.
pub fn inspect_saved(
    grant: &crate::grant::Grant,
    session_dir: &Path,
    layer: &Path,
    tree: &mut Tree,
) -> Result<(SeenMap, Objects)> {
    match engine::record(session_dir)? {
        Some(rec) if rec.engine == engine::Engine::Kernel => {
            let ns = rec.xattrs.unwrap_or(engine::XattrNs::Trusted);
            let host = crate::host::HostRoot::open(&grant.root)
                .ctx(|| format!("host tree {}", grant.root.display()))?;
            let mut read = kernel::read_upper(layer, ns, &host, tree)?;
            kernel::add_vouched(session_dir, &host, &mut read.seen);
            let upper = engine::ReadableUpper::plain(layer.to_path_buf(), ns);
            Ok((read.seen, Objects::kernel(upper, read.rels)))
        }
        _ => {
            let mut seen = SeenMap::new();
            replay(&layer.join("journal.jsonl"), tree, &mut seen)?;
            Ok((seen, Objects::fuse(layer.join("objects"))))
        }
    }
}

/// The path of object `obj` under an objects directory.
pub fn object_path(objects: &Path, obj: u64) -> PathBuf {
    objects.join(name(obj))
}

/// An object's path relative to the objects directory.
pub fn object_rel(obj: u64) -> String {
    name(obj)
}

/// Replays the journal at `path` onto `tree`. A torn last line (a crash
/// in the middle of an append) is ignored; damage anywhere else is an error.
fn replay(path: &Path, tree: &mut Tree, seen: &mut SeenMap) -> Result<()> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let lines: Vec<String> = io::BufReader::new(file)
        .lines()
        .collect::<io::Result<_>>()
        .ctx(|| format!("reading {}", path.display()))?;
    let last = lines.len();
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let rec: Record = match serde_json::from_str(line) {
            Ok(r) => r,
            Err(_) if i + 1 == last => {
                tracing::warn!(line = i + 1, "ignoring a torn last journal line");
                break;
            }
            Err(e) => {
                return Err(Error::invalid(format!(
                    "overlay journal {} is damaged at line {}: {e}",
                    path.display(),
                    i + 1
                )))
            }
        };
        journal::apply(tree, seen, &rec).map_err(|e| {
            Error::invalid(format!(
                "overlay journal {} does not fit the grant at line {}: {e}",
                path.display(),
                i + 1
            ))
        })?;
    }
    Ok(())
}
