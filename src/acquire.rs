//! `disklock acquire` and `disklock release`: leases through the daemon.

use std::ffi::OsStr;

use crate::cli::{AcquireArgs, OwnerArgs, PrFlags, ReleaseArgs};
use crate::client::{Client, ClientError};
use crate::daemon::protocol::{
    AcquireParams, AcquireReply, DiskMode, DiskRequest, Failure, LostAction, MAX_DISKS, OnLost,
    ReleaseOwnerParams, ReleaseParams, Request,
};
use crate::daemon::table::ReleaseOutcome;
use crate::exit::{self, Code};
use crate::lockspace::Owner;
use crate::output::{render, table, write_stdout};
use crate::settings::Settings;

pub fn acquire(s: &Settings, args: &AcquireArgs) -> anyhow::Result<Code> {
    let mode = if args.readonly {
        DiskMode::Readonly
    } else if args.shared {
        DiskMode::Shared
    } else {
        DiskMode::Exclusive
    };
    let disks = args
        .disks
        .iter()
        .map(|d| {
            Ok(DiskRequest {
                path: disk_arg(s, d)?,
                mode,
                lease: false,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let pid = args
        .pid
        .unwrap_or_else(|| nix::unistd::getppid().as_raw().unsigned_abs());
    let owner = owner(&args.owner, pid);
    let req = acquire_request(disks, owner, &args.pr, args.owner.on_lost)?;
    let reply: AcquireReply = call(s, &req)?;
    let out = if args.json {
        let mut o = serde_json::to_string_pretty(&reply)?;
        o.push('\n');
        o
    } else {
        let mut t = table(&["DISK", "MODE", "OWNER", "LEASE"]);
        for l in &reply.leases {
            let owners: Vec<&str> = l.owners.iter().map(|o| o.name.as_str()).collect();
            t.add_row([
                l.disk.clone(),
                l.mode.to_string(),
                owners.join(","),
                l.lease.display().to_string(),
            ]);
        }
        for d in &reply.skipped {
            t.add_row([
                d.clone(),
                "none".into(),
                "-".into(),
                "(read-only: no lease)".into(),
            ]);
        }
        render(&t)
    };
    write_stdout(&out)?;
    Ok(Code::Ok)
}

pub fn release(s: &Settings, args: &ReleaseArgs) -> anyhow::Result<Code> {
    let req = if let Some(name) = &args.owner {
        Request::ReleaseOwner(ReleaseOwnerParams {
            name: Some(name.clone()),
            uuid: args.uuid.clone(),
        })
    } else {
        Request::Release(ReleaseParams {
            disks: args
                .disks
                .iter()
                .map(|d| disk_arg(s, d))
                .collect::<anyhow::Result<_>>()?,
            owner: args.uuid.clone(),
        })
    };
    let out: ReleaseOutcome = call(s, &req)?;
    let mut text = String::new();
    for d in &out.released {
        text.push_str(&format!("released {d}\n"));
    }
    write_stdout(&text)?;
    for d in &out.not_held {
        eprintln!("disklock: {d}: not held by this daemon");
    }
    for l in &out.dropping {
        eprintln!(
            "disklock: warning: {}: released, but its lockspace does not answer; the lock is \
             dropped as soon as it does",
            crate::output::printable(&l.to_string_lossy())
        );
    }
    if args.owner.is_some() && out.released.is_empty() {
        eprintln!(
            "disklock: owner {}: holds no lease",
            args.owner.as_deref().unwrap_or_default()
        );
        return Ok(Code::Partial);
    }
    Ok(if out.not_held.is_empty() {
        Code::Ok
    } else {
        Code::Partial
    })
}

/// An `Acquire` request. More disks than one request takes is a usage error, said before
/// the daemon is asked.
pub fn acquire_request(
    disks: Vec<DiskRequest>,
    owner: Owner,
    pr: &PrFlags,
    on_lost: Option<crate::cli::OnLostArg>,
) -> anyhow::Result<Request> {
    if disks.len() > MAX_DISKS {
        anyhow::bail!(
            "{} disks: one request takes at most {MAX_DISKS}",
            disks.len()
        );
    }
    Ok(Request::Acquire(AcquireParams {
        disks,
        owner,
        preempt: pr.preempt,
        pr: pr.wanted(),
        on_lost: on_lost.map(|a| OnLost {
            action: match a {
                crate::cli::OnLostArg::Kill => LostAction::Kill,
                crate::cli::OnLostArg::Ignore => LostAction::Ignore,
            },
            uri: None,
        }),
    }))
}

/// A request to the daemon: its reply, or why not (with the exit code it means).
pub fn call<T: serde::de::DeserializeOwned>(s: &Settings, req: &Request) -> anyhow::Result<T> {
    let socket = s.socket()?;
    match Client::connect(socket, s.timeout).and_then(|mut c| c.call(req)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(f)) => Err(refused(&f)),
        Err(e) => Err(unreachable_daemon(&e)),
    }
}

/// A daemon's refusal as the command's error, with its exit code.
pub fn refused(f: &Failure) -> anyhow::Error {
    exit::failed(f.code(), f.to_string())
}

/// Why the daemon could not be asked, as the command's error, with its exit code.
pub fn unreachable_daemon(e: &ClientError) -> anyhow::Error {
    exit::failed(e.code(), exit::chain_std(e))
}

/// A disk argument as the daemon wants it: an absolute path (relative to our cwd), UTF-8.
pub fn disk_arg(s: &Settings, input: &OsStr) -> anyhow::Result<String> {
    let abs = s
        .resolver
        .absolute(input, &s.cwd)
        .map_err(|e| anyhow::anyhow!("{}: {}", input.to_string_lossy(), exit::chain_std(&e)))?;
    abs.into_os_string()
        .into_string()
        .map_err(|p| anyhow::anyhow!("{}: not a UTF-8 path", p.to_string_lossy()))
}

/// The owner for these options and pid: the name defaults to the process's command name.
pub fn owner(args: &OwnerArgs, pid: u32) -> Owner {
    let name = args.name.clone().unwrap_or_else(|| {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .map(|c| c.trim().to_owned())
            .ok()
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| format!("pid-{pid}"))
    });
    Owner {
        name,
        uuid: args
            .uuid
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string()),
        pid,
    }
}
