//! The `wopfs` command: parse, call the library, print one clear sentence
//! on error and exit non-zero.

use std::process::ExitCode;

fn main() -> ExitCode {
    let cli = wopfs::cli::parse();
    match wopfs::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("wopfs: {e}");
            ExitCode::FAILURE
        }
    }
}
