//! Renders command reports as a table (people) or JSON / JSONL (scripts); the only writer of stdout.

pub mod messages;
pub mod moves;
mod stats;
mod topology;

use std::io::Write;

use comfy_table::{presets, Cell, Color, ContentArrangement, Table};
use serde_json::Value;

pub(crate) use crate::format::OutputFormat;

use crate::error::Outcome;
use crate::settings::Settings;

/// What every command returns: one value the output layer can show three ways.
pub trait Report {
    /// The document `-o json` prints.
    fn to_json(&self) -> Value;
    /// The lines `-o jsonl` prints; by default the items of a JSON array, else the one object.
    fn json_lines(&self) -> Vec<Value> {
        match self.to_json() {
            Value::Array(items) => items,
            other => vec![other],
        }
    }
    /// What a terminal shows.
    fn to_table(&self, style: &Style) -> String;
    /// One-line remarks for stderr (hidden by --quiet).
    fn notes(&self) -> Vec<String> {
        Vec::new()
    }
    /// A one-line error for stderr when the outcome is not a success (always shown).
    fn problem(&self) -> Option<String> {
        None
    }
    fn outcome(&self) -> Outcome {
        Outcome::Success
    }
    /// True when a sink already wrote the results to stdout while the command ran (`list`,
    /// `peek`): `emit` then writes only the notes and the problem.
    fn streamed(&self) -> bool {
        false
    }
}

pub struct Style {
    pub color: bool,
}

impl Style {
    pub(crate) fn cell(&self, text: impl ToString, color: Color) -> Cell {
        let c = Cell::new(text.to_string());
        if self.color {
            c.fg(color)
        } else {
            c
        }
    }
}

pub(crate) fn new_table(headers: &[&str]) -> Table {
    let mut t = Table::new();
    t.load_preset(presets::UTF8_FULL_CONDENSED)
        .set_content_arrangement(ContentArrangement::Dynamic)
        .set_header(headers.iter().map(|h| Cell::new(*h)));
    t
}

/// Writes the report to stdout in the chosen format, and its notes and problem to stderr.
pub fn emit(report: &dyn Report, settings: &Settings) -> std::io::Result<()> {
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match settings.output {
        _ if report.streamed() => {}
        OutputFormat::Table => {
            let text = report.to_table(&Style {
                color: settings.color,
            });
            if !text.is_empty() {
                writeln!(out, "{}", text.trim_end_matches('\n'))?;
            }
        }
        OutputFormat::Json => {
            crate::json::to_writer_pretty(&mut out, &report.to_json())?;
            writeln!(out)?;
        }
        OutputFormat::Jsonl => {
            for line in report.json_lines() {
                crate::json::to_writer(&mut out, &line)?;
                writeln!(out)?;
            }
        }
    }
    out.flush()?;
    if !settings.quiet {
        for note in report.notes() {
            eprintln!("note: {}", crate::sanitize::for_terminal(&note));
        }
    }
    if let Some(p) = report.problem() {
        eprintln!("error: {}", crate::sanitize::line(&p));
    }
    Ok(())
}
