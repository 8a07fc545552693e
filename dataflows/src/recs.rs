//! The `recs` view (seeds 2c, 3, 4): each user's top-K items, blended from every source
//! the engine maintains.
//!
//! Sources, each a value in 0..1 (ten-thousandths) per candidate item:
//! - `similar`: Σ level(i) · sim(i, j) / Σ level(i) over the user's top items i (the
//!   `similar` view's input), so items like what the user wants most weigh most;
//! - `next`: p(last → j) from the `next` view (kind item), where `last` is the item of the
//!   user's latest event in the window;
//! - `als`: the user's ALS candidates' predicted preference, clamped to 0..1;
//! - `segment`: items the user's segment's content rule admits, ranked by popularity within
//!   the segment: value (P − rank) / P;
//! - `popular`: the segment's most popular items, the cold-start fallback, valued the same
//!   way. Without a `segments` view, everyone is in one segment, `all`.
//!
//! The blended score is Σ weight · value; the `reason` is the source that contributed
//! most. Items the user purchased in the window, and items their own score is negative for
//! (quick exits: seed 4b's implicit feedback), are never recommended.
//!
//! The shared sources reach every user who reads them, so a change of theirs would re-rank
//! thousands of lists. `similar` and `next` reach the blend once per `shared_refresh_ms` of
//! event time (default a day), as of the period's start, like a nightly model; segment
//! popularity is recomputed once per `popular_refresh_ms` (a day; it reaches cold-start
//! users) and ranks an item by the power of two at or below its number of users
//! (then by id), so it moves in steps. A user's own state (top items, position, purchases,
//! segment) re-ranks their list at once.
//!
//! This module gathers the sources; [`crate::blend`] holds each user's inputs and the
//! shared lists in one operator and blends, so the view changes only when the top-K list,
//! a rank or a score does.

use crate::Time;
use crate::blend::{RankedItems, SharedInput, UserInput};
use crate::experiments::Experiment;
use crate::gather::Gather;
use crate::in_place;
use crate::model::{CatalogItem, Event, EventKind, ItemId, Millis, Score, UserId};
use crate::name::Name;
use crate::params::ViewParams;
use crate::scores::ScoreKey;
use crate::segments::segment_candidates;
use crate::sequences::{NextSteps, StepKind};
use crate::shared;
use crate::similar::Neighbors;
use crate::windows::{refreshed, sliding_with};
use differential_dataflow::hashable::Hashable;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use timely::dataflow::operators::vec::Map;

/// The blend's sources, in the order they win ties for `reason`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Source {
    Similar,
    Next,
    Als,
    Segment,
    Popular,
}

impl Source {
    pub const ALL: [Source; 5] = [
        Source::Similar,
        Source::Next,
        Source::Als,
        Source::Segment,
        Source::Popular,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Source::Similar => "similar",
            Source::Next => "next",
            Source::Als => "als",
            Source::Segment => "segment",
            Source::Popular => "popular",
        }
    }
}

/// `[recs]`: sizes and blend weights (in thousandths).
#[derive(Clone, Debug, PartialEq)]
pub struct RecsParams {
    /// Items per user in `recs`.
    pub k: usize,
    /// Items per user in `als`: the ALS candidates the blend draws from.
    pub als_candidates: usize,
    /// Items per segment in the `segment` and `popular` sources.
    pub popular_items: usize,
    /// Item similarity and next steps reach users' lists once per this much event time
    /// (ms), as of the period's start: a change of theirs re-ranks every user who reads
    /// them. 1: at once.
    pub shared_refresh_ms: u64,
    /// Segment popularity is recomputed once per this much event time (ms): a change of a
    /// segment's lists reaches every cold-start user in it.
    pub popular_refresh_ms: u64,
    /// Weight of each source, in thousandths, in [`Source::ALL`] order.
    pub weights: [i64; 5],
}

impl Default for RecsParams {
    fn default() -> Self {
        RecsParams {
            k: 10,
            als_candidates: 20,
            popular_items: 20,
            shared_refresh_ms: 86_400_000,
            popular_refresh_ms: 86_400_000,
            weights: [1_000, 500, 1_000, 300, 100],
        }
    }
}

/// Each user's blend: the weights of their variant in the first experiment (seed 4a: A/B
/// tests of recommendation strategies), or the `[recs]` weights without experiments. A
/// source weighted 0 is off: it makes no candidates.
#[derive(Clone, Debug)]
pub struct Strategies {
    experiment: Option<Experiment>,
    weights: [i64; 5],
}

