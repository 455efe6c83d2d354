//! The SAN: a private tgtd on 127.0.0.1 exporting file-backed LUNs with fixed identities.

use std::fs;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::error::{Error, IoContext, Result};
use crate::process::{Guarded, Registry, run_tool, tail};

/// SCSI vendor of every LUN (INQUIRY, 8 characters at most).
pub const LUN_VENDOR: &str = "VMHARN";
/// SCSI product of every LUN.
pub const LUN_PRODUCT: &str = "SANLUN";
/// SCSI product revision of every LUN.
pub const LUN_REVISION: &str = "0001";

const TGTD_SOCKET_DIR: &str = "/var/run/tgtd";
const READY_TIMEOUT: Duration = Duration::from_secs(15);

/// One exported logical unit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lun {
    /// LUN number on the target (1-based; LUN 0 is tgt's controller).
    pub number: u32,
    /// Unit serial number (VPD page 0x80), e.g. `DLSAN0001`.
    pub serial: String,
    /// tgt's `scsi_id` string (the T10 vendor designator in VPD page 0x83).
    pub scsi_id: String,
    /// Backing file on the host.
    pub file: PathBuf,
    /// Size in MiB.
    pub size_mib: u64,
}

impl Lun {
    pub(crate) fn new(number: u32, dir: &Path, size_mib: u64) -> Self {
        Self {
            number,
            serial: format!("DLSAN{number:04}"),
            scsi_id: format!("disklock-lun-{number:04}"),
            file: dir.join(format!("lun{number}.img")),
            size_mib,
        }
    }
}

#[derive(Debug)]
struct Daemon {
    proc: Guarded,
    started: Instant,
}

/// A running tgtd with one iSCSI target (tid 1) carrying the rig's LUNs.
///
/// The daemon is SIGKILLed and its socket files removed when the `Target` is dropped.
#[derive(Debug)]
pub struct Target {
    iqn: String,
    port: u16,
    control: u16,
    luns: Vec<Lun>,
    log: PathBuf,
    registry: Registry,
    daemon: Mutex<Option<Daemon>>,
}

/// Pick a TCP port on 127.0.0.1 that is free now. (tgtd binds it a moment later; a
/// clash makes the start fail loudly.)
pub(crate) fn free_port() -> Result<u16> {
    let l =
        TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).io_context(|| "binding a probe port".into())?;
    Ok(l.local_addr()
        .io_context(|| "probe port address".into())?
        .port())
}

/// tgtd's control port only names its management socket, `/var/run/tgtd/socket.<N>`,
/// and tgtd accepts N up to 32767. Derive one from the portal port and skip names in use.
fn free_control_port(portal: u16) -> Result<u16> {
    const LOW: u32 = 1024;
    const SPAN: u32 = 32767 - LOW;
    for i in 0..SPAN {
        let n = LOW + (u32::from(portal) + i) % SPAN;
        let Ok(cp) = u16::try_from(n) else { continue };
        if !Path::new(&format!("{TGTD_SOCKET_DIR}/socket.{cp}")).exists()
            && !Path::new(&format!("{TGTD_SOCKET_DIR}/socket.{cp}.lock")).exists()
        {
            return Ok(cp);
        }
    }
    Err(Error::Config("no free tgtd control port".into()))
}

impl Target {
    /// Create the LUN files (sparse) and start tgtd.
    pub(crate) fn start(
        dir: &Path,
        registry: Registry,
        iqn: String,
        luns: Vec<Lun>,
    ) -> Result<Self> {
        for lun in &luns {
            let f = fs::File::create(&lun.file)
                .io_context(|| format!("creating {}", lun.file.display()))?;
            f.set_len(lun.size_mib << 20)
                .io_context(|| format!("sizing {}", lun.file.display()))?;
        }
        fs::create_dir_all(TGTD_SOCKET_DIR).io_context(|| format!("creating {TGTD_SOCKET_DIR}"))?;
        let port = free_port()?;
        let control = free_control_port(port)?;
        let target = Self {
            iqn,
            port,
            control,
            luns,
            log: dir.join("tgtd.log"),
            registry,
            daemon: Mutex::new(None),
        };
        for p in target.socket_files() {
            target.registry.record_file(&p);
        }
        target.launch()?;
        Ok(target)
    }

    fn socket_files(&self) -> [PathBuf; 2] {
        [
            PathBuf::from(format!("{TGTD_SOCKET_DIR}/socket.{}", self.control)),
            PathBuf::from(format!("{TGTD_SOCKET_DIR}/socket.{}.lock", self.control)),
        ]
    }

    fn tgtadm(&self, args: &[&str]) -> Result<String> {
        let cp = self.control.to_string();
        let mut full = vec!["-C", cp.as_str(), "--lld", "iscsi"];
        full.extend_from_slice(args);
        run_tool("tgtadm", &full)
    }

    fn fail(&self, message: impl Into<String>) -> Error {
        Error::Target {
            message: message.into(),
            log_tail: tail(&self.log, 30),
        }
    }

