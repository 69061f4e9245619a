//! Mounting a view: the daemon that serves it, the background start that
//! returns once the mount is ready, and a clean unmount. A writable
//! overlay view is served by one of two engines: the FUSE daemon's own
//! overlay, or kernel overlayfs over the read-only FUSE view (`kernel.rs`).

pub mod checkpoint;
pub mod control;
mod denied;
pub mod kernel;
mod prefixes;
pub mod revoke;
pub mod userns;

use std::io::{BufRead, BufReader, Read};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fuser::{Config, MountOption, SessionACL};

use crate::clock::{Clock, SystemClock};
use crate::error::{Error, IoContext, Result};
use crate::fuse::WopFs;
use crate::grant::Grant;
use crate::mountinfo;
use crate::overlay::engine::{self, Engine};
use crate::policy::Mode;
use crate::state::{MountRecord, StateDir};
use crate::view::{View, ViewOptions};

/// The engine asked for a writable overlay view (`--engine`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineChoice {
    /// The kernel engine where an overlay mount is possible, else FUSE.
    #[default]
    Auto,
    /// Kernel overlayfs over the read-only FUSE view; refused where it
    /// cannot run, saying why.
    Kernel,
    /// The overlay inside the FUSE daemon.
    Fuse,
}

/// How a view is mounted.
#[derive(Clone, Debug)]
pub struct MountOptions {
    pub view: ViewOptions,
    /// The engine of a `read_write_overlay` view.
    pub engine: EngineChoice,
    /// FUSE request threads.
    pub threads: usize,
    /// Let users other than the mounter use the view.
    pub allow_other: bool,
    /// Served for `wopfs run`, whose child has its own user namespace: the
    /// kernel engine can run rootless there.
    pub in_run: bool,
}

impl Default for MountOptions {
    fn default() -> Self {
        MountOptions {
            view: ViewOptions::default(),
            engine: EngineChoice::Auto,
            threads: 4,
            allow_other: false,
            in_run: false,
        }
    }
}

/// The line a daemon prints on stdout once its mount is ready.
const READY: &str = "wopfs-ready";

/// Set when the FUSE session loop has ended (the kernel closed the connection).
static SESSION_ENDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// The checks every way of serving a grant makes before it starts
/// (`wopfs mount`, its daemon, `wopfs run`, named by `what`), so the user
/// gets a clear error: a grant live by `clock`, no interrupted commit, a
/// session neither committed nor rejected, and no mount of it already.
pub fn check_servable(
    state: &StateDir,
    grant: &Grant,
    clock: &dyn Clock,
    what: &str,
) -> Result<()> {
    grant.check_live(clock)?;
    state.check_not_revoked(&grant.grant_id, what)?;
    let session = state.session_dir(&grant.grant_id);
    crate::session::ensure_no_interrupted_commit(&session, &grant.grant_id)?;
    crate::session::SessionState::load(&session)?.check_not_ended(&grant.grant_id, what)?;
    if let Some(rec) = state.live_mount(&grant.grant_id) {
        if mountinfo::mount_at(&rec.mountpoint).is_some() {
            return Err(Error::invalid(format!(
                "grant {} is already mounted at {} (pid {}); unmount it first",
                grant.grant_id,
                rec.mountpoint.display(),
                rec.pid
            )));
        }
    }
    Ok(())
}

/// Checks everything a mount needs before any process is started
/// ([`check_servable`], and a usable mountpoint); returns the mountpoint's
/// canonical path.
pub fn preflight(
    state: &StateDir,
    grant: &Grant,
    mountpoint: &Path,
    clock: &dyn Clock,
) -> Result<PathBuf> {
    check_servable(state, grant, clock, "mount")?;
    mountinfo::check_mountpoint(mountpoint, &grant.root, state.path())
}

/// A view being served: the FUSE daemon's session, or the kernel
/// engine's stack (whose lower is already being served).
pub enum Served {
    Fuse(fuser::Session<WopFs>),
    Kernel(kernel::KernelStack),
    /// The kernel engine rootless: only the lower view is served here; the
    /// overlay is mounted by `wopfs run`'s child in its user namespace.
    Lower(fuser::Session<WopFs>),
}

/// A view served in the background (`wopfs run`).
pub enum Running {
    Fuse(fuser::BackgroundSession),
    Kernel(kernel::KernelStack),
}

