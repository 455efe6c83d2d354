//! The per-domain lock manager object, pure: what libvirt told us (`drvNew`,
//! `drvAddResource`) and what each callback asks of the daemon.
//!
//! libvirt creates one object per operation (New, AddResource×N, then one of Acquire,
//! Release, Inquire, then Free) and keeps nothing between operations, so the object holds
//! only what one operation needs. The owner the daemon records is the QEMU process: its pid,
//! with the domain's name and uuid, so `disklock status` and a refusal on another host name
//! the domain, and the daemon's watch of that pid ends the leases with QEMU.

use disklock::daemon::protocol::{DiskMode, DiskRequest, LostAction, OnLost};
use disklock::lockspace::Owner;

use crate::config::PluginConfig;
use crate::error::PluginError;

/// `VIR_LOCK_MANAGER_OBJECT_TYPE_DOMAIN`, the only object type (`drvNew`).
pub const OBJECT_TYPE_DOMAIN: u32 = 0;
/// `VIR_LOCK_MANAGER_NEW_STARTED` (`drvNew`): a freshly started process, in the child.
pub const NEW_STARTED: u32 = 1;
/// `VIR_LOCK_MANAGER_RESOURCE_TYPE_DISK`.
pub const RESOURCE_TYPE_DISK: u32 = 0;
/// `VIR_LOCK_MANAGER_RESOURCE_TYPE_LEASE`.
pub const RESOURCE_TYPE_LEASE: u32 = 1;
/// `VIR_LOCK_MANAGER_RESOURCE_READONLY` (`drvAddResource`): `<readonly/>`.
pub const RESOURCE_READONLY: u32 = 1;
/// `VIR_LOCK_MANAGER_RESOURCE_SHARED` (`drvAddResource`): `<shareable/>`.
pub const RESOURCE_SHARED: u32 = 2;
/// `VIR_LOCK_MANAGER_ACQUIRE_REGISTER_ONLY` (`drvAcquire`): register the owner, lock nothing
/// (the start in the forked child, before exec).
pub const ACQUIRE_REGISTER_ONLY: u32 = 1;
/// `VIR_LOCK_MANAGER_ACQUIRE_RESTRICT` (`drvAcquire`): the connection handed to QEMU may do
/// nothing more.
pub const ACQUIRE_RESTRICT: u32 = 2;

/// A `drvNew`/`drvAddResource` parameter's value, as libvirt typed it
/// (`VIR_LOCK_MANAGER_PARAM_TYPE_*`).
#[derive(Debug, Clone, PartialEq)]
pub enum ParamValue {
    /// STRING or CSTRING (NULL is `None`: libvirt passes a NULL `uri` on some paths).
    Str(Option<String>),
    /// INT.
    Int(i32),
    /// LONG.
    Long(i64),
    /// UINT.
    UInt(u32),
    /// ULONG.
    ULong(u64),
    /// DOUBLE.
    Double(f64),
    /// UUID: 16 raw bytes.
    Uuid([u8; 16]),
}

/// One parameter, copied out of libvirt's array.
#[derive(Debug, Clone, PartialEq)]
pub struct Param {
    /// Its key.
    pub key: String,
    /// Its value.
    pub value: ParamValue,
}

impl ParamValue {
    /// An unsigned number, however libvirt typed it (`id` and `pid` are declared UINT but
    /// written through the union's `int` member).
    fn as_u32(&self) -> Option<u32> {
        match *self {
            ParamValue::UInt(n) => Some(n),
            ParamValue::Int(n) => u32::try_from(n).ok(),
            ParamValue::ULong(n) => u32::try_from(n).ok(),
            ParamValue::Long(n) => u32::try_from(n).ok(),
            _ => None,
        }
    }

    fn as_u64(&self) -> Option<u64> {
        match *self {
            ParamValue::ULong(n) => Some(n),
            ParamValue::Long(n) => u64::try_from(n).ok(),
            ref v => v.as_u32().map(u64::from),
        }
    }

    fn as_str(&self) -> Option<&str> {
        match self {
            ParamValue::Str(s) => s.as_deref(),
            _ => None,
        }
    }
}

