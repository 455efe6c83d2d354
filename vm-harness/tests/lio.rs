//! Two hosts on a LIO target (the kernel's SCSI target, in a guest): fixed LUN
//! identities, and the SPC-4 persistent-reservation features tgt lacks: PREEMPT AND
//! ABORT, READ FULL STATUS and APTPL (Persist Through Power Loss).
//!
//! One rig serves the whole scenario.

#![cfg(disklock_vm)]

mod common;

use disklock_vm_harness::{Host, LUN_VENDOR, Result, Rig, TargetKind, timed};

fn dd_write(dev: &str, sector: u32) -> String {
    format!("dd if=/dev/zero of=/dev/{dev} bs=512 count=1 seek={sector} oflag=direct")
}

/// Kernel messages since the last call (the ring buffer is cleared).
fn new_kernel_messages(h: &Host) -> Result<String> {
    h.run_ok("dmesg -c")
}

#[test]
fn lio_preempt_and_abort_full_status_and_aptpl() -> Result<()> {
    let _t = common::TestTimer::start("lio_preempt_and_abort_full_status_and_aptpl");
    let rig = Rig::builder()
        .name("lio")
        .target_kind(TargetKind::Lio)
        .luns(2)
        .hosts(2)
        .start()?;
    let (a, b) = (rig.host(0), rig.host(1));
    disklock_vm_harness::note(format!("LIO: {}", rig.lio().version()));

    // ---- identity: fixed, the same on both hosts, distinct per LUN ----
    let (a1, a2) = (a.lun_disk(1, 0)?, a.lun_disk(2, 0)?);
    let (b1, b2) = (b.lun_disk(1, 0)?, b.lun_disk(2, 0)?);
    let (wa1, wa2, wb1, wb2) = (a.wwid(&a1)?, a.wwid(&a2)?, b.wwid(&b1)?, b.wwid(&b2)?);
    assert!(wa1.starts_with("naa.6001405"), "LIO NAA expected: {wa1}");
    assert_eq!(wa1, wb1, "LUN 1 has one WWID on both hosts");
    assert_eq!(wa2, wb2, "LUN 2 has one WWID on both hosts");
    assert_ne!(wa1, wa2, "LUNs 1 and 2 have different WWIDs");
    let vendor = a.run_ok(&format!("cat /sys/block/{a1}/device/vendor"))?;
    assert_eq!(vendor.trim(), LUN_VENDOR);
    let serial = b.run_ok(&format!("sg_inq -p 0x80 /dev/{b2}"))?;
    assert!(
        serial.contains(&rig.lun(2).serial),
        "VPD 0x80 of LUN 2: {serial}"
    );

    // ---- REPORT CAPABILITIES: persist through power loss is supported ----
    let caps = a.run_ok(&format!("sg_persist -n -c /dev/{a1}"))?;
    assert!(caps.contains("(PTPL_C): 1"), "PTPL_C=1 expected: {caps}");

    // ---- A registers and reserves Write Exclusive; B registers ----
    timed("step reserve", || common::reserve_we(a, &a1, b, &b1))?;
    a.run_ok(&dd_write(&a1, 100))?;
    let w = b.run(&dd_write(&b1, 101))?;
    assert!(!w.success(), "B is fenced by A's reservation: {w:?}");

    // ---- READ FULL STATUS names every registrant and the holder ----
    let full = b.run_ok(&format!("sg_persist -n -s /dev/{b1}"))?;
    assert!(
        full.contains("Key=0xa") && full.contains("Key=0xb"),
        "READ FULL STATUS lists both keys: {full}"
    );
    assert!(
        full.contains("host0") && full.contains("host1"),
        "READ FULL STATUS carries the initiators' iSCSI names: {full}"
    );
    assert!(full.contains("reservation holder"), "{full}");

    // ---- B preempts A's key and aborts A's tasks; A is fenced ----
    new_kernel_messages(a)?;
    timed("step preempt and abort", || {
        b.run_ok(&format!(
            "sg_persist -n --out --preempt-abort --param-rk=0xb --param-sark=0xa --prout-type=1 /dev/{b1}"
        ))
    })?;
    let keys = b.run_ok(&format!("sg_persist -n -k /dev/{b1}"))?;
    assert!(
        keys.contains("0xb") && !keys.contains("0xa"),
        "A's key is gone: {keys}"
    );
    let res = b.run_ok(&format!("sg_persist -n -r /dev/{b1}"))?;
    assert!(
        res.contains("Key=0xb") && res.contains("Write Exclusive"),
        "{res}"
    );
    let w = timed("step A's write after the preemption", || {
        a.run(&dd_write(&a1, 102))
    })?;
    assert!(
        !w.success(),
        "A's write must fail after B's PREEMPT AND ABORT: {w:?}"
    );
    let log = new_kernel_messages(a)?;
    assert!(
        log.contains("reservation conflict"),
        "kernel log of A: {log}"
    );
    b.run_ok(&dd_write(&b1, 103))?; // the new holder writes
    a.run_ok(&dd_write(&a2, 104))?; // LUN 2 is not reserved

    // ---- APTPL: a registration that asks to persist through power loss ----
    b.run_ok(&format!(
        "sg_persist -n --out --register-ignore --param-aptpl --param-sark=0xb /dev/{b1}"
    ))?;
    let caps = b.run_ok(&format!("sg_persist -n -c /dev/{b1}"))?;
    assert!(
        caps.contains("(PTPL_A): 1"),
        "PTPL_A=1 after an APTPL registration: {caps}"
    );
    Ok(())
}
