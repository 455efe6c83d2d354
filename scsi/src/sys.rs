//! The kernel ABI for `SG_IO` and (in [`blkpr`]) the block-layer PR ioctls: the only `unsafe`
//! code in disklock.
//!
//! `struct sg_io_hdr` (`<scsi/sg.h>`, the "version 3" SCSI generic interface) is declared here by
//! hand: `libc`, `nix` and `linux-raw-sys` do not carry it. Its size and every field offset are
//! pinned by compile-time assertions against the table in `<scsi/sg.h>` for LP64 targets
//! (x86_64, aarch64), so a mistake fails the build rather than corrupting memory.
//!
//! The block layer (`block/scsi_ioctl.c`, for `sd` nodes such as `/dev/sda`) and the `sg` driver
//! (`/dev/sgN`) both accept this header. `SG_IO` is synchronous: the kernel reads the CDB and any
//! outgoing data, writes any incoming data and the sense bytes, and has let go of every pointer in
//! the header by the time the ioctl returns. That is what lets [`sg_io`] take plain borrowed
//! slices.
//!
//! Everything above this module (CDBs, sense, VPD, PR) is safe code over byte slices.

use std::os::fd::{AsRawFd, BorrowedFd};

pub(crate) mod blkpr;

/// `SG_IO` from `<scsi/sg.h>`. A "bad" ioctl number: it predates the `_IOC` encoding, so it has
/// no direction or size bits. `Documentation/userspace-api/ioctl/ioctl-number.rst` reserves the
/// whole 0x22 range for `scsi/sg.h`.
pub(crate) const SG_IO: u32 = 0x2285;

/// `interface_id` value for the version 3 header (`'S'`).
const SG_INTERFACE_ID_ORIG: i32 = b'S' as i32;

/// `dxfer_direction`: no data phase (`SG_DXFER_NONE`).
const SG_DXFER_NONE: i32 = -1;
/// `dxfer_direction`: data goes from memory to the device (`SG_DXFER_TO_DEV`).
const SG_DXFER_TO_DEV: i32 = -2;
/// `dxfer_direction`: data comes from the device into memory (`SG_DXFER_FROM_DEV`).
const SG_DXFER_FROM_DEV: i32 = -3;

/// Size of the sense buffer we hand the kernel (`mx_sb_len`). The `sg` driver keeps at most 64
/// bytes (`SG_MAX_SENSE`); SPC allows up to 252, but nothing we decode lies past byte 18.
const MX_SB_LEN: u8 = 64;
/// [`MX_SB_LEN`] as a buffer length.
pub(crate) const SENSE_LEN: usize = MX_SB_LEN as usize;

/// `struct sg_io_hdr` from `<scsi/sg.h>`, field for field.
#[repr(C)]
#[derive(Debug)]
struct SgIoHdr {
    /// `'S'` for this interface version.
    interface_id: i32,
    /// One of the `SG_DXFER_*` values.
    dxfer_direction: i32,
    /// CDB length in bytes.
    cmd_len: u8,
    /// Capacity of the sense buffer at `sbp`.
    mx_sb_len: u8,
    /// 0: `dxferp` is a flat buffer, not an iovec array.
    iovec_count: u16,
    /// Length of the data buffer at `dxferp`.
    dxfer_len: u32,
    /// Data buffer (or iovec array when `iovec_count > 0`; we never do that).
    dxferp: *mut libc::c_void,
    /// The CDB. Declared `unsigned char *` in C; the kernel only reads it.
    cmdp: *const u8,
    /// Sense buffer, written by the kernel.
    sbp: *mut u8,
    /// Timeout in milliseconds (0 means the driver's default).
    timeout: u32,
    /// `SG_FLAG_*` bits; we use none (no mmap or direct-IO modes).
    flags: u32,
    /// Only used by the asynchronous `sg` read/write interface.
    pack_id: i32,
    /// Echoed back unchanged; unused.
    usr_ptr: *mut libc::c_void,
    /// Output: SCSI status byte (SAM values, e.g. 0x02 CHECK CONDITION).
    status: u8,
    /// Output: `status` shifted right by one (obsolete).
    masked_status: u8,
    /// Output: messaging level data (obsolete, SPI only).
    msg_status: u8,
    /// Output: number of sense bytes actually written.
    sb_len_wr: u8,
    /// Output: `DID_*` host adapter status.
    host_status: u16,
    /// Output: `DRIVER_*` status (with `DRIVER_SENSE` when sense is valid).
    driver_status: u16,
    /// Output: `dxfer_len` minus the bytes actually transferred.
    resid: i32,
    /// Output: milliseconds the command took.
    duration: u32,
    /// Output: `SG_INFO_*` bits.
    info: u32,
}

