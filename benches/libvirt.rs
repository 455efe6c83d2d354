//! What a lock manager adds to `virsh start` and `virsh destroy`: libvirt's `nop` (locks
//! nothing: the baseline), `lockd` (virtlockd) and `disklock` (the plugin and its daemon),
//! each in its own libvirtd (namespaces set up by `scripts/virtlockd-env.sh`), with domains
//! of 1 and 16 disks, interleaved round by round so that the machine's drift hits every
//! configuration alike. Prints the medians and what each manager adds to `nop` (the median
//! of the rounds' differences); asserts nothing. Needs root, and the plugin built in release (`cargo build --release -p
//! disklock-libvirt`). `LIBVIRT_BENCH_ROUNDS` (10) starts per configuration.
//!
//! The times are `virsh` as a user runs it (through `nsenter`), so each includes a constant
//! few tens of milliseconds of process start-up and connection; the differences are what the
//! lock managers cost.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::libvirt::{Host, Site, domain_xml_disks};

const MANAGERS: [&str; 3] = ["nop", "lockd", "disklock"];
const DISKS: [usize; 2] = [1, 16];

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn main() {
    let rounds: usize = std::env::var("LIBVIRT_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10);
    let site = Site::new();
    let hosts: Vec<Host> = MANAGERS
        .iter()
        .map(|&m| {
            let name = format!("bench-{m}");
            if m == "disklock" {
                Host::start(&site, &name, "")
            } else {
                Host::start_builtin(&site, &name, m)
            }
        })
        .collect();
    // Each host's domains have disks of their own, so that no host waits for another.
    let mut configs = Vec::new();
    for (h, m) in hosts.iter().zip(MANAGERS) {
        for (i, n) in DISKS.into_iter().enumerate() {
            let disks: Vec<String> = (0..n)
                .map(|d| site.disk(&format!("{m}-{n}-{d}.img"), 1))
                .collect();
            let disks: Vec<&str> = disks.iter().map(String::as_str).collect();
            let dom = format!("bench-{n}");
            let uuid = format!("0d15c10c-0000-4000-8000-0000000{i:02}{:03}", n);
            h.define(&domain_xml_disks(&dom, &uuid, &disks, "", None));
            configs.push((h, m, n, dom));
        }
    }
    let mut starts = vec![Vec::new(); configs.len()];
    let mut destroys = vec![Vec::new(); configs.len()];
    // One start and destroy of each first: libvirt probes QEMU and fills caches.
    for (h, _, _, dom) in &configs {
        h.virsh_ok(&["start", dom]);
        h.virsh_ok(&["destroy", dom]);
    }
    for _ in 0..rounds {
        for (c, (h, _, _, dom)) in configs.iter().enumerate() {
            let t = Instant::now();
            h.virsh_ok(&["start", dom]);
            starts[c].push(t.elapsed());
            let t = Instant::now();
            h.virsh_ok(&["destroy", dom]);
            destroys[c].push(t.elapsed());
        }
    }
    println!("virsh start / destroy, medians of {rounds} interleaved rounds (ms)");
    println!(
        "{:<10} {:>5} {:>9} {:>9} {:>14} {:>16}",
        "manager", "disks", "start", "destroy", "start over nop", "destroy over nop"
    );
    for (c, (_, m, n, _)) in configs.iter().enumerate() {
        let nop = configs
            .iter()
            .position(|(_, m2, n2, _)| *m2 == "nop" && n2 == n)
            .unwrap();
        // Over nop: the median of each round's difference (the two ran moments apart).
        let over = |v: &[Vec<Duration>]| {
            let mut d: Vec<f64> = v[c]
                .iter()
                .zip(&v[nop])
                .map(|(a, b)| ms(*a) - ms(*b))
                .collect();
            d.sort_by(f64::total_cmp);
            d[d.len() / 2]
        };
        let (start_over, destroy_over) = (over(&starts), over(&destroys));
        println!(
            "{:<10} {:>5} {:>9.1} {:>9.1} {:>+14.1} {:>+16.1}",
            m,
            n,
            ms(median(&mut starts[c].clone())),
            ms(median(&mut destroys[c].clone())),
            start_over,
            destroy_over
        );
    }
    drop(hosts);
}
