//! Non-fatal findings about a configuration file, returned as values
//!
//! Warnings are data rather than log lines so that the caller decides where they go: the
//! daemon logs them, `disklock config` prints them, tests compare them.

use std::fmt;
use std::path::PathBuf;

/// Something odd in a configuration file that did not stop it from loading, such as an
/// unknown or repeated key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Warning {
    /// The file the warning is about; `None` for text that did not come from a file.
    pub file: Option<PathBuf>,
    /// 1-based line of the offending entry.
    pub line: usize,
    /// 1-based column of the offending entry, counted in characters.
    pub col: usize,
    /// What is wrong, lowercase and without a final period.
    pub message: String,
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}:", file.display())?;
        }
        write!(f, "{}:{}: {}", self.line, self.col, self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_with_and_without_file() {
        let mut w = Warning {
            file: Some(PathBuf::from("/etc/disklock/disklock.conf")),
            line: 3,
            col: 1,
            message: "unknown key \"foo\" ignored".to_owned(),
        };
        assert_eq!(
            w.to_string(),
            "/etc/disklock/disklock.conf:3:1: unknown key \"foo\" ignored"
        );
        w.file = None;
        assert_eq!(w.to_string(), "3:1: unknown key \"foo\" ignored");
    }
}
