//! `cdrvault` — the command-line entry point.
//!
//! Exit codes (also in `cdrvault --help` and docs/cli.md):
//! 0 success · 1 runtime failure · 2 usage error · 3 configuration error ·
//! 4 key error (missing or wrong master key, key store) · 5 input error.

mod cli;
mod exit;
mod ingest_cmd;
mod keys_cmd;
mod output;
mod serve_cmd;

use clap::Parser;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::exit::CliError;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    output::init_logging(&cli.global);
    let result = run(cli);
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {:#}", e.error);
            std::process::ExitCode::from(e.code as u8)
        }
    }
}

fn run(cli: Cli) -> Result<(), CliError> {
    match cli.command {
        Command::Ingest(args) => {
            let settings = exit::load_settings(&cli.global)?;
            ingest_cmd::run(&settings, args)
        }
        Command::Serve(args) => {
            let settings = exit::load_settings(&cli.global)?;
            serve_cmd::run(&settings, args)
        }
        Command::Keys(cmd) => {
            let settings = exit::load_settings(&cli.global)?;
            keys_cmd::run(&settings, cmd)
        }
        Command::Generate(args) => ingest_cmd::generate(args),
        Command::Config(ConfigCommand::Check { format }) => {
            let settings = exit::load_settings(&cli.global)?;
            output::print_config(&settings, format);
            Ok(())
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", cdrvault_config::DEFAULT_TOML);
            Ok(())
        }
    }
}
