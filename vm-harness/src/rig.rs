//! The rig: one SAN target plus K hosts, started together and torn down together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::host::{Booting, Host, HostSpec, LocalDisk, SanDrive};
use crate::image::{Image, Overlay, Provenance};
use crate::process::RunDir;
use crate::target::{Lun, Target};

/// IQN of every rig's target (each rig has its own tgtd, so they do not clash).
pub const TARGET_IQN: &str = "iqn.2026-01.org.disklock.vm:san";
/// Prefix of the hosts' initiator names; `host<N>` follows.
pub const INITIATOR_PREFIX: &str = "iqn.2026-01.org.disklock.vm:";
/// Where `disklock` lands in the guest (on `PATH`).
pub const GUEST_DISKLOCK: &str = "/usr/local/bin/disklock";
/// Default run root when `DISKLOCK_VM_RUN` is unset.
pub const DEFAULT_RUN_ROOT: &str = "/tmp/disklock-vm";

/// Print a progress line (to stderr, so the test harness shows it with the test).
pub fn note(msg: impl AsRef<str>) {
    eprintln!("[vm] {}", msg.as_ref());
}

/// Run `f`, print how long it took under `label`, return its result.
pub fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    note(format!("{label}: {:.2} s", t.elapsed().as_secs_f64()));
    r
}

/// Configuration of a [`Rig`]; see [`Rig::builder`].
#[derive(Debug, Clone)]
pub struct RigBuilder {
    name: String,
    luns: u32,
    lun_size_mib: u64,
    hosts: usize,
    paths: u32,
    lun_paths: BTreeMap<u32, u32>,
    udev: bool,
    memory_mib: u32,
    nvme: Vec<LocalDisk>,
    virtio: Vec<LocalDisk>,
    disklock: Option<PathBuf>,
    files: Vec<(String, u32, Vec<u8>)>,
    module_groups: Vec<String>,
    boot_timeout: Duration,
    step_timeout: Duration,
    run_root: PathBuf,
}

impl Default for RigBuilder {
    fn default() -> Self {
        Self {
            name: "rig".into(),
            luns: 1,
            lun_size_mib: 64,
            hosts: 1,
            paths: 1,
            lun_paths: BTreeMap::new(),
            udev: false,
            memory_mib: 384,
            nvme: Vec::new(),
            virtio: Vec::new(),
            disklock: std::env::var_os("DISKLOCK_BIN")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            files: Vec::new(),
            module_groups: Vec::new(),
            boot_timeout: Duration::from_secs(180),
            step_timeout: Duration::from_secs(90),
            run_root: std::env::var_os("DISKLOCK_VM_RUN")
                .filter(|v| !v.is_empty())
                .map_or_else(|| PathBuf::from(DEFAULT_RUN_ROOT), PathBuf::from),
        }
    }
}

impl RigBuilder {
    /// Label for the run directory and log lines.
    pub fn name(mut self, name: &str) -> Self {
        self.name = name.to_owned();
        self
    }
    /// Number of LUNs on the target (numbered from 1). Default 1.
    pub fn luns(mut self, n: u32) -> Self {
        self.luns = n;
        self
    }
    /// Size of every LUN. Default 64 MiB.
    pub fn lun_size_mib(mut self, mib: u64) -> Self {
        self.lun_size_mib = mib;
        self
    }
    /// Number of hosts (guests). Default 1.
    pub fn hosts(mut self, n: usize) -> Self {
        self.hosts = n;
        self
    }
    /// Paths (separate `scsi-block` devices, separate iSCSI sessions) from every host to
    /// every LUN. Default 1.
    pub fn paths(mut self, n: u32) -> Self {
        self.paths = n;
        self
    }
    /// Paths to one LUN, overriding [`RigBuilder::paths`] for it.
    pub fn lun_paths(mut self, lun: u32, n: u32) -> Self {
        self.lun_paths.insert(lun, n);
        self
    }
    /// Run systemd-udevd in the guests (by-id links, /run/udev/data). Adds 1.5–3 s per boot.
    pub fn udev(mut self, on: bool) -> Self {
        self.udev = on;
        self
    }
    /// Guest memory. Default 384 MiB.
    pub fn memory_mib(mut self, mib: u32) -> Self {
        self.memory_mib = mib;
        self
    }
    /// Give every host a local emulated NVMe drive with this serial.
    pub fn nvme(mut self, serial: &str, size_mib: u64) -> Self {
        self.nvme.push(LocalDisk {
            serial: Some(serial.to_owned()),
            size_mib,
        });
        self
    }
    /// Give every host a local virtio-blk disk (`serial: None`: it reports none).
    pub fn virtio_disk(mut self, serial: Option<&str>, size_mib: u64) -> Self {
        self.virtio.push(LocalDisk {
            serial: serial.map(str::to_owned),
            size_mib,
        });
        self
    }
    /// Put this `disklock` binary (and the libraries it needs) at [`GUEST_DISKLOCK`].
    /// Default: `$DISKLOCK_BIN` if set.
    pub fn disklock(mut self, path: impl Into<PathBuf>) -> Self {
        self.disklock = Some(path.into());
        self
    }
    /// Put a file into every guest.
    pub fn file(mut self, guest_path: &str, perm: u32, body: impl Into<Vec<u8>>) -> Self {
        self.files.push((guest_path.to_owned(), perm, body.into()));
        self
    }
    /// Also load the kernel modules of this group at boot (`/etc/modules/<group>.list`).
    pub fn modules(mut self, group: &str) -> Self {
        self.module_groups.push(group.to_owned());
        self
    }
    /// Limit for each guest's boot. Default 180 s.
    pub fn boot_timeout(mut self, t: Duration) -> Self {
        self.boot_timeout = t;
        self
    }
    /// Default limit for each guest command. Default 90 s.
    pub fn step_timeout(mut self, t: Duration) -> Self {
        self.step_timeout = t;
        self
    }
    /// Parent of the run directory. Default `$DISKLOCK_VM_RUN` or [`DEFAULT_RUN_ROOT`].
    pub fn run_root(mut self, dir: impl Into<PathBuf>) -> Self {
        self.run_root = dir.into();
        self
    }

