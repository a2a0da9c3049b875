//! Reading a queue from its head without losing anything: look at no more than the messages
//! present at the start, ack only what the caller has made safe, requeue the rest in one nack.

use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::BasicAckOptions;
use lapin::{Channel, Consumer};

use super::browse;
use super::{next, Broker};
use crate::error::Result;

/// How long to wait for a delivery before deciding the rest went elsewhere (another consumer).
const IDLE: Duration = Duration::from_secs(2);

pub struct QueueReader<'b> {
    broker: &'b Broker,
    channel: Channel,
    consumer: Option<Consumer>,
    pub queue: String,
    /// Messages in the queue when reading started.
    pub depth: u64,
    /// How many messages will be looked at: the depth, capped by the limit.
    pub budget: u64,
    seen: u64,
    max_tag: u64,
    acked: u64,
}

impl<'b> QueueReader<'b> {
    /// A missing queue is a runtime error naming it; it is never created.
    pub async fn open(
        broker: &'b Broker,
        queue: &str,
        limit: Option<u64>,
    ) -> Result<QueueReader<'b>> {
        Self::open_with(broker, queue, limit, None).await
    }

    /// `prefetch_cap`: for callers that ack (or stop at) every message they look at, so no message
    /// stays unacked to fill the window; it bounds what the broker pushes ahead, and so memory.
    pub async fn open_with(
        broker: &'b Broker,
        queue: &str,
        limit: Option<u64>,
        prefetch_cap: Option<u16>,
    ) -> Result<QueueReader<'b>> {
        let depth = browse::open_queue(broker, queue).await?.messages as u64;
        let budget = limit.map_or(depth, |l| l.min(depth));
        let channel = broker.channel().await?;
        let mut reader = QueueReader {
            broker,
            channel,
            consumer: None,
            queue: queue.to_string(),
            depth,
            budget,
            seen: 0,
            max_tag: 0,
            acked: 0,
        };
        if budget > 0 {
            // Every message looked at may stay unacked until the end, so the prefetch must hold
            // them all: the budget when it fits basic.qos's 16 bits, else unlimited.
            let prefetch = match prefetch_cap {
                Some(cap) => cap.min(budget.min(u16::MAX as u64) as u16),
                None => browse::prefetch_for(budget),
            };
            let consumer = browse::start_consumer(broker, &reader.channel, queue, prefetch).await?;
            reader.consumer = Some(consumer);
        }
        Ok(reader)
    }

    /// The next message and its 1-based position, or `None` once the budget is looked at.
    pub async fn next(&mut self) -> Result<Option<(u64, Delivery)>> {
        if self.seen >= self.budget {
            return Ok(None);
        }
        let Some(consumer) = self.consumer.as_mut() else {
            return Ok(None);
        };
        match tokio::time::timeout(IDLE, next(consumer)).await {
            Err(_) | Ok(None) => Ok(None),
            Ok(Some(Err(e))) => Err(self.broker.lost(e)),
            Ok(Some(Ok(d))) => {
                self.seen += 1;
                self.max_tag = self.max_tag.max(d.delivery_tag);
                Ok(Some((self.seen, d)))
            }
        }
    }

    /// Removes every unacked message up to `delivery_tag` (`count` of them) in one frame; call
    /// only when each of them is safe to remove.
    pub async fn ack_up_to(&mut self, delivery_tag: u64, count: u64) -> Result<()> {
        self.channel
            .basic_ack(delivery_tag, BasicAckOptions { multiple: true })
            .await
            .map_err(|e| self.broker.lost(e))?;
        self.acked += count;
        Ok(())
    }

    pub fn seen(&self) -> u64 {
        self.seen
    }

    /// Removes one message from the queue: call only once what replaces it is safe.
    pub async fn ack(&mut self, delivery_tag: u64) -> Result<()> {
        self.channel
            .basic_ack(delivery_tag, BasicAckOptions { multiple: false })
            .await
            .map_err(|e| self.broker.lost(e))?;
        self.acked += 1;
        Ok(())
    }

    /// Stops the consumer and puts every unacked message back where it was: cancel first, take in
    /// what is still buffered, then one multiple nack with requeue.
    pub async fn finish(mut self) -> Result<()> {
        if let Some(mut consumer) = self.consumer.take() {
            let buffered = browse::cancel(self.broker, &self.channel, &mut consumer).await?;
            self.max_tag = self.max_tag.max(buffered);
        }
        // A multiple nack of a tag that is already acked would be refused (406), so only when
        // something is still held.
        let last = if self.acked < self.max_tag {
            self.max_tag
        } else {
            0
        };
        browse::give_back(self.broker, &self.channel, last).await?;
        // The broker requeues in batches: wait until the count is back, so that a command run
        // right after this one sees every message that stayed.
        if self.max_tag > self.acked {
            let stayed = self.depth.saturating_sub(self.acked).min(u32::MAX as u64) as u32;
            super::browse::settle(self.broker, &self.queue, stayed).await?;
        }
        Ok(())
    }
}
