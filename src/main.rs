//! `disklock`: the command-line tool (and, later, the daemon) of disklock.
//!
//! This binary only wires the libraries together: it parses arguments, loads the
//! configuration, sets up logging, runs one command and turns its outcome into an exit code
//! (see [`exit`]). Resolution lives in `disklock-naming`, configuration in `disklock-conf`.

#![forbid(unsafe_code)]

mod cli;
mod config_cmd;
mod exit;
mod lookup;
mod settings;

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_logging(args.verbose);
    let outcome = match settings::Settings::load(&args) {
        Ok(settings) => match &args.command {
            cli::Command::Lookup(l) => lookup::run(&settings, l),
            cli::Command::Config(c) => config_cmd::run(&settings, c),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(code) => code.into(),
        Err(e) => {
            // One line: the chain of causes joined, as ripgrep prints them.
            eprintln!("disklock: {}", exit::chain(&e));
            exit::Code::Usage.into()
        }
    }
}

fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DISKLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .without_time()
        .init();
}
