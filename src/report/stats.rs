//! The report of `dlq stats`.

use serde::Serialize;

#[derive(Debug, Clone, Serialize)]
pub(crate) struct QueueStat {
    pub queue: String,
    /// `None`: the queue does not exist.
    pub ready: Option<u32>,
    pub consumers: Option<u32>,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct ServiceStats {
    pub service: String,
    pub work: QueueStat,
    pub retry: QueueStat,
    pub error: QueueStat,
}

pub(crate) struct StatsReport {
    pub services: Vec<ServiceStats>,
    pub missing: Vec<String>,
}
