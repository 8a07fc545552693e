//! Conversion and churn propensity (seed 3a): logistic regressions (linfa) on users'
//! features at a cutoff, labelled by what the event log shows in the horizon after it.
//!
//! Time split: features just before cutoff `T1 = end - 2h` with labels from `(T1, T1 + h]`
//! train the model; features before `T2 = end - h` with labels from `(T2, end]` are the
//! held-out slice its AUC and log-loss are reported on. No label ever leaks into features.

use super::features::{fit_transform, matrix};
use intentflow_dataflows::model::{EventKind, Millis};
use intentflow_dataflows::models::{Logistic, PropensityModel};
use linfa::prelude::*;
use linfa_logistic::LogisticRegression;
use ndarray::{Array1, Array2};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};

/// What the event log shows about one user.
#[derive(Default)]
pub struct Activity {
    /// Event times (ms), and purchase times, unsorted.
    pub events: Vec<Millis>,
    pub purchases: Vec<Millis>,
}

/// `(converted, churned)` for a user over `(cutoff, cutoff + horizon]`.
fn labels(activity: Option<&Activity>, cutoff: Millis, horizon: Millis) -> (bool, bool) {
    let within = |t: &Millis| *t > cutoff && *t <= cutoff + horizon;
    let Some(activity) = activity else {
        return (false, true);
    };
    (
        activity.purchases.iter().any(within),
        !activity.events.iter().any(within),
    )
}

pub struct Slice {
    pub features: BTreeMap<String, Value>,
    pub cutoff: Millis,
}

/// The held-out figures of one target.
#[derive(Debug)]
pub struct Evaluation {
    pub users: usize,
    pub positives: usize,
    pub auc: f64,
    pub log_loss: f64,
    /// Log-loss of always predicting the training base rate: the bar to beat.
    pub base_log_loss: f64,
}

