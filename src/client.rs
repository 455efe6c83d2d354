//! A blocking client of the daemon's Varlink socket, for the CLI commands.

use std::io::{Read as _, Write as _};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

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

/// One connection to the daemon.
pub struct Client {
    stream: UnixStream,
    socket: PathBuf,
    framer: Framer,
}

impl Client {
    /// Connects; [`ClientError::NotRunning`] when no daemon listens there.
    pub fn connect(socket: &Path) -> Result<Client, ClientError> {
        match UnixStream::connect(socket) {
            Ok(stream) => Ok(Client {
                stream,
                socket: socket.to_path_buf(),
                framer: Framer::new(protocol::MAX_REPLY),
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
            Err(source) => Err(ClientError::Io {
                socket: socket.to_path_buf(),
                source,
            }),
        }
    }

    fn io(&self) -> impl FnOnce(std::io::Error) -> ClientError {
        let socket = self.socket.clone();
        move |source| ClientError::Io { socket, source }
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
        let msg = protocol::encode(&req.to_call());
        self.stream.write_all(&msg).map_err(self.io())?;
        let bytes = loop {
            match self.framer.next_message() {
                Ok(Some(m)) => break m,
                Ok(None) => {}
                Err(e) => return Err(self.bad(e.to_string())),
            }
            let mut buf = [0u8; 16 * 1024];
            let n = self.stream.read(&mut buf).map_err(self.io())?;
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
