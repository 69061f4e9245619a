//! The kernel engine's upper directory read back as the view's tree, so
//! that `patch::changes` and everything after it (diff, export, commit)
//! work on a kernel session unchanged. See docs/design/kernel-engine.md §3
//! (what overlayfs leaves in the upper) and §4 (bases).
//!
//! The upper is walked in sorted order, parents first, and applied to the
//! grant's tree:
//!
//! - a whiteout (a 0/0 character device, whatever its link count: all
//!   whiteouts are links of one inode; or an empty regular file with
//!   `<ns>.overlay.whiteout`) removes the node and its subtree;
//! - a directory with `<ns>.overlay.opaque` = `y` hides every child of the
//!   grant that it does not hold itself (the upper's root never counts as
//!   opaque: overlayfs ignores the mark there);
//! - a regular file or symlink is an object (`Origin::Upper`); regular
//!   files sharing an inode (nlink > 1) are one file with several names;
//! - a directory where the grant has none is created (over a file, it
//!   replaces it).
//!
//! Only the session's own namespace counts (`trusted.overlay.` as root):
//! a `user.overlay.opaque` in a trusted layer, or an escaped
//! `<ns>.overlay.overlay.*` name, is the agent's own xattr. Devices, FIFOs,
//! sockets and names that are not UTF-8 are refused by path, all of them in
//! one error after the whole walk: no patch set may carry one, and the
//! approver (or the agent, removing them in the view) sees every one at
//! once instead of one per try. A copy-up that changed nothing (touch,
//! chmod to the same mode, an open for writing that wrote nothing) is no
//! change.
//!
//! Entries are opened beneath the upper, never through a symlink
//! (`HostRoot`), so an upper changed while it is read cannot lead out.
//!
//! **Bases.** A host path the upper replaces or hides has as base the host
//! content now iff the host entry's ctime is strictly before the birth time
//! of the upper entry that covers it (the copy-up, the new file, the
//! whiteout, the opaque directory): copy-up creates its file before it
//! reads the host, so a host change during or after it is a conflict.
//! Otherwise, or without a birth time, the base is unknown, which the
//! commit treats as a conflict unless the host already holds the result.
//! The bases are left to `patch::set::base_of` as `seen` fingerprints
//! taken now, so only what is built into a set is hashed.

use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, Statx, StatxFlags};
use rustix::io::Errno;

use super::engine::XattrNs;
use super::journal::{Seen, SeenMap};
use crate::error::{Error, Result};
use crate::host::HostRoot;
use crate::tree::{Ino, Kind, Origin, Tree, ROOT};

/// What reading an upper directory gave, besides the changes to the tree.
#[derive(Debug, Default)]
pub struct UpperRead {
    /// Fingerprints of the host paths whose base is known (see the module doc).
    pub seen: SeenMap,
    /// Object → its path in the upper.
    pub rels: HashMap<u64, String>,
}

/// A birth time: seconds and nanoseconds.
type Btime = (i64, u32);

/// Applies the upper directory at `upper` (made in namespace `ns`) to
/// `fin`, the grant's tree. `host` is the grant's host tree, read for
/// no-op copy-ups and bases. An upper that does not exist holds nothing.
pub fn read_upper(upper: &Path, ns: XattrNs, host: &HostRoot, fin: &mut Tree) -> Result<UpperRead> {
    let dir = match HostRoot::open(upper) {
        Ok(d) => d,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(UpperRead::default()),
        Err(e) => return Err(Error::io(format!("opening {}", upper.display()), e)),
    };
    let mut r = Reader {
        upper: dir,
        shown: upper,
        ns,
        fin,
        rels: HashMap::new(),
        inodes: HashMap::new(),
        touched: BTreeMap::new(),
        copied: Vec::new(),
        unfit: Vec::new(),
    };
    r.walk()?;
    if !r.unfit.is_empty() {
        r.unfit.sort();
        return Err(r.unfit_error());
    }
    r.drop_no_ops(host);
    let seen = r.bases(host);
    Ok(UpperRead { seen, rels: r.rels })
}

