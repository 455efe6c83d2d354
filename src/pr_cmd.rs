//! `disklock pr`: persistent reservations by hand, on every path of a disk.
//!
//! What `sg_persist` and `mpathpersist` do, with this host's key filled in, type names people
//! read, a multipath map's paths found and used together, and `--json` everywhere. The
//! commands go straight to the storage (no daemon); a disk the daemon holds is better left to
//! it (`check --repair` is the safe way to fix drift).

use std::ffi::{OsStr, OsString};

use anyhow::bail;
use disklock_naming::{PathKind, Resolution};
use disklock_scsi::pr::{FullStatus, PersistentReservations, PrType, ReservationKey};
use serde::Serialize;

use crate::cli::{FenceArgs, PrArgs, PrCommand};
use crate::exit::{Code, chain_std};
use crate::output::write_stdout;
use crate::output::{render, table};
use crate::pr::engine::{self, Drift, PrError};
use crate::pr::hostkey::{self, HostKey};
use crate::pr::{Handle, open_path};
use crate::settings::Settings;

/// A disk and its open paths.
pub struct Target {
    pub input: String,
    pub res: Resolution,
    pub paths: Vec<engine::Path<Handle>>,
}

/// Resolves `disk` and opens every path to its storage.
pub fn open_target(s: &Settings, disk: &OsStr) -> anyhow::Result<Target> {
    let input = disk.to_string_lossy().into_owned();
    let res = s
        .resolver
        .resolve_path(disk, &s.cwd)
        .map_err(|e| anyhow::anyhow!("{input}: {}", crate::output::error_text(disk, &e)))?;
    let Some(block) = &res.block else {
        bail!("{input}: a disk image file has no persistent reservations");
    };
    let storage = s
        .resolver
        .storage_paths(block.devno)
        .map_err(|e| anyhow::anyhow!("{input}: {}", chain_std(&e)))?;
    if storage.is_empty() {
        bail!(
            "{input}: {} has no storage of its own to reserve (an LVM or other device-mapper \
             volume): reserve the disk below it",
            block.name
        );
    }
    let mut paths = Vec::with_capacity(storage.len());
    for p in &storage {
        if p.kind == PathKind::Other {
            bail!(
                "{input}: {} is neither a SCSI disk nor an NVMe namespace: no persistent \
                 reservations",
                p.name
            );
        }
        match open_path(p) {
            Ok(Some(h)) => paths.push(h),
            Ok(None) => {}
            Err(e) => bail!("{input}: {}", chain_std(&e)),
        }
    }
    Ok(Target { input, res, paths })
}

#[derive(Serialize)]
struct KeyRow {
    #[serde(serialize_with = "crate::pr::serialize_key")]
    key: ReservationKey,
    host: Option<String>,
    this_host: bool,
    holder: Option<bool>,
    initiator: Option<String>,
    relative_target_port: Option<u16>,
}

#[derive(Serialize)]
struct ReservationOut {
    generation: u32,
    #[serde(serialize_with = "ser_opt_key")]
    holder: Option<ReservationKey>,
    #[serde(rename = "type")]
    kind: Option<&'static str>,
    type_code: Option<u8>,
    type_name: Option<&'static str>,
    host: Option<String>,
}

fn ser_opt_key<S: serde::Serializer>(k: &Option<ReservationKey>, s: S) -> Result<S::Ok, S::Error> {
    match k {
        Some(k) => s.collect_str(k),
        None => s.serialize_none(),
    }
}

/// Who a key belongs to, as far as this host can tell.
fn host_of(key: ReservationKey, ours: &HostKey) -> Option<String> {
    if key.0 == ours.key {
        return Some(format!("{} (this host)", hostname()));
    }
    hostkey::describe(key.0)
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "?".to_owned())
}

fn lead(t: &Target) -> &engine::Path<Handle> {
    // open_target refuses a disk without paths.
    &t.paths[0]
}

fn fail(t: &Target, e: PrError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}", t.input, chain_std(&e))
}

