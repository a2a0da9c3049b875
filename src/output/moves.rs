//! Summaries of the commands that move or remove messages: replay, export, import, purge.

use serde_json::{json, Value};

use super::{new_table, Report, Style};
use crate::error::Outcome;
use crate::report::moves::{ExportReport, ImportReport, PurgeReport, ReplayReport};
use crate::sanitize::for_terminal;

/// The rows a dry run or a confirmation shows: a few of the messages and where they would go,
/// and with --transform what it changes in each (field paths in colour on a terminal).
pub(crate) fn preview_text(r: &ReplayReport, color: bool) -> String {
    let c = r.counts;
    let mut text = format!(
        "{} of {} message(s) looked at in \"{}\" would go to {} ({} kept{})",
        c.replayed,
        c.replayed + c.kept + c.failed,
        for_terminal(&r.source),
        for_terminal(&r.destination.describe()),
        c.kept,
        if c.failed > 0 {
            format!(", {} without a destination", c.failed)
        } else {
            String::new()
        }
    );
    if !r.preview.is_empty() {
        let mut t = new_table(&["POSITION", "MESSAGE ID", "DESTINATION"]);
        for p in &r.preview {
            let dest = match (&p.destination, &p.failure) {
                (Some(d), _) => d.clone(),
                (None, Some(why)) => format!("- ({why})"),
                (None, None) => "-".into(),
            };
            t.add_row(vec![
                p.position.to_string(),
                for_terminal(p.message_id.as_deref().unwrap_or("-")),
                for_terminal(&dest),
            ]);
        }
        text.push('\n');
        text.push_str(&t.to_string());
        for p in &r.preview {
            let Some(changes) = &p.changes else { continue };
            text.push_str(&format!("\nmessage at position {}:", p.position));
            if changes.is_empty() {
                text.push_str(" the transform changes nothing");
            }
            for line in changes {
                let line = for_terminal(line);
                let line = match line.split_once(": ") {
                    Some((path, rest)) if color => format!("\x1b[33m{path}\x1b[0m: {rest}"),
                    _ => line,
                };
                text.push_str(&format!("\n  {line}"));
            }
        }
    }
    if r.changed == Some(0) && r.counts.replayed > 0 {
        text.push_str(
            "\nthe transform changes nothing: the copies would be those of a plain replay",
        );
    }
    text
}

/// What keeping at the tail did to the source queue: said after every move that did it.
pub(crate) fn at_tail_note(n: u64, queue: &str, stopped_early: bool) -> String {
    let queue = for_terminal(queue);
    if stopped_early {
        format!(
            "{n} kept message(s) were moved to the tail of \"{queue}\" as exact copies before the run stopped: they now come after the messages not yet looked at"
        )
    } else {
        format!(
            "{n} kept message(s) were moved to the tail of \"{queue}\" as exact copies, in their order (on a queue this long that costs the broker less than holding them); they lost the exchange, routing key and redelivered flag they were delivered with"
        )
    }
}

impl Report for ReplayReport {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "replayed": self.counts.replayed,
            "kept": self.counts.kept,
            "failed": self.counts.failed,
        });
        if !self.reconnects.is_empty() {
            v["reconnects"] = json!(self.reconnects);
        }
        if self.kept_at_tail > 0 {
            v["kept_at_tail"] = json!(self.kept_at_tail);
        }
        if self.dry_run {
            v["dry_run"] = json!(true);
            v["preview"] = json!(self.preview);
            if let Some(changed) = self.changed {
                v["changed"] = json!(changed);
            }
        }
        v
    }

    fn to_table(&self, _style: &Style) -> String {
        let c = self.counts;
        if self.dry_run {
            return format!(
                "dry run, nothing moved: {}",
                preview_text(self, _style.color)
            );
        }
        if self.declined {
            return "nothing replayed".to_string();
        }
        let rate = if self.seconds > 0.0 && c.replayed > 0 {
            format!(
                " in {:.1} s ({:.0} msg/s)",
                self.seconds,
                c.replayed as f64 / self.seconds
            )
        } else {
            String::new()
        };
        let reconnected = match self.reconnects.len() {
            0 => String::new(),
            1 => "; reconnected once".to_string(),
            n => format!("; reconnected {n} times"),
        };
        format!(
            "replayed {}, kept {}, failed {}{rate}{reconnected}",
            c.replayed, c.kept, c.failed
        )
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if self.filter_errors > 0 {
            notes.push(format!(
                "the filter failed on {} message(s); they counted as no match",
                self.filter_errors
            ));
        }
        if let Some(first) = &self.first_transform_error {
            notes.push(format!(
                "the transform failed on {} message(s), which stay in place; first: {}",
                self.transform_errors,
                for_terminal(first)
            ));
        }
        if self.kept_at_tail > 0 {
            notes.push(at_tail_note(
                self.kept_at_tail,
                &self.source,
                self.interrupted || self.problem.is_some(),
            ));
        }
        for r in &self.reconnects {
            notes.push(format!(
                "{}; went on through {} after {:.1} s: copies in flight then may have been published twice",
                for_terminal(&r.reason),
                r.to,
                r.seconds
            ));
        }
        if !self.dry_run && !self.declined && !self.preview.is_empty() {
            for p in &self.preview {
                if let Some(why) = &p.failure {
                    notes.push(format!(
                        "message at position {} kept: {}",
                        p.position,
                        for_terminal(why)
                    ));
                }
            }
        }
        notes
    }

    fn problem(&self) -> Option<String> {
        if self.interrupted {
            return Some(format!(
                "interrupted: replayed {}, kept {}, failed {}; what was in flight was confirmed first",
                self.counts.replayed, self.counts.kept, self.counts.failed
            ));
        }
        if let Some(p) = &self.problem {
            return Some(format!("replay stopped: {p}"));
        }
        (self.counts.failed > 0 && !self.dry_run).then(|| {
            format!(
                "{} message(s) could not be replayed and were kept",
                self.counts.failed
            )
        })
    }

    fn outcome(&self) -> Outcome {
        ReplayReport::outcome(self)
    }
}

