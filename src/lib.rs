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

/// jemalloc, not glibc's malloc, for the engine and everything built on this crate (its
/// binaries, tests and benches): every change allocates (rows, batches, exchanged records)
/// and much of it is freed soon after, often by another thread. 200k events, all views:
/// 1 worker 23.2–24.9 → 18.7–19.3 s, 2 workers 15.7–17.4 → 12.2–13.5 s; peak RSS +7–10%.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;
