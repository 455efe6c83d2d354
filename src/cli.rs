//! Command-line arguments.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  failed: a disk could not be resolved, its lease file could not be used, a disk
     to release is not held, or the daemon did not answer within --timeout (lookup:
     some disks could not be resolved, the others were)
  2  bad usage or configuration; nothing was done
  3  a disk is busy: someone else holds its lease or, with persistent reservations, its
     reservation at the storage (the message names the holder); nothing stays acquired
  4  the command needs the daemon and none is running
  run: once CMD has started, CMD's own exit status (126: CMD cannot be executed,
     127: CMD not found)

Daemon socket: /run/disklock/disklock.sock for root, else
$XDG_RUNTIME_DIR/disklock/disklock.sock; --socket or DISKLOCK_SOCKET name another.
Configuration: /etc/disklock/disklock.conf for root, else
$XDG_CONFIG_HOME/disklock/disklock.conf; an existing /etc/libvirt/qemu-lockd.conf
fills in what it does not set, so a virtlockd host keeps its lockspaces.
Logging: -v, -vv, or DISKLOCK_LOG=debug.";

/// Storage-layer reservation enforcer for Linux block devices.
///
/// disklock names every disk by a key that is the same on every host (SCSI WWID, LVM LV UUID,
/// NVMe WWID, or a hash of its by-path name) and guards it with leases in shared lockspaces.
#[derive(Debug, Parser)]
#[command(name = "disklock", version, after_help = AFTER_HELP)]
pub struct Cli {
    /// Configuration file (libvirt `key = value` grammar).
    #[arg(long, global = true, value_name = "FILE", env = "DISKLOCK_CONFIG")]
    pub config: Option<PathBuf>,

    /// Read /sys, /run/udev and /dev below DIR instead of / (containers, test trees).
    #[arg(long, global = true, value_name = "DIR")]
    pub sysroot: Option<PathBuf>,

    /// The daemon's socket (default: /run/disklock/disklock.sock for root,
    /// $XDG_RUNTIME_DIR/disklock/disklock.sock for other users).
    #[arg(long, global = true, value_name = "PATH", env = "DISKLOCK_SOCKET")]
    pub socket: Option<PathBuf>,

