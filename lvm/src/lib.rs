//! LVM identities for disklock.
//!
//! An LVM logical volume is named across hosts by its LV UUID: 32 characters from LVM's id
//! alphabet (`0-9 a-z A-Z ! #`), printed by `lvs -o uuid` in groups of 6-4-4-4-4-4-6 joined by
//! dashes (`06UgP5-2rhb-w3Bo-3mdR-WeoL-pytO-SAa2ky`). virtlockd's `lvm_lockspace_dir` names
//! leases by exactly that string, so disklock must print it the same way.
//!
//! The kernel already knows the UUID: device-mapper gives every LV the DM UUID
//! `LVM-<VG uuid><LV uuid>[-suffix]` (both without dashes; the suffix marks LVM's internal
//! sub-devices such as `-real`, `-cow`, `-tpool`), visible in sysfs as `/sys/block/dm-N/dm/uuid`.
//! Reading that file costs microseconds where spawning `lvs` costs tens of milliseconds, so the
//! resolver uses [`LvmDmUuid::parse`] and never spawns LVM tools.
//!
//! ```
//! use disklock_lvm::LvmDmUuid;
//! let dm = LvmDmUuid::parse(
//!     "LVM-9xS5S9GnwIHdBe1Vj4n9Vpff2QYWefeP1olaZYbYgKb38BKnxc5Mbweh5DDeEMyO",
//! ).unwrap();
//! assert_eq!(dm.lv.to_string(), "1olaZY-bYgK-b38B-Knxc-5Mbw-eh5D-DeEMyO");
//! assert_eq!(dm.vg.to_string(), "9xS5S9-GnwI-HdBe-1Vj4-n9Vp-ff2Q-YWefeP");
//! ```
//!
//! What this crate does not do: parse on-disk LVM metadata, talk to lvmlockd, or run `lvs`
//! (the output parser [`parse_lvs_uuid`] exists for tests and benchmarks that use `lvs` as an
//! oracle).

#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::fmt;
use std::str::FromStr;

/// Length of an LVM id without dashes (`ID_LEN` in lvm2's `uuid.h`).
pub const ID_LEN: usize = 32;

/// Group sizes of the dashed form that `lvs` prints.
const GROUPS: [usize; 7] = [6, 4, 4, 4, 4, 4, 6];

/// Why a string is not an LVM identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum LvmError {
    /// Not 32 id characters (after removing dashes in the dashed form).
    #[error("an LVM uuid has 32 characters, found {0}")]
    BadLength(usize),
    /// A character outside LVM's id alphabet.
    #[error("character {0:?} is not allowed in an LVM uuid")]
    BadChar(char),
    /// Dashes not in the 6-4-4-4-4-4-6 places.
    #[error("dashes are not in the 6-4-4-4-4-4-6 places of an LVM uuid")]
    BadDashes,
    /// A DM UUID that does not start with `LVM-`.
    #[error("device-mapper uuid does not start with \"LVM-\"")]
    NotLvm,
    /// `lvs` printed nothing usable.
    #[error("lvs printed no uuid")]
    EmptyOutput,
}

fn is_id_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'!' || c == b'#'
}

/// 32 validated LVM id characters. Shared representation of [`LvUuid`] and [`VgUuid`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Id([u8; ID_LEN]);

impl Id {
    fn from_undashed(s: &[u8]) -> Result<Self, LvmError> {
        if s.len() != ID_LEN {
            return Err(LvmError::BadLength(s.len()));
        }
        let mut out = [0u8; ID_LEN];
        for (o, &c) in out.iter_mut().zip(s) {
            if !is_id_char(c) {
                return Err(LvmError::BadChar(char::from(c)));
            }
            *o = c;
        }
        Ok(Id(out))
    }

