//! The daemon's stderr log: one line per event, each written whole. On the daemon's
//! runtime thread lines are queued and written in batches, one `write` for all the lines of
//! a few milliseconds ([`super::idle`]); on any other thread, as it happens.
//!
//! The line reads as `tracing_subscriber::fmt`'s default format without colours does —
//! `2026-01-02T03:04:05.678901Z  INFO disklock::daemon::server: acquired … event="acquire"
//! disk=/img/vm.img …` — so what greps the old format still matches, at a fraction of its
//! cost (it was about a quarter of the daemon's instructions per acquire+release). Strings
//! are quoted and escaped (`Debug`), other values are printed as they display; control
//! characters anywhere (a newline in a disk path) are escaped, so an event is always exactly
//! one line. Under systemd the journal layer is used instead (`main.rs`).

use std::cell::RefCell;
use std::fmt::{self, Write as _};
use std::io::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context;

/// The layer: formats each event into a reused buffer for stderr.
#[derive(Debug, Default, Clone, Copy)]
pub struct LineLayer;

impl<S: Subscriber> tracing_subscriber::Layer<S> for LineLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        thread_local! {
            static BUF: RefCell<String> = RefCell::new(String::with_capacity(512));
        }
        let write = |line: &mut String| {
            line.clear();
            format_line(line, event, SystemTime::now());
            // On the daemon's runtime thread the line waits to share a write with the next
            // ones (`idle`); elsewhere it is one write (stderr is unbuffered). A log that cannot
            // be written is not an error worth failing a request for.
            if !super::idle::log(line.as_bytes()) {
                let _ = std::io::stderr().write_all(line.as_bytes());
            }
        };
        // An event logged while formatting another (from a Display impl) gets its own buffer.
        BUF.with(|b| match b.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            Err(_) => write(&mut String::new()),
        });
    }
}

/// One event as one line, newline included.
fn format_line(out: &mut String, event: &Event<'_>, now: SystemTime) {
    timestamp(out, now);
    let meta = event.metadata();
    out.push_str(match *meta.level() {
        Level::ERROR => " ERROR ",
        Level::WARN => "  WARN ",
        Level::INFO => "  INFO ",
        Level::DEBUG => " DEBUG ",
        Level::TRACE => " TRACE ",
    });
    out.push_str(meta.target());
    out.push_str(": ");
    // The message first, as the fmt layer prints it, then the other fields in order.
    let start = out.len();
    event.record(&mut Message(out));
    event.record(&mut Fields { out, start });
    out.push('\n');
}

/// Writes the `message` field.
struct Message<'a>(&'a mut String);

impl Visit for Message<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            escaped(self.0).push_str_escaped(value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(escaped(self.0), "{value:?}");
        }
    }
}

/// Writes every field but the message as ` name=value`.
struct Fields<'a> {
    out: &'a mut String,
    /// Where the message started: a field is preceded by a space unless nothing (no
    /// message, no field) was written since.
    start: usize,
}

impl Fields<'_> {
    /// Starts a field; false for the message and `log.` metadata, which are not written.
    fn name(&mut self, field: &Field) -> bool {
        let name = field.name();
        if name == "message" || name.starts_with("log.") {
            return false;
        }
        if self.out.len() > self.start {
            self.out.push(' ');
        }
        self.out.push_str(name.strip_prefix("r#").unwrap_or(name));
        self.out.push('=');
        true
    }
}

impl Visit for Fields<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if self.name(field) {
            quoted(self.out, value);
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.name(field) {
            self.out.push_str(if value { "true" } else { "false" });
        }
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.name(field) {
            decimal(self.out, value);
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.name(field) {
            if value < 0 {
                self.out.push('-');
            }
            decimal(self.out, value.unsigned_abs());
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        if self.name(field) {
            let _ = write!(escaped(self.out), "{value}");
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if self.name(field) {
            let _ = write!(escaped(self.out), "{value:?}");
        }
    }
}

/// A string as `Debug` quotes it. Most values (names, uuids, paths) are plain printable
/// ASCII, which `Debug` leaves as is: that case skips its per-character escaping.
fn quoted(out: &mut String, s: &str) {
    if s.bytes()
        .all(|b| (0x20..0x7f).contains(&b) && b != b'"' && b != b'\\')
    {
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        let _ = write!(out, "{s:?}");
    }
}

/// `n` in decimal, as `Display` writes it.
fn decimal(out: &mut String, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.push_str(std::str::from_utf8(&buf[i..]).unwrap_or_default());
}

fn escaped(out: &mut String) -> Escaped<'_> {
    Escaped(out)
}

/// Appends text with its control characters (C0, DEL, C1) escaped: a value can neither end
/// the line nor drive a terminal.
struct Escaped<'a>(&'a mut String);

