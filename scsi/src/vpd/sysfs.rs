//! The kernel's `/sys/block/*/device/wwid` attribute.
//!
//! `sdev_show_wwid` (`drivers/scsi/scsi_sysfs.c`) prints `scsi_vpd_lun_id`
//! (`drivers/scsi/scsi_lib.c`) over the VPD 0x83 page the kernel cached at scan time, plus a
//! newline. `scsi_vpd_lun_id` walks the logical-unit designators (association 0 only) once, in
//! page order, keeping the "best" so far:
//!
//! - SCSI name string (type 8): copied raw (it already reads `naa.…`, `eui.…` or `iqn.…`,
//!   including its NUL padding), preferred over everything when not truncated;
//! - NAA (type 3) of 8 or 16 bytes: `naa.` + lowercase hex; a longer or equally long later one
//!   replaces an earlier one;
//! - EUI-64 (type 2) of 8, 12 or 16 bytes: `eui.` + lowercase hex; an NAA of the same length
//!   is preferred;
//! - T10 vendor ID (type 1): `t10.` + the value with the kernel's `%pE` escaping of
//!   non-printable bytes, only if nothing else was found.
//!
//! The code set is not checked, so an ASCII NAA designator is printed as hex of its ASCII bytes.
//!
//! # Converting to the `scsi_id` form
//!
//! [`SysfsWwid::to_scsi_id`] turns `naa.X` into `3X` and `eui.X` into `2X`. That is the string
//! `scsi_id` prints **only when both pick the same designator**, which holds when the page has
//! one binary NAA designator (or no NAA and one EUI-64) for the logical unit. They differ when:
//! - there are several NAA designators: the kernel takes the longest (the last of equal
//!   length), `scsi_id` takes NAA 6, then NAA 5, then the first other NAA;
//! - a 12- or 16-byte EUI-64 sits beside an 8-byte NAA: the kernel prints the EUI, `scsi_id`
//!   the NAA;
//! - the NAA designator is ASCII: the kernel hex-encodes the characters, `scsi_id` copies them;
//! - the logical unit has a SCSI name string: the kernel prints it, `scsi_id` ignores it.
//!
//! T10 vendor ID and SCSI name string forms have no conversion (`None`): `scsi_id` never uses
//! name strings, and for T10 the kernel's escaping and `scsi_id`'s whitespace folding do not
//! invert. Resolve those devices with [`super::scsi_id_wwid`] over SG_IO instead.

use std::fmt;

/// A parsed `device/wwid` attribute.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum SysfsWwid {
    /// `naa.` + 16 or 32 lowercase hex digits (the digits, without the prefix).
    Naa(String),
    /// `eui.` + 16, 24 or 32 lowercase hex digits (the digits, without the prefix).
    Eui(String),
    /// `t10.` + the kernel-escaped T10 vendor ID designator (the text after the prefix).
    T10(String),
    /// Anything else: a SCSI name string as the device sent it, NUL padding removed
    /// (`iqn.…`, or `naa.`/`eui.` with uppercase digits as SPC writes them).
    Name(String),
}

impl SysfsWwid {
    /// Parses the attribute's content. A trailing newline and NUL padding are removed; `None`
    /// for an empty attribute or one that is not UTF-8.
    pub fn parse(attr: &[u8]) -> Option<SysfsWwid> {
        let text = std::str::from_utf8(attr).ok()?;
        let text = text.trim_end_matches(['\n', '\0']);
        if text.is_empty() {
            return None;
        }
        let lower_hex = |s: &str, lens: &[usize]| {
            lens.contains(&s.len())
                && s.bytes()
                    .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        };
        Some(
            if let Some(h) = text
                .strip_prefix("naa.")
                .filter(|h| lower_hex(h, &[16, 32]))
            {
                SysfsWwid::Naa(h.to_owned())
            } else if let Some(h) = text
                .strip_prefix("eui.")
                .filter(|h| lower_hex(h, &[16, 24, 32]))
            {
                SysfsWwid::Eui(h.to_owned())
            } else if let Some(t) = text.strip_prefix("t10.") {
                SysfsWwid::T10(t.to_owned())
            } else {
                SysfsWwid::Name(text.to_owned())
            },
        )
    }

    /// The `scsi_id` form, where the module documentation says it is well defined (NAA and
    /// EUI-64); `None` for T10 and SCSI name strings.
    pub fn to_scsi_id(&self) -> Option<String> {
        match self {
            SysfsWwid::Naa(h) => Some(format!("3{h}")),
            SysfsWwid::Eui(h) => Some(format!("2{h}")),
            SysfsWwid::T10(_) | SysfsWwid::Name(_) => None,
        }
    }
}

impl fmt::Display for SysfsWwid {
    /// The attribute's text, without the newline.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SysfsWwid::Naa(h) => write!(f, "naa.{h}"),
            SysfsWwid::Eui(h) => write!(f, "eui.{h}"),
            SysfsWwid::T10(t) => write!(f, "t10.{t}"),
            SysfsWwid::Name(n) => f.write_str(n),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn tgt_lun_from_test_rig() {
        // test-rig.md §7.4: sysfs wwid and scsi_id output of the same LUN.
        let w = SysfsWwid::parse(b"naa.6000000000000000000000e000000001\n").expect("parses");
        assert_eq!(w, SysfsWwid::Naa("6000000000000000000000e000000001".into()));
        assert_eq!(
            w.to_scsi_id().as_deref(),
            Some("36000000000000000000000e000000001")
        );
        assert_eq!(w.to_string(), "naa.6000000000000000000000e000000001");
    }

    #[test]
    fn forms() {
        assert_eq!(
            SysfsWwid::parse(b"naa.5000c50012345678").and_then(|w| w.to_scsi_id()),
            Some("35000c50012345678".into())
        );
        assert_eq!(
            SysfsWwid::parse(b"eui.0002c9030005f34e\n").and_then(|w| w.to_scsi_id()),
            Some("20002c9030005f34e".into())
        );
        let t10 = SysfsWwid::parse(b"t10.ATA     QEMU HARDDISK   QM00001\n").expect("parses");
        assert_eq!(
            t10,
            SysfsWwid::T10("ATA     QEMU HARDDISK   QM00001".into())
        );
        assert_eq!(t10.to_scsi_id(), None);
        // A SCSI name string with SPC's uppercase digits and NUL padding.
        let name = SysfsWwid::parse(b"naa.6001405ABCDEF012\0\0\0\0\n").expect("parses");
        assert_eq!(name, SysfsWwid::Name("naa.6001405ABCDEF012".into()));
        assert_eq!(name.to_scsi_id(), None);
        let iqn = SysfsWwid::parse(b"iqn.2003-01.org.linux-iscsi:sn.1234,t,0x1\n");
        assert!(matches!(iqn, Some(SysfsWwid::Name(_))));
        // Wrong length for a kernel NAA: a name string.
        assert!(matches!(
            SysfsWwid::parse(b"naa.600"),
            Some(SysfsWwid::Name(_))
        ));
        assert_eq!(SysfsWwid::parse(b"\n"), None);
        assert_eq!(SysfsWwid::parse(&[0xFF, 0xFE]), None);
    }

    proptest! {
        #[test]
        fn never_panics(buf in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Some(w) = SysfsWwid::parse(&buf) {
                let _ = w.to_scsi_id();
                let _ = w.to_string();
            }
        }
    }
}