    fn paths_for(&self, lun: u32) -> u32 {
        self.lun_paths.get(&lun).copied().unwrap_or(self.paths)
    }

    fn validate(&self) -> Result<()> {
        if self.hosts == 0 {
            return Err(Error::Config("a rig needs at least one host".into()));
        }
        if let Some((lun, _)) = self
            .lun_paths
            .iter()
            .find(|(l, _)| **l == 0 || **l > self.luns)
        {
            return Err(Error::Config(format!(
                "lun_paths for LUN {lun}, but LUNs are 1..={}",
                self.luns
            )));
        }
        let drives: u32 = (1..=self.luns).map(|l| self.paths_for(l)).sum();
        if drives > 255 {
            return Err(Error::Config("more than 255 SAN paths per host".into()));
        }
        if !self
            .name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(Error::Config(format!(
                "rig name {:?}: use [A-Za-z0-9_-]",
                self.name
            )));
        }
        if let Some(p) = &self.disklock
            && !p.is_file()
        {
            return Err(Error::Config(format!(
                "disklock binary {} does not exist (cargo build --bin disklock)",
                p.display()
            )));
        }
        Ok(())
    }

    /// Build (or reuse) the image, start tgtd, boot every host in parallel, and wait
    /// until all are ready.
    pub fn start(self) -> Result<Rig> {
        self.validate()?;
        let t0 = Instant::now();
        let (image, provenance) = Image::get()?;
        match provenance {
            Provenance::Built(d) => note(format!(
                "image built in {:.1} s: {}",
                d.as_secs_f64(),
                image.dir.display()
            )),
            Provenance::Reused | Provenance::FromEnv => {}
        }
        let run = RunDir::create(&self.run_root, &self.name)?;
        let registry = run.registry();

        let luns: Vec<Lun> = (1..=self.luns)
            .map(|n| Lun::new(n, run.path(), self.lun_size_mib))
            .collect();
        let t = Instant::now();
        let target = Target::start(run.path(), registry.clone(), TARGET_IQN.to_owned(), luns)?;
        let tgt_time = t.elapsed();

        let mut overlay = Overlay::new(&image)?;
        if let Some(bin) = &self.disklock {
            overlay.add_program(bin, GUEST_DISKLOCK)?;
        }
        for (path, perm, body) in &self.files {
            overlay.add_bytes(path, *perm, body);
        }
        let initrd = run.path().join("initrd.cpio");
        overlay.write_initrd(&image.base_cpio, &initrd)?;

        let mut san = Vec::new();
        for lun in 1..=self.luns {
            for path in 0..self.paths_for(lun) {
                san.push(SanDrive {
                    lun,
                    path,
                    url: target.url(lun),
                });
            }
        }
        let mut booting = Vec::new();
        for i in 0..self.hosts {
            let spec = HostSpec {
                name: format!("host{i}"),
                initiator: format!("{INITIATOR_PREFIX}host{i}"),
                memory_mib: self.memory_mib,
                udev: self.udev,
                san: san.clone(),
                nvme: self.nvme.clone(),
                virtio: self.virtio.clone(),
                module_groups: self.module_groups.clone(),
                boot_timeout: self.boot_timeout,
                step_timeout: self.step_timeout,
            };
            booting.push(Booting::launch(
                spec,
                run.path(),
                &image.vmlinux,
                &initrd,
                &registry,
            )?);
        }
        let mut hosts = Vec::new();
        for b in booting {
            hosts.push(b.wait_ready()?);
        }
        let boots: Vec<String> = hosts
            .iter()
            .map(|h| {
                format!(
                    "{} {:.2} s (guest uptime {:.2} s)",
                    h.name(),
                    h.boot_time().as_secs_f64(),
                    h.hello().uptime
                )
            })
            .collect();
        note(format!(
            "rig {} up in {:.2} s: tgtd {:.2} s, {} LUN(s), {} path(s) per host{}; boot {}",
            self.name,
            t0.elapsed().as_secs_f64(),
            tgt_time.as_secs_f64(),
            self.luns,
            san.len(),
            if self.udev { ", udev" } else { "" },
            boots.join(", ")
        ));
        Ok(Rig {
            hosts,
            target,
            image,
            name: self.name,
            with_disklock: self.disklock.is_some(),
            started: t0,
            run,
        })
    }
}