fn scsi_fail(t: &Target, e: disklock_scsi::ScsiError) -> anyhow::Error {
    anyhow::anyhow!("{}: {}: {}", t.input, lead(t).name, chain_std(&e))
}

fn print<T: Serialize>(json: bool, value: &T, text: impl FnOnce() -> String) -> anyhow::Result<()> {
    if json {
        let mut o = serde_json::to_string_pretty(value)?;
        o.push('\n');
        write_stdout(&o)
    } else {
        write_stdout(&text())
    }
}

/// A mistake in the command line: exit status 2, not 1.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

fn parse_type(text: &str) -> anyhow::Result<PrType> {
    text.parse::<PrType>()
        .map_err(|e| Usage(format!("--type {text:?}: {e}")).into())
}

fn key_arg(text: Option<&str>, ours: &HostKey) -> anyhow::Result<ReservationKey> {
    match text {
        None => Ok(ReservationKey(ours.key)),
        Some(t) => {
            let k: ReservationKey = t.parse().map_err(|e| Usage(format!("--key {t:?}: {e}")))?;
            if k.is_zero() {
                return Err(Usage(format!("--key {t:?}: 0 is not a reservation key")).into());
            }
            Ok(k)
        }
    }
}

/// Checks every option before any device is touched: a bad one is exit status 2.
fn check_usage(args: &PrArgs, ours: &HostKey) -> anyhow::Result<()> {
    let kind = |k: &Option<String>| k.as_deref().map(parse_type).transpose().map(|_| ());
    match &args.command {
        PrCommand::Register { key, .. } => key_arg(key.as_deref(), ours).map(|_| ()),
        PrCommand::Reserve { key, kind: k, .. } | PrCommand::Release { key, kind: k, .. } => {
            key_arg(key.as_deref(), ours)?;
            kind(k)
        }
        PrCommand::Preempt {
            victim, kind: k, ..
        } => {
            let v: ReservationKey = victim
                .parse()
                .map_err(|e| Usage(format!("--victim {victim:?}: {e}")))?;
            if v.0 == ours.key {
                return Err(
                    Usage(format!("--victim {victim}: that is this host's own key")).into(),
                );
            }
            kind(k)
        }
        PrCommand::Check { held, .. } => kind(held),
        _ => Ok(()),
    }
}

/// Runs a `disklock pr` command: exit 2 for a bad command line or configuration, 1 when the
/// disk or the storage failed, 3 for a reservation conflict.
pub fn run(s: &Settings, args: &PrArgs) -> anyhow::Result<Code> {
    let ours = crate::pr::host_key(s)?;
    check_usage(args, &ours)?;
    // What fails past the command line is the disk's or the storage's: exit 1, unless the
    // error says otherwise.
    run_with(s, args, &ours).map_err(|e| {
        if e.is::<crate::exit::Failed>() {
            e
        } else {
            crate::exit::failed(Code::Partial, crate::exit::chain(&e))
        }
    })
}

