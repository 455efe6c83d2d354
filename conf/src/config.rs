//! disklock's typed configuration: keys, defaults, value checks and provenance
//!
//! Every key is one row of [`KEYS`], which says what the key holds, whether a libvirt
//! `qemu-lockd.conf` may set it, and its built-in default. Adding a key means adding a
//! [`Key`] variant, a row, a [`Config`] field and a line in `Config::build`; the compiler
//! points at each.
//!
//! Booleans are the integers `0` and `1`, as in libvirt. Paths must be absolute: a relative
//! lockspace directory would depend on the daemon's working directory, and two hosts that
//! resolve it differently would not see each other's leases.

use std::collections::{BTreeMap, btree_map};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{ConfError, FoundValue, Problem};
use crate::grammar::{Entry, Span, Value};

/// Where root keeps its state; lockspaces are `files`, `lvm` and `scsi` below it.
pub const ROOT_STATE_DIR: &str = "/var/lib/disklock";
/// root's disklock configuration file.
pub const ROOT_CONFIG_PATH: &str = "/etc/disklock/disklock.conf";
/// The libvirt lockd plugin configuration that root reads when `lockd_conf` is not set.
pub const ROOT_LOCKD_CONF: &str = "/etc/libvirt/qemu-lockd.conf";
/// Where libvirt's sanlock plugin keeps disk leases (its `disk_lease_dir` default).
pub const DISK_LEASE_DIR: &str = "/var/lib/libvirt/sanlock";
/// The default of `auto_disk_leases`, as in libvirt's lockd plugin.
pub const AUTO_DISK_LEASES: bool = true;
/// The default of `readonly_disk_leases`: a read-only disk gets a shared lease, so that it
/// conflicts with an exclusive writer anywhere (libvirt's lockd plugin takes none).
pub const READONLY_DISK_LEASES: bool = true;
/// The default of `persistent_reservations`: off, so that a host that only wants leases never
/// sends a reservation command to its storage.
pub const PERSISTENT_RESERVATIONS: bool = false;
/// The reservation types an exclusive disk may take (`pr_type`), by their short names; the
/// first is the default. The registrants-only types come first because with them every
/// registered path of the holder may write (a plain Write Exclusive reservation lets only the
/// one I_T nexus that reserved write, which breaks dm-multipath), as fence_scsi does.
pub const PR_TYPES: &[&str] = &["we-ro", "ea-ro", "we", "ea"];
/// The reservation types a shared disk may join (`pr_shared_type`): only the all-registrants
/// types keep the reservation while any sharer is left.
pub const PR_SHARED_TYPES: &[&str] = &["we-ar", "ea-ar"];
/// The largest `host_id`, as sanlock's host ids run from 1 to 2000.
pub const MAX_HOST_ID: u16 = 2000;
/// The default of `pr_check_interval`, in seconds.
pub const PR_CHECK_INTERVAL: u32 = 10;
/// The largest `pr_check_interval` (one day).
pub const MAX_PR_CHECK_INTERVAL: u32 = 86_400;
/// The default of `lease_check_interval`, in seconds (its largest is the same as
/// `pr_check_interval`'s).
pub const LEASE_CHECK_INTERVAL: u32 = 10;
/// Which lockspaces get threads of their own for lease I/O (`lease_io_threads`); the first is
/// the default. `auto`: those not on a local file system (NFS and other network or cluster
/// file systems, whose I/O can hang while a server is away); `all`: every lockspace, also a
/// local file system on a disk that can stall (iSCSI, multipath queueing), at the cost of a
/// thread hop on each new lease.
pub const LEASE_IO_THREADS: &[&str] = &["auto", "all"];

/// A way to derive a stable, cross-host key for a disk, tried in the configured order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum KeySource {
    /// The UUID of an LVM logical volume.
    LvmUuid,
    /// The WWID a SCSI device reports in VPD page 0x83.
    ScsiWwid,
    /// The WWID (EUI-64, NGUID or UUID) of an NVMe namespace.
    NvmeWwid,
    /// SHA-256 of the device's `/dev/disk/by-path` name.
    ByPathSha256,
    /// SHA-256 of the path as given.
    PathSha256,
}

impl KeySource {
    /// Every key source, in the default order.
    pub const ALL: [KeySource; 5] = [
        KeySource::LvmUuid,
        KeySource::ScsiWwid,
        KeySource::NvmeWwid,
        KeySource::ByPathSha256,
        KeySource::PathSha256,
    ];

    /// The name used in configuration files, e.g. `lvm-uuid`.
    pub fn as_str(self) -> &'static str {
        match self {
            KeySource::LvmUuid => "lvm-uuid",
            KeySource::ScsiWwid => "scsi-wwid",
            KeySource::NvmeWwid => "nvme-wwid",
            KeySource::ByPathSha256 => "by-path-sha256",
            KeySource::PathSha256 => "path-sha256",
        }
    }
}

impl fmt::Display for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of parsing an unknown key source name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown key source {0:?}")]
pub struct UnknownKeySource(pub String);

impl FromStr for KeySource {
    type Err = UnknownKeySource;

