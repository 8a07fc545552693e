//! Test support for end-to-end tests of the `intentflow` binary.
//!
//! - run the binary with arguments (and optionally stdin), with a time limit;
//! - read its stdout as the output protocol of DESIGN.md §5 (change, upsert and progress
//!   lines; anything else is an error that names the line);
//! - fold changes into view state `(view, key) -> (value, multiplicity)`, at every progress
//!   line or at every change time, checking the protocol's promises on the way;
//! - compare two states field by field with a numeric tolerance and describe the difference
//!   in a few lines;
//! - temporary input files and `intentflow generate` data.
//!
//! Nothing here knows the engine's source: only its command line and its output.
#![allow(dead_code)]

use serde_json::Value;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// The binary under test, built by cargo for integration tests.
pub const BIN: &str = env!("CARGO_BIN_EXE_intentflow");

/// Absolute tolerance for comparing non-integer numbers. Scores are fixed-point thousandths
/// and shares (`active_share`, `bounce_rate`) are rounded to ten-thousandths, so a value
/// one unit off differs by at least 1e-4; scroll is kept in ten-thousandths inside the
/// engine (inputs with more decimals may be off by less than 5e-5). What is left is float
/// noise from printing.
pub const TOLERANCE: f64 = 5e-5;

/// A path inside the repository (e.g. `examples/events.jsonl`).
pub fn repo_path(relative: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

// ---------------------------------------------------------------------------------------
// Running the binary
// ---------------------------------------------------------------------------------------

/// One finished run of the binary.
pub struct Run {
    /// The command line, for messages.
    pub command: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
    pub elapsed: Duration,
}

/// Time limit of one run; `INTENTFLOW_TEST_TIMEOUT_SECS` overrides the default of 120 s.
fn run_time_limit() -> Duration {
    let secs = std::env::var("INTENTFLOW_TEST_TIMEOUT_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(120);
    Duration::from_secs(secs)
}

/// Runs `intentflow ARGS...` with stdin closed.
pub fn intentflow(args: &[&str]) -> Run {
    intentflow_with_stdin(args, None)
}

/// Runs `intentflow ARGS...`, feeding `stdin` (then closing it) if given. Kills the child
/// and panics if it outlives the time limit.
pub fn intentflow_with_stdin(args: &[&str], stdin: Option<&[u8]>) -> Run {
    let command = format!("intentflow {}", args.join(" "));
    let started = Instant::now();
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot start `{command}` ({BIN}): {e}"));

    let feeder = stdin.map(|bytes| {
        let mut pipe = child.stdin.take().unwrap();
        let bytes = bytes.to_vec();
        // A broken pipe is the engine's business (it may exit early on purpose).
        std::thread::spawn(move || drop(pipe.write_all(&bytes)))
    });
    let stdout = read_in_background(child.stdout.take().unwrap());
    let stderr = read_in_background(child.stderr.take().unwrap());

    let limit = run_time_limit();
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for intentflow") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
            panic!(
                "`{command}` did not finish within {limit:?}; killed it. stderr (tail):\n{}",
                tail(&stderr, 20)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    if let Some(feeder) = feeder {
        feeder.join().unwrap();
    }
    let stdout = String::from_utf8(stdout.join().unwrap())
        .unwrap_or_else(|e| panic!("`{command}` wrote invalid UTF-8 to stdout: {e}"));
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap()).into_owned();
    Run {
        command,
        status,
        stdout,
        stderr,
        elapsed: started.elapsed(),
    }
}

fn read_in_background<R: Read + Send + 'static>(mut pipe: R) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        pipe.read_to_end(&mut buf).expect("reading child output");
        buf
    })
}

/// `intentflow run --input FILE FLAGS...`, which must exit successfully.
pub fn run_engine(input: &Path, flags: &[&str]) -> Run {
    let input = input.to_str().expect("UTF-8 temp path");
    let mut args = vec!["run", "--input", input];
    args.extend_from_slice(flags);
    intentflow(&args).success()
}

impl Run {
    /// Panics (showing the command and the end of stderr) unless the exit status is 0.
    pub fn success(self) -> Run {
        assert!(
            self.status.success(),
            "`{}` failed with {}; stderr (tail):\n{}",
            self.command,
            self.status,
            tail(&self.stderr, 30)
        );
        self
    }

