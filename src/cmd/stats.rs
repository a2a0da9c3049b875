//! `dlq stats`: ready and consumer counts of each service's work, retry and error queues.

use crate::broker::amqp::Reply;
use crate::broker::Broker;
use crate::error::{Error, Result};
use crate::options::Services;
use crate::output::Report;
use crate::report::stats::{QueueStat, ServiceStats, StatsReport};
use crate::settings::Settings;

pub(crate) async fn run(a: &Services, settings: &Settings) -> Result<Box<dyn Report>> {
    let config = settings.require_config()?;
    let services = config.select(&a.0)?;
    if services.is_empty() {
        return Err(Error::usage(format!(
            "{} defines no services",
            config.path.display()
        )));
    }
    let broker = Broker::connect(&settings.urls, "stats").await?;
    let mut out = Vec::new();
    let mut missing = Vec::new();
    for s in services {
        let stat = |queue: String| {
            let broker = &broker;
            async move {
                let r = broker.probe_queue(&queue).await?;
                Ok::<_, Error>(match r {
                    Reply::Ok(c) => QueueStat {
                        queue,
                        ready: Some(c.messages),
                        consumers: Some(c.consumers),
                    },
                    _ => QueueStat {
                        queue,
                        ready: None,
                        consumers: None,
                    },
                })
            }
        };
        let work = stat(s.work_queue()).await?;
        let retry = stat(s.retry_queue()).await?;
        let error = stat(s.error_queue()).await?;
        for q in [&work, &retry, &error] {
            if q.ready.is_none() {
                missing.push(q.queue.clone());
            }
        }
        out.push(ServiceStats {
            service: s.name.clone(),
            work,
            retry,
            error,
        });
    }
    broker.close().await;
    Ok(Box::new(StatsReport {
        services: out,
        missing,
    }))
}
