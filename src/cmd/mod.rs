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

use crate::error::{Error, Result};
use crate::filter::Filter;
use crate::options::Task;
use crate::output::Report;
use crate::settings::Settings;

pub async fn run(task: Task, settings: &Settings) -> Result<Box<dyn Report>> {
    match task {
        Task::TopologyPlan(s) => topology::plan(&s, settings),
        Task::TopologyApply(s) => topology::apply(&s, settings).await,
        Task::TopologyVerify(s) => topology::verify(&s, settings).await,
        Task::Stats(s) => stats::run(&s, settings).await,
        Task::Replay(o) => replay::run(&o, settings).await,
        Task::Export(o) => export::run(&o, settings).await,
        Task::Import(o) => import::run(&o, settings).await,
        Task::Purge(s) => purge::run(&s, settings).await,
        Task::List(o) => list::run(&o, settings).await,
        Task::Peek(o) => peek::run(&o, settings).await,
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

/// At most this many deliveries are decided together (one hand-over to the filter's thread).
pub(crate) const READ_BATCH: usize = 256;

/// The largest batch that cannot take a message past `--limit`: a batch is only cut short by
/// the limit at its last delivery, so none is taken and not looked at.
pub(crate) fn batch_size(limit: Option<u64>, matched: u64) -> usize {
    limit.map_or(READ_BATCH, |l| {
        usize::try_from(l.saturating_sub(matched))
            .map_or(READ_BATCH, |left| left.clamp(1, READ_BATCH))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_batch_never_takes_a_message_past_the_limit() {
        assert_eq!(batch_size(None, 0), READ_BATCH);
        assert_eq!(batch_size(None, 1_000_000), READ_BATCH);
        assert_eq!(batch_size(Some(10), 3), 7);
        assert_eq!(batch_size(Some(10_000), 3), READ_BATCH);
        // The caller stops at the limit; a batch is never empty.
        assert_eq!(batch_size(Some(10), 10), 1);
        assert_eq!(batch_size(Some(u64::MAX), 0), READ_BATCH);
    }

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