impl Served {
    /// Serves until the view is unmounted.
    pub fn run(self) -> Result<()> {
        match self {
            Served::Fuse(s) | Served::Lower(s) => s.run().ctx(|| "serving the view"),
            Served::Kernel(k) => k.wait(),
        }
    }

    /// Serves in the background.
    pub fn spawn(self) -> Result<Running> {
        Ok(match self {
            Served::Fuse(s) | Served::Lower(s) => {
                Running::Fuse(s.spawn().ctx(|| "starting the FUSE threads")?)
            }
            Served::Kernel(k) => Running::Kernel(k),
        })
    }
}

impl Served {
    /// What ends a kernel engine view at expiry (the FUSE engine's view
    /// answers EACCES by itself).
    pub fn expiry(&self) -> Option<kernel::Expiry> {
        match self {
            Served::Fuse(_) | Served::Lower(_) => None,
            Served::Kernel(k) => Some(k.expiry()),
        }
    }
}

/// Ends the view when `grant` expires by `clock` (checked every second,
/// so a moved clock counts too).
pub fn watch_expiry(
    grant: &Grant,
    clock: crate::clock::SharedClock,
    end: kernel::Expiry,
) -> Result<()> {
    if grant.expires_at.is_none() {
        return Ok(());
    }
    let grant = grant.clone();
    std::thread::Builder::new()
        .name("expiry".into())
        .spawn(move || loop {
            if grant.is_expired(&*clock).unwrap_or(true) {
                end.end();
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        })
        .ctx(|| "starting the expiry thread")?;
    Ok(())
}

impl Running {
    /// Once the view is unmounted: waits for the threads and takes down
    /// what is left (the kernel engine's layer and guard).
    pub fn stop(self) {
        match self {
            Running::Fuse(bg) => drop(bg),
            Running::Kernel(k) => k.stop(),
        }
    }
}

/// The engine a grant's view gets: `None` for read-only and direct views.
/// A session keeps the engine it started with (its layer is only readable
/// by that engine); `auto` picks the kernel engine where it can run.
pub fn choose_engine(
    state: &StateDir,
    grant: &Grant,
    choice: EngineChoice,
    in_run: bool,
) -> Result<Option<Engine>> {
    if grant.mode != Mode::ReadWriteOverlay {
        // WOPFS_ENGINE is a default for writable views; only the flag
        // itself asks the impossible of another view.
        let from_env = std::env::var("WOPFS_ENGINE").is_ok_and(|v| v == "kernel");
        if choice == EngineChoice::Kernel && !from_env {
            return Err(Error::invalid(format!(
                "--engine kernel is for read_write_overlay views; grant {} is {:?} (its view has no overlay)",
                grant.grant_id, grant.mode
            )));
        }
        return Ok(None);
    }
    let session = state.session_dir(&grant.grant_id);
    let rec = engine::record(&session)?;
    let started = match &rec {
        Some(r) => Some(r.engine),
        None if session.join("overlay").join("journal.jsonl").exists() => Some(Engine::Fuse),
        None => None,
    };
    let chosen = match (choice, started) {
        (EngineChoice::Auto, Some(e)) => e,
        (EngineChoice::Kernel, Some(Engine::Fuse)) | (EngineChoice::Fuse, Some(Engine::Kernel)) => {
            let e = started.map_or("?", |e| e.name());
            return Err(Error::invalid(format!(
                "grant {}'s session was started with the {e} engine, and its changes are only readable by it; mount it with --engine {e} (or auto)",
                grant.grant_id
            )));
        }
        (EngineChoice::Kernel, _) => Engine::Kernel,
        (EngineChoice::Fuse, _) => Engine::Fuse,
        (EngineChoice::Auto, None) => {
            let root = rustix::process::geteuid().is_root();
            auto_engine(root, in_run, kernel::available, kernel::userns_available)
        }
    };
    if chosen == Engine::Kernel {
        let rootless = !rustix::process::geteuid().is_root();
        let dir_layer = rec.as_ref().is_some_and(engine::is_dir_layer);
        let why = |e: Error| Error::invalid(format!("grant {}: {e}", grant.grant_id));
        match (rootless, in_run, dir_layer) {
            (false, _, false) => kernel::available().map_err(why)?,
            (true, true, _) => kernel::userns_available().map_err(why)?,
            (true, false, _) => {
                return Err(why(Error::invalid(
                    "the kernel engine needs root, or wopfs run (whose user namespace can mount the overlay rootless); use --engine fuse",
                )))
            }
            (false, _, true) => {
                return Err(why(Error::invalid(
                    "this session's kernel layer was made rootless by wopfs run (plain directories, no quota image); continue it with wopfs run as its owner",
                )))
            }
        }
    }
    Ok(Some(chosen))
}

/// What `auto` picks for a new session: the kernel engine as root (overlay,
/// loop devices and mkfs.ext4 present), and for a plain user inside `wopfs
/// run` where the kernel lets a user namespace mount overlayfs over FUSE;
/// the fuse engine elsewhere, logging why. The probes run only where they
/// matter (the user namespace one forks a process).
///
/// Rootless, the kernel engine has no live quota (no size-limited file
/// system a user can mount survives the run); the run's command can write
/// the user's other files anyway, so there the grant's limits bound the
/// change set, checked when the run ends and at commit, not the disk.
fn auto_engine(
    root: bool,
    in_run: bool,
    probe_root: impl FnOnce() -> Result<()>,
    probe_userns: impl FnOnce() -> Result<()>,
) -> Engine {
    let probe = match (root, in_run) {
        (true, _) => probe_root(),
        (false, true) => probe_userns(),
        (false, false) => Err(Error::invalid(
            "a plain user's view outside wopfs run cannot mount overlayfs where others see it",
        )),
    };
    match probe {
        Ok(()) => Engine::Kernel,
        Err(e) => {
            tracing::info!(reason = %e, "auto: the fuse engine");
            Engine::Fuse
        }
    }
}

/// The view of `grant` served on `mp` by the engine `opts` asks for, with
/// the session lock held shared: keep it until the process ends, so no
/// commit runs while the view is served. Returns the engine used.
pub fn open_session(
    state: &StateDir,
    grant: &Grant,
    mp: &Path,
    opts: &MountOptions,
) -> Result<(crate::session::SessionLock, Served, Option<Engine>)> {
    let engine = choose_engine(state, grant, opts.engine, opts.in_run)?;
    let session = state.session_dir(&grant.grant_id);
    let lock = crate::session::lock(&session, false, &grant.grant_id)?;
    crate::session::ensure_no_interrupted_commit(&session, &grant.grant_id)?;
    if engine == Some(Engine::Kernel) {
        let view_opts = ViewOptions {
            overlay_lower: true,
            ..opts.view.clone()
        };
        let view = Arc::new(View::new(grant, Some(&session), view_opts)?);
        if !rustix::process::geteuid().is_root() {
            // `choose_engine` let it through only for `wopfs run`.
            let lower = fuser::Session::new(
                WopFs::new(view.clone()),
                mp,
                &kernel::userns_lower_config(grant, opts),
            )
            .ctx(|| format!("mounting the lower view of grant {}", grant.grant_id))?;
            // The overlay is the run's child's, in its namespace: only the
            // lower can be emptied from here.
            revoke::watch(
                state,
                &grant.grant_id,
                revoke::Ender {
                    view: Arc::downgrade(&view),
                    notifier: lower.notifier(),
                    take_down: None,
                },
            )?;
            control::serve(&session, checkpoint::lower_handler(&session))?;
            return Ok((lock, Served::Lower(lower), engine));
        }
        match kernel::mount(state, grant, mp, opts, view.clone()) {
            Ok(stack) => {
                if let Some(notifier) = stack.notifier() {
                    revoke::watch(
                        state,
                        &grant.grant_id,
                        revoke::Ender {
                            view: Arc::downgrade(&view),
                            notifier,
                            take_down: Some(stack.expiry()),
                        },
                    )?;
                }
                control::serve(&session, checkpoint::kernel_handler(stack.remount()))?;
                return Ok((lock, Served::Kernel(stack), engine));
            }
            Err(e) if opts.engine == EngineChoice::Auto && engine::record(&session)?.is_none() => {
                tracing::warn!(error = %e, "auto: the kernel engine cannot mount here; using the fuse engine");
            }
            Err(e) => return Err(e),
        }
    }
    let view = Arc::new(View::new(grant, Some(&session), opts.view.clone())?);
    let fuse = fuser::Session::new(WopFs::new(view.clone()), mp, &fuse_config(grant, opts))
        .ctx(|| format!("mounting grant {} at {}", grant.grant_id, mp.display()))?;
    revoke::watch(
        state,
        &grant.grant_id,
        revoke::Ender {
            view: Arc::downgrade(&view),
            notifier: fuse.notifier(),
            take_down: None,
        },
    )?;
    if grant.mode == Mode::ReadWriteOverlay {
        control::serve(
            &session,
            checkpoint::fuse_handler(&session, Arc::downgrade(&view), fuse.notifier()),
        )?;
    }
    let engine = engine.map(|_| Engine::Fuse);
    Ok((lock, Served::Fuse(fuse), engine))
}

/// The FUSE mount configuration of a grant's view.
pub fn fuse_config(grant: &Grant, opts: &MountOptions) -> Config {
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName(format!("{}{}", mountinfo::SOURCE_PREFIX, grant.grant_id)),
        MountOption::Subtype("wopfs".into()),
        MountOption::DefaultPermissions,
        MountOption::NoDev,
        MountOption::NoSuid,
    ];
    if grant.mode == Mode::ReadOnly {
        config.mount_options.push(MountOption::RO);
    }
    // allow_other lets other users (a container's uid) in; the kernel's
    // default_permissions still checks every access against the modes.
    config.acl = if opts.allow_other {
        config
            .mount_options
            .push(MountOption::CUSTOM("allow_other".into()));
        SessionACL::All
    } else {
        SessionACL::Owner
    };
    config.n_threads = Some(opts.threads.max(1));
    config.clone_fd = true;
    config
}

