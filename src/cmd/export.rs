//! `dlq export`: messages as JSONL, appended to a file; with --remove each message is acked only
//! after its line is written and fsynced.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::source::resolve;
use crate::broker::reader::QueueReader;
use crate::broker::Broker;
use crate::cli::ExportArgs;
use crate::error::{Error, Outcome, Result};
use crate::filter::Filter;
use crate::message::{to_json, MessageView};
use crate::output::Report;
use crate::settings::Settings;
use crate::ui;
use crate::util::io_reason;

/// Lines written before one fsync and the acks it allows.
const BATCH: usize = 256;

pub struct ExportReport {
    pub queue: String,
    pub file: PathBuf,
    pub exported: u64,
    pub removed: u64,
    pub kept: u64,
    pub filter_errors: u64,
    pub declined: bool,
    pub remove: bool,
}

impl ExportReport {
    pub fn outcome(&self) -> Outcome {
        Outcome::Success
    }
}

/// The file, opened to append: created when absent, never truncated.
fn open_for_append(path: &Path) -> Result<File> {
    crate::util::open_append(path).map_err(|e| {
        Error::runtime(format!(
            "cannot write {}: {}; nothing was exported",
            path.display(),
            io_reason(&e)
        ))
    })
}

fn write_err(path: &Path, e: &std::io::Error) -> Error {
    Error::runtime(format!(
        "cannot write {}: {}; messages not yet written stay in the queue",
        path.display(),
        io_reason(e)
    ))
}

pub async fn run(a: &ExportArgs, settings: &Settings) -> Result<Box<dyn Report>> {
    let filter = a
        .filter
        .as_deref()
        .map(|f| super::compile_filter(f, "--filter"))
        .transpose()?;
    let source = resolve(&a.source, settings)?;
    let consent = if a.remove {
        Some(ui::consent(settings, "export --remove")?)
    } else {
        None
    };
    let file = open_for_append(&a.file)?;
    let broker = Broker::connect(&settings.urls, &format!("export {}", source.queue)).await?;
    let mut report = ExportReport {
        queue: source.queue.clone(),
        file: a.file.clone(),
        exported: 0,
        removed: 0,
        kept: 0,
        filter_errors: 0,
        declined: false,
        remove: a.remove,
    };
    if consent == Some(ui::Consent::Ask) {
        // Ask before consuming: a prompt left open must not hold deliveries (consumer timeout).
        let depth = match broker.probe_queue(&source.queue).await? {
            crate::broker::amqp::Reply::Ok(c) => c.messages as u64,
            _ => 0,
        };
        let question = format!(
            "Write up to {} message(s) of \"{}\"{} to {} and remove them from the queue?",
            a.limit.map_or(depth, |l| l.min(depth)),
            source.queue,
            if filter.is_some() {
                " that match the filter"
            } else {
                ""
            },
            a.file.display()
        );
        if !ui::confirm(ui::Consent::Ask, &question)? {
            broker.close().await;
            report.declined = true;
            return Ok(Box::new(report));
        }
    }
    let mut reader = QueueReader::open(&broker, &source.queue, a.limit).await?;
    let bar = ui::progress(settings, reader.budget, "exporting");
    let result = export(
        &mut reader,
        file,
        &a.file,
        filter.as_ref(),
        a.remove,
        &mut report,
        &bar,
    )
    .await;
    bar.finish_and_clear();
    // Whatever happened, unacked messages go back in order.
    let finished = reader.finish().await;
    broker.close().await;
    result?;
    finished?;
    Ok(Box::new(report))
}

async fn export(
    reader: &mut QueueReader<'_>,
    file: File,
    path: &Path,
    filter: Option<&Filter>,
    remove: bool,
    report: &mut ExportReport,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let mut out = BufWriter::new(file);
    let mut pending: Vec<u64> = Vec::with_capacity(BATCH);
    let queue = reader.queue.clone();
    while let Some((pos, d)) = reader.next().await? {
        bar.inc(1);
        let json = to_json(&MessageView::from_delivery(&queue, pos, &d));
        let matched = match filter {
            None => true,
            Some(f) => f.matches(&json).unwrap_or_else(|_| {
                report.filter_errors += 1;
                false
            }),
        };
        if !matched {
            report.kept += 1;
            continue;
        }
        serde_json::to_writer(&mut out, &json)
            .map_err(|e| write_err(path, &std::io::Error::other(e)))?;
        out.write_all(b"\n").map_err(|e| write_err(path, &e))?;
        report.exported += 1;
        pending.push(d.delivery_tag);
        if pending.len() >= BATCH {
            commit(&mut out, path, &mut pending, reader, remove, report).await?;
        }
    }
    commit(&mut out, path, &mut pending, reader, remove, report).await
}

/// Flush and fsync the lines written so far; only then ack their messages.
async fn commit(
    out: &mut BufWriter<File>,
    path: &Path,
    pending: &mut Vec<u64>,
    reader: &mut QueueReader<'_>,
    remove: bool,
    report: &mut ExportReport,
) -> Result<()> {
    out.flush().map_err(|e| write_err(path, &e))?;
    out.get_ref().sync_all().map_err(|e| write_err(path, &e))?;
    if remove {
        for tag in pending.iter() {
            reader.ack(*tag).await?;
            report.removed += 1;
        }
    }
    pending.clear();
    Ok(())
}
