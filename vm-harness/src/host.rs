//! One simulated host: a QEMU TCG guest with virtio-scsi `scsi-block` drives on the SAN.

use std::fs;
use std::os::fd::AsFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::channel::{ChanError, Channel, Hello, Output};
use crate::error::{Error, IoContext, Result};
use crate::net::Port;
use crate::process::{Guarded, Registry, tail};
use crate::qmp;

/// A disk local to one host (not on the SAN), backed by a sparse file in the run dir.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalDisk {
    /// Serial number the device reports (`None`: none at all, virtio-blk only).
    pub serial: Option<String>,
    /// Size in MiB.
    pub size_mib: u64,
}

/// One SAN path: a `scsi-block` device with its own iSCSI session to one LUN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SanDrive {
    pub lun: u32,
    pub path: u32,
    pub url: String,
}

/// A guest's network card (virtio-net, netdev id `net0`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Nic {
    /// On the rig's hub (see `net.rs`), with a static address `ip` (`A.B.C.D/24`).
    Hub { port: Port, mac: String, ip: String },
    /// QEMU user-mode networking, restricted (no way out), with TCP forwards from
    /// 127.0.0.1:`host` to the guest's `guest` port; the guest is 10.0.2.15.
    User { forwards: Vec<(u16, u16)> },
}

/// The guest's address with user-mode networking.
pub(crate) const USER_NET_GUEST_IP: &str = "10.0.2.15";

/// Everything needed to start one guest.
#[derive(Debug, Clone)]
pub(crate) struct HostSpec {
    pub name: String,
    pub initiator: String,
    pub memory_mib: u32,
    pub udev: bool,
    pub san: Vec<SanDrive>,
    pub nvme: Vec<LocalDisk>,
    pub virtio: Vec<LocalDisk>,
    pub module_groups: Vec<String>,
    pub nic: Option<Nic>,
    pub boot_timeout: Duration,
    pub step_timeout: Duration,
}

