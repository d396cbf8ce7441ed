use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    match mkkexec::run(mkkexec::Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkkexec: error: {}", mkkexec::report(&e));
            ExitCode::FAILURE
        }
    }
}
