//! The retry rule of the seed design (worker side): attempt count from x-death, retry or park, parking headers.

use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};

use crate::message::x_death;

/// Attempt number of a delivery in `work_queue`: 1 + the `count` of the x-death entry whose
/// `queue` is the work queue and `reason` is `rejected` (0 when there is none).
pub fn attempt(headers: Option<&FieldTable>, work_queue: &str) -> u32 {
    let count = x_death(headers)
        .into_iter()
        .find(|d| d.queue == work_queue && d.reason == "rejected")
        .map_or(0, |d| d.count);
    1 + count.clamp(0, u32::MAX as i64 - 1) as u32
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Reject without requeue: the work queue dead-letters it to the retry queue.
    Retry,
    /// Publish a copy to the error queue (confirmed), then ack.
    Park,
}

/// A failed message is retried `max_retries` times; the failure after the last retry parks it.
pub(crate) fn decide(attempt: u32, max_retries: u32) -> Decision {
    if attempt <= max_retries {
        Decision::Retry
    } else {
        Decision::Park
    }
}

/// Why a message failed, as the worker knows it.
pub(crate) struct Failure<'a> {
    pub message: &'a str,
    pub kind: &'a str,
}

/// The headers of the parked copy: the original's, plus the contract's `x-error-*` set.
/// `exchange`/`routing_key` are the original publish's, taken from the work queue's x-death
/// entry when there is one (redeliveries from the retry queue arrive via the default exchange).
pub(crate) fn parking_headers(
    original: Option<&FieldTable>,
    work_queue: &str,
    failure: &Failure,
    attempt: u32,
    delivery_exchange: &str,
    delivery_routing_key: &str,
    now_secs: u64,
) -> FieldTable {
    let (exchange, routing_key) = original_route(original, work_queue).unwrap_or_else(|| {
        (
            delivery_exchange.to_string(),
            delivery_routing_key.to_string(),
        )
    });
    let mut h = original.cloned().unwrap_or_default();
    let text = |s: &str| AMQPValue::LongString(LongString::from(s));
    h.insert(ShortString::from("x-error-message"), text(failure.message));
    h.insert(ShortString::from("x-error-type"), text(failure.kind));
    h.insert(
        ShortString::from("x-failed-at"),
        AMQPValue::Timestamp(now_secs),
    );
    h.insert(
        ShortString::from("x-attempts"),
        AMQPValue::LongLongInt(attempt as i64),
    );
    h.insert(ShortString::from("x-original-exchange"), text(&exchange));
    h.insert(
        ShortString::from("x-original-routing-key"),
        text(&routing_key),
    );
    h
}

fn original_route(headers: Option<&FieldTable>, work_queue: &str) -> Option<(String, String)> {
    x_death(headers)
        .into_iter()
        .filter(|d| d.queue == work_queue)
        .find_map(|d| Some((d.exchange, d.routing_keys.into_iter().next()?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::FieldArray;

    /// An x-death entry built the way RabbitMQ builds one.
    fn death(queue: &str, reason: &str, count: i64, exchange: &str, key: &str) -> AMQPValue {
        let mut t = FieldTable::default();
        t.insert("count".into(), AMQPValue::LongLongInt(count));
        t.insert("reason".into(), AMQPValue::LongString(reason.into()));
        t.insert("queue".into(), AMQPValue::LongString(queue.into()));
        t.insert("time".into(), AMQPValue::Timestamp(1_763_800_000));
        t.insert("exchange".into(), AMQPValue::LongString(exchange.into()));
        t.insert(
            "routing-keys".into(),
            AMQPValue::FieldArray(FieldArray::from(vec![AMQPValue::LongString(key.into())])),
        );
        AMQPValue::FieldTable(t)
    }

    fn headers(deaths: Vec<AMQPValue>) -> FieldTable {
        let mut h = FieldTable::default();
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(FieldArray::from(deaths)),
        );
        h
    }

    #[test]
    fn first_delivery_is_attempt_1() {
        assert_eq!(attempt(None, "billing"), 1);
        assert_eq!(attempt(Some(&FieldTable::default()), "billing"), 1);
    }

    #[test]
    fn attempt_counts_only_rejections_in_the_work_queue() {
        let h = headers(vec![
            death("billing.retry", "expired", 2, "", "billing.retry"),
            death("billing", "rejected", 2, "events", "billing.created"),
            death("other", "rejected", 9, "", "other"),
        ]);
        assert_eq!(attempt(Some(&h), "billing"), 3);
    }

    #[test]
    fn retries_max_retries_times_then_parks() {
        let decisions: Vec<Decision> = (1..=4).map(|a| decide(a, 3)).collect();
        assert_eq!(
            decisions,
            [
                Decision::Retry,
                Decision::Retry,
                Decision::Retry,
                Decision::Park
            ]
        );
        assert_eq!(decide(1, 0), Decision::Park);
    }

    #[test]
    fn parking_headers_keep_the_original_and_add_the_contract_set() {
        let h = headers(vec![death(
            "billing",
            "rejected",
            3,
            "events",
            "billing.created",
        )]);
        let p = parking_headers(
            Some(&h),
            "billing",
            &Failure {
                message: "boom",
                kind: "Timeout",
            },
            4,
            "",
            "billing",
            1_763_800_123,
        );
        let m = p.inner();
        assert!(m.contains_key("x-death"));
        assert_eq!(m["x-error-message"], AMQPValue::LongString("boom".into()));
        assert_eq!(m["x-error-type"], AMQPValue::LongString("Timeout".into()));
        assert_eq!(m["x-failed-at"], AMQPValue::Timestamp(1_763_800_123));
        assert_eq!(m["x-attempts"], AMQPValue::LongLongInt(4));
        assert_eq!(
            m["x-original-exchange"],
            AMQPValue::LongString("events".into())
        );
        assert_eq!(
            m["x-original-routing-key"],
            AMQPValue::LongString("billing.created".into())
        );
    }

    #[test]
    fn parking_headers_fall_back_to_the_delivery_route() {
        let p = parking_headers(
            None,
            "billing",
            &Failure {
                message: "x",
                kind: "",
            },
            1,
            "",
            "billing",
            0,
        );
        assert_eq!(
            p.inner()["x-original-routing-key"],
            AMQPValue::LongString("billing".into())
        );
    }
}
