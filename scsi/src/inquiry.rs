//! Standard INQUIRY data: a pure parser, no I/O.
//!
//! Layout (SPC-4 §6.6.2 "Standard INQUIRY data"):
//!
//! | bytes | field |
//! |---|---|
//! | 0 | PERIPHERAL QUALIFIER (bits 5–7), PERIPHERAL DEVICE TYPE (bits 0–4) |
//! | 2 | VERSION |
//! | 4 | ADDITIONAL LENGTH (n − 4) |
//! | 8..16 | T10 VENDOR IDENTIFICATION (ASCII, space padded) |
//! | 16..32 | PRODUCT IDENTIFICATION (ASCII, space padded) |
//! | 32..36 | PRODUCT REVISION LEVEL (ASCII, space padded) |
//!
//! The identification fields are kept as raw bytes: udev's `scsi_id` builds some WWIDs from the
//! exact 8 + 16 bytes (see [`crate::vpd::scsi_id_wwid`]).

/// Bytes up to and including ADDITIONAL LENGTH.
const HEADER_LEN: usize = 5;
/// Offset of T10 VENDOR IDENTIFICATION.
const VENDOR_OFFSET: usize = 8;
/// Length of T10 VENDOR IDENTIFICATION.
pub const VENDOR_LEN: usize = 8;
/// Offset of PRODUCT IDENTIFICATION.
const PRODUCT_OFFSET: usize = 16;
/// Length of PRODUCT IDENTIFICATION.
pub const PRODUCT_LEN: usize = 16;
/// Offset of PRODUCT REVISION LEVEL.
const REVISION_OFFSET: usize = 32;
/// Length of PRODUCT REVISION LEVEL.
pub const REVISION_LEN: usize = 4;
/// Standard INQUIRY data is at least this long on SPC-compliant devices (ADDITIONAL LENGTH ≥ 31).
pub const STANDARD_LEN: usize = 36;

/// Why standard INQUIRY data could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InquiryError {
    /// Fewer than the 5 header bytes.
    #[error("standard inquiry data too short for its header ({len} bytes)")]
    Short {
        /// Bytes received.
        len: usize,
    },
    /// ADDITIONAL LENGTH promises more bytes than were received, within the first 36.
    #[error("standard inquiry data truncated: declares {declared} bytes, {available} present")]
    Truncated {
        /// `ADDITIONAL LENGTH + 5`, capped at 36.
        declared: usize,
        /// Bytes received.
        available: usize,
    },
}

/// The parts of the standard INQUIRY data disklock uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StandardInquiry {
    /// PERIPHERAL QUALIFIER (0: a logical unit is connected).
    pub peripheral_qualifier: u8,
    /// PERIPHERAL DEVICE TYPE (0: direct access block device).
    pub device_type: u8,
    /// VERSION (6: SPC-4, 7: SPC-5).
    pub version: u8,
    /// T10 VENDOR IDENTIFICATION, raw.
    pub vendor: [u8; VENDOR_LEN],
    /// PRODUCT IDENTIFICATION, raw.
    pub product: [u8; PRODUCT_LEN],
    /// PRODUCT REVISION LEVEL, raw.
    pub revision: [u8; REVISION_LEN],
}

