//! The per-service topology: what the config derives (pure) and how it compares to what a broker has (pure).

pub mod derive;
pub mod diff;

pub(crate) use derive::{
    derive, ArgValue, BindingSpec, ExchangeSpec, Generation, QueueSpec, Topology,
};
pub(crate) use diff::{Finding, FindingStatus};
