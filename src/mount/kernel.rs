//! The kernel engine: overlayfs at the mountpoint, over the grant's
//! read-only FUSE view (served by this process) as its lower layer, with
//! the upper and work dirs on the session's layer image
//! (`overlay::engine`). Hiding stays in the FUSE view; the agent's writes
//! go to the upper at the speed of the disk.
//!
//! Mounting, in this order:
//!
//! 1. the layer image is made (first mount) and mounted at `kernel/layer`,
//!    under the layer lock, held for the daemon's life;
//! 2. the lower view is mounted at `kernel/lower` (0700, in the state dir)
//!    and its FUSE threads started: overlayfs looks up the lower's root
//!    while it mounts, and would wait forever on a server not yet serving;
//! 3. the lower is cloned (`open_tree`) and its path detached, so the
//!    lower is attached nowhere (not in mountinfo, reachable by no path),
//!    and overlayfs gets it by fd (`lowerdir+`, kernel 6.15+; older
//!    kernels get the path and the lower stays mounted in the state dir);
//! 4. a guard process is started, which unmounts the overlay and the layer
//!    when this process dies in any way (a `kill -9` would otherwise leave
//!    the upper writable through the overlay with nothing serving the lower);
//! 5. the overlay is created (`source` `wopfs:GRANT`, `nosuid,nodev`, no
//!    feature that keeps renames or metadata in private xattrs) and moved
//!    onto the mountpoint.
//!
//! Unmounting the overlay drops the last reference to the lower, which
//! ends the FUSE session; the daemon then unmounts the layer and exits.

use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use rustix::mount::{
    fsconfig_create, fsconfig_set_fd, fsconfig_set_string, fsmount, fsopen, move_mount, open_tree,
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, OpenTreeFlags,
};

use rustix::fs::{Mode, OFlags};

use super::{prefixes, MountOptions};
use crate::error::{Error, IoContext, Result};
use crate::fuse::WopFs;
use crate::grant::Grant;
use crate::mountinfo::{self, SOURCE_PREFIX};
use crate::overlay::engine::{self, LayerLock, XattrNs};
use crate::state::StateDir;
use crate::view::View;

/// What the kernel engine needs that this machine may lack; `Err` names it.
pub fn available() -> Result<()> {
    if !rustix::process::geteuid().is_root() {
        return Err(Error::invalid(
            "the kernel engine needs root (it mounts overlayfs and the layer image); use --engine fuse",
        ));
    }
    let has_overlay = || {
        std::fs::read_to_string("/proc/filesystems").is_ok_and(|t| {
            t.lines()
                .any(|l| l.split_whitespace().last() == Some("overlay"))
        })
    };
    if !has_overlay() {
        let _ = Command::new("modprobe")
            .arg("overlay")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if !has_overlay() {
            return Err(Error::invalid(
                "the kernel engine needs overlayfs, which this kernel does not have; use --engine fuse",
            ));
        }
    }
    if !Path::new("/dev/loop-control").exists() {
        return Err(Error::invalid(
            "the kernel engine needs loop devices (/dev/loop-control) for its layer image; use --engine fuse",
        ));
    }
    let has_mkfs = std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p)
            .chain([PathBuf::from("/sbin"), PathBuf::from("/usr/sbin")])
            .any(|d| d.join("mkfs.ext4").exists())
    });
    if !has_mkfs {
        return Err(Error::invalid(
            "the kernel engine needs mkfs.ext4 (e2fsprogs) for its layer image; install it or use --engine fuse",
        ));
    }
    Ok(())
}

/// The kernel engine's mounts, served by this process.
pub struct KernelStack {
    grant_id: String,
    mountpoint: PathBuf,
    session_dir: PathBuf,
    /// The lower's FUSE threads; `None` once joined.
    fuse: Option<fuser::BackgroundSession>,
    /// Held while the layer is mounted by this process.
    layer_lock: Option<LayerLock>,
    /// The guard, and the pipe whose closing wakes it.
    guard: Option<(Child, std::process::ChildStdin)>,
    /// `/sys/fs/fuse/connections/N` of the lower, to abort it at expiry.
    lower_conn: Option<PathBuf>,
    /// A clone of the detached lower, kept so an undo can mount a fresh
    /// overlay over it (`remount`); dropped once the overlay is gone from
    /// the mountpoint (`watch_overlay`), so the lower ends with it.
    lower_clone: Arc<std::sync::Mutex<Option<OwnedFd>>>,
}

/// The source of a grant's overlay in mountinfo (as the FUSE engine's).
pub fn source_of(grant_id: &str) -> String {
    format!("{SOURCE_PREFIX}{grant_id}")
}

fn lower_dir(session_dir: &Path) -> PathBuf {
    engine::kernel_dir(session_dir).join("lower")
}

