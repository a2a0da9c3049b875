//! Publishing with confirms, many in flight, and knowing for each copy whether it was routed.
//!
//! lapin hands a returned message (`mandatory`, 312 NO_ROUTE) to whichever confirm it resolves
//! next, and resolves a multiple ack in hash-map order, so the confirm a return rides on says
//! nothing about which copy was returned. Two rules make the pairing ours:
//! - a return is paired with its copy by content (routing key, body hash, properties), not by
//!   the confirm it came with;
//! - a copy counts as settled only once every confirm that could carry its return was seen. The
//!   broker sends a return before the ack that covers its copy, and that ack can only cover copies
//!   published before it was received; so once the confirms of every copy published up to the
//!   moment this copy's confirm was seen (its *barrier*) are seen, its return, if any, is known.
//!
//! [`Ledger`] is that bookkeeping, without a broker, so its edge cases are unit-tested.

use crate::broker::watch::Answered;
use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;

use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::{BasicProperties, Channel, Confirmation};

use super::amqp::short;
use super::Broker;
use crate::error::Result;

/// How many publishes may await their confirm at once, by default.
pub(crate) const CONFIRM_WINDOW: usize = 512;

/// The fate of one publish, identified by the caller's key (a source message, a line number).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Settled<K> {
    Confirmed(K),
    /// Unroutable with `mandatory`: no such queue. The reason is the broker's reply.
    Returned(K, String),
    Nacked(K),
}

/// Only told apart from the other copies in flight, by a process that hashes both sides itself:
/// no need for std's SipHash, which cost 3 % of dlq's CPU on a move of 1 KiB messages.
fn body_hash(body: &[u8]) -> u64 {
    use std::hash::BuildHasher;
    foldhash::fast::FixedState::default().hash_one(body)
}

/// What a copy looked like, to recognise it when the broker returns it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Fingerprint {
    pub queue: String,
    pub body_hash: u64,
    pub properties: BasicProperties,
}

impl Fingerprint {
    pub(crate) fn of(queue: &str, body: &[u8], properties: &BasicProperties) -> Fingerprint {
        Fingerprint {
            queue: queue.to_string(),
            body_hash: body_hash(body),
            properties: properties.clone(),
        }
    }
}

#[derive(Debug)]
struct Entry<K> {
    seq: u64,
    key: K,
    fingerprint: Fingerprint,
    /// Set when its confirm was seen: the publishes sent by then, and whether it was an ack.
    seen: Option<(u64, bool)>,
    returned: Option<String>,
}

/// The bookkeeping of publishes in flight (pure).
#[derive(Debug)]
pub(crate) struct Ledger<K> {
    published: u64,
    /// Confirms are seen in publish order: every seq up to this one was seen.
    seen_upto: u64,
    entries: VecDeque<Entry<K>>,
    /// A return that matched no copy still in the ledger: something this design says cannot
    /// happen; the caller stops and says so.
    unmatched: Option<String>,
}

impl<K> Default for Ledger<K> {
    fn default() -> Self {
        Ledger {
            published: 0,
            seen_upto: 0,
            entries: VecDeque::new(),
            unmatched: None,
        }
    }
}

impl<K: Clone> Ledger<K> {
    /// Records a publish; its sequence number (1, 2, …), which its confirm will be seen with.
    pub(crate) fn published(&mut self, key: K, fingerprint: Fingerprint) -> u64 {
        self.published += 1;
        self.entries.push_back(Entry {
            seq: self.published,
            key,
            fingerprint,
            seen: None,
            returned: None,
        });
        self.published
    }

    /// Records the confirm of `seq` (seen in publish order), and the return it carried, if any:
    /// that return may belong to any copy still in the ledger.
    pub(crate) fn confirmed(
        &mut self,
        seq: u64,
        ack: bool,
        returned: Option<(Fingerprint, String)>,
    ) {
        self.seen_upto = self.seen_upto.max(seq);
        let barrier = self.published;
        // Entries hold consecutive seqs from the front's: no search (it cost 1 % of dlq's CPU
        // with 512 copies in flight).
        let at = self
            .entries
            .front()
            .and_then(|f| usize::try_from(seq.checked_sub(f.seq)?).ok());
        if let Some(e) = at.and_then(|i| self.entries.get_mut(i)) {
            debug_assert_eq!(e.seq, seq);
            e.seen = Some((barrier, ack));
        }
        if let Some((fp, reason)) = returned {
            self.pair_return(&fp, reason);
        }
    }