    /// Parses stdout as the output protocol; panics on a line that is not part of it.
    pub fn output(&self) -> Output {
        Output::parse(&self.stdout)
            .unwrap_or_else(|e| panic!("`{}` printed a bad line: {e}", self.command))
    }
}

/// The last `n` lines of `text`.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

// ---------------------------------------------------------------------------------------
// Input files and generated data
// ---------------------------------------------------------------------------------------

/// A temporary file holding `contents`; deleted when dropped.
pub fn temp_file(suffix: &str, contents: &str) -> tempfile::NamedTempFile {
    let mut file = tempfile::Builder::new()
        .prefix("intentflow-test-")
        .suffix(suffix)
        .tempfile()
        .expect("creating a temporary file");
    file.write_all(contents.as_bytes())
        .expect("writing a temporary file");
    file.flush().unwrap();
    file
}

/// A temporary `.jsonl` file with one line per element.
pub fn temp_jsonl<S: AsRef<str>>(lines: &[S]) -> tempfile::NamedTempFile {
    let mut text = String::new();
    for line in lines {
        text.push_str(line.as_ref());
        text.push('\n');
    }
    temp_file(".jsonl", &text)
}

/// Output of `intentflow generate --users U --items I --events E --seed S` (JSON lines),
/// generated once per test process for each argument set.
pub fn generate(users: u32, items: u32, events: u32, seed: u64) -> Arc<String> {
    type GenerateArgs = (u32, u32, u32, u64);
    static CACHE: OnceLock<Mutex<HashMap<GenerateArgs, Arc<String>>>> = OnceLock::new();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry((users, items, events, seed))
        .or_insert_with(|| {
            let (u, i, e, s) = (
                users.to_string(),
                items.to_string(),
                events.to_string(),
                seed.to_string(),
            );
            let args = [
                "generate", "--users", &u, "--items", &i, "--events", &e, "--seed", &s,
            ];
            let run = intentflow(&args).success();
            assert!(
                !run.stdout.trim().is_empty(),
                "`{}` printed nothing",
                run.command
            );
            Arc::new(run.stdout)
        })
        .clone()
}

/// `intentflow generate ARGS... --catalog-out FILE`: (events, catalog), generated once per
/// test process for each argument list.
pub fn generate_with_catalog(args: &[&str]) -> Arc<(String, String)> {
    type Generated = Arc<(String, String)>;
    static CACHE: OnceLock<Mutex<HashMap<Vec<String>, Generated>>> = OnceLock::new();
    let key: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    let mut cache = CACHE
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    cache
        .entry(key)
        .or_insert_with(|| {
            let catalog_file = temp_file(".jsonl", "");
            let mut full = vec!["generate"];
            full.extend_from_slice(args);
            full.extend(["--catalog-out", catalog_file.path().to_str().unwrap()]);
            let run = intentflow(&full).success();
            assert!(
                !run.stdout.trim().is_empty(),
                "`{}` printed nothing",
                run.command
            );
            let catalog = std::fs::read_to_string(catalog_file.path())
                .unwrap_or_else(|e| panic!("`{}`: reading the catalog: {e}", run.command));
            assert!(
                !catalog.trim().is_empty(),
                "`{}` wrote an empty catalog",
                run.command
            );
            Arc::new((run.stdout, catalog))
        })
        .clone()
}

// ---------------------------------------------------------------------------------------
// Output protocol (DESIGN.md §5)
// ---------------------------------------------------------------------------------------

/// A JSON value in canonical text (object fields sorted, no spaces), usable as a map key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JsonKey(String);

impl JsonKey {
    pub fn new(value: &Value) -> JsonKey {
        // serde_json keeps object fields sorted unless its `preserve_order` feature is on.
        static SORTED: OnceLock<bool> = OnceLock::new();
        let sorted = *SORTED.get_or_init(|| {
            let probe: Value = serde_json::from_str(r#"{"b":1,"a":2}"#).unwrap();
            serde_json::to_string(&probe).unwrap() == r#"{"a":2,"b":1}"#
        });
        if sorted {
            return JsonKey(serde_json::to_string(value).unwrap());
        }
        let mut text = String::new();
        write_canonical(value, &mut text);
        JsonKey(text)
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    pub fn value(&self) -> Value {
        serde_json::from_str(&self.0).unwrap()
    }
    /// The string field `name` of the key, if it has one (e.g. `user`).
    pub fn field(&self, name: &str) -> Option<String> {
        self.value()
            .get(name)
            .and_then(Value::as_str)
            .map(str::to_owned)
    }
}

impl fmt::Display for JsonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for JsonKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut fields: Vec<(&String, &Value)> = map.iter().collect();
            fields.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (name, v)) in fields.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(name).unwrap());
                out.push(':');
                write_canonical(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&serde_json::to_string(other).unwrap()),
    }
}

