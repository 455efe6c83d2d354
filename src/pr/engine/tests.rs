//! The engine against the simulated logical unit: hosts with one or two paths each.

use std::sync::Arc;

use disklock_scsi::pr::{PrType, ReservationKey};
use proptest::prelude::*;

use super::*;
use disklock_testkit::sim::{Lu, SimPath};

const WERO: PrType = PrType::WriteExclusiveRegistrantsOnly;
const WEAR: PrType = PrType::WriteExclusiveAllRegistrants;

/// Host `h` (keys 0x…h) with `n` paths; nexus numbers are `h * 10 + i`.
fn host(lu: &Arc<Lu>, h: u32, n: u32) -> (ReservationKey, Vec<Path<SimPath>>) {
    let key = ReservationKey(crate::pr::hostkey::from_host_id(u16::try_from(h).unwrap()));
    let paths = (0..n)
        .map(|i| {
            let name = format!("sd{}{}", char::from(b'a' + u8::try_from(h).unwrap()), i);
            Path {
                dev: lu.path(h * 10 + i),
                name,
            }
        })
        .collect();
    (key, paths)
}

#[test]
fn exclusive_acquire_registers_every_path_and_fences_others() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 2);
    let (b, pb) = host(&lu, 2, 1);
    let got = acquire(&pa, a, WERO).unwrap();
    assert_eq!(
        got,
        Acquired {
            kind: WERO,
            reserved: true
        }
    );
    assert_eq!(lu.keys(), [a.0, a.0]);
    assert_eq!(lu.reservation(), Some((a.0, WERO)));
    // Both of A's paths may write (registrants only); B may not.
    assert!(lu.may_write(10) && lu.may_write(11));
    assert!(!lu.may_write(20));
    // B is refused with A's key named, and leaves no trace on the disk.
    let e = acquire(&pb, b, WERO).unwrap_err();
    assert!(
        matches!(e, PrError::Busy { holder: Some(k), .. } if k == a),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        "reserved by key 0x444c4b4800000001 (host id 1) (Write Exclusive, Registrants Only)"
    );
    assert_eq!(lu.keys(), [a.0, a.0]);
    // Our key already on the disk is never joined: a host with A's key (or A after a
    // crash) is refused, and the disk stays as it was.
    let (_, twin) = host(&lu, 9, 1);
    let e = acquire(&twin, a, WERO).unwrap_err();
    assert!(matches!(e, PrError::KeyInUse { found: 2, .. }), "{e}");
    assert!(
        e.to_string()
            .contains("another host may be configured with the same key")
    );
    assert_eq!(lu.keys(), [a.0, a.0]);
    assert_eq!(lu.reservation(), Some((a.0, WERO)));
    // A releases: nothing left; B gets it.
    release(&pa, a).unwrap();
    assert_eq!(lu.keys(), Vec::<u64>::new());
    assert_eq!(lu.reservation(), None);
    acquire(&pb, b, WERO).unwrap();
    assert_eq!(lu.reservation(), Some((b.0, WERO)));
}

#[test]
fn exclusive_is_refused_while_shared_and_vice_versa() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    let (b, pb) = host(&lu, 2, 2);
    let (c, pc) = host(&lu, 3, 1);
    acquire(&pa, a, WEAR).unwrap();
    assert!(!acquire(&pb, b, WEAR).unwrap().reserved);
    assert_eq!(lu.reservation(), Some((0, WEAR)));
    assert!(lu.may_write(10) && lu.may_write(20) && lu.may_write(21));
    assert!(!lu.may_write(30));
    let e = acquire(&pc, c, WERO).unwrap_err();
    match &e {
        PrError::Busy {
            holder: None,
            sharers,
            ..
        } => assert_eq!(sharers, &[a, b, b]),
        other => panic!("{other}"),
    }
    // One sharer leaving keeps the reservation for the other.
    release(&pa, a).unwrap();
    assert_eq!(lu.reservation(), Some((0, WEAR)));
    assert!(lu.may_write(20));
    release(&pb, b).unwrap();
    assert_eq!(lu.reservation(), None);
    // Now exclusive holds, and a sharer is refused.
    acquire(&pc, c, WERO).unwrap();
    assert!(matches!(acquire(&pa, a, WEAR), Err(PrError::Busy { holder: Some(k), .. }) if k == c));
}

