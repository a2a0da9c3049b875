//! A browse's windows: one consumer per window, each on its own channel, sized in bytes; a
//! browse is given back window by window.

use lapin::message::Delivery;
use lapin::{Channel, Consumer};

use super::{cancel_collect, prefetch_for, start_consumer};
use crate::broker::{next, Broker};
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

/// At most this many windows get a channel of their own (fewer when the broker's `channel_max`
/// allows fewer, see [`Broker::channels_for_reading`]); later ones share the last. Only big messages need so many windows: 1,000
/// windows of 10 MiB are 10 GB.
const MAX_CHANNELS: usize = 1_000;

/// One consumer, on its own channel, and its share of the browse.
struct Window {
    channel: Channel,
    /// None once cancelled (what it had buffered was taken in).
    consumer: Option<Consumer>,
    size: u64,
    received: u64,
    /// The highest delivery tag received on the window's channel: what its give-back names.
    last_tag: u64,
}

/// The windows of a browse, in queue order. The next window opens only once every open one has
/// been delivered in full, so window `k + 1` holds the messages after all of window `k`'s, and
/// reading the windows one after the other reads the queue in order.
///
/// Each window has its own channel, so that each can be given back on its own, in either order
/// (see [`super::GiveBack`]): the broker's per-channel bookkeeping of unacked deliveries is walked
/// from the front to find the ones given back (`subtract_acks` in rabbit_queue_consumers.erl),
/// so on one shared channel giving back the last window first would walk every earlier window's.
#[derive(Default)]
pub(super) struct Windows {
    all: Vec<Window>,
    /// The window being read.
    reading: usize,
    /// The first window whose consumer may still need a cancel.
    uncancelled: usize,
    /// Messages covered by the windows opened so far.
    pub(super) opened: u64,
    /// The largest body read so far, in bytes.
    pub(super) largest: usize,
}

impl Windows {
    pub(super) async fn open(&mut self, broker: &Broker, queue: &str, size: u64) -> Result<()> {
        let channel = match self.all.last() {
            Some(last) if self.all.len() >= MAX_CHANNELS.min(broker.channels_for_reading()) => {
                last.channel.clone()
            }
            _ => broker.channel().await?,
        };
        let consumer = start_consumer(broker, &channel, queue, prefetch_for(size)).await?;
        self.all.push(Window {
            channel,
            consumer: Some(consumer),
            size,
            received: 0,
            last_tag: 0,
        });
        self.opened += size;
        Ok(())
    }

    /// Whether every open consumer has received its whole window: the broker sends them nothing
    /// more, so a new consumer gets every delivery from here on.
    pub(super) fn all_delivered(&self) -> bool {
        self.all.iter().all(|w| w.received >= w.size)
    }

    /// The next delivery in queue order. `None` when the broker cancelled the consumer (the queue
    /// was deleted) or the connection closed; pending while no open window has more to come.
    pub(super) async fn next_in_order(&mut self) -> Option<lapin::Result<Delivery>> {
        while self
            .all
            .get(self.reading)
            .is_some_and(|w| w.received >= w.size && self.reading + 1 < self.all.len())
        {
            self.reading += 1;
        }
        let Some(w) = self.all.get_mut(self.reading) else {
            return std::future::pending().await;
        };
        let Some(consumer) = w.consumer.as_mut().filter(|_| w.received < w.size) else {
            return std::future::pending().await;
        };
        let item = next(consumer).await?;
        if let Ok(d) = &item {
            w.received += 1;
            w.last_tag = w.last_tag.max(d.delivery_tag);
        }
        Some(item)
    }

    /// Cancels the consumers whose whole window was delivered: the broker sends them nothing
    /// more, and nothing given back later is sent to them again.
    pub(super) async fn close_finished(&mut self, broker: &Broker) -> Result<()> {
        while let Some(w) = self.all.get_mut(self.uncancelled) {
            if w.received < w.size {
                break;
            }
            cancel(broker, w).await?;
            self.uncancelled += 1;
        }
        Ok(())
    }

