//! How a request's disks become the table's targets and the reservation plans: one rule for
//! the daemon and for `disklock run` without a daemon (which drives the same table and
//! backends in its own process).

// A refusal is built once per refused request; its size does not matter.
#![allow(clippy::result_large_err)]

use std::path::Path;

use disklock_naming::Resolution;

use super::pr_layer::{self, Plan};
use super::protocol::{DiskMode, Failure};
use super::table::Target;
use crate::exit::chain_std;
use crate::lockspace::Mode;
use crate::settings::Settings;

/// The lease mode of a disk requested in `mode`; `None` for a read-only disk that gets no
/// lease (`readonly_disk_leases = 0`, as virtlockd does).
pub fn lease_mode(mode: DiskMode, readonly_leases: bool) -> Option<Mode> {
    match mode {
        DiskMode::Exclusive => Some(Mode::Exclusive),
        DiskMode::Shared => Some(Mode::Shared),
        DiskMode::Readonly if readonly_leases => Some(Mode::Shared),
        DiskMode::Readonly => None,
    }
}

/// Resolves `disk` (an absolute path) into the target the table takes, and the resolution
/// (for the reservation plan).
pub fn resolve(
    settings: &Settings,
    disk: &str,
    mode: Mode,
) -> Result<(Target, Resolution), Failure> {
    let unknown = |reason: String| Failure::UnknownDisk {
        disk: disk.to_owned(),
        reason,
    };
    if !disk.starts_with('/') {
        return Err(unknown("not an absolute path".into()));
    }
    let r = settings
        .resolver
        .resolve_path(std::ffi::OsStr::new(disk), Path::new("/"))
        .map_err(|e| unknown(chain_std(&e)))?;
    let t = Target {
        disk: disk.to_owned(),
        lockspace: settings.lockspace(r.source.lockspace()).to_path_buf(),
        key: r.key.clone(),
        source: r.source.as_str(),
        mode,
    };
    Ok((t, r))
}

/// Whether and how a resolved disk gets a reservation: reservations on (`enabled`), a SCSI
/// or NVMe key, not in `pr_exclude` (by key or as named), and not turned off for this
/// request (`pr = false`). `pr = true` insists: a disk that cannot be reserved is an error,
/// the reason as `Err`.
pub fn pr_plan(
    settings: &Settings,
    enabled: bool,
    t: &Target,
    r: &Resolution,
    pr: Option<bool>,
    preempt: bool,
) -> Result<Option<Plan>, String> {
    if pr == Some(false) || !enabled {
        return Ok(None);
    }
    match crate::pr::reservable(&settings.config, r, &t.disk) {
        Ok(devno) => Ok(Some(Plan {
            devno,
            disk: t.disk.clone(),
            preempt,
        })),
        Err(why) if pr == Some(true) => Err(format!(
            "{} cannot get a persistent reservation ({why})",
            t.disk
        )),
        _ => Ok(None),
    }
}

/// This host's key and the reservation types, when reservations are on: by the
/// configuration (`persistent_reservations = 1`), or because the caller insists (`force`).
pub fn pr_settings(settings: &Settings, force: bool) -> anyhow::Result<Option<pr_layer::Settings>> {
    use anyhow::Context as _;
    if !settings.config.persistent_reservations && !force {
        return Ok(None);
    }
    let hk = crate::pr::host_key(settings).context("persistent_reservations = 1")?;
    tracing::info!(event = "pr-key", key = %disklock_conf::format_host_key(hk.key), from = %hk.from, "persistent reservations on, host key {} from {}", disklock_conf::format_host_key(hk.key), hk.from);
    Ok(Some(pr_layer::Settings {
        key: disklock_scsi::pr::ReservationKey(hk.key),
        exclusive: settings.pr_exclusive,
        shared: settings.pr_shared,
    }))
}