    /// Accepts the dashed form only with dashes in the right places, or the bare 32 chars.
    fn from_text(s: &str) -> Result<Self, LvmError> {
        let b = s.as_bytes();
        if !b.contains(&b'-') {
            return Self::from_undashed(b);
        }
        let mut bare = Vec::with_capacity(ID_LEN);
        let mut parts = s.split('-');
        for want in GROUPS {
            let part = parts.next().ok_or(LvmError::BadDashes)?;
            if part.len() != want {
                return Err(LvmError::BadDashes);
            }
            bare.extend_from_slice(part.as_bytes());
        }
        if parts.next().is_some() {
            return Err(LvmError::BadDashes);
        }
        Self::from_undashed(&bare)
    }

    fn as_str(&self) -> &str {
        // Every byte was checked by `is_id_char`, so the array is ASCII and valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or_default()
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.as_str();
        let mut at = 0;
        for (i, len) in GROUPS.iter().enumerate() {
            if i > 0 {
                f.write_str("-")?;
            }
            f.write_str(&s[at..at + len])?;
            at += len;
        }
        Ok(())
    }
}

macro_rules! id_newtype {
    ($name:ident, $what:literal) => {
        #[doc = concat!("The UUID of an LVM ", $what, "; `Display` prints the dashed form `lvs` prints.")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Id);

        impl $name {
            /// The 32 characters without dashes, as they appear inside a DM UUID.
            pub fn undashed(&self) -> &str {
                self.0.as_str()
            }
        }

        impl FromStr for $name {
            type Err = LvmError;
            /// Parses the dashed form (`lvs` output) or the bare 32 characters.
            fn from_str(s: &str) -> Result<Self, LvmError> {
                Id::from_text(s).map($name)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!(stringify!($name), "({})"), self)
            }
        }
    };
}

id_newtype!(LvUuid, "logical volume");
id_newtype!(VgUuid, "volume group");

/// A device-mapper UUID that LVM assigned: `LVM-<VG uuid><LV uuid>[-suffix]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LvmDmUuid {
    /// The volume group.
    pub vg: VgUuid,
    /// The logical volume: the cross-host key of the LV.
    pub lv: LvUuid,
    /// LVM's layer suffix for internal sub-devices (`real`, `cow`, `tpool`, `pool`, `tdata`…),
    /// without the dash; `None` for the LV's top device.
    pub suffix: Option<String>,
}

impl LvmDmUuid {
    /// Parses the contents of `/sys/block/dm-N/dm/uuid` (surrounding whitespace ignored).
    pub fn parse(dm_uuid: &str) -> Result<Self, LvmError> {
        let rest = dm_uuid
            .trim()
            .strip_prefix("LVM-")
            .ok_or(LvmError::NotLvm)?;
        let b = rest.as_bytes();
        if b.len() < 2 * ID_LEN {
            return Err(LvmError::BadLength(b.len()));
        }
        let vg = VgUuid(Id::from_undashed(&b[..ID_LEN])?);
        let lv = LvUuid(Id::from_undashed(&b[ID_LEN..2 * ID_LEN])?);
        let suffix = match &rest[2 * ID_LEN..] {
            "" => None,
            s => match s.strip_prefix('-') {
                Some(sfx) if !sfx.is_empty() => Some(sfx.to_owned()),
                _ => return Err(LvmError::BadLength(b.len())),
            },
        };
        Ok(LvmDmUuid { vg, lv, suffix })
    }
}

impl fmt::Display for LvmDmUuid {
    /// The DM UUID form, the inverse of [`LvmDmUuid::parse`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LVM-{}{}", self.vg.undashed(), self.lv.undashed())?;
        if let Some(s) = &self.suffix {
            write!(f, "-{s}")?;
        }
        Ok(())
    }
}

