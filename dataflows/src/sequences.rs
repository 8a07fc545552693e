//! Sequences within sessions (seed 3b): `transitions` (Markov chain counts and
//! probabilities over page types and over items), `next` (the most likely next steps from
//! each position), `paths` (the last steps before each purchase) and `funnel`.
//!
//! The sessions are the `sessions` view's: the events of the window, grouped by client
//! session id, or split at inactivity gaps. Each session's ordered events give *facts*
//! (each transition, each purchase path, the funnel depth), with multiplicities, kept per
//! (user, client session) by [`crate::by_session`] with [`StepScan`]; the views are sums of
//! facts over all sessions. An event changes only its own session's facts, and one
//! appended in order only the facts it adds and the session's funnel depth.

use crate::Time;
use crate::features::mean_half_up;
use crate::in_place;
use crate::model::{Event, EventKind, ItemId, Millis};
use crate::name::Name;
use crate::params::ViewParams;
use crate::shared;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::collections::VecDeque;

/// The sequence settings (`[sequences]`).
#[derive(Clone, Debug, PartialEq)]
pub struct SequenceParams {
    /// Entries per `next` row.
    pub next_k: usize,
    /// Steps per purchase path, the purchase included.
    pub path_length: usize,
    /// The funnel's steps, in order (page types, or `purchase`).
    pub funnel: Vec<Name>,
}

impl Default for SequenceParams {
    fn default() -> Self {
        SequenceParams {
            next_k: 5,
            path_length: 4,
            funnel: ["home", "category", "product", "cart", "purchase"]
                .map(Name::new)
                .to_vec(),
        }
    }
}

/// The page step a purchase makes, whatever its page.
pub const PURCHASE_STEP: &str = "purchase";

/// What the sequence views need of one event. The derived order is the order of steps
/// within a session: by time, then page step, then item (absent first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct StepEvent {
    pub ts: Millis,
    /// `purchase` for a purchase; the page type of a `page_view`; else none.
    pub page: Option<Name>,
    pub item: Option<ItemId>,
}

impl StepEvent {
    pub fn of(event: &Event) -> Self {
        let page = match event.kind {
            EventKind::Purchase => Some(Name::new(PURCHASE_STEP)),
            EventKind::PageView => event.page.clone().filter(|page| !page.is_empty()),
            _ => None,
        };
        StepEvent {
            ts: event.ts,
            page,
            item: event.item.clone(),
        }
    }
}

/// Which chain a transition belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum StepKind {
    Page,
    Item,
}

impl StepKind {
    pub fn as_str(self) -> &'static str {
        match self {
            StepKind::Page => "page",
            StepKind::Item => "item",
        }
    }
}

/// One thing a session contributes to the sequence views.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Fact {
    Transition(StepKind, Name, Name),
    Path(Vec<Name>),
    /// How many funnel steps the session reached, in order (one per session).
    FunnelDepth(usize),
}

/// A session's facts, folded in step order: each page step adds its transition (and a
/// purchase its path) as it comes, and so does each item step, so facts of events
/// appended to a session come without re-reading it. The funnel depth is the one fact
/// known only at the session's end ([`StepScan::depth_fact`]).
pub struct StepScan<'a> {
    params: &'a SequenceParams,
    last_page: Option<&'a Name>,
    last_item: Option<&'a Name>,
    /// The last `path_length - 1` page steps, oldest first: a purchase's path before it.
    recent_pages: VecDeque<&'a Name>,
    /// Funnel steps reached, in order.
    depth: usize,
}

impl<'a> StepScan<'a> {
    pub fn new(params: &'a SequenceParams) -> Self {
        StepScan {
            params,
            last_page: None,
            last_item: None,
            recent_pages: VecDeque::with_capacity(params.path_length),
            depth: 0,
        }
    }

    /// Folds in `count` copies of `event`, passing each fact it adds to `emit`. A page is a
    /// step per copy; an item is one step, and none when it repeats the previous item.
    pub fn step(&mut self, event: &'a StepEvent, count: usize, mut emit: impl FnMut(Fact)) {
        if let Some(page) = &event.page {
            for _ in 0..count {
                self.page(page, &mut emit);
            }
        }
        if let Some(item) = &event.item
            && self.last_item != Some(&item.0)
        {
            if let Some(previous) = self.last_item {
                emit(Fact::Transition(
                    StepKind::Item,
                    previous.clone(),
                    item.0.clone(),
                ));
            }
            self.last_item = Some(&item.0);
        }
    }

