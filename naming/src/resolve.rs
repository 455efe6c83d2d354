//! Path → kernel device → disk key.
//!
//! The order of work for one input:
//! 1. the path is resolved inside the [`SysRoot`] (symlink chains, relative paths);
//! 2. a regular file is a disk image: its key is the SHA-256 of its canonical path;
//! 3. a block device node gives `st_rdev`, and `/sys/dev/block/MAJ:MIN` gives the kernel device;
//! 4. the configured key sources are tried in order; the first that applies names the disk.
//!
//! **Partitions** are keyed by their whole device's key plus `-part<N>` (N from sysfs
//! `partition`, or from a `part<N>-` device-mapper UUID prefix as kpartx makes), the suffix
//! udev's by-id links use. Two guests on two partitions of one LUN therefore hold two different
//! leases; a persistent reservation still covers the whole LUN. A by-path key needs no suffix:
//! udev gives each partition its own by-path name.
//!
//! Reads are lazy and ordered so that the common case costs a handful of sysfs reads: a SCSI
//! disk needs the `/sys/dev/block` link, `partition`, `dm/uuid` and `device/vpd_pg83`.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fmt;
use std::io::{self, Read as _};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use disklock_lvm::LvmDmUuid;
use serde::Serialize;

use crate::key::{DiskKey, KeyError, Source, sha256_hex};
use crate::sysroot::{SysRoot, WalkError, file_name_str, has_nul};
use crate::udevdb::{UdevRecord, is_plain_name};

/// `PATH_MAX` on Linux, counting the terminating NUL.
pub const PATH_MAX: usize = 4096;

/// A device number as `MAJ:MIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DevNo {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl DevNo {
    /// Splits a `dev_t`.
    pub fn from_dev_t(rdev: u64) -> DevNo {
        DevNo {
            major: libc::major(rdev),
            minor: libc::minor(rdev),
        }
    }

    /// Parses `MAJ:MIN` as sysfs `dev` attributes hold it.
    pub fn parse(s: &str) -> Option<DevNo> {
        let (a, b) = s.trim().split_once(':')?;
        Some(DevNo {
            major: a.parse().ok()?,
            minor: b.parse().ok()?,
        })
    }
}

impl fmt::Display for DevNo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

impl Serialize for DevNo {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// Why an input could not be resolved to a key. The caller names the input.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// An empty string.
    #[error("empty path")]
    Empty,
    /// A NUL byte: no path can contain one.
    #[error("path contains a NUL byte")]
    ContainsNul,
    /// Longer than `PATH_MAX`.
    #[error("path is {0} bytes long; the limit is 4095")]
    TooLong(usize),
    /// The path could not be followed.
    #[error(transparent)]
    Walk(#[from] WalkError),
    /// A directory.
    #[error("is a directory, not a disk")]
    IsDirectory,
    /// A character device; `block` names the block device behind it when sysfs knows one
    /// (a SCSI generic node such as `/dev/sg2` sits beside its `/dev/sdX`).
    #[error(
        "is a character device ({devno}), not a block device{}",
        hint_block(block)
    )]
    CharDevice {
        /// Its device number.
        devno: DevNo,
        /// The block device of the same SCSI device, if any.
        block: Option<String>,
    },
    /// A named pipe.
    #[error("is a FIFO, not a disk")]
    Fifo,
    /// A Unix socket.
    #[error("is a socket, not a disk")]
    Socket,
    /// sysfs is not where it should be.
    #[error("sysfs is not mounted at {}", .0.display())]
    NoSysfs(PathBuf),
    /// The node exists but the kernel no longer has the device (removed mid-lookup, or a stale
    /// node left in `/dev`).
    #[error("block device {0} has no /sys/dev/block entry (removed, or a stale device node?)")]
    Vanished(DevNo),
    /// A sysfs or udev file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The real path.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// A device-mapper UUID that claims to be LVM's but is malformed.
    #[error("device-mapper uuid {uuid:?} is not a valid LVM uuid")]
    BadLvmUuid {
        /// The DM UUID.
        uuid: String,
        /// Why.
        #[source]
        source: disklock_lvm::LvmError,
    },
    /// The identifier found cannot name a lease file.
    #[error("{source_kind} identifier cannot be used as a key")]
    UnusableKey {
        /// Which source produced it.
        source_kind: Source,
        /// Why.
        #[source]
        source: KeyError,
    },
    /// No enabled key source applies to this device.
    #[error("no enabled key source applies ({})", tried_list(tried))]
    NoKey {
        /// Each source that was tried and why it did not apply.
        tried: Vec<(Source, String)>,
    },
}

