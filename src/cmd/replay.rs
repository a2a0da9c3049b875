//! `dlq replay`: move matching messages to the work queue; a source is acked only after its
//! copy is confirmed, so no path loses a message (a crash may duplicate the ones in flight).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use lapin::message::Delivery;
use serde::Serialize;

use super::source::{resolve, Source};
use crate::broker::amqp::Reply;
use crate::broker::publisher::{ConfirmedPublisher, Settled};
use crate::broker::reader::QueueReader;
use crate::broker::Broker;
use crate::cli::ReplayArgs;
use crate::error::{Error, Outcome, Result};
use crate::filter::Filter;
use crate::message::{failure, to_json, MessageView};
use crate::output::Report;
use crate::replay::replay_headers;
use crate::settings::Settings;
use crate::ui;

/// Where copies go: one queue, or each message's own origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Destination {
    Queue(String),
    Origin,
}

impl Destination {
    pub fn describe(&self) -> String {
        match self {
            Destination::Queue(q) => format!("\"{q}\""),
            Destination::Origin => "each message's origin queue".to_string(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub replayed: u64,
    pub kept: u64,
    pub failed: u64,
}

/// A few of the messages a dry run or a confirmation shows.
#[derive(Debug, Clone, Serialize)]
pub struct PreviewRow {
    pub position: u64,
    pub message_id: Option<String>,
    pub destination: Option<String>,
    pub failure: Option<String>,
}

pub struct ReplayReport {
    pub source: String,
    pub destination: Destination,
    pub counts: Counts,
    pub dry_run: bool,
    /// The user answered no: nothing was moved.
    pub declined: bool,
    pub preview: Vec<PreviewRow>,
    /// Why the run stopped early or why messages failed.
    pub problem: Option<String>,
    pub filter_errors: u64,
    pub interrupted: bool,
    pub seconds: f64,
}

impl ReplayReport {
    pub fn outcome(&self) -> Outcome {
        if self.interrupted {
            Outcome::Interrupted
        } else if self.counts.failed > 0 || self.problem.is_some() {
            Outcome::PartialFailure
        } else {
            Outcome::Success
        }
    }
}

const PREVIEW_ROWS: usize = 5;

pub async fn run(a: &ReplayArgs, settings: &Settings) -> Result<Box<dyn Report>> {
    let filter = a
        .filter
        .as_deref()
        .map(|f| super::compile_filter(f, "--filter"))
        .transpose()?;
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
    let mut report = ReplayReport {
        source: source.queue.clone(),
        destination: destination.clone(),
        counts: Counts::default(),
        dry_run: a.dry_run,
        declined: false,
        preview: Vec::new(),
        problem: None,
        filter_errors: 0,
        interrupted: false,
        seconds: 0.0,
    };
    if a.dry_run || consent == Some(ui::Consent::Ask) {
        survey(
            &broker,
            &source.queue,
            a.limit,
            filter.as_ref(),
            &destination,
            &mut origins,
            &mut report,
        )
        .await?;
        if a.dry_run {
            broker.close().await;
            return Ok(Box::new(report));
        }
        eprintln!("{}", crate::output::moves::preview_text(&report));
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
    }
    let started = Instant::now();
    let result = move_messages(
        &broker,
        settings,
        &source.queue,
        a,
        filter.as_ref(),
        &mut origins,
        &mut report,
    )
    .await;
    report.seconds = started.elapsed().as_secs_f64();
    broker.close().await;
    match result {
        Ok(()) => Ok(Box::new(report)),
        Err(e) => Err(Error::Runtime {
            message: format!(
                "{}; stopped after replaying {} message(s) ({} kept, {} failed); run the command again to continue",
                e.message(),
                report.counts.replayed,
                report.counts.kept,
                report.counts.failed
            ),
            cause: e.cause().map(str::to_string),
        }),
    }
}

/// Which origin queues exist, asked once each.
#[derive(Default)]
struct Origins(HashMap<String, bool>);

impl Origins {
    async fn exists(&mut self, broker: &Broker, queue: &str) -> Result<bool> {
        if let Some(known) = self.0.get(queue) {
            return Ok(*known);
        }
        let exists = matches!(broker.probe_queue(queue).await?, Reply::Ok(_));
        self.0.insert(queue.to_string(), exists);
        Ok(exists)
    }
}

/// The filter's verdict; a run-time error is no match, counted.
fn selected(
    filter: Option<&Filter>,
    queue: &str,
    position: u64,
    d: &Delivery,
    errors: &mut u64,
) -> bool {
    let Some(f) = filter else { return true };
    match f.matches(&to_json(&MessageView::from_delivery(queue, position, d))) {
        Ok(m) => m,
        Err(_) => {
            *errors += 1;
            false
        }
    }
}

/// Where this message's copy goes, or `Err(reason)` when it has no known, existing origin.
async fn route(
    broker: &Broker,
    destination: &Destination,
    d: &Delivery,
    origins: &mut Origins,
) -> Result<std::result::Result<String, String>> {
    match destination {
        Destination::Queue(q) => Ok(Ok(q.clone())),
        Destination::Origin => match failure(d.properties.headers().as_ref()).origin {
            None => Ok(Err("no known origin queue (use --to)".into())),
            Some(o) if origins.exists(broker, &o).await? => Ok(Ok(o)),
            Some(o) => Ok(Err(format!("origin queue \"{o}\" not found"))),
        },
    }
}

fn preview_row(
    position: u64,
    d: &Delivery,
    destination: Option<String>,
    failure_text: Option<String>,
) -> PreviewRow {
    PreviewRow {
        position,
        message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
        destination,
        failure: failure_text,
    }
}

/// The non-destructive first pass: counts what would move; the queue is left as it was.
async fn survey(
    broker: &Broker,
    queue: &str,
    limit: Option<u64>,
    filter: Option<&Filter>,
    destination: &Destination,
    origins: &mut Origins,
    report: &mut ReplayReport,
) -> Result<()> {
    let mut reader = QueueReader::open(broker, queue, limit).await?;
    while let Some((pos, d)) = reader.next().await? {
        if !selected(filter, queue, pos, &d, &mut report.filter_errors) {
            report.counts.kept += 1;
            continue;
        }
        let (dest, why) = match route(broker, destination, &d, origins).await? {
            Ok(q) => {
                report.counts.replayed += 1;
                (Some(q), None)
            }
            Err(why) => {
                report.counts.failed += 1;
                (None, Some(why))
            }
        };
        if report.preview.len() < PREVIEW_ROWS {
            report.preview.push(preview_row(pos, &d, dest, why));
        }
    }
    reader.finish().await
}

/// The real pass. Every exit path (done, stopped, Ctrl-C) settles the publishes in flight, acks
/// the sources whose copies were confirmed, and requeues the rest; an error (connection lost)
/// leaves unconfirmed sources unacked, and the broker returns them.
async fn move_messages(
    broker: &Broker,
    settings: &Settings,
    queue: &str,
    a: &ReplayArgs,
    filter: Option<&Filter>,
    origins: &mut Origins,
    report: &mut ReplayReport,
) -> Result<()> {
    // With one destination and no filter every message looked at is replayed or stops the run,
    // so none waits unacked and the prefetch can be small; otherwise it must hold the kept ones.
    let cap = (filter.is_none() && matches!(report.destination, Destination::Queue(_)))
        .then_some((2 * crate::broker::publisher::WINDOW) as u16);
    let mut reader = QueueReader::open_with(broker, queue, a.limit, cap).await?;
    let mut publisher = ConfirmedPublisher::open(broker).await?;
    let mut stays = Stays::default();
    let bar = ui::progress(settings, reader.budget, "replaying");
    let pace = a.rate.map(|r| Duration::from_secs_f64(1.0 / r as f64));
    let started = tokio::time::Instant::now();
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    let mut published: u64 = 0;
    while report.problem.is_none() {
        let next = tokio::select! {
            biased;
            _ = &mut ctrl_c => {
                report.interrupted = true;
                break;
            }
            n = reader.next() => n?,
        };
        let Some((pos, d)) = next else { break };
        bar.inc(1);
        if !selected(filter, queue, pos, &d, &mut report.filter_errors) {
            report.counts.kept += 1;
            stays.add(d.delivery_tag);
            continue;
        }
        let target = match route(broker, &report.destination, &d, origins).await? {
            Ok(q) => q,
            Err(why) => {
                report.counts.failed += 1;
                stays.add(d.delivery_tag);
                if report.preview.len() < PREVIEW_ROWS {
                    report.preview.push(preview_row(pos, &d, None, Some(why)));
                }
                continue;
            }
        };
        if let Some(p) = pace {
            tokio::time::sleep_until(started + p * published as u32).await;
        }
        let props = d
            .properties
            .clone()
            .with_headers(replay_headers(d.properties.headers().as_ref()));
        let settled = publisher
            .publish(d.delivery_tag, &target, &d.data, props)
            .await?;
        published += 1;
        apply_settled(settled, &mut reader, report, &mut stays).await?;
    }
    let settled = publisher.flush().await?;
    apply_settled(settled, &mut reader, report, &mut stays).await?;
    bar.finish_and_clear();
    publisher.close().await;
    reader.finish().await
}

/// The lowest delivery tag that must stay in the queue (kept, failed): a multiple ack may only
/// cover tags below it.
#[derive(Default)]
struct Stays(Option<u64>);

impl Stays {
    fn add(&mut self, tag: u64) {
        self.0 = Some(self.0.map_or(tag, |t| t.min(tag)));
    }
}

/// Acks the sources of confirmed copies. Confirms settle in publish order, which is delivery-tag
/// order, so every delivery below the batch's highest confirmed tag is settled: when none of them
/// must stay, one multiple ack covers the batch.
async fn apply_settled(
    settled: Vec<Settled>,
    reader: &mut QueueReader<'_>,
    report: &mut ReplayReport,
    stays: &mut Stays,
) -> Result<()> {
    for s in &settled {
        if let Settled::Returned(tag, _) | Settled::Nacked(tag) = s {
            stays.add(*tag);
        }
    }
    let confirmed: Vec<u64> = settled
        .iter()
        .filter_map(|s| match s {
            Settled::Confirmed(t) => Some(*t),
            _ => None,
        })
        .collect();
    if let Some(&highest) = confirmed.iter().max() {
        if stays.0.is_none_or(|low| highest < low) {
            reader.ack_up_to(highest, confirmed.len() as u64).await?;
        } else {
            for tag in &confirmed {
                reader.ack(*tag).await?;
            }
        }
        report.counts.replayed += confirmed.len() as u64;
    }
    for s in settled {
        match s {
            Settled::Confirmed(_) => {}
            Settled::Returned(_, reason) => {
                report.counts.failed += 1;
                report.problem.get_or_insert(format!(
                    "a copy was returned by the broker ({reason}); its message was kept"
                ));
            }
            Settled::Nacked(_) => {
                report.counts.failed += 1;
                report.problem.get_or_insert(
                    "the broker refused (nacked) a copy; its message was kept".to_string(),
                );
            }
        }
    }
    Ok(())
}