    fn page(&mut self, page: &'a Name, emit: &mut impl FnMut(Fact)) {
        if let Some(previous) = self.last_page {
            emit(Fact::Transition(
                StepKind::Page,
                previous.clone(),
                page.clone(),
            ));
        }
        self.last_page = Some(page);
        let length = self.params.path_length;
        if page == PURCHASE_STEP && length > 0 {
            let path = self.recent_pages.iter().map(|step| (*step).clone());
            emit(Fact::Path(path.chain([page.clone()]).collect()));
        }
        if self.params.funnel.get(self.depth) == Some(page) {
            self.depth += 1;
        }
        if length > 1 {
            if self.recent_pages.len() == length - 1 {
                self.recent_pages.pop_front();
            }
            self.recent_pages.push_back(page);
        }
    }

    /// How far the session got down the funnel, so far.
    pub fn depth_fact(&self) -> Fact {
        Fact::FunnelDepth(self.depth)
    }
}

/// What the per-origin operator emits: a transition row per destination, and the origin's
/// `next` list.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum OriginRow {
    To(Name, u64, i64),
    Next(NextSteps),
}

/// The four views' collections.
pub struct Sequences<'s> {
    /// ((kind, from, to), (count, p in ten-thousandths))
    pub transitions: VecCollection<'s, Time, (Transition, (u64, i64))>,
    /// ((kind, from), [(to, p)]) best first
    pub next: VecCollection<'s, Time, ((StepKind, Name), NextSteps)>,
    pub paths: VecCollection<'s, Time, (Vec<Name>, u64)>,
    pub funnel: VecCollection<'s, Time, FunnelStep>,
}

/// Applies `updates` (destinations with count changes, sorted) to an origin's `input`
/// (destinations with counts, sorted) and pushes what changed in its rows. A destination's
/// `p` is its share of the origin's total, so any count change can move every sibling's
/// `p`; rather than rebuild and compare all rows (the reduce's way, a clone per row per
/// change), one merge walk compares each destination's (count, p) before and after and
/// emits only those that moved, and `next` only if its list did.
fn origin_changes(
    input: &mut Vec<(Name, isize)>,
    updates: &[(Name, isize)],
    next_k: usize,
    changes: &mut Vec<(OriginRow, isize)>,
) {
    let old_total: i64 = input.iter().map(|(_, count)| *count as i64).sum();
    let new_total = old_total + updates.iter().map(|(_, diff)| *diff as i64).sum::<i64>();
    let share = |count: isize, total: i64| mean_half_up(10_000 * count as i64, total);
    let old_next = (!input.is_empty()).then(|| next_steps(input, next_k, old_total));
    let mut kept = input.iter().peekable();
    let mut row = |to: &Name, old: isize, new: isize| {
        let before = (old != 0).then(|| (old as u64, share(old, old_total)));
        let after = (new != 0).then(|| (new as u64, share(new, new_total)));
        if before != after {
            let rows = [(before, -1), (after, 1)];
            for (count_p, diff) in rows {
                if let Some((count, p)) = count_p {
                    changes.push((OriginRow::To(to.clone(), count, p), diff));
                }
            }
        }
    };
    for (to, diff) in updates {
        // Destinations the updates skip keep their count; only their share can move.
        while let Some((other, count)) = kept.next_if(|(other, _)| other < to) {
            row(other, *count, *count);
        }
        let old = kept
            .next_if(|(other, _)| other == to)
            .map_or(0, |(_, count)| *count);
        row(to, old, old + diff);
    }
    for (other, count) in kept {
        row(other, *count, *count);
    }
    in_place::apply(input, in_place::by_ref(updates));
    let new_next = (!input.is_empty()).then(|| next_steps(input, next_k, new_total));
    if old_next != new_next {
        changes.extend(old_next.map(|next| (OriginRow::Next(next), -1)));
        changes.extend(new_next.map(|next| (OriginRow::Next(next), 1)));
    }
}

