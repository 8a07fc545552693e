//! Event-time windows as scheduled retractions (DESIGN.md §3).
//!
//! A record that enters at time `t` is retracted at `t + span`: the record passes through
//! at once and its retraction is scheduled for the future, so a contribution leaves
//! exactly when it should, without any timer or wall-clock "now", and every downstream
//! operator only holds the window's state.
//!
//! Retractions wait here, in a map by time, until the input frontier reaches their time.
//! Handing them downstream right away would also be correct, but an arrangement's batcher
//! re-sorts every pending future update each time it seals a batch, which makes a long
//! window cost a pass over the whole window per tick.

use crate::Time;
use crate::model::Millis;
use differential_dataflow::difference::Abelian;
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::BTreeMap;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;

/// Keeps each record of `collection` for `span` milliseconds of event time.
pub fn sliding<'s, D, R>(
    collection: VecCollection<'s, Time, D, R>,
    span: Millis,
) -> VecCollection<'s, Time, D, R>
where
    D: Clone + 'static,
    R: Abelian + Clone + 'static,
{
    // Scheduled retractions by due time, and one capability at the earliest of them: a
    // message may carry records at any time not before its capability's.
    let mut scheduled: BTreeMap<Time, Vec<(D, R)>> = BTreeMap::new();
    let mut held: Option<Capability<Time>> = None;
    collection
        .inner
        .unary_frontier(Pipeline, "Sliding", move |_, _| {
            move |(input, frontier), output| {
                input.for_each(|capability, data| {
                    let mut session = output.session(&capability);
                    for (record, time, diff) in data.drain(..) {
                        let due = time.saturating_add(span);
                        let mut retraction = diff.clone();
                        retraction.negate();
                        scheduled
                            .entry(due)
                            .or_default()
                            .push((record.clone(), retraction));
                        session.give((record, time, diff));
                    }
                    let earliest = scheduled.keys().next().copied();
                    if let Some(earliest) = earliest
                        && held.as_ref().is_none_or(|held| *held.time() > earliest)
                    {
                        held = Some(capability.delayed(&earliest, 0));
                    }
                });
                // Release what the frontier has reached; keep a capability for the rest.
                let Some(capability) = held.take() else {
                    return;
                };
                let reached = |time: &Time| !frontier.frontier().less_than(time);
                let mut session = output.session(&capability);
                while let Some(entry) = scheduled.first_entry() {
                    if !reached(entry.key()) {
                        break;
                    }
                    let (due, records) = entry.remove_entry();
                    session.give_iterator(
                        records
                            .into_iter()
                            .map(|(record, retraction)| (record, due, retraction)),
                    );
                }
                drop(session);
                held = scheduled
                    .keys()
                    .next()
                    .map(|earliest| capability.delayed(earliest));
            }
        })
        .as_collection()
}

/// Applies each change of `collection` at the next multiple of `every` (ms) at or after
/// its time, so a view derived from it changes at most once per period, after many
/// changes have consolidated. At time `now` it shows the input as of
/// `⌊now / every⌋ · every`. `every` = 1 changes nothing.
pub fn refreshed<'s, D, R>(
    collection: VecCollection<'s, Time, D, R>,
    every: Millis,
) -> VecCollection<'s, Time, D, R>
where
    D: Clone + 'static,
    R: Abelian + Clone + 'static,
{
    if every <= 1 {
        return collection;
    }
    collection.delay(move |time| time.div_ceil(every).saturating_mul(every))
}
