//! Fuzz the daemon's side of the socket: bytes from any local client are framed (NUL
//! terminated, bounded) and decoded into a request or the failure to reply with.

#![no_main]

use disklock::daemon::protocol::{Framer, Rejected, Request, encode_failure};
use libfuzzer_sys::fuzz_target;

/// The daemon's message limit is far larger; a small one also exercises TooLarge.
const LIMIT: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut framer = Framer::new(LIMIT);
    // Arrives in two pieces, as a slow client would send it.
    let (a, b) = data.split_at(data.len() / 2);
    framer.push(a);
    framer.push(b);
    while let Ok(Some(msg)) = framer.next_message() {
        assert!(msg.len() <= LIMIT && !msg.contains(&0));
        match Request::decode(&msg) {
            Ok((req, _oneway)) => {
                // A request decodes again from its own encoding.
                let again = disklock::daemon::protocol::encode(&req.to_call());
                let again = &again[..again.len() - 1];
                assert!(Request::decode(again).is_ok(), "{req:?}");
            }
            Err(Rejected::Call { failure, .. }) => {
                let reply = encode_failure(&failure);
                assert_eq!(reply.last(), Some(&0));
            }
            // Not a call: the daemon closes the connection.
            Err(Rejected::NotACall(why)) => assert!(!why.is_empty()),
        }
    }
});
