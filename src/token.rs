//! Signed grant tokens, interoperable with the a2a grant format.
//!
//! A token is `base64url(payload) + "." + base64url(signature)`, both parts
//! without padding; the payload is compact JSON (the [`Claims`]) and the
//! signature is Ed25519 over the exact payload bytes. Anything that is not
//! the canonical encoding of its bytes (padding, the standard alphabet,
//! non-zero trailing bits, stray characters) is refused, as are unknown
//! payload fields — except the a2a format's own fields that wopfs does not
//! use (`llm_*`, `source_grants`), which are carried verbatim, also into
//! delegated tokens.
//!
//! Keys come from files (`--signing-key`, `--verifying-key`) or from the
//! environment (`A2A_GRANT_SIGNING_KEY`, `A2A_GRANT_VERIFYING_KEY`): raw key
//! bytes as base64 or base64url (padding optional, optional `base64:`
//! prefix), 32 bytes (a signing seed or a verifying key; a signing key may
//! also be a 64-byte keypair), or PEM (PKCS#8 private key, SPKI public key).
//! Without a verifying key, the signing key's public half verifies.
//!
//! Delegation ([`delegate`]) only narrows, and [`check_narrows`] is the one
//! rule, applied when a token is delegated and again, link by link, to the
//! whole chain of a delegated token before it is mounted ([`check_chain`]):
//! same bucket, the next depth within the parent's maximum, a mode no
//! higher, allow patterns covered by the parent's, every deny pattern of the
//! parent kept, a write scope within the parent's (see [`check_narrows`]),
//! and an expiry no later than the parent's.
//!
//! Time comes from a [`Clock`] passed in: a token is dead at its
//! `expires_at` second, and one whose `issued_at` lies more than
//! [`CLOCK_SKEW_SECS`] ahead of the clock is not valid yet.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::clock::Clock;
use crate::error::{Error, IoContext, Result};
use crate::patterns::{AllowSet, DenySet};
use crate::policy::Mode;

/// The environment variable holding the signing key.
pub const SIGNING_KEY_ENV: &str = "A2A_GRANT_SIGNING_KEY";
/// The environment variable holding the verifying key.
pub const VERIFYING_KEY_ENV: &str = "A2A_GRANT_VERIFYING_KEY";
/// The a2a format's default bound on delegation chains.
pub const DEFAULT_MAX_DELEGATION_DEPTH: u32 = 40;
/// The a2a format's default lifetime of a minted token.
pub const DEFAULT_TTL_SECS: u64 = 300;
/// How far a token's `issued_at` may lie ahead of this machine's clock
/// (the issuer's clock may run a little fast); further is refused.
pub const CLOCK_SKEW_SECS: u64 = 60;

fn default_mode() -> Mode {
    Mode::ReadOnly
}
fn default_allow() -> Vec<String> {
    vec!["**".to_string()]
}
fn default_max_depth() -> u32 {
    DEFAULT_MAX_DELEGATION_DEPTH
}

/// A token's payload. Field order is the wire order; `extra` holds the
/// a2a fields wopfs carries without using (`llm_*`, `source_grants`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Claims {
    pub grant_id: String,
    pub issuer: String,
    pub audience: String,
    pub bucket: String,
    #[serde(default = "default_mode")]
    pub mode: Mode,
    #[serde(default = "default_allow")]
    pub allow_patterns: Vec<String>,
    #[serde(default)]
    pub deny_patterns: Vec<String>,
    #[serde(default)]
    pub outputs_prefix: Option<String>,
    /// Each `prefix/`, with a trailing slash; includes `outputs_prefix`.
    #[serde(default)]
    pub write_prefixes: Vec<String>,
    #[serde(default)]
    pub parent_grant_id: Option<String>,
    #[serde(default)]
    pub delegation_depth: u32,
    #[serde(default = "default_max_depth")]
    pub max_delegation_depth: u32,
    /// Unix seconds.
    #[serde(default)]
    pub expires_at: u64,
    /// Unix seconds.
    #[serde(default)]
    pub issued_at: u64,
    #[serde(default)]
    pub nonce: String,
    /// Carried a2a fields: any `llm_*` key and `source_grants`, verbatim.
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

/// Whether a payload key outside the named fields is one the a2a format
/// defines and wopfs carries.
pub fn is_carried_field(key: &str) -> bool {
    key.starts_with("llm_") || key == "source_grants"
}

impl Claims {
    /// Refuses payload fields neither wopfs nor the a2a format knows.
    pub fn check_fields(&self) -> Result<()> {
        match self.extra.keys().find(|k| !is_carried_field(k)) {
            Some(k) => Err(Error::invalid(format!(
                "grant token has an unknown field {k:?}"
            ))),
            None => Ok(()),
        }
    }

    /// Seconds left before `expires_at` (0 once expired).
    pub fn remaining_secs(&self, clock: &dyn Clock) -> u64 {
        self.expires_at.saturating_sub(clock.unix_secs())
    }

    /// Expiry is inclusive: a token is dead at its `expires_at` second.
    pub fn is_expired(&self, clock: &dyn Clock) -> bool {
        clock.unix_secs() >= self.expires_at
    }

    /// Whether the token claims to be issued later than `clock`'s now plus
    /// [`CLOCK_SKEW_SECS`]: a broken or forged issuer clock.
    pub fn is_from_the_future(&self, clock: &dyn Clock) -> bool {
        self.issued_at > clock.unix_secs().saturating_add(CLOCK_SKEW_SECS)
    }

    /// Every write prefix in force (`outputs_prefix` included), in the a2a
    /// normal form (`dir/`).
    pub fn effective_write_prefixes(&self) -> Vec<String> {
        normalize_write_prefixes(self.outputs_prefix.as_deref(), &self.write_prefixes)
    }

    /// The write prefixes without their trailing slash, as `wopfs grant`
    /// takes them.
    pub fn write_dirs(&self) -> Vec<String> {
        self.effective_write_prefixes()
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .collect()
    }
}

/// A Unix time as RFC 3339 (UTC, to the second).
pub fn unix_rfc3339(secs: u64) -> String {
    // A forged token may carry any number: past what a date can show, say so.
    match UNIX_EPOCH.checked_add(Duration::from_secs(secs)) {
        Some(t) if secs < 253_402_300_800 => crate::grant::rfc3339(t),
        _ => format!("{secs} (past the year 9999)"),
    }
}

/// The a2a normal form of write prefixes: `outputs_prefix` first, then the
/// others; backslashes become `/`, surrounding slashes go, empty ones are
/// dropped, each ends in `/`, duplicates removed.
pub fn normalize_write_prefixes(outputs_prefix: Option<&str>, prefixes: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for value in outputs_prefix
        .into_iter()
        .chain(prefixes.iter().map(|s| s.as_str()))
    {
        let clean = value.replace('\\', "/");
        let clean = clean.trim_matches('/');
        if clean.is_empty() {
            continue;
        }
        let p = format!("{clean}/");
        if !out.contains(&p) {
            out.push(p);
        }
    }
    out
}

/// Deduplicated concatenation, keeping first occurrences; empty patterns dropped.
fn merge_patterns(a: &[String], b: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for p in a.iter().chain(b) {
        if !p.is_empty() && !out.contains(p) {
            out.push(p.clone());
        }
    }
    out
}