#[test]
fn preempt_takes_over_and_falls_back_without_preempt_and_abort() {
    for (lu, want_abort) in [(Lu::new(), true), (Lu::without_preempt_abort(), false)] {
        let (a, pa) = host(&lu, 1, 2);
        let (b, pb) = host(&lu, 2, 1);
        acquire(&pa, a, WERO).unwrap();
        let p = preempt(&pb, b, a, WERO, true).unwrap();
        assert_eq!(p.aborted, want_abort);
        assert_eq!(p.fell_back, !want_abort);
        assert_eq!(lu.keys(), [b.0]);
        assert_eq!(lu.reservation(), Some((b.0, WERO)));
        assert!(!lu.may_write(10) && !lu.may_write(11) && lu.may_write(20));
        // A's release afterwards must not disturb B.
        release(&pa, a).unwrap();
        assert_eq!(lu.reservation(), Some((b.0, WERO)));
    }
}

#[test]
fn preempt_of_a_registrant_without_reservation_then_reserves() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    let (b, pb) = host(&lu, 2, 1);
    register_all(&pa, a).unwrap();
    let p = preempt(&pb, b, a, WERO, false).unwrap();
    assert!(!p.aborted);
    assert_eq!(lu.keys(), [b.0]);
    assert_eq!(lu.reservation(), Some((b.0, WERO)));
}

#[test]
fn preempt_refuses_our_own_key_and_unknown_keys() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    assert!(matches!(preempt(&pa, a, a, WERO, true), Err(PrError::OwnKey(k)) if k == a));
    // A key nobody has: RESERVATION CONFLICT from the target, reported with the path.
    let e = preempt(&pa, a, ReservationKey(0x99), WERO, false).unwrap_err();
    let text = crate::exit::chain_std(&e);
    assert!(text.starts_with("sdb0: reservation conflict"), "{text}");
}

/// `check`'s drift alone.
fn drift(paths: &[Path<SimPath>], k: ReservationKey, held: Option<PrType>) -> Vec<Drift> {
    check(paths, k, held, None).unwrap().drift
}

#[test]
fn check_and_repair_after_target_restart() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 2);
    acquire(&pa, a, WERO).unwrap();
    let seen = check(&pa, a, Some(WERO), None).unwrap();
    assert_eq!(seen.drift, []);
    assert!(seen.generation > 0);
    lu.restart();
    let found = check(&pa, a, Some(WERO), Some(seen.generation)).unwrap();
    assert_eq!(found.drift, [Drift::TargetReset { generation: 0 }]);
    assert!(found.drift.iter().all(Drift::repairable));
    assert_eq!(
        repair(&pa, a, Some(WERO), &found.drift).unwrap(),
        found.drift
    );
    assert_eq!(drift(&pa, a, Some(WERO)), []);
    assert_eq!(lu.keys(), [a.0, a.0]);
    assert_eq!(lu.reservation(), Some((a.0, WERO)));
    assert!(lu.may_write(10) && lu.may_write(11));
}

#[test]
fn an_empty_disk_whose_generation_moved_on_is_fencing_not_a_restart() {
    // B preempts A, writes, releases: the disk is empty again but its PR generation went
    // up. A must not take it back on its own.
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    let (b, pb) = host(&lu, 2, 1);
    acquire(&pa, a, WERO).unwrap();
    let last = check(&pa, a, Some(WERO), None).unwrap().generation;
    preempt(&pb, b, a, WERO, true).unwrap();
    release(&pb, b).unwrap();
    assert_eq!((lu.keys(), lu.reservation()), (vec![], None));
    let m = maintain(&pa, a, WERO, Some(last)).unwrap();
    assert!(
        matches!(&m.lost, Some(Drift::Fenced { holder: None, .. })),
        "{m:?}"
    );
    assert_eq!(m.fixed, []);
    assert_eq!((lu.keys(), lu.reservation()), (vec![], None));
    // Without any memory (`pr check --repair` by hand) the same: generation is not 0.
    let d = drift(&pa, a, Some(WERO));
    assert!(matches!(d[..], [Drift::Fenced { .. }]), "{d:?}");
    assert_eq!(repair(&pa, a, Some(WERO), &d).unwrap(), []);
    assert_eq!(lu.keys(), Vec::<u64>::new());
}

