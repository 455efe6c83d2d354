//! Fuzz the PERSISTENT RESERVE IN decoders (READ KEYS, READ RESERVATION, REPORT CAPABILITIES,
//! READ FULL STATUS) and the TransportID decoder.

#![no_main]

use disklock_scsi::pr::{self, PrParseError};
use libfuzzer_sys::fuzz_target;

/// A truncation error must ask for more than was given.
fn check_truncation<T>(result: &Result<T, PrParseError>, len: usize) {
    if let Err(PrParseError::Truncated { needed, got }) = result {
        assert_eq!(*got, len);
        assert!(*needed > len);
    }
}

fuzz_target!(|data: &[u8]| {
    let keys = pr::parse_read_keys(data);
    check_truncation(&keys, data.len());
    if let Ok(k) = keys {
        assert!(pr::IN_HEADER_LEN + 8 * k.keys.len() <= data.len());
    }

    let reservation = pr::parse_read_reservation(data);
    check_truncation(&reservation, data.len());
    if let Ok(r) = reservation
        && let Some(h) = r.holder
    {
        let _ = h.kind.to_string();
    }

    let caps = pr::parse_report_capabilities(data);
    check_truncation(&caps, data.len());
    if let Ok(c) = caps {
        assert!(c.types.len() <= 6);
        assert!(c.tmv || c.types.is_empty());
    }

    let status = pr::parse_read_full_status(data);
    check_truncation(&status, data.len());
    if let Ok(s) = status {
        for e in &s.entries {
            assert_eq!(e.holder, e.kind.is_some());
            let _ = e.transport_id.to_string();
        }
    }

    let tid = pr::parse_transport_id(data);
    check_truncation(&tid, data.len());
    if let Ok((id, used)) = tid {
        assert!(used <= data.len());
        let _ = id.to_string();
        // What was decoded encodes to something that decodes to the same value.
        let again = pr::parse_transport_id(&id.to_bytes()).expect("re-encoded id decodes");
        assert_eq!(again.0, id);
    }
});
