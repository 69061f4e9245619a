//! `wopfs serve` and `wopfs diagnostics`

use std::path::PathBuf;

use crate::error::{Error, IoContext, Result};
use crate::policy::Policy;
use crate::serve::{self, ServeOptions};
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The Unix socket to listen on (mode 0600, the server's owner only,
    /// unless widened with --socket-mode / --socket-group). A lock beside
    /// it (PATH.lock) keeps a second server off the same socket.
    #[arg(long, value_name = "PATH")]
    socket: PathBuf,
    /// The socket's permission bits, in octal (e.g. 0660 with
    /// --socket-group). Every call still acts with its caller's own host
    /// permissions; this only says who may connect.
    #[arg(long, value_name = "OCTAL", value_parser = serve::socket::parse_mode)]
    socket_mode: Option<u32>,
    /// Give the socket to this group (a name or a gid); without
    /// --socket-mode the mode becomes 0660, so the group's members may
    /// connect.
    #[arg(long, value_name = "GROUP")]
    socket_group: Option<String>,
    /// The host tree callers search and are granted views of.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Policy file or built-in name (default, strict); names approver_uids.
    #[arg(long, value_name = "FILE")]
    policy: Option<String>,
    /// Where open_view mounts views (default: wopfs-views beside the state
    /// dir; mountpoints may not lie inside it).
    #[arg(long, value_name = "DIR")]
    views: Option<PathBuf>,
    /// Signing key for delegate (else A2A_GRANT_SIGNING_KEY; without one,
    /// delegate is refused).
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
}

pub fn run(state: &StateDir, a: &Args) -> Result<()> {
    let policy = match &a.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::builtin_default()?,
    };
    let root = std::fs::canonicalize(&a.root).ctx(|| format!("host tree {}", a.root.display()))?;
    let signing_key =
        if a.signing_key.is_some() || std::env::var_os("A2A_GRANT_SIGNING_KEY").is_some() {
            Some(crate::token::load_signing_key(a.signing_key.as_deref())?)
        } else {
            None
        };
    let socket_group = match &a.socket_group {
        Some(g) => Some(
            crate::creds::group_id(g)
                .ok_or_else(|| Error::invalid(format!("--socket-group: unknown group {g:?}")))?,
        ),
        None => None,
    };
    let socket_mode = match (a.socket_mode, socket_group) {
        (Some(m), _) => m,
        (None, Some(_)) => 0o660,
        (None, None) => serve::socket::DEFAULT_MODE,
    };
    serve::serve(
        state,
        ServeOptions {
            socket: a.socket.clone(),
            root,
            policy,
            views: a.views.clone().unwrap_or_else(|| {
                state
                    .path()
                    .parent()
                    .unwrap_or(std::path::Path::new("/"))
                    .join("wopfs-views")
            }),
            signing_key,
            socket_mode,
            socket_group,
        },
    )
}

#[derive(clap::Args, Debug)]
pub struct DiagArgs {
    /// Leave out tokens, keys and file contents (always on; the flag says so).
    #[arg(long)]
    redacted: bool,
    /// Where to write the bundle (JSON).
    #[arg(short = 'o', long = "output", default_value = "wopfs-diagnostics.json")]
    output: PathBuf,
    /// Print {"output": FILE} as JSON instead of the path alone.
    #[arg(long)]
    json: bool,
}

/// A bug-report bundle: versions, kernel, mounts, sessions and their
/// states, audit log health. Never tokens, keys, file contents or paths of
/// granted files.
pub fn diagnostics(state: &StateDir, a: &DiagArgs) -> Result<()> {
    if !a.redacted {
        return Err(Error::invalid(
            "diagnostics are only written redacted: pass --redacted",
        ));
    }
    let mut sessions = Vec::new();
    for id in state.grant_ids()? {
        let entry = match state.load_grant(&id) {
            Ok(g) => serde_json::json!({
                "grant_id": id,
                "mode": g.mode,
                "files": g.files.len(),
                "expired": g.is_expired(&crate::clock::SystemClock).unwrap_or(false),
                "phase": crate::session::SessionState::load(&state.session_dir(&id)).map(|s| s.phase).ok(),
                "mounted": state.live_mount(&id).is_some(),
                "pending": crate::patch::pending(&g, &state.session_dir(&id)).map(|p| p.len()).ok(),
            }),
            Err(e) => serde_json::json!({"grant_id": id, "error": e.to_string()}),
        };
        sessions.push(entry);
    }
    let audit = crate::audit::Audit::new(state.path());
    let mounts: Vec<String> = crate::mountinfo::mounts()
        .into_iter()
        .filter(|m| m.is_wopfs())
        .map(|m| format!("{} {}", m.source, m.fstype))
        .collect();
    let bundle = serde_json::json!({
        "wopfs": env!("CARGO_PKG_VERSION"),
        "kernel": std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim(),
        "euid": rustix::process::geteuid().as_raw(),
        "fuse_device": std::fs::metadata("/dev/fuse").is_ok(),
        "fusermount3": which("fusermount3"),
        "wopfs_mounts": mounts,
        "sessions": sessions,
        "audit": match audit.verify() {
            Ok(n) => serde_json::json!({"records": n, "chain": "intact"}),
            Err(e) => serde_json::json!({"chain": e.to_string()}),
        },
        "redacted": "no tokens, keys, file contents or file names",
    });
    let text = serde_json::to_vec_pretty(&bundle).map_err(|e| Error::invalid(e.to_string()))?;
    std::fs::write(&a.output, text).ctx(|| format!("writing {}", a.output.display()))?;
    if a.json {
        let output = std::path::absolute(&a.output).unwrap_or_else(|_| a.output.clone());
        return super::print_json(&serde_json::json!({ "output": output }));
    }
    outln!("{}", a.output.display())?;
    Ok(())
}

fn which(cmd: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(cmd).is_file()))
        .unwrap_or(false)
}
