//! `lock_manager = "disklock"` with real libvirtds and QEMU TCG guests (issue 17's tests 1-10).
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

mod common;

use std::process::Command;
use std::time::Duration;

use common::libvirt::{
    Host, Killed, Site, domain_xml, plugin, script, text, wait_until, with_lockfailure,
};

const UUID_A: &str = "0d15c10c-0000-4000-8000-00000000000a";
const UUID_B: &str = "0d15c10c-0000-4000-8000-00000000000b";
const UUID_C: &str = "0d15c10c-0000-4000-8000-00000000000c";
const UUID_D: &str = "0d15c10c-0000-4000-8000-00000000000d";
const UUID_E: &str = "0d15c10c-0000-4000-8000-00000000000e";

#[test]
fn root_libvirt_plugin_two_hosts() {
    let site = Site::new();
    let disk0 = site.disk("disk0.img", 16);
    let disk1 = site.disk("disk1.img", 8);
    let disk2 = site.disk("disk2.img", 8);

    let mut a = Host::start_without_daemon(&site, "dl-host-a", "");
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
    let b = Host::start(&site, "dl-host-b", "");
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

/// Issue test 9: when a domain's lease is lost (here: its lease file removed behind the
/// daemon's back, so another host could take the disk), the daemon applies the domain's
/// `<on_lockfailure>`: poweroff kills QEMU, pause suspends the domain through libvirt;
/// restart is refused at start, as sanlock refuses it.
#[test]
fn root_libvirt_plugin_on_lockfailure() {
    let site = Site::new();
    let disk0 = site.disk("disk0.img", 16);
    let disk1 = site.disk("disk1.img", 16);
    let a = Host::start(&site, "dl-host-a", "");
    a.define(&with_lockfailure(
        &domain_xml("kill-me", UUID_A, &disk0, "", None),
        "poweroff",
    ));
    a.define(&with_lockfailure(
        &domain_xml("pause-me", UUID_B, &disk1, "", None),
        "pause",
    ));
    a.define(&with_lockfailure(
        &domain_xml("restart-me", UUID_C, &disk1, "", None),
        "restart",
    ));
    let t = a.virsh_err(&["start", "restart-me"]);
    assert!(t.contains("restart") && t.contains("not supported"), "{t}");
    a.virsh_ok(&["start", "kill-me"]);
    a.virsh_ok(&["start", "pause-me"]);
    assert_eq!(a.held(), [disk0.as_str(), disk1.as_str()]);
    for l in a.leases() {
        std::fs::remove_file(l["lease"].as_str().unwrap()).unwrap();
    }
    let killed = wait_until("poweroff kills QEMU", Duration::from_secs(10), || {
        a.state_of("kill-me") == "shut off"
    });
    let paused = wait_until("pause suspends the domain", Duration::from_secs(10), || {
        a.state_of("pause-me") == "paused"
    });
    eprintln!("lease file removed: killed after {killed:?}, paused after {paused:?}");
    // Suspending released the domain's (lost) lease, as every pause does; a resume takes
    // the disk again if nobody else took it meanwhile.
    wait_until(
        "the pause released the lease",
        Duration::from_secs(5),
        || a.held().is_empty(),
    );
    a.virsh_ok(&["resume", "pause-me"]);
    assert_eq!(a.held(), [disk1.as_str()]);
    // Log lines are written in batches, a moment after their events.
    wait_until("the losses are logged", Duration::from_secs(5), || {
        let log = std::fs::read_to_string(a.state.join("daemon.log")).unwrap();
        log.contains("lease-lost") && log.contains("lost-kill") && log.contains("lost-pause")
    });
    a.virsh_ok(&["destroy", "pause-me"]);
    wait_until("destroy frees the lease", Duration::from_secs(1), || {
        a.held().is_empty()
    });
}

/// `<lease>` elements: the lease file `<path>/<lockspace>/<key>` is taken for the domain,
/// and another host's domain naming the same lease is refused, whatever its disks.
#[test]
fn root_libvirt_plugin_lease_elements() {
    let site = Site::new();
    let (disk0, disk1) = (site.disk("disk0.img", 16), site.disk("disk1.img", 16));
    let leases = site.dir.join("leases");
    let lease = |xml: String| {
        xml.replacen(
            "<devices>",
            &format!(
                "<devices><lease><lockspace>space</lockspace><key>vm-key</key>\
                 <target path='{}'/></lease>",
                leases.display()
            ),
            1,
        )
    };
    let a = Host::start(&site, "dl-host-a", "");
    let b = Host::start(&site, "dl-host-b", "");
    a.define(&lease(domain_xml("leased-a", UUID_A, &disk0, "", None)));
    b.define(&lease(domain_xml(
        "leased-b",
        UUID_B,
        &disk1,
        "",
        Some(&site.nolock_qemu),
    )));
    a.virsh_ok(&["start", "leased-a"]);
    let file = leases.join("space/vm-key");
    assert_eq!(
        a.held(),
        [disk0.as_str(), file.to_str().unwrap()],
        "the disk and the lease file"
    );
    let t = b.virsh_err(&["start", "leased-b"]);
    assert!(t.contains("resource busy") && t.contains("leased-a"), "{t}");
    assert!(b.held().is_empty());
    a.virsh_ok(&["destroy", "leased-a"]);
    wait_until("destroy frees both", Duration::from_secs(1), || {
        a.held().is_empty()
    });
    b.virsh_ok(&["start", "leased-b"]);
    b.virsh_ok(&["destroy", "leased-b"]);
}

#[test]
fn root_libvirt_plugin_bad_config() {
    let site = Site::new();
    let disk0 = site.disk("disk0.img", 16);
    // Issue test 10: a configuration with an error: every start says where it is, and
    // libvirtd keeps serving.
    let c = Host::start(&site, "dl-host-c", "auto_disk_leases = 2");
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
    let site = Site::new();
    let disk0 = site.disk("disk0.img", 16);
    let a = Host::start(&site, "dl-host-a", "");
    a.define(&domain_xml("web-a", UUID_A, &disk0, "", None));
    // The lockd host: the same lockspace directory as the disklock daemons'.
    let lockd = Host::start_builtin(&site, "lockd-host", "lockd");
    lockd.define(&domain_xml(
        "web-l",
        UUID_B,
        &disk0,
        "",
        Some(&site.nolock_qemu),
    ));

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

/// Issue test 8, live migration between two libvirtds (separate mount and UTS namespaces,
/// host names and host uuids): the lease moves with the domain to the destination's daemon
/// (for the new QEMU pid), a third domain cannot take the disk afterwards, and it moves back.
///
/// Not covered: the moment between the source's release (its QEMU stops) and the
/// destination's acquire (its CPUs start), tens of milliseconds in which no host holds the
/// lease — see ARCHITECTURE.md, "The libvirt plugin".
#[test]
fn root_libvirt_plugin_live_migration() {
    let site = Site::new();
    let disk0 = site.disk("disk0.img", 16);
    let a = Host::start(&site, "dl-host-a", "");
    let b = Host::start(&site, "dl-host-b", "");
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
