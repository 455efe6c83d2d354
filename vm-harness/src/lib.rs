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
//! More pieces, each opt-in:
//!
//! - [`RigBuilder::nfs`]: an NFS server guest (kernel nfsd, NFSv4.x only, lease and
//!   grace time 10 s) exporting a tmpfs that every host has mounted at
//!   [`LOCKSPACE_MOUNT`]; guests talk over a private Ethernet hub (`10.77.0.0/24`) that
//!   relays QEMU `-netdev dgram` frames between Unix sockets in the run directory.
//! - [`RigBuilder::target_kind`]`(`[`TargetKind::Lio`]`)`: the SAN target is the
//!   kernel's LIO in a guest, configured through configfs, reached by the hosts' QEMU
//!   iSCSI clients through a user-mode port forward on 127.0.0.1; it has full SPC-4
//!   persistent reservations (PREEMPT AND ABORT, APTPL, READ FULL STATUS).
//! - Faults through each guest's QMP socket: [`Host::drop_path`] / [`Host::restore_path`]
//!   (hot-unplug and replug one SAN path) and [`Host::set_link`] (cut a host off the
//!   network and reconnect it).
//! - [`RigBuilder::program`] puts any host program into the guests, e.g. the crate's
//!   `fcntl-lock` helper (virtlockd's lock: F_SETLK on byte 0, length 1).
//!
//! Needs root, the packages `scripts/vm-deps.sh` installs, and about 100 MB in the cache.
//! Everything the rig starts (tgtd, QEMU, the hub thread) is stopped when the [`Rig`] is
//! dropped, also while a test panics; a run directory left by a process that was killed
//! outright is swept by the next rig.
//!
//! What it does not do: KVM (it crashes QEMU on the machines this runs on, so guests run
//! under TCG, about 5 s per boot, 5–8 s with udev, 7–12 s when three boot at once);
//! persistent reservations across a tgtd restart (tgt keeps them in memory only; a LIO
//! target restart is not offered yet); PREEMPT AND ABORT, APTPL and READ FULL STATUS on
//! tgt (use LIO).

#![forbid(unsafe_code)]

pub mod base64;
pub mod capture;
mod channel;
pub mod cpio;
mod error;
mod host;
pub mod image;
mod lio;
mod net;
pub mod nfs;
mod process;
pub mod qmp;
mod rig;
mod target;

pub use channel::{Hello, Output};
pub use error::{Error, Result};
pub use host::{Host, LocalDisk, LogicalVolume, MultipathMap, shell_quote};
pub use image::{Image, Overlay, Provenance};
pub use lio::{LioTarget, TargetKind};
pub use net::SUBNET;
pub use nfs::{LOCKSPACE_MOUNT, NFS_EXPORT, NfsServer};
pub use rig::{
    DEFAULT_RUN_ROOT, GUEST_DISKLOCK, INITIATOR_PREFIX, Rig, RigBuilder, TARGET_IQN, note, timed,
};
pub use target::{LUN_PRODUCT, LUN_REVISION, LUN_VENDOR, Lun, Target};
