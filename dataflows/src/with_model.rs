//! [`with_model`]: a keyed collection mapped through the current model, which every
//! worker holds.
//!
//! A model collection holds one record (replaced on refit), and applying it to every key
//! is a join with a one-record side. As a differential join, the model had to be
//! replicated over shard keys so that every worker scored its own keys, and both sides
//! were arranged: each key's value was kept with its history, and each update moved
//! through a batcher and a merge before the join read it. Here the model is broadcast,
//! each key's current value is kept in place (a refit re-applies the model to all of
//! them), and an update is mapped as soon as its time is complete.
//!
//! The output is the join's, consolidated per time: for each value update `(k, v, d)` and
//! model `m` with count `c`, `logic(k, v, m)` with `d · c`, and for each model update the
//! same with every current value.

use crate::Time;
use crate::in_place::{apply, apply_keyed, by_ref};
use crate::models::SharedModel;
use crate::stash::Stash;
use crate::state_log::StateLog;
use differential_dataflow::{AsCollection, Data, ExchangeData, Hashable, VecCollection};
use std::collections::HashMap;
use std::hash::Hash;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast;

/// An update waiting for its time to complete. Model updates sort after value updates.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Pending<K, V> {
    Value(K, V),
    Model(SharedModel),
}

/// Maps each `(key, value)` of `collection` through `logic` with each current model of
/// `models` (normally one); `None` is no output. See the module docs.
pub fn with_model<'s, K, V, O, L>(
    collection: VecCollection<'s, Time, (K, V)>,
    models: VecCollection<'s, Time, SharedModel>,
    name: &str,
    mut logic: L,
) -> VecCollection<'s, Time, (K, O)>
where
    K: ExchangeData + Hashable + Hash,
    V: ExchangeData,
    O: Data,
    L: FnMut(&K, &V, &SharedModel) -> Option<O> + 'static,
{
    let mut pending: Stash<(Pending<K, V>, isize)> = Stash::default();
    // Each key's current values (normally one), sorted and consolidated.
    let mut values: HashMap<K, Vec<(V, isize)>> = HashMap::new();
    // The current models, sorted and consolidated.
    let mut current: Vec<(SharedModel, isize)> = Vec::new();
    let exchange = Exchange::new(|update: &((K, V), Time, isize)| update.0.0.hashed().into());
    let scope = collection.inner.scope();
    collection
        .inner
        .binary_frontier(
            models.inner.broadcast(),
            exchange,
            Pipeline,
            name,
            move |_, info| {
                let mut state_log = StateLog::new(scope, &info);
                let mut changes: Vec<((K, O), isize)> = Vec::new();
                move |(input, input_frontier), (models, models_frontier), output| {
                    input.for_each(|capability, data| {
                        pending.take_with(&capability, data, |(key, value)| {
                            Pending::Value(key, value)
                        });
                    });
                    models.for_each(|capability, data| {
                        pending.take_with(&capability, data, Pending::Model);
                    });
                    pending.release(
                        |time| {
                            !input_frontier.less_equal(time) && !models_frontier.less_equal(time)
                        },
                        |capability, time, mut updates| {
                            differential_dataflow::consolidation::consolidate(&mut updates);
                            let split = updates.partition_point(|(update, _)| {
                                matches!(update, Pending::Value(..))
                            });
                            // Model changes first, against the values before this time...
                            let mut model_updates = Vec::new();
                            for (update, diff) in updates.drain(split..) {
                                let Pending::Model(model) = update else {
                                    unreachable!("value updates sort before model updates");
                                };
                                for (key, list) in &values {
                                    for (value, count) in list {
                                        if let Some(out) = logic(key, value, &model) {
                                            changes.push(((key.clone(), out), count * diff));
                                        }
                                    }
                                }
                                model_updates.push((model, diff));
                            }
                            apply(&mut current, by_ref(&model_updates));
                            // ...then value changes, against the models after it.
                            let mut rest = &updates[..];
                            while let Some((Pending::Value(key, _), _)) = rest.first() {
                                let len = rest
                                    .iter()
                                    .take_while(|(update, _)| {
                                        matches!(update, Pending::Value(k, _) if k == key)
                                    })
                                    .count();
                                let (group, tail) = rest.split_at(len);
                                rest = tail;
                                let group: Vec<(&V, isize)> = group
                                    .iter()
                                    .filter_map(|(update, diff)| match update {
                                        Pending::Value(_, value) => Some((value, *diff)),
                                        Pending::Model(_) => None,
                                    })
                                    .collect();
                                for (value, diff) in &group {
                                    for (model, count) in &current {
                                        if let Some(out) = logic(key, value, model) {
                                            changes.push(((key.clone(), out), diff * count));
                                        }
                                    }
                                }
                                apply_keyed(&mut values, key.clone(), group.into_iter());
                            }
                            differential_dataflow::consolidation::consolidate(&mut changes);
                            if !changes.is_empty() {
                                // At the held capability (see `in_place::update_in_place`).
                                output.session(capability).give_iterator(
                                    changes.drain(..).map(|(record, diff)| (record, time, diff)),
                                );
                            }
                        },
                    );
                    state_log.report(|| {
                        let kept: usize = values.values().map(Vec::len).sum();
                        kept + current.len() + pending.len()
                    });
                }
            },
        )
        .as_collection()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::in_place::tests::{Compared, assert_same_changes};

    /// Keys below 6 are values; the others insert and retract models (`m0`..`m2`), so
    /// models change while values do, and at times two are live. The logic drops some
    /// pairs and maps others to the same record.
    fn mapped(collection: VecCollection<'_, Time, (u32, u32)>) -> Compared<'_> {
        let values = collection.clone().filter(|(key, _)| *key < 6);
        let models = collection
            .filter(|(key, _)| *key >= 6)
            .map(|(_, value)| SharedModel::new(&format!("m{}", value % 3)));
        fn logic(key: &u32, value: &u32, model: &SharedModel) -> Option<(u32, isize)> {
            let digit = u32::from(model.json().as_bytes()[1] - b'0');
            ((key + value + digit) % 5 != 0).then_some((value / 2 + digit, digit as isize))
        }
        [
            with_model(values.clone(), models.clone(), "WithModel", logic),
            values
                .map(|pair| ((), pair))
                .join_map(models.map(|model| ((), model)), |_, (key, value), model| {
                    (*key, logic(key, value, model))
                })
                .flat_map(|(key, out)| out.map(|out| (key, out))),
        ]
    }

    #[test]
    fn matches_a_differential_join_with_the_models_time_by_time() {
        assert_same_changes(mapped);
    }
}
