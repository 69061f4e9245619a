//! `wopfs grant`

use std::path::PathBuf;

use crate::error::Result;
use crate::grant::{parse_ttl, resolve, GrantRequest};
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

pub fn run(state: &StateDir, a: &Args) -> Result<()> {
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
        ttl: a.ttl.as_deref().map(parse_ttl).transpose()?,
        max_files: a.max_files,
    };
    let grant = resolve(&req, &policy)?;
    if state.path().starts_with(&grant.root) {
        return Err(crate::error::Error::invalid(format!(
            "state dir {} is inside the host tree {}; choose a --state-dir outside it",
            state.path().display(),
            grant.root.display()
        )));
    }
    let grant = state.create_grant(grant)?;
    if a.json {
        super::print_json(&grant)
    } else {
        println!("{}", grant.grant_id);
        Ok(())
    }
}
