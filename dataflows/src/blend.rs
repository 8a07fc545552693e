//! The `recs` blend as one operator: each user's own inputs, kept in place, read against
//! the lists every user shares (item neighbours, next steps, segment lists), kept once
//! per worker.
//!
//! Differential would express the blend as joins: each user's top items with the items'
//! neighbours, their position with the position's next steps, their segment with the
//! segment's lists, then a count of their candidates for the cold-start rule. Each of
//! those keeps an arrangement per side and moves records through it whenever either side
//! changes: a top item's new level re-sent every neighbour of the item, and a candidate's
//! new value moved it through three operators before the blend saw it. Here the shared
//! lists are broadcast (every worker holds them all; they are small: a neighbour list
//! per item, a next list per item, two lists per segment), a user's inputs are
//! consolidated in place as in [`crate::in_place`], and the blend reads the shared lists
//! directly when it runs. An index from each shared key (item, segment) to the local
//! users that read it finds the users to re-blend when a shared list changes.
//!
//! Same results, time by time, as the joins: at each time, every update at that time is
//! applied first (shared and per-user), then every user whose inputs or read lists
//! changed is blended once, and the change of their list is emitted.

use crate::Time;
use crate::features::mean_half_up;
use crate::in_place::{apply, apply_keyed, by_ref};
use crate::keyed_shared::{KeyedSharedState, Update, by_key, keyed_with_shared, take_shared};
use crate::model::{ItemId, Millis, UserId};
use crate::name::Name;
use crate::recs::{Rec, Source, Strategies};
use crate::top_k::keep_best;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::Hash;
use std::sync::Arc;

/// A segment's ranked list from one source, best first, with each item's value. Shared
/// within a worker by every user of the segment who reads it.
pub type RankedItems = Arc<Vec<(ItemId, i64)>>;

/// One of a user's own blend inputs.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum UserInput {
    /// One of the user's top items and its intent level: the `similar` source reads the
    /// item's neighbours.
    Top(ItemId, i64),
    /// An event of the user's in the window, with its item: the latest is the user's
    /// position, whose next steps are the `next` source.
    Visit(Millis, ItemId),
    /// A candidate with its value from a per-user source (ALS).
    Candidate(ItemId, Source, i64),
    /// Excluded: purchased, or negatively scored by the user.
    Excluded(ItemId),
    /// The user's segment: its content rule boosts their personal candidates, and its
    /// popular lists are their cold-start candidates.
    InSegment(Name),
}

/// A record of the lists every user may read.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum SharedInput {
    /// `(item, neighbour, similarity in ten-thousandths, rounded to hundredths, > 0)`.
    Neighbor(ItemId, ItemId, i64),
    /// `(from item, to item, p in ten-thousandths, rounded to hundredths, > 0)`.
    Next(ItemId, ItemId, i64),
    /// `(segment, item its content rule admits)`.
    Admitted(Name, ItemId),
    /// A segment's ranked list from `Popular` or `Segment`.
    Ranked(Name, Source, RankedItems),
}

/// A user's consolidated inputs (sorted, nonzero counts) and their current list.
struct UserState {
    input: Vec<(UserInput, isize)>,
    list: Vec<Rec>,
    /// Whether the last blend found fewer than K personal candidates: only such users
    /// read their segment's ranked lists.
    cold_start: bool,
}

impl UserState {
    /// The item of the user's latest event in the window (the last `Visit`: visits sort by
    /// time, then item).
    fn position(&self) -> Option<&ItemId> {
        self.input.iter().rev().find_map(|(input, _)| match input {
            UserInput::Visit(_, item) => Some(item),
            _ => None,
        })
    }
}

/// One item's neighbours or next steps with their values, sorted and consolidated.
type ItemValues = Vec<((ItemId, i64), isize)>;

/// One segment's ranked lists, sorted and consolidated.
type RankedLists = Vec<((Source, RankedItems), isize)>;

/// The shared lists, each sorted and consolidated, as one worker holds them.
#[derive(Default)]
struct SharedLists {
    neighbors: HashMap<ItemId, ItemValues>,
    next: HashMap<ItemId, ItemValues>,
    admitted: HashMap<Name, Vec<(ItemId, isize)>>,
    ranked: HashMap<Name, RankedLists>,
}

impl SharedLists {
    /// Entries held, over every list.
    fn len(&self) -> usize {
        let values = |lists: &HashMap<_, ItemValues>| lists.values().map(Vec::len).sum::<usize>();
        values(&self.neighbors)
            + values(&self.next)
            + self.admitted.values().map(Vec::len).sum::<usize>()
            + self.ranked.values().map(Vec::len).sum::<usize>()
    }
}

