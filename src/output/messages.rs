//! Messages on stdout for `dlq list` and `dlq peek`: a streaming sink (table rows, a JSON array
//! written as it grows, or JSONL), the full peek view, and the group-by table. Everything taken
//! from a message goes through `sanitize::for_terminal` before it reaches a terminal.

use std::io::{self, BufWriter, StdoutLock, Write};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use dialoguer::console::{measure_text_width, pad_str, truncate_str, Alignment, Term};
use serde_json::{json, Value};

use super::{new_table, OutputFormat, Report, Style};
use crate::error::Outcome;
use crate::report::browse::{BrowseReport, GroupReport};
use crate::sanitize::for_terminal;
use crate::settings::Settings;

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
    pub(crate) fn push(&mut self, message: &Value) -> io::Result<()> {
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
fn write_indented_json(out: &mut impl Write, v: &Value) -> io::Result<()> {
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

fn list_row(m: &Value, width: usize, now: i64) -> String {
    let c = columns(width);
    let text = |p: &str| m.pointer(p).and_then(Value::as_str).unwrap_or("-");
    let attempts = m
        .pointer("/failure/attempts")
        .and_then(Value::as_i64)
        .map_or_else(|| "-".to_string(), |n| n.to_string());
    let body = body_preview(m, c.body);
    [
        cell(&position(m), c.position, Alignment::Right),
        cell(text("/properties/message_id"), c.id, Alignment::Left),
        cell(&age(m, now), c.age, Alignment::Right),
        cell(&attempts, c.attempts, Alignment::Right),
        cell(text("/failure/message"), c.failure, Alignment::Left),
        cell(text("/routing_key"), c.routing_key, Alignment::Left),
        body.trim_end().to_string(),
    ]
    .join(GAP)
}

fn position(m: &Value) -> String {
    m.get("position")
        .and_then(Value::as_u64)
        .map_or_else(|| "-".to_string(), |n| n.to_string())
}

/// Time since the message failed (`failure.at`), else since it was published (`timestamp`).
fn age(m: &Value, now: i64) -> String {
    m.pointer("/failure/at")
        .and_then(Value::as_i64)
        .or_else(|| m.pointer("/properties/timestamp").and_then(Value::as_i64))
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
fn body_preview(m: &Value, width: usize) -> String {
    // Only the start can be shown, so never sanitize or measure more than a few lines' worth.
    let head = |s: &str| s.chars().take(width * 4 + 16).collect::<String>();
    let raw = match m.get("body_encoding").and_then(Value::as_str) {
        Some("base64") => format!(
            "(binary, {} bytes)",
            m.get("body_size").and_then(Value::as_u64).unwrap_or(0)
        ),
        Some("json") => match m.get("body_text").and_then(Value::as_str) {
            Some(text) => head(text),
            None => head(&m.get("body").map(Value::to_string).unwrap_or_default()),
        },
        _ => match m.get("body").and_then(Value::as_str) {
            Some("") => "(empty)".to_string(),
            Some(text) => head(text),
            None => String::new(),
        },
    };
    let clean = for_terminal(&raw);
    truncate_str(clean.trim(), width, "…").into_owned()
}

// ---------------------------------------------------------------------------------------------
// peek: the full view

fn full_view(m: &Value, width: usize, now: i64, bold: &dyn Fn(&str) -> String) -> String {
    let mut out = String::new();
    let text = |p: &str| for_terminal(m.pointer(p).and_then(Value::as_str).unwrap_or(""));
    let rule = "─".repeat(width.min(100));
    out.push_str(&rule);
    out.push('\n');
    out.push_str(&bold(&format!(
        "Message {} of {}",
        position(m),
        text("/queue")
    )));
    out.push('\n');
    let exchange = match text("/exchange") {
        e if e.is_empty() => "(default)".to_string(),
        e => e,
    };
    let redelivered = m
        .get("redelivered")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    push_pairs(
        &mut out,
        &[
            ("exchange".to_string(), exchange),
            ("routing key".to_string(), text("/routing_key")),
            (
                "redelivered".to_string(),
                if redelivered { "yes" } else { "no" }.to_string(),
            ),
        ],
    );

    out.push_str(&bold("Properties"));
    out.push('\n');
    push_pairs(&mut out, &property_pairs(m, now));

    out.push_str(&bold("Headers"));
    out.push('\n');
    push_pairs(&mut out, &header_pairs(m));

    out.push_str(&bold("Failure"));
    out.push('\n');
    push_pairs(&mut out, &failure_pairs(m, now));

    if let Some(Value::Array(deaths)) = m.pointer("/headers/x-death") {
        if !deaths.is_empty() {
            out.push_str(&bold("x-death history (newest first)"));
            out.push('\n');
            out.push_str(&x_death_table(deaths, width));
            out.push('\n');
        }
    }

    let encoding = text("/body_encoding");
    let size = m.get("body_size").and_then(Value::as_u64).unwrap_or(0);
    out.push_str(&bold(&format!("Body ({encoding}, {size} bytes)")));
    out.push('\n');
    out.push_str(&body_full(m));
    out
}

/// `key  value` lines under a section title, keys padded to the longest (up to 32 columns).
fn push_pairs(out: &mut String, pairs: &[(String, String)]) {
    if pairs.is_empty() {
        out.push_str("  (none)\n");
        return;
    }
    let key_width = pairs
        .iter()
        .map(|(k, _)| measure_text_width(k))
        .max()
        .unwrap_or(0)
        .min(32);
    for (key, value) in pairs {
        let key = pad_str(key, key_width, Alignment::Left, None);
        out.push_str(&format!("  {key}  {value}\n"));
    }
}

fn property_pairs(m: &Value, now: i64) -> Vec<(String, String)> {
    let Some(Value::Object(props)) = m.get("properties") else {
        return Vec::new();
    };
    props
        .iter()
        .map(|(k, v)| {
            let shown = match (k.as_str(), v.as_i64()) {
                ("timestamp", Some(t)) => time_text(t, now),
                _ => value_text(v),
            };
            (for_terminal(k), shown)
        })
        .collect()
}

fn header_pairs(m: &Value) -> Vec<(String, String)> {
    let Some(Value::Object(headers)) = m.get("headers") else {
        return Vec::new();
    };
    headers
        .iter()
        .map(|(k, v)| {
            let shown = match (k.as_str(), v) {
                ("x-death", Value::Array(entries)) => format!(
                    "{} entr{} (history below)",
                    entries.len(),
                    if entries.len() == 1 { "y" } else { "ies" }
                ),
                _ => value_text(v),
            };
            (for_terminal(k), shown)
        })
        .collect()
}

fn failure_pairs(m: &Value, now: i64) -> Vec<(String, String)> {
    let Some(Value::Object(f)) = m.get("failure") else {
        return Vec::new();
    };
    f.iter()
        .map(|(k, v)| {
            let shown = match (k.as_str(), v.as_i64()) {
                ("at", Some(t)) => time_text(t, now),
                _ if v.is_null() => "-".to_string(),
                _ => value_text(v),
            };
            (k.clone(), shown)
        })
        .collect()
}

/// A JSON value on one terminal line: strings as they are, everything else as compact JSON.
fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => for_terminal(s),
        other => for_terminal(&other.to_string()),
    }
}

/// "1763800000 (2025-11-22T08:26:40Z, 3h ago)".
fn time_text(t: i64, now: i64) -> String {
    let date = u64::try_from(t)
        .ok()
        .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
        .map(|when| humantime::format_rfc3339_seconds(when).to_string());
    match date {
        Some(d) if t <= now => format!("{t} ({d}, {} ago)", compact_duration(now - t)),
        Some(d) => format!("{t} ({d})"),
        None => t.to_string(),
    }
}

fn x_death_table(deaths: &[Value], width: usize) -> String {
    let mut t = new_table(&[
        "COUNT",
        "REASON",
        "QUEUE",
        "EXCHANGE",
        "ROUTING KEYS",
        "TIME",
    ]);
    t.set_width(u16::try_from(width).unwrap_or(u16::MAX));
    for d in deaths {
        let field = |k: &str| d.get(k).map_or_else(|| "-".to_string(), value_text);
        let keys = match d.get("routing-keys") {
            Some(Value::Array(keys)) => keys.iter().map(value_text).collect::<Vec<_>>().join(", "),
            Some(other) => value_text(other),
            None => "-".to_string(),
        };
        let time = d.get("time").and_then(Value::as_i64).map_or_else(
            || "-".to_string(),
            |t| {
                u64::try_from(t)
                    .ok()
                    .and_then(|s| UNIX_EPOCH.checked_add(Duration::from_secs(s)))
                    .map_or_else(
                        || t.to_string(),
                        |w| humantime::format_rfc3339_seconds(w).to_string(),
                    )
            },
        );
        t.add_row(vec![
            field("count"),
            field("reason"),
            field("queue"),
            field("exchange"),
            keys,
            time,
        ]);
    }
    t.to_string()
}

/// The body over as many lines as it has: JSON indented, text as is, binary as a hex dump.
fn body_full(m: &Value) -> String {
    let body = m.get("body").unwrap_or(&Value::Null);
    match m.get("body_encoding").and_then(Value::as_str) {
        Some("json") => {
            let pretty = serde_json::to_string_pretty(body).unwrap_or_default();
            indented_lines(&pretty)
        }
        Some("base64") => {
            let bytes = body
                .as_str()
                .and_then(|s| BASE64.decode(s).ok())
                .unwrap_or_default();
            hex_dump(&bytes)
        }
        _ => match body.as_str() {
            Some("") => "  (empty)\n".to_string(),
            Some(text) => indented_lines(text),
            None => String::new(),
        },
    }
}

/// Each line sanitized on its own (so line breaks survive) and indented; long bodies are cut.
fn indented_lines(text: &str) -> String {
    let (shown, cut) = if text.len() > MAX_TEXT_BODY {
        let mut end = MAX_TEXT_BODY;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        (&text[..end], text.len() - end)
    } else {
        (text, 0)
    };
    let mut out = String::with_capacity(shown.len() + 64);
    for line in shown.lines() {
        out.push_str("  ");
        out.push_str(for_terminal(line).trim_end());
        out.push('\n');
    }
    if cut > 0 {
        out.push_str(&format!("  … {cut} more bytes (use -o json to see all)\n"));
    }
    out
}

/// `offset  16 hex bytes  |ascii|`, printable ASCII only on the right.
pub(crate) fn hex_dump(bytes: &[u8]) -> String {
    let shown = &bytes[..bytes.len().min(MAX_HEX_BODY)];
    let mut out = String::new();
    for (i, chunk) in shown.chunks(16).enumerate() {
        let hex: Vec<String> = chunk.iter().map(|b| format!("{b:02x}")).collect();
        let ascii: String = chunk
            .iter()
            .map(|&b| {
                if b.is_ascii_graphic() || b == b' ' {
                    char::from(b)
                } else {
                    '.'
                }
            })
            .collect();
        out.push_str(&format!(
            "  {:08x}  {:<47}  |{ascii}|\n",
            i * 16,
            hex.join(" ")
        ));
    }
    if bytes.len() > shown.len() {
        out.push_str(&format!(
            "  … {} more bytes (use -o json to see all)\n",
            bytes.len() - shown.len()
        ));
    }
    out
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
    use super::*;

    fn message() -> Value {
        json!({
            "position": 7,
            "queue": "billing.error",
            "exchange": "",
            "routing_key": "billing.error",
            "redelivered": false,
            "properties": {"message_id": "m-\u{1b}[31m1", "timestamp": 1000},
            "headers": {"x-error-message": "boom\u{7}", "x-death": [
                {"count": 5, "reason": "rejected", "queue": "billing", "time": 900,
                 "exchange": "", "routing-keys": ["billing.retry"]}]},
            "failure": {"origin": "billing", "reason": "rejected", "attempts": 6,
                        "message": "time\u{1b}]0;pwned\u{7}out", "type": null, "at": 900},
            "body": {"tenant": "acme"},
            "body_encoding": "json",
            "body_size": 17
        })
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
        let bin = json!({"body": "AAEC", "body_encoding": "base64", "body_size": 3});
        assert_eq!(body_preview(&bin, 40), "(binary, 3 bytes)");
        let empty = json!({"body": "", "body_encoding": "text", "body_size": 0});
        assert_eq!(body_preview(&empty, 40), "(empty)");
        let text = json!({"body": "a\nb\u{1b}[2Jc", "body_encoding": "text"});
        assert_eq!(body_preview(&text, 40), "a bc");
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
