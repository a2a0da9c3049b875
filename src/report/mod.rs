//! What each command hands to the output layer: plain data with no I/O, below both `cmd`
//! (which fills it in) and `output` (which renders it), so neither depends on the other for it.

pub mod browse;
pub mod moves;
pub mod stats;
pub mod topology;
