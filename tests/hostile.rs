//! The daemon against clients that misbehave: floods of idle connections, half-sent and
//! abandoned requests, malformed or oversized calls, and an unprivileged client on a socket
//! opened to others. The real binary, daemons on private sockets, as in `lease.rs`.

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::time::Duration;

use common::*;
use serde_json::Value;

/// A Varlink call of `method` with `parameters`, NUL-terminated.
fn call(method: &str, parameters: Value) -> Vec<u8> {
    let mut m = serde_json::to_vec(&serde_json::json!({
        "method": method,
        "parameters": parameters,
    }))
    .unwrap();
    m.push(0);
    m
}

/// Every interface GetInfo lists can be described: a Varlink client's `help` of each works.
#[test]
fn every_interface_the_daemon_lists_it_describes() {
    let env = Env::new();
    let a = env.daemon("a.sock");
    let info = a.call(&call("org.varlink.service.GetInfo", Value::Null));
    let interfaces = info["parameters"]["interfaces"].as_array().unwrap().clone();
    assert!(interfaces.contains(&"org.varlink.service".into()), "{info}");
    for i in interfaces {
        let v = a.call(&call(
            "org.varlink.service.GetInterfaceDescription",
            serde_json::json!({ "interface": i }),
        ));
        let d = v["parameters"]["description"]
            .as_str()
            .unwrap_or_else(|| panic!("{i}: {v}"));
        assert!(
            d.contains(&format!("\ninterface {}\n", i.as_str().unwrap())),
            "{d}"
        );
    }
    let d = a.call(&call(
        "org.varlink.service.GetInterfaceDescription",
        serde_json::json!({ "interface": "org.varlink.service" }),
    ));
    let d = d["parameters"]["description"].as_str().unwrap();
    for line in [
        "method GetInfo() -> (",
        "method GetInterfaceDescription(interface: string) -> (description: string)",
        "error MethodNotImplemented (method: string)",
        "error InvalidParameter (parameter: string)",
    ] {
        assert!(d.contains(line), "{line}: {d}");
    }
    let v = a.call(&call(
        "org.varlink.service.GetInterfaceDescription",
        serde_json::json!({ "interface": "com.example.Nope" }),
    ));
    assert_eq!(v["error"], "org.varlink.service.InterfaceNotFound");
    assert_eq!(v["parameters"]["interface"], "com.example.Nope");
}