fn hint_block(block: &Option<String>) -> String {
    match block {
        Some(b) => format!("; use /dev/{b}, the block device of the same disk"),
        None => String::new(),
    }
}

fn tried_list(tried: &[(Source, String)]) -> String {
    if tried.is_empty() {
        return "none enabled".to_owned();
    }
    tried
        .iter()
        .map(|(s, why)| format!("{s}: {why}"))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Asks a SCSI device itself for its WWID when sysfs has no VPD pages for it (older kernels,
/// some transports). The production implementation issues INQUIRY through SG_IO, exactly as
/// `scsi_id` does.
pub trait VpdFallback: Send + Sync {
    /// The WWID in `scsi_id` form of the SCSI device whose node is `node` (a real path), or
    /// `None` when it has none or cannot be asked.
    fn scsi_id_wwid(&self, node: &Path) -> Option<String>;
}

/// [`VpdFallback`] through SG_IO INQUIRY on a read-only open of the node.
#[derive(Debug, Default, Clone, Copy)]
pub struct SgIoVpd;

impl VpdFallback for SgIoVpd {
    fn scsi_id_wwid(&self, node: &Path) -> Option<String> {
        let dev = disklock_scsi::device::Device::open(node).ok()?;
        dev.scsi_id_wwid().ok().flatten()
    }
}

/// The kernel block device behind a key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockInfo {
    /// Kernel name (`sdb`, `dm-3`, `nvme0n1p2`).
    pub name: String,
    /// Device number.
    pub devno: DevNo,
    /// Partition number, when this is a partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub partition: Option<u32>,
    /// Kernel name of the whole device, for a sysfs partition.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub whole_disk: Option<String>,
    /// device-mapper name (`vg-lv`, a multipath alias), for dm devices.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dm_name: Option<String>,
}

/// One path to a disk's storage ([`Resolver::storage_paths`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct StoragePath {
    /// Kernel name (`sdb`, `nvme0n1`).
    pub name: String,
    /// Device number.
    pub devno: DevNo,
    /// The device node, as a real path (inside the root for a fake tree).
    pub node: PathBuf,
    /// What speaks on this path.
    pub kind: PathKind,
}

/// The command set a [`StoragePath`] takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    /// A SCSI disk: SG_IO.
    Scsi,
    /// An NVMe namespace: the block layer's PR ioctls.
    Nvme,
    /// Anything else (virtio-blk, loop): no persistent reservations.
    Other,
}

/// A resolved input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Resolution {
    /// Canonical path of the node or image file, inside the root.
    pub path: PathBuf,
    /// The block device; `None` for a disk image file.
    pub block: Option<BlockInfo>,
    /// The key.
    pub key: DiskKey,
    /// Where the key came from.
    pub source: Source,
    /// True when the key names the disk on this host only.
    pub host_local: bool,
    /// How the key was found, for people (`VPD page 0x83`, `multipath map`, …).
    pub detail: String,
    /// Things a person should know (host-local keys, internal LVM devices).
    pub warnings: Vec<String>,
}

/// Turns paths and device numbers into [`Resolution`]s. Cheap to build; keeps a cache of the
/// `/dev/disk/by-path` links when it has to scan them (no udev database).
pub struct Resolver {
    root: SysRoot,
    order: Vec<Source>,
    fallback: Option<Box<dyn VpdFallback>>,
    probe: bool,
    by_path_scan: OnceLock<HashMap<String, Vec<String>>>,
}

impl fmt::Debug for Resolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Resolver")
            .field("root", &self.root)
            .field("order", &self.order)
            .field("fallback", &self.fallback.is_some())
            .finish()
    }
}

