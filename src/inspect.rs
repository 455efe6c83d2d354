//! `disklock inspect`: who holds a lease, read from the lease file itself.
//!
//! This needs no daemon and works on any host that sees the lockspace: the holder records
//! are in the lease file body and the kernel (or the NFS lock manager) answers `F_GETLK`.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::cli::InspectArgs;
use crate::exit::{Code, chain_std};
use crate::lockspace::{self, Holder, LockInfo};
use crate::output::write_stdout;
use crate::settings::Settings;

#[derive(Serialize)]
struct Report {
    lease: PathBuf,
    disk: Option<PathBuf>,
    key: Option<String>,
    /// `absent` (no lease file), `free` (a stale file nobody locks), `exclusive`, `shared`.
    state: &'static str,
    lock: Option<LockInfo>,
    holders: Vec<Holder>,
}

pub fn run(s: &Settings, args: &InspectArgs) -> anyhow::Result<Code> {
    let abs = s.cwd.join(&args.target);
    let (lease, disk, key) = if in_lockspace(s, &abs) {
        (abs, None, None)
    } else {
        match s.resolver.resolve_path(&args.target, &s.cwd) {
            Ok(r) => (
                s.lockspace(r.source.lockspace()).join(r.key.as_str()),
                Some(r.path),
                Some(r.key.to_string()),
            ),
            Err(e) => {
                let why = format!("{}: {}", args.target.to_string_lossy(), chain_std(&e));
                return Err(crate::exit::failed(Code::Partial, why));
            }
        }
    };
    let i = match lockspace::inspect(&lease) {
        Ok(i) => i,
        Err(e) => return Err(crate::exit::failed(Code::Partial, chain_std(&e))),
    };
    let state = match (&i.lock, i.exists) {
        (_, false) => "absent",
        (None, true) => "free",
        (Some(l), true) => l.mode.as_str(),
    };
    let report = Report {
        lease,
        disk,
        key,
        state,
        lock: i.lock,
        holders: i.holders,
    };
    let out = if args.json {
        let mut o = serde_json::to_string_pretty(&report)?;
        o.push('\n');
        o
    } else {
        text(&report)
    };
    write_stdout(&out)?;
    Ok(Code::Ok)
}

fn text(r: &Report) -> String {
    let mut o = format!("lease:   {}\n", r.lease.display());
    if let Some(d) = &r.disk {
        o.push_str(&format!("disk:    {}\n", d.display()));
    }
    let state = match (r.state, &r.lock) {
        ("absent", _) => "free (no lease file)".to_owned(),
        ("free", _) => "free (a stale lease file: nobody holds its lock)".to_owned(),
        (_, Some(l)) => format!(
            "held {} (lock pid {}{})",
            l.mode,
            l.pid,
            l.process
                .as_deref()
                .map(|p| format!(", {}", crate::output::printable(p)))
                .unwrap_or_default()
        ),
        (s, None) => s.to_owned(),
    };
    o.push_str(&format!("state:   {state}\n"));
    let stale = r.lock.is_none();
    for h in &r.holders {
        let tag = if stale { " (stale)" } else { "" };
        o.push_str(&format!(
            "holder:  {}{tag} (as the lease file says)\n",
            h.describe()
        ));
    }
    if let Some(l) = r.lock.as_ref().filter(|_| r.holders.is_empty()) {
        // What the kernel knows, apart from what the file claims (it claims nothing).
        o.push_str(&format!(
            "holder:  none recorded in the lease file; the kernel's lock owner is pid {} \
             (virtlockd, another tool, or a holder whose record could not be written)\n",
            l.pid
        ));
    }
    o
}

/// Whether `path` is a file directly inside one of the configured lockspace directories.
fn in_lockspace(s: &Settings, path: &Path) -> bool {
    let Some(parent) = path.parent().and_then(|p| std::fs::canonicalize(p).ok()) else {
        return false;
    };
    [
        &s.config.file_lockspace_dir,
        &s.config.lvm_lockspace_dir,
        &s.config.scsi_lockspace_dir,
    ]
    .iter()
    .filter_map(|d| std::fs::canonicalize(d).ok())
    .any(|d| d == parent)
}
