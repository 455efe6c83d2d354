//! The persistent-reservation layer of the daemon: a [`Backend`] that takes the lease file
//! first and then the disk's reservation at the storage, and gives both back in the other
//! order.
//!
//! The table knows nothing of reservations: it asks its backend for a lease, and this one
//! says Busy when the lease is free but another host holds the reservation (so nothing stays
//! taken, as for any busy disk). Which disks get a reservation, with what type and whether a
//! holder may be preempted, the shell says before each acquire ([`PrBackend::plan`]); held
//! reservations are kept here with their open paths (one fd per path for as long as the disk
//! is held: no process is spawned and nothing is reopened on the lock path), and
//! [`PrBackend::maintain`] re-checks them: a path that appeared is registered, a reservation a
//! target lost is made again.

use std::collections::HashMap;
use std::path::Path;

use disklock_naming::{DevNo, DiskKey, Resolver};
use disklock_scsi::pr::{PersistentReservations, PrType, ReservationKey};

use super::table::{Backend, FileBackend};
use crate::lockspace::{self, Acquired, Busy, HolderRef, LeaseError, Mode, Released};
use crate::output::bounded;
use crate::pr::engine::{self, Drift, PrError};
use crate::pr::{Handle, open_path};

/// How one disk of the next acquire is to be reserved.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The disk's device (its storage paths are found from it).
    pub devno: DevNo,
    /// The disk as the client named it (for messages).
    pub disk: String,
    /// Take the disk from the current holder if it is reserved by another key.
    pub preempt: bool,
}

/// A reservation this daemon holds.
struct Hold {
    devno: DevNo,
    disk: String,
    kind: PrType,
    paths: Vec<engine::Path<Handle>>,
    /// The PR generation the last check saw (`None` before the first).
    generation: Option<u32>,
}

/// A lease file lock and, when the disk has one, the key of its reservation here.
#[derive(Debug)]
pub struct PrLease {
    file: lockspace::Lease,
    reserved: Option<DiskKey>,
}

/// Reservation types and this host's key.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// This host's key.
    pub key: ReservationKey,
    /// The type of an exclusive disk.
    pub exclusive: PrType,
    /// The type a shared disk joins.
    pub shared: PrType,
}

/// Something [`PrBackend::maintain`] found or did, for the log.
#[derive(Debug)]
pub struct Finding {
    /// The disk.
    pub disk: String,
    /// What differed.
    pub drift: Drift,
    /// Whether it was repaired.
    pub repaired: bool,
}

/// A disk whose reservation another host took: the daemon no longer holds it at the storage.
#[derive(Debug, Clone)]
pub struct Lost {
    /// The disk's key.
    pub key: DiskKey,
    /// The disk as the client named it.
    pub disk: String,
    /// Why (a [`Drift::Fenced`]).
    pub why: Drift,
}

/// What one round of [`PrBackend::maintain`] found.
#[derive(Debug, Default)]
pub struct Maintenance {
    /// Drift found, repaired or not.
    pub findings: Vec<Finding>,
    /// Disks lost to another host this round.
    pub lost: Vec<Lost>,
}

/// Lease files plus reservations.
pub struct PrBackend {
    files: FileBackend,
    settings: Option<Settings>,
    resolver: Resolver,
    plans: HashMap<DiskKey, Plan>,
    holds: HashMap<DiskKey, Hold>,
    /// Disks another host took while their leases are held here: why.
    lost: HashMap<DiskKey, String>,
}

impl PrBackend {
    /// Without `settings` (no host key, or reservations off) it is the file backend alone.
    pub fn new(settings: Option<Settings>, resolver: Resolver) -> PrBackend {
        PrBackend {
            files: FileBackend,
            settings,
            resolver,
            plans: HashMap::new(),
            holds: HashMap::new(),
            lost: HashMap::new(),
        }
    }

    /// Whether reservations are on at all.
    pub fn enabled(&self) -> bool {
        self.settings.is_some()
    }

    /// Says how the disk named `key` is to be reserved by the next acquire (until
    /// [`clear_plans`](Self::clear_plans)).
    pub fn plan(&mut self, key: DiskKey, plan: Plan) {
        self.plans.insert(key, plan);
    }

    /// Forgets the plans of the last acquire.
    pub fn clear_plans(&mut self) {
        self.plans.clear();
    }

