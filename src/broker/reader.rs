//! Reading a queue from its head for a command that removes some of what it reads (replay,
//! export) and keeps the rest: look at no more than the messages present at the start, ack only
//! what the caller has made safe, and give everything else back in order at the end.
//!
//! Why segments: the broker's cost of one single (non-multiple) ack grows with the deliveries the
//! channel holds unacked before it (3.10: 8,300 acks/s with none held, 600 with 20,000 held), so
//! a reader that keeps non-matching messages unacked while acking matches slows down
//! quadratically. Unacked deliveries are per channel: a reader that has held [`Budget::hold`]
//! kept messages on one channel cancels that consumer and goes on with a new consumer on a new
//! channel, so an ack never scans more than one segment's held messages. Each segment's
//! prefetch is sized from the largest message seen, which bounds in bytes what the broker may
//! push ahead. At the end, one multiple nack per segment, in segment order, gives the kept
//! messages back in their order. See docs/MOVE-ENGINE.md.
//!
//! Guarded mode: on a quorum queue where every return counts toward the delivery-limit (3.10
//! with a limit, 4.0–4.2), a consumer would be pushed, and so would return, messages the caller
//! never looks at. There the reader fetches one message at a time (basic.get) and, once the
//! caller keeps a message within `quorum::MARGIN` of the limit, reads nothing more.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicCancelOptions};
use lapin::{Channel, Consumer};

use super::amqp::Reply;
use super::browse::{self, StillReturning, IDLE};
use super::{next, quorum, Broker};
use crate::error::Result;
use quorum::Tail;

/// What the broker may push ahead of the reader, in bytes, per segment.
pub(crate) const AHEAD_BYTES: usize = 8 << 20;

/// At most this many segments get a channel of their own (fewer when the broker's `channel_max`
/// allows fewer, see [`Broker::channels_for_reading`]); later segments share the last channel,
/// each consumer with its own bounded prefetch, so memory stays bounded and only the acks slow
/// down again (they walk every kept message on that channel).
const MAX_SEGMENTS: usize = 1_500;

/// The share of messages kept so far is taken as this much larger for the rest of the queue, when
/// sizing segments so that the channels last (a filter that matches fewer messages further on).
const KEEP_MARGIN: f64 = 1.25;

/// What one segment's single acks may cost the broker, in deliveries walked past. A single ack
/// walks the segment's unacked deliveries below its tag twice (the channel's list and the queue
/// process's per-channel list: `collect_acks` and `subtract_acks` in the broker), so a segment
/// holding `h` kept messages with `m` matches among them costs about `m * h / 2`.
const SCAN_BUDGET: f64 = 65_536.0;

/// A segment whose single acks have walked past this many kept messages makes way for a new one
/// (see [`walked_too_far`]). Four times [`SCAN_BUDGET`]: a segment sized by
/// [`segment_budget`] for an even share of matches stays below it.
const WALK_LIMIT: u64 = 4 * SCAN_BUDGET as u64;

/// Whether the segment being read should make way for a new one (pure): its single acks have
/// walked past more than [`WALK_LIMIT`] kept messages in all. That is a run of matches after kept
/// messages (a queue sorted by error, or the copies of an earlier replay at its tail): each of
/// their acks walks past every kept message of the segment, while in a new segment, with nothing
/// kept below them, they go as multiple acks.
pub(crate) fn walked_too_far(walked: u64, held: u64) -> bool {
    held > 0 && walked > WALK_LIMIT
}

/// A batch of [`QueueReader::next_batch`] stops taking deliveries once its bodies reach this.
const BATCH_BYTES: usize = 1 << 20;

/// The first segment's prefetch, before any message size is known: it is replaced as soon as the
/// first message shows the size (see [`QueueReader::resize`]).
const FIRST_PREFETCH: u16 = 8;

/// The smallest prefetch [`segment_budget`] gives: below this, a new channel per segment costs
/// more than the walks it saves.
const MIN_PREFETCH: u64 = 64;

/// The sizes of the next segment (pure). Its `hold`, the kept messages after which it is closed,
/// keeps the walks of its single acks within [`SCAN_BUDGET`]: large while few messages are moved,
/// smaller the more are moved (1 %: about 1,800; 14 %: about 450; 50 %: about 180; 90 %: 60).
/// Never so small that the messages left (of `depth`, after `seen`), kept at the share kept so far
/// (with [`KEEP_MARGIN`]), would need more than the `channels_left`.
///
/// Its prefetch bounds what still arrives after the close: up to a 50 % share moved, twice the
/// hold; past it, `hold / kept share`, so that what arrives after the close adds about one hold
/// of kept messages, while the matches keep a deep pipeline of copies in flight (all moved: `max`,
/// from the budget in bytes). A segment's unacked deliveries never exceed its prefetch.
pub(crate) fn segment_budget(
    max: u16,
    seen: u64,
    kept: u64,
    depth: u64,
    channels_left: usize,
) -> Budget {
    let moved = seen.saturating_sub(kept);
    if moved == 0 || seen == 0 {
        return Budget::for_prefetch(max);
    }
    let ratio = moved as f64 / seen as f64;
    let walks = (2.0 * SCAN_BUDGET * (1.0 - ratio) / ratio).sqrt() / 2.0;
    let keep = (KEEP_MARGIN * kept as f64 / seen as f64).min(1.0);
    let kept_left = keep * depth.saturating_sub(seen) as f64;
    let floor = kept_left / channels_left.max(1) as f64;
    let hold = walks.max(floor).ceil().max(MIN_PREFETCH as f64 / 2.0);
    let kept_share = 1.0 - ratio;
    let prefetch = (2.0 * hold).max(hold / kept_share.max(f64::MIN_POSITIVE));
    let prefetch = prefetch.clamp(MIN_PREFETCH.min(u64::from(max)) as f64, f64::from(max)) as u16;
    Budget::for_segment(prefetch, hold as u64)
}

