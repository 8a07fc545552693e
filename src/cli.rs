//! Command-line interface (DESIGN.md §6). Flags are documented where they are defined, so
//! `--help` teaches.

use crate::output::Format;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

#[derive(Parser, Debug)]
#[command(
    name = "intentflow",
    version,
    about = "Streaming personalization engine: behaviour events in, incremental view changes out"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Maintain the views over an event stream and print their changes as JSON lines.
    Run(RunArgs),
    /// Write a deterministic, realistic clickstream (JSON lines) to stdout.
    Generate(GenerateArgs),
    /// Show the experiments of an engine output: a table, and an SVG chart over time.
    Report(ReportArgs),
    /// Fit a model on a replay of an event file through the engine's views.
    Train(TrainArgs),
    /// Inspect the configuration.
    Config(ConfigArgs),
}

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModelKind {
    /// Behavioural segments: k-means over the features view ([segments] in config).
    Kmeans,
    /// Conversion and churn propensity: logistic regressions ([propensity] in config).
    Propensity,
    /// Implicit-feedback ALS item factors over the windowed scores (not loaded by `run` yet).
    Als,
}

#[derive(Args, Debug)]
pub struct ReportArgs {
    /// The engine's output (JSON lines, either format): a file, `-` for stdin, or
    /// `tcp://ADDR` to subscribe to a running `intentflow run --serve ADDR` (the table is
    /// printed again after each progress line that changed it).
    #[arg(long)]
    pub input: String,
    /// Also chart each variant's CTR and conversion rate over event time here (SVG).
    #[arg(long)]
    pub svg: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[arg(value_enum)]
    pub kind: ModelKind,
    /// Events to replay (JSON lines).
    #[arg(long)]
    pub events: PathBuf,
    /// Catalog items (for the category features).
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// TOML config: the views' settings and [segments]/[propensity] training settings.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where to write the model (JSON).
    #[arg(long)]
    pub out: PathBuf,
    /// k-means: report the adjusted Rand index against these {"user","archetype"} lines
    /// (`generate --truth-out`).
    #[arg(long)]
    pub truth: Option<PathBuf>,
    /// The model this one replaces: k-means segments that match keep their ids; ALS starts
    /// from its item factors.
    #[arg(long)]
    pub previous: Option<PathBuf>,
    /// Worker threads for the replay.
    #[arg(long, short = 'w', default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: u64,
}

#[derive(Args, Debug, Clone)]
pub struct RunArgs {
    /// Events: `stdin` (or `-`), a file path, or `tcp://HOST:PORT` to accept any number of
    /// producer connections sending JSON lines.
    #[arg(long, default_value = "stdin")]
    pub input: String,
    /// Catalog items as JSON lines: {"item","category","kind","price","premium"}.
    #[arg(long)]
    pub catalog: Option<PathBuf>,
    /// TOML config; see `intentflow config --print-defaults`.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Worker threads per process.
    #[arg(long, short = 'w', default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub workers: u64,
    /// Number of processes in a cluster (timely's cluster mode).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=1024))]
    pub processes: u64,
    /// This process's index in the cluster, 0-based; process 0 reads input and writes output.
    #[arg(long, default_value_t = 0)]
    pub process: u64,
    /// One `host:port` per line, a line per process; default: localhost:2101, 2102, ...
    #[arg(long)]
    pub hostfile: Option<PathBuf>,
    /// Serve subscriptions over TCP on this address (e.g. 127.0.0.1:7070).
    #[arg(long)]
    pub serve: Option<String>,
    /// Messages (one view's changes at one time, or a progress line) a subscriber may fall
    /// behind before it is disconnected.
    #[arg(long, default_value_t = 4096)]
    pub serve_queue: usize,
    /// Comma-separated views to maintain and print (default: all).
    #[arg(long, value_delimiter = ',')]
    pub views: Option<Vec<String>>,
    /// Output format on stdout.
    #[arg(long, value_enum, default_value_t = Format::Diff)]
    pub format: Format,
    /// Do not print changes to stdout (useful with --serve).
    #[arg(long)]
    pub no_stdout: bool,
    /// Append, whenever the output frontier moves, each worker's live record count per
    /// stateful operator (arrangements and in-place state) to FILE as JSON lines (to watch
    /// state size).
    #[arg(long, value_name = "FILE")]
    pub arrangement_stats: Option<std::path::PathBuf>,
    /// Event time is coarsened to ticks of this many milliseconds: larger ticks batch more
    /// work per step (throughput), smaller ticks emit sooner (latency).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub tick_ms: u64,
    /// How far behind the newest event time an event may arrive and still be applied at
    /// its own time; older events are applied at the watermark and counted as late.
    #[arg(long, default_value_t = 5000)]
    pub lateness_ms: u64,
    /// When a streaming input (stdin, tcp) is quiet this long, the watermark moves past
    /// the newest event's tick so results are final without waiting for more events. 0:
    /// as soon as no input is buffered (lowest latency; a straggler is late by one tick).
    #[arg(long, default_value_t = 1000)]
    pub idle_ms: u64,
    /// Write every bad input line, with its reason, to this file (JSON lines).
    #[arg(long)]
    pub dead_letter: Option<PathBuf>,
    /// Lines longer than this are rejected without being buffered.
    #[arg(long, default_value_t = 1 << 20)]
    pub max_line_bytes: usize,
    /// Exit non-zero at the first bad input line.
    #[arg(long)]
    pub strict: bool,
    /// A trained model (`intentflow train ...`) to load: k-means feeds `segments`, a
    /// propensity model feeds `propensity`, ALS feeds `als`. Repeatable, one per kind.
    #[arg(long = "model", value_name = "MODEL.json")]
    pub models: Vec<PathBuf>,
    /// Refit models every N events without stopping, on the state at the N-th event's time:
    /// k-means when the segments view is on (on every user's features; [segments] from
    /// --config; segment ids carry over), ALS when the als view is on (on every windowed
    /// score; [als] from --config; warm-started from the current item factors).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    pub refit_every: Option<u64>,
    /// With --refit-every: write each refitted model into this directory, as kmeans.json
    /// and als.json (restart with --model FILE).
    #[arg(long, value_name = "DIR", requires = "refit_every")]
    pub refit_out: Option<PathBuf>,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    #[arg(long, default_value_t = 1000)]
    pub users: usize,
    #[arg(long, default_value_t = 500)]
    pub items: usize,
    #[arg(long, default_value_t = 50_000)]
    pub events: usize,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// Days of event time the stream spans, from 2026-01-01.
    #[arg(long, default_value_t = 14)]
    pub days: u32,
    /// Also write the catalog (JSON lines) here.
    #[arg(long)]
    pub catalog_out: Option<PathBuf>,
    /// Also write each user's true behaviour archetype ({"user","archetype"}) here.
    #[arg(long)]
    pub truth_out: Option<PathBuf>,
    /// Simulate the first [[experiments]] entry of this config: listing pages show
    /// recommendation lists (impression events) that users click.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// With --config: VARIANT=FRACTION, the variant's true relative click-through uplift
    /// (e.g. treatment=0.1 for +10%); repeatable. Variants not named have none.
    #[arg(long, value_name = "VARIANT=FRACTION")]
    pub uplift: Vec<String>,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    /// Print the full default configuration, with comments.
    #[arg(long)]
    pub print_defaults: bool,
    /// Check a config file and report the first error.
    #[arg(long)]
    pub check: Option<PathBuf>,
}
