//! Helpers shared by the rig tests (`mod common;` in each test file).

// Each test file uses a different subset.
#![allow(dead_code)]

use std::path::PathBuf;

use disklock_vm_harness::{Host, Result};
use std::time::Instant;

/// The `disklock` binary to put into the guests: `$DISKLOCK_BIN`, else the workspace's
/// debug build (vm-harness/run-tests.sh builds it first).
pub fn disklock_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("DISKLOCK_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/debug/disklock");
    assert!(
        p.is_file(),
        "{} missing: run `cargo build --bin disklock` or set DISKLOCK_BIN",
        p.display()
    );
    p
}

/// Prints the test's wall time when dropped (also when the test fails).
pub struct TestTimer {
    name: &'static str,
    started: Instant,
}

impl TestTimer {
    pub fn start(name: &'static str) -> Self {
        disklock_vm_harness::note(format!("test {name}: start"));
        Self {
            name,
            started: Instant::now(),
        }
    }
}

impl Drop for TestTimer {
    fn drop(&mut self) {
        let outcome = if std::thread::panicking() {
            "FAILED"
        } else {
            "done"
        };
        disklock_vm_harness::note(format!(
            "test {}: {outcome} in {:.2} s",
            self.name,
            self.started.elapsed().as_secs_f64()
        ));
    }
}

/// The `fcntl-lock` helper of this crate (cargo builds it for the integration tests).
pub fn fcntl_lock_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_fcntl-lock"))
}

/// With `sg_persist`: host `a` registers key 0xa on `a_dev` and reserves it Write Exclusive
/// (type 1); host `b` registers key 0xb on `b_dev` (the same LUN).
pub fn reserve_we(a: &Host, a_dev: &str, b: &Host, b_dev: &str) -> Result<()> {
    a.run_ok(&format!(
        "sg_persist -n --out --register --param-sark=0xa /dev/{a_dev}"
    ))?;
    a.run_ok(&format!(
        "sg_persist -n --out --reserve --param-rk=0xa --prout-type=1 /dev/{a_dev}"
    ))?;
    b.run_ok(&format!(
        "sg_persist -n --out --register --param-sark=0xb /dev/{b_dev}"
    ))?;
    Ok(())
}

// ---- persistent reservations (tests/pr.rs) ----

/// Where root's disklock reads its configuration in the guests.
pub const DISKLOCK_CONF: &str = "/etc/disklock/disklock.conf";

/// The reservation key disklock derives from `host_id = id`: `DLKH` and the id.
pub const fn host_id_key(id: u16) -> u64 {
    0x444c_4b48_0000_0000 | id as u64
}

/// A disklock configuration with persistent reservations on, this host's `host_id`, a
/// lockspace local to the guest (so only the PR layer keeps hosts apart) and the daemon's
/// check interval.
pub fn pr_config(host_id: u16, check_interval_secs: u32) -> String {
    format!(
        "persistent_reservations = 1\n\
         host_id = {host_id}\n\
         pr_check_interval = {check_interval_secs}\n\
         scsi_lockspace_dir = \"/var/lib/disklock/scsi\"\n\
         lvm_lockspace_dir = \"/var/lib/disklock/lvm\"\n\
         file_lockspace_dir = \"/var/lib/disklock/files\"\n"
    )
}

/// `/dev/NAME` for a kernel name, a path unchanged.
pub fn dev_path(dev: &str) -> String {
    if dev.starts_with('/') {
        dev.to_owned()
    } else {
        format!("/dev/{dev}")
    }
}

/// The SCSI code of a reservation type as `sg_persist` names it.
pub fn sg_type_code(name: &str) -> Option<u8> {
    Some(match name.trim() {
        "Write Exclusive" => 1,
        "Exclusive Access" => 3,
        "Write Exclusive, registrants only" => 5,
        "Exclusive Access, registrants only" => 6,
        "Write Exclusive, all registrants" => 7,
        "Exclusive Access, all registrants" => 8,
        _ => return None,
    })
}

fn sg_generation(out: &str) -> u32 {
    let hex = out
        .split("PR generation=0x")
        .nth(1)
        .map(|t| {
            t.chars()
                .take_while(char::is_ascii_hexdigit)
                .collect::<String>()
        })
        .unwrap_or_else(|| panic!("no PR generation in sg_persist output: {out}"));
    u32::from_str_radix(&hex, 16).unwrap_or_else(|e| panic!("generation {hex:?}: {e}"))
}

/// Runs an `sg_persist` command that must succeed, sending it again (up to 3 times) when it
/// met a unit attention: sg_persist reports those (e.g. "reported luns data has changed"
/// after a path change) instead of retrying, as the kernel and disklock do.
pub fn sg_persist(h: &Host, args: &str) -> Result<String> {
    let script = format!("sg_persist {args}");
    for _ in 0..3 {
        let out = h.run(&script)?;
        if out.success() {
            return Ok(out.stdout);
        }
        if !out.stderr.contains("Unit attention") {
            break;
        }
    }
    h.run_ok(&script)
}

