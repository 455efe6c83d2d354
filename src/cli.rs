//! Command-line arguments.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Exit status:
  0  success
  1  some disks could not be resolved (the others were; see the error lines)
  2  bad usage or configuration; nothing was done

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compat {
    /// libvirt's lockd plugin: LV UUID / scsi_id WWID / SHA-256 of the literal path.
    Virtlockd,
    /// libvirt's sanlock plugin: MD5 of the literal path in disk_lease_dir.
    Sanlock,
}
