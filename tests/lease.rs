//! Leases driven as users drive them: the real binary, daemons on private sockets, lockspaces
//! in temporary directories. Two daemons with separate sockets sharing one lockspace stand in
//! for two hosts sharing an NFS lockspace (fcntl locks conflict between processes exactly as
//! between hosts). Lock conflicts are always between two processes.

mod common;

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

#[test]
fn exclusive_conflicts_between_daemons_and_names_the_holder() {
    let env = Env::new();
    let disk = env.disk("web1.img");
    let _a = env.daemon("a.sock");
    let _b = env.daemon("b.sock");
    let owner = Sleeper::new();
    ok(env.run(
        "a.sock",
        &[
            "acquire",
            "--owner",
            "web1",
            "--uuid",
            "u-1",
            "--pid",
            &owner.pid(),
            &disk,
        ],
    ));
    let other = Sleeper::new();
    let o = env.run(
        "b.sock",
        &["acquire", "--owner", "web2", "--pid", &other.pid(), &disk],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(err.contains("busy: held by web1 (uuid u-1, pid "), "{err}");
    assert!(err.contains("exclusive since"), "{err}");
    // inspect reads the same from the lease file, with no daemon involved.
    let o = ok(env.run("none.sock", &["inspect", "--json", &disk]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "exclusive");
    assert_eq!(v["holders"][0]["owners"][0]["name"], "web1");
    assert_eq!(v["lock"]["process"], "disklock");
    // Daemon A's status: disk, key, lockspace, mode, owners, since, holder.
    let st = status_json(&env, "a.sock");
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["disk"], disk.as_str());
    assert_eq!(st[0]["mode"], "exclusive");
    assert_eq!(st[0]["owners"][0]["uuid"], "u-1");
    assert_eq!(st[0]["source"], "file-sha256");
    assert!(st[0]["since"].as_u64().unwrap() > 0);
    assert_eq!(st[0]["holder"]["owners"][0]["name"], "web1");
    // Released on A: B gets it, and A now refuses.
    ok(env.run("a.sock", &["release", &disk]));
    assert_eq!(status_json(&env, "a.sock").len(), 0);
    ok(env.run(
        "b.sock",
        &["acquire", "--owner", "web2", "--pid", &other.pid(), &disk],
    ));
    let o = env.run(
        "a.sock",
        &["acquire", "--owner", "web1", "--pid", &owner.pid(), &disk],
    );
    assert_eq!(code(&o), 3);
    assert!(stderr(&o).contains("held by web2"), "{}", stderr(&o));
}

#[test]
fn shared_leases_share_and_exclude_writers() {
    let env = Env::new();
    let disk = env.disk("data.img");
    let _a = env.daemon("a.sock");
    let _b = env.daemon("b.sock");
    let (o1, o2, o3) = (Sleeper::new(), Sleeper::new(), Sleeper::new());
    ok(env.run(
        "a.sock",
        &[
            "acquire",
            "--shared",
            "--owner",
            "r1",
            "--pid",
            &o1.pid(),
            &disk,
        ],
    ));
    ok(env.run(
        "b.sock",
        &[
            "acquire",
            "--shared",
            "--owner",
            "r2",
            "--pid",
            &o2.pid(),
            &disk,
        ],
    ));
    // A second local owner joins A's lease: one lock, two owners.
    ok(env.run(
        "a.sock",
        &[
            "acquire",
            "--readonly",
            "--owner",
            "r3",
            "--pid",
            &o3.pid(),
            &disk,
        ],
    ));
    let st = status_json(&env, "a.sock");
    assert_eq!(st[0]["mode"], "shared");
    assert_eq!(st[0]["owners"].as_array().unwrap().len(), 2);
    // The lease file names both hosts' holders.
    let o = ok(env.run("none.sock", &["inspect", "--json", &disk]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "shared");
    assert_eq!(v["holders"].as_array().unwrap().len(), 2, "{v}");
    // A writer is refused on both daemons.
    let w = Sleeper::new();
    for sock in ["a.sock", "b.sock"] {
        let o = env.run(sock, &["acquire", "--owner", "w", "--pid", &w.pid(), &disk]);
        assert_eq!(code(&o), 3, "{sock}: {}", stderr(&o));
    }
    // A's owners leave: B still holds it shared, so the file stays and a writer still waits.
    ok(env.run("a.sock", &["release", &disk]));
    assert_eq!(env.lease_files(), 1);
    let o = env.run(
        "a.sock",
        &["acquire", "--owner", "w", "--pid", &w.pid(), &disk],
    );
    assert_eq!(code(&o), 3);
    // The last shared holder removes the file; then the writer gets it.
    ok(env.run("b.sock", &["release", &disk]));
    assert_eq!(env.lease_files(), 0);
    ok(env.run(
        "a.sock",
        &["acquire", "--owner", "w", "--pid", &w.pid(), &disk],
    ));
}

#[test]
fn readonly_disks_follow_the_configuration() {
    let env = Env::with_conf("readonly_disk_leases = 0\n");
    let disk = env.disk("ro.img");
    let _a = env.daemon("a.sock");
    let o = ok(env.run("a.sock", &["acquire", "--readonly", "--json", &disk]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["leases"].as_array().unwrap().len(), 0);
    assert_eq!(v["skipped"][0], disk.as_str());
    assert_eq!(env.lease_files(), 0);
}

#[test]
fn owner_death_releases_at_once() {
    let env = Env::new();
    let disk = env.disk("vm.img");
    let _a = env.daemon("a.sock");
    let _b = env.daemon("b.sock");
    let mut owner = Sleeper::new();
    ok(env.run("a.sock", &["acquire", "--pid", &owner.pid(), &disk]));
    owner.kill9();
    wait_until("the dead owner's lease is released", || {
        status_json(&env, "a.sock").is_empty()
    });
    assert_eq!(env.lease_files(), 0);
    let other = Sleeper::new();
    ok(env.run("b.sock", &["acquire", "--pid", &other.pid(), &disk]));
}

#[test]
fn daemon_kill9_releases_and_restart_starts_clean() {
    let env = Env::new();
    let disk = env.disk("vm.img");
    let mut a = env.daemon("a.sock");
    let _b = env.daemon("b.sock");
    let owner = Sleeper::new();
    ok(env.run("a.sock", &["acquire", "--pid", &owner.pid(), &disk]));
    a.kill9();
    // The kernel dropped the lock; the lease file stays behind, stale and free.
    assert_eq!(env.lease_files(), 1);
    let o = ok(env.run("none.sock", &["inspect", "--json", &disk]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["state"], "free");
    let other = Sleeper::new();
    ok(env.run("b.sock", &["acquire", "--pid", &other.pid(), &disk]));
    ok(env.run("b.sock", &["release", &disk]));
    // A restarts on its stale socket, with nothing held.
    assert!(a.socket.exists(), "kill -9 leaves the socket behind");
    let mut a = env.daemon("a.sock");
    assert!(status_json(&env, "a.sock").is_empty());
    ok(env.run("a.sock", &["acquire", "--pid", &owner.pid(), &disk]));
    // SIGTERM releases everything and removes the socket.
    let log = a.stop();
    assert!(
        log.contains("event=\"release\"") || log.contains("released"),
        "{log}"
    );
    assert_eq!(env.lease_files(), 0);
    assert!(!a.socket.exists());
}

#[test]
fn one_daemon_per_socket() {
    let env = Env::new();
    let _a = env.daemon("a.sock");
    let o = env.cmd("a.sock").arg("daemon").output().unwrap();
    assert_eq!(code(&o), 2);
    assert_stderr_has(&o, "another disklock daemon serves");
    // Something that is not a socket at the path is never removed.
    std::fs::write(env.path("file.sock"), "x").unwrap();
    let o = env.cmd("file.sock").arg("daemon").output().unwrap();
    assert_eq!(code(&o), 2);
    assert_stderr_has(&o, "exists and is not a socket");
}

#[test]
fn acquire_is_all_or_nothing() {
    let env = Env::new();
    let (d1, d2, d3) = (env.disk("1.img"), env.disk("2.img"), env.disk("3.img"));
    let _a = env.daemon("a.sock");
    let _b = env.daemon("b.sock");
    let owner = Sleeper::new();
    ok(env.run("b.sock", &["acquire", "--pid", &owner.pid(), &d2]));
    let o = env.run("a.sock", &["acquire", "--pid", &owner.pid(), &d1, &d2, &d3]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    assert_stderr_has(&o, &format!("{d2}: busy"));
    assert!(status_json(&env, "a.sock").is_empty());
    assert_eq!(env.lease_files(), 1);
    // An unknown disk fails the same way, exit 1.
    let o = env.run(
        "a.sock",
        &["acquire", "--pid", &owner.pid(), &d1, "/nonexistent/disk"],
    );
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("/nonexistent/disk"), "{}", stderr(&o));
    assert!(status_json(&env, "a.sock").is_empty());
}

/// Acquires racing for the same disks through one daemon: one exclusive winner per disk, all
/// sharers join one lease, overlapping multi-disk acquires are each all or nothing, and when
/// the owners are gone nothing is left. (In the `test-lanes` phase this runs every lease
/// through the daemon's lanes, where racing acquires claim leases and wait for each other.)
#[test]
fn racing_acquires_follow_the_one_rule() {
    let env = Env::new();
    let _a = env.daemon("a.sock");
    const N: usize = 8;
    let one = env.disk("one.img");
    let shared = env.disk("shared.img");
    let ring: Vec<String> = (0..N).map(|i| env.disk(&format!("r{i}.img"))).collect();
    let owners: Vec<Sleeper> = (0..N).map(|_| Sleeper::new()).collect();
    // Each racer is connected before any sends: the requests reach the daemon together.
    let socket = env.path("a.sock");
    let race = |args: &(dyn Fn(usize) -> Vec<String> + Sync)| -> Vec<i32> {
        let start = std::sync::Barrier::new(N);
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..N)
                .map(|i| {
                    let (disks, shared) = {
                        let a = args(i);
                        let shared = a.iter().any(|x| x == "--shared");
                        (a.into_iter().filter(|x| x != "--shared").collect::<Vec<_>>(), shared)
                    };
                    let (start, socket, pid) = (&start, &socket, owners[i].pid());
                    s.spawn(move || {
                        let mode = if shared { "shared" } else { "exclusive" };
                        let msg = serde_json::json!({
                            "method": "io.disklock.Lease.Acquire",
                            "parameters": {
                                "disks": disks.iter().map(|d| serde_json::json!({"path": d, "mode": mode})).collect::<Vec<_>>(),
                                "owner": {"name": format!("racer{i}"), "uuid": format!("racer-{i}"), "pid": pid.parse::<u32>().unwrap()},
                            }
                        });
                        let mut bytes = serde_json::to_vec(&msg).unwrap();
                        bytes.push(0);
                        let mut conn = std::os::unix::net::UnixStream::connect(socket).unwrap();
                        start.wait();
                        conn.write_all(&bytes).unwrap();
                        let v = read_reply(&mut conn);
                        match v["error"].as_str() {
                            None => 0,
                            Some("io.disklock.Lease.Busy") => 3,
                            Some(e) => panic!("racer {i}: {e}: {v}"),
                        }
                    })
                })
                .collect();
            runs.into_iter().map(|r| r.join().unwrap()).collect()
        })
    };
    let acquire = |_: usize, disks: &[&String], extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> = extra.iter().map(|s| (*s).to_owned()).collect();
        a.extend(disks.iter().map(|d| (*d).clone()));
        a
    };
    // One exclusive winner.
    let codes = race(&|i| acquire(i, &[&one], &[]));
    assert_eq!(codes.iter().filter(|c| **c == 0).count(), 1, "{codes:?}");
    assert!(codes.iter().all(|c| *c == 0 || *c == 3), "{codes:?}");
    // Every sharer in, on one lease.
    let codes = race(&|i| acquire(i, &[&shared], &["--shared"]));
    assert!(codes.iter().all(|c| *c == 0), "{codes:?}");
    // Overlapping pairs: owner i wants disks i and i+1.
    let codes = race(&|i| acquire(i, &[&ring[i], &ring[(i + 1) % N]], &[]));
    let status = status_json(&env, "a.sock");
    let holders = |disk: &str| -> Vec<u64> {
        status
            .iter()
            .filter(|l| l["disk"] == disk)
            .flat_map(|l| l["owners"].as_array().unwrap().iter())
            .map(|o| o["pid"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(holders(&one).len(), 1);
    assert_eq!(holders(&shared).len(), N);
    assert_eq!(
        status
            .iter()
            .filter(|l| l["disk"] == shared.as_str())
            .count(),
        1
    );
    for (i, c) in codes.iter().enumerate() {
        let pid: u64 = owners[i].pid().parse().unwrap();
        let has = |d: &str| holders(d) == [pid];
        match c {
            0 => assert!(has(&ring[i]) && has(&ring[(i + 1) % N]), "{i}: {status:?}"),
            3 => assert!(
                !holders(&ring[i]).contains(&pid) && !holders(&ring[(i + 1) % N]).contains(&pid),
                "a refused acquire holds nothing: {i}: {status:?}"
            ),
            c => panic!("exit {c} for {i}"),
        }
    }
    assert!(codes.contains(&0), "{codes:?}");
    for d in &ring {
        assert!(holders(d).len() <= 1, "{d}: {status:?}");
    }
    drop(owners);
    wait_until("every lease is released", || {
        status_json(&env, "a.sock").is_empty()
    });
    assert_eq!(env.lease_files(), 0);
    // On lanes, racing acquires of one lease claim it and wait for each other: the race
    // above must have made some wait, or it did not test that path.
    // (Log lines are written in batches, a moment after their events.)
    if std::env::var("DISKLOCK_TEST_LEASE_IO").as_deref() == Ok("all") {
        wait_until("an acquire that waited for another is logged", || {
            std::fs::read_to_string(env.path("a.sock.log"))
                .unwrap()
                .contains("acquire-waits")
        });
    }
}

#[test]
fn commands_say_when_they_need_a_daemon() {
    let env = Env::new();
    let disk = env.disk("x.img");
    for args in [
        vec!["acquire", disk.as_str()],
        vec!["status"],
        vec!["release", disk.as_str()],
    ] {
        let o = env.run("none.sock", &args);
        assert_eq!(code(&o), 4, "{args:?}");
        assert_stderr_has(&o, "no disklock daemon is running at");
        assert_stderr_has(&o, "none.sock");
    }
    // inspect needs none.
    let o = ok(env.run("none.sock", &["inspect", &disk]));
    assert!(String::from_utf8_lossy(&o.stdout).contains("free (no lease file)"));
}

#[test]
fn run_holds_leases_exactly_while_the_command_lives() {
    let env = Env::new();
    let disk = env.disk("vm.img");
    for daemon in [false, true] {
        let _d = daemon.then(|| env.daemon("a.sock"));
        let mut holder = env
            .cmd("a.sock")
            .args([
                "run", "--owner", "qemu-vm1", "--disk", &disk, "--", "sleep", "1000",
            ])
            .spawn()
            .unwrap();
        wait_until("the command holds the lease", || {
            let o = env.run("none.sock", &["inspect", "--json", &disk]);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            v["state"] == "exclusive"
        });
        // The holder record names the command's pid (same pid: disklock became it).
        let o = ok(env.run("none.sock", &["inspect", "--json", &disk]));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["holders"][0]["owners"][0]["name"], "qemu-vm1");
        assert_eq!(v["holders"][0]["owners"][0]["pid"], holder.id());
        // A second run is refused before its command starts, naming the holder.
        let marker = env.path("ran");
        let o = env.run(
            "a.sock",
            &[
                "run",
                "--disk",
                &disk,
                "--",
                "touch",
                marker.to_str().unwrap(),
            ],
        );
        assert_eq!(code(&o), 3, "daemon={daemon}: {}", stderr(&o));
        assert_stderr_has(&o, "busy: held by qemu-vm1");
        assert!(!marker.exists());
        holder.kill().unwrap();
        holder.wait().unwrap();
        wait_until("the lease is free", || {
            let o = env.run("none.sock", &["inspect", "--json", &disk]);
            let v: Value = serde_json::from_slice(&o.stdout).unwrap();
            v["state"] != "exclusive"
        });
        // The exit status passes through; a missing command is 127.
        let o = env.run(
            "a.sock",
            &["run", "--disk", &disk, "--", "sh", "-c", "exit 7"],
        );
        assert_eq!(code(&o), 7, "{}", stderr(&o));
        let o = env.run(
            "a.sock",
            &["run", "--disk", &disk, "--", "/nonexistent/cmd"],
        );
        assert_eq!(code(&o), 127, "{}", stderr(&o));
        if daemon {
            wait_until("the daemon holds nothing", || {
                status_json(&env, "a.sock").is_empty()
            });
        }
    }
}

#[test]
fn daemonless_run_removes_its_lease_files_as_the_daemon_does() {
    let env = Env::new();
    let (disk, other) = (env.disk("vm.img"), env.disk("other.img"));
    let lease_of = |d: &str| -> PathBuf {
        let o = ok(env.run("none.sock", &["lookup", "--json", d]));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        PathBuf::from(v[0]["lease"].as_str().unwrap())
    };
    let (lease, other_lease) = (lease_of(&disk), lease_of(&other));

    // Exclusive: the file exists while the command runs and is removed after it exits,
    // also when it fails and when it is SIGKILLed.
    let probe = format!(
        "test -f {} && test -f {} && exit 7",
        lease.display(),
        other_lease.display()
    );
    let o = env.run(
        "none.sock",
        &[
            "run", "--disk", &disk, "--disk", &other, "--", "sh", "-c", &probe,
        ],
    );
    assert_eq!(
        code(&o),
        7,
        "the lease file exists while the command runs: {}",
        stderr(&o)
    );
    wait_until("both lease files are gone", || env.lease_files() == 0);
    let mut holder = env
        .cmd("none.sock")
        .args(["run", "--disk", &disk, "--", "sleep", "1000"])
        .spawn()
        .unwrap();
    let execed = |c: &Child| {
        std::fs::read_to_string(format!("/proc/{}/comm", c.id())).is_ok_and(|s| s.trim() == "sleep")
    };
    // Once disklock has become the command, its releaser is watching.
    wait_until("disklock became the command", || execed(&holder));
    assert!(lease.exists());
    holder.kill().unwrap();
    holder.wait().unwrap();
    wait_until("the killed command's lease file is gone", || {
        !lease.exists()
    });
    // A command that waits for all its children is not kept waiting by the releaser.
    ok(env.run(
        "none.sock",
        &["run", "--disk", &disk, "--", "sh", "-c", "sleep 0.1 & wait"],
    ));
    wait_until("the lease file is gone", || !lease.exists());

    // Shared: the first holder to leave keeps the file (the other still holds it) and
    // only its own record goes; the last one removes it.
    let mut first = env
        .cmd("none.sock")
        .args([
            "run",
            "--owner",
            "first",
            "--shared-disk",
            &disk,
            "--",
            "sleep",
            "1000",
        ])
        .spawn()
        .unwrap();
    wait_until("first holds it", || lease.exists());
    let mut second = env
        .cmd("none.sock")
        .args([
            "run",
            "--owner",
            "second",
            "--shared-disk",
            &disk,
            "--",
            "sleep",
            "1000",
        ])
        .spawn()
        .unwrap();
    let owners = || -> Vec<String> {
        let o = env.run("none.sock", &["inspect", "--json", &disk]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        v["holders"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["owners"][0]["name"].as_str().unwrap().to_owned())
            .collect()
    };
    wait_until("both hold it", || {
        execed(&first) && execed(&second) && owners().len() == 2
    });
    first.kill().unwrap();
    first.wait().unwrap();
    wait_until("only second's record is left", || owners() == ["second"]);
    assert!(lease.exists(), "second still holds it: the file stays");
    let o = env.run("none.sock", &["run", "--disk", &disk, "--", "true"]);
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    second.kill().unwrap();
    second.wait().unwrap();
    wait_until("the last shared holder's file is gone", || !lease.exists());

    // The releaser's rule, run directly on an exited pid: a free file of the held inode
    // goes; a file someone else now holds, or another inode at the path, stays.
    let release_after = |mode: &str, path: &std::path::Path| -> Output {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(path).unwrap();
        let spec = format!("{mode}:{}:{}:{}", m.dev(), m.ino(), path.display());
        env.run(
            "none.sock",
            &[
                "__release-after-exit",
                "--detached",
                "--pid",
                "4294967294",
                "--lease",
                &spec,
            ],
        )
    };
    std::fs::create_dir_all(env.files_lockspace()).unwrap();
    std::fs::write(&lease, b"").unwrap();
    ok(release_after("exclusive", &lease));
    assert!(
        !lease.exists(),
        "a free lease file of the held inode is removed"
    );
    let d = env.daemon("a.sock");
    let sleeper = Sleeper::new();
    ok(env.run("a.sock", &["acquire", "--pid", &sleeper.pid(), &disk]));
    for mode in ["exclusive", "shared"] {
        ok(release_after(mode, &lease));
        assert!(lease.exists(), "{mode}: a lease someone holds stays");
    }
    let o = ok(env.run("none.sock", &["inspect", "--json", &disk]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["holders"][0]["pid"],
        d.child.id(),
        "the holder's record stays"
    );
    drop(sleeper);
    wait_until("the daemon releases it", || !lease.exists());
    std::fs::write(&lease, b"").unwrap();
    {
        use std::os::unix::fs::MetadataExt as _;
        let m = std::fs::metadata(&lease).unwrap();
        let spec = format!("exclusive:{}:{}:{}", m.dev(), m.ino() + 1, lease.display());
        ok(env.run(
            "none.sock",
            &[
                "__release-after-exit",
                "--detached",
                "--pid",
                "4294967294",
                "--lease",
                &spec,
            ],
        ));
    }
    assert!(
        lease.exists(),
        "another inode at the path is not ours to remove"
    );
}

#[test]
fn lease_file_faults() {
    let env = Env::new();
    let disk = env.disk("vm.img");
    // Find the lease name, then plant a symlink there.
    let o = ok(env.run("none.sock", &["lookup", "--json", &disk]));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    let lease = PathBuf::from(v[0]["lease"].as_str().unwrap());
    std::fs::create_dir_all(env.files_lockspace()).unwrap();
    std::os::unix::fs::symlink(env.path("elsewhere"), &lease).unwrap();
    let o = env.run("none.sock", &["run", "--disk", &disk, "--", "true"]);
    assert_eq!(code(&o), 1);
    assert!(
        stderr(&o).contains("is a symbolic link; refusing to follow it"),
        "{}",
        stderr(&o)
    );
    assert!(!env.path("elsewhere").exists(), "the symlink was followed");
    let _a = env.daemon("a.sock");
    let o = env.run("a.sock", &["acquire", &disk]);
    assert_eq!(code(&o), 1);
    assert!(stderr(&o).contains("symbolic link"), "{}", stderr(&o));
    // A stale lease file (a crashed holder's) is free.
    std::fs::remove_file(&lease).unwrap();
    std::fs::write(&lease, "{\"not\": \"ours\"}\n").unwrap();
    ok(env.run("none.sock", &["run", "--disk", &disk, "--", "true"]));
    // A lockspace that cannot be created.
    let bad = Env::with_conf("");
    std::fs::write(bad.path("ls"), "a file where the lockspace should be").unwrap();
    let d = bad.disk("vm.img");
    let o = bad.run("none.sock", &["run", "--disk", &d, "--", "true"]);
    assert_eq!(code(&o), 1);
    assert_stderr_has(&o, "cannot create lockspace directory");
}

#[test]
fn root_read_only_lockspace_is_a_clear_error() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a read-only tmpfs in a private mount namespace and must run as root"
    );
    let env = Env::new();
    let disk = env.disk("vm.img");
    let ls = env.path("ls");
    std::fs::create_dir_all(&ls).unwrap();
    let script = format!(
        "mount -t tmpfs -o ro tmpfs {} && exec {} --config {} --socket /nonexistent.sock run --disk {} -- true",
        ls.display(),
        BIN,
        env.path("disklock.conf").display(),
        disk
    );
    let o = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c", &script])
        .output()
        .unwrap();
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_stderr_has(&o, "is on a read-only file system");
}

#[test]
fn protocol_is_varlink_and_bounded() {
    let env = Env::new();
    let a = env.daemon("a.sock");
    let v = a.call(b"{\"method\":\"org.varlink.service.GetInfo\"}\0");
    assert!(
        v["parameters"]["interfaces"]
            .as_array()
            .unwrap()
            .contains(&"io.disklock.Lease".into())
    );
    let v = a.call(b"{\"method\":\"org.varlink.service.GetInterfaceDescription\",\"parameters\":{\"interface\":\"io.disklock.Lease\"}}\0");
    assert_eq!(
        v["parameters"]["description"].as_str().unwrap(),
        std::fs::read_to_string(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/io.disklock.Lease.varlink"
        ))
        .unwrap()
    );
    let v = a.call(b"{\"method\":\"io.disklock.Lease.Version\"}\0");
    assert_eq!(v["parameters"]["protocol"], 1);
    let v = a.call(b"{\"method\":\"io.disklock.Lease.Nope\",\"parameters\":{}}\0");
    assert_eq!(v["error"], "org.varlink.service.MethodNotFound");
    // What is no Varlink call is a protocol error: the connection ends without a reply.
    let mut s = UnixStream::connect(&a.socket).unwrap();
    s.write_all(b"not json\0").unwrap();
    let mut rest = Vec::new();
    // Closed with the message unread: the end of the stream, or a reset.
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);
    assert!(rest.is_empty());
    let v = a.call(b"{\"method\":\"io.disklock.Lease.Acquire\",\"parameters\":{\"disks\":[],\"owner\":{\"name\":\"x\",\"uuid\":\"u\",\"pid\":1}}}\0");
    assert_eq!(v["error"], "org.varlink.service.InvalidParameter");
    assert_eq!(v["parameters"]["parameter"], "disks");
    let v = a.call(b"{\"method\":\"io.disklock.Lease.Acquire\",\"parameters\":{\"disks\":[{\"path\":\"/x\",\"mode\":\"exclusive\"}],\"owner\":{\"name\":\"x\",\"uuid\":\"u\",\"pid\":4194305}}}\0");
    assert_eq!(v["error"], "io.disklock.Lease.InvalidOwner");
    // An oversized message gets an error and the connection is closed.
    let mut s = UnixStream::connect(&a.socket).unwrap();
    let big = vec![b' '; 70 * 1024];
    let _ = s.write_all(&big);
    let v = read_reply(&mut s);
    assert_eq!(v["error"], "io.disklock.Lease.RequestTooLarge");
    let mut rest = Vec::new();
    assert_eq!(s.read_to_end(&mut rest).unwrap_or(0), 0);
    // A client that disconnects mid-request leaves nothing behind.
    {
        let mut s = UnixStream::connect(&a.socket).unwrap();
        s.write_all(b"{\"method\":\"io.disklock.Lease.Acq").unwrap();
    }
    // Two calls on one connection, pipelined.
    let mut s = UnixStream::connect(&a.socket).unwrap();
    s.write_all(
        b"{\"method\":\"io.disklock.Lease.Status\"}\0{\"method\":\"io.disklock.Lease.Version\"}\0",
    )
    .unwrap();
    assert_eq!(
        read_reply(&mut s)["parameters"]["leases"],
        Value::Array(vec![])
    );
    assert_eq!(read_reply(&mut s)["parameters"]["protocol"], 1);
    // A call split across writes (the daemon sees its first half alone), then 500 calls in
    // one write (more than the daemon reads at a time): every one answered, in order.
    let call = b"{\"method\":\"io.disklock.Lease.Version\"}\0";
    s.write_all(&call[..10]).unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.write_all(&call[10..]).unwrap();
    assert_eq!(read_reply(&mut s)["parameters"]["protocol"], 1);
    let many: Vec<u8> = call
        .iter()
        .copied()
        .cycle()
        .take(call.len() * 500)
        .collect();
    assert!(many.len() > 16 * 1024);
    let writer = {
        let mut s = s.try_clone().unwrap();
        std::thread::spawn(move || s.write_all(&many).unwrap())
    };
    for _ in 0..500 {
        assert_eq!(read_reply(&mut s)["parameters"]["protocol"], 1);
    }
    writer.join().unwrap();
}

