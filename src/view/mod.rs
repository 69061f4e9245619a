//! The view core: every filesystem request answered as a plain function
//! returning `Result<_, view::Error>` (an errno and its cause), so tests
//! drive it without a mount and the FUSE adapter (`crate::fuse`) only
//! translates.
//!
//! Invisible means invisible: a name outside the grant answers `ENOENT` to
//! every call, exactly like a name that does not exist. Reads live here;
//! changes live in `write.rs` (namespace and data) and `copyup.rs`.

mod attr;
mod copyup;
pub mod denied;
mod direct;
mod error;
mod handles;
mod link;
mod prefetch;
mod revoke;
mod serve;
mod setattr;
mod source;
mod times;
mod undo;
mod upper;
mod write;

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime};

use crate::tree::Tree;
pub use crate::tree::{Ino, Kind, Origin, ROOT};
pub use attr::{Attr, Entry, Lookup, DIR_SIZE};
use handles::{Handle, Handles};
pub use revoke::Known;
pub use setattr::{Caller, SetAttr, SetTime};
pub use undo::Stale;

use crate::clock::SharedClock;
use crate::error::{Errno, Result as CmdResult};
use crate::grant::Grant;
use crate::host::{stat_child, HostRoot};
use crate::overlay::journal::SeenMap;
use crate::overlay::Overlay;
use crate::policy::Mode;
use crate::scope::Scope;

pub use denied::{set_requester, DeniedLog};
use denied::{NO_LINKS, OUTSIDE, READ_ONLY, SPECIAL, XATTR};
pub use error::{Context, Error, Result};
pub use serve::{Open, Serve};
use serve::{Opened, Serving};
use source::Source;
use upper::Upper;

/// How long the kernel may cache what the daemon owns (overlay entries):
/// they change only through the daemon, which keeps the kernel informed.
pub const OWNED_TTL: Duration = Duration::from_secs(60);

/// How long the kernel may keep a name (and an absent name) of a view
/// whose set of names cannot change: a read-only view or the kernel
/// engine's lower (the grant fixes the names; see `View::names_fixed`).
/// The answer to a repeated lookup would be the same, so the timeout only
/// bounds how long the kernel goes without asking: a day outlasts any
/// working session (and is cut at the grant's expiry like every TTL),
/// while memory pressure still evicts entries whenever it needs to.
/// Attributes keep `cache_ttl`: host content still changes.
pub const NAME_TTL: Duration = Duration::from_secs(24 * 3600);

/// Tunables of a view.
#[derive(Clone, Debug)]
pub struct ViewOptions {
    /// How long the kernel may cache attributes of host files (and names,
    /// in writable views; see [`NAME_TTL`]).
    pub cache_ttl: Duration,
    /// Overlay quota overrides (default: the grant's limits).
    pub quota_bytes: Option<u64>,
    pub quota_files: Option<u64>,
    /// Present every entry as owned by this uid/gid (a container's user).
    pub owner: Option<(u32, u32)>,
    /// The time expiry is judged by (the system clock but in tests).
    pub clock: SharedClock,
    /// Serve the grant read-only as the lower layer of the kernel engine's
    /// overlay (whatever the grant's mode; the writes go to the overlay's
    /// upper): every change answers EROFS, nothing is opened or created in
    /// the session directory, and xattr reads answer ENOSYS (see
    /// [`View::getxattr`]).
    pub overlay_lower: bool,
    /// The session's denied-access log (`denied.rs`), shared with the
    /// mount that saves it.
    pub denied: Arc<denied::DeniedLog>,
}

impl Default for ViewOptions {
    fn default() -> Self {
        ViewOptions {
            cache_ttl: Duration::from_secs(1),
            quota_bytes: None,
            quota_files: None,
            owner: None,
            clock: crate::clock::system(),
            overlay_lower: false,
            denied: Default::default(),
        }
    }
}

/// One entry of a directory listing, with its attributes (for readdirplus).
#[derive(Clone, Debug)]
pub struct DirEntry {
    pub ino: Ino,
    pub name: Box<str>,
    pub attr: Attr,
    pub ttl: Duration,
}

/// An open directory: its handle, and whether the kernel may cache its
/// listing and keep that cache across opens (FUSE's `FOPEN_CACHE_DIR |
/// FOPEN_KEEP_CACHE`; see [`View::opendir`]).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpenDir {
    pub fh: u64,
    pub cache_listing: bool,
}

