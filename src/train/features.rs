//! The training matrix: users' printed `features` rows → standardized model inputs.

use intentflow_dataflows::features::{FeatureSums, FeatureValue};
use intentflow_dataflows::models::{FeatureScale, FeatureTransform};
use ndarray::Array2;
use serde_json::Value;
use std::collections::BTreeMap;

/// One user's features as the view printed them.
pub type FeatureRow = Value;

/// The value of `feature` in a printed row (flags read as 0/1, a missing field as 0).
pub fn raw(row: &FeatureRow, feature: &str) -> f64 {
    match &row[feature] {
        Value::Bool(flag) => f64::from(u8::from(*flag)),
        value => value.as_f64().unwrap_or(0.0),
    }
}

/// The features a model reads: `chosen`, or every feature the view prints. Counts (and
/// durations) are heavy-tailed, so they enter as `ln(1 + x)`.
pub fn fit_transform(
    rows: &BTreeMap<String, FeatureRow>,
    chosen: &[String],
    recency_days: &[u64],
) -> FeatureTransform {
    let all = FeatureSums::default().values(recency_days);
    let features = all
        .iter()
        .filter(|(name, _)| chosen.is_empty() || chosen.iter().any(|c| c == name))
        .map(|(name, kind)| {
            let log = matches!(kind, FeatureValue::Count(_));
            let values: Vec<f64> = rows
                .values()
                .map(|row| {
                    let x = raw(row, name);
                    if log { x.max(0.0).ln_1p() } else { x }
                })
                .collect();
            let n = values.len().max(1) as f64;
            let mean = values.iter().sum::<f64>() / n;
            let variance = values.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
            FeatureScale {
                feature: name.to_string(),
                log,
                mean,
                std: variance.sqrt(),
            }
        })
        .collect();
    FeatureTransform { features }
}

/// The model input of every user, a row each, in the order of `rows`.
pub fn matrix(rows: &BTreeMap<String, FeatureRow>, transform: &FeatureTransform) -> Array2<f64> {
    let width = transform.features.len();
    let mut matrix = Array2::zeros((rows.len(), width));
    for (r, row) in rows.values().enumerate() {
        for (c, scale) in transform.features.iter().enumerate() {
            matrix[[r, c]] = scale.apply(raw(row, &scale.feature));
        }
    }
    matrix
}

/// The user id of a `features` key.
pub fn user_of(key: &str) -> String {
    let key: Value = serde_json::from_str(key).expect("keys are JSON");
    key["user"].as_str().unwrap_or_default().to_string()
}
