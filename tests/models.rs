//! Issue 4's quality bars on generated data: segments recover the generator's behaviour
//! groups, propensity ranks held-out users far better than chance.

mod common;

use common::*;
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};

/// 2000 users over four weeks, with their catalog and true archetypes.
struct Generated {
    events: tempfile::NamedTempFile,
    catalog: tempfile::NamedTempFile,
    truth: tempfile::NamedTempFile,
}

fn generated() -> Generated {
    let dir = tempfile::tempdir().unwrap();
    let (catalog, truth) = (
        dir.path().join("catalog.jsonl"),
        dir.path().join("truth.jsonl"),
    );
    let run = intentflow(&[
        "generate",
        "--users",
        "2000",
        "--items",
        "400",
        "--events",
        "80000",
        "--days",
        "28",
        "--seed",
        "11",
        "--catalog-out",
        catalog.to_str().unwrap(),
        "--truth-out",
        truth.to_str().unwrap(),
    ])
    .success();
    let copy =
        |path: &std::path::Path| temp_file(".jsonl", &std::fs::read_to_string(path).unwrap());
    Generated {
        events: temp_file(".jsonl", &run.stdout),
        catalog: copy(&catalog),
        truth: copy(&truth),
    }
}

fn path(file: &tempfile::NamedTempFile) -> &str {
    file.path().to_str().unwrap()
}

fn train(kind: &str, data: &Generated, extra: &[&str]) -> (Value, String) {
    let out = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    let mut args = vec![
        "train",
        kind,
        "--events",
        path(&data.events),
        "--catalog",
        path(&data.catalog),
        "--out",
        path(&out),
    ];
    args.extend_from_slice(extra);
    let run = intentflow(&args).success();
    let model = serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap();
    (model, run.stderr)
}

/// The adjusted Rand index, computed here from the contingency table.
fn adjusted_rand_index(pairs: &[(String, String)]) -> f64 {
    let choose2 = |n: usize| (n * n.saturating_sub(1) / 2) as f64;
    let mut cells: HashMap<(&str, &str), usize> = HashMap::new();
    let mut rows: HashMap<&str, usize> = HashMap::new();
    let mut cols: HashMap<&str, usize> = HashMap::new();
    for (a, b) in pairs {
        *cells.entry((a, b)).or_default() += 1;
        *rows.entry(a).or_default() += 1;
        *cols.entry(b).or_default() += 1;
    }
    let index: f64 = cells.values().map(|&n| choose2(n)).sum();
    let (a, b): (f64, f64) = (
        rows.values().map(|&n| choose2(n)).sum(),
        cols.values().map(|&n| choose2(n)).sum(),
    );
    let expected = a * b / choose2(pairs.len());
    (index - expected) / ((a + b) / 2.0 - expected)
}

#[test]
fn segments_recover_the_generated_behaviour_groups() {
    let data = generated();
    let (model, stderr) = train("kmeans", &data, &["--truth", path(&data.truth)]);
    let reported = model["trained"]["adjusted_rand_index"].as_f64().unwrap();
    eprintln!("{stderr}");
    // The engine's live segments at the end of the stream, against the true archetypes.
    let model_file = temp_file(".json", &model.to_string());
    let run = run_engine(
        data.events.path(),
        &[
            "--catalog",
            path(&data.catalog),
            "--model",
            path(&model_file),
            "--views",
            "segments",
        ],
    );
    let state = run.output().final_state();
    let truth: BTreeMap<String, String> = std::fs::read_to_string(data.truth.path())
        .unwrap()
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap();
            (
                v["user"].as_str().unwrap().into(),
                v["archetype"].as_str().unwrap().into(),
            )
        })
        .collect();
    let pairs: Vec<(String, String)> = state
        .iter()
        .map(|((_, key), (value, _))| {
            let user = key.value()["user"].as_str().unwrap().to_string();
            (
                value["segment"].as_str().unwrap().to_string(),
                truth[&user].clone(),
            )
        })
        .collect();
    assert!(
        pairs.len() > 1900,
        "only {} users have a segment",
        pairs.len()
    );
    let ari = adjusted_rand_index(&pairs);
    eprintln!("adjusted Rand index: train reports {reported:.4}, engine segments {ari:.4}");
    assert!(
        ari >= 0.9,
        "segments do not recover the groups: ARI {ari:.4}"
    );
    assert!(
        (ari - reported).abs() < 0.02,
        "train reported {reported}, engine gives {ari}"
    );
    // Names follow behaviour: most true buyers sit in the segment named "buyers".
    let buyers = pairs.iter().filter(|(_, t)| t == "buyer").count();
    let named_segment: HashMap<String, String> = state
        .values()
        .map(|(v, _)| {
            (
                v["segment"].as_str().unwrap().into(),
                v["name"].as_str().unwrap().into(),
            )
        })
        .collect();
    let in_buyers = pairs
        .iter()
        .filter(|(s, t)| t == "buyer" && named_segment[s] == "buyers")
        .count();
    assert!(
        in_buyers * 10 >= buyers * 8,
        "{in_buyers} of {buyers} buyers are named buyers"
    );
}