/// `{"view","key","time","diff","value"}`
#[derive(Clone, Debug, PartialEq)]
pub struct Change {
    pub view: String,
    pub key: Value,
    pub time: u64,
    pub diff: i64,
    pub value: Value,
}

/// `{"view","key","time","value"}` or `{"view","key","time","deleted":true}` (`--format upsert`).
#[derive(Clone, Debug, PartialEq)]
pub struct Upsert {
    pub view: String,
    pub key: Value,
    pub time: u64,
    /// `None` for a deletion.
    pub value: Option<Value>,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Line {
    Change(Change),
    Upsert(Upsert),
    /// `{"progress":T}`; `None` for the final `{"progress":null}`.
    Progress(Option<u64>),
}

impl Line {
    fn time(&self) -> Option<u64> {
        match self {
            Line::Change(c) => Some(c.time),
            Line::Upsert(u) => Some(u.time),
            Line::Progress(_) => None,
        }
    }
    fn view_key(&self) -> Option<(&str, &Value)> {
        match self {
            Line::Change(c) => Some((&c.view, &c.key)),
            Line::Upsert(u) => Some((&u.view, &u.key)),
            Line::Progress(_) => None,
        }
    }
}

/// Parses one stdout line of the output protocol.
pub fn parse_line(text: &str) -> Result<Line, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON ({e})"))?;
    let Value::Object(obj) = value else {
        return Err("not a JSON object".into());
    };
    if obj.contains_key("progress") {
        if obj.len() != 1 {
            return Err("a progress line has fields besides \"progress\"".into());
        }
        return match &obj["progress"] {
            Value::Null => Ok(Line::Progress(None)),
            p => p.as_u64().map(|p| Line::Progress(Some(p))).ok_or_else(|| {
                "\"progress\" is neither a non-negative integer nor null".to_string()
            }),
        };
    }
    let view = match obj.get("view") {
        Some(Value::String(v)) if !v.is_empty() => v.clone(),
        Some(_) => return Err("\"view\" is not a non-empty string".into()),
        None => return Err("neither a change line (no \"view\") nor a progress line".into()),
    };
    let key = match obj.get("key") {
        Some(k @ Value::Object(_)) => k.clone(),
        _ => return Err("\"key\" is missing or not a JSON object".into()),
    };
    let time = obj
        .get("time")
        .and_then(Value::as_u64)
        .ok_or("\"time\" is missing or not a non-negative integer")?;
    let value = match obj.get("value") {
        Some(v @ Value::Object(_)) => Some(v.clone()),
        Some(_) => return Err("\"value\" is not a JSON object".into()),
        None => None,
    };
    if let Some(diff) = obj.get("diff") {
        let diff = diff
            .as_i64()
            .filter(|d| *d != 0)
            .ok_or("\"diff\" is not a non-zero integer")?;
        let value = value.ok_or("a change line without \"value\"")?;
        return Ok(Line::Change(Change {
            view,
            key,
            time,
            diff,
            value,
        }));
    }
    match (value, obj.get("deleted")) {
        (Some(value), None) => Ok(Line::Upsert(Upsert {
            view,
            key,
            time,
            value: Some(value),
        })),
        (None, Some(Value::Bool(true))) => Ok(Line::Upsert(Upsert {
            view,
            key,
            time,
            value: None,
        })),
        _ => Err(
            "neither a change (\"diff\"+\"value\") nor an upsert (\"value\" or \"deleted\":true)"
                .into(),
        ),
    }
}

/// All lines of one run's stdout, with their 1-based line numbers.
#[derive(Clone, Debug, Default)]
pub struct Output {
    pub lines: Vec<(usize, Line)>,
}

/// `(view, key)`: one row of one view.
pub type RowId = (String, JsonKey);

/// View state: each row's value and multiplicity (1 in a well-formed output).
pub type State = BTreeMap<RowId, (Value, i64)>;

/// Where the replay stops to look at the state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Checkpoint {
    /// After a progress line: changes with time < P (all changes for `None`).
    Progress(Option<u64>),
    /// After all changes with time <= t, inside the interval that ends at progress `until`.
    Time { time: u64, until: Option<u64> },
}

