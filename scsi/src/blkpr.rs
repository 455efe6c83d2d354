//! [`BlockPr`]: persistent reservations through the block layer's PR ioctls (`<linux/pr.h>`).
//!
//! The kernel turns `IOC_PR_*` into the device's own commands: SCSI PERSISTENT RESERVE OUT
//! for `sd`, Reservation Register/Acquire/Release for NVMe namespaces, and for a dm device
//! (multipath, a linear LV on one PV) the same call on the underlying device — REGISTER on
//! every path. That makes this the path for **NVMe namespaces and dm devices**.
//!
//! **SCSI disks should use [`Device`](crate::Device) instead.** The kernel's `sd` REGISTER
//! always sets APTPL, and targets without persist-through-power-loss (tgt, the test rig's
//! target) reject that with ILLEGAL REQUEST; SG_IO sends exactly the bits asked for. The ioctls
//! also cannot set ALL_TG_PT, report capabilities, or read the full status.
//!
//! # Reading state
//!
//! `IOC_PR_READ_KEYS` and `IOC_PR_READ_RESERVATION` arrived in Linux 6.19. Each handle probes
//! for them on first use: `ENOTTY`, `EINVAL` or `EOPNOTSUPP` on that first call means the
//! kernel (or driver) lacks the ioctl, and that answer is cached — later calls return
//! [`ScsiError::Unsupported`] without a system call. After one success, those errnos are
//! ordinary [`ScsiError::Ioctl`] failures.
//!
//! # Results
//!
//! A negative ioctl return is an errno: `ENOTTY`/`EOPNOTSUPP` → [`ScsiError::Unsupported`]
//! (no `pr_ops`, e.g. a loop device), others → [`ScsiError::Ioctl`] (`EPERM` on a partition,
//! or without `CAP_SYS_ADMIN` on this read-only descriptor). A positive return is a device
//! status (`enum pr_status`): `PR_STS_RESERVATION_CONFLICT` → [`ScsiError::ReservationConflict`],
//! anything else → [`ScsiError::PrStatus`].
//!
//! The descriptor is opened read-only, as [`Device`](crate::Device) does: root passes the
//! kernel's PR permission check (`CAP_SYS_ADMIN`) without write access, and closing a
//! descriptor opened for writing would make udev re-probe the disk.

use std::fmt;
use std::fs::File;
use std::os::fd::AsFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI32, Ordering};

use crate::cdb::{self, Opcode};
use crate::error::ScsiError;
use crate::pr::{
    InAction, Keys, PrParseError, PrType, RegisterFlags, Reservation, ReservationHolder,
    ReservationKey,
};
use crate::reservations::PersistentReservations;
use crate::sys::blkpr as sys;

/// A device status returned by a block-layer PR ioctl (`enum pr_status` in `<linux/pr.h>`,
/// Linux 6.4 and later; older kernels returned the driver's raw status, kept in `Other`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PrStatus {
    /// `PR_STS_IOERR` (0x2): generic device failure.
    IoError,
    /// `PR_STS_RESERVATION_CONFLICT` (0x18). [`BlockPr`] reports it as
    /// [`ScsiError::ReservationConflict`]; this variant exists for completeness.
    ReservationConflict,
    /// `PR_STS_RETRY_PATH_FAILURE` (0xe0000): temporary path failure; retry.
    RetryPathFailure,
    /// `PR_STS_PATH_FAST_FAILED` (0xf0000): failed by the fast-fail timer.
    PathFastFailed,
    /// `PR_STS_PATH_FAILED` (0x10000): the path is marked failed.
    PathFailed,
    /// `PR_STS_OP_NOT_SUPP` (0x7fffffff): the device does not support the request.
    OpNotSupported,
    /// `PR_STS_OP_INVALID` (0x7ffffffe): the device called the request invalid (`sd`: any
    /// ILLEGAL REQUEST with ASC 0x24 or 0x26, e.g. APTPL refused, or RELEASE of the wrong type).
    OpInvalid,
    /// Any other value.
    Other(u32),
}

impl PrStatus {
    /// The status for a positive ioctl return.
    pub fn from_code(code: u32) -> PrStatus {
        match code {
            0x2 => PrStatus::IoError,
            0x18 => PrStatus::ReservationConflict,
            0xe0000 => PrStatus::RetryPathFailure,
            0xf0000 => PrStatus::PathFastFailed,
            0x10000 => PrStatus::PathFailed,
            0x7fff_ffff => PrStatus::OpNotSupported,
            0x7fff_fffe => PrStatus::OpInvalid,
            other => PrStatus::Other(other),
        }
    }