fn random_hex(bytes: usize, what: &str) -> Result<String> {
    let mut raw = vec![0u8; bytes];
    getrandom::fill(&mut raw).map_err(|e| {
        Error::io(
            format!("generating {what}"),
            std::io::Error::other(e.to_string()),
        )
    })?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

fn new_grant_id() -> Result<String> {
    Ok(format!("g-{}", random_hex(8, "a grant id")?))
}

fn new_nonce() -> Result<String> {
    random_hex(8, "a nonce")
}

// ---------------------------------------------------------------------------
// Keys
// ---------------------------------------------------------------------------

const LENIENT: GeneralPurposeConfig = GeneralPurposeConfig::new()
    .with_decode_padding_mode(DecodePaddingMode::Indifferent)
    .with_decode_allow_trailing_bits(false);
const STANDARD_ANY: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, LENIENT);
const URL_SAFE_ANY: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, LENIENT);

/// Raw key bytes from base64 or base64url, padded or not, with an optional
/// `base64:` prefix.
fn decode_key_text(text: &str) -> std::result::Result<Vec<u8>, String> {
    let clean = text.trim();
    let clean = clean.strip_prefix("base64:").unwrap_or(clean).trim();
    if clean.is_empty() {
        return Err("it is empty".into());
    }
    STANDARD_ANY
        .decode(clean)
        .or_else(|_| URL_SAFE_ANY.decode(clean))
        .map_err(|e| format!("it is neither PEM nor base64/base64url key bytes ({e})"))
}

fn parse_signing_key(text: &str) -> std::result::Result<SigningKey, String> {
    if text.contains("-----BEGIN") {
        return SigningKey::from_pkcs8_pem(text.trim())
            .map_err(|e| format!("it is not a PKCS#8 Ed25519 private key in PEM ({e})"));
    }
    let raw = decode_key_text(text)?;
    match raw.len() {
        32 => {
            let mut seed = [0u8; 32];
            seed.copy_from_slice(&raw);
            Ok(SigningKey::from_bytes(&seed))
        }
        64 => {
            let mut pair = [0u8; 64];
            pair.copy_from_slice(&raw);
            SigningKey::from_keypair_bytes(&pair)
                .map_err(|_| "its 64 bytes are not a consistent Ed25519 keypair".to_string())
        }
        n => Err(format!(
            "it decodes to {n} bytes; expected 32 (a seed) or 64 (a keypair)"
        )),
    }
}

fn parse_verifying_key(text: &str) -> std::result::Result<VerifyingKey, String> {
    let key = if text.contains("-----BEGIN") {
        VerifyingKey::from_public_key_pem(text.trim())
            .map_err(|e| format!("it is not an SPKI Ed25519 public key in PEM ({e})"))?
    } else {
        let raw = decode_key_text(text)?;
        let bytes: [u8; 32] = raw.as_slice().try_into().map_err(|_| {
            format!(
                "it decodes to {} bytes; expected 32 (an Ed25519 public key)",
                raw.len()
            )
        })?;
        VerifyingKey::from_bytes(&bytes).map_err(|_| {
            "its 32 bytes are not an Ed25519 public key (a signing seed? give its public key)"
                .to_string()
        })?
    };
    if key.is_weak() {
        return Err("it is a weak (small-order) Ed25519 public key".into());
    }
    Ok(key)
}

/// The key's text and a name for it in errors: the file, else the
/// environment variable (unset or blank counts as absent).
fn key_source(file: Option<&Path>, env: &str, what: &str) -> Result<Option<(String, String)>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .ctx(|| format!("reading the {what} file {}", f.display()))?;
        return Ok(Some((text, format!("file {}", f.display()))));
    }
    match std::env::var(env) {
        Ok(v) if !v.trim().is_empty() => Ok(Some((v, env.to_string()))),
        _ => Ok(None),
    }
}

/// The signing key from `file`, else from `A2A_GRANT_SIGNING_KEY`.
pub fn load_signing_key(file: Option<&Path>) -> Result<SigningKey> {
    let Some((text, source)) = key_source(file, SIGNING_KEY_ENV, "signing key")? else {
        return Err(Error::invalid(format!(
            "no signing key: pass --signing-key FILE or set {SIGNING_KEY_ENV}"
        )));
    };
    parse_signing_key(&text)
        .map_err(|e| Error::invalid(format!("the signing key from {source} is invalid: {e}")))
}

/// The verifying key from `file`, else from `A2A_GRANT_VERIFYING_KEY`,
/// else derived from the signing key in `A2A_GRANT_SIGNING_KEY`.
pub fn load_verifying_key(file: Option<&Path>) -> Result<VerifyingKey> {
    load_verifying_key_or(file, None)
}

/// Like [`load_verifying_key`], but falls back on `signing` (a key the
/// caller already holds) before the signing key of the environment.
pub fn load_verifying_key_or(
    file: Option<&Path>,
    signing: Option<&SigningKey>,
) -> Result<VerifyingKey> {
    if let Some((text, source)) = key_source(file, VERIFYING_KEY_ENV, "verifying key")? {
        return parse_verifying_key(&text).map_err(|e| {
            Error::invalid(format!("the verifying key from {source} is invalid: {e}"))
        });
    }
    if let Some(k) = signing {
        return Ok(k.verifying_key());
    }
    if key_source(None, SIGNING_KEY_ENV, "signing key")?.is_some() {
        return Ok(load_signing_key(None)?.verifying_key());
    }
    Err(Error::invalid(format!(
        "no verifying key: pass --verifying-key FILE or set {VERIFYING_KEY_ENV} (or {SIGNING_KEY_ENV})"
    )))
}

// ---------------------------------------------------------------------------
// Encoding and verification
// ---------------------------------------------------------------------------

/// Signs `claims` (write prefixes in normal form) and returns the token.
pub fn encode(key: &SigningKey, claims: &Claims) -> Result<String> {
    claims.check_fields()?;
    let mut claims = claims.clone();
    claims.write_prefixes =
        normalize_write_prefixes(claims.outputs_prefix.as_deref(), &claims.write_prefixes);
    let payload = serde_json::to_vec(&claims)
        .map_err(|e| Error::invalid(format!("serializing grant token claims: {e}")))?;
    let sig = key.sign(&payload);
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(sig.to_bytes())
    ))
}

/// Decodes one part of a token, refusing any text that is not the
/// canonical unpadded base64url encoding of its bytes.
fn decode_part(part: &str, what: &str) -> Result<Vec<u8>> {
    let bad = || {
        Error::invalid(format!(
            "grant token {what} is not canonical base64url (URL-safe alphabet, no padding)"
        ))
    };
    let bytes = URL_SAFE_NO_PAD.decode(part).map_err(|_| bad())?;
    if URL_SAFE_NO_PAD.encode(&bytes) != part {
        return Err(bad());
    }
    Ok(bytes)
}