    /// Cancels every consumer and takes in what they had buffered, then gives every window back,
    /// the last window first when `last_first` (see [`give_back_plan`]).
    pub(super) async fn give_back(mut self, broker: &Broker, last_first: bool) -> Result<()> {
        for w in &mut self.all {
            if w.consumer.is_some() {
                cancel(broker, w).await?;
            }
        }
        let windows: Vec<(u16, u64)> = self
            .all
            .iter()
            .map(|w| (w.channel.id(), w.last_tag))
            .collect();
        for step in give_back_plan(&windows, last_first) {
            let channel = &self.all[step.window].channel;
            match step.action {
                Action::Nack(tag) => super::nack_upto(broker, channel, tag).await?,
                Action::Close => super::close(broker, channel).await?,
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    /// basic.nack(multiple, requeue) up to this tag.
    Nack(u64),
    /// Close the channel (which waits for the broker to have taken its nacks).
    Close,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Step {
    /// The window whose channel the action is on.
    window: usize,
    action: Action,
}

/// The give-back of windows given as (channel id, highest tag received), in queue order (pure).
/// Each channel is closed after its last nack, before the next channel's first.
/// - In queue order: one multiple nack per window, so that windows sharing a channel still go
///   back one at a time, in order (a quorum queue keeps the order it gets them in).
/// - Last first: one multiple nack per channel, naming its highest tag (a nack naming a tag
///   already given back would be refused), channels from the last to the first.
fn give_back_plan(windows: &[(u16, u64)], last_first: bool) -> Vec<Step> {
    let mut order: Vec<usize> = (0..windows.len()).collect();
    if last_first {
        order.reverse();
    }
    let mut steps = Vec::new();
    for (i, &w) in order.iter().enumerate() {
        let (channel, tag) = windows[w];
        let first_of_channel = i == 0 || windows[order[i - 1]].0 != channel;
        if tag > 0 && (!last_first || first_of_channel) {
            steps.push(Step {
                window: w,
                action: Action::Nack(tag),
            });
        }
        let last_of_channel = order.get(i + 1).is_none_or(|&n| windows[n].0 != channel);
        if last_of_channel {
            steps.push(Step {
                window: w,
                action: Action::Close,
            });
        }
    }
    steps
}

/// Cancels a window's consumer; what it had buffered counts as received (given back with it).
async fn cancel(broker: &Broker, w: &mut Window) -> Result<()> {
    if let Some(mut consumer) = w.consumer.take() {
        let tags = cancel_collect(broker, &w.channel, &mut consumer, true).await?;
        w.received += tags.len() as u64;
        w.last_tag = tags.into_iter().fold(w.last_tag, u64::max);
    }
    Ok(())
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

    fn nack(window: usize, tag: u64) -> Step {
        Step {
            window,
            action: Action::Nack(tag),
        }
    }

    fn close(window: usize) -> Step {
        Step {
            window,
            action: Action::Close,
        }
    }

    #[test]
    fn windows_on_their_own_channels_go_back_one_channel_at_a_time() {
        let windows = [(1, 8), (2, 10_240), (3, 10_240)];
        assert_eq!(
            give_back_plan(&windows, false),
            vec![
                nack(0, 8),
                close(0),
                nack(1, 10_240),
                close(1),
                nack(2, 10_240),
                close(2)
            ]
        );
        assert_eq!(
            give_back_plan(&windows, true),
            vec![
                nack(2, 10_240),
                close(2),
                nack(1, 10_240),
                close(1),
                nack(0, 8),
                close(0)
            ]
        );
    }

    #[test]
    fn windows_sharing_the_last_channel_go_back_in_order_or_with_one_nack() {
        // Windows 1 to 3 share channel 2 (past MAX_CHANNELS); tags go on counting on it.
        let windows = [(1, 8), (2, 10), (2, 20), (2, 30)];
        assert_eq!(
            give_back_plan(&windows, false),
            vec![
                nack(0, 8),
                close(0),
                nack(1, 10),
                nack(2, 20),
                nack(3, 30),
                close(3)
            ]
        );
        assert_eq!(
            give_back_plan(&windows, true),
            vec![nack(3, 30), close(1), nack(0, 8), close(0)]
        );
    }

    #[test]
    fn a_window_that_received_nothing_is_only_closed() {
        assert_eq!(give_back_plan(&[(1, 0)], true), vec![close(0)]);
        assert_eq!(
            give_back_plan(&[(1, 5), (2, 0)], false),
            vec![nack(0, 5), close(0), close(1)]
        );
        assert_eq!(give_back_plan(&[], true), vec![]);
    }
}
