//! Event-time windows as scheduled retractions (DESIGN.md §3).
//!
//! A record that enters at time `t` is retracted at `t + span`, by emitting the retraction
//! up front with a future timestamp. Differential holds it until the frontier reaches that
//! time, so a contribution leaves exactly when it should, without any timer or wall-clock
//! "now", and the state of every downstream operator only covers the window.

use crate::Time;
use crate::model::Millis;
use differential_dataflow::difference::Abelian;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::Map;

/// Keeps each record of `collection` for `span` milliseconds of event time.
pub fn sliding<'s, D, R>(
    collection: VecCollection<'s, Time, D, R>,
    span: Millis,
) -> VecCollection<'s, Time, D, R>
where
    D: Clone + 'static,
    R: Abelian + Clone + 'static,
{
    collection
        .inner
        .flat_map(move |(data, time, diff)| {
            let mut retraction = diff.clone();
            retraction.negate();
            [
                (data.clone(), time, diff),
                (data, time.saturating_add(span), retraction),
            ]
        })
        .as_collection()
}
