//! `peek`'s full view of one message: properties, headers, failure, the x-death history and
//! the body (JSON indented, text as is, binary as a hex dump), all made safe for a terminal.

use super::*;
use crate::message::{Body, Failure};
use serde_json::Map;

pub(super) fn full_view(
    m: &Message,
    width: usize,
    now: i64,
    bold: &dyn Fn(&str) -> String,
) -> String {
    let mut out = String::new();
    let rule = "─".repeat(width.min(100));
    out.push_str(&rule);
    out.push('\n');
    out.push_str(&bold(&format!(
        "Message {} of {}",
        m.position,
        for_terminal(&m.queue)
    )));
    out.push('\n');
    let exchange = match for_terminal(&m.exchange) {
        e if e.is_empty() => "(default)".to_string(),
        e => e,
    };
    push_pairs(
        &mut out,
        &[
            ("exchange".to_string(), exchange),
            ("routing key".to_string(), for_terminal(&m.routing_key)),
            (
                "redelivered".to_string(),
                if m.redelivered { "yes" } else { "no" }.to_string(),
            ),
        ],
    );

    out.push_str(&bold("Properties"));
    out.push('\n');
    push_pairs(&mut out, &property_pairs(&m.properties, now));

    out.push_str(&bold("Headers"));
    out.push('\n');
    push_pairs(&mut out, &header_pairs(&m.headers));

    out.push_str(&bold("Failure"));
    out.push('\n');
    push_pairs(&mut out, &failure_pairs(&m.failure, now));

    let deaths = m.deaths();
    if !deaths.is_empty() {
        out.push_str(&bold("x-death history (newest first)"));
        out.push('\n');
        out.push_str(&x_death_table(deaths, width));
        out.push('\n');
    }

    let encoding = m.body.encoding.as_str();
    let size = m.body.size;
    out.push_str(&bold(&format!("Body ({encoding}, {size} bytes)")));
    out.push('\n');
    out.push_str(&body_full(&m.body));
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

fn property_pairs(props: &Map<String, Value>, now: i64) -> Vec<(String, String)> {
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

fn header_pairs(headers: &Map<String, Value>) -> Vec<(String, String)> {
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

fn failure_pairs(f: &Failure, now: i64) -> Vec<(String, String)> {
    let text = |v: &Option<String>| v.as_deref().map_or_else(|| "-".to_string(), for_terminal);
    vec![
        ("origin".into(), text(&f.origin)),
        ("reason".into(), text(&f.reason)),
        (
            "attempts".into(),
            f.attempts
                .map_or_else(|| "-".to_string(), |n| n.to_string()),
        ),
        ("message".into(), text(&f.message)),
        ("type".into(), text(&f.kind)),
        (
            "at".into(),
            f.at.map_or_else(|| "-".to_string(), |t| time_text(t, now)),
        ),
    ]
}

/// A JSON value on one terminal line: strings as they are, everything else as compact JSON.
pub(super) fn value_text(v: &Value) -> String {
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
fn body_full(body: &Body) -> String {
    match body.encoding {
        BodyEncoding::Json => {
            let pretty = serde_json::to_string_pretty(&body.value).unwrap_or_default();
            indented_lines(&pretty)
        }
        BodyEncoding::Base64 => hex_dump(&body.bytes),
        BodyEncoding::Text => match body.value.as_str() {
            Some("") => "  (empty)\n".to_string(),
            Some(text) => indented_lines(text),
            None => String::new(),
        },
    }
}

/// Each line sanitized on its own (so line breaks survive) and indented; long bodies are cut.
pub(super) fn indented_lines(text: &str) -> String {
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
