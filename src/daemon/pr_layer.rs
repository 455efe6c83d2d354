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
use std::sync::Arc;
use std::time::Duration;

use disklock_naming::{DevNo, DiskKey, Resolver};
use disklock_scsi::pr::{PersistentReservations, PrType, ReservationKey};

use super::lanes::{Job, Lanes};
use super::table::{Backend, Check, FileBackend, LeaseId};
use crate::lockspace::{self, Acquired, Busy, Holder, HolderRef, LeaseError, Mode, Released};
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
    file: FileLock,
    reserved: Option<DiskKey>,
}

/// Where a held lease's file lock is kept.
#[derive(Debug)]
enum FileLock {
    /// Here, on the thread that runs the table (a lockspace on a local file system).
    Here(lockspace::Lease),
    /// On its lane ([`super::lanes`]), which does all I/O on it; the id names it there.
    Lane(LeaseId),
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
    /// Held leases whose file is no longer at its path: why.
    lost_files: HashMap<LeaseId, String>,
    /// The daemon's lanes; `None` in a process that takes its leases inline (`disklock run`).
    lanes: Option<LaneIo>,
}

/// How the daemon's lease I/O is run ([`PrBackend::with_lanes`]).
pub struct LaneSetup {
    /// Every lockspace gets lanes (`lease_io_threads = "all"`); else only lockspaces not on a
    /// local file system ([`lockspace::on_local_fs`]).
    pub all: bool,
    /// Makes a lane's resolver (for the storage paths of a disk to reserve).
    pub resolver: Arc<dyn Fn() -> Resolver + Send + Sync>,
    /// Takes what a lane reports to the table task.
    pub report: Arc<dyn Fn(LaneDone) + Send + Sync>,
}

/// What a lane's report means for the acquires waiting ([`PrBackend::lane_done`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reported {
    /// One more lease of the acquire with this token is taken or refused.
    Taken(u64),
    /// A lease another acquire claimed is free again.
    Freed,
    /// A record write or a release is done.
    Finished,
    /// A lane found a held lease lost (the lease, why).
    Lost(LeaseId, String),
    /// Nothing an acquire waits for.
    Nothing,
}

/// What a lane reports to the table task: give it to [`PrBackend::lane_done`].
pub struct LaneDone(Done);

enum Done {
    /// A lease taken (or not) for the acquire `token`.
    Taken {
        token: u64,
        id: LeaseId,
        mode: Mode,
        result: Result<Acquired<Option<Hold>>, LeaseError>,
        /// Whether the lockspace is on a local file system, when the lane could tell.
        local: Option<bool>,
    },
    /// A holder record written or a lease given back.
    Finished { id: LeaseId },
    /// A held lease checked: why it is lost, if it is.
    Checked { id: LeaseId, lost: Option<String> },
}

/// A lane's state: the lease files it holds, and a resolver for reservations.
struct LaneState {
    leases: HashMap<LeaseId, lockspace::Lease>,
    resolver: Resolver,
}

/// The daemon's lanes and what the table task knows of their work.
struct LaneIo {
    lanes: Lanes<LaneState>,
    all: bool,
    report: Arc<dyn Fn(LaneDone) + Send + Sync>,
    resolver: Arc<dyn Fn() -> Resolver + Send + Sync>,
    /// Lockspaces whose file system is known (true: local, I/O runs on the table's thread).
    local: Vec<(Arc<Path>, bool)>,
    /// Leases taken on lanes for an acquire that the table has not run yet: by lease, the
    /// acquire's token, the mode and the outcome.
    prepared: HashMap<LeaseId, Prepared>,
    /// Lane jobs not reported back yet, by lease.
    pending: HashMap<LeaseId, usize>,
    /// The acquire the table runs now: only its prepared leases are handed to the table.
    running: u64,
    /// Leases whose release was queued on a lane since [`PrBackend::take_queued_releases`].
    released: Vec<LeaseId>,
}

/// The token of a prepared lease whose acquire was given up while its lane worked on it.
pub const GIVEN_UP: u64 = u64::MAX;

struct Prepared {
    token: u64,
    mode: Mode,
    /// `None` until the lane reports.
    result: Option<Result<Acquired<Option<Hold>>, LeaseError>>,
}