#[test]
fn a_preempted_host_never_registers_again() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 2);
    let (b, pb) = host(&lu, 2, 1);
    acquire(&pa, a, WERO).unwrap();
    let last = check(&pa, a, Some(WERO), None).unwrap().generation;
    preempt(&pb, b, a, WERO, true).unwrap();
    for _ in 0..3 {
        let m = maintain(&pa, a, WERO, Some(last)).unwrap();
        match &m.lost {
            Some(d @ Drift::Fenced { holder, .. }) => {
                assert_eq!(*holder, Some(b));
                assert!(!d.repairable());
                assert!(d.to_string().contains("0x444c4b4800000002"), "{d}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(m.fixed, []);
        assert_eq!(lu.keys(), [b.0]);
        assert!(!lu.may_write(10) && !lu.may_write(11));
    }
    // A path of A's that appears now stays unregistered.
    let late = Path {
        name: "sdb9".into(),
        dev: lu.path(19),
    };
    assert!(!add_path(&pa[0], &late, a, WERO).unwrap());
    assert_eq!(lu.keys(), [b.0]);
    assert!(!lu.may_write(19));
}

#[test]
fn an_exclusive_acquire_leaves_no_foreign_registration() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    let (c, pc) = host(&lu, 3, 1);
    // C registered and crashed: its registration would be write access under A's WE-RO.
    register_all(&pc, c).unwrap();
    let e = acquire(&pa, a, WERO).unwrap_err();
    assert!(
        matches!(&e, PrError::Registered { keys } if keys == &[c]),
        "{e}"
    );
    assert!(e.to_string().contains("0x444c4b4800000003"), "{e}");
    assert_eq!(lu.keys(), [c.0], "a refused acquire registers nothing");
    // Taking it over removes C.
    preempt(&pa, a, c, WERO, true).unwrap();
    assert_eq!(lu.keys(), [a.0]);
    assert_eq!(lu.reservation(), Some((a.0, WERO)));
    assert!(!lu.may_write(30));
}

#[test]
fn foreign_registrations_under_our_reservation_are_removed() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    let (c, pc) = host(&lu, 3, 1);
    acquire(&pa, a, WERO).unwrap();
    register_all(&pc, c).unwrap();
    assert!(lu.may_write(30), "under WE-RO a registrant may write");
    let m = maintain(&pa, a, WERO, None).unwrap();
    assert_eq!(m.lost, None);
    assert_eq!(m.fixed, [Drift::ForeignRegistrations { keys: vec![c] }]);
    assert_eq!(lu.keys(), [a.0]);
    assert!(!lu.may_write(30));
}

#[test]
fn after_a_restart_sharers_all_come_back() {
    // Two hosts share a disk (all registrants); the target restarts; A repairs first. B must
    // join again, not count A's new reservation as its own fencing.
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    let (b, pb) = host(&lu, 2, 2);
    acquire(&pa, a, WEAR).unwrap();
    acquire(&pb, b, WEAR).unwrap();
    let last_a = check(&pa, a, Some(WEAR), None).unwrap().generation;
    let last_b = check(&pb, b, Some(WEAR), None).unwrap().generation;
    lu.restart();
    let m = maintain(&pa, a, WEAR, Some(last_a)).unwrap();
    assert_eq!((m.lost, m.fixed.len()), (None, 1));
    let m = maintain(&pb, b, WEAR, Some(last_b)).unwrap();
    assert_eq!(m.lost, None, "{m:?}");
    assert_eq!(m.drift.len(), 1);
    assert!(matches!(m.drift[0], Drift::TargetReset { .. }), "{m:?}");
    assert_eq!(lu.keys(), [a.0, b.0, b.0]);
    assert_eq!(lu.reservation(), Some((0, WEAR)));
    // But a sharer removed by a preempt (no restart) is fenced.
    let last_b = check(&pb, b, Some(WEAR), None).unwrap().generation;
    let (c, pc) = host(&lu, 3, 1);
    register_all(&pc, c).unwrap();
    preempt(&pc, c, ReservationKey(0), WERO, true).unwrap();
    let m = maintain(&pb, b, WEAR, Some(last_b)).unwrap();
    assert!(matches!(m.lost, Some(Drift::Fenced { .. })), "{m:?}");
    assert!(!lu.may_write(20) && !lu.may_write(21));
}