    fn from_str(s: &str) -> Result<KeySource, UnknownKeySource> {
        KeySource::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownKeySource(s.to_owned()))
    }
}

impl serde::Serialize for KeySource {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

/// A configuration key. The discriminant is the key's row in the key table.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Key {
    /// `file_lockspace_dir`
    FileLockspaceDir,
    /// `lvm_lockspace_dir`
    LvmLockspaceDir,
    /// `scsi_lockspace_dir`
    ScsiLockspaceDir,
    /// `auto_disk_leases`
    AutoDiskLeases,
    /// `require_lease_for_disks`
    RequireLeaseForDisks,
    /// `key_sources`
    KeySources,
    /// `disk_lease_dir`
    DiskLeaseDir,
    /// `lockd_conf`
    LockdConf,
    /// `readonly_disk_leases`
    ReadonlyDiskLeases,
    /// `persistent_reservations`
    PersistentReservations,
    /// `pr_type`
    PrType,
    /// `pr_shared_type`
    PrSharedType,
    /// `host_key`
    HostKey,
    /// `host_id`
    HostId,
    /// `pr_exclude`
    PrExclude,
    /// `pr_check_interval`
    PrCheckInterval,
    /// `lease_io_threads`
    LeaseIoThreads,
    /// `lease_check_interval`
    LeaseCheckInterval,
}

impl Key {
    fn spec(self) -> &'static KeySpec {
        // Cannot go out of bounds: the assertion below KEYS checks that row i holds the
        // key whose discriminant is i, for every row.
        &KEYS[self as usize]
    }

    /// The name used in configuration files.
    pub fn name(self) -> &'static str {
        self.spec().name
    }

    /// Whether a libvirt `qemu-lockd.conf` may set this key.
    pub fn in_lockd_conf(self) -> bool {
        self.spec().in_lockd_conf
    }

    /// The key with this file name.
    pub fn from_name(name: &str) -> Option<Key> {
        KEYS.iter().find(|s| s.name == name).map(|s| s.key)
    }

    /// Every key, in table order.
    pub fn all() -> impl Iterator<Item = Key> {
        KEYS.iter().map(|s| s.key)
    }
}

impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl serde::Serialize for Key {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.name())
    }
}

/// What a key holds, which decides how its value is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// `0` or `1`.
    Bool,
    /// An absolute path.
    AbsPath,
    /// An absolute path, or `""` for none.
    OptionalAbsPath,
    /// A non-empty list of distinct key source names.
    KeySources,
    /// One of a few names.
    Choice(&'static [&'static str]),
    /// `""` or `0x` and 1 to 16 hex digits, not all zero.
    HostKey,
    /// `0` (none) or 1 to [`MAX_HOST_ID`].
    HostId,
    /// A list of non-empty strings.
    Strings,
    /// Whole seconds, 0 to [`MAX_PR_CHECK_INTERVAL`].
    Seconds,
}

/// One row of the key table.
struct KeySpec {
    key: Key,
    name: &'static str,
    kind: Kind,
    in_lockd_conf: bool,
    /// The built-in default, or `None` when there is none in this context.
    default: fn(&Context) -> Option<Setting>,
}