    /// Marks the copy that was returned. Among copies with the same queue and body, the first
    /// with the same properties; if none has them (a broker that re-encoded a value), the only
    /// candidate; if several, all of them: their sources stay, which may duplicate but never loses.
    fn pair_return(&mut self, fp: &Fingerprint, reason: String) {
        let open = |e: &&mut Entry<K>| {
            e.returned.is_none()
                && e.fingerprint.queue == fp.queue
                && e.fingerprint.body_hash == fp.body_hash
        };
        if let Some(e) = self
            .entries
            .iter_mut()
            .filter(open)
            .find(|e| e.fingerprint.properties == fp.properties)
        {
            e.returned = Some(reason);
            return;
        }
        let mut matched = false;
        for e in self.entries.iter_mut().filter(open) {
            e.returned = Some(reason.clone());
            matched = true;
        }
        if !matched {
            self.unmatched.get_or_insert(reason);
        }
    }

    /// The publishes whose fate is now certain, in publish order.
    pub(crate) fn take_settled(&mut self) -> Vec<Settled<K>> {
        let mut out = Vec::new();
        while let Some(e) = self.entries.front() {
            match e.seen {
                Some((barrier, _)) if barrier <= self.seen_upto => {}
                _ => break,
            }
            let e = self.entries.pop_front().expect("front exists");
            let (_, ack) = e.seen.expect("checked above");
            out.push(match (e.returned, ack) {
                (Some(reason), _) => Settled::Returned(e.key, reason),
                (None, true) => Settled::Confirmed(e.key),
                (None, false) => Settled::Nacked(e.key),
            });
        }
        out
    }

    pub(crate) fn unmatched_return(&self) -> Option<&str> {
        self.unmatched.as_deref()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.entries.len()
    }
}

pub(crate) struct ConfirmedPublisher<'b, K> {
    broker: &'b Broker,
    channel: Channel,
    confirms: VecDeque<(u64, Confirming)>,
    ledger: Ledger<K>,
    window: usize,
}

/// A publish on its way: sent (its frames queued in lapin), then confirmed or not by the broker.
type Confirming = Pin<Box<dyn Future<Output = lapin::Result<Confirmation>> + Send>>;

/// Bodies up to this size are published unchecked: no RabbitMQ version's default
/// `max_message_size` is lower (4.x: 16 MiB; 3.x: 128 MiB).
pub(crate) const UNCHECKED_SIZE: usize = 16 << 20;

/// Whether bodies fit the broker's `max_message_size`, learnt before a real publish could close
/// the channel halfway through a run: a body over [`UNCHECKED_SIZE`] is first published where it
/// routes nowhere (the default exchange, a queue name nobody uses, not mandatory), which the
/// broker either drops (it fits) or refuses with its limit.
#[derive(Debug, Default)]
pub(crate) struct SizeCheck {
    fits_up_to: usize,
    max: Option<u64>,
}

impl SizeCheck {
    /// None when a body of this size is accepted; Some(limit) when the broker refuses it.
    pub(crate) async fn over_limit(&mut self, broker: &Broker, body: &[u8]) -> Result<Option<u64>> {
        let len = body.len();
        if len <= UNCHECKED_SIZE.max(self.fits_up_to) {
            return Ok(None);
        }
        if let Some(max) = self.max.filter(|&m| len as u64 > m) {
            return Ok(Some(max));
        }
        let channel = broker.channel().await?;
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!("dlq.size-check.{}.{nonce}", std::process::id());
        let probe = async {
            channel
                .confirm_select(ConfirmSelectOptions::default())
                .await?;
            channel
                .basic_publish(
                    "".into(),
                    key.as_str().into(),
                    BasicPublishOptions::default(),
                    body,
                    BasicProperties::default(),
                )
                .await?
                .await
        };
        match broker.answer(probe).await {
            Ok(_) => {
                self.fits_up_to = len;
                let _ = broker
                    .answer(channel.close(200, "size checked".into()))
                    .await;
                Ok(None)
            }
            Err(e) => {
                let refused =
                    super::amqp_error(&e).and_then(|(_, text)| super::size_refusal(&text));
                match refused {
                    Some((_, max)) => {
                        self.max = Some(max);
                        Ok(Some(max))
                    }
                    None => Err(broker.lost(e)),
                }
            }
        }
    }
}

