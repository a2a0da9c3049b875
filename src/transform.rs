//! `replay --transform` (pure): the copy a transform's output describes, built from the original
//! message so that every field the transform left alone is published exactly as it was (same
//! bytes, same AMQP value types); and a compact diff of what it changed, for previews.

use lapin::types::{FieldTable, ShortString};
use lapin::BasicProperties;
use serde_json::{Map, Value};

use crate::message::{decode_body, json_to_amqp, properties_from_json};

/// What to publish for one message, before the replay rules (x-death removed, x-replay-count + 1).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Repaired {
    /// The queue the transform sent it to, when it changed `.routing_key`.
    pub routing_key: Option<String>,
    pub properties: BasicProperties,
    pub body: Vec<u8>,
}

const BODY_FIELDS: [&str; 3] = ["body", "body_encoding", "body_text"];

fn object<'a>(v: Option<&'a Value>, field: &str) -> Result<Option<&'a Map<String, Value>>, String> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(o)) => Ok(Some(o)),
        Some(_) => Err(format!("field {field} must be an object")),
    }
}

/// Builds the copy from the transform's output `after`, the message's section 5 object `before`
/// and the original properties and body. Err is one sentence naming the bad field.
pub(crate) fn repair(
    original: &BasicProperties,
    body: &[u8],
    before: &Value,
    after: &Value,
) -> Result<Repaired, String> {
    let Value::Object(out) = after else {
        return Err("the transform's output is not an object".into());
    };
    let empty = Map::new();
    let before_obj = before.as_object().unwrap_or(&empty);

    // Headers: a key whose JSON value is unchanged keeps its original AMQP value.
    let old_json = object(before_obj.get("headers"), "headers")?.unwrap_or(&empty);
    let old_table = original.headers().clone().unwrap_or_default();
    let mut headers = FieldTable::default();
    for (k, v) in object(out.get("headers"), "headers")?.unwrap_or(&empty) {
        if k.len() > 255 {
            return Err(format!(
                "header name {:?}… is longer than 255 bytes",
                k.chars().take(20).collect::<String>()
            ));
        }
        let key = ShortString::from(k.as_str());
        let kept = (old_json.get(k) == Some(v))
            .then(|| old_table.inner().get(&key).cloned())
            .flatten();
        let value = match kept {
            Some(value) => value,
            None => json_to_amqp(v, &format!("headers.{k}"))?,
        };
        headers.insert(key, value);
    }

    // Properties: unchanged, the original; else read as import reads them.
    let properties = if out.get("properties") == before_obj.get("properties") {
        original.clone()
    } else {
        match out.get("properties") {
            None | Some(Value::Null) => BasicProperties::default(),
            Some(p) => properties_from_json(p)?,
        }
    };
    // Replay then adds x-replay-count, so the copy always has a headers table.
    let properties = properties.with_headers(headers);

    // Body: unchanged, the original bytes; else decoded as import does. An exact text left over
    // from before would hide the change, so it goes when the body changed and it did not.
    let unchanged = |k: &str| out.get(k) == before_obj.get(k);
    let body = if BODY_FIELDS.iter().all(|k| unchanged(k)) {
        body.to_vec()
    } else {
        let mut record = out.clone();
        if unchanged("body_text") && !(unchanged("body") && unchanged("body_encoding")) {
            record.remove("body_text");
        }
        decode_body(&record)?
    };

    let routing_key = if unchanged("routing_key") {
        None
    } else {
        match out.get("routing_key") {
            Some(Value::String(q)) if !q.is_empty() => Some(q.clone()),
            _ => return Err("field routing_key must be a queue name".into()),
        }
    };
    Ok(Repaired {
        routing_key,
        properties,
        body,
    })
}

/// The fields of a message object that are published (the others, like `position` or
/// `failure`, are derived and a change to them has no effect).
const PUBLISHED: [&str; 5] = [
    "routing_key",
    "properties",
    "headers",
    "body",
    "body_encoding",
];

/// Whether the transform changed anything that is published.
pub(crate) fn changes_anything(before: &Value, after: &Value) -> bool {
    let field = |v: &'_ Value, f: &str| v.get(f).cloned().unwrap_or(Value::Null);
    PUBLISHED
        .iter()
        .any(|f| field(before, f) != field(after, f))
}

/// One line per changed leaf under body, headers, properties and routing_key, at most `max`
/// (with a last line saying how many more); empty when nothing that is published changed.
pub(crate) fn diff(before: &Value, after: &Value, max: usize) -> Vec<String> {
    let mut lines = Vec::new();
    for field in PUBLISHED {
        let b = before.get(field).unwrap_or(&Value::Null);
        let a = after.get(field).unwrap_or(&Value::Null);
        walk(field, b, a, &mut lines);
    }
    if lines.len() > max {
        let more = lines.len() - max;
        lines.truncate(max);
        lines.push(format!("… and {more} more change(s)"));
    }
    lines
}

