//! Sense data: a pure decoder, no I/O.
//!
//! A device that ends a command with CHECK CONDITION returns sense data in one of two formats
//! (SPC-4 §4.5 "Sense data"):
//!
//! | response code | format | meaning |
//! |---|---|---|
//! | 0x70 | fixed (§4.5.3) | current error |
//! | 0x71 | fixed (§4.5.3) | deferred error |
//! | 0x72 | descriptor (§4.5.2) | current error |
//! | 0x73 | descriptor (§4.5.2) | deferred error |
//!
//! Bit 7 of byte 0 (VALID in fixed format) is ignored. Any other response code, including
//! 0x7F (vendor specific), decodes to `None`.
//!
//! Fixed format: sense key in byte 2 bits 0–3, ADDITIONAL SENSE LENGTH in byte 7, ASC in byte 12,
//! ASCQ in byte 13. Descriptor format: sense key in byte 1, ASC in byte 2, ASCQ in byte 3.
//! Truncated sense is decoded as far as it goes, like sg3_utils' `sg_scsi_normalize_sense`:
//! the key is required, a missing ASC or ASCQ reads as 0.

use std::fmt;

/// The sense key (SPC-4 §4.5.6, table "Sense key descriptions"). All sixteen 4-bit values have a
/// variant, so decoding a key cannot fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SenseKey {
    /// 0x0: no specific sense key information.
    NoSense,
    /// 0x1: the command completed after recovery action.
    RecoveredError,
    /// 0x2: the logical unit is not accessible.
    NotReady,
    /// 0x3: unrecoverable medium error.
    MediumError,
    /// 0x4: non-recoverable hardware failure.
    HardwareError,
    /// 0x5: bad CDB or parameter list, or unsupported command.
    IllegalRequest,
    /// 0x6: something changed (reset, reservations preempted, ...); the command was not run.
    UnitAttention,
    /// 0x7: write or read protected.
    DataProtect,
    /// 0x8: blank or non-blank medium where the other was expected.
    BlankCheck,
    /// 0x9: vendor specific.
    VendorSpecific,
    /// 0xA: EXTENDED COPY aborted.
    CopyAborted,
    /// 0xB: the device server aborted the command.
    AbortedCommand,
    /// 0xC: obsolete (was EQUAL).
    Obsolete0C,
    /// 0xD: buffered device reached end of partition.
    VolumeOverflow,
    /// 0xE: source data did not match medium (VERIFY, COMPARE AND WRITE).
    Miscompare,
    /// 0xF: completed (SPC-5).
    Completed,
}

impl SenseKey {
    /// The key in the low four bits of `byte`; the high bits are ignored.
    pub fn from_nibble(byte: u8) -> SenseKey {
        match byte & 0x0F {
            0x0 => SenseKey::NoSense,
            0x1 => SenseKey::RecoveredError,
            0x2 => SenseKey::NotReady,
            0x3 => SenseKey::MediumError,
            0x4 => SenseKey::HardwareError,
            0x5 => SenseKey::IllegalRequest,
            0x6 => SenseKey::UnitAttention,
            0x7 => SenseKey::DataProtect,
            0x8 => SenseKey::BlankCheck,
            0x9 => SenseKey::VendorSpecific,
            0xA => SenseKey::CopyAborted,
            0xB => SenseKey::AbortedCommand,
            0xC => SenseKey::Obsolete0C,
            0xD => SenseKey::VolumeOverflow,
            0xE => SenseKey::Miscompare,
            _ => SenseKey::Completed,
        }
    }

    /// The numeric key, 0x0..=0xF.
    pub fn code(self) -> u8 {
        self as u8
    }

