//! SCSI-3 persistent reservations through disklock on real kernel devices, two hosts on one
//! SAN, with `sg_persist` in the guests as the oracle after every step:
//!
//! 1. the `disklock pr` admin tool: register, reserve (B's writes fenced, reads allowed),
//!    status/keys/reservation/capabilities JSON equal to what `sg_persist` reads, release;
//! 2. the lease daemon: A's acquire registers and reserves, B's acquire is refused (exit 3)
//!    naming A's key and host id, A's release frees the disk, B's owner dying frees it;
//! 3. takeover: A holds and loses power, B's `acquire --preempt` takes the disk and writes
//!    (timed from the command's start to the first write that succeeds);
//!
//! and on tgt also: 4. the daemon re-reserves after a target restart wiped the PR state;
//! 5. a two-path multipath map: both paths registered, a path dropped and restored is
//! registered again by the daemon; and the latency benchmark `disklock-pr-bench`.
//!
//! One rig per target kind; the scenarios run in sequence, the takeover last (it powers
//! host A off).

#![cfg(disklock_vm)]

mod common;

use std::time::{Duration, Instant};

use common::{
    DISKLOCK_CONF, NOW_NS, SgKeys, SgReservation, host_id_key, owner_process, parse_key, pr_config,
    sg_capabilities, sg_keys, sg_reservation, start_daemon,
};
use disklock_vm_harness::{Host, Output, Result, Rig, TargetKind, note, timed};

/// `host_id = 1` on host A, 2 on host B.
const KEY_A: u64 = host_id_key(1);
const KEY_B: u64 = host_id_key(2);
/// Write Exclusive, Registrants Only: disklock's default `pr_type`.
const WE_RO: u8 = 5;
/// Where the benchmark program (`src/bin/disklock-pr-bench.rs`, release build) goes in the
/// guests.
const BENCH_BIN: &str = "/usr/local/bin/disklock-pr-bench";
/// The daemon's `pr_check_interval` in the tgt rig (1 s); the LIO rig runs with the
/// default (10 s, the key left out), so the fencing scenario runs with both.
const CHECK_SECS: u32 = 1;
const DEFAULT_CHECK_SECS: u32 = 10;

fn check_secs(kind: TargetKind) -> u32 {
    match kind {
        TargetKind::Tgt => CHECK_SECS,
        TargetKind::Lio => DEFAULT_CHECK_SECS,
    }
}

fn dd_write(dev: &str, sector: u32) -> String {
    format!(
        "dd if=/dev/zero of={} bs=512 count=1 seek={sector} oflag=direct",
        common::dev_path(dev)
    )
}

fn dd_read(dev: &str, sector: u32) -> String {
    format!(
        "dd if={} of=/dev/null bs=512 count=1 skip={sector} iflag=direct",
        common::dev_path(dev)
    )
}

/// `disklock ARGS` on `h` must succeed and print JSON.
fn dl_json(h: &Host, args: &str) -> Result<serde_json::Value> {
    let out = h.run_ok(&format!("disklock {args}"))?;
    Ok(serde_json::from_str(&out)
        .unwrap_or_else(|e| panic!("disklock {args}: not JSON ({e}): {out}")))
}

/// `0x444c4b4800000001` as disklock prints keys.
fn key_text(key: u64) -> String {
    format!("{key:#018x}")
}

/// `h`'s write to `dev` fails with a reservation conflict (kernel log).
fn assert_fenced(h: &Host, dev: &str, sector: u32) -> Result<()> {
    h.run_ok("dmesg -c > /dev/null")?;
    let w = h.run(&dd_write(dev, sector))?;
    assert!(
        !w.success(),
        "{}'s write to {dev} must be fenced: {w:?}",
        h.name()
    );
    let log = h.run_ok("dmesg -c")?;
    assert!(
        log.contains("reservation conflict"),
        "{}'s failed write must be a reservation conflict; kernel log: {log}",
        h.name()
    );
    Ok(())
}

