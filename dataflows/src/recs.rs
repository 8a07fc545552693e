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
//! One reduce per user holds all of its candidates, so the view changes only when the
//! top-K list, a rank or a score does.

use crate::Time;
use crate::experiments::Experiment;
use crate::model::{CatalogItem, Event, EventKind, ItemId, Score, UserId};
use crate::name::Name;
use crate::params::ViewParams;
use crate::scores::ScoreKey;
use crate::segments::segment_candidates;
use crate::sequences::{NextSteps, StepKind};
use crate::shared;
use crate::similar::Neighbors;
use crate::windows::{refreshed, sliding};
use differential_dataflow::VecCollection;
use differential_dataflow::hashable::Hashable;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

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

/// A segment's `popular_items` best items with their values, best first. Shared: within a
/// worker every cold-start user of the segment holds the same list.
type RankedItems = Arc<Vec<(ItemId, i64)>>;

/// One recommended item: its blended score (ten-thousandths) and main source.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Rec {
    pub item: ItemId,
    pub score: i64,
    pub reason: Source,
}

/// What one user's blend reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum BlendInput {
    /// One of the user's top items and its intent level.
    Top(ItemId, i64),
    /// Σ `level(i) · sim(i, j)` over the user's top items `i` with neighbour `j`.
    Similar(ItemId, i64),
    /// A candidate with a source's value (not `Similar`).
    Candidate(ItemId, Source, i64),
    /// A segment's ranked list from one source (`Popular` or `Segment`), as candidates.
    /// Cold-start users read it as one record shared by the segment, not one per item:
    /// that was half of the blend's input records, repeated for every such user.
    Ranked(Source, RankedItems),
    /// Excluded: purchased, or negatively scored by the user.
    Excluded(ItemId),
    /// The items the content rule of the user's segment admits, sorted: the user's
    /// personal candidates among them get the `segment` boost. One record per user, shared
    /// by the segment, where a record per admitted candidate was a join and an arrangement
    /// the size of all users' candidates, updated on every change of a candidate's value.
    Admitted(AdmittedItems),
}