impl Resolver {
    /// A resolver reading through `root`, trying block-device key sources in `order`
    /// ([`Source::FileSha256`] is ignored there: it applies to image files only), with the
    /// SG_IO VPD fallback enabled.
    pub fn new(root: SysRoot, order: &[Source]) -> Resolver {
        let mut seen = Vec::new();
        for &s in order {
            if s != Source::FileSha256 && !seen.contains(&s) {
                seen.push(s);
            }
        }
        Resolver {
            root,
            order: seen,
            fallback: Some(Box::new(SgIoVpd)),
            probe: false,
            by_path_scan: OnceLock::new(),
        }
    }

    /// Replaces (or with `None`, disables) the VPD fallback used when sysfs lacks VPD pages.
    pub fn with_vpd_fallback(mut self, f: Option<Box<dyn VpdFallback>>) -> Resolver {
        self.fallback = f;
        self
    }

    /// Asks SCSI devices themselves (INQUIRY through the VPD fallback) before reading the
    /// VPD pages the kernel cached in sysfs at scan time, which go stale if a LUN is remapped
    /// behind a live device. Slower: one SG_IO round trip per page.
    pub fn with_probe(mut self, probe: bool) -> Resolver {
        self.probe = probe;
        self
    }

    /// The key sources tried for block devices, in order.
    pub fn order(&self) -> &[Source] {
        &self.order
    }

    /// The root this resolver reads through.
    pub fn root(&self) -> &SysRoot {
        &self.root
    }

    /// Turns a user's path into the absolute path inside the root: relative paths are taken
    /// from `cwd`; with a non-host root, a `cwd`-joined path that lies under the root is
    /// translated back inside it.
    pub fn absolute(&self, input: &OsStr, cwd: &Path) -> Result<PathBuf, ResolveError> {
        let len = input.as_bytes().len();
        if len == 0 {
            return Err(ResolveError::Empty);
        }
        if has_nul(input) {
            return Err(ResolveError::ContainsNul);
        }
        if len >= PATH_MAX {
            return Err(ResolveError::TooLong(len));
        }
        let p = Path::new(input);
        if p.is_absolute() {
            return Ok(p.to_path_buf());
        }
        let joined = cwd.join(p);
        Ok(self.root.inner(&joined).unwrap_or(joined))
    }

    /// Resolves any path a user or VM config gives.
    pub fn resolve_path(&self, input: &OsStr, cwd: &Path) -> Result<Resolution, ResolveError> {
        let abs = self.absolute(input, cwd)?;
        // The common case of a disk image named by its real path: no walk needed.
        if self.root.is_plain_regular_file(&abs) {
            return Ok(self.resolve_image(abs));
        }
        let canon = self.root.canonicalize(&abs)?;
        let real = self.root.real(&canon);
        let meta = std::fs::symlink_metadata(&real).map_err(|e| match e.raw_os_error() {
            Some(libc::ENOENT) => ResolveError::Walk(WalkError::NotFound {
                path: canon.clone(),
            }),
            _ => ResolveError::Read {
                path: real.clone(),
                source: e,
            },
        })?;
        let ft = meta.file_type();
        if ft.is_block_device() {
            let mut r = self.resolve_devno(DevNo::from_dev_t(meta.rdev()))?;
            r.path = canon;
            Ok(r)
        } else if ft.is_file() {
            Ok(self.resolve_image(canon))
        } else if ft.is_dir() {
            Err(ResolveError::IsDirectory)
        } else if ft.is_char_device() {
            let devno = DevNo::from_dev_t(meta.rdev());
            Err(ResolveError::CharDevice {
                devno,
                block: self.block_of_char(devno),
            })
        } else if ft.is_fifo() {
            Err(ResolveError::Fifo)
        } else if ft.is_socket() {
            Err(ResolveError::Socket)
        } else {
            // Symlinks were followed by canonicalize; nothing else exists on Linux.
            Err(ResolveError::IsDirectory)
        }
    }

    /// A disk image: the key is the SHA-256 of its canonical absolute path (the name virtlockd
    /// uses when the domain XML gives that path).
    pub fn resolve_image(&self, canon: PathBuf) -> Resolution {
        let key = sha256_hex(canon.as_os_str().as_bytes());
        // By hand: `format!` of a path display costs as much as the hash.
        let shown = canon.to_string_lossy();
        let mut detail = String::with_capacity(10 + shown.len());
        detail.push_str("sha256 of ");
        detail.push_str(&shown);
        Resolution {
            detail,
            path: canon,
            block: None,
            // A hex digest is always a valid key.
            key: DiskKey::new(key).unwrap_or_else(|_| unreachable!("hex digest")),
            source: Source::FileSha256,
            host_local: false,
            warnings: Vec::new(),
        }
    }

