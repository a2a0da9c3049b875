//! The command line as clap sees it; these types stop at `settings.rs` (which turns them into
//! `options`) and `main.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Shown by `dlq --help` and in the man page.
const EXAMPLES: &str = "Examples:
  dlq list billing --group-by .failure.message       what is failing, and how often
  dlq replay billing --filter '.headers[\"x-error-message\"] | test(\"timeout\")'
  dlq replay billing --filter '.body.amount | type == \"string\"' \\
      --transform '.body.amount |= tonumber' --dry-run      repair, then replay: preview first
  dlq replay billing --transform '.routing_key = \"billing.v2\"'   send the copies to billing.v2
  dlq export billing --file billing-errors.jsonl --remove

--transform EXPR runs a jq expression on each matching message (the object `list -o json`
prints); its output is published the way `import` reads a record: body (with body_encoding or
body_text), properties, headers; a changed routing_key sends the copy to that queue. Fields it
leaves alone are published exactly as before. A message whose transform fails stays in place
and counts as failed.";

/// Inspect, replay and administer RabbitMQ retry and error queues, without losing a message.
///
/// Each service S has a work queue S, a retry queue S.retry (holds a rejected message for
/// retry_delay, then dead-letters it back to S) and an error queue S.error (where a message is
/// parked after its last retry). dlq declares and verifies that topology from a config file, and
/// lets you look at, replay, export and purge what is parked.
#[derive(Debug, Parser)]
#[command(
    name = "dlq",
    version,
    propagate_version = true,
    max_term_width = 100,
    after_long_help = EXAMPLES
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Broker URL; several comma-separated URLs are tried in order
    /// [default: config [broker] url, else amqp://guest:***@127.0.0.1:5672/%2f; a URL with a user and no password takes DLQ_PASSWORD, else config [broker] password_file]
    #[arg(
        long,
        global = true,
        env = "DLQ_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub url: Option<String>,

    /// Config file [default: ./dlq.toml]
    #[arg(
        short = 'c',
        long,
        global = true,
        env = "DLQ_CONFIG",
        value_name = "FILE"
    )]
    pub config: Option<PathBuf>,

    /// Output format
    #[arg(
        short = 'o',
        long,
        global = true,
        env = "DLQ_OUTPUT",
        value_enum,
        value_name = "FORMAT"
    )]
    pub output: Option<Format>,

    /// Answer yes to confirmations (needed when stdin is not a terminal)
    #[arg(short = 'y', long, global = true)]
    pub yes: bool,

    /// Print only results and errors: no progress bars, notes or warnings
    #[arg(short = 'q', long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    /// Show the causes behind errors and more detail
    #[arg(short = 'v', long, global = true)]
    pub verbose: bool,

    /// Never use colour (also: env NO_COLOR); colour is only ever used on a terminal
    #[arg(long, global = true)]
    pub no_color: bool,

    /// Management HTTP API (topology verify; queue type and version checks of list and peek)
    /// [default: http://<amqp host>:15672 (https://…:15671 for amqps), with the AMQP credentials]
    #[arg(
        long,
        global = true,
        env = "DLQ_MANAGEMENT_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub management_url: Option<String>,
}

/// `-o`'s values (settings turns them into `format::OutputFormat`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Human-readable tables
    Table,
    /// One JSON document
    Json,
    /// One JSON object per line
    Jsonl,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Plan, declare or verify each service's queues, exchanges and bindings
    #[command(subcommand)]
    Topology(TopologyCommand),

    /// Ready and consumer counts of each service's work, retry and error queues
    Stats(StatsArgs),

    /// List the messages of an error queue without removing them (order and content unchanged)
    List(ListArgs),

    /// Show the message(s) at the head of a queue in full; with --pop, ask before removing each
    Peek(PeekArgs),

    /// Move matching messages back to the work queue (or --to Q); asks first
    Replay(ReplayArgs),

    /// Write messages as JSONL (appending to FILE); with --remove, ack each after it is fsynced
    Export(ExportArgs),

    /// Publish the JSONL records of FILE to a queue, with confirms; asks first
    Import(ImportArgs),

    /// Remove every message of a queue; asks first; prints how many
    Purge(PurgeArgs),

    /// Print a shell completion script
    Completions(CompletionsArgs),
}

#[derive(Debug, Subcommand)]
pub enum TopologyCommand {
    /// Print the queues, exchanges, bindings and arguments the config derives (no broker needed)
    Plan(ServiceFilter),
    /// Declare the topology; idempotent; never deletes or purges; conflicts exit 3
    Apply(ServiceFilter),
    /// Compare the broker with the config without changing anything; drift exits 3
    Verify(ServiceFilter),
}

#[derive(Debug, Args)]
pub struct ServiceFilter {
    /// Only this service (repeatable); default: every service in the config
    #[arg(long = "service", value_name = "S")]
    pub services: Vec<String>,
}

#[derive(Debug, Args)]
pub struct StatsArgs {
    /// Services to show; default: every service in the config
    #[arg(value_name = "SERVICE")]
    pub services: Vec<String>,
}