fn run_with(s: &Settings, args: &PrArgs, ours: &HostKey) -> anyhow::Result<Code> {
    let ours = ours.clone();
    let json = args.json;
    match &args.command {
        PrCommand::Key => {
            print(json, &ours, || {
                let mut t = String::new();
                t.push_str(&format!(
                    "{}  {}\n",
                    disklock_conf::format_host_key(ours.key),
                    ours.from
                ));
                t
            })?;
            Ok(Code::Ok)
        }
        PrCommand::Keys { disk } => keys(s, disk, &ours, json),
        PrCommand::Reservation { disk } => {
            let t = open_target(s, disk)?;
            let r = lead(&t)
                .dev
                .read_reservation()
                .map_err(|e| scsi_fail(&t, e))?;
            let out = reservation_out(&r, &ours);
            print(json, &out, || reservation_text(&out))?;
            Ok(Code::Ok)
        }
        PrCommand::Capabilities { disk } => {
            let t = open_target(s, disk)?;
            let Handle::Scsi(dev) = &lead(&t).dev else {
                bail!(
                    "{}: REPORT CAPABILITIES is a SCSI command; {} is not SCSI",
                    t.input,
                    lead(&t).name
                );
            };
            let c = dev.pr_report_capabilities().map_err(|e| scsi_fail(&t, e))?;
            let out = CapsOut::from(&c);
            print(json, &out, || out.text())?;
            Ok(Code::Ok)
        }
        PrCommand::Status { disk } => status(s, disk, &ours, json),
        PrCommand::Register {
            disk,
            key,
            aptpl,
            all_tg_pt,
        } => {
            let t = open_target(s, disk)?;
            let k = key_arg(key.as_deref(), &ours)?;
            if *aptpl || *all_tg_pt {
                let flags = disklock_scsi::pr::RegisterFlags {
                    ignore_existing: true,
                    aptpl: *aptpl,
                    all_tg_pt: *all_tg_pt,
                };
                for p in &t.paths {
                    p.dev.register(ReservationKey(0), k, flags).map_err(|e| {
                        anyhow::anyhow!("{}: {}: {}", t.input, p.name, chain_std(&e))
                    })?;
                }
            } else {
                engine::register_all(&t.paths, k).map_err(|e| fail(&t, e))?;
            }
            let extra = match (aptpl, all_tg_pt) {
                (true, true) => " (APTPL, ALL_TG_PT)",
                (true, false) => " (APTPL)",
                (false, true) => " (ALL_TG_PT)",
                (false, false) => "",
            };
            done(
                json,
                &t,
                format!("registered {k}{extra} on {}", path_names(&t)),
            )
        }
        PrCommand::Unregister { disk } => {
            let t = open_target(s, disk)?;
            engine::unregister_all(&t.paths).map_err(|e| fail(&t, e))?;
            done(json, &t, format!("unregistered on {}", path_names(&t)))
        }
        PrCommand::Reserve { disk, kind, key } => {
            let t = open_target(s, disk)?;
            let k = key_arg(key.as_deref(), &ours)?;
            let kind = kind
                .as_deref()
                .map_or_else(|| Ok(s.pr_exclusive), parse_type)?;
            match lead(&t).dev.reserve(k, kind) {
                Ok(()) => done(
                    json,
                    &t,
                    format!("reserved {} ({}) with {k}", kind.short(), kind.name()),
                ),
                Err(disklock_scsi::ScsiError::ReservationConflict { .. }) => {
                    let r = lead(&t)
                        .dev
                        .read_reservation()
                        .map_err(|e| scsi_fail(&t, e))?;
                    let holder = r.holder.map_or_else(
                        || "the key is not registered: run disklock pr register first".to_owned(),
                        |h| {
                            format!(
                                "reserved by {} ({})",
                                engine::key_label(h.key),
                                h.kind.name()
                            )
                        },
                    );
                    let why = format!("{}: reservation conflict: {holder}", t.input);
                    Err(crate::exit::failed(Code::Busy, why))
                }
                Err(e) => Err(scsi_fail(&t, e)),
            }
        }
        PrCommand::Release { disk, kind, key } => {
            let t = open_target(s, disk)?;
            let k = key_arg(key.as_deref(), &ours)?;
            let kind = match kind.as_deref() {
                Some(x) => parse_type(x)?,
                None => {
                    let r = lead(&t)
                        .dev
                        .read_reservation()
                        .map_err(|e| scsi_fail(&t, e))?;
                    match r.holder {
                        Some(h) => h.kind,
                        None => return done(json, &t, "nothing is reserved".to_owned()),
                    }
                }
            };
            lead(&t)
                .dev
                .release(k, kind)
                .map_err(|e| scsi_fail(&t, e))?;
            done(json, &t, format!("released {} with {k}", kind.short()))
        }
        PrCommand::Preempt {
            disk,
            victim,
            abort,
            kind,
        } => {
            let t = open_target(s, disk)?;
            let v: ReservationKey = victim
                .parse()
                .map_err(|e| Usage(format!("--victim {victim:?}: {e}")))?;
            let kind = kind
                .as_deref()
                .map_or_else(|| Ok(s.pr_exclusive), parse_type)?;
            let p = engine::preempt(&t.paths, ReservationKey(ours.key), v, kind, *abort)
                .map_err(|e| fail(&t, e))?;
            print(json, &p, || {
                format!(
                    "{}: preempted {} with {}{}; reserved {} ({})\n",
                    t.input,
                    engine::key_label(p.victim),
                    if p.aborted {
                        "PREEMPT AND ABORT"
                    } else {
                        "PREEMPT"
                    },
                    if p.fell_back {
                        " (the target has no PREEMPT AND ABORT)"
                    } else {
                        ""
                    },
                    p.kind.short(),
                    p.kind.name()
                )
            })?;
            Ok(Code::Ok)
        }
        PrCommand::Clear { disk } => {
            let t = open_target(s, disk)?;
            let k = ReservationKey(ours.key);
            // CLEAR must come from a registered nexus.
            engine::register_all(&t.paths[..1], k).map_err(|e| fail(&t, e))?;
            lead(&t).dev.clear(k).map_err(|e| scsi_fail(&t, e))?;
            done(
                json,
                &t,
                "cleared every registration and the reservation".to_owned(),
            )
        }
        PrCommand::Check {
            disk,
            repair,
            held,
            free,
        } => {
            let t = open_target(s, disk)?;
            let expect = match (held, free) {
                (Some(k), _) => Expect::Held(parse_type(k)?),
                (None, true) => Expect::Free,
                (None, false) => Expect::AsRegistered,
            };
            check(s, &t, &ours, expect, *repair, json)
        }
    }
}

