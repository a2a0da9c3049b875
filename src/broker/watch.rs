//! Waiting for the broker without waiting forever. A request that goes unanswered for
//! [`PATIENCE`] makes dlq check that the connection still lives: a fresh channel must open. A
//! slow broker passes the check and is waited for; a dead connection (a node killed while
//! lapin has not noticed, or a network that drops everything) is marked lost, so that `replay`
//! reconnects and every other command stops with exit 1, instead of hanging.

use std::future::Future;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Broker;

/// How long an answer is waited for before the connection is checked.
pub(crate) const PATIENCE: Duration = Duration::from_secs(10);

/// How long the check may take: opening a channel, which a live node answers at once.
const CHECK_WITHIN: Duration = Duration::from_secs(10);

/// How long closing a connection may take (a dead one never answers the close).
pub(crate) const CLOSE_WITHIN: Duration = Duration::from_secs(5);

impl Broker {
    /// Awaits one broker request (an RPC, a publish, a confirm). Every [`PATIENCE`] without an
    /// answer, the connection is checked; a dead one ends the wait with an error, and
    /// [`Broker::is_lost`] says so from then on.
    pub(crate) async fn answer<T>(
        &self,
        request: impl Future<Output = lapin::Result<T>>,
    ) -> lapin::Result<T> {
        tokio::pin!(request);
        loop {
            match tokio::time::timeout(PATIENCE, &mut request).await {
                Ok(answer) => return answer,
                Err(_quiet) => self.check_alive().await?,
            }
        }
    }

    /// Ok while the connection answers. A connection the broker holds blocked (a memory or disk
    /// alarm: publishes wait until it clears) is alive and waited for. Anything else marks the
    /// connection lost.
    pub(crate) async fn check_alive(&self) -> lapin::Result<()> {
        if !self.is_lost() {
            if self.connection.status().blocked() {
                return Ok(());
            }
            let opened = tokio::time::timeout(CHECK_WITHIN, self.connection.create_channel()).await;
            if let Ok(Ok(channel)) = opened {
                let _ =
                    tokio::time::timeout(CHECK_WITHIN, channel.close(200, "alive".into())).await;
                return Ok(());
            }
        }
        self.gone.store(true, Ordering::Relaxed);
        Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the broker stopped answering: no answer for {} s, and no new channel would open",
                PATIENCE.as_secs()
            ),
        )
        .into())
    }
}

/// `request.answered(broker).await`: [`Broker::answer`] at the end of a call chain.
pub(crate) trait Answered<T>: Future<Output = lapin::Result<T>> + Sized {
    fn answered(self, broker: &Broker) -> impl Future<Output = lapin::Result<T>> {
        broker.answer(self)
    }
}

impl<T, F: Future<Output = lapin::Result<T>>> Answered<T> for F {}
