//! The host side of the control channel: a virtio-serial port in the guest whose QEMU
//! chardev connects to a Unix socket the host listens on.
//!
//! One request per line, answered in order (the guest's `/init` documents the same):
//!
//! | host → guest | guest → host |
//! |---|---|
//! | (connect) | `HELLO <name> <uptime> <kernel release> <disk counts>` |
//! | `EXEC <id> <base64 script>` | `DONE <id> <rc> <base64 stdout or -> <base64 stderr or ->` |
//! | `PING <id>` | `PONG <id>` |
//! | `HALT <id>` | `BYE <id>`, then the guest powers off |
//!
//! Ids let the host skip the late answer to a request it gave up on.

use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use crate::base64;

/// What a guest command produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Output {
    /// Exit code of the script (`sh` semantics: 128+N for a signal).
    pub rc: i32,
    /// Its standard output (invalid UTF-8 replaced).
    pub stdout: String,
    /// Its standard error (invalid UTF-8 replaced).
    pub stderr: String,
}

impl Output {
    /// Exit code 0?
    pub fn success(&self) -> bool {
        self.rc == 0
    }

    /// stdout and stderr together, for messages and `contains` checks.
    pub fn combined(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }
}

/// The guest's greeting.
#[derive(Debug, Clone, PartialEq)]
pub struct Hello {
    /// `dl.name` from the kernel command line.
    pub name: String,
    /// Guest uptime in seconds when it became ready.
    pub uptime: f64,
    /// `uname -r` of the guest kernel.
    pub kernel_release: String,
    /// Disk counts seen, e.g. `sd:4,nvme:1` (`-` when nothing was awaited).
    pub disks: String,
}

/// One line from the guest.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Reply {
    Hello(Hello),
    Done { id: u64, output: Output },
    Pong { id: u64 },
    Bye { id: u64 },
    Err { id: String, message: String },
}

