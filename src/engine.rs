//! The timely side: builds the views' dataflow on every worker, feeds it from the ingest
//! thread on the input worker, and collects every view's changes on the output worker.
//!
//! Worker 0 of process 0 is both the input worker (the only one with open inputs, so the
//! watermark alone drives the frontier) and the output worker (all rows are exchanged to
//! it, so one place knows when a time is complete; it hands rows and progress marks to the
//! output thread, which prints each complete time in order). The views themselves run on
//! every worker, partitioned by key.

use crate::ingest::ToWorker;
use crate::model_files::CollectionModels;
use crate::output::OutputSender;
use crate::profile::OperatorProfile;
use crate::refit::{ModelInputs, RefitOptions, Refitter, Snapshots};
use crate::stats::{ArrangementStats, StatsFile};
use crossbeam_channel::{Receiver, TryRecvError};
use differential_dataflow::input::InputSession;
use intentflow_dataflows::model::{CatalogItem, Event, Millis};
use intentflow_dataflows::params::ViewParams;
use intentflow_dataflows::{Available, Built, Inputs, Time, ViewName, ViewRow, build_views};
use std::cell::Cell;
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use timely::dataflow::ProbeHandle;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::{Exchange, Probe};

/// Input steps the input worker may advance beyond what has reached the output.
const IN_FLIGHT_STEPS: usize = 4;

/// Events one input step may take from the feed. A step reads on past an input batch's
/// end while more is already waiting (e.g. many small batches from a busy TCP source), so
/// the dataflow's fixed cost per step, a progress round through every operator (~1 ms
/// with all views on), is paid once for all of them instead of once per batch. Bounded
/// because each step's changes are in flight at once: 60k events from a file, 1 worker,
/// 1 → 1,024 events per step: 3.7 → 3.3 s, peak RSS 164 → 182 MB (4,096: 266 MB).
const STEP_EVENTS: usize = 1024;

/// What the engine runs and how it is wired to the rest of the process.
pub struct EngineSetup {
    pub timely: timely::Config,
    pub params: ViewParams,
    pub views: Vec<ViewName>,
    /// Present in the process that ingests (process 0).
    pub input: Option<Receiver<ToWorker>>,
    pub output: Option<OutputSender>,
    /// Where the input worker publishes its thread, so ingest can wake it.
    pub input_worker: Arc<OnceLock<Thread>>,
    /// `--arrangement-stats`: where workers write their arrangement sizes.
    pub stats: Option<StatsFile>,
    /// The k-means and ALS models the `segments` and `als` views start with.
    pub models: CollectionModels,
    /// `--refit-every`: refit models inside the engine.
    pub refit: Option<RefitOptions>,
}