fn path_names(t: &Target) -> String {
    t.paths
        .iter()
        .map(|p| p.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

#[derive(Serialize)]
struct Done<'a> {
    disk: &'a str,
    key: &'a str,
    paths: Vec<&'a str>,
    result: String,
}

fn done(json: bool, t: &Target, what: String) -> anyhow::Result<Code> {
    let d = Done {
        disk: &t.input,
        key: t.res.key.as_str(),
        paths: t.paths.iter().map(|p| p.name.as_str()).collect(),
        result: what,
    };
    print(json, &d, || format!("{}: {}\n", d.disk, d.result))?;
    Ok(Code::Ok)
}

fn reservation_out(r: &disklock_scsi::pr::Reservation, ours: &HostKey) -> ReservationOut {
    let h = r.holder.as_ref();
    ReservationOut {
        generation: r.generation,
        holder: h.map(|h| h.key),
        kind: h.map(|h| h.kind.short()),
        type_code: h.map(|h| h.kind.scsi_code()),
        type_name: h.map(|h| h.kind.name()),
        host: h
            .filter(|h| !h.kind.all_registrants())
            .and_then(|h| host_of(h.key, ours)),
    }
}

fn reservation_text(r: &ReservationOut) -> String {
    match (r.holder, r.kind) {
        (Some(k), Some(kind)) => format!(
            "{} ({}, type {}) held by {}{}  generation {}\n",
            kind,
            r.type_name.unwrap_or("?"),
            r.type_code.unwrap_or(0),
            if k.is_zero() {
                "all registrants".to_owned()
            } else {
                k.to_string()
            },
            r.host
                .as_ref()
                .map(|h| format!(" [{h}]"))
                .unwrap_or_default(),
            r.generation
        ),
        _ => format!("no reservation  generation {}\n", r.generation),
    }
}

fn keys(s: &Settings, disk: &OsStr, ours: &HostKey, json: bool) -> anyhow::Result<Code> {
    let t = open_target(s, disk)?;
    let rows = key_rows(&t, ours)?;
    print(json, &rows, || {
        if rows.is_empty() {
            return "no registrations\n".to_owned();
        }
        let mut tb = table(&["KEY", "HOST", "HOLDER", "INITIATOR"]);
        for r in &rows {
            tb.add_row([
                r.key.to_string(),
                r.host.clone().unwrap_or_else(|| "-".into()),
                r.holder
                    .map_or("-", |h| if h { "yes" } else { "no" })
                    .to_owned(),
                r.initiator.clone().unwrap_or_else(|| "-".into()),
            ]);
        }
        render(&tb)
    })?;
    Ok(Code::Ok)
}

/// One row a registration: READ FULL STATUS where the target has it (initiators, holder),
/// else READ KEYS.
fn key_rows(t: &Target, ours: &HostKey) -> anyhow::Result<Vec<KeyRow>> {
    if let Handle::Scsi(dev) = &lead(t).dev {
        match dev.pr_read_full_status() {
            Ok(fs) => return Ok(full_rows(&fs, ours)),
            Err(e) if e.is_unsupported() => {}
            Err(e) => return Err(scsi_fail(t, e)),
        }
    }
    let keys = lead(t).dev.read_keys().map_err(|e| scsi_fail(t, e))?;
    Ok(keys
        .keys
        .into_iter()
        .map(|k| KeyRow {
            key: k,
            host: host_of(k, ours),
            this_host: k.0 == ours.key,
            holder: None,
            initiator: None,
            relative_target_port: None,
        })
        .collect())
}

fn full_rows(fs: &FullStatus, ours: &HostKey) -> Vec<KeyRow> {
    fs.entries
        .iter()
        .map(|e| KeyRow {
            key: e.key,
            host: host_of(e.key, ours),
            this_host: e.key.0 == ours.key,
            holder: Some(e.holder),
            initiator: Some(e.transport_id.to_string()),
            relative_target_port: (!e.all_tg_pt).then_some(e.relative_target_port),
        })
        .collect()
}

#[derive(Serialize)]
struct CapsOut {
    crh: bool,
    sip_c: bool,
    atp_c: bool,
    ptpl_c: bool,
    ptpl_a: bool,
    allow_commands: u8,
    types: Vec<&'static str>,
    type_mask: String,
}

impl CapsOut {
    fn from(c: &disklock_scsi::pr::Capabilities) -> CapsOut {
        CapsOut {
            crh: c.crh,
            sip_c: c.sip_c,
            atp_c: c.atp_c,
            ptpl_c: c.ptpl_c,
            ptpl_a: c.ptpl_a,
            allow_commands: c.allow_commands,
            types: c.types.iter().map(|t| t.short()).collect(),
            type_mask: format!("0x{:04x}", c.raw_type_mask),
        }
    }

    fn text(&self) -> String {
        let yn = |b: bool| if b { "yes" } else { "no" };
        format!(
            "types: {}\n  (mask {})\ncompatible reservation handling (CRH): {}\nspecify initiator ports (SIP_C): {}\nall target ports (ATP_C): {}\npersist through power loss: capable {}, active {}\nallow commands: {}\n",
            if self.types.is_empty() {
                "-".to_owned()
            } else {
                self.types.join(", ")
            },
            self.type_mask,
            yn(self.crh),
            yn(self.sip_c),
            yn(self.atp_c),
            yn(self.ptpl_c),
            yn(self.ptpl_a),
            self.allow_commands
        )
    }
}

#[derive(Serialize)]
struct StatusOut<'a> {
    disk: &'a str,
    key: &'a str,
    paths: Vec<PathOut>,
    host_key: &'a HostKey,
    registrations: Vec<KeyRow>,
    reservation: ReservationOut,
    registered_here: usize,
}