impl Strategies {
    pub fn new(params: &ViewParams) -> Strategies {
        Strategies {
            experiment: params.experiments.first().cloned(),
            weights: params.recs.weights,
        }
    }

    /// The user's variant name (`default` without experiments) and blend weights.
    pub fn of(&self, user: &UserId) -> (&str, [i64; 5]) {
        match &self.experiment {
            None => ("default", self.weights),
            Some(experiment) => {
                let variant = &experiment.variants[experiment.assign(user)];
                (&variant.name, variant.recs_weights.unwrap_or(self.weights))
            }
        }
    }
}

/// One recommended item: its blended score (ten-thousandths) and main source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rec {
    pub item: ItemId,
    pub score: i64,
    pub reason: Source,
}

/// The collections the blend reads; the optional ones are absent when their view is not
/// built (no ALS model, no segments).
pub struct BlendSources<'s> {
    pub events: VecCollection<'s, Time, Event>,
    pub catalog: VecCollection<'s, Time, CatalogItem>,
    pub scores: VecCollection<'s, Time, (ScoreKey, Score)>,
    pub top_items: VecCollection<'s, Time, (UserId, (ItemId, i64))>,
    pub similar: VecCollection<'s, Time, (ItemId, Neighbors)>,
    pub next: VecCollection<'s, Time, ((StepKind, Name), NextSteps)>,
    pub als: Option<VecCollection<'s, Time, (UserId, crate::als::Candidates)>>,
    /// Each user's segment name.
    pub segments: Option<VecCollection<'s, Time, (UserId, Name)>>,
}

/// Maintains the `recs` view.
pub fn recs<'s>(
    sources: BlendSources<'s>,
    params: &ViewParams,
) -> VecCollection<'s, Time, (UserId, Vec<Rec>)> {
    let BlendSources {
        events,
        catalog,
        scores,
        top_items,
        similar,
        next,
        als,
        segments,
    } = sources;
    let span = params.windows.span_ms;
    let scope = events.scope();

    // Each user's own inputs.
    let mut users = Gather::new(scope, "UserInputs")
        .flat_map(top_items, |(user, (item, level))| {
            Some((user, UserInput::Top(item, level)))
        })
        .flat_map(positions(events.clone(), span), |(user, (ts, item))| {
            Some((user, UserInput::Visit(ts, item)))
        })
        .input(sliding_with(events, span, |event, _, diff| {
            let purchase = event.kind == EventKind::Purchase;
            let user = event.user;
            event
                .item
                .filter(|_| purchase)
                .map(|item| ((user, UserInput::Excluded(item)), diff))
        }))
        .flat_map(scores.clone(), |((user, item), score)| {
            (score.0 < 0).then_some((user, UserInput::Excluded(item)))
        });
    // Every source's value enters the blend at two decimals (a source value that rounds
    // to 0 makes no candidate), so a list whose rounded values did not change reaches no
    // user, and a user's list changes only when something they would notice does.
    if let Some(als) = als {
        users = users.flat_map(als, |(user, candidates)| {
            candidates.into_iter().filter_map(move |(item, units)| {
                let value = hundredths(units.clamp(0, 10_000));
                let candidate = UserInput::Candidate(item, Source::Als, value);
                (value > 0).then(|| (user.clone(), candidate))
            })
        });
    }
    // Segments: each user's, or one `all` segment for everyone scored.
    let user_segments = match segments {
        Some(segments) => segments,
        None => scores
            .clone()
            .map(|((user, _), _)| user)
            .distinct()
            .map(|user| (user, Name::new("all"))),
    };
    let users = users
        .flat_map(user_segments.clone(), |(user, segment)| {
            Some((user, UserInput::InSegment(segment)))
        })
        .finish();

    // The lists users share, one record per entry.
    let every = params.recs.shared_refresh_ms;
    let shared = Gather::new(scope, "SharedInputs")
        .flat_map(refreshed(similar, every), |(item, neighbors)| {
            neighbors.into_iter().filter_map(move |(other, sim)| {
                let sim = hundredths(sim);
                (sim > 0).then(|| SharedInput::Neighbor(item.clone(), other, sim))
            })
        })
        .flat_map(refreshed(next, every), |((kind, from), steps)| {
            let from = ItemId(from);
            steps
                .into_iter()
                .filter(move |_| kind == StepKind::Item)
                .filter_map(move |(to, p)| {
                    let value = hundredths(p);
                    (value > 0).then(|| SharedInput::Next(from.clone(), ItemId(to), value))
                })
        })
        .flat_map(
            segment_candidates(catalog.clone(), &params.segments),
            |(segment, item)| Some(SharedInput::Admitted(segment, item)),
        )
        .flat_map(
            segment_popularity(scores, user_segments, catalog, params),
            |(segment, (source, items))| Some(SharedInput::Ranked(segment, source, items)),
        )
        .finish();

    crate::blend::blend_users(users, shared, Strategies::new(params), params.recs.k)
}