/// Verifies `token`: its canonical encoding, its signature by `key`, its
/// fields, that by `clock` it has not expired and was not issued in the
/// future (past [`CLOCK_SKEW_SECS`]) and, with `audience`, that it is
/// addressed to that audience. Returns its claims.
pub fn verify(
    token: &str,
    key: &VerifyingKey,
    audience: Option<&str>,
    clock: &dyn Clock,
) -> Result<Claims> {
    let token = token.trim();
    let mut parts = token.split('.');
    let (Some(payload_b64), Some(sig_b64), None) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(Error::invalid(
            "grant token is malformed: expected PAYLOAD.SIGNATURE (two base64url parts)",
        ));
    };
    if payload_b64.is_empty() || sig_b64.is_empty() {
        return Err(Error::invalid(
            "grant token is malformed: its payload or signature is empty (unsigned?)",
        ));
    }
    let payload = decode_part(payload_b64, "payload")?;
    let sig = decode_part(sig_b64, "signature")?;
    let sig = Signature::from_slice(&sig).map_err(|_| {
        Error::invalid(format!(
            "grant token signature is {} bytes; an Ed25519 signature is 64",
            sig.len()
        ))
    })?;
    key.verify_strict(&payload, &sig).map_err(|_| {
        Error::invalid(
            "grant token signature does not verify: the token was altered or signed by another key",
        )
    })?;
    let mut claims: Claims = serde_json::from_slice(&payload)
        .map_err(|e| Error::invalid(format!("grant token payload is invalid: {e}")))?;
    claims.check_fields()?;
    if claims.write_prefixes.is_empty() && claims.outputs_prefix.is_some() {
        claims.write_prefixes = normalize_write_prefixes(claims.outputs_prefix.as_deref(), &[]);
    }
    if claims.delegation_depth > claims.max_delegation_depth {
        return Err(Error::invalid(format!(
            "grant token {} has delegation_depth {} beyond its max_delegation_depth {}",
            claims.grant_id, claims.delegation_depth, claims.max_delegation_depth
        )));
    }
    if claims.is_expired(clock) {
        return Err(Error::policy(format!(
            "grant token {} expired at {} ({})",
            claims.grant_id,
            unix_rfc3339(claims.expires_at),
            claims.expires_at
        )));
    }
    if claims.is_from_the_future(clock) {
        return Err(Error::policy(format!(
            "grant token {} is not valid yet: issued at {} ({}), more than {CLOCK_SKEW_SECS}s after this machine's time {} (is a clock wrong?)",
            claims.grant_id,
            unix_rfc3339(claims.issued_at),
            claims.issued_at,
            unix_rfc3339(clock.unix_secs())
        )));
    }
    if let Some(want) = audience {
        if claims.audience != want {
            return Err(Error::policy(format!(
                "grant token {} is addressed to {}, not {want}",
                claims.grant_id, claims.audience
            )));
        }
    }
    Ok(claims)
}

// ---------------------------------------------------------------------------
// Minting and delegation
// ---------------------------------------------------------------------------

/// What `wopfs token mint` asks for.
#[derive(Clone, Debug)]
pub struct MintRequest {
    pub issuer: String,
    pub audience: String,
    pub bucket: String,
    pub mode: Mode,
    /// Empty means `**`.
    pub allow: Vec<String>,
    pub deny: Vec<String>,
    pub write_prefixes: Vec<String>,
    pub outputs_prefix: Option<String>,
    /// `None` means [`DEFAULT_TTL_SECS`].
    pub ttl_secs: Option<u64>,
}

fn non_empty(flag: &str, v: &str) -> Result<()> {
    if v.trim().is_empty() {
        return Err(Error::invalid(format!("{flag} must not be empty")));
    }
    Ok(())
}

fn check_ttl(ttl: Option<u64>) -> Result<()> {
    if ttl == Some(0) {
        return Err(Error::invalid("--ttl must be at least 1 second"));
    }
    Ok(())
}

/// Checks patterns and prefixes the view will have to use.
fn check_scope(allow: &[String], deny: &[String], prefixes: &[String]) -> Result<()> {
    AllowSet::new(allow)?;
    DenySet::new(deny)?;
    for p in prefixes {
        crate::paths::validate(p.trim_end_matches('/'))
            .map_err(|e| Error::invalid(format!("invalid write prefix: {e}")))?;
    }
    Ok(())
}

/// Claims for a new root token (depth 0), not yet signed.
pub fn mint(req: &MintRequest, clock: &dyn Clock) -> Result<Claims> {
    non_empty("--issuer", &req.issuer)?;
    non_empty("--audience", &req.audience)?;
    non_empty("--bucket", &req.bucket)?;
    check_ttl(req.ttl_secs)?;
    let allow = if req.allow.is_empty() {
        default_allow()
    } else {
        req.allow.clone()
    };
    let deny = merge_patterns(&req.deny, &[]);
    let outputs_prefix = req
        .outputs_prefix
        .clone()
        .filter(|p| !p.trim_matches('/').is_empty());
    let write_prefixes = normalize_write_prefixes(outputs_prefix.as_deref(), &req.write_prefixes);
    check_scope(&allow, &deny, &write_prefixes)?;
    // Lifetimes count from the next whole second, so a token lives at
    // least its ttl (`issued_at` may be under a second ahead; `verify`
    // allows CLOCK_SKEW_SECS of that).
    let now = clock.unix_secs_ceil();
    Ok(Claims {
        grant_id: new_grant_id()?,
        issuer: req.issuer.clone(),
        audience: req.audience.clone(),
        bucket: req.bucket.clone(),
        mode: req.mode,
        allow_patterns: allow,
        deny_patterns: deny,
        outputs_prefix,
        write_prefixes,
        parent_grant_id: None,
        delegation_depth: 0,
        max_delegation_depth: DEFAULT_MAX_DELEGATION_DEPTH,
        expires_at: now.saturating_add(req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS)),
        issued_at: now,
        nonce: new_nonce()?,
        extra: BTreeMap::new(),
    })
}

/// What a delegation asks for; empty or `None` fields inherit the parent's.
#[derive(Clone, Debug, Default)]
pub struct Narrowing {
    pub audience: String,
    /// Empty: the parent's allow patterns.
    pub allow: Vec<String>,
    /// Added to the parent's deny patterns.
    pub deny: Vec<String>,
    /// Empty (and no `outputs_prefix`): the parent's write prefixes.
    pub write_prefixes: Vec<String>,
    pub outputs_prefix: Option<String>,
    /// `None`: the parent's mode.
    pub mode: Option<Mode>,
    /// `None`: until the parent expires.
    pub ttl_secs: Option<u64>,
}

/// The child's bucket must be the parent's: delegation never moves a grant
/// to another workspace.
pub fn check_bucket(parent: &Claims, bucket: &str) -> Result<()> {
    if bucket != parent.bucket {
        return Err(Error::policy(format!(
            "bucket {bucket} differs from the parent's bucket {}: a delegated token keeps its parent's bucket",
            parent.bucket
        )));
    }
    Ok(())
}

/// Normalizes a pattern as the pattern sets do: a leading `/` or `./`
/// anchors at the root, a trailing `/` means everything beneath.
fn normalize_pattern(pattern: &str) -> String {
    let p = pattern.trim_start_matches("./").trim_start_matches('/');
    match p.strip_suffix('/') {
        Some(dir) => format!("{dir}/**"),
        None => p.to_string(),
    }
}

