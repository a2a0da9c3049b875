//! `dlq topology plan|apply|verify`: derive from the config, declare, or compare without changing anything.

use crate::broker::amqp::Reply;
use crate::broker::management::Management;
use crate::broker::Broker;
use crate::config::{QueueType, Service};
use crate::error::{Error, Result};
use crate::options::Services;
use crate::output::Report;
use crate::report::topology::{Action, PlanReport, TopologyReport};
use crate::settings::Settings;
use crate::topology::diff::{
    binding_name, diff_binding, diff_exchange, diff_queue, parse_inequivalent, ObservedExchange,
    ObservedQueue,
};
use crate::topology::{derive, Finding, FindingStatus, Generation, Topology};
use std::time::Duration;

fn selected<'a>(a: &Services, settings: &'a Settings) -> Result<Vec<&'a Service>> {
    let config = settings.require_config()?;
    let services = config.select(&a.0)?;
    if services.is_empty() {
        return Err(Error::usage(format!(
            "{} defines no services; add a [services.NAME] table",
            config.path.display()
        )));
    }
    Ok(services)
}

fn any_quorum(services: &[&Service]) -> bool {
    services.iter().any(|s| s.queue_type == QueueType::Quorum)
}

/// What a derived topology assumed when the broker's version could not be read.
fn assumed_4x(why: &str) -> String {
    format!("could not read the broker's version ({why}); quorum queues were checked as RabbitMQ 4.x declares them (x-delivery-limit -1)")
}

/// How long apply and verify wait for the management API's version.
const VERSION_WAIT: Duration = Duration::from_secs(5);

/// The broker's generation from the management API's /api/overview, or why it is not known.
async fn generation(settings: &Settings) -> std::result::Result<Generation, String> {
    let url = crate::broker::parse_amqp_url(&settings.urls[0]).map_err(|e| e.to_string())?;
    let api = Management::new(settings.management_url.as_deref(), &url);
    let base = api.base_url();
    match super::source::off_thread(VERSION_WAIT, move || api.version()).await? {
        Ok(Some(version)) => Generation::of_version(&version)
            .ok_or_else(|| format!("management API at {base} reports version \"{version}\"")),
        Ok(None) => Err(format!(
            "management API at {base} gives no rabbitmq_version in /api/overview"
        )),
        Err(why) => Err(format!("management API at {base} not usable: {why}")),
    }
}

pub(crate) fn plan(a: &Services, settings: &Settings) -> Result<Box<dyn Report>> {
    let services = selected(a, settings)?;
    let notes = if any_quorum(&services) {
        vec!["quorum queues are shown as declared on RabbitMQ 4.x (x-delivery-limit -1: no limit); on 3.x, where a negative limit drops every message, `apply` leaves x-delivery-limit out".into()]
    } else {
        Vec::new()
    };
    Ok(Box::new(PlanReport {
        topology: derive(services, Generation::From4),
        notes,
    }))
}

fn conflict(entity: &'static str, name: &str, service: &str, reason: String) -> Finding {
    let f = Finding::new(entity, name, service, FindingStatus::Conflict);
    match parse_inequivalent(&reason) {
        Some(d) => f.with_differences(vec![d]).with_detail(reason),
        None => f.with_detail(reason),
    }
}

/// Declares everything; a conflict on one entity does not stop the others.
pub(crate) async fn apply(a: &Services, settings: &Settings) -> Result<Box<dyn Report>> {
    let services = selected(a, settings)?;
    // Quorum queues' arguments depend on the broker's version; a wrong guess could make every
    // message be dropped (3.x) or let the retry loop drop some (4.x), so none is made.
    let generation = if any_quorum(&services) {
        generation(settings).await.map_err(|why| {
            Error::runtime(format!(
                "cannot tell the broker's version ({why}), which decides the quorum queues' x-delivery-limit; nothing was declared (give --management-url)"
            ))
        })?
    } else {
        Generation::From4
    };
    let topology = derive(services, generation);
    let broker = Broker::connect(&settings.urls, "topology apply").await?;
    let mut findings = Vec::new();
    for x in &topology.exchanges {
        let existed = matches!(broker.probe_exchange(&x.name).await?, Reply::Ok(()));
        let f = |s| Finding::new("exchange", &x.name, &x.service, s);
        findings.push(match &x.kind {
            None if existed => f(FindingStatus::Unchanged).with_detail("exists (not declared by dlq)"),
            None => f(FindingStatus::Missing)
                .with_detail("a bind entry without `type` needs this exchange to exist; create it or give `type`"),
            Some(kind) => match broker.declare_exchange(x, kind).await? {
                Reply::Ok(()) if existed => f(FindingStatus::Unchanged),
                Reply::Ok(()) => f(FindingStatus::Created),
                Reply::NotFound(r) | Reply::Refused(r) => conflict("exchange", &x.name, &x.service, r),
            },
        });
    }
    for q in &topology.queues {
        let existed = matches!(broker.probe_queue(&q.name).await?, Reply::Ok(_));
        findings.push(match broker.declare_queue(q).await? {
            Reply::Ok(()) => Finding::new(
                "queue",
                &q.name,
                &q.service,
                if existed {
                    FindingStatus::Unchanged
                } else {
                    FindingStatus::Created
                },
            ),
            Reply::NotFound(r) | Reply::Refused(r) => conflict("queue", &q.name, &q.service, r),
        });
    }
    for b in &topology.bindings {
        let name = binding_name(b);
        findings.push(match broker.bind_queue(b).await? {
            Reply::Ok(()) => {
                Finding::new("binding", &name, &b.service, FindingStatus::Ok).with_detail("bound")
            }
            Reply::NotFound(r) => {
                Finding::new("binding", &name, &b.service, FindingStatus::Missing).with_detail(r)
            }
            Reply::Refused(r) => conflict("binding", &name, &b.service, r),
        });
    }
    let source = format!("AMQP at {}", broker.url.redacted());
    broker.close().await;
    Ok(Box::new(TopologyReport {
        action: Action::Apply,
        findings,
        notes: vec![],
        source,
    }))
}