/// The domain's `<on_lockfailure>` action (`virDomainLockFailureAction`), passed to every
/// acquire and handed to the daemon, which applies it when it finds a lease lost.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockFailureAction {
    /// Not set: poweroff, as sanlock does.
    Default,
    /// Kill QEMU.
    Poweroff,
    /// Kill QEMU and start the domain again.
    Restart,
    /// Pause the domain.
    Pause,
    /// Only log.
    Ignore,
}

impl LockFailureAction {
    /// What the daemon is to do for this action to a domain run through `uri`: poweroff
    /// (also the default, as with sanlock) kills QEMU, pause suspends the domain through
    /// libvirt, ignore logs. Restart is refused, as sanlock refuses it: the lock manager
    /// cannot start a domain again.
    pub fn on_lost(self, uri: Option<&str>) -> Result<OnLost, PluginError> {
        let action = match self {
            LockFailureAction::Default | LockFailureAction::Poweroff => LostAction::Kill,
            LockFailureAction::Pause => LostAction::Pause,
            LockFailureAction::Ignore => LostAction::Ignore,
            LockFailureAction::Restart => {
                return Err(PluginError::BadCall(
                    "<on_lockfailure>restart</on_lockfailure> is not supported by disklock; \
                     use poweroff, pause or ignore"
                        .into(),
                ));
            }
        };
        if action == LostAction::Pause && uri.is_none() {
            return Err(PluginError::BadCall(
                "<on_lockfailure>pause</on_lockfailure> needs the domain's libvirt URI, and \
                 libvirt gave none"
                    .into(),
            ));
        }
        Ok(OnLost {
            action,
            uri: (action == LostAction::Pause)
                .then(|| uri.map(str::to_owned))
                .flatten(),
        })
    }

    /// From libvirt's enum value.
    pub fn from_raw(v: i32) -> Result<LockFailureAction, PluginError> {
        Ok(match v {
            0 => LockFailureAction::Default,
            1 => LockFailureAction::Poweroff,
            2 => LockFailureAction::Restart,
            3 => LockFailureAction::Pause,
            4 => LockFailureAction::Ignore,
            v => {
                return Err(PluginError::BadCall(format!(
                    "unknown lock failure action {v}"
                )));
            }
        })
    }
}

/// A resource libvirt added.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resource {
    /// A disk image or block device: its source path as written in the domain XML.
    Disk {
        /// The path.
        path: String,
        /// Exclusive, shared (`<shareable/>`) or read-only (`<readonly/>`; the daemon's
        /// `readonly_disk_leases` decides whether it gets a shared lease or none).
        mode: DiskMode,
    },
    /// A `<lease>` element: the lease file `<path>/<lockspace>/<key>`, taken exclusively,
    /// as lockd takes it (offset 0, a lockspace given; checked when it is added).
    Lease {
        /// The lease file.
        file: String,
    },
}

/// What an acquire asks of the daemon.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcquirePlan {
    /// In the forked child, before exec: no lock, only make sure the daemon is there (so a
    /// start without a daemon fails before QEMU runs). Locks are taken when the CPUs start,
    /// so that an incoming migration's destination does not lock before the source let go.
    Register,
    /// Take these disks for the owner, all or none. Empty: nothing to do.
    Disks(Vec<DiskRequest>),
}

/// The lock manager object of one domain, for one operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    /// The domain's uuid.
    pub uuid: uuid::Uuid,
    /// Its name.
    pub name: String,
    /// Its id (-1 as unsigned when not running).
    pub id: u32,
    /// The QEMU process.
    pub pid: u32,
    /// `NEW_STARTED`: created in the child of a fresh start.
    pub started: bool,
    /// The resources added, in order.
    pub resources: Vec<Resource>,
    /// A read-write exclusive disk was added while `auto_disk_leases = 0` (it gets no
    /// lease; `require_lease_for_disks` then wants a `<lease>`).
    pub unleased_rw_disk: bool,
    /// The URI of the libvirt driver that runs the domain (`uri`), for `on_lockfailure`
    /// pause.
    pub uri: Option<String>,
}

