//! The WWID string udev's `scsi_id` prints, computed from INQUIRY bytes.
//!
//! libvirt names SCSI lockspace entries after
//! `/lib/udev/scsi_id --whitelisted --replace-whitespace --device=DEV` (`-g -u -d`), and udev
//! puts the same string in `ID_SERIAL` and `/dev/disk/by-id/scsi-…`. disklock must produce it
//! byte for byte without running the program. This module reimplements its behaviour; the facts
//! below were read from systemd's sources (`src/udev/scsi_id/scsi_id.c`,
//! `src/udev/scsi_id/scsi_serial.c`, `src/udev/scsi_id/scsi.h`, `src/udev/scsi_id/scsi_id.h`,
//! `src/shared/udev-util.c` — `udev_replace_whitespace` and `udev_replace_chars`, formerly
//! `util_replace_*` in `src/libudev/libudev-util.c` — `src/basic/device-nodes.c`
//! `allow_listed_char_for_devnode`, `src/basic/utf8.c`, `src/basic/string-util.h` `WHITESPACE`).
//! This is the code of current systemd (the version with `append_vendor_model` and
//! `log_debug_errno`, as shipped by current distributions). Older releases, whose functions
//! still take a `struct udev *`, differ in two corners: the descriptor walk reads only byte 3
//! of PAGE LENGTH, and the pre-SPC-3 prefix is taken from the first `id_search_list` entry.
//!
//! # What `scsi_id -g -u -d DEV` does
//!
//! 1. Opens DEV `O_RDONLY|O_NONBLOCK|O_CLOEXEC`, sends a standard INQUIRY (allocation length
//!    254, `SCSI_INQ_BUFF_LEN`, into a zeroed 254-byte buffer) and keeps bytes 8..16 (vendor) and
//!    16..32 (model) **raw**, 8 and 16 bytes. `-g` means "whitelisted": no per-device config is
//!    needed (we assume no `/etc/scsi_id.config`, which could change the page per vendor/model).
//! 2. Reads VPD page 0x00. If byte 1 ≠ 0, byte 3 > 254, or (byte 3 > 16 and bytes 8..16 equal
//!    the vendor, compared `strncmp`-style: a sign of a device returning standard INQUIRY data for
//!    every page) it gives up: **no output**, exit 1. Otherwise it tries page 0x83 if listed in
//!    bytes 4..=byte3+3, then page 0x80 if listed. A page INQUIRY that fails with ILLEGAL
//!    REQUEST is treated as returned with byte 1 = 0, i.e. invalid.
//! 3. **Page 0x83** (`do_scsi_page83_inquiry`), again into a zeroed 254-byte buffer:
//!    - byte 1 must be 0x83.
//!    - **Pre-SPC-3 quirk** (EMC Symmetrix): if byte 6 (the reserved byte of the first
//!      descriptor) ≠ 0, the result is `3` + lowercase hex of bytes 4.. for `min(byte 3, 126)`
//!      bytes (byte 3 alone, the low byte of PAGE LENGTH). Nothing else is looked at.
//!    - Otherwise, for each entry of `id_search_list`, in order, walk every descriptor
//!      (`j = 4; j <= PAGE_LENGTH + 3; j += DESIGNATOR_LENGTH + 4`) and take the first match:
//!      target port group (type 5, binary) — never yields an id, only records the group; NAA
//!      with NAA field 6 (IEEE registered extended) binary, then ASCII; NAA 5 (IEEE registered)
//!      binary, ASCII; any NAA binary, ASCII; EUI-64 binary, ASCII; T10 vendor ID binary, ASCII;
//!      vendor specific binary, ASCII. **Priority is the list, then page order.**
//!    - Association must be 0 (logical unit); association 1 (target port) is accepted only for
//!      the target-port-group entry; 2 and 3 are rejected. PIV and protocol id are ignored.
//!    - The NAA field is the top nibble of the designator's first byte, **whatever the code
//!      set**: an ASCII NAA designator `"6…"` (0x36) has "NAA type" 3.
//!    - Code set must be exactly 1 (binary) or 2 (ASCII): **SCSI name strings (type 8, UTF-8),
//!      MD5, UUID, relative port and LU group designators are never used.**
//!    - Length limit: `len` (ASCII) or `2 × len` (binary), + 2, + 24 for vendor specific, must be
//!      ≤ 256 (`MAX_SERIAL_LEN`); a longer designator is skipped and the search goes on.
//!    - Output: one lowercase hex digit for the designator type (`3` NAA, `2` EUI-64, `1` T10,
//!      `0` vendor specific), then for vendor specific the raw 8-byte vendor and 16-byte model,
//!      then the value: binary as lowercase hex (two digits a byte), ASCII **copied raw** (the T10
//!      designator already begins with the vendor). A NUL in an ASCII value ends the string.
//! 4. **Page 0x80 fallback** (`do_scsi_page80_inquiry`), used only when 0x83 gave nothing:
//!    byte 1 must be 0x80; with `n` = byte 3 (low byte of PAGE LENGTH), `1 + 24 + n` must be
//!    ≤ 256. The result is `S` + raw vendor (8) + raw model (16) + the `n` serial bytes.
//! 5. Vendor and model must contain no NUL (`strnlen` = 8 and 16) for the vendor-specific and
//!    0x80 forms. A quirk we reproduce: the type digit (`0`) or `S` is written **before** that
//!    check, so on failure a lone `0` or `S` is left behind and printed if nothing else succeeds.
//! 6. `--replace-whitespace` (`udev_replace_whitespace(serial, out, 255)`): skip leading bytes in
//!    `" \t\n\r"`; then every run of `isspace()` bytes (C locale: space, `\t \n \v \f \r`) becomes
//!    one `_` if something non-space follows, and is dropped at the end; at most 255 input bytes
//!    are read and 255 written. Then, always (`udev_replace_chars(out, NULL)`): bytes in
//!    `0-9 A-Z a-z # + - . : = @ _` stay, a `\` followed by `x` stays (both bytes), a valid UTF-8
//!    multibyte sequence stays (not surrogates, not > U+10FFFF, not overlong, and not the
//!    noncharacters U+FDD0..U+FDEF or U+xFFFE/U+xFFFF), and every other byte becomes `_`.
//!
//! For the tgt LUN of test-rig.md §7.4 this gives `36000000000000000000000e000000001`.
//!
//! # Where we differ
//!
//! - Where `scsi_id` would read past its 254-byte buffer (a descriptor walk that runs beyond
//!   byte 254; undefined behaviour in C), we stop walking instead.
//! - [`crate::device::Device::scsi_id_wwid`] reports transport errors and non-ILLEGAL-REQUEST
//!   failures instead of falling back to the next page as `scsi_id` would, so a transient error
//!   cannot silently turn a NAA WWID into an `S…` one.
//! - `scsi_id` never actually retries a failed INQUIRY (its `scsi_dump` always returns -1, so
//!   the `retry = 3` loop does not run); a UNIT ATTENTION makes it skip that page. `Device`
//!   retries unit attentions, so a reset on the LUN does not change the WWID.
//! - SG_IO v4 (bsg) vs v3 and the retry of the open on EBUSY do not change the output.