/// Runs the dataflow on all workers of this process until the input closes and every view
/// has caught up.
pub fn run(setup: EngineSetup) -> Result<(), String> {
    let EngineSetup {
        timely: config,
        params,
        views,
        input,
        output,
        input_worker,
        stats,
        models,
        refit,
    } = setup;
    // Every worker must build the same dataflow, so what to gather for refits is decided
    // here, before the input worker takes the options.
    let (refit_kmeans, refit_als) = refit.as_ref().map_or((false, false), |r| (r.kmeans, r.als));
    let available = Available {
        segments: models.kmeans.is_some() || refit_kmeans || !params.segments.rules.is_empty(),
        als: models.als.is_some() || refit_als,
    };
    let refit = Arc::new(Mutex::new(refit));
    let input = Arc::new(Mutex::new(input));
    let output = Arc::new(Mutex::new(output));
    let guards = timely::execute(config, move |worker| {
        let index = worker.index();
        let mut events_in: InputSession<Time, Event, isize> = InputSession::new();
        let mut catalog_in: InputSession<Time, CatalogItem, isize> = InputSession::new();
        let mut kmeans_in: InputSession<Time, String, isize> = InputSession::new();
        let mut als_in: InputSession<Time, String, isize> = InputSession::new();
        let output = if index == 0 {
            output.lock().expect("output slot").take()
        } else {
            None
        };
        // Input ends at a horizon: one past the last event's time. Windows schedule
        // retractions beyond it, but the final state is the state at the last event, so
        // nothing at or after the horizon is printed, nor computed: once every change
        // before it is out, each worker drops the dataflow instead of draining the
        // future. The input worker broadcasts the horizon to every worker.
        let horizon: Rc<Cell<Option<Time>>> = Rc::new(Cell::new(None));
        let flushed: Rc<Cell<Option<Option<Time>>>> = Rc::new(Cell::new(None));
        let mut horizon_in: InputSession<Time, Time, isize> = InputSession::new();
        let stats = stats
            .clone()
            .and_then(|file| ArrangementStats::register(worker, file));
        let final_output = output.clone();
        let profile = OperatorProfile::start(worker);
        let dataflow = worker.next_dataflow_index();
        let snapshots = Snapshots {
            features: refit_kmeans.then(Default::default),
            scores: refit_als.then(Default::default),
        };
        let delivered = worker.dataflow::<Time, _, _>(|scope| {
            let inputs = Inputs {
                events: events_in.to_collection(scope),
                catalog: catalog_in.to_collection(scope),
                segment_models: kmeans_in.to_collection(scope),
                als_models: als_in.to_collection(scope),
                available,
            };
            let learned = Rc::clone(&horizon);
            horizon_in.to_collection(scope).inner.broadcast().sink(
                Pipeline,
                "Horizon",
                move |(input, _frontier)| {
                    input.for_each(|_, data| {
                        for (time, _, _) in data.drain(..) {
                            learned.set(Some(time));
                        }
                    });
                },
            );
            let Built {
                rows,
                features,
                scores,
            } = build_views(inputs, &params, &views);
            snapshots.gather(features, scores);
            if let Some(stats) = stats {
                sample_on_progress(rows.inner.clone(), stats);
            }
            let sink = SinkState {
                horizon: Rc::clone(&horizon),
                flushed: Rc::clone(&flushed),
            };
            collect_output(rows.inner, output, sink)
        });

        let feed = if index == 0 {
            input.lock().expect("input slot").take()
        } else {
            None
        };
        if let Some(feed) = feed {
            input_worker.set(std::thread::current()).ok();
            if let Some(model) = &models.kmeans {
                kmeans_in.insert(model.clone());
            }
            if let Some(model) = &models.als {
                als_in.insert(model.clone());
            }
            let mut refitter = refit.lock().expect("refit slot").take().map(|options| {
                Refitter::new(
                    options,
                    snapshots.clone(),
                    models.kmeans.as_deref(),
                    models.als.as_deref(),
                )
            });
            let mut last_event: Option<Time> = None;
            // Input times advanced but not yet through to the output, oldest first.
            let mut in_flight: VecDeque<Time> = VecDeque::new();
            loop {
                // Backpressure: the input worker feeds at most IN_FLIGHT_STEPS steps ahead
                // of the output. Without it, it can run far ahead of the other workers, and
                // what it exchanges to them waits in memory; with it, a fast source waits in
                // the bounded ingest channel (and, over TCP, in the sender's socket).
                while in_flight.len() > IN_FLIGHT_STEPS {
                    // A refit may hold the model inputs back; never wait past them.
                    let reachable = in_flight[0].min(*kmeans_in.time()).min(*als_in.time());
                    if delivered.less_than(&reachable) {
                        // Parks until there is work: other workers' messages wake it.
                        worker.step_or_park(None);
                    } else {
                        in_flight.pop_front();
                    }
                }
                let mut closed = false;
                // Whether the feed was seen empty: only then may the worker park. A wake
                // from ingest can have been spent by an earlier park (the backpressure wait
                // above), so a feed that still looks empty after reading a batch may be one
                // that ingest has since closed, with no wake left to say so.
                let mut drained = false;
                let mut taken = 0;
                let mut advanced = None;
                loop {
                    match feed.try_recv() {
                        Ok(ToWorker::Events(events)) => {
                            taken += events.len();
                            for (event, time) in events {
                                last_event = last_event.max(Some(time));
                                events_in.update_at(event, time, 1);
                                if let Some(refitter) = refitter.as_mut() {
                                    refitter.count_event(time);
                                }
                            }
                        }
                        Ok(ToWorker::Catalog(items)) => {
                            let time = *catalog_in.time();
                            for item in items {
                                catalog_in.update_at(item, time, 1);
                            }
                        }
                        Ok(ToWorker::Advance(time)) => {
                            if time > *events_in.time() {
                                advanced = Some(time);
                                events_in.advance_to(time);
                                catalog_in.advance_to(time);
                                horizon_in.advance_to(time);
                            }
                            let models_to = refitter.as_ref().map_or(time, |r| r.hold(time));
                            advance_models(&mut kmeans_in, &mut als_in, models_to);
                            // At most STEP_EVENTS per step: the dataflow keeps pace with
                            // the input and progress is reported at step granularity.
                            if taken >= STEP_EVENTS {
                                break;
                            }
                        }
                        Err(TryRecvError::Empty) => {
                            drained = true;
                            break;
                        }
                        Err(TryRecvError::Disconnected) => {
                            closed = true;
                            break;
                        }
                    }
                }
                in_flight.extend(advanced);
                if closed {
                    let end = last_event.map_or(0, |time| time + 1).max(*events_in.time());
                    // Every worker, this one included, learns the horizon through the
                    // broadcast: having received it here proves it was sent to all.
                    horizon_in.insert(end);
                    events_in.advance_to(end);
                    catalog_in.advance_to(end);
                    horizon_in.advance_to(end);
                    // A refit still waiting for its snapshot lands before the end.
                    while let Some(refitter) = refitter.as_mut().filter(|r| r.is_pending()) {
                        events_in.flush();
                        catalog_in.flush();
                        horizon_in.flush();
                        let inputs = ModelInputs {
                            kmeans: &mut kmeans_in,
                            als: &mut als_in,
                        };
                        if !refitter.try_refit(inputs) {
                            worker.step_or_park(None);
                        }
                    }
                    advance_models(&mut kmeans_in, &mut als_in, end);
                } else if let Some(refitter) = refitter.as_mut()
                    && refitter.try_refit(ModelInputs {
                        kmeans: &mut kmeans_in,
                        als: &mut als_in,
                    })
                {
                    let models_to = refitter.hold(*events_in.time());
                    advance_models(&mut kmeans_in, &mut als_in, models_to);
                }
                // Events go in when their time may close: until the frontier moves past
                // it, no operator can emit anything of theirs, so sending each small batch
                // as it comes (a TCP source's are a few lines) would only schedule the
                // dataflow once per batch for nothing. The session's own buffer still sends
                // every 1,024 events, so a long tick does not hold them all here.
                if advanced.is_some() || closed {
                    events_in.flush();
                }
                catalog_in.flush();
                kmeans_in.flush();
                als_in.flush();
                horizon_in.flush();
                if closed {
                    break;
                }
                if drained {
                    worker.step_or_park(None);
                } else {
                    worker.step();
                }
            }
        } else {
            // Only the input worker feeds the dataflow; the others' inputs must not hold
            // the frontier back.
            drop(events_in);
            drop(catalog_in);
            drop(kmeans_in);
            drop(als_in);
            drop(horizon_in);
        }
        // Run until every change before the horizon has reached the output worker (and, on
        // it, has been handed to the output thread), then stop without computing what lies
        // beyond.
        loop {
            let finished = horizon.get().is_some_and(|end| {
                let printed = match flushed.get() {
                    Some(Some(bound)) => bound >= end,
                    Some(None) => true,
                    None => false,
                };
                !delivered.less_than(&end) && (final_output.is_none() || printed)
            });
            if finished {
                break;
            }
            worker.step_or_park(None);
        }
        worker.drop_dataflow(dataflow);
        if let Some(profile) = profile {
            profile.write(worker);
        }
        if let Some(output) = final_output {
            // The output thread prints what it holds below the horizon and drops the rest.
            output.send_end(horizon.get());
        }
    })?;
    for result in guards.join() {
        result?;
    }
    Ok(())
}