    /// Resolves a block device by number (used for `lookup --all` and by `resolve_path`).
    pub fn resolve_devno(&self, devno: DevNo) -> Result<Resolution, ResolveError> {
        let dev = self.open_dev(devno)?;
        let mut tried = Vec::new();
        for &source in &self.order {
            match self.try_source(&dev, source)? {
                Ok(found) => return Ok(self.finish(&dev, source, found)),
                Err(why) => tried.push((source, why)),
            }
        }
        Err(ResolveError::NoKey { tried })
    }

    fn finish(&self, dev: &Dev, source: Source, found: Found) -> Resolution {
        let mut warnings = found.warnings;
        let host_local = source == Source::PathSha256;
        if host_local {
            warnings.push(format!(
                "{}: no cross-host identity (no WWID, LV UUID or by-path name); the key \
                 names this disk on this host only",
                dev.name
            ));
        }
        Resolution {
            path: PathBuf::from(format!("/dev/{}", dev.name)),
            block: Some(BlockInfo {
                name: dev.name.clone(),
                devno: dev.devno,
                partition: dev.partition,
                whole_disk: dev.sys_parent.clone(),
                dm_name: dev.dm_name.clone(),
            }),
            key: found.key,
            source,
            host_local,
            detail: found.detail,
            warnings,
        }
    }

    /// The SCSI WWID of a device's whole disk, as `scsi_id` prints it when run on the device:
    /// for a partition it is the disk's, for a multipath map the map's, and for a device-mapper
    /// device with exactly one underlying device (a linear LV on one PV), that device's — dm
    /// passes SG_IO through to it. Used to reproduce virtlockd's `scsi_lockspace_dir` names.
    pub fn scsi_wwid_as_scsi_id(&self, devno: DevNo) -> Result<Option<String>, ResolveError> {
        let mut dev = self.open_dev(devno)?;
        for _ in 0..8 {
            if let Some(w) = self.scsi_wwid(&dev)? {
                return Ok(Some(w.0));
            }
            if dev.dm_uuid.is_none() {
                return Ok(None);
            }
            let slaves = list_dir(&dev.whole_dir.join("slaves"))?;
            let [only] = slaves.as_slice() else {
                return Ok(None);
            };
            let dev_attr = read_text(&dev.whole_dir.join("slaves").join(only).join("dev"))?;
            let Some(next) = dev_attr.as_deref().and_then(DevNo::parse) else {
                return Ok(None);
            };
            dev = self.open_dev(next)?;
        }
        Ok(None)
    }

