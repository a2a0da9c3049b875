//! `dlq replay`: move matching messages to the work queue; a source is acked only after its
//! copy is confirmed, so no path loses a message (a crash may duplicate the ones in flight).

use std::time::{Duration, Instant};

use super::source::{resolve, Source};
use crate::broker::browse::StillReturning;
use crate::broker::publisher::{ConfirmedPublisher, Settled};
use crate::broker::quorum::Tail;
use crate::broker::reader::{Handle, Left, QueueReader, ReadMode};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::options::ReplayOptions;
use crate::output::Report;
use crate::report::moves::{Counts, Destination, Reconnect, ReplayReport};
use crate::settings::Settings;
use crate::ui;

mod plan;
use super::batch_size;
use plan::{count_change, preview_row, selected, stays, Origins, Plan};

/// How long a replay goes on trying the --url list after losing its connection (contract
/// section 4), before it stops with exit 1.
pub(crate) const RECONNECT_WITHIN: Duration = Duration::from_secs(30);

/// After a reconnect, how long an empty queue is waited for the messages the lost connection
/// held: a 4.x quorum queue gives back what a consumer on a lost node held only after its
/// consumer-disconnected timeout (60 s by default, `consumer_disconnected_timeout`).
pub(crate) const GIVE_BACK_WAIT: Duration = Duration::from_secs(90);

/// A run that loses its connection this many times stops.
const MAX_RECONNECTS: usize = 10;

/// Where a pass of the move starts after a reconnect: what is left of the messages present at
/// the start, and of `--limit`.
#[derive(Debug, Clone, Copy)]
struct Resume {
    left: Left,
    limit: Option<u64>,
}

const PREVIEW_ROWS: usize = 5;

pub(crate) async fn run(a: &ReplayOptions, settings: &Settings) -> Result<Box<dyn Report>> {
    let filter = super::compile_optional(a.filter.as_deref(), "--filter")?;
    let transform = super::compile_optional(a.transform.as_deref(), "--transform")?;
    let source = resolve(&a.source, settings)?;
    let destination = match (&a.to, &source) {
        (Some(to), _) => Destination::Queue(to.clone()),
        (
            None,
            Source {
                work_queue: Some(w),
                ..
            },
        ) => Destination::Queue(w.clone()),
        (None, _) => Destination::Origin,
    };
    let consent = if a.dry_run {
        None
    } else {
        Some(ui::consent(settings, "replay")?)
    };
    let broker = Broker::connect(&settings.urls, &format!("replay {}", source.queue)).await?;
    let mut origins = Origins::default();
    if let Destination::Queue(q) = &destination {
        if !origins.exists(&broker, q).await? {
            return Err(Error::runtime(format!(
                "destination queue \"{}\" not found; nothing was moved (check --to, or run `dlq topology apply`)",
                crate::util::printable(q)
            )));
        }
    }
    let mode = super::source::read_mode(settings, &broker, &source.queue).await?;
    let mut report = ReplayReport {
        source: source.queue.clone(),
        destination: destination.clone(),
        counts: Counts::default(),
        dry_run: a.dry_run,
        declined: false,
        preview: Vec::new(),
        problem: None,
        filter_errors: 0,
        transform_errors: 0,
        first_transform_error: None,
        changed: transform.as_ref().map(|_| 0),
        interrupted: false,
        seconds: 0.0,
        depth: 0,
        reconnects: Vec::new(),
        kept_at_tail: 0,
    };
    let mut ctx = Plan::new(
        &broker,
        &source.queue,
        &destination,
        transform.as_ref(),
        &mut origins,
        mode,
    );
    if a.dry_run || consent == Some(ui::Consent::Ask) {
        survey(&mut ctx, settings, a.limit, filter.as_ref(), &mut report).await?;
        if a.dry_run {
            broker.close().await;
            return Ok(Box::new(report));
        }
        ui::show_preview(&crate::output::moves::preview_text(
            &report,
            ui::stderr_color(settings),
        ));
        let question = format!(
            "Replay {} message(s) from \"{}\" to {}?",
            report.counts.replayed,
            source.queue,
            destination.describe()
        );
        if report.counts.replayed == 0 || !ui::confirm(ui::Consent::Ask, &question)? {
            broker.close().await;
            report.declined = true;
            report.counts = Counts::default();
            report.preview.clear();
            return Ok(Box::new(report));
        }
        report.counts = Counts::default();
        report.preview.clear();
        report.filter_errors = 0;
        report.transform_errors = 0;
        report.first_transform_error = None;
        report.changed = report.changed.map(|_| 0);
    }
    // Held until the report is returned (see export).
    let _armed = crate::interrupt::arm();
    let started = Instant::now();
    let mut resume = None;
    let mut broker = broker;
    // Once a pass kept messages at the tail, the next one must too: one held after them would
    // go back ahead of them.
    let mut at_tail = false;
    let result = loop {
        let mut ctx = Plan::new(
            &broker,
            &source.queue,
            &destination,
            transform.as_ref(),
            &mut origins,
            mode,
        );
        let before = report.counts.replayed + report.kept_at_tail;
        let pass = move_messages(
            &mut ctx,
            settings,
            a,
            filter.as_ref(),
            &mut report,
            resume,
            &mut at_tail,
        );
        let Err(e) = pass.await else { break Ok(()) };
        let may_go_on = broker.is_lost()
            && !report.interrupted
            && report.problem.is_none()
            && report.reconnects.len() < MAX_RECONNECTS;
        if !may_go_on {
            break Err(e);
        }
        match reconnect(settings, &broker, &source.queue, &e, &mut report).await {
            Ok(Some(b)) => broker = b,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e),
        }
        // Every ack sent may have been lost with the connection: the acks of the pass that
        // died widen what is left by up to as many messages. Those kept at the tail are done
        // with: their copies lie behind what is left.
        let done = report.counts.replayed + report.kept_at_tail;
        let at_least = report.depth.saturating_sub(done);
        resume = Some(Resume {
            left: Left {
                at_least,
                at_most: at_least + (done - before),
                patience: GIVE_BACK_WAIT,
            },
            limit: a.limit.map(|l| l.saturating_sub(report.counts.replayed)),
        });
    };
    report.seconds = started.elapsed().as_secs_f64();
    broker.close().await;
    match result {
        Ok(()) => Ok(Box::new(report)),
        Err(e) => {
            let message = format!(
                "{}; stopped after replaying {} message(s) ({} kept, {} failed); run the command again to continue",
                e.message(),
                report.counts.replayed,
                report.counts.kept,
                report.counts.failed
            );
            Err(e.restated(message))
        }
    }
}

