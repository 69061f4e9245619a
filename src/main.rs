//! The `wopfs` command: parse, call the library, print one clear sentence
//! on error and exit non-zero.

use std::io::Write;
use std::process::ExitCode;

/// The exit status of a command whose reader went away (128 + SIGPIPE).
const BROKEN_PIPE: u8 = 141;

fn main() -> ExitCode {
    // A reader that goes away (`wopfs diff G | head`) ends a command
    // quietly, as it ends `git diff`: by SIGPIPE's default action, not by
    // a panic of `print!`. The usage and help texts are covered too.
    set_sigpipe(libc::SIG_DFL);
    let cli = wopfs::cli::parse();
    if cli.serves() {
        // A server must outlive a closed pipe (a client, its own stderr);
        // its writes then fail with EPIPE and are handled where they occur.
        set_sigpipe(libc::SIG_IGN);
    }
    match wopfs::cli::run(cli) {
        Ok(code) => code,
        Err(e) if wopfs::cli::is_broken_pipe(&e) => ExitCode::from(BROKEN_PIPE),
        Err(e) => {
            // Never a panic, even with stderr closed.
            let _ = writeln!(std::io::stderr(), "wopfs: {e}");
            ExitCode::FAILURE
        }
    }
}

fn set_sigpipe(action: libc::sighandler_t) {
    // SAFETY: signal(2) with SIG_DFL or SIG_IGN, before any other thread runs
    // or (for SIG_IGN) restoring what the Rust runtime set.
    unsafe { libc::signal(libc::SIGPIPE, action) };
}