impl Report for ExportReport {
    fn to_json(&self) -> Value {
        let mut v = json!({
            "file": self.file.display().to_string(),
            "queue": self.queue,
            "exported": self.exported,
            "removed": self.removed,
            "kept": self.kept,
        });
        if self.kept_at_tail > 0 {
            v["kept_at_tail"] = json!(self.kept_at_tail);
        }
        v
    }

    fn to_table(&self, _style: &Style) -> String {
        if self.declined {
            return "nothing exported".into();
        }
        format!(
            "exported {} message(s) from \"{}\" to {}{}, kept {}",
            self.exported,
            for_terminal(&self.queue),
            self.file.display(),
            if self.remove {
                format!(" (removed {})", self.removed)
            } else {
                String::new()
            },
            self.kept
        )
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = Vec::new();
        if let Some(t) = &self.repaired_tail {
            notes.push(for_terminal(t));
        }
        if self.kept_at_tail > 0 {
            notes.push(at_tail_note(
                self.kept_at_tail,
                &self.queue,
                self.interrupted || self.problem.is_some(),
            ));
        }
        if self.filter_errors > 0 {
            notes.push(format!(
                "the filter failed on {} message(s); they counted as no match",
                self.filter_errors
            ));
        }
        notes
    }

    fn problem(&self) -> Option<String> {
        if self.interrupted {
            return Some(format!(
                "interrupted: exported {} (removed {}), kept {}; every line written was fsynced first",
                self.exported, self.removed, self.kept
            ));
        }
        self.problem.as_ref().map(|p| for_terminal(p))
    }

    fn outcome(&self) -> Outcome {
        ExportReport::outcome(self)
    }
}

impl Report for ImportReport {
    fn to_json(&self) -> Value {
        json!({ "file": self.file.display().to_string(), "queue": self.queue, "imported": self.imported, "records": self.records })
    }

    fn to_table(&self, _style: &Style) -> String {
        if self.declined {
            return "nothing imported".into();
        }
        format!(
            "imported {} message(s) into \"{}\"",
            self.imported,
            for_terminal(&self.queue)
        )
    }

    fn problem(&self) -> Option<String> {
        self.interrupted.then(|| {
            let resume = match self.resume_line {
                Some(line) => format!(
                    "; lines before {line} are all published (`tail -n +{line}` gives the rest)"
                ),
                None => String::new(),
            };
            format!(
                "interrupted: {} of {} message(s) were published (confirmed){resume}",
                self.imported, self.records
            )
        })
    }

    fn outcome(&self) -> Outcome {
        ImportReport::outcome(self)
    }
}

impl Report for PurgeReport {
    fn to_json(&self) -> Value {
        json!({ "queue": self.queue, "purged": self.purged })
    }

    fn to_table(&self, _style: &Style) -> String {
        if self.declined {
            return "nothing purged".into();
        }
        format!(
            "purged {} message(s) from \"{}\"",
            self.purged,
            for_terminal(&self.queue)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::moves::{Counts, Destination};

    fn report() -> ReplayReport {
        ReplayReport {
            source: "billing.error".into(),
            destination: Destination::Queue("billing".into()),
            counts: Counts {
                replayed: 30,
                kept: 70,
                failed: 0,
            },
            dry_run: false,
            declined: false,
            preview: vec![],
            problem: None,
            filter_errors: 0,
            transform_errors: 0,
            first_transform_error: None,
            changed: None,
            interrupted: false,
            seconds: 0.0,
            depth: 0,
            reconnects: Vec::new(),
            kept_at_tail: 0,
        }
    }

    #[test]
    fn replay_summary_is_the_contract_sentence_and_object() {
        let r = report();
        assert_eq!(
            r.to_table(&Style { color: false }),
            "replayed 30, kept 70, failed 0"
        );
        assert_eq!(
            r.to_json(),
            json!({"replayed": 30, "kept": 70, "failed": 0})
        );
        assert_eq!(Report::outcome(&r), Outcome::Success);
    }

    #[test]
    fn a_reconnect_is_in_the_summary_the_json_and_a_note() {
        let mut r = report();
        r.counts.replayed = 20_000;
        r.reconnects.push(crate::report::moves::Reconnect {
            lost: "amqp://u:***@n1:5672/%2f".into(),
            reason: "lost the connection to amqp://u:***@n1:5672/%2f: connection reset by peer"
                .into(),
            to: "amqp://u:***@n2:5672/%2f".into(),
            seconds: 0.25,
        });
        assert!(r
            .to_table(&Style { color: false })
            .ends_with("; reconnected once"));
        assert_eq!(
            r.to_json()["reconnects"][0]["to"],
            "amqp://u:***@n2:5672/%2f"
        );
        assert!(r.notes()[0].contains("went on through amqp://u:***@n2:5672/%2f after 0.2 s"));
        assert_eq!(Report::outcome(&r), Outcome::Success);
    }

    #[test]
    fn any_failed_message_exits_1() {
        let mut r = report();
        r.counts.failed = 1;
        assert_eq!(Report::outcome(&r), Outcome::PartialFailure);
        assert!(r.problem().unwrap().contains("1 message(s)"));
    }

    #[test]
    fn interruption_exits_130_with_the_counts() {
        let mut r = report();
        r.interrupted = true;
        assert_eq!(Report::outcome(&r), Outcome::Interrupted);
        assert!(r.problem().unwrap().contains("replayed 30"));
    }
}