#[test]
fn thousands_of_leases() {
    const N: usize = 2000;
    let env = Env::new();
    let disks: Vec<String> = (0..N).map(|i| env.disk(&format!("d{i}.img"))).collect();
    let _a = env.daemon("a.sock");
    let _b = env.daemon("b.sock");
    let owner = Sleeper::new();
    let pid = owner.pid();
    // Requests are bounded (64 KiB): a few hundred disks at a time, one owner.
    for chunk in disks.chunks(250) {
        let mut args = vec![
            "acquire", "--owner", "many", "--uuid", "u-many", "--json", "--pid", &pid,
        ];
        args.extend(chunk.iter().map(String::as_str));
        let o = ok(env.run("a.sock", &args));
        let v: Value = serde_json::from_slice(&o.stdout).unwrap();
        assert_eq!(v["leases"].as_array().unwrap().len(), chunk.len());
    }
    // One request over the bounds is refused as a whole: by the CLI for its disk count, by
    // the daemon for its size.
    let mut args = vec!["acquire", "--pid", &pid];
    args.extend(disks.iter().map(String::as_str));
    let o = env.run("a.sock", &args);
    assert_eq!(code(&o), 2);
    assert_stderr_has(&o, "2000 disks: one request takes at most 1024");
    let long: Vec<String> = disks[..1024]
        .iter()
        .map(|d| format!("{}/{d}", "/.".repeat(20)))
        .collect();
    let mut args = vec!["acquire", "--pid", &pid];
    args.extend(long.iter().map(String::as_str));
    let o = env.run("a.sock", &args);
    assert_eq!(code(&o), 2);
    assert_stderr_has(&o, "request larger than 65536 bytes");
    assert_eq!(status_json(&env, "a.sock").len(), N);
    assert_eq!(env.lease_files(), N);
    // Every one of them is busy for the other daemon.
    let o = env.run("b.sock", &["acquire", "--pid", &pid, &disks[N - 1]]);
    assert_eq!(code(&o), 3);
    let o = ok(env.run("a.sock", &["release", "--owner", "many"]));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), N);
    assert_eq!(env.lease_files(), 0);
}

