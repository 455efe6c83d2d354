//! `disklock run`: hold disk leases for exactly as long as a command lives.
//!
//! disklock takes the leases and then *becomes* the command (`execve`, same pid), so the
//! leases cannot outlive it or be lost while it runs:
//! - with a daemon, the leases are held by the daemon for owner pid = our pid, which the
//!   daemon watches through a pidfd: the command's exit releases them at once;
//! - without one, this process takes the fcntl locks itself and keeps their fds open across
//!   the exec, so the command holds them; the kernel drops them when it exits (the lease
//!   files stay behind, stale and free, as after any crash).
//!
//! Before the exec nothing of the command has run, so a busy disk (exit 3) or any failure
//! leaves nothing acquired.

use std::ffi::OsString;
use std::os::unix::process::CommandExt as _;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::acquire::{acquire_request, disk_arg, owner, refused, unreachable_daemon};
use crate::cli::RunArgs;
use crate::client::{Client, ClientError};
use crate::daemon::protocol::{AcquireReply, DiskMode, DiskRequest, ReleaseOwnerParams, Request};
use crate::daemon::table::ReleaseOutcome;
use crate::exit::{Code, chain_std};
use crate::lockspace::{self, HostIdentity, Mode, Owner};
use crate::settings::Settings;

pub fn run(s: &Settings, args: &RunArgs) -> anyhow::Result<ExitCode> {
    let mut disks: Vec<(OsString, DiskMode)> = Vec::new();
    disks.extend(args.disks.iter().map(|d| (d.clone(), DiskMode::Exclusive)));
    disks.extend(
        args.shared_disks
            .iter()
            .map(|d| (d.clone(), DiskMode::Shared)),
    );
    disks.extend(
        args.readonly_disks
            .iter()
            .map(|d| (d.clone(), DiskMode::Readonly)),
    );
    let Some((program, cmd_args)) = args.command.split_first() else {
        anyhow::bail!("no command to run");
    };
    let me = std::process::id();
    let mut owner_args_name = args.owner.name.clone();
    if owner_args_name.is_none() {
        owner_args_name = std::path::Path::new(program)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned());
    }
    let owner = owner(
        &crate::cli::OwnerArgs {
            name: owner_args_name,
            uuid: args.owner.uuid.clone(),
            on_lost: args.owner.on_lost,
        },
        me,
    );
    let mut command = std::process::Command::new(program);
    command.args(cmd_args);

    if !args.no_daemon
        && let Some(socket) = s.socket.as_deref()
    {
        match Client::connect(socket, s.timeout) {
            Ok(client) => {
                return through_daemon(s, client, &disks, owner, args, command);
            }
            Err(ClientError::NotRunning { .. }) => {
                tracing::info!(socket = %socket.display(), "no daemon: holding the leases in this process");
            }
            Err(e) => return Err(unreachable_daemon(&e)),
        }
    }
    if args.owner.on_lost.is_some() {
        return Err(crate::exit::failed(
            Code::Usage,
            "--on-lost needs the daemon: without it nothing checks the leases while the \
             command runs"
                .to_owned(),
        ));
    }
    in_process(s, &disks, owner, &args.pr, command)
}

