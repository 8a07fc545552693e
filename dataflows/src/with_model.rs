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
use crate::keyed_shared::{KeyedSharedState, Update, by_key, keyed_with_shared, take_shared};
use crate::models::SharedModel;
use differential_dataflow::{Data, ExchangeData, Hashable, VecCollection};
use std::collections::HashMap;
use std::hash::Hash;

/// Maps each `(key, value)` of `collection` through `logic` with each current model of
/// `models` (normally one); `None` is no output. See the module docs.
pub fn with_model<'s, K, V, O, L>(
    collection: VecCollection<'s, Time, (K, V)>,
    models: VecCollection<'s, Time, SharedModel>,
    name: &str,
    logic: L,
) -> VecCollection<'s, Time, (K, O)>
where
    K: ExchangeData + Hashable + Hash,
    V: ExchangeData,
    O: Data,
    L: FnMut(&K, &V, &SharedModel) -> Option<O> + 'static,
{
    let state = ModelState {
        values: HashMap::new(),
        current: Vec::new(),
        logic,
    };
    keyed_with_shared(collection, models, name, state)
}

/// One worker's state of [`with_model`].
struct ModelState<K, V, L> {
    /// Each key's current values (normally one), sorted and consolidated.
    values: HashMap<K, Vec<(V, isize)>>,
    /// The current models, sorted and consolidated.
    current: Vec<(SharedModel, isize)>,
    logic: L,
}

impl<K, V, O, L> KeyedSharedState for ModelState<K, V, L>
where
    K: ExchangeData + Hashable + Hash,
    V: ExchangeData,
    O: Data,
    L: FnMut(&K, &V, &SharedModel) -> Option<O> + 'static,
{
    type Key = K;
    type Value = V;
    type Shared = SharedModel;
    type Out = (K, O);

    fn step(
        &mut self,
        mut updates: Vec<(Update<K, V, SharedModel>, isize)>,
        changes: &mut Vec<((K, O), isize)>,
    ) {
        let logic = &mut self.logic;
        // Model changes first, against the values before this time...
        let model_updates = take_shared(&mut updates);
        for (model, diff) in &model_updates {
            for (key, list) in &self.values {
                for (value, count) in list {
                    if let Some(out) = logic(key, value, model) {
                        changes.push(((key.clone(), out), count * diff));
                    }
                }
            }
        }
        apply(&mut self.current, by_ref(&model_updates));
        // ...then value changes, against the models after it.
        for (key, values) in by_key(&updates) {
            for (value, diff) in values.clone() {
                for (model, count) in &self.current {
                    if let Some(out) = logic(key, value, model) {
                        changes.push(((key.clone(), out), diff * count));
                    }
                }
            }
            apply_keyed(&mut self.values, key.clone(), values);
        }
        differential_dataflow::consolidation::consolidate(changes);
    }

    fn records(&self) -> usize {
        let kept: usize = self.values.values().map(Vec::len).sum();
        kept + self.current.len()
    }
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
