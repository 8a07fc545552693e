//! The `similar` view (seed 3c, streaming side): item-to-item collaborative filtering in the
//! style of TencentRec, maintained incrementally.
//!
//! Each user contributes their `recent_items` strongest items, the items with the highest
//! windowed score (the window keeps them recent), weighted by the score's *intent level*
//! `w` = 1 below 2, 2 below 4, 3 below 8, else 4 (a click, a cart, a purchase: log-scaled,
//! so a few more clicks do not move every similarity). Two items co-occur for a user with
//! weight `min(w_i, w_j)`; over all users `sim(i, j) = Σ min(w_i, w_j) / sqrt(Σ w_i · Σ w_j)`
//! (a cosine on the users' levels), and each item keeps its `k` most similar neighbours.
//!
//! Pairs that fewer than `min_users` users share are left out, and the view is recomputed
//! once per `refresh_ms` of event time (from the top items as of the period's start).
//!
//! Cost: only a change in a user's top-item set or in one of its levels reaches the pairs.
//! Such a change touches at most `recent_items` pairs per changed item (a user's first
//! arrival: O(N²)), and changes that item's norm, which re-weighs every pair it is in: a
//! popular item's neighbours are re-ranked whenever anyone's level for it changes.

use crate::Time;
use crate::in_place;
use crate::model::{ItemId, Score, UserId};
use crate::scores::ScoreKey;
use crate::shared;
use crate::windows::refreshed;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

/// The `[similar]` settings.
#[derive(Clone, Debug, PartialEq)]
pub struct SimilarParams {
    /// Items per user that take part (the fan-out bound).
    pub recent_items: usize,
    /// Neighbours per item.
    pub k: usize,
    /// Users a pair must co-occur for before it counts: one user's pair is anecdote, and
    /// leaving such pairs out keeps each item's candidate list (and its re-ranking) small.
    pub min_users: usize,
    /// The view is recomputed once per this much event time (ms), from the users' top
    /// items at the start of the period: one change of a popular item's norm re-ranks
    /// every item paired with it, so changes are batched.
    pub refresh_ms: u64,
}

impl Default for SimilarParams {
    fn default() -> Self {
        SimilarParams {
            recent_items: 20,
            k: 10,
            min_users: 2,
            refresh_ms: 60_000,
        }
    }
}

/// An item's neighbours, best first: (item, similarity in ten-thousandths).
pub type Neighbors = Vec<(ItemId, i64)>;

/// The intent level of a positive score: 1 below 2, 2 below 4, 3 below 8, else 4.
pub fn intent_level(score: Score) -> i64 {
    match score.0 {
        ..2_000 => 1,
        2_000..4_000 => 2,
        4_000..8_000 => 3,
        _ => 4,
    }
}

/// A user's strongest items with their intent levels: the `count` positive scores that
/// rank highest (score descending, then item id).
pub fn top_items<'s>(
    scores: VecCollection<'s, Time, (ScoreKey, Score)>,
    count: usize,
) -> VecCollection<'s, Time, (UserId, (ItemId, i64))> {
    scores
        .flat_map(|((user, item), score)| (score.0 > 0).then_some((user, (item, score))))
        .reduce_named("TopItems", move |_user, input, output| {
            let mut ranked: Vec<&(ItemId, Score)> = input.iter().map(|(entry, _)| *entry).collect();
            ranked.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            for (item, score) in ranked.into_iter().take(count) {
                output.push(((item.clone(), intent_level(*score)), 1));
            }
        })
}

/// Co-occurrence weight and both norms of one item pair.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct PairWeights {
    co: i64,
    norm_from: i64,
}

const USER_UNIT: i64 = 1 << 32;

/// `co / sqrt(norm_a · norm_b)` in ten-thousandths.
pub fn cosine(co: i64, norm_a: i64, norm_b: i64) -> i64 {
    let denominator = (norm_a as f64 * norm_b as f64).sqrt();
    if denominator <= 0.0 {
        return 0;
    }
    (co as f64 / denominator * 10_000.0).round() as i64
}

/// Maintains the `similar` view from the users' top items.
pub fn similar<'s>(
    top: VecCollection<'s, Time, (UserId, (ItemId, i64))>,
    params: &SimilarParams,
) -> VecCollection<'s, Time, (ItemId, Neighbors)> {
    let top = refreshed(top, params.refresh_ms);
    // Sums travel as differences: a weight w becomes w copies of the record.
    let norms = in_place::total(
        top.clone()
            .explode(|(_user, (item, level))| Some((item, level as isize))),
        "Norms",
        |item: &ItemId, norm| Some((item.clone(), *norm as i64)),
    );
    // Read by both ends of every pair: arranged once.
    let norms = shared::by_key(norms, "Norms");
    // A pair's users and its summed weight travel in one difference: the weight in the low
    // 32 bits, one user in the high ones (so a pair's count is users · 2³² + Σ weight).
    let (k, min_users) = (params.k, params.min_users as i64);
    let co = in_place::total(
        top.clone()
            .join_map(top, |_user, (a, wa), (b, wb)| {
                (a != b).then(|| ((a.clone(), b.clone()), *wa.min(wb)))
            })
            .explode(|pair| pair.map(|(items, weight)| (items, (USER_UNIT + weight) as isize))),
        "Pairs",
        move |(a, b): &(ItemId, ItemId), packed| {
            let (users, co) = (*packed as i64 >> 32, *packed as i64 & (USER_UNIT - 1));
            (users >= min_users).then(|| (a.clone(), (b.clone(), co)))
        },
    );
    let from_a = shared::join(
        shared::by_key(co, "PairsByFrom"),
        norms.clone(),
        |a, (b, co), norm_a| {
            let weights = PairWeights {
                co: *co,
                norm_from: *norm_a,
            };
            (b.clone(), (a.clone(), weights))
        },
    );
    shared::join(
        shared::by_key(from_a, "PairsByTo"),
        norms,
        |b, (a, weights), norm_b| {
            let sim = cosine(weights.co, weights.norm_from, *norm_b);
            (a.clone(), (b.clone(), sim))
        },
    )
    .reduce_named("Similar", move |_item, input, output| {
        let mut ranked: Vec<(i64, &ItemId)> = input
            .iter()
            .map(|((other, sim), _)| (*sim, other))
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let neighbors: Neighbors = ranked
            .into_iter()
            .take(k)
            .map(|(sim, other)| (other.clone(), sim))
            .collect();
        output.push((neighbors, 1));
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn intent_levels_are_log_scaled() {
        let level = |score: f64| intent_level(Score::from_f64(score));
        assert_eq!(
            [level(1.0), level(1.999), level(2.0), level(3.0)],
            [1, 1, 2, 2]
        );
        assert_eq!(
            [level(4.0), level(7.9), level(8.0), level(90.0)],
            [3, 3, 4, 4]
        );
    }

    #[test]
    fn cosine_of_capped_weights() {
        // Two users: (a 2, b 1) and (a 1, b 1): co = 1 + 1, norms 3 and 2.
        assert_eq!(
            cosine(2, 3, 2),
            (2.0 / 6f64.sqrt() * 10_000.0).round() as i64
        );
        assert_eq!(cosine(5, 0, 4), 0);
    }
}
