//! Builders shared by the message model's unit tests.

use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;

use super::MessageView;

pub(crate) fn table(entries: Vec<(&str, AMQPValue)>) -> FieldTable {
    let mut t = FieldTable::default();
    for (k, v) in entries {
        t.insert(k.into(), v);
    }
    t
}

pub(crate) fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(s.into())
}

/// An x-death entry laid out the way RabbitMQ writes it.
pub(crate) fn death(queue: &str, reason: &str, count: i64, time: u64, key: &str) -> AMQPValue {
    AMQPValue::FieldTable(table(vec![
        ("count", AMQPValue::LongLongInt(count)),
        ("exchange", long("")),
        ("queue", long(queue)),
        ("reason", long(reason)),
        (
            "routing-keys",
            AMQPValue::FieldArray(vec![long(key)].into()),
        ),
        ("time", AMQPValue::Timestamp(time)),
    ]))
}

pub(crate) fn deaths(entries: Vec<AMQPValue>) -> (&'static str, AMQPValue) {
    ("x-death", AMQPValue::FieldArray(entries.into()))
}

pub(crate) fn view<'a>(props: &'a BasicProperties, body: &'a [u8]) -> MessageView<'a> {
    MessageView {
        position: 1,
        queue: "billing.error",
        exchange: "",
        routing_key: "billing.error",
        redelivered: false,
        properties: props,
        body,
    }
}
