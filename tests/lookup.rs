//! `disklock lookup` (and `disklock pr` on the same kinds of disks) driven as a user drives
//! it: the real binary, a fake sysfs/udev/dev tree given with --sysroot, and a config file in
//! a temporary directory. The fake tree has device nodes but this host has no SCSI layer, so
//! opening a "SCSI disk" fails: the `pr` tests here check usage, refusals and failure paths;
//! real reservations are tested in QEMU guests (vm-harness/tests/pr.rs).
//!
//! Device nodes are made with mknod, so these tests need root; they fail loudly without it.

use std::path::PathBuf;
use std::process::{Command, Output};

use disklock_naming::DevNo;
use disklock_naming::key::{md5_hex, sha256_hex};
use disklock_testkit::faketree::{TreeBuilder, captured};
use serde_json::Value;

const WWID: &str = captured::TGT_LUN1_WWID;
const LV_DM_UUID: &str = captured::LV_DM_UUID;
const LV_UUID: &str = captured::LV_UUID;

fn dn(major: u32, minor: u32) -> DevNo {
    DevNo { major, minor }
}

struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }
    fn conf(&self) -> PathBuf {
        self.dir.path().join("disklock.conf")
    }
    fn lockspaces(&self) -> PathBuf {
        self.dir.path().join("ls")
    }
    fn run(&self, args: &[&str]) -> Output {
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
fn env() -> Env {
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
    let env = Env { dir };
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

fn json(out: &Output) -> Vec<Value> {
    serde_json::from_slice::<Value>(&out.stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&out.stdout)))
        .as_array()
        .expect("an array")
        .clone()
}