impl HostSpec {
    /// What `/init` waits for, `sd:N,nvme:N,vd:N` without the zero counts.
    pub(crate) fn wait_spec(&self) -> String {
        [
            ("sd", self.san.len()),
            ("nvme", self.nvme.len()),
            ("vd", self.virtio.len()),
        ]
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(p, n)| format!("{p}:{n}"))
        .collect::<Vec<_>>()
        .join(",")
    }

    fn local_image(&self, dir: &Path, kind: &str, i: usize) -> PathBuf {
        dir.join(format!("{}-{kind}{i}.img", self.name))
    }

    /// The QEMU command line (without the program name).
    pub(crate) fn qemu_args(&self, dir: &Path, vmlinux: &Path, initrd: &Path) -> Vec<String> {
        let mut append = format!("console=ttyS0 quiet panic=-1 dl.name={}", self.name);
        let wait = self.wait_spec();
        if !wait.is_empty() {
            append.push_str(&format!(" dl.wait={wait}"));
        }
        if self.udev {
            append.push_str(" dl.udev=1");
        }
        if !self.module_groups.is_empty() {
            append.push_str(&format!(" dl.mods={}", self.module_groups.join(",")));
        }
        match &self.nic {
            Some(Nic::Hub { ip, .. }) => append.push_str(&format!(" dl.ip={ip}")),
            Some(Nic::User { .. }) => append.push_str(&format!(" dl.ip={USER_NET_GUEST_IP}/24")),
            None => {}
        }
        let d = |p: &Path| p.display().to_string();
        let mut a: Vec<String> = [
            "-accel",
            "tcg",
            "-smp",
            "1",
            "-nodefaults",
            "-no-reboot",
            "-display",
            "none",
            "-m",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        a.push(format!("{}M", self.memory_mib));
        a.extend([
            "-serial".into(),
            format!(
                "file:{}",
                d(&dir.join(format!("{}.console.log", self.name)))
            ),
            "-kernel".into(),
            d(vmlinux),
            "-initrd".into(),
            d(initrd),
            "-append".into(),
            append,
            "-chardev".into(),
            format!(
                "socket,id=ctl,path={}",
                d(&dir.join(format!("{}.ctl", self.name)))
            ),
            "-device".into(),
            "virtio-serial-pci".into(),
            "-device".into(),
            "virtserialport,chardev=ctl,name=dl.ctl".into(),
            "-qmp".into(),
            format!(
                "unix:{},server=on,wait=off",
                d(&dir.join(format!("{}.qmp", self.name)))
            ),
        ]);
        match &self.nic {
            None => a.extend(["-nic".into(), "none".into()]),
            Some(Nic::Hub { port, mac, .. }) => a.extend([
                "-netdev".into(),
                format!(
                    "dgram,id=net0,local.type=unix,local.path={},remote.type=unix,remote.path={}",
                    d(&port.guest),
                    d(&port.hub)
                ),
                "-device".into(),
                // romfile=: no PXE option ROM (the kernel boots directly)
                format!("virtio-net-pci,netdev=net0,id=nic0,mac={mac},romfile="),
            ]),
            Some(Nic::User { forwards }) => {
                let mut netdev = String::from("user,id=net0,net=10.0.2.0/24,restrict=on");
                for (host, guest) in forwards {
                    netdev.push_str(&format!(
                        ",hostfwd=tcp:127.0.0.1:{host}-{USER_NET_GUEST_IP}:{guest}"
                    ));
                }
                a.extend([
                    "-netdev".into(),
                    netdev,
                    "-device".into(),
                    "virtio-net-pci,netdev=net0,id=nic0,romfile=".into(),
                ]);
            }
        }
        if !self.san.is_empty() {
            a.extend([
                "-iscsi".into(),
                format!("initiator-name={}", self.initiator),
                "-device".into(),
                "virtio-scsi-pci,id=scsi0".into(),
            ]);
        }
        for (k, drive) in self.san.iter().enumerate() {
            a.extend([
                "-drive".into(),
                san_drive_opts(k, drive),
                "-device".into(),
                san_device_opts(k),
            ]);
        }
        for (k, disk) in self.nvme.iter().enumerate() {
            let file = self.local_image(dir, "nvme", k);
            a.extend([
                "-drive".into(),
                format!("file={},if=none,id=nvme{k},format=raw", d(&file)),
                "-device".into(),
                format!(
                    "nvme,drive=nvme{k},serial={}",
                    disk.serial.as_deref().unwrap_or("DLNVME")
                ),
            ]);
        }
        for (k, disk) in self.virtio.iter().enumerate() {
            let file = self.local_image(dir, "vd", k);
            let serial = disk
                .serial
                .as_ref()
                .map(|s| format!(",serial={s}"))
                .unwrap_or_default();
            a.extend([
                "-drive".into(),
                format!("file={},if=none,id=vd{k},format=raw", d(&file)),
                "-device".into(),
                format!("virtio-blk-pci,drive=vd{k}{serial}"),
            ]);
        }
        a
    }
}

/// `-drive` options of SAN path `k` (also what `drive_add` gets when a path comes back).
fn san_drive_opts(k: usize, drive: &SanDrive) -> String {
    format!("file={},if=none,id=san{k},format=raw,cache=none", drive.url)
}

/// `-device` options of SAN path `k`: SCSI target `k` on the one virtio-scsi bus.
fn san_device_opts(k: usize) -> String {
    format!("scsi-block,drive=san{k},bus=scsi0.0,channel=0,scsi-id={k},lun=0,id=sanpath{k}")
}

/// A guest whose QEMU runs but which has not said HELLO yet.
#[derive(Debug)]
pub(crate) struct Booting {
    spec: HostSpec,
    listener: UnixListener,
    qemu: Guarded,
    started: Instant,
    console: PathBuf,
    qemu_log: PathBuf,
    sock: PathBuf,
    qmp: PathBuf,
}

fn console_tail(console: &Path, qemu_log: &Path) -> String {
    let mut s = tail(console, 40);
    let q = tail(qemu_log, 10);
    if !q.trim().is_empty() {
        s.push_str("--- qemu stderr (tail)\n");
        s.push_str(&q);
    }
    s
}

