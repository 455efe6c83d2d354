//! `disklock`: the command-line tool and the lease daemon.
//!
//! This binary only parses arguments, loads the configuration, sets up logging, runs one
//! command of the `disklock` library and turns its outcome into an exit code
//! (`disklock::exit`).

#![forbid(unsafe_code)]

use disklock::{
    acquire, cli, config_cmd, daemon, exit, inspect, lookup, pr_cmd, run, settings, status,
};

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let args = cli::Cli::parse();
    init_logging(args.verbose, matches!(args.command, cli::Command::Daemon));
    if let cli::Command::ReleaseAfterExit(r) = &args.command {
        return run::release_after_exit(r);
    }
    let loaded = settings::Settings::load_from(
        args.config.as_deref(),
        args.sysroot.as_deref(),
        args.socket.clone(),
    )
    .map(|mut s| {
        s.timeout = std::time::Duration::from_secs(args.timeout);
        s
    });
    let outcome = match loaded {
        Ok(settings) => match &args.command {
            cli::Command::Lookup(l) => lookup::run(&settings, l).map(ExitCode::from),
            cli::Command::Config(c) => config_cmd::run(&settings, c).map(ExitCode::from),
            cli::Command::Daemon => settings
                .socket()
                .map(std::path::Path::to_path_buf)
                .and_then(|socket| daemon::server::run(settings, &socket))
                .map(ExitCode::from),
            cli::Command::Acquire(a) => acquire::acquire(&settings, a).map(ExitCode::from),
            cli::Command::Release(r) => acquire::release(&settings, r).map(ExitCode::from),
            cli::Command::Status(s) => status::run(&settings, s).map(ExitCode::from),
            cli::Command::Inspect(i) => inspect::run(&settings, i).map(ExitCode::from),
            cli::Command::Run(r) => run::run(&settings, r),
            cli::Command::Pr(p) => pr_cmd::run(&settings, p).map(ExitCode::from),
            cli::Command::Fence(f) => pr_cmd::fence(&settings, f).map(ExitCode::from),
            cli::Command::ReleaseAfterExit(r) => Ok(run::release_after_exit(r)),
        },
        Err(e) => Err(e),
    };
    match outcome {
        Ok(code) => code,
        Err(e) => {
            // One line: the chain of causes joined, as ripgrep prints them.
            eprintln!("disklock: {}", exit::chain(&e));
            exit::code_of(&e).into()
        }
    }
}

/// Commands log to stderr (warnings by default). The daemon logs its events (info by
/// default) to the journal when systemd started it (`JOURNAL_STREAM` is set), else stderr.
fn init_logging(verbose: u8, daemon: bool) {
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let default = match (verbose, daemon) {
        (0, false) => "warn",
        (0, true) | (1, _) => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("DISKLOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    if daemon && std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journal) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journal.with_syslog_identifier("disklock".into()))
                    .init();
                return;
            }
            Err(e) => eprintln!("disklock: cannot log to the journal, using stderr: {e}"),
        }
    }
    // Colours only on a terminal: a log file or pipe gets plain text (which also makes each
    // of the daemon's events about a third cheaper to format; see benches/lease.rs).
    let tty = std::io::IsTerminal::is_terminal(&std::io::stderr());
    if daemon && !tty {
        // The same lines, formatted for a fraction of the cost (daemon/log.rs).
        tracing_subscriber::registry()
            .with(filter)
            .with(daemon::log::LineLayer)
            .init();
        return;
    }
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(tty);
    if daemon {
        tracing_subscriber::registry().with(filter).with(fmt).init();
    } else {
        tracing_subscriber::registry()
            .with(filter)
            .with(fmt.without_time())
            .init();
    }
}
