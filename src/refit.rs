//! `run --refit-every N`: refits the models inside the running engine: k-means for the
//! `segments` view, ALS for the `als` view (whichever of them is on).
//!
//! Every N events, at the time `t` of the N-th event, the input worker fits new models on
//! the state just before `t` (every user's features for k-means, every windowed score for
//! ALS), warm-started from the current models (segment ids carry over, item factors move
//! rather than restart), and replaces the models at `t`. The model inputs are held at `t`
//! until then, so a refit lands at the same event time whatever the worker count, batching
//! or machine speed: the same input gives the same output. Users whose result does not
//! change print nothing.

use crate::config::TrainParams;
use crate::train::als;
use crate::train::kmeans::{self, KmeansSpec};
use differential_dataflow::VecCollection;
use differential_dataflow::consolidation::consolidate_updates;
use differential_dataflow::input::InputSession;
use intentflow_dataflows::features::{FeatureSums, UserFeatures};
use intentflow_dataflows::model::{Score, UserId};
use intentflow_dataflows::models::{AlsModel, ModelFile, SegmentModel};
use intentflow_dataflows::scores::ScoreKey;
use intentflow_dataflows::{Time, render};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;
use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::rc::Rc;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Exchange;
use timely::dataflow::operators::generic::operator::Operator;

pub struct RefitOptions {
    pub every: u64,
    pub train: TrainParams,
    pub recency_days: Vec<u64>,
    /// Which models to refit.
    pub kmeans: bool,
    pub als: bool,
    /// A directory for each refitted model, as `kmeans.json` and `als.json` (restart
    /// with `--model FILE`).
    pub out: Option<PathBuf>,
}

/// The state of one collection on the input worker, complete up to `frontier`.
pub struct Snapshot<D> {
    pending: Vec<(D, Time, isize)>,
    frontier: Option<Time>,
    started: bool,
}

impl<D> Default for Snapshot<D> {
    fn default() -> Self {
        Snapshot {
            pending: Vec::new(),
            frontier: None,
            started: false,
        }
    }
}

impl<D: Ord + Clone> Snapshot<D> {
    /// The records live just before `time`, once every change before it has arrived.
    fn before(&mut self, time: Time) -> Option<Vec<D>> {
        if !self.started || self.frontier.is_some_and(|frontier| frontier < time) {
            return None;
        }
        // Fold what is complete into one state at the earliest time, so the buffer holds
        // one record per live key plus the changes not yet consumed.
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
            .map(|(record, _, _)| record.clone())
            .collect();
        self.pending = before;
        self.pending.extend(after);
        Some(state)
    }
}

pub type Shared<D> = Rc<RefCell<Snapshot<D>>>;

/// `None` without a snapshot; `Some(None)` while it is incomplete.
fn state_before<D: Ord + Clone>(
    snapshot: &Option<Shared<D>>,
    time: Time,
) -> Option<Option<Vec<D>>> {
    snapshot.as_ref().map(|s| s.borrow_mut().before(time))
}

/// The snapshots a refit reads, each present when its model is refitted.
#[derive(Clone, Default)]
pub struct Snapshots {
    pub features: Option<Shared<(UserId, FeatureSums)>>,
    pub scores: Option<Shared<(ScoreKey, Score)>>,
}

impl Snapshots {
    /// Gathers every worker's changes of the collections to refit from on worker 0.
    pub fn gather<'s>(
        &self,
        features: Option<UserFeatures<'s>>,
        scores: Option<VecCollection<'s, Time, (ScoreKey, Score)>>,
    ) {
        if let (Some(snapshot), Some(features)) = (&self.features, features) {
            gather(features, Rc::clone(snapshot));
        }
        if let (Some(snapshot), Some(scores)) = (&self.scores, scores) {
            gather(scores, Rc::clone(snapshot));
        }
    }
}

fn gather<D>(collection: VecCollection<'_, Time, D>, snapshot: Shared<D>)
where
    D: timely::ExchangeData + Ord,
{
    collection
        .inner
        .exchange(|_| 0)
        .sink(Pipeline, "RefitSnapshot", move |(input, frontier)| {
            let mut snapshot = snapshot.borrow_mut();
            input.for_each(|_, data| snapshot.pending.append(data));
            snapshot.frontier = frontier.frontier().first().copied();
            snapshot.started = true;
        });
}

/// One model as it is live: its JSON (what the model input holds) and its parsed form.
struct Live<M> {
    json: String,
    model: M,
}

impl<M: DeserializeOwned + Serialize> Live<M> {
    fn parse(json: &str) -> Self {
        Live {
            json: json.to_string(),
            model: serde_json::from_str(json).expect("the runtime checked the model"),
        }
    }

    /// Replaces the live model in `input` at `time`.
    fn replace(
        current: &mut Option<Self>,
        model: M,
        input: &mut InputSession<Time, String, isize>,
        time: Time,
    ) {
        let json = serde_json::to_string(&model).expect("models serialize");
        if let Some(old) = current.take() {
            input.update_at(old.json, time, -1);
        }
        input.update_at(json.clone(), time, 1);
        *current = Some(Live { json, model });
    }
}

/// The model inputs a refit replaces models in.
pub struct ModelInputs<'a> {
    pub kmeans: &'a mut InputSession<Time, String, isize>,
    pub als: &'a mut InputSession<Time, String, isize>,
}