/// Mounts the kernel engine's stack for `grant` at `mp`: the layer, the
/// lower view, the guard and the overlay. Nothing is left mounted on error.
pub fn mount(
    state: &StateDir,
    grant: &Grant,
    mp: &Path,
    opts: &MountOptions,
    view: Arc<View>,
) -> Result<KernelStack> {
    let session_dir = state.session_dir(&grant.grant_id);
    engine::make_kernel_dir(&session_dir)?;
    let mut stack = KernelStack {
        grant_id: grant.grant_id.clone(),
        mountpoint: mp.to_path_buf(),
        session_dir: session_dir.clone(),
        fuse: None,
        layer_lock: None,
        guard: None,
        lower_conn: None,
        lower_clone: Default::default(),
    };
    // On error, `stack`'s drop takes down whatever was mounted.
    stack.layer_lock = Some(engine::lock_layer(&session_dir, Duration::from_secs(10))?);
    let layer = engine::layer_dir(&session_dir);
    let image = engine::image_path(&session_dir);
    if !engine::is_mounted(&layer) {
        if !image.exists() {
            let bytes = opts.view.quota_bytes.unwrap_or(grant.max_total_size_bytes);
            let files = opts.view.quota_files.unwrap_or(grant.max_files);
            engine::create_image(&image, bytes, files)?;
        }
        engine::mount_image(&image, &layer)?;
    }
    let (upper, work) = (
        engine::upper_dir(&session_dir),
        engine::work_dir(&session_dir),
    );
    for d in [&upper, &work] {
        std::fs::create_dir_all(d).ctx(|| format!("creating {}", d.display()))?;
    }
    set_mode(&work, 0o700)?;

    // The lower: the read-only view, served before the overlay looks at it.
    let lower = lower_dir(&session_dir);
    std::fs::DirBuilder::new()
        .recursive(true)
        .create(&lower)
        .ctx(|| format!("creating {}", lower.display()))?;
    set_mode(&lower, 0o700)?;
    let config = lower_config(grant, opts, !crate::scope::write_prefixes(grant).is_empty());
    let session = fuser::Session::new(WopFs::new(view), &lower, &config)
        .ctx(|| format!("mounting the lower view of grant {}", grant.grant_id))?;
    stack.fuse = Some(session.spawn().ctx(|| "starting the FUSE threads")?);

    // The overlay's root shows the upper's root: give it the view's.
    let root = rustix::fs::stat(&lower)
        .map_err(|e| Error::io("reading the lower view's root", e.into()))?;
    ensure_fusectl();
    stack.lower_conn = Some(PathBuf::from(format!(
        "/sys/fs/fuse/connections/{}",
        rustix::fs::minor(root.st_dev)
    )));
    rustix::fs::chown(
        &upper,
        Some(rustix::fs::Uid::from_raw(root.st_uid)),
        Some(rustix::fs::Gid::from_raw(root.st_gid)),
    )
    .map_err(|e| {
        Error::io(
            format!("setting the owner of {}", upper.display()),
            e.into(),
        )
    })?;
    set_mode(&upper, root.st_mode & 0o7777)?;

    stack.guard = Some(start_guard(state, grant, mp)?);
    engine::release_reserve(&session_dir);
    let mounted = mount_layers(grant, &session_dir, &lower, mp);
    // Nobody reached the layer before the overlays were up.
    engine::take_reserve(&session_dir);
    if let Some(clone) = mounted? {
        *lock(&stack.lower_clone) = Some(clone);
        watch_overlay(grant, mp, stack.lower_clone.clone())?;
    }
    if engine::record(&session_dir)?.is_none() {
        engine::save_record(
            &session_dir,
            &engine::EngineRecord {
                engine: engine::Engine::Kernel,
                xattrs: Some(XattrNs::Trusted),
            },
        )?;
    }
    Ok(stack)
}