/// Moves the model inputs up to `time` (never back).
fn advance_models(
    kmeans: &mut InputSession<Time, String, isize>,
    als: &mut InputSession<Time, String, isize>,
    time: Time,
) {
    for input in [kmeans, als] {
        if time > *input.time() {
            input.advance_to(time);
        }
    }
}

/// Samples this worker's arrangement sizes whenever its view of the output frontier moves.
fn sample_on_progress(rows: RowStream<'_>, stats: ArrangementStats) {
    let mut sampled: Option<Option<Time>> = None;
    rows.sink(Pipeline, "ArrangementStats", move |(input, frontier)| {
        input.for_each(|_, _| {});
        let now = frontier.frontier().first().copied();
        if sampled != Some(now) {
            sampled = Some(now);
            stats.sample(now);
        }
    });
}

type RowStream<'s> = timely::dataflow::Stream<'s, Time, Vec<(ViewRow, Time, isize)>>;

/// What the output sink shares with its worker's loop.
struct SinkState {
    /// The input horizon, once known: changes at or after it are not printed.
    horizon: Rc<Cell<Option<Time>>>,
    /// The frontier up to which the sink has handed every change to the output thread
    /// (`Some(None)`: all of them). Read against the horizon even if the horizon became
    /// known after the sink last ran, e.g. when input ends without any event.
    flushed: Rc<Cell<Option<Option<Time>>>>,
}

/// Gathers every row change on worker 0 and hands it to the output thread as it arrives,
/// with a progress mark whenever the frontier moves (the output thread gathers the changes
/// by time and consolidates them). Returns a probe of the sink's input: once it passes a
/// time, every change before it has arrived.
fn collect_output(
    rows: RowStream<'_>,
    output: Option<OutputSender>,
    state: SinkState,
) -> ProbeHandle<Time> {
    let mut reported: Option<Millis> = Some(0);
    let (probe, gathered) = rows.exchange(|_| 0).probe();
    gathered.sink(Pipeline, "Output", move |(input, frontier)| {
        let horizon = state.horizon.get();
        input.for_each(|_capability, data| {
            // Window expiries after the last event: not part of any printed state. Once
            // the inputs close, operators may run ahead into them; they are dropped here
            // rather than sent (the output thread drops any that came before the horizon
            // was known).
            if let Some(horizon) = horizon {
                data.retain(|(_, time, _)| *time < horizon);
            }
            if let Some(output) = output.as_ref().filter(|_| !data.is_empty()) {
                output.send_updates(std::mem::take(data));
            }
        });
        let Some(output) = &output else { return };
        let bound = frontier.frontier().first().copied();
        // The final `{"progress":null}` is the worker loop's to send, after the horizon.
        if let Some(mark) = bound
            && bound != reported
            && horizon.is_none_or(|horizon| mark < horizon)
        {
            reported = bound;
            output.send_progress(mark);
        }
        state.flushed.set(Some(bound));
    });
    probe
}
