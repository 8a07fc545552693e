//! The `als` view (seed 3c, streaming side): each user's best items under an
//! implicit-feedback ALS model, with the user folded in live from their windowed `scores`.
//!
//! The model holds item factors only. A user's factors are the ridge solve that ALS training
//! would make for them against those item factors (Hu, Koren and Volinsky 2008):
//! `(YᵀY + Σᵢ (cᵢ − 1) yᵢ yᵢᵀ + λI) x = Σᵢ cᵢ yᵢ` over the items the user has a positive
//! score for, with confidence `cᵢ = 1 + α · scoreᵢ`. So a score change costs one f×f solve
//! and one pass over the item factors for that user alone, and the candidates change only
//! for users whose top list changed.
//!
//! The model is a collection, like the k-means model: a refit replaces it at one time and
//! every user is re-folded against the new factors.

use crate::Time;
use crate::model::{ItemId, Score, UserId};
use crate::models::{AlsModel, MODEL_SHARDS, ModelCache, SharedModel};
use crate::scores::ScoreKey;
use differential_dataflow::VecCollection;
use differential_dataflow::hashable::Hashable;
use linfa_linalg::cholesky::SolveCInplace;
use ndarray::{Array1, Array2, ArrayView1};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// A user's candidates, best first: (item, predicted preference in ten-thousandths).
pub type Candidates = Vec<(ItemId, i64)>;

/// Solves one row of implicit ALS against fixed factors on the other side: `gram` is
/// `YᵀY`, `observed` yields each observed row `yᵢ` with its confidence `cᵢ`. Training and
/// the live fold-in share it, so a folded-in user gets the factors training would give.
/// `None` when the system is not positive definite (only with λ ≤ 0).
pub fn solve_row<'a>(
    gram: &Array2<f64>,
    observed: impl Iterator<Item = (ArrayView1<'a, f64>, f64)>,
    lambda: f64,
) -> Option<Array1<f64>> {
    let f = gram.nrows();
    let mut a = gram.clone();
    let mut b = Array2::<f64>::zeros((f, 1));
    for (y, confidence) in observed {
        for p in 0..f {
            b[[p, 0]] += confidence * y[p];
            let scaled = (confidence - 1.0) * y[p];
            for q in 0..f {
                a[[p, q]] += scaled * y[q];
            }
        }
    }
    for p in 0..f {
        a[[p, p]] += lambda;
    }
    a.solvec_inplace(&mut b).ok()?;
    Some(b.column(0).to_owned())
}

/// An ALS model ready to fold users in: item factors as a matrix, `YᵀY` precomputed.
pub struct AlsScorer {
    items: Vec<ItemId>,
    position: HashMap<ItemId, usize>,
    factors: Array2<f64>,
    gram: Array2<f64>,
    lambda: f64,
    alpha: f64,
}

impl AlsScorer {
    pub fn new(model: &AlsModel) -> Self {
        let items: Vec<ItemId> = model
            .items
            .iter()
            .map(|entry| ItemId::new(&entry.item))
            .collect();
        let position = items
            .iter()
            .enumerate()
            .map(|(index, item)| (item.clone(), index))
            .collect();
        let factors = Array2::from_shape_fn((items.len(), model.factors), |(i, p)| {
            model.items[i].factors.get(p).copied().unwrap_or(0.0)
        });
        let gram = factors.t().dot(&factors);
        AlsScorer {
            items,
            position,
            factors,
            gram,
            lambda: model.lambda,
            alpha: model.alpha,
        }
    }

    /// The user's factors from their (item, score) list; `None` if no positive score is
    /// for an item the model knows.
    pub fn fold_in(&self, scores: &[(ItemId, Score)]) -> Option<Array1<f64>> {
        let mut observed = scores
            .iter()
            .filter(|(_, score)| score.0 > 0)
            .filter_map(|(item, score)| {
                let row = *self.position.get(item)?;
                Some((self.factors.row(row), 1.0 + self.alpha * score.as_f64()))
            })
            .peekable();
        observed.peek()?;
        solve_row(&self.gram, observed, self.lambda)
    }

    /// The `count` items with the highest predicted preference `x · yᵢ`, compared at the
    /// printed precision and then by item id, so ranks do not hang on rounding noise.
    pub fn top(&self, user: &Array1<f64>, count: usize) -> Candidates {
        let predicted = self.factors.dot(user);
        let mut ranked: Vec<(i64, usize)> = predicted
            .iter()
            .enumerate()
            .map(|(index, p)| ((p * 10_000.0).round() as i64, index))
            .collect();
        let order = |a: &(i64, usize), b: &(i64, usize)| {
            b.0.cmp(&a.0)
                .then_with(|| self.items[a.1].cmp(&self.items[b.1]))
        };
        if ranked.len() > count && count > 0 {
            ranked.select_nth_unstable_by(count - 1, order);
            ranked.truncate(count);
        }
        ranked.truncate(count);
        ranked.sort_by(order);
        ranked
            .into_iter()
            .map(|(units, index)| (self.items[index].clone(), units))
            .collect()
    }

