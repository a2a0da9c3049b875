//! `failure`: derived, best effort, from the conventions a parked message may carry (contract
//! section 5), and the dates they write.

use lapin::types::{AMQPValue, FieldTable};
use serde_json::Value;

use super::*;

/// Why and where a message failed, as far as its headers tell.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub(crate) struct Failure {
    pub origin: Option<String>,
    pub reason: Option<String>,
    pub attempts: Option<i64>,
    pub message: Option<String>,
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub at: Option<i64>,
}

/// Each field comes from the first source that has it, in the contract's order: our own
/// `x-error-*` headers, Sneakers' `retry_info`, MassTransit's `MT-Fault-*`, then the broker's
/// dead-lettering headers.
///
/// Empty strings count as absent everywhere (the worker writes `x-error-type: ""` when it knows
/// no type), so a later source can still fill the field and group-by never sees `""` next to null.
pub(crate) fn failure(headers: Option<&FieldTable>) -> Failure {
    let mut f = Failure::default();
    let Some(h) = headers else {
        return f;
    };
    from_contract_headers(h, &mut f);
    from_sneakers(h, &mut f);
    from_masstransit(h, &mut f);
    from_dead_lettering(h, &mut f);
    f
}

pub(super) fn fill<T>(slot: &mut Option<T>, candidate: impl FnOnce() -> Option<T>) {
    if slot.is_none() {
        *slot = candidate();
    }
}

pub(super) fn get<'t>(h: &'t FieldTable, key: &str) -> Option<&'t AMQPValue> {
    h.inner().get(key)
}

pub(super) fn get_text(h: &FieldTable, key: &str) -> Option<String> {
    get(h, key).and_then(value_str).and_then(non_empty)
}

pub(super) fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_owned())
}

pub(super) fn from_contract_headers(h: &FieldTable, f: &mut Failure) {
    fill(&mut f.message, || get_text(h, "x-error-message"));
    fill(&mut f.kind, || get_text(h, "x-error-type"));
    fill(&mut f.attempts, || get(h, "x-attempts").and_then(value_int));
    fill(&mut f.at, || get(h, "x-failed-at").and_then(value_time));
}

pub(super) fn from_sneakers(h: &FieldTable, f: &mut Failure) {
    let Some(raw) = get(h, "retry_info").and_then(value_str) else {
        return;
    };
    let Ok(parsed) = serde_json::from_str::<Value>(raw) else {
        return;
    };
    let newest = match &parsed {
        Value::Array(items) => items.first(),
        other => Some(other),
    };
    let Some(Value::Object(info)) = newest else {
        return;
    };
    let text = |k: &str| info.get(k).and_then(Value::as_str).and_then(non_empty);
    fill(&mut f.message, || {
        text("error_message").or_else(|| text("error"))
    });
    fill(&mut f.kind, || text("error_class"));
    fill(&mut f.attempts, || {
        info.get("num_attempts").and_then(json_int)
    });
    fill(&mut f.at, || match info.get("failed_at")? {
        Value::String(s) => parse_timestamp(s),
        other => json_int(other),
    });
}

pub(super) fn from_masstransit(h: &FieldTable, f: &mut Failure) {
    fill(&mut f.message, || get_text(h, "MT-Fault-Message"));
    fill(&mut f.kind, || get_text(h, "MT-Fault-ExceptionType"));
    fill(&mut f.at, || {
        get(h, "MT-Fault-Timestamp").and_then(value_time)
    });
    // RetryCount counts retries, so the failed delivery that parked the message is one more.
    fill(&mut f.attempts, || {
        get(h, "MT-Fault-RetryCount")
            .and_then(value_int)
            .and_then(|n| n.checked_add(1))
    });
    fill(&mut f.reason, || get_text(h, "MT-Reason"));
}

pub(super) fn from_dead_lettering(h: &FieldTable, f: &mut Failure) {
    let deaths = x_death(Some(h));
    let origin = get_text(h, "x-first-death-queue")
        .or_else(|| deaths.last().and_then(|d| non_empty(&d.queue)))
        .or_else(|| published_to_queue(h));
    let entry = origin.as_deref().and_then(|o| {
        deaths
            .iter()
            .find(|d| d.queue == o && d.reason == "rejected")
    });
    if let Some(e) = entry {
        fill(&mut f.attempts, || e.count.checked_add(1));
        fill(&mut f.at, || e.time);
        fill(&mut f.reason, || non_empty(&e.reason));
    }
    fill(&mut f.reason, || get_text(h, "x-first-death-reason"));
    fill(&mut f.reason, || {
        deaths.last().and_then(|d| non_empty(&d.reason))
    });
    fill(&mut f.origin, || origin);
}

/// A message that failed on its first delivery carries no x-death, but the worker recorded
/// where it was delivered from. Only a publish through the default exchange names a queue
/// in its routing key; with any other exchange the key is a topic, not a queue.
pub(super) fn published_to_queue(h: &FieldTable) -> Option<String> {
    let exchange = get(h, "x-original-exchange").and_then(value_str)?;
    if !exchange.is_empty() {
        return None;
    }
    get_text(h, "x-original-routing-key")
}