    /// Checks every held reservation and repairs what drifted, by [`engine::maintain`]'s
    /// rule: a disk this host still holds gets its missing registrations and a reservation a
    /// restarted target lost, and then the paths that appeared since are registered. A disk
    /// another host took is dropped from the holds (never re-registered, not checked again)
    /// and reported as lost; its lease file stays locked until its owner releases it.
    pub fn maintain(&mut self) -> Maintenance {
        let mut out = Maintenance::default();
        let Some(st) = self.settings else {
            return out;
        };
        for (key, hold) in &mut self.holds {
            let m = match engine::maintain(&hold.paths, st.key, hold.kind, hold.generation) {
                Ok(m) => m,
                Err(e) => {
                    tracing::warn!(event = "pr-check-failed", disk = &*bounded(&hold.disk), error = %crate::exit::chain_std(&e), "cannot check a reservation");
                    continue;
                }
            };
            hold.generation = Some(m.generation);
            for d in &m.drift {
                if m.lost.is_some() && matches!(d, Drift::Fenced { .. }) {
                    continue;
                }
                out.findings.push(Finding {
                    disk: hold.disk.clone(),
                    repaired: m.fixed.contains(d),
                    drift: d.clone(),
                });
            }
            if let Some(why) = m.lost {
                out.lost.push(Lost {
                    key: key.clone(),
                    disk: hold.disk.clone(),
                    why,
                });
                continue;
            }
            if let Some(why) = refresh_paths(&self.resolver, hold, st.key) {
                out.lost.push(Lost {
                    key: key.clone(),
                    disk: hold.disk.clone(),
                    why,
                });
            }
        }
        for l in &out.lost {
            self.holds.remove(&l.key);
            self.lost.insert(l.key.clone(), l.why.to_string());
        }
        out
    }

    /// Why the reservation of the disk `key` was lost, while its lease is still held.
    pub fn lost(&self, key: &DiskKey) -> Option<&str> {
        self.lost.get(key).map(String::as_str)
    }

    fn reserve(
        &mut self,
        st: Settings,
        key: &DiskKey,
        mode: Mode,
        plan: &Plan,
    ) -> Result<Option<String>, LeaseError> {
        let kind = match mode {
            Mode::Exclusive => st.exclusive,
            Mode::Shared => st.shared,
        };
        let fail = |reason: String| LeaseError::Reservation {
            disk: plan.disk.clone(),
            reason,
        };
        let paths = crate::pr::open_storage(&self.resolver, plan.devno).map_err(fail)?;
        let outcome = crate::pr::take(&paths, st.key, kind, plan.preempt, &plan.disk);
        match outcome {
            Ok(()) => {
                self.holds.insert(
                    key.clone(),
                    Hold {
                        devno: plan.devno,
                        disk: plan.disk.clone(),
                        kind,
                        paths,
                        generation: None,
                    },
                );
                Ok(None)
            }
            Err(e @ PrError::KeyInUse { .. }) => Ok(Some(e.to_string())),
            Err(e @ (PrError::Busy { .. } | PrError::Registered { .. })) => Ok(Some(format!(
                "the disk is {} at the storage{}",
                e,
                if plan.preempt {
                    ""
                } else {
                    match e {
                        PrError::Registered { .. } => " (acquire --preempt removes them)",
                        _ => " (acquire --preempt takes it over)",
                    }
                }
            ))),
            Err(e) => Err(fail(crate::exit::chain_std(&e))),
        }
    }
}