    /// The paths through which the storage behind block device `devno` is reached, for
    /// commands every path must see (persistent-reservation registrations are per I_T nexus):
    /// a dm-multipath map's slaves, the disk of a partition (sysfs or kpartx), or the device
    /// itself. Empty for devices with no storage of their own to reserve: LVM and other
    /// device-mapper targets, loop devices.
    pub fn storage_paths(&self, devno: DevNo) -> Result<Vec<StoragePath>, ResolveError> {
        let mut dev = self.open_dev(devno)?;
        // Bounded: dm stacks are shallow, and a loop in sysfs must not hang a caller.
        for _ in 0..8 {
            if dev.sys_parent.is_some() {
                let whole = read_text(&dev.whole_dir.join("dev"))?;
                match whole.as_deref().and_then(DevNo::parse) {
                    Some(next) => {
                        dev = self.open_dev(next)?;
                        continue;
                    }
                    None => return Ok(Vec::new()),
                }
            }
            let Some(uuid) = dev.dm_uuid.as_deref() else {
                return Ok(vec![self.storage_path(&dev)]);
            };
            if !uuid.starts_with("mpath-") {
                return Ok(Vec::new());
            }
            let slaves_dir = dev.whole_dir.join("slaves");
            let slaves = list_dir(&slaves_dir)?;
            if dev.partition.is_some() {
                // A kpartx partition of a map: its one slave is the map.
                let [only] = slaves.as_slice() else {
                    return Ok(Vec::new());
                };
                match read_text(&slaves_dir.join(only).join("dev"))?
                    .as_deref()
                    .and_then(DevNo::parse)
                {
                    Some(next) => {
                        dev = self.open_dev(next)?;
                        continue;
                    }
                    None => return Ok(Vec::new()),
                }
            }
            let mut paths = Vec::with_capacity(slaves.len());
            for slave in &slaves {
                let Some(n) = read_text(&slaves_dir.join(slave).join("dev"))?
                    .as_deref()
                    .and_then(DevNo::parse)
                else {
                    continue;
                };
                match self.open_dev(n) {
                    Ok(d) => paths.push(self.storage_path(&d)),
                    // A path being removed while we look is not an error: it has no nexus.
                    Err(ResolveError::Vanished(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            paths.sort_by(|a, b| a.name.cmp(&b.name));
            return Ok(paths);
        }
        Ok(Vec::new())
    }

    fn storage_path(&self, dev: &Dev) -> StoragePath {
        let kind = if is_scsi_device(&dev.whole_dir.join("device")) {
            PathKind::Scsi
        } else if dev.name.starts_with("nvme") {
            PathKind::Nvme
        } else {
            PathKind::Other
        };
        StoragePath {
            name: dev.name.clone(),
            devno: dev.devno,
            node: self.root.real(format!("/dev/{}", dev.name)),
            kind,
        }
    }

    /// The LV UUID of a device, when it is an LVM logical volume (what `lvs -o uuid` prints).
    pub fn lv_uuid(&self, devno: DevNo) -> Result<Option<String>, ResolveError> {
        let dev = self.open_dev(devno)?;
        if dev.partition.is_some() {
            return Ok(None);
        }
        Ok(self.lvm(&dev)?.map(|(d, _)| d.lv.to_string()))
    }

    fn open_dev(&self, devno: DevNo) -> Result<Dev, ResolveError> {
        let inner = format!("/sys/dev/block/{devno}");
        let link = self.root.real(&inner);
        let target = match std::fs::read_link(&link) {
            Ok(t) => t,
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                let sys = self.root.real("/sys/dev/block");
                return Err(if sys.is_dir() {
                    ResolveError::Vanished(devno)
                } else {
                    ResolveError::NoSysfs(self.root.real("/sys"))
                });
            }
            Err(source) => return Err(ResolveError::Read { path: link, source }),
        };
        let name = file_name_str(&target)
            .ok_or_else(|| ResolveError::Read {
                path: link.clone(),
                source: io::Error::new(io::ErrorKind::InvalidData, "link has no device name"),
            })?
            .to_owned();
        let partition = read_text(&link.join("partition"))?.and_then(|s| s.trim().parse().ok());
        let (whole_dir, sys_parent) = match partition {
            Some(_) => (
                link.join(".."),
                target
                    .parent()
                    .and_then(file_name_str)
                    .map(ToOwned::to_owned),
            ),
            None => (link.clone(), None),
        };
        let mut dev = Dev {
            devno,
            name,
            whole_dir,
            partition,
            sys_parent,
            dm_uuid: None,
            dm_name: None,
        };
        if let Some(uuid) = read_text(&link.join("dm/uuid"))? {
            let uuid = uuid.trim().to_owned();
            dev.dm_name = read_text(&link.join("dm/name"))?.map(|s| s.trim().to_owned());
            // kpartx names partition maps `part<N>-<uuid of the whole map>`.
            let (part, inner) = split_part_prefix(&uuid);
            if part.is_some() {
                dev.partition = part;
            }
            dev.dm_uuid = Some(inner.to_owned());
        }
        Ok(dev)
    }

    /// `Ok(Ok(found))`, `Ok(Err(why it does not apply))`, or a hard error.
    fn try_source(&self, dev: &Dev, source: Source) -> Result<Result<Found, String>, ResolveError> {
        let suffixed = |base: &str| match dev.partition {
            Some(n) => format!("{base}-part{n}"),
            None => base.to_owned(),
        };
        let key = |text: String| {
            DiskKey::new(text).map_err(|e| ResolveError::UnusableKey {
                source_kind: source,
                source: e,
            })
        };
        Ok(match source {
            Source::LvmUuid => match self.lvm(dev)? {
                Some((d, uuid)) => {
                    let mut warnings = Vec::new();
                    if let Some(sfx) = &d.suffix {
                        warnings.push(format!(
                            "{}: an internal LVM sub-device (-{sfx}) of LV {}; give VMs the LV itself",
                            dev.name, d.lv
                        ));
                    }
                    Ok(Found {
                        key: key(suffixed(&d.lv.to_string()))?,
                        detail: format!("device-mapper uuid {uuid}"),
                        warnings,
                    })
                }
                None => Err("not an LVM logical volume".to_owned()),
            },
            Source::ScsiWwid => match self.scsi_wwid(dev)? {
                Some((wwid, how)) => Ok(Found {
                    key: key(suffixed(&wwid))?,
                    detail: how,
                    warnings: Vec::new(),
                }),
                None => {
                    Err("not a SCSI disk or multipath map with a usable VPD identifier".to_owned())
                }
            },
            Source::NvmeWwid => {
                let wwid = match dev.dm_uuid {
                    Some(_) => None,
                    None => read_text(&dev.whole_dir.join("wwid"))?,
                };
                match wwid.as_deref().map(str::trim) {
                    Some(w) if !w.is_empty() => Ok(Found {
                        key: key(suffixed(w))?,
                        detail: "NVMe namespace wwid".to_owned(),
                        warnings: Vec::new(),
                    }),
                    _ => Err("not an NVMe namespace".to_owned()),
                }
            }
            Source::ByPathSha256 => match self.by_path_name(dev)? {
                Some(name) => {
                    let full = format!("/dev/disk/by-path/{name}");
                    Ok(Found {
                        key: key(sha256_hex(full.as_bytes()))?,
                        detail: format!("sha256 of {full}"),
                        warnings: Vec::new(),
                    })
                }
                None => Err("no /dev/disk/by-path name".to_owned()),
            },
            Source::PathSha256 => {
                let full = match &dev.dm_name {
                    Some(n) if is_plain_name(n) => format!("/dev/mapper/{n}"),
                    _ => format!("/dev/{}", dev.name),
                };
                Ok(Found {
                    key: key(sha256_hex(full.as_bytes()))?,
                    detail: format!("sha256 of {full}"),
                    warnings: Vec::new(),
                })
            }
            Source::FileSha256 => Err("applies to image files only".to_owned()),
        })
    }

    fn lvm(&self, dev: &Dev) -> Result<Option<(LvmDmUuid, String)>, ResolveError> {
        match dev.dm_uuid.as_deref() {
            Some(u) if u.starts_with("LVM-") => match LvmDmUuid::parse(u) {
                Ok(d) => Ok(Some((d, u.to_owned()))),
                Err(source) => Err(ResolveError::BadLvmUuid {
                    uuid: u.to_owned(),
                    source,
                }),
            },
            _ => Ok(None),
        }
    }

    /// The whole device's WWID in scsi_id form and how it was found.
    fn scsi_wwid(&self, dev: &Dev) -> Result<Option<(String, String)>, ResolveError> {
        if let Some(u) = dev.dm_uuid.as_deref() {
            return Ok(match u.strip_prefix("mpath-") {
                Some(w) if !w.is_empty() => Some((w.to_owned(), "multipath map uuid".to_owned())),
                _ => None,
            });
        }
        let device = dev.whole_dir.join("device");
        if self.probe
            && is_scsi_device(&device)
            && let Some(f) = &self.fallback
        {
            let node = self.root.real(format!("/dev/{}", dev.whole_name()));
            if let Some(w) = f.scsi_id_wwid(&node) {
                return Ok(Some((w, "INQUIRY by SG_IO (--probe)".to_owned())));
            }
        }
        // The VPD page is the common case and proves a SCSI device by itself; only without it
        // is the device's bus looked up.
        let pg83 = read_bytes(&device.join("vpd_pg83"))?;
        if pg83.is_none() && !is_scsi_device(&device) {
            return Ok(None);
        }
        // Only a vendor-specific designator (type digit `0`) mixes in the INQUIRY vendor and
        // model, so the common NAA/EUI/T10 case needs no further reads.
        const BLANK_VENDOR: [u8; 8] = [b' '; 8];
        const BLANK_MODEL: [u8; 16] = [b' '; 16];
        if let Some(w) = pg83
            .as_deref()
            .and_then(|p| {
                disklock_scsi::vpd::scsi_id_wwid(Some(p), None, &BLANK_VENDOR, &BLANK_MODEL)
            })
            .filter(|w| !w.starts_with('0'))
        {
            return Ok(Some((w, "VPD page 0x83 (sysfs)".to_owned())));
        }
        let pg80 = read_bytes(&device.join("vpd_pg80"))?;
        if pg83.is_none() && pg80.is_none() {
            let node = self.root.real(format!("/dev/{}", dev.whole_name()));
            return Ok(self
                .fallback
                .as_ref()
                .and_then(|f| f.scsi_id_wwid(&node))
                .map(|w| (w, "INQUIRY by SG_IO (no VPD pages in sysfs)".to_owned())));
        }
        let vendor: [u8; 8] = inquiry_field(read_bytes(&device.join("vendor"))?);
        let model: [u8; 16] = inquiry_field(read_bytes(&device.join("model"))?);
        Ok(
            disklock_scsi::vpd::scsi_id_wwid(pg83.as_deref(), pg80.as_deref(), &vendor, &model)
                .map(|w| (w, "VPD pages 0x83/0x80 (sysfs)".to_owned())),
        )
    }

    fn by_path_name(&self, dev: &Dev) -> Result<Option<String>, ResolveError> {
        let db = self.root.real(format!("/run/udev/data/b{}", dev.devno));
        if let Some(text) = read_text(&db)? {
            return Ok(UdevRecord::parse(&text)
                .by_path_names()
                .first()
                .map(|s| (*s).to_owned()));
        }
        let scan = self.by_path_scan.get_or_init(|| scan_by_path(&self.root));
        Ok(scan.get(&dev.name).and_then(|v| v.first().cloned()))
    }

    /// The block device that shares a SCSI device with character device `devno` (sg nodes).
    fn block_of_char(&self, devno: DevNo) -> Option<String> {
        let dir = self
            .root
            .real(format!("/sys/dev/char/{devno}/device/block"));
        let names = list_dir(&dir).ok()?;
        names.into_iter().next()
    }
}

/// Facts about one block device, read once per lookup.
struct Dev {
    devno: DevNo,
    name: String,
    /// The sysfs directory of the whole device (the device itself unless a sysfs partition),
    /// as a real path through the `/sys/dev/block` link.
    whole_dir: PathBuf,
    partition: Option<u32>,
    /// Kernel name of the whole device for a sysfs partition.
    sys_parent: Option<String>,
    /// dm UUID with any kpartx `part<N>-` prefix removed.
    dm_uuid: Option<String>,
    dm_name: Option<String>,
}

impl Dev {
    fn whole_name(&self) -> &str {
        self.sys_parent.as_deref().unwrap_or(&self.name)
    }
}

struct Found {
    key: DiskKey,
    detail: String,
    warnings: Vec<String>,
}

/// `part3-mpath-36…` → `(Some(3), "mpath-36…")`.
fn split_part_prefix(uuid: &str) -> (Option<u32>, &str) {
    if let Some((n, inner)) = uuid.strip_prefix("part").and_then(|r| r.split_once('-'))
        && !n.is_empty()
        && n.bytes().all(|b| b.is_ascii_digit())
        && let Ok(n) = n.parse()
    {
        return (Some(n), inner);
    }
    (None, uuid)
}

/// A sysfs SCSI device directory: the `device` link of an `sd` disk.
fn is_scsi_device(device: &Path) -> bool {
    match std::fs::read_link(device.join("subsystem")) {
        Ok(t) => file_name_str(&t) == Some("scsi"),
        Err(_) => device.join("scsi_disk").is_dir(),
    }
}

/// An INQUIRY vendor or model field from its sysfs attribute: the kernel prints the raw
/// bytes (`%.8s` / `%.16s`) and a newline; a field cut short by a NUL is padded with spaces.
fn inquiry_field<const N: usize>(attr: Option<Vec<u8>>) -> [u8; N] {
    let mut out = [b' '; N];
    if let Some(a) = attr {
        let a = a.strip_suffix(b"\n").unwrap_or(&a);
        let n = a.len().min(N);
        out[..n].copy_from_slice(&a[..n]);
    }
    out
}

/// Contents of a small attribute file; `None` if it does not exist.
fn read_bytes(path: &Path) -> Result<Option<Vec<u8>>, ResolveError> {
    let mut f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT | libc::ENOTDIR)) => {
            return Ok(None);
        }
        Err(source) => {
            return Err(ResolveError::Read {
                path: path.to_path_buf(),
                source,
            });
        }
    };
    // sysfs attributes are at most a page and arrive in one read; a short read is the end
    // of the file. A VPD page is at most 64 KiB.
    let mut buf = vec![0u8; 4096];
    let mut len = 0;
    loop {
        let n = f
            .read(&mut buf[len..])
            .map_err(|source| ResolveError::Read {
                path: path.to_path_buf(),
                source,
            })?;
        len += n;
        if n == 0 || len < buf.len() || len >= 1 << 16 {
            break;
        }
        buf.resize(buf.len() * 2, 0);
    }
    buf.truncate(len);
    Ok(Some(buf))
}