    /// The numeric value.
    pub fn code(self) -> u32 {
        match self {
            PrStatus::IoError => 0x2,
            PrStatus::ReservationConflict => 0x18,
            PrStatus::RetryPathFailure => 0xe0000,
            PrStatus::PathFastFailed => 0xf0000,
            PrStatus::PathFailed => 0x10000,
            PrStatus::OpNotSupported => 0x7fff_ffff,
            PrStatus::OpInvalid => 0x7fff_fffe,
            PrStatus::Other(code) => code,
        }
    }

    /// `true` for the path failures, after which the command may not have reached the device.
    pub fn is_path_failure(self) -> bool {
        matches!(
            self,
            PrStatus::RetryPathFailure | PrStatus::PathFastFailed | PrStatus::PathFailed
        )
    }
}

impl fmt::Display for PrStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            PrStatus::IoError => "i/o error",
            PrStatus::ReservationConflict => "reservation conflict",
            PrStatus::RetryPathFailure => "retryable path failure",
            PrStatus::PathFastFailed => "path fast failed",
            PrStatus::PathFailed => "path failed",
            PrStatus::OpNotSupported => "operation not supported",
            PrStatus::OpInvalid => "invalid operation",
            PrStatus::Other(_) => "device status",
        };
        write!(f, "{name} ({:#x})", self.code())
    }
}

/// Names of the ioctls, for errors.
const REGISTER: &str = "IOC_PR_REGISTER";
const RESERVE: &str = "IOC_PR_RESERVE";
const RELEASE: &str = "IOC_PR_RELEASE";
const PREEMPT: &str = "IOC_PR_PREEMPT";
const PREEMPT_ABORT: &str = "IOC_PR_PREEMPT_ABORT";
const CLEAR: &str = "IOC_PR_CLEAR";
const READ_KEYS: &str = "IOC_PR_READ_KEYS";
const READ_RESERVATION: &str = "IOC_PR_READ_RESERVATION";

/// Keys asked for on the first `IOC_PR_READ_KEYS`.
const FIRST_KEYS_CAPACITY: u32 = 64;
/// The most keys `sd` can read: (65535 − 8) / 8, what fits a 16-bit allocation length. More
/// makes `sd` fail with EINVAL.
const MAX_KEYS_CAPACITY: u32 = 8190;

/// Probe state of a 6.19 read ioctl: not tried yet.
const PROBE_UNKNOWN: i32 = 0;
/// Probe state: the ioctl has worked on this handle.
const PROBE_SUPPORTED: i32 = -1;
// Any positive value: the errno that said the ioctl is missing.

/// A block device opened for the block-layer PR ioctls; see the module documentation.
#[derive(Debug)]
pub struct BlockPr {
    file: File,
    path: PathBuf,
    read_keys_probe: AtomicI32,
    read_reservation_probe: AtomicI32,
}

impl BlockPr {
    /// Opens `path` read-only and non-blocking; it must be a block device
    /// ([`ScsiError::NotBlock`] otherwise). Whether it supports PR shows at the first ioctl.
    pub fn open(path: impl AsRef<Path>) -> Result<BlockPr, ScsiError> {
        let path = path.as_ref().to_path_buf();
        let (meta, file) = crate::device::open_node(&path)?;
        if !meta.file_type().is_block_device() {
            return Err(ScsiError::NotBlock { path });
        }
        Ok(BlockPr {
            file,
            path,
            read_keys_probe: AtomicI32::new(PROBE_UNKNOWN),
            read_reservation_probe: AtomicI32::new(PROBE_UNKNOWN),
        })
    }

    /// The path the device was opened as.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `IOC_PR_REGISTER`: register `new` (replacing `old`; `old` = 0 registers anew, `new` = 0
    /// unregisters), or with `flags.ignore_existing` whatever was registered
    /// (`PR_FL_IGNORE_KEY`).
    ///
    /// `flags.aptpl` is ignored: the kernel decides (`sd` always sets APTPL, NVMe always asks
    /// to persist through power loss). `flags.all_tg_pt` cannot be expressed and is
    /// [`ScsiError::Unsupported`].
    pub fn register(
        &self,
        old: ReservationKey,
        new: ReservationKey,
        flags: RegisterFlags,
    ) -> Result<(), ScsiError> {
        if flags.all_tg_pt {
            return Err(ScsiError::Unsupported {
                path: self.path.clone(),
                what: "all_tg_pt through IOC_PR_REGISTER",
                errno: None,
            });
        }
        let kflags = match flags.ignore_existing {
            true => sys::PR_FL_IGNORE_KEY,
            false => 0,
        };
        let res = sys::register(self.file.as_fd(), old.0, new.0, kflags);
        self.out_result(REGISTER, res)
    }

