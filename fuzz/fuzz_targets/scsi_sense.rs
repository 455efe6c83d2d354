//! Fuzz the fixed and descriptor sense data decoder.

#![no_main]

use disklock_scsi::Sense;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(sense) = Sense::parse(data) {
        assert!(sense.key.code() < 16);
        let _ = sense.to_string();
    }
});
