//! A stalled lockspace stalls nothing else: with the NFS server cut off, the daemon's lease
//! I/O on the NFS lockspace hangs (hard mount) on its lanes, while an acquire on a local
//! lockspace is served at once, `status` answers, releases and owner deaths are carried out.
//! When the server is back, the stalled acquire completes, and nothing is left held that
//! nobody owns. A two-disk acquire on the NFS lockspace has both lease files in the works
//! at once (two lanes waiting on the server).
//!
//! One rig: an NFS server guest and one host with four LUNs.

#![cfg(disklock_vm)]

mod common;

use std::time::{Duration, Instant};

use common::{NOW_NS, owner_process, start_daemon};
use disklock_vm_harness::{Host, LOCKSPACE_MOUNT, Result, Rig, note, timed};

/// The LUNs' lockspace on the NFS export; image files in a local one.
fn config() -> String {
    format!(
        "scsi_lockspace_dir = \"{LOCKSPACE_MOUNT}/scsi\"\n\
         file_lockspace_dir = \"/var/lib/disklock-local/files\"\n\
         lvm_lockspace_dir = \"/var/lib/disklock-local/lvm\"\n"
    )
}

const CONFIG: &str = "/etc/disklock/disklock.conf";

/// Runs `script` on `h`, returning its output and how long it took in the guest (ms).
fn timed_in_guest(h: &Host, script: &str) -> Result<(String, f64)> {
    let out = h.run_ok(&format!(
        "t0=$({NOW_NS})\n{script}\nrc=$?\nt1=$({NOW_NS})\necho \"@@ $rc $((t1 - t0))\""
    ))?;
    let (body, tail) = out.rsplit_once("@@ ").expect("timing line");
    let mut f = tail.split_whitespace();
    let rc: i32 = f.next().and_then(|v| v.parse().ok()).expect("rc");
    let ns: f64 = f.next().and_then(|v| v.parse().ok()).expect("ns");
    assert_eq!(rc, 0, "{script} failed: {body}");
    Ok((body.to_owned(), ns / 1e6))
}

/// The median of three timed runs of `script` on `h` (ms): one CLI call in a TCG guest
/// varies by tens of ms from one run to the next.
fn median_ms(h: &Host, script: &str) -> Result<f64> {
    let mut v = Vec::new();
    for _ in 0..3 {
        v.push(timed_in_guest(h, script)?.1);
    }
    v.sort_by(f64::total_cmp);
    Ok(v[1])
}

/// Median times (ms) of `disklock acquire` and `disklock release` of image `img` for `pid`,
/// three of each, alternating.
fn local_cycle_ms(h: &Host, pid: u32, img: &str) -> Result<(f64, f64)> {
    let (mut acq, mut rel) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        acq.push(
            timed_in_guest(
                h,
                &format!("timeout 10 disklock acquire --pid {pid} {img} >/dev/null"),
            )?
            .1,
        );
        rel.push(timed_in_guest(h, &format!("timeout 10 disklock release {img} >/dev/null"))?.1);
    }
    acq.sort_by(f64::total_cmp);
    rel.sort_by(f64::total_cmp);
    Ok((acq[1], rel[1]))
}

/// The lane threads of the daemon on `h` that wait in the kernel (state D: an NFS hard
/// mount waiting for its server).
fn lanes_waiting(h: &Host) -> Result<usize> {
    let out = h.run_ok(
        "for p in $(pidof disklock); do \
           tr '\\0' ' ' < /proc/$p/cmdline | grep -q '^disklock daemon' && pid=$p; done\n\
         n=0; for t in /proc/$pid/task/*; do \
           case $(cat $t/comm) in lane-*) \
             s=$(sed 's/^.*) \\(.\\).*/\\1/' $t/stat); [ \"$s\" = D ] && n=$((n + 1));; esac; \
         done; echo $n",
    )?;
    Ok(out.trim().parse().expect("count"))
}

