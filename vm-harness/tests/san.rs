//! Two hosts on one SAN: device identity, SCSI-3 persistent reservations, and the two
//! faults the rig can inject (a host losing power, the target losing its PR state).
//!
//! One rig serves the whole scenario, whose steps build on each other.

#![cfg(disklock_vm)]

mod common;

use disklock_vm_harness::{Host, LUN_VENDOR, Result, Rig, timed};

fn dd_write(dev: &str, sector: u32) -> String {
    format!("dd if=/dev/zero of=/dev/{dev} bs=512 count=1 seek={sector} oflag=direct")
}

fn dd_read(dev: &str, sector: u32) -> String {
    format!("dd if=/dev/{dev} of=/dev/null bs=512 count=1 skip={sector} iflag=direct")
}

/// Kernel messages since the last call (the ring buffer is cleared).
fn new_kernel_messages(h: &Host) -> Result<String> {
    h.run_ok("dmesg -c")
}

/// After a target restart the first commands see unit attentions and the initiator's
/// reconnect; wait (bounded) until the disk answers TEST UNIT READY again.
fn wait_until_ready(h: &Host, dev: &str) -> Result<()> {
    h.run_ok(&format!(
        "i=0; while [ $i -lt 300 ]; do sg_turs /dev/{dev} 2>/dev/null && exit 0; usleep 100000; i=$((i+1)); done; \
         echo 'no TEST UNIT READY within 30 s' >&2; exit 1"
    ))?;
    Ok(())
}

#[test]
fn two_hosts_share_luns_reservations_and_faults() -> Result<()> {
    let _t = common::TestTimer::start("two_hosts_share_luns_reservations_and_faults");
    let rig = Rig::builder()
        .name("san")
        .luns(2)
        .hosts(2)
        .disklock(common::disklock_bin())
        .start()?;
    let (a, b) = (rig.host(0), rig.host(1));

    // ---- identity: same LUN, same WWID on both hosts; different LUNs differ ----
    let (a1, a2) = (a.lun_disk(1, 0)?, a.lun_disk(2, 0)?);
    let (b1, b2) = (b.lun_disk(1, 0)?, b.lun_disk(2, 0)?);
    let (wa1, wa2, wb1, wb2) = timed("step wwids", || -> Result<_> {
        Ok((a.wwid(&a1)?, a.wwid(&a2)?, b.wwid(&b1)?, b.wwid(&b2)?))
    })?;
    assert!(
        wa1.starts_with("naa.") && wa2.starts_with("naa."),
        "{wa1} {wa2}"
    );
    assert_eq!(wa1, wb1, "LUN 1 must have one WWID on both hosts");
    assert_eq!(wa2, wb2, "LUN 2 must have one WWID on both hosts");
    assert_ne!(wa1, wa2, "LUNs 1 and 2 must have different WWIDs");
    let vendor = a.run_ok(&format!("cat /sys/block/{a1}/device/vendor"))?;
    assert_eq!(vendor.trim(), LUN_VENDOR);
    let serial = b.run_ok(&format!("sg_inq -p 0x80 /dev/{b2}"))?;
    assert!(
        serial.contains(&rig.lun(2).serial),
        "VPD 0x80 of LUN 2: {serial}"
    );

    // ---- the freshly built disklock runs in the guest ----
    let help = a.run_ok("disklock --help")?;
    assert!(help.contains("Usage"), "{help}");

    // ---- persistent reservations ----
    timed("step reserve", || common::reserve_we(a, &a1, b, &b1))?;
    let keys = b.run_ok(&format!("sg_persist -n -k /dev/{b1}"))?;
    assert!(keys.contains("0xa") && keys.contains("0xb"), "keys: {keys}");
    let res = b.run_ok(&format!("sg_persist -n -r /dev/{b1}"))?;
    assert!(
        res.contains("Key=0xa") && res.contains("Write Exclusive"),
        "{res}"
    );

    new_kernel_messages(b)?;
    let w = timed("step conflicting write", || b.run(&dd_write(&b1, 200)))?;
    assert!(
        !w.success(),
        "B's write under A's Write Exclusive must fail: {w:?}"
    );
    let log = new_kernel_messages(b)?;
    assert!(log.contains("reservation conflict"), "kernel log: {log}");
    b.run_ok(&dd_read(&b1, 200))?; // reads stay allowed
    a.run_ok(&dd_write(&a1, 100))?; // the holder writes
    b.run_ok(&dd_write(&b2, 100))?; // the other LUN is not reserved

    // ---- fault: the holder loses power; its reservation stays ----
    timed("step power off A", || a.power_off());
    assert!(!a.is_running());
    assert!(a.run("true").is_err(), "a powered-off host must not answer");
    let res = b.run_ok(&format!("sg_persist -n -r /dev/{b1}"))?;
    assert!(
        res.contains("Key=0xa"),
        "the dead holder's reservation stays: {res}"
    );
    let w = b.run(&dd_write(&b1, 201))?;
    assert!(
        !w.success(),
        "still fenced while the dead host holds the reservation"
    );

    // ---- fault: the target restarts and forgets every registration ----
    let old_pid = rig.target().pid();
    let took = rig.target().restart()?;
    disklock_vm_harness::note(format!("target restart: {:.2} s", took.as_secs_f64()));
    assert_ne!(rig.target().pid(), old_pid);
    timed("step reconnect", || wait_until_ready(b, &b1))?;
    let keys = b.run_ok(&format!("sg_persist -n -k /dev/{b1}"))?;
    assert!(
        keys.contains("there are NO registered reservation keys"),
        "{keys}"
    );
    let res = b.run_ok(&format!("sg_persist -n -r /dev/{b1}"))?;
    assert!(res.contains("there is NO reservation held"), "{res}");
    b.run_ok(&dd_write(&b1, 202))?;
    assert_eq!(b.wwid(&b1)?, wb1, "identity survives the restart");
    Ok(())
}
