//! Messages on stdout for `dlq list` and `dlq peek`: a streaming sink (table rows, a JSON array
//! written as it grows, or JSONL), the full peek view, and the group-by table. Everything taken
//! from a message goes through `sanitize::for_terminal` before it reaches a terminal.

use std::io::{self, BufWriter, StdoutLock, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dialoguer::console::{measure_text_width, pad_str, truncate_str, Alignment, Term};
use serde_json::{json, Value};

use super::{new_table, OutputFormat, Report, Style};
use crate::error::Outcome;
use crate::message::{BodyEncoding, Message};
use crate::report::browse::{BrowseReport, GroupReport};
use crate::sanitize::for_terminal;
use crate::settings::Settings;

mod peek;
use peek::{full_view, value_text};

/// Table width when stdout is not a terminal and COLUMNS is not set.
const DEFAULT_WIDTH: usize = 120;
/// The peek view shows at most this much of a text or JSON body; `-o json` has all of it.
const MAX_TEXT_BODY: usize = 64 * 1024;
/// ... and at most this many bytes of a binary body as a hex dump.
const MAX_HEX_BODY: usize = 4 * 1024;

/// How a message is shown in table mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum View {
    /// One line per message (`list`).
    Row,
    /// Everything, over several lines (`peek`).
    Full,
}

/// Writes messages to stdout one at a time, so a listing of any length needs no memory for it.
pub(crate) struct MessageSink {
    out: BufWriter<StdoutLock<'static>>,
    format: OutputFormat,
    view: View,
    width: usize,
    color: bool,
    now: i64,
    written: u64,
}

impl MessageSink {
    pub(crate) fn new(settings: &Settings, view: View) -> MessageSink {
        MessageSink {
            out: BufWriter::with_capacity(64 * 1024, io::stdout().lock()),
            format: settings.output,
            view,
            width: output_width(),
            color: settings.color,
            now: unix_now(),
            written: 0,
        }
    }

    /// Writes one contract object (CONTRACT.md section 5) in the chosen format.
    pub(crate) fn push(&mut self, message: &Message) -> io::Result<()> {
        match self.format {
            OutputFormat::Jsonl => {
                crate::json::to_writer(&mut self.out, message)?;
                self.out.write_all(b"\n")?;
            }
            OutputFormat::Json => {
                self.out
                    .write_all(if self.written == 0 { b"[\n" } else { b",\n" })?;
                write_indented_json(&mut self.out, message)?;
            }
            OutputFormat::Table => match self.view {
                View::Row => {
                    if self.written == 0 {
                        let header = list_header(self.width);
                        writeln!(self.out, "{}", self.bold(&header))?;
                    }
                    writeln!(self.out, "{}", list_row(message, self.width, self.now))?;
                }
                View::Full => {
                    if self.written > 0 {
                        writeln!(self.out)?;
                    }
                    let text = full_view(message, self.width, self.now, &|s| self.bold(s));
                    self.out.write_all(text.as_bytes())?;
                }
            },
        }
        self.written += 1;
        Ok(())
    }

    /// Makes everything pushed so far visible (before a prompt).
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }

    /// Closes the JSON array (an empty listing is `[]`) and flushes.
    pub(crate) fn finish(mut self) -> io::Result<()> {
        if self.format == OutputFormat::Json {
            self.out
                .write_all(if self.written == 0 { b"[]\n" } else { b"\n]\n" })?;
        }
        self.out.flush()
    }

    fn bold(&self, s: &str) -> String {
        if self.color {
            format!("\u{1b}[1m{s}\u{1b}[0m")
        } else {
            s.to_string()
        }
    }
}

/// A warning on stderr while a command runs (hidden by --quiet).
pub(crate) fn warn(settings: &Settings, text: &str) {
    if !settings.quiet {
        eprintln!("warning: {}", for_terminal(text));
    }
}

/// Pretty JSON indented one level, as an element of the array around it. serde_json escapes
/// line breaks inside strings, so every raw newline is structural and can take the indent.
fn write_indented_json(out: &mut impl Write, v: &impl serde::Serialize) -> io::Result<()> {
    let text = crate::json::to_string_pretty(v)?;
    out.write_all(b"  ")?;
    out.write_all(text.replace('\n', "\n  ").as_bytes())
}

fn output_width() -> usize {
    let term = Term::stdout();
    if term.is_term() {
        if let Some((_, w)) = term.size_checked() {
            return usize::from(w).max(40);
        }
    }
    std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.trim().parse::<usize>().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(DEFAULT_WIDTH)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

// ---------------------------------------------------------------------------------------------
// list: one row per message

/// Column widths of the list table for a terminal `width` columns wide.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Columns {
    position: usize,
    id: usize,
    age: usize,
    attempts: usize,
    failure: usize,
    routing_key: usize,
    body: usize,
}

