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