#[derive(Serialize)]
struct PathOut {
    name: String,
    kind: &'static str,
}

fn status(s: &Settings, disk: &OsStr, ours: &HostKey, json: bool) -> anyhow::Result<Code> {
    let t = open_target(s, disk)?;
    let registrations = key_rows(&t, ours)?;
    let r = lead(&t)
        .dev
        .read_reservation()
        .map_err(|e| scsi_fail(&t, e))?;
    let out = StatusOut {
        disk: &t.input,
        key: t.res.key.as_str(),
        paths: t
            .paths
            .iter()
            .map(|p| PathOut {
                name: p.name.clone(),
                kind: match p.dev {
                    Handle::Scsi(_) => "scsi",
                    Handle::Block(_) => "block",
                },
            })
            .collect(),
        host_key: ours,
        registered_here: registrations.iter().filter(|r| r.this_host).count(),
        registrations,
        reservation: reservation_out(&r, ours),
    };
    print(json, &out, || {
        let mut o = format!(
            "disk: {} (key {})\npaths: {}\nthis host: {} from {}, registered {} time(s) for {} path(s)\nreservation: {}",
            out.disk,
            out.key,
            path_names(&t),
            disklock_conf::format_host_key(ours.key),
            ours.from,
            out.registered_here,
            out.paths.len(),
            reservation_text(&out.reservation)
        );
        o.push_str("registrations:\n");
        if out.registrations.is_empty() {
            o.push_str("  none\n");
        }
        for r in &out.registrations {
            o.push_str(&format!(
                "  {}  {}{}\n",
                r.key,
                r.host.as_deref().unwrap_or("-"),
                r.initiator
                    .as_ref()
                    .map(|i| format!("  {i}"))
                    .unwrap_or_default()
            ));
        }
        o
    })?;
    Ok(Code::Ok)
}