impl Checkpoint {
    /// The exclusive upper bound on (effective) time of what the state reflects; `None` = all.
    pub fn bound(&self) -> Option<u64> {
        match self {
            Checkpoint::Progress(p) => *p,
            Checkpoint::Time { time, .. } => Some(time + 1),
        }
    }
}

impl fmt::Display for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Checkpoint::Progress(Some(p)) => write!(
                f,
                "progress {p} (effective times < {p} applied, windows at {})",
                p.saturating_sub(1)
            ),
            Checkpoint::Progress(None) => write!(f, "the end (progress null, all events)"),
            Checkpoint::Time { time, until } => write!(
                f,
                "change time {time} (effective times <= {time} applied, windows at {time}; before progress {})",
                until.map_or("null".to_string(), |u| u.to_string())
            ),
        }
    }
}

/// How often a replay stops.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Granularity {
    /// At every progress line (what DESIGN.md §8 promises).
    Progress,
    /// Also after the last change of every distinct change time (changes stamped with
    /// the time their input has).
    EveryTime,
}

impl Output {
    /// Parses stdout; an error names the first line that is not part of the protocol.
    pub fn parse(stdout: &str) -> Result<Output, String> {
        let mut lines = Vec::new();
        for (i, text) in stdout.lines().enumerate() {
            let line = parse_line(text)
                .map_err(|e| format!("stdout line {}: {e}: {}", i + 1, shorten(text, 300)))?;
            lines.push((i + 1, line));
        }
        Ok(Output { lines })
    }

    /// Only the lines of the given views (and all progress lines).
    pub fn only_views(&self, views: &[&str]) -> Output {
        let lines = self
            .lines
            .iter()
            .filter(|(_, l)| l.view_key().is_none_or(|(v, _)| views.contains(&v)))
            .cloned()
            .collect();
        Output { lines }
    }

    pub fn progress_count(&self) -> usize {
        self.lines
            .iter()
            .filter(|(_, l)| matches!(l, Line::Progress(_)))
            .count()
    }

    pub fn change_count(&self) -> usize {
        self.lines.len() - self.progress_count()
    }

    /// Folds the lines in order, calling `at` with the state at every checkpoint and the
    /// rows changed since the previous checkpoint. Also checks the protocol: a change's
    /// time is not below an earlier progress line and is below the next one; progress does
    /// not go back; the last line, and only it, is `{"progress":null}`.
    pub fn replay(
        &self,
        granularity: Granularity,
        at: impl FnMut(Checkpoint, &StateFold, &BTreeSet<RowId>) -> Result<(), String>,
    ) -> Result<(), String> {
        self.replay_inner(granularity == Granularity::EveryTime, &BTreeSet::new(), at)
    }

    /// Like `replay` with `Granularity::EveryTime`, and also stops at each of `extra_times`
    /// (as `Checkpoint::Time`, with no rows touched when the engine printed nothing then):
    /// a reference can pass the times at which it expects changes, so that a change printed
    /// at a later time than its input is caught.
    pub fn replay_at_times(
        &self,
        extra_times: &BTreeSet<u64>,
        at: impl FnMut(Checkpoint, &StateFold, &BTreeSet<RowId>) -> Result<(), String>,
    ) -> Result<(), String> {
        self.replay_inner(true, extra_times, at)
    }

