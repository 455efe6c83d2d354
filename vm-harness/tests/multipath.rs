//! One host, one LUN over two paths, udev: a dm-multipath map over both paths carries
//! I/O, and keeps carrying it after the active path is removed.

#![cfg(disklock_vm)]

mod common;

use disklock_vm_harness::{Host, Result, Rig, timed};

/// Write 8 KiB of fresh random data through `dev` at `offset_kib` and read it back
/// directly; returns the data's md5 after checking both sides agree.
fn write_and_verify(h: &Host, dev: &str, offset_kib: u32) -> Result<String> {
    let out = h.run_ok(&format!(
        "set -e\n\
         dd if=/dev/urandom of=/tmp/pattern bs=4096 count=2 2>/dev/null\n\
         dd if=/tmp/pattern of={dev} bs=4096 count=2 seek={} oflag=direct 2>/dev/null\n\
         dd if={dev} of=/tmp/back bs=4096 count=2 skip={} iflag=direct 2>/dev/null\n\
         cmp /tmp/pattern /tmp/back\n\
         md5sum < /tmp/pattern",
        offset_kib / 4,
        offset_kib / 4
    ))?;
    Ok(out.split_whitespace().next().unwrap_or_default().to_owned())
}

/// The kernel name of the first path in the map's first path group (the one failover
/// I/O goes to), from `dmsetup table`.
fn first_path(h: &Host, map: &str) -> Result<String> {
    let table = h.run_ok(&format!("dmsetup table {map}"))?;
    let devno = table
        .split_whitespace()
        .find(|t| {
            t.split_once(':')
                .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
        })
        .unwrap_or_else(|| panic!("no path in table {table:?}"))
        .to_owned();
    Ok(
        h.run_ok(&format!("basename \"$(readlink /sys/dev/block/{devno})\""))?
            .trim()
            .to_owned(),
    )
}

#[test]
fn multipath_map_survives_losing_a_path() -> Result<()> {
    let _t = common::TestTimer::start("multipath_map_survives_losing_a_path");
    let rig = Rig::builder()
        .name("mpath")
        .luns(1)
        .paths(2)
        .udev(true)
        .start()?;
    let h = rig.host(0);
    let (p0, p1) = (h.lun_disk(1, 0)?, h.lun_disk(1, 1)?);
    assert_ne!(p0, p1, "two paths, two disks");
    assert_eq!(h.wwid(&p0)?, h.wwid(&p1)?, "both paths show the LUN's WWID");
    let id = h.scsi_id(&p0)?;
    assert!(id.starts_with('3'), "NAA scsi_id expected, got {id:?}");

    let maps = timed("step multipath", || h.multipath_create(&[&id]))?;
    assert_eq!(maps.len(), 1);
    let map = &maps[0];
    assert_eq!(
        map.name, id,
        "user_friendly_names no: the map is named by its WWID"
    );
    let mut slaves = map.slaves.clone();
    slaves.sort();
    let mut want = vec![p0.clone(), p1.clone()];
    want.sort();
    assert_eq!(slaves, want, "the map spans both paths");
    let by_id = h.run_ok(&format!("readlink -f /dev/disk/by-id/dm-uuid-mpath-{id}"))?;
    assert_eq!(
        by_id.trim(),
        format!("/dev/{}", map.dm),
        "udev links the map"
    );
    let member = h.run_ok(&format!("udevadm info -q property -n /dev/{p0}"))?;
    assert!(member.contains("DM_MULTIPATH_DEVICE_PATH=1"), "{member}");

    let dev = format!("/dev/mapper/{id}");
    write_and_verify(h, &dev, 0)?;

    // remove the path the first path group uses
    let victim = first_path(h, &map.name)?;
    assert!(
        map.slaves.contains(&victim),
        "{victim} not in {:?}",
        map.slaves
    );
    let survivor = if victim == p0 { p1.clone() } else { p0.clone() };
    timed("step delete path", || {
        h.run_ok(&format!(
            "echo 1 > /sys/block/{victim}/device/delete\n\
             udevadm settle --timeout=30\n\
             test ! -e /sys/block/{victim}"
        ))
    })?;
    let sum = timed("step I/O after path loss", || write_and_verify(h, &dev, 64))?;
    let direct = h.run_ok(&format!(
        "dd if=/dev/{survivor} bs=4096 count=2 skip=16 iflag=direct 2>/dev/null | md5sum"
    ))?;
    assert_eq!(
        direct.split_whitespace().next(),
        Some(sum.as_str()),
        "the data went to the LUN through the surviving path"
    );
    let status = h.run_ok(&format!("dmsetup status {id}"))?;
    assert!(
        status.contains(" F "),
        "the lost path is marked failed: {status}"
    );
    let ll = h.run_ok("multipath -ll 2>/dev/null")?;
    assert!(
        ll.contains(&id) && ll.contains(&survivor),
        "map still listed with its surviving path: {ll}"
    );
    Ok(())
}