#[test]
fn release_errors() {
    let env = Env::new();
    let disk = env.disk("x.img");
    let _a = env.daemon("a.sock");
    let o = env.run("a.sock", &["release", &disk]);
    assert_eq!(code(&o), 1);
    assert_stderr_has(&o, "not held by this daemon");
    let o = env.run("a.sock", &["release", "--owner", "nobody"]);
    assert_eq!(code(&o), 1);
    assert_stderr_has(&o, "owner nobody: holds no lease");
}

/// The lockspace path is what the daemon writes the holder into: not used by other tests.
#[test]
fn lease_file_mode_and_lockspace_mode() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    let disk = env.disk("x.img");
    let _a = env.daemon("a.sock");
    let owner = Sleeper::new();
    ok(env.run("a.sock", &["acquire", "--pid", &owner.pid(), &disk]));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&env.files_lockspace()), 0o700);
    let lease = std::fs::read_dir(env.files_lockspace())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    assert_eq!(mode(&lease), 0o600);
    assert_eq!(mode(&env.path("a.sock")), 0o600);
}

/// SO_PEERCRED: a client that is not root acts only for processes of its own uid (the
/// owner process's uid is the owner of `/proc/PID`); root acts for anyone.
#[test]
fn root_non_root_peers_act_only_for_their_own_processes() {
    let env = Env::new();
    let disk = env.disk("vm.img");
    let other_disk = env.disk("other.img");
    // uid 65534 may open both disks (it may lease no other): what is tested here is for
    // whom it acts.
    chmod(Path::new(&disk), 0o666);
    chmod(Path::new(&other_disk), 0o666);
    let _a = env.daemon_open_to_others("a.sock");
    let root_owner = Sleeper::new();
    let nobody_owner = Sleeper::nobody();
    // uid 65534 may not acquire for root's process.
    let o = as_nobody(
        &env,
        "a.sock",
        &[
            "acquire",
            "--owner",
            "intruder",
            "--pid",
            &root_owner.pid(),
            &disk,
        ],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_stderr_has(
        &o,
        &format!(
            "permission denied: uid 65534 may not acquire for pid {} (owned by uid 0)",
            root_owner.pid()
        ),
    );
    assert!(status_json(&env, "a.sock").is_empty(), "nothing was taken");
    assert_eq!(env.lease_files(), 0);
    // It may for its own process, and release that again.
    ok(as_nobody(
        &env,
        "a.sock",
        &[
            "acquire",
            "--owner",
            "mine",
            "--uuid",
            "u-nobody",
            "--pid",
            &nobody_owner.pid(),
            &other_disk,
        ],
    ));
    let st = status_json(&env, "a.sock");
    assert_eq!(st.len(), 1);
    assert_eq!(st[0]["owners"][0]["uuid"], "u-nobody");
    // Root's lease, which uid 65534 may neither release nor take over by owner name.
    ok(env.run(
        "a.sock",
        &[
            "acquire",
            "--owner",
            "rootvm",
            "--uuid",
            "u-root",
            "--pid",
            &root_owner.pid(),
            &disk,
        ],
    ));
    let o = as_nobody(&env, "a.sock", &["release", &disk]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_stderr_has(&o, "permission denied: uid 65534 may not release");
    let o = as_nobody(&env, "a.sock", &["release", "--owner", "rootvm"]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_stderr_has(
        &o,
        "permission denied: uid 65534 may not release owner rootvm: it belongs to another uid",
    );
    assert!(!stderr(&o).contains("u-root"), "{}", stderr(&o));
    // Nor act under root's owner uuid for its own process.
    let o = as_nobody(
        &env,
        "a.sock",
        &[
            "acquire",
            "--owner",
            "rootvm",
            "--uuid",
            "u-root",
            "--pid",
            &nobody_owner.pid(),
            &other_disk,
        ],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_eq!(status_json(&env, "a.sock").len(), 2);
    ok(as_nobody(&env, "a.sock", &["release", &other_disk]));
    // Root may release anyone's.
    ok(env.run("a.sock", &["release", &disk]));
    assert!(status_json(&env, "a.sock").is_empty());
    assert_eq!(env.lease_files(), 0);
}

/// `Type=notify`: READY=1 reaches `$NOTIFY_SOCKET` once the socket accepts connections, and
/// STOPPING=1 when the daemon is told to stop.
#[test]
fn daemon_tells_systemd_when_it_listens() {
    use std::os::unix::net::UnixDatagram;
    let env = Env::new();
    let notify_path = env.path("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let socket = env.path("a.sock");
    let log = env.path("a.sock.log");
    let child = env
        .cmd("a.sock")
        .arg("daemon")
        .env("NOTIFY_SOCKET", &notify_path)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut d = Daemon {
        child,
        socket: socket.clone(),
        log,
    };
    let mut buf = [0u8; 4096];
    let n = notify.recv(&mut buf).expect("READY=1 within 20 s");
    // Connectable the moment READY=1 arrives: no retry.
    UnixStream::connect(&socket).expect("the socket accepts connections after READY=1");
    let msg = String::from_utf8_lossy(&buf[..n]).into_owned();
    let lines: Vec<&str> = msg.lines().collect();
    assert!(lines.contains(&"READY=1"), "{msg}");
    assert!(
        lines.contains(&format!("MAINPID={}", d.child.id()).as_str()),
        "{msg}"
    );
    ok(env.run("a.sock", &["status"]));
    d.stop();
    let n = notify.recv(&mut buf).expect("STOPPING=1");
    assert_eq!(&buf[..n], b"STOPPING=1");
}

/// The shipped unit file passes `systemd-analyze verify` (ExecStart pointed at the binary
/// under test, as the unit names the installed path).
#[test]
fn systemd_unit_verifies() {
    let unit = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/systemd/disklock.service"
    ))
    .unwrap();
    assert!(unit.contains("\nType=notify\n"));
    assert!(unit.contains("\nExecStart=/usr/bin/disklock daemon\n"));
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("disklock.service");
    std::fs::write(
        &path,
        unit.replace(
            "ExecStart=/usr/bin/disklock daemon",
            &format!("ExecStart={BIN} daemon"),
        ),
    )
    .unwrap();
    let o = Command::new("systemd-analyze")
        .args(["verify", "--man=no"])
        .arg(&path)
        .output()
        .expect("systemd-analyze (Debian package systemd; scripts/deps.sh test installs it)");
    let err = stderr(&o);
    // Complaints about units the host lacks are not ours; any line naming our unit is.
    let ours: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("disklock.service"))
        .collect();
    assert!(o.status.success() && ours.is_empty(), "{err}");
}

/// Waits until `inspect` sees the lease of `disk` locked (by another process), without
/// taking it (a probing acquire could win the race against the holder being waited for).
fn wait_locked(env: &Env, disk: &str) {
    wait_until("the lease is locked", || {
        let o = env.run("none.sock", &["inspect", "--json", disk]);
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let v = if v.is_array() { v[0].clone() } else { v };
        v["lock"].is_object()
    });
}

/// Write-locks byte `byte` of `path` in this (the test's) process, as another holder would;
/// the lock lasts as long as the returned file.
fn lock_byte(path: &Path, byte: i64) -> std::fs::File {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap();
    let fl = libc::flock {
        l_type: i16::try_from(libc::F_WRLCK).unwrap(),
        l_whence: i16::try_from(libc::SEEK_SET).unwrap(),
        l_start: byte,
        l_len: 1,
        l_pid: 0,
    };
    nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_SETLK(&fl)).unwrap();
    file
}

#[test]
fn a_release_never_removes_a_lease_file_it_does_not_hold() {
    // Issue 15, 1: hold I as A; rename A's lease file away; a second process creates and
    // locks a new file at the path; A's release must leave that file, or a third process
    // would take I while the second still holds it.
    let env = Env::new();
    let disk = env.disk("vm.img");
    let lease = lease_of(&env, &disk);
    let _d = env.daemon("a.sock");
    let owner = Sleeper::new();
    let pid = owner.pid();
    ok(env.run("a.sock", &["acquire", "--owner", "A", "--pid", &pid, &disk]));
    let moved = lease.with_extension("moved");
    std::fs::rename(&lease, &moved).unwrap();
    let mut second = env
        .cmd("none.sock")
        .args(["run", "--no-daemon", "--disk", &disk, "--", "sleep", "30"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_locked(&env, &disk);
    ok(env.run("a.sock", &["release", "--owner", "A"]));
    assert!(
        lease.exists(),
        "A's release removed the second holder's lease file"
    );
    let third = env.run(
        "none.sock",
        &["run", "--no-daemon", "--disk", &disk, "--", "true"],
    );
    assert_eq!(
        code(&third),
        3,
        "a third holder got the disk: {}",
        stderr(&third)
    );
    let _ = second.kill();
    let _ = second.wait();
}

#[test]
fn a_hard_link_in_the_lockspace_is_never_written() {
    // Issue 15, 2: a hard link planted at a lease path must not lead a holder record into
    // the file it links to.
    let env = Env::new();
    let disk = env.disk("vm.img");
    let lease = lease_of(&env, &disk);
    std::fs::create_dir_all(env.files_lockspace()).unwrap();
    let victim = env.path("passwd-copy");
    std::fs::write(&victim, "root:x:0:0\n").unwrap();
    std::fs::hard_link(&victim, &lease).unwrap();
    let o = env.run(
        "none.sock",
        &["run", "--no-daemon", "--disk", &disk, "--", "true"],
    );
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_stderr_has(&o, "has 2 links");
    let _d = env.daemon("a.sock");
    let owner = Sleeper::new();
    let pid = owner.pid();
    let o = env.run("a.sock", &["acquire", "--owner", "A", "--pid", &pid, &disk]);
    assert_eq!(code(&o), 1, "{}", stderr(&o));
    assert_stderr_has(&o, "refusing to write to it");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), "root:x:0:0\n");
}

#[test]
fn a_lock_on_the_holder_record_stalls_nothing() {
    // Issue 15, 4: another process sits on byte 1 of a shared lease file (the holder
    // record's lock); a shared acquire, status and releases still answer at once.
    let env = Env::new();
    let disk = env.disk("vm.img");
    let lease = lease_of(&env, &disk);
    std::fs::create_dir_all(env.files_lockspace()).unwrap();
    std::fs::write(&lease, "").unwrap();
    let file = lock_byte(&lease, 1);
    let d = env.daemon("a.sock");
    let owner = Sleeper::new();
    let pid = owner.pid();
    // Each call must finish within 5 s (it used to wait for byte 1 for as long as it was held).
    let bounded = |args: &[&str]| env.run_within(Duration::from_secs(5), "a.sock", args);
    ok(bounded(&[
        "acquire", "--shared", "--owner", "A", "--pid", &pid, &disk,
    ]));
    ok(bounded(&["status"]));
    ok(bounded(&["release", "--owner", "A"]));
    let log = std::fs::read_to_string(&d.log).unwrap();
    assert!(log.contains("holder-not-updated"), "{log}");
    drop(file);
}

#[test]
fn holder_records_cannot_drive_the_terminal() {
    // Issue 15, 7: a lease body is written by any host; what `inspect` and busy messages
    // print of it has its control characters escaped.
    let env = Env::new();
    let disk = env.disk("vm.img");
    let lease = lease_of(&env, &disk);
    std::fs::create_dir_all(env.files_lockspace()).unwrap();
    let body = "{\"host\":\"h\\u001b]0;pwned\\u0007\",\"host_id\":\"x\",\"pid\":1,\"mode\":\"exclusive\",\
                \"since\":1,\"version\":\"0\",\"disk\":\"/d\",\"owners\":[{\"name\":\"vm\\u001b[2J\",\"uuid\":\"u\",\"pid\":1}]}\n";
    std::fs::write(&lease, body).unwrap();
    let file = lock_byte(&lease, 0);
    let o = ok(env.run("none.sock", &["inspect", &disk]));
    let out = String::from_utf8(o.stdout).unwrap();
    assert!(!out.contains('\u{1b}') && !out.contains('\u{7}'), "{out:?}");
    assert!(
        out.contains("vm\\u{1b}[2J") && out.contains("as the lease file says"),
        "{out}"
    );
    let o = env.run(
        "none.sock",
        &["run", "--no-daemon", "--disk", &disk, "--", "true"],
    );
    assert_eq!(code(&o), 3, "{}", stderr(&o));
    let err = stderr(&o);
    assert!(!err.contains('\u{1b}'), "{err:?}");
    assert!(
        err.contains(&format!(
            "the kernel's lock owner: pid {}",
            std::process::id()
        )),
        "{err}"
    );
    drop(file);
}

#[test]
fn a_lockspace_others_can_write_is_refused() {
    // Issue 15, 3: a world- or group-writable lockspace without the sticky bit lets any local
    // user rename, plant or lock lease files.
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new();
    let disk = env.disk("vm.img");
    std::fs::create_dir_all(env.files_lockspace()).unwrap();
    let set = |mode: u32| {
        std::fs::set_permissions(env.files_lockspace(), std::fs::Permissions::from_mode(mode))
            .unwrap();
    };
    for mode in [0o777, 0o770] {
        set(mode);
        let o = env.run(
            "none.sock",
            &["run", "--no-daemon", "--disk", &disk, "--", "true"],
        );
        assert_eq!(code(&o), 1, "{}", stderr(&o));
        assert_stderr_has(&o, "without the sticky bit");
        assert_eq!(
            env.lease_files(),
            0,
            "nothing created in an unsafe lockspace"
        );
    }
    // Sticky (as /tmp): others may create but not rename or remove our files.
    set(0o1777);
    ok(env.run(
        "none.sock",
        &["run", "--no-daemon", "--disk", &disk, "--", "true"],
    ));
    set(0o700);
    ok(env.run(
        "none.sock",
        &["run", "--no-daemon", "--disk", &disk, "--", "true"],
    ));
}

/// Unmounts on drop (lazily, so a failed test cannot leave it busy).
struct Mounted(PathBuf);

impl Drop for Mounted {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

#[test]
fn root_a_full_lockspace_follows_one_rule() {
    // Issue 15, 6: with no room for a holder record, every way of taking a lease behaves
    // alike: the lease is held (the lock is what excludes), the record is missing, and
    // `inspect` says what the kernel knows instead of blaming another tool.
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test mounts a full tmpfs as the lockspace: run it as root"
    );
    let env = Env::new();
    let disk = env.disk("vm.img");
    let other = env.disk("other.img");
    let ls = env.files_lockspace();
    std::fs::create_dir_all(&ls).unwrap();
    let mounted = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8k,mode=0700", "tmpfs"])
        .arg(&ls)
        .status()
        .unwrap();
    assert!(mounted.success(), "mount tmpfs on {}", ls.display());
    let _m = Mounted(ls.clone());
    // Fill it: writes fail with ENOSPC from here on.
    let mut fill = std::fs::File::create(ls.join("filler")).unwrap();
    let block = [0u8; 4096];
    while fill.write_all(&block).is_ok() {}
    let e = fill.write_all(&block).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");

    // Daemonless run: the command runs holding the lease; inspect names the kernel's owner.
    let mut run = env
        .cmd("none.sock")
        .args(["run", "--no-daemon", "--disk", &disk, "--", "sleep", "30"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_locked(&env, &disk);
    let o = ok(env.run("none.sock", &["inspect", &disk]));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("none recorded in the lease file; the kernel's lock owner is pid"),
        "{out}"
    );
    let _ = run.kill();
    let _ = run.wait();

    // The daemon: exclusive and shared acquires both succeed without a record.
    let d = env.daemon("a.sock");
    let owner = Sleeper::new();
    ok(env.run(
        "a.sock",
        &["acquire", "--owner", "x", "--pid", &owner.pid(), &disk],
    ));
    ok(env.run(
        "a.sock",
        &[
            "acquire",
            "--shared",
            "--owner",
            "s",
            "--pid",
            &owner.pid(),
            &other,
        ],
    ));
    let busy = env.run(
        "none.sock",
        &["run", "--no-daemon", "--disk", &other, "--", "true"],
    );
    assert_eq!(
        code(&busy),
        3,
        "the shared lease excludes a writer: {}",
        stderr(&busy)
    );
    ok(env.run("a.sock", &["release", "--owner", "x"]));
    ok(env.run("a.sock", &["release", "--owner", "s"]));
    drop(d);
}

/// A lease whose file is removed or replaced behind the daemon's back is lost: `status`
/// marks it, and an owner that asked for `--on-lost kill` is killed (it must write no more:
/// another process or host can take the disk now); one that did not is left running.
#[test]
fn a_lost_lease_kills_the_owner_that_asked_for_it() {
    let env = Env::with_conf("lease_check_interval = 1\n");
    let _a = env.daemon("a.sock");
    let (d1, d2) = (env.disk("1.img"), env.disk("2.img"));
    let mut killed = Sleeper::new();
    let mut kept = Sleeper::new();
    ok(env.run(
        "a.sock",
        &["acquire", "--on-lost", "kill", "--pid", &killed.pid(), &d1],
    ));
    ok(env.run("a.sock", &["acquire", "--pid", &kept.pid(), &d2]));
    // One lease file removed, the other replaced by another file of the same name.
    std::fs::remove_file(lease_of(&env, &d1)).unwrap();
    let l2 = lease_of(&env, &d2);
    std::fs::remove_file(&l2).unwrap();
    std::fs::write(&l2, b"").unwrap();
    wait_until("the owner that asked is killed", || {
        killed.0.try_wait().unwrap().is_some()
    });
    wait_until("the other lease shows lost", || {
        status_json(&env, "a.sock")
            .iter()
            .any(|l| l["disk"] == d2.as_str() && l["lost"].is_string())
    });
    assert!(
        kept.0.try_wait().unwrap().is_none(),
        "an owner that did not ask is not killed"
    );
    let st = status_json(&env, "a.sock");
    let lost = st.iter().find(|l| l["disk"] == d2.as_str()).unwrap();
    assert!(
        lost["lost"].as_str().unwrap().contains("another file"),
        "{lost}"
    );
    // Log lines are written in batches, a moment after their events.
    wait_until("the loss and the kill are logged", || {
        let log = std::fs::read_to_string(env.path("a.sock.log")).unwrap();
        log.contains("lease-lost") && log.contains("lost-kill")
    });
    kept.kill9();
    // The killed owner's lease went with it.
    wait_until("every lease is released", || {
        status_json(&env, "a.sock").is_empty()
    });
}
