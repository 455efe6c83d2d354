//! Block device enumeration over a fake sysfs tree (`disklock_testkit::faketree`).

use disklock_naming::enumerate::sysfs_block_devices;
use disklock_naming::{DevNo, SysRoot};
use disklock_testkit::faketree::TreeBuilder;

#[test]
fn skips_ram_zram_idle_loops_and_hidden() {
    let t = tempfile::tempdir().unwrap();
    let b = TreeBuilder::new(t.path());
    let dev = |n: u32| DevNo { major: 7, minor: n };
    for (i, name) in (0u32..).zip(["ram0", "zram0", "loop0", "loop1", "nvme0c0n1", "vda"]) {
        b.virtio(name, dev(i)).unwrap();
    }
    b.file(
        "/sys/class/block/loop1/loop/backing_file",
        b"/images/a.img\n",
    )
    .unwrap();
    b.file("/sys/class/block/nvme0c0n1/hidden", b"1\n").unwrap();
    let names: Vec<String> = sysfs_block_devices(&SysRoot::new(t.path()))
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, ["loop1", "vda"]);
}
