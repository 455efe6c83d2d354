//! The lease table: every lease the daemon holds and every owner it holds them for, as a
//! state machine without I/O.
//!
//! Inputs are requests (acquire, release, release an owner, status), events (an owner
//! process died, shutdown) and the time, passed in as seconds since the epoch. Lease files
//! are reached only through a [`Backend`] (the real one is [`FileBackend`]; tests use a fake
//! that simulates other hosts). Other outputs are [`Effect`]s that the I/O shell carries out:
//! start or stop watching an owner process, and log one structured event per acquire,
//! refusal and release.
//!
//! Rules kept here:
//! - One backend lease per lease file, however many local owners share it: a second open of
//!   a lease file in the daemon would drop its POSIX lock when closed.
//! - An acquire of several disks is all-or-nothing: on the first busy disk or error, what
//!   this request took is given back before the refusal is returned.
//! - A lease lives exactly as long as it has an owner; an owner exactly as long as it holds a
//!   lease (and is watched exactly as long as it exists).
//! - A client that is not root acts only for owner processes of its own uid.

// A refusal is built once per refused request; its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use disklock_naming::DiskKey;

use crate::lockspace::{
    self, Acquired, Busy, Holder, HolderRef, HostIdentity, LeaseError, LockInfo, Mode, Owner,
    OwnersRef, Released,
};

/// Where lease files live, as the table sees it.
pub trait Backend {
    /// A held lease.
    type Lease;
    /// Takes the lease `<dir>/<key>`.
    fn acquire(
        &mut self,
        dir: &Path,
        key: &DiskKey,
        mode: Mode,
        holder: &HolderRef<'_>,
    ) -> Result<Acquired<Self::Lease>, LeaseError>;
    /// Rewrites the holder record of a held lease.
    fn update(&mut self, lease: &mut Self::Lease, holder: &HolderRef<'_>)
    -> Result<(), LeaseError>;
    /// Does what taking a lease left for after the reply: writing its holder record,
    /// `holder` (the lease's current one), unless one was written since.
    fn settle(
        &mut self,
        _lease: &mut Self::Lease,
        _holder: &HolderRef<'_>,
    ) -> Result<(), LeaseError> {
        Ok(())
    }
    /// Gives a lease back (the lock is gone afterwards even on error). `Ok(None)`: handed on
    /// to be given back a moment later, off this thread (a lane of the daemon), which
    /// reports how it went.
    fn release(&mut self, id: &LeaseId, lease: Self::Lease)
    -> Result<Option<Released>, LeaseError>;
    /// Why a held lease was lost (its lease file is no longer at its path, or another host
    /// took the disk's reservation), for `status`.
    fn lost(&self, _id: &LeaseId, _lease: &Self::Lease) -> Option<&str> {
        None
    }
    /// Checks that a held lease is still held: its file still at its path ([`Check`]).
    fn check(&mut self, _id: &LeaseId, _lease: &Self::Lease) -> Check {
        Check::Held
    }
}

/// What [`Backend::check`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// Still held (or already known lost).
    Held,
    /// Lost, and why.
    Lost(String),
    /// Checked elsewhere (a lane), which reports later.
    Later,
}

/// Lease files in lockspace directories ([`lockspace`]).
#[derive(Debug, Default)]
pub struct FileBackend;

impl Backend for FileBackend {
    type Lease = lockspace::Lease;
    fn acquire(
        &mut self,
        dir: &Path,
        key: &DiskKey,
        mode: Mode,
        holder: &HolderRef<'_>,
    ) -> Result<Acquired<lockspace::Lease>, LeaseError> {
        // The holder record of a new lease is written once the reply is out (`settle`).
        lockspace::acquire_deferring_body(dir, key, mode, holder)
    }
    fn update(
        &mut self,
        lease: &mut lockspace::Lease,
        holder: &HolderRef<'_>,
    ) -> Result<(), LeaseError> {
        lease.write_holder(holder)
    }
    fn settle(
        &mut self,
        lease: &mut lockspace::Lease,
        holder: &HolderRef<'_>,
    ) -> Result<(), LeaseError> {
        lease.write_pending(holder)
    }
    fn release(
        &mut self,
        _id: &LeaseId,
        lease: lockspace::Lease,
    ) -> Result<Option<Released>, LeaseError> {
        // A removed file's fd closes once the daemon is idle.
        lease.release_with(super::idle::close).map(Some)
    }
}

/// A disk resolved to its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The disk as the client named it.
    pub disk: String,
    /// Its key.
    pub key: DiskKey,
    /// Where the key came from (`scsi-wwid`, `file-sha256`, …).
    pub source: &'static str,
    /// The lockspace directory.
    pub lockspace: PathBuf,
    /// The mode asked for.
    pub mode: Mode,
}

impl Target {
    /// Its lease (the table interns lockspaces for what it keeps; this is a copy).
    pub fn id(&self) -> LeaseId {
        LeaseId {
            lockspace: Arc::from(self.lockspace.as_path()),
            key: self.key.clone(),
        }
    }
}

/// A lease file: lockspace directory and key.
///
/// The table keeps one `Arc<LeaseId>` per lease, shared by the lease entry, its owners'
/// lists and log events; lockspace paths are interned (a daemon has a handful of lockspaces
/// and up to 100,000 leases).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LeaseId {
    /// The lockspace directory.
    pub lockspace: Arc<Path>,
    /// The key (the file name).
    pub key: DiskKey,
}

impl LeaseId {
    /// The lease file.
    pub fn path(&self) -> PathBuf {
        self.lockspace.join(self.key.as_str())
    }
}

/// Who this daemon is, for holder records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Host name and id.
    pub host: HostIdentity,
    /// The daemon's pid (the process that holds the locks).
    pub pid: u32,
    /// disklock's version.
    pub version: String,
}

impl Identity {
    /// This daemon's holder record for a lease.
    fn record<'a>(
        &'a self,
        mode: Mode,
        since: u64,
        disk: &'a str,
        owners: OwnersRef<'a>,
    ) -> HolderRef<'a> {
        HolderRef {
            host: &self.host.host,
            host_id: &self.host.host_id,
            pid: self.pid,
            mode,
            since,
            version: &self.version,
            disk,
            owners,
        }
    }
}

/// One held lease. Kept small: the daemon holds up to 100,000 of them (the disk name and
/// the owners are shared, the source is static).
struct Entry<L> {
    lease: L,
    disk: Arc<str>,
    source: &'static str,
    mode: Mode,
    since: u64,
    owners: OwnerList,
}

/// A lease's owners, sorted by uuid, shared with the owner table. Nearly always one, held
/// inline; shared leases with several local owners spill to a vector.
enum OwnerList {
    One(Arc<Owner>),
    Many(Vec<Arc<Owner>>),
}

impl OwnerList {
    fn as_slice(&self) -> &[Arc<Owner>] {
        match self {
            OwnerList::One(o) => std::slice::from_ref(o),
            OwnerList::Many(v) => v,
        }
    }
    fn contains_key(&self, uuid: &str) -> bool {
        self.as_slice().iter().any(|o| o.uuid == uuid)
    }
    fn insert(&mut self, o: Arc<Owner>) {
        let mut v = match std::mem::replace(self, OwnerList::Many(Vec::new())) {
            OwnerList::One(x) => vec![x],
            OwnerList::Many(v) => v,
        };
        if let Err(i) = v.binary_search_by(|x| x.uuid.cmp(&o.uuid)) {
            v.insert(i, o);
        }
        *self = OwnerList::Many(v);
    }
    fn remove(&mut self, uuid: &str) -> Option<Arc<Owner>> {
        match self {
            OwnerList::One(o) if o.uuid == uuid => {
                match std::mem::replace(self, OwnerList::Many(Vec::new())) {
                    OwnerList::One(o) => Some(o),
                    OwnerList::Many(_) => None,
                }
            }
            OwnerList::One(_) => None,
            OwnerList::Many(v) => {
                let i = v.iter().position(|o| o.uuid == uuid)?;
                Some(v.remove(i))
            }
        }
    }
    fn is_empty(&self) -> bool {
        self.as_slice().is_empty()
    }
    #[cfg(test)]
    fn len(&self) -> usize {
        self.as_slice().len()
    }
    fn keys(&self) -> impl Iterator<Item = &String> {
        self.as_slice().iter().map(|o| &o.uuid)
    }
    #[cfg(test)]
    fn values(&self) -> impl Iterator<Item = &Owner> {
        self.as_slice().iter().map(|o| &**o)
    }
}

