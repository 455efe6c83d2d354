//! libvirt `key = value` configuration files and disklock's typed configuration
//!
//! disklock reads its own `disklock.conf` and, to carry an existing virtlockd setup over
//! unchanged, libvirt's `qemu-lockd.conf`. Both use libvirt's configuration grammar, which
//! [`grammar`] parses and renders. [`Config`] is the checked result, with the
//! [`Origin`] of every value so that `disklock config` can show where each came from.
//!
//! # Layout
//!
//! - [`grammar`]: a pure parser and renderer for libvirt's grammar, over `&str`.
//! - [`Config`], [`Key`], [`KeySource`], [`Context`], [`Origin`]: the keys, their defaults
//!   (all in one table in `config.rs`) and their checks.
//! - [`load()`], [`load_with`], [`load_str`]: read the files and merge them. Only [`load()`]
//!   touches the file system.
//! - [`ConfError`] for failures, [`Warning`] for findings that do not stop loading.
//!
//! # Example
//!
//! ```
//! use disklock_conf::{load_with, Context, Key, KeySource, Origin};
//! use std::io;
//! use std::path::{Path, PathBuf};
//!
//! let disklock_conf = "key_sources = [ \"scsi-wwid\", \"path-sha256\" ]\nauto_disk_leases = 1\n";
//! let lockd_conf = "auto_disk_leases = 0\nfile_lockspace_dir = \"/var/lib/libvirt/lockd/files\"\n";
//! let read = |p: &Path| match p.to_str() {
//!     Some("/etc/disklock/disklock.conf") => Ok(disklock_conf.as_bytes().to_vec()),
//!     Some("/etc/libvirt/qemu-lockd.conf") => Ok(lockd_conf.as_bytes().to_vec()),
//!     _ => Err(io::Error::from(io::ErrorKind::NotFound)),
//! };
//! let ctx = Context { uid: 0, ..Context::default() };
//! let loaded = load_with(None, &ctx, read)?;
//! let config = &loaded.config;
//!
//! // disklock.conf wins over qemu-lockd.conf, which wins over the defaults.
//! assert!(config.auto_disk_leases);
//! assert_eq!(config.file_lockspace_dir, Path::new("/var/lib/libvirt/lockd/files"));
//! assert_eq!(config.lvm_lockspace_dir, Path::new("/var/lib/disklock/lvm"));
//! assert_eq!(config.key_sources, [KeySource::ScsiWwid, KeySource::PathSha256]);
//! assert_eq!(
//!     config.origin(Key::FileLockspaceDir),
//!     &Origin::File { path: PathBuf::from("/etc/libvirt/qemu-lockd.conf"), line: 2 },
//! );
//! assert!(loaded.warnings.is_empty());
//! # Ok::<(), disklock_conf::ConfError>(())
//! ```
//!
//! # Not done here
//!
//! The crate reads no environment variables (the caller fills in a [`Context`]), creates no
//! directories, and takes no locks. It does not write configuration files; [`grammar::render`]
//! and [`Config::to_entries`] produce text for a caller that wants to.

#![deny(missing_docs)]
#![forbid(unsafe_code)]

mod config;
mod error;
pub mod grammar;
mod load;
mod warning;

pub use config::{
    AUTO_DISK_LEASES, Config, Context, DISK_LEASE_DIR, Key, KeySource, LEASE_IO_THREADS,
    MAX_HOST_ID, MAX_PR_CHECK_INTERVAL, Origin, PERSISTENT_RESERVATIONS, PR_CHECK_INTERVAL,
    PR_SHARED_TYPES, PR_TYPES, READONLY_DISK_LEASES, ROOT_CONFIG_PATH, ROOT_LOCKD_CONF,
    ROOT_STATE_DIR, UnknownKeySource, format_host_key, parse_host_key,
};
pub use error::{ConfError, FoundValue, Problem};
pub use load::{Loaded, MAX_FILE_SIZE, load, load_str, load_with};
pub use warning::Warning;