    /// `IOC_PR_RESERVE`: take a reservation of `kind` with `key`.
    pub fn reserve(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        let res = sys::reserve_or_release(self.file.as_fd(), key.0, kind.kernel_code(), false);
        self.out_result(RESERVE, res)
    }

    /// `IOC_PR_RELEASE`: give up the reservation (`kind` must match it).
    pub fn release(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        let res = sys::reserve_or_release(self.file.as_fd(), key.0, kind.kernel_code(), true);
        self.out_result(RELEASE, res)
    }

    /// `IOC_PR_CLEAR`: remove every registration and the reservation (`key` must be ours).
    pub fn clear(&self, key: ReservationKey) -> Result<(), ScsiError> {
        let res = sys::clear(self.file.as_fd(), key.0);
        self.out_result(CLEAR, res)
    }

    /// `IOC_PR_PREEMPT` (or `IOC_PR_PREEMPT_ABORT` with `abort`): remove `victim`'s
    /// registrations and take its reservation as `kind`, with our `key`.
    pub fn preempt(
        &self,
        key: ReservationKey,
        victim: ReservationKey,
        kind: PrType,
        abort: bool,
    ) -> Result<(), ScsiError> {
        let res = sys::preempt(
            self.file.as_fd(),
            key.0,
            victim.0,
            kind.kernel_code(),
            abort,
        );
        self.out_result(if abort { PREEMPT_ABORT } else { PREEMPT }, res)
    }

    /// `IOC_PR_READ_KEYS` (Linux 6.19): the registered keys. Asks for 64 keys, then once more
    /// for as many as the device reported (at most 8190, the most `sd` can read).
    pub fn read_keys(&self) -> Result<Keys, ScsiError> {
        let mut capacity = FIRST_KEYS_CAPACITY;
        loop {
            let mut buf = vec![0u64; usize::try_from(capacity).unwrap_or(usize::MAX)];
            let res = sys::read_keys(self.file.as_fd(), &mut buf);
            let got = self.probed(&self.read_keys_probe, READ_KEYS, res)?;
            self.in_status(READ_KEYS, got.status)?;
            if got.num_keys <= capacity {
                buf.truncate(usize::try_from(got.num_keys).unwrap_or(usize::MAX));
                return Ok(Keys {
                    generation: got.generation,
                    keys: buf.into_iter().map(ReservationKey).collect(),
                });
            }
            if capacity >= got.num_keys.min(MAX_KEYS_CAPACITY) || capacity > FIRST_KEYS_CAPACITY {
                return Err(ScsiError::PrIn {
                    path: self.path.clone(),
                    action: InAction::ReadKeys,
                    source: PrParseError::Truncated {
                        needed: key_bytes(got.num_keys),
                        got: key_bytes(capacity),
                    },
                });
            }
            capacity = got.num_keys.min(MAX_KEYS_CAPACITY);
        }
    }

    /// `IOC_PR_READ_RESERVATION` (Linux 6.19): the reservation, if any. The kernel reports
    /// type 0 when nobody holds one; its scope is always LU_SCOPE.
    pub fn read_reservation(&self) -> Result<Reservation, ScsiError> {
        let res = sys::read_reservation(self.file.as_fd());
        let got = self.probed(&self.read_reservation_probe, READ_RESERVATION, res)?;
        self.in_status(READ_RESERVATION, got.status)?;
        let holder = match got.kind {
            0 => None,
            code => Some(ReservationHolder {
                key: ReservationKey(got.key),
                scope: crate::pr::LU_SCOPE,
                kind: PrType::from_kernel_code(code).ok_or_else(|| ScsiError::PrIn {
                    path: self.path.clone(),
                    action: InAction::ReadReservation,
                    source: PrParseError::BadKernelType(code),
                })?,
            }),
        };
        Ok(Reservation {
            generation: got.generation,
            holder,
        })
    }

