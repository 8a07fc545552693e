//! Load generator for the `bench` script: drives a running `intentflow run --input tcp://…
//! --serve …` and measures, from a subscription, when the engine's output covers each event.
//!
//! An event is covered once a `{"progress":P}` line with P above its time arrives: every
//! change it causes has been delivered by then (DESIGN.md §5).
//!
//! - `latency`: open loop. Event i is due at start + i/rate and carries that instant as its
//!   `ts` (ms), like live traffic stamped by the site. Latency is measured from the due
//!   instant, not from when it was actually written, so a sender or engine falling behind
//!   shows as queueing delay instead of silently lowering the offered load. It also
//!   reports the rate at which the engine covered events between the progress lines that
//!   covered the first 10% and 90% of them (leaving out start-up and the last tick): the
//!   offered rate when the engine keeps up, its capacity at that event-time density when
//!   it falls behind. `send_lag_*` say how late the generator itself handed events to
//!   the socket: that lag is inside every latency measured.
//! - `absorb`: sends a state prefix as fast as the engine takes it, waits until it is
//!   covered, then times how long each further batch takes to be covered (the incremental
//!   cost of new events on top of that state).
//!
//! Prints one JSON object on stdout.

use clap::{Parser, Subcommand};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

#[derive(Parser)]
#[command(about = "Drives a running intentflow engine over TCP and measures output latency")]
struct Args {
    /// Event lines (JSON, as `intentflow generate` writes them).
    #[arg(long)]
    events: PathBuf,
    #[command(subcommand)]
    mode: Mode,
}

/// Where the engine listens.
#[derive(clap::Args)]
struct Engine {
    /// The engine's `--input tcp://` address.
    #[arg(long)]
    input: String,
    /// The engine's `--serve` address.
    #[arg(long)]
    serve: String,
    /// Views to subscribe to (their changes are delivered before each progress line).
    #[arg(long, value_delimiter = ',', required = true)]
    views: Vec<String>,
}

#[derive(Subcommand)]
enum Mode {
    /// Offer `rate` events/s for `seconds`, stamped with their due time.
    Latency {
        #[command(flatten)]
        engine: Engine,
        #[arg(long)]
        rate: u64,
        #[arg(long)]
        seconds: u64,
    },
    /// Load `state` events, then time `batches` batches of `batch` events each.
    Absorb {
        #[command(flatten)]
        engine: Engine,
        #[arg(long)]
        state: usize,
        #[arg(long, default_value_t = 1000)]
        batch: usize,
        #[arg(long, default_value_t = 5)]
        batches: usize,
    },
    /// Parse every line into an event on one thread, `passes` times: events/s per core.
    Parse {
        #[arg(long, default_value_t = 5)]
        passes: usize,
    },
}

fn main() {
    let args = Args::parse();
    if let Err(error) = run(args) {
        eprintln!("loadgen: {error}");
        std::process::exit(1);
    }
}

fn run(args: Args) -> Result<(), String> {
    let text = std::fs::read_to_string(&args.events)
        .map_err(|error| format!("reading {}: {error}", args.events.display()))?;
    let lines: Vec<&str> = text
        .lines()
        .filter(|line| !line.trim().is_empty())
        .collect();
    let connect = |engine: &Engine| -> Result<(TcpStream, ProgressFeed), String> {
        let progress = subscribe(&engine.serve, &engine.views)?;
        let producer = TcpStream::connect(&engine.input)
            .map_err(|error| format!("connecting to {}: {error}", engine.input))?;
        producer.set_nodelay(true).ok();
        Ok((producer, progress))
    };
    let report = match args.mode {
        Mode::Latency {
            engine,
            rate,
            seconds,
        } => {
            let (producer, progress) = connect(&engine)?;
            latency(&lines, producer, progress, rate, seconds)?
        }
        Mode::Absorb {
            engine,
            state,
            batch,
            batches,
        } => {
            let (producer, progress) = connect(&engine)?;
            absorb(&lines, producer, progress, state, batch, batches)?
        }
        Mode::Parse { passes } => parse_only(&lines, passes)?,
    };
    println!("{report}");
    Ok(())
}

