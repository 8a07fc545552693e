//! Each view's update cost per event at a realistic state size.
//!
//! For every default view (sessions, scores, affinity, features, transitions, next, paths,
//! funnel, similar, recs; not segments, propensity, als or experiments, which need models
//! or config) and once for all of them together, a single-worker dataflow is built with
//! only that view wanted, loaded with the catalog and 200,000 events of a generated
//! clickstream (10,000 users, 2,000 items), and run until its output has caught up. That is
//! setup. What is measured is one batch of the next 1,000 events: inserting them at their
//! own (tick-coarsened) times, advancing the input to the next tick past them and stepping
//! until every view's output rows have passed it. Throughput is reported in events/s.
//!
//! Run all with `cargo bench --bench views`, one view with `cargo bench --bench views -- recs`
//! (the ids are `views/<view>` and `all views/default`). The defaults are 10 samples, 1 s
//! warm-up, 3 s measurement; criterion's `--warm-up-time`, `--measurement-time` and
//! `--sample-size` override them.
//!
//! Workload: one `generate` run of 600,000 events, spread over as many days (90) as puts
//! 200,000 events in the views' 30-day window (`windows.span_ms`, default). The first
//! 200,000 (30 days) are the state: a full window, as in an engine that has been running
//! for a while. The rest, in order, are the measured batches: each adds 1,000 events and
//! moves event time on by about 3.6 hours, so about as many old events expire from the
//! window, and the state stays near 200,000 events however many batches criterion runs
//! (stderr shows, per benchmark, how many it applied and the mean time of the first and the
//! last 100: they should agree). Should criterion ask for more than the 400 generated
//! batches, they are replayed as copies shifted later by the span of those events, with
//! session ids suffixed per replay so that a copy opens new sessions. Times are coarsened
//! to 1,000 ms ticks as the engine does (`src/clock.rs`); an event whose tick the input has
//! already passed (the generator holds a few back) is applied at the input's time, as the
//! engine applies late events at the watermark.

use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput, measurement::WallTime};
use differential_dataflow::input::InputSession;
use intentflow::generate::{GenerateSpec, generate};
use intentflow::parse::{parse_catalog_item, parse_event};
use intentflow_dataflows::model::{CatalogItem, Event, SessionId};
use intentflow_dataflows::params::{DAY_MS, ViewParams};
use intentflow_dataflows::{Available, Inputs, Time, ViewName, build_views};
use std::cell::Cell;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};
use timely::dataflow::ProbeHandle;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Probe;
use timely::dataflow::operators::generic::operator::Operator;
use timely::worker::Worker;

/// The engine's default tick (`--tick-ms`).
const TICK_MS: Time = 1000;
/// Events loaded before measuring.
const STATE_EVENTS: usize = 200_000;
/// Events per measured iteration.
const BATCH: usize = 1000;
/// Generated batches after the state; replayed, shifted, if criterion wants more.
const FUTURE_BATCHES: usize = 400;

/// The views a run has by default without models or experiments in its config.
const DEFAULT_VIEWS: [ViewName; 10] = [
    ViewName::Sessions,
    ViewName::Scores,
    ViewName::Affinity,
    ViewName::Features,
    ViewName::Transitions,
    ViewName::Next,
    ViewName::Paths,
    ViewName::Funnel,
    ViewName::Similar,
    ViewName::Recs,
];

fn tick(ts: Time) -> Time {
    ts - ts % TICK_MS
}

/// The generated clickstream, parsed.
struct Workload {
    catalog: Vec<CatalogItem>,
    state: Vec<Event>,
    future: Vec<Event>,
    /// How much later each replay of `future` is than the previous one.
    period: Time,
}

