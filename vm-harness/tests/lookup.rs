//! `disklock lookup` on real kernel devices: its keys must equal what `scsi_id`, `lvs` and
//! the kernel print in the same guest, for SCSI disks, a dm-multipath map, a partition, an
//! LVM LV, an NVMe namespace and a virtio disk without serial; `--probe` must reach the same
//! WWIDs through SG_IO INQUIRY; and the resolver benchmark runs on the guest's real devices.

#![cfg(disklock_vm)]

mod common;

use std::collections::BTreeMap;

use disklock_vm_harness::capture::{prepare_scene, rig_builder};
use disklock_vm_harness::{Result, note, timed};
use serde_json::Value;

fn rows(json: &str) -> Vec<Value> {
    serde_json::from_str::<Value>(json)
        .unwrap_or_else(|e| panic!("disklock printed no JSON ({e}): {json}"))
        .as_array()
        .expect("an array")
        .clone()
}

fn by_device(rows: &[Value]) -> BTreeMap<String, Value> {
    rows.iter()
        .map(|r| (r["device"].as_str().unwrap_or("?").to_owned(), r.clone()))
        .collect()
}

#[test]
fn lookup_agrees_with_scsi_id_lvs_and_the_kernel() -> Result<()> {
    let _t = common::TestTimer::start("lookup_agrees_with_scsi_id_lvs_and_the_kernel");
    let mut builder = rig_builder()
        .name("lookup")
        .disklock(common::disklock_bin());
    let bench = std::env::var_os("DISKLOCK_BENCH_BIN").filter(|v| !v.is_empty());
    if let Some(b) = &bench {
        let body = std::fs::read(b).expect("read the benchmark binary");
        builder = builder.file("/usr/bin/resolve-bench", 0o755, body);
    }
    let rig = builder.start()?;
    let scene = prepare_scene(&rig)?;
    let h = rig.host(0);

    // What the real tools print for every block device.
    let tools = h.run_ok(
        "for d in /sys/class/block/*; do n=${d##*/}; \
         printf '%s\\t%s\\n' \"$n\" \"$(/lib/udev/scsi_id --whitelisted --replace-whitespace --device=/dev/$n 2>/dev/null)\"; done",
    )?;
    let scsi_id: BTreeMap<String, String> = tools
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .map(|(n, w)| (n.to_owned(), w.trim().to_owned()))
        .collect();
    let lv_uuid = h.run_ok(&format!("lvs --noheadings -o uuid {}", scene.lv.path))?;
    let lv_uuid = lv_uuid.trim();
    assert_eq!(lv_uuid, scene.lv.uuid);

    // disklock's own keys for every device.
    let all = by_device(&rows(&timed("step lookup --all", || {
        h.run_ok("disklock lookup --all --json")
    })?));
    for (n, wwid) in &scsi_id {
        let r = &all[n];
        assert!(r["error"].is_null(), "{n}: {r}");
        if *n == scene.lv.dm {
            assert_eq!(
                (r["source"].as_str(), r["key"].as_str()),
                (Some("lvm-uuid"), Some(lv_uuid)),
                "{n}"
            );
        } else if n.starts_with("sd") || *n == scene.mpath.dm {
            let want = match r["partition"].as_u64() {
                Some(p) => format!("{wwid}-part{p}"),
                None => wwid.clone(),
            };
            assert!(!wwid.is_empty(), "scsi_id printed nothing for {n}");
            assert_eq!(
                (r["source"].as_str(), r["key"].as_str()),
                (Some("scsi-wwid"), Some(want.as_str())),
                "{n}"
            );
        }
    }
    assert_eq!(
        all[&scene.partition]["key"],
        format!("{}-part1", scsi_id[&scene.part_disk])
    );
    let nvme = all
        .keys()
        .find(|n| n.starts_with("nvme"))
        .expect("an NVMe namespace")
        .clone();
    let wwid = h.run_ok(&format!("cat /sys/block/{nvme}/wwid"))?;
    assert_eq!(
        (all[&nvme]["source"].as_str(), all[&nvme]["key"].as_str()),
        (Some("nvme-wwid"), Some(wwid.trim()))
    );
    let vd = all
        .keys()
        .find(|n| n.starts_with("vd"))
        .expect("a virtio disk")
        .clone();
    assert_eq!(all[&vd]["source"], "by-path-sha256", "{}", all[&vd]);

    // Persistent reservations on the NVMe namespace go through the block layer's PR ioctls
    // (BlockPr). This kernel (6.1) has no IOC_PR_READ_KEYS and QEMU 7.2's emulated NVMe
    // controller has no reservation commands: disklock must say so in one line, exit 1.
    h.run_ok("mkdir -p /etc/disklock && echo 'host_id = 3' > /etc/disklock/disklock.conf")?;
    let keys = h.run(&format!("disklock pr keys /dev/{nvme}"))?;
    note(format!(
        "pr keys on NVMe: rc {} {}",
        keys.rc,
        keys.stderr.trim()
    ));
    assert_eq!(keys.rc, 1, "{keys:?}");
    assert!(
        keys.stderr.starts_with(&format!("disklock: /dev/{nvme}: "))
            && keys.stderr.contains("IOC_PR_READ_KEYS")
            && keys.stderr.trim().lines().count() == 1,
        "{keys:?}"
    );
    let reg = h.run(&format!("disklock pr register /dev/{nvme}"))?;
    note(format!(
        "pr register on NVMe: rc {} {}",
        reg.rc,
        reg.stderr.trim()
    ));
    assert_eq!(reg.rc, 1, "{reg:?}");
    assert!(reg.stderr.contains("IOC_PR_REGISTER"), "{reg:?}");
    // A virtio disk has no reservations at all.
    let virtio = h.run(&format!("disklock pr keys /dev/{vd}"))?;
    assert!(
        virtio.rc == 1
            && virtio
                .stderr
                .contains("neither a SCSI disk nor an NVMe namespace"),
        "{virtio:?}"
    );

    // virtlockd's names: what scsi_id prints (whole disk for partitions, pass-through for dm),
    // the LV UUID for the LV, the hash of the literal path where scsi_id prints nothing.
    let nodes: Vec<String> = scsi_id.keys().map(|n| format!("/dev/{n}")).collect();
    let compat = rows(&h.run_ok(&format!(
        "disklock lookup --json --compat virtlockd {}",
        nodes.join(" ")
    ))?);
    for (r, (n, wwid)) in compat.iter().zip(&scsi_id) {
        assert!(r["error"].is_null(), "{n}: {r}");
        if *n == scene.lv.dm {
            assert_eq!(r["key"], lv_uuid, "{n}");
        } else if wwid.is_empty() {
            assert_eq!(r["source"], "literal-sha256", "{n}: {r}");
        } else {
            assert_eq!(
                (r["source"].as_str(), r["key"].as_str()),
                (Some("scsi-wwid"), Some(wwid.as_str())),
                "{n}"
            );
        }
    }

    // The same WWIDs straight from the devices through SG_IO.
    let disks: Vec<String> = scsi_id
        .keys()
        .filter(|n| n.starts_with("sd") && all[*n]["partition"].is_null())
        .map(|n| format!("/dev/{n}"))
        .collect();
    let probed = rows(&h.run_ok(&format!(
        "disklock lookup --json --probe {}",
        disks.join(" ")
    ))?);
    assert!(!probed.is_empty());
    for r in &probed {
        let n = r["device"].as_str().unwrap();
        assert_eq!(r["key"].as_str(), Some(scsi_id[n].as_str()), "{n}: {r}");
        assert!(r["detail"].as_str().unwrap().contains("SG_IO"), "{n}: {r}");
    }

    // The resolver benchmark on this guest's real devices, beside spawning lvs and scsi_id.
    match &bench {
        Some(_) => {
            let out = timed("step benchmark", || {
                h.run_ok("DISKLOCK_BENCH_N=2000 resolve-bench 2>&1")
            })?;
            println!("--- resolver benchmark in the guest (TCG) ---\n{out}");
            assert!(
                out.contains("resolver (this host)") && out.contains("spawn lvs"),
                "{out}"
            );
        }
        None => panic!("DISKLOCK_BENCH_BIN is not set: run through vm-harness/run-tests.sh"),
    }
    Ok(())
}
