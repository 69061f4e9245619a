//! Which engine serves a session's writable view, and where the kernel
//! engine keeps its layer.
//!
//! ```text
//! STATE/sessions/g-…/engine.json          {"engine":"kernel","xattrs":"trusted"}
//! STATE/sessions/g-…/kernel/upper.img     the layer: an ext4 image sized to the quota
//! STATE/sessions/g-…/kernel/layer.lock    held (flock) by whoever has the image mounted
//! STATE/sessions/g-…/kernel/layer/        where the image is mounted: upper/ and work/,
//!                                          ballast/ (all the image holds beyond the
//!                                          quota) and reserve/ (freed while mounting)
//! ```
//!
//! The FUSE engine keeps its layer in `overlay/` (journal and objects); a
//! session without `engine.json` is a FUSE session. A session keeps the
//! engine it started with: its layer is only readable by that engine.
//!
//! The kernel engine's upper directory is overlayfs' own: new and
//! copied-up entries, whiteouts and opaque directories marked with
//! `<ns>.overlay.*` xattrs, where `<ns>` is the namespace the layer was
//! made in (`trusted` as root, `user` in a user namespace). Only that
//! namespace is ever believed, and a layer is never mounted in the other.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// The engine of a writable view.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// The view's own overlay, in the FUSE daemon (`overlay/`).
    Fuse,
    /// Kernel overlayfs over the read-only FUSE view (`kernel/`).
    Kernel,
}

impl Engine {
    pub fn name(self) -> &'static str {
        match self {
            Engine::Fuse => "fuse",
            Engine::Kernel => "kernel",
        }
    }
}

/// The xattr namespace overlayfs keeps its marks in.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum XattrNs {
    Trusted,
    User,
}

impl XattrNs {
    /// The prefix of overlayfs' own xattrs: `trusted.overlay.` or `user.overlay.`.
    pub fn prefix(self) -> &'static str {
        match self {
            XattrNs::Trusted => "trusted.overlay.",
            XattrNs::User => "user.overlay.",
        }
    }
}

/// `engine.json`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EngineRecord {
    pub engine: Engine,
    /// Kernel engine: the namespace of the layer's marks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xattrs: Option<XattrNs>,
}

const RECORD: &str = "engine.json";

/// The session's engine record, if it has one (a FUSE session may not).
pub fn record(session_dir: &Path) -> Result<Option<EngineRecord>> {
    let path = session_dir.join(RECORD);
    match std::fs::read(&path) {
        Ok(text) => serde_json::from_slice(&text)
            .map(Some)
            .map_err(|e| Error::invalid(format!("{} is damaged: {e}", path.display()))),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(Error::io(format!("reading {}", path.display()), e)),
    }
}

/// The session's engine: its record's, or FUSE for a session without one.
pub fn engine_of(session_dir: &Path) -> Result<Engine> {
    Ok(record(session_dir)?.map_or(Engine::Fuse, |r| r.engine))
}

/// Writes `engine.json` atomically.
pub fn save_record(session_dir: &Path, rec: &EngineRecord) -> Result<()> {
    let path = session_dir.join(RECORD);
    let tmp = session_dir.join(format!("{RECORD}.tmp"));
    let text = serde_json::to_vec_pretty(rec).map_err(|e| Error::invalid(e.to_string()))?;
    std::fs::write(&tmp, text)
        .and_then(|_| File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, &path))
        .ctx(|| format!("writing {}", path.display()))
}

/// `kernel/` of a session.
pub fn kernel_dir(session_dir: &Path) -> PathBuf {
    session_dir.join("kernel")
}

/// The ext4 image holding the kernel engine's layer.
pub fn image_path(session_dir: &Path) -> PathBuf {
    kernel_dir(session_dir).join("upper.img")
}

/// Where the image is mounted; `upper/` and `work/` are in it.
pub fn layer_dir(session_dir: &Path) -> PathBuf {
    kernel_dir(session_dir).join("layer")
}