impl Domain {
    /// `drvNew`: the object from libvirt's parameters (`uuid`, `name`, `id`, `pid`, `uri`).
    /// Unknown parameters are ignored, so a later libvirt may add some.
    pub fn new(object_type: u32, params: &[Param], flags: u32) -> Result<Domain, PluginError> {
        if object_type != OBJECT_TYPE_DOMAIN {
            return Err(PluginError::BadCall(format!(
                "unknown lock manager object type {object_type}"
            )));
        }
        check_flags("drvNew", flags, NEW_STARTED)?;
        let find = |k: &str| params.iter().find(|p| p.key == k).map(|p| &p.value);
        let missing = |k: &str| PluginError::BadCall(format!("missing or mistyped parameter {k}"));
        let uuid = match find("uuid") {
            Some(ParamValue::Uuid(b)) => uuid::Uuid::from_bytes(*b),
            _ => return Err(missing("uuid")),
        };
        let name = find("name")
            .and_then(ParamValue::as_str)
            .ok_or_else(|| missing("name"))?
            .to_owned();
        let pid = find("pid")
            .and_then(ParamValue::as_u32)
            .filter(|&p| p > 0)
            .ok_or_else(|| missing("pid"))?;
        let id = find("id").and_then(ParamValue::as_u32).unwrap_or(u32::MAX);
        let uri = find("uri").and_then(ParamValue::as_str).map(str::to_owned);
        Ok(Domain {
            uuid,
            name,
            id,
            pid,
            started: flags & NEW_STARTED != 0,
            resources: Vec::new(),
            unleased_rw_disk: false,
            uri,
        })
    }

    /// The owner the daemon records: the QEMU pid, named by the domain.
    pub fn owner(&self) -> Owner {
        Owner {
            name: self.name.clone(),
            uuid: self.uuid.hyphenated().to_string(),
            pid: self.pid,
        }
    }

    /// `drvAddResource`.
    pub fn add_resource(
        &mut self,
        rtype: u32,
        name: &str,
        params: &[Param],
        flags: u32,
        config: &PluginConfig,
    ) -> Result<(), PluginError> {
        check_flags("drvAddResource", flags, RESOURCE_READONLY | RESOURCE_SHARED)?;
        match rtype {
            RESOURCE_TYPE_DISK => {
                let mode = if flags & RESOURCE_READONLY != 0 {
                    DiskMode::Readonly
                } else if flags & RESOURCE_SHARED != 0 {
                    DiskMode::Shared
                } else {
                    DiskMode::Exclusive
                };
                if !config.auto_disk_leases {
                    self.unleased_rw_disk |= mode == DiskMode::Exclusive;
                    return Ok(());
                }
                self.resources.push(Resource::Disk {
                    path: name.to_owned(),
                    mode,
                });
            }
            RESOURCE_TYPE_LEASE => {
                let find = |k: &str| params.iter().find(|p| p.key == k).map(|p| &p.value);
                let path = find("path")
                    .and_then(ParamValue::as_str)
                    .ok_or_else(|| PluginError::BadCall("a lease without a path".into()))?;
                let offset = match find("offset") {
                    None => 0,
                    Some(v) => v.as_u64().ok_or_else(|| {
                        PluginError::BadCall("a lease offset of another type".into())
                    })?,
                };
                let invalid = |why: &str| PluginError::LeaseInvalid {
                    key: name.to_owned(),
                    why: why.to_owned(),
                };
                if offset != 0 {
                    return Err(invalid(
                        "the offset must be 0: the lease is the whole file, as with lockd",
                    ));
                }
                let lockspace = find("lockspace")
                    .and_then(ParamValue::as_str)
                    .ok_or_else(|| invalid("a <lockspace> is needed, as with lockd"))?;
                self.resources.push(Resource::Lease {
                    file: format!("{}/{lockspace}/{name}", path.trim_end_matches('/')),
                });
            }
            t => return Err(PluginError::BadCall(format!("unknown resource type {t}"))),
        }
        Ok(())
    }