impl Booting {
    /// Create the local disk files, listen on the control socket, start QEMU.
    pub(crate) fn launch(
        spec: HostSpec,
        dir: &Path,
        vmlinux: &Path,
        initrd: &Path,
        registry: &Registry,
    ) -> Result<Self> {
        for (kind, disks) in [("nvme", &spec.nvme), ("vd", &spec.virtio)] {
            for (k, disk) in disks.iter().enumerate() {
                let p = spec.local_image(dir, kind, k);
                let f = fs::File::create(&p).io_context(|| format!("creating {}", p.display()))?;
                f.set_len(disk.size_mib << 20)
                    .io_context(|| format!("sizing {}", p.display()))?;
            }
        }
        let sock = dir.join(format!("{}.ctl", spec.name));
        let _ = fs::remove_file(&sock);
        let listener =
            UnixListener::bind(&sock).io_context(|| format!("listening on {}", sock.display()))?;
        listener
            .set_nonblocking(true)
            .io_context(|| "non-blocking listener".into())?;
        let console = dir.join(format!("{}.console.log", spec.name));
        let qemu_log = dir.join(format!("{}.qemu.log", spec.name));
        let qmp = dir.join(format!("{}.qmp", spec.name));
        let _ = fs::remove_file(&qmp);
        let log = fs::File::create(&qemu_log)
            .io_context(|| format!("creating {}", qemu_log.display()))?;
        let log2 = log.try_clone().io_context(|| "duplicating log fd".into())?;
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(spec.qemu_args(dir, vmlinux, initrd))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        let started = Instant::now();
        let qemu = Guarded::spawn(&mut cmd)?;
        registry.record_pid(qemu.pid());
        Ok(Self {
            spec,
            listener,
            qemu,
            started,
            console,
            qemu_log,
            sock,
            qmp,
        })
    }

    fn down(&mut self, what: &str) -> Error {
        let status = self
            .qemu
            .try_wait()
            .map(|s| s.to_string())
            .unwrap_or_default();
        Error::HostDown {
            host: self.spec.name.clone(),
            what: format!("{what} (qemu {status})"),
            console: console_tail(&self.console, &self.qemu_log),
        }
    }

    /// Wait until the guest says HELLO with the disks it was given.
    pub(crate) fn wait_ready(mut self) -> Result<Host> {
        let deadline = self.started + self.spec.boot_timeout;
        let stream: UnixStream = loop {
            match self.listener.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => {
                    return Err(Error::Io {
                        context: "accepting the control connection".into(),
                        source: e,
                    });
                }
            }
            if self.qemu.try_wait().is_some() {
                return Err(self.down("waiting for QEMU to connect the control channel"));
            }
            if Instant::now() > deadline {
                return Err(Error::Timeout {
                    host: self.spec.name.clone(),
                    what: "waiting for QEMU to connect the control channel".into(),
                    timeout: self.spec.boot_timeout,
                    console: console_tail(&self.console, &self.qemu_log),
                });
            }
            let mut fds = [nix::poll::PollFd::new(
                self.listener.as_fd(),
                nix::poll::PollFlags::POLLIN,
            )];
            let _ = nix::poll::poll(&mut fds, 100u16);
        };
        stream
            .set_nonblocking(false)
            .io_context(|| "blocking control stream".into())?;
        let mut chan = Channel::new(stream);
        let hello = match chan.hello(deadline) {
            Ok(h) => h,
            Err(ChanError::Timeout) => {
                return Err(Error::Timeout {
                    host: self.spec.name.clone(),
                    what: "booting (waiting for HELLO)".into(),
                    timeout: self.spec.boot_timeout,
                    console: console_tail(&self.console, &self.qemu_log),
                });
            }
            Err(ChanError::Closed) => return Err(self.down("booting")),
            Err(ChanError::Io(e)) => {
                return Err(Error::Io {
                    context: "reading HELLO".into(),
                    source: e,
                });
            }
            Err(ChanError::Protocol(m)) => {
                return Err(Error::Protocol {
                    host: self.spec.name.clone(),
                    message: m,
                });
            }
        };
        let boot_time = self.started.elapsed();
        let want = self.spec.wait_spec();
        let want = if want.is_empty() {
            "-".to_owned()
        } else {
            want
        };
        if hello.disks != want {
            return Err(Error::Unexpected {
                host: self.spec.name.clone(),
                message: format!(
                    "guest sees disks {} but was given {want}\n--- console (tail)\n{}",
                    hello.disks,
                    console_tail(&self.console, &self.qemu_log)
                ),
            });
        }
        Ok(Host {
            spec: self.spec,
            console: self.console,
            qemu_log: self.qemu_log,
            sock: self.sock,
            qmp: self.qmp,
            qemu: Mutex::new(self.qemu),
            chan: Mutex::new(Some(chan)),
            hello,
            boot_time,
        })
    }
}

