//! Command descriptor blocks: pure builders, no I/O.
//!
//! Section numbers cite SPC-4 (T10/BSR INCITS 513 revision 37); drafts number some clauses
//! differently, so each constant also names the clause title.

use std::fmt;

use crate::pr::{InAction, OutAction};

/// TEST UNIT READY operation code (SPC-4 §6.37 "TEST UNIT READY command").
pub const TEST_UNIT_READY: u8 = 0x00;

/// INQUIRY operation code (SPC-4 §6.6 "INQUIRY command").
pub const INQUIRY: u8 = 0x12;

/// PERSISTENT RESERVE IN operation code (SPC-4 §6.15 "PERSISTENT RESERVE IN command").
pub const PERSISTENT_RESERVE_IN: u8 = 0x5E;

/// PERSISTENT RESERVE OUT operation code (SPC-4 §6.16 "PERSISTENT RESERVE OUT command").
pub const PERSISTENT_RESERVE_OUT: u8 = 0x5F;

/// REPORT LUNS operation code (SPC-4 §6.33 "REPORT LUNS command"). Named for error messages.
pub const REPORT_LUNS: u8 = 0xA0;

/// EVPD bit in INQUIRY CDB byte 1 (SPC-4 §6.6.1): ask for the vital product data page named in
/// byte 2 instead of the standard INQUIRY data.
pub const INQUIRY_EVPD: u8 = 0x01;

/// Length of a 6-byte CDB such as INQUIRY or TEST UNIT READY (SPC-4 §4.2 "The command
/// descriptor block").
pub const CDB6_LEN: usize = 6;

/// Length of a 10-byte CDB such as PERSISTENT RESERVE IN/OUT.
pub const CDB10_LEN: usize = 10;

/// Allocation length for a first INQUIRY. 254 is what udev's `scsi_id` sends
/// (`SCSI_INQ_BUFF_LEN` in `src/udev/scsi_id/scsi.h`): some USB bridges misbehave with larger
/// values, and it is enough for almost every VPD page. A longer page is fetched again with its
/// exact length.
pub const INQUIRY_FIRST_ALLOC_LEN: u16 = 254;

/// TEST UNIT READY CDB (SPC-4 §6.37): opcode, four reserved bytes, CONTROL.
pub fn test_unit_ready() -> [u8; CDB6_LEN] {
    [TEST_UNIT_READY, 0, 0, 0, 0, 0]
}

/// Standard INQUIRY CDB (SPC-4 §6.6.1), EVPD clear, asking for up to `alloc_len` bytes.
///
/// Bytes 3–4 are the allocation length, big-endian. SPC-2 and older devices read only byte 4, so
/// keep `alloc_len` below 256 for a first probe.
pub fn inquiry_standard(alloc_len: u16) -> [u8; CDB6_LEN] {
    let [hi, lo] = alloc_len.to_be_bytes();
    [INQUIRY, 0, 0, hi, lo, 0]
}

/// INQUIRY CDB for the vital product data page `page` (SPC-4 §6.6.1, EVPD set), asking for up
/// to `alloc_len` bytes.
pub fn inquiry_vpd(page: u8, alloc_len: u16) -> [u8; CDB6_LEN] {
    let [hi, lo] = alloc_len.to_be_bytes();
    [INQUIRY, INQUIRY_EVPD, page, hi, lo, 0]
}

/// PERSISTENT RESERVE IN CDB (SPC-4 §6.15.1): SERVICE ACTION in byte 1 bits 4–0, ALLOCATION
/// LENGTH in bytes 7–8 (big-endian), CONTROL in byte 9; the rest reserved.
pub fn persistent_reserve_in(action: InAction, alloc_len: u16) -> [u8; CDB10_LEN] {
    let [hi, lo] = alloc_len.to_be_bytes();
    [
        PERSISTENT_RESERVE_IN,
        action.code() & 0x1F,
        0,
        0,
        0,
        0,
        0,
        hi,
        lo,
        0,
    ]
}