    fn replay_inner(
        &self,
        every_time: bool,
        extra_times: &BTreeSet<u64>,
        mut at: impl FnMut(Checkpoint, &StateFold, &BTreeSet<RowId>) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut fold = StateFold::default();
        let mut pending: Vec<(usize, &Line)> = Vec::new();
        let mut last_progress: Option<u64> = None;
        let mut closed = false;
        for (n, line) in &self.lines {
            if closed {
                return Err(format!("stdout line {n} comes after {{\"progress\":null}}"));
            }
            let Line::Progress(p) = line else {
                let time = line.time().unwrap();
                if let Some(lp) = last_progress.filter(|lp| time < *lp) {
                    return Err(format!(
                        "stdout line {n}: change at time {time} after progress {lp} promised none below it"
                    ));
                }
                pending.push((*n, line));
                continue;
            };
            if let (Some(lp), Some(p)) = (last_progress, *p)
                && p < lp
            {
                return Err(format!("stdout line {n}: progress {p} goes back from {lp}"));
            }
            if let Some(p) = *p
                && let Some((m, late)) = pending.iter().find(|(_, l)| l.time().unwrap() >= p)
            {
                return Err(format!(
                    "stdout line {m}: change at time {} is printed before progress {p} (line {n}), which covers only times below {p}",
                    late.time().unwrap()
                ));
            }
            if every_time {
                let from = last_progress.unwrap_or(0);
                let mut times: BTreeSet<u64> =
                    pending.iter().map(|(_, l)| l.time().unwrap()).collect();
                times.extend(
                    extra_times
                        .range(from..)
                        .take_while(|t| p.is_none_or(|p| **t < p)),
                );
                pending.sort_by_key(|(m, l)| (l.time().unwrap(), *m));
                let mut next = 0;
                for time in times {
                    let start = next;
                    while next < pending.len() && pending[next].1.time() == Some(time) {
                        next += 1;
                    }
                    let touched = fold.apply_all(pending[start..next].iter().map(|(_, l)| *l));
                    at(Checkpoint::Time { time, until: *p }, &fold, &touched)?;
                }
                pending.clear();
                at(Checkpoint::Progress(*p), &fold, &BTreeSet::new())?;
            } else {
                let touched = fold.apply_all(pending.drain(..).map(|(_, l)| l));
                at(Checkpoint::Progress(*p), &fold, &touched)?;
            }
            last_progress = *p;
            closed = p.is_none();
        }
        if !closed {
            return Err(format!(
                "stdout does not end with {{\"progress\":null}} ({} lines; did the engine stop early?)",
                self.lines.len()
            ));
        }
        Ok(())
    }

