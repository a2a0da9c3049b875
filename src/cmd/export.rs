//! `dlq export`: messages as JSONL, appended to a file; with --remove each message is acked only
//! after its line is written and fsynced.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::sync::Arc;

use tokio::task::JoinHandle;

use super::source::resolve;
use crate::broker::publisher::{ConfirmedPublisher, Settled};
use crate::broker::quorum::Tail as ReadTail;
use crate::broker::reader::{Handle, QueueReader, ReadMode};
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::message::Message;
use crate::options::ExportOptions;
use crate::output::Report;
use crate::report::moves::ExportReport;
use crate::settings::Settings;
use crate::ui;
use crate::util::io_reason;

/// Lines written before one fsync and the acks it allows.
const BATCH: usize = 256;

/// An fsync running on a blocking thread while the reader goes on, and the messages whose lines
/// it makes safe: they are acked once it has returned.
struct Syncing {
    sync: JoinHandle<std::io::Result<()>>,
    handles: Vec<Handle>,
    /// Of `handles`, the kept messages whose copy at the tail was confirmed: acked with the
    /// rest, in delivery order, so that one multiple ack covers the lot.
    at_tail: u64,
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

/// What to do with the bytes after the last newline of an existing archive (pure).
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Tail {
    /// Empty file, or it ends with a newline.
    Clean,
    /// A whole record without its newline: add the newline.
    Complete,
    /// Part of a record (a killed export): cut it off at this length. Its message was never
    /// acked (a message is removed only after its whole line is fsynced), so nothing is lost.
    Cut(u64),
}

pub(crate) fn classify_tail(content_tail: &[u8], tail_start: u64) -> Tail {
    if content_tail.is_empty() {
        return Tail::Clean;
    }
    match serde_json::from_slice::<serde_json::Value>(content_tail) {
        Ok(serde_json::Value::Object(_)) => Tail::Complete,
        _ => Tail::Cut(tail_start),
    }
}

/// Makes sure the archive ends with a complete line before anything is appended.
fn repair_tail(path: &Path) -> Result<Option<String>> {
    use std::io::{Read, Seek, SeekFrom};
    let Ok(mut f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
    else {
        return Ok(None); // absent (created later) or unreadable (open_for_append says why)
    };
    let fail = |e: std::io::Error| {
        Error::runtime(format!(
            "cannot check the end of {}: {}; nothing was exported",
            path.display(),
            io_reason(&e)
        ))
    };
    let len = f.metadata().map_err(fail)?.len();
    if len == 0 {
        return Ok(None);
    }
    // Look back far enough to find the last newline of any reasonable record.
    let mut start = len.saturating_sub(1 << 20);
    let tail = loop {
        f.seek(SeekFrom::Start(start)).map_err(fail)?;
        let mut buf = Vec::new();
        Read::by_ref(&mut f)
            .take(len - start)
            .read_to_end(&mut buf)
            .map_err(fail)?;
        match buf.iter().rposition(|&b| b == b'\n') {
            Some(i) => break (start + i as u64 + 1, buf[i + 1..].to_vec()),
            None if start == 0 => break (0, buf),
            None => start = start.saturating_sub(64 << 20),
        }
    };
    let (tail_start, bytes) = tail;
    match classify_tail(&bytes, tail_start) {
        Tail::Clean => Ok(None),
        Tail::Complete => {
            f.seek(SeekFrom::End(0)).map_err(fail)?;
            f.write_all(b"\n").map_err(fail)?;
            f.sync_all().map_err(fail)?;
            Ok(Some(format!(
                "{} did not end with a newline; one was added after its last record",
                path.display()
            )))
        }
        Tail::Cut(at) => {
            f.set_len(at).map_err(fail)?;
            f.sync_all().map_err(fail)?;
            Ok(Some(format!(
                "{} ended with an incomplete line ({} bytes, from an interrupted export); it was cut off (its message was never removed from the queue)",
                path.display(),
                len - at
            )))
        }
    }
}

pub(crate) async fn run(a: &ExportOptions, settings: &Settings) -> Result<Box<dyn Report>> {
    let filter = super::compile_optional(a.filter.as_deref(), "--filter")?;
    let source = resolve(&a.source, settings)?;
    let consent = if a.remove {
        Some(ui::consent(settings, "export --remove")?)
    } else {
        None
    };
    // Check that the file can be written before connecting; repair its end only once the user
    // agreed (below), so a "no" changes nothing.
    drop(open_for_append(&a.file)?);
    let broker = Broker::connect(&settings.urls, &format!("export {}", source.queue)).await?;
    // Messages read and left in place count toward a quorum queue's delivery-limit on some
    // versions: then read one at a time and stop before one could be dropped.
    let keeps = !a.remove || filter.is_some() || a.limit.is_some();
    let mode = if keeps {
        super::source::read_mode(settings, &broker, &source.queue).await?
    } else {
        ReadMode::default()
    };
    // Only a filtered `--remove` may keep at the tail: an export without it changes nothing,
    // and one with --limit stops before the end of the queue, so that kept messages at the tail
    // would end up behind the ones it never looked at.
    let mode = ReadMode {
        tail: match a.remove && filter.is_some() && a.limit.is_none() {
            true => mode.tail,
            false => ReadTail::Never,
        },
        ..mode
    };
    let mut report = ExportReport {
        queue: source.queue.clone(),
        file: a.file.clone(),
        exported: 0,
        removed: 0,
        kept: 0,
        filter_errors: 0,
        declined: false,
        remove: a.remove,
        interrupted: false,
        problem: None,
        repaired_tail: None,
        kept_at_tail: 0,
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
    report.repaired_tail = repair_tail(&a.file)?;
    let file = open_for_append(&a.file)?;
    let mut reader = QueueReader::open(&broker, &source.queue, mode).await?;
    let budget = a.limit.map_or(reader.depth, |l| l.min(reader.depth));
    let bar = ui::progress(settings, budget, "exporting");
    // Held until the report is returned: a Ctrl-C while the read is given back and the
    // connection closed must not end the process without the report.
    let _armed = crate::interrupt::arm();
    let mut publisher = match mode.tail {
        ReadTail::Never => None,
        _ => Some(ConfirmedPublisher::open(&broker, reader.budget().in_flight).await?),
    };
    let result = export(
        &mut reader,
        publisher.as_mut(),
        file,
        &a.file,
        filter.as_ref(),
        a.limit,
        a.remove,
        &mut report,
        &bar,
    )
    .await;
    bar.finish_and_clear();
    if let Some(p) = publisher {
        p.close().await;
    }
    // Whatever happened, unacked messages go back in order.
    let at_tail = reader.at_tail();
    let finished = reader.finish().await;
    if result.is_ok() && at_tail {
        if let Some(p) = super::source::consumed_beside(&broker, &source.queue).await? {
            report.problem.get_or_insert(p);
        }
    }
    broker.close().await;
    result?;
    if let Some(r) = finished? {
        ui::note(settings, &r.note(&source.queue));
    }
    Ok(Box::new(report))
}

#[allow(clippy::too_many_arguments)]
async fn export(
    reader: &mut QueueReader<'_>,
    mut publisher: Option<&mut ConfirmedPublisher<'_, Handle>>,
    file: File,
    path: &Path,
    filter: Option<&Filter>,
    limit: Option<u64>,
    remove: bool,
    report: &mut ExportReport,
    bar: &indicatif::ProgressBar,
) -> Result<()> {
    let synced = Arc::new(file.try_clone().map_err(|e| write_err(path, &e))?);
    let mut out = BufWriter::new(file);
    let mut pending: Vec<Handle> = Vec::with_capacity(BATCH);
    let mut pending_at_tail = 0u64;
    let mut syncing: Option<Syncing> = None;
    let queue = reader.queue.clone();
    let _armed = crate::interrupt::arm();
    let ctrl_c = crate::interrupt::interrupted();
    tokio::pin!(ctrl_c);
    'read: while limit.is_none_or(|l| report.exported < l) {
        if let Some(p) = publisher.as_deref_mut() {
            p.set_window(reader.budget().in_flight);
        }
        let size = crate::cmd::batch_size(limit, report.exported);
        let batch = tokio::select! {
            biased;
            _ = &mut ctrl_c => {
                report.interrupted = true;
                break;
            }
            n = reader.next_batch(size) => n?,
        };
        if batch.is_empty() {
            report.problem = reader.shortfall_problem();
            break;
        }
        let messages: Vec<Message> = batch
            .iter()
            .map(|(pos, d, _)| Message::from_delivery(&queue, *pos, d))
            .collect();
        let verdicts = match filter {
            None => vec![Ok(true); messages.len()],
            Some(f) => f.matches_all(&messages),
        };
        for (((_, d, handle), message), verdict) in batch.into_iter().zip(messages).zip(verdicts) {
            if limit.is_some_and(|l| report.exported >= l) || report.problem.is_some() {
                break 'read;
            }
            let matched = verdict.unwrap_or_else(|_| {
                report.filter_errors += 1;
                false
            });
            bar.inc(u64::from(matched || limit.is_none()));
            if !matched {
                report.kept += 1;
                match publisher.as_deref_mut() {
                    Some(p) if reader.keeps_at_tail() => {
                        let props = d.properties.clone();
                        let settled = p.publish(handle, &queue, &d.data, props).await?;
                        pending_at_tail +=
                            confirmed_at_tail(settled, reader, report, &mut pending).await?;
                    }
                    _ => {
                        reader.keep(handle).await?;
                        continue;
                    }
                }
            } else {
                crate::json::to_writer(&mut out, &message)
                    .map_err(|e| write_err(path, &std::io::Error::other(e)))?;
                out.write_all(b"\n").map_err(|e| write_err(path, &e))?;
                report.exported += 1;
                if remove {
                    pending.push(handle);
                } else {
                    reader.keep(handle).await?;
                }
            }
            if pending.len() >= BATCH.min(reader.budget().in_flight) {
                // What was kept at the tail and is in flight joins the batch once confirmed.
                if let Some(p) = publisher.as_deref_mut() {
                    let settled = p.flush().await?;
                    pending_at_tail +=
                        confirmed_at_tail(settled, reader, report, &mut pending).await?;
                }
                // The lines go to the file now; their fsync runs while the next ones are read.
                out.flush().map_err(|e| write_err(path, &e))?;
                settle(syncing.take(), path, reader, report).await?;
                let handles = std::mem::take(&mut pending);
                syncing = Some(start_sync(
                    &synced,
                    handles,
                    std::mem::take(&mut pending_at_tail),
                ));
            }
        }
    }
    // Every path ends here: what was kept at the tail is confirmed there, what was written is
    // fsynced, and only then are they acked.
    if let Some(p) = publisher {
        let settled = p.flush().await?;
        pending_at_tail += confirmed_at_tail(settled, reader, report, &mut pending).await?;
    }
    out.flush().map_err(|e| write_err(path, &e))?;
    settle(syncing.take(), path, reader, report).await?;
    settle(
        Some(start_sync(&synced, pending, pending_at_tail)),
        path,
        reader,
        report,
    )
    .await
}

/// Adds the kept messages whose copy at the tail was confirmed to the batch to ack (how many);
/// one returned or refused stays in place (out of order with those at the tail) and stops the
/// run.
async fn confirmed_at_tail(
    settled: Vec<Settled<Handle>>,
    reader: &mut QueueReader<'_>,
    report: &mut ExportReport,
    pending: &mut Vec<Handle>,
) -> Result<u64> {
    let mut confirmed = 0u64;
    for s in settled {
        match s {
            Settled::Confirmed(h) => {
                pending.push(h);
                confirmed += 1;
            }
            Settled::Returned(h, reason) => {
                reader.keep(h).await?;
                report.problem.get_or_insert(format!(
                    "the copy of a kept message, published to the tail of its queue, was returned by the broker ({reason}); the message was kept in place"
                ));
            }
            Settled::Nacked(h) => {
                reader.keep(h).await?;
                report.problem.get_or_insert(
                    "the broker refused (nacked) the copy of a kept message, published to the tail of its queue; the message was kept in place".to_string(),
                );
            }
        }
    }
    Ok(confirmed)
}

/// Starts the fsync of everything written so far (the lines of `handles` among it), on a
/// blocking thread: the reading loop does not wait for the disk.
fn start_sync(file: &Arc<File>, handles: Vec<Handle>, at_tail: u64) -> Syncing {
    let file = Arc::clone(file);
    Syncing {
        sync: tokio::task::spawn_blocking(move || file.sync_data()),
        handles,
        at_tail,
    }
}

/// Waits for an fsync; only then acks the messages whose lines it made safe.
async fn settle(
    syncing: Option<Syncing>,
    path: &Path,
    reader: &mut QueueReader<'_>,
    report: &mut ExportReport,
) -> Result<()> {
    let Some(Syncing {
        sync,
        handles,
        at_tail,
    }) = syncing
    else {
        return Ok(());
    };
    sync.await
        .unwrap_or_else(|e| Err(std::io::Error::other(e)))
        .map_err(|e| write_err(path, &e))?;
    if !handles.is_empty() {
        reader.ack(&handles).await?;
        report.removed += handles.len() as u64 - at_tail;
        report.kept_at_tail += at_tail;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_torn_record_is_cut_and_a_whole_one_completed() {
        assert_eq!(classify_tail(b"", 10), Tail::Clean);
        assert_eq!(classify_tail(br#"{"position":3,"bo"#, 40), Tail::Cut(40));
        assert_eq!(classify_tail(br#"{"position":3}"#, 40), Tail::Complete);
        assert_eq!(classify_tail(b"12", 40), Tail::Cut(40));
    }
}
