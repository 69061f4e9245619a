//! `wopfs revoke`: end a grant now (see `mount/revoke.rs`).

use crate::error::Result;
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Grant id (g-…) to revoke.
    #[arg(value_name = "GRANT")]
    grant: String,
    /// Why it is revoked (kept in the record and the audit log).
    #[arg(long, value_name = "TEXT")]
    reason: Option<String>,
    /// Print the revocation as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(state: &StateDir, a: &Args) -> Result<()> {
    let actor = crate::audit::current_actor();
    let r = crate::mount::revoke::revoke(state, &a.grant, a.reason.as_deref(), &actor)?;
    if a.json {
        return super::print_json(&r);
    }
    outln!("revoked {} at {}", a.grant, r.revocation.revoked_at)?;
    if let Some(mp) = &r.mountpoint {
        outln!(
            "its view at {} shows nothing within a second (files already open stay open: unmount to close them)",
            mp.display()
        )?;
    }
    outln!(
        "its changes are kept for review: wopfs diff {g}, wopfs export {g}, wopfs reject {g}",
        g = a.grant
    )
}