/// A segment's admitted items, sorted. Shared by the segment's users within a worker.
type AdmittedItems = Arc<Vec<ItemId>>;

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
    let mut inputs = Vec::new();

    inputs.push(
        top_items
            .clone()
            .map(|(user, (item, level))| (user, BlendInput::Top(item, level))),
    );
    // Every source's value enters the blend at two decimals, and neighbour lists enter as
    // one record per neighbour: a list change reaches the users of the item only through
    // the entries whose rounded value changed, and a user's list changes only when
    // something they would notice does.
    // A source value that rounds to 0 does not make a candidate (here: neighbours whose
    // similarity rounds to 0; also `next` and ALS entries below). The sum over the user's top
    // items is kept per (user, candidate), so the blend reads one record per candidate.
    let every = params.recs.shared_refresh_ms;
    let neighbors = refreshed(similar, every).flat_map(|(item, neighbors)| {
        neighbors.into_iter().filter_map(move |(other, sim)| {
            let sim = hundredths(sim);
            (sim > 0).then(|| (item.clone(), (other, sim)))
        })
    });
    let similar_inputs = crate::in_place::total(
        top_items
            .map(|(user, (item, level))| (item, (user, level)))
            .join_map(neighbors, |_item, (user, level), (other, sim)| {
                ((user.clone(), other.clone()), level * sim)
            })
            .explode(|(key, weighted)| Some((key, weighted as isize))),
        "SimilarInputs",
        |(user, other): &(UserId, ItemId), weighted| {
            Some((
                user.clone(),
                BlendInput::Similar(other.clone(), *weighted as i64),
            ))
        },
    );

    // The user's position: the item of their latest event in the window.
    let positions = shared::reduce_then(
        sliding(
            events.clone().flat_map(|event| {
                let user = event.user;
                event.item.map(|item| (user, (event.ts, item)))
            }),
            span,
        ),
        "Position",
        |_user, input, output| {
            let ((_, item), _) = input[input.len() - 1];
            output.push((item.clone(), 1));
        },
        |user: &UserId, item: &ItemId| Some((item.clone(), user.clone())),
    );
    // Rounded (and zeros dropped) before the join, one record per entry: a `next` list
    // whose rounded values did not change, or an entry that did not, reaches no user.
    let item_next = refreshed(next, every).flat_map(|((kind, from), steps)| {
        let from = ItemId(from);
        steps
            .into_iter()
            .filter(move |_| kind == StepKind::Item)
            .filter_map(move |(to, p)| {
                let value = hundredths(p);
                (value > 0).then(|| (from.clone(), (ItemId(to), value)))
            })
    });
    let next_inputs = positions.join_map(item_next, |_item, user, (to, value)| {
        let candidate = BlendInput::Candidate(to.clone(), Source::Next, *value);
        (user.clone(), candidate)
    });
    let mut personal = similar_inputs.concat(next_inputs);
    if let Some(als) = als {
        personal = personal.concat(als.flat_map(|(user, candidates)| {
            candidates.into_iter().filter_map(move |(item, units)| {
                let value = hundredths(units.clamp(0, 10_000));
                let candidate = BlendInput::Candidate(item, Source::Als, value);
                (value > 0).then(|| (user.clone(), candidate))
            })
        }));
    }
    inputs.push(personal.clone());
    // Personal candidates of the sources the user's strategy has on.
    let strategies = Strategies::new(params);
    let candidate_items = personal.flat_map(move |(user, input)| {
        let (item, source) = match input {
            BlendInput::Similar(item, _) => (item, Source::Similar),
            BlendInput::Candidate(item, source, _) => (item, source),
            _ => return None,
        };
        let (_, weights) = strategies.of(&user);
        (weights[source as usize] > 0).then_some((user, item))
    });
    // Arranged once: the segment-rule join and the cold-start count both read it.
    let candidate_items = shared::by_key(candidate_items, "PersonalCandidates");

    // Segments: each user's, or one `all` segment for everyone scored.
    let user_segments = match segments {
        Some(segments) => segments,
        None => scores
            .clone()
            .map(|((user, _), _)| user)
            .distinct()
            .map(|user| (user, Name::new("all"))),
    };
    // Segment rules (seed 2c) raise the personal candidates the user's segment admits:
    // each user reads their segment's admitted items, and the blend boosts.
    let admitted = segment_candidates(catalog.clone(), &params.segments).reduce_named(
        "Admitted",
        |_segment, input, output| {
            let items: Vec<ItemId> = input.iter().map(|(item, _)| (*item).clone()).collect();
            output.push((Arc::new(items), 1));
        },
    );
    inputs.push(
        user_segments
            .clone()
            .map(|(user, segment)| (segment, user))
            .join_map(admitted, |_segment, user, items| {
                (user.clone(), BlendInput::Admitted(items.clone()))
            }),
    );
    let segment_of = shared::by_key(user_segments.clone(), "UserSegments");
    // Cold start: users with fewer than K personal candidates also get their segment's
    // popular items (all, and those its rule admits). Only they: a segment's lists would
    // otherwise reach every user in it each time they change.
    let k = params.recs.k;
    let enough = shared::reduce(
        candidate_items,
        "PersonalCandidates",
        move |_user, input, output| {
            if input.len() >= k {
                output.push(((), 1));
            }
        },
    );
    // Users without enough candidates: all users with a segment, less those with enough
    // (an antijoin on the shared arrangement of segments).
    let with_enough = shared::join(
        segment_of,
        shared::by_key(enough, "Enough"),
        |user, segment, ()| (user.clone(), segment.clone()),
    );
    let popular = segment_popularity(scores.clone(), user_segments.clone(), catalog, params);
    inputs.push(
        user_segments
            .concat(with_enough.negate())
            .map(|(user, segment)| (segment, user))
            .join_map(popular, |_segment, user, (source, items)| {
                (user.clone(), BlendInput::Ranked(*source, items.clone()))
            }),
    );

    let purchased = sliding(
        events.flat_map(|event| {
            let purchase = event.kind == EventKind::Purchase;
            let user = event.user;
            event
                .item
                .filter(|_| purchase)
                .map(|item| (user, BlendInput::Excluded(item)))
        }),
        span,
    );
    inputs.push(purchased);
    inputs.push(scores.flat_map(|((user, item), score)| {
        (score.0 < 0).then_some((user, BlendInput::Excluded(item)))
    }));

    let strategies = Strategies::new(params);
    crate::in_place::reduce_in_place(
        differential_dataflow::collection::concatenate(scope, inputs),
        "Recs",
        move |user, input, output| {
            let (_, weights) = strategies.of(user);
            let list = blend(input.iter().map(|(entry, _)| *entry), &weights, k);
            if !list.is_empty() {
                output.push((list, 1));
            }
        },
    )
}

