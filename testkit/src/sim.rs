//! A simulated logical unit with SPC-4 persistent-reservation rules, reached through any
//! number of simulated I_T nexuses (paths, hosts). Tests of the engine, the daemon and the
//! CLI logic run against it; the vm-harness tests check the same behaviour on tgt and LIO.
//!
//! Modelled: registrations per nexus, REGISTER / REGISTER AND IGNORE EXISTING KEY, RESERVE,
//! RELEASE, CLEAR, PREEMPT (and AND ABORT unless turned off, as tgt lacks it), the holder
//! rules of the three type families, key 0 reported for all-registrants reservations,
//! RESERVATION CONFLICT where SPC-4 says so, and a target restart that loses everything.
//! Not modelled: APTPL, unit attentions, READ FULL STATUS, generations beyond counting.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use disklock_scsi::cdb::Opcode;
use disklock_scsi::pr::{
    Keys, PersistentReservations, PrType, RegisterFlags, Reservation, ReservationHolder,
    ReservationKey,
};
use disklock_scsi::{ScsiError, Sense, SenseKey};

#[derive(Debug, Default)]
struct State {
    generation: u32,
    /// (nexus, key), in registration order.
    regs: Vec<(u32, u64)>,
    /// (holder nexus, its key, type); the nexus is meaningless for all-registrants types.
    res: Option<(u32, u64, PrType)>,
    no_preempt_abort: bool,
    /// Commands seen, for tests that count round trips.
    commands: usize,
}

/// The logical unit.
#[derive(Debug, Default)]
pub struct Lu {
    state: Mutex<State>,
    /// How long each command takes (a round trip), spent outside the state lock so that
    /// commands on several paths overlap as on a real target.
    latency: std::time::Duration,
}

impl Lu {
    /// A new unit; `Arc` because every path shares it.
    pub fn new() -> Arc<Lu> {
        Arc::new(Lu::default())
    }

    /// A unit whose every command takes `latency`.
    pub fn with_latency(latency: std::time::Duration) -> Arc<Lu> {
        Arc::new(Lu {
            latency,
            ..Lu::default()
        })
    }

    /// A unit without PREEMPT AND ABORT, like tgt.
    pub fn without_preempt_abort() -> Arc<Lu> {
        let lu = Lu::new();
        lu.lock().no_preempt_abort = true;
        lu
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A path through nexus `nexus`.
    pub fn path(self: &Arc<Lu>, nexus: u32) -> SimPath {
        SimPath {
            lu: Arc::clone(self),
            nexus,
        }
    }

    /// Forgets every registration and the reservation (a tgt restart).
    pub fn restart(&self) {
        let mut s = self.lock();
        s.regs.clear();
        s.res = None;
        s.generation = 0;
    }

    /// The registered keys, one per registration.
    pub fn keys(&self) -> Vec<u64> {
        self.lock().regs.iter().map(|r| r.1).collect()
    }

    /// The reservation: (key as READ RESERVATION reports it, 0 for all registrants; type).
    pub fn reservation(&self) -> Option<(u64, PrType)> {
        self.lock()
            .res
            .map(|(_, k, t)| (if t.all_registrants() { 0 } else { k }, t))
    }

    /// Whether a write through `nexus` would be allowed.
    pub fn may_write(&self, nexus: u32) -> bool {
        let s = self.lock();
        let registered = s.regs.iter().any(|r| r.0 == nexus);
        match s.res {
            None => true,
            Some((holder, _, t)) => match t {
                PrType::WriteExclusive | PrType::ExclusiveAccess => holder == nexus,
                _ => registered,
            },
        }
    }

    /// Commands received so far.
    pub fn commands(&self) -> usize {
        self.lock().commands
    }
}

/// One nexus to a [`Lu`].
#[derive(Debug)]
pub struct SimPath {
    lu: Arc<Lu>,
    nexus: u32,
}

fn conflict(op: u8) -> ScsiError {
    ScsiError::ReservationConflict {
        path: PathBuf::from("/dev/sim"),
        op: Opcode(op),
    }
}

fn illegal(op: u8, asc: u8, ascq: u8) -> ScsiError {
    ScsiError::IllegalRequest {
        path: PathBuf::from("/dev/sim"),
        op: Opcode(op),
        sense: Sense {
            key: SenseKey::IllegalRequest,
            asc,
            ascq,
            current: true,
        },
    }
}

const PR_OUT: u8 = 0x5f;

impl SimPath {
    fn state(&self) -> MutexGuard<'_, State> {
        if !self.lu.latency.is_zero() {
            std::thread::sleep(self.lu.latency);
        }
        let mut s = self.lu.lock();
        s.commands += 1;
        s
    }

    fn registered(&self, s: &State) -> Option<u64> {
        s.regs.iter().find(|r| r.0 == self.nexus).map(|r| r.1)
    }

