//! The output side (DESIGN.md §5): consolidated changes per time, in `diff` or `upsert`
//! format, to stdout and to `--serve` subscribers, with progress lines in between.
//!
//! The output worker hands over row changes as they arrive, at whatever times they carry,
//! and a progress mark whenever its frontier moves; this thread gathers the changes by
//! time and, once a mark passes a time, renders it once per format and view, writes it to
//! stdout and offers the same shared chunks to every subscriber of that view.

use crate::serve::{Chunk, SubscribeRequest, Subscriber};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use differential_dataflow::consolidation::consolidate;
use intentflow_dataflows::model::Millis;
use intentflow_dataflows::{ViewName, ViewRow};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// `{"view","key","time","diff","value"}`: one line per insertion (+1) or retraction (-1).
    Diff,
    /// `{"view","key","time","value"}` or `{"view","key","time","deleted":true}`.
    Upsert,
}

/// What the output thread reads, a time at a time.
#[derive(Debug)]
pub enum OutputMessage {
    /// The changes at one time, consolidated and sorted, never none; times arrive in
    /// increasing order.
    Changes { time: Millis, rows: Rows },
    /// No change below this time will follow; `None`: the input closed, output is final.
    Progress(Option<Millis>),
}

/// One time's row changes.
pub type Rows = Vec<(ViewRow, isize)>;

/// Row changes at their times, in any order.
pub type TimedRows = Vec<(ViewRow, Millis, isize)>;

/// What the output worker sends.
#[derive(Debug)]
enum Handed {
    /// Changes at times at or after the last progress mark.
    Updates(TimedRows),
    /// No change below this time will follow.
    Progress(Millis),
    /// The input closed: every change below the horizon (if any) has been sent; changes
    /// at or after it are window expiries beyond the last event, never printed.
    End(Option<Millis>),
}

/// The engine's end of the output channel.
///
/// Rows are freed by the output thread once printed. Under glibc's malloc they went back
/// to the worker that allocated them, since freeing another thread's memory took that
/// thread's arena lock; with jemalloc (`lib.rs`) returning them made no measurable
/// difference (60k events, 4 alternating runs each).
#[derive(Clone)]
pub struct OutputSender {
    messages: Sender<Handed>,
}

impl OutputSender {
    /// Hands over changes at times the last progress mark has not passed. A closed output
    /// (stdout gone, no subscribers) only means nobody listens, so they are then dropped.
    pub fn send_updates(&self, updates: TimedRows) {
        let _ = self.messages.send(Handed::Updates(updates));
    }

    /// No change below `bound` will follow.
    pub fn send_progress(&self, bound: Millis) {
        let _ = self.messages.send(Handed::Progress(bound));
    }

    /// The last message: every change below `horizon` has been sent.
    pub fn send_end(&self, horizon: Option<Millis>) {
        let _ = self.messages.send(Handed::End(horizon));
    }
}

/// The output thread's end of the channel.
///
/// Changes are gathered by time and consolidated here, on the output thread, because the
/// worker that collects them is the engine's busiest thread and this one is mostly idle:
/// gathering them by time on the worker (a map lookup and a push per row) was 4% of a
/// one-worker replay's samples.
pub struct OutputReceiver {
    messages: Receiver<Handed>,
    /// Changes by time, for times no progress mark has passed yet.
    pending: BTreeMap<Millis, Rows>,
    /// Messages ready to read, in order: the times a mark passed, then the mark.
    ready: VecDeque<OutputMessage>,
    /// The last progress mark: no change below it may come.
    passed: Millis,
}

impl OutputReceiver {
    /// The next message, or a timeout if none is complete within `timeout`.
    pub fn recv_timeout(&mut self, timeout: Duration) -> Result<OutputMessage, RecvTimeoutError> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Ok(message);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RecvTimeoutError::Timeout);
            }
            let handed = self.messages.recv_timeout(left)?;
            self.take(handed);
        }
    }

    /// The next message; `None` once the engine is done.
    pub fn recv(&mut self) -> Option<OutputMessage> {
        loop {
            if let Some(message) = self.ready.pop_front() {
                return Some(message);
            }
            let handed = self.messages.recv().ok()?;
            self.take(handed);
        }
    }

    fn take(&mut self, handed: Handed) {
        match handed {
            Handed::Updates(updates) => {
                debug_assert!(
                    updates.iter().all(|(_, time, _)| *time >= self.passed),
                    "a change below the last progress mark ({})",
                    self.passed
                );
                for (row, time, diff) in updates {
                    self.pending.entry(time).or_default().push((row, diff));
                }
            }
            Handed::Progress(bound) => {
                self.release_below(Some(bound));
                self.passed = bound;
                self.ready.push_back(OutputMessage::Progress(Some(bound)));
            }
            Handed::End(horizon) => {
                self.release_below(horizon);
                self.pending.clear();
                self.ready.push_back(OutputMessage::Progress(None));
            }
        }
    }

    /// Readies every waiting time below `bound` (all of them for `None`), consolidated; a
    /// time whose changes cancel out is not handed on.
    fn release_below(&mut self, bound: Option<Millis>) {
        while let Some(entry) = self.pending.first_entry() {
            if bound.is_some_and(|bound| *entry.key() >= bound) {
                break;
            }
            let (time, mut rows) = entry.remove_entry();
            consolidate(&mut rows);
            if !rows.is_empty() {
                self.ready.push_back(OutputMessage::Changes { time, rows });
            }
        }
    }
}

