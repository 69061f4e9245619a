//! `wopfs grant`

use std::path::{Path, PathBuf};

use super::number::{number, MAX_FILES};
use crate::error::{Error, Result};
use crate::grant::{parse_duration, resolve, FileType, GrantRequest};
use crate::policy::{Mode, Policy};
use crate::search::{exact_pattern, search_with, Query};
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
    /// Grant by intent (repeatable): search the tree for the purpose plus
    /// these words and grant exactly the best files (up to --max-files,
    /// default 10). Not with --allow.
    #[arg(long = "hint", value_name = "WORD")]
    hint: Vec<String>,
    /// Grant by intent, only files of this type (repeatable): python,
    /// typescript, javascript, yaml, json, toml, markdown, sql, shell, other.
    /// Not with --allow.
    #[arg(long = "type", value_name = "TYPE", value_parser = super::search::file_type_parser())]
    types: Vec<FileType>,
    /// Glob of files to withhold (repeatable); deny always wins over allow.
    #[arg(long = "deny", value_name = "GLOB")]
    deny: Vec<String>,
    /// Where new files may be created (repeatable).
    #[arg(long = "write-prefix", value_name = "PREFIX")]
    write_prefix: Vec<String>,
    /// What the agent may do in the view (the policy's allowed_modes decide).
    #[arg(long, value_enum, default_value = "read_only")]
    mode: Mode,
    /// What the view is for.
    #[arg(long)]
    purpose: String,
    /// Why access is needed (some policies require it).
    #[arg(long)]
    reason: Option<String>,
    /// Lifetime, e.g. 30m, 2h, 1d (1s to 3650d).
    #[arg(long, value_name = "DURATION", allow_hyphen_values = true)]
    ttl: Option<String>,
    /// At most this many files (never more than the policy allows).
    #[arg(long, value_name = "N", allow_hyphen_values = true,
          value_parser = number::<u64>(1, MAX_FILES))]
    max_files: Option<u64>,
    /// Grant files that `.gitignore` (nested ones, `.git/info/exclude`)
    /// ignores too; by default they are left out.
    #[arg(long)]
    include_ignored: bool,
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
    let intent = !a.hint.is_empty() || !a.types.is_empty();
    let allow = if intent {
        by_intent(a, &policy)?
    } else {
        a.allow.clone()
    };
    let req = GrantRequest {
        root: a.root.clone(),
        allow,
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
        include_ignored: a.include_ignored,
    };
    let grant = resolve(&req, &policy, &crate::clock::SystemClock)?;
    let state = StateDir::open(state_path)?;
    // The bucket name of the tree, if one is configured (`wopfs bucket`).
    let bucket = crate::bucket::name_of_root(state.path(), &grant.root)?;
    let grant = state.create_grant(grant)?;
    let mut detail = serde_json::json!({
        "mode": grant.mode, "files": grant.files.len(), "purpose": grant.purpose,
        "policy": grant.policy, "expires_at": grant.expires_at, "bucket": bucket,
        "include_ignored": grant.include_ignored, "hardlinked_files": grant.hardlinked_files,
        "hardlinks_left_out": grant.hardlinks_left_out.len(),
    });
    if intent {
        detail["intent"] = serde_json::json!({ "hints": a.hint, "types": a.types });
    }
    crate::audit::Audit::new(state.path()).append(
        "wopfs.grant.create",
        Some(&grant.grant_id),
        &crate::audit::current_actor(),
        crate::audit::Event::Complete,
        "granted",
        detail,
    )?;
    if a.json {
        let mut out = serde_json::to_value(&grant)
            .map_err(|e| Error::invalid(format!("serializing the grant: {e}")))?;
        out["bucket"] = serde_json::json!(bucket);
        super::print_json(&out)
    } else {
        outln!("{}", grant.grant_id)?;
        Ok(())
    }
}

/// How many files a grant by intent holds without --max-files.
const INTENT_FILES: u64 = 10;

/// Grant by intent: the allow patterns naming exactly the files that best
/// match the purpose and the hints (one pattern per file, glob
/// metacharacters escaped).
fn by_intent(a: &Args, policy: &Policy) -> Result<Vec<String>> {
    if !a.allow.is_empty() {
        return Err(Error::invalid(
            "--hint/--type choose files by intent; they cannot be combined with --allow",
        ));
    }
    // Refusals that do not depend on the files come before any file is read.
    let rule = |msg: &str| Err(Error::policy(format!("{msg} (policy {})", policy.source)));
    if !policy.enabled {
        return rule("workspace access is disabled by policy (enabled = false)");
    }
    if policy.require_reason && a.reason.as_deref().unwrap_or("").trim().is_empty() {
        return rule("a reason is required (require_reason = true); pass --reason");
    }
    let text = std::iter::once(a.purpose.as_str())
        .chain(a.hint.iter().map(String::as_str))
        .collect::<Vec<_>>()
        .join(" ");
    // Never more than the policy allows: a grant of the best N files, not a refusal.
    let limit = a
        .max_files
        .unwrap_or(INTENT_FILES)
        .min(policy.max_files)
        .max(1)
        .try_into()
        .unwrap_or(usize::MAX);
    let hits = search_with(
        &a.root,
        policy,
        &a.deny,
        &Query {
            text: &text,
            types: &a.types,
            limit,
        },
        a.include_ignored,
    )?;
    if hits.is_empty() {
        let names: Vec<&str> = a
            .types
            .iter()
            .map(|t| super::search::type_name(*t))
            .collect();
        let types = if names.is_empty() {
            String::new()
        } else {
            format!("; types: {}", names.join(", "))
        };
        return Err(Error::invalid(format!(
            "no file of {} matches the purpose and hints ({text:?}{types}) outside the deny patterns",
            a.root.display()
        )));
    }
    Ok(hits.iter().map(|h| exact_pattern(&h.path)).collect())
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