#[test]
fn propensity_ranks_held_out_users_well_above_chance() {
    let data = generated();
    let (model, stderr) = train("propensity", &data, &[]);
    eprintln!("{stderr}");
    let conversion = &model["trained"]["conversion"];
    let auc = conversion["auc"].as_f64().unwrap();
    assert!(
        conversion["held_out_positives"].as_u64().unwrap() > 20,
        "{conversion}"
    );
    assert!(auc > 0.75, "conversion AUC {auc}");
    assert!(
        conversion["log_loss"].as_f64().unwrap()
            < conversion["base_rate_log_loss"].as_f64().unwrap(),
        "{conversion}"
    );
    let churn_auc = model["trained"]["churn"]["auc"].as_f64().unwrap();
    assert!(churn_auc > 0.5, "churn AUC {churn_auc}");
}

/// Rows of a view: (key, value), as the oracle's scoring reads them.
pub type Rows = Vec<(Value, Value)>;

#[path = "oracle/models.rs"]
#[allow(dead_code)]
mod scoring;

/// One view's rows after every change with time `< before`, by user.
fn rows_before(stdout: &str, view: &str, before: u64) -> BTreeMap<String, Value> {
    let mut live: BTreeMap<(String, String), i64> = BTreeMap::new();
    for line in stdout.lines() {
        let change: Value = serde_json::from_str(line).unwrap();
        if change["view"] != view || change["time"].as_u64().unwrap() >= before {
            continue;
        }
        let user = change["key"]["user"].as_str().unwrap().to_string();
        *live.entry((user, change["value"].to_string())).or_default() +=
            change["diff"].as_i64().unwrap();
    }
    live.into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|((user, value), _)| (user, serde_json::from_str(&value).unwrap()))
        .collect()
}

fn segment_of(model: &Value, features: &BTreeMap<String, Value>) -> BTreeMap<String, Value> {
    let rows: Rows = features
        .iter()
        .map(|(user, value)| (Value::from(user.as_str()), value.clone()))
        .collect();
    scoring::segment_rows(model, &rows)
        .into_iter()
        .map(|(user, value)| (user.as_str().unwrap().to_string(), value))
        .collect()
}

