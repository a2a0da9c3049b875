//! Table and JSON for `dlq stats`.

use serde_json::{json, Value};

use super::{new_table, Report, Style};
use crate::error::Outcome;
use crate::report::stats::StatsReport;

impl Report for StatsReport {
    fn to_json(&self) -> Value {
        json!(self.services)
    }

    fn to_table(&self, style: &Style) -> String {
        let mut t = new_table(&["SERVICE", "QUEUE", "READY", "CONSUMERS"]);
        for s in &self.services {
            for q in [&s.work, &s.retry, &s.error] {
                let (ready, consumers) = match (q.ready, q.consumers) {
                    (Some(r), Some(c)) => (
                        style.cell(
                            r,
                            if r > 0 && q.queue == s.error.queue {
                                comfy_table::Color::Red
                            } else {
                                comfy_table::Color::Reset
                            },
                        ),
                        comfy_table::Cell::new(c),
                    ),
                    _ => (
                        style.cell("missing", comfy_table::Color::Red),
                        comfy_table::Cell::new("-"),
                    ),
                };
                t.add_row(vec![
                    comfy_table::Cell::new(&s.service),
                    comfy_table::Cell::new(&q.queue),
                    ready,
                    consumers,
                ]);
            }
        }
        t.to_string()
    }

    fn problem(&self) -> Option<String> {
        (!self.missing.is_empty()).then(|| {
            format!(
                "queue not found: {} (run `dlq topology apply`)",
                self.missing.join(", ")
            )
        })
    }

    fn outcome(&self) -> Outcome {
        if self.missing.is_empty() {
            Outcome::Success
        } else {
            Outcome::PartialFailure
        }
    }
}
