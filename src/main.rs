//! The `otpgate` binary: parses the command line and hands over to `otpgate::cli`.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = otpgate::cli::Cli::parse();
    match otpgate::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("otpgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
