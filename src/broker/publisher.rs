//! Publishing with confirms, many in flight: each publish is settled (confirmed, returned,
//! nacked) in order, so a caller acks a source only after its copy is safe.

use std::collections::VecDeque;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation, PublisherConfirm};

use super::amqp::short;
use super::Broker;
use crate::error::Result;

/// How many publishes may await their confirm at once.
pub const WINDOW: usize = 512;

/// The fate of one publish, identified by the caller's key (a delivery tag, a line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Settled {
    Confirmed(u64),
    /// Unroutable with `mandatory`: no such queue. The reason is the broker's reply.
    Returned(u64, String),
    Nacked(u64),
}

pub struct ConfirmedPublisher<'b> {
    broker: &'b Broker,
    channel: Channel,
    in_flight: VecDeque<(u64, PublisherConfirm)>,
}

impl<'b> ConfirmedPublisher<'b> {
    pub async fn open(broker: &'b Broker) -> Result<ConfirmedPublisher<'b>> {
        let channel = broker.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(|e| broker.lost(e))?;
        Ok(ConfirmedPublisher {
            broker,
            channel,
            in_flight: VecDeque::new(),
        })
    }

    /// Publishes to the default exchange with routing key `queue`, `mandatory` set. Returns the
    /// publishes settled to keep the window: the caller must act on each.
    pub async fn publish(
        &mut self,
        key: u64,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<Vec<Settled>> {
        let confirm = self
            .channel
            .basic_publish(
                "".into(),
                short(queue)?,
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                props,
            )
            .await
            .map_err(|e| self.broker.lost(e))?;
        self.in_flight.push_back((key, confirm));
        let mut settled = Vec::new();
        // Settle half the window at a time: the caller acks a batch with one multiple ack.
        while self.in_flight.len() >= WINDOW
            || (!settled.is_empty() && self.in_flight.len() > WINDOW / 2)
        {
            settled.push(self.settle_one().await?);
        }
        Ok(settled)
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Waits for every publish still in flight.
    pub async fn flush(&mut self) -> Result<Vec<Settled>> {
        let mut settled = Vec::new();
        while !self.in_flight.is_empty() {
            settled.push(self.settle_one().await?);
        }
        Ok(settled)
    }

    async fn settle_one(&mut self) -> Result<Settled> {
        let Some((key, confirm)) = self.in_flight.pop_front() else {
            unreachable!("settle_one is only called with publishes in flight")
        };
        let confirmation = confirm.await.map_err(|e| self.broker.lost(e))?;
        Ok(classify(key, confirmation))
    }

    pub async fn close(self) {
        let _ = self.channel.close(200, "done".into()).await;
    }
}

/// `Ack(None)` is the only success: with `mandatory`, an unroutable message is acked too, with
/// the returned message attached (312 NO_ROUTE).
pub fn classify(key: u64, c: Confirmation) -> Settled {
    match c {
        Confirmation::Ack(None) => Settled::Confirmed(key),
        Confirmation::Ack(Some(returned)) => {
            let reason = format!(
                "{} {} for queue \"{}\"",
                returned.reply_code, returned.reply_text, returned.delivery.routing_key
            );
            Settled::Returned(key, reason)
        }
        // NotRequested cannot happen after confirm_select; if it did, nothing proves the copy safe.
        Confirmation::Nack(_) | Confirmation::NotRequested => Settled::Nacked(key),
    }
}