// Pin the layout to `<scsi/sg.h>` on LP64 (the table in dependencies.md §1).
#[cfg(target_pointer_width = "64")]
const _: () = {
    use core::mem::{align_of, offset_of, size_of};
    assert!(size_of::<SgIoHdr>() == 88);
    assert!(align_of::<SgIoHdr>() == 8);
    assert!(offset_of!(SgIoHdr, interface_id) == 0);
    assert!(offset_of!(SgIoHdr, dxfer_direction) == 4);
    assert!(offset_of!(SgIoHdr, cmd_len) == 8);
    assert!(offset_of!(SgIoHdr, mx_sb_len) == 9);
    assert!(offset_of!(SgIoHdr, iovec_count) == 10);
    assert!(offset_of!(SgIoHdr, dxfer_len) == 12);
    assert!(offset_of!(SgIoHdr, dxferp) == 16);
    assert!(offset_of!(SgIoHdr, cmdp) == 24);
    assert!(offset_of!(SgIoHdr, sbp) == 32);
    assert!(offset_of!(SgIoHdr, timeout) == 40);
    assert!(offset_of!(SgIoHdr, flags) == 44);
    assert!(offset_of!(SgIoHdr, pack_id) == 48);
    assert!(offset_of!(SgIoHdr, usr_ptr) == 56);
    assert!(offset_of!(SgIoHdr, status) == 64);
    assert!(offset_of!(SgIoHdr, masked_status) == 65);
    assert!(offset_of!(SgIoHdr, msg_status) == 66);
    assert!(offset_of!(SgIoHdr, sb_len_wr) == 67);
    assert!(offset_of!(SgIoHdr, host_status) == 68);
    assert!(offset_of!(SgIoHdr, driver_status) == 70);
    assert!(offset_of!(SgIoHdr, resid) == 72);
    assert!(offset_of!(SgIoHdr, duration) == 76);
    assert!(offset_of!(SgIoHdr, info) == 80);
};

mod ioctl {
    use super::{SG_IO, SgIoHdr};

    nix::ioctl_readwrite_bad!(
        /// `ioctl(fd, SG_IO, hdr)`: the kernel reads and updates `*hdr`.
        sg_io_raw,
        SG_IO,
        SgIoHdr
    );
}

/// The data phase of a command, borrowing the caller's buffer for the duration of the call.
#[derive(Debug)]
pub(crate) enum DataDir<'a> {
    /// No data phase (TEST UNIT READY).
    None,
    /// Data-in: the device writes into this buffer (INQUIRY, PERSISTENT RESERVE IN).
    FromDev(&'a mut [u8]),
    /// Data-out: the device reads this buffer (PERSISTENT RESERVE OUT parameter list).
    ToDev(&'a [u8]),
}

impl DataDir<'_> {
    /// A shorter-lived copy of this direction, so one buffer can serve several attempts.
    pub(crate) fn reborrow(&mut self) -> DataDir<'_> {
        match self {
            DataDir::None => DataDir::None,
            DataDir::FromDev(buf) => DataDir::FromDev(buf),
            DataDir::ToDev(buf) => DataDir::ToDev(buf),
        }
    }

    /// Length of the data buffer.
    pub(crate) fn len(&self) -> usize {
        match self {
            DataDir::None => 0,
            DataDir::FromDev(buf) => buf.len(),
            DataDir::ToDev(buf) => buf.len(),
        }
    }
}

/// The output fields of an `sg_io_hdr` after a completed `SG_IO` ioctl.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SgIoResult {
    /// SCSI status byte (SAM-5 table "Status codes": 0x00 GOOD, 0x02 CHECK CONDITION,
    /// 0x18 RESERVATION CONFLICT, ...).
    pub status: u8,
    /// Host adapter status (`DID_*`, 0 = `DID_OK`).
    pub host_status: u16,
    /// Driver status (`DRIVER_*`; 0x08 `DRIVER_SENSE` only says the sense buffer is valid).
    pub driver_status: u16,
    /// Number of valid bytes in the sense buffer.
    pub sb_len_wr: u8,
    /// Bytes of the data buffer not transferred.
    pub resid: i32,
    /// Milliseconds the command took.
    pub duration: u32,
}

