//! The rig: one SAN target plus K hosts, started together and torn down together.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
use crate::host::{Booting, Host, HostSpec, LocalDisk, Nic, SanDrive};
use crate::image::{Image, Overlay, Provenance};
use crate::lio::{LioTarget, TargetKind, backing_serial};
use crate::net::Hub;
use crate::nfs::{self, NfsServer};
use crate::process::RunDir;
use crate::target::{Lun, Target, free_port};

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
    programs: Vec<(PathBuf, String)>,
    files: Vec<(String, u32, Vec<u8>)>,
    nfs: bool,
    target_kind: TargetKind,
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
            programs: Vec::new(),
            files: Vec::new(),
            nfs: false,
            target_kind: TargetKind::Tgt,
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
    /// Put a host program (and the libraries it needs) into every guest at `guest_path`.
    pub fn program(mut self, host_path: impl Into<PathBuf>, guest_path: &str) -> Self {
        self.programs
            .push((host_path.into(), guest_path.to_owned()));
        self
    }
    /// Add an NFS server guest exporting a shared lockspace that every host mounts at
    /// [`nfs::LOCKSPACE_MOUNT`]; hosts and server share a private network (10.77.0.0/24).
    pub fn nfs(mut self, on: bool) -> Self {
        self.nfs = on;
        self
    }
    /// The SAN target: tgtd on the host (default) or LIO in a guest.
    pub fn target_kind(mut self, kind: TargetKind) -> Self {
        self.target_kind = kind;
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
        if let Some((p, _)) = self.programs.iter().find(|(p, _)| !p.is_file()) {
            return Err(Error::Config(format!(
                "program {} does not exist",
                p.display()
            )));
        }
        if self.target_kind == TargetKind::Lio && self.luns == 0 {
            return Err(Error::Config("a LIO target needs at least one LUN".into()));
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

        let mut overlay = Overlay::new(&image)?;
        if let Some(bin) = &self.disklock {
            overlay.add_program(bin, GUEST_DISKLOCK)?;
        }
        for (host_path, guest_path) in &self.programs {
            overlay.add_program(host_path, guest_path)?;
        }
        for (path, perm, body) in &self.files {
            overlay.add_bytes(path, *perm, body);
        }
        let initrd = run.path().join("initrd.cpio");
        overlay.write_initrd(&image.base_cpio, &initrd)?;

        let host_names: Vec<String> = (0..self.hosts).map(|i| format!("host{i}")).collect();
        let initiators: Vec<String> = host_names
            .iter()
            .map(|n| format!("{INITIATOR_PREFIX}{n}"))
            .collect();
        // the hub: port 0 is the NFS server, port 1 + i is host i
        let hub = if self.nfs {
            let mut names = vec!["nfs".to_owned()];
            names.extend(host_names.iter().cloned());
            Some(Hub::start(run.path(), &names)?)
        } else {
            None
        };
        let service_spec = |name: &str, mods: &[&str], nic: Nic, virtio: Vec<LocalDisk>| HostSpec {
            name: name.to_owned(),
            initiator: format!("{INITIATOR_PREFIX}{name}"),
            memory_mib: self.memory_mib,
            udev: false,
            san: Vec::new(),
            nvme: Vec::new(),
            virtio,
            module_groups: mods.iter().map(|m| (*m).to_owned()).collect(),
            nic: Some(nic),
            boot_timeout: self.boot_timeout,
            step_timeout: self.step_timeout,
        };

        // Service guests boot first, in parallel: the hosts' QEMU opens its iSCSI
        // sessions at start, so a LIO target must be serving before they launch.
        let t = Instant::now();
        let nfs_boot = match &hub {
            Some(hub) => {
                let port = hub
                    .port(0)
                    .cloned()
                    .ok_or_else(|| Error::Config("hub".into()))?;
                let nic = Nic::Hub {
                    port,
                    mac: "52:54:00:77:00:01".into(),
                    ip: format!("{}/24", nfs::server_address()),
                };
                Some(Booting::launch(
                    service_spec("nfs", &["net", "nfsd"], nic, Vec::new()),
                    run.path(),
                    &image.vmlinux,
                    &initrd,
                    &registry,
                )?)
            }
            None => None,
        };
        let san = match self.target_kind {
            TargetKind::Tgt => San::Tgt(Target::start(
                run.path(),
                registry.clone(),
                TARGET_IQN.to_owned(),
                luns,
            )?),
            TargetKind::Lio => {
                let port = free_port()?;
                let disks = luns
                    .iter()
                    .map(|l| LocalDisk {
                        serial: Some(backing_serial(l.number)),
                        size_mib: l.size_mib,
                    })
                    .collect();
                let nic = Nic::User {
                    forwards: vec![(port, 3260)],
                };
                let guest = Booting::launch(
                    service_spec("lio", &["net", "lio"], nic, disks),
                    run.path(),
                    &image.vmlinux,
                    &initrd,
                    &registry,
                )?
                .wait_ready()?;
                San::Lio(Box::new(LioTarget::start(
                    guest,
                    TARGET_IQN.to_owned(),
                    port,
                    luns,
                    &initiators,
                )?))
            }
        };
        let san_time = t.elapsed();

        let mut drives = Vec::new();
        for lun in 1..=self.luns {
            for path in 0..self.paths_for(lun) {
                drives.push(SanDrive {
                    lun,
                    path,
                    url: san.url(lun),
                });
            }
        }
        let mut booting = Vec::new();
        for (i, name) in host_names.iter().enumerate() {
            let nic = match &hub {
                Some(hub) => Some(Nic::Hub {
                    port: hub
                        .port(i + 1)
                        .cloned()
                        .ok_or_else(|| Error::Config("hub".into()))?,
                    mac: format!("52:54:00:77:00:{:02x}", 0x10 + i),
                    ip: format!("{}/24", nfs::host_address(i)),
                }),
                None => None,
            };
            let mut mods = self.module_groups.clone();
            if self.nfs {
                mods.extend(["net".to_owned(), "nfs".to_owned()]);
            }
            let spec = HostSpec {
                name: name.clone(),
                initiator: initiators[i].clone(),
                memory_mib: self.memory_mib,
                udev: self.udev,
                san: drives.clone(),
                nvme: self.nvme.clone(),
                virtio: self.virtio.clone(),
                module_groups: mods,
                nic,
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
        let nfs_server = match nfs_boot {
            Some(b) => {
                let guest = b.wait_ready()?;
                let t = Instant::now();
                let server = NfsServer::start(guest)?;
                note(format!(
                    "nfs server up ({}), nfsd started in {:.2} s",
                    server.versions(),
                    t.elapsed().as_secs_f64()
                ));
                Some(server)
            }
            None => None,
        };
        let mut hosts = Vec::new();
        for b in booting {
            hosts.push(b.wait_ready()?);
        }
        if nfs_server.is_some() {
            let t = Instant::now();
            std::thread::scope(|s| -> Result<()> {
                let jobs: Vec<_> = hosts
                    .iter()
                    .enumerate()
                    .map(|(i, h)| {
                        s.spawn(move || h.run_ok(&nfs::mount_script(&nfs::host_address(i))))
                    })
                    .collect();
                for j in jobs {
                    j.join().unwrap_or_else(|p| std::panic::resume_unwind(p))?;
                }
                Ok(())
            })?;
            note(format!(
                "{} mounted on {} host(s) in {:.2} s",
                nfs::LOCKSPACE_MOUNT,
                hosts.len(),
                t.elapsed().as_secs_f64()
            ));
        }
        let boots: Vec<String> = hosts
            .iter()
            .chain(nfs_server.as_ref().map(NfsServer::host))
            .chain(san.guest())
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
            "rig {} up in {:.2} s: {} {:.2} s, {} LUN(s), {} path(s) per host{}{}; boot {}",
            self.name,
            t0.elapsed().as_secs_f64(),
            match san {
                San::Tgt(_) => "tgtd",
                San::Lio(_) => "LIO guest",
            },
            san_time.as_secs_f64(),
            self.luns,
            drives.len(),
            if self.udev { ", udev" } else { "" },
            if self.nfs { ", NFS lockspace" } else { "" },
            boots.join(", ")
        ));
        Ok(Rig {
            hosts,
            nfs: nfs_server,
            san,
            hub,
            image,
            name: self.name,
            with_disklock: self.disklock.is_some(),
            started: t0,
            run,
        })
    }
}