    /// How long to wait for the daemon, in seconds: to connect, to send a request and for
    /// its reply, each. A command that gives up exits 1; the daemon gives back what an
    /// acquire took when it cannot deliver the reply.
    #[arg(
        long,
        global = true,
        value_name = "SECONDS",
        env = "DISKLOCK_TIMEOUT",
        default_value_t = 60,
        value_parser = clap::value_parser!(u64).range(1..=86400)
    )]
    pub timeout: u64,

    /// More log output on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Show the stable key of each disk and the lease file that guards it.
    ///
    /// DISK is any path to a block device (/dev/sdb, /dev/disk/by-path/..., /dev/mapper/NAME,
    /// /dev/VG/LV, /dev/nvme0n1, relative paths and symlinks) or a disk image file.
    /// The key comes from the first configured source that applies: lvm-uuid, scsi-wwid,
    /// nvme-wwid, by-path-sha256, path-sha256 (host-local); image files get file-sha256.
    /// Partitions are keyed as their whole disk's key plus "-partN".
    #[command(
        after_help = "Examples:\n  disklock lookup /dev/sdb /dev/vg0/guest1\n  disklock lookup --all --json\n  disklock lookup --compat virtlockd /var/lib/libvirt/images/guest.img"
    )]
    Lookup(Lookup),

    /// Show the configuration in effect and where each value came from.
    Config(ConfigArgs),

    /// Run the lease daemon (in the foreground; logs to the journal under systemd).
    ///
    /// It listens on the socket, holds leases for owners (processes) and releases an
    /// owner's leases the moment the owner exits. Stop it with SIGTERM: it releases every
    /// lease. Its API is the Varlink interface io.disklock.Lease.
    Daemon,

    /// Take the leases of disks through the daemon, all or none.
    ///
    /// The leases are held for an owner process (--pid, default: the caller's parent, such
    /// as your shell or script) and released when it exits or by `disklock release`.
    /// With persistent_reservations = 1, SCSI and NVMe disks are also reserved at the storage
    /// (this host's key on every path); a disk another host has reserved is busy (exit 3)
    /// unless --preempt takes it over.
    #[command(
        after_help = "Examples:\n  disklock acquire --owner web1 /var/lib/libvirt/images/web1.img\n  disklock acquire --shared --owner db --pid $$ /dev/sdb"
    )]
    Acquire(AcquireArgs),

    /// Give leases back: the named disks, or every lease of an owner.
    Release(ReleaseArgs),

    /// Show every lease the daemon holds.
    Status(StatusArgs),

    /// Show who holds a disk's lease, read from the lease file (works from any host that
    /// sees the lockspace, and without a daemon).
    Inspect(InspectArgs),

    /// Run a command holding disk leases for exactly as long as it lives.
    ///
    /// disklock takes the leases (through the daemon when one runs, else in this process),
    /// then becomes CMD (exec): the leases are held until CMD exits, and CMD's exit status
    /// is disklock's. A busy disk exits 3 before CMD starts, naming the holder.
    #[command(
        after_help = "Examples:\n  disklock run --disk /srv/vm/disk0.img -- qemu-system-x86_64 -drive file=/srv/vm/disk0.img,format=raw\n  disklock run --shared-disk /dev/sdc -- ./backup.sh"
    )]
    Run(RunArgs),

    /// Fence another host off disks at the storage: preempt its reservation key.
    ///
    /// PREEMPT AND ABORT (PREEMPT on targets without it, such as tgt) of VICTIM's key on
    /// each DISK, leaving this host registered on every path and holding a pr_type
    /// reservation, then checks that the victim's key is gone. VICTIM is a key (0x… or
    /// decimal) or a disklock host id as `id:N` (key 0x444c4b48 followed by N). This host's
    /// own key is refused. No lease is taken: `disklock acquire --preempt` does both.
    #[command(
        after_help = "Examples:\n  disklock fence id:2 /dev/mapper/mpatha\n  disklock fence 0x444c4b4800000002 /dev/sdb /dev/sdc\n\nExit status: 0 fenced, 1 failed, 2 bad usage."
    )]
    Fence(FenceArgs),

    /// SCSI-3 persistent reservations by hand, on every path of a disk.
    ///
    /// What sg_persist and mpathpersist do, with this host's key (`disklock pr key`) filled
    /// in, reservation types by name or SCSI code, every path of a multipath map used
    /// together, and --json. Types: we (1, Write Exclusive), ea (3, Exclusive Access),
    /// we-ro (5, Write Exclusive - Registrants Only), ea-ro (6), we-ar (7, Write Exclusive -
    /// All Registrants), ea-ar (8). Needs root (SG_IO).
    #[command(
        after_help = "Examples:\n  disklock pr key\n  disklock pr status /dev/mapper/mpatha\n  disklock pr keys --json /dev/sdb\n  disklock pr register /dev/sdb && disklock pr reserve --type we-ro /dev/sdb\n  disklock pr preempt --victim 0x444c4b4800000002 --abort /dev/sdb\n  disklock pr check --repair /dev/sdb\n\nExit status: 0 done, 1 failed (check: drift left), 2 bad usage, 3 reservation conflict."
    )]
    Pr(PrArgs),

    /// Internal: started by `run` without a daemon; releases the leases a process held once
    /// it has exited (see `run.rs`).
    #[command(name = "__release-after-exit", hide = true)]
    ReleaseAfterExit(ReleaseAfterExitArgs),
}

#[derive(Debug, Args)]
pub struct ReleaseAfterExitArgs {
    /// The process holding the leases.
    #[arg(long)]
    pub pid: u32,

    /// Host id of its holder records.
    #[arg(long, default_value = "")]
    pub host_id: String,

    /// A lease it holds: MODE:DEV:INO:PATH.
    #[arg(long = "lease", value_name = "MODE:DEV:INO:PATH")]
    pub leases: Vec<OsString>,

    /// The second stage, detached from `run`'s process tree.
    #[arg(long)]
    pub detached: bool,

    /// The reservation key to release and unregister with.
    #[arg(long, value_name = "KEY")]
    pub pr_key: Option<String>,

