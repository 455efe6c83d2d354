//! libvirt's `key = value` configuration grammar: a parser over `&str` and a renderer
//!
//! This is the grammar of libvirt's `src/util/virconf.c`, which reads `qemu.conf`,
//! `qemu-lockd.conf`, `virtlockd.conf` and friends. disklock uses the same grammar so that an
//! administrator's existing files, habits and augeas/ansible tooling carry over.
//!
//! # Grammar
//!
//! ```text
//! document  = { blank | newline | comment | statement separator }
//! statement = name blank* "=" blank* value blank* [ comment ]
//! separator = newline | ";" | end of input
//! name      = [A-Za-z] [A-Za-z0-9_]*
//! value     = integer | string | list
//! integer   = [ "+" | "-" ] digit+                     (must fit in an i64)
//! string    = "'" ... "'" | '"' ... '"'                (one line, no escapes)
//!           | '"""' ... '"""'                          (may span lines, no escapes)
//! list      = "[" value { "," value } [ "," ] "]"      (newlines allowed between tokens)
//! comment   = "#" up to the end of the line
//! blank     = " " | "\t"
//! newline   = "\n" | "\r\n" | "\r"
//! ```
//!
//! Points that surprise people, all of them libvirt's behaviour too:
//!
//! - A backslash is an ordinary character: `"C:\temp"` is the 7 characters between the quotes.
//! - A value must start on the same line as its `=`.
//! - Comments are not allowed inside a list, not even after an item.
//! - An empty statement (`a = 1;;`) is an error.
//! - There are no booleans; libvirt uses the integers `0` and `1`.
//! - Nothing here rejects a repeated key. The first occurrence is the one that counts
//!   ([`Document::get`]), as with libvirt's `virConfGetValue`;
//!   [`Document::duplicate_warnings`] reports the others.
//!
//! Where disklock differs from libvirt:
//!
//! - An integer that does not fit in an `i64` is an error; libvirt silently wraps it.
//! - Input made only of blanks and newlines is an empty document; libvirt rejects it.
//! - Lists nest at most [`MAX_LIST_DEPTH`] deep, so hostile input cannot overflow the stack.
//! - Errors point at the opening quote of an unterminated string and at the `[` of an
//!   unclosed list, rather than at the place where libvirt gave up.
//!
//! A `"""` string keeps its content byte for byte, including any `\r` of a CRLF file, as
//! libvirt does. Line numbers count `\n` only; columns count characters, starting at 1.
//!
//! # Rendering
//!
//! [`render`] writes one `name = value` line per entry, in a form [`parse`] reads back to the
//! same names and values. A string is written as `"…"` when it has no `"`, else as `'…'` when it
//! has no `'`; a string with both quote kinds, or with a line break, needs `"""…"""`. Since
//! the first `"""` after the opening one closes the string, two kinds of string cannot be
//! written at all: those that need `"""` and also contain `"""` or end with `"`.
//! [`render`] returns [`RenderError::UnrepresentableString`] for them; [`str_is_renderable`]
//! tells in advance. Every string [`parse`] produces is renderable.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use crate::warning::Warning;

/// How deeply lists may nest, `[[...]]` counting as depth 2.
pub const MAX_LIST_DEPTH: usize = 32;

/// A position in the source text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
pub struct Span {
    /// 1-based line number; only `\n` starts a new line.
    pub line: usize,
    /// 1-based column, counted in characters (not bytes).
    pub col: usize,
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.col)
    }
}

/// A value on the right of `=`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Value {
    /// A signed decimal integer. libvirt spells booleans as `0` and `1`.
    Int(i64),
    /// A quoted string, exactly as written between the quotes.
    Str(String),
    /// A bracketed list, which may mix kinds and nest.
    List(Vec<Value>),
}

impl Value {
    /// A short description of the kind of value, for messages: `an integer`, `a string`,
    /// `a list`.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Value::Int(_) => "an integer",
            Value::Str(_) => "a string",
            Value::List(_) => "a list",
        }
    }
}

/// One `name = value` statement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key, matching `[A-Za-z][A-Za-z0-9_]*`.
    pub name: String,
    /// The parsed value.
    pub value: Value,
    /// Where the name starts.
    pub span: Span,
    /// Where the value starts (its quote, bracket, sign or first digit).
    pub value_span: Span,
    /// Where each item of a list value starts; empty unless `value` is a list. Only the
    /// top-level items are recorded.
    pub item_spans: Vec<Span>,
}

impl Entry {
    /// An entry with all positions set to 1:1, for building documents to render.
    pub fn new(name: impl Into<String>, value: Value) -> Entry {
        let start = Span { line: 1, col: 1 };
        Entry {
            name: name.into(),
            value,
            span: start,
            value_span: start,
            item_spans: Vec::new(),
        }
    }
}

/// A parsed file: its statements in source order, comments dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Document {
    /// Every statement, including repeated keys.
    pub entries: Vec<Entry>,
}

impl Document {
    /// Parses `text`; the same as [`parse`].
    pub fn parse(text: &str) -> Result<Document, ParseError> {
        parse(text)
    }