impl<'b, K: Clone> ConfirmedPublisher<'b, K> {
    /// `window`: how many publishes may await their confirm at once.
    pub(crate) async fn open(
        broker: &'b Broker,
        window: usize,
    ) -> Result<ConfirmedPublisher<'b, K>> {
        let channel = broker.channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .answered(broker)
            .await
            .map_err(|e| broker.lost(e))?;
        Ok(ConfirmedPublisher {
            broker,
            channel,
            confirms: VecDeque::new(),
            ledger: Ledger::default(),
            window: window.max(1),
        })
    }

    /// Publishes to the default exchange with routing key `queue`, `mandatory` set. Returns the
    /// publishes now settled: the caller must act on each.
    pub(crate) async fn publish(
        &mut self,
        key: K,
        queue: &str,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<Vec<Settled<K>>> {
        let fingerprint = Fingerprint::of(queue, body, &props);
        let channel = self.channel.clone();
        let routing_key = short(queue)?;
        let body = body.to_vec();
        let mut confirming: Confirming = Box::pin(async move {
            let options = BasicPublishOptions {
                mandatory: true,
                immediate: false,
            };
            let sent = channel
                .basic_publish("".into(), routing_key, options, &body, props)
                .await;
            // Written: the copy of the body goes now, not when the confirm comes.
            drop(body);
            sent?.await
        });
        // The first poll queues the frames and numbers the publish for its confirm, in call
        // order; waiting for lapin's I/O thread to have written each one would cost a hand-over
        // per message. A failure shows when the confirm is awaited.
        if let Some(done) = super::poll_once(&mut confirming).await {
            confirming = Box::pin(std::future::ready(done));
        }
        let seq = self.ledger.published(key, fingerprint);
        self.confirms.push_back((seq, confirming));
        // Wait for half the window at a time: the caller acks a batch with one multiple ack.
        if self.confirms.len() >= self.window {
            while self.confirms.len() > self.window / 2 {
                self.see_one().await?;
            }
        }
        Ok(self.ledger.take_settled())
    }

    /// Waits for every publish still in flight; afterwards every one is settled.
    pub(crate) async fn flush(&mut self) -> Result<Vec<Settled<K>>> {
        while !self.confirms.is_empty() {
            self.see_one().await?;
        }
        Ok(self.ledger.take_settled())
    }

    /// Publishes sent and not yet settled.
    pub(crate) fn in_flight(&self) -> usize {
        self.ledger.in_flight()
    }

    /// Changes how many publishes may await their confirm (the reader's budget, in bytes,
    /// shrinks it when messages turn out big).
    pub(crate) fn set_window(&mut self, window: usize) {
        self.window = window.max(1);
    }

    /// A return no copy could be paired with (see [`Ledger`]).
    pub(crate) fn unmatched_return(&self) -> Option<&str> {
        self.ledger.unmatched_return()
    }

    async fn see_one(&mut self) -> Result<()> {
        let Some((seq, confirm)) = self.confirms.pop_front() else {
            return Ok(());
        };
        let confirmation = self
            .broker
            .answer(confirm)
            .await
            .map_err(|e| self.broker.lost(e))?;
        let (ack, returned) = match confirmation {
            Confirmation::Ack(r) => (true, r),
            Confirmation::Nack(r) => (false, r),
            // Cannot happen after confirm_select; if it did, nothing proves the copy safe.
            Confirmation::NotRequested => (false, None),
        };
        let returned = returned.map(|r| {
            let reason = format!(
                "{} {} for queue \"{}\"",
                r.reply_code,
                r.reply_text,
                crate::util::printable(r.delivery.routing_key.as_str())
            );
            (
                Fingerprint::of(
                    r.delivery.routing_key.as_str(),
                    &r.delivery.data,
                    &r.delivery.properties,
                ),
                reason,
            )
        });
        self.ledger.confirmed(seq, ack, returned);
        Ok(())
    }

    pub(crate) async fn close(self) {
        let _ = self
            .broker
            .answer(self.channel.close(200, "done".into()))
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lapin::types::ShortString;

    fn fp(queue: &str, body: &str, id: &str) -> Fingerprint {
        Fingerprint::of(
            queue,
            body.as_bytes(),
            &BasicProperties::default().with_message_id(ShortString::from(id)),
        )
    }

    #[test]
    fn a_return_riding_on_another_confirm_is_paired_with_its_own_copy() {
        let mut l = Ledger::default();
        for k in 1..=3u64 {
            l.published(k, fp("q", &format!("m{k}"), &k.to_string()));
        }
        // The broker returned copy 3; lapin attached the return to the confirm of copy 1.
        l.confirmed(1, true, Some((fp("q", "m3", "3"), "312 NO_ROUTE".into())));
        l.confirmed(2, true, None);
        l.confirmed(3, true, None);
        assert_eq!(
            l.take_settled(),
            vec![
                Settled::Confirmed(1),
                Settled::Confirmed(2),
                Settled::Returned(3, "312 NO_ROUTE".into())
            ]
        );
        assert_eq!(l.unmatched_return(), None);
    }

    #[test]
    fn a_copy_is_not_settled_before_every_confirm_that_could_carry_its_return() {
        let mut l = Ledger::default();
        l.published(1u64, fp("q", "a", "1"));
        l.published(2, fp("q", "b", "2"));
        // Copy 1's confirm is seen while copy 2 is in flight: the ack frame that covered copy 1
        // may have covered copy 2 too, with copy 1's return riding on copy 2's confirm.
        l.confirmed(1, true, None);
        assert_eq!(l.take_settled(), vec![]);
        l.published(3, fp("q", "c", "3"));
        l.confirmed(2, true, Some((fp("q", "a", "1"), "312 NO_ROUTE".into())));
        // Copy 1's barrier was 2: settled now, as returned. Copy 2's barrier is 3: not yet.
        assert_eq!(
            l.take_settled(),
            vec![Settled::Returned(1, "312 NO_ROUTE".into())]
        );
        l.confirmed(3, true, None);
        assert_eq!(
            l.take_settled(),
            vec![Settled::Confirmed(2), Settled::Confirmed(3)]
        );
    }

    #[test]
    fn identical_copies_pair_with_one_and_a_stranger_is_reported() {
        let mut l = Ledger::default();
        l.published(1u64, fp("q", "same", "x"));
        l.published(2, fp("q", "same", "x"));
        l.confirmed(1, true, Some((fp("q", "same", "x"), "312".into())));
        l.confirmed(2, false, Some((fp("other", "zzz", "y"), "312".into())));
        assert_eq!(
            l.take_settled(),
            vec![Settled::Returned(1, "312".into()), Settled::Nacked(2)]
        );
        assert_eq!(l.unmatched_return(), Some("312"));
    }

    #[test]
    fn same_body_other_properties_is_another_copy() {
        let mut l = Ledger::default();
        l.published(1u64, fp("q", "same", "a"));
        l.published(2, fp("q", "same", "b"));
        l.confirmed(1, true, Some((fp("q", "same", "b"), "312".into())));
        l.confirmed(2, true, None);
        assert_eq!(
            l.take_settled(),
            vec![Settled::Confirmed(1), Settled::Returned(2, "312".into())]
        );
    }

    type Carried = std::collections::HashMap<u64, Option<u64>>;

    /// We see confirms in publish order, as far as they are resolved.
    fn see(
        l: &mut Ledger<u64>,
        carried: &mut Carried,
        next_seen: &mut u64,
        settled: &mut Vec<Settled<u64>>,
    ) {
        while let Some(r) = carried.remove(next_seen) {
            let ret = r.map(|k| (fp("q", &format!("b{k}"), &k.to_string()), "312".into()));
            l.confirmed(*next_seen, true, ret);
            *next_seen += 1;
            settled.extend(l.take_settled());
        }
    }

    #[test]
    fn many_random_pairings_never_settle_a_returned_copy_as_confirmed() {
        // Simulates lapin: returns queue up in order and ride on whichever confirm resolves next;
        // a multiple ack resolves its confirms in any order; we see them in publish order.
        let mut state = 0x2545_f491_4f6c_dd1du64;
        let mut rand = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..2_000 {
            let mut l = Ledger::default();
            let n = 40u64;
            let unroutable: Vec<bool> = (0..n).map(|_| rand() % 3 == 0).collect();
            let mut published = 0u64;
            let mut waiting: VecDeque<u64> = VecDeque::new();
            let mut carried = Carried::default();
            let mut next_seen = 1u64;
            let mut settled = Vec::new();
            let mut acked_upto = 0u64;
            while next_seen <= n {
                // publish a few
                for _ in 0..(rand() % 4) {
                    if published < n {
                        published += 1;
                        let k = published;
                        l.published(k, fp("q", &format!("b{k}"), &k.to_string()));
                        if unroutable[(k - 1) as usize] {
                            waiting.push_back(k);
                        }
                    }
                }
                // the broker sends a multiple ack up to some published tag
                if published > acked_upto && rand() % 2 == 0 {
                    let upto = acked_upto + 1 + rand() % (published - acked_upto);
                    let mut frame: Vec<u64> = (acked_upto + 1..=upto).collect();
                    // resolve in a random order, each popping a waiting return
                    for i in (1..frame.len()).rev() {
                        frame.swap(i, (rand() % (i as u64 + 1)) as usize);
                    }
                    // each resolution pops the oldest waiting return, whichever copy it is for;
                    // we may look between two resolutions of one frame
                    for t in frame {
                        carried.insert(t, waiting.pop_front());
                        if rand() % 2 == 0 {
                            see(&mut l, &mut carried, &mut next_seen, &mut settled);
                        }
                    }
                    acked_upto = upto;
                }
                see(&mut l, &mut carried, &mut next_seen, &mut settled);
            }
            settled.extend(l.take_settled());
            assert_eq!(settled.len() as u64, n);
            for s in settled {
                match s {
                    Settled::Confirmed(k) => assert!(!unroutable[(k - 1) as usize]),
                    Settled::Returned(k, _) => assert!(unroutable[(k - 1) as usize]),
                    Settled::Nacked(_) => panic!("no nacks here"),
                }
            }
            assert_eq!(l.unmatched_return(), None);
        }
    }
}
