//! The oracle's reading of trained models (issue 4): a model file applied to the oracle's
//! own `features` rows. Written from the model file format (README "Models"), not from the
//! engine's scoring code.
//!
//! - input: for each of the model's `transform.features` `{feature, log, mean, std}`, the
//!   printed feature value (true/false as 1/0), `ln(1 + max(x, 0))` if `log`, minus `mean`,
//!   divided by `std` when `std > 0`;
//! - `segments`: the segment whose `center` is nearest by Euclidean distance (the first one
//!   on a tie), printed as `{"segment": id, "name": name}`;
//! - `propensity`: `1 / (1 + e^-(intercept + weights · input))` for `conversion` and
//!   `churn`, printed rounded to four decimals.

use super::Rows;
use serde_json::{Value, json};

/// The models a run loads with `--model`, as their JSON.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Models {
    pub kmeans: Option<Value>,
    pub propensity: Option<Value>,
    pub als: Option<Value>,
}

fn input(model: &Value, features: &Value) -> Vec<f64> {
    model["transform"]["features"]
        .as_array()
        .expect("transform.features")
        .iter()
        .map(|scale| {
            let name = scale["feature"].as_str().expect("feature name");
            let raw = match &features[name] {
                Value::Bool(b) => {
                    if *b {
                        1.0
                    } else {
                        0.0
                    }
                }
                other => other.as_f64().expect("numeric feature"),
            };
            let x = if scale["log"].as_bool().unwrap() {
                (1.0 + raw.max(0.0)).ln()
            } else {
                raw
            };
            let (mean, std) = (
                scale["mean"].as_f64().unwrap(),
                scale["std"].as_f64().unwrap(),
            );
            if std > 0.0 {
                (x - mean) / std
            } else {
                x - mean
            }
        })
        .collect()
}

/// `segments` rows for every `features` row.
pub fn segment_rows(model: &Value, features: &Rows) -> Rows {
    let segments = model["segments"].as_array().expect("segments");
    features
        .iter()
        .filter_map(|(key, value)| {
            let x = input(model, value);
            let mut best: Option<(f64, &Value)> = None;
            for segment in segments {
                let center: Vec<f64> = segment["center"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|c| c.as_f64().unwrap())
                    .collect();
                let d: f64 = center.iter().zip(&x).map(|(c, v)| (c - v).powi(2)).sum();
                if best.is_none() || d < best.unwrap().0 {
                    best = Some((d, segment));
                }
            }
            let (_, segment) = best?;
            Some((
                key.clone(),
                json!({"segment": segment["id"], "name": segment["name"]}),
            ))
        })
        .collect()
}

/// `propensity` rows for every `features` row.
pub fn propensity_rows(model: &Value, features: &Rows) -> Rows {
    let probability = |which: &str, x: &[f64]| -> f64 {
        let weights = model[which]["weights"].as_array().unwrap();
        let z = model[which]["intercept"].as_f64().unwrap()
            + weights
                .iter()
                .zip(x)
                .map(|(w, v)| w.as_f64().unwrap() * v)
                .sum::<f64>();
        let p = 1.0 / (1.0 + (-z).exp());
        (p * 10_000.0).round() / 10_000.0
    };
    features
        .iter()
        .map(|(key, value)| {
            let x = input(model, value);
            (
                key.clone(),
                json!({"conversion": probability("conversion", &x), "churn": probability("churn", &x)}),
            )
        })
        .collect()
}

/// Items per user in the `als` view (`[recs] als_candidates`, default).
pub const ALS_CANDIDATES: usize = 20;

/// Solves `a x = b` by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<Vec<f64>>, mut b: Vec<f64>) -> Vec<f64> {
    let n = b.len();
    for col in 0..n {
        let pivot = (col..n)
            .max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))
            .unwrap();
        a.swap(col, pivot);
        b.swap(col, pivot);
        let pivot_row = a[col].clone();
        for row in col + 1..n {
            let factor = a[row][col] / pivot_row[col];
            for (k, value) in a[row].iter_mut().enumerate().skip(col) {
                *value -= factor * pivot_row[k];
            }
            b[row] -= factor * b[col];
        }
    }
    let mut x = vec![0.0; n];
    for row in (0..n).rev() {
        let rest: f64 = (row + 1..n).map(|k| a[row][k] * x[k]).sum();
        x[row] = (b[row] - rest) / a[row][row];
    }
    x
}

/// `als` rows from the oracle's scores (`(user, item) -> score in thousandths`), each with
/// the user's best `candidates` items (`[recs] als_candidates`).
pub fn als_rows(
    model: &Value,
    scores: &std::collections::BTreeMap<(String, String), i64>,
    candidates: usize,
) -> Rows {
    als_units(model, scores, candidates)
        .into_iter()
        .map(|(user, ranked)| {
            let list: Vec<Value> = ranked
                .into_iter()
                .map(|(item, units)| {
                    let score = if units % 10_000 == 0 {
                        json!(units / 10_000)
                    } else {
                        json!(units as f64 / 10_000.0)
                    };
                    json!({"item": item, "score": score})
                })
                .collect();
            (json!({ "user": user }), json!({ "items": list }))
        })
        .collect()
}

/// The `als` lists by user: the best `candidates` items, best first, each with its
/// predicted preference in ten-thousandths (the printed `score`).
pub fn als_units(
    model: &Value,
    scores: &std::collections::BTreeMap<(String, String), i64>,
    candidates: usize,
) -> std::collections::BTreeMap<String, Vec<(String, i64)>> {
    let f = model["factors"].as_u64().unwrap() as usize;
    let lambda = model["lambda"].as_f64().unwrap();
    let alpha = model["alpha"].as_f64().unwrap();
    let items: Vec<(String, Vec<f64>)> = model["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| {
            let factors = entry["factors"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_f64().unwrap())
                .collect();
            (entry["item"].as_str().unwrap().to_string(), factors)
        })
        .collect();
    let mut gram = vec![vec![0.0; f]; f];
    for (_, y) in &items {
        for p in 0..f {
            for q in 0..f {
                gram[p][q] += y[p] * y[q];
            }
        }
    }
    let mut by_user: std::collections::BTreeMap<&str, Vec<(&str, i64)>> = Default::default();
    for ((user, item), milli) in scores {
        if *milli > 0 {
            by_user.entry(user).or_default().push((item, *milli));
        }
    }
    let mut rows = std::collections::BTreeMap::new();
    for (user, scored) in by_user {
        let mut a = gram.clone();
        let mut b = vec![0.0; f];
        let mut known = false;
        for (item, milli) in scored {
            let Some((_, y)) = items.iter().find(|(name, _)| name == item) else {
                continue;
            };
            known = true;
            let c = 1.0 + alpha * (milli as f64 / 1000.0);
            for p in 0..f {
                b[p] += c * y[p];
                for q in 0..f {
                    a[p][q] += (c - 1.0) * y[p] * y[q];
                }
            }
        }
        if !known {
            continue;
        }
        for (p, row) in a.iter_mut().enumerate() {
            row[p] += lambda;
        }
        let x = solve(a, b);
        let mut ranked: Vec<(i64, &str)> = items
            .iter()
            .map(|(name, y)| {
                let p: f64 = x.iter().zip(y).map(|(a, b)| a * b).sum();
                ((p * 10_000.0).round() as i64, name.as_str())
            })
            .collect();
        ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        ranked.truncate(candidates);
        let list = ranked
            .into_iter()
            .map(|(units, item)| (item.to_string(), units))
            .collect();
        rows.insert(user.to_string(), list);
    }
    rows
}
