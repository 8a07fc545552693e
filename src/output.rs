//! The output side (DESIGN.md §5): consolidated changes per time, in `diff` or `upsert`
//! format, to stdout and to `--serve` subscribers, with progress lines in between.
//!
//! The output worker sends one [`OutputMessage`] per completed time; this thread renders it
//! once per format and view, writes it to stdout and offers the same shared chunks to every
//! subscriber of that view.

use crate::serve::{Chunk, SubscribeRequest, Subscriber};
use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use differential_dataflow::consolidation::consolidate;
use intentflow_dataflows::model::Millis;
use intentflow_dataflows::{ViewName, ViewRow};
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Format {
    /// `{"view","key","time","diff","value"}`: one line per insertion (+1) or retraction (-1).
    Diff,
    /// `{"view","key","time","value"}` or `{"view","key","time","deleted":true}`.
    Upsert,
}

/// What the output worker hands over.
#[derive(Debug)]
pub enum OutputMessage {
    /// The changes at one time; times arrive in increasing order. Sent as gathered;
    /// [`OutputReceiver`] hands them on consolidated and sorted (possibly none left).
    Changes { time: Millis, rows: Rows },
    /// No change below this time will follow; `None`: the input closed, output is final.
    Progress(Option<Millis>),
}

/// One time's row changes.
pub type Rows = Vec<(ViewRow, isize)>;

/// The engine's end of the output channel.
///
/// Rows are freed by the output thread once printed. Under glibc's malloc they went back
/// to the worker that allocated them, since freeing another thread's memory took that
/// thread's arena lock; with jemalloc (`lib.rs`) returning them made no measurable
/// difference (60k events, 4 alternating runs each).
#[derive(Clone)]
pub struct OutputSender {
    messages: Sender<OutputMessage>,
}

impl OutputSender {
    /// Hands a message over. A closed output (stdout gone, no subscribers) only means
    /// nobody listens, so the message is then dropped.
    pub fn send(&self, message: OutputMessage) {
        let _ = self.messages.send(message);
    }
}

/// The output thread's end of the channel.
pub struct OutputReceiver {
    messages: Receiver<OutputMessage>,
}

/// Consolidation happens here, on the output thread, because the worker that gathers
/// the rows is the engine's busiest thread and the output thread's is mostly idle.
impl OutputReceiver {
    pub fn recv_timeout(&self, timeout: Duration) -> Result<OutputMessage, RecvTimeoutError> {
        self.messages.recv_timeout(timeout).map(consolidated)
    }

    /// The next message; `None` once the engine is done.
    pub fn recv(&self) -> Option<OutputMessage> {
        self.messages.recv().ok().map(consolidated)
    }
}

/// The message with its changes consolidated: sorted, equal rows' diffs summed, zeros
/// dropped.
fn consolidated(message: OutputMessage) -> OutputMessage {
    match message {
        OutputMessage::Changes { time, mut rows } => {
            consolidate(&mut rows);
            OutputMessage::Changes { time, rows }
        }
        progress => progress,
    }
}

/// An output channel holding up to `capacity` messages in flight.
pub fn channel(capacity: usize) -> (OutputSender, OutputReceiver) {
    let (messages, received) = crossbeam_channel::bounded(capacity);
    (
        OutputSender { messages },
        OutputReceiver { messages: received },
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
    messages: OutputReceiver,
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
