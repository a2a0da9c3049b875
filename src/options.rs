//! What a command was asked to do, as plain data. `settings` turns clap's parse (`cli`) into
//! these once; nothing below `settings` sees a clap type (fd's `Opts` → `Config`).

use std::path::PathBuf;

/// One command and its options.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Task {
    TopologyPlan(Services),
    TopologyApply(Services),
    TopologyVerify(Services),
    Stats(Services),
    List(ListOptions),
    Peek(PeekOptions),
    Replay(ReplayOptions),
    Export(ExportOptions),
    Import(ImportOptions),
    Purge(SourceChoice),
}

/// The services a command is about; empty: every service in the config.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Services(pub Vec<String>);

/// Where messages are read from (exactly one of SERVICE and `--queue`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SourceChoice {
    /// A service's error queue.
    Service(String),
    /// A queue by name.
    Queue(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListOptions {
    pub source: SourceChoice,
    pub limit: Option<u64>,
    pub filter: Option<String>,
    pub group_by: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeekOptions {
    pub source: SourceChoice,
    pub count: u64,
    pub pop: bool,
    pub save: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplayOptions {
    pub source: SourceChoice,
    pub to: Option<String>,
    pub filter: Option<String>,
    pub transform: Option<String>,
    pub limit: Option<u64>,
    pub rate: Option<u64>,
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExportOptions {
    pub source: SourceChoice,
    pub file: PathBuf,
    pub filter: Option<String>,
    pub limit: Option<u64>,
    pub remove: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    pub file: PathBuf,
    pub to: String,
}
