//! `wopfs diff` and `wopfs export`

use std::io::IsTerminal;
use std::path::PathBuf;

use serde_json::json;

use crate::audit::{Audit, Event};
use crate::error::{IoContext, Result};
use crate::grant::Grant;
use crate::host::HostRoot;
use crate::patch::{diff, set};
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct DiffArgs {
    grant: String,
    /// A per-path summary instead of the full diff.
    #[arg(long)]
    stat: bool,
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    grant: String,
    /// Directory to write (patchset.json and blobs/). Without it the set
    /// goes to stdout with every content inline.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: Option<PathBuf>,
    /// Put every content inline as base64 (the seed's shape), no blobs.
    #[arg(long)]
    inline: bool,
}

/// A progress bar on a terminal; hidden when stderr is not one.
pub fn progress_bar(len: u64, what: &str) -> indicatif::ProgressBar {
    let pb = if std::io::stderr().is_terminal() && len >= 100 {
        indicatif::ProgressBar::new(len)
    } else {
        indicatif::ProgressBar::hidden()
    };
    if let Ok(style) = indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} {eta}") {
        pb.set_style(style);
    }
    pb.set_message(what.to_string());
    pb
}

/// The per-path diffs of a session's pending changes against the host
/// now (the session's patch set is built in a scratch dir and dropped).
/// An approval prompt shows `diff::approval_summary` of these.
pub fn session_diffs(state: &StateDir, grant: &Grant) -> Result<Vec<diff::FileDiff>> {
    let staging = tempfile::Builder::new()
        .prefix("wopfs-diff")
        .tempdir_in(state.path())
        .ctx(|| "making a scratch dir in the state dir")?;
    set::export(
        grant,
        &state.session_dir(&grant.grant_id),
        staging.path(),
        false,
        |_| {},
    )?;
    let loaded = set::load(staging.path())?;
    let host = HostRoot::open(&grant.root).ctx(|| format!("host tree {}", grant.root.display()))?;
    diff::file_diffs(&loaded, &host)
}

pub fn run_diff(state: &StateDir, a: &DiffArgs) -> Result<()> {
    let grant = state.load_grant(&a.grant)?;
    let diffs = session_diffs(state, &grant)?;
    if a.json {
        let rows: Vec<_> = diffs.iter().map(diff::to_json).collect();
        return super::print_json(&rows);
    }
    if a.stat {
        out!("{}", diff::stat(&diffs))?;
    } else {
        out!("{}", diff::render(&diffs, std::io::stdout().is_terminal()))?;
    }
    Ok(())
}

pub fn run_export(state: &StateDir, a: &ExportArgs) -> Result<()> {
    let grant = state.load_grant(&a.grant)?;
    let session = state.session_dir(&grant.grant_id);
    let pending = crate::patch::pending(&grant, &session)?;
    let pb = progress_bar(pending.len() as u64, "exporting");
    let (dir, _tmp) = match &a.output {
        Some(d) => (d.clone(), None),
        None => {
            let t = tempfile::Builder::new()
                .prefix("wopfs-export")
                .tempdir_in(state.path())
                .ctx(|| "making a scratch dir in the state dir")?;
            (t.path().to_path_buf(), Some(t))
        }
    };
    let inline = a.inline || a.output.is_none();
    let set = set::export(&grant, &session, &dir, inline, |_| pb.inc(1))?;
    pb.finish_and_clear();
    if a.output.is_none() {
        let text =
            std::fs::read_to_string(dir.join("patchset.json")).ctx(|| "reading the patch set")?;
        out!("{text}")?;
    }
    let st = crate::session::SessionState::load(&session)?;
    if st.phase == crate::session::Phase::Open {
        crate::session::set_phase(&session, crate::session::Phase::Pending, None, None)?;
    }
    Audit::new(state.path()).append(
        "wopfs.patch.export",
        Some(&grant.grant_id),
        &crate::audit::current_actor(),
        Event::Complete,
        "exported",
        json!({"patches": set.patches.len(), "output": a.output}),
    )?;
    if set.patches.is_empty() && a.output.is_some() {
        eprintln!(
            "wopfs: grant {} has no pending changes; the set is empty",
            grant.grant_id
        );
    }
    Ok(())
}
