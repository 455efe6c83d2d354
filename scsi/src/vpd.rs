//! Vital product data pages: pure parsers, no I/O.
//!
//! Every VPD page starts with the same 4-byte header (SPC-4 §7.8.1):
//!
//! | byte | field |
//! |---|---|
//! | 0 | PERIPHERAL QUALIFIER / PERIPHERAL DEVICE TYPE |
//! | 1 | PAGE CODE |
//! | 2..4 | PAGE LENGTH (n − 3), big-endian |
//!
//! [`page_payload`] checks the page code and that the buffer holds the whole page; the parsers
//! below build on it, so a truncated page is an error, never a panic.
//!
//! Pages handled:
//! - 0x00 Supported VPD pages (SPC-4 §7.8.16): [`supported_pages`].
//! - 0x80 Unit Serial Number (SPC-4 §7.8.18): [`unit_serial_number`].
//! - 0x83 Device Identification (SPC-4 §7.8.6): [`device_identification`].
//!
//! WWIDs derived from these pages live in [`scsi_id_wwid`] (the string udev's `scsi_id` prints)
//! and [`SysfsWwid`] (the kernel's `device/wwid` attribute).

mod scsi_id;
mod sysfs;

pub(crate) use scsi_id::scsi_id_from_device_id;
pub use scsi_id::{SCSI_ID_INQUIRY_LEN, ScsiIdPages, scsi_id_pages, scsi_id_wwid};
pub use sysfs::SysfsWwid;

/// Page code of the Supported VPD Pages page (SPC-4 §7.8.16).
pub const PAGE_SUPPORTED: u8 = 0x00;
/// Page code of the Unit Serial Number page (SPC-4 §7.8.18).
pub const PAGE_UNIT_SERIAL: u8 = 0x80;
/// Page code of the Device Identification page (SPC-4 §7.8.6).
pub const PAGE_DEVICE_ID: u8 = 0x83;

/// Length of the common VPD page header.
pub const HEADER_LEN: usize = 4;
/// Length of a designation descriptor's header (SPC-4 §7.8.6.1, table "Designation descriptor").
pub const DESCRIPTOR_HEADER_LEN: usize = 4;

/// Why a VPD page could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VpdError {
    /// Fewer than the 4 header bytes.
    #[error("vpd page too short for its header ({len} bytes)")]
    Short {
        /// Bytes received.
        len: usize,
    },
    /// The page code is not the one asked for.
    #[error("expected vpd page {expected:#04x}, got page {found:#04x}")]
    WrongPage {
        /// Page code asked for.
        expected: u8,
        /// Page code in byte 1.
        found: u8,
    },
    /// PAGE LENGTH runs past the end of the buffer.
    #[error("vpd page {page:#04x} truncated: declares {declared} bytes, {available} present")]
    Truncated {
        /// Page code.
        page: u8,
        /// `PAGE LENGTH + 4`.
        declared: usize,
        /// Bytes received.
        available: usize,
    },
    /// A designation descriptor runs past the end of the page.
    #[error(
        "designation descriptor at offset {offset} truncated: needs {needed} bytes, page has {available}"
    )]
    DescriptorTruncated {
        /// Offset of the descriptor from the start of the page.
        offset: usize,
        /// Bytes from the start of the page to the end of the descriptor.
        needed: usize,
        /// `PAGE LENGTH + 4`.
        available: usize,
    },
}

/// The declared total length of a VPD page (`PAGE LENGTH + 4`), if the header is present.
pub fn declared_len(buf: &[u8]) -> Option<usize> {
    let len = buf.get(2..HEADER_LEN)?;
    Some(HEADER_LEN + usize::from(u16::from_be_bytes([len[0], len[1]])))
}

/// Checks the header of VPD page `page` and returns its payload (the bytes after the header,
/// exactly PAGE LENGTH of them). Bytes past the declared end are ignored.
pub fn page_payload(buf: &[u8], page: u8) -> Result<&[u8], VpdError> {
    let declared = declared_len(buf).ok_or(VpdError::Short { len: buf.len() })?;
    if buf[1] != page {
        return Err(VpdError::WrongPage {
            expected: page,
            found: buf[1],
        });
    }
    buf.get(HEADER_LEN..declared).ok_or(VpdError::Truncated {
        page,
        declared,
        available: buf.len(),
    })
}

