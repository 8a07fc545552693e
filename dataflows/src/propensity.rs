//! The `propensity` view (seed 3a): each user's probability to convert (purchase) and to
//! churn (no event) within the model's horizon, re-scored whenever their features change.

use crate::Time;
use crate::features::{FeatureSums, UserFeatures};
use crate::model::UserId;
use crate::models::{PropensityModel, ten_thousandths};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// Both probabilities in ten-thousandths (the precision the view prints), so equal
/// scores consolidate and an unchanged score prints nothing.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Propensity {
    pub conversion: u16,
    pub churn: u16,
}

impl Propensity {
    /// The scores of `sums`; `positions` is `model.transform.positions(recency_days)`.
    pub fn of(
        model: &PropensityModel,
        positions: &[Option<usize>],
        sums: &FeatureSums,
        recency_days: &[u64],
    ) -> Self {
        let input = model
            .transform
            .input_at(positions, &sums.numbers(recency_days.len()));
        Propensity {
            conversion: ten_thousandths(model.conversion.probability(&input)),
            churn: ten_thousandths(model.churn.probability(&input)),
        }
    }
}

/// Maintains the `propensity` view: a row per user in the `features` view.
pub fn propensity<'s>(
    features: UserFeatures<'s>,
    model: Arc<PropensityModel>,
    recency_days: &[u64],
) -> VecCollection<'s, Time, (UserId, Propensity)> {
    let recency_days = recency_days.to_vec();
    let positions = model.transform.positions(&recency_days);
    features.map(move |(user, sums)| {
        let scores = Propensity::of(&model, &positions, &sums, &recency_days);
        (user, scores)
    })
}
