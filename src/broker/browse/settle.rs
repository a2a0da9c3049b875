//! Waiting for given-back messages to be ready again.
//!
//! The broker requeues a big nack in batches (about 200 ms for 20,000 messages here; a quorum
//! queue on 3.10 showed 0 ready for about 3 s after giving back 100,000; 1,000,000 on a 4.3
//! classic queue took 25 s and more, growing faster than the count), and until it is done a
//! passive declare counts only part of the queue: a command started right after this one would
//! see too few messages. So wait until the count is back to where it was, or has come back and
//! stops rising (another consumer may be taking messages meanwhile). A wait that gives up while
//! the count is still short says so: the caller tells the user.

use std::time::Duration;

use tokio::time::Instant;

use super::super::amqp::Reply;
use super::Broker;
use crate::error::Result;
use crate::util::printable;

/// Given-back messages the broker had not yet made ready again when [`settle`] stopped waiting.
/// Nothing is lost (the broker holds them and goes on putting them back), but a command started
/// right now would see fewer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StillReturning {
    /// Ready when the wait stopped.
    pub ready: u32,
    /// Ready once everything is back.
    pub expected: u32,
}

impl StillReturning {
    /// One sentence for the user.
    pub(crate) fn note(&self, queue: &str) -> String {
        format!(
            "the broker is still putting messages back into \"{}\" ({} of {} ready when dlq stopped waiting); none is lost, but a command started before they are all back sees fewer",
            printable(queue),
            self.ready,
            self.expected
        )
    }
}

/// How long an unchanged, non-zero count means "stopped rising": the broker has finished, and
/// another consumer took the rest. It requeues in batches, and on a busy machine a pause between
/// two of them lasted more than 100 ms (a 45,000-message browse in CI stopped waiting at 20,713).
const STALLED: Duration = Duration::from_secs(1);

/// The longest wait without the count rising (nothing back yet included).
const NO_RISE_MAX: Duration = Duration::from_secs(30);

/// The longest wait in all: 30 s, plus 150 µs per message expected (1,000,000: 180 s), since the
/// broker's requeue grows faster than the count.
fn wait_max(expected: u32) -> Duration {
    Duration::from_secs(30) + Duration::from_micros(150) * expected
}