/// A visit in the window: its `ts` and item (the blend's order: the latest visit is the
/// one of the greatest `(ts, item)`), and the time it entered at, which it leaves `span`
/// after.
type Visit = (Millis, ItemId, Time);

/// Each user's position: the `(ts, item)` of their latest event with an item in the window.
///
/// A user's visits are kept in place, over the window, and a visit that a later one (in
/// `(ts, item)`) outlives can never be the latest again, so it is dropped on the spot: in
/// order, a user keeps one visit; late events keep the few that may be the latest when
/// a later one expires. A window of every visit in front of the blend kept two copies of
/// each (its retraction, and the blend's input) for the whole span, when the blend reads
/// only the latest. Events are insertions, as everywhere in the engine.
fn positions<'s>(
    events: VecCollection<'s, Time, Event>,
    span: Millis,
) -> VecCollection<'s, Time, (UserId, (Millis, ItemId))> {
    let visits = events
        .inner
        .flat_map(|(event, at, diff)| {
            let user = event.user;
            let ts = event.ts;
            event.item.map(|item| ((user, (ts, item, at)), at, diff))
        })
        .as_collection();
    in_place::update_in_place_expiring(
        visits,
        "Positions",
        move |(_, _, at): &Visit| Some(at.saturating_add(span)),
        |_user, visits, updates, changes| {
            let latest = |visits: &[(Visit, isize)]| {
                visits.last().map(|((ts, item, _), _)| (*ts, item.clone()))
            };
            let before = latest(visits);
            in_place::apply(visits, in_place::by_ref(updates));
            // Keep a visit only if it leaves after every later one (by `(ts, item)`).
            let mut kept: Vec<(Visit, isize)> = Vec::with_capacity(1);
            let mut leaves_last: Option<Time> = None;
            for visit in visits.drain(..).rev() {
                let at = (visit.0).2;
                if leaves_last.is_none_or(|last| at > last) {
                    leaves_last = Some(at);
                    kept.push(visit);
                }
            }
            kept.reverse();
            *visits = kept;
            let after = latest(visits);
            if before != after {
                changes.extend(before.map(|position| (position, -1)));
                changes.extend(after.map(|position| (position, 1)));
            }
        },
    )
}

/// Ten-thousandths rounded half up to whole hundredths (0.1234 → 0.12).
fn hundredths(units: i64) -> i64 {
    (units + 50).div_euclid(100) * 100
}

/// The power of two at or below `n` (0 for 0): popularity in steps that rarely change.
fn popularity_step(n: i64) -> i64 {
    if n <= 0 {
        0
    } else {
        1 << (63 - n.leading_zeros())
    }
}

/// Per segment, the `popular_items` most popular items (`popular`) and the most popular
/// items its content rule admits (`segment`), each with value (P − rank) / P.
fn segment_popularity<'s>(
    scores: VecCollection<'s, Time, (ScoreKey, Score)>,
    user_segments: VecCollection<'s, Time, (UserId, Name)>,
    catalog: VecCollection<'s, Time, CatalogItem>,
    params: &ViewParams,
) -> VecCollection<'s, Time, (Name, (Source, RankedItems))> {
    // Users with a positive score for the item, per segment, as of the period's start.
    let every = params.recs.popular_refresh_ms;
    let positive = scores.flat_map(|((user, item), score)| (score.0 > 0).then_some((user, item)));
    let counts = crate::in_place::total(
        refreshed(positive, every)
            .join_map(refreshed(user_segments, every), |_user, item, segment| {
                (segment.clone(), item.clone())
            }),
        "SegmentPopularity",
        |key: &(Name, ItemId), users| Some((key.clone(), popularity_step(*users as i64))),
    );
    let admitted = segment_candidates(catalog, &params.segments).map(|pair| (pair, ()));
    let ruled = counts
        .clone()
        .join_map(admitted, |(segment, item), step, ()| {
            ((segment.clone(), item.clone()), *step)
        });
    let count = params.recs.popular_items;
    let mut lists = top_per_segment(counts, count, Source::Popular);
    lists = lists.concat(top_per_segment(ruled, count, Source::Segment));
    lists
}