    /// Applies and updates the probe cache of a 6.19 read ioctl.
    fn probed<T>(
        &self,
        probe: &AtomicI32,
        ioctl: &'static str,
        res: nix::Result<T>,
    ) -> Result<T, ScsiError> {
        let state = probe.load(Ordering::Relaxed);
        if state > 0 {
            return Err(ScsiError::Unsupported {
                path: self.path.clone(),
                what: ioctl,
                errno: None,
            });
        }
        match res {
            Ok(v) => {
                probe.store(PROBE_SUPPORTED, Ordering::Relaxed);
                Ok(v)
            }
            Err(errno @ (nix::Error::ENOTTY | nix::Error::EINVAL | nix::Error::EOPNOTSUPP))
                if state == PROBE_UNKNOWN =>
            {
                probe.store(errno as i32, Ordering::Relaxed);
                Err(ScsiError::Unsupported {
                    path: self.path.clone(),
                    what: ioctl,
                    errno: Some(errno),
                })
            }
            Err(errno) => Err(self.errno(ioctl, errno)),
        }
    }

    /// Maps an ioctl errno.
    fn errno(&self, ioctl: &'static str, errno: nix::Error) -> ScsiError {
        match errno {
            nix::Error::ENOTTY | nix::Error::EOPNOTSUPP => ScsiError::Unsupported {
                path: self.path.clone(),
                what: ioctl,
                errno: Some(errno),
            },
            source => ScsiError::Ioctl {
                path: self.path.clone(),
                ioctl,
                source,
            },
        }
    }

    /// Maps the result of a PR OUT ioctl.
    fn out_result(&self, ioctl: &'static str, res: nix::Result<u32>) -> Result<(), ScsiError> {
        let status = res.map_err(|e| self.errno(ioctl, e))?;
        self.status(ioctl, cdb::PERSISTENT_RESERVE_OUT, status)
    }

    /// Maps the status of a PR IN ioctl.
    fn in_status(&self, ioctl: &'static str, status: u32) -> Result<(), ScsiError> {
        self.status(ioctl, cdb::PERSISTENT_RESERVE_IN, status)
    }

    /// Maps a non-negative ioctl return (`pr_status`).
    fn status(&self, ioctl: &'static str, op: u8, status: u32) -> Result<(), ScsiError> {
        match status {
            0 => Ok(()),
            code => Err(match PrStatus::from_code(code) {
                PrStatus::ReservationConflict => ScsiError::ReservationConflict {
                    path: self.path.clone(),
                    op: Opcode(op),
                },
                status => ScsiError::PrStatus {
                    path: self.path.clone(),
                    ioctl,
                    status,
                },
            }),
        }
    }
}

/// READ KEYS parameter data length for `n` keys, for error reports.
fn key_bytes(n: u32) -> usize {
    8usize.saturating_add(usize::try_from(n).unwrap_or(usize::MAX).saturating_mul(8))
}

impl PersistentReservations for BlockPr {
    fn read_keys(&self) -> Result<Keys, ScsiError> {
        BlockPr::read_keys(self)
    }

    fn read_reservation(&self) -> Result<Reservation, ScsiError> {
        BlockPr::read_reservation(self)
    }

    fn register(
        &self,
        old: ReservationKey,
        new: ReservationKey,
        flags: RegisterFlags,
    ) -> Result<(), ScsiError> {
        BlockPr::register(self, old, new, flags)
    }

    fn reserve(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        BlockPr::reserve(self, key, kind)
    }

    fn release(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        BlockPr::release(self, key, kind)
    }

    fn clear(&self, key: ReservationKey) -> Result<(), ScsiError> {
        BlockPr::clear(self, key)
    }

