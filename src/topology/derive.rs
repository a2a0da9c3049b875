//! Service → queues, exchanges, bindings and arguments, for the `dotted` and `sneakers` namings.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::config::{Naming, QueueType, Service};

/// A queue or exchange argument value; RabbitMQ treats integer widths as equivalent, not strings vs integers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub(crate) enum ArgValue {
    Str(String),
    Int(i64),
}

impl std::fmt::Display for ArgValue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ArgValue::Str(s) => write!(f, "\"{s}\""),
            ArgValue::Int(i) => write!(f, "{i}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct QueueSpec {
    pub name: String,
    pub service: String,
    pub durable: bool,
    pub arguments: BTreeMap<String, ArgValue>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct ExchangeSpec {
    pub name: String,
    pub service: String,
    /// `None`: the exchange is not ours to declare; it must already exist.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub durable: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub(crate) struct BindingSpec {
    pub service: String,
    pub exchange: String,
    pub queue: String,
    pub routing_key: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub(crate) struct Topology {
    pub exchanges: Vec<ExchangeSpec>,
    pub queues: Vec<QueueSpec>,
    pub bindings: Vec<BindingSpec>,
}

fn s(v: &str) -> ArgValue {
    ArgValue::Str(v.to_string())
}

/// The RabbitMQ generation a topology is declared on: quorum queues need different arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Generation {
    /// 3.x: no default delivery-limit, and a negative `x-delivery-limit` drops every message at
    /// its first return (measured on 3.10.8), so none is declared.
    Before4,
    /// 4.0 and later: quorum queues default to a delivery-limit of 20; a message past it is
    /// dead-lettered with reason `delivery_limit`, and since the S → S.retry → S cycle then holds
    /// no `rejected` death, the broker drops it (rabbit_dead_letter: detect_cycles). So quorum
    /// queues get `x-delivery-limit: -1`, which 4.x reads as no limit (rabbit_fifo.erl).
    From4,
}

impl Generation {
    /// From the version string the management API reports ("4.0.5"); None when it does not parse.
    pub(crate) fn of_version(version: &str) -> Option<Generation> {
        let major: u32 = version.trim().split('.').next()?.parse().ok()?;
        Some(if major >= 4 {
            Generation::From4
        } else {
            Generation::Before4
        })
    }
}

/// The `x-delivery-limit` that means "no limit" on RabbitMQ 4.x.
pub(crate) const NO_DELIVERY_LIMIT: i64 = -1;

/// Everything the given services need, exchanges first (bindings depend on them), no duplicates.
pub(crate) fn derive<'a>(
    services: impl IntoIterator<Item = &'a Service>,
    generation: Generation,
) -> Topology {
    let mut t = Topology::default();
    for svc in services {
        add_service(&mut t, svc, generation);
    }
    t
}