/// The rig's SAN target.
#[derive(Debug)]
enum San {
    Tgt(Target),
    Lio(Box<LioTarget>),
}

impl San {
    fn url(&self, lun: u32) -> String {
        match self {
            San::Tgt(t) => t.url(lun),
            San::Lio(l) => l.url(lun),
        }
    }

    fn guest(&self) -> Option<&Host> {
        match self {
            San::Tgt(_) => None,
            San::Lio(l) => Some(l.host()),
        }
    }
}

/// A running SAN rig. Dropping it kills every QEMU and tgtd and removes the run
/// directory (kept, with every console log printed, when the thread is panicking).
#[derive(Debug)]
pub struct Rig {
    // drop order: hosts (QEMU) first, then the servers, the hub, then the directory
    hosts: Vec<Host>,
    nfs: Option<NfsServer>,
    san: San,
    hub: Option<Hub>,
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

    /// The SAN target when it is tgtd. Panics on a LIO rig (see [`Rig::lio`]).
    pub fn target(&self) -> &Target {
        match &self.san {
            San::Tgt(t) => t,
            San::Lio(_) => panic!("rig {} uses a LIO target: use rig.lio()", self.name),
        }
    }

    /// The SAN target when it is LIO. Panics on a tgtd rig (see [`Rig::target`]).
    pub fn lio(&self) -> &LioTarget {
        match &self.san {
            San::Lio(l) => l,
            San::Tgt(_) => panic!("rig {} uses tgtd: use rig.target()", self.name),
        }
    }

