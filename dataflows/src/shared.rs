//! Reusing one arrangement for several operators: a collection arranged once by key can feed
//! a `reduce` and any number of joins without each of them sorting and holding its own
//! copy (DD's `reduce_named` and `join_map` arrange their inputs privately).

use crate::Time;
use differential_dataflow::operators::arrange::{Arranged, TraceAgent};
use differential_dataflow::trace::implementations::{ValBuilder, ValSpine};
use differential_dataflow::{ExchangeData, Hashable, VecCollection};

/// A collection of `(K, V)` arranged by `K`, for sharing.
pub type ByKey<'s, K, V> = Arranged<'s, TraceAgent<ValSpine<K, V, Time, isize>>>;

/// Arranges `(K, V)` by key once, named after what reads it.
pub fn by_key<'s, K, V>(collection: VecCollection<'s, Time, (K, V)>, name: &str) -> ByKey<'s, K, V>
where
    K: ExchangeData + Hashable,
    V: ExchangeData,
{
    collection.arrange_by_key_named(&format!("Arrange: {name}"))
}

/// A reduce's output, arranged by key.
pub type Reduced<'s, K, V2> = Arranged<'s, TraceAgent<ValSpine<K, V2, Time, isize>>>;

/// `reduce_named` over an existing arrangement, its output still arranged.
pub fn reduce_arranged<'s, K, V, V2, L>(
    arranged: ByKey<'s, K, V>,
    name: &str,
    mut logic: L,
) -> Reduced<'s, K, V2>
where
    K: ExchangeData + Hashable,
    V: ExchangeData,
    V2: ExchangeData,
    L: FnMut(&K, &[(&V, isize)], &mut Vec<(V2, isize)>) + 'static,
{
    arranged.reduce_abelian::<_, ValBuilder<_, _, _, _>, ValSpine<K, V2, _, _>, _, _>(
        name,
        move |key, input, output| logic(key, input, output),
        keyed,
    )
}

/// How a reduce hands its output changes for one key to the output arrangement's builder.
fn keyed<K: Clone, V>(
    buffer: &mut Vec<((K, V), Time, isize)>,
    key: &K,
    updates: &mut Vec<(V, Time, isize)>,
) {
    buffer.clear();
    buffer.extend(updates.drain(..).map(|(v, t, r)| ((key.clone(), v), t, r)));
}

/// `reduce_named` whose output is read through `then` (a map, a filter, a render): it
/// runs in the operator that reads the reduce's output batches, instead of in one more
/// operator that every change passes through.
pub fn reduce_then<'s, K, V, V2, L, F, I>(
    collection: VecCollection<'s, Time, (K, V)>,
    name: &str,
    logic: L,
    then: F,
) -> VecCollection<'s, Time, I::Item>
where
    K: ExchangeData + Hashable,
    V: ExchangeData,
    V2: ExchangeData,
    L: FnMut(&K, &[(&V, isize)], &mut Vec<(V2, isize)>) + 'static,
    F: FnMut(&K, &V2) -> I + 'static,
    I: IntoIterator<Item: differential_dataflow::Data>,
{
    reduce_arranged(by_key(collection, name), name, logic).flat_map_ref(then)
}

/// Inner join of two arrangements on their key.
pub fn join<'s, K, V1, V2, D, L>(
    left: ByKey<'s, K, V1>,
    right: ByKey<'s, K, V2>,
    mut result: L,
) -> VecCollection<'s, Time, D>
where
    K: ExchangeData + Hashable,
    V1: ExchangeData,
    V2: ExchangeData,
    D: ExchangeData,
    L: FnMut(&K, &V1, &V2) -> D + 'static,
{
    left.join_core(right, move |key, v1, v2| Some(result(key, v1, v2)))
}