use crate::inquiry::{PRODUCT_LEN, VENDOR_LEN};

/// The allocation length and buffer size `scsi_id` uses for every INQUIRY (`SCSI_INQ_BUFF_LEN`).
/// [`scsi_id_wwid`] looks only at this many bytes of each page, zero-filling shorter replies.
pub const SCSI_ID_INQUIRY_LEN: usize = 254;

/// `MAX_SERIAL_LEN`: size of `scsi_id`'s serial buffer, NUL included.
const MAX_SERIAL_LEN: usize = 256;
/// `sizeof(serial_str) - 1`: the `len` given to `udev_replace_whitespace`.
const REPLACE_LEN: usize = MAX_SERIAL_LEN - 1;

/// Designator type codes that appear in `id_search_list`.
const TYPE_VENDOR_SPECIFIC: u8 = 0;
const TYPE_T10_VENDOR: u8 = 1;
const TYPE_EUI_64: u8 = 2;
const TYPE_NAA: u8 = 3;
const TYPE_TARGET_PORT_GROUP: u8 = 5;
/// Code sets `scsi_id` accepts.
const BINARY: u8 = 1;
const ASCII: u8 = 2;

/// One entry of `id_search_list`.
struct Search {
    id_type: u8,
    /// Required NAA field, or `None` for "don't care".
    naa: Option<u8>,
    code_set: u8,
}

const fn search(id_type: u8, naa: Option<u8>, code_set: u8) -> Search {
    Search {
        id_type,
        naa,
        code_set,
    }
}

/// `id_search_list` from `scsi_serial.c`, in priority order.
const SEARCH_ORDER: [Search; 13] = [
    search(TYPE_TARGET_PORT_GROUP, None, BINARY),
    search(TYPE_NAA, Some(6), BINARY),
    search(TYPE_NAA, Some(6), ASCII),
    search(TYPE_NAA, Some(5), BINARY),
    search(TYPE_NAA, Some(5), ASCII),
    search(TYPE_NAA, None, BINARY),
    search(TYPE_NAA, None, ASCII),
    search(TYPE_EUI_64, None, BINARY),
    search(TYPE_EUI_64, None, ASCII),
    search(TYPE_T10_VENDOR, None, BINARY),
    search(TYPE_T10_VENDOR, None, ASCII),
    search(TYPE_VENDOR_SPECIFIC, None, BINARY),
    search(TYPE_VENDOR_SPECIFIC, None, ASCII),
];

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

/// A reply as `scsi_id` holds it: the first 254 bytes, zero-filled.
fn c_buffer(reply: &[u8]) -> [u8; SCSI_ID_INQUIRY_LEN] {
    let mut buf = [0u8; SCSI_ID_INQUIRY_LEN];
    let n = reply.len().min(SCSI_ID_INQUIRY_LEN);
    buf[..n].copy_from_slice(&reply[..n]);
    buf
}

/// Which VPD pages `scsi_id` will read, from its reading of page 0x00.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScsiIdPages {
    /// Page 0x83 is listed: `scsi_id` tries it first.
    pub device_id: bool,
    /// Page 0x80 is listed: `scsi_id` falls back to it.
    pub unit_serial: bool,
}