/// Where messages are read from: a service's error queue, or any queue by name.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct SourceArgs {
    /// Read this service's error queue (S.error, or S-error under naming = "sneakers")
    #[arg(value_name = "SERVICE")]
    pub service: Option<String>,

    /// Read this queue instead of a service's error queue (needs no config file)
    #[arg(long, value_name = "Q", value_parser = queue_name)]
    pub queue: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Look at the first N messages only [default: every message]; with --filter, fewer may be shown
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Show only messages for which this jq expression is true, e.g. '.body.tenant == "acme"'
    /// (@FILE reads the expression from FILE)
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,

    /// Count messages per distinct value of this jq expression instead, e.g. .failure.message
    /// (@FILE reads it from FILE)
    #[arg(long, value_name = "EXPR")]
    pub group_by: Option<String>,
}

#[derive(Debug, Args)]
pub struct PeekArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// How many messages to show from the head of the queue
    #[arg(long, value_name = "N", default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,

    /// After showing each message, ask whether to remove it (needs a terminal, or --yes)
    #[arg(long)]
    pub pop: bool,

    /// Append each removed message to FILE (JSONL, fsynced) before removing it
    #[arg(long, value_name = "FILE", requires = "pop")]
    pub save: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ReplayArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// Send copies to this queue [default: the service's work queue, else each message's origin]
    #[arg(long, value_name = "Q", value_parser = queue_name)]
    pub to: Option<String>,

    /// Replay only messages for which this jq expression is true, e.g. '.body.tenant == "acme"'
    /// (@FILE reads the expression from FILE)
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,

    /// Repair each matching message with this jq expression before it is published, e.g.
    /// '.body.amount |= tonumber' or '.routing_key = "billing.v2"' (its output is read as an
    /// import record; fields it leaves alone are published unchanged; @FILE reads it from FILE)
    #[arg(long, value_name = "EXPR")]
    pub transform: Option<String>,

    /// Replay at most N matching messages (with --filter, the first N that match)
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// At most N messages per second
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub rate: Option<u64>,

    /// Show what would move, move nothing (needs no --yes)
    #[arg(long)]
    pub dry_run: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: SourceArgs,

    /// JSONL file to append to (created when missing, never truncated)
    #[arg(long, value_name = "F")]
    pub file: PathBuf,

    /// Export only messages for which this jq expression is true (@FILE reads it from FILE)
    #[arg(long, value_name = "EXPR")]
    pub filter: Option<String>,

    /// Look at the first N messages only
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,

    /// Remove each exported message from the queue once its line is on disk (asks first)
    #[arg(long)]
    pub remove: bool,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// JSONL file written by `dlq export`, `dlq list -o jsonl` or `dlq peek --save`
    #[arg(long, value_name = "F")]
    pub file: PathBuf,

    /// Queue to publish to (through the default exchange)
    #[arg(long, value_name = "Q", value_parser = queue_name)]
    pub to: String,
}

#[derive(Debug, Args)]
pub struct PurgeArgs {
    #[command(flatten)]
    pub source: SourceArgs,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell to generate for
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn global_flags_work_after_the_subcommand() {
        let cli =
            Cli::try_parse_from(["dlq", "topology", "plan", "-o", "json", "--url", "amqp://h"])
                .unwrap();
        assert_eq!(cli.global.output, Some(Format::Json));
        assert_eq!(cli.global.url.as_deref(), Some("amqp://h"));
    }

    #[test]
    fn global_flags_work_before_the_subcommand() {
        let cli = Cli::try_parse_from(["dlq", "-y", "-c", "x.toml", "stats"]).unwrap();
        assert!(cli.global.yes);
        assert_eq!(cli.global.config, Some(PathBuf::from("x.toml")));
    }
}

/// A queue name from the command line: no control characters (the broker strips some when
/// declaring but not when routing, so such a name can pass a check and then lose the publish),
/// at most AMQP's 255 bytes. A usage error otherwise, before anything connects.
fn queue_name(s: &str) -> Result<String, String> {
    if let Some(c) = s.chars().find(|c| c.is_control()) {
        return Err(format!(
            "the queue name holds the control character U+{:04X}; queue names must be printable",
            u32::from(c)
        ));
    }
    if s.len() > 255 {
        return Err(format!(
            "the queue name is {} bytes; AMQP allows at most 255",
            s.len()
        ));
    }
    if s.is_empty() {
        return Err("the queue name is empty".into());
    }
    Ok(s.to_string())
}

#[cfg(test)]
mod queue_name_tests {
    #[test]
    fn control_characters_long_and_empty_names_are_refused() {
        assert_eq!(
            super::queue_name("billing.error"),
            Ok("billing.error".into())
        );
        assert!(super::queue_name("a\nb").unwrap_err().contains("U+000A"));
        assert!(super::queue_name("a\u{1b}[31m")
            .unwrap_err()
            .contains("U+001B"));
        assert!(super::queue_name("a\u{85}").unwrap_err().contains("U+0085"));
        assert!(super::queue_name(&"q".repeat(256))
            .unwrap_err()
            .contains("256 bytes"));
        assert!(super::queue_name("").is_err());
        assert!(super::queue_name(&"é".repeat(127)).is_ok());
    }
}