/// A reduce's (step, item) values, step descending, then item ascending.
fn best_first<'a>(input: &[(&'a (i64, ItemId), isize)]) -> Vec<&'a (i64, ItemId)> {
    let mut ranked: Vec<&(i64, ItemId)> = input.iter().map(|(value, _)| *value).collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
    ranked
}

/// The `count` best (step descending, item ascending) items per segment, as one list, in
/// two stages (per segment and item hash bucket, then per segment) so a change re-ranks one
/// bucket and one merge instead of the segment's whole catalogue.
fn top_per_segment<'s>(
    steps: VecCollection<'s, Time, ((Name, ItemId), i64)>,
    count: usize,
    source: Source,
) -> VecCollection<'s, Time, (Name, (Source, RankedItems))> {
    const BUCKETS: u64 = 64;
    shared::reduce_then(
        steps.map(|((segment, item), step)| ((segment, item.hashed() % BUCKETS), (step, item))),
        "PopularBuckets",
        move |_key, input, output| {
            for value in best_first(input).into_iter().take(count) {
                output.push((value.clone(), 1));
            }
        },
        |(segment, _bucket): &(Name, u64), value: &(i64, ItemId)| {
            Some((segment.clone(), value.clone()))
        },
    )
    .reduce_named("Popular", move |_segment, input, output| {
        let ranked: Vec<(ItemId, i64)> = best_first(input)
            .into_iter()
            .take(count)
            .enumerate()
            .map(|(rank, (_, item))| {
                (
                    item.clone(),
                    ((count - rank) as i64 * 10_000) / count as i64,
                )
            })
            .collect();
        if !ranked.is_empty() {
            output.push(((source, Arc::new(ranked)), 1));
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::windows::sliding_with;
    use differential_dataflow::input::InputSession;
    use std::sync::{Arc, Mutex};

    type Change = ((UserId, (Millis, ItemId)), Time, isize);

    /// How long a visit stays in the window, against the test input's 600 time units.
    const SPAN: Time = 60;

    /// Random events (some without an item, some late: `ts` behind their time, some at
    /// the same `ts`) through [`positions`] and through a window of every visit in front
    /// of differential's `reduce` taking the greatest; both outputs, consolidated.
    fn run(workers: usize, seed: u64) -> [Vec<Change>; 2] {
        let outputs: [Arc<Mutex<Vec<Change>>>; 2] = Default::default();
        let shared = outputs.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            let mut input = InputSession::<Time, Event, isize>::new();
            let [ours, theirs] = shared.clone();
            let probe = worker.dataflow(|scope| {
                let events = input.to_collection(scope);
                positions(events.clone(), SPAN)
                    .inspect(move |change| ours.lock().unwrap().push(change.clone()));
                let window = sliding_with(events, SPAN, |event: Event, _, diff| {
                    let user = event.user;
                    let ts = event.ts;
                    event.item.map(|item| ((user, (ts, item)), diff))
                });
                let (probe, _) = window
                    .reduce(|_user, visits, latest| {
                        latest.push((visits.last().unwrap().0.clone(), 1))
                    })
                    .inspect(move |change| theirs.lock().unwrap().push(change.clone()))
                    .probe();
                probe
            });
            if worker.index() != 0 {
                return;
            }
            let mut next = crate::in_place::tests::random(seed);
            for round in 0..60u64 {
                let now = round * 10;
                input.advance_to(now);
                for _ in 0..next(8) {
                    let time = now + next(10);
                    let user = ["u0", "u1", "u2"][next(3) as usize];
                    let mut event =
                        Event::new(user, EventKind::Click, time.saturating_sub(next(4) * 15));
                    event.item =
                        (next(5) > 0).then(|| ItemId::new(["a", "b", "c"][next(3) as usize]));
                    input.update_at(event, time, 1);
                }
            }
            input.close();
            while !probe.done() {
                worker.step();
            }
        })
        .unwrap();
        outputs.map(|changes| crate::in_place::tests::consolidated(&changes))
    }

    #[test]
    fn positions_match_the_latest_visit_of_a_full_window() {
        crate::in_place::tests::assert_runs_agree(0..4, 100, run);
    }
}
