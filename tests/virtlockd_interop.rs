//! disklock and a real virtlockd exclude each other on one lockspace directory.
//!
//! libvirtd and virtlockd (Debian's packages, `lock_manager = "lockd"`) run in a private
//! mount namespace set up by `scripts/virtlockd-env.sh`, with `file_lockspace_dir` set to the
//! directory disklock uses; a tiny TCG domain has one raw disk. The domain XML gives the disk
//! by its canonical absolute path, so virtlockd's lease name (SHA-256 of the path as written
//! in the XML) equals disklock's (SHA-256 of the canonical path).
//!
//! Needs root (packages, namespaces); fails loudly otherwise. Leaves no process behind, also
//! when an assertion fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_disklock");
const ENV_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/virtlockd-env.sh");

/// The libvirt namespace; stopped on drop, even when the test panics.
struct Libvirt {
    state: PathBuf,
}

impl Libvirt {
    fn start(state: &Path, lockspace: &Path) -> Libvirt {
        let lv = Libvirt {
            state: state.to_path_buf(),
        };
        script(&[
            "start",
            state.to_str().unwrap(),
            lockspace.to_str().unwrap(),
        ]);
        lv
    }

    fn virsh(&self, args: &[&str]) -> Output {
        let mut a = vec!["virsh", self.state.to_str().unwrap()];
        a.extend_from_slice(args);
        Command::new(ENV_SCRIPT).args(&a).output().unwrap()
    }
}

impl Drop for Libvirt {
    fn drop(&mut self) {
        let o = Command::new(ENV_SCRIPT)
            .args(["stop", self.state.to_str().unwrap()])
            .output();
        if let Ok(o) = o
            && !o.status.success()
        {
            eprintln!("virtlockd-env stop: {}", String::from_utf8_lossy(&o.stderr));
        }
    }
}

fn script(args: &[&str]) {
    let o = Command::new(ENV_SCRIPT).args(args).output().unwrap();
    assert!(
        o.status.success(),
        "virtlockd-env.sh {args:?}: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn root_disklock_and_virtlockd_exclude_each_other() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "the virtlockd interop test installs libvirt and uses mount namespaces: run it as root"
    );
    script(&["install"]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let lockspace = dir.join("lockspace");
    let disk = dir.join("disk0.img");
    std::fs::File::create(&disk)
        .unwrap()
        .set_len(16 << 20)
        .unwrap();
    let conf = dir.join("disklock.conf");
    std::fs::write(
        &conf,
        format!(
            "file_lockspace_dir = \"{}\"\nlvm_lockspace_dir = \"{0}/lvm\"\nscsi_lockspace_dir = \"{0}/scsi\"\nlockd_conf = \"\"\n",
            lockspace.display()
        ),
    )
    .unwrap();
    let socket = dir.join("disklock.sock");
    let disklock = |args: &[&str]| {
        Command::new(BIN)
            .arg("--config")
            .arg(&conf)
            .arg("--socket")
            .arg(&socket)
            .args(args)
            .env_remove("DISKLOCK_CONFIG")
            .env_remove("DISKLOCK_SOCKET")
            .output()
            .unwrap()
    };
    let xml = dir.join("dom.xml");
    std::fs::write(
        &xml,
        format!(
            "<domain type='qemu'><name>disklock-interop</name><memory unit='MiB'>64</memory><vcpu>1</vcpu>\
             <os><type arch='x86_64' machine='pc'>hvm</type></os><devices>\
             <disk type='file' device='disk'><driver name='qemu' type='raw'/>\
             <source file='{}'/><target dev='vda' bus='virtio'/></disk>\
             <controller type='usb' model='none'/><memballoon model='none'/></devices></domain>",
            disk.display()
        ),
    )
    .unwrap();

    let lv = Libvirt::start(&dir.join("libvirt"), &lockspace);
    let o = lv.virsh(&["define", xml.to_str().unwrap()]);
    assert!(o.status.success(), "define: {}", text(&o));

    // 1. disklock holds the disk (through its daemon): libvirt cannot start the domain.
    let log = std::fs::File::create(dir.join("daemon.log")).unwrap();
    let _daemon = Killed(
        Command::new(BIN)
            .arg("--config")
            .arg(&conf)
            .arg("--socket")
            .arg(&socket)
            .arg("daemon")
            .stderr(log)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the daemon listens", || {
        std::os::unix::net::UnixStream::connect(&socket).is_ok()
    });
    let owner = Killed(Command::new("sleep").arg("1000").spawn().unwrap());
    let pid = owner.0.id().to_string();
    let o = disklock(&[
        "acquire",
        "--owner",
        "interop",
        "--pid",
        &pid,
        disk.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "acquire: {}", text(&o));
    let o = lv.virsh(&["start", "disklock-interop"]);
    assert!(
        !o.status.success(),
        "virsh start succeeded while disklock held the disk"
    );
    let t = text(&o);
    assert!(t.contains("resource busy"), "{t}");
    assert!(t.contains("is locked"), "{t}");
    let o = disklock(&["release", disk.to_str().unwrap()]);
    assert!(o.status.success(), "release: {}", text(&o));

    // 2. The domain runs: virtlockd holds the lease, disklock is refused and names it.
    let o = lv.virsh(&["start", "disklock-interop"]);
    assert!(o.status.success(), "virsh start: {}", text(&o));
    let o = disklock(&[
        "acquire",
        "--owner",
        "interop",
        "--pid",
        &pid,
        disk.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("busy: held exclusive by pid"), "{t}");
    assert!(t.contains("(virtlockd)"), "{t}");
    // The in-process path (`run` without a daemon) is refused the same way.
    let o = disklock(&[
        "run",
        "--no-daemon",
        "--disk",
        disk.to_str().unwrap(),
        "--",
        "true",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let o = disklock(&["inspect", "--json", disk.to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "exclusive", "{v}");
    assert_eq!(v["lock"]["process"], "virtlockd", "{v}");

    // 3. The domain stops: virtlockd removes its lease and disklock gets the disk.
    let o = lv.virsh(&["destroy", "disklock-interop"]);
    assert!(o.status.success(), "virsh destroy: {}", text(&o));
    let o = disklock(&[
        "acquire",
        "--owner",
        "interop",
        "--pid",
        &pid,
        disk.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "acquire after destroy: {}", text(&o));
    drop(lv);
}
