//! How often each owner holds each disk, in each mode: releases are counted, so that a
//! rolled-back second attach of a disk never drops the lease of the first.
//!
//! libvirt releases by path: hot-unplug, the rollback of a failed attach, and pause all call
//! `drvRelease` with the disks concerned. The daemon's `Release` gives up the owner's lease
//! on a disk outright, so the plugin counts: every disk of a successful acquire adds one for
//! (owner, disk, mode), every release takes one off (never below zero), and the daemon is
//! asked to release a disk only when none of the owner's counts for it is left. A release
//! of a disk this table does not know (after a libvirtd restart, or pause's second
//! release) is passed on, so that nothing stays held by mistake; the daemon answers
//! `not_held` when there is nothing.
//!
//! The table lives in libvirtd's memory, so a libvirtd restart forgets the counts (see the
//! crate docs); the forked child never touches it.

use std::collections::HashMap;

use disklock::daemon::protocol::DiskMode;

/// The daemon's owner: a domain's uuid and its QEMU pid.
pub type OwnerKey = (uuid::Uuid, u32);

fn slot(mode: DiskMode) -> usize {
    match mode {
        DiskMode::Exclusive => 0,
        DiskMode::Shared => 1,
        DiskMode::Readonly => 2,
    }
}

/// Counts per owner, disk and mode.
#[derive(Debug, Default)]
pub struct Holds {
    owners: HashMap<OwnerKey, HashMap<String, [u32; 3]>>,
}

impl Holds {
    /// An empty table.
    pub fn new() -> Holds {
        Holds::default()
    }

    /// Records a successful acquire of `disks` (each as often as libvirt named it).
    pub fn acquired<'a>(
        &mut self,
        owner: OwnerKey,
        disks: impl IntoIterator<Item = (&'a str, DiskMode)>,
    ) {
        let held = self.owners.entry(owner).or_default();
        for (path, mode) in disks {
            let c = &mut held.entry(path.to_owned()).or_default()[slot(mode)];
            *c = c.saturating_add(1);
        }
    }

    /// The disks the daemon should release for a release of `disks`: those the owner holds
    /// no more afterwards, once each. Changes nothing; [`Holds::released`] does, after the
    /// daemon agreed.
    pub fn to_release<'a>(
        &self,
        owner: OwnerKey,
        disks: impl IntoIterator<Item = (&'a str, DiskMode)> + Clone,
    ) -> Vec<String> {
        let mut after: HashMap<&str, [u32; 3]> = HashMap::new();
        let held = self.owners.get(&owner);
        for (path, mode) in disks.clone() {
            let c = after
                .entry(path)
                .or_insert_with(|| held.and_then(|h| h.get(path)).copied().unwrap_or_default());
            c[slot(mode)] = c[slot(mode)].saturating_sub(1);
        }
        let mut out: Vec<String> = Vec::new();
        for (path, _) in disks {
            if after[path] == [0; 3] && !out.iter().any(|p| p == path) {
                out.push(path.to_owned());
            }
        }
        out
    }

    /// Records a release of `disks`.
    pub fn released<'a>(
        &mut self,
        owner: OwnerKey,
        disks: impl IntoIterator<Item = (&'a str, DiskMode)>,
    ) {
        let Some(held) = self.owners.get_mut(&owner) else {
            return;
        };
        for (path, mode) in disks {
            if let Some(c) = held.get_mut(path) {
                c[slot(mode)] = c[slot(mode)].saturating_sub(1);
                if *c == [0; 3] {
                    held.remove(path);
                }
            }
        }
        if held.is_empty() {
            self.owners.remove(&owner);
        }
    }

    /// Forgets owners whose process is gone (QEMU exits without a callback: destroy,
    /// crash). `alive` says whether a pid still runs.
    pub fn prune(&mut self, mut alive: impl FnMut(u32) -> bool) {
        self.owners.retain(|&(_, pid), _| alive(pid));
    }

