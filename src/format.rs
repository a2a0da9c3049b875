//! The output formats `-o` chooses between: a leaf of its own, so that `cli`, `settings`, `ui` and
//! `output` all name it without any of them depending on another for it.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// Human-readable tables.
    Table,
    /// One JSON document.
    Json,
    /// One JSON object per line.
    Jsonl,
}
