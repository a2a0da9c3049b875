//! Non-destructive reading of a queue: consume without acking, cancel, then give every delivery back
//! with ONE multiple nack (requeue), so the queue keeps its messages in their order. Also the
//! one-at-a-time hold used by `peek --pop`, where only the confirmed message is acked.

use std::ops::ControlFlow;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use super::amqp::{short, QueueCounts, Reply};
use super::{amqp_error, next, short_reason, Broker};
use crate::error::{Error, Result};
use crate::util::printable;

/// A browse ends when nothing arrived for this long, in case another consumer took some messages.
pub const IDLE: Duration = Duration::from_secs(2);

/// Why a browse stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// As many messages as asked for (or as the queue held at the start) were read.
    Done,
    /// Nothing arrived for [`IDLE`]: another consumer may hold the rest.
    Idle,
    /// The caller asked to stop (e.g. stdout was closed).
    Stopped,
    /// The broker cancelled the consumer (the queue was deleted).
    Cancelled,
    /// Ctrl-C.
    Interrupted,
}

/// What a browse did; by the time it is returned every delivery has been given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Browsed {
    /// Ready messages when the browse started.
    pub depth: u32,
    /// Deliveries handed to the caller.
    pub read: u64,
    pub end: End,
}

/// Passive declare: the queue's counts, or an error naming it. Never creates the queue.
pub async fn open_queue(broker: &Broker, queue: &str) -> Result<QueueCounts> {
    match broker.probe_queue(queue).await? {
        Reply::Ok(counts) => Ok(counts),
        Reply::NotFound(_) => Err(not_found(broker, queue)),
        Reply::Refused(why) => Err(Error::runtime(format!(
            "cannot read queue \"{}\": {why}",
            printable(queue)
        ))),
    }
}

fn not_found(broker: &Broker, queue: &str) -> Error {
    Error::runtime(format!(
        "queue \"{}\" not found in vhost \"{}\"",
        printable(queue),
        broker.url.vhost
    ))
}

/// An error from consuming or acknowledging on `queue`: a 404 names the queue, a 403 the
/// permission, anything else is a lost connection.
fn queue_error(broker: &Broker, queue: &str, e: lapin::Error) -> Error {
    match amqp_error(&e) {
        Some((404, _)) => not_found(broker, queue),
        Some((403, text)) => Error::runtime(format!(
            "access refused to queue \"{}\": {text}",
            printable(queue)
        )),
        _ => broker.lost(e),
    }
}

/// The prefetch that lets `target` deliveries arrive unacked: the count itself when it fits
/// AMQP's 16 bits, else 0 (unlimited). A smaller prefetch would stall the browse.
pub fn prefetch_for(target: u64) -> u16 {
    u16::try_from(target).unwrap_or(0)
}

/// Reads up to `limit` messages (all that were ready at the start when `None`) and hands each to
/// `on_message` with its 1-based position. Never acks or rejects: everything read goes back to
/// the queue with one `basic.nack(multiple, requeue)` after the consumer is cancelled.
pub async fn browse(
    broker: &Broker,
    queue: &str,
    depth: u32,
    limit: Option<u64>,
    mut on_message: impl FnMut(u64, &Delivery) -> ControlFlow<()>,
) -> Result<Browsed> {
    let target = limit.map_or(u64::from(depth), |l| l.min(u64::from(depth)));
    let mut browsed = Browsed {
        depth,
        read: 0,
        end: End::Done,
    };
    if target == 0 {
        return Ok(browsed);
    }
    let channel = broker.channel().await?;
    channel
        .basic_qos(prefetch_for(target), BasicQosOptions::default())
        .await
        .map_err(|e| broker.lost(e))?;
    let mut consumer = channel
        .basic_consume(
            short(queue)?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| queue_error(broker, queue, e))?;
    let mut last_tag = 0;
    let interrupt = tokio::signal::ctrl_c();
    tokio::pin!(interrupt);
    browsed.end = loop {
        if browsed.read >= target {
            break End::Done;
        }
        let next = tokio::select! {
            _ = &mut interrupt => break End::Interrupted,
            next = tokio::time::timeout(IDLE, next(&mut consumer)) => next,
        };
        let delivery = match next {
            Err(_) => break End::Idle,
            Ok(None) => break End::Cancelled,
            Ok(Some(Err(e))) => return Err(broker.lost(e)),
            Ok(Some(Ok(d))) => d,
        };
        last_tag = delivery.delivery_tag;
        browsed.read += 1;
        if on_message(browsed.read, &delivery).is_break() {
            break End::Stopped;
        }
    };
    give_back(broker, &channel, &mut consumer, last_tag).await?;
    Ok(browsed)
}

