//! Log output through `tracing`: `RUST_LOG` overrides `[server] log_level`; text or JSON on
//! stderr. Nothing here decides what is logged; callers keep secrets out of fields.
//!
//! Values from a request (User-Name, Calling-Station-Id, NAS-Identifier, ...) are chosen by
//! whoever sends the packet. Every log or print site passes them through `printable`, so a
//! user name with a line break or a terminal escape cannot forge a log line or hide one.

use std::borrow::Cow;
use std::fmt::Write;
use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Installs the global subscriber; a second call (tests) is ignored.
pub fn init(level: &str, format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
}

/// `value` safe to log or print: C0 controls, DEL and C1 controls are escaped (`\n`, `\r`,
/// `\t`, `\x1b`, `\x7f`, `\u{9b}`), and so are the characters that break or reorder lines
/// without being controls (U+2028, U+2029 and the bidirectional overrides and isolates).
/// Everything else, printable non-ASCII included, stays as it is; a value with nothing to
/// escape is borrowed. Backslashes are not doubled: `CORP\alice` stays readable, and the
/// audit database keeps the raw value for whoever must tell `\n` from a line break.
pub fn printable(value: &str) -> Cow<'_, str> {
    if !value.chars().any(needs_escape) {
        return Cow::Borrowed(value);
    }
    let mut out = String::with_capacity(value.len() + 8);
    for c in value.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            // Writing to a String cannot fail.
            c if u32::from(c) < 0x80 && needs_escape(c) => {
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c if needs_escape(c) => {
                let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Request attributes (`Name = value` lines) as one printable list, `[A = 1, B = "x"]`.
pub fn printable_list(values: &[String]) -> String {
    let items: Vec<Cow<'_, str>> = values.iter().map(|v| printable(v)).collect();
    format!("[{}]", items.join(", "))
}

/// Whether `printable` escapes `c`: a control, or a character that breaks or reorders lines.
pub fn needs_escape(c: char) -> bool {
    // `is_control` is exactly C0, DEL and C1.
    c.is_control()
        || matches!(c, '\u{2028}' | '\u{2029}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_printable_text_is_borrowed() {
        assert_eq!(
            printable("a\nb\rc\td\u{1b}[2K\u{7f}\u{0}\u{9b}31m"),
            "a\\nb\\rc\\td\\x1b[2K\\x7f\\x00\\u{9b}31m"
        );
        assert_eq!(printable("x\u{2028}y\u{202e}z"), "x\\u{2028}y\\u{202e}z");
        for plain in ["alice", "Jürgen Müller", "CORP\\alice", "Код", ""] {
            assert!(
                matches!(printable(plain), Cow::Borrowed(p) if p == plain),
                "{plain}"
            );
        }
    }

    #[test]
    fn a_list_escapes_each_item() {
        let lines = vec![
            "User-Name = \"a\nb\"".to_string(),
            "Attr-9 = 0x00".to_string(),
        ];
        assert_eq!(
            printable_list(&lines),
            "[User-Name = \"a\\nb\", Attr-9 = 0x00]"
        );
    }
}
