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
use crate::keyed_shared::{KeyedSharedState, Update, keyed_with_shared};
use crate::model::{ItemId, Score, UserId};
use crate::scores::ScoreKey;
use crate::top_k::keep_best;
use crate::windows::refreshed;
use differential_dataflow::VecCollection;
use std::collections::HashMap;

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
    neighbors(co, norms, k)
}

/// An update of the neighbours' inputs: `(a, (b, co))`, a pair's co-occurrence weight at
/// `a`'s worker, or `(item, norm)`, an item's norm at every worker.
type NeighborUpdate = Update<ItemId, (ItemId, i64), (ItemId, i64)>;

/// One worker's state of [`neighbors`].
#[derive(Default)]
struct NeighborState {
    /// Neighbours per item.
    k: usize,
    /// Every item's norm (broadcast: a local item's partners live anywhere).
    norms: HashMap<ItemId, i64>,
    /// Each local item's partners with their co-occurrence weights.
    pairs: HashMap<ItemId, HashMap<ItemId, i64>>,
    /// Each item → the local items paired with it, to re-rank when its norm changes.
    partners: HashMap<ItemId, Vec<ItemId>>,
    /// Each local item's current list, to retract when it changes.
    lists: HashMap<ItemId, Neighbors>,
}

impl NeighborState {
    /// Applies one time's updates (sorted, consolidated: a value's replacement is its
    /// retraction and the new value's insertion, in either order) and returns the local
    /// items whose neighbours may have changed, sorted.
    fn apply(&mut self, updates: &[(NeighborUpdate, isize)]) -> Vec<ItemId> {
        let mut dirty = Vec::new();
        let mut moved_norms = Vec::new();
        // The updates of one pair, or of one norm, are adjacent.
        for group in updates.chunk_by(|(x, _), (y, _)| match (x, y) {
            (Update::Keyed(a, (b, _)), Update::Keyed(c, (d, _))) => a == c && b == d,
            (Update::Shared((a, _)), Update::Shared((b, _))) => a == b,
            _ => false,
        }) {
            let inserted = group.iter().find(|(_, diff)| *diff > 0).map(|(u, _)| u);
            match (&group[0].0, inserted) {
                (Update::Keyed(a, (b, _)), Some(Update::Keyed(_, (_, co)))) => {
                    let weights = self.pairs.entry(a.clone()).or_default();
                    if weights.insert(b.clone(), *co).is_none() {
                        self.partners.entry(b.clone()).or_default().push(a.clone());
                    }
                    dirty.push(a.clone());
                }
                (Update::Keyed(a, (b, _)), _) => {
                    if let Some(weights) = self.pairs.get_mut(a)
                        && weights.remove(b).is_some()
                    {
                        if weights.is_empty() {
                            self.pairs.remove(a);
                        }
                        if let Some(paired) = self.partners.get_mut(b) {
                            paired.retain(|item| item != a);
                            if paired.is_empty() {
                                self.partners.remove(b);
                            }
                        }
                    }
                    dirty.push(a.clone());
                }
                (Update::Shared((item, _)), Some(Update::Shared((_, norm)))) => {
                    self.norms.insert(item.clone(), *norm);
                    moved_norms.push(item.clone());
                }
                (Update::Shared((item, _)), _) => {
                    self.norms.remove(item);
                    moved_norms.push(item.clone());
                }
            }
        }
        // A norm weighs every pair its item is in, at either end.
        for item in moved_norms {
            if self.pairs.contains_key(&item) || self.lists.contains_key(&item) {
                dirty.push(item.clone());
            }
            dirty.extend(self.partners.get(&item).into_iter().flatten().cloned());
        }
        dirty.sort_unstable();
        dirty.dedup();
        dirty
    }

    /// `item`'s `k` most similar partners (similarity descending, then item id), or none
    /// when it has no pair with both norms known (as the join of pairs and norms).
    fn rank(&self, item: &ItemId, k: usize) -> Option<Neighbors> {
        let norm = *self.norms.get(item)?;
        let mut ranked: Vec<(i64, &ItemId)> = self
            .pairs
            .get(item)?
            .iter()
            .filter_map(|(other, co)| Some((cosine(*co, norm, *self.norms.get(other)?), other)))
            .collect();
        if ranked.is_empty() {
            return None;
        }
        keep_best(&mut ranked, k, |a, b| {
            b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
        });
        Some(
            ranked
                .into_iter()
                .map(|(sim, other)| (other.clone(), sim))
                .collect(),
        )
    }
}

