//! A multi-host SAN rig for disklock's real-device tests.
//!
//! The rig runs a private `tgtd` (userspace iSCSI target with SCSI-3 persistent
//! reservations) on 127.0.0.1 and boots K QEMU TCG guests ("hosts") whose virtio-scsi
//! `scsi-block` drives reach the target's LUNs through QEMU's iSCSI client. Each guest
//! therefore sees real `/dev/sdX` devices, with real PR passthrough, udev, LVM and
//! dm-multipath; two guests are two hosts on one SAN.
//!
//! The guest image (a Debian kernel as an uncompressed ELF `vmlinux` plus a busybox
//! initramfs with sg3-utils, lvm2, udev and multipath-tools) is built from Debian packages
//! by `guest/build-image.sh` and cached by content under `$DISKLOCK_VM_CACHE`
//! (default `/var/cache/disklock-vm`). A freshly built `disklock` binary travels in a
//! small second cpio appended at each rig start, so rebuilding disklock never rebuilds
//! the image.
//!
//! ```no_run
//! use disklock_vm_harness::Rig;
//!
//! # fn main() -> disklock_vm_harness::Result<()> {
//! let rig = Rig::builder().luns(2).hosts(2).paths(1).udev(false).start()?;
//! let (a, b) = (rig.host(0), rig.host(1));
//! let sda = a.lun_disk(1, 0)?;
//! a.run_ok(&format!("sg_persist -n --out --register --param-sark=0xa /dev/{sda}"))?;
//! a.run_ok(&format!("sg_persist -n --out --reserve --param-rk=0xa --prout-type=1 /dev/{sda}"))?;
//! let sdb = b.lun_disk(1, 0)?;
//! let write = b.run(&format!("dd if=/dev/zero of=/dev/{sdb} bs=512 count=1 oflag=direct"))?;
//! assert!(!write.success(), "reservation conflict expected");
//! a.power_off();            // fault: host A loses power
//! rig.target().restart()?;  // fault: the target forgets every reservation
//! # Ok(())
//! # }
//! ```
//!
//! Needs root, the packages `scripts/vm-deps.sh` installs, and about 100 MB in the cache.
//! Everything the rig starts (tgtd, QEMU) is killed when the [`Rig`] is dropped, also
//! while a test panics; a run directory left by a process that was killed outright is
//! swept by the next rig.
//!
//! What it does not do: KVM (it crashes QEMU on the machines this runs on, so guests run
//! under TCG, about 5 s per boot, 5–8 s with udev); networking between guests (no NFS
//! server or LIO target in a guest yet); persistent reservations across a target restart
//! (tgt keeps them in memory only); PREEMPT AND ABORT, APTPL and READ FULL STATUS (tgt
//! lacks them).

#![forbid(unsafe_code)]

pub mod base64;
pub mod capture;
mod channel;
pub mod cpio;
mod error;
mod host;
pub mod image;
mod process;
mod rig;
mod target;

pub use channel::{Hello, Output};
pub use error::{Error, Result};
pub use host::{Host, LocalDisk, LogicalVolume, MultipathMap, shell_quote};
pub use image::{Image, Overlay, Provenance};
pub use rig::{
    DEFAULT_RUN_ROOT, GUEST_DISKLOCK, INITIATOR_PREFIX, Rig, RigBuilder, TARGET_IQN, note, timed,
};
pub use target::{LUN_PRODUCT, LUN_REVISION, LUN_VENDOR, Lun, Target};