    /// Lowercase name, as in SPC's table.
    pub fn name(self) -> &'static str {
        match self {
            SenseKey::NoSense => "no sense",
            SenseKey::RecoveredError => "recovered error",
            SenseKey::NotReady => "not ready",
            SenseKey::MediumError => "medium error",
            SenseKey::HardwareError => "hardware error",
            SenseKey::IllegalRequest => "illegal request",
            SenseKey::UnitAttention => "unit attention",
            SenseKey::DataProtect => "data protect",
            SenseKey::BlankCheck => "blank check",
            SenseKey::VendorSpecific => "vendor specific",
            SenseKey::CopyAborted => "copy aborted",
            SenseKey::AbortedCommand => "aborted command",
            SenseKey::Obsolete0C => "obsolete (0xc)",
            SenseKey::VolumeOverflow => "volume overflow",
            SenseKey::Miscompare => "miscompare",
            SenseKey::Completed => "completed",
        }
    }
}

impl fmt::Display for SenseKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// ADDITIONAL SENSE CODE and QUALIFIER pairs we expect to meet, as `(ASC << 8) | ASCQ`
/// (SPC-4 §4.5.6, table "ASC and ASCQ assignments"; also T10's `asc-num.txt`).
pub mod asc {
    /// 00/00 no additional sense information.
    pub const NO_ADDITIONAL_SENSE: u16 = 0x0000;
    /// 04/00 logical unit not ready, cause not reportable.
    pub const NOT_READY_CAUSE_NOT_REPORTABLE: u16 = 0x0400;
    /// 04/01 logical unit is in process of becoming ready.
    pub const NOT_READY_BECOMING_READY: u16 = 0x0401;
    /// 04/02 logical unit not ready, initializing command required.
    pub const NOT_READY_INIT_REQUIRED: u16 = 0x0402;
    /// 04/03 logical unit not ready, manual intervention required.
    pub const NOT_READY_MANUAL_INTERVENTION: u16 = 0x0403;
    /// 04/0A logical unit not ready, asymmetric access state transition (ALUA).
    pub const NOT_READY_ALUA_TRANSITION: u16 = 0x040A;
    /// 04/0B logical unit not ready, target port in standby state (ALUA).
    pub const NOT_READY_ALUA_STANDBY: u16 = 0x040B;
    /// 04/0C logical unit not ready, target port in unavailable state (ALUA).
    pub const NOT_READY_ALUA_UNAVAILABLE: u16 = 0x040C;
    /// 1A/00 parameter list length error.
    pub const PARAMETER_LIST_LENGTH_ERROR: u16 = 0x1A00;
    /// 20/00 invalid command operation code.
    pub const INVALID_COMMAND_OPERATION_CODE: u16 = 0x2000;
    /// 24/00 invalid field in cdb.
    pub const INVALID_FIELD_IN_CDB: u16 = 0x2400;
    /// 25/00 logical unit not supported.
    pub const LOGICAL_UNIT_NOT_SUPPORTED: u16 = 0x2500;
    /// 26/00 invalid field in parameter list.
    pub const INVALID_FIELD_IN_PARAMETER_LIST: u16 = 0x2600;
    /// 29/00 power on, reset, or bus device reset occurred.
    pub const POWER_ON_RESET: u16 = 0x2900;
    /// 29/07 i_t nexus loss occurred.
    pub const IT_NEXUS_LOSS: u16 = 0x2907;
    /// 2A/03 reservations preempted.
    pub const RESERVATIONS_PREEMPTED: u16 = 0x2A03;
    /// 2A/04 reservations released.
    pub const RESERVATIONS_RELEASED: u16 = 0x2A04;
    /// 2A/05 registrations preempted.
    pub const REGISTRATIONS_PREEMPTED: u16 = 0x2A05;
    /// 2A/06 asymmetric access state changed (ALUA).
    pub const ALUA_STATE_CHANGED: u16 = 0x2A06;
    /// 2A/09 capacity data has changed.
    pub const CAPACITY_DATA_CHANGED: u16 = 0x2A09;
    /// 2C/00 command sequence error.
    pub const COMMAND_SEQUENCE_ERROR: u16 = 0x2C00;
    /// 3F/03 inquiry data has changed.
    pub const INQUIRY_DATA_CHANGED: u16 = 0x3F03;
    /// 3F/0E reported luns data has changed.
    pub const REPORTED_LUNS_CHANGED: u16 = 0x3F0E;
    /// 55/07 insufficient registration resources.
    pub const INSUFFICIENT_REGISTRATION_RESOURCES: u16 = 0x5507;

