//! The daemon's wire protocol: Varlink (NUL-terminated JSON objects over a Unix stream),
//! interface `io.disklock.Lease` (see `src/io.disklock.Lease.varlink`) plus the
//! `org.varlink.service` introspection calls.
//!
//! The same types serve the client and the server: [`Request::to_call`] and
//! [`Request::decode`], [`encode_failure`] and [`Failure::from_reply`], so the two
//! cannot drift apart. Replies are encoded straight from their types ([`encode_ok`],
//! [`encode_failure`]), never through a `Value` tree. No sockets here: framing is
//! [`Framer`] over bytes.

// A refusal is built once per refused request; its size does not matter.
#![allow(clippy::result_large_err)]

use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::table::LeaseView;
use crate::lockspace::{Holder, LockInfo, Owner};

/// The interface name.
pub const INTERFACE: &str = "io.disklock.Lease";
/// The protocol number of this interface; bumped only with a new interface name.
pub const PROTOCOL: u32 = 1;
/// The largest request the daemon accepts, NUL excluded.
pub const MAX_MESSAGE: usize = 64 * 1024;
/// Disks in one `Acquire`. Lower than what the message limit allows, so that it is a limit
/// a client can meet: a call of this many exclusive disks whose paths are up to 30 bytes
/// long fits in [`MAX_MESSAGE`] (a test checks it).
pub const MAX_DISKS: usize = 1024;
/// The largest reply a client accepts: `Status` lists every lease (about 1 KiB each).
pub const MAX_REPLY: usize = 256 * 1024 * 1024;
/// The description of [`INTERFACE`], served by `org.varlink.service.GetInterfaceDescription`.
pub const DESCRIPTION: &str = include_str!("../io.disklock.Lease.varlink");

/// The Varlink service interface, which every Varlink service serves.
const SERVICE: &str = "org.varlink.service";
/// Its description, served as [`DESCRIPTION`] is.
pub const SERVICE_DESCRIPTION: &str = include_str!("../org.varlink.service.varlink");

/// The description of an interface this daemon serves (each one [`Info::interfaces`] lists).
pub fn description(interface: &str) -> Option<&'static str> {
    match interface {
        INTERFACE => Some(DESCRIPTION),
        SERVICE => Some(SERVICE_DESCRIPTION),
        _ => None,
    }
}

/// `org.varlink.service.GetInterfaceDescription` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DescriptionReply<'a> {
    /// The interface definition.
    pub description: &'a str,
}

/// A Varlink call as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// `interface.Method`.
    pub method: String,
    /// The parameters object.
    #[serde(default)]
    pub parameters: Value,
    /// No reply wanted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oneway: bool,
    /// Streaming replies wanted (not supported: answered with one reply).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
}

/// A Varlink reply as it travels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The reply's (or error's) parameters.
    #[serde(default)]
    pub parameters: Value,
    /// The error name, for an error reply.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// How a disk is to be held.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskMode {
    /// Exclusive lease.
    Exclusive,
    /// Shared lease.
    Shared,
    /// Read-only: shared lease or none, per `readonly_disk_leases`.
    Readonly,
}

/// One disk to acquire.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DiskRequest {
    /// The disk path (absolute: the client resolves relative paths against its own cwd).
    pub path: String,
    /// How to hold it.
    pub mode: DiskMode,
    /// `path` is not a disk but a lease file named directly (`<dir>/<key>`, as libvirt's
    /// `<lease>` elements name one): it is taken as it is, without resolving a disk. Root
    /// clients only, as it names any directory.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub lease: bool,
}

/// `Acquire` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireParams {
    /// The disks.
    pub disks: Vec<DiskRequest>,
    /// For whom.
    pub owner: Owner,
    /// Take a disk reserved by another host's key from it (PREEMPT AND ABORT, or PREEMPT
    /// where the target lacks it).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub preempt: bool,
    /// Persistent reservations for these disks: `false` skips them, `true` requires them,
    /// absent follows the daemon's configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pr: Option<bool>,
    /// What to do to the owner if one of its leases is lost (absent: as before, or log only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub on_lost: Option<OnLost>,
}

/// What the daemon does to an owner when one of its leases is lost: the lease file no
/// longer at its path, or the disk's reservation taken by another host.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OnLost {
    /// The action.
    pub action: LostAction,
    /// For `pause`: the libvirt URI of the hypervisor that runs the owner, a domain whose
    /// uuid is the owner's uuid (what the libvirt plugin registers).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uri: Option<String>,
}

/// The actions of [`OnLost`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LostAction {
    /// SIGKILL the owner process (libvirt's `poweroff`): it can write no more.
    Kill,
    /// Suspend the owner's domain through libvirt (`virsh suspend`); root clients only.
    Pause,
    /// Log only.
    Ignore,
}