/// Whether a segment with prefetch `have` (0: unlimited) should make way for a new one, when
/// the sizes seen so far fit `fits` deliveries in the budget in bytes (pure): the first segment
/// as soon as it is smaller than that, any segment once it is more than twice that.
pub(crate) fn resize_needed(have: u16, fits: u16, first: bool) -> bool {
    (first && have < fits) || have == 0 || u32::from(have) > 2 * u32::from(fits)
}

/// The per-segment sizes, derived from the largest message seen so far (pure).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Budget {
    /// basic.qos prefetch of the segment's consumer.
    pub prefetch: u16,
    /// Kept messages after which the segment is closed for new deliveries.
    pub hold: u64,
    /// Copies in flight (published, not yet acked) the caller may have at once.
    pub in_flight: usize,
}

impl Budget {
    pub(crate) fn for_size(largest: usize) -> Budget {
        let per = largest.max(1024);
        Budget::for_prefetch((AHEAD_BYTES / per).clamp(8, 4096) as u16)
    }

    fn for_prefetch(prefetch: u16) -> Budget {
        Budget::for_segment(prefetch, u64::from(prefetch) / 2)
    }

    /// `hold` is at most half the prefetch.
    fn for_segment(prefetch: u16, hold: u64) -> Budget {
        let hold = hold.min(u64::from(prefetch) / 2);
        Budget {
            prefetch,
            hold,
            in_flight: in_flight(prefetch, hold),
        }
    }
}

/// The copies in flight a segment of big messages may have, as far as its prefetch allows (see
/// [`in_flight`]).
const IN_FLIGHT_FLOOR: usize = 32;

/// The copies a caller may have in flight in a segment of `prefetch` that holds up to `hold`
/// kept messages (pure). Held + twice in flight stay within the prefetch, or the consumer would
/// stall. An eighth of the prefetch (512 for 1 KiB messages): a lost connection duplicates at
/// most the copies in flight. Big messages get a shallow prefetch (81 for 100 KiB), and an eighth
/// of it left each copy waiting for the confirms of only 9 others (3.10.8 moved 2,300 messages
/// of 100 KiB a second so): they get up to [`IN_FLIGHT_FLOOR`], as far as the prefetch allows.
fn in_flight(prefetch: u16, hold: u64) -> usize {
    let prefetch = usize::from(prefetch);
    let room = prefetch.saturating_sub(usize::try_from(hold).unwrap_or(usize::MAX)) / 2;
    (prefetch / 8).max(IN_FLIGHT_FLOOR.min(room)).max(1)
}

/// Where a delivery came from: what the caller hands back to ack or keep it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Handle {
    segment: usize,
    tag: u64,
    /// Guarded mode: the message's position and x-delivery-count when it is near the limit.
    near_limit: Option<(u64, i64)>,
}

/// Why the reader stopped short of the messages it set out to look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shortfall {
    /// The queue had nothing more ready for us: another consumer took some.
    RanOut,
    /// The broker cancelled the consumer: the queue was deleted.
    Cancelled,
    /// After a lost connection, the messages it held did not come back within this wait.
    NotGivenBack(Duration),
    /// A kept message is within `quorum::MARGIN` of the queue's delivery-limit: reading on
    /// would risk dropping messages.
    NearLimit {
        position: u64,
        delivery_count: i64,
        limit: i64,
    },
}

impl Shortfall {
    pub(crate) fn describe(&self) -> String {
        match self {
            Shortfall::RanOut => "another consumer took them".into(),
            Shortfall::Cancelled => "the queue was deleted".into(),
            Shortfall::NotGivenBack(waited) => format!(
                "the broker did not give back, within {} s, what the lost connection held (another consumer may have taken them)",
                waited.as_secs()
            ),
            Shortfall::NearLimit {
                position,
                delivery_count,
                limit,
            } => quorum::stop_reason(*position, *delivery_count, *limit),
        }
    }
}

struct Segment {
    channel: Channel,
    /// The channel is the previous segment's (past the channels a reader may have, see
    /// [`MAX_SEGMENTS`]): delivery tags and unacked deliveries are per channel, so an ack here
    /// must mind the kept messages of the earlier segments on it.
    shares_channel: bool,
    consumer: Option<Consumer>,
    /// Delivered and neither acked nor given back.
    unacked: BTreeSet<u64>,
    held: u64,
    /// What its single acks have walked past, about: the kept messages below each.
    walked: u64,
    /// basic.cancel was sent: what is buffered still arrives, then the stream ends.
    cancelled: bool,
    /// The consumer's stream has ended (its consumer is gone).
    ended: bool,
    /// The consumer's basic.qos prefetch (0: unlimited).
    prefetch: u16,
}

impl Segment {
    fn new(
        channel: Channel,
        shares_channel: bool,
        consumer: Option<Consumer>,
        prefetch: u16,
    ) -> Segment {
        Segment {
            channel,
            shares_channel,
            consumer,
            prefetch,
            unacked: BTreeSet::new(),
            held: 0,
            walked: 0,
            cancelled: false,
            ended: false,
        }
    }

    /// The consumer's stream ended.
    fn end(&mut self) {
        self.consumer = None;
        self.ended = true;
    }
}

