//! `wopfs token mint|delegate|verify|import`, and mounting by token
//! (`wopfs mount --token`, `wopfs run --token`).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clap::Subcommand;
use serde_json::json;

use crate::audit::{current_actor, Audit, Event};
use crate::clock::{Clock, SystemClock};
use crate::error::{Error, IoContext, Result};
use crate::grant::{resolve, Grant, GrantRequest};
use crate::policy::{Mode, Policy};
use crate::state::StateDir;
use crate::token::{self, Claims, MintRequest, Narrowing};

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: TokenCommand,
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Mint a root token; print it.
    Mint(MintArgs),
    /// Verify a token, then mint a narrower child token for another audience; print it.
    Delegate(DelegateArgs),
    /// Verify a token and print its claims.
    Verify(VerifyArgs),
    /// Verify tokens and remember their claims (never the tokens), so that
    /// tokens delegated from them can be mounted here.
    Import(ImportArgs),
    /// Revoke a token by id: it, and every token delegated from it, is
    /// refused at mount --token and run --token from now on.
    Revoke(RevokeArgs),
}

#[derive(clap::Args, Debug)]
struct RevokeArgs {
    /// The token's id (its grant_id claim; wopfs token verify prints it).
    #[arg(value_name = "TOKEN_ID")]
    token_id: String,
    /// Why it is revoked (kept in the record and the audit log).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Print the revocation as JSON.
    #[arg(long)]
    json: bool,
}

fn revoke(state: &StateDir, a: &RevokeArgs) -> Result<()> {
    let actor = current_actor();
    let r = token::revoke(state, &a.token_id, a.reason.as_deref(), &actor)?;
    Audit::new(state.path()).append(
        "wopfs.token.revoke",
        None,
        &actor,
        Event::Complete,
        "revoked",
        json!({"token": a.token_id, "reason": a.reason}),
    )?;
    if a.json {
        return super::print_json(&r);
    }
    outln!(
        "revoked token {} at {}: it and every token delegated from it are refused at mount; views already mounted from it go on until you revoke their grants (wopfs revoke GRANT)",
        a.token_id, r.revoked_at
    )
}

