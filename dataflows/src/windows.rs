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
use crate::stash::Stash;
use crate::state_log::StateLog;
use differential_dataflow::difference::{Abelian, Semigroup};
use differential_dataflow::{AsCollection, VecCollection};
use std::collections::BTreeMap;
use std::collections::btree_map::Entry;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::Capability;
use timely::dataflow::operators::generic::operator::Operator;

/// Keeps, for `span` milliseconds of event time, the records `logic` makes of each update
/// of `collection` (given its record, time and difference).
///
/// The mapping is part of the window (every caller derives its records from events)
/// rather than a `flat_map` in front of it: every operator costs each step a share of
/// timely's progress tracking, whether data passes or not, which at light load is a large
/// part of an event's latency.
pub fn sliding_with<'s, I, R0, D, R, L, It>(
    collection: VecCollection<'s, Time, I, R0>,
    span: Millis,
    mut logic: L,
) -> VecCollection<'s, Time, D, R>
where
    I: Clone + 'static,
    R0: Semigroup + 'static,
    D: Clone + 'static,
    R: Abelian + Clone + 'static,
    L: FnMut(I, Time, R0) -> It + 'static,
    It: IntoIterator<Item = (D, R)>,
{
    // Scheduled retractions by due time: a message may carry records at any time not
    // before its capability's.
    let mut scheduled: Stash<(D, R)> = Stash::default();
    let scope = collection.inner.scope();
    collection
        .inner
        .unary_frontier(Pipeline, "Sliding", move |_, info| {
            let mut state_log = StateLog::new(scope, &info);
            move |(input, frontier), output| {
                input.for_each(|capability, data| {
                    let mut session = output.session(&capability);
                    for (input, time, input_diff) in data.drain(..) {
                        for (record, diff) in logic(input, time, input_diff) {
                            let mut retraction = diff.clone();
                            retraction.negate();
                            scheduled
                                .at(time.saturating_add(span))
                                .push((record.clone(), retraction));
                            session.give((record, time, diff));
                        }
                    }
                    drop(session);
                    scheduled.hold(&capability);
                });
                // Release what the frontier has reached.
                let frontier = frontier.frontier();
                let mut due_now = Vec::new();
                let released = scheduled.release(
                    |time| !frontier.less_than(time),
                    |due, records| {
                        due_now.extend(
                            records
                                .into_iter()
                                .map(|(record, retraction)| (record, due, retraction)),
                        );
                    },
                );
                // Every due time's retractions in one session (see `Stash::release`).
                if let Some(capability) = released
                    && !due_now.is_empty()
                {
                    output.session(&capability).give_iterator(due_now.drain(..));
                }
                state_log.report(|| scheduled.len());
            }
        })
        .as_collection()
}

/// Passes on each update of `collection` when its time comes: one at the input frontier at
/// once, one computed for a later time (an expiry scheduled when a row appears) once the
/// input frontier reaches it. Handed on early, a future update waits in the next
/// arrangement's batcher, which re-sorts everything pending at every step (the cost of a
/// step grows with the state); here it waits in a map by (time, record), where an update
/// and its cancellation (the expiry withdrawn when the row is replaced) meet and vanish.
pub fn deferred<'s, D, R>(
    collection: VecCollection<'s, Time, D, R>,
) -> VecCollection<'s, Time, D, R>
where
    D: Ord + Clone + 'static,
    R: Semigroup + Clone + 'static,
{
    let mut waiting: BTreeMap<(Time, D), R> = BTreeMap::new();
    // A capability at the earliest waiting time, if any.
    let mut held: Option<Capability<Time>> = None;
    let scope = collection.inner.scope();
    collection
        .inner
        .unary_frontier(Pipeline, "Deferred", move |_, info| {
            let mut state_log = StateLog::new(scope, &info);
            move |(input, frontier), output| {
                // Nothing can still arrive before the frontier: an update at it is due.
                let due = frontier.frontier().first().copied();
                input.for_each(|capability, data| {
                    let mut session = output.session(&capability);
                    for (record, time, diff) in data.drain(..) {
                        if Some(time) == due {
                            session.give((record, time, diff));
                            continue;
                        }
                        match waiting.entry((time, record)) {
                            Entry::Vacant(entry) => {
                                entry.insert(diff);
                            }
                            Entry::Occupied(mut entry) => {
                                entry.get_mut().plus_equals(&diff);
                                if entry.get().is_zero() {
                                    entry.remove();
                                }
                            }
                        }
                    }
                    drop(session);
                    if let Some(((earliest, _), _)) = waiting.first_key_value()
                        && held.as_ref().is_none_or(|held| held.time() > earliest)
                    {
                        held = Some(capability.delayed(earliest, 0));
                    }
                });
                if let Some(capability) = held.take() {
                    let frontier = frontier.frontier();
                    let mut session = output.session(&capability);
                    while let Some(entry) = waiting.first_entry() {
                        if frontier.less_than(&entry.key().0) {
                            break;
                        }
                        let ((time, record), diff) = entry.remove_entry();
                        session.give((record, time, diff));
                    }
                    drop(session);
                    held = waiting
                        .first_key_value()
                        .map(|((earliest, _), _)| capability.delayed(earliest));
                }
                state_log.report(|| waiting.len());
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_place::tests::{Compared, assert_same_changes};

    /// The input as is, and through `deferred`: the same changes at the same times, with
    /// updates at future times and their cancellations among them.
    fn deferred_pair(collection: VecCollection<'_, Time, (u32, u32)>) -> Compared<'_> {
        let numbered = collection.map(|(key, value)| (key, (value, 1)));
        [deferred(numbered.clone()), numbered]
    }

    #[test]
    fn deferred_changes_nothing_but_when_updates_travel() {
        assert_same_changes(deferred_pair);
    }
}