/// A running guest: one host on the SAN.
///
/// Its QEMU is killed when the `Host` is dropped.
#[derive(Debug)]
pub struct Host {
    spec: HostSpec,
    console: PathBuf,
    qemu_log: PathBuf,
    sock: PathBuf,
    qmp: PathBuf,
    qemu: Mutex<Guarded>,
    chan: Mutex<Option<Channel>>,
    hello: Hello,
    boot_time: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A logical volume made by [`Host::create_lv`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogicalVolume {
    /// Volume group name.
    pub vg: String,
    /// Logical volume name.
    pub lv: String,
    /// `/dev/<vg>/<lv>`.
    pub path: String,
    /// LV UUID as `lvs` prints it (with dashes).
    pub uuid: String,
    /// The kernel name of its dm device, e.g. `dm-1`.
    pub dm: String,
}

/// A dm-multipath map made by [`Host::multipath_create`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MultipathMap {
    /// The map name (the WWID, as `user_friendly_names no` gives).
    pub name: String,
    /// The kernel name of its dm device, e.g. `dm-0`.
    pub dm: String,
    /// Kernel names of its paths, e.g. `["sda", "sdb"]`.
    pub slaves: Vec<String>,
}

/// Quote a string for `sh`.
pub fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

impl Host {
    /// The guest's host name (`host0`, `host1`, ...).
    pub fn name(&self) -> &str {
        &self.spec.name
    }

    /// Its iSCSI initiator name.
    pub fn initiator(&self) -> &str {
        &self.spec.initiator
    }

    /// Wall time from QEMU start to HELLO.
    pub fn boot_time(&self) -> Duration {
        self.boot_time
    }

    /// What the guest said when it became ready.
    pub fn hello(&self) -> &Hello {
        &self.hello
    }

    /// Path of the serial console log.
    pub fn console_path(&self) -> &Path {
        &self.console
    }

    /// The last `lines` lines of the serial console (and of QEMU's stderr).
    pub fn console_tail(&self, lines: usize) -> String {
        let mut s = tail(&self.console, lines);
        let q = tail(&self.qemu_log, lines.min(20));
        if !q.trim().is_empty() {
            s.push_str("--- qemu stderr\n");
            s.push_str(&q);
        }
        s
    }

    /// Whether its QEMU is still running.
    pub fn is_running(&self) -> bool {
        lock(&self.qemu).try_wait().is_none()
    }

    fn map_chan_err(&self, e: ChanError, what: &str, timeout: Duration) -> Error {
        match e {
            ChanError::Timeout => Error::Timeout {
                host: self.name().to_owned(),
                what: what.to_owned(),
                timeout,
                console: console_tail(&self.console, &self.qemu_log),
            },
            ChanError::Closed => {
                *lock(&self.chan) = None;
                let status = lock(&self.qemu)
                    .wait_timeout(Duration::from_secs(2))
                    .map(|s| s.to_string())
                    .unwrap_or_else(|| "still running".into());
                Error::HostDown {
                    host: self.name().to_owned(),
                    what: format!("{what} (control channel closed; qemu {status})"),
                    console: console_tail(&self.console, &self.qemu_log),
                }
            }
            ChanError::Io(source) => Error::Io {
                context: format!("{}: {what}", self.name()),
                source,
            },
            ChanError::Protocol(message) => Error::Protocol {
                host: self.name().to_owned(),
                message,
            },
        }
    }

    /// Run a shell script (busybox ash, `cwd /`, no stdin) with the rig's step timeout.
    /// A non-zero exit is not an error here; see [`Host::run_ok`].
    pub fn run(&self, script: &str) -> Result<Output> {
        self.run_timeout(script, self.spec.step_timeout)
    }

    /// [`Host::run`] with an explicit timeout.
    pub fn run_timeout(&self, script: &str, timeout: Duration) -> Result<Output> {
        let mut chan = lock(&self.chan);
        let Some(c) = chan.as_mut() else {
            return Err(Error::HostDown {
                host: self.name().to_owned(),
                what: format!("running {:?}", first_line(script)),
                console: String::new(),
            });
        };
        let r = c.exec(script, Instant::now() + timeout);
        drop(chan);
        r.map_err(|e| self.map_chan_err(e, &format!("running {:?}", first_line(script)), timeout))
    }

