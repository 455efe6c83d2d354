//! Standard base64 (RFC 4648, with padding), as busybox `base64` reads and writes it, through
//! the `base64` crate (also used by the resolver's capture replay).

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;

/// Encode bytes as one line of base64 with padding.
pub fn encode(data: &[u8]) -> String {
    STANDARD.encode(data)
}

/// Why a base64 string could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid base64")]
pub struct DecodeError(#[source] pub base64::DecodeError);

/// Decode one line of padded base64; whitespace is not allowed.
pub fn decode(text: &str) -> Result<Vec<u8>, DecodeError> {
    STANDARD.decode(text).map_err(DecodeError)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn rfc4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (plain, coded) in cases {
            assert_eq!(encode(plain.as_bytes()), coded);
            assert_eq!(decode(coded).unwrap(), plain.as_bytes());
        }
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["Zg=", "Z===", "Zg==Zg==", "Zm9\n", "-"] {
            assert!(decode(bad).is_err(), "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn round_trip(data in proptest::collection::vec(any::<u8>(), 0..300)) {
            let coded = encode(&data);
            prop_assert_eq!(coded.len() % 4, 0);
            prop_assert_eq!(decode(&coded).unwrap(), data);
        }
    }
}