    fn preempt(
        &self,
        key: ReservationKey,
        victim: ReservationKey,
        kind: PrType,
        abort: bool,
    ) -> Result<(), ScsiError> {
        BlockPr::preempt(self, key, victim, kind, abort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_match_linux_pr_h() {
        for (code, status) in [
            (0x2, PrStatus::IoError),
            (0x18, PrStatus::ReservationConflict),
            (0xe0000, PrStatus::RetryPathFailure),
            (0xf0000, PrStatus::PathFastFailed),
            (0x10000, PrStatus::PathFailed),
            (0x7fff_ffff, PrStatus::OpNotSupported),
            (0x7fff_fffe, PrStatus::OpInvalid),
            (0x83, PrStatus::Other(0x83)),
        ] {
            assert_eq!(PrStatus::from_code(code), status);
            assert_eq!(status.code(), code);
        }
        assert!(PrStatus::PathFailed.is_path_failure());
        assert!(!PrStatus::IoError.is_path_failure());
        assert_eq!(
            PrStatus::OpInvalid.to_string(),
            "invalid operation (0x7ffffffe)"
        );
    }

    #[test]
    fn open_rejects_non_block_nodes() {
        assert!(matches!(
            BlockPr::open("/dev/null"),
            Err(ScsiError::NotBlock { .. })
        ));
        assert!(matches!(
            BlockPr::open(std::env::temp_dir()),
            Err(ScsiError::NotBlock { .. })
        ));
        assert!(matches!(
            BlockPr::open("/nonexistent/disklock-blkpr-test"),
            Err(ScsiError::Open { .. })
        ));
    }

    /// A `BlockPr` over any file, to exercise the result mapping without a block device.
    fn fake() -> BlockPr {
        BlockPr {
            file: File::open("/dev/null").expect("open /dev/null"),
            path: "/dev/fake".into(),
            read_keys_probe: AtomicI32::new(PROBE_UNKNOWN),
            read_reservation_probe: AtomicI32::new(PROBE_UNKNOWN),
        }
    }

    #[test]
    fn statuses_map_to_errors() {
        let b = fake();
        assert!(b.out_result(RESERVE, Ok(0)).is_ok());
        match b.out_result(RESERVE, Ok(0x18)) {
            Err(ScsiError::ReservationConflict { op, .. }) => {
                assert_eq!(op, Opcode(cdb::PERSISTENT_RESERVE_OUT))
            }
            other => panic!("{other:?}"),
        }
        match b.out_result(REGISTER, Ok(0x7fff_fffe)) {
            Err(ScsiError::PrStatus { status, ioctl, .. }) => {
                assert_eq!((status, ioctl), (PrStatus::OpInvalid, REGISTER))
            }
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            b.out_result(CLEAR, Err(nix::Error::EOPNOTSUPP)),
            Err(ScsiError::Unsupported { .. })
        ));
        assert!(matches!(
            b.out_result(CLEAR, Err(nix::Error::EPERM)),
            Err(ScsiError::Ioctl { .. })
        ));
        assert!(matches!(
            b.in_status(READ_KEYS, 0x18),
            Err(ScsiError::ReservationConflict { op, .. }) if op == Opcode(cdb::PERSISTENT_RESERVE_IN)
        ));
    }

    #[test]
    fn probe_is_cached() {
        let b = fake();
        let probe = &b.read_keys_probe;
        // First EINVAL: the kernel lacks the ioctl.
        let e = b
            .probed::<()>(probe, READ_KEYS, Err(nix::Error::EINVAL))
            .unwrap_err();
        assert!(matches!(
            e,
            ScsiError::Unsupported {
                errno: Some(nix::Error::EINVAL),
                ..
            }
        ));
        // Cached: even a success from below is not consulted.
        let e = b.probed(probe, READ_KEYS, Ok(())).unwrap_err();
        assert!(matches!(e, ScsiError::Unsupported { errno: None, .. }));

        // Once it worked, EINVAL is an ordinary failure.
        let b = fake();
        let probe = &b.read_keys_probe;
        b.probed(probe, READ_KEYS, Ok(())).unwrap();
        let e = b
            .probed::<()>(probe, READ_KEYS, Err(nix::Error::EINVAL))
            .unwrap_err();
        assert!(matches!(e, ScsiError::Ioctl { .. }));
        // Other errnos never set the cache.
        let b = fake();
        let probe = &b.read_reservation_probe;
        let e = b
            .probed::<()>(probe, READ_RESERVATION, Err(nix::Error::EPERM))
            .unwrap_err();
        assert!(matches!(e, ScsiError::Ioctl { .. }));
        assert_eq!(probe.load(Ordering::Relaxed), PROBE_UNKNOWN);
    }

    #[test]
    fn real_ioctls_on_a_non_block_fd_are_unsupported() {
        // /dev/null answers every PR ioctl with ENOTTY.
        let b = fake();
        assert!(matches!(
            b.read_keys(),
            Err(ScsiError::Unsupported {
                errno: Some(nix::Error::ENOTTY),
                ..
            })
        ));
        assert!(matches!(
            b.read_keys(),
            Err(ScsiError::Unsupported { errno: None, .. })
        ));
        assert!(matches!(
            b.read_reservation(),
            Err(ScsiError::Unsupported { .. })
        ));
        assert!(
            b.reserve(ReservationKey(1), PrType::WriteExclusive)
                .unwrap_err()
                .is_unsupported()
        );
        let all_tg_pt = RegisterFlags {
            all_tg_pt: true,
            ..RegisterFlags::default()
        };
        assert!(matches!(
            b.register(ReservationKey(0), ReservationKey(1), all_tg_pt),
            Err(ScsiError::Unsupported { errno: None, .. })
        ));
    }
}
