//! A minimal QMP client: one connection per command to the guest's `-qmp unix:` socket.
//!
//! QMP is line-delimited JSON: the server greets (`{"QMP": …}`), the client must send
//! `qmp_capabilities`, then each `{"execute": …}` is answered by `{"return": …}` or
//! `{"error": {"class", "desc"}}`; asynchronous `{"event": …}` lines may come in between.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

/// Why a QMP exchange failed.
#[derive(Debug, thiserror::Error)]
pub enum QmpError {
    /// Connecting, reading or writing failed (QEMU gone, timeout).
    #[error("QMP I/O: {0}")]
    Io(#[from] std::io::Error),
    /// QEMU answered with an error object.
    #[error("QMP error {class}: {desc}")]
    Command {
        /// Error class, e.g. `GenericError`.
        class: String,
        /// QEMU's description.
        desc: String,
    },
    /// Something that is not QMP.
    #[error("QMP protocol: {0}")]
    Protocol(String),
}

fn read_reply(r: &mut BufReader<UnixStream>) -> Result<Value, QmpError> {
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            return Err(QmpError::Protocol("connection closed".into()));
        }
        let v: Value = serde_json::from_str(line.trim())
            .map_err(|e| QmpError::Protocol(format!("{e}: {line:?}")))?;
        if let Some(ret) = v.get("return") {
            return Ok(ret.clone());
        }
        if let Some(err) = v.get("error") {
            let s = |k: &str| {
                err.get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            return Err(QmpError::Command {
                class: s("class"),
                desc: s("desc"),
            });
        }
        // {"event": ...} or the greeting: keep reading
    }
}

/// Run one QMP command (`arguments` may be `Value::Null`) and return its `return` value.
pub fn execute(
    socket: &Path,
    command: &str,
    arguments: Value,
    timeout: Duration,
) -> Result<Value, QmpError> {
    let stream = UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    let mut w = stream.try_clone()?;
    let mut r = BufReader::new(stream);
    let mut greeting = String::new();
    r.read_line(&mut greeting)?;
    if !greeting.contains("\"QMP\"") {
        return Err(QmpError::Protocol(format!("no greeting: {greeting:?}")));
    }
    writeln!(w, "{}", json!({"execute": "qmp_capabilities"}))?;
    read_reply(&mut r)?;
    let msg = if arguments.is_null() {
        json!({"execute": command})
    } else {
        json!({"execute": command, "arguments": arguments})
    };
    writeln!(w, "{msg}")?;
    read_reply(&mut r)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    #[test]
    fn talks_qmp_and_skips_events() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.sock");
        let l = UnixListener::bind(&path).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{"version": {{}}, "capabilities": []}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            assert!(line.contains("qmp_capabilities"), "{line}");
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            line.clear();
            r.read_line(&mut line).unwrap();
            assert!(line.contains(r#""execute":"set_link""#), "{line}");
            assert!(line.contains(r#""up":false"#), "{line}");
            writeln!(w, r#"{{"event": "NIC_RX_FILTER_CHANGED", "data": {{}}}}"#).unwrap();
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
        });
        let v = execute(
            &path,
            "set_link",
            json!({"name": "net0", "up": false}),
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(v, json!({}));
        server.join().unwrap();

        let l = UnixListener::bind(dir.path().join("e.sock")).unwrap();
        let server = std::thread::spawn(move || {
            let (s, _) = l.accept().unwrap();
            let mut w = s.try_clone().unwrap();
            let mut r = BufReader::new(s);
            writeln!(w, r#"{{"QMP": {{}}}}"#).unwrap();
            let mut line = String::new();
            r.read_line(&mut line).unwrap();
            writeln!(w, r#"{{"return": {{}}}}"#).unwrap();
            r.read_line(&mut line).unwrap();
            writeln!(
                w,
                r#"{{"error": {{"class": "DeviceNotFound", "desc": "Device 'x' not found"}}}}"#
            )
            .unwrap();
        });
        let e = execute(
            &dir.path().join("e.sock"),
            "device_del",
            json!({"id": "x"}),
            Duration::from_secs(5),
        )
        .unwrap_err();
        assert!(e.to_string().contains("DeviceNotFound"), "{e}");
        server.join().unwrap();
    }
}
