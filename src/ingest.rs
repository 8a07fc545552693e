//! Input: reads lines from stdin, a file or TCP producers, parses and validates them,
//! stamps each event with its timely time, and hands batches to the input worker.
//!
//! Bad lines never stop ingestion (DESIGN.md §7): each gets one stderr line, a dead-letter
//! record and a count; `--strict` ends the input at the first one instead.

use crate::clock::EventClock;
use crate::lines::{LineBatch, LineSlot, read_lines};
use crate::parse::{parse_catalog_item, parse_event};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use intentflow_dataflows::model::{CatalogItem, Event, EventKind, ItemId, Millis};
use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

/// Where events come from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum InputSpec {
    Stdin,
    File(PathBuf),
    /// Listen on this address; any number of producers may connect and send lines.
    Tcp(String),
}

impl InputSpec {
    pub fn parse(text: &str) -> InputSpec {
        match text {
            "stdin" | "-" => InputSpec::Stdin,
            _ => match text.strip_prefix("tcp://") {
                Some(addr) => InputSpec::Tcp(addr.to_string()),
                None => InputSpec::File(PathBuf::from(text)),
            },
        }
    }

    /// Streaming inputs can go quiet; then the watermark catches up with the data.
    fn streams(&self) -> bool {
        !matches!(self, InputSpec::File(_))
    }
}

/// What the input worker receives.
#[derive(Debug)]
pub enum ToWorker {
    /// Events stamped with the timely time they are applied at.
    Events(Vec<(Event, Millis)>),
    /// Catalog entries, applied at the current input time.
    Catalog(Vec<CatalogItem>),
    /// The input frontier may advance to this time.
    Advance(Millis),
}

pub struct IngestOptions {
    pub input: InputSpec,
    pub catalog: Option<PathBuf>,
    pub tick_ms: Millis,
    pub lateness_ms: Millis,
    pub idle_ms: Millis,
    pub max_line_bytes: usize,
    pub strict: bool,
    pub dead_letter: Option<PathBuf>,
}

/// Counts for the end-of-run summary.
#[derive(Debug, Default)]
pub struct IngestStats {
    pub lines: u64,
    pub events: u64,
    pub bad_lines: u64,
    pub late_events: u64,
    pub unknown_types: u64,
    pub unknown_items: u64,
    pub catalog_items: u64,
    /// The first bad line's message when `--strict` stopped the input.
    pub strict_failure: Option<String>,
}

/// The input worker's end of the hand-off: a channel plus a way to wake it.
pub struct WorkerLink {
    sender: Option<Sender<ToWorker>>,
    worker: Arc<OnceLock<Thread>>,
    /// The watermark of the last advance the worker was woken for.
    woken_at: Option<Millis>,
    /// Events sent since the worker was last woken.
    unannounced: usize,
}

/// Events that may wait in the channel, the worker asleep, before it is woken for them.
/// The engine's input session sends on every 1,024 events; below that the worker can do
/// nothing with events before their time may close (see [`WorkerLink::send`]).
const QUIET_EVENTS: usize = 1024;

impl WorkerLink {
    pub fn new(sender: Sender<ToWorker>, worker: Arc<OnceLock<Thread>>) -> Self {
        WorkerLink {
            sender: Some(sender),
            worker,
            woken_at: None,
            unannounced: 0,
        }
    }

    /// Hands `message` to the worker; false once the worker is gone.
    ///
    /// The worker is woken only when the message lets it do something: an advance of the
    /// watermark (a time may close), the catalog, or `QUIET_EVENTS` events. A TCP source's
    /// batches are a few lines each, and waking the worker for each one (a futex call and
    /// a context switch, on both sides) only to hold the events until their tick closes
    /// cost the engine thousands of context switches a second at 100k events/s.
    fn send(&mut self, message: ToWorker) -> bool {
        let Some(sender) = self.sender.as_ref() else {
            return false;
        };
        let wake = match &message {
            ToWorker::Events(events) => {
                self.unannounced += events.len();
                self.unannounced >= QUIET_EVENTS
            }
            ToWorker::Advance(watermark) => self.woken_at.is_none_or(|at| *watermark > at),
            ToWorker::Catalog(_) => true,
        };
        if let ToWorker::Advance(watermark) = &message
            && wake
        {
            self.woken_at = Some(*watermark);
        }
        let sent = match sender.try_send(message) {
            Ok(()) => true,
            // A full channel: the worker may be asleep with work waiting.
            Err(TrySendError::Full(message)) => {
                unpark(&self.worker);
                sender.send(message).is_ok()
            }
            Err(TrySendError::Disconnected(_)) => false,
        };
        if wake {
            self.unannounced = 0;
            unpark(&self.worker);
        }
        sent
    }
}