/// A key as `sg_persist` and disklock print it (`0x…` hex).
pub fn parse_key(text: &str) -> u64 {
    let t = text.trim().trim_start_matches("0x");
    u64::from_str_radix(t, 16).unwrap_or_else(|e| panic!("key {text:?}: {e}"))
}

/// What `sg_persist -n -k` reports: the generation and every registered key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgKeys {
    pub generation: u32,
    pub keys: Vec<u64>,
}

impl SgKeys {
    /// How many registrations carry `key`.
    pub fn count(&self, key: u64) -> usize {
        self.keys.iter().filter(|k| **k == key).count()
    }
}

/// `sg_persist -n -k DEV` on `h`, parsed (the oracle for registrations).
pub fn sg_keys(h: &Host, dev: &str) -> Result<SgKeys> {
    let out = sg_persist(h, &format!("-n -k {}", dev_path(dev)))?;
    let keys = out
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("0x"))
        .map(parse_key)
        .collect();
    Ok(SgKeys {
        generation: sg_generation(&out),
        keys,
    })
}

/// What `sg_persist -n -r` reports: the generation and the holder's key and type code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SgReservation {
    pub generation: u32,
    pub holder: Option<(u64, u8)>,
}

/// `sg_persist -n -r DEV` on `h`, parsed (the oracle for the reservation).
pub fn sg_reservation(h: &Host, dev: &str) -> Result<SgReservation> {
    let out = sg_persist(h, &format!("-n -r {}", dev_path(dev)))?;
    let generation = sg_generation(&out);
    if out.contains("there is NO reservation held") {
        return Ok(SgReservation {
            generation,
            holder: None,
        });
    }
    let key = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("Key=").map(parse_key))
        .unwrap_or_else(|| panic!("no Key= in sg_persist -r: {out}"));
    let kind = out
        .lines()
        .find_map(|l| l.split_once("type:").map(|(_, t)| t))
        .and_then(sg_type_code)
        .unwrap_or_else(|| panic!("no known type in sg_persist -r: {out}"));
    Ok(SgReservation {
        generation,
        holder: Some((key, kind)),
    })
}

/// `sg_persist -n -c DEV`: the capability bits by their abbreviation (`CRH`, `PTPL_C`, …,
/// and `Allow Commands`) and the type codes its type mask names.
pub fn sg_capabilities(
    h: &Host,
    dev: &str,
) -> Result<(std::collections::BTreeMap<String, u32>, Vec<u8>)> {
    let out = sg_persist(h, &format!("-n -c {}", dev_path(dev)))?;
    let mut bits = std::collections::BTreeMap::new();
    let mut types = Vec::new();
    for line in out.lines() {
        let Some((name, value)) = line.rsplit_once(':') else {
            continue;
        };
        let Ok(v) = value.trim().parse::<u32>() else {
            continue;
        };
        if let Some(abbr) = name.rsplit_once('(').and_then(|(_, a)| a.strip_suffix(')')) {
            bits.insert(abbr.to_owned(), v);
        } else if name.trim() == "Allow Commands" {
            bits.insert("Allow Commands".to_owned(), v);
        } else if let Some(code) = sg_type_code(name)
            && v == 1
        {
            types.push(code);
        }
    }
    types.sort_unstable();
    Ok((bits, types))
}

/// Starts `disklock daemon` in the background on `h` (log in /tmp/daemon.log) and waits,
/// bounded, for its socket.
pub fn start_daemon(h: &Host) -> Result<()> {
    h.run_ok(
        "disklock daemon > /tmp/daemon.log 2>&1 &\n\
         pid=$!\n\
         i=0; until [ -S /run/disklock/disklock.sock ]; do\n\
           kill -0 $pid 2>/dev/null || { cat /tmp/daemon.log >&2; exit 1; }\n\
           [ $i -ge 300 ] && { echo 'no daemon socket within 30 s' >&2; cat /tmp/daemon.log >&2; exit 1; }\n\
           usleep 100000; i=$((i + 1))\n\
         done",
    )?;
    Ok(())
}

/// A process on `h` that lives until killed (a lease owner); its pid.
pub fn owner_process(h: &Host) -> Result<u32> {
    let out = h.run_ok("sleep 1000000 > /dev/null 2>&1 &\necho $!")?;
    Ok(out.trim().parse().expect("owner pid"))
}

/// Shell: CLOCK_MONOTONIC in nanoseconds (busybox `date` has no `%N`), from
/// `/proc/timer_list`'s "now at N nsecs".
pub const NOW_NS: &str = "sed -n 's/^now at \\([0-9]*\\) nsecs$/\\1/p;3q' /proc/timer_list";
