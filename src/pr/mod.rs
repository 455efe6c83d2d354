//! Persistent reservations: this host's key ([`hostkey`]), the enforcement logic over every
//! path of a disk ([`engine`]), and opening those paths ([`open_paths`]).

pub mod engine;
pub mod hostkey;

use disklock_naming::{DevNo, PathKind, Resolution, Resolver, Source, StoragePath};
use disklock_scsi::pr::{PersistentReservations, PrType, ReservationKey};
use disklock_scsi::{Device, ScsiError, blkpr::BlockPr};

/// This host's key, or a one-line error saying how to configure one.
pub fn host_key(s: &crate::settings::Settings) -> anyhow::Result<hostkey::HostKey> {
    let mid = hostkey::read_machine_id();
    Ok(hostkey::derive(
        &s.config,
        mid.as_ref().map(|(f, t)| (*f, t.as_str())),
    )?)
}

/// Serializes a reservation key as people read it: `"0x444c4b4800000007"`.
pub fn serialize_key<S: serde::Serializer>(k: &ReservationKey, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(k)
}

/// Serializes a reservation type by its short name (`"we-ro"`).
pub fn serialize_type<S: serde::Serializer>(t: &PrType, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t.short())
}

/// An open path of either kind: SG_IO for SCSI, the block layer's ioctls for NVMe.
pub enum Handle {
    /// A SCSI disk.
    Scsi(Device),
    /// An NVMe namespace (or anything else the block layer reserves).
    Block(BlockPr),
}

impl Handle {
    /// The one place a path's kind picks its transport.
    fn transport(&self) -> &dyn PersistentReservations {
        match self {
            Handle::Scsi(d) => d,
            Handle::Block(b) => b,
        }
    }
}

impl PersistentReservations for Handle {
    fn read_keys(&self) -> Result<disklock_scsi::pr::Keys, ScsiError> {
        self.transport().read_keys()
    }
    fn read_reservation(&self) -> Result<disklock_scsi::pr::Reservation, ScsiError> {
        self.transport().read_reservation()
    }
    fn register(
        &self,
        old: ReservationKey,
        new: ReservationKey,
        flags: disklock_scsi::pr::RegisterFlags,
    ) -> Result<(), ScsiError> {
        self.transport().register(old, new, flags)
    }
    fn reserve(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        self.transport().reserve(key, kind)
    }
    fn release(&self, key: ReservationKey, kind: PrType) -> Result<(), ScsiError> {
        self.transport().release(key, kind)
    }
    fn clear(&self, key: ReservationKey) -> Result<(), ScsiError> {
        self.transport().clear(key)
    }
    fn preempt(
        &self,
        key: ReservationKey,
        victim: ReservationKey,
        kind: PrType,
        abort: bool,
    ) -> Result<(), ScsiError> {
        self.transport().preempt(key, victim, kind, abort)
    }
}

/// The device of a resolved disk that may get a persistent reservation, or why it may not:
/// its key must be a SCSI or NVMe WWID, and neither the key nor `disk` (as the user named
/// it) may be in `pr_exclude`. The daemon and daemonless `run` both decide with this.
pub fn reservable(
    config: &disklock_conf::Config,
    r: &Resolution,
    disk: &str,
) -> Result<DevNo, String> {
    if config
        .pr_exclude
        .iter()
        .any(|x| x == r.key.as_str() || x == disk)
    {
        return Err("it is in pr_exclude".to_owned());
    }
    match (&r.block, r.source) {
        (Some(b), Source::ScsiWwid | Source::NvmeWwid) => Ok(b.devno),
        _ => Err(format!(
            "its key comes from {}, not a SCSI or NVMe WWID",
            r.source.as_str()
        )),
    }
}

/// Opens every storage path; `None` when a path cannot carry reservations at all.
pub fn open_path(p: &StoragePath) -> Result<Option<engine::Path<Handle>>, ScsiError> {
    let dev = match p.kind {
        PathKind::Scsi => Handle::Scsi(Device::open(&p.node)?),
        PathKind::Nvme => Handle::Block(BlockPr::open(&p.node)?),
        PathKind::Other => return Ok(None),
    };
    Ok(Some(engine::Path {
        name: p.name.clone(),
        dev,
    }))
}

/// Opens every path to the storage of device `devno`; an error is one line.
pub fn open_storage(
    resolver: &Resolver,
    devno: DevNo,
) -> Result<Vec<engine::Path<Handle>>, String> {
    let storage = resolver
        .storage_paths(devno)
        .map_err(|e| crate::exit::chain_std(&e))?;
    let mut paths = Vec::with_capacity(storage.len());
    for p in &storage {
        match open_path(p) {
            Ok(Some(h)) => paths.push(h),
            Ok(None) => {}
            Err(e) => return Err(crate::exit::chain_std(&e)),
        }
    }
    if paths.is_empty() {
        return Err("no SCSI or NVMe path to the disk".into());
    }
    Ok(paths)
}

/// Takes the disk for `key` with a `kind` reservation. With `preempt`, a disk reserved by
/// another single key is taken from it, and other keys' registrations (each of which could
/// write under a Registrants Only type) are removed, all with PREEMPT AND ABORT, else
/// PREEMPT. Without it, either refuses ([`engine::PrError::Busy`],
/// [`engine::PrError::Registered`]). `disk` names it in the log.
pub fn take<D: PersistentReservations + Sync>(
    paths: &[engine::Path<D>],
    key: ReservationKey,
    kind: PrType,
    preempt: bool,
    disk: &str,
) -> Result<(), engine::PrError> {
    let victims = match engine::acquire(paths, key, kind) {
        Ok(_) => return Ok(()),
        Err(engine::PrError::Busy {
            holder: Some(victim),
            ..
        }) if preempt => vec![victim],
        Err(engine::PrError::Registered { keys }) if preempt => keys,
        Err(e) => return Err(e),
    };
    let preempt_one = |victim| {
        engine::preempt(paths, key, victim, kind, true).map(|p| {
            tracing::info!(event = "pr-preempt", disk = &*crate::output::bounded(disk), victim = %p.victim, aborted = p.aborted, fell_back = p.fell_back, "took the disk from {}", engine::key_label(p.victim));
        })
    };
    for victim in victims {
        preempt_one(victim)?;
    }
    if !kind.all_registrants() {
        // Registrations of other hosts left after the holder's (a third host's stale one)
        // would keep write access under our reservation.
        for victim in engine::foreign_keys(paths, key)? {
            preempt_one(victim)?;
        }
    }
    Ok(())
}