    /// The description of an ASC/ASCQ pair, lowercase, or `None` if this crate does not know it.
    ///
    /// Unknown qualifiers under ASC 0x04, 0x29 and 0x2A fall back to their family name.
    pub fn name(code: u16) -> Option<&'static str> {
        Some(match code {
            NO_ADDITIONAL_SENSE => "no additional sense information",
            NOT_READY_CAUSE_NOT_REPORTABLE => "logical unit not ready, cause not reportable",
            NOT_READY_BECOMING_READY => "logical unit is in process of becoming ready",
            NOT_READY_INIT_REQUIRED => "logical unit not ready, initializing command required",
            NOT_READY_MANUAL_INTERVENTION => "logical unit not ready, manual intervention required",
            NOT_READY_ALUA_TRANSITION => {
                "logical unit not ready, asymmetric access state transition"
            }
            NOT_READY_ALUA_STANDBY => "logical unit not ready, target port in standby state",
            NOT_READY_ALUA_UNAVAILABLE => {
                "logical unit not ready, target port in unavailable state"
            }
            PARAMETER_LIST_LENGTH_ERROR => "parameter list length error",
            INVALID_COMMAND_OPERATION_CODE => "invalid command operation code",
            INVALID_FIELD_IN_CDB => "invalid field in cdb",
            LOGICAL_UNIT_NOT_SUPPORTED => "logical unit not supported",
            INVALID_FIELD_IN_PARAMETER_LIST => "invalid field in parameter list",
            POWER_ON_RESET => "power on, reset, or bus device reset occurred",
            IT_NEXUS_LOSS => "i_t nexus loss occurred",
            RESERVATIONS_PREEMPTED => "reservations preempted",
            RESERVATIONS_RELEASED => "reservations released",
            REGISTRATIONS_PREEMPTED => "registrations preempted",
            ALUA_STATE_CHANGED => "asymmetric access state changed",
            CAPACITY_DATA_CHANGED => "capacity data has changed",
            COMMAND_SEQUENCE_ERROR => "command sequence error",
            INQUIRY_DATA_CHANGED => "inquiry data has changed",
            REPORTED_LUNS_CHANGED => "reported luns data has changed",
            INSUFFICIENT_REGISTRATION_RESOURCES => "insufficient registration resources",
            _ => return family(code),
        })
    }

    /// The ASC's family name for qualifiers not listed above.
    fn family(code: u16) -> Option<&'static str> {
        match code >> 8 {
            0x04 => Some("logical unit not ready"),
            0x29 => Some("power on or reset occurred"),
            0x2A => Some("parameters changed"),
            _ => None,
        }
    }
}

/// Fixed format, current error (SPC-4 §4.5.3).
pub const RESPONSE_FIXED_CURRENT: u8 = 0x70;
/// Fixed format, deferred error (SPC-4 §4.5.3).
pub const RESPONSE_FIXED_DEFERRED: u8 = 0x71;
/// Descriptor format, current error (SPC-4 §4.5.2).
pub const RESPONSE_DESCRIPTOR_CURRENT: u8 = 0x72;
/// Descriptor format, deferred error (SPC-4 §4.5.2).
pub const RESPONSE_DESCRIPTOR_DEFERRED: u8 = 0x73;