pub fn upper_dir(session_dir: &Path) -> PathBuf {
    layer_dir(session_dir).join("upper")
}

pub fn work_dir(session_dir: &Path) -> PathBuf {
    layer_dir(session_dir).join("work")
}

/// Whether a kernel session's layer is plain directories (made rootless,
/// in `wopfs run`'s user namespace, marks in `user.overlay.*`) rather than
/// the ext4 image root mounts.
pub fn is_dir_layer(rec: &EngineRecord) -> bool {
    rec.engine == Engine::Kernel && rec.xattrs == Some(XattrNs::User)
}

/// Makes a plain-directory layer (see [`is_dir_layer`]): `layer/upper`
/// and `layer/work`, 0700 with the upper's root taking `root_mode`.
pub fn make_dir_layer(session_dir: &Path, root_mode: u32) -> Result<()> {
    make_kernel_dir(session_dir)?;
    for (d, mode) in [
        (upper_dir(session_dir), root_mode & 0o7777),
        (work_dir(session_dir), 0o700),
    ] {
        std::fs::DirBuilder::new()
            .mode(0o700)
            .recursive(true)
            .create(&d)
            .ctx(|| format!("creating {}", d.display()))?;
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(mode))
            .ctx(|| format!("setting the mode of {}", d.display()))?;
    }
    Ok(())
}

/// Makes `kernel/` (0700) and its `layer/` mountpoint.
pub fn make_kernel_dir(session_dir: &Path) -> Result<()> {
    let dir = kernel_dir(session_dir);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .recursive(true)
        .create(dir.join("layer"))
        .ctx(|| format!("creating {}", dir.display()))
}

/// The size of an image for a quota of `bytes` and `files`: more than
/// the quota needs (ext4's metadata, its reserved clusters, the journal,
/// the overlay's own entries and the reserve); what is left beyond the
/// quota is taken by the ballast (`create_image`). The image is sparse,
/// so the excess costs no disk.
pub fn image_bytes(bytes: u64, files: u64) -> u64 {
    const BLOCK: u64 = 4096;
    let slack = files
        .saturating_mul(BLOCK)
        .saturating_add(bytes / 16)
        .saturating_add(JOURNAL_MIB * (1 << 20) + (24 << 20) + RESERVE_BYTES as u64);
    bytes.saturating_add(slack).div_ceil(BLOCK) * BLOCK
}

/// The image's journal size: kept fixed and small, so a large quota does
/// not pay for a large journal, and a crash never needs fsck.
const JOURNAL_MIB: u64 = 8;

/// What the layer needs beyond the agent's entries, once the overlay is
/// mounted: `work/work` (made by overlayfs at every mount) and the
/// reserve (its directory, its bytes file and its files). The whiteout
/// overlayfs makes in `work/work` at a mount's first delete (later ones
/// are hard links to it) is the agent's: a delete is a change.
const FIXED_INODES: u64 = 1 + 2 + RESERVE_FILES as u64;
/// Blocks of the same: `work/work`, the reserve's directory and bytes.
const FIXED_BLOCKS: u64 = 1 + 1 + (RESERVE_BYTES as u64).div_ceil(4096);

/// Creates the image for a quota of `bytes` and `files`: an ext4 of 4 KiB
/// blocks (whatever its size) without reserved blocks, with `upper/` and
/// `work/` made, and whatever it holds beyond the quota taken by
/// `ballast/` (empty files for inodes, one allocated file for blocks,
/// never freed), so the overlay's upper can hold at most `files` entries
/// and `bytes` of blocks (rounded down to whole blocks: the quota counts
/// disk blocks, directories included).
/// Made as `upper.img.tmp` and renamed into place when whole; a stale
/// temp image (a creation that died) is removed first.
pub fn create_image(path: &Path, bytes: u64, files: u64) -> Result<()> {
    let tmp = path.with_extension("img.tmp");
    let fill = path.with_file_name("filling");
    if fill.exists() {
        let _ = unmount_layer(&fill);
        let _ = std::fs::remove_dir(&fill);
    }
    match std::fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(Error::io(format!("removing {}", tmp.display()), e)),
    }
    let made = make_image(&tmp, &fill, bytes, files);
    if made.is_ok() {
        // Whole: only now does the image exist under its name.
        if let Err(e) = std::fs::rename(&tmp, path) {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(format!("renaming {}", tmp.display()), e));
        }
        return Ok(());
    }
    let _ = std::fs::remove_file(&tmp);
    made
}

