//! Sequences within sessions (seed 3b): `transitions` (Markov chain counts and
//! probabilities over page types and over items), `next` (the most likely next steps from
//! each position), `paths` (the last steps before each purchase) and `funnel`.
//!
//! The sessions are the `sessions` view's: the events of the window, grouped by client
//! session id, or split at inactivity gaps. One reduce per (user, client session) turns a
//! session's ordered events into *facts* (each transition, each purchase path, the funnel
//! depth), with multiplicities; the views are sums of facts over all sessions. An event
//! changes only its own session's facts, so the work per event is one session's length.

use crate::Time;
use crate::features::mean_half_up;
use crate::in_place;
use crate::model::{Event, EventKind, ItemId, Millis, SessionId, UserId};
use crate::name::Name;
use crate::params::ViewParams;
use crate::sessions::{SessionWindow, split_runs};
use crate::shared;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

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
enum Fact {
    Transition(StepKind, Name, Name),
    Path(Vec<Name>),
    /// How many funnel steps the session reached, in order (one per session).
    FunnelDepth(usize),
}

/// A session's steps, from its events in order (each with its multiplicity).
struct Steps {
    pages: Vec<Name>,
    items: Vec<Name>,
}

impl Steps {
    fn of<'a>(events: impl Iterator<Item = (&'a StepEvent, usize)>) -> Self {
        let mut steps = Steps {
            pages: Vec::new(),
            items: Vec::new(),
        };
        for (event, count) in events {
            for _ in 0..count {
                if let Some(page) = &event.page {
                    steps.pages.push(page.clone());
                }
            }
            // Repeats of one item in a row are one step.
            if let Some(item) = &event.item
                && steps.items.last() != Some(&item.0)
            {
                steps.items.push(item.0.clone());
            }
        }
        steps
    }

    fn facts(&self, params: &SequenceParams, into: &mut BTreeMap<Fact, isize>) {
        for (kind, chain) in [(StepKind::Page, &self.pages), (StepKind::Item, &self.items)] {
            for pair in chain.windows(2) {
                let fact = Fact::Transition(kind, pair[0].clone(), pair[1].clone());
                *into.entry(fact).or_default() += 1;
            }
        }
        for (end, step) in self.pages.iter().enumerate() {
            if step == PURCHASE_STEP {
                let start = (end + 1).saturating_sub(params.path_length);
                let path = self.pages[start..=end].to_vec();
                *into.entry(Fact::Path(path)).or_default() += 1;
            }
        }
        let mut depth = 0;
        for step in &self.pages {
            if params.funnel.get(depth) == Some(step) {
                depth += 1;
            }
        }
        *into.entry(Fact::FunnelDepth(depth)).or_default() += 1;
    }
}

/// What the per-origin reduce emits: a transition row per destination, and the origin's
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

/// Maintains the sequence views over the events of the window.
pub fn sequences<'s>(window: SessionWindow<'s>, params: &ViewParams) -> Sequences<'s> {
    let gap_ms = params.sessions.inactivity_gap_ms;
    let sequence = params.sequences.clone();
    let settings = sequence.clone();
    // Each fact's readers take it straight from the reduce's output batches.
    let facts = shared::reduce_arranged(
        window,
        "SessionSteps",
        move |(_user, client_session): &(UserId, Option<SessionId>),
              input,
              output: &mut Vec<(Fact, isize)>| {
            // `input` is sorted by value, i.e. in step order, with positive counts (an
            // event's other fields only split equal steps into neighbouring entries).
            let mut facts = BTreeMap::new();
            let sessions = match client_session {
                Some(_) => vec![input],
                None => split_runs(input, |(event, _)| event.step.ts, gap_ms),
            };
            for session in sessions {
                let events = session
                    .iter()
                    .map(|(event, count)| (&event.step, *count as usize));
                Steps::of(events).facts(&settings, &mut facts);
            }
            output.extend(facts);
        },
    );

    // One reduce per origin gives both its transitions and its `next` list.
    let next_k = sequence.next_k;
    let transition_facts = facts.clone().flat_map_ref(|_session, fact| match fact {
        Fact::Transition(kind, from, to) => Some(((*kind, from.clone()), to.clone())),
        _ => None,
    });
    let per_origin = shared::reduce_arranged(
        shared::by_key(transition_facts, "Transitions"),
        "Transitions",
        move |_origin, input, output| {
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
        },
    );
    let transitions = per_origin
        .clone()
        .flat_map_ref(|(kind, from), row| match row {
            OriginRow::To(to, count, p) => Some(((*kind, from.clone(), to.clone()), (*count, *p))),
            OriginRow::Next(_) => None,
        });
    let next = per_origin.flat_map_ref(|origin, row| match row {
        OriginRow::Next(next) => Some((origin.clone(), next.clone())),
        OriginRow::To(..) => None,
    });
    let paths = in_place::total(
        facts.clone().flat_map_ref(|_session, fact| match fact {
            Fact::Path(path) => Some(path.clone()),
            _ => None,
        }),
        "Paths",
        |path: &Vec<Name>, count| Some((path.clone(), *count as u64)),
    );
    let funnel_steps = sequence.funnel.clone();
    let funnel = shared::reduce_then(
        facts.flat_map_ref(|_session, fact| match fact {
            Fact::FunnelDepth(depth) => Some(((), *depth)),
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

    fn event(ts: Millis, page: Option<&str>, item: Option<&str>) -> StepEvent {
        StepEvent {
            ts,
            page: page.map(Name::new),
            item: item.map(ItemId::new),
        }
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
        let steps = Steps::of(events.iter().map(|e| (e, 1)));
        assert_eq!(steps.items, ["p1", "p2"]);
        let mut facts = BTreeMap::new();
        let params = SequenceParams {
            path_length: 3,
            ..Default::default()
        };
        steps.facts(&params, &mut facts);
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
}
