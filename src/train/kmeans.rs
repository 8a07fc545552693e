//! K-means segments (seed 2a): fit with linfa's k-means (k-means++ initialisation, a fixed
//! seed), name each centroid from what stands out in it, and keep ids stable across refits
//! by matching new centroids to the previous model's.

use super::features::{fit_transform, matrix};
use intentflow_dataflows::models::{Centroid, FeatureTransform, SegmentModel};
use linfa::prelude::*;
use linfa_clustering::{KMeans, KMeansInit};
use ndarray::{Array2, ArrayView1};
use rand_xoshiro::Xoshiro256Plus;
use rand_xoshiro::rand_core::SeedableRng;
use serde_json::{Value, json};
use std::collections::BTreeMap;

pub struct KmeansSpec<'a> {
    pub k: usize,
    pub seed: u64,
    pub features: &'a [String],
    pub recency_days: &'a [u64],
    /// The model being replaced: its ids (and, for a refit, its transform) carry over.
    pub previous: Option<&'a SegmentModel>,
}

/// Fits a segment model on users' printed feature rows (keyed by user, in order).
pub fn fit(rows: &BTreeMap<String, Value>, spec: &KmeansSpec) -> Result<SegmentModel, String> {
    if rows.len() < spec.k {
        return Err(format!(
            "k-means needs at least k = {} users with features; the replay has {}",
            spec.k,
            rows.len()
        ));
    }
    let transform = match spec.previous {
        // A refit keeps the scale, so a centroid keeps its meaning across fits.
        Some(previous) if !previous.segments.is_empty() => previous.transform.clone(),
        _ => fit_transform(rows, spec.features, spec.recency_days),
    };
    let data = matrix(rows, &transform);
    let centers = lloyd(&data, spec.k, spec.seed, spec.previous)?;
    let ids = stable_ids(&centers, spec.previous);
    let names = derive_names(&centers, &transform);
    let segments = (0..spec.k)
        .map(|index| Centroid {
            id: ids[index].clone(),
            name: names[index].clone(),
            center: centers.row(index).to_vec(),
        })
        .collect();
    let mut trained = serde_json::Map::new();
    trained.insert("users".into(), json!(rows.len()));
    trained.insert("k".into(), json!(spec.k));
    trained.insert("seed".into(), json!(spec.seed));
    Ok(SegmentModel {
        transform,
        segments,
        trained,
    })
}

/// Lloyd's algorithm through linfa: from the previous centres when refitting (so segments
/// move rather than jump), else k-means++ from the seed.
fn lloyd(
    data: &Array2<f64>,
    k: usize,
    seed: u64,
    previous: Option<&SegmentModel>,
) -> Result<Array2<f64>, String> {
    let rng = Xoshiro256Plus::seed_from_u64(seed);
    let dataset = DatasetBase::from(data.clone());
    let init = match previous.filter(|p| p.segments.len() == k) {
        Some(previous) => {
            let width = data.ncols();
            let flat: Vec<f64> = previous
                .segments
                .iter()
                .flat_map(|s| s.center.iter().copied())
                .collect();
            let centers = Array2::from_shape_vec((k, width), flat)
                .map_err(|e| format!("previous model: {e}"))?;
            KMeansInit::Precomputed(centers)
        }
        None => KMeansInit::KMeansPlusPlus,
    };
    let model = KMeans::params_with_rng(k, rng)
        .init_method(init)
        .n_runs(if previous.is_some() { 1 } else { 10 })
        .max_n_iterations(300)
        .tolerance(1e-6)
        .fit(&dataset)
        .map_err(|e| format!("k-means: {e}"))?;
    Ok(model.centroids().clone())
}

/// Ids for the new centres: each takes the id of the previous centre it is matched to
/// (pairs taken closest first), the rest get fresh `c<N>` ids.
fn stable_ids(centers: &Array2<f64>, previous: Option<&SegmentModel>) -> Vec<String> {
    let k = centers.nrows();
    let mut ids: Vec<Option<String>> = vec![None; k];
    if let Some(previous) = previous {
        let mut pairs: Vec<(f64, usize, usize)> = Vec::new();
        for (new, center) in centers.rows().into_iter().enumerate() {
            for (old, segment) in previous.segments.iter().enumerate() {
                if segment.center.len() == center.len() {
                    pairs.push((squared_distance(center, &segment.center), new, old));
                }
            }
        }
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0).then((a.1, a.2).cmp(&(b.1, b.2))));
        let mut taken = vec![false; previous.segments.len()];
        for (_, new, old) in pairs {
            if ids[new].is_none() && !taken[old] {
                ids[new] = Some(previous.segments[old].id.clone());
                taken[old] = true;
            }
        }
    }
    let mut next = 0;
    ids.into_iter()
        .map(|id| {
            id.unwrap_or_else(|| {
                loop {
                    let candidate = format!("c{next}");
                    next += 1;
                    let used =
                        previous.is_some_and(|p| p.segments.iter().any(|s| s.id == candidate));
                    if !used {
                        break candidate;
                    }
                }
            })
        })
        .collect()
}

