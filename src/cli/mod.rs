//! Command-line interface: one module per subcommand, each thin over the library.
//!
//! Everything a command prints on stdout goes through [`out!`] and
//! [`outln!`], which return an error instead of panicking; a reader that
//! went away (`wopfs diff G | head`) ends the command quietly (see
//! [`is_broken_pipe`] and `main.rs`).

/// `print!` that returns a `Result` (the caller adds `?`).
macro_rules! out {
    ($($t:tt)*) => {
        $crate::cli::write_stdout(format_args!($($t)*))
    };
}

/// `println!` that returns a `Result` (the caller adds `?`).
macro_rules! outln {
    ($($t:tt)*) => {
        $crate::cli::write_stdout(format_args!("{}\n", format_args!($($t)*)))
    };
}

mod audit;
mod bucket;
mod checkpoint;
mod commit;
mod denied;
mod grant;
mod mount;
mod number;
mod patch;
mod revoke;
mod run;
mod search;
mod serve;
mod status;
pub mod term;
mod token;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::error::Result;
use crate::state::StateDir;

/// The environment variables wopfs reads: `wopfs --help` and wopfs.1
/// list them.
pub const ENV_VARS: [(&str, &str); 7] = [
    ("WOPFS_STATE_DIR", "the state directory (as --state-dir)"),
    (
        "WOPFS_ENGINE",
        "engine of writable views: auto, kernel or fuse (as --engine)",
    ),
    (
        "WOPFS_LOG",
        "log filter on stderr, e.g. debug (default: warn)",
    ),
    (
        "NO_COLOR",
        "any non-empty value: no colour unless --color always",
    ),
    (
        "WOPFS_PAGER, PAGER",
        "pager for diff and audit on a terminal (empty or cat: none; unset: less -FRX)",
    ),
    (
        "A2A_GRANT_SIGNING_KEY",
        "Ed25519 key that signs grant tokens",
    ),
    ("A2A_GRANT_VERIFYING_KEY", "Ed25519 key that verifies them"),
];

/// What `wopfs --help` says after the options (kept in step with
/// [`ENV_VARS`] by a test).
const ENVIRONMENT: &str = "\
Environment:
  WOPFS_STATE_DIR          the state directory (as --state-dir)
  WOPFS_ENGINE             engine of writable views: auto, kernel or fuse (as --engine)
  WOPFS_LOG                log filter on stderr, e.g. debug (default: warn)
  NO_COLOR                 any non-empty value: no colour unless --color always
  WOPFS_PAGER, PAGER       pager for diff and audit on a terminal (empty or cat: none;
                           unset: less -FRX)
  A2A_GRANT_SIGNING_KEY    Ed25519 key that signs grant tokens
  A2A_GRANT_VERIFYING_KEY  Ed25519 key that verifies them

Every command that prints data takes --json (all but run, serve and completions).";

#[derive(Parser, Debug)]
#[command(
    name = "wopfs",
    version,
    about = "Granted, overlaid views of a source tree for AI agents",
    after_long_help = ENVIRONMENT
)]
pub struct Cli {
    /// State directory (grants, overlays, logs); must be outside every host tree.
    #[arg(long, global = true, env = "WOPFS_STATE_DIR", value_name = "DIR")]
    pub state_dir: Option<PathBuf>,

    /// When to colour output: auto (on a terminal, unless NO_COLOR is set),
    /// always, never.
    #[arg(long, global = true, value_enum, value_name = "WHEN", default_value_t)]
    pub color: term::ColorWhen,

