//! The block-layer persistent reservation ioctls of `<linux/pr.h>`, declared by hand.
//!
//! `libc` and `nix` carry neither the structs nor the request numbers. Each struct's size is
//! asserted at compile time, and each request number is tested against the value gcc computes
//! from Debian 12's `<linux/pr.h>` (prior-art.md §0.5; the two 6.19 reads are computed from
//! their struct layouts, merged as commits 22a1ffea "block: add IOC_PR_READ_KEYS ioctl" and
//! its IOC_PR_READ_RESERVATION sibling).
//!
//! Every ioctl here is synchronous and copies its argument in (and out) before returning; the
//! only pointer the kernel follows besides the argument is `pr_read_keys.keys_ptr`.
//!
//! A successful call returns a non-negative `int`: 0, or a device status (`enum pr_status`,
//! e.g. 0x18 reservation conflict) that the caller interprets. Negative returns are errnos.

use std::os::fd::{AsRawFd, BorrowedFd};

/// `PR_FL_IGNORE_KEY`: REGISTER AND IGNORE EXISTING KEY (the only flag).
pub(crate) const PR_FL_IGNORE_KEY: u32 = 1;

/// `struct pr_registration`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PrRegistration {
    old_key: u64,
    new_key: u64,
    flags: u32,
    pad: u32,
}

/// `struct pr_reservation`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PrReservation {
    key: u64,
    kind: u32,
    flags: u32,
}

/// `struct pr_preempt`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PrPreempt {
    old_key: u64,
    new_key: u64,
    kind: u32,
    flags: u32,
}

/// `struct pr_clear`.
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PrClear {
    key: u64,
    flags: u32,
    pad: u32,
}

/// `struct pr_read_keys` (6.19): in, the capacity of the array at `keys_ptr`; out, the
/// generation and the number of keys the device has (possibly more than were copied).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PrReadKeys {
    generation: u32,
    num_keys: u32,
    keys_ptr: u64,
}

/// `struct pr_read_reservation` (6.19): key, generation and kernel `enum pr_type` (0 when no
/// reservation is held).
#[repr(C)]
#[derive(Debug, Default)]
pub(crate) struct PrReadReservation {
    key: u64,
    generation: u32,
    kind: u32,
}

const _: () = {
    use core::mem::{offset_of, size_of};
    assert!(size_of::<PrRegistration>() == 24);
    assert!(offset_of!(PrRegistration, flags) == 16);
    assert!(size_of::<PrReservation>() == 16);
    assert!(offset_of!(PrReservation, kind) == 8);
    assert!(size_of::<PrPreempt>() == 24);
    assert!(offset_of!(PrPreempt, kind) == 16);
    assert!(size_of::<PrClear>() == 16);
    assert!(size_of::<PrReadKeys>() == 16);
    assert!(offset_of!(PrReadKeys, keys_ptr) == 8);
    assert!(size_of::<PrReadReservation>() == 16);
    assert!(offset_of!(PrReadReservation, kind) == 12);
};

/// The `'p'` ioctl magic of `<linux/pr.h>`.
const PR_MAGIC: u8 = b'p';

mod ioctl {
    use super::*;

    nix::ioctl_write_ptr!(
        /// `IOC_PR_REGISTER`, `_IOW('p', 200, struct pr_registration)`.
        pr_register,
        PR_MAGIC,
        200,
        PrRegistration
    );
    nix::ioctl_write_ptr!(
        /// `IOC_PR_RESERVE`, `_IOW('p', 201, struct pr_reservation)`.
        pr_reserve,
        PR_MAGIC,
        201,
        PrReservation
    );
    nix::ioctl_write_ptr!(
        /// `IOC_PR_RELEASE`, `_IOW('p', 202, struct pr_reservation)`.
        pr_release,
        PR_MAGIC,
        202,
        PrReservation
    );
    nix::ioctl_write_ptr!(
        /// `IOC_PR_PREEMPT`, `_IOW('p', 203, struct pr_preempt)`.
        pr_preempt,
        PR_MAGIC,
        203,
        PrPreempt
    );
    nix::ioctl_write_ptr!(
        /// `IOC_PR_PREEMPT_ABORT`, `_IOW('p', 204, struct pr_preempt)`.
        pr_preempt_abort,
        PR_MAGIC,
        204,
        PrPreempt
    );
    nix::ioctl_write_ptr!(
        /// `IOC_PR_CLEAR`, `_IOW('p', 205, struct pr_clear)`.
        pr_clear,
        PR_MAGIC,
        205,
        PrClear
    );
    nix::ioctl_readwrite!(
        /// `IOC_PR_READ_KEYS`, `_IOWR('p', 206, struct pr_read_keys)` (Linux 6.19).
        pr_read_keys,
        PR_MAGIC,
        206,
        PrReadKeys
    );
    nix::ioctl_read!(
        /// `IOC_PR_READ_RESERVATION`, `_IOR('p', 207, struct pr_read_reservation)` (Linux 6.19).
        pr_read_reservation,
        PR_MAGIC,
        207,
        PrReadReservation
    );
}