fn has_glob_meta(s: &str) -> bool {
    s.contains(['*', '?', '[', ']', '{', '}', '\\'])
}

/// A conservative coverage check: `child` is covered by `parent` when they
/// are equal, when `parent` is `**`, or when `parent` is `D/**` (with `D`
/// literal) and `child` starts with `D/`.
pub fn pattern_covered(child: &str, parent: &str) -> bool {
    let (child, parent) = (normalize_pattern(child), normalize_pattern(parent));
    if parent == "**" || child == parent {
        return true;
    }
    match parent.strip_suffix("/**") {
        Some(dir) if !dir.is_empty() && !has_glob_meta(dir) => {
            child.len() > dir.len() + 1
                && child.starts_with(dir)
                && child[dir.len()..].starts_with('/')
        }
        _ => false,
    }
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "none".to_string()
    } else {
        items.join(", ")
    }
}

/// A literal path as a glob matching exactly it (metacharacters escaped),
/// so a write prefix such as `[ab]` is never read as a character class.
fn escape_glob(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for ch in literal.chars() {
        if matches!(ch, '*' | '?' | '[' | ']' | '{' | '}' | '\\') {
            out.push('\\');
        }
        out.push(ch);
    }
    out
}

/// A write prefix `dir/` in normal form: a relative path without empty,
/// `.` or `..` segments (so `src/out/../../.github` cannot pass for a
/// prefix beneath `src/out`).
fn check_prefix(prefix: &str) -> Result<()> {
    crate::paths::validate(prefix.trim_end_matches('/'))
        .map_err(|e| Error::policy(format!("write prefix {prefix} is invalid: {e}")))
}

/// An allow pattern of a delegated token must not hide a climb out of a
/// directory behind `.` or `..` segments (`src/../.github/**`).
fn check_pattern_segments(pattern: &str) -> Result<()> {
    let p = normalize_pattern(pattern);
    if p.split('/')
        .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(Error::policy(format!(
            "allow pattern {pattern} has an empty, '.' or '..' segment"
        )));
    }
    Ok(())
}

/// The one narrowing rule: `child` may do nothing `parent` may not. Each
/// violation is named:
///
/// - the same bucket; depth one more than the parent's, within the parent's
///   `max_delegation_depth` (never raised); a mode no higher; an expiry no
///   later;
/// - every allow pattern covered by one of the parent's ([`pattern_covered`]);
/// - every deny pattern of the parent kept;
/// - the write scope within the parent's. A token with write prefixes may
///   change and create anything beneath them; a writable token without
///   any may create names wherever its allow patterns match. So each write
///   prefix of the child (`outputs_prefix` included) must lie beneath one
///   of the parent's (compared by path segments, bytes as they are: case
///   counts, glob characters are literal), or, when the parent has none,
///   everything beneath it must be covered by one of the parent's allow
///   patterns; and a writable child without write prefixes under a parent
///   with some must have every allow pattern within the parent's prefixes.
pub fn check_narrows(parent: &Claims, child: &Claims) -> Result<()> {
    let refuse = |msg: String| Err(Error::policy(msg));
    if child.bucket != parent.bucket {
        return refuse(format!(
            "bucket {} differs from the parent's bucket {}: a delegated token keeps its parent's bucket",
            child.bucket, parent.bucket
        ));
    }
    if child.delegation_depth != parent.delegation_depth.saturating_add(1) {
        return refuse(format!(
            "delegation depth {} does not follow the parent's depth {}",
            child.delegation_depth, parent.delegation_depth
        ));
    }
    if child.max_delegation_depth > parent.max_delegation_depth {
        return refuse(format!(
            "max_delegation_depth {} is higher than the parent's {}",
            child.max_delegation_depth, parent.max_delegation_depth
        ));
    }
    if child.delegation_depth > parent.max_delegation_depth {
        return refuse(format!(
            "delegation depth {} would exceed the parent's max_delegation_depth {}",
            child.delegation_depth, parent.max_delegation_depth
        ));
    }
    if child.mode > parent.mode {
        return refuse(format!(
            "mode {} is higher than the parent's mode {}",
            child.mode, parent.mode
        ));
    }
    for a in &child.allow_patterns {
        check_pattern_segments(a)?;
        if !parent.allow_patterns.iter().any(|p| pattern_covered(a, p)) {
            return refuse(format!(
                "allow pattern {a} is not covered by the parent's patterns ({})",
                list(&parent.allow_patterns)
            ));
        }
    }
    let kept: std::collections::HashSet<String> = child
        .deny_patterns
        .iter()
        .map(|d| normalize_pattern(d))
        .collect();
    if let Some(d) = parent
        .deny_patterns
        .iter()
        .find(|d| !d.is_empty() && !kept.contains(&normalize_pattern(d)))
    {
        return refuse(format!(
            "the parent's deny pattern {d} is missing: a delegated token keeps every deny pattern of its parent"
        ));
    }
    let parent_prefixes = parent.effective_write_prefixes();
    let child_prefixes = child.effective_write_prefixes();
    for p in &child_prefixes {
        check_prefix(p)?;
    }
    if child_prefixes.is_empty() {
        if child.mode != Mode::ReadOnly && !parent_prefixes.is_empty() {
            for a in &child.allow_patterns {
                let within = parent_prefixes.iter().any(|pp| {
                    let dir = escape_glob(pp.trim_end_matches('/'));
                    pattern_covered(a, &format!("{dir}/**"))
                });
                if !within {
                    return refuse(format!(
                        "a writable token without write prefixes may create files wherever its allow patterns match, and allow pattern {a} reaches outside the parent's write prefixes ({})",
                        list(&parent_prefixes)
                    ));
                }
            }
        }
    } else if !parent_prefixes.is_empty() {
        for p in &child_prefixes {
            if !parent_prefixes.iter().any(|pp| p.starts_with(pp.as_str())) {
                return refuse(format!(
                    "write prefix {p} is outside the parent's write prefixes ({})",
                    list(&parent_prefixes)
                ));
            }
        }
    } else {
        for p in &child_prefixes {
            let beneath = format!("{}/**", escape_glob(p.trim_end_matches('/')));
            if !parent
                .allow_patterns
                .iter()
                .any(|a| pattern_covered(&beneath, a))
            {
                return refuse(format!(
                    "write prefix {p} is outside the parent's write scope: the parent has no write prefixes, so it may create files only where its allow patterns match ({}), and none covers all of {p}",
                    list(&parent.allow_patterns)
                ));
            }
        }
    }
    if child.expires_at > parent.expires_at {
        return refuse(format!(
            "it expires at {}, after the parent ({})",
            unix_rfc3339(child.expires_at),
            unix_rfc3339(parent.expires_at)
        ));
    }
    Ok(())
}

