//! Fuzz the lease file body parser: any host sharing the lockspace (NFS) can write a lease
//! file, so its holder records are untrusted bytes. Whatever parses must also print safely.

#![no_main]

use disklock::lockspace::{Holder, parse_holders};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let body = String::from_utf8_lossy(data);
    for h in parse_holders(&body) {
        let line = h.describe();
        assert!(!line.chars().any(char::is_control), "{line:?}");
        // A record parsed from a body parses back from its own line.
        let text = serde_json::to_string(&h).unwrap();
        assert_eq!(parse_holders(&text), vec![h.clone()]);
        let _: Holder = h;
    }
});