/// Which local users read each shared key, to re-blend them when its list changes.
#[derive(Default)]
struct Readers {
    /// Item → users with it among their top items (with multiplicity).
    by_top_item: HashMap<ItemId, HashMap<UserId, isize>>,
    /// Item → users positioned on it.
    by_position: HashMap<ItemId, HashMap<UserId, isize>>,
    /// Segment → users in it (with multiplicity).
    by_segment: HashMap<Name, HashMap<UserId, isize>>,
}

impl Readers {
    /// Entries held, over every index.
    fn len(&self) -> usize {
        fn entries<K>(index: &HashMap<K, HashMap<UserId, isize>>) -> usize {
            index.values().map(HashMap::len).sum()
        }
        entries(&self.by_top_item) + entries(&self.by_position) + entries(&self.by_segment)
    }
}

/// Adds `diff` to `user`'s count under `key`, dropping zeros.
fn count<K: Hash + Eq>(
    index: &mut HashMap<K, HashMap<UserId, isize>>,
    key: K,
    user: &UserId,
    diff: isize,
) {
    let users = index.entry(key).or_default();
    let slot = users.entry(user.clone()).or_default();
    *slot += diff;
    if *slot == 0 {
        users.remove(user);
    }
}

/// Removes the keys of `index` whose reader sets emptied.
fn prune<K: Hash + Eq>(index: &mut HashMap<K, HashMap<UserId, isize>>, keys: &[K]) {
    for key in keys {
        if index.get(key).is_some_and(HashMap::is_empty) {
            index.remove(key);
        }
    }
}

/// An update of the blend's inputs: a user's own, at their worker, or a shared list's, at
/// every worker.
type BlendUpdate = Update<UserId, UserInput, SharedInput>;

/// Maintains each user's top-`k` list from their own inputs (`users`) and the shared lists
/// (`shared`), with each user's strategy weights.
pub fn blend_users<'s>(
    users: VecCollection<'s, Time, (UserId, UserInput)>,
    shared: VecCollection<'s, Time, SharedInput>,
    strategies: Strategies,
    k: usize,
) -> VecCollection<'s, Time, (UserId, Vec<Rec>)> {
    let state = BlendState {
        states: HashMap::new(),
        lists: SharedLists::default(),
        readers: Readers::default(),
        strategies,
        k,
    };
    keyed_with_shared(users, shared, "Recs", state)
}

/// One worker's state of [`blend_users`].
struct BlendState {
    /// Each local user's inputs and list.
    states: HashMap<UserId, UserState>,
    lists: SharedLists,
    readers: Readers,
    strategies: Strategies,
    /// Recommendations per user.
    k: usize,
}

impl KeyedSharedState for BlendState {
    type Key = UserId;
    type Value = UserInput;
    type Shared = SharedInput;
    type Out = (UserId, Vec<Rec>);

    fn step(
        &mut self,
        mut updates: Vec<(BlendUpdate, isize)>,
        changes: &mut Vec<((UserId, Vec<Rec>), isize)>,
    ) {
        let shared_updates = take_shared(&mut updates);
        let mut dirty = BTreeSet::new();
        let BlendState {
            states,
            lists,
            readers,
            strategies,
            k,
        } = self;
        apply_users(&updates, states, readers, &mut dirty);
        apply_shared(shared_updates, lists, readers, states, &mut dirty);
        for user in dirty {
            let Some(state) = states.get_mut(&user) else {
                continue;
            };
            let (_, weights) = strategies.of(&user);
            let (list, cold_start) = blend(&state.input, lists, &weights, *k);
            state.cold_start = cold_start;
            if list != state.list {
                if !state.list.is_empty() {
                    let old = std::mem::take(&mut state.list);
                    changes.push(((user.clone(), old), -1));
                }
                if !list.is_empty() {
                    changes.push(((user.clone(), list.clone()), 1));
                }
                state.list = list;
            }
            if state.input.is_empty() {
                states.remove(&user);
            }
        }
    }

    fn records(&self) -> usize {
        let users: usize = self
            .states
            .values()
            .map(|state| state.input.len() + state.list.len())
            .sum();
        users + self.lists.len() + self.readers.len()
    }
}