#[test]
fn a_stalled_nfs_lockspace_stalls_nothing_else() -> Result<()> {
    let _t = common::TestTimer::start("a_stalled_nfs_lockspace_stalls_nothing_else");
    let rig = Rig::builder()
        .name("nfs-stall")
        .luns(4)
        .hosts(1)
        .nfs(true)
        .disklock(common::disklock_bin())
        .file(CONFIG, 0o644, config())
        .start()?;
    let a = rig.host(0);
    let (d1, d2, d3, d4) = (
        a.lun_disk(1, 0)?,
        a.lun_disk(2, 0)?,
        a.lun_disk(3, 0)?,
        a.lun_disk(4, 0)?,
    );
    // The lanes the stalled leases will wait on: one per distinct lane of their keys.
    let mut lanes = std::collections::BTreeSet::new();
    for d in [&d2, &d3, &d4] {
        let v: serde_json::Value =
            serde_json::from_str(&a.run_ok(&format!("disklock lookup --json /dev/{d}"))?)
                .expect("lookup --json");
        let key = v[0]["key"].as_str().expect("key").to_owned();
        lanes.insert(disklock::daemon::lanes::lane_of(&key));
    }
    a.run_ok("dd if=/dev/zero of=/tmp/img1 bs=1k count=1 2>/dev/null; cp /tmp/img1 /tmp/img2")?;
    start_daemon(a)?;

    // Before the cut: a lease on the NFS lockspace (which also tells the daemon that its
    // file system is not local), and the baseline time of a local acquire + release.
    let o1 = owner_process(a)?;
    a.run_ok(&format!("disklock acquire --pid {o1} /dev/{d1}"))?;
    // The same CLI calls timed before the cut: a CLI process alone takes a few hundred ms in
    // a TCG guest, so "served at once" means within 100 ms of what the call costs unstalled.
    let o0 = owner_process(a)?;
    let (base_acquire, base_release) = local_cycle_ms(a, o0, "/tmp/img1")?;
    let base_status = median_ms(a, "timeout 10 disklock status --json >/dev/null")?;

    // ---- Cut the NFS server off: the hard mount hangs ----
    rig.nfs_server().host().set_link(false)?;
    let cut = Instant::now();
    // An acquire on the NFS lockspace now waits on the server, in the background.
    let o2 = owner_process(a)?;
    a.run_ok(&format!(
        "(disklock --timeout 600 acquire --pid {o2} /dev/{d2} > /tmp/stalled.out 2>&1; \
          echo $? > /tmp/stalled.rc) &"
    ))?;
    // A two-disk acquire on it: both lease files are being taken at once, each on its lane.
    let o4 = owner_process(a)?;
    a.run_ok(&format!(
        "(disklock --timeout 600 acquire --pid {o4} /dev/{d3} /dev/{d4} > /tmp/pair.out 2>&1; \
          echo $? > /tmp/pair.rc) &"
    ))?;
    // Every lane of the three stalled leases ends up waiting on the server at once: the
    // pair's two leases are in the works together, not one after the other (bounded).
    let mut waiting = 0;
    for _ in 0..150 {
        waiting = lanes_waiting(a)?;
        if waiting >= lanes.len() {
            break;
        }
        a.run_ok("usleep 100000")?;
    }
    note(format!(
        "lanes waiting on the server: {waiting} (the stalled leases' keys are on {} lanes)",
        lanes.len()
    ));
    assert_eq!(
        waiting,
        lanes.len(),
        "each stalled lease's lane must wait on the server at the same time"
    );
    assert!(
        a.run("test -e /tmp/stalled.rc")?.rc != 0,
        "the NFS acquire must wait while the server is cut off"
    );

    // ---- Meanwhile, the local lockspace is served at once ----
    let o3 = owner_process(a)?;
    let (local_ms, local_release) = local_cycle_ms(a, o3, "/tmp/img2")?;
    a.run_ok(&format!(
        "timeout 10 disklock acquire --pid {o3} /tmp/img2 >/dev/null"
    ))?;
    note(format!(
        "MEASURED: local acquire / release while the NFS lockspace hangs: {local_ms:.1} / \
         {local_release:.1} ms (medians of 3; the same calls before the cut: {base_acquire:.1} / \
         {base_release:.1} ms)"
    ));
    assert!(
        local_ms < base_acquire + 100.0 && local_release < base_release + 100.0,
        "a local acquire / release took {local_ms:.1} / {local_release:.1} ms while the NFS \
         lockspace hung ({base_acquire:.1} / {base_release:.1} ms before)"
    );

    // `status` answers and shows what is held: the NFS lease taken before the cut and the
    // local one, not the stalled ones.
    let status_ms = median_ms(a, "timeout 10 disklock status --json >/dev/null")?;
    let status = a.run_ok("timeout 10 disklock status --json")?;
    note(format!(
        "MEASURED: status while the NFS lockspace hangs: {status_ms:.1} ms \
         (median of 3; before the cut: {base_status:.1} ms)"
    ));
    assert!(
        status_ms < base_status + 100.0,
        "status took {status_ms:.1} ms"
    );
    let v: serde_json::Value = serde_json::from_str(status.trim()).expect("status --json");
    let disks: Vec<&str> = v
        .as_array()
        .expect("a list")
        .iter()
        .filter_map(|l| l["disk"].as_str())
        .collect();
    assert!(disks.contains(&"/tmp/img2"), "{status}");
    assert!(disks.contains(&format!("/dev/{d1}").as_str()), "{status}");
    assert!(!disks.contains(&format!("/dev/{d2}").as_str()), "{status}");

    // A local owner's death releases its lease at once: another owner takes it.
    a.run_ok(&format!("kill -9 {o3}"))?;
    let o5 = owner_process(a)?;
    let freed = timed("step local owner death", || -> Result<Duration> {
        let t = Instant::now();
        loop {
            let r = a.run(&format!(
                "timeout 10 disklock acquire --pid {o5} /tmp/img2 >/dev/null 2>&1"
            ))?;
            if r.rc == 0 {
                return Ok(t.elapsed());
            }
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "the dead owner's lease stayed"
            );
            a.run_ok("usleep 100000")?;
        }
    })?;
    note(format!(
        "MEASURED: a local owner's death freed its lease for another in {:.2} s (NFS hung)",
        freed.as_secs_f64()
    ));
    // A release on the hung lockspace returns at once too (the lock goes when its lane can).
    // It waits up to 200 ms for the lock to go, then says the lockspace does not answer.
    let (said, rel_ms) = timed_in_guest(
        a,
        &format!("timeout 10 disklock release /dev/{d1} 2>&1 >/dev/null"),
    )?;
    note(format!(
        "MEASURED: release on the hung NFS lockspace answered in {rel_ms:.1} ms \
         (a local release before the cut: {base_release:.1} ms; it waits 200 ms for the lock)"
    ));
    assert!(
        rel_ms < base_release + 300.0,
        "the release took {rel_ms:.1} ms"
    );
    assert!(said.contains("does not answer"), "{said}");
    let status = a.run_ok("timeout 10 disklock status --json")?;
    assert!(
        !status.contains(&format!("/dev/{d1}\"")),
        "released: {status}"
    );
    // ---- The server comes back: the stalled acquires finish, cleanly ----
    // (After a cut of at least 5 s: the client has retransmitted by then.)
    if let Some(rest) = Duration::from_secs(5).checked_sub(cut.elapsed()) {
        std::thread::sleep(rest);
    }
    rig.nfs_server().host().set_link(true)?;
    note(format!(
        "NFS server cut off for {:.1} s",
        cut.elapsed().as_secs_f64()
    ));
    let back = Instant::now();
    a.run_timeout(
        "i=0; until [ -e /tmp/stalled.rc ] && [ -e /tmp/pair.rc ]; do \
           [ $i -ge 1800 ] && exit 1; usleep 100000; i=$((i + 1)); done",
        Duration::from_secs(200),
    )?;
    note(format!(
        "MEASURED: the stalled acquires finished {:.1} s after the server came back",
        back.elapsed().as_secs_f64()
    ));
    let rc: i32 = a.run_ok("cat /tmp/stalled.rc")?.trim().parse().expect("rc");
    let out = a.run_ok("cat /tmp/stalled.out")?;
    assert_eq!(
        rc, 0,
        "the stalled acquire of a free disk succeeds once the server is back: {out}"
    );
    let pair_rc: i32 = a.run_ok("cat /tmp/pair.rc")?.trim().parse().expect("rc");
    let pair_out = a.run_ok("cat /tmp/pair.out")?;
    assert_eq!(
        pair_rc, 0,
        "the stalled two-disk acquire succeeds too: {pair_out}"
    );
    let status = a.run_ok("disklock status --json")?;
    let v: serde_json::Value = serde_json::from_str(status.trim()).expect("status --json");
    let owned_by = |disk: &str| -> Option<u64> {
        v.as_array()?
            .iter()
            .find(|l| l["disk"] == disk)
            .and_then(|l| l["owners"][0]["pid"].as_u64())
    };
    assert_eq!(owned_by(&format!("/dev/{d2}")), Some(o2.into()), "{status}");
    assert_eq!(owned_by(&format!("/dev/{d3}")), Some(o4.into()), "{status}");
    assert_eq!(owned_by(&format!("/dev/{d4}")), Some(o4.into()), "{status}");
    // The lease released while the server was away is gone from the table.
    assert_eq!(owned_by(&format!("/dev/{d1}")), None, "{status}");

    // ---- Nothing phantom: with every owner gone, nothing is held, here or on the export ----
    a.run_ok(&format!(
        "kill -9 {o0} {o1} {o2} {o4} {o5} 2>/dev/null; true"
    ))?;
    a.run_timeout(
        "i=0; until disklock status | grep -q 'no leases held'; do \
           [ $i -ge 100 ] && { disklock status; exit 1; }; usleep 100000; i=$((i + 1)); done",
        Duration::from_secs(30),
    )?;
    for d in [&d1, &d2, &d3, &d4] {
        let text = a.run_ok(&format!("disklock inspect /dev/{d}"))?;
        assert!(
            !text.contains("state:   held"),
            "/dev/{d} is still held with every owner gone: {text}"
        );
    }
    let log = a.run_ok("grep -c 'lanes-stuck\\|panicked' /tmp/daemon.log || true")?;
    assert_eq!(log.trim(), "0", "{}", a.run_ok("tail -20 /tmp/daemon.log")?);
    Ok(())
}
