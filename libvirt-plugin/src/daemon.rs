//! The daemon's side of each callback, through the `disklock` library's blocking client
//! ([`disklock::client::Client`]: one Unix socket, `SO_SNDTIMEO`, serde_json, no thread, no
//! lock, no runtime), so the plugin and the CLI speak the protocol through the same types.
//!
//! One connection per call, closed when it returns: libvirt keeps nothing between
//! operations, and a connection left open would be closed by the daemon's idle timeout.

use disklock::client::Client;
use disklock::daemon::protocol::{
    AcquireParams, AcquireReply, DiskRequest, OnLost, ReleaseParams, Request, VersionReply,
};
use disklock::daemon::table::ReleaseOutcome;
use disklock::lockspace::Owner;

use crate::config::PluginConfig;
use crate::error::PluginError;

fn call<T: serde::de::DeserializeOwned>(
    config: &PluginConfig,
    req: &Request,
) -> Result<T, PluginError> {
    let daemon = |e| PluginError::Daemon(Box::new(e));
    let mut c = Client::connect(&config.socket, config.timeout).map_err(daemon)?;
    c.call(req)
        .map_err(daemon)?
        .map_err(|f| PluginError::Refused(Box::new(f)))
}

/// The daemon answers: the start in the forked child fails here, before QEMU runs, when
/// none does.
pub fn ping(config: &PluginConfig) -> Result<(), PluginError> {
    call::<VersionReply>(config, &Request::Version).map(drop)
}

/// Takes `disks` for `owner`, all or none.
pub fn acquire(
    config: &PluginConfig,
    owner: Owner,
    disks: Vec<DiskRequest>,
    on_lost: OnLost,
) -> Result<AcquireReply, PluginError> {
    call(
        config,
        &Request::Acquire(AcquireParams {
            disks,
            owner,
            preempt: false,
            pr: None,
            on_lost: Some(on_lost),
        }),
    )
}

/// Gives up `owner`'s leases on `disks` (those it does not hold are no error).
pub fn release(
    config: &PluginConfig,
    owner_uuid: String,
    disks: Vec<String>,
) -> Result<(), PluginError> {
    call::<ReleaseOutcome>(
        config,
        &Request::Release(ReleaseParams {
            disks,
            owner: Some(owner_uuid),
        }),
    )
    .map(drop)
}