#[test]
fn after_a_restart_two_believers_end_with_one_holder() {
    // A was fenced by B but has not noticed; the target restarts; both repair.
    for a_first in [true, false] {
        let lu = Lu::new();
        let (a, pa) = host(&lu, 1, 1);
        let (b, pb) = host(&lu, 2, 1);
        acquire(&pa, a, WERO).unwrap();
        let last_a = check(&pa, a, Some(WERO), None).unwrap().generation;
        preempt(&pb, b, a, WERO, true).unwrap();
        let last_b = check(&pb, b, Some(WERO), None).unwrap().generation;
        lu.restart();
        let (first, second) = if a_first {
            ((&pa, a, last_a), (&pb, b, last_b))
        } else {
            ((&pb, b, last_b), (&pa, a, last_a))
        };
        let m1 = maintain(first.0, first.1, WERO, Some(first.2)).unwrap();
        assert_eq!(m1.lost, None);
        let m2 = maintain(second.0, second.1, WERO, Some(second.2)).unwrap();
        assert!(matches!(m2.lost, Some(Drift::Fenced { .. })), "{m2:?}");
        assert_eq!(lu.keys(), [first.1.0]);
        assert_eq!(lu.reservation(), Some((first.1.0, WERO)));
    }
}

#[test]
fn a_path_that_appears_later_is_registered_by_repair() {
    let lu = Lu::new();
    let (a, mut pa) = host(&lu, 1, 2);
    let late = pa.pop().unwrap();
    acquire(&pa, a, WERO).unwrap();
    pa.push(late);
    let d = drift(&pa, a, Some(WERO));
    assert_eq!(d, [Drift::MissingRegistrations { found: 1, paths: 2 }]);
    assert!(!lu.may_write(11));
    repair(&pa, a, Some(WERO), &d).unwrap();
    assert!(lu.may_write(11));
    assert_eq!(drift(&pa, a, Some(WERO)), []);
}

#[test]
fn stale_registrations_collisions_and_takeovers_are_reported() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    register_all(&pa, a).unwrap();
    let d = drift(&pa, a, None);
    assert_eq!(d, [Drift::StaleRegistration { found: 1 }]);
    repair(&pa, a, None, &d).unwrap();
    assert_eq!(lu.keys(), Vec::<u64>::new());

    // Another host configured with A's key: more registrations than A has paths.
    acquire(&pa, a, WERO).unwrap();
    let twin = lu.path(99);
    disklock_scsi::pr::PersistentReservations::register(
        &twin,
        ReservationKey(0),
        a,
        disklock_scsi::pr::RegisterFlags {
            ignore_existing: true,
            ..Default::default()
        },
    )
    .unwrap();
    let d = drift(&pa, a, Some(WERO));
    assert_eq!(d, [Drift::ExtraRegistrations { found: 2, paths: 1 }]);
    assert!(!d[0].repairable());
    assert!(
        d[0].to_string()
            .contains("another host may use the same key")
    );
    assert_eq!(repair(&pa, a, Some(WERO), &d).unwrap(), []);

    // Taken by B while A believes it holds it: fenced, not a path to repair.
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    let (b, pb) = host(&lu, 2, 1);
    acquire(&pa, a, WERO).unwrap();
    preempt(&pb, b, a, WERO, true).unwrap();
    let d = drift(&pa, a, Some(WERO));
    assert_eq!(
        d,
        [Drift::Fenced {
            holder: Some(b),
            registered: vec![b],
            ours_left: 0
        }]
    );
    assert!(d[0].fix().contains("--preempt"));
    assert_eq!(repair(&pa, a, Some(WERO), &d).unwrap(), []);
    assert_eq!(lu.keys(), [b.0]);
}