/// Every key disklock reads, with its built-in default.
const KEYS: &[KeySpec] = &[
    KeySpec {
        key: Key::FileLockspaceDir,
        name: "file_lockspace_dir",
        kind: Kind::AbsPath,
        in_lockd_conf: true,
        default: |ctx| ctx.state_dir().map(|d| Setting::Path(d.join("files"))),
    },
    KeySpec {
        key: Key::LvmLockspaceDir,
        name: "lvm_lockspace_dir",
        kind: Kind::AbsPath,
        in_lockd_conf: true,
        default: |ctx| ctx.state_dir().map(|d| Setting::Path(d.join("lvm"))),
    },
    KeySpec {
        key: Key::ScsiLockspaceDir,
        name: "scsi_lockspace_dir",
        kind: Kind::AbsPath,
        in_lockd_conf: true,
        default: |ctx| ctx.state_dir().map(|d| Setting::Path(d.join("scsi"))),
    },
    KeySpec {
        key: Key::AutoDiskLeases,
        name: "auto_disk_leases",
        kind: Kind::Bool,
        in_lockd_conf: true,
        default: |_| Some(Setting::Bool(AUTO_DISK_LEASES)),
    },
    KeySpec {
        key: Key::RequireLeaseForDisks,
        name: "require_lease_for_disks",
        kind: Kind::Bool,
        in_lockd_conf: true,
        // Not a fixed value: `!auto_disk_leases` once every file is read (Config::build), as
        // libvirt's lockd plugin does.
        default: |_| None,
    },
    KeySpec {
        key: Key::KeySources,
        name: "key_sources",
        kind: Kind::KeySources,
        in_lockd_conf: false,
        default: |_| Some(Setting::KeySources(KeySource::ALL.to_vec())),
    },
    KeySpec {
        key: Key::DiskLeaseDir,
        name: "disk_lease_dir",
        kind: Kind::AbsPath,
        in_lockd_conf: false,
        default: |_| Some(Setting::Path(PathBuf::from(DISK_LEASE_DIR))),
    },
    KeySpec {
        key: Key::LockdConf,
        name: "lockd_conf",
        kind: Kind::OptionalAbsPath,
        in_lockd_conf: false,
        default: |ctx| Some(Setting::OptionalPath(ctx.default_lockd_conf())),
    },
    KeySpec {
        key: Key::ReadonlyDiskLeases,
        name: "readonly_disk_leases",
        kind: Kind::Bool,
        in_lockd_conf: false,
        default: |_| Some(Setting::Bool(READONLY_DISK_LEASES)),
    },
    KeySpec {
        key: Key::PersistentReservations,
        name: "persistent_reservations",
        kind: Kind::Bool,
        in_lockd_conf: false,
        default: |_| Some(Setting::Bool(PERSISTENT_RESERVATIONS)),
    },
    KeySpec {
        key: Key::PrType,
        name: "pr_type",
        kind: Kind::Choice(PR_TYPES),
        in_lockd_conf: false,
        default: |_| Some(Setting::Choice(PR_TYPES[0].to_owned())),
    },
    KeySpec {
        key: Key::PrSharedType,
        name: "pr_shared_type",
        kind: Kind::Choice(PR_SHARED_TYPES),
        in_lockd_conf: false,
        default: |_| Some(Setting::Choice(PR_SHARED_TYPES[0].to_owned())),
    },
    KeySpec {
        key: Key::HostKey,
        name: "host_key",
        kind: Kind::HostKey,
        in_lockd_conf: false,
        default: |_| Some(Setting::HostKey(None)),
    },
    KeySpec {
        key: Key::HostId,
        name: "host_id",
        kind: Kind::HostId,
        in_lockd_conf: false,
        default: |_| Some(Setting::HostId(None)),
    },
    KeySpec {
        key: Key::PrExclude,
        name: "pr_exclude",
        kind: Kind::Strings,
        in_lockd_conf: false,
        default: |_| Some(Setting::Strings(Vec::new())),
    },
    KeySpec {
        key: Key::PrCheckInterval,
        name: "pr_check_interval",
        kind: Kind::Seconds,
        in_lockd_conf: false,
        default: |_| Some(Setting::Seconds(PR_CHECK_INTERVAL)),
    },
    KeySpec {
        key: Key::LeaseIoThreads,
        name: "lease_io_threads",
        kind: Kind::Choice(LEASE_IO_THREADS),
        in_lockd_conf: false,
        default: |_| Some(Setting::Choice(LEASE_IO_THREADS[0].to_owned())),
    },
    KeySpec {
        key: Key::LeaseCheckInterval,
        name: "lease_check_interval",
        kind: Kind::Seconds,
        in_lockd_conf: false,
        default: |_| Some(Setting::Seconds(LEASE_CHECK_INTERVAL)),
    },
];

const _: () = {
    let mut i = 0;
    while i < KEYS.len() {
        assert!(
            KEYS[i].key as usize == i,
            "KEYS rows must follow Key's order"
        );
        i += 1;
    }
};

/// A checked value of some key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Setting {
    Bool(bool),
    Path(PathBuf),
    OptionalPath(Option<PathBuf>),
    KeySources(Vec<KeySource>),
    Choice(String),
    HostKey(Option<u64>),
    HostId(Option<u16>),
    Strings(Vec<String>),
    Seconds(u32),
}

/// Where a setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Origin {
    /// The built-in default. For `require_lease_for_disks` this is `!auto_disk_leases`,
    /// whatever set that.
    #[default]
    Default,
    /// A line of a file: disklock.conf or a libvirt `qemu-lockd.conf`.
    File {
        /// The file.
        path: PathBuf,
        /// The 1-based line of the key.
        line: usize,
    },
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::Default => f.write_str("default"),
            Origin::File { path, line } => write!(f, "{}:{line}", path.display()),
        }
    }
}

/// Facts about the caller that decide the defaults. The library never reads the environment
/// itself; the binary fills this in from `getuid()`, `HOME`, `XDG_STATE_HOME` and
/// `XDG_CONFIG_HOME`.
///
/// Relative or empty directories are ignored, as the XDG base directory specification asks.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Context {
    /// The real user id; 0 selects the system-wide defaults.
    pub uid: u32,
    /// `HOME`.
    pub home: Option<PathBuf>,
    /// `XDG_STATE_HOME`.
    pub xdg_state_home: Option<PathBuf>,
    /// `XDG_CONFIG_HOME`.
    pub xdg_config_home: Option<PathBuf>,
}

fn usable(dir: Option<&PathBuf>) -> Option<&Path> {
    dir.map(PathBuf::as_path).filter(|d| d.is_absolute())
}

impl Context {
    /// Whether the defaults are root's.
    pub fn is_root(&self) -> bool {
        self.uid == 0
    }

