//! Reads from the RabbitMQ management HTTP API (GET only: dlq never changes anything through it).

use std::time::Duration;

use base64::Engine as _;
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
use serde_json::Value;

use super::BrokerUrl;
use crate::util::redact_url;

const TIMEOUT: Duration = Duration::from_secs(10);

/// Why a management request gave no answer to use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ApiError {
    /// No HTTP answer at all (refused, timed out, DNS).
    Unreachable(String),
    /// An HTTP answer other than 200/404 (401 bad credentials, 500, …).
    Status(u16, String),
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ApiError::Unreachable(why) => write!(f, "unreachable: {why}"),
            ApiError::Status(code, body) => write!(f, "HTTP {code}: {body}"),
        }
    }
}

pub(crate) struct Management {
    agent: ureq::Agent,
    base: String,
    authorization: String,
    vhost: String,
}

impl Management {
    /// `explicit`: --management-url / DLQ_MANAGEMENT_URL; otherwise http://<amqp host>:15672.
    /// Credentials come from the management URL when it has them, else from the AMQP URL.
    pub(crate) fn new(explicit: Option<&str>, amqp: &BrokerUrl) -> Management {
        let (base, user, pass) = match explicit.and_then(|u| url::Url::parse(u).ok()) {
            Some(mut u) => {
                let creds = (!u.username().is_empty()).then(|| {
                    let decode = |s: &str| {
                        percent_encoding::percent_decode_str(s)
                            .decode_utf8_lossy()
                            .to_string()
                    };
                    (decode(u.username()), decode(u.password().unwrap_or("")))
                });
                let _ = u.set_username("");
                let _ = u.set_password(None);
                let (user, pass) =
                    creds.unwrap_or_else(|| (amqp.username.clone(), amqp.password.clone()));
                (u.as_str().trim_end_matches('/').to_string(), user, pass)
            }
            None => {
                let host = if amqp.host.contains(':') {
                    format!("[{}]", amqp.host)
                } else {
                    amqp.host.clone()
                };
                // Over amqps the credentials must not cross the network in clear: the
                // management default follows to RabbitMQ's https port.
                let base = if amqp.tls.is_some() {
                    format!("https://{host}:15671")
                } else {
                    format!("http://{host}:15672")
                };
                (base, amqp.username.clone(), amqp.password.clone())
            }
        };
        let token = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"));
        let mut config = ureq::Agent::config_builder()
            .timeout_global(Some(TIMEOUT))
            .http_status_as_error(false);
        // An https management URL is checked against the AMQP URL's CA and presents its client
        // certificate (read when the URL was parsed).
        if let Some(tls) = &amqp.tls {
            config = config.tls_config(tls.material.ureq());
        }
        let agent = config.build().new_agent();
        Management {
            agent,
            base,
            authorization: format!("Basic {token}"),
            vhost: amqp.vhost.clone(),
        }
    }

    pub(crate) fn base_url(&self) -> String {
        redact_url(&self.base)
    }

    fn enc(s: &str) -> String {
        utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
    }

    /// GET a path; `Ok(None)` on 404.
    pub(crate) fn get(&self, path: &str) -> Result<Option<Value>, ApiError> {
        let url = format!("{}/api/{}", self.base, path);
        let mut resp = self
            .agent
            .get(&url)
            .header("Authorization", &self.authorization)
            .call()
            .map_err(|e| ApiError::Unreachable(e.to_string()))?;
        let status = resp.status().as_u16();
        match status {
            200 => resp
                .body_mut()
                .read_json::<Value>()
                .map(Some)
                .map_err(|e| ApiError::Unreachable(format!("unreadable answer: {e}"))),
            404 => Ok(None),
            _ => {
                let body = resp.body_mut().read_to_string().unwrap_or_default();
                Err(ApiError::Status(status, body.chars().take(200).collect()))
            }
        }
    }

    /// Checks that the API answers for this vhost with these credentials.
    pub(crate) fn probe(&self) -> Result<(), ApiError> {
        match self.get(&format!("vhosts/{}", Self::enc(&self.vhost)))? {
            Some(_) => Ok(()),
            None => Err(ApiError::Status(
                404,
                format!("vhost \"{}\" not found", self.vhost),
            )),
        }
    }

    pub(crate) fn overview(&self) -> Result<Option<Value>, ApiError> {
        self.get("overview")
    }

    /// The broker's version as /api/overview reports it ("4.0.5"); None when it does not say.
    pub(crate) fn version(&self) -> Result<Option<String>, ApiError> {
        Ok(self.overview()?.and_then(|o| {
            o.get("rabbitmq_version")
                .and_then(Value::as_str)
                .map(str::to_string)
        }))
    }

    pub(crate) fn queue(&self, name: &str) -> Result<Option<Value>, ApiError> {
        self.get(&format!(
            "queues/{}/{}",
            Self::enc(&self.vhost),
            Self::enc(name)
        ))
    }

    pub(crate) fn exchange(&self, name: &str) -> Result<Option<Value>, ApiError> {
        self.get(&format!(
            "exchanges/{}/{}",
            Self::enc(&self.vhost),
            Self::enc(name)
        ))
    }

    /// Routing keys of the bindings from `exchange` to `queue`.
    pub(crate) fn binding_keys(
        &self,
        exchange: &str,
        queue: &str,
    ) -> Result<Vec<String>, ApiError> {
        let path = format!(
            "bindings/{}/e/{}/q/{}",
            Self::enc(&self.vhost),
            Self::enc(exchange),
            Self::enc(queue)
        );
        let list = self.get(&path)?.unwrap_or(Value::Array(vec![]));
        Ok(list
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|b| {
                        b.get("routing_key")
                            .and_then(Value::as_str)
                            .map(str::to_string)
                    })
                    .collect()
            })
            .unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::parse_amqp_url;

    #[test]
    fn default_management_url_uses_amqp_host() {
        let m = Management::new(
            None,
            &parse_amqp_url("amqp://u:p@rabbit.internal:5672/%2f").unwrap(),
        );
        assert_eq!(m.base_url(), "http://rabbit.internal:15672");
    }

    #[test]
    fn explicit_management_url_credentials_are_not_shown() {
        let amqp = parse_amqp_url("amqp://u:p@h/%2f").unwrap();
        let m = Management::new(Some("https://admin:pw@mgmt:443/"), &amqp);
        assert_eq!(m.base_url(), "https://mgmt");
        assert!(!m.base_url().contains("pw"));
    }

    #[test]
    fn names_are_percent_encoded_in_paths() {
        assert_eq!(Management::enc("/"), "%2F");
        assert_eq!(Management::enc("a.b c"), "a%2Eb%20c");
    }
}
