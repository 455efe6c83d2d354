//! `disklock lookup` (and `disklock pr` on the same kinds of disks) driven as a user drives
//! it: the real binary, a fake sysfs/udev/dev tree given with --sysroot, and a config file in
//! a temporary directory. The fake tree has device nodes but this host has no SCSI layer, so
//! opening a "SCSI disk" fails: the `pr` tests here check usage, refusals and failure paths;
//! real reservations are tested in QEMU guests (vm-harness/tests/pr.rs).
//!
//! Device nodes are made with mknod, so these tests need root (named `root_…`); they fail
//! loudly without it. The `pr` commands on the same tree are in tests/pr.rs.

mod common;

use common::devices::*;
use disklock_naming::key::{md5_hex, sha256_hex};
use std::process::Command;

const FIELDS: [&str; 9] = [
    "input",
    "device",
    "devno",
    "key",
    "source",
    "host_local",
    "lockspace",
    "lease",
    "error",
];

#[test]
fn root_json_rows_for_each_kind_of_disk() {
    let e = dev_env();
    let out = e.run(&[
        "lookup",
        "--json",
        "/dev/sda",
        "/dev/sda1",
        "/dev/vg0/lv0",
        "/dev/vda",
        "/images/guest.img",
    ]);
    let rows = ok_json(&out);
    for r in &rows {
        for f in FIELDS {
            assert!(r.get(f).is_some(), "field {f} missing in {r}");
        }
        assert!(r["error"].is_null());
    }
    let ls = e.lockspaces();
    let want = [
        ("sda", "8:0", WWID.to_owned(), "scsi-wwid", "scsi"),
        ("sda1", "8:1", format!("{WWID}-part1"), "scsi-wwid", "scsi"),
        ("dm-0", "253:0", LV_UUID.to_owned(), "lvm-uuid", "lvm"),
        (
            "vda",
            "254:0",
            sha256_hex(b"/dev/vda"),
            "path-sha256",
            "files",
        ),
    ];
    for (r, (dev, devno, key, source, space)) in rows.iter().zip(want) {
        assert_eq!(r["device"], dev);
        assert_eq!(r["devno"], devno);
        assert_eq!(r["key"], key.as_str());
        assert_eq!(r["source"], source);
        assert_eq!(r["host_local"], source == "path-sha256");
        assert_eq!(r["lockspace"], ls.join(space).to_str().unwrap());
        assert_eq!(r["lease"], ls.join(space).join(&key).to_str().unwrap());
    }
    let img = &rows[4];
    assert_eq!(img["source"], "file-sha256");
    assert_eq!(img["key"], sha256_hex(b"/images/guest.img").as_str());
    assert!(img["device"].is_null());
    // The host-local key comes with a warning on stderr.
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning: vda") && err.contains("this host only"),
        "{err}"
    );
}

#[test]
fn root_failures_do_not_stop_the_others() {
    let e = dev_env();
    let out = e.run(&["lookup", "--json", "/dev/nope", "/dev/sda", "/dev"]);
    assert_eq!(out.status.code(), Some(1));
    let rows = json(&out);
    assert_eq!(rows.len(), 3);
    assert_eq!(rows[0]["error"], "no such file or directory");
    assert!(rows[0]["key"].is_null());
    assert_eq!(rows[1]["key"], WWID);
    assert!(rows[2]["error"].as_str().unwrap().contains("directory"));
    let err = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 2, "one line per failed input: {err}");
    assert_eq!(lines[0], "disklock: /dev/nope: no such file or directory");
    assert!(lines[1].starts_with("disklock: /dev: "), "{err}");
}

#[test]
fn root_table_for_people() {
    let e = dev_env();
    let out = e.run(&["lookup", &format!("/dev/disk/by-id/scsi-{WWID}")]);
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 2, "{text}");
    assert!(
        lines[0].starts_with("DISK") && lines[0].contains("KEY"),
        "{text}"
    );
    let cols: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!(cols[1..5], ["sda", "8:0", "scsi-wwid", WWID]);
}