/// Applies one time's per-user updates (sorted by user, consolidated), keeps the readers'
/// index current, and marks users whose blend may have changed.
fn apply_users(
    updates: &[(BlendUpdate, isize)],
    states: &mut HashMap<UserId, UserState>,
    readers: &mut Readers,
    dirty: &mut BTreeSet<UserId>,
) {
    for (user, inputs) in by_key(updates) {
        let state = states.entry(user.clone()).or_insert_with(|| UserState {
            input: Vec::new(),
            list: Vec::new(),
            cold_start: false,
        });
        let before = state.position().cloned();
        apply(&mut state.input, inputs.clone());
        let after = state.position().cloned();
        let mut changed = before != after;
        let (mut tops, mut segments) = (Vec::new(), Vec::new());
        for (input, diff) in inputs {
            match input {
                UserInput::Visit(..) => {}
                UserInput::Top(item, _) => {
                    count(&mut readers.by_top_item, item.clone(), user, diff);
                    tops.push(item.clone());
                    changed = true;
                }
                UserInput::InSegment(segment) => {
                    count(&mut readers.by_segment, segment.clone(), user, diff);
                    segments.push(segment.clone());
                    changed = true;
                }
                UserInput::Candidate(..) | UserInput::Excluded(..) => changed = true,
            }
        }
        if before != after {
            if let Some(item) = &before {
                count(&mut readers.by_position, item.clone(), user, -1);
            }
            if let Some(item) = &after {
                count(&mut readers.by_position, item.clone(), user, 1);
            }
            prune(&mut readers.by_position, before.as_slice());
        }
        prune(&mut readers.by_top_item, &tops);
        prune(&mut readers.by_segment, &segments);
        // Visits that leave the position where it was change nothing the blend reads.
        if changed {
            dirty.insert(user.clone());
        } else if state.input.is_empty() {
            states.remove(user);
        }
    }
}

/// Applies one time's shared updates (sorted, consolidated) and marks the local users
/// who read a changed list.
fn apply_shared(
    updates: Vec<(SharedInput, isize)>,
    lists: &mut SharedLists,
    readers: &Readers,
    states: &HashMap<UserId, UserState>,
    dirty: &mut BTreeSet<UserId>,
) {
    // Grouped by list: the updates sort by kind, then key, then value.
    let mut neighbors: BTreeMap<ItemId, ItemValues> = BTreeMap::new();
    let mut next: BTreeMap<ItemId, ItemValues> = BTreeMap::new();
    let mut admitted: BTreeMap<Name, Vec<(ItemId, isize)>> = BTreeMap::new();
    let mut ranked: BTreeMap<Name, RankedLists> = BTreeMap::new();
    for (input, diff) in updates {
        match input {
            SharedInput::Neighbor(item, other, sim) => {
                neighbors
                    .entry(item)
                    .or_default()
                    .push(((other, sim), diff));
            }
            SharedInput::Next(from, to, p) => next.entry(from).or_default().push(((to, p), diff)),
            SharedInput::Admitted(segment, item) => {
                admitted.entry(segment).or_default().push((item, diff));
            }
            SharedInput::Ranked(segment, source, items) => {
                ranked
                    .entry(segment)
                    .or_default()
                    .push(((source, items), diff));
            }
        }
    }
    let mut mark = |users: Option<&HashMap<UserId, isize>>, only_cold: bool| {
        let users = users.into_iter().flat_map(|users| users.keys());
        dirty.extend(
            users
                .filter(|user| !only_cold || states.get(*user).is_some_and(|s| s.cold_start))
                .cloned(),
        );
    };
    for (item, updates) in neighbors {
        mark(readers.by_top_item.get(&item), false);
        apply_keyed(&mut lists.neighbors, item, by_ref(&updates));
    }
    for (item, updates) in next {
        mark(readers.by_position.get(&item), false);
        apply_keyed(&mut lists.next, item, by_ref(&updates));
    }
    for (segment, updates) in admitted {
        mark(readers.by_segment.get(&segment), false);
        apply_keyed(&mut lists.admitted, segment, by_ref(&updates));
    }
    for (segment, updates) in ranked {
        // Only cold-start users read the ranked lists. A user's cold start changes
        // only with their own inputs or the neighbour and next lists, which mark them.
        mark(readers.by_segment.get(&segment), true);
        apply_keyed(&mut lists.ranked, segment, by_ref(&updates));
    }
}

