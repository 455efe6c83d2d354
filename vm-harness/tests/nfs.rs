//! A shared NFS lockspace across hosts: fcntl locks (virtlockd's kind: a write lock on
//! byte 0 of a lease file) taken on one host are seen by the others; a host cut off
//! from the server cannot lock; a dead host's locks go when its NFSv4 lease expires.
//!
//! One rig (2 hosts + NFS server) serves the whole scenario.

#![cfg(disklock_vm)]

mod common;

use std::time::{Duration, Instant};

use disklock_vm_harness::{Host, LOCKSPACE_MOUNT, Result, Rig, note, timed};

const LOCKER: &str = "/usr/local/bin/fcntl-lock";

/// Start a lock holder in the background on `h`; returns its PID once it holds the lock.
fn hold(h: &Host, file: &str) -> Result<u32> {
    let out = h.run_ok(&format!(
        "{LOCKER} {LOCKSPACE_MOUNT}/{file} > /tmp/{file}.holder 2>&1 &\n\
         pid=$!\n\
         i=0; until grep -q '^locked' /tmp/{file}.holder; do\n\
           kill -0 $pid 2>/dev/null || {{ cat /tmp/{file}.holder >&2; exit 1; }}\n\
           [ $i -ge 300 ] && {{ echo 'no lock within 30 s' >&2; exit 1; }}\n\
           usleep 100000; i=$((i + 1))\n\
         done\n\
         echo $pid"
    ))?;
    Ok(out.trim().parse().expect("holder pid"))
}

/// One non-blocking attempt, bounded by `limit` (SIGKILL after it); the exit code:
/// 0 granted, 1 busy, 137 killed while waiting for the server.
fn try_lock(h: &Host, file: &str, limit_secs: u32) -> Result<i32> {
    let out = h.run_timeout(
        &format!("timeout -s KILL {limit_secs} {LOCKER} --try {LOCKSPACE_MOUNT}/{file}"),
        Duration::from_secs(u64::from(limit_secs) + 30),
    )?;
    Ok(out.rc)
}

/// Retry (every 0.2 s, each attempt bounded by 10 s) until the lock is granted; the
/// number of attempts.
fn lock_eventually(h: &Host, file: &str, limit_secs: u32) -> Result<u32> {
    let out = h.run_timeout(
        &format!(
            "t0=$(cut -d. -f1 /proc/uptime); n=0\n\
             until timeout -s KILL 10 {LOCKER} --try {LOCKSPACE_MOUNT}/{file} >/dev/null; do\n\
               n=$((n + 1))\n\
               [ $(( $(cut -d. -f1 /proc/uptime) - t0 )) -ge {limit_secs} ] && {{ echo \"not granted within {limit_secs} s\" >&2; exit 1; }}\n\
               usleep 200000\n\
             done\n\
             echo $n"
        ),
        Duration::from_secs(u64::from(limit_secs) + 40),
    )?;
    if out.rc != 0 {
        return Err(disklock_vm_harness::Error::CommandFailed {
            host: h.name().to_owned(),
            script: format!("lock_eventually {file}"),
            rc: out.rc,
            stdout: out.stdout,
            stderr: out.stderr,
        });
    }
    Ok(out.stdout.trim().parse().unwrap_or(0))
}

