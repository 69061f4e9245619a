//! `wopfs run`

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use crate::error::{Error, Result};
use crate::mount::MountOptions;
use crate::run::{self, RunOptions};
use crate::state::StateDir;

#[derive(clap::Args, Debug)]
#[command(override_usage = "wopfs run [OPTIONS] GRANT -- CMD...\n       \
    wopfs run [OPTIONS] --token TOKEN --root DIR --audience NAME -- CMD...")]
pub struct Args {
    /// Grant id (g-…); leave it out with --token.
    #[arg(value_name = "GRANT")]
    grant: Option<String>,
    #[command(flatten)]
    token: super::token::TokenMountArgs,
    /// Where the view appears inside the command's namespace (a relative
    /// path is taken from the current directory).
    #[arg(long, default_value = "/workspace", value_name = "PATH")]
    at: PathBuf,
    #[command(flatten)]
    access: super::mount::AccessArgs,
    #[command(flatten)]
    engine: super::mount::EngineArgs,
    /// The command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

pub fn run(state: &StateDir, a: &Args) -> Result<ExitCode> {
    let grant = match (&a.grant, a.token.given()) {
        (Some(id), false) => state.load_grant(id)?,
        (None, true) => {
            let grant = super::token::grant_from_token(state, &a.token, None)?;
            // SIGPIPE is ignored while serving: a closed stderr must not panic.
            let _ = writeln!(
                std::io::stderr(),
                "wopfs run: {}",
                super::token::token_grant_note(state, &grant)
            );
            grant
        }
        (Some(_), true) => return Err(Error::invalid("give either a GRANT or --token, not both")),
        (None, false) => {
            return Err(Error::invalid(
                "wopfs run needs a GRANT, or --token TOKEN --root DIR --audience NAME",
            ))
        }
    };
    let code = run::run(
        state,
        &grant,
        RunOptions {
            at: a.at.clone(),
            command: a.command.clone(),
            mount: MountOptions {
                engine: a.engine.engine,
                allow_other: a.access.allow_other,
                in_run: true,
                view: crate::view::ViewOptions {
                    owner: a.access.owner(),
                    ..Default::default()
                },
                ..MountOptions::default()
            },
        },
    )?;
    Ok(ExitCode::from(code.clamp(0, 255) as u8))
}
