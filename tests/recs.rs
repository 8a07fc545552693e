//! Issue 5's behaviour bars for `recs`: the view changes only when a user's list does, and
//! on generated data the blend beats most-popular and `similar` alone on the next
//! purchases.

mod common;

use common::*;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};

/// Event time in ms, whether the line carries a number or an RFC 3339 string.
fn event_ts(event: &Value) -> u64 {
    match &event["ts"] {
        Value::Number(n) => n.as_u64().unwrap(),
        Value::String(text) => chrono::DateTime::parse_from_rfc3339(text)
            .unwrap()
            .timestamp_millis() as u64,
        other => panic!("ts {other}"),
    }
}

fn events_of(text: &str) -> Vec<Value> {
    text.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// The `recs` changes of an output, as parsed lines.
fn recs_changes(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str::<Value>(line).unwrap())
        .filter(|line| line["view"] == "recs")
        .collect()
}

/// Each user's final list of recommended items.
fn final_lists(stdout: &str) -> BTreeMap<String, Vec<String>> {
    let mut live: BTreeMap<(String, String), i64> = BTreeMap::new();
    for change in recs_changes(stdout) {
        let user = change["key"]["user"].as_str().unwrap().to_string();
        *live.entry((user, change["value"].to_string())).or_default() +=
            change["diff"].as_i64().unwrap();
    }
    live.into_iter()
        .filter(|(_, count)| *count > 0)
        .map(|((user, value), _)| {
            let value: Value = serde_json::from_str(&value).unwrap();
            let items = value["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|entry| entry["item"].as_str().unwrap().to_string())
                .collect();
            (user, items)
        })
        .collect()
}

fn run_recs(events: &str, catalog: &tempfile::NamedTempFile, config: Option<&str>) -> Run {
    let input = temp_file(".jsonl", events);
    let config = config.map(|text| temp_file(".toml", text));
    let mut flags = vec![
        "--catalog",
        catalog.path().to_str().unwrap(),
        "--views",
        "recs",
    ];
    if let Some(config) = &config {
        flags.extend(["--config", config.path().to_str().unwrap()]);
    }
    run_engine(input.path(), &flags).success()
}

/// One event that cannot change anyone's list (an impression of the item the user is
/// already at: no score, no position, no transition) prints no `recs` line; one that can
/// (buying that item, which the user's list holds) prints exactly that user's change.
#[test]
fn recs_change_only_for_the_user_whose_list_changed() {
    let (events, catalog) = &*generate_with_catalog(&[
        "--users", "150", "--items", "80", "--events", "4000", "--seed", "5", "--days", "7",
    ]);
    let catalog = temp_file(".jsonl", catalog);
    let parsed = events_of(events);
    let last = parsed.iter().map(event_ts).max().unwrap();
    // Each user's position: the item of their latest event.
    let mut position: BTreeMap<String, (u64, String)> = BTreeMap::new();
    for event in &parsed {
        if let Some(item) = event["item"].as_str() {
            let user = event["user"].as_str().unwrap().to_string();
            let seen = (event_ts(event), item.to_string());
            let slot = position.entry(user).or_insert_with(|| seen.clone());
            if seen > *slot {
                *slot = seen;
            }
        }
    }
    let base = run_recs(events, &catalog, None);
    let lists = final_lists(&base.stdout);
    let (user, item) = lists
        .iter()
        .find_map(|(user, items)| {
            let (_, at) = position.get(user)?;
            items.contains(at).then(|| (user.clone(), at.clone()))
        })
        .expect("some user's list holds the item they are at");
    // On a whole second (the default tick), off the one-minute and one-hour refresh
    // steps, and after every other event.
    let at = (last / 3_600_000 + 1) * 3_600_000 - 30_000;
    assert!(at > last, "the added event must come last");
    let with = |event: Value| format!("{events}{event}\n");

    let quiet = json!({"user": user, "type": "impression", "item": item, "ts": at});
    let run = run_recs(&with(quiet), &catalog, None);
    let at_event: Vec<Value> = recs_changes(&run.stdout)
        .into_iter()
        .filter(|change| change["time"].as_u64().unwrap() >= at)
        .collect();
    assert!(
        at_event.is_empty(),
        "an impression changed recs: {at_event:?}"
    );
    // Between the last event and `at`, refreshes may move lists; compare with this run.
    let quiet_lists = final_lists(&run.stdout);

    let purchase = json!({"user": user, "type": "purchase", "item": item, "ts": at});
    let run = run_recs(&with(purchase), &catalog, None);
    let at_event: Vec<Value> = recs_changes(&run.stdout)
        .into_iter()
        .filter(|change| change["time"].as_u64().unwrap() >= at)
        .collect();
    let users: BTreeSet<&str> = at_event
        .iter()
        .map(|change| change["key"]["user"].as_str().unwrap())
        .collect();
    assert_eq!(users, BTreeSet::from([user.as_str()]), "{at_event:?}");
    let after = final_lists(&run.stdout);
    assert!(
        !after[&user].contains(&item),
        "{user} bought {item}, which is still recommended: {:?}",
        after[&user]
    );
    let mut others = after.clone();
    others.remove(&user);
    let mut before = quiet_lists;
    before.remove(&user);
    assert_eq!(others, before, "other users' lists changed");
}

/// Time split: the views after all events up to a week before the end, against each
/// user's purchases in that last week. The blend must beat recommending the most popular
/// items and recommending from `similar` alone.
#[test]
fn recs_beat_most_popular_and_similar_alone_on_next_purchases() {
    let (events, catalog) = &*generate_with_catalog(&[
        "--users", "2000", "--items", "400", "--events", "80000", "--seed", "11", "--days", "28",
    ]);
    let catalog = temp_file(".jsonl", catalog);
    let parsed = events_of(events);
    let last = parsed.iter().map(event_ts).max().unwrap();
    let cutoff = last - 7 * 86_400_000;
    let mut training = String::new();
    for (line, event) in events.lines().zip(&parsed) {
        if event_ts(event) <= cutoff {
            training.push_str(line);
            training.push('\n');
        }
    }
    let mut bought: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut engaged: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for event in &parsed {
        let (Some(user), Some(item)) = (event["user"].as_str(), event["item"].as_str()) else {
            continue;
        };
        let kind = event["type"].as_str().unwrap_or_default();
        if event_ts(event) > cutoff {
            if kind == "purchase" {
                bought.entry(user.into()).or_default().insert(item.into());
            }
        } else if ["click", "add_to_cart", "purchase"].contains(&kind) {
            engaged.entry(item.into()).or_default().insert(user.into());
        }
    }
    let mut popular: Vec<(&String, usize)> = engaged
        .iter()
        .map(|(item, users)| (item, users.len()))
        .collect();
    popular.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    let popular: BTreeSet<&String> = popular.into_iter().take(10).map(|(item, _)| item).collect();

    let hit_rate = |lists: &BTreeMap<String, Vec<String>>| {
        let hits = bought
            .iter()
            .filter(|(user, items)| {
                lists
                    .get(*user)
                    .is_some_and(|list| list.iter().take(10).any(|item| items.contains(item)))
            })
            .count();
        hits as f64 / bought.len() as f64
    };
    let blend = hit_rate(&final_lists(&run_recs(&training, &catalog, None).stdout));
    let similar_only =
        "[recs]\nweights = { similar = 1.0, next = 0, als = 0, segment = 0, popular = 0 }\n";
    let similar = hit_rate(&final_lists(
        &run_recs(&training, &catalog, Some(similar_only)).stdout,
    ));
    let most_popular = bought
        .values()
        .filter(|items| items.iter().any(|item| popular.contains(item)))
        .count() as f64
        / bought.len() as f64;
    eprintln!(
        "hit-rate@10 on the last week's purchases of {} users: recs {blend:.4}, similar alone {similar:.4}, most popular {most_popular:.4}",
        bought.len()
    );
    assert!(
        blend > most_popular,
        "recs {blend} vs most popular {most_popular}"
    );
    assert!(blend > similar, "recs {blend} vs similar alone {similar}");
}