struct Reader<'a> {
    upper: HostRoot,
    shown: &'a Path,
    ns: XattrNs,
    fin: &'a mut Tree,
    rels: HashMap<u64, String>,
    /// (dev, ino) of regular files with several links → the file's node.
    inodes: HashMap<(u32, u32, u64), Ino>,
    /// Grant paths (files and symlinks) the upper replaces or hides → the
    /// birth time of the upper entry that does.
    touched: BTreeMap<String, Option<Btime>>,
    /// Objects put over a grant entry of the same kind: perhaps no-ops.
    copied: Vec<u64>,
    /// Entries no patch set can carry: (path, what it is).
    unfit: Vec<(String, &'static str)>,
}

/// How many unfit entries an error names (the rest are counted).
const UNFIT_SHOWN: usize = 20;

/// A directory still to list.
struct Dir {
    rel: String,
    ino: Ino,
    btime: Option<Btime>,
    /// Beneath an opaque directory born at this time (or unknown): the
    /// lower is not merged here, whatever this directory's own marks.
    hidden: Option<Option<Btime>>,
}

/// The earlier of two birth times; unknown if either is.
fn earliest(a: Option<Btime>, b: Option<Btime>) -> Option<Btime> {
    Some(a?.min(b?))
}

enum Entry {
    Whiteout,
    Dir,
    File,
    Symlink,
    /// A device, FIFO or socket (what it is, for the error).
    Unfit(&'static str),
}

/// What the error calls a name that is not UTF-8.
const NOT_UTF8: &str = "a name that is not UTF-8";

impl Reader<'_> {
    fn err(&self, rel: &str, what: &str, e: impl Into<std::io::Error>) -> Error {
        Error::io(
            format!(
                "{what} {rel:?} in the kernel engine's upper layer {}",
                self.shown.display()
            ),
            e.into(),
        )
    }