    /// Which kind of target the rig runs.
    pub fn target_kind(&self) -> TargetKind {
        match self.san {
            San::Tgt(_) => TargetKind::Tgt,
            San::Lio(_) => TargetKind::Lio,
        }
    }

    /// The NFS server. Panics unless the rig was built with [`RigBuilder::nfs`].
    pub fn nfs_server(&self) -> &NfsServer {
        match &self.nfs {
            Some(n) => n,
            None => panic!("rig {} has no NFS server: use .nfs(true)", self.name),
        }
    }

    /// Frames relayed on the guests' network so far (0 without one).
    pub fn network_frames(&self) -> u64 {
        self.hub.as_ref().map_or(0, Hub::frames)
    }

    /// LUN `n` (1-based). Panics if there is no such LUN.
    pub fn lun(&self, n: u32) -> &Lun {
        let luns = match &self.san {
            San::Tgt(t) => t.luns(),
            San::Lio(l) => l.luns(),
        };
        match luns.iter().find(|l| l.number == n) {
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

    /// Every guest's console tail and tgtd's log tail, for failure reports.
    pub fn logs(&self, lines: usize) -> String {
        let mut s = String::new();
        let service = self
            .nfs
            .as_ref()
            .map(NfsServer::host)
            .into_iter()
            .chain(self.san.guest());
        for h in self.hosts.iter().chain(service) {
            s.push_str(&format!(
                "===== {} console ({}) =====\n",
                h.name(),
                h.console_path().display()
            ));
            s.push_str(&h.console_tail(lines));
        }
        if let San::Tgt(t) = &self.san {
            s.push_str("===== tgtd log =====\n");
            s.push_str(&t.log_tail(lines.min(40)));
        }
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