    /// The configuration file read when none is named: `/etc/disklock/disklock.conf` for
    /// root, else `$XDG_CONFIG_HOME/disklock/disklock.conf` or
    /// `$HOME/.config/disklock/disklock.conf`; `None` if neither variable is usable.
    pub fn default_config_path(&self) -> Option<PathBuf> {
        if self.is_root() {
            return Some(PathBuf::from(ROOT_CONFIG_PATH));
        }
        let base = usable(self.xdg_config_home.as_ref())
            .map(Path::to_path_buf)
            .or_else(|| usable(self.home.as_ref()).map(|h| h.join(".config")))?;
        Some(base.join("disklock").join("disklock.conf"))
    }

    /// The directory below which the default lockspaces live: `/var/lib/disklock` for root,
    /// else `$XDG_STATE_HOME/disklock` or `$HOME/.local/state/disklock`.
    pub fn state_dir(&self) -> Option<PathBuf> {
        if self.is_root() {
            return Some(PathBuf::from(ROOT_STATE_DIR));
        }
        let base = usable(self.xdg_state_home.as_ref())
            .map(Path::to_path_buf)
            .or_else(|| usable(self.home.as_ref()).map(|h| h.join(".local").join("state")))?;
        Some(base.join("disklock"))
    }

    /// The libvirt lockd configuration read when `lockd_conf` is not set: root's
    /// `/etc/libvirt/qemu-lockd.conf`, none for other users.
    pub fn default_lockd_conf(&self) -> Option<PathBuf> {
        self.is_root().then(|| PathBuf::from(ROOT_LOCKD_CONF))
    }
}

/// disklock's configuration, every value checked, with where each came from.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Config {
    /// Lockspace for disks named by file path (virtlockd's `file_lockspace_dir`).
    pub file_lockspace_dir: PathBuf,
    /// Lockspace for disks named by LVM UUID.
    pub lvm_lockspace_dir: PathBuf,
    /// Lockspace for disks named by SCSI or NVMe WWID.
    pub scsi_lockspace_dir: PathBuf,
    /// Take a lease on every disk automatically.
    pub auto_disk_leases: bool,
    /// Refuse to start a guest with writable disks but no leases.
    pub require_lease_for_disks: bool,
    /// The disk-key sources to try, in order; never empty, no repeats.
    pub key_sources: Vec<KeySource>,
    /// Where libvirt-sanlock-compatible lease files live.
    pub disk_lease_dir: PathBuf,
    /// A libvirt `qemu-lockd.conf` whose keys fill in what disklock.conf leaves unset.
    pub lockd_conf: Option<PathBuf>,
    /// Take a shared lease on read-only disks (1) or none, as libvirt does (0).
    pub readonly_disk_leases: bool,
    /// Guard SCSI- and NVMe-keyed disks with persistent reservations as well as leases.
    pub persistent_reservations: bool,
    /// The reservation type of an exclusive disk: one of [`PR_TYPES`].
    pub pr_type: String,
    /// The reservation type a shared disk joins: one of [`PR_SHARED_TYPES`].
    pub pr_shared_type: String,
    /// This host's reservation key, when set explicitly; never 0.
    #[serde(serialize_with = "serialize_host_key")]
    pub host_key: Option<u64>,
    /// This host's number in the cluster (1 to [`MAX_HOST_ID`]), from which the reservation
    /// key is derived when `host_key` is not set.
    pub host_id: Option<u16>,
    /// Disks (keys or paths) that never get a persistent reservation.
    pub pr_exclude: Vec<String>,
    /// How often the daemon checks the reservations of the disks it holds, in seconds; 0
    /// turns the check off.
    pub pr_check_interval: u32,
    /// Which lockspaces get lease I/O threads: one of [`LEASE_IO_THREADS`].
    pub lease_io_threads: String,
    /// How often the daemon checks that the lease files it holds are still at their paths,
    /// in seconds; 0 turns the check off.
    pub lease_check_interval: u32,
    origins: BTreeMap<Key, Origin>,
}

static DEFAULT_ORIGIN: Origin = Origin::Default;

fn serialize_host_key<S: serde::Serializer>(key: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
    match key {
        Some(k) => s.serialize_str(&format_host_key(*k)),
        None => s.serialize_none(),
    }
}

/// A reservation key as configuration files and disklock print it: `0x` and 16 hex digits.
pub fn format_host_key(key: u64) -> String {
    format!("0x{key:016x}")
}

/// Parses `0x` and 1 to 16 hex digits, not all zero (a zero key means "no key" to SCSI).
pub fn parse_host_key(text: &str) -> Option<u64> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))?;
    if digits.is_empty() || digits.len() > 16 || !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, 16).ok().filter(|k| *k != 0)
}

impl Config {
    /// The built-in defaults for `ctx`, without reading any file.
    pub fn defaults(ctx: &Context) -> Result<Config, ConfError> {
        Config::build(ctx, BTreeMap::new())
    }

    /// Where the value of `key` came from.
    pub fn origin(&self, key: Key) -> &Origin {
        self.origins.get(&key).unwrap_or(&DEFAULT_ORIGIN)
    }