    /// Run a script that must succeed; its stdout.
    pub fn run_ok(&self, script: &str) -> Result<String> {
        let out = self.run(script)?;
        if out.rc != 0 {
            return Err(Error::CommandFailed {
                host: self.name().to_owned(),
                script: script.to_owned(),
                rc: out.rc,
                stdout: out.stdout,
                stderr: out.stderr,
            });
        }
        Ok(out.stdout)
    }

    /// Control channel round trip.
    pub fn ping(&self) -> Result<Duration> {
        let t = Instant::now();
        let mut chan = lock(&self.chan);
        let Some(c) = chan.as_mut() else {
            return Err(Error::HostDown {
                host: self.name().to_owned(),
                what: "ping".into(),
                console: String::new(),
            });
        };
        let r = c.ping(Instant::now() + self.spec.step_timeout);
        drop(chan);
        r.map_err(|e| self.map_chan_err(e, "ping", self.spec.step_timeout))?;
        Ok(t.elapsed())
    }

    /// Fault: pull the plug. SIGKILLs QEMU: no sync, no logout, the iSCSI sessions just
    /// drop. The host cannot be used afterwards.
    pub fn power_off(&self) {
        *lock(&self.chan) = None;
        lock(&self.qemu).kill();
    }

    /// Orderly shutdown: the guest syncs and powers off; QEMU is killed if it has not
    /// exited 30 s later.
    pub fn shutdown(&self) -> Result<()> {
        let mut chan = lock(&self.chan);
        if let Some(c) = chan.as_mut() {
            let _ = c.halt(Instant::now() + Duration::from_secs(10));
        }
        *chan = None;
        drop(chan);
        let mut q = lock(&self.qemu);
        if q.wait_timeout(Duration::from_secs(30)).is_none() {
            q.kill();
            return Err(Error::Timeout {
                host: self.name().to_owned(),
                what: "powering off".into(),
                timeout: Duration::from_secs(30),
                console: console_tail(&self.console, &self.qemu_log),
            });
        }
        Ok(())
    }

    fn unexpected(&self, message: String) -> Error {
        Error::Unexpected {
            host: self.name().to_owned(),
            message,
        }
    }

    /// Kernel name (e.g. `sdb`) of the SCSI disk for `lun` via `path` (0-based).
    pub fn lun_disk(&self, lun: u32, path: u32) -> Result<String> {
        let k = self
            .spec
            .san
            .iter()
            .position(|d| d.lun == lun && d.path == path)
            .ok_or_else(|| {
                Error::Config(format!("{} has no path {path} to LUN {lun}", self.name()))
            })?;
        let out = self.run_ok(&format!("ls /sys/bus/scsi/devices/*:0:{k}:0/block/"))?;
        let name = out.trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(self.unexpected(format!(
                "no single block device at SCSI target {k}: {out:?}"
            )));
        }
        Ok(name.to_owned())
    }

    /// Contents of `/sys/block/<disk>/device/wwid`, trimmed.
    pub fn wwid(&self, disk: &str) -> Result<String> {
        Ok(self
            .run_ok(&format!("cat /sys/block/{disk}/device/wwid"))?
            .trim()
            .to_owned())
    }

    /// `/lib/udev/scsi_id --whitelisted --replace-whitespace` of `/dev/<disk>`, the name
    /// multipath and udev use (e.g. `36000…`).
    pub fn scsi_id(&self, disk: &str) -> Result<String> {
        Ok(self
            .run_ok(&format!(
                "/usr/lib/udev/scsi_id --whitelisted --replace-whitespace --device=/dev/{disk}"
            ))?
            .trim()
            .to_owned())
    }

    /// Write a file in the guest.
    pub fn write_file(&self, path: &str, body: &[u8]) -> Result<()> {
        let q = shell_quote(path);
        self.run_ok(&format!(
            "mkdir -p \"$(dirname {q})\" && base64 -d > {q} <<'EOF'\n{}\nEOF",
            crate::base64::encode(body)
        ))?;
        Ok(())
    }

