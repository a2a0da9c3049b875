//! The only place that speaks to RabbitMQ: AMQP through lapin (`amqp`) and the management HTTP API (`management`).

pub mod amqp;
pub mod browse;
pub mod management;
pub mod publisher;
pub mod quorum;
pub mod reader;
pub mod tls;
pub(crate) mod watch;
pub mod worker;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties};

use crate::error::{Error, Result};
use crate::util::redact_url;

pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Between two rounds of reconnecting through the URL list.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

/// What dlq needs to know of a broker URL, parsed before anything connects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerUrl {
    pub url: String,
    pub host: String,
    pub port: u16,
    pub vhost: String,
    pub username: String,
    pub password: String,
    /// The TLS of an amqps:// URL, its files read; None for amqp://.
    pub tls: Option<tls::Tls>,
    /// What lapin connects to. Built here because lapin's own parser takes the host from
    /// `Url::domain()`, which is `None` for IP addresses, and silently uses "localhost" then.
    pub uri: lapin::uri::AMQPUri,
}

impl BrokerUrl {
    /// The URL as messages show it: password as `***`, without the query string (TLS file
    /// paths and options are named by the message that needs them).
    pub(crate) fn redacted(&self) -> String {
        let url = redact_url(&self.url);
        match url.split_once('?') {
            Some((base, _)) => base.to_string(),
            None => url,
        }
    }
}

/// The longest broker URL dlq reads (TLS file paths included, a URL stays far below it);
/// anything longer is refused before it is parsed, resolved or printed.
pub(crate) const MAX_URL_LEN: usize = 8192;

/// Parses an amqp:// or amqps:// URL; anything else is a usage error naming the (redacted) URL.
pub(crate) fn parse_amqp_url(text: &str) -> Result<BrokerUrl> {
    if text.len() > MAX_URL_LEN {
        return Err(Error::usage(format!(
            "the broker URL is {} bytes long; at most {} are accepted",
            crate::util::thousands(text.len() as u64),
            crate::util::thousands(MAX_URL_LEN as u64)
        )));
    }
    let bad = |why: &str| {
        Error::usage(format!(
            "bad broker URL {}: {why}",
            crate::util::hide_userinfo(text)
        ))
    };
    let parsed = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    let tls = match parsed.scheme() {
        "amqp" => false,
        "amqps" => true,
        other => return Err(bad(&format!("scheme must be amqp or amqps, not {other}"))),
    };
    // Certificate files are read now, so a missing one is a usage error before connecting.
    let tls = tls::TlsOptions::from_url(&parsed, tls)?
        .map(tls::TlsOptions::prepare)
        .transpose()?;
    let mut uri: lapin::uri::AMQPUri = text.parse().map_err(|e: String| bad(&e))?;
    let host = parsed
        .host_str()
        .unwrap_or("localhost")
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    uri.authority.host = host.clone();
    Ok(BrokerUrl {
        url: text.to_string(),
        host,
        port: uri.authority.port,
        vhost: uri.vhost.clone(),
        username: uri.authority.userinfo.username.clone(),
        password: uri.authority.userinfo.password.clone(),
        tls,
        uri,
    })
}

/// Channels dlq may have open besides a reader's segments or a browse's windows: a publisher's,
/// and the short-lived ones of probes and checks.
pub(crate) const OTHER_CHANNELS: usize = 16;

/// An open AMQP connection and the URL it was opened with.
pub struct Broker {
    pub connection: Connection,
    pub url: BrokerUrl,
    /// Set when a request went unanswered and the connection failed its check (see `watch`),
    /// though lapin may still call it connected.
    gone: std::sync::atomic::AtomicBool,
}