    /// The value of `key` in the configuration grammar: booleans as `0`/`1`, paths as
    /// strings, no `lockd_conf` as `""`. Rendering every key gives a disklock.conf that loads
    /// back to this configuration.
    pub fn value(&self, key: Key) -> Value {
        let path = |p: &Path| Value::Str(p.to_string_lossy().into_owned());
        match key {
            Key::FileLockspaceDir => path(&self.file_lockspace_dir),
            Key::LvmLockspaceDir => path(&self.lvm_lockspace_dir),
            Key::ScsiLockspaceDir => path(&self.scsi_lockspace_dir),
            Key::AutoDiskLeases => Value::Int(self.auto_disk_leases.into()),
            Key::RequireLeaseForDisks => Value::Int(self.require_lease_for_disks.into()),
            Key::KeySources => Value::List(
                self.key_sources
                    .iter()
                    .map(|k| Value::Str(k.as_str().to_owned()))
                    .collect(),
            ),
            Key::DiskLeaseDir => path(&self.disk_lease_dir),
            Key::LockdConf => self
                .lockd_conf
                .as_deref()
                .map_or_else(|| Value::Str(String::new()), path),
            Key::ReadonlyDiskLeases => Value::Int(self.readonly_disk_leases.into()),
            Key::PersistentReservations => Value::Int(self.persistent_reservations.into()),
            Key::PrType => Value::Str(self.pr_type.clone()),
            Key::PrSharedType => Value::Str(self.pr_shared_type.clone()),
            Key::HostKey => Value::Str(self.host_key.map(format_host_key).unwrap_or_default()),
            Key::HostId => Value::Int(self.host_id.map_or(0, i64::from)),
            Key::PrExclude => Value::List(
                self.pr_exclude
                    .iter()
                    .map(|d| Value::Str(d.clone()))
                    .collect(),
            ),
            Key::PrCheckInterval => Value::Int(self.pr_check_interval.into()),
            Key::LeaseIoThreads => Value::Str(self.lease_io_threads.clone()),
            Key::LeaseCheckInterval => Value::Int(self.lease_check_interval.into()),
        }
    }

    /// Every key with its value, ready for [`render`](crate::grammar::render).
    pub fn to_entries(&self) -> Vec<Entry> {
        Key::all()
            .map(|k| Entry::new(k.name(), self.value(k)))
            .collect()
    }

    /// Builds the configuration from the settings the files gave, filling in defaults.
    pub(crate) fn build(
        ctx: &Context,
        mut set: BTreeMap<Key, (Setting, Origin)>,
    ) -> Result<Config, ConfError> {
        for spec in KEYS {
            if let btree_map::Entry::Vacant(slot) = set.entry(spec.key)
                && let Some(value) = (spec.default)(ctx)
            {
                slot.insert((value, Origin::Default));
            }
        }
        let mut origins = BTreeMap::new();
        let mut take = |key: Key| -> Option<Setting> {
            let (value, origin) = set.remove(&key)?;
            origins.insert(key, origin);
            Some(value)
        };
        let no_default = |key: Key| ConfError::NoDefault { key: key.name() };
        // The `unreachable!`s below cannot fire: `check` turns each Kind into its own
        // Setting variant, and the defaults in KEYS use the same variant as their Kind
        // (the default tests exercise every one).
        let mut path = |key: Key| match take(key) {
            Some(Setting::Path(p)) => Ok(p),
            None => Err(no_default(key)),
            Some(other) => unreachable!("{key}: not a path: {other:?}"),
        };
        let file_lockspace_dir = path(Key::FileLockspaceDir)?;
        let lvm_lockspace_dir = path(Key::LvmLockspaceDir)?;
        let scsi_lockspace_dir = path(Key::ScsiLockspaceDir)?;
        let disk_lease_dir = path(Key::DiskLeaseDir)?;
        let mut boolean = |key: Key| match take(key) {
            Some(Setting::Bool(b)) => Some(b),
            None => None,
            Some(other) => unreachable!("{key}: not a bool: {other:?}"),
        };
        let auto_disk_leases =
            boolean(Key::AutoDiskLeases).ok_or(no_default(Key::AutoDiskLeases))?;
        let require_lease_for_disks =
            boolean(Key::RequireLeaseForDisks).unwrap_or(!auto_disk_leases);
        let readonly_disk_leases =
            boolean(Key::ReadonlyDiskLeases).ok_or(no_default(Key::ReadonlyDiskLeases))?;
        let persistent_reservations =
            boolean(Key::PersistentReservations).ok_or(no_default(Key::PersistentReservations))?;
        let mut choice = |key: Key| match take(key) {
            Some(Setting::Choice(c)) => Ok(c),
            None => Err(no_default(key)),
            Some(other) => unreachable!("{key}: not a choice: {other:?}"),
        };
        let pr_type = choice(Key::PrType)?;
        let pr_shared_type = choice(Key::PrSharedType)?;
        let lease_io_threads = choice(Key::LeaseIoThreads)?;
        let host_key = match take(Key::HostKey) {
            Some(Setting::HostKey(k)) => k,
            None => None,
            Some(other) => unreachable!("host_key: {other:?}"),
        };
        let host_id = match take(Key::HostId) {
            Some(Setting::HostId(id)) => id,
            None => None,
            Some(other) => unreachable!("host_id: {other:?}"),
        };
        let pr_exclude = match take(Key::PrExclude) {
            Some(Setting::Strings(v)) => v,
            None => Vec::new(),
            Some(other) => unreachable!("pr_exclude: {other:?}"),
        };
        let lease_check_interval = match take(Key::LeaseCheckInterval) {
            Some(Setting::Seconds(n)) => n,
            None => return Err(no_default(Key::LeaseCheckInterval)),
            Some(other) => unreachable!("lease_check_interval: {other:?}"),
        };
        let pr_check_interval = match take(Key::PrCheckInterval) {
            Some(Setting::Seconds(n)) => n,
            None => return Err(no_default(Key::PrCheckInterval)),
            Some(other) => unreachable!("pr_check_interval: {other:?}"),
        };
        let key_sources = match take(Key::KeySources) {
            Some(Setting::KeySources(k)) => k,
            None => return Err(no_default(Key::KeySources)),
            Some(other) => unreachable!("key_sources: {other:?}"),
        };
        let lockd_conf = match take(Key::LockdConf) {
            Some(Setting::OptionalPath(p)) => p,
            None => None,
            Some(other) => unreachable!("lockd_conf: {other:?}"),
        };
        origins
            .entry(Key::RequireLeaseForDisks)
            .or_insert(Origin::Default);
        origins.entry(Key::LockdConf).or_insert(Origin::Default);
        Ok(Config {
            file_lockspace_dir,
            lvm_lockspace_dir,
            scsi_lockspace_dir,
            auto_disk_leases,
            require_lease_for_disks,
            key_sources,
            disk_lease_dir,
            lockd_conf,
            readonly_disk_leases,
            persistent_reservations,
            pr_type,
            pr_shared_type,
            host_key,
            host_id,
            pr_exclude,
            pr_check_interval,
            lease_io_threads,
            lease_check_interval,
            origins,
        })
    }
}

