//! `intentflow train kmeans|propensity|als` (DESIGN.md §6): replays an event file through
//! the engine's views, fits a model on what they computed, reports how good it is, and
//! writes the model file `run --model` loads.

pub mod als;
pub mod features;
pub mod kmeans;
pub mod propensity;

use crate::cli::{ModelKind, TrainArgs};
use crate::config::{self, Config};
use crate::model_files;
use crate::parse::parse_event;
use crate::replay::{Replay, ReplaySpec, replay};
use intentflow_dataflows::ViewName;
use intentflow_dataflows::model::{Event, Millis};
use intentflow_dataflows::models::ModelFile;
use serde_json::Value;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::path::Path;

pub fn train(args: &TrainArgs) -> Result<(), String> {
    let config = match &args.config {
        Some(path) => config::load(path)?,
        None => Config::default(),
    };
    let model = match args.kind {
        ModelKind::Kmeans => train_kmeans(args, &config)?,
        ModelKind::Propensity => train_propensity(args, &config)?,
        ModelKind::Als => train_als(args, &config)?,
    };
    model_files::write(&args.out, &model)?;
    eprintln!(
        "intentflow: wrote {} model to {}",
        model.kind(),
        args.out.display()
    );
    Ok(())
}

fn replay_views(args: &TrainArgs, config: &Config, views: &[ViewName]) -> Result<Replay, String> {
    let replay = replay(ReplaySpec {
        events: args.events.clone(),
        catalog: args.catalog.clone(),
        params: config.views.clone(),
        views: views.to_vec(),
        workers: args.workers as usize,
    })?;
    eprintln!(
        "intentflow: replayed {} events ({} bad lines)",
        replay.ingest.events, replay.ingest.bad_lines
    );
    Ok(replay)
}

/// Users' `features` rows just before `time` (`None`: at the end), by user id.
fn features_before(replay: &Replay, time: Option<Millis>) -> BTreeMap<String, Value> {
    replay
        .state_before(ViewName::Features, time)
        .into_iter()
        .map(|(key, value)| (features::user_of(&key), value))
        .collect()
}

fn train_kmeans(args: &TrainArgs, config: &Config) -> Result<ModelFile, String> {
    let replay = replay_views(args, config, &[ViewName::Features])?;
    let rows = features_before(&replay, None);
    let previous = match &args.previous {
        Some(path) => match model_files::read(path)? {
            ModelFile::Kmeans(model) => Some(model),
            other => {
                return Err(format!(
                    "--previous {}: a {} model, not k-means",
                    path.display(),
                    other.kind()
                ));
            }
        },
        None => None,
    };
    let mut model = kmeans::fit(
        &rows,
        &kmeans::KmeansSpec {
            k: config.train.k,
            seed: config.train.seed,
            features: &config.train.features,
            recency_days: &config.views.windows.recency_days,
            previous: previous.as_ref(),
        },
    )?;
    let assigned: Vec<usize> = features::matrix(&rows, &model.transform)
        .rows()
        .into_iter()
        .map(|input| {
            model
                .nearest(input.as_slice().expect("standard layout"))
                .unwrap_or(0)
        })
        .collect();
    for (index, segment) in model.segments.iter().enumerate() {
        let users = assigned.iter().filter(|&&a| a == index).count();
        eprintln!(
            "intentflow: segment {} ({}): {users} users",
            segment.id, segment.name
        );
    }
    if let Some(path) = &args.truth {
        let truth = read_truth(path)?;
        let (mut ours, mut theirs) = (Vec::new(), Vec::new());
        let mut groups: Vec<String> = Vec::new();
        for (user, segment) in rows.keys().zip(&assigned) {
            if let Some(group) = truth.get(user) {
                let index = groups.iter().position(|g| g == group).unwrap_or_else(|| {
                    groups.push(group.clone());
                    groups.len() - 1
                });
                ours.push(*segment);
                theirs.push(index);
            }
        }
        let ari = kmeans::adjusted_rand_index(&ours, &theirs);
        eprintln!(
            "intentflow: adjusted Rand index against {}: {ari:.4} ({} users)",
            path.display(),
            ours.len()
        );
        model
            .trained
            .insert("adjusted_rand_index".into(), serde_json::json!(ari));
    }
    Ok(ModelFile::Kmeans(model))
}

/// `{"user","archetype"}` lines, as `generate --truth-out` writes them.
fn read_truth(path: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    text.lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            let value: Value =
                serde_json::from_str(line).map_err(|e| format!("{}: {e}", path.display()))?;
            match (value["user"].as_str(), value["archetype"].as_str()) {
                (Some(user), Some(group)) => Ok((user.to_string(), group.to_string())),
                _ => Err(format!(
                    "{}: expected {{\"user\",\"archetype\"}}: {line}",
                    path.display()
                )),
            }
        })
        .collect()
}

/// Every well-formed event of the file (bad lines were reported by the replay).
fn read_events(path: &Path) -> Result<Vec<Event>, String> {
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    Ok(std::io::BufReader::new(file)
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| parse_event(&line).ok())
        .collect())
}