impl Broker {
    /// Tries each URL in order, each with a 10 s timeout; the error names every attempt.
    pub async fn connect(urls: &[String], purpose: &str) -> Result<Broker> {
        let mut failures = Vec::new();
        let mut last_cause = String::new();
        for text in urls {
            let url = parse_amqp_url(text)?;
            let props = ConnectionProperties::default()
                .with_connection_name(format!("dlq {purpose}").into());
            match tokio::time::timeout(CONNECT_TIMEOUT, open(&url, props)).await {
                Ok(Ok(connection)) => {
                    return Ok(Broker {
                        connection,
                        url,
                        gone: Default::default(),
                    })
                }
                Ok(Err(e)) => {
                    last_cause = format!("{e:?}");
                    failures.push(format!("{}: {}", url.redacted(), connect_reason(&e, &url)));
                }
                Err(_) => failures.push(format!(
                    "{}: no answer within {} s",
                    url.redacted(),
                    CONNECT_TIMEOUT.as_secs()
                )),
            }
        }
        let message = if failures.len() == 1 {
            format!("cannot connect to {}", failures[0])
        } else {
            format!("cannot connect to any broker: {}", failures.join("; "))
        };
        Err(Error::Runtime {
            message,
            cause: (!last_cause.is_empty()).then(|| redact_secrets(&last_cause, urls).into()),
        })
    }

    /// Tries the URLs again, round after round, until one answers or `deadline` passes (a
    /// replay that lost its connection goes on through another node of a cluster).
    pub(crate) async fn reconnect(
        urls: &[String],
        purpose: &str,
        deadline: tokio::time::Instant,
    ) -> Result<Broker> {
        let mut last = Error::runtime("no broker answered");
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(last);
            }
            match tokio::time::timeout(left, Broker::connect(urls, purpose)).await {
                Ok(Ok(broker)) => return Ok(broker),
                Ok(Err(e @ Error::Usage(_))) => return Err(e),
                Ok(Err(e)) => last = e,
                Err(_) => return Err(last),
            }
            tokio::time::sleep(RECONNECT_PAUSE.min(left)).await;
        }
    }

    /// Whether the connection itself is gone (closed by the broker, reset, timed out), as
    /// opposed to an error on one channel while the connection is still up.
    pub(crate) fn is_lost(&self) -> bool {
        self.gone.load(std::sync::atomic::Ordering::Relaxed)
            || !self.connection.status().connected()
    }

    /// The error for a connection found closed (e.g. a consumer's stream that ended with it).
    pub(crate) fn closed(&self) -> Error {
        Error::runtime(format!(
            "lost the connection to {}: the connection was closed",
            self.url.redacted()
        ))
    }

    /// How many channels a reader's segments or a browse's windows may have open at once: the
    /// `channel_max` agreed with the broker (RabbitMQ's default is 2,047), less
    /// [`OTHER_CHANNELS`].
    pub(crate) fn channels_for_reading(&self) -> usize {
        let max = usize::from(self.connection.configuration().channel_max());
        max.saturating_sub(OTHER_CHANNELS).max(1)
    }

    pub async fn channel(&self) -> Result<lapin::Channel> {
        self.answer(self.connection.create_channel())
            .await
            .map_err(|e| self.lost(e))
    }

    /// An error that is not about one entity: the connection failed, or the broker refused
    /// something and closed the channel (named as the refusal it is, not a lost connection).
    pub fn lost(&self, e: lapin::Error) -> Error {
        let message = match amqp_error(&e).and_then(|(code, text)| refusal(code, &text)) {
            Some(refused) => refused,
            None => format!(
                "lost the connection to {}: {}",
                self.url.redacted(),
                short_reason(&e)
            ),
        };
        Error::with_cause(message, format!("{e:?}"))
    }

    /// Closes the connection; a dead one, which would never answer, is given up on after a few seconds.
    pub async fn close(self) {
        let _ = tokio::time::timeout(
            watch::CLOSE_WITHIN,
            self.connection.close(200, "bye".into()),
        )
        .await;
    }
}

