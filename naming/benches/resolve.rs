//! How much a lookup costs, next to what it must cost and what virtlockd pays.
//!
//! In one run, on a fake tree of N devices (default 10,000: SCSI disks with VPD 0x83 pages,
//! LVM LVs, NVMe namespaces and partitions):
//! - the resolver, in-process, µs per disk;
//! - the floor: the same sysfs reads done raw, with no parsing or allocation of results;
//! - on this host's real devices, the resolver again;
//! - virtlockd's cost per disk: spawning `lvs … -o uuid` and `scsi_id`, where installed.
//!
//! Targets (issue 3): within 3× of the raw reads, at least 2,000× cheaper than the `lvs` spawn,
//! 10,000 disks in under a second. This prints figures; it does not fail.

use std::hint::black_box;
use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use disklock_naming::enumerate::sysfs_block_devices;
use disklock_naming::{DevNo, Resolver, Source, SysRoot};
use disklock_testkit::faketree::TreeBuilder;

fn main() {
    let n: u32 = std::env::var("DISKLOCK_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let dir = tempfile::tempdir().expect("temp dir");
    let t0 = Instant::now();
    let devs = build_tree(dir.path(), n);
    println!(
        "fake tree: {} devices built in {:.2} s",
        devs.len(),
        t0.elapsed().as_secs_f64()
    );

    let root = SysRoot::new(dir.path());
    let resolver = Resolver::new(root.clone(), &Source::DEFAULT_ORDER).with_vpd_fallback(None);
    // Warm the page cache and check every device resolves.
    for d in &devs {
        resolver.resolve_devno(*d).expect("fake device resolves");
    }
    let resolve = best_of(5, || {
        for d in &devs {
            black_box(resolver.resolve_devno(*d).ok());
        }
    });
    let raw = best_of(5, || {
        for d in &devs {
            raw_reads(&root, *d);
        }
    });
    let per = |t: Duration| t.as_secs_f64() * 1e6 / devs.len() as f64;
    println!(
        "resolver (fake tree):   {:8.2} µs/disk   {} disks in {:.3} s",
        per(resolve),
        devs.len(),
        resolve.as_secs_f64()
    );
    println!("raw sysfs reads:        {:8.2} µs/disk", per(raw));
    println!(
        "ratio resolver/raw:     {:8.2}x   (target <= 3x)",
        resolve.as_secs_f64() / raw.as_secs_f64()
    );
    let per_10k = resolve.as_secs_f64() * 10_000.0 / devs.len() as f64;
    println!("10,000 disks:           {per_10k:8.3} s    (target < 1 s)");

    // This host's own devices.
    let host = SysRoot::host();
    if let Ok(real) = sysfs_block_devices(&host)
        && !real.is_empty()
    {
        let r = Resolver::new(host, &Source::DEFAULT_ORDER);
        let t = best_of(20, || {
            for d in &real {
                black_box(r.resolve_devno(d.devno).ok());
            }
        });
        println!(
            "resolver (this host):   {:8.2} µs/disk   ({} devices)",
            t.as_secs_f64() * 1e6 / real.len() as f64,
            real.len()
        );
    }

    // What virtlockd pays per disk.
    let target = first_block_node().unwrap_or_else(|| "/dev/null".to_owned());
    for (name, prog, args) in [
        (
            "spawn lvs -o uuid",
            "lvs",
            vec![
                "--noheadings",
                "--unbuffered",
                "--nosuffix",
                "--options",
                "uuid",
            ],
        ),
        (
            "spawn scsi_id",
            "/lib/udev/scsi_id",
            vec!["--replace-whitespace", "--whitelisted", "--device"],
        ),
    ] {
        match spawn_cost(prog, &args, &target) {
            Some(t) => println!(
                "{name:<23} {:8.2} ms/disk   resolver is {:.0}x cheaper{}",
                t.as_secs_f64() * 1e3,
                t.as_secs_f64() / (resolve.as_secs_f64() / devs.len() as f64),
                if prog == "lvs" {
                    "   (target >= 2000x)"
                } else {
                    ""
                }
            ),
            None => println!("{name:<23} not measured: {prog} is not installed"),
        }
    }
}

/// N devices: 40% SCSI disks, 25% LVM LVs, 20% NVMe namespaces, 15% partitions of the disks.
fn build_tree(root: &Path, n: u32) -> Vec<DevNo> {
    let b = TreeBuilder::new(root);
    let mut out = Vec::new();
    let mut disks = Vec::new();
    for i in 0..n {
        let kind = i % 20;
        let devno = DevNo {
            major: 8 + i / 1_000_000,
            minor: i,
        };
        match kind {
            0..=7 => {
                let name = format!("sd{i}");
                let dir = b
                    .scsi_disk(
                        &name,
                        devno,
                        (0, 0, i, 0),
                        Some(&pg83(i)),
                        None,
                        "VMHARN",
                        "SANLUN",
                    )
                    .expect("scsi disk");
                disks.push(dir);
            }
            8..=12 => {
                let uuid = format!("LVM-{:0>32}{:0>32}", i, i * 7);
                b.dm(&format!("dm-{i}"), devno, &format!("vg-lv{i}"), &uuid, &[])
                    .expect("dm");
            }
            13..=16 => {
                b.nvme(&format!("nvme0n{i}"), devno, &format!("eui.{i:016x}"))
                    .expect("nvme");
            }
            _ => {
                let Some(parent) = disks.last() else { continue };
                b.partition(parent, &format!("p{i}"), devno, kind - 16)
                    .expect("partition");
            }
        }
        out.push(devno);
    }
    out
}

/// A VPD 0x83 page with one NAA 6 designator unique to `i`.
fn pg83(i: u32) -> Vec<u8> {
    let mut naa = [0u8; 16];
    naa[0] = 0x60;
    naa[12..].copy_from_slice(&i.to_be_bytes());
    let mut p = vec![0x00, 0x83, 0x00, 20, 0x01, 0x03, 0x00, 16];
    p.extend_from_slice(&naa);
    p
}

/// The reads the resolver needs for one device, done raw: the /sys/dev/block link, the
/// `partition` and `dm/uuid` probes, then the identifier file of the device's kind.
fn raw_reads(root: &SysRoot, d: DevNo) {
    let base = root.real(format!("/sys/dev/block/{d}"));
    let mut buf = [0u8; 4096];
    black_box(std::fs::read_link(&base).ok());
    // One read per attribute, as sysfs serves them.
    let mut read = |p: &Path| -> bool {
        match std::fs::File::open(p) {
            Ok(mut f) => {
                black_box(f.read(&mut buf).ok());
                true
            }
            Err(_) => false,
        }
    };
    let whole = if read(&base.join("partition")) {
        base.join("..")
    } else {
        base.clone()
    };
    if read(&base.join("dm/uuid")) {
        return;
    }
    if read(&whole.join("device/vpd_pg83")) {
        return;
    }
    read(&whole.join("wwid"));
}

fn best_of(rounds: u32, mut f: impl FnMut()) -> Duration {
    (0..rounds)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .min()
        .unwrap_or_default()
}

fn first_block_node() -> Option<String> {
    let devs = sysfs_block_devices(&SysRoot::host()).ok()?;
    devs.into_iter()
        .map(|d| format!("/dev/{}", d.name))
        .find(|p| Path::new(p).exists())
}

/// Median wall time of spawning `prog args target` (its answer does not matter: virtlockd
/// pays the spawn either way); `None` when the program is missing.
fn spawn_cost(prog: &str, args: &[&str], target: &str) -> Option<Duration> {
    let run = || {
        Command::new(prog)
            .args(args)
            .arg(target)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
    };
    run().ok()?;
    let mut times: Vec<Duration> = (0..9)
        .map(|_| {
            let t = Instant::now();
            let _ = run();
            t.elapsed()
        })
        .collect();
    times.sort();
    Some(times[times.len() / 2])
}