/// Serves the view in this process until it is unmounted or signalled.
/// With `notify`, prints the ready line on stdout once the mount is up and
/// then points stdout and stderr at the session log.
pub fn serve(
    state: &StateDir,
    grant: &Grant,
    mountpoint: &Path,
    opts: &MountOptions,
    notify: bool,
) -> Result<()> {
    let mp = preflight(state, grant, mountpoint, &*opts.view.clock)?;
    // Modes of new entries arrive with the caller's umask applied already;
    // the daemon's own must not strip more. Files of its own name their modes.
    rustix::process::umask(rustix::fs::Mode::empty());
    let (opts, denied) = keep_denied(state, grant, opts)?;
    let opts = &opts;
    let (_lock, session, engine) = open_session(state, grant, &mp, opts)?;
    if let Some(end) = session.expiry() {
        watch_expiry(grant, opts.view.clock.clone(), end)?;
    }
    state.write_mount_record(
        &grant.grant_id,
        &MountRecord {
            pid: std::process::id(),
            mountpoint: mp.clone(),
            run: false,
            engine,
        },
    )?;
    spawn_signal_handler(
        mp.clone(),
        state.path().to_path_buf(),
        grant.grant_id.clone(),
    )?;
    if notify {
        announce_ready(&state.log_path(&grant.grant_id))?;
    }
    tracing::info!(grant = %grant.grant_id, mountpoint = %mp.display(), engine = engine.map_or("none", Engine::name), "mounted");
    let audit = crate::audit::Audit::new(state.path());
    let actor = crate::audit::current_actor();
    let log = |op: &str, outcome: &str| {
        let details = serde_json::json!({
            "mountpoint": mp,
            "pid": std::process::id(),
            "engine": engine.map(Engine::name),
        });
        if let Err(e) = audit.append(
            op,
            Some(&grant.grant_id),
            &actor,
            crate::audit::Event::Complete,
            outcome,
            details,
        ) {
            tracing::error!(error = %e, "cannot write the audit log");
        }
    };
    log("wopfs.view.mount", "mounted");
    let result = session.run();
    SESSION_ENDED.store(true, std::sync::atomic::Ordering::SeqCst);
    state.clear_mount_record(&grant.grant_id);
    denied.finish(state.path(), &grant.grant_id, &actor);
    log(
        "wopfs.view.umount",
        if result.is_ok() {
            "unmounted"
        } else {
            "failed"
        },
    );
    tracing::info!(grant = %grant.grant_id, "unmounted; daemon exiting");
    result.map_err(|e| Error::invalid(format!("serving grant {}: {e}", grant.grant_id)))
}

