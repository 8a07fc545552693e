//! `--arrangement-stats FILE`: how many records each arrangement holds, per worker, every
//! time the output frontier moves. This is how one sees that windowed state stays bounded
//! (and which view grows when it does not).
//!
//! Differential reports batch creations, merges and drops on its `differential/arrange` log;
//! summing them per operator gives the live record count. The operators that keep state
//! outside arrangements (in-place reduces and totals, window stashes, the blend) report
//! their record counts on their own log ([`intentflow_dataflows::state_log`]). Timely's
//! own log names the operators.

use differential_dataflow::logging::{DifferentialEvent, DifferentialEventBuilder};
use intentflow_dataflows::state_log::{STATE_LOG, StateEventBuilder};
use serde::Serialize;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use timely::logging::{TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// Where every worker of the process appends its samples.
pub type StatsFile = Arc<Mutex<BufWriter<File>>>;

/// Creates (truncates) the file every worker of this process writes its samples to.
pub fn create_file(path: &std::path::Path) -> Result<StatsFile, String> {
    let file = File::create(path)
        .map_err(|error| format!("--arrangement-stats {}: {error}", path.display()))?;
    Ok(Arc::new(Mutex::new(BufWriter::new(file))))
}

/// One worker's live record count per stateful operator.
#[derive(Default)]
struct Sizes {
    names: BTreeMap<usize, String>,
    records: BTreeMap<usize, i64>,
}

/// Counts the records of every stateful operator on one worker; create it before building the dataflow, so
/// that every operator is seen.
#[derive(Clone)]
pub struct ArrangementStats {
    sizes: Rc<RefCell<Sizes>>,
    file: StatsFile,
    worker: usize,
}

#[derive(Serialize)]
struct Sample<'a> {
    worker: usize,
    /// The output frontier: the state covers every time before it (`null` at the end).
    time: Option<u64>,
    total: i64,
    records: BTreeMap<&'a str, i64>,
}

impl ArrangementStats {
    pub fn register(worker: &mut Worker, file: StatsFile) -> Option<Self> {
        let sizes = Rc::new(RefCell::new(Sizes::default()));
        let mut registry = worker.log_register()?;
        let names = Rc::clone(&sizes);
        registry.insert::<TimelyEventBuilder, _>("timely", move |_time, batch| {
            for (_, event) in batch.iter().flatten() {
                if let TimelyEvent::Operates(operator) = event {
                    let mut sizes = names.borrow_mut();
                    sizes.names.insert(operator.id, operator.name.clone());
                }
            }
        });
        let counts = Rc::clone(&sizes);
        registry.insert::<DifferentialEventBuilder, _>("differential/arrange", move |_, batch| {
            let mut sizes = counts.borrow_mut();
            for (_, event) in batch.iter().flatten() {
                let (operator, change) = match event {
                    DifferentialEvent::Batch(batch) => (batch.operator, batch.length as i64),
                    DifferentialEvent::Merge(merge) => match merge.complete {
                        Some(merged) => (
                            merge.operator,
                            merged as i64 - (merge.length1 + merge.length2) as i64,
                        ),
                        None => continue,
                    },
                    DifferentialEvent::Drop(drop) => (drop.operator, -(drop.length as i64)),
                    _ => continue,
                };
                *sizes.records.entry(operator).or_default() += change;
            }
        });
        let kept = Rc::clone(&sizes);
        registry.insert::<StateEventBuilder, _>(STATE_LOG, move |_, batch| {
            let mut sizes = kept.borrow_mut();
            for (_, event) in batch.iter().flatten() {
                sizes.records.insert(event.operator, event.records as i64);
            }
        });
        Some(ArrangementStats {
            sizes,
            file,
            worker: worker.index(),
        })
    }

    /// Appends the current counts as one JSON line.
    pub fn sample(&self, time: Option<u64>) {
        let sizes = self.sizes.borrow();
        let labels: Vec<(String, i64)> = sizes
            .records
            .iter()
            .map(|(id, records)| {
                let name = sizes.names.get(id).map_or("?", String::as_str);
                (format!("{name}#{id}"), *records)
            })
            .collect();
        let sample = Sample {
            worker: self.worker,
            time,
            total: labels.iter().map(|(_, records)| records).sum(),
            records: labels.iter().map(|(l, r)| (l.as_str(), *r)).collect(),
        };
        let line = serde_json::to_string(&sample).expect("stats serialize");
        let mut file = self.file.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(error) = writeln!(file, "{line}").and_then(|()| file.flush()) {
            eprintln!("intentflow: --arrangement-stats: {error}");
        }
    }
}
