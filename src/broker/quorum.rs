//! Quorum-queue awareness: whether browsing (a nack with requeue) brings messages closer to their
//! delivery-limit on this broker, decided from what the management API says about the queue.

use lapin::types::FieldTable;
use serde_json::Value;

use super::management::Management;
use super::BrokerUrl;

/// RabbitMQ 4.0 gave every quorum queue this delivery-limit when none is configured.
pub(crate) const DEFAULT_DELIVERY_LIMIT_4X: i64 = 20;

/// Reading stops at a message this close to its limit: a few more browses may drop or dead-letter it.
pub(crate) const MARGIN: i64 = 2;

/// What browsing this queue risks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Risk {
    /// Browsing does not bring any message closer to being dropped.
    None,
    /// Each browse counts toward `limit`; reading stops at a message within [`MARGIN`] of it unless forced.
    DeliveryLimit { limit: i64, version: String },
    /// The queue is a stream: AMQP 0-9-1 browsing with requeue does not apply.
    Stream,
    /// The management API could not tell (the reason, for a note).
    Unknown(String),
}

/// Where a message given back (basic.nack with requeue) goes, which decides how a read that stops
/// before the end of the queue must go on so that the queue keeps its order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Requeue {
    /// Back to its place (classic queues).
    InPlace,
    /// To the back of the queue: quorum queues before 4.0 (measured on 3.10.8, with and without a
    /// delivery-limit). A partial read keeps the order only by reading the whole queue.
    Back,
    /// To a FIFO of returned messages served before all others, marked redelivered: quorum queues
    /// from 4.0 (`returns` in rabbit_fifo.erl; redelivered = acquired count > 0 in
    /// rabbit_fifo_client.erl). A partial read keeps the order by reading that FIFO to its end:
    /// up to the first delivery that is not a redelivery.
    Returns,
}

/// The [`Requeue`] of a queue of this type on this broker version (unknown: as before 4.0, since
/// reading the whole queue keeps the order on every version).
pub(crate) fn requeue(queue_type: &str, version: Option<&str>) -> Requeue {
    if queue_type != "quorum" {
        return Requeue::InPlace;
    }
    match version.and_then(parse_version) {
        Some(v) if v >= (4, 0) => Requeue::Returns,
        _ => Requeue::Back,
    }
}

/// Keeping at the tail: a kept message is republished to the tail of its own queue as an exact
/// copy (confirmed, then the original acked) instead of being held unacked until the end. Every
/// message then costs one publish and a multiple ack, whatever the share moved, where holding
/// costs the broker walks, channels and a requeue that grow with the queue. The copies land
/// behind every message present at the start, in the order kept, so the kept messages keep their
/// relative order once the read is through; a read that stops early leaves those kept so far
/// behind those not yet looked at. See docs/MOVE-ENGINE.md §7 and `reader`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) enum Tail {
    /// Kept messages are held (a queue not known to be safe for it, or a read that must not
    /// change the queue).
    #[default]
    Never,
    /// The queue allows it: the reader switches once this share of what it has seen, in per
    /// cent, was moved (see `reader::tail_pays`).
    Allowed { share_pct: u8 },
    /// Kept messages go to the tail: from the start of this read (a read resumed after one
    /// that switched), or since the switch.
    On,
}

/// Queue arguments (and policy keys, without the `x-`) under which a copy published to the tail
/// would not simply join the queue behind the rest: a length limit may drop the head (messages
/// not yet looked at) or refuse it, a message TTL would start again for the copy, priorities
/// would deliver a copy ahead of messages not yet looked at.
const NOT_AT_TAIL: [&str; 5] = [
    "max-length",
    "max-length-bytes",
    "message-ttl",
    "overflow",
    "max-priority",
];

/// Whether a move may keep messages at the tail of this queue (pure), from the management API's
/// view of it and the broker version: only a classic queue with none of [`NOT_AT_TAIL`] in its
/// arguments or effective policy, and no consumer of its own (the reader stops after the
/// messages present at the start, so a consumer taking some would make it read copies). The
/// share moved from which it pays was measured on 3.10.8 and 4.3.6 (docs/PERFORMANCE.md):
/// each copy is a publish the 3.x queue index writes, so there it pays only when many move.
pub(crate) fn tail(info: &Value, version: Option<&str>) -> Tail {
    let queue_type = info
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("classic");
    let keys = |field: &str| -> Vec<String> {
        info.get(field)
            .and_then(Value::as_object)
            .map(|o| o.keys().cloned().collect())
            .unwrap_or_default()
    };
    let limited = keys("arguments")
        .iter()
        .map(|k| k.strip_prefix("x-").unwrap_or(k).to_string())
        .chain(keys("effective_policy_definition"))
        .any(|k| NOT_AT_TAIL.contains(&k.as_str()));
    let consumers = info.get("consumers").and_then(Value::as_u64).unwrap_or(0);
    if queue_type != "classic" || limited || consumers > 0 {
        return Tail::Never;
    }
    let share_pct = match version.and_then(parse_version) {
        Some(v) if v >= (4, 0) => 10,
        Some(_) => 30,
        None => return Tail::Never,
    };
    Tail::Allowed { share_pct }
}