#[derive(clap::Args, Debug)]
struct MintArgs {
    /// Who grants (an agent name or URL).
    #[arg(long)]
    issuer: String,
    /// Who the token is for.
    #[arg(long)]
    audience: String,
    /// The workspace the token covers.
    #[arg(long)]
    bucket: String,
    /// Glob of files to grant (repeatable; default `**`).
    #[arg(long = "allow", value_name = "GLOB")]
    allow: Vec<String>,
    /// Glob of files to withhold (repeatable).
    #[arg(long = "deny", value_name = "GLOB")]
    deny: Vec<String>,
    /// Where writes may go (repeatable).
    #[arg(long = "write-prefix", value_name = "P")]
    write_prefix: Vec<String>,
    /// The one place the audience writes its outputs (also a write prefix).
    #[arg(long, value_name = "P")]
    outputs_prefix: Option<String>,
    /// What the audience may do in the views it mounts.
    #[arg(long, value_enum, default_value = "read_only")]
    mode: Mode,
    /// Lifetime in seconds (or a duration such as 30m); default 300, at most 3650d.
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    ttl: Option<String>,
    /// Ed25519 signing key (default: $A2A_GRANT_SIGNING_KEY).
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// Print {"token": …, "claims": {…}} as JSON instead of the token alone.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct DelegateArgs {
    /// The parent token (`-` reads it from stdin).
    token: String,
    /// Who the child token is for.
    #[arg(long)]
    audience: String,
    /// Must be the parent's bucket (the default).
    #[arg(long)]
    bucket: Option<String>,
    /// Glob of files to grant, each covered by the parent's (default: the parent's).
    #[arg(long = "allow", value_name = "GLOB")]
    allow: Vec<String>,
    /// More globs to withhold (the parent's are kept).
    #[arg(long = "deny", value_name = "GLOB")]
    deny: Vec<String>,
    /// Where writes may go, within the parent's (default: the parent's).
    #[arg(long = "write-prefix", value_name = "P")]
    write_prefix: Vec<String>,
    /// Where the audience writes its outputs (also a write prefix), within
    /// the parent's write scope.
    #[arg(long, value_name = "P")]
    outputs_prefix: Option<String>,
    /// No higher than the parent's (default: the parent's).
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// Lifetime in seconds (or 30m); never past the parent's expiry (the default).
    #[arg(long, value_name = "SECONDS", allow_hyphen_values = true)]
    ttl: Option<String>,
    /// Ed25519 signing key (default: $A2A_GRANT_SIGNING_KEY).
    #[arg(long, value_name = "FILE")]
    signing_key: Option<PathBuf>,
    /// Key that verifies the parent (default: $A2A_GRANT_VERIFYING_KEY, else
    /// the signing key's public half).
    #[arg(long, value_name = "FILE")]
    verifying_key: Option<PathBuf>,
    /// Print {"token": …, "claims": {…}} as JSON instead of the token alone.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct VerifyArgs {
    /// The token (`-` reads it from stdin).
    token: String,
    /// Refuse the token unless it is addressed to this audience.
    #[arg(long)]
    audience: Option<String>,
    /// Print the claims as JSON.
    #[arg(long)]
    json: bool,
    /// Verifying key (default: $A2A_GRANT_VERIFYING_KEY, else derived from
    /// $A2A_GRANT_SIGNING_KEY).
    #[arg(long, value_name = "FILE")]
    verifying_key: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
struct ImportArgs {
    /// The tokens (`-` reads them from stdin, one a line), in any order; a
    /// delegated one needs its parent known here or given alongside.
    #[arg(required = true, value_name = "TOKEN")]
    tokens: Vec<String>,
    /// Verifying key (default: $A2A_GRANT_VERIFYING_KEY, else derived from
    /// $A2A_GRANT_SIGNING_KEY).
    #[arg(long, value_name = "FILE")]
    verifying_key: Option<PathBuf>,
    /// Print the claims imported as a JSON array.
    #[arg(long)]
    json: bool,
}

/// `--token` and its companions for `wopfs mount` and `wopfs run`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct TokenMountArgs {
    /// Mount what a signed grant token describes (`-` reads it from stdin)
    /// instead of a recorded grant; needs --root and --audience.
    #[arg(long, value_name = "TOKEN")]
    pub token: Option<String>,
    /// With --token: the host tree to cut the view from.
    #[arg(long, value_name = "DIR", requires = "token")]
    pub root: Option<PathBuf>,
    /// With --token: who we are; the token must be addressed to NAME.
    #[arg(long, value_name = "NAME", requires = "token")]
    pub audience: Option<String>,
    /// With --token: the key that verifies it (default:
    /// $A2A_GRANT_VERIFYING_KEY, else derived from $A2A_GRANT_SIGNING_KEY).
    #[arg(long, value_name = "FILE", requires = "token")]
    pub verifying_key: Option<PathBuf>,
    /// With --token: the local policy (a file, or default, strict).
    #[arg(long, value_name = "FILE", requires = "token")]
    pub policy: Option<String>,
}

pub fn run(state: &StateDir, a: &Args) -> Result<()> {
    match &a.command {
        TokenCommand::Mint(m) => mint(state, m),
        TokenCommand::Delegate(d) => delegate(state, d),
        TokenCommand::Verify(v) => verify(v),
        TokenCommand::Import(i) => import(state, i),
        TokenCommand::Revoke(r) => revoke(state, r),
    }
}

/// A token argument; `-` reads it from stdin.
fn token_text(arg: &str) -> Result<String> {
    if arg != "-" {
        return Ok(arg.trim().to_string());
    }
    let mut s = String::new();
    std::io::stdin()
        .read_to_string(&mut s)
        .ctx(|| "reading the token from stdin")?;
    Ok(s.trim().to_string())
}