    /// `drvAcquire`: what to ask of the daemon.
    pub fn acquire_plan(
        &self,
        flags: u32,
        config: &PluginConfig,
    ) -> Result<AcquirePlan, PluginError> {
        check_flags(
            "drvAcquire",
            flags,
            ACQUIRE_REGISTER_ONLY | ACQUIRE_RESTRICT,
        )?;
        if self.unleased_rw_disk && config.require_lease_for_disks {
            return Err(PluginError::LeaseRequired);
        }
        if flags & ACQUIRE_REGISTER_ONLY != 0 {
            return Ok(AcquirePlan::Register);
        }
        let mut disks: Vec<DiskRequest> = Vec::new();
        for r in &self.resources {
            let (path, mode, lease) = match r {
                Resource::Disk { path, mode } => (path, *mode, false),
                Resource::Lease { file } => (file, DiskMode::Exclusive, true),
            };
            // One disk named twice in one mode is one request (the daemon counts a
            // request's disks once); the holds count each naming.
            if !disks.iter().any(|d| d.path == *path && d.mode == mode) {
                disks.push(DiskRequest {
                    path: path.clone(),
                    mode,
                    lease,
                });
            }
        }
        Ok(AcquirePlan::Disks(disks))
    }

    /// `drvRelease` and `drvInquire` take no flags.
    pub fn check_no_flags(callback: &str, flags: u32) -> Result<(), PluginError> {
        check_flags(callback, flags, 0)
    }

    /// The disks added, each as often as it was added.
    pub fn disks(&self) -> impl Iterator<Item = (&str, DiskMode)> + Clone {
        self.resources.iter().map(|r| match r {
            Resource::Disk { path, mode } => (path.as_str(), *mode),
            Resource::Lease { file } => (file.as_str(), DiskMode::Exclusive),
        })
    }
}

