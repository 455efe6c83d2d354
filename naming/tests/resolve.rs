//! The resolver against fake sysfs/udev/dev trees.
//!
//! Identifiers are real ones observed in QEMU guests on a tgt LUN (`faketree::captured`): the
//! VPD 0x83 page and what scsi_id printed for it, the dm uuid and LV UUID of an LVM LV.
//! `guest_capture.rs` replays a whole capture of a guest's real sysfs instead.
//!
//! Tests that make device nodes need root (mknod); they say so if they cannot.

use std::ffi::OsStr;
use std::path::Path;

use disklock_naming::key::sha256_hex;
use disklock_naming::resolve::VpdFallback;
use disklock_naming::sysroot::WalkError;
use disklock_naming::{DevNo, PathKind, ResolveError, Resolver, Source, SysRoot};
use disklock_testkit::faketree::{TreeBuilder, captured};

const WWID: &str = captured::TGT_LUN1_WWID;
const LV_DM_UUID: &str = captured::LV_DM_UUID;
const LV_UUID: &str = captured::LV_UUID;
const BY_PATH: &str = "pci-0000:00:02.0-scsi-0:0:0:0";

fn dn(major: u32, minor: u32) -> DevNo {
    DevNo { major, minor }
}

fn tgt_pg83() -> Vec<u8> {
    captured::TGT_LUN1_PG83.to_vec()
}

fn pg80(serial: &str) -> Vec<u8> {
    let s = format!("{serial:>36}");
    let mut p = vec![0x00, 0x80, 0x00, u8::try_from(s.len()).unwrap()];
    p.extend_from_slice(s.as_bytes());
    p
}

struct Tree {
    _dir: tempfile::TempDir,
    b: TreeBuilder,
    root: SysRoot,
}

fn tree() -> Tree {
    let dir = tempfile::tempdir().unwrap();
    let b = TreeBuilder::new(dir.path());
    b.dir("/sys/dev/block").unwrap();
    b.dir("/dev").unwrap();
    let root = SysRoot::new(dir.path());
    Tree { _dir: dir, b, root }
}

fn resolver(t: &Tree) -> Resolver {
    Resolver::new(t.root.clone(), &Source::DEFAULT_ORDER).with_vpd_fallback(None)
}

fn require_root() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes device nodes with mknod and must run as root"
    );
}

/// sda (8:0) on the tgt LUN with a udev record and a by-path link; sda1 (8:1) partition 1.
fn scsi_tree() -> Tree {
    let t = tree();
    let pg83 = tgt_pg83();
    let dir =
        t.b.scsi_disk(
            "sda",
            dn(8, 0),
            (0, 0, 0, 0),
            Some(&pg83),
            Some(&pg80("lun1-serial")),
            "VMHARN",
            "SANLUN",
        )
        .unwrap();
    t.b.partition(&dir, "sda1", dn(8, 1), 1).unwrap();
    t.b.udev_db(
        dn(8, 0),
        &format!("S:disk/by-path/{BY_PATH}\nS:disk/by-id/scsi-{WWID}\nE:ID_SERIAL={WWID}\n"),
    )
    .unwrap();
    t.b.udev_db(dn(8, 1), &format!("S:disk/by-path/{BY_PATH}-part1\n"))
        .unwrap();
    t
}

#[test]
fn scsi_disk_key_is_scsi_id_form() {
    let t = scsi_tree();
    let r = resolver(&t).resolve_devno(dn(8, 0)).unwrap();
    assert_eq!(r.key.as_str(), WWID);
    assert_eq!(r.source, Source::ScsiWwid);
    assert!(!r.host_local);
    let b = r.block.unwrap();
    assert_eq!((b.name.as_str(), b.partition), ("sda", None));
}

#[test]
fn partition_key_has_part_suffix() {
    let t = scsi_tree();
    let r = resolver(&t).resolve_devno(dn(8, 1)).unwrap();
    assert_eq!(r.key.as_str(), format!("{WWID}-part1"));
    assert_eq!(r.source, Source::ScsiWwid);
    let b = r.block.unwrap();
    assert_eq!(b.partition, Some(1));
    assert_eq!(b.whole_disk.as_deref(), Some("sda"));
}

