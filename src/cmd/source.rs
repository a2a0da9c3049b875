//! SERVICE or --queue Q → the queue to read and the service's work queue (the replay destination).

use crate::cli::SourceArgs;
use crate::error::{Error, Result};
use crate::settings::Settings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    /// The queue messages are read from.
    pub queue: String,
    /// The service's work queue, when a SERVICE was named.
    pub work_queue: Option<String>,
}

pub fn resolve(a: &SourceArgs, settings: &Settings) -> Result<Source> {
    match (&a.service, &a.queue) {
        (_, Some(q)) => Ok(Source {
            queue: q.clone(),
            work_queue: None,
        }),
        (Some(name), None) => {
            let service = settings.require_config()?.service(name)?;
            Ok(Source {
                queue: service.error_queue(),
                work_queue: Some(service.work_queue()),
            })
        }
        (None, None) => Err(Error::usage("name a SERVICE or give --queue Q")),
    }
}
