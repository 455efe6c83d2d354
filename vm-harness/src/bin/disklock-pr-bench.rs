//! `disklock-pr-bench`: what disklock's persistent-reservation commands cost on real paths,
//! next to the cheapest and the usual way of sending the same command, in one run.
//!
//! A test program, never shipped: the vm-harness copies it into a guest
//! (`vm-harness/tests/pr.rs`) and prints its figures in the CI log. For each path set it times, interleaving the variants so drift in
//! the machine hits both alike:
//!
//! - READ KEYS and READ RESERVATION through disklock's methods (build the CDB, SG_IO, decode)
//!   against `Device::pass_through_in` of the same CDB on the same fd (SG_IO and nothing else);
//! - REGISTER AND IGNORE EXISTING KEY of the key that is already registered (idempotent);
//! - `engine::register_all` on every path (one thread a path) against it on one path, and
//!   against the same registrations sent one path after another;
//! - spawning `sg_persist -n -k` on the first path against disklock's READ KEYS.
//!
//! With `--simulate-paths N --latency-us L` it needs no device: it times `register_all` on N
//! paths of the simulated logical unit whose every command takes L µs (a SAN round trip),
//! against one path, which shows what registering the paths at once buys on a machine with
//! more than one CPU (the TCG guests have one). `scripts/test` runs it on the host.
//!
//! It prints figures and asserts nothing about them. The key it registers is this host's
//! (or `--key`); if that key was not registered on the disk before, it is unregistered
//! again at the end.

use std::ffi::OsString;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use clap::Parser;
use disklock_scsi::cdb;
use disklock_scsi::device::PR_IN_FIRST_ALLOC_LEN;
use disklock_scsi::pr::{InAction, PersistentReservations, RegisterFlags, ReservationKey};
use serde::Serialize;

use disklock::exit::{Code, chain_std};
use disklock::output::write_stdout;
use disklock::pr::Handle;
use disklock::pr::engine::{self, Path};
use disklock::pr::host_key;
use disklock::pr_cmd::open_target;
use disklock::settings::Settings;

/// Arguments of `disklock-pr-bench`.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Time disklock's persistent-reservation commands (a test program)"
)]
pub struct PrBenchArgs {
    /// disklock's configuration file (default: the usual search, as `disklock --config`).
    #[arg(long, value_name = "FILE")]
    pub config: Option<std::path::PathBuf>,

    /// The disk: a multipath map, or its paths (every DISK must be the same logical unit).
    #[arg(value_name = "DISK", required_unless_present = "simulate_paths")]
    pub disks: Vec<OsString>,

    /// No device: N paths of a simulated logical unit (see --latency-us).
    #[arg(long, value_name = "N", conflicts_with = "disks", value_parser = clap::value_parser!(u32).range(1..=64))]
    pub simulate_paths: Option<u32>,

    /// With --simulate-paths: how long each simulated command takes, in µs.
    #[arg(long, value_name = "US", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(0..=1_000_000))]
    pub latency_us: u64,

    /// Timed repetitions of each in-process command.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub iterations: u32,

    /// Runs of `sg_persist` (each is a process, about 100 ms in a TCG guest).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(0..=10_000))]
    pub spawns: u32,

    /// The key to register (default: this host's).
    #[arg(long, value_name = "KEY")]
    pub key: Option<String>,

    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// Untimed rounds before each measurement (page cache, first-use allocations, udev).
const WARMUP: u32 = 5;

/// Latency figures of one series, in microseconds.
#[derive(Debug, Clone, Serialize)]
struct Stats {
    samples: usize,
    p50_us: f64,
    p99_us: f64,
    min_us: f64,
    mean_us: f64,
}

impl Stats {
    fn of(samples: &[Duration]) -> Stats {
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let n = us.len();
        // Nearest rank: the smallest sample with at least q of the samples at or below it.
        let rank = |percent: usize| -> f64 {
            if n == 0 {
                return f64::NAN;
            }
            us[(percent * n).div_ceil(100).clamp(1, n) - 1]
        };
        Stats {
            samples: n,
            p50_us: rank(50),
            p99_us: rank(99),
            min_us: us.first().copied().unwrap_or(f64::NAN),
            mean_us: if n == 0 {
                f64::NAN
            } else {
                us.iter().sum::<f64>() / n as f64
            },
        }
    }
}

/// One measured command, with what it is compared to.
#[derive(Debug, Serialize)]
struct Row {
    name: &'static str,
    what: &'static str,
    disklock: Stats,
    baseline_name: Option<&'static str>,
    baseline: Option<Stats>,
    /// disklock's p50 divided by the baseline's.
    ratio_p50: Option<f64>,
}

impl Row {
    fn new(name: &'static str, what: &'static str, disklock: Stats) -> Row {
        Row {
            name,
            what,
            disklock,
            baseline_name: None,
            baseline: None,
            ratio_p50: None,
        }
    }

