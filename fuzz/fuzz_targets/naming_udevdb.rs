//! udev database records: never a panic; by-path names are always single path components.
#![no_main]

use disklock_naming::udevdb::UdevRecord;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let rec = UdevRecord::parse(&text);
    for name in rec.by_path_names() {
        assert!(!name.is_empty() && !name.contains('/') && name != "." && name != "..");
    }
});
