//! `wopfs mount` and `wopfs umount`

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::number::{number, MAX_BYTES, MAX_FILES, MAX_ID, MAX_THREADS};
use crate::error::{Error, Result};
use crate::grant::parse_duration_in;
use crate::mount::{self, MountOptions};
use crate::state::StateDir;
use crate::view::ViewOptions;

/// The longest `--cache-ttl`.
const MAX_CACHE_TTL: Duration = Duration::from_secs(86_400);

#[derive(clap::Args, Debug)]
#[command(override_usage = "wopfs mount [OPTIONS] GRANT MOUNTPOINT\n       \
    wopfs mount [OPTIONS] --token TOKEN --root DIR --audience NAME MOUNTPOINT")]
pub struct MountArgs {
    /// Grant id (g-…); leave it out with --token.
    #[arg(value_name = "GRANT")]
    grant: Option<String>,
    /// An existing empty directory outside the host tree and the state dir
    /// (a relative path is taken from the current directory).
    #[arg(value_name = "MOUNTPOINT")]
    mountpoint: Option<PathBuf>,
    #[command(flatten)]
    token: super::token::TokenMountArgs,
    /// Serve in this process instead of returning once the mount is ready.
    #[arg(long)]
    pub foreground: bool,
    /// Internal: run as the background daemon started by `wopfs mount`.
    #[arg(long, hide = true)]
    pub daemon: bool,
    /// FUSE request threads (1 to 256).
    #[arg(long, default_value_t = 4, value_name = "N", allow_hyphen_values = true,
          value_parser = number::<usize>(1, MAX_THREADS))]
    threads: usize,
    /// How long the kernel may cache names and attributes of host files
    /// (0 to 1d).
    #[arg(
        long,
        default_value = "1s",
        value_name = "DURATION",
        allow_hyphen_values = true
    )]
    cache_ttl: String,
    #[command(flatten)]
    access: AccessArgs,
    #[command(flatten)]
    pub engine: EngineArgs,
    /// Overlay limit in bytes (default: the grant's max_total_size_bytes).
    #[arg(long, value_name = "BYTES", allow_hyphen_values = true,
          value_parser = number::<u64>(1, MAX_BYTES))]
    quota_bytes: Option<u64>,
    /// Overlay limit in entries (default: the grant's max_files).
    #[arg(long, value_name = "N", allow_hyphen_values = true,
          value_parser = number::<u64>(1, MAX_FILES))]
    quota_files: Option<u64>,
    /// Once mounted, print the mount record as JSON (grant, mountpoint,
    /// daemon pid, mode, options).
    #[arg(long, conflicts_with = "foreground")]
    json: bool,
}

/// Who may use a view and whom its files belong to: the same flags for
/// `wopfs mount` and `wopfs run`.
#[derive(clap::Args, Debug)]
pub struct AccessArgs {
    /// Let other users (a container's or a sandboxed command's uid) use the
    /// view; needs root or `user_allow_other` in /etc/fuse.conf.
    #[arg(long)]
    pub allow_other: bool,
    /// Present the view's files as owned by this uid (with --gid), for a
    /// container or a command that runs as that user.
    #[arg(long, requires = "gid", value_name = "N", allow_hyphen_values = true,
          value_parser = number::<u32>(0, MAX_ID))]
    uid: Option<u32>,
    /// Present the view's files as owned by this gid (with --uid).
    #[arg(long, requires = "uid", value_name = "N", allow_hyphen_values = true,
          value_parser = number::<u32>(0, MAX_ID))]
    gid: Option<u32>,
}

impl AccessArgs {
    /// The uid and gid every file is presented as owned by, if given.
    pub fn owner(&self) -> Option<(u32, u32)> {
        self.uid.zip(self.gid)
    }

    /// The same flags again, for the daemon's command line.
    fn to_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if self.allow_other {
            args.push("--allow-other".to_string());
        }
        if let Some((u, g)) = self.owner() {
            args.extend(["--uid".into(), u.to_string(), "--gid".into(), g.to_string()]);
        }
        args
    }
}

/// Which engine serves a writable overlay view: the same flag for
/// `wopfs mount` and `wopfs run`.
#[derive(clap::Args, Debug)]
pub struct EngineArgs {
    /// The engine of a read_write_overlay view: `kernel` (overlayfs over
    /// the read-only FUSE view: native speed; root, or a plain user inside
    /// `wopfs run`), `fuse` (the overlay in the daemon) or `auto` (kernel
    /// where it can run, else fuse). A session keeps the engine it started
    /// with.
    #[arg(long, value_enum, default_value_t = mount::EngineChoice::Auto, value_name = "ENGINE",
          env = "WOPFS_ENGINE")]
    pub engine: mount::EngineChoice,
}

impl EngineArgs {
    /// The same flag again, for the daemon's command line.
    fn to_args(&self) -> Vec<String> {
        use clap::ValueEnum;
        let name = self
            .engine
            .to_possible_value()
            .map(|v| v.get_name().to_string())
            .unwrap_or_else(|| "auto".into());
        vec!["--engine".into(), name]
    }
}

#[derive(clap::Args, Debug)]
pub struct UmountArgs {
    /// Where the view is mounted (relative to the current directory, or
    /// absolute); an expired or dead view unmounts too.
    #[arg(value_name = "MOUNTPOINT")]
    mountpoint: PathBuf,
    /// Detach a busy mount now; it goes away when its last user leaves.
    #[arg(long)]
    lazy: bool,
    /// Print what was unmounted as JSON (mountpoint, grant, daemon pid).
    #[arg(long)]
    json: bool,
}

