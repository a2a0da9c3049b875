//! Non-destructive reading of a queue: consume without acking, cancel, then give every delivery back
//! with one multiple nack (requeue) per window, so the queue keeps its messages in their order.
//! Also the one-at-a-time reads used where each delivery costs something (a quorum queue's
//! delivery-limit) and by `peek --pop`, where only the confirmed message is acked.

use crate::broker::watch::Answered;
use std::ops::ControlFlow;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use super::amqp::{short, QueueCounts, Reply};
use super::quorum::{self, Requeue};
use super::{amqp_error, next, short_reason, Broker};
use crate::error::{Error, Result};
use crate::util::printable;

mod hold;
mod settle;
mod windows;

pub(crate) use hold::{get_one, Hold, Removal};
pub(crate) use settle::{settle, StillReturning};
use windows::window_for;
use windows::Windows;
pub use windows::WINDOW;

/// A browse ends when nothing arrived for this long, in case another consumer took some messages.
pub(crate) const IDLE: Duration = Duration::from_secs(2);

/// Why a browse stopped reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum End {
    /// As many messages as asked for (or as the queue held at the start) were read.
    Done,
    /// The caller asked to stop (e.g. stdout was closed).
    Stopped,
    /// The broker cancelled the consumer (the queue was deleted).
    Cancelled,
    /// The queue ran out before the count it had at the start (another consumer took some).
    RanOut,
    /// Ctrl-C.
    Interrupted,
    /// The message at `position` is within `quorum::MARGIN` of its delivery-limit: it was shown
    /// and reading stopped there, so nothing behind it was delivered (and counted) at all.
    NearLimit {
        position: u64,
        delivery_count: i64,
        limit: i64,
    },
}

/// What a browse did; by the time it is returned every delivery has been given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Browsed {
    /// Ready messages when the browse started.
    pub depth: u32,
    /// Deliveries handed to the caller.
    pub read: u64,
    pub end: End,
    /// Set when the wait for the given-back messages to be ready again gave up.
    pub returning: Option<StillReturning>,
}

/// How a read gives back what it held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct GiveBack {
    /// Where a returned message goes.
    pub requeue: Requeue,
    /// Give back the last part of the read first: only for a queue known to put each message back
    /// in its place (a classic queue), where the order of the give-back does not change the
    /// queue's order but costs the broker a lot. A classic queue merges each requeued batch
    /// into its in-memory head by walking it from the front (`requeue_merge` in 4.x's
    /// rabbit_variable_queue.erl, `queue_merge` in 3.10's), past every message requeued before
    /// with a lower sequence id: given back front part first, the 98 windows of a 1,000,000
    /// message `list` took the broker 25 s and more on 4.3.6; given back last part first, each
    /// part is put in front of the ones before it without walking them.
    pub last_first: bool,
}

/// Passive declare: the queue's counts, or an error naming it. Never creates the queue.
pub(crate) async fn open_queue(broker: &Broker, queue: &str) -> Result<QueueCounts> {
    match broker.probe_queue(queue).await? {
        Reply::Ok(counts) => Ok(counts),
        Reply::NotFound(_) => Err(not_found(broker, queue)),
        Reply::Refused(why) => Err(Error::runtime(format!(
            "cannot read queue \"{}\": {why}",
            printable(queue)
        ))),
    }
}