impl Workload {
    /// Generates the stream at the rate that puts `STATE_EVENTS` events in one window.
    fn generate(params: &ViewParams) -> Self {
        let events = STATE_EVENTS + FUTURE_BATCHES * BATCH;
        let window_days = params.windows.span_ms.div_ceil(DAY_MS) as usize;
        let spec = GenerateSpec {
            users: 10_000,
            items: 2_000,
            events,
            days: (window_days * events).div_ceil(STATE_EVENTS) as u32,
            seed: 1,
            ..Default::default()
        };
        let mut events_out = Vec::new();
        let mut catalog_out = Vec::new();
        generate(&spec, &mut events_out, Some(&mut catalog_out), None).expect("generate");
        let lines = |bytes: &[u8]| -> Vec<String> {
            std::str::from_utf8(bytes)
                .expect("UTF-8")
                .lines()
                .map(str::to_owned)
                .collect()
        };
        let catalog: Vec<CatalogItem> = lines(&catalog_out)
            .iter()
            .map(|line| parse_catalog_item(line).expect("generated catalog parses"))
            .collect();
        let mut events: Vec<Event> = lines(&events_out)
            .iter()
            .map(|line| parse_event(line).expect("generated event parses"))
            .collect();
        assert_eq!(events.len(), spec.events);
        let future = events.split_off(STATE_EVENTS);
        let (first, last) = future.iter().fold((Time::MAX, 0), |(lo, hi), event| {
            (lo.min(event.ts), hi.max(event.ts))
        });
        let days = |from: Time, to: Time| (to - from) as f64 / DAY_MS as f64;
        let start = events.iter().map(|event| event.ts).min().unwrap_or(first);
        eprintln!(
            "workload: {} catalog items, state {} events over {:.1} days, then {} events \
             over {:.1} days",
            catalog.len(),
            events.len(),
            days(start, first),
            future.len(),
            days(first, last),
        );
        Workload {
            catalog,
            state: events,
            future,
            period: tick(last - first) + TICK_MS,
        }
    }

    /// The `index`th measured batch (0-based), replaying shifted copies past the end.
    fn batch(&self, index: usize) -> Vec<Event> {
        let batches = self.future.len() / BATCH;
        let (replay, offset) = (index / batches, (index % batches) * BATCH);
        let events = &self.future[offset..offset + BATCH];
        if replay == 0 {
            return events.to_vec();
        }
        let shift = self.period * replay as Time;
        events
            .iter()
            .map(|event| {
                let mut event = event.clone();
                event.ts += shift;
                if let Some(session) = &event.session {
                    event.session = Some(SessionId::new(&format!("{session}~{replay}")));
                }
                event
            })
            .collect()
    }
}

/// One view set's dataflow on the bench's worker, with its state loaded.
struct Loaded {
    dataflow: usize,
    events: InputSession<Time, Event, isize>,
    catalog: InputSession<Time, CatalogItem, isize>,
    probe: ProbeHandle<Time>,
    /// Output row changes seen, so the output is used.
    rows: Rc<Cell<u64>>,
    /// The next measured batch.
    next: usize,
    /// Each measured batch's time, to see whether the cost drifts as batches go on.
    times: Vec<Duration>,
}

impl Loaded {
    fn build(
        worker: &mut Worker,
        workload: &Workload,
        params: &ViewParams,
        views: &[ViewName],
    ) -> Self {
        let mut events: InputSession<Time, Event, isize> = InputSession::new();
        let mut catalog: InputSession<Time, CatalogItem, isize> = InputSession::new();
        // Model inputs: no models; closed (dropped) so they do not hold the frontier back.
        let mut kmeans: InputSession<Time, String, isize> = InputSession::new();
        let mut als: InputSession<Time, String, isize> = InputSession::new();
        let rows = Rc::new(Cell::new(0));
        let seen = Rc::clone(&rows);
        let dataflow = worker.next_dataflow_index();
        let probe = worker.dataflow::<Time, _, _>(|scope| {
            let inputs = Inputs {
                events: events.to_collection(scope),
                catalog: catalog.to_collection(scope),
                segment_models: kmeans.to_collection(scope),
                als_models: als.to_collection(scope),
                available: Available::default(),
            };
            let built = build_views(inputs, params, views);
            let (probe, rows) = built.rows.inner.probe();
            rows.sink(Pipeline, "Discard", move |(input, _frontier)| {
                input.for_each(|_, data| {
                    seen.set(seen.get() + data.len() as u64);
                    black_box(&*data);
                    data.clear();
                });
            });
            probe
        });
        drop((kmeans, als));
        for item in &workload.catalog {
            catalog.insert(item.clone());
        }
        let mut loaded = Loaded {
            dataflow,
            events,
            catalog,
            probe,
            rows,
            next: 0,
            times: Vec::new(),
        };
        let started = Instant::now();
        loaded.apply(worker, workload.state.clone());
        eprintln!(
            "{views:?}: state of {STATE_EVENTS} events built in {:.1?} ({} row changes)",
            started.elapsed(),
            loaded.rows.get()
        );
        loaded
    }

