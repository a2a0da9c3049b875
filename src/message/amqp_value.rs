//! AMQP values ↔ JSON (contract section 5: header values, properties), and reading numbers,
//! strings and times out of AMQP values.

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::BasicProperties;
use serde_json::{Map, Number, Value};

use super::*;

pub fn amqp_value_to_json(v: &AMQPValue) -> Value {
    match v {
        AMQPValue::Boolean(b) => Value::Bool(*b),
        AMQPValue::ShortShortInt(n) => Value::from(*n),
        AMQPValue::ShortShortUInt(n) => Value::from(*n),
        AMQPValue::ShortInt(n) => Value::from(*n),
        AMQPValue::ShortUInt(n) => Value::from(*n),
        AMQPValue::LongInt(n) => Value::from(*n),
        AMQPValue::LongUInt(n) => Value::from(*n),
        AMQPValue::LongLongInt(n) => Value::from(*n),
        // Going through the shortest decimal text keeps 0.1f32 as 0.1 instead of
        // 0.10000000149011612, which is what the sender meant.
        AMQPValue::Float(f) => float_to_json(f.to_string().parse().unwrap_or(f64::NAN)),
        AMQPValue::Double(f) => float_to_json(*f),
        AMQPValue::DecimalValue(d) => decimal_to_json(d.value, d.scale),
        AMQPValue::ShortString(s) => short_to_json(s),
        AMQPValue::LongString(s) => bytes_to_json(s.as_bytes()),
        AMQPValue::FieldArray(a) => {
            Value::Array(a.as_slice().iter().map(amqp_value_to_json).collect())
        }
        AMQPValue::Timestamp(t) => Value::from(*t),
        AMQPValue::FieldTable(t) => field_table_to_json(t),
        AMQPValue::ByteArray(b) => Value::String(BASE64.encode(b.as_slice())),
        AMQPValue::Void => Value::Null,
    }
}

pub fn field_table_to_json(t: &FieldTable) -> Value {
    Value::Object(
        t.inner()
            .iter()
            .map(|(k, v)| (short_to_text(k), amqp_value_to_json(v)))
            .collect(),
    )
}

/// A short string as JSON: its text, or base64 of its bytes when they are not UTF-8 (contract
/// section 5; the patched amq-protocol-types keeps such bytes, see patches/README.md).
pub(crate) fn short_to_json(s: &ShortString) -> Value {
    Value::String(short_to_text(s))
}

pub(super) fn short_to_text(s: &ShortString) -> String {
    if s.has_raw_bytes() {
        BASE64.encode(s.wire_bytes())
    } else {
        s.as_str().to_owned()
    }
}

pub(super) fn float_to_json(f: f64) -> Value {
    Number::from_f64(f).map_or(Value::Null, Value::Number)
}

pub(super) fn bytes_to_json(b: &[u8]) -> Value {
    match std::str::from_utf8(b) {
        Ok(s) => Value::from(s),
        Err(_) => Value::String(BASE64.encode(b)),
    }
}

pub(super) fn decimal_to_json(value: u32, scale: u8) -> Value {
    if scale == 0 {
        return Value::from(value);
    }
    // Parsing the exact decimal text rounds once, where value / 10^scale in f64 could round twice.
    let digits = format!("{value:0>width$}", width = usize::from(scale) + 1);
    let (int, frac) = digits.split_at(digits.len() - usize::from(scale));
    float_to_json(format!("{int}.{frac}").parse().unwrap_or(f64::NAN))
}

/// Only the properties that are set, in AMQP order; the headers table lives elsewhere.
pub(crate) fn properties_to_json(p: &BasicProperties) -> Value {
    fn text(o: &mut Map<String, Value>, key: &str, v: &Option<ShortString>) {
        if let Some(s) = v {
            o.insert(key.into(), short_to_json(s));
        }
    }
    let mut o = Map::new();
    text(&mut o, "content_type", p.content_type());
    text(&mut o, "content_encoding", p.content_encoding());
    if let Some(n) = p.delivery_mode() {
        o.insert("delivery_mode".into(), Value::from(*n));
    }
    if let Some(n) = p.priority() {
        o.insert("priority".into(), Value::from(*n));
    }
    text(&mut o, "correlation_id", p.correlation_id());
    text(&mut o, "reply_to", p.reply_to());
    text(&mut o, "expiration", p.expiration());
    text(&mut o, "message_id", p.message_id());
    if let Some(t) = p.timestamp() {
        o.insert("timestamp".into(), Value::from(*t));
    }
    text(&mut o, "type", p.kind());
    text(&mut o, "user_id", p.user_id());
    text(&mut o, "app_id", p.app_id());
    text(&mut o, "cluster_id", p.cluster_id());
    Value::Object(o)
}

pub(crate) fn value_str(v: &AMQPValue) -> Option<&str> {
    match v {
        AMQPValue::ShortString(s) => Some(s.as_str()),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
        _ => None,
    }
}