/// Issues one SCSI command through `SG_IO` on `fd` and returns the completion fields.
///
/// `Err` is only the ioctl's own errno (`ENOTTY` for a node that is not SCSI, `EINVAL` for a
/// bad header, `EPERM` for a command the kernel filters). SCSI-level failures come back in
/// [`SgIoResult`] and the sense bytes in `sense`.
///
/// A CDB that is empty or longer than 255 bytes, or a data buffer longer than `u32::MAX`, is
/// refused with `EINVAL` before anything reaches the kernel.
pub(crate) fn sg_io(
    fd: BorrowedFd<'_>,
    cdb: &[u8],
    dir: DataDir<'_>,
    sense: &mut [u8; SENSE_LEN],
    timeout_ms: u32,
) -> Result<SgIoResult, nix::Error> {
    let cmd_len = u8::try_from(cdb.len()).map_err(|_| nix::Error::EINVAL)?;
    if cmd_len == 0 {
        return Err(nix::Error::EINVAL);
    }
    let dxfer_len = u32::try_from(dir.len()).map_err(|_| nix::Error::EINVAL)?;
    let (dxfer_direction, dxferp): (i32, *mut libc::c_void) = match dir {
        DataDir::None => (SG_DXFER_NONE, core::ptr::null_mut()),
        DataDir::FromDev(buf) => (SG_DXFER_FROM_DEV, buf.as_mut_ptr().cast()),
        // The kernel only reads a data-out buffer; the C field is simply not const-qualified.
        DataDir::ToDev(buf) => (SG_DXFER_TO_DEV, buf.as_ptr().cast_mut().cast()),
    };
    let mut hdr = SgIoHdr {
        interface_id: SG_INTERFACE_ID_ORIG,
        dxfer_direction,
        cmd_len,
        mx_sb_len: MX_SB_LEN,
        iovec_count: 0,
        dxfer_len,
        dxferp,
        cmdp: cdb.as_ptr(),
        sbp: sense.as_mut_ptr(),
        timeout: timeout_ms,
        flags: 0,
        pack_id: 0,
        usr_ptr: core::ptr::null_mut(),
        status: 0,
        masked_status: 0,
        msg_status: 0,
        sb_len_wr: 0,
        host_status: 0,
        driver_status: 0,
        resid: 0,
        duration: 0,
        info: 0,
    };
    // SAFETY:
    // - `fd`: a `BorrowedFd` is an open descriptor for at least the lifetime of this call.
    //   If it is not a SCSI node, `SG_IO` (magic 0x22, reserved to scsi/sg.h) is rejected with
    //   ENOTTY/EINVAL by the driver; no other driver decodes this number.
    // - `&mut hdr`: a live, aligned, fully initialised `SgIoHdr` on our stack whose size and
    //   field offsets are asserted above to equal the kernel's `struct sg_io_hdr`.
    // - `cmdp`/`cmd_len`: point into `cdb`, a slice borrowed for the whole call, of exactly
    //   `cmd_len` (1..=255) bytes; the kernel only reads it.
    // - `dxferp`/`dxfer_len`/`dxfer_direction`: for FROM_DEV the pointer comes from a `&mut [u8]`
    //   of exactly `dxfer_len` bytes, exclusively borrowed for the call, so the kernel's writes
    //   alias nothing and stay in bounds; for TO_DEV it comes from a `&[u8]` of `dxfer_len` bytes
    //   that the kernel only reads; for NONE it is null with length 0. `iovec_count` is 0, so
    //   the pointer is a flat buffer, not an iovec array; `flags` is 0 (no mmap/direct modes).
    // - `sbp`/`mx_sb_len`: an exclusively borrowed `[u8; SENSE_LEN]`, and the kernel writes at
    //   most `mx_sb_len == SENSE_LEN` bytes there.
    // - `SG_IO` is synchronous: the kernel keeps none of these pointers after returning, so the
    //   borrows above outlive every use the kernel makes of them.
    unsafe { ioctl::sg_io_raw(fd.as_raw_fd(), &mut hdr) }?;
    Ok(SgIoResult {
        status: hdr.status,
        host_status: hdr.host_status,
        driver_status: hdr.driver_status,
        sb_len_wr: hdr.sb_len_wr,
        resid: hdr.resid,
        duration: hdr.duration,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_number_matches_scsi_sg_h() {
        // <scsi/sg.h>: #define SG_IO 0x2285
        assert_eq!(SG_IO, 0x2285);
        // A "bad" ioctl: no _IOC direction or size bits, just type 0x22 and number 0x85.
        assert_eq!(SG_IO >> 8, 0x22);
        assert_eq!(SG_IO & 0xff, 0x85);
        assert_eq!(SG_IO >> 16, 0);
    }

    #[test]
    fn dxfer_values_match_scsi_sg_h() {
        assert_eq!(SG_DXFER_NONE, -1);
        assert_eq!(SG_DXFER_TO_DEV, -2);
        assert_eq!(SG_DXFER_FROM_DEV, -3);
        assert_eq!(SG_INTERFACE_ID_ORIG, 0x53);
    }

    #[cfg(target_pointer_width = "64")]
    #[test]
    fn header_layout_matches_table() {
        use core::mem::{offset_of, size_of};
        // (field, offset, size) from dependencies.md §1, checked against <scsi/sg.h>.
        let table: [(&str, usize, usize); 22] = [
            ("interface_id", offset_of!(SgIoHdr, interface_id), 0),
            ("dxfer_direction", offset_of!(SgIoHdr, dxfer_direction), 4),
            ("cmd_len", offset_of!(SgIoHdr, cmd_len), 8),
            ("mx_sb_len", offset_of!(SgIoHdr, mx_sb_len), 9),
            ("iovec_count", offset_of!(SgIoHdr, iovec_count), 10),
            ("dxfer_len", offset_of!(SgIoHdr, dxfer_len), 12),
            ("dxferp", offset_of!(SgIoHdr, dxferp), 16),
            ("cmdp", offset_of!(SgIoHdr, cmdp), 24),
            ("sbp", offset_of!(SgIoHdr, sbp), 32),
            ("timeout", offset_of!(SgIoHdr, timeout), 40),
            ("flags", offset_of!(SgIoHdr, flags), 44),
            ("pack_id", offset_of!(SgIoHdr, pack_id), 48),
            ("usr_ptr", offset_of!(SgIoHdr, usr_ptr), 56),
            ("status", offset_of!(SgIoHdr, status), 64),
            ("masked_status", offset_of!(SgIoHdr, masked_status), 65),
            ("msg_status", offset_of!(SgIoHdr, msg_status), 66),
            ("sb_len_wr", offset_of!(SgIoHdr, sb_len_wr), 67),
            ("host_status", offset_of!(SgIoHdr, host_status), 68),
            ("driver_status", offset_of!(SgIoHdr, driver_status), 70),
            ("resid", offset_of!(SgIoHdr, resid), 72),
            ("duration", offset_of!(SgIoHdr, duration), 76),
            ("info", offset_of!(SgIoHdr, info), 80),
        ];
        for (name, actual, expected) in table {
            assert_eq!(actual, expected, "offset of {name}");
        }
        assert_eq!(size_of::<SgIoHdr>(), 88);
    }

    #[test]
    fn bad_arguments_are_refused_before_the_kernel() {
        // Any descriptor will do: the checks happen before the ioctl.
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = std::os::fd::AsFd::as_fd(&file);
        let mut sense = [0u8; SENSE_LEN];
        assert_eq!(
            sg_io(fd, &[], DataDir::None, &mut sense, 1000),
            Err(nix::Error::EINVAL)
        );
        assert_eq!(
            sg_io(fd, &[0u8; 256], DataDir::None, &mut sense, 1000),
            Err(nix::Error::EINVAL)
        );
    }

    #[test]
    fn a_non_scsi_node_answers_enotty() {
        // /dev/null's driver does not implement SG_IO: the kernel says ENOTTY (or EINVAL on
        // some kernels), and nothing is written through our pointers.
        let file = std::fs::File::open("/dev/null").expect("open /dev/null");
        let fd = std::os::fd::AsFd::as_fd(&file);
        let mut sense = [0xAAu8; SENSE_LEN];
        let mut buf = [0x55u8; 36];
        let cdb = [0x12, 0, 0, 0, 36, 0];
        let err = sg_io(fd, &cdb, DataDir::FromDev(&mut buf), &mut sense, 1000).unwrap_err();
        assert!(
            matches!(err, nix::Error::ENOTTY | nix::Error::EINVAL),
            "{err}"
        );
        assert!(buf.iter().all(|&b| b == 0x55));
        assert!(sense.iter().all(|&b| b == 0xAA));
    }
}