/// `InvalidParameter` carries the parameter's name, as Varlink defines it; why goes to the
/// daemon's log, and the CLI explains what it can.
#[test]
fn invalid_parameters_are_named_and_the_log_says_why() {
    let env = Env::new();
    let a = env.daemon("a.sock");
    let owner = serde_json::json!({"name": "x", "uuid": "u", "pid": 1});
    let disk = serde_json::json!({"path": "/x", "mode": "exclusive"});
    for (method, params, name) in [
        (
            "Acquire",
            serde_json::json!({"disks": [], "owner": owner}),
            "disks",
        ),
        (
            "Acquire",
            serde_json::json!({"disks": [disk], "owner": {"name": "x", "uuid": "u", "pid": "1"}}),
            "owner.pid",
        ),
        (
            "Acquire",
            serde_json::json!({"disks": [{"path": "/x", "mode": "bogus"}], "owner": owner}),
            "disks[0].mode",
        ),
        (
            "Acquire",
            serde_json::json!({"disks": [disk], "owner": owner, "pr": true}),
            "pr",
        ),
        ("Acquire", serde_json::json!({"owner": owner}), "disks"),
        ("ReleaseOwner", serde_json::json!({}), "name"),
    ] {
        let v = a.call(&call(
            &format!("io.disklock.Lease.{method}"),
            params.clone(),
        ));
        assert_eq!(
            v["error"], "org.varlink.service.InvalidParameter",
            "{params}: {v}"
        );
        assert_eq!(v["parameters"]["parameter"], name, "{params}: {v}");
    }
    wait_until("the log says why", || {
        let log = std::fs::read_to_string(&a.log).unwrap();
        log.contains("event=\"invalid-parameter\"")
            && log.contains("persistent_reservations = 0")
            && log.contains("unknown variant `bogus`")
    });
    // The CLI's message says what the parameter means.
    let owner = Sleeper::new();
    let img = env.disk("vm.img");
    let o = env.run("a.sock", &["acquire", "--pr", "--pid", &owner.pid(), &img]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_stderr_has(
        &o,
        "disklock: invalid parameter pr: a disk cannot get a persistent reservation",
    );
}

/// A call with `upgrade` set is refused with MethodNotImplemented naming the method; it
/// used to be served as a plain call.
#[test]
fn upgrade_calls_are_refused_not_served_plain() {
    let env = Env::new();
    let a = env.daemon("a.sock");
    let disk = env.disk("vm.img");
    let owner = Sleeper::new();
    let mut m = serde_json::to_vec(&serde_json::json!({
        "method": "io.disklock.Lease.Acquire",
        "parameters": {
            "disks": [{"path": disk, "mode": "exclusive"}],
            "owner": {"name": "vm", "uuid": "u-1", "pid": owner.0.id()},
        },
        "upgrade": true,
    }))
    .unwrap();
    m.push(0);
    let v = a.call(&m);
    assert_eq!(
        v["error"], "org.varlink.service.MethodNotImplemented",
        "{v}"
    );
    assert_eq!(v["parameters"]["method"], "io.disklock.Lease.Acquire");
    assert!(
        status_json(&env, "a.sock").is_empty(),
        "nothing was acquired"
    );
    assert_eq!(env.lease_files(), 0);
}

/// The disk limit of one Acquire (1024) is one a client can meet within the 64 KiB message
/// limit: one more disk than it is refused as too many disks, naming the parameter, not as
/// too large a message; the CLI says so before asking.
#[test]
fn the_disk_limit_is_reachable_and_refused_by_count() {
    const MAX_DISKS: usize = 1024;
    let env = Env::new();
    let a = env.daemon("a.sock");
    let acquire = |n: usize| {
        let disks = vec![serde_json::json!({"path": "/a", "mode": "exclusive"}); n];
        call(
            "io.disklock.Lease.Acquire",
            serde_json::json!({"disks": disks, "owner": {"name": "x", "uuid": "u", "pid": 1}}),
        )
    };
    let too_many = acquire(MAX_DISKS + 1);
    assert!(too_many.len() <= 64 * 1024, "{}", too_many.len());
    let v = a.call(&too_many);
    assert_eq!(v["error"], "org.varlink.service.InvalidParameter", "{v}");
    assert_eq!(v["parameters"]["parameter"], "disks");
    // As many as the limit: the call is taken (and refused: /a is no disk).
    let v = a.call(&acquire(MAX_DISKS));
    assert_ne!(v["error"], "org.varlink.service.InvalidParameter", "{v}");
    assert_ne!(v["error"], "io.disklock.Lease.RequestTooLarge", "{v}");
    let owner = Sleeper::new();
    let pid = owner.pid();
    let many: Vec<String> = (0..=MAX_DISKS).map(|i| format!("/d{i}")).collect();
    let mut args = vec!["acquire", "--pid", &pid];
    args.extend(many.iter().map(String::as_str));
    let o = env.run("a.sock", &args);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_stderr_has(&o, "1025 disks: one request takes at most 1024");
}

/// A path of thousands of bytes is logged once per event, cut at 512 bytes with a marker:
/// it used to be written four times, whole, in one line of 20 KB.
#[test]
fn long_paths_are_logged_once_and_cut() {
    let env = Env::new();
    let a = env.daemon("a.sock");
    let owner = Sleeper::new();
    // One that resolves (a real file, 3,000 bytes deep) and one over PATH_MAX.
    let mut dir = env.path("deep");
    for i in 0..14 {
        dir.push(format!("{i:02}{}", "d".repeat(200)));
    }
    std::fs::create_dir_all(&dir).unwrap();
    let real = dir.join("vm.img");
    std::fs::write(&real, b"").unwrap();
    let real = real.to_str().unwrap().to_owned();
    let bogus = format!("{}/{}", env.path("x").display(), "x".repeat(5000));
    for path in [&real, &bogus] {
        let v = a.call(&call(
            "io.disklock.Lease.Acquire",
            serde_json::json!({
                "disks": [{"path": path, "mode": "exclusive"}],
                "owner": {"name": "vm", "uuid": "u-1", "pid": owner.0.id()},
            }),
        ));
        let released = a.call(&call(
            "io.disklock.Lease.Release",
            serde_json::json!({ "disks": [path] }),
        ));
        assert!(path == &bogus || v["error"].is_null(), "{v}");
        assert!(released["error"].is_null(), "{released}");
    }
    let events = ["acquire", "release", "refuse"];
    wait_until("the three events are logged", || {
        let log = std::fs::read_to_string(&a.log).unwrap();
        events
            .iter()
            .all(|e| log.contains(&format!("event=\"{e}\"")))
    });
    let log = std::fs::read_to_string(&a.log).unwrap();
    for e in events {
        let line = log
            .lines()
            .find(|l| l.contains(&format!("event=\"{e}\"")))
            .unwrap();
        assert!(
            line.len() < 2048,
            "{e}: a line of {} bytes: {line}",
            line.len()
        );
        let path = if e == "refuse" { &bogus } else { &real };
        assert_eq!(line.matches(&path[..100]).count(), 1, "{e}: {line}");
        assert!(line.contains(" more bytes]"), "{e}: {line}");
    }
}

/// Waits for the daemon to close `s` (the end of the stream, or a reset when it closed with
/// bytes of ours unread), failing after `limit`.
fn closed_within(s: &mut UnixStream, limit: Duration) {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("still open after {limit:?} ({e}); read {got:?}"),
    }
    assert!(got.is_empty() || got.ends_with(b"\0"), "{got:?}");
}

