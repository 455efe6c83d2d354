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
    /// Nobody reserves the disk but other keys are registered: an exclusive reservation of
    /// a Registrants Only type would let each of them write, so it is not taken.
    #[error(
        "registered by {}, though nobody reserves it: under a Registrants Only reservation \
         every registered key may write",
        key_list(.keys)
    )]
    Registered {
        /// The other keys, each once.
        keys: Vec<ReservationKey>,
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
/// with [`PrError::Busy`] when anyone else holds or shares the disk, and with
/// [`PrError::Registered`] when nobody holds it but other keys are registered (each could
/// write under our reservation); all-registrants types join an existing reservation of the
/// same type. Our key already on the disk fails with
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
    if !kind.all_registrants() {
        let foreign = others(&keys.keys, ours);
        if !foreign.is_empty() {
            return Err(PrError::Registered { keys: foreign });
        }
    }
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

/// The keys other than ours registered on the disk, each once.
pub fn foreign_keys<D: PersistentReservations>(
    paths: &[Path<D>],
    ours: ReservationKey,
) -> Result<Vec<ReservationKey>, PrError> {
    let lead = first(paths)?;
    let keys = lead.dev.read_keys().map_err(on(lead))?;
    Ok(others(&keys.keys, ours))
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
    let fell_back = preempt_one(lead, ours, victim, kind, abort)?;
    let aborted = abort && !fell_back;
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
    /// We hold the reservation but our key has fewer registrations than we have paths: a
    /// path that appeared later, or a reconnect on a new nexus.
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
    /// The target lost every registration and the reservation (a restart without APTPL:
    /// nothing is registered and the PR generation went back, as SPC-4 resets it to 0 at
    /// power on). We still hold the lease, so we put ours back.
    TargetReset {
        /// The PR generation the disk reports now.
        generation: u32,
    },
    /// We are still registered (and nobody else is) but nothing is reserved.
    ReservationMissing,
    /// We hold the disk exclusively, yet other keys are registered: under a Registrants
    /// Only type each of them may write.
    ForeignRegistrations {
        /// The other keys, each once.
        #[serde(serialize_with = "serialize_keys")]
        keys: Vec<ReservationKey>,
    },
    /// Another host removed this host from the disk: our key is gone, or another key holds
    /// the reservation. This host has lost the disk; it never registers itself again on its
    /// own (only a new acquire, after the other host released or with `--preempt`, does).
    Fenced {
        /// The reservation holder now; `None` when nothing is reserved, key 0 for an
        /// all-registrants reservation.
        #[serde(serialize_with = "serialize_opt_key")]
        holder: Option<ReservationKey>,
        /// The keys registered now (other than ours), each once.
        #[serde(serialize_with = "serialize_keys")]
        registered: Vec<ReservationKey>,
        /// Registrations of our key left (under another key's reservation).
        ours_left: usize,
    },
    /// We do not hold the disk but our key is still registered.
    StaleRegistration {
        /// Registrations of our key found.
        found: usize,
    },
}

fn serialize_keys<S: serde::Serializer>(keys: &[ReservationKey], s: S) -> Result<S::Ok, S::Error> {
    s.collect_seq(keys.iter().map(ToString::to_string))
}

fn serialize_opt_key<S: serde::Serializer>(
    key: &Option<ReservationKey>,
    s: S,
) -> Result<S::Ok, S::Error> {
    match key {
        Some(k) => s.collect_str(k),
        None => s.serialize_none(),
    }
}

impl Drift {
    /// What `--repair` does about it, or why it cannot.
    pub fn fix(&self) -> &'static str {
        match self {
            Drift::MissingRegistrations { .. } => "register this host's key on every path",
            Drift::ExtraRegistrations { .. } => {
                "not repaired: check that no other host is configured with this key"
            }
            Drift::TargetReset { .. } => "register this host's key and reserve the disk again",
            Drift::ReservationMissing => "reserve the disk again",
            Drift::ForeignRegistrations { .. } => {
                "preempt the other keys' registrations (each of them could write)"
            }
            Drift::Fenced { .. } => {
                "not repaired: another host took the disk and this host's lease is lost; stop \
                 what writes it here, or take the disk back with disklock acquire --preempt"
            }
            Drift::StaleRegistration { .. } => "unregister this host's key on every path",
        }
    }

    /// Whether `--repair` fixes it.
    pub fn repairable(&self) -> bool {
        !matches!(
            self,
            Drift::ExtraRegistrations { .. } | Drift::Fenced { .. }
        )
    }
}

