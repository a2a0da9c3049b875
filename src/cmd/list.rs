//! `dlq list`: the messages of an error queue (or any queue), streamed to the output layer in
//! queue order, filtered or grouped by jq expressions; the queue is left exactly as it was.

use std::collections::HashMap;
use std::io;
use std::ops::ControlFlow;

use lapin::message::Delivery;
use serde_json::Value;

use crate::broker::amqp::QueueCounts;
use crate::broker::browse::{self, Browsed, End, GiveBack};
use crate::broker::quorum;
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::filter::{Filter, Verdict};
use crate::message::Message;
use crate::options::ListOptions;
use crate::output::messages::{MessageSink, View};
use crate::output::Report;
use crate::report::browse::{BrowseReport, GroupReport};
use crate::settings::Settings;
use crate::util::printable;

/// A queue opened for a read that leaves its messages in place.
pub(crate) struct Opened {
    pub broker: Broker,
    /// The queue's counts at the start.
    pub counts: QueueCounts,
    /// The delivery-limit to keep clear of (None: reads are free).
    pub guard: Option<i64>,
    /// Where a message given back goes (how a partial read keeps the order), and whether it may
    /// be given back last part first.
    pub give_back: GiveBack,
    /// Notes for the end of the run.
    pub notes: Vec<String>,
}

/// Connects, checks the queue exists and what browsing it risks, and says so on stderr.
pub(crate) async fn open_source(settings: &Settings, queue: &str, purpose: &str) -> Result<Opened> {
    let broker = Broker::connect(&settings.urls, purpose).await?;
    // The management API answers slowly compared with AMQP; ask it while the queue is probed.
    let (assessment, counts) = tokio::join!(
        super::source::assess(settings, &broker, queue),
        browse::open_queue(&broker, queue)
    );
    let counts = counts?;
    let shown = printable(queue);
    let last_first = assessment.in_place_known();
    let (guard, mut notes) = super::source::guard_for(assessment.risk, queue, settings)?;
    if counts.consumers > 0 {
        notes.push(format!(
            "\"{shown}\" has {} other consumer(s): messages they hold are not shown",
            counts.consumers
        ));
    }
    Ok(Opened {
        broker,
        counts,
        guard,
        give_back: GiveBack {
            requeue: assessment.requeue,
            last_first,
        },
        notes,
    })
}

/// Decides, per delivery, whether it is shown, and counts what the filter left out and why.
pub(crate) struct Selection {
    pub filter: Option<Filter>,
    pub filter_failures: u64,
    pub first_failure: Option<String>,
    pub matched: u64,
}

impl Selection {
    pub(crate) fn new(filter: Option<Filter>) -> Selection {
        Selection {
            filter,
            filter_failures: 0,
            first_failure: None,
            matched: 0,
        }
    }

    /// The message of a delivery when it is to be shown.
    pub(crate) fn select(&mut self, queue: &str, position: u64, d: &Delivery) -> Option<Message> {
        let message = Message::from_delivery(queue, position, d);
        if let Some(filter) = &self.filter {
            match filter.matches(&message) {
                Ok(true) => {}
                Ok(false) => return None,
                Err(why) => {
                    self.failed(&why);
                    return None;
                }
            }
        }
        self.matched += 1;
        Some(message)
    }

    /// Counts a delivery in `groups` when it matches; true when it matched. With a filter, the
    /// filter was chained with the group-by expression ([`Filter::then`]): both run on one jaq
    /// value.
    fn group(
        &mut self,
        queue: &str,
        position: u64,
        d: &Delivery,
        expr: &Filter,
        groups: &mut Groups,
    ) -> bool {
        let message = Message::from_delivery(queue, position, d);
        let grouped = match &self.filter {
            None => expr.first_value(&message),
            Some(filter) => match filter.select_then(&message) {
                Ok(Verdict { matched: false, .. }) => return false,
                Ok(Verdict { value, .. }) => value.unwrap_or(Ok(None)),
                Err(why) => {
                    self.failed(&why);
                    return false;
                }
            },
        };
        self.matched += 1;
        groups.add(grouped);
        true
    }

    fn failed(&mut self, why: &str) {
        self.filter_failures += 1;
        self.first_failure
            .get_or_insert_with(|| crate::sanitize::preview(why, 200));
    }

    /// Notes on what the filter left out, for the end of the run.
    pub(crate) fn notes(&self, read: u64) -> Vec<String> {
        let mut notes = Vec::new();
        if self.filter.is_some() {
            notes.push(format!(
                "{} of {read} messages matched the filter",
                self.matched
            ));
        }
        if self.filter_failures > 0 {
            notes.push(format!(
                "the filter failed on {} message(s), counted as no match; first error: {}",
                self.filter_failures,
                self.first_failure.as_deref().unwrap_or("unknown")
            ));
        }
        notes
    }
}