struct OwnerEntry {
    owner: Arc<Owner>,
    uid: u32,
    leases: Vec<Arc<LeaseId>>,
    /// The serial of the last acquire that succeeded for this owner ([`Undo`]).
    last_acquire: u64,
}

/// Something for the I/O shell to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Watch this owner process; report its death with [`Table::owner_died`].
    Watch {
        /// The owner's uuid.
        uuid: String,
        /// Its pid.
        pid: u32,
    },
    /// Stop watching this owner (it holds nothing any more).
    Unwatch {
        /// The owner's uuid.
        uuid: String,
    },
    /// Log this event.
    Log(Event),
}

/// Why leases were released.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A client asked.
    Request,
    /// The owner process died.
    OwnerDied,
    /// The daemon is stopping.
    Shutdown,
    /// A multi-disk acquire failed part way and gave back what it took.
    Rollback,
    /// The acquire's reply could not be delivered: its caller saw a failure.
    Undelivered,
}

impl Cause {
    /// For log fields.
    pub fn as_str(self) -> &'static str {
        match self {
            Cause::Request => "request",
            Cause::OwnerDied => "owner-died",
            Cause::Shutdown => "shutdown",
            Cause::Rollback => "rollback",
            Cause::Undelivered => "reply-undelivered",
        }
    }
}

/// One structured log event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An owner now holds a lease (a new lease file lock, or joining a shared lease).
    Acquired {
        /// The disk.
        disk: Arc<str>,
        /// The lease.
        lease: Arc<LeaseId>,
        /// Mode.
        mode: Mode,
        /// For whom.
        owner: Arc<Owner>,
        /// True when this took a new lock (false: joined a shared lease already held here).
        new_lock: bool,
    },
    /// An acquire was refused.
    Refused {
        /// The disk that failed.
        disk: String,
        /// Its lease, when it was resolved.
        lease: Option<LeaseId>,
        /// Mode asked for.
        mode: Mode,
        /// For whom.
        owner: Owner,
        /// Why, in one line.
        reason: String,
    },
    /// An owner no longer holds a lease.
    Released {
        /// The disk.
        disk: Arc<str>,
        /// The lease.
        lease: Arc<LeaseId>,
        /// Whose.
        owner: Arc<Owner>,
        /// Why.
        cause: Cause,
        /// What happened to the lock: `None` while other local owners keep it; `Ok(None)`
        /// when it is given back off this thread (see [`Backend::release`]).
        file: Option<Result<Option<Released>, String>>,
    },
    /// A holder record could not be rewritten (the lock itself is unaffected).
    HolderNotUpdated {
        /// The lease.
        lease: Arc<LeaseId>,
        /// Why.
        reason: String,
    },
}

/// A held lease, as shown by `disklock status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LeaseView {
    /// The disk as first named.
    pub disk: String,
    /// Its key.
    pub key: String,
    /// Where the key came from.
    pub source: String,
    /// The lockspace directory.
    pub lockspace: PathBuf,
    /// The lease file.
    pub lease: PathBuf,
    /// Exclusive or shared.
    pub mode: Mode,
    /// Who holds it here.
    pub owners: Vec<Owner>,
    /// When it was taken (seconds since the epoch).
    pub since: u64,
    /// The holder record this daemon wrote into the lease file.
    pub holder: Holder,
    /// Set when another host took the disk's reservation while the lease is held here:
    /// why. The owner should stop writing; only a new acquire takes the disk again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lost: Option<String>,
    /// Owners of other uids left out of `owners` and `holder.owners`, for a client that is
    /// not root: how many.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub hidden_owners: usize,
}

fn is_zero(n: &usize) -> bool {
    *n == 0
}

/// Held leases, serialized as a list of [`LeaseView`]s without building them: a reply is
/// written straight from the table ([`Table::listing`]).
pub struct Listing<'a, B: Backend> {
    table: &'a Table<B>,
    ids: Option<&'a [Arc<LeaseId>]>,
    viewer: Option<u32>,
}

impl<B: Backend> serde::Serialize for Listing<'_, B> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.ids {
            Some(ids) => self.write(
                s,
                ids.iter()
                    .filter_map(|id| self.table.leases.get_key_value(id)),
            ),
            None => self.write(s, self.table.leases.iter()),
        }
    }
}

impl<'a, B: Backend> Listing<'a, B> {
    fn write<S: serde::Serializer>(
        &self,
        s: S,
        leases: impl Iterator<Item = (&'a Arc<LeaseId>, &'a Entry<B::Lease>)>,
    ) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq as _;
        let t = self.table;
        let mut seq = s.serialize_seq(None)?;
        for (id, e) in leases {
            let lost = t.backend.lost(id, &e.lease);
            let all = e.owners.as_slice();
            match self.viewer {
                None => seq.serialize_element(&ViewRef::new(&t.identity, id, e, lost, all, 0))?,
                Some(uid) => {
                    let shown: Vec<Arc<Owner>> = all
                        .iter()
                        .filter(|o| t.owners.get(&o.uuid).is_some_and(|x| x.uid == uid))
                        .cloned()
                        .collect();
                    let hidden = all.len() - shown.len();
                    let view = ViewRef::new(&t.identity, id, e, lost, &shown, hidden);
                    seq.serialize_element(&view)?;
                }
            }
        }
        seq.end()
    }
}

impl<'a> ViewRef<'a> {
    fn new<L>(
        me: &'a Identity,
        id: &'a LeaseId,
        e: &'a Entry<L>,
        lost: Option<&'a str>,
        owners: &'a [Arc<Owner>],
        hidden_owners: usize,
    ) -> ViewRef<'a> {
        let owners = OwnersRef::Shared(owners);
        ViewRef {
            disk: &e.disk,
            key: id.key.as_str(),
            source: e.source,
            lockspace: &id.lockspace,
            lease: LeasePath(id),
            mode: e.mode,
            owners,
            since: e.since,
            holder: me.record(e.mode, e.since, &e.disk, owners),
            lost,
            hidden_owners,
        }
    }
}

/// [`LeaseView`], borrowed: the same fields, in the same order.
#[derive(serde::Serialize)]
struct ViewRef<'a> {
    disk: &'a str,
    key: &'a str,
    source: &'a str,
    lockspace: &'a Path,
    lease: LeasePath<'a>,
    mode: Mode,
    owners: OwnersRef<'a>,
    since: u64,
    holder: HolderRef<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    lost: Option<&'a str>,
    #[serde(skip_serializing_if = "is_zero")]
    hidden_owners: usize,
}

/// A lease file's path ([`LeaseId::path`]), serialized without building it.
struct LeasePath<'a>(&'a LeaseId);

impl serde::Serialize for LeasePath<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let LeaseId { lockspace, key } = self.0;
        match lockspace.to_str() {
            // As `Path::join` joins them: one '/' between (the key never starts with one).
            Some(dir) if dir.ends_with('/') => s.collect_str(&format_args!("{dir}{key}")),
            Some(dir) => s.collect_str(&format_args!("{dir}/{key}")),
            None => self.0.path().serialize(s),
        }
    }
}

/// Why a request was refused. `Busy` is the expected one.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// Someone else holds the disk's lease.
    #[error("{disk}: busy: {}", busy.describe())]
    Busy {
        /// The disk.
        disk: String,
        /// Its key.
        key: String,
        /// Who holds it.
        busy: Busy,
    },
    /// The lease file could not be used.
    #[error("{disk}")]
    Lease {
        /// The disk.
        disk: String,
        /// Why.
        #[source]
        error: LeaseError,
    },
    /// The client may not act for that owner.
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// Why.
        reason: String,
    },
    /// An owner uuid that is already registered with another name or pid.
    #[error("{reason}")]
    OwnerConflict {
        /// Why.
        reason: String,
    },
    /// The owner already holds the disk in the other mode.
    #[error("{disk}: already held {held} by this owner")]
    ModeConflict {
        /// The disk.
        disk: String,
        /// The mode held.
        held: Mode,
    },
}

/// An acquire request, its owner process already checked by the shell.
#[derive(Debug, Clone)]
pub struct AcquireRequest {
    /// The disks, resolved.
    pub targets: Vec<Target>,
    /// For whom.
    pub owner: Owner,
    /// The real uid of the owner process.
    pub owner_uid: u32,
    /// The uid of the client (from SO_PEERCRED).
    pub client_uid: u32,
}