#[test]
fn fcntl_locks_across_hosts_on_the_nfs_lockspace() -> Result<()> {
    let _t = common::TestTimer::start("fcntl_locks_across_hosts_on_the_nfs_lockspace");
    let rig = Rig::builder()
        .name("nfs")
        .hosts(2)
        .luns(0)
        .nfs(true)
        .program(common::fcntl_lock_bin(), LOCKER)
        .start()?;
    let (a, b) = (rig.host(0), rig.host(1));
    let lease = rig.nfs_server().lease_secs();

    // ---- one file system: what A writes, B reads ----
    a.run_ok(&format!("echo written-by-host0 > {LOCKSPACE_MOUNT}/shared"))?;
    let seen = b.run_ok(&format!("cat {LOCKSPACE_MOUNT}/shared"))?;
    assert_eq!(seen.trim(), "written-by-host0");
    let mounts = b.run_ok("grep ' /mnt/lockspace ' /proc/mounts")?;
    assert!(
        mounts.contains("nfs4") && mounts.contains("vers=4.2"),
        "{mounts}"
    );

    // ---- A's fcntl lock keeps B out, until A's process dies ----
    let holder = timed("step A locks", || hold(a, "vm1.lease"))?;
    let rc = timed("step B tries", || try_lock(b, "vm1.lease", 20))?;
    assert_eq!(rc, 1, "B must get EAGAIN/EACCES while A holds the lock");
    assert_eq!(
        try_lock(a, "vm1.lease", 20)?,
        1,
        "POSIX locks belong to processes: another process on A is refused too"
    );
    a.run_ok(&format!("kill -9 {holder}"))?;
    let n = timed("step B locks after A's process died", || {
        lock_eventually(b, "vm1.lease", 30)
    })?;
    note(format!("B granted after {n} busy attempt(s)"));

    // ---- B cut off from the server: its lock attempts hang; reconnected, they work ----
    let holder = hold(a, "vm2.lease")?;
    timed("step disconnect B", || b.set_link(false))?;
    let rc = timed("step B locks while disconnected", || {
        try_lock(b, "free.lease", 6)
    })?;
    assert_ne!(rc, 0, "a host without the server must not get a lock");
    note(format!(
        "B's attempt while disconnected ended with rc {rc} (137 = killed by the timeout)"
    ));
    assert_eq!(try_lock(a, "free2.lease", 20)?, 0, "A is unaffected");
    b.set_link(true)?;
    let t = Instant::now();
    let n = lock_eventually(b, "free.lease", 90)?;
    note(format!(
        "reconnected B locked again after {:.2} s ({n} failed attempts)",
        t.elapsed().as_secs_f64()
    ));
    assert_eq!(
        try_lock(b, "vm2.lease", 20)?,
        1,
        "after reconnecting, B sees A's lock again"
    );
    a.run_ok(&format!("kill -9 {holder}"))?;
    lock_eventually(b, "vm2.lease", 30)?;

    // ---- B cut off while holding a lock: A gets it once B's lease has expired ----
    let b_holder = hold(b, "vm4.lease")?;
    assert_eq!(try_lock(a, "vm4.lease", 20)?, 1);
    b.set_link(false)?;
    let t = Instant::now();
    let n = lock_eventually(a, "vm4.lease", 120)?;
    let waited = t.elapsed();
    note(format!(
        "MEASURED: A got the lock of cut-off B after {:.2} s (NFSv4 lease {lease} s, {n} busy attempts)",
        waited.as_secs_f64()
    ));
    assert!(
        n > 0,
        "the cut-off host's lock must outlive the cut for a while"
    );
    let a_holder = hold(a, "vm4.lease")?;
    b.set_link(true)?;
    let t = Instant::now();
    let rc = try_lock(b, "vm4.lease", 60)?;
    assert_eq!(
        rc, 1,
        "back on the network, B's stale holder no longer has the lock: A holds it"
    );
    note(format!(
        "reconnected B saw A's lock after {:.2} s",
        t.elapsed().as_secs_f64()
    ));
    b.run_ok(&format!("kill -9 {b_holder}"))?;
    a.run_ok(&format!("kill -9 {a_holder}"))?;

    // ---- A loses power holding a lock: B waits for A's NFSv4 lease to expire ----
    hold(a, "vm3.lease")?;
    assert_eq!(try_lock(b, "vm3.lease", 20)?, 1);
    a.power_off();
    let t = Instant::now();
    let n = lock_eventually(b, "vm3.lease", 120)?;
    let waited = t.elapsed();
    note(format!(
        "MEASURED: B got the lock of powered-off A after {:.2} s (NFSv4 lease {lease} s, {n} busy attempts)",
        waited.as_secs_f64()
    ));
    assert!(n > 0, "the dead host's lock must outlive it for a while");
    assert!(
        waited < Duration::from_secs(u64::from(lease) * 6),
        "the lock must go with A's lease: waited {waited:?}"
    );
    Ok(())
}