fn read_text(path: &Path) -> Result<Option<String>, ResolveError> {
    Ok(read_bytes(path)?.map(|b| String::from_utf8_lossy(&b).into_owned()))
}

fn list_dir(dir: &Path) -> Result<Vec<String>, ResolveError> {
    let rd = match std::fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return Ok(Vec::new()),
        Err(source) => {
            return Err(ResolveError::Read {
                path: dir.to_path_buf(),
                source,
            });
        }
    };
    let mut names: Vec<String> = rd
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str().map(ToOwned::to_owned))
        .collect();
    names.sort();
    Ok(names)
}

/// Kernel name → sorted by-path names, from the symlinks in `/dev/disk/by-path`.
fn scan_by_path(root: &SysRoot) -> HashMap<String, Vec<String>> {
    let mut map: HashMap<String, Vec<String>> = HashMap::new();
    let dir = root.real("/dev/disk/by-path");
    let Ok(rd) = std::fs::read_dir(&dir) else {
        return map;
    };
    for entry in rd.filter_map(Result::ok) {
        let Some(name) = entry.file_name().to_str().map(ToOwned::to_owned) else {
            continue;
        };
        // udev's links point at ../../<kernel name>; the node itself need not exist (a
        // container may not have it), so the target is resolved lexically.
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue;
        };
        let resolved = lexical_join(Path::new("/dev/disk/by-path"), &target);
        if let (Some(dev), true) = (
            file_name_str(&resolved),
            resolved.parent() == Some(Path::new("/dev")),
        ) {
            map.entry(dev.to_owned()).or_default().push(name);
        }
    }
    for v in map.values_mut() {
        v.sort();
    }
    map
}