/// `opts` with the session's denied-access log, and what keeps it on
/// disk while the view is served (`denied.rs`; `Keeper::finish` at
/// unmount).
pub fn keep_denied(
    state: &StateDir,
    grant: &Grant,
    opts: &MountOptions,
) -> Result<(MountOptions, denied::Keeper)> {
    let mut opts = opts.clone();
    let keeper = denied::keep(&state.session_dir(&grant.grant_id), &mut opts.view)?;
    Ok((opts, keeper))
}

/// Moves stdout and stderr onto the session log, then tells the waiting
/// parent that the mount is ready on the pipe that was stdout (the parent
/// reads until it closes). In this order, nothing is ever written to the
/// parent's pipes after it has gone: a signal may arrive the moment the
/// ready line is read, and the signal thread logs it.
fn announce_ready(log: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::fd::AsFd;
    use std::os::unix::fs::OpenOptionsExt;
    let parent = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .ctx(|| "keeping the readiness pipe")?;
    let logf = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(log)
        .ctx(|| format!("opening {}", log.display()))?;
    for fd in [1, 2] {
        // SAFETY: dup2 onto the standard descriptors; both fds are valid.
        if unsafe { libc::dup2(logf.as_raw_fd(), fd) } < 0 {
            return Err(Error::io(
                "redirecting output to the log",
                std::io::Error::last_os_error(),
            ));
        }
    }
    let mut pipe = std::fs::File::from(parent);
    writeln!(pipe, "{READY}").ctx(|| "notifying readiness")
}

