//! `disklock lookup`: disks → keys, lockspaces and lease files.

use std::ffi::{OsStr, OsString};
use std::path::PathBuf;

use disklock_naming::compat::{self, LockdDirs};
use disklock_naming::enumerate::block_devices;
use disklock_naming::{DevNo, Resolution, Resolver};
use serde::Serialize;

use crate::cli::{Compat, Lookup};
use crate::exit::Code;
use crate::output::{render, write_stdout};
use crate::settings::Settings;

/// One line of output. Every field is always present in JSON (null when it does not apply),
/// so programs can rely on the shape.
#[derive(Debug, Default, Serialize)]
struct Row {
    input: String,
    device: Option<String>,
    devno: Option<String>,
    key: Option<String>,
    source: Option<String>,
    host_local: Option<bool>,
    lockspace: Option<PathBuf>,
    lease: Option<PathBuf>,
    error: Option<String>,
    path: Option<PathBuf>,
    partition: Option<u32>,
    whole_disk: Option<String>,
    dm_name: Option<String>,
    detail: Option<String>,
    compat: Option<&'static str>,
    /// `--pr`: this host's reservation key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pr_key: Option<String>,
    /// `--pr`: the reservation holder (`none`, `we-ro 0x… [host]`), or why it is unknown.
    #[serde(skip_serializing_if = "Option::is_none")]
    pr_holder: Option<String>,
    warnings: Vec<String>,
}

pub fn run(s: &Settings, args: &Lookup) -> anyhow::Result<Code> {
    // `--all` resolves enumerated devices by number, so a tree without /dev nodes (a
    // container's view of the host, a test tree) still works.
    let inputs: Vec<(OsString, Option<DevNo>)> = if args.all {
        let (devs, how) = block_devices(s.resolver.root())
            .map_err(|e| anyhow::anyhow!("cannot list block devices: {e}"))?;
        tracing::info!(?how, count = devs.len(), "enumerated block devices");
        devs.into_iter()
            .map(|d| (OsString::from(format!("/dev/{}", d.name)), Some(d.devno)))
            .collect()
    } else {
        args.disks.iter().map(|d| (d.clone(), None)).collect()
    };
    let probed;
    let resolver = if args.probe {
        probed = Resolver::new(s.resolver.root().clone(), s.resolver.order()).with_probe(true);
        &probed
    } else {
        &s.resolver
    };
    let host_key = if args.pr {
        Some(crate::pr::host_key(s)?)
    } else {
        None
    };
    let mut rows: Vec<Row> = inputs
        .iter()
        .map(|(input, devno)| match args.compat {
            None => native(s, resolver, input, *devno),
            Some(c) => compat_row(s, resolver, input, c),
        })
        .collect();
    if let Some(hk) = &host_key {
        for (row, (input, _)) in rows.iter_mut().zip(&inputs) {
            if row.error.is_some() {
                continue;
            }
            row.pr_key = Some(disklock_conf::format_host_key(hk.key));
            // A disk without SCSI/NVMe storage, or an unreadable one, says why in the column.
            row.pr_holder = Some(
                crate::pr_cmd::holder_summary(s, input, hk)
                    .unwrap_or_else(|e| format!("unknown: {e}")),
            );
        }
    }
    let failed = rows.iter().any(|r| r.error.is_some());
    let mut out = String::new();
    if args.json {
        out = serde_json::to_string_pretty(&rows)?;
        out.push('\n');
    } else {
        table(&rows, &mut out, args.pr);
    }
    write_stdout(&out)?;
    for r in &rows {
        for w in &r.warnings {
            eprintln!("disklock: warning: {w}");
        }
        if let Some(e) = &r.error {
            eprintln!("disklock: {}: {e}", shown(&r.input));
        }
    }
    Ok(if failed { Code::Partial } else { Code::Ok })
}