fn lock<T>(m: &std::sync::Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Drops the kept clone of the lower once the grant's overlay is no longer
/// at `mp` (unmounted by hand, by `wopfs umount`, at expiry): then nothing
/// but a lazily detached overlay holds the lower, and its FUSE session
/// ends with the last of them, as without the clone. A poll, as
/// revocation's: one read of mountinfo every 200 ms.
fn watch_overlay(
    grant: &Grant,
    mp: &Path,
    clone: Arc<std::sync::Mutex<Option<OwnedFd>>>,
) -> Result<()> {
    let source = source_of(&grant.grant_id);
    let mp = mp.to_path_buf();
    std::thread::Builder::new()
        .name("overlay-watch".into())
        .spawn(move || loop {
            std::thread::sleep(Duration::from_millis(200));
            let mut held = lock(&clone);
            if held.is_none() {
                return;
            }
            let up = mountinfo::mount_at(&mp)
                .is_some_and(|m| m.fstype == "overlay" && m.source == source);
            if !up {
                tracing::info!(mountpoint = %mp.display(), "the overlay is gone; letting the lower go");
                held.take();
                return;
            }
        })
        .ctx(|| "starting the overlay watch")?;
    Ok(())
}

/// What an undo needs of a kernel engine stack, callable from the control
/// thread (`mount/checkpoint.rs`).
#[derive(Clone)]
pub struct Remount {
    pub grant_id: String,
    pub mountpoint: PathBuf,
    pub session_dir: PathBuf,
    lower_clone: Arc<std::sync::Mutex<Option<OwnedFd>>>,
}

impl Remount {
    /// Replaces every overlay of the view by a fresh one over the same
    /// layers: each new overlay is mounted beneath the old one
    /// (`MOVE_MOUNT_BENEATH`), then the old one is detached, so the
    /// mountpoint never shows anything else. A process holding a file open
    /// in the old overlay keeps it. `between` runs once the new overlays'
    /// places are known, before they are made (the layer is put back then);
    /// if it fails part way, the overlays are replaced all the same (a
    /// fresh overlay shows what the upper now holds; the old one must not
    /// see its upper change under it) and its error returned.
    pub fn replace<T>(&self, between: impl FnOnce() -> Result<T>) -> Result<T> {
        let clone = lock(&self.lower_clone);
        let source = source_of(&self.grant_id);
        let overlays = self.overlays();
        if overlays.is_empty() {
            return Err(Error::busy(format!(
                "no overlay of grant {} is mounted at {}",
                self.grant_id,
                self.mountpoint.display()
            )));
        }
        let out = between();
        let upper = engine::upper_dir(&self.session_dir);
        for o in &overlays {
            let rel = o
                .strip_prefix(&self.mountpoint)
                .map(|r| r.to_string_lossy().into_owned())
                .unwrap_or_default();
            let fresh = if rel.is_empty() {
                let lower = clone.as_ref().ok_or_else(|| {
                    Error::busy("the lower view is not held (the overlay was going down)")
                })?;
                overlay_fd(
                    &self.grant_id,
                    Layer::Fd(lower.as_fd()),
                    &upper,
                    &engine::work_dir(&self.session_dir),
                )?
            } else {
                // The lower is at the mountpoint: a clone of it alone (no
                // submounts) reaches the prefix directory beneath its overlay.
                let lower = open_tree(
                    rustix::fs::CWD,
                    &self.mountpoint,
                    OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
                )
                .map_err(|e| Error::io("cloning the lower view", e.into()))?;
                let dir = prefixes::open_dir(lower.as_fd(), &rel)
                    .map_err(|e| Error::io(format!("opening the write prefix /{rel}"), e.into()))?;
                overlay_fd(
                    &self.grant_id,
                    Layer::Fd(dir.as_fd()),
                    &upper.join(&rel),
                    &prefixes::work_dir(&self.session_dir, &rel),
                )?
            };
            move_mount(
                fresh.as_fd(),
                "",
                rustix::fs::CWD,
                o,
                MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_BENEATH,
            )
            .map_err(|e| {
                Error::io(
                    format!("mounting a fresh overlay at {}", o.display()),
                    e.into(),
                )
            })?;
            // The old one, on top.
            let top = mountinfo::mount_at(o);
            if top.is_some_and(|m| m.fstype == "overlay" && m.source == source) {
                rustix::mount::unmount(o, rustix::mount::UnmountFlags::DETACH).map_err(|e| {
                    Error::io(
                        format!("detaching the old overlay at {}", o.display()),
                        e.into(),
                    )
                })?;
            }
        }
        out
    }

    /// Where the view's overlays are: the mountpoint, or each write prefix.
    pub fn overlays(&self) -> Vec<PathBuf> {
        let source = source_of(&self.grant_id);
        let mut out: Vec<PathBuf> = mountinfo::mounts()
            .into_iter()
            .filter(|m| m.fstype == "overlay" && m.source == source)
            .map(|m| m.mountpoint)
            .filter(|p| p.starts_with(&self.mountpoint))
            .collect();
        out.sort();
        out.dedup();
        out
    }
}

/// Mounts the FUSE control file system at `/sys/fs/fuse/connections` if
/// nothing is there (minimal machines leave it out): expiry and revocation
/// abort the lower's connection through it, so a process holding a cwd in
/// the taken-down overlay gets no more host data. Best effort.
fn ensure_fusectl() {
    let dir = Path::new("/sys/fs/fuse/connections");
    if !dir.is_dir() || mountinfo::mount_at(dir).is_some() {
        return;
    }
    if let Err(e) = rustix::mount::mount(
        "fusectl",
        dir,
        "fusectl",
        rustix::mount::MountFlags::NOSUID
            | rustix::mount::MountFlags::NODEV
            | rustix::mount::MountFlags::NOEXEC,
        None,
    ) {
        tracing::info!(error = %e, "cannot mount fusectl; expiry cannot abort the lower's connection");
    }
}

fn set_mode(p: &Path, mode: u32) -> Result<()> {
    rustix::fs::chmod(p, rustix::fs::Mode::from_raw_mode(mode))
        .map_err(|e| Error::io(format!("setting the mode of {}", p.display()), e.into()))
}

/// The lower's FUSE configuration: read-only, reachable only by the
/// overlay (it does its work with the mounter's credentials, but reads
/// may arrive as the agent, so anyone is let in: no path reaches it).
/// With write prefixes it is at the mountpoint (`at_mountpoint`), named
/// as the view (`wopfs:GRANT`) for `wopfs status` and `wopfs umount`.
fn lower_config(grant: &Grant, opts: &MountOptions, at_mountpoint: bool) -> fuser::Config {
    use fuser::{MountOption, SessionACL};
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(if at_mountpoint {
            source_of(&grant.grant_id)
        } else {
            format!("wopfs-lower:{}", grant.grant_id)
        }),
        MountOption::Subtype("wopfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::RO,
        MountOption::CUSTOM("allow_other".into()),
    ];
    config.acl = SessionACL::All;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config
}

/// The lower's FUSE configuration for the kernel engine rootless: read-only
/// and the mounter's own (the run's child, in its user namespace, is the
/// same user), named as a view so `wopfs status` finds it.
pub fn userns_lower_config(grant: &Grant, opts: &MountOptions) -> fuser::Config {
    use fuser::{MountOption, SessionACL};
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::FSName(source_of(&grant.grant_id)),
        MountOption::Subtype("wopfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::RO,
    ];
    config.acl = SessionACL::Owner;
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config
}

/// Mounts the view at `mp` over the lower mounted at `lower`: one overlay
/// of the whole view, or, with write prefixes, the lower itself with an
/// overlay over each prefix (`prefixes`). Returns a clone of the lower
/// when it is detached under one overlay of the whole view.
fn mount_layers(
    grant: &Grant,
    session_dir: &Path,
    lower: &Path,
    mp: &Path,
) -> Result<Option<OwnedFd>> {
    let grant_id = &grant.grant_id;
    let (upper, work) = (
        engine::upper_dir(session_dir),
        engine::work_dir(session_dir),
    );
    let wanted = crate::scope::write_prefixes(grant);
    let anchors = if wanted.is_empty() {
        vec![String::new()]
    } else {
        // Where the prefixes are in the merged view: a whole overlay,
        // attached nowhere and dropped before the layer is touched.
        let clone = open_tree(
            rustix::fs::CWD,
            lower,
            OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
        )
        .map_err(|e| Error::io("cloning the lower view", e.into()))?;
        let whole = overlay_fd(grant_id, Layer::Fd(clone.as_fd()), &upper, &work)?;
        prefixes::anchors(whole.as_fd(), &wanted)
    };
    if anchors.iter().any(String::is_empty) {
        if !wanted.is_empty() {
            tracing::warn!(
                "no write prefix is a directory in the view yet: the whole view is writable, and the commit refuses what lands outside the prefixes"
            );
        }
        let (overlay, clone) = make_overlay(grant_id, lower, &upper, &work)?;
        move_mount(
            overlay.as_fd(),
            "",
            rustix::fs::CWD,
            mp,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| {
            Error::io(
                format!("mounting the overlay at {}", mp.display()),
                e.into(),
            )
        })?;
        return Ok(clone);
    }
    for a in anchors.iter().filter(|a| !wanted.contains(a)) {
        tracing::info!(dir = %a, "a write prefix does not exist yet: its nearest directory is writable, and the commit refuses what lands outside the prefix");
    }
    let lower_root = rustix::fs::open(
        lower,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io("opening the lower view", e.into()))?;
    for a in &anchors {
        prefixes::prepare_upper(session_dir, lower_root.as_fd(), a)?;
    }
    drop(lower_root);
    move_mount(
        rustix::fs::CWD,
        lower,
        rustix::fs::CWD,
        mp,
        MoveMountFlags::empty(),
    )
    .map_err(|e| Error::io(format!("mounting the view at {}", mp.display()), e.into()))?;
    let root = rustix::fs::open(
        mp,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| Error::io(format!("opening {}", mp.display()), e.into()))?;
    for a in &anchors {
        mount_prefix(grant_id, session_dir, root.as_fd(), a)?;
    }
    Ok(None)
}

/// Mounts the overlay of the write prefix (anchor) `rel` over its directory
/// beneath `root` (the lower view at the mountpoint).
fn mount_prefix(
    grant_id: &str,
    session_dir: &Path,
    root: std::os::fd::BorrowedFd,
    rel: &str,
) -> Result<()> {
    let failed = |what: &str, e: rustix::io::Errno| {
        Error::io(format!("{what} the write prefix /{rel}"), e.into())
    };
    let dir = prefixes::open_dir(root, rel).map_err(|e| failed("opening", e))?;
    let overlay = overlay_fd(
        grant_id,
        Layer::Fd(dir.as_fd()),
        &engine::upper_dir(session_dir).join(rel),
        &prefixes::work_dir(session_dir, rel),
    )?;
    move_mount(
        overlay.as_fd(),
        "",
        dir.as_fd(),
        "",
        MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
    )
    .map_err(|e| failed("mounting the overlay of", e))
}

/// Creates the overlay (not yet attached anywhere), and returns the clone
/// of the lower it is over. The lower is cloned and its path detached when
/// the kernel takes layers by fd; otherwise it is named by its path and
/// stays mounted in the state dir.
fn make_overlay(
    grant_id: &str,
    lower: &Path,
    upper: &Path,
    work: &Path,
) -> Result<(OwnedFd, Option<OwnedFd>)> {
    let clone = open_tree(
        rustix::fs::CWD,
        lower,
        OpenTreeFlags::OPEN_TREE_CLONE | OpenTreeFlags::OPEN_TREE_CLOEXEC,
    )
    .ok();
    if let Some(clone) = clone {
        match overlay_fd(grant_id, Layer::Fd(clone.as_fd()), upper, work) {
            Ok(fd) => {
                // The clone and the overlay keep the lower alive.
                let _ = rustix::mount::unmount(lower, rustix::mount::UnmountFlags::DETACH);
                return Ok((fd, Some(clone)));
            }
            Err(e) => {
                tracing::info!(error = %e, "the kernel does not take a detached lower; naming it by path")
            }
        }
    }
    Ok((overlay_fd(grant_id, Layer::Path(lower), upper, work)?, None))
}

pub(super) enum Layer<'a> {
    Fd(std::os::fd::BorrowedFd<'a>),
    Path(&'a Path),
}

pub(super) fn overlay_fd(
    grant_id: &str,
    lower: Layer,
    upper: &Path,
    work: &Path,
) -> Result<OwnedFd> {
    let fs = fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC)
        .map_err(|e| Error::io("opening overlayfs (fsopen)", e.into()))?;
    let failed = |what: &str, e: rustix::io::Errno| {
        let log = fs_log(&fs);
        Error::invalid(format!(
            "mounting the overlay: {what}: {e}{}",
            if log.is_empty() {
                String::new()
            } else {
                format!(" ({log})")
            }
        ))
    };
    match lower {
        Layer::Fd(fd) => {
            fsconfig_set_fd(&fs, "lowerdir+", fd).map_err(|e| failed("lowerdir+", e))?
        }
        Layer::Path(p) => {
            fsconfig_set_string(&fs, "lowerdir", p).map_err(|e| failed("lowerdir", e))?
        }
    }
    fsconfig_set_string(&fs, "upperdir", upper).map_err(|e| failed("upperdir", e))?;
    fsconfig_set_string(&fs, "workdir", work).map_err(|e| failed("workdir", e))?;
    // Renames and metadata stay plain entries the controller reads; a
    // redirect planted in the upper is never followed.
    for (k, v) in [
        ("redirect_dir", "nofollow"),
        ("index", "off"),
        ("metacopy", "off"),
        ("xino", "off"),
        ("uuid", "null"),
        ("source", &source_of(grant_id)),
    ] {
        fsconfig_set_string(&fs, k, v).map_err(|e| failed(k, e))?;
    }
    fsconfig_create(&fs).map_err(|e| failed("create", e))?;
    fsmount(
        &fs,
        FsMountFlags::FSMOUNT_CLOEXEC,
        MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
    .map_err(|e| failed("fsmount", e))
}

/// The messages the kernel left on a filesystem context (`e overlayfs: …`).
fn fs_log(fs: &OwnedFd) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 512];
    for _ in 0..16 {
        match rustix::io::read(fs, &mut buf) {
            Ok(n) if n > 0 => out.push(String::from_utf8_lossy(&buf[..n]).trim().to_string()),
            _ => break,
        }
    }
    out.join("; ")
}