impl LostAction {
    /// Its wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            LostAction::Kill => "kill",
            LostAction::Pause => "pause",
            LostAction::Ignore => "ignore",
        }
    }
}

/// `Acquire` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquireReply {
    /// The leases now held for the owner.
    pub leases: Vec<LeaseView>,
    /// Read-only disks that got no lease (`readonly_disk_leases = 0`).
    #[serde(default)]
    pub skipped: Vec<String>,
}

/// `Release` parameters.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseParams {
    /// The disks.
    pub disks: Vec<String>,
    /// Only this owner's hold (uuid); all owners when absent.
    #[serde(default)]
    pub owner: Option<String>,
}

/// `ReleaseOwner` parameters.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseOwnerParams {
    /// Owner name.
    #[serde(default)]
    pub name: Option<String>,
    /// Owner uuid.
    #[serde(default)]
    pub uuid: Option<String>,
}

/// `Status` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// Every lease.
    pub leases: Vec<LeaseView>,
}

/// An [`AcquireReply`] or a [`StatusReply`] as the daemon writes it: `leases` is a
/// [`super::table::Listing`], serialized straight from the lease table.
#[derive(Serialize)]
pub struct LeasesReply<'a, L> {
    /// The leases.
    pub leases: L,
    /// `AcquireReply::skipped`; absent from a `StatusReply`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub skipped: Option<&'a [String]>,
}

/// `Version` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionReply {
    /// disklock's version.
    pub version: String,
    /// [`PROTOCOL`].
    pub protocol: u32,
}

/// A request, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// `io.disklock.Lease.Version`.
    Version,
    /// `io.disklock.Lease.Acquire`.
    Acquire(AcquireParams),
    /// `io.disklock.Lease.Release`.
    Release(ReleaseParams),
    /// `io.disklock.Lease.ReleaseOwner`.
    ReleaseOwner(ReleaseOwnerParams),
    /// `io.disklock.Lease.Status`.
    Status,
    /// `org.varlink.service.GetInfo`.
    GetInfo,
    /// `org.varlink.service.GetInterfaceDescription`.
    GetInterfaceDescription {
        /// The interface asked for.
        interface: String,
    },
}

#[derive(Deserialize)]
struct InterfaceParam {
    interface: String,
}

impl Request {
    /// The call for this request.
    pub fn to_call(&self) -> Call {
        let (m, p) = match self {
            Request::Version => ("Version", Value::Object(Default::default())),
            Request::Acquire(p) => ("Acquire", to_value(p)),
            Request::Release(p) => ("Release", to_value(p)),
            Request::ReleaseOwner(p) => ("ReleaseOwner", to_value(p)),
            Request::Status => ("Status", Value::Object(Default::default())),
            Request::GetInfo => {
                return Call {
                    method: format!("{SERVICE}.GetInfo"),
                    parameters: Value::Object(Default::default()),
                    oneway: false,
                    more: false,
                };
            }
            Request::GetInterfaceDescription { interface } => {
                return Call {
                    method: format!("{SERVICE}.GetInterfaceDescription"),
                    parameters: serde_json::json!({ "interface": interface }),
                    oneway: false,
                    more: false,
                };
            }
        };
        Call {
            method: format!("{INTERFACE}.{m}"),
            parameters: p,
            oneway: false,
            more: false,
        }
    }

    /// Decodes a message as it arrives (NUL stripped) into the request and whether it is
    /// oneway. The parameters are parsed straight into their types, never through a `Value`
    /// tree.
    pub fn decode(msg: &[u8]) -> Result<(Request, bool), Rejected> {
        let call: InCall<'_> =
            serde_json::from_slice(msg).map_err(|e| Rejected::NotACall(e.to_string()))?;
        let req = Request::dispatch(&call.method, call.parameters).map_err(|(failure, why)| {
            Rejected::Call {
                failure,
                oneway: call.oneway,
                why,
            }
        })?;
        if call.upgrade {
            // Varlink's way to say that a method is not served as the call asks.
            return Err(Rejected::Call {
                failure: Failure::MethodNotImplemented {
                    method: call.method.into_owned(),
                },
                oneway: call.oneway,
                why: None,
            });
        }
        Ok((req, call.oneway))
    }

