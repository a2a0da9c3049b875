//! JSON → AMQP, for `import` and `replay --transform`: a record back to exact body bytes,
//! properties and headers.

use lapin::types::{AMQPValue, FieldArray, FieldTable, ShortString};
use lapin::BasicProperties;
use serde_json::Value;

use super::*;

/// A record read back from JSON (for `dlq import`): exact body bytes, properties (headers
/// included), original exchange/routing key.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub exchange: String,
    pub routing_key: String,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

/// The inverse of [`to_json`] as far as publishing needs. Err is one sentence naming the bad field.
pub(crate) fn record_from_json(v: &Value) -> Result<Record, String> {
    let Value::Object(o) = v else {
        return Err("the record is not a JSON object".into());
    };
    let text = |key: &str| match o.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(format!("field {key} must be a string")),
    };
    let exchange = text("exchange")?;
    let routing_key = text("routing_key")?;
    let mut properties = match o.get("properties") {
        None | Some(Value::Null) => BasicProperties::default(),
        Some(p) => properties_from_json(p)?,
    };
    match o.get("headers") {
        None | Some(Value::Null) => {}
        Some(h) => {
            let table = headers_from_json(h)?;
            // `{}` is how both "no headers" and "empty headers" are written; publish neither.
            if !table.inner().is_empty() {
                properties = properties.with_headers(table);
            }
        }
    }
    let body = decode_body(o)?;
    Ok(Record {
        exchange,
        routing_key,
        properties,
        body,
    })
}

/// The `properties` object of the contract (headers excluded). Unknown names are refused, so
/// a typo does not silently drop a property on import.
pub(crate) fn properties_from_json(v: &Value) -> Result<BasicProperties, String> {
    let Value::Object(o) = v else {
        return Err("field properties must be an object".into());
    };
    let mut p = BasicProperties::default();
    for (key, value) in o {
        if value.is_null() {
            continue;
        }
        let field = format!("properties.{key}");
        let short = || short_string(value, &field);
        let octet = || {
            value
                .as_u64()
                .and_then(|n| u8::try_from(n).ok())
                .ok_or_else(|| format!("field {field} must be an integer from 0 to 255"))
        };
        p = match key.as_str() {
            "content_type" => p.with_content_type(short()?),
            "content_encoding" => p.with_content_encoding(short()?),
            "delivery_mode" => p.with_delivery_mode(octet()?),
            "priority" => p.with_priority(octet()?),
            "correlation_id" => p.with_correlation_id(short()?),
            "reply_to" => p.with_reply_to(short()?),
            "expiration" => p.with_expiration(short()?),
            "message_id" => p.with_message_id(short()?),
            "timestamp" => p.with_timestamp(
                value
                    .as_u64()
                    .ok_or_else(|| format!("field {field} must be a non-negative integer"))?,
            ),
            "type" => p.with_type(short()?),
            "user_id" => p.with_user_id(short()?),
            "app_id" => p.with_app_id(short()?),
            "cluster_id" => p.with_cluster_id(short()?),
            _ => return Err(format!("field {field} is not an AMQP message property")),
        };
    }
    Ok(p)
}

pub(super) fn short_string(v: &Value, field: &str) -> Result<ShortString, String> {
    let s = v
        .as_str()
        .ok_or_else(|| format!("field {field} must be a string"))?;
    ShortString::try_new(s).map_err(|_| format!("field {field} is longer than 255 bytes"))
}

/// The `headers` object of the contract. The broker's own timestamp fields (`x-failed-at`, the
/// `time` of each `x-death` entry) go back as AMQP timestamps, not integers, so a re-imported
/// message reads the same as the original.
pub fn headers_from_json(v: &Value) -> Result<FieldTable, String> {
    let Value::Object(o) = v else {
        return Err("field headers must be an object".into());
    };
    let mut table = FieldTable::default();
    for (key, value) in o {
        let field = format!("headers.{key}");
        let amqp = match (key.as_str(), value) {
            ("x-failed-at", Value::Number(n)) if n.is_u64() => json_to_timestamp(value, &field)?,
            ("x-death", Value::Array(entries)) => x_death_from_json(entries, &field)?,
            _ => json_to_amqp(value, &field)?,
        };
        table.insert(field_name(key, &field)?, amqp);
    }
    Ok(table)
}

pub(super) fn x_death_from_json(entries: &[Value], field: &str) -> Result<AMQPValue, String> {
    let mut out = FieldArray::default();
    for (i, entry) in entries.iter().enumerate() {
        let entry_field = format!("{field}[{i}]");
        let Value::Object(o) = entry else {
            out.push(json_to_amqp(entry, &entry_field)?);
            continue;
        };
        let mut table = FieldTable::default();
        for (key, value) in o {
            let f = format!("{entry_field}.{key}");
            let amqp = match (key.as_str(), value) {
                ("time", Value::Number(n)) if n.is_u64() => json_to_timestamp(value, &f)?,
                _ => json_to_amqp(value, &f)?,
            };
            table.insert(field_name(key, &f)?, amqp);
        }
        out.push(AMQPValue::FieldTable(table));
    }
    Ok(AMQPValue::FieldArray(out))
}