/// Why reading stopped at a message close to its delivery-limit (exit 1: the listing is partial).
pub(crate) fn near_limit_problem(
    queue: &str,
    position: u64,
    delivery_count: i64,
    limit: i64,
) -> String {
    format!(
        "\"{}\": {}; nothing behind it was read",
        printable(queue),
        quorum::stop_reason(position, delivery_count, limit)
    )
}

/// What the end of a browse means for the user: notes, a problem (exit 1) or an interruption.
pub(crate) fn ending(
    queue: &str,
    b: &Browsed,
    target: u64,
) -> Result<(Vec<String>, Option<String>)> {
    let shown = printable(queue);
    let mut notes = Vec::new();
    let mut problem = None;
    if let Some(r) = b.returning {
        notes.push(r.note(queue));
    }
    match b.end {
        End::Done if b.depth == 0 => notes.push(format!("queue \"{shown}\" is empty")),
        End::Done | End::Stopped => {}
        End::RanOut => {
            problem = Some(format!(
                "{} of the {target} message(s) of \"{shown}\" set out to look at were not looked at: the queue ran out (another consumer took them)",
                target.saturating_sub(b.read)
            ))
        }
        End::NearLimit {
            position,
            delivery_count,
            limit,
        } => problem = Some(near_limit_problem(queue, position, delivery_count, limit)),
        End::Cancelled => {
            problem = Some(format!(
                "the broker cancelled the read of \"{shown}\" after {} messages (was the queue deleted?)",
                b.read
            ))
        }
        End::Interrupted => {
            return Err(Error::Interrupted(format!(
                "interrupted after {} messages; every message is back in \"{shown}\", in its place",
                b.read
            )))
        }
    }
    Ok((notes, problem))
}

/// A write error on stdout: a closed pipe (`| head`) just ends the listing.
/// Ends a streamed listing: the sink's first write error or its closing, then how the browse
/// ended; adds the notes and returns the problem, if any (exit 1).
pub(crate) fn end_stream(
    queue: &str,
    sink: MessageSink,
    write_error: Option<io::Error>,
    browsed: Result<Browsed>,
    target: u64,
    selection: &Selection,
    notes: &mut Vec<String>,
) -> Result<Option<String>> {
    let finished = match write_error {
        Some(e) => Err(e),
        None => sink.finish(),
    };
    let browsed = browsed?;
    finished.or_else(output_error)?;
    let (end_notes, problem) = ending(queue, &browsed, target)?;
    notes.extend(selection.notes(browsed.read));
    notes.extend(end_notes);
    Ok(problem)
}

pub(crate) fn output_error(e: io::Error) -> Result<()> {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Ok(())
    } else {
        Err(Error::runtime(format!(
            "cannot write to stdout: {}",
            crate::util::io_reason(&e)
        )))
    }
}

