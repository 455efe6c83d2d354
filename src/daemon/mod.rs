//! `disklock daemon`: the lease daemon.
//!
//! - [`table`]: the lease table, a state machine without I/O (requests, events and time in;
//!   leases taken through a backend, effects out).
//! - [`protocol`]: the Varlink messages (`src/io.disklock.Lease.varlink`), used by the
//!   client too.
//! - [`server`]: the I/O shell: socket, connections, owner watches, logging.
//! - [`log`]: the one-line-per-event stderr log (the journal is used under systemd).
//! - [`idle`]: what waits until the replies are out (log writes, closing removed leases).
//! - [`lanes`]: threads that do the lease I/O of lockspaces that may hang (NFS), one
//!   lockspace's stall holding up no other.
//! - [`access`]: what a client that is not root may name (a disk it could open itself).
//! - [`pr_layer`]: the backend that adds a persistent reservation at the storage to each
//!   lease of a SCSI or NVMe disk (`persistent_reservations = 1`).

pub mod access;
pub mod idle;
pub mod lanes;
pub mod log;
pub mod plan;
pub mod pr_layer;
pub mod protocol;
pub mod server;
pub mod table;
