//! The endpoints. Each is one WorkspaceOperation: the handler checks who
//! the caller is and what they may touch, then runs the library call on a
//! blocking thread.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, Peer, Server};
use crate::audit::{Audit, Event};
use crate::error::{Error, Result};
use crate::grant::{FileType, Grant, GrantRequest};
use crate::policy::Mode;
use crate::state::StateDir;

/// A JSON body whose rejections (malformed JSON, a wrong field, a body
/// too large, a wrong content type) answer as JSON errors too.
pub struct Body<T>(pub T);

impl<S, T> axum::extract::FromRequest<S> for Body<T>
where
    Json<T>: axum::extract::FromRequest<S, Rejection = axum::extract::rejection::JsonRejection>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(
        req: axum::extract::Request,
        state: &S,
    ) -> std::result::Result<Self, ApiError> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(rej) => Err(ApiError(
                rej.status(),
                format!("malformed request: {}", rej.body_text()),
            )),
        }
    }
}

type Srv = State<Arc<Server>>;
type Caller = ConnectInfo<Peer>;
type Reply = std::result::Result<Json<Value>, ApiError>;

pub fn router(server: Arc<Server>) -> Router {
    Router::new()
        .route("/v1/health", get(|| async { Json(json!({"ok": true})) }))
        .route("/v1/search", post(search))
        .route("/v1/request_access", post(request_access))
        .route("/v1/open_view", post(open_view))
        .route("/v1/grants", get(list_grants))
        .route("/v1/delegate", post(delegate))
        .route("/v1/grants/{id}/patches", get(patches))
        .route("/v1/grants/{id}/commit", post(commit))
        .route("/v1/grants/{id}/reject", post(reject))
        .fallback(|| async { ApiError(StatusCode::NOT_FOUND, "no such endpoint".into()) })
        .with_state(server)
}

/// Runs one operation on a blocking thread, recorded in the audit log as
/// queued → running → completed | failed.
async fn operation<T: Send + 'static>(
    server: &Arc<Server>,
    peer: Peer,
    call: &'static str,
    grant: Option<String>,
    f: impl FnOnce(&Server) -> Result<T> + Send + 'static,
) -> std::result::Result<T, ApiError> {
    let s = server.clone();
    let actor = format!("uid {} (pid {}, api)", peer.uid, peer.pid);
    tokio::task::spawn_blocking(move || {
        let audit = Audit::new(&s.state_path);
        let op = format!("wopfs.api.{call}");
        let log = |ev, state: &str, details: Value| {
            if let Err(e) = audit.append(&op, grant.as_deref(), &actor, ev, state, details) {
                tracing::error!(error = %e, "cannot write the audit log");
            }
        };
        log(
            Event::Start,
            "queued",
            json!({"taskState": "queued", "uid": peer.uid}),
        );
        log(Event::Progress, "running", json!({"taskState": "running"}));
        let r = f(&s);
        match &r {
            Ok(_) => log(
                Event::Complete,
                "completed",
                json!({"taskState": "completed"}),
            ),
            Err(e) => log(
                Event::Failure,
                "failed",
                json!({"taskState": "failed", "error": e.to_string()}),
            ),
        }
        r.map_err(ApiError::from)
    })
    .await
    .map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("the operation failed: {e}"),
        )
    })?
}

fn state(s: &Server) -> Result<StateDir> {
    StateDir::open(&s.state_path)
}

fn is_approver(s: &Server, peer: Peer) -> bool {
    s.opts.policy.approver_uids.contains(&peer.uid)
}

fn owner_path(state: &StateDir, grant: &str) -> PathBuf {
    state.session_dir(grant).join("owner.json")
}

fn owner_of(state: &StateDir, grant: &str) -> Option<u32> {
    let v: Value = serde_json::from_slice(&std::fs::read(owner_path(state, grant)).ok()?).ok()?;
    v["uid"].as_u64().map(|u| u as u32)
}