/// `(device number, state)` of every path in a multipath map's `dmsetup status`
/// (`A` active, `F` failed).
fn path_states(h: &Host, map: &str) -> Result<Vec<(String, String)>> {
    let status = h.run_ok(&format!("dmsetup status {map}"))?;
    let t: Vec<&str> = status.split_whitespace().collect();
    Ok(t.windows(2)
        .filter(|w| {
            w[0].split_once(':')
                .is_some_and(|(a, b)| a.parse::<u32>().is_ok() && b.parse::<u32>().is_ok())
        })
        .map(|w| (w[0].to_owned(), w[1].to_owned()))
        .collect())
}

fn devno(h: &Host, disk: &str) -> Result<String> {
    Ok(h.run_ok(&format!("cat /sys/block/{disk}/dev"))?
        .trim()
        .to_owned())
}

#[test]
fn multipath_path_dropped_and_restored() -> Result<()> {
    let _t = common::TestTimer::start("multipath_path_dropped_and_restored");
    let rig = Rig::builder()
        .name("paths")
        .luns(1)
        .paths(2)
        .udev(true)
        .start()?;
    let h = rig.host(0);
    let p0 = h.lun_disk(1, 0)?;
    let id = h.scsi_id(&p0)?;
    let map = timed("step multipath", || h.multipath_create(&[&id]))?.remove(0);
    let dev = format!("/dev/mapper/{id}");
    write_and_verify(h, &dev, 0)?;

    // ---- drop the path the map uses first: QEMU unplugs it, its iSCSI session ends ----
    let victim = first_path(h, &map.name)?;
    let vpath = if victim == p0 { 0 } else { 1 };
    let survivor = h.lun_disk(1, 1 - vpath)?;
    timed("step drop path", || h.drop_path(1, vpath))?;
    let gone = h.run(&format!("test -e /sys/block/{victim}"))?;
    assert!(!gone.success(), "{victim} must be gone from the guest");
    timed("step I/O on one path", || write_and_verify(h, &dev, 64))?;
    let states = path_states(h, &id)?;
    assert_eq!(states.len(), 2, "the map keeps both slots: {states:?}");
    let survivor_no = devno(h, &survivor)?;
    assert!(
        states.iter().any(|(d, s)| *d == survivor_no && s == "A"),
        "the surviving path is active: {states:?}"
    );
    assert!(
        states.iter().any(|(d, s)| *d != survivor_no && s == "F"),
        "the dropped path is failed: {states:?}"
    );

    // ---- restore it: a new session and device; multipath takes it back ----
    timed("step restore path", || h.restore_path(1, vpath))?;
    let back = h.lun_disk(1, vpath)?;
    assert_eq!(
        h.scsi_id(&back)?,
        id,
        "the restored path shows the same LUN"
    );
    let map = timed("step multipath reload", || h.multipath_create(&[&id]))?.remove(0);
    let mut slaves = map.slaves.clone();
    slaves.sort();
    let mut want = vec![back.clone(), survivor.clone()];
    want.sort();
    assert_eq!(slaves, want, "the map spans both paths again");
    let states = path_states(h, &id)?;
    assert_eq!(states.len(), 2, "{states:?}");
    assert!(
        states.iter().all(|(_, s)| s == "A"),
        "both paths active after the restore: {states:?}"
    );
    // the restored path alone carries I/O: fail the other one in the map
    h.run_ok(&format!("dmsetup message {id} 0 fail_path {survivor_no}"))?;
    let sum = timed("step I/O on the restored path", || {
        write_and_verify(h, &dev, 128)
    })?;
    let direct = h.run_ok(&format!(
        "dd if=/dev/{back} bs=4096 count=2 skip=32 iflag=direct 2>/dev/null | md5sum"
    ))?;
    assert_eq!(direct.split_whitespace().next(), Some(sum.as_str()));
    h.run_ok(&format!(
        "dmsetup message {id} 0 reinstate_path {survivor_no}"
    ))?;
    let states = path_states(h, &id)?;
    assert!(states.iter().all(|(_, s)| s == "A"), "{states:?}");
    Ok(())
}
