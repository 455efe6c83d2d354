//! The crate's error type.

use std::path::PathBuf;

use crate::blkpr::PrStatus;
use crate::cdb::{self, Opcode};
use crate::inquiry::InquiryError;
use crate::pr::{InAction, PrParseError};
use crate::sense::{Sense, asc};
use crate::vpd::VpdError;

/// Why a SCSI command on a [`Device`](crate::Device), or a block-layer PR ioctl on a
/// [`BlockPr`](crate::BlockPr), did not succeed.
///
/// Every variant after `Open` names the device and, where there was one, the command.
/// RESERVATION CONFLICT is its own variant: it is an expected answer that callers match on,
/// whichever path produced it. "The device or kernel cannot do this" is answered by
/// [`ScsiError::unsupported`].
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
    /// SCSI status RESERVATION CONFLICT (0x18): another initiator holds a reservation, or (for
    /// PERSISTENT RESERVE OUT) the key given is not this nexus's registration. From
    /// [`BlockPr`](crate::BlockPr) (`PR_STS_RESERVATION_CONFLICT`), `op` is the SCSI opcode the
    /// ioctl stands for: PERSISTENT RESERVE OUT for changes, IN for reads.
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
    /// The command succeeded but its PERSISTENT RESERVE IN data is malformed, or still
    /// truncated after asking again with the length the device declared.
    #[error("bad persistent reserve in ({action}) data from {}", .path.display())]
    PrIn {
        /// The node.
        path: PathBuf,
        /// The service action.
        action: InAction,
        /// What is wrong with the data.
        #[source]
        source: PrParseError,
    },
    /// [`BlockPr::open`](crate::BlockPr::open) was given something that is not a block device.
    #[error("{} is not a block device", .path.display())]
    NotBlock {
        /// The node.
        path: PathBuf,
    },
    /// The kernel (or the device's driver) does not offer this block-layer PR ioctl or option:
    /// `ENOTTY`/`EOPNOTSUPP` (and `EINVAL` while probing the 6.19 read ioctls), or an option the
    /// ioctl interface has no field for.
    #[error("{what} is not supported on {}", .path.display())]
    Unsupported {
        /// The node.
        path: PathBuf,
        /// The ioctl (`IOC_PR_READ_KEYS`, …) or option.
        what: &'static str,
        /// The errno that said so; `None` when the answer was cached or no call was made.
        #[source]
        errno: Option<nix::Error>,
    },
    /// A block-layer PR ioctl failed with an errno (`EPERM` for a partition or without
    /// `CAP_SYS_ADMIN` on a read-only fd, `EAGAIN` for a suspended dm device, …).
    #[error("{ioctl} on {} failed", .path.display())]
    Ioctl {
        /// The node.
        path: PathBuf,
        /// The ioctl's name.
        ioctl: &'static str,
        /// The errno.
        #[source]
        source: nix::Error,
    },
    /// A block-layer PR ioctl returned a device status (`enum pr_status`) other than success
    /// and reservation conflict.
    #[error("{ioctl} on {} failed: {status}", .path.display())]
    PrStatus {
        /// The node.
        path: PathBuf,
        /// The ioctl's name.
        ioctl: &'static str,
        /// The status.
        status: PrStatus,
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

/// Why an [`ScsiError`] means "not supported" (see [`ScsiError::unsupported`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UnsupportedKind {
    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE (0x20/0x00): the device does not
    /// implement the command at all; or the block layer's `PR_STS_OP_NOT_SUPP`.
    Command,
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (0x24/0x00) on PERSISTENT RESERVE IN/OUT. tgt
    /// answers PREEMPT AND ABORT and READ FULL STATUS this way. For PR IN the only other CDB
    /// field is the allocation length, so this is the service action; for PR OUT it is the
    /// guess `sg_persist` makes too ("perhaps unsupported service action"): the TYPE field
    /// could be at fault, and tgt also rejects REGISTER with APTPL this way. [`Sense`] keeps no
    /// sense-key specific field pointer, so the crate cannot tell these apart.
    ServiceAction,
    /// ILLEGAL REQUEST, INVALID FIELD IN CDB (0x24/0x00) on any other command.
    CdbField,
    /// ILLEGAL REQUEST, INVALID FIELD IN PARAMETER LIST (0x26/0x00): e.g. APTPL or ALL_TG_PT
    /// set where the device does not support it. (tgt rejects APTPL with 0x24/0x00 instead,
    /// which reads as [`UnsupportedKind::ServiceAction`] or `CdbField`.)
    ParameterField,
    /// [`ScsiError::Unsupported`]: the kernel or driver lacks the block-layer ioctl or option.
    Ioctl,
}

impl ScsiError {
    /// Whether this error means the device or kernel does not support what was asked, and
    /// how. Exactly these count:
    ///
    /// - [`ScsiError::IllegalRequest`] with ASC/ASCQ 0x20/0x00, 0x24/0x00 or 0x26/0x00 (not
    ///   other qualifiers: 0x26/0x04 INVALID RELEASE OF PERSISTENT RESERVATION is a wrong
    ///   type, not a missing feature);
    /// - [`ScsiError::Unsupported`];
    /// - [`ScsiError::PrStatus`] with [`PrStatus::OpNotSupported`]. Not
    ///   [`PrStatus::OpInvalid`]: the kernel's `sd` driver reports every ILLEGAL REQUEST with
    ///   ASC 0x24 or 0x26 that way, wrong-type RELEASE included.
    pub fn unsupported(&self) -> Option<UnsupportedKind> {
        match self {
            ScsiError::IllegalRequest { op, sense, .. } => match sense.asc_ascq() {
                asc::INVALID_COMMAND_OPERATION_CODE => Some(UnsupportedKind::Command),
                asc::INVALID_FIELD_IN_CDB => Some(
                    match matches!(
                        op.0,
                        cdb::PERSISTENT_RESERVE_IN | cdb::PERSISTENT_RESERVE_OUT
                    ) {
                        true => UnsupportedKind::ServiceAction,
                        false => UnsupportedKind::CdbField,
                    },
                ),
                asc::INVALID_FIELD_IN_PARAMETER_LIST => Some(UnsupportedKind::ParameterField),
                _ => None,
            },
            ScsiError::Unsupported { .. } => Some(UnsupportedKind::Ioctl),
            ScsiError::PrStatus {
                status: PrStatus::OpNotSupported,
                ..
            } => Some(UnsupportedKind::Command),
            _ => None,
        }
    }