/// Opens one AMQP connection: plain, or TLS configured from the URL's query parameters
/// (lapin's own TLS ignores them).
async fn open(url: &BrokerUrl, props: ConnectionProperties) -> lapin::Result<Connection> {
    let Some(tls) = &url.tls else {
        return Connection::connect_uri(url.uri.clone(), props).await;
    };
    let connector = lapin::tcp::RustlsConnector::from(tls.config.clone());
    let name = tls
        .options
        .server_name
        .clone()
        .unwrap_or_else(|| url.host.clone());
    let runtime = lapin::runtime::default_runtime()?;
    Connection::connector(
        url.uri.clone(),
        runtime,
        async move |uri, runtime| {
            use lapin::tcp::AMQPUriTcpExt;
            let mut plain = uri.clone();
            plain.scheme = lapin::uri::AMQPScheme::AMQP;
            let stream = plain
                .connect_with_config_async(lapin::tcp::TLSConfig::default(), &runtime)
                .await?;
            Ok(stream.into_rustls(&connector, &name).await?)
        },
        props,
    )
    .await
}

/// The next item of a stream (lapin's `Consumer`), without a dependency just for `StreamExt::next`.
pub(crate) async fn next<S: futures_core::Stream + Unpin>(s: &mut S) -> Option<S::Item> {
    std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx)).await
}

/// The next item of a stream if it has one now, without waiting.
pub(crate) async fn ready_now<S: futures_core::Stream + Unpin>(
    s: &mut S,
) -> std::task::Poll<Option<S::Item>> {
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut *s).poll_next(cx)))
        .await
}

/// Polls a future once: its output if it is done already. lapin queues a request's frames on the
/// first poll, so this sends a request without waiting for it to be written.
pub(crate) async fn poll_once<F: std::future::Future + Unpin>(f: &mut F) -> Option<F::Output> {
    std::future::poll_fn(|cx| match std::pin::Pin::new(&mut *f).poll(cx) {
        std::task::Poll::Ready(out) => std::task::Poll::Ready(Some(out)),
        std::task::Poll::Pending => std::task::Poll::Ready(None),
    })
    .await
}

/// Sends every request now, in order (see [`poll_once`]), then waits for them all: one
/// hand-over to lapin's I/O thread for the lot instead of one per request. The first error wins.
pub(crate) async fn all_sent<F>(requests: impl IntoIterator<Item = F>) -> lapin::Result<()>
where
    F: std::future::Future<Output = lapin::Result<()>>,
{
    let mut pending = Vec::new();
    let mut failed = None;
    for request in requests {
        let mut request = Box::pin(request);
        match poll_once(&mut request).await {
            Some(Err(e)) => {
                failed.get_or_insert(e);
            }
            Some(Ok(())) => {}
            None => pending.push(request),
        }
    }
    for request in pending {
        if let Err(e) = request.await {
            failed.get_or_insert(e);
        }
    }
    failed.map_or(Ok(()), Err)
}

/// A broker refusal in one line, named by what it is; None for the codes that mean the
/// connection itself went away (320 connection-forced, 5xx frame and internal errors).
pub(crate) fn refusal(code: u16, text: &str) -> Option<String> {
    if let Some((size, max)) = size_refusal(text) {
        return Some(too_large(size, max));
    }
    let what = match code {
        403 => "access refused",
        404 => "not found",
        405 => "resource locked",
        406 => "precondition failed",
        530 => "not allowed",
        540 => "not implemented",
        506 => "resource error",
        _ => return None,
    };
    let detail = text.split_once(" - ").map_or(text, |(_, d)| d);
    Some(format!(
        "the broker refused it ({what}): {}",
        crate::util::printable(detail)
    ))
}

/// The sizes in the broker's refusal of a message over `max_message_size`:
/// "PRECONDITION_FAILED - message size 17825792 is larger than configured max size 16777216".
pub(crate) fn size_refusal(text: &str) -> Option<(u64, u64)> {
    let rest = text.split("message size ").nth(1)?;
    let (size, rest) = rest.split_once(" is larger than configured max size ")?;
    let max: String = rest.chars().take_while(char::is_ascii_digit).collect();
    Some((size.trim().parse().ok()?, max.parse().ok()?))
}