/// libvirt's `virCheckFlags`: a flag this plugin does not know is refused, never ignored.
fn check_flags(callback: &str, flags: u32, known: u32) -> Result<(), PluginError> {
    if flags & !known != 0 {
        return Err(PluginError::BadCall(format!(
            "unsupported flags (0x{:x}) in {callback}",
            flags & !known
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(pid: u32) -> Vec<Param> {
        vec![
            Param {
                key: "uuid".into(),
                value: ParamValue::Uuid([7; 16]),
            },
            Param {
                key: "name".into(),
                value: ParamValue::Str(Some("web1".into())),
            },
            Param {
                key: "id".into(),
                value: ParamValue::Int(3),
            },
            Param {
                key: "pid".into(),
                value: ParamValue::Int(i32::try_from(pid).unwrap()),
            },
            Param {
                key: "uri".into(),
                value: ParamValue::Str(None),
            },
        ]
    }

    #[test]
    fn the_owner_is_the_qemu_pid_named_by_the_domain() {
        let d = Domain::new(0, &params(42), NEW_STARTED).unwrap();
        assert!(d.started);
        assert_eq!(d.id, 3);
        let o = d.owner();
        assert_eq!(o.name, "web1");
        assert_eq!(o.uuid, "07070707-0707-0707-0707-070707070707");
        assert_eq!(o.pid, 42);
    }

    #[test]
    fn unknown_params_are_ignored_missing_ones_refused() {
        let mut p = params(42);
        p.push(Param {
            key: "future".into(),
            value: ParamValue::Double(1.5),
        });
        Domain::new(0, &p, 0).unwrap();
        for k in ["uuid", "name", "pid"] {
            let p: Vec<Param> = params(42).into_iter().filter(|p| p.key != k).collect();
            let e = Domain::new(0, &p, 0).unwrap_err().to_string();
            assert!(e.contains(k), "{e}");
        }
        assert!(Domain::new(0, &params(0), 0).is_err());
        assert!(Domain::new(1, &params(42), 0).is_err());
        assert!(Domain::new(0, &params(42), 2).is_err());
    }

    fn domain(config: &PluginConfig, disks: &[(&str, u32)]) -> Domain {
        let mut d = Domain::new(0, &params(42), 0).unwrap();
        for (path, flags) in disks {
            d.add_resource(RESOURCE_TYPE_DISK, path, &[], *flags, config)
                .unwrap();
        }
        d
    }

    #[test]
    fn disk_flags_give_the_mode() {
        let c = PluginConfig::default();
        let d = domain(
            &c,
            &[
                ("/a", 0),
                ("/b", RESOURCE_SHARED),
                ("/c", RESOURCE_READONLY),
                ("/d", RESOURCE_READONLY | RESOURCE_SHARED),
                ("/a", 0),
            ],
        );
        let AcquirePlan::Disks(disks) = d.acquire_plan(0, &c).unwrap() else {
            panic!("not disks")
        };
        let modes: Vec<(&str, DiskMode)> =
            disks.iter().map(|d| (d.path.as_str(), d.mode)).collect();
        assert_eq!(
            modes,
            [
                ("/a", DiskMode::Exclusive),
                ("/b", DiskMode::Shared),
                ("/c", DiskMode::Readonly),
                ("/d", DiskMode::Readonly),
            ]
        );
        assert_eq!(d.disks().count(), 5);
        let mut d = d;
        assert!(
            d.add_resource(RESOURCE_TYPE_DISK, "/e", &[], 4, &c)
                .is_err()
        );
        assert!(d.add_resource(7, "/e", &[], 0, &c).is_err());
    }

    #[test]
    fn the_child_registers_and_locks_nothing() {
        let c = PluginConfig::default();
        let d = domain(&c, &[("/a", 0)]);
        assert_eq!(
            d.acquire_plan(ACQUIRE_REGISTER_ONLY | ACQUIRE_RESTRICT, &c)
                .unwrap(),
            AcquirePlan::Register
        );
        assert!(d.acquire_plan(4, &c).is_err());
    }

    #[test]
    fn without_auto_disk_leases_disks_get_none_and_may_be_refused() {
        let c = PluginConfig::parse(std::path::Path::new("x"), "auto_disk_leases = 0\n").unwrap();
        let d = domain(&c, &[("/a", RESOURCE_SHARED), ("/b", RESOURCE_READONLY)]);
        assert_eq!(d.acquire_plan(0, &c).unwrap(), AcquirePlan::Disks(vec![]));
        let d = domain(&c, &[("/a", 0)]);
        assert!(matches!(
            d.acquire_plan(0, &c),
            Err(PluginError::LeaseRequired)
        ));
        assert!(matches!(
            d.acquire_plan(ACQUIRE_REGISTER_ONLY, &c),
            Err(PluginError::LeaseRequired)
        ));
        let c = PluginConfig {
            require_lease_for_disks: false,
            ..c
        };
        assert_eq!(d.acquire_plan(0, &c).unwrap(), AcquirePlan::Disks(vec![]));
    }

    #[test]
    fn leases_name_their_file_as_lockd_does() {
        let c = PluginConfig::default();
        let mut d = domain(&c, &[("/disk", 0)]);
        let param = |k: &str, v: ParamValue| Param {
            key: k.into(),
            value: v,
        };
        let path = param(
            "path",
            ParamValue::Str(Some("/var/lib/libvirt/leases/".into())),
        );
        let space = param("lockspace", ParamValue::Str(Some("space".into())));
        let zero = param("offset", ParamValue::ULong(0));
        d.add_resource(
            RESOURCE_TYPE_LEASE,
            "key1",
            &[path.clone(), zero, space.clone()],
            0,
            &c,
        )
        .unwrap();
        assert_eq!(
            d.acquire_plan(0, &c).unwrap(),
            AcquirePlan::Disks(vec![
                DiskRequest {
                    path: "/disk".into(),
                    mode: DiskMode::Exclusive,
                    lease: false,
                },
                DiskRequest {
                    path: "/var/lib/libvirt/leases/space/key1".into(),
                    mode: DiskMode::Exclusive,
                    lease: true,
                },
            ])
        );
        // As lockd: an offset other than 0, or no lockspace, is refused.
        let far = param("offset", ParamValue::ULong(1 << 20));
        let e = d
            .add_resource(
                RESOURCE_TYPE_LEASE,
                "k2",
                &[path.clone(), far, space],
                0,
                &c,
            )
            .unwrap_err();
        assert!(e.to_string().contains("offset must be 0"), "{e}");
        let e = d
            .add_resource(RESOURCE_TYPE_LEASE, "k3", &[path], 0, &c)
            .unwrap_err();
        assert!(e.to_string().contains("<lockspace>"), "{e}");
    }

    #[test]
    fn lock_failure_actions() {
        assert_eq!(
            LockFailureAction::from_raw(0).unwrap(),
            LockFailureAction::Default
        );
        assert_eq!(
            LockFailureAction::from_raw(3).unwrap(),
            LockFailureAction::Pause
        );
        assert!(LockFailureAction::from_raw(5).is_err());
    }
}