/// Checks an entry's value against what `key` holds.
pub(crate) fn check(key: Key, entry: &Entry, file: &Path) -> Result<Setting, ConfError> {
    let invalid = |span: Span, problem: Problem| ConfError::Invalid {
        path: file.to_path_buf(),
        line: span.line,
        col: span.col,
        key: key.name(),
        problem,
    };
    let wrong = |span: Span, expected: &'static str, found: &Value| {
        invalid(
            span,
            Problem::WrongType {
                expected,
                found: describe(found),
            },
        )
    };
    let abs_path = |s: &str| {
        if Path::new(s).is_absolute() {
            Ok(PathBuf::from(s))
        } else {
            Err(invalid(
                entry.value_span,
                Problem::NotAbsolute {
                    found: s.to_owned(),
                },
            ))
        }
    };
    match (key.spec().kind, &entry.value) {
        (Kind::Bool, Value::Int(0)) => Ok(Setting::Bool(false)),
        (Kind::Bool, Value::Int(1)) => Ok(Setting::Bool(true)),
        (Kind::Bool, v) => Err(wrong(entry.value_span, "0 or 1", v)),
        (Kind::AbsPath, Value::Str(s)) => abs_path(s).map(Setting::Path),
        (Kind::AbsPath, v) => Err(wrong(entry.value_span, "a string with an absolute path", v)),
        (Kind::OptionalAbsPath, Value::Str(s)) if s.is_empty() => Ok(Setting::OptionalPath(None)),
        (Kind::OptionalAbsPath, Value::Str(s)) => {
            abs_path(s).map(|p| Setting::OptionalPath(Some(p)))
        }
        (Kind::OptionalAbsPath, v) => Err(wrong(
            entry.value_span,
            "a string with an absolute path, or \"\"",
            v,
        )),
        (Kind::KeySources, Value::List(items)) => {
            if items.is_empty() {
                return Err(invalid(entry.value_span, Problem::EmptyList));
            }
            let mut sources = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let span = entry.item_spans.get(i).copied().unwrap_or(entry.value_span);
                let Value::Str(name) = item else {
                    return Err(wrong(span, "a key source name", item));
                };
                let source: KeySource = name
                    .parse()
                    .map_err(|_| invalid(span, Problem::UnknownKeySource { name: name.clone() }))?;
                if sources.contains(&source) {
                    return Err(invalid(
                        span,
                        Problem::DuplicateKeySource { name: name.clone() },
                    ));
                }
                sources.push(source);
            }
            Ok(Setting::KeySources(sources))
        }
        (Kind::KeySources, v) => Err(wrong(entry.value_span, "a list of key source names", v)),
        (Kind::Choice(names), Value::Str(s)) => match names.iter().find(|n| **n == s.as_str()) {
            Some(n) => Ok(Setting::Choice((*n).to_owned())),
            None => Err(invalid(
                entry.value_span,
                Problem::NotOneOf {
                    found: s.clone(),
                    expected: names,
                },
            )),
        },
        (Kind::Choice(_), v) => Err(wrong(entry.value_span, "a string", v)),
        (Kind::HostKey, Value::Str(s)) if s.is_empty() => Ok(Setting::HostKey(None)),
        (Kind::HostKey, Value::Str(s)) => match parse_host_key(s) {
            Some(k) => Ok(Setting::HostKey(Some(k))),
            None => Err(wrong(
                entry.value_span,
                "\"0x\" and 1 to 16 hex digits, not all zero, or \"\"",
                &entry.value,
            )),
        },
        (Kind::HostKey, v) => Err(wrong(entry.value_span, "a string such as \"0x1a2b\"", v)),
        (Kind::HostId, Value::Int(0)) => Ok(Setting::HostId(None)),
        (Kind::HostId, Value::Int(n)) if (1..=i64::from(MAX_HOST_ID)).contains(n) => {
            // In range, so the conversion cannot fail.
            Ok(Setting::HostId(u16::try_from(*n).ok()))
        }
        (Kind::HostId, v) => Err(wrong(
            entry.value_span,
            "an integer from 1 to 2000, or 0 for none",
            v,
        )),
        (Kind::Strings, Value::List(items)) => {
            let mut out = Vec::with_capacity(items.len());
            for (i, item) in items.iter().enumerate() {
                let span = entry.item_spans.get(i).copied().unwrap_or(entry.value_span);
                match item {
                    Value::Str(s) if !s.is_empty() => out.push(s.clone()),
                    other => return Err(wrong(span, "a non-empty string", other)),
                }
            }
            Ok(Setting::Strings(out))
        }
        (Kind::Strings, v) => Err(wrong(entry.value_span, "a list of strings", v)),
        (Kind::Seconds, Value::Int(n)) if (0..=i64::from(MAX_PR_CHECK_INTERVAL)).contains(n) => Ok(
            Setting::Seconds(u32::try_from(*n).unwrap_or(MAX_PR_CHECK_INTERVAL)),
        ),
        (Kind::Seconds, v) => Err(wrong(entry.value_span, "whole seconds from 0 to 86400", v)),
    }
}

