//! The crate's error type.

use std::path::PathBuf;
use std::time::Duration;

/// Everything that can go wrong while building, starting or driving a rig.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O operation on the host failed.
    #[error("{context}: {source}")]
    Io {
        /// What the harness was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },

    /// A host tool could not be started or exited with a failure.
    #[error("`{command}` failed ({status}){}", fmt_detail(detail))]
    Tool {
        /// The command line, for the reader.
        command: String,
        /// Exit status or "not found".
        status: String,
        /// Its stderr (or a hint).
        detail: String,
    },

    /// The guest image build failed.
    #[error("guest image build failed; log {log}:\n{tail}")]
    ImageBuild {
        /// The full build log.
        log: PathBuf,
        /// Its last lines.
        tail: String,
    },

    /// The rig was configured inconsistently.
    #[error("invalid rig configuration: {0}")]
    Config(String),

    /// tgtd did not come up, or could not be configured.
    #[error("tgtd: {message}{}", fmt_detail(log_tail))]
    Target {
        /// What failed.
        message: String,
        /// The last lines of tgtd's log.
        log_tail: String,
    },

    /// A guest did not answer in time.
    #[error("{host}: no answer within {:.1} s while {what}{}", timeout.as_secs_f64(), fmt_console(console))]
    Timeout {
        /// Host name.
        host: String,
        /// What the harness waited for.
        what: String,
        /// The limit that ran out.
        timeout: Duration,
        /// Tail of the guest console.
        console: String,
    },

    /// A guest's QEMU is gone (crashed, powered off, or killed).
    #[error("{host}: guest is down while {what}{}", fmt_console(console))]
    HostDown {
        /// Host name.
        host: String,
        /// What the harness was doing.
        what: String,
        /// Tail of the guest console and QEMU's own log.
        console: String,
    },

    /// The guest answered something the protocol does not allow.
    #[error("{host}: control channel protocol error: {message}")]
    Protocol {
        /// Host name.
        host: String,
        /// What was wrong.
        message: String,
    },

    /// A guest command ran but exited non-zero where success was required.
    #[error(
        "{host}: command exited with {rc}\n--- script\n{script}\n--- stdout\n{stdout}--- stderr\n{stderr}"
    )]
    CommandFailed {
        /// Host name.
        host: String,
        /// The script that ran.
        script: String,
        /// Its exit code.
        rc: i32,
        /// Its stdout.
        stdout: String,
        /// Its stderr.
        stderr: String,
    },

    /// A guest command's output did not have the expected shape.
    #[error("{host}: unexpected output from a guest command: {message}")]
    Unexpected {
        /// Host name.
        host: String,
        /// What was expected and what came.
        message: String,
    },

    /// A QMP command to a guest's QEMU failed.
    #[error("{host}: QMP {command}: {source}")]
    Qmp {
        /// Host name.
        host: String,
        /// The QMP command.
        command: String,
        /// What went wrong.
        #[source]
        source: crate::qmp::QmpError,
    },

    /// A fixture manifest line is malformed.
    #[error("manifest line {line}: {message}")]
    Manifest {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        message: String,
    },
}

/// The crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

fn fmt_detail(detail: &str) -> String {
    if detail.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", detail.trim_end())
    }
}

fn fmt_console(console: &str) -> String {
    if console.trim().is_empty() {
        String::new()
    } else {
        format!("\n--- console (tail)\n{}", console.trim_end())
    }
}

/// Attach a context string to an `std::io::Error`.
pub(crate) trait IoContext<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| Error::Io {
            context: context(),
            source,
        })
    }
}
