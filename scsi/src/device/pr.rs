//! PERSISTENT RESERVE IN and OUT on a [`Device`], through the one `execute` choke point.
//!
//! PR OUT goes over the same read-only descriptor as everything else: the kernel's SG_IO
//! command filter lets a caller with `CAP_SYS_RAWIO` send any command on an `O_RDONLY` fd, and
//! opening the disk read-write would make udev re-probe it on close. Without that capability
//! (not root), PR OUT on a read-only fd fails with `EPERM` ([`ScsiError::Io`]).
//!
//! PR IN asks for [`PR_IN_FIRST_ALLOC_LEN`] bytes; when the answer's length field says there is
//! more ([`PrParseError::Truncated`]), it asks once more with exactly that length (at most
//! 65 535, the 16-bit ALLOCATION LENGTH's limit). A unit attention (e.g. RESERVATIONS
//! PREEMPTED after another host's PREEMPT) is retried by `execute` like for every command: the
//! device did not run a command it answered with UNIT ATTENTION, so sending a PR OUT again is
//! safe.

use super::Device;
use crate::cdb;
use crate::error::ScsiError;
use crate::pr::{
    self, Capabilities, FullStatus, InAction, Keys, OutAction, OutParams, PrParseError, PrType,
    RegisterFlags, Reservation, ReservationKey,
};
use crate::reservations::PersistentReservations;
use crate::sys::DataDir;

/// Allocation length of the first PERSISTENT RESERVE IN: room for 127 keys, or a few full
/// status descriptors with iSCSI names.
pub const PR_IN_FIRST_ALLOC_LEN: u16 = 1024;

impl Device {
    /// PERSISTENT RESERVE IN, READ KEYS.
    pub fn pr_read_keys(&self) -> Result<Keys, ScsiError> {
        self.pr_in(InAction::ReadKeys, pr::parse_read_keys)
    }

    /// PERSISTENT RESERVE IN, READ RESERVATION.
    pub fn pr_read_reservation(&self) -> Result<Reservation, ScsiError> {
        self.pr_in(InAction::ReadReservation, pr::parse_read_reservation)
    }

    /// PERSISTENT RESERVE IN, REPORT CAPABILITIES.
    pub fn pr_report_capabilities(&self) -> Result<Capabilities, ScsiError> {
        self.pr_in(InAction::ReportCapabilities, pr::parse_report_capabilities)
    }

    /// PERSISTENT RESERVE IN, READ FULL STATUS (tgt answers ILLEGAL REQUEST:
    /// [`ScsiError::is_unsupported_service_action`]).
    pub fn pr_read_full_status(&self) -> Result<FullStatus, ScsiError> {
        self.pr_in(InAction::ReadFullStatus, pr::parse_read_full_status)
    }

    /// PERSISTENT RESERVE OUT, REGISTER (or REGISTER AND IGNORE EXISTING KEY with
    /// `flags.ignore_existing`): RESERVATION KEY `old`, SERVICE ACTION RESERVATION KEY `new`,
    /// APTPL and ALL_TG_PT from `flags`.
    pub fn pr_register(
        &self,
        old: ReservationKey,
        new: ReservationKey,
        flags: RegisterFlags,
    ) -> Result<(), ScsiError> {
        let action = match flags.ignore_existing {
            true => OutAction::RegisterAndIgnoreExistingKey,
            false => OutAction::Register,
        };
        let params = OutParams {
            key: old,
            sa_key: new,
            aptpl: flags.aptpl,
            all_tg_pt: flags.all_tg_pt,
            spec_i_pt: false,
        };
        self.pr_out(action, None, &params)
    }

    /// PERSISTENT RESERVE OUT, RESERVE `kind` (LU_SCOPE) with `key`.
    pub fn pr_reserve(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        self.pr_out(OutAction::Reserve, Some(kind), &key_only(key))
    }

    /// PERSISTENT RESERVE OUT, RELEASE `kind` held with `key`.
    pub fn pr_release(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        self.pr_out(OutAction::Release, Some(kind), &key_only(key))
    }

    /// PERSISTENT RESERVE OUT, CLEAR with `key`.
    pub fn pr_clear(&self, key: ReservationKey) -> Result<(), ScsiError> {
        self.pr_out(OutAction::Clear, None, &key_only(key))
    }