/// A refit replaces the model at one event time; the users printed at that time are
/// exactly those whose segment differs between (old model, features before) and (new
/// model, features at that time), and most users print nothing.
#[test]
fn refit_changes_only_users_whose_nearest_centroid_changed() {
    let data = generated();
    // The first model sees only the first fifth of the stream, so the refit moves it.
    let all = std::fs::read_to_string(data.events.path()).unwrap();
    let first_fifth: String = all.lines().take(16_000).map(|l| format!("{l}\n")).collect();
    let early = Generated {
        events: temp_file(".jsonl", &first_fifth),
        catalog: temp_file(
            ".jsonl",
            &std::fs::read_to_string(data.catalog.path()).unwrap(),
        ),
        truth: temp_file(".jsonl", ""),
    };
    let (old_model, _) = train("kmeans", &early, &[]);
    let old_file = temp_file(".json", &old_model.to_string());
    let refit_dir = tempfile::tempdir().unwrap();
    let run = run_engine(
        data.events.path(),
        &[
            "--catalog",
            path(&data.catalog),
            "--model",
            path(&old_file),
            "--views",
            "features,segments",
            "--refit-every",
            "50000",
            "--refit-out",
            refit_dir.path().to_str().unwrap(),
        ],
    );
    let refit_at: u64 = run
        .stderr
        .lines()
        .find_map(|l| l.strip_prefix("intentflow: refitted k-means at "))
        .and_then(|rest| rest.split_whitespace().next())
        .expect("one refit")
        .parse()
        .unwrap();
    let new_model: Value = serde_json::from_str(
        &std::fs::read_to_string(refit_dir.path().join("kmeans.json")).unwrap(),
    )
    .unwrap();
    let changes: String = run
        .stdout
        .lines()
        .filter(|l| l.contains("\"view\""))
        .map(|l| format!("{l}\n"))
        .collect();
    let (features_before, features_at) = (
        rows_before(&changes, "features", refit_at),
        rows_before(&changes, "features", refit_at + 1),
    );
    let (old, new) = (
        segment_of(&old_model, &features_before),
        segment_of(&new_model, &features_at),
    );
    let users: std::collections::BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    let expected: Vec<&String> = users
        .into_iter()
        .filter(|u| old.get(*u) != new.get(*u))
        .collect();
    let mut printed: Vec<String> = changes
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|c| c["view"] == "segments" && c["time"].as_u64() == Some(refit_at))
        .map(|c| c["key"]["user"].as_str().unwrap().to_string())
        .collect();
    printed.dedup();
    let printed: Vec<&String> = printed.iter().collect();
    assert_eq!(printed, expected, "users printed at the refit");
    let moved_by_refit_alone = expected
        .iter()
        .filter(|u| features_before.get(**u) == features_at.get(**u))
        .count();
    eprintln!(
        "refit at {refit_at}: {} of {} users changed segment, {moved_by_refit_alone} of them without a feature change",
        expected.len(),
        new.len()
    );
    assert!(
        moved_by_refit_alone > 0,
        "the refit moved nobody; the test proves nothing"
    );
    assert!(
        expected.len() * 4 < new.len(),
        "the refit re-printed most users"
    );
}

/// The README's persona example: with the bundled model, u85 of the bundled example moves
/// from browsers to buyers at this time.
#[test]
fn bundled_models_load_and_show_the_readme_persona_move() {
    let run = run_engine(
        &repo_path("examples/events.jsonl"),
        &[
            "--catalog",
            repo_path("examples/catalog.jsonl").to_str().unwrap(),
            "--model",
            repo_path("examples/segments.json").to_str().unwrap(),
            "--model",
            repo_path("examples/propensity.json").to_str().unwrap(),
            "--views",
            "segments,propensity",
        ],
    );
    let u85: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.contains("\"view\":\"segments\"") && l.contains("\"u85\""))
        .collect();
    assert_eq!(
        u85,
        [
            r#"{"view":"segments","key":{"user":"u85"},"time":1767351218000,"diff":1,"value":{"segment":"c1","name":"browsers"}}"#,
            r#"{"view":"segments","key":{"user":"u85"},"time":1767826469000,"diff":-1,"value":{"segment":"c1","name":"browsers"}}"#,
            r#"{"view":"segments","key":{"user":"u85"},"time":1767826469000,"diff":1,"value":{"segment":"c3","name":"buyers"}}"#,
        ]
    );
    assert!(run.stdout.contains("\"view\":\"propensity\""));
}

#[test]
fn als_beats_most_popular_on_held_out_purchases() {
    let data = generated();
    let (model, stderr) = train("als", &data, &[]);
    eprintln!("{stderr}");
    let trained = &model["trained"];
    let (als, popular) = (
        trained["hit_rate_at_10"].as_f64().unwrap(),
        trained["most_popular_hit_rate_at_10"].as_f64().unwrap(),
    );
    assert!(
        trained["held_out_users"].as_u64().unwrap() > 50,
        "{trained}"
    );
    assert!(als > popular, "ALS {als} vs most popular {popular}");
    assert_eq!(model["items"][0]["factors"].as_array().unwrap().len(), 16);
}