/// Ten-thousandths rounded half up to whole hundredths (0.1234 → 0.12).
fn hundredths(units: i64) -> i64 {
    (units + 50).div_euclid(100) * 100
}

/// One user's top-K from their blend inputs.
fn blend<'a>(
    inputs: impl Iterator<Item = &'a BlendInput>,
    weights: &[i64; 5],
    k: usize,
) -> Vec<Rec> {
    let mut levels = 0i64;
    let mut similar: BTreeMap<&ItemId, i64> = BTreeMap::new();
    let mut values: BTreeMap<&ItemId, [i64; 5]> = BTreeMap::new();
    let mut excluded: BTreeSet<&ItemId> = BTreeSet::new();
    // Candidates from the personal sources the strategy has on: the ones a segment
    // boost can raise.
    let mut personal: BTreeSet<&ItemId> = BTreeSet::new();
    let mut admitted: Option<&AdmittedItems> = None;
    let mut offer = |item: &'a ItemId, source: Source, value: i64| {
        let slot = &mut values.entry(item).or_default()[source as usize];
        *slot = (*slot).max(value);
    };
    for input in inputs {
        match input {
            BlendInput::Top(_, level) => levels += level,
            BlendInput::Similar(other, weighted) => {
                *similar.entry(other).or_default() += weighted;
                if weights[Source::Similar as usize] > 0 {
                    personal.insert(other);
                }
            }
            BlendInput::Candidate(item, source, value) => {
                offer(item, *source, *value);
                if weights[*source as usize] > 0 {
                    personal.insert(item);
                }
            }
            BlendInput::Ranked(source, items) => {
                for (item, value) in items.iter() {
                    offer(item, *source, *value);
                }
            }
            BlendInput::Excluded(item) => {
                excluded.insert(item);
            }
            BlendInput::Admitted(items) => admitted = Some(items),
        }
    }
    if let Some(admitted) = admitted {
        for item in personal {
            if admitted.binary_search(item).is_ok() {
                offer(item, Source::Segment, 10_000);
            }
        }
    }
    for (item, weighted) in similar {
        values.entry(item).or_default()[Source::Similar as usize] =
            crate::features::mean_half_up(weighted, levels);
    }
    // Ranked by reference; only the K kept are cloned (a user has several times K
    // candidates once the segment lists are in).
    let mut ranked: Vec<(i64, &ItemId, Source)> = values
        .into_iter()
        .filter(|(item, _)| !excluded.contains(item))
        .filter_map(|(item, by_source)| {
            let mut total = 0;
            let mut best = (0, Source::Similar);
            for source in Source::ALL {
                let part = weights[source as usize] * by_source[source as usize];
                total += part;
                if part > best.0 {
                    best = (part, source);
                }
            }
            (total > 0).then_some(((total + 500) / 1_000, item, best.1))
        })
        .collect();
    ranked.sort_unstable_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
    ranked.truncate(k);
    ranked
        .into_iter()
        .map(|(score, item, reason)| Rec {
            item: item.clone(),
            score,
            reason,
        })
        .collect()
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
