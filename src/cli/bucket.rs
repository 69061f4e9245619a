//! `wopfs bucket set|unset|list`: the names grant tokens use for host trees.

use std::path::PathBuf;

use clap::Subcommand;
use serde_json::json;

use crate::audit::{current_actor, Audit, Event};
use crate::bucket::Buckets;
use crate::error::Result;
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: BucketCommand,
}

#[derive(Subcommand, Debug)]
enum BucketCommand {
    /// Name a host tree: tokens of bucket NAME may mount ROOT, and no other tree.
    Set {
        /// The bucket name tokens carry.
        name: String,
        /// The host tree.
        root: PathBuf,
        /// Print {"name", "root", "changed"} as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Remove a bucket name (tokens of it mount nothing afterwards).
    Unset {
        /// The bucket name to remove.
        name: String,
        /// Print {"name", "root"} (the tree it named) as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List bucket names and their trees.
    List {
        /// As JSON: {"NAME": "ROOT", ...}.
        #[arg(long)]
        json: bool,
    },
}

fn audit(
    state: &StateDir,
    op: &str,
    outcome: &str,
    name: &str,
    root: &std::path::Path,
) -> Result<()> {
    Audit::new(state.path()).append(
        op,
        None,
        &current_actor(),
        Event::Complete,
        outcome,
        json!({"bucket": name, "root": root}),
    )
}

pub fn run(state: &StateDir, a: &Args) -> Result<()> {
    let mut buckets = Buckets::load(state.path())?;
    match &a.command {
        BucketCommand::Set { name, root, json } => {
            let changed = buckets.set(name, root)?;
            let root = buckets.root_of(name).unwrap_or(root);
            if changed {
                audit(state, "wopfs.bucket.set", "named", name, root)?;
            }
            if *json {
                return super::print_json(&json!({"name": name, "root": root, "changed": changed}));
            }
        }
        BucketCommand::Unset { name, json } => {
            let root = buckets.unset(name)?;
            audit(state, "wopfs.bucket.unset", "unnamed", name, &root)?;
            if *json {
                return super::print_json(&json!({"name": name, "root": root}));
            }
        }
        BucketCommand::List { json } => {
            if *json {
                let map: serde_json::Map<String, serde_json::Value> = buckets
                    .iter()
                    .map(|(n, r)| (n.to_string(), json!(r)))
                    .collect();
                return super::print_json(&map);
            }
            for (n, r) in buckets.iter() {
                outln!("{n}\t{}", r.display())?;
            }
        }
    }
    Ok(())
}