/// Opens paths that appeared since the hold was taken, registers this host on them at once
/// if the reservation is still ours ([`engine::add_path`]), and drops ones that are gone.
/// Returns why the disk is lost when a new path finds another host holding it.
///
/// A new path is registered without waiting for [`engine::check`] to count it: a path that
/// was removed and re-added logs in on a new I_T nexus, and the target may keep the old
/// nexus's registration, so counting our key's registrations would not show the new path as
/// missing (seen on tgt: the count stays equal to the number of paths).
fn refresh_paths(resolver: &Resolver, hold: &mut Hold, key: ReservationKey) -> Option<Drift> {
    let Ok(now) = resolver.storage_paths(hold.devno) else {
        return None;
    };
    hold.paths.retain(|p| now.iter().any(|n| n.name == p.name));
    for n in &now {
        if hold.paths.iter().any(|p| p.name == n.name) {
            continue;
        }
        let h = match open_path(n) {
            Ok(Some(h)) => h,
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(disk = &*bounded(&hold.disk), path = %n.name, error = %crate::exit::chain_std(&e), "cannot open a new path");
                continue;
            }
        };
        let registered = match hold.paths.first() {
            Some(lead) => engine::add_path(lead, &h, key, hold.kind),
            None => engine::add_path(&h, &h, key, hold.kind),
        };
        match registered {
            Ok(true) => {
                tracing::info!(event = "pr-path-added", disk = &*bounded(&hold.disk), path = %n.name, "new path: registered");
            }
            Ok(false) => {
                // Not ours any more: the check that comes next would say so; say it now.
                tracing::warn!(event = "pr-path-added", disk = &*bounded(&hold.disk), path = %n.name, "new path: not registered, the reservation is not this host's");
                let lead = hold.paths.first().unwrap_or(&h);
                let holder = lead
                    .dev
                    .read_reservation()
                    .ok()
                    .and_then(|r| r.holder)
                    .map(|h| h.key);
                return Some(Drift::Fenced {
                    holder,
                    registered: Vec::new(),
                    ours_left: 0,
                });
            }
            Err(e) => {
                tracing::warn!(event = "pr-path-added", disk = &*bounded(&hold.disk), path = %n.name, error = %crate::exit::chain_std(&e), "new path: not registered");
            }
        }
        hold.paths.push(h);
    }
    None
}

impl PrLease {
    /// The lease file lock.
    pub fn file(&self) -> &lockspace::Lease {
        &self.file
    }
}

impl PrBackend {
    /// The device whose reservation `lease` holds, if it holds one.
    pub fn reserved_device(&self, lease: &PrLease) -> Option<DevNo> {
        lease
            .reserved
            .as_ref()
            .and_then(|k| self.holds.get(k))
            .map(|h| h.devno)
    }
}

impl Backend for PrBackend {
    type Lease = PrLease;

    fn acquire(
        &mut self,
        dir: &Path,
        key: &DiskKey,
        mode: Mode,
        holder: &HolderRef<'_>,
    ) -> Result<Acquired<PrLease>, LeaseError> {
        let file = match self.files.acquire(dir, key, mode, holder)? {
            Acquired::Held(l) => l,
            Acquired::Busy(b) => return Ok(Acquired::Busy(b)),
        };
        let (Some(st), Some(plan)) = (self.settings, self.plans.get(key).cloned()) else {
            return Ok(Acquired::Held(PrLease {
                file,
                reserved: None,
            }));
        };
        match self.reserve(st, key, mode, &plan) {
            Ok(None) => Ok(Acquired::Held(PrLease {
                file,
                reserved: Some(key.clone()),
            })),
            Ok(Some(busy)) => {
                let lease = file.path().to_path_buf();
                let _ = self.files.release(file);
                Ok(Acquired::Busy(Busy {
                    lease,
                    holders: Vec::new(),
                    lock: None,
                    reservation: Some(busy),
                }))
            }
            Err(e) => {
                let _ = self.files.release(file);
                Err(e)
            }
        }
    }

    fn update(&mut self, lease: &mut PrLease, holder: &HolderRef<'_>) -> Result<(), LeaseError> {
        self.files.update(&mut lease.file, holder)
    }
    fn settle(&mut self, lease: &mut PrLease, holder: &HolderRef<'_>) -> Result<(), LeaseError> {
        self.files.settle(&mut lease.file, holder)
    }

    fn lost(&self, lease: &PrLease) -> Option<&str> {
        lease.reserved.as_ref().and_then(|k| self.lost(k))
    }

    fn release(&mut self, lease: PrLease) -> Result<Released, LeaseError> {
        let mut pr_error = None;
        if let Some(key) = &lease.reserved {
            // A lost disk is another host's now: nothing of ours to give back there.
            self.lost.remove(key);
        }
        if let (Some(key), Some(st)) = (&lease.reserved, self.settings)
            && let Some(hold) = self.holds.remove(key)
            && let Err(e) = engine::release(&hold.paths, st.key)
        {
            // The lease goes anyway: keeping it would hold the disk for an owner that is
            // gone. The registration left behind shows in `disklock pr check`.
            pr_error = Some(LeaseError::Reservation {
                disk: hold.disk.clone(),
                reason: crate::exit::chain_std(&e),
            });
        }
        let released = self.files.release(lease.file)?;
        match pr_error {
            Some(e) => Err(e),
            None => Ok(released),
        }
    }
}
