//! The `scores` view (seed 1a): weighted intent per (user, item),
//! `click*1 + add_to_cart*3 + purchase*5` by default.
//!
//! The weight moves into the difference component, so differential sums it in place: the
//! per-key state is one accumulated number, whatever the number of events.

use crate::Time;
use crate::model::{Event, ItemId, Score, UserId};
use crate::params::Weights;
use differential_dataflow::VecCollection;

/// Maintains the `scores` view: a row per (user, item) whose score is non-zero.
pub fn scores<'s>(
    events: VecCollection<'s, Time, Event>,
    weights: &Weights,
) -> VecCollection<'s, Time, ((UserId, ItemId), Score)> {
    let weights = weights.clone();
    events
        .explode(move |event| {
            let weight = weights.of(&event).0 as isize;
            let key = event.item.map(|item| (event.user, item));
            key.filter(|_| weight != 0).map(|key| (key, weight))
        })
        .count()
        .map(|(key, total)| (key, Score(total as i64)))
}
