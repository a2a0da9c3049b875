//! The careful way to read: basic.get, one message at a time, each held until it is removed or
//! given back with the others.

use super::*;
use crate::broker::watch::Answered;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicGetOptions, BasicNackOptions};
use lapin::Channel;

use super::queue_error;
use crate::broker::amqp::short;
use crate::broker::Broker;
use crate::error::Result;

/// Messages taken one at a time with basic.get, so only the ones shown are held; each is then
/// either removed (acked alone) or kept (given back with the others at the end).
/// One basic.get (no auto-ack) on `channel`: the message at the head, or None when none is ready.
pub(crate) async fn get_one(
    broker: &Broker,
    channel: &Channel,
    queue: &str,
) -> Result<Option<Delivery>> {
    let got = channel
        .basic_get(short(queue)?, BasicGetOptions { no_ack: false })
        .answered(broker)
        .await
        .map_err(|e| queue_error(broker, queue, e))?;
    Ok(got.map(|m| m.delivery))
}

pub(crate) struct Hold<'a> {
    broker: &'a Broker,
    channel: Channel,
    queue: String,
    /// The highest delivery tag that is held and not removed; 0 when none.
    last_kept: u64,
    /// Messages fetched so far, and whether the last one was a redelivery.
    taken: u64,
    last_redelivered: bool,
}

/// What happened to a message the user asked to remove.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Removal {
    Removed,
    /// The broker had already taken it back (channel or connection closed, consumer timeout).
    TakenBack(String),
    /// The channel closed right after the ack: it may or may not have been removed.
    Unsure(String),
}

impl<'a> Hold<'a> {
    pub(crate) async fn open(broker: &'a Broker, queue: &str) -> Result<Hold<'a>> {
        Ok(Hold {
            broker,
            channel: broker.channel().await?,
            queue: queue.to_string(),
            last_kept: 0,
            taken: 0,
            last_redelivered: false,
        })
    }

    /// The next message at the head (after those already held), or None when there is none.
    pub(crate) async fn next(&mut self) -> Result<Option<Delivery>> {
        let got = get_one(self.broker, &self.channel, &self.queue).await?;
        if let Some(d) = &got {
            self.taken += 1;
            self.last_redelivered = d.redelivered;
        }
        Ok(got)
    }

    /// Before giving back what is kept: takes, and keeps, as many more messages as `requeue`
    /// needs for the queue to keep its order (see [`order_goal`]; `depth` is the count at the
    /// start). With `guard`, stops at a message within `quorum::MARGIN` of that delivery-limit and
    /// returns its position and delivery count.
    pub(crate) async fn keep_order(
        &mut self,
        requeue: Requeue,
        depth: u64,
        guard: Option<i64>,
    ) -> Result<Option<(u64, i64)>> {
        if self.last_kept == 0 || self.lost_reason().is_some() {
            return Ok(None);
        }
        let goal = order_goal(requeue, self.taken, depth, self.last_redelivered);
        while self.taken < goal {
            let Some(d) = self.next().await? else {
                break;
            };
            self.keep(d.delivery_tag);
            let count = quorum::delivery_count(d.properties.headers().as_ref());
            if guard.is_some_and(|limit| quorum::near_limit(count, limit)) && self.taken < goal {
                return Ok(Some((self.taken, count.unwrap_or(0))));
            }
            if ends_order_read(requeue, &d) {
                break;
            }
        }
        Ok(None)
    }

    /// Why the held deliveries are no longer held, if they are not: the broker requeues every
    /// unacked delivery when it closes the channel or connection (e.g. after consumer_timeout).
    pub(crate) fn lost_reason(&self) -> Option<String> {
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
    pub(crate) async fn remove(&mut self, delivery_tag: u64) -> Removal {
        if let Some(why) = self.lost_reason() {
            return Removal::TakenBack(why);
        }
        if let Err(e) = self
            .channel
            .basic_ack(delivery_tag, BasicAckOptions { multiple: false })
            .answered(self.broker)
            .await
        {
            return Removal::TakenBack(short_reason(&e));
        }
        match self
            .channel
            .basic_qos(0, BasicQosOptions::default())
            .answered(self.broker)
            .await
        {
            Ok(()) => Removal::Removed,
            Err(e) => Removal::Unsure(short_reason(&e)),
        }
    }

    /// Leaves this delivery in the queue; it is given back, in place, by [`Hold::give_back`].
    pub(crate) fn keep(&mut self, delivery_tag: u64) {
        self.last_kept = self.last_kept.max(delivery_tag);
    }

    /// One multiple nack for everything kept, then close the channel.
    pub(crate) async fn give_back(self) -> Result<()> {
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
                .answered(self.broker)
                .await
                .map_err(|e| self.broker.lost(e))?;
        }
        self.channel
            .close(200, "peeked".into())
            .answered(self.broker)
            .await
            .map_err(|e| self.broker.lost(e))
    }
}
