//! What acquiring, releasing, taking over and checking a disk mean in persistent-reservation
//! commands, over every path to it.
//!
//! Written against [`PersistentReservations`], so the same logic drives SG_IO on SCSI paths,
//! the block layer's PR ioctls on NVMe namespaces, and the simulated logical unit in the
//! tests below. It holds no state: the caller (the daemon or `disklock pr`) owns the open
//! paths and decides when to call.
//!
//! Facts it relies on (SPC-4 §5.13): registrations belong to one I_T nexus, so each path
//! registers; the reservation belongs to the logical unit, so any path reads and changes it;
//! READ KEYS lists one entry per registration; an all-registrants reservation reports key 0
//! and every registrant holds it; removing the holder's registration releases a reservation.

use std::fmt;

use disklock_scsi::ScsiError;
use disklock_scsi::pr::{
    PersistentReservations, PrType, RegisterFlags, Reservation, ReservationKey,
};
use serde::Serialize;

use crate::pr::hostkey;

/// One path to a disk: its kernel name (for messages) and the open handle.
pub struct Path<D> {
    /// `sdb`, `nvme0n1`.
    pub name: String,
    /// The handle commands go through.
    pub dev: D,
}

/// What went wrong, with the path where a command failed.
#[derive(Debug, thiserror::Error)]
pub enum PrError {
    /// Another host holds the disk.
    #[error("{}", busy_message(.holder, *.kind, .sharers))]
    Busy {
        /// The reservation holder's key; `None` for an all-registrants reservation.
        holder: Option<ReservationKey>,
        /// The reservation type.
        kind: PrType,
        /// For an all-registrants reservation: the other registrants.
        sharers: Vec<ReservationKey>,
    },
    /// A command failed on a path (the path's name; the cause is the source).
    #[error("{path}")]
    Command {
        /// The path's kernel name.
        path: String,
        /// The error.
        #[source]
        source: ScsiError,
    },
    /// This host's key is on the disk although this host does not hold it: another host
    /// configured with the same key, or a registration a crashed daemon left behind. Never
    /// joined silently.
    #[error(
        "this host's key {key} is already registered on the disk ({found} registration(s)) \
         although this host does not hold it: another host may be configured with the same \
         key (host_id, host_key), or a crashed daemon left it; if no VM here uses the disk, \
         `disklock pr unregister` removes it"
    )]
    KeyInUse {
        /// Our key.
        key: ReservationKey,
        /// Its registrations found.
        found: usize,
    },
    /// There is no path to send commands to.
    #[error("no path to the disk's storage")]
    NoPaths,
    /// A preempt of this host's own key was asked for.
    #[error("refusing to preempt {0}: it is this host's own key")]
    OwnKey(ReservationKey),
    /// A preempt returned success but the reservation is not ours afterwards.
    #[error("preempting {victim} did not take: {what}")]
    NotTaken {
        /// The key that should be gone.
        victim: ReservationKey,
        /// What the disk shows instead.
        what: String,
    },
}

/// `key 0x… (host id 7)`, or the bare key.
pub fn key_label(key: ReservationKey) -> String {
    match hostkey::describe(key.0) {
        Some(d) => format!("key {key} ({d})"),
        None => format!("key {key}"),
    }
}

fn busy_message(
    holder: &Option<ReservationKey>,
    kind: PrType,
    sharers: &[ReservationKey],
) -> String {
    match holder {
        Some(k) => format!("reserved by {} ({})", key_label(*k), kind.name()),
        None => {
            let who: Vec<String> = sharers.iter().map(|k| key_label(*k)).collect();
            format!("reserved {} by {}", kind.name(), who.join(", "))
        }
    }
}

fn on<D>(path: &Path<D>) -> impl FnOnce(ScsiError) -> PrError + '_ {
    move |source| PrError::Command {
        path: path.name.clone(),
        source,
    }
}

fn first<D>(paths: &[Path<D>]) -> Result<&Path<D>, PrError> {
    paths.first().ok_or(PrError::NoPaths)
}

/// The holder of `r` when it is a single key (not an all-registrants reservation).
fn single_holder(r: &Reservation) -> Option<(ReservationKey, PrType)> {
    r.holder
        .as_ref()
        .filter(|h| !h.kind.all_registrants())
        .map(|h| (h.key, h.kind))
}

/// Registers `key` on every path at once (one thread a path: the target answers the paths
/// in parallel, so N paths cost about one round trip). `REGISTER AND IGNORE EXISTING KEY`
/// makes this idempotent: a path that already has the key keeps it.
pub fn register_all<D: PersistentReservations + Sync>(
    paths: &[Path<D>],
    key: ReservationKey,
) -> Result<(), PrError> {
    for_all(paths, |p| {
        p.dev
            .register(ReservationKey(0), key, ignore())
            .map_err(on(p))
    })
}