/// After a lost connection: a new one through the --url list within [`RECONNECT_WITHIN`],
/// recorded in the report, whose per-pass counts start again (what stayed is looked at again).
/// `Ok(None)`: Ctrl-C while reconnecting (nothing is in flight: the report says what was done;
/// `run` holds the interrupt armed throughout).
async fn reconnect(
    settings: &Settings,
    lost: &Broker,
    queue: &str,
    error: &Error,
    report: &mut ReplayReport,
) -> Result<Option<Broker>> {
    let lost_at = tokio::time::Instant::now();
    ui::note(
        settings,
        &format!(
            "{}; reconnecting through --url (up to {} s)",
            error.message(),
            RECONNECT_WITHIN.as_secs()
        ),
    );
    let purpose = format!("replay {queue}");
    let attempt = Broker::reconnect(&settings.urls, &purpose, lost_at + RECONNECT_WITHIN);
    let broker = tokio::select! {
        biased;
        _ = crate::interrupt::interrupted() => {
            report.interrupted = true;
            return Ok(None);
        }
        b = attempt => b,
    };
    let broker = broker.map_err(|why| Error::Runtime {
        message: format!(
            "{}; no broker of --url answered within {} s",
            error.message(),
            RECONNECT_WITHIN.as_secs()
        ),
        cause: Some({
            let last = format!("last attempt: {}", why.message());
            Box::new(why.restated(last))
        }),
    })?;
    let seconds = lost_at.elapsed().as_secs_f64();
    ui::note(
        settings,
        &format!(
            "reconnected to {} after {seconds:.1} s; going on (what the lost connection held comes back when the broker lets it go: on a quorum queue up to 60 s after the node was lost)",
            broker.url.redacted()
        ),
    );
    report.reconnects.push(Reconnect {
        lost: lost.url.redacted(),
        reason: error.message().to_string(),
        to: broker.url.redacted(),
        seconds,
    });
    report.counts.kept = report.kept_at_tail;
    report.counts.failed = 0;
    report.filter_errors = 0;
    report.transform_errors = 0;
    Ok(Some(broker))
}