/// The engine's own line parser (`intentflow::parse::parse_event`), alone on this thread.
fn parse_only(lines: &[&str], passes: usize) -> Result<String, String> {
    let mut rates = Vec::new();
    for _ in 0..passes.max(1) {
        let began = Instant::now();
        let mut parsed = 0usize;
        for line in lines {
            parsed +=
                usize::from(intentflow::parse::parse_event(std::hint::black_box(line)).is_ok());
        }
        rates.push(parsed as f64 / began.elapsed().as_secs_f64());
    }
    rates.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "lines": lines.len(),
        "events_per_s_median": rates[rates.len() / 2],
    })
    .to_string())
}

/// Progress bounds as they arrive, with their arrival instant.
type ProgressFeed = mpsc::Receiver<(u64, Instant)>;

/// Subscribes to `views` and forwards each progress bound (a closed frontier as u64::MAX).
fn subscribe(serve: &str, views: &[String]) -> Result<ProgressFeed, String> {
    let mut stream =
        TcpStream::connect(serve).map_err(|error| format!("connecting to {serve}: {error}"))?;
    let request = serde_json::json!({"subscribe": views, "snapshot": false});
    writeln!(stream, "{request}").map_err(|error| format!("subscribing: {error}"))?;
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::with_capacity(1 << 20, stream);
        let mut line = String::new();
        loop {
            line.clear();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let Some(rest) = line.strip_prefix("{\"progress\":") else {
                if line.starts_with("{\"error\"") {
                    eprintln!("loadgen: subscription: {}", line.trim_end());
                }
                continue;
            };
            let now = Instant::now();
            let bound = rest.trim_end().trim_end_matches('}');
            let bound = bound.parse::<u64>().unwrap_or(u64::MAX);
            if sender.send((bound, now)).is_err() {
                return;
            }
        }
    });
    Ok(receiver)
}

/// `line` with its `ts` replaced by `ts`.
fn restamp(line: &str, ts: u64) -> Result<String, String> {
    let start = line.find("\"ts\":").ok_or("an event line without \"ts\"")? + 5;
    let rest = &line[start..];
    let end = rest
        .find([',', '}'])
        .ok_or("an event line with a malformed ts")?;
    Ok(format!("{}{ts}{}", &line[..start], &rest[end..]))
}

/// The `ts` of an event line, as the engine reads it (0 for a line it rejects).
fn ts_of(line: &str) -> u64 {
    intentflow::parse::parse_event(line).map_or(0, |event| event.ts)
}

fn latency(
    lines: &[&str],
    producer: TcpStream,
    progress: ProgressFeed,
    rate: u64,
    seconds: u64,
) -> Result<String, String> {
    if rate == 0 || lines.is_empty() {
        return Err("needs a positive rate and some events".into());
    }
    let count = (rate * seconds) as usize;
    // Due times are fixed up front: event i is due `i / rate` after the start, and its ts
    // is that instant in epoch milliseconds.
    let start = Instant::now() + Duration::from_millis(500);
    let start_ms = epoch_ms() + 500;
    let offset =
        move |i: usize| Duration::from_nanos((i as u64).saturating_mul(1_000_000_000) / rate);
    let mut stamped = Vec::with_capacity(count);
    for i in 0..count {
        let ts = start_ms + offset(i).as_millis() as u64;
        stamped.push((ts, restamp(lines[i % lines.len()], ts)?));
    }
    let times: Vec<u64> = stamped.iter().map(|(ts, _)| *ts).collect();
    // Up to a thousand events/s, each is sent on time (see `wait_until`); above, sleeping
    // late only groups a few events per write, and waiting by yielding would keep a core
    // from the engine.
    let precise = rate <= 1_000;
    let sender = std::thread::spawn(move || -> Result<Vec<Duration>, String> {
        let mut out = BufWriter::with_capacity(1 << 16, producer);
        // How late each event was handed to the socket: the generator's own error, part of
        // every latency measured (a sleep wakes up late).
        let mut lags = Vec::with_capacity(stamped.len());
        for (i, (_, line)) in stamped.iter().enumerate() {
            let due = start + offset(i);
            let now = Instant::now();
            if due > now {
                // Ahead of schedule: hand over what is written, then wait.
                out.flush().map_err(|error| format!("sending: {error}"))?;
                if precise {
                    wait_until(due);
                } else {
                    std::thread::sleep(due - now);
                }
            }
            lags.push(Instant::now().saturating_duration_since(due));
            out.write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|error| format!("sending: {error}"))?;
        }
        out.flush().map_err(|error| format!("sending: {error}"))?;
        Ok(lags)
    });
    let mut latencies = Vec::with_capacity(count);
    // (arrival, events covered) at each progress line that covered some.
    let mut coverage: Vec<(Instant, usize)> = Vec::new();
    let deadline = Duration::from_secs(seconds + 60);
    while latencies.len() < count {
        let (bound, arrived) = progress.recv_timeout(deadline).map_err(|_| {
            format!(
                "{} of {count} events covered before timeout",
                latencies.len()
            )
        })?;
        let before = latencies.len();
        while latencies.len() < count && times[latencies.len()] < bound {
            let due = start + offset(latencies.len());
            latencies.push(arrived.saturating_duration_since(due));
        }
        if latencies.len() > before {
            coverage.push((arrived, latencies.len()));
        }
    }
    let mut lags = sender.join().map_err(|_| "sender panicked")??;
    latencies.sort();
    lags.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    let at =
        |sorted: &[Duration], q: f64| ms(sorted[((sorted.len() - 1) as f64 * q).round() as usize]);
    Ok(serde_json::json!({
        "offered_per_s": rate,
        "events": count,
        "p50_ms": at(&latencies, 0.5),
        "p99_ms": at(&latencies, 0.99),
        "max_ms": ms(*latencies.last().unwrap()),
        "send_lag_p50_ms": at(&lags, 0.5),
        "send_lag_p99_ms": at(&lags, 0.99),
        "covered_per_s": covered_rate(&coverage, count),
    })
    .to_string())
}

