//! Flags + environment + config file → `Settings`, the typed view every command gets.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::cli::{self, GlobalArgs};
use crate::config::Config;
use crate::error::{Error, Result};
use crate::format::OutputFormat;
use crate::options::{
    ExportOptions, ImportOptions, ListOptions, PeekOptions, ReplayOptions, Services, SourceChoice,
    Task,
};

pub const DEFAULT_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
const DEFAULT_CONFIG: &str = "dlq.toml";

#[derive(Debug, Clone)]
pub struct Settings {
    /// Broker URLs in the order to try them.
    pub urls: Vec<String>,
    pub config: Option<Config>,
    /// Where a config was looked for, for error messages when one is needed but absent.
    pub config_path: PathBuf,
    pub output: OutputFormat,
    pub yes: bool,
    pub quiet: bool,
    pub verbose: bool,
    /// Colour on stdout tables (terminal, no --no-color, no NO_COLOR).
    pub color: bool,
    /// Colour is not turned off (--no-color, NO_COLOR); stderr decides for itself.
    pub color_allowed: bool,
    pub management_url: Option<String>,
}

impl Settings {
    /// Precedence: flags > env (clap reads both) > config file > built-in defaults.
    /// `env` holds NO_COLOR (any non-empty value disables colour) and DLQ_PASSWORD.
    pub(crate) fn resolve(g: &GlobalArgs, env: &Env, stdout_is_tty: bool) -> Result<Settings> {
        let (config_path, explicit) = match &g.config {
            Some(p) => (p.clone(), true),
            None => (PathBuf::from(DEFAULT_CONFIG), false),
        };
        let config = if explicit || Path::new(&config_path).exists() {
            Some(Config::load(&config_path)?)
        } else {
            None
        };
        let url_text = g
            .url
            .clone()
            .or_else(|| config.as_ref().and_then(|c| c.broker_url.clone()))
            .unwrap_or_else(|| DEFAULT_URL.to_string());
        let urls = parse_url_list(&url_text)?
            .into_iter()
            .map(|u| with_password(u, env.password.as_deref(), config.as_ref()))
            .collect::<Result<Vec<_>>>()?;
        if let Some(m) = &g.management_url {
            if !(m.starts_with("http://") || m.starts_with("https://")) {
                return Err(Error::usage(format!(
                    "management URL {} must start with http:// or https://",
                    crate::util::redact_url(m)
                )));
            }
        }
        let no_color = g.no_color || env.no_color.as_deref().is_some_and(|v| !v.is_empty());
        Ok(Settings {
            urls,
            config,
            config_path,
            output: g.output.map_or(OutputFormat::Table, output_format),
            yes: g.yes,
            quiet: g.quiet,
            verbose: g.verbose,
            color: stdout_is_tty && !no_color,
            color_allowed: !no_color,
            management_url: g.management_url.clone(),
        })
    }

    pub fn from_env(g: &GlobalArgs) -> Result<Settings> {
        let env = Env {
            no_color: std::env::var("NO_COLOR").ok(),
            password: std::env::var("DLQ_PASSWORD").ok(),
        };
        Settings::resolve(g, &env, std::io::stdout().is_terminal())
    }

    /// The config, or a usage error saying a command needs one.
    pub(crate) fn require_config(&self) -> Result<&Config> {
        self.config.as_ref().ok_or_else(|| {
            Error::usage(format!(
                "no config file: {} does not exist; pass -c FILE or set DLQ_CONFIG (or use --queue)",
                self.config_path.display()
            ))
        })
    }
}

fn output_format(f: cli::Format) -> OutputFormat {
    match f {
        cli::Format::Table => OutputFormat::Table,
        cli::Format::Json => OutputFormat::Json,
        cli::Format::Jsonl => OutputFormat::Jsonl,
    }
}

/// The command as plain options (the one place clap's subcommand types are read); `None` for
/// `completions`, which `main` answers before settings are read.
pub fn task(command: cli::Command) -> Option<Task> {
    use cli::{Command, TopologyCommand};
    let services = |f: cli::ServiceFilter| Services(f.services);
    Some(match command {
        Command::Topology(TopologyCommand::Plan(f)) => Task::TopologyPlan(services(f)),
        Command::Topology(TopologyCommand::Apply(f)) => Task::TopologyApply(services(f)),
        Command::Topology(TopologyCommand::Verify(f)) => Task::TopologyVerify(services(f)),
        Command::Stats(a) => Task::Stats(Services(a.services)),
        Command::List(a) => Task::List(ListOptions {
            source: source(a.source),
            limit: a.limit,
            filter: a.filter,
            group_by: a.group_by,
        }),
        Command::Peek(a) => Task::Peek(PeekOptions {
            source: source(a.source),
            count: a.count,
            pop: a.pop,
            save: a.save,
        }),
        Command::Replay(a) => Task::Replay(ReplayOptions {
            source: source(a.source),
            to: a.to,
            filter: a.filter,
            transform: a.transform,
            limit: a.limit,
            rate: a.rate,
            dry_run: a.dry_run,
        }),
        Command::Export(a) => Task::Export(ExportOptions {
            source: source(a.source),
            file: a.file,
            filter: a.filter,
            limit: a.limit,
            remove: a.remove,
        }),
        Command::Import(a) => Task::Import(ImportOptions {
            file: a.file,
            to: a.to,
        }),
        Command::Purge(a) => Task::Purge(source(a.source)),
        Command::Completions(_) => return None,
    })
}

