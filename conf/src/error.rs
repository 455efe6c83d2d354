//! The error type for loading a configuration

use std::fmt;
use std::io;
use std::path::PathBuf;

use crate::config::KeySource;
use crate::grammar::ParseErrorKind;

/// Why a configuration could not be loaded.
///
/// Every variant names the file. Those about a place in a file display as
/// `path:line:col: message`; the I/O ones as `path: message`, with the OS error as the
/// [`source`](std::error::Error::source) rather than in the message.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfError {
    /// The file could not be read (including a missing file that had to exist).
    #[error("{}: cannot read", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// The file is bigger than [`MAX_FILE_SIZE`](crate::MAX_FILE_SIZE).
    #[error("{}: file is larger than the limit of {limit} bytes", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// The limit that was exceeded, in bytes.
        limit: usize,
    },
    /// The file is not UTF-8; the position is that of the first bad byte.
    #[error("{}:{line}:{col}: invalid utf-8", path.display())]
    NotUtf8 {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        col: usize,
    },
    /// A syntax error.
    #[error("{}:{line}:{col}: {kind}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// 1-based column, in characters.
        col: usize,
        /// What is wrong.
        kind: ParseErrorKind,
    },
    /// A known key has a value it cannot take.
    #[error("{}:{line}:{col}: {key}: {problem}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value, in characters.
        col: usize,
        /// The key.
        key: &'static str,
        /// What is wrong with the value.
        problem: Problem,
    },
    /// `lockd_conf` names a file that cannot be read. The position is that of the setting.
    #[error("{}:{line}:{col}: lockd_conf: cannot read {}", path.display(), lockd_path.display())]
    LockdConf {
        /// The file that sets `lockd_conf`.
        path: PathBuf,
        /// 1-based line of the setting.
        line: usize,
        /// 1-based column of the setting's value.
        col: usize,
        /// The file it names.
        lockd_path: PathBuf,
        /// The OS error.
        #[source]
        source: io::Error,
    },
    /// A setting has no value: it has no built-in default in this [`Context`](crate::Context)
    /// (a non-root user without a usable `HOME` or `XDG_STATE_HOME`) and no file sets it.
    #[error(
        "{key}: no default without an absolute HOME or XDG_STATE_HOME, set it in the configuration file"
    )]
    NoDefault {
        /// The key.
        key: &'static str,
    },
}

/// What is wrong with a value, in [`ConfError::Invalid`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Problem {
    /// The value has the wrong type or is out of range.
    #[error("expected {expected}, found {found}")]
    WrongType {
        /// What the key takes.
        expected: &'static str,
        /// What the file has, described.
        found: FoundValue,
    },
    /// A directory or file path that is not absolute.
    #[error("expected an absolute path, found {found:?}")]
    NotAbsolute {
        /// The path as written.
        found: String,
    },
    /// A `key_sources` item that names no key source.
    #[error("unknown key source {name:?}, expected one of {}", KeySourceNames)]
    UnknownKeySource {
        /// The name as written.
        name: String,
    },
    /// A key source listed twice in `key_sources`.
    #[error("key source {name:?} is listed twice")]
    DuplicateKeySource {
        /// The name.
        name: String,
    },
    /// An empty `key_sources` list, which would leave no way to name a disk.
    #[error("the list is empty, at least one key source is needed")]
    EmptyList,
    /// A string that is not one of the names the key takes.
    #[error("expected one of {}, found {found:?}", .expected.join(", "))]
    NotOneOf {
        /// The string as written.
        found: String,
        /// The names the key takes.
        expected: &'static [&'static str],
    },
}

/// A description of a value that had the wrong type, for [`Problem::WrongType`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FoundValue {
    /// An integer, shown as itself.
    Int(i64),
    /// A string, shown quoted.
    Str(String),
    /// A list, shown as `a list`.
    List,
}

impl fmt::Display for FoundValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FoundValue::Int(n) => write!(f, "{n}"),
            FoundValue::Str(s) => write!(f, "the string {s:?}"),
            FoundValue::List => f.write_str("a list"),
        }
    }
}

struct KeySourceNames;

impl fmt::Display for KeySourceNames {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, source) in KeySource::ALL.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            f.write_str(source.as_str())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error as _;

    #[test]
    fn io_display_leaves_the_reason_to_the_source() {
        let e = ConfError::Io {
            path: PathBuf::from("/etc/disklock/disklock.conf"),
            source: io::Error::from(io::ErrorKind::PermissionDenied),
        };
        assert_eq!(e.to_string(), "/etc/disklock/disklock.conf: cannot read");
        assert!(e.source().is_some());
    }

    #[test]
    fn problem_display() {
        let p = Problem::WrongType {
            expected: "0 or 1",
            found: FoundValue::Str("yes".into()),
        };
        assert_eq!(p.to_string(), "expected 0 or 1, found the string \"yes\"");
        assert_eq!(
            Problem::UnknownKeySource { name: "x".into() }.to_string(),
            "unknown key source \"x\", expected one of lvm-uuid, scsi-wwid, nvme-wwid, by-path-sha256, path-sha256"
        );
    }
}