/// A connection that sends no whole request within the idle timeout (10 s) is closed: one
/// that sends nothing, one that sends half a request, and one that goes quiet after a
/// reply. They used to stay open, each holding one of the daemon's 1024 slots, for ever.
#[test]
fn idle_and_half_sent_connections_are_closed() {
    let env = Env::new();
    let a = env.daemon("a.sock");
    let mut idle = UnixStream::connect(&a.socket).unwrap();
    let mut half = UnixStream::connect(&a.socket).unwrap();
    half.write_all(b"{\"method\":\"io.disklock.Lease.Sta")
        .unwrap();
    let mut served = UnixStream::connect(&a.socket).unwrap();
    served
        .write_all(&call("io.disklock.Lease.Version", Value::Null))
        .unwrap();
    assert_eq!(read_reply(&mut served)["parameters"]["protocol"], 1);
    for s in [&mut idle, &mut half, &mut served] {
        closed_within(s, Duration::from_secs(30));
    }
    // The daemon serves on.
    ok(env.run("a.sock", &["status"]));
}

/// Lets this process open `n` more files: connections in the tests below.
fn allow_open_files(n: u64) {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    let want = n + 256;
    if soft < want {
        let hard = hard.max(want);
        setrlimit(Resource::RLIMIT_NOFILE, want, hard).unwrap_or_else(|e| {
            panic!(
                "cannot raise the open-file limit to {want} (hard limit {hard}): {e}; run as root"
            )
        });
    }
}

/// 1,030 idle connections, more than the daemon's 1024 slots: `status` and `acquire`
/// still answer at once (within 5 s: a liveness bound), because the connections that have
/// waited longest for a request make room. They used to hang until killed.
#[test]
fn a_flood_of_idle_connections_locks_nobody_out() {
    const FLOOD: usize = 1030;
    allow_open_files(FLOOD as u64);
    let env = Env::new();
    let disk = env.disk("vm.img");
    let a = env.daemon("a.sock");
    let flood: Vec<UnixStream> = (0..FLOOD)
        .map(|_| UnixStream::connect(&a.socket).unwrap())
        .collect();
    let limit = Duration::from_secs(5);
    ok(env.run_within(limit, "a.sock", &["status"]));
    let owner = Sleeper::new();
    ok(env.run_within(
        limit,
        "a.sock",
        &["acquire", "--owner", "vm", "--pid", &owner.pid(), &disk],
    ));
    let st = status_json(&env, "a.sock");
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["owners"][0]["name"], "vm");
    ok(env.run_within(limit, "a.sock", &["release", &disk]));
    drop(flood);
    wait_until("the daemon logs that its connections were full", || {
        std::fs::read_to_string(&a.log)
            .unwrap()
            .contains("event=\"connections-full\"")
    });
}