/// An output channel holding up to `capacity` messages in flight.
pub fn channel(capacity: usize) -> (OutputSender, OutputReceiver) {
    let (messages, received) = crossbeam_channel::bounded(capacity);
    (
        OutputSender { messages },
        OutputReceiver {
            messages: received,
            pending: BTreeMap::new(),
            ready: VecDeque::new(),
            passed: 0,
        },
    )
}

/// Counts for the end-of-run summary.
#[derive(Debug, Default)]
pub struct OutputStats {
    pub changes: BTreeMap<ViewName, u64>,
    /// Rows in each view's final state (the net sum of diffs).
    pub live_rows: BTreeMap<ViewName, i64>,
    pub progress_lines: u64,
}

pub struct OutputOptions {
    pub format: Format,
    /// Where change and progress lines go; `None` with `--no-stdout`.
    pub stdout: Option<Box<dyn Write + Send>>,
}

/// The stream the protocol is written to: standard output, kept for our lines alone.
///
/// Timely's cluster set-up prints connection chatter with `println!`, which would corrupt
/// the JSON lines. In cluster mode the protocol therefore gets its own duplicate of
/// stdout, and file descriptor 1 is pointed at stderr for everybody else.
pub fn protocol_stdout(cluster: bool) -> std::io::Result<Box<dyn Write + Send>> {
    if !cluster {
        return Ok(Box::new(std::io::stdout()));
    }
    use std::os::fd::FromRawFd;
    // SAFETY: dup/dup2 on the process's own standard descriptors; the duplicate is owned
    // by the returned File alone.
    unsafe {
        let protocol = libc::dup(1);
        if protocol < 0 || libc::dup2(2, 1) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(Box::new(std::fs::File::from_raw_fd(protocol)))
    }
}

