//! The TOML configuration file: its model (unknown keys rejected), defaults, and errors that name file, line and key.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::error::{Error, Result};

pub(crate) const DEFAULT_RETRY_DELAY: Duration = Duration::from_secs(10);
pub(crate) const DEFAULT_MAX_RETRIES: u32 = 5;
/// RabbitMQ caps `x-message-ttl` at 2^32 - 1 milliseconds.
const MAX_TTL_MS: u128 = u32::MAX as u128;
/// Longest suffix a derived queue or exchange name adds (`-retry-requeue`); names are AMQP short strings.
const LONGEST_SUFFIX: usize = "-retry-requeue".len();

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueueType {
    #[default]
    Classic,
    Quorum,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Naming {
    #[default]
    Dotted,
    Sneakers,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeType {
    Direct,
    Fanout,
    Topic,
    Headers,
}

impl ExchangeType {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ExchangeType::Direct => "direct",
            ExchangeType::Fanout => "fanout",
            ExchangeType::Topic => "topic",
            ExchangeType::Headers => "headers",
        }
    }
}

/// A duration written the humantime way ("250ms", "10s", "2m"), kept to whole milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Millis(pub Duration);

impl<'de> Deserialize<'de> for Millis {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        use serde::de::Error as _;
        let text = String::deserialize(d)?;
        let parsed = humantime::parse_duration(text.trim()).map_err(|e| {
            D::Error::custom(format!(
                "bad duration \"{text}\" ({e}); write it like \"250ms\", \"10s\" or \"2m\""
            ))
        })?;
        if parsed.as_millis() == 0 || parsed.as_nanos() % 1_000_000 != 0 {
            return Err(D::Error::custom(format!(
                "bad duration \"{text}\": it must be a whole, non-zero number of milliseconds"
            )));
        }
        if parsed.as_millis() > MAX_TTL_MS {
            return Err(D::Error::custom(format!(
                "bad duration \"{text}\": RabbitMQ allows at most {MAX_TTL_MS} ms"
            )));
        }
        Ok(Millis(parsed))
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct BrokerSection {
    pub url: Option<String>,
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DefaultsSection {
    pub retry_delay: Option<Millis>,
    pub max_retries: Option<u32>,
    pub queue_type: Option<QueueType>,
    pub naming: Option<Naming>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ServiceSection {
    pub retry_delay: Option<Millis>,
    pub max_retries: Option<u32>,
    pub queue_type: Option<QueueType>,
    pub naming: Option<Naming>,
    #[serde(default)]
    pub bind: Vec<Bind>,
}

/// An inbound binding of the work queue. With `type`, the exchange is declared (durable);
/// without it, the exchange must already exist and is only checked.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct Bind {
    pub exchange: String,
    #[serde(rename = "type")]
    pub kind: Option<ExchangeType>,
    #[serde(default)]
    pub routing_key: String,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    broker: BrokerSection,
    #[serde(default)]
    defaults: DefaultsSection,
    #[serde(default)]
    services: BTreeMap<String, ServiceSection>,
}

/// One service with every default applied.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Service {
    pub name: String,
    #[serde(serialize_with = "ser_ms")]
    pub retry_delay: Duration,
    pub max_retries: u32,
    pub queue_type: QueueType,
    pub naming: Naming,
    pub bind: Vec<Bind>,
}

fn ser_ms<S: serde::Serializer>(d: &Duration, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_u64(d.as_millis() as u64)
}

impl Service {
    /// A service with every default, for `--queue`-less tests and examples.
    #[cfg(test)]
    pub(crate) fn with_defaults(name: &str) -> Self {
        Service {
            name: name.to_string(),
            retry_delay: DEFAULT_RETRY_DELAY,
            max_retries: DEFAULT_MAX_RETRIES,
            queue_type: QueueType::Classic,
            naming: Naming::Dotted,
            bind: Vec::new(),
        }
    }

    pub fn work_queue(&self) -> String {
        self.name.clone()
    }

    pub(crate) fn retry_queue(&self) -> String {
        match self.naming {
            Naming::Dotted => format!("{}.retry", self.name),
            Naming::Sneakers => format!("{}-retry", self.name),
        }
    }

