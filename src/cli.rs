//! The command line as clap sees it; these types stop at `settings.rs` and `main.rs`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// Inspect, replay and administer RabbitMQ retry and error queues, without losing a message.
///
/// Each service S has a work queue S, a retry queue S.retry (holds a rejected message for
/// retry_delay, then dead-letters it back to S) and an error queue S.error (where a message is
/// parked after its last retry). dlq declares and verifies that topology from a config file, and
/// lets you look at, replay, export and purge what is parked.
#[derive(Debug, Parser)]
#[command(name = "dlq", version, propagate_version = true, max_term_width = 100)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Broker URL; several comma-separated URLs are tried in order
    /// [default: config [broker] url, else amqp://guest:guest@127.0.0.1:5672/%2f]
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
    pub output: Option<OutputFormat>,

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

    /// Management HTTP API for `topology verify` [default: http://<amqp host>:15672, AMQP credentials]
    #[arg(
        long,
        global = true,
        env = "DLQ_MANAGEMENT_URL",
        value_name = "URL",
        hide_env_values = true
    )]
    pub management_url: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
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
        assert_eq!(cli.global.output, Some(OutputFormat::Json));
        assert_eq!(cli.global.url.as_deref(), Some("amqp://h"));
    }

    #[test]
    fn global_flags_work_before_the_subcommand() {
        let cli = Cli::try_parse_from(["dlq", "-y", "-c", "x.toml", "stats"]).unwrap();
        assert!(cli.global.yes);
        assert_eq!(cli.global.config, Some(PathBuf::from("x.toml")));
    }
}
