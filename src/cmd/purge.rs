//! `dlq purge`: remove every message of a queue after asking; prints how many.

use super::source::resolve;
use crate::broker::amqp::Reply;
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::options::SourceChoice;
use crate::output::Report;
use crate::report::moves::PurgeReport;
use crate::settings::Settings;
use crate::ui;

pub(crate) async fn run(source: &SourceChoice, settings: &Settings) -> Result<Box<dyn Report>> {
    let source = resolve(source, settings)?;
    let consent = ui::consent(settings, "purge")?;
    let broker = Broker::connect(&settings.urls, "purge").await?;
    let not_found = || {
        Error::runtime(format!(
            "queue \"{}\" not found",
            crate::util::printable(&source.queue)
        ))
    };
    let ready = match broker.probe_queue(&source.queue).await? {
        Reply::Ok(c) => c.messages,
        _ => return Err(not_found()),
    };
    let question = format!(
        "Remove all {ready} message(s) from \"{}\"? This cannot be undone",
        source.queue
    );
    if !ui::confirm(consent, &question)? {
        broker.close().await;
        return Ok(Box::new(PurgeReport {
            queue: source.queue,
            purged: 0,
            declined: true,
        }));
    }
    let purged = match broker.purge_queue(&source.queue).await? {
        Reply::Ok(n) => n as u64,
        Reply::NotFound(_) => return Err(not_found()),
        Reply::Refused(why) => {
            return Err(Error::runtime(format!(
                "cannot purge \"{}\": {why}",
                source.queue
            )))
        }
    };
    broker.close().await;
    Ok(Box::new(PurgeReport {
        queue: source.queue,
        purged,
        declined: false,
    }))
}
