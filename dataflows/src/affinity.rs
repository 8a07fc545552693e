//! The `affinity` view (seed 2c): the user's scores summed per catalog category.
//!
//! Built on the `scores` rows rather than on raw events, so it carries every adjustment
//! scores do (implicit feedback, windows, rejections) and its input is one record per
//! (user, item), not per event.

use crate::Time;
use crate::in_place;
use crate::model::{CatalogItem, Category, ItemId, Score, UserId};
use crate::scores::ScoreKey;
use differential_dataflow::VecCollection;

/// Maintains the `affinity` view: a row per (user, category) whose sum is non-zero.
pub fn affinity<'s>(
    scores: VecCollection<'s, Time, (ScoreKey, Score)>,
    catalog: VecCollection<'s, Time, CatalogItem>,
) -> VecCollection<'s, Time, ((UserId, Category), Score)> {
    let categories = catalog.map(|entry| (entry.item, entry.category));
    let weighted = scores
        .map(|((user, item), score)| (item, (user, score)))
        .join_map(categories, |_item: &ItemId, (user, score), category| {
            ((user.clone(), category.clone()), *score)
        })
        .explode(|(key, score)| Some((key, score.0 as isize)));
    in_place::total(weighted, "Affinity", |key: &(UserId, Category), total| {
        Some((key.clone(), Score(*total as i64)))
    })
}
