//! SCSI bytes for disklock: SG_IO, CDBs, sense, VPD and persistent reservations.
//!
//! disklock names shared LUNs by their WWID and guards them with SCSI-3 persistent
//! reservations. This crate is everything between those ideas and the kernel's `SG_IO` and
//! block-layer PR ioctls.
//!
//! # Layers
//!
//! From the kernel up; only the last one touches a file descriptor.
//!
//! - `sys` (private): the hand-declared `struct sg_io_hdr`, its layout assertions and the
//!   `SG_IO` ioctl; `sys::blkpr`, the `<linux/pr.h>` structs and `IOC_PR_*` ioctls. **The
//!   only `unsafe` code in the project**; the rest of the crate denies it.
//! - [`cdb`]: pure CDB builders (INQUIRY, TEST UNIT READY, PERSISTENT RESERVE IN/OUT) and
//!   [`cdb::Opcode`] names.
//! - [`sense`]: pure decoder of fixed and descriptor sense data into [`Sense`].
//! - [`pr`]: pure persistent reservation types and codecs: [`ReservationKey`], [`PrType`]
//!   (the one SCSI ↔ kernel type-code mapping), the PR OUT parameter list, and decoders of
//!   READ KEYS, READ RESERVATION, REPORT CAPABILITIES, READ FULL STATUS and TransportIDs.
//! - [`inquiry`]: pure parser of standard INQUIRY data ([`StandardInquiry`]).
//! - [`vpd`]: pure parsers of VPD pages 0x00, 0x80 and 0x83, and the WWID strings derived from
//!   them: [`vpd::scsi_id_wwid`] (what udev's `scsi_id -g -u` prints, the form libvirt uses) and
//!   [`vpd::SysfsWwid`] (the kernel's `device/wwid`).
//! - [`device`]: [`Device`], an open SCSI node. Every command goes through one private choke
//!   point that retries unit attentions and maps completions to [`ScsiError`]; that includes
//!   PERSISTENT RESERVE IN/OUT (`pr_read_keys`, `pr_register`, `pr_preempt`, …).
//! - [`blkpr`]: [`BlockPr`], the kernel's block-layer PR ioctls for NVMe namespaces and dm
//!   devices (SCSI disks use [`Device`]: the kernel's SCSI REGISTER always sets APTPL).
//! - [`reservations`]: [`PersistentReservations`], the transport-neutral trait both implement;
//!   enforcement logic is written against it and tested with a fake.
//!
//! Errors: [`ScsiError`] keeps expected answers matchable — `ReservationConflict`, and
//! [`ScsiError::unsupported`] / [`ScsiError::is_unsupported_service_action`] for what the
//! device or kernel lacks.
//!
//! # Example
//!
//! ```no_run
//! # fn main() -> Result<(), disklock_scsi::ScsiError> {
//! let dev = disklock_scsi::Device::open("/dev/sda")?;
//! let inq = dev.inquiry_standard()?;
//! println!("{} {}", inq.vendor_str(), inq.product_str());
//! if let Some(wwid) = dev.scsi_id_wwid()? {
//!     println!("{wwid}"); // e.g. 36000000000000000000000e000000001
//! }
//! # Ok(())
//! # }
//! ```
//!
//! Persistent reservations, written against the trait so that the same code drives SG_IO,
//! the block-layer ioctls or a test fake:
//!
//! ```no_run
//! use disklock_scsi::{
//!     Device, PersistentReservations, PrType, RegisterFlags, ReservationKey, ScsiError,
//! };
//!
//! fn take(pr: &impl PersistentReservations, me: ReservationKey) -> Result<bool, ScsiError> {
//!     let flags = RegisterFlags { ignore_existing: true, ..Default::default() };
//!     pr.register(ReservationKey::ZERO, me, flags)?;
//!     match pr.reserve(me, PrType::WriteExclusiveRegistrantsOnly) {
//!         Ok(()) => Ok(true),
//!         Err(e) if e.is_reservation_conflict() => Ok(false), // someone else holds it
//!         Err(e) => Err(e),
//!     }
//! }
//! # fn main() -> Result<(), ScsiError> {
//! let dev = Device::open("/dev/sdb")?;
//! let me: ReservationKey = "0x6c9d0002".parse().expect("valid key");
//! take(&dev, me)?;
//! println!("{:?}", dev.pr_read_reservation()?.holder);
//! # Ok(())
//! # }
//! ```
//!
//! The byte-level functions need no device:
//!
//! ```
//! use disklock_scsi::vpd;
//! let page = [0x00, 0x83, 0x00, 0x0C, 0x01, 0x03, 0x00, 0x08, 0x50, 0x00, 0xc5, 0x00, 0x12,
//!             0x34, 0x56, 0x78];
//! let designators = vpd::device_identification(&page).unwrap();
//! assert_eq!(designators[0].hex(), "5000c50012345678");
//! let wwid = vpd::scsi_id_wwid(Some(&page), None, b"ATA     ", b"SOMEDISK        ");
//! assert_eq!(wwid.as_deref(), Some("35000c50012345678"));
//!
//! use disklock_scsi::pr;
//! // READ KEYS: generation 18, two keys (what tgt returned in test-rig.md §3).
//! let data = [0, 0, 0, 18, 0, 0, 0, 16,
//!             0xaa, 0xaa, 0, 0, 0, 0, 0, 1,
//!             0xbb, 0xbb, 0, 0, 0, 0, 0, 2];
//! let keys = pr::parse_read_keys(&data).unwrap();
//! assert_eq!(keys.keys[1].to_string(), "0xbbbb000000000002");
//! assert_eq!(pr::PrType::from_scsi_code(5).unwrap().kernel_code(), 3);
//! ```
//!
//! # What it does not do
//!
//! - No device discovery or sysfs/udev reading: callers hand it a node path or bytes.
//! - No SG_IO v4 (bsg), no asynchronous `sg` read/write interface, no mmap or direct I/O.
//! - No READ/WRITE or other data-path commands; no ATA or NVMe passthrough.
//! - No retries beyond unit attentions: BUSY, timeouts and transport errors go to the caller.
//! - No REGISTER AND MOVE, REPLACE LOST RESERVATION or SPEC_I_PT TransportID lists in PR OUT.
//! - No policy: which key, which type, when to preempt is the caller's business.
//! - `SG_IO` and the PR ioctls are not exercised on the development host (it has no SCSI
//!   layer); [`Device`] and [`BlockPr`] are tested inside QEMU guests.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod blkpr;
pub mod cdb;
pub mod device;
mod error;
pub mod inquiry;
pub mod pr;
pub mod reservations;
pub mod sense;
#[allow(unsafe_code)]
mod sys;
pub mod vpd;

pub use blkpr::BlockPr;
pub use device::Device;
pub use error::{ScsiError, UnsupportedKind};
pub use inquiry::StandardInquiry;
pub use pr::{PrType, RegisterFlags, ReservationKey};
pub use reservations::PersistentReservations;
pub use sense::{Sense, SenseKey};