#[test]
fn scsi_without_pg83_falls_back_to_sg_io_reader() {
    struct Fake(Vec<u8>);
    impl VpdFallback for Fake {
        fn scsi_id_wwid(&self, node: &Path) -> Option<String> {
            assert!(
                node.ends_with("dev/sdc"),
                "fallback must open the whole disk: {node:?}"
            );
            disklock_scsi::vpd::scsi_id_wwid(Some(&self.0), None, b"VMHARN  ", b"SANLUN          ")
        }
    }
    let t = tree();
    let dir =
        t.b.scsi_disk(
            "sdc",
            dn(8, 32),
            (0, 0, 2, 0),
            None,
            None,
            "VMHARN",
            "SANLUN",
        )
        .unwrap();
    t.b.partition(&dir, "sdc2", dn(8, 34), 2).unwrap();
    let res = resolver(&t);
    // Without a fallback there is no WWID: the key falls through to a later source.
    assert_eq!(
        res.resolve_devno(dn(8, 32)).unwrap().source,
        Source::PathSha256
    );
    let res = res.with_vpd_fallback(Some(Box::new(Fake(tgt_pg83()))));
    let r = res.resolve_devno(dn(8, 34)).unwrap();
    assert_eq!(r.key.as_str(), format!("{WWID}-part2"));
    assert!(r.detail.contains("SG_IO"), "{}", r.detail);
}

#[test]
fn multipath_map_over_two_paths() {
    let t = tree();
    let pg83 = tgt_pg83();
    for (name, minor, tgt) in [("sda", 0, 0), ("sdb", 16, 1)] {
        t.b.scsi_disk(
            name,
            dn(8, minor),
            (0, 0, tgt, 0),
            Some(&pg83),
            None,
            "VMHARN",
            "SANLUN",
        )
        .unwrap();
    }
    t.b.dm(
        "dm-0",
        dn(253, 0),
        WWID,
        &format!("mpath-{WWID}"),
        &["sda", "sdb"],
    )
    .unwrap();
    t.b.dm(
        "dm-1",
        dn(253, 1),
        &format!("{WWID}1"),
        &format!("part1-mpath-{WWID}"),
        &["dm-0"],
    )
    .unwrap();
    let res = resolver(&t);
    let map = res.resolve_devno(dn(253, 0)).unwrap();
    assert_eq!(map.key.as_str(), WWID);
    assert_eq!(map.source, Source::ScsiWwid);
    assert_eq!(map.block.as_ref().unwrap().dm_name.as_deref(), Some(WWID));
    // Both paths name the same LUN, so they get the map's key.
    for minor in [0, 16] {
        assert_eq!(res.resolve_devno(dn(8, minor)).unwrap().key.as_str(), WWID);
    }
    let part = res.resolve_devno(dn(253, 1)).unwrap();
    assert_eq!(part.key.as_str(), format!("{WWID}-part1"));
    assert_eq!(part.block.unwrap().partition, Some(1));
    // Reservations go to every path: the map's slaves, also for a kpartx partition of it.
    for map in [dn(253, 0), dn(253, 1)] {
        let paths = res.storage_paths(map).unwrap();
        let names: Vec<_> = paths.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["sda", "sdb"], "{map}");
        assert!(paths.iter().all(|p| p.kind == PathKind::Scsi));
        assert_eq!(paths[1].node, t.root.real("/dev/sdb"));
        assert_eq!(paths[1].devno, dn(8, 16));
    }
    // A path itself is its own only path.
    let one = res.storage_paths(dn(8, 16)).unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].name, "sdb");
}

#[test]
fn lvm_lv_on_scsi_pv() {
    let t = tree();
    t.b.scsi_disk(
        "sda",
        dn(8, 0),
        (0, 0, 0, 0),
        Some(&tgt_pg83()),
        None,
        "VMHARN",
        "SANLUN",
    )
    .unwrap();
    t.b.dm("dm-0", dn(253, 0), "vg0-lv0", LV_DM_UUID, &["sda"])
        .unwrap();
    t.b.dm(
        "dm-1",
        dn(253, 1),
        "vg0-snap-cow",
        &format!("{LV_DM_UUID}-cow"),
        &["sda"],
    )
    .unwrap();
    let res = resolver(&t);
    let lv = res.resolve_devno(dn(253, 0)).unwrap();
    assert_eq!(lv.key.as_str(), LV_UUID);
    assert_eq!(lv.source, Source::LvmUuid);
    assert!(lv.warnings.is_empty());
    // An LV has no storage of its own to reserve; its PV does.
    assert_eq!(res.storage_paths(dn(253, 0)).unwrap(), []);
    assert_eq!(res.storage_paths(dn(8, 0)).unwrap()[0].kind, PathKind::Scsi);
    let cow = res.resolve_devno(dn(253, 1)).unwrap();
    assert_eq!(cow.key.as_str(), LV_UUID);
    assert!(
        cow.warnings[0].contains("internal LVM sub-device"),
        "{:?}",
        cow.warnings
    );
    // The source order is the user's: with scsi first, the LV is still not a SCSI disk.
    let scsi_first =
        Resolver::new(t.root.clone(), &[Source::ScsiWwid, Source::LvmUuid]).with_vpd_fallback(None);
    assert_eq!(
        scsi_first.resolve_devno(dn(253, 0)).unwrap().source,
        Source::LvmUuid
    );
    // virtlockd's scsi rule would call the LV by its PV's WWID.
    assert_eq!(
        res.scsi_wwid_as_scsi_id(dn(253, 0)).unwrap().as_deref(),
        Some(WWID)
    );
    assert_eq!(res.lv_uuid(dn(253, 0)).unwrap().as_deref(), Some(LV_UUID));
}

