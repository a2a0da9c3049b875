//! `dlq import`: publish the records of a JSONL file (confirms on), restoring exact body bytes,
//! properties and headers. The whole file is checked before anything is published.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::Path;

use crate::broker::amqp::Reply;
use crate::broker::publisher::{ConfirmedPublisher, Settled, SizeCheck, UNCHECKED_SIZE};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::message::record_from_json;
use crate::options::ImportOptions;
use crate::output::Report;
use crate::report::moves::ImportReport;
use crate::settings::Settings;
use crate::ui;
use crate::util::io_reason;

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::usage(format!("cannot read {}: {}", path.display(), io_reason(&e))))
}

fn ends_with_newline(path: &Path) -> bool {
    use std::io::{Read, Seek, SeekFrom};
    let mut last = [0u8; 1];
    File::open(path)
        .and_then(|mut f| {
            f.seek(SeekFrom::End(-1))?;
            f.read_exact(&mut last)
        })
        .map(|()| last[0] == b'\n')
        .unwrap_or(true)
}

/// Each non-empty line as (line number, record), stopping at the first bad one.
fn records(
    path: &Path,
) -> Result<impl Iterator<Item = Result<(u64, crate::message::Record)>> + '_> {
    let reader = open(path)?;
    Ok(reader.lines().enumerate().filter_map(move |(i, line)| {
        let n = i as u64 + 1;
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                return Some(Err(Error::usage(format!(
                    "{} line {n}: {}",
                    path.display(),
                    io_reason(&e)
                ))))
            }
        };
        if line.trim().is_empty() {
            return None;
        }
        let parsed = match crate::json::from_str_deep(&line) {
            // A record cut short with no newline after it: the last line of an export that was
            // killed while writing (its message was never removed from the queue).
            Err(e) if e.is_eof() && !ends_with_newline(path) => {
                return Some(Err(Error::usage(format!(
                    "{} line {n} is torn (cut short, no newline at the end: an interrupted export); nothing was published; `head -n {} {}` gives the complete lines before it",
                    path.display(),
                    n - 1,
                    path.display()
                ))))
            }
            Err(e) => Err(format!("not JSON ({e})")),
            Ok(v) => record_from_json(&v),
        };
        Some(parsed.map(|r| (n, r)).map_err(|why| {
            Error::usage(format!(
                "{} line {n}: {why}; nothing was published",
                path.display()
            ))
        }))
    }))
}

pub(crate) async fn run(a: &ImportOptions, settings: &Settings) -> Result<Box<dyn Report>> {
    let consent = ui::consent(settings, "import")?;
    // Check every line first: a bad file publishes nothing.
    let mut count = 0u64;
    // Records too big to publish unchecked: (line, size), and the body of the biggest.
    let mut big: Vec<(u64, usize)> = Vec::new();
    let mut biggest: Option<(u64, Vec<u8>)> = None;
    for r in records(&a.file)? {
        let (line, record) = r?;
        count += 1;
        let size = record.body.len();
        if size > UNCHECKED_SIZE {
            big.push((line, size));
            if biggest.as_ref().is_none_or(|(_, b)| size > b.len()) {
                biggest = Some((line, record.body));
            }
        }
    }
    let broker = Broker::connect(&settings.urls, &format!("import to {}", a.to)).await?;
    if !matches!(broker.probe_queue(&a.to).await?, Reply::Ok(_)) {
        broker.close().await;
        return Err(Error::runtime(format!(
            "queue \"{}\" not found; nothing was published",
            crate::util::printable(&a.to)
        )));
    }
    if let Some((line, body)) = &biggest {
        if let Some(max) = SizeCheck::default().over_limit(&broker, body).await? {
            broker.close().await;
            let over = big.iter().filter(|(_, s)| *s as u64 > max).count();
            return Err(Error::runtime(format!(
                "{} line {line}: {}{}; nothing was published",
                a.file.display(),
                crate::broker::too_large(body.len() as u64, max),
                if over > 1 {
                    format!(" ({over} records are over it)")
                } else {
                    String::new()
                }
            )));
        }
    }
    let mut report = ImportReport {
        file: a.file.clone(),
        queue: a.to.clone(),
        imported: 0,
        records: count,
        declined: false,
        interrupted: false,
        resume_line: None,
    };
    let question = format!(
        "Publish {count} message(s) from {} to \"{}\"?",
        a.file.display(),
        a.to
    );
    if count == 0 || !ui::confirm(consent, &question)? {
        report.declined = count > 0;
        broker.close().await;
        return Ok(Box::new(report));
    }
    let bar = ui::progress(settings, count, "importing");
    let mut progress = Progress::default();
    // Held until the report is returned (see export).
    let _armed = crate::interrupt::arm();
    let result = publish_all(&broker, a, &mut report, &mut progress, &bar).await;
    bar.finish_and_clear();
    broker.close().await;
    report.resume_line = progress.first_unsure();
    result.map_err(|e| {
        let unsure = progress.sent - report.imported - progress.refused;
        let resume = match progress.first_unsure() {
            Some(line) if unsure > 0 => format!(
                "; {unsure} more were sent but not confirmed (they may be in the queue): lines before {line} are all published (`tail -n +{line}` gives the rest)"
            ),
            Some(line) => format!("; lines before {line} are all published (`tail -n +{line}` gives the rest)"),
            None => String::new(),
        };
        let message = format!(
                "{}; {} of {} message(s) were published (confirmed){resume}",
                e.message(),
                report.imported,
                report.records
            );
        e.restated(message)
    })?;
    Ok(Box::new(report))
}

