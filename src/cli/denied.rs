//! `wopfs denied`

use crate::error::Result;
use crate::state::StateDir;
use crate::view::denied;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The grant whose session to show.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// Print the log as JSON: grant_id, cap, attempts, dropped, entries
    /// (path, op, errno, error, detail, reason, count, first, last, pid, comm).
    #[arg(long)]
    json: bool,
}

pub fn run(state: &StateDir, a: &Args) -> Result<()> {
    let d = denied::of_grant(state, &a.grant)?;
    if a.json {
        return super::print_json(&d);
    }
    let r = &d.report;
    if r.entries.is_empty() {
        outln!("grant {}: nothing denied", d.grant_id)?;
        return Ok(());
    }
    outln!(
        "grant {}: {} refused request(s) on {} name(s)",
        d.grant_id,
        r.attempts,
        r.entries.len()
    )?;
    outln!(
        "{:>6}  {:<11} {:<10} {:<24} {:<24} {:<20} PATH",
        "COUNT",
        "OP",
        "ERROR",
        "FIRST",
        "LAST",
        "PID/COMMAND"
    )?;
    for e in &r.entries {
        let who = match (e.pid, &e.comm) {
            (Some(p), Some(c)) => format!("{p}/{c}"),
            (Some(p), None) => p.to_string(),
            _ => "-".to_string(),
        };
        let detail = e
            .detail
            .as_deref()
            .map_or(String::new(), |d| format!(" ({d})"));
        outln!(
            "{:>6}  {:<11} {:<10} {:<24} {:<24} {:<20} {}{}  [{}]",
            e.count,
            e.op,
            e.error,
            e.first,
            e.last,
            who,
            e.path,
            detail,
            e.reason
        )?;
    }
    if r.dropped > 0 {
        outln!(
            "{} more refused request(s) dropped: the log keeps at most {} names",
            r.dropped,
            r.cap
        )?;
    }
    Ok(())
}
