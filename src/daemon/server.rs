//! The daemon's I/O shell: the Unix socket, connections, owner watches, logging.
//!
//! Tasks, all on one thread (a current-thread tokio runtime):
//! - One **table task** owns the [`Table`], the resolver and the configuration. Commands
//!   reach it over a channel and it answers over a oneshot; nothing else touches a lease, and
//!   it holds nothing across an await.
//! - The accept loop, one task per connection (at most [`MAX_CLIENTS`]; at the limit the one
//!   that has waited longest for a request makes room, see `Slots`), and one watch task
//!   per owner: it waits for the owner's pidfd to become readable (the process exited) — or,
//!   on kernels without pidfd, polls the process start time — and tells the table task.
//!
//! Lease I/O (open, fcntl, write, unlink) is blocking. For a lockspace on a local file
//! system it runs inline in the table task: a request then never crosses a thread, which
//! halves its latency (`cargo bench --bench lease`). A lockspace that may hang — any other
//! file system (NFS, CIFS, cluster and FUSE file systems), every lockspace's first lease
//! (which finds out), or every lockspace with `lease_io_threads = "all"` — has its lease I/O
//! done on lanes ([`super::lanes`]): an acquire that needs such a lease parks until the lanes
//! report, while the table task serves everything else; a release of one is queued on its
//! lane and answered at once. An acquire runs through the table only once no lane work is
//! left for it, so the one acquire rule is applied by the table alone, in one step, with
//! the leases the lanes took in hand ([`Shell::run_acquire`]).
//!
//! Messages are bounded ([`MAX_MESSAGE`]); a client that disconnects mid-message leaves
//! nothing behind. No lease is left held for a caller that saw its acquire fail: an
//! `Acquire` whose caller hung up before the table task got to it is not carried out
//! (`hung_up`), and one whose reply cannot be written is undone (`Table::undo`). A reply
//! that reaches the caller's socket just before the caller gives up counts as delivered;
//! the owner's death releases what it holds then. Other requests are carried out whoever
//! waits for them: a release leaves nothing held either way.

// A `Failure` is built once per refused request; its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

use super::access;
use super::plan;
use super::pr_layer::{self, LaneDone, LaneSetup, Plan, PrBackend, Reported};
use super::protocol::{
    self, AcquireParams, DiskMode, Failure, Framer, Info, LeasesReply, LostAction, MAX_DISKS,
    MAX_MESSAGE, OnLost, Rejected, Request, VersionReply,
};
use super::table::{
    AcquireRequest, Effect, Event, Identity, LeaseId, OwnerSelector, Refusal, ReleaseOutcome,
    Table, Target, Undo,
};
use crate::exit::{Code, chain_std};
use crate::lockspace::{HostIdentity, LeaseError, Mode, Owner, Released};
use crate::output::bounded;
use crate::settings::Settings;

/// Connections open at once. A new one beyond it takes the place of the connection that has
/// waited longest for a request (`Slots`), or waits in the listen backlog while all are
/// being served.
pub const MAX_CLIENTS: usize = 1024;
/// How long a client has to send a whole request: from when it connects, and again from
/// each reply. A connection that has sent nothing, or part of a request, for that long is
/// closed (it would hold one of the [`MAX_CLIENTS`] slots for nothing); so is one that
/// leaves a reply unread for that long. The CLI sends its request as it connects; a client
/// that keeps a connection between requests connects again after a pause.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often an owner is polled when the kernel has no pidfd.
pub const POLL_OWNER: Duration = Duration::from_millis(200);
/// An acquire queued for less than this is served without first looking whether its caller
/// hung up (one `poll` less per request; see `table_task`).
pub const FRESH: Duration = Duration::from_millis(1);
/// How long a release waits for the lanes that drop its locks before it answers anyway,
/// naming the lease files whose lock is not dropped yet (`ReleaseOutcome::dropping`).
pub const RELEASE_WAIT: Duration = Duration::from_millis(200);
/// How often acquires waiting for a lane are checked for callers that hung up.
pub const SWEEP: Duration = Duration::from_secs(1);
/// How long a stopping daemon waits for its lanes to give back the leases they hold.
pub const LANES_STOP: Duration = Duration::from_secs(5);
/// Owners that hold nothing any more whose watch is kept for a while, so that an owner
/// that acquires again (a script in a loop, a VM that hot-plugs disks) reuses its pidfd
/// instead of opening a new one.
pub const IDLE_WATCHES: usize = 256;

/// Who is on the other end of a connection (SO_PEERCRED).
#[derive(Debug, Clone, Copy)]
struct Peer {
    uid: u32,
    gid: u32,
    /// The process that connected, if the kernel could name it in our pid namespace.
    pid: Option<i32>,
}

impl Peer {
    /// Whom a listing is for: a client that is not root sees other uids' leases without
    /// their owners (`Table::listing`); root sees everything.
    fn viewer(self) -> Option<u32> {
        (self.uid != 0).then_some(self.uid)
    }
}

enum Cmd {
    Request {
        req: Request,
        peer: Peer,
        /// The caller's connection, for an `Acquire` that wants a reply: the table task
        /// looks whether the caller is still there before it takes anything for it.
        caller: Option<Arc<UnixStream>>,
        reply: oneshot::Sender<Answer>,
        /// When the connection task sent it.
        queued: std::time::Instant,
    },
    /// An acquire's reply could not be written: give back what it took.
    Undelivered(Undo),
    OwnerDied {
        uuid: String,
        pid: u32,
    },
    Shutdown {
        done: oneshot::Sender<()>,
    },
    /// Time to check the reservations held (every `pr_check_interval`).
    CheckReservations,
    /// Time to look for acquires waiting for a lane whose callers hung up ([`SWEEP`]).
    Sweep,
    /// A release that waits for lanes to drop its locks has waited [`RELEASE_WAIT`].
    ReleaseDue(u64),
    /// Time to check that the lease files held are still at their paths (every
    /// `lease_check_interval`).
    CheckLeases,
}

/// The table task's answer to a request.
enum Answer {
    /// The encoded reply (JSON and its NUL) and, for an acquire that took leases, what gives
    /// them back if the reply cannot be delivered.
    Reply { bytes: Vec<u8>, undo: Option<Undo> },
    /// The caller hung up before its request was served: nothing was done, no reply.
    CallerGone,
}

/// Runs the daemon until SIGTERM or SIGINT.
pub fn run(settings: Settings, socket: &Path) -> anyhow::Result<Code> {
    raise_nofile_limit();
    // The runtime runs on this thread: the closing of removed lease files waits until it is
    // about to sleep, i.e. until the replies are out, and log lines are written in batches
    // (`idle`).
    super::idle::enable();
    let _flush = super::idle::RunOnDrop;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .on_thread_park(super::idle::on_park)
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(serve(settings, socket))
}

/// Each lease holds an fd: allow as many as the hard limit does.
fn raise_nofile_limit() {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    if let Ok((soft, hard)) = getrlimit(Resource::RLIMIT_NOFILE)
        && soft < hard
        && let Err(e) = setrlimit(Resource::RLIMIT_NOFILE, hard, hard)
    {
        tracing::warn!(soft, hard, error = %e, "cannot raise the open-file limit");
    }
}

async fn serve(settings: Settings, socket: &Path) -> anyhow::Result<Code> {
    // A configuration that asks for reservations without a usable host key fails here,
    // before the socket exists, not at the first acquire.
    let pr = plan::pr_settings(&settings, false)?;
    let (listener, _guard) = listen(socket)?;
    let (tx, rx) = mpsc::channel::<Cmd>(1024);
    let pr_interval = settings.config.pr_check_interval;
    let lease_interval = settings.config.lease_check_interval;
    let table = tokio::spawn(table_task(settings, pr, rx, tx.clone()));
    tokio::spawn(super::idle::log_writer());
    // Acquires that wait for a lane are looked at once a second: one whose caller hung up
    // is given up, so that its connection closes.
    every(SWEEP, &tx, || Cmd::Sweep);
    if lease_interval > 0 {
        every(Duration::from_secs(lease_interval.into()), &tx, || {
            Cmd::CheckLeases
        });
    }
    if pr.is_some() && pr_interval > 0 {
        every(Duration::from_secs(pr_interval.into()), &tx, || {
            Cmd::CheckReservations
        });
    }
    tracing::info!(
        event = "start",
        socket = %socket.display(),
        pid = std::process::id(),
        version = env!("CARGO_PKG_VERSION"),
        "disklock daemon listening on {}",
        socket.display()
    );
    // The socket is bound and listening: connections queue from here on.
    notify(&format!(
        "READY=1\nSTATUS=listening on {}\nMAINPID={}",
        socket.display(),
        std::process::id()
    ));
    let limit = Arc::new(Semaphore::new(MAX_CLIENTS));
    let slots = Arc::new(Slots::default());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot catch SIGTERM")?;
    let mut int = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .context("cannot catch SIGINT")?;
    let mut full_since: Option<tokio::time::Instant> = None;
    loop {
        let stream = tokio::select! {
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    // EMFILE and friends: back off instead of spinning.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = term.recv() => break,
            _ = int.recv() => break,
        };
        let permit = match limit.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                // Every slot is taken: the connection that has waited longest for a request
                // makes room; if all are being served, the first to finish does.
                if full_since.is_none_or(|t| t.elapsed() > Duration::from_secs(60)) {
                    full_since = Some(tokio::time::Instant::now());
                    tracing::warn!(
                        event = "connections-full",
                        limit = MAX_CLIENTS,
                        "all {MAX_CLIENTS} connections are open; closing those that wait \
                         longest for a request to make room"
                    );
                }
                slots.close_longest_waiting();
                tokio::select! {
                    p = limit.clone().acquire_owned() => p.context("connection limit closed")?,
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                }
            }
        };
        let (id, waiting) = slots.open();
        let guard = SlotGuard {
            slots: slots.clone(),
            id,
            _permit: permit,
        };
        let tx = tx.clone();
        let task = tokio::spawn(async move {
            connection(stream, tx, &guard.slots, &waiting).await;
            drop(guard);
        });
        // The runtime runs on this thread: the task cannot start, let alone end, before
        // it is registered here.
        slots.register(id, task.abort_handle());
    }
    notify("STOPPING=1");
    let (done_tx, done_rx) = oneshot::channel();
    if tx.send(Cmd::Shutdown { done: done_tx }).await.is_ok() {
        let _ = done_rx.await;
    }
    drop(tx);
    if table.await.is_err() {
        anyhow::bail!("the lease table task panicked");
    }
    Ok(Code::Ok)
}