fn walk(path: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    if before == after {
        return;
    }
    if let (Value::Object(b), Value::Object(a)) = (before, after) {
        for (k, bv) in b {
            walk(
                &format!("{path}.{k}"),
                bv,
                a.get(k).unwrap_or(&Value::Null),
                out,
            );
        }
        for (k, av) in a.iter().filter(|(k, _)| !b.contains_key(*k)) {
            walk(&format!("{path}.{k}"), &Value::Null, av, out);
        }
        return;
    }
    out.push(format!("{path}: {} → {}", short(before), short(after)));
}

/// A value on one line, cut at 60 characters.
fn short(v: &Value) -> String {
    if v.is_null() {
        return "(none)".into();
    }
    let text = v.to_string();
    if text.chars().count() > 60 {
        format!("{}…", text.chars().take(59).collect::<String>())
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;
    use serde_json::json;

    fn original() -> BasicProperties {
        let mut h = FieldTable::default();
        h.insert("n".into(), AMQPValue::LongInt(7));
        h.insert(
            "x-error-message".into(),
            AMQPValue::LongString("boom".into()),
        );
        BasicProperties::default()
            .with_message_id("m-1".into())
            .with_priority(3)
            .with_headers(h)
    }

    fn before() -> Value {
        json!({
            "routing_key": "billing.error",
            "properties": { "message_id": "m-1", "priority": 3 },
            "headers": { "n": 7, "x-error-message": "boom" },
            "body": { "amount": "12.50" },
            "body_encoding": "json",
            "body_text": "{ \"amount\": \"12.50\" }",
        })
    }

    #[test]
    fn identity_keeps_every_byte_and_value_type() {
        let body = b"{ \"amount\": \"12.50\" }";
        let r = repair(&original(), body, &before(), &before()).unwrap();
        assert_eq!(r.body, body);
        assert_eq!(r.properties, original());
        assert_eq!(r.routing_key, None);
        // LongInt stays LongInt (import alone would make it LongLongInt).
        assert_eq!(
            r.properties.headers().as_ref().unwrap().inner()["n"],
            AMQPValue::LongInt(7)
        );
    }

    #[test]
    fn a_changed_body_field_drops_the_stale_exact_text() {
        let mut after = before();
        after["body"]["amount"] = json!(12.5);
        let r = repair(&original(), b"{ \"amount\": \"12.50\" }", &before(), &after).unwrap();
        assert_eq!(r.body, br#"{"amount":12.5}"#);
        assert_eq!(r.properties, original());
    }

    #[test]
    fn a_new_header_is_converted_and_the_others_keep_their_types() {
        let mut after = before();
        after["headers"]["fixed-by"] = json!("ops");
        let r = repair(&original(), b"x", &before(), &after).unwrap();
        let h = r.properties.headers().clone().unwrap();
        assert_eq!(h.inner()["n"], AMQPValue::LongInt(7));
        assert_eq!(h.inner()["fixed-by"], AMQPValue::LongString("ops".into()));
    }

    #[test]
    fn routing_key_change_reroutes() {
        let mut after = before();
        after["routing_key"] = json!("billing.v2");
        let r = repair(&original(), b"x", &before(), &after).unwrap();
        assert_eq!(r.routing_key.as_deref(), Some("billing.v2"));
    }

    #[test]
    fn invalid_outputs_are_errors_naming_the_field() {
        let cases = [
            (json!(5), "not an object"),
            (json!({"headers": []}), "headers"),
            (
                json!({"body": "x", "body_encoding": "rot13"}),
                "body_encoding",
            ),
            (
                json!({"properties": {"priority": "high"}, "body": 1}),
                "priority",
            ),
            (json!({"routing_key": 3, "body": 1}), "routing_key"),
        ];
        for (after, field) in cases {
            let mut merged = before();
            if let Value::Object(o) = &after {
                for (k, v) in o {
                    merged[k] = v.clone();
                }
            } else {
                merged = after.clone();
            }
            let e = repair(&original(), b"x", &before(), &merged).unwrap_err();
            assert!(e.contains(field), "{after}: {e}");
        }
    }

    #[test]
    fn diff_names_each_changed_leaf() {
        let mut after = before();
        after["body"]["amount"] = json!(12.5);
        after["routing_key"] = json!("billing.v2");
        after["headers"].as_object_mut().unwrap().remove("n");
        let d = diff(&before(), &after, 10);
        assert_eq!(
            d,
            vec![
                "routing_key: \"billing.error\" → \"billing.v2\"",
                "headers.n: 7 → (none)",
                "body.amount: \"12.50\" → 12.5",
            ]
        );
        assert!(diff(&before(), &before(), 10).is_empty());
        assert!(changes_anything(&before(), &after));
        assert!(!changes_anything(&before(), &before()));
        let many = diff(
            &json!({"body": {"a":1,"b":2,"c":3}}),
            &json!({"body": {}}),
            2,
        );
        assert_eq!(many.len(), 3);
        assert_eq!(many[2], "… and 1 more change(s)");
    }
}