    /// Create a PV on `/dev/<disk>`, a VG and one LV of `size_mib`; with udev the call
    /// returns after the udev events are processed.
    pub fn create_lv(
        &self,
        disk: &str,
        vg: &str,
        lv: &str,
        size_mib: u64,
    ) -> Result<LogicalVolume> {
        let settle = if self.spec.udev {
            "udevadm settle --timeout=30"
        } else {
            "true"
        };
        let out = self.run_ok(&format!(
            "set -e\n\
             pvcreate -ff -y /dev/{disk} >&2\n\
             vgcreate {vg} /dev/{disk} >&2\n\
             lvcreate -y -n {lv} -L {size_mib}M {vg} >&2\n\
             {settle}\n\
             lvs --noheadings -o lv_uuid {vg}/{lv}\n\
             basename \"$(readlink -f /dev/{vg}/{lv})\""
        ))?;
        let mut lines = out.lines().map(str::trim).filter(|l| !l.is_empty());
        let (Some(uuid), Some(dm)) = (lines.next(), lines.next()) else {
            return Err(self.unexpected(format!("lvcreate gave no uuid/dm: {out:?}")));
        };
        if !dm.starts_with("dm-") {
            return Err(
                self.unexpected(format!("/dev/{vg}/{lv} resolves to {dm}, not a dm device"))
            );
        }
        Ok(LogicalVolume {
            vg: vg.to_owned(),
            lv: lv.to_owned(),
            path: format!("/dev/{vg}/{lv}"),
            uuid: uuid.to_owned(),
            dm: dm.to_owned(),
        })
    }

    /// Build dm-multipath maps for the given WWIDs (in `scsi_id` form, e.g. `36000…`)
    /// with `multipath`, no multipathd. Every other device is blacklisted, so single-path
    /// LUNs stay plain disks. With udev, the paths are re-triggered so their udev data
    /// marks them as multipath members, as on a real system.
    pub fn multipath_create(&self, wwids: &[&str]) -> Result<Vec<MultipathMap>> {
        let mut conf = String::from(
            "defaults {\n    user_friendly_names no\n    find_multipaths no\n    enable_foreign \"^$\"\n}\n\
             blacklist {\n    wwid \".*\"\n}\nblacklist_exceptions {\n",
        );
        for w in wwids {
            conf.push_str(&format!("    wwid \"^{w}$\"\n"));
        }
        conf.push_str("}\n");
        self.write_file("/etc/multipath.conf", conf.as_bytes())?;
        let settle = if self.spec.udev {
            "udevadm settle --timeout=30; udevadm trigger --action=change --subsystem-match=block; udevadm settle --timeout=30"
        } else {
            "true"
        };
        self.run_ok(&format!("multipath -v2 >&2\n{settle}"))?;
        let mut maps = Vec::new();
        for w in wwids {
            let out = self.run_ok(&format!(
                "for d in /sys/block/dm-*; do\n\
                   [ \"$(cat $d/dm/uuid 2>/dev/null)\" = mpath-{w} ] || continue\n\
                   echo \"$(basename $d) $(cat $d/dm/name) $(ls $d/slaves | tr '\\n' ' ')\"\n\
                 done"
            ))?;
            let mut f = out.split_whitespace();
            let (Some(dm), Some(name)) = (f.next(), f.next()) else {
                return Err(self.unexpected(format!(
                    "no multipath map for {w}; multipath -ll:\n{}",
                    self.run("multipath -ll 2>&1")
                        .map(|o| o.combined())
                        .unwrap_or_default()
                )));
            };
            maps.push(MultipathMap {
                name: name.to_owned(),
                dm: dm.to_owned(),
                slaves: f.map(str::to_owned).collect(),
            });
        }
        Ok(maps)
    }
}

impl Host {
    /// The QMP socket of this guest's QEMU.
    pub fn qmp_socket(&self) -> &Path {
        &self.qmp
    }

    /// Run a QMP command on this guest's QEMU (`arguments` may be `Value::Null`).
    pub fn qmp(&self, command: &str, arguments: serde_json::Value) -> Result<serde_json::Value> {
        qmp::execute(&self.qmp, command, arguments, Duration::from_secs(30)).map_err(|source| {
            Error::Qmp {
                host: self.name().to_owned(),
                command: command.to_owned(),
                source,
            }
        })
    }

    /// The guest's address on the rig network (`10.77.0.N`), if it has a NIC on the hub.
    pub fn address(&self) -> Option<&str> {
        match &self.spec.nic {
            Some(Nic::Hub { ip, .. }) => ip.split('/').next(),
            _ => None,
        }
    }

    /// Fault: unplug (`false`) or replug (`true`) the guest's network cable: QMP
    /// `set_link net0`. The guest sees the carrier go; frames in both directions are
    /// dropped by QEMU while the link is down.
    pub fn set_link(&self, up: bool) -> Result<()> {
        if self.spec.nic.is_none() {
            return Err(Error::Config(format!(
                "{} has no network card",
                self.name()
            )));
        }
        self.qmp("set_link", json!({"name": "net0", "up": up}))?;
        Ok(())
    }

