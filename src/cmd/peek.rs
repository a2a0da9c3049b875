//! `dlq peek`: the message(s) at the head of a queue in full, left in place; with `--pop`, each
//! one is removed only after a yes (and after `--save` has it on disk).

use std::fs::File;
use std::io::Write;
use std::ops::ControlFlow;
use std::path::Path;

use crate::message::Message;

use super::list::{end_stream, near_limit_problem, open_source, output_error, Opened, Selection};
use crate::broker::browse::{self, Hold, Removal};
use crate::broker::quorum;
use crate::error::{Error, Result};
use crate::options::PeekOptions;
use crate::output::messages::{MessageSink, View};
use crate::output::Report;
use crate::report::browse::BrowseReport;
use crate::settings::Settings;
use crate::ui::{self, Consent};
use crate::util::{io_reason, printable};

pub(crate) async fn run(a: &PeekOptions, settings: &Settings) -> Result<Box<dyn Report>> {
    let queue = super::source::resolve(&a.source, settings)?.queue;
    if !a.pop {
        return peek(a, settings, &queue).await;
    }
    // Both checks come before connecting: a refusal must leave every message untouched.
    let consent = ui::consent(settings, "peek --pop")?;
    let save = a.save.as_deref().map(open_for_append).transpose()?;
    pop(a, settings, &queue, consent, save).await
}

/// Shows the head messages and gives them all back.
async fn peek(a: &PeekOptions, settings: &Settings, queue: &str) -> Result<Box<dyn Report>> {
    let Opened {
        broker,
        counts,
        guard,
        give_back,
        mut notes,
    } = open_source(settings, queue, &format!("peek {queue}")).await?;
    let mut selection = Selection::new(None);
    let mut sink = MessageSink::new(settings, View::Full);
    let mut write_error = None;
    let browsed = browse::browse(
        &broker,
        queue,
        counts.messages,
        Some(a.count),
        guard,
        give_back,
        |pos, d| {
            let Some(m) = selection.select(queue, pos, d) else {
                return ControlFlow::Continue(());
            };
            match sink.push(&m) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    write_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        },
    )
    .await;
    broker.close().await;
    let target = a.count.min(u64::from(counts.messages));
    let problem = end_stream(
        queue,
        sink,
        write_error,
        browsed,
        target,
        &selection,
        &mut notes,
    )?;
    Ok(Box::new(BrowseReport { notes, problem }))
}

/// The save file is opened (created, never truncated) before anything is fetched.
fn open_for_append(path: &Path) -> Result<File> {
    crate::util::open_append(path).map_err(|e| {
        Error::runtime(format!(
            "cannot open {} to save messages: {}",
            path.display(),
            io_reason(&e)
        ))
    })
}

/// One JSONL line, on disk (fsynced) before the message may be acked.
fn save_line(file: &mut File, message: &Message) -> std::io::Result<()> {
    let mut line = crate::json::to_vec(message)?;
    line.push(b'\n');
    file.write_all(&line)?;
    file.sync_all()
}

/// Counts for the closing note and the error messages of `pop`.
struct Popped<'q> {
    queue: &'q str,
    shown: u64,
    removed: u64,
}

impl Popped<'_> {
    fn so_far(&self) -> String {
        format!(
            "{} of {} shown message(s) removed from \"{}\"",
            self.removed,
            self.shown,
            printable(self.queue)
        )
    }
}

async fn pop(
    a: &PeekOptions,
    settings: &Settings,
    queue: &str,
    consent: Consent,
    mut save: Option<File>,
) -> Result<Box<dyn Report>> {
    let Opened {
        broker,
        counts,
        guard: keep_clear_of,
        give_back,
        mut notes,
    } = open_source(settings, queue, &format!("peek --pop {queue}")).await?;
    let mut hold = Hold::open(&broker, queue).await?;
    let mut sink = MessageSink::new(settings, View::Full);
    let mut done = Popped {
        queue,
        shown: 0,
        removed: 0,
    };
    let result = pop_each(
        a,
        queue,
        consent,
        save.as_mut(),
        keep_clear_of,
        &mut hold,
        &mut sink,
        &mut done,
    )
    .await;
    // Whatever happened, what is still held goes back in place before anything is reported,
    // after reading on as far as the queue type needs to keep its order.
    let ordered = hold
        .keep_order(give_back.requeue, u64::from(counts.messages), keep_clear_of)
        .await;
    let given_back = hold.give_back().await;
    broker.close().await;
    let finished = sink.finish().or_else(output_error);
    result?;
    given_back?;
    finished?;
    if let (Some((position, count)), Some(limit)) = (ordered?, keep_clear_of) {
        return Err(Error::runtime(near_limit_problem(
            queue, position, count, limit,
        )));
    }
    if counts.messages == 0 || done.shown == 0 {
        notes.push(format!("queue \"{}\" is empty", printable(queue)));
    }
    notes.push(match (&a.save, done.removed) {
        (Some(path), n) if n > 0 => format!("{} (saved in {})", done.so_far(), path.display()),
        _ => done.so_far(),
    });
    Ok(Box::new(BrowseReport {
        notes,
        problem: None,
    }))
}

