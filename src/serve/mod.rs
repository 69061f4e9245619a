//! `wopfs serve`: the control API behind the seed's `WorkspaceClient`.
//! HTTP+JSON on a Unix domain socket (tokio + axum). Callers are who the
//! socket's peer credentials say; commit and reject are allowed only to the
//! policy's `approver_uids`. No ambient authority: every call names the
//! grant (or token) it acts under, and grants belong to the uid that
//! requested them. Every call is one WorkspaceOperation in the audit log:
//! `wopfs.api.<call>`, task state queued → running → completed | failed.
//!
//! Every call acts with the caller's host permissions: the search walk and
//! a grant's resolution run on threads carrying the caller's filesystem
//! credentials ([`crate::creds`]), so nothing the caller could not read on
//! the host is searched, granted or mounted for them. The socket is 0600
//! unless widened on purpose, and one server owns it ([`socket`]).
//! Stopping the server unmounts the views it mounted.

mod api;
pub mod socket;

use std::collections::BTreeMap;
use std::future::IntoFuture;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::connect_info::Connected;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::Json;
use serde_json::json;
use tokio::net::UnixListener;

use crate::error::{Error, ErrorKind, IoContext, Result};
use crate::policy::Policy;
use crate::state::StateDir;

/// Request bodies larger than this are refused with 413.
pub const MAX_BODY: usize = 1 << 20;

pub struct ServeOptions {
    pub socket: PathBuf,
    /// The host tree searched and granted from.
    pub root: PathBuf,
    pub policy: Policy,
    /// Where open_view mounts views (one directory per grant).
    pub views: PathBuf,
    /// Signing key for delegate (tokens); without it delegate is refused.
    pub signing_key: Option<ed25519_dalek::SigningKey>,
    /// The socket's permission bits ([`socket::DEFAULT_MODE`] unless widened).
    pub socket_mode: u32,
    /// The socket's group, when widened to one.
    pub socket_group: Option<u32>,
}

pub struct Server {
    pub state_path: PathBuf,
    pub opts: ServeOptions,
    /// The views this server mounted, unmounted when it stops.
    pub views: Mutex<Views>,
}

#[derive(Default)]
pub struct Views {
    /// Set once the server is stopping: no view is mounted after it.
    pub closing: bool,
    /// grant id → mountpoint
    pub mounted: BTreeMap<String, PathBuf>,
}

/// How long a stopping server waits for open connections to finish.
const DRAIN: Duration = Duration::from_secs(10);

/// The caller, from the socket's peer credentials.
#[derive(Clone, Copy, Debug)]
pub struct Peer {
    pub uid: u32,
    pub gid: u32,
    pub pid: i32,
}

impl Connected<IncomingStream<'_, UnixListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, UnixListener>) -> Self {
        match stream.io().peer_cred() {
            Ok(c) => Peer {
                uid: c.uid(),
                gid: c.gid(),
                pid: c.pid().unwrap_or(0),
            },
            // No credentials: treat as the least privileged user.
            Err(_) => Peer {
                uid: u32::MAX,
                gid: u32::MAX,
                pid: 0,
            },
        }
    }
}

/// An API error: a status and one clear sentence.
pub struct ApiError(pub StatusCode, pub String);

impl From<Error> for ApiError {
    fn from(e: Error) -> Self {
        ApiError(status(e.kind()), e.to_string())
    }
}

/// The HTTP status of each kind of failure.
fn status(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
        ErrorKind::Forbidden => StatusCode::FORBIDDEN,
        ErrorKind::UnknownGrant => StatusCode::NOT_FOUND,
        ErrorKind::Conflict | ErrorKind::Busy => StatusCode::CONFLICT,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The error sentence of a refused request, for the request log.
#[derive(Clone)]
pub struct Refusal(pub String);

/// The grant a request made, for the request log.
#[derive(Clone)]
pub struct GrantTag(pub String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut r = (self.0, Json(json!({"error": self.1}))).into_response();
        r.extensions_mut().insert(Refusal(self.1));
        r
    }
}

/// Logs every request once: the caller's uid and pid, the operation, the
/// grant, the status and, for a refusal, its sentence. Never contents.
async fn log_request(
    axum::extract::ConnectInfo(peer): axum::extract::ConnectInfo<Peer>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let op = format!("{} {}", req.method(), req.uri().path());
    let path_grant = req
        .uri()
        .path()
        .strip_prefix("/v1/grants/")
        .and_then(|rest| rest.split('/').next())
        .filter(|g| !g.is_empty())
        .map(str::to_string);
    let resp = next.run(req).await;
    let status = resp.status().as_u16();
    let grant = resp
        .extensions()
        .get::<GrantTag>()
        .map(|g| g.0.clone())
        .or(path_grant)
        .unwrap_or_default();
    match resp.extensions().get::<Refusal>() {
        None if resp.status().is_success() => {
            tracing::info!(uid = peer.uid, pid = peer.pid, op, grant, status, "served")
        }
        refusal => tracing::warn!(
            uid = peer.uid,
            pid = peer.pid,
            op,
            grant,
            status,
            error = refusal.map(|r| r.0.as_str()).unwrap_or(""),
            "refused"
        ),
    }
    resp
}

