use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match mkkexec::run::run(mkkexec::cli::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkkexec: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
