//! `lock_manager = "disklock"` with real libvirtds and QEMU TCG guests (issue 17's tests 1-8
//! and 10).
//!
//! Each "host" is a libvirtd (Debian's, loading the plugin built from `libvirt-plugin/`
//! through `LIBVIRT_LOCK_MANAGER_PLUGIN_DIR`) and its own disklock daemon, in private mount
//! and UTS namespaces with their own host name (`scripts/virtlockd-env.sh start-disklock`).
//! The hosts share one lockspace directory, as hosts share an NFS lockspace.
//!
//! The hosts share one kernel, so QEMU's own image locks would refuse a second host's
//! QEMU before disklock is asked; on two real hosts those locks do not reach each other (a
//! SAN disk). Host B's domains therefore run QEMU through a wrapper that turns QEMU's
//! image locking off, and only disklock keeps them off host A's disks.
//!
//! Needs root (packages, namespaces) and the plugin built in this target directory (`cargo
//! test --workspace` builds it); fails loudly otherwise. Leaves no process behind, also when
//! an assertion fails.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant, SystemTime};

const BIN: &str = env!("CARGO_BIN_EXE_disklock");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const ENV_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/virtlockd-env.sh");

/// The plugin cargo built next to the binary under test, checked to be newer than its
/// sources: a stale one would test old code.
fn plugin() -> PathBuf {
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

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn script(args: &[&str]) -> Output {
    Command::new(ENV_SCRIPT).args(args).output().unwrap()
}

fn wait_until(what: &str, within: Duration, mut f: impl FnMut() -> bool) -> Duration {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < within, "not within {within:?}: {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
    start.elapsed()
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The files every host shares: the plugin directory, the daemons' configuration (one
/// lockspace), the disk images, the lock-free QEMU wrapper.
struct Site {
    dir: PathBuf,
    plugins: PathBuf,
    conf: PathBuf,
    nolock_qemu: PathBuf,
}

impl Site {
    fn new(dir: &Path) -> Site {
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
                "file_lockspace_dir = \"{}\"\nlvm_lockspace_dir = \"{0}/lvm\"\nscsi_lockspace_dir = \"{0}/scsi\"\nlockd_conf = \"\"\n",
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
            plugins,
            conf,
            nolock_qemu,
        }
    }

    fn disk(&self, name: &str, mib: u64) -> String {
        let p = self.dir.join(name);
        std::fs::File::create(&p)
            .unwrap()
            .set_len(mib << 20)
            .unwrap();
        p.to_str().unwrap().to_owned()
    }
}

/// One libvirtd with the plugin, and (once started) its disklock daemon; stopped on drop.
struct Host {
    state: PathBuf,
    socket: PathBuf,
    conf: PathBuf,
    name: String,
    daemon: Option<Killed>,
}

impl Host {
    /// Starts libvirtd; `plugin_conf` is qemu-disklock.conf (the socket is added).
    fn start(site: &Site, name: &str, plugin_conf: &str) -> Host {
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

    /// Starts this host's disklock daemon, in its namespaces (so its holder records name
    /// this host).
    fn start_daemon(&mut self) {
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

    fn virsh(&self, args: &[&str]) -> Output {
        let mut a = vec!["virsh", self.state.to_str().unwrap()];
        a.extend_from_slice(args);
        script(&a)
    }

    fn virsh_ok(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(
            o.status.success(),
            "{}: virsh {args:?}: {}",
            self.name,
            text(&o)
        );
        text(&o)
    }

    fn virsh_err(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(
            !o.status.success(),
            "{}: virsh {args:?} succeeded",
            self.name
        );
        text(&o)
    }

    fn define(&self, xml: &str) {
        let f = self.state.join("domain.xml");
        std::fs::write(&f, xml).unwrap();
        self.virsh_ok(&["define", f.to_str().unwrap()]);
    }

    fn state_of(&self, dom: &str) -> String {
        self.virsh_ok(&["domstate", dom]).trim().to_owned()
    }

    fn disklock(&self, args: &[&str]) -> Output {
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
    fn leases(&self) -> Vec<serde_json::Value> {
        let o = self.disklock(&["status", "--json"]);
        assert!(o.status.success(), "status: {}", text(&o));
        serde_json::from_slice(&o.stdout).unwrap()
    }

    /// The disks this host's daemon holds.
    fn held(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .leases()
            .iter()
            .map(|l| l["disk"].as_str().unwrap().to_owned())
            .collect();
        v.sort();
        v
    }

    fn qemu_pid(&self, dom: &str) -> u32 {
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
fn domain_xml(name: &str, uuid: &str, disk: &str, flags: &str, emulator: Option<&Path>) -> String {
    let emulator = emulator
        .map(|e| format!("<emulator>{}</emulator>", e.display()))
        .unwrap_or_default();
    format!(
        "<domain type='qemu'><name>{name}</name><uuid>{uuid}</uuid><memory unit='MiB'>64</memory>\
         <vcpu>1</vcpu><os><type arch='x86_64' machine='pc'>hvm</type></os><features><acpi/></features>\
         <devices>{emulator}<disk type='file' device='disk'><driver name='qemu' type='raw'/>\
         <source file='{disk}'/><target dev='vda' bus='virtio'/>{flags}</disk>\
         <controller type='scsi' model='virtio-scsi'/><controller type='usb' model='none'/>\
         <memballoon model='none'/></devices></domain>"
    )
}

const UUID_A: &str = "0d15c10c-0000-4000-8000-00000000000a";
const UUID_B: &str = "0d15c10c-0000-4000-8000-00000000000b";
const UUID_C: &str = "0d15c10c-0000-4000-8000-00000000000c";
const UUID_D: &str = "0d15c10c-0000-4000-8000-00000000000d";
const UUID_E: &str = "0d15c10c-0000-4000-8000-00000000000e";

#[test]
fn root_libvirt_plugin_two_hosts() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let site = Site::new(&dir);
    let disk0 = site.disk("disk0.img", 16);
    let disk1 = site.disk("disk1.img", 8);
    let disk2 = site.disk("disk2.img", 8);

    let mut a = Host::start(&site, "dl-host-a", "");
    a.define(&domain_xml("web-a", UUID_A, &disk0, "", None));

    // Issue test 10: no daemon → one clear line, the domain stays off, libvirtd is fine.
    let t = a.virsh_err(&["start", "web-a"]);
    assert!(t.contains("no disklock daemon is running at"), "{t}");
    assert_eq!(a.state_of("web-a"), "shut off");
    a.virsh_ok(&["version"]);

    // Issue test 1: the daemon holds the lease for the QEMU pid, named after the domain.
    a.start_daemon();
    a.virsh_ok(&["start", "web-a"]);
    let leases = a.leases();
    assert_eq!(leases.len(), 1, "{leases:?}");
    let l = &leases[0];
    assert_eq!(l["disk"], disk0.as_str());
    assert_eq!(l["mode"], "exclusive");
    assert_eq!(l["owners"][0]["name"], "web-a");
    assert_eq!(l["owners"][0]["uuid"], UUID_A);
    assert_eq!(l["owners"][0]["pid"], a.qemu_pid("web-a"));
    assert_eq!(l["holder"]["host"], "dl-host-a");

    // Issue test 2: the other host is refused, naming the host and the domain.
    let mut b = Host::start(&site, "dl-host-b", "");
    b.start_daemon();
    b.define(&domain_xml(
        "web-b",
        UUID_B,
        &disk0,
        "",
        Some(&site.nolock_qemu),
    ));
    let t = b.virsh_err(&["start", "web-b"]);
    assert!(t.contains("resource busy"), "{t}");
    assert!(t.contains("web-a"), "{t}");
    assert!(t.contains("on host dl-host-a"), "{t}");
    assert_eq!(b.state_of("web-b"), "shut off");
    assert!(b.held().is_empty());

    // Issue test 3: suspend releases (libvirt releases twice), resume takes it again; a
    // resume after the other host took the disk fails cleanly and leaves the domain paused.
    a.virsh_ok(&["suspend", "web-a"]);
    assert!(a.held().is_empty());
    a.virsh_ok(&["resume", "web-a"]);
    assert_eq!(a.held(), [disk0.as_str()]);
    a.virsh_ok(&["suspend", "web-a"]);
    b.virsh_ok(&["start", "web-b"]);
    let t = a.virsh_err(&["resume", "web-a"]);
    assert!(t.contains("resource busy"), "{t}");
    assert!(
        t.contains("web-b") && t.contains("on host dl-host-b"),
        "{t}"
    );
    assert_eq!(a.state_of("web-a"), "paused");
    assert!(a.held().is_empty());
    b.virsh_ok(&["destroy", "web-b"]);
    wait_until("host b lets go", Duration::from_secs(1), || {
        b.held().is_empty()
    });
    a.virsh_ok(&["resume", "web-a"]);
    assert_eq!(a.held(), [disk0.as_str()]);

    // Issue test 4: hotplug of a disk another host holds is refused and the domain keeps
    // running; a free one is held; a failed second attach of it (QEMU's own image lock
    // refuses the second device) leaves it held; unplug releases it.
    let other = Killed(Command::new("sleep").arg("1000").spawn().unwrap());
    let pid = other.0.id().to_string();
    let o = b.disklock(&["acquire", "--owner", "other", "--pid", &pid, &disk2]);
    assert!(o.status.success(), "{}", text(&o));
    let t = a.virsh_err(&["attach-disk", "web-a", &disk2, "sda", "--targetbus", "scsi"]);
    assert!(
        t.contains("resource busy") && t.contains("dl-host-b"),
        "{t}"
    );
    assert_eq!(a.state_of("web-a"), "running");
    a.virsh_ok(&["attach-disk", "web-a", &disk1, "sdb", "--targetbus", "scsi"]);
    assert_eq!(a.held(), [disk0.as_str(), disk1.as_str()]);
    a.virsh_err(&["attach-disk", "web-a", &disk1, "sdc", "--targetbus", "scsi"]);
    assert_eq!(a.held(), [disk0.as_str(), disk1.as_str()]);
    a.virsh_ok(&["detach-disk", "web-a", "sdb"]);
    wait_until(
        "the unplugged disk is released",
        Duration::from_secs(10),
        || a.held() == [disk0.as_str()],
    );
    drop(other);

    // Issue test 5: a libvirtd restart (killed, no callback) keeps the lease; destroy and
    // kill -9 of QEMU free it within 1 s.
    let o = script(&["restart-libvirtd", a.state.to_str().unwrap()]);
    assert!(o.status.success(), "restart-libvirtd: {}", text(&o));
    assert_eq!(a.state_of("web-a"), "running");
    assert_eq!(a.held(), [disk0.as_str()]);
    a.virsh_ok(&["destroy", "web-a"]);
    let took = wait_until("destroy frees the lease", Duration::from_secs(1), || {
        a.held().is_empty()
    });
    eprintln!("destroy: lease free {took:?} after virsh returned");
    a.virsh_ok(&["start", "web-a"]);
    assert_eq!(a.held(), [disk0.as_str()]);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(a.qemu_pid("web-a")).unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let took = wait_until(
        "kill -9 of QEMU frees the lease",
        Duration::from_secs(1),
        || a.held().is_empty(),
    );
    eprintln!("kill -9: lease free {took:?} after the signal");
    // And the other host may have the disk now.
    b.virsh_ok(&["start", "web-b"]);
    b.virsh_ok(&["destroy", "web-b"]);
    wait_until("host b lets go", Duration::from_secs(1), || {
        b.held().is_empty()
    });

    // Issue test 6: <shareable/> on both hosts: both run, each holding a shared lease. A
    // <readonly/> disk beside an exclusive writer: the daemons' readonly_disk_leases (1,
    // the default) gives it a shared lease, which the writer's lease refuses.
    let disk3 = site.disk("disk3.img", 8);
    a.define(&domain_xml(
        "shared-a",
        UUID_C,
        &disk3,
        "<shareable/>",
        None,
    ));
    b.define(&domain_xml(
        "shared-b",
        UUID_D,
        &disk3,
        "<shareable/>",
        Some(&site.nolock_qemu),
    ));
    a.virsh_ok(&["start", "shared-a"]);
    b.virsh_ok(&["start", "shared-b"]);
    for h in [&a, &b] {
        let l = h.leases();
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0]["disk"], disk3.as_str());
        assert_eq!(l[0]["mode"], "shared");
    }
    a.virsh_ok(&["destroy", "shared-a"]);
    b.virsh_ok(&["destroy", "shared-b"]);
    a.virsh_ok(&["start", "web-a"]);
    b.define(&domain_xml(
        "reader-b",
        UUID_E,
        &disk0,
        "<readonly/>",
        Some(&site.nolock_qemu),
    ));
    let t = b.virsh_err(&["start", "reader-b"]);
    assert!(t.contains("resource busy") && t.contains("web-a"), "{t}");
    drop(b);
    drop(a);
}

#[test]
fn root_libvirt_plugin_bad_config() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let site = Site::new(&dir);
    let disk0 = site.disk("disk0.img", 16);
    // Issue test 10: a configuration with an error: every start says where it is, and
    // libvirtd keeps serving.
    let mut c = Host::start(&site, "dl-host-c", "auto_disk_leases = 2");
    c.start_daemon();
    c.define(&domain_xml("web-c", UUID_B, &disk0, "", None));
    let t = c.virsh_err(&["start", "web-c"]);
    assert!(
        t.contains("qemu-disklock.conf:1: auto_disk_leases: expected 0 or 1"),
        "{t}"
    );
    assert_eq!(c.state_of("web-c"), "shut off");
    c.virsh_ok(&["list", "--all"]);
    assert!(c.held().is_empty());
}

/// libvirt reads one data symbol, a 72-byte table; the plugin exports nothing else and
/// links no libvirt library (it finds virReportErrorHelper at run time).
#[test]
fn libvirt_plugin_exports_the_driver_table_and_links_no_libvirt() {
    let so = plugin();
    let o = Command::new("readelf")
        .args(["--dyn-syms", "--dynamic", "-W"])
        .arg(&so)
        .output()
        .expect("readelf (binutils)");
    assert!(o.status.success(), "{}", text(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    let defined: Vec<Vec<&str>> = out
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() >= 8 && f[0].ends_with(':') && f[6] != "UND" && f[6] != "Ndx")
        .collect();
    assert_eq!(defined.len(), 1, "{out}");
    assert_eq!(
        defined[0][2..],
        [
            "72",
            "OBJECT",
            "GLOBAL",
            "DEFAULT",
            defined[0][6],
            "virLockDriverImpl"
        ],
        "{out}"
    );
    let needed: Vec<&str> = out
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next())
        .collect();
    for lib in &needed {
        assert!(
            [
                "libc.so.6",
                "libgcc_s.so.1",
                "ld-linux-x86-64.so.2",
                "libm.so.6"
            ]
            .contains(lib),
            "unexpected NEEDED {lib}: {needed:?}"
        );
    }
}

/// Issue test 7, a mixed fleet: one libvirtd on `lockd` (a real virtlockd), the other on
/// `disklock`, one lockspace: each refuses the other's disk.
#[test]
fn root_libvirt_plugin_beside_lockd() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let site = Site::new(&dir);
    let disk0 = site.disk("disk0.img", 16);
    let mut a = Host::start(&site, "dl-host-a", "");
    a.start_daemon();
    a.define(&domain_xml("web-a", UUID_A, &disk0, "", None));
    // The lockd host: the same lockspace directory as the disklock daemons'.
    let lockd = LockdHost::start(&dir.join("lockd-host"), &dir.join("lockspace"));
    let xml = dir.join("web-l.xml");
    std::fs::write(
        &xml,
        domain_xml("web-l", UUID_B, &disk0, "", Some(&site.nolock_qemu)),
    )
    .unwrap();
    lockd.virsh_ok(&["define", xml.to_str().unwrap()]);

    a.virsh_ok(&["start", "web-a"]);
    let t = lockd.virsh_err(&["start", "web-l"]);
    assert!(
        t.contains("resource busy") && t.contains("is locked"),
        "{t}"
    );
    a.virsh_ok(&["destroy", "web-a"]);
    wait_until("host a lets go", Duration::from_secs(1), || {
        a.held().is_empty()
    });

    lockd.virsh_ok(&["start", "web-l"]);
    a.define(&domain_xml(
        "web-a",
        UUID_A,
        &disk0,
        "",
        Some(&site.nolock_qemu),
    ));
    let t = a.virsh_err(&["start", "web-a"]);
    assert!(
        t.contains("resource busy") && t.contains("(virtlockd)"),
        "{t}"
    );
    assert_eq!(a.state_of("web-a"), "shut off");
    lockd.virsh_ok(&["destroy", "web-l"]);
    a.virsh_ok(&["start", "web-a"]);
    assert_eq!(a.held(), [disk0.as_str()]);
}

/// A libvirtd with `lock_manager = "lockd"` and its virtlockd; stopped on drop.
struct LockdHost {
    state: PathBuf,
}

impl LockdHost {
    fn start(state: &Path, lockspace: &Path) -> LockdHost {
        let host = LockdHost {
            state: state.to_path_buf(),
        };
        let o = script(&[
            "start",
            state.to_str().unwrap(),
            lockspace.to_str().unwrap(),
        ]);
        assert!(o.status.success(), "start lockd host: {}", text(&o));
        host
    }

    fn virsh(&self, args: &[&str]) -> Output {
        let mut a = vec!["virsh", self.state.to_str().unwrap()];
        a.extend_from_slice(args);
        script(&a)
    }

    fn virsh_ok(&self, args: &[&str]) {
        let o = self.virsh(args);
        assert!(
            o.status.success(),
            "lockd host: virsh {args:?}: {}",
            text(&o)
        );
    }

    fn virsh_err(&self, args: &[&str]) -> String {
        let o = self.virsh(args);
        assert!(!o.status.success(), "lockd host: virsh {args:?} succeeded");
        text(&o)
    }
}

impl Drop for LockdHost {
    fn drop(&mut self) {
        let o = script(&["stop", self.state.to_str().unwrap()]);
        if !o.status.success() {
            eprintln!("virtlockd-env stop: {}", text(&o));
        }
    }
}

/// Issue test 8, live migration between two libvirtds (separate mount and UTS namespaces,
/// host names and host uuids): the lease moves with the domain to the destination's daemon
/// (for the new QEMU pid), a third domain cannot take the disk afterwards, and it moves back.
///
/// Not covered: the moment between the source's release (its QEMU stops) and the
/// destination's acquire (its CPUs start), tens of milliseconds in which no host holds the
/// lease — see ARCHITECTURE.md, "The libvirt plugin".
#[test]
fn root_libvirt_plugin_live_migration() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = std::fs::canonicalize(tmp.path()).unwrap();
    let site = Site::new(&dir);
    let disk0 = site.disk("disk0.img", 16);
    let mut a = Host::start(&site, "dl-host-a", "");
    a.start_daemon();
    let mut b = Host::start(&site, "dl-host-b", "");
    b.start_daemon();
    a.define(&domain_xml("web-a", UUID_A, &disk0, "", None));
    a.virsh_ok(&["start", "web-a"]);

    let migrate = |from: &Host, to: &Host| {
        let uri = format!(
            "qemu+unix:///system?socket={}",
            to.state.join("run/libvirt-sock").display()
        );
        // --unsafe: libvirt cannot tell that the image is on storage both hosts share.
        from.virsh_ok(&[
            "migrate",
            "--live",
            "--unsafe",
            "web-a",
            &uri,
            "--migrateuri",
            "tcp://127.0.0.1",
        ]);
    };
    let owner_pid = |h: &Host| {
        let l = h.leases();
        assert_eq!(l.len(), 1, "{l:?}");
        assert_eq!(l[0]["disk"], disk0.as_str());
        assert_eq!(l[0]["owners"][0]["name"], "web-a");
        assert_eq!(l[0]["owners"][0]["uuid"], UUID_A);
        l[0]["owners"][0]["pid"].as_u64().unwrap()
    };

    migrate(&a, &b);
    assert_eq!(b.state_of("web-a"), "running");
    assert_eq!(owner_pid(&b), u64::from(b.qemu_pid("web-a")));
    assert_eq!(b.leases()[0]["holder"]["host"], "dl-host-b");
    assert!(a.held().is_empty());

    // A third domain (on the source host) is refused, naming the domain on its new host.
    a.define(&domain_xml(
        "third",
        UUID_C,
        &disk0,
        "",
        Some(&site.nolock_qemu),
    ));
    let t = a.virsh_err(&["start", "third"]);
    assert!(
        t.contains("resource busy") && t.contains("on host dl-host-b"),
        "{t}"
    );

    migrate(&b, &a);
    assert_eq!(owner_pid(&a), u64::from(a.qemu_pid("web-a")));
    wait_until(
        "the old destination lets go",
        Duration::from_secs(1),
        || b.held().is_empty(),
    );
}
