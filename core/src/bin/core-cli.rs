//! `core-cli`: the LongAlign-rs command line.

use clap::Parser;

fn main() -> std::process::ExitCode {
    // SAFETY: first thing in main, before any thread exists.
    unsafe { longalign::jit::quiet_headless_vulkan() };
    // Kernel caches and compile counting, before any GPU device is touched.
    longalign::jit::init();
    let cli = longalign::cli::Cli::parse();
    match longalign::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
