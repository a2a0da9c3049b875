//! Desired topology vs what a broker reports: findings per entity, and parsing of the broker's 406 reasons.

use serde::Serialize;
use serde_json::Value;

use super::derive::{ArgValue, BindingSpec, ExchangeSpec, QueueSpec, NO_DELIVERY_LIMIT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub(crate) enum FindingStatus {
    /// verify: present and equal.
    Ok,
    /// verify: not on the broker. apply: an exchange we were told exists does not.
    Missing,
    /// verify: present with other arguments, type or durability.
    Different,
    /// verify without the management API: bindings cannot be read over AMQP.
    Unchecked,
    /// apply: did not exist, now declared.
    Created,
    /// apply: existed with the same arguments.
    Unchanged,
    /// apply: exists with other arguments; left as it is.
    Conflict,
}

impl FindingStatus {
    /// Whether this finding makes `verify`/`apply` exit 3.
    pub(crate) fn is_drift(self) -> bool {
        matches!(
            self,
            FindingStatus::Missing | FindingStatus::Different | FindingStatus::Conflict
        )
    }
}

/// One argument (or `type`, `durable`) that differs: the broker's value and the wanted one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Difference {
    pub argument: String,
    pub broker: String,
    pub wanted: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct Finding {
    pub entity: &'static str,
    pub name: String,
    pub service: String,
    pub status: FindingStatus,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub differences: Vec<Difference>,
    /// Free text: the broker's reason, or why something is unchecked.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl Finding {
    pub(crate) fn new(
        entity: &'static str,
        name: &str,
        service: &str,
        status: FindingStatus,
    ) -> Self {
        Finding {
            entity,
            name: name.to_string(),
            service: service.to_string(),
            status,
            differences: Vec::new(),
            detail: String::new(),
        }
    }

    pub(crate) fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = detail.into();
        self
    }

    pub(crate) fn with_differences(mut self, d: Vec<Difference>) -> Self {
        self.differences = d;
        self
    }

    /// The text a table shows: the differences if any, else the detail.
    pub(crate) fn describe(&self) -> String {
        if self.differences.is_empty() {
            return self.detail.clone();
        }
        self.differences
            .iter()
            .map(|d| {
                format!(
                    "{}: broker has {}, wanted {}",
                    d.argument, d.broker, d.wanted
                )
            })
            .collect::<Vec<_>>()
            .join("; ")
            + &match self.detail.as_str() {
                CAN_DROP => format!(" ({CAN_DROP})"),
                _ => String::new(),
            }
    }
}

pub(crate) fn binding_name(b: &BindingSpec) -> String {
    format!(
        "{} -> {} ({})",
        b.exchange,
        b.queue,
        show_key(&b.routing_key)
    )
}

fn show_key(k: &str) -> String {
    if k.is_empty() {
        "\"\"".to_string()
    } else {
        k.to_string()
    }
}

/// A queue as the management API reports it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObservedQueue {
    pub durable: bool,
    pub queue_type: Option<String>,
    pub arguments: serde_json::Map<String, Value>,
    /// `delivery-limit` of the policy in effect: it stands in for a missing `x-delivery-limit`
    /// (the fix for a quorum queue declared before its topology asked for one).
    pub policy_delivery_limit: Option<Value>,
}