/// Decoded sense data: what went wrong, in SPC's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sense {
    /// The sense key.
    pub key: SenseKey,
    /// ADDITIONAL SENSE CODE (0 when the sense data was too short to carry it).
    pub asc: u8,
    /// ADDITIONAL SENSE CODE QUALIFIER (0 when the sense data was too short to carry it).
    pub ascq: u8,
    /// `true` for a current error (0x70/0x72), `false` for a deferred one (0x71/0x73).
    pub current: bool,
}

impl Sense {
    /// Decodes fixed or descriptor format sense data. Pass only the bytes the device wrote
    /// (`sb_len_wr`). `None` for empty input, an unknown response code, or data too short to
    /// carry the sense key. Never panics.
    pub fn parse(buf: &[u8]) -> Option<Sense> {
        let code = *buf.first()? & 0x7F;
        match code {
            RESPONSE_FIXED_CURRENT | RESPONSE_FIXED_DEFERRED => {
                let key = SenseKey::from_nibble(*buf.get(2)?);
                // Byte 7 says how many bytes follow it; trust it only as far as the buffer goes.
                let len = match buf.get(7) {
                    Some(&additional) => buf.len().min(8 + usize::from(additional)),
                    None => buf.len(),
                };
                let within = &buf[..len];
                Some(Sense {
                    key,
                    asc: within.get(12).copied().unwrap_or(0),
                    ascq: within.get(13).copied().unwrap_or(0),
                    current: code == RESPONSE_FIXED_CURRENT,
                })
            }
            RESPONSE_DESCRIPTOR_CURRENT | RESPONSE_DESCRIPTOR_DEFERRED => Some(Sense {
                key: SenseKey::from_nibble(*buf.get(1)?),
                asc: buf.get(2).copied().unwrap_or(0),
                ascq: buf.get(3).copied().unwrap_or(0),
                current: code == RESPONSE_DESCRIPTOR_CURRENT,
            }),
            _ => None,
        }
    }

    /// `(ASC << 8) | ASCQ`, to compare with the constants in [`asc`].
    pub fn asc_ascq(&self) -> u16 {
        u16::from_be_bytes([self.asc, self.ascq])
    }

    /// The ASC/ASCQ description, if known.
    pub fn description(&self) -> Option<&'static str> {
        asc::name(self.asc_ascq())
    }
}

