//! LVM identities from device-mapper uuids and `lvs` output: never a panic, and whatever
//! parses prints back to the same DM uuid.
#![no_main]

use disklock_lvm::{LvmDmUuid, parse_lvs_uuid};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(d) = LvmDmUuid::parse(text) {
        assert_eq!(LvmDmUuid::parse(&d.to_string()).as_ref(), Ok(&d));
    }
    if let Ok(u) = parse_lvs_uuid(text) {
        assert_eq!(u.to_string().parse(), Ok(u));
    }
});
