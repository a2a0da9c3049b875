//! AMQP operations on entities: passive probes and declares, each on a throwaway channel
//! because a 404 or 406 closes the channel it happens on.

use lapin::options::{
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::ExchangeKind;

use super::{amqp_error, Broker};
use crate::error::{Error, Result};
use crate::topology::{ArgValue, BindingSpec, ExchangeSpec, QueueSpec};

/// How long a quorum queue's leader has to answer a passive declare's count before the broker
/// answers 0 instead (rabbit_quorum_queue:stat/1).
const QUORUM_STAT_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(250);

/// How long [`Broker::probe_queue`] asks again after such a 0.
const BUSY_LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// What the broker said to one declare or probe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Reply<T> {
    Ok(T),
    /// 404 NOT_FOUND.
    NotFound(String),
    /// 406 PRECONDITION_FAILED (or another channel-level refusal), with the broker's text.
    Refused(String),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct QueueCounts {
    pub messages: u32,
    pub consumers: u32,
}

/// A user-supplied name as an AMQP short string (at most 255 bytes) — a usage error otherwise.
pub(crate) fn short(name: &str) -> Result<ShortString> {
    ShortString::try_new(name).map_err(|_| {
        Error::usage(format!(
            "name \"{}…\" is longer than AMQP's 255 bytes",
            crate::util::printable(&name.chars().take(40).collect::<String>())
        ))
    })
}

pub(crate) fn field_table(
    args: &std::collections::BTreeMap<String, ArgValue>,
) -> Result<FieldTable> {
    let mut t = FieldTable::default();
    for (k, v) in args {
        let value = match v {
            ArgValue::Str(s) => AMQPValue::LongString(LongString::from(s.as_str())),
            ArgValue::Int(i) => AMQPValue::LongLongInt(*i),
        };
        t.insert(short(k)?, value);
    }
    Ok(t)
}

/// A 403 in one line: who, where, which permission (as dlq knows the operation), and the
/// broker's own words.
fn access_refused(user: &str, vhost: &str, needs: &str, text: &str) -> String {
    let said = text.split_once(" - ").map_or(text, |(_, d)| d);
    crate::util::printable(&format!(
        "access refused: user '{user}' in vhost '{vhost}' lacks {needs} (the broker said: {said})"
    ))
}

impl Broker {
    /// Runs one channel-level operation on a fresh channel, sorting broker refusals from lost connections.
    ///
    /// `needs` names the permission the operation takes (RabbitMQ's refusal text does not
    /// always say which: 3.10 words a refused declare "access to exchange 'x' … refused").
    async fn on_throwaway<T, F, Fut>(&self, needs: &str, op: F) -> Result<Reply<T>>
    where
        F: FnOnce(lapin::Channel) -> Fut,
        Fut: std::future::Future<Output = lapin::Result<T>>,
    {
        let channel = self.channel().await?;
        let keep = channel.clone();
        match self.answer(op(channel)).await {
            Ok(v) => {
                let _ = self.answer(keep.close(200, "done".into())).await;
                Ok(Reply::Ok(v))
            }
            Err(e) => match amqp_error(&e) {
                Some((404, text)) => Ok(Reply::NotFound(text)),
                // Access refused is not a conflict: the whole command fails (exit 1).
                Some((403, text)) => Err(Error::with_cause(
                    access_refused(&self.url.username, &self.url.vhost, needs, &text),
                    format!("{e:?}"),
                )),
                Some((code, text)) if code < 500 => Ok(Reply::Refused(text)),
                _ => Err(self.lost(e)),
            },
        }
    }

    /// Passive declare: the queue's counts, or NotFound. Never creates anything.
    /// A quorum queue's passive declare answers 0 messages and 0 consumers when its leader does
    /// not answer within 250 ms (rabbit_quorum_queue:stat/2, 3.10 to 4.3), e.g. while it is
    /// still requeuing 100,000 messages given back by the previous command: such a 0 is not an
    /// empty queue. A 0/0 that took that long is asked again, for at most [`BUSY_LEADER_WAIT`].
    pub(crate) async fn probe_queue(&self, name: &str) -> Result<Reply<QueueCounts>> {
        let deadline = tokio::time::Instant::now() + BUSY_LEADER_WAIT;
        loop {
            let asked = tokio::time::Instant::now();
            let reply = self.probe_queue_once(name).await?;
            let maybe_busy = matches!(&reply, Reply::Ok(c) if c.messages == 0 && c.consumers == 0)
                && asked.elapsed() >= QUORUM_STAT_TIMEOUT;
            if !maybe_busy || tokio::time::Instant::now() >= deadline {
                return Ok(reply);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }

    async fn probe_queue_once(&self, name: &str) -> Result<Reply<QueueCounts>> {
        let name = short(name)?;
        let needs = format!("access to queue '{}'", name.as_str());
        self.on_throwaway(&needs, |ch| async move {
            let q = ch
                .queue_declare(
                    name,
                    QueueDeclareOptions {
                        passive: true,
                        ..Default::default()
                    },
                    FieldTable::default(),
                )
                .await?;
            Ok(QueueCounts {
                messages: q.message_count(),
                consumers: q.consumer_count(),
            })
        })
        .await
    }

    pub(crate) async fn probe_exchange(&self, name: &str) -> Result<Reply<()>> {
        let name = short(name)?;
        let needs = format!("access to exchange '{}'", name.as_str());
        self.on_throwaway(&needs, |ch| async move {
            ch.exchange_declare(
                name,
                ExchangeKind::Direct,
                ExchangeDeclareOptions {
                    passive: true,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
        })
        .await
    }

    /// Declares the queue as specified: creates it when absent; 406 when it exists with other arguments.
    pub(crate) async fn declare_queue(&self, spec: &QueueSpec) -> Result<Reply<()>> {
        let name = short(&spec.name)?;
        let args = field_table(&spec.arguments)?;
        let durable = spec.durable;
        let needs = format!("configure permission on queue '{}'", spec.name);
        self.on_throwaway(&needs, |ch| async move {
            ch.queue_declare(
                name,
                QueueDeclareOptions {
                    durable,
                    ..Default::default()
                },
                args,
            )
            .await
            .map(|_| ())
        })
        .await
    }

    pub(crate) async fn declare_exchange(
        &self,
        spec: &ExchangeSpec,
        kind: &str,
    ) -> Result<Reply<()>> {
        let name = short(&spec.name)?;
        let kind = match kind {
            "direct" => ExchangeKind::Direct,
            "fanout" => ExchangeKind::Fanout,
            "topic" => ExchangeKind::Topic,
            "headers" => ExchangeKind::Headers,
            other => ExchangeKind::Custom(other.to_string()),
        };
        let durable = spec.durable;
        let needs = format!("configure permission on exchange '{}'", spec.name);
        self.on_throwaway(&needs, |ch| async move {
            ch.exchange_declare(
                name,
                kind,
                ExchangeDeclareOptions {
                    durable,
                    ..Default::default()
                },
                FieldTable::default(),
            )
            .await
        })
        .await
    }

    pub(crate) async fn bind_queue(&self, spec: &BindingSpec) -> Result<Reply<()>> {
        let (queue, exchange, key) = (
            short(&spec.queue)?,
            short(&spec.exchange)?,
            short(&spec.routing_key)?,
        );
        let needs = format!(
            "write permission on queue '{}' and read permission on exchange '{}'",
            spec.queue, spec.exchange
        );
        self.on_throwaway(&needs, |ch| async move {
            ch.queue_bind(
                queue,
                exchange,
                key,
                QueueBindOptions::default(),
                FieldTable::default(),
            )
            .await
        })
        .await
    }

    /// Removes every ready message; returns how many.
    pub(crate) async fn purge_queue(&self, name: &str) -> Result<Reply<u32>> {
        let name = short(name)?;
        let needs = format!("read permission on queue '{}'", name.as_str());
        self.on_throwaway(&needs, |ch| async move {
            ch.queue_purge(name, QueuePurgeOptions::default()).await
        })
        .await
    }
}
