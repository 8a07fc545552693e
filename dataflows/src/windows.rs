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
use differential_dataflow::difference::Abelian;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::channels::pact::Pipeline;
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
    // Scheduled retractions by due time: a message may carry records at any time not
    // before its capability's.
    let mut scheduled: Stash<(D, R)> = Stash::default();
    collection
        .inner
        .unary_frontier(Pipeline, "Sliding", move |_, _| {
            move |(input, frontier), output| {
                input.for_each(|capability, data| {
                    let mut session = output.session(&capability);
                    for (record, time, diff) in data.drain(..) {
                        let mut retraction = diff.clone();
                        retraction.negate();
                        scheduled
                            .at(time.saturating_add(span))
                            .push((record.clone(), retraction));
                        session.give((record, time, diff));
                    }
                    drop(session);
                    scheduled.hold(&capability);
                });
                // Release what the frontier has reached.
                let frontier = frontier.frontier();
                scheduled.release(
                    |time| !frontier.less_than(time),
                    |capability, due, records| {
                        output.session(capability).give_iterator(
                            records
                                .into_iter()
                                .map(|(record, retraction)| (record, due, retraction)),
                        );
                    },
                );
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