pub(crate) struct QueueReader<'b> {
    broker: &'b Broker,
    pub queue: String,
    /// Messages in the queue when reading started: the most that will be looked at.
    pub depth: u64,
    segments: Vec<Segment>,
    /// The segment being read; later ones may already be receiving.
    reading: usize,
    seen: u64,
    /// Messages the caller kept (left in the queue) so far.
    kept: u64,
    largest: usize,
    budget: Budget,
    shortfall: Option<Shortfall>,
    /// Guarded mode: the delivery-limit to keep clear of.
    guard: Option<i64>,
    /// After a lost connection: what is left, and since when the queue has been empty.
    resume: Option<Left>,
    dry_since: Option<tokio::time::Instant>,
    /// Give back the last segment first (see [`browse::GiveBack::last_first`]).
    last_first: bool,
    /// The next segment on its way (see [`QueueReader::rotate`]).
    opening: Option<Opening<'b>>,
    /// Segments with a channel of their own, at most (see [`MAX_SEGMENTS`]).
    max_channels: usize,
    tail: Tail,
}

/// The cancel of the last segment's consumer and the start of the next one, as one future the
/// reader polls while it reads what the last segment has already received. `None` when no next
/// segment was wanted.
type Opening<'b> = Pin<Box<dyn Future<Output = Result<Option<Segment>>> + 'b>>;

/// How a reader reads and gives back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(crate) struct ReadMode {
    /// The delivery-limit to keep clear of: one message at a time (see the module's text).
    pub guard: Option<i64>,
    /// Give back the last segment first: only for a queue known to put each message back in its
    /// place (see [`browse::GiveBack::last_first`]).
    pub last_first: bool,
    /// Whether kept messages may be kept at the queue's tail instead of held (see [`Tail`]).
    pub tail: Tail,
}

/// Queues shorter than this are always held: holding is cheap there, and a read of them is short.
pub(crate) const TAIL_DEPTH: u64 = 100_000;

/// The reader decides after looking at this many messages, from the share moved so far.
const TAIL_SAMPLE: u64 = 5_000;

/// Whether keeping at the tail pays (pure), after `seen` of `depth` messages, `kept` of them
/// held: on a long queue, with enough left to read, once at least `share` of what was seen was
/// moved. Measured at 300,000 messages (docs/PERFORMANCE.md): holding costs the broker more
/// the more is moved (single acks, segments, the requeue at the end), a copy at the tail costs
/// one publish, the more so on 3.x whose queue index writes each copy.
pub(crate) fn tail_pays(depth: u64, seen: u64, kept: u64, share: f64) -> bool {
    let moved = seen.saturating_sub(kept);
    depth >= TAIL_DEPTH
        && seen >= TAIL_SAMPLE
        && depth.saturating_sub(seen) >= TAIL_DEPTH / 2
        && moved as f64 >= share * seen as f64
}

/// What is left to look at after a lost connection. An ack is never confirmed by the broker, so
/// the acks sent just before the loss may or may not have taken effect: the messages left of
/// those present at the start are at least `at_least` (none of the acks was lost) and at most
/// `at_most` (all of the last connection's acks were lost).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Left {
    pub at_least: u64,
    pub at_most: u64,
    /// How long an empty queue is waited for while fewer than `at_least` were looked at: what the
    /// lost connection held comes back when the broker lets it go (a 4.x quorum queue whose
    /// consumer's node went down: after its consumer-disconnected timeout, 60 s by default).
    pub patience: Duration,
}

/// What an empty queue means for a read that looked at `seen` messages, empty for `dry_for`
/// (pure). After a lost connection, enough looked at is the end: the rest of `at_most` were
/// acked after all.
fn dry_verdict(seen: u64, left: Option<Left>, dry_for: Duration) -> Dry {
    match left {
        None => Dry::Short(Shortfall::RanOut),
        Some(l) if seen >= l.at_least => Dry::Done,
        Some(l) if dry_for < l.patience => Dry::Wait,
        Some(l) => Dry::Short(Shortfall::NotGivenBack(l.patience)),
    }
}

/// What an empty queue means for the read.
#[derive(Debug, PartialEq, Eq)]
enum Dry {
    /// Everything there was to look at was looked at.
    Done,
    /// Messages the lost connection held may still come back: wait.
    Wait,
    /// Fewer than were present were looked at.
    Short(Shortfall),
}