impl Escaped<'_> {
    fn push_str_escaped(&mut self, s: &str) {
        let _ = self.write_str(s);
    }
}

impl fmt::Write for Escaped<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        // C1 controls are U+0080..U+009F: 0xC2 0x80..=0x9F in UTF-8.
        let plain = !s.bytes().any(|b| b < 0x20 || b == 0x7f || b == 0xc2);
        if plain {
            self.0.push_str(s);
            return Ok(());
        }
        for c in s.chars() {
            match c {
                '\n' => self.0.push_str("\\n"),
                '\r' => self.0.push_str("\\r"),
                '\t' => self.0.push_str("\\t"),
                c if c.is_control() => write!(self.0, "\\u{{{:x}}}", u32::from(c))?,
                c => self.0.push(c),
            }
        }
        Ok(())
    }
}

/// `YYYY-MM-DDTHH:MM:SS.ffffffZ` (UTC, microseconds), as the fmt layer writes it.
fn timestamp(out: &mut String, now: SystemTime) {
    let d = now.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs();
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    // By hand: `write!` with seven padded numbers costs more than the rest of the line.
    digits(out, y, 4);
    out.push('-');
    digits(out, m, 2);
    out.push('-');
    digits(out, day, 2);
    out.push('T');
    digits(out, rem / 3600, 2);
    out.push(':');
    digits(out, rem / 60 % 60, 2);
    out.push(':');
    digits(out, rem % 60, 2);
    out.push('.');
    digits(out, u64::from(d.subsec_micros()), 6);
    out.push('Z');
}