    /// The state after every progress line. Copies the whole state each time: for small outputs.
    pub fn states_at_progress(&self) -> Vec<(Option<u64>, State)> {
        let mut states = Vec::new();
        self.replay(Granularity::Progress, |cp, fold, _| {
            let Checkpoint::Progress(p) = cp else {
                unreachable!()
            };
            states.push((p, fold.snapshot()?));
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        states
    }

    /// The state at `{"progress":null}`.
    pub fn final_state(&self) -> State {
        let mut last = None;
        self.replay(Granularity::Progress, |cp, fold, _| {
            if cp == Checkpoint::Progress(None) {
                last = Some(fold.snapshot()?);
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
        last.unwrap()
    }

    /// Checks that changes within one (view, key, time) are consolidated (DESIGN.md §5):
    /// every diff is +1 or -1, and no value is both added and retracted at one time.
    pub fn check_consolidated(&self) -> Result<(), String> {
        type ValueAtTime = (String, JsonKey, u64, JsonKey);
        let mut first_diff: HashMap<ValueAtTime, (i64, usize)> = HashMap::new();
        for (n, line) in &self.lines {
            let Line::Change(c) = line else { continue };
            if c.diff != 1 && c.diff != -1 {
                return Err(format!("stdout line {n}: diff {} is not +1 or -1", c.diff));
            }
            let id = (
                c.view.clone(),
                JsonKey::new(&c.key),
                c.time,
                JsonKey::new(&c.value),
            );
            let (diff, first) = *first_diff.entry(id).or_insert((c.diff, *n));
            if diff != c.diff {
                return Err(format!(
                    "not consolidated: stdout lines {first} and {n} add and retract the same value of {} {} at time {}: {}",
                    c.view,
                    JsonKey::new(&c.key),
                    c.time,
                    c.value
                ));
            }
        }
        Ok(())
    }
}

fn shorten(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

/// State folded from changes. A row may transiently hold several values (an insertion
/// printed before the retraction it replaces); `get` and `snapshot` reject that.
#[derive(Clone, Debug, Default)]
pub struct StateFold {
    rows: BTreeMap<RowId, Vec<(Value, i64)>>,
}

impl StateFold {
    pub fn apply_change(&mut self, view: &str, key: &Value, value: &Value, diff: i64) -> RowId {
        let id = (view.to_string(), JsonKey::new(key));
        let values = self.rows.entry(id.clone()).or_default();
        match values.iter_mut().find(|(v, _)| v == value) {
            Some((_, m)) => *m += diff,
            None => values.push((value.clone(), diff)),
        }
        values.retain(|(_, m)| *m != 0);
        if values.is_empty() {
            self.rows.remove(&id);
        }
        id
    }

    pub fn apply_upsert(&mut self, u: &Upsert) -> RowId {
        let id = (u.view.clone(), JsonKey::new(&u.key));
        match &u.value {
            Some(v) => self.rows.insert(id.clone(), vec![(v.clone(), 1)]),
            None => self.rows.remove(&id),
        };
        id
    }

    /// Applies lines (progress lines are skipped) and returns the rows they touched.
    pub fn apply_all<'a>(&mut self, lines: impl IntoIterator<Item = &'a Line>) -> BTreeSet<RowId> {
        let mut touched = BTreeSet::new();
        for line in lines {
            match line {
                Line::Change(c) => {
                    touched.insert(self.apply_change(&c.view, &c.key, &c.value, c.diff))
                }
                Line::Upsert(u) => touched.insert(self.apply_upsert(u)),
                Line::Progress(_) => false,
            };
        }
        touched
    }

    /// The row's value and multiplicity; an error if it holds several values.
    pub fn get(&self, id: &RowId) -> Result<Option<(Value, i64)>, String> {
        match self.rows.get(id).map(Vec::as_slice) {
            None => Ok(None),
            Some([one]) => Ok(Some(one.clone())),
            Some(many) => Err(format!(
                "{} {} holds {} values at once: {}",
                id.0,
                id.1,
                many.len(),
                many.iter()
                    .map(|(v, m)| format!("{v} ×{m}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
        }
    }

    pub fn snapshot(&self) -> Result<State, String> {
        let mut state = State::new();
        for id in self.rows.keys() {
            state.insert(id.clone(), self.get(id)?.unwrap());
        }
        Ok(state)
    }

    pub fn len(&self) -> usize {
        self.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }
}

// ---------------------------------------------------------------------------------------
// Comparing states
// ---------------------------------------------------------------------------------------

/// Why `actual` does not match `expected`, or `None`. Only the fields of `expected` are
/// looked at (in objects, at any depth: the engine may add fields); numbers match within
/// `TOLERANCE`; arrays must have the same length.
pub fn value_difference(expected: &Value, actual: &Value) -> Option<String> {
    value_difference_at("", expected, actual)
}

fn value_difference_at(path: &str, expected: &Value, actual: &Value) -> Option<String> {
    let here = if path.is_empty() {
        "value".to_string()
    } else {
        path.to_string()
    };
    match (expected, actual) {
        (Value::Object(e), Value::Object(a)) => e.iter().find_map(|(name, ev)| {
            let sub = if path.is_empty() {
                name.clone()
            } else {
                format!("{path}.{name}")
            };
            match a.get(name) {
                None => Some(format!("{sub}: missing (expected {ev})")),
                Some(av) => value_difference_at(&sub, ev, av),
            }
        }),
        (Value::Array(e), Value::Array(a)) if e.len() != a.len() => Some(format!(
            "{here}: {} elements, expected {}",
            a.len(),
            e.len()
        )),
        (Value::Array(e), Value::Array(a)) => e
            .iter()
            .zip(a)
            .enumerate()
            .find_map(|(i, (ev, av))| value_difference_at(&format!("{here}[{i}]"), ev, av)),
        (Value::Number(e), Value::Number(a)) => {
            let same = match (e.as_i64(), a.as_i64()) {
                (Some(e), Some(a)) => e == a,
                _ => (e.as_f64().unwrap() - a.as_f64().unwrap()).abs() <= TOLERANCE,
            };
            (!same).then(|| format!("{here}: {a}, expected {e}"))
        }
        (e, a) => (e != a).then(|| format!("{here}: {a}, expected {e}")),
    }
}

/// One row on which two states disagree.
#[derive(Clone, Debug)]
pub struct Mismatch {
    pub row: RowId,
    pub expected: Option<Value>,
    /// Value and multiplicity, or an error (several values at once).
    pub actual: Result<Option<(Value, i64)>, String>,
    pub why: String,
}

/// Compares one row: `expected` (multiplicity 1) against the engine's row.
pub fn compare_row(
    row: &RowId,
    expected: Option<&Value>,
    actual: Result<Option<(Value, i64)>, String>,
) -> Option<Mismatch> {
    let why = match (&expected, &actual) {
        (_, Err(e)) => e.clone(),
        (None, Ok(None)) => return None,
        (Some(_), Ok(None)) => "missing: expected a row, there is none".into(),
        (None, Ok(Some(_))) => "unexpected row: expected none".into(),
        (Some(e), Ok(Some((a, m)))) => match value_difference(e, a) {
            _ if *m != 1 => format!("multiplicity {m}, expected 1"),
            None => return None,
            Some(why) => why,
        },
    };
    Some(Mismatch {
        row: row.clone(),
        expected: expected.cloned(),
        actual,
        why,
    })
}

/// All rows where `actual` differs from `expected` (rows of either).
pub fn compare_states(expected: &State, actual: &State) -> Vec<Mismatch> {
    let rows: BTreeSet<&RowId> = expected.keys().chain(actual.keys()).collect();
    rows.into_iter()
        .filter_map(|row| {
            compare_row(
                row,
                expected.get(row).map(|(v, _)| v),
                Ok(actual.get(row).cloned()),
            )
        })
        .collect()
}

/// A few lines describing the first `limit` mismatches.
pub fn describe_mismatches(mismatches: &[Mismatch], limit: usize) -> String {
    let mut text = format!(
        "{} row(s) differ{}:\n",
        mismatches.len(),
        if mismatches.len() > limit {
            format!(" (first {limit} shown)")
        } else {
            String::new()
        }
    );
    for m in mismatches.iter().take(limit) {
        text.push_str(&format!("  {} {}: {}\n", m.row.0, m.row.1, m.why));
        text.push_str(&format!(
            "      expected: {}\n",
            m.expected
                .as_ref()
                .map_or("(no row)".to_string(), Value::to_string)
        ));
        let actual = match &m.actual {
            Ok(None) => "(no row)".to_string(),
            Ok(Some((v, 1))) => v.to_string(),
            Ok(Some((v, mult))) => format!("{v} ×{mult}"),
            Err(e) => e.clone(),
        };
        text.push_str(&format!("      actual:   {actual}\n"));
    }
    text
}

/// Panics with a readable diff unless the states match.
#[track_caller]
pub fn assert_states_match(expected: &State, actual: &State, context: &str) {
    let mismatches = compare_states(expected, actual);
    assert!(
        mismatches.is_empty(),
        "{context}: {}",
        describe_mismatches(&mismatches, 8)
    );
}

/// A state with the given rows (multiplicity 1), e.g. hand-written expectations.
pub fn state_of(rows: impl IntoIterator<Item = (&'static str, Value, Value)>) -> State {
    rows.into_iter()
        .map(|(view, key, value)| ((view.to_string(), JsonKey::new(&key)), (value, 1)))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Comparing runs
// ---------------------------------------------------------------------------------------

/// Panics unless two stdouts hold the same multiset of lines; shows a few lines that only
/// one of them has, change lines before progress lines.
pub fn assert_same_sorted_lines(a_name: &str, a: &str, b_name: &str, b: &str) {
    let mut count: BTreeMap<&str, i64> = BTreeMap::new();
    for line in a.lines() {
        *count.entry(line).or_default() += 1;
    }
    for line in b.lines() {
        *count.entry(line).or_default() -= 1;
    }
    count.retain(|_, c| *c != 0);
    if count.is_empty() {
        return;
    }
    let is_progress = |line: &str| line.starts_with("{\"progress\"");
    let differing_progress = count.keys().filter(|l| is_progress(l)).count();
    let only = |sign: i64| -> String {
        let mut lines: Vec<(&&str, &i64)> =
            count.iter().filter(|(_, c)| c.signum() == sign).collect();
        lines.sort_by_key(|(l, _)| is_progress(l));
        let shown: Vec<String> = lines
            .iter()
            .take(6)
            .map(|(l, c)| format!("    {} ×{}", shorten(l, 240), c.abs()))
            .collect();
        format!(
            "{} lines, first {}:\n{}",
            lines.len(),
            shown.len(),
            shown.join("\n")
        )
    };
    panic!(
        "`{a_name}` and `{b_name}` print different lines ({} vs {} lines; {} of the differing lines are change lines, {differing_progress} progress lines)\n  only in `{a_name}`: {}\n  only in `{b_name}`: {}",
        a.lines().count(),
        b.lines().count(),
        count.len() - differing_progress,
        only(1),
        only(-1),
    );
}

// ---------------------------------------------------------------------------------------
// Deterministic pseudo-randomness for building inputs (no dependency on the engine's rand)
// ---------------------------------------------------------------------------------------

/// SplitMix64.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// Uniform in `0..n` (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
}