/// `--ttl`: whole seconds, or a duration such as `30m`; from 1 second to
/// `grant::MAX_TTL`.
fn parse_ttl(s: Option<&str>) -> Result<Option<u64>> {
    let Some(s) = s else { return Ok(None) };
    let max = crate::grant::MAX_TTL.as_secs();
    let secs = if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_digit()) {
        // Whole seconds; too many digits for u64 is simply too long.
        s.trim().parse::<u64>().unwrap_or(u64::MAX)
    } else {
        crate::grant::parse_duration("--ttl", s)?.as_secs()
    };
    if secs == 0 {
        return Err(Error::invalid(format!(
            "--ttl must be at least 1 second (from 1 to {max} seconds, or 1s to {})",
            crate::grant::show_duration(crate::grant::MAX_TTL)
        )));
    }
    if secs > max {
        return Err(Error::invalid(format!(
            "invalid --ttl {s:?}: it must be from 1 to {max} seconds (1s to {})",
            crate::grant::show_duration(crate::grant::MAX_TTL)
        )));
    }
    Ok(Some(secs))
}

fn audit_token(state: &StateDir, op: &str, outcome: &str, c: &Claims) -> Result<()> {
    Audit::new(state.path()).append(
        op,
        None,
        &current_actor(),
        Event::Complete,
        outcome,
        json!({
            "token": c.grant_id, "parent": c.parent_grant_id, "issuer": c.issuer,
            "audience": c.audience, "bucket": c.bucket, "mode": c.mode,
            "depth": c.delegation_depth, "expires_at": c.expires_at,
        }),
    )?;
    Ok(())
}

fn mint(state: &StateDir, a: &MintArgs) -> Result<()> {
    let ttl_secs = parse_ttl(a.ttl.as_deref())?;
    let key = token::load_signing_key(a.signing_key.as_deref())?;
    let req = MintRequest {
        issuer: a.issuer.clone(),
        audience: a.audience.clone(),
        bucket: a.bucket.clone(),
        mode: a.mode,
        allow: a.allow.clone(),
        deny: a.deny.clone(),
        write_prefixes: a.write_prefix.clone(),
        outputs_prefix: a.outputs_prefix.clone(),
        ttl_secs,
    };
    let claims = token::mint(&req, &SystemClock)?;
    let text = token::encode(&key, &claims)?;
    let verified = token::verify(&text, &key.verifying_key(), None, &SystemClock)?;
    crate::chain::record(state, &verified, &SystemClock)?;
    audit_token(state, "wopfs.token.mint", "minted", &claims)?;
    print_token(&text, &claims, a.json)
}

fn delegate(state: &StateDir, a: &DelegateArgs) -> Result<()> {
    let ttl_secs = parse_ttl(a.ttl.as_deref())?;
    let signing = token::load_signing_key(a.signing_key.as_deref())?;
    let verifying = token::load_verifying_key_or(a.verifying_key.as_deref(), Some(&signing))?;
    let parent = token::verify(&token_text(&a.token)?, &verifying, None, &SystemClock)
        .map_err(|e| Error::invalid(format!("the parent token is refused: {e}")))?;
    if let Some(b) = &a.bucket {
        token::check_bucket(&parent, b)?;
    }
    let child = token::delegate(
        &parent,
        &Narrowing {
            audience: a.audience.clone(),
            allow: a.allow.clone(),
            deny: a.deny.clone(),
            write_prefixes: a.write_prefix.clone(),
            outputs_prefix: a.outputs_prefix.clone(),
            mode: a.mode,
            ttl_secs,
        },
        &SystemClock,
    )
    .map_err(|e| Error::policy(format!("delegation refused: {e}")))?;
    let text = token::encode(&signing, &child)?;
    // Both are remembered, so the child's chain can be checked where it is
    // mounted with this state dir.
    crate::chain::record(state, &parent, &SystemClock)?;
    let verified = token::verify(&text, &signing.verifying_key(), None, &SystemClock)?;
    crate::chain::record(state, &verified, &SystemClock)?;
    audit_token(state, "wopfs.token.delegate", "delegated", &child)?;
    print_token(&text, &child, a.json)
}

