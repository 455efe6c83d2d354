//! Exit codes, stable and documented in `disklock --help`, mapped in one place.

use std::process::ExitCode;

/// What the process tells its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// Everything asked for was done.
    Ok = 0,
    /// At least one disk could not be resolved (the others were).
    Partial = 1,
    /// Bad usage or configuration: nothing was done.
    Usage = 2,
    /// A disk is busy: someone else holds its lease. Nothing stays acquired.
    Busy = 3,
    /// The command needs the daemon and none is running.
    NoDaemon = 4,
}

impl From<Code> for ExitCode {
    fn from(c: Code) -> ExitCode {
        ExitCode::from(c as u8)
    }
}

/// An error and its causes on one line: `a: b: c`.
pub fn chain(e: &anyhow::Error) -> String {
    e.chain()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(": ")
}

/// The same for a library error.
pub fn chain_std(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}