/// Parses what `lvs --noheadings -o uuid <LV>` prints for one LV (virtlockd strips leading
/// whitespace and the trailing newline; so does this).
pub fn parse_lvs_uuid(output: &str) -> Result<LvUuid, LvmError> {
    let line = output
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .ok_or(LvmError::EmptyOutput)?;
    line.parse()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Observed in a QEMU guest with lvm2 2.03.16 (shared/reference/test-rig.md §7.6):
    // `lvs -o lv_uuid,vg_uuid` and `/sys/block/dm-0/dm/uuid` of the same LV.
    const LV: &str = "1olaZY-bYgK-b38B-Knxc-5Mbw-eh5D-DeEMyO";
    const VG: &str = "9xS5S9-GnwI-HdBe-1Vj4-n9Vp-ff2Q-YWefeP";
    const DM: &str = "LVM-9xS5S9GnwIHdBe1Vj4n9Vpff2QYWefeP1olaZYbYgKb38BKnxc5Mbweh5DDeEMyO";

    #[test]
    fn dm_uuid_of_observed_lv() {
        let d = LvmDmUuid::parse(&format!("{DM}\n")).unwrap();
        assert_eq!(d.lv.to_string(), LV);
        assert_eq!(d.vg.to_string(), VG);
        assert_eq!(d.suffix, None);
        assert_eq!(d.to_string(), DM);
    }

    #[test]
    fn dm_uuid_suffix() {
        let d = LvmDmUuid::parse(&format!("{DM}-real")).unwrap();
        assert_eq!(d.suffix.as_deref(), Some("real"));
        assert_eq!(d.lv.to_string(), LV);
        assert_eq!(
            LvmDmUuid::parse(&format!("{DM}-")),
            Err(LvmError::BadLength(65))
        );
        assert_eq!(
            LvmDmUuid::parse(&format!("{DM}x")),
            Err(LvmError::BadLength(65))
        );
    }

    #[test]
    fn dm_uuid_rejections() {
        assert_eq!(LvmDmUuid::parse("mpath-3600"), Err(LvmError::NotLvm));
        assert_eq!(LvmDmUuid::parse("LVM-abc"), Err(LvmError::BadLength(3)));
        let bad = DM.replace("9xS5", "9x.5");
        assert_eq!(LvmDmUuid::parse(&bad), Err(LvmError::BadChar('.')));
    }

    #[test]
    fn lvs_output() {
        // virtlockd's documented example key.
        let u = parse_lvs_uuid("  06UgP5-2rhb-w3Bo-3mdR-WeoL-pytO-SAa2ky\n").unwrap();
        assert_eq!(u.to_string(), "06UgP5-2rhb-w3Bo-3mdR-WeoL-pytO-SAa2ky");
        assert_eq!(parse_lvs_uuid("\n  \n"), Err(LvmError::EmptyOutput));
        assert_eq!(
            "06UgP5-2rhbw-3Bo-3mdR-WeoL-pytO-SAa2ky".parse::<LvUuid>(),
            Err(LvmError::BadDashes)
        );
        assert_eq!(
            "06UgP5-2rhb-w3Bo-3mdR-WeoL-pytO-SAa2ky-".parse::<LvUuid>(),
            Err(LvmError::BadDashes)
        );
    }

    fn id_string() -> impl Strategy<Value = String> {
        "[0-9a-zA-Z!#]{32}"
    }

    proptest! {
        #[test]
        fn dashed_round_trip(s in id_string()) {
            let u: LvUuid = s.parse().unwrap();
            let dashed = u.to_string();
            prop_assert_eq!(dashed.len(), 38);
            prop_assert_eq!(dashed.parse::<LvUuid>().unwrap(), u);
            prop_assert_eq!(dashed.replace('-', ""), s);
        }

        #[test]
        fn dm_round_trip(vg in id_string(), lv in id_string(), sfx in proptest::option::of("[a-z]{1,8}")) {
            let text = match &sfx {
                Some(x) => format!("LVM-{vg}{lv}-{x}"),
                None => format!("LVM-{vg}{lv}"),
            };
            let d = LvmDmUuid::parse(&text).unwrap();
            prop_assert_eq!(d.lv.undashed(), lv.as_str());
            prop_assert_eq!(d.vg.undashed(), vg.as_str());
            prop_assert_eq!(d.suffix, sfx);
            prop_assert_eq!(LvmDmUuid::parse(&text).unwrap().to_string(), text);
        }

        #[test]
        fn parse_never_panics(s in ".{0,100}") {
            let _ = LvmDmUuid::parse(&s);
            let _ = parse_lvs_uuid(&s);
            let _ = s.parse::<LvUuid>();
        }
    }
}
