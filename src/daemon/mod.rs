//! `disklock daemon`: the lease daemon.
//!
//! - [`table`]: the lease table, a state machine without I/O (requests, events and time in;
//!   leases taken through a backend, effects out).
//! - [`protocol`]: the Varlink messages (`src/io.disklock.Lease.varlink`), used by the
//!   client too.
//! - [`server`]: the I/O shell: socket, connections, owner watches, logging.
//! - [`log`]: the one-line-per-event stderr log (the journal is used under systemd).
//! - [`idle`]: what waits until the replies are out (log writes, closing removed leases).
//! - [`access`]: what a client that is not root may name (a disk it could open itself).
//! - [`pr_layer`]: the backend that adds a persistent reservation at the storage to each
//!   lease of a SCSI or NVMe disk (`persistent_reservations = 1`).

pub mod access;
pub mod idle;
pub mod log;
pub mod plan;
pub mod pr_layer;
pub mod protocol;
pub mod server;
pub mod table;

use std::path::PathBuf;

/// The socket a daemon listens on when none is named: `/run/disklock/disklock.sock` for
/// root, `$XDG_RUNTIME_DIR/disklock/disklock.sock` for other users.
pub fn default_socket(uid: u32, xdg_runtime_dir: Option<PathBuf>) -> Option<PathBuf> {
    if uid == 0 {
        return Some(PathBuf::from("/run/disklock/disklock.sock"));
    }
    xdg_runtime_dir
        .filter(|d| d.is_absolute())
        .map(|d| d.join("disklock").join("disklock.sock"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_defaults() {
        assert_eq!(
            default_socket(0, Some("/run/user/0".into())),
            Some(PathBuf::from("/run/disklock/disklock.sock"))
        );
        assert_eq!(
            default_socket(1000, Some("/run/user/1000".into())),
            Some(PathBuf::from("/run/user/1000/disklock/disklock.sock"))
        );
        assert_eq!(default_socket(1000, Some("relative".into())), None);
        assert_eq!(default_socket(1000, None), None);
    }
}
