//! Disk keys: the validated names that leases and reservations are derived from.

use std::fmt;
use std::str::FromStr;

use md5::Md5;
use serde::Serialize;
use sha2::{Digest, Sha256};

/// Where a key came from. The serialized names are part of disklock's JSON output contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    /// An LVM logical volume's UUID, dashed as `lvs -o uuid` prints it.
    LvmUuid,
    /// A SCSI logical unit's WWID, as `scsi_id --whitelisted --replace-whitespace` prints it.
    ScsiWwid,
    /// An NVMe namespace's `wwid` sysfs attribute (`eui.…`, `nvme.…`, `uuid.…`), verbatim.
    NvmeWwid,
    /// SHA-256 of the device's `/dev/disk/by-path/NAME` path.
    ByPathSha256,
    /// SHA-256 of the device's `/dev/NAME` path; valid on this host only.
    PathSha256,
    /// SHA-256 of a disk image file's canonical absolute path.
    FileSha256,
}

impl Source {
    /// Every source a block device can get its key from, in the default order.
    pub const DEFAULT_ORDER: [Source; 5] = [
        Source::LvmUuid,
        Source::ScsiWwid,
        Source::NvmeWwid,
        Source::ByPathSha256,
        Source::PathSha256,
    ];

    /// The name used in configuration files and JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::LvmUuid => "lvm-uuid",
            Source::ScsiWwid => "scsi-wwid",
            Source::NvmeWwid => "nvme-wwid",
            Source::ByPathSha256 => "by-path-sha256",
            Source::PathSha256 => "path-sha256",
            Source::FileSha256 => "file-sha256",
        }
    }

    /// Which configured lockspace directory holds leases named by this source.
    pub fn lockspace(self) -> LockspaceKind {
        match self {
            Source::LvmUuid => LockspaceKind::Lvm,
            Source::ScsiWwid | Source::NvmeWwid => LockspaceKind::Scsi,
            Source::ByPathSha256 | Source::PathSha256 | Source::FileSha256 => LockspaceKind::File,
        }
    }
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An unknown key source name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown key source {0:?} (known: lvm-uuid, scsi-wwid, nvme-wwid, by-path-sha256, path-sha256, file-sha256)"
)]
pub struct UnknownSource(pub String);

impl FromStr for Source {
    type Err = UnknownSource;
    fn from_str(s: &str) -> Result<Self, UnknownSource> {
        [
            Source::LvmUuid,
            Source::ScsiWwid,
            Source::NvmeWwid,
            Source::ByPathSha256,
            Source::PathSha256,
            Source::FileSha256,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
        .ok_or_else(|| UnknownSource(s.to_owned()))
    }
}

/// The three lockspace directories of virtlockd's `qemu-lockd.conf`, which disklock keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LockspaceKind {
    /// `file_lockspace_dir`: SHA-256 names.
    File,
    /// `lvm_lockspace_dir`: LV UUIDs.
    Lvm,
    /// `scsi_lockspace_dir`: SCSI and NVMe WWIDs.
    Scsi,
}

/// Longest key accepted: the longest file name Linux allows (`NAME_MAX`).
pub const MAX_KEY_LEN: usize = 255;

/// Why a string cannot be a disk key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KeyError {
    /// Empty.
    #[error("the key is empty")]
    Empty,
    /// Longer than a file name may be.
    #[error("the key is {0} bytes long; at most 255 are allowed")]
    TooLong(usize),
    /// `.` or `..`.
    #[error("the key {0:?} would name a directory")]
    Dots(String),
    /// A `/`, NUL, or other control or space character: it could not name a lease file.
    #[error("the key {0:?} contains {1:?}, which cannot appear in a lease file name")]
    BadChar(String, char),
}

/// A key that names one disk the same way on every host that sees it, and is safe to use as
/// a file name in a lockspace directory (no `/`, no NUL, no whitespace, not `.` or `..`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct DiskKey(String);