    fn launch(&self) -> Result<()> {
        let started = Instant::now();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .io_context(|| format!("opening {}", self.log.display()))?;
        let log2 = log.try_clone().io_context(|| "duplicating log fd".into())?;
        let mut cmd = Command::new("tgtd");
        cmd.args([
            "-f",
            "-C",
            &self.control.to_string(),
            "--iscsi",
            &format!("portal=127.0.0.1:{}", self.port),
        ])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log2);
        let mut proc = Guarded::spawn(&mut cmd)?;
        self.registry.record_pid(proc.pid());
        // readiness: the management socket answers
        let deadline = started + READY_TIMEOUT;
        loop {
            if let Some(status) = proc.try_wait() {
                return Err(self.fail(format!("tgtd exited during start-up ({status})")));
            }
            if self.tgtadm(&["--mode", "sys", "--op", "show"]).is_ok() {
                break;
            }
            if Instant::now() > deadline {
                return Err(self.fail("management socket did not answer"));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let configure = || -> Result<()> {
            self.tgtadm(&[
                "--mode",
                "target",
                "--op",
                "new",
                "--tid",
                "1",
                "--targetname",
                &self.iqn,
            ])?;
            for lun in &self.luns {
                let n = lun.number.to_string();
                let store = lun.file.to_string_lossy();
                self.tgtadm(&[
                    "--mode",
                    "logicalunit",
                    "--op",
                    "new",
                    "--tid",
                    "1",
                    "--lun",
                    &n,
                    "--backing-store",
                    &store,
                ])?;
                let params = format!(
                    "vendor_id={LUN_VENDOR},product_id={LUN_PRODUCT},product_rev={LUN_REVISION},scsi_sn={},scsi_id={}",
                    lun.serial, lun.scsi_id
                );
                self.tgtadm(&[
                    "--mode",
                    "logicalunit",
                    "--op",
                    "update",
                    "--tid",
                    "1",
                    "--lun",
                    &n,
                    "--params",
                    &params,
                ])?;
            }
            self.tgtadm(&[
                "--mode",
                "target",
                "--op",
                "bind",
                "--tid",
                "1",
                "--initiator-address",
                "127.0.0.1",
            ])?;
            Ok(())
        };
        configure().map_err(|e| self.fail(format!("configuration failed: {e}")))?;
        // the portal accepts connections
        let addr = self.portal();
        loop {
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                break;
            }
            if proc.try_wait().is_some() || Instant::now() > deadline {
                return Err(self.fail(format!("portal {addr} does not accept connections")));
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        *self.daemon.lock().unwrap_or_else(|p| p.into_inner()) = Some(Daemon { proc, started });
        Ok(())
    }

    fn kill_daemon(&self) {
        if let Some(mut d) = self.daemon.lock().unwrap_or_else(|p| p.into_inner()).take() {
            d.proc.kill();
        }
        for p in self.socket_files() {
            let _ = fs::remove_file(p);
        }
    }

    /// The iSCSI portal, `127.0.0.1:<port>`.
    pub fn portal(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.port))
    }

    /// The tgtd control port (`tgtadm -C`).
    pub fn control_port(&self) -> u16 {
        self.control
    }

    /// The target's IQN.
    pub fn iqn(&self) -> &str {
        &self.iqn
    }

    /// The exported LUNs.
    pub fn luns(&self) -> &[Lun] {
        &self.luns
    }

    /// `iscsi://` URL of a LUN, as QEMU's iSCSI client takes it.
    pub fn url(&self, lun: u32) -> String {
        format!("iscsi://127.0.0.1:{}/{}/{lun}", self.port, self.iqn)
    }

    /// PID of the running tgtd, if any.
    pub fn pid(&self) -> Option<u32> {
        self.daemon
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            .and_then(|d| d.proc.try_wait().is_none().then(|| d.proc.pid()))
    }

    /// `tgtadm --mode target --op show` output (I_T nexuses, LUNs).
    pub fn show(&self) -> Result<String> {
        self.tgtadm(&["--mode", "target", "--op", "show"])
    }

    /// The tail of tgtd's log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// Fault: SIGKILL tgtd and start a fresh one on the same portal with the same LUNs
    /// and identities. LUN data survives; tgt keeps persistent reservations in memory only,
    /// so every registration and reservation is gone. Initiators reconnect on their own.
    pub fn restart(&self) -> Result<Duration> {
        let t = Instant::now();
        self.kill_daemon();
        self.launch()?;
        Ok(t.elapsed())
    }

    /// How long the current tgtd has been running.
    pub fn uptime(&self) -> Option<Duration> {
        self.daemon
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|d| d.started.elapsed())
    }

    /// Stop tgtd now (SIGKILL) and remove its socket files.
    pub fn stop(&self) {
        self.kill_daemon();
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.kill_daemon();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lun_identity_is_fixed_and_distinct() {
        let a = Lun::new(1, Path::new("/x"), 64);
        let b = Lun::new(2, Path::new("/x"), 64);
        assert_eq!(a.serial, "DLSAN0001");
        assert_eq!(a.scsi_id, "disklock-lun-0001");
        assert_eq!(a.file, Path::new("/x/lun1.img"));
        assert_ne!(a.serial, b.serial);
        assert_ne!(a.scsi_id, b.scsi_id);
        assert!(LUN_VENDOR.len() <= 8 && LUN_PRODUCT.len() <= 16);
    }

    #[test]
    fn free_port_is_bindable() {
        let p = free_port().unwrap();
        assert!(p > 0);
        TcpListener::bind((Ipv4Addr::LOCALHOST, p)).expect("port should be free");
        let cp = free_control_port(60999).unwrap();
        assert!((1024..=32767).contains(&cp), "{cp}");
    }
}