fn unpark(worker: &OnceLock<Thread>) {
    if let Some(worker) = worker.get() {
        worker.unpark();
    }
}

impl Drop for WorkerLink {
    fn drop(&mut self) {
        // Close the channel first, then wake the worker, so that it cannot look, find the
        // channel still open, and park again for good.
        drop(self.sender.take());
        unpark(&self.worker);
    }
}

/// A batch of lines and the name of the input it came from (for messages).
type SourcedBatch = (Arc<str>, LineBatch);

/// Starts the reader threads for `input` and returns the channel their batches arrive on.
fn spawn_readers(
    input: &InputSpec,
    max_line_bytes: usize,
    stop: Arc<AtomicBool>,
) -> Result<Receiver<SourcedBatch>, String> {
    let (sender, batches) = crossbeam_channel::bounded::<SourcedBatch>(16);
    let read_all = move |reader: Box<dyn Read + Send>,
                         origin: Arc<str>,
                         sender: Sender<SourcedBatch>,
                         stop: Arc<AtomicBool>| {
        let result = read_lines(
            BufReader::with_capacity(1 << 16, reader),
            max_line_bytes,
            |batch| {
                !stop.load(Ordering::Relaxed) && sender.send((Arc::clone(&origin), batch)).is_ok()
            },
        );
        match result {
            Err(error) => eprintln!(
                "intentflow: reading {}: {error}",
                if origin.is_empty() { "input" } else { &origin }
            ),
            // Producers come and go; say so, so operators (and tests) can see it.
            Ok(lines) if !origin.is_empty() => {
                eprintln!("intentflow: producer {origin} disconnected after {lines} lines")
            }
            Ok(_) => {}
        }
    };
    match input {
        InputSpec::Stdin => {
            std::thread::spawn(move || {
                read_all(Box::new(std::io::stdin()), Arc::from(""), sender, stop)
            });
        }
        InputSpec::File(path) => {
            let file = File::open(path)
                .map_err(|error| format!("cannot open input {}: {error}", path.display()))?;
            std::thread::spawn(move || read_all(Box::new(file), Arc::from(""), sender, stop));
        }
        InputSpec::Tcp(addr) => {
            let listener = TcpListener::bind(addr)
                .map_err(|error| format!("--input tcp://{addr}: {error}"))?;
            eprintln!(
                "intentflow: accepting events on tcp://{}",
                listener.local_addr().map_err(|e| e.to_string())?
            );
            std::thread::spawn(move || {
                for stream in listener.incoming().flatten() {
                    let origin: Arc<str> = Arc::from(
                        stream
                            .peer_addr()
                            .map(|a| a.to_string())
                            .unwrap_or_default(),
                    );
                    let (sender, stop) = (sender.clone(), Arc::clone(&stop));
                    std::thread::spawn(move || read_all(Box::new(stream), origin, sender, stop));
                }
            });
        }
    }
    Ok(batches)
}

/// Reports bad lines: stderr, dead-letter file, count.
struct BadLines {
    dead_letter: Option<BufWriter<File>>,
    count: u64,
}

impl BadLines {
    fn open(path: Option<&Path>) -> Result<Self, String> {
        let dead_letter = path
            .map(|path| {
                File::create(path).map(BufWriter::new).map_err(|error| {
                    format!("cannot create dead-letter file {}: {error}", path.display())
                })
            })
            .transpose()?;
        Ok(BadLines {
            dead_letter,
            count: 0,
        })
    }