/// The largest file a view holds: 16 TiB, ext4's limit with 4 KiB blocks
/// (where state dirs usually live). A size change past it (truncate,
/// fallocate, a write at a huge offset) answers EFBIG before any quota
/// check; the kernel lets sizes up to 2^63-1 through to the daemon.
pub const MAX_FILE_SIZE: u64 = 1 << 44;

/// The block size `statfs` reports (fixed: nothing of the host shows).
pub const STATFS_BLOCK: u64 = 4096;

/// Filesystem statistics answered by `statfs`.
#[derive(Clone, Copy, Debug)]
pub struct Statfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

pub struct View {
    mode: Mode,
    expires_at: Option<SystemTime>,
    host: HostRoot,
    /// The granted files' total size, as recorded in the grant (statfs).
    granted_bytes: u64,
    tree: RwLock<Tree>,
    handles: Handles,
    serving: Serving,
    opts: ViewOptions,
    scope: Scope,
    /// Where changes land; `None` in a read-only view.
    upper: Option<Box<dyn Upper>>,
    seen: Mutex<SeenMap>,
    /// Times the view changed on host entries (see `times.rs`).
    stamps: times::Stamps,
    /// The policy allows files with several names (`allow_hardlinks`).
    hard_links: bool,
    /// Revoked (`revoke.rs`): every request answers ENOENT.
    revoked: std::sync::atomic::AtomicBool,
    /// An undo put the layer back but the view could not reload it
    /// (`undo.rs`): every request answers EIO until it is mounted again,
    /// rather than show one state and journal onto another.
    stranded: std::sync::atomic::AtomicBool,
    /// The granted host paths of a writable view (see `denied::Granted`).
    granted: denied::Granted,
    /// Warms the host's caches ahead of listings (`prefetch.rs`).
    prefetch: Option<prefetch::Prefetch>,
}

impl View {
    /// A view of `grant`. Writable modes need the session directory, where
    /// the overlay lives; read-only views never write anything, and neither
    /// does the kernel engine's lower (`overlay_lower`), which is served
    /// read-only whatever the grant's mode.
    pub fn new(grant: &Grant, session_dir: Option<&Path>, opts: ViewOptions) -> CmdResult<View> {
        let mode = if opts.overlay_lower {
            Mode::ReadOnly
        } else {
            grant.mode
        };
        let mut host = HostRoot::open(&grant.root).map_err(|e| {
            crate::error::Error::io(format!("opening host tree {}", grant.root.display()), e)
        })?;
        if !grant.allow_hardlinks {
            host.refuse_hardlinks();
        }
        let mut files = grant.files.clone();
        if !files.is_sorted_by(|a, b| a.path < b.path) {
            files.sort_by(|a, b| a.path.cmp(&b.path));
            files.dedup_by(|a, b| a.path == b.path);
        }
        let granted_bytes = files
            .iter()
            .fold(0u64, |t, f| t.saturating_add(f.size_bytes));
        let mut tree = Tree::from_files(&files);
        let granted = match mode {
            Mode::ReadOnly => denied::Granted::default(),
            _ => denied::Granted::new(files.iter().map(|f| f.path.as_str())),
        };
        let (upper, seen): (Option<Box<dyn Upper>>, _) = match (mode, session_dir) {
            (Mode::ReadOnly, _) => (None, SeenMap::new()),
            (Mode::ReadWriteOverlay, Some(dir)) => {
                let base = Tree::from_files(&files);
                let (ov, seen) = Overlay::open(
                    dir,
                    &mut tree,
                    &base,
                    opts.quota_bytes.unwrap_or(grant.max_total_size_bytes),
                    opts.quota_files.unwrap_or(grant.max_files),
                )?;
                (Some(Box::new(ov)), seen)
            }
            (Mode::ReadWriteDirect, Some(dir)) => (
                Some(Box::new(direct::DirectLog::open(dir)?)),
                SeenMap::new(),
            ),
            (Mode::ReadWriteOverlay, None) => {
                return Err(crate::error::Error::invalid(
                    "an overlay view needs its session directory",
                ))
            }
            (Mode::ReadWriteDirect, None) => {
                return Err(crate::error::Error::invalid(
                    "a direct view needs its session directory for its event log",
                ))
            }
        };
        let prefetch = prefetch::Prefetch::start(&host);
        Ok(View {
            mode,
            expires_at: grant.expires_at_time()?,
            prefetch,
            host,
            granted_bytes,
            tree: RwLock::new(tree),
            handles: Handles::default(),
            serving: Serving::default(),
            opts,
            scope: Scope::from_grant(grant)?,
            upper,
            seen: Mutex::new(seen),
            stamps: Default::default(),
            hard_links: grant.allow_hardlinks,
            revoked: Default::default(),
            stranded: Default::default(),
            granted,
        })
    }

