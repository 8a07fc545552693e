//! Trained models: what `intentflow train` writes and `run --model` loads (DESIGN.md §6).
//!
//! A model file is one JSON object tagged by `kind`. Fitting happens outside the dataflow
//! (on a snapshot of the `features` view); the views here only *apply* a model, so every
//! user is scored incrementally as their features change. Models read features by name,
//! exactly as the `features` view prints them ([`FeatureSums::values`]), so a model trained
//! on printed features scores the engine's users identically.

use crate::features::{FeatureSums, FeatureValue};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;

/// A model collection holds one JSON text; the ALS fold-in replicates it over this many
/// keys and spreads users over them, so scoring runs on every worker instead of on the one
/// that would own a single model key. (Segments broadcast the model instead:
/// [`crate::with_model`].)
pub const MODEL_SHARDS: u64 = 256;

/// A model as it travels through a dataflow: its JSON text behind an `Arc`, so replicating
/// it over the shards copies a pointer, and a hash of the text, so ordering records and
/// finding the parsed model do not compare texts of hundreds of kilobytes.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SharedModel {
    id: u64,
    json: Arc<str>,
}

impl SharedModel {
    pub fn new(json: &str) -> Self {
        let mut hasher = std::hash::DefaultHasher::new();
        json.hash(&mut hasher);
        SharedModel {
            id: hasher.finish(),
            json: Arc::from(json),
        }
    }

    pub fn json(&self) -> &str {
        &self.json
    }

    /// The model replicated over every shard key.
    pub fn replicated(self) -> impl Iterator<Item = (u64, SharedModel)> {
        (0..MODEL_SHARDS).map(move |shard| (shard, self.clone()))
    }
}

impl PartialEq for SharedModel {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other).is_eq()
    }
}

impl Eq for SharedModel {}

impl PartialOrd for SharedModel {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for SharedModel {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.id.cmp(&other.id).then_with(|| {
            if Arc::ptr_eq(&self.json, &other.json) {
                std::cmp::Ordering::Equal
            } else {
                self.json.cmp(&other.json)
            }
        })
    }
}

impl Hash for SharedModel {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state);
    }
}

/// Parsed models by [`SharedModel`] id, so a model is parsed once per worker, not per
/// user. A refit briefly has two versions live (the old one's retraction and the new
/// one's insertion), so a few are kept.
pub struct ModelCache<M> {
    models: Vec<(u64, Rc<M>)>,
    parse: fn(&str) -> M,
}

impl<M> ModelCache<M> {
    const KEEP: usize = 4;

    pub fn new(parse: fn(&str) -> M) -> Self {
        ModelCache {
            models: Vec::new(),
            parse,
        }
    }

    pub fn get(&mut self, model: &SharedModel) -> Rc<M> {
        if let Some((_, parsed)) = self.models.iter().find(|(id, _)| *id == model.id) {
            return Rc::clone(parsed);
        }
        let parsed = Rc::new((self.parse)(model.json()));
        if self.models.len() == Self::KEEP {
            self.models.remove(0);
        }
        self.models.push((model.id, Rc::clone(&parsed)));
        parsed
    }
}

/// One model file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum ModelFile {
    Kmeans(SegmentModel),
    Propensity(PropensityModel),
    Als(AlsModel),
}

impl ModelFile {
    pub fn kind(&self) -> &'static str {
        match self {
            ModelFile::Kmeans(_) => "kmeans",
            ModelFile::Propensity(_) => "propensity",
            ModelFile::Als(_) => "als",
        }
    }
}

/// How one feature enters a model: optionally `ln(1 + x)` (for heavy-tailed counts), then
/// standardized to zero mean and unit variance over the training users.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FeatureScale {
    pub feature: String,
    pub log: bool,
    pub mean: f64,
    pub std: f64,
}

impl FeatureScale {
    pub fn apply(&self, raw: f64) -> f64 {
        let x = if self.log { raw.max(0.0).ln_1p() } else { raw };
        if self.std > 0.0 {
            (x - self.mean) / self.std
        } else {
            x - self.mean
        }
    }
}

/// The transform from a user's features to a model's input vector.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FeatureTransform {
    pub features: Vec<FeatureScale>,
}