    /// The entry that counts for `name`: its first occurrence.
    pub fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.name == name)
    }

    /// One warning for each entry whose key already appeared earlier in the document.
    pub fn duplicate_warnings(&self, file: Option<&Path>) -> Vec<Warning> {
        let mut warnings = Vec::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if let Some(first) = self.entries[..i].iter().find(|e| e.name == entry.name) {
                warnings.push(Warning {
                    file: file.map(Path::to_path_buf),
                    line: entry.span.line,
                    col: entry.span.col,
                    message: format!(
                        "duplicate key \"{}\" ignored, the first one at {} counts",
                        entry.name, first.span
                    ),
                });
            }
        }
        warnings
    }

    /// Writes the document back as text; see [`render`].
    pub fn to_text(&self) -> Result<String, RenderError> {
        render(&self.entries)
    }
}

impl FromStr for Document {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<Document, ParseError> {
        parse(text)
    }
}

/// A syntax error, with the position it was found at.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{col}: {kind}")]
pub struct ParseError {
    /// 1-based line.
    pub line: usize,
    /// 1-based column, in characters.
    pub col: usize,
    /// What went wrong.
    pub kind: ParseErrorKind,
}

/// The kinds of syntax error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseErrorKind {
    /// A statement does not start with a letter.
    #[error("expected a key name, found {found}")]
    ExpectedName {
        /// What was there instead.
        found: Found,
    },
    /// A name is not followed by `=` on the same line.
    #[error("expected '=' after name \"{name}\", found {found}")]
    ExpectedEquals {
        /// The name just read.
        name: String,
        /// What was there instead.
        found: Found,
    },
    /// Nothing that can start a value after `=`, or inside a list.
    #[error("expected a value, found {found}")]
    ExpectedValue {
        /// What was there instead.
        found: Found,
    },
    /// A string has no closing quote: a `'` or `"` string on its line, a `"""` string at all.
    #[error("{quote} string is not closed{}", if *.quote == Quote::Triple { "" } else { " on the same line" })]
    UnterminatedString {
        /// The kind of quote that opened it.
        quote: Quote,
    },
    /// A `+` or `-` not followed by a digit.
    #[error("expected a digit after '{sign}', found {found}")]
    ExpectedDigit {
        /// The sign.
        sign: char,
        /// What was there instead.
        found: Found,
    },
    /// An integer outside `i64`.
    #[error("integer out of range for a signed 64-bit value")]
    IntegerOverflow,
    /// Something other than `,` or `]` after a list item.
    #[error("expected ',' or ']' in list, found {found}")]
    ExpectedListSeparator {
        /// What was there instead.
        found: Found,
    },
    /// The input ends inside a list; the position is that of its `[`.
    #[error("list is not closed with ']'")]
    UnclosedList,
    /// A `#` inside a list, which libvirt does not accept either.
    #[error("comments are not allowed inside a list")]
    CommentInList,
    /// Lists nested deeper than [`MAX_LIST_DEPTH`].
    #[error("lists nested more than {MAX_LIST_DEPTH} deep")]
    TooDeep,
    /// Something after a value other than a comment, a newline or `;`.
    #[error("expected a newline or ';' after the value, found {found}")]
    ExpectedSeparator {
        /// What was there instead.
        found: Found,
    },
}

/// What the parser found where it expected something else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// A character other than a line break.
    Char(char),
    /// `\n` or `\r`.
    EndOfLine,
    /// The end of the text.
    EndOfInput,
}

impl Found {
    fn from_peek(c: Option<char>) -> Found {
        match c {
            None => Found::EndOfInput,
            Some('\n' | '\r') => Found::EndOfLine,
            Some(c) => Found::Char(c),
        }
    }
}

impl fmt::Display for Found {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Found::Char(c) => write!(f, "{c:?}"),
            Found::EndOfLine => f.write_str("end of line"),
            Found::EndOfInput => f.write_str("end of input"),
        }
    }
}

/// The three ways to quote a string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Quote {
    /// `'…'`, single line.
    Single,
    /// `"…"`, single line.
    Double,
    /// `"""…"""`, may span lines.
    Triple,
}

impl fmt::Display for Quote {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Quote::Single => "'-quoted",
            Quote::Double => "\"-quoted",
            Quote::Triple => "\"\"\"-quoted",
        })
    }
}

/// Parses a whole document.
///
/// ```
/// use disklock_conf::grammar::{parse, Value};
///
/// let doc = parse("auto_disk_leases = 1  # on\nfile_lockspace_dir = \"/var/lib/x\"\n").unwrap();
/// assert_eq!(doc.get("auto_disk_leases").unwrap().value, Value::Int(1));
/// assert_eq!(doc.entries[1].span.line, 2);
/// ```
pub fn parse(text: &str) -> Result<Document, ParseError> {
    Parser {
        src: text,
        pos: 0,
        line: 1,
        col: 1,
    }
    .document()
}

struct Parser<'a> {
    src: &'a str,
    /// Byte offset of the next character.
    pos: usize,
    line: usize,
    col: usize,
}

fn is_eol(c: char) -> bool {
    c == '\n' || c == '\r'
}

