//! `wopfs commit`, `wopfs reject`, `wopfs recover`

use std::io::{BufRead, IsTerminal, Write};
use std::path::PathBuf;

use crate::controller::{self, CommitOptions};
use crate::error::Result;
use crate::patch::Op;
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct CommitArgs {
    /// Grant id (g-…) of the session to commit.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// Approve without asking (needed off a terminal when approval is required).
    #[arg(long)]
    yes: bool,
    /// Report exactly what would happen; write nothing.
    #[arg(long)]
    dry_run: bool,
    /// Commit only these paths (or everything beneath these directories).
    #[arg(long = "path", value_name = "P")]
    paths: Vec<String>,
    /// Who approves (recorded in the audit log; default: the user).
    #[arg(long)]
    approver: Option<String>,
    /// Commit an exported patch set (a directory or its patchset.json).
    #[arg(long, value_name = "PATCHSET")]
    from: Option<PathBuf>,
    /// Print the outcome as JSON: applied and skipped paths, what each kept.
    #[arg(long)]
    json: bool,
    /// Commit the whole set as a new commit on this branch of the host's
    /// git repository instead of writing the working tree (its parent: the
    /// commit the grant was cut from; the working tree, index and current
    /// branch are never touched).
    #[arg(long, value_name = "NAME", conflicts_with = "paths")]
    git_branch: Option<String>,
    /// With --git-branch: the commit message's first paragraph (default:
    /// the grant's purpose); the grant, purpose, reason and approver follow
    /// as trailers.
    #[arg(long, value_name = "TEXT", requires = "git_branch")]
    message: Option<String>,
    /// With --git-branch: `Name <email>` of the commit's author (default:
    /// the approver).
    #[arg(long, value_name = "WHO", requires = "git_branch")]
    author: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct RejectArgs {
    /// Grant id (g-…) of the session to reject.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// Why the changes are rejected (kept in the record).
    #[arg(long)]
    reason: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct RecoverArgs {
    /// Grant id (g-…) whose interrupted commit to finish or roll back.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// Print the outcome as JSON.
    #[arg(long)]
    json: bool,
}

fn ask(summary: &str) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    eprint!("{summary} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).is_ok() && matches!(line.trim(), "y" | "Y" | "yes")
}

pub fn run_commit(state: &StateDir, a: &CommitArgs) -> Result<()> {
    let grant = state.load_grant(&a.grant)?;
    if let Some(branch) = &a.git_branch {
        return commit_to_branch(state, &grant, a, branch);
    }
    // Sized once the commit knows how many changes it applies.
    let pb = super::term::progress_bar(0, "committing");
    let pb2 = pb.clone();
    let outcome = controller::commit(
        state,
        &grant,
        CommitOptions {
            yes: a.yes,
            dry_run: a.dry_run,
            paths: a.paths.clone(),
            approver: a.approver.clone(),
            from: a.from.clone(),
            confirm: Some(Box::new(ask)),
            progress: Some(Box::new(move |n, total| {
                if n == 1 && total >= 100 && std::io::stderr().is_terminal() {
                    pb2.set_draw_target(indicatif::ProgressDrawTarget::stderr());
                    pb2.set_length(total as u64);
                    // The time spent checking before the first change is
                    // not the rate of applying them.
                    pb2.reset();
                }
                pb2.set_position(n as u64);
            })),
        },
    )?;
    pb.finish_and_clear();
    if a.json {
        return super::print_json(&outcome);
    }
    let verb = if outcome.dry_run { "would " } else { "" };
    for (path, op) in &outcome.applied {
        let what = match op {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        };
        outln!("{verb}{what} {path}")?;
    }
    for path in &outcome.skipped {
        outln!("{verb}skip {path} (already so on the host)")?;
    }
    if outcome.dry_run {
        outln!("dry run: nothing was written")?;
    } else if outcome.complete {
        outln!(
            "committed grant {}: {} change(s) applied",
            grant.grant_id,
            outcome.applied.len()
        )?;
    } else {
        outln!(
            "applied {} change(s); the rest stays pending",
            outcome.applied.len()
        )?;
    }
    Ok(())
}

fn commit_to_branch(
    state: &StateDir,
    grant: &crate::grant::Grant,
    a: &CommitArgs,
    branch: &str,
) -> Result<()> {
    let made = controller::commit_to_git_branch(
        state,
        grant,
        controller::BranchOptions {
            branch: branch.to_string(),
            message: a.message.clone(),
            author: a.author.clone(),
            approver: a.approver.clone(),
            from: a.from.clone(),
            yes: a.yes,
            dry_run: a.dry_run,
            confirm: Some(Box::new(ask)),
        },
    )?;
    if a.json {
        return super::print_json(&made);
    }
    if a.dry_run {
        outln!(
            "dry run: grant {}'s set can be committed onto branch {} (parent {}); nothing was written",
            grant.grant_id,
            made.branch,
            made.parent
        )?;
    } else {
        outln!(
            "committed grant {} onto branch {} as {} (parent {}); the working tree is unchanged",
            grant.grant_id,
            made.branch,
            made.commit,
            made.parent
        )?;
    }
    Ok(())
}

pub fn run_reject(state: &StateDir, a: &RejectArgs) -> Result<()> {
    let grant = state.load_grant(&a.grant)?;
    controller::reject(state, &grant, &a.reason)?;
    if a.json {
        return super::print_json(&serde_json::json!({
            "grant_id": grant.grant_id,
            "phase": "rejected",
            "reason": a.reason,
        }));
    }
    outln!(
        "rejected grant {}; the host tree is unchanged",
        grant.grant_id
    )?;
    Ok(())
}

pub fn run_recover(state: &StateDir, a: &RecoverArgs) -> Result<()> {
    let grant = state.load_grant(&a.grant)?;
    let outcome = controller::recover(state, &grant)?;
    if a.json {
        let recovered = match outcome {
            None => None,
            Some(controller::apply::Phase::Done) => Some("completed"),
            Some(controller::apply::Phase::Prepared) => Some("rolled_back"),
        };
        return super::print_json(&serde_json::json!({
            "grant_id": grant.grant_id,
            "recovered": recovered,
        }));
    }
    match outcome {
        None => outln!("grant {}: no interrupted commit", grant.grant_id)?,
        Some(controller::apply::Phase::Done) => outln!(
            "grant {}: the interrupted commit was completed",
            grant.grant_id
        )?,
        Some(controller::apply::Phase::Prepared) => outln!(
            "grant {}: the interrupted commit was rolled back; the host is as before",
            grant.grant_id
        )?,
    }
    Ok(())
}