fn field_b64(s: &str) -> Result<String, String> {
    if s == "-" {
        return Ok(String::new());
    }
    let bytes = base64::decode(s).map_err(|e| e.to_string())?;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

pub(crate) fn parse_reply(line: &str) -> Result<Reply, String> {
    let parts: Vec<&str> = line.split(' ').collect();
    let id = |s: &str| {
        s.parse::<u64>()
            .map_err(|_| format!("bad id {s:?} in {line:?}"))
    };
    match parts.as_slice() {
        ["HELLO", name, uptime, kernel, disks] => Ok(Reply::Hello(Hello {
            name: (*name).to_owned(),
            uptime: uptime
                .parse()
                .map_err(|_| format!("bad uptime in {line:?}"))?,
            kernel_release: (*kernel).to_owned(),
            disks: (*disks).to_owned(),
        })),
        ["DONE", i, rc, out, err] => Ok(Reply::Done {
            id: id(i)?,
            output: Output {
                rc: rc
                    .parse()
                    .map_err(|_| format!("bad exit code in {line:?}"))?,
                stdout: field_b64(out).map_err(|e| format!("stdout: {e}"))?,
                stderr: field_b64(err).map_err(|e| format!("stderr: {e}"))?,
            },
        }),
        ["PONG", i] => Ok(Reply::Pong { id: id(i)? }),
        ["BYE", i] => Ok(Reply::Bye { id: id(i)? }),
        ["ERR", i, rest @ ..] => Ok(Reply::Err {
            id: (*i).to_owned(),
            message: rest.join(" "),
        }),
        _ => {
            let shown: String = line.chars().take(120).collect();
            Err(format!("unexpected line {shown:?}"))
        }
    }
}

/// Why a channel operation failed.
#[derive(Debug)]
pub(crate) enum ChanError {
    Timeout,
    Closed,
    Io(std::io::Error),
    Protocol(String),
}

/// A connected control channel.
#[derive(Debug)]
pub(crate) struct Channel {
    stream: UnixStream,
    buf: Vec<u8>,
    next_id: u64,
}

impl Channel {
    pub(crate) fn new(stream: UnixStream) -> Self {
        Self {
            stream,
            buf: Vec::new(),
            next_id: 1,
        }
    }

    fn read_line(&mut self, deadline: Instant) -> Result<String, ChanError> {
        let mut chunk = vec![0u8; 64 * 1024];
        loop {
            if let Some(pos) = self.buf.iter().position(|&b| b == b'\n') {
                let mut line: Vec<u8> = self.buf.drain(..=pos).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                return String::from_utf8(line)
                    .map_err(|_| ChanError::Protocol("non-UTF-8 line".into()));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ChanError::Timeout);
            }
            self.stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .map_err(ChanError::Io)?;
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err(ChanError::Closed),
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(ChanError::Io(e)),
            }
        }
    }

    fn send(&mut self, line: &str) -> Result<(), ChanError> {
        let mut buf = Vec::with_capacity(line.len() + 1);
        buf.extend_from_slice(line.as_bytes());
        buf.push(b'\n');
        self.stream.write_all(&buf).map_err(|e| {
            if e.kind() == ErrorKind::BrokenPipe {
                ChanError::Closed
            } else {
                ChanError::Io(e)
            }
        })
    }

    /// Wait for the guest's HELLO.
    pub(crate) fn hello(&mut self, deadline: Instant) -> Result<Hello, ChanError> {
        let line = self.read_line(deadline)?;
        match parse_reply(&line).map_err(ChanError::Protocol)? {
            Reply::Hello(h) => Ok(h),
            other => Err(ChanError::Protocol(format!(
                "expected HELLO, got {other:?}"
            ))),
        }
    }

    /// Send a request and read lines until the reply with its id arrives; late replies to
    /// earlier (abandoned) requests are dropped.
    fn request(
        &mut self,
        verb: &str,
        payload: Option<&str>,
        deadline: Instant,
    ) -> Result<Reply, ChanError> {
        let id = self.next_id;
        self.next_id += 1;
        match payload {
            Some(p) => self.send(&format!("{verb} {id} {p}"))?,
            None => self.send(&format!("{verb} {id}"))?,
        }
        loop {
            let line = self.read_line(deadline)?;
            let reply = parse_reply(&line).map_err(ChanError::Protocol)?;
            let got = match &reply {
                Reply::Done { id, .. } | Reply::Pong { id } | Reply::Bye { id } => Some(*id),
                Reply::Err { id: i, message } => {
                    if i.parse() == Ok(id) {
                        return Err(ChanError::Protocol(format!(
                            "guest refused {verb}: {message}"
                        )));
                    }
                    None
                }
                Reply::Hello(_) => None,
            };
            if got == Some(id) {
                return Ok(reply);
            }
        }
    }

    /// Run a shell script in the guest.
    pub(crate) fn exec(&mut self, script: &str, deadline: Instant) -> Result<Output, ChanError> {
        let payload = base64::encode(script.as_bytes());
        match self.request("EXEC", Some(&payload), deadline)? {
            Reply::Done { output, .. } => Ok(output),
            other => Err(ChanError::Protocol(format!("expected DONE, got {other:?}"))),
        }
    }

    /// Round trip without running anything.
    pub(crate) fn ping(&mut self, deadline: Instant) -> Result<(), ChanError> {
        match self.request("PING", None, deadline)? {
            Reply::Pong { .. } => Ok(()),
            other => Err(ChanError::Protocol(format!("expected PONG, got {other:?}"))),
        }
    }

    /// Ask the guest to sync and power off.
    pub(crate) fn halt(&mut self, deadline: Instant) -> Result<(), ChanError> {
        match self.request("HALT", None, deadline)? {
            Reply::Bye { .. } => Ok(()),
            other => Err(ChanError::Protocol(format!("expected BYE, got {other:?}"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_reply() {
        assert_eq!(
            parse_reply("HELLO host0 3.57 6.1.0-56-amd64 sd:2,vd:1").unwrap(),
            Reply::Hello(Hello {
                name: "host0".into(),
                uptime: 3.57,
                kernel_release: "6.1.0-56-amd64".into(),
                disks: "sd:2,vd:1".into()
            })
        );
        assert_eq!(
            parse_reply("DONE 7 3 aGk= -").unwrap(),
            Reply::Done {
                id: 7,
                output: Output {
                    rc: 3,
                    stdout: "hi".into(),
                    stderr: String::new()
                }
            }
        );
        assert_eq!(parse_reply("PONG 9").unwrap(), Reply::Pong { id: 9 });
        assert_eq!(parse_reply("BYE 1").unwrap(), Reply::Bye { id: 1 });
        assert!(matches!(
            parse_reply("ERR 4 unknown-verb").unwrap(),
            Reply::Err { .. }
        ));
        assert!(parse_reply("DONE x 0 - -").is_err());
        assert!(parse_reply("DONE 1 0 !!!! -").is_err());
        assert!(parse_reply("garbage").is_err());
    }

    /// A fake guest on the other end of a socket pair: answers a request, but first a
    /// stale DONE for an id the host gave up on.
    #[test]
    fn request_skips_stale_replies_and_times_out() {
        use std::io::BufRead;
        let (host, mut guest) = UnixStream::pair().unwrap();
        let mut chan = Channel::new(host);
        let t = std::thread::spawn(move || {
            let mut lines = std::io::BufReader::new(guest.try_clone().unwrap());
            let mut req = String::new();
            guest.write_all(b"HELLO g 1.0 k -\n").unwrap();
            lines.read_line(&mut req).unwrap();
            assert!(req.starts_with("EXEC 1 "), "{req}");
            let body = base64::decode(req.trim_end().split(' ').nth(2).unwrap()).unwrap();
            assert_eq!(body, b"echo hi");
            // a stale answer, then the real one split over two writes
            guest.write_all(b"DONE 0 1 - -\nDONE 1 0 aGkK").unwrap();
            guest.write_all(b" -\n").unwrap();
            req.clear();
            lines.read_line(&mut req).unwrap();
            assert_eq!(req, "PING 2\n");
            // never answer: the host must time out
            req.clear();
            let _ = lines.read_line(&mut req);
        });
        let soon = || Instant::now() + Duration::from_secs(5);
        assert_eq!(chan.hello(soon()).unwrap().name, "g");
        let out = chan.exec("echo hi", soon()).unwrap();
        assert_eq!(out.rc, 0);
        assert_eq!(out.stdout, "hi\n");
        let started = Instant::now();
        let r = chan.ping(Instant::now() + Duration::from_millis(200));
        assert!(matches!(r, Err(ChanError::Timeout)), "{r:?}");
        assert!(started.elapsed() >= Duration::from_millis(200));
        drop(chan);
        t.join().unwrap();
    }
}