/// Interprets a Supported VPD Pages reply (page 0x00) as `scsi_id` does.
///
/// `None` means `scsi_id` gives up on the device (prints nothing): byte 1 ≠ 0, byte 3 > 254, or
/// the page looks like standard INQUIRY data carrying `vendor`. Pass an empty slice for a page 0
/// INQUIRY that ended in ILLEGAL REQUEST (that yields no pages).
pub fn scsi_id_pages(vpd00: &[u8], vendor: &[u8; VENDOR_LEN]) -> Option<ScsiIdPages> {
    let page = c_buffer(vpd00);
    if page[1] != 0 {
        return None;
    }
    let count = usize::from(page[3]);
    if count > SCSI_ID_INQUIRY_LEN {
        return None;
    }
    if count > PRODUCT_LEN && strncmp_eq(&page[8..16], vendor) {
        return None;
    }
    // Indices 4..=count+3; past byte 254 scsi_id reads beyond its buffer, we read nothing.
    let listed = page
        .get(4..(count + 4).min(SCSI_ID_INQUIRY_LEN))
        .unwrap_or(&[]);
    Some(ScsiIdPages {
        device_id: listed.contains(&crate::vpd::PAGE_DEVICE_ID),
        unit_serial: listed.contains(&crate::vpd::PAGE_UNIT_SERIAL),
    })
}

/// `strncmp(a, b, n) == 0` for two byte arrays of length `n`: equal up to the first NUL.
fn strncmp_eq(a: &[u8], b: &[u8]) -> bool {
    for (&x, &y) in a.iter().zip(b) {
        if x != y {
            return false;
        }
        if x == 0 {
            return true;
        }
    }
    true
}

/// `scsi_id`'s serial buffer: 256 zeroed bytes holding a C string.
struct Serial([u8; MAX_SERIAL_LEN]);

impl Serial {
    /// The C string: bytes up to the first NUL (all 256 if there is none).
    fn c_str(&self) -> &[u8] {
        let end = self
            .0
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(MAX_SERIAL_LEN);
        &self.0[..end]
    }
}

/// Vendor (8) and model (16) back to back, if both are free of NUL bytes
/// (`append_vendor_model`'s `strnlen` checks).
fn vendor_model(vendor: &[u8; VENDOR_LEN], model: &[u8; PRODUCT_LEN]) -> Option<[u8; 24]> {
    if vendor.contains(&0) || model.contains(&0) {
        return None;
    }
    let mut out = [0u8; VENDOR_LEN + PRODUCT_LEN];
    out[..VENDOR_LEN].copy_from_slice(vendor);
    out[VENDOR_LEN..].copy_from_slice(model);
    Some(out)
}

/// The outcome of checking one descriptor against one search entry.
enum Check {
    /// The serial was filled in.
    Found,
    /// Not this one; go on.
    Skip,
    /// The walk would leave `scsi_id`'s buffer; stop walking for this entry.
    OutOfBuffer,
}

/// `check_fill_0x83_id` for the descriptor at offset `j` (its 4-byte header is in the buffer).
fn check_descriptor(
    page: &[u8; SCSI_ID_INQUIRY_LEN],
    j: usize,
    want: &Search,
    vm: Option<&[u8; 24]>,
    serial: &mut Serial,
) -> Check {
    let (b0, b1, len) = (page[j], page[j + 1], usize::from(page[j + 3]));
    match b1 & 0x30 {
        0x00 => {}
        0x10 if want.id_type == TYPE_TARGET_PORT_GROUP => {}
        _ => return Check::Skip,
    }
    if b1 & 0x0F != want.id_type {
        return Check::Skip;
    }
    if let Some(naa) = want.naa {
        match page.get(j + 4) {
            None => return Check::OutOfBuffer,
            Some(first) if first >> 4 != naa => return Check::Skip,
            Some(_) => {}
        }
    }
    if b0 & 0x0F != want.code_set {
        return Check::Skip;
    }
    let mut needed = if want.code_set == ASCII { len } else { 2 * len } + 2;
    if want.id_type == TYPE_VENDOR_SPECIFIC {
        needed += VENDOR_LEN + PRODUCT_LEN;
    }
    if needed > MAX_SERIAL_LEN {
        return Check::Skip;
    }
    if want.id_type == TYPE_TARGET_PORT_GROUP {
        // scsi_id records the group number for ID_TARGET_PORT and keeps searching.
        return Check::Skip;
    }
    let Some(value) = page.get(j + 4..j + 4 + len) else {
        return Check::OutOfBuffer;
    };
    serial.0[0] = HEX_DIGITS[usize::from(want.id_type)];
    let mut at = 1;
    if want.id_type == TYPE_VENDOR_SPECIFIC {
        let Some(vm) = vm else {
            return Check::Skip; // leaves the `0` behind, as scsi_id does
        };
        serial.0[1..1 + vm.len()].copy_from_slice(vm);
        at += vm.len();
    }
    // `needed` ≤ 256 guarantees the writes below stay inside the buffer with a NUL after them.
    if want.code_set == ASCII {
        serial.0[at..at + len].copy_from_slice(value);
    } else {
        for (i, &b) in value.iter().enumerate() {
            serial.0[at + 2 * i] = HEX_DIGITS[usize::from(b >> 4)];
            serial.0[at + 2 * i + 1] = HEX_DIGITS[usize::from(b & 0x0F)];
        }
    }
    Check::Found
}