/// What the management API tells about reading a queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Assessment {
    pub risk: Risk,
    pub requeue: Requeue,
    /// Whether a move may keep messages at the queue's tail (see [`tail`]).
    pub tail: Tail,
}

impl Assessment {
    /// Whether the management API said the queue puts a returned message back in its place (a
    /// classic queue). Only then may a give-back be sent last part first (see
    /// [`crate::broker::browse::GiveBack`]); an unknown type is given back in queue order.
    pub(crate) fn in_place_known(&self) -> bool {
        self.requeue == Requeue::InPlace && !matches!(self.risk, Risk::Unknown(_))
    }
}

/// `major.minor` of a RabbitMQ version string such as "4.1.2" or "4.2.0-rc.1".
pub(crate) fn parse_version(text: &str) -> Option<(u32, u32)> {
    let mut parts = text.trim().split(['.', '-', '+']);
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

/// The decision table (checked against RabbitMQ's release notes, see RABBITMQ-NOTES.md):
///
/// | queue type | broker          | configured limit | risk |
/// |------------|-----------------|------------------|------|
/// | stream     | any             | -                | Stream (refused) |
/// | not quorum | any             | -                | None |
/// | quorum     | 4.3 or later    | -                | None (basic.nack no longer counts) |
/// | quorum     | 4.0–4.2         | none             | DeliveryLimit 20 (the 4.0 default) |
/// | quorum     | 4.0–4.2         | n ≥ 0            | DeliveryLimit n |
/// | quorum     | 4.0–4.2         | negative         | None (unlimited) |
/// | quorum     | before 4.0      | any n            | DeliveryLimit n (every return counted; a negative n drops at the first) |
/// | quorum     | before 4.0      | none             | None (no default limit) |
/// | quorum     | unknown version | as 4.0–4.2, to be safe |
pub(crate) fn risk(queue_type: &str, version: Option<&str>, configured_limit: Option<i64>) -> Risk {
    match queue_type {
        "stream" => return Risk::Stream,
        "quorum" => {}
        _ => return Risk::None,
    }
    let parsed = version.and_then(parse_version);
    let limit = match parsed {
        Some(v) if v >= (4, 3) => None,
        // Before 4.0 a negative limit is not "unlimited": every return exceeds it.
        Some(v) if v < (4, 0) => configured_limit,
        _ => match configured_limit {
            Some(n) if n < 0 => None,
            Some(n) => Some(n),
            None => Some(DEFAULT_DELIVERY_LIMIT_4X),
        },
    };
    match limit {
        Some(limit) => Risk::DeliveryLimit {
            limit,
            version: version.unwrap_or("unknown").to_string(),
        },
        None => Risk::None,
    }
}

/// The delivery-limit configured for a queue in the management API's answer: the lower of the
/// queue argument and the (operator) policy, as RabbitMQ applies it.
pub(crate) fn configured_limit(queue: &Value) -> Option<i64> {
    let from_args = queue
        .pointer("/arguments/x-delivery-limit")
        .and_then(Value::as_i64);
    let from_policy = queue
        .pointer("/effective_policy_definition/delivery-limit")
        .and_then(Value::as_i64);
    match (from_args, from_policy) {
        (Some(a), Some(p)) if a >= 0 && p >= 0 => Some(a.min(p)),
        (Some(a), Some(p)) => Some(a.max(p)),
        (a, p) => a.or(p),
    }
}

/// True when a message with this `x-delivery-count` (none: never returned) is within
/// [`MARGIN`] returns of `limit`.
pub(crate) fn near_limit(delivery_count: Option<i64>, limit: i64) -> bool {
    delivery_count.unwrap_or(0).saturating_add(MARGIN) >= limit
}

/// Why a guarded read stopped at a message, for the one-line problem (exit 1).
pub(crate) fn stop_reason(position: u64, delivery_count: i64, limit: i64) -> String {
    format!(
        "reading stopped at message {position}: its x-delivery-count is {delivery_count} and the queue's delivery-limit is {limit}, so reading it again could drop it (move it out with `dlq replay` or `dlq export --remove`, or raise the limit with a policy)"
    )
}

/// The warning before a guarded read: what counts, and where reading will stop.
pub(crate) fn guard_warning(queue: &str, limit: i64, version: &str) -> String {
    format!(
        "\"{queue}\" is a quorum queue on RabbitMQ {version}: every message read and left in place counts toward its delivery-limit ({limit}); messages are read one at a time, and reading stops at the first that is within {MARGIN} returns of it"
    )
}

/// The `x-delivery-count` header a quorum queue puts on redelivered messages.
pub(crate) fn delivery_count(headers: Option<&FieldTable>) -> Option<i64> {
    crate::message::value_int(headers?.inner().get("x-delivery-count")?)
}

/// Asks the management API (blocking: run it off the async threads) what browsing `queue` risks.
/// lapin does not expose the server properties, so the version comes from /api/overview.
pub(crate) fn assess(management_url: Option<&str>, amqp: &BrokerUrl, queue: &str) -> Assessment {
    let api = Management::new(management_url, amqp);
    let unusable = |why: String| Assessment {
        risk: Risk::Unknown(format!(
            "management API at {} not usable ({why})",
            api.base_url()
        )),
        requeue: Requeue::InPlace,
        tail: Tail::Never,
    };
    let info = match api.queue(queue) {
        Ok(Some(v)) => v,
        Ok(None) => return unusable(format!("it does not know queue \"{queue}\"")),
        Err(e) => return unusable(e.to_string()),
    };
    let queue_type = info
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("classic");
    let version = api.version().ok().flatten();
    if queue_type != "quorum" {
        return Assessment {
            risk: risk(queue_type, None, None),
            requeue: Requeue::InPlace,
            tail: tail(&info, version.as_deref()),
        };
    }
    Assessment {
        risk: risk(queue_type, version.as_deref(), configured_limit(&info)),
        requeue: requeue(queue_type, version.as_deref()),
        tail: Tail::Never,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::AMQPValue;
    use serde_json::json;

    fn limit(r: Risk) -> Option<i64> {
        match r {
            Risk::DeliveryLimit { limit, .. } => Some(limit),
            _ => None,
        }
    }

    #[test]
    fn versions_parse_to_major_minor() {
        assert_eq!(parse_version("3.10.8"), Some((3, 10)));
        assert_eq!(parse_version("4.2.0-rc.1"), Some((4, 2)));
        assert_eq!(parse_version("4.0"), Some((4, 0)));
        assert_eq!(parse_version("garbage"), None);
        assert_eq!(parse_version("4"), None);
    }

    #[test]
    fn classic_queues_are_never_at_risk() {
        assert_eq!(risk("classic", Some("4.1.0"), Some(3)), Risk::None);
    }

    #[test]
    fn quorum_on_4_0_to_4_2_uses_the_default_limit_of_20() {
        for v in ["4.0.0", "4.1.5", "4.2.3"] {
            assert_eq!(limit(risk("quorum", Some(v), None)), Some(20), "{v}");
        }
    }

    #[test]
    fn only_a_plain_classic_queue_without_consumers_keeps_at_the_tail() {
        let plain = json!({"type": "classic", "arguments": {"x-dead-letter-exchange": ""},
                           "effective_policy_definition": {"queue-mode": "lazy"}, "consumers": 0});
        assert_eq!(tail(&plain, Some("4.3.6")), Tail::Allowed { share_pct: 10 });
        assert_eq!(
            tail(&plain, Some("3.10.8")),
            Tail::Allowed { share_pct: 30 }
        );
        assert_eq!(tail(&plain, None), Tail::Never, "unknown version");
        let with = |field: &str, key: &str| {
            let mut q = plain.clone();
            q[field][key] = json!(1000);
            tail(&q, Some("4.3.6"))
        };
        for key in [
            "x-max-length",
            "x-max-length-bytes",
            "x-message-ttl",
            "x-max-priority",
        ] {
            assert_eq!(with("arguments", key), Tail::Never, "{key}");
        }
        for key in ["max-length", "max-length-bytes", "message-ttl", "overflow"] {
            assert_eq!(
                with("effective_policy_definition", key),
                Tail::Never,
                "{key}"
            );
        }
        let mut consumed = plain.clone();
        consumed["consumers"] = json!(1);
        assert_eq!(tail(&consumed, Some("4.3.6")), Tail::Never);
        for t in ["quorum", "stream"] {
            let mut q = plain.clone();
            q["type"] = json!(t);
            assert_eq!(tail(&q, Some("4.3.6")), Tail::Never, "{t}");
        }
        // No policy at all: the API leaves the field out or null.
        assert_eq!(
            tail(
                &json!({"type": "classic", "effective_policy_definition": null}),
                Some("4.0.5")
            ),
            Tail::Allowed { share_pct: 10 }
        );
    }

    #[test]
    fn a_configured_limit_wins_and_negative_means_unlimited() {
        assert_eq!(limit(risk("quorum", Some("4.1.0"), Some(5))), Some(5));
        assert_eq!(risk("quorum", Some("4.1.0"), Some(-1)), Risk::None);
    }

    #[test]
    fn from_4_3_a_nack_does_not_count() {
        assert_eq!(risk("quorum", Some("4.3.0"), Some(5)), Risk::None);
        assert_eq!(risk("quorum", Some("5.0.0"), None), Risk::None);
    }

    #[test]
    fn before_4_0_only_a_configured_limit_matters() {
        assert_eq!(risk("quorum", Some("3.13.7"), None), Risk::None);
        // Measured on 3.10.8: x-delivery-limit -1 drops every message at its first return.
        assert_eq!(limit(risk("quorum", Some("3.10.8"), Some(-1))), Some(-1));
        assert_eq!(limit(risk("quorum", Some("3.10.8"), Some(10))), Some(10));
    }

    #[test]
    fn unknown_version_is_treated_as_the_risky_one() {
        assert_eq!(limit(risk("quorum", None, None)), Some(20));
    }

    #[test]
    fn requeue_goes_back_before_4_0_and_to_the_returns_fifo_from_4_0() {
        assert_eq!(requeue("classic", Some("3.10.8")), Requeue::InPlace);
        assert_eq!(requeue("quorum", Some("3.10.8")), Requeue::Back);
        assert_eq!(requeue("quorum", Some("3.13.7")), Requeue::Back);
        assert_eq!(requeue("quorum", Some("4.0.5")), Requeue::Returns);
        assert_eq!(requeue("quorum", Some("4.3.6")), Requeue::Returns);
        assert_eq!(requeue("quorum", None), Requeue::Back);
    }

    #[test]
    fn streams_are_refused() {
        assert_eq!(risk("stream", Some("4.1.0"), None), Risk::Stream);
    }

    #[test]
    fn configured_limit_takes_the_lower_of_argument_and_policy() {
        assert_eq!(configured_limit(&json!({})), None);
        assert_eq!(
            configured_limit(&json!({"arguments": {"x-delivery-limit": 7}})),
            Some(7)
        );
        assert_eq!(
            configured_limit(&json!({"arguments": {"x-delivery-limit": 7},
                                     "effective_policy_definition": {"delivery-limit": 3}})),
            Some(3)
        );
        assert_eq!(
            configured_limit(&json!({"effective_policy_definition": {"delivery-limit": 4}})),
            Some(4)
        );
    }

    #[test]
    fn the_warning_never_names_a_negative_count() {
        let w = guard_warning("q", 1, "3.10.8");
        assert!(!w.contains(" -"), "{w}");
        assert!(w.contains("delivery-limit (1)"), "{w}");
    }

    #[test]
    fn near_limit_is_within_two() {
        assert!(!near_limit(None, 20));
        assert!(near_limit(None, 2), "a first delivery counts as 0");
        assert!(!near_limit(Some(17), 20));
        assert!(near_limit(Some(18), 20));
        assert!(near_limit(Some(19), 20));
        assert!(near_limit(Some(25), 20));
        assert!(near_limit(Some(0), 1));
    }

    #[test]
    fn delivery_count_reads_any_integer_width() {
        let mut t = FieldTable::default();
        assert_eq!(delivery_count(Some(&t)), None);
        t.insert("x-delivery-count".into(), AMQPValue::LongInt(4));
        assert_eq!(delivery_count(Some(&t)), Some(4));
        t.insert("x-delivery-count".into(), AMQPValue::LongLongInt(9));
        assert_eq!(delivery_count(Some(&t)), Some(9));
        assert_eq!(delivery_count(None), None);
    }
}
