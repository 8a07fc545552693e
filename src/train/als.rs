//! Implicit-feedback ALS (seed 3c; Hu, Koren and Volinsky 2008) over the windowed `scores`:
//! preference 1 where a user's score is positive, confidence `1 + alpha * score`.
//!
//! No well-kept Rust crate implements implicit ALS, so the alternation is written here; the
//! per-row ridge solves use linfa-linalg's Cholesky. Cost per sweep: O(nnz * f^2 + (U + I) * f^3).

use intentflow_dataflows::als::solve_row;
use intentflow_dataflows::models::{AlsModel, ItemFactors};
use ndarray::{Array1, Array2, Axis};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use std::collections::BTreeMap;

#[derive(Clone, Debug, PartialEq)]
pub struct AlsSpec {
    pub factors: usize,
    pub lambda: f64,
    pub alpha: f64,
    pub iterations: usize,
    pub seed: u64,
}

impl Default for AlsSpec {
    fn default() -> Self {
        AlsSpec {
            factors: 16,
            lambda: 0.1,
            alpha: 2.0,
            iterations: 12,
            seed: 7,
        }
    }
}

/// Fitted factors, rows in the order of `users` and `items`.
pub struct AlsFit {
    pub users: Vec<String>,
    pub items: Vec<String>,
    pub user_factors: Array2<f64>,
    pub item_factors: Array2<f64>,
}

/// `(user, item) -> score`, positive scores only. With a `previous` model, items it knows
/// start from their old factors (a refit then moves them rather than starting over).
pub fn fit(
    scores: &BTreeMap<(String, String), f64>,
    spec: &AlsSpec,
    previous: Option<&AlsModel>,
) -> AlsFit {
    let index = |names: Vec<&String>| -> (Vec<String>, BTreeMap<String, usize>) {
        let mut names: Vec<String> = names.into_iter().cloned().collect();
        names.sort();
        names.dedup();
        let positions = names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), i))
            .collect();
        (names, positions)
    };
    let positive: Vec<(&(String, String), f64)> = scores
        .iter()
        .filter(|(_, s)| **s > 0.0)
        .map(|(k, s)| (k, *s))
        .collect();
    let (users, user_at) = index(positive.iter().map(|((u, _), _)| u).collect());
    let (items, item_at) = index(positive.iter().map(|((_, i), _)| i).collect());
    let mut by_user: Vec<Vec<(usize, f64)>> = vec![Vec::new(); users.len()];
    let mut by_item: Vec<Vec<(usize, f64)>> = vec![Vec::new(); items.len()];
    for ((user, item), score) in &positive {
        let (u, i) = (user_at[user], item_at[item]);
        let confidence = 1.0 + spec.alpha * score;
        by_user[u].push((i, confidence));
        by_item[i].push((u, confidence));
    }
    let mut rng = Xoshiro256Plus::seed_from_u64(spec.seed);
    let mut random = |rows: usize| {
        Array2::from_shape_fn((rows, spec.factors), |_| {
            (rng.next_u64() >> 11) as f64 / (1u64 << 53) as f64 * 0.1
        })
    };
    let mut user_factors = random(users.len());
    let mut item_factors = random(items.len());
    if let Some(previous) = previous.filter(|model| model.factors == spec.factors) {
        for entry in &previous.items {
            if let Some(&i) = item_at.get(&entry.item) {
                for (p, value) in entry.factors.iter().enumerate() {
                    item_factors[[i, p]] = *value;
                }
            }
        }
    }
    for _ in 0..spec.iterations {
        user_factors = sweep(&item_factors, &by_user, spec);
        item_factors = sweep(&user_factors, &by_item, spec);
    }
    AlsFit {
        users,
        items,
        user_factors,
        item_factors,
    }
}

/// Solves every row's ridge regression against the fixed `other` factors; a row whose
/// system cannot be solved stays zero.
fn sweep(other: &Array2<f64>, rows: &[Vec<(usize, f64)>], spec: &AlsSpec) -> Array2<f64> {
    let gram = other.t().dot(other);
    let mut out = Array2::zeros((rows.len(), spec.factors));
    for (r, entries) in rows.iter().enumerate() {
        let observed = entries
            .iter()
            .map(|&(j, confidence)| (other.row(j), confidence));
        if let Some(solution) = solve_row(&gram, observed, spec.lambda) {
            out.row_mut(r).assign(&solution);
        }
    }
    out
}

impl AlsFit {
    /// The user's `k` best items by predicted preference.
    pub fn top(&self, user: usize, k: usize) -> Vec<usize> {
        let predicted: Array1<f64> = self.item_factors.dot(&self.user_factors.row(user));
        let mut ranked: Vec<usize> = (0..self.items.len()).collect();
        ranked.sort_by(|a, b| predicted[*b].total_cmp(&predicted[*a]).then(a.cmp(b)));
        ranked.truncate(k);
        ranked
    }

    /// The model file: item factors plus what folding users in needs.
    pub fn model(
        &self,
        spec: &AlsSpec,
        trained: serde_json::Map<String, serde_json::Value>,
    ) -> AlsModel {
        let items = self
            .items
            .iter()
            .enumerate()
            .map(|(i, item)| ItemFactors {
                item: item.clone(),
                factors: self.item_factors.index_axis(Axis(0), i).to_vec(),
            })
            .collect();
        AlsModel {
            factors: spec.factors,
            lambda: spec.lambda,
            alpha: spec.alpha,
            items,
            trained,
        }
    }
}