#[allow(clippy::too_many_arguments)]
async fn pop_each(
    a: &PeekOptions,
    queue: &str,
    consent: Consent,
    mut save: Option<&mut File>,
    keep_clear_of: Option<i64>,
    hold: &mut Hold<'_>,
    sink: &mut MessageSink,
    done: &mut Popped<'_>,
) -> Result<()> {
    let shown_queue = printable(queue);
    let mut selection = Selection::new(None);
    for position in 1..=a.count {
        let Some(d) = hold.next().await? else {
            break;
        };
        // A message near its delivery-limit may still be removed; kept, it ends the run.
        let near = keep_clear_of.and_then(|limit| {
            let count = quorum::delivery_count(d.properties.headers().as_ref());
            (quorum::near_limit(count, limit) && position < a.count)
                .then(|| near_limit_problem(queue, position, count.unwrap_or(0), limit))
        });
        let Some(message) = selection.select(queue, position, &d) else {
            hold.keep(d.delivery_tag);
            continue;
        };
        sink.push(&message)
            .and_then(|()| sink.flush())
            .or_else(output_error)?;
        done.shown += 1;
        let question = format!("Remove this message from {shown_queue}?");
        let answer = tokio::task::spawn_blocking(move || ui::confirm(consent, &question))
            .await
            .map_err(|e| Error::runtime(format!("internal error: {e}")))
            .and_then(|answer| answer);
        match answer {
            Err(e) => {
                hold.keep(d.delivery_tag);
                return Err(Error::with_cause(
                    format!(
                        "no answer at the prompt; message {position} was not removed ({})",
                        done.so_far()
                    ),
                    e,
                ));
            }
            Ok(false) => {
                hold.keep(d.delivery_tag);
                if let Some(problem) = near {
                    return Err(Error::runtime(problem));
                }
            }
            Ok(true) => {
                remove(
                    hold,
                    d.delivery_tag,
                    position,
                    save.as_deref_mut(),
                    a,
                    &message,
                    done,
                )
                .await?
            }
        }
    }
    Ok(())
}

/// Save (when asked) and ack one message; any doubt is an error that says what state it is in.
async fn remove(
    hold: &mut Hold<'_>,
    delivery_tag: u64,
    position: u64,
    save: Option<&mut File>,
    a: &PeekOptions,
    message: &Message,
    done: &mut Popped<'_>,
) -> Result<()> {
    if let Some(why) = hold.lost_reason() {
        return Err(Error::runtime(format!(
            "the broker took message {position} back while the prompt was open ({why}); it was not removed ({})",
            done.so_far()
        )));
    }
    if let (Some(file), Some(path)) = (save, &a.save) {
        if let Err(e) = save_line(file, message) {
            hold.keep(delivery_tag);
            return Err(Error::runtime(format!(
                "cannot save message {position} to {}: {}; it was not removed ({})",
                path.display(),
                io_reason(&e),
                done.so_far()
            )));
        }
    }
    match hold.remove(delivery_tag).await {
        Removal::Removed => {
            done.removed += 1;
            Ok(())
        }
        Removal::TakenBack(why) => Err(Error::runtime(format!(
            "the broker took message {position} back before it could be removed ({why}); it is still in \"{}\" ({})",
            printable(done.queue),
            done.so_far()
        ))),
        Removal::Unsure(why) => Err(Error::runtime(format!(
            "the channel closed while removing message {position} ({why}); it may still be in \"{}\" ({})",
            printable(done.queue),
            done.so_far()
        ))),
    }
}