/// GRANT MOUNTPOINT, or MOUNTPOINT alone with --token.
fn grant_and_mountpoint(a: &MountArgs) -> Result<(Option<&str>, &Path)> {
    match (a.grant.as_deref(), a.mountpoint.as_deref(), a.token.given()) {
        (Some(g), Some(mp), false) => Ok((Some(g), mp)),
        (Some(mp), None, true) => Ok((None, Path::new(mp))),
        (Some(_), Some(_), true) => Err(Error::invalid(
            "give either a GRANT or --token, not both (with --token, MOUNTPOINT is the only argument)",
        )),
        (Some(_), None, false) => Err(Error::invalid(
            "wopfs mount needs a GRANT and a MOUNTPOINT (or --token TOKEN and a MOUNTPOINT)",
        )),
        (None, _, _) => Err(Error::invalid(
            "wopfs mount needs a GRANT and a MOUNTPOINT, or --token TOKEN --root DIR --audience NAME and a MOUNTPOINT",
        )),
    }
}

pub fn run_mount(state: &StateDir, a: &MountArgs) -> Result<()> {
    let (grant_id, mountpoint) = grant_and_mountpoint(a)?;
    let cache_ttl = if a.cache_ttl.trim() == "0" {
        Duration::ZERO
    } else {
        parse_duration_in("--cache-ttl", &a.cache_ttl, Duration::ZERO, MAX_CACHE_TTL)?
    };
    // Absolute from here on: the daemon runs from "/", and a relative
    // mountpoint names a directory of the caller's working directory.
    let resolved = crate::mountinfo::resolve(mountpoint)?;
    let mountpoint = resolved.as_path();
    let grant = match grant_id {
        Some(id) => state.load_grant(id)?,
        // Verified, resolved and recorded only once everything checks out.
        None => super::token::grant_from_token(state, &a.token, Some(mountpoint))?,
    };
    let opts = MountOptions {
        engine: a.engine.engine,
        threads: a.threads,
        allow_other: a.access.allow_other,
        in_run: false,
        view: ViewOptions {
            cache_ttl,
            quota_bytes: a.quota_bytes,
            quota_files: a.quota_files,
            owner: a.access.owner(),
            ..ViewOptions::default()
        },
    };
    if !a.foreground {
        let mut extra = vec![
            "--threads".to_string(),
            a.threads.to_string(),
            "--cache-ttl".to_string(),
            a.cache_ttl.clone(),
        ];
        extra.extend(a.access.to_args());
        extra.extend(a.engine.to_args());
        if let Some(q) = a.quota_bytes {
            extra.extend(["--quota-bytes".to_string(), q.to_string()]);
        }
        if let Some(q) = a.quota_files {
            extra.extend(["--quota-files".to_string(), q.to_string()]);
        }
        mount::spawn_daemon(state, &grant, mountpoint, &extra)?;
        if a.json {
            if grant_id.is_none() {
                let note = super::token::token_grant_note(state, &grant);
                eprintln!("wopfs mount: {note}");
            }
            return print_mount_record(state, &grant, a);
        }
        if grant_id.is_none() {
            // The grant recorded for the token: what diff, commit and status take.
            outln!("{}", grant.grant_id)?;
            let _ = writeln!(
                std::io::stderr(),
                "wopfs mount: {}",
                super::token::token_grant_note(state, &grant)
            );
        }
        return Ok(());
    }
    if grant_id.is_none() {
        outln!("{}", grant.grant_id)?;
        let _ = writeln!(
            std::io::stderr(),
            "wopfs mount: {}",
            super::token::token_grant_note(state, &grant)
        );
    }
    if a.daemon {
        // Leave the caller's session so its terminal signals do not reach us,
        // and keep no directory busy.
        let _ = rustix::process::setsid();
        let _ = std::env::set_current_dir("/");
    }
    mount::serve(state, &grant, mountpoint, &opts, a.daemon)
}

pub fn run_umount(state: &StateDir, a: &UmountArgs) -> Result<()> {
    if !a.json {
        return mount::umount_command(state, &a.mountpoint, a.lazy);
    }
    // Which session and daemon, read before they are gone.
    let canon = crate::mountinfo::resolve(&a.mountpoint)?;
    let rec = state.grant_ids()?.into_iter().find_map(|id| {
        let m = state.live_mount(&id).filter(|m| m.mountpoint == canon)?;
        Some((id, m.pid))
    });
    mount::umount_command(state, &a.mountpoint, a.lazy)?;
    super::print_json(&serde_json::json!({
        "mountpoint": canon,
        "grant_id": rec.as_ref().map(|r| &r.0),
        "pid": rec.map(|r| r.1),
        "lazy": a.lazy,
    }))
}

/// `wopfs mount --json`: the mount record of a view whose daemon is ready.
fn print_mount_record(state: &StateDir, grant: &crate::grant::Grant, a: &MountArgs) -> Result<()> {
    let rec = state.live_mount(&grant.grant_id);
    super::print_json(&serde_json::json!({
        "grant_id": grant.grant_id,
        "mountpoint": rec.as_ref().map(|r| &r.mountpoint),
        "pid": rec.as_ref().map(|r| r.pid),
        "mode": grant.mode,
        "read_only": grant.mode == crate::policy::Mode::ReadOnly,
        "root": grant.root,
        "expires_at": grant.expires_at,
        "allow_other": a.access.allow_other,
        "owner": a.access.owner().map(|(uid, gid)| serde_json::json!({"uid": uid, "gid": gid})),
        "threads": a.threads,
        "cache_ttl": a.cache_ttl,
        "log": state.log_path(&grant.grant_id),
    }))
}