impl PrBackend {
    /// Without `settings` (no host key, or reservations off) it is the file backend alone.
    /// All lease I/O runs inline, on the caller's thread.
    pub fn new(settings: Option<Settings>, resolver: Resolver) -> PrBackend {
        PrBackend {
            files: FileBackend,
            settings,
            resolver,
            plans: HashMap::new(),
            holds: HashMap::new(),
            lost: HashMap::new(),
            lost_files: HashMap::new(),
            lanes: None,
        }
    }

    /// [`PrBackend::new`] for the daemon: the lease I/O of a lockspace that may hang runs
    /// on lanes. The shell asks [`needs_lane`](Self::needs_lane) for each lease an acquire
    /// must take, has it taken ([`prepare`](Self::prepare)), hands the lanes' reports back
    /// ([`lane_done`](Self::lane_done)), and runs the acquire through the table once every
    /// such lease is prepared: the table's `acquire` then finds them here instead of doing
    /// I/O. Record writes and releases of lane-held leases are queued on their lane.
    pub fn with_lanes(settings: Option<Settings>, resolver: Resolver, setup: LaneSetup) -> Self {
        let make = setup.resolver.clone();
        let mut b = PrBackend::new(settings, resolver);
        b.lanes = Some(LaneIo {
            lanes: Lanes::new(move || LaneState {
                leases: HashMap::new(),
                resolver: make(),
            }),
            all: setup.all,
            report: setup.report,
            resolver: setup.resolver,
            local: Vec::new(),
            prepared: HashMap::new(),
            pending: HashMap::new(),
            running: 0,
            released: Vec::new(),
        });
        b
    }

    /// Whether taking the lease `key` in lockspace `dir` must go through a lane: its
    /// lockspace is not known to be on a local file system (the first lease of a lockspace
    /// always goes to a lane, which finds out), or the lease has lane work still queued
    /// (which the new work must follow).
    pub fn needs_lane(&self, dir: &Path, key: &DiskKey) -> bool {
        let Some(io) = &self.lanes else {
            return false;
        };
        if io.all {
            return true;
        }
        let local = io
            .local
            .iter()
            .find(|(d, _)| d.as_os_str() == dir.as_os_str())
            .is_some_and(|(_, l)| *l);
        !local
            || (!io.pending.is_empty()
                && io.pending.contains_key(&LeaseId {
                    lockspace: Arc::from(dir),
                    key: key.clone(),
                }))
    }