    fn walk(&mut self) -> Result<()> {
        let mut todo = vec![Dir {
            rel: String::new(),
            ino: ROOT,
            btime: None,
            hidden: None,
        }];
        while let Some(d) = todo.pop() {
            // An upper read while the view is mounted may lose entries
            // meanwhile (a commit never reads one that is mounted).
            let fd = match self.upper.open_dir(&d.rel) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !d.rel.is_empty() => continue,
                r => r.map_err(|e| self.err(&d.rel, "opening", e))?,
            };
            let names = self.list(&fd, &d.rel)?;
            // Opacity is inherited: beneath an opaque directory everything
            // is the upper's alone, a directory of the lower's name too.
            let hidden = d.hidden.or_else(|| {
                let opaque = !d.rel.is_empty() && self.xattr_is(&fd, "opaque", b"y");
                opaque.then_some(d.btime)
            });
            if let Some(since) = hidden {
                self.hide_others(d.ino, &names, since);
            }
            let mut subdirs = Vec::new();
            for name in &names {
                let rel = crate::paths::join(&d.rel, name);
                let st = match rfs::statx(
                    &fd,
                    name.as_str(),
                    AtFlags::SYMLINK_NOFOLLOW,
                    StatxFlags::BASIC_STATS | StatxFlags::BTIME,
                ) {
                    Err(Errno::NOENT) => continue,
                    r => r.map_err(|e| self.err(&rel, "reading", e))?,
                };
                let born = (st.stx_mask & StatxFlags::BTIME.bits() != 0)
                    .then_some((st.stx_btime.tv_sec, st.stx_btime.tv_nsec));
                // What an opaque directory hid went when it was born.
                let btime = hidden.map_or(born, |since| earliest(born, since));
                match self.entry(&fd, name, &rel, &st)? {
                    Entry::Whiteout => {
                        if let Some(e) = self.fin.child(d.ino, name) {
                            self.hide(e, btime);
                        }
                    }
                    Entry::Dir => {
                        let ino = self.dir(d.ino, name, &rel, btime)?;
                        subdirs.push(Dir {
                            rel,
                            ino,
                            btime,
                            hidden,
                        });
                    }
                    Entry::File => self.file(d.ino, name, rel, &st, btime)?,
                    Entry::Symlink => {
                        self.leaf(d.ino, name, rel, Kind::Symlink, btime)?;
                    }
                    Entry::Unfit(what) => self.unfit.push((rel, what)),
                }
            }
            // Popped in sorted order.
            todo.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// The names in a directory, sorted. A name that is not UTF-8 cannot
    /// be a patch's path: it is noted as unfit (lossily) and left out.
    fn list(&mut self, fd: &OwnedFd, rel: &str) -> Result<Vec<String>> {
        let mut names = Vec::new();
        let dir = rfs::Dir::read_from(fd).map_err(|e| self.err(rel, "listing", e))?;
        for entry in dir {
            let entry = entry.map_err(|e| self.err(rel, "listing", e))?;
            let bytes = entry.file_name().to_bytes();
            if bytes == b"." || bytes == b".." {
                continue;
            }
            match std::str::from_utf8(bytes) {
                Ok(name) => names.push(name.to_string()),
                Err(_) => {
                    let lossy = String::from_utf8_lossy(bytes);
                    self.unfit.push((crate::paths::join(rel, &lossy), NOT_UTF8));
                }
            }
        }
        names.sort();
        Ok(names)
    }

    /// One error naming every entry no patch set can carry, what each is,
    /// and how to be rid of them.
    fn unfit_error(&self) -> Error {
        let n = self.unfit.len();
        let mut list: Vec<String> = self
            .unfit
            .iter()
            .take(UNFIT_SHOWN)
            .map(|(rel, what)| format!("{rel} ({what})"))
            .collect();
        if n > UNFIT_SHOWN {
            list.push(format!("and {} more", n - UNFIT_SHOWN));
        }
        let (what, it) = match n {
            1 => ("an entry".to_string(), "it"),
            _ => (format!("{n} entries"), "them"),
        };
        let rename = if self.unfit.iter().any(|(_, w)| *w == NOT_UTF8) {
            " (or rename, for a name that is not UTF-8)"
        } else {
            ""
        };
        Error::invalid(format!(
            "the view holds {what} that cannot be committed, as a patch set carries only regular files, directories and symlinks with UTF-8 names: {}; remove {it} in the view{rename}, or reject the session (kernel engine upper layer {})",
            list.join(", "),
            self.shown.display()
        ))
    }

    /// Whether the open file or directory has `<ns>.overlay.<name>` = `want`
    /// (any value when `want` is empty).
    fn xattr_is(&self, fd: &OwnedFd, name: &str, want: &[u8]) -> bool {
        let mut buf = [0u8; 16];
        let full = format!("{}{name}", self.ns.prefix());
        match rfs::fgetxattr(fd, full.as_str(), &mut buf[..]) {
            Ok(n) => want.is_empty() || buf.get(..n) == Some(want),
            // A longer value is not `want` either, but is there.
            Err(Errno::RANGE) => want.is_empty(),
            Err(_) => false,
        }
    }

    fn entry(&self, dir: &OwnedFd, name: &str, rel: &str, st: &Statx) -> Result<Entry> {
        let mode = u32::from(st.stx_mode);
        Ok(match FileType::from_raw_mode(mode) {
            FileType::Directory => Entry::Dir,
            FileType::Symlink => Entry::Symlink,
            FileType::CharacterDevice if (st.stx_rdev_major, st.stx_rdev_minor) == (0, 0) => {
                Entry::Whiteout
            }
            FileType::RegularFile if st.stx_size == 0 && self.xattr_whiteout(dir, name, rel)? => {
                Entry::Whiteout
            }
            FileType::RegularFile => Entry::File,
            FileType::CharacterDevice => Entry::Unfit("a character device"),
            FileType::BlockDevice => Entry::Unfit("a block device"),
            FileType::Fifo => Entry::Unfit("a FIFO"),
            FileType::Socket => Entry::Unfit("a socket"),
            _ => Entry::Unfit("a file of an unknown type"),
        })
    }

    /// An empty regular file marked `<ns>.overlay.whiteout`.
    fn xattr_whiteout(&self, dir: &OwnedFd, name: &str, rel: &str) -> Result<bool> {
        let fd = rfs::openat(
            dir,
            name,
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| self.err(rel, "opening", e))?;
        Ok(self.xattr_is(&fd, "whiteout", b""))
    }

    /// Numbers an upper entry as an object.
    fn object(&mut self, rel: String) -> u64 {
        let obj = self.rels.len() as u64 + 1;
        self.rels.insert(obj, rel);
        obj
    }

    /// Removes `ino` and its subtree, noting the grant's files and
    /// symlinks in it as covered by an entry born at `btime`.
    fn hide(&mut self, ino: Ino, btime: Option<Btime>) {
        for i in self.fin.subtree(ino) {
            let content = self.fin.get(i).is_some_and(|n| n.kind != Kind::Dir);
            if let (true, Some(path)) = (content, self.fin.path(i)) {
                self.touched.entry(path).or_insert(btime);
            }
        }
        self.fin.remove(ino);
    }

    /// An opaque directory: the grant's children it does not hold are gone.
    fn hide_others(&mut self, dir: Ino, names: &[String], btime: Option<Btime>) {
        let children = self
            .fin
            .get(dir)
            .map(|n| n.children.clone())
            .unwrap_or_default();
        for c in children {
            let held = self
                .fin
                .get(c)
                .is_some_and(|n| names.binary_search_by(|x| x.as_str().cmp(&n.name)).is_ok());
            if !held {
                self.hide(c, btime);
            }
        }
    }

    fn insert(&mut self, parent: Ino, name: &str, kind: Kind, obj: u64) -> Result<Ino> {
        self.fin
            .insert(parent, name, kind, Origin::Upper(obj))
            .ok_or_else(|| self.misfit(obj))
    }

    fn misfit(&self, obj: u64) -> Error {
        let rel = self.rels.get(&obj).map_or("?", String::as_str);
        Error::invalid(format!(
            "{rel} in the kernel engine's upper layer {} does not fit the view's tree",
            self.shown.display()
        ))
    }

    /// A directory: the grant's, or a new one (over a file, replacing it).
    fn dir(&mut self, parent: Ino, name: &str, rel: &str, btime: Option<Btime>) -> Result<Ino> {
        if let Some(e) = self.fin.child(parent, name) {
            if self.fin.get(e).is_some_and(|n| n.kind == Kind::Dir) {
                return Ok(e);
            }
            self.hide(e, btime);
        }
        let obj = self.object(rel.to_string());
        self.insert(parent, name, Kind::Dir, obj)
    }

    /// A regular file: another name of a file met already, or a new object.
    fn file(
        &mut self,
        parent: Ino,
        name: &str,
        rel: String,
        st: &Statx,
        btime: Option<Btime>,
    ) -> Result<()> {
        let key = (st.stx_dev_major, st.stx_dev_minor, st.stx_ino);
        if st.stx_nlink > 1 {
            if let Some(&file) = self.inodes.get(&key) {
                self.cover(parent, name, btime);
                return self
                    .fin
                    .link(file, parent, name)
                    .map(drop)
                    .ok_or_else(|| Error::invalid(format!("{rel}: cannot add it as a hard link")));
            }
        }
        let ino = self.leaf(parent, name, rel, Kind::File, btime)?;
        if st.stx_nlink > 1 {
            self.inodes.insert(key, ino);
        }
        Ok(())
    }

    /// Whatever the grant has at `parent/name` is covered by a new entry.
    fn cover(&mut self, parent: Ino, name: &str, btime: Option<Btime>) {
        if let Some(e) = self.fin.child(parent, name) {
            self.hide(e, btime);
        }
    }

    /// A file or symlink object at `parent/name`: over the grant's entry of
    /// the same kind (a copy-up, perhaps a no-op), or a new node.
    fn leaf(
        &mut self,
        parent: Ino,
        name: &str,
        rel: String,
        kind: Kind,
        btime: Option<Btime>,
    ) -> Result<Ino> {
        let obj = self.object(rel);
        let same = self
            .fin
            .child(parent, name)
            .filter(|e| self.fin.get(*e).is_some_and(|n| n.kind == kind));
        if let Some(e) = same {
            if let Some(path) = self.fin.path(e) {
                self.touched.entry(path).or_insert(btime);
            }
            self.fin.set_origin(e, Origin::Upper(obj));
            self.copied.push(obj);
            return Ok(e);
        }
        self.cover(parent, name, btime);
        self.insert(parent, name, kind, obj)
    }

    /// Copy-ups that changed nothing (same kind, mode, size and content as
    /// the host entry) are the host entry again. A file with several names
    /// is a change whatever its content: the names are.
    fn drop_no_ops(&mut self, host: &HostRoot) {
        for obj in std::mem::take(&mut self.copied) {
            let Some(ino) = self.fin.holder(obj) else {
                continue;
            };
            if self.fin.nlink(ino) > 1 {
                continue;
            }
            let (Some(n), Some(rel)) = (self.fin.get(ino), self.rels.get(&obj)) else {
                continue;
            };
            if same_as_host(host, &self.upper, rel, n.kind).unwrap_or(false) {
                self.fin.set_origin(ino, Origin::InPlace);
                self.rels.remove(&obj);
            }
        }
    }

    /// The fingerprints of the covered host paths whose base is known: the
    /// host entry changed strictly before the upper entry covering it was
    /// born.
    fn bases(&self, host: &HostRoot) -> SeenMap {
        let mut seen = SeenMap::new();
        for (path, btime) in &self.touched {
            let unchanged = self
                .fin
                .lookup_path(path)
                .and_then(|i| self.fin.get(i))
                .is_some_and(|n| n.origin == Origin::InPlace);
            let (false, Some(btime), Ok(st)) = (unchanged, btime, host.lstat(path)) else {
                continue;
            };
            let kind = match FileType::from_raw_mode(st.st_mode) {
                FileType::RegularFile => Kind::File,
                FileType::Symlink => Kind::Symlink,
                _ => continue,
            };
            let ctime = (st.st_ctime, st.st_ctime_nsec as u32);
            if ctime >= *btime {
                continue;
            }
            let mtime_ns = st
                .st_mtime
                .saturating_mul(1_000_000_000)
                .saturating_add(st.st_mtime_nsec as i64);
            seen.insert(
                path.clone(),
                Seen {
                    path: path.clone(),
                    kind,
                    size: st.st_size as u64,
                    mtime_ns,
                    ino: st.st_ino,
                    mode: st.st_mode,
                    base: None,
                },
            );
        }
        seen
    }
}

/// Whether a directory above `rel` in the upper (its root aside) is opaque
/// in namespace `ns`: removing the entry at `rel` would then show nothing
/// instead of the lower's entry. Unreadable counts as opaque.
pub fn opaque_above(upper: &HostRoot, ns: XattrNs, rel: &str) -> bool {
    let name = format!("{}opaque", ns.prefix());
    crate::paths::ancestors(rel).any(|a| {
        let mut buf = [0u8; 16];
        match upper.open_dir(a) {
            Ok(fd) => match rfs::fgetxattr(&fd, name.as_str(), &mut buf[..]) {
                Ok(n) => buf.get(..n) == Some(&b"y"[..]),
                Err(e) => e != Errno::NODATA,
            },
            Err(_) => true,
        }
    })
}

/// Whether the upper entry at `rel` holds what the host has at `rel`: the
/// same symlink target, or a regular file of the same mode, size and bytes.
fn same_as_host(host: &HostRoot, upper: &HostRoot, rel: &str, kind: Kind) -> std::io::Result<bool> {
    if kind == Kind::Symlink {
        return Ok(host.lstat(rel)?.st_mode & libc::S_IFMT == libc::S_IFLNK
            && host.readlink(rel)? == upper.readlink(rel)?);
    }
    let (h, u) = (host.lstat(rel)?, upper.lstat(rel)?);
    let mode = |m: u32| m & (libc::S_IFMT | 0o7777);
    if mode(h.st_mode) != mode(u.st_mode) || h.st_size != u.st_size {
        return Ok(false);
    }
    same_bytes(host.open_file(rel)?, upper.open_file(rel)?)
}

/// Whether two readers give the same bytes.
fn same_bytes(mut a: impl Read, mut b: impl Read) -> std::io::Result<bool> {
    let (mut x, mut y) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut a, &mut x)?;
        let m = read_full(&mut b, &mut y)?;
        if x[..n] != y[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

/// Reads until `buf` is full or the end.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// `kernel/vouched.json`: host files a rolled-back commit put back, with
/// the inode, ctime and content they had once back. Putting a file back
/// (a rename) gives it a new ctime, after the upper entries covering it
/// were born, so the rule above would call its base unknown and the
/// session could never be committed again; the rollback vouches for the
/// content instead, and only while the host file is that same file
/// untouched (same inode and ctime).
const VOUCHED: &str = "vouched.json";

#[derive(serde::Serialize, serde::Deserialize)]
struct Vouched {
    path: String,
    ino: u64,
    ctime: (i64, u32),
    base: String,
}

/// Records the bases of `restored` (path, the hash of what the host holds
/// there now, checked by the caller): called after a rollback.
pub fn vouch_restored(
    session_dir: &Path,
    host: &HostRoot,
    restored: &[(String, String)],
) -> Result<()> {
    let dir = super::engine::kernel_dir(session_dir);
    if !dir.is_dir() {
        return Ok(());
    }
    let path = dir.join(VOUCHED);
    let mut all: Vec<Vouched> = std::fs::read(&path)
        .ok()
        .and_then(|t| serde_json::from_slice(&t).ok())
        .unwrap_or_default();
    for (p, base) in restored {
        let Ok(st) = host.lstat(p) else { continue };
        all.retain(|v| &v.path != p);
        all.push(Vouched {
            path: p.clone(),
            ino: st.st_ino,
            ctime: (st.st_ctime, st.st_ctime_nsec as u32),
            base: base.clone(),
        });
    }
    let text = serde_json::to_vec(&all).map_err(|e| Error::invalid(e.to_string()))?;
    let tmp = dir.join(format!("{VOUCHED}.tmp"));
    std::fs::write(&tmp, text)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .map_err(|e| Error::io(format!("writing {}", path.display()), e))
}

/// Adds to `seen` the vouched bases (see `vouch_restored`) whose host file
/// is still the one vouched for, where `seen` has none.
pub fn add_vouched(session_dir: &Path, host: &HostRoot, seen: &mut SeenMap) {
    let path = super::engine::kernel_dir(session_dir).join(VOUCHED);
    let Some(all) = std::fs::read(&path)
        .ok()
        .and_then(|t| serde_json::from_slice::<Vec<Vouched>>(&t).ok())
    else {
        return;
    };
    for v in all {
        if seen.get(&v.path).is_some() {
            continue;
        }
        let Ok(st) = host.lstat(&v.path) else {
            continue;
        };
        if (st.st_ino, (st.st_ctime, st.st_ctime_nsec as u32)) != (v.ino, v.ctime) {
            continue;
        }
        let kind = match FileType::from_raw_mode(st.st_mode) {
            FileType::Symlink => Kind::Symlink,
            _ => Kind::File,
        };
        let mtime_ns = st
            .st_mtime
            .saturating_mul(1_000_000_000)
            .saturating_add(st.st_mtime_nsec as i64);
        seen.insert(
            v.path.clone(),
            Seen {
                path: v.path,
                kind,
                size: st.st_size as u64,
                mtime_ns,
                ino: st.st_ino,
                mode: st.st_mode,
                base: Some(v.base),
            },
        );
    }
}
