//! The reports of `dlq list` and `dlq peek`.

use serde_json::Value;

/// What a streaming command leaves for the end: its rows were already written by a sink.
pub(crate) struct BrowseReport {
    pub notes: Vec<String>,
    /// Set when the command did not do everything asked (exit 1), e.g. the broker cancelled it.
    pub problem: Option<String>,
}

/// `--group-by`: one row per distinct value, biggest count first.
pub(crate) struct GroupReport {
    pub expression: String,
    pub groups: Vec<(Value, u64)>,
    pub notes: Vec<String>,
}
