//! The output formats `-o` chooses between; its own file so that `cli` and `settings` can name
//! it without depending on the rendering (which depends on `settings`).

use clap::ValueEnum;

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    /// Human-readable tables
    Table,
    /// One JSON document
    Json,
    /// One JSON object per line
    Jsonl,
}
