//! [`keyed_with_shared`]: one operator that keeps a keyed collection's state in place,
//! sharded by key, and reads it against a shared collection every worker holds.
//!
//! Several views join many keys against something small that every key reads: the current
//! model ([`crate::with_model`]), the items' norms ([`crate::similar`]), the lists every
//! user's blend reads ([`crate::blend`]). As differential joins both sides are arranged and
//! a change of the small side moves every matching record through the join. Here the
//! shared side is broadcast, each worker keeps its keys' state as the view needs it, and a
//! time's updates are applied once the time is complete on both inputs.
//!
//! The mechanism lives here; what a view keeps and computes is its [`KeyedSharedState`].

use crate::Time;
use crate::stash::Stash;
use crate::state_log::StateLog;
use differential_dataflow::{AsCollection, Data, ExchangeData, Hashable, VecCollection};
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::operator::Operator;
use timely::dataflow::operators::vec::Broadcast;

/// An update of either input. Keyed updates sort before shared ones, and a key's updates
/// are adjacent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Update<K, V, S> {
    Keyed(K, V),
    Shared(S),
}

/// The keyed updates of one time's sorted `updates` (they come first, a key's adjacent),
/// a key at a time: the key, and its values with their differences.
pub fn by_key<K: Eq, V, S>(
    updates: &[(Update<K, V, S>, isize)],
) -> impl Iterator<Item = (&K, impl ExactSizeIterator<Item = (&V, isize)> + Clone)> {
    updates
        .chunk_by(
            |(x, _), (y, _)| matches!((x, y), (Update::Keyed(a, _), Update::Keyed(b, _)) if a == b),
        )
        .map_while(|group| match &group[0].0 {
            Update::Keyed(key, _) => Some((
                key,
                group.iter().map(|(update, diff)| match update {
                    Update::Keyed(_, value) => (value, *diff),
                    Update::Shared(_) => unreachable!("a key's group holds keyed updates only"),
                }),
            )),
            Update::Shared(_) => None,
        })
}

/// Takes one time's shared updates off the end of its sorted `updates` (they sort after
/// every keyed one), leaving the keyed ones.
pub fn take_shared<K, V, S>(updates: &mut Vec<(Update<K, V, S>, isize)>) -> Vec<(S, isize)> {
    let split = updates.partition_point(|(update, _)| matches!(update, Update::Keyed(..)));
    updates
        .drain(split..)
        .map(|(update, diff)| match update {
            Update::Shared(shared) => (shared, diff),
            Update::Keyed(..) => unreachable!("keyed updates sort before shared ones"),
        })
        .collect()
}

/// An update of `S`'s inputs with its difference.
pub type UpdateOf<S> = (
    Update<
        <S as KeyedSharedState>::Key,
        <S as KeyedSharedState>::Value,
        <S as KeyedSharedState>::Shared,
    >,
    isize,
);

/// One worker's state of a [`keyed_with_shared`] operator.
pub trait KeyedSharedState: 'static {
    type Key: ExchangeData + Hashable;
    type Value: ExchangeData;
    type Shared: ExchangeData;
    type Out: Data;

    /// Applies every update of one complete time (sorted and consolidated: keyed updates
    /// first, by key) and pushes the output's changes at that time.
    fn step(&mut self, updates: Vec<UpdateOf<Self>>, changes: &mut Vec<(Self::Out, isize)>);

    /// Records held, for the operator's state report.
    fn records(&self) -> usize;
}

/// Runs `state` over `keyed` (exchanged by key) and `shared` (broadcast to every worker):
/// at each time, once both inputs are complete up to it, [`KeyedSharedState::step`] sees
/// that time's updates of both and its changes are emitted at that time.
pub fn keyed_with_shared<'s, S: KeyedSharedState>(
    keyed: VecCollection<'s, Time, (S::Key, S::Value)>,
    shared: VecCollection<'s, Time, S::Shared>,
    name: &str,
    mut state: S,
) -> VecCollection<'s, Time, S::Out> {
    let mut pending: Stash<UpdateOf<S>> = Stash::default();
    let exchange =
        Exchange::new(|update: &((S::Key, S::Value), Time, isize)| update.0.0.hashed().into());
    let scope = keyed.inner.scope();
    keyed
        .inner
        .binary_frontier(
            shared.inner.broadcast(),
            exchange,
            Pipeline,
            name,
            move |_, info| {
                let mut state_log = StateLog::new(scope, &info);
                let mut changes: Vec<(S::Out, isize)> = Vec::new();
                let mut timed: Vec<(S::Out, Time, isize)> = Vec::new();
                move |(keyed, keyed_frontier), (shared, shared_frontier), output| {
                    keyed.for_each(|capability, data| {
                        pending
                            .take_with(&capability, data, |(key, value)| Update::Keyed(key, value));
                    });
                    shared.for_each(|capability, data| {
                        pending.take_with(&capability, data, Update::Shared);
                    });
                    let released = pending.release(
                        |time| {
                            !keyed_frontier.less_equal(time) && !shared_frontier.less_equal(time)
                        },
                        |time, mut updates| {
                            differential_dataflow::consolidation::consolidate(&mut updates);
                            state.step(updates, &mut changes);
                            timed.extend(
                                changes.drain(..).map(|(record, diff)| (record, time, diff)),
                            );
                        },
                    );
                    // Every released time's changes in one session (see `Stash::release`).
                    if let Some(capability) = released
                        && !timed.is_empty()
                    {
                        output.session(&capability).give_iterator(timed.drain(..));
                    }
                    state_log.report(|| state.records() + pending.len());
                }
            },
        )
        .as_collection()
}