/// `do_scsi_page83_inquiry` on a received page. `true` when the serial was filled in.
fn from_device_id(reply: &[u8], vm: Option<&[u8; 24]>, serial: &mut Serial) -> bool {
    let page = c_buffer(reply);
    if page[1] != crate::vpd::PAGE_DEVICE_ID {
        return false;
    }
    if page[6] != 0 {
        // SCSI-2 style page: hex of the bytes after the header, low length byte only, at most
        // 126 bytes (the `j < max_len - 3` bound).
        serial.0[0] = HEX_DIGITS[usize::from(TYPE_NAA)];
        let n = usize::from(page[3]).min(126);
        for (i, &b) in page[4..4 + n].iter().enumerate() {
            serial.0[1 + 2 * i] = HEX_DIGITS[usize::from(b >> 4)];
            serial.0[2 + 2 * i] = HEX_DIGITS[usize::from(b & 0x0F)];
        }
        return true;
    }
    let last = usize::from(u16::from_be_bytes([page[2], page[3]])) + 3;
    for want in &SEARCH_ORDER {
        let mut j = 4;
        while j <= last && j + 4 <= SCSI_ID_INQUIRY_LEN {
            match check_descriptor(&page, j, want, vm, serial) {
                Check::Found => return true,
                Check::Skip => {}
                Check::OutOfBuffer => break,
            }
            j += usize::from(page[j + 3]) + 4;
        }
    }
    false
}

/// `do_scsi_page80_inquiry` on a received page. `true` when the serial was filled in.
fn from_unit_serial(reply: &[u8], vm: Option<&[u8; 24]>, serial: &mut Serial) -> bool {
    let page = c_buffer(reply);
    if page[1] != crate::vpd::PAGE_UNIT_SERIAL {
        return false;
    }
    let len = usize::from(page[3]);
    if 1 + VENDOR_LEN + PRODUCT_LEN + len > MAX_SERIAL_LEN {
        return false;
    }
    serial.0[0] = b'S';
    let Some(vm) = vm else {
        return false; // leaves the `S` behind, as scsi_id does
    };
    serial.0[1..25].copy_from_slice(vm);
    serial.0[25..25 + len].copy_from_slice(&page[4..4 + len]);
    true
}

/// The string `scsi_id --whitelisted --replace-whitespace --device=DEV` prints for a device,
/// without the trailing newline; `None` where it prints nothing.
///
/// - `vpd83`: the Device Identification reply, if [`scsi_id_pages`] listed it and the INQUIRY
///   did not end in ILLEGAL REQUEST. Only its first 254 bytes matter.
/// - `vpd80`: likewise for the Unit Serial Number page.
/// - `vendor`, `model`: bytes 8..16 and 16..32 of the standard INQUIRY data, raw
///   ([`crate::inquiry::StandardInquiry::vendor`] and `product`).
///
/// See the module documentation for the rules. Never panics.
pub fn scsi_id_wwid(
    vpd83: Option<&[u8]>,
    vpd80: Option<&[u8]>,
    vendor: &[u8; VENDOR_LEN],
    model: &[u8; PRODUCT_LEN],
) -> Option<String> {
    let vm = vendor_model(vendor, model);
    let mut serial = Serial([0; MAX_SERIAL_LEN]);
    let from_83 = vpd83.is_some_and(|p| from_device_id(p, vm.as_ref(), &mut serial));
    if !from_83 && let Some(p) = vpd80 {
        from_unit_serial(p, vm.as_ref(), &mut serial);
    }
    // What counts is what the buffer holds: a failed attempt may have left a lone `0` or `S`.
    let raw = serial.c_str();
    if raw.is_empty() {
        return None;
    }
    Some(replace_chars(&replace_whitespace(raw, REPLACE_LEN)))
}

/// The WWID when page 0x83 alone yields one (no fallback, no leftover `0`): lets
/// [`crate::Device`] skip reading page 0x80 when `scsi_id`'s answer is already known.
pub(crate) fn scsi_id_from_device_id(
    vpd83: &[u8],
    vendor: &[u8; VENDOR_LEN],
    model: &[u8; PRODUCT_LEN],
) -> Option<String> {
    let vm = vendor_model(vendor, model);
    let mut serial = Serial([0; MAX_SERIAL_LEN]);
    if !from_device_id(vpd83, vm.as_ref(), &mut serial) {
        return None;
    }
    Some(replace_chars(&replace_whitespace(
        serial.c_str(),
        REPLACE_LEN,
    )))
}