/// Starts the guard: `wopfs guard`, which waits for its stdin to close
/// (this process ending, however it ends) and then takes the stack down.
fn start_guard(
    state: &StateDir,
    grant: &Grant,
    mp: &Path,
) -> Result<(Child, std::process::ChildStdin)> {
    use std::os::unix::process::CommandExt;
    let exe = std::env::current_exe().ctx(|| "locating the wopfs binary")?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.log_path(&grant.grant_id))
        .ctx(|| "opening the session log for the guard")?;
    let mut cmd = Command::new(exe);
    cmd.arg("--state-dir")
        .arg(state.path())
        .arg("guard")
        .arg(&grant.grant_id)
        .arg(mp)
        .current_dir("/")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(log.try_clone().ctx(|| "sharing the log")?);
    // SAFETY: setsid(2) is async-signal-safe; the guard leaves the
    // terminal's process group, so a Ctrl-C meant for the daemon does
    // not end it first.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd.spawn().ctx(|| "starting the guard")?;
    let stdin = child
        .stdin
        .take()
        .ok_or_else(|| Error::invalid("the guard has no stdin"))?;
    Ok((child, stdin))
}

/// `wopfs guard GRANT MOUNTPOINT`: waits until stdin closes, then unmounts
/// the grant's overlay at `mp` (only if it is still that overlay) and its
/// layer (under the layer lock, so a new daemon's is never touched).
pub fn guard(state: &StateDir, grant_id: &str, mp: &Path) -> Result<()> {
    let mut sink = [0u8; 64];
    let mut stdin = std::io::stdin();
    while matches!(stdin.read(&mut sink), Ok(n) if n > 0) {}
    let session_dir = state.session_dir(grant_id);
    take_down(grant_id, mp, &session_dir, Duration::from_secs(10))
}