    /// Never page long output (diff, audit) through $WOPFS_PAGER, $PAGER or less.
    #[arg(long, global = true)]
    pub no_pager: bool,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Resolve and record a grant; print its id.
    Grant(grant::Args),
    /// Mount a granted view.
    Mount(mount::MountArgs),
    /// Unmount a view.
    Umount(mount::UmountArgs),
    /// List grants: mode, files, expiry, whether mounted, pending changes.
    Status(status::Args),
    /// Show what a session would change, as a unified diff.
    Diff(patch::DiffArgs),
    /// Write a session's WorkspacePatch set.
    Export(patch::ExportArgs),
    /// Approve and apply a session's changes to the host tree.
    Commit(commit::CommitArgs),
    /// Discard a session's changes, keeping the record and the reason.
    Reject(commit::RejectArgs),
    /// Complete or roll back an interrupted commit.
    Recover(commit::RecoverArgs),
    /// End a grant now: its live view shows nothing within a second; no new mount.
    Revoke(revoke::Args),
    /// Record an overlay view's current state (before an agent's turn); print its id.
    Checkpoint(checkpoint::Args),
    /// List a view's checkpoints: id, time, entries changed since the previous one, label.
    Checkpoints(checkpoint::ListArgs),
    /// Put a view back to a checkpoint, mounted or not (a mounted view shows it at once).
    Undo(checkpoint::UndoArgs),
    /// Show the audit log; --verify checks its hash chain.
    Audit(audit::Args),
    /// What the agent tried that its grant refused (hidden names, writes out of scope).
    Denied(denied::Args),
    /// Run a command in a private mount namespace that sees only the view.
    Run(run::Args),
    /// Mint, delegate, verify and import signed grant tokens.
    Token(token::Args),
    /// Name host trees for grant tokens: a token mounts only its bucket's tree.
    Bucket(bucket::Args),
    /// Search a host tree by intent: ranked files, never denied ones.
    Search(search::Args),
    /// Serve the control API (the seed's WorkspaceClient) on a Unix socket.
    Serve(serve::Args),
    /// Write a redacted bundle for bug reports (no tokens, keys or contents).
    Diagnostics(serve::DiagArgs),
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions(CompletionsArgs),
    /// Write the man pages: wopfs.1 on stdout, or every page into a directory.
    Man(ManArgs),
    /// Internal: the kernel engine's guard (takes its mounts down when the daemon dies).
    #[command(hide = true)]
    Guard(GuardArgs),
}

#[derive(clap::Args, Debug)]
pub struct GuardArgs {
    /// The grant whose kernel engine stack to guard.
    grant: String,
    /// Where its overlay is mounted.
    mountpoint: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum, value_name = "SHELL")]
    shell: clap_complete::Shell,
}

#[derive(clap::Args, Debug)]
pub struct ManArgs {
    /// Write wopfs.1 and one page per subcommand (wopfs-mount.1, …) into
    /// DIR, and print their paths.
    #[arg(short = 'o', long = "output", value_name = "DIR")]
    output: Option<PathBuf>,
    /// With -o: print the directory and the pages written as JSON.
    #[arg(long, requires = "output")]
    json: bool,
}

/// Parses the command line; clap's own help and errors follow `--color`.
pub fn parse() -> Cli {
    let color = term::color_from_args(std::env::args_os()).unwrap_or_default();
    let matches = Cli::command().color(color.clap()).get_matches();
    Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit())
}

