//! The `experiments` view end to end (issue 6): the engine against the oracle at every
//! progress line, assignment across worker and process counts, and the statistics doing
//! their job on simulated experiments: a true uplift is detected, an A/A test is
//! significant about 5 % of the time, and a broken split raises the SRM flag.

mod common;
mod oracle;

use common::{Granularity, intentflow, repo_path, run_engine, temp_file};
use oracle::Params;
use serde_json::Value;
use std::collections::BTreeMap;

/// An A/B test whose variants differ in their recs blend (the example config's is the same
/// shape); the A/A test below has no `recs_weights`.
const AB_CONFIG: &str = r#"
[[experiments]]
name = "strategy"
salt = "strategy-2026"
attribution_ms = 3600000
variants = [
  { name = "control", weight = 0.5 },
  { name = "treatment", weight = 0.5, recs_weights = { similar = 0.0, next = 0.0, segment = 1.0, popular = 1.0 } },
]

[[experiments]]
name = "layout"
attribution_ms = 86400000
variants = [{ name = "list" }, { name = "grid", weight = 2 }, { name = "carousel" }]
"#;

const AA_CONFIG: &str = r#"
[[experiments]]
name = "aa"
variants = [{ name = "control" }, { name = "treatment" }]
"#;

/// `intentflow generate` simulating the first experiment of `config`.
fn simulated(config: &str, args: &[&str]) -> String {
    let config_file = temp_file(".toml", config);
    let mut full = vec!["generate"];
    full.extend_from_slice(args);
    full.extend(["--config", config_file.path().to_str().unwrap()]);
    intentflow(&full).success().stdout
}

/// Runs the engine with `config` and checks `views` against the oracle at every progress
/// line. Returns the engine's stdout.
fn check_against_oracle(input: &str, config: &str, views: &[&str], flags: &[&str]) -> String {
    check_against_oracle_at(
        input,
        Params::default().with_config(config),
        views,
        flags,
        Granularity::Progress,
    )
}

/// `check_against_oracle` with the oracle's params (times) and granularity given.
fn check_against_oracle_at(
    input: &str,
    params: Params,
    views: &[&str],
    flags: &[&str],
    granularity: Granularity,
) -> String {
    assert!(params.config_text.is_some(), "a config");
    oracle::check::engine_against_oracle(input, params, views, flags, granularity)
        .run
        .stdout
}

/// The final rows of `view` in `stdout`: key → value.
fn final_rows(stdout: &str, view: &str) -> BTreeMap<String, Value> {
    let output = common::Output::parse(stdout).unwrap();
    output
        .final_state()
        .into_iter()
        .filter(|((v, _), _)| v == view)
        .map(|((_, key), (value, _))| (key.as_str().to_string(), value))
        .collect()
}

/// Change lines sorted (where progress lines fall is not deterministic).
fn sorted_changes(stdout: &str) -> Vec<String> {
    let mut lines: Vec<String> = stdout
        .lines()
        .filter(|line| !line.starts_with("{\"progress\""))
        .map(String::from)
        .collect();
    lines.sort_unstable();
    lines
}

