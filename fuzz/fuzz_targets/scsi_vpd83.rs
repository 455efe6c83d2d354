//! Fuzz the Device Identification (VPD 0x83) parser and the `scsi_id` WWID emulation.
//!
//! Input: 8 vendor bytes, 16 model bytes, then the page as a device would return it.

#![no_main]

use disklock_scsi::vpd;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(designators) = vpd::device_identification(data) {
        for d in &designators {
            let _ = d.naa_type();
            let _ = d.hex();
        }
    }
    let (Some(vendor), Some(model)) = (data.get(..8), data.get(8..24)) else {
        return;
    };
    let vendor: &[u8; 8] = vendor.try_into().expect("8 bytes");
    let model: &[u8; 16] = model.try_into().expect("16 bytes");
    let page = &data[24..];
    if let Some(wwid) = vpd::scsi_id_wwid(Some(page), None, vendor, model) {
        // scsi_id's output is at most 255 bytes and has no whitespace left in it.
        assert!(!wwid.is_empty() && wwid.len() <= 255, "{wwid:?}");
        assert!(!wwid.bytes().any(|b| b.is_ascii_whitespace()), "{wwid:?}");
    }
});
