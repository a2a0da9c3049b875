//! What a replay does with each message it looks at: the filter's verdict, the copy (its
//! destination, and the transform's output), or why the message stays.

use super::*;
use std::collections::HashMap;

use lapin::message::Delivery;
use lapin::BasicProperties;

use crate::broker::amqp::Reply;
use crate::broker::publisher::SizeCheck;
use crate::broker::Broker;
use crate::error::Result;
use crate::filter::Filter;
use crate::message::{failure, Message};
use crate::replay::replay_headers;
use crate::report::moves::{Destination, PreviewRow, ReplayReport};

/// Which origin queues exist, asked once each.
#[derive(Default)]
pub(super) struct Origins(HashMap<String, bool>);

impl Origins {
    pub(super) async fn exists(&mut self, broker: &Broker, queue: &str) -> Result<bool> {
        if let Some(known) = self.0.get(queue) {
            return Ok(*known);
        }
        let exists = matches!(broker.probe_queue(queue).await?, Reply::Ok(_));
        self.0.insert(queue.to_string(), exists);
        Ok(exists)
    }
}

/// The filter's verdict on each delivery of a batch, in order; a run-time error is no match,
/// counted. With a filter, the message it looked at comes back too, for the transform and the
/// routing to use.
pub(super) fn selected(
    filter: Option<&Filter>,
    queue: &str,
    batch: &[(u64, Delivery, Handle)],
    errors: &mut u64,
) -> Vec<(bool, Option<Message>)> {
    let Some(f) = filter else {
        return batch.iter().map(|_| (true, None)).collect();
    };
    let messages: Vec<Message> = batch
        .iter()
        .map(|(position, d, _)| Message::from_delivery(queue, *position, d))
        .collect();
    let verdicts = f.matches_all(&messages);
    messages
        .into_iter()
        .zip(verdicts)
        .map(|(message, verdict)| match verdict {
            Ok(m) => (m, Some(message)),
            Err(_) => {
                *errors += 1;
                (false, None)
            }
        })
        .collect()
}

/// What a replay needs to decide each message's copy.
pub(super) struct Plan<'a, 'b> {
    pub(super) broker: &'b Broker,
    pub(super) queue: &'a str,
    pub(super) destination: &'a Destination,
    pub(super) transform: Option<&'a Filter>,
    pub(super) origins: &'a mut Origins,
    /// How the source is read: the delivery-limit kept messages must stay clear of (a quorum
    /// queue whose returns count), and whether they may be given back last part first.
    pub(super) mode: ReadMode,
    pub(super) sizes: SizeCheck,
}

/// The copy of one matching message: where it goes and what is published.
pub(super) struct Copy {
    pub(super) queue: String,
    pub(super) properties: BasicProperties,
    /// None: the original body.
    pub(super) body: Option<Vec<u8>>,
    /// With --transform: the message before and after, for previews.
    pub(super) change: Option<(serde_json::Value, serde_json::Value)>,
}

/// Why a matching message stays: it has no usable destination, or its transform failed.
pub(super) enum Stay {
    NoDestination(String),
    Transform(String),
    /// Over the broker's max_message_size: the one-line reason.
    TooLarge(String),
}

impl<'a, 'b> Plan<'a, 'b> {
    pub(super) fn new(
        broker: &'b Broker,
        queue: &'a str,
        destination: &'a Destination,
        transform: Option<&'a Filter>,
        origins: &'a mut Origins,
        mode: ReadMode,
    ) -> Self {
        Plan {
            broker,
            queue,
            destination,
            transform,
            origins,
            mode,
            sizes: SizeCheck::default(),
        }
    }

