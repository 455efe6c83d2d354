//! Every block device on the host, for `disklock lookup --all`.
//!
//! The list comes from libudev when the `udev` feature is on and the root is the host's own
//! (libudev enumerates sysfs itself and needs no running udevd), and from `/sys/class/block`
//! otherwise. Both give the same set; devices that cannot hold a VM's disk are left out:
//! RAM disks (and zram swap), loop devices with nothing attached, and hidden devices (the per-path nodes
//! behind an NVMe multipath head).

use std::path::Path;

use crate::resolve::DevNo;
use crate::sysroot::SysRoot;

/// One block device found by enumeration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockDevice {
    /// Kernel name.
    pub name: String,
    /// Device number.
    pub devno: DevNo,
}

/// How the list was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enumerator {
    /// libudev's enumerator.
    Udev,
    /// A walk of `/sys/class/block`.
    Sysfs,
}

/// Lists block devices sorted by device number; libudev is used when compiled in and `root`
/// is the host's, falling back to sysfs if it fails.
pub fn block_devices(root: &SysRoot) -> std::io::Result<(Vec<BlockDevice>, Enumerator)> {
    #[cfg(feature = "udev")]
    if root.is_host()
        && let Ok(v) = udev_block_devices(root)
    {
        return Ok((v, Enumerator::Udev));
    }
    Ok((sysfs_block_devices(root)?, Enumerator::Sysfs))
}

/// Lists block devices from `/sys/class/block`, sorted by device number.
pub fn sysfs_block_devices(root: &SysRoot) -> std::io::Result<Vec<BlockDevice>> {
    let class = root.real("/sys/class/block");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&class)? {
        let entry = entry?;
        let Some(name) = entry.file_name().to_str().map(ToOwned::to_owned) else {
            continue;
        };
        let dir = class.join(&name);
        let Some(devno) = std::fs::read_to_string(dir.join("dev"))
            .ok()
            .and_then(|s| DevNo::parse(&s))
        else {
            continue;
        };
        if wanted(&name, &dir) {
            out.push(BlockDevice { name, devno });
        }
    }
    out.sort_by_key(|d| d.devno);
    Ok(out)
}

#[cfg(feature = "udev")]
fn udev_block_devices(root: &SysRoot) -> std::io::Result<Vec<BlockDevice>> {
    let mut en = udev::Enumerator::new()?;
    en.match_subsystem("block")?;
    let class = root.real("/sys/class/block");
    let mut out = Vec::new();
    for d in en.scan_devices()? {
        let (Some(name), Some(dev)) = (d.sysname().to_str(), d.devnum()) else {
            continue;
        };
        if wanted(name, &class.join(name)) {
            out.push(BlockDevice {
                name: name.to_owned(),
                devno: DevNo::from_dev_t(dev),
            });
        }
    }
    out.sort_by_key(|d| d.devno);
    Ok(out)
}

/// Whether a block device could back a VM disk.
fn wanted(name: &str, dir: &Path) -> bool {
    let attr = |a: &str| std::fs::read_to_string(dir.join(a)).unwrap_or_default();
    if name.starts_with("ram") || name.starts_with("zram") {
        return false;
    }
    if name.starts_with("loop") && !dir.join("loop/backing_file").exists() {
        return false;
    }
    attr("hidden").trim() != "1"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// libudev and the sysfs walk must list the same devices, or `lookup --all` would depend on
    /// how the binary was built. Runs on this host's real devices.
    #[cfg(feature = "udev")]
    #[test]
    fn udev_and_sysfs_agree_on_this_host() {
        let root = SysRoot::host();
        let sysfs = sysfs_block_devices(&root).expect("sysfs enumeration");
        let udev = udev_block_devices(&root).expect("libudev enumeration");
        assert!(!sysfs.is_empty(), "this host has no block devices?");
        assert_eq!(udev, sysfs);
    }
}