/// What a release did.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ReleaseOutcome {
    /// Disks whose lease an owner gave up.
    pub released: Vec<String>,
    /// Disks named that this daemon does not hold (for that owner).
    pub not_held: Vec<String>,
    /// Lease files of released leases whose lock is not dropped yet: their lockspace's file
    /// system has not answered (an NFS server away); the daemon drops them when it does.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dropping: Vec<PathBuf>,
}

/// What gives back the leases an acquire took when its reply never reached the caller
/// ([`Table::take_undo`], [`Table::undo`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undo {
    uuid: String,
    /// The acquire's serial: an undo applies only while it is the owner's last acquire.
    serial: u64,
    /// The leases it took (not those the owner held already).
    taken: Vec<Arc<LeaseId>>,
}

impl Undo {
    /// The owner's uuid.
    pub fn owner(&self) -> &str {
        &self.uuid
    }
}

/// Which owners to release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OwnerSelector {
    /// By name.
    pub name: Option<String>,
    /// By uuid.
    pub uuid: Option<String>,
}

/// The daemon's leases and owners.
pub struct Table<B: Backend> {
    backend: B,
    identity: Identity,
    /// Lockspace directories, interned: a handful (a list beats hashing a path).
    lockspaces: Vec<Arc<Path>>,
    leases: BTreeMap<Arc<LeaseId>, Entry<B::Lease>>,
    /// The disk names leases were first taken under: a release names the disk as the
    /// acquire did, and finding its lease here spares resolving it again.
    names: HashMap<Arc<str>, Named>,
    owners: BTreeMap<String, OwnerEntry>,
    effects: Vec<Effect>,
    /// Leases taken since the last [`Table::settle`].
    unsettled: Vec<Arc<LeaseId>>,
    /// Successful acquires so far: the serial of the next [`Undo`].
    acquires: u64,
    /// The undo of the last acquire, until taken.
    undo: Option<Undo>,
}

/// The held leases first taken under one disk name.
enum Named {
    /// Exactly one.
    One(Arc<LeaseId>),
    /// Several (the name pointed at another disk later): ambiguous, resolve it.
    Several(usize),
}

impl<B: Backend> Table<B> {
    /// An empty table.
    pub fn new(backend: B, identity: Identity) -> Table<B> {
        Table {
            backend,
            identity,
            lockspaces: Vec::new(),
            leases: BTreeMap::new(),
            names: HashMap::new(),
            owners: BTreeMap::new(),
            unsettled: Vec::new(),
            effects: Vec::new(),
            acquires: 0,
            undo: None,
        }
    }

    /// The effects produced since the last call, in order.
    pub fn take_effects(&mut self) -> Vec<Effect> {
        std::mem::take(&mut self.effects)
    }

    /// How many leases are held.
    pub fn len(&self) -> usize {
        self.leases.len()
    }

    /// Whether no lease is held.
    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// The backend.
    pub fn backend(&self) -> &B {
        &self.backend
    }

    /// The backend, to prepare or maintain what it keeps beside the leases.
    pub fn backend_mut(&mut self) -> &mut B {
        &mut self.backend
    }

    fn intern(&mut self, dir: &Path) -> Arc<Path> {
        if let Some(d) = self
            .lockspaces
            .iter()
            .find(|d| d.as_os_str() == dir.as_os_str())
        {
            return d.clone();
        }
        let d: Arc<Path> = Arc::from(dir);
        self.lockspaces.push(d.clone());
        d
    }

    fn entry_holder(&self, e: &Entry<B::Lease>) -> Holder {
        self.identity
            .record(
                e.mode,
                e.since,
                &e.disk,
                OwnersRef::Shared(e.owners.as_slice()),
            )
            .to_holder()
    }

    /// A held lease as [`Table::views`] shows it.
    #[cfg(test)]
    fn view(&self, id: &LeaseId, e: &Entry<B::Lease>) -> LeaseView {
        LeaseView {
            disk: e.disk.to_string(),
            key: id.key.to_string(),
            source: e.source.to_owned(),
            lockspace: id.lockspace.to_path_buf(),
            lease: id.path(),
            mode: e.mode,
            owners: e.owners.values().cloned().collect(),
            since: e.since,
            holder: self.entry_holder(e),
            lost: self.backend.lost(id, &e.lease).map(str::to_owned),
            hidden_owners: 0,
        }
    }

    /// These held leases, as the owned views a test compares.
    #[cfg(test)]
    pub fn views(&self, ids: &[Arc<LeaseId>]) -> Vec<LeaseView> {
        ids.iter()
            .filter_map(|id| self.leases.get(id).map(|e| self.view(id, e)))
            .collect()
    }

