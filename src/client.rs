//! A blocking client of the daemon's Varlink socket, for the CLI commands.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use crate::daemon::protocol::{self, Failure, Framer, Reply, Request};

/// Why the daemon could not be asked.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens on the socket.
    #[error("no disklock daemon is running at {socket} (start one with `disklock daemon`)")]
    NotRunning {
        /// The socket path.
        socket: PathBuf,
    },
    /// It did not answer in time (`--timeout`).
    #[error("timed out after {} s {what} the daemon at {socket} (--timeout)", after.as_secs())]
    TimedOut {
        /// The socket path.
        socket: PathBuf,
        /// What took too long: connecting to, sending the request to, waiting for the reply
        /// of.
        what: &'static str,
        /// How long it waited.
        after: Duration,
    },
    /// Talking to it failed.
    #[error("cannot talk to the daemon at {socket}")]
    Io {
        /// The socket path.
        socket: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It sent something that is not a reply to us.
    #[error("bad reply from the daemon at {socket}: {reason}")]
    BadReply {
        /// The socket path.
        socket: PathBuf,
        /// What was wrong.
        reason: String,
    },
}

impl ClientError {
    /// The exit code of a command that could not ask the daemon: 4 when none runs.
    pub fn code(&self) -> crate::exit::Code {
        match self {
            ClientError::NotRunning { .. } => crate::exit::Code::NoDaemon,
            _ => crate::exit::Code::Partial,
        }
    }
}

/// One connection to the daemon. Each wait for it is bounded: connecting (a daemon whose
/// connection queue is full), sending a request, and the reply.
pub struct Client {
    stream: UnixStream,
    socket: PathBuf,
    framer: Framer,
    timeout: Duration,
}

impl Client {
    /// Connects within `timeout`; [`ClientError::NotRunning`] when no daemon listens there.
    pub fn connect(socket: &Path, timeout: Duration) -> Result<Client, ClientError> {
        match connect_within(socket, timeout) {
            Ok(stream) => Ok(Client {
                stream,
                socket: socket.to_path_buf(),
                framer: Framer::new(protocol::MAX_REPLY),
                timeout,
            }),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOENT | libc::ECONNREFUSED | libc::ENOTDIR)
                ) =>
            {
                Err(ClientError::NotRunning {
                    socket: socket.to_path_buf(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Err(ClientError::TimedOut {
                socket: socket.to_path_buf(),
                what: "connecting to",
                after: timeout,
            }),
            Err(source) => Err(ClientError::Io {
                socket: socket.to_path_buf(),
                source,
            }),
        }
    }

    /// What an I/O error in `what` (sending the request to, waiting for the reply of) is.
    fn io(&self, what: &'static str) -> impl FnOnce(std::io::Error) -> ClientError {
        let socket = self.socket.clone();
        let after = self.timeout;
        move |source| match source.kind() {
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                ClientError::TimedOut {
                    socket,
                    what,
                    after,
                }
            }
            _ => ClientError::Io { socket, source },
        }
    }

    fn bad(&self, reason: String) -> ClientError {
        ClientError::BadReply {
            socket: self.socket.clone(),
            reason,
        }
    }

    /// Sends a request and waits for its reply: `Ok(Err(f))` is the daemon's refusal.
    pub fn call<T: DeserializeOwned>(
        &mut self,
        req: &Request,
    ) -> Result<Result<T, Failure>, ClientError> {
        const SENDING: &str = "sending the request to";
        const REPLY: &str = "waiting for the reply of";
        let msg = protocol::encode(&req.to_call());
        // SO_SNDTIMEO, set before connecting, bounds each send.
        self.stream.write_all(&msg).map_err(self.io(SENDING))?;
        let deadline = Instant::now() + self.timeout;
        let bytes = loop {
            match self.framer.next_message() {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(e) => return Err(self.bad(e.to_string())),
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(self.io(REPLY)(std::io::ErrorKind::TimedOut.into()));
            }
            self.stream
                .set_read_timeout(Some(left))
                .map_err(self.io(REPLY))?;
            let mut buf = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buf).map_err(self.io(REPLY))?;
            if n == 0 {
                return Err(self.bad("the daemon closed the connection".into()));
            }
            self.framer.push(&buf[..n]);
        };
        let reply: Reply =
            serde_json::from_slice(&bytes).map_err(|e| self.bad(format!("not a reply: {e}")))?;
        if let Some(name) = &reply.error {
            return match Failure::from_reply(&reply) {
                Some(f) => Ok(Err(f)),
                None => Err(self.bad(format!("unknown error {name}: {}", reply.parameters))),
            };
        }
        serde_json::from_value(reply.parameters)
            .map(Ok)
            .map_err(|e| self.bad(e.to_string()))
    }
}

/// A stream socket connected to `socket` with SO_SNDTIMEO set to `timeout` first: it bounds
/// `connect` itself (which waits while the daemon's listen queue is full, then fails with
/// EAGAIN) and every send after it.
fn connect_within(socket: &Path, timeout: Duration) -> std::io::Result<UnixStream> {
    use nix::sys::socket::{AddressFamily, SockFlag, SockType, UnixAddr, sockopt};
    use std::os::fd::AsRawFd as _;
    let fd = nix::sys::socket::socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    let tv = nix::sys::time::TimeVal::new(
        i64::try_from(timeout.as_secs()).unwrap_or(i64::MAX),
        i64::from(timeout.subsec_micros()),
    );
    nix::sys::socket::setsockopt(&fd, sockopt::SendTimeout, &tv)?;
    let addr = UnixAddr::new(socket)?;
    nix::sys::socket::connect(fd.as_raw_fd(), &addr)?;
    Ok(UnixStream::from(fd))
}