    fn dispatch(
        method: &str,
        params: Option<&RawValue>,
    ) -> Result<Request, (Failure, Option<String>)> {
        let (iface, name) = method.rsplit_once('.').ok_or_else(|| {
            let f = Failure::InterfaceNotFound {
                interface: method.to_owned(),
            };
            (f, None)
        })?;
        let bad = |b: BadParameter| {
            (
                Failure::InvalidParameter {
                    parameter: b.parameter,
                },
                Some(b.why),
            )
        };
        match (iface, name) {
            (INTERFACE, "Version") => Ok(Request::Version),
            (INTERFACE, "Status") => Ok(Request::Status),
            (INTERFACE, "Acquire") => parse(params).map(Request::Acquire).map_err(bad),
            (INTERFACE, "Release") => parse(params).map(Request::Release).map_err(bad),
            (INTERFACE, "ReleaseOwner") => parse(params).map(Request::ReleaseOwner).map_err(bad),
            (SERVICE, "GetInfo") => Ok(Request::GetInfo),
            (SERVICE, "GetInterfaceDescription") => parse::<InterfaceParam>(params)
                .map(|p| Request::GetInterfaceDescription {
                    interface: p.interface,
                })
                .map_err(bad),
            (INTERFACE | SERVICE, _) => Err((
                Failure::MethodNotFound {
                    method: method.to_owned(),
                },
                None,
            )),
            _ => Err((
                Failure::InterfaceNotFound {
                    interface: iface.to_owned(),
                },
                None,
            )),
        }
    }
}

/// Why a message is not served.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejected {
    /// Not a Varlink call at all (not JSON, not an object, no method): a protocol error,
    /// after which the daemon closes the connection, as Varlink services do. Why, for the log.
    NotACall(String),
    /// A call answered with an error (unless it is oneway).
    Call {
        /// The error.
        failure: Failure,
        /// Whether the call was oneway (no reply).
        oneway: bool,
        /// What is wrong with the parameter an `InvalidParameter` names, for the log: the
        /// error itself carries only the parameter's name.
        why: Option<String>,
    },
}

/// A parameter that does not decode: its name as Varlink's `InvalidParameter` carries it
/// (`disks`, `owner.pid`, `disks[2].mode`), and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadParameter {
    /// Its name: the path to it from the parameters object.
    pub parameter: String,
    /// Why it does not decode.
    pub why: String,
}

/// A call as the daemon reads it: the method borrowed (unless it has escapes) and the
/// parameters kept as raw JSON, parsed once the method says into what.
#[derive(Deserialize)]
struct InCall<'a> {
    #[serde(borrow)]
    method: std::borrow::Cow<'a, str>,
    #[serde(default, borrow)]
    parameters: Option<&'a RawValue>,
    #[serde(default)]
    oneway: bool,
    // `more` is accepted and answered with one reply, as `Call` documents.
    #[serde(default, rename = "more")]
    _more: bool,
    /// A connection upgrade (the connection then speaks the method's own protocol): no
    /// method here has one, so such a call is refused, not served as a plain one.
    #[serde(default)]
    upgrade: bool,
}

/// A call's parameters, absent or null being an empty object.
fn parse<T: serde::de::DeserializeOwned>(raw: Option<&RawValue>) -> Result<T, BadParameter> {
    let text = match raw.map(RawValue::get) {
        None | Some("null") => "{}",
        Some(raw) => raw,
    };
    serde_json::from_str(text).map_err(|_| bad_parameter::<T>(text))
}

/// Which parameter of `text` does not decode as a `T`, and why. Only a bad call gets here:
/// it is decoded a second time, tracking the path to where it fails.
fn bad_parameter<T: serde::de::DeserializeOwned>(text: &str) -> BadParameter {
    let de = &mut serde_json::Deserializer::from_str(text);
    let Err(e) = serde_path_to_error::deserialize::<_, T>(de) else {
        return BadParameter {
            parameter: "parameters".into(),
            why: "does not decode the first time, but does the second".into(),
        };
    };
    let why = e.inner().to_string();
    let at = e.path().to_string();
    let at = if at == "." { "" } else { at.as_str() };
    // A missing field is reported at the object that lacks it: name the field.
    let missing = why
        .strip_prefix("missing field `")
        .and_then(|rest| rest.split('`').next());
    let parameter = match (at, missing) {
        // Parameters that are no object (serde reads a struct from an array, too).
        (at, _) if at.starts_with('[') => "parameters".to_owned(),
        ("", Some(field)) => field.to_owned(),
        (at, Some(field)) => format!("{at}.{field}"),
        ("", None) => "parameters".to_owned(),
        (at, None) => at.to_owned(),
    };
    BadParameter { parameter, why }
}

fn to_value<T: Serialize>(v: &T) -> Value {
    // Plain data with string keys always serializes.
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// `org.varlink.service.GetInfo` reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Info {
    /// Vendor.
    pub vendor: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// Where to read more.
    pub url: String,
    /// Interfaces served.
    pub interfaces: Vec<String>,
}