const GAP: &str = "  ";

fn columns(width: usize) -> Columns {
    let (position, age, attempts) = (6, 5, 8);
    let fixed = position + age + attempts + GAP.len() * 6;
    let rest = width.saturating_sub(fixed);
    // Room for everything at its natural size; else shrink the text columns together.
    let (id, failure, routing_key) = if rest >= 90 {
        (20, 30, 20)
    } else {
        (
            (rest * 2 / 9).max(4),
            (rest * 3 / 9).max(4),
            (rest * 2 / 9).max(4),
        )
    };
    let body = rest.saturating_sub(id + failure + routing_key).max(8);
    Columns {
        position,
        id,
        age,
        attempts,
        failure,
        routing_key,
        body,
    }
}

fn cell(text: &str, width: usize, align: Alignment) -> String {
    let clean = for_terminal(text);
    let cut = truncate_str(&clean, width, "…");
    pad_str(&cut, width, align, None).into_owned()
}

fn list_header(width: usize) -> String {
    let c = columns(width);
    [
        cell("#", c.position, Alignment::Right),
        cell("MESSAGE ID", c.id, Alignment::Left),
        cell("AGE", c.age, Alignment::Right),
        cell("ATTEMPTS", c.attempts, Alignment::Right),
        cell("FAILURE", c.failure, Alignment::Left),
        cell("ROUTING KEY", c.routing_key, Alignment::Left),
        "BODY".to_string(),
    ]
    .join(GAP)
}

fn list_row(m: &Message, width: usize, now: i64) -> String {
    let c = columns(width);
    let text = |v: Option<&str>| v.unwrap_or("-").to_string();
    let attempts = m
        .failure
        .attempts
        .map_or_else(|| "-".to_string(), |n| n.to_string());
    let body = body_preview(m, c.body);
    [
        cell(&m.position.to_string(), c.position, Alignment::Right),
        cell(
            &text(m.properties.get("message_id").and_then(Value::as_str)),
            c.id,
            Alignment::Left,
        ),
        cell(&age(m, now), c.age, Alignment::Right),
        cell(&attempts, c.attempts, Alignment::Right),
        cell(
            &text(m.failure.message.as_deref()),
            c.failure,
            Alignment::Left,
        ),
        cell(&m.routing_key, c.routing_key, Alignment::Left),
        body.trim_end().to_string(),
    ]
    .join(GAP)
}

/// Time since the message failed (`failure.at`), else since it was published (`timestamp`).
fn age(m: &Message, now: i64) -> String {
    m.failure
        .at
        .or_else(|| m.properties.get("timestamp").and_then(Value::as_i64))
        .map_or_else(|| "-".to_string(), |t| compact_duration(now - t))
}

/// "45s", "12m", "5h", "3d": the largest whole unit, for a narrow column.
pub(crate) fn compact_duration(secs: i64) -> String {
    match secs {
        s if s < 0 => "0s".to_string(),
        s if s < 60 => format!("{s}s"),
        s if s < 3_600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3_600),
        s => format!("{}d", s / 86_400),
    }
}

/// The body on one line, cut to `width` display columns.
fn body_preview(m: &Message, width: usize) -> String {
    // Only the start can be shown, so never sanitize or measure more than a few lines' worth.
    let head = |s: &str| s.chars().take(width * 4 + 16).collect::<String>();
    let body = &m.body;
    let raw = match body.encoding {
        BodyEncoding::Base64 => format!("(binary, {} bytes)", body.size),
        BodyEncoding::Json => match &body.text {
            Some(text) => head(text),
            None => head(&body.value.to_string()),
        },
        BodyEncoding::Text => match body.value.as_str() {
            Some("") => "(empty)".to_string(),
            Some(text) => head(text),
            None => String::new(),
        },
    };
    let clean = for_terminal(&raw);
    truncate_str(clean.trim(), width, "…").into_owned()
}

// ---------------------------------------------------------------------------------------------
// Reports

impl Report for BrowseReport {
    fn to_json(&self) -> Value {
        Value::Null
    }

    fn to_table(&self, _style: &Style) -> String {
        String::new()
    }

    fn streamed(&self) -> bool {
        true
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn problem(&self) -> Option<String> {
        self.problem.clone()
    }

    fn outcome(&self) -> Outcome {
        if self.problem.is_some() {
            Outcome::PartialFailure
        } else {
            Outcome::Success
        }
    }
}

impl Report for GroupReport {
    fn to_json(&self) -> Value {
        Value::Array(
            self.groups
                .iter()
                .map(|(value, count)| json!({"value": value, "count": count}))
                .collect(),
        )
    }

