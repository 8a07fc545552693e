//! The intentflow runtime: command line, config, sources, sinks, worker loop and cluster
//! set-up around the views in `intentflow-dataflows` (DESIGN.md §1). `main.rs` only wires
//! these together; benches and tests use them directly.

pub mod cli;
pub mod clock;
pub mod config;
pub mod engine;
pub mod generate;
pub mod ingest;
pub mod lines;
pub mod model_files;
pub mod output;
pub mod parse;
pub mod profile;
pub mod refit;
pub mod replay;
pub mod report;
pub mod serve;
pub mod stats;
pub mod train;