impl FeatureTransform {
    /// Whether every feature the transform reads exists under `recency_days`; the error
    /// names the first that does not.
    pub fn check(&self, recency_days: &[u64]) -> Result<(), String> {
        let known = FeatureSums::names(recency_days);
        for scale in &self.features {
            if !known.iter().any(|name| *name == scale.feature) {
                let names: Vec<&str> = known.iter().map(AsRef::as_ref).collect();
                return Err(format!(
                    "the model reads feature {:?}, which the features view does not have (it has: {})",
                    scale.feature,
                    names.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// Where each feature the transform reads sits in [`FeatureSums::numbers`] under
    /// `recency_days` (none: reads as 0), for [`FeatureTransform::input_at`].
    pub fn positions(&self, recency_days: &[u64]) -> Vec<Option<usize>> {
        let known = FeatureSums::names(recency_days);
        self.features
            .iter()
            .map(|scale| known.iter().position(|name| *name == scale.feature))
            .collect()
    }

    /// [`FeatureTransform::input`] for values laid out as `positions` says, without
    /// looking names up: propensity scores every feature change of every user.
    pub fn input_at(&self, positions: &[Option<usize>], values: &[FeatureValue]) -> Vec<f64> {
        self.features
            .iter()
            .zip(positions)
            .map(|(scale, position)| {
                scale.apply(position.map_or(0.0, |position| values[position].as_f64()))
            })
            .collect()
    }

    /// The model input of a user whose features are `values` (named as the view prints
    /// them). A feature the transform names but `values` lacks reads as 0.
    pub fn input(&self, values: &[(Cow<'static, str>, FeatureValue)]) -> Vec<f64> {
        self.features
            .iter()
            .map(|scale| {
                let raw = values
                    .iter()
                    .find(|(name, _)| *name == scale.feature)
                    .map_or(0.0, |(_, value)| value.as_f64());
                scale.apply(raw)
            })
            .collect()
    }
}

/// K-means segments (seed 2a): each user belongs to the nearest centroid.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SegmentModel {
    pub transform: FeatureTransform,
    pub segments: Vec<Centroid>,
    /// Training facts, for people reading the file (not used when scoring).
    #[serde(default)]
    pub trained: serde_json::Map<String, serde_json::Value>,
}

/// One k-means segment: a stable id, a readable name and its centre in transformed space.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Centroid {
    pub id: String,
    pub name: String,
    pub center: Vec<f64>,
}

impl SegmentModel {
    /// The index of the segment nearest to `input` (ties to the lower index), or `None`
    /// without segments.
    pub fn nearest(&self, input: &[f64]) -> Option<usize> {
        let distance = |center: &[f64]| -> f64 {
            center
                .iter()
                .zip(input)
                .map(|(c, x)| (c - x) * (c - x))
                .sum()
        };
        let mut best: Option<(usize, f64)> = None;
        for (index, segment) in self.segments.iter().enumerate() {
            let d = distance(&segment.center);
            if best.is_none_or(|(_, nearest)| d < nearest) {
                best = Some((index, d));
            }
        }
        best.map(|(index, _)| index)
    }

    pub fn check(&self, recency_days: &[u64]) -> Result<(), String> {
        self.transform.check(recency_days)?;
        let width = self.transform.features.len();
        for segment in &self.segments {
            if segment.center.len() != width {
                return Err(format!(
                    "segment {:?} has {} coordinates; the model reads {width} features",
                    segment.id,
                    segment.center.len()
                ));
            }
        }
        Ok(())
    }
}

/// A logistic regression: `P = 1 / (1 + exp(-(intercept + weights · input)))`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Logistic {
    pub weights: Vec<f64>,
    pub intercept: f64,
}

impl Logistic {
    pub fn probability(&self, input: &[f64]) -> f64 {
        let z: f64 = self.intercept
            + self
                .weights
                .iter()
                .zip(input)
                .map(|(w, x)| w * x)
                .sum::<f64>();
        1.0 / (1.0 + (-z).exp())
    }
}

/// Conversion and churn propensity (seed 3a): two logistic regressions on the same input.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct PropensityModel {
    pub transform: FeatureTransform,
    /// The label horizon the model was trained for: "purchases within" / "no event within".
    pub horizon_ms: u64,
    pub conversion: Logistic,
    pub churn: Logistic,
    /// Held-out metrics and training facts, for people reading the file.
    #[serde(default)]
    pub trained: serde_json::Map<String, serde_json::Value>,
}

impl PropensityModel {
    pub fn check(&self, recency_days: &[u64]) -> Result<(), String> {
        self.transform.check(recency_days)?;
        let width = self.transform.features.len();
        for (name, model) in [("conversion", &self.conversion), ("churn", &self.churn)] {
            if model.weights.len() != width {
                return Err(format!(
                    "the {name} model has {} weights; the model reads {width} features",
                    model.weights.len()
                ));
            }
        }
        Ok(())
    }
}

/// Implicit-feedback ALS item factors (seed 3c); user factors are folded in live from
/// each user's windowed scores.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct AlsModel {
    pub factors: usize,
    /// Ridge penalty and confidence scale (`c = 1 + alpha * score`) used in training and
    /// in folding users in.
    pub lambda: f64,
    pub alpha: f64,
    pub items: Vec<ItemFactors>,
    #[serde(default)]
    pub trained: serde_json::Map<String, serde_json::Value>,
}

impl AlsModel {
    pub fn check(&self) -> Result<(), String> {
        if self.factors == 0 {
            return Err("the model has 0 factors".into());
        }
        match self.items.iter().find(|i| i.factors.len() != self.factors) {
            Some(item) => Err(format!(
                "item {:?} has {} factors; the model has {}",
                item.item,
                item.factors.len(),
                self.factors
            )),
            None => Ok(()),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ItemFactors {
    pub item: String,
    pub factors: Vec<f64>,
}

/// Probability in ten-thousandths, the precision the views print.
pub fn ten_thousandths(probability: f64) -> u16 {
    (probability.clamp(0.0, 1.0) * 10_000.0).round() as u16
}
