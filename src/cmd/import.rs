//! `dlq import`: publish the records of a JSONL file (confirms on), restoring exact body bytes,
//! properties and headers. The whole file is checked before anything is published.

use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::broker::amqp::Reply;
use crate::broker::publisher::{ConfirmedPublisher, Settled};
use crate::broker::Broker;
use crate::cli::ImportArgs;
use crate::error::{Error, Outcome, Result};
use crate::message::record_from_json;
use crate::output::Report;
use crate::settings::Settings;
use crate::ui;
use crate::util::io_reason;

pub struct ImportReport {
    pub file: PathBuf,
    pub queue: String,
    pub imported: u64,
    pub records: u64,
    pub declined: bool,
}

impl ImportReport {
    pub fn outcome(&self) -> Outcome {
        Outcome::Success
    }
}

fn open(path: &Path) -> Result<BufReader<File>> {
    File::open(path)
        .map(BufReader::new)
        .map_err(|e| Error::usage(format!("cannot read {}: {}", path.display(), io_reason(&e))))
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
        let parsed = serde_json::from_str::<serde_json::Value>(&line)
            .map_err(|e| format!("not JSON ({e})"))
            .and_then(|v| record_from_json(&v));
        Some(parsed.map(|r| (n, r)).map_err(|why| {
            Error::usage(format!(
                "{} line {n}: {why}; nothing was published",
                path.display()
            ))
        }))
    }))
}

pub async fn run(a: &ImportArgs, settings: &Settings) -> Result<Box<dyn Report>> {
    let consent = ui::consent(settings, "import")?;
    // Check every line first: a bad file publishes nothing.
    let mut count = 0u64;
    for r in records(&a.file)? {
        r?;
        count += 1;
    }
    let broker = Broker::connect(&settings.urls, &format!("import to {}", a.to)).await?;
    if !matches!(broker.probe_queue(&a.to).await?, Reply::Ok(_)) {
        broker.close().await;
        return Err(Error::runtime(format!(
            "queue \"{}\" not found; nothing was published",
            crate::util::printable(&a.to)
        )));
    }
    let mut report = ImportReport {
        file: a.file.clone(),
        queue: a.to.clone(),
        imported: 0,
        records: count,
        declined: false,
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
    let result = publish_all(&broker, a, &mut report, &bar).await;
    bar.finish_and_clear();
    broker.close().await;
    result.map_err(|e| Error::Runtime {
        message: format!(
            "{}; {} of {} message(s) were published",
            e.message(),
            report.imported,
            report.records
        ),
        cause: e.cause().map(str::to_string),
    })?;
    Ok(Box::new(report))
}

async fn publish_all(
    broker: &Broker,
    a: &ImportArgs,
    report: &mut ImportReport,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let mut publisher = ConfirmedPublisher::open(broker).await?;
    let mut failure: Option<String> = None;
    for r in records(&a.file)? {
        let (line, record) = r?;
        let settled = publisher
            .publish(line, &a.to, &record.body, record.properties)
            .await?;
        tally(settled, report, &mut failure, &a.file);
        bar.inc(1);
        if failure.is_some() {
            break;
        }
    }
    let settled = publisher.flush().await?;
    tally(settled, report, &mut failure, &a.file);
    publisher.close().await;
    match failure {
        Some(f) => Err(Error::runtime(f)),
        None => Ok(()),
    }
}

fn tally(
    settled: Vec<Settled>,
    report: &mut ImportReport,
    failure: &mut Option<String>,
    file: &Path,
) {
    for s in settled {
        match s {
            Settled::Confirmed(_) => report.imported += 1,
            Settled::Returned(line, why) => {
                failure.get_or_insert(format!(
                    "{} line {line} was returned by the broker ({why})",
                    file.display()
                ));
            }
            Settled::Nacked(line) => {
                failure.get_or_insert(format!(
                    "{} line {line} was refused (nacked) by the broker",
                    file.display()
                ));
            }
        }
    }
}