fn make_image(tmp: &Path, fill: &Path, bytes: u64, files: u64) -> Result<()> {
    let size = image_bytes(bytes, files);
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .ctx(|| format!("creating {}", tmp.display()))?;
    f.set_len(size)
        .ctx(|| format!("sizing {} to {size} bytes", tmp.display()))?;
    drop(f);
    // ext4's own (11), lost+found, upper, work, ballast, and the above;
    // the ballast takes what mkfs's rounding adds.
    let inodes = files.saturating_add(16 + FIXED_INODES);
    let out = Command::new("mkfs.ext4")
        .args(["-q", "-F", "-m", "0", "-b", "4096", "-E", "nodiscard"])
        .arg("-J")
        .arg(format!("size={JOURNAL_MIB}"))
        .arg("-N")
        .arg(inodes.to_string())
        .arg(tmp)
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            return Err(Error::invalid(format!(
                "making the kernel engine's layer image {}: {}",
                tmp.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            )))
        }
        Err(e) => {
            return Err(Error::invalid(format!(
                "making the kernel engine's layer image {}: cannot run mkfs.ext4 (install e2fsprogs): {e}",
                tmp.display()
            )))
        }
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(fill)
        .ctx(|| format!("creating {}", fill.display()))?;
    let filled = mount_image(tmp, fill).and_then(|()| {
        let r = fill_to_quota(fill, bytes, files);
        // Synchronously, so the loop device is gone before the rename.
        let u = rustix::mount::unmount(fill, rustix::mount::UnmountFlags::empty())
            .or_else(|_| rustix::mount::unmount(fill, rustix::mount::UnmountFlags::DETACH))
            .map_err(|e| Error::io(format!("unmounting {}", fill.display()), e.into()));
        r.and(u)
    });
    let _ = std::fs::remove_dir(fill);
    filled
}

/// Free inodes and blocks (4 KiB) of the filesystem at `dir`, as any
/// writer sees them (ext4's reserved clusters excluded).
fn free_of(dir: &Path) -> Result<(u64, u64)> {
    let st = rustix::fs::statvfs(dir)
        .map_err(|e| Error::io(format!("statfs of {}", dir.display()), e.into()))?;
    Ok((st.f_ffree, st.f_bavail.saturating_mul(st.f_frsize) / 4096))
}

/// Makes `upper/` and `work/` in the new image mounted at `dir`, then
/// takes everything beyond the quota (and the layer's fixed needs) into
/// `ballast/`.
fn fill_to_quota(dir: &Path, bytes: u64, files: u64) -> Result<()> {
    for d in ["upper", "work", "ballast"] {
        let p = dir.join(d);
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&p)
            .ctx(|| format!("creating {}", p.display()))?;
    }
    let ballast = dir.join("ballast");
    let blocks = ballast.join("blocks");
    let f = File::create(&blocks).ctx(|| format!("creating {}", blocks.display()))?;
    let (ffree, _) = free_of(dir)?;
    let keep = files.saturating_add(FIXED_INODES);
    for i in 0..ffree.saturating_sub(keep) {
        let p = ballast.join(i.to_string());
        File::create(&p).ctx(|| format!("creating {}", p.display()))?;
    }
    let want = (bytes / 4096).saturating_add(FIXED_BLOCKS);
    // Extent blocks of the ballast itself come out of what it measured:
    // measure again until what is left is the quota (or, growing past
    // it, shrink back).
    let mut len = 0u64;
    for _ in 0..8 {
        let (_, avail) = free_of(dir)?;
        if avail == want {
            break;
        }
        len = if avail > want {
            len.saturating_add((avail - want) * 4096)
        } else {
            len.saturating_sub((want - avail) * 4096)
        };
        f.set_len(0)
            .and_then(|()| {
                rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 0, len)
                    .map_err(std::io::Error::from)
            })
            .ctx(|| format!("allocating {len} bytes to {}", blocks.display()))?;
        if len == 0 {
            break;
        }
    }
    let (ffree, avail) = free_of(dir)?;
    if ffree < keep || avail < want {
        tracing::warn!(
            ffree,
            avail,
            keep,
            want,
            "the layer image holds less than the quota"
        );
    }
    f.sync_all()
        .ctx(|| format!("syncing {}", blocks.display()))?;
    rustix::fs::syncfs(&f).map_err(|e| Error::io("syncing the layer image", e.into()))
}