    /// Records one bad line and returns its message.
    fn report(&mut self, source: &str, number: u64, reason: &str, raw: Option<&[u8]>) -> String {
        self.count += 1;
        let place = if source.is_empty() {
            format!("line {number}")
        } else {
            format!("{source} line {number}")
        };
        let message = format!("{place}: {reason}");
        eprintln!("intentflow: {message}");
        if let Some(file) = &mut self.dead_letter {
            let record = serde_json::json!({
                "source": if source.is_empty() { "input" } else { source },
                "line": number,
                "error": reason,
                "raw": raw.map(String::from_utf8_lossy),
            });
            if let Err(error) = writeln!(file, "{record}") {
                eprintln!("intentflow: dead-letter file: {error}");
            }
        }
        message
    }

    fn finish(&mut self) {
        if let Some(file) = &mut self.dead_letter
            && let Err(error) = file.flush()
        {
            eprintln!("intentflow: dead-letter file: {error}");
        }
    }
}

/// Reads the catalog file; bad lines are reported like bad events.
fn load_catalog(path: &Path, bad: &mut BadLines) -> Result<Vec<CatalogItem>, String> {
    let file = File::open(path)
        .map_err(|error| format!("cannot open catalog {}: {error}", path.display()))?;
    let source: Arc<str> = Arc::from(format!("catalog {}", path.display()));
    let mut items = Vec::new();
    // An item's first line wins: a second category would silently split its affinity.
    let mut seen: HashSet<ItemId> = HashSet::new();
    read_lines(BufReader::new(file), 1 << 20, |batch| {
        for slot in &batch.slots {
            match slot {
                LineSlot::TooLong { number, bytes } => {
                    bad.report(
                        &source,
                        *number,
                        &format!("line of {bytes} bytes is too long"),
                        None,
                    );
                }
                LineSlot::Text { number, start, end } => {
                    let raw = batch.bytes(*start, *end);
                    if raw.iter().all(u8::is_ascii_whitespace) {
                        continue;
                    }
                    match std::str::from_utf8(raw)
                        .map_err(|e| format!("invalid UTF-8: {e}"))
                        .and_then(parse_catalog_item)
                        .and_then(|item| match seen.insert(item.item.clone()) {
                            true => Ok(item),
                            false => {
                                Err(format!("duplicate catalog item {:?}", item.item.as_str()))
                            }
                        }) {
                        Ok(item) => items.push(item),
                        Err(reason) => {
                            bad.report(&source, *number, &reason, Some(raw));
                        }
                    }
                }
            }
        }
        true
    })
    .map_err(|error| format!("reading catalog {}: {error}", path.display()))?;
    Ok(items)
}

/// Ingestion state: the clock, the counts and the bad-line reporter.
struct Ingest<'a> {
    clock: EventClock,
    stats: IngestStats,
    bad: BadLines,
    known_items: HashSet<ItemId>,
    options: &'a IngestOptions,
}