/// The `next_k` most frequent destinations (ties by name) with their shares of `total`.
fn next_steps(input: &[(Name, isize)], next_k: usize, total: i64) -> NextSteps {
    let mut ranked: Vec<(isize, &Name)> = input.iter().map(|(to, count)| (*count, to)).collect();
    let order = |a: &(isize, &Name), b: &(isize, &Name)| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1));
    if ranked.len() > next_k && next_k > 0 {
        ranked.select_nth_unstable_by(next_k - 1, order);
    }
    ranked.truncate(next_k);
    ranked.sort_unstable_by(order);
    ranked
        .into_iter()
        .map(|(count, to)| (to.clone(), mean_half_up(10_000 * count as i64, total)))
        .collect()
}

pub type Transition = (StepKind, Name, Name);
pub type NextSteps = Vec<(Name, i64)>;

/// One funnel row: position (1-based), step, sessions that reached it, and the rate
/// against the previous step (or against all sessions, for the first).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FunnelStep {
    pub position: usize,
    pub step: Name,
    pub reached: u64,
    pub rate: i64,
}

/// Maintains the sequence views over the facts of the window's sessions (see
/// [`crate::by_session`]).
pub fn sequences<'s>(facts: VecCollection<'s, Time, Fact>, params: &ViewParams) -> Sequences<'s> {
    let sequence = params.sequences.clone();

    // One in-place operator per origin gives both its transitions and its `next` list.
    let next_k = sequence.next_k;
    let transition_facts = facts.clone().flat_map(|fact| match fact {
        Fact::Transition(kind, from, to) => Some(((kind, from), to)),
        _ => None,
    });
    let per_origin = in_place::update_in_place(
        transition_facts,
        "Transitions",
        move |_origin, input, updates, changes| {
            origin_changes(input, updates, next_k, changes);
        },
    );
    let transitions = per_origin
        .clone()
        .flat_map(|((kind, from), row)| match row {
            OriginRow::To(to, count, p) => Some(((kind, from, to), (count, p))),
            OriginRow::Next(_) => None,
        });
    let next = per_origin.flat_map(|(origin, row)| match row {
        OriginRow::Next(next) => Some((origin, next)),
        OriginRow::To(..) => None,
    });
    let paths = in_place::total(
        facts.clone().flat_map(|fact| match fact {
            Fact::Path(path) => Some(path),
            _ => None,
        }),
        "Paths",
        |path: &Vec<Name>, count| Some((path.clone(), *count as u64)),
    );
    let funnel_steps = sequence.funnel.clone();
    let funnel = shared::reduce_then(
        facts.flat_map(|fact| match fact {
            Fact::FunnelDepth(depth) => Some(((), depth)),
            _ => None,
        }),
        "Funnel",
        move |(), input, output| {
            let sessions: isize = input.iter().map(|(_, count)| *count).sum();
            let mut previous = sessions as i64;
            for (index, step) in funnel_steps.iter().enumerate() {
                let reached: isize = input
                    .iter()
                    .filter(|(depth, _)| **depth > index)
                    .map(|(_, count)| *count)
                    .sum();
                let reached = reached as i64;
                let row = FunnelStep {
                    position: index + 1,
                    step: step.clone(),
                    reached: reached as u64,
                    rate: mean_half_up(10_000 * reached, previous),
                };
                output.push((row, 1));
                previous = reached;
            }
        },
        |(), row| Some(row.clone()),
    );
    Sequences {
        transitions,
        next,
        paths,
        funnel,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_place::tests::{Compared, assert_same_changes};
    use std::collections::BTreeMap;

    fn event(ts: Millis, page: Option<&str>, item: Option<&str>) -> StepEvent {
        StepEvent {
            ts,
            page: page.map(Name::new),
            item: item.map(ItemId::new),
        }
    }

    /// The per-origin rows as differential's `reduce` computes them, rebuilt whole at every
    /// change: what [`origin_changes`] must match time by time.
    fn origin_rows(input: &[(&Name, isize)], next_k: usize, output: &mut Vec<(OriginRow, isize)>) {
        let total = input.iter().map(|(_, count)| *count as i64).sum();
        let p = |count: isize| mean_half_up(10_000 * count as i64, total);
        for (to, count) in input {
            output.push((OriginRow::To((*to).clone(), *count as u64, p(*count)), 1));
        }
        let mut ranked: Vec<(isize, &Name)> =
            input.iter().map(|(to, count)| (*count, *to)).collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1)));
        let next = ranked
            .into_iter()
            .take(next_k)
            .map(|(count, to)| (to.clone(), p(count)))
            .collect();
        output.push((OriginRow::Next(next), 1));
    }

    /// Origins and destinations as names, and each row back as numbers the shared harness
    /// compares: a destination row as (destination, count and p), `next` as a digest.
    fn per_origin_pair(collection: VecCollection<'_, Time, (u32, u32)>) -> Compared<'_> {
        const NEXT_K: usize = 3;
        let named =
            collection.map(|(from, to)| (Name::new(&from.to_string()), Name::new(&to.to_string())));
        let ours =
            in_place::update_in_place(named.clone(), "InPlace", |_, input, updates, changes| {
                origin_changes(input, updates, NEXT_K, changes)
            });
        let theirs = named.reduce(|_, input, output| origin_rows(input, NEXT_K, output));
        let number = |name: &Name| name.as_str().parse::<u32>().unwrap();
        [ours, theirs].map(|rows| {
            rows.map(move |(from, row)| {
                let value = match row {
                    OriginRow::To(to, count, p) => {
                        (number(&to), count as isize * 100_000 + p as isize)
                    }
                    OriginRow::Next(next) => {
                        let digest = next.iter().fold(0isize, |digest, (to, p)| {
                            digest
                                .wrapping_mul(1_000_003)
                                .wrapping_add(number(to) as isize * 100_000 + *p as isize)
                        });
                        (u32::MAX, digest)
                    }
                };
                (number(&from), value)
            })
        })
    }

    #[test]
    fn origin_changes_match_a_rebuilt_reduce_time_by_time() {
        assert_same_changes(per_origin_pair);
    }

    #[test]
    fn a_session_gives_its_transitions_path_and_funnel_depth() {
        let events = [
            event(1, Some("home"), None),
            event(2, Some("product"), Some("p1")),
            event(3, None, Some("p1")),
            event(4, Some("cart"), Some("p2")),
            event(5, Some("purchase"), Some("p2")),
        ];
        let params = SequenceParams {
            path_length: 3,
            ..Default::default()
        };
        let mut scan = StepScan::new(&params);
        let mut facts: BTreeMap<Fact, isize> = BTreeMap::new();
        for event in &events {
            scan.step(event, 1, |fact| *facts.entry(fact).or_default() += 1);
        }
        *facts.entry(scan.depth_fact()).or_default() += 1;
        let item = |a: &str, b: &str| Fact::Transition(StepKind::Item, Name::new(a), Name::new(b));
        assert_eq!(
            facts.get(&item("p1", "p2")),
            Some(&1),
            "a repeated item is one step"
        );
        let path = Fact::Path(["product", "cart", "purchase"].map(Name::new).to_vec());
        assert_eq!(facts.get(&path), Some(&1));
        // home, (category missing): the funnel stops after its first step.
        assert_eq!(facts.get(&Fact::FunnelDepth(1)), Some(&1));
        let transition =
            |a: &str, b: &str| Fact::Transition(StepKind::Page, Name::new(a), Name::new(b));
        assert_eq!(facts.get(&transition("home", "product")), Some(&1));
        assert_eq!(facts.get(&transition("cart", "purchase")), Some(&1));
        assert_eq!(facts.len(), 3 + 1 + 1 + 1, "{facts:?}");
    }

    #[test]
    fn repeated_pages_are_steps_and_paths_keep_the_last_pages() {
        let params = SequenceParams {
            path_length: 2,
            ..Default::default()
        };
        let (home, purchase) = (
            event(1, Some("home"), None),
            event(2, Some("purchase"), None),
        );
        let mut scan = StepScan::new(&params);
        let mut facts: BTreeMap<Fact, isize> = BTreeMap::new();
        let mut add = |fact| *facts.entry(fact).or_default() += 1;
        scan.step(&home, 2, &mut add);
        scan.step(&purchase, 2, &mut add);
        let page = |a: &str, b: &str| Fact::Transition(StepKind::Page, Name::new(a), Name::new(b));
        assert_eq!(facts.get(&page("home", "home")), Some(&1));
        assert_eq!(facts.get(&page("home", "purchase")), Some(&1));
        assert_eq!(facts.get(&page("purchase", "purchase")), Some(&1));
        let path = |steps: [&str; 2]| Fact::Path(steps.map(Name::new).to_vec());
        assert_eq!(facts.get(&path(["home", "purchase"])), Some(&1));
        assert_eq!(facts.get(&path(["purchase", "purchase"])), Some(&1));
        assert_eq!(scan.depth_fact(), Fact::FunnelDepth(1));
    }
}