    fn san_index(&self, lun: u32, path: u32) -> Result<(usize, &SanDrive)> {
        self.spec
            .san
            .iter()
            .enumerate()
            .find(|(_, d)| d.lun == lun && d.path == path)
            .ok_or_else(|| {
                Error::Config(format!("{} has no path {path} to LUN {lun}", self.name()))
            })
    }

    /// Wait (in the guest, up to 30 s) until SCSI device `0:0:k:0` is present or gone.
    fn wait_scsi(&self, k: usize, present: bool) -> Result<()> {
        let (test, what) = if present {
            (
                format!("ls /sys/bus/scsi/devices/0:0:{k}:0/block/ >/dev/null 2>&1"),
                "appear",
            )
        } else {
            (format!("[ ! -e /sys/bus/scsi/devices/0:0:{k}:0 ]"), "go")
        };
        let settle = if self.spec.udev {
            "udevadm settle --timeout=30"
        } else {
            "mdev -s"
        };
        self.run_ok(&format!(
            "i=0; until {test}; do\n\
               [ $i -ge 300 ] && {{ echo 'SCSI device 0:0:{k}:0 did not {what} within 30 s' >&2; exit 1; }}\n\
               usleep 100000; i=$((i + 1))\n\
             done\n{settle}"
        ))?;
        Ok(())
    }