/// On SIGINT, SIGTERM or SIGHUP: unmount (lazily if busy). If the session
/// has not ended shortly after, something still holds the view (a busy
/// mount, or a copy of it in a container's mount namespace): the daemon
/// exits, which aborts the FUSE connection, so its users get ENOTCONN
/// instead of a view that lingers or hangs.
fn spawn_signal_handler(mp: PathBuf, state_dir: PathBuf, grant_id: String) -> Result<()> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .ctx(|| "installing signal handlers")?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                tracing::info!(signal = sig, "signal received; unmounting");
                if unmount(&mp, false).is_err() {
                    let _ = unmount(&mp, true);
                }
                let start = Instant::now();
                while !SESSION_ENDED.load(std::sync::atomic::Ordering::SeqCst) {
                    if start.elapsed() > Duration::from_secs(2) {
                        tracing::info!("the view is still held elsewhere; aborting the connection");
                        if let Ok(state) = StateDir::open(&state_dir) {
                            state.clear_mount_record(&grant_id);
                        }
                        std::process::exit(0);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
        })
        .ctx(|| "starting the signal thread")?;
    Ok(())
}

/// Starts a daemon for `grant` and returns once its mount is ready, or
/// with the daemon's own error.
pub fn spawn_daemon(
    state: &StateDir,
    grant: &Grant,
    mountpoint: &Path,
    extra_args: &[String],
) -> Result<()> {
    // The daemon judges expiry by the system clock too.
    preflight(state, grant, mountpoint, &SystemClock)?;
    let exe = std::env::current_exe().ctx(|| "locating the wopfs binary")?;
    let mut child = Command::new(exe)
        .arg("--state-dir")
        .arg(state.path())
        .arg("mount")
        .arg(&grant.grant_id)
        .arg(mountpoint)
        .arg("--foreground")
        .arg("--daemon")
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .ctx(|| "starting the mount daemon")?;
    let stdout = child.stdout.take();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        if let Some(out) = stdout {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let _ = tx.send(line);
    });
    let deadline = Duration::from_secs(30);
    match rx.recv_timeout(deadline) {
        Ok(line) if line.trim() == READY => Ok(()),
        Ok(_) => {
            let mut msg = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = e.read_to_string(&mut msg);
            }
            let _ = child.wait();
            // The daemon's error, without the log lines before it.
            let errors: Vec<&str> = msg
                .lines()
                .filter_map(|l| l.strip_prefix("wopfs: "))
                .collect();
            let msg = if errors.is_empty() {
                msg.trim().to_string()
            } else {
                errors.join("\n")
            };
            Err(Error::invalid(if msg.is_empty() {
                "the mount daemon exited before the mount was ready".to_string()
            } else {
                msg
            }))
        }
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(Error::invalid(format!(
                "the mount daemon did not get ready within {}s",
                deadline.as_secs()
            )))
        }
    }
}