enum Expect {
    Held(PrType),
    Free,
    /// No daemon to ask and nothing said: whatever our key has registered should be on every
    /// path; the reservation is not judged.
    AsRegistered,
}

#[derive(Serialize)]
struct CheckOut<'a> {
    disk: &'a str,
    drift: Vec<DriftOut>,
    repaired: bool,
}

#[derive(Serialize)]
struct DriftOut {
    #[serde(flatten)]
    drift: Drift,
    message: String,
    fix: &'static str,
    repairable: bool,
    fixed: bool,
}

fn check(
    s: &Settings,
    t: &Target,
    ours: &HostKey,
    expect: Expect,
    repair: bool,
    json: bool,
) -> anyhow::Result<Code> {
    let key = ReservationKey(ours.key);
    let held = match expect {
        Expect::Held(k) => Some(k),
        Expect::Free => None,
        Expect::AsRegistered => {
            let keys = lead(t).dev.read_keys().map_err(|e| scsi_fail(t, e))?;
            keys.keys.contains(&key).then_some(s.pr_exclusive)
        }
    };
    // No memory of earlier checks here: an empty disk counts as a target restart only while
    // its PR generation is 0. A fenced host is never registered again (engine::repair).
    let mut drift = engine::check(&t.paths, key, held, None)
        .map_err(|e| fail(t, e))?
        .drift;
    if matches!(expect, Expect::AsRegistered) {
        // Registered by hand, perhaps under another host's reservation: whether a
        // reservation of ours is expected is not known.
        drift.retain(|d| !matches!(d, Drift::ReservationMissing | Drift::Fenced { .. }));
    }
    let fixed = if repair {
        engine::repair(&t.paths, key, held, &drift).map_err(|e| fail(t, e))?
    } else {
        Vec::new()
    };
    let out = CheckOut {
        disk: &t.input,
        repaired: repair,
        drift: drift
            .iter()
            .map(|d| DriftOut {
                message: d.to_string(),
                fix: d.fix(),
                repairable: d.repairable(),
                fixed: fixed.contains(d),
                drift: d.clone(),
            })
            .collect(),
    };
    print(json, &out, || {
        if out.drift.is_empty() {
            return format!("{}: no drift\n", out.disk);
        }
        let mut o = String::new();
        for d in &out.drift {
            let state = if d.fixed {
                "fixed"
            } else if repair {
                "left"
            } else {
                "fix"
            };
            o.push_str(&format!(
                "{}: {}; {state}: {}\n",
                out.disk, d.message, d.fix
            ));
        }
        o
    })?;
    let unfixed = out.drift.iter().any(|d| !d.fixed);
    Ok(if unfixed { Code::Partial } else { Code::Ok })
}