#[test]
fn malformed_lvm_uuid_is_an_error_not_a_fallthrough() {
    let t = tree();
    t.b.dm("dm-0", dn(253, 0), "vg-lv", "LVM-tooshort", &[])
        .unwrap();
    let err = resolver(&t).resolve_devno(dn(253, 0)).unwrap_err();
    assert!(matches!(err, ResolveError::BadLvmUuid { .. }), "{err}");
}

#[test]
fn nvme_namespace_and_partition() {
    let t = tree();
    let dir =
        t.b.nvme("nvme0n1", dn(259, 0), "eui.0025388b71b1e8e2")
            .unwrap();
    t.b.partition(&dir, "nvme0n1p1", dn(259, 1), 1).unwrap();
    let res = resolver(&t);
    let ns = res.resolve_devno(dn(259, 0)).unwrap();
    assert_eq!(
        (ns.key.as_str(), ns.source),
        ("eui.0025388b71b1e8e2", Source::NvmeWwid)
    );
    let p = res.resolve_devno(dn(259, 1)).unwrap();
    assert_eq!(p.key.as_str(), "eui.0025388b71b1e8e2-part1");
    // The partition's storage is the namespace.
    let paths = res.storage_paths(dn(259, 1)).unwrap();
    assert_eq!(paths.len(), 1);
    assert_eq!(
        (paths[0].name.as_str(), paths[0].kind),
        ("nvme0n1", PathKind::Nvme)
    );
}

#[test]
fn virtio_without_serial_by_path_then_host_local() {
    let t = tree();
    t.b.virtio("vda", dn(254, 0)).unwrap();
    t.b.virtio("vdb", dn(254, 16)).unwrap();
    // vda has a by-path link (no udev database on this host); vdb has nothing.
    t.b.by_path("pci-0000:00:05.0", "vda").unwrap();
    let res = resolver(&t);
    let a = res.resolve_devno(dn(254, 0)).unwrap();
    assert_eq!(a.source, Source::ByPathSha256);
    assert_eq!(
        a.key.as_str(),
        sha256_hex(b"/dev/disk/by-path/pci-0000:00:05.0")
    );
    let b = res.resolve_devno(dn(254, 16)).unwrap();
    assert_eq!(b.source, Source::PathSha256);
    assert!(b.host_local);
    assert_eq!(b.key.as_str(), sha256_hex(b"/dev/vdb"));
    assert!(b.warnings[0].contains("this host only"));
}

#[test]
fn udev_database_is_authoritative_for_by_path() {
    let t = scsi_tree();
    // A stray link that disagrees with udev's record is ignored when the record exists.
    t.b.by_path("aaa-stray", "sda").unwrap();
    let res = Resolver::new(t.root.clone(), &[Source::ByPathSha256]).with_vpd_fallback(None);
    let r = res.resolve_devno(dn(8, 0)).unwrap();
    assert_eq!(
        r.key.as_str(),
        sha256_hex(format!("/dev/disk/by-path/{BY_PATH}").as_bytes())
    );
    let p = res.resolve_devno(dn(8, 1)).unwrap();
    assert_eq!(
        p.key.as_str(),
        sha256_hex(format!("/dev/disk/by-path/{BY_PATH}-part1").as_bytes())
    );
}

#[test]
fn disabled_sources_and_no_key() {
    let t = scsi_tree();
    let only_lvm = Resolver::new(t.root.clone(), &[Source::LvmUuid]).with_vpd_fallback(None);
    match only_lvm.resolve_devno(dn(8, 0)) {
        Err(ResolveError::NoKey { tried }) => {
            assert_eq!(tried.len(), 1);
            assert_eq!(tried[0].0, Source::LvmUuid);
        }
        other => panic!("{other:?}"),
    }
    let none = Resolver::new(t.root.clone(), &[]).with_vpd_fallback(None);
    let e = none.resolve_devno(dn(8, 0)).unwrap_err();
    assert!(e.to_string().contains("none enabled"), "{e}");
}

