//! Lanes: threads that carry out a lockspace's lease I/O away from the table task, so that a
//! lockspace whose file system hangs (an NFS server gone, a hard mount retrying for ever)
//! holds up the requests for that lockspace and nothing else.
//!
//! Each lockspace directory has up to [`LANES`] lanes, each one thread with a queue of jobs
//! and a state of its own (`S`, made on the thread: the leases it holds). A lease's jobs
//! always go to the same lane, chosen by its key, so they run one at a time in the order
//! they were given: a release and the next acquire of one lease file never overlap (a
//! second fd of a file closed in this process would drop the process's POSIX lock on it).
//! Jobs of different leases mostly land on different lanes and run at once; a lane stuck
//! in the kernel holds up only the leases that hash to it. A lane's thread starts with its
//! first job and ends when [`Lanes::stop`] closes its queue, after the jobs queued before.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash as _, Hasher as _};
use std::path::Path;
use std::sync::Arc;
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Lanes per lockspace directory: how many of its leases can be taken at once.
pub const LANES: usize = 8;

/// A job: runs on its lane's thread with the lane's state.
pub type Job<S> = Box<dyn FnOnce(&mut S) + Send>;

struct Lane<S> {
    jobs: mpsc::Sender<Job<S>>,
    thread: JoinHandle<()>,
}

/// One lockspace's lanes, by number; `None` until a lane's first job.
type LaneSet<S> = Vec<Option<Lane<S>>>;

/// The lanes of every lockspace directory that has had a job.
pub struct Lanes<S> {
    sets: Vec<(Arc<Path>, LaneSet<S>)>,
    make: Arc<dyn Fn() -> S + Send + Sync>,
}

impl<S: 'static> Lanes<S> {
    /// No lanes yet; `make` makes a new lane's state, on its thread.
    pub fn new(make: impl Fn() -> S + Send + Sync + 'static) -> Lanes<S> {
        Lanes {
            sets: Vec::new(),
            make: Arc::new(make),
        }
    }

    /// Queues `job` on the lane of lease `key` in lockspace `dir`, starting the lane's thread
    /// if it has none. Gives the job back when no thread can be started (the system is out
    /// of threads): the caller fails what it stood for.
    pub fn submit(&mut self, dir: &Path, key: &str, job: Job<S>) -> Result<(), Job<S>> {
        let i = lane_of(key);
        let set = match self
            .sets
            .iter()
            .position(|(d, _)| d.as_os_str() == dir.as_os_str())
        {
            Some(s) => &mut self.sets[s].1,
            None => {
                self.sets
                    .push((Arc::from(dir), (0..LANES).map(|_| None).collect()));
                let last = self.sets.len() - 1;
                &mut self.sets[last].1
            }
        };
        // A lane whose thread ended (it cannot, short of the process ending) is started
        // again.
        if set[i].as_ref().is_some_and(|l| l.thread.is_finished()) {
            set[i] = None;
        }
        let job = match &set[i] {
            Some(lane) => match lane.jobs.send(job) {
                Ok(()) => return Ok(()),
                Err(mpsc::SendError(job)) => job,
            },
            None => job,
        };
        let (tx, rx) = mpsc::channel::<Job<S>>();
        let make = self.make.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("lane-{i}"))
            .spawn(move || {
                let mut state = make();
                while let Ok(job) = rx.recv() {
                    // A job that panics must not end the lane: its state holds the lease
                    // files of other jobs, and dropping them would drop their locks.
                    let run = std::panic::AssertUnwindSafe(|| job(&mut state));
                    if std::panic::catch_unwind(run).is_err() {
                        tracing::error!(
                            event = "lane-panicked",
                            "a lease I/O job panicked; its lane goes on"
                        );
                    }
                }
            });
        let Ok(thread) = spawned else {
            return Err(job);
        };
        // The receiver lives as long as the thread, which has just started.
        let sent = tx.send(job);
        set[i] = Some(Lane { jobs: tx, thread });
        sent.map_err(|mpsc::SendError(job)| job)
    }

    /// Closes every queue and waits up to `within` for the lanes to finish the jobs queued;
    /// returns how many did not (stuck in the kernel: they end with the process).
    pub fn stop(&mut self, within: Duration) -> usize {
        let threads: Vec<JoinHandle<()>> = self
            .sets
            .drain(..)
            .flat_map(|(_, set)| set)
            .flatten()
            .map(|lane| lane.thread)
            .collect();
        let deadline = Instant::now() + within;
        while threads.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        threads.iter().filter(|t| !t.is_finished()).count()
    }
}

