use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = mkkexec::cli::Cli::parse();
    if let Err(e) = mkkexec::output::on_signals() {
        eprintln!("mkkexec: warning: {e:#}; an interrupted run may leave a temporary file");
    }
    match mkkexec::run::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mkkexec: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