// Dates

/// Seconds since the Unix epoch of an RFC 3339 time (`2024-01-01T10:00:00Z`, `…+01:00`), or of
/// Ruby's `Time#to_s` (`2024-01-01 10:00:00 +0100`, `… UTC`): one space before the zone, and UTC
/// by name. The fraction is dropped: `at` is whole seconds. A time without a zone is ambiguous,
/// so it is rejected rather than guessed.
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    let s = s.trim();
    let rfc3339 = match s.strip_suffix(" UTC") {
        Some(time) => format!("{time}Z"),
        // The zone starts after the seconds (19 bytes in), with or without one space before it.
        None => match s.get(19..).and_then(|rest| rest.find(' ')) {
            Some(i) => format!("{}{}", &s[..19 + i], &s[19 + i + 1..]),
            None => s.to_owned(),
        },
    };
    // jiff reads a zone name in brackets after the offset; a message's timestamp has none.
    if rfc3339.contains('[') {
        return None;
    }
    rfc3339
        .parse::<jiff::Timestamp>()
        .ok()
        .map(|t| t.as_second())
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::message::testing::*;

    use lapin::types::{AMQPValue, FieldTable};

    #[test]
    fn failure_from_contract_headers() {
        let h = table(vec![
            ("x-error-message", long("boom")),
            ("x-error-type", long("IOError")),
            ("x-attempts", AMQPValue::LongInt(6)),
            ("x-failed-at", AMQPValue::Timestamp(1_700_000_000)),
            ("x-original-exchange", long("")),
            ("x-original-routing-key", long("billing")),
        ]);
        assert_eq!(
            failure(Some(&h)),
            Failure {
                origin: Some("billing".into()),
                reason: None,
                attempts: Some(6),
                message: Some("boom".into()),
                kind: Some("IOError".into()),
                at: Some(1_700_000_000),
            }
        );
        assert_eq!(failure(None), Failure::default());
        assert_eq!(failure(Some(&FieldTable::default())), Failure::default());
    }

    #[test]
    fn empty_error_type_counts_as_absent() {
        let h = table(vec![
            ("x-error-message", long("boom")),
            ("x-error-type", long("")),
            ("MT-Fault-ExceptionType", long("System.TimeoutException")),
        ]);
        let f = failure(Some(&h));
        assert_eq!(f.kind.as_deref(), Some("System.TimeoutException"));
        let only_empty = table(vec![("x-error-type", long(""))]);
        assert_eq!(failure(Some(&only_empty)).kind, None);
    }

    #[test]
    fn original_routing_key_is_origin_only_through_the_default_exchange() {
        let h = table(vec![
            ("x-original-exchange", long("events")),
            ("x-original-routing-key", long("email.sent")),
        ]);
        assert_eq!(failure(Some(&h)).origin, None);
        let with_death = table(vec![
            ("x-original-exchange", long("")),
            ("x-original-routing-key", long("elsewhere")),
            ("x-first-death-queue", long("billing")),
        ]);
        assert_eq!(
            failure(Some(&with_death)).origin.as_deref(),
            Some("billing")
        );
    }

    #[test]
    fn failure_from_sneakers_object() {
        let info = r#"{"error":"RuntimeError","num_attempts":3,"failed_at":"2024-01-01T10:00:00Z",
                       "error_class":"RuntimeError","error_message":"db down"}"#;
        let h = table(vec![("retry_info", long(info))]);
        let f = failure(Some(&h));
        assert_eq!(f.message.as_deref(), Some("db down"));
        assert_eq!(f.kind.as_deref(), Some("RuntimeError"));
        assert_eq!(f.attempts, Some(3));
        assert_eq!(f.at, Some(1_704_103_200));
    }

    #[test]
    fn failure_from_sneakers_array_uses_newest_and_error_fallback() {
        let info = r#"[{"error":"newest","num_attempts":5,"failed_at":"2024-01-01 10:00:00 UTC"},
                       {"error_message":"older","num_attempts":4,"failed_at":1}]"#;
        let h = table(vec![("retry_info", long(info))]);
        let f = failure(Some(&h));
        assert_eq!(f.message.as_deref(), Some("newest"));
        assert_eq!(f.attempts, Some(5));
        assert_eq!(f.at, Some(1_704_103_200));
        let integer_time = table(vec![("retry_info", long(r#"{"failed_at": 1700000000}"#))]);
        assert_eq!(failure(Some(&integer_time)).at, Some(1_700_000_000));
        let bad_time = table(vec![("retry_info", long(r#"{"failed_at": "yesterday"}"#))]);
        assert_eq!(failure(Some(&bad_time)).at, None);
        let not_json = table(vec![("retry_info", long("{oops"))]);
        assert_eq!(failure(Some(&not_json)), Failure::default());
    }

    #[test]
    fn failure_from_masstransit() {
        let h = table(vec![
            ("MT-Fault-Message", long("Object reference not set")),
            (
                "MT-Fault-ExceptionType",
                long("System.NullReferenceException"),
            ),
            ("MT-Fault-Timestamp", long("2024-01-01T10:00:00.1234567Z")),
            ("MT-Fault-RetryCount", AMQPValue::LongInt(2)),
            ("MT-Reason", long("fault")),
        ]);
        assert_eq!(
            failure(Some(&h)),
            Failure {
                origin: None,
                reason: Some("fault".into()),
                attempts: Some(3),
                message: Some("Object reference not set".into()),
                kind: Some("System.NullReferenceException".into()),
                at: Some(1_704_103_200),
            }
        );
    }

    #[test]
    fn failure_from_dead_lettering() {
        let h = table(vec![
            ("x-first-death-queue", long("billing")),
            ("x-first-death-reason", long("rejected")),
            deaths(vec![
                death("billing.retry", "expired", 4, 300, "billing.retry"),
                death("billing", "rejected", 4, 250, "billing"),
            ]),
        ]);
        assert_eq!(
            failure(Some(&h)),
            Failure {
                origin: Some("billing".into()),
                reason: Some("rejected".into()),
                attempts: Some(5),
                message: None,
                kind: None,
                at: Some(250),
            }
        );
    }

    #[test]
    fn dead_lettering_without_first_death_headers_uses_oldest_entry() {
        let h = table(vec![deaths(vec![
            death("work", "rejected", 2, 20, "work"),
            death("first", "expired", 1, 10, "first"),
        ])]);
        let f = failure(Some(&h));
        assert_eq!(f.origin.as_deref(), Some("first"));
        assert_eq!(f.reason.as_deref(), Some("expired"));
        // no rejected entry for the origin: attempts and at are unknown
        assert_eq!(f.attempts, None);
        assert_eq!(f.at, None);
    }

    #[test]
    fn x_death_without_rejected_entry_keeps_earlier_attempts() {
        let h = table(vec![
            ("x-attempts", AMQPValue::LongLongInt(9)),
            ("x-first-death-queue", long("billing")),
            ("x-first-death-reason", long("maxlen")),
            deaths(vec![death("billing", "maxlen", 1, 5, "billing")]),
        ]);
        let f = failure(Some(&h));
        assert_eq!(f.attempts, Some(9));
        assert_eq!(f.reason.as_deref(), Some("maxlen"));
        assert_eq!(f.at, None);
    }

    #[test]
    fn sources_fill_fields_independently_in_order() {
        let h = table(vec![
            // contract: message only
            ("x-error-message", long("from contract")),
            // sneakers: message (loses), type and attempts (win)
            (
                "retry_info",
                long(
                    r#"{"error_message":"from sneakers","error_class":"SneakersError","num_attempts":2}"#,
                ),
            ),
            // masstransit: type and attempts lose, at wins, reason wins over x-death
            ("MT-Fault-ExceptionType", long("MTError")),
            ("MT-Fault-RetryCount", AMQPValue::LongInt(7)),
            ("MT-Fault-Timestamp", long("2024-01-01T10:00:00+01:00")),
            ("MT-Reason", long("fault")),
            // broker: origin only, everything else already known
            ("x-first-death-queue", long("orders")),
            deaths(vec![death("orders", "rejected", 10, 99, "orders")]),
        ]);
        assert_eq!(
            failure(Some(&h)),
            Failure {
                origin: Some("orders".into()),
                reason: Some("fault".into()),
                attempts: Some(2),
                message: Some("from contract".into()),
                kind: Some("SneakersError".into()),
                at: Some(1_704_099_600),
            }
        );
    }

    #[test]
    fn timestamps_parse_strictly() {
        let ok = [
            ("1970-01-01T00:00:00Z", 0),
            ("2024-01-01T10:00:00Z", 1_704_103_200),
            ("2024-01-01t10:00:00z", 1_704_103_200),
            ("2024-01-01 10:00:00 UTC", 1_704_103_200),
            ("2024-01-01T11:00:00+01:00", 1_704_103_200),
            ("2024-01-01 11:00:00 +0100", 1_704_103_200),
            ("2024-01-01T05:30:00-04:30", 1_704_103_200),
            ("2024-01-01T10:00:00.999Z", 1_704_103_200),
            ("2024-02-29T00:00:00Z", 1_709_164_800),
            ("2000-03-01T00:00:00Z", 951_868_800),
            ("1969-12-31T23:59:59Z", -1),
            ("  2024-01-01T10:00:00Z  ", 1_704_103_200),
        ];
        for (s, want) in ok {
            assert_eq!(parse_timestamp(s), Some(want), "{s}");
        }
        let bad = [
            "",
            "2024-01-01",
            "2024-01-01T10:00:00",
            "2024-13-01T10:00:00Z",
            "2023-02-29T10:00:00Z",
            "2024-01-01T24:00:00Z",
            "2024-01-01T10:00:00.Z",
            "2024-01-01T10:00:00+1:00",
            "2024-01-01T10:00:00 PST",
            "2024-1-01T10:00:00Z",
            "２024-01-01T10:00:00Z",
            "2024-01-01T10:00:00Zjunk",
        ];
        for s in bad {
            assert_eq!(parse_timestamp(s), None, "{s}");
        }
    }
}