    fn against(mut self, name: &'static str, baseline: Stats) -> Row {
        self.ratio_p50 = Some(self.disklock.p50_us / baseline.p50_us);
        self.baseline_name = Some(name);
        self.baseline = Some(baseline);
        self
    }
}

#[derive(Debug, Serialize)]
struct Report {
    disk: String,
    key: String,
    paths: Vec<String>,
    iterations: u32,
    /// `debug` or `release`: debug builds decode and allocate several times slower.
    build: &'static str,
    rows: Vec<Row>,
    /// `sg_persist -n -k`'s p50 divided by disklock's READ KEYS p50 (`None` without spawns).
    sg_persist_speedup: Option<f64>,
}

fn main() -> std::process::ExitCode {
    let args = PrBenchArgs::parse();
    let outcome = if let Some(n) = args.simulate_paths {
        simulated(n, &args)
    } else {
        Settings::load_from(args.config.as_deref(), None, None).and_then(|s| run(&s, &args))
    };
    match outcome {
        Ok(code) => code.into(),
        Err(e) => {
            eprintln!("disklock-pr-bench: {}", disklock::exit::chain(&e));
            Code::Usage.into()
        }
    }
}

fn run(s: &Settings, args: &PrBenchArgs) -> anyhow::Result<Code> {
    let paths = open_paths(s, &args.disks)?;
    let key = match &args.key {
        Some(t) => {
            let k: ReservationKey = t.parse().map_err(|e| anyhow::anyhow!("--key {t:?}: {e}"))?;
            if k.is_zero() {
                bail!("--key {t:?}: 0 is not a reservation key");
            }
            k
        }
        None => ReservationKey(host_key(s)?.key),
    };
    let lead = &paths[0];
    let lead_dev = scsi(lead)?;
    let path_err = |p: &Path<Handle>, e: &dyn std::error::Error| {
        anyhow::anyhow!("{}: {}", p.name, chain_std(e))
    };

    let was_registered = lead
        .dev
        .read_keys()
        .map_err(|e| path_err(lead, &e))?
        .keys
        .contains(&key);
    engine::register_all(&paths, key).map_err(|e| anyhow::anyhow!("{}", chain_std(&e)))?;

    let n = args.iterations;
    let mut rows = Vec::new();
    let mut buf = vec![0u8; usize::from(PR_IN_FIRST_ALLOC_LEN)];

    // PR IN: disklock's typed method against the bare command on the same fd.
    for (name, what, action) in [
        (
            "read_keys",
            "PERSISTENT RESERVE IN, READ KEYS",
            InAction::ReadKeys,
        ),
        (
            "read_reservation",
            "PERSISTENT RESERVE IN, READ RESERVATION",
            InAction::ReadReservation,
        ),
    ] {
        let raw_cdb = cdb::persistent_reserve_in(action, PR_IN_FIRST_ALLOC_LEN);
        let typed = |dev: &Handle| -> Result<(), disklock_scsi::ScsiError> {
            match action {
                InAction::ReadReservation => dev.read_reservation().map(drop),
                _ => dev.read_keys().map(drop),
            }
        };
        let (ours, raw) = interleaved(
            n,
            || typed(&lead.dev).map_err(|e| path_err(lead, &e)),
            || {
                lead_dev
                    .pass_through_in(&raw_cdb, &mut buf)
                    .map(drop)
                    .map_err(|e| path_err(lead, &e))
            },
        )?;
        rows.push(Row::new(name, what, ours).against("raw SG_IO, same fd", raw));
    }

    // PR OUT: REGISTER AND IGNORE EXISTING KEY of the registered key changes nothing.
    let flags = RegisterFlags {
        ignore_existing: true,
        ..RegisterFlags::default()
    };
    let register = series(n, || {
        lead.dev
            .register(ReservationKey(0), key, flags)
            .map_err(|e| path_err(lead, &e))
    })?;
    rows.push(Row::new(
        "register_ignore",
        "PERSISTENT RESERVE OUT, REGISTER AND IGNORE EXISTING KEY (same key again)",
        register,
    ));

    // Every path at once against one path.
    let all_err = |e: engine::PrError| anyhow::anyhow!("{}", chain_std(&e));
    let (all, one) = interleaved(
        n,
        || engine::register_all(&paths, key).map_err(all_err),
        || engine::register_all(&paths[..1], key).map_err(all_err),
    )?;
    let all_what = if paths.len() == 1 {
        "engine::register_all on the only path"
    } else {
        "engine::register_all on every path (threads when the machine has more than one CPU)"
    };
    rows.push(Row::new("register_all", all_what, all).against("register_all on 1 path", one));
    if paths.len() > 1 {
        // The same work one path after the other: what the threads of register_all buy.
        let (all, seq) = interleaved(
            n,
            || engine::register_all(&paths, key).map_err(all_err),
            || {
                for p in &paths {
                    p.dev
                        .register(ReservationKey(0), key, flags)
                        .map_err(|e| path_err(p, &e))?;
                }
                Ok(())
            },
        )?;
        rows.push(
            Row::new("register_all_vs_seq", all_what, all).against("one path after another", seq),
        );
    }

    // A process per command, as scripts and fence agents do it.
    let mut speedup = None;
    if args.spawns > 0 {
        let node = lead_dev.path().to_owned();
        let spawn = series(args.spawns, || {
            let st = Command::new("sg_persist")
                .arg("-n")
                .arg("-k")
                .arg(&node)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .context("cannot run sg_persist")?;
            if !st.success() {
                bail!("sg_persist -n -k {} failed: {st}", node.display());
            }
            Ok(())
        })?;
        let keys = rows[0].disklock.clone();
        speedup = Some(spawn.p50_us / keys.p50_us);
        rows.push(
            Row::new("read_keys_vs_spawn", "READ KEYS: disklock in-process", keys)
                .against("sg_persist -n -k (spawned)", spawn),
        );
    }

    if !was_registered {
        engine::unregister_all(&paths).map_err(all_err)?;
    }

    let report = Report {
        disk: args
            .disks
            .iter()
            .map(|d| d.to_string_lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" "),
        key: key.to_string(),
        paths: paths.iter().map(|p| p.name.clone()).collect(),
        iterations: n,
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        rows,
        sg_persist_speedup: speedup,
    };
    print(&report, args.json)
}

/// Every path of every DISK, which must all be one logical unit; SCSI only (the raw
/// comparison needs an SG_IO fd).
fn open_paths(s: &Settings, disks: &[OsString]) -> anyhow::Result<Vec<Path<Handle>>> {
    let mut unit: Option<String> = None;
    let mut paths: Vec<Path<Handle>> = Vec::new();
    for d in disks {
        let t = open_target(s, d)?;
        match &unit {
            Some(u) if u != t.res.key.as_str() => bail!(
                "{}: key {} is another disk than {u}: give paths of one disk",
                t.input,
                t.res.key.as_str()
            ),
            Some(_) => {}
            None => unit = Some(t.res.key.as_str().to_owned()),
        }
        for p in t.paths {
            scsi(&p).with_context(|| t.input.clone())?;
            if !paths.iter().any(|q| q.name == p.name) {
                paths.push(p);
            }
        }
    }
    if paths.is_empty() {
        bail!("no path to benchmark");
    }
    Ok(paths)
}

fn scsi(p: &Path<Handle>) -> anyhow::Result<&disklock_scsi::Device> {
    match &p.dev {
        Handle::Scsi(d) => Ok(d),
        Handle::Block(_) => bail!(
            "{} is not SCSI: the benchmark compares with raw SG_IO",
            p.name
        ),
    }
}

/// Times `n` runs of `f` after a warm-up.
/// `register_all` on `n` simulated paths against one, every command taking `latency_us`.
fn simulated(n: u32, args: &PrBenchArgs) -> anyhow::Result<Code> {
    use disklock_testkit::sim::Lu;
    let lu = Lu::with_latency(Duration::from_micros(args.latency_us));
    let key = ReservationKey(disklock::pr::hostkey::from_host_id(1));
    let paths: Vec<Path<_>> = (0..n)
        .map(|i| Path {
            name: format!("sim{i}"),
            dev: lu.path(i),
        })
        .collect();
    let err = |e: engine::PrError| anyhow::anyhow!("{}", chain_std(&e));
    let iterations = args.iterations.min(200);
    let (all, one) = interleaved(
        iterations,
        || engine::register_all(&paths, key).map_err(err),
        || engine::register_all(&paths[..1], key).map_err(err),
    )?;
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let report = Report {
        disk: format!(
            "simulated LU, {} µs a command, {cpus} CPU(s)",
            args.latency_us
        ),
        key: key.to_string(),
        paths: paths.iter().map(|p| p.name.clone()).collect(),
        iterations,
        build: if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
        rows: vec![
            Row::new("register_all", "engine::register_all on every path", all)
                .against("register_all on 1 path", one),
        ],
        sg_persist_speedup: None,
    };
    print(&report, args.json)
}

fn series(n: u32, mut f: impl FnMut() -> anyhow::Result<()>) -> anyhow::Result<Stats> {
    for _ in 0..WARMUP.min(n) {
        f()?;
    }
    let mut samples = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let t = Instant::now();
        f()?;
        samples.push(t.elapsed());
    }
    Ok(Stats::of(&samples))
}