/// Unmounts what a dead daemon left of a grant's stack: its overlay at
/// `mp` (if it is that grant's), the lower if it was left by path, and
/// the layer (under the layer lock, waiting up to `wait`).
pub fn take_down(grant_id: &str, mp: &Path, session_dir: &Path, wait: Duration) -> Result<()> {
    let source = source_of(grant_id);
    // The overlay, or the lower view with the prefixes' overlays on it.
    if mountinfo::mount_at(mp).is_some_and(|m| m.source == source) {
        match rustix::mount::unmount(mp, rustix::mount::UnmountFlags::DETACH) {
            Ok(()) => tracing::info!(mountpoint = %mp.display(), "took down the overlay"),
            Err(e) => tracing::warn!(error = %e, "cannot unmount the overlay"),
        }
    }
    let lower = lower_dir(session_dir);
    if engine::is_mounted(&lower) {
        let _ = rustix::mount::unmount(&lower, rustix::mount::UnmountFlags::DETACH);
    }
    let layer = engine::layer_dir(session_dir);
    if engine::is_mounted(&layer) {
        let _lock = engine::lock_layer(session_dir, wait)?;
        engine::unmount_layer(&layer)?;
    }
    Ok(())
}

/// Where the overlays of a grant are mounted in this namespace (a live
/// view, or one left half-dead by a daemon killed with its guard): each
/// named by the topmost mount of the grant above it (the view's
/// mountpoint, also when the overlays are its write prefixes').
pub fn overlays_of(grant_id: &str) -> Vec<PathBuf> {
    let source = source_of(grant_id);
    let mounts: Vec<mountinfo::MountEntry> = mountinfo::mounts()
        .into_iter()
        .filter(|m| m.source == source)
        .collect();
    let mut out: Vec<PathBuf> = mounts
        .iter()
        .filter(|m| m.fstype == "overlay")
        .filter_map(|o| {
            mounts
                .iter()
                .filter(|m| o.mountpoint.starts_with(&m.mountpoint))
                .min_by_key(|m| m.mountpoint.components().count())
                .map(|m| m.mountpoint.clone())
        })
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Unmounts (not lazily) the overlays of the write prefixes of grant
/// `grant_id`'s view at `mp`, deepest first, and returns them; if one is
/// busy, those already unmounted are mounted again and the error says so.
pub fn unmount_prefix_binds(session_dir: &Path, grant_id: &str, mp: &Path) -> Result<Vec<PathBuf>> {
    let source = source_of(grant_id);
    let mut binds: Vec<PathBuf> = mountinfo::mounts()
        .into_iter()
        .filter(|m| m.fstype == "overlay" && m.source == source)
        .map(|m| m.mountpoint)
        .filter(|p| p != mp && p.starts_with(mp))
        .collect();
    binds.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    binds.dedup();
    let mut done = Vec::new();
    for b in binds {
        if let Err(e) = super::unmount(&b, false) {
            restore_prefix_binds(session_dir, grant_id, mp, &done);
            return Err(e);
        }
        done.push(b);
    }
    Ok(done)
}

/// Mounts again the write prefixes' overlays `binds` (from
/// `unmount_prefix_binds`) of grant `grant_id`'s view at `mp`.
pub fn restore_prefix_binds(session_dir: &Path, grant_id: &str, mp: &Path, binds: &[PathBuf]) {
    let Ok(root) = rustix::fs::open(
        mp,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) else {
        return;
    };
    for rel in binds.iter().filter_map(|b| b.strip_prefix(mp).ok()) {
        let rel = rel.to_string_lossy();
        if let Err(e) = mount_prefix(grant_id, session_dir, root.as_fd(), &rel) {
            tracing::warn!(error = %e, "cannot mount the write prefix again");
        }
    }
}

impl KernelStack {
    /// Waits until the overlay is unmounted (the lower's session ends with
    /// it), then takes down the rest.
    pub fn wait(mut self) -> Result<()> {
        let joined = match self.fuse.take() {
            Some(bg) => bg.join().ctx(|| "serving the lower view"),
            None => Ok(()),
        };
        self.finish();
        joined
    }

    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// What an undo replaces the overlays with.
    pub fn remount(&self) -> Remount {
        Remount {
            grant_id: self.grant_id.clone(),
            mountpoint: self.mountpoint.clone(),
            session_dir: self.session_dir.clone(),
            lower_clone: self.lower_clone.clone(),
        }
    }

    /// Notifications to the lower's kernel side (revocation).
    pub fn notifier(&self) -> Option<fuser::Notifier> {
        self.fuse.as_ref().map(fuser::BackgroundSession::notifier)
    }

    /// What ends the view at expiry, callable from another thread.
    pub fn expiry(&self) -> Expiry {
        Expiry {
            mountpoint: self.mountpoint.clone(),
            lower_conn: self.lower_conn.clone(),
            layer: engine::layer_dir(&self.session_dir),
        }
    }

    /// Unmounts the overlay (lazily if busy) and waits for the lower.
    pub fn stop(mut self) {
        let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
        lock(&self.lower_clone).take();
        if let Some(bg) = self.fuse.take() {
            let _ = bg.join();
        }
        self.finish();
    }

    /// The layer unmounted, the guard told to go.
    fn finish(&mut self) {
        lock(&self.lower_clone).take();
        if let Some(bg) = self.fuse.take() {
            // Not joined: the overlay is still up (an error path).
            let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
            drop(bg);
        }
        let lower = lower_dir(&self.session_dir);
        if engine::is_mounted(&lower) {
            let _ = rustix::mount::unmount(&lower, rustix::mount::UnmountFlags::DETACH);
        }
        if let Some(_lock) = self.layer_lock.take() {
            let layer = engine::layer_dir(&self.session_dir);
            if let Err(e) = engine::unmount_layer(&layer) {
                tracing::warn!(grant = %self.grant_id, error = %e, "cannot unmount the layer");
            }
        }
        if let Some((mut child, stdin)) = self.guard.take() {
            drop(stdin);
            let _ = child.wait();
        }
    }
}

/// Ends a kernel engine view when its grant expires: the overlay is
/// unmounted (lazily: a process inside keeps what it holds open until it
/// closes it, unlike the FUSE engine, whose every call answers EACCES) and
/// the lower's FUSE connection aborted, so host files read through it
/// fail at once, also in copies of the mount (a container's, a run's).
pub struct Expiry {
    mountpoint: PathBuf,
    lower_conn: Option<PathBuf>,
    /// The layer (upper and work), made read-only at revocation.
    layer: PathBuf,
}

impl Expiry {
    pub fn end(&self) {
        tracing::info!(mountpoint = %self.mountpoint.display(), "the grant expired; taking the view down");
        self.take_down();
    }

    /// The same at revocation (`mount/revoke.rs`), and the layer's
    /// filesystem made read-only: a process whose cwd is inside the
    /// detached overlay still sees its own upper files there, but can
    /// write no more (EROFS). The remount fails (EBUSY) while a file is
    /// open for writing in the layer; then writes through that overlay go
    /// on until the process lets go (the view is gone from every path).
    pub fn revoke(&self) {
        tracing::info!(mountpoint = %self.mountpoint.display(), "the grant was revoked; taking the view down");
        self.take_down();
        use rustix::mount::MountFlags;
        let flags = MountFlags::RDONLY | MountFlags::NOSUID | MountFlags::NODEV;
        if let Err(e) = rustix::mount::mount_remount(&self.layer, flags, "") {
            tracing::warn!(error = %e, layer = %self.layer.display(), "cannot make the layer read-only");
        }
    }

    fn take_down(&self) {
        let _ = rustix::mount::unmount(&self.mountpoint, rustix::mount::UnmountFlags::DETACH);
        if let Some(conn) = &self.lower_conn {
            if let Err(e) = std::fs::write(conn.join("abort"), b"1") {
                tracing::debug!(error = %e, "cannot abort the lower's connection (it may be gone already)");
            }
        }
    }
}

impl Drop for KernelStack {
    fn drop(&mut self) {
        self.finish();
    }
}

/// The kernel engine rootless, in `wopfs run`'s user namespace: the daemon
/// serves the read-only lower view (through fusermount3) and the run's
/// child, once in its own user and mount namespace, mounts the overlay
/// (`userxattr`, marks in `user.overlay.*`) over it with the upper and
/// work dirs as plain directories in the session dir (no image: a user
/// cannot mount one). What it cannot have without root: a live quota (the
/// commit refuses a set beyond the grant's limits) and write prefixes as
/// mounts (the commit refuses changes outside them; `wopfs diff` marks
/// them).
pub struct UsernsOverlay {
    lower: std::ffi::CString,
    upper: std::ffi::CString,
    work: std::ffi::CString,
    source: std::ffi::CString,
}

fn cstring(p: &Path) -> Result<std::ffi::CString> {
    use std::os::unix::ffi::OsStrExt;
    std::ffi::CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} contains a NUL byte", p.display())))
}

