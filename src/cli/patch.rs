//! `wopfs diff` and `wopfs export`

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
    /// Grant id (g-…) of the session to show.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// A per-path summary instead of the full diff.
    #[arg(long)]
    stat: bool,
    /// One JSON object per path: operation, kinds, modes, symlink target,
    /// line counts.
    #[arg(long)]
    json: bool,
    /// Only what changed after checkpoint CKPT (`wopfs checkpoints`): the
    /// old side is the view as it was then.
    #[arg(long, value_name = "CKPT")]
    since: Option<String>,
}

#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Grant id (g-…) of the session to export.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// Directory to write (patchset.json and blobs/). Without it the set
    /// goes to stdout with every content inline.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: Option<PathBuf>,
    /// Put every content inline as base64 (the seed's shape), no blobs.
    #[arg(long)]
    inline: bool,
    /// With -o: print what was written as JSON (directory, patches, blobs,
    /// bytes). Without -o the set itself is the output.
    #[arg(long, requires = "output")]
    json: bool,
}

/// What `wopfs export -o DIR --json` prints.
#[derive(serde::Serialize)]
struct Exported<'a> {
    grant_id: &'a str,
    dir: &'a std::path::Path,
    patchset: PathBuf,
    patches: usize,
    created: usize,
    updated: usize,
    deleted: usize,
    /// Contents inline in patchset.json.
    inline: usize,
    /// Files written under blobs/ (one per distinct large content).
    blobs: usize,
    /// Bytes of new content the set carries (inline or in blobs).
    bytes: u64,
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
    let mut diffs = diff::file_diffs(&loaded, &host)?;
    diff::mark_scope(&mut diffs, grant)?;
    Ok(diffs)
}

pub fn run_diff(state: &StateDir, a: &DiffArgs, term: &super::term::Term) -> Result<()> {
    let grant = state.load_grant(&a.grant)?;
    let diffs = match &a.since {
        Some(c) => crate::controller::checkpoint::diff_since(state, &grant, c)?,
        None => session_diffs(state, &grant)?,
    };
    if a.json {
        let rows: Vec<_> = diffs.iter().map(diff::to_json).collect();
        return super::print_json(&rows);
    }
    if a.stat {
        term.page(&diff::stat(&diffs))
    } else {
        term.page(&diff::render(&diffs, term.color_stdout()))
    }
}

pub fn run_export(state: &StateDir, a: &ExportArgs) -> Result<()> {
    let grant = state.load_grant(&a.grant)?;
    let session = state.session_dir(&grant.grant_id);
    let pending = crate::patch::pending(&grant, &session)?;
    let pb = super::term::progress_bar(pending.len() as u64, "exporting");
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
    if a.json {
        let count = |op: crate::patch::Op| set.patches.iter().filter(|p| p.operation == op).count();
        let blobs: std::collections::BTreeSet<&str> = set
            .patches
            .iter()
            .filter(|p| p.content.is_none())
            .filter_map(|p| p.blob.as_deref())
            .collect();
        let dir = std::path::absolute(&dir).unwrap_or(dir);
        return super::print_json(&Exported {
            grant_id: &grant.grant_id,
            dir: &dir,
            patchset: dir.join("patchset.json"),
            patches: set.patches.len(),
            created: count(crate::patch::Op::Create),
            updated: count(crate::patch::Op::Update),
            deleted: count(crate::patch::Op::Delete),
            inline: set.patches.iter().filter(|p| p.content.is_some()).count(),
            blobs: blobs.len(),
            bytes: set
                .patches
                .iter()
                .filter(|p| p.operation != crate::patch::Op::Delete)
                .filter_map(|p| p.size)
                .sum(),
        });
    }
    Ok(())
}