pub fn run(cli: Cli) -> Result<ExitCode> {
    // Daemons and the API server log at info: their logs are their record.
    let daemon = matches!(&cli.command, Command::Mount(m) if m.daemon)
        || matches!(&cli.command, Command::Serve(_) | Command::Guard(_));
    init_logging(daemon);
    // Located only by the commands that use it (search needs none).
    let state_path = || StateDir::locate(cli.state_dir.clone());
    let state = || StateDir::open(&state_path()?);
    let term = term::Term {
        color: cli.color,
        no_pager: cli.no_pager,
    };
    match &cli.command {
        Command::Grant(a) => grant::run(&state_path()?, a),
        Command::Mount(a) => mount::run_mount(&state()?, a),
        Command::Umount(a) => mount::run_umount(&state()?, a),
        Command::Status(a) => status::run(&state()?, a),
        Command::Diff(a) => patch::run_diff(&state()?, a, &term),
        Command::Export(a) => patch::run_export(&state()?, a),
        Command::Commit(a) => commit::run_commit(&state()?, a),
        Command::Reject(a) => commit::run_reject(&state()?, a),
        Command::Recover(a) => commit::run_recover(&state()?, a),
        Command::Revoke(a) => revoke::run(&state()?, a),
        Command::Checkpoint(a) => checkpoint::run(&state()?, a),
        Command::Checkpoints(a) => checkpoint::run_list(&state()?, a),
        Command::Undo(a) => checkpoint::run_undo(&state()?, a),
        Command::Audit(a) => audit::run(&state()?, a, &term),
        Command::Denied(a) => denied::run(&state()?, a),
        Command::Run(a) => return run::run(&state()?, a),
        Command::Token(a) => token::run(&state()?, a),
        Command::Bucket(a) => bucket::run(&state()?, a),
        Command::Search(a) => search::run(a),
        Command::Serve(a) => serve::run(&state()?, a),
        Command::Diagnostics(a) => serve::diagnostics(&state()?, a),
        Command::Completions(a) => term::completions(a.shell),
        Command::Man(a) => term::man(a.output.as_deref(), a.json),
        Command::Guard(a) => crate::mount::kernel::guard(&state()?, &a.grant, &a.mountpoint),
    }?;
    Ok(ExitCode::SUCCESS)
}

/// Logs go to stderr (a daemon's stderr is its session log), filtered by
/// `WOPFS_LOG` (e.g. `WOPFS_LOG=debug`).
fn init_logging(daemon: bool) {
    use tracing_subscriber::EnvFilter;
    let default = if daemon {
        "info,fuser=error"
    } else {
        "warn,fuser=error"
    };
    let filter = EnvFilter::try_from_env("WOPFS_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| LogWriter)
        .with_ansi(false)
        .try_init();
}

/// stderr for log lines, where a failed write is dropped. tracing's
/// formatter reports a failed write with `eprintln!`, which panics when
/// stderr itself is the problem (a closed pipe, a full disk under the
/// session log), and the panic would take down whatever thread logged:
/// a request thread, or the daemon's signal thread (then SIGTERM is lost).
struct LogWriter;

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let _ = std::io::stderr().write_all(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What a failed write to stdout is reported as.
const STDOUT: &str = "writing to stdout";

/// Writes to stdout and flushes. A closed pipe comes back as an error that
/// [`is_broken_pipe`] recognises.
pub(crate) fn write_stdout(args: std::fmt::Arguments) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(|e| crate::error::Error::io(STDOUT, e))
}

/// Whether `e` is stdout's reader having gone away: not a failure of the
/// command, so `main` exits quietly (status 141, as a shell shows a
/// process killed by SIGPIPE).
pub fn is_broken_pipe(e: &crate::error::Error) -> bool {
    matches!(e, crate::error::Error::Io { context, source }
        if context == STDOUT && source.kind() == std::io::ErrorKind::BrokenPipe)
}

impl Cli {
    /// Whether this command serves a view or the API for long: it must
    /// survive its own stdout or stderr being closed (SIGPIPE stays
    /// ignored); every other command dies quietly of SIGPIPE, as `git` does.
    pub fn serves(&self) -> bool {
        match &self.command {
            Command::Mount(m) => m.foreground || m.daemon,
            Command::Run(_) | Command::Serve(_) | Command::Guard(_) => true,
            _ => false,
        }
    }
}

/// Prints a value as pretty JSON on stdout.
fn print_json<T: serde::Serialize>(value: &T) -> Result<()> {
    let text = serde_json::to_string_pretty(value)
        .map_err(|e| crate::error::Error::invalid(format!("serializing output: {e}")))?;
    term::write_stdout(&(text + "\n"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn help_lists_every_environment_variable() {
        let flat = super::ENVIRONMENT
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        for (name, what) in super::ENV_VARS {
            assert!(flat.contains(&format!("{name} {what}")), "{name}: {flat}");
        }
    }
}