/// Compares without changing anything: management API first, AMQP probes as the fallback.
pub(crate) async fn verify(a: &Services, settings: &Settings) -> Result<Box<dyn Report>> {
    let services = selected(a, settings)?;
    let mut notes = Vec::new();
    let generation = if any_quorum(&services) {
        generation(settings).await.unwrap_or_else(|why| {
            notes.push(assumed_4x(&why));
            Generation::From4
        })
    } else {
        Generation::From4
    };
    let topology = derive(services, generation);
    let url = crate::broker::parse_amqp_url(&settings.urls[0])?;
    let api = Management::new(settings.management_url.as_deref(), &url);
    let (api, probe) = tokio::task::spawn_blocking(move || {
        let r = api.probe();
        (api, r)
    })
    .await
    .map_err(|e| Error::runtime(format!("internal error: {e}")))?;
    match probe {
        Ok(()) => {
            let source = format!("management API at {}", api.base_url());
            let findings = tokio::task::spawn_blocking(move || verify_http(&topology, &api))
                .await
                .map_err(|e| Error::runtime(format!("internal error: {e}")))??;
            Ok(Box::new(TopologyReport {
                action: Action::Verify,
                findings,
                notes,
                source,
            }))
        }
        Err(why) => {
            notes.push(format!(
                "management API at {} not usable ({why}); checked queues and exchanges over AMQP, bindings unchecked",
                api.base_url()
            ));
            let broker = Broker::connect(&settings.urls, "topology verify").await?;
            let findings = verify_amqp(&topology, &broker).await?;
            let source = format!("AMQP at {}", broker.url.redacted());
            broker.close().await;
            Ok(Box::new(TopologyReport {
                action: Action::Verify,
                findings,
                notes,
                source,
            }))
        }
    }
}

fn verify_http(t: &Topology, api: &Management) -> Result<Vec<Finding>> {
    let fail = |e| Error::runtime(format!("management API at {} failed: {e}", api.base_url()));
    let mut findings = Vec::new();
    for x in &t.exchanges {
        let observed = api
            .exchange(&x.name)
            .map_err(fail)?
            .map(|v| ObservedExchange::from_api(&v));
        findings.push(diff_exchange(x, observed.as_ref()));
    }
    for q in &t.queues {
        let observed = api
            .queue(&q.name)
            .map_err(fail)?
            .map(|v| ObservedQueue::from_api(&v));
        findings.push(diff_queue(q, observed.as_ref()));
    }
    for b in &t.bindings {
        let keys = api.binding_keys(&b.exchange, &b.queue).map_err(fail)?;
        findings.push(diff_binding(b, Some(&keys)));
    }
    Ok(findings)
}

/// Passive declare to see existence; then a re-declare with the wanted arguments on a throwaway
/// channel, which fails with 406 on any difference and changes nothing when equal.
async fn verify_amqp(t: &Topology, broker: &Broker) -> Result<Vec<Finding>> {
    let mut findings = Vec::new();
    let different = |entity, name: &str, service: &str, reason: String| {
        let f = Finding::new(entity, name, service, FindingStatus::Different);
        match parse_inequivalent(&reason) {
            Some(d) => f.with_differences(vec![d]),
            None => f.with_detail(reason),
        }
    };
    for x in &t.exchanges {
        let f = |s| Finding::new("exchange", &x.name, &x.service, s);
        findings.push(match broker.probe_exchange(&x.name).await? {
            Reply::NotFound(_) => f(FindingStatus::Missing),
            Reply::Refused(r) => different("exchange", &x.name, &x.service, r),
            Reply::Ok(()) => match &x.kind {
                None => f(FindingStatus::Ok),
                Some(kind) => match broker.declare_exchange(x, kind).await? {
                    Reply::Ok(()) => f(FindingStatus::Ok),
                    Reply::NotFound(_) => f(FindingStatus::Missing),
                    Reply::Refused(r) => different("exchange", &x.name, &x.service, r),
                },
            },
        });
    }
    for q in &t.queues {
        let f = |s| Finding::new("queue", &q.name, &q.service, s);
        findings.push(match broker.probe_queue(&q.name).await? {
            Reply::NotFound(_) => f(FindingStatus::Missing),
            Reply::Refused(r) => different("queue", &q.name, &q.service, r),
            Reply::Ok(_) => match broker.declare_queue(q).await? {
                Reply::Ok(()) => f(FindingStatus::Ok),
                Reply::NotFound(_) => f(FindingStatus::Missing),
                Reply::Refused(r) => different("queue", &q.name, &q.service, r),
            },
        });
    }
    for b in &t.bindings {
        findings.push(
            Finding::new(
                "binding",
                &binding_name(b),
                &b.service,
                FindingStatus::Unchecked,
            )
            .with_detail("bindings need the management API"),
        );
    }
    Ok(findings)
}