/// A minted or delegated token: the text alone, or with its claims.
fn print_token(text: &str, claims: &Claims, json: bool) -> Result<()> {
    if json {
        return super::print_json(&json!({ "token": text, "claims": claims }));
    }
    outln!("{text}")?;
    Ok(())
}

fn verify(a: &VerifyArgs) -> Result<()> {
    let key = token::load_verifying_key(a.verifying_key.as_deref())?;
    let claims = token::verify(
        &token_text(&a.token)?,
        &key,
        a.audience.as_deref(),
        &SystemClock,
    )?;
    if a.json {
        return super::print_json(&claims);
    }
    out!("{}", summary(&claims))?;
    Ok(())
}

fn import(state: &StateDir, a: &ImportArgs) -> Result<()> {
    let key = token::load_verifying_key(a.verifying_key.as_deref())?;
    let mut texts = Vec::new();
    for t in &a.tokens {
        if t == "-" {
            let all = token_text("-")?;
            texts.extend(
                all.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty())
                    .map(String::from),
            );
        } else {
            texts.push(t.trim().to_string());
        }
    }
    let mut all = Vec::new();
    for t in &texts {
        all.push(token::verify(t, &key, None, &SystemClock)?);
    }
    // Parents first, each checked before it vouches for a child given
    // alongside; nothing is remembered unless every chain checks out.
    all.sort_by_key(|c| c.delegation_depth);
    let mut checked: std::collections::BTreeMap<String, Claims> = Default::default();
    for c in &all {
        token::check_chain(c, |id| match checked.get(id) {
            Some(p) => Ok(Some(p.clone())),
            None => crate::chain::lookup(state, id, &SystemClock),
        })?;
        checked.insert(c.grant_id.clone(), c.clone());
    }
    for c in &all {
        crate::chain::record(state, c, &SystemClock)?;
        audit_token(state, "wopfs.token.import", "imported", c)?;
        if !a.json {
            outln!(
                "imported {} (bucket {}, delegation depth {})",
                c.grant_id,
                c.bucket,
                c.delegation_depth
            )?;
        }
    }
    if a.json {
        return super::print_json(&all);
    }
    Ok(())
}

fn or_none(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_string()
    } else {
        items.join(", ")
    }
}

/// A readable account of a verified token.
fn summary(c: &Claims) -> String {
    let left = humantime::format_duration(Duration::from_secs(c.remaining_secs(&SystemClock)));
    let mut s = format!("valid grant token {}\n", c.grant_id);
    let mut line = |k: &str, v: String| s.push_str(&format!("  {k:<10} {v}\n"));
    line("issuer", c.issuer.clone());
    line("audience", c.audience.clone());
    line("bucket", c.bucket.clone());
    line("mode", c.mode.to_string());
    line("allow", or_none(&c.allow_patterns));
    line("deny", or_none(&c.deny_patterns));
    line("write", or_none(&c.write_prefixes));
    line(
        "outputs",
        c.outputs_prefix.clone().unwrap_or_else(|| "-".into()),
    );
    line(
        "parent",
        format!(
            "{} (depth {} of at most {})",
            c.parent_grant_id.as_deref().unwrap_or("-"),
            c.delegation_depth,
            c.max_delegation_depth
        ),
    );
    line("issued", token::unix_rfc3339(c.issued_at));
    line(
        "expires",
        format!("{} (in {left})", token::unix_rfc3339(c.expires_at)),
    );
    for (k, v) in &c.extra {
        line(k, v.to_string());
    }
    s
}

impl TokenMountArgs {
    pub fn given(&self) -> bool {
        self.token.is_some()
    }
}

/// The state dir must not live in the host tree (as for `wopfs grant`).
fn check_state_outside_root(state: &Path, root: &Path) -> Result<()> {
    let (Ok(state), Ok(root)) = (std::fs::canonicalize(state), std::fs::canonicalize(root)) else {
        return Ok(()); // resolve() reports a missing root by name
    };
    if state.starts_with(&root) {
        return Err(Error::invalid(format!(
            "state dir {} is inside the host tree {}; choose a --state-dir outside it",
            state.display(),
            root.display()
        )));
    }
    Ok(())
}

