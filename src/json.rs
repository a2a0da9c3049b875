//! Owns how dlq writes JSON: serde_json, except that C1 controls, DEL and the Unicode bidi
//! controls inside strings are written as `\uXXXX` too (serde_json escapes only C0). The value
//! is the same for any JSON parser; a terminal showing the text has nothing to act on
//! (contract section 5).

use std::io::{self, Write};

use serde::Serialize;
use serde_json::ser::{CompactFormatter, Formatter, PrettyFormatter};

/// Compact JSON, as one line of JSONL.
pub(crate) fn to_writer<W: Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(writer, Escaping(CompactFormatter));
    value.serialize(&mut ser)
}

/// Pretty JSON (two-space indent).
pub(crate) fn to_writer_pretty<W: Write, T: Serialize + ?Sized>(
    writer: W,
    value: &T,
) -> serde_json::Result<()> {
    let mut ser = serde_json::Serializer::with_formatter(writer, Escaping(PrettyFormatter::new()));
    value.serialize(&mut ser)
}

pub fn to_vec<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<Vec<u8>> {
    let mut out = Vec::new();
    to_writer(&mut out, value)?;
    Ok(out)
}

pub(crate) fn to_string_pretty<T: Serialize + ?Sized>(value: &T) -> serde_json::Result<String> {
    let mut out = Vec::new();
    to_writer_pretty(&mut out, value)?;
    // Only valid UTF-8 is written: serde_json's own strings plus ASCII escapes.
    Ok(String::from_utf8(out).unwrap_or_default())
}

/// The deepest JSON dlq reads back (an exported record): deeper than any header table an AMQP
/// frame can carry (a 128 KiB frame holds at most ~18,000 nested tables), shallow enough for
/// dlq's stack. serde_json's own limit of 128 would refuse records dlq itself exported.
pub(crate) const MAX_DEPTH: usize = 20_000;

/// Parses one JSON text nested at most [`MAX_DEPTH`] deep; deeper is an error before parsing.
pub(crate) fn from_str_deep(text: &str) -> serde_json::Result<serde_json::Value> {
    use serde::de::{Deserialize, Error as _};
    let depth = nesting(text);
    if depth > MAX_DEPTH {
        return Err(serde_json::Error::custom(format!(
            "it nests {depth} levels deep; at most {MAX_DEPTH} are read"
        )));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    de.disable_recursion_limit();
    let value = serde_json::Value::deserialize(&mut de)?;
    de.end()?;
    Ok(value)
}

/// The deepest nesting of `[` and `{` outside strings.
fn nesting(text: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Whether a character inside a JSON string is written as `\uXXXX`, beyond what serde_json
/// escapes itself (C0, `"` and `\`).
pub fn needs_escape(c: char) -> bool {
    // DEL and C1 here; serde_json escapes C0 itself.
    ('\u{7f}'..='\u{9f}').contains(&c) || crate::sanitize::is_bidi_control(c)
}

/// A serde_json formatter that escapes [`needs_escape`] characters and otherwise behaves as
/// the formatter it wraps.
struct Escaping<F>(F);

impl<F: Formatter> Formatter for Escaping<F> {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        // Every character escaped here is DEL or beyond ASCII. std's `is_ascii` and the byte
        // search are built optimised even in a debug build, where the loop below ran at a few MB/s.
        if fragment.is_ascii() && !fragment.as_bytes().contains(&0x7f) {
            return writer.write_all(fragment.as_bytes());
        }
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if needs_escape(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                write!(writer, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }

    fn begin_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_array(w)
    }
    fn end_array<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array(w)
    }
    fn begin_array_value<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_array_value(w, first)
    }
    fn end_array_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_array_value(w)
    }
    fn begin_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object(w)
    }
    fn end_object<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object(w)
    }
    fn begin_object_key<W: ?Sized + Write>(&mut self, w: &mut W, first: bool) -> io::Result<()> {
        self.0.begin_object_key(w, first)
    }
    fn end_object_key<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_key(w)
    }
    fn begin_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.begin_object_value(w)
    }
    fn end_object_value<W: ?Sized + Write>(&mut self, w: &mut W) -> io::Result<()> {
        self.0.end_object_value(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::{json, Value};

    #[test]
    fn c1_del_and_bidi_controls_are_escaped_and_parse_back_to_the_same_value() {
        let text = "a\u{1b}]0;x\u{7}b\u{9b}31mc\u{85}d\u{7f}e\u{202e}f\u{200f}g\u{2066}h";
        let v = json!({ "k\u{202e}": text, "n": [1, "\u{9d}"] });
        let compact = String::from_utf8(to_vec(&v).unwrap()).unwrap();
        assert!(
            compact.chars().all(|c| !c.is_control() && !needs_escape(c)),
            "{compact:?}"
        );
        assert!(
            compact.contains("\\u009b") && compact.contains("\\u202e"),
            "{compact}"
        );
        assert!(
            compact.contains("\\u001b"),
            "C0 escaped by serde_json: {compact}"
        );
        assert_eq!(serde_json::from_str::<Value>(&compact).unwrap(), v);
        let pretty = to_string_pretty(&v).unwrap();
        assert!(pretty.contains("\n  \"k\\u202e\": "), "{pretty}");
        assert_eq!(serde_json::from_str::<Value>(&pretty).unwrap(), v);
    }

    #[test]
    fn deep_records_parse_up_to_the_limit_and_deeper_ones_are_refused_before_parsing() {
        let deep = |n: usize| format!("{}1{}", "[".repeat(n), "]".repeat(n));
        std::thread::Builder::new()
            .stack_size(crate::STACK_SIZE)
            .spawn(move || {
                assert!(from_str_deep(&deep(5_000)).is_ok());
                let e = from_str_deep(&deep(MAX_DEPTH + 1)).unwrap_err();
                assert!(e.to_string().contains("20001 levels"), "{e}");
            })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(nesting(r#"{"a":"[[[{","b":[{"c":"\"["}]}"#), 3);
        assert!(from_str_deep("[1] x").is_err());
    }

    #[test]
    fn everything_else_is_written_as_serde_json_writes_it() {
        let v = json!({ "a": "héllo ✓ 日本 \" \\ \n", "b": [true, null, 1.5, {}], "c": [] });
        assert_eq!(to_vec(&v).unwrap(), serde_json::to_vec(&v).unwrap());
        assert_eq!(
            to_string_pretty(&v).unwrap(),
            serde_json::to_string_pretty(&v).unwrap()
        );
    }
}
