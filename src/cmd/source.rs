//! SERVICE or --queue Q → the queue to read and the service's work queue (the replay destination).

use std::time::Duration;

use crate::broker::amqp::Reply;
use crate::broker::quorum::{self, Assessment, Requeue, Risk, Tail};
use crate::broker::reader::ReadMode;
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::options::SourceChoice;
use crate::output::messages::warn;
use crate::settings::Settings;
use crate::util::printable;

/// How long a command waits for the management API's word on the queue type before going on.
const MANAGEMENT_WAIT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Source {
    /// The queue messages are read from.
    pub queue: String,
    /// The service's work queue, when a SERVICE was named.
    pub work_queue: Option<String>,
}

pub(crate) fn resolve(choice: &SourceChoice, settings: &Settings) -> Result<Source> {
    match choice {
        SourceChoice::Queue(q) => Ok(Source {
            queue: q.clone(),
            work_queue: None,
        }),
        SourceChoice::Service(name) => {
            let service = settings.require_config()?.service(name)?;
            Ok(Source {
                queue: service.error_queue(),
                work_queue: Some(service.work_queue()),
            })
        }
    }
}

/// Runs a blocking management API call on a plain thread and waits at most `wait` for it. A plain
/// thread, not spawn_blocking: when the API does not answer, dlq goes on without it and must not
/// wait for the thread when it exits. Err says why there is no answer.
pub(crate) async fn off_thread<T: Send + 'static>(
    wait: Duration,
    call: impl FnOnce() -> T + Send + 'static,
) -> std::result::Result<T, String> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let _ = tx.send(call());
    });
    match tokio::time::timeout(wait, rx).await {
        Ok(Ok(answer)) => Ok(answer),
        Ok(Err(_)) => Err("internal error: the management check stopped".into()),
        Err(_) => Err(format!(
            "management API: no answer within {} s",
            wait.as_secs()
        )),
    }
}

/// What reading `queue` and leaving messages in place risks, from the management API.
pub(crate) async fn assess(settings: &Settings, broker: &Broker, queue: &str) -> Assessment {
    let (management, url, name) = (
        settings.management_url.clone(),
        broker.url.clone(),
        queue.to_string(),
    );
    off_thread(MANAGEMENT_WAIT, move || {
        quorum::assess(management.as_deref(), &url, &name)
    })
    .await
    .unwrap_or_else(|why| Assessment {
        risk: Risk::Unknown(why),
        requeue: Requeue::InPlace,
        tail: Tail::Never,
    })
}

/// For a command that reports no notes at the end: assess and guard in one go, warning at once;
/// and whether what it keeps may be given back last part first (a queue known to be classic).
pub(crate) async fn read_mode(
    settings: &Settings,
    broker: &Broker,
    queue: &str,
) -> Result<ReadMode> {
    let assessment = assess(settings, broker, queue).await;
    let last_first = assessment.in_place_known();
    let (guard, notes) = guard_for(assessment.risk, queue, settings)?;
    for n in notes {
        warn(settings, &n);
    }
    let tail = match guard {
        Some(_) => Tail::Never,
        None => assessment.tail,
    };
    Ok(ReadMode {
        guard,
        last_first,
        tail,
    })
}

/// After a read that kept messages at the tail (which stops after as many messages as were
/// present at the start, with its copies behind them): a consumer on the queue now may have
/// taken some of those, so that the read looked at copies instead. Said as the problem it is.
pub(crate) async fn consumed_beside(broker: &Broker, queue: &str) -> Result<Option<String>> {
    Ok(match broker.probe_queue(queue).await? {
        Reply::Ok(c) if c.consumers > 0 => Some(format!(
            "{} other consumer(s) are on \"{}\": they may have taken messages this run set out to look at, and it may have looked at the copies of kept messages instead (nothing was lost; check the queue and stop its consumers before running again)",
            c.consumers,
            printable(queue)
        )),
        _ => None,
    })
}

/// The delivery-limit a read of `queue` must keep clear of (None: reads are free), with notes
/// for the end of the run. Warns on stderr when reads count; a stream is refused.
pub(crate) fn guard_for(
    risk: Risk,
    queue: &str,
    settings: &Settings,
) -> Result<(Option<i64>, Vec<String>)> {
    let shown = printable(queue);
    match risk {
        Risk::None => Ok((None, Vec::new())),
        Risk::Stream => Err(Error::runtime(format!(
            "queue \"{shown}\" is a stream; dlq reads classic and quorum queues"
        ))),
        Risk::Unknown(why) => Ok((
            None,
            vec![format!(
                "could not tell whether \"{shown}\" is a quorum queue ({why}); on RabbitMQ 4.0–4.2 reading a quorum queue counts toward its delivery-limit, and a read that stops before its end may change its order"
            )],
        )),
        Risk::DeliveryLimit { limit, version } if limit <= 0 => Err(Error::runtime(format!(
            "\"{shown}\" is a quorum queue whose delivery-limit is {limit} on RabbitMQ {version}: every message read and left in place would be dropped at once, so dlq does not read it (remove the limit; a negative x-delivery-limit means no limit only from RabbitMQ 4.0)"
        ))),
        Risk::DeliveryLimit { limit, version } => {
            warn(settings, &quorum::guard_warning(&shown, limit, &version));
            Ok((Some(limit), Vec::new()))
        }
    }
}