#[test]
fn registration_reaches_every_path_in_one_call_each() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 4);
    let before = lu.commands();
    register_all(&pa, a).unwrap();
    assert_eq!(lu.commands() - before, 4);
    assert_eq!(lu.keys().len(), 4);
    assert!(matches!(
        register_all::<SimPath>(&[], a),
        Err(PrError::NoPaths)
    ));
}

#[derive(Debug, Clone)]
enum Op {
    /// A host takes the disk (through `crate::pr::take`, as the daemon does).
    Acquire {
        host: u32,
        shared: bool,
        preempt: bool,
    },
    Release {
        host: u32,
    },
    /// The daemon's periodic check on a host.
    Check {
        host: u32,
    },
    /// Host 2's third path appears (the daemon's `refresh_paths`).
    AddPath,
    /// The target forgets every registration and the reservation.
    Restart,
    /// A fourth host registers (then crashes) while nobody holds the disk exclusively.
    Stray,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (1u32..=3, any::<bool>(), any::<bool>()).prop_map(|(host, shared, preempt)| Op::Acquire {
            host,
            shared,
            preempt
        }),
        1 => (1u32..=3).prop_map(|host| Op::Release { host }),
        3 => (1u32..=3).prop_map(|host| Op::Check { host }),
        1 => Just(Op::AddPath),
        1 => Just(Op::Restart),
        1 => Just(Op::Stray),
    ]
}

/// One simulated daemon: its key, paths, what it believes it holds and the generation its
/// last check saw.
struct Daemon {
    key: ReservationKey,
    paths: Vec<Path<SimPath>>,
    late: Option<Path<SimPath>>,
    believes: Option<PrType>,
    last: Option<u32>,
}

/// Every nexus of the test: hosts 1-3 (host 2 has three) and the stray host 4.
const NEXUSES: [u32; 6] = [10, 20, 21, 22, 30, 40];