pub struct Refitter {
    options: RefitOptions,
    snapshots: Snapshots,
    kmeans: Option<Live<SegmentModel>>,
    als: Option<Live<AlsModel>>,
    events: u64,
    /// The times of refits waiting for their snapshots, oldest first. Every N-th event
    /// queues one (unless one is queued at its time already), however fast refits run, so
    /// which refits happen does not depend on timing.
    pending: VecDeque<Time>,
}

impl Refitter {
    /// `kmeans` and `als`: the models the run started with, as JSON.
    pub fn new(
        options: RefitOptions,
        snapshots: Snapshots,
        kmeans: Option<&str>,
        als: Option<&str>,
    ) -> Self {
        Refitter {
            options,
            snapshots,
            kmeans: kmeans.map(Live::parse),
            als: als.map(Live::parse),
            events: 0,
            pending: VecDeque::new(),
        }
    }

    /// Counts one event at `time`; every N-th schedules a refit at its time.
    pub fn count_event(&mut self, time: Time) {
        self.events += 1;
        if self.events % self.options.every == 0 && self.pending.back() != Some(&time) {
            self.pending.push_back(time);
        }
    }

    /// How far the model inputs may advance: not past the oldest pending refit.
    pub fn hold(&self, time: Time) -> Time {
        self.pending
            .front()
            .map_or(time, |&pending| pending.min(time))
    }

    pub fn is_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Runs the oldest pending refit if all its snapshots are complete; replaces the
    /// models at the refit time. Returns whether it did.
    pub fn try_refit(&mut self, inputs: ModelInputs<'_>) -> bool {
        let Some(&time) = self.pending.front() else {
            return false;
        };
        let features = state_before(&self.snapshots.features, time);
        let scores = state_before(&self.snapshots.scores, time);
        if matches!(features, Some(None)) || matches!(scores, Some(None)) {
            return false;
        }
        self.pending.pop_front();
        if let Some(Some(features)) = features {
            self.refit_kmeans(&features, inputs.kmeans, time);
        }
        if let Some(Some(scores)) = scores {
            self.refit_als(&scores, inputs.als, time);
        }
        true
    }

    fn refit_kmeans(
        &mut self,
        features: &[(UserId, FeatureSums)],
        input: &mut InputSession<Time, String, isize>,
        time: Time,
    ) {
        let layout = render::FeaturesLayout::new(&self.options.recency_days);
        let rows: BTreeMap<String, Value> = features
            .iter()
            .map(|(user, sums)| {
                let row = render::features_row(user, sums, &layout);
                let value = serde_json::from_str(row.value()).expect("rows are JSON");
                (user.to_string(), value)
            })
            .collect();
        let spec = KmeansSpec {
            k: self.options.train.k,
            seed: self.options.train.seed,
            features: &self.options.train.features,
            recency_days: &self.options.recency_days,
            previous: self.kmeans.as_ref().map(|live| &live.model),
        };
        match kmeans::fit(&rows, &spec) {
            Ok(model) => {
                eprintln!(
                    "intentflow: refitted k-means at {time} on {} users",
                    rows.len()
                );
                self.write("kmeans", ModelFile::Kmeans(model.clone()));
                Live::replace(&mut self.kmeans, model, input, time);
            }
            Err(error) => eprintln!("intentflow: k-means refit at {time} skipped: {error}"),
        }
    }

    fn refit_als(
        &mut self,
        scores: &[(ScoreKey, Score)],
        input: &mut InputSession<Time, String, isize>,
        time: Time,
    ) {
        let scores: BTreeMap<(String, String), f64> = scores
            .iter()
            .map(|((user, item), score)| ((user.to_string(), item.to_string()), score.as_f64()))
            .collect();
        let spec = &self.options.train.als;
        let fit = als::fit(&scores, spec, self.als.as_ref().map(|live| &live.model));
        if fit.items.is_empty() {
            eprintln!("intentflow: ALS refit at {time} skipped: no positive scores yet");
            return;
        }
        eprintln!(
            "intentflow: refitted ALS at {time} on {} users and {} items",
            fit.users.len(),
            fit.items.len()
        );
        let mut trained = serde_json::Map::new();
        trained.insert("refitted_at".into(), serde_json::json!(time));
        let model = fit.model(spec, trained);
        self.write("als", ModelFile::Als(model.clone()));
        Live::replace(&mut self.als, model, input, time);
    }

    fn write(&self, kind: &str, model: ModelFile) {
        let Some(dir) = &self.options.out else { return };
        let written = std::fs::create_dir_all(dir)
            .map_err(|error| format!("cannot create {}: {error}", dir.display()))
            .and_then(|()| {
                crate::model_files::write(&Path::new(dir).join(format!("{kind}.json")), &model)
            });
        if let Err(error) = written {
            eprintln!("intentflow: {error}");
        }
    }
}
