//! `/etc/libvirt/qemu-disklock.conf`: the plugin's settings, in libvirt's `key = value`
//! grammar ([`disklock_conf::grammar`]).
//!
//! The keys are those of libvirt's `qemu-lockd.conf`, so a lockd host copies its file over
//! unchanged, plus two of disklock's own:
//!
//! | key | default | meaning |
//! |---|---|---|
//! | `auto_disk_leases` | 1 | take a lease for every disk of a domain |
//! | `require_lease_for_disks` | `!auto_disk_leases` | refuse a domain with a read-write, exclusive disk and no lease |
//! | `file_lockspace_dir`, `lvm_lockspace_dir`, `scsi_lockspace_dir` | — | accepted for lockd's sake; the daemon's own configuration decides lockspaces |
//! | `socket` | `/run/disklock/disklock.sock` | the daemon's socket |
//! | `timeout` | 30 | seconds to wait for the daemon to connect, take a request and reply |
//!
//! A key the plugin does not know is an error, not a warning: the plugin has nowhere to
//! show a warning, and a misspelt `auto_disk_lease = 0` must not pass unnoticed. A file that
//! does not exist means the defaults, as for lockd.

use std::path::{Path, PathBuf};
use std::time::Duration;

use disklock_conf::grammar::{self, Value};

/// The daemon's socket when the file names none (the daemon's default for root).
pub const DEFAULT_SOCKET: &str = "/run/disklock/disklock.sock";
/// Seconds to wait for the daemon when the file says nothing.
pub const DEFAULT_TIMEOUT_SECS: u64 = 30;
/// The most `timeout` may say: a libvirt job waits that long at most.
pub const MAX_TIMEOUT_SECS: u64 = 600;
/// The largest file read: qemu-lockd.conf is a few kilobytes of comments.
pub const MAX_FILE_SIZE: u64 = 1024 * 1024;

/// The plugin's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PluginConfig {
    /// Take a lease for every disk (`auto_disk_leases`).
    pub auto_disk_leases: bool,
    /// Refuse a domain with a read-write exclusive disk and no lease at all
    /// (`require_lease_for_disks`; only matters without `auto_disk_leases`).
    pub require_lease_for_disks: bool,
    /// The daemon's socket.
    pub socket: PathBuf,
    /// How long to wait for the daemon, for each of connecting, sending and the reply.
    pub timeout: Duration,
}

impl Default for PluginConfig {
    fn default() -> PluginConfig {
        PluginConfig {
            auto_disk_leases: true,
            require_lease_for_disks: false,
            socket: PathBuf::from(DEFAULT_SOCKET),
            timeout: Duration::from_secs(DEFAULT_TIMEOUT_SECS),
        }
    }
}

/// Why the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// Reading it failed (other than its absence).
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It is larger than [`MAX_FILE_SIZE`].
    #[error("{path}: larger than {MAX_FILE_SIZE} bytes")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// It is not UTF-8.
    #[error("{path}: not UTF-8 text")]
    NotText {
        /// The file.
        path: PathBuf,
    },
    /// A syntax error.
    #[error("{path}:{source}")]
    Syntax {
        /// The file.
        path: PathBuf,
        /// Where and what.
        source: grammar::ParseError,
    },
    /// A key with a value it cannot take, or a key the plugin does not know.
    #[error("{path}:{line}: {key}: {reason}")]
    Value {
        /// The file.
        path: PathBuf,
        /// The key's line.
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        reason: String,
    },
}