/// Checks the whole delegation chain of `token`, link by link, up to a
/// token of depth 0 (or a recorded grant): every parent is looked up by
/// `parent_of` (claims this machine knows to be genuine; the token format
/// carries only the parent's id) and every link must narrow
/// ([`check_narrows`]). A parent that cannot be found refuses the token:
/// its narrowing cannot be checked. Returns the chain's length.
pub fn check_chain(
    token: &Claims,
    mut parent_of: impl FnMut(&str) -> Result<Option<Claims>>,
) -> Result<u32> {
    let mut cur = token.clone();
    let mut links = 0;
    loop {
        let id = &cur.grant_id;
        let of_token = if cur.grant_id == token.grant_id {
            String::new()
        } else {
            format!(" (in the chain of grant token {})", token.grant_id)
        };
        match (cur.parent_grant_id.as_deref(), cur.delegation_depth) {
            (None, 0) => return Ok(links),
            (None, d) => {
                return Err(Error::policy(format!(
                "grant token {id}{of_token} has delegation depth {d} but names no parent_grant_id"
            )))
            }
            (Some(p), 0) => {
                return Err(Error::policy(format!(
                    "grant token {id}{of_token} names a parent {p} but has delegation depth 0"
                )))
            }
            (Some(p), d) => {
                let Some(parent) = parent_of(p)? else {
                    return Err(Error::policy(format!(
                        "grant token {id}{of_token} is delegated (depth {d}) from {p}, which is not known here, so its narrowing cannot be checked: a delegated token is accepted only when its whole chain is known (tokens minted, delegated, mounted or imported with `wopfs token import` in this state dir, or a grant recorded here)"
                    )));
                };
                if parent.grant_id != p {
                    return Err(Error::invalid(format!(
                        "the claims recorded for {p} are those of {}",
                        parent.grant_id
                    )));
                }
                check_narrows(&parent, &cur).map_err(|e| {
                    Error::policy(format!(
                        "grant token {id}{of_token} widens its parent {p}: {e}"
                    ))
                })?;
                cur = parent;
                links += 1;
            }
        }
    }
}

/// A recorded grant as the parent claims of a delegation (depth 0): what
/// it grants is its files (each by its exact pattern), its deny patterns,
/// its write prefixes and its mode, until it expires (a grant without an
/// expiry counts as a day from now).
pub fn grant_claims(g: &crate::grant::Grant, bucket: &str, clock: &dyn Clock) -> Result<Claims> {
    let now = clock.unix_secs();
    let expires_at = match g.expires_at_time()? {
        Some(t) => t
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        None => now.saturating_add(24 * 3600),
    };
    Ok(Claims {
        grant_id: g.grant_id.clone(),
        issuer: "wopfs".into(),
        audience: "wopfs".into(),
        bucket: bucket.to_string(),
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
        max_delegation_depth: DEFAULT_MAX_DELEGATION_DEPTH,
        expires_at,
        issued_at: now,
        nonce: String::new(),
        extra: Default::default(),
    })
}

/// The child claims of `parent` narrowed by `n` (unsigned), or an error
/// naming the violation ([`check_narrows`]). The child is issued by the
/// parent's audience.
pub fn delegate(parent: &Claims, n: &Narrowing, clock: &dyn Clock) -> Result<Claims> {
    non_empty("--audience", &n.audience)?;
    check_ttl(n.ttl_secs)?;
    let depth = parent.delegation_depth.saturating_add(1);
    if depth > parent.max_delegation_depth {
        return Err(Error::policy(format!(
            "delegation depth {depth} would exceed the parent's max_delegation_depth {}",
            parent.max_delegation_depth
        )));
    }
    let allow = if n.allow.is_empty() {
        parent.allow_patterns.clone()
    } else {
        merge_patterns(&n.allow, &[])
    };
    let outputs_prefix = n
        .outputs_prefix
        .clone()
        .filter(|p| !p.trim_matches('/').is_empty());
    let asked = normalize_write_prefixes(outputs_prefix.as_deref(), &n.write_prefixes);
    let (write_prefixes, outputs_prefix) = if asked.is_empty() {
        // Without prefixes a writable view may create files anywhere it
        // reads: keep the parent's bounds rather than drop them.
        (
            parent.effective_write_prefixes(),
            parent.outputs_prefix.clone(),
        )
    } else {
        (asked, outputs_prefix)
    };
    let deny = merge_patterns(&parent.deny_patterns, &n.deny);
    // Lifetimes count from the next whole second, so a token lives at
    // least its ttl (`issued_at` may be under a second ahead; `verify`
    // allows CLOCK_SKEW_SECS of that).
    let now = clock.unix_secs_ceil();
    if parent.is_expired(clock) {
        return Err(Error::policy(format!(
            "the parent token {} expired at {}",
            parent.grant_id,
            unix_rfc3339(parent.expires_at)
        )));
    }
    let expires_at = match n.ttl_secs {
        Some(ttl) => parent.expires_at.min(now.saturating_add(ttl)),
        None => parent.expires_at,
    };
    let child = Claims {
        grant_id: new_grant_id()?,
        issuer: parent.audience.clone(),
        audience: n.audience.clone(),
        bucket: parent.bucket.clone(),
        mode: n.mode.unwrap_or(parent.mode),
        allow_patterns: allow,
        deny_patterns: deny,
        outputs_prefix,
        write_prefixes,
        parent_grant_id: Some(parent.grant_id.clone()),
        delegation_depth: depth,
        max_delegation_depth: parent.max_delegation_depth,
        expires_at,
        issued_at: now,
        nonce: new_nonce()?,
        extra: parent.extra.clone(),
    };
    check_scope(
        &child.allow_patterns,
        &child.deny_patterns,
        &child.write_prefixes,
    )?;
    check_narrows(parent, &child)?;
    Ok(child)
}

#[cfg(test)]
mod tests {

    #[test]
    fn absurd_times_print_without_panicking() {
        assert_eq!(unix_rfc3339(0), "1970-01-01T00:00:00Z");
        assert!(unix_rfc3339(u64::MAX).contains("past the year 9999"));
        assert!(unix_rfc3339(253_402_300_800).contains("past the year 9999"));
    }

    use super::*;
    use crate::clock::{ManualClock, SystemClock};

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn root() -> Claims {
        mint(
            &MintRequest {
                issuer: "main".into(),
                audience: "worker".into(),
                bucket: "b".into(),
                mode: Mode::ReadWriteOverlay,
                allow: vec!["src/**".into(), "docs/*.md".into()],
                deny: vec!["src/secret/**".into()],
                write_prefixes: vec!["src/out".into()],
                outputs_prefix: None,
                ttl_secs: Some(600),
            },
            &SystemClock,
        )
        .unwrap()
    }

    #[test]
    fn round_trip_and_compact_payload() {
        let c = root();
        let t = encode(&key(), &c).unwrap();
        let back = verify(&t, &key().verifying_key(), Some("worker"), &SystemClock).unwrap();
        assert_eq!(back, c);
        let payload = URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap();
        let text = String::from_utf8(payload).unwrap();
        assert!(text.starts_with("{\"grant_id\":\"g-"), "{text}");
        assert!(!text.contains(' '), "{text}");
        assert!(text.contains("\"write_prefixes\":[\"src/out/\"]"), "{text}");
    }

    #[test]
    fn coverage() {
        assert!(pattern_covered("src/a/**", "**"));
        assert!(pattern_covered("src/a/*.py", "src/**"));
        assert!(pattern_covered("src/", "src/**"));
        assert!(pattern_covered("docs/*.md", "docs/*.md"));
        assert!(!pattern_covered("srcx/a", "src/**"));
        assert!(!pattern_covered("src", "src/**"));
        assert!(!pattern_covered("**", "src/**"));
        assert!(!pattern_covered("docs/a/*.md", "docs/*.md"));
        assert!(!pattern_covered("s*/x", "s*/**"));
    }

