//! One module per subcommand; each returns a report for the output layer and never prints.

pub mod export;
pub mod import;
pub mod list;
pub mod peek;
pub mod purge;
pub mod replay;
pub mod source;
pub mod stats;
pub mod topology;

use crate::cli::{Command, TopologyCommand};
use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::output::Report;
use crate::settings::Settings;

pub async fn run(command: Command, settings: &Settings) -> Result<Box<dyn Report>> {
    match command {
        Command::Topology(TopologyCommand::Plan(a)) => topology::plan(&a, settings),
        Command::Topology(TopologyCommand::Apply(a)) => topology::apply(&a, settings).await,
        Command::Topology(TopologyCommand::Verify(a)) => topology::verify(&a, settings).await,
        Command::Stats(a) => stats::run(&a, settings).await,
        Command::Replay(a) => replay::run(&a, settings).await,
        Command::Export(a) => export::run(&a, settings).await,
        Command::Import(a) => import::run(&a, settings).await,
        Command::Purge(a) => purge::run(&a, settings).await,
        Command::List(a) => list::run(&a, settings).await,
        Command::Peek(a) => peek::run(&a, settings).await,
        Command::Completions(_) => {
            unreachable!("completions are generated before settings are read")
        }
    }
}

/// Compiles a jq expression given to `flag` (`--filter`, `--group-by`) before anything touches
/// the broker; a bad one is a usage error with the caret under the offending column.
pub fn compile_filter(expr: &str, flag: &str) -> Result<Filter> {
    Filter::compile(expr).map_err(|e| {
        Error::usage(e.to_string().replacen(
            "invalid filter",
            &format!("invalid {flag} expression"),
            1,
        ))
    })
}