    /// Removes the registrations matching `pred`; releases the reservation when its holder
    /// went (or, for all-registrants, when nobody is left).
    fn unregister_where(s: &mut State, pred: impl Fn(&(u32, u64)) -> bool) -> usize {
        let before = s.regs.len();
        let removed: Vec<(u32, u64)> = s.regs.iter().copied().filter(|r| pred(r)).collect();
        s.regs.retain(|r| !pred(r));
        if let Some((holder, _, t)) = s.res {
            let gone = if t.all_registrants() {
                s.regs.is_empty()
            } else {
                removed.iter().any(|r| r.0 == holder)
            };
            if gone {
                s.res = None;
            }
        }
        before - s.regs.len()
    }
}

impl PersistentReservations for SimPath {
    fn read_keys(&self) -> Result<Keys, ScsiError> {
        let s = self.state();
        Ok(Keys {
            generation: s.generation,
            keys: s.regs.iter().map(|r| ReservationKey(r.1)).collect(),
        })
    }

    fn read_reservation(&self) -> Result<Reservation, ScsiError> {
        let s = self.state();
        Ok(Reservation {
            generation: s.generation,
            holder: s.res.map(|(_, k, t)| ReservationHolder {
                key: ReservationKey(if t.all_registrants() { 0 } else { k }),
                scope: 0,
                kind: t,
            }),
        })
    }

    fn register(
        &self,
        old: ReservationKey,
        new: ReservationKey,
        flags: RegisterFlags,
    ) -> Result<(), ScsiError> {
        let mut s = self.state();
        let current = self.registered(&s);
        if !flags.ignore_existing && current.unwrap_or(0) != old.0 {
            return Err(conflict(PR_OUT));
        }
        let nexus = self.nexus;
        if new.0 == 0 {
            Self::unregister_where(&mut s, |r| r.0 == nexus);
        } else if let Some(r) = s.regs.iter_mut().find(|r| r.0 == nexus) {
            r.1 = new.0;
            if let Some(res) = s.res.as_mut().filter(|res| res.0 == nexus) {
                res.1 = new.0;
            }
        } else {
            s.regs.push((nexus, new.0));
        }
        s.generation += 1;
        Ok(())
    }

    fn reserve(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        let mut s = self.state();
        if self.registered(&s) != Some(key.0) {
            return Err(conflict(PR_OUT));
        }
        match s.res {
            None => {
                s.res = Some((self.nexus, key.0, kind));
                Ok(())
            }
            Some((holder, _, t)) if t == kind && (t.all_registrants() || holder == self.nexus) => {
                Ok(())
            }
            Some(_) => Err(conflict(PR_OUT)),
        }
    }

    fn release(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        let mut s = self.state();
        if self.registered(&s) != Some(key.0) {
            return Err(conflict(PR_OUT));
        }
        if let Some((holder, _, t)) = s.res
            && (t.all_registrants() || holder == self.nexus)
        {
            if t != kind {
                // INVALID RELEASE OF PERSISTENT RESERVATION
                return Err(illegal(PR_OUT, 0x26, 0x04));
            }
            s.res = None;
        }
        Ok(())
    }

    fn clear(&self, key: ReservationKey) -> Result<(), ScsiError> {
        let mut s = self.state();
        if self.registered(&s) != Some(key.0) {
            return Err(conflict(PR_OUT));
        }
        s.regs.clear();
        s.res = None;
        s.generation += 1;
        Ok(())
    }

    fn preempt(
        &self,
        key: ReservationKey,
        victim: ReservationKey,
        kind: PrType,
        abort: bool,
    ) -> Result<(), ScsiError> {
        let mut s = self.state();
        if abort && s.no_preempt_abort {
            return Err(illegal(PR_OUT, 0x24, 0x00));
        }
        if self.registered(&s) != Some(key.0) {
            return Err(conflict(PR_OUT));
        }
        let nexus = self.nexus;
        match s.res {
            Some((_, _, t)) if t.all_registrants() && victim.0 == 0 => {
                Self::unregister_where(&mut s, |r| r.0 != nexus);
                s.res = Some((nexus, key.0, kind));
            }
            Some((_, holder_key, _)) if holder_key == victim.0 && victim.0 != 0 => {
                Self::unregister_where(&mut s, |r| r.1 == victim.0 && r.0 != nexus);
                s.res = Some((nexus, key.0, kind));
            }
            _ => {
                if victim.0 == 0 {
                    return Err(illegal(PR_OUT, 0x26, 0x00));
                }
                let n = Self::unregister_where(&mut s, |r| r.1 == victim.0 && r.0 != nexus);
                if n == 0 {
                    return Err(conflict(PR_OUT));
                }
            }
        }
        s.generation += 1;
        Ok(())
    }
}
