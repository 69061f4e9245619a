//! `wopfs grant`

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::grant::{parse_duration, resolve, GrantRequest};
use crate::policy::{Mode, Policy};
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The host tree to cut the view from.
    #[arg(long, value_name = "DIR")]
    root: PathBuf,
    /// Policy file, or a built-in policy name (default, strict).
    #[arg(long, value_name = "FILE")]
    policy: Option<String>,
    /// Glob of files to grant (repeatable; default `**`). `*` and `?` never cross `/`.
    #[arg(long = "allow", value_name = "GLOB")]
    allow: Vec<String>,
    /// Glob of files to withhold (repeatable); deny always wins over allow.
    #[arg(long = "deny", value_name = "GLOB")]
    deny: Vec<String>,
    /// Where new files may be created (repeatable).
    #[arg(long = "write-prefix", value_name = "PREFIX")]
    write_prefix: Vec<String>,
    #[arg(long, value_enum, default_value = "read_only")]
    mode: Mode,
    /// What the view is for.
    #[arg(long)]
    purpose: String,
    /// Why access is needed (some policies require it).
    #[arg(long)]
    reason: Option<String>,
    /// Lifetime, e.g. 30m, 2h, 1d.
    #[arg(long, value_name = "DURATION")]
    ttl: Option<String>,
    /// At most this many files (never more than the policy allows).
    #[arg(long, value_name = "N")]
    max_files: Option<u64>,
    /// Print the whole grant as JSON instead of its id.
    #[arg(long)]
    json: bool,
}

pub fn run(state_path: &Path, a: &Args) -> Result<()> {
    // Refused before the state dir is created, so the host stays untouched.
    check_state_outside_root(state_path, &a.root)?;
    let policy = match &a.policy {
        Some(p) => Policy::load(p)?,
        None => Policy::builtin_default()?,
    };
    let req = GrantRequest {
        root: a.root.clone(),
        allow: a.allow.clone(),
        deny: a.deny.clone(),
        write_prefixes: a.write_prefix.clone(),
        mode: a.mode,
        purpose: a.purpose.clone(),
        reason: a.reason.clone(),
        ttl: a
            .ttl
            .as_deref()
            .map(|t| parse_duration("--ttl", t))
            .transpose()?,
        max_files: a.max_files,
    };
    let grant = resolve(&req, &policy)?;
    let state = StateDir::open(state_path)?;
    let grant = state.create_grant(grant)?;
    crate::audit::Audit::new(state.path()).append(
        "wopfs.grant.create",
        Some(&grant.grant_id),
        &crate::audit::current_actor(),
        crate::audit::Event::Complete,
        "granted",
        serde_json::json!({
            "mode": grant.mode, "files": grant.files.len(), "purpose": grant.purpose,
            "policy": grant.policy, "expires_at": grant.expires_at,
        }),
    )?;
    if a.json {
        super::print_json(&grant)
    } else {
        println!("{}", grant.grant_id);
        Ok(())
    }
}

/// The state dir must not live in the host tree: the agent would see it,
/// and a commit could overwrite it.
fn check_state_outside_root(state: &Path, root: &Path) -> Result<()> {
    let (Ok(state), Ok(root)) = (std::path::absolute(state), std::fs::canonicalize(root)) else {
        return Ok(()); // resolve() reports a missing root by name
    };
    // The state dir may not exist yet: compare its nearest existing ancestor.
    let existing = state.ancestors().find(|a| a.exists()).unwrap_or(&state);
    let canon = std::fs::canonicalize(existing).unwrap_or_else(|_| existing.to_path_buf());
    let full = canon.join(state.strip_prefix(existing).unwrap_or(Path::new("")));
    if full.starts_with(&root) {
        return Err(crate::error::Error::invalid(format!(
            "state dir {} is inside the host tree {}; choose a --state-dir outside it",
            state.display(),
            root.display()
        )));
    }
    Ok(())
}
