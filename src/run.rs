//! `wopfs run`: a command in a private mount namespace that sees only the
//! view. The view is served by this process, in the caller's namespace, on
//! a temporary mountpoint; the command's child process then
//!
//! 1. unshares its mount namespace (and, when not root, a user namespace
//!    mapping the caller to themselves) and makes every mount private;
//! 2. bind-mounts the view at `--at` (default `/workspace`) and over the
//!    host tree's own path, so the tree is not reachable by its real path;
//! 3. mounts an empty read-only tmpfs over the state dir, hiding overlays,
//!    grants and logs;
//! 4. changes to `--at` and execs the command.
//!
//! When the command exits its namespace goes away, the view is unmounted
//! and the daemon stops: the mount never outlives the run.

use std::ffi::{CString, OsString};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::error::{Error, IoContext, Result};
use crate::grant::Grant;
use crate::mount::userns::UserMaps;
use crate::mount::MountOptions;
use crate::mountinfo;
use crate::state::{MountRecord, StateDir};

pub struct RunOptions {
    pub at: PathBuf,
    pub command: Vec<OsString>,
    pub mount: MountOptions,
}

fn cstr(p: &Path) -> Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::invalid(format!("path {} contains a NUL byte", p.display())))
}

/// Everything the child needs, prepared before fork: after it only
/// async-signal-safe calls are allowed.
struct ChildPlan {
    view: CString,
    at: CString,
    host_root: CString,
    state_dir: CString,
    tmpfs: CString,
    tmpfs_opts: CString,
    /// The namespaces to enter (a user namespace when not root).
    ns: UserMaps,
    /// The kernel engine rootless: the overlay this child mounts at `at`
    /// over the lower view (`view`).
    overlay: Option<crate::mount::kernel::UsernsOverlay>,
    /// The caller's umask (the daemon side runs with 0).
    umask: libc::mode_t,
}

impl ChildPlan {
    /// Runs in the child between fork and exec.
    fn enter(&self) -> std::io::Result<()> {
        let err = |rc: i32| {
            if rc < 0 {
                Err(std::io::Error::last_os_error())
            } else {
                Ok(())
            }
        };
        self.ns.enter()?;
        // The view the command sees: the overlay this child mounts over the
        // lower (the kernel engine rootless), or the mount served at `view`.
        let view = match &self.overlay {
            Some(o) => {
                o.mount_at(&self.at)?;
                &self.at
            }
            None => &self.view,
        };
        // SAFETY: plain syscalls on NUL-terminated strings prepared before fork.
        unsafe {
            let null = std::ptr::null();
            let bind = libc::MS_BIND | libc::MS_REC;
            err(libc::mount(
                view.as_ptr(),
                self.host_root.as_ptr(),
                null,
                bind,
                null.cast(),
            ))?;
            err(libc::mount(
                self.tmpfs.as_ptr(),
                self.state_dir.as_ptr(),
                self.tmpfs.as_ptr(),
                libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                self.tmpfs_opts.as_ptr().cast(),
            ))?;
            if self.overlay.is_none() {
                err(libc::mount(
                    self.view.as_ptr(),
                    self.at.as_ptr(),
                    null,
                    bind,
                    null.cast(),
                ))?;
            }
            err(libc::chdir(self.at.as_ptr()))?;
            libc::umask(self.umask);
        }
        Ok(())
    }
}

/// `--at` as an absolute path without `.`, `..` or symlinks: a relative one
/// is taken from the current directory; the part that exists is
/// canonicalized, so the overlap checks compare real paths.
fn absolute_at(at: &Path) -> Result<PathBuf> {
    use std::path::Component;
    if at.as_os_str().is_empty() {
        return Err(Error::invalid("--at must not be empty"));
    }
    let abs = std::path::absolute(at).ctx(|| format!("--at {}", at.display()))?;
    let existing = abs
        .ancestors()
        .find(|a| a.exists())
        .unwrap_or(Path::new("/"));
    let rest = abs.strip_prefix(existing).unwrap_or(Path::new(""));
    if rest
        .components()
        .any(|c| !matches!(c, Component::Normal(_)))
    {
        return Err(Error::invalid(format!(
            "--at {}: a part that does not exist yet may not hold `..`",
            at.display()
        )));
    }
    let base = std::fs::canonicalize(existing).ctx(|| format!("--at {}", at.display()))?;
    Ok(base.join(rest))
}