    /// A device (MAJ:MIN) whose reservation to release.
    #[arg(long = "pr-device", value_name = "MAJ:MIN")]
    pub pr_devices: Vec<String>,
}

/// The owner options shared by acquire and run.
#[derive(Debug, Args)]
pub struct OwnerArgs {
    /// A name for the owner (a VM name, a script name).
    #[arg(long = "owner", value_name = "NAME")]
    pub name: Option<String>,

    /// The owner's uuid (default: a new random one).
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,

    /// What the daemon does to the owner process if one of its leases is lost (the lease
    /// file removed or replaced, or another host took the disk's reservation): kill it
    /// (SIGKILL: it writes no more), or only log (the default). Checked every
    /// lease_check_interval seconds; needs the daemon.
    #[arg(long, value_name = "ACTION", value_enum)]
    pub on_lost: Option<OnLostArg>,
}

/// `--on-lost` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum OnLostArg {
    /// SIGKILL the owner process.
    Kill,
    /// Log only.
    Ignore,
}

/// Persistent-reservation options shared by acquire and run.
#[derive(Debug, Args)]
pub struct PrFlags {
    /// Take a disk that another host has reserved at the storage away from it: PREEMPT AND
    /// ABORT of its key (PREEMPT on targets without it), then verify. For a host that is
    /// dead or cut off; its writes fail from then on.
    #[arg(long)]
    pub preempt: bool,

    /// Reserve these disks at the storage even if persistent_reservations does not apply
    /// to them by default; fail if one cannot be.
    #[arg(long, conflicts_with = "no_pr")]
    pub pr: bool,

    /// Leases only: no persistent reservation for these disks.
    #[arg(long, conflicts_with = "preempt")]
    pub no_pr: bool,
}

impl PrFlags {
    /// The protocol's `pr` field: `None` follows the configuration.
    pub fn wanted(&self) -> Option<bool> {
        match (self.pr, self.no_pr) {
            (true, _) => Some(true),
            (_, true) => Some(false),
            _ => None,
        }
    }
}

#[derive(Debug, Args)]
pub struct AcquireArgs {
    /// Disks to lease.
    #[arg(value_name = "DISK", required = true)]
    pub disks: Vec<OsString>,

    /// Take shared leases instead of exclusive ones.
    #[arg(long, conflicts_with = "readonly")]
    pub shared: bool,

    /// The disks are read-only: a shared lease, or none when readonly_disk_leases = 0.
    #[arg(long)]
    pub readonly: bool,

    #[command(flatten)]
    pub owner: OwnerArgs,

    #[command(flatten)]
    pub pr: PrFlags,

    /// The process whose exit releases the leases (default: the caller's parent).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ReleaseArgs {
    /// Disks whose leases to give back (for every owner, or only --uuid's).
    #[arg(value_name = "DISK", required_unless_present = "owner")]
    pub disks: Vec<OsString>,

    /// Release every lease of the owners with this name (with --uuid: of that owner).
    #[arg(long, value_name = "NAME", conflicts_with = "disks")]
    pub owner: Option<String>,

    /// Only this owner's hold.
    #[arg(long, value_name = "UUID")]
    pub uuid: Option<String>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct InspectArgs {
    /// A lease file, or a disk whose lease file to read.
    #[arg(value_name = "LEASE-OR-DISK")]
    pub target: OsString,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// A disk to hold exclusively.
    #[arg(long = "disk", value_name = "DISK")]
    pub disks: Vec<OsString>,

    /// A disk to hold shared.
    #[arg(long = "shared-disk", value_name = "DISK")]
    pub shared_disks: Vec<OsString>,

    /// A read-only disk: a shared lease, or none when readonly_disk_leases = 0.
    #[arg(long = "readonly-disk", value_name = "DISK")]
    pub readonly_disks: Vec<OsString>,

    #[command(flatten)]
    pub owner: OwnerArgs,

    #[command(flatten)]
    pub pr: PrFlags,

    /// Hold the leases in this process even if a daemon runs.
    #[arg(long)]
    pub no_daemon: bool,

    /// The command and its arguments.
    #[arg(value_name = "CMD", last = true, required = true)]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct ConfigArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct Lookup {
    /// Disks to look up.
    #[arg(
        value_name = "DISK",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub disks: Vec<OsString>,

    /// Look up every block device on this host.
    #[arg(long)]
    pub all: bool,

    /// Print a JSON array instead of a table.
    #[arg(long)]
    pub json: bool,

    /// Ask SCSI disks for their identity (INQUIRY through SG_IO, as scsi_id does) instead of
    /// trusting the VPD pages the kernel cached at scan time.
    #[arg(long)]
    pub probe: bool,

    /// Print the name another lock manager would use for each disk path as written.
    #[arg(long, value_enum, value_name = "MANAGER")]
    pub compat: Option<Compat>,

    /// Also show this host's reservation key and each disk's current reservation holder
    /// (READ RESERVATION through SG_IO; needs root).
    #[arg(long, conflicts_with = "compat")]
    pub pr: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// libvirt's lockd plugin: LV UUID / scsi_id WWID / SHA-256 of the literal path.
    Virtlockd,
    /// libvirt's sanlock plugin: MD5 of the literal path in disk_lease_dir.
    Sanlock,
}

#[derive(Debug, Args)]
pub struct PrArgs {
    /// Print JSON.
    #[arg(long, global = true)]
    pub json: bool,

