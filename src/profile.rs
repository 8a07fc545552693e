//! `INTENTFLOW_OPERATOR_PROFILE=FILE`: where each worker's time goes, per dataflow operator.
//!
//! perf names the functions that are hot, but every view runs the same `reduce` and `join`
//! code; this names the operators (`Recs`, `Sessions`, …). From timely's own scheduling
//! log it sums each operator's *exclusive* time (a scope's time minus its children's) and,
//! when the worker finishes, appends one JSON line per operator to FILE, busiest first.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::Write;
use std::rc::Rc;
use std::time::Duration;
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};

/// The environment variable naming the profile's output file.
pub const PROFILE_ENV: &str = "INTENTFLOW_OPERATOR_PROFILE";

#[derive(Default)]
struct Tally {
    names: HashMap<usize, (String, Vec<usize>)>,
    /// Exclusive scheduled time and number of activations, per operator id.
    busy: HashMap<usize, (Duration, u64)>,
    /// Operators being scheduled (a scope schedules its children): id, start, time spent in
    /// children so far.
    running: Vec<(usize, Duration, Duration)>,
}

impl Tally {
    fn record(&mut self, at: Duration, event: &TimelyEvent) {
        match event {
            TimelyEvent::Operates(op) => {
                self.names.insert(op.id, (op.name.clone(), op.addr.clone()));
            }
            TimelyEvent::Schedule(schedule) => match schedule.start_stop {
                StartStop::Start => self.running.push((schedule.id, at, Duration::ZERO)),
                StartStop::Stop => {
                    let Some((id, start, children)) = self.running.pop() else {
                        return;
                    };
                    let total = at.saturating_sub(start);
                    let entry = self.busy.entry(id).or_default();
                    entry.0 += total.saturating_sub(children);
                    entry.1 += 1;
                    if let Some(parent) = self.running.last_mut() {
                        parent.2 += total;
                    }
                }
            },
            _ => {}
        }
    }
}

/// A worker's operator profile, when requested.
pub struct OperatorProfile {
    file: String,
    worker: usize,
    tally: Rc<RefCell<Tally>>,
}

impl OperatorProfile {
    /// Starts profiling this worker if `INTENTFLOW_OPERATOR_PROFILE` is set. Must be called
    /// before the dataflow is built, so operator names are logged.
    pub fn start(worker: &mut timely::worker::Worker) -> Option<OperatorProfile> {
        let file = std::env::var(PROFILE_ENV).ok()?;
        let tally = Rc::new(RefCell::new(Tally::default()));
        let sink = Rc::clone(&tally);
        worker
            .log_register()?
            .insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
                if let Some(data) = data {
                    let mut tally = sink.borrow_mut();
                    for (at, event) in data.iter() {
                        tally.record(*at, event);
                    }
                }
            });
        Some(OperatorProfile {
            file,
            worker: worker.index(),
            tally,
        })
    }

    /// Appends this worker's totals to the profile file.
    pub fn write(self, worker: &mut timely::worker::Worker) {
        if let Some(mut registry) = worker.log_register() {
            registry.flush();
        }
        let tally = self.tally.borrow();
        let mut rows: Vec<_> = tally.busy.iter().collect();
        rows.sort_by_key(|(_, (busy, _))| std::cmp::Reverse(*busy));
        let mut text = String::new();
        for (id, (busy, activations)) in rows {
            let (name, addr) = tally.names.get(id).cloned().unwrap_or_default();
            let line = serde_json::json!({
                "worker": self.worker,
                "operator": name,
                "addr": addr,
                "ms": busy.as_secs_f64() * 1e3,
                "activations": activations,
            });
            text.push_str(&line.to_string());
            text.push('\n');
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .and_then(|mut file| file.write_all(text.as_bytes()));
        if let Err(error) = written {
            eprintln!(
                "intentflow: writing operator profile {}: {error}",
                self.file
            );
        }
    }
}