impl Info {
    /// This daemon's.
    pub fn this() -> Info {
        Info {
            vendor: "disklock".into(),
            product: "disklock".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            url: String::new(),
            interfaces: vec![SERVICE.into(), INTERFACE.into()],
        }
    }
}

/// An error reply: the `io.disklock.Lease` errors and the Varlink service's own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "error", content = "parameters")]
pub enum Failure {
    /// Someone else holds the disk's lease.
    #[serde(rename = "io.disklock.Lease.Busy")]
    #[error("{disk}: busy: {message}")]
    Busy {
        /// The disk.
        disk: String,
        /// Its key.
        key: String,
        /// The lease file.
        lease: String,
        /// Holder records.
        holders: Vec<Holder>,
        /// The kernel's view of the lock.
        #[serde(default)]
        lock: Option<LockInfo>,
        /// Who holds it, in one line.
        message: String,
    },
    /// The disk could not be resolved.
    #[serde(rename = "io.disklock.Lease.UnknownDisk")]
    #[error("{disk}: {reason}")]
    UnknownDisk {
        /// The disk.
        disk: String,
        /// Why.
        reason: String,
    },
    /// The lease file or lockspace could not be used.
    #[serde(rename = "io.disklock.Lease.LeaseFailed")]
    #[error("{disk}: {reason}")]
    LeaseFailed {
        /// The disk.
        disk: String,
        /// Why.
        reason: String,
    },
    /// A bad owner.
    #[serde(rename = "io.disklock.Lease.InvalidOwner")]
    #[error("{reason}")]
    InvalidOwner {
        /// Why.
        reason: String,
    },
    /// Not allowed.
    #[serde(rename = "io.disklock.Lease.PermissionDenied")]
    #[error("permission denied: {reason}")]
    PermissionDenied {
        /// Why.
        reason: String,
    },
    /// A message over [`MAX_MESSAGE`].
    #[serde(rename = "io.disklock.Lease.RequestTooLarge")]
    #[error("request larger than {limit} bytes")]
    RequestTooLarge {
        /// The limit.
        limit: u64,
    },
    /// The daemon is stopping.
    #[serde(rename = "io.disklock.Lease.ShuttingDown")]
    #[error("the daemon is shutting down")]
    ShuttingDown {},
    /// Varlink: no such interface.
    #[serde(rename = "org.varlink.service.InterfaceNotFound")]
    #[error("interface {interface} not found")]
    InterfaceNotFound {
        /// The interface.
        interface: String,
    },
    /// Varlink: no such method.
    #[serde(rename = "org.varlink.service.MethodNotFound")]
    #[error("method {method} not found")]
    MethodNotFound {
        /// The method.
        method: String,
    },
    /// Varlink: the method exists but is not served as called (a connection upgrade).
    #[serde(rename = "org.varlink.service.MethodNotImplemented")]
    #[error("method {method} is not implemented as called (this daemon upgrades no connection)")]
    MethodNotImplemented {
        /// The method.
        method: String,
    },
    /// Varlink: a parameter is missing, has the wrong type or a value the daemon does not
    /// accept. Why is in the daemon's log; the client explains what it can.
    #[serde(rename = "org.varlink.service.InvalidParameter")]
    #[error("invalid parameter {parameter}: {}", explain_parameter(.parameter))]
    InvalidParameter {
        /// Its name (`disks`, `owner.pid`).
        parameter: String,
    },
}

/// What an `InvalidParameter` of this name means to a user of the CLI, which sends only
/// well-formed calls: the values the daemon refuses.
fn explain_parameter(parameter: &str) -> String {
    match parameter {
        "disks" => format!("one request names 1 to {MAX_DISKS} disks"),
        "pr" => "a disk cannot get a persistent reservation (persistent_reservations = 0 in the \
                 daemon's configuration, or a disk without a SCSI or NVMe key, or one in \
                 pr_exclude; the daemon's log names it)"
            .to_owned(),
        "name" | "uuid" => "releasing owners needs an owner name or uuid".to_owned(),
        _ => "the daemon's log says why".to_owned(),
    }
}

impl Failure {
    /// The exit code of a command the daemon refused.
    pub fn code(&self) -> crate::exit::Code {
        use crate::exit::Code;
        match self {
            Failure::Busy { .. } => Code::Busy,
            Failure::InterfaceNotFound { .. }
            | Failure::MethodNotFound { .. }
            | Failure::MethodNotImplemented { .. }
            | Failure::InvalidParameter { .. }
            | Failure::RequestTooLarge { .. } => Code::Usage,
            _ => Code::Partial,
        }
    }