/// Asks `cond` every 200 ms until it holds or `limit` has passed (then panics with the last
/// state seen); a failing probe counts as "not yet". Returns how long it took.
fn wait_for<T: std::fmt::Debug>(
    what: &str,
    limit: Duration,
    mut probe: impl FnMut() -> Result<T>,
    cond: impl Fn(&T) -> bool,
) -> Duration {
    let t = Instant::now();
    loop {
        let seen = probe();
        if let Ok(v) = &seen
            && cond(v)
        {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < limit,
            "{what}: not within {limit:?}; last seen: {seen:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Both oracles at once.
fn sg_state(h: &Host, dev: &str) -> Result<(SgKeys, SgReservation)> {
    Ok((sg_keys(h, dev)?, sg_reservation(h, dev)?))
}

/// The SCSI code of disklock's short type names.
fn type_code(short: &str) -> u8 {
    match short {
        "we" => 1,
        "ea" => 3,
        "we-ro" => 5,
        "ea-ro" => 6,
        "we-ar" => 7,
        "ea-ar" => 8,
        other => panic!("unknown type name {other:?}"),
    }
}

fn opt_key(v: &serde_json::Value) -> Option<u64> {
    v.as_str().map(parse_key)
}

/// `disklock pr --json status|keys|reservation` on `h` say what `sg_persist` says.
fn assert_json_matches_oracle(kind: TargetKind, h: &Host, dev: &str, ours: u64) -> Result<()> {
    let (sk, sr) = sg_state(h, dev)?;
    let mut want_keys = sk.keys.clone();
    want_keys.sort_unstable();
    let keys_of = |rows: &serde_json::Value| -> Vec<u64> {
        let mut k: Vec<u64> = rows
            .as_array()
            .expect("an array of registrations")
            .iter()
            .map(|r| parse_key(r["key"].as_str().expect("key")))
            .collect();
        k.sort_unstable();
        k
    };
    let holder_of = |r: &serde_json::Value| -> Option<(u64, u8)> {
        opt_key(&r["holder"]).map(|k| {
            let code = r["type_code"].as_u64().expect("type_code");
            (k, u8::try_from(code).expect("type code"))
        })
    };

    let st = dl_json(h, &format!("pr --json status {}", common::dev_path(dev)))?;
    assert_eq!(keys_of(&st["registrations"]), want_keys, "status: {st}");
    assert_eq!(holder_of(&st["reservation"]), sr.holder, "status: {st}");
    assert_eq!(
        st["reservation"]["generation"].as_u64(),
        Some(u64::from(sr.generation)),
        "status: {st}"
    );
    assert_eq!(
        st["registered_here"].as_u64(),
        Some(sk.count(ours) as u64),
        "status: {st}"
    );
    assert_eq!(st["host_key"]["key"], key_text(ours), "status: {st}");
    if let Some((k, code)) = sr.holder {
        assert_eq!(
            st["reservation"]["type"].as_str().map(type_code),
            Some(code)
        );
        let host = st["reservation"]["host"].as_str().unwrap_or_default();
        if k == ours {
            assert!(host.contains("this host"), "{st}");
        } else if k == KEY_A || k == KEY_B {
            let id = if k == KEY_A { 1 } else { 2 };
            assert_eq!(host, format!("host id {id}"), "{st}");
        }
    }

    let keys = dl_json(h, &format!("pr --json keys {}", common::dev_path(dev)))?;
    assert_eq!(keys_of(&keys), want_keys, "keys: {keys}");
    let res = dl_json(
        h,
        &format!("pr --json reservation {}", common::dev_path(dev)),
    )?;
    assert_eq!(holder_of(&res), sr.holder, "reservation: {res}");
    assert_eq!(
        res["generation"].as_u64(),
        Some(u64::from(sr.generation)),
        "{res}"
    );

    // The initiators: READ FULL STATUS on LIO, nothing on tgt (it lacks the command).
    let rows = keys.as_array().expect("rows");
    match kind {
        TargetKind::Lio => {
            let full = common::sg_persist(h, &format!("-n -s {}", common::dev_path(dev)))?;
            for r in rows {
                let ini = r["initiator"].as_str().unwrap_or_else(|| panic!("{r}"));
                assert!(
                    ini.starts_with(disklock_vm_harness::INITIATOR_PREFIX),
                    "{r}"
                );
                assert!(full.contains(ini), "sg_persist -s lists {ini}: {full}");
                let key = parse_key(r["key"].as_str().expect("key"));
                assert_eq!(
                    r["holder"].as_bool(),
                    Some(sr.holder.is_some_and(|(k, _)| k == key)),
                    "{r}"
                );
            }
        }
        TargetKind::Tgt => {
            for r in rows {
                assert!(r["initiator"].is_null() && r["holder"].is_null(), "{r}");
            }
        }
    }
    Ok(())
}

/// Scenario 1: the admin tool, `disklock pr`, on A's `da` / B's `db` (one LUN).
fn admin_tool(kind: TargetKind, a: &Host, da: &str, b: &Host, db: &str) -> Result<()> {
    assert!(
        sg_keys(b, db)?.keys.is_empty(),
        "the LUN starts without registrations"
    );
    let key = dl_json(a, "pr --json key")?;
    assert_eq!(key["key"], key_text(KEY_A), "{key}");
    assert_eq!(key["from"]["host_id"], 1, "{key}");

    // ---- capabilities: the same bits sg_persist -c decodes ----
    let caps = dl_json(a, &format!("pr --json capabilities /dev/{da}"))?;
    let (bits, sg_types) = sg_capabilities(a, da)?;
    for (field, abbr) in [
        ("crh", "CRH"),
        ("sip_c", "SIP_C"),
        ("atp_c", "ATP_C"),
        ("ptpl_c", "PTPL_C"),
        ("ptpl_a", "PTPL_A"),
    ] {
        assert_eq!(
            caps[field].as_bool(),
            bits.get(abbr).map(|v| *v == 1),
            "{field} vs sg_persist's {abbr}: {caps} / {bits:?}"
        );
    }
    assert_eq!(
        caps["allow_commands"].as_u64(),
        bits.get("Allow Commands").map(|v| u64::from(*v)),
        "{caps} / {bits:?}"
    );
    let mut types: Vec<u8> = caps["types"]
        .as_array()
        .expect("types")
        .iter()
        .map(|t| type_code(t.as_str().expect("type name")))
        .collect();
    types.sort_unstable();
    assert_eq!(types, sg_types, "{caps}");
    assert_eq!(caps["type_mask"], "0xea01", "{caps}");
    assert_eq!(
        caps["ptpl_c"].as_bool(),
        Some(kind == TargetKind::Lio),
        "persist through power loss: LIO yes, tgt no: {caps}"
    );

    // ---- register on A: both hosts see A's key ----
    a.run_ok(&format!("disklock pr register /dev/{da}"))?;
    assert_eq!(sg_keys(a, da)?.keys, vec![KEY_A]);
    assert_eq!(sg_keys(b, db)?.keys, vec![KEY_A]);
    // registering again is idempotent (REGISTER AND IGNORE EXISTING KEY)
    a.run_ok(&format!("disklock pr register /dev/{da}"))?;
    assert_eq!(sg_keys(b, db)?.keys, vec![KEY_A]);

    // ---- reserve: Write Exclusive, Registrants Only, held by A's key ----
    let out = a.run_ok(&format!("disklock pr reserve /dev/{da}"))?;
    assert!(out.contains("we-ro"), "{out}");
    assert_eq!(sg_reservation(a, da)?.holder, Some((KEY_A, WE_RO)));
    assert_eq!(sg_reservation(b, db)?.holder, Some((KEY_A, WE_RO)));
    let check = a.run(&format!("disklock pr check --held we-ro /dev/{da}"))?;
    assert!(
        check.success() && check.stdout.contains("no drift"),
        "{check:?}"
    );

    // ---- B (not registered) is fenced for writes, reads stay allowed; A writes ----
    assert_fenced(b, db, 200)?;
    b.run_ok(&dd_read(db, 200))?;
    a.run_ok(&dd_write(da, 201))?;

    // ---- B's reserve is a conflict that names A ----
    let r = b.run(&format!("disklock pr reserve /dev/{db}"))?;
    assert_eq!(r.rc, 3, "reservation conflict: exit 3: {r:?}");
    assert!(
        r.stderr
            .contains(&format!("key {} (host id 1)", key_text(KEY_A))),
        "B's refusal names A's key and host id: {}",
        r.stderr
    );
    assert_eq!(
        sg_keys(b, db)?.keys,
        vec![KEY_A],
        "a refused reserve leaves nothing"
    );
    let lookup = b.run_ok(&format!("disklock lookup --pr /dev/{db}"))?;
    assert!(
        lookup.contains(&format!("we-ro {} [host id 1]", key_text(KEY_A)))
            && lookup.contains(&key_text(KEY_B)),
        "lookup --pr shows B's key and A as the holder: {lookup}"
    );

    // ---- the JSON views equal sg_persist's, from both hosts ----
    assert_json_matches_oracle(kind, a, da, KEY_A)?;
    assert_json_matches_oracle(kind, b, db, KEY_B)?;

    // ---- release and unregister leave nothing; B writes again ----
    let out = a.run_ok(&format!("disklock pr release /dev/{da}"))?;
    assert!(out.contains("released we-ro"), "{out}");
    assert_eq!(sg_reservation(b, db)?.holder, None);
    assert_eq!(sg_keys(b, db)?.keys, vec![KEY_A]);
    a.run_ok(&format!("disklock pr unregister /dev/{da}"))?;
    let (k, r) = sg_state(b, db)?;
    assert!(k.keys.is_empty() && r.holder.is_none(), "{k:?} {r:?}");
    b.run_ok(&dd_write(db, 202))?;
    assert_json_matches_oracle(kind, b, db, KEY_B)?;

    // ---- APTPL: LIO keeps it (PTPL_A turns on), tgt refuses it (ILLEGAL REQUEST) ----
    let out = a.run(&format!("disklock pr register --aptpl /dev/{da}"))?;
    match kind {
        TargetKind::Lio => {
            assert!(out.success(), "LIO takes APTPL: {out:?}");
            let (bits, _) = sg_capabilities(b, db)?;
            assert_eq!(bits.get("PTPL_A"), Some(&1), "PTPL_A after APTPL: {bits:?}");
            let v = dl_json(a, &format!("pr --json capabilities /dev/{da}"))?;
            assert_eq!(v["ptpl_a"], true, "{v}");
        }
        TargetKind::Tgt => {
            assert_eq!(out.rc, 1, "tgt refuses APTPL: {out:?}");
            assert!(out.stderr.contains("rejected"), "{out:?}");
        }
    }
    a.run_ok(&format!("disklock pr unregister /dev/{da}"))?;
    let (k, r) = sg_state(b, db)?;
    assert!(k.count(KEY_A) == 0 && r.holder.is_none(), "{k:?} {r:?}");
    Ok(())
}

/// `disklock acquire` for a fresh owner process on `h`; the owner's pid and the output.
fn acquire(h: &Host, dev: &str, extra: &str) -> Result<(u32, Output)> {
    let owner = owner_process(h)?;
    let out = h.run(&format!(
        "disklock acquire {extra} --owner vm-on-{} --pid {owner} {}",
        h.name(),
        common::dev_path(dev)
    ))?;
    Ok((owner, out))
}

/// Like [`acquire`], which must succeed.
fn acquire_ok(h: &Host, dev: &str) -> Result<u32> {
    let (owner, out) = acquire(h, dev, "")?;
    assert!(out.success(), "{} acquires {dev}: {out:?}", h.name());
    Ok(owner)
}

/// Scenario 2: leases through the daemon with persistent reservations on.
fn daemon_path(a: &Host, da: &str, b: &Host, db: &str) -> Result<()> {
    let owner_a = timed("step A acquires", || acquire_ok(a, da))?;
    let (k, r) = sg_state(b, db)?;
    assert_eq!(k.keys, vec![KEY_A], "A registered its one path");
    assert_eq!(r.holder, Some((KEY_A, WE_RO)), "A reserved we-ro");
    a.run_ok(&dd_write(da, 210))?;
    assert_fenced(b, db, 211)?;

    // ---- B is refused: exit 3, naming A's key and host id; B leaves no trace ----
    let (owner_b, out) = timed("step B's acquire", || acquire(b, db, ""))?;
    assert_eq!(out.rc, 3, "B's acquire of a disk A reserved: {out:?}");
    let said = out.combined();
    assert!(
        said.contains(&key_text(KEY_A)) && said.contains("host id 1"),
        "B's refusal names A's key and host id: {said}"
    );
    assert_eq!(
        sg_keys(b, db)?.keys,
        vec![KEY_A],
        "a refused acquire registers nothing"
    );
    b.run_ok(&format!("kill {owner_b}"))?;

    // ---- A releases: nothing left; B acquires ----
    a.run_ok(&format!("disklock release /dev/{da}"))?;
    let (k, r) = sg_state(b, db)?;
    assert!(
        k.keys.is_empty() && r.holder.is_none(),
        "release = RELEASE + unregister: {k:?} {r:?}"
    );
    a.run_ok(&format!("kill {owner_a}"))?;
    let owner_b = acquire_ok(b, db)?;
    let (k, r) = sg_state(a, da)?;
    assert_eq!((k.keys, r.holder), (vec![KEY_B], Some((KEY_B, WE_RO))));
    b.run_ok(&dd_write(db, 212))?;
    assert_fenced(a, da, 213)?;

    // ---- B's owner exits: the daemon releases and unregisters ----
    b.run_ok(&format!("kill {owner_b}"))?;
    let took = wait_for(
        "B's reservation gone after its owner died",
        Duration::from_secs(20),
        || sg_state(a, da),
        |(k, r)| k.keys.is_empty() && r.holder.is_none(),
    );
    note(format!(
        "owner death → reservation released in {:.2} s",
        took.as_secs_f64()
    ));
    Ok(())
}

/// Scenario 3: A holds `da` and loses power; B takes the disk with `acquire --preempt` and
/// writes. Powers A off.
fn takeover(kind: TargetKind, a: &Host, da: &str, b: &Host, db: &str) -> Result<()> {
    acquire_ok(a, da)?;
    assert_eq!(sg_reservation(b, db)?.holder, Some((KEY_A, WE_RO)));
    assert_fenced(b, db, 220)?;
    timed("step power off A", || a.power_off());

    let owner = owner_process(b)?;
    let dev = common::dev_path(db);
    let out = b.run(&format!(
        "t0=$({NOW_NS})\n\
         disklock acquire --preempt --owner vm-on-{name} --pid {owner} {dev} > /tmp/preempt.out 2>&1 \
           || {{ rc=$?; cat /tmp/preempt.out >&2; exit $rc; }}\n\
         t1=$({NOW_NS})\n\
         i=0; until dd if=/dev/zero of={dev} bs=512 count=1 seek=221 oflag=direct 2>/dev/null; do\n\
           [ $i -ge 500 ] && {{ echo 'no successful write within 5 s of the takeover' >&2; exit 1; }}\n\
           usleep 10000; i=$((i + 1))\n\
         done\n\
         t2=$({NOW_NS})\n\
         echo $t0 $t1 $t2 $i\n\
         cat /tmp/preempt.out >&2",
        name = b.name()
    ))?;
    assert!(out.success(), "B's takeover: {out:?}");
    let t: Vec<u64> = out
        .stdout
        .split_whitespace()
        .map(|w| w.parse().expect("a number"))
        .collect();
    let [t0, t1, t2, retries] = t[..] else {
        panic!("timestamps: {:?}", out.stdout)
    };
    let ms = |ns: u64| ns as f64 / 1e6;
    note(format!(
        "MEASURED: takeover on {kind:?}: `acquire --preempt` {:.1} ms, to B's first successful write {:.1} ms ({retries} write retries); output: {}",
        ms(t1 - t0),
        ms(t2 - t0),
        out.stderr.trim()
    ));

    let (k, r) = sg_state(b, db)?;
    assert_eq!(r.holder, Some((KEY_B, WE_RO)), "B holds the disk: {r:?}");
    assert!(!k.keys.contains(&KEY_A), "A's key was preempted: {k:?}");
    assert_eq!(k.count(KEY_B), 1, "{k:?}");
    // The daemon logs how it preempted: PREEMPT AND ABORT on LIO; tgt lacks it, so PREEMPT.
    let log = b.run_ok("grep pr-preempt /tmp/daemon.log")?;
    let (aborted, fell_back) = match kind {
        TargetKind::Lio => (true, false),
        TargetKind::Tgt => (false, true),
    };
    assert!(
        log.contains(&format!("aborted={aborted}"))
            && log.contains(&format!("fell_back={fell_back}"))
            && log.contains(&key_text(KEY_A)),
        "{kind:?}: aborted={aborted} fell_back={fell_back} expected: {log}"
    );
    b.run_ok(&dd_write(db, 222))?;
    Ok(())
}

/// Key of a third host that registered and crashed (planted by hand from B's nexus).
const KEY_C: u64 = 0xcccc_0000_0000_0003;

/// Scenario (issue 14): a host another host preempted stays fenced. A holds `da` with a
/// writer running; the writer is frozen (a hung host), B takes the disk with `acquire
/// --preempt`, the writer is thawed. Over three check intervals A's key never comes back,
/// none of the writer's writes after the takeover is acknowledged, A's own writes fail,
/// and A's daemon reports the lease lost. Then a third host's stale registration: an
/// exclusive acquire refuses it (exit 3, naming the key) and `--preempt` removes it.
fn fenced_stays_fenced(check: u32, a: &Host, da: &str, b: &Host, db: &str) -> Result<()> {
    let (pa, pb) = (common::dev_path(da), common::dev_path(db));
    let owner_a = acquire_ok(a, da)?;
    // The writer: one 512-byte O_DIRECT write of its sequence number every 20 ms, logging
    // `try N` before and `ok N` after a write that was acknowledged. SIGSTOP can land between
    // a write's acknowledgement and its `ok` line, so what counts is when a write *began*:
    // after the writer is frozen the log cannot grow, and any `try` past that point began
    // after the takeover.
    a.write_file(
        "/tmp/writer.sh",
        format!(
            "i=0\n\
             while :; do\n\
               i=$((i + 1))\n\
               echo try $i >> /tmp/writer.log\n\
               printf 'A%07d' $i | dd of={pa} bs=512 count=1 seek=400 conv=sync oflag=direct 2>/dev/null \
                 && echo ok $i >> /tmp/writer.log\n\
               usleep 20000\n\
             done\n"
        )
        .as_bytes(),
    )?;
    a.run_ok(
        "rm -f /tmp/writer.log\n\
         setsid sh /tmp/writer.sh </dev/null >/dev/null 2>&1 &\n\
         echo $! > /tmp/writer.pid",
    )?;
    wait_for(
        "A's writer writes while A holds the disk",
        Duration::from_secs(10),
        || a.run("grep -c ok /tmp/writer.log"),
        |o| o.stdout.trim().parse::<u32>().unwrap_or(0) > 0,
    );
    a.run_ok("kill -STOP -$(cat /tmp/writer.pid)")?;
    // The log as the frozen writer left it.
    std::thread::sleep(Duration::from_millis(200));
    let frozen_lines = a.run_ok("cat /tmp/writer.log")?.lines().count();
    let out = timed("step B preempts A", || {
        b.run(&format!(
            "disklock acquire --preempt --owner vm-on-{} --pid $(sleep 1000000 >/dev/null 2>&1 & echo $!) {pb}",
            b.name()
        ))
    })?;
    assert!(out.success(), "B's acquire --preempt: {out:?}");
    // B's mark on the sector the writer writes: whatever reaches the disk from A after the
    // takeover overwrites it.
    let mark = |h: &Host, dev: &str| -> Result<String> {
        h.run_ok(&format!(
            "dd if={dev} bs=512 count=1 skip=400 iflag=direct 2>/dev/null | head -c 8"
        ))
    };
    b.run_ok(&format!(
        "printf 'B-HOLDS!' | dd of={pb} bs=512 count=1 seek=400 conv=sync oflag=direct 2>/dev/null"
    ))?;
    assert_eq!(mark(b, &pb)?, "B-HOLDS!");
    a.run_ok("kill -CONT -$(cat /tmp/writer.pid)")?;
    // Three check intervals and a little more: A's key never reappears.
    let t = Instant::now();
    let mut polls = 0;
    while t.elapsed() < Duration::from_secs(u64::from(check) * 3 + 1) {
        let (k, r) = sg_state(b, db)?;
        assert_eq!(
            k.count(KEY_A),
            0,
            "A's key came back after B's preempt: {k:?}"
        );
        assert_eq!(r.holder, Some((KEY_B, WE_RO)), "{r:?}");
        polls += 1;
        std::thread::sleep(Duration::from_millis(300));
    }
    a.run_ok("kill -KILL -$(cat /tmp/writer.pid) || true")?;
    let log = a.run_ok("cat /tmp/writer.log")?;
    let lines: Vec<&str> = log.lines().collect();
    // Writes begun after the takeover (their `try` line is past the frozen log) …
    let begun_after: Vec<&str> = lines[frozen_lines.min(lines.len())..]
        .iter()
        .filter_map(|l| l.strip_prefix("try "))
        .collect();
    // … and of those, the acknowledged ones.
    let acked_after = lines
        .iter()
        .filter_map(|l| l.strip_prefix("ok "))
        .filter(|n| begun_after.contains(n))
        .count();
    let acked_before = lines.iter().filter(|l| l.starts_with("ok ")).count() - acked_after;
    let on_disk = mark(b, &pb)?;
    note(format!(
        "MEASURED: fenced host: A's key absent in {polls} polls over {:.1} s after B's preempt; A's writes begun after the takeover: {} tried, {acked_after} acknowledged ({acked_before} acknowledged before); the sector B marked reads {on_disk:?}",
        t.elapsed().as_secs_f64(),
        begun_after.len(),
    ));
    assert!(
        !begun_after.is_empty(),
        "the thawed writer kept trying: {log}"
    );
    assert_eq!(
        acked_after, 0,
        "A's frozen writer got writes acknowledged after B's takeover: {log}"
    );
    assert_eq!(
        on_disk, "B-HOLDS!",
        "a write of A's reached the disk after B took it"
    );
    assert_fenced(a, da, 401)?;
    let lost = a.run_ok("grep 'pr-lost' /tmp/daemon.log")?;
    assert!(
        lost.contains(&key_text(KEY_B)),
        "A's daemon names B's key: {lost}"
    );
    let st = dl_json(a, "status --json")?;
    let l = st
        .as_array()
        .and_then(|v| v.first())
        .unwrap_or_else(|| panic!("A still holds its lease: {st}"));
    assert!(
        l["lost"].as_str().is_some_and(|w| w.contains("fenced")),
        "status marks the lease lost: {st}"
    );
    // `pr check --repair` by hand does not register A again either.
    let out = a.run(&format!("disklock pr check --repair --held we-ro {pa}"))?;
    assert!(!out.success() && out.stdout.contains("fenced"), "{out:?}");
    assert_eq!(sg_keys(b, db)?.count(KEY_A), 0);
    // A's owner releases: B's reservation is untouched.
    a.run_ok(&format!("disklock release {pa}"))?;
    a.run_ok(&format!("kill {owner_a}"))?;
    assert_eq!(sg_reservation(b, db)?.holder, Some((KEY_B, WE_RO)));
    b.run_ok(&format!("disklock release --owner vm-on-{}", b.name()))?;
    let (k, r) = sg_state(b, db)?;
    assert!(k.keys.is_empty() && r.holder.is_none(), "{k:?} {r:?}");

    // ---- B takes the disk and leaves it at once: empty, but not a target restart ----
    let owner_a = acquire_ok(a, da)?;
    b.run_ok(&format!(
        "p=$(sleep 1000000 >/dev/null 2>&1 & echo $!)\n\
         disklock acquire --preempt --owner grab --pid $p {pb} && disklock release {pb}; kill $p"
    ))?;
    let empty = sg_keys(b, db)?;
    note(format!(
        "MEASURED: after B preempted and released, the disk is empty at PR generation {} (a restart resets it to 0)",
        empty.generation
    ));
    assert!(empty.generation > 0, "{empty:?}");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(u64::from(check) * 3 + 1) {
        let (k, r) = sg_state(b, db)?;
        assert!(
            k.keys.is_empty() && r.holder.is_none(),
            "A took back a disk it was fenced from: {k:?} {r:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let st = dl_json(a, "status --json")?;
    assert!(st[0]["lost"].is_string(), "A's lease is marked lost: {st}");
    a.run_ok(&format!("disklock release {pa}"))?;
    a.run_ok(&format!("kill {owner_a}"))?;

    // ---- a third host's stale registration (planted from B's nexus) ----
    b.run_ok(&format!(
        "sg_persist -n --out --register --param-sark={KEY_C:#x} {pb}"
    ))?;
    b.run_ok(&dd_write(db, 402))?;
    let (owner, out) = acquire(a, da, "")?;
    assert_eq!(
        out.rc, 3,
        "A's exclusive acquire with a stale registration: {out:?}"
    );
    assert!(out.combined().contains(&key_text(KEY_C)), "{out:?}");
    assert_eq!(
        sg_keys(b, db)?.keys,
        vec![KEY_C],
        "the refusal registers nothing"
    );
    a.run_ok(&format!("kill {owner}"))?;
    let (owner, out) = acquire(a, da, "--preempt")?;
    assert!(out.success(), "{out:?}");
    let (k, r) = sg_state(b, db)?;
    assert_eq!((k.keys, r.holder), (vec![KEY_A], Some((KEY_A, WE_RO))));
    assert_fenced(b, db, 403)?;
    a.run_ok(&format!("disklock release {pa}"))?;
    a.run_ok(&format!("kill {owner}"))?;
    Ok(())
}

/// Scenario (tgt, issue 14): a path that comes back on a fenced host stays unregistered.
/// A holds the two-path map `id`; B preempts A through its own path; A drops a path,
/// restores it (a new nexus) and reloads the map: over three check intervals A's key
/// never appears on the disk.
fn fenced_path_stays_unregistered(a: &Host, b: &Host, id: &str) -> Result<()> {
    let dev = format!("/dev/mapper/{id}");
    let pb = common::dev_path(&b.lun_disk(2, 0)?);
    let owner_a = acquire_ok(a, &dev)?;
    assert_eq!(sg_keys(b, &b.lun_disk(2, 0)?)?.count(KEY_A), 2);
    let out = b.run(&format!(
        "disklock acquire --preempt --owner vm-on-{} --pid $(sleep 1000000 >/dev/null 2>&1 & echo $!) {pb}",
        b.name()
    ))?;
    assert!(out.success(), "B's acquire --preempt: {out:?}");
    timed("step drop path", || a.drop_path(2, 1))?;
    timed("step restore path", || a.restore_path(2, 1))?;
    let map = timed("step multipath reload", || a.multipath_create(&[id]))?.remove(0);
    assert_eq!(map.slaves.len(), 2, "{map:?}");
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(u64::from(CHECK_SECS) * 3 + 1) {
        let k = sg_keys(b, &b.lun_disk(2, 0)?)?;
        assert_eq!(
            k.count(KEY_A),
            0,
            "the fenced host registered a path: {k:?}"
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let log = a.run_ok("grep -E 'pr-lost|pr-path-added' /tmp/daemon.log || true")?;
    assert!(
        log.contains("pr-lost"),
        "A's daemon reports the map lost: {log}"
    );
    a.run_ok(&format!("disklock release {dev}"))?;
    a.run_ok(&format!("kill {owner_a}"))?;
    b.run_ok(&format!("disklock release --owner vm-on-{}", b.name()))?;
    let k = sg_keys(b, &b.lun_disk(2, 0)?)?;
    assert!(k.keys.is_empty(), "{k:?}");
    Ok(())
}

/// Waits (bounded) until `dev` answers TEST UNIT READY after a target restart.
/// Scenario: `disklock run` without a daemon reserves the disk for its command's lifetime;
/// `disklock fence id:1` takes it from A while A's command runs (A's writes fail from then
/// on); A's releaser, when the command exits, leaves B's reservation alone; and an
/// uncontested `run` leaves nothing registered once its command is gone.
fn run_and_fence(a: &Host, da: &str, b: &Host, db: &str) -> Result<()> {
    let (pa, pb) = (common::dev_path(da), common::dev_path(db));
    a.run_ok(&format!(
        "(disklock run --no-daemon --disk {pa} -- sleep 4 </dev/null >/tmp/run.log 2>&1 &)"
    ))?;
    wait_for(
        "A's run reserves the disk",
        Duration::from_secs(10),
        || sg_state(b, db),
        |(k, r)| k.count(KEY_A) == 1 && r.holder == Some((KEY_A, WE_RO)),
    );
    assert_fenced(b, db, 600)?;
    let out = timed("step B fences host id 1", || {
        b.run(&format!("disklock fence --json id:1 {pb}"))
    })?;
    assert!(out.success(), "fence: {out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("fence JSON");
    assert_eq!(v[0]["victim"], key_text(KEY_A), "{v}");
    let (k, r) = sg_state(b, db)?;
    assert_eq!(k.count(KEY_A), 0, "A's key is gone: {k:?}");
    assert_eq!(r.holder, Some((KEY_B, WE_RO)), "B holds: {r:?}");
    assert_fenced(a, da, 601)?;
    b.run_ok(&dd_write(db, 602))?;
    // A's command ends; its releaser must not disturb B's reservation.
    wait_for(
        "A's run command exits",
        Duration::from_secs(15),
        || {
            a.run(
                "for p in /proc/[0-9]*; do tr '\\0' ' ' < $p/cmdline 2>/dev/null; echo; done \
                 | grep '^sleep 4 ' || true",
            )
        },
        |o| o.stdout.trim().is_empty(),
    );
    std::thread::sleep(Duration::from_millis(500));
    let (k, r) = sg_state(b, db)?;
    assert_eq!(
        r.holder,
        Some((KEY_B, WE_RO)),
        "B still holds after A's release: {r:?} {k:?}"
    );
    b.run_ok(&format!(
        "disklock pr release {pb} && disklock pr unregister {pb}"
    ))?;
    // Uncontested: reserved while the command runs, nothing left after.
    let out = a.run(&format!(
        "disklock run --no-daemon --disk {pa} -- sh -c 'sg_persist -n -r {pa} | grep -q 0x444c4b4800000001'"
    ))?;
    assert!(out.success(), "the command sees A's reservation: {out:?}");
    wait_for(
        "A's releaser unregisters after the command",
        Duration::from_secs(10),
        || sg_state(b, db),
        |(k, r)| k.keys.is_empty() && r.holder.is_none(),
    );
    Ok(())
}

fn wait_until_ready(h: &Host, dev: &str) -> Result<()> {
    h.run_ok(&format!(
        "i=0; while [ $i -lt 300 ]; do sg_turs {} 2>/dev/null && exit 0; usleep 100000; i=$((i+1)); done; \
         echo 'no TEST UNIT READY within 30 s' >&2; exit 1",
        common::dev_path(dev)
    ))?;
    Ok(())
}

/// Scenario 4 (tgt): the daemon puts A's registration and reservation back after tgtd
/// restarted and forgot them.
fn target_restart(rig: &Rig, a: &Host, da: &str, b: &Host, db: &str) -> Result<()> {
    let owner = acquire_ok(a, da)?;
    assert_eq!(sg_reservation(b, db)?.holder, Some((KEY_A, WE_RO)));
    let t = Instant::now();
    let took = rig.target().restart()?;
    note(format!("target restart: {:.2} s", took.as_secs_f64()));
    wait_until_ready(b, db)?;
    let repaired = wait_for(
        "A's daemon repairs its reservation after the target restart",
        Duration::from_secs(30 + u64::from(CHECK_SECS) * 3),
        || sg_state(b, db),
        |(k, r)| r.holder == Some((KEY_A, WE_RO)) && k.count(KEY_A) == 1,
    );
    note(format!(
        "MEASURED: reservation repaired {:.2} s after the target restart began (pr_check_interval {CHECK_SECS} s; polled from B for {:.2} s)",
        t.elapsed().as_secs_f64(),
        repaired.as_secs_f64()
    ));
    assert_fenced(b, db, 230)?;
    a.run_ok(&dd_write(da, 231))?;
    a.run_ok(&format!("disklock release /dev/{da}"))?;
    a.run_ok(&format!("kill {owner}"))?;
    let (k, r) = sg_state(b, db)?;
    assert!(k.keys.is_empty() && r.holder.is_none(), "{k:?} {r:?}");
    Ok(())
}

/// The two-path multipath map of LUN 2 on `h`: its name (the WWID) and device.
fn multipath_map(h: &Host) -> Result<(String, String)> {
    let id = h.scsi_id(&h.lun_disk(2, 0)?)?;
    let map = timed("step multipath", || h.multipath_create(&[&id]))?.remove(0);
    assert_eq!(map.slaves.len(), 2, "{map:?}");
    let dev = format!("/dev/mapper/{id}");
    Ok((id, dev))
}

/// Scenario 5 (tgt): A acquires the two-path map `id` through the daemon: both paths are
/// registered; a path dropped and restored (a new iSCSI session, a new disk) is registered
/// again by the daemon.
fn multipath(a: &Host, b: &Host, id: &str) -> Result<()> {
    let dev = format!("/dev/mapper/{id}");
    let p0 = a.lun_disk(2, 0)?;
    let owner = timed("step A acquires the map", || acquire_ok(a, &dev))?;
    let (k, r) = sg_state(a, &p0)?;
    assert_eq!(k.count(KEY_A), 2, "one registration per path: {k:?}");
    assert_eq!(r.holder, Some((KEY_A, WE_RO)));
    let st = dl_json(a, &format!("pr --json status {dev}"))?;
    assert_eq!(st["paths"].as_array().map(Vec::len), Some(2), "{st}");
    assert_eq!(st["registered_here"], 2, "{st}");
    // Each path is registered: each one can write under Registrants Only.
    for i in 0..2 {
        a.run_ok(&dd_write(&a.lun_disk(2, i)?, 300))?;
    }
    assert_fenced(b, &b.lun_disk(2, 0)?, 301)?;

    // ---- drop path 1, restore it (a new session, a new disk), reload the map ----
    let survivor = p0;
    timed("step drop path", || a.drop_path(2, 1))?;
    // SPC keeps a registration when its I_T nexus goes away. QEMU's iSCSI client logs in
    // with a new ISID, so the restored path is a new nexus and the old one's registration
    // stays behind on tgt ("dead" here): the key count alone cannot show the new path.
    let dead = sg_keys(a, &survivor)?.count(KEY_A).saturating_sub(1);
    note(format!(
        "after dropping a path, tgt keeps {dead} registration(s) of its gone nexus"
    ));
    timed("step restore path", || a.restore_path(2, 1))?;
    let back = a.lun_disk(2, 1)?;
    let t = Instant::now();
    let map = timed("step multipath reload", || a.multipath_create(&[id]))?.remove(0);
    assert!(map.slaves.contains(&back), "{map:?} has {back}");
    // Registered again = A's key once more, and the restored path itself may write.
    let took = wait_for(
        "the restored path is registered again (A's key count, a write through it)",
        Duration::from_secs(30 + u64::from(CHECK_SECS) * 3),
        || {
            let k = sg_keys(a, &survivor)?;
            let w = a.run(&dd_write(&back, 302))?;
            Ok((k.count(KEY_A), w.success()))
        },
        |(n, wrote)| *n == 2 + dead && *wrote,
    );
    note(format!(
        "MEASURED: restored path registered again {:.2} s after the map reload ({:.2} s polling; pr_check_interval {CHECK_SECS} s)",
        t.elapsed().as_secs_f64(),
        took.as_secs_f64()
    ));
    let check = a.run(&format!("disklock pr check --json --held we-ro {dev}"))?;
    let v: serde_json::Value = serde_json::from_str(&check.stdout)
        .unwrap_or_else(|e| panic!("pr check --json: {e}: {check:?}"));
    let drift: Vec<&str> = v["drift"]
        .as_array()
        .expect("drift")
        .iter()
        .filter_map(|d| d["drift"].as_str())
        // the gone nexus's registration counts as one more than the paths
        .filter(|d| !(dead > 0 && *d == "extra_registrations"))
        .collect();
    assert!(drift.is_empty(), "no drift on the map: {check:?}");
    assert_eq!(
        sg_reservation(b, &b.lun_disk(2, 0)?)?.holder,
        Some((KEY_A, WE_RO))
    );

    a.run_ok(&format!("disklock release {dev}"))?;
    a.run_ok(&format!("kill {owner}"))?;
    let (k, r) = sg_state(a, &survivor)?;
    assert!(r.holder.is_none(), "{r:?}");
    assert_eq!(
        k.count(KEY_A),
        dead,
        "release unregisters every live path (what is left is the gone nexus's): {k:?}"
    );
    Ok(())
}

/// The latency benchmark on `dev`'s paths, printed; checks only that it measured.
fn bench(h: &Host, dev: &str) -> Result<()> {
    let before = sg_keys(h, dev)?;
    let out = timed("step pr-bench", || {
        h.run_ok(&format!(
            "{BENCH_BIN} --json --iterations 200 --spawns 20 {dev}"
        ))
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("disklock-pr-bench: {e}: {out}"));
    let paths = v["paths"].as_array().map_or(0, Vec::len);
    note(format!(
        "MEASURED: pr-bench ran the {} build of disklock",
        v["build"].as_str().unwrap_or("?")
    ));
    let rows = v["rows"].as_array().expect("rows");
    let p50 = |s: &serde_json::Value| s["p50_us"].as_f64().unwrap_or(f64::NAN);
    for r in rows {
        let ours = p50(&r["disklock"]);
        assert!(ours.is_finite() && ours > 0.0, "{r}");
        assert_eq!(r["disklock"]["samples"].as_u64().map(|n| n > 0), Some(true));
        match r.get("baseline").filter(|b| !b.is_null()) {
            Some(base) => {
                assert!(p50(base).is_finite() && p50(base) > 0.0, "{r}");
                note(format!(
                    "MEASURED: pr-bench {} ({} path(s)): {} p50 {:.0} µs p99 {:.0} µs; {} p50 {:.0} µs p99 {:.0} µs; ratio {:.3}",
                    r["name"].as_str().unwrap_or("?"),
                    paths,
                    r["what"].as_str().unwrap_or("?"),
                    ours,
                    r["disklock"]["p99_us"].as_f64().unwrap_or(f64::NAN),
                    r["baseline_name"].as_str().unwrap_or("?"),
                    p50(base),
                    base["p99_us"].as_f64().unwrap_or(f64::NAN),
                    r["ratio_p50"].as_f64().unwrap_or(f64::NAN)
                ));
            }
            None => note(format!(
                "MEASURED: pr-bench {} ({} path(s)): {} p50 {:.0} µs p99 {:.0} µs",
                r["name"].as_str().unwrap_or("?"),
                paths,
                r["what"].as_str().unwrap_or("?"),
                ours,
                r["disklock"]["p99_us"].as_f64().unwrap_or(f64::NAN)
            )),
        }
    }
    let names: Vec<&str> = rows.iter().filter_map(|r| r["name"].as_str()).collect();
    for want in [
        "read_keys",
        "read_reservation",
        "register_ignore",
        "register_all",
        "read_keys_vs_spawn",
    ] {
        assert!(names.contains(&want), "{want} missing: {out}");
    }
    let speedup = v["sg_persist_speedup"].as_f64().unwrap_or(f64::NAN);
    assert!(speedup.is_finite() && speedup > 0.0, "{out}");
    note(format!(
        "MEASURED: pr-bench READ KEYS in-process {speedup:.0}x faster than spawning sg_persist"
    ));
    assert_eq!(
        sg_keys(h, dev)?.keys,
        before.keys,
        "the benchmark leaves the registrations as it found them"
    );
    Ok(())
}

/// Boots two hosts with per-host PR configurations and a daemon each.
fn pr_rig(kind: TargetKind) -> Result<Rig> {
    let mut builder = Rig::builder()
        .name(match kind {
            TargetKind::Tgt => "pr-tgt",
            TargetKind::Lio => "pr-lio",
        })
        .target_kind(kind)
        .hosts(2)
        .disklock(common::disklock_bin());
    // The benchmark program, built by run-tests.sh.
    match std::env::var_os("DISKLOCK_PR_BENCH_BIN").filter(|v| !v.is_empty()) {
        Some(bench) => builder = builder.program(bench, BENCH_BIN),
        None => panic!("DISKLOCK_PR_BENCH_BIN is not set: run through vm-harness/run-tests.sh"),
    }
    builder = match kind {
        // LUN 1: one path (scenarios 1-4); LUN 2: two paths (multipath, benchmark).
        TargetKind::Tgt => builder.luns(2).lun_paths(2, 2).udev(true),
        TargetKind::Lio => builder.luns(1),
    };
    let rig = builder.start()?;
    for (i, h) in rig.hosts().iter().enumerate() {
        let id = u16::try_from(i + 1).expect("host id");
        let mut conf = pr_config(id, check_secs(kind));
        if kind == TargetKind::Lio {
            // The default interval: the key left out.
            conf = conf
                .lines()
                .filter(|l| !l.starts_with("pr_check_interval"))
                .map(|l| format!("{l}\n"))
                .collect();
        }
        h.write_file(DISKLOCK_CONF, conf.as_bytes())?;
        start_daemon(h)?;
    }
    Ok(rig)
}

#[test]
fn pr_on_tgt() -> Result<()> {
    let _t = common::TestTimer::start("pr_on_tgt");
    let rig = pr_rig(TargetKind::Tgt)?;
    let (a, b) = (rig.host(0), rig.host(1));
    let (da, db) = (a.lun_disk(1, 0)?, b.lun_disk(1, 0)?);
    timed("scenario admin tool", || {
        admin_tool(TargetKind::Tgt, a, &da, b, &db)
    })?;
    timed("scenario daemon", || daemon_path(a, &da, b, &db))?;
    timed("scenario target restart", || {
        target_restart(&rig, a, &da, b, &db)
    })?;
    timed("scenario run and fence", || run_and_fence(a, &da, b, &db))?;
    timed("scenario fenced stays fenced", || {
        fenced_stays_fenced(CHECK_SECS, a, &da, b, &db)
    })?;
    let (id, map) = multipath_map(a)?;
    bench(a, &map)?;
    timed("scenario fenced path stays unregistered", || {
        fenced_path_stays_unregistered(a, b, &id)
    })?;
    timed("scenario multipath", || multipath(a, b, &id))?;
    timed("scenario takeover", || {
        takeover(TargetKind::Tgt, a, &da, b, &db)
    })?;
    Ok(())
}

#[test]
fn pr_on_lio() -> Result<()> {
    let _t = common::TestTimer::start("pr_on_lio");
    let rig = pr_rig(TargetKind::Lio)?;
    let (a, b) = (rig.host(0), rig.host(1));
    let (da, db) = (a.lun_disk(1, 0)?, b.lun_disk(1, 0)?);
    timed("scenario admin tool", || {
        admin_tool(TargetKind::Lio, a, &da, b, &db)
    })?;
    timed("scenario daemon", || daemon_path(a, &da, b, &db))?;
    timed("scenario run and fence", || run_and_fence(a, &da, b, &db))?;
    timed("scenario fenced stays fenced", || {
        fenced_stays_fenced(DEFAULT_CHECK_SECS, a, &da, b, &db)
    })?;
    timed("scenario takeover", || {
        takeover(TargetKind::Lio, a, &da, b, &db)
    })?;
    Ok(())
}