/// What is known of the publishes so far.
#[derive(Default)]
struct Progress {
    sent: u64,
    refused: u64,
    /// Line numbers of the records sent, in order, not yet known to be published.
    open: std::collections::BTreeSet<u64>,
    /// The last line read, to resume after it when everything sent was confirmed.
    last_line: u64,
    /// Every record of the file was sent.
    done: bool,
}

impl Progress {
    /// The first line not known to be published (the place to resume from).
    fn first_unsure(&self) -> Option<u64> {
        match self.open.first() {
            Some(&l) => Some(l),
            None if self.done => None,
            None => Some(self.last_line + 1),
        }
    }
}

async fn publish_all(
    broker: &Broker,
    a: &ImportOptions,
    report: &mut ImportReport,
    progress: &mut Progress,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let mut publisher =
        ConfirmedPublisher::open(broker, crate::broker::publisher::CONFIRM_WINDOW).await?;
    let mut failure: Option<String> = None;
    let _armed = crate::interrupt::arm();
    let mut finished = true;
    for r in records(&a.file)? {
        if crate::interrupt::requested() {
            report.interrupted = true;
            finished = false;
            break;
        }
        let (line, record) = r?;
        progress.last_line = line;
        progress.open.insert(line);
        progress.sent += 1;
        let settled = publisher
            .publish(line, &a.to, &record.body, record.properties)
            .await?;
        tally(settled, report, progress, &mut failure, &a.file);
        bar.inc(1);
        if failure.is_some() {
            finished = false;
            break;
        }
    }
    let settled = publisher.flush().await;
    tally(settled?, report, progress, &mut failure, &a.file);
    progress.done = finished;
    publisher.close().await;
    match failure {
        Some(f) => Err(Error::runtime(f)),
        None => Ok(()),
    }
}

fn tally(
    settled: Vec<Settled<u64>>,
    report: &mut ImportReport,
    progress: &mut Progress,
    failure: &mut Option<String>,
    file: &Path,
) {
    for s in settled {
        match s {
            Settled::Confirmed(line) => {
                report.imported += 1;
                progress.open.remove(&line);
            }
            Settled::Returned(line, why) => {
                progress.refused += 1;
                failure.get_or_insert(format!(
                    "{} line {line} was returned by the broker ({why})",
                    file.display()
                ));
            }
            Settled::Nacked(line) => {
                progress.refused += 1;
                failure.get_or_insert(format!(
                    "{} line {line} was refused (nacked) by the broker",
                    file.display()
                ));
            }
        }
    }
}
