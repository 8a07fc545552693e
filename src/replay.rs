//! Replays an event file through the engine's own views and keeps every change in memory:
//! the training commands read the `features` (and `scores`) views this way, so a model
//! sees exactly the numbers the engine computes (no second feature code path).

use crate::engine::{self, EngineSetup};
use crate::ingest::{self, IngestOptions, IngestStats, InputSpec, WorkerLink};
use crate::output::OutputMessage;
use intentflow_dataflows::ViewName;
use intentflow_dataflows::model::Millis;
use intentflow_dataflows::params::ViewParams;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

pub struct ReplaySpec {
    pub events: PathBuf,
    pub catalog: Option<PathBuf>,
    pub params: ViewParams,
    pub views: Vec<ViewName>,
    pub workers: usize,
}

/// Every change the replay produced, in time order.
pub struct Replay {
    pub changes: Vec<Change>,
    pub ingest: IngestStats,
}

pub struct Change {
    pub time: Millis,
    pub view: ViewName,
    pub key: Value,
    pub value: Value,
    pub diff: isize,
}

pub fn replay(spec: ReplaySpec) -> Result<Replay, String> {
    let (to_worker, from_ingest) = crossbeam_channel::bounded(64);
    let (to_output, mut from_engine) = crate::output::channel(1024);
    let input_worker = Arc::new(OnceLock::new());
    let options = IngestOptions {
        input: InputSpec::parse(&spec.events.to_string_lossy()),
        catalog: spec.catalog,
        tick_ms: 1000,
        lateness_ms: 5000,
        idle_ms: 1000,
        max_line_bytes: 1 << 20,
        strict: false,
        dead_letter: None,
    };
    let link = WorkerLink::new(to_worker, Arc::clone(&input_worker));
    let stop = Arc::new(AtomicBool::new(false));
    let ingest_thread = std::thread::spawn(move || ingest::run_ingest(options, link, stop));
    let collector = std::thread::spawn(move || {
        let mut changes = Vec::new();
        while let Some(message) = from_engine.recv() {
            if let OutputMessage::Changes { time, rows } = message {
                for (row, diff) in &rows {
                    let parse = |text: &str| serde_json::from_str(text).expect("rows are JSON");
                    changes.push(Change {
                        time,
                        view: row.view,
                        key: parse(row.key()),
                        value: parse(row.value()),
                        diff: *diff,
                    });
                }
            }
        }
        changes
    });
    engine::run(EngineSetup {
        timely: timely::Config::process(spec.workers.max(1)),
        params: spec.params,
        views: spec.views,
        input: Some(from_ingest),
        output: Some(to_output),
        input_worker,
        stats: None,
        models: Default::default(),
        refit: None,
    })?;
    let ingest = ingest_thread
        .join()
        .map_err(|_| "ingest thread panicked".to_string())??;
    let changes = collector
        .join()
        .map_err(|_| "collector thread panicked".to_string())?;
    Ok(Replay { changes, ingest })
}

impl Replay {
    /// The rows of `view` live just before `time` (`None`: at the end), by key.
    pub fn state_before(&self, view: ViewName, time: Option<Millis>) -> BTreeMap<String, Value> {
        let mut counts: BTreeMap<(String, String), isize> = BTreeMap::new();
        for change in &self.changes {
            if change.view != view || time.is_some_and(|time| change.time >= time) {
                continue;
            }
            *counts
                .entry((change.key.to_string(), change.value.to_string()))
                .or_default() += change.diff;
        }
        counts
            .into_iter()
            .filter(|(_, count)| *count > 0)
            .map(|((key, value), _)| (key, serde_json::from_str(&value).expect("JSON")))
            .collect()
    }
}
