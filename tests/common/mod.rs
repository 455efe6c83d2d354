//! Helpers of the integration tests that drive the real binary: temporary worlds (`Env`),
//! daemons on private sockets (`Daemon`), owner processes (`Sleeper`) and checks of
//! outputs. Each test crate uses some of them.

#![allow(dead_code)]

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

pub mod devices;
pub mod libvirt;

pub const BIN: &str = env!("CARGO_BIN_EXE_disklock");

/// A temporary world: a config naming lockspaces under it, and disk image files.
pub struct Env {
    pub dir: tempfile::TempDir,
}

impl Env {
    pub fn new() -> Env {
        Env::with_conf("")
    }

    /// A world whose configuration has `extra` lines. With `DISKLOCK_TEST_LEASE_IO=all` in
    /// the environment (the CI phase `test-lanes`) every lockspace's lease I/O runs on the
    /// daemon's lanes, so that the same tests cover that path too.
    pub fn with_conf(extra: &str) -> Env {
        let dir = tempfile::tempdir().unwrap();
        let ls = dir.path().join("ls");
        let lanes = match std::env::var("DISKLOCK_TEST_LEASE_IO") {
            Ok(v) => format!("lease_io_threads = \"{v}\"\n"),
            Err(_) => String::new(),
        };
        std::fs::write(
            dir.path().join("disklock.conf"),
            format!(
                "file_lockspace_dir = \"{0}/files\"\nlvm_lockspace_dir = \"{0}/lvm\"\nscsi_lockspace_dir = \"{0}/scsi\"\nlockd_conf = \"\"\n{lanes}{extra}",
                ls.display()
            ),
        )
        .unwrap();
        Env { dir }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn disk(&self, name: &str) -> String {
        let p = self.path(name);
        if !p.exists() {
            std::fs::write(&p, b"").unwrap();
        }
        p.to_str().unwrap().to_owned()
    }

    pub fn files_lockspace(&self) -> PathBuf {
        self.path("ls/files")
    }

    pub fn lease_files(&self) -> usize {
        std::fs::read_dir(self.files_lockspace()).map_or(0, |d| d.count())
    }

    /// `disklock` with this config and `socket` (which need not exist).
    pub fn cmd(&self, socket: &str) -> Command {
        let mut c = Command::new(BIN);
        c.arg("--config")
            .arg(self.path("disklock.conf"))
            .arg("--socket")
            .arg(self.path(socket))
            .env_remove("DISKLOCK_CONFIG")
            .env_remove("DISKLOCK_SOCKET")
            .env_remove("DISKLOCK_LOG");
        c
    }

    pub fn run(&self, socket: &str, args: &[&str]) -> Output {
        self.cmd(socket).args(args).output().unwrap()
    }

    /// [`Env::run`], which must finish within `limit`: a liveness bound, not a timing. A
    /// command still running then is killed and fails the test.
    pub fn run_within(&self, limit: Duration, socket: &str, args: &[&str]) -> Output {
        let mut c = self
            .cmd(socket)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while c.try_wait().unwrap().is_none() {
            if t.elapsed() > limit {
                let _ = c.kill();
                let o = c.wait_with_output().unwrap();
                panic!(
                    "disklock {args:?} did not finish within {limit:?}: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        c.wait_with_output().unwrap()
    }

    /// A root daemon on `socket` that uid 65534 may talk to: this world, its config and the
    /// socket opened to others (the daemon makes its socket 0600; an administrator may widen
    /// it). Fails loudly unless the test runs as root.
    pub fn daemon_open_to_others(&self, socket: &str) -> Daemon {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test runs a root daemon and clients as uid 65534 (setpriv): run it as root"
        );
        chmod(self.dir.path(), 0o755);
        chmod(&self.path("disklock.conf"), 0o644);
        let d = self.daemon(socket);
        chmod(&d.socket, 0o666);
        d
    }

    pub fn daemon(&self, socket: &str) -> Daemon {
        // The log goes to a file: a pipe nobody reads would fill up and stall the daemon.
        let log = self.path(&format!("{socket}.log"));
        let child = self
            .cmd(socket)
            .arg("daemon")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let socket = self.path(socket);
        let mut d = Daemon { child, socket, log };
        wait_until("the daemon listens", || {
            if let Ok(Some(status)) = d.child.try_wait() {
                let err = std::fs::read_to_string(&d.log).unwrap();
                panic!("daemon exited with {status}: {err}");
            }
            UnixStream::connect(&d.socket).is_ok()
        });
        d
    }
}

pub struct Daemon {
    pub child: Child,
    pub socket: PathBuf,
    pub log: PathBuf,
}

impl Daemon {
    pub fn kill9(&mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM and wait: the daemon releases everything and removes its socket.
    pub fn stop(&mut self) -> String {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        )
        .unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "daemon exit: {status}");
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// One raw Varlink exchange.
    pub fn call(&self, msg: &[u8]) -> Value {
        let mut s = UnixStream::connect(&self.socket).unwrap();
        s.write_all(msg).unwrap();
        read_reply(&mut s)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_reply(s: &mut UnixStream) -> Value {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    loop {
        let n = s.read(&mut byte).unwrap();
        assert_eq!(n, 1, "connection closed before a reply");
        if byte[0] == 0 {
            break;
        }
        buf.push(byte[0]);
    }
    serde_json::from_slice(&buf).unwrap()
}

pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A process to own leases; killed on drop.
pub struct Sleeper(pub Child);

impl Sleeper {
    pub fn new() -> Sleeper {
        Sleeper(Command::new("sleep").arg("1000").spawn().unwrap())
    }
    pub fn pid(&self) -> String {
        self.0.id().to_string()
    }
    pub fn kill9(&mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Sleeper {
    /// One of uid and gid 65534 (nobody), without supplementary groups.
    pub fn nobody() -> Sleeper {
        let s = Sleeper(
            Command::new("setpriv")
                .args([
                    "--reuid=65534",
                    "--regid=65534",
                    "--clear-groups",
                    "sleep",
                    "1000",
                ])
                .spawn()
                .unwrap(),
        );
        wait_until("the owner runs as uid 65534", || {
            std::fs::read_to_string(format!("/proc/{}/status", s.pid()))
                .is_ok_and(|st| st.lines().any(|l| l.starts_with("Uid:\t65534\t")))
        });
        s
    }
}

/// Sets the permission bits of `path`.
pub fn chmod(path: &std::path::Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt as _;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

impl Drop for Sleeper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn code(o: &Output) -> i32 {
    o.status.code().unwrap_or(-1)
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Fails with the whole stderr when it lacks `text`.
pub fn assert_stderr_has(o: &Output, text: &str) {
    let err = stderr(o);
    assert!(err.contains(text), "stderr lacks {text:?}: {err}");
}

pub fn ok(o: Output) -> Output {
    assert_eq!(code(&o), 0, "stderr: {}", stderr(&o));
    o
}

pub fn status_json(env: &Env, socket: &str) -> Vec<Value> {
    let o = ok(env.run(socket, &["status", "--json"]));
    serde_json::from_slice::<Value>(&o.stdout)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// `disklock` as uid/gid 65534 (nobody), through `setpriv`, with this config and socket.
pub fn as_nobody(env: &Env, socket: &str, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .arg("--config")
        .arg(env.path("disklock.conf"))
        .arg("--socket")
        .arg(env.path(socket))
        .args(args)
        .env_remove("DISKLOCK_CONFIG")
        .env_remove("DISKLOCK_SOCKET")
        .env_remove("DISKLOCK_LOG")
        .env_remove("XDG_CONFIG_HOME")
        .env("HOME", "/nonexistent")
        .output()
        .unwrap()
}

/// The lease file of image `disk`, as `lookup` names it.
pub fn lease_of(env: &Env, disk: &str) -> PathBuf {
    let o = ok(env.run("none.sock", &["lookup", "--json", disk]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    PathBuf::from(v[0]["lease"].as_str().unwrap())
}