/// The page codes listed in the Supported VPD Pages page (0x00).
pub fn supported_pages(buf: &[u8]) -> Result<&[u8], VpdError> {
    page_payload(buf, PAGE_SUPPORTED)
}

/// The PRODUCT SERIAL NUMBER field of the Unit Serial Number page (0x80), raw: ASCII, often
/// space padded on either side (tgt right-aligns it in a 36-byte field).
pub fn unit_serial_number(buf: &[u8]) -> Result<&[u8], VpdError> {
    page_payload(buf, PAGE_UNIT_SERIAL)
}

/// CODE SET of a designation descriptor (SPC-4 §7.8.6.1, table "Code set").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CodeSet {
    /// 1: the designator is binary.
    Binary,
    /// 2: the designator is printable ASCII.
    Ascii,
    /// 3: the designator is UTF-8 (SCSI name strings).
    Utf8,
    /// 0 or 4–15: reserved.
    Reserved(u8),
}

impl CodeSet {
    /// Decodes the low four bits of `byte`.
    pub fn from_nibble(byte: u8) -> CodeSet {
        match byte & 0x0F {
            1 => CodeSet::Binary,
            2 => CodeSet::Ascii,
            3 => CodeSet::Utf8,
            other => CodeSet::Reserved(other),
        }
    }

    /// The 4-bit code.
    pub fn code(self) -> u8 {
        match self {
            CodeSet::Binary => 1,
            CodeSet::Ascii => 2,
            CodeSet::Utf8 => 3,
            CodeSet::Reserved(code) => code & 0x0F,
        }
    }
}

/// ASSOCIATION of a designation descriptor (SPC-4 §7.8.6.1, table "Association").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Association {
    /// 0: the designator names the logical unit.
    LogicalUnit,
    /// 1: the designator names the target port the command came through.
    TargetPort,
    /// 2: the designator names the SCSI target device.
    TargetDevice,
    /// 3: reserved.
    Reserved,
}

impl Association {
    /// Decodes the 2-bit association (already shifted down).
    pub fn from_bits(bits: u8) -> Association {
        match bits & 0x03 {
            0 => Association::LogicalUnit,
            1 => Association::TargetPort,
            2 => Association::TargetDevice,
            _ => Association::Reserved,
        }
    }

    /// The 2-bit code.
    pub fn code(self) -> u8 {
        match self {
            Association::LogicalUnit => 0,
            Association::TargetPort => 1,
            Association::TargetDevice => 2,
            Association::Reserved => 3,
        }
    }
}

/// DESIGNATOR TYPE of a designation descriptor (SPC-4 §7.8.6.1, table "Designator type").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DesignatorType {
    /// 0: vendor specific (SPC-4 §7.8.6.3).
    VendorSpecific,
    /// 1: T10 vendor ID based (SPC-4 §7.8.6.4): 8-byte vendor then vendor specific bytes.
    T10VendorId,
    /// 2: EUI-64 based (SPC-4 §7.8.6.5): 8, 12 or 16 bytes.
    Eui64,
    /// 3: NAA (SPC-4 §7.8.6.6): 8 or 16 bytes, the top nibble is the NAA type.
    Naa,
    /// 4: relative target port identifier (SPC-4 §7.8.6.7).
    RelativeTargetPort,
    /// 5: target port group (SPC-4 §7.8.6.8).
    TargetPortGroup,
    /// 6: logical unit group (SPC-4 §7.8.6.9).
    LogicalUnitGroup,
    /// 7: MD5 logical unit identifier (SPC-4 §7.8.6.10).
    Md5LogicalUnit,
    /// 8: SCSI name string (SPC-4 §7.8.6.11): UTF-8, `naa.`/`eui.`/`iqn.` prefixed, NUL padded.
    ScsiNameString,
    /// 9: protocol specific port identifier (SPC-4 §7.8.6.12).
    ProtocolSpecificPort,
    /// 0xA: UUID identifier (SPC-5).
    Uuid,
    /// 0xB–0xF: reserved.
    Reserved(u8),
}

impl DesignatorType {
    /// Decodes the low four bits of `byte`.
    pub fn from_nibble(byte: u8) -> DesignatorType {
        match byte & 0x0F {
            0x0 => DesignatorType::VendorSpecific,
            0x1 => DesignatorType::T10VendorId,
            0x2 => DesignatorType::Eui64,
            0x3 => DesignatorType::Naa,
            0x4 => DesignatorType::RelativeTargetPort,
            0x5 => DesignatorType::TargetPortGroup,
            0x6 => DesignatorType::LogicalUnitGroup,
            0x7 => DesignatorType::Md5LogicalUnit,
            0x8 => DesignatorType::ScsiNameString,
            0x9 => DesignatorType::ProtocolSpecificPort,
            0xA => DesignatorType::Uuid,
            other => DesignatorType::Reserved(other),
        }
    }