    /// How many owners are recorded.
    pub fn owners(&self) -> usize {
        self.owners.len()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use proptest::prelude::*;

    use super::*;

    const A: OwnerKey = (uuid::Uuid::from_bytes([1; 16]), 10);

    #[test]
    fn a_rolled_back_second_attach_keeps_the_first_lease() {
        let mut h = Holds::new();
        h.acquired(A, [("/a", DiskMode::Exclusive)]);
        // Second attach of the same path (another target): acquire, then rollback.
        h.acquired(A, [("/a", DiskMode::Exclusive)]);
        assert!(h.to_release(A, [("/a", DiskMode::Exclusive)]).is_empty());
        h.released(A, [("/a", DiskMode::Exclusive)]);
        // Unplug of the first: now it goes.
        assert_eq!(h.to_release(A, [("/a", DiskMode::Exclusive)]), ["/a"]);
        h.released(A, [("/a", DiskMode::Exclusive)]);
        assert_eq!(h.owners(), 0);
    }

    #[test]
    fn a_readonly_rollback_never_drops_an_exclusive_lease() {
        let mut h = Holds::new();
        h.acquired(A, [("/a", DiskMode::Exclusive)]);
        assert!(h.to_release(A, [("/a", DiskMode::Readonly)]).is_empty());
        h.released(A, [("/a", DiskMode::Readonly)]);
        assert_eq!(h.to_release(A, [("/a", DiskMode::Exclusive)]), ["/a"]);
    }

    #[test]
    fn pause_releases_everything_and_twice_is_harmless() {
        let mut h = Holds::new();
        let all = [
            ("/a", DiskMode::Exclusive),
            ("/b", DiskMode::Shared),
            ("/a", DiskMode::Exclusive),
        ];
        h.acquired(A, all);
        assert_eq!(h.to_release(A, all), ["/a", "/b"]);
        h.released(A, all);
        // The second release of a pause: unknown, passed on (the daemon says not held).
        assert_eq!(h.to_release(A, all), ["/a", "/b"]);
        h.released(A, all);
        assert_eq!(h.owners(), 0);
    }

    #[test]
    fn owners_are_apart_and_dead_ones_pruned() {
        let b: OwnerKey = (uuid::Uuid::from_bytes([2; 16]), 11);
        let mut h = Holds::new();
        h.acquired(A, [("/a", DiskMode::Shared)]);
        h.acquired(b, [("/a", DiskMode::Shared)]);
        assert_eq!(h.to_release(A, [("/a", DiskMode::Shared)]), ["/a"]);
        h.prune(|pid| pid != 10);
        assert_eq!(h.owners(), 1);
        assert!(h.to_release(b, []).is_empty());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Acquire(Vec<(u8, u8)>),
        Release(Vec<(u8, u8)>),
    }

    fn mode(m: u8) -> DiskMode {
        [DiskMode::Exclusive, DiskMode::Shared, DiskMode::Readonly][usize::from(m % 3)]
    }

    fn disks() -> impl Strategy<Value = Vec<(u8, u8)>> {
        proptest::collection::vec((0u8..3, 0u8..3), 0..4)
    }

    proptest! {
        /// Against a model (a multiset of holds) and a simulated daemon (the set of disks
        /// it holds for the owner): the daemon holds a disk exactly while the model has a
        /// hold of it in some mode, whatever the order of acquires and releases, and
        /// however many releases come for disks never acquired.
        #[test]
        fn the_daemon_holds_a_disk_exactly_while_some_hold_remains(
            ops in proptest::collection::vec(
                prop_oneof![disks().prop_map(Op::Acquire), disks().prop_map(Op::Release)],
                0..40,
            )
        ) {
            let mut h = Holds::new();
            let mut model: BTreeMap<(String, usize), u32> = BTreeMap::new();
            let mut daemon: BTreeSet<String> = BTreeSet::new();
            for op in ops {
                match op {
                    Op::Acquire(d) => {
                        let d: Vec<(String, DiskMode)> =
                            d.iter().map(|&(p, m)| (format!("/d{p}"), mode(m))).collect();
                        h.acquired(A, d.iter().map(|(p, m)| (p.as_str(), *m)));
                        for (p, m) in &d {
                            *model.entry((p.clone(), slot(*m))).or_default() += 1;
                            daemon.insert(p.clone());
                        }
                    }
                    Op::Release(d) => {
                        let d: Vec<(String, DiskMode)> =
                            d.iter().map(|&(p, m)| (format!("/d{p}"), mode(m))).collect();
                        let it = d.iter().map(|(p, m)| (p.as_str(), *m));
                        let out = h.to_release(A, it.clone());
                        h.released(A, it);
                        for (p, m) in &d {
                            if let Some(c) = model.get_mut(&(p.clone(), slot(*m))) {
                                *c = c.saturating_sub(1);
                            }
                        }
                        for p in out {
                            // Never released while the model still holds it.
                            prop_assert!(!model.iter().any(|((q, _), &c)| *q == p && c > 0));
                            daemon.remove(&p);
                        }
                    }
                }
                model.retain(|_, c| *c > 0);
                let want: BTreeSet<String> = model.keys().map(|(p, _)| p.clone()).collect();
                prop_assert_eq!(&daemon, &want);
            }
        }
    }
}