/// "a message of 17,825,792 bytes is over the broker's max_message_size (16,777,216 bytes)"
pub(crate) fn too_large(size: u64, max: u64) -> String {
    format!(
        "a message of {} bytes is over the broker's max_message_size ({} bytes)",
        crate::util::thousands(size),
        crate::util::thousands(max)
    )
}

/// The reply code and text of a channel- or connection-level error from the broker.
pub(crate) fn amqp_error(e: &lapin::Error) -> Option<(u16, String)> {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => Some((err.get_id(), err.get_message().to_string())),
        _ => None,
    }
}

fn connect_reason(e: &lapin::Error, url: &BrokerUrl) -> String {
    if let Some((code, text)) = amqp_error(e) {
        return match code {
            403 => format!(
                "access refused for user \"{}\" (check the username and password)",
                url.username
            ),
            530 => format!(
                "vhost \"{}\" does not exist or user \"{}\" may not use it",
                url.vhost, url.username
            ),
            _ => format!("the broker refused the connection ({code} {text})"),
        };
    }
    if let lapin::ErrorKind::IOError(io) = e.kind() {
        if let Some(why) = tls_reason(io, url) {
            return why;
        }
        return match io.kind() {
            std::io::ErrorKind::ConnectionRefused => format!(
                "connection refused at {}:{} (is RabbitMQ running there?)",
                url.host, url.port
            ),
            // rustls reports a handshake with a plain-AMQP port as a corrupt or invalid message.
            _ if url.tls.is_some() && io.to_string().to_lowercase().contains("message") => format!(
                "TLS handshake failed at {}:{} ({}); is that an amqps port (usually 5671)?",
                url.host,
                url.port,
                crate::util::io_reason(io)
            ),
            _ => format!("{} ({}:{})", crate::util::io_reason(io), url.host, url.port),
        };
    }
    if matches!(
        e.kind(),
        lapin::ErrorKind::ParsingError(_) | lapin::ErrorKind::InvalidProtocolVersion(_)
    ) {
        return format!(
            "the server at {}:{} does not speak AMQP 0-9-1 (wrong port?)",
            url.host, url.port
        );
    }
    short_reason(e)
}

fn tls_reason(io: &std::io::Error, url: &BrokerUrl) -> Option<String> {
    let tls = url.tls.as_ref()?;
    tls::handshake_reason(&io.to_string(), &url.host, &tls.options)
}

/// A lapin error in a few words, for one-line messages.
pub(crate) fn short_reason(e: &lapin::Error) -> String {
    match e.kind() {
        lapin::ErrorKind::ProtocolError(err) => {
            format!("{} {}", err.get_id(), err.get_message())
        }
        lapin::ErrorKind::IOError(io) => crate::util::io_reason(io),
        lapin::ErrorKind::InvalidChannelState(..) | lapin::ErrorKind::InvalidConnectionState(_) => {
            "the connection or channel was closed".to_string()
        }
        lapin::ErrorKind::MissingHeartbeatError => "the broker stopped answering heartbeats".into(),
        other => format!("{other:?}"),
    }
}

