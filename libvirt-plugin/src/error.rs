//! What can go wrong in a callback, and which libvirt error code says it.

use std::sync::Arc;

use disklock::client::ClientError;
use disklock::daemon::protocol::Failure;

use crate::config::ConfigError;

/// libvirt's public error codes (`virerror.h`, `virErrorNumber`) the plugin reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ErrorCode {
    /// `VIR_ERR_INTERNAL_ERROR`: "internal error: …".
    Internal = 1,
    /// `VIR_ERR_INVALID_ARG`: "invalid argument: …".
    InvalidArg = 8,
    /// `VIR_ERR_OPERATION_FAILED`: "operation failed: …".
    OperationFailed = 9,
    /// `VIR_ERR_CONFIG_UNSUPPORTED`: "unsupported configuration: …".
    ConfigUnsupported = 67,
    /// `VIR_ERR_RESOURCE_BUSY`: "resource busy: …".
    ResourceBusy = 87,
}

/// libvirt's error domain for lock managers (`VIR_FROM_LOCKING`).
pub const VIR_FROM_LOCKING: i32 = 42;

/// A callback's failure.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// libvirt speaks a lock driver ABI of another major version.
    #[error(
        "disklock: libvirt's lock driver interface version {version} is not supported (only 1.x.y)"
    )]
    VersionUnsupported {
        /// What libvirt passed to `drvInit`.
        version: u32,
    },
    /// `qemu-disklock.conf` cannot be used; every domain operation reports it.
    #[error("disklock: bad plugin configuration")]
    Config(#[source] Arc<ConfigError>),
    /// A callback before `drvInit` (libvirt never does that).
    #[error("disklock: the plugin was not initialised")]
    NotInitialized,
    /// libvirt called with something this plugin does not take (a flag, an object or
    /// resource type, a missing parameter).
    #[error("disklock: {0}")]
    BadCall(String),
    /// A `<lease>` element disklock cannot take (as lockd: a lockspace is needed and the
    /// offset must be 0, the lease being the whole file `<path>/<lockspace>/<key>`).
    #[error("disklock: <lease> with key {key:?}: {why}")]
    LeaseInvalid {
        /// The lease's key.
        key: String,
        /// Why.
        why: String,
    },
    /// `require_lease_for_disks` without a lease for a read-write exclusive disk.
    #[error(
        "disklock: read/write, exclusive access, disks were present, but no leases specified (require_lease_for_disks = 1)"
    )]
    LeaseRequired,
    /// The daemon could not be asked (not running, timed out, broken connection).
    #[error("disklock")]
    Daemon(#[source] Box<ClientError>),
    /// The daemon refused.
    #[error("disklock")]
    Refused(#[source] Box<Failure>),
}

impl PluginError {
    /// The libvirt error code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            PluginError::Refused(f) if matches!(**f, Failure::Busy { .. }) => {
                ErrorCode::ResourceBusy
            }
            PluginError::Refused(_) | PluginError::Daemon(_) => ErrorCode::OperationFailed,
            PluginError::Config(_)
            | PluginError::LeaseInvalid { .. }
            | PluginError::LeaseRequired
            | PluginError::VersionUnsupported { .. } => ErrorCode::ConfigUnsupported,
            PluginError::BadCall(_) => ErrorCode::InvalidArg,
            PluginError::NotInitialized => ErrorCode::Internal,
        }
    }

    /// The whole message in one line, as libvirt shows it after its code's prefix
    /// ("resource busy: …"). A busy disk names its holder: the domain, its host.
    pub fn message(&self) -> String {
        match self {
            PluginError::Refused(f) => match &**f {
                Failure::Busy { disk, message, .. } => format!("disklock: {disk}: {message}"),
                _ => disklock::exit::chain_std(self),
            },
            e => disklock::exit::chain_std(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_names_the_holder_without_saying_busy_twice() {
        let e = PluginError::Refused(Box::new(Failure::Busy {
            disk: "/img".into(),
            key: "k".into(),
            lease: "/ls/k".into(),
            holders: vec![],
            lock: None,
            message: "web (uuid u, pid 7) on host a (id i), exclusive since 1".into(),
        }));
        assert_eq!(e.code(), ErrorCode::ResourceBusy);
        assert_eq!(
            e.message(),
            "disklock: /img: web (uuid u, pid 7) on host a (id i), exclusive since 1"
        );
    }

    #[test]
    fn no_daemon_is_one_line() {
        let e = PluginError::Daemon(Box::new(ClientError::NotRunning {
            socket: "/run/disklock/disklock.sock".into(),
        }));
        assert_eq!(e.code(), ErrorCode::OperationFailed);
        assert_eq!(
            e.message(),
            "disklock: no disklock daemon is running at /run/disklock/disklock.sock (start one with `disklock daemon`)"
        );
    }
}
