//! The crate's error type.

use std::path::PathBuf;

use crate::cdb::Opcode;
use crate::inquiry::InquiryError;
use crate::sense::Sense;
use crate::vpd::VpdError;

/// Why a SCSI command on a [`Device`](crate::Device) did not succeed.
///
/// Every variant after `Open` names the device and, where there was one, the command.
/// RESERVATION CONFLICT is its own variant: it is an expected answer that callers match on.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScsiError {
    /// The device node could not be opened.
    #[error("cannot open {}", .path.display())]
    Open {
        /// The node.
        path: PathBuf,
        /// What `open(2)` or `fstat(2)` said.
        #[source]
        source: std::io::Error,
    },
    /// The node is not a SCSI disk or sg node: it is not a block or SCSI generic character
    /// device, or its driver answered `SG_IO` with `ENOTTY`.
    #[error("{} is not a scsi device", .path.display())]
    NotScsi {
        /// The node.
        path: PathBuf,
    },
    /// The `SG_IO` ioctl itself failed (the command may not have reached the device).
    #[error("sg_io {op} on {} failed", .path.display())]
    Io {
        /// The node.
        path: PathBuf,
        /// The command.
        op: Opcode,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// SCSI status RESERVATION CONFLICT (0x18): another initiator holds a reservation.
    #[error("reservation conflict: {op} on {}", .path.display())]
    ReservationConflict {
        /// The node.
        path: PathBuf,
        /// The command.
        op: Opcode,
    },
    /// UNIT ATTENTION on every attempt, including the retries.
    #[error("{op} on {} still failed after unit attention retries: {sense}", .path.display())]
    UnitAttention {
        /// The node.
        path: PathBuf,
        /// The command.
        op: Opcode,
        /// The last attempt's sense.
        sense: Sense,
    },
    /// CHECK CONDITION with sense key ILLEGAL REQUEST: the device does not support the command,
    /// page or parameter.
    #[error("{op} on {} rejected: {sense}", .path.display())]
    IllegalRequest {
        /// The node.
        path: PathBuf,
        /// The command.
        op: Opcode,
        /// The sense.
        sense: Sense,
    },
    /// CHECK CONDITION with any other sense key (NOT READY, MEDIUM ERROR, ABORTED COMMAND, ...).
    #[error("{op} on {} failed: {sense}", .path.display())]
    Check {
        /// The node.
        path: PathBuf,
        /// The command.
        op: Opcode,
        /// The sense.
        sense: Sense,
    },
    /// Another SCSI status (BUSY, TASK SET FULL, ...), or CHECK CONDITION without decodable
    /// sense data.
    #[error("{op} on {} ended with scsi status {status:#04x}", .path.display())]
    Status {
        /// The node.
        path: PathBuf,
        /// The command.
        op: Opcode,
        /// The SAM status byte.
        status: u8,
    },
    /// The host adapter or the driver reported a failure (`DID_*` / `DRIVER_*`), e.g. a lost
    /// iSCSI connection or a timeout.
    #[error(
        "transport error: {op} on {}: host status {host_status:#06x}, driver status {driver_status:#06x}",
        .path.display()
    )]
    Transport {
        /// The node.
        path: PathBuf,
        /// The command.
        op: Opcode,
        /// `host_status` (`DID_*`).
        host_status: u16,
        /// `driver_status` (`DRIVER_*`).
        driver_status: u16,
    },
    /// The command succeeded but its VPD page is malformed.
    #[error("bad vpd page from {op} on {}", .path.display())]
    Vpd {
        /// The node.
        path: PathBuf,
        /// The command.
        op: Opcode,
        /// What is wrong with the page.
        #[source]
        source: VpdError,
    },
    /// The command succeeded but its standard INQUIRY data is malformed.
    #[error("bad standard inquiry data from {op} on {}", .path.display())]
    Inquiry {
        /// The node.
        path: PathBuf,
        /// The command.
        op: Opcode,
        /// What is wrong with the data.
        #[source]
        source: InquiryError,
    },
}
