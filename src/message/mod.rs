//! Owns the contract's JSON shape of a message (CONTRACT.md section 5): AMQP message → JSON and, for `import`, JSON → publishable record.

mod amqp_value;
mod body;
mod failure;
mod record;
#[cfg(test)]
mod testing;
mod xdeath;

pub(crate) use amqp_value::*;
pub(crate) use body::*;
pub(crate) use failure::*;
pub(crate) use record::*;

pub use amqp_value::{amqp_value_to_json, field_table_to_json};
pub use record::{headers_from_json, json_to_amqp};
pub use xdeath::{x_death, XDeath};

use lapin::BasicProperties;
use serde_json::{Map, Value};

/// One delivered message, borrowed from wherever the caller got it (basic_get, a consumer...).
pub(crate) struct MessageView<'a> {
    pub position: u64,
    pub queue: &'a str,
    pub exchange: &'a str,
    pub routing_key: &'a str,
    pub redelivered: bool,
    pub properties: &'a BasicProperties,
    pub body: &'a [u8],
}

impl<'a> MessageView<'a> {
    /// A delivery read from `queue` at 1-based `position`.
    pub(crate) fn from_delivery(
        queue: &'a str,
        position: u64,
        d: &'a lapin::message::Delivery,
    ) -> Self {
        MessageView {
            position,
            queue,
            exchange: d.exchange.as_str(),
            routing_key: d.routing_key.as_str(),
            redelivered: d.redelivered,
            properties: &d.properties,
            body: &d.data,
        }
    }
}

/// One message as dlq models it, built once per delivery: the envelope, the properties and
/// headers as JSON, the failure derived once, and the body as bytes plus its rendering.
/// `Serialize` (derived, fields in declaration order) writes the contract's section 5 object.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub(crate) struct Message {
    pub position: u64,
    pub queue: String,
    pub exchange: String,
    pub routing_key: String,
    pub redelivered: bool,
    pub properties: Map<String, Value>,
    pub headers: Map<String, Value>,
    pub failure: Failure,
    #[serde(flatten)]
    pub body: Body,
}

impl Message {
    pub(crate) fn new(m: &MessageView) -> Message {
        let headers = m.properties.headers().as_ref();
        Message {
            position: m.position,
            queue: m.queue.to_owned(),
            exchange: m.exchange.to_owned(),
            routing_key: m.routing_key.to_owned(),
            redelivered: m.redelivered,
            properties: into_object(properties_to_json(m.properties)),
            headers: headers.map_or_else(Map::new, |h| into_object(field_table_to_json(h))),
            failure: failure(headers),
            body: Body::new(m.body),
        }
    }

    /// A delivery read from `queue` at 1-based `position`.
    pub(crate) fn from_delivery(
        queue: &str,
        position: u64,
        d: &lapin::message::Delivery,
    ) -> Message {
        Message::new(&MessageView::from_delivery(queue, position, d))
    }

    /// The contract object as a JSON value (what `--filter`, `--group-by` and `--transform`
    /// see).
    pub(crate) fn to_value(&self) -> Value {
        // Serialising plain structs, strings and JSON values cannot fail: every map key is a
        // string.
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// The x-death entries as JSON (newest first), when the headers carry any.
    pub(crate) fn deaths(&self) -> &[Value] {
        match self.headers.get("x-death") {
            Some(Value::Array(deaths)) => deaths,
            _ => &[],
        }
    }
}

fn into_object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(o) => o,
        _ => Map::new(),
    }
}

/// The contract object of one message, keys in the contract's order.
#[cfg(test)]
pub(crate) fn to_json(m: &MessageView) -> Value {
    Message::new(m).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::message::testing::*;
    use lapin::BasicProperties;

    use lapin::types::AMQPValue;
    use serde_json::json;

    #[test]
    fn contract_example_object() {
        let headers = table(vec![
            ("x-error-message", long("timeout")),
            ("x-attempts", AMQPValue::LongLongInt(6)),
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
            .with_message_id("m-1".into())
            .with_timestamp(1_763_800_000)
            .with_delivery_mode(2)
            .with_headers(headers);
        let body = br#"{"tenant":"acme"}"#;
        let got = to_json(&view(&props, body));
        let expected = json!({
            "position": 1,
            "queue": "billing.error",
            "exchange": "",
            "routing_key": "billing.error",
            "redelivered": false,
            "properties": { "content_type": "application/json", "delivery_mode": 2,
                            "message_id": "m-1", "timestamp": 1_763_800_000 },
            "headers": { "x-attempts": 6, "x-death": [ { "count": 5, "exchange": "", "queue": "billing",
                         "reason": "rejected", "routing-keys": ["billing.retry"], "time": 1_763_800_000 } ],
                         "x-error-message": "timeout" },
            "failure": { "origin": "billing", "reason": "rejected", "attempts": 6,
                         "message": "timeout", "type": null, "at": 1_763_800_000 },
            "body": { "tenant": "acme" },
            "body_encoding": "json",
            "body_size": 17
        });
        assert_eq!(got, expected);
        let keys: Vec<&String> = got
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            keys,
            [
                "position",
                "queue",
                "exchange",
                "routing_key",
                "redelivered",
                "properties",
                "headers",
                "failure",
                "body",
                "body_encoding",
                "body_size"
            ]
        );
        let failure_keys: Vec<&String> = got["failure"]
            .as_object()
            .map(|o| o.keys().collect())
            .unwrap_or_default();
        assert_eq!(
            failure_keys,
            ["origin", "reason", "attempts", "message", "type", "at"]
        );
    }
}