fn add_service(t: &mut Topology, svc: &Service, generation: Generation) {
    let ttl = ArgValue::Int(svc.retry_delay.as_millis() as i64);
    let work = svc.work_queue();
    let retry = svc.retry_queue();
    let error = svc.error_queue();
    let queue = |name: &str, args: Vec<(&str, ArgValue)>| {
        let mut arguments: BTreeMap<String, ArgValue> =
            args.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
        if svc.queue_type == QueueType::Quorum {
            arguments.insert("x-queue-type".into(), s("quorum"));
            if generation == Generation::From4 {
                arguments.insert("x-delivery-limit".into(), ArgValue::Int(NO_DELIVERY_LIMIT));
            }
        }
        QueueSpec {
            name: name.to_string(),
            service: svc.name.clone(),
            durable: true,
            arguments,
        }
    };
    let exchange = |name: &str, kind: Option<&str>| ExchangeSpec {
        name: name.to_string(),
        service: svc.name.clone(),
        kind: kind.map(str::to_string),
        durable: true,
    };
    let binding = |exchange: &str, queue: &str, key: &str| BindingSpec {
        service: svc.name.clone(),
        exchange: exchange.to_string(),
        queue: queue.to_string(),
        routing_key: key.to_string(),
    };

    match svc.naming {
        Naming::Dotted => {
            t.queues.push(queue(
                &work,
                vec![
                    ("x-dead-letter-exchange", s("")),
                    ("x-dead-letter-routing-key", s(&retry)),
                ],
            ));
            t.queues.push(queue(
                &retry,
                vec![
                    ("x-message-ttl", ttl),
                    ("x-dead-letter-exchange", s("")),
                    ("x-dead-letter-routing-key", s(&work)),
                ],
            ));
            t.queues.push(queue(&error, vec![]));
        }
        Naming::Sneakers => {
            let retry_x = format!("{}-retry", svc.name);
            let requeue_x = format!("{}-retry-requeue", svc.name);
            let error_x = format!("{}-error", svc.name);
            for name in [&retry_x, &requeue_x, &error_x] {
                push_exchange(t, exchange(name, Some("topic")));
            }
            t.queues
                .push(queue(&work, vec![("x-dead-letter-exchange", s(&retry_x))]));
            t.queues.push(queue(
                &retry,
                vec![
                    ("x-dead-letter-exchange", s(&requeue_x)),
                    ("x-message-ttl", ttl),
                ],
            ));
            t.queues.push(queue(&error, vec![]));
            t.bindings.push(binding(&requeue_x, &work, "#"));
            t.bindings.push(binding(&retry_x, &retry, "#"));
            t.bindings.push(binding(&error_x, &error, "#"));
        }
    }
    for b in &svc.bind {
        push_exchange(t, exchange(&b.exchange, b.kind.map(|k| k.as_str())));
        t.bindings.push(binding(&b.exchange, &work, &b.routing_key));
    }
}