/// One user's top-`k` from their inputs and the shared lists they read, and whether they
/// are a cold-start user.
///
/// - `similar`: Σ level(i) · sim(i, j) over the user's top items i, as a mean over their
///   levels; a candidate whose sum is 0 is none;
/// - `next`: the next steps of the user's position;
/// - ALS: as given;
/// - cold start: fewer than `k` personal candidates (from sources weighted above 0) add
///   the segment's ranked lists;
/// - the segment's content rule boosts the personal candidates it admits (`segment`).
fn blend<'a>(
    input: &'a [(UserInput, isize)],
    lists: &'a SharedLists,
    weights: &[i64; 5],
    k: usize,
) -> (Vec<Rec>, bool) {
    // Flat lists sorted once, not maps grown entry by entry: a blend runs at nearly every
    // event of its user and gathers a few hundred offers (top items × neighbours).
    let mut levels = 0i64;
    let mut similar: Vec<(&'a ItemId, i64)> = Vec::new();
    let mut offers: Vec<(&'a ItemId, Source, i64)> = Vec::new();
    let mut excluded: Vec<&'a ItemId> = Vec::new();
    let mut personal: Vec<&'a ItemId> = Vec::new();
    let mut segments: Vec<&'a Name> = Vec::new();
    let mut position = None;
    let on = |source: Source| weights[source as usize] > 0;
    for (entry, count) in input {
        match entry {
            UserInput::Top(item, level) => {
                levels += level;
                for ((other, sim), times) in lists.neighbors.get(item).into_iter().flatten() {
                    similar.push((other, level * sim * (count * times) as i64));
                }
            }
            UserInput::Visit(_, item) => position = Some(item),
            UserInput::Candidate(item, source, value) => {
                offers.push((item, *source, *value));
                if on(*source) {
                    personal.push(item);
                }
            }
            UserInput::Excluded(item) => excluded.push(item),
            UserInput::InSegment(segment) => segments.push(segment),
        }
    }
    for ((to, p), _) in position
        .and_then(|item| lists.next.get(item))
        .into_iter()
        .flatten()
    {
        offers.push((to, Source::Next, *p));
        if on(Source::Next) {
            personal.push(to);
        }
    }
    similar.sort_unstable_by_key(|(item, _)| *item);
    for group in similar.chunk_by(|(a, _), (b, _)| a == b) {
        let weighted: i64 = group.iter().map(|(_, part)| part).sum();
        if weighted == 0 {
            continue;
        }
        let item = group[0].0;
        if on(Source::Similar) {
            personal.push(item);
        }
        offers.push((item, Source::Similar, mean_half_up(weighted, levels)));
    }
    personal.sort_unstable();
    personal.dedup();
    let cold_start = personal.len() < k;
    for segment in segments {
        if cold_start {
            for ((source, items), _) in lists.ranked.get(segment).into_iter().flatten() {
                offers.extend(items.iter().map(|(item, value)| (item, *source, *value)));
            }
        }
        if let Some(admitted) = lists.admitted.get(segment) {
            for item in &personal {
                if admitted.binary_search_by(|(a, _)| a.cmp(item)).is_ok() {
                    offers.push((item, Source::Segment, 10_000));
                }
            }
        }
    }
    excluded.sort_unstable();
    (rank(offers, &excluded, weights, k), cold_start)
}

/// The `k` best candidates by blended score (then item), never an excluded one; the
/// reason is the source that contributed most.
fn rank(
    mut offers: Vec<(&ItemId, Source, i64)>,
    excluded: &[&ItemId],
    weights: &[i64; 5],
    k: usize,
) -> Vec<Rec> {
    offers.sort_unstable_by_key(|(item, _, _)| *item);
    // Ranked by reference; only the K kept are cloned.
    let mut ranked: Vec<(i64, &ItemId, Source)> = offers
        .chunk_by(|(a, _, _), (b, _, _)| a == b)
        .filter(|group| excluded.binary_search(&group[0].0).is_err())
        .filter_map(|group| {
            // Each source's best offer for the item (an offer below 0 counts as none).
            let mut by_source = [0i64; 5];
            for (_, source, value) in group {
                let slot = &mut by_source[*source as usize];
                *slot = (*slot).max(*value);
            }
            let mut total = 0;
            let mut best = (0, Source::Similar);
            for source in Source::ALL {
                let part = weights[source as usize] * by_source[source as usize];
                total += part;
                if part > best.0 {
                    best = (part, source);
                }
            }
            (total > 0).then_some(((total + 500) / 1_000, group[0].0, best.1))
        })
        .collect();
    // Best first; items are distinct, so the order is total.
    keep_best(&mut ranked, k, |a, b| {
        b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
    });
    ranked
        .into_iter()
        .map(|(score, item, reason)| Rec {
            item: item.clone(),
            score,
            reason,
        })
        .collect()
}
