//! The endpoints. Each is one WorkspaceOperation: the handler checks who
//! the caller is and what they may touch, then runs the library call on a
//! blocking thread. What reads the host tree for a caller (the search
//! walk, a grant's resolution) runs with the caller's filesystem
//! credentials ([`crate::creds::run_as`]); what writes the state dir runs
//! as the server. Every number a caller sends is range-checked ([`Num`]):
//! out of range is a 400 naming the field, never an overflow.

use std::path::PathBuf;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Path as UrlPath, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use super::{ApiError, GrantTag, Peer, Server};
use crate::audit::{Audit, Event};
use crate::creds::Creds;
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

/// The longest `ttl_seconds` a caller may ask for: ten years.
pub const MAX_TTL_SECONDS: u64 = 10 * 366 * 24 * 3600;
/// The most results a search (`limit`) or a view (`max_files`) may ask for.
pub const MAX_RESULTS: u64 = 1000;

/// A number from a request. Any JSON number deserializes (a wrong shape,
/// such as a string, is still a 422); the handler then checks its range,
/// so an out-of-range value is a 400 that names the field.
#[derive(Deserialize, Clone, Debug)]
#[serde(transparent)]
struct Num(serde_json::Number);

/// `n` as a whole number in `min..=max`, else a 400 naming `field`.
fn whole(field: &str, n: &Num, min: u64, max: u64) -> Result<u64> {
    match n.0.as_u64() {
        Some(v) if (min..=max).contains(&v) => Ok(v),
        _ => Err(Error::invalid(format!(
            "{field} must be a whole number from {min} to {max} (got {})",
            n.0
        ))),
    }
}

fn whole_or(field: &str, n: &Option<Num>, default: u64, min: u64, max: u64) -> Result<u64> {
    n.as_ref()
        .map_or(Ok(default), |n| whole(field, n, min, max))
}

fn ttl(n: &Option<Num>) -> Result<Option<u64>> {
    n.as_ref()
        .map(|n| whole("ttl_seconds", n, 1, MAX_TTL_SECONDS))
        .transpose()
}

/// A count already checked to be at most [`MAX_RESULTS`].
fn count(field: &str, v: u64) -> Result<usize> {
    usize::try_from(v).map_err(|_| Error::invalid(format!("{field} is too large")))
}

/// The caller's credentials: their uid and gid, and their groups.
fn caller(peer: Peer) -> Creds {
    Creds::for_user(peer.uid, peer.gid)
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
        .route("/v1/grants/{id}/denied", get(denied))
        .route("/v1/grants/{id}/commit", post(commit))
        .route("/v1/grants/{id}/reject", post(reject))
        .route("/v1/grants/{id}/revoke", post(revoke))
        .route("/v1/grants/{id}/checkpoint", post(checkpoint))
        .route("/v1/grants/{id}/checkpoints", get(checkpoints))
        .route("/v1/grants/{id}/undo", post(undo))
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
    v["uid"].as_u64().and_then(|u| u32::try_from(u).ok())
}