/// Runs `opts.command` against the view of `grant`; returns its exit code
/// (128 + N when killed by signal N).
pub fn run(state: &StateDir, grant: &Grant, opts: RunOptions) -> Result<i32> {
    let Some(program) = opts.command.first() else {
        return Err(Error::invalid("wopfs run needs a command after --"));
    };
    crate::mount::check_servable(state, grant, &*opts.mount.view.clock, "run")?;
    let at = absolute_at(&opts.at)?;
    for (what, p) in [
        ("host tree", &grant.root),
        ("state dir", &state.path().to_path_buf()),
    ] {
        if at.starts_with(p) || p.starts_with(&at) {
            return Err(Error::invalid(format!(
                "--at {} overlaps the {what} {}; choose another place",
                at.display(),
                p.display()
            )));
        }
    }
    let created_at = !at.exists();
    if created_at {
        std::fs::create_dir_all(&at).ctx(|| {
            format!(
                "creating --at {} (create it first, or choose another --at)",
                at.display()
            )
        })?;
    }

    // Serve the view on a private temporary mountpoint.
    let tmp = tempfile::Builder::new()
        .prefix("wopfs-run.")
        .tempdir()
        .ctx(|| "making a temporary mountpoint")?;
    let mp = mountinfo::check_mountpoint(tmp.path(), &grant.root, state.path())?;
    let caller_umask = rustix::process::umask(rustix::fs::Mode::empty()).bits();
    let (mount_opts, denied) = crate::mount::keep_denied(state, grant, &opts.mount)?;
    let (_lock, served, engine) = crate::mount::open_session(state, grant, &mp, &mount_opts)?;
    if let Some(end) = served.expiry() {
        crate::mount::watch_expiry(grant, opts.mount.view.clock.clone(), end)?;
    }
    let mounts_overlay = matches!(served, crate::mount::Served::Lower(_));
    let background = served.spawn()?;
    state.write_mount_record(
        &grant.grant_id,
        &MountRecord {
            pid: std::process::id(),
            mountpoint: mp.clone(),
            run: true,
            engine,
        },
    )?;
    let actor = crate::audit::current_actor();
    let audit = crate::audit::Audit::new(state.path());
    let cmdline: Vec<String> = opts
        .command
        .iter()
        .map(|a| a.to_string_lossy().into())
        .collect();
    audit.append(
        "wopfs.view.run",
        Some(&grant.grant_id),
        &actor,
        crate::audit::Event::Start,
        "running",
        serde_json::json!({
            "at": at,
            "command": cmdline,
            "engine": engine.map(crate::overlay::engine::Engine::name),
        }),
    )?;

    let overlay = if mounts_overlay {
        Some(crate::mount::kernel::UsernsOverlay::prepare(
            state, grant, &mp,
        )?)
    } else {
        None
    };
    let plan = ChildPlan {
        view: cstr(&mp)?,
        at: cstr(&at)?,
        host_root: cstr(&grant.root)?,
        state_dir: cstr(state.path())?,
        tmpfs: cstr(Path::new("tmpfs"))?,
        tmpfs_opts: cstr(Path::new("size=4k,mode=0555"))?,
        ns: UserMaps::of_caller(),
        overlay,
        umask: caller_umask as libc::mode_t,
    };
    let mut cmd = Command::new(program);
    cmd.args(&opts.command[1..]);
    // SAFETY: `enter` makes only async-signal-safe system calls on data
    // prepared above.
    unsafe {
        cmd.pre_exec(move || plan.enter());
    }
    let result = run_child(cmd);

    // Tear down: the namespace died with the command; unmount ours.
    let _ = crate::mount::unmount(&mp, false).or_else(|_| crate::mount::unmount(&mp, true));
    background.stop();
    denied.finish(state.path(), &grant.grant_id, &actor);
    state.clear_mount_record(&grant.grant_id);
    if created_at {
        let _ = std::fs::remove_dir(&at);
    }
    let code = result?;
    let pending = crate::patch::pending(grant, &state.session_dir(&grant.grant_id))?;
    // SIGPIPE is ignored while serving: a closed stderr must not panic.
    let _ = writeln!(
        std::io::stderr(),
        "wopfs run: exit {code}; grant {} now has {} pending (see wopfs diff {})",
        grant.grant_id,
        crate::patch::summary(&pending),
        grant.grant_id
    );
    // The rootless kernel engine has no live quota: say it now rather than
    // at the commit (which counts a hard link's bytes once).
    let bytes: u64 = pending.iter().map(|p| p.size).sum();
    if bytes > grant.max_total_size_bytes {
        let _ = writeln!(
            std::io::stderr(),
            "wopfs run: warning: the changes hold {bytes} bytes, more than grant {}'s max_total_size_bytes ({}); a commit refuses a set over that limit, so remove some in a later run (or reject them)",
            grant.grant_id,
            grant.max_total_size_bytes
        );
    }
    audit.append(
        "wopfs.view.run",
        Some(&grant.grant_id),
        &actor,
        crate::audit::Event::Complete,
        &format!("exit {code}"),
        serde_json::json!({"pending": pending.len()}),
    )?;
    Ok(code)
}

/// Spawns the command, forwards SIGINT/SIGTERM/SIGHUP to it, and waits.
fn run_child(mut cmd: Command) -> Result<i32> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    // Caught before the command starts: a signal that arrives as soon as it
    // runs must reach it, not end this process and orphan it. One that
    // arrives earlier waits in `signals` and is forwarded once it runs.
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP])
        .ctx(|| "installing signal handlers")?;
    let mut child = cmd.spawn().map_err(|e| {
        Error::io(
            format!("starting {:?} in the view's namespace", cmd.get_program()),
            e,
        )
    })?;
    let pid = child.id() as i32;
    let handle = signals.handle();
    let forwarder = std::thread::spawn(move || {
        for sig in signals.forever() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(pid, sig) };
        }
    });
    let status = child.wait().ctx(|| "waiting for the command");
    handle.close();
    let _ = forwarder.join();
    let status = status?;
    Ok(status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0)))
}