impl DiskKey {
    /// Validates `s` as a key.
    pub fn new(s: impl Into<String>) -> Result<DiskKey, KeyError> {
        let s = s.into();
        if s.is_empty() {
            return Err(KeyError::Empty);
        }
        if s.len() > MAX_KEY_LEN {
            return Err(KeyError::TooLong(s.len()));
        }
        if s == "." || s == ".." {
            return Err(KeyError::Dots(s));
        }
        if let Some(c) = s
            .chars()
            .find(|&c| c == '/' || c.is_control() || c.is_whitespace())
        {
            return Err(KeyError::BadChar(s, c));
        }
        Ok(DiskKey(s))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DiskKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lowercase hex SHA-256, the lease-name form virtlockd uses for its file lockspace.
pub fn sha256_hex(data: &[u8]) -> String {
    lower_hex::<64>(&Sha256::digest(data))
}

/// Lowercase hex MD5, the lease-name form libvirt's sanlock plugin uses.
pub fn md5_hex(data: &[u8]) -> String {
    lower_hex::<32>(&Md5::digest(data))
}

/// `N / 2` digest bytes as `N` lowercase hex digits, through a buffer: `hex::encode` builds
/// its string a character at a time, which took four times as many instructions (about
/// 1,300 for a SHA-256) in the daemon's every acquire of an image.
fn lower_hex<const N: usize>(digest: &[u8]) -> String {
    let mut buf = [0u8; N];
    match hex::encode_to_slice(digest, &mut buf) {
        Ok(()) => String::from_utf8_lossy(&buf).into_owned(),
        // Every caller passes a digest of exactly N / 2 bytes.
        Err(_) => hex::encode(digest),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn hash_vectors_from_prior_art() {
        // shared/reference/prior-art.md §0.7: libvirt's documented sanlock example and the
        // virtlockd name of the same path (echo -n … | sha256sum).
        let p = b"/var/lib/libvirt/images/demo.img";
        assert_eq!(md5_hex(p), "bfa0240911bc17753e0b473688822159");
        assert_eq!(
            sha256_hex(p),
            "6f716e8c06fc109acd342e3c129a17ccf3c473c1c76363b543a1cbb55d1cd778"
        );
    }

    #[test]
    fn key_validation() {
        assert!(DiskKey::new("36000000000000000000000e000000001").is_ok());
        assert!(DiskKey::new("06UgP5-2rhb-w3Bo-3mdR-WeoL-pytO-SAa2ky").is_ok());
        assert!(DiskKey::new("eui.0025388b71b1e8e2-part1").is_ok());
        assert_eq!(DiskKey::new(""), Err(KeyError::Empty));
        assert_eq!(DiskKey::new(".."), Err(KeyError::Dots("..".into())));
        assert_eq!(
            DiskKey::new("a/b"),
            Err(KeyError::BadChar("a/b".into(), '/'))
        );
        assert_eq!(
            DiskKey::new("a b"),
            Err(KeyError::BadChar("a b".into(), ' '))
        );
        assert_eq!(DiskKey::new("x".repeat(256)), Err(KeyError::TooLong(256)));
    }

    #[test]
    fn source_names_round_trip() {
        for s in Source::DEFAULT_ORDER
            .into_iter()
            .chain([Source::FileSha256])
        {
            assert_eq!(s.as_str().parse::<Source>().unwrap(), s);
            assert_eq!(serde_json_name(s), s.as_str());
        }
        assert!("wwid".parse::<Source>().is_err());
    }

    fn serde_json_name(s: Source) -> String {
        serde_json::to_string(&s)
            .unwrap()
            .trim_matches('"')
            .to_owned()
    }

    proptest! {
        #[test]
        fn valid_keys_are_single_file_names(s in "[ -~]{1,300}") {
            if let Ok(k) = DiskKey::new(s.clone()) {
                let p = std::path::Path::new("/lockspace").join(k.as_str());
                prop_assert_eq!(p.parent().unwrap(), std::path::Path::new("/lockspace"));
                prop_assert!(p.file_name().unwrap().len() <= MAX_KEY_LEN);
            }
        }
    }
}