/// Between two polls: 10 ms for the first second, then 50 ms.
fn poll_interval(waited: Duration) -> Duration {
    if waited < Duration::from_secs(1) {
        Duration::from_millis(10)
    } else {
        Duration::from_millis(50)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Every message expected is ready.
    Back,
    /// The count came back and stopped changing: done (another consumer took the rest).
    Stalled,
    /// Waited long enough; the broker is still short.
    GiveUp,
    /// Poll again.
    Wait,
}

/// The state of one wait: the counts seen and when they changed. Pure, so it is unit-tested.
#[derive(Debug)]
struct Settling {
    expected: u32,
    started: Instant,
    last: Option<u32>,
    changed_at: Instant,
    rose_at: Instant,
}

impl Settling {
    fn new(expected: u32, now: Instant) -> Self {
        Settling {
            expected,
            started: now,
            last: None,
            changed_at: now,
            rose_at: now,
        }
    }

    fn observe(&mut self, ready: u32, now: Instant) -> Verdict {
        if ready >= self.expected {
            return Verdict::Back;
        }
        match self.last {
            Some(last) if last == ready => {}
            last => {
                self.changed_at = now;
                if last.is_none_or(|l| ready > l) {
                    self.rose_at = now;
                }
                self.last = Some(ready);
            }
        }
        // Nothing back yet is the broker still working, not a count that stopped rising.
        if ready > 0 && now - self.changed_at >= STALLED {
            return Verdict::Stalled;
        }
        if now - self.started >= wait_max(self.expected) || now - self.rose_at >= NO_RISE_MAX {
            return Verdict::GiveUp;
        }
        Verdict::Wait
    }
}

/// Waits until `expected` messages are ready in `queue` (see the module's text). `Some` when it
/// gave up while the broker was still putting messages back.
pub(crate) async fn settle(
    broker: &Broker,
    queue: &str,
    expected: u32,
) -> Result<Option<StillReturning>> {
    let mut settling = Settling::new(expected, Instant::now());
    loop {
        let Reply::Ok(counts) = broker.probe_queue(queue).await? else {
            return Ok(None);
        };
        let now = Instant::now();
        match settling.observe(counts.messages, now) {
            Verdict::Back | Verdict::Stalled => return Ok(None),
            Verdict::GiveUp => {
                return Ok(Some(StillReturning {
                    ready: counts.messages,
                    expected,
                }))
            }
            Verdict::Wait => tokio::time::sleep(poll_interval(now - settling.started)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(start: Instant, ms: u64) -> Instant {
        start + Duration::from_millis(ms)
    }

    #[test]
    fn a_count_that_comes_back_whole_ends_the_wait() {
        let t = Instant::now();
        let mut s = Settling::new(1_000, t);
        assert_eq!(s.observe(0, at(t, 0)), Verdict::Wait);
        assert_eq!(s.observe(300, at(t, 10)), Verdict::Wait);
        assert_eq!(s.observe(1_000, at(t, 20)), Verdict::Back);
        // More than expected (something was published meanwhile) is back too.
        let mut s = Settling::new(1_000, t);
        assert_eq!(s.observe(1_200, at(t, 0)), Verdict::Back);
    }

    #[test]
    fn a_count_that_stops_rising_short_is_another_consumer_not_a_slow_broker() {
        let t = Instant::now();
        let mut s = Settling::new(1_000, t);
        assert_eq!(s.observe(600, at(t, 0)), Verdict::Wait);
        assert_eq!(s.observe(600, at(t, 999)), Verdict::Wait);
        assert_eq!(s.observe(600, at(t, 1_000)), Verdict::Stalled);
    }

    #[test]
    fn nothing_back_yet_is_waited_for_but_not_for_ever() {
        let t = Instant::now();
        let mut s = Settling::new(1_000, t);
        assert_eq!(s.observe(0, at(t, 0)), Verdict::Wait);
        assert_eq!(s.observe(0, at(t, 29_999)), Verdict::Wait);
        assert_eq!(s.observe(0, at(t, 30_000)), Verdict::GiveUp);
    }

    #[test]
    fn a_big_give_back_that_keeps_rising_is_waited_for_longer_than_a_small_one() {
        assert_eq!(wait_max(0), Duration::from_secs(30));
        assert_eq!(wait_max(100_000), Duration::from_secs(45));
        assert_eq!(wait_max(1_000_000), Duration::from_secs(180));
        // 1,000,000 coming back at 10,000 a second for 100 s: still waited for.
        let t = Instant::now();
        let mut s = Settling::new(1_000_000, t);
        for second in 0..100u32 {
            let verdict = s.observe(second * 10_000, at(t, u64::from(second) * 1_000));
            assert_eq!(verdict, Verdict::Wait, "at {second} s");
        }
        assert_eq!(s.observe(1_000_000, at(t, 100_000)), Verdict::Back);
        // Still rising at 180 s: given up, and the caller says so.
        let mut s = Settling::new(1_000_000, t);
        for second in 0..180u32 {
            assert_eq!(
                s.observe(second * 5, at(t, u64::from(second) * 1_000)),
                Verdict::Wait
            );
        }
        assert_eq!(s.observe(900, at(t, 180_000)), Verdict::GiveUp);
    }

    #[test]
    fn the_note_names_the_queue_and_the_counts() {
        let note = StillReturning {
            ready: 821_608,
            expected: 1_000_000,
        }
        .note("orders.error");
        assert!(note.contains("\"orders.error\""), "{note}");
        assert!(note.contains("821608 of 1000000"), "{note}");
    }
}