    /// PERSISTENT RESERVE OUT, PREEMPT (or PREEMPT AND ABORT with `abort`) of `victim`, taking
    /// the reservation as `kind` with our `key`.
    pub fn pr_preempt(
        &self,
        key: ReservationKey,
        victim: ReservationKey,
        kind: PrType,
        abort: bool,
    ) -> Result<(), ScsiError> {
        let action = match abort {
            true => OutAction::PreemptAndAbort,
            false => OutAction::Preempt,
        };
        let params = OutParams {
            sa_key: victim,
            ..key_only(key)
        };
        self.pr_out(action, Some(kind), &params)
    }

    /// One PERSISTENT RESERVE IN, decoded by `parse`, asked again once if truncated.
    fn pr_in<T>(
        &self,
        action: InAction,
        parse: fn(&[u8]) -> Result<T, PrParseError>,
    ) -> Result<T, ScsiError> {
        let mut alloc = PR_IN_FIRST_ALLOC_LEN;
        let mut retried = false;
        loop {
            let data = self.pr_in_raw(action, alloc)?;
            match parse(&data) {
                Ok(value) => return Ok(value),
                Err(PrParseError::Truncated { needed, .. })
                    if !retried && needed > usize::from(alloc) =>
                {
                    alloc = u16::try_from(needed).unwrap_or(u16::MAX);
                    retried = true;
                }
                Err(source) => {
                    return Err(ScsiError::PrIn {
                        path: self.path.clone(),
                        action,
                        source,
                    });
                }
            }
        }
    }

    /// The bytes one PERSISTENT RESERVE IN returned.
    fn pr_in_raw(&self, action: InAction, alloc: u16) -> Result<Vec<u8>, ScsiError> {
        let cdb = cdb::persistent_reserve_in(action, alloc);
        let mut buf = vec![0u8; usize::from(alloc)];
        let done = self.execute(&cdb, DataDir::FromDev(&mut buf))?;
        buf.truncate(done.transferred);
        Ok(buf)
    }

    /// One PERSISTENT RESERVE OUT with the basic 24-byte parameter list.
    fn pr_out(
        &self,
        action: OutAction,
        kind: Option<PrType>,
        params: &OutParams,
    ) -> Result<(), ScsiError> {
        let (cdb, params) = pr::out_command(action, kind, params);
        self.execute(&cdb, DataDir::ToDev(&params)).map(drop)
    }
}

/// Parameters carrying only RESERVATION KEY.
fn key_only(key: ReservationKey) -> OutParams {
    OutParams {
        key,
        ..OutParams::default()
    }
}

impl PersistentReservations for Device {
    fn read_keys(&self) -> Result<Keys, ScsiError> {
        self.pr_read_keys()
    }

    fn read_reservation(&self) -> Result<Reservation, ScsiError> {
        self.pr_read_reservation()
    }

    fn register(
        &self,
        old: ReservationKey,
        new: ReservationKey,
        flags: RegisterFlags,
    ) -> Result<(), ScsiError> {
        self.pr_register(old, new, flags)
    }

    fn reserve(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        self.pr_reserve(key, kind)
    }

    fn release(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        self.pr_release(key, kind)
    }

    fn clear(&self, key: ReservationKey) -> Result<(), ScsiError> {
        self.pr_clear(key)
    }

    fn preempt(
        &self,
        key: ReservationKey,
        victim: ReservationKey,
        kind: PrType,
        abort: bool,
    ) -> Result<(), ScsiError> {
        self.pr_preempt(key, victim, kind, abort)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preempt_parameters() {
        // sg_persist -o -P -T 5 -K 0xbbbb000000000002 -S 0xaaaa000000000001 (test-rig.md §3):
        // CDB 5f 04 05 …, keys in bytes 0–15.
        let params = OutParams {
            sa_key: ReservationKey(0xaaaa_0000_0000_0001),
            ..key_only(ReservationKey(0xbbbb_0000_0000_0002))
        };
        let (cdb, list) = pr::out_command(
            OutAction::Preempt,
            Some(PrType::WriteExclusiveRegistrantsOnly),
            &params,
        );
        assert_eq!(cdb, [0x5F, 0x04, 0x05, 0, 0, 0, 0, 0, 24, 0]);
        assert_eq!(&list[..8], &[0xbb, 0xbb, 0, 0, 0, 0, 0, 2]);
        assert_eq!(&list[8..16], &[0xaa, 0xaa, 0, 0, 0, 0, 0, 1]);
        assert_eq!(&list[16..], &[0; 8]);
    }
}
