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
//! file or directory also fsyncs the journal. An object created just before
//! a crash but not yet journaled is an orphan and is deleted at the next mount.

pub mod journal;
pub mod quota;

use std::fs::File;
use std::io::{self, BufRead, Write};
use std::os::fd::OwnedFd;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::fs::{self as rfs, AtFlags, Mode as RMode, OFlags, Stat};

use crate::error::{Error, IoContext, Result};
use crate::view::tree::{Kind, Origin, Tree, ROOT};
use journal::{Record, SeenMap};
use quota::Quota;

pub struct Overlay {
    dir: PathBuf,
    objects: OwnedFd,
    journal: Mutex<File>,
    next_obj: AtomicU64,
    pub quota: Quota,
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
        let mut seen = SeenMap::new();
        replay(&journal_path, tree, &mut seen)?;

        // Compact: rewrite the journal as the shortest equivalent list.
        let records = journal::compact(base, tree, &seen);
        let mut text = Vec::new();
        for r in &records {
            serde_json::to_writer(&mut text, r).map_err(|e| Error::invalid(e.to_string()))?;
            text.push(b'\n');
        }
        crate::state::write_atomic(&journal_path, &text)?;
        let journal = std::fs::OpenOptions::new()
            .append(true)
            .open(&journal_path)
            .ctx(|| format!("opening {}", journal_path.display()))?;

        let overlay = Overlay {
            dir,
            objects,
            journal: Mutex::new(journal),
            next_obj: AtomicU64::new(1),
            quota: Quota::new(max_bytes, max_objects),
        };
        overlay.collect_garbage(tree)?;
        Ok((overlay, seen))
    }

    /// Deletes unreferenced objects, accounts the referenced ones, and
    /// starts numbering after the highest object seen.
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
        for entry in std::fs::read_dir(&dir).ctx(|| format!("listing {}", dir.display()))? {
            let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
            let Some(obj) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u64>().ok())
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
        for (obj, kind) in referenced {
            max = max.max(obj);
            let size = match kind {
                Kind::File => self.stat(obj).map(|s| s.st_size as u64).unwrap_or(0),
                _ => 0,
            };
            self.quota.restore_object(obj, size, kind == Kind::File);
        }
        self.next_obj.store(max + 1, Ordering::Relaxed);
        Ok(())
    }

    pub fn new_obj(&self) -> u64 {
        self.next_obj.fetch_add(1, Ordering::Relaxed)
    }

    /// Appends records to the journal in one write.
    pub fn append(&self, records: &[Record]) -> io::Result<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut buf = Vec::with_capacity(128 * records.len());
        for r in records {
            serde_json::to_writer(&mut buf, r).map_err(io::Error::other)?;
            buf.push(b'\n');
        }
        let mut j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        j.write_all(&buf)
    }

    pub fn sync(&self) -> io::Result<()> {
        let j = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        j.sync_data()
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

    pub fn symlink(&self, obj: u64, target: &[u8]) -> io::Result<()> {
        use std::os::unix::ffi::OsStrExt;
        Ok(rfs::symlinkat(
            std::ffi::OsStr::from_bytes(target),
            &self.objects,
            name(obj),
        )?)
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

/// Reads a session's overlay without changing anything (the daemon may be
/// appending meanwhile): the view's tree, the seen records, and a way to
/// stat objects.
pub fn inspect(session_dir: &Path, tree: &mut Tree) -> Result<(SeenMap, PathBuf)> {
    let dir = session_dir.join("overlay");
    let mut seen = SeenMap::new();
    replay(&dir.join("journal.jsonl"), tree, &mut seen)?;
    Ok((seen, dir.join("objects")))
}

/// The path of object `obj` under an objects directory.
pub fn object_path(objects: &Path, obj: u64) -> PathBuf {
    objects.join(name(obj))
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