    /// Inserts `batch` at its ticks (not before the input's time), advances the input to
    /// the tick after the last, and steps until the output has passed it.
    fn apply(&mut self, worker: &mut Worker, batch: Vec<Event>) {
        let now = *self.events.time();
        let mut last = now;
        for event in batch {
            let time = tick(event.ts).max(now);
            last = last.max(time);
            self.events.update_at(event, time, 1);
        }
        let to = last + TICK_MS;
        self.events.advance_to(to);
        self.catalog.advance_to(to);
        self.events.flush();
        self.catalog.flush();
        while self.probe.less_than(&to) {
            worker.step();
        }
    }

    /// Applies the next `iterations` batches, timing only their application.
    fn measure(&mut self, worker: &mut Worker, workload: &Workload, iterations: u64) -> Duration {
        let mut total = Duration::ZERO;
        for _ in 0..iterations {
            let batch = workload.batch(self.next);
            self.next += 1;
            let started = Instant::now();
            self.apply(worker, batch);
            let elapsed = started.elapsed();
            self.times.push(elapsed);
            total += elapsed;
        }
        total
    }

    fn drop_from(self, worker: &mut Worker) {
        let mean = |times: &[Duration]| times.iter().sum::<Duration>() / times.len().max(1) as u32;
        let ends = self.times.len().min(100);
        eprintln!(
            "  applied {} batches ({} events past the state): {:.2?}/batch for the first {ends}, \
             {:.2?} for the last {ends}",
            self.next,
            self.next * BATCH,
            mean(&self.times[..ends]),
            mean(&self.times[self.times.len() - ends..]),
        );
        // Windows hold retractions in the future; drop the dataflow rather than drain them.
        worker.drop_dataflow(self.dataflow);
    }
}

/// One benchmark: builds the views' state the first time criterion runs it (so a filtered
/// out benchmark costs nothing), then measures batches.
fn bench_views(
    group: &mut BenchmarkGroup<'_, WallTime>,
    id: &str,
    worker: &mut Worker,
    workload: &Workload,
    params: &ViewParams,
    views: &[ViewName],
) {
    let mut loaded: Option<Loaded> = None;
    group.bench_function(id, |b| {
        let loaded = loaded.get_or_insert_with(|| Loaded::build(worker, workload, params, views));
        b.iter_custom(|iterations| loaded.measure(worker, workload, iterations));
    });
    if let Some(loaded) = loaded {
        loaded.drop_from(worker);
    }
}

fn main() {
    timely::execute_directly(|worker| {
        let mut criterion = Criterion::default()
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(3))
            .configure_from_args();
        let params = ViewParams::default();
        let workload = Workload::generate(&params);

        // Flat sampling: the same number of batches per sample (the slow views take
        // 100+ ms a batch, which linear sampling's 55 x N iterations would overrun).
        let mut group = criterion.benchmark_group("views");
        group.throughput(Throughput::Elements(BATCH as u64));
        group.sampling_mode(SamplingMode::Flat);
        for view in DEFAULT_VIEWS {
            bench_views(
                &mut group,
                view.as_str(),
                worker,
                &workload,
                &params,
                &[view],
            );
        }
        group.finish();

        let mut group = criterion.benchmark_group("all views");
        group.throughput(Throughput::Elements(BATCH as u64));
        group.sampling_mode(SamplingMode::Flat);
        bench_views(
            &mut group,
            "default",
            worker,
            &workload,
            &params,
            &DEFAULT_VIEWS,
        );
        group.finish();

        criterion.final_summary();
    });
}
