//! The resolver: any path to a block device (or a disk image) → a key that names the disk
//! identically on every host that sees it.
//!
//! ```no_run
//! use disklock_naming::{Resolver, Source, SysRoot};
//! let r = Resolver::new(SysRoot::host(), &Source::DEFAULT_ORDER);
//! let res = r.resolve_path("/dev/disk/by-id/wwn-0x6000000000000000000000e000000001".as_ref(), "/".as_ref())?;
//! println!("{} {} {}", res.key, res.source, res.block.unwrap().devno);
//! # Ok::<(), disklock_naming::ResolveError>(())
//! ```
//!
//! Key sources, tried in a configurable order (default below):
//!
//! | source | applies to | key |
//! |---|---|---|
//! | `lvm-uuid` | LVM LVs (dm uuid `LVM-…`) | LV UUID, dashed as `lvs -o uuid` prints it |
//! | `scsi-wwid` | SCSI disks, dm-multipath maps | WWID as `scsi_id --whitelisted --replace-whitespace` prints it, from VPD 0x83/0x80 in sysfs (SG_IO INQUIRY fallback) or the map's `mpath-<wwid>` uuid |
//! | `nvme-wwid` | NVMe namespaces | the kernel's `wwid` attribute verbatim (`eui.…`, `nvme.…`, `uuid.…`) |
//! | `by-path-sha256` | devices with a `/dev/disk/by-path` name | SHA-256 of `/dev/disk/by-path/NAME` (udev database `S:` lines, else the symlinks) |
//! | `path-sha256` | anything | SHA-256 of `/dev/NAME` (`/dev/mapper/NAME` for dm): **host-local** |
//! | `file-sha256` | regular files (disk images) | SHA-256 of the canonical absolute path |
//!
//! Partitions get their whole device's key plus `-part<N>` (see [`resolve`]).
//!
//! All reading goes through a [`SysRoot`], so tests and containers can point the resolver at
//! another tree. The only device I/O is the optional SG_IO INQUIRY when sysfs lacks VPD pages.
//! This crate knows nothing of leases, lockspaces or the daemon; it never spawns processes.

#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod compat;
pub mod enumerate;
pub mod key;
pub mod resolve;
pub mod sysroot;
pub mod udevdb;

pub use key::{DiskKey, LockspaceKind, Source};
pub use resolve::{BlockInfo, DevNo, PathKind, Resolution, ResolveError, Resolver, StoragePath};
pub use sysroot::SysRoot;