/// Times `n` runs each of `a` and `b`, alternating which goes first.
fn interleaved(
    n: u32,
    mut a: impl FnMut() -> anyhow::Result<()>,
    mut b: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<(Stats, Stats)> {
    for _ in 0..WARMUP.min(n) {
        a()?;
        b()?;
    }
    let mut sa = Vec::with_capacity(n as usize);
    let mut sb = Vec::with_capacity(n as usize);
    let timed = |f: &mut dyn FnMut() -> anyhow::Result<()>, into: &mut Vec<Duration>| {
        let t = Instant::now();
        f()?;
        into.push(t.elapsed());
        anyhow::Ok(())
    };
    for i in 0..n {
        if i % 2 == 0 {
            timed(&mut a, &mut sa)?;
            timed(&mut b, &mut sb)?;
        } else {
            timed(&mut b, &mut sb)?;
            timed(&mut a, &mut sa)?;
        }
    }
    Ok((Stats::of(&sa), Stats::of(&sb)))
}

/// Prints the report, as JSON or as text.
fn print(report: &Report, json: bool) -> anyhow::Result<Code> {
    if json {
        let mut o = serde_json::to_string_pretty(report)?;
        o.push('\n');
        write_stdout(&o)?;
    } else {
        write_stdout(&text(report))?;
    }
    Ok(Code::Ok)
}

fn text(r: &Report) -> String {
    let mut o = format!(
        "disk {} ({} path(s): {}), key {}, {} iterations, {} build\n",
        r.disk,
        r.paths.len(),
        r.paths.join(", "),
        r.key,
        r.iterations,
        r.build
    );
    o.push_str(&format!(
        "{:<20} {:>10} {:>10}   {:<28} {:>10} {:>10} {:>9}\n",
        "COMMAND", "P50 µs", "P99 µs", "BASELINE", "P50 µs", "P99 µs", "RATIO"
    ));
    for row in &r.rows {
        let (bname, b50, b99) = match &row.baseline {
            Some(b) => (
                row.baseline_name.unwrap_or("-"),
                format!("{:.0}", b.p50_us),
                format!("{:.0}", b.p99_us),
            ),
            None => ("-", "-".to_owned(), "-".to_owned()),
        };
        o.push_str(&format!(
            "{:<20} {:>10.0} {:>10.0}   {:<28} {:>10} {:>10} {:>9}\n",
            row.name,
            row.disklock.p50_us,
            row.disklock.p99_us,
            bname,
            b50,
            b99,
            row.ratio_p50
                .map_or_else(|| "-".to_owned(), |x| format!("{x:.3}x"))
        ));
    }
    if let Some(x) = r.sg_persist_speedup {
        o.push_str(&format!(
            "READ KEYS in-process is {x:.0}x faster than spawning sg_persist\n"
        ));
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let s = Stats::of(&samples);
        assert_eq!(s.samples, 100);
        assert!((s.p50_us - 50.0).abs() < 1e-6, "{s:?}");
        assert!((s.p99_us - 99.0).abs() < 1e-6, "{s:?}");
        assert!((s.min_us - 1.0).abs() < 1e-6, "{s:?}");
        assert!((s.mean_us - 50.5).abs() < 1e-6, "{s:?}");
        let one = Stats::of(&[Duration::from_micros(7)]);
        assert!((one.p50_us - 7.0).abs() < 1e-6 && (one.p99_us - 7.0).abs() < 1e-6);
        assert!(Stats::of(&[]).p50_us.is_nan());
    }

    #[test]
    fn ratio_is_disklock_over_baseline() {
        let a = Stats::of(&[Duration::from_micros(110)]);
        let b = Stats::of(&[Duration::from_micros(100)]);
        let row = Row::new("x", "y", a).against("raw", b);
        assert!((row.ratio_p50.unwrap() - 1.1).abs() < 1e-9);
    }
}