/// After a quiet spell: does the queue still hold ready messages? (A slow broker is waited for;
/// only an empty or missing queue ends a read early.)
pub(crate) async fn anything_ready(broker: &Broker, queue: &str) -> Result<bool> {
    Ok(matches!(broker.probe_queue(queue).await?, Reply::Ok(c) if c.messages > 0))
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

/// Sets the prefetch, then starts a consumer on `queue` (a per-consumer prefetch applies to
/// consumers started after it is set). A 404 or 403 names the queue.
pub(crate) async fn start_consumer(
    broker: &Broker,
    channel: &Channel,
    queue: &str,
    prefetch: u16,
) -> Result<Consumer> {
    set_prefetch(broker, channel, prefetch).await?;
    start_consuming(broker, channel, queue).await
}

/// basic.qos for the consumers started on `channel` from now on.
pub(crate) async fn set_prefetch(broker: &Broker, channel: &Channel, prefetch: u16) -> Result<()> {
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .answered(broker)
        .await
        .map_err(|e| broker.lost(e))
}

/// A consumer on `queue` with the channel's prefetch; a missing queue is named.
pub(crate) async fn start_consuming(
    broker: &Broker,
    channel: &Channel,
    queue: &str,
) -> Result<Consumer> {
    channel
        .basic_consume(
            short(queue)?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .answered(broker)
        .await
        .map_err(|e| queue_error(broker, queue, e))
}

/// The prefetch that lets `target` deliveries arrive unacked: the count itself when it fits
/// AMQP's 16 bits, else 0 (unlimited). A smaller prefetch would stall the browse.
pub(crate) fn prefetch_for(target: u64) -> u16 {
    u16::try_from(target).unwrap_or(0)
}

/// Reads up to `limit` messages (all that were ready at the start when `None`) and hands each to
/// `on_message` with its 1-based position. Never acks or rejects: everything read goes back to
/// the queue with one `basic.nack(multiple, requeue)`.
///
/// With `delivery_limit` (a quorum queue where every delivery counts toward it), messages are
/// fetched one at a time and reading stops at the first one within `quorum::MARGIN` of the limit:
/// a consumer would already have been sent, and so counted, everything behind it.
///
/// A read that ends before the end of the queue goes on, without showing anything, as far as
/// `requeue` needs for the queue to keep its order once everything is given back (a quorum queue
/// does not put a returned message back in its place: see [`order_goal`]).
pub(crate) async fn browse(
    broker: &Broker,
    queue: &str,
    depth: u32,
    limit: Option<u64>,
    delivery_limit: Option<i64>,
    give_back: GiveBack,
    on_message: impl FnMut(u64, &Delivery) -> ControlFlow<()>,
) -> Result<Browsed> {
    let target = limit.map_or(u64::from(depth), |l| l.min(u64::from(depth)));
    let browsed = Browsed {
        depth,
        read: 0,
        end: End::Done,
        returning: None,
    };
    let read = Read {
        target,
        depth: u64::from(depth),
        give_back,
    };
    let mut browsed = match delivery_limit {
        _ if target == 0 => return Ok(browsed),
        Some(limit) => fetch_each(broker, queue, read, limit, browsed, on_message).await?,
        None => consume(broker, queue, read, browsed, on_message).await?,
    };
    if browsed.read > 0 {
        browsed.returning = settle(broker, queue, depth).await?;
    }
    Ok(browsed)
}

/// What a browse sets out to do.
#[derive(Debug, Clone, Copy)]
struct Read {
    /// Deliveries to hand to the caller.
    target: u64,
    /// Ready messages at the start.
    depth: u64,
    give_back: GiveBack,
}

/// Once the caller's part of a read is over after `taken` deliveries (the last one redelivered or
/// not), how many deliveries in all the read must take so that giving them back leaves the queue
/// in its order. Nothing is shown from the extra ones.
/// - In place (classic): none more.
/// - Back (quorum before 4.0): the whole queue, so that all of it goes to the back in order.
/// - Returns (quorum from 4.0): while the last delivery was a redelivery, the FIFO of returned
///   messages served first is not read to its end; read on to the first fresh delivery (at most
///   the whole queue), so that it all goes back into that FIFO in order.
pub(crate) fn order_goal(requeue: Requeue, taken: u64, depth: u64, last_redelivered: bool) -> u64 {
    match requeue {
        Requeue::InPlace => taken,
        Requeue::Back => taken.max(depth),
        Requeue::Returns if last_redelivered => taken.max(depth),
        Requeue::Returns => taken,
    }
}

/// Whether a delivery taken only to keep the order ends that extra read early: the first fresh
/// delivery after a quorum queue's returned messages.
fn ends_order_read(requeue: Requeue, delivery: &Delivery) -> bool {
    requeue == Requeue::Returns && !delivery.redelivered
}

/// The bookkeeping of a read that may go on past the caller's part to keep the queue's order.
struct Progress {
    /// Deliveries taken, shown or not.
    taken: u64,
    /// Deliveries to take in all.
    goal: u64,
    last_redelivered: bool,
    /// Set when the caller's part is over: why; from then on nothing more is shown.
    caller_end: Option<End>,
}

impl Progress {
    fn new(target: u64) -> Progress {
        Progress {
            taken: 0,
            goal: target,
            last_redelivered: false,
            caller_end: None,
        }
    }

    /// The caller's part ended: decide how much more to read for the order.
    fn end_caller(&mut self, end: End, read: Read) {
        if self.caller_end.is_none() {
            self.caller_end = Some(end);
            self.goal = order_goal(
                read.give_back.requeue,
                self.taken,
                read.depth,
                self.last_redelivered,
            );
        }
    }

    /// Counts one delivery; true when it is the caller's to see.
    fn take(&mut self, delivery: &Delivery, read: Read) -> bool {
        self.taken += 1;
        self.last_redelivered = delivery.redelivered;
        if self.caller_end.is_some() && ends_order_read(read.give_back.requeue, delivery) {
            self.goal = self.taken;
        }
        self.caller_end.is_none()
    }

    /// Once `shown` deliveries were handed to the caller: the end of the whole read, when it is
    /// over.
    fn over(&mut self, shown: u64, read: Read) -> Option<End> {
        if shown >= read.target {
            self.end_caller(End::Done, read);
        }
        self.finished()
    }

    /// The end of the whole read, when it is over.
    fn finished(&self) -> Option<End> {
        self.caller_end.filter(|_| self.taken >= self.goal)
    }
}

/// The fast way: consumers whose prefetch admits one window of messages each. Nothing is acked,
/// so a consumer stops receiving once its window is delivered. The windows bound what can pile
/// up in memory when the output is slow (a pager, a slow pipe), since lapin buffers every
/// delivery the broker sends. The next window opens once the broker has sent the whole current
/// one (one consume round trip per window), so one consumer at a time has credit and each
/// window's deliveries are consecutive tags, given back by one multiple nack.
async fn consume(
    broker: &Broker,
    queue: &str,
    read: Read,
    mut browsed: Browsed,
    mut on_message: impl FnMut(u64, &Delivery) -> ControlFlow<()>,
) -> Result<Browsed> {
    let mut windows = Windows::default();
    let mut progress = Progress::new(read.target);
    let _armed = crate::interrupt::arm();
    let interrupt = crate::interrupt::interrupted();
    tokio::pin!(interrupt);
    browsed.end = loop {
        if let Some(end) = progress.over(browsed.read, read) {
            break end;
        }
        // The next window opens once every open one has been delivered in full: consumers with
        // credit at the same time would share the deliveries round-robin, every other tag each,
        // and giving back such a browse takes one nack per message (on RabbitMQ 3.10 and 4.3 a
        // 20,000-message list then took 30-100 s to give back, against 0.1 s for one run).
        if windows.opened < progress.goal && windows.all_delivered() {
            let size = (progress.goal - windows.opened).min(window_for(windows.largest));
            windows.open(broker, queue, size).await?;
        }
        let listening = progress.caller_end.is_none();
        let next = tokio::select! {
            _ = &mut interrupt, if listening => {
                progress.end_caller(End::Interrupted, read);
                continue;
            }
            next = tokio::time::timeout(IDLE, windows.next_in_order()) => next,
        };
        let delivery = match next {
            // Quiet: a slow broker is waited for; only a queue with nothing ready ends the read.
            Err(_) if anything_ready(broker, queue).await? => continue,
            Err(_) => break progress.caller_end.unwrap_or(End::RanOut),
            Ok(None) => break End::Cancelled,
            Ok(Some(Err(e))) => return Err(broker.lost(e)),
            Ok(Some(Ok(d))) => d,
        };
        windows.largest = windows.largest.max(delivery.data.len());
        if progress.take(&delivery, read) {
            browsed.read += 1;
            if on_message(browsed.read, &delivery).is_break() {
                progress.end_caller(End::Stopped, read);
            }
        }
        windows.close_finished(broker).await?;
    };
    windows.give_back(broker, read.give_back.last_first).await?;
    Ok(browsed)
}

fn giving_back_failed(broker: &Broker, e: lapin::Error) -> Error {
    Error::with_cause(
        format!(
            "lost the connection to {} while giving the messages back ({}); the broker requeues them by itself",
            broker.url.redacted(),
            short_reason(&e)
        ),
        format!("{e:?}"),
    )
}

/// Cancel so nothing new arrives, and take what is already buffered: every buffered delivery's
/// tag; `send` false when the consumer was already cancelled and only its buffered deliveries
/// remain.
pub(crate) async fn cancel_collect(
    broker: &Broker,
    channel: &Channel,
    consumer: &mut Consumer,
    send: bool,
) -> Result<Vec<u64>> {
    if send {
        channel
            .basic_cancel(consumer.tag(), BasicCancelOptions::default())
            .answered(broker)
            .await
            .map_err(|e| giving_back_failed(broker, e))?;
    }
    let mut tags = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(IDLE, next(consumer)).await {
        tags.push(d.delivery_tag);
    }
    Ok(tags)
}

/// Nack everything up to the last tag at once, then close the channel, which waits for the
/// broker to have processed the nack.
pub(crate) async fn give_back(broker: &Broker, channel: &Channel, last_tag: u64) -> Result<()> {
    if last_tag > 0 {
        nack_upto(broker, channel, last_tag).await?;
    }
    close(broker, channel).await
}

/// basic.nack(multiple, requeue) of every unacked delivery on `channel` up to `tag`.
pub(crate) async fn nack_upto(broker: &Broker, channel: &Channel, tag: u64) -> Result<()> {
    channel
        .basic_nack(
            tag,
            BasicNackOptions {
                multiple: true,
                requeue: true,
            },
        )
        .answered(broker)
        .await
        .map_err(|e| giving_back_failed(broker, e))
}

/// Closes a channel after a give-back.
pub(crate) async fn close(broker: &Broker, channel: &Channel) -> Result<()> {
    channel
        .close(200, "browsed".into())
        .answered(broker)
        .await
        .map_err(|e| giving_back_failed(broker, e))
}

/// The careful way: basic.get, one message at a time, looking at each before taking the next.
async fn fetch_each(
    broker: &Broker,
    queue: &str,
    read: Read,
    delivery_limit: i64,
    mut browsed: Browsed,
    mut on_message: impl FnMut(u64, &Delivery) -> ControlFlow<()>,
) -> Result<Browsed> {
    let mut hold = Hold::open(broker, queue).await?;
    let mut progress = Progress::new(read.target);
    let _armed = crate::interrupt::arm();
    let interrupt = crate::interrupt::interrupted();
    tokio::pin!(interrupt);
    browsed.end = loop {
        if let Some(end) = progress.over(browsed.read, read) {
            break end;
        }
        let listening = progress.caller_end.is_none();
        let next = tokio::select! {
            _ = &mut interrupt, if listening => {
                progress.end_caller(End::Interrupted, read);
                continue;
            }
            next = hold.next() => next?,
        };
        let Some(delivery) = next else {
            break progress.caller_end.unwrap_or(End::RanOut);
        };
        hold.keep(delivery.delivery_tag);
        if progress.take(&delivery, read) {
            browsed.read += 1;
            if on_message(browsed.read, &delivery).is_break() {
                progress.end_caller(End::Stopped, read);
            }
        }
        let count = quorum::delivery_count(delivery.properties.headers().as_ref());
        let more_to_take = progress.caller_end.is_none() && browsed.read < read.target
            || progress.caller_end.is_some() && progress.taken < progress.goal;
        if quorum::near_limit(count, delivery_limit) && more_to_take {
            break End::NearLimit {
                position: progress.taken,
                delivery_count: count.unwrap_or(0),
                limit: delivery_limit,
            };
        }
    };
    hold.give_back().await?;
    Ok(browsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_goal_reads_on_only_where_a_return_does_not_go_back_in_place() {
        assert_eq!(order_goal(Requeue::InPlace, 3, 10, true), 3);
        assert_eq!(order_goal(Requeue::Back, 3, 10, false), 10);
        assert_eq!(order_goal(Requeue::Back, 10, 10, false), 10);
        assert_eq!(order_goal(Requeue::Returns, 3, 10, false), 3);
        assert_eq!(order_goal(Requeue::Returns, 3, 10, true), 10);
    }

    #[test]
    fn prefetch_covers_the_whole_browse_or_is_unlimited() {
        assert_eq!(prefetch_for(1), 1);
        assert_eq!(prefetch_for(65_535), 65_535);
        assert_eq!(prefetch_for(65_536), 0);
        assert_eq!(prefetch_for(1_000_000), 0);
    }
}