/// Each item's `k` most similar partners from its pairs' co-occurrence (`co`, by the
/// pair's first item) and the items' norms.
///
/// In place rather than as two joins with the norms and a reduce: a norm's change moved
/// every pair of its item through both joins' arrangements and re-read each partner's
/// whole candidate history in the reduce, and the pairs grow faster than the events. Here
/// the norms are broadcast (one per item), each worker keeps its items' pairs and an index
/// from each item to the local items paired with it, and a changed item is re-ranked from
/// its pairs directly. Same results, time by time.
fn neighbors<'s>(
    co: VecCollection<'s, Time, (ItemId, (ItemId, i64))>,
    norms: VecCollection<'s, Time, (ItemId, i64)>,
    k: usize,
) -> VecCollection<'s, Time, (ItemId, Neighbors)> {
    let state = NeighborState {
        k,
        ..NeighborState::default()
    };
    keyed_with_shared(co, norms, "Similar", state)
}

impl KeyedSharedState for NeighborState {
    type Key = ItemId;
    type Value = (ItemId, i64);
    type Shared = (ItemId, i64);
    type Out = (ItemId, Neighbors);

    fn step(
        &mut self,
        updates: Vec<(NeighborUpdate, isize)>,
        changes: &mut Vec<((ItemId, Neighbors), isize)>,
    ) {
        for item in self.apply(&updates) {
            let list = self.rank(&item, self.k);
            if self.lists.get(&item) == list.as_ref() {
                continue;
            }
            if let Some(old) = self.lists.remove(&item) {
                changes.push(((item.clone(), old), -1));
            }
            if let Some(list) = list {
                changes.push(((item.clone(), list.clone()), 1));
                self.lists.insert(item, list);
            }
        }
    }

    fn records(&self) -> usize {
        let pairs: usize = self.pairs.values().map(HashMap::len).sum();
        let partners: usize = self.partners.values().map(Vec::len).sum();
        let lists: usize = self.lists.values().map(Vec::len).sum();
        self.norms.len() + pairs + partners + lists
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_place::tests::{Compared, assert_same_changes};
    use crate::shared;

    /// Neighbours as differential would compute them: both norms joined to every pair,
    /// then a reduce per item.
    fn neighbors_by_joins<'s>(
        co: VecCollection<'s, Time, (ItemId, (ItemId, i64))>,
        norms: VecCollection<'s, Time, (ItemId, i64)>,
        k: usize,
    ) -> VecCollection<'s, Time, (ItemId, Neighbors)> {
        let norms = shared::by_key(norms, "Norms");
        let from_a = shared::join(
            shared::by_key(co, "ByFrom"),
            norms.clone(),
            |a, (b, co), n| (b.clone(), (a.clone(), (*co, *n))),
        );
        shared::join(
            shared::by_key(from_a, "ByTo"),
            norms,
            |b, (a, (co, na)), nb| (a.clone(), (b.clone(), cosine(*co, *na, *nb))),
        )
        .reduce(move |_item, input, output| {
            let mut ranked: Vec<(i64, &ItemId)> = input
                .iter()
                .map(|((other, sim), _)| (*sim, other))
                .collect();
            ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
            let list = ranked
                .into_iter()
                .take(k)
                .map(|(sim, other)| (other.clone(), sim));
            output.push((list.collect(), 1));
        })
    }

    /// Random (key, value) records as pairs and norms: `key`'s norm is its record count,
    /// the pair (key, value % 6) weighs the records of both. Pairs come and go, and norms
    /// move alone too (a record whose pair is its own item).
    fn neighbor_pair(collection: VecCollection<'_, Time, (u32, u32)>) -> Compared<'_> {
        let item = |n: u32| ItemId::new(&format!("i{n}"));
        let norms = in_place::total(
            collection.clone().map(move |(key, _)| item(key)),
            "Norms",
            |item: &ItemId, norm| Some((item.clone(), *norm as i64)),
        );
        let co = in_place::total(
            collection.map(move |(key, value)| (item(key), item(value % 6))),
            "Pairs",
            |(a, b): &(ItemId, ItemId), co| (a != b).then(|| (a.clone(), (b.clone(), *co as i64))),
        );
        // Each list as its entries: (item, (neighbour, similarity · 4 + rank)).
        let flat = |(item, list): (ItemId, Neighbors)| {
            let number = |id: &ItemId| id.as_str()[1..].parse::<u32>().unwrap();
            let a = number(&item);
            list.into_iter()
                .enumerate()
                .map(move |(rank, (b, sim))| (a, (number(&b), sim as isize * 4 + rank as isize)))
                .collect::<Vec<_>>()
        };
        [
            neighbors(co.clone(), norms.clone(), 3).flat_map(flat),
            neighbors_by_joins(co, norms, 3).flat_map(flat),
        ]
    }

    #[test]
    fn neighbors_match_joins_and_reduce_time_by_time() {
        assert_same_changes(neighbor_pair);
    }

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