/// Removes this host's registration on every path (paths without one are fine):
/// registering key 0 while ignoring the existing key unregisters whatever the nexus has.
pub fn unregister_all<D: PersistentReservations + Sync>(paths: &[Path<D>]) -> Result<(), PrError> {
    for_all(paths, |p| {
        p.dev
            .register(ReservationKey(0), ReservationKey(0), ignore())
            .map_err(on(p))
    })
}

fn ignore() -> RegisterFlags {
    RegisterFlags {
        ignore_existing: true,
        ..RegisterFlags::default()
    }
}

/// Runs `f` on every path, in parallel where the machine has more than one CPU; the first
/// error (in path order) wins.
fn for_all<D: Sync, F>(paths: &[Path<D>], f: F) -> Result<(), PrError>
where
    F: Fn(&Path<D>) -> Result<(), PrError> + Sync,
{
    if paths.is_empty() {
        return Err(PrError::NoPaths);
    }
    // Threads pay off only where they can run at once (a 1-CPU guest is faster one path
    // after another).
    // Asked once: std reads the cgroup's CPU quota files each time (hundreds of µs in a
    // TCG guest, more than the command itself).
    static PARALLEL: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    let parallel =
        *PARALLEL.get_or_init(|| std::thread::available_parallelism().is_ok_and(|n| n.get() > 1));
    if let [only] = paths {
        return f(only);
    }
    if !parallel {
        return paths.iter().try_for_each(&f);
    }
    let results: Vec<Result<(), PrError>> = std::thread::scope(|s| {
        let handles: Vec<_> = paths.iter().map(|p| s.spawn(|| f(p))).collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
            })
            .collect()
    });
    results.into_iter().collect()
}

/// What an acquire did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Acquired {
    /// The reservation type now in force.
    #[serde(serialize_with = "crate::pr::serialize_type")]
    pub kind: PrType,
    /// True when this call made the reservation (false: it was already ours, or we joined
    /// an all-registrants one).
    pub reserved: bool,
}

/// Takes the disk for this host, which does not hold it yet: registers `ours` on every path
/// and makes sure a `kind` reservation that includes us is in force. Exclusive types fail
/// with [`PrError::Busy`] when anyone else holds or shares the disk; all-registrants types
/// join an existing reservation of the same type. Our key already on the disk fails with
/// [`PrError::KeyInUse`] (a key collision is never joined). On failure our registrations
/// are removed again.
pub fn acquire<D: PersistentReservations + Sync>(
    paths: &[Path<D>],
    ours: ReservationKey,
    kind: PrType,
) -> Result<Acquired, PrError> {
    let lead = first(paths)?;
    // Look before registering, so a busy disk is left exactly as it was.
    let before = lead.dev.read_reservation().map_err(on(lead))?;
    let keys = lead.dev.read_keys().map_err(on(lead))?;
    let found = keys.keys.iter().filter(|k| **k == ours).count();
    if found > 0 {
        return Err(PrError::KeyInUse { key: ours, found });
    }
    check_free(lead, &before, ours, kind)?;
    register_all(paths, ours)?;
    let result = take(lead, &before, ours, kind);
    if result.is_err() {
        let _ = unregister_all(paths);
    }
    result
}

/// Fails with Busy when `r` leaves no room for us to hold `kind`.
fn check_free<D: PersistentReservations>(
    lead: &Path<D>,
    r: &Reservation,
    ours: ReservationKey,
    kind: PrType,
) -> Result<(), PrError> {
    let Some(h) = &r.holder else { return Ok(()) };
    if h.kind.all_registrants() {
        if kind == h.kind {
            return Ok(());
        }
        let keys = lead.dev.read_keys().map_err(on(lead))?;
        let sharers: Vec<ReservationKey> = keys.keys.into_iter().filter(|k| *k != ours).collect();
        if sharers.is_empty() {
            // Our own leftover all-registrants reservation: `take` converts it.
            return Ok(());
        }
        return Err(PrError::Busy {
            holder: None,
            kind: h.kind,
            sharers,
        });
    }
    if h.key == ours && h.kind == kind {
        return Ok(());
    }
    Err(PrError::Busy {
        holder: Some(h.key),
        kind: h.kind,
        sharers: Vec::new(),
    })
}

