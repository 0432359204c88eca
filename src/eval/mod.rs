//! Measured quality: retrieval metrics on a BEIR-format set and answer metrics on a
//! SQuAD-style set, each comparing configurations on the same index.
pub mod metrics;
pub mod qa;
pub mod retrieval;
