//! Libvirt "hosts" for the tests and the benchmark of the libvirt plugin: libvirtds in
//! private mount and UTS namespaces (`scripts/virtlockd-env.sh`), with the disklock plugin
//! and a disklock daemon of their own, or with one of libvirt's own lock managers (`lockd`
//! with a virtlockd, or `nop`): [`Host`]; and the files they share ([`Site`]). Every host is
//! stopped on drop, leaving no process behind.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

pub const BIN: &str = env!("CARGO_BIN_EXE_disklock");
pub const ROOT: &str = env!("CARGO_MANIFEST_DIR");
pub const ENV_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/virtlockd-env.sh");

/// The plugin cargo built next to the binary under test, checked to be newer than its
/// sources: a stale one would test old code.
pub fn plugin() -> PathBuf {
    let dir = Path::new(BIN).parent().unwrap();
    let mtime = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    let so = [
        dir.join("deps/libdisklock_libvirt.so"),
        dir.join("libdisklock_libvirt.so"),
    ]
    .into_iter()
    .filter_map(|p| Some((mtime(&p)?, p)))
    .max()
    .map(|(_, p)| p)
    .unwrap_or_else(|| {
        panic!(
            "no libdisklock_libvirt.so in {}: build it (cargo test --workspace, or cargo build -p disklock-libvirt)",
            dir.display()
        )
    });
    let built = mtime(&so).unwrap();
    let newest_source = std::fs::read_dir(Path::new(ROOT).join("libvirt-plugin/src"))
        .unwrap()
        .filter_map(|e| mtime(&e.unwrap().path()))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    assert!(
        built >= newest_source,
        "{} is older than libvirt-plugin/src: rebuild it (cargo test --workspace, or cargo build -p disklock-libvirt)",
        so.display()
    );
    so
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn script(args: &[&str]) -> Output {
    Command::new(ENV_SCRIPT).args(args).output().unwrap()
}

pub fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The files every host shares: the plugin directory, the daemons' configuration (one
/// lockspace), the disk images, the lock-free QEMU wrapper.
pub struct Site {
    /// The directory of everything: a temporary one, removed on drop.
    pub dir: PathBuf,
    _tmp: tempfile::TempDir,
    pub lockspace: PathBuf,
    pub plugins: PathBuf,
    pub conf: PathBuf,
    pub nolock_qemu: PathBuf,
}

impl Site {
    pub fn new() -> Site {
        let tmp = tempfile::tempdir().unwrap();
        let dir = &std::fs::canonicalize(tmp.path()).unwrap();
        assert!(
            nix::unistd::geteuid().is_root(),
            "the libvirt plugin tests install libvirt and use namespaces: run them as root"
        );
        let o = script(&["install"]);
        assert!(o.status.success(), "install: {}", text(&o));
        let plugins = dir.join("plugins");
        std::fs::create_dir_all(&plugins).unwrap();
        std::fs::copy(plugin(), plugins.join("disklock.so")).unwrap();
        let lockspace = dir.join("lockspace");
        let conf = dir.join("disklock.conf");
        std::fs::write(
            &conf,
            format!(
                "file_lockspace_dir = \"{}\"\nlvm_lockspace_dir = \"{0}/lvm\"\nscsi_lockspace_dir = \"{0}/scsi\"\nlockd_conf = \"\"\nlease_check_interval = 1\n",
                lockspace.display()
            ),
        )
        .unwrap();
        let nolock_qemu = dir.join("qemu-nolock");
        std::fs::write(
            &nolock_qemu,
            "#!/bin/bash\n# QEMU with its image locking off on every file node.\nargs=()\n\
             for a in \"$@\"; do args+=(\"${a//'\"driver\":\"file\"'/'\"driver\":\"file\",\"locking\":\"off\"'}\"); done\n\
             exec /usr/bin/qemu-system-x86_64 \"${args[@]}\"\n",
        )
        .unwrap();
        std::fs::set_permissions(
            &nolock_qemu,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        Site {
            dir: dir.to_path_buf(),
            _tmp: tmp,
            lockspace,
            plugins,
            conf,
            nolock_qemu,
        }
    }

    pub fn disk(&self, name: &str, mib: u64) -> String {
        let p = self.dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        p.to_str().unwrap().to_owned()
    }
}

/// One libvirtd with the plugin, and (once started) its disklock daemon; stopped on drop.
pub struct Host {
    pub state: PathBuf,
    pub socket: PathBuf,
    pub conf: PathBuf,
    pub name: String,
    pub daemon: Option<Killed>,
}

impl Host {
    /// Starts libvirtd and its disklock daemon; `plugin_conf` is qemu-disklock.conf (the
    /// socket is added).
    pub fn start(site: &Site, name: &str, plugin_conf: &str) -> Host {
        let mut host = Host::start_without_daemon(site, name, plugin_conf);
        host.start_daemon();
        host
    }

    /// Starts libvirtd with the plugin but no disklock daemon ([`Host::start_daemon`]).
    pub fn start_without_daemon(site: &Site, name: &str, plugin_conf: &str) -> Host {
        let state = site.dir.join(name);
        std::fs::create_dir_all(state.join("etc")).unwrap();
        let socket = state.join("disklock.sock");
        std::fs::write(
            state.join("etc/qemu-disklock.conf"),
            format!("{plugin_conf}\nsocket = \"{}\"\n", socket.display()),
        )
        .unwrap();
        let host = Host {
            state,
            socket,
            conf: site.conf.clone(),
            name: name.to_owned(),
            daemon: None,
        };
        let o = script(&[
            "start-disklock",
            host.state.to_str().unwrap(),
            site.plugins.to_str().unwrap(),
            name,
        ]);
        assert!(o.status.success(), "start {name}: {}", text(&o));
        host
    }

    /// Starts libvirtd with one of libvirt's own lock managers: `lockd` (and a virtlockd
    /// whose lockspace is the disklock daemons') or `nop`. No disklock daemon.
    pub fn start_builtin(site: &Site, name: &str, manager: &str) -> Host {
        let state = site.dir.join(name);
        let host = Host {
            socket: state.join("disklock.sock"),
            state,
            conf: site.conf.clone(),
            name: name.to_owned(),
            daemon: None,
        };
        let state = host.state.to_str().unwrap();
        let lockspace = site.lockspace.to_str().unwrap();
        let o = match manager {
            "lockd" => script(&["start", state, lockspace]),
            "nop" => script(&["start-nop", state]),
            m => panic!("no lock manager {m}"),
        };
        assert!(o.status.success(), "start {name}: {}", text(&o));
        host
    }

    /// Starts this host's disklock daemon, in its namespaces (so its holder records name
    /// this host).
    pub fn start_daemon(&mut self) {
        let log = std::fs::File::create(self.state.join("daemon.log")).unwrap();
        let child = Command::new(ENV_SCRIPT)
            .arg("exec")
            .arg(&self.state)
            .arg(BIN)
            .arg("--config")
            .arg(&self.conf)
            .arg("--socket")
            .arg(&self.socket)
            .arg("daemon")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        self.daemon = Some(Killed(child));
        let socket = self.socket.clone();
        wait_until("the daemon listens", Duration::from_secs(10), || {
            std::os::unix::net::UnixStream::connect(&socket).is_ok()
        });
    }

    pub fn virsh(&self, args: &[&str]) -> Output {
        let mut a = vec!["virsh", self.state.to_str().unwrap()];
        a.extend_from_slice(args);
        script(&a)
    }

    pub fn virsh_ok(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(
            o.status.success(),
            "{}: virsh {args:?}: {}",
            self.name,
            text(&o)
        );
        text(&o)
    }

    pub fn virsh_err(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(
            !o.status.success(),
            "{}: virsh {args:?} succeeded",
            self.name
        );
        text(&o)
    }

    pub fn define(&self, xml: &str) {
        let f = self.state.join("domain.xml");
        std::fs::write(&f, xml).unwrap();
        self.virsh_ok(&["define", f.to_str().unwrap()]);
    }

    pub fn state_of(&self, dom: &str) -> String {
        self.virsh_ok(&["domstate", dom]).trim().to_owned()
    }

    pub fn disklock(&self, args: &[&str]) -> Output {
        Command::new(BIN)
            .arg("--config")
            .arg(&self.conf)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .env_remove("DISKLOCK_CONFIG")
            .env_remove("DISKLOCK_SOCKET")
            .output()
            .unwrap()
    }

    /// The daemon's leases.
    pub fn leases(&self) -> Vec<serde_json::Value> {
        let o = self.disklock(&["status", "--json"]);
        assert!(o.status.success(), "status: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The disks this host's daemon holds.
    pub fn held(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .leases()
            .iter()
            .map(|l| l["disk"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    }

    pub fn qemu_pid(&self, dom: &str) -> u32 {
        std::fs::read_to_string(self.state.join(format!("run/qemu/{dom}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        // Domains and libvirtd first; the daemon (a field) is killed after this.
        let o = script(&["stop", self.state.to_str().unwrap()]);
        if !o.status.success() {
            eprintln!("virtlockd-env stop: {}", text(&o));
        }
    }
}

/// A tiny TCG domain with ACPI (PCI hotplug) and a virtio-scsi controller (unplug completes
/// without a guest OS); `flags` go into its disk (`<shareable/>`, `<readonly/>`).
pub fn domain_xml(
    name: &str,
    uuid: &str,
    disk: &str,
    flags: &str,
    emulator: Option<&Path>,
) -> String {
    domain_xml_disks(name, uuid, &[disk], flags, emulator)
}

/// `xml` (from [`domain_xml`]) with `<on_lockfailure>action</on_lockfailure>`.
pub fn with_lockfailure(xml: &str, action: &str) -> String {
    xml.replacen(
        "<devices>",
        &format!("<on_lockfailure>{action}</on_lockfailure><devices>"),
        1,
    )
}

/// [`domain_xml`] with several virtio disks (at most 26: vda to vdz).
pub fn domain_xml_disks(
    name: &str,
    uuid: &str,
    disks: &[&str],
    flags: &str,
    emulator: Option<&Path>,
) -> String {
    let emulator = emulator
        .map(|e| format!("<emulator>{}</emulator>", e.display()))
        .unwrap_or_default();
    let disks: String = disks
        .iter()
        .zip('a'..='z')
        .map(|(disk, letter)| {
            format!(
                "<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
                 <source file='{disk}'/><target dev='vd{letter}' bus='virtio'/>{flags}</disk>"
            )
        })
        .collect();
    format!(
        "<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory>\
         <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>\
         <devices>{emulator}{disks}\
         <controller type='scsi' model='virtio-scsi'/><controller type='usb' model='none'/>\
         <memballoon model='none'/></devices></domain>"
    )
}
