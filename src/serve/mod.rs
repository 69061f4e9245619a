//! `wopfs serve`: the control API behind the seed's `WorkspaceClient`.
//! HTTP+JSON on a Unix domain socket (tokio + axum). Callers are who the
//! socket's peer credentials say; commit and reject are allowed only to the
//! policy's `approver_uids`. No ambient authority: every call names the
//! grant (or token) it acts under, and grants belong to the uid that
//! requested them. Every call is one WorkspaceOperation in the audit log:
//! `wopfs.api.<call>`, task state queued → running → completed | failed.

mod api;

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::connect_info::Connected;
use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::serve::IncomingStream;
use axum::Json;
use serde_json::json;
use tokio::net::UnixListener;

use crate::error::{Error, IoContext, Result};
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
}

pub struct Server {
    pub state_path: PathBuf,
    pub opts: ServeOptions,
}

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
        let status = match &e {
            Error::Policy(_) => StatusCode::FORBIDDEN,
            Error::Invalid(m) if m.starts_with("unknown grant") => StatusCode::NOT_FOUND,
            Error::Invalid(_) => StatusCode::BAD_REQUEST,
            Error::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(json!({"error": self.1}))).into_response()
    }
}

/// Serves until SIGINT/SIGTERM. The socket is created with mode 0666: who
/// may do what is decided per call from the peer credentials.
pub fn serve(state: &StateDir, opts: ServeOptions) -> Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .ctx(|| "starting the async runtime")?;
    let socket = opts.socket.clone();
    std::fs::create_dir_all(&opts.views).ctx(|| format!("creating {}", opts.views.display()))?;
    let server = Arc::new(Server {
        state_path: state.path().to_path_buf(),
        opts,
    });
    runtime.block_on(async move {
        if socket.exists() {
            // A stale socket from an earlier server (a live one holds a lock below).
            let _ = std::fs::remove_file(&socket);
        }
        let listener = UnixListener::bind(&socket).ctx(|| format!("binding {}", socket.display()))?;
        {
            use std::os::unix::fs::PermissionsExt;
            let _ = std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666));
        }
        let app = api::router(server)
            .layer(DefaultBodyLimit::max(MAX_BODY))
            .into_make_service_with_connect_info::<Peer>();
        tracing::info!(socket = %socket.display(), "serving the wopfs API");
        let shutdown = async {
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
            }
        };
        let r = axum::serve(listener, app).with_graceful_shutdown(shutdown).await;
        let _ = std::fs::remove_file(&socket);
        r.ctx(|| "serving the API")
    })
}