/// Unmounts `mp`: directly as root, through fusermount3 otherwise. `lazy`
/// detaches a busy mount.
pub fn unmount(mp: &Path, lazy: bool) -> Result<()> {
    use rustix::mount::UnmountFlags;
    let flags = if lazy {
        UnmountFlags::DETACH
    } else {
        UnmountFlags::empty()
    };
    match rustix::mount::unmount(mp, flags) {
        Ok(()) => Ok(()),
        Err(rustix::io::Errno::PERM) => {
            let mut cmd = Command::new("fusermount3");
            cmd.arg("-u").arg("-q");
            if lazy {
                cmd.arg("-z");
            }
            let out = cmd
                .arg("--")
                .arg(mp)
                .output()
                .ctx(|| "running fusermount3 -u")?;
            if out.status.success() {
                Ok(())
            } else {
                Err(Error::invalid(format!(
                    "cannot unmount {}: {}",
                    mp.display(),
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }
        Err(rustix::io::Errno::BUSY) => Err(Error::invalid(format!(
            "cannot unmount {}: it is busy (a process is using it); close it or pass --lazy",
            mp.display()
        ))),
        Err(e) => Err(Error::io(format!("unmounting {}", mp.display()), e.into())),
    }
}

/// `wopfs umount`: unmounts a wopfs mount and waits for its daemon to exit.
pub fn umount_command(state: &StateDir, mp: &Path, lazy: bool) -> Result<()> {
    let canon = mountinfo::resolve(mp)?;
    let grant_id = match mountinfo::mount_at(&canon) {
        Some(m) if m.is_wopfs() => m.grant_id().map(str::to_string),
        Some(m) => {
            return Err(Error::invalid(format!(
                "{} is not a wopfs mount (it is {})",
                mp.display(),
                m.fstype
            )))
        }
        None => return Err(Error::invalid(format!("{} is not mounted", mp.display()))),
    };
    let daemon = state
        .grant_ids()?
        .into_iter()
        .filter_map(|id| state.live_mount(&id))
        .find(|r| r.mountpoint == canon);
    // A kernel view's write-prefix binds go first (a mount with mounts on
    // it is busy); they come back if the view itself is busy.
    let binds = match &grant_id {
        Some(id) if !lazy && crate::state::is_grant_id(id) => {
            kernel::unmount_prefix_binds(&state.session_dir(id), id, &canon)?
        }
        _ => Vec::new(),
    };
    if let Err(e) = unmount(&canon, lazy) {
        if let Some(id) = &grant_id {
            kernel::restore_prefix_binds(&state.session_dir(id), id, &canon, &binds);
        }
        return Err(e);
    }
    if let Some(rec) = &daemon {
        // A daemon whose view is still held in another mount namespace (a
        // container) keeps serving it: ask it to stop, which aborts it.
        let start = Instant::now();
        let mut asked = false;
        while crate::state::pid_alive(rec.pid) && start.elapsed() < Duration::from_secs(10) {
            if !asked && start.elapsed() > Duration::from_millis(500) {
                // SAFETY: kill(2) on the daemon recorded for this mount.
                unsafe { libc::kill(rec.pid as i32, libc::SIGTERM) };
                asked = true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    // A kernel engine's stack whose daemon is gone (killed with its guard):
    // the layer is still mounted in the state dir.
    if let Some(id) = grant_id.filter(|id| crate::state::is_grant_id(id)) {
        if !daemon.is_some_and(|r| crate::state::pid_alive(r.pid)) {
            let session = state.session_dir(&id);
            kernel::take_down(&id, &canon, &session, Duration::from_secs(5))?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok() -> Result<()> {
        Ok(())
    }
    fn no() -> Result<()> {
        Err(Error::invalid("not here"))
    }
    fn unasked() -> Result<()> {
        panic!("this probe does not decide the case")
    }

    #[test]
    fn auto_picks_the_kernel_engine_as_root_and_inside_a_rootless_run() {
        assert_eq!(auto_engine(true, false, ok, unasked), Engine::Kernel);
        assert_eq!(auto_engine(true, true, ok, unasked), Engine::Kernel);
        assert_eq!(auto_engine(false, true, unasked, ok), Engine::Kernel);
    }

    #[test]
    fn auto_falls_back_to_fuse_where_the_kernel_engine_cannot_run() {
        assert_eq!(auto_engine(true, false, no, unasked), Engine::Fuse);
        assert_eq!(auto_engine(true, true, no, unasked), Engine::Fuse);
        assert_eq!(auto_engine(false, true, unasked, no), Engine::Fuse);
        // A plain user's mount outside a run: nothing to probe.
        assert_eq!(auto_engine(false, false, unasked, unasked), Engine::Fuse);
    }
}
