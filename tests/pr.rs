//! `disklock pr`, `disklock fence`, `lookup --pr` and the daemon's reservation layer on a
//! fake device tree (tests/common/devices.rs). This host has no SCSI layer, so opening a
//! "SCSI disk" fails: these tests check usage, refusals and failure paths; real reservations
//! are tested in QEMU guests (vm-harness/tests/pr.rs). They make device nodes and so need
//! root (named `root_…`).

mod common;

use common::devices::*;
use serde_json::Value;
use std::process::Command;

#[test]
fn root_pr_key_and_usage_errors() {
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
fn root_pr_refuses_disks_without_reservable_storage() {
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
fn root_lookup_pr_adds_key_and_holder() {
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
fn root_daemon_reservation_failure_leaves_nothing_held() {
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
fn root_daemon_refuses_to_start_without_a_host_key_source() {
    // host_key must parse; an explicit bad one is a configuration error (exit 2) before
    // the socket exists.
    let e = dev_env();
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
fn root_fence_checks_its_victim_and_reports_each_disk() {
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