proptest! {
    /// Three hosts (with 1, 2 (+1 late) and 1 paths) take, release, preempt and check one
    /// disk while the target restarts and a fourth host leaves a stale registration. After
    /// every step:
    /// - whenever the disk is reserved exclusively by key K, no nexus but K's host's can
    ///   write (writes allowed by registration exactly as SPC-4 says for each type);
    /// - a host whose key another host preempted never has its key on the disk again until
    ///   it acquires anew (or the target restarts and forgets who held it);
    /// - a fenced host's next check says it lost the disk;
    /// - without restarts: at most one host rightfully holds the disk exclusively, and an
    ///   acquire succeeds exactly when no other host rightfully holds it in a conflicting
    ///   mode (with preempt: unless it is shared).
    #[test]
    fn hosts_never_write_each_others_disk(
        ops in proptest::collection::vec(op(), 1..60),
        abort in any::<bool>(),
    ) {
        let lu = if abort { Lu::new() } else { Lu::without_preempt_abort() };
        let mut hosts: Vec<Daemon> = (1..=3)
            .map(|h| {
                let (key, mut paths) = host(&lu, h, if h == 2 { 3 } else { 1 });
                let late = if h == 2 { paths.pop() } else { None };
                Daemon { key, paths, late, believes: None, last: None }
            })
            .collect();
        let stray = ReservationKey(0xdead_0004);
        let idx = |h: u32| usize::try_from(h).unwrap() - 1;
        let owner_of = |k: u64| -> Option<u32> {
            (1..=3).find(|&h| crate::pr::hostkey::from_host_id(u16::try_from(h).unwrap()) == k)
        };
        // What each host rightfully holds, and whether another host removed it.
        let mut rightful: [Option<PrType>; 3] = [None; 3];
        let mut fenced = [false; 3];
        let mut restarts = 0;
        // Whether the stray host's registration is on the disk.
        let stray_on = |lu: &Lu| lu.keys().contains(&stray.0);
        for op in ops {
            match op.clone() {
                Op::Acquire { host: h, shared, preempt } => {
                    if hosts[idx(h)].believes.is_some() {
                        continue;
                    }
                    let kind = if shared { WEAR } else { WERO };
                    let others_hold: Vec<PrType> = (1..=3)
                        .filter(|&o| o != h)
                        .filter_map(|o| rightful[idx(o)])
                        .collect();
                    let before: Vec<u64> = lu.keys();
                    let shared_now = lu.reservation().is_some_and(|(_, t)| t.all_registrants());
                    let stray_here = stray_on(&lu);
                    let d = &mut hosts[idx(h)];
                    let r = crate::pr::take(&d.paths, d.key, kind, preempt && !shared, "disk");
                    if restarts == 0 {
                        // The stray registration is a sharer under an all-registrants
                        // reservation; else an exclusive acquire refuses it, or (preempt)
                        // removes it.
                        let allowed = if shared {
                            others_hold.iter().all(|t| *t == WEAR)
                        } else if preempt {
                            others_hold.iter().all(|t| *t == WERO) && !(stray_here && shared_now)
                        } else {
                            others_hold.is_empty() && !stray_here
                        };
                        prop_assert_eq!(r.is_ok(), allowed, "{:?}: {:?} with {:?}", op, r, rightful);
                    }
                    if r.is_ok() {
                        d.believes = Some(kind);
                        d.last = None;
                        rightful[idx(h)] = Some(kind);
                        fenced[idx(h)] = false;
                        let after = lu.keys();
                        for k in before.iter().filter(|k| !after.contains(k)) {
                            if let Some(v) = owner_of(*k).filter(|&v| v != h) {
                                rightful[idx(v)] = None;
                                fenced[idx(v)] = true;
                            }
                        }
                    }
                }
                Op::Release { host: h } => {
                    let d = &mut hosts[idx(h)];
                    if d.believes.take().is_some() {
                        release(&d.paths, d.key).unwrap();
                    }
                    rightful[idx(h)] = None;
                }
                Op::Check { host: h } => {
                    let d = &mut hosts[idx(h)];
                    let Some(kind) = d.believes else { continue };
                    let m = maintain(&d.paths, d.key, kind, d.last).unwrap();
                    d.last = Some(m.generation);
                    if fenced[idx(h)] {
                        prop_assert!(m.lost.is_some(), "host {} was fenced but its check says {:?}", h, m);
                    }
                    if m.lost.is_some() {
                        d.believes = None;
                        rightful[idx(h)] = None;
                    }
                }
                Op::AddPath => {
                    let d = &mut hosts[idx(2)];
                    let (Some(kind), Some(late)) = (d.believes, d.late.take()) else { continue };
                    if add_path(&d.paths[0], &late, d.key, kind).unwrap() {
                        d.paths.push(late);
                    } else {
                        d.believes = None;
                        rightful[idx(2)] = None;
                        d.late = Some(late);
                    }
                }
                Op::Restart => {
                    lu.restart();
                    restarts += 1;
                    fenced = [false; 3];
                }
                Op::Stray => {
                    if lu.reservation().is_some_and(|(_, t)| !t.all_registrants()) {
                        continue;
                    }
                    register_all(&[Path { name: "sdz".into(), dev: lu.path(40) }], stray).unwrap();
                }
            }
            // Writes only by the exclusive holder's paths.
            if let Some((k, t)) = lu.reservation().filter(|(_, t)| !t.all_registrants()) {
                for n in NEXUSES {
                    if lu.may_write(n) {
                        prop_assert_eq!(
                            owner_of(k), Some(n / 10),
                            "nexus {} may write while key {:#x} holds the disk {:?} (keys {:x?}) after {:?}",
                            n, k, t, lu.keys(), op
                        );
                    }
                }
            }
            // A fenced host's key stays off the disk.
            for h in 1..=3u32 {
                if fenced[idx(h)] {
                    prop_assert!(
                        !lu.keys().contains(&hosts[idx(h)].key.0),
                        "host {} was fenced and registered again after {:?}: {:x?}",
                        h, op, lu.keys()
                    );
                }
            }
            if restarts == 0 {
                let exclusive = rightful.iter().filter(|t| **t == Some(WERO)).count();
                prop_assert!(exclusive <= 1, "two exclusive holders: {:?}", rightful);
            }
        }
    }
}