/// The CLI waits for a daemon for --timeout seconds at most, then says which socket and
/// what timed out, and exits 1. It used to wait for ever: for the reply of a daemon that
/// never answers, and to connect to one whose connection queue is full.
#[test]
fn the_cli_gives_up_on_a_daemon_that_does_not_answer() {
    use nix::sys::socket::{AddressFamily, Backlog, SockFlag, SockType, UnixAddr};
    let env = Env::new();
    // Listens, never accepts: a connection gets in, its request is never read.
    let _mute = std::os::unix::net::UnixListener::bind(env.path("mute.sock")).unwrap();
    // Listens with a queue of one connection, which is taken: connect waits.
    let full = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .unwrap();
    nix::sys::socket::bind(
        std::os::fd::AsRawFd::as_raw_fd(&full),
        &UnixAddr::new(&env.path("full.sock")).unwrap(),
    )
    .unwrap();
    nix::sys::socket::listen(&full, Backlog::new(0).unwrap()).unwrap();
    let _queued = UnixStream::connect(env.path("full.sock")).unwrap();
    for (sock, what) in [
        ("mute.sock", "waiting for the reply of"),
        ("full.sock", "connecting to"),
    ] {
        for args in [
            &["--timeout", "1", "status"][..],
            &["--timeout", "1", "acquire", "/x.img"],
            &["--timeout", "1", "run", "--disk", "/x.img", "--", "true"],
        ] {
            let o = env.run_within(Duration::from_secs(20), sock, args);
            assert_eq!(code(&o), 1, "{args:?}: {}", stderr(&o));
            let err = stderr(&o);
            assert_eq!(
                err,
                format!(
                    "disklock: timed out after 1 s {what} the daemon at {} (--timeout)\n",
                    env.path(sock).display()
                ),
                "{args:?}"
            );
        }
    }
    let o = env.run("mute.sock", &["--timeout", "0", "status"]);
    assert_eq!(code(&o), 2, "{}", stderr(&o));
    assert_stderr_has(&o, "--timeout");
}

/// A raw Acquire of `disk` for `owner`'s process, as exclusive.
fn acquire_call(disk: &str, owner: &Sleeper, uuid: &str) -> Vec<u8> {
    call(
        "io.disklock.Lease.Acquire",
        serde_json::json!({
            "disks": [{"path": disk, "mode": "exclusive"}],
            "owner": {"name": "vm", "uuid": uuid, "pid": owner.0.id()},
        }),
    )
}

/// A daemon, a disk image and an owner process for it.
fn daemon_with_a_disk() -> (Env, String, Daemon, Sleeper) {
    let env = Env::new();
    let disk = env.disk("vm.img");
    let a = env.daemon("a.sock");
    (env, disk, a, Sleeper::new())
}

/// Sends an exclusive Acquire of `disk` for `owner` (as `uuid`) while the daemon is stopped
/// (SIGSTOP), does `then` to the connection, and lets the daemon go on: it finds the
/// request as `then` left the connection. `then` returns the connection, or None to close.
fn acquire_while_stopped(
    a: &Daemon,
    disk: &str,
    owner: &Sleeper,
    uuid: &str,
    then: impl FnOnce(UnixStream) -> Option<UnixStream>,
) -> Option<UnixStream> {
    use nix::sys::signal::{Signal, kill};
    let pid = nix::unistd::Pid::from_raw(i32::try_from(a.child.id()).unwrap());
    kill(pid, Signal::SIGSTOP).unwrap();
    let mut s = UnixStream::connect(&a.socket).unwrap();
    s.write_all(&acquire_call(disk, owner, uuid)).unwrap();
    let s = then(s);
    kill(pid, Signal::SIGCONT).unwrap();
    s
}

/// An Acquire whose caller hangs up before the daemon gets to it is not carried out: it
/// used to be, leaving the disk leased for an owner whose caller saw a failure. The daemon
/// is stopped (SIGSTOP) while the caller connects, sends its request and closes.
#[test]
fn an_acquire_whose_caller_hung_up_is_not_carried_out() {
    let (env, disk, a, owner) = daemon_with_a_disk();
    acquire_while_stopped(&a, &disk, &owner, "u-gone", |_closed| None);
    wait_until("the daemon has read the request", || {
        let log = std::fs::read_to_string(&a.log).unwrap();
        log.contains("event=\"abandoned\"") || log.contains("event=\"acquire\"")
    });
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(!log.contains("event=\"acquire\""), "{log}");
    assert!(status_json(&env, "a.sock").is_empty());
    assert_eq!(env.lease_files(), 0);
}