    #[test]
    fn narrowing_inherits_bounds() {
        let p = root();
        let c = delegate(
            &p,
            &Narrowing {
                audience: "sub".into(),
                ..Default::default()
            },
            &SystemClock,
        )
        .unwrap();
        assert_eq!(c.issuer, "worker");
        assert_eq!(c.allow_patterns, p.allow_patterns);
        assert_eq!(c.write_prefixes, vec!["src/out/".to_string()]);
        assert_eq!(c.expires_at, p.expires_at);
        assert_eq!(c.delegation_depth, 1);
        assert_eq!(c.parent_grant_id.as_deref(), Some(p.grant_id.as_str()));
        let err = delegate(
            &p,
            &Narrowing {
                audience: "sub".into(),
                write_prefixes: vec!["src/outer".into()],
                ..Default::default()
            },
            &SystemClock,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("write prefix src/outer/ is outside"), "{err}");
    }

    fn token(allow: &[&str], deny: &[&str], prefixes: &[&str], mode: Mode) -> Claims {
        let v = |x: &[&str]| x.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        mint(
            &MintRequest {
                issuer: "main".into(),
                audience: "worker".into(),
                bucket: "b".into(),
                mode,
                allow: v(allow),
                deny: v(deny),
                write_prefixes: v(prefixes),
                outputs_prefix: None,
                ttl_secs: Some(600),
            },
            &SystemClock,
        )
        .unwrap()
    }

    fn child_of(p: &Claims, prefixes: &[&str], outputs: Option<&str>) -> Result<Claims> {
        delegate(
            p,
            &Narrowing {
                audience: "sub".into(),
                write_prefixes: prefixes.iter().map(|s| s.to_string()).collect(),
                outputs_prefix: outputs.map(String::from),
                ..Default::default()
            },
            &SystemClock,
        )
    }