impl PluginConfig {
    /// Reads `path`; a missing file gives the defaults.
    pub fn load(path: &Path) -> Result<PluginConfig, ConfigError> {
        use std::io::Read as _;
        let file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(PluginConfig::default());
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        let mut bytes = Vec::new();
        file.take(MAX_FILE_SIZE + 1)
            .read_to_end(&mut bytes)
            .map_err(|source| ConfigError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        if bytes.len() as u64 > MAX_FILE_SIZE {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = String::from_utf8(bytes).map_err(|_| ConfigError::NotText {
            path: path.to_path_buf(),
        })?;
        PluginConfig::parse(path, &text)
    }

    /// Parses the text of the file at `path` (named in errors). The first occurrence of a
    /// key counts, as in libvirt.
    pub fn parse(path: &Path, text: &str) -> Result<PluginConfig, ConfigError> {
        let doc = grammar::parse(text).map_err(|source| ConfigError::Syntax {
            path: path.to_path_buf(),
            source,
        })?;
        let mut c = PluginConfig::default();
        let mut require = None;
        let mut seen = std::collections::HashSet::new();
        for e in &doc.entries {
            if !seen.insert(e.name.as_str()) {
                continue;
            }
            let bad = |reason: &str| ConfigError::Value {
                path: path.to_path_buf(),
                line: e.span.line,
                key: e.name.clone(),
                reason: reason.to_owned(),
            };
            match e.name.as_str() {
                "auto_disk_leases" => {
                    c.auto_disk_leases = flag(&e.value).ok_or_else(|| bad(BOOL))?
                }
                "require_lease_for_disks" => {
                    require = Some(flag(&e.value).ok_or_else(|| bad(BOOL))?);
                }
                "file_lockspace_dir" | "lvm_lockspace_dir" | "scsi_lockspace_dir" => match &e.value
                {
                    Value::Str(_) => {}
                    _ => return Err(bad("expected a string (a directory)")),
                },
                "socket" => match &e.value {
                    Value::Str(s) if s.starts_with('/') => c.socket = PathBuf::from(s),
                    _ => return Err(bad("expected an absolute path in quotes")),
                },
                "timeout" => match &e.value {
                    Value::Int(n) if (1..=MAX_TIMEOUT_SECS as i64).contains(n) => {
                        c.timeout = Duration::from_secs(n.unsigned_abs());
                    }
                    _ => {
                        return Err(bad(&format!(
                            "expected whole seconds, 1 to {MAX_TIMEOUT_SECS}"
                        )));
                    }
                },
                _ => {
                    return Err(bad(
                        "unknown key (the keys are those of qemu-lockd.conf, socket and timeout)",
                    ));
                }
            }
        }
        // As lockd: leases are required by default exactly when they are not automatic.
        c.require_lease_for_disks = require.unwrap_or(!c.auto_disk_leases);
        Ok(c)
    }
}

const BOOL: &str = "expected 0 or 1";

fn flag(v: &Value) -> Option<bool> {
    match v {
        Value::Int(0) => Some(false),
        Value::Int(1) => Some(true),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<PluginConfig, ConfigError> {
        PluginConfig::parse(Path::new("/etc/libvirt/qemu-disklock.conf"), text)
    }

    #[test]
    fn an_empty_file_is_the_defaults() {
        assert_eq!(parse("").unwrap(), PluginConfig::default());
        assert_eq!(parse("# nothing\n").unwrap(), PluginConfig::default());
    }

    #[test]
    fn a_lockd_file_is_taken_as_it_is() {
        let text = "auto_disk_leases = 1\nrequire_lease_for_disks = 1\n\
                    file_lockspace_dir = \"/var/lib/libvirt/lockd/files\"\n\
                    lvm_lockspace_dir = '/var/lib/libvirt/lockd/lvm'    # comment\n\
                    scsi_lockspace_dir = \"/var/lib/libvirt/lockd/scsi\"\n";
        let c = parse(text).unwrap();
        assert!(c.auto_disk_leases && c.require_lease_for_disks);
        // The file libvirt ships is all comments.
        let text = include_str!("../../conf/testdata/qemu-lockd.conf.shipped");
        assert_eq!(parse(text).unwrap(), PluginConfig::default());
    }

    #[test]
    fn require_lease_follows_auto_disk_leases_unless_set() {
        let c = parse("auto_disk_leases = 0\n").unwrap();
        assert!(!c.auto_disk_leases);
        assert!(c.require_lease_for_disks);
        let c = parse("auto_disk_leases = 0\nrequire_lease_for_disks = 0\n").unwrap();
        assert!(!c.require_lease_for_disks);
        let c = parse("require_lease_for_disks = 1\n").unwrap();
        assert!(c.auto_disk_leases && c.require_lease_for_disks);
    }

    #[test]
    fn the_first_occurrence_counts() {
        let c = parse("auto_disk_leases = 0\nauto_disk_leases = 1\n").unwrap();
        assert!(!c.auto_disk_leases);
    }

    #[test]
    fn socket_and_timeout() {
        let c = parse("socket = \"/run/x.sock\"; timeout = 5\n").unwrap();
        assert_eq!(c.socket, Path::new("/run/x.sock"));
        assert_eq!(c.timeout, Duration::from_secs(5));
    }

    #[test]
    fn errors_name_the_file_line_and_key() {
        let e = parse("\nauto_disk_leases = 2\n").unwrap_err().to_string();
        assert_eq!(
            e,
            "/etc/libvirt/qemu-disklock.conf:2: auto_disk_leases: expected 0 or 1"
        );
        let e = parse("auto_disk_lease = 0\n").unwrap_err().to_string();
        assert!(
            e.starts_with("/etc/libvirt/qemu-disklock.conf:1: auto_disk_lease: unknown key"),
            "{e}"
        );
        let e = parse("socket = \"relative\"\n").unwrap_err().to_string();
        assert!(e.contains("absolute path"), "{e}");
        let e = parse("timeout = 0\n").unwrap_err().to_string();
        assert!(e.contains("whole seconds"), "{e}");
        let e = parse("auto_disk_leases = \n").unwrap_err().to_string();
        assert!(e.starts_with("/etc/libvirt/qemu-disklock.conf:1:"), "{e}");
    }

    proptest::proptest! {
        /// Any text: a config or an error, never a panic.
        #[test]
        fn any_text_parses_or_fails(text in "\\PC{0,200}") {
            let _ = parse(&text);
        }

        /// Whatever subset of the keys a file sets, in any order, rendered by the grammar:
        /// the values read back, and require_lease_for_disks defaults to !auto_disk_leases.
        #[test]
        fn rendered_settings_read_back(
            auto in proptest::option::of(proptest::bool::ANY),
            require in proptest::option::of(proptest::bool::ANY),
            socket in proptest::option::of("/[a-z]{1,12}/[a-z.]{1,12}"),
            timeout in proptest::option::of(1u64..=MAX_TIMEOUT_SECS),
            dir in proptest::option::of("/[a-z]{1,12}"),
            reverse in proptest::bool::ANY,
        ) {
            use disklock_conf::grammar::Entry;
            let mut entries = Vec::new();
            if let Some(a) = auto {
                entries.push(Entry::new("auto_disk_leases", Value::Int(i64::from(a))));
            }
            if let Some(r) = require {
                entries.push(Entry::new("require_lease_for_disks", Value::Int(i64::from(r))));
            }
            if let Some(s) = &socket {
                entries.push(Entry::new("socket", Value::Str(s.clone())));
            }
            if let Some(t) = timeout {
                entries.push(Entry::new("timeout", Value::Int(i64::try_from(t).unwrap())));
            }
            if let Some(d) = &dir {
                entries.push(Entry::new("file_lockspace_dir", Value::Str(d.clone())));
            }
            if reverse {
                entries.reverse();
            }
            let c = parse(&grammar::render(&entries).unwrap()).unwrap();
            let auto = auto.unwrap_or(true);
            proptest::prop_assert_eq!(c.auto_disk_leases, auto);
            proptest::prop_assert_eq!(c.require_lease_for_disks, require.unwrap_or(!auto));
            proptest::prop_assert_eq!(
                c.socket,
                PathBuf::from(socket.as_deref().unwrap_or(DEFAULT_SOCKET))
            );
            proptest::prop_assert_eq!(
                c.timeout,
                Duration::from_secs(timeout.unwrap_or(DEFAULT_TIMEOUT_SECS))
            );
        }
    }

    #[test]
    fn a_missing_file_is_the_defaults_and_an_unreadable_one_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = PluginConfig::load(&dir.path().join("absent.conf")).unwrap();
        assert_eq!(c, PluginConfig::default());
        let e = PluginConfig::load(dir.path()).unwrap_err();
        assert!(matches!(e, ConfigError::Read { .. }), "{e}");
    }
}