/// `base` joined with `rel`, with `.` and `..` removed without touching the file system.
fn lexical_join(base: &Path, rel: &Path) -> PathBuf {
    let mut out = if rel.is_absolute() {
        PathBuf::from("/")
    } else {
        base.to_path_buf()
    };
    for c in rel.components() {
        match c {
            std::path::Component::ParentDir => {
                out.pop();
            }
            std::path::Component::Normal(n) => out.push(n),
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lexical() {
        let b = Path::new("/dev/disk/by-path");
        assert_eq!(
            lexical_join(b, Path::new("../../sda")),
            Path::new("/dev/sda")
        );
        assert_eq!(
            lexical_join(b, Path::new("/dev/./sdb")),
            Path::new("/dev/sdb")
        );
        assert_eq!(
            lexical_join(b, Path::new("../../../../../x")),
            Path::new("/x")
        );
    }

    #[test]
    fn part_prefix() {
        assert_eq!(split_part_prefix("part1-mpath-36"), (Some(1), "mpath-36"));
        assert_eq!(split_part_prefix("part12-LVM-x"), (Some(12), "LVM-x"));
        assert_eq!(split_part_prefix("partx-LVM-x"), (None, "partx-LVM-x"));
        assert_eq!(split_part_prefix("part-LVM-x"), (None, "part-LVM-x"));
        assert_eq!(split_part_prefix("mpath-36"), (None, "mpath-36"));
    }

    #[test]
    fn devno() {
        assert_eq!(
            DevNo::parse("8:16\n"),
            Some(DevNo {
                major: 8,
                minor: 16
            })
        );
        assert_eq!(DevNo::parse("8"), None);
        assert_eq!(
            DevNo::from_dev_t(libc::makedev(259, 3)).to_string(),
            "259:3"
        );
    }
}