/// Held-out figures per target: conversion, then churn.
pub type Evaluations = [(&'static str, Evaluation); 2];

pub fn fit(
    train: &Slice,
    test: &Slice,
    activity: &HashMap<String, Activity>,
    horizon: Millis,
    chosen_features: &[String],
    recency_days: &[u64],
) -> Result<(PropensityModel, Evaluations), String> {
    let transform = fit_transform(&train.features, chosen_features, recency_days);
    let label_rows = |slice: &Slice| -> Vec<(bool, bool)> {
        slice
            .features
            .keys()
            .map(|user| labels(activity.get(user), slice.cutoff, horizon))
            .collect()
    };
    let (train_x, test_x) = (
        matrix(&train.features, &transform),
        matrix(&test.features, &transform),
    );
    let (train_y, test_y) = (label_rows(train), label_rows(test));
    let mut models = Vec::new();
    let mut evaluations = Vec::new();
    for (target, pick) in [
        (
            "conversion",
            (|l: &(bool, bool)| l.0) as fn(&(bool, bool)) -> bool,
        ),
        ("churn", |l: &(bool, bool)| l.1),
    ] {
        let y: Vec<bool> = train_y.iter().map(pick).collect();
        let model = logistic(&train_x, &y).map_err(|e| format!("{target}: {e}"))?;
        let truth: Vec<bool> = test_y.iter().map(pick).collect();
        let base = y.iter().filter(|&&p| p).count() as f64 / y.len().max(1) as f64;
        evaluations.push((target, evaluate(&model, &test_x, &truth, base)));
        models.push(model);
    }
    let churn = models.pop().expect("two models");
    let conversion = models.pop().expect("two models");
    let mut trained = serde_json::Map::new();
    trained.insert("train_cutoff".into(), json!(train.cutoff));
    trained.insert("test_cutoff".into(), json!(test.cutoff));
    for (target, evaluation) in &evaluations {
        trained.insert(
            (*target).into(),
            json!({
                "held_out_users": evaluation.users,
                "held_out_positives": evaluation.positives,
                "auc": evaluation.auc,
                "log_loss": evaluation.log_loss,
                "base_rate_log_loss": evaluation.base_log_loss,
            }),
        );
    }
    let model = PropensityModel {
        transform,
        horizon_ms: horizon,
        conversion,
        churn,
        trained,
    };
    let evaluations: Evaluations = evaluations.try_into().expect("two evaluations");
    Ok((model, evaluations))
}

/// An L2-regularized logistic regression. linfa calls the more frequent label its positive
/// class; the weights are turned round when that is `false`.
fn logistic(x: &Array2<f64>, y: &[bool]) -> Result<Logistic, String> {
    let positives = y.iter().filter(|&&p| p).count();
    if positives == 0 || positives == y.len() {
        return Err(format!(
            "every one of the {} training users has the same label; the log needs a longer span or a shorter horizon",
            y.len()
        ));
    }
    let dataset = Dataset::new(x.clone(), Array1::from_vec(y.to_vec()));
    let fitted = LogisticRegression::default()
        .alpha(1e-3)
        .max_iterations(200)
        .fit(&dataset)
        .map_err(|e| e.to_string())?;
    let sign = if fitted.labels().pos.class { 1.0 } else { -1.0 };
    Ok(Logistic {
        weights: fitted.params().iter().map(|w| sign * w).collect(),
        intercept: sign * fitted.intercept(),
    })
}

fn evaluate(model: &Logistic, x: &Array2<f64>, truth: &[bool], base_rate: f64) -> Evaluation {
    let predicted: Vec<f64> = x
        .rows()
        .into_iter()
        .map(|row| model.probability(row.as_slice().expect("standard layout")))
        .collect();
    let base = vec![base_rate; truth.len()];
    Evaluation {
        users: truth.len(),
        positives: truth.iter().filter(|&&p| p).count(),
        auc: auc(&predicted, truth),
        log_loss: log_loss(&predicted, truth),
        base_log_loss: log_loss(&base, truth),
    }
}

/// Area under the ROC curve: the chance a random positive scores above a random negative
/// (ties count half).
pub fn auc(scores: &[f64], truth: &[bool]) -> f64 {
    let mut ranked: Vec<(f64, bool)> = scores.iter().copied().zip(truth.iter().copied()).collect();
    ranked.sort_by(|a, b| a.0.total_cmp(&b.0));
    let (mut rank_sum, mut index) = (0.0, 0);
    while index < ranked.len() {
        let mut end = index;
        while end < ranked.len() && ranked[end].0 == ranked[index].0 {
            end += 1;
        }
        // Tied scores share the mean of their 1-based ranks.
        let mean_rank = (index + 1 + end) as f64 / 2.0;
        rank_sum += mean_rank * ranked[index..end].iter().filter(|r| r.1).count() as f64;
        index = end;
    }
    let positives = truth.iter().filter(|&&p| p).count() as f64;
    let negatives = truth.len() as f64 - positives;
    if positives == 0.0 || negatives == 0.0 {
        return f64::NAN;
    }
    (rank_sum - positives * (positives + 1.0) / 2.0) / (positives * negatives)
}

pub fn log_loss(predicted: &[f64], truth: &[bool]) -> f64 {
    let eps = 1e-12;
    let total: f64 = predicted
        .iter()
        .zip(truth)
        .map(|(&p, &y)| {
            let p = p.clamp(eps, 1.0 - eps);
            if y { -p.ln() } else { -(1.0 - p).ln() }
        })
        .sum();
    total / truth.len().max(1) as f64
}

/// Reads the event kinds and times the labels need.
pub fn activity_of(
    events: impl Iterator<Item = intentflow_dataflows::model::Event>,
) -> HashMap<String, Activity> {
    let mut activity: HashMap<String, Activity> = HashMap::new();
    for event in events {
        let entry = activity.entry(event.user.to_string()).or_default();
        entry.events.push(event.ts);
        if event.kind == EventKind::Purchase {
            entry.purchases.push(event.ts);
        }
    }
    activity
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_counts_ordered_pairs_and_ties_half() {
        assert_eq!(auc(&[0.1, 0.2, 0.8, 0.9], &[false, false, true, true]), 1.0);
        assert_eq!(auc(&[0.9, 0.8, 0.2, 0.1], &[false, false, true, true]), 0.0);
        assert_eq!(auc(&[0.5, 0.5], &[false, true]), 0.5);
    }

    #[test]
    fn labels_look_only_inside_the_horizon() {
        let activity = Activity {
            events: vec![5, 20],
            purchases: vec![20],
        };
        assert_eq!(labels(Some(&activity), 10, 10), (true, false));
        assert_eq!(labels(Some(&activity), 20, 10), (false, true));
        assert_eq!(labels(None, 0, 10), (false, true));
    }
}
