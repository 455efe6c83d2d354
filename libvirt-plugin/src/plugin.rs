//! The callbacks in safe Rust: [`crate::ffi`] copies libvirt's arguments into Rust values
//! and calls these; they decide with [`crate::domain`] and [`crate::holds`] and ask the
//! daemon through [`crate::daemon`].
//!
//! Process-wide state: the configuration, read once by the first `drvInit` (libvirt's QEMU
//! and libxl drivers may each call it; the first wins, as with lockd) and only read
//! afterwards, with no lock; and the hold counts, behind a mutex that only libvirtd's
//! threads take. The forked child (`REGISTER_ONLY`) reads the configuration and talks to
//! the daemon, and takes no lock: another libvirtd thread may have held that mutex when
//! the child was forked.

use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex, OnceLock, PoisonError};

use crate::config::{ConfigError, PluginConfig};
use crate::daemon;
use crate::domain::{AcquirePlan, Domain, LockFailureAction, Param};
use crate::error::PluginError;
use crate::holds::Holds;

/// `VIR_LOCK_MANAGER_VERSION` of the ABI declared here: 1.0.0.
pub const ABI_VERSION: u32 = 1_000_000;

static CONFIG: OnceLock<Result<PluginConfig, Arc<ConfigError>>> = OnceLock::new();
static HOLDS: LazyLock<Mutex<Holds>> = LazyLock::new(|| Mutex::new(Holds::new()));

/// `drvInit`: refuse another major version of the ABI; read the configuration. A bad file
/// does not fail `drvInit` (that would stop libvirtd's QEMU driver, and with it libvirtd):
/// every domain operation reports it instead.
pub fn init(version: u32, config_file: Option<&Path>) -> Result<(), PluginError> {
    if version / 1_000_000 != ABI_VERSION / 1_000_000 {
        return Err(PluginError::VersionUnsupported { version });
    }
    CONFIG.get_or_init(|| match config_file {
        Some(p) => PluginConfig::load(p).map_err(Arc::new),
        None => Ok(PluginConfig::default()),
    });
    Ok(())
}

/// The configuration `drvInit` read.
pub fn config() -> Result<&'static PluginConfig, PluginError> {
    match CONFIG.get() {
        None => Err(PluginError::NotInitialized),
        Some(Ok(c)) => Ok(c),
        Some(Err(e)) => Err(PluginError::Config(Arc::clone(e))),
    }
}

/// `drvNew`.
pub fn new_domain(object_type: u32, params: &[Param], flags: u32) -> Result<Domain, PluginError> {
    config()?;
    Domain::new(object_type, params, flags)
}

/// `drvAddResource`.
pub fn add_resource(
    domain: &mut Domain,
    rtype: u32,
    name: &str,
    params: &[Param],
    flags: u32,
) -> Result<(), PluginError> {
    domain.add_resource(rtype, name, params, flags, config()?)
}

/// `drvAcquire`. In the forked child (`REGISTER_ONLY`) only the daemon's presence is
/// checked; in libvirtd the disks are taken and counted.
pub fn acquire(domain: &Domain, flags: u32, action: i32) -> Result<(), PluginError> {
    let config = config()?;
    let on_lost = LockFailureAction::from_raw(action)?.on_lost(domain.uri.as_deref())?;
    match domain.acquire_plan(flags, config)? {
        AcquirePlan::Register => daemon::ping(config),
        AcquirePlan::Disks(disks) if disks.is_empty() => Ok(()),
        AcquirePlan::Disks(disks) => {
            daemon::acquire(config, domain.owner(), disks, on_lost)?;
            let mut holds = HOLDS.lock().unwrap_or_else(PoisonError::into_inner);
            holds.prune(process_exists);
            holds.acquired((domain.uuid, domain.pid), domain.disks());
            Ok(())
        }
    }
}

/// `drvRelease`: gives up the disks the owner holds no more once these are released.
pub fn release(domain: &Domain, flags: u32) -> Result<(), PluginError> {
    Domain::check_no_flags("drvRelease", flags)?;
    let config = config()?;
    let owner = (domain.uuid, domain.pid);
    // The lock is not held across the daemon's reply: libvirt serialises the operations of
    // one domain (its job), and other domains are other owners.
    let gone = HOLDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .to_release(owner, domain.disks());
    if !gone.is_empty() {
        daemon::release(config, domain.owner().uuid, gone)?;
    }
    HOLDS
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .released(owner, domain.disks());
    Ok(())
}

/// `drvInquire`: no state to hand over (the daemon keeps everything).
pub fn inquire(_domain: &Domain, flags: u32) -> Result<(), PluginError> {
    Domain::check_no_flags("drvInquire", flags)?;
    config().map(drop)
}

fn process_exists(pid: u32) -> bool {
    let Ok(pid) = i32::try_from(pid) else {
        return false;
    };
    !matches!(
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
        Err(nix::errno::Errno::ESRCH)
    )
}
