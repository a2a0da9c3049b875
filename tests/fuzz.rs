//! Property tests over the parts that meet hostile input: the AMQP value ↔ JSON mapping,
//! short-string bytes, the terminal sanitiser and the JSON writer. Ignored in the normal suite;
//! `scripts/fuzz [CASES]` runs them for a fixed budget (default 20,000 cases each, release).

use dlq::message::{amqp_value_to_json, field_table_to_json, headers_from_json, json_to_amqp};
use lapin::types::{AMQPValue, ByteArray, FieldArray, FieldTable, LongString, ShortString};
use proptest::prelude::*;
use serde_json::Value;

/// JSON values a header table can hold: no NaN, integers within i64, keys a short string holds.
fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        (-1e12f64..1e12)
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Header names: any text of up to 20 characters, except dlq's own conventions (x-death and
/// the x-*-death timestamps have a mapping of their own).
fn key() -> impl Strategy<Value = String> {
    any::<String>()
        .prop_map(|s| s.chars().take(20).collect::<String>())
        .prop_filter("not an x- header", |k| !k.starts_with("x-"))
}

/// AMQP values as any client may send them, short strings with arbitrary bytes included.
fn amqp_value() -> impl Strategy<Value = AMQPValue> {
    let leaf = prop_oneof![
        Just(AMQPValue::Void),
        any::<bool>().prop_map(AMQPValue::Boolean),
        any::<i8>().prop_map(AMQPValue::ShortShortInt),
        any::<i16>().prop_map(AMQPValue::ShortInt),
        any::<i32>().prop_map(AMQPValue::LongInt),
        any::<i64>().prop_map(AMQPValue::LongLongInt),
        any::<f64>().prop_map(AMQPValue::Double),
        any::<u64>().prop_map(AMQPValue::Timestamp),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| AMQPValue::LongString(LongString::from(b))),
        prop::collection::vec(any::<u8>(), 0..40)
            .prop_map(|b| AMQPValue::ByteArray(ByteArray::from(b))),
    ];
    leaf.prop_recursive(5, 48, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5)
                .prop_map(|v| AMQPValue::FieldArray(FieldArray::from(v))),
            prop::collection::vec((prop::collection::vec(any::<u8>(), 0..12), inner), 0..5)
                .prop_map(|entries| {
                    let mut t = FieldTable::default();
                    for (k, v) in entries {
                        t.insert(ShortString::from_wire_bytes(&k), v);
                    }
                    AMQPValue::FieldTable(t)
                }),
        ]
    })
}

fn is_unsafe(c: char) -> bool {
    c.is_control() || dlq::json::needs_escape(c)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
    ))]

    #[test]
    #[ignore = "fuzz: run by scripts/fuzz"]
    fn json_headers_survive_json_to_amqp_to_json(table in prop::collection::btree_map(key(), json_value(), 0..8)) {
        let v = Value::Object(table.into_iter().collect());
        let amqp = headers_from_json(&v).map_err(TestCaseError::fail)?;
        prop_assert_eq!(field_table_to_json(&amqp), v);
    }

    #[test]
    #[ignore = "fuzz: run by scripts/fuzz"]
    fn any_amqp_value_renders_and_its_rendering_is_a_fixpoint(v in amqp_value()) {
        let json = amqp_value_to_json(&v);
        if let Ok(back) = json_to_amqp(&json, "fuzz") {
            prop_assert_eq!(amqp_value_to_json(&back), json);
        }
    }

    #[test]
    #[ignore = "fuzz: run by scripts/fuzz"]
    fn short_string_bytes_come_back_exactly(bytes in prop::collection::vec(any::<u8>(), 0..255)) {
        let s = ShortString::from_wire_bytes(&bytes);
        prop_assert_eq!(&s.wire_bytes()[..], &bytes[..]);
        prop_assert_eq!(s.has_raw_bytes(), std::str::from_utf8(&bytes).is_err()
            || std::str::from_utf8(&bytes).unwrap().chars().any(|c| u32::from(c) >= 0x10_FF00));
    }

    #[test]
    #[ignore = "fuzz: run by scripts/fuzz"]
    fn sanitised_text_and_written_json_hold_nothing_a_terminal_acts_on(s in any::<String>(), raw in prop::collection::vec(any::<u8>(), 0..64)) {
        let lossy = String::from_utf8_lossy(&raw).into_owned();
        for text in [&s, &lossy] {
            let clean = dlq::sanitize::for_terminal(text);
            prop_assert!(!clean.chars().any(is_unsafe), "{:?} -> {:?}", text, clean);
            let line = dlq::sanitize::line(text);
            prop_assert!(line.chars().count() <= dlq::sanitize::MAX_LINE);
            let value = Value::String(text.clone());
            let written = String::from_utf8(dlq::json::to_vec(&value).unwrap()).unwrap();
            prop_assert!(!written.chars().any(is_unsafe), "{:?}", written);
            prop_assert_eq!(serde_json::from_str::<Value>(&written).unwrap(), value);
        }
    }
}
