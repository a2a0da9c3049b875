//! Tables and JSON for `topology plan|apply|verify`.

use comfy_table::Color;
use serde_json::{json, Value};

use super::{new_table, Report, Style};
use crate::error::Outcome;
use crate::report::topology::{Action, PlanReport, TopologyReport};
use crate::topology::FindingStatus;

impl Report for PlanReport {
    fn notes(&self) -> Vec<String> {
        self.notes.clone()
    }

    fn to_json(&self) -> Value {
        serde_json::to_value(&self.topology).unwrap_or(Value::Null)
    }

    fn json_lines(&self) -> Vec<Value> {
        let t = &self.topology;
        let tag = |kind: &str, v: Value| {
            let mut v = v;
            if let Value::Object(m) = &mut v {
                m.insert("entity".into(), json!(kind));
            }
            v
        };
        let mut lines = Vec::new();
        lines.extend(t.exchanges.iter().map(|x| tag("exchange", json!(x))));
        lines.extend(t.queues.iter().map(|q| tag("queue", json!(q))));
        lines.extend(t.bindings.iter().map(|b| tag("binding", json!(b))));
        lines
    }

    fn to_table(&self, _style: &Style) -> String {
        let mut t = new_table(&["ENTITY", "NAME", "SERVICE", "DETAIL"]);
        for x in &self.topology.exchanges {
            let detail = match &x.kind {
                Some(k) => format!("{k}, durable"),
                None => "must already exist".into(),
            };
            t.add_row(vec![
                "exchange".to_string(),
                x.name.clone(),
                x.service.clone(),
                detail,
            ]);
        }
        for q in &self.topology.queues {
            let args: Vec<String> = q
                .arguments
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            let detail = if args.is_empty() {
                "durable".to_string()
            } else {
                format!("durable, {}", args.join(", "))
            };
            t.add_row(vec![
                "queue".to_string(),
                q.name.clone(),
                q.service.clone(),
                detail,
            ]);
        }
        for b in &self.topology.bindings {
            t.add_row(vec![
                "binding".to_string(),
                crate::topology::diff::binding_name(b),
                b.service.clone(),
                String::new(),
            ]);
        }
        t.to_string()
    }
}

fn status_color(s: FindingStatus) -> Color {
    match s {
        FindingStatus::Ok | FindingStatus::Unchanged => Color::Green,
        FindingStatus::Created => Color::Cyan,
        FindingStatus::Unchecked => Color::Yellow,
        FindingStatus::Missing | FindingStatus::Different | FindingStatus::Conflict => Color::Red,
    }
}

impl TopologyReport {
    fn drift(&self) -> usize {
        self.findings.iter().filter(|f| f.status.is_drift()).count()
    }
}

impl Report for TopologyReport {
    fn to_json(&self) -> Value {
        json!({
            "ok": self.drift() == 0,
            "checked_with": self.source,
            "items": self.findings,
        })
    }

    fn json_lines(&self) -> Vec<Value> {
        self.findings.iter().map(|f| json!(f)).collect()
    }

    fn to_table(&self, style: &Style) -> String {
        let mut t = new_table(&["ENTITY", "NAME", "SERVICE", "STATUS", "DETAIL"]);
        for f in &self.findings {
            t.add_row(vec![
                comfy_table::Cell::new(f.entity),
                comfy_table::Cell::new(&f.name),
                comfy_table::Cell::new(&f.service),
                style.cell(
                    format!("{:?}", f.status).to_lowercase(),
                    status_color(f.status),
                ),
                comfy_table::Cell::new(f.describe()),
            ]);
        }
        t.to_string()
    }

    fn notes(&self) -> Vec<String> {
        let mut notes = self.notes.clone();
        let unchecked = self
            .findings
            .iter()
            .filter(|f| f.status == FindingStatus::Unchecked)
            .count();
        if self.drift() == 0 {
            notes.push(match self.action {
                Action::Apply => format!(
                    "applied {} entities with {}",
                    self.findings.len(),
                    self.source
                ),
                Action::Verify if unchecked > 0 => format!(
                    "queues and exchanges match ({} bindings unchecked), checked with {}",
                    unchecked, self.source
                ),
                Action::Verify => format!(
                    "all {} entities match, checked with {}",
                    self.findings.len(),
                    self.source
                ),
            });
        }
        notes
    }

    fn problem(&self) -> Option<String> {
        let n = self.drift();
        (n > 0).then(|| match self.action {
            Action::Apply => format!(
                "{n} of {} entities conflict with what the broker has; they were left as they are, the rest was applied",
                self.findings.len()
            ),
            Action::Verify => format!("{n} of {} entities are missing or different on the broker", self.findings.len()),
        })
    }

    fn outcome(&self) -> Outcome {
        if self.drift() > 0 {
            Outcome::Drift
        } else {
            Outcome::Success
        }
    }
}