/// The rows of a run that must have succeeded.
fn ok_json(out: &Output) -> Vec<Value> {
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    json(out)
}

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
fn json_rows_for_each_kind_of_disk() {
    let e = env();
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
fn failures_do_not_stop_the_others() {
    let e = env();
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
fn table_for_people() {
    let e = env();
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
fn all_lists_every_device_once() {
    let e = env();
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
fn key_source_order_comes_from_the_config() {
    let e = env();
    let mut conf = std::fs::read_to_string(e.conf()).unwrap();
    conf.push_str("key_sources = [ \"by-path-sha256\", \"path-sha256\" ]\n");
    std::fs::write(e.conf(), conf).unwrap();
    let out = e.run(&["lookup", "--json", "/dev/sda"]);
    let rows = json(&out);
    assert_eq!(rows[0]["source"], "path-sha256");
    assert_eq!(rows[0]["key"], sha256_hex(b"/dev/sda").as_str());
}

#[test]
fn compat_names() {
    let e = env();
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
fn qemu_lockd_conf_carries_over() {
    let e = env();
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
fn config_errors_are_one_line_with_position_and_exit_2() {
    let e = env();
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
fn unknown_keys_are_warned_with_their_line() {
    let e = env();
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
fn usage_errors_and_help() {
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

/// The fake tree with persistent reservations on and host id 7.
fn pr_env() -> Env {
    let e = env();
    let mut conf = std::fs::read_to_string(e.conf()).unwrap();
    conf.push_str("persistent_reservations = 1\nhost_id = 7\n");
    std::fs::write(e.conf(), conf).unwrap();
    e
}

fn stderr_of(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[test]
fn pr_key_and_usage_errors() {
    let e = pr_env();
    let out = e.run(&["pr", "key", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["key"], "0x444c4b4800000007");
    assert_eq!(v["from"]["kind"], "host_id");
    assert_eq!(v["from"]["host_id"], 7);
    // Bad options are exit 2 before any device is opened, one line naming the option.
    for (args, want) in [
        (
            vec!["pr", "reserve", "--type", "xx", "/dev/sda"],
            "--type \"xx\"",
        ),
        (
            vec![
                "pr",
                "preempt",
                "--victim",
                "0x444c4b4800000007",
                "/dev/sda",
            ],
            "this host's own key",
        ),
        (
            vec!["pr", "preempt", "--victim", "nope", "/dev/sda"],
            "--victim \"nope\"",
        ),
        (
            vec!["pr", "register", "--key", "0", "/dev/sda"],
            "0 is not a reservation key",
        ),
        (
            vec!["pr", "check", "--held", "we-xx", "/dev/sda"],
            "--type \"we-xx\"",
        ),
    ] {
        let out = e.run(&args);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(want), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
    }
}

#[test]
fn pr_refuses_disks_without_reservable_storage() {
    let e = pr_env();
    for (disk, want) in [
        ("/dev/vg0/lv0", "dm-0 has no storage of its own to reserve"),
        (
            "/images/guest.img",
            "a disk image file has no persistent reservations",
        ),
        (
            "/dev/vda",
            "vda is neither a SCSI disk nor an NVMe namespace",
        ),
        // A SCSI disk whose node cannot be opened (no SCSI layer on this host).
        ("/dev/sda1", "cannot open"),
        ("/dev/nope", "no such file or directory"),
    ] {
        let out = e.run(&["pr", "keys", disk]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(1), "{disk}: {err}");
        assert!(
            err.starts_with(&format!("disklock: {disk}: ")),
            "{disk}: {err}"
        );
        assert!(err.contains(want), "{disk}: {err}");
    }
}

#[test]
fn lookup_pr_adds_key_and_holder() {
    let e = pr_env();
    let out = e.run(&["lookup", "--pr", "--json", "/dev/sda", "/images/guest.img"]);
    let rows = ok_json(&out);
    for r in &rows {
        assert_eq!(r["pr_key"], "0x444c4b4800000007");
    }
    // The fake sda cannot be asked; the image has no reservations. Both say why.
    assert!(
        rows[0]["pr_holder"]
            .as_str()
            .unwrap()
            .starts_with("unknown: "),
        "{}",
        rows[0]
    );
    assert!(
        rows[1]["pr_holder"]
            .as_str()
            .unwrap()
            .contains("disk image"),
        "{}",
        rows[1]
    );
    let out = e.run(&["lookup", "--pr", "/dev/sda"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.lines().next().unwrap().contains("PR HOLDER"), "{text}");
    // Without --pr the JSON has no such fields.
    let rows = ok_json(&e.run(&["lookup", "--json", "/dev/sda"]));
    assert!(rows[0].get("pr_key").is_none());
}

/// With reservations on, a disk whose reservation fails gives its lease back (nothing held,
/// nothing left locked), a disk keyed by file or path gets its lease alone, `--pr` insists
/// and `--no-pr` opts out.
#[test]
fn daemon_reservation_failure_leaves_nothing_held() {
    let e = pr_env();
    let socket = e.dir.path().join("d.sock");
    let log = e.dir.path().join("d.log");
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_disklock"))
            .arg("--config")
            .arg(e.conf())
            .arg("--sysroot")
            .arg(e.root())
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env_remove("DISKLOCK_CONFIG")
            .output()
            .unwrap()
    };
    let mut daemon = Command::new(env!("CARGO_BIN_EXE_disklock"))
        .arg("--config")
        .arg(e.conf())
        .arg("--sysroot")
        .arg(e.root())
        .arg("--socket")
        .arg(&socket)
        .arg("daemon")
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while std::os::unix::net::UnixStream::connect(&socket).is_err() {
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "{}",
            std::fs::read_to_string(&log).unwrap()
        );
        assert!(
            started.elapsed().as_secs() < 20,
            "the daemon does not listen"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let mut owner = Command::new("sleep").arg("300").spawn().unwrap();
    let pid = owner.id().to_string();
    let out = run(&["acquire", "--pid", &pid, "/dev/sda"]);
    let err = stderr_of(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("persistent reservation of /dev/sda"), "{err}");
    let status = run(&["status", "--json"]);
    assert_eq!(String::from_utf8_lossy(&status.stdout).trim(), "[]");
    // The lease file was given back: nothing locks it.
    let lease = e.lockspaces().join("scsi").join(WWID);
    let inspect = run(&["inspect", "--json", lease.to_str().unwrap()]);
    let v: Value = serde_json::from_slice(&inspect.stdout).unwrap();
    assert!(v["lock"].is_null(), "{v}");
    // An image gets its lease without a reservation; --pr insists and is refused.
    let out = run(&["acquire", "--pr", "--pid", &pid, "/images/guest.img"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("cannot get a persistent reservation"));
    let out = run(&["acquire", "--pid", &pid, "/images/guest.img"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    // --no-pr: the lease alone.
    let out = run(&["acquire", "--no-pr", "--pid", &pid, "/dev/sda"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr_of(&out));
    let status = run(&["status", "--json"]);
    let leases: Vec<Value> = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(leases.len(), 2);
    owner.kill().unwrap();
    owner.wait().unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(daemon.id()).unwrap()),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    daemon.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains("persistent reservations on, host key 0x444c4b4800000007"),
        "{log}"
    );
}

#[test]
fn daemon_refuses_to_start_without_a_host_key_source() {
    // host_key must parse; an explicit bad one is a configuration error (exit 2) before
    // the socket exists.
    let e = env();
    let mut conf = std::fs::read_to_string(e.conf()).unwrap();
    conf.push_str("persistent_reservations = 1\nhost_key = \"0x0\"\n");
    std::fs::write(e.conf(), conf).unwrap();
    let socket = e.dir.path().join("d.sock");
    let out = Command::new(env!("CARGO_BIN_EXE_disklock"))
        .arg("--config")
        .arg(e.conf())
        .arg("--socket")
        .arg(&socket)
        .arg("daemon")
        .env_remove("DISKLOCK_CONFIG")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", stderr_of(&out));
    assert!(stderr_of(&out).contains("host_key"), "{}", stderr_of(&out));
    assert!(!socket.exists());
}

#[test]
fn fence_checks_its_victim_and_reports_each_disk() {
    let e = pr_env();
    for (victim, want) in [
        ("id:7", "this host's own key"),
        ("0x444c4b4800000007", "this host's own key"),
        ("id:0", "a host id is 1 to 2000"),
        ("id:2001", "a host id is 1 to 2000"),
        ("0x0", "0 is not a reservation key"),
        ("bob", "or id:N for a host id"),
    ] {
        let out = e.run(&["fence", victim, "/dev/sda"]);
        let err = stderr_of(&out);
        assert_eq!(out.status.code(), Some(2), "{victim}: {err}");
        assert!(err.contains(want), "{victim}: {err}");
    }
    // Each disk is tried; the failures are named, one line each, exit 1.
    let out = e.run(&["fence", "--json", "id:2", "/dev/sda", "/images/guest.img"]);
    assert_eq!(out.status.code(), Some(1), "{}", stderr_of(&out));
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(rows.len(), 2);
    assert!(
        rows[0]["error"].as_str().unwrap().contains("/dev/sda: "),
        "{}",
        rows[0]
    );
    assert!(
        rows[1]["error"].as_str().unwrap().contains("disk image"),
        "{}",
        rows[1]
    );
    assert_eq!(stderr_of(&out).lines().count(), 2);
}