impl UsernsOverlay {
    /// Prepares the plain-directory layer of `grant`'s session (the upper's
    /// root takes the lower view's owner and mode) and records the engine.
    pub fn prepare(state: &StateDir, grant: &Grant, lower_mp: &Path) -> Result<UsernsOverlay> {
        let session = state.session_dir(&grant.grant_id);
        let root = rustix::fs::stat(lower_mp)
            .map_err(|e| Error::io("reading the lower view's root", e.into()))?;
        // An earlier run's upper root keeps the mode it has.
        if !engine::upper_dir(&session).exists() {
            engine::make_dir_layer(&session, root.st_mode)?;
        }
        if engine::record(&session)?.is_none() {
            engine::save_record(
                &session,
                &engine::EngineRecord {
                    engine: engine::Engine::Kernel,
                    xattrs: Some(XattrNs::User),
                },
            )?;
        }
        Ok(UsernsOverlay {
            lower: cstring(lower_mp)?,
            upper: cstring(&engine::upper_dir(&session))?,
            work: cstring(&engine::work_dir(&session))?,
            source: std::ffi::CString::new(source_of(&grant.grant_id))
                .map_err(|_| Error::invalid("a grant id with a NUL byte"))?,
        })
    }

    /// Mounts the overlay at `at`. Runs in the child between fork and exec,
    /// inside its user and mount namespace: raw system calls on the strings
    /// prepared before the fork, nothing that allocates.
    pub fn mount_at(&self, at: &std::ffi::CStr) -> std::io::Result<()> {
        let io = |e: rustix::io::Errno| std::io::Error::from_raw_os_error(e.raw_os_error());
        let fs = fsopen(c"overlay", FsOpenFlags::FSOPEN_CLOEXEC).map_err(io)?;
        if fsconfig_set_string(&fs, c"lowerdir+", self.lower.as_c_str()).is_err() {
            fsconfig_set_string(&fs, c"lowerdir", self.lower.as_c_str()).map_err(io)?;
        }
        fsconfig_set_string(&fs, c"upperdir", self.upper.as_c_str()).map_err(io)?;
        fsconfig_set_string(&fs, c"workdir", self.work.as_c_str()).map_err(io)?;
        rustix::mount::fsconfig_set_flag(&fs, c"userxattr").map_err(io)?;
        for (k, v) in [
            (c"redirect_dir", c"nofollow"),
            (c"index", c"off"),
            (c"metacopy", c"off"),
            (c"xino", c"off"),
            (c"uuid", c"null"),
        ] {
            fsconfig_set_string(&fs, k, v).map_err(io)?;
        }
        fsconfig_set_string(&fs, c"source", self.source.as_c_str()).map_err(io)?;
        fsconfig_create(&fs).map_err(io)?;
        let mnt = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_NOSUID | MountAttrFlags::MOUNT_ATTR_NODEV,
        )
        .map_err(io)?;
        move_mount(
            mnt.as_fd(),
            c"",
            rustix::fs::CWD,
            at,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(io)?;
        // The lower is the overlay's now: no path in the namespace reaches it.
        let _ = rustix::mount::unmount(self.lower.as_c_str(), rustix::mount::UnmountFlags::DETACH);
        Ok(())
    }
}