/// A non-negative ioctl return as the `pr_status` it is.
fn status(ret: libc::c_int) -> u32 {
    ret.unsigned_abs()
}

// SAFETY (shared by the write-only ioctls below): `fd` is an open descriptor borrowed for the
// call; the argument is a live, fully initialised `#[repr(C)]` struct on our stack whose size
// (asserted above) is the size encoded in the request number, so the kernel's
// `copy_from_user` reads exactly that struct. No pointer inside these structs is followed.
// `BlockPr` only opens block devices, and the block layer (`blkdev_common_ioctl`) handles
// these request numbers itself before any driver's own ioctl handler could see them; on
// anything else the call fails with ENOTTY.

/// `IOC_PR_REGISTER`.
pub(crate) fn register(
    fd: BorrowedFd<'_>,
    old_key: u64,
    new_key: u64,
    flags: u32,
) -> nix::Result<u32> {
    let arg = PrRegistration {
        old_key,
        new_key,
        flags,
        pad: 0,
    };
    // SAFETY: see the shared comment above; `&arg` is valid for reads of the whole struct.
    unsafe { ioctl::pr_register(fd.as_raw_fd(), &arg) }.map(status)
}

/// `IOC_PR_RESERVE` (`release: false`) or `IOC_PR_RELEASE` (`release: true`). `kind` is a
/// kernel `enum pr_type`.
pub(crate) fn reserve_or_release(
    fd: BorrowedFd<'_>,
    key: u64,
    kind: u32,
    release: bool,
) -> nix::Result<u32> {
    let arg = PrReservation {
        key,
        kind,
        flags: 0,
    };
    let ret = match release {
        // SAFETY: see the shared comment above; `&arg` is valid for reads of the whole struct.
        true => unsafe { ioctl::pr_release(fd.as_raw_fd(), &arg) },
        // SAFETY: as for IOC_PR_RELEASE; same struct.
        false => unsafe { ioctl::pr_reserve(fd.as_raw_fd(), &arg) },
    };
    ret.map(status)
}

/// `IOC_PR_PREEMPT`, or `IOC_PR_PREEMPT_ABORT` with `abort`. `old_key` is ours, `new_key`
/// the victim's (the kernel passes them on as RESERVATION KEY and SERVICE ACTION RESERVATION
/// KEY).
pub(crate) fn preempt(
    fd: BorrowedFd<'_>,
    old_key: u64,
    new_key: u64,
    kind: u32,
    abort: bool,
) -> nix::Result<u32> {
    let arg = PrPreempt {
        old_key,
        new_key,
        kind,
        flags: 0,
    };
    let ret = match abort {
        // SAFETY: see the shared comment above; `&arg` is valid for reads of the whole struct.
        true => unsafe { ioctl::pr_preempt_abort(fd.as_raw_fd(), &arg) },
        // SAFETY: as for IOC_PR_PREEMPT_ABORT; same struct.
        false => unsafe { ioctl::pr_preempt(fd.as_raw_fd(), &arg) },
    };
    ret.map(status)
}

/// `IOC_PR_CLEAR`.
pub(crate) fn clear(fd: BorrowedFd<'_>, key: u64) -> nix::Result<u32> {
    let arg = PrClear {
        key,
        flags: 0,
        pad: 0,
    };
    // SAFETY: see the shared comment above; `&arg` is valid for reads of the whole struct.
    unsafe { ioctl::pr_clear(fd.as_raw_fd(), &arg) }.map(status)
}