/// One entry per exchange name; a declared type wins over "must exist".
fn push_exchange(t: &mut Topology, x: ExchangeSpec) {
    match t.exchanges.iter_mut().find(|e| e.name == x.name) {
        Some(existing) => {
            if existing.kind.is_none() {
                existing.kind = x.kind;
            }
        }
        None => t.exchanges.push(x),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{Bind, ExchangeType};
    use std::time::Duration;

    fn svc(name: &str) -> Service {
        let mut s = Service::with_defaults(name);
        s.retry_delay = Duration::from_millis(1500);
        s
    }

    fn args(q: &QueueSpec) -> Vec<(String, String)> {
        q.arguments
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect()
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        let mut v: Vec<(String, String)> = list
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        v.sort();
        v
    }

    #[test]
    fn dotted_classic_has_the_three_contract_queues() {
        let t = derive([&svc("billing")], Generation::From4);
        assert!(t.exchanges.is_empty() && t.bindings.is_empty());
        let names: Vec<&str> = t.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(names, ["billing", "billing.retry", "billing.error"]);
        assert!(t.queues.iter().all(|q| q.durable));
        assert_eq!(
            args(&t.queues[0]),
            pairs(&[
                ("x-dead-letter-exchange", "\"\""),
                ("x-dead-letter-routing-key", "\"billing.retry\"")
            ])
        );
        assert_eq!(
            args(&t.queues[1]),
            pairs(&[
                ("x-dead-letter-exchange", "\"\""),
                ("x-dead-letter-routing-key", "\"billing\""),
                ("x-message-ttl", "1500")
            ])
        );
        assert!(t.queues[2].arguments.is_empty());
    }

    #[test]
    fn ttl_is_an_integer_argument() {
        let t = derive([&svc("a")], Generation::From4);
        assert_eq!(t.queues[1].arguments["x-message-ttl"], ArgValue::Int(1500));
    }

    #[test]
    fn quorum_sets_queue_type_on_all_three() {
        let mut s = svc("billing");
        s.queue_type = QueueType::Quorum;
        let t = derive([&s], Generation::From4);
        for q in &t.queues {
            assert_eq!(q.arguments["x-queue-type"], ArgValue::Str("quorum".into()));
        }
    }

    #[test]
    fn quorum_queues_on_4_x_have_no_delivery_limit_and_on_3_x_no_argument_for_it() {
        let mut s = svc("billing");
        s.queue_type = QueueType::Quorum;
        for q in &derive([&s], Generation::From4).queues {
            assert_eq!(
                q.arguments["x-delivery-limit"],
                ArgValue::Int(-1),
                "{}",
                q.name
            );
        }
        for q in &derive([&s], Generation::Before4).queues {
            assert!(!q.arguments.contains_key("x-delivery-limit"), "{}", q.name);
        }
        for q in &derive([&svc("c")], Generation::From4).queues {
            assert!(
                !q.arguments.contains_key("x-delivery-limit"),
                "classic {}",
                q.name
            );
        }
    }

    #[test]
    fn generations_come_from_the_major_version() {
        assert_eq!(Generation::of_version("3.10.8"), Some(Generation::Before4));
        assert_eq!(Generation::of_version("4.0.5"), Some(Generation::From4));
        assert_eq!(Generation::of_version("4.3.6"), Some(Generation::From4));
        assert_eq!(Generation::of_version("x"), None);
    }

    #[test]
    fn classic_sets_no_queue_type() {
        let t = derive([&svc("billing")], Generation::From4);
        assert!(t
            .queues
            .iter()
            .all(|q| !q.arguments.contains_key("x-queue-type")));
    }

    #[test]
    fn sneakers_reproduces_the_maxretry_layout() {
        let mut s = svc("mailer");
        s.naming = Naming::Sneakers;
        let t = derive([&s], Generation::From4);
        let xs: Vec<(&str, Option<&str>)> = t
            .exchanges
            .iter()
            .map(|e| (e.name.as_str(), e.kind.as_deref()))
            .collect();
        assert_eq!(
            xs,
            [
                ("mailer-retry", Some("topic")),
                ("mailer-retry-requeue", Some("topic")),
                ("mailer-error", Some("topic"))
            ]
        );
        let qs: Vec<&str> = t.queues.iter().map(|q| q.name.as_str()).collect();
        assert_eq!(qs, ["mailer", "mailer-retry", "mailer-error"]);
        assert_eq!(
            args(&t.queues[0]),
            pairs(&[("x-dead-letter-exchange", "\"mailer-retry\"")])
        );
        assert_eq!(
            args(&t.queues[1]),
            pairs(&[
                ("x-dead-letter-exchange", "\"mailer-retry-requeue\""),
                ("x-message-ttl", "1500")
            ])
        );
        assert!(t.queues[2].arguments.is_empty());
        let bs: Vec<(&str, &str, &str)> = t
            .bindings
            .iter()
            .map(|b| {
                (
                    b.exchange.as_str(),
                    b.queue.as_str(),
                    b.routing_key.as_str(),
                )
            })
            .collect();
        assert_eq!(
            bs,
            [
                ("mailer-retry-requeue", "mailer", "#"),
                ("mailer-retry", "mailer-retry", "#"),
                ("mailer-error", "mailer-error", "#")
            ]
        );
    }

    #[test]
    fn bind_entries_bind_the_work_queue_and_declare_typed_exchanges_once() {
        let mut a = svc("email");
        a.bind = vec![
            Bind {
                exchange: "events".into(),
                kind: Some(ExchangeType::Topic),
                routing_key: "email.#".into(),
            },
            Bind {
                exchange: "legacy".into(),
                kind: None,
                routing_key: "".into(),
            },
        ];
        let mut b = svc("sms");
        b.bind = vec![Bind {
            exchange: "events".into(),
            kind: None,
            routing_key: "sms.#".into(),
        }];
        let t = derive([&a, &b], Generation::From4);
        assert_eq!(t.exchanges.len(), 2);
        assert_eq!(t.exchanges[0].kind.as_deref(), Some("topic"));
        assert_eq!(t.exchanges[1].kind, None);
        assert_eq!(t.bindings.len(), 3);
        assert_eq!(t.bindings[2].queue, "sms");
        assert_eq!(t.bindings[2].routing_key, "sms.#");
    }
}
