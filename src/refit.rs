//! `run --refit-every N`: refits the k-means segments inside the running engine.
//!
//! Every N events, at the time `t` of the N-th event, the input worker fits a new model on
//! every user's features as of just before `t` (warm-started from the current centroids,
//! so ids carry over) and replaces the model at `t`. The model input is held at `t` until
//! then, so the refit lands at the same event time whatever the worker count, batching or
//! machine speed: the same input gives the same output. Users whose nearest centroid does
//! not change print nothing.

use crate::config::TrainParams;
use crate::train::kmeans::{self, KmeansSpec};
use differential_dataflow::consolidation::consolidate_updates;
use differential_dataflow::input::InputSession;
use intentflow_dataflows::features::{FeatureSums, UserFeatures};
use intentflow_dataflows::model::UserId;
use intentflow_dataflows::models::{ModelFile, SegmentModel};
use intentflow_dataflows::{Time, render};
use serde_json::Value;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Exchange;
use timely::dataflow::operators::generic::operator::Operator;

pub struct RefitOptions {
    pub every: u64,
    pub train: TrainParams,
    pub recency_days: Vec<u64>,
    /// Where each refitted model is written (restart with `--model FILE`).
    pub out: Option<PathBuf>,
}

/// Every user's features on the input worker, complete up to `frontier`.
#[derive(Default)]
pub struct FeatureSnapshot {
    pending: Vec<((UserId, FeatureSums), Time, isize)>,
    frontier: Option<Time>,
    started: bool,
}

impl FeatureSnapshot {
    /// The features live just before `time`, once every change before it has arrived.
    fn before(&mut self, time: Time) -> Option<BTreeMap<UserId, FeatureSums>> {
        if !self.started || self.frontier.is_some_and(|frontier| frontier < time) {
            return None;
        }
        // Fold what is complete into one state at the earliest time, so the buffer holds
        // one record per user plus the changes not yet consumed.
        let (mut before, after): (Vec<_>, Vec<_>) = std::mem::take(&mut self.pending)
            .into_iter()
            .partition(|(_, t, _)| *t < time);
        for update in before.iter_mut() {
            update.1 = 0;
        }
        consolidate_updates(&mut before);
        let state = before
            .iter()
            .filter(|(_, _, diff)| *diff > 0)
            .map(|((user, sums), _, _)| (user.clone(), *sums))
            .collect();
        self.pending = before;
        self.pending.extend(after);
        Some(state)
    }
}

/// Gathers every worker's `features` changes on worker 0 into `snapshot`.
pub fn gather_features(features: UserFeatures<'_>, snapshot: Rc<RefCell<FeatureSnapshot>>) {
    features
        .inner
        .exchange(|_| 0)
        .sink(Pipeline, "FeatureSnapshot", move |(input, frontier)| {
            let mut snapshot = snapshot.borrow_mut();
            input.for_each(|_, data| snapshot.pending.append(data));
            snapshot.frontier = frontier.frontier().first().copied();
            snapshot.started = true;
        });
}

pub struct Refitter {
    options: RefitOptions,
    snapshot: Rc<RefCell<FeatureSnapshot>>,
    current: Option<(String, SegmentModel)>,
    events: u64,
    /// The time of a refit waiting for its snapshot.
    pending: Option<Time>,
}

impl Refitter {
    pub fn new(
        options: RefitOptions,
        snapshot: Rc<RefCell<FeatureSnapshot>>,
        initial: Option<&str>,
    ) -> Self {
        let current = initial.map(|json| {
            let model = serde_json::from_str(json).expect("the runtime checked the model");
            (json.to_string(), model)
        });
        Refitter {
            options,
            snapshot,
            current,
            events: 0,
            pending: None,
        }
    }

    /// Counts one event at `time`; the N-th schedules a refit at its time (unless one is
    /// still waiting, which then covers it).
    pub fn count_event(&mut self, time: Time) {
        self.events += 1;
        if self.events % self.options.every == 0 && self.pending.is_none() {
            self.pending = Some(time);
        }
    }

    /// How far the model input may advance: not past a pending refit.
    pub fn hold(&self, time: Time) -> Time {
        self.pending.map_or(time, |pending| pending.min(time))
    }

    pub fn is_pending(&self) -> bool {
        self.pending.is_some()
    }

    /// Refits if a refit is pending and its snapshot is complete; replaces the model in
    /// `models` at the refit time. Returns whether it did.
    pub fn try_refit(&mut self, models: &mut InputSession<Time, String, isize>) -> bool {
        let Some(time) = self.pending else {
            return false;
        };
        let Some(snapshot) = self.snapshot.borrow_mut().before(time) else {
            return false;
        };
        self.pending = None;
        let rows: BTreeMap<String, Value> = snapshot
            .iter()
            .map(|(user, sums)| {
                let row = render::features_row(user, sums, &self.options.recency_days);
                let value = serde_json::from_str(&row.value).expect("rows are JSON");
                (user.to_string(), value)
            })
            .collect();
        let spec = KmeansSpec {
            k: self.options.train.k,
            seed: self.options.train.seed,
            features: &self.options.train.features,
            recency_days: &self.options.recency_days,
            previous: self.current.as_ref().map(|(_, model)| model),
        };
        let model = match kmeans::fit(&rows, &spec) {
            Ok(model) => model,
            Err(error) => {
                eprintln!("intentflow: refit at {time} skipped: {error}");
                return false;
            }
        };
        let json = serde_json::to_string(&model).expect("models serialize");
        if let Some((old, _)) = &self.current {
            models.update_at(old.clone(), time, -1);
        }
        models.update_at(json.clone(), time, 1);
        eprintln!(
            "intentflow: refitted k-means at {time} on {} users",
            rows.len()
        );
        if let Some(path) = &self.options.out
            && let Err(error) = crate::model_files::write(path, &ModelFile::Kmeans(model.clone()))
        {
            eprintln!("intentflow: {error}");
        }
        self.current = Some((json, model));
        true
    }
}