/// Serves until SIGINT/SIGTERM, then unmounts the views it mounted and
/// removes its socket. The socket is [`socket::DEFAULT_MODE`] (the owner
/// only) unless `opts` widen it; who may do what is decided per call from
/// the peer credentials.
pub fn serve(state: &StateDir, opts: ServeOptions) -> Result<()> {
    // Before the socket appears: a caller who sees it finds the server ready.
    create_views_dir(&opts.views)?;
    let (std_listener, sock) =
        socket::Socket::bind(&opts.socket, opts.socket_mode, opts.socket_group)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .ctx(|| "starting the async runtime")?;
    let server = Arc::new(Server {
        state_path: state.path().to_path_buf(),
        opts,
        views: Mutex::new(Views::default()),
    });
    let socket_path = sock.path().to_path_buf();
    std_listener
        .set_nonblocking(true)
        .ctx(|| format!("preparing {}", socket_path.display()))?;
    let srv = server.clone();
    let served = runtime.block_on(async move {
        let listener = UnixListener::from_std(std_listener)
            .ctx(|| format!("listening on {}", socket_path.display()))?;
        let app = api::router(srv)
            .layer(axum::middleware::from_fn(log_request))
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .into_make_service_with_connect_info::<Peer>();
        // Before the first request is served: a SIGTERM from then on stops
        // the server cleanly instead of killing it.
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tracing::info!(socket = %socket_path.display(), "serving the wopfs API");
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let mut task = tokio::spawn(
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = stop_rx.await;
                })
                .into_future(),
        );
        let stopped = tokio::select! {
            r = &mut task => Some(r),
            _ = tokio::signal::ctrl_c() => None,
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => None,
        };
        let r = match stopped {
            Some(r) => r,
            None => {
                tracing::info!("signal received; stopping");
                let _ = stop_tx.send(());
                match tokio::time::timeout(DRAIN, &mut task).await {
                    Ok(r) => r,
                    Err(_) => {
                        tracing::warn!(
                            "connections still open after {}s; stopping anyway",
                            DRAIN.as_secs()
                        );
                        task.abort();
                        Ok(Ok(()))
                    }
                }
            }
        };
        match r {
            Ok(r) => r.ctx(|| "serving the API"),
            Err(e) => Err(Error::io("serving the API", std::io::Error::other(e))),
        }
    });
    stop_views(state, &server);
    // Operations still running (past the drain) get a moment to finish.
    runtime.shutdown_timeout(Duration::from_secs(5));
    drop(sock);
    tracing::info!(socket = %server.opts.socket.display(), "stopped; socket removed");
    served
}

/// Creates `views` and its missing parents `0711`: traversable, so callers
/// reach their views, not listable. The mode is set after `mkdir`, so the
/// umask cannot narrow it.
fn create_views_dir(views: &std::path::Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let missing: Vec<&std::path::Path> = views
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .collect();
    for dir in missing.into_iter().rev() {
        std::fs::create_dir(dir)
            .and_then(|()| std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o711)))
            .ctx(|| format!("creating {}", dir.display()))?;
    }
    Ok(())
}

/// Unmounts every view this server mounted (lazily if busy) and says so.
fn stop_views(state: &StateDir, server: &Server) {
    let mounted = {
        let mut v = server.views.lock().unwrap_or_else(|e| e.into_inner());
        v.closing = true;
        std::mem::take(&mut v.mounted)
    };
    for (grant, mp) in mounted {
        if !crate::mountinfo::mount_at(&mp).is_some_and(|m| m.is_wopfs()) {
            let _ = std::fs::remove_dir(&mp);
            continue;
        }
        let r = crate::mount::umount_command(state, &mp, false)
            .or_else(|_| crate::mount::umount_command(state, &mp, true));
        match r {
            Ok(()) => {
                let _ = std::fs::remove_dir(&mp);
                tracing::info!(grant, mountpoint = %mp.display(), "unmounted the view");
            }
            Err(e) => {
                tracing::error!(grant, mountpoint = %mp.display(), error = %e, "cannot unmount the view")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::{self, Phase, SessionState};
    use crate::state::StateDir;

    fn status_of(e: Error) -> StatusCode {
        ApiError::from(e).0
    }

    /// Each failure as the code that makes it makes it, and its status.
    #[test]
    fn each_kind_of_failure_answers_its_status() {
        let dir = tempfile::tempdir().unwrap();
        let state = StateDir::open(&dir.path().join("state")).unwrap();
        let unknown = state.load_grant("g-0000000000000000").unwrap_err();
        assert_eq!(status_of(unknown), StatusCode::NOT_FOUND);
        let malformed = state.load_grant("../../etc").unwrap_err();
        assert_eq!(status_of(malformed), StatusCode::NOT_FOUND);

        let serving = session::lock(dir.path(), false, "g-1").unwrap();
        let busy = session::lock(dir.path(), true, "g-1").err().unwrap();
        assert_eq!(busy.kind(), ErrorKind::Busy);
        assert_eq!(status_of(busy), StatusCode::CONFLICT);
        drop(serving);

        let ended = SessionState {
            phase: Phase::Committed,
            reason: None,
            approver: None,
            at: None,
        };
        let ended = ended.check_not_ended("g-1", "write").unwrap_err();
        assert_eq!(status_of(ended), StatusCode::CONFLICT);

        assert_eq!(status_of(Error::policy("no")), StatusCode::FORBIDDEN);
        assert_eq!(status_of(Error::invalid("bad")), StatusCode::BAD_REQUEST);
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(
            status_of(Error::io("reading", denied)),
            StatusCode::FORBIDDEN
        );
        let broken = std::io::Error::other("disk");
        assert_eq!(
            status_of(Error::io("reading", broken)),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