    /// The 4-bit code.
    pub fn code(self) -> u8 {
        match self {
            DesignatorType::VendorSpecific => 0x0,
            DesignatorType::T10VendorId => 0x1,
            DesignatorType::Eui64 => 0x2,
            DesignatorType::Naa => 0x3,
            DesignatorType::RelativeTargetPort => 0x4,
            DesignatorType::TargetPortGroup => 0x5,
            DesignatorType::LogicalUnitGroup => 0x6,
            DesignatorType::Md5LogicalUnit => 0x7,
            DesignatorType::ScsiNameString => 0x8,
            DesignatorType::ProtocolSpecificPort => 0x9,
            DesignatorType::Uuid => 0xA,
            DesignatorType::Reserved(code) => code & 0x0F,
        }
    }
}

/// One designation descriptor of the Device Identification page (SPC-4 §7.8.6.1):
///
/// | byte | field |
/// |---|---|
/// | 0 | PROTOCOL IDENTIFIER (bits 4–7), CODE SET (bits 0–3) |
/// | 1 | PIV (bit 7), ASSOCIATION (bits 4–5), DESIGNATOR TYPE (bits 0–3) |
/// | 3 | DESIGNATOR LENGTH (n − 3) |
/// | 4..n | DESIGNATOR |
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Designator<'a> {
    /// CODE SET.
    pub code_set: CodeSet,
    /// PIV: PROTOCOL IDENTIFIER is valid (only meaningful for port and device associations).
    pub piv: bool,
    /// PROTOCOL IDENTIFIER (SPC-4 §7.6.1, e.g. 5 = iSCSI), 4 bits.
    pub protocol_id: u8,
    /// ASSOCIATION.
    pub association: Association,
    /// DESIGNATOR TYPE.
    pub designator_type: DesignatorType,
    /// DESIGNATOR bytes, exactly DESIGNATOR LENGTH of them.
    pub value: &'a [u8],
}

impl Designator<'_> {
    /// For an NAA designator, the NAA field (top nibble of the first byte): 2 IEEE extended,
    /// 3 locally assigned, 5 IEEE registered, 6 IEEE registered extended.
    pub fn naa_type(&self) -> Option<u8> {
        match self.designator_type {
            DesignatorType::Naa => self.value.first().map(|b| b >> 4),
            _ => None,
        }
    }

    /// The value as lowercase hex, as `scsi_id` and the kernel print binary designators.
    pub fn hex(&self) -> String {
        hex::encode(self.value)
    }
}

/// Decodes the designation descriptors of a Device Identification page (0x83), in page order.
///
/// Errors if the header is wrong, the page is truncated, or a descriptor runs past PAGE LENGTH.
pub fn device_identification(buf: &[u8]) -> Result<Vec<Designator<'_>>, VpdError> {
    let payload = page_payload(buf, PAGE_DEVICE_ID)?;
    let available = HEADER_LEN + payload.len();
    let mut out = Vec::new();
    let mut rest = payload;
    let mut offset = HEADER_LEN;
    while !rest.is_empty() {
        let truncated = |needed| VpdError::DescriptorTruncated {
            offset,
            needed,
            available,
        };
        let header = rest
            .get(..DESCRIPTOR_HEADER_LEN)
            .ok_or(truncated(offset + DESCRIPTOR_HEADER_LEN))?;
        let end = DESCRIPTOR_HEADER_LEN + usize::from(header[3]);
        let value = rest
            .get(DESCRIPTOR_HEADER_LEN..end)
            .ok_or(truncated(offset + end))?;
        out.push(Designator {
            code_set: CodeSet::from_nibble(header[0]),
            piv: header[1] & 0x80 != 0,
            protocol_id: header[0] >> 4,
            association: Association::from_bits(header[1] >> 4),
            designator_type: DesignatorType::from_nibble(header[1]),
            value,
        });
        rest = &rest[end..];
        offset += end;
    }
    Ok(out)
}