    /// Decides the copy of a matching message, or why it stays where it is.
    /// `message` is the delivery's message when the filter already built it.
    pub(super) async fn copy(
        &mut self,
        pos: u64,
        d: &Delivery,
        message: Option<Message>,
    ) -> Result<std::result::Result<Copy, Stay>> {
        let mut change = None;
        let message = message.or_else(|| {
            self.transform
                .is_some()
                .then(|| Message::from_delivery(self.queue, pos, d))
        });
        // Only a replay to each message's origin needs it; the message's failure when built.
        let origin = match (self.destination, &message) {
            (Destination::Queue(_), _) => None,
            (Destination::Origin, Some(m)) => m.failure.origin.clone(),
            (Destination::Origin, None) => failure(d.properties.headers().as_ref()).origin,
        };
        let (properties, body, rerouted) = match (self.transform, &message) {
            (Some(t), Some(message)) => {
                let before = message.to_value();
                let after = match t.first_value(&before) {
                    Ok(Some(after)) => after,
                    Ok(None) => {
                        return Ok(Err(Stay::Transform(
                            "the transform produced no output".into(),
                        )))
                    }
                    Err(e) => {
                        return Ok(Err(Stay::Transform(format!("the transform failed: {e}"))))
                    }
                };
                let repaired =
                    match crate::transform::repair(&d.properties, &d.data, &before, &after) {
                        Ok(r) => r,
                        Err(why) => {
                            return Ok(Err(Stay::Transform(format!(
                                "the transform's output is not a valid record: {why}"
                            ))))
                        }
                    };
                change = Some((before, after));
                let body = (repaired.body != d.data).then_some(repaired.body);
                (repaired.properties, body, repaired.routing_key)
            }
            _ => (d.properties.clone(), None, None),
        };
        let queue = match rerouted {
            Some(q) if self.origins.exists(self.broker, &q).await? => q,
            Some(q) => {
                return Ok(Err(Stay::NoDestination(format!(
                    "queue \"{}\" (the transform's routing_key) not found",
                    crate::util::printable(&q)
                ))))
            }
            None => match route(self.broker, self.destination, origin, self.origins).await? {
                Ok(q) => q,
                Err(why) => return Ok(Err(Stay::NoDestination(why))),
            },
        };
        let size = body.as_deref().unwrap_or(&d.data);
        if let Some(max) = self.sizes.over_limit(self.broker, size).await? {
            return Ok(Err(Stay::TooLarge(format!(
                "{}; it stays in the queue (`dlq export --remove --filter '.body_size > {max}'` archives such messages)",
                crate::broker::too_large(size.len() as u64, max)
            ))));
        }
        let headers = replay_headers(properties.headers().as_ref());
        let properties = properties.with_headers(headers);
        Ok(Ok(Copy {
            queue,
            properties,
            body,
            change,
        }))
    }
}

/// Counts a message that stays because of its transform or destination, and shows it in the
/// preview when there is room.
pub(super) fn stays(report: &mut ReplayReport, pos: u64, d: &Delivery, why: Stay) {
    report.counts.failed += 1;
    let why = match why {
        Stay::NoDestination(why) | Stay::TooLarge(why) => why,
        Stay::Transform(why) => {
            report.transform_errors += 1;
            report
                .first_transform_error
                .get_or_insert_with(|| format!("message at position {pos}: {why}"));
            why
        }
    };
    if report.preview.len() < PREVIEW_ROWS {
        report
            .preview
            .push(preview_row(pos, d, None, Some(why), None));
    }
}

/// Where this message's copy goes (`origin`: its `failure.origin`), or `Err(reason)` when it
/// has no known, existing origin.
pub(super) async fn route(
    broker: &Broker,
    destination: &Destination,
    origin: Option<String>,
    origins: &mut Origins,
) -> Result<std::result::Result<String, String>> {
    match destination {
        Destination::Queue(q) => Ok(Ok(q.clone())),
        Destination::Origin => match origin {
            None => Ok(Err("no known origin queue (use --to)".into())),
            Some(o) if origins.exists(broker, &o).await? => Ok(Ok(o)),
            Some(o) => Ok(Err(format!("origin queue \"{o}\" not found"))),
        },
    }
}

pub(super) fn preview_row(
    position: u64,
    d: &Delivery,
    destination: Option<String>,
    failure_text: Option<String>,
    change: Option<&(serde_json::Value, serde_json::Value)>,
) -> PreviewRow {
    PreviewRow {
        position,
        message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
        destination,
        failure: failure_text,
        changes: change.map(|(b, a)| crate::transform::diff(b, a, DIFF_LINES)),
        before: change.map(|(b, _)| b.clone()),
        after: change.map(|(_, a)| a.clone()),
    }
}

/// Changed fields shown per previewed message.
pub(super) const DIFF_LINES: usize = 8;

/// Counts a message the transform changed (or not).
pub(super) fn count_change(report: &mut ReplayReport, copy: &Copy) {
    if let (Some(n), Some((b, a))) = (report.changed.as_mut(), &copy.change) {
        if crate::transform::changes_anything(b, a) {
            *n += 1;
        }
    }
}
