//! `wopfs checkpoint`, `wopfs checkpoints`, `wopfs undo`: record a view's
//! state and go back to it (see `controller/checkpoint.rs`).

use crate::controller::checkpoint;
use crate::error::Result;
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Grant id (g-…) of the overlay view.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// What this checkpoint is (e.g. "before turn 3").
    #[arg(long, value_name = "TEXT")]
    label: Option<String>,
    /// Print the checkpoint as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ListArgs {
    /// Grant id (g-…) of the overlay view.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// One JSON array of checkpoints.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct UndoArgs {
    /// Grant id (g-…) of the overlay view.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// The checkpoint to go back to (`wopfs checkpoints`).
    #[arg(long, value_name = "CKPT")]
    to: String,
    /// Print what was done as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(state: &StateDir, a: &Args) -> Result<()> {
    let actor = crate::audit::current_actor();
    let c = checkpoint::create(state, &a.grant, a.label.as_deref(), &actor)?;
    if a.json {
        return super::print_json(&c);
    }
    outln!("{}", c.id)
}

pub fn run_list(state: &StateDir, a: &ListArgs) -> Result<()> {
    let all = checkpoint::list(state, &a.grant)?;
    if a.json {
        return super::print_json(&all);
    }
    if all.is_empty() {
        return outln!(
            "grant {} has no checkpoints (wopfs checkpoint {} --label TEXT)",
            a.grant,
            a.grant
        );
    }
    outln!("{:<6} {:<20} {:>8}  LABEL", "ID", "TIME", "CHANGED")?;
    for c in &all {
        outln!(
            "{:<6} {:<20} {:>8}  {}",
            c.id,
            c.created_at,
            c.changed,
            c.label.as_deref().unwrap_or("")
        )?;
    }
    Ok(())
}

pub fn run_undo(state: &StateDir, a: &UndoArgs) -> Result<()> {
    let actor = crate::audit::current_actor();
    let u = checkpoint::undo(state, &a.grant, &a.to, &actor)?;
    if a.json {
        return super::print_json(&u);
    }
    outln!(
        "{} is back at {}: {} entries put back, {} removed, {} unchanged ({} ms{})",
        a.grant,
        u.to,
        u.restored,
        u.removed,
        u.kept,
        u.ms,
        if u.live {
            ", shown in the mounted view now"
        } else {
            ""
        }
    )
}
