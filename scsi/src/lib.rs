//! SCSI bytes for disklock: SG_IO, CDBs, sense, VPD and persistent reservations.
//!
//! disklock names shared LUNs by their WWID and (later) guards them with SCSI-3 persistent
//! reservations. This crate is everything between those ideas and the kernel's `SG_IO` ioctl.
//!
//! # Layers
//!
//! From the kernel up; only the last one touches a file descriptor.
//!
//! - `sys` (private): the hand-declared `struct sg_io_hdr`, its layout assertions and the
//!   `SG_IO` ioctl. **The only `unsafe` code in the project**; the rest of the crate denies it.
//! - [`cdb`]: pure CDB builders (INQUIRY, TEST UNIT READY) and [`cdb::Opcode`] names.
//! - [`sense`]: pure decoder of fixed and descriptor sense data into [`Sense`].
//! - [`inquiry`]: pure parser of standard INQUIRY data ([`StandardInquiry`]).
//! - [`vpd`]: pure parsers of VPD pages 0x00, 0x80 and 0x83, and the WWID strings derived from
//!   them: [`vpd::scsi_id_wwid`] (what udev's `scsi_id -g -u` prints, the form libvirt uses) and
//!   [`vpd::SysfsWwid`] (the kernel's `device/wwid`).
//! - [`device`]: [`Device`], an open SCSI node. Every command goes through one private choke
//!   point that retries unit attentions and maps completions to [`ScsiError`].
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
//! ```
//!
//! # What it does not do
//!
//! - No device discovery or sysfs/udev reading: callers hand it a node path or bytes.
//! - No SG_IO v4 (bsg), no asynchronous `sg` read/write interface, no mmap or direct I/O.
//! - No READ/WRITE or other data-path commands; no ATA or NVMe passthrough.
//! - No retries beyond unit attentions: BUSY, timeouts and transport errors go to the caller.
//! - `SG_IO` is not exercised on the development host (it has no SCSI layer); [`Device`] is
//!   tested inside QEMU guests.

#![deny(unsafe_code)]
#![deny(missing_docs)]

pub mod cdb;
pub mod device;
mod error;
pub mod inquiry;
pub mod sense;
#[allow(unsafe_code)]
mod sys;
pub mod vpd;

pub use device::Device;
pub use error::ScsiError;
pub use inquiry::StandardInquiry;
pub use sense::{Sense, SenseKey};