/// Cancel first so nothing new arrives, take what is already buffered (its tags are higher), then
/// nack everything up to the last tag at once and close the channel, which waits for the broker
/// to have processed the nack.
async fn give_back(
    broker: &Broker,
    channel: &Channel,
    consumer: &mut Consumer,
    mut last_tag: u64,
) -> Result<()> {
    let lost = |e| {
        Error::with_cause(
            format!(
                "lost the connection to {} while giving the messages back ({}); the broker requeues them by itself",
                broker.url.redacted(),
                short_reason(&e)
            ),
            format!("{e:?}"),
        )
    };
    channel
        .basic_cancel(consumer.tag(), BasicCancelOptions::default())
        .await
        .map_err(lost)?;
    while let Ok(Some(Ok(d))) = tokio::time::timeout(IDLE, next(consumer)).await {
        last_tag = last_tag.max(d.delivery_tag);
    }
    if last_tag > 0 {
        channel
            .basic_nack(
                last_tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
            .map_err(lost)?;
    }
    channel.close(200, "browsed".into()).await.map_err(lost)
}

/// Messages taken one at a time with basic.get, so only the ones shown are held; each is then
/// either removed (acked alone) or kept (given back with the others at the end).
pub struct Hold<'a> {
    broker: &'a Broker,
    channel: Channel,
    queue: String,
    /// The highest delivery tag that is held and not removed; 0 when none.
    last_kept: u64,
}

/// What happened to a message the user asked to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Removal {
    Removed,
    /// The broker had already taken it back (channel or connection closed, consumer timeout).
    TakenBack(String),
    /// The channel closed right after the ack: it may or may not have been removed.
    Unsure(String),
}

impl<'a> Hold<'a> {
    pub async fn open(broker: &'a Broker, queue: &str) -> Result<Hold<'a>> {
        Ok(Hold {
            broker,
            channel: broker.channel().await?,
            queue: queue.to_string(),
            last_kept: 0,
        })
    }

    /// The next message at the head (after those already held), or None when there is none.
    pub async fn next(&mut self) -> Result<Option<Delivery>> {
        let got = self
            .channel
            .basic_get(short(&self.queue)?, BasicGetOptions { no_ack: false })
            .await
            .map_err(|e| queue_error(self.broker, &self.queue, e))?;
        Ok(got.map(|m| m.delivery))
    }

    /// Why the held deliveries are no longer held, if they are not: the broker requeues every
    /// unacked delivery when it closes the channel or connection (e.g. after consumer_timeout).
    pub fn lost_reason(&self) -> Option<String> {
        if !self.broker.connection.status().connected() {
            return Some("the connection to the broker was closed".into());
        }
        if !self.channel.status().connected() {
            return Some(
                "the broker closed the channel (a consumer timeout, or the queue was deleted)"
                    .into(),
            );
        }
        None
    }

    /// Acks exactly this delivery, then makes one round trip on the channel: if the channel was
    /// closed in between, the broker may have requeued the message instead.
    pub async fn remove(&mut self, delivery_tag: u64) -> Removal {
        if let Some(why) = self.lost_reason() {
            return Removal::TakenBack(why);
        }
        if let Err(e) = self
            .channel
            .basic_ack(delivery_tag, BasicAckOptions { multiple: false })
            .await
        {
            return Removal::TakenBack(short_reason(&e));
        }
        match self.channel.basic_qos(0, BasicQosOptions::default()).await {
            Ok(()) => Removal::Removed,
            Err(e) => Removal::Unsure(short_reason(&e)),
        }
    }

    /// Leaves this delivery in the queue; it is given back, in place, by [`Hold::give_back`].
    pub fn keep(&mut self, delivery_tag: u64) {
        self.last_kept = self.last_kept.max(delivery_tag);
    }

    /// One multiple nack for everything kept, then close the channel.
    pub async fn give_back(self) -> Result<()> {
        if self.lost_reason().is_some() {
            // Closed already: the broker requeued what was held.
            return Ok(());
        }
        if self.last_kept > 0 {
            self.channel
                .basic_nack(
                    self.last_kept,
                    BasicNackOptions {
                        multiple: true,
                        requeue: true,
                    },
                )
                .await
                .map_err(|e| self.broker.lost(e))?;
        }
        self.channel
            .close(200, "peeked".into())
            .await
            .map_err(|e| self.broker.lost(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefetch_covers_the_whole_browse_or_is_unlimited() {
        assert_eq!(prefetch_for(1), 1);
        assert_eq!(prefetch_for(65_535), 65_535);
        assert_eq!(prefetch_for(65_536), 0);
        assert_eq!(prefetch_for(1_000_000), 0);
    }
}
