//! `cdrvault` — the command-line entry point: arguments (clap), rendering
//! and exit codes. The workflows live in `cdrvault-desk`.
//!
//! Exit codes (also in `cdrvault --help` and the README):
//! 0 success · 1 runtime failure (a full disk; something under the data
//! directory that is not ours) · 2 usage error · 3 configuration error ·
//! 4 key error (missing or wrong master key, key store, a missing key of a
//! day with data) · 5 input error ·
//! 6 integrity check failed (tampered access log). A closed standard output
//! (`cdrvault audit show | head -1`) ends a command quietly with 0.

mod audit_cmd;
mod cli;
mod compact_cmd;
mod exit;
mod hold_cmd;
mod ingest_cmd;
mod keys_cmd;
mod operator_cmd;
mod output;
mod purge_cmd;
mod request_cmd;
mod serve_cmd;

use std::io::Write;

use clap::Parser;

use crate::cli::{Cli, Command, ConfigCommand};
use crate::exit::{load_settings, open_desk, CliError};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    output::init_logging(&cli.global);
    // Not locked for the whole run: `serve` has threads of its own.
    let mut out = std::io::stdout();
    let result = run(cli, &mut out).and_then(|()| out.flush().map_err(CliError::from));
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) if e.is_broken_pipe() => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {}", exit::render(&e.error));
            std::process::ExitCode::from(e.code as u8)
        }
    }
}

fn run(cli: Cli, out: &mut dyn Write) -> Result<(), CliError> {
    match cli.command {
        Command::Ingest(args) => ingest_cmd::run(&load_settings(&cli.global)?, args, out),
        Command::Serve(args) => serve_cmd::run(&load_settings(&cli.global)?, args),
        Command::Keys(cmd) => keys_cmd::run(&load_settings(&cli.global)?, cmd, out),
        Command::Generate(args) => ingest_cmd::generate(args),
        Command::Config(ConfigCommand::Check { format }) => {
            let settings = load_settings(&cli.global)?;
            Ok(output::print_config(out, &settings, format)?)
        }
        Command::Config(ConfigCommand::Default) => {
            Ok(out.write_all(cdrvault_config::DEFAULT_TOML.as_bytes())?)
        }
        Command::Request(cmd) => {
            request_cmd::run(&open_desk(&load_settings(&cli.global)?)?, cmd, out)
        }
        Command::Purge(args) => {
            purge_cmd::run(&open_desk(&load_settings(&cli.global)?)?, args, out)
        }
        Command::Compact(args) => compact_cmd::run(&load_settings(&cli.global)?, args, out),
        Command::Hold(cmd) => hold_cmd::run(&open_desk(&load_settings(&cli.global)?)?, cmd, out),
        Command::Operator(cmd) => operator_cmd::run(&load_settings(&cli.global)?, cmd, out),
        Command::VerifyErasure(a) => {
            purge_cmd::verify_erasure(&open_desk(&load_settings(&cli.global)?)?, a, out)
        }
        Command::Audit(cmd) => audit_cmd::run(&load_settings(&cli.global)?, cmd, out),
    }
}