    /// The overlay of an overlay view.
    fn overlay(&self) -> Option<&Overlay> {
        self.upper.as_deref()?.overlay()
    }

    fn read_tree(&self) -> RwLockReadGuard<'_, Tree> {
        self.tree.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_tree(&self) -> RwLockWriteGuard<'_, Tree> {
        self.tree.write().unwrap_or_else(|p| p.into_inner())
    }

    fn clamp(&self, ttl: Duration) -> Duration {
        match self.expires_at {
            Some(t) => t
                .duration_since(self.opts.clock.now())
                .unwrap_or_default()
                .min(ttl),
            None => ttl,
        }
    }

    /// How long the kernel may cache host-derived answers (and absent
    /// names): never past expiry.
    fn ttl(&self) -> Duration {
        self.clamp(self.opts.cache_ttl)
    }

    /// Whether the view's set of names can never change while it is
    /// mounted: it has no upper layer (a read-only view, or the kernel
    /// engine's lower), so the grant's names are all it will ever show.
    /// (A granted host entry may still vanish and come back: that is
    /// content, answered per request.)
    fn names_fixed(&self) -> bool {
        self.upper.is_none()
    }

    /// `attr` with how long the kernel may cache it: long for what the
    /// daemon owns; the name a day where names are fixed ([`NAME_TTL`]).
    fn entry(&self, attr: Attr) -> Entry {
        let ttl = if attr.owned {
            self.clamp(OWNED_TTL.max(self.opts.cache_ttl))
        } else {
            self.ttl()
        };
        let name_ttl = if self.names_fixed() {
            self.clamp(NAME_TTL.max(ttl))
        } else {
            ttl
        };
        Entry {
            attr,
            ttl,
            name_ttl,
        }
    }

    /// Attributes as presented: with `--uid/--gid`, every entry belongs to
    /// that user, so a container's user can work in the view.
    fn present(&self, mut a: Attr) -> Attr {
        if let Some((uid, gid)) = self.opts.owner {
            a.uid = uid;
            a.gid = gid;
        }
        a
    }

    /// After the grant expires every request answers EACCES; once it is
    /// revoked, ENOENT (`revoke.rs`).
    fn live(&self) -> Result<()> {
        if self.is_revoked() {
            return Err(Errno::ENOENT.into());
        }
        if self.stranded.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(Errno::EIO).context("an undo could not reload the view: mount it again");
        }
        match self.expires_at {
            Some(t) if self.opts.clock.now() >= t => Err(Errno::EACCES.into()),
            _ => Ok(()),
        }
    }

    /// Attributes of a node, from its host entry or overlay object (a hard
    /// link answers as its file: same number, same attributes). A host
    /// entry that is gone or changed kind answers ENOENT.
    fn attr_in(&self, tree: &Tree, ino: Ino) -> Result<Attr> {
        let ino = tree.inode_of(ino);
        let node = tree.get(ino).ok_or(Errno::ENOENT)?;
        let source = self.source(tree, ino)?;
        let st = source.lstat()?;
        if attr::kind_of(&st) != Some(node.kind) {
            return Err(Errno::ENOENT.into());
        }
        let a = attr::from_stat(ino, node.kind, &st, nlink(tree, ino, node.kind));
        Ok(self.present(match source {
            // An object's ctime is floored by a ctime kept before its
            // copy-up (`times.rs`).
            Source::Object(..) => Attr {
                owned: true,
                ..self.stamps.apply(a)
            },
            Source::Host(..) => self.stamps.apply(a),
        }))
    }

    /// A name in a directory. One that is not there (or not visible) is
    /// [`Lookup::Absent`], which the kernel remembers for a while.
    pub fn lookup(&self, parent: Ino, name: &OsStr) -> Result<Lookup> {
        match self.lookup_attr(parent, name) {
            Ok(a) => Ok(Lookup::Found(self.entry(a))),
            Err(e) if e == Errno::ENOENT => {
                self.note_hidden(parent, name);
                Ok(Lookup::Absent {
                    ttl: self.absent_ttl(parent, name),
                })
            }
            Err(e) => Err(e),
        }
    }

    /// How long the kernel may remember `name` as absent. Where names are
    /// fixed, a name the grant does not hold never appears: [`NAME_TTL`].
    /// A granted name whose host entry is missing may come back (the host
    /// recreates it), and any name may appear in a writable view:
    /// `cache_ttl`.
    fn absent_ttl(&self, parent: Ino, name: &OsStr) -> Duration {
        let granted = || {
            name.to_str()
                .is_some_and(|n| self.read_tree().child(parent, n).is_some())
        };
        if self.names_fixed() && !granted() {
            self.clamp(NAME_TTL)
        } else {
            self.ttl()
        }
    }

    fn lookup_attr(&self, parent: Ino, name: &OsStr) -> Result<Attr> {
        self.live()?;
        if name.len() > 255 {
            return Err(Errno(libc::ENAMETOOLONG).into());
        }
        let name = name.to_str().ok_or(Errno::ENOENT)?;
        let tree = self.read_tree();
        let child = tree.child(parent, name).ok_or(Errno::ENOENT)?;
        self.attr_in(&tree, child)
    }

    pub fn getattr(&self, ino: Ino) -> Result<Entry> {
        self.live()?;
        let tree = self.read_tree();
        match self.attr_in(&tree, ino) {
            Ok(a) => Ok(self.entry(a)),
            // Unlinked but still open: fstat through any of its handles.
            Err(e) if e == Errno::ENOENT && tree.get_any(ino).is_some_and(|n| n.removed) => {
                drop(tree);
                // The object's handle first: a reader's may still hold the
                // host file the object was copied from.
                let handle = self
                    .handles
                    .any_to_change(ino, true)
                    .or_else(|| self.handles.any_for(ino));
                match handle {
                    Some(Handle::File { file, .. }) => self.attr_of_file(ino, &file),
                    _ => Err(Errno::ENOENT.into()),
                }
            }
            Err(e) => Err(e),
        }
    }

    fn attr_of_file(&self, ino: Ino, file: &File) -> Result<Entry> {
        let st = rustix::fs::fstat(file)?;
        let tree = self.read_tree();
        let node = tree.get_any(ino);
        let kind = node.map_or(Kind::File, |n| n.kind);
        // Its names in the view: none once the last one is unlinked.
        let mut a = self
            .stamps
            .apply(attr::from_stat(ino, kind, &st, nlink(&tree, ino, kind)));
        a.owned = node.is_some_and(|n| matches!(n.origin, Origin::Upper(_)));
        Ok(self.entry(self.present(a)))
    }

    /// `fstat` on an open handle: answers even for an unlinked file.
    pub fn getattr_fh(&self, ino: Ino, fh: u64) -> Result<Entry> {
        self.live()?;
        match self.handles.get(fh) {
            Some(Handle::File { file, .. }) => self.attr_of_file(ino, &file),
            _ => self.getattr(ino),
        }
    }

    pub fn readlink(&self, ino: Ino) -> Result<Vec<u8>> {
        self.live()?;
        let tree = self.read_tree();
        let node = tree.get(ino).ok_or(Errno::ENOENT)?;
        if node.kind != Kind::Symlink {
            return Err(Errno::EINVAL.into());
        }
        self.source(&tree, ino)?.readlink()
    }

    /// Opens a file with `open(2)` flags. Writing opens copy a host file up
    /// into the overlay first; reads of untouched files come from the host.
    /// `register` makes the file a passthrough backing file, if the kernel
    /// is to serve the handle that way (see `serve.rs`).
    pub fn open<B: Send + Sync + 'static>(
        &self,
        ino: Ino,
        flags: i32,
        register: impl FnOnce(&File) -> std::io::Result<B>,
    ) -> Result<Open<B>> {
        self.live()?;
        let write = wants_write(flags);
        {
            let tree = self.read_tree();
            match tree.get(ino).ok_or(Errno::ENOENT)?.kind {
                Kind::File => {}
                Kind::Dir => return Err(Errno::EISDIR.into()),
                Kind::Symlink => return Err(Errno(libc::ELOOP).into()),
            }
        }
        let (file, obj) = if write {
            self.check_change(ino, "open")?;
            let truncate = flags & libc::O_TRUNC != 0;
            self.upper()?.open_write(self, ino, truncate)?
        } else {
            let tree = self.read_tree();
            let opened = self.source(&tree, ino)?.open()?;
            if let Some(p) = &self.prefetch {
                p.opened_file(&tree, ino);
            }
            opened
        };
        let file = Arc::new(file);
        let fh = self.handles.insert(Handle::File {
            file: file.clone(),
            ino,
            obj,
            writable: write,
            written: Default::default(),
        });
        let opened = Opened {
            fh,
            ino,
            file,
            obj,
            writable: write,
        };
        self.serve(opened, register)
    }

    pub fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>> {
        self.live()?;
        let Some(Handle::File { file, ino, obj, .. }) = self.handles.get(fh) else {
            return Err(Errno::EBADF.into());
        };
        let file = match (obj, self.copied_up(ino)) {
            // Opened on the host file, copied up since: every open of an
            // inode reads the same content, so follow it to the object.
            (None, Some(o)) => {
                let f = self.objects(o)?.open_file(o, false);
                let f = Arc::new(f.map_err(|e| source::object_error(o, e))?);
                self.handles.retarget(fh, f.clone(), o);
                f
            }
            _ => file,
        };
        let mut buf = vec![0u8; size as usize];
        let mut done = 0;
        while done < buf.len() {
            match file.read_at(&mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(Error::from(e).context("reading an open file")),
            }
        }
        buf.truncate(done);
        Ok(buf)
    }

    /// The overlay object of a node that has been copied up.
    fn copied_up(&self, ino: Ino) -> Option<u64> {
        match self.read_tree().get(ino)?.origin {
            Origin::Upper(o) => Some(o),
            _ => None,
        }
    }

    /// Closes a file handle. A passthrough handle's writes bypassed the
    /// quota: it is settled here.
    pub fn release(&self, fh: u64) {
        let passthrough = self.unserve(fh);
        let handle = self.handles.remove(fh);
        if let (
            Some(Handle::File {
                file,
                ino,
                obj,
                written,
                ..
            }),
            Some(upper),
        ) = (handle, &self.upper)
        {
            let written = written.load(std::sync::atomic::Ordering::Relaxed);
            let closed = upper::Closed {
                ino,
                obj,
                file: &file,
                passthrough,
                written,
            };
            upper.closed(self, &closed);
        }
    }

    /// Opens a directory: a snapshot of its names (`.`, `..`, children),
    /// so offsets stay stable while it changes. What each name is now is
    /// decided when the entries are read (`readdir`).
    ///
    /// The kernel may cache the listing (`cache_listing`) where every
    /// change of the names reaches it: it drops a directory's cached
    /// listing when the directory is changed through the mount and, when a
    /// listing starts from offset 0, when the directory's mtime has changed
    /// (it asks for the attributes first once they are `cache_ttl` old; we
    /// negotiate `FUSE_AUTO_INVAL_DATA`, which makes it do so). That holds
    /// where names are fixed (a granted host entry that goes or comes back
    /// changes the host directory's mtime), and in writable views for
    /// directories whose mtime is the host's (or the later time the view
    /// kept, see `times.rs`), since every change the view makes goes
    /// through the mount. A directory that is an overlay object keeps its
    /// own mtime, which a host change beneath it does not move: never
    /// cached. Hiding does not depend on it: the cache only ever holds
    /// names this view listed. Expiry does not either: opening a directory
    /// always asks the daemon (EACCES once expired), and so does a listing
    /// from offset 0 (its attributes run out at expiry at the latest); only
    /// a listing already under way at expiry may finish from the cache.
    pub fn opendir(&self, ino: Ino) -> Result<OpenDir> {
        self.live()?;
        let tree = self.read_tree();
        let node = tree.get(ino).ok_or(Errno::ENOENT)?;
        if node.kind != Kind::Dir {
            return Err(Errno::ENOTDIR.into());
        }
        let mut names: Vec<(Ino, Box<str>)> = Vec::with_capacity(node.children.len() + 2);
        names.push((ino, ".".into()));
        names.push((node.parent, "..".into()));
        for &child in &node.children {
            if let Some(c) = tree.get(child) {
                names.push((tree.inode_of(child), c.name.clone()));
            }
        }
        let cache_listing = self.names_fixed() || !matches!(node.origin, Origin::Upper(_));
        let fh = self.handles.insert(Handle::Dir(Arc::new(names)));
        Ok(OpenDir { fh, cache_listing })
    }

    /// Entries of an open directory from `offset`, each with the offset
    /// of the next one, as they are now: a name unlinked or moved since
    /// `opendir` is left out (the kernel would otherwise cache a dentry for
    /// a removed inode), attributes are current, host entries that are gone
    /// or changed kind are left out. At most a batch per call.
    pub fn readdir(&self, dir: Ino, fh: u64, offset: u64) -> Result<Vec<(u64, DirEntry)>> {
        const BATCH: usize = 128;
        let mut out = Vec::new();
        self.readdir_each(dir, fh, offset, |next, e| {
            out.push((next, e));
            out.len() >= BATCH
        })?;
        Ok(out)
    }

    /// As [`View::readdir`], handing each entry to `add` (with the offset
    /// of the next one) until it answers `true` (the reply is full): an
    /// entry is only statted when there is room for it, so a listing costs
    /// one host stat per entry however small the kernel's buffer.
    pub fn readdir_each(
        &self,
        dir: Ino,
        fh: u64,
        offset: u64,
        mut add: impl FnMut(u64, DirEntry) -> bool,
    ) -> Result<()> {
        self.live()?;
        let Some(Handle::Dir(names)) = self.handles.get(fh) else {
            return Err(Errno::EBADF.into());
        };
        let tree = self.read_tree();
        let Some(node) = tree.get(dir) else {
            return Ok(()); // removed while open: nothing more to list
        };
        // Children still in place are statted through one open host directory.
        let host_dir = match node.origin {
            Origin::InPlace => tree
                .host_path(dir)
                .and_then(|p| self.host.open_dir(&p).ok()),
            _ => None,
        };
        let prefetch = self
            .prefetch
            .as_ref()
            .filter(|_| offset == 0 && host_dir.is_some());
        if let Some(p) = prefetch {
            p.listing(dir);
        }
        // A host directory that is gone lists nothing, not even its dots.
        let gone = node.origin == Origin::InPlace && host_dir.is_none();
        let mut next = names.len();
        for (i, (ino, name)) in names.iter().enumerate().skip(offset as usize) {
            let attr = match &**name {
                "." | ".." if gone => continue,
                "." | ".." => Ok(attr::dot(*ino)),
                n if !still_named(&tree, dir, *ino, n) => continue,
                n => match (tree.get(*ino), &host_dir) {
                    (Some(c), Some(dirfd)) if c.origin == Origin::InPlace => {
                        match stat_child(dirfd, n) {
                            Ok(st) if attr::kind_of(&st) == Some(c.kind) => {
                                let a =
                                    attr::from_stat(*ino, c.kind, &st, nlink(&tree, *ino, c.kind));
                                Ok(self.present(self.stamps.apply(a)))
                            }
                            _ => continue,
                        }
                    }
                    _ => self.attr_in(&tree, *ino),
                },
            };
            let Ok(attr) = attr else { continue };
            // readdirplus carries one lifetime for both name and
            // attributes (fuser's `ReplyDirectoryPlus::add`): the
            // attributes' (a later lookup gives the name its own). The
            // dots' are never used.
            let (attr, ttl) = match &**name {
                "." | ".." => (attr, Duration::ZERO),
                _ => {
                    let e = self.entry(attr);
                    (e.attr, e.ttl)
                }
            };
            let full = add(
                i as u64 + 1,
                DirEntry {
                    ino: *ino,
                    name: name.clone(),
                    attr,
                    ttl,
                },
            );
            if full {
                next = i;
                break;
            }
        }
        if let Some(p) = prefetch {
            p.listed(&tree, dir, &names[next.min(names.len())..]);
        }
        Ok(())
    }

    pub fn releasedir(&self, fh: u64) {
        self.handles.remove(fh);
    }

    /// `statfs` of the view itself, never of the host filesystem, in
    /// blocks of [`STATFS_BLOCK`] bytes. Used: the granted files' size (as
    /// recorded in the grant) plus what the overlay holds, and the
    /// entries the view shows now. Free: nothing in a read-only view; the
    /// quota's free bytes and objects in an overlay view; in a direct view
    /// (writes go to the host tree, no quota) the host's free space.
    pub fn statfs(&self) -> Result<Statfs> {
        self.live()?;
        let entries = self.read_tree().len() as u64;
        let space = match &self.upper {
            Some(upper) => upper.space(self)?,
            None => upper::Space::default(),
        };
        let used = self.granted_bytes.saturating_add(space.used_bytes);
        let free = space.free_bytes / STATFS_BLOCK;
        Ok(Statfs {
            blocks: used.div_ceil(STATFS_BLOCK).saturating_add(free),
            bfree: free,
            bavail: free,
            files: entries.saturating_add(space.free_files),
            ffree: space.free_files,
            bsize: STATFS_BLOCK as u32,
            namelen: 255,
            frsize: STATFS_BLOCK as u32,
        })
    }

    /// `getxattr(2)`. A writable view has no POSIX ACLs (it cannot set
    /// them, and the kernel checks only the mode bits of a FUSE mount): it
    /// answers their names EOPNOTSUPP and never lists them, as a
    /// filesystem without ACL support does, so tools copying a file with
    /// an ACL on the host carry its mode bits instead. Names of a namespace
    /// the caller could not read on a host filesystem answer ENODATA (see
    /// [`xattr_needs_privilege`]);
    /// `privileged` is asked only for those. Overlay objects carry only
    /// `user.*` attributes of the view (anything else on them belongs to
    /// the state dir, not the view).
    ///
    /// The kernel engine's lower answers ENOSYS (see `lower_xattrs`).
    pub fn getxattr(
        &self,
        ino: Ino,
        name: &OsStr,
        privileged: impl FnOnce() -> bool,
    ) -> Result<Vec<u8>> {
        self.lower_xattrs()?;
        self.live()?;
        let name = name.to_str().ok_or(Errno::ENODATA)?;
        let tree = self.read_tree();
        let source = self.source(&tree, ino)?;
        if self.mode != Mode::ReadOnly && is_posix_acl(name) {
            return Err(Errno(libc::EOPNOTSUPP).into());
        }
        let readable = match source {
            // The kernel asks for security.capability before most writes
            // and chowns: answered without a look at the object.
            Source::Object(..) => name.starts_with("user."),
            Source::Host(..) => !xattr_needs_privilege(name) || privileged(),
        };
        if !readable {
            return Err(Errno::ENODATA.into());
        }
        source.getxattr(name)
    }

    /// `listxattr(2)`: the names the caller could read, as a host
    /// filesystem lists them (`trusted.*` only to a caller with
    /// CAP_SYS_ADMIN, see [`xattr_needs_privilege`]). The daemon reads the
    /// host with its own rights, so the list is filtered for the caller;
    /// `privileged` is asked only when a privileged name is present. The
    /// kernel engine's lower answers ENOSYS (see `lower_xattrs`).
    pub fn listxattr(&self, ino: Ino, privileged: impl FnOnce() -> bool) -> Result<Vec<u8>> {
        self.lower_xattrs()?;
        self.live()?;
        let tree = self.read_tree();
        let source = self.source(&tree, ino)?;
        let all = source.listxattr()?;
        if let Source::Object(..) = source {
            return Ok(filter_xattr_names(&all, |n| n.starts_with(b"user.")));
        }
        let all = if self.mode != Mode::ReadOnly {
            filter_xattr_names(&all, |n| !std::str::from_utf8(n).is_ok_and(is_posix_acl))
        } else {
            all
        };
        let names = || all.split(|b| *b == 0).filter(|n| !n.is_empty());
        let needs = |n: &[u8]| std::str::from_utf8(n).map_or(true, xattr_needs_privilege);
        if !names().any(needs) {
            return Ok(all);
        }
        let privileged = privileged();
        Ok(filter_xattr_names(&all, |n| privileged || !needs(n)))
    }

    /// ENOSYS for every xattr read of the kernel engine's lower, whose only
    /// client is overlayfs. Overlayfs asks the lower for its private
    /// attributes (`*.overlay.metacopy` of every file, `*.overlay.origin`
    /// of every directory, even with metacopy=off): a round trip per
    /// entry. ENOSYS makes the kernel stop sending GETXATTR (LISTXATTR) on
    /// this connection and answer EOPNOTSUPP itself, which overlayfs takes
    /// as "no attributes" (copy-up still works, carrying none). It also
    /// guarantees that no host xattr ever reaches overlayfs: a host file
    /// carrying `trusted.overlay.opaque`, `*.overlay.redirect` or any other
    /// `*.overlay.*` attribute cannot change how the layers merge, because
    /// the lower never reads a host attribute at all.
    fn lower_xattrs(&self) -> Result<()> {
        if self.opts.overlay_lower {
            return Err(Errno(libc::ENOSYS).into());
        }
        Ok(())
    }

    /// `access(2)`: existence, a read-only view for W_OK, then mode bits.
    pub fn access(&self, ino: Ino, mask: i32, uid: u32, gid: u32) -> Result<()> {
        let a = self.getattr(ino)?;
        if mask & libc::W_OK != 0 {
            self.upper()?;
        }
        if mask == libc::F_OK {
            return Ok(());
        }
        let perm = u32::from(a.perm);
        let bits = if uid == 0 {
            // root may read and write anything, and execute what anyone may
            if mask & libc::X_OK != 0 && a.kind != Kind::Dir && perm & 0o111 == 0 {
                return Err(Errno::EACCES.into());
            }
            return Ok(());
        } else if uid == a.uid {
            (perm >> 6) & 7
        } else if gid == a.gid {
            (perm >> 3) & 7
        } else {
            perm & 7
        };
        if (mask as u32) & !bits & 7 != 0 {
            return Err(Errno::EACCES.into());
        }
        Ok(())
    }

    /// EACCES unless the entry may be changed (write prefixes). A view that
    /// cannot be written answers EROFS first.
    fn check_change(&self, ino: Ino, op: &'static str) -> Result<()> {
        let path = self.read_tree().path(ino).ok_or(Errno::ENOENT);
        if self.upper.is_none() {
            return Err(self.refuse_at(path.ok().as_deref(), op, Errno::EROFS, None, READ_ONLY));
        }
        let path = path?;
        if self.scope.may_change(&path) {
            Ok(())
        } else {
            Err(self.refuse(&path, op, Errno::EACCES, None, OUTSIDE))
        }
    }

    /// Clean unmount: keeps changed directory times, flushes the journal.
    pub fn shutdown(&self) {
        if let Some(ov) = self.overlay() {
            self.persist_dir_times(ov);
        }
        if let Some(upper) = &self.upper {
            let _ = upper.sync_namespace();
        }
    }
}