fn through_daemon(
    s: &Settings,
    mut client: Client,
    disks: &[(OsString, DiskMode)],
    owner: Owner,
    args: &crate::cli::RunArgs,
    mut command: std::process::Command,
) -> anyhow::Result<ExitCode> {
    let disks = disks
        .iter()
        .map(|(d, mode)| {
            Ok(DiskRequest {
                path: disk_arg(s, d)?,
                mode: *mode,
                lease: false,
            })
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let uuid = owner.uuid.clone();
    if !disks.is_empty() {
        let req = acquire_request(disks, owner, &args.pr, args.owner.on_lost)?;
        match client.call::<AcquireReply>(&req) {
            Ok(Ok(reply)) => {
                for l in &reply.leases {
                    tracing::info!(disk = %l.disk, mode = %l.mode, lease = %l.lease.display(), "holding through the daemon");
                }
            }
            Ok(Err(f)) => return Err(refused(&f)),
            Err(e) => return Err(unreachable_daemon(&e)),
        }
    }
    // Becomes the command; returns only if that failed. The daemon watches our pid, which
    // the command keeps.
    let err = command.exec();
    let release = Request::ReleaseOwner(ReleaseOwnerParams {
        name: None,
        uuid: Some(uuid),
    });
    // If this fails, our exit releases them anyway.
    match client.call::<ReleaseOutcome>(&release) {
        Ok(Ok(_)) => {}
        Ok(Err(f)) => tracing::warn!(error = %f, "cannot release the leases before exiting"),
        Err(e) => {
            tracing::warn!(error = %chain_std(&e), "cannot release the leases before exiting")
        }
    }
    Err(exec_failed(command.get_program(), &err))
}

/// Takes the leases in this process, through the same table and backends as the daemon
/// (`daemon::plan` turns the disks into targets and reservation plans, the table applies the
/// one-lease-per-file rule, all-or-nothing rollback and lease-then-reserve), then hands them
/// to the command across `execve`.
fn in_process(
    s: &Settings,
    disks: &[(OsString, DiskMode)],
    owner: Owner,
    pr: &crate::cli::PrFlags,
    mut command: std::process::Command,
) -> anyhow::Result<ExitCode> {
    use crate::daemon::plan;
    use crate::daemon::pr_layer::PrBackend;
    use crate::daemon::table::{AcquireRequest, Identity, Table};
    let pr_settings = match pr.wanted() {
        Some(false) => None,
        wanted => plan::pr_settings(s, wanted == Some(true))?,
    };
    let pr_key = pr_settings.map(|p| p.key.0);
    let resolver = disklock_naming::Resolver::new(s.resolver.root().clone(), s.resolver.order());
    let identity = Identity {
        host: HostIdentity::this_host(),
        pid: owner.pid,
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let mut table = Table::new(PrBackend::new(pr_settings, resolver), identity);
    let mut targets = Vec::with_capacity(disks.len());
    for (d, mode) in disks {
        let Some(mode) = plan::lease_mode(*mode, s.config.readonly_disk_leases) else {
            continue;
        };
        let path = match disk_arg(s, d) {
            Ok(p) => p,
            Err(e) => return Err(crate::exit::failed(Code::Partial, crate::exit::chain(&e))),
        };
        let (t, r) = match plan::resolve(s, &path, mode) {
            Ok(x) => x,
            Err(f) => return Err(refused(&f)),
        };
        match plan::pr_plan(s, pr_key.is_some(), &t, &r, pr.wanted(), pr.preempt) {
            Ok(Some(p)) => table.backend_mut().plan(t.key.clone(), p),
            Ok(None) => {}
            Err(why) => return Err(crate::exit::failed(Code::Usage, format!("--pr: {why}"))),
        }
        targets.push(t);
    }
    if !targets.is_empty() {
        let uid = nix::unistd::geteuid().as_raw();
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let result = table.acquire(
            AcquireRequest {
                targets,
                owner,
                owner_uid: uid,
                client_uid: uid,
            },
            since,
        );
        table.backend_mut().clear_plans();
        if let Err(r) = result {
            return Err(refused(&crate::daemon::server::failure(r)));
        }
        // The holder records the table leaves for after a daemon's reply: before the exec.
        table.settle();
    }
    let held: Vec<lockspace::HeldElsewhere> = table
        .held()
        .filter_map(|l| l.file().map(lockspace::Lease::held_elsewhere))
        .collect();
    let reserved: Vec<String> = table
        .held()
        .filter_map(|l| table.backend().reserved_device(l))
        .map(|d| d.to_string())
        .collect();
    for h in &held {
        tracing::info!(event = "acquire", lease = %h.path.display(), mode = h.mode.as_str(), "holding {} for the command", h.path.display());
    }
    if !held.is_empty() || !reserved.is_empty() {
        // Started while the lease fds are still close-on-exec, so it inherits none.
        if let Err(e) = spawn_releaser(me_of(&held), &held, pr_key, &reserved) {
            tracing::warn!(error = %e, "the lease files will stay behind when the command exits");
        }
    }
    let kept: Result<(), _> = table
        .held()
        .filter_map(|l| l.file())
        .try_for_each(lockspace::Lease::keep_across_exec);
    if let Err(e) = kept {
        table.shutdown();
        return Err(crate::exit::failed(Code::Partial, chain_std(&e)));
    }
    let err = command.exec();
    // Reservations first, then the lease files, as a daemon releases.
    table.shutdown();
    Err(exec_failed(command.get_program(), &err))
}

/// Releases the reservations of the devices `reserved` (`MAJ:MIN`) and unregisters `key`
/// on all their paths; failures are logged (the registration then shows in `pr check`).
fn release_reservations(reserved: &[String], key: disklock_scsi::pr::ReservationKey) {
    let resolver = disklock_naming::Resolver::new(disklock_naming::SysRoot::host(), &[]);
    for d in reserved.iter().rev() {
        let Some(devno) = disklock_naming::DevNo::parse(d) else {
            tracing::warn!(device = %d, "not a device number");
            continue;
        };
        let result = crate::pr::open_storage(&resolver, devno)
            .and_then(|paths| crate::pr::engine::release(&paths, key).map_err(|e| chain_std(&e)));
        match result {
            Ok(()) => {
                tracing::info!(event = "pr-release", device = %d, "released the reservation of {d}")
            }
            Err(e) => tracing::warn!(device = %d, error = %e, "reservation of {d} not released"),
        }
    }
}

fn me_of(held: &[lockspace::HeldElsewhere]) -> (String, u32) {
    held.first().map_or_else(
        || (String::new(), std::process::id()),
        |h| (h.host_id.clone(), h.pid),
    )
}

/// Starts the releaser: a `disklock __release-after-exit` detached from this process tree
/// (its own process group, reparented to init) that waits for this process — soon the
/// command — to exit and then releases `held` as the daemon releases a lease on its last
/// release. Returns once it watches this process, so no exit can slip past it.
fn spawn_releaser(
    (host_id, pid): (String, u32),
    held: &[lockspace::HeldElsewhere],
    pr_key: Option<u64>,
    reserved: &[String],
) -> anyhow::Result<()> {
    use std::io::BufRead as _;
    use std::os::unix::ffi::OsStrExt as _;
    use std::process::Stdio;
    let mut cmd = std::process::Command::new("/proc/self/exe");
    cmd.arg0("disklock")
        .arg("__release-after-exit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg("--host-id")
        .arg(&host_id);
    for h in held {
        let mut v = format!("{}:{}:{}:", h.mode.as_str(), h.dev, h.ino).into_bytes();
        v.extend_from_slice(h.path.as_os_str().as_bytes());
        cmd.arg("--lease").arg(std::ffi::OsStr::from_bytes(&v));
    }
    if let Some(k) = pr_key {
        cmd.arg("--pr-key").arg(disklock_conf::format_host_key(k));
        for d in reserved {
            cmd.arg("--pr-device").arg(d);
        }
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .current_dir("/")
        // Out of the terminal's foreground group: a ^C to the command must not kill it.
        .process_group(0)
        .spawn()
        .map_err(|e| anyhow::anyhow!("cannot start the releaser: {e}"))?;
    let stdout = child.stdout.take();
    let status = child.wait().map_err(|e| anyhow::anyhow!("releaser: {e}"))?;
    anyhow::ensure!(status.success(), "the releaser failed: {status}");
    // The detached second stage prints `ready` once it watches us (or EOF if it died).
    let mut line = String::new();
    if let Some(out) = stdout {
        std::io::BufReader::new(out).read_line(&mut line)?;
    }
    anyhow::ensure!(line.trim() == "ready", "the releaser did not start");
    Ok(())
}

/// `disklock __release-after-exit`: the first stage starts the second, detached, and exits
/// (so `run`'s command never has it as a child to wait for); the second waits for `--pid`
/// to exit and releases its leases.
pub fn release_after_exit(args: &crate::cli::ReleaseAfterExitArgs) -> ExitCode {
    use std::io::Write as _;
    let leases = match parse_leases(args) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("disklock: {e}");
            return Code::Usage.into();
        }
    };
    if !args.detached {
        let spawned = std::process::Command::new("/proc/self/exe")
            .arg0("disklock")
            .args(std::env::args_os().skip(1))
            .arg("--detached")
            .stdin(std::process::Stdio::null())
            .current_dir("/")
            .process_group(0)
            .spawn();
        return match spawned {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("disklock: cannot start the releaser: {e}");
                Code::Partial.into()
            }
        };
    }
    let watch = ExitWatch::new(args.pid);
    let ready = writeln!(std::io::stdout(), "ready").and_then(|()| std::io::stdout().flush());
    if ready.is_err() {
        // `run` is gone before it could exec: its own exit path released the leases.
        return Code::Partial.into();
    }
    watch.wait();
    let mut code = Code::Ok;
    // The reservations first: the storage must not fence the disk after its lease is free.
    if let Some(k) = args
        .pr_key
        .as_deref()
        .and_then(disklock_conf::parse_host_key)
    {
        release_reservations(&args.pr_devices, disklock_scsi::pr::ReservationKey(k));
    }
    for h in leases.iter().rev() {
        match lockspace::release_after_exit(h) {
            Ok(r) => {
                tracing::info!(event = "release", lease = %h.path.display(), mode = h.mode.as_str(), removed = (r == lockspace::Released::Unlinked), "released after pid {} exited", args.pid);
            }
            Err(e) => {
                tracing::warn!(lease = %h.path.display(), error = %chain_std(&e), "lease file not removed");
                code = Code::Partial;
            }
        }
    }
    code.into()
}

fn parse_leases(
    args: &crate::cli::ReleaseAfterExitArgs,
) -> anyhow::Result<Vec<lockspace::HeldElsewhere>> {
    use std::os::unix::ffi::OsStrExt as _;
    args.leases
        .iter()
        .map(|v| {
            let bad = || anyhow::anyhow!("bad --lease {}", v.to_string_lossy());
            let mut parts = v.as_bytes().splitn(4, |b| *b == b':');
            let mut next = || {
                parts
                    .next()
                    .and_then(|p| std::str::from_utf8(p).ok())
                    .ok_or_else(bad)
            };
            let mode = match next()? {
                "exclusive" => Mode::Exclusive,
                "shared" => Mode::Shared,
                _ => return Err(bad()),
            };
            let dev = next()?.parse().map_err(|_| bad())?;
            let ino = next()?.parse().map_err(|_| bad())?;
            let path = parts.next().ok_or_else(bad)?;
            let path = std::path::PathBuf::from(std::ffi::OsStr::from_bytes(path));
            if !path.is_absolute() {
                return Err(bad());
            }
            Ok(lockspace::HeldElsewhere {
                path,
                dev,
                ino,
                mode,
                host_id: args.host_id.clone(),
                pid: args.pid,
            })
        })
        .collect()
}

/// Names one process for good: its pidfd, or (without pidfd support) its start time.
enum ExitWatch {
    Pidfd(std::os::fd::OwnedFd),
    StartTime(u32, Option<u64>),
    Gone,
}

impl ExitWatch {
    fn new(pid: u32) -> ExitWatch {
        use rustix::process::{Pid, PidfdFlags, pidfd_open};
        let Some(raw) = i32::try_from(pid).ok().and_then(Pid::from_raw) else {
            return ExitWatch::Gone;
        };
        match pidfd_open(raw, PidfdFlags::empty()) {
            Ok(fd) => ExitWatch::Pidfd(fd),
            Err(rustix::io::Errno::SRCH) => ExitWatch::Gone,
            Err(_) => ExitWatch::StartTime(pid, crate::daemon::server::start_time(pid)),
        }
    }

    /// Returns once the process has exited.
    fn wait(self) {
        use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
        use std::os::fd::AsFd as _;
        match self {
            ExitWatch::Pidfd(fd) => loop {
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::NONE) {
                    Err(nix::errno::Errno::EINTR) => {}
                    // Readable (the process exited), or an error on the pidfd.
                    _ => return,
                }
            },
            ExitWatch::StartTime(pid, start) => {
                while matches!(crate::daemon::server::start_time(pid), Some(t) if start.is_none_or(|s| s == t))
                {
                    std::thread::sleep(crate::daemon::server::POLL_OWNER);
                }
            }
            ExitWatch::Gone => {}
        }
    }
}

/// `env`'s convention: 127 when the command is not found, 126 when it cannot be run.
fn exec_failed(program: &std::ffi::OsStr, err: &std::io::Error) -> anyhow::Error {
    let code = if err.kind() == std::io::ErrorKind::NotFound {
        Code::NotFound
    } else {
        Code::CannotRun
    };
    crate::exit::failed(
        code,
        format!("cannot run {}: {err}", program.to_string_lossy()),
    )
}