fn take<D: PersistentReservations>(
    lead: &Path<D>,
    before: &Reservation,
    ours: ReservationKey,
    kind: PrType,
) -> Result<Acquired, PrError> {
    match &before.holder {
        Some(h) if h.kind == kind && (h.kind.all_registrants() || h.key == ours) => {
            return Ok(Acquired {
                kind,
                reserved: false,
            });
        }
        Some(h) => {
            // Only our own stale reservation of another type gets here (check_free).
            lead.dev.release(ours, h.kind).map_err(on(lead))?;
        }
        None => {}
    }
    match lead.dev.reserve(ours, kind) {
        Ok(()) => Ok(Acquired {
            kind,
            reserved: true,
        }),
        Err(ScsiError::ReservationConflict { .. }) => {
            // Someone reserved between our look and our RESERVE: name them.
            let now = lead.dev.read_reservation().map_err(on(lead))?;
            check_free(lead, &now, ours, kind)?;
            Err(PrError::Busy {
                holder: single_holder(&now).map(|(k, _)| k),
                kind: now.holder.map_or(kind, |h| h.kind),
                sharers: Vec::new(),
            })
        }
        Err(e) => Err(on(lead)(e)),
    }
}

/// Gives the disk back: releases a `kind` reservation we hold (an all-registrants one only
/// when we are its last registrant) and removes our registration from every path.
pub fn release<D: PersistentReservations + Sync>(
    paths: &[Path<D>],
    ours: ReservationKey,
) -> Result<(), PrError> {
    let lead = first(paths)?;
    let r = lead.dev.read_reservation().map_err(on(lead))?;
    if let Some(h) = &r.holder {
        let release = if h.kind.all_registrants() {
            let keys = lead.dev.read_keys().map_err(on(lead))?;
            keys.keys.iter().all(|k| *k == ours)
        } else {
            h.key == ours
        };
        if release {
            lead.dev.release(ours, h.kind).map_err(on(lead))?;
        }
    }
    unregister_all(paths)
}

/// What a takeover did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Preempted {
    /// The key that was removed.
    #[serde(serialize_with = "crate::pr::serialize_key")]
    pub victim: ReservationKey,
    /// True when PREEMPT AND ABORT was used (the victim's queued commands were aborted).
    pub aborted: bool,
    /// True when PREEMPT AND ABORT was asked for but the target does not have it, so plain
    /// PREEMPT was used.
    pub fell_back: bool,
    /// The reservation type now held.
    #[serde(serialize_with = "crate::pr::serialize_type")]
    pub kind: PrType,
}

/// Takes the disk from `victim`: registers us on every path, preempts `victim`'s
/// registrations and reservation (PREEMPT AND ABORT when `abort`, falling back to PREEMPT on
/// targets without it), makes sure a `kind` reservation of ours is in force, and verifies
/// that `victim` is gone. Never preempts our own key.
pub fn preempt<D: PersistentReservations + Sync>(
    paths: &[Path<D>],
    ours: ReservationKey,
    victim: ReservationKey,
    kind: PrType,
    abort: bool,
) -> Result<Preempted, PrError> {
    if victim == ours {
        return Err(PrError::OwnKey(victim));
    }
    let lead = first(paths)?;
    register_all(paths, ours)?;
    let mut aborted = abort;
    let mut fell_back = false;
    match lead.dev.preempt(ours, victim, kind, abort) {
        Ok(()) => {}
        Err(e) if abort && e.is_unsupported() => {
            aborted = false;
            fell_back = true;
            lead.dev
                .preempt(ours, victim, kind, false)
                .map_err(on(lead))?;
        }
        Err(e) => return Err(on(lead)(e)),
    }
    let r = lead.dev.read_reservation().map_err(on(lead))?;
    if r.holder.is_none() {
        // The victim was registered but held no reservation: PREEMPT only unregistered it.
        lead.dev.reserve(ours, kind).map_err(on(lead))?;
    }
    let keys = lead.dev.read_keys().map_err(on(lead))?;
    if keys.keys.contains(&victim) {
        return Err(PrError::NotTaken {
            victim,
            what: format!("{victim} is still registered"),
        });
    }
    let r = lead.dev.read_reservation().map_err(on(lead))?;
    match r.holder {
        Some(h) if h.kind == kind && (h.key == ours || h.kind.all_registrants()) => {}
        other => {
            return Err(PrError::NotTaken {
                victim,
                what: match other {
                    Some(h) => format!("the reservation is {} held by {}", h.kind.name(), h.key),
                    None => "there is no reservation".to_owned(),
                },
            });
        }
    }
    Ok(Preempted {
        victim,
        aborted,
        fell_back,
        kind,
    })
}