/// The non-destructive first pass: counts what would move; the queue is left as it was.
async fn survey(
    ctx: &mut Plan<'_, '_>,
    settings: &Settings,
    limit: Option<u64>,
    filter: Option<&Filter>,
    report: &mut ReplayReport,
) -> Result<()> {
    // Every message the survey reads is given back.
    let mut reader = QueueReader::open(ctx.broker, ctx.queue, ctx.mode).await?;
    let mut matched = 0u64;
    'read: while limit.is_none_or(|l| matched < l) {
        let batch = reader.next_batch(batch_size(limit, matched)).await?;
        if batch.is_empty() {
            break;
        }
        let verdicts = selected(filter, ctx.queue, &batch, &mut report.filter_errors);
        for ((pos, d, handle), (matches, message)) in batch.into_iter().zip(verdicts) {
            if limit.is_some_and(|l| matched >= l) {
                break 'read;
            }
            reader.keep(handle).await?;
            if !matches {
                report.counts.kept += 1;
                continue;
            }
            matched += 1;
            match ctx.copy(pos, &d, message).await? {
                Ok(copy) => {
                    report.counts.replayed += 1;
                    count_change(report, &copy);
                    if report.preview.len() < PREVIEW_ROWS {
                        report.preview.push(preview_row(
                            pos,
                            &d,
                            Some(copy.queue.clone()),
                            None,
                            copy.change.as_ref(),
                        ));
                    }
                }
                Err(why) => stays(report, pos, &d, why),
            }
        }
    }
    note_shortfall(&reader, report);
    let queue = reader.queue.clone();
    note_returning(settings, &queue, reader.finish().await?);
    Ok(())
}

/// A read that looked at fewer messages than were present at the start says so.
fn note_shortfall(reader: &QueueReader<'_>, report: &mut ReplayReport) {
    if let Some(p) = reader.shortfall_problem() {
        report.problem.get_or_insert(p);
    }
}

/// How long the reader may be quiet before the copies in flight are settled anyway: the sources
/// of unsettled copies hold the consumer's prefetch, so waiting longer could wait forever.
const QUIET: Duration = Duration::from_millis(50);

/// The real pass. Every exit path (done, stopped, Ctrl-C) settles the publishes in flight, acks
/// the sources whose copies were confirmed, and requeues the rest; an error (connection lost)
/// leaves unconfirmed sources unacked, and the broker returns them.
async fn move_messages(
    ctx: &mut Plan<'_, '_>,
    settings: &Settings,
    a: &ReplayOptions,
    filter: Option<&Filter>,
    report: &mut ReplayReport,
    resume: Option<Resume>,
    at_tail: &mut bool,
) -> Result<()> {
    let (broker, queue) = (ctx.broker, ctx.queue);
    let limit = resume.map_or(a.limit, |r| r.limit);
    // Only a run that may leave messages in place needs the guard (and its slower reads).
    let keeps = filter.is_some()
        || ctx.transform.is_some()
        || a.limit.is_some()
        || matches!(ctx.destination, Destination::Origin);
    let mode = ReadMode {
        guard: ctx.mode.guard.filter(|_| keeps),
        // With --limit the read stops before the end of the queue: kept messages at the tail
        // would end up behind the ones it never looked at.
        tail: match (*at_tail, a.limit) {
            (true, _) => Tail::On,
            (false, Some(_)) => Tail::Never,
            (false, None) => ctx.mode.tail,
        },
        ..ctx.mode
    };
    let left = resume.map(|r| r.left);
    let mut reader = QueueReader::open_resuming(broker, queue, mode, left).await?;
    if resume.is_none() {
        report.depth = reader.depth;
    }
    let mut publisher = ConfirmedPublisher::open(broker, reader.budget().in_flight).await?;
    let budget = limit.map_or(reader.depth, |l| l.min(reader.depth));
    let bar = ui::progress(settings, budget, "replaying");
    let pace = a.rate.map(|r| Duration::from_secs_f64(1.0 / r as f64));
    let started = tokio::time::Instant::now();
    let _armed = crate::interrupt::arm();
    let ctrl_c = crate::interrupt::interrupted();
    tokio::pin!(ctrl_c);
    let mut published: u64 = 0;
    let mut matched: u64 = 0;
    'read: while report.problem.is_none() && limit.is_none_or(|l| matched < l) {
        publisher.set_window(reader.budget().in_flight);
        let quiet = publisher.in_flight() > 0;
        let batch = tokio::select! {
            biased;
            _ = &mut ctrl_c => {
                report.interrupted = true;
                break;
            }
            n = reader.next_batch(batch_size(limit, matched)) => n?,
            _ = tokio::time::sleep(QUIET), if quiet => {
                let settled = publisher.flush().await?;
                apply_settled(settled, &mut reader, report).await?;
                continue;
            }
        };
        if batch.is_empty() {
            break;
        }
        let verdicts = selected(filter, queue, &batch, &mut report.filter_errors);
        for ((pos, d, handle), (matches, message)) in batch.into_iter().zip(verdicts) {
            // A problem stops the run: the rest of the batch was never looked at, and goes
            // back with everything else unacked.
            if report.problem.is_some() {
                break 'read;
            }
            if !matches {
                bar.inc(u64::from(limit.is_none()));
                report.counts.kept += 1;
                let settled = keep(&mut reader, &mut publisher, queue, &d, handle).await?;
                apply_settled(settled, &mut reader, report).await?;
                *at_tail |= reader.at_tail();
                continue;
            }
            bar.inc(1);
            matched += 1;
            let copy = match ctx.copy(pos, &d, message).await? {
                Ok(copy) => copy,
                Err(why) => {
                    stays(report, pos, &d, why);
                    let settled = keep(&mut reader, &mut publisher, queue, &d, handle).await?;
                    apply_settled(settled, &mut reader, report).await?;
                    *at_tail |= reader.at_tail();
                    continue;
                }
            };
            count_change(report, &copy);
            if let Some(p) = pace {
                tokio::time::sleep_until(started + p * published as u32).await;
            }
            let body = copy.body.as_deref().unwrap_or(&d.data);
            let settled = publisher
                .publish(Sent::Move(handle), &copy.queue, body, copy.properties)
                .await?;
            published += 1;
            apply_settled(settled, &mut reader, report).await?;
        }
    }
    let settled = publisher.flush().await?;
    apply_settled(settled, &mut reader, report).await?;
    if let Some(why) = publisher.unmatched_return() {
        report.problem.get_or_insert(format!(
            "the broker returned a copy dlq could not pair with its message ({why}); check the destination queues"
        ));
    }
    if !report.interrupted && limit.is_none_or(|l| matched < l) {
        note_shortfall(&reader, report);
    }
    bar.finish_and_clear();
    publisher.close().await;
    let at_tail = reader.at_tail();
    note_returning(settings, queue, reader.finish().await?);
    if at_tail {
        if let Some(p) = super::source::consumed_beside(broker, queue).await? {
            report.problem.get_or_insert(p);
        }
    }
    Ok(())
}