fn native(s: &Settings, resolver: &Resolver, input: &OsStr, devno: Option<DevNo>) -> Row {
    let mut row = Row {
        input: input.to_string_lossy().into_owned(),
        ..Row::default()
    };
    let resolved = match devno {
        Some(d) => resolver.resolve_devno(d),
        None => resolver.resolve_path(input, &s.cwd),
    };
    match resolved {
        Ok(r) => fill(s, &mut row, r),
        Err(e) => row.error = Some(crate::output::error_text(input, &e)),
    }
    row
}

fn fill(s: &Settings, row: &mut Row, r: Resolution) {
    let lockspace = s.lockspace(r.source.lockspace()).to_path_buf();
    row.lease = Some(lockspace.join(r.key.as_str()));
    row.lockspace = Some(lockspace);
    if let Some(b) = r.block {
        row.device = Some(b.name);
        row.devno = Some(b.devno.to_string());
        row.partition = b.partition;
        row.whole_disk = b.whole_disk;
        row.dm_name = b.dm_name;
    }
    row.key = Some(r.key.to_string());
    row.source = Some(r.source.as_str().to_owned());
    row.host_local = Some(r.host_local);
    row.path = Some(r.path);
    row.detail = Some(r.detail);
    row.warnings = r.warnings;
}

fn compat_row(s: &Settings, resolver: &Resolver, input: &OsStr, c: Compat) -> Row {
    let mut row = Row {
        input: input.to_string_lossy().into_owned(),
        ..Row::default()
    };
    let name = match c {
        Compat::Sanlock => {
            row.compat = Some("sanlock");
            resolver
                .absolute(input, &s.cwd)
                .map(|_| compat::sanlock(input, &s.config.disk_lease_dir))
        }
        Compat::Virtlockd => {
            row.compat = Some("virtlockd");
            let dirs = LockdDirs {
                file: Some(&s.config.file_lockspace_dir),
                lvm: Some(&s.config.lvm_lockspace_dir),
                scsi: Some(&s.config.scsi_lockspace_dir),
            };
            compat::virtlockd(resolver, input, &s.cwd, dirs)
        }
    };
    match name {
        Ok(n) => {
            row.key = Some(n.key);
            row.source = serde_json::to_value(n.source)
                .ok()
                .and_then(|v| v.as_str().map(ToOwned::to_owned));
            row.lockspace = n.lockspace;
            row.lease = Some(n.lease);
            row.host_local = Some(false);
        }
        Err(e) => row.error = Some(crate::output::error_text(input, &e)),
    }
    row
}

/// An input as it appears in messages: quoted when it would otherwise be invisible or
/// ambiguous (empty, control characters, surrounding spaces).
fn shown(input: &str) -> String {
    if input.is_empty() || input.trim() != input || input.chars().any(char::is_control) {
        format!("{input:?}")
    } else {
        input.to_owned()
    }
}

fn table(rows: &[Row], out: &mut String, pr: bool) {
    let mut header = vec!["DISK", "DEVICE", "DEVNO", "SOURCE", "KEY", "LOCKSPACE"];
    if pr {
        header.extend(["PR KEY", "PR HOLDER"]);
    }
    let mut t = crate::output::table(&header);
    for r in rows.iter().filter(|r| r.error.is_none()) {
        let dash = || "-".to_owned();
        let mut cells = vec![
            r.input.clone(),
            r.device.clone().unwrap_or_else(dash),
            r.devno.clone().unwrap_or_else(dash),
            r.source.clone().unwrap_or_else(dash),
            r.key.clone().unwrap_or_else(dash),
            r.lockspace
                .as_ref()
                .map_or_else(|| "(direct)".to_owned(), |p| p.display().to_string()),
        ];
        if pr {
            cells.push(r.pr_key.clone().unwrap_or_else(dash));
            cells.push(r.pr_holder.clone().unwrap_or_else(dash));
        }
        t.add_row(cells);
    }
    if rows.iter().any(|r| r.error.is_none()) {
        out.push_str(&render(&t));
    }
}
