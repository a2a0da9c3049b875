//! dlq: administer RabbitMQ retry and error queues. The pure parts are public so tests reach them.

pub mod broker;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod error;
pub mod filter;
pub mod format;
pub mod generate;
pub mod interrupt;
pub mod json;
pub mod message;
pub mod options;
pub mod output;
pub mod replay;
pub mod report;
pub mod retry;
pub mod sanitize;
pub mod settings;
pub mod topology;
pub mod transform;
pub mod ui;
pub mod util;

/// The stack of every thread that compiles or runs a jq expression (the command's own thread
/// and the runtime's workers): jaq parses and evaluates recursively, and
/// `filter::MAX_NESTING`/`MAX_OPERATORS` are set so that the largest expression they allow runs
/// within it, in a debug build too. Untouched stack pages cost no memory.
pub const STACK_SIZE: usize = 64 << 20;
