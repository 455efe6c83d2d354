//! This host's persistent-reservation key.
//!
//! A key must be 8 bytes, never 0, the same across reboots and different on every host that
//! shares a disk. It comes from, in order:
//!
//! 1. `host_key = "0x…"` in the configuration, used as written;
//! 2. `host_id = N` (1 to 2000, sanlock's range): `0x444c4b48_0000_NNNN`, that is the ASCII
//!    bytes `DLKH` and the id, so `0x444c4b4800000007` reads as "disklock host 7";
//! 3. the systemd machine id (`/etc/machine-id`): `0x444c4b4d` (`DLKM`) and the first eight
//!    hex digits of the machine id, so a person can match a key against `cat /etc/machine-id`.
//!
//! Derived keys carry a prefix no other tool is known to use (fence_scsi keys are a cluster
//! hash and a node id, mpathpersist's come from `multipath.conf`), and [`describe`] turns one
//! back into what it was derived from.

use std::fmt;

use disklock_conf::{Config, Key, Origin};

/// `DLKH`: a key derived from `host_id`.
const HOST_ID_PREFIX: u64 = 0x444c_4b48;
/// `DLKM`: a key derived from the machine id.
const MACHINE_ID_PREFIX: u64 = 0x444c_4b4d;

/// Where the machine id lives; the second is the D-Bus copy older systems have.
pub const MACHINE_ID_FILES: [&str; 2] = ["/etc/machine-id", "/var/lib/dbus/machine-id"];

/// This host's key and where it came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostKey {
    /// The key, never 0.
    #[serde(serialize_with = "serialize_u64_key")]
    pub key: u64,
    /// How it was chosen.
    pub from: KeySource,
}

fn serialize_u64_key<S: serde::Serializer>(k: &u64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&disklock_conf::format_host_key(*k))
}

/// How a [`HostKey`] was chosen.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum KeySource {
    /// `host_key` in a configuration file.
    HostKey {
        /// The file and line.
        origin: String,
    },
    /// Derived from `host_id`.
    HostId {
        /// The id.
        host_id: u16,
        /// The file and line.
        origin: String,
    },
    /// Derived from the machine id.
    MachineId {
        /// The file it was read from.
        file: String,
    },
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeySource::HostKey { origin } => write!(f, "host_key ({origin})"),
            KeySource::HostId { host_id, origin } => write!(f, "host_id {host_id} ({origin})"),
            KeySource::MachineId { file } => write!(f, "machine id ({file})"),
        }
    }
}

/// Why there is no host key.
#[derive(Debug, thiserror::Error)]
pub enum HostKeyError {
    /// Neither key nor id configured, and no usable machine id.
    #[error(
        "no reservation key for this host: set host_key or host_id in the configuration \
         (no usable machine id in {}: {reason})",
        MACHINE_ID_FILES.join(" or ")
    )]
    NoMachineId {
        /// What was wrong with the machine id files.
        reason: String,
    },
}

/// The key that `config` gives this host; `machine_id` is the text of the first machine-id
/// file that could be read, with its path (the caller reads it, so this stays pure).
pub fn derive(config: &Config, machine_id: Option<(&str, &str)>) -> Result<HostKey, HostKeyError> {
    let origin = |key: Key| match config.origin(key) {
        Origin::Default => "default".to_owned(),
        other => other.to_string(),
    };
    if let Some(key) = config.host_key {
        return Ok(HostKey {
            key,
            from: KeySource::HostKey {
                origin: origin(Key::HostKey),
            },
        });
    }
    if let Some(id) = config.host_id {
        return Ok(HostKey {
            key: from_host_id(id),
            from: KeySource::HostId {
                host_id: id,
                origin: origin(Key::HostId),
            },
        });
    }
    let Some((file, text)) = machine_id else {
        return Err(HostKeyError::NoMachineId {
            reason: "not found".into(),
        });
    };
    let key = from_machine_id(text).ok_or_else(|| HostKeyError::NoMachineId {
        reason: format!("{file} does not hold 32 hex digits"),
    })?;
    Ok(HostKey {
        key,
        from: KeySource::MachineId {
            file: file.to_owned(),
        },
    })
}

/// The key of host `id` (nonzero because of the prefix).
pub fn from_host_id(id: u16) -> u64 {
    (HOST_ID_PREFIX << 32) | u64::from(id)
}

