//! `core-cli`: the LongAlign-rs command line.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = longalign::cli::Cli::parse();
    match longalign::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