/// The lane of the lease `key`: the same for every job of that lease.
pub fn lane_of(key: &str) -> usize {
    // `DefaultHasher::new` hashes with fixed keys: the same lane every time.
    let mut h = DefaultHasher::new();
    key.hash(&mut h);
    usize::try_from(h.finish() % LANES as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;
    use std::sync::mpsc::channel;

    /// Keys on `n` different lanes.
    fn keys_on_distinct_lanes(n: usize) -> Vec<String> {
        let mut seen = Vec::new();
        let mut keys = Vec::new();
        for i in 0.. {
            let k = format!("key{i}");
            if !seen.contains(&lane_of(&k)) {
                seen.push(lane_of(&k));
                keys.push(k);
            }
            if keys.len() == n {
                break;
            }
        }
        keys
    }

    #[test]
    fn one_lease_in_order_others_at_once() {
        let log = Arc::new(Mutex::new(Vec::<String>::new()));
        let mut lanes: Lanes<Vec<u32>> = Lanes::new(Vec::new);
        let keys = keys_on_distinct_lanes(2);
        let (a, b) = (&keys[0], &keys[1]);
        // Lease a's lane is stuck until we say so.
        let (unblock, blocked) = channel::<()>();
        let l = log.clone();
        lanes
            .submit(
                Path::new("/ls"),
                a,
                Box::new(move |_| {
                    blocked.recv().ok();
                    l.lock().unwrap().push("a1".into());
                }),
            )
            .ok()
            .unwrap();
        let l = log.clone();
        lanes
            .submit(
                Path::new("/ls"),
                a,
                Box::new(move |_| l.lock().unwrap().push("a2".into())),
            )
            .ok()
            .unwrap();
        // Lease b's job runs meanwhile.
        let (done_tx, done) = channel::<()>();
        let l = log.clone();
        lanes
            .submit(
                Path::new("/ls"),
                b,
                Box::new(move |_| {
                    l.lock().unwrap().push("b".into());
                    done_tx.send(()).ok();
                }),
            )
            .ok()
            .unwrap();
        done.recv_timeout(Duration::from_secs(10)).unwrap();
        assert_eq!(*log.lock().unwrap(), ["b"]);
        unblock.send(()).unwrap();
        assert_eq!(lanes.stop(Duration::from_secs(10)), 0);
        assert_eq!(*log.lock().unwrap(), ["b", "a1", "a2"]);
    }

    #[test]
    fn a_panicking_job_leaves_the_lane_and_its_state() {
        let mut lanes: Lanes<Vec<u32>> = Lanes::new(Vec::new);
        let (tx, rx) = channel::<Vec<u32>>();
        lanes
            .submit(
                Path::new("/ls"),
                "k",
                Box::new(|s: &mut Vec<u32>| s.push(1)),
            )
            .ok()
            .unwrap();
        lanes
            .submit(
                Path::new("/ls"),
                "k",
                Box::new(|_: &mut Vec<u32>| panic!("a job fails")),
            )
            .ok()
            .unwrap();
        lanes
            .submit(
                Path::new("/ls"),
                "k",
                Box::new(move |s: &mut Vec<u32>| {
                    s.push(2);
                    tx.send(s.clone()).ok();
                }),
            )
            .ok()
            .unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(10)).unwrap(), [1, 2]);
        assert_eq!(lanes.stop(Duration::from_secs(10)), 0);
    }

    #[test]
    fn state_stays_with_the_lane_and_stop_reports_stuck_lanes() {
        let mut lanes: Lanes<Vec<u32>> = Lanes::new(Vec::new);
        let (tx, rx) = channel::<Vec<u32>>();
        for n in 1..=3 {
            let tx = tx.clone();
            lanes
                .submit(
                    Path::new("/ls"),
                    "k",
                    Box::new(move |s: &mut Vec<u32>| {
                        s.push(n);
                        tx.send(s.clone()).ok();
                    }),
                )
                .ok()
                .unwrap();
        }
        let seen: Vec<Vec<u32>> = (0..3)
            .map(|_| rx.recv_timeout(Duration::from_secs(10)).unwrap())
            .collect();
        let last = seen.last().unwrap();
        assert_eq!(*last, [1, 2, 3]);
        // Another lockspace has lanes of its own; one of them never finishes.
        let (_keep, stuck) = channel::<()>();
        lanes
            .submit(
                Path::new("/other"),
                "k",
                Box::new(move |_| {
                    stuck.recv().ok();
                }),
            )
            .ok()
            .unwrap();
        assert_eq!(lanes.stop(Duration::from_millis(50)), 1);
    }
}
