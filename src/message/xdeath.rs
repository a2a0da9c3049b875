//! The broker's `x-death` header, parsed once for the message model and the retry rule.

use lapin::types::{AMQPValue, FieldTable};

use super::*;

/// One entry of the broker's `x-death` header.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct XDeath {
    pub queue: String,
    pub reason: String,
    pub count: i64,
    pub exchange: String,
    pub routing_keys: Vec<String>,
    pub time: Option<i64>,
}

/// Entries in the broker's order (newest first). Entries that are not tables are skipped and
/// missing fields are empty, because a republished or hand-made x-death can be anything.
pub fn x_death(headers: Option<&FieldTable>) -> Vec<XDeath> {
    let Some(AMQPValue::FieldArray(entries)) = headers.and_then(|h| h.inner().get("x-death"))
    else {
        return Vec::new();
    };
    entries
        .as_slice()
        .iter()
        .filter_map(|e| match e {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        })
        .map(|t| {
            let text = |k: &str| {
                t.inner()
                    .get(k)
                    .and_then(value_str)
                    .unwrap_or("")
                    .to_owned()
            };
            XDeath {
                queue: text("queue"),
                reason: text("reason"),
                count: t.inner().get("count").and_then(value_int).unwrap_or(0),
                exchange: text("exchange"),
                routing_keys: match t.inner().get("routing-keys") {
                    Some(AMQPValue::FieldArray(keys)) => keys
                        .as_slice()
                        .iter()
                        .filter_map(value_str)
                        .map(str::to_owned)
                        .collect(),
                    _ => Vec::new(),
                },
                time: t.inner().get("time").and_then(value_time),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::message::testing::*;

    use lapin::types::AMQPValue;

    #[test]
    fn x_death_as_rabbitmq_builds_it() {
        let headers = table(vec![deaths(vec![
            death("billing.retry", "expired", 3, 200, "billing.retry"),
            death("billing", "rejected", 4, 100, "billing"),
        ])]);
        let got = x_death(Some(&headers));
        assert_eq!(
            got,
            vec![
                XDeath {
                    queue: "billing.retry".into(),
                    reason: "expired".into(),
                    count: 3,
                    exchange: String::new(),
                    routing_keys: vec!["billing.retry".into()],
                    time: Some(200),
                },
                XDeath {
                    queue: "billing".into(),
                    reason: "rejected".into(),
                    count: 4,
                    exchange: String::new(),
                    routing_keys: vec!["billing".into()],
                    time: Some(100),
                },
            ]
        );
        assert!(x_death(None).is_empty());
        let junk = table(vec![("x-death", long("not an array"))]);
        assert!(x_death(Some(&junk)).is_empty());
        let mixed = table(vec![deaths(vec![
            AMQPValue::Void,
            death("q", "rejected", 1, 1, "q"),
        ])]);
        assert_eq!(x_death(Some(&mixed)).len(), 1);
    }
}
