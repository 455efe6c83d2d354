//! Lease daemon benchmark: acquire+release latency and throughput through the daemon, next
//! to the floor measured in the same run (one lease-file cycle — open(O_CREAT), fcntl lock,
//! unlock, close, unlink — plus one Unix-socket round trip), and the daemon's memory with
//! many leases held.
//!
//! The floor and the daemon are measured in alternating rounds (`LEASE_BENCH_ROUNDS`, default
//! 10: a floor segment, then a daemon segment, each `N / ROUNDS` iterations), and the ratio
//! is each round's daemon p50 over that round's floor, reported as the median of the rounds:
//! on a shared VM the speed of the machine drifts during a run, and both sides of a ratio
//! should see the same machine.
//!
//! `cargo bench --bench lease`. Environment: `LEASE_BENCH_N` (iterations, default 5000),
//! `LEASE_BENCH_DIR` (where the lockspace goes; default `/dev/shm`, see `main`),
//! `LEASE_BENCH_HELD` (leases held for the memory figure, default 100000, capped by the
//! open-file limit: each lease is an open fd; the bench raises its hard limit when it may,
//! i.e. with CAP_SYS_RESOURCE, and the daemon inherits it).
//!
//! The daemon runs as it does by default: it logs every acquire and release (info level),
//! here to a file in the bench's directory. `LEASE_BENCH_LOG=warn` (the daemon's
//! `DISKLOCK_LOG`) measures it without those events.