    /// The reply that carries this error (what [`encode_failure`] puts on the wire).
    #[cfg(test)]
    pub fn to_reply(&self) -> Reply {
        let v = to_value(self);
        Reply {
            error: v.get("error").and_then(Value::as_str).map(str::to_owned),
            parameters: v.get("parameters").cloned().unwrap_or(Value::Null),
        }
    }

    /// Decodes an error reply; `None` for an error this client does not know.
    pub fn from_reply(r: &Reply) -> Option<Failure> {
        let params = match &r.parameters {
            Value::Null => Value::Object(Default::default()),
            v => v.clone(),
        };
        serde_json::from_value(serde_json::json!({ "error": r.error, "parameters": params })).ok()
    }
}

/// A reply's success parameters (what [`encode_ok`] puts on the wire).
#[cfg(test)]
pub fn ok_reply<T: Serialize>(v: &T) -> Reply {
    Reply {
        parameters: to_value(v),
        error: None,
    }
}

/// Encodes a success reply straight from its parameters, as [`ok_reply`] would carry them
/// (without building a JSON `Value` tree first: the daemon's hot path).
pub fn encode_ok<T: Serialize>(params: &T) -> Vec<u8> {
    #[derive(Serialize)]
    struct Ok<'a, T> {
        parameters: &'a T,
    }
    encode(&Ok { parameters: params })
}

/// Encodes an error reply. A [`Failure`] serializes as `{"error": …, "parameters": …}`,
/// which is the Varlink error reply itself.
pub fn encode_failure(f: &Failure) -> Vec<u8> {
    encode(f)
}

/// Encodes a message: JSON and a NUL.
pub fn encode<T: Serialize>(msg: &T) -> Vec<u8> {
    // Room for an acquire's reply (about 600 bytes a lease) without regrowing.
    let mut v = Vec::with_capacity(1024);
    if serde_json::to_writer(&mut v, msg).is_err() {
        v.clear();
    }
    v.push(0);
    v
}

/// Splits a byte stream into NUL-terminated messages of bounded size.
#[derive(Debug)]
pub struct Framer {
    buf: Vec<u8>,
    limit: usize,
}

impl Default for Framer {
    /// A framer for requests: at most [`MAX_MESSAGE`] bytes.
    fn default() -> Framer {
        Framer::new(MAX_MESSAGE)
    }
}

/// A framing failure: the peer sent a message over the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("message larger than {0} bytes")]
pub struct TooLarge(pub usize);

