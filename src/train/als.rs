//! Implicit-feedback ALS (seed 3c; Hu, Koren and Volinsky 2008) over the windowed `scores`:
//! preference 1 where a user's score is positive, confidence `1 + alpha * score`.
//!
//! No well-kept Rust crate implements implicit ALS, so the alternation is written here; the
//! per-row ridge solves use linfa-linalg's Cholesky. Cost per sweep: O(nnz * f^2 + (U + I) * f^3).

use linfa_linalg::cholesky::SolveCInplace;
use ndarray::{Array1, Array2, Axis};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::{RngCore, SeedableRng};
use std::collections::BTreeMap;

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

/// `(user, item) -> score`, positive scores only.
pub fn fit(scores: &BTreeMap<(String, String), f64>, spec: &AlsSpec) -> AlsFit {
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

/// Solves every row's ridge regression against the fixed `other` factors.
fn sweep(other: &Array2<f64>, rows: &[Vec<(usize, f64)>], spec: &AlsSpec) -> Array2<f64> {
    let f = spec.factors;
    let gram = other.t().dot(other);
    let mut out = Array2::zeros((rows.len(), f));
    for (r, entries) in rows.iter().enumerate() {
        let mut a = gram.clone();
        let mut b = Array2::<f64>::zeros((f, 1));
        for &(j, confidence) in entries {
            let y = other.row(j);
            for p in 0..f {
                b[[p, 0]] += confidence * y[p];
                for q in 0..f {
                    a[[p, q]] += (confidence - 1.0) * y[p] * y[q];
                }
            }
        }
        for p in 0..f {
            a[[p, p]] += spec.lambda;
        }
        if a.solvec_inplace(&mut b).is_ok() {
            out.row_mut(r).assign(&b.column(0));
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

    pub fn factors_of_item(&self, item: usize) -> Vec<f64> {
        self.item_factors.index_axis(Axis(0), item).to_vec()
    }
}
