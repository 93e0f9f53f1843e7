//! `cdrvault` — the command-line entry point.
//!
//! Exit codes (also in `cdrvault --help` and docs/cli.md):
//! 0 success · 1 runtime failure · 2 usage error · 3 configuration error ·
//! 4 key error (missing or wrong master key, key store) · 5 input error ·
//! 6 integrity check failed (tampered access log).

mod audit_cmd;
mod cli;
mod exit;
mod hold_cmd;
mod ingest_cmd;
mod journal;
mod keys_cmd;
mod output;
mod purge_cmd;
mod request_cmd;
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
        Command::Request(cmd) => request_cmd::run(&exit::load_settings(&cli.global)?, cmd),
        Command::Generate(args) => ingest_cmd::generate(args),
        Command::Config(ConfigCommand::Check { format }) => {
            let settings = exit::load_settings(&cli.global)?;
            output::print_config(&settings, format);
            Ok(())
        }
        Command::Purge(args) => purge_cmd::run(&exit::load_settings(&cli.global)?, args),
        Command::Hold(cmd) => hold_cmd::run(&exit::load_settings(&cli.global)?, cmd),
        Command::VerifyErasure(a) => {
            purge_cmd::verify_erasure(&exit::load_settings(&cli.global)?, a)
        }
        Command::Audit(cmd) => {
            let settings = exit::load_settings(&cli.global)?;
            audit_cmd::run(&settings, cmd)
        }
        Command::Config(ConfigCommand::Default) => {
            print!("{}", cdrvault_config::DEFAULT_TOML);
            Ok(())
        }
    }
}