/// Mounts the image at `dir` (through a loop device, freed again at unmount).
pub fn mount_image(image: &Path, dir: &Path) -> Result<()> {
    super::loopdev::mount_at(image, dir)
}

/// Inodes and bytes kept aside in `layer/reserve/` and freed only while
/// the overlay mounts: overlayfs makes its work dir and test files then,
/// and an agent that filled the image must not keep the view from
/// mounting again.
const RESERVE_FILES: usize = 8;
const RESERVE_BYTES: usize = 256 << 10;

/// Frees the reserve (before the overlay mounts).
pub fn release_reserve(session_dir: &Path) {
    let _ = std::fs::remove_dir_all(layer_dir(session_dir).join("reserve"));
}

/// Takes the reserve back (after the overlay has mounted, before anyone
/// can reach it): as much as fits.
pub fn take_reserve(session_dir: &Path) {
    let dir = layer_dir(session_dir).join("reserve");
    if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_err() {
        return;
    }
    let _ = std::fs::write(dir.join("bytes"), vec![0u8; RESERVE_BYTES]);
    for i in 0..RESERVE_FILES {
        if std::fs::write(dir.join(i.to_string()), b"").is_err() {
            break;
        }
    }
}

/// Unmounts the layer at `dir`: lazily, so a process still holding a file
/// of it cannot keep the unmount from happening (the loop device is freed
/// when the last one closes).
pub fn unmount_layer(dir: &Path) -> Result<()> {
    use rustix::mount::UnmountFlags;
    match rustix::mount::unmount(dir, UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => Ok(()),
        Err(e) => Err(Error::io(
            format!("unmounting the layer at {}", dir.display()),
            e.into(),
        )),
    }
}

/// Whether `dir` is a mountpoint now.
pub fn is_mounted(dir: &Path) -> bool {
    crate::mountinfo::mount_at(dir).is_some()
}

