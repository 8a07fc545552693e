//! The `scores` view (seeds 1a, 4b, 4c): implicit-feedback adjusted, windowed intent per
//! (user, item), `click*1 + add_to_cart*3 + purchase*5` by default.
//!
//! Each event's contribution (its type's weight, plus a long-dwell boost, minus a quick-exit
//! penalty) travels as the difference of a `(user, item)` record, so differential sums it in
//! place: the per-key state is one number per distinct time, whatever the number of events.
//! The contribution is retracted when the event leaves the window, and stacked boost windows
//! add scaled copies with shorter lives, which approximates time decay.
//!
//! Items that many users leave quickly after following a recommendation are rejected: each
//! of their rows loses a fixed penalty (seed 4b, deprioritise such content).

use crate::Time;
use crate::in_place;
use crate::model::{Event, ItemId, Score, UserId};
use crate::params::ViewParams;
use crate::shared;
use crate::windows::sliding_with;
use differential_dataflow::{AsCollection, VecCollection};
use timely::dataflow::operators::vec::Map;

pub type ScoreKey = (UserId, ItemId);

/// One event's contribution to its (user, item) score before stacked windows.
fn contribution(event: &Event, params: &ViewParams) -> Score {
    Score(params.weights.of(event).0 + params.feedback.adjustment(event).0)
}

/// The (user, item) an event contributes to and its non-zero contribution, if any.
fn contribution_of(event: Event, params: &ViewParams) -> Option<(ScoreKey, Score)> {
    let amount = contribution(&event, params);
    let key = event.item.map(|item| (event.user, item));
    key.filter(|_| amount.0 != 0).map(|key| (key, amount))
}

/// The contribution's extra weight inside a boost window; truncated toward zero.
fn boosted(contribution: Score, extra: Score) -> Score {
    Score(((i128::from(contribution.0) * i128::from(extra.0)) / 1_000) as i64)
}

/// Maintains the `scores` view: a row per (user, item) whose windowed score is non-zero.
pub fn scores<'s>(
    events: VecCollection<'s, Time, Event>,
    params: &ViewParams,
) -> VecCollection<'s, Time, (ScoreKey, Score)> {
    // Each event's contribution, windowed, and again (scaled) for each boost window.
    let mut windowed = vec![{
        let params = params.clone();
        sliding_with(
            events.clone(),
            params.windows.span_ms,
            move |event, _, diff| {
                contribution_of(event, &params).map(|(key, amount)| (key, amount.0 as isize * diff))
            },
        )
    }];
    for boost in &params.windows.boost {
        let (params, extra) = (params.clone(), boost.extra);
        windowed.push(sliding_with(
            events.clone(),
            boost.span_ms,
            move |event, _, diff| {
                let (key, amount) = contribution_of(event, &params)?;
                let amount = boosted(amount, extra).0;
                (amount != 0).then_some((key, amount as isize * diff))
            },
        ));
    }
    let base = in_place::total(
        differential_dataflow::collection::concatenate(events.scope(), windowed),
        "Scores",
        |key: &ScoreKey, total| Some((key.clone(), Score(*total as i64))),
    );
    with_rejections(
        base,
        rejected_items(events, params),
        params.feedback.rejected_penalty,
    )
}

/// Items quickly exited from a recommendation by at least `rejected_min_users` distinct
/// users within the window.
fn rejected_items<'s>(
    events: VecCollection<'s, Time, Event>,
    params: &ViewParams,
) -> VecCollection<'s, Time, ItemId> {
    let feedback = params.feedback.clone();
    let min_users = params.feedback.rejected_min_users;
    let exits = sliding_with(events, params.windows.span_ms, move |event, _, diff| {
        let rejected = event.rec.is_some() && feedback.is_quick_exit(&event);
        let user = event.user;
        event
            .item
            .filter(|_| rejected)
            .map(|item| ((item, user), diff))
    });
    shared::reduce_then(
        exits,
        "RejectedItems",
        move |_item, users, output| {
            // One entry per distinct user, whatever their number of exits.
            if users.len() >= min_users {
                output.push(((), 1));
            }
        },
        |item, ()| Some(item.clone()),
    )
}

/// Subtracts `penalty` from every row of a rejected item; rows that reach zero vanish.
fn with_rejections<'s>(
    base: VecCollection<'s, Time, (ScoreKey, Score)>,
    rejected: VecCollection<'s, Time, ItemId>,
    penalty: Score,
) -> VecCollection<'s, Time, (ScoreKey, Score)> {
    // A rejected item's rows: the row retracted and the penalized row (if not zero)
    // inserted, in one pass.
    let replaced = base
        .clone()
        .map(|((user, item), score)| (item, (user, score)))
        .semijoin(rejected)
        .inner
        .flat_map(move |((item, (user, score)), time, diff)| {
            let adjusted = Score(score.0 - penalty.0);
            let key = (user, item);
            let insert = (adjusted.0 != 0).then(|| ((key.clone(), adjusted), time, diff));
            std::iter::once(((key, score), time, -diff)).chain(insert)
        })
        .as_collection();
    base.concat(replaced)
}