fn is_blank(c: char) -> bool {
    c == ' ' || c == '\t'
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.src[self.pos..].chars().next()
    }

    fn rest(&self) -> &str {
        &self.src[self.pos..]
    }

    fn bump(&mut self) {
        if let Some(c) = self.peek() {
            self.pos += c.len_utf8();
            if c == '\n' {
                self.line += 1;
                self.col = 1;
            } else {
                self.col += 1;
            }
        }
    }

    fn span(&self) -> Span {
        Span {
            line: self.line,
            col: self.col,
        }
    }

    fn error_at(span: Span, kind: ParseErrorKind) -> ParseError {
        ParseError {
            line: span.line,
            col: span.col,
            kind,
        }
    }

    fn error_here(&self, kind: ParseErrorKind) -> ParseError {
        Self::error_at(self.span(), kind)
    }

    fn found(&self) -> Found {
        Found::from_peek(self.peek())
    }

    fn skip_while(&mut self, pred: impl Fn(char) -> bool) {
        while self.peek().is_some_and(&pred) {
            self.bump();
        }
    }

    fn skip_comment(&mut self) {
        self.skip_while(|c| !is_eol(c));
    }

    fn document(mut self) -> Result<Document, ParseError> {
        let mut entries = Vec::new();
        loop {
            self.skip_while(|c| is_blank(c) || is_eol(c));
            match self.peek() {
                None => break,
                Some('#') => self.skip_comment(),
                Some(c) if c.is_ascii_alphabetic() => entries.push(self.statement()?),
                Some(_) => {
                    return Err(self.error_here(ParseErrorKind::ExpectedName {
                        found: self.found(),
                    }));
                }
            }
            self.skip_while(is_blank);
            match self.peek() {
                None => break,
                Some(c) if is_eol(c) => {}
                Some(';') => self.bump(),
                Some(_) => {
                    return Err(self.error_here(ParseErrorKind::ExpectedSeparator {
                        found: self.found(),
                    }));
                }
            }
        }
        Ok(Document { entries })
    }

    fn statement(&mut self) -> Result<Entry, ParseError> {
        let span = self.span();
        let start = self.pos;
        self.skip_while(|c| c.is_ascii_alphanumeric() || c == '_');
        let name = self.src[start..self.pos].to_owned();
        self.skip_while(is_blank);
        if self.peek() != Some('=') {
            let found = self.found();
            return Err(self.error_here(ParseErrorKind::ExpectedEquals { name, found }));
        }
        self.bump();
        self.skip_while(is_blank);
        let value_span = self.span();
        let mut item_spans = Vec::new();
        let value = self.value(0, Some(&mut item_spans))?;
        self.skip_while(is_blank);
        if self.peek() == Some('#') {
            self.skip_comment();
        }
        Ok(Entry {
            name,
            value,
            span,
            value_span,
            item_spans,
        })
    }

    /// Parses a value at the current position; `depth` is the number of enclosing lists.
    fn value(
        &mut self,
        depth: usize,
        item_spans: Option<&mut Vec<Span>>,
    ) -> Result<Value, ParseError> {
        match self.peek() {
            Some('"' | '\'') => self.string().map(Value::Str),
            Some('[') => self.list(depth, item_spans),
            Some(c) if c.is_ascii_digit() || c == '+' || c == '-' => self.integer(),
            _ => Err(self.error_here(ParseErrorKind::ExpectedValue {
                found: self.found(),
            })),
        }
    }

    fn string(&mut self) -> Result<String, ParseError> {
        let open = self.span();
        if let Some(after) = self.rest().strip_prefix(r#"""""#) {
            let Some(len) = after.find(r#"""""#) else {
                return Err(Self::error_at(
                    open,
                    ParseErrorKind::UnterminatedString {
                        quote: Quote::Triple,
                    },
                ));
            };
            let content = after[..len].to_owned();
            let end = self.pos + 3 + len + 3;
            while self.pos < end {
                self.bump();
            }
            return Ok(content);
        }
        let (quote_char, quote) = match self.peek() {
            Some('\'') => ('\'', Quote::Single),
            _ => ('"', Quote::Double),
        };
        self.bump();
        let start = self.pos;
        self.skip_while(|c| c != quote_char && !is_eol(c));
        if self.peek() != Some(quote_char) {
            return Err(Self::error_at(
                open,
                ParseErrorKind::UnterminatedString { quote },
            ));
        }
        let content = self.src[start..self.pos].to_owned();
        self.bump();
        Ok(content)
    }

    fn integer(&mut self) -> Result<Value, ParseError> {
        let start = self.span();
        let sign = match self.peek() {
            Some(c @ ('+' | '-')) => {
                self.bump();
                Some(c)
            }
            _ => None,
        };
        if !self.peek().is_some_and(|c| c.is_ascii_digit()) {
            return Err(self.error_here(ParseErrorKind::ExpectedDigit {
                sign: sign.unwrap_or('+'),
                found: self.found(),
            }));
        }
        let negative = sign == Some('-');
        // Accumulate towards the sign so that i64::MIN, whose magnitude has no positive
        // counterpart, parses too.
        let mut n: i64 = 0;
        while let Some(d) = self.peek().and_then(|c| c.to_digit(10)) {
            let d = i64::from(d);
            n = n
                .checked_mul(10)
                .and_then(|n| {
                    if negative {
                        n.checked_sub(d)
                    } else {
                        n.checked_add(d)
                    }
                })
                .ok_or_else(|| Self::error_at(start, ParseErrorKind::IntegerOverflow))?;
            self.bump();
        }
        Ok(Value::Int(n))
    }

    fn list(
        &mut self,
        depth: usize,
        mut item_spans: Option<&mut Vec<Span>>,
    ) -> Result<Value, ParseError> {
        let open = self.span();
        if depth >= MAX_LIST_DEPTH {
            return Err(self.error_here(ParseErrorKind::TooDeep));
        }
        self.bump();
        let mut items = Vec::new();
        self.skip_while(|c| is_blank(c) || is_eol(c));
        if self.peek() == Some(']') {
            self.bump();
            return Ok(Value::List(items));
        }
        loop {
            match self.peek() {
                None => return Err(Self::error_at(open, ParseErrorKind::UnclosedList)),
                Some('#') => return Err(self.error_here(ParseErrorKind::CommentInList)),
                Some(_) => {}
            }
            if let Some(spans) = item_spans.as_deref_mut() {
                spans.push(self.span());
            }
            items.push(self.value(depth + 1, None)?);
            self.skip_while(|c| is_blank(c) || is_eol(c));
            match self.peek() {
                Some(',') => {
                    self.bump();
                    self.skip_while(|c| is_blank(c) || is_eol(c));
                    if self.peek() == Some(']') {
                        self.bump();
                        break;
                    }
                }
                Some(']') => {
                    self.bump();
                    break;
                }
                None => return Err(Self::error_at(open, ParseErrorKind::UnclosedList)),
                Some('#') => return Err(self.error_here(ParseErrorKind::CommentInList)),
                Some(_) => {
                    return Err(self.error_here(ParseErrorKind::ExpectedListSeparator {
                        found: self.found(),
                    }));
                }
            }
        }
        Ok(Value::List(items))
    }
}

