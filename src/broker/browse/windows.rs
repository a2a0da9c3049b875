//! A browse's windows: one consumer per window, sized in bytes, and the runs of delivery tags
//! that each consumer got, which is how a browse is given back.

use std::pin::Pin;
use std::task::Poll;

use lapin::message::Delivery;
use lapin::{Channel, Consumer};

use super::{cancel_collect, prefetch_for, start_consumer};
use crate::broker::Broker;
use crate::error::Result;

/// At most this many deliveries per consumer. A browse of up to this many small messages uses one
/// consumer (the fastest way: measured here, more consumers cost about 10 % in speed); a bigger
/// one holds at most one window ahead in memory when the output is slow.
pub const WINDOW: u64 = 20_000;

/// What one window may hold, in bytes: the broker pushes a whole window ahead of the reader, and
/// lapin buffers it, so windows are sized from the largest message seen (one open at a time).
pub(crate) const WINDOW_BYTES: usize = 10 << 20;

/// The first window, before any message size is known: small, in case messages are big.
const FIRST_WINDOW: u64 = 8;

/// Deliveries per window for messages up to `largest` bytes (0: nothing seen yet).
pub(super) fn window_for(largest: usize) -> u64 {
    if largest == 0 {
        return FIRST_WINDOW;
    }
    ((WINDOW_BYTES / largest.max(512)) as u64).clamp(1, WINDOW)
}

/// Runs of consecutive delivery tags that went to one consumer, in tag order: (consumer, last tag).
///
/// A quorum queue takes back the messages of one multiple nack consumer by consumer (measured on
/// 3.10.8: a 10-message browse over windows of 8 and 2 came back as m8, m9, m0…m7), so a browse
/// over several consumers gives back one run at a time, in tag order: one multiple nack per run.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Runs(Vec<(u64, u64)>);

impl Runs {
    /// Adds the delivery `tag` of `consumer`; tags must come in increasing order.
    pub(crate) fn push(&mut self, consumer: u64, tag: u64) {
        match self.0.last_mut() {
            Some((c, last)) if *c == consumer => *last = tag,
            _ => self.0.push((consumer, tag)),
        }
    }

    /// The tag each multiple nack names, in order.
    pub(crate) fn last_tags(&self) -> impl Iterator<Item = u64> + '_ {
        self.0.iter().map(|&(_, tag)| tag)
    }
}

/// One consumer and its share of the browse.
struct Window {
    /// Numbers the consumers of one browse.
    id: u64,
    consumer: Consumer,
    size: u64,
    received: u64,
    /// A delivery taken from the stream ahead of its turn.
    head: Option<Delivery>,
}

/// The open consumers. The broker numbers deliveries on a channel 1, 2, 3… in the order it sends
/// them, which is queue order, so reading by delivery tag merges the consumers' streams back into
/// queue order however the broker spread messages over them.
#[derive(Default)]
pub(super) struct Windows {
    open: Vec<Window>,
    /// Messages covered by the windows opened so far.
    pub(super) opened: u64,
    /// The delivery tag handed out last.
    last_read: u64,
    /// The largest body read so far, in bytes.
    pub(super) largest: usize,
    /// Every delivery received, handed out or not, by consumer: what is given back at the end.
    pub(super) runs: Runs,
    /// Deliveries buffered when their consumer was cancelled, never handed out: (tag, consumer).
    unread: Vec<(u64, u64)>,
    opened_consumers: u64,
}

impl Windows {
    pub(super) async fn open(
        &mut self,
        broker: &Broker,
        channel: &Channel,
        queue: &str,
        size: u64,
    ) -> Result<()> {
        let consumer = start_consumer(broker, channel, queue, prefetch_for(size)).await?;
        self.opened_consumers += 1;
        self.open.push(Window {
            id: self.opened_consumers,
            consumer,
            size,
            received: 0,
            head: None,
        });
        self.opened += size;
        Ok(())
    }

    /// Whether every open consumer has received its whole window: the broker sends them nothing
    /// more, so a new consumer gets every delivery from here on.
    pub(super) fn all_delivered(&self) -> bool {
        self.open.iter().all(|w| w.received >= w.size)
    }

    /// The delivery that follows the last one read, from whichever consumer it went to. `None`
    /// when a consumer was cancelled by the broker.
    pub(super) async fn next_in_order(&mut self) -> Option<lapin::Result<Delivery>> {
        let want = self.last_read + 1;
        loop {
            if let Some(w) = self
                .open
                .iter_mut()
                .find(|w| w.head.as_ref().is_some_and(|d| d.delivery_tag == want))
            {
                self.last_read = want;
                self.runs.push(w.id, want);
                return w.head.take().map(Ok);
            }
            // The wanted delivery can only come from a consumer with nothing held ahead.
            let (i, item) = std::future::poll_fn(|cx| {
                for (i, w) in self.open.iter_mut().enumerate() {
                    if w.head.is_some() || w.received >= w.size {
                        continue;
                    }
                    if let Poll::Ready(item) =
                        futures_core::Stream::poll_next(Pin::new(&mut w.consumer), cx)
                    {
                        return Poll::Ready((i, item));
                    }
                }
                Poll::Pending
            })
            .await;
            match item? {
                Ok(d) => {
                    let w = &mut self.open[i];
                    w.received += 1;
                    w.head = Some(d);
                }
                Err(e) => return Some(Err(e)),
            }
        }
    }

    /// Cancels the consumers whose whole window was read: the broker sends them nothing more.
    pub(super) async fn close_finished(
        &mut self,
        broker: &Broker,
        channel: &Channel,
    ) -> Result<()> {
        while let Some(i) = self
            .open
            .iter()
            .position(|w| w.received >= w.size && w.head.is_none())
        {
            let w = self.open.swap_remove(i);
            self.close(broker, channel, w).await?;
        }
        Ok(())
    }

    /// Cancels every consumer, then adds what was received and not handed out to the runs.
    pub(super) async fn close_all(&mut self, broker: &Broker, channel: &Channel) -> Result<()> {
        for w in std::mem::take(&mut self.open) {
            self.close(broker, channel, w).await?;
        }
        let mut unread = std::mem::take(&mut self.unread);
        unread.sort_unstable();
        for (tag, consumer) in unread {
            self.runs.push(consumer, tag);
        }
        Ok(())
    }

    async fn close(&mut self, broker: &Broker, channel: &Channel, mut w: Window) -> Result<()> {
        if let Some(d) = w.head.take() {
            self.unread.push((d.delivery_tag, w.id));
        }
        let tags = cancel_collect(broker, channel, &mut w.consumer, true).await?;
        self.unread.extend(tags.into_iter().map(|tag| (tag, w.id)));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_bounded_in_bytes() {
        assert_eq!(window_for(0), FIRST_WINDOW);
        assert_eq!(window_for(1024), 10_240);
        assert_eq!(window_for(100), WINDOW);
        assert_eq!(window_for(1 << 20), 10);
        assert_eq!(window_for(64 << 20), 1);
    }

    #[test]
    fn runs_split_where_the_consumer_changes() {
        let mut runs = Runs::default();
        for (consumer, tag) in [(1, 1), (1, 2), (1, 3), (2, 4), (2, 5), (1, 6), (3, 7)] {
            runs.push(consumer, tag);
        }
        assert_eq!(runs.last_tags().collect::<Vec<_>>(), vec![3, 5, 6, 7]);
        assert_eq!(Runs::default().last_tags().count(), 0);
    }
}