impl<'b> QueueReader<'b> {
    /// A missing queue is a runtime error naming it; it is never created. With `guard` (the
    /// delivery-limit of a quorum queue where each return counts), reads one message at a time
    /// and stops after keeping one near that limit.
    pub(crate) async fn open(
        broker: &'b Broker,
        queue: &str,
        mode: ReadMode,
    ) -> Result<QueueReader<'b>> {
        QueueReader::open_resuming(broker, queue, mode, None).await
    }

    /// A reader that goes on after a lost connection with what is `left`: it reads what is ready,
    /// up to `left.at_most`, and waits for what the lost connection held while fewer than
    /// `left.at_least` were looked at (see [`Left`]).
    pub(crate) async fn open_resuming(
        broker: &'b Broker,
        queue: &str,
        mode: ReadMode,
        left: Option<Left>,
    ) -> Result<QueueReader<'b>> {
        let counts = browse::open_queue(broker, queue).await?;
        let ready = u64::from(counts.messages);
        let depth = left.map_or(ready, |l| l.at_most);
        // The management API's count of consumers may be seconds old: a consumer there now
        // would take messages the read counts on, so that it read copies instead.
        let tail = match mode.tail {
            Tail::Allowed { .. } if counts.consumers > 0 => Tail::Never,
            t => t,
        };
        let mut reader = QueueReader {
            broker,
            queue: queue.to_string(),
            depth,
            segments: Vec::new(),
            reading: 0,
            seen: 0,
            kept: 0,
            largest: 0,
            budget: Budget::for_size(4096),
            shortfall: None,
            guard: mode.guard,
            resume: left,
            dry_since: None,
            last_first: mode.last_first,
            opening: None,
            max_channels: MAX_SEGMENTS.min(broker.channels_for_reading()),
            tail,
        };
        if depth > 0 {
            reader.open_segment().await?;
        }
        Ok(reader)
    }

    /// The sizes in force: a caller keeps at most `in_flight` copies unacked.
    pub(crate) fn budget(&self) -> Budget {
        self.budget
    }

    async fn open_segment(&mut self) -> Result<()> {
        let prefetch = self.next_prefetch();
        let channel = self.broker.channel().await?;
        let consumer = match self.guard {
            Some(_) => None,
            None => {
                Some(browse::start_consumer(self.broker, &channel, &self.queue, prefetch).await?)
            }
        };
        self.segments
            .push(Segment::new(channel, false, consumer, prefetch));
        Ok(())
    }

    /// Sets the budget of the next segment and returns its prefetch.
    fn next_prefetch(&mut self) -> u16 {
        let bytes = match self.largest {
            // Nothing seen yet: a small first segment, in case messages are big (the broker
            // pushes a whole prefetch ahead, and lapin buffers it).
            0 => Budget::for_prefetch(FIRST_PREFETCH),
            largest => Budget::for_size(largest),
        };
        // At the tail, nothing more is held: every delivery is acked in order, as when all move.
        self.budget = match self.tail {
            Tail::On if self.largest > 0 => bytes,
            _ => segment_budget(
                bytes.prefetch,
                self.seen,
                self.kept,
                self.depth,
                self.max_channels.saturating_sub(self.segments.len()),
            ),
        };
        self.budget.prefetch
    }

    /// Takes in the next segment if it has opened by now; waits for it with `wait`.
    async fn take_opening(&mut self, wait: bool) -> Result<()> {
        let Some(opening) = self.opening.as_mut() else {
            return Ok(());
        };
        let opened = if wait {
            opening.await
        } else {
            match std::future::poll_fn(|cx| Poll::Ready(opening.as_mut().poll(cx))).await {
                Poll::Ready(opened) => opened,
                Poll::Pending => return Ok(()),
            }
        };
        self.opening = None;
        if let Some(segment) = opened? {
            self.segments.push(segment);
        }
        Ok(())
    }

    /// The next message, its 1-based position and its handle; `None` once every message present
    /// at the start was looked at, or when the queue ran out before (see [`Self::shortfall`]).
    /// A slow broker is waited for: only an empty queue or a cancelled consumer ends it early.
    pub(crate) async fn next(&mut self) -> Result<Option<(u64, Delivery, Handle)>> {
        if self.seen >= self.depth || self.shortfall.is_some() {
            return Ok(None);
        }
        self.take_opening(false).await?;
        if let Some(limit) = self.guard {
            return self.fetch(limit).await;
        }
        // Cancel-safe (the command drops this future when Ctrl-C or its timer wins the race):
        // every await leaves the reader in a state the next call picks up from.
        loop {
            self.take_opening(false).await?;
            let index = self.reading;
            let Some(segment) = self.segments.get_mut(index) else {
                return Ok(None);
            };
            if segment.ended {
                if self.advance(index).await? {
                    continue;
                }
                return Ok(None);
            }
            let Some(consumer) = segment.consumer.as_mut() else {
                return Ok(None);
            };
            match tokio::time::timeout(IDLE, next(consumer)).await {
                Ok(Some(Ok(d))) => {
                    self.dry_since = None;
                    let handle = self.took(index, &d, None);
                    return Ok(Some((self.seen, d, handle)));
                }
                Ok(Some(Err(e))) => return Err(self.broker.lost(e)),
                Ok(None) => {
                    self.segments[index].end();
                    continue;
                }
                Err(_idle) => {
                    if self.nothing_left().await? {
                        match self.dry() {
                            Dry::Wait => {}
                            Dry::Done => return Ok(None),
                            Dry::Short(why) => {
                                self.shortfall = Some(why);
                                return Ok(None);
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`Self::next`], then whatever else the current segment has already received, up to `max`
    /// in all and about [`BATCH_BYTES`] of bodies (a batch is held whole, and built into messages
    /// and JSON for the filter at once): the caller decides on them together (one hand-over to the filter's thread for the
    /// lot). Empty once [`Self::next`] would say `None`.
    pub(crate) async fn next_batch(&mut self, max: usize) -> Result<Vec<(u64, Delivery, Handle)>> {
        let mut batch = Vec::new();
        let Some(first) = self.next().await? else {
            return Ok(batch);
        };
        let mut bytes = first.1.data.len();
        batch.push(first);
        // Guarded mode reads one message at a time.
        while self.guard.is_none()
            && batch.len() < max
            && bytes < BATCH_BYTES
            && self.seen < self.depth
        {
            let index = self.reading;
            let Some(consumer) = self
                .segments
                .get_mut(index)
                .and_then(|s| s.consumer.as_mut())
            else {
                break;
            };
            match super::ready_now(consumer).await {
                Poll::Ready(Some(Ok(d))) => {
                    bytes += d.data.len();
                    let handle = self.took(index, &d, None);
                    batch.push((self.seen, d, handle));
                }
                Poll::Ready(Some(Err(e))) => return Err(self.broker.lost(e)),
                Poll::Ready(None) => {
                    // The next call to `next` goes on with the next segment.
                    self.segments[index].end();
                    break;
                }
                Poll::Pending => break,
            }
        }
        Ok(batch)
    }

    /// The consumer of segment `index` has ended: after a cancel, ours (true: go on with the next
    /// segment, once it has opened) or the broker's (the queue is gone: a shortfall); or with
    /// the connection (an error).
    async fn advance(&mut self, index: usize) -> Result<bool> {
        if self.broker.is_lost() {
            return Err(self.broker.closed());
        }
        self.take_opening(true).await?;
        if index + 1 < self.segments.len() {
            self.reading += 1;
            return Ok(true);
        }
        self.shortfall = Some(Shortfall::Cancelled);
        Ok(false)
    }

    /// Guarded mode: one basic.get on the current segment's channel.
    async fn fetch(&mut self, limit: i64) -> Result<Option<(u64, Delivery, Handle)>> {
        let index = self.segments.len() - 1;
        let d = loop {
            match browse::get_one(self.broker, &self.segments[index].channel, &self.queue).await? {
                Some(d) => break d,
                None => match self.dry() {
                    Dry::Wait => tokio::time::sleep(IDLE / 4).await,
                    Dry::Done => return Ok(None),
                    Dry::Short(why) => {
                        self.shortfall = Some(why);
                        return Ok(None);
                    }
                },
            }
        };
        self.dry_since = None;
        let count = quorum::delivery_count(d.properties.headers().as_ref());
        let near_limit =
            quorum::near_limit(count, limit).then(|| (self.seen + 1, count.unwrap_or(0)));
        let handle = self.took(index, &d, near_limit);
        Ok(Some((self.seen, d, handle)))
    }

    /// Books a delivery from segment `index` as looked at and unacked.
    fn took(&mut self, index: usize, d: &Delivery, near_limit: Option<(u64, i64)>) -> Handle {
        self.segments[index].unacked.insert(d.delivery_tag);
        self.seen += 1;
        self.largest = self.largest.max(d.data.len());
        self.resize(index);
        Handle {
            segment: index,
            tag: d.delivery_tag,
            near_limit,
        }
    }

    /// Starts a new segment when the one being read has the wrong prefetch for the sizes seen:
    /// the first (small until a size is known) once a message shows the size, and any whose
    /// prefetch lets the broker push more than twice the budget in bytes ahead (bigger messages
    /// than before).
    fn resize(&mut self, index: usize) {
        let last = self.segments.len() - 1;
        let segment = &self.segments[last];
        if index != last
            || segment.cancelled
            || self.opening.is_some()
            || self.guard.is_some()
            || self.seen >= self.depth
        {
            return;
        }
        let fits = Budget::for_size(self.largest).prefetch;
        let (have, first) = (segment.prefetch, self.segments.len() == 1);
        if resize_needed(have, fits, first) {
            self.rotate();
        }
    }

    /// The queue has nothing ready for us: the end, a wait, or a shortfall.
    fn dry(&mut self) -> Dry {
        let since = *self.dry_since.get_or_insert_with(tokio::time::Instant::now);
        let verdict = dry_verdict(self.seen, self.resume, since.elapsed());
        match (&verdict, self.resume) {
            (Dry::Done, _) => self.depth = self.seen,
            (Dry::Short(_), Some(left)) => self.depth = left.at_least,
            _ => {}
        }
        verdict
    }

    /// After a quiet spell: is anything still ready for us? Deliveries already buffered on a
    /// later segment count, so only a queue with nothing ready ends the read.
    async fn nothing_left(&mut self) -> Result<bool> {
        let later_open = self.opening.is_some()
            || self.segments[self.reading + 1..]
                .iter()
                .any(|s| s.consumer.is_some());
        if later_open {
            // Nothing is asked of the broker then: make sure the quiet is not a dead connection
            // that lapin has not noticed (a wait that would never end).
            self.broker
                .check_alive()
                .await
                .map_err(|e| self.broker.lost(e))?;
            return Ok(false);
        }
        Ok(!browse::anything_ready(self.broker, &self.queue).await?)
    }

    /// How many of the messages present at the start were not looked at, and why, when the
    /// queue ran out early.
    pub(crate) fn shortfall(&self) -> Option<(u64, Shortfall)> {
        self.shortfall
            .clone()
            .map(|s| (self.depth.saturating_sub(self.seen), s))
    }

    /// The one-line problem for a read that stopped short, if it did.
    pub(crate) fn shortfall_problem(&self) -> Option<String> {
        let (missing, why) = self
            .shortfall()
            .filter(|(missing, why)| *missing > 0 || matches!(why, Shortfall::NearLimit { .. }))?;
        Some(format!(
            "{missing} message(s) of \"{}\" were not looked at: {}",
            crate::util::printable(&self.queue),
            why.describe()
        ))
    }

    /// Leaves this message in the queue; it is given back, in place, by [`Self::finish`]. When
    /// the segment holds enough, reading goes on in a new segment.
    pub(crate) async fn keep(&mut self, h: Handle) -> Result<()> {
        if let (Some((position, delivery_count)), Some(limit)) = (h.near_limit, self.guard) {
            self.shortfall.get_or_insert(Shortfall::NearLimit {
                position,
                delivery_count,
                limit,
            });
        }
        self.kept += 1;
        let segment = &mut self.segments[h.segment];
        segment.held += 1;
        let full = segment.held >= self.budget.hold && !segment.cancelled;
        if full && h.segment + 1 == self.segments.len() {
            self.rotate();
        }
        Ok(())
    }

    /// Whether the caller keeps this message at the tail (an exact copy published to this queue,
    /// confirmed, then the original acked with [`Self::ack`]) rather than with [`Self::keep`].
    /// Once the reader has switched (see [`Tail`]), every kept message goes there: one held after
    /// would go back ahead of those already at the tail. The switch starts a new segment, with
    /// the prefetch of a read that moves everything.
    pub(crate) fn keeps_at_tail(&mut self) -> bool {
        match self.tail {
            Tail::Never => false,
            Tail::On => true,
            Tail::Allowed { share_pct } => {
                let last = self.segments.len() - 1;
                let can_rotate = self.guard.is_none()
                    && self.opening.is_none()
                    && last == self.reading
                    && !self.segments[last].cancelled;
                if !can_rotate
                    || !tail_pays(
                        self.depth,
                        self.seen,
                        self.kept,
                        f64::from(share_pct) / 100.0,
                    )
                {
                    return false;
                }
                self.tail = Tail::On;
                self.rotate();
                true
            }
        }
    }

    /// Whether kept messages go to the tail (a read resumed after this one must go on so).
    pub(crate) fn at_tail(&self) -> bool {
        self.tail == Tail::On
    }

    /// Stops the current consumer (what it already has buffered still arrives, and is read
    /// first) and starts the next segment on a fresh channel (past [`Self::max_channels`], on the
    /// last one). Both happen while the reader goes on with what was buffered: the new channel
    /// opens (and gets its prefetch) beside the cancel, and its consumer starts once the cancel is
    /// answered, so that the two consumers never receive at once and deliveries stay in queue
    /// order.
    fn rotate(&mut self) {
        let last = self.segments.len() - 1;
        let shared =
            (self.segments.len() >= self.max_channels).then(|| self.segments[last].channel.clone());
        let segment = &mut self.segments[last];
        segment.cancelled = true;
        let cancel = segment
            .consumer
            .as_ref()
            .map(|c| (segment.channel.clone(), c.tag()));
        let prefetch = (self.seen < self.depth).then(|| self.next_prefetch());
        let consumes = self.guard.is_none();
        let broker = self.broker;
        let queue = self.queue.clone();
        self.opening = Some(Box::pin(async move {
            let cancelled = async {
                let Some((channel, tag)) = cancel else {
                    return Ok(());
                };
                let cancel = channel.basic_cancel(tag, BasicCancelOptions::default());
                broker.answer(cancel).await.map_err(|e| broker.lost(e))
            };
            let opened = async {
                let Some(prefetch) = prefetch else {
                    return Ok(None);
                };
                // basic.qos applies to the consumers started after it: on a shared channel, the
                // next one, not the one being cancelled.
                let channel = match &shared {
                    Some(channel) => channel.clone(),
                    None => broker.channel().await?,
                };
                if consumes {
                    browse::set_prefetch(broker, &channel, prefetch).await?;
                }
                Ok(Some(channel))
            };
            let (cancelled, opened) = tokio::join!(cancelled, opened);
            cancelled?;
            let Some(channel) = opened? else {
                return Ok(None);
            };
            // Guarded mode fetches one message at a time on the channel.
            let consumer = match consumes {
                true => Some(browse::start_consuming(broker, &channel, &queue).await?),
                false => None,
            };
            Ok(Some(Segment::new(
                channel,
                shared.is_some(),
                consumer,
                prefetch.unwrap_or(0),
            )))
        }));
    }

    /// Removes these messages (each made safe by the caller): per segment, one multiple ack when
    /// nothing else unacked on its channel lies below the highest of them, else one ack each.
    pub(crate) async fn ack(&mut self, handles: &[Handle]) -> Result<()> {
        let mut by_segment: Vec<Vec<u64>> = vec![Vec::new(); self.segments.len()];
        for h in handles {
            by_segment[h.segment].push(h.tag);
        }
        for (index, mut tags) in by_segment.into_iter().enumerate() {
            if tags.is_empty() {
                continue;
            }
            tags.sort_unstable();
            let highest = *tags.last().expect("not empty");
            // Earlier segments on the same channel have lower tags: all of theirs lie below.
            let earlier_on_channel: usize = self.sharing(index).map(|s| s.unacked.len()).sum();
            let segment = &mut self.segments[index];
            let below = segment.unacked.range(..=highest).count() + earlier_on_channel;
            if below == tags.len() {
                let ack = segment
                    .channel
                    .basic_ack(highest, BasicAckOptions { multiple: true });
                self.broker
                    .answer(ack)
                    .await
                    .map_err(|e| self.broker.lost(e))?;
                let rest = segment.unacked.split_off(&(highest + 1));
                segment.unacked = rest;
            } else {
                let channel = &segment.channel;
                let acks = tags
                    .iter()
                    .map(|tag| channel.basic_ack(*tag, BasicAckOptions { multiple: false }));
                self.broker
                    .answer(super::all_sent(acks))
                    .await
                    .map_err(|e| self.broker.lost(e))?;
                // Kept messages lie below the matches acked after them.
                let kept_below = segment.held + earlier_on_channel as u64;
                segment.walked += kept_below * tags.len() as u64;
                for tag in tags {
                    segment.unacked.remove(&tag);
                }
            }
        }
        self.rotate_if_walked();
        Ok(())
    }

    /// Starts a new segment when the acks of the one being read walk too far (see
    /// [`walked_too_far`]), while it has a channel of its own to gain (a shared channel's acks
    /// walk past every earlier segment's kept messages anyway).
    fn rotate_if_walked(&mut self) {
        let last = self.segments.len() - 1;
        let segment = &self.segments[last];
        if walked_too_far(segment.walked, segment.held)
            && last == self.reading
            && !segment.cancelled
            && self.opening.is_none()
            && self.segments.len() < self.max_channels
            && self.seen < self.depth
        {
            self.rotate();
        }
    }

    /// The earlier segments that share segment `index`'s channel.
    fn sharing(&self, index: usize) -> impl Iterator<Item = &Segment> {
        let first = (0..=index)
            .rev()
            .find(|&i| !self.segments[i].shares_channel)
            .unwrap_or(0);
        self.segments[first..index].iter()
    }

    /// Stops reading and puts every unacked message back where it was: cancel, take in what is
    /// still buffered, then one multiple nack per channel naming its highest unacked tag (a tag
    /// already acked would be refused), channel by channel: in order, or last first for a queue
    /// known to put messages back in place (see [`ReadMode::last_first`]). Call only once nothing
    /// is in flight. `Some` when the broker was still putting messages back after the longest
    /// wait (the caller says so).
    pub(crate) async fn finish(mut self) -> Result<Option<StillReturning>> {
        // A next segment that failed to open does not stop the others from being given back.
        let opened = self.take_opening(true).await;
        for segment in &mut self.segments {
            if let Some(mut consumer) = segment.consumer.take() {
                let buffered = browse::cancel_collect(
                    self.broker,
                    &segment.channel,
                    &mut consumer,
                    !segment.cancelled,
                )
                .await?;
                segment.unacked.extend(buffered);
            }
        }
        let stayed: u64 = self.segments.iter().map(|s| s.unacked.len() as u64).sum();
        // What is ready now (never delivered, e.g. behind a --limit) plus what goes back.
        let ready = match stayed {
            0 => None,
            _ => match self.broker.probe_queue(&self.queue).await? {
                Reply::Ok(counts) => Some(counts.messages),
                // Deleted or refused: there is nothing to wait for.
                _ => None,
            },
        };
        // One channel after the other (each close waits for the broker to have taken its nack):
        // in segment order, or last first where that is known to keep the order. Segments that
        // share a channel are given back together, by its highest unacked tag.
        let mut channels: Vec<(&Channel, u64)> = Vec::new();
        for segment in &self.segments {
            let last = segment.unacked.last().copied().unwrap_or(0);
            match channels.last_mut() {
                Some((_, highest)) if segment.shares_channel => *highest = (*highest).max(last),
                _ => channels.push((&segment.channel, last)),
            }
        }
        if self.last_first {
            channels.reverse();
        }
        for (channel, last) in channels {
            browse::give_back(self.broker, channel, last).await?;
        }
        opened?;
        // The broker requeues in batches: wait until the count is back, so that a command run
        // right after this one sees every message that stayed.
        let Some(ready) = ready else {
            return Ok(None);
        };
        let expected = (u64::from(ready) + stayed).min(u64::from(u32::MAX)) as u32;
        browse::settle(self.broker, &self.queue, expected).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_queue_ends_a_read_unless_a_lost_connection_may_still_give_some_back() {
        let left = Some(Left {
            at_least: 100,
            at_most: 612,
            patience: Duration::from_secs(90),
        });
        let s = Duration::from_secs;
        assert_eq!(dry_verdict(40, None, s(0)), Dry::Short(Shortfall::RanOut));
        assert_eq!(dry_verdict(40, left, s(89)), Dry::Wait);
        assert_eq!(
            dry_verdict(40, left, s(90)),
            Dry::Short(Shortfall::NotGivenBack(s(90)))
        );
        // Enough looked at: the other acks of the lost connection had taken effect.
        assert_eq!(dry_verdict(100, left, s(0)), Dry::Done);
        assert_eq!(dry_verdict(300, left, s(0)), Dry::Done);
    }

    #[test]
    fn small_messages_get_a_deep_prefetch_and_big_ones_a_shallow_one() {
        let small = Budget::for_size(1024);
        assert_eq!(small.prefetch, 4096);
        assert_eq!(small.hold, 2048);
        assert_eq!(small.in_flight, 512);
        let big = Budget::for_size(1 << 20);
        assert_eq!(big.prefetch, 8);
        assert_eq!(big.hold, 4);
        assert_eq!(big.in_flight, 2);
        assert!(u64::from(big.prefetch) * (1 << 20) <= AHEAD_BYTES as u64);
    }

    /// The prefetch and hold of [`segment_budget`].
    fn sizes(max: u16, seen: u64, kept: u64, depth: u64, channels_left: usize) -> (u16, u64) {
        let b = segment_budget(max, seen, kept, depth, channels_left);
        (b.prefetch, b.hold)
    }

    #[test]
    fn a_segment_holds_fewer_kept_messages_the_more_messages_are_moved() {
        let max = 4096;
        // Nothing moved yet (a survey, a list): the whole budget.
        assert_eq!(sizes(max, 0, 0, 1_000_000, 1_500), (max, 2_048));
        assert_eq!(sizes(max, 5_000, 5_000, 1_000_000, 1_500), (max, 2_048));
        // 1 %: the walks are cheap, nearly the whole budget.
        let (p1, h1) = sizes(max, 10_000, 9_900, 100_000, 1_500);
        assert!((3_500..=3_700).contains(&p1), "{p1}");
        assert_eq!(h1, u64::from(p1) / 2);
        // 14 % and 50 %: less per segment, a prefetch of twice the hold.
        let (p14, h14) = sizes(max, 7_000, 6_000, 100_000, 1_500);
        assert!((850..=950).contains(&p14), "{p14}");
        assert_eq!(h14, u64::from(p14) / 2);
        let (p50, h50) = sizes(max, 10_000, 5_000, 100_000, 1_500);
        assert!((350..=370).contains(&p50), "{p50}");
        assert_eq!(h50, u64::from(p50) / 2);
        // Never over the budget in bytes.
        assert_eq!(sizes(8, 10_000, 10, 1_000, 1_500), (8, 4));
    }

    #[test]
    fn past_half_moved_the_prefetch_grows_while_the_hold_stays_small() {
        let max = 4096;
        // 90 % moved: 61 kept messages a segment, and what arrives after the close (a tenth of
        // it kept) adds about as many: a prefetch of 610, with 76 copies in flight.
        let b = segment_budget(max, 10_000, 1_000, 100_000, 1_500);
        assert_eq!((b.prefetch, b.hold, b.in_flight), (610, 61, 76));
        // Everything moved (replay of all): the whole budget, the deepest pipeline.
        let b = segment_budget(max, 10_000, 0, 1_000_000, 1_500);
        assert_eq!((b.prefetch, b.in_flight), (max, 512));
        // 99.9 %: likewise.
        assert_eq!(sizes(max, 10_000, 10, 1_000, 1_500).0, max);
    }

    #[test]
    fn segments_are_big_enough_for_the_channels_left_at_the_share_kept_so_far() {
        let max = 4096;
        // 50 % over 1,000,000: the 990,000 left, 5/8 of them kept (the share with its margin),
        // over 1,500 channels: 413 a segment.
        assert_eq!(sizes(max, 10_000, 5_000, 1_000_000, 1_500), (826, 413));
        // Halfway, with 600 channels left: bigger segments for the rest.
        assert_eq!(sizes(max, 500_000, 250_000, 1_000_000, 600), (1_042, 521));
        // 90 % moved over 10,000,000: an eighth of the rest is expected kept.
        assert_eq!(sizes(max, 10_000, 1_000, 10_000_000, 1_500), (max, 833));
        // 90 % kept so far: with the margin, all of the rest is expected kept (never more).
        assert_eq!(sizes(max, 10_000, 9_000, 1_000_000, 1_500), (1_320, 660));
        // No channel of its own left: the whole budget (the segments share the last channel).
        assert_eq!(sizes(max, 10_000, 5_000, 1_000_000, 0), (max, 2_048));
    }

    #[test]
    fn the_first_segment_grows_once_a_size_is_known_and_any_shrinks_for_bigger_messages() {
        let small = Budget::for_size(1024).prefetch;
        let big = Budget::for_size(100 << 10).prefetch;
        // The small first segment gives way once the first message shows small sizes...
        assert!(resize_needed(FIRST_PREFETCH, small, true));
        // ...but not for big ones, and a later segment never grows (a small prefetch there is
        // chosen for the share moved).
        assert!(!resize_needed(
            FIRST_PREFETCH,
            Budget::for_size(2 << 20).prefetch,
            true
        ));
        assert!(!resize_needed(360, small, false));
        // A segment sized for 1 KiB that meets a 100 KiB message gives way.
        assert!(resize_needed(small, big, false));
        assert!(!resize_needed(big, big, false));
        assert!(!resize_needed(2 * big, big, false));
        assert!(resize_needed(0, big, false));
    }

    #[test]
    fn kept_messages_go_to_the_tail_only_on_a_long_queue_once_enough_is_moved() {
        // 1,000,000 messages, 50 % moved so far: from the sample on, at 10 % or 30 %.
        assert!(tail_pays(1_000_000, 5_000, 2_500, 0.10));
        assert!(tail_pays(1_000_000, 5_000, 2_500, 0.30));
        // Too early to tell.
        assert!(!tail_pays(1_000_000, 4_999, 2_500, 0.10));
        // 14 % moved: enough on 4.x (10 %), not on 3.x (30 %).
        assert!(tail_pays(1_000_000, 10_000, 8_600, 0.10));
        assert!(!tail_pays(1_000_000, 10_000, 8_600, 0.30));
        // A short queue, or one nearly read: held.
        assert!(!tail_pays(99_999, 10_000, 5_000, 0.10));
        assert!(!tail_pays(100_000, 50_001, 25_000, 0.10));
        assert!(tail_pays(100_000, 50_000, 25_000, 0.10));
    }

    #[test]
    fn a_run_of_matches_after_kept_messages_gets_a_new_segment() {
        // 50 % evenly, 825 a segment: 412 matches walking past 206 kept on average.
        assert!(!walked_too_far(412 * 206, 412));
        // The old 1,334 a segment at 50 % stayed below too.
        assert!(!walked_too_far(667 * 667 / 2, 667));
        // 500 matches in a row after 667 kept: make way.
        assert!(walked_too_far(500 * 667, 667));
        // Nothing kept: the acks walk past nothing (they go as multiple acks).
        assert!(!walked_too_far(u64::MAX, 0));
    }

    #[test]
    fn held_and_in_flight_never_fill_the_prefetch() {
        for size in [0, 100, 1024, 20_000, 100_000, 1 << 20, 64 << 20] {
            let b = Budget::for_size(size);
            assert!(
                b.hold + b.in_flight as u64 * 2 <= u64::from(b.prefetch),
                "{size}: {b:?}"
            );
        }
    }
}
