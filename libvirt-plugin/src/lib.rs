//! disklock as libvirt's lock manager: `lock_manager = "disklock"` in
//! `/etc/libvirt/qemu.conf` makes libvirtd load this library (`disklock.so`, from
//! `<libdir>/libvirt/lock-driver/`) and ask it before a domain's CPUs run, on pause and
//! resume, and on disk hotplug and unplug.
//!
//! The plugin is a thin client of the disklock daemon: the daemon takes the leases (and
//! reservations), holds them for the QEMU process, named after the domain (name, uuid), and
//! releases them when that process exits — `virsh destroy`, a crash or `kill -9` give
//! libvirt no callback, and a libvirtd restart keeps them.
//!
//! # Layout
//!
//! - [`ffi`] (private): libvirt's ABI — the exported `virLockDriverImpl` table, the
//!   parameter structs, error reporting through `virReportErrorHelper` — and the only
//!   `unsafe` of the crate.
//! - [`plugin`]: the callbacks in safe Rust, and the process-wide state.
//! - [`domain`]: the pure per-domain object and what each callback asks of the daemon.
//! - [`holds`]: the pure hold counts per (owner, disk, mode) that make releases safe.
//! - [`config`]: `qemu-disklock.conf`, with `qemu-lockd.conf`'s keys.
//! - [`daemon`]: the calls to the daemon, through the `disklock` library's client.
//! - [`error`]: failures and the libvirt error codes that carry them.
//!
//! # Calls
//!
//! | libvirt | where | plugin |
//! |---|---|---|
//! | `drvInit` | libvirtd start | refuse an ABI major other than 1; read the configuration |
//! | `drvAcquire(REGISTER_ONLY)` | forked child, before exec | ask the daemon's version: no daemon, no start |
//! | `drvAcquire(0)` | CPUs start, resume, hotplug | `Acquire` every disk for the QEMU pid, all or none; count the holds |
//! | `drvRelease` | pause (twice), unplug, failed attach | `Release` the disks no hold is left of |
//! | `drvInquire` | migration | no state |
//!
//! # Not done here
//!
//! `<lease>` elements are refused (the daemon has no named leases); `<on_lockfailure>` is
//! read but not acted on (the daemon reports no lost lease to anyone); the hold counts live
//! in libvirtd's memory, so after a libvirtd restart a rolled-back second attach of a disk
//! attached before the restart drops its lease. Each needs a daemon change (ARCHITECTURE.md).

#![deny(missing_docs)]
#![deny(unsafe_code)]

pub mod config;
pub mod daemon;
pub mod domain;
pub mod error;
mod ffi;
pub mod holds;
pub mod plugin;