use std::io::{Read as _, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_disklock");

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

// Float-to-index and the small fcntl constants: both always fit.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

/// Timings of one thing, over all rounds.
#[derive(Default)]
struct Series {
    all: Vec<Duration>,
    busy: Duration,
}

impl Series {
    /// Runs `f` `n` times, timing each; returns this segment's p50.
    fn segment(&mut self, n: usize, mut f: impl FnMut()) -> Duration {
        let mut t = Vec::with_capacity(n);
        let start = Instant::now();
        for _ in 0..n {
            let s = Instant::now();
            f();
            t.push(s.elapsed());
        }
        self.busy += start.elapsed();
        self.all.extend_from_slice(&t);
        t.sort();
        percentile(&t, 0.5)
    }

    fn p(&self, p: f64) -> Duration {
        let mut t = self.all.clone();
        t.sort();
        percentile(&t, p)
    }

    fn per_sec(&self) -> f64 {
        self.all.len() as f64 / self.busy.as_secs_f64()
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

#[allow(clippy::cast_possible_truncation)]
fn lock_cycle(path: &Path) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .unwrap();
    let mut fl = libc::flock {
        l_type: libc::F_WRLCK as i16,
        l_whence: libc::SEEK_SET as i16,
        l_start: 0,
        l_len: 1,
        l_pid: 0,
    };
    nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETLK(&fl)).unwrap();
    fl.l_type = libc::F_UNLCK as i16;
    nix::fcntl::fcntl(&f, nix::fcntl::FcntlArg::F_SETLK(&fl)).unwrap();
    drop(f);
    std::fs::remove_file(path).unwrap();
}

/// One connection to the daemon, kept for the whole run, as a client may keep one while it
/// sends a request at least every 10 s (the daemon's IDLE_TIMEOUT; a floor round between two
/// of ours takes milliseconds).
struct Conn {
    s: UnixStream,
    buf: Vec<u8>,
    chunk: Vec<u8>,
}

fn encode(method: &str, params: &Value) -> Vec<u8> {
    let mut msg = serde_json::to_vec(&json!({
        "method": format!("io.disklock.Lease.{method}"),
        "parameters": params,
    }))
    .unwrap();
    msg.push(0);
    msg
}

impl Conn {
    fn new(s: UnixStream) -> Conn {
        Conn {
            s,
            buf: Vec::with_capacity(1 << 16),
            chunk: vec![0; 1 << 16],
        }
    }

    /// Sends an encoded call and reads its reply into `self.buf` (NUL stripped); fails on an
    /// error reply. A success reply starts with its parameters, an error reply with its name
    /// (the daemon's encoder writes them in that order; `call` checks the whole reply).
    fn call_raw(&mut self, msg: &[u8]) {
        self.s.write_all(msg).unwrap();
        self.buf.clear();
        loop {
            let n = self.s.read(&mut self.chunk).unwrap();
            assert!(n > 0, "daemon closed the connection");
            self.buf.extend_from_slice(&self.chunk[..n]);
            if self.buf.last() == Some(&0) {
                break;
            }
        }
        self.buf.pop();
        assert!(
            self.buf.starts_with(b"{\"parameters\":"),
            "{}",
            String::from_utf8_lossy(&self.buf)
        );
    }

    fn call(&mut self, method: &str, params: Value) -> Value {
        self.call_raw(&encode(method, &params));
        let v: Value = serde_json::from_slice(&self.buf).unwrap();
        assert!(v.get("error").is_none(), "{method}: {v}");
        v
    }
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// Raises this process's open-file limit (soft and hard) so that the daemon, which inherits
/// it, can hold `leases` leases; says what it got and why not more.
fn raise_nofile(leases: usize) -> String {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let want = u64::try_from(leases)
        .unwrap_or(u64::MAX)
        .saturating_add(1024);
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(u64::MAX);
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    if hard >= want {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
        return format!("hard {hard} (enough)");
    }
    let target = want.min(nr_open);
    match setrlimit(Resource::RLIMIT_NOFILE, target, target) {
        Ok(()) => format!("raised hard limit {hard} -> {target} (fs.nr_open {nr_open})"),
        Err(e) => {
            let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
            format!(
                "hard {hard}, soft {soft}; cannot raise it to {target}: {e} (needs CAP_SYS_RESOURCE; fs.nr_open {nr_open})"
            )
        }
    }
}

/// Starts a daemon on `<dir>/<name>.sock` with lockspace `ls` and `extra` configuration
/// lines, logging to `log`; returns it and a connection to it.
fn start_daemon(dir: &Path, name: &str, ls: &Path, extra: &str, log: &Path) -> (Daemon, Conn) {
    let conf = dir.join(format!("{name}.conf"));
    std::fs::write(
        &conf,
        format!(
            "file_lockspace_dir = \"{0}\"\nlvm_lockspace_dir = \"{0}/lvm\"\nscsi_lockspace_dir = \"{0}/scsi\"\nlockd_conf = \"\"\n{extra}",
            ls.display()
        ),
    )
    .unwrap();
    let socket = dir.join(format!("{name}.sock"));
    let mut cmd = Command::new(BIN);
    if let Ok(level) = std::env::var("LEASE_BENCH_LOG") {
        cmd.env("DISKLOCK_LOG", level);
    } else {
        cmd.env_remove("DISKLOCK_LOG");
    }
    let daemon = Daemon(
        cmd.arg("--config")
            .arg(&conf)
            .arg("--socket")
            .arg(&socket)
            .arg("daemon")
            .env_remove("JOURNAL_STREAM")
            .env_remove("NOTIFY_SOCKET")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let s = loop {
        if let Ok(s) = UnixStream::connect(&socket) {
            break s;
        }
        assert!(Instant::now() < deadline, "the daemon did not start");
        std::thread::sleep(Duration::from_millis(10));
    };
    (daemon, Conn::new(s))
}

fn main() {
    let n = env_usize("LEASE_BENCH_N", 5000);
    let want_held = env_usize("LEASE_BENCH_HELD", 100_000);
    // tmpfs when there is one: ext4 slows down file creation in a directory where many files
    // were recently deleted (its `recently_deleted` scan), which would measure ext4, not us.
    let tmp = if let Ok(d) = std::env::var("LEASE_BENCH_DIR") {
        tempfile::tempdir_in(d).unwrap()
    } else if Path::new("/dev/shm").is_dir() {
        tempfile::tempdir_in("/dev/shm").unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let ls = dir.join("ls");
    std::fs::create_dir(&ls).unwrap();

    // The floor, part 1: a lease-file cycle.
    let p = ls.join("floor");
    // The floor, part 2: a Unix-socket round trip of a small message, to an echo thread.
    let (mut a, mut b) = UnixStream::pair().unwrap();
    let echo = std::thread::spawn(move || {
        let mut buf = [0u8; 256];
        while let Ok(k) = b.read(&mut buf) {
            if k == 0 || b.write_all(&buf[..k]).is_err() {
                break;
            }
        }
    });
    let msg = [b'x'; 200];
    let mut back = [0u8; 200];
    let mut round_trip = || {
        a.write_all(&msg).unwrap();
        a.read_exact(&mut back).unwrap();
    };

    // The daemon, and a second one that does all lease I/O on its lanes
    // (`lease_io_threads = "all"`), each with a lockspace of its own.
    let nofile = raise_nofile(want_held);
    let log = dir.join("daemon.log");
    let (daemon, mut c) = start_daemon(&dir, "d", &ls, "", &log);
    let ls2 = dir.join("ls2");
    std::fs::create_dir(&ls2).unwrap();
    let (_daemon2, mut c2) = start_daemon(
        &dir,
        "d2",
        &ls2,
        "lease_io_threads = \"all\"\n",
        &dir.join("daemon2.log"),
    );
    let owner = json!({"name": "bench", "uuid": "bench-1", "pid": std::process::id()});
    let disk = dir.join("disk.img");
    std::fs::write(&disk, b"").unwrap();
    let d = disk.to_str().unwrap().to_owned();
    // The same two calls every time: encoded once, and the replies checked in full once.
    let acquire = json!({"disks": [{"path": d, "mode": "exclusive"}], "owner": owner});
    let release = json!({"disks": [d]});
    for c in [&mut c, &mut c2] {
        let v = c.call("Acquire", acquire.clone());
        assert_eq!(v["parameters"]["leases"][0]["disk"], d.as_str());
        let v = c.call("Release", release.clone());
        assert_eq!(v["parameters"]["released"][0], d.as_str());
    }
    let (acquire, release) = (encode("Acquire", &acquire), encode("Release", &release));
    let mut pair = || {
        c.call_raw(&acquire);
        c.call_raw(&release);
    };
    let mut pair_lanes = || {
        c2.call_raw(&acquire);
        c2.call_raw(&release);
    };
    // Where the time goes: two calls the connection task answers alone (socket, runtime,
    // decoding and encoding; no table, no lease file).
    let version = encode("Version", &json!({}));
    let mut versions = Conn::new(UnixStream::connect(dir.join("d.sock")).unwrap());
    let mut two_versions = || {
        versions.call_raw(&version);
        versions.call_raw(&version);
    };
    // Warm-up, then alternating rounds: floor (file cycle, round trip), then the daemon.
    let rounds = env_usize("LEASE_BENCH_ROUNDS", 10).max(1);
    let per = (n / rounds).max(50);
    for _ in 0..per {
        lock_cycle(&p);
        round_trip();
        pair();
        pair_lanes();
        two_versions();
    }
    let (mut file, mut rt, mut cycle) = (Series::default(), Series::default(), Series::default());
    let mut laned = Series::default();
    let mut bare = Series::default();
    // Against the target's floor: a lease-file cycle and both round trips a pair makes
    // (acquire, then release); and, for comparison, a floor of one round trip.
    let (mut ratios2, mut ratios) = (Vec::new(), Vec::new());
    let mut lane_costs = Vec::new();
    for _ in 0..rounds {
        let f = file.segment(per, || lock_cycle(&p));
        let r = rt.segment(per, &mut round_trip);
        let d = cycle.segment(per, &mut pair);
        let l = laned.segment(per, &mut pair_lanes);
        bare.segment(per, &mut two_versions);
        ratios.push(us(d) / us(f + r));
        ratios2.push(us(d) / us(f + r * 2));
        lane_costs.push(us(l) / us(d));
    }
    drop(a);
    echo.join().unwrap();
    let floor = file.p(0.5) + rt.p(0.5);
    let floor2 = file.p(0.5) + rt.p(0.5) * 2;
    let spread = |v: &[f64]| {
        v.iter()
            .fold((f64::MAX, 0.0f64), |(lo, hi), &r| (lo.min(r), hi.max(r)))
    };
    let (lo2, hi2) = spread(&ratios2);
    let (lo, hi) = spread(&ratios);
    let (llo, lhi) = spread(&lane_costs);
    let ratio = median(ratios);
    let ratio2 = median(ratios2);
    let lane_cost = median(lane_costs);

    // Memory: as many leases as the open-file limit allows, up to `want_held`.
    let (_, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    let held = want_held.min(
        usize::try_from(hard)
            .unwrap_or(usize::MAX)
            .saturating_sub(256),
    );
    let disks: Vec<PathBuf> = (0..held).map(|i| dir.join(format!("d{i}"))).collect();
    for p in &disks {
        std::fs::write(p, b"").unwrap();
    }
    let pid = daemon.0.id();
    let rss0 = rss_kib(pid);
    let t = Instant::now();
    for chunk in disks.chunks(200) {
        let list: Vec<Value> = chunk
            .iter()
            .map(|p| json!({"path": p.to_str().unwrap(), "mode": "exclusive"}))
            .collect();
        c.call("Acquire", json!({"disks": list, "owner": owner}));
    }
    let fill = t.elapsed();
    let rss1 = rss_kib(pid);
    let log_lines = std::fs::read_to_string(&log).map_or(0, |l| l.lines().count());
    let status = c.call("Status", json!({}));
    assert_eq!(
        status["parameters"]["leases"].as_array().unwrap().len(),
        held
    );
    let per_lease = (rss1.saturating_sub(rss0) as f64 * 1024.0) / held.max(1) as f64;
    let at_100k_mib = (rss0 as f64 * 1024.0 + per_lease * 100_000.0) / (1024.0 * 1024.0);
    c.call("ReleaseOwner", json!({"uuid": "bench-1"}));

    println!(
        "lease benchmark (n = {}, in {rounds} rounds of floor then daemon; lockspace in {})",
        per * rounds,
        dir.display()
    );
    println!("  open-file limit: {nofile}");
    println!("  daemon log: {log_lines} lines (one per acquire and release, info level)");
    println!(
        "  floor: lease-file cycle        p50 {:7.1} us  p99 {:7.1} us",
        us(file.p(0.5)),
        us(file.p(0.99))
    );
    println!(
        "  floor: unix socket round trip  p50 {:7.1} us  p99 {:7.1} us",
        us(rt.p(0.5)),
        us(rt.p(0.99))
    );
    println!(
        "  floor: cycle + 2 round trips        {:7.1} us",
        us(floor2)
    );
    println!("  floor: cycle + 1 round trip         {:7.1} us", us(floor));
    println!(
        "  daemon acquire+release          p50 {:7.1} us  p99 {:7.1} us  {:.0} pairs/s",
        us(cycle.p(0.5)),
        us(cycle.p(0.99)),
        cycle.per_sec()
    );
    println!(
        "  where it goes: two Version calls (socket, runtime, Varlink; no table, no lease file) p50 {:7.1} us",
        us(bare.p(0.5))
    );
    println!(
        "  daemon p50 / (cycle + 2 round trips): {ratio2:.2}x, median of {rounds} rounds ({lo2:.2}x to {hi2:.2}x); all rounds together {:.2}x (target <= 2.5x)",
        us(cycle.p(0.5)) / us(floor2)
    );
    println!(
        "  daemon p50 / (cycle + 1 round trip):  {ratio:.2}x, median of {rounds} rounds ({lo:.2}x to {hi:.2}x); all rounds together {:.2}x (for comparison)",
        us(cycle.p(0.5)) / us(floor)
    );
    println!(
        "  daemon with lease_io_threads = \"all\": p50 {:7.1} us  p99 {:7.1} us; {lane_cost:.2}x the inline daemon, median of {rounds} rounds ({llo:.2}x to {lhi:.2}x)",
        us(laned.p(0.5)),
        us(laned.p(0.99)),
    );
    println!(
        "  memory: {held} leases held (open-file limit {hard}); daemon RSS {:.1} MiB idle, {:.1} MiB held, {:.0} bytes/lease; filled in {:.2} s",
        rss0 as f64 / 1024.0,
        rss1 as f64 / 1024.0,
        per_lease,
        fill.as_secs_f64()
    );
    if held < 100_000 {
        println!(
            "  memory: 100000 leases extrapolated: {at_100k_mib:.1} MiB (target < 100 MB); the open-file limit stops a real run here"
        );
    } else {
        println!(
            "  memory: 100000 leases: {:.1} MiB (target < 100 MB)",
            rss1 as f64 / 1024.0
        );
    }
}