/// An Acquire whose reply cannot be delivered gives back what it took: its caller saw a
/// failure. The caller here shuts down its reading half before it sends the request, so
/// the daemon finds it connected, takes the lease, and fails to write the reply (EPIPE).
/// The lease used to stay held.
#[test]
fn an_acquire_whose_reply_is_undelivered_is_undone() {
    let (env, disk, a, owner) = daemon_with_a_disk();
    let mut s = UnixStream::connect(&a.socket).unwrap();
    s.shutdown(std::net::Shutdown::Read).unwrap();
    s.write_all(&acquire_call(&disk, &owner, "u-deaf")).unwrap();
    wait_until("the lease is given back", || {
        std::fs::read_to_string(&a.log)
            .unwrap()
            .contains("cause=\"reply-undelivered\"")
    });
    let log = std::fs::read_to_string(&a.log).unwrap();
    assert!(
        log.contains("event=\"acquire\""),
        "it was taken first: {log}"
    );
    assert!(status_json(&env, "a.sock").is_empty());
    assert_eq!(env.lease_files(), 0);
    // Its owner can take it again, and its watch was dropped with it.
    ok(env.run(
        "a.sock",
        &["acquire", "--uuid", "u-deaf", "--pid", &owner.pid(), &disk],
    ));
}

/// A caller that sends its Acquire and then shuts down only its writing half (as `socat`
/// does at the end of its input) is still there: it gets its reply and its lease.
#[test]
fn a_caller_that_only_stops_writing_is_served() {
    let (env, disk, a, owner) = daemon_with_a_disk();
    let mut s = acquire_while_stopped(&a, &disk, &owner, "u-half", |s| {
        s.shutdown(std::net::Shutdown::Write).unwrap();
        Some(s)
    })
    .unwrap();
    let v = read_reply(&mut s);
    assert!(v["error"].is_null(), "{v}");
    assert_eq!(v["parameters"]["leases"][0]["owners"][0]["uuid"], "u-half");
    assert_eq!(status_json(&env, "a.sock").len(), 1);
}

/// With the socket opened to others, a client that is not root leases only disks it could
/// open itself (read, and write for an exclusive lease), and learns nothing of paths it
/// cannot reach: one that does not exist gets the same answer. It used to lease anything,
/// /etc/shadow included, and tell existing paths from missing ones.
#[test]
fn root_a_client_that_is_not_root_leases_only_what_it_could_open() {
    let env = Env::new();
    let mine = env.disk("mine.img");
    chmod(std::path::Path::new(&mine), 0o666);
    let readable = env.disk("readable.img");
    std::fs::create_dir(env.path("private")).unwrap();
    let behind = env.path("private/open.img");
    std::fs::write(&behind, b"").unwrap();
    chmod(&behind, 0o666);
    chmod(&env.path("private"), 0o700);
    let link = env.path("link.img");
    std::os::unix::fs::symlink(&behind, &link).unwrap();
    let _a = env.daemon_open_to_others("a.sock");
    let owner = Sleeper::nobody();
    let pid = owner.pid();
    let refused = |disk: &str, shared: bool| -> String {
        let mut args = vec!["acquire", "--owner", "n", "--pid", &pid, disk];
        if shared {
            args.insert(1, "--shared");
        }
        let o = as_nobody(&env, "a.sock", &args);
        assert_eq!(code(&o), 1, "{disk}: {}", stderr(&o));
        stderr(&o).replace(disk, "DISK")
    };
    let rw = "disklock: permission denied: uid 65534 cannot open DISK for reading and writing, \
              or it does not exist\n";
    let r = rw.replace("reading and writing", "reading");
    assert_eq!(refused("/etc/shadow", false), rw);
    assert_eq!(refused("/etc/shadow", true), r);
    // What does not exist is refused in the same words.
    assert_eq!(refused("/etc/no-such-disk.img", false), rw);
    assert_eq!(refused("/etc/no-such-dir/x.img", true), r);
    // A directory it cannot search hides what is in it, named directly or by a link.
    assert_eq!(refused(behind.to_str().unwrap(), true), r);
    assert_eq!(refused(link.to_str().unwrap(), true), r);
    // Read-only for it: shared, not exclusive.
    assert_eq!(refused(&readable, false), rw);
    assert!(status_json(&env, "a.sock").is_empty());
    assert_eq!(env.lease_files(), 0);
    ok(as_nobody(
        &env,
        "a.sock",
        &[
            "acquire", "--shared", "--owner", "n", "--pid", &pid, &readable,
        ],
    ));
    ok(as_nobody(
        &env,
        "a.sock",
        &["acquire", "--owner", "n", "--pid", &pid, &mine],
    ));
    assert_eq!(status_json(&env, "a.sock").len(), 2);
    // Root leases what it likes.
    let root_owner = Sleeper::new();
    ok(env.run(
        "a.sock",
        &[
            "acquire",
            "--pid",
            &root_owner.pid(),
            link.to_str().unwrap(),
        ],
    ));
}

