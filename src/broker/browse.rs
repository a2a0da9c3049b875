//! Non-destructive reading of a queue: consume without acking, cancel, then give every delivery back
//! with ONE multiple nack (requeue), so the queue keeps its messages in their order. Also the
//! one-at-a-time reads used where each delivery costs something (a quorum queue's delivery-limit)
//! and by `peek --pop`, where only the confirmed message is acked.

use std::ops::ControlFlow;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicQosOptions,
};
use lapin::types::FieldTable;
use lapin::{Channel, Consumer};

use super::amqp::{short, QueueCounts, Reply};
use super::quorum::{self, Requeue};
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
    channel
        .basic_qos(prefetch, BasicQosOptions::default())
        .await
        .map_err(|e| broker.lost(e))?;
    channel
        .basic_consume(
            short(queue)?,
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| queue_error(broker, queue, e))
}

/// The prefetch that lets `target` deliveries arrive unacked: the count itself when it fits
/// AMQP's 16 bits, else 0 (unlimited). A smaller prefetch would stall the browse.
pub fn prefetch_for(target: u64) -> u16 {
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
pub async fn browse(
    broker: &Broker,
    queue: &str,
    depth: u32,
    limit: Option<u64>,
    delivery_limit: Option<i64>,
    requeue: Requeue,
    on_message: impl FnMut(u64, &Delivery) -> ControlFlow<()>,
) -> Result<Browsed> {
    let target = limit.map_or(u64::from(depth), |l| l.min(u64::from(depth)));
    let browsed = Browsed {
        depth,
        read: 0,
        end: End::Done,
    };
    let read = Read {
        target,
        depth: u64::from(depth),
        requeue,
    };
    let browsed = match delivery_limit {
        _ if target == 0 => return Ok(browsed),
        Some(limit) => fetch_each(broker, queue, read, limit, browsed, on_message).await?,
        None => consume(broker, queue, read, browsed, on_message).await?,
    };
    if browsed.read > 0 {
        settle(broker, queue, depth).await?;
    }
    Ok(browsed)
}

/// The broker requeues a big nack in batches (about 200 ms for 20,000 messages here; a quorum
/// queue on 3.10 showed 0 ready for about 3 s after giving back 100,000), and until it is done a
/// passive declare counts only part of the queue: a command started right after this one would
/// see too few messages. So wait until the count is back to where it was, or has come back and
/// stops rising (another consumer may be taking messages meanwhile).
pub(crate) async fn settle(broker: &Broker, queue: &str, depth: u32) -> Result<()> {
    let deadline = tokio::time::Instant::now() + SETTLE_MAX;
    let mut last = None;
    let mut unchanged = 0;
    while tokio::time::Instant::now() < deadline {
        let Reply::Ok(counts) = broker.probe_queue(queue).await? else {
            return Ok(());
        };
        if counts.messages >= depth {
            return Ok(());
        }
        // Nothing back yet is the broker still working, not a count that stopped rising.
        unchanged = if counts.messages > 0 && last == Some(counts.messages) {
            unchanged + 1
        } else {
            0
        };
        if unchanged >= STALLED_POLLS {
            return Ok(());
        }
        last = Some(counts.messages);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    Ok(())
}

/// How many 10 ms polls of an unchanged (non-zero) count [`settle`] takes for "stopped rising":
/// 1 s. The broker requeues in batches, and on a busy machine a pause between two of them
/// lasted more than 100 ms (a 45,000-message browse in CI stopped waiting at 20,713).
const STALLED_POLLS: u32 = 100;

/// The longest [`settle`] waits.
const SETTLE_MAX: Duration = Duration::from_secs(30);

/// What a browse sets out to do.
#[derive(Debug, Clone, Copy)]
struct Read {
    /// Deliveries to hand to the caller.
    target: u64,
    /// Ready messages at the start.
    depth: u64,
    requeue: Requeue,
}

/// Once the caller's part of a read is over after `taken` deliveries (the last one redelivered or
/// not), how many deliveries in all the read must take so that giving them back leaves the queue
/// in its order. Nothing is shown from the extra ones.
/// - In place (classic): none more.
/// - Back (quorum before 4.0): the whole queue, so that all of it goes to the back in order.
/// - Returns (quorum from 4.0): while the last delivery was a redelivery, the FIFO of returned
///   messages served first is not read to its end; read on to the first fresh delivery (at most
///   the whole queue), so that it all goes back into that FIFO in order.
pub fn order_goal(requeue: Requeue, taken: u64, depth: u64, last_redelivered: bool) -> u64 {
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
            self.goal = order_goal(read.requeue, self.taken, read.depth, self.last_redelivered);
        }
    }

    /// Counts one delivery; true when it is the caller's to see.
    fn take(&mut self, delivery: &Delivery, read: Read) -> bool {
        self.taken += 1;
        self.last_redelivered = delivery.redelivered;
        if self.caller_end.is_some() && ends_order_read(read.requeue, delivery) {
            self.goal = self.taken;
        }
        self.caller_end.is_none()
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
    let channel = broker.channel().await?;
    let mut windows = Windows::default();
    let mut progress = Progress::new(read.target);
    let _armed = crate::interrupt::arm();
    let interrupt = crate::interrupt::interrupted();
    tokio::pin!(interrupt);
    browsed.end = loop {
        if browsed.read >= read.target {
            progress.end_caller(End::Done, read);
        }
        if let Some(end) = progress.finished() {
            break end;
        }
        // The next window opens once every open one has been delivered in full: consumers with
        // credit at the same time would share the deliveries round-robin, every other tag each,
        // and giving back such a browse takes one nack per message (on RabbitMQ 3.10 and 4.3 a
        // 20,000-message list then took 30-100 s to give back, against 0.1 s for one run).
        if windows.opened < progress.goal && windows.all_delivered() {
            let size = (progress.goal - windows.opened).min(window_for(windows.largest));
            windows.open(broker, &channel, queue, size).await?;
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
        windows.close_finished(broker, &channel).await?;
    };
    windows.close_all(broker, &channel).await?;
    give_back_runs(broker, &channel, &windows.runs).await?;
    Ok(browsed)
}

/// At most this many deliveries per consumer. A browse of up to this many small messages uses one
/// consumer (the fastest way: measured here, more consumers cost about 10 % in speed); a bigger
/// one holds at most one window ahead in memory when the output is slow.
pub const WINDOW: u64 = 20_000;

/// What one window may hold, in bytes: the broker pushes a whole window ahead of the reader, and
/// lapin buffers it, so windows are sized from the largest message seen (one open at a time).
pub const WINDOW_BYTES: usize = 10 << 20;

/// The first window, before any message size is known: small, in case messages are big.
const FIRST_WINDOW: u64 = 8;

/// Deliveries per window for messages up to `largest` bytes (0: nothing seen yet).
pub fn window_for(largest: usize) -> u64 {
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
pub struct Runs(Vec<(u64, u64)>);

impl Runs {
    /// Adds the delivery `tag` of `consumer`; tags must come in increasing order.
    pub fn push(&mut self, consumer: u64, tag: u64) {
        match self.0.last_mut() {
            Some((c, last)) if *c == consumer => *last = tag,
            _ => self.0.push((consumer, tag)),
        }
    }

    /// The tag each multiple nack names, in order.
    pub fn last_tags(&self) -> impl Iterator<Item = u64> + '_ {
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
struct Windows {
    open: Vec<Window>,
    /// Messages covered by the windows opened so far.
    opened: u64,
    /// The delivery tag handed out last.
    last_read: u64,
    /// The largest body read so far, in bytes.
    largest: usize,
    /// Every delivery received, handed out or not, by consumer: what is given back at the end.
    runs: Runs,
    /// Deliveries buffered when their consumer was cancelled, never handed out: (tag, consumer).
    unread: Vec<(u64, u64)>,
    opened_consumers: u64,
}

impl Windows {
    async fn open(
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
    fn all_delivered(&self) -> bool {
        self.open.iter().all(|w| w.received >= w.size)
    }

    /// The delivery that follows the last one read, from whichever consumer it went to. `None`
    /// when a consumer was cancelled by the broker.
    async fn next_in_order(&mut self) -> Option<lapin::Result<Delivery>> {
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
    async fn close_finished(&mut self, broker: &Broker, channel: &Channel) -> Result<()> {
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
    async fn close_all(&mut self, broker: &Broker, channel: &Channel) -> Result<()> {
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
            .await
            .map_err(|e| giving_back_failed(broker, e))?;
    }
    let mut tags = Vec::new();
    while let Ok(Some(Ok(d))) = tokio::time::timeout(IDLE, next(consumer)).await {
        tags.push(d.delivery_tag);
    }
    Ok(tags)
}

/// Gives back a browse over several consumers: one multiple nack per run, in tag order, then
/// closes the channel, which waits for the broker to have processed the nacks.
async fn give_back_runs(broker: &Broker, channel: &Channel, runs: &Runs) -> Result<()> {
    for tag in runs.last_tags() {
        channel
            .basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await
            .map_err(|e| giving_back_failed(broker, e))?;
    }
    give_back(broker, channel, 0).await
}

/// Nack everything up to the last tag at once, then close the channel, which waits for the
/// broker to have processed the nack.
pub(crate) async fn give_back(broker: &Broker, channel: &Channel, last_tag: u64) -> Result<()> {
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
            .map_err(|e| giving_back_failed(broker, e))?;
    }
    channel
        .close(200, "browsed".into())
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
        if browsed.read >= read.target {
            progress.end_caller(End::Done, read);
        }
        if let Some(end) = progress.finished() {
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
        .await
        .map_err(|e| queue_error(broker, queue, e))?;
    Ok(got.map(|m| m.delivery))
}

pub struct Hold<'a> {
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
            taken: 0,
            last_redelivered: false,
        })
    }

    /// The next message at the head (after those already held), or None when there is none.
    pub async fn next(&mut self) -> Result<Option<Delivery>> {
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
    pub async fn keep_order(
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
