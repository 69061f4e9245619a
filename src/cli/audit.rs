//! `wopfs audit`

use crate::audit::Audit;
use crate::error::Result;
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this grant's events.
    #[arg(value_name = "GRANT")]
    grant: Option<String>,
    /// Check the hash chain; name the first line at fault.
    #[arg(long)]
    verify: bool,
    /// Print the records as a JSON array (with --verify, only once the
    /// chain is verified; the verdict goes to stderr).
    #[arg(long)]
    json: bool,
}

pub fn run(state: &StateDir, a: &Args, term: &super::term::Term) -> Result<()> {
    use std::fmt::Write;
    let audit = Audit::new(state.path());
    let mut text = String::new();
    if a.verify {
        let n = audit.verify()?;
        let verdict = format!("audit log verified: {n} records, hash chain intact");
        if a.json {
            // stdout stays one JSON document.
            eprintln!("{verdict}");
        } else {
            let _ = writeln!(text, "{verdict}");
            if a.grant.is_none() {
                return term.page(&text);
            }
        }
    }
    let records = audit.records(a.grant.as_deref())?;
    if a.json {
        return super::print_json(&records);
    }
    for r in records {
        let _ = writeln!(
            text,
            "{:>5}  {}  {:<22} {:<20} {:<9} {:<12} {}",
            r.seq,
            r.time,
            r.operation_type,
            r.grant_id.as_deref().unwrap_or("-"),
            format!("{:?}", r.event).to_lowercase(),
            r.outcome,
            r.actor
        );
    }
    term.page(&text)
}