/// Why [`render`] could not write an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RenderError {
    /// The key does not match `[A-Za-z][A-Za-z0-9_]*`.
    #[error("invalid key name {0:?}")]
    InvalidName(String),
    /// The string needs `"""` quoting but contains `"""` or ends with `"`.
    #[error("string {0:?} cannot be written in this grammar")]
    UnrepresentableString(String),
    /// Lists nested deeper than [`MAX_LIST_DEPTH`], which [`parse`] would refuse.
    #[error("lists nested more than {MAX_LIST_DEPTH} deep")]
    TooDeep,
}

/// Whether `name` is a valid key name.
pub fn is_valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

/// Whether [`render`] can write the string `s` (see the module docs).
pub fn str_is_renderable(s: &str) -> bool {
    quote_str(s).is_some()
}

fn quote_str(s: &str) -> Option<String> {
    let multi_line = s.contains(is_eol);
    if !multi_line && !s.contains('"') {
        Some(format!("\"{s}\""))
    } else if !multi_line && !s.contains('\'') {
        Some(format!("'{s}'"))
    } else if !s.contains(r#"""""#) && !s.ends_with('"') {
        Some(format!(r#""""{s}""""#))
    } else {
        None
    }
}

fn render_value(out: &mut String, value: &Value, depth: usize) -> Result<(), RenderError> {
    match value {
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Str(s) => {
            let quoted =
                quote_str(s).ok_or_else(|| RenderError::UnrepresentableString(s.clone()))?;
            out.push_str(&quoted);
        }
        Value::List(items) => {
            if depth >= MAX_LIST_DEPTH {
                return Err(RenderError::TooDeep);
            }
            if items.is_empty() {
                out.push_str("[ ]");
                return Ok(());
            }
            out.push_str("[ ");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                render_value(out, item, depth + 1)?;
            }
            out.push_str(" ]");
        }
    }
    Ok(())
}

/// Writes `entries` as text, one `name = value` line each, which [`parse`] reads back to the
/// same names and values (positions are not preserved).
///
/// ```
/// use disklock_conf::grammar::{parse, render, Entry, Value};
///
/// let entries = [Entry::new("key_sources", Value::List(vec![Value::Str("lvm-uuid".into())]))];
/// let text = render(&entries).unwrap();
/// assert_eq!(text, "key_sources = [ \"lvm-uuid\" ]\n");
/// assert_eq!(parse(&text).unwrap().entries[0].value, entries[0].value);
/// ```
pub fn render(entries: &[Entry]) -> Result<String, RenderError> {
    let mut out = String::new();
    for entry in entries {
        if !is_valid_name(&entry.name) {
            return Err(RenderError::InvalidName(entry.name.clone()));
        }
        out.push_str(&entry.name);
        out.push_str(" = ");
        render_value(&mut out, &entry.value, 0)?;
        out.push('\n');
    }
    Ok(out)
}

/// Writes one value in the syntax [`parse`] accepts on the right of `=`.
pub fn render_value_text(value: &Value) -> Result<String, RenderError> {
    let mut out = String::new();
    render_value(&mut out, value, 0)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &str) -> Value {
        Value::Str(v.to_owned())
    }

    fn values(doc: &Document) -> Vec<(&str, &Value)> {
        doc.entries
            .iter()
            .map(|e| (e.name.as_str(), &e.value))
            .collect()
    }

    fn one(text: &str) -> Value {
        let doc = parse(text).unwrap();
        assert_eq!(doc.entries.len(), 1, "{text:?}");
        doc.entries[0].value.clone()
    }

    fn err(text: &str) -> (usize, usize, ParseErrorKind) {
        let e = parse(text).unwrap_err();
        (e.line, e.col, e.kind)
    }

    fn err_msg(text: &str) -> String {
        parse(text).unwrap_err().to_string()
    }

    // ---- names and statements ----

    #[test]
    fn empty_and_blank_inputs_are_empty_documents() {
        for text in ["", "\n", "  \t\n\n", "\r\n\r\n", "   "] {
            assert_eq!(parse(text).unwrap().entries, vec![], "{text:?}");
        }
    }

    #[test]
    fn comment_only_input() {
        let doc = parse("# a comment\n#\n   # indented\n#no_key = 1").unwrap();
        assert!(doc.entries.is_empty());
    }

    #[test]
    fn names_allow_letters_digits_underscores() {
        let doc = parse("a = 1\nAbc_9_ = 2\nx1 = 3\n").unwrap();
        let names: Vec<_> = doc.entries.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["a", "Abc_9_", "x1"]);
    }

    #[test]
    fn name_must_start_with_a_letter() {
        assert_eq!(
            err("_a = 1"),
            (
                1,
                1,
                ParseErrorKind::ExpectedName {
                    found: Found::Char('_')
                }
            )
        );
        assert_eq!(
            err("ok = 1\n  9 = 1"),
            (
                2,
                3,
                ParseErrorKind::ExpectedName {
                    found: Found::Char('9')
                }
            )
        );
        assert_eq!(err_msg("= 1"), "1:1: expected a key name, found '='");
    }

    #[test]
    fn non_ascii_name_is_rejected() {
        assert_eq!(
            err("é = 1"),
            (
                1,
                1,
                ParseErrorKind::ExpectedName {
                    found: Found::Char('é')
                }
            )
        );
    }

    #[test]
    fn missing_equals() {
        assert_eq!(
            err_msg("a = 1\n\nfoo-bar = 2"),
            "3:4: expected '=' after name \"foo\", found '-'"
        );
        assert_eq!(
            err("foo\n= 1"),
            (
                1,
                4,
                ParseErrorKind::ExpectedEquals {
                    name: "foo".into(),
                    found: Found::EndOfLine
                }
            )
        );
        assert_eq!(
            err("foo   "),
            (
                1,
                7,
                ParseErrorKind::ExpectedEquals {
                    name: "foo".into(),
                    found: Found::EndOfInput
                }
            )
        );
    }

    #[test]
    fn value_must_be_on_the_same_line() {
        assert_eq!(
            err("foo =\n1"),
            (
                1,
                6,
                ParseErrorKind::ExpectedValue {
                    found: Found::EndOfLine
                }
            )
        );
        assert_eq!(
            err("foo = "),
            (
                1,
                7,
                ParseErrorKind::ExpectedValue {
                    found: Found::EndOfInput
                }
            )
        );
        assert_eq!(err_msg("foo = bar"), "1:7: expected a value, found 'b'");
    }

    #[test]
    fn spans_count_characters_not_bytes() {
        let doc = parse("a = \"été\"; b = 2\n  c=3").unwrap();
        let spans: Vec<_> = doc.entries.iter().map(|e| (e.span, e.value_span)).collect();
        assert_eq!(
            spans,
            [
                (Span { line: 1, col: 1 }, Span { line: 1, col: 5 }),
                (Span { line: 1, col: 12 }, Span { line: 1, col: 16 }),
                (Span { line: 2, col: 3 }, Span { line: 2, col: 5 }),
            ]
        );
        assert_eq!(
            err_msg("a = \"é\" x"),
            "1:9: expected a newline or ';' after the value, found 'x'"
        );
    }

    #[test]
    fn semicolon_separates_statements() {
        let doc = parse("a = 1; b = 'x' ;c=[1];\n d = 4;").unwrap();
        assert_eq!(
            values(&doc),
            [
                ("a", &Value::Int(1)),
                ("b", &s("x")),
                ("c", &Value::List(vec![Value::Int(1)])),
                ("d", &Value::Int(4))
            ]
        );
    }

    #[test]
    fn empty_statement_is_an_error() {
        assert_eq!(
            err("a = 1;;"),
            (
                1,
                7,
                ParseErrorKind::ExpectedName {
                    found: Found::Char(';')
                }
            )
        );
        assert_eq!(err_msg(";"), "1:1: expected a key name, found ';'");
    }

    #[test]
    fn two_statements_on_one_line_need_a_separator() {
        assert_eq!(
            err("a = 1 b = 2"),
            (
                1,
                7,
                ParseErrorKind::ExpectedSeparator {
                    found: Found::Char('b')
                }
            )
        );
    }

    #[test]
    fn trailing_comments() {
        let doc = parse("a = 1 # one\nb = \"x # not a comment\"#c\nc = [ 1, 2 ] # list\nd = 5;# after semicolon\n").unwrap();
        assert_eq!(
            values(&doc),
            [
                ("a", &Value::Int(1)),
                ("b", &s("x # not a comment")),
                ("c", &Value::List(vec![Value::Int(1), Value::Int(2)])),
                ("d", &Value::Int(5))
            ]
        );
    }

    // ---- line endings ----

    #[test]
    fn crlf_line_endings() {
        let doc =
            parse("# c\r\na = 1\r\nb = \"x\"\r\n\r\nc = [\r\n 1,\r\n 2,\r\n]\r\nd = 'y' # z\r\n")
                .unwrap();
        assert_eq!(
            values(&doc),
            [
                ("a", &Value::Int(1)),
                ("b", &s("x")),
                ("c", &Value::List(vec![Value::Int(1), Value::Int(2)])),
                ("d", &s("y"))
            ]
        );
        assert_eq!(doc.entries[3].span, Span { line: 9, col: 1 });
        assert_eq!(
            err("a = 1\r\nb = \"x\r\n"),
            (
                2,
                5,
                ParseErrorKind::UnterminatedString {
                    quote: Quote::Double
                }
            )
        );
    }

    #[test]
    fn lone_cr_ends_a_line_but_does_not_count_one() {
        let doc = parse("a = 1\rb = 2").unwrap();
        assert_eq!(values(&doc), [("a", &Value::Int(1)), ("b", &Value::Int(2))]);
        assert_eq!(doc.entries[1].span, Span { line: 1, col: 7 });
    }

    // ---- strings ----

    #[test]
    fn single_and_double_quoted_strings() {
        assert_eq!(one("a = 'it \"is\"'"), s("it \"is\""));
        assert_eq!(one("a = \"it's\""), s("it's"));
        assert_eq!(one("a = \"\""), s(""));
        assert_eq!(one("a = ''"), s(""));
        assert_eq!(one("a = \"  padded\t\""), s("  padded\t"));
        assert_eq!(one("a = \"ünïcødé ✓\""), s("ünïcødé ✓"));
    }

    #[test]
    fn backslash_is_literal() {
        assert_eq!(one(r#"a = "C:\temp\""#), s(r"C:\temp\"));
        assert_eq!(one(r"a = '\n\'"), Value::Str(r"\n\".to_owned()));
        // The backslash does not escape the quote, so the string ends there.
        assert_eq!(
            err(r#"a = "x\"y""#),
            (
                1,
                9,
                ParseErrorKind::ExpectedSeparator {
                    found: Found::Char('y')
                }
            )
        );
    }

    #[test]
    fn newline_inside_single_line_string_is_an_error() {
        assert_eq!(
            err("a = 1\nb = \"two\nlines\""),
            (
                2,
                5,
                ParseErrorKind::UnterminatedString {
                    quote: Quote::Double
                }
            )
        );
        assert_eq!(
            err_msg("b = 'two\nlines'"),
            "1:5: '-quoted string is not closed on the same line"
        );
        assert_eq!(
            err_msg("b = \"open"),
            "1:5: \"-quoted string is not closed on the same line"
        );
    }

    #[test]
    fn triple_quoted_strings() {
        assert_eq!(one("a = \"\"\"\"\"\""), s(""));
        assert_eq!(
            one("a = \"\"\"line 1\n'q' \"q\" \"\"\n  line 3\"\"\""),
            s("line 1\n'q' \"q\" \"\"\n  line 3")
        );
        assert_eq!(one("a = \"\"\"\"x\"\"\""), s("\"x"));
        assert_eq!(one("a = \"\"\"crlf\r\nkept\"\"\""), s("crlf\r\nkept"));
        let doc = parse("a = \"\"\"1\n2\n3\"\"\" # c\nb = 1").unwrap();
        assert_eq!(doc.entries[1].span, Span { line: 4, col: 1 });
    }

    #[test]
    fn triple_quoted_string_ends_at_first_triple_quote() {
        // `"""a""""` is `a` followed by a stray `"`.
        assert_eq!(
            err("x = \"\"\"a\"\"\"\""),
            (
                1,
                12,
                ParseErrorKind::ExpectedSeparator {
                    found: Found::Char('"')
                }
            )
        );
    }

    #[test]
    fn unterminated_triple_quoted_string() {
        assert_eq!(
            err_msg("a = 1\n  b = \"\"\"never\nclosed\"\""),
            "2:7: \"\"\"-quoted string is not closed"
        );
    }

    // ---- integers ----

    #[test]
    fn integers() {
        assert_eq!(one("a = 0"), Value::Int(0));
        assert_eq!(one("a = 007"), Value::Int(7));
        assert_eq!(one("a = +12"), Value::Int(12));
        assert_eq!(one("a = -12"), Value::Int(-12));
        assert_eq!(one("a = -0"), Value::Int(0));
        assert_eq!(one("a = 9223372036854775807"), Value::Int(i64::MAX));
        assert_eq!(one("a = -9223372036854775808"), Value::Int(i64::MIN));
    }

    #[test]
    fn integer_overflow_is_an_error() {
        for text in [
            "a = 9223372036854775808",
            "a = -9223372036854775809",
            "a = 99999999999999999999999",
        ] {
            assert_eq!(err(text), (1, 5, ParseErrorKind::IntegerOverflow), "{text}");
        }
        assert_eq!(
            err_msg("\n a = +9223372036854775808"),
            "2:6: integer out of range for a signed 64-bit value"
        );
    }

    #[test]
    fn sign_without_digits() {
        assert_eq!(
            err("a = -"),
            (
                1,
                6,
                ParseErrorKind::ExpectedDigit {
                    sign: '-',
                    found: Found::EndOfInput
                }
            )
        );
        assert_eq!(
            err_msg("a = +x"),
            "1:6: expected a digit after '+', found 'x'"
        );
    }

    #[test]
    fn junk_after_integer() {
        assert_eq!(
            err("a = 0x10"),
            (
                1,
                6,
                ParseErrorKind::ExpectedSeparator {
                    found: Found::Char('x')
                }
            )
        );
        assert_eq!(err("a = 1.5").1, 6);
    }

    // ---- lists ----

    #[test]
    fn lists() {
        assert_eq!(one("a = []"), Value::List(vec![]));
        assert_eq!(one("a = [ ]"), Value::List(vec![]));
        assert_eq!(one("a = [\n]"), Value::List(vec![]));
        assert_eq!(one("a = [1]"), Value::List(vec![Value::Int(1)]));
        assert_eq!(one("a = [1,]"), Value::List(vec![Value::Int(1)]));
        assert_eq!(
            one("a = [ \"x\" , 'y',\n\n  -3 ,\n]"),
            Value::List(vec![s("x"), s("y"), Value::Int(-3)])
        );
        assert_eq!(
            one("a = [[], [1, [\"deep\"]], \"\"\"m\nl\"\"\"]"),
            Value::List(vec![
                Value::List(vec![]),
                Value::List(vec![Value::Int(1), Value::List(vec![s("deep")])]),
                s("m\nl"),
            ])
        );
    }

    #[test]
    fn list_item_spans() {
        let doc = parse("k = [\n  \"a\",\n  [1, 2], 3 ]").unwrap();
        assert_eq!(
            doc.entries[0].item_spans,
            [
                Span { line: 2, col: 3 },
                Span { line: 3, col: 3 },
                Span { line: 3, col: 11 }
            ]
        );
        assert_eq!(doc.entries[0].value_span, Span { line: 1, col: 5 });
        assert!(parse("k = 1").unwrap().entries[0].item_spans.is_empty());
    }

    #[test]
    fn list_errors() {
        assert_eq!(
            err("a = [,]"),
            (
                1,
                6,
                ParseErrorKind::ExpectedValue {
                    found: Found::Char(',')
                }
            )
        );
        assert_eq!(
            err("a = [1,,]"),
            (
                1,
                8,
                ParseErrorKind::ExpectedValue {
                    found: Found::Char(',')
                }
            )
        );
        assert_eq!(
            err_msg("a = [1 2]"),
            "1:8: expected ',' or ']' in list, found '2'"
        );
        assert_eq!(
            err("x = 1\na = [1,\n 2"),
            (2, 5, ParseErrorKind::UnclosedList)
        );
        assert_eq!(err("a = [1,\n"), (1, 5, ParseErrorKind::UnclosedList));
        assert_eq!(err_msg("a = ["), "1:5: list is not closed with ']'");
        assert_eq!(
            err("a = [\n  1, # one\n]"),
            (2, 6, ParseErrorKind::CommentInList)
        );
        assert_eq!(
            err("a = [\n  # nothing\n]"),
            (2, 3, ParseErrorKind::CommentInList)
        );
        assert_eq!(
            err_msg("a = [ 1 # x\n]"),
            "1:9: comments are not allowed inside a list"
        );
    }

    #[test]
    fn nesting_limit() {
        let ok = format!(
            "a = {}{}",
            "[".repeat(MAX_LIST_DEPTH),
            "]".repeat(MAX_LIST_DEPTH)
        );
        assert!(parse(&ok).is_ok());
        let deep = format!(
            "a = {}{}",
            "[".repeat(MAX_LIST_DEPTH + 1),
            "]".repeat(MAX_LIST_DEPTH + 1)
        );
        assert_eq!(err(&deep), (1, 5 + MAX_LIST_DEPTH, ParseErrorKind::TooDeep));
        // Hostile input must not overflow the stack.
        assert_eq!(
            err(&format!("a = {}", "[".repeat(100_000))).2,
            ParseErrorKind::TooDeep
        );
    }

    // ---- duplicates ----

    #[test]
    fn first_duplicate_wins_and_later_ones_warn() {
        let doc = parse("a = 1\nb = 2\n  a = 3\na = 'x'").unwrap();
        assert_eq!(doc.get("a").unwrap().value, Value::Int(1));
        assert_eq!(doc.get("b").unwrap().value, Value::Int(2));
        assert!(doc.get("c").is_none());
        let warnings = doc.duplicate_warnings(Some(Path::new("/etc/x.conf")));
        let shown: Vec<_> = warnings.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "/etc/x.conf:3:3: duplicate key \"a\" ignored, the first one at 1:1 counts",
                "/etc/x.conf:4:1: duplicate key \"a\" ignored, the first one at 1:1 counts",
            ]
        );
        assert!(parse("a = 1").unwrap().duplicate_warnings(None).is_empty());
    }

    // ---- rendering ----

    #[test]
    fn render_picks_the_quote() {
        let cases = [
            ("plain", "\"plain\""),
            ("", "\"\""),
            ("say \"hi\"", "'say \"hi\"'"),
            ("it's", "\"it's\""),
            ("both ' and \" here", "\"\"\"both ' and \" here\"\"\""),
            ("two\nlines", "\"\"\"two\nlines\"\"\""),
            ("cr\ronly", "\"\"\"cr\ronly\"\"\""),
            ("\"starts with a quote", "'\"starts with a quote'"),
            ("back\\slash", "\"back\\slash\""),
        ];
        for (raw, want) in cases {
            assert_eq!(render_value_text(&s(raw)).unwrap(), want, "{raw:?}");
            assert_eq!(one(&format!("a = {want}")), s(raw));
        }
    }

    #[test]
    fn render_refuses_what_cannot_be_written() {
        for raw in ["a\"\"\"b\n", "both ' and \" at the end\"", "x\n\""] {
            assert!(!str_is_renderable(raw));
            assert_eq!(
                render(&[Entry::new("a", s(raw))]),
                Err(RenderError::UnrepresentableString(raw.to_owned()))
            );
        }
        // Without a line break or one quote kind, single-line quoting still works.
        assert!(str_is_renderable("a\"\"\"b"));
        assert_eq!(
            render(&[Entry::new("9a", Value::Int(1))]),
            Err(RenderError::InvalidName("9a".into()))
        );
        let mut deep = Value::Int(0);
        for _ in 0..=MAX_LIST_DEPTH {
            deep = Value::List(vec![deep]);
        }
        assert_eq!(render(&[Entry::new("a", deep)]), Err(RenderError::TooDeep));
    }

    #[test]
    fn render_layout() {
        let doc = Document {
            entries: vec![
                Entry::new("a", Value::Int(-5)),
                Entry::new("b", Value::List(vec![])),
                Entry::new("c", Value::List(vec![Value::Int(1), s("x")])),
            ],
        };
        assert_eq!(
            doc.to_text().unwrap(),
            "a = -5\nb = [ ]\nc = [ 1, \"x\" ]\n"
        );
        assert_eq!("a = 1".parse::<Document>().unwrap().entries.len(), 1);
    }

    // ---- properties ----

    fn name_strategy() -> impl Strategy<Value = String> {
        "[A-Za-z][A-Za-z0-9_]{0,12}"
    }

    fn string_strategy() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z/ ._-]{0,16}",
            "[a-z \"'\\\\#;,=\\[\\]\n\r\t]{0,16}",
            any::<String>(),
        ]
        .prop_filter("representable", |s| str_is_renderable(s))
    }

    fn value_strategy() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            any::<i64>().prop_map(Value::Int),
            string_strategy().prop_map(Value::Str),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop::collection::vec(inner, 0..6).prop_map(Value::List)
        })
    }

    fn entries_strategy() -> impl Strategy<Value = Vec<Entry>> {
        prop::collection::vec(
            (name_strategy(), value_strategy()).prop_map(|(n, v)| Entry::new(n, v)),
            0..8,
        )
    }

    proptest! {
        #[test]
        fn render_then_parse_round_trips(entries in entries_strategy()) {
            let text = render(&entries).unwrap();
            let doc = parse(&text).unwrap();
            let got: Vec<_> = doc.entries.iter().map(|e| (&e.name, &e.value)).collect();
            let want: Vec<_> = entries.iter().map(|e| (&e.name, &e.value)).collect();
            prop_assert_eq!(got, want);
        }

        #[test]
        fn parse_never_panics(text in any::<String>()) {
            let _ = parse(&text);
        }

        #[test]
        fn parse_never_panics_on_grammar_soup(
            text in "([a-z_]{1,4}|[ \t\r\n=;,#'\\[\\]+-]|\"|\"\"\"|[0-9]{1,25}){0,40}"
        ) {
            if let Ok(doc) = parse(&text) {
                // Whatever parses must render and read back the same.
                let again = parse(&doc.to_text().unwrap()).unwrap();
                let a: Vec<_> = doc.entries.iter().map(|e| (&e.name, &e.value)).collect();
                let b: Vec<_> = again.entries.iter().map(|e| (&e.name, &e.value)).collect();
                prop_assert_eq!(a, b);
            }
        }
    }
}
