//! dlq: administer RabbitMQ retry and error queues. The pure parts are public so tests reach them.

pub mod broker;
pub mod cli;
pub mod cmd;
pub mod config;
pub mod error;
pub mod filter;
pub mod generate;
pub mod interrupt;
pub mod message;
pub mod output;
pub mod replay;
pub mod retry;
pub mod sanitize;
pub mod settings;
pub mod topology;
pub mod transform;
pub mod ui;
pub mod util;