    #[command(subcommand)]
    pub command: PrCommand,
}

#[derive(Debug, Subcommand)]
pub enum PrCommand {
    /// This host's reservation key and where it comes from (host_key, host_id or machine id).
    Key,
    /// The registered keys (with initiators where the target has READ FULL STATUS).
    Keys {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
    },
    /// The reservation: holder key and type.
    Reservation {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
    },
    /// Paths, this host's key and registrations, the reservation.
    Status {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
    },
    /// What the target supports (REPORT CAPABILITIES).
    Capabilities {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
    },
    /// Register a key (default: this host's) on every path.
    Register {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
        /// The key (0x hex or decimal).
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
        /// APTPL: ask the target to keep the registrations and the reservation across a
        /// power loss (tgt refuses it).
        #[arg(long)]
        aptpl: bool,
        /// ALL_TG_PT: register through every target port of the device at once.
        #[arg(long)]
        all_tg_pt: bool,
    },
    /// Remove this host's registration from every path.
    Unregister {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
    },
    /// Reserve the disk (default type: pr_type from the configuration).
    Reserve {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
        /// we, ea, we-ro, ea-ro, we-ar, ea-ar, or the SCSI code.
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// The key (default: this host's).
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Release the reservation (default type: the one in force).
    Release {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
        /// The type to release.
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
        /// The key (default: this host's).
        #[arg(long, value_name = "KEY")]
        key: Option<String>,
    },
    /// Take the disk from another key: register, PREEMPT (AND ABORT), verify.
    Preempt {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
        /// The key to remove (never this host's own).
        #[arg(long, value_name = "KEY")]
        victim: String,
        /// PREEMPT AND ABORT: also abort the victim's queued commands (falls back to PREEMPT
        /// on targets without it, such as tgt).
        #[arg(long)]
        abort: bool,
        /// The reservation type to take (default: pr_type).
        #[arg(long = "type", value_name = "TYPE")]
        kind: Option<String>,
    },
    /// Remove every registration and the reservation (CLEAR).
    Clear {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
    },
    /// Compare the disk with what this host expects; --repair fixes what it can.
    ///
    /// Without --held or --free, the key is expected on every path where it is registered
    /// at all, and the reservation is not judged.
    Check {
        /// The disk.
        #[arg(value_name = "DISK")]
        disk: OsString,
        /// Fix what can be fixed: register missing paths, reserve again, drop stale keys.
        #[arg(long)]
        repair: bool,
        /// This host should hold the disk with a reservation of this type.
        #[arg(long, value_name = "TYPE", conflicts_with = "free")]
        held: Option<String>,
        /// This host should not be registered at all.
        #[arg(long)]
        free: bool,
    },
}

#[derive(Debug, Args)]
pub struct FenceArgs {
    /// The host to fence: its key (0x…), or `id:N` for disklock host id N.
    #[arg(value_name = "VICTIM")]
    pub victim: String,

    /// Disks to take from it.
    #[arg(value_name = "DISK", required = true)]
    pub disks: Vec<OsString>,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}