/// A give-back the broker had not finished when dlq stopped waiting: say so on stderr.
fn note_returning(settings: &Settings, queue: &str, returning: Option<StillReturning>) {
    if let Some(r) = returning {
        ui::note(settings, &r.note(queue));
    }
}

/// What a publish stands for: a message's copy to its destination, or a kept message's exact
/// copy at the tail of the source (see [`crate::broker::quorum::Tail`]).
#[derive(Debug, Clone, Copy)]
enum Sent {
    Move(Handle),
    Tail(Handle),
}

/// Keeps a message: at the tail of `queue` (an exact copy: same body, properties and headers),
/// once the reader keeps messages there, else held in place. Returns what settled meanwhile.
async fn keep(
    reader: &mut QueueReader<'_>,
    publisher: &mut ConfirmedPublisher<'_, Sent>,
    queue: &str,
    d: &lapin::message::Delivery,
    handle: Handle,
) -> Result<Vec<Settled<Sent>>> {
    if !reader.keeps_at_tail() {
        reader.keep(handle).await?;
        return Ok(Vec::new());
    }
    publisher
        .publish(Sent::Tail(handle), queue, &d.data, d.properties.clone())
        .await
}

/// Acks the sources of confirmed copies in one go; a returned or nacked copy's source stays.
async fn apply_settled(
    settled: Vec<Settled<Sent>>,
    reader: &mut QueueReader<'_>,
    report: &mut ReplayReport,
) -> Result<()> {
    let mut confirmed = Vec::with_capacity(settled.len());
    let mut moved = 0u64;
    for s in settled {
        match s {
            Settled::Confirmed(Sent::Move(h)) => {
                confirmed.push(h);
                moved += 1;
            }
            Settled::Confirmed(Sent::Tail(h)) => {
                confirmed.push(h);
                report.kept_at_tail += 1;
            }
            // The original stays where it is (out of order with those at the tail): the run stops.
            Settled::Returned(Sent::Tail(h), reason) => {
                reader.keep(h).await?;
                report.problem.get_or_insert(format!(
                    "the copy of a kept message, published to the tail of its queue, was returned by the broker ({reason}); the message was kept in place"
                ));
            }
            Settled::Nacked(Sent::Tail(h)) => {
                reader.keep(h).await?;
                report.problem.get_or_insert(
                    "the broker refused (nacked) the copy of a kept message, published to the tail of its queue; the message was kept in place".to_string(),
                );
            }
            Settled::Returned(Sent::Move(h), reason) => {
                reader.keep(h).await?;
                report.counts.failed += 1;
                report.problem.get_or_insert(format!(
                    "a copy was returned by the broker ({reason}); its message was kept"
                ));
            }
            Settled::Nacked(Sent::Move(h)) => {
                reader.keep(h).await?;
                report.counts.failed += 1;
                report.problem.get_or_insert(
                    "the broker refused (nacked) a copy; its message was kept".to_string(),
                );
            }
        }
    }
    if !confirmed.is_empty() {
        reader.ack(&confirmed).await?;
        report.counts.replayed += moved;
    }
    Ok(())
}