/// Sends the table task `cmd()` every `period`, the first one period from now, until the
/// table task is gone. A late tick is not made up for.
fn every(period: Duration, tx: &mpsc::Sender<Cmd>, cmd: fn() -> Cmd) {
    let tx = tx.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if tx.send(cmd()).await.is_err() {
                return;
            }
        }
    });
}

/// Tells systemd how the daemon is doing (`Type=notify`): one datagram to `$NOTIFY_SOCKET`
/// (a path, or `@name` in the abstract namespace), as `sd_notify(3)` sends it. Does nothing
/// when the variable is unset (not started by systemd).
fn notify(state: &str) {
    let Some(addr) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = send_notify(&addr, state) {
        tracing::warn!(error = %e, socket = ?addr, "cannot notify systemd");
    }
}

fn send_notify(addr: &std::ffi::OsStr, state: &str) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt as _;
    use std::os::unix::ffi::OsStrExt as _;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let sa = match addr.as_bytes().strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(Path::new(addr))?,
    };
    UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &sa)?;
    Ok(())
}

/// Removes the socket when the daemon stops; the lock file's lock goes with the process.
struct SocketGuard {
    socket: PathBuf,
    _lock: std::fs::File,
}

impl Drop for SocketGuard {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.socket);
    }
}

/// Binds the socket (mode 0600, in a 0700 directory created if missing). A lock on
/// `<socket>.lock` makes sure one daemon owns a socket path; with it held, whatever is at
/// the path is a stale socket of a dead daemon and is removed.
fn listen(socket: &Path) -> anyhow::Result<(UnixListener, SocketGuard)> {
    use std::os::unix::fs::{DirBuilderExt as _, FileTypeExt as _, OpenOptionsExt as _};
    let dir = socket
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .with_context(|| format!("socket {}: no directory", socket.display()))?;
    if !dir.is_dir() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("cannot create socket directory {}", dir.display()))?;
    }
    let lock_path = PathBuf::from(format!("{}.lock", socket.display()));
    let lock = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&lock_path)
        .with_context(|| format!("cannot open {}", lock_path.display()))?;
    let fl = libc::flock {
        l_type: crate::lockspace::short(libc::F_WRLCK),
        l_whence: crate::lockspace::short(libc::SEEK_SET),
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    if let Err(e) = nix::fcntl::fcntl(&lock, nix::fcntl::FcntlArg::F_SETLK(&fl)) {
        anyhow::bail!(
            "another disklock daemon serves {} ({} is locked: {e})",
            socket.display(),
            lock_path.display()
        );
    }
    match std::fs::symlink_metadata(socket) {
        Ok(m) if m.file_type().is_socket() => {
            tracing::info!(socket = %socket.display(), "removing the stale socket of a dead daemon");
            std::fs::remove_file(socket)
                .with_context(|| format!("cannot remove stale socket {}", socket.display()))?;
        }
        Ok(_) => anyhow::bail!(
            "{} exists and is not a socket; not replacing it",
            socket.display()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("cannot stat {}", socket.display())),
    }
    let listener = UnixListener::bind(socket)
        .with_context(|| format!("cannot listen on {}", socket.display()))?;
    let guard = SocketGuard {
        socket: socket.to_path_buf(),
        _lock: lock,
    };
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot set the mode of {}", socket.display()))?;
    Ok((listener, guard))
}

/// The open connections, for the limit of [`MAX_CLIENTS`]: which of them are waiting for a
/// request, and since when. When every slot is taken, a new client gets the slot of the
/// connection that has waited longest for a request (`close_longest_waiting`), so idle
/// connections, however many, never lock a client out; the idle timeout closes them anyway
/// after [`IDLE_TIMEOUT`]. A connection being served (its request with the table, its reply
/// being written) is never closed for room: the table finishes it.
///
/// Not a reserve of slots for `status`: the daemon cannot tell what a connection will ask
/// before reading its request, and idle connections would fill a reserve as well.
#[derive(Default)]
struct Slots {
    open: std::sync::Mutex<HashMap<u64, Slot>>,
    next_id: AtomicU64,
    /// Ticks each time a connection starts to wait for a request: a lower tick waited longer.
    clock: AtomicU64,
}

struct Slot {
    /// The tick at which the connection began to wait for a request; 0 while it is served.
    waiting: Arc<AtomicU64>,
    task: Option<tokio::task::AbortHandle>,
}