fn key_list(keys: &[ReservationKey]) -> String {
    keys.iter()
        .map(|k| key_label(*k))
        .collect::<Vec<_>>()
        .join(", ")
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
            Drift::TargetReset { generation } => write!(
                f,
                "the target lost every registration and the reservation (PR generation \
                 {generation}): a restart"
            ),
            Drift::ReservationMissing => f.write_str("the disk is held here but not reserved"),
            Drift::ForeignRegistrations { keys } => write!(
                f,
                "the disk is held here but also registered by {}",
                key_list(keys)
            ),
            Drift::Fenced {
                holder,
                registered,
                ours_left,
            } => {
                f.write_str("this host was fenced: ")?;
                match holder {
                    Some(ReservationKey(0)) => write!(
                        f,
                        "the disk is reserved for all registrants ({}) and this host's key was removed",
                        key_list(registered)
                    )?,
                    Some(k) => write!(f, "the disk is reserved by {}", key_label(*k))?,
                    None if registered.is_empty() => f.write_str(
                        "this host's key was removed and the disk's PR state changed since \
                         it was last checked (not a target restart)",
                    )?,
                    None => write!(
                        f,
                        "this host's key was removed and {} registered instead",
                        key_list(registered)
                    )?,
                }
                if *ours_left > 0 {
                    write!(f, " ({ours_left} registration(s) of this host's key left)")?;
                }
                Ok(())
            }
            Drift::StaleRegistration { found } => write!(
                f,
                "this host's key is registered {found} time(s) but the disk is not held here"
            ),
        }
    }
}

/// What [`check`] read of a disk: the drift, and the PR generation to pass as `last` next
/// time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    /// What differs from what this host expects.
    pub drift: Vec<Drift>,
    /// PRGENERATION as READ KEYS reported it.
    pub generation: u32,
}

impl Checked {
    /// The fencing drift, when another host took the disk.
    pub fn fenced(&self) -> Option<&Drift> {
        self.drift
            .iter()
            .find(|d| matches!(d, Drift::Fenced { .. }))
    }
}

/// The other keys in `keys`, each once, in order.
fn others(keys: &[ReservationKey], ours: ReservationKey) -> Vec<ReservationKey> {
    let mut v: Vec<ReservationKey> = Vec::new();
    for k in keys {
        if *k != ours && !v.contains(k) {
            v.push(*k);
        }
    }
    v
}