/// For `lookup --pr`: the reservation holder of a disk, one line, or why there is none.
pub fn holder_summary(s: &Settings, disk: &OsString, ours: &HostKey) -> Result<String, String> {
    let t = open_target(s, disk).map_err(|e| crate::exit::chain(&e))?;
    let r = lead(&t).dev.read_reservation().map_err(|e| chain_std(&e))?;
    Ok(match r.holder {
        None => "none".to_owned(),
        Some(h) if h.kind.all_registrants() => format!("{} (all registrants)", h.kind.short()),
        Some(h) => match host_of(h.key, ours) {
            Some(host) => format!("{} {} [{host}]", h.kind.short(), h.key),
            None => format!("{} {}", h.kind.short(), h.key),
        },
    })
}

/// The key `disklock fence` names: a key, or `id:N` for a disklock host id.
fn victim_key(text: &str) -> Result<ReservationKey, Usage> {
    if let Some(id) = text.strip_prefix("id:") {
        return match id.parse::<u16>() {
            Ok(n) if (1..=disklock_conf::MAX_HOST_ID).contains(&n) => {
                Ok(ReservationKey(hostkey::from_host_id(n)))
            }
            _ => Err(Usage(format!(
                "{text:?}: a host id is 1 to {}",
                disklock_conf::MAX_HOST_ID
            ))),
        };
    }
    match text.parse::<ReservationKey>() {
        Ok(k) if !k.is_zero() => Ok(k),
        Ok(_) => Err(Usage(format!("{text:?}: 0 is not a reservation key"))),
        Err(e) => Err(Usage(format!("{text:?}: {e}, or id:N for a host id"))),
    }
}

#[derive(Serialize)]
struct Fenced<'a> {
    disk: &'a str,
    #[serde(flatten)]
    preempted: Option<engine::Preempted>,
    error: Option<String>,
}

/// `disklock fence VICTIM DISK...`: each disk independently; exit 1 if any failed.
pub fn fence(s: &Settings, args: &FenceArgs) -> anyhow::Result<Code> {
    let ours = crate::pr::host_key(s)?;
    let victim = victim_key(&args.victim)?;
    if victim.0 == ours.key {
        return Err(Usage(format!("{}: that is this host's own key", args.victim)).into());
    }
    let kind = s.pr_exclusive;
    let mut rows = Vec::new();
    for disk in &args.disks {
        let input = disk.to_string_lossy().into_owned();
        let outcome = open_target(s, disk).and_then(|t| {
            engine::preempt(&t.paths, ReservationKey(ours.key), victim, kind, true)
                .map_err(|e| fail(&t, e))
        });
        match outcome {
            Ok(p) => {
                tracing::info!(event = "fence", disk = %input, victim = %victim, aborted = p.aborted, "fenced {} off {input}", engine::key_label(victim));
                rows.push((input, Some(p), None));
            }
            Err(e) => rows.push((input, None, Some(crate::exit::chain(&e)))),
        }
    }
    let failed = rows.iter().any(|r| r.2.is_some());
    let out: Vec<Fenced<'_>> = rows
        .iter()
        .map(|(d, p, e)| Fenced {
            disk: d,
            preempted: p.clone(),
            error: e.clone(),
        })
        .collect();
    print(args.json, &out, || {
        let mut o = String::new();
        for (d, p, _) in &rows {
            if let Some(p) = p {
                o.push_str(&format!(
                    "{d}: fenced {} ({}); this host holds {}\n",
                    engine::key_label(p.victim),
                    if p.aborted {
                        "PREEMPT AND ABORT"
                    } else {
                        "PREEMPT: the target has no PREEMPT AND ABORT"
                    },
                    p.kind.short()
                ));
            }
        }
        o
    })?;
    for (_, _, e) in &rows {
        if let Some(e) = e {
            eprintln!("disklock: {e}");
        }
    }
    Ok(if failed { Code::Partial } else { Code::Ok })
}