impl Slots {
    /// A new connection's slot: its id and its waiting tick (it waits for a request).
    fn open(&self) -> (u64, Arc<AtomicU64>) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let waiting = Arc::new(AtomicU64::new(0));
        self.waiting(&waiting);
        let slot = Slot {
            waiting: waiting.clone(),
            task: None,
        };
        self.lock().insert(id, slot);
        (id, waiting)
    }

    /// The task serving connection `id`, which closing it aborts.
    fn register(&self, id: u64, task: tokio::task::AbortHandle) {
        if let Some(slot) = self.lock().get_mut(&id) {
            slot.task = Some(task);
        }
    }

    /// The connection with this tick starts to wait for a request.
    fn waiting(&self, tick: &AtomicU64) {
        let now = self.clock.fetch_add(1, Ordering::Relaxed) + 1;
        tick.store(now, Ordering::Relaxed);
    }

    /// The connection with this tick has a request: it is served, and not closed for room.
    fn serving(tick: &AtomicU64) {
        tick.store(0, Ordering::Relaxed);
    }

    /// Closes the connection that has waited longest for a request (its task is aborted
    /// at an await, where it holds no request; dropping it frees the slot). False when every
    /// connection is being served.
    fn close_longest_waiting(&self) -> bool {
        let open = self.lock();
        let oldest = open
            .values()
            .filter_map(|s| {
                let t = s.waiting.load(Ordering::Relaxed);
                Some((t, s.task.as_ref()?)).filter(|_| t != 0)
            })
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, task)) => {
                task.abort();
                true
            }
            None => false,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Slot>> {
        // Nothing panics while holding it; a poisoned map is still a correct map.
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A connection's slot, given back when its task ends or is aborted.
struct SlotGuard {
    slots: Arc<Slots>,
    id: u64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for SlotGuard {
    fn drop(&mut self) {
        self.slots.lock().remove(&self.id);
    }
}

/// Serves one client connection: its requests in order, each reply written before the next
/// request is read. A connection that does not complete a request within [`IDLE_TIMEOUT`]
/// of connecting or of its last reply is closed, as is one that does not read its reply.
///
/// Requests are peeked off the socket and consumed only once the replies to the requests
/// they complete are written. Consuming a client's bytes frees its send buffer, and Linux
/// then wakes whatever waits on the client's socket: a client blocked in `read` for its
/// reply would wake for nothing, and the daemon would pay for that wakeup (on a VM an
/// inter-processor interrupt) before starting on the request. Consumed after the reply, they
/// wake nobody: the reply has woken the client already. It costs one `recvfrom` more.
async fn connection(stream: UnixStream, tx: mpsc::Sender<Cmd>, slots: &Slots, waiting: &AtomicU64) {
    // Shared with the table task while it serves an acquire (`Cmd::Request::caller`).
    let stream = Arc::new(stream);
    let peer = match stream.peer_cred() {
        Ok(c) => Peer {
            uid: c.uid(),
            gid: c.gid(),
            pid: c.pid(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "cannot read peer credentials; closing");
            return;
        }
    };
    let mut framer = Framer::default();
    let mut buf = vec![0u8; 16 * 1024];
    let mut deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
    loop {
        let n = match tokio::time::timeout_at(deadline, peek(&stream, &mut buf)).await {
            // Closed, possibly mid-message: the partial message is dropped with the framer.
            Ok(Ok(0) | Err(_)) => return,
            Ok(Ok(n)) => n,
            Err(_) => {
                tracing::debug!(
                    uid = peer.uid,
                    partial = framer.pending(),
                    "no whole request within {IDLE_TIMEOUT:?}; closing"
                );
                return;
            }
        };
        framer.push(&buf[..n]);
        let mut replied = false;
        loop {
            match framer.next_message() {
                Ok(Some(msg)) => {
                    Slots::serving(waiting);
                    // None: not a Varlink call (a protocol error), or the caller is gone.
                    let Some(served) = handle(&msg, peer, &stream, &tx).await else {
                        return;
                    };
                    if !served.oneway && write_reply(&stream, &served.reply).await.is_err() {
                        // The caller sees a failure: it must not hold what it never heard of.
                        if let Some(undo) = served.undo {
                            let _ = tx.send(Cmd::Undelivered(undo)).await;
                        }
                        return;
                    }
                    replied = true;
                }
                Ok(None) => break,
                Err(protocol::TooLarge(_)) => {
                    let reply = protocol::encode_failure(&Failure::RequestTooLarge {
                        limit: MAX_MESSAGE as u64,
                    });
                    let _ = write_reply(&stream, &reply).await;
                    tracing::warn!(uid = peer.uid, "request over {MAX_MESSAGE} bytes; closing");
                    return;
                }
            }
        }
        // A short peek saw everything queued: once it is consumed, the socket is drained
        // (as tokio assumes after a short read), and the next wait needs no `recvfrom` to
        // find that out.
        let drained = n < buf.len();
        if consume(&stream, &mut buf, n, drained).is_err() {
            return;
        }
        if replied {
            deadline = tokio::time::Instant::now() + IDLE_TIMEOUT;
            slots.waiting(waiting);
        }
    }
}

/// Writes a reply. A client that takes none of it for [`IDLE_TIMEOUT`] is given up on
/// (`TimedOut`): its connection would otherwise hold its slot for as long as it does not read.
async fn write_reply(stream: &UnixStream, mut reply: &[u8]) -> std::io::Result<()> {
    use std::io::ErrorKind;
    while !reply.is_empty() {
        match stream.try_write(reply) {
            Ok(n) => reply = &reply[n..],
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                tokio::time::timeout(IDLE_TIMEOUT, stream.writable())
                    .await
                    .map_err(|_| std::io::Error::from(ErrorKind::TimedOut))??;
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Waits for bytes from the client and copies them into `buf` without consuming them; 0 at
/// the end of the stream.
async fn peek(stream: &UnixStream, buf: &mut [u8]) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd as _;
    loop {
        stream.readable().await?;
        let r = stream.try_io(tokio::io::Interest::READABLE, || {
            nix::sys::socket::recv(
                stream.as_raw_fd(),
                buf,
                nix::sys::socket::MsgFlags::MSG_PEEK,
            )
            .map_err(std::io::Error::from)
        });
        match r {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            r => return r,
        }
    }
}

/// Consumes the `n` bytes [`peek`] saw (`scratch` takes them again); `drained` marks the
/// socket as having nothing more to read (see `connection`): new bytes that arrive meanwhile
/// make it readable again, as for any read that found the socket empty.
fn consume(
    stream: &UnixStream,
    scratch: &mut [u8],
    n: usize,
    drained: bool,
) -> std::io::Result<()> {
    use std::io::{Error, ErrorKind};
    use std::os::fd::AsRawFd as _;
    let r = stream.try_io(tokio::io::Interest::READABLE, || {
        let mut left = n;
        while left > 0 {
            match nix::sys::socket::recv(
                stream.as_raw_fd(),
                &mut scratch[..left],
                nix::sys::socket::MsgFlags::empty(),
            ) {
                Ok(0) | Err(nix::errno::Errno::EAGAIN) => {
                    // Only this task reads the socket: peeked bytes cannot be gone.
                    return Err(Error::new(
                        ErrorKind::UnexpectedEof,
                        "peeked bytes vanished",
                    ));
                }
                Ok(k) => left -= k,
                Err(nix::errno::Errno::EINTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
        // WouldBlock is how `try_io` is told that the socket has nothing more to read.
        if drained {
            Err(ErrorKind::WouldBlock.into())
        } else {
            Ok(())
        }
    });
    match r {
        Err(e) if e.kind() == ErrorKind::WouldBlock => Ok(()),
        r => r,
    }
}

/// A message answered.
struct Served {
    /// The reply, encoded (JSON and its NUL).
    reply: Vec<u8>,
    /// The call was oneway: no reply to send.
    oneway: bool,
    /// For an acquire that took leases: what gives them back if the reply is not delivered.
    undo: Option<Undo>,
}

/// Answers one message. None for a message that is no Varlink call, and for an acquire
/// whose caller hung up before it was served.
async fn handle(
    msg: &[u8],
    peer: Peer,
    stream: &Arc<UnixStream>,
    tx: &mpsc::Sender<Cmd>,
) -> Option<Served> {
    let (req, oneway) = match Request::decode(msg) {
        Ok(r) => r,
        Err(Rejected::NotACall(why)) => {
            tracing::warn!(
                event = "not-a-call",
                uid = peer.uid,
                reason = &*bounded(&why),
                "a message of uid {} is no Varlink call; closing the connection",
                peer.uid
            );
            return None;
        }
        Err(Rejected::Call {
            failure,
            oneway,
            why,
        }) => {
            if let (Failure::InvalidParameter { parameter }, Some(why)) = (&failure, why) {
                log_invalid(peer, parameter, &why);
            }
            let reply = protocol::encode_failure(&failure);
            return Some(Served {
                reply,
                oneway,
                undo: None,
            });
        }
    };
    let mut undo = None;
    let reply = match req {
        Request::Version => protocol::encode_ok(&VersionReply {
            version: env!("CARGO_PKG_VERSION").into(),
            protocol: protocol::PROTOCOL,
        }),
        Request::GetInfo => protocol::encode_ok(&Info::this()),
        Request::GetInterfaceDescription { interface } => match protocol::description(&interface) {
            Some(description) => protocol::encode_ok(&protocol::DescriptionReply { description }),
            None => protocol::encode_failure(&Failure::InterfaceNotFound { interface }),
        },
        req => {
            let (reply_tx, reply_rx) = oneshot::channel();
            // A oneway caller need not wait for its acquire: it is carried out regardless.
            let caller = (!oneway && matches!(req, Request::Acquire(_))).then(|| stream.clone());
            let sent = tx
                .send(Cmd::Request {
                    req,
                    peer,
                    caller,
                    reply: reply_tx,
                    queued: std::time::Instant::now(),
                })
                .await;
            match (sent, reply_rx.await) {
                (Ok(()), Ok(Answer::Reply { bytes, undo: u })) => {
                    undo = u;
                    bytes
                }
                (Ok(()), Ok(Answer::CallerGone)) => return None,
                _ => protocol::encode_failure(&Failure::ShuttingDown {}),
            }
        }
    };
    Some(Served {
        reply,
        oneway,
        undo,
    })
}

/// Whether the caller on `conn` has hung up: it closed its end (or shut down both
/// directions), which the kernel reports as POLLHUP, or the connection failed (POLLERR).
/// One `poll` that does not wait. A caller that only shut down its writing half, having
/// sent its request, still gets its reply.
fn hung_up(conn: &UnixStream) -> bool {
    use nix::poll::{PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd as _;
    let mut fds = [PollFd::new(conn.as_fd(), PollFlags::empty())];
    nix::poll::poll(&mut fds, PollTimeout::ZERO).is_ok()
        && fds[0]
            .revents()
            .is_some_and(|r| r.intersects(PollFlags::POLLHUP | PollFlags::POLLERR))
}

/// Logs why a parameter was refused (the `InvalidParameter` error names only the parameter).
fn log_invalid(peer: Peer, parameter: &str, why: &str) {
    tracing::warn!(
        event = "invalid-parameter",
        uid = peer.uid,
        parameter = &*bounded(parameter),
        reason = &*bounded(why),
        "refused a call of uid {}: invalid parameter",
        peer.uid
    );
}

/// An `InvalidParameter` refusal of `parameter`, its reason logged.
fn invalid(peer: Peer, parameter: &str, why: &str) -> Failure {
    log_invalid(peer, parameter, why);
    Failure::InvalidParameter {
        parameter: parameter.to_owned(),
    }
}

/// Lets the tasks already queued on this (current-thread) runtime run first — the connection
/// task that writes a reply — by waking itself once, which queues it behind them.
/// `tokio::task::yield_now` would do as well, but it also polls the I/O driver before the
/// task runs again: one more `epoll_wait` per request.
#[derive(Default)]
struct YieldToQueued {
    yielded: bool,
}

impl std::future::Future for YieldToQueued {
    type Output = ();

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.yielded {
            return std::task::Poll::Ready(());
        }
        self.yielded = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

/// The table task's state besides the table.
struct Shell {
    settings: Settings,
    table: Table<PrBackend>,
    /// Watches of the owners the table holds leases for, by uuid.
    watches: HashMap<String, Watch>,
    /// Watches of owners that hold nothing any more, kept (at most [`IDLE_WATCHES`]) for an
    /// owner that comes back: it reuses its watch and pidfd.
    idle: HashMap<String, Watch>,
    /// Owner processes checked by the current request, until their watch starts.
    pending: HashMap<String, ProcHandle>,
    tx: mpsc::Sender<Cmd>,
    /// Acquires waiting for lanes to take their leases, by token.
    parked: HashMap<u64, Acquire>,
    /// Acquires waiting for leases other acquires have claimed ([`PrBackend::claimed_by`]).
    waiting: Vec<Acquire>,
    /// Tokens given out so far.
    tokens: u64,
    /// A claimed lease was freed since the waiting acquires last ran.
    freed: bool,
    /// Releases waiting for lanes to drop their locks.
    releasing: Vec<ReleaseWait>,
    /// What to do to each owner (by uuid) when one of its leases is lost, as its last
    /// acquire that said so asked; until it holds nothing.
    on_lost: HashMap<String, OnLost>,
}

/// A release whose locks lanes are dropping: answered when they are done, or after
/// [`RELEASE_WAIT`].
struct ReleaseWait {
    token: u64,
    leases: Vec<LeaseId>,
    outcome: ReleaseOutcome,
    reply: oneshot::Sender<Answer>,
}

/// An acquire, checked and resolved, from its request until the table has run it.
struct Acquire {
    /// Names its claims on leases and what lanes take for it.
    token: u64,
    peer: Peer,
    caller: Option<Arc<UnixStream>>,
    reply: oneshot::Sender<Answer>,
    /// When it was asked (the leases' `since`).
    now: u64,
    plan: Planned,
    /// Leases lanes are taking for it, not reported yet.
    outstanding: usize,
}

/// An acquire's request, checked and resolved.
struct Planned {
    /// One target per lease (the table's own dedup: the mode a lane takes is the one the
    /// table asks for).
    targets: Vec<Target>,
    /// The read-only disks that get no lease.
    skipped: Vec<String>,
    owner: Owner,
    owner_uid: u32,
    /// How the disks that get a reservation get it.
    plans: Vec<(disklock_naming::DiskKey, Plan)>,
    /// The owner process as checked, until its watch starts.
    handle: Option<ProcHandle>,
    /// What to do to the owner if a lease is lost.
    on_lost: Option<OnLost>,
}

async fn table_task(
    settings: Settings,
    pr: Option<pr_layer::Settings>,
    mut rx: mpsc::Receiver<Cmd>,
    tx: mpsc::Sender<Cmd>,
) {
    let identity = Identity {
        host: HostIdentity::this_host(),
        pid: std::process::id(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let resolver =
        disklock_naming::Resolver::new(settings.resolver.root().clone(), settings.resolver.order());
    // Lanes report on a channel of their own, without bound: a lane never waits for the
    // table task (which may be waiting for the lanes, when the daemon stops).
    let (lane_tx, mut lane_rx) = mpsc::unbounded_channel::<LaneDone>();
    let (root, order) = (
        settings.resolver.root().clone(),
        settings.resolver.order().to_vec(),
    );
    let setup = LaneSetup {
        all: settings.lease_io_all,
        resolver: Arc::new(move || disklock_naming::Resolver::new(root.clone(), &order)),
        report: Arc::new(move |d| {
            let _ = lane_tx.send(d);
        }),
    };
    let mut shell = Shell {
        table: Table::new(PrBackend::with_lanes(pr, resolver, setup), identity),
        settings,
        watches: HashMap::new(),
        idle: HashMap::new(),
        pending: HashMap::new(),
        tx,
        parked: HashMap::new(),
        waiting: Vec::new(),
        tokens: 0,
        freed: false,
        releasing: Vec::new(),
        on_lost: HashMap::new(),
    };
    loop {
        let cmd = tokio::select! {
            biased;
            Some(done) = lane_rx.recv() => {
                shell.lane_done(done);
                shell.after().await;
                continue;
            }
            cmd = rx.recv() => cmd,
        };
        let Some(cmd) = cmd else { break };
        match cmd {
            Cmd::Request {
                req: Request::Acquire(p),
                peer,
                caller,
                reply,
                queued,
            } => {
                // A caller that sent its request a moment ago has not given up; one that did
                // anyway gets its leases given back when the reply cannot be written (the
                // undo), so only a request that waited in the queue is worth a look first.
                let waited = queued.elapsed() >= FRESH;
                shell.start_acquire(p, peer, caller, reply, waited);
            }
            Cmd::Request {
                req, peer, reply, ..
            } => shell.request(req, peer, reply),
            Cmd::Undelivered(u) => shell.undelivered(u),
            Cmd::OwnerDied { uuid, pid } => shell.owner_died(&uuid, pid),
            Cmd::CheckReservations => shell.check_reservations(),
            Cmd::Sweep => shell.sweep(),
            Cmd::ReleaseDue(token) => shell.release_due(token),
            Cmd::CheckLeases => shell.check_leases(),
            Cmd::Shutdown { done } => {
                shell.stop();
                let _ = done.send(());
                return;
            }
        }
        shell.after().await;
    }
    // Every sender is gone: nobody can ask for anything any more.
    shell.stop();
}

impl Shell {
    /// What follows every command: acquires that waited for a lease another acquire had
    /// claimed run on; then, once the connection tasks have written the replies, the new
    /// leases' holder records are written, owner watches started and events logged.
    /// Commands wait in the channel meanwhile.
    async fn after(&mut self) {
        while std::mem::take(&mut self.freed) {
            for a in std::mem::take(&mut self.waiting) {
                self.run_acquire(a);
            }
        }
        YieldToQueued::default().await;
        self.table.settle();
        self.effects();
        // Releases no request waits for (owner deaths, undos): nobody to answer.
        self.table.backend_mut().take_queued_releases();
    }

    /// The daemon stops: gives up the acquires still waiting, releases every lease, and
    /// waits a moment for the lanes to give theirs back.
    fn stop(&mut self) {
        tracing::info!(
            event = "stop",
            leases = self.table.len(),
            "releasing {} leases",
            self.table.len()
        );
        let given_up: Vec<Acquire> = self
            .parked
            .drain()
            .map(|(_, a)| a)
            .chain(self.waiting.drain(..))
            .collect();
        for a in given_up {
            // Its reply sender drops: the caller is told the daemon is stopping.
            self.table.backend_mut().discard(a.token);
        }
        self.table.shutdown();
        self.effects();
        let stuck = self.table.backend_mut().stop_lanes(LANES_STOP);
        for t in self.releasing.iter().map(|w| w.token).collect::<Vec<_>>() {
            self.release_due(t);
        }
        if stuck > 0 {
            tracing::warn!(
                event = "lanes-stuck",
                lanes = stuck,
                "{stuck} lease I/O threads did not finish within {} s (a lockspace's file \
                 system hangs); their locks go when the process exits",
                LANES_STOP.as_secs()
            );
        }
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// An owner process watch: the task that reports the process's exit.
struct Watch {
    pid: u32,
    /// The process's uid as read when the owner was registered. While the process is
    /// watched it is the same process, and an owner that comes back reuses it, as a
    /// registered owner's uid is reused.
    uid: Option<u32>,
    task: tokio::task::JoinHandle<()>,
    /// How to signal exactly this process (for `on_lost` kill).
    killer: Killer,
}

/// A way to send a signal to one owner process and no other that later gets its pid.
enum Killer {
    /// A pidfd of it (a copy of the watch's).
    Pidfd(std::os::fd::OwnedFd),
    /// Its pid and start time, compared before the signal (kernels without pidfd).
    Pid(u32, Option<u64>),
    /// It is gone.
    Gone,
}

impl Killer {
    fn of(pid: u32, handle: &ProcHandle) -> Killer {
        match handle {
            ProcHandle::Pidfd(fd) => fd.try_clone().map_or(Killer::Gone, Killer::Pidfd),
            ProcHandle::StartTime(start) => Killer::Pid(pid, *start),
            ProcHandle::Gone => Killer::Gone,
        }
    }

    /// SIGKILL; false when the process is gone (or another has its pid now).
    fn kill(&self) -> bool {
        use rustix::process::{Signal, pidfd_send_signal};
        match self {
            Killer::Pidfd(fd) => pidfd_send_signal(fd, Signal::KILL).is_ok(),
            Killer::Pid(pid, start) => {
                start.is_some()
                    && start_time(*pid) == *start
                    && i32::try_from(*pid).is_ok_and(|p| {
                        nix::sys::signal::kill(
                            nix::unistd::Pid::from_raw(p),
                            nix::sys::signal::Signal::SIGKILL,
                        )
                        .is_ok()
                    })
            }
            Killer::Gone => false,
        }
    }
}

impl Shell {
    /// A watch reported that the process `pid` exited. Reports of a watch that was replaced
    /// meanwhile (same uuid, another pid) or of an idle owner change nothing in the table.
    fn owner_died(&mut self, uuid: &str, pid: u32) {
        if self.idle.get(uuid).is_some_and(|w| w.pid == pid) {
            self.idle.remove(uuid);
        }
        if self.table.owner_pid(uuid) != Some(pid) {
            return;
        }
        tracing::info!(event = "owner-exit", owner_uuid = %uuid, owner_pid = pid, "owner process {pid} exited");
        self.watches.remove(uuid);
        self.table.owner_died(uuid);
        self.effects();
    }

    /// Checks and repairs the reservations held; one event per drift found, and an error
    /// event for each disk another host took (its lease stays held for its owner, marked
    /// lost in `status`; the reservation is never taken back on its own).
    fn check_reservations(&mut self) {
        let m = self.table.backend_mut().maintain();
        for f in m.findings {
            if f.repaired {
                tracing::info!(event = "pr-repaired", disk = &*bounded(&f.disk), drift = %f.drift, "reservation repaired: {}", f.drift.fix());
            } else {
                tracing::warn!(event = "pr-drift", disk = &*bounded(&f.disk), drift = %f.drift, "reservation drifted: {}", f.drift.fix());
            }
        }
        for l in m.lost {
            tracing::error!(event = "pr-lost", disk = &*bounded(&l.disk), key = %l.key.as_str(), drift = %l.why, "the disk's reservation is lost: {}", l.why.fix());
            let why = format!("another host took the disk's reservation: {}", l.why);
            for id in self.table.leases_with_key(&l.key) {
                self.lease_lost(&id, &why);
            }
        }
    }

    /// Checks that the lease files held are still at their paths (those on lanes report
    /// later, through [`Shell::lane_done`]).
    fn check_leases(&mut self) {
        for (id, why) in self.table.check_leases() {
            self.lease_lost(&id, &why);
        }
    }

    /// A held lease is lost: another process or host may take its disk. It stays held for
    /// its owners (shown LOST in `status`), and each owner gets the action its acquire
    /// asked for: kill, pause, or nothing more than this log line.
    fn lease_lost(&mut self, id: &LeaseId, why: &str) {
        let owners = self.table.owners_of(id);
        tracing::error!(
            event = "lease-lost",
            key = id.key.as_str(),
            lockspace = &*id.lockspace.to_string_lossy(),
            reason = &*bounded(why),
            owners = owners.len(),
            "a held lease is lost: {why}"
        );
        for o in owners {
            let Some(on_lost) = self.on_lost.get(&o.uuid) else {
                continue;
            };
            match on_lost.action {
                LostAction::Ignore => {}
                LostAction::Kill => {
                    let killed = self.watches.get(&o.uuid).is_some_and(|w| w.killer.kill());
                    tracing::error!(
                        event = "lost-kill",
                        owner = o.name.as_str(),
                        owner_uuid = o.uuid.as_str(),
                        owner_pid = o.pid,
                        killed,
                        "owner {} (pid {}) {} its lease was lost",
                        o.name,
                        o.pid,
                        if killed { "killed:" } else { "already gone:" }
                    );
                }
                LostAction::Pause => {
                    let uri = on_lost.uri.clone().unwrap_or_default();
                    let (uuid, name) = (o.uuid.clone(), o.name.clone());
                    tracing::error!(
                        event = "lost-pause",
                        owner = name.as_str(),
                        owner_uuid = uuid.as_str(),
                        uri = uri.as_str(),
                        "suspending domain {name}: its lease was lost"
                    );
                    tokio::spawn(async move {
                        let out = tokio::process::Command::new("virsh")
                            .args(["-c", &uri, "suspend", &uuid])
                            .stdin(std::process::Stdio::null())
                            .output()
                            .await;
                        match out {
                            Ok(o) if o.status.success() => {}
                            Ok(o) => tracing::error!(
                                event = "lost-pause-failed",
                                owner_uuid = uuid.as_str(),
                                error = &*bounded(String::from_utf8_lossy(&o.stderr).trim()),
                                "virsh suspend failed"
                            ),
                            Err(e) => {
                                tracing::error!(event = "lost-pause-failed", owner_uuid = uuid.as_str(), error = %e, "cannot run virsh")
                            }
                        }
                    });
                }
            }
        }
    }

    /// Gives back what an acquire took: its reply could not be delivered.
    fn undelivered(&mut self, undo: Undo) {
        let owner = undo.owner().to_owned();
        if !self.table.undo(undo) {
            tracing::info!(
                event = "reply-undelivered",
                owner_uuid = owner.as_str(),
                "an acquire's reply was not delivered; its leases stay, as the owner has \
                 acquired again since or is gone"
            );
        }
        self.effects();
    }

    /// Serves a request other than an acquire ([`Shell::start_acquire`]).
    fn request(&mut self, req: Request, peer: Peer, reply: oneshot::Sender<Answer>) {
        let result = match req {
            Request::Acquire(_) => Err(Failure::MethodNotFound {
                method: "(internal)".into(),
            }),
            Request::Release(p) => {
                let targets: Vec<(String, LeaseId)> = p
                    .disks
                    .iter()
                    .map(|d| (d.clone(), self.lease_of(d)))
                    .collect();
                let released = self
                    .table
                    .release(&targets, p.owner.as_deref(), peer.uid)
                    .map_err(failure);
                return self.answer_release(released, reply);
            }
            Request::ReleaseOwner(p) => {
                if p.name.is_none() && p.uuid.is_none() {
                    Err(invalid(peer, "name", "ReleaseOwner needs a name or a uuid"))
                } else {
                    let sel = OwnerSelector {
                        name: p.name,
                        uuid: p.uuid,
                    };
                    let released = self.table.release_owners(&sel, peer.uid).map_err(failure);
                    return self.answer_release(released, reply);
                }
            }
            Request::Status => Ok(protocol::encode_ok(&LeasesReply {
                leases: self.table.listing(None, peer.viewer()),
                skipped: None,
            })),
            // Answered by the connection task.
            Request::Version | Request::GetInfo | Request::GetInterfaceDescription { .. } => {
                Err(Failure::MethodNotFound {
                    method: "(internal)".into(),
                })
            }
        };
        let _ = reply.send(Answer::Reply {
            bytes: result.unwrap_or_else(|f| protocol::encode_failure(&f)),
            undo: None,
        });
    }

    /// Answers a release once the locks it gave up are dropped: at once when they were
    /// dropped here, else when their lanes report, or after [`RELEASE_WAIT`] naming those
    /// not dropped yet. The table has let go of them already either way.
    fn answer_release(
        &mut self,
        released: Result<ReleaseOutcome, Failure>,
        reply: oneshot::Sender<Answer>,
    ) {
        let leases = self.table.backend_mut().take_queued_releases();
        let outcome = match released {
            Ok(o) if !leases.is_empty() => o,
            other => {
                let _ = reply.send(Answer::Reply {
                    bytes: other
                        .map(|o| protocol::encode_ok(&o))
                        .unwrap_or_else(|f| protocol::encode_failure(&f)),
                    undo: None,
                });
                return;
            }
        };
        self.tokens += 1;
        let token = self.tokens;
        self.releasing.push(ReleaseWait {
            token,
            leases,
            outcome,
            reply,
        });
        let tx = self.tx.clone();
        tokio::spawn(async move {
            tokio::time::sleep(RELEASE_WAIT).await;
            let _ = tx.send(Cmd::ReleaseDue(token)).await;
        });
        self.releases_done();
    }

    /// Answers the waiting releases whose locks are all dropped.
    fn releases_done(&mut self) {
        let backend = self.table.backend();
        let (done, wait): (Vec<ReleaseWait>, Vec<ReleaseWait>) =
            std::mem::take(&mut self.releasing)
                .into_iter()
                .partition(|w| w.leases.iter().all(|id| !backend.has_lane_work(id)));
        self.releasing = wait;
        for w in done {
            let _ = w.reply.send(Answer::Reply {
                bytes: protocol::encode_ok(&w.outcome),
                undo: None,
            });
        }
    }

    /// A release waited [`RELEASE_WAIT`] (or the daemon stops): it answers, naming the lease
    /// files whose lock is not dropped yet.
    fn release_due(&mut self, token: u64) {
        let Some(i) = self.releasing.iter().position(|w| w.token == token) else {
            return;
        };
        let mut w = self.releasing.swap_remove(i);
        let backend = self.table.backend();
        w.outcome.dropping = w
            .leases
            .iter()
            .filter(|id| backend.has_lane_work(id))
            .map(LeaseId::path)
            .collect();
        if !w.outcome.dropping.is_empty() {
            tracing::warn!(
                event = "release-pending",
                leases = w.outcome.dropping.len(),
                "released, but {} lease file locks are not dropped yet: their lockspace does \
                 not answer",
                w.outcome.dropping.len()
            );
        }
        let _ = w.reply.send(Answer::Reply {
            bytes: protocol::encode_ok(&w.outcome),
            undo: None,
        });
    }

    /// The lease a disk names: the held lease taken under that exact name (when one was),
    /// else the resolver's answer, or, for a disk that has vanished since, a held lease first
    /// registered under that name.
    ///
    /// The name comes first: a release names the disk as the acquire did, and means the lease
    /// it took then, even if the path leads to another disk by now (a re-pointed symlink).
    /// It also spares resolving the disk again.
    fn lease_of(&self, disk: &str) -> LeaseId {
        if let Some(id) = self.table.lease_named_once(disk) {
            return id;
        }
        match resolve(&self.settings, disk, Mode::Exclusive) {
            Ok(t) => LeaseId {
                lockspace: Arc::from(t.lockspace),
                key: t.key,
            },
            Err(_) => self.table.lease_named(disk).unwrap_or_else(|| LeaseId {
                // Names no lease: the table reports the disk as not held.
                lockspace: Arc::from(Path::new("")),
                key: disklock_naming::DiskKey::new("-")
                    .unwrap_or_else(|_| unreachable!("valid key")),
            }),
        }
    }

    /// Serves an acquire: checks and resolves it, then runs it ([`Shell::run_acquire`]).
    fn start_acquire(
        &mut self,
        p: AcquireParams,
        peer: Peer,
        caller: Option<Arc<UnixStream>>,
        reply: oneshot::Sender<Answer>,
        waited: bool,
    ) {
        // Taking leases (or another host's reservation) for a caller that has given up
        // would leave them held for someone who saw a failure (`waited`: the request sat in
        // the queue; else the undo covers it).
        if waited && caller.as_deref().is_some_and(hung_up) {
            tracing::info!(
                event = "abandoned",
                uid = peer.uid,
                owner = &*bounded(&p.owner.name),
                disks = p.disks.len(),
                "not acquiring: the caller hung up before it was served"
            );
            let _ = reply.send(Answer::CallerGone);
            return;
        }
        match self.plan_acquire(p, peer) {
            Ok(plan) => {
                self.tokens += 1;
                let a = Acquire {
                    token: self.tokens,
                    peer,
                    caller,
                    reply,
                    now: now(),
                    plan,
                    outstanding: 0,
                };
                self.run_acquire(a);
            }
            Err(f) => {
                let _ = reply.send(Answer::Reply {
                    bytes: protocol::encode_failure(&f),
                    undo: None,
                });
            }
        }
    }

    /// Runs an acquire as far as it goes. Leases of lockspaces that may hang are first taken
    /// on lanes, all at once, and the acquire parks until they report; a lease another
    /// acquire claimed makes it wait, holding nothing, until that one is done. Then the
    /// table runs it with no I/O left for those leases: the one acquire rule decides, and
    /// what the lanes took and the table did not use is given back.
    fn run_acquire(&mut self, mut a: Acquire) {
        if a.outstanding > 0 {
            self.parked.insert(a.token, a);
            return;
        }
        let backend = self.table.backend();
        let claimed = backend.claims() > 0
            && a.plan
                .targets
                .iter()
                .any(|t| backend.claimed_by(&t.id()).is_some_and(|c| c != a.token));
        if claimed {
            tracing::info!(
                event = "acquire-waits",
                owner = &*bounded(&a.plan.owner.name),
                "waiting for another acquire of the same lease"
            );
            let before = self.table.backend().claims();
            self.table.backend_mut().discard(a.token);
            self.freed |= self.table.backend().claims() < before;
            self.waiting.push(a);
            return;
        }
        for t in &a.plan.targets {
            let backend = self.table.backend();
            if !backend.needs_lane(&t.lockspace, &t.key) || self.table.holds(&t.lockspace, &t.key) {
                continue;
            }
            let id = t.id();
            if backend.claimed_by(&id) == Some(a.token) {
                continue;
            }
            let holder = self.table.record_for(t, &a.plan.owner, a.now);
            let plan = a
                .plan
                .plans
                .iter()
                .find(|(k, _)| *k == t.key)
                .map(|(_, p)| p.clone());
            self.table
                .backend_mut()
                .prepare(a.token, id, t.mode, holder, plan);
            a.outstanding += 1;
        }
        if a.outstanding > 0 {
            self.parked.insert(a.token, a);
            return;
        }
        // Through the table.
        let Acquire {
            token,
            peer,
            reply,
            now,
            plan:
                Planned {
                    targets,
                    skipped,
                    owner,
                    owner_uid,
                    plans,
                    handle,
                    on_lost,
                },
            ..
        } = a;
        let uuid = on_lost.as_ref().map(|_| owner.uuid.clone());
        if let Some(h) = handle {
            self.pending.insert(owner.uuid.clone(), h);
        }
        for (k, p) in plans {
            self.table.backend_mut().plan(k, p);
        }
        self.table.backend_mut().running(token);
        let result = self.table.acquire(
            AcquireRequest {
                targets,
                owner,
                owner_uid,
                client_uid: peer.uid,
            },
            now,
        );
        self.table.backend_mut().clear_plans();
        self.table.backend_mut().discard(token);
        self.freed = true;
        if let (Ok(_), Some(uuid), Some(o)) = (&result, uuid, on_lost) {
            self.on_lost.insert(uuid, o);
        }
        let bytes = match result {
            Ok(ids) => protocol::encode_ok(&LeasesReply {
                leases: self.table.listing(Some(&ids), peer.viewer()),
                skipped: Some(&skipped),
            }),
            Err(r) => protocol::encode_failure(&failure(r)),
        };
        let undo = self.table.take_undo();
        if let Err(Answer::Reply { undo: Some(u), .. }) = reply.send(Answer::Reply { bytes, undo })
        {
            // The connection task is gone: the reply cannot be delivered.
            self.undelivered(u);
        }
    }

    /// Takes a lane's report; an acquire whose leases are all reported runs on.
    fn lane_done(&mut self, done: LaneDone) {
        match self.table.backend_mut().lane_done(done) {
            Reported::Taken(token) => {
                let Some(a) = self.parked.get_mut(&token) else {
                    return;
                };
                a.outstanding -= 1;
                if a.outstanding == 0
                    && let Some(a) = self.parked.remove(&token)
                {
                    self.give_up_or_run(a);
                }
            }
            Reported::Freed => self.freed = true,
            Reported::Finished => {
                if !self.releasing.is_empty() {
                    self.releases_done();
                }
            }
            Reported::Lost(id, why) => self.lease_lost(&id, &why),
            Reported::Nothing => {}
        }
    }

    /// Runs a parked acquire on, unless its caller hung up meanwhile.
    fn give_up_or_run(&mut self, a: Acquire) {
        if a.caller.as_deref().is_some_and(hung_up) {
            self.give_up(a);
        } else {
            self.run_acquire(a);
        }
    }

    /// Gives up an acquire whose caller hung up while it waited: what lanes took for it is
    /// given back (or will be, when they report).
    fn give_up(&mut self, a: Acquire) {
        tracing::info!(
            event = "abandoned",
            uid = a.peer.uid,
            owner = &*bounded(&a.plan.owner.name),
            disks = a.plan.targets.len(),
            "not acquiring: the caller hung up while the leases were being taken"
        );
        self.table.backend_mut().discard(a.token);
        self.freed = true;
        let _ = a.reply.send(Answer::CallerGone);
    }

    /// Gives up the waiting acquires whose callers hung up.
    fn sweep(&mut self) {
        let gone: Vec<u64> = self
            .parked
            .iter()
            .filter(|(_, a)| a.caller.as_deref().is_some_and(hung_up))
            .map(|(t, _)| *t)
            .collect();
        for t in gone {
            if let Some(a) = self.parked.remove(&t) {
                self.give_up(a);
            }
        }
        let (gone, stay): (Vec<Acquire>, Vec<Acquire>) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|a| a.caller.as_deref().is_some_and(hung_up));
        self.waiting = stay;
        for a in gone {
            self.give_up(a);
        }
    }

    /// Checks and resolves an acquire.
    fn plan_acquire(&mut self, p: AcquireParams, peer: Peer) -> Result<Planned, Failure> {
        let AcquireParams {
            disks,
            owner,
            preempt,
            pr,
            on_lost,
        } = p;
        if let Some(o) = &on_lost {
            check_on_lost(o, peer)?;
        }
        if pr == Some(true) && !self.table.backend().enabled() {
            return Err(invalid(
                peer,
                "pr",
                "persistent reservations are off in the daemon's configuration \
                 (persistent_reservations = 0)",
            ));
        }
        if disks.is_empty() || disks.len() > MAX_DISKS {
            let why = format!(
                "{} disks; between 1 and {MAX_DISKS} are needed",
                disks.len()
            );
            return Err(invalid(peer, "disks", &why));
        }
        check_owner(&owner)?;
        // An owner already registered (same uuid and pid) is watched already. One that held
        // leases before and is still watched (idle) only needs its uid read again. Else
        // check the process now and keep the handle that names it until its watch starts.
        let mut handle = None;
        let owner_uid = match self.table.owner_uid(&owner) {
            Some(uid) => uid,
            None => match self.idle.get(&owner.uuid) {
                Some(w) if w.pid == owner.pid && !w.task.is_finished() => match w.uid {
                    Some(uid) => uid,
                    None => proc_uid(owner.pid)?,
                },
                _ => {
                    let (uid, h) = owner_process(owner.pid)?;
                    handle = Some(h);
                    uid
                }
            },
        };
        let mut targets = Vec::with_capacity(disks.len());
        let mut skipped = Vec::new();
        let mut plans = Vec::new();
        // A client that is not root names only disks it could open itself.
        let creds = (peer.uid != 0).then(|| access::Creds::of_peer(peer.uid, peer.gid, peer.pid));
        for d in &disks {
            if d.lease {
                let t = named_lease(&d.path, d.mode, peer)?;
                targets.push(t);
                continue;
            }
            let Some(mode) = plan::lease_mode(d.mode, self.settings.config.readonly_disk_leases)
            else {
                skipped.push(d.path.clone());
                continue;
            };
            let resolved = plan::resolve(&self.settings, &d.path, mode);
            if let Some(c) = &creds
                && let Err(f) = self.reachable(&d.path, &resolved, mode, c)
            {
                return Err(self.refuse_disk(&d.path, &owner, f));
            }
            match resolved {
                Ok((t, r)) => {
                    if let Some(plan) = self.pr_plan(&t, &r, pr, preempt, peer)? {
                        plans.push((t.key.clone(), plan));
                    }
                    targets.push(t);
                }
                Err(f) => return Err(self.refuse_disk(&d.path, &owner, f)),
            }
        }
        Ok(Planned {
            targets: super::table::dedup(targets),
            skipped,
            owner,
            owner_uid,
            plans,
            handle,
            on_lost,
        })
    }

    /// Whether a client that is not root (`creds`) may name this disk: it could open what it
    /// resolved to (read, and write for an exclusive lease). The disk it could not open and
    /// the disk that does not exist get the same refusal, so that the answer does not tell
    /// which; a disk it can reach but not resolve gets the resolver's reason.
    fn reachable(
        &self,
        disk: &str,
        resolved: &Result<(Target, disklock_naming::Resolution), Failure>,
        mode: Mode,
        creds: &access::Creds,
    ) -> Result<(), Failure> {
        let root = self.settings.resolver.root();
        let (want, what) = match mode {
            Mode::Exclusive => (access::READ | access::WRITE, "reading and writing"),
            Mode::Shared => (access::READ, "reading"),
        };
        let may = match resolved {
            Ok((_, r)) => access::may_open(root, &r.path, creds, want),
            // Not absolute: refused for that, whether it exists or not.
            Err(_) if !disk.starts_with('/') => true,
            Err(_) => access::may_open(root, Path::new(disk), creds, want),
        };
        if may {
            return Ok(());
        }
        Err(Failure::PermissionDenied {
            reason: format!(
                "uid {} cannot open {disk} for {what}, or it does not exist",
                creds.uid
            ),
        })
    }

    /// Logs the refusal of an acquire for one of its disks; the refusal.
    fn refuse_disk(&mut self, disk: &str, owner: &crate::lockspace::Owner, f: Failure) -> Failure {
        let reason = match &f {
            Failure::UnknownDisk { reason, .. } => reason.clone(),
            f => f.to_string(),
        };
        tracing::warn!(
            event = "refuse",
            disk = &*bounded(disk),
            owner = owner.name.as_str(),
            owner_uuid = owner.uuid.as_str(),
            reason = &*bounded(without_disk(&reason, disk)),
            "refused a lease for {}",
            owner.name
        );
        f
    }

    /// Whether and how a resolved disk gets a reservation: reservations on, a SCSI or NVMe
    /// key, not in `pr_exclude` (by key or as named), and not turned off for this request
    /// (`pr = false`). `pr = true` insists: a disk that cannot be reserved is an error.
    fn pr_plan(
        &self,
        t: &Target,
        r: &disklock_naming::Resolution,
        pr: Option<bool>,
        preempt: bool,
        peer: Peer,
    ) -> Result<Option<Plan>, Failure> {
        let enabled = self.table.backend().enabled();
        plan::pr_plan(&self.settings, enabled, t, r, pr, preempt)
            .map_err(|why| invalid(peer, "pr", &why))
    }

    fn effects(&mut self) {
        for e in self.table.take_effects() {
            match e {
                Effect::Watch { uuid, pid } => {
                    if let Some(w) = self.idle.remove(&uuid) {
                        if w.pid == pid && !w.task.is_finished() {
                            self.watches.insert(uuid, w);
                            continue;
                        }
                        w.task.abort();
                    }
                    let handle = match self.pending.remove(&uuid) {
                        Some(h) => h,
                        None => match owner_process(pid) {
                            Ok((_, h)) => h,
                            Err(_) => ProcHandle::Gone,
                        },
                    };
                    let killer = Killer::of(pid, &handle);
                    let tx = self.tx.clone();
                    let u = uuid.clone();
                    let task = tokio::spawn(async move {
                        watch(pid, handle).await;
                        let _ = tx.send(Cmd::OwnerDied { uuid: u, pid }).await;
                    });
                    let uid = self.table.uid_of(&uuid);
                    let w = Watch {
                        pid,
                        uid,
                        task,
                        killer,
                    };
                    if let Some(old) = self.watches.insert(uuid, w) {
                        old.task.abort();
                    }
                }
                Effect::Unwatch { uuid } => {
                    self.on_lost.remove(&uuid);
                    if let Some(w) = self.watches.remove(&uuid) {
                        self.park(uuid, w);
                    }
                }
                Effect::Log(ev) => log_event(&ev),
            }
        }
        self.pending.clear();
    }

    /// Keeps the watch of an owner that holds nothing now, for its next acquire.
    fn park(&mut self, uuid: String, w: Watch) {
        if w.task.is_finished() {
            return;
        }
        if self.idle.len() >= IDLE_WATCHES {
            // Any one will do: this is a cache.
            if let Some(k) = self.idle.keys().next().cloned()
                && let Some(old) = self.idle.remove(&k)
            {
                old.task.abort();
            }
        }
        if let Some(old) = self.idle.insert(uuid, w) {
            old.task.abort();
        }
    }
}

/// An `on_lost` a client may ask for: `pause` (the daemon, as root, suspends a libvirt
/// domain named by the owner's uuid) only from root, with a URI virsh takes as one.
fn check_on_lost(o: &OnLost, peer: Peer) -> Result<(), Failure> {
    match (o.action, &o.uri) {
        (LostAction::Pause, _) if peer.uid != 0 => Err(invalid(
            peer,
            "on_lost",
            "pause (a libvirt domain suspended by the daemon) is for root clients",
        )),
        (LostAction::Pause, None) => Err(invalid(peer, "on_lost", "pause needs a libvirt uri")),
        (_, Some(uri))
            if uri.is_empty()
                || uri.len() > 1024
                || uri.starts_with('-')
                || !uri.contains(':')
                || uri.chars().any(|c| c.is_control() || c.is_whitespace()) =>
        {
            Err(invalid(peer, "on_lost", "uri must be a libvirt URI"))
        }
        _ => Ok(()),
    }
}

/// The target of a lease file named directly (`DiskRequest::lease`: libvirt's `<lease>`),
/// for root clients only: an absolute, plain path `<dir>/<key>` whose last component is a
/// valid key. A read-only one is shared.
fn named_lease(path: &str, mode: DiskMode, peer: Peer) -> Result<Target, Failure> {
    if peer.uid != 0 {
        return Err(invalid(
            peer,
            "disks",
            "a lease file named directly is for root clients",
        ));
    }
    let p = Path::new(path);
    // `/` then names without `.`, `..` or empty ones (Path::components would hide `.`).
    let plain = path
        .strip_prefix('/')
        .is_some_and(|rest| rest.split('/').all(|c| !matches!(c, "" | "." | "..")));
    let (Some(dir), Some(name)) = (p.parent(), p.file_name().and_then(|n| n.to_str())) else {
        return Err(invalid(
            peer,
            "disks",
            "a lease file needs a directory and a name",
        ));
    };
    let key = disklock_naming::DiskKey::new(name)
        .ok()
        .filter(|_| plain && dir != Path::new("/"))
        .ok_or_else(|| {
            invalid(
                peer,
                "disks",
                &format!("{path:?} is not an absolute, plain path to a lease file"),
            )
        })?;
    Ok(Target {
        disk: path.to_owned(),
        key,
        source: "lease-file",
        lockspace: dir.to_path_buf(),
        mode: match mode {
            DiskMode::Exclusive => Mode::Exclusive,
            DiskMode::Shared | DiskMode::Readonly => Mode::Shared,
        },
    })
}

fn check_owner(o: &Owner) -> Result<(), Failure> {
    let bad = |what: &str| {
        Err(Failure::InvalidOwner {
            reason: format!("owner {what}"),
        })
    };
    if o.name.is_empty() || o.name.len() > 255 || o.name.chars().any(char::is_control) {
        return bad("name must be 1 to 255 printable characters");
    }
    if o.uuid.is_empty()
        || o.uuid.len() > 128
        || o.uuid.chars().any(|c| c.is_control() || c.is_whitespace())
    {
        return bad("uuid must be 1 to 128 characters without spaces");
    }
    if o.pid == 0 || i32::try_from(o.pid).is_err() {
        return bad("pid must be a process id");
    }
    Ok(())
}

/// What names an owner process for good, whatever happens to its pid.
enum ProcHandle {
    /// A pidfd: readable once the process has exited.
    Pidfd(std::os::fd::OwnedFd),
    /// No pidfd (kernel before 5.3, seccomp): the start time, polled.
    StartTime(Option<u64>),
    /// The process has already exited.
    Gone,
}

/// The owner process's uid (the owner of `/proc/PID`: its effective uid) and a handle on it.
/// The pidfd is taken first, so the uid read next belongs to the process it names.
fn owner_process(pid: u32) -> Result<(u32, ProcHandle), Failure> {
    use rustix::process::{Pid, PidfdFlags, pidfd_open};
    use std::os::unix::fs::MetadataExt as _;
    let gone = || Failure::InvalidOwner {
        reason: format!("owner pid {pid} does not exist"),
    };
    let raw = i32::try_from(pid)
        .ok()
        .and_then(Pid::from_raw)
        .ok_or_else(gone)?;
    let handle = match pidfd_open(raw, PidfdFlags::empty()) {
        Ok(fd) => ProcHandle::Pidfd(fd),
        Err(rustix::io::Errno::SRCH) => return Err(gone()),
        Err(_) => ProcHandle::StartTime(start_time(pid)),
    };
    let meta = std::fs::metadata(format!("/proc/{pid}")).map_err(|_| gone())?;
    Ok((meta.uid(), handle))
}

/// The uid of a process already watched (the owner of `/proc/PID`).
fn proc_uid(pid: u32) -> Result<u32, Failure> {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata(format!("/proc/{pid}"))
        .map(|m| m.uid())
        .map_err(|_| Failure::InvalidOwner {
            reason: format!("owner pid {pid} does not exist"),
        })
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
/// With the pid, it names one process for good (a pid is reused, a start time is not).
pub fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may hold spaces and parentheses; fields resume after the
    // last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Returns when the process `pid`, named by `handle`, has exited.
async fn watch(pid: u32, handle: ProcHandle) {
    match handle {
        ProcHandle::Pidfd(fd) => {
            // tokio deprecated its safe constructors for fds the caller might close behind its
            // back (tokio PR 8587). Here the AsyncFd owns the OwnedFd, so the fd stays open
            // and the same for the AsyncFd's whole life: the unsafe replacement's contract
            // holds, and this crate stays free of `unsafe`.
            #[allow(deprecated)]
            let registered =
                tokio::io::unix::AsyncFd::with_interest(fd, tokio::io::Interest::READABLE);
            match registered {
                // Readable = the process exited.
                Ok(afd) => drop(afd.readable().await),
                Err(_) => poll(pid, start_time(pid)).await,
            }
        }
        ProcHandle::StartTime(start) => poll(pid, start).await,
        ProcHandle::Gone => {}
    }
}

async fn poll(pid: u32, start: Option<u64>) {
    loop {
        match start_time(pid) {
            Some(t) if start.is_none_or(|s| s == t) => tokio::time::sleep(POLL_OWNER).await,
            _ => return,
        }
    }
}

fn resolve(settings: &Settings, disk: &str, mode: Mode) -> Result<Target, Failure> {
    plan::resolve(settings, disk, mode).map(|(t, _)| t)
}

/// The reply for a refused request.
pub fn failure(r: Refusal) -> Failure {
    match r {
        Refusal::Busy { disk, key, busy } => Failure::Busy {
            message: busy.describe(),
            disk,
            key,
            lease: busy.lease.display().to_string(),
            holders: busy.holders,
            lock: busy.lock,
        },
        Refusal::Lease { disk, error } => Failure::LeaseFailed {
            disk,
            reason: lease_reason(&error),
        },
        Refusal::PermissionDenied { reason } => Failure::PermissionDenied { reason },
        r @ (Refusal::OwnerConflict { .. } | Refusal::ModeConflict { .. }) => {
            Failure::InvalidOwner {
                reason: chain_std(&r),
            }
        }
    }
}

fn lease_reason(e: &LeaseError) -> String {
    chain_std(e)
}

/// One event, one line. Names, keys, paths and reasons go in as strings, which the log
/// quotes (and the journal stores as they are) without the formatting machinery. Each value
/// is a field, once: the message is a summary without the disk or the reason, and what a
/// client sent (a disk path) or what quotes it (a reason) is cut at 512 bytes ([`bounded`]),
/// so that a made-up path of 4 KiB costs the log one bounded field, not four copies.
fn log_event(e: &Event) {
    match e {
        Event::Acquired {
            disk,
            lease,
            mode,
            owner,
            new_lock,
        } => tracing::info!(
            event = "acquire",
            disk = &*bounded(disk),
            key = lease.key.as_str(),
            lockspace = &*lease.lockspace.to_string_lossy(),
            mode = mode.as_str(),
            owner = owner.name.as_str(),
            owner_uuid = owner.uuid.as_str(),
            owner_pid = owner.pid,
            new_lock,
            "acquired a lease ({mode}) for {}",
            owner.name
        ),
        Event::Refused {
            disk,
            lease,
            mode,
            owner,
            reason,
        } => tracing::warn!(
            event = "refuse",
            disk = &*bounded(disk),
            key = lease.as_ref().map_or("", |l| l.key.as_str()),
            lockspace = &*lease
                .as_ref()
                .map_or_else(Default::default, |l| l.lockspace.to_string_lossy()),
            mode = mode.as_str(),
            owner = owner.name.as_str(),
            owner_uuid = owner.uuid.as_str(),
            owner_pid = owner.pid,
            reason = &*bounded(without_disk(reason, disk)),
            "refused a lease ({mode}) for {}",
            owner.name
        ),
        Event::Released {
            disk,
            lease,
            owner,
            cause,
            file,
        } => {
            let file_text: std::borrow::Cow<'static, str> = match file {
                None => "kept for other owners".into(),
                Some(Ok(Some(Released::Unlinked))) => "lock dropped, file removed".into(),
                Some(Ok(Some(Released::Kept))) => "lock dropped, file kept".into(),
                Some(Ok(None)) => "lock given to its lockspace's I/O thread to drop".into(),
                Some(Err(e)) => format!("lock dropped, file not removed: {e}").into(),
            };
            tracing::info!(
                event = "release",
                disk = &*bounded(disk),
                key = lease.key.as_str(),
                lockspace = &*lease.lockspace.to_string_lossy(),
                owner = owner.name.as_str(),
                owner_uuid = owner.uuid.as_str(),
                owner_pid = owner.pid,
                cause = cause.as_str(),
                file = &*bounded(&file_text),
                "released a lease of {} ({})",
                owner.name,
                cause.as_str()
            );
        }
        Event::HolderNotUpdated { lease, reason } => tracing::warn!(
            event = "holder-not-updated",
            key = lease.key.as_str(),
            lockspace = &*lease.lockspace.to_string_lossy(),
            reason = &*bounded(reason),
            "cannot write a holder record"
        ),
    }
}

/// A refusal's reason without the disk it starts with (the event names the disk).
fn without_disk<'a>(reason: &'a str, disk: &str) -> &'a str {
    reason
        .strip_prefix(disk)
        .and_then(|r| r.strip_prefix(": "))
        .unwrap_or(reason)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a client prints for a lockspace without POSIX locks: one line naming the disk,
    /// the directory and the reason; exit code 1.
    #[test]
    fn no_lock_support_reaches_the_client_as_one_line() {
        let f = failure(Refusal::Lease {
            disk: "/img/vm.img".into(),
            error: LeaseError::NoLocks {
                dir: "/var/lib/disklock/files".into(),
            },
        });
        assert!(matches!(f, Failure::LeaseFailed { .. }), "{f:?}");
        assert_eq!(
            f.to_string(),
            "/img/vm.img: lockspace /var/lib/disklock/files is on a file system without POSIX locks (fcntl F_SETLK: ENOLCK; on NFS, is the lock manager running?)"
        );
        assert_eq!(f.code(), Code::Partial);
        assert_eq!(Code::Partial as u8, 1);
        // It survives the wire.
        let bytes = protocol::encode_failure(&f);
        let reply: protocol::Reply = serde_json::from_slice(&bytes[..bytes.len() - 1]).unwrap();
        assert_eq!(Failure::from_reply(&reply), Some(f));
    }

    /// At the limit, the connection that has waited longest for a request is closed; one
    /// being served never is.
    #[test]
    fn the_longest_waiting_connection_makes_room() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let slots = Slots::default();
            let mut tasks = Vec::new();
            let mut ticks = Vec::new();
            for _ in 0..3 {
                let (id, tick) = slots.open();
                let task = tokio::spawn(std::future::pending::<()>());
                slots.register(id, task.abort_handle());
                tasks.push(task);
                ticks.push(tick);
            }
            // The first is being served; the third was served and waits again, since after
            // the second began to.
            Slots::serving(&ticks[0]);
            slots.waiting(&ticks[2]);
            assert!(slots.close_longest_waiting());
            tokio::task::yield_now().await;
            let ended: Vec<bool> = tasks.iter().map(|t| t.is_finished()).collect();
            assert_eq!(ended, [false, true, false]);
            // In the daemon the aborted task's guard gives its slot back.
            slots.lock().remove(&1);
            Slots::serving(&ticks[2]);
            assert!(!slots.close_longest_waiting(), "all are being served");
        });
    }

    #[test]
    fn notify_sends_one_datagram() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let rx = UnixDatagram::bind(&path).unwrap();
        send_notify(path.as_os_str(), "READY=1").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        // The abstract namespace, as systemd uses it.
        let name = format!("disklock-test-{}", std::process::id());
        let addr = <std::os::unix::net::SocketAddr as std::os::linux::net::SocketAddrExt>::from_abstract_name(name.as_bytes()).unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        send_notify(std::ffi::OsStr::new(&format!("@{name}")), "STOPPING=1").unwrap();
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STOPPING=1");
        assert!(send_notify(dir.path().join("nobody").as_os_str(), "READY=1").is_err());
    }

    #[test]
    fn start_time_of_self_and_of_nobody() {
        let me = std::process::id();
        let t = start_time(me).unwrap();
        assert_eq!(start_time(me), Some(t));
        // pid_max is at most 2^22.
        assert_eq!(start_time(u32::MAX - 1), None);
    }

    /// `pause` makes the daemon, as root, suspend a libvirt domain named by a uuid the
    /// client chose: only root may ask for it. Kill and ignore concern the client's own
    /// process. A URI must be one virsh reads as one argument.
    #[test]
    fn on_lost_pause_is_for_root_only() {
        let peer = |uid| Peer {
            uid,
            gid: uid,
            pid: None,
        };
        let on = |action, uri: Option<&str>| OnLost {
            action,
            uri: uri.map(str::to_owned),
        };
        let sys = Some("qemu:///system");
        assert!(check_on_lost(&on(LostAction::Pause, sys), peer(0)).is_ok());
        assert!(check_on_lost(&on(LostAction::Pause, sys), peer(1000)).is_err());
        assert!(check_on_lost(&on(LostAction::Pause, None), peer(0)).is_err());
        assert!(check_on_lost(&on(LostAction::Kill, None), peer(1000)).is_ok());
        assert!(check_on_lost(&on(LostAction::Ignore, None), peer(1000)).is_ok());
        for bad in ["", "-c", "qemu:///system x", "no-scheme", "a:\nb"] {
            assert!(
                check_on_lost(&on(LostAction::Pause, Some(bad)), peer(0)).is_err(),
                "{bad:?}"
            );
        }
    }

    /// A lease file named directly: root only, an absolute plain path whose name is a key.
    #[test]
    fn named_leases() {
        let root = Peer {
            uid: 0,
            gid: 0,
            pid: None,
        };
        let t = named_lease("/var/lib/leases/space/key1", DiskMode::Exclusive, root).unwrap();
        assert_eq!(t.lockspace, Path::new("/var/lib/leases/space"));
        assert_eq!(t.key.as_str(), "key1");
        assert_eq!(t.mode, Mode::Exclusive);
        assert_eq!(
            named_lease("/l/k", DiskMode::Readonly, root).unwrap().mode,
            Mode::Shared
        );
        for bad in [
            "relative/k",
            "/l/../k",
            "/l/./k",
            "/l/k/",
            "/k",
            "/l/with space",
            "",
        ] {
            assert!(
                named_lease(bad, DiskMode::Exclusive, root).is_err(),
                "{bad:?}"
            );
        }
        let user = Peer {
            uid: 1000,
            gid: 1000,
            pid: None,
        };
        assert!(named_lease("/l/k", DiskMode::Exclusive, user).is_err());
    }

    #[test]
    fn owner_checks() {
        let o = |name: &str, uuid: &str, pid: u32| Owner {
            name: name.into(),
            uuid: uuid.into(),
            pid,
        };
        assert!(check_owner(&o("vm", "u", 1)).is_ok());
        assert!(check_owner(&o("", "u", 1)).is_err());
        assert!(check_owner(&o("a\nb", "u", 1)).is_err());
        assert!(check_owner(&o("vm", "a b", 1)).is_err());
        assert!(check_owner(&o("vm", "u", 0)).is_err());
        assert!(check_owner(&o("vm", "u", u32::MAX)).is_err());
        let (uid, handle) = owner_process(std::process::id()).unwrap();
        assert_eq!(uid, nix::unistd::geteuid().as_raw());
        assert!(matches!(handle, ProcHandle::Pidfd(_)));
        assert!(matches!(
            owner_process(u32::MAX - 1),
            Err(Failure::InvalidOwner { .. })
        ));
    }

    #[test]
    fn watch_returns_when_the_process_exits() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = child.id();
        let (_, handle) = owner_process(pid).unwrap();
        rt.block_on(async {
            let w = tokio::spawn(watch(pid, handle));
            // Still running: the watch has not returned.
            tokio::task::yield_now().await;
            assert!(!w.is_finished());
            child.kill().unwrap();
            child.wait().unwrap();
            tokio::time::timeout(Duration::from_secs(10), w)
                .await
                .expect("watch returns after the exit")
                .unwrap();
            // Without a pidfd: a pid whose start time does not match is already gone.
            tokio::time::timeout(
                Duration::from_secs(10),
                watch(std::process::id(), ProcHandle::StartTime(Some(1))),
            )
            .await
            .expect("a mismatched start time means gone");
            tokio::time::timeout(Duration::from_secs(10), poll(std::process::id(), Some(1)))
                .await
                .expect("poll sees the mismatch");
        });
    }
}