/// Compares the disk with what we expect: `held` is the reservation type we should be part
/// of (`None`: we should not be registered at all); `last` the PR generation the previous
/// check of this disk saw (`None`: never checked).
///
/// The rule that keeps fencing fenced: our key missing is a path to repair only while we
/// hold the reservation. Another key holding it, or other keys registered where ours
/// vanished, is [`Drift::Fenced`]. An empty disk (no reservation, no registrations) is a
/// target restart only if its PR generation is 0 or went back below `last`; otherwise
/// someone preempted us and left, and that is fencing too.
pub fn check<D: PersistentReservations>(
    paths: &[Path<D>],
    ours: ReservationKey,
    held: Option<PrType>,
    last: Option<u32>,
) -> Result<Checked, PrError> {
    let lead = first(paths)?;
    let keys = lead.dev.read_keys().map_err(on(lead))?;
    let generation = keys.generation;
    let found = keys.keys.iter().filter(|k| **k == ours).count();
    let foreign = others(&keys.keys, ours);
    let mut drift = Vec::new();
    let Some(kind) = held else {
        if found > 0 {
            drift.push(Drift::StaleRegistration { found });
        }
        return Ok(Checked { drift, generation });
    };
    let counts = |drift: &mut Vec<Drift>| {
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
    };
    let fenced = |holder: Option<ReservationKey>| Drift::Fenced {
        holder,
        registered: foreign.clone(),
        ours_left: found,
    };
    // A target restart since the last check: SPC-4 sets the generation to 0 at power on, and
    // every registration, preempt or clear raises it.
    let reset = generation == 0 || last.is_some_and(|l| generation < l);
    let r = lead.dev.read_reservation().map_err(on(lead))?;
    match r.holder {
        // Ours, exclusively.
        Some(h) if !h.kind.all_registrants() && h.key == ours => {
            counts(&mut drift);
            if !foreign.is_empty() {
                drift.push(Drift::ForeignRegistrations {
                    keys: foreign.clone(),
                });
            }
        }
        // Shared with us: we are a holder while our key is registered.
        Some(h) if h.kind.all_registrants() && h.kind == kind && found > 0 => {
            counts(&mut drift);
        }
        // Another sharer put the shared reservation back after a target restart before we
        // did (the generation went back below what we last saw): join it again.
        Some(h) if h.kind.all_registrants() && h.kind == kind && reset => {
            drift.push(Drift::TargetReset { generation });
        }
        Some(h) if h.kind.all_registrants() => drift.push(fenced(Some(ReservationKey(0)))),
        Some(h) => drift.push(fenced(Some(h.key))),
        None if keys.keys.is_empty() => {
            if reset {
                drift.push(Drift::TargetReset { generation });
            } else {
                drift.push(fenced(None));
            }
        }
        None if foreign.is_empty() => {
            counts(&mut drift);
            drift.push(Drift::ReservationMissing);
        }
        None => drift.push(fenced(None)),
    }
    Ok(Checked { drift, generation })
}

/// Fixes what [`check`] found and can be fixed; returns what it fixed. Never registers a
/// fenced host: with [`Drift::Fenced`] among `drift` it does nothing. When putting the
/// reservation back loses a race (another host reserved first), our registrations are
/// removed again and the result is [`PrError::Busy`]: this host has lost the disk.
pub fn repair<D: PersistentReservations + Sync>(
    paths: &[Path<D>],
    ours: ReservationKey,
    held: Option<PrType>,
    drift: &[Drift],
) -> Result<Vec<Drift>, PrError> {
    let lead = first(paths)?;
    let mut fixed = Vec::new();
    if drift.iter().any(|d| matches!(d, Drift::Fenced { .. })) {
        return Ok(fixed);
    }
    for d in drift {
        match d {
            Drift::MissingRegistrations { .. } => register_all(paths, ours)?,
            Drift::TargetReset { .. } | Drift::ReservationMissing => {
                let Some(kind) = held else { continue };
                reclaim(paths, ours, kind)?;
            }
            Drift::ForeignRegistrations { keys } => {
                let Some(kind) = held else { continue };
                evict(lead, ours, keys, kind)?;
            }
            Drift::StaleRegistration { .. } => unregister_all(paths)?,
            Drift::ExtraRegistrations { .. } | Drift::Fenced { .. } => continue,
        }
        fixed.push(d.clone());
    }
    Ok(fixed)
}

/// Reserves a disk that nobody reserves, for a host that still holds its lease: registers
/// the lead path only, reserves, and registers the other paths once the reservation is
/// ours. If another host reserved first, the lead's registration is removed at once.
fn reclaim<D: PersistentReservations + Sync>(
    paths: &[Path<D>],
    ours: ReservationKey,
    kind: PrType,
) -> Result<(), PrError> {
    let lead = first(paths)?;
    register_all(std::slice::from_ref(lead), ours)?;
    match lead.dev.reserve(ours, kind) {
        Ok(()) => {}
        Err(ScsiError::ReservationConflict { .. }) => {
            let _ = unregister_all(paths);
            let now = lead.dev.read_reservation().map_err(on(lead))?;
            return Err(PrError::Busy {
                holder: single_holder(&now).map(|(k, _)| k),
                kind: now.holder.map_or(kind, |h| h.kind),
                sharers: Vec::new(),
            });
        }
        Err(e) => return Err(on(lead)(e)),
    }
    register_all(paths, ours)
}