/// Debug text of an error may quote the URL; never let a password through.
fn redact_secrets(text: &str, urls: &[String]) -> String {
    let mut out = text.to_string();
    for u in urls {
        if let Ok(b) = parse_amqp_url(u) {
            if !b.password.is_empty() {
                out = out.replace(&b.password, "***");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request as lapin makes one: its frame is queued on the first poll (noted as its index),
    /// and it is answered on a later one (noted as 100 + its index).
    struct Request {
        index: usize,
        sent: std::sync::Arc<std::sync::Mutex<Vec<usize>>>,
        polls: u8,
        fails: bool,
    }

    impl std::future::Future for Request {
        type Output = lapin::Result<()>;
        fn poll(
            mut self: std::pin::Pin<&mut Self>,
            cx: &mut std::task::Context<'_>,
        ) -> std::task::Poll<Self::Output> {
            self.polls += 1;
            if self.polls == 1 {
                let index = self.index;
                self.sent.lock().unwrap().push(index);
                cx.waker().wake_by_ref();
                return std::task::Poll::Pending;
            }
            let index = self.index;
            self.sent.lock().unwrap().push(100 + index);
            std::task::Poll::Ready(match self.fails {
                true => Err(lapin::ErrorKind::InvalidChannelState(
                    lapin::ChannelState::Closed,
                    "test",
                )
                .into()),
                false => Ok(()),
            })
        }
    }

    #[tokio::test]
    async fn all_sent_sends_every_request_in_order_before_waiting_for_any() {
        let sent = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let requests = |fail: Option<usize>| {
            (0..5).map({
                let sent = sent.clone();
                move |index| Request {
                    index,
                    sent: sent.clone(),
                    polls: 0,
                    fails: fail == Some(index),
                }
            })
        };
        let in_order = [0, 1, 2, 3, 4, 100, 101, 102, 103, 104];
        assert!(all_sent(requests(None)).await.is_ok());
        assert_eq!(*sent.lock().unwrap(), in_order);
        sent.lock().unwrap().clear();
        // A failure is reported, and every request was still sent and waited for.
        assert!(all_sent(requests(Some(2))).await.is_err());
        assert_eq!(*sent.lock().unwrap(), in_order);
    }

    #[test]
    fn a_size_refusal_names_both_sizes() {
        let text = "PRECONDITION_FAILED - message size 17825792 is larger than configured max size 16777216";
        assert_eq!(size_refusal(text), Some((17_825_792, 16_777_216)));
        assert_eq!(
            refusal(406, text).unwrap(),
            "a message of 17,825,792 bytes is over the broker's max_message_size (16,777,216 bytes)"
        );
        assert_eq!(size_refusal("PRECONDITION_FAILED - inequivalent arg"), None);
    }

    #[test]
    fn refusals_are_named_and_lost_connections_are_not_refusals() {
        assert_eq!(
            refusal(540, "NOT_IMPLEMENTED - queue 'q' in vhost '/' does not support purge").unwrap(),
            "the broker refused it (not implemented): queue 'q' in vhost '/' does not support purge"
        );
        assert!(refusal(403, "ACCESS_REFUSED - no access")
            .unwrap()
            .contains("access refused"));
        assert_eq!(
            refusal(320, "CONNECTION_FORCED - broker forced connection closure"),
            None
        );
        assert_eq!(refusal(541, "INTERNAL_ERROR"), None);
    }

    #[test]
    fn parses_host_port_vhost_credentials() {
        let u = parse_amqp_url("amqp://bob:s%40cret@10.0.0.5:5673/prod").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.vhost.as_str()),
            ("10.0.0.5", 5673, "prod")
        );
        assert_eq!(
            (u.username.as_str(), u.password.as_str()),
            ("bob", "s@cret")
        );
        assert!(u.tls.is_none());
        assert_eq!(
            u.uri.authority.host, "10.0.0.5",
            "an IP host must not become localhost"
        );
        assert_eq!(u.uri.vhost, "prod");
    }

    #[test]
    fn ipv6_host_loses_its_brackets() {
        let u = parse_amqp_url("amqp://[::1]:5672/%2f").unwrap();
        assert_eq!(u.uri.authority.host, "::1");
    }

    #[test]
    fn default_vhost_is_slash() {
        let u = parse_amqp_url("amqp://guest:guest@127.0.0.1:5672/%2f").unwrap();
        assert_eq!(u.vhost, "/");
        assert_eq!(parse_amqp_url("amqps://h").unwrap().port, 5671);
    }

    #[test]
    fn non_amqp_scheme_is_a_usage_error_without_password() {
        let e = parse_amqp_url("http://u:topsecret@h").unwrap_err();
        assert!(
            matches!(&e, Error::Usage(m) if m.contains("scheme") && !m.contains("topsecret")),
            "{e}"
        );
    }

    #[test]
    fn secrets_are_scrubbed_from_causes() {
        let s = redact_secrets(
            "Io(refused) amqp://u:hunter2@h",
            &["amqp://u:hunter2@h".into()],
        );
        assert!(!s.contains("hunter2"));
    }
}