#[test]
fn root_all_lists_every_device_once() {
    let e = dev_env();
    let out = e.run(&["lookup", "--all", "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let devs: Vec<String> = json(&out)
        .iter()
        .map(|r| r["device"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(devs, ["sda", "sda1", "dm-0", "vda"]);
}

#[test]
fn root_key_source_order_comes_from_the_config() {
    let e = dev_env();
    let mut conf = std::fs::read_to_string(e.conf()).unwrap();
    conf.push_str("key_sources = [ \"by-path-sha256\", \"path-sha256\" ]\n");
    std::fs::write(e.conf(), conf).unwrap();
    let out = e.run(&["lookup", "--json", "/dev/sda"]);
    let rows = json(&out);
    assert_eq!(rows[0]["source"], "path-sha256");
    assert_eq!(rows[0]["key"], sha256_hex(b"/dev/sda").as_str());
}

#[test]
fn root_compat_names() {
    let e = dev_env();
    let out = e.run(&[
        "lookup",
        "--json",
        "--compat",
        "virtlockd",
        "/dev/vg0/lv0",
        "/dev/sda1",
        "/images/../images/guest.img",
    ]);
    let rows = ok_json(&out);
    assert_eq!(rows[0]["key"], LV_UUID);
    assert_eq!(rows[0]["source"], "lvm-uuid");
    // scsi_id on a partition reports the whole disk.
    assert_eq!(rows[1]["key"], WWID);
    // virtlockd hashes the path exactly as written.
    assert_eq!(
        rows[2]["key"],
        sha256_hex(b"/images/../images/guest.img").as_str()
    );
    assert_eq!(rows[2]["source"], "literal-sha256");
    let out = e.run(&[
        "lookup",
        "--json",
        "--compat",
        "sanlock",
        "/var/lib/libvirt/images/demo.img",
    ]);
    let rows = json(&out);
    assert_eq!(rows[0]["key"], "bfa0240911bc17753e0b473688822159");
    assert_eq!(
        rows[0]["key"],
        md5_hex(b"/var/lib/libvirt/images/demo.img").as_str()
    );
    assert_eq!(
        rows[0]["lease"],
        "/var/lib/libvirt/sanlock/bfa0240911bc17753e0b473688822159"
    );
}

#[test]
fn root_qemu_lockd_conf_carries_over() {
    let e = dev_env();
    let lockd = e.dir.path().join("qemu-lockd.conf");
    std::fs::write(
        &lockd,
        "auto_disk_leases = 1\nrequire_lease_for_disks = 1\nscsi_lockspace_dir = \"/var/lib/libvirt/lockd/scsivolumes\"\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_disklock"))
        .arg("--config")
        .arg(&lockd)
        .arg("--sysroot")
        .arg(e.root())
        .args(["lookup", "--json", "/dev/sda"])
        .output()
        .unwrap();
    let rows = json(&out);
    assert_eq!(
        rows[0]["lease"],
        format!("/var/lib/libvirt/lockd/scsivolumes/{WWID}")
    );
}

#[test]
fn root_config_errors_are_one_line_with_position_and_exit_2() {
    let e = dev_env();
    std::fs::write(e.conf(), "file_lockspace_dir = 12\n").unwrap();
    let out = e.run(&["lookup", "/dev/sda"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("disklock.conf:1:"), "{err}");
    assert!(out.stdout.is_empty());
    // A missing --config file is an error too, naming the file.
    let out = Command::new(env!("CARGO_BIN_EXE_disklock"))
        .args([
            "--config",
            "/nonexistent/disklock.conf",
            "lookup",
            "/dev/sda",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/disklock.conf"));
}

#[test]
fn root_unknown_keys_are_warned_with_their_line() {
    let e = dev_env();
    let mut conf = std::fs::read_to_string(e.conf()).unwrap();
    conf.push_str("frobnicate = 1\n");
    std::fs::write(e.conf(), conf).unwrap();
    let out = e.run(&["lookup", "/dev/sda"]);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("warning:") && err.contains(":6:") && err.contains("frobnicate"),
        "{err}"
    );
}

#[test]
fn root_usage_errors_and_help() {
    let out = Command::new(env!("CARGO_BIN_EXE_disklock"))
        .args(["lookup"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "lookup needs disks or --all");
    let out = Command::new(env!("CARGO_BIN_EXE_disklock"))
        .args(["lookup", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    for word in ["--all", "--json", "--compat", "-partN", "by-path-sha256"] {
        assert!(help.contains(word), "help lacks {word}: {help}");
    }
    let out = Command::new(env!("CARGO_BIN_EXE_disklock"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("Exit status"));
}
