//! Fuzz the Unit Serial Number (VPD 0x80) and Supported Pages (0x00) parsers, the `scsi_id`
//! page 0x80 fallback, standard INQUIRY data and the sysfs `wwid` parser.
//!
//! Input: 8 vendor bytes, 16 model bytes, then the page as a device would return it.

#![no_main]

use disklock_scsi::{StandardInquiry, vpd};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = vpd::unit_serial_number(data);
    let _ = vpd::supported_pages(data);
    let _ = StandardInquiry::parse(data);
    if let Some(w) = vpd::SysfsWwid::parse(data) {
        let _ = w.to_scsi_id();
        let _ = w.to_string();
    }
    let (Some(vendor), Some(model)) = (data.get(..8), data.get(8..24)) else {
        return;
    };
    let vendor: &[u8; 8] = vendor.try_into().expect("8 bytes");
    let model: &[u8; 16] = model.try_into().expect("16 bytes");
    let page = &data[24..];
    let _ = vpd::scsi_id_pages(page, vendor);
    if let Some(wwid) = vpd::scsi_id_wwid(None, Some(page), vendor, model) {
        assert!(wwid.starts_with('S') && wwid.len() <= 255, "{wwid:?}");
    }
});