    #[test]
    fn without_write_prefixes_the_parent_bounds_creation_by_its_allow_patterns() {
        let p = token(&["src/**", "docs/*.md"], &[], &[], Mode::ReadWriteOverlay);
        for ok in [
            "src",
            "src/app",
            "src/app/",
            "/src/gen/",
            "src/*",
            "src\\gen",
        ] {
            child_of(&p, &[ok], None).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        child_of(&p, &[], Some("src/out")).unwrap();
        for bad in [
            ".github",
            "tests",
            "srcx",
            "Src",
            "SRC/app",
            "docs",
            "docs/a.md",
            "anywhere",
        ] {
            let err = child_of(&p, &[bad], None).unwrap_err().to_string();
            let want = format!("write prefix {}/ is outside the parent's write scope", bad);
            assert!(err.contains(&want), "{bad}: {err}");
            assert!(err.contains("src/**, docs/*.md"), "{err}");
        }
        let err = child_of(&p, &[], Some("tests")).unwrap_err().to_string();
        assert!(
            err.contains("write prefix tests/ is outside the parent's write scope"),
            "{err}"
        );
        for bad in [
            "src/../.github",
            "src\\..\\.github",
            "src/./x",
            "./src/x",
            "src//x",
            "src/..",
            "..",
        ] {
            let err = child_of(&p, &[bad], None).unwrap_err().to_string();
            assert!(err.contains("invalid"), "{bad}: {err}");
        }
        // Glob characters in a prefix are literal: `src/[ab]` is a directory
        // of that name, which the class `[ab]` does not match.
        let q = token(&["src/[ab]/**"], &[], &[], Mode::ReadWriteOverlay);
        let err = child_of(&q, &["src/[ab]"], None).unwrap_err().to_string();
        assert!(err.contains("outside the parent's write scope"), "{err}");
        let q = token(&["src/*.py"], &[], &[], Mode::ReadWriteOverlay);
        let err = child_of(&q, &["src"], None).unwrap_err().to_string();
        assert!(err.contains("outside the parent's write scope"), "{err}");
        // `**` bounds nothing.
        let q = token(&["**"], &[], &[], Mode::ReadWriteOverlay);
        child_of(&q, &[".github"], None).unwrap();
    }

    #[test]
    fn write_prefixes_stay_beneath_the_parents() {
        let p = token(&["**"], &[], &["src/app", "out/"], Mode::ReadWriteOverlay);
        for ok in ["src/app", "src/app/x", "out/a/b", "/src/app/"] {
            child_of(&p, &[ok], None).unwrap_or_else(|e| panic!("{ok}: {e}"));
        }
        for bad in ["src", "src/apple", "src/App", "outx", ".github", "s*"] {
            let err = child_of(&p, &[bad], None).unwrap_err().to_string();
            assert!(
                err.contains(&format!(
                    "write prefix {bad}/ is outside the parent's write prefixes (src/app/, out/)"
                )),
                "{bad}: {err}"
            );
        }
        let err = child_of(&p, &["src/app/../../x"], None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("invalid"), "{err}");
        // Inherited when none are asked for, and a forged writable child
        // without prefixes may not create where its allow patterns reach.
        let c = child_of(&p, &[], None).unwrap();
        assert_eq!(c.write_prefixes, vec!["src/app/", "out/"]);
        let mut forged = c.clone();
        forged.write_prefixes.clear();
        forged.outputs_prefix = None;
        let err = check_narrows(&p, &forged).unwrap_err().to_string();
        assert!(
            err.contains("allow pattern ** reaches outside the parent's write prefixes"),
            "{err}"
        );
        forged.allow_patterns = vec!["src/app/**".into(), "out/*.txt".into()];
        check_narrows(&p, &forged).unwrap();
        forged.allow_patterns = vec!["**".into()];
        forged.mode = Mode::ReadOnly;
        check_narrows(&p, &forged).unwrap();
    }

    #[test]
    fn every_other_widening_is_named() {
        let p = token(
            &["src/**"],
            &["src/private/**", "**/*.pem"],
            &["src/out"],
            Mode::ReadWriteOverlay,
        );
        let c = child_of(&p, &[], None).unwrap();
        check_narrows(&p, &c).unwrap();
        type Edit = Box<dyn Fn(&mut Claims)>;
        let cases: Vec<(Edit, &str)> = vec![
            (
                Box::new(|c| c.mode = Mode::ReadWriteDirect),
                "mode read_write_direct is higher",
            ),
            (
                Box::new(|c| c.allow_patterns = vec!["**".into()]),
                "allow pattern ** is not covered",
            ),
            (
                Box::new(|c| c.allow_patterns = vec!["SRC/**".into()]),
                "allow pattern SRC/** is not covered",
            ),
            (
                Box::new(|c| c.allow_patterns = vec!["src/../.github/**".into()]),
                "'..' segment",
            ),
            (
                Box::new(|c| c.deny_patterns = vec!["**/*.pem".into()]),
                "deny pattern src/private/** is missing",
            ),
            (Box::new(|c| c.deny_patterns.clear()), "is missing"),
            (
                Box::new(|c| c.write_prefixes = vec!["src/".into()]),
                "write prefix src/ is outside",
            ),
            (
                Box::new(|c| c.outputs_prefix = Some(".github".into())),
                "write prefix .github/ is outside",
            ),
            (
                Box::new(|c| c.bucket = "other".into()),
                "bucket other differs",
            ),
            (
                Box::new(|c| c.delegation_depth = 3),
                "delegation depth 3 does not follow the parent's depth 0",
            ),
            (
                Box::new(|c| c.max_delegation_depth = 41),
                "max_delegation_depth 41 is higher",
            ),
            (Box::new(|c| c.expires_at += 1), "after the parent"),
        ];
        for (edit, want) in cases {
            let mut x = c.clone();
            edit(&mut x);
            let err = check_narrows(&p, &x).unwrap_err().to_string();
            assert!(err.contains(want), "{want}: {err}");
        }
        // Denies are compared in normal form, and more are welcome.
        let mut x = c.clone();
        x.deny_patterns = vec!["/src/private/".into(), "**/*.pem".into(), "x".into()];
        check_narrows(&p, &x).unwrap();
    }

    #[test]
    fn chains_are_checked_link_by_link() {
        let root = token(&["src/**"], &[], &[], Mode::ReadWriteOverlay);
        let mid = child_of(&root, &["src/app"], None).unwrap();
        let leaf = child_of(&mid, &["src/app/gen"], None).unwrap();
        let known: BTreeMap<String, Claims> = [&root, &mid]
            .iter()
            .map(|c| (c.grant_id.clone(), (*c).clone()))
            .collect();
        let find = |id: &str| Ok(known.get(id).cloned());
        assert_eq!(check_chain(&leaf, find).unwrap(), 2);
        assert_eq!(check_chain(&root, find).unwrap(), 0);
        // A forged leaf, signed as well as any, that widens its parent.
        let mut wide = leaf.clone();
        wide.write_prefixes = vec![".github/".into()];
        let err = check_chain(&wide, find).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "grant token {} widens its parent {}",
                wide.grant_id, mid.grant_id
            )) && err.contains(
                "write prefix .github/ is outside the parent's write prefixes (src/app/)"
            ),
            "{err}"
        );
        // A forged middle link is caught from the leaf too.
        let mut wide_mid = mid.clone();
        wide_mid.write_prefixes = vec!["tests/".into()];
        let mut known2 = known.clone();
        known2.insert(mid.grant_id.clone(), wide_mid);
        let mut leaf2 = leaf.clone();
        leaf2.write_prefixes = vec!["tests/x/".into()];
        let err = check_chain(&leaf2, |id| Ok(known2.get(id).cloned()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("in the chain of grant token") && err.contains("tests/"),
            "{err}"
        );
        // Unknown parents, and inconsistent depth/parent pairs.
        let err = check_chain(&leaf, |_| Ok(None)).unwrap_err().to_string();
        assert!(err.contains("which is not known here"), "{err}");
        let mut orphan = leaf.clone();
        orphan.parent_grant_id = None;
        let err = check_chain(&orphan, find).unwrap_err().to_string();
        assert!(err.contains("names no parent_grant_id"), "{err}");
        let mut rootish = leaf.clone();
        rootish.delegation_depth = 0;
        let err = check_chain(&rootish, find).unwrap_err().to_string();
        assert!(err.contains("has delegation depth 0"), "{err}");
    }

    #[test]
    fn keys_in_every_encoding() {
        use base64::engine::general_purpose::{STANDARD, URL_SAFE};
        let seed = [0xfbu8; 32];
        let want = SigningKey::from_bytes(&seed).verifying_key();
        for text in [
            STANDARD.encode(seed),
            URL_SAFE.encode(seed),
            URL_SAFE_NO_PAD.encode(seed),
            format!("base64:{}", STANDARD.encode(seed)),
            format!("{}\n", STANDARD.encode(seed)),
        ] {
            assert_eq!(
                parse_signing_key(&text).unwrap().verifying_key(),
                want,
                "{text}"
            );
        }
        let pair = SigningKey::from_bytes(&seed).to_keypair_bytes();
        assert_eq!(
            parse_signing_key(&STANDARD.encode(pair))
                .unwrap()
                .verifying_key(),
            want
        );
        assert!(parse_signing_key(&STANDARD.encode([1u8; 31]))
            .unwrap_err()
            .contains("31 bytes"));
        assert_eq!(
            parse_verifying_key(&URL_SAFE_NO_PAD.encode(want.to_bytes())).unwrap(),
            want
        );
    }

    /// A token minted at `clock`'s now for `ttl` seconds, signed.
    fn minted_at(clock: &ManualClock, ttl: u64) -> (Claims, String) {
        let c = mint(
            &MintRequest {
                issuer: "main".into(),
                audience: "worker".into(),
                bucket: "b".into(),
                mode: Mode::ReadOnly,
                allow: vec![],
                deny: vec![],
                write_prefixes: vec![],
                outputs_prefix: None,
                ttl_secs: Some(ttl),
            },
            clock,
        )
        .unwrap();
        let t = encode(&key(), &c).unwrap();
        (c, t)
    }

    /// Minted partway through a second, a token still lives its whole
    /// ttl: the lifetime starts at the next whole second (a 1 s token is
    /// not born expired).
    #[test]
    fn a_token_never_lives_shorter_than_its_ttl() {
        let clock = ManualClock::at_unix(1_700_000_000);
        clock.advance(Duration::from_millis(900));
        let (c, _) = minted_at(&clock, 1);
        assert_eq!((c.issued_at, c.expires_at), (1_700_000_001, 1_700_000_002));
        clock.advance(Duration::from_millis(1_099));
        assert!(!c.is_expired(&clock), "1 s after minting, not yet");
        clock.advance(Duration::from_millis(1));
        assert!(c.is_expired(&clock));
    }

    #[test]
    fn a_token_lives_until_its_expiry_second_by_the_clock() {
        let clock = ManualClock::at_unix(1_700_000_000);
        let (c, t) = minted_at(&clock, 10);
        assert_eq!((c.issued_at, c.expires_at), (1_700_000_000, 1_700_000_010));
        let vk = key().verifying_key();
        clock.advance(Duration::from_millis(9_999));
        assert_eq!(c.remaining_secs(&clock), 1);
        verify(&t, &vk, Some("worker"), &clock).unwrap();
        // Dead at its expires_at second, and ever after.
        clock.advance(Duration::from_millis(1));
        assert!(c.is_expired(&clock));
        assert_eq!(c.remaining_secs(&clock), 0);
        let err = verify(&t, &vk, None, &clock).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "grant token {} expired at 2023-11-14T22:13:30Z (1700000010)",
                c.grant_id
            )),
            "{err}"
        );
        clock.advance(Duration::from_secs(86_400));
        assert!(verify(&t, &vk, None, &clock).is_err());
    }

    #[test]
    fn a_token_issued_in_the_future_is_not_valid_yet() {
        let clock = ManualClock::at_unix(1_700_000_000);
        let (c, t) = minted_at(&clock, 3_600);
        let vk = key().verifying_key();
        // The issuer's clock ran ahead of ours by the allowed skew: fine.
        clock.set(UNIX_EPOCH + Duration::from_secs(c.issued_at - CLOCK_SKEW_SECS));
        verify(&t, &vk, None, &clock).unwrap();
        // A second more is refused, naming both times.
        clock.set(UNIX_EPOCH + Duration::from_secs(c.issued_at - CLOCK_SKEW_SECS - 1));
        let err = verify(&t, &vk, None, &clock).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "grant token {} is not valid yet: issued at 2023-11-14T22:13:20Z (1700000000), more than 60s after this machine's time 2023-11-14T22:12:19Z",
                c.grant_id
            )),
            "{err}"
        );
        assert!(c.is_from_the_future(&clock));
        // Once our clock catches up, the same token verifies.
        clock.advance(Duration::from_secs(1));
        verify(&t, &vk, None, &clock).unwrap();
    }

    #[test]
    fn delegation_follows_the_clock() {
        let clock = ManualClock::at_unix(1_700_000_000);
        let (parent, _) = minted_at(&clock, 600);
        clock.advance(Duration::from_secs(100));
        let sub = |ttl_secs: Option<u64>, clock: &ManualClock| {
            delegate(
                &parent,
                &Narrowing {
                    audience: "sub".into(),
                    ttl_secs,
                    ..Default::default()
                },
                clock,
            )
        };
        // Issued now; a short child ends at now + ttl, a long one at the parent's end.
        let short = sub(Some(60), &clock).unwrap();
        assert_eq!(
            (short.issued_at, short.expires_at),
            (1_700_000_100, 1_700_000_160)
        );
        assert_eq!(
            sub(Some(3_600), &clock).unwrap().expires_at,
            parent.expires_at
        );
        assert_eq!(sub(None, &clock).unwrap().expires_at, parent.expires_at);
        // An expired parent delegates nothing.
        clock.set(UNIX_EPOCH + Duration::from_secs(parent.expires_at));
        let err = sub(None, &clock).unwrap_err().to_string();
        assert!(
            err.contains(&format!(
                "the parent token {} expired at 2023-11-14T22:23:20Z",
                parent.grant_id
            )),
            "{err}"
        );
    }
}