    /// Fault: remove SAN path `path` to `lun` as if its cable were pulled: the
    /// `scsi-block` device is hot-unplugged through QMP (`device_del`), so the guest
    /// loses the SCSI device, and QEMU closes that path's iSCSI session. Returns when the
    /// guest no longer sees the device and QEMU has released the drive.
    pub fn drop_path(&self, lun: u32, path: u32) -> Result<()> {
        let (k, _) = self.san_index(lun, path)?;
        self.qmp("device_del", json!({"id": format!("sanpath{k}")}))?;
        self.wait_scsi(k, false)?;
        let drive = format!("san{k}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let blocks = self.qmp("query-block", serde_json::Value::Null)?;
            let present = blocks.as_array().is_some_and(|a| {
                a.iter()
                    .any(|b| b.get("device").and_then(|d| d.as_str()) == Some(drive.as_str()))
            });
            if !present {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(self.unexpected(format!(
                    "QEMU still has drive {drive} 30 s after its device was unplugged"
                )));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Undo [`Host::drop_path`]: a new iSCSI session (`drive_add`) and a hot-plugged
    /// `scsi-block` device at the same SCSI address. Returns when the guest sees the disk
    /// (its kernel name may differ from before; see [`Host::lun_disk`]).
    pub fn restore_path(&self, lun: u32, path: u32) -> Result<()> {
        let (k, drive) = self.san_index(lun, path)?;
        let out = self.qmp(
            "human-monitor-command",
            json!({"command-line": format!("drive_add 0 {}", san_drive_opts(k, drive))}),
        )?;
        let text = out.as_str().unwrap_or_default();
        // QEMU may print a warning first: on a reserved LUN its iSCSI client reports
        // "Failed MODE_SENSE(6), LUN assumed writable" before the OK line.
        if !text.lines().any(|l| l.trim() == "OK") {
            return Err(self.unexpected(format!("drive_add san{k}: {text:?}")));
        }
        self.qmp(
            "device_add",
            json!({
                "driver": "scsi-block",
                "drive": format!("san{k}"),
                "bus": "scsi0.0",
                "channel": 0,
                "scsi-id": k,
                "lun": 0,
                "id": format!("sanpath{k}"),
            }),
        )?;
        self.wait_scsi(k, true)
    }
}

fn first_line(script: &str) -> String {
    let line = script.lines().next().unwrap_or_default();
    let mut s: String = line.chars().take(80).collect();
    if line.len() > s.len() || script.lines().nth(1).is_some() {
        s.push('…');
    }
    s
}

impl Drop for Host {
    fn drop(&mut self) {
        lock(&self.qemu).kill();
        let _ = fs::remove_file(&self.sock);
        let _ = fs::remove_file(&self.qmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> HostSpec {
        HostSpec {
            name: "host0".into(),
            initiator: "iqn.x:host0".into(),
            memory_mib: 384,
            udev: true,
            san: vec![
                SanDrive {
                    lun: 1,
                    path: 0,
                    url: "iscsi://127.0.0.1:9/iqn.t/1".into(),
                },
                SanDrive {
                    lun: 1,
                    path: 1,
                    url: "iscsi://127.0.0.1:9/iqn.t/1".into(),
                },
            ],
            nvme: vec![LocalDisk {
                serial: Some("DLNVME01".into()),
                size_mib: 8,
            }],
            virtio: vec![LocalDisk {
                serial: None,
                size_mib: 8,
            }],
            module_groups: vec![],
            nic: None,
            boot_timeout: Duration::from_secs(1),
            step_timeout: Duration::from_secs(1),
        }
    }

    #[test]
    fn qemu_command_line_has_every_device() {
        let s = spec();
        assert_eq!(s.wait_spec(), "sd:2,nvme:1,vd:1");
        let a = s.qemu_args(
            Path::new("/r"),
            Path::new("/i/vmlinux"),
            Path::new("/r/initrd"),
        );
        let joined = a.join(" ");
        for want in [
            "-accel tcg",
            "-kernel /i/vmlinux -initrd /r/initrd",
            "dl.name=host0 dl.wait=sd:2,nvme:1,vd:1 dl.udev=1",
            "-iscsi initiator-name=iqn.x:host0",
            "file=iscsi://127.0.0.1:9/iqn.t/1,if=none,id=san1,format=raw,cache=none",
            "scsi-block,drive=san1,bus=scsi0.0,channel=0,scsi-id=1,lun=0",
            "nvme,drive=nvme0,serial=DLNVME01",
            "file=/r/host0-vd0.img,if=none,id=vd0,format=raw -device virtio-blk-pci,drive=vd0",
            "socket,id=ctl,path=/r/host0.ctl",
            "-serial file:/r/host0.console.log",
        ] {
            assert!(joined.contains(want), "missing {want:?} in {joined}");
        }
        assert!(
            joined.ends_with("virtio-blk-pci,drive=vd0"),
            "virtio disk without serial: {joined}"
        );
    }

    #[test]
    fn qemu_command_line_networks() {
        let mut s = spec();
        let joined = s
            .qemu_args(Path::new("/r"), Path::new("/k"), Path::new("/i"))
            .join(" ");
        assert!(joined.contains("-nic none"), "{joined}");
        assert!(joined.contains("-qmp unix:/r/host0.qmp,server=on,wait=off"));
        assert!(joined.contains("lun=0,id=sanpath1"), "{joined}");
        s.nic = Some(Nic::Hub {
            port: Port {
                hub: PathBuf::from("/r/net-hub1.sock"),
                guest: PathBuf::from("/r/host0.net.sock"),
            },
            mac: "52:54:00:77:00:10".into(),
            ip: "10.77.0.10/24".into(),
        });
        let joined = s
            .qemu_args(Path::new("/r"), Path::new("/k"), Path::new("/i"))
            .join(" ");
        assert!(!joined.contains("-nic none"), "{joined}");
        for want in [
            "dl.ip=10.77.0.10/24",
            "-netdev dgram,id=net0,local.type=unix,local.path=/r/host0.net.sock,remote.type=unix,remote.path=/r/net-hub1.sock",
            "virtio-net-pci,netdev=net0,id=nic0,mac=52:54:00:77:00:10,romfile=",
        ] {
            assert!(joined.contains(want), "missing {want:?} in {joined}");
        }
        s.nic = Some(Nic::User {
            forwards: vec![(4321, 3260)],
        });
        let joined = s
            .qemu_args(Path::new("/r"), Path::new("/k"), Path::new("/i"))
            .join(" ");
        for want in [
            "dl.ip=10.0.2.15/24",
            "user,id=net0,net=10.0.2.0/24,restrict=on,hostfwd=tcp:127.0.0.1:4321-10.0.2.15:3260",
        ] {
            assert!(joined.contains(want), "missing {want:?} in {joined}");
        }
    }

    #[test]
    fn quoting() {
        assert_eq!(shell_quote("a b"), "'a b'");
        assert_eq!(shell_quote("it's"), r"'it'\''s'");
        assert_eq!(first_line("echo hi\necho there"), "echo hi…");
        assert_eq!(first_line("true"), "true");
    }
}
