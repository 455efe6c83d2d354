//! The guests' private Ethernet: a hub thread in the test process relaying frames between
//! QEMU `-netdev dgram` endpoints on Unix datagram sockets in the run directory.
//!
//! Each guest's virtio-net NIC sends every frame as one datagram to its own hub port
//! (`net-hub<N>.sock`); the hub floods it to every other guest's socket
//! (`<guest>.net.sock`). Nothing touches an IP socket on the machine: the traffic never
//! leaves the rig's run directory. A guest that is not up (yet, or any more) just misses
//! the frames sent its way, as a host whose cable is unplugged would.

use std::os::fd::AsFd;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;

use crate::error::{IoContext, Result};

/// The guests' subnet (/24); the NFS server is `.1`, host *i* is `.(10 + i)`.
pub const SUBNET: &str = "10.77.0";

/// One guest's attachment to the hub.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Port {
    /// The hub's socket for this guest (QEMU's `remote.path`).
    pub hub: PathBuf,
    /// The guest's own socket (QEMU's `local.path`).
    pub guest: PathBuf,
}

/// A running hub; the thread stops when this is dropped.
#[derive(Debug)]
pub(crate) struct Hub {
    ports: Vec<Port>,
    stop: Arc<AtomicBool>,
    frames: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Hub {
    /// Bind one hub socket per guest name and start relaying.
    pub(crate) fn start(dir: &Path, guests: &[String]) -> Result<Self> {
        let mut ports = Vec::new();
        let mut socks = Vec::new();
        for (i, name) in guests.iter().enumerate() {
            let port = Port {
                hub: dir.join(format!("net-hub{i}.sock")),
                guest: dir.join(format!("{name}.net.sock")),
            };
            let _ = std::fs::remove_file(&port.hub);
            let _ = std::fs::remove_file(&port.guest);
            let s = UnixDatagram::bind(&port.hub)
                .io_context(|| format!("binding {}", port.hub.display()))?;
            s.set_nonblocking(true)
                .io_context(|| "non-blocking hub socket".into())?;
            socks.push(s);
            ports.push(port);
        }
        let stop = Arc::new(AtomicBool::new(false));
        let frames = Arc::new(AtomicU64::new(0));
        let peers: Vec<PathBuf> = ports.iter().map(|p| p.guest.clone()).collect();
        let (st, fr) = (stop.clone(), frames.clone());
        let thread = std::thread::Builder::new()
            .name("vm-net-hub".into())
            .spawn(move || relay(&socks, &peers, &st, &fr))
            .io_context(|| "starting the hub thread".into())?;
        Ok(Self {
            ports,
            stop,
            frames,
            thread: Some(thread),
        })
    }

    /// The attachment of guest `i` (in the order given to [`Hub::start`]).
    pub(crate) fn port(&self, i: usize) -> Option<&Port> {
        self.ports.get(i)
    }

    /// Frames relayed so far.
    pub(crate) fn frames(&self) -> u64 {
        self.frames.load(Ordering::Relaxed)
    }
}

fn relay(socks: &[UnixDatagram], peers: &[PathBuf], stop: &AtomicBool, frames: &AtomicU64) {
    let mut buf = vec![0u8; 65536];
    while !stop.load(Ordering::Relaxed) {
        let mut fds: Vec<nix::poll::PollFd<'_>> = socks
            .iter()
            .map(|s| nix::poll::PollFd::new(s.as_fd(), nix::poll::PollFlags::POLLIN))
            .collect();
        if nix::poll::poll(&mut fds, 100u16).unwrap_or(0) <= 0 {
            continue;
        }
        let ready: Vec<bool> = fds
            .iter()
            .map(|f| {
                f.revents()
                    .is_some_and(|r| r.contains(nix::poll::PollFlags::POLLIN))
            })
            .collect();
        for (from, sock) in socks.iter().enumerate() {
            if !ready[from] {
                continue;
            }
            // drain what is queued on this port
            while let Ok(n) = sock.recv(&mut buf) {
                frames.fetch_add(1, Ordering::Relaxed);
                for (to, peer) in peers.iter().enumerate() {
                    if to != from {
                        // a guest that is down: its frames are lost, as on a real wire
                        let _ = socks[to].send_to(&buf[..n], peer);
                    }
                }
            }
        }
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        for p in &self.ports {
            let _ = std::fs::remove_file(&p.hub);
            let _ = std::fs::remove_file(&p.guest);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, Instant};

    #[test]
    fn hub_floods_frames_to_the_other_ports() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = ["a", "b", "c"].iter().map(|s| (*s).to_owned()).collect();
        let hub = Hub::start(dir.path(), &names).unwrap();
        let guests: Vec<UnixDatagram> = (0..3)
            .map(|i| {
                let s = UnixDatagram::bind(&hub.port(i).unwrap().guest).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                s
            })
            .collect();
        guests[0]
            .send_to(b"frame-from-a", &hub.port(0).unwrap().hub)
            .unwrap();
        let mut buf = [0u8; 64];
        for g in &guests[1..] {
            let n = g.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"frame-from-a");
        }
        guests[0].set_nonblocking(true).unwrap();
        assert!(guests[0].recv(&mut buf).is_err(), "no echo to the sender");
        let t = Instant::now();
        while hub.frames() < 1 && t.elapsed() < Duration::from_secs(5) {
            std::thread::yield_now();
        }
        assert_eq!(hub.frames(), 1);
        let hub_sock = hub.port(1).unwrap().hub.clone();
        drop(hub);
        assert!(!hub_sock.exists(), "hub sockets removed");
    }
}