#[test]
fn vanished_device_and_missing_sysfs() {
    let t = scsi_tree();
    let e = resolver(&t).resolve_devno(dn(8, 48)).unwrap_err();
    assert!(
        matches!(e, ResolveError::Vanished(d) if d == dn(8, 48)),
        "{e}"
    );
    let empty = tempfile::tempdir().unwrap();
    let r = Resolver::new(SysRoot::new(empty.path()), &Source::DEFAULT_ORDER);
    assert!(matches!(
        r.resolve_devno(dn(8, 0)),
        Err(ResolveError::NoSysfs(_))
    ));
}

#[test]
fn unreadable_sysfs_attribute_is_an_error() {
    let t = scsi_tree();
    // A directory where an attribute should be makes read fail with EISDIR.
    let dir = t.b.real("/sys/dev/block/8:0/device/vpd_pg83");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir(&dir).unwrap();
    let e = resolver(&t).resolve_devno(dn(8, 0)).unwrap_err();
    assert!(matches!(e, ResolveError::Read { .. }), "{e}");
    assert!(e.to_string().contains("vpd_pg83"), "{e}");
}

// ---- path-level: these make device nodes ----

fn cwd() -> &'static Path {
    Path::new("/")
}

#[test]
fn paths_symlink_chains_and_relative() {
    require_root();
    let t = scsi_tree();
    t.b.block_node("/dev/sda", dn(8, 0)).unwrap();
    t.b.block_node("/dev/sda1", dn(8, 1)).unwrap();
    t.b.by_path(BY_PATH, "sda").unwrap();
    t.b.rel_link(&format!("/dev/disk/by-id/scsi-{WWID}"), "/dev/sda")
        .unwrap();
    t.b.link("/dev/mydisk", &format!("/dev/disk/by-id/scsi-{WWID}"))
        .unwrap();
    let res = resolver(&t);
    for input in [
        "/dev/sda".to_owned(),
        format!("/dev/disk/by-path/{BY_PATH}"),
        "/dev/mydisk".to_owned(),
        "/dev/../dev/./sda".to_owned(),
    ] {
        let r = res.resolve_path(OsStr::new(&input), cwd()).unwrap();
        assert_eq!(r.key.as_str(), WWID, "{input}");
        assert_eq!(r.path, Path::new("/dev/sda"), "{input}");
    }
    // Relative to a working directory inside the root.
    let r = res
        .resolve_path(OsStr::new("sda1"), &t.b.real("/dev"))
        .unwrap();
    assert_eq!(r.key.as_str(), format!("{WWID}-part1"));
}

#[test]
fn image_files_key_by_canonical_path() {
    let t = tree();
    t.b.file("/var/lib/libvirt/images/demo.img", b"").unwrap();
    t.b.link("/images", "/var/lib/libvirt/images").unwrap();
    let r = resolver(&t)
        .resolve_path(OsStr::new("/images/demo.img"), cwd())
        .unwrap();
    assert_eq!(r.source, Source::FileSha256);
    assert_eq!(
        r.key.as_str(),
        "6f716e8c06fc109acd342e3c129a17ccf3c473c1c76363b543a1cbb55d1cd778"
    );
    assert!(r.block.is_none());
}

/// On the host root, a disk image named by its real path skips the walk; the answer is the
/// walk's, and a symlink re-pointed between two resolutions is followed anew.
#[test]
fn host_images_resolve_anew_after_a_symlink_moves() {
    let t = tempfile::tempdir().unwrap();
    let base = std::fs::canonicalize(t.path()).unwrap();
    let p = |rel: &str| base.join(rel);
    for d in ["a", "b"] {
        std::fs::create_dir(p(d)).unwrap();
        std::fs::write(p(&format!("{d}/vm.img")), b"").unwrap();
    }
    std::os::unix::fs::symlink(p("a"), p("cur")).unwrap();
    let res = Resolver::new(SysRoot::host(), &Source::DEFAULT_ORDER);
    let key = |path: &Path| sha256_hex(path.as_os_str().as_encoded_bytes());
    let resolve = |rel: &str| {
        res.resolve_path(p(rel).as_os_str(), Path::new("/"))
            .unwrap()
    };
    // Named by its real path (the fast check): the same answer as the walk gives.
    let direct = resolve("a/vm.img");
    let walked = Resolver::new(SysRoot::new("/"), &Source::DEFAULT_ORDER)
        .resolve_image(SysRoot::host().canonicalize(&p("a/vm.img")).unwrap());
    assert_eq!(direct.key, walked.key);
    assert_eq!(direct.path, walked.path);
    assert_eq!(direct.source, Source::FileSha256);
    assert_eq!(direct.key.as_str(), key(&p("a/vm.img")));
    // Through a symlinked directory, then re-pointed: each time where it leads now.
    assert_eq!(resolve("cur/vm.img").key.as_str(), key(&p("a/vm.img")));
    std::fs::remove_file(p("cur")).unwrap();
    std::os::unix::fs::symlink(p("b"), p("cur")).unwrap();
    assert_eq!(resolve("cur/vm.img").key.as_str(), key(&p("b/vm.img")));
    // A real directory swapped for a symlink: the path is no longer the canonical one.
    std::fs::rename(p("a"), p("a0")).unwrap();
    std::os::unix::fs::symlink(p("b"), p("a")).unwrap();
    let moved = resolve("a/vm.img");
    assert_eq!(moved.key.as_str(), key(&p("b/vm.img")));
    assert_eq!(moved.path, p("b/vm.img"));
}