// ---------------------------------------------------------------------------
// Revocation
// ---------------------------------------------------------------------------

/// A token's revocation (`wopfs token revoke`), kept in the state dir:
///
/// ```text
/// STATE/tokens/revoked/<blake3 of the token id>   MAC line, then this as JSON
/// ```
///
/// A token whose id, or any id up its delegation chain, is revoked here is
/// refused at `mount --token` and `run --token` (`cli/token.rs`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TokenRevocation {
    pub token_id: String,
    /// RFC 3339, UTC.
    pub revoked_at: String,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

const REVOCATION_DOMAIN: &[u8] = b"wopfs token revocation\n";

fn revocation_path(state: &crate::state::StateDir, token_id: &str) -> std::path::PathBuf {
    let name = blake3::hash(token_id.as_bytes()).to_hex();
    state
        .path()
        .join("tokens")
        .join("revoked")
        .join(&name[..32])
}

/// Records the revocation of `token_id` (ids look like grant ids), once.
pub fn revoke(
    state: &crate::state::StateDir,
    token_id: &str,
    reason: Option<&str>,
    actor: &str,
) -> Result<TokenRevocation> {
    if !crate::state::is_grant_id(token_id) {
        return Err(Error::invalid(format!(
            "{token_id:?} is not a token id: token ids look like g-0123456789abcdef (wopfs token verify prints a token's)"
        )));
    }
    if let Some(first) = revocation(state, token_id)? {
        return Err(Error::conflict(format!(
            "token {token_id} is already revoked (at {} by {})",
            first.revoked_at, first.actor
        )));
    }
    let rev = TokenRevocation {
        token_id: token_id.to_string(),
        revoked_at: crate::grant::rfc3339(std::time::SystemTime::now()),
        actor: actor.to_string(),
        reason: reason.map(str::to_string),
    };
    let json = serde_json::to_vec(&rev).map_err(|e| Error::invalid(e.to_string()))?;
    let mac = state.mac(&[REVOCATION_DOMAIN, &json].concat())?.to_hex();
    let path = revocation_path(state, token_id);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    let mut data = format!("{mac}\n").into_bytes();
    data.extend_from_slice(&json);
    let tmp = path.with_extension(format!("tmp.{}", std::process::id()));
    crate::state::write_atomic(&tmp, &data)?;
    let linked = std::fs::hard_link(&tmp, &path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(rev),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Err(Error::conflict(format!(
            "token {token_id} is already revoked"
        ))),
        Err(e) => Err(Error::io(
            format!("recording the revocation of token {token_id}"),
            e,
        )),
    }
}

/// The revocation of `token_id`, if any; a record that does not match its
/// MAC is an error (the caller refuses the token).
pub fn revocation(
    state: &crate::state::StateDir,
    token_id: &str,
) -> Result<Option<TokenRevocation>> {
    let path = revocation_path(state, token_id);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let tampered = || {
        Error::policy(format!(
            "token {token_id} is revoked, and its revocation record has been tampered with"
        ))
    };
    let (mac, json) = data
        .iter()
        .position(|&b| b == b'\n')
        .map(|i| (&data[..i], &data[i + 1..]))
        .ok_or_else(tampered)?;
    let expect = state.mac(&[REVOCATION_DOMAIN, json].concat())?;
    let ok = std::str::from_utf8(mac)
        .ok()
        .and_then(|m| blake3::Hash::from_hex(m.trim()).ok())
        .is_some_and(|m| m == expect);
    match serde_json::from_slice::<TokenRevocation>(json) {
        Ok(r) if ok && r.token_id == token_id => Ok(Some(r)),
        _ => Err(tampered()),
    }
}

/// Refuses `claims` when its id or any id up its chain is revoked: a
/// revoked token here, or a revoked grant (`wopfs serve` delegates from
/// grants). `parent_of` gives a link's parent id (`chain::lookup`).
pub fn check_chain_not_revoked(
    state: &crate::state::StateDir,
    claims: &Claims,
    mut parent_of: impl FnMut(&str) -> Result<Option<String>>,
) -> Result<()> {
    let mut id = Some(claims.grant_id.clone());
    let mut parent = claims.parent_grant_id.clone();
    // A chain is at most max_delegation_depth long; this bounds a cycle.
    for _ in 0..=claims.delegation_depth.saturating_add(1).min(64) {
        let Some(cur) = id.take() else {
            return Ok(());
        };
        let whose = if cur == claims.grant_id {
            format!("token {cur}")
        } else {
            format!("token {} is delegated from {cur}, which", claims.grant_id)
        };
        if let Some(r) = revocation(state, &cur)? {
            return Err(Error::policy(format!(
                "{whose} was revoked at {} by {}{}",
                r.revoked_at,
                r.actor,
                r.reason.map(|r| format!(" ({r})")).unwrap_or_default()
            )));
        }
        if let Some(r) = state.revocation(&cur)? {
            return Err(Error::policy(format!(
                "{whose} is a grant revoked at {} by {}",
                r.revoked_at, r.actor
            )));
        }
        id = parent.take();
        if let Some(p) = &id {
            parent = parent_of(p)?;
        }
    }
    Ok(())
}
