//! Output for people and programs, in one place: stdout that a closed pipe ends quietly,
//! the tables every command prints (no borders, two spaces between columns, like `lsblk`),
//! and text from elsewhere made safe to print or log.

use comfy_table::{ContentArrangement, Table, presets};

/// Writes to stdout; a closed pipe (`disklock lookup --all | head`) ends output quietly.
pub fn write_stdout(text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        r => Ok(r?),
    }
}

/// A table with these column headers, in the one style every command prints.
pub fn table(header: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_style(presets::NOTHING)
        .set_content_arrangement(ContentArrangement::Disabled)
        .set_header(header.to_vec());
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    t
}

/// A table as text, each line without trailing blanks.
pub fn render(t: &Table) -> String {
    t.lines().map(|l| l.trim_end().to_owned() + "\n").collect()
}

/// `s` with its control characters (C0, DEL, C1) escaped as `\u{1b}`: text read from a
/// lease file or another process, made safe to print.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(s);
    }
    let mut o = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if c.is_control() {
            o.push_str(&format!("\\u{{{:x}}}", u32::from(c)));
        } else {
            o.push(c);
        }
    }
    std::borrow::Cow::Owned(o)
}

/// The reason alone when the error would only repeat the input.
pub fn error_text(input: &std::ffi::OsStr, e: &disklock_naming::ResolveError) -> String {
    match e {
        disklock_naming::ResolveError::Walk(disklock_naming::sysroot::WalkError::NotFound {
            path,
        }) if path.as_os_str() == input => "no such file or directory".to_owned(),
        _ => crate::exit::chain_std(e),
    }
}

/// The most of one value that a log event carries, in bytes: a longer one (a path a client
/// made up, a reason quoting it) is cut, so that an event stays a line of a few KiB.
pub const VALUE_MAX: usize = 512;

/// `value` for a log event: as it is up to [`VALUE_MAX`] bytes, else cut there (at a
/// character boundary) and marked with how many bytes were left out.
pub fn bounded(value: &str) -> std::borrow::Cow<'_, str> {
    if value.len() <= VALUE_MAX {
        return value.into();
    }
    let mut end = VALUE_MAX;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…[{} more bytes]", &value[..end], value.len() - end).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_cut_with_a_marker() {
        assert_eq!(bounded("/dev/sdb"), "/dev/sdb");
        let exact = "x".repeat(VALUE_MAX);
        assert_eq!(bounded(&exact), exact);
        let long = format!("/{}", "é".repeat(VALUE_MAX));
        let b = bounded(&long);
        let (kept, marker) = b.split_once('…').unwrap();
        assert!(
            kept.len() <= VALUE_MAX && kept.len() > VALUE_MAX - 2,
            "{}",
            kept.len()
        );
        assert!(long.starts_with(kept));
        assert_eq!(marker, format!("[{} more bytes]", long.len() - kept.len()));
    }

    #[test]
    fn control_characters_are_escaped() {
        assert_eq!(printable("vm1"), "vm1");
        assert_eq!(printable("a\u{1b}[2Jb\n"), "a\\u{1b}[2Jb\\u{a}");
    }
}
