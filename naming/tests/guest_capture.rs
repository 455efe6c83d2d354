//! The resolver on a replay of a real guest's sysfs, udev database and /dev links, checked
//! against what the real tools printed in that guest.
//!
//! `fixtures/guest-capture.txt` is written by the vm-harness capture (see its header for the
//! kernel, udev, lvm2 and tgt versions): a QEMU TCG guest with udev, a tgt LUN over two paths
//! under a dm-multipath map, a partitioned LUN, an LVM LV, an emulated NVMe namespace and a
//! virtio disk without serial. Its `oracle` lines hold the output of `scsi_id --whitelisted
//! --replace-whitespace`, `lvs --noheadings -o uuid` and the kernel's `wwid` attributes.
//!
//! Device nodes are recreated with mknod (root).

use std::ffi::OsStr;
use std::path::Path;

use disklock_naming::enumerate::sysfs_block_devices;
use disklock_naming::key::sha256_hex;
use disklock_naming::{Resolver, Source, SysRoot};
use disklock_testkit::faketree::{Oracle, TreeBuilder};

const CAPTURE: &str = include_str!("fixtures/guest-capture.txt");

struct Replay {
    _dir: tempfile::TempDir,
    root: SysRoot,
    oracles: Vec<Oracle>,
}

fn replay() -> Replay {
    assert!(
        nix::unistd::geteuid().is_root(),
        "replaying a capture makes device nodes with mknod and must run as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let b = TreeBuilder::new(dir.path());
    let oracles = b.apply_manifest(CAPTURE).expect("capture replays");
    let root = SysRoot::new(dir.path());
    for d in sysfs_block_devices(&root).expect("captured /sys/class/block") {
        let node = format!("/dev/{}", d.name);
        if !b.real(&node).exists() {
            b.block_node(&node, d.devno).unwrap();
        }
    }
    Replay {
        _dir: dir,
        root,
        oracles,
    }
}

fn oracles<'a>(r: &'a Replay, tool: &'a str) -> impl Iterator<Item = &'a Oracle> + 'a {
    r.oracles.iter().filter(move |o| o.tool == tool)
}

fn resolver(r: &Replay, order: &[Source]) -> Resolver {
    Resolver::new(r.root.clone(), order).with_vpd_fallback(None)
}

#[test]
fn capture_has_every_kind_of_device() {
    let r = replay();
    let names: Vec<String> = sysfs_block_devices(&r.root)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    for prefix in ["sd", "dm-", "nvme", "vd"] {
        assert!(
            names.iter().any(|n| n.starts_with(prefix)),
            "no {prefix}* in {names:?}"
        );
    }
    assert!(oracles(&r, "scsi_id").any(|o| !o.output.is_empty()));
    assert!(oracles(&r, "lvs").next().is_some());
}

/// For every device node, the name virtlockd's scsi lockspace would get (what scsi_id prints,
/// whole-disk WWID for partitions, pass-through for dm) equals what scsi_id printed, including
/// printing nothing.
#[test]
fn scsi_id_form_matches_scsi_id_on_every_node() {
    let r = replay();
    let res = resolver(&r, &Source::DEFAULT_ORDER);
    let mut checked = 0;
    for o in oracles(&r, "scsi_id") {
        let got = res
            .resolve_path(OsStr::new(&o.device), Path::new("/"))
            .ok()
            .and_then(|x| x.block)
            .and_then(|b| res.scsi_wwid_as_scsi_id(b.devno).unwrap());
        let want = (!o.output.is_empty()).then(|| o.output.clone());
        assert_eq!(got, want, "{}", o.device);
        checked += 1;
    }
    assert!(checked >= 4, "only {checked} scsi_id oracles");
}

/// disklock's own keys: SCSI disks and multipath maps by their scsi_id WWID (partitions with
/// -partN), LVs by what lvs prints, NVMe by the kernel wwid.
#[test]
fn native_keys_match_the_tools() {
    let r = replay();
    let res = resolver(&r, &Source::DEFAULT_ORDER);
    for o in oracles(&r, "lvs") {
        let x = res
            .resolve_path(OsStr::new(&o.device), Path::new("/"))
            .unwrap();
        assert_eq!(
            (x.source, x.key.as_str()),
            (Source::LvmUuid, o.output.as_str()),
            "{}",
            o.device
        );
    }
    for o in oracles(&r, "scsi_id").filter(|o| !o.output.is_empty()) {
        let x = res
            .resolve_path(OsStr::new(&o.device), Path::new("/"))
            .unwrap();
        let b = x.block.clone().unwrap();
        if x.source == Source::LvmUuid {
            continue; // an LV on the LUN: keyed by its own UUID, checked above
        }
        let want = match b.partition {
            Some(n) => format!("{}-part{n}", o.output),
            None => o.output.clone(),
        };
        assert_eq!(
            (x.source, x.key.as_str()),
            (Source::ScsiWwid, want.as_str()),
            "{}",
            o.device
        );
    }
    let mut nvme = 0;
    for o in oracles(&r, "wwid").filter(|o| o.device.contains("nvme")) {
        let x = res
            .resolve_path(OsStr::new(&o.device), Path::new("/"))
            .unwrap();
        assert_eq!(
            (x.source, x.key.as_str()),
            (Source::NvmeWwid, o.output.as_str()),
            "{}",
            o.device
        );
        nvme += 1;
    }
    assert!(nvme >= 1, "no NVMe wwid oracle in the capture");
}

/// The virtio disk without serial has no WWID; its key is the hash of its by-path name, which
/// comes from the captured udev database.
#[test]
fn virtio_without_serial_gets_by_path_key() {
    let r = replay();
    let res = resolver(&r, &Source::DEFAULT_ORDER);
    let vd = sysfs_block_devices(&r.root)
        .unwrap()
        .into_iter()
        .find(|d| d.name.starts_with("vd"))
        .unwrap();
    let x = res.resolve_devno(vd.devno).unwrap();
    assert_eq!(x.source, Source::ByPathSha256, "{x:?}");
    let links = std::fs::read_dir(r.root.real("/dev/disk/by-path")).unwrap();
    let name = links
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| {
            std::fs::read_link(r.root.real(format!("/dev/disk/by-path/{n}")))
                .is_ok_and(|t| t.file_name() == Some(OsStr::new(&vd.name)))
        })
        .min()
        .expect("a by-path link to the virtio disk");
    assert_eq!(
        x.key.as_str(),
        sha256_hex(format!("/dev/disk/by-path/{name}").as_bytes())
    );
}

/// Every captured device resolves with the default order, and only devices without any
/// cross-host identity are host-local.
#[test]
fn all_devices_resolve() {
    let r = replay();
    let res = resolver(&r, &Source::DEFAULT_ORDER);
    for d in sysfs_block_devices(&r.root).unwrap() {
        let x = res
            .resolve_devno(d.devno)
            .unwrap_or_else(|e| panic!("{}: {e}", d.name));
        if d.name.starts_with("sd") || d.name.starts_with("nvme") {
            assert!(!x.host_local, "{}: {x:?}", d.name);
        }
    }
}