/// What `IOC_PR_READ_KEYS` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadKeys {
    /// `pr_status` (0 on success).
    pub status: u32,
    /// PRGENERATION.
    pub generation: u32,
    /// How many keys the device has; the first `min(num_keys, keys.len())` were written.
    pub num_keys: u32,
}

/// `IOC_PR_READ_KEYS` into `keys` (at most `u32::MAX` entries are offered).
pub(crate) fn read_keys(fd: BorrowedFd<'_>, keys: &mut [u64]) -> nix::Result<ReadKeys> {
    let capacity = u32::try_from(keys.len()).unwrap_or(u32::MAX);
    let mut arg = PrReadKeys {
        generation: 0,
        num_keys: capacity,
        keys_ptr: keys.as_mut_ptr() as u64,
    };
    // SAFETY:
    // - `fd` is an open descriptor borrowed for the call; `&mut arg` is a live, initialised,
    //   exclusively borrowed `PrReadKeys` whose size (16, asserted) is the one encoded in the
    //   request number, so the kernel's copy in and copy out stay inside it.
    // - `keys_ptr` points at `keys`, exclusively borrowed for the call; the kernel writes
    //   `min(num_keys, keys on the device) * 8` bytes there, and `num_keys` is at most
    //   `keys.len()`, so every write is in bounds and aliases nothing. Any bit pattern is a
    //   valid `u64`.
    // - The ioctl is synchronous: the kernel keeps no pointer after it returns.
    let ret = unsafe { ioctl::pr_read_keys(fd.as_raw_fd(), &mut arg) }?;
    Ok(ReadKeys {
        status: status(ret),
        generation: arg.generation,
        num_keys: arg.num_keys,
    })
}

/// What `IOC_PR_READ_RESERVATION` answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ReadReservation {
    /// `pr_status` (0 on success).
    pub status: u32,
    /// The holder's key.
    pub key: u64,
    /// PRGENERATION.
    pub generation: u32,
    /// Kernel `enum pr_type`; 0 when nobody holds a reservation.
    pub kind: u32,
}

/// `IOC_PR_READ_RESERVATION`.
pub(crate) fn read_reservation(fd: BorrowedFd<'_>) -> nix::Result<ReadReservation> {
    let mut arg = PrReadReservation::default();
    // SAFETY: `fd` is an open descriptor borrowed for the call; `&mut arg` is a live,
    // exclusively borrowed `PrReadReservation` whose size (16, asserted) is the one encoded in
    // the request number, and the kernel only copies that struct out. It holds no pointers.
    let ret = unsafe { ioctl::pr_read_reservation(fd.as_raw_fd(), &mut arg) }?;
    Ok(ReadReservation {
        status: status(ret),
        key: arg.key,
        generation: arg.generation,
        kind: arg.kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    #[test]
    fn request_numbers_match_linux_pr_h() {
        // prior-art.md §0.5 (x86_64 values; the encoding is the same on aarch64).
        let w = |nr, size| nix::request_code_write!(PR_MAGIC, nr, size);
        assert_eq!(w(200, size_of::<PrRegistration>()), 0x4018_70c8);
        assert_eq!(w(201, size_of::<PrReservation>()), 0x4010_70c9);
        assert_eq!(w(202, size_of::<PrReservation>()), 0x4010_70ca);
        assert_eq!(w(203, size_of::<PrPreempt>()), 0x4018_70cb);
        assert_eq!(w(204, size_of::<PrPreempt>()), 0x4018_70cc);
        assert_eq!(w(205, size_of::<PrClear>()), 0x4010_70cd);
        let rw = nix::request_code_readwrite!(PR_MAGIC, 206, size_of::<PrReadKeys>());
        assert_eq!(rw, 0xc010_70ce);
        let r = nix::request_code_read!(PR_MAGIC, 207, size_of::<PrReadReservation>());
        assert_eq!(r, 0x8010_70cf);
        assert_eq!(PR_FL_IGNORE_KEY, 1);
    }

    #[test]
    fn not_a_block_device() {
        // /dev/null has no pr_ops: its driver does not know the request (ENOTTY).
        let null = std::fs::File::open("/dev/null").expect("open /dev/null");
        use std::os::fd::AsFd;
        let err = read_reservation(null.as_fd()).unwrap_err();
        assert_eq!(err, nix::Error::ENOTTY);
        let err = clear(null.as_fd(), 1).unwrap_err();
        assert_eq!(err, nix::Error::ENOTTY);
    }
}