    /// These held leases (all of them for `None`, in lockspace and key order), serialized
    /// as a list of [`LeaseView`]s straight from the table. For a `viewer` uid (a client
    /// that is not root), owners of other uids are left out of each lease's owners and
    /// holder record, and counted in `hidden_owners`: it sees what is held, not for whom.
    pub fn listing<'a>(
        &'a self,
        ids: Option<&'a [Arc<LeaseId>]>,
        viewer: Option<u32>,
    ) -> Listing<'a, B> {
        Listing {
            table: self,
            ids,
            viewer,
        }
    }

    /// The uid recorded for `owner` if it is registered with this uuid, name and pid.
    pub fn owner_uid(&self, owner: &Owner) -> Option<u32> {
        self.owners
            .get(&owner.uuid)
            .filter(|o| *o.owner == *owner)
            .map(|o| o.uid)
    }

    /// The uid registered for the owner `uuid`.
    pub fn uid_of(&self, uuid: &str) -> Option<u32> {
        self.owners.get(uuid).map(|o| o.uid)
    }

    /// The pid registered for the owner `uuid`.
    pub fn owner_pid(&self, uuid: &str) -> Option<u32> {
        self.owners.get(uuid).map(|o| o.owner.pid)
    }

    /// The one held lease first taken under this disk name, if exactly one was.
    pub fn lease_named_once(&self, disk: &str) -> Option<LeaseId> {
        match self.names.get(disk)? {
            Named::One(id) => Some((**id).clone()),
            Named::Several(_) => None,
        }
    }

    fn name_added(&mut self, disk: &Arc<str>, id: &Arc<LeaseId>) {
        match self.names.get_mut(disk) {
            None => {
                self.names.insert(disk.clone(), Named::One(id.clone()));
            }
            Some(n @ Named::One(_)) => *n = Named::Several(2),
            Some(Named::Several(k)) => *k += 1,
        }
    }

    fn name_removed(&mut self, disk: &str) {
        match self.names.get_mut(disk) {
            Some(Named::Several(k)) if *k > 1 => *k -= 1,
            Some(_) => {
                self.names.remove(disk);
            }
            None => {}
        }
    }

    /// Whether the lease `key` in lockspace `dir` is held.
    pub fn holds(&self, dir: &Path, key: &DiskKey) -> bool {
        let Some(lockspace) = self
            .lockspaces
            .iter()
            .find(|d| d.as_os_str() == dir.as_os_str())
        else {
            return false;
        };
        self.leases.contains_key(&LeaseId {
            lockspace: lockspace.clone(),
            key: key.clone(),
        })
    }

    /// The holder record a new lease of `t` taken for `owner` at `now` gets (for a lease
    /// taken before the table runs the acquire: the daemon's lanes).
    pub fn record_for(&self, t: &Target, owner: &Owner, now: u64) -> Holder {
        self.identity
            .record(
                t.mode,
                now,
                &t.disk,
                OwnersRef::Plain(std::slice::from_ref(owner)),
            )
            .to_holder()
    }

    /// A held lease first taken under this disk name (the first in lease order).
    pub fn lease_named(&self, disk: &str) -> Option<LeaseId> {
        self.leases
            .iter()
            .find(|(_, e)| &*e.disk == disk)
            .map(|(id, _)| (**id).clone())
    }

    /// Every lease held, in lockspace and key order.
    #[cfg(test)]
    pub fn status(&self) -> Vec<LeaseView> {
        self.leases.iter().map(|(id, e)| self.view(id, e)).collect()
    }

    /// Takes every target for `req.owner`, or none of them; returns the leases it names, in
    /// request order (see [`Table::listing`]).
    pub fn acquire(&mut self, req: AcquireRequest, now: u64) -> Result<Vec<Arc<LeaseId>>, Refusal> {
        self.undo = None;
        let AcquireRequest {
            targets,
            owner,
            owner_uid,
            client_uid,
        } = req;
        if client_uid != 0 && client_uid != owner_uid {
            return Err(self.refuse_all(
                &targets,
                &owner,
                Refusal::PermissionDenied {
                    reason: format!(
                        "uid {client_uid} may not acquire for pid {} (owned by uid {owner_uid})",
                        owner.pid
                    ),
                },
            ));
        }
        // The registered owner is shared by its leases; a new one is registered only if it
        // ends up holding something.
        let owner: Arc<Owner> = if let Some(o) = self.owners.get(&owner.uuid) {
            if *o.owner != owner {
                let reason = format!(
                    "owner uuid {} is already registered as {:?} with pid {}",
                    owner.uuid, o.owner.name, o.owner.pid
                );
                return Err(self.refuse_all(&targets, &owner, Refusal::OwnerConflict { reason }));
            }
            if client_uid != 0 && o.uid != client_uid {
                let reason = format!("owner uuid {} belongs to uid {}", owner.uuid, o.uid);
                return Err(self.refuse_all(
                    &targets,
                    &owner,
                    Refusal::PermissionDenied { reason },
                ));
            }
            o.owner.clone()
        } else {
            Arc::new(owner)
        };
        let wanted = dedup(targets);
        let mut taken: Vec<Arc<LeaseId>> = Vec::new();
        let mut ids: Vec<Arc<LeaseId>> = Vec::with_capacity(wanted.len());
        for t in &wanted {
            let lockspace = self.intern(&t.lockspace);
            match self.acquire_one(t, lockspace, &owner, now, &mut taken) {
                Ok(id) => ids.push(id),
                Err(refusal) => {
                    self.effects.push(Effect::Log(Event::Refused {
                        disk: t.disk.clone(),
                        lease: Some(t.id()),
                        mode: t.mode,
                        owner: (*owner).clone(),
                        reason: refusal_text(&refusal),
                    }));
                    for id in taken.into_iter().rev() {
                        self.drop_owner_from_lease(&id, &owner.uuid, Cause::Rollback);
                    }
                    return Err(refusal);
                }
            }
        }
        self.acquires += 1;
        let serial = self.acquires;
        if !taken.is_empty() {
            self.undo = Some(Undo {
                uuid: owner.uuid.clone(),
                serial,
                taken: taken.clone(),
            });
            if !self.owners.contains_key(&owner.uuid) {
                self.effects.push(Effect::Watch {
                    uuid: owner.uuid.clone(),
                    pid: owner.pid,
                });
                self.owners.insert(
                    owner.uuid.clone(),
                    OwnerEntry {
                        owner: owner.clone(),
                        uid: owner_uid,
                        leases: Vec::new(),
                        last_acquire: serial,
                    },
                );
            }
            if let Some(entry) = self.owners.get_mut(&owner.uuid) {
                entry.leases.extend(taken);
            }
        }
        // Even an acquire that took nothing new told its caller that the owner holds these
        // leases: an earlier acquire's undo must not take them away any more.
        if let Some(entry) = self.owners.get_mut(&owner.uuid) {
            entry.last_acquire = serial;
        }
        Ok(ids)
    }

    /// The undo of the last [`Table::acquire`], if it succeeded and took any lease: for the
    /// shell to keep until the reply is delivered.
    pub fn take_undo(&mut self) -> Option<Undo> {
        self.undo.take()
    }

    /// Gives back what an acquire took, because its reply never reached its caller (who saw
    /// a failure, and must not be left holding leases it does not know of). Nothing is
    /// given back once the owner has acquired again since (that caller was told it holds
    /// them) or has gone; leases it released since are already gone. False when nothing
    /// was given back for that reason.
    pub fn undo(&mut self, undo: Undo) -> bool {
        let Undo {
            uuid,
            serial,
            taken,
        } = undo;
        if self.owners.get(&uuid).map(|o| o.last_acquire) != Some(serial) {
            return false;
        }
        for id in taken.iter().rev() {
            self.drop_owner_from_lease(id, &uuid, Cause::Undelivered);
            self.drop_lease_from_owner(&uuid, id);
        }
        true
    }

    fn refuse_all(&mut self, targets: &[Target], owner: &Owner, refusal: Refusal) -> Refusal {
        let reason = refusal_text(&refusal);
        for t in targets {
            self.effects.push(Effect::Log(Event::Refused {
                disk: t.disk.clone(),
                lease: Some(t.id()),
                mode: t.mode,
                owner: owner.clone(),
                reason: reason.clone(),
            }));
        }
        refusal
    }

    /// Takes one target; returns its lease (held, or already ours).
    fn acquire_one(
        &mut self,
        t: &Target,
        lockspace: Arc<Path>,
        owner: &Arc<Owner>,
        now: u64,
        taken: &mut Vec<Arc<LeaseId>>,
    ) -> Result<Arc<LeaseId>, Refusal> {
        let id = LeaseId {
            lockspace,
            key: t.key.clone(),
        };
        if let Some((held, e)) = self.leases.get_key_value(&id) {
            let held = held.clone();
            if e.owners.contains_key(&owner.uuid) {
                return if e.mode == t.mode {
                    Ok(held) // Already ours: nothing to do, nothing to roll back.
                } else {
                    Err(Refusal::ModeConflict {
                        disk: t.disk.clone(),
                        held: e.mode,
                    })
                };
            }
            if e.mode == Mode::Shared && t.mode == Mode::Shared {
                if let Some(e) = self.leases.get_mut(&id) {
                    e.owners.insert(owner.clone());
                }
                taken.push(held.clone());
                self.effects.push(Effect::Log(Event::Acquired {
                    disk: Arc::from(t.disk.as_str()),
                    lease: held.clone(),
                    mode: t.mode,
                    owner: owner.clone(),
                    new_lock: false,
                }));
                self.rewrite_holder(&held);
                return Ok(held);
            }
            // Held here in a conflicting mode: busy, and we know exactly by whom.
            let holder = self.entry_holder(e);
            return Err(Refusal::Busy {
                disk: t.disk.clone(),
                key: t.key.to_string(),
                busy: Busy {
                    lease: id.path(),
                    holders: vec![holder],
                    lock: Some(LockInfo {
                        mode: e.mode,
                        pid: i32::try_from(self.identity.pid).unwrap_or(0),
                        process: Some("disklock".to_owned()),
                    }),
                    reservation: None,
                },
            });
        }
        let holder = self.identity.record(
            t.mode,
            now,
            &t.disk,
            OwnersRef::Shared(std::slice::from_ref(owner)),
        );
        match self
            .backend
            .acquire(&id.lockspace, &id.key, t.mode, &holder)
        {
            Ok(Acquired::Held(lease)) => {
                let id = Arc::new(id);
                let disk: Arc<str> = Arc::from(t.disk.as_str());
                self.name_added(&disk, &id);
                self.leases.insert(
                    id.clone(),
                    Entry {
                        lease,
                        disk: disk.clone(),
                        source: t.source,
                        mode: t.mode,
                        since: now,
                        owners: OwnerList::One(owner.clone()),
                    },
                );
                taken.push(id.clone());
                self.unsettled.push(id.clone());
                self.effects.push(Effect::Log(Event::Acquired {
                    disk,
                    lease: id.clone(),
                    mode: t.mode,
                    owner: owner.clone(),
                    new_lock: true,
                }));
                Ok(id)
            }
            Ok(Acquired::Busy(busy)) => Err(Refusal::Busy {
                disk: t.disk.clone(),
                key: t.key.to_string(),
                busy,
            }),
            Err(error) => Err(Refusal::Lease {
                disk: t.disk.clone(),
                error,
            }),
        }
    }

    /// Finishes the leases taken since the last call (see [`Backend::settle`]): the shell
    /// calls it once the reply is out. A failure leaves the lease held (the lock is what
    /// excludes others) and is logged: others see no holder record.
    pub fn settle(&mut self) {
        for id in std::mem::take(&mut self.unsettled) {
            // Gone already (rolled back or released): nothing to write.
            self.write_record(&id, true);
        }
    }

    fn rewrite_holder(&mut self, id: &Arc<LeaseId>) {
        self.write_record(id, false);
    }

    /// Writes a held lease's current holder record: the one its acquire left for after the
    /// reply (`pending`), or a rewrite. A failure is logged and the lease kept.
    fn write_record(&mut self, id: &Arc<LeaseId>, pending: bool) {
        let Some(e) = self.leases.get_mut(id) else {
            return;
        };
        let holder = self.identity.record(
            e.mode,
            e.since,
            &e.disk,
            OwnersRef::Shared(e.owners.as_slice()),
        );
        let written = if pending {
            self.backend.settle(&mut e.lease, &holder)
        } else {
            self.backend.update(&mut e.lease, &holder)
        };
        if let Err(err) = written {
            self.effects.push(Effect::Log(Event::HolderNotUpdated {
                lease: id.clone(),
                reason: crate::exit::chain_std(&err),
            }));
        }
    }

    /// Removes `uuid` from the lease's owners (not from the owner's own list); the last
    /// owner out releases the lock.
    fn drop_owner_from_lease(&mut self, id: &LeaseId, uuid: &str, cause: Cause) {
        let Some(key) = self.leases.get_key_value(id).map(|(k, _)| k.clone()) else {
            return;
        };
        let Some(e) = self.leases.get_mut(id) else {
            return;
        };
        let Some(owner) = e.owners.remove(uuid) else {
            return;
        };
        let disk = e.disk.clone();
        let file = if e.owners.is_empty() {
            let Some(e) = self.leases.remove(id) else {
                return;
            };
            self.name_removed(&e.disk);
            Some(
                self.backend
                    .release(&key, e.lease)
                    .map_err(|err| crate::exit::chain_std(&err)),
            )
        } else {
            self.rewrite_holder(&key);
            None
        };
        self.effects.push(Effect::Log(Event::Released {
            disk,
            lease: key,
            owner,
            cause,
            file,
        }));
    }

    fn drop_lease_from_owner(&mut self, uuid: &str, id: &LeaseId) {
        let Some(o) = self.owners.get_mut(uuid) else {
            return;
        };
        o.leases.retain(|l| **l != *id);
        if o.leases.is_empty() {
            self.owners.remove(uuid);
            self.effects.push(Effect::Unwatch {
                uuid: uuid.to_owned(),
            });
        }
    }

    fn may_release(&self, client_uid: u32, uuid: &str) -> bool {
        client_uid == 0 || self.owners.get(uuid).is_some_and(|o| o.uid == client_uid)
    }

    /// Releases leases: of one owner (`owner` = its uuid), or of all their owners.
    /// `targets` pairs each lease with the disk name the client used.
    pub fn release(
        &mut self,
        targets: &[(String, LeaseId)],
        owner: Option<&str>,
        client_uid: u32,
    ) -> Result<ReleaseOutcome, Refusal> {
        // Check everything first, so that a refusal changes nothing.
        let mut plan: Vec<(String, &LeaseId, Vec<String>)> = Vec::new();
        let mut out = ReleaseOutcome::default();
        for (disk, id) in targets {
            let Some(e) = self.leases.get(id) else {
                out.not_held.push(disk.clone());
                continue;
            };
            let uuids: Vec<String> = match owner {
                Some(u) if e.owners.contains_key(u) => vec![u.to_owned()],
                Some(_) => {
                    out.not_held.push(disk.clone());
                    continue;
                }
                None => e.owners.keys().cloned().collect(),
            };
            // The owner is not named: a client of another uid has no business with it.
            if uuids.iter().any(|u| !self.may_release(client_uid, u)) {
                return Err(Refusal::PermissionDenied {
                    reason: format!(
                        "uid {client_uid} may not release {disk}: an owner of another uid holds it"
                    ),
                });
            }
            if !plan.iter().any(|(_, p, _)| *p == id) {
                plan.push((disk.clone(), id, uuids));
            }
        }
        for (disk, id, uuids) in plan {
            for u in uuids {
                self.drop_owner_from_lease(id, &u, Cause::Request);
                self.drop_lease_from_owner(&u, id);
            }
            out.released.push(disk);
        }
        Ok(out)
    }

    /// Releases every lease of the owners that match `sel`; returns the disks.
    pub fn release_owners(
        &mut self,
        sel: &OwnerSelector,
        client_uid: u32,
    ) -> Result<ReleaseOutcome, Refusal> {
        let uuids: Vec<String> = self
            .owners
            .iter()
            .filter(|(u, o)| {
                sel.uuid.as_deref().is_none_or(|want| want == u.as_str())
                    && sel.name.as_deref().is_none_or(|want| want == o.owner.name)
            })
            .map(|(u, _)| u.clone())
            .collect();
        if uuids.iter().any(|u| !self.may_release(client_uid, u)) {
            // Named as the client named it: the uuid of an owner found by name is not its
            // business.
            let named = sel
                .name
                .as_deref()
                .or(sel.uuid.as_deref())
                .unwrap_or_default();
            return Err(Refusal::PermissionDenied {
                reason: format!(
                    "uid {client_uid} may not release owner {named}: it belongs to another uid"
                ),
            });
        }
        let mut out = ReleaseOutcome::default();
        for u in uuids {
            out.released.extend(self.release_owner(&u, Cause::Request));
        }
        Ok(out)
    }

    fn release_owner(&mut self, uuid: &str, cause: Cause) -> Vec<String> {
        let Some(o) = self.owners.remove(uuid) else {
            return Vec::new();
        };
        self.effects.push(Effect::Unwatch {
            uuid: uuid.to_owned(),
        });
        let mut disks = Vec::with_capacity(o.leases.len());
        for id in o.leases {
            if let Some(e) = self.leases.get(&id) {
                disks.push(e.disk.to_string());
            }
            self.drop_owner_from_lease(&id, uuid, cause);
        }
        disks
    }

    /// The owner process `uuid` died: release its leases now.
    pub fn owner_died(&mut self, uuid: &str) {
        self.release_owner(uuid, Cause::OwnerDied);
    }

    /// Checks every held lease with the backend ([`Backend::check`]); returns those found
    /// lost now (others may be reported later by the backend's own means).
    pub fn check_leases(&mut self) -> Vec<(Arc<LeaseId>, String)> {
        let mut lost = Vec::new();
        for (id, e) in &self.leases {
            if let Check::Lost(why) = self.backend.check(id, &e.lease) {
                lost.push((id.clone(), why));
            }
        }
        lost
    }

    /// The owners of a held lease.
    pub fn owners_of(&self, id: &LeaseId) -> Vec<Arc<Owner>> {
        self.leases
            .get(id)
            .map(|e| e.owners.as_slice().to_vec())
            .unwrap_or_default()
    }

    /// The held leases whose key is `key` (one per lockspace that has it).
    pub fn leases_with_key(&self, key: &DiskKey) -> Vec<Arc<LeaseId>> {
        self.leases
            .keys()
            .filter(|id| id.key == *key)
            .cloned()
            .collect()
    }

    /// The leases held: for a process that hands them on across `execve` (`disklock run`
    /// without a daemon).
    pub fn held(&self) -> impl Iterator<Item = &B::Lease> {
        self.leases.values().map(|e| &e.lease)
    }

    /// Releases everything (the daemon is stopping).
    pub fn shutdown(&mut self) {
        let uuids: Vec<String> = self.owners.keys().cloned().collect();
        for u in uuids {
            self.release_owner(&u, Cause::Shutdown);
        }
    }
}

