//! The engine against the simulated logical unit: hosts with one or two paths each.

use std::sync::Arc;

use disklock_scsi::pr::{PrType, ReservationKey};
use proptest::prelude::*;

use super::sim::{Lu, SimPath};
use super::*;

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

#[test]
fn check_and_repair_after_target_restart() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 2);
    acquire(&pa, a, WERO).unwrap();
    assert_eq!(check(&pa, a, Some(WERO)).unwrap(), []);
    lu.restart();
    let drift = check(&pa, a, Some(WERO)).unwrap();
    assert_eq!(
        drift,
        [
            Drift::MissingRegistrations { found: 0, paths: 2 },
            Drift::ReservationMissing
        ]
    );
    assert!(drift.iter().all(Drift::repairable));
    assert_eq!(repair(&pa, a, Some(WERO), &drift).unwrap(), drift);
    assert_eq!(check(&pa, a, Some(WERO)).unwrap(), []);
    assert_eq!(lu.keys(), [a.0, a.0]);
    assert_eq!(lu.reservation(), Some((a.0, WERO)));
}

#[test]
fn a_path_that_appears_later_is_registered_by_repair() {
    let lu = Lu::new();
    let (a, mut pa) = host(&lu, 1, 2);
    let late = pa.pop().unwrap();
    acquire(&pa, a, WERO).unwrap();
    pa.push(late);
    let drift = check(&pa, a, Some(WERO)).unwrap();
    assert_eq!(drift, [Drift::MissingRegistrations { found: 1, paths: 2 }]);
    assert!(!lu.may_write(11));
    repair(&pa, a, Some(WERO), &drift).unwrap();
    assert!(lu.may_write(11));
    assert_eq!(check(&pa, a, Some(WERO)).unwrap(), []);
}

#[test]
fn stale_registrations_collisions_and_takeovers_are_reported() {
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    register_all(&pa, a).unwrap();
    let drift = check(&pa, a, None).unwrap();
    assert_eq!(drift, [Drift::StaleRegistration { found: 1 }]);
    repair(&pa, a, None, &drift).unwrap();
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
    let drift = check(&pa, a, Some(WERO)).unwrap();
    assert_eq!(drift, [Drift::ExtraRegistrations { found: 2, paths: 1 }]);
    assert!(!drift[0].repairable());
    assert!(
        drift[0]
            .to_string()
            .contains("another host may use the same key")
    );
    assert_eq!(repair(&pa, a, Some(WERO), &drift).unwrap(), []);

    // Taken by B while A believes it holds it.
    let lu = Lu::new();
    let (a, pa) = host(&lu, 1, 1);
    let (b, pb) = host(&lu, 2, 1);
    acquire(&pa, a, WERO).unwrap();
    preempt(&pb, b, a, WERO, true).unwrap();
    let drift = check(&pa, a, Some(WERO)).unwrap();
    assert_eq!(
        drift,
        [
            Drift::MissingRegistrations { found: 0, paths: 1 },
            Drift::ReservationTaken { holder: b }
        ]
    );
    assert!(drift[1].fix().contains("--preempt"));
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
    Acquire { host: u32, shared: bool },
    Release { host: u32 },
    Preempt { host: u32, victim: u32 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (1u32..=3, any::<bool>()).prop_map(|(host, shared)| Op::Acquire { host, shared }),
        (1u32..=3).prop_map(|host| Op::Release { host }),
        (1u32..=3, 1u32..=3).prop_map(|(host, victim)| Op::Preempt { host, victim }),
    ]
}

proptest! {
    /// Whatever three hosts (with 1, 2 and 1 paths) do, an acquire succeeds exactly when no
    /// other host holds the disk in a conflicting mode, a host that does not hold the disk
    /// never may write while an exclusive holder exists, and every host's `check` finds the
    /// disk as it believes (no drift) after every step.
    #[test]
    fn hosts_never_write_each_others_disk(
        ops in proptest::collection::vec(op(), 1..40),
        abort in any::<bool>(),
    ) {
        let lu = if abort { Lu::new() } else { Lu::without_preempt_abort() };
        let hosts: Vec<(ReservationKey, Vec<Path<SimPath>>)> =
            (1..=3).map(|h| host(&lu, h, if h == 2 { 2 } else { 1 })).collect();
        let idx = |h: u32| usize::try_from(h).unwrap();
        // What each host believes it holds (index 0 unused).
        let mut held: [Option<PrType>; 4] = [None; 4];
        for op in ops {
            match op.clone() {
                Op::Acquire { host: h, shared } => {
                    if held[idx(h)].is_some() {
                        continue;
                    }
                    let kind = if shared { WEAR } else { WERO };
                    let (k, p) = &hosts[idx(h) - 1];
                    let allowed = (1..=3)
                        .filter(|&o| o != h)
                        .filter_map(|o| held[idx(o)])
                        .all(|t| shared && t == WEAR);
                    let r = acquire(p, *k, kind);
                    prop_assert_eq!(r.is_ok(), allowed, "{:?}: {:?} with {:?}", op, r, held);
                    if r.is_ok() {
                        held[idx(h)] = Some(kind);
                    }
                }
                Op::Release { host: h } => {
                    let (k, p) = &hosts[idx(h) - 1];
                    if held[idx(h)].take().is_some() {
                        release(p, *k).unwrap();
                    }
                }
                Op::Preempt { host: h, victim: v } => {
                    if h == v || held[idx(h)].is_some() || held[idx(v)] != Some(WERO) {
                        continue;
                    }
                    let (k, p) = &hosts[idx(h) - 1];
                    let (vk, _) = &hosts[idx(v) - 1];
                    let got = preempt(p, *k, *vk, WERO, true).unwrap();
                    prop_assert_eq!(got.aborted, abort);
                    held[idx(h)] = Some(WERO);
                    held[idx(v)] = None;
                }
            }
            let exclusive: Vec<u32> =
                (1..=3).filter(|&o| held[idx(o)] == Some(WERO)).collect();
            prop_assert!(exclusive.len() <= 1, "two exclusive holders: {:?}", held);
            if let [x] = exclusive.as_slice() {
                for o in (1..=3).filter(|o| o != x) {
                    prop_assert!(!lu.may_write(o * 10), "host {} may write while {} holds", o, x);
                }
            }
            for h in 1..=3 {
                let (k, p) = &hosts[idx(h) - 1];
                let drift = check(p, *k, held[idx(h)]).unwrap();
                prop_assert!(drift.is_empty(), "host {}: {:?} after {:?}", h, drift, op);
            }
        }
    }
}