/// Sleeps until shortly before `due`, then yields until it: a sleep alone wakes up tens
/// of microseconds late (timer slack, scheduling), which would count as engine latency
/// (at 100 events/s, p50 0.45-0.59 ms against 0.33 ms on the same engine, scores only).
fn wait_until(due: Instant) {
    const SPIN: Duration = Duration::from_micros(200);
    let now = Instant::now();
    if due > now + SPIN {
        std::thread::sleep(due - now - SPIN);
    }
    while Instant::now() < due {
        std::thread::yield_now();
    }
}

/// Events covered per second between the progress lines that first covered 10% and 90% of
/// `count`; `None` when one line covered both (too few lines to tell).
fn covered_rate(coverage: &[(Instant, usize)], count: usize) -> Option<f64> {
    let first_covering = |share: f64| {
        coverage
            .iter()
            .find(|(_, covered)| *covered as f64 >= share * count as f64)
    };
    let ((from, covered_from), (to, covered_to)) = (first_covering(0.1)?, first_covering(0.9)?);
    let seconds = to.saturating_duration_since(*from).as_secs_f64();
    (seconds > 0.0).then(|| (covered_to - covered_from) as f64 / seconds)
}

fn absorb(
    lines: &[&str],
    producer: TcpStream,
    progress: ProgressFeed,
    state: usize,
    batch: usize,
    batches: usize,
) -> Result<String, String> {
    let needed = state + batch * batches;
    if lines.len() < needed {
        return Err(format!(
            "needs {needed} events, the file has {}",
            lines.len()
        ));
    }
    let mut out = BufWriter::with_capacity(1 << 20, producer);
    let mut send = |part: &[&str]| -> Result<u64, String> {
        let mut last = 0;
        for line in part {
            last = last.max(ts_of(line));
            out.write_all(line.as_bytes())
                .and_then(|()| out.write_all(b"\n"))
                .map_err(|error| format!("sending: {error}"))?;
        }
        out.flush().map_err(|error| format!("sending: {error}"))?;
        Ok(last)
    };
    let covered = |last: u64| -> Result<Instant, String> {
        loop {
            let (bound, arrived) = progress
                .recv_timeout(Duration::from_secs(3600))
                .map_err(|_| "the engine stopped reporting progress")?;
            if bound > last {
                return Ok(arrived);
            }
        }
    };
    let began = Instant::now();
    let last = send(&lines[..state])?;
    covered(last)?;
    let state_s = began.elapsed().as_secs_f64();
    let mut times = Vec::new();
    for b in 0..batches {
        let from = state + b * batch;
        let sent = Instant::now();
        let last = send(&lines[from..from + batch])?;
        times.push((covered(last)? - sent).as_secs_f64() * 1e3);
    }
    times.sort_by(f64::total_cmp);
    Ok(serde_json::json!({
        "state_events": state,
        "state_s": state_s,
        "batch": batch,
        "absorb_ms_median": times[times.len() / 2],
        "absorb_ms": times,
    })
    .to_string())
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_millis() as u64)
}