/// One target per lease, in request order; exclusive wins when a request names a lease twice.
pub fn dedup(targets: Vec<Target>) -> Vec<Target> {
    let mut first: HashMap<(&Path, &DiskKey), usize> = HashMap::with_capacity(targets.len());
    // For each kept target: its index in `targets` and the mode it ends up with.
    let mut keep: Vec<(usize, Mode)> = Vec::with_capacity(targets.len());
    for (i, t) in targets.iter().enumerate() {
        match first.entry((t.lockspace.as_path(), &t.key)) {
            std::collections::hash_map::Entry::Occupied(o) => {
                if t.mode == Mode::Exclusive
                    && let Some(k) = keep.get_mut(*o.get())
                {
                    k.1 = Mode::Exclusive;
                }
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(keep.len());
                keep.push((i, t.mode));
            }
        }
    }
    drop(first);
    if keep.len() == targets.len() && keep.iter().zip(&targets).all(|((_, m), t)| *m == t.mode) {
        return targets;
    }
    let mut slots: Vec<Option<Target>> = targets.into_iter().map(Some).collect();
    keep.into_iter()
        .filter_map(|(i, mode)| {
            let mut t = slots.get_mut(i)?.take()?;
            t.mode = mode;
            Some(t)
        })
        .collect()
}