/// The loop devices backed by `image` (`/sys/block/loopN/loop/backing_file`).
/// One that is not mounted at the layer dir belongs to a layer unmounted
/// lazily while a process still held one of its files.
pub fn loop_devices_of(image: &Path) -> Vec<String> {
    let Ok(image) = std::fs::canonicalize(image) else {
        return Vec::new();
    };
    let Ok(dir) = std::fs::read_dir("/sys/block") else {
        return Vec::new();
    };
    dir.filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("loop"))
        .filter(|e| {
            std::fs::read_to_string(e.path().join("loop/backing_file"))
                .is_ok_and(|b| Path::new(b.trim_end()) == image)
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// The loop devices still backing `image` after waiting up to 2 s for them
/// to go: the kernel detaches an auto-clearing loop device once the last
/// mount of its file system is gone, which may be a moment after the
/// unmount or the end of a namespace holding a copy of it (a run's).
pub fn loop_devices_left(image: &Path) -> Vec<String> {
    let start = std::time::Instant::now();
    loop {
        let held = loop_devices_of(image);
        if held.is_empty() || start.elapsed() > std::time::Duration::from_secs(2) {
            return held;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}

/// An exclusive hold on the layer: whoever mounts the image holds it, so
/// two mounts of one image never exist at once.
pub struct LayerLock {
    _file: File,
}

/// Takes the layer lock, waiting up to `wait` for another holder.
pub fn lock_layer(session_dir: &Path, wait: std::time::Duration) -> Result<LayerLock> {
    use rustix::fs::{flock, FlockOperation};
    let path = kernel_dir(session_dir).join("layer.lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .ctx(|| format!("opening {}", path.display()))?;
    let start = std::time::Instant::now();
    loop {
        match flock(&file, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => return Ok(LayerLock { _file: file }),
            Err(rustix::io::Errno::WOULDBLOCK) if start.elapsed() < wait => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            Err(rustix::io::Errno::WOULDBLOCK) => {
                return Err(Error::busy(format!(
                    "the kernel engine's layer of {} is in use by another wopfs process (the mount daemon, or a command reading it); try again when it is done",
                    session_dir.display()
                )))
            }
            Err(e) => return Err(Error::io(format!("locking {}", path.display()), e.into())),
        }
    }
}

/// A kernel session's upper directory, readable while this is held.
pub struct ReadableUpper {
    pub upper: PathBuf,
    pub ns: XattrNs,
    /// What this process holds to read it, released on drop.
    mounted: Option<Held>,
}

enum Held {
    /// A layer left mounted at its path by a daemon that died: unmounted
    /// after reading.
    Left(PathBuf, #[allow(dead_code)] LayerLock),
    /// The image mounted detached by this process (`loopdev`), shared by
    /// its readers: gone with the last of them, also when this process is
    /// killed.
    Detached(#[allow(dead_code)] std::sync::Arc<Detached>),
}

/// A detached mount of a session's layer image and the layer lock.
struct Detached {
    mnt: std::os::fd::OwnedFd,
    _lock: LayerLock,
}

/// The detached layer mounts this process holds, by session dir: a second
/// reader in the same process (a commit reading the set, then rebasing)
/// shares the first one's mount, as the lock would refuse it another.
fn detached_mounts(
) -> &'static std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Weak<Detached>>> {
    static MOUNTS: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<PathBuf, std::sync::Weak<Detached>>>,
    > = std::sync::OnceLock::new();
    MOUNTS.get_or_init(Default::default)
}

impl ReadableUpper {
    /// An upper directory that needs nothing held to be read (a
    /// checkpoint's copy).
    pub fn plain(upper: PathBuf, ns: XattrNs) -> ReadableUpper {
        ReadableUpper {
            upper,
            ns,
            mounted: None,
        }
    }
}

impl Drop for ReadableUpper {
    fn drop(&mut self) {
        if let Some(Held::Left(dir, _lock)) = self.mounted.take() {
            if let Err(e) = unmount_layer(&dir) {
                tracing::warn!(error = %e, "cannot unmount the layer image after reading it");
            }
        }
    }
}

/// The upper directory of a kernel session, to read; `None` for a FUSE
/// session. A layer the daemon has mounted is read where it is; otherwise
/// the image is mounted detached by this process (root) for as long as the
/// result is held, so a reader killed leaves nothing mounted.
/// Refused while a lazily unmounted layer is still held open somewhere:
/// a process holding it could still write.
pub fn open_upper(session_dir: &Path) -> Result<Option<ReadableUpper>> {
    let Some(rec) = record(session_dir)? else {
        return Ok(None);
    };
    if rec.engine != Engine::Kernel {
        return Ok(None);
    }
    let ns = rec.xattrs.unwrap_or(XattrNs::Trusted);
    let layer = layer_dir(session_dir);
    let image = image_path(session_dir);
    let upper = upper_dir(session_dir);
    if is_mounted(&layer) {
        return Ok(Some(ReadableUpper {
            upper,
            ns,
            mounted: None,
        }));
    }
    if !image.exists() {
        // Never mounted: nothing changed yet.
        return Ok(Some(ReadableUpper {
            upper,
            ns,
            mounted: None,
        }));
    }
    let mut shared = detached_mounts()
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if let Some(d) = shared.get(session_dir).and_then(std::sync::Weak::upgrade) {
        return Ok(Some(ReadableUpper {
            upper: super::loopdev::path_in(&d.mnt, "upper"),
            ns,
            mounted: Some(Held::Detached(d)),
        }));
    }
    let lock = lock_layer(session_dir, std::time::Duration::from_secs(10))?;
    if is_mounted(&layer) {
        // Mounted and left by a process that died (its lock went with it).
        return Ok(Some(ReadableUpper {
            upper,
            ns,
            mounted: Some(Held::Left(layer, lock)),
        }));
    }
    let held = loop_devices_left(&image);
    if !held.is_empty() {
        return Err(Error::busy(format!(
            "the kernel engine's layer {} is still attached ({}) though not mounted: a process still holds a file of the unmounted view and could write to it; end it (fuser -m, or the run's leftover processes) and try again",
            image.display(),
            held.join(", ")
        )));
    }
    let d = std::sync::Arc::new(Detached {
        mnt: super::loopdev::mount_detached(&image)?,
        _lock: lock,
    });
    shared.insert(session_dir.to_path_buf(), std::sync::Arc::downgrade(&d));
    Ok(Some(ReadableUpper {
        upper: super::loopdev::path_in(&d.mnt, "upper"),
        ns,
        mounted: Some(Held::Detached(d)),
    }))
}

/// Removes a kernel session's layer (reject): refused while any process
/// may still write to it.
pub fn discard_layer(session_dir: &Path) -> Result<()> {
    let dir = kernel_dir(session_dir);
    if !dir.exists() {
        return Ok(());
    }
    let _lock = lock_layer(session_dir, std::time::Duration::from_secs(10))?;
    let layer = layer_dir(session_dir);
    if is_mounted(&layer) {
        unmount_layer(&layer)?;
    }
    let held = loop_devices_left(&image_path(session_dir));
    if !held.is_empty() {
        return Err(Error::busy(format!(
            "the kernel engine's layer {} is still attached ({}): a process still holds a file of the unmounted view; end it and try again",
            image_path(session_dir).display(),
            held.join(", ")
        )));
    }
    // overlayfs leaves `work/work` with mode 0: made by root that is no
    // matter, made rootless it cannot be listed, hence removed, until opened.
    let inner = work_dir(session_dir).join("work");
    if inner.is_dir() {
        let _ = std::fs::set_permissions(&inner, std::fs::Permissions::from_mode(0o700));
    }
    std::fs::remove_dir_all(&dir).ctx(|| format!("removing {}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_without_a_record_is_fuse() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(engine_of(d.path()).unwrap(), Engine::Fuse);
        assert!(open_upper(d.path()).unwrap().is_none());
        let rec = EngineRecord {
            engine: Engine::Kernel,
            xattrs: Some(XattrNs::Trusted),
        };
        save_record(d.path(), &rec).unwrap();
        assert_eq!(record(d.path()).unwrap(), Some(rec));
        assert_eq!(engine_of(d.path()).unwrap(), Engine::Kernel);
    }

    #[test]
    fn a_damaged_record_is_named() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join(RECORD), b"{\"engine\":\"warp\"}").unwrap();
        let e = record(d.path()).unwrap_err().to_string();
        assert!(e.contains("engine.json is damaged"), "{e}");
    }

    #[test]
    fn the_image_leaves_room_beyond_the_quota() {
        let n = image_bytes(1 << 20, 100);
        assert!(n >= (1 << 20) + 100 * 4096 + (JOURNAL_MIB << 20), "{n}");
        assert_eq!(n % 4096, 0);
    }
}