    pub(crate) fn error_queue(&self) -> String {
        match self.naming {
            Naming::Dotted => format!("{}.error", self.name),
            Naming::Sneakers => format!("{}-error", self.name),
        }
    }
}

/// A loaded configuration file.
#[derive(Debug, Clone)]
pub struct Config {
    pub path: PathBuf,
    pub broker_url: Option<String>,
    /// A file holding the broker password, for a URL that names a user and no password; a
    /// relative path is taken from the config file's directory.
    pub password_file: Option<PathBuf>,
    pub services: Vec<Service>,
}

impl Config {
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::usage(format!(
                "cannot read config file {}: {}",
                path.display(),
                crate::util::io_reason(&e)
            ))
        })?;
        Config::parse(&text, path)
    }

    pub(crate) fn parse(text: &str, path: &Path) -> Result<Config> {
        let file: ConfigFile =
            toml::from_str(text).map_err(|e| Error::usage(describe_toml_error(&e, text, path)))?;
        let d = &file.defaults;
        let mut services = Vec::new();
        let mut declared_exchanges: BTreeMap<&str, (ExchangeType, &str)> = BTreeMap::new();
        for (name, s) in &file.services {
            let line = || line_of_service(text, name);
            if name.trim().is_empty() {
                return Err(Error::usage(format!(
                    "{}{}: empty service name in [services]; give each service a name",
                    path.display(),
                    line()
                )));
            }
            if let Some(c) = name.chars().find(|c| c.is_control()) {
                return Err(Error::usage(format!(
                    "{}{}: service name \"{}\" holds the control character U+{:04X}; queue names must be printable (the broker would strip or keep it, and the queues could never be found by name)",
                    path.display(),
                    line(),
                    crate::util::printable(name),
                    c as u32
                )));
            }
            if name.len() + LONGEST_SUFFIX > 255 {
                return Err(Error::usage(format!(
                    "{}{}: service name \"{}\" is too long: queue names are at most 255 bytes",
                    path.display(),
                    line(),
                    crate::util::printable(name)
                )));
            }
            for b in &s.bind {
                if b.exchange.is_empty() {
                    return Err(Error::usage(format!(
                        "{}{}: key services.{}.bind: the default exchange cannot be bound; name an exchange",
                        path.display(),
                        line(),
                        crate::util::printable(name)
                    )));
                }
                if let Some(kind) = b.kind {
                    if let Some((other, owner)) =
                        declared_exchanges.insert(&b.exchange, (kind, name))
                    {
                        if other != kind {
                            return Err(Error::usage(format!(
                                "{}{}: key services.{name}.bind: exchange \"{}\" is declared as {} here but as {} by service {owner}",
                                path.display(),
                                line(),
                                b.exchange,
                                kind.as_str(),
                                other.as_str()
                            )));
                        }
                    }
                }
            }
            services.push(Service {
                name: name.clone(),
                retry_delay: s
                    .retry_delay
                    .or(d.retry_delay)
                    .map(|m| m.0)
                    .unwrap_or(DEFAULT_RETRY_DELAY),
                max_retries: s
                    .max_retries
                    .or(d.max_retries)
                    .unwrap_or(DEFAULT_MAX_RETRIES),
                queue_type: s.queue_type.or(d.queue_type).unwrap_or_default(),
                naming: s.naming.or(d.naming).unwrap_or_default(),
                bind: s.bind.clone(),
            });
        }
        Ok(Config {
            path: path.to_path_buf(),
            broker_url: file.broker.url,
            password_file: file.broker.password_file.map(|f| match path.parent() {
                Some(dir) if f.is_relative() => dir.join(f),
                _ => f,
            }),
            services,
        })
    }

    pub fn service(&self, name: &str) -> Result<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| {
                let known: Vec<&str> = self.services.iter().map(|s| s.name.as_str()).collect();
                Error::usage(format!(
                    "service \"{}\" is not in {} (services there: {})",
                    crate::util::printable(name),
                    self.path.display(),
                    if known.is_empty() {
                        "none".to_string()
                    } else {
                        known.join(", ")
                    }
                ))
            })
    }

    /// The named services, or all of them when `names` is empty.
    pub(crate) fn select(&self, names: &[String]) -> Result<Vec<&Service>> {
        if names.is_empty() {
            return Ok(self.services.iter().collect());
        }
        names.iter().map(|n| self.service(n)).collect()
    }
}

fn line_of_service(text: &str, name: &str) -> String {
    let quoted = format!("\"{name}\"");
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.starts_with('[') && (l.contains(&format!("services.{name}]")) || l.contains(&quoted)) {
            return format!(" line {}", i + 1);
        }
    }
    String::new()
}

/// Turns toml's multi-line report into one sentence: file, line, the dotted key, what is wrong.
fn describe_toml_error(e: &toml::de::Error, text: &str, path: &Path) -> String {
    let message = e.message().trim().replace('\n', " ");
    let Some(span) = e.span() else {
        return format!("{}: {message}", path.display());
    };
    let start = span.start.min(text.len());
    let line_no = text[..start].matches('\n').count() + 1;
    let key = key_at(text, start);
    match key {
        Some(k) => format!("{} line {line_no}, key {k}: {message}", path.display()),
        None => format!("{} line {line_no}: {message}", path.display()),
    }
}