#[test]
fn bad_inputs_have_one_line_reasons() {
    require_root();
    let t = scsi_tree();
    t.b.dir("/dev/disk/by-id").unwrap();
    t.b.link("/dev/disk/by-id/broken", "../../sdz").unwrap();
    t.b.link("/dev/l1", "l2").unwrap();
    t.b.link("/dev/l2", "l1").unwrap();
    // /dev/sg0 is the SCSI generic node of sda.
    t.b.char_node("/dev/sg0", dn(21, 0)).unwrap();
    t.b.rel_link(
        "/sys/dev/char/21:0",
        "/sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/target0:0:0/0:0:0:0/scsi_generic/sg0",
    )
    .unwrap();
    t.b.rel_link(
        "/sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/target0:0:0/0:0:0:0/scsi_generic/sg0/device",
        "/sys/devices/pci0000:00/0000:00:02.0/virtio0/host0/target0:0:0/0:0:0:0",
    ).unwrap();
    t.b.block_node("/dev/stale", dn(8, 240)).unwrap();
    nix::unistd::mkfifo(
        &t.b.real("/dev/fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let _sock = std::os::unix::net::UnixListener::bind(t.b.real("/dev/sock")).unwrap();
    let res = resolver(&t);
    let long = "/dev/".to_owned() + &"x/".repeat(2100);
    type Check = Box<dyn Fn(&ResolveError) -> bool>;
    let cases: Vec<(&str, Check, &str)> = vec![
        (
            "/dev/nope",
            Box::new(|e| matches!(e, ResolveError::Walk(WalkError::NotFound { .. }))),
            "does not exist",
        ),
        (
            "/dev/disk/by-id/broken",
            Box::new(|e| matches!(e, ResolveError::Walk(WalkError::BrokenSymlink { .. }))),
            "broken symlink",
        ),
        (
            "/dev/l1",
            Box::new(|e| matches!(e, ResolveError::Walk(WalkError::Loop { .. }))),
            "symlink loop",
        ),
        (
            "/dev/disk",
            Box::new(|e| matches!(e, ResolveError::IsDirectory)),
            "is a directory",
        ),
        (
            "/dev/sg0",
            Box::new(
                |e| matches!(e, ResolveError::CharDevice { block: Some(b), .. } if b == "sda"),
            ),
            "use /dev/sda",
        ),
        (
            "/dev/fifo",
            Box::new(|e| matches!(e, ResolveError::Fifo)),
            "FIFO",
        ),
        (
            "/dev/sock",
            Box::new(|e| matches!(e, ResolveError::Socket)),
            "socket",
        ),
        (
            "/dev/stale",
            Box::new(|e| matches!(e, ResolveError::Vanished(_))),
            "removed",
        ),
        ("", Box::new(|e| matches!(e, ResolveError::Empty)), "empty"),
        (
            "/dev/a\0b",
            Box::new(|e| matches!(e, ResolveError::ContainsNul)),
            "NUL",
        ),
        (
            long.as_str(),
            Box::new(|e| matches!(e, ResolveError::TooLong(_))),
            "4095",
        ),
    ];
    for (input, check, text) in cases {
        let e = res.resolve_path(OsStr::new(input), cwd()).unwrap_err();
        assert!(check(&e), "{input:?}: unexpected {e:?}");
        let msg = e.to_string();
        assert!(msg.contains(text), "{input:?}: {msg}");
        assert!(!msg.contains('\n'), "{input:?}: multi-line message {msg}");
    }
}