/// SERVICE or `--queue Q`: clap's group makes it exactly one; `--queue` wins if both came.
fn source(a: cli::SourceArgs) -> SourceChoice {
    match (a.queue, a.service) {
        (Some(q), _) => SourceChoice::Queue(q),
        (None, Some(s)) => SourceChoice::Service(s),
        (None, None) => unreachable!("clap requires SERVICE or --queue"),
    }
}

/// The environment variables settings depend on besides those clap reads.
#[derive(Debug, Clone, Default)]
pub(crate) struct Env {
    /// NO_COLOR.
    pub no_color: Option<String>,
    /// DLQ_PASSWORD: the password for a URL that names a user and no password.
    pub password: Option<String>,
}

/// A URL that names a user and no password gets DLQ_PASSWORD, else the config's password_file
/// (one trailing newline ignored); with neither, that is a usage error, since connecting as
/// that user without a password cannot work. Other URLs are returned as they are.
fn with_password(text: String, env: Option<&str>, config: Option<&Config>) -> Result<String> {
    let Ok(mut url) = url::Url::parse(&text) else {
        return Ok(text);
    };
    if url.username().is_empty() || url.password().is_some() {
        return Ok(text);
    }
    let password = match (env, config.and_then(|c| c.password_file.as_deref())) {
        (Some(p), _) => p.to_string(),
        (None, Some(file)) => read_password_file(file)?,
        (None, None) => {
            return Err(Error::usage(format!(
                "the broker URL {} names user \"{}\" but no password; set DLQ_PASSWORD or [broker] password_file",
                crate::util::redact_url(&text),
                url.username()
            )))
        }
    };
    url.set_password(Some(&password))
        .map_err(|()| Error::usage("the broker URL cannot take a password"))?;
    Ok(url.to_string())
}

fn read_password_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        Error::usage(format!(
            "cannot read the password file {} ([broker] password_file): {}",
            path.display(),
            crate::util::io_reason(&e)
        ))
    })?;
    let text = text.strip_suffix('\n').unwrap_or(&text);
    let text = text.strip_suffix('\r').unwrap_or(text);
    Ok(text.to_string())
}