    /// `true` when [`ScsiError::unsupported`] is `Some`.
    pub fn is_unsupported(&self) -> bool {
        self.unsupported().is_some()
    }

    /// `true` for [`UnsupportedKind::ServiceAction`]: the device (probably) does not implement
    /// this PERSISTENT RESERVE IN/OUT service action, e.g. PREEMPT AND ABORT or READ FULL
    /// STATUS on tgt. Callers fall back (PREEMPT without abort) on this, and report other
    /// illegal requests.
    pub fn is_unsupported_service_action(&self) -> bool {
        self.unsupported() == Some(UnsupportedKind::ServiceAction)
    }

    /// `true` for RESERVATION CONFLICT, from either path.
    pub fn is_reservation_conflict(&self) -> bool {
        matches!(self, ScsiError::ReservationConflict { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn illegal(op: u8, sense: &[u8]) -> ScsiError {
        ScsiError::IllegalRequest {
            path: "/dev/sda".into(),
            op: Opcode(op),
            sense: Sense::parse(sense).expect("decodes"),
        }
    }

    fn fixed(asc: u8, ascq: u8) -> [u8; 18] {
        let mut s = [0u8; 18];
        s[0] = 0x70;
        s[2] = 0x05;
        s[7] = 10;
        s[12] = asc;
        s[13] = ascq;
        s
    }

    #[test]
    fn tgt_preempt_and_abort_is_an_unsupported_service_action() {
        // test-rig.md §3: tgt answers PREEMPT AND ABORT with ILLEGAL REQUEST 0x24/0x00 and no
        // sense-key specific bytes.
        let e = illegal(cdb::PERSISTENT_RESERVE_OUT, &fixed(0x24, 0x00));
        assert_eq!(e.unsupported(), Some(UnsupportedKind::ServiceAction));
        assert!(e.is_unsupported());
        assert!(e.is_unsupported_service_action());
        let e = illegal(cdb::PERSISTENT_RESERVE_IN, &fixed(0x24, 0x00));
        assert!(e.is_unsupported_service_action());
    }

    #[test]
    fn invalid_field_elsewhere() {
        // Not a PR command: a plain CDB field.
        let e = illegal(cdb::INQUIRY, &fixed(0x24, 0x00));
        assert_eq!(e.unsupported(), Some(UnsupportedKind::CdbField));
        assert!(!e.is_unsupported_service_action());
        // Descriptor-format sense works the same.
        let e = illegal(
            cdb::PERSISTENT_RESERVE_IN,
            &[0x72, 0x05, 0x24, 0x00, 0, 0, 0, 0],
        );
        assert!(e.is_unsupported_service_action());
    }

    #[test]
    fn other_kinds() {
        let e = illegal(cdb::PERSISTENT_RESERVE_IN, &fixed(0x20, 0x00));
        assert_eq!(e.unsupported(), Some(UnsupportedKind::Command));
        let e = illegal(cdb::PERSISTENT_RESERVE_OUT, &fixed(0x26, 0x00));
        assert_eq!(e.unsupported(), Some(UnsupportedKind::ParameterField));
        // tgt's RELEASE with the wrong type: 0x26/0x04, a real error.
        let e = illegal(cdb::PERSISTENT_RESERVE_OUT, &fixed(0x26, 0x04));
        assert_eq!(e.unsupported(), None);
        let e = ScsiError::ReservationConflict {
            path: "/dev/sda".into(),
            op: Opcode(cdb::PERSISTENT_RESERVE_OUT),
        };
        assert!(!e.is_unsupported());
        assert!(e.is_reservation_conflict());
        let e = ScsiError::Unsupported {
            path: "/dev/nvme0n1".into(),
            what: "IOC_PR_READ_KEYS",
            errno: Some(nix::Error::ENOTTY),
        };
        assert_eq!(e.unsupported(), Some(UnsupportedKind::Ioctl));
        assert_eq!(
            e.to_string(),
            "IOC_PR_READ_KEYS is not supported on /dev/nvme0n1"
        );
        let e = ScsiError::PrStatus {
            path: "/dev/dm-0".into(),
            ioctl: "IOC_PR_RESERVE",
            status: PrStatus::OpNotSupported,
        };
        assert_eq!(e.unsupported(), Some(UnsupportedKind::Command));
        let e = ScsiError::PrStatus {
            path: "/dev/dm-0".into(),
            ioctl: "IOC_PR_RELEASE",
            status: PrStatus::OpInvalid,
        };
        assert_eq!(e.unsupported(), None);
    }

    #[test]
    fn pr_in_message() {
        let e = ScsiError::PrIn {
            path: "/dev/sdb".into(),
            action: InAction::ReadKeys,
            source: PrParseError::Truncated { needed: 24, got: 8 },
        };
        assert_eq!(
            e.to_string(),
            "bad persistent reserve in (read keys) data from /dev/sdb"
        );
    }
}