/// The grant, if the caller owns it (or approves). Others get "unknown
/// grant": a grant that is not yours does not exist for you.
fn owned_grant(s: &Server, peer: Peer, id: &str) -> Result<(StateDir, Grant)> {
    let st = state(s)?;
    let grant = st.load_grant(id)?;
    if owner_of(&st, id) != Some(peer.uid) && !is_approver(s, peer) {
        return Err(Error::unknown_grant(format!("unknown grant {id}")));
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
    limit: Option<Num>,
}

async fn search(State(s): Srv, ConnectInfo(peer): Caller, Body(r): Body<SearchReq>) -> Reply {
    let hits = operation(&s, peer, "search", None, move |s| {
        if !s.opts.policy.enabled {
            return Err(Error::policy(
                "workspace access is disabled by policy (enabled = false)",
            ));
        }
        let types = parse_types(&r.types)?;
        let limit = count("limit", whole_or("limit", &r.limit, 20, 1, MAX_RESULTS)?)?;
        let q = crate::search::Query {
            text: &r.query,
            types: &types,
            limit,
        };
        // Only what the caller could read on the host is opened.
        crate::creds::run_as(&caller(peer), || {
            crate::search::search(&s.opts.root, &s.opts.policy, &[], &q)
        })?
    })
    .await?;
    Ok(Json(json!(hits)))
}

/// What a caller asks for besides the files.
struct Ask {
    mode: Mode,
    purpose: String,
    reason: String,
    ttl: Option<u64>,
    include_ignored: bool,
}

/// The grant request of request_access and open_view, checked.
fn grant_request(s: &Server, peer: Peer, files: &[String], ask: Ask) -> Result<GrantRequest> {
    let Ask {
        mode,
        purpose,
        reason,
        ttl,
        include_ignored,
    } = ask;
    if files.is_empty() {
        return Err(Error::invalid("request_access needs at least one file"));
    }
    for f in files {
        crate::paths::validate(f)?;
    }
    // A direct view's daemon writes the host tree with the server's
    // privileges, not the caller's: only someone trusted to commit anything
    // may have one.
    if mode == Mode::ReadWriteDirect && !is_approver(s, peer) {
        return Err(Error::policy(format!(
            "uid {} may not request read_write_direct over the API: its writes reach the host with the server's privileges; only the policy's approver_uids may",
            peer.uid
        )));
    }
    Ok(GrantRequest {
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
    })
}

/// Resolves `req` (run it with the caller's credentials: a file they
/// cannot read is not granted); every file in `files` must be granted.
fn resolve_files(s: &Server, req: &GrantRequest, files: &[String]) -> Result<Grant> {
    let grant = keep_readable(crate::grant::resolve(
        req,
        &s.opts.policy,
        &crate::clock::SystemClock,
    )?)?;
    let granted: std::collections::BTreeSet<&str> =
        grant.files.iter().map(|f| f.path.as_str()).collect();
    if let Some(missing) = files.iter().find(|f| !granted.contains(f.as_str())) {
        // Denied, unreadable or absent: the same answer, so what the
        // caller may not see stays invisible.
        return Err(Error::invalid(format!("unknown path: {missing:?}")));
    }
    Ok(grant)
}

/// Leaves out of `grant` every file the calling thread may not read (run
/// it with the caller's credentials). The walk that resolved the grant
/// lists directories and stats files, and a stat needs no read permission
/// on the file: without this check a root-only file in a directory the
/// caller may list would be granted, and the view's daemon, which runs as
/// root, would serve it. `faccessat2(AT_EACCESS)` checks with the thread's
/// own credentials (fsuid, fsgid, groups, ACLs) and touches nothing.
fn keep_readable(mut grant: Grant) -> Result<Grant> {
    use rayon::prelude::*;
    use rustix::fs::{accessat, Access, AtFlags, OFlags};
    let host = crate::host::HostRoot::open(&grant.root)
        .map_err(|e| Error::io(format!("opening host tree {}", grant.root.display()), e))?;
    let readable = |path: &str| -> bool {
        let name = path.rsplit('/').next().unwrap_or(path);
        host.open_at(crate::paths::parent(path), OFlags::PATH | OFlags::DIRECTORY)
            .is_ok_and(|dir| {
                accessat(
                    &dir,
                    name,
                    Access::READ_OK,
                    AtFlags::EACCESS | AtFlags::SYMLINK_NOFOLLOW,
                )
                .is_ok()
            })
    };
    let keep: Vec<bool> = grant.files.par_iter().map(|f| readable(&f.path)).collect();
    let mut keep = keep.into_iter();
    grant.files.retain(|_| keep.next().unwrap_or(false));
    grant.total_size_bytes = grant.files.iter().map(|f| f.size_bytes).sum();
    if grant.files.is_empty() {
        // The words of an absent file's answer: unreadable looks absent.
        return Err(Error::invalid(format!(
            "no file of {} matches the allow patterns ({}) outside the deny patterns",
            grant.root.display(),
            grant.allow_patterns.join(", ")
        )));
    }
    Ok(grant)
}

/// Records a resolved grant as the caller's.
fn store_grant(s: &Server, peer: Peer, grant: Grant) -> Result<Grant> {
    let st = state(s)?;
    let grant = st.create_grant(grant)?;
    crate::state::write_atomic(
        &owner_path(&st, &grant.grant_id),
        json!({"uid": peer.uid}).to_string().as_bytes(),
    )?;
    Ok(grant)
}

/// A JSON answer tagged with the grant it made, for the request log.
fn with_grant(grant_id: &str, body: Value) -> Response {
    let mut r = Json(body).into_response();
    r.extensions_mut().insert(GrantTag(grant_id.to_string()));
    r
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
    ttl_seconds: Option<Num>,
    /// Grant files `.gitignore` ignores too (they are left out by default).
    #[serde(default)]
    include_ignored: bool,
}

async fn request_access(
    State(s): Srv,
    ConnectInfo(peer): Caller,
    Body(r): Body<AccessReq>,
) -> std::result::Result<Response, ApiError> {
    let grant = operation(&s, peer, "request_access", None, move |s| {
        let ttl = ttl(&r.ttl_seconds)?;
        let purpose = if r.purpose.is_empty() {
            r.reason.clone()
        } else {
            r.purpose
        };
        let req = grant_request(
            s,
            peer,
            &r.files,
            Ask {
                mode: r.mode,
                purpose,
                reason: r.reason,
                ttl,
                include_ignored: r.include_ignored,
            },
        )?;
        let grant = crate::creds::run_as(&caller(peer), || resolve_files(s, &req, &r.files))??;
        store_grant(s, peer, grant)
    })
    .await?;
    Ok(with_grant(&grant.grant_id, json!(grant)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OpenViewReq {
    purpose: String,
    #[serde(default)]
    hints: Vec<String>,
    #[serde(default)]
    file_types: Vec<String>,
    max_files: Option<Num>,
    #[serde(default = "read_only")]
    mode: Mode,
    reason: Option<String>,
    ttl_seconds: Option<Num>,
    /// The engine of a read_write_overlay view (`auto`, `kernel`, `fuse`);
    /// unset: the server's own default (`WOPFS_ENGINE`, else auto).
    #[serde(default)]
    engine: Option<crate::mount::EngineChoice>,
}

fn read_only() -> Mode {
    Mode::ReadOnly
}

async fn open_view(
    State(s): Srv,
    ConnectInfo(peer): Caller,
    Body(r): Body<OpenViewReq>,
) -> std::result::Result<Response, ApiError> {
    let out = operation(&s, peer, "open_view", None, move |s| {
        let types = parse_types(&r.file_types)?;
        let max_files = count(
            "max_files",
            whole_or("max_files", &r.max_files, 10, 1, MAX_RESULTS)?,
        )?;
        let ttl = ttl(&r.ttl_seconds)?;
        let text = std::iter::once(r.purpose.as_str())
            .chain(r.hints.iter().map(String::as_str))
            .collect::<Vec<_>>()
            .join(" ");
        let reason = r.reason.clone().unwrap_or_else(|| r.purpose.clone());
        // Searched and resolved with the caller's host permissions.
        let grant = crate::creds::run_as(&caller(peer), || -> Result<Grant> {
            let q = crate::search::Query {
                text: &text,
                types: &types,
                limit: max_files,
            };
            let hits = crate::search::search(&s.opts.root, &s.opts.policy, &[], &q)?;
            if hits.is_empty() {
                return Err(Error::invalid("no file matches the purpose and hints"));
            }
            let files: Vec<String> = hits.iter().map(|h| h.path.clone()).collect();
            let req = grant_request(
                s,
                peer,
                &files,
                Ask {
                    mode: r.mode,
                    purpose: r.purpose.clone(),
                    reason,
                    ttl,
                    include_ignored: false,
                },
            )?;
            resolve_files(s, &req, &files)
        })??;
        let grant = store_grant(s, peer, grant)?;
        let st = state(s)?;
        let mp = s.opts.views.join(&grant.grant_id);
        let mut views = s.views.lock().unwrap_or_else(|e| e.into_inner());
        if views.closing {
            return Err(Error::invalid(
                "the server is stopping: no view is mounted now",
            ));
        }
        std::fs::create_dir_all(&mp)
            .map_err(|e| Error::io(format!("creating {}", mp.display()), e))?;
        // The caller may be another user: let them in, as the owner. The
        // view holds only files the caller could read on the host.
        let mut extra: Vec<String> = vec![
            "--allow-other".into(),
            "--uid".into(),
            peer.uid.to_string(),
            "--gid".into(),
            peer.gid.to_string(),
        ];
        if let Some(e) = r.engine {
            let name = match e {
                crate::mount::EngineChoice::Auto => "auto",
                crate::mount::EngineChoice::Kernel => "kernel",
                crate::mount::EngineChoice::Fuse => "fuse",
            };
            extra.extend(["--engine".into(), name.into()]);
        }
        if let Err(e) = crate::mount::spawn_daemon(&st, &grant, &mp, &extra) {
            let _ = std::fs::remove_dir(&mp);
            return Err(e);
        }
        views.mounted.insert(grant.grant_id.clone(), mp.clone());
        Ok((
            grant.grant_id.clone(),
            json!({
                "grant": grant,
                "mount_path": mp,
                "engine": st.live_mount(&grant.grant_id).and_then(|m| m.engine).map(crate::overlay::engine::Engine::name),
            }),
        ))
    })
    .await?;
    Ok(with_grant(&out.0, out.1))
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
    ttl_seconds: Option<Num>,
}

async fn delegate(State(s): Srv, ConnectInfo(peer): Caller, Body(r): Body<DelegateReq>) -> Reply {
    let id = r.grant_id.clone();
    let token = operation(&s, peer, "delegate", Some(id), move |s| {
        let ttl_secs = ttl(&r.ttl_seconds)?;
        let (st, grant) = owned_grant(s, peer, &r.grant_id)?;
        st.check_not_revoked(&grant.grant_id, "delegate from it")?;
        let key = s.opts.signing_key.as_ref().ok_or_else(|| {
            Error::policy("delegate needs a signing key: start wopfs serve with A2A_GRANT_SIGNING_KEY or --signing-key")
        })?;
        // The grant as the parent: its bucket is its tree's (`wopfs bucket`).
        let bucket = crate::bucket::of_root(st.path(), &grant.root)?;
        let clock = crate::clock::SystemClock;
        let parent = crate::token::grant_claims(&grant, &bucket, &clock)?;
        let child = crate::token::delegate(
            &parent,
            &crate::token::Narrowing {
                audience: r.audience,
                allow: if r.allow_patterns.is_empty() { parent.allow_patterns.clone() } else { r.allow_patterns },
                deny: r.deny_patterns,
                write_prefixes: vec![],
                outputs_prefix: r.outputs_prefix,
                mode: r.mode,
                ttl_secs,
            },
            &clock,
        )?;
        crate::token::encode(key, &child)
    })
    .await?;
    Ok(Json(json!({"token": token})))
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

/// The grant's denied-access log (`wopfs denied --json`).
async fn denied(State(s): Srv, ConnectInfo(peer): Caller, UrlPath(id): UrlPath<String>) -> Reply {
    let out = operation(&s, peer, "denied", Some(id.clone()), move |s| {
        let (st, grant) = owned_grant(s, peer, &id)?;
        crate::view::denied::of_grant(&st, &grant.grant_id)
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
    /// Commit onto this branch of the host's git repository instead.
    git_branch: Option<String>,
    /// With `git_branch`: the message's first paragraph, the author.
    message: Option<String>,
    author: Option<String>,
}

/// Unmounts a view that open_view mounted, so no write races the commit.
fn stop_view(s: &Server, st: &StateDir, grant: &str) -> Result<()> {
    s.views
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .mounted
        .remove(grant);
    let mp = s.opts.views.join(grant);
    if crate::mountinfo::mount_at(&mp).is_some_and(|m| m.is_wopfs()) {
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
        if let Some(branch) = r.git_branch {
            if !r.paths.is_empty() {
                return Err(Error::invalid(
                    "git_branch commits the whole set: paths cannot go with it",
                ));
            }
            let made = crate::controller::commit_to_git_branch(
                &st,
                &grant,
                crate::controller::BranchOptions {
                    branch,
                    message: r.message,
                    author: r.author,
                    approver: Some(approver),
                    from: None,
                    yes: true,
                    dry_run: false,
                    confirm: None,
                },
            )?;
            return Ok(json!(made));
        }
        if r.message.is_some() || r.author.is_some() {
            return Err(Error::invalid("message and author go with git_branch"));
        }
        let out = crate::controller::commit(
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
        )?;
        Ok(json!(out))
    })
    .await?;
    Ok(Json(out))
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

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RevokeReq {
    #[serde(default)]
    reason: Option<String>,
}

/// Ends a grant now (`wopfs revoke`): its owner or an approver may, as
/// revoking only ever takes access away. The view stays mounted, empty,
/// and its changes stay for review (patches, reject).
async fn revoke(
    State(s): Srv,
    ConnectInfo(peer): Caller,
    UrlPath(id): UrlPath<String>,
    Body(r): Body<RevokeReq>,
) -> Reply {
    let out = operation(&s, peer, "revoke", Some(id.clone()), move |s| {
        let (st, _grant) = owned_grant(s, peer, &id)?;
        let actor = format!("uid {} (api)", peer.uid);
        crate::mount::revoke::revoke(&st, &id, r.reason.as_deref(), &actor)
    })
    .await?;
    Ok(Json(json!(out)))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CheckpointReq {
    #[serde(default)]
    label: Option<String>,
}

/// Records the view's state (`wopfs checkpoint`): the grant's owner may.
async fn checkpoint(
    State(s): Srv,
    ConnectInfo(peer): Caller,
    UrlPath(id): UrlPath<String>,
    Body(r): Body<CheckpointReq>,
) -> Reply {
    let out = operation(&s, peer, "checkpoint", Some(id.clone()), move |s| {
        let (st, _grant) = owned_grant(s, peer, &id)?;
        let actor = format!("uid {} (api)", peer.uid);
        crate::controller::checkpoint::create(&st, &id, r.label.as_deref(), &actor)
    })
    .await?;
    Ok(Json(json!(out)))
}

/// The view's checkpoints, oldest first (`wopfs checkpoints --json`).
async fn checkpoints(
    State(s): Srv,
    ConnectInfo(peer): Caller,
    UrlPath(id): UrlPath<String>,
) -> Reply {
    let out = operation(&s, peer, "checkpoints", Some(id.clone()), move |s| {
        let (st, _grant) = owned_grant(s, peer, &id)?;
        crate::controller::checkpoint::list(&st, &id)
    })
    .await?;
    Ok(Json(json!(out)))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UndoReq {
    to: String,
}

/// Puts the view back to a checkpoint (`wopfs undo --to`): a mounted view
/// shows it at once.
async fn undo(
    State(s): Srv,
    ConnectInfo(peer): Caller,
    UrlPath(id): UrlPath<String>,
    Body(r): Body<UndoReq>,
) -> Reply {
    let out = operation(&s, peer, "undo", Some(id.clone()), move |s| {
        let (st, _grant) = owned_grant(s, peer, &id)?;
        let actor = format!("uid {} (api)", peer.uid);
        crate::controller::checkpoint::undo(&st, &id, &r.to, &actor)
    })
    .await?;
    Ok(Json(json!(out)))
}