/// The last `width` decimal digits of `n`, zero-padded.
fn digits(out: &mut String, mut n: u64, width: usize) {
    let mut buf = [b'0'; 8];
    for b in buf[..width].iter_mut().rev() {
        *b = b'0' + u8::try_from(n % 10).unwrap_or(0);
        n /= 10;
    }
    out.push_str(std::str::from_utf8(&buf[..width]).unwrap_or_default());
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's
/// `civil_from_days`, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::sync::{Arc, Mutex};
    use std::time::Duration;
    use tracing_subscriber::layer::SubscriberExt as _;

    proptest::proptest! {
        /// The fast paths write what `Debug` and `Display` would.
        #[test]
        fn quoted_and_decimal_match_std(s in ".*", ascii in "[ -~]*", n: u64, i: i64) {
            for v in [&s, &ascii] {
                let mut out = String::new();
                quoted(&mut out, v);
                proptest::prop_assert_eq!(out, format!("{v:?}"));
            }
            let mut out = String::new();
            decimal(&mut out, n);
            proptest::prop_assert_eq!(out, n.to_string());
            let got = lines(|| tracing::info!(i));
            proptest::prop_assert!(got[0].ends_with(&format!(": i={i}\n")), "{}", got[0]);
        }
    }

    #[test]
    fn dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(59), (1970, 3, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        let mut s = String::new();
        timestamp(
            &mut s,
            UNIX_EPOCH + Duration::from_micros(1_767_323_045_678_901),
        );
        assert_eq!(s, "2026-01-02T03:04:05.678901Z");
    }

    /// Formats the events logged by `f` as the layer would, one string per event.
    fn lines(f: impl FnOnce()) -> Vec<String> {
        struct Capture(Arc<Mutex<Vec<String>>>);
        impl<S: Subscriber> tracing_subscriber::Layer<S> for Capture {
            fn on_event(&self, event: &Event<'_>, _: Context<'_, S>) {
                let mut s = String::new();
                format_line(&mut s, event, UNIX_EPOCH);
                self.0.lock().unwrap().push(s);
            }
        }
        let out = Arc::new(Mutex::new(Vec::new()));
        let sub = tracing_subscriber::registry().with(Capture(out.clone()));
        tracing::subscriber::with_default(sub, f);
        out.lock().unwrap().clone()
    }

    #[test]
    fn one_line_per_event_with_the_fmt_layers_layout() {
        let disk = "/img/vm.img";
        let got = lines(|| {
            tracing::info!(
                event = "acquire",
                disk = %disk,
                owner_pid = 42u32,
                new_lock = true,
                delta = -3i64,
                "acquired {disk} (exclusive) for {}",
                "vm"
            );
            tracing::warn!(uid = 7u32, "request over 65536 bytes; closing");
            tracing::info!(r#type = "x");
        });
        let target = module_path!();
        assert_eq!(
            got,
            [
                format!(
                    "1970-01-01T00:00:00.000000Z  INFO {target}: acquired /img/vm.img (exclusive) for vm event=\"acquire\" disk=/img/vm.img owner_pid=42 new_lock=true delta=-3\n"
                ),
                format!(
                    "1970-01-01T00:00:00.000000Z  WARN {target}: request over 65536 bytes; closing uid=7\n"
                ),
                format!("1970-01-01T00:00:00.000000Z  INFO {target}: type=\"x\"\n"),
            ]
        );
    }

    /// The fmt layer's lines (colours off, no time) for the same events, to compare with.
    fn fmt_lines(f: impl FnOnce()) -> Vec<String> {
        #[derive(Clone, Default)]
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let sink = Sink::default();
        let w = sink.clone();
        let sub = tracing_subscriber::registry().with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .without_time()
                .with_writer(move || w.clone()),
        );
        tracing::subscriber::with_default(sub, f);
        let text = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        text.split_inclusive('\n').map(str::to_owned).collect()
    }

    #[test]
    fn same_text_as_the_fmt_layer() {
        let events = || {
            let disk = std::path::Path::new("/img/vm.img");
            tracing::info!(
                event = "release",
                disk = %disk.display(),
                key = %"e31f1a0a",
                owner = %"vm",
                owner_pid = 42u32,
                cause = "request",
                file = %"lock dropped, file removed",
                "released {} for {} ({}): {}",
                disk.display(),
                "vm",
                "request",
                "lock dropped, file removed"
            );
            tracing::warn!(error = %"EMFILE", "accept failed");
            tracing::info!(leases = 0usize, "releasing {} leases", 0);
        };
        let ours: Vec<String> = lines(events)
            .into_iter()
            .map(|l| l["1970-01-01T00:00:00.000000Z ".len()..].to_owned())
            .collect();
        let theirs = fmt_lines(events);
        assert_eq!(ours.len(), 3);
        assert_eq!(theirs.len(), 3);
        // The fmt layer without a time starts at the level; ours has the time and a space.
        for (a, b) in ours.iter().zip(&theirs) {
            assert_eq!(a.trim_start(), b.trim_start());
        }
    }

    #[test]
    fn control_characters_never_break_the_line() {
        let disk = "/img/a\nb\x1b[31m\u{9b}c\td";
        let got = lines(|| {
            tracing::warn!(event = "refuse", disk = %disk, name = disk, "refused {disk}");
        });
        assert_eq!(got.len(), 1);
        let line = &got[0];
        assert_eq!(line.matches('\n').count(), 1, "{line}");
        assert!(line.ends_with('\n'));
        assert!(!line.contains('\x1b') && !line.contains('\u{9b}') && !line.contains('\t'));
        assert!(
            line.contains(r"refused /img/a\nb\u{1b}[31m\u{9b}c\td event="),
            "{line}"
        );
        assert!(
            line.contains(r"disk=/img/a\nb\u{1b}[31m\u{9b}c\td name="),
            "{line}"
        );
        // Strings are quoted as Debug escapes them.
        assert!(
            line.contains(r#"name="/img/a\nb\u{1b}[31m\u{9b}c\td""#),
            "{line}"
        );
    }
}
