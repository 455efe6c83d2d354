//! disklock leases across two hosts whose lockspaces are on one NFS export: a LUN leased on
//! host A is busy on host B (exit 3, naming A), `inspect` on B names A as the holder, and
//! when A loses power B takes the lease over once A's NFSv4 lease has expired (measured).
//!
//! One rig (NFS server + 2 hosts sharing one tgt LUN) serves the whole scenario.

#![cfg(disklock_vm)]

mod common;

use std::time::{Duration, Instant};

use disklock_vm_harness::{Host, LOCKSPACE_MOUNT, Result, Rig, note, timed};

/// Every lockspace of both hosts on the shared export.
fn config() -> String {
    format!(
        "scsi_lockspace_dir = \"{LOCKSPACE_MOUNT}/scsi\"\n\
         file_lockspace_dir = \"{LOCKSPACE_MOUNT}/files\"\n\
         lvm_lockspace_dir = \"{LOCKSPACE_MOUNT}/lvm\"\n"
    )
}

const CONFIG: &str = "/etc/disklock/disklock.conf";

/// `disklock run` holding `dev` in the background on `h`, until `inspect` on `h` sees the
/// lease held (bounded); returns the command's pid.
fn hold(h: &Host, dev: &str) -> Result<u32> {
    let out = h.run_ok(&format!(
        "disklock run --owner vm-on-{name} --disk /dev/{dev} -- sleep 600 > /tmp/run.log 2>&1 &\n\
         pid=$!\n\
         i=0; until disklock inspect /dev/{dev} | grep -q '^state:   held exclusive'; do\n\
           kill -0 $pid 2>/dev/null || {{ cat /tmp/run.log >&2; exit 1; }}\n\
           [ $i -ge 300 ] && {{ echo 'no lease within 30 s' >&2; exit 1; }}\n\
           usleep 100000; i=$((i + 1))\n\
         done\n\
         echo $pid",
        name = h.name()
    ))?;
    Ok(out.trim().parse().expect("holder pid"))
}

/// One `disklock run … -- true` on `h`, bounded (SIGKILL after 10 s: 137).
fn try_run(h: &Host, dev: &str) -> Result<disklock_vm_harness::Output> {
    h.run_timeout(
        &format!("timeout -s KILL 10 disklock run --disk /dev/{dev} -- true"),
        Duration::from_secs(40),
    )
}

#[test]
fn leases_across_hosts_on_the_nfs_lockspace() -> Result<()> {
    let _t = common::TestTimer::start("leases_across_hosts_on_the_nfs_lockspace");
    let rig = Rig::builder()
        .name("leases-nfs")
        .luns(1)
        .hosts(2)
        .nfs(true)
        .disklock(common::disklock_bin())
        .file(CONFIG, 0o644, config())
        .start()?;
    let (a, b) = (rig.host(0), rig.host(1));
    let lease_secs = rig.nfs_server().lease_secs();
    let (da, db) = (a.lun_disk(1, 0)?, b.lun_disk(1, 0)?);

    // Both hosts name the LUN by one key and one lease file on the export.
    let la = a.run_ok(&format!("disklock lookup --json /dev/{da}"))?;
    let lb = b.run_ok(&format!("disklock lookup --json /dev/{db}"))?;
    let lease_of = |json: &str| -> String {
        let v: serde_json::Value = serde_json::from_str(json).expect("lookup --json");
        v[0]["lease"].as_str().expect("lease path").to_owned()
    };
    let lease = lease_of(&la);
    assert_eq!(
        lease,
        lease_of(&lb),
        "one lease file for the LUN on both hosts"
    );
    assert!(
        lease.starts_with(&format!("{LOCKSPACE_MOUNT}/scsi/")),
        "{lease}"
    );

    // ---- A holds the LUN: B is refused (exit 3, naming A) and B's inspect names A ----
    let holder = timed("step A holds the LUN", || hold(a, &da))?;
    let out = timed("step B tries", || try_run(b, &db))?;
    assert_eq!(
        out.rc, 3,
        "B must be refused as busy while A holds the lease: {out:?}"
    );
    assert!(
        out.stderr.contains("busy") && out.stderr.contains(&format!("on host {}", a.name())),
        "B's refusal must name A's host: {}",
        out.stderr
    );
    let seen = b.run_ok(&format!("disklock inspect --json /dev/{db}"))?;
    let v: serde_json::Value = serde_json::from_str(&seen).expect("inspect --json");
    assert_eq!(v["state"], "exclusive", "{seen}");
    assert_eq!(v["holders"][0]["host"], a.name(), "{seen}");
    assert_eq!(
        v["holders"][0]["owners"][0]["name"],
        format!("vm-on-{}", a.name()),
        "{seen}"
    );
    assert_eq!(v["holders"][0]["pid"], holder, "{seen}");
    let text = b.run_ok(&format!("disklock inspect /dev/{db}"))?;
    assert!(
        text.contains("held exclusive") && text.contains(&format!("on host {}", a.name())),
        "{text}"
    );

    // ---- A loses power holding it: B gets it once A's NFSv4 lease has expired ----
    a.power_off();
    let t = Instant::now();
    let limit = Duration::from_secs(60);
    let mut busy = 0u32;
    let waited = loop {
        let out = try_run(b, &db)?;
        match out.rc {
            0 => break t.elapsed(),
            // Busy, or the attempt killed while the server still waits for A.
            3 | 137 => busy += 1,
            rc => panic!("unexpected exit {rc} from B's attempt: {out:?}"),
        }
        assert!(
            t.elapsed() < limit,
            "B did not get the lease within {limit:?} of A's power-off ({busy} attempts; last: {out:?})"
        );
        b.run_ok("usleep 200000")?;
    };
    note(format!(
        "MEASURED: B got the lease of powered-off A after {:.2} s (NFSv4 lease {lease_secs} s, {busy} busy attempts)",
        waited.as_secs_f64()
    ));
    assert!(
        busy > 0,
        "the dead host's lease must outlive it for a while"
    );

    // B now holds it for real: B's inspect names B.
    hold(b, &db)?;
    let text = b.run_ok(&format!("disklock inspect /dev/{db}"))?;
    assert!(text.contains(&format!("on host {}", b.name())), "{text}");
    Ok(())
}
