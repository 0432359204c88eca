//! The `rag` command: parse the flags, run the subcommand (one module each under `cli/`), print
//! the error chain with a hint, pick the exit code (0 ok, 1 some files failed to ingest,
//! 2 error; a closed pipe is not an error).
use std::process::ExitCode;

use clap::Parser;

mod cli;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    match cli::run(args) {
        Ok(code) => code,
        Err(err) if cli::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            if let Some(hint) = cli::hint(&err) {
                eprintln!("hint: {hint}");
            }
            ExitCode::from(2)
        }
    }
}
