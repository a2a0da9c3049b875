//! Flags + environment + config file → `Settings`, the typed view every command gets.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::cli::{GlobalArgs, OutputFormat};
use crate::config::Config;
use crate::error::{Error, Result};

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
    /// `no_color_env` is the value of NO_COLOR (any non-empty value disables colour).
    pub fn resolve(
        g: &GlobalArgs,
        no_color_env: Option<&str>,
        stdout_is_tty: bool,
    ) -> Result<Settings> {
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
        let urls = parse_url_list(&url_text)?;
        if let Some(m) = &g.management_url {
            if !(m.starts_with("http://") || m.starts_with("https://")) {
                return Err(Error::usage(format!(
                    "management URL {} must start with http:// or https://",
                    crate::util::redact_url(m)
                )));
            }
        }
        let no_color = g.no_color || no_color_env.is_some_and(|v| !v.is_empty());
        Ok(Settings {
            urls,
            config,
            config_path,
            output: g.output.unwrap_or(OutputFormat::Table),
            yes: g.yes,
            quiet: g.quiet,
            verbose: g.verbose,
            color: stdout_is_tty && !no_color,
            color_allowed: !no_color,
            management_url: g.management_url.clone(),
        })
    }

    pub fn from_env(g: &GlobalArgs) -> Result<Settings> {
        let no_color = std::env::var("NO_COLOR").ok();
        Settings::resolve(g, no_color.as_deref(), std::io::stdout().is_terminal())
    }

    /// The config, or a usage error saying a command needs one.
    pub fn require_config(&self) -> Result<&Config> {
        self.config.as_ref().ok_or_else(|| {
            Error::usage(format!(
                "no config file: {} does not exist; pass -c FILE or set DLQ_CONFIG (or use --queue)",
                self.config_path.display()
            ))
        })
    }
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

    fn globals(args: &[&str]) -> GlobalArgs {
        let mut v = vec!["dlq"];
        v.extend_from_slice(args);
        v.push("stats");
        Cli::try_parse_from(v).unwrap().global
    }

    #[test]
    fn flag_url_beats_config_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[broker]\nurl = \"amqp://from-config\"\n").unwrap();
        let p = path.to_str().unwrap();
        let s = Settings::resolve(
            &globals(&["-c", p, "--url", "amqp://from-flag"]),
            None,
            false,
        )
        .unwrap();
        assert_eq!(s.urls, ["amqp://from-flag"]);
        let s = Settings::resolve(&globals(&["-c", p]), None, false).unwrap();
        assert_eq!(s.urls, ["amqp://from-config"]);
    }

    #[test]
    fn default_url_without_config() {
        let s = Settings::resolve(&globals(&["-c", "/nonexistent/dlq.toml"]), None, false);
        assert!(matches!(s, Err(Error::Usage(m)) if m.contains("/nonexistent/dlq.toml")));
    }

    #[test]
    fn several_urls_are_tried_in_order() {
        let s = Settings::resolve(&globals(&["--url", "amqp://a, amqp://b"]), None, false).unwrap();
        assert_eq!(s.urls, ["amqp://a", "amqp://b"]);
    }

    #[test]
    fn a_bad_url_is_a_usage_error() {
        let e = Settings::resolve(&globals(&["--url", "http://x"]), None, false).unwrap_err();
        assert!(matches!(e, Error::Usage(_)), "{e:?}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        assert!(Settings::resolve(&globals(&[]), None, true).unwrap().color);
        assert!(!Settings::resolve(&globals(&[]), None, false).unwrap().color);
        assert!(
            !Settings::resolve(&globals(&[]), Some("1"), true)
                .unwrap()
                .color
        );
        assert!(
            Settings::resolve(&globals(&[]), Some(""), true)
                .unwrap()
                .color
        );
        assert!(
            !Settings::resolve(&globals(&["--no-color"]), None, true)
                .unwrap()
                .color
        );
    }
}