    /// Has a lane take the lease `id` for the acquire `token`, with `holder` as its record
    /// and, with a reservation plan, the disk's reservation. The outcome comes back through
    /// [`lane_done`](Self::lane_done).
    pub fn prepare(
        &mut self,
        token: u64,
        id: LeaseId,
        mode: Mode,
        holder: Holder,
        plan: Option<Plan>,
    ) {
        let settings = self.settings;
        let Some(io) = &mut self.lanes else {
            return;
        };
        io.prepared.insert(
            id.clone(),
            Prepared {
                token,
                mode,
                result: None,
            },
        );
        let report = io.report.clone();
        let job_id = id.clone();
        let job: Job<LaneState> = Box::new(move |s: &mut LaneState| {
            let pr = settings.zip(plan);
            // The acquire waits for this report: it is sent even if taking the lease panics
            // (a lock taken before the panic was dropped with it).
            let taken = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                take(
                    &s.resolver,
                    &job_id,
                    mode,
                    &holder.borrowed(),
                    pr.as_ref().map(|(st, p)| (*st, p)),
                )
            }))
            .unwrap_or_else(|_| {
                Err(LeaseError::Io {
                    op: "take (panicked)",
                    path: job_id.path(),
                    source: std::io::Error::other("the lease I/O thread panicked"),
                })
            });
            let result = taken.map(|a| match a {
                Acquired::Held((file, hold)) => {
                    s.leases.insert(job_id.clone(), file);
                    Acquired::Held(hold)
                }
                Acquired::Busy(b) => Acquired::Busy(b),
            });
            let local = lockspace::on_local_fs(&job_id.lockspace).ok();
            report(LaneDone(Done::Taken {
                token,
                id: job_id,
                mode,
                result,
                local,
            }));
        });
        io.submit(&id, job);
    }

    /// Takes a lane's report: what it means for the acquires waiting.
    pub fn lane_done(&mut self, done: LaneDone) -> Reported {
        let Some(io) = self.lanes.as_mut() else {
            return Reported::Nothing;
        };
        let id = match &done.0 {
            Done::Taken { id, .. } | Done::Finished { id } | Done::Checked { id, .. } => id.clone(),
        };
        if let Some(n) = io.pending.get_mut(&id) {
            *n -= 1;
            if *n == 0 {
                io.pending.remove(&id);
            }
        }
        let (token, id, mode, result, local) = match done.0 {
            Done::Taken {
                token,
                id,
                mode,
                result,
                local,
            } => (token, id, mode, result, local),
            Done::Finished { .. } => return Reported::Finished,
            Done::Checked { id, lost } => {
                return match lost {
                    Some(why) if !self.lost_files.contains_key(&id) => {
                        self.lost_files.insert(id.clone(), why.clone());
                        Reported::Lost(id, why)
                    }
                    _ => Reported::Finished,
                };
            }
        };
        if let Some(local) = local
            && !io
                .local
                .iter()
                .any(|(d, _)| d.as_os_str() == id.lockspace.as_os_str())
        {
            io.local.push((id.lockspace.clone(), local));
        }
        match io.prepared.get_mut(&id) {
            Some(p) if p.token == token && p.result.is_none() && p.mode == mode => {
                p.result = Some(result);
                Reported::Taken(token)
            }
            // Its acquire was given up meanwhile: give it back; the lease is free for others.
            _ => {
                io.prepared.remove(&id);
                if let Ok(Acquired::Held(hold)) = result {
                    self.give_back_on_lane(id, hold);
                }
                Reported::Freed
            }
        }
    }

    /// The leases whose release the table handed to lanes since the last call: a release
    /// request answers once their lanes have dropped them ([`has_lane_work`](Self::has_lane_work)).
    pub fn take_queued_releases(&mut self) -> Vec<LeaseId> {
        self.lanes
            .as_mut()
            .map(|io| std::mem::take(&mut io.released))
            .unwrap_or_default()
    }

    /// Whether a lane still has work queued for the lease `id`.
    pub fn has_lane_work(&self, id: &LeaseId) -> bool {
        self.lanes
            .as_ref()
            .is_some_and(|io| io.pending.contains_key(id))
    }

    /// How many leases acquires have claimed.
    pub fn claims(&self) -> usize {
        self.lanes.as_ref().map_or(0, |io| io.prepared.len())
    }

    /// The acquire that has a lane taking the lease `id`, or holds what one took, until the
    /// table runs it: no other acquire may take that lease meanwhile ([`GIVEN_UP`] for one
    /// given up while its lane still works).
    pub fn claimed_by(&self, id: &LeaseId) -> Option<u64> {
        let io = self.lanes.as_ref()?;
        if io.prepared.is_empty() {
            return None;
        }
        io.prepared.get(id).map(|p| p.token)
    }

    /// Gives back what lanes took for the acquire `token` and the table did not use (the
    /// acquire was refused before it came to them, or given up).
    pub fn discard(&mut self, token: u64) {
        let Some(io) = &mut self.lanes else {
            return;
        };
        let mine: Vec<LeaseId> = io
            .prepared
            .iter()
            .filter(|(_, p)| p.token == token)
            .map(|(id, _)| id.clone())
            .collect();
        let mut back = Vec::new();
        for id in mine {
            // Still under way: what it takes is given back when it reports.
            if let Some(p) = io.prepared.get_mut(&id)
                && p.result.is_none()
            {
                p.token = GIVEN_UP;
                continue;
            }
            if let Some(Prepared {
                result: Some(Ok(Acquired::Held(hold))),
                ..
            }) = io.prepared.remove(&id)
            {
                back.push((id, hold));
            }
        }
        for (id, hold) in back {
            self.give_back_on_lane(id, hold);
        }
    }

    /// Queues the release of a lease its lane holds (and of its reservation).
    fn give_back_on_lane(&mut self, id: LeaseId, hold: Option<Hold>) {
        let host_key = self.settings.map(|st| st.key);
        let Some(io) = &mut self.lanes else {
            return;
        };
        let report = io.report.clone();
        let job_id = id.clone();
        let job: Job<LaneState> = Box::new(move |s: &mut LaneState| {
            if let Err(e) = give_back(&job_id, hold, host_key, s.leases.remove(&job_id)) {
                tracing::warn!(event = "release-failed", key = job_id.key.as_str(), lockspace = %job_id.lockspace.display(), reason = &*bounded(&crate::exit::chain_std(&e)), "lock dropped, but: {}", crate::exit::chain_std(&e));
            }
            report(LaneDone(Done::Finished { id: job_id }));
        });
        io.submit(&id, job);
    }

    /// Waits up to `within` for the lanes to finish their work (the daemon is stopping);
    /// returns how many lanes did not.
    pub fn stop_lanes(&mut self, within: Duration) -> usize {
        self.lanes.as_mut().map_or(0, |io| io.lanes.stop(within))
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

    /// Forgets the plans of the last acquire, and which acquire ran.
    pub fn clear_plans(&mut self) {
        self.plans.clear();
        if let Some(io) = &mut self.lanes {
            io.running = 0;
        }
    }

    /// Says that the table is about to run the acquire `token`: its prepared leases are
    /// what the table's `acquire` gets for them (until [`clear_plans`](Self::clear_plans)).
    pub fn running(&mut self, token: u64) {
        if let Some(io) = &mut self.lanes {
            io.running = token;
        }
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
}

impl LaneIo {
    /// Queues `job` on the lane of lease `id`. When no lane thread can be started, the job
    /// runs here with a state of its own: it does its I/O inline (what the daemon did before
    /// it had lanes), rather than fail.
    fn submit(&mut self, id: &LeaseId, job: Job<LaneState>) {
        *self.pending.entry(id.clone()).or_default() += 1;
        if let Err(job) = self.lanes.submit(&id.lockspace, id.key.as_str(), job) {
            tracing::warn!(event = "lane-failed", lockspace = %id.lockspace.display(), "cannot start a thread for lease I/O; doing it inline");
            let mut s = LaneState {
                leases: HashMap::new(),
                resolver: (self.resolver)(),
            };
            job(&mut s);
        }
    }
}

/// Takes the lease file and then, with `pr`, the disk's reservation; a reservation another
/// host holds gives the lease file back and is Busy. The one lease-then-reserve rule, for
/// the table's thread and for lanes alike.
fn take(
    resolver: &Resolver,
    id: &LeaseId,
    mode: Mode,
    holder: &HolderRef<'_>,
    pr: Option<(Settings, &Plan)>,
) -> Result<Acquired<(lockspace::Lease, Option<Hold>)>, LeaseError> {
    let mut files = FileBackend;
    let file = match files.acquire(&id.lockspace, &id.key, mode, holder)? {
        Acquired::Held(l) => l,
        Acquired::Busy(b) => return Ok(Acquired::Busy(b)),
    };
    let Some((st, plan)) = pr else {
        return Ok(Acquired::Held((file, None)));
    };
    match reserve(resolver, st, mode, plan) {
        Ok(Ok(hold)) => Ok(Acquired::Held((file, Some(hold)))),
        Ok(Err(busy)) => {
            let lease = file.path().to_path_buf();
            let _ = files.release(id, file);
            Ok(Acquired::Busy(Busy {
                lease,
                holders: Vec::new(),
                lock: None,
                reservation: Some(busy),
            }))
        }
        Err(e) => {
            let _ = files.release(id, file);
            Err(e)
        }
    }
}

/// Gives back a reservation and then the lease file (the reverse of [`take`]). The lease
/// goes even when the reservation cannot be given back: keeping it would hold the disk for
/// an owner that is gone; the registration left behind shows in `disklock pr check`.
fn give_back(
    id: &LeaseId,
    hold: Option<Hold>,
    host_key: Option<ReservationKey>,
    file: Option<lockspace::Lease>,
) -> Result<Option<Released>, LeaseError> {
    let mut pr_error = None;
    if let (Some(hold), Some(k)) = (hold, host_key)
        && let Err(e) = engine::release(&hold.paths, k)
    {
        pr_error = Some(LeaseError::Reservation {
            disk: hold.disk.clone(),
            reason: crate::exit::chain_std(&e),
        });
    }
    let released = match file {
        Some(f) => FileBackend.release(id, f)?,
        None => None,
    };
    match pr_error {
        Some(e) => Err(e),
        None => Ok(released),
    }
}

/// Reserves a disk for this host: the hold, or why another host has it.
fn reserve(
    resolver: &Resolver,
    st: Settings,
    mode: Mode,
    plan: &Plan,
) -> Result<Result<Hold, String>, LeaseError> {
    let kind = match mode {
        Mode::Exclusive => st.exclusive,
        Mode::Shared => st.shared,
    };
    let fail = |reason: String| LeaseError::Reservation {
        disk: plan.disk.clone(),
        reason,
    };
    let paths = crate::pr::open_storage(resolver, plan.devno).map_err(fail)?;
    match crate::pr::take(&paths, st.key, kind, plan.preempt, &plan.disk) {
        Ok(()) => Ok(Ok(Hold {
            devno: plan.devno,
            disk: plan.disk.clone(),
            kind,
            paths,
            generation: None,
        })),
        Err(e @ PrError::KeyInUse { .. }) => Ok(Err(e.to_string())),
        Err(e @ (PrError::Busy { .. } | PrError::Registered { .. })) => Ok(Err(format!(
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
    /// The lease file lock, when this thread holds it (always without lanes: `disklock run`).
    pub fn file(&self) -> Option<&lockspace::Lease> {
        match &self.file {
            FileLock::Here(l) => Some(l),
            FileLock::Lane(_) => None,
        }
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

    /// A lease a lane took for the table's acquire of `id` right now, if one did: the shell
    /// prepared every lease of this acquire that needed a lane.
    fn take_prepared(
        &mut self,
        dir: &Path,
        key: &DiskKey,
        mode: Mode,
    ) -> Option<Result<Acquired<PrLease>, LeaseError>> {
        let io = self.lanes.as_mut()?;
        if io.prepared.is_empty() {
            return None;
        }
        let id = LeaseId {
            lockspace: Arc::from(dir),
            key: key.clone(),
        };
        // Another acquire's (cannot happen: the shell runs an acquire only when no lease of
        // it is claimed by another) or still under way (the shell runs an acquire only once
        // all are reported): not this one's to use.
        if io
            .prepared
            .get(&id)
            .is_none_or(|p| p.token != io.running || p.result.is_none())
        {
            return None;
        }
        let p = io.prepared.remove(&id)?;
        let result = p.result?;
        if p.mode != mode {
            // Cannot happen (the shell prepares the mode the table asks for): never hand out
            // a lock of the other mode.
            if let Ok(Acquired::Held(hold)) = result {
                self.give_back_on_lane(id.clone(), hold);
            }
            return Some(Err(LeaseError::Reservation {
                disk: id.path().display().to_string(),
                reason: "internal error: prepared in another mode".into(),
            }));
        }
        Some(result.map(|a| match a {
            Acquired::Held(hold) => Acquired::Held(self.held(key, FileLock::Lane(id), hold)),
            Acquired::Busy(b) => Acquired::Busy(b),
        }))
    }

    /// A lease just taken: its file lock, and its reservation kept with the holds.
    fn held(&mut self, key: &DiskKey, file: FileLock, hold: Option<Hold>) -> PrLease {
        let reserved = hold.map(|h| {
            self.holds.insert(key.clone(), h);
            key.clone()
        });
        PrLease { file, reserved }
    }

    /// Queues a holder record write on the lane that holds the lease.
    fn write_on_lane(&mut self, id: &LeaseId, holder: &HolderRef<'_>, pending: bool) {
        let Some(io) = &mut self.lanes else {
            return;
        };
        let holder = holder.to_holder();
        let report = io.report.clone();
        let job_id = id.clone();
        let job: Job<LaneState> = Box::new(move |s: &mut LaneState| {
            if let Some(l) = s.leases.get_mut(&job_id) {
                let h = holder.borrowed();
                let written = if pending {
                    l.write_pending(&h)
                } else {
                    l.write_holder(&h)
                };
                if let Err(e) = written {
                    tracing::warn!(event = "holder-not-updated", key = job_id.key.as_str(), lockspace = %job_id.lockspace.display(), reason = &*bounded(&crate::exit::chain_std(&e)), "cannot write a holder record");
                }
            }
            report(LaneDone(Done::Finished { id: job_id }));
        });
        io.submit(id, job);
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
        if let Some(prepared) = self.take_prepared(dir, key, mode) {
            return prepared;
        }
        let id = LeaseId {
            lockspace: Arc::from(dir),
            key: key.clone(),
        };
        let pr = self.settings.zip(self.plans.get(key));
        let taken = take(&self.resolver, &id, mode, holder, pr)?;
        Ok(match taken {
            Acquired::Held((file, hold)) => {
                Acquired::Held(self.held(key, FileLock::Here(file), hold))
            }
            Acquired::Busy(b) => Acquired::Busy(b),
        })
    }

    fn update(&mut self, lease: &mut PrLease, holder: &HolderRef<'_>) -> Result<(), LeaseError> {
        match &mut lease.file {
            FileLock::Here(f) => self.files.update(f, holder),
            FileLock::Lane(id) => {
                let id = id.clone();
                self.write_on_lane(&id, holder, false);
                Ok(())
            }
        }
    }
    fn settle(&mut self, lease: &mut PrLease, holder: &HolderRef<'_>) -> Result<(), LeaseError> {
        match &mut lease.file {
            FileLock::Here(f) => self.files.settle(f, holder),
            FileLock::Lane(id) => {
                let id = id.clone();
                self.write_on_lane(&id, holder, true);
                Ok(())
            }
        }
    }

    fn lost(&self, id: &LeaseId, lease: &PrLease) -> Option<&str> {
        if let Some(why) = self.lost_files.get(id) {
            return Some(why);
        }
        lease.reserved.as_ref().and_then(|k| self.lost(k))
    }

    fn check(&mut self, id: &LeaseId, lease: &PrLease) -> Check {
        if self.lost_files.contains_key(id) {
            return Check::Held;
        }
        match &lease.file {
            FileLock::Here(f) => match f.lost_why() {
                Ok(None) => Check::Held,
                Ok(Some(why)) => {
                    self.lost_files.insert(id.clone(), why.to_owned());
                    Check::Lost(why.to_owned())
                }
                Err(e) => {
                    tracing::warn!(event = "lease-check-failed", key = id.key.as_str(), lockspace = %id.lockspace.display(), error = %crate::exit::chain_std(&e), "cannot check a lease");
                    Check::Held
                }
            },
            FileLock::Lane(lane_id) => {
                let Some(io) = &mut self.lanes else {
                    return Check::Held;
                };
                let report = io.report.clone();
                let job_id = lane_id.clone();
                let job: Job<LaneState> = Box::new(move |s: &mut LaneState| {
                    let lost = match s.leases.get(&job_id).map(lockspace::Lease::lost_why) {
                        Some(Ok(why)) => why.map(str::to_owned),
                        Some(Err(e)) => {
                            tracing::warn!(event = "lease-check-failed", key = job_id.key.as_str(), lockspace = %job_id.lockspace.display(), error = %crate::exit::chain_std(&e), "cannot check a lease");
                            None
                        }
                        None => None,
                    };
                    report(LaneDone(Done::Checked { id: job_id, lost }));
                });
                io.submit(lane_id, job);
                Check::Later
            }
        }
    }

    fn release(&mut self, id: &LeaseId, lease: PrLease) -> Result<Option<Released>, LeaseError> {
        self.lost_files.remove(id);
        if let Some(key) = &lease.reserved {
            // A lost disk is another host's now: nothing of ours to give back there.
            self.lost.remove(key);
        }
        let hold = lease.reserved.as_ref().and_then(|k| self.holds.remove(k));
        match lease.file {
            FileLock::Here(f) => {
                let released = give_back(id, hold, self.settings.map(|st| st.key), Some(f))?;
                Ok(released)
            }
            FileLock::Lane(id) => {
                if let Some(io) = &mut self.lanes {
                    io.released.push(id.clone());
                }
                self.give_back_on_lane(id, hold);
                Ok(None)
            }
        }
    }
}