fn squared_distance(a: ArrayView1<f64>, b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Persona names and what makes a centre one (standardized feature → weight).
const PERSONAS: [(&str, &[(&str, f64)]); 4] = [
    ("buyers", &[("purchases", 1.0), ("high_intent", 1.0)]),
    ("researchers", &[("avg_dwell_ms", 1.0), ("avg_scroll", 1.0)]),
    (
        "browsers",
        &[
            ("page_views", 1.0),
            ("avg_dwell_ms", -0.5),
            ("high_intent", -0.5),
        ],
    ),
    (
        "disengaged",
        &[
            ("bounce_rate", 1.0),
            ("page_views", -0.5),
            ("sessions", -0.5),
        ],
    ),
];

/// A readable name per centre: persona names are handed out best match first, one each;
/// centres beyond the personas get the best-matching name with a number.
fn derive_names(centers: &Array2<f64>, transform: &FeatureTransform) -> Vec<String> {
    let coordinate = |row: usize, feature: &str| {
        transform
            .features
            .iter()
            .position(|scale| scale.feature == feature)
            .map_or(0.0, |column| centers[[row, column]])
    };
    let fit = |row: usize, signature: &[(&str, f64)]| -> f64 {
        signature
            .iter()
            .map(|(feature, weight)| weight * coordinate(row, feature))
            .sum()
    };
    let k = centers.nrows();
    let mut scored: Vec<(f64, usize, usize)> = (0..k)
        .flat_map(|row| {
            PERSONAS
                .iter()
                .enumerate()
                .map(move |(persona, (_, signature))| (fit(row, signature), row, persona))
        })
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2).cmp(&(b.1, b.2))));
    let mut names: Vec<Option<String>> = vec![None; k];
    let mut used = [0usize; PERSONAS.len()];
    for (_, row, persona) in &scored {
        if names[*row].is_none() && used[*persona] == 0 {
            names[*row] = Some(PERSONAS[*persona].0.to_string());
            used[*persona] += 1;
        }
    }
    for (_, row, persona) in &scored {
        if names[*row].is_none() {
            used[*persona] += 1;
            names[*row] = Some(format!("{} {}", PERSONAS[*persona].0, used[*persona]));
        }
    }
    names.into_iter().map(Option::unwrap_or_default).collect()
}

/// The adjusted Rand index of two labelings of the same users (1: identical partitions,
/// about 0: chance agreement).
pub fn adjusted_rand_index(a: &[usize], b: &[usize]) -> f64 {
    let mut table: BTreeMap<(usize, usize), u64> = BTreeMap::new();
    let mut rows: BTreeMap<usize, u64> = BTreeMap::new();
    let mut cols: BTreeMap<usize, u64> = BTreeMap::new();
    for (&x, &y) in a.iter().zip(b) {
        *table.entry((x, y)).or_default() += 1;
        *rows.entry(x).or_default() += 1;
        *cols.entry(y).or_default() += 1;
    }
    let pairs = |n: u64| (n * n.saturating_sub(1) / 2) as f64;
    let index: f64 = table.values().map(|&n| pairs(n)).sum();
    let row_sum: f64 = rows.values().map(|&n| pairs(n)).sum();
    let col_sum: f64 = cols.values().map(|&n| pairs(n)).sum();
    let total = pairs(a.len() as u64);
    let expected = row_sum * col_sum / total.max(1.0);
    let max = (row_sum + col_sum) / 2.0;
    if max == expected {
        return 1.0;
    }
    (index - expected) / (max - expected)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rand_index_is_one_for_relabelled_partitions_and_low_for_unrelated_ones() {
        assert!(
            (adjusted_rand_index(&[0, 0, 1, 1, 2, 2], &[5, 5, 3, 3, 4, 4]) - 1.0).abs() < 1e-12
        );
        let ari = adjusted_rand_index(&[0, 0, 0, 1, 1, 1], &[0, 1, 0, 1, 0, 1]);
        assert!(ari < 0.1, "{ari}");
    }

    #[test]
    fn refit_keeps_ids_of_matching_centres() {
        let previous = SegmentModel {
            segments: vec![
                Centroid {
                    id: "c0".into(),
                    name: "a".into(),
                    center: vec![0.0],
                },
                Centroid {
                    id: "c1".into(),
                    name: "b".into(),
                    center: vec![10.0],
                },
            ],
            ..Default::default()
        };
        let centers = Array2::from_shape_vec((3, 1), vec![9.5, 0.2, 5.0]).unwrap();
        assert_eq!(stable_ids(&centers, Some(&previous)), ["c1", "c0", "c2"]);
    }
}