/// Verifies the token of `a` (signature, expiry, audience), that the
/// root is the tree of the token's bucket and that its delegation chain,
/// known here, only narrows; resolves the local grant it describes against
/// the local policy, checks `mountpoint` (when given) and only then records
/// the grant. Nothing is recorded when any step refuses.
pub fn grant_from_token(
    state: &StateDir,
    a: &TokenMountArgs,
    mountpoint: Option<&Path>,
) -> Result<Grant> {
    let Some(tok) = &a.token else {
        return Err(Error::invalid("no --token given"));
    };
    let (Some(root), Some(audience)) = (&a.root, &a.audience) else {
        return Err(Error::invalid(
            "--token needs --root DIR (the host tree) and --audience NAME (who we are)",
        ));
    };
    let key = token::load_verifying_key(a.verifying_key.as_deref())?;
    let clock = SystemClock;
    let claims = token::verify(&token_text(tok)?, &key, Some(audience), &clock)?;
    check_state_outside_root(state.path(), root)?;
    let bucket = crate::bucket::check_token(state.path(), root, &claims.grant_id, &claims.bucket)?;
    crate::chain::check(state, &claims, &clock)?;
    token::check_chain_not_revoked(state, &claims, |id| {
        Ok(crate::chain::lookup(state, id, &clock)?.and_then(|c| c.parent_grant_id))
    })?;
    let policy = match &a.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::builtin_default()?,
    };
    // To the token's very second: the recorded grant must not outlive it.
    let expiry = std::time::UNIX_EPOCH
        .checked_add(Duration::from_secs(claims.expires_at))
        .ok_or_else(|| {
            Error::invalid(format!(
                "grant token {} has an expiry out of range ({})",
                claims.grant_id, claims.expires_at
            ))
        })?;
    let Some(remaining) = expiry
        .duration_since(clock.now())
        .ok()
        .filter(|d| !d.is_zero())
    else {
        return Err(Error::policy(format!(
            "grant token {} expired at {}",
            claims.grant_id,
            token::unix_rfc3339(claims.expires_at)
        )));
    };
    let req = GrantRequest {
        root: root.clone(),
        allow: claims.allow_patterns.clone(),
        deny: claims.deny_patterns.clone(),
        write_prefixes: claims.write_dirs(),
        mode: claims.mode,
        purpose: format!("token {} for {}", claims.grant_id, claims.audience),
        reason: Some(format!("delegated by {}", claims.issuer)),
        ttl: Some(remaining),
        max_files: None,
        include_ignored: false,
    };
    let mut grant = resolve(&req, &policy, &clock)?;
    // The lifetime counted from the end of the walk would run past the
    // token's by the walk's time.
    grant.expires_at = Some(crate::grant::rfc3339(expiry));
    if let Some(mp) = mountpoint {
        crate::mountinfo::check_mountpoint(mp, &grant.root, state.path())?;
    }
    let grant = state.create_grant(grant)?;
    Audit::new(state.path()).append(
        "wopfs.grant.create",
        Some(&grant.grant_id),
        &current_actor(),
        Event::Complete,
        "granted from a token",
        json!({
            "mode": grant.mode, "files": grant.files.len(), "purpose": grant.purpose,
            "policy": grant.policy, "expires_at": grant.expires_at,
            "token": claims.grant_id, "issuer": claims.issuer, "audience": claims.audience,
            "bucket": bucket, "parent": claims.parent_grant_id,
            "depth": claims.delegation_depth,
        }),
    )?;
    // Its children may be mounted here now.
    crate::chain::record(state, &claims, &clock)?;
    Ok(grant)
}

/// What `wopfs mount --token` and `wopfs run --token` say on stderr about
/// the grant they recorded: its id, the bucket and the tree.
pub fn token_grant_note(state: &StateDir, grant: &Grant) -> String {
    let bucket = crate::bucket::of_root(state.path(), &grant.root)
        .unwrap_or_else(|_| grant.root.display().to_string());
    format!(
        "grant {} from the token: bucket {bucket}, root {}",
        grant.grant_id,
        grant.root.display()
    )
}