/// Renders one view's changes at one time.
fn render(
    format: Format,
    view: ViewName,
    time: Millis,
    rows: &[(ViewRow, isize)],
    out: &mut String,
) {
    // Pieces pushed one by one: this runs for every change the engine prints, and
    // `write!`'s format machinery costs more than the copying.
    let mut numbers = itoa::Buffer::new();
    let mut head = |out: &mut String, key: &str| {
        out.push_str(r#"{"view":""#);
        out.push_str(view.as_str());
        out.push_str(r#"","key":"#);
        out.push_str(key);
        out.push_str(r#","time":"#);
        out.push_str(numbers.format(time));
    };
    match format {
        Format::Diff => {
            // Retractions before insertions of the same key reads naturally; `rows` is
            // sorted by (key, value), so emit the key's negatives first.
            let mut diffs = itoa::Buffer::new();
            for (row, diff) in rows {
                debug_assert_eq!(row.view, view);
                head(out, row.key());
                out.push_str(r#","diff":"#);
                out.push_str(diffs.format(*diff));
                out.push_str(r#","value":"#);
                out.push_str(row.value());
                out.push_str("}\n");
            }
        }
        Format::Upsert => {
            for group in rows.chunk_by(|(a, _), (b, _)| a.key() == b.key()) {
                head(out, group[0].0.key());
                match group.iter().find(|(_, diff)| *diff > 0) {
                    Some((row, _)) => {
                        out.push_str(r#","value":"#);
                        out.push_str(row.value());
                        out.push_str("}\n");
                    }
                    None => out.push_str(",\"deleted\":true}\n"),
                }
            }
        }
    }
}

/// Orders a key's retractions before its insertions. The rows come consolidated, i.e.
/// sorted by (view, key, value), so a stable sort of each key's few rows by sign gives
/// (view, key, sign, value) without sorting every row again.
fn retractions_first(rows: &mut [(ViewRow, isize)]) {
    debug_assert!(rows.is_sorted_by(|(a, _), (b, _)| a <= b));
    for group in rows.chunk_by_mut(|(a, _), (b, _)| a.view == b.view && a.key() == b.key()) {
        if group.len() > 1 {
            group.sort_by_key(|(_, diff)| *diff > 0);
        }
    }
}

fn progress_line(progress: Option<Millis>) -> String {
    match progress {
        Some(time) => format!("{{\"progress\":{time}}}\n"),
        None => "{\"progress\":null}\n".to_string(),
    }
}

/// The current contents of every view, kept only when there are subscribers to snapshot.
#[derive(Default)]
struct Snapshot {
    views: BTreeMap<ViewName, RowCounts>,
}

/// A view's rows with their counts. Every change of every view passes through here, so
/// the rows are hashed with foldhash rather than the default SipHash (a fifth of the
/// output thread's time at 50k events/s); the keys are our own rows, not a peer's input.
type RowCounts = HashMap<ViewRow, isize, foldhash::fast::RandomState>;

impl Snapshot {
    /// Applies a time's changes, taking the rows (they are printed by then): a new row is
    /// moved in, not copied.
    fn apply(&mut self, rows: Vec<(ViewRow, isize)>) {
        for (row, diff) in rows {
            let view = self.views.entry(row.view).or_default();
            match view.entry(row) {
                Entry::Occupied(mut entry) => {
                    *entry.get_mut() += diff;
                    if *entry.get() == 0 {
                        entry.remove();
                    }
                }
                Entry::Vacant(entry) => {
                    entry.insert(diff);
                }
            }
        }
    }

    fn render(&self, request: &SubscribeRequest, time: Millis) -> String {
        let mut out = String::new();
        for view in &request.views {
            let mut rows: Vec<(ViewRow, isize)> = self
                .views
                .get(view)
                .into_iter()
                .flatten()
                .map(|(row, count)| (row.clone(), *count))
                .collect();
            rows.sort();
            render(request.format, *view, time, &rows, &mut out);
        }
        out
    }
}

/// Runs the output loop until the final progress message; returns the counts.
pub fn run_output(
    mut messages: OutputReceiver,
    subscriptions: Option<Receiver<SubscribeRequest>>,
    options: OutputOptions,
) -> OutputStats {
    let mut stats = OutputStats::default();
    let mut to_stdout = options.stdout.is_some();
    // Not `stdout().lock()`: holding the lock for the whole run would block every other
    // thread's print.
    let mut stdout = std::io::BufWriter::with_capacity(
        1 << 16,
        options.stdout.unwrap_or_else(|| Box::new(std::io::sink())),
    );
    let mut subscribers: Vec<Subscriber> = Vec::new();
    let mut pending: Vec<SubscribeRequest> = Vec::new();
    let mut snapshot = subscriptions.as_ref().map(|_| Snapshot::default());
    let mut last_progress: Millis = 0;

    let mut write_stdout = |text: &str, flush: bool, to_stdout: &mut bool| {
        if !*to_stdout {
            return;
        }
        let result = stdout
            .write_all(text.as_bytes())
            .and_then(|()| if flush { stdout.flush() } else { Ok(()) });
        if let Err(error) = result {
            eprintln!("intentflow: stdout: {error}; no further output is written there");
            *to_stdout = false;
        }
    };

    loop {
        let message = match messages.recv_timeout(Duration::from_millis(50)) {
            Ok(message) => Some(message),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => break,
        };
        if let Some(requests) = &subscriptions {
            pending.extend(requests.try_iter());
        }
        let between_times = !matches!(message, Some(OutputMessage::Changes { .. }));
        match message {
            None => {}
            Some(OutputMessage::Changes { time, mut rows }) => {
                retractions_first(&mut rows);
                for group in rows.chunk_by(|(a, _), (b, _)| a.view == b.view) {
                    let view = group[0].0.view;
                    *stats.changes.entry(view).or_default() += group.len() as u64;
                    *stats.live_rows.entry(view).or_default() +=
                        group.iter().map(|(_, diff)| *diff as i64).sum::<i64>();
                    let mut rendered: HashMap<Format, Chunk> = HashMap::new();
                    let mut chunk = |format: Format| -> Chunk {
                        rendered
                            .entry(format)
                            .or_insert_with(|| {
                                // Rows are ~150 bytes: one allocation, not a dozen regrowths.
                                let mut text = String::with_capacity(192 * group.len());
                                render(format, view, time, group, &mut text);
                                Arc::from(text)
                            })
                            .clone()
                    };
                    if to_stdout {
                        write_stdout(&chunk(options.format), false, &mut to_stdout);
                    }
                    subscribers.retain(|subscriber| {
                        !subscriber.wants(view) || subscriber.offer(&chunk(subscriber.format))
                    });
                }
                if let Some(snapshot) = &mut snapshot {
                    snapshot.apply(rows);
                }
            }
            Some(OutputMessage::Progress(progress)) => {
                stats.progress_lines += 1;
                if progress.is_none() {
                    // Late subscribers still get the final state before the end.
                    start_subscriptions(
                        &mut pending,
                        &mut subscribers,
                        snapshot.as_ref(),
                        last_progress,
                    );
                }
                let line: Chunk = Arc::from(progress_line(progress));
                write_stdout(&line, true, &mut to_stdout);
                subscribers.retain(|subscriber| subscriber.offer(&line));
                match progress {
                    Some(time) => last_progress = time,
                    None => break,
                }
            }
        }
        // New subscribers join between times, when the state is exactly "all times below
        // the last progress".
        if between_times {
            start_subscriptions(
                &mut pending,
                &mut subscribers,
                snapshot.as_ref(),
                last_progress,
            );
        }
    }
    write_stdout("", true, &mut to_stdout);
    stats
}

fn start_subscriptions(
    pending: &mut Vec<SubscribeRequest>,
    subscribers: &mut Vec<Subscriber>,
    snapshot: Option<&Snapshot>,
    time: Millis,
) {
    for request in pending.drain(..) {
        if request.snapshot {
            if let Some(snapshot) = snapshot {
                let text = snapshot.render(&request, time);
                if !text.is_empty() {
                    let subscriber = Subscriber::new(request);
                    if subscriber.offer(&Arc::from(text)) {
                        subscribers.push(subscriber);
                    }
                    continue;
                }
            }
        }
        subscribers.push(Subscriber::new(request));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(key: &str, value: &str) -> ViewRow {
        ViewRow::from_parts(ViewName::Scores, key, value)
    }

    /// What the receiver hands on: (time, rows) or the progress bound.
    fn read_all(receiver: &mut OutputReceiver) -> Vec<Result<(Millis, Rows), Option<Millis>>> {
        let mut read = Vec::new();
        while let Ok(message) = receiver.recv_timeout(Duration::from_millis(10)) {
            read.push(match message {
                OutputMessage::Changes { time, rows } => Ok((time, rows)),
                OutputMessage::Progress(bound) => Err(bound),
            });
        }
        read
    }

    #[test]
    fn receiver_hands_on_each_passed_time_consolidated_then_the_mark() {
        let (sender, mut receiver) = channel(16);
        let (a, b) = (row("1", "{}"), row("2", "{}"));
        sender.send_updates(vec![
            (b.clone(), 7, 1),
            (a.clone(), 5, 1),
            (a.clone(), 7, 1),
        ]);
        sender.send_updates(vec![
            (a.clone(), 5, -1),
            (b.clone(), 9, 1),
            (a.clone(), 7, 1),
        ]);
        // Nothing is complete before a mark.
        assert!(read_all(&mut receiver).is_empty());
        sender.send_progress(9);
        // Time 5 cancelled out, so it is not handed on; 9 waits for a later mark.
        assert_eq!(
            read_all(&mut receiver),
            vec![Ok((7, vec![(a.clone(), 2), (b.clone(), 1)])), Err(Some(9))]
        );
        // The end prints what lies below the horizon and drops the rest (expiries).
        sender.send_updates(vec![(a, 12, 1)]);
        sender.send_end(Some(10));
        assert_eq!(
            read_all(&mut receiver),
            vec![Ok((9, vec![(b, 1)])), Err(None)]
        );
    }

    #[test]
    fn upsert_keeps_new_value_or_deletes() {
        let mut rows = vec![
            (row(r#"{"k":1}"#, r#"{"v":1}"#), -1),
            (row(r#"{"k":1}"#, r#"{"v":2}"#), 1),
            (row(r#"{"k":2}"#, r#"{"v":5}"#), -1),
        ];
        retractions_first(&mut rows);
        let mut out = String::new();
        render(Format::Upsert, ViewName::Scores, 7, &rows, &mut out);
        assert_eq!(
            out,
            "{\"view\":\"scores\",\"key\":{\"k\":1},\"time\":7,\"value\":{\"v\":2}}\n\
             {\"view\":\"scores\",\"key\":{\"k\":2},\"time\":7,\"deleted\":true}\n"
        );
    }

    #[test]
    fn diff_lines_put_retractions_first() {
        let mut rows = vec![(row("1", r#"{"v":1}"#), 1), (row("1", r#"{"v":2}"#), -1)];
        retractions_first(&mut rows);
        let mut out = String::new();
        render(Format::Diff, ViewName::Scores, 3, &rows, &mut out);
        assert_eq!(
            out,
            "{\"view\":\"scores\",\"key\":1,\"time\":3,\"diff\":-1,\"value\":{\"v\":2}}\n\
             {\"view\":\"scores\",\"key\":1,\"time\":3,\"diff\":1,\"value\":{\"v\":1}}\n"
        );
    }
}