/// PERSISTENT RESERVE OUT CDB (SPC-4 §6.16.1): SERVICE ACTION in byte 1 bits 4–0, SCOPE and
/// TYPE in byte 2 (see [`crate::pr::scope_type`]), PARAMETER LIST LENGTH in bytes 5–8
/// (big-endian), CONTROL in byte 9.
pub fn persistent_reserve_out(
    action: OutAction,
    scope_type: u8,
    param_len: u32,
) -> [u8; CDB10_LEN] {
    let [l0, l1, l2, l3] = param_len.to_be_bytes();
    [
        PERSISTENT_RESERVE_OUT,
        action.code() & 0x1F,
        scope_type,
        0,
        0,
        l0,
        l1,
        l2,
        l3,
        0,
    ]
}

/// A CDB operation code, displayed by name for error messages (`inquiry (0x12)`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Opcode(pub u8);

impl Opcode {
    /// The command's name in lowercase, if this crate knows it.
    pub fn name(self) -> Option<&'static str> {
        Some(match self.0 {
            TEST_UNIT_READY => "test unit ready",
            INQUIRY => "inquiry",
            PERSISTENT_RESERVE_IN => "persistent reserve in",
            PERSISTENT_RESERVE_OUT => "persistent reserve out",
            REPORT_LUNS => "report luns",
            _ => return None,
        })
    }
}

impl fmt::Display for Opcode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.name() {
            Some(name) => write!(f, "{name} ({:#04x})", self.0),
            None => write!(f, "opcode {:#04x}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn test_unit_ready_is_all_zero() {
        assert_eq!(test_unit_ready(), [0; 6]);
    }

    #[test]
    fn inquiry_standard_layout() {
        // scsi_id's standard INQUIRY: { 0x12, 0, 0, 0, 254, 0 }.
        assert_eq!(inquiry_standard(254), [0x12, 0, 0, 0, 0xFE, 0]);
        assert_eq!(inquiry_standard(0x1234), [0x12, 0, 0, 0x12, 0x34, 0]);
    }

    #[test]
    fn inquiry_vpd_layout() {
        assert_eq!(inquiry_vpd(0x83, 254), [0x12, 0x01, 0x83, 0, 0xFE, 0]);
        assert_eq!(inquiry_vpd(0x80, 0xFFFF), [0x12, 0x01, 0x80, 0xFF, 0xFF, 0]);
        assert_eq!(inquiry_vpd(0x00, 4), [0x12, 0x01, 0x00, 0, 4, 0]);
    }

    #[test]
    fn persistent_reserve_in_layout() {
        // sg_persist -i -k sends 5e 00 00 00 00 00 00 20 00 00 (8192-byte allocation).
        assert_eq!(
            persistent_reserve_in(InAction::ReadKeys, 8192),
            [0x5E, 0, 0, 0, 0, 0, 0, 0x20, 0x00, 0]
        );
        assert_eq!(
            persistent_reserve_in(InAction::ReadFullStatus, 0xFFFF),
            [0x5E, 3, 0, 0, 0, 0, 0, 0xFF, 0xFF, 0]
        );
        assert_eq!(persistent_reserve_in(InAction::ReportCapabilities, 8)[1], 2);
    }

    #[test]
    fn persistent_reserve_out_layout() {
        // sg_persist -o -R -T 5 -K ...: 5f 01 05 00 00 00 00 00 18 00.
        assert_eq!(
            persistent_reserve_out(OutAction::Reserve, 0x05, 24),
            [0x5F, 0x01, 0x05, 0, 0, 0, 0, 0, 0x18, 0]
        );
        assert_eq!(
            persistent_reserve_out(OutAction::RegisterAndIgnoreExistingKey, 0, 0x0102_0304),
            [0x5F, 0x06, 0, 0, 0, 1, 2, 3, 4, 0]
        );
    }

    #[test]
    fn opcode_display() {
        assert_eq!(Opcode(INQUIRY).to_string(), "inquiry (0x12)");
        assert_eq!(Opcode(0x5F).to_string(), "persistent reserve out (0x5f)");
        assert_eq!(Opcode(0x5E).to_string(), "persistent reserve in (0x5e)");
        assert_eq!(Opcode(0xC0).to_string(), "opcode 0xc0");
    }
}