/// The grant, if the caller owns it (or approves). Others get "unknown
/// grant": a grant that is not yours does not exist for you.
fn owned_grant(s: &Server, peer: Peer, id: &str) -> Result<(StateDir, Grant)> {
    let st = state(s)?;
    let grant = st.load_grant(id)?;
    if owner_of(&st, id) != Some(peer.uid) && !is_approver(s, peer) {
        return Err(Error::invalid(format!("unknown grant {id}")));
    }
    Ok((st, grant))
}

fn parse_types(types: &[String]) -> Result<Vec<FileType>> {
    types
        .iter()
        .map(|t| {
            serde_json::from_value::<FileType>(json!(t))
                .map_err(|_| Error::invalid(format!("unknown file type {t:?}")))
        })
        .collect()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SearchReq {
    query: String,
    #[serde(default)]
    types: Vec<String>,
    #[serde(default = "twenty")]
    limit: usize,
}

fn twenty() -> usize {
    20
}

async fn search(State(s): Srv, ConnectInfo(peer): Caller, Body(r): Body<SearchReq>) -> Reply {
    let hits = operation(&s, peer, "search", None, move |s| {
        if !s.opts.policy.enabled {
            return Err(Error::policy(
                "workspace access is disabled by policy (enabled = false)",
            ));
        }
        let types = parse_types(&r.types)?;
        let q = crate::search::Query {
            text: &r.query,
            types: &types,
            limit: r.limit.clamp(1, 1000),
        };
        crate::search::search(&s.opts.root, &s.opts.policy, &[], &q)
    })
    .await?;
    Ok(Json(json!(hits)))
}

#[allow(clippy::too_many_arguments)]
fn make_grant(
    s: &Server,
    peer: Peer,
    files: &[String],
    mode: Mode,
    purpose: String,
    reason: String,
    ttl: Option<u64>,
    include_ignored: bool,
) -> Result<Grant> {
    if files.is_empty() {
        return Err(Error::invalid("request_access needs at least one file"));
    }
    for f in files {
        crate::paths::validate(f)?;
    }
    let req = GrantRequest {
        root: s.opts.root.clone(),
        allow: files
            .iter()
            .map(|f| crate::search::exact_pattern(f))
            .collect(),
        deny: vec![],
        write_prefixes: vec![],
        mode,
        purpose,
        reason: Some(reason),
        ttl: ttl.map(std::time::Duration::from_secs),
        max_files: None,
        include_ignored,
    };
    let grant = crate::grant::resolve(&req, &s.opts.policy)?;
    let granted: std::collections::BTreeSet<&str> =
        grant.files.iter().map(|f| f.path.as_str()).collect();
    if let Some(missing) = files.iter().find(|f| !granted.contains(f.as_str())) {
        // Denied or absent: the same answer, so denied files stay invisible.
        return Err(Error::invalid(format!("unknown path: {missing:?}")));
    }
    let st = state(s)?;
    let grant = st.create_grant(grant)?;
    crate::state::write_atomic(
        &owner_path(&st, &grant.grant_id),
        json!({"uid": peer.uid}).to_string().as_bytes(),
    )?;
    Ok(grant)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccessReq {
    files: Vec<String>,
    mode: Mode,
    #[serde(default)]
    reason: String,
    #[serde(default)]
    purpose: String,
    ttl_seconds: Option<u64>,
    /// Grant files `.gitignore` ignores too (they are left out by default).
    #[serde(default)]
    include_ignored: bool,
}

async fn request_access(
    State(s): Srv,
    ConnectInfo(peer): Caller,
    Body(r): Body<AccessReq>,
) -> Reply {
    let grant = operation(&s, peer, "request_access", None, move |s| {
        let purpose = if r.purpose.is_empty() {
            r.reason.clone()
        } else {
            r.purpose
        };
        make_grant(
            s,
            peer,
            &r.files,
            r.mode,
            purpose,
            r.reason,
            r.ttl_seconds,
            r.include_ignored,
        )
    })
    .await?;
    Ok(Json(json!(grant)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenViewReq {
    purpose: String,
    #[serde(default)]
    hints: Vec<String>,
    #[serde(default)]
    file_types: Vec<String>,
    #[serde(default = "ten")]
    max_files: usize,
    #[serde(default = "read_only")]
    mode: Mode,
    reason: Option<String>,
    ttl_seconds: Option<u64>,
}

fn ten() -> usize {
    10
}

fn read_only() -> Mode {
    Mode::ReadOnly
}

async fn open_view(State(s): Srv, ConnectInfo(peer): Caller, Body(r): Body<OpenViewReq>) -> Reply {
    let out = operation(&s, peer, "open_view", None, move |s| {
        let types = parse_types(&r.file_types)?;
        let text = std::iter::once(r.purpose.as_str())
            .chain(r.hints.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let q = crate::search::Query {
            text: &text,
            types: &types,
            limit: r.max_files.clamp(1, 1000),
        };
        let hits = crate::search::search(&s.opts.root, &s.opts.policy, &[], &q)?;
        if hits.is_empty() {
            return Err(Error::invalid("no file matches the purpose and hints"));
        }
        let files: Vec<String> = hits.iter().map(|h| h.path.clone()).collect();
        let reason = r.reason.clone().unwrap_or_else(|| r.purpose.clone());
        let grant = make_grant(
            s,
            peer,
            &files,
            r.mode,
            r.purpose.clone(),
            reason,
            r.ttl_seconds,
            false,
        )?;
        let st = state(s)?;
        let mp = s.opts.views.join(&grant.grant_id);
        std::fs::create_dir_all(&mp)
            .map_err(|e| Error::io(format!("creating {}", mp.display()), e))?;
        // The caller may be another user: let them in, as the owner.
        let extra: Vec<String> = vec![
            "--allow-other".into(),
            "--uid".into(),
            peer.uid.to_string(),
            "--gid".into(),
            peer.gid.to_string(),
        ];
        crate::mount::spawn_daemon(&st, &grant, &mp, &extra)?;
        Ok(json!({"grant": grant, "mount_path": mp}))
    })
    .await?;
    Ok(Json(out))
}

async fn list_grants(State(s): Srv, ConnectInfo(peer): Caller) -> Reply {
    let out = operation(&s, peer, "list_grants", None, move |s| {
        let st = state(s)?;
        let mut out = Vec::new();
        for id in st.grant_ids()? {
            if owner_of(&st, &id) == Some(peer.uid) || is_approver(s, peer) {
                let g = st.load_grant(&id)?;
                let phase = crate::session::SessionState::load(&st.session_dir(&id))?.phase;
                out.push(json!({
                    "grant_id": g.grant_id, "purpose": g.purpose, "files": g.files, "mode": g.mode,
                    "reason": g.reason, "expires_at": g.expires_at,
                    "requires_human_approval": g.requires_human_approval, "phase": phase,
                }));
            }
        }
        Ok(out)
    })
    .await?;
    Ok(Json(json!(out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DelegateReq {
    grant_id: String,
    audience: String,
    #[serde(default)]
    allow_patterns: Vec<String>,
    #[serde(default)]
    deny_patterns: Vec<String>,
    mode: Option<Mode>,
    outputs_prefix: Option<String>,
    ttl_seconds: Option<u64>,
}

async fn delegate(State(s): Srv, ConnectInfo(peer): Caller, Body(r): Body<DelegateReq>) -> Reply {
    let id = r.grant_id.clone();
    let token = operation(&s, peer, "delegate", Some(id), move |s| {
        let (_st, grant) = owned_grant(s, peer, &r.grant_id)?;
        let key = s.opts.signing_key.as_ref().ok_or_else(|| {
            Error::policy("delegate needs a signing key: start wopfs serve with A2A_GRANT_SIGNING_KEY or --signing-key")
        })?;
        let parent = claims_of(&grant)?;
        let child = crate::token::delegate(
            &parent,
            &crate::token::Narrowing {
                audience: r.audience,
                allow: if r.allow_patterns.is_empty() { parent.allow_patterns.clone() } else { r.allow_patterns },
                deny: r.deny_patterns,
                write_prefixes: vec![],
                outputs_prefix: r.outputs_prefix,
                mode: r.mode,
                ttl_secs: r.ttl_seconds,
            },
        )?;
        crate::token::encode(key, &child)
    })
    .await?;
    Ok(Json(json!({"token": token})))
}

/// A grant as the parent claims of a delegation.
fn claims_of(g: &Grant) -> Result<crate::token::Claims> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let expires_at = match g.expires_at_time()? {
        Some(t) => t
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        None => now + 24 * 3600,
    };
    Ok(crate::token::Claims {
        grant_id: g.grant_id.clone(),
        issuer: "wopfs".into(),
        audience: "wopfs".into(),
        bucket: g.root.display().to_string(),
        mode: g.mode,
        allow_patterns: g
            .files
            .iter()
            .map(|f| crate::search::exact_pattern(&f.path))
            .collect(),
        deny_patterns: g.deny_patterns.clone(),
        outputs_prefix: None,
        write_prefixes: g.write_prefixes.iter().map(|p| format!("{p}/")).collect(),
        parent_grant_id: None,
        delegation_depth: 0,
        max_delegation_depth: 40,
        expires_at,
        issued_at: now,
        nonce: String::new(),
        extra: Default::default(),
    })
}

async fn patches(State(s): Srv, ConnectInfo(peer): Caller, UrlPath(id): UrlPath<String>) -> Reply {
    let out = operation(&s, peer, "patches", Some(id.clone()), move |s| {
        let (st, grant) = owned_grant(s, peer, &id)?;
        let tmp = tempfile::Builder::new()
            .prefix("api-patches")
            .tempdir_in(st.path())
            .map_err(|e| Error::io("making a scratch dir", e))?;
        let set =
            crate::patch::set::export(&grant, &st.session_dir(&id), tmp.path(), true, |_| {})?;
        Ok(set.patches)
    })
    .await?;
    Ok(Json(json!(out)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CommitReq {
    #[serde(default)]
    paths: Vec<String>,
    approver: Option<String>,
}

/// Unmounts a view that open_view mounted, so no write races the commit.
fn stop_view(s: &Server, st: &StateDir, grant: &str) -> Result<()> {
    let mp = s.opts.views.join(grant);
    if crate::mount::mountinfo::mount_at(&mp).is_some_and(|m| m.is_wopfs()) {
        crate::mount::umount_command(st, &mp, true)?;
    }
    let _ = std::fs::remove_dir(&mp);
    Ok(())
}

fn approver_only(s: &Server, peer: Peer, what: &str) -> Result<()> {
    if is_approver(s, peer) {
        Ok(())
    } else {
        Err(Error::policy(format!(
            "uid {} may not {what}: only the policy's approver_uids may",
            peer.uid
        )))
    }
}

async fn commit(
    State(s): Srv,
    ConnectInfo(peer): Caller,
    UrlPath(id): UrlPath<String>,
    Body(r): Body<CommitReq>,
) -> Reply {
    let out = operation(&s, peer, "commit", Some(id.clone()), move |s| {
        approver_only(s, peer, "commit")?;
        let (st, grant) = owned_grant(s, peer, &id)?;
        stop_view(s, &st, &id)?;
        let approver = r
            .approver
            .unwrap_or_else(|| format!("uid {} (api)", peer.uid));
        crate::controller::commit(
            &st,
            &grant,
            crate::controller::CommitOptions {
                yes: true,
                dry_run: false,
                paths: r.paths,
                approver: Some(approver),
                from: None,
                confirm: None,
                progress: None,
            },
        )
    })
    .await?;
    Ok(Json(json!(out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RejectReq {
    reason: String,
}

async fn reject(
    State(s): Srv,
    ConnectInfo(peer): Caller,
    UrlPath(id): UrlPath<String>,
    Body(r): Body<RejectReq>,
) -> Reply {
    operation(&s, peer, "reject", Some(id.clone()), move |s| {
        approver_only(s, peer, "reject")?;
        let (st, grant) = owned_grant(s, peer, &id)?;
        stop_view(s, &st, &id)?;
        crate::controller::reject(&st, &grant, &r.reason)
    })
    .await?;
    Ok(Json(json!({"rejected": true})))
}
