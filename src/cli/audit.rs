//! `wopfs audit`

use crate::audit::Audit;
use crate::error::Result;
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this grant's events.
    grant: Option<String>,
    /// Check the hash chain; name the first line at fault.
    #[arg(long)]
    verify: bool,
    #[arg(long)]
    json: bool,
}

pub fn run(state: &StateDir, a: &Args) -> Result<()> {
    let audit = Audit::new(state.path());
    if a.verify {
        let n = audit.verify()?;
        outln!("audit log verified: {n} records, hash chain intact")?;
        if !a.json && a.grant.is_none() {
            return Ok(());
        }
    }
    let records = audit.records(a.grant.as_deref())?;
    if a.json {
        return super::print_json(&records);
    }
    for r in records {
        outln!(
            "{:>5}  {}  {:<22} {:<20} {:<9} {:<12} {}",
            r.seq,
            r.time,
            r.operation_type,
            r.grant_id.as_deref().unwrap_or("-"),
            format!("{:?}", r.event).to_lowercase(),
            r.outcome,
            r.actor
        )?;
    }
    Ok(())
}
