//! Windows keep state bounded (DESIGN.md §3): replaying 60 days of generated events through
//! a 7-day window, every arrangement's live record count stops growing once the window is
//! full. The same replay with a window longer than the data is the control: there the
//! state keeps growing, so the check can tell the two apart.

mod common;

use common::{intentflow, temp_file};
use std::collections::BTreeMap;

const DAY_MS: f64 = 86_400_000.0;

/// Per arrangement, its mean live records over samples whose time falls in each day range.
struct Growth {
    early: BTreeMap<String, f64>,
    late: BTreeMap<String, f64>,
}

fn replay(span_days: u64) -> Growth {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    let catalog = dir.path().join("catalog.jsonl");
    let stats = dir.path().join("stats.jsonl");
    let path = |p: &std::path::Path| p.to_str().unwrap().to_string();
    let generated = intentflow(&[
        "generate",
        "--users",
        "400",
        "--items",
        "200",
        "--events",
        "40000",
        "--days",
        "60",
        "--seed",
        "5",
        "--catalog-out",
        &path(&catalog),
    ])
    .success();
    std::fs::write(&events, generated.stdout.as_bytes()).unwrap();
    let config = temp_file(
        ".toml",
        &format!(
            "[windows]\nspan_ms = {}\nrecency_days = [1, 7]\n",
            span_days * 86_400_000
        ),
    );
    intentflow(&[
        "run",
        "--input",
        &path(&events),
        "--catalog",
        &path(&catalog),
        "--config",
        config.path().to_str().unwrap(),
        "--tick-ms",
        "60000",
        "--no-stdout",
        "--arrangement-stats",
        &path(&stats),
    ])
    .success();

    let samples: Vec<serde_json::Value> = std::fs::read_to_string(&stats)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let times: Vec<f64> = samples
        .iter()
        .filter_map(|s| s["time"].as_f64())
        .filter(|t| *t > 0.0)
        .collect();
    let first = times.iter().copied().fold(f64::INFINITY, f64::min);
    let mean_between = |from: f64, to: f64| {
        let mut sums: BTreeMap<String, (f64, f64)> = BTreeMap::new();
        for sample in &samples {
            let Some(time) = sample["time"].as_f64() else {
                continue;
            };
            let day = (time - first) / DAY_MS;
            if day < from || day >= to {
                continue;
            }
            for (name, records) in sample["records"].as_object().unwrap() {
                let entry = sums.entry(name.clone()).or_default();
                entry.0 += records.as_f64().unwrap();
                entry.1 += 1.0;
            }
        }
        assert!(!sums.is_empty(), "no samples between day {from} and {to}");
        sums.into_iter()
            .map(|(name, (sum, n))| (name, sum / n))
            .collect()
    };
    Growth {
        early: mean_between(10.0, 17.0),
        late: mean_between(50.0, 57.0),
    }
}

fn report(label: &str, growth: &Growth) -> (f64, f64) {
    let early: f64 = growth.early.values().sum();
    let late: f64 = growth.late.values().sum();
    eprintln!(
        "{label}: all arrangements, days 10-17 mean {early:.0} records, days 50-57 mean {late:.0}"
    );
    for (name, early) in &growth.early {
        let late = growth.late.get(name).copied().unwrap_or(0.0);
        eprintln!("  {name:<28} {early:>8.0} {late:>8.0}");
    }
    (early, late)
}

#[test]
fn windowed_state_stays_flat_after_the_window_fills() {
    let windowed = replay(7);
    let (early, late) = report("7-day window", &windowed);
    assert!(
        late < early * 1.3,
        "state grew from {early:.0} to {late:.0} records with a 7-day window"
    );
    for (name, early) in &windowed.early {
        let late = windowed.late.get(name).copied().unwrap_or(0.0);
        assert!(
            late < early * 1.5 + 200.0,
            "{name} grew from {early:.0} to {late:.0} records with a 7-day window"
        );
    }

    // The control: a window longer than the data keeps everything, and the check sees it.
    let unbounded = replay(90);
    let (early, late) = report("90-day window", &unbounded);
    assert!(
        late > early * 2.0,
        "control did not grow ({early:.0} -> {late:.0}): the measurement is blind"
    );
}
