//! A fake device tree for tests of `disklock lookup` and `disklock pr`: sysfs, udev and
//! `/dev` under a temporary root given with `--sysroot`, and a config naming lockspaces
//! beside it. Device nodes are made with mknod, so whoever uses it must run as root (it
//! fails loudly otherwise); such tests are named `root_…`.

use std::path::PathBuf;
use std::process::{Command, Output};

use disklock_naming::DevNo;
use disklock_testkit::faketree::{TreeBuilder, captured};
use serde_json::Value;

pub const WWID: &str = captured::TGT_LUN1_WWID;
pub const LV_DM_UUID: &str = captured::LV_DM_UUID;
pub const LV_UUID: &str = captured::LV_UUID;

pub fn dn(major: u32, minor: u32) -> DevNo {
    DevNo { major, minor }
}

pub struct DevEnv {
    pub dir: tempfile::TempDir,
}

impl DevEnv {
    pub fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    pub fn conf(&self) -> PathBuf {
        self.dir.path().join("disklock.conf")
    }
    pub fn lockspaces(&self) -> PathBuf {
        self.dir.path().join("ls")
    }
    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_disklock"))
            .arg("--config")
            .arg(self.conf())
            .arg("--sysroot")
            .arg(self.root())
            .args(args)
            .env_remove("DISKLOCK_CONFIG")
            .output()
            .expect("run disklock")
    }
}

/// sda + sda1 on the tgt LUN, an LVM LV dm-0 on sda, a virtio disk vda with no identity, and
/// a disk image; device nodes and the usual /dev links.
pub fn dev_env() -> DevEnv {
    assert!(
        nix::unistd::geteuid().is_root(),
        "these tests make device nodes with mknod and must run as root"
    );
    let dir = tempfile::tempdir().unwrap();
    let b = TreeBuilder::new(dir.path().join("root"));
    let sda = b
        .scsi_disk(
            "sda",
            dn(8, 0),
            (0, 0, 0, 0),
            Some(captured::TGT_LUN1_PG83),
            None,
            "VMHARN",
            "SANLUN",
        )
        .unwrap();
    b.partition(&sda, "sda1", dn(8, 1), 1).unwrap();
    b.dm("dm-0", dn(253, 0), "vg0-lv0", LV_DM_UUID, &["sda"])
        .unwrap();
    b.virtio("vda", dn(254, 0)).unwrap();
    for (node, d) in [
        ("sda", dn(8, 0)),
        ("sda1", dn(8, 1)),
        ("dm-0", dn(253, 0)),
        ("vda", dn(254, 0)),
    ] {
        b.block_node(&format!("/dev/{node}"), d).unwrap();
    }
    b.rel_link("/dev/mapper/vg0-lv0", "/dev/dm-0").unwrap();
    b.rel_link("/dev/vg0/lv0", "/dev/dm-0").unwrap();
    b.rel_link(&format!("/dev/disk/by-id/scsi-{WWID}"), "/dev/sda")
        .unwrap();
    b.file("/images/guest.img", b"").unwrap();
    let env = DevEnv { dir };
    let ls = env.lockspaces();
    std::fs::write(
        env.conf(),
        format!(
            "# test configuration\nfile_lockspace_dir = \"{0}/files\"\nlvm_lockspace_dir = \"{0}/lvm\"\n\
             scsi_lockspace_dir = \"{0}/scsi\"\nlockd_conf = \"\"\n",
            ls.display()
        ),
    )
    .unwrap();
    env
}

pub fn json(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
        .as_array()
        .expect("an array")
        .clone()
}

/// The rows of a run that must have succeeded.
pub fn ok_json(out: &Output) -> Vec<Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(out)
}

/// The fake tree with persistent reservations on and host id 7.
pub fn pr_env() -> DevEnv {
    let e = dev_env();
    let mut conf = std::fs::read_to_string(e.conf()).unwrap();
    conf.push_str("persistent_reservations = 1\nhost_id = 7\n");
    std::fs::write(e.conf(), conf).unwrap();
    e
}

pub fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
