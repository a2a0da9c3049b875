//! The reports of the commands that move or remove messages: replay, export, import, purge.

use std::path::PathBuf;

use serde::Serialize;

use crate::error::Outcome;

/// Where copies go: one queue, or each message's own origin.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Destination {
    Queue(String),
    Origin,
}

impl Destination {
    pub(crate) fn describe(&self) -> String {
        match self {
            Destination::Queue(q) => format!("\"{q}\""),
            Destination::Origin => "each message's origin queue".to_string(),
        }
    }
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct Counts {
    pub replayed: u64,
    pub kept: u64,
    pub failed: u64,
}

/// A few of the messages a dry run or a confirmation shows.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct PreviewRow {
    pub position: u64,
    pub message_id: Option<String>,
    pub destination: Option<String>,
    pub failure: Option<String>,
    /// With --transform: one line per changed field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub changes: Option<Vec<String>>,
    /// With --transform: the message before and the transform's output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub before: Option<serde_json::Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub after: Option<serde_json::Value>,
}

pub(crate) struct ReplayReport {
    pub source: String,
    pub destination: Destination,
    pub counts: Counts,
    pub dry_run: bool,
    /// The user answered no: nothing was moved.
    pub declined: bool,
    pub preview: Vec<PreviewRow>,
    /// Why the run stopped early or why messages failed.
    pub problem: Option<String>,
    pub filter_errors: u64,
    /// With --transform: messages whose transform failed or gave no valid record (kept, failed).
    pub transform_errors: u64,
    pub first_transform_error: Option<String>,
    /// With --transform: how many of the messages it ran on it changed; None without one.
    pub changed: Option<u64>,
    pub interrupted: bool,
    pub seconds: f64,
    /// Messages in the source queue when the move started: what it set out to look at.
    pub depth: u64,
    /// Each time the connection was lost and the move went on through the --url list.
    pub reconnects: Vec<Reconnect>,
    /// Of `counts.kept`, those kept at the tail of the source (see `quorum::Tail`): an exact
    /// copy confirmed there, the original acked. Not looked at again after a reconnect.
    pub kept_at_tail: u64,
}

impl ReplayReport {
    pub(crate) fn outcome(&self) -> Outcome {
        if self.interrupted {
            Outcome::Interrupted
        } else if self.counts.failed > 0 || self.problem.is_some() {
            Outcome::PartialFailure
        } else {
            Outcome::Success
        }
    }
}

/// A lost connection the move survived.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Reconnect {
    /// The URL whose connection was lost (password as `***`).
    pub lost: String,
    /// Why, in one line.
    pub reason: String,
    /// The URL the move went on through.
    pub to: String,
    /// From the loss to the new connection.
    pub seconds: f64,
}

pub(crate) struct ExportReport {
    pub queue: String,
    pub file: PathBuf,
    pub exported: u64,
    pub removed: u64,
    pub kept: u64,
    pub filter_errors: u64,
    pub declined: bool,
    pub remove: bool,
    pub interrupted: bool,
    /// Why the run stopped early or looked at fewer messages than it set out to.
    pub problem: Option<String>,
    /// What was done to a torn last line left by an earlier, killed export.
    pub repaired_tail: Option<String>,
    /// Of `kept`, those kept at the tail of the queue (see `quorum::Tail`).
    pub kept_at_tail: u64,
}

impl ExportReport {
    pub(crate) fn outcome(&self) -> Outcome {
        if self.interrupted {
            Outcome::Interrupted
        } else if self.problem.is_some() {
            Outcome::PartialFailure
        } else {
            Outcome::Success
        }
    }
}

pub(crate) struct ImportReport {
    pub file: PathBuf,
    pub queue: String,
    pub imported: u64,
    pub records: u64,
    pub declined: bool,
    pub interrupted: bool,
    /// The first line not known to be published, when the run stopped before the end.
    pub resume_line: Option<u64>,
}

impl ImportReport {
    pub(crate) fn outcome(&self) -> Outcome {
        if self.interrupted {
            Outcome::Interrupted
        } else {
            Outcome::Success
        }
    }
}

pub(crate) struct PurgeReport {
    pub queue: String,
    pub purged: u64,
    pub declined: bool,
}