/// Removes the registrations of `keys` from a disk we hold (PREEMPT AND ABORT, else
/// PREEMPT: the reservation is ours, so only their registrations go).
fn evict<D: PersistentReservations>(
    lead: &Path<D>,
    ours: ReservationKey,
    keys: &[ReservationKey],
    kind: PrType,
) -> Result<(), PrError> {
    for k in keys {
        preempt_one(lead, ours, *k, kind, true)?;
    }
    Ok(())
}

/// PREEMPT (AND ABORT when `abort`) of `victim` through `lead`; a target without PREEMPT
/// AND ABORT (tgt) gets plain PREEMPT. Returns whether it fell back.
fn preempt_one<D: PersistentReservations>(
    lead: &Path<D>,
    ours: ReservationKey,
    victim: ReservationKey,
    kind: PrType,
    abort: bool,
) -> Result<bool, PrError> {
    match lead.dev.preempt(ours, victim, kind, abort) {
        Ok(()) => Ok(false),
        Err(e) if abort && e.is_unsupported() => {
            lead.dev
                .preempt(ours, victim, kind, false)
                .map_err(on(lead))?;
            Ok(true)
        }
        Err(e) => Err(on(lead)(e)),
    }
}

/// What one periodic check of a held disk found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Maintained {
    /// What differed.
    pub drift: Vec<Drift>,
    /// What was repaired.
    pub fixed: Vec<Drift>,
    /// The PR generation to pass as `last` next time.
    pub generation: u32,
    /// Set when this host has lost the disk (the drift that says why): stop treating it as
    /// held, and never register it again on its own.
    pub lost: Option<Drift>,
}

/// The daemon's periodic check of a disk it holds with a `kind` reservation: [`check`],
/// then [`repair`] unless this host was fenced. One rule for the daemon, `disklock pr check
/// --repair` and the simulator's property test.
pub fn maintain<D: PersistentReservations + Sync>(
    paths: &[Path<D>],
    ours: ReservationKey,
    kind: PrType,
    last: Option<u32>,
) -> Result<Maintained, PrError> {
    let checked = check(paths, ours, Some(kind), last)?;
    if let Some(f) = checked.fenced() {
        return Ok(Maintained {
            lost: Some(f.clone()),
            fixed: Vec::new(),
            generation: checked.generation,
            drift: checked.drift,
        });
    }
    let (fixed, lost) = if checked.drift.is_empty() {
        (Vec::new(), None)
    } else {
        match repair(paths, ours, Some(kind), &checked.drift) {
            Ok(f) => (f, None),
            Err(PrError::Busy { holder, .. }) => (
                Vec::new(),
                Some(Drift::Fenced {
                    holder,
                    registered: holder.into_iter().collect(),
                    ours_left: 0,
                }),
            ),
            Err(e) => return Err(e),
        }
    };
    Ok(Maintained {
        drift: checked.drift,
        fixed,
        generation: checked.generation,
        lost,
    })
}

/// Registers `path`, a path to a disk this host holds that appeared since it was taken,
/// only if the reservation is still ours; afterwards looks again and, if another host took
/// the disk meanwhile, removes the registration. Returns false (nothing registered) when
/// the disk is not ours.
pub fn add_path<D: PersistentReservations + Sync>(
    lead: &Path<D>,
    path: &Path<D>,
    ours: ReservationKey,
    kind: PrType,
) -> Result<bool, PrError> {
    // Whether the reservation includes us: the holder's key, or for an all-registrants
    // reservation of our type, our key among the registrants.
    let ours_now = || -> Result<bool, PrError> {
        let r = lead.dev.read_reservation().map_err(on(lead))?;
        Ok(match &r.holder {
            Some(h) if h.kind.all_registrants() => {
                h.kind == kind && lead.dev.read_keys().map_err(on(lead))?.keys.contains(&ours)
            }
            Some(h) => h.key == ours,
            None => false,
        })
    };
    if !ours_now()? {
        return Ok(false);
    }
    register_all(std::slice::from_ref(path), ours)?;
    if !ours_now()? {
        let _ = unregister_all(std::slice::from_ref(path));
        return Ok(false);
    }
    Ok(true)
}

#[cfg(test)]
mod tests;