/// Any integer-valued header; clients disagree about widths, and some send counts as text.
pub(crate) fn value_int(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        AMQPValue::Double(x) => float_int(*x),
        AMQPValue::Float(x) => float_int(f64::from(*x)),
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => value_str(v)?.trim().parse().ok(),
        _ => None,
    }
}

/// Seconds since the epoch from a timestamp, an integer or a date string.
pub(super) fn value_time(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortString(_) | AMQPValue::LongString(_) => {
            let s = value_str(v)?;
            parse_timestamp(s).or_else(|| s.trim().parse().ok())
        }
        other => value_int(other),
    }
}

pub(super) fn json_int(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().and_then(float_int)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

pub(super) fn float_int(x: f64) -> Option<i64> {
    // `i64::MAX as f64` rounds up to exactly 2^63, so every value below it converts exactly.
    (x.is_finite() && x.fract() == 0.0 && x.abs() < i64::MAX as f64).then_some(x as i64)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::message::testing::*;
    use lapin::types::{AMQPValue, ByteArray, DecimalValue, LongString};
    use lapin::BasicProperties;
    use serde_json::json;
    use serde_json::Value;

    #[test]
    fn every_amqp_value_variant_maps_to_json() {
        let cases = vec![
            (AMQPValue::Boolean(true), json!(true)),
            (AMQPValue::ShortShortInt(-8), json!(-8)),
            (AMQPValue::ShortShortUInt(200), json!(200)),
            (AMQPValue::ShortInt(-300), json!(-300)),
            (AMQPValue::ShortUInt(60_000), json!(60_000)),
            (AMQPValue::LongInt(-70_000), json!(-70_000)),
            (AMQPValue::LongUInt(4_000_000_000), json!(4_000_000_000u32)),
            (AMQPValue::LongLongInt(i64::MIN), json!(i64::MIN)),
            (AMQPValue::Float(0.1), json!(0.1)),
            (AMQPValue::Float(f32::NAN), Value::Null),
            (AMQPValue::Double(2.5), json!(2.5)),
            (AMQPValue::Double(f64::INFINITY), Value::Null),
            (AMQPValue::Double(f64::NEG_INFINITY), Value::Null),
            (
                AMQPValue::DecimalValue(DecimalValue {
                    scale: 2,
                    value: 12_345,
                }),
                json!(123.45),
            ),
            (
                AMQPValue::DecimalValue(DecimalValue { scale: 3, value: 5 }),
                json!(0.005),
            ),
            (
                AMQPValue::DecimalValue(DecimalValue { scale: 0, value: 7 }),
                json!(7),
            ),
            (AMQPValue::ShortString("short".into()), json!("short")),
            (long("long ✓"), json!("long ✓")),
            (
                AMQPValue::LongString(LongString::from(vec![0xff, 0x00, 0xfe])),
                json!("/wD+"),
            ),
            (
                AMQPValue::FieldArray(vec![AMQPValue::Void, AMQPValue::LongInt(1)].into()),
                json!([null, 1]),
            ),
            (AMQPValue::Timestamp(1_763_800_000), json!(1_763_800_000)),
            (
                AMQPValue::FieldTable(table(vec![
                    ("b", long("x")),
                    ("a", AMQPValue::Boolean(false)),
                ])),
                json!({"a": false, "b": "x"}),
            ),
            (
                AMQPValue::ByteArray(ByteArray::from(b"hi\x00".to_vec())),
                json!("aGkA"),
            ),
            (AMQPValue::Void, Value::Null),
        ];
        for (amqp, expected) in cases {
            assert_eq!(amqp_value_to_json(&amqp), expected, "{amqp:?}");
        }
    }

    #[test]
    fn all_properties_in_amqp_order_and_headers_always_present() {
        let props = BasicProperties::default()
            .with_cluster_id("c".into())
            .with_app_id("app".into())
            .with_user_id("guest".into())
            .with_type("order.created".into())
            .with_timestamp(5)
            .with_message_id("m".into())
            .with_expiration("60000".into())
            .with_reply_to("r".into())
            .with_correlation_id("corr".into())
            .with_priority(3)
            .with_delivery_mode(1)
            .with_content_encoding("gzip".into())
            .with_content_type("text/plain".into());
        let got = to_json(&view(&props, b""));
        let keys: Vec<&String> = got["properties"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "content_type",
                "content_encoding",
                "delivery_mode",
                "priority",
                "correlation_id",
                "reply_to",
                "expiration",
                "message_id",
                "timestamp",
                "type",
                "user_id",
                "app_id",
                "cluster_id"
            ]
        );
        assert_eq!(got["properties"]["type"], json!("order.created"));
        assert_eq!(got["headers"], json!({}));
        let empty = BasicProperties::default();
        assert_eq!(to_json(&view(&empty, b""))["properties"], json!({}));
    }
}