/// Splits and checks a comma-separated URL list before anything connects.
pub fn parse_url_list(text: &str) -> Result<Vec<String>> {
    let urls: Vec<String> = text
        .split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .map(str::to_string)
        .collect();
    if urls.is_empty() {
        return Err(Error::usage(
            "the broker URL is empty; pass --url amqp://user:pass@host:5672/vhost",
        ));
    }
    for u in &urls {
        crate::broker::parse_amqp_url(u)?;
    }
    Ok(urls)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;
    use clap::Parser;

    fn env(no_color: Option<&str>) -> Env {
        Env {
            no_color: no_color.map(str::to_string),
            password: None,
        }
    }

    fn globals(args: &[&str]) -> GlobalArgs {
        let mut v = vec!["dlq"];
        v.extend_from_slice(args);
        v.push("stats");
        Cli::try_parse_from(v).unwrap().global
    }

    fn task_of(args: &[&str]) -> Option<Task> {
        let mut v = vec!["dlq"];
        v.extend_from_slice(args);
        task(Cli::try_parse_from(v).unwrap().command)
    }

    #[test]
    fn the_command_line_becomes_plain_options() {
        assert_eq!(
            task_of(&[
                "replay",
                "billing",
                "--filter",
                ".x",
                "--limit",
                "3",
                "--dry-run"
            ]),
            Some(Task::Replay(ReplayOptions {
                source: SourceChoice::Service("billing".into()),
                to: None,
                filter: Some(".x".into()),
                transform: None,
                limit: Some(3),
                rate: None,
                dry_run: true,
            }))
        );
        assert_eq!(
            task_of(&["purge", "--queue", "q.error"]),
            Some(Task::Purge(SourceChoice::Queue("q.error".into())))
        );
        assert_eq!(
            task_of(&["topology", "verify", "--service", "a", "--service", "b"]),
            Some(Task::TopologyVerify(Services(vec!["a".into(), "b".into()])))
        );
        assert_eq!(
            task_of(&["export", "--queue", "q", "--file", "f.jsonl", "--remove"]),
            Some(Task::Export(ExportOptions {
                source: SourceChoice::Queue("q".into()),
                file: "f.jsonl".into(),
                filter: None,
                limit: None,
                remove: true,
            }))
        );
        assert_eq!(task_of(&["completions", "bash"]), None);
    }

    #[test]
    fn flag_url_beats_config_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[broker]\nurl = \"amqp://from-config\"\n").unwrap();
        let p = path.to_str().unwrap();
        let s = Settings::resolve(
            &globals(&["-c", p, "--url", "amqp://from-flag"]),
            &env(None),
            false,
        )
        .unwrap();
        assert_eq!(s.urls, ["amqp://from-flag"]);
        let s = Settings::resolve(&globals(&["-c", p]), &env(None), false).unwrap();
        assert_eq!(s.urls, ["amqp://from-config"]);
    }

    #[test]
    fn default_url_without_config() {
        let s = Settings::resolve(
            &globals(&["-c", "/nonexistent/dlq.toml"]),
            &env(None),
            false,
        );
        assert!(matches!(s, Err(Error::Usage(m)) if m.contains("/nonexistent/dlq.toml")));
    }

    #[test]
    fn several_urls_are_tried_in_order() {
        let s = Settings::resolve(
            &globals(&["--url", "amqp://a, amqp://b"]),
            &env(None),
            false,
        )
        .unwrap();
        assert_eq!(s.urls, ["amqp://a", "amqp://b"]);
    }

    #[test]
    fn a_bad_url_is_a_usage_error() {
        let e = Settings::resolve(&globals(&["--url", "http://x"]), &env(None), false).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
    }

    #[test]
    fn a_user_without_a_password_takes_dlq_password_then_the_password_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3:c/r@t\n").unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(
            &cfg,
            "[broker]\nurl = \"amqp://app@mq:5672/prod\"\npassword_file = \"pw\"\n",
        )
        .unwrap();
        let c = cfg.to_str().unwrap();
        let from_file = Settings::resolve(&globals(&["-c", c]), &env(None), false).unwrap();
        let u = crate::broker::parse_amqp_url(&from_file.urls[0]).unwrap();
        assert_eq!(
            (u.username.as_str(), u.password.as_str()),
            ("app", "s3:c/r@t")
        );
        let with_env = Env {
            no_color: None,
            password: Some("from env".into()),
        };
        let from_env = Settings::resolve(&globals(&["-c", c]), &with_env, false).unwrap();
        let u = crate::broker::parse_amqp_url(&from_env.urls[0]).unwrap();
        assert_eq!(u.password, "from env");
        // A password in the URL wins over both.
        let given = Settings::resolve(
            &globals(&["-c", c, "--url", "amqp://app:inline@mq"]),
            &with_env,
            false,
        )
        .unwrap();
        assert_eq!(given.urls, ["amqp://app:inline@mq"]);
    }

    #[test]
    fn a_user_without_any_password_or_an_unreadable_file_is_a_usage_error() {
        let e = Settings::resolve(&globals(&["--url", "amqp://app@mq"]), &env(None), false)
            .unwrap_err();
        assert!(
            matches!(&e, Error::Usage(m) if m.contains("DLQ_PASSWORD")),
            "{e:?}"
        );
        let dir = tempfile::tempdir().unwrap();
        let cfg = dir.path().join("c.toml");
        std::fs::write(&cfg, "[broker]\npassword_file = \"missing\"\n").unwrap();
        let c = cfg.to_str().unwrap();
        let e = Settings::resolve(
            &globals(&["-c", c, "--url", "amqp://app@mq"]),
            &env(None),
            false,
        )
        .unwrap_err();
        assert!(
            matches!(&e, Error::Usage(m) if m.contains("password file") && m.contains("missing")),
            "{e:?}"
        );
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(
            Settings::resolve(&globals(&[]), &env(None), true)
                .unwrap()
                .color
        );
        assert!(
            !Settings::resolve(&globals(&[]), &env(None), false)
                .unwrap()
                .color
        );
        assert!(
            !Settings::resolve(&globals(&[]), &env(Some("1")), true)
                .unwrap()
                .color
        );
        assert!(
            Settings::resolve(&globals(&[]), &env(Some("")), true)
                .unwrap()
                .color
        );
        assert!(
            !Settings::resolve(&globals(&["--no-color"]), &env(None), true)
                .unwrap()
                .color
        );
    }
}