/// Test-only builders for VPD pages, shared by this module's tests and `scsi_id`'s.
#[cfg(test)]
pub(crate) mod build {
    use super::*;

    /// Encodes one designation descriptor.
    pub(crate) fn descriptor(d: &Designator<'_>) -> Vec<u8> {
        let mut out = vec![
            (d.protocol_id << 4) | d.code_set.code(),
            (u8::from(d.piv) << 7) | (d.association.code() << 4) | d.designator_type.code(),
            0,
            u8::try_from(d.value.len()).expect("designator fits in 255 bytes"),
        ];
        out.extend_from_slice(d.value);
        out
    }

    /// A LUN-associated designator with no protocol identifier.
    pub(crate) fn lun(code_set: CodeSet, ty: DesignatorType, value: &[u8]) -> Designator<'_> {
        Designator {
            code_set,
            piv: false,
            protocol_id: 0,
            association: Association::LogicalUnit,
            designator_type: ty,
            value,
        }
    }

    /// Wraps a payload in a VPD header for `page`.
    pub(crate) fn page(page: u8, payload: &[u8]) -> Vec<u8> {
        let len = u16::try_from(payload.len()).expect("payload fits in a page");
        let mut out = vec![0x00, page];
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    /// A Device Identification page holding `designators` in order.
    pub(crate) fn page83(designators: &[Designator<'_>]) -> Vec<u8> {
        let payload: Vec<u8> = designators.iter().flat_map(descriptor).collect();
        page(PAGE_DEVICE_ID, &payload)
    }

    /// The tgt LUN of test-rig.md §7.4: page length 0x48; a 40-byte T10 vendor ID descriptor
    /// (4-byte header + 36-byte value: 40 + 12 + 20 = 0x48), NAA 3 `3000000100000001`, NAA 6
    /// `6000000000000000000000e000000001`. Reconstructed from test-rig.md §7.4, to be replaced
    /// by a real capture. The T10 value's text is a guess (vendor padded to 8, then the
    /// `scsi_id=` string padded).
    pub(crate) fn tgt_page83() -> Vec<u8> {
        let t10: [u8; 36] = *b"VMHARN  SANLUN-ID-0001              ";
        let naa3 = hex::decode("3000000100000001").expect("hex");
        let naa6 = hex::decode("6000000000000000000000e000000001").expect("hex");
        let page = page83(&[
            lun(CodeSet::Ascii, DesignatorType::T10VendorId, &t10),
            lun(CodeSet::Binary, DesignatorType::Naa, &naa3),
            lun(CodeSet::Binary, DesignatorType::Naa, &naa6),
        ]);
        assert_eq!(
            page[2..4],
            [0x00, 0x48],
            "page length as in test-rig.md §7.4"
        );
        page
    }

    /// The tgt LUN's Unit Serial Number page (test-rig.md §7.4: page length 0x24, serial
    /// right-aligned in a 36-byte space-padded field). Reconstructed, serial text guessed.
    pub(crate) fn tgt_page80() -> Vec<u8> {
        let serial = format!("{:>36}", "beaf10");
        page(PAGE_UNIT_SERIAL, serial.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::build::*;
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tgt_page_designators() {
        let page = tgt_page83();
        let ds = device_identification(&page).expect("parses");
        assert_eq!(ds.len(), 3);
        assert_eq!(ds[0].designator_type, DesignatorType::T10VendorId);
        assert_eq!(ds[0].code_set, CodeSet::Ascii);
        assert_eq!(ds[0].value.len(), 36);
        assert_eq!(ds[1].naa_type(), Some(3));
        assert_eq!(ds[1].hex(), "3000000100000001");
        assert_eq!(ds[2].naa_type(), Some(6));
        assert_eq!(ds[2].hex(), "6000000000000000000000e000000001");
        assert!(ds.iter().all(|d| d.association == Association::LogicalUnit));
    }

    #[test]
    fn header_checks() {
        assert_eq!(page_payload(&[], 0x83), Err(VpdError::Short { len: 0 }));
        assert_eq!(
            page_payload(&[0, 0x83, 0], 0x83),
            Err(VpdError::Short { len: 3 })
        );
        assert_eq!(
            page_payload(&[0, 0x80, 0, 0], 0x83),
            Err(VpdError::WrongPage {
                expected: 0x83,
                found: 0x80
            })
        );
        assert_eq!(
            page_payload(&[0, 0x83, 0, 5, 1, 2], 0x83),
            Err(VpdError::Truncated {
                page: 0x83,
                declared: 9,
                available: 6
            })
        );
        // Trailing bytes past PAGE LENGTH are ignored.
        assert_eq!(
            page_payload(&[0, 0x83, 0, 1, 7, 9, 9], 0x83),
            Ok(&[7u8][..])
        );
        assert_eq!(page_payload(&[0, 0x83, 0, 0], 0x83), Ok(&[][..]));
    }

    #[test]
    fn truncated_descriptors() {
        // Descriptor header cut short by PAGE LENGTH.
        let page = [0, 0x83, 0, 2, 0x01, 0x03];
        assert_eq!(
            device_identification(&page),
            Err(VpdError::DescriptorTruncated {
                offset: 4,
                needed: 8,
                available: 6
            })
        );
        // Descriptor value longer than the page.
        let page = [0, 0x83, 0, 6, 0x01, 0x03, 0, 8, 0x60, 0x00];
        assert_eq!(
            device_identification(&page),
            Err(VpdError::DescriptorTruncated {
                offset: 4,
                needed: 16,
                available: 10
            })
        );
        // The whole tgt page cut anywhere is an error, not a panic.
        let full = tgt_page83();
        for cut in 0..full.len() {
            assert!(device_identification(&full[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn port_and_protocol_fields() {
        let iqn = b"iqn.2003-01.org.example:tgt,t,0x0001\0\0\0\0";
        let d = Designator {
            code_set: CodeSet::Utf8,
            piv: true,
            protocol_id: 5,
            association: Association::TargetPort,
            designator_type: DesignatorType::ScsiNameString,
            value: iqn,
        };
        let page = page83(&[d]);
        assert_eq!(page[4], 0x53);
        assert_eq!(page[5], 0x98);
        assert_eq!(device_identification(&page), Ok(vec![d]));
    }

    #[test]
    fn serial_and_supported() {
        let p80 = tgt_page80();
        assert_eq!(p80[2..4], [0x00, 0x24]);
        let serial = unit_serial_number(&p80).expect("parses");
        assert_eq!(serial.len(), 36);
        assert_eq!(String::from_utf8_lossy(serial).trim(), "beaf10");
        let page0 = page(PAGE_SUPPORTED, &[0x00, 0x80, 0x83]);
        assert_eq!(supported_pages(&page0), Ok(&[0x00, 0x80, 0x83][..]));
        assert!(supported_pages(&page0[..5]).is_err());
    }

    #[test]
    fn enum_codes_round_trip() {
        for c in 0..16u8 {
            assert_eq!(CodeSet::from_nibble(c).code(), c);
            assert_eq!(DesignatorType::from_nibble(c).code(), c);
        }
        for a in 0..4u8 {
            assert_eq!(Association::from_bits(a).code(), a);
        }
    }

    fn arb_designator() -> impl Strategy<Value = (u8, u8, bool, u8, u8, Vec<u8>)> {
        (
            0u8..16,
            0u8..16,
            any::<bool>(),
            0u8..4,
            0u8..16,
            proptest::collection::vec(any::<u8>(), 0..40),
        )
    }

    proptest! {
        #[test]
        fn parsers_never_panic(buf in proptest::collection::vec(any::<u8>(), 0..300)) {
            let _ = device_identification(&buf);
            let _ = unit_serial_number(&buf);
            let _ = supported_pages(&buf);
            let _ = page_payload(&buf, 0x83);
        }

        #[test]
        fn parsers_never_panic_on_plausible_headers(
            len in 0u16..300,
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut buf = vec![0, 0x83];
            buf.extend_from_slice(&len.to_be_bytes());
            buf.extend_from_slice(&body);
            let _ = device_identification(&buf);
        }

        #[test]
        fn well_formed_pages_round_trip(raw in proptest::collection::vec(arb_designator(), 0..8)) {
            let ds: Vec<Designator<'_>> = raw
                .iter()
                .map(|(proto, cs, piv, assoc, ty, value)| Designator {
                    code_set: CodeSet::from_nibble(*cs),
                    piv: *piv,
                    protocol_id: *proto,
                    association: Association::from_bits(*assoc),
                    designator_type: DesignatorType::from_nibble(*ty),
                    value,
                })
                .collect();
            let page = page83(&ds);
            prop_assert_eq!(device_identification(&page), Ok(ds));
        }
    }
}
