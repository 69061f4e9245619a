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
//! Delegation ([`delegate`]) only narrows: same bucket, bounded depth, a
//! mode no higher, allow patterns covered by the parent's, write prefixes
//! within the parent's (inherited when none are asked for), the parent's
//! deny patterns kept, and an expiry no later than the parent's.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, URL_SAFE_NO_PAD};
use base64::engine::DecodePaddingMode;
use base64::{alphabet, Engine};
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use serde_json::Value;

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
    pub fn remaining_secs(&self) -> u64 {
        self.expires_at.saturating_sub(unix_now())
    }

    pub fn is_expired(&self) -> bool {
        unix_now() >= self.expires_at
    }

    /// The write prefixes without their trailing slash, as `wopfs grant`
    /// takes them.
    pub fn write_dirs(&self) -> Vec<String> {
        normalize_write_prefixes(self.outputs_prefix.as_deref(), &self.write_prefixes)
            .iter()
            .map(|p| p.trim_end_matches('/').to_string())
            .collect()
    }
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A Unix time as RFC 3339 (UTC, to the second).
pub fn unix_rfc3339(secs: u64) -> String {
    crate::grant::rfc3339(UNIX_EPOCH + Duration::from_secs(secs))
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
/// fields, that it has not expired and, with `audience`, that it is
/// addressed to that audience. Returns its claims.
pub fn verify(token: &str, key: &VerifyingKey, audience: Option<&str>) -> Result<Claims> {
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
    if claims.is_expired() {
        return Err(Error::policy(format!(
            "grant token {} expired at {} ({})",
            claims.grant_id,
            unix_rfc3339(claims.expires_at),
            claims.expires_at
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
pub fn mint(req: &MintRequest) -> Result<Claims> {
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
    let now = unix_now();
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
        expires_at: now + req.ttl_secs.unwrap_or(DEFAULT_TTL_SECS),
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

/// The child claims of `parent` narrowed by `n` (unsigned), or an error
/// naming the violation. The child is issued by the parent's audience.
pub fn delegate(parent: &Claims, n: &Narrowing) -> Result<Claims> {
    non_empty("--audience", &n.audience)?;
    check_ttl(n.ttl_secs)?;
    let depth = parent.delegation_depth.saturating_add(1);
    if depth > parent.max_delegation_depth {
        return Err(Error::policy(format!(
            "delegation depth {depth} would exceed the parent's max_delegation_depth {}",
            parent.max_delegation_depth
        )));
    }
    let mode = n.mode.unwrap_or(parent.mode);
    if mode > parent.mode {
        return Err(Error::policy(format!(
            "mode {mode} is higher than the parent's mode {}",
            parent.mode
        )));
    }
    let allow = if n.allow.is_empty() {
        parent.allow_patterns.clone()
    } else {
        merge_patterns(&n.allow, &[])
    };
    for a in &allow {
        if !parent.allow_patterns.iter().any(|p| pattern_covered(a, p)) {
            return Err(Error::policy(format!(
                "allow pattern {a} is not covered by the parent's patterns ({})",
                list(&parent.allow_patterns)
            )));
        }
    }
    let parent_prefixes =
        normalize_write_prefixes(parent.outputs_prefix.as_deref(), &parent.write_prefixes);
    let outputs_prefix = n
        .outputs_prefix
        .clone()
        .filter(|p| !p.trim_matches('/').is_empty());
    let asked = normalize_write_prefixes(outputs_prefix.as_deref(), &n.write_prefixes);
    let (write_prefixes, outputs_prefix) = if asked.is_empty() {
        // Without prefixes a writable view may create files anywhere it
        // reads: keep the parent's bounds rather than drop them.
        (parent_prefixes.clone(), parent.outputs_prefix.clone())
    } else {
        if !parent_prefixes.is_empty() {
            for p in &asked {
                if !parent_prefixes.iter().any(|pp| p.starts_with(pp.as_str())) {
                    return Err(Error::policy(format!(
                        "write prefix {p} is outside the parent's write prefixes ({})",
                        list(&parent_prefixes)
                    )));
                }
            }
        }
        (asked, outputs_prefix)
    };
    let deny = merge_patterns(&parent.deny_patterns, &n.deny);
    check_scope(&allow, &deny, &write_prefixes)?;
    let now = unix_now();
    if now >= parent.expires_at {
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
    Ok(Claims {
        grant_id: new_grant_id()?,
        issuer: parent.audience.clone(),
        audience: n.audience.clone(),
        bucket: parent.bucket.clone(),
        mode,
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
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    fn root() -> Claims {
        mint(&MintRequest {
            issuer: "main".into(),
            audience: "worker".into(),
            bucket: "b".into(),
            mode: Mode::ReadWriteOverlay,
            allow: vec!["src/**".into(), "docs/*.md".into()],
            deny: vec!["src/secret/**".into()],
            write_prefixes: vec!["src/out".into()],
            outputs_prefix: None,
            ttl_secs: Some(600),
        })
        .unwrap()
    }

    #[test]
    fn round_trip_and_compact_payload() {
        let c = root();
        let t = encode(&key(), &c).unwrap();
        let back = verify(&t, &key().verifying_key(), Some("worker")).unwrap();
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
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("write prefix src/outer/ is outside"), "{err}");
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
}