/// A difference between what this host expects of a disk and what the disk says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "drift")]
pub enum Drift {
    /// Fewer registrations of our key than paths: a path that appeared later, a reconnect on
    /// a new nexus, or a target that lost its state.
    MissingRegistrations {
        /// Registrations of our key found.
        found: usize,
        /// Paths we have.
        paths: usize,
    },
    /// More registrations of our key than we have paths: another host may use our key.
    ExtraRegistrations {
        /// Registrations of our key found.
        found: usize,
        /// Paths we have.
        paths: usize,
    },
    /// We hold the disk but nothing is reserved.
    ReservationMissing,
    /// We hold the disk but another key holds the reservation.
    ReservationTaken {
        /// The holder.
        #[serde(serialize_with = "crate::pr::serialize_key")]
        holder: ReservationKey,
    },
    /// We do not hold the disk but our key is still registered.
    StaleRegistration {
        /// Registrations of our key found.
        found: usize,
    },
}

impl Drift {
    /// What `--repair` does about it, or why it cannot.
    pub fn fix(&self) -> &'static str {
        match self {
            Drift::MissingRegistrations { .. } => "register this host's key on every path",
            Drift::ExtraRegistrations { .. } => {
                "not repaired: check that no other host is configured with this key"
            }
            Drift::ReservationMissing => "reserve the disk again",
            Drift::ReservationTaken { .. } => {
                "not repaired: another host took the disk; release it here, or take it back \
                 with disklock acquire --preempt"
            }
            Drift::StaleRegistration { .. } => "unregister this host's key on every path",
        }
    }

    /// Whether `--repair` fixes it.
    pub fn repairable(&self) -> bool {
        !matches!(
            self,
            Drift::ExtraRegistrations { .. } | Drift::ReservationTaken { .. }
        )
    }
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Drift::MissingRegistrations { found, paths } => write!(
                f,
                "this host's key is registered {found} time(s) for {paths} path(s)"
            ),
            Drift::ExtraRegistrations { found, paths } => write!(
                f,
                "this host's key is registered {found} times but it has {paths} path(s): \
                 another host may use the same key"
            ),
            Drift::ReservationMissing => f.write_str("the disk is held here but not reserved"),
            Drift::ReservationTaken { holder } => {
                write!(
                    f,
                    "the disk is held here but reserved by {}",
                    key_label(*holder)
                )
            }
            Drift::StaleRegistration { found } => write!(
                f,
                "this host's key is registered {found} time(s) but the disk is not held here"
            ),
        }
    }
}

/// Compares the disk with what we expect: `held` is the reservation type we should be part
/// of (`None`: we should not be registered at all).
pub fn check<D: PersistentReservations>(
    paths: &[Path<D>],
    ours: ReservationKey,
    held: Option<PrType>,
) -> Result<Vec<Drift>, PrError> {
    let lead = first(paths)?;
    let keys = lead.dev.read_keys().map_err(on(lead))?;
    let found = keys.keys.iter().filter(|k| **k == ours).count();
    let mut drift = Vec::new();
    let Some(kind) = held else {
        if found > 0 {
            drift.push(Drift::StaleRegistration { found });
        }
        return Ok(drift);
    };
    if found < paths.len() {
        drift.push(Drift::MissingRegistrations {
            found,
            paths: paths.len(),
        });
    } else if found > paths.len() {
        drift.push(Drift::ExtraRegistrations {
            found,
            paths: paths.len(),
        });
    }
    let r = lead.dev.read_reservation().map_err(on(lead))?;
    match r.holder {
        None => drift.push(Drift::ReservationMissing),
        Some(h) if h.kind.all_registrants() && h.kind == kind => {}
        Some(h) if h.key == ours => {}
        Some(h) if h.kind.all_registrants() => drift.push(Drift::ReservationTaken {
            holder: ReservationKey(0),
        }),
        Some(h) => drift.push(Drift::ReservationTaken { holder: h.key }),
    }
    Ok(drift)
}

/// Fixes what [`check`] found and can be fixed; returns what it fixed.
pub fn repair<D: PersistentReservations + Sync>(
    paths: &[Path<D>],
    ours: ReservationKey,
    held: Option<PrType>,
    drift: &[Drift],
) -> Result<Vec<Drift>, PrError> {
    let lead = first(paths)?;
    let mut fixed = Vec::new();
    for d in drift {
        match d {
            Drift::MissingRegistrations { .. } => register_all(paths, ours)?,
            Drift::ReservationMissing => {
                let Some(kind) = held else { continue };
                // The registrations may be gone too (a target restart loses both).
                register_all(paths, ours)?;
                lead.dev.reserve(ours, kind).map_err(on(lead))?;
            }
            Drift::StaleRegistration { .. } => unregister_all(paths)?,
            Drift::ExtraRegistrations { .. } | Drift::ReservationTaken { .. } => continue,
        }
        fixed.push(d.clone());
    }
    Ok(fixed)
}

/// The simulated logical unit: the engine's tests and `disklock __pr-bench --simulate-paths`.
pub mod sim;

#[cfg(test)]
mod tests;