fn train_propensity(args: &TrainArgs, config: &Config) -> Result<ModelFile, String> {
    let events = read_events(&args.events)?;
    let (Some(first), Some(last)) = (
        events.iter().map(|e| e.ts).min(),
        events.iter().map(|e| e.ts).max(),
    ) else {
        return Err(format!("{}: no events", args.events.display()));
    };
    let horizon = config.train.horizon_ms;
    if last.saturating_sub(first) <= 2 * horizon {
        return Err(format!(
            "the events span {:.1} days; propensity training needs more than two horizons ({} days each: train, then held out)",
            (last - first) as f64 / 86_400_000.0,
            horizon / 86_400_000
        ));
    }
    let activity = propensity::activity_of(events.into_iter());
    let replay = replay_views(args, config, &[ViewName::Features])?;
    let test_cutoff = last - horizon;
    let train_cutoff = test_cutoff - horizon;
    // Features "at" a cutoff: every change up to and including its time.
    let slice = |cutoff: Millis| propensity::Slice {
        features: features_before(&replay, Some(cutoff + 1)),
        cutoff,
    };
    let (model, evaluations) = propensity::fit(
        &slice(train_cutoff),
        &slice(test_cutoff),
        &activity,
        horizon,
        &[], // every feature: volume and recency matter here
        &config.views.windows.recency_days,
    )?;
    for (target, e) in &evaluations {
        eprintln!(
            "intentflow: {target}: held-out AUC {:.4}, log-loss {:.4} (base rate {:.4}); {} users, {} positive",
            e.auc, e.log_loss, e.base_log_loss, e.users, e.positives
        );
    }
    Ok(ModelFile::Propensity(model))
}

/// ALS on the `scores` just after `end - h`, judged on the purchases of the last `h`
/// (`[propensity] horizon_days`): hit-rate@10 against recommending the most popular items.
fn train_als(args: &TrainArgs, config: &Config) -> Result<ModelFile, String> {
    const K: usize = 10;
    let events = read_events(&args.events)?;
    let last = events
        .iter()
        .map(|e| e.ts)
        .max()
        .ok_or_else(|| format!("{}: no events", args.events.display()))?;
    let cutoff = last.saturating_sub(config.train.horizon_ms);
    let replay = replay_views(args, config, &[ViewName::Scores])?;
    let scores: BTreeMap<(String, String), f64> = replay
        .state_before(ViewName::Scores, Some(cutoff + 1))
        .into_iter()
        .map(|(key, value)| {
            let key: Value = serde_json::from_str(&key).expect("keys are JSON");
            let field = |name: &str| key[name].as_str().unwrap_or_default().to_string();
            (
                (field("user"), field("item")),
                value["score"].as_f64().unwrap_or(0.0),
            )
        })
        .collect();
    let previous = match &args.previous {
        Some(path) => match model_files::read(path)? {
            ModelFile::Als(model) => Some(model),
            other => {
                return Err(format!(
                    "--previous {}: a {} model, not ALS",
                    path.display(),
                    other.kind()
                ));
            }
        },
        None => None,
    };
    let spec = &config.train.als;
    let fit = als::fit(&scores, spec, previous.as_ref());
    if fit.items.is_empty() {
        return Err(format!(
            "no positive score before the cutoff {cutoff} (the last event minus [propensity] \
             horizon_days); give more events or a shorter horizon"
        ));
    }
    // Held out: what each known user bought after the cutoff.
    let mut bought: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for event in &events {
        if event.ts > cutoff
            && event.kind == intentflow_dataflows::model::EventKind::Purchase
            && let Some(item) = &event.item
        {
            bought
                .entry(event.user.as_str())
                .or_default()
                .push(item.as_str());
        }
    }
    let mut popularity: BTreeMap<&str, f64> = BTreeMap::new();
    for ((_, item), score) in &scores {
        *popularity.entry(item.as_str()).or_default() += score.max(0.0);
    }
    let mut popular: Vec<(&str, f64)> = popularity.into_iter().collect();
    popular.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(b.0)));
    let popular: Vec<&str> = popular.into_iter().take(K).map(|(item, _)| item).collect();
    let (mut users, mut als_hits, mut popular_hits) = (0usize, 0usize, 0usize);
    for (u, user) in fit.users.iter().enumerate() {
        let Some(items) = bought.get(user.as_str()) else {
            continue;
        };
        users += 1;
        let top: Vec<&str> = fit
            .top(u, K)
            .into_iter()
            .map(|i| fit.items[i].as_str())
            .collect();
        als_hits += usize::from(items.iter().any(|item| top.contains(item)));
        popular_hits += usize::from(items.iter().any(|item| popular.contains(item)));
    }
    let rate = |hits: usize| hits as f64 / users.max(1) as f64;
    eprintln!(
        "intentflow: ALS hit-rate@{K} on held-out purchases: {:.4}; most popular: {:.4} ({users} users)",
        rate(als_hits),
        rate(popular_hits)
    );
    let mut trained = serde_json::Map::new();
    trained.insert("cutoff".into(), serde_json::json!(cutoff));
    trained.insert("held_out_users".into(), serde_json::json!(users));
    trained.insert("hit_rate_at_10".into(), serde_json::json!(rate(als_hits)));
    trained.insert(
        "most_popular_hit_rate_at_10".into(),
        serde_json::json!(rate(popular_hits)),
    );
    Ok(ModelFile::Als(fit.model(spec, trained)))
}
