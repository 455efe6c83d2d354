//! What the callbacks send to the daemon, against a fake daemon on a private socket: no
//! libvirt, no root. (One test: the plugin's configuration is read once per process.)

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::sync::mpsc;

use disklock_libvirt::domain::{
    ACQUIRE_REGISTER_ONLY, ACQUIRE_RESTRICT, NEW_STARTED, Param, ParamValue, RESOURCE_READONLY,
    RESOURCE_TYPE_DISK,
};
use disklock_libvirt::error::ErrorCode;
use disklock_libvirt::plugin;
use serde_json::{Value, json};

/// Serves one call per connection: passes each call on (the receiver returned) and answers
/// with what `reply` gives for it.
fn fake_daemon(
    socket: &Path,
    reply: impl Fn(&Value) -> Value + Send + 'static,
) -> mpsc::Receiver<Value> {
    let listener = UnixListener::bind(socket).unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let mut conn = conn.unwrap();
            let mut buf = Vec::new();
            let mut byte = [0u8; 1];
            while conn.read(&mut byte).unwrap() == 1 && byte[0] != 0 {
                buf.push(byte[0]);
            }
            let call: Value = serde_json::from_slice(&buf).unwrap();
            let mut out = serde_json::to_vec(&reply(&call)).unwrap();
            out.push(0);
            // Recorded before the reply: once a callback returns, its calls are in `calls`.
            if tx.send(call).is_err() {
                return;
            }
            conn.write_all(&out).unwrap();
        }
    });
    rx
}

fn params(pid: u32) -> Vec<Param> {
    vec![
        Param {
            key: "uuid".into(),
            value: ParamValue::Uuid(*b"\x0d\x15\xc1\x0c\0\0\x40\0\x80\0\0\0\0\0\0\x01"),
        },
        Param {
            key: "name".into(),
            value: ParamValue::Str(Some("web1".into())),
        },
        Param {
            key: "id".into(),
            value: ParamValue::Int(1),
        },
        Param {
            key: "pid".into(),
            value: ParamValue::Int(i32::try_from(pid).unwrap()),
        },
    ]
}

const UUID: &str = "0d15c10c-0000-4000-8000-000000000001";

#[test]
fn callbacks_ask_the_daemon_what_libvirt_asked() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("d.sock");
    let conf = dir.path().join("qemu-disklock.conf");
    std::fs::write(
        &conf,
        format!("socket = \"{}\"\ntimeout = 5\n", socket.display()),
    )
    .unwrap();

    // Before drvInit nothing works; another ABI major is refused.
    assert!(plugin::new_domain(0, &params(1), 0).is_err());
    let e = plugin::init(2_000_000, Some(&conf)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ConfigUnsupported);
    plugin::init(1_000_000, Some(&conf)).unwrap();

    // No daemon: one line naming the socket.
    let pid = std::process::id();
    let mut d = plugin::new_domain(0, &params(pid), NEW_STARTED).unwrap();
    plugin::add_resource(&mut d, RESOURCE_TYPE_DISK, "/img/a", &[], 0).unwrap();
    let e = plugin::acquire(&d, ACQUIRE_REGISTER_ONLY | ACQUIRE_RESTRICT, 0).unwrap_err();
    assert_eq!(e.code(), ErrorCode::OperationFailed);
    assert!(
        e.message().contains(&format!(
            "no disklock daemon is running at {}",
            socket.display()
        )),
        "{}",
        e.message()
    );

    let calls = fake_daemon(&socket, |call| {
        let m = call["method"].as_str().unwrap();
        let disks = &call["parameters"]["disks"];
        match m {
            "io.disklock.Lease.Version" => json!({"parameters": {"version": "t", "protocol": 1}}),
            "io.disklock.Lease.Acquire" if disks[0]["path"] == "/img/busy" => json!({
                "error": "io.disklock.Lease.Busy",
                "parameters": {"disk": "/img/busy", "key": "k", "lease": "/ls/k", "holders": [],
                    "message": "web9 (uuid u, pid 9) on host h2 (id i), exclusive since 1"}
            }),
            "io.disklock.Lease.Acquire" => json!({"parameters": {"leases": [], "skipped": []}}),
            "io.disklock.Lease.Release" => {
                json!({"parameters": {"released": disks.clone(), "not_held": []}})
            }
            _ => {
                json!({"error": "org.varlink.service.MethodNotFound", "parameters": {"method": m}})
            }
        }
    });
    let method = |c: &Value| c["method"].as_str().unwrap().to_owned();

    // The child: only the version; nothing is locked.
    plugin::acquire(&d, ACQUIRE_REGISTER_ONLY | ACQUIRE_RESTRICT, 0).unwrap();
    assert_eq!(method(&calls.recv().unwrap()), "io.disklock.Lease.Version");

    // CPUs start: every disk for the QEMU pid, named after the domain.
    let mut d = plugin::new_domain(0, &params(pid), 0).unwrap();
    plugin::add_resource(&mut d, RESOURCE_TYPE_DISK, "/img/a", &[], 0).unwrap();
    plugin::add_resource(
        &mut d,
        RESOURCE_TYPE_DISK,
        "/img/ro",
        &[],
        RESOURCE_READONLY,
    )
    .unwrap();
    plugin::acquire(&d, 0, 0).unwrap();
    let c = calls.recv().unwrap();
    assert_eq!(method(&c), "io.disklock.Lease.Acquire");
    assert_eq!(
        c["parameters"]["owner"],
        json!({"name": "web1", "uuid": UUID, "pid": pid})
    );
    assert_eq!(
        c["parameters"]["disks"],
        json!([{"path": "/img/a", "mode": "exclusive"}, {"path": "/img/ro", "mode": "readonly"}])
    );

    // A second attach of /img/a, rolled back: no release reaches the daemon.
    let mut attach = plugin::new_domain(0, &params(pid), 0).unwrap();
    plugin::add_resource(&mut attach, RESOURCE_TYPE_DISK, "/img/a", &[], 0).unwrap();
    plugin::acquire(&attach, 0, 0).unwrap();
    assert_eq!(method(&calls.recv().unwrap()), "io.disklock.Lease.Acquire");
    plugin::release(&attach, 0).unwrap();
    assert!(calls.try_recv().is_err(), "a release reached the daemon");

    // Pause: both disks go, for this owner only.
    plugin::release(&d, 0).unwrap();
    let c = calls.recv().unwrap();
    assert_eq!(method(&c), "io.disklock.Lease.Release");
    assert_eq!(
        c["parameters"],
        json!({"disks": ["/img/a", "/img/ro"], "owner": UUID})
    );

    // A busy disk: libvirt's "resource busy", naming the holder.
    let mut hot = plugin::new_domain(0, &params(pid), 0).unwrap();
    plugin::add_resource(&mut hot, RESOURCE_TYPE_DISK, "/img/busy", &[], 0).unwrap();
    let e = plugin::acquire(&hot, 0, 0).unwrap_err();
    assert_eq!(e.code(), ErrorCode::ResourceBusy);
    assert_eq!(
        e.message(),
        "disklock: /img/busy: web9 (uuid u, pid 9) on host h2 (id i), exclusive since 1"
    );

    // Inquire hands over no state and asks nothing.
    plugin::inquire(&d, 0).unwrap();
    assert!(plugin::inquire(&d, 1).is_err());
    calls.recv().unwrap();
    assert!(calls.try_recv().is_err());
}