    pub fn candidates(&self, scores: &[(ItemId, Score)], count: usize) -> Option<Candidates> {
        self.fold_in(scores).map(|user| self.top(&user, count))
    }
}

fn scorer_from_json(json: &str) -> Option<AlsScorer> {
    let model: AlsModel = serde_json::from_str(json).ok()?;
    Some(AlsScorer::new(&model))
}

/// What the fold-in of one user reads: their positive scores and the current model.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum FoldInput {
    Scored(ItemId, Score),
    Model(SharedModel),
}

/// Maintains the `als` view: a row per user with a positive score for some model item,
/// holding their `count` best items under the current model (the `models` collection, one
/// JSON text at a time).
///
/// One reduce per user reads their scores and the model, so a score change folds the user
/// in once (differential retracts the previous output from its own state), and a refit
/// reaches every user through one small (user, model) record each.
pub fn als<'s>(
    scores: VecCollection<'s, Time, (ScoreKey, Score)>,
    models: VecCollection<'s, Time, String>,
    count: usize,
) -> VecCollection<'s, Time, (UserId, Candidates)> {
    let positive = scores.filter(|(_, score)| score.0 > 0);
    let users = positive.clone().map(|((user, _), _)| user).distinct();
    let replicated = models.flat_map(|json| SharedModel::new(&json).replicated());
    let user_models = users
        .map(|user| (user.hashed() % MODEL_SHARDS, user))
        .join_map(replicated, |_shard, user, model| {
            (user.clone(), FoldInput::Model(model.clone()))
        });
    let mut parsed = ModelCache::new(scorer_from_json);
    positive
        .map(|((user, item), score)| (user, FoldInput::Scored(item, score)))
        .concat(user_models)
        .reduce_named("AlsFoldIn", move |_user, input, output| {
            let mut model = None;
            let mut scored = Vec::with_capacity(input.len());
            for (entry, _) in input {
                match entry {
                    FoldInput::Scored(item, score) => scored.push((item.clone(), *score)),
                    FoldInput::Model(shared) => model = Some(parsed.get(shared)),
                }
            }
            let candidates = model
                .as_deref()
                .and_then(Option::as_ref)
                .and_then(|scorer| scorer.candidates(&scored, count));
            if let Some(candidates) = candidates {
                output.push((candidates, 1));
            }
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::models::ItemFactors;

    fn model() -> AlsModel {
        // Two taste directions: p1/p2 load on the first factor, p3 on the second.
        let item = |name: &str, factors: [f64; 2]| ItemFactors {
            item: name.into(),
            factors: factors.to_vec(),
        };
        AlsModel {
            factors: 2,
            lambda: 0.1,
            alpha: 2.0,
            items: vec![
                item("p1", [1.0, 0.0]),
                item("p2", [0.9, 0.1]),
                item("p3", [0.0, 1.0]),
            ],
            trained: Default::default(),
        }
    }

    #[test]
    fn a_user_folds_in_towards_the_items_they_scored() {
        let scorer = AlsScorer::new(&model());
        let top = scorer
            .candidates(&[(ItemId::new("p1"), Score::from_f64(3.0))], 3)
            .unwrap();
        let names: Vec<&str> = top.iter().map(|(item, _)| item.as_str()).collect();
        assert_eq!(names, ["p1", "p2", "p3"]);
        assert!(top[0].1 > top[2].1);
        // By hand: A = YᵀY + 6·y1y1ᵀ + 0.1·I = [[7.91, 0.09], [0.09, 1.11]], b = 7·y1.
        let x1: f64 = 7.0 * 1.11 / (7.91 * 1.11 - 0.09 * 0.09);
        assert_eq!(top[0].1, (x1 * 10_000.0).round() as i64);
    }

    #[test]
    fn unknown_items_and_non_positive_scores_give_no_candidates() {
        let scorer = AlsScorer::new(&model());
        assert!(
            scorer
                .candidates(&[(ItemId::new("zz"), Score::from_f64(3.0))], 3)
                .is_none()
        );
        assert!(
            scorer
                .candidates(&[(ItemId::new("p1"), Score::from_f64(-1.0))], 3)
                .is_none()
        );
    }
}