/// With the socket opened to others, a client that is not root sees every lease in
/// `status`, but owners (names, uuids, pids) only of its own uid: the others are left out,
/// from the holder record too, and counted. It used to see every holder's.
#[test]
fn root_status_shows_a_client_that_is_not_root_only_its_own_owners() {
    let env = Env::new();
    let rootdisk = env.disk("root.img");
    let shared = env.disk("shared.img");
    chmod(std::path::Path::new(&shared), 0o666);
    let _a = env.daemon_open_to_others("a.sock");
    let root_owner = Sleeper::new();
    let nobody = Sleeper::nobody();
    let rpid = root_owner.pid();
    ok(env.run(
        "a.sock",
        &[
            "acquire", "--owner", "rootvm", "--uuid", "u-root", "--pid", &rpid, &rootdisk,
        ],
    ));
    ok(env.run(
        "a.sock",
        &[
            "acquire", "--shared", "--owner", "rootdb", "--uuid", "u-root2", "--pid", &rpid,
            &shared,
        ],
    ));
    ok(as_nobody(
        &env,
        "a.sock",
        &[
            "acquire",
            "--shared",
            "--owner",
            "mine",
            "--uuid",
            "u-mine",
            "--pid",
            &nobody.pid(),
            &shared,
        ],
    ));
    let o = ok(as_nobody(&env, "a.sock", &["status", "--json"]));
    let text = String::from_utf8(o.stdout).unwrap();
    for secret in ["rootvm", "rootdb", "u-root"] {
        assert!(!text.contains(secret), "{secret}: {text}");
    }
    let st: Vec<Value> = serde_json::from_str(&text).unwrap();
    let lease = |disk: &str| st.iter().find(|l| l["disk"] == disk).unwrap().clone();
    let (r, s) = (lease(&rootdisk), lease(&shared));
    assert_eq!(r["owners"], serde_json::json!([]), "{r}");
    assert_eq!(r["holder"]["owners"], serde_json::json!([]), "{r}");
    assert_eq!(r["hidden_owners"], 1, "{r}");
    assert_eq!(s["owners"].as_array().unwrap().len(), 1, "{s}");
    assert_eq!(s["owners"][0]["uuid"], "u-mine");
    assert_eq!(s["holder"]["owners"][0]["uuid"], "u-mine");
    assert_eq!(s["hidden_owners"], 1, "{s}");
    let o = ok(as_nobody(&env, "a.sock", &["status"]));
    let table = String::from_utf8(o.stdout).unwrap();
    assert!(table.contains("(1 of other users)"), "{table}");
    assert!(!table.contains("rootvm"), "{table}");
    // Root sees every owner, and no count of hidden ones.
    let st = status_json(&env, "a.sock");
    let all: Vec<&Value> = st
        .iter()
        .flat_map(|l| l["owners"].as_array().unwrap())
        .collect();
    assert_eq!(all.len(), 3, "{st:?}");
    assert!(
        st.iter().all(|l| l.get("hidden_owners").is_none()),
        "{st:?}"
    );
}