impl Ingest<'_> {
    /// Parses, stamps and forwards one batch's events; false when ingestion must end (the
    /// worker is gone, or `--strict` met a bad line). The caller advances the watermark.
    fn absorb(&mut self, source: &str, batch: &LineBatch, link: &mut WorkerLink) -> bool {
        let mut events = Vec::with_capacity(batch.slots.len());
        for slot in &batch.slots {
            let (number, parsed) = match slot {
                LineSlot::TooLong { number, bytes } => {
                    let limit = self.options.max_line_bytes;
                    let reason = format!("line of {bytes} bytes exceeds --max-line-bytes {limit}");
                    (*number, Err((reason, None)))
                }
                LineSlot::Text { number, start, end } => {
                    let raw = batch.bytes(*start, *end);
                    if raw.iter().all(u8::is_ascii_whitespace) {
                        continue; // blank lines are not records
                    }
                    let parsed = std::str::from_utf8(raw)
                        .map_err(|error| format!("invalid UTF-8: {error}"))
                        .and_then(parse_event)
                        .map_err(|reason| (reason, Some(raw)));
                    (*number, parsed)
                }
            };
            self.stats.lines += 1;
            match parsed {
                Ok(event) => {
                    self.stats.events += 1;
                    self.stats.unknown_types += u64::from(event.kind == EventKind::Other);
                    let uncatalogued = self.options.catalog.is_some()
                        && event
                            .item
                            .as_ref()
                            .is_some_and(|item| !self.known_items.contains(item));
                    self.stats.unknown_items += u64::from(uncatalogued);
                    let stamp = self.clock.stamp(event.ts);
                    self.stats.late_events += u64::from(stamp.late);
                    events.push((event, stamp.time));
                }
                Err((reason, raw)) => {
                    let message = self.bad.report(source, number, &reason, raw);
                    if self.options.strict {
                        self.stats.strict_failure = Some(message);
                        link.send(ToWorker::Events(events));
                        return false;
                    }
                }
            }
        }
        events.is_empty() || link.send(ToWorker::Events(events))
    }

    /// Tells the worker how far the input is complete: one step of the dataflow per call.
    fn advance(&self, link: &mut WorkerLink) -> bool {
        link.send(ToWorker::Advance(self.clock.watermark()))
    }
}

/// Runs ingestion to the end of the input (or until `stop` is set); returns the counts.
pub fn run_ingest(
    options: IngestOptions,
    mut link: WorkerLink,
    stop: Arc<AtomicBool>,
) -> Result<IngestStats, String> {
    let mut stats = IngestStats::default();
    let mut bad = BadLines::open(options.dead_letter.as_deref())?;
    let mut known_items: HashSet<ItemId> = HashSet::new();
    if let Some(path) = &options.catalog {
        let items = load_catalog(path, &mut bad)?;
        stats.catalog_items = items.len() as u64;
        known_items.extend(items.iter().map(|item| item.item.clone()));
        link.send(ToWorker::Catalog(items));
    }
    let batches = spawn_readers(&options.input, options.max_line_bytes, Arc::clone(&stop))?;
    let mut ingest = Ingest {
        clock: EventClock::new(options.tick_ms, options.lateness_ms),
        stats,
        bad,
        known_items,
        options: &options,
    };
    let idle = Duration::from_millis(options.idle_ms.max(1));
    // How long to wait for input before looking at the idle watermark and the stop flag.
    // `--idle-ms 0` idles after every batch (below), so waking every millisecond to look
    // again would only take CPU from the workers.
    let poll = match options.idle_ms {
        0 => Duration::from_millis(100),
        _ => idle.min(Duration::from_millis(100)),
    };
    let mut last_data = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let (source, batch) = match batches.recv_timeout(poll) {
            Ok(received) => received,
            Err(RecvTimeoutError::Timeout) => {
                if options.input.streams()
                    && last_data.elapsed() >= idle
                    && let Some(watermark) = ingest.clock.idle()
                {
                    link.send(ToWorker::Advance(watermark));
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        last_data = Instant::now();
        if !ingest.absorb(&source, &batch, &mut link) {
            break;
        }
        // `--idle-ms 0`: lowest latency. As soon as nothing more is buffered, everything
        // received is final; a straggler in the newest tick is late by one tick. One advance
        // either way, so the worker steps once per batch.
        if options.idle_ms == 0 && options.input.streams() && batches.is_empty() {
            ingest.clock.idle();
        }
        if !ingest.advance(&mut link) {
            break;
        }
    }
    // Asked to stop: what the readers already handed over is still applied.
    if ingest.stats.strict_failure.is_none() {
        for (source, batch) in batches.try_iter() {
            if !ingest.absorb(&source, &batch, &mut link) || !ingest.advance(&mut link) {
                break;
            }
        }
    }
    let Ingest {
        mut stats, mut bad, ..
    } = ingest;
    stop.store(true, Ordering::Relaxed);
    stats.bad_lines = bad.count;
    bad.finish();
    Ok(stats)
}
