//! [`PersistentReservations`]: the transport-neutral operations enforcement logic is written
//! against.
//!
//! Two implementations ship: [`Device`](crate::Device) (SCSI PERSISTENT RESERVE IN/OUT through
//! `SG_IO`, for SCSI disks) and [`BlockPr`](crate::BlockPr) (the kernel's `IOC_PR_*` ioctls,
//! for NVMe namespaces and dm devices). Tests substitute a fake.
//!
//! Every method is one command (a [`Device`](crate::Device) retries unit attentions inside
//! it, and re-reads once if its first allocation length was too small). Expected answers are
//! matchable errors: [`ScsiError::ReservationConflict`] (not registered with that key, or the
//! reservation is someone else's), and [`ScsiError::unsupported`] for service actions, options
//! or ioctls the device or kernel lacks (e.g. tgt's missing PREEMPT AND ABORT: fall back to
//! PREEMPT).

use crate::error::ScsiError;
use crate::pr::{Keys, PrType, RegisterFlags, Reservation, ReservationKey};

/// SCSI-3 persistent reservation operations on one logical unit, as seen from this host's
/// I_T nexus (or, for dm devices through [`BlockPr`](crate::BlockPr), from all its paths).
pub trait PersistentReservations {
    /// READ KEYS: the generation and every registered key.
    fn read_keys(&self) -> Result<Keys, ScsiError>;

    /// READ RESERVATION: the generation and the reservation, if one is held.
    fn read_reservation(&self) -> Result<Reservation, ScsiError>;

    /// REGISTER (or REGISTER AND IGNORE EXISTING KEY with `flags.ignore_existing`):
    /// `old` = 0 registers `new`; `old` ≠ 0 replaces it; `new` = 0 unregisters.
    fn register(
        &self,
        old: ReservationKey,
        new: ReservationKey,
        flags: RegisterFlags,
    ) -> Result<(), ScsiError>;

    /// RESERVE: take a reservation of `kind`, registered as `key`. Repeating it with the same
    /// type succeeds; a different type, or someone else's reservation, is a conflict.
    fn reserve(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError>;

    /// RELEASE the reservation held as `key` (`kind` must match the reservation's type).
    fn release(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError>;

    /// CLEAR: remove every registration and the reservation (`key` must be registered).
    fn clear(&self, key: ReservationKey) -> Result<(), ScsiError>;

    /// PREEMPT (or PREEMPT AND ABORT with `abort`): remove `victim`'s registrations and, if
    /// `victim` held the reservation, take it over as `kind`.
    fn preempt(
        &self,
        key: ReservationKey,
        victim: ReservationKey,
        kind: PrType,
        abort: bool,
    ) -> Result<(), ScsiError>;
}