/// The key of the machine whose `/etc/machine-id` holds `text` (32 hex digits and a newline),
/// or `None` when `text` is not a machine id.
pub fn from_machine_id(text: &str) -> Option<u64> {
    let id = text.trim_end_matches('\n');
    if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let head = u64::from_str_radix(&id[..8], 16).ok()?;
    Some((MACHINE_ID_PREFIX << 32) | head)
}

/// What a derived key says about its host: `host id 7`, `machine id 1a2b3c4d…`; `None` for
/// keys disklock did not derive.
pub fn describe(key: u64) -> Option<String> {
    let low = key & 0xffff_ffff;
    match key >> 32 {
        HOST_ID_PREFIX if low >= 1 && low <= u64::from(disklock_conf::MAX_HOST_ID) => {
            Some(format!("host id {low}"))
        }
        MACHINE_ID_PREFIX => Some(format!("machine id {low:08x}…")),
        _ => None,
    }
}

/// Reads the first machine-id file that exists: `(path, text)`.
pub fn read_machine_id() -> Option<(&'static str, String)> {
    MACHINE_ID_FILES
        .iter()
        .find_map(|f| std::fs::read_to_string(f).ok().map(|t| (*f, t)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use disklock_conf::{Context, load_str};
    use proptest::prelude::*;

    fn config(text: &str) -> Config {
        let ctx = Context {
            uid: 0,
            ..Context::default()
        };
        load_str("/etc/disklock/disklock.conf".as_ref(), text, &ctx)
            .unwrap()
            .config
    }

    const MID: &str = "1a2b3c4d5e6f708192a3b4c5d6e7f809\n";

    #[test]
    fn explicit_key_wins() {
        let c = config("host_key = \"0x1234\"\nhost_id = 7\n");
        let k = derive(&c, Some(("/etc/machine-id", MID))).unwrap();
        assert_eq!(k.key, 0x1234);
        assert_eq!(
            k.from.to_string(),
            "host_key (/etc/disklock/disklock.conf:1)"
        );
        assert_eq!(describe(k.key), None);
    }

    #[test]
    fn host_id_key() {
        let c = config("host_id = 7\n");
        let k = derive(&c, Some(("/etc/machine-id", MID))).unwrap();
        assert_eq!(k.key, 0x444c_4b48_0000_0007);
        assert_eq!(
            k.from.to_string(),
            "host_id 7 (/etc/disklock/disklock.conf:1)"
        );
        assert_eq!(describe(k.key).as_deref(), Some("host id 7"));
        assert_eq!(&k.key.to_be_bytes()[..4], b"DLKH");
    }

    #[test]
    fn machine_id_key() {
        let c = config("");
        let k = derive(&c, Some(("/etc/machine-id", MID))).unwrap();
        assert_eq!(k.key, 0x444c_4b4d_1a2b_3c4d);
        assert_eq!(k.from.to_string(), "machine id (/etc/machine-id)");
        assert_eq!(describe(k.key).as_deref(), Some("machine id 1a2b3c4d…"));
    }

    #[test]
    fn no_usable_machine_id() {
        let c = config("");
        let e = derive(&c, None).unwrap_err().to_string();
        assert!(e.contains("set host_key or host_id"), "{e}");
        assert!(e.contains("not found"), "{e}");
        for bad in ["", "uninitialized\n", "1a2b3c4d", &"g".repeat(32)] {
            let e = derive(&c, Some(("/etc/machine-id", bad))).unwrap_err();
            assert!(
                e.to_string().contains("does not hold 32 hex digits"),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn describe_rejects_out_of_range_ids() {
        assert_eq!(describe(0x444c_4b48_0000_0000), None);
        assert_eq!(describe(0x444c_4b48_0000_07d1), None);
        assert_eq!(describe(0), None);
    }

    proptest! {
        #[test]
        fn host_id_keys_are_distinct_nonzero_and_described(a in 1u16..=2000, b in 1u16..=2000) {
            prop_assert_ne!(from_host_id(a), 0);
            prop_assert_eq!(from_host_id(a) == from_host_id(b), a == b);
            prop_assert_eq!(describe(from_host_id(a)), Some(format!("host id {a}")));
        }

        #[test]
        fn machine_ids_give_nonzero_keys(id in "[0-9a-f]{32}") {
            let k = from_machine_id(&id).unwrap();
            prop_assert_ne!(k, 0);
            prop_assert_eq!(format!("{:08x}", k & 0xffff_ffff), &id[..8]);
            prop_assert_ne!(k >> 32, HOST_ID_PREFIX);
        }
    }
}