impl Framer {
    /// A framer for messages of at most `limit` bytes.
    pub fn new(limit: usize) -> Framer {
        Framer {
            buf: Vec::new(),
            limit,
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next whole message, if one has arrived.
    pub fn next_message(&mut self) -> Result<Option<Vec<u8>>, TooLarge> {
        match self.buf.iter().position(|&b| b == 0) {
            Some(n) if n > self.limit => Err(TooLarge(self.limit)),
            Some(n) => {
                let msg = self.buf[..n].to_vec();
                self.buf.drain(..=n);
                Ok(Some(msg))
            }
            None if self.buf.len() > self.limit => Err(TooLarge(self.limit)),
            None => Ok(None),
        }
    }

    /// Bytes of an unfinished message.
    pub fn pending(&self) -> usize {
        self.buf.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner() -> Owner {
        Owner {
            name: "vm".into(),
            uuid: "u".into(),
            pid: 7,
        }
    }

    #[test]
    fn requests_round_trip() {
        let reqs = [
            Request::Version,
            Request::Status,
            Request::GetInfo,
            Request::GetInterfaceDescription {
                interface: INTERFACE.into(),
            },
            Request::Acquire(AcquireParams {
                disks: vec![DiskRequest {
                    path: "/d".into(),
                    mode: DiskMode::Readonly,
                    lease: false,
                }],
                owner: owner(),
                preempt: false,
                pr: None,
                on_lost: None,
            }),
            Request::Acquire(AcquireParams {
                disks: vec![DiskRequest {
                    path: "/d".into(),
                    mode: DiskMode::Exclusive,
                    lease: false,
                }],
                owner: owner(),
                preempt: true,
                pr: Some(false),
                on_lost: Some(OnLost {
                    action: LostAction::Pause,
                    uri: Some("qemu:///system".into()),
                }),
            }),
            Request::Release(ReleaseParams {
                disks: vec!["/d".into()],
                owner: Some("u".into()),
            }),
            Request::ReleaseOwner(ReleaseOwnerParams {
                name: Some("vm".into()),
                uuid: None,
            }),
        ];
        for r in reqs {
            let bytes = encode(&r.to_call());
            assert_eq!(bytes.last(), Some(&0));
            assert_eq!(
                Request::decode(&bytes[..bytes.len() - 1]).unwrap(),
                (r, false)
            );
        }
    }

    #[test]
    fn wire_shape() {
        let call = Request::Acquire(AcquireParams {
            disks: vec![DiskRequest {
                path: "/d".into(),
                mode: DiskMode::Shared,
                lease: false,
            }],
            owner: owner(),
            preempt: false,
            pr: None,
            on_lost: None,
        })
        .to_call();
        assert_eq!(
            serde_json::to_string(&call).unwrap(),
            r#"{"method":"io.disklock.Lease.Acquire","parameters":{"disks":[{"mode":"shared","path":"/d"}],"owner":{"name":"vm","pid":7,"uuid":"u"}}}"#
        );
        let r = Failure::PermissionDenied {
            reason: "no".into(),
        }
        .to_reply();
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"parameters":{"reason":"no"},"error":"io.disklock.Lease.PermissionDenied"}"#
        );
        assert_eq!(
            Failure::from_reply(&r),
            Some(Failure::PermissionDenied {
                reason: "no".into()
            })
        );
        let r = Failure::ShuttingDown {}.to_reply();
        assert_eq!(Failure::from_reply(&r), Some(Failure::ShuttingDown {}));
        let unknown = Reply {
            parameters: Value::Null,
            error: Some("com.example.Other".into()),
        };
        assert_eq!(Failure::from_reply(&unknown), None);
    }

    /// The daemon's direct encoders write exactly the replies the `Reply` type describes.
    #[test]
    fn direct_encoding_matches_reply() {
        let decode = |b: &[u8]| -> Reply {
            assert_eq!(b.last(), Some(&0));
            serde_json::from_slice(&b[..b.len() - 1]).unwrap()
        };
        let v = VersionReply {
            version: "1".into(),
            protocol: PROTOCOL,
        };
        assert_eq!(decode(&encode_ok(&v)), ok_reply(&v));
        for f in [
            Failure::ShuttingDown {},
            Failure::RequestTooLarge { limit: 5 },
            Failure::UnknownDisk {
                disk: "/d".into(),
                reason: "gone".into(),
            },
        ] {
            let r = decode(&encode_failure(&f));
            assert_eq!(r, f.to_reply());
            assert_eq!(Failure::from_reply(&r), Some(f));
        }
    }

    #[test]
    fn bad_calls() {
        let call = |m: &str, p: Value| {
            let bytes = serde_json::to_vec(&Call {
                method: m.into(),
                parameters: p,
                oneway: false,
                more: false,
            })
            .unwrap();
            Request::decode(&bytes)
                .map(|(r, _)| r)
                .map_err(|r| match r {
                    Rejected::Call { failure, .. } => failure,
                    r => panic!("{r:?}"),
                })
        };
        assert!(matches!(
            call("io.disklock.Lease.Nope", Value::Null),
            Err(Failure::MethodNotFound { .. })
        ));
        assert!(matches!(
            call("com.example.X", Value::Null),
            Err(Failure::InterfaceNotFound { .. })
        ));
        assert!(matches!(
            call("nodot", Value::Null),
            Err(Failure::InterfaceNotFound { .. })
        ));
        // A method without parameters accepts none, null or {}.
        assert_eq!(
            call("io.disklock.Lease.Status", serde_json::json!({})).unwrap(),
            Request::Status
        );
    }

    /// `InvalidParameter` names the parameter, as a path from the parameters object; why
    /// goes to the daemon's log.
    #[test]
    fn invalid_parameters_are_named() {
        let owner = serde_json::json!({"name": "vm", "uuid": "u", "pid": 7});
        let disk = serde_json::json!({"path": "/d", "mode": "shared"});
        for (method, params, name, why) in [
            (
                "Acquire",
                serde_json::json!({"disks": 5, "owner": owner}),
                "disks",
                "invalid type",
            ),
            (
                "Acquire",
                serde_json::json!({"disks": [disk]}),
                "owner",
                "missing field `owner`",
            ),
            ("Acquire", Value::Null, "disks", "missing field `disks`"),
            (
                "Acquire",
                serde_json::json!({"disks": [disk], "owner": {"name": "vm", "uuid": "u", "pid": "7"}}),
                "owner.pid",
                "invalid type: string",
            ),
            (
                "Acquire",
                serde_json::json!({"disks": [disk], "owner": {"name": "vm", "uuid": "u"}}),
                "owner.pid",
                "missing field `pid`",
            ),
            (
                "Acquire",
                serde_json::json!({"disks": [disk, {"path": "/e", "mode": "all"}], "owner": owner}),
                "disks[1].mode",
                "unknown variant `all`",
            ),
            (
                "Acquire",
                serde_json::json!({"disks": [disk], "owner": owner, "pr": "yes"}),
                "pr",
                "invalid type",
            ),
            (
                "Acquire",
                serde_json::json!([1]),
                "parameters",
                "invalid type",
            ),
            (
                "Release",
                serde_json::json!({"disks": [1]}),
                "disks[0]",
                "invalid type",
            ),
            (
                "ReleaseOwner",
                serde_json::json!({"uuid": 5}),
                "uuid",
                "invalid type",
            ),
        ] {
            let bytes = serde_json::to_vec(&serde_json::json!({
                "method": format!("{INTERFACE}.{method}"),
                "parameters": params,
            }))
            .unwrap();
            match Request::decode(&bytes) {
                Err(Rejected::Call {
                    failure: Failure::InvalidParameter { parameter },
                    oneway: false,
                    why: Some(w),
                }) => {
                    assert_eq!(parameter, name, "{params}");
                    assert!(w.starts_with(why), "{params}: {w}");
                }
                other => panic!("{params}: {other:?}"),
            }
        }
        let bytes = br#"{"method":"org.varlink.service.GetInterfaceDescription"}"#;
        assert!(matches!(
            Request::decode(bytes),
            Err(Rejected::Call { failure: Failure::InvalidParameter { parameter }, .. }) if parameter == "interface"
        ));
        // What a client prints: the name, and what the CLI can say about it.
        let f = Failure::InvalidParameter {
            parameter: "disks".into(),
        };
        assert_eq!(
            f.to_string(),
            format!("invalid parameter disks: one request names 1 to {MAX_DISKS} disks")
        );
        let f = Failure::InvalidParameter {
            parameter: "owner.pid".into(),
        };
        assert_eq!(
            f.to_string(),
            "invalid parameter owner.pid: the daemon's log says why"
        );
    }

    /// A call that asks for a connection upgrade is refused, naming the method, and not
    /// served as a plain call.
    #[test]
    fn upgrades_are_not_implemented() {
        let r = Request::decode(br#"{"method":"io.disklock.Lease.Status","upgrade":true}"#);
        assert_eq!(
            r,
            Err(Rejected::Call {
                failure: Failure::MethodNotImplemented {
                    method: "io.disklock.Lease.Status".into()
                },
                oneway: false,
                why: None,
            })
        );
        assert_eq!(
            Request::decode(br#"{"method":"io.disklock.Lease.Status","upgrade":false}"#),
            Ok((Request::Status, false))
        );
        // A method that does not exist is still that.
        assert!(matches!(
            Request::decode(br#"{"method":"io.disklock.Lease.Nope","upgrade":true}"#),
            Err(Rejected::Call {
                failure: Failure::MethodNotFound { .. },
                ..
            })
        ));
    }

    #[test]
    fn decode_reads_the_call_as_sent() {
        // Escapes in the method, explicit null parameters, `more` accepted.
        assert_eq!(
            Request::decode(
                br#"{"method":"io.disklock.Lease.Vers\u0069on","parameters":null,"more":true}"#
            ),
            Ok((Request::Version, false))
        );
        assert_eq!(
            Request::decode(br#"{"oneway":true,"method":"io.disklock.Lease.Release","parameters":{"disks":["/d"]}}"#),
            Ok((
                Request::Release(ReleaseParams {
                    disks: vec!["/d".into()],
                    owner: None,
                }),
                true
            ))
        );
        // A bad call that is a call keeps its oneway flag; what is no call is a protocol
        // error.
        assert!(matches!(
            Request::decode(br#"{"method":"io.disklock.Lease.Acquire","oneway":true}"#),
            Err(Rejected::Call {
                failure: Failure::InvalidParameter { .. },
                oneway: true,
                ..
            })
        ));
        for junk in [
            &b""[..],
            b"[]",
            b"{",
            b"{\"method\":5}",
            b"\xff",
            b"{\"oneway\":true}",
        ] {
            assert!(
                matches!(Request::decode(junk), Err(Rejected::NotACall(_))),
                "{junk:?}"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
            let _ = Request::decode(&bytes);
        }

        #[test]
        fn decode_takes_any_disk_name(path in "\\PC{0,40}", shared: bool) {
            let r = Request::Acquire(AcquireParams {
                disks: vec![DiskRequest {
                    path,
                    mode: if shared { DiskMode::Shared } else { DiskMode::Exclusive },
                    lease: shared,
                }],
                owner: owner(),
                preempt: shared,
                pr: None,
                on_lost: None,
            });
            let bytes = encode(&r.to_call());
            proptest::prop_assert_eq!(Request::decode(&bytes[..bytes.len() - 1]), Ok((r, false)));
        }
    }

    /// The disk limit is reachable: a call of MAX_DISKS exclusive disks with paths of
    /// MAX_DISKS_PATH bytes fits in a message, and so does one more short one, so that the
    /// count, not the size, is what refuses it.
    #[test]
    fn the_disk_limit_fits_in_a_message() {
        const MAX_DISKS_PATH: usize = 30;
        let acquire = |n: usize, path: &str| {
            Request::Acquire(AcquireParams {
                disks: vec![
                    DiskRequest {
                        path: path.into(),
                        mode: DiskMode::Exclusive,
                        lease: false,
                    };
                    n
                ],
                owner: Owner {
                    name: "vm".into(),
                    uuid: "4f1c5a3e-9d2b-4c7a-8e6f-0123456789ab".into(),
                    pid: 4_194_304,
                },
                on_lost: None,
                preempt: true,
                pr: Some(true),
            })
        };
        let longest = format!("/{}", "d".repeat(MAX_DISKS_PATH - 1));
        let bytes = encode(&acquire(MAX_DISKS, &longest).to_call());
        assert!(bytes.len() - 1 <= MAX_MESSAGE, "{} bytes", bytes.len() - 1);
        let bytes = encode(&acquire(MAX_DISKS + 1, "/a").to_call());
        assert!(bytes.len() - 1 <= MAX_MESSAGE, "{} bytes", bytes.len() - 1);
    }

    #[test]
    fn framing() {
        let mut f = Framer::default();
        f.push(b"{\"a\":1}\0{\"b\"");
        assert_eq!(f.next_message().unwrap().unwrap(), b"{\"a\":1}");
        assert_eq!(f.next_message().unwrap(), None);
        assert_eq!(f.pending(), 4);
        f.push(b":2}\0");
        assert_eq!(f.next_message().unwrap().unwrap(), b"{\"b\":2}");
        let mut f = Framer::default();
        f.push(&vec![b'x'; MAX_MESSAGE + 1]);
        assert_eq!(f.next_message(), Err(TooLarge(MAX_MESSAGE)));
        let mut f = Framer::default();
        f.push(&vec![b'x'; MAX_MESSAGE]);
        assert_eq!(f.next_message(), Ok(None));
        f.push(b"\0");
        assert_eq!(f.next_message().unwrap().unwrap().len(), MAX_MESSAGE);
    }

    /// Fails unless `description` declares each of `items` as a `kind` (`method`,
    /// `error`): a line that starts `{kind} {item}`.
    fn assert_declares(description: &str, kind: &str, items: &[&str]) {
        for item in items {
            let line = format!("{kind} {item}");
            assert!(description.lines().any(|l| l.starts_with(&line)), "{line}");
        }
    }

    #[test]
    fn description_names_every_method_and_error() {
        assert!(DESCRIPTION.contains("interface io.disklock.Lease\n"));
        let methods = [
            "Version(",
            "Acquire(",
            "Release(",
            "ReleaseOwner(",
            "Status(",
        ];
        assert_declares(DESCRIPTION, "method", &methods);
        let errors = [
            "Busy (",
            "UnknownDisk (",
            "LeaseFailed (",
            "InvalidOwner (",
            "PermissionDenied (",
            "RequestTooLarge (",
            "ShuttingDown (",
        ];
        assert_declares(DESCRIPTION, "error", &errors);
    }

    /// Every interface GetInfo lists can be described, and the description is of that
    /// interface; the service interface has the methods and errors of the Varlink spec.
    #[test]
    fn every_interface_listed_is_described() {
        for i in Info::this().interfaces {
            let d = description(&i).unwrap_or_else(|| panic!("{i} has no description"));
            let named = d
                .lines()
                .find_map(|l| l.strip_prefix("interface "))
                .unwrap_or_else(|| panic!("{i}: no interface line"));
            assert_eq!(named, i);
        }
        assert_eq!(description("com.example.Nope"), None);
        let methods = [
            "GetInfo() -> (",
            "GetInterfaceDescription(interface: string) -> (description: string)",
        ];
        assert_declares(SERVICE_DESCRIPTION, "method", &methods);
        let errors = [
            "InterfaceNotFound (interface: string)",
            "MethodNotFound (method: string)",
            "MethodNotImplemented (method: string)",
            "InvalidParameter (parameter: string)",
            "PermissionDenied ()",
            "ExpectedMore ()",
        ];
        assert_declares(SERVICE_DESCRIPTION, "error", &errors);
    }
}