impl fmt::Display for Sense {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.current {
            f.write_str("deferred ")?;
        }
        write!(
            f,
            "{}, asc/ascq {:#04x}/{:#04x}",
            self.key, self.asc, self.ascq
        )?;
        if let Some(text) = self.description() {
            write!(f, " ({text})")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn fixed(key: u8, asc: u8, ascq: u8) -> Vec<u8> {
        let mut buf = vec![0u8; 18];
        buf[0] = 0x70;
        buf[2] = key;
        buf[7] = 10;
        buf[12] = asc;
        buf[13] = ascq;
        buf
    }

    #[test]
    fn fixed_unit_attention_registrations_preempted() {
        let s = Sense::parse(&fixed(0x06, 0x2A, 0x05)).expect("decodes");
        assert_eq!(s.key, SenseKey::UnitAttention);
        assert_eq!(s.asc_ascq(), asc::REGISTRATIONS_PREEMPTED);
        assert!(s.current);
        assert_eq!(
            s.to_string(),
            "unit attention, asc/ascq 0x2a/0x05 (registrations preempted)"
        );
    }

    #[test]
    fn fixed_with_valid_bit_and_deferred() {
        let mut buf = fixed(0x05, 0x24, 0x00);
        buf[0] = 0xF1; // VALID set, deferred
        let s = Sense::parse(&buf).expect("decodes");
        assert_eq!(s.key, SenseKey::IllegalRequest);
        assert_eq!(s.asc_ascq(), asc::INVALID_FIELD_IN_CDB);
        assert!(!s.current);
        assert!(s.to_string().starts_with("deferred illegal request"));
    }

    #[test]
    fn fixed_high_bits_of_key_byte_ignored() {
        // FILEMARK/EOM/ILI bits live above the key.
        let s = Sense::parse(&fixed(0xE2, 0x04, 0x01)).expect("decodes");
        assert_eq!(s.key, SenseKey::NotReady);
        assert_eq!(
            s.description(),
            Some("logical unit is in process of becoming ready")
        );
    }

    #[test]
    fn fixed_additional_length_limits_asc() {
        let mut buf = fixed(0x06, 0x29, 0x00);
        buf[7] = 4; // only bytes 8..12 follow: no ASC
        let s = Sense::parse(&buf).expect("decodes");
        assert_eq!((s.asc, s.ascq), (0, 0));
        buf[7] = 5; // byte 12 included, 13 not
        let s = Sense::parse(&buf).expect("decodes");
        assert_eq!((s.asc, s.ascq), (0x29, 0));
    }

    #[test]
    fn fixed_truncated_buffer() {
        let buf = fixed(0x06, 0x29, 0x00);
        assert_eq!(Sense::parse(&buf[..2]), None);
        let s = Sense::parse(&buf[..3]).expect("key present");
        assert_eq!(s.key, SenseKey::UnitAttention);
        assert_eq!((s.asc, s.ascq), (0, 0));
        let s = Sense::parse(&buf[..13]).expect("key present");
        assert_eq!((s.asc, s.ascq), (0x29, 0));
    }

    #[test]
    fn descriptor_formats() {
        let s = Sense::parse(&[0x72, 0x05, 0x20, 0x00, 0, 0, 0, 0]).expect("decodes");
        assert_eq!(s.key, SenseKey::IllegalRequest);
        assert_eq!(s.asc_ascq(), asc::INVALID_COMMAND_OPERATION_CODE);
        assert!(s.current);
        let s = Sense::parse(&[0x73, 0x06, 0x3F, 0x0E]).expect("decodes");
        assert!(!s.current);
        assert_eq!(s.description(), Some("reported luns data has changed"));
        let s = Sense::parse(&[0x72, 0x02]).expect("key present");
        assert_eq!((s.key, s.asc, s.ascq), (SenseKey::NotReady, 0, 0));
        assert_eq!(Sense::parse(&[0x72]), None);
    }

    #[test]
    fn unknown_and_empty() {
        assert_eq!(Sense::parse(&[]), None);
        assert_eq!(Sense::parse(&[0x7F, 0x06, 0x29, 0]), None);
        assert_eq!(Sense::parse(&[0x00; 18]), None);
        assert_eq!(Sense::parse(&[0x74, 0x06, 0x29, 0]), None);
    }

    #[test]
    fn names_we_rely_on() {
        for (code, text) in [
            (0x2400, "invalid field in cdb"),
            (0x2600, "invalid field in parameter list"),
            (0x2A03, "reservations preempted"),
            (0x2A04, "reservations released"),
            (0x2A05, "registrations preempted"),
            (0x2900, "power on, reset, or bus device reset occurred"),
            (0x3F0E, "reported luns data has changed"),
            (0x2000, "invalid command operation code"),
            (0x0400, "logical unit not ready, cause not reportable"),
            (0x0477, "logical unit not ready"),
        ] {
            assert_eq!(asc::name(code), Some(text), "{code:#06x}");
        }
        assert_eq!(asc::name(0x9999), None);
        for k in 0..16u8 {
            assert_eq!(SenseKey::from_nibble(k).code(), k);
        }
    }

    proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..80)) {
            let _ = Sense::parse(&buf);
        }

        #[test]
        fn fixed_round_trip(key in 0u8..16, a in any::<u8>(), q in any::<u8>(), deferred: bool) {
            let mut buf = fixed(key, a, q);
            if deferred { buf[0] = 0x71; }
            let s = Sense::parse(&buf).unwrap();
            prop_assert_eq!(s.key.code(), key);
            prop_assert_eq!((s.asc, s.ascq, s.current), (a, q, !deferred));
        }
    }
}