/// C-locale `isspace`.
fn is_c_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// `udev_replace_whitespace(str, to, len)`: trims, and turns each inner run of whitespace
/// into one `_`.
fn replace_whitespace(s: &[u8], len: usize) -> Vec<u8> {
    let mut i = s
        .iter()
        .position(|b| !matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        .unwrap_or(s.len());
    let mut out = Vec::with_capacity(len.min(s.len()));
    let mut pending_space = false;
    while out.len() < len && i < len && i < s.len() {
        let c = s[i];
        i += 1;
        if is_c_space(c) {
            pending_space = true;
            continue;
        }
        if pending_space {
            if out.len() + 1 >= len {
                break;
            }
            out.push(b'_');
            pending_space = false;
        }
        out.push(c);
    }
    out
}

/// `allow_listed_char_for_devnode(c, NULL)`.
fn devnode_safe(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"#+-.:=@_".contains(&b)
}

/// The length of the valid UTF-8 multibyte sequence at the start of `s` by systemd's rules
/// (`utf8_encoded_valid_unichar`), decoded; `None` for ASCII or anything invalid.
fn multibyte_char(s: &[u8]) -> Option<(char, usize)> {
    let first = *s.first()?;
    let len = match first {
        0xC0..=0xDF => 2,
        0xE0..=0xEF => 3,
        0xF0..=0xF7 => 4,
        _ => return None, // ASCII, stray continuation, or 5/6-byte forms (always out of range)
    };
    let seq = s.get(..len)?;
    // std's decoder rejects overlong forms, surrogates and values past U+10FFFF, like systemd.
    let c = std::str::from_utf8(seq).ok()?.chars().next()?;
    let u = u32::from(c);
    if (0xFDD0..=0xFDEF).contains(&u) || u & 0xFFFE == 0xFFFE {
        return None;
    }
    Some((c, len))
}

/// `udev_replace_chars(str, NULL)`: everything outside the allowed set becomes `_`.
fn replace_chars(s: &[u8]) -> String {
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if devnode_safe(b) {
            out.push(char::from(b));
            i += 1;
        } else if b == b'\\' && s.get(i + 1) == Some(&b'x') {
            out.push_str("\\x");
            i += 2;
        } else if let Some((c, len)) = multibyte_char(&s[i..]) {
            out.push(c);
            i += len;
        } else {
            out.push('_');
            i += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vpd::build::*;
    use crate::vpd::{Association, CodeSet, Designator, DesignatorType, PAGE_UNIT_SERIAL};
    use proptest::prelude::*;

    const VENDOR: &[u8; 8] = b"VMHARN  ";
    const MODEL: &[u8; 16] = b"SANLUN          ";

    fn wwid(p83: &[u8]) -> Option<String> {
        scsi_id_wwid(Some(p83), None, VENDOR, MODEL)
    }

    fn naa6() -> Vec<u8> {
        hex::decode("6000000000000000000000e000000001").expect("hex")
    }

    #[test]
    fn tgt_lun_from_test_rig() {
        // test-rig.md §7.4: `scsi_id -g -u -d /dev/sda` printed this.
        assert_eq!(
            scsi_id_wwid(Some(&tgt_page83()), Some(&tgt_page80()), VENDOR, MODEL).as_deref(),
            Some("36000000000000000000000e000000001")
        );
    }

    #[test]
    fn naa_priority_is_list_order_not_page_order() {
        let naa3 = hex::decode("3000000100000001").expect("hex");
        let naa5 = hex::decode("5000c50012345678").expect("hex");
        let n6 = naa6();
        let p = page83(&[
            lun(CodeSet::Binary, DesignatorType::Naa, &naa3),
            lun(CodeSet::Binary, DesignatorType::Naa, &naa5),
            lun(CodeSet::Binary, DesignatorType::Naa, &n6),
        ]);
        assert_eq!(
            wwid(&p).as_deref(),
            Some("36000000000000000000000e000000001")
        );
        let p = page83(&[
            lun(CodeSet::Binary, DesignatorType::Naa, &naa3),
            lun(CodeSet::Binary, DesignatorType::Naa, &naa5),
        ]);
        assert_eq!(wwid(&p).as_deref(), Some("35000c50012345678"));
        // Two "other" NAAs: the first in page order wins.
        let naa2 = hex::decode("2000001122334455").expect("hex");
        let p = page83(&[
            lun(CodeSet::Binary, DesignatorType::Naa, &naa2),
            lun(CodeSet::Binary, DesignatorType::Naa, &naa3),
        ]);
        assert_eq!(wwid(&p).as_deref(), Some("32000001122334455"));
    }

    #[test]
    fn eui64() {
        let eui = hex::decode("0002c9030005f34e").expect("hex");
        let t10 = b"ATA     SOMEDISK";
        let p = page83(&[
            lun(CodeSet::Ascii, DesignatorType::T10VendorId, t10),
            lun(CodeSet::Binary, DesignatorType::Eui64, &eui),
        ]);
        assert_eq!(wwid(&p).as_deref(), Some("20002c9030005f34e"));
        // EUI-64 loses to any NAA.
        let naa3 = hex::decode("3000000100000001").expect("hex");
        let p = page83(&[
            lun(CodeSet::Binary, DesignatorType::Eui64, &eui),
            lun(CodeSet::Binary, DesignatorType::Naa, &naa3),
        ]);
        assert_eq!(wwid(&p).as_deref(), Some("33000000100000001"));
    }

    #[test]
    fn t10_only_keeps_raw_text_then_replaces_whitespace() {
        let t10 = b"LIO-ORG block0          7f3a1c9e-17";
        let p = page83(&[lun(CodeSet::Ascii, DesignatorType::T10VendorId, t10)]);
        assert_eq!(wwid(&p).as_deref(), Some("1LIO-ORG_block0_7f3a1c9e-17"));
        // Trailing padding disappears, a NUL ends the value.
        let t10 = b"QEMU    QEMU HARDDISK   \0junk   ";
        let p = page83(&[lun(CodeSet::Ascii, DesignatorType::T10VendorId, t10)]);
        assert_eq!(wwid(&p).as_deref(), Some("1QEMU_QEMU_HARDDISK"));
        // A binary T10 designator is printed in hex.
        let p = page83(&[lun(CodeSet::Binary, DesignatorType::T10VendorId, b"AB")]);
        assert_eq!(wwid(&p).as_deref(), Some("14142"));
    }

    #[test]
    fn vendor_specific_only_gets_vendor_and_model() {
        let p = page83(&[lun(
            CodeSet::Binary,
            DesignatorType::VendorSpecific,
            &[0xde, 0xad],
        )]);
        assert_eq!(wwid(&p).as_deref(), Some("0VMHARN_SANLUN_dead"));
        let p = page83(&[lun(
            CodeSet::Ascii,
            DesignatorType::VendorSpecific,
            b"SER 1",
        )]);
        assert_eq!(wwid(&p).as_deref(), Some("0VMHARN_SANLUN_SER_1"));
        // A NUL in the model: the `0` is left behind and printed.
        let bad_model = b"SANLUN\0         ";
        assert_eq!(
            scsi_id_wwid(Some(&p), None, VENDOR, bad_model).as_deref(),
            Some("0")
        );
        // ... unless page 0x80 then succeeds? It cannot: it needs the same vendor and model,
        // and leaves `S` instead.
        assert_eq!(
            scsi_id_wwid(Some(&p), Some(&tgt_page80()), VENDOR, bad_model).as_deref(),
            Some("S")
        );
    }

    #[test]
    fn scsi_name_string_is_never_used() {
        let name = b"naa.6001405ABCDEF0123456789ABCDEF01\0";
        let p = page83(&[lun(CodeSet::Utf8, DesignatorType::ScsiNameString, name)]);
        assert_eq!(wwid(&p), None);
        // ... and falls through to page 0x80.
        assert_eq!(
            scsi_id_wwid(Some(&p), Some(&tgt_page80()), VENDOR, MODEL).as_deref(),
            Some("SVMHARN_SANLUN_beaf10")
        );
    }

    #[test]
    fn target_port_designators_are_skipped() {
        let port_naa = hex::decode("6001405000000000000000000000aaaa").expect("hex");
        let lun_naa = hex::decode("3000000100000001").expect("hex");
        let port = Designator {
            code_set: CodeSet::Binary,
            piv: true,
            protocol_id: 5,
            association: Association::TargetPort,
            designator_type: DesignatorType::Naa,
            value: &port_naa,
        };
        let device = Designator {
            association: Association::TargetDevice,
            ..port
        };
        let tpg = Designator {
            code_set: CodeSet::Binary,
            piv: true,
            protocol_id: 5,
            association: Association::TargetPort,
            designator_type: DesignatorType::TargetPortGroup,
            value: &[0, 0, 0, 1],
        };
        let rel = Designator {
            designator_type: DesignatorType::RelativeTargetPort,
            ..tpg
        };
        let p = page83(&[
            port,
            device,
            tpg,
            rel,
            lun(CodeSet::Binary, DesignatorType::Naa, &lun_naa),
        ]);
        assert_eq!(wwid(&p).as_deref(), Some("33000000100000001"));
        // With only port designators there is no WWID from page 0x83.
        assert_eq!(wwid(&page83(&[port, device, tpg, rel])), None);
    }

    #[test]
    fn ascii_naa() {
        // ASCII NAA: the "NAA type" is the top nibble of the first character ('6' = 0x36 → 3),
        // so it only matches the "any NAA" entries, after every binary NAA.
        let naa_text = b"600a0b80001234560000abcd00000001";
        let naa3 = hex::decode("3000000100000001").expect("hex");
        let p = page83(&[
            lun(CodeSet::Ascii, DesignatorType::Naa, naa_text),
            lun(CodeSet::Binary, DesignatorType::Naa, &naa3),
        ]);
        assert_eq!(wwid(&p).as_deref(), Some("33000000100000001"));
        let p = page83(&[lun(CodeSet::Ascii, DesignatorType::Naa, naa_text)]);
        assert_eq!(
            wwid(&p).as_deref(),
            Some("3600a0b80001234560000abcd00000001")
        );
        // A lowercase letter first (0x6x) would pass as "NAA 6 ASCII", ahead of binary NAA 5.
        let naa5 = hex::decode("5000c50012345678").expect("hex");
        let p = page83(&[
            lun(CodeSet::Binary, DesignatorType::Naa, &naa5),
            lun(CodeSet::Ascii, DesignatorType::Naa, b"abc"),
        ]);
        assert_eq!(wwid(&p).as_deref(), Some("3abc"));
    }

    #[test]
    fn unit_serial_fallback() {
        let p80 = tgt_page80();
        assert_eq!(
            scsi_id_wwid(None, Some(&p80), VENDOR, MODEL).as_deref(),
            Some("SVMHARN_SANLUN_beaf10")
        );
        // A page 0x83 with nothing usable falls back to 0x80.
        assert_eq!(
            scsi_id_wwid(Some(&page83(&[])), Some(&p80), VENDOR, MODEL).as_deref(),
            Some("SVMHARN_SANLUN_beaf10")
        );
        // Too long: 1 + 24 + 232 > 256.
        let long = page(PAGE_UNIT_SERIAL, &[b'A'; 232]);
        assert_eq!(scsi_id_wwid(None, Some(&long), VENDOR, MODEL), None);
        let ok = page(PAGE_UNIT_SERIAL, &[b'A'; 231]);
        let out = scsi_id_wwid(None, Some(&ok), VENDOR, MODEL).expect("fits");
        // 256 bytes with no NUL; replace_whitespace reads 255 of them.
        assert_eq!(out.len(), 1 + 6 + 1 + 6 + 1 + 230);
        assert!(out.starts_with("SVMHARN_SANLUN_AAA"));
        // Wrong page code.
        let wrong = page(0x81, b"x");
        assert_eq!(scsi_id_wwid(None, Some(&wrong), VENDOR, MODEL), None);
    }

    #[test]
    fn length_limits_skip_long_designators() {
        // Binary: 2 * 127 + 2 = 256 fits, 128 does not.
        let v127 = [0x11u8; 127];
        let v128 = [0x22u8; 128];
        let p = page83(&[lun(CodeSet::Binary, DesignatorType::Eui64, &v127)]);
        assert_eq!(wwid(&p).map(|s| s.len()), Some(255));
        let p = page83(&[
            lun(CodeSet::Binary, DesignatorType::Eui64, &v128),
            lun(CodeSet::Ascii, DesignatorType::T10VendorId, b"X"),
        ]);
        assert_eq!(wwid(&p).as_deref(), Some("1X"));
    }

    #[test]
    fn pre_spc3_page() {
        // Byte 6 non-zero: hex of the bytes after the header, prefixed `3`.
        let body = hex::decode("6006048000028460").expect("hex");
        let p = page(0x83, &body);
        assert_eq!(wwid(&p).as_deref(), Some("36006048000028460"));
        // Only the low byte of PAGE LENGTH counts, and at most 126 bytes.
        let mut long = page(0x83, &[0x60; 200]);
        long[2] = 0x01;
        assert_eq!(wwid(&long).map(|s| s.len()), Some(1 + 2 * 126));
    }

    #[test]
    fn wrong_page_truncated_and_garbled() {
        assert_eq!(wwid(&[]), None);
        assert_eq!(wwid(&page(0x80, &naa6())), None);
        // Truncated tgt page: the zero fill means the NAA 6 descriptor's tail reads as zeros,
        // exactly as in scsi_id's zeroed buffer.
        let full = tgt_page83();
        for cut in 0..full.len() {
            let _ = wwid(&full[..cut]);
        }
        // PAGE LENGTH far past the buffer: the walk stops at byte 254.
        let mut p = tgt_page83();
        p[2] = 0xFF;
        assert_eq!(
            wwid(&p).as_deref(),
            Some("36000000000000000000000e000000001")
        );
    }

    #[test]
    fn supported_pages_reading() {
        let p0 = page(0x00, &[0x00, 0x80, 0x83]);
        assert_eq!(
            scsi_id_pages(&p0, VENDOR),
            Some(ScsiIdPages {
                device_id: true,
                unit_serial: true
            })
        );
        let p0 = page(0x00, &[0x00, 0x80]);
        assert_eq!(
            scsi_id_pages(&p0, VENDOR),
            Some(ScsiIdPages {
                device_id: false,
                unit_serial: true
            })
        );
        assert_eq!(scsi_id_pages(&page(0x80, &[0x83]), VENDOR), None);
        assert_eq!(
            scsi_id_pages(&[], VENDOR),
            Some(ScsiIdPages {
                device_id: false,
                unit_serial: false
            })
        );
        // A device answering every page with its standard INQUIRY data.
        let mut std = vec![0u8; 36];
        std[3] = 0x12; // HISUP | response data format 2: read as a page count of 18
        std[8..16].copy_from_slice(VENDOR);
        assert_eq!(scsi_id_pages(&std, VENDOR), None);
    }

    #[test]
    fn whitespace_rules() {
        let f = |s: &[u8]| replace_chars(&replace_whitespace(s, REPLACE_LEN));
        assert_eq!(f(b"  a  b\t\tc  "), "a_b_c");
        assert_eq!(f(b"a \n\r b"), "a_b");
        // \v and \f are not skipped as leading whitespace but do count as spaces.
        assert_eq!(f(b"\x0ba"), "_a");
        assert_eq!(f(b" \x0c a"), "_a");
        assert_eq!(f(b"a/b,c*d"), "a_b_c_d");
        assert_eq!(f(b"a\\xb\\c"), "a\\xb_c");
        assert_eq!(f("né".as_bytes()), "né");
        assert_eq!(f(&[b'a', 0xC3]), "a_");
        assert_eq!(f(&[0xED, 0xA0, 0x80]), "___"); // surrogate
        assert_eq!(f("\u{FDD0}".as_bytes()), "___"); // noncharacter
        assert_eq!(f("\u{1FFFF}".as_bytes()), "____");
        assert_eq!(f(&[0xC0, 0x80]), "__"); // overlong NUL
        assert_eq!(f("\u{10348}".as_bytes()), "\u{10348}");
    }

    #[test]
    fn whitespace_length_bound() {
        // The underscore is dropped if only one output byte is left.
        let mut s = vec![b'a'; 253];
        s.extend_from_slice(b" b");
        assert_eq!(replace_whitespace(&s, 255).len(), 255);
        let mut s = vec![b'a'; 254];
        s.extend_from_slice(b" b");
        let out = replace_whitespace(&s, 255);
        assert_eq!(out, vec![b'a'; 254]);
    }

    fn arb_lower_priority() -> impl Strategy<Value = (u8, u8, Vec<u8>)> {
        // Designators that can never beat a binary NAA 6 on the logical unit: other types,
        // or anything on a port/device association.
        prop_oneof![
            (
                Just(0u8),
                prop_oneof![Just(0u8), Just(1), Just(2), Just(4), Just(5), Just(8)],
                proptest::collection::vec(any::<u8>(), 0..30)
            ),
            (
                1u8..3,
                0u8..16,
                proptest::collection::vec(any::<u8>(), 0..30)
            ),
        ]
    }

    proptest! {
        #[test]
        fn never_panics(
            p83 in proptest::collection::vec(any::<u8>(), 0..300),
            p80 in proptest::collection::vec(any::<u8>(), 0..300),
            vendor in any::<[u8; 8]>(),
            model in any::<[u8; 16]>(),
        ) {
            let _ = scsi_id_wwid(Some(&p83), Some(&p80), &vendor, &model);
            let _ = scsi_id_pages(&p83, &vendor);
        }

        #[test]
        fn never_panics_on_plausible_pages(
            len in 0u16..400,
            body in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            let mut p = vec![0, 0x83];
            p.extend_from_slice(&len.to_be_bytes());
            p.push(body.first().copied().unwrap_or(0));
            p.push(body.get(1).copied().unwrap_or(0));
            p.push(0); // keep byte 6 zero: the SPC-3 path
            p.extend_from_slice(&body);
            let _ = wwid(&p);
        }

        #[test]
        fn stable_under_lower_priority_designators(
            extra in proptest::collection::vec(arb_lower_priority(), 0..5),
        ) {
            let n6 = naa6();
            let mut ds = vec![lun(CodeSet::Binary, DesignatorType::Naa, &n6)];
            let extras: Vec<Designator<'_>> = extra
                .iter()
                .map(|(assoc, ty, value)| Designator {
                    code_set: CodeSet::from_nibble(if value.len() % 2 == 0 { 1 } else { 2 }),
                    piv: false,
                    protocol_id: 0,
                    association: Association::from_bits(*assoc),
                    designator_type: DesignatorType::from_nibble(*ty),
                    value,
                })
                .collect();
            ds.extend(extras.iter().copied());
            let p = page83(&ds);
            prop_assume!(p.len() <= SCSI_ID_INQUIRY_LEN);
            prop_assert_eq!(wwid(&p), Some("36000000000000000000000e000000001".to_owned()));
            // ... and in front of it, too.
            let mut front = extras.clone();
            front.push(ds[0]);
            let p = page83(&front);
            prop_assume!(p.len() <= SCSI_ID_INQUIRY_LEN);
            prop_assert_eq!(wwid(&p), Some("36000000000000000000000e000000001".to_owned()));
        }

        #[test]
        fn two_step_device_flow_agrees(
            p83 in proptest::collection::vec(any::<u8>(), 0..120),
            vendor in any::<[u8; 8]>(),
            model in any::<[u8; 16]>(),
        ) {
            // Device::scsi_id_wwid skips page 0x80 when page 0x83 alone answers.
            if let Some(w) = scsi_id_from_device_id(&p83, &vendor, &model) {
                let p80 = tgt_page80();
                prop_assert_eq!(
                    scsi_id_wwid(Some(&p83), Some(&p80), &vendor, &model),
                    Some(w)
                );
            }
        }

        #[test]
        fn output_is_devnode_safe(
            p83 in proptest::collection::vec(any::<u8>(), 0..300),
            vendor in any::<[u8; 8]>(),
            model in any::<[u8; 16]>(),
        ) {
            if let Some(s) = scsi_id_wwid(Some(&p83), None, &vendor, &model) {
                prop_assert!(!s.is_empty() && s.len() <= 255);
                prop_assert!(!s.contains(' '));
            }
        }
    }
}
