//! The seed design's worker loop: consume the work queue, ack successes, reject failures into the
//! retry queue, and park the failure after the last retry in the error queue (confirmed, then ack).

use std::future::Future;
use std::time::{SystemTime, UNIX_EPOCH};

use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions, BasicRejectOptions,
    ConfirmSelectOptions,
};
use lapin::types::FieldTable;
use lapin::Confirmation;

use super::amqp::short;
use super::Broker;
use crate::config::{Naming, Service};
use crate::error::{Error, Result};
use crate::retry::{attempt, decide, parking_headers, Decision, Failure};

/// What one worker run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct WorkerStats {
    pub processed: u64,
    pub retried: u64,
    pub parked: u64,
}

/// Decides whether a message body fails: the example fails bodies containing a given text.
pub(crate) fn fails(body: &[u8], needle: &str) -> bool {
    !needle.is_empty() && body.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Runs until `stop` resolves; each event is passed to `log` (one line, for the example's stdout).
pub async fn run(
    broker: &Broker,
    service: &Service,
    fail_on: &str,
    stop: impl Future<Output = ()>,
    mut log: impl FnMut(&str),
) -> Result<WorkerStats> {
    if service.naming != Naming::Dotted {
        return Err(Error::usage(
            "the example worker handles naming = \"dotted\" only",
        ));
    }
    let work_queue = service.work_queue();
    let error_queue = service.error_queue();
    let consume_ch = broker.channel().await?;
    consume_ch
        .basic_qos(20, BasicQosOptions::default())
        .await
        .map_err(|e| broker.lost(e))?;
    let publish_ch = broker.channel().await?;
    publish_ch
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .map_err(|e| broker.lost(e))?;
    let mut consumer = consume_ch
        .basic_consume(
            short(&work_queue)?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| Error::with_cause(format!("cannot consume from queue \"{work_queue}\""), e))?;
    let mut stats = WorkerStats::default();
    tokio::pin!(stop);
    loop {
        let delivery = tokio::select! {
            _ = &mut stop => break,
            d = super::next(&mut consumer) => d,
        };
        let Some(delivery) = delivery else { break };
        let delivery = delivery.map_err(|e| broker.lost(e))?;
        let headers = delivery.properties.headers().as_ref();
        let n = attempt(headers, &work_queue);
        if !fails(&delivery.data, fail_on) {
            delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .map_err(|e| broker.lost(e))?;
            stats.processed += 1;
            log(&format!("processed (attempt {n})"));
            continue;
        }
        match decide(n, service.max_retries) {
            Decision::Retry => {
                delivery
                    .acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
                    .map_err(|e| broker.lost(e))?;
                stats.retried += 1;
                log(&format!(
                    "failed attempt {n}: retrying in {:?}",
                    service.retry_delay
                ));
            }
            Decision::Park => {
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0);
                let failure = Failure {
                    message: &format!("body contains \"{fail_on}\""),
                    kind: "ExampleFailure",
                };
                let headers = parking_headers(
                    headers,
                    &work_queue,
                    &failure,
                    n,
                    delivery.exchange.as_str(),
                    delivery.routing_key.as_str(),
                    now,
                );
                let props = delivery.properties.clone().with_headers(headers);
                let confirm = publish_ch
                    .basic_publish(
                        "".into(),
                        short(&error_queue)?,
                        BasicPublishOptions {
                            mandatory: true,
                            ..Default::default()
                        },
                        &delivery.data,
                        props,
                    )
                    .await
                    .map_err(|e| broker.lost(e))?
                    .await
                    .map_err(|e| broker.lost(e))?;
                // Only an Ack without a returned message means the copy is in the error queue.
                if !matches!(confirm, Confirmation::Ack(None)) {
                    return Err(Error::runtime(format!(
                        "parking in \"{error_queue}\" was not confirmed ({confirm:?}); the message stays unacked and returns to \"{work_queue}\""
                    )));
                }
                delivery
                    .acker
                    .ack(BasicAckOptions::default())
                    .await
                    .map_err(|e| broker.lost(e))?;
                stats.parked += 1;
                log(&format!("failed attempt {n}: parked in {error_queue}"));
            }
        }
    }
    Ok(stats)
}

#[cfg(test)]
mod tests {
    use super::fails;

    #[test]
    fn fails_when_body_contains_the_text() {
        assert!(fails(b"{\"job\":\"work\"}", "work"));
        assert!(!fails(b"{\"job\":\"ok\"}", "work"));
        assert!(!fails(b"anything", ""));
    }
}
