//! The replayed copy's headers (pure): broker-owned death history removed, `x-replay-count` + 1.

use lapin::types::{AMQPValue, FieldTable, ShortString};

pub(crate) const REPLAY_COUNT: &str = "x-replay-count";

/// Whether a header is the broker's dead-letter history, which a replay must not carry: the
/// worker's attempt count starts again, and since 3.13 the broker owns x-death anyway.
pub(crate) fn is_death_header(key: &str) -> bool {
    key == "x-death" || key.starts_with("x-first-death-") || key.starts_with("x-last-death-")
}

/// Whether a header is a quorum queue's delivery counter (`x-delivery-count` on 3.10 and 4.0–4.2,
/// `x-acquired-count` from 4.3): it counts deliveries from the source queue, and a fresh copy in
/// the work queue must not start with a stale count.
pub(crate) fn is_delivery_counter(key: &str) -> bool {
    key == "x-delivery-count" || key == "x-acquired-count"
}

/// The headers of the copy: everything but the death history, and `x-replay-count` = previous + 1.
pub(crate) fn replay_headers(original: Option<&FieldTable>) -> FieldTable {
    let mut out = FieldTable::default();
    let mut previous = 0;
    if let Some(h) = original {
        for (k, v) in h.inner() {
            if k.as_str() == REPLAY_COUNT {
                previous = crate::message::value_int(v).unwrap_or(0).max(0);
            } else if !is_death_header(k.as_str()) && !is_delivery_counter(k.as_str()) {
                out.insert(k.clone(), v.clone());
            }
        }
    }
    out.insert(
        ShortString::from(REPLAY_COUNT),
        AMQPValue::LongLongInt(previous + 1),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    fn table(pairs: Vec<(&str, AMQPValue)>) -> FieldTable {
        let mut t = FieldTable::default();
        for (k, v) in pairs {
            t.insert(k.into(), v);
        }
        t
    }

    #[test]
    fn death_history_is_dropped_and_everything_else_kept() {
        let h = table(vec![
            ("x-death", AMQPValue::FieldArray(FieldArray::default())),
            (
                "x-first-death-queue",
                AMQPValue::LongString("billing".into()),
            ),
            (
                "x-first-death-reason",
                AMQPValue::LongString("rejected".into()),
            ),
            ("x-last-death-exchange", AMQPValue::LongString("".into())),
            ("x-error-message", AMQPValue::LongString("timeout".into())),
            ("tenant", AMQPValue::LongString("acme".into())),
        ]);
        let out = replay_headers(Some(&h));
        let keys: Vec<&str> = out.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["tenant", "x-error-message", "x-replay-count"]);
    }

    #[test]
    fn quorum_delivery_counters_are_dropped() {
        let h = table(vec![
            ("x-delivery-count", AMQPValue::LongLongInt(3)),
            ("x-acquired-count", AMQPValue::LongLongInt(4)),
            ("tenant", AMQPValue::LongString("acme".into())),
        ]);
        let out = replay_headers(Some(&h));
        let keys: Vec<&str> = out.inner().keys().map(|k| k.as_str()).collect();
        assert_eq!(keys, ["tenant", "x-replay-count"]);
    }

    #[test]
    fn first_replay_counts_1() {
        assert_eq!(
            replay_headers(None).inner()[REPLAY_COUNT],
            AMQPValue::LongLongInt(1)
        );
    }

    #[test]
    fn replay_count_is_incremented_whatever_its_integer_width() {
        for v in [
            AMQPValue::LongLongInt(2),
            AMQPValue::LongInt(2),
            AMQPValue::ShortShortUInt(2),
            AMQPValue::LongString("2".into()),
        ] {
            let out = replay_headers(Some(&table(vec![(REPLAY_COUNT, v)])));
            assert_eq!(out.inner()[REPLAY_COUNT], AMQPValue::LongLongInt(3));
        }
    }
}