impl StandardInquiry {
    /// Parses standard INQUIRY data.
    ///
    /// A device whose ADDITIONAL LENGTH says the data ends before byte 36 (old or minimal
    /// devices) gets the missing identification bytes as zeros, which is what `scsi_id` sees
    /// in its zero-filled buffer. Data cut short of what ADDITIONAL LENGTH declares is an error.
    pub fn parse(buf: &[u8]) -> Result<StandardInquiry, InquiryError> {
        if buf.len() < HEADER_LEN {
            return Err(InquiryError::Short { len: buf.len() });
        }
        let declared = (HEADER_LEN + usize::from(buf[4])).min(STANDARD_LEN);
        if buf.len() < declared {
            return Err(InquiryError::Truncated {
                declared,
                available: buf.len(),
            });
        }
        let mut data = [0u8; STANDARD_LEN];
        data[..declared].copy_from_slice(&buf[..declared]);
        let mut vendor = [0u8; VENDOR_LEN];
        vendor.copy_from_slice(&data[VENDOR_OFFSET..VENDOR_OFFSET + VENDOR_LEN]);
        let mut product = [0u8; PRODUCT_LEN];
        product.copy_from_slice(&data[PRODUCT_OFFSET..PRODUCT_OFFSET + PRODUCT_LEN]);
        let mut revision = [0u8; REVISION_LEN];
        revision.copy_from_slice(&data[REVISION_OFFSET..REVISION_OFFSET + REVISION_LEN]);
        Ok(StandardInquiry {
            peripheral_qualifier: data[0] >> 5,
            device_type: data[0] & 0x1F,
            version: data[2],
            vendor,
            product,
            revision,
        })
    }

    /// The vendor, trimmed of padding (spaces and NULs), non-UTF-8 bytes replaced.
    pub fn vendor_str(&self) -> String {
        trimmed(&self.vendor)
    }

    /// The product (model), trimmed of padding, non-UTF-8 bytes replaced.
    pub fn product_str(&self) -> String {
        trimmed(&self.product)
    }

    /// The revision, trimmed of padding, non-UTF-8 bytes replaced.
    pub fn revision_str(&self) -> String {
        trimmed(&self.revision)
    }
}

/// Lossy text of an ASCII field with surrounding spaces and NULs removed.
fn trimmed(field: &[u8]) -> String {
    String::from_utf8_lossy(field)
        .trim_matches(|c: char| c == ' ' || c == '\0')
        .to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The tgt LUN of test-rig.md §7.4 (`lsscsi`: `disk VMHARN SANLUN 0001`). Reconstructed
    /// from test-rig.md §7.4, to be replaced by a real capture.
    pub(crate) fn tgt_inquiry() -> Vec<u8> {
        let mut buf = vec![0u8; 36];
        buf[0] = 0x00; // direct access block device
        buf[2] = 0x06; // SPC-4
        buf[3] = 0x02;
        buf[4] = 31;
        buf[8..16].copy_from_slice(b"VMHARN  ");
        buf[16..32].copy_from_slice(b"SANLUN          ");
        buf[32..36].copy_from_slice(b"0001");
        buf
    }

    #[test]
    fn parses_tgt_lun() {
        let inq = StandardInquiry::parse(&tgt_inquiry()).expect("parses");
        assert_eq!(inq.device_type, 0);
        assert_eq!(inq.peripheral_qualifier, 0);
        assert_eq!(&inq.vendor, b"VMHARN  ");
        assert_eq!(&inq.product, b"SANLUN          ");
        assert_eq!(inq.vendor_str(), "VMHARN");
        assert_eq!(inq.product_str(), "SANLUN");
        assert_eq!(inq.revision_str(), "0001");
    }

    #[test]
    fn short_by_design_is_zero_filled() {
        let mut buf = tgt_inquiry();
        buf[4] = 15; // data ends after byte 19
        let inq = StandardInquiry::parse(&buf[..20]).expect("parses");
        assert_eq!(&inq.vendor, b"VMHARN  ");
        assert_eq!(&inq.product[..4], b"SANL");
        assert_eq!(&inq.product[4..], &[0u8; 12]);
        assert_eq!(inq.revision, [0; 4]);
    }

    #[test]
    fn truncated_is_an_error() {
        let buf = tgt_inquiry();
        assert_eq!(
            StandardInquiry::parse(&buf[..30]),
            Err(InquiryError::Truncated {
                declared: 36,
                available: 30
            })
        );
        assert_eq!(
            StandardInquiry::parse(&buf[..4]),
            Err(InquiryError::Short { len: 4 })
        );
    }

    proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = StandardInquiry::parse(&buf);
        }
    }
}