pub(crate) async fn run(a: &ListOptions, settings: &Settings) -> Result<Box<dyn Report>> {
    let queue = super::source::resolve(&a.source, settings)?.queue;
    let filter = super::compile_optional(a.filter.as_deref(), "--filter")?;
    let group_by = super::compile_optional(a.group_by.as_deref(), "--group-by")?;
    // With both, one jaq value per message serves the filter and the group-by.
    let filter = match (filter, &group_by) {
        (Some(f), Some(g)) => Some(f.then(g)),
        (f, _) => f,
    };
    let Opened {
        broker,
        counts,
        guard,
        give_back,
        mut notes,
    } = open_source(settings, &queue, &format!("list {queue}")).await?;
    // --limit caps the matches: with a filter, read on until that many matched.
    let (read_limit, match_limit) = match filter {
        Some(_) => (None, a.limit),
        None => (a.limit, None),
    };
    let target = read_limit.map_or(u64::from(counts.messages), |l| {
        l.min(u64::from(counts.messages))
    });
    let mut matched = 0u64;
    let mut enough = move || {
        matched += 1;
        match_limit.is_some_and(|l| matched >= l)
    };
    let mut selection = Selection::new(filter);
    let result = match (&group_by, a.group_by.as_deref()) {
        (Some(expr), Some(text)) => {
            let mut groups = Groups::default();
            let browsed = browse::browse(
                &broker,
                &queue,
                counts.messages,
                read_limit,
                guard,
                give_back,
                |pos, d| {
                    if selection.group(&queue, pos, d, expr, &mut groups) && enough() {
                        return ControlFlow::Break(());
                    }
                    ControlFlow::Continue(())
                },
            )
            .await;
            broker.close().await;
            let browsed = browsed?;
            let (end_notes, problem) = ending(&queue, &browsed, target)?;
            notes.extend(selection.notes(browsed.read));
            notes.extend(groups.notes());
            notes.extend(end_notes);
            if let Some(p) = problem {
                return Err(Error::runtime(p));
            }
            Box::new(GroupReport {
                expression: text.to_string(),
                groups: groups.into_sorted(),
                notes,
            }) as Box<dyn Report>
        }
        _ => {
            let mut sink = MessageSink::new(settings, View::Row);
            let mut write_error = None;
            let browsed = browse::browse(
                &broker,
                &queue,
                counts.messages,
                read_limit,
                guard,
                give_back,
                |pos, d| match selection.select(&queue, pos, d) {
                    Some(m) => match sink.push(&m) {
                        Ok(()) if enough() => ControlFlow::Break(()),
                        Ok(()) => ControlFlow::Continue(()),
                        Err(e) => {
                            write_error = Some(e);
                            ControlFlow::Break(())
                        }
                    },
                    None => ControlFlow::Continue(()),
                },
            )
            .await;
            broker.close().await;
            let problem = end_stream(
                &queue,
                sink,
                write_error,
                browsed,
                target,
                &selection,
                &mut notes,
            )?;
            Box::new(BrowseReport { notes, problem })
        }
    };
    Ok(result)
}

/// Counts per distinct value; memory grows with the number of distinct values, not messages.
#[derive(Default)]
struct Groups {
    /// Compact JSON text of a value → its index in `rows`, which keep first-seen order for ties.
    index: HashMap<String, usize>,
    rows: Vec<(Value, u64)>,
    failures: u64,
    first_failure: Option<String>,
}

impl Groups {
    /// Counts one message's group-by value (none: null), or the expression's error.
    fn add(&mut self, value: Result<Option<Value>, String>) {
        let value = match value {
            Ok(v) => v.unwrap_or(Value::Null),
            Err(why) => {
                self.failures += 1;
                self.first_failure
                    .get_or_insert_with(|| crate::sanitize::preview(&why, 200));
                return;
            }
        };
        let key = value.to_string();
        match self.index.get(&key) {
            Some(&i) => self.rows[i].1 += 1,
            None => {
                self.index.insert(key, self.rows.len());
                self.rows.push((value, 1));
            }
        }
    }

    fn notes(&self) -> Vec<String> {
        if self.failures == 0 {
            return Vec::new();
        }
        vec![format!(
            "the --group-by expression failed on {} message(s), not counted; first error: {}",
            self.failures,
            self.first_failure.as_deref().unwrap_or("unknown")
        )]
    }

    /// Biggest count first; equal counts keep the order in which their values first appeared.
    fn into_sorted(mut self) -> Vec<(Value, u64)> {
        self.rows.sort_by_key(|row| std::cmp::Reverse(row.1));
        self.rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn groups_are_counted_biggest_first_ties_in_first_seen_order() {
        let expr = Filter::compile(".failure.message").unwrap_or_else(|e| panic!("{e}"));
        let mut g = Groups::default();
        for m in ["b", "a", "a", "c", "b", "a"] {
            g.add(expr.first_value(&json!({"failure": {"message": m}})));
        }
        g.add(expr.first_value(&json!({})));
        assert_eq!(
            g.into_sorted(),
            vec![
                (json!("a"), 3),
                (json!("b"), 2),
                (json!("c"), 1),
                (Value::Null, 1)
            ]
        );
    }

    #[test]
    fn group_by_failures_are_counted_not_grouped() {
        let expr = Filter::compile(r#".x | test("y")"#).unwrap_or_else(|e| panic!("{e}"));
        let mut g = Groups::default();
        g.add(expr.first_value(&json!({"x": 1})));
        g.add(expr.first_value(&json!({"x": "y"})));
        assert_eq!(g.failures, 1);
        assert_eq!(g.into_sorted(), vec![(json!(true), 1)]);
    }

    #[test]
    fn compile_errors_name_the_flag_and_keep_the_caret() {
        let Err(Error::Usage(text)) = crate::cmd::compile_filter(".a ==", "--group-by") else {
            panic!("compiled");
        };
        assert!(
            text.starts_with("invalid --group-by expression: "),
            "{text}"
        );
        assert!(text.contains('^'), "{text}");
    }
}