#[test]
fn experiments_match_the_oracle_at_every_progress_line() {
    let events = simulated(
        AB_CONFIG,
        &[
            "--users",
            "400",
            "--items",
            "150",
            "--events",
            "30000",
            "--days",
            "5",
            "--seed",
            "21",
            "--uplift",
            "treatment=0.3",
        ],
    );
    let impressions = events
        .lines()
        .filter(|l| l.contains("\"impression\""))
        .count();
    assert!(impressions > 1000, "{impressions} impressions");
    let one = check_against_oracle(&events, AB_CONFIG, &["experiments"], &[]);
    let four = check_against_oracle(&events, AB_CONFIG, &["experiments"], &["--workers", "4"]);
    assert_eq!(sorted_changes(&one), sorted_changes(&four));
    let rows = final_rows(&one, "experiments");
    assert_eq!(rows.len(), 5, "2 + 3 variant rows: {rows:?}");
    let treatment = &rows[r#"{"experiment":"strategy","variant":"treatment"}"#];
    assert!(treatment["clicks"].as_i64().unwrap() > 50, "{treatment}");
    assert!(
        treatment["conversions"].as_i64().unwrap() > 0,
        "{treatment}"
    );
    assert!(treatment["p_value"].is_number(), "{treatment}");
}

/// A deterministic jumble of impressions (with and without `rec`), click-throughs, clicks
/// from elsewhere, carts, purchases and dwell, partly out of order: the engine equals the
/// oracle after every change time, attribution windows and late events included.
#[test]
fn attribution_matches_the_oracle_at_every_change_time() {
    let mut state: u64 = 12345;
    let mut next = |n: u64| {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) % n
    };
    let mut lines = Vec::new();
    let mut lists: Vec<(String, String, Vec<String>)> = Vec::new();
    for i in 0..1500u64 {
        let user = format!("u{}", next(40));
        let ts = 1_767_225_600_000 + i * 400 + next(400);
        let item = format!("i{}", next(12));
        let line = match next(10) {
            0..=2 => {
                let items: Vec<String> =
                    (0..1 + next(4)).map(|_| format!("i{}", next(12))).collect();
                let rec = format!("r{i}");
                lists.push((user.clone(), rec.clone(), items.clone()));
                let rec_field = if next(5) == 0 {
                    String::new()
                } else {
                    format!(r#","rec":"{rec}""#)
                };
                format!(
                    r#"{{"user":"{user}","type":"impression","ts":{ts},"items":{}{rec_field}}}"#,
                    serde_json::to_string(&items).unwrap()
                )
            }
            3..=5 => {
                // Mostly a click-through of a recent list (by its user, on one of its items);
                // else a click from elsewhere, or with another list's id.
                let (mut user, mut item, mut rec) = (user, item, String::new());
                if !lists.is_empty() {
                    let n = lists.len();
                    let (list_user, list_rec, items) =
                        &lists[n - 1 - next(n.min(6) as u64) as usize];
                    rec = format!(r#","rec":"{list_rec}""#);
                    if next(3) != 0 {
                        user = list_user.clone();
                        item = items[next(items.len() as u64) as usize].clone();
                    }
                }
                if next(6) == 0 {
                    rec.clear();
                }
                let dwell = if next(2) == 0 {
                    format!(r#","dwell_ms":{}"#, next(9000))
                } else {
                    String::new()
                };
                format!(
                    r#"{{"user":"{user}","type":"click","ts":{ts},"item":"{item}"{rec}{dwell}}}"#
                )
            }
            6 => format!(r#"{{"user":"{user}","type":"add_to_cart","ts":{ts},"item":"{item}"}}"#),
            7 => format!(
                r#"{{"user":"{user}","type":"purchase","ts":{ts},"item":"{item}","value":{}.5}}"#,
                next(90)
            ),
            _ => format!(
                r#"{{"user":"{user}","type":"page_view","ts":{ts},"item":"{item}","dwell_ms":{}}}"#,
                next(60_000)
            ),
        };
        lines.push(line);
    }
    // The window's edges: a click-through exactly `attribution_ms` (20 s) after its
    // impression counts, one a millisecond later does not.
    let edge: u64 = 1_767_225_600_000 + 1500 * 400 + 1_000;
    lines.extend([
        format!(r#"{{"user":"edge","type":"impression","ts":{edge},"items":["i1"],"rec":"e"}}"#),
        format!(
            r#"{{"user":"edge","type":"click","ts":{},"item":"i1","rec":"e"}}"#,
            edge + 20_000
        ),
        format!(
            r#"{{"user":"edge","type":"click","ts":{},"item":"i1","rec":"e"}}"#,
            edge + 20_001
        ),
    ]);
    // Some lines arrive up to 40 lines (about 16 s) late.
    for i in 0..lines.len() {
        if next(15) == 0 {
            let j = (i + 1 + next(40) as usize).min(lines.len() - 1);
            lines.swap(i, j);
        }
    }
    let input = lines.join("\n") + "\n";
    let config = r#"
[[experiments]]
name = "short"
attribution_ms = 20000
variants = [{ name = "a" }, { name = "b" }, { name = "c", weight = 2 }]

[[experiments]]
name = "long"
salt = "other"
variants = [{ name = "x", weight = 3 }, { name = "y" }]
"#;
    let params = Params::default().with_config(config).times(1, 3000);
    let stdout = check_against_oracle_at(
        &input,
        params,
        &["experiments"],
        &["--tick-ms", "1", "--lateness-ms", "3000", "--workers", "2"],
        Granularity::EveryTime,
    );
    // The jumble exercises both outcomes: some clicks count, most do not.
    let rows = final_rows(&stdout, "experiments");
    assert_eq!(rows.len(), 5);
    let sum = |field: &str| -> i64 {
        rows.iter()
            .filter(|(key, _)| key.contains("short"))
            .map(|(_, row)| row[field].as_i64().unwrap())
            .sum()
    };
    let clicks = lines.iter().filter(|l| l.contains(r#""click""#)).count() as i64;
    eprintln!(
        "{} of {clicks} clicks attributed; {} conversions",
        sum("clicks"),
        sum("conversions")
    );
    assert!(sum("clicks") > 50 && sum("clicks") < clicks * 3 / 4);
    assert!(sum("conversions") > 0 && sum("add_to_carts") > 0);
}

/// `recs` computed with each user's variant's blend, and carrying the variant: checked
/// against the oracle (which assigns variants with its own code).
#[test]
fn recs_follow_each_users_variant() {
    let events = simulated(
        AB_CONFIG,
        &[
            "--users", "150", "--items", "80", "--events", "8000", "--days", "3", "--seed", "5",
        ],
    );
    let stdout = check_against_oracle(
        &events,
        AB_CONFIG,
        &["recs", "experiments"],
        &["--workers", "2"],
    );
    let recs = final_rows(&stdout, "recs");
    let variants: Vec<&str> = recs
        .values()
        .filter_map(|v| v["variant"].as_str())
        .collect();
    for name in ["control", "treatment"] {
        assert!(
            variants.iter().filter(|v| **v == name).count() > 20,
            "{name}: {variants:?}"
        );
    }
    // The treatment's blend has no similar or next source.
    for value in recs.values().filter(|v| v["variant"] == "treatment") {
        for item in value["items"].as_array().unwrap() {
            let reason = item["reason"].as_str().unwrap();
            assert!(reason != "similar" && reason != "next", "{value}");
        }
    }
}

/// Assignment is a function of (salt, user) only: the same rows for 1 and 4 workers and for
/// 2 processes, and every impression's echoed variant (the generator assigns with the
/// GrowthBook hash too) is the user's `recs` variant.
#[test]
fn assignment_is_the_same_for_any_workers_and_processes() {
    let events = simulated(
        AB_CONFIG,
        &[
            "--users", "300", "--events", "12000", "--days", "2", "--seed", "8",
        ],
    );
    let input = temp_file(".jsonl", &events);
    let config = temp_file(".toml", AB_CONFIG);
    let config = config.path().to_str().unwrap();
    let flags = |extra: &[&'static str]| {
        let mut flags = vec!["--views", "recs,experiments", "--config", config];
        flags.extend_from_slice(extra);
        flags
    };
    let one = run_engine(input.path(), &flags(&[])).stdout;
    let four = run_engine(input.path(), &flags(&["--workers", "4"])).stdout;
    assert_eq!(sorted_changes(&one), sorted_changes(&four));

    let port = 24_000 + (std::process::id() % 2000) as u16 * 2;
    let hostfile = temp_file(
        ".txt",
        &format!("127.0.0.1:{port}\n127.0.0.1:{}\n", port + 1),
    );
    let hosts = hostfile.path().to_str().unwrap();
    let input_path = input.path().to_str().unwrap();
    let process = |index: &'static str| {
        let mut args = vec!["run", "--input", input_path];
        args.extend(flags(&["--processes", "2", "--hostfile"]));
        args.extend([hosts, "--process", index]);
        args.into_iter().map(String::from).collect::<Vec<_>>()
    };
    let second_args = process("1");
    let second = std::thread::spawn(move || {
        let args: Vec<&str> = second_args.iter().map(String::as_str).collect();
        intentflow(&args).success()
    });
    let first_args = process("0");
    let first_args: Vec<&str> = first_args.iter().map(String::as_str).collect();
    let first = intentflow(&first_args).success();
    second.join().unwrap();
    assert_eq!(sorted_changes(&one), sorted_changes(&first.stdout));

    let recs = final_rows(&one, "recs");
    let mut checked = 0;
    for line in events.lines().filter(|l| l.contains("\"impression\"")) {
        let event: Value = serde_json::from_str(line).unwrap();
        let key = format!(r#"{{"user":"{}"}}"#, event["user"].as_str().unwrap());
        if let Some(row) = recs.get(&key) {
            assert_eq!(row["variant"], event["variant"], "{line}");
            checked += 1;
        }
    }
    assert!(
        checked > 500,
        "only {checked} impressions of users with recs"
    );
}

/// The final `experiments` rows after running `events`, by variant name.
fn final_experiment_rows(events: &str, config: &str) -> BTreeMap<String, Value> {
    let input = temp_file(".jsonl", events);
    let config_file = temp_file(".toml", config);
    let run = run_engine(
        input.path(),
        &[
            "--views",
            "experiments",
            "--config",
            config_file.path().to_str().unwrap(),
            "--format",
            "upsert",
        ],
    );
    final_rows(&run.stdout, "experiments")
        .into_iter()
        .map(|(key, value)| {
            let key: Value = serde_json::from_str(&key).unwrap();
            (key["variant"].as_str().unwrap().to_string(), value)
        })
        .collect()
}

/// A 10 % relative CTR uplift, simulated on enough traffic, is reported with p < 0.05 and
/// an interval around it. (At this size the test's power is over 99.9 %: 8000 users gave
/// lifts from 0.04 to 0.14 over six seeds, 50 000 users 0.106 [0.084, 0.129].)
#[test]
fn a_true_uplift_is_detected() {
    let args = [
        "--users", "20000", "--items", "1000", "--events", "2000000", "--days", "14", "--seed",
        "101",
    ];
    let mut with_uplift = args.to_vec();
    with_uplift.extend(["--uplift", "treatment=0.1"]);
    let events = simulated(AA_CONFIG, &with_uplift);
    let row = &final_experiment_rows(&events, AA_CONFIG)["treatment"];
    let (lift, p) = (
        row["lift"].as_f64().unwrap(),
        row["p_value"].as_f64().unwrap(),
    );
    eprintln!(
        "uplift 0.1: lift {lift:.4} [{:.4}, {:.4}], p {p:.2e}, users {}",
        row["ci_low"], row["ci_high"], row["users"]
    );
    assert!(p < 0.05, "{row}");
    assert!((0.03..0.17).contains(&lift), "{row}");
    assert!(row["ci_low"].as_f64().unwrap() < 0.1 && row["ci_high"].as_f64().unwrap() > 0.1);
    assert_eq!(row["srm"], false, "{row}");
}

/// Without uplift the CTR test is significant at 5 % in about 5 % of the experiments (the
/// users are the units); a naive two-proportion test on impressions, which ignores that a
/// user's clicks go together, would be significant far more often.
#[test]
fn an_aa_test_is_significant_about_five_percent_of_the_time() {
    let seeds = 100;
    let mut significant = 0;
    let mut naive_significant = 0;
    let mut srm_flags = 0;
    for seed in 0..seeds {
        let seed = (1000 + seed).to_string();
        let events = simulated(
            AA_CONFIG,
            &[
                "--users", "400", "--items", "100", "--events", "20000", "--days", "7", "--seed",
                &seed,
            ],
        );
        let rows = final_experiment_rows(&events, AA_CONFIG);
        let (control, treatment) = (&rows["control"], &rows["treatment"]);
        let p = treatment["p_value"].as_f64().unwrap();
        significant += usize::from(p < 0.05);
        srm_flags += usize::from(treatment["srm"] == true);
        naive_significant += usize::from(naive_p_value(treatment, control) < 0.05);
    }
    eprintln!(
        "A/A over {seeds} seeds: p < 0.05 in {significant} (naive impression-level test: \
         {naive_significant}); SRM flagged in {srm_flags}"
    );
    // Binomial(100, 0.05): 1..=11 holds with probability 0.99.
    assert!((1..=11).contains(&significant), "{significant} of {seeds}");
    assert!(
        srm_flags <= 2,
        "{srm_flags} SRM flags at the 0.001 threshold"
    );
}

/// The two-proportion z-test that treats impressions as independent.
fn naive_p_value(variant: &Value, control: &Value) -> f64 {
    let counts = |row: &Value| {
        (
            row["clicks"].as_f64().unwrap(),
            row["impressions"].as_f64().unwrap(),
        )
    };
    let ((c1, n1), (c2, n2)) = (counts(variant), counts(control));
    let pooled = (c1 + c2) / (n1 + n2);
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 + 1.0 / n2)).sqrt();
    let z = ((c1 / n1 - c2 / n2) / se).abs();
    statrs::function::erf::erfc(z / std::f64::consts::SQRT_2)
}

/// A broken 50/50 split (the treatment loses a tenth of its users, as when its client fails
/// to log them) raises the SRM flag; the intact split does not.
#[test]
fn a_broken_split_raises_the_srm_flag() {
    let events = simulated(
        AA_CONFIG,
        &[
            "--users", "4000", "--items", "200", "--events", "200000", "--days", "7", "--seed",
            "77",
        ],
    );
    let intact = &final_experiment_rows(&events, AA_CONFIG)["treatment"];
    assert_eq!(intact["srm"], false, "{intact}");
    // Users whose impressions say treatment, every tenth of them dropped entirely.
    let mut treated: Vec<String> = events
        .lines()
        .filter(|l| l.contains(r#""variant":"treatment""#))
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["user"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    treated.sort();
    treated.dedup();
    let dropped: std::collections::BTreeSet<&String> = treated.iter().step_by(10).collect();
    let broken: String = events
        .lines()
        .filter(|l| {
            let user = serde_json::from_str::<Value>(l).unwrap()["user"]
                .as_str()
                .unwrap()
                .to_string();
            !dropped.contains(&user)
        })
        .flat_map(|l| [l, "\n"])
        .collect();
    let row = &final_experiment_rows(&broken, AA_CONFIG)["treatment"];
    eprintln!(
        "broken split: {} users, srm p {}",
        row["users"], row["srm_p_value"]
    );
    assert_eq!(row["srm"], true, "{row}");
    assert!(row["srm_p_value"].as_f64().unwrap() < 0.001);
}

/// The bundled example config runs its experiment on the bundled events (which have no
/// impressions: no rows), and generated traffic for it gives rows for both variants.
#[test]
fn example_config_runs_its_experiment() {
    let config = repo_path("examples/intentflow.toml");
    let config = config.to_str().unwrap();
    let run = intentflow(&[
        "generate",
        "--users",
        "200",
        "--events",
        "6000",
        "--config",
        config,
        "--uplift",
        "treatment=0.2",
    ])
    .success();
    let input = temp_file(".jsonl", &run.stdout);
    let out = run_engine(
        input.path(),
        &["--config", config, "--views", "experiments"],
    );
    let rows = final_rows(&out.stdout, "experiments");
    assert_eq!(rows.len(), 2, "{rows:?}");
    // The report reads that output: a table with the control first, and a chart.
    let output = temp_file(".jsonl", &out.stdout);
    let svg = temp_file(".svg", "");
    let report = intentflow(&[
        "report",
        "--input",
        output.path().to_str().unwrap(),
        "--svg",
        svg.path().to_str().unwrap(),
    ])
    .success();
    let table: Vec<&str> = report.stdout.lines().collect();
    assert!(
        table[0].starts_with("experiment strategy: sample ratio ok"),
        "{}",
        report.stdout
    );
    assert!(
        table[2].trim_start().starts_with("control"),
        "{}",
        report.stdout
    );
    assert!(
        table[3].trim_start().starts_with("treatment"),
        "{}",
        report.stdout
    );
    let chart = std::fs::read_to_string(svg.path()).unwrap();
    assert!(chart.contains("strategy: CTR (%)") && chart.contains("treatment"));
    let unknown = intentflow(&[
        "generate",
        "--events",
        "10",
        "--config",
        config,
        "--uplift",
        "nobody=0.1",
    ]);
    assert!(!unknown.status.success());
    assert!(
        unknown.stderr.contains("no variant \"nobody\""),
        "{}",
        unknown.stderr
    );
}