/// The dotted key (table path + key) written on the line holding byte `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let mut table = String::new();
    let mut consumed = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim();
        let is_target = offset < consumed + line.len();
        if trimmed.starts_with('[') {
            table = trimmed
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            if is_target {
                return (!table.is_empty()).then(|| table.clone());
            }
        } else if is_target {
            let key = trimmed.split('=').next()?.trim();
            if key.is_empty() || key.starts_with('#') {
                return None;
            }
            return Some(if table.is_empty() {
                key.to_string()
            } else {
                format!("{table}.{key}")
            });
        }
        consumed += line.len();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config> {
        Config::parse(text, Path::new("dlq.toml"))
    }

    fn usage_message(text: &str) -> String {
        match parse(text) {
            Err(Error::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn a_service_name_with_a_control_character_is_a_usage_error() {
        for name in ["a\\nb", "a\\u0000b", "a\\u001bb", "a\\u0085b"] {
            let text = format!("[services.\"{name}\"]\n");
            let Err(Error::Usage(m)) = Config::parse(&text, Path::new("dlq.toml")) else {
                panic!("{name} accepted");
            };
            assert!(m.contains("control character"), "{m}");
            assert!(!m.chars().any(char::is_control), "{m:?}");
        }
    }

    #[test]
    fn defaults_apply_to_every_service() {
        let c = parse(
            "[defaults]\nretry_delay = \"2m\"\nmax_retries = 7\n\n[services.billing]\n\n[services.email]\nretry_delay = \"1s\"\n",
        )
        .unwrap();
        let billing = c.service("billing").unwrap();
        assert_eq!(billing.retry_delay, Duration::from_secs(120));
        assert_eq!(billing.max_retries, 7);
        assert_eq!(billing.queue_type, QueueType::Classic);
        let email = c.service("email").unwrap();
        assert_eq!(email.retry_delay, Duration::from_secs(1));
        assert_eq!(email.max_retries, 7);
    }

    #[test]
    fn built_in_defaults_are_10s_and_5_retries() {
        let c = parse("[services.billing]\n").unwrap();
        let s = c.service("billing").unwrap();
        assert_eq!(s.retry_delay, Duration::from_secs(10));
        assert_eq!(s.max_retries, 5);
        assert_eq!(s.naming, Naming::Dotted);
    }

    #[test]
    fn the_contract_example_parses() {
        let c = parse(
            r#"
[broker]
url = "amqp://guest:guest@127.0.0.1:5672/%2f"

[defaults]
retry_delay = "10s"
max_retries = 5
queue_type  = "classic"
naming      = "dotted"

[services.billing]

[services.email]
retry_delay = "1s"
max_retries = 3
bind = [ { exchange = "events", type = "topic", routing_key = "email.#" } ]
"#,
        )
        .unwrap();
        assert_eq!(
            c.broker_url.as_deref(),
            Some("amqp://guest:guest@127.0.0.1:5672/%2f")
        );
        let email = c.service("email").unwrap();
        assert_eq!(email.bind[0].kind, Some(ExchangeType::Topic));
        assert_eq!(email.bind[0].routing_key, "email.#");
    }

    #[test]
    fn unknown_key_names_file_line_and_key() {
        let m = usage_message("[services.email]\nretry_dely = \"1s\"\n");
        assert!(
            m.starts_with("dlq.toml line 2, key services.email.retry_dely:"),
            "{m}"
        );
        assert!(!m.contains('\n'));
    }

    #[test]
    fn bad_duration_names_file_line_and_key() {
        let m = usage_message("[defaults]\n\nretry_delay = \"10 parsecs\"\n");
        assert!(
            m.starts_with("dlq.toml line 3, key defaults.retry_delay:"),
            "{m}"
        );
        assert!(m.contains("bad duration"), "{m}");
    }

    #[test]
    fn sub_millisecond_duration_is_rejected() {
        let m = usage_message("[services.a]\nretry_delay = \"10us\"\n");
        assert!(m.contains("whole, non-zero number of milliseconds"), "{m}");
    }

    #[test]
    fn bad_queue_type_names_the_key() {
        let m = usage_message("[services.a]\nqueue_type = \"qourum\"\n");
        assert!(
            m.starts_with("dlq.toml line 2, key services.a.queue_type:"),
            "{m}"
        );
        assert!(m.contains("quorum"), "{m}");
    }

    #[test]
    fn empty_service_name_is_rejected_with_its_line() {
        let m = usage_message("[defaults]\n[services.\"\"]\n");
        assert!(m.starts_with("dlq.toml line 2:"), "{m}");
        assert!(m.contains("empty service name"), "{m}");
    }

    #[test]
    fn conflicting_exchange_types_are_rejected() {
        let m = usage_message(
            "[services.a]\nbind = [{ exchange = \"ev\", type = \"topic\" }]\n[services.b]\nbind = [{ exchange = \"ev\", type = \"fanout\" }]\n",
        );
        assert!(m.contains("exchange \"ev\""), "{m}");
    }

    #[test]
    fn unknown_service_lists_the_known_ones() {
        let c = parse("[services.billing]\n").unwrap();
        let e = c.service("bliling").unwrap_err();
        assert!(e.to_string().contains("services there: billing"), "{e}");
    }

    #[test]
    fn sneakers_names() {
        let mut s = Service::with_defaults("mailer");
        s.naming = Naming::Sneakers;
        assert_eq!(s.retry_queue(), "mailer-retry");
        assert_eq!(s.error_queue(), "mailer-error");
        assert_eq!(s.work_queue(), "mailer");
    }
}