/// Whether this user can mount an overlay in a user namespace here (the
/// kernel allows unprivileged overlay mounts, user namespaces are not
/// switched off): tried once on scratch dirs in a child process.
pub fn userns_available() -> Result<()> {
    use std::os::unix::process::CommandExt;
    let scratch = tempfile::Builder::new()
        .prefix("wopfs-probe.")
        .tempdir()
        .ctx(|| "making a scratch dir for the user namespace probe")?;
    let d = |n: &str| -> Result<std::ffi::CString> {
        let p = scratch.path().join(n);
        std::fs::create_dir(&p).ctx(|| format!("creating {}", p.display()))?;
        cstring(&p)
    };
    let probe = UsernsOverlay {
        lower: d("lower")?,
        upper: d("upper")?,
        work: d("work")?,
        source: std::ffi::CString::new("wopfs-probe").map_err(|_| Error::invalid("NUL"))?,
    };
    let at = d("mnt")?;
    let maps = super::userns::UserMaps::of_caller();
    let mut cmd = Command::new(std::env::current_exe().ctx(|| "locating the wopfs binary")?);
    cmd.arg("--version")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    // SAFETY: raw system calls on data prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            maps.enter()?;
            probe.mount_at(&at)
        });
    }
    let status = cmd.status().map_err(|e| {
        Error::invalid(format!(
            "the kernel engine rootless needs overlay mounts in a user namespace, which this machine refuses ({e}); use --engine fuse"
        ))
    })?;
    let inner = scratch.path().join("work/work");
    let _ = std::fs::set_permissions(
        &inner,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o700),
    );
    if status.success() {
        Ok(())
    } else {
        Err(Error::invalid(
            "the user namespace probe failed; use --engine fuse",
        ))
    }
}
