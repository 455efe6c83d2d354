//! The udev database record of one device: `/run/udev/data/b<MAJ>:<MIN>`.
//!
//! systemd-udevd writes one text file per device, one record per line, a one-letter tag, a colon
//! and the value (`src/libsystemd/sd-device/device-private.c`, `device_update_db`):
//! `S:` a symlink under `/dev` without the `/dev/` prefix (`disk/by-path/pci-…`), `E:` a property
//! `KEY=VALUE`, `L:` the link priority, `W:`/`I:` watch handle and initialisation time, `G:`/`Q:`
//! tags, `V:` the database version. Only `S:` and `E:` matter to the resolver; other tags are
//! kept out of the way and unknown lines are ignored, as udev itself ignores them.
//!
//! Hosts without udevd (containers, initramfs, this project's CI machines) have no database;
//! the resolver then falls back to scanning the `/dev/disk/by-path` symlinks.

/// What the resolver needs from one udev database record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UdevRecord {
    /// `S:` lines: symlinks relative to `/dev`, in file order.
    pub symlinks: Vec<String>,
    /// `E:` lines split at the first `=`, in file order.
    pub properties: Vec<(String, String)>,
}

impl UdevRecord {
    /// Parses a record. Never fails: lines that are not `X:value` are skipped.
    pub fn parse(text: &str) -> UdevRecord {
        let mut rec = UdevRecord::default();
        for line in text.lines() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            let Some((tag, value)) = line.split_once(':') else {
                continue;
            };
            match tag {
                "S" if !value.is_empty() => rec.symlinks.push(value.to_owned()),
                "E" => {
                    if let Some((k, v)) = value.split_once('=')
                        && !k.is_empty()
                    {
                        rec.properties.push((k.to_owned(), v.to_owned()));
                    }
                }
                _ => {}
            }
        }
        rec
    }

    /// The first value of property `key`.
    pub fn property(&self, key: &str) -> Option<&str> {
        self.properties
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The names under `/dev/disk/by-path/`, sorted, so every host picks the same one.
    pub fn by_path_names(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self
            .symlinks
            .iter()
            .filter_map(|s| s.strip_prefix("disk/by-path/"))
            .filter(|n| is_plain_name(n))
            .collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

/// A single path component that can safely be appended to `/dev/disk/by-path/`.
pub(crate) fn is_plain_name(n: &str) -> bool {
    !n.is_empty() && n != "." && n != ".." && !n.contains('/') && !n.contains('\0')
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The udev properties and links of a tgt LUN as seen in a QEMU guest with udev 252
    /// (shared/reference/test-rig.md §7.4), written out in udev's database format.
    const TGT_LUN: &str = "S:disk/by-id/wwn-0x6000000000000000000000e000000001\n\
S:disk/by-id/scsi-36000000000000000000000e000000001\n\
S:disk/by-diskseq/1\n\
S:disk/by-path/pci-0000:00:02.0-scsi-0:0:0:0\n\
W:1\n\
I:3412345\n\
E:ID_SCSI=1\n\
E:ID_VENDOR=VMHARN\n\
E:ID_SERIAL=36000000000000000000000e000000001\n\
E:ID_PATH=pci-0000:00:02.0-scsi-0:0:0:0\n\
E:EMPTY=\n\
G:systemd\n\
Q:systemd\n\
V:1\n";

    #[test]
    fn parses_links_and_properties() {
        let r = UdevRecord::parse(TGT_LUN);
        assert_eq!(r.symlinks.len(), 4);
        assert_eq!(r.by_path_names(), vec!["pci-0000:00:02.0-scsi-0:0:0:0"]);
        assert_eq!(
            r.property("ID_SERIAL"),
            Some("36000000000000000000000e000000001")
        );
        assert_eq!(r.property("EMPTY"), Some(""));
        assert_eq!(r.property("ID_MISSING"), None);
    }

    #[test]
    fn by_path_names_are_sorted_and_safe() {
        let r = UdevRecord::parse(
            "S:disk/by-path/pci-0000:00:1f.2-ata-1.0\r\nS:disk/by-path/pci-0000:00:1f.2-ata-1\n\
             S:disk/by-path/../../etc\nS:disk/by-path/\nS:disk/by-path/pci-0000:00:1f.2-ata-1\n",
        );
        assert_eq!(
            r.by_path_names(),
            vec!["pci-0000:00:1f.2-ata-1", "pci-0000:00:1f.2-ata-1.0"]
        );
    }

    proptest! {
        #[test]
        fn never_panics_and_keeps_s_lines(lines in proptest::collection::vec("[A-Z]?:?[ -~]{0,40}", 0..20)) {
            let text = lines.join("\n");
            let r = UdevRecord::parse(&text);
            let want = lines.iter().filter(|l| l.starts_with("S:") && l.len() > 2).count();
            prop_assert_eq!(r.symlinks.len(), want);
        }
    }
}
