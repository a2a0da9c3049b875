//! The reports of `dlq topology plan|apply|verify`.

use crate::topology::{Finding, Topology};

pub(crate) struct PlanReport {
    pub topology: Topology,
    pub notes: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    Apply,
    Verify,
}

pub(crate) struct TopologyReport {
    pub action: Action,
    pub findings: Vec<Finding>,
    /// Said on stderr: e.g. that the management API was unreachable.
    pub notes: Vec<String>,
    /// Where the check was made: "management API at …" or "AMQP at …".
    pub source: String,
}