/// `name` in `dir` still leads to file `ino`, as when the listing began.
/// Most often its node is that very name (no search); a hard link's other
/// names are looked up.
fn still_named(tree: &Tree, dir: Ino, ino: Ino, name: &str) -> bool {
    let same = tree
        .get(ino)
        .is_some_and(|n| n.parent == dir && &*n.name == name);
    (same && tree.inode_of(ino) == ino)
        || tree.child(dir, name).map(|c| tree.inode_of(c)) == Some(ino)
}

/// The link count of node `ino` in the view: a directory's `.`, its entry
/// and its subdirectories' `..`; a file's names.
fn nlink(tree: &Tree, ino: Ino, kind: Kind) -> u32 {
    match kind {
        Kind::Dir => 2 + tree.subdirs(ino) as u32,
        _ => tree.nlink(ino),
    }
}

/// Whether reading (or listing) the extended attribute `name` needs
/// CAP_SYS_ADMIN, as on a host filesystem: `user.*`, `security.*` and the
/// POSIX ACLs (`system.posix_acl_access`, `system.posix_acl_default`) are
/// listed to every caller (the kernel then checks reads of `user.*`
/// against the file's mode); `trusted.*`, any other `system.*` name and
/// names of no known namespace only to privileged callers.
pub fn xattr_needs_privilege(name: &str) -> bool {
    !(name.starts_with("user.")
        || name.starts_with("security.")
        || name == "system.posix_acl_access"
        || name == "system.posix_acl_default")
}

/// The POSIX ACL attributes.
fn is_posix_acl(name: &str) -> bool {
    name == "system.posix_acl_access" || name == "system.posix_acl_default"
}

/// The NUL-terminated names of a `listxattr` answer that `keep` accepts.
fn filter_xattr_names(list: &[u8], keep: impl Fn(&[u8]) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(list.len());
    for name in list.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        if keep(name) {
            out.extend_from_slice(name);
            out.push(0);
        }
    }
    out
}

fn wants_write(flags: i32) -> bool {
    flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0
}

#[cfg(test)]
mod link_tests;
#[cfg(test)]
mod lower_tests;
#[cfg(test)]
mod prefetch_tests;
#[cfg(test)]
mod serve_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod time_tests;
#[cfg(test)]
mod write_tests;