fn refusal_text(r: &Refusal) -> String {
    crate::exit::chain_std(r)
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeSet, HashMap};

    use proptest::prelude::*;

    use super::*;

    /// Lease files on a simulated shared file system: this daemon's locks, and the locks of
    /// other hosts (which tests set directly).
    #[derive(Default)]
    struct Fake {
        ours: HashMap<LeaseId, Mode>,
        elsewhere: HashMap<LeaseId, Mode>,
        broken: BTreeSet<String>,
        double_open: usize,
        updates: usize,
        /// Leases settled, and keys whose settling fails.
        settled: Vec<LeaseId>,
        unsettleable: BTreeSet<String>,
    }

    #[derive(Debug)]
    struct FakeLease(LeaseId);

    impl Backend for Fake {
        type Lease = FakeLease;
        fn acquire(
            &mut self,
            dir: &Path,
            key: &DiskKey,
            mode: Mode,
            _holder: &HolderRef<'_>,
        ) -> Result<Acquired<FakeLease>, LeaseError> {
            let id = LeaseId {
                lockspace: dir.into(),
                key: key.clone(),
            };
            if self.ours.contains_key(&id) {
                self.double_open += 1;
                return Err(LeaseError::HeldHere { path: id.path() });
            }
            if self.broken.contains(key.as_str()) {
                return Err(LeaseError::NoLocks {
                    dir: id.lockspace.to_path_buf(),
                });
            }
            match self.elsewhere.get(&id) {
                Some(Mode::Shared) if mode == Mode::Shared => {}
                Some(_) => {
                    return Ok(Acquired::Busy(Busy {
                        lease: id.path(),
                        holders: vec![],
                        lock: None,
                        reservation: None,
                    }));
                }
                None => {}
            }
            self.ours.insert(id.clone(), mode);
            Ok(Acquired::Held(FakeLease(id)))
        }
        fn update(&mut self, lease: &mut FakeLease, _h: &HolderRef<'_>) -> Result<(), LeaseError> {
            assert!(
                self.ours.contains_key(&lease.0),
                "update of a lease not held"
            );
            self.updates += 1;
            Ok(())
        }
        fn settle(
            &mut self,
            lease: &mut FakeLease,
            holder: &HolderRef<'_>,
        ) -> Result<(), LeaseError> {
            assert!(
                holder.owners.iter().next().is_some(),
                "a record with no owner"
            );
            assert!(
                self.ours.contains_key(&lease.0),
                "settle of a lease not held"
            );
            if self.unsettleable.contains(lease.0.key.as_str()) {
                return Err(LeaseError::NoLocks {
                    dir: lease.0.lockspace.to_path_buf(),
                });
            }
            self.settled.push(lease.0.clone());
            Ok(())
        }
        fn release(
            &mut self,
            _id: &LeaseId,
            lease: FakeLease,
        ) -> Result<Option<Released>, LeaseError> {
            assert!(
                self.ours.remove(&lease.0).is_some(),
                "release of a lease not held"
            );
            Ok(Some(Released::Unlinked))
        }
    }

    fn identity() -> Identity {
        Identity {
            host: HostIdentity {
                host: "h1".into(),
                host_id: "id1".into(),
            },
            pid: 100,
            version: "test".into(),
        }
    }

    fn owner(i: u32) -> Owner {
        Owner {
            name: format!("vm{i}"),
            uuid: format!("uuid-{i}"),
            pid: 1000 + i,
        }
    }

    fn target(k: u32, mode: Mode) -> Target {
        Target {
            disk: format!("/disk{k}"),
            key: DiskKey::new(format!("key{k}")).unwrap(),
            source: "file-sha256",
            lockspace: "/ls".into(),
            mode,
        }
    }

    fn req(o: u32, keys: &[u32], mode: Mode) -> AcquireRequest {
        AcquireRequest {
            targets: keys.iter().map(|&k| target(k, mode)).collect(),
            owner: owner(o),
            owner_uid: 1000,
            client_uid: 1000,
        }
    }

    fn id(k: u32) -> LeaseId {
        target(k, Mode::Exclusive).id()
    }

    fn table() -> Table<Fake> {
        Table::new(Fake::default(), identity())
    }

    #[test]
    fn exclusive_conflicts_shared_joins() {
        let mut t = table();
        let ids = t.acquire(req(1, &[1], Mode::Exclusive), 10).unwrap();
        let v = t.views(&ids);
        assert_eq!(v.len(), 1);
        assert_eq!(v[0].owners, vec![owner(1)]);
        assert_eq!(v[0].holder.pid, 100);
        assert_eq!(v[0].since, 10);
        let e = t.take_effects();
        assert!(matches!(
            &e[0],
            Effect::Log(Event::Acquired { new_lock: true, .. })
        ));
        assert_eq!(
            e[1],
            Effect::Watch {
                uuid: "uuid-1".into(),
                pid: 1001
            }
        );
        // Another owner: busy, named by our own holder record.
        match t.acquire(req(2, &[1], Mode::Shared), 11) {
            Err(Refusal::Busy { busy, .. }) => {
                assert_eq!(busy.holders[0].owners, vec![owner(1)]);
            }
            other => panic!("{other:?}"),
        }
        // Same owner again: idempotent; other mode: a conflict.
        t.acquire(req(1, &[1], Mode::Exclusive), 12).unwrap();
        assert!(matches!(
            t.acquire(req(1, &[1], Mode::Shared), 12),
            Err(Refusal::ModeConflict {
                held: Mode::Exclusive,
                ..
            })
        ));
        // Shared leases take one lock for several owners.
        t.acquire(req(2, &[2], Mode::Shared), 13).unwrap();
        let ids = t.acquire(req(3, &[2], Mode::Shared), 14).unwrap();
        let v = t.views(&ids);
        assert_eq!(v[0].owners, vec![owner(2), owner(3)]);
        // The reply's listing, written from the table, reads back as these views.
        let json = serde_json::to_string(&t.listing(Some(&ids), None)).unwrap();
        assert_eq!(serde_json::from_str::<Vec<LeaseView>>(&json).unwrap(), v);
        let json = serde_json::to_string(&t.listing(None, None)).unwrap();
        let all = serde_json::from_str::<Vec<LeaseView>>(&json).unwrap();
        assert_eq!(all, t.status());
        assert_eq!(all.len(), 2);
        assert_eq!(t.backend().ours.len(), 2);
        assert_eq!(t.backend().updates, 1);
        assert_eq!(t.backend().double_open, 0);
    }

    /// A client that is not root sees every lease, but only the owners of its own uid: the
    /// others are left out of owners and the holder record, and counted.
    #[test]
    fn a_viewer_sees_the_owners_of_its_uid_only() {
        let mut t = table();
        t.acquire(req(1, &[1], Mode::Exclusive), 1).unwrap();
        let mut r = req(2, &[2], Mode::Shared);
        (r.owner_uid, r.client_uid) = (2000, 2000);
        t.acquire(r, 1).unwrap();
        t.acquire(req(3, &[2], Mode::Shared), 1).unwrap();
        let seen_by = |viewer: Option<u32>| -> Vec<(Vec<Owner>, Vec<Owner>, usize)> {
            let json = serde_json::to_string(&t.listing(None, viewer)).unwrap();
            serde_json::from_str::<Vec<LeaseView>>(&json)
                .unwrap()
                .into_iter()
                .map(|v| (v.owners, v.holder.owners, v.hidden_owners))
                .collect()
        };
        let all = seen_by(None);
        assert_eq!(
            all,
            [
                (vec![owner(1)], vec![owner(1)], 0),
                (vec![owner(2), owner(3)], vec![owner(2), owner(3)], 0)
            ]
        );
        assert_eq!(
            seen_by(Some(1000)),
            [
                (vec![owner(1)], vec![owner(1)], 0),
                (vec![owner(3)], vec![owner(3)], 1)
            ]
        );
        assert_eq!(
            seen_by(Some(2000)),
            [(vec![], vec![], 1), (vec![owner(2)], vec![owner(2)], 1)]
        );
        assert_eq!(
            seen_by(Some(3000)),
            [(vec![], vec![], 1), (vec![], vec![], 2)]
        );
        // An acquire's reply, for its client, is filtered the same way.
        let ids: Vec<Arc<LeaseId>> = t.leases.keys().cloned().collect();
        let json = serde_json::to_string(&t.listing(Some(&ids[1..]), Some(2000))).unwrap();
        let v: Vec<LeaseView> = serde_json::from_str(&json).unwrap();
        assert_eq!(
            (v[0].owners.clone(), v[0].hidden_owners),
            (vec![owner(2)], 1)
        );
        // Without hidden owners, the field is left out (the reply is as it was).
        assert!(
            !serde_json::to_string(&t.listing(None, None))
                .unwrap()
                .contains("hidden")
        );
    }

    #[test]
    fn new_locks_are_settled_once_after_the_reply() {
        let mut t = table();
        t.backend.unsettleable.insert("key3".into());
        t.acquire(req(1, &[1, 2], Mode::Shared), 1).unwrap();
        // Joining a shared lease takes no new lock: nothing more to settle for it.
        t.acquire(req(2, &[2], Mode::Shared), 1).unwrap();
        // Taken and released before settling: nothing left to settle.
        t.acquire(req(3, &[4], Mode::Exclusive), 1).unwrap();
        t.release(&[("/disk4".into(), id(4))], None, 0).unwrap();
        // Rolled back (disk 5 is busy): nothing either.
        t.backend.elsewhere.insert(id(5), Mode::Exclusive);
        assert!(t.acquire(req(4, &[6, 5], Mode::Exclusive), 1).is_err());
        t.acquire(req(5, &[3], Mode::Exclusive), 1).unwrap();
        t.take_effects();
        t.settle();
        assert_eq!(t.backend().settled, vec![id(1), id(2)]);
        // A lease that cannot be settled stays held; the failure is logged.
        assert_eq!(t.len(), 3);
        let e = t.take_effects();
        assert!(
            matches!(&e[..], [Effect::Log(Event::HolderNotUpdated { lease, .. })] if **lease == id(3)),
            "{e:?}"
        );
        t.settle();
        assert_eq!(t.backend().settled.len(), 2, "settled once");
    }

    #[test]
    fn lease_paths_are_written_as_join_makes_them() {
        for dir in ["/ls", "/ls/", "/a b/\"q\"", "/"] {
            let id = LeaseId {
                lockspace: Path::new(dir).into(),
                key: DiskKey::new("k1").unwrap(),
            };
            let json = serde_json::to_string(&LeasePath(&id)).unwrap();
            assert_eq!(serde_json::from_str::<PathBuf>(&json).unwrap(), id.path());
        }
    }

    #[test]
    fn all_or_nothing() {
        let mut t = table();
        t.backend.elsewhere.insert(id(3), Mode::Exclusive);
        let r = t.acquire(req(1, &[1, 2, 3, 4], Mode::Exclusive), 1);
        assert!(matches!(r, Err(Refusal::Busy { ref disk, .. }) if disk == "/disk3"));
        assert!(t.is_empty());
        assert!(t.backend().ours.is_empty());
        let effects = t.take_effects();
        // Nothing watched, two taken and given back, one refusal.
        assert!(!effects.iter().any(|e| matches!(e, Effect::Watch { .. })));
        let rolled_back = effects
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    Effect::Log(Event::Released {
                        cause: Cause::Rollback,
                        ..
                    })
                )
            })
            .count();
        assert_eq!(rolled_back, 2);
        // A lockspace error rolls back too, and keeps what the owner already held.
        t.acquire(req(1, &[1], Mode::Exclusive), 1).unwrap();
        t.backend.broken.insert("key6".into());
        let r = t.acquire(req(1, &[5, 6], Mode::Exclusive), 1);
        assert!(matches!(r, Err(Refusal::Lease { .. })));
        assert_eq!(t.backend().ours.keys().collect::<Vec<_>>(), vec![&id(1)]);
    }

    #[test]
    fn permissions() {
        let mut t = table();
        let mut r = req(1, &[1], Mode::Exclusive);
        r.client_uid = 1001;
        assert!(matches!(
            t.acquire(r, 1),
            Err(Refusal::PermissionDenied { .. })
        ));
        t.acquire(req(1, &[1], Mode::Exclusive), 1).unwrap();
        // uid 1001 cannot release uid 1000's owner; root can.
        assert!(matches!(
            t.release(&[("/disk1".into(), id(1))], None, 1001),
            Err(Refusal::PermissionDenied { .. })
        ));
        assert!(matches!(
            t.release_owners(
                &OwnerSelector {
                    name: Some("vm1".into()),
                    uuid: None
                },
                1001
            ),
            Err(Refusal::PermissionDenied { .. })
        ));
        assert_eq!(t.len(), 1);
        let out = t.release(&[("/disk1".into(), id(1))], None, 0).unwrap();
        assert_eq!(out.released, vec!["/disk1".to_owned()]);
        assert!(t.is_empty());
        // A uuid reused with another pid is refused.
        t.acquire(req(1, &[1], Mode::Exclusive), 1).unwrap();
        let mut r = req(1, &[2], Mode::Exclusive);
        r.owner.pid = 5;
        assert!(matches!(
            t.acquire(r, 1),
            Err(Refusal::OwnerConflict { .. })
        ));
    }

    #[test]
    fn release_paths() {
        let mut t = table();
        t.acquire(req(1, &[1, 2], Mode::Shared), 1).unwrap();
        t.acquire(req(2, &[2], Mode::Shared), 1).unwrap();
        // Owner 1 leaves lease 2: owner 2 keeps it, so the lock stays.
        let out = t
            .release(
                &[("/disk2".into(), id(2)), ("/disk9".into(), id(9))],
                Some("uuid-1"),
                0,
            )
            .unwrap();
        assert_eq!(out.released, ["/disk2"]);
        assert_eq!(out.not_held, ["/disk9"]);
        assert_eq!(t.backend().ours.len(), 2);
        // Owner 1 dies: lease 1 goes; its watch ends.
        t.take_effects();
        t.owner_died("uuid-1");
        let e = t.take_effects();
        assert!(e.contains(&Effect::Unwatch {
            uuid: "uuid-1".into()
        }));
        assert_eq!(t.backend().ours.keys().collect::<Vec<_>>(), vec![&id(2)]);
        // Release by name.
        let out = t
            .release_owners(
                &OwnerSelector {
                    name: Some("vm2".into()),
                    uuid: None,
                },
                0,
            )
            .unwrap();
        assert_eq!(out.released, ["/disk2"]);
        assert!(t.backend().ours.is_empty());
        assert!(t.status().is_empty());
    }

    /// A lockspace without POSIX locks (ENOLCK): a one-line refusal naming the directory,
    /// and nothing held, watched or half-done.
    #[test]
    fn no_lock_support_leaves_no_phantom_lease() {
        let mut t = table();
        t.backend.broken.insert("key1".into());
        let r = t.acquire(req(1, &[2, 1], Mode::Exclusive), 1).unwrap_err();
        let text = refusal_text(&r);
        assert!(
            matches!(&r, Refusal::Lease { error: LeaseError::NoLocks { dir }, .. } if dir.as_path() == Path::new("/ls")),
            "{r:?}"
        );
        assert!(
            text.starts_with("/disk1: lockspace /ls is on a file system without POSIX locks"),
            "{text}"
        );
        assert!(!text.contains('\n'));
        assert!(t.is_empty());
        assert!(
            t.backend().ours.is_empty(),
            "the lease taken first was given back"
        );
        assert!(t.owners.is_empty() && t.names.is_empty());
        let effects = t.take_effects();
        assert!(!effects.iter().any(|e| matches!(e, Effect::Watch { .. })));
        assert!(
            effects.iter().any(
                |e| matches!(e, Effect::Log(Event::Refused { reason, .. }) if *reason == text)
            )
        );
    }

    #[test]
    fn release_finds_the_lease_by_the_name_it_was_taken_under() {
        let mut t = table();
        t.acquire(req(1, &[1], Mode::Exclusive), 1).unwrap();
        assert_eq!(t.lease_named_once("/disk1"), Some(id(1)));
        assert_eq!(t.lease_named_once("/disk2"), None);
        // The same name now leads to another disk: the name is ambiguous.
        let mut other = target(2, Mode::Exclusive);
        other.disk = "/disk1".into();
        t.acquire(
            AcquireRequest {
                targets: vec![other],
                owner: owner(1),
                owner_uid: 1000,
                client_uid: 1000,
            },
            2,
        )
        .unwrap();
        assert_eq!(t.lease_named_once("/disk1"), None);
        assert!(t.lease_named("/disk1").is_some());
        t.release(&[("/disk1".into(), id(1))], None, 0).unwrap();
        assert_eq!(t.lease_named_once("/disk1"), None);
        t.release(&[("/disk1".into(), id(2))], None, 0).unwrap();
        assert!(t.names.is_empty());
        assert_eq!(t.lease_named("/disk1"), None);
    }

    /// An acquire whose reply cannot be delivered gives back what it took, and only that;
    /// an owner it alone registered goes; an acquire since keeps it.
    #[test]
    fn an_undelivered_acquire_gives_back_what_it_took() {
        let released = |e: &[Effect]| -> Vec<LeaseId> {
            e.iter()
                .filter_map(|e| match e {
                    Effect::Log(Event::Released {
                        lease,
                        cause: Cause::Undelivered,
                        ..
                    }) => Some((**lease).clone()),
                    _ => None,
                })
                .collect()
        };
        let mut t = table();
        t.acquire(req(1, &[1], Mode::Exclusive), 1).unwrap();
        assert!(t.take_undo().is_some(), "delivered: dropped");
        // Disk 1 was held already: only disk 2 goes back, and the owner stays.
        t.acquire(req(1, &[1, 2], Mode::Exclusive), 2).unwrap();
        let u = t.take_undo().unwrap();
        t.take_effects();
        assert!(t.undo(u));
        let e = t.take_effects();
        assert_eq!(released(&e), vec![id(2)]);
        assert!(!e.iter().any(|e| matches!(e, Effect::Unwatch { .. })));
        assert_eq!(t.backend().ours.keys().collect::<Vec<_>>(), vec![&id(1)]);
        // A shared lease it joined: only its hold goes, the lock stays for the other owner.
        t.acquire(req(2, &[3], Mode::Shared), 3).unwrap();
        t.acquire(req(3, &[3], Mode::Shared), 3).unwrap();
        let u = t.take_undo().unwrap();
        t.take_effects();
        assert!(t.undo(u));
        let e = t.take_effects();
        assert_eq!(released(&e), vec![id(3)]);
        assert!(e.contains(&Effect::Unwatch {
            uuid: "uuid-3".into()
        }));
        assert!(!t.owners.contains_key("uuid-3"));
        assert_eq!(t.views(&[Arc::new(id(3))])[0].owners, vec![owner(2)]);
        // The owner acquired again since (its caller was told it holds the disk): kept.
        t.acquire(req(4, &[4], Mode::Exclusive), 4).unwrap();
        let u = t.take_undo().unwrap();
        t.acquire(req(4, &[4], Mode::Exclusive), 5).unwrap();
        assert_eq!(t.take_undo(), None, "it took nothing new");
        assert!(!t.undo(u));
        assert!(t.backend().ours.contains_key(&id(4)));
        // A refused acquire leaves no undo.
        t.backend.elsewhere.insert(id(5), Mode::Exclusive);
        assert!(t.acquire(req(5, &[6, 5], Mode::Exclusive), 6).is_err());
        assert_eq!(t.take_undo(), None);
    }

    #[derive(Debug, Clone)]
    enum Op {
        /// Owner, keys, shared, and whether the reply is undelivered (undone).
        Acquire(u32, Vec<u32>, bool, bool),
        Release(Option<u32>, Vec<u32>),
        ReleaseOwner(u32),
        Died(u32),
        ElsewhereTakes(u32, bool),
        ElsewhereDrops(u32),
    }

    fn op() -> impl Strategy<Value = Op> {
        let o = 0u32..4;
        let k = 0u32..6;
        let keys = proptest::collection::vec(k.clone(), 1..4);
        prop_oneof![
            4 => (o.clone(), keys.clone(), any::<bool>(), proptest::bool::weighted(0.2))
                .prop_map(|(o, k, s, u)| Op::Acquire(o, k, s, u)),
            2 => (proptest::option::of(o.clone()), keys).prop_map(|(o, k)| Op::Release(o, k)),
            1 => o.clone().prop_map(Op::ReleaseOwner),
            1 => o.prop_map(Op::Died),
            1 => (k.clone(), any::<bool>()).prop_map(|(k, s)| Op::ElsewhereTakes(k, s)),
            1 => k.prop_map(Op::ElsewhereDrops),
        ]
    }

    fn mode(shared: bool) -> Mode {
        if shared {
            Mode::Shared
        } else {
            Mode::Exclusive
        }
    }

    /// The invariants: no lost or phantom lock, owners and leases agree, watches match.
    fn check(t: &Table<Fake>, watched: &BTreeSet<String>) {
        let held: BTreeSet<&LeaseId> = t.leases.keys().map(|k| &**k).collect();
        let locked: BTreeSet<&LeaseId> = t.backend().ours.keys().collect();
        assert_eq!(held, locked, "table and locks disagree");
        assert_eq!(t.backend().double_open, 0);
        for (id, e) in &t.leases {
            assert!(!e.owners.is_empty(), "lease without owner");
            assert_eq!(t.backend().ours[id], e.mode);
            if e.mode == Mode::Exclusive {
                assert_eq!(e.owners.len(), 1);
            }
            for u in e.owners.keys() {
                assert!(
                    t.owners[u].leases.contains(id),
                    "owner does not know its lease"
                );
            }
            // No lock of ours conflicts with another host's.
            if let Some(m) = t.backend().elsewhere.get(id) {
                assert!(
                    *m == Mode::Shared && e.mode == Mode::Shared,
                    "conflicting locks"
                );
            }
        }
        for (u, o) in &t.owners {
            assert!(!o.leases.is_empty(), "owner without lease");
            for id in &o.leases {
                assert!(t.leases[id].owners.contains_key(u));
            }
        }
        let owners: BTreeSet<String> = t.owners.keys().cloned().collect();
        assert_eq!(&owners, watched, "watches do not match owners");
        // The name index counts every lease under the name it was first taken under.
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for e in t.leases.values() {
            *counts.entry(&*e.disk).or_default() += 1;
        }
        assert_eq!(counts.len(), t.names.len(), "name index size");
        for (n, c) in counts {
            match &t.names[n] {
                Named::One(id) => {
                    assert_eq!(c, 1);
                    assert_eq!(&*t.leases[&**id].disk, n);
                }
                Named::Several(k) => assert_eq!(*k, c),
            }
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]
        #[test]
        fn state_machine(ops in proptest::collection::vec(op(), 1..40)) {
            let mut t = table();
            let mut watched = BTreeSet::new();
            for (now, op) in ops.into_iter().enumerate() {
                let now = now as u64;
                match op {
                    Op::Acquire(o, keys, shared, undelivered) => {
                        let before: Vec<LeaseView> = t.status();
                        let r = t.acquire(req(o, &keys, mode(shared)), now);
                        match r {
                            Ok(views) => {
                                for k in &keys {
                                    let e = &t.leases[&id(*k)];
                                    prop_assert!(e.owners.contains_key(&owner(o).uuid));
                                }
                                prop_assert!(!views.is_empty());
                                if let Some(u) = t.take_undo().filter(|_| undelivered) {
                                    prop_assert!(t.undo(u));
                                    // What the owner held before it still holds; the rest
                                    // is as before the acquire.
                                    prop_assert_eq!(before, t.status());
                                }
                            }
                            // All or nothing: a refusal leaves the table as it was.
                            Err(_) => prop_assert_eq!(before, t.status()),
                        }
                    }
                    Op::Release(o, keys) => {
                        let targets: Vec<(String, LeaseId)> =
                            keys.iter().map(|&k| (format!("/disk{k}"), id(k))).collect();
                        let uuid = o.map(|o| owner(o).uuid);
                        t.release(&targets, uuid.as_deref(), 0).unwrap();
                        if uuid.is_none() {
                            for k in &keys {
                                prop_assert!(!t.leases.contains_key(&id(*k)));
                            }
                        }
                    }
                    Op::ReleaseOwner(o) => {
                        t.release_owners(&OwnerSelector { name: Some(owner(o).name), uuid: None }, 0)
                            .unwrap();
                        prop_assert!(!t.owners.contains_key(&owner(o).uuid));
                    }
                    Op::Died(o) => t.owner_died(&owner(o).uuid),
                    Op::ElsewhereTakes(k, shared) => {
                        // Another host can only take what the lock allows.
                        let m = mode(shared);
                        let ok = match t.backend().ours.get(&id(k)) {
                            None => true,
                            Some(ours) => *ours == Mode::Shared && m == Mode::Shared,
                        };
                        if ok && !t.backend().elsewhere.contains_key(&id(k)) {
                            t.backend.elsewhere.insert(id(k), m);
                        }
                    }
                    Op::ElsewhereDrops(k) => {
                        t.backend.elsewhere.remove(&id(k));
                    }
                }
                for e in t.take_effects() {
                    match e {
                        Effect::Watch { uuid, .. } => prop_assert!(watched.insert(uuid)),
                        Effect::Unwatch { uuid } => prop_assert!(watched.remove(&uuid)),
                        Effect::Log(_) => {}
                    }
                }
                check(&t, &watched);
            }
            t.shutdown();
            for e in t.take_effects() {
                if let Effect::Unwatch { uuid } = e {
                    watched.remove(&uuid);
                }
            }
            prop_assert!(t.backend().ours.is_empty());
            prop_assert!(watched.is_empty());
        }
    }
}