impl ObservedQueue {
    pub(crate) fn from_api(v: &Value) -> Self {
        ObservedQueue {
            durable: v.get("durable").and_then(Value::as_bool).unwrap_or(false),
            queue_type: v.get("type").and_then(Value::as_str).map(str::to_string),
            arguments: v
                .get("arguments")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default(),
            policy_delivery_limit: v
                .pointer("/effective_policy_definition/delivery-limit")
                .cloned(),
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ObservedExchange {
    pub kind: String,
    pub durable: bool,
}

impl ObservedExchange {
    pub(crate) fn from_api(v: &Value) -> Self {
        ObservedExchange {
            kind: v
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_string(),
            durable: v.get("durable").and_then(Value::as_bool).unwrap_or(false),
        }
    }
}

fn show_json(v: &Value) -> String {
    match v {
        Value::String(s) => format!("\"{s}\""),
        other => other.to_string(),
    }
}

fn arg_equals(wanted: &ArgValue, observed: &Value) -> bool {
    match (wanted, observed) {
        (ArgValue::Int(i), Value::Number(n)) => n.as_i64() == Some(*i),
        (ArgValue::Str(s), Value::String(o)) => s == o,
        _ => false,
    }
}

pub(crate) fn diff_queue(spec: &QueueSpec, observed: Option<&ObservedQueue>) -> Finding {
    let base = |status| Finding::new("queue", &spec.name, &spec.service, status);
    let Some(o) = observed else {
        return base(FindingStatus::Missing);
    };
    let mut diffs = Vec::new();
    if o.durable != spec.durable {
        diffs.push(Difference {
            argument: "durable".into(),
            broker: o.durable.to_string(),
            wanted: spec.durable.to_string(),
        });
    }
    // An explicit x-queue-type "classic" is what an absent one means.
    let mut observed_args = o.arguments.clone();
    if !spec.arguments.contains_key("x-queue-type")
        && observed_args.get("x-queue-type") == Some(&Value::String("classic".into()))
    {
        observed_args.remove("x-queue-type");
    }
    if let (None, Some(limit)) = (
        observed_args.get("x-delivery-limit"),
        &o.policy_delivery_limit,
    ) {
        if spec.arguments.contains_key("x-delivery-limit") {
            observed_args.insert("x-delivery-limit".into(), limit.clone());
        }
    }
    for (key, wanted) in &spec.arguments {
        match observed_args.get(key) {
            Some(v) if arg_equals(wanted, v) => {}
            Some(v) => diffs.push(Difference {
                argument: key.clone(),
                broker: show_json(v),
                wanted: wanted.to_string(),
            }),
            None => diffs.push(Difference {
                argument: key.clone(),
                broker: "none".into(),
                wanted: wanted.to_string(),
            }),
        }
    }
    for (key, v) in &observed_args {
        if !spec.arguments.contains_key(key) {
            diffs.push(Difference {
                argument: key.clone(),
                broker: show_json(v),
                wanted: "none".into(),
            });
        }
    }
    let wanted_type = match spec.arguments.get("x-queue-type") {
        Some(ArgValue::Str(t)) => t.as_str(),
        _ => "classic",
    };
    if let Some(t) = &o.queue_type {
        if t != wanted_type && !diffs.iter().any(|d| d.argument == "x-queue-type") {
            diffs.push(Difference {
                argument: "type".into(),
                broker: t.clone(),
                wanted: wanted_type.into(),
            });
        }
    }
    if diffs.is_empty() {
        return base(FindingStatus::Ok);
    }
    let can_drop = diffs.iter().any(|d| d.argument == "x-delivery-limit")
        && spec.arguments.get("x-delivery-limit") == Some(&ArgValue::Int(NO_DELIVERY_LIMIT));
    let finding = base(FindingStatus::Different).with_differences(diffs);
    if can_drop {
        finding.with_detail(CAN_DROP)
    } else {
        finding
    }
}

/// Why a quorum queue on RabbitMQ 4.x without `x-delivery-limit: -1` is a problem, and the fix.
pub(crate) const CAN_DROP: &str = "with a delivery-limit, RabbitMQ 4.x dead-letters a message that keeps failing delivery to the retry queue, and drops it when it cycles back; set a policy with delivery-limit -1 on this queue, or re-create it with `dlq topology apply`";

pub(crate) fn diff_exchange(spec: &ExchangeSpec, observed: Option<&ObservedExchange>) -> Finding {
    let base = |status| Finding::new("exchange", &spec.name, &spec.service, status);
    let Some(o) = observed else {
        return base(FindingStatus::Missing);
    };
    let Some(kind) = &spec.kind else {
        // Not ours to declare: existing is all we ask.
        return base(FindingStatus::Ok);
    };
    let mut diffs = Vec::new();
    if &o.kind != kind {
        diffs.push(Difference {
            argument: "type".into(),
            broker: o.kind.clone(),
            wanted: kind.clone(),
        });
    }
    if o.durable != spec.durable {
        diffs.push(Difference {
            argument: "durable".into(),
            broker: o.durable.to_string(),
            wanted: spec.durable.to_string(),
        });
    }
    if diffs.is_empty() {
        base(FindingStatus::Ok)
    } else {
        base(FindingStatus::Different).with_differences(diffs)
    }
}

/// `routing_keys`: the keys of every binding from the exchange to the queue (`None`: exchange or queue missing).
pub(crate) fn diff_binding(spec: &BindingSpec, routing_keys: Option<&[String]>) -> Finding {
    let status = match routing_keys {
        Some(keys) if keys.iter().any(|k| k == &spec.routing_key) => FindingStatus::Ok,
        _ => FindingStatus::Missing,
    };
    Finding::new("binding", &binding_name(spec), &spec.service, status)
}

/// Reads the broker's `PRECONDITION_FAILED - inequivalent arg 'x' for queue 'q' in vhost '/':
/// received '1' but current is '2'` into a difference ("received" is what we sent).
pub(crate) fn parse_inequivalent(reason: &str) -> Option<Difference> {
    let after = reason.split("inequivalent arg '").nth(1)?;
    let (argument, rest) = after.split_once('\'')?;
    let received = rest.split("received ").nth(1)?;
    let (wanted, current) = received.split_once(" but current is ")?;
    let clean = |v: &str| {
        let v = v.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .unwrap_or(v);
        v.to_string()
    };
    Some(Difference {
        argument: argument.to_string(),
        broker: clean(current),
        wanted: clean(wanted),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{QueueType, Service};
    use crate::topology::derive;
    use serde_json::json;

    fn retry_spec() -> QueueSpec {
        let mut s = Service::with_defaults("billing");
        s.retry_delay = std::time::Duration::from_secs(10);
        derive([&s], crate::topology::derive::Generation::From4).queues[1].clone()
    }

    fn observed(args: Value) -> ObservedQueue {
        ObservedQueue::from_api(&json!({"durable": true, "type": "classic", "arguments": args}))
    }

    #[test]
    fn equal_queue_is_ok() {
        let o = observed(
            json!({"x-message-ttl": 10000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "billing"}),
        );
        assert_eq!(
            diff_queue(&retry_spec(), Some(&o)).status,
            FindingStatus::Ok
        );
    }

    #[test]
    fn changed_ttl_names_argument_and_both_values() {
        let o = observed(
            json!({"x-message-ttl": 60000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "billing"}),
        );
        let f = diff_queue(&retry_spec(), Some(&o));
        assert_eq!(f.status, FindingStatus::Different);
        assert_eq!(
            f.differences,
            [Difference {
                argument: "x-message-ttl".into(),
                broker: "60000".into(),
                wanted: "10000".into()
            }]
        );
        assert_eq!(
            f.describe(),
            "x-message-ttl: broker has 60000, wanted 10000"
        );
    }

    #[test]
    fn string_ttl_is_not_equal_to_integer_ttl() {
        let o = observed(
            json!({"x-message-ttl": "10000", "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "billing"}),
        );
        assert_eq!(
            diff_queue(&retry_spec(), Some(&o)).status,
            FindingStatus::Different
        );
    }

    #[test]
    fn extra_and_missing_arguments_are_differences() {
        let o = observed(
            json!({"x-dead-letter-exchange": "", "x-dead-letter-routing-key": "billing", "x-max-length": 5}),
        );
        let f = diff_queue(&retry_spec(), Some(&o));
        let names: Vec<&str> = f.differences.iter().map(|d| d.argument.as_str()).collect();
        assert_eq!(names, ["x-message-ttl", "x-max-length"]);
    }

    #[test]
    fn explicit_classic_type_equals_absent_type() {
        let o = observed(
            json!({"x-message-ttl": 10000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "billing", "x-queue-type": "classic"}),
        );
        assert_eq!(
            diff_queue(&retry_spec(), Some(&o)).status,
            FindingStatus::Ok
        );
    }

    #[test]
    fn classic_queue_where_quorum_is_wanted_differs() {
        let mut s = Service::with_defaults("billing");
        s.queue_type = QueueType::Quorum;
        let spec = derive([&s], crate::topology::derive::Generation::Before4).queues[2].clone();
        let o = observed(json!({}));
        let f = diff_queue(&spec, Some(&o));
        assert_eq!(f.status, FindingStatus::Different);
        assert_eq!(f.differences[0].argument, "x-queue-type");
    }

    #[test]
    fn a_4_x_quorum_queue_without_the_limit_can_drop_and_a_policy_lifting_it_is_ok() {
        let mut s = Service::with_defaults("billing");
        s.queue_type = QueueType::Quorum;
        let spec = derive([&s], crate::topology::derive::Generation::From4).queues[2].clone();
        let mut o = observed(json!({"x-queue-type": "quorum"}));
        o.queue_type = Some("quorum".into());
        let f = diff_queue(&spec, Some(&o));
        assert_eq!(f.status, FindingStatus::Different);
        assert_eq!(f.differences[0].argument, "x-delivery-limit");
        assert!(f.describe().contains("drops it"), "{}", f.describe());
        o.policy_delivery_limit = Some(json!(-1));
        assert_eq!(diff_queue(&spec, Some(&o)).status, FindingStatus::Ok);
        o.policy_delivery_limit = Some(json!(20));
        assert_eq!(diff_queue(&spec, Some(&o)).status, FindingStatus::Different);
    }

    #[test]
    fn non_durable_queue_differs() {
        let mut o = observed(
            json!({"x-message-ttl": 10000, "x-dead-letter-exchange": "", "x-dead-letter-routing-key": "billing"}),
        );
        o.durable = false;
        assert_eq!(
            diff_queue(&retry_spec(), Some(&o)).differences[0].argument,
            "durable"
        );
    }

    #[test]
    fn absent_queue_is_missing() {
        assert_eq!(
            diff_queue(&retry_spec(), None).status,
            FindingStatus::Missing
        );
    }

    #[test]
    fn exchange_type_difference() {
        let spec = ExchangeSpec {
            name: "x".into(),
            service: "s".into(),
            kind: Some("topic".into()),
            durable: true,
        };
        let o = ObservedExchange {
            kind: "direct".into(),
            durable: true,
        };
        assert_eq!(
            diff_exchange(&spec, Some(&o)).differences[0].broker,
            "direct"
        );
        let must_exist = ExchangeSpec { kind: None, ..spec };
        assert_eq!(
            diff_exchange(&must_exist, Some(&o)).status,
            FindingStatus::Ok
        );
        assert_eq!(
            diff_exchange(&must_exist, None).status,
            FindingStatus::Missing
        );
    }

    #[test]
    fn binding_needs_its_routing_key() {
        let b = BindingSpec {
            service: "s".into(),
            exchange: "e".into(),
            queue: "q".into(),
            routing_key: "a.#".into(),
        };
        assert_eq!(
            diff_binding(&b, Some(&["b.#".into()])).status,
            FindingStatus::Missing
        );
        assert_eq!(
            diff_binding(&b, Some(&["b.#".into(), "a.#".into()])).status,
            FindingStatus::Ok
        );
        assert_eq!(diff_binding(&b, None).status, FindingStatus::Missing);
    }

    #[test]
    fn parses_the_brokers_inequivalent_arg_reason() {
        let d = parse_inequivalent("PRECONDITION_FAILED - inequivalent arg 'x-message-ttl' for queue 'q' in vhost '/': received '60000' but current is '3600000'").unwrap();
        assert_eq!(
            d,
            Difference {
                argument: "x-message-ttl".into(),
                broker: "3600000".into(),
                wanted: "60000".into()
            }
        );
        let d = parse_inequivalent("PRECONDITION_FAILED - inequivalent arg 'x-max-length' for queue 'q' in vhost '/': received none but current is the value '5' of type 'long'").unwrap();
        assert_eq!(d.wanted, "none");
        assert!(parse_inequivalent("NOT_FOUND - no queue 'q'").is_none());
    }
}
