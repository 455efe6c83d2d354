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
    /// `run`: the command was found but could not be run (`env`'s convention).
    CannotRun = 126,
    /// `run`: the command was not found (`env`'s convention).
    NotFound = 127,
}

/// A command that failed: the one line to print and the exit code it means. Commands
/// return it (through `anyhow`) and `main` prints it once; any other error that escapes a
/// command is a usage or configuration error (exit 2).
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Failed {
    /// The exit code.
    pub code: Code,
    /// The line to print (after `disklock: `).
    pub message: String,
}

/// A [`Failed`] error.
pub fn failed(code: Code, message: impl Into<String>) -> anyhow::Error {
    Failed {
        code,
        message: message.into(),
    }
    .into()
}

/// The exit code an error escaping a command means.
pub fn code_of(e: &anyhow::Error) -> Code {
    e.downcast_ref::<Failed>().map_or(Code::Usage, |f| f.code)
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