    fn to_table(&self, _style: &Style) -> String {
        if self.groups.is_empty() {
            return String::new();
        }
        let mut t = new_table(&["COUNT", &for_terminal(&self.expression)]);
        for (value, count) in &self.groups {
            let shown = match value {
                Value::Null => "(null)".to_string(),
                other => value_text(other),
            };
            t.add_row(vec![count.to_string(), shown]);
        }
        t.to_string()
    }

    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::peek::{hex_dump, indented_lines};
    use super::*;
    use crate::message::Body;

    fn object(v: Value) -> serde_json::Map<String, Value> {
        match v {
            Value::Object(o) => o,
            _ => panic!("not an object"),
        }
    }

    fn message() -> Message {
        Message {
            position: 7,
            queue: "billing.error".into(),
            exchange: String::new(),
            routing_key: "billing.error".into(),
            redelivered: false,
            properties: object(json!({"message_id": "m-\u{1b}[31m1", "timestamp": 1000})),
            headers: object(json!({"x-error-message": "boom\u{7}", "x-death": [
                {"count": 5, "reason": "rejected", "queue": "billing", "time": 900,
                 "exchange": "", "routing-keys": ["billing.retry"]}]})),
            failure: crate::message::Failure {
                origin: Some("billing".into()),
                reason: Some("rejected".into()),
                attempts: Some(6),
                message: Some("time\u{1b}]0;pwned\u{7}out".into()),
                kind: None,
                at: Some(900),
            },
            body: Body::new(br#"{"tenant":"acme"}"#),
        }
    }

    fn with_body(bytes: &[u8]) -> Message {
        Message {
            body: Body::new(bytes),
            ..message()
        }
    }

    #[test]
    fn durations_are_compact() {
        assert_eq!(compact_duration(-5), "0s");
        assert_eq!(compact_duration(59), "59s");
        assert_eq!(compact_duration(60), "1m");
        assert_eq!(compact_duration(7_200), "2h");
        assert_eq!(compact_duration(3 * 86_400 + 5), "3d");
    }

    #[test]
    fn list_row_is_sanitized_and_fits_the_width() {
        for width in [60, 80, 120, 200] {
            let row = list_row(&message(), width, 1_000);
            assert!(!row.contains('\u{1b}') && !row.contains('\u{7}'), "{row}");
            assert!(measure_text_width(&row) <= width, "{width}: {row}");
            assert!(measure_text_width(&list_header(width)) <= width + 4);
        }
        let row = list_row(&message(), 200, 1_000);
        assert!(row.contains("timeout"), "{row}");
        assert!(row.contains("1m"), "{row}");
        assert!(row.contains(r#"{"tenant":"acme"}"#), "{row}");
    }

    #[test]
    fn binary_and_empty_bodies_have_readable_previews() {
        assert_eq!(
            body_preview(&with_body(b"\0\x01\xff"), 40),
            "(binary, 3 bytes)"
        );
        assert_eq!(body_preview(&with_body(b""), 40), "(empty)");
        assert_eq!(body_preview(&with_body(b"a\nb\x1b[2Jc"), 40), "a bc");
    }

    #[test]
    fn full_view_shows_everything_sanitized() {
        let view = full_view(&message(), 100, 1_000, &|s| s.to_string());
        assert!(
            !view.contains('\u{1b}') && !view.contains('\u{7}'),
            "{view}"
        );
        for part in [
            "Message 7 of billing.error",
            "x-error-message",
            "x-death history",
            "billing.retry",
            "\"tenant\": \"acme\"",
            "1970-01-01T00:16:40Z",
            "Body (json, 17 bytes)",
        ] {
            assert!(view.contains(part), "missing {part:?} in\n{view}");
        }
    }

    #[test]
    fn hex_dump_shows_offsets_and_printable_ascii() {
        let dump = hex_dump(b"Hi\x00\xff\x1b");
        assert_eq!(
            dump,
            format!("  00000000  {:<47}  |Hi...|\n", "48 69 00 ff 1b")
        );
    }

    #[test]
    fn long_text_bodies_are_cut_in_the_peek_view() {
        let text = "x".repeat(MAX_TEXT_BODY + 10);
        let shown = indented_lines(&text);
        assert!(shown.ends_with("… 10 more bytes (use -o json to see all)\n"));
    }

    #[test]
    fn json_array_elements_are_indented() {
        let mut out = Vec::new();
        write_indented_json(&mut out, &json!({"a": "x\ny"})).unwrap();
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "  {\n    \"a\": \"x\\ny\"\n  }"
        );
    }
}