pub(super) fn json_to_timestamp(v: &Value, field: &str) -> Result<AMQPValue, String> {
    v.as_u64()
        .map(AMQPValue::Timestamp)
        .ok_or_else(|| format!("field {field} must be a non-negative integer"))
}

pub(super) fn field_name(key: &str, field: &str) -> Result<ShortString, String> {
    ShortString::try_new(key).map_err(|_| format!("field {field} has a name longer than 255 bytes"))
}

/// string → long string, integer → long-long, other number → double, bool, null → void,
/// array → field array, object → field table.
pub fn json_to_amqp(v: &Value, field: &str) -> Result<AMQPValue, String> {
    Ok(match v {
        Value::Null => AMQPValue::Void,
        Value::Bool(b) => AMQPValue::Boolean(*b),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                AMQPValue::LongLongInt(i)
            } else if n.is_u64() {
                return Err(format!(
                    "field {field} is an integer too large for an AMQP header"
                ));
            } else {
                match n.as_f64() {
                    Some(f) => AMQPValue::Double(f),
                    None => return Err(format!("field {field} is not a usable number")),
                }
            }
        }
        Value::String(s) => AMQPValue::LongString(s.as_str().into()),
        Value::Array(items) => {
            let mut out = FieldArray::default();
            for (i, item) in items.iter().enumerate() {
                out.push(json_to_amqp(item, &format!("{field}[{i}]"))?);
            }
            AMQPValue::FieldArray(out)
        }
        Value::Object(o) => {
            let mut table = FieldTable::default();
            for (key, value) in o {
                let f = format!("{field}.{key}");
                table.insert(field_name(key, &f)?, json_to_amqp(value, &f)?);
            }
            AMQPValue::FieldTable(table)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::message::testing::*;
    use lapin::types::AMQPValue;
    use lapin::BasicProperties;
    use serde_json::json;
    use serde_json::Value;

    fn roundtrip(props: &BasicProperties, body: &[u8]) -> Record {
        let m = MessageView {
            position: 3,
            queue: "q.error",
            exchange: "events",
            routing_key: "order.created",
            redelivered: true,
            properties: props,
            body,
        };
        let line = serde_json::to_string(&to_json(&m)).unwrap_or_default();
        let parsed: Value = serde_json::from_str(&line).unwrap_or_default();
        match record_from_json(&parsed) {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn import_restores_exact_body_bytes() {
        let bodies: Vec<&[u8]> = vec![
            br#"{"tenant":"acme"}"#,
            b"{\n  \"tenant\": \"acme\",\n  \"n\": 1.50\n}\n",
            br#"{"z":1,"a":2}"#,
            br#"{"s":"caf\u00e9 \/ \"q\""}"#,
            b"1e2",
            b"123456789012345678901234567890",
            b"plain text",
            b"",
            b"\x00\x01\x02\xff",
            b"almost utf8 \xc3",
            "ünïcødé ✓".as_bytes(),
        ];
        let props = BasicProperties::default();
        for body in bodies {
            let r = roundtrip(&props, body);
            assert_eq!(r.body, body, "{:?}", String::from_utf8_lossy(body));
            assert_eq!(r.exchange, "events");
            assert_eq!(r.routing_key, "order.created");
        }
    }

    #[test]
    fn import_restores_properties_and_headers() {
        let headers = table(vec![
            ("s", long("text")),
            ("i", AMQPValue::LongLongInt(-5)),
            ("d", AMQPValue::Double(2.5)),
            ("b", AMQPValue::Boolean(true)),
            ("v", AMQPValue::Void),
            (
                "a",
                AMQPValue::FieldArray(vec![long("x"), AMQPValue::LongLongInt(1)].into()),
            ),
            ("t", AMQPValue::FieldTable(table(vec![("k", long("v"))]))),
            ("x-failed-at", AMQPValue::Timestamp(1_700_000_000)),
            ("x-first-death-queue", long("billing")),
            deaths(vec![death(
                "billing",
                "rejected",
                5,
                1_763_800_000,
                "billing.retry",
            )]),
        ]);
        let props = BasicProperties::default()
            .with_content_type("application/json".into())
            .with_content_encoding("utf-8".into())
            .with_delivery_mode(2)
            .with_priority(9)
            .with_correlation_id("c-1".into())
            .with_reply_to("replies".into())
            .with_expiration("60000".into())
            .with_message_id("m-1".into())
            .with_timestamp(1_763_800_000)
            .with_type("invoice".into())
            .with_user_id("guest".into())
            .with_app_id("billing-worker".into())
            .with_cluster_id("c".into())
            .with_headers(headers);
        let r = roundtrip(&props, b"{}");
        assert_eq!(r.properties, props);
    }

    #[test]
    fn import_widens_header_integers() {
        let headers = table(vec![
            ("n", AMQPValue::LongInt(7)),
            ("f", AMQPValue::Float(0.5)),
        ]);
        let props = BasicProperties::default().with_headers(headers);
        let r = roundtrip(&props, b"");
        let expected = table(vec![
            ("n", AMQPValue::LongLongInt(7)),
            ("f", AMQPValue::Double(0.5)),
        ]);
        assert_eq!(r.properties.headers().as_ref(), Some(&expected));
    }

    #[test]
    fn import_of_minimal_records() {
        let r = record_from_json(&json!({"body": {"a": 1}})).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.body, br#"{"a":1}"#);
        assert_eq!(r.exchange, "");
        assert_eq!(r.properties, BasicProperties::default());
        let r = record_from_json(&json!({"body": "hi", "headers": {}}))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(r.body, b"hi");
        assert_eq!(r.properties.headers(), &None);
    }

    #[test]
    fn import_errors_name_the_field() {
        let cases = [
            (json!([]), "record"),
            (json!({"body": 1, "exchange": 5}), "exchange"),
            (json!({"body": 1, "routing_key": []}), "routing_key"),
            (json!({"exchange": ""}), "body"),
            (json!({"body": 1, "body_encoding": "text"}), "body"),
            (json!({"body": "!!", "body_encoding": "base64"}), "body"),
            (
                json!({"body": "x", "body_encoding": "rot13"}),
                "body_encoding",
            ),
            (json!({"body": "x", "body_text": 3}), "body_text"),
            (
                json!({"body": "", "properties": {"priority": 256}}),
                "properties.priority",
            ),
            (
                json!({"body": "", "properties": {"delivery_mode": "2"}}),
                "properties.delivery_mode",
            ),
            (
                json!({"body": "", "properties": {"timestamp": -1}}),
                "properties.timestamp",
            ),
            (
                json!({"body": "", "properties": {"message_id": 5}}),
                "properties.message_id",
            ),
            (
                json!({"body": "", "properties": {"message_id": "x".repeat(256)}}),
                "properties.message_id",
            ),
            (
                json!({"body": "", "properties": {"colour": "red"}}),
                "properties.colour",
            ),
            (json!({"body": "", "properties": []}), "properties"),
            (json!({"body": "", "headers": "x"}), "headers"),
            (
                json!({"body": "", "headers": {"big": u64::MAX}}),
                "headers.big",
            ),
            (
                json!({"body": "", "headers": {"x-death": [{"count": u64::MAX}]}}),
                "headers.x-death[0].count",
            ),
            (
                json!({"body": "", "headers": {"deep": {"list": [1, {"n": u64::MAX}]}}}),
                "headers.deep.list[1].n",
            ),
        ];
        for (record, field) in cases {
            match record_from_json(&record) {
                Ok(_) => panic!("{record} was accepted"),
                Err(e) => {
                    assert!(e.contains(field), "{e:?} does not name {field}");
                    assert!(!e.contains('\n'), "{e:?}");
                }
            }
        }
    }

    #[test]
    fn import_timestamp_fields_only_where_the_broker_puts_them() {
        let r = record_from_json(&json!({
            "body": "",
            "headers": {
                "x-failed-at": 10,
                "other-at": 10,
                "x-death": [{"count": 2, "time": 20, "queue": "q"}],
                "nested": {"time": 30}
            }
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        let h = r.properties.headers().clone().unwrap_or_default();
        assert_eq!(
            h.inner().get("x-failed-at"),
            Some(&AMQPValue::Timestamp(10))
        );
        assert_eq!(h.inner().get("other-at"), Some(&AMQPValue::LongLongInt(10)));
        assert_eq!(
            h.inner().get("nested"),
            Some(&AMQPValue::FieldTable(table(vec![(
                "time",
                AMQPValue::LongLongInt(30)
            )])))
        );
        assert_eq!(
            x_death(Some(&h)),
            vec![XDeath {
                queue: "q".into(),
                count: 2,
                time: Some(20),
                ..XDeath::default()
            }]
        );
        let Some(AMQPValue::FieldArray(entries)) = h.inner().get("x-death") else {
            panic!("x-death is not an array");
        };
        let Some(AMQPValue::FieldTable(entry)) = entries.as_slice().first() else {
            panic!("x-death entry is not a table");
        };
        assert_eq!(entry.inner().get("count"), Some(&AMQPValue::LongLongInt(2)));
    }
}