/// A running SAN rig. Dropping it kills every QEMU and tgtd and removes the run
/// directory (kept, with every console log printed, when the thread is panicking).
#[derive(Debug)]
pub struct Rig {
    // drop order: hosts (QEMU) first, then the target, then the directory
    hosts: Vec<Host>,
    target: Target,
    image: Image,
    name: String,
    with_disklock: bool,
    started: Instant,
    run: RunDir,
}

impl Rig {
    /// Start configuring a rig.
    pub fn builder() -> RigBuilder {
        RigBuilder::default()
    }

    /// Host `i` (0-based). Panics if there is no such host.
    pub fn host(&self, i: usize) -> &Host {
        match self.hosts.get(i) {
            Some(h) => h,
            None => panic!(
                "rig {} has {} hosts, no host {i}",
                self.name,
                self.hosts.len()
            ),
        }
    }

    /// All hosts.
    pub fn hosts(&self) -> &[Host] {
        &self.hosts
    }

    /// The SAN target.
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// LUN `n` (1-based). Panics if there is no such LUN.
    pub fn lun(&self, n: u32) -> &Lun {
        match self.target.luns().iter().find(|l| l.number == n) {
            Some(l) => l,
            None => panic!("rig {} has no LUN {n}", self.name),
        }
    }

    /// The guest image in use.
    pub fn image(&self) -> &Image {
        &self.image
    }

    /// Whether a `disklock` binary was put into the guests.
    pub fn has_disklock(&self) -> bool {
        self.with_disklock
    }

    /// The run directory (consoles, logs, LUN files).
    pub fn run_dir(&self) -> &Path {
        self.run.path()
    }

    /// Time since [`RigBuilder::start`] began.
    pub fn age(&self) -> Duration {
        self.started.elapsed()
    }

    /// Every host's console tail and tgtd's log tail, for failure reports.
    pub fn logs(&self, lines: usize) -> String {
        let mut s = String::new();
        for h in &self.hosts {
            s.push_str(&format!(
                "===== {} console ({}) =====\n",
                h.name(),
                h.console_path().display()
            ));
            s.push_str(&h.console_tail(lines));
        }
        s.push_str("===== tgtd log =====\n");
        s.push_str(&self.target.log_tail(lines.min(40)));
        s
    }
}

impl Drop for Rig {
    fn drop(&mut self) {
        let verbose = std::env::var_os("DISKLOCK_VM_LOGS").is_some_and(|v| v != "0");
        if std::thread::panicking() {
            self.run.keep();
            eprintln!(
                "[vm] rig {} failed; logs follow\n{}",
                self.name,
                self.logs(80)
            );
        } else if verbose {
            eprintln!("{}", self.logs(80));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builder_validation() {
        let bad = |b: RigBuilder| b.validate().unwrap_err().to_string();
        assert!(bad(Rig::builder().hosts(0)).contains("at least one host"));
        assert!(bad(Rig::builder().luns(2).lun_paths(3, 2)).contains("LUN 3"));
        assert!(bad(Rig::builder().name("a b")).contains("rig name"));
        assert!(bad(Rig::builder().disklock("/nonexistent/disklock")).contains("does not exist"));
        let ok = Rig::builder()
            .luns(3)
            .paths(1)
            .lun_paths(1, 2)
            .disklock("/bin/sh");
        ok.validate().unwrap();
        assert_eq!(ok.paths_for(1), 2);
        assert_eq!(ok.paths_for(2), 1);
    }
}
