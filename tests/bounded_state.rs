//! Windows keep state bounded (DESIGN.md §3): replaying 60 days of generated events through
//! a 7-day window, every stateful operator's live record count (differential's
//! arrangements, and the operators that keep state themselves: in-place reduces and
//! totals, window stashes, the blend) stops growing once the window is full. The same
//! replay with a window longer than the data is the control: there the state keeps
//! growing, so the check can tell the two apart.

mod common;

use common::{intentflow, temp_file};
use std::collections::BTreeMap;

const DAY_MS: f64 = 86_400_000.0;

/// Per operator, its live records over samples whose time falls in each day range: the
/// mean of each range, and the peak of the early one.
struct Growth {
    early: BTreeMap<String, f64>,
    early_peak: BTreeMap<String, f64>,
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
    // Per operator: (sum, count, max) of its record counts in the day range.
    let between = |from: f64, to: f64| {
        let mut sums: BTreeMap<String, (f64, f64, f64)> = BTreeMap::new();
        for sample in &samples {
            let Some(time) = sample["time"].as_f64() else {
                continue;
            };
            let day = (time - first) / DAY_MS;
            if day < from || day >= to {
                continue;
            }
            for (name, records) in sample["records"].as_object().unwrap() {
                let records = records.as_f64().unwrap();
                let entry = sums.entry(name.clone()).or_default();
                entry.0 += records;
                entry.1 += 1.0;
                entry.2 = entry.2.max(records);
            }
        }
        assert!(!sums.is_empty(), "no samples between day {from} and {to}");
        sums
    };
    let mean = |sums: &BTreeMap<String, (f64, f64, f64)>| {
        sums.iter()
            .map(|(name, (sum, n, _))| (name.clone(), sum / n))
            .collect()
    };
    let early = between(10.0, 17.0);
    Growth {
        early: mean(&early),
        early_peak: early
            .iter()
            .map(|(name, (_, _, peak))| (name.clone(), *peak))
            .collect(),
        late: mean(&between(50.0, 57.0)),
    }
}

fn report(label: &str, growth: &Growth) -> (f64, f64) {
    let early: f64 = growth.early.values().sum();
    let late: f64 = growth.late.values().sum();
    eprintln!(
        "{label}: all operators, days 10-17 mean {early:.0} records, days 50-57 mean {late:.0}"
    );
    eprintln!("  {:<28} {:>8} {:>8} {:>8}", "", "mean", "peak", "late");
    for (name, early) in &growth.early {
        let peak = growth.early_peak[name];
        let late = growth.late.get(name).copied().unwrap_or(0.0);
        eprintln!("  {name:<28} {early:>8.0} {peak:>8.0} {late:>8.0}");
    }
    (early, late)
}

/// Operators whose mean in the late range is well above their peak in the early one.
/// The peak, not the mean, is the baseline because an arrangement holds its updates in
/// batches that merge lazily: between merges it can hold up to about twice its live
/// records, and samples come once per worker step (a few per day of data), so an early
/// mean that happens to sample just after merges is a low floor; CI saw one. State that
/// grows with the data grows about fourfold from days 10-17 to days 50-57.
fn grown(growth: &Growth) -> Vec<String> {
    growth
        .early_peak
        .iter()
        .filter(|(name, peak)| {
            let late = growth.late.get(*name).copied().unwrap_or(0.0);
            late > *peak * 1.5 + 100.0
        })
        .map(|(name, _)| name.clone())
        .collect()
}

#[test]
fn windowed_state_stays_flat_after_the_window_fills() {
    let windowed = replay(7);
    let (early, late) = report("7-day window", &windowed);
    assert!(
        late < early * 1.3,
        "state grew from {early:.0} to {late:.0} records with a 7-day window"
    );
    let grew = grown(&windowed);
    assert!(
        grew.is_empty(),
        "with a 7-day window these operators grew past their early peak: {grew:?}"
    );

    // The control: a window longer than the data keeps everything, and the check sees it.
    let unbounded = replay(90);
    let (early, late) = report("90-day window", &unbounded);
    assert!(
        late > early * 2.0,
        "control did not grow ({early:.0} -> {late:.0}): the measurement is blind"
    );
    let grew = grown(&unbounded);
    assert!(
        grew.len() * 4 > unbounded.early.len(),
        "control: only {grew:?} of {} operators grew, the per-operator check is blind",
        unbounded.early.len()
    );
}
