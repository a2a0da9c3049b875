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
///
/// `@FILE` reads the expression from FILE (for one longer than a command-line argument may be),
/// except a jq format such as `@base64` when no file of that name exists.
pub(crate) fn compile_filter(expr: &str, flag: &str) -> Result<Filter> {
    let text = expression_text(expr, flag)?;
    Filter::compile(&text).map_err(|e| {
        Error::usage(e.to_string().replacen(
            "invalid filter",
            &format!("invalid {flag} expression"),
            1,
        ))
    })
}

/// [`compile_filter`] of an optional flag.
pub(crate) fn compile_optional(expr: Option<&str>, flag: &str) -> Result<Option<Filter>> {
    expr.map(|e| compile_filter(e, flag)).transpose()
}

/// jq's format strings, which are expressions of their own.
const JQ_FORMATS: [&str; 9] = [
    "text", "json", "html", "uri", "csv", "tsv", "sh", "base64", "base64d",
];

/// The expression itself, or the contents of FILE for `@FILE`.
fn expression_text<'a>(expr: &'a str, flag: &str) -> Result<std::borrow::Cow<'a, str>> {
    let Some(path) = expr.strip_prefix('@') else {
        return Ok(expr.into());
    };
    let path = std::path::Path::new(path);
    let format_name = JQ_FORMATS
        .iter()
        .any(|f| expr[1..].split([' ', '"']).next() == Some(*f));
    if format_name && !path.exists() {
        return Ok(expr.into());
    }
    std::fs::read_to_string(path).map(Into::into).map_err(|e| {
        Error::usage(format!(
            "cannot read the {flag} expression from {}: {}",
            crate::util::printable(&path.display().to_string()),
            crate::util::io_reason(&e)
        ))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn at_file_reads_the_expression_and_a_jq_format_stays_an_expression() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("f.jq");
        std::fs::write(&file, "# long one\n.body.n ==\n  3\n").unwrap();
        let arg = format!("@{}", file.display());
        assert_eq!(
            expression_text(&arg, "--filter").unwrap(),
            "# long one\n.body.n ==\n  3\n"
        );
        assert!(compile_filter(&arg, "--filter").is_ok());
        assert_eq!(expression_text("@base64", "--filter").unwrap(), "@base64");
        let missing = format!("@{}", dir.path().join("nope.jq").display());
        let Err(Error::Usage(m)) = expression_text(&missing, "--transform") else {
            panic!("read a missing file");
        };
        assert!(
            m.starts_with("cannot read the --transform expression from "),
            "{m}"
        );
        assert!(m.contains("nope.jq"), "{m}");
    }
}
