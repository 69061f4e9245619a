//! Delegation chains of grant tokens, checked where a token is mounted.
//!
//! The token format carries a delegated token's parent only by id
//! (`parent_grant_id`), so the parent's claims must come from somewhere
//! this machine trusts. Presenting the parent token itself would not do:
//! it is a bearer token, and whoever holds it may mount its wider view.
//! So the state dir remembers the claims (never the tokens) of every token
//! it has verified — minted, delegated from, delegated, mounted, or
//! imported with `wopfs token import` — each with a keyed MAC:
//!
//! ```text
//! STATE/tokens/<blake3 of the grant id>.claims   MAC line, then the claims JSON
//! ```
//!
//! A grant recorded here (`STATE/sessions/g-…`) is a parent too: that is
//! what `wopfs serve` delegates from. [`check`] walks a token's chain up to
//! a token of depth 0 or a recorded grant, checking that every link
//! narrows ([`crate::token::check_narrows`]); an unknown parent refuses the
//! token. Records of expired tokens are removed as new ones are written.

use std::fs;
use std::path::PathBuf;

use crate::clock::Clock;
use crate::error::{Error, IoContext, Result};
use crate::state::{self, StateDir};
use crate::token::{self, Claims};

const DIR: &str = "tokens";
const DOMAIN: &[u8] = b"wopfs token claims\n";

fn record_path(state: &StateDir, grant_id: &str) -> PathBuf {
    let name = blake3::hash(grant_id.as_bytes()).to_hex();
    state
        .path()
        .join(DIR)
        .join(format!("{}.claims", &name[..32]))
}

fn mac(state: &StateDir, json: &[u8]) -> Result<blake3::Hash> {
    state.mac(&[DOMAIN, json].concat())
}

/// Remembers verified claims. The first record of an id stays; records
/// expired by `clock` are pruned.
pub fn record(state: &StateDir, claims: &Claims, clock: &dyn Clock) -> Result<()> {
    let dir = state.path().join(DIR);
    {
        use std::os::unix::fs::DirBuilderExt;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .ctx(|| format!("creating {}", dir.display()))?;
    }
    prune(state, clock);
    let path = record_path(state, &claims.grant_id);
    if path.exists() {
        return Ok(());
    }
    let json = serde_json::to_vec(claims)
        .map_err(|e| Error::invalid(format!("serializing grant token claims: {e}")))?;
    let mut text = mac(state, &json)?.to_hex().to_string().into_bytes();
    text.push(b'\n');
    text.extend_from_slice(&json);
    state::write_atomic(&path, &text)
}

/// Removes the records of tokens expired for more than a minute (a child
/// never outlives its parent, so they can no longer be parents).
fn prune(state: &StateDir, clock: &dyn Clock) {
    let Ok(entries) = fs::read_dir(state.path().join(DIR)) else {
        return;
    };
    let now = clock.unix_secs();
    for e in entries.flatten() {
        let Ok(text) = fs::read(e.path()) else {
            continue;
        };
        let Some(i) = text.iter().position(|b| *b == b'\n') else {
            continue;
        };
        let expires = serde_json::from_slice::<serde_json::Value>(&text[i + 1..])
            .ok()
            .and_then(|v| v["expires_at"].as_u64());
        if expires.is_some_and(|t| t.saturating_add(60) < now) {
            let _ = fs::remove_file(e.path());
        }
    }
}

/// The recorded claims of token `grant_id`; a record that fails its MAC
/// is an error.
fn recorded(state: &StateDir, grant_id: &str) -> Result<Option<Claims>> {
    let path = record_path(state, grant_id);
    let text = match fs::read(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    let tampered = || {
        Error::invalid(format!(
            "the record of grant token {grant_id} ({}) has been tampered with",
            path.display()
        ))
    };
    let i = text.iter().position(|b| *b == b'\n').ok_or_else(tampered)?;
    let (head, json) = (&text[..i], &text[i + 1..]);
    let want = mac(state, json)?;
    let ok = std::str::from_utf8(head)
        .ok()
        .and_then(|h| blake3::Hash::from_hex(h.trim()).ok())
        .is_some_and(|h| h == want);
    if !ok {
        return Err(tampered());
    }
    let claims: Claims = serde_json::from_slice(json).map_err(|_| tampered())?;
    if claims.grant_id != grant_id {
        return Err(tampered());
    }
    Ok(Some(claims))
}

/// The parent claims behind `id`: a recorded token, else a grant recorded
/// in this state dir (as claims issued at `clock`'s now).
pub fn lookup(state: &StateDir, id: &str, clock: &dyn Clock) -> Result<Option<Claims>> {
    if let Some(c) = recorded(state, id)? {
        return Ok(Some(c));
    }
    if state::is_grant_id(id) && state.session_dir(id).join("grant.json").exists() {
        let g = state.load_grant(id)?;
        let bucket = crate::bucket::of_root(state.path(), &g.root)?;
        return Ok(Some(token::grant_claims(&g, &bucket, clock)?));
    }
    Ok(None)
}

/// Checks the whole chain of `claims` (verified) against what this state
/// dir knows; returns the number of links.
pub fn check(state: &StateDir, claims: &Claims, clock: &dyn Clock) -> Result<u32> {
    token::check_chain(claims, |id| lookup(state, id, clock))
}