fn describe(value: &Value) -> FoundValue {
    match value {
        Value::Int(n) => FoundValue::Int(*n),
        Value::Str(s) => FoundValue::Str(s.clone()),
        Value::List(_) => FoundValue::List,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> Context {
        Context {
            uid: 0,
            home: Some("/root".into()),
            ..Context::default()
        }
    }

    fn user(home: Option<&str>, state: Option<&str>, config: Option<&str>) -> Context {
        Context {
            uid: 1000,
            home: home.map(PathBuf::from),
            xdg_state_home: state.map(PathBuf::from),
            xdg_config_home: config.map(PathBuf::from),
        }
    }

    #[test]
    fn key_source_names() {
        let names: Vec<_> = KeySource::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "lvm-uuid",
                "scsi-wwid",
                "nvme-wwid",
                "by-path-sha256",
                "path-sha256"
            ]
        );
        for k in KeySource::ALL {
            assert_eq!(k.as_str().parse::<KeySource>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
        }
        assert_eq!(
            "LVM-UUID".parse::<KeySource>(),
            Err(UnknownKeySource("LVM-UUID".into()))
        );
        assert_eq!(
            UnknownKeySource("x".into()).to_string(),
            "unknown key source \"x\""
        );
    }

    #[test]
    fn key_table() {
        let names: Vec<_> = Key::all().map(Key::name).collect();
        assert_eq!(
            names,
            [
                "file_lockspace_dir",
                "lvm_lockspace_dir",
                "scsi_lockspace_dir",
                "auto_disk_leases",
                "require_lease_for_disks",
                "key_sources",
                "disk_lease_dir",
                "lockd_conf",
                "readonly_disk_leases",
                "persistent_reservations",
                "pr_type",
                "pr_shared_type",
                "host_key",
                "host_id",
                "pr_exclude",
                "pr_check_interval",
                "lease_io_threads",
                "lease_check_interval"
            ]
        );
        for key in Key::all() {
            assert_eq!(Key::from_name(key.name()), Some(key));
            assert_eq!(key.to_string(), key.name());
        }
        assert_eq!(Key::from_name("lock_manager"), None);
        let lockd: Vec<_> = Key::all()
            .filter(|k| k.in_lockd_conf())
            .map(Key::name)
            .collect();
        assert_eq!(
            lockd,
            [
                "file_lockspace_dir",
                "lvm_lockspace_dir",
                "scsi_lockspace_dir",
                "auto_disk_leases",
                "require_lease_for_disks"
            ]
        );
    }

    #[test]
    fn root_context_paths() {
        let ctx = root();
        assert!(ctx.is_root());
        assert_eq!(
            ctx.default_config_path(),
            Some(PathBuf::from("/etc/disklock/disklock.conf"))
        );
        assert_eq!(ctx.state_dir(), Some(PathBuf::from("/var/lib/disklock")));
        assert_eq!(
            ctx.default_lockd_conf(),
            Some(PathBuf::from("/etc/libvirt/qemu-lockd.conf"))
        );
        // root ignores the XDG variables a sudo session might carry over.
        let ctx = Context {
            xdg_state_home: Some("/home/u/.local/state".into()),
            xdg_config_home: Some("/home/u/.config".into()),
            ..root()
        };
        assert_eq!(ctx.state_dir(), Some(PathBuf::from("/var/lib/disklock")));
        assert_eq!(
            ctx.default_config_path(),
            Some(PathBuf::from("/etc/disklock/disklock.conf"))
        );
    }

    #[test]
    fn user_context_paths() {
        let xdg = user(Some("/home/u"), Some("/xdg/state"), Some("/xdg/config"));
        assert!(!xdg.is_root());
        assert_eq!(
            xdg.default_config_path(),
            Some(PathBuf::from("/xdg/config/disklock/disklock.conf"))
        );
        assert_eq!(xdg.state_dir(), Some(PathBuf::from("/xdg/state/disklock")));
        assert_eq!(xdg.default_lockd_conf(), None);

        let home = user(Some("/home/u"), None, None);
        assert_eq!(
            home.default_config_path(),
            Some(PathBuf::from("/home/u/.config/disklock/disklock.conf"))
        );
        assert_eq!(
            home.state_dir(),
            Some(PathBuf::from("/home/u/.local/state/disklock"))
        );

        // Relative or empty XDG directories are ignored, as the XDG spec asks.
        let relative = user(Some("/home/u"), Some("state"), Some(""));
        assert_eq!(relative.state_dir(), home.state_dir());
        assert_eq!(relative.default_config_path(), home.default_config_path());

        let nothing = user(None, None, None);
        assert_eq!(nothing.default_config_path(), None);
        assert_eq!(nothing.state_dir(), None);
        assert_eq!(user(Some("relative"), None, None).state_dir(), None);
    }

    #[test]
    fn root_defaults() {
        let c = Config::defaults(&root()).unwrap();
        assert_eq!(c.file_lockspace_dir, Path::new("/var/lib/disklock/files"));
        assert_eq!(c.lvm_lockspace_dir, Path::new("/var/lib/disklock/lvm"));
        assert_eq!(c.scsi_lockspace_dir, Path::new("/var/lib/disklock/scsi"));
        assert!(c.auto_disk_leases);
        assert!(!c.require_lease_for_disks);
        assert!(c.readonly_disk_leases);
        assert_eq!(c.key_sources, KeySource::ALL);
        assert_eq!(c.disk_lease_dir, Path::new("/var/lib/libvirt/sanlock"));
        assert_eq!(
            c.lockd_conf.as_deref(),
            Some(Path::new("/etc/libvirt/qemu-lockd.conf"))
        );
        for key in Key::all() {
            assert_eq!(c.origin(key), &Origin::Default, "{key}");
        }
    }

    #[test]
    fn user_defaults() {
        let c = Config::defaults(&user(Some("/home/u"), Some("/st"), None)).unwrap();
        assert_eq!(c.file_lockspace_dir, Path::new("/st/disklock/files"));
        assert_eq!(c.lvm_lockspace_dir, Path::new("/st/disklock/lvm"));
        assert_eq!(c.scsi_lockspace_dir, Path::new("/st/disklock/scsi"));
        assert_eq!(c.disk_lease_dir, Path::new("/var/lib/libvirt/sanlock"));
        assert_eq!(c.lockd_conf, None);
        assert!(c.auto_disk_leases);
        assert!(!c.require_lease_for_disks);
    }

    #[test]
    fn user_without_home_has_no_lockspace_default() {
        let e = Config::defaults(&user(None, None, None)).unwrap_err();
        assert!(matches!(
            e,
            ConfError::NoDefault {
                key: "file_lockspace_dir"
            }
        ));
        assert_eq!(
            e.to_string(),
            "file_lockspace_dir: no default without an absolute HOME or XDG_STATE_HOME, set it in the configuration file"
        );
    }

    #[test]
    fn values_in_grammar_form() {
        let c = Config::defaults(&user(Some("/h"), None, None)).unwrap();
        assert_eq!(c.value(Key::AutoDiskLeases), Value::Int(1));
        assert_eq!(c.value(Key::RequireLeaseForDisks), Value::Int(0));
        assert_eq!(c.value(Key::LockdConf), Value::Str(String::new()));
        assert_eq!(c.value(Key::ReadonlyDiskLeases), Value::Int(1));
        assert_eq!(
            c.value(Key::FileLockspaceDir),
            Value::Str("/h/.local/state/disklock/files".into())
        );
        let text = crate::grammar::render(&c.to_entries()).unwrap();
        assert!(text.contains(
            "key_sources = [ \"lvm-uuid\", \"scsi-wwid\", \"nvme-wwid\", \"by-path-sha256\", \"path-sha256\" ]\n"
        ));
        assert_eq!(Origin::Default.to_string(), "default");
        assert_eq!(
            Origin::File {
                path: "/etc/x.conf".into(),
                line: 7
            }
            .to_string(),
            "/etc/x.conf:7"
        );
    }
}
