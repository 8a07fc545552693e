//! Tests of the oracle's experiments (tests/oracle/experiments.rs) on their own: the
//! assignment against GrowthBook's vectors, a hand-made experiment whose every number was
//! computed independently (python3, centred sums and `math.erfc`), attribution edge cases
//! (a click counts only as a click-through: it carries the `rec` of an impression that
//! showed its item within the window; other actions follow any impression of their item),
//! and config errors. No engine run here.

mod common;
mod oracle;

use oracle::experiments::{self, Totals, bucket, bucket_ranges, variant_of_bucket};
use oracle::*;
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// 2023-11-14T22:13:20Z
const T0: i64 = 1_700_000_000_000;
const MINUTE: i64 = 60_000;

const TOLERANCE: f64 = 1e-9;

const CONFIG: &str = r#"
[[experiments]]
name = "strategy"
[[experiments.variants]]
name = "control"
weight = 0.5
[[experiments.variants]]
name = "treatment"
weight = 0.5
"#;

fn event(user: &str, kind: &str, minute: i64) -> Value {
    json!({"user": user, "type": kind, "ts": T0 + minute * MINUTE})
}

fn on(mut e: Value, item: &str) -> Value {
    e["item"] = json!(item);
    e
}

fn with(mut e: Value, field: &str, value: Value) -> Value {
    e[field] = value;
    e
}

fn impression(user: &str, minute: i64, items: &[&str]) -> Value {
    with(event(user, "impression", minute), "items", json!(items))
}

/// `e` with the recommendation list id `id` (`rec`).
fn rec(e: Value, id: &str) -> Value {
    with(e, "rec", json!(id))
}

/// A click on `item` that came from the list `id`.
fn click_from(user: &str, minute: i64, item: &str, id: &str) -> Value {
    rec(on(event(user, "click", minute), item), id)
}

fn lines(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

/// The `experiments` rows at the end of the input, by variant name (experiment "strategy").
fn final_rows(events: &[Value], config: &str) -> BTreeMap<String, Value> {
    let oracle = Oracle::new(&lines(events), Params::default().with_config(config));
    let state = oracle.state(&["experiments"], None);
    state
        .into_iter()
        .map(|((view, key), (value, _))| {
            assert_eq!(view, "experiments");
            let key = key.value();
            assert_eq!(key["experiment"], "strategy");
            (key["variant"].as_str().unwrap().to_string(), value)
        })
        .collect()
}

fn assert_close(row: &Value, field: &str, expected: f64) {
    let actual = row[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is {} in {row}", row[field]));
    assert!(
        (actual - expected).abs() <= TOLERANCE,
        "{field}: {actual}, expected {expected} (row {row})"
    );
}

fn assert_null(row: &Value, fields: &[&str]) {
    for field in fields {
        assert!(row[*field].is_null(), "{field} is {} in {row}", row[field]);
    }
}

const LIFT_FIELDS: [&str; 8] = [
    "lift",
    "ci_low",
    "ci_high",
    "p_value",
    "conversion_lift",
    "conversion_ci_low",
    "conversion_ci_high",
    "conversion_p_value",
];

// ---------------------------------------------------------------------------------------
// Assignment
// ---------------------------------------------------------------------------------------

#[test]
fn buckets_match_growthbook_hash_v2() {
    // util.hash(seed, value, 2) of @growthbook/growthbook, times 10000
    for (salt, user, expected) in [
        ("strategy", "u1", 5606),
        ("strategy", "u2", 5096),
        ("strategy", "user-42", 9653),
        ("s", "a", 1044),
        ("exp-2026", "u99999", 2554),
        ("", "a", 216),
    ] {
        assert_eq!(bucket(salt, user), expected, "bucket({salt:?}, {user:?})");
    }
    let cases = [
        ("strategy", "u1"),
        ("strategy", "u2"),
        ("strategy", "user-42"),
        ("s", "a"),
        ("exp-2026", "u99999"),
        ("", "a"),
    ];
    let variants = |weights: &[f64]| -> Vec<usize> {
        let bounds = bucket_ranges(weights);
        cases
            .iter()
            .map(|(salt, user)| variant_of_bucket(&bounds, bucket(salt, user)))
            .collect()
    };
    assert_eq!(variants(&[0.5, 0.5]), [1, 1, 1, 0, 0, 0]);
    assert_eq!(variants(&[0.2, 0.3, 0.5]), [2, 2, 2, 0, 1, 0]);
}

#[test]
fn bucket_ranges_follow_growthbook_at_uneven_boundaries() {
    // From GrowthBook's SDK: chooseVariation(b / 10000, getBucketRanges(3, 1, w)).
    let thirds = bucket_ranges(&[1.0 / 3.0; 3]);
    let uneven = bucket_ranges(&[0.1, 0.2, 0.7]);
    for (b, of_thirds, of_uneven) in [
        (999, 0, 0),
        (1000, 0, 1),
        (3000, 0, 1),
        (3333, 0, 2),
        (3334, 1, 2),
        (6666, 1, 2),
        (6667, 2, 2),
        (9999, 2, 2),
    ] {
        assert_eq!(variant_of_bucket(&thirds, b), of_thirds, "bucket {b}");
        assert_eq!(variant_of_bucket(&uneven, b), of_uneven, "bucket {b}");
    }
    let halves = bucket_ranges(&[0.5, 0.5]);
    assert_eq!(variant_of_bucket(&halves, 4999), 0);
    assert_eq!(variant_of_bucket(&halves, 5000), 1);
    assert_eq!(variant_of_bucket(&halves, 9999), 1);
    assert_eq!(bucket("strategy", "u18"), 4999);
}

#[test]
fn salt_defaults_to_the_name_and_recs_variant_follows_the_first_experiment() {
    let config = parse_config(CONFIG).unwrap();
    let e = &config.experiments[0];
    assert_eq!(e.salt, "strategy");
    assert_eq!(e.attribution_ms, 86_400_000);
    assert_eq!(e.assign("u1"), 1);
    assert_eq!(e.assign("u3"), 0);
    let params = Params::default().with_config(
        r#"
[recs]
weights = { similar = 2.0 }
[[experiments]]
name = "strategy"
salt = "other"
[[experiments.variants]]
name = "control"
[[experiments.variants]]
name = "treatment"
recs_weights = { similar = 0.0, next = 0.25 }
[[experiments]]
name = "second"
[[experiments.variants]]
name = "a"
[[experiments.variants]]
name = "b"
"#,
    );
    assert_eq!(params.experiments[0].salt, "other");
    let treated = (1..100)
        .map(|i| format!("u{i}"))
        .find(|u| bucket("other", u) >= 5000)
        .unwrap();
    let control = (1..100)
        .map(|i| format!("u{i}"))
        .find(|u| bucket("other", u) < 5000)
        .unwrap();
    assert_eq!(
        experiments::recs_variant(&params, &treated),
        ("treatment".to_string(), [0, 250, 1000, 300, 100])
    );
    assert_eq!(
        experiments::recs_variant(&params, &control),
        ("control".to_string(), [2000, 500, 1000, 300, 100])
    );
    assert_eq!(
        experiments::recs_variant(&Params::default(), "u1"),
        ("default".to_string(), [1000, 500, 1000, 300, 100])
    );
}

// ---------------------------------------------------------------------------------------
// A hand-made experiment
// ---------------------------------------------------------------------------------------

/// Control (buckets < 5000): u3, u6, u7; treatment: u1, u2, u4, u5 (u5 never sees an
/// impression). Each user also has clicks that are not click-throughs (no `rec`, the `rec`
/// of an impression that did not show the item, another user's `rec`): they change nothing.
fn hand_made_events() -> Vec<Value> {
    vec![
        // u3: I = 2, C = 1, a purchase of 10.50 on an item of the first impression
        rec(impression("u3", 0, &["p1", "p2"]), "r3a"),
        rec(on(event("u3", "impression", 1), "p3"), "r3b"),
        click_from("u3", 2, "p1", "r3a"),
        // not a click-through: r3b showed p3 only
        click_from("u3", 2, "p2", "r3b"),
        with(on(event("u3", "purchase", 3), "p2"), "value", json!(10.5)),
        // u6: I = 1 (without rec), C = 0, one attributed dwell (a page view)
        impression("u6", 0, &["p1"]),
        with(
            on(event("u6", "page_view", 1), "p1"),
            "dwell_ms",
            json!(5000),
        ),
        // a click without rec: neither a click nor a dwell
        with(on(event("u6", "click", 1), "p1"), "dwell_ms", json!(700)),
        // u7: I = 3, C = 1 (with dwell); the click on p9 is not attributed
        rec(impression("u7", 0, &["p4"]), "r7a"),
        rec(impression("u7", 1, &["p4"]), "r7b"),
        rec(impression("u7", 2, &["p4"]), "r7c"),
        with(click_from("u7", 3, "p4", "r7b"), "dwell_ms", json!(3000)),
        click_from("u7", 3, "p9", "r7a"),
        // u1: I = 2, C = 2, a purchase of 20
        rec(impression("u1", 0, &["p1", "p2"]), "r1a"),
        rec(impression("u1", 1, &["p1", "p2"]), "r1b"),
        click_from("u1", 2, "p1", "r1a"),
        click_from("u1", 3, "p2", "r1b"),
        // u2's list: not u1's click-through
        click_from("u1", 3, "p5", "r2a"),
        with(on(event("u1", "purchase", 4), "p1"), "value", json!(20)),
        // u2: I = 1, C = 1, an add to cart
        rec(impression("u2", 0, &["p5"]), "r2a"),
        click_from("u2", 1, "p5", "r2a"),
        on(event("u2", "add_to_cart", 2), "p5"),
        // u4: I = 2 (without rec), C = 0, a purchase of 5.25
        on(event("u4", "impression", 0), "p6"),
        on(event("u4", "impression", 1), "p6"),
        on(event("u4", "click", 1), "p6"),
        with(on(event("u4", "purchase", 2), "p6"), "value", json!(5.25)),
        // u5: not exposed
        click_from("u5", 0, "p1", "r5"),
        with(on(event("u5", "purchase", 1), "p1"), "value", json!(99)),
    ]
}

#[test]
fn hand_made_users_are_in_the_expected_variants() {
    let config = parse_config(CONFIG).unwrap();
    let e = &config.experiments[0];
    for user in ["u3", "u6", "u7"] {
        assert_eq!(e.assign(user), 0, "{user}");
    }
    for user in ["u1", "u2", "u4", "u5"] {
        assert_eq!(e.assign(user), 1, "{user}");
    }
}

#[test]
fn hand_made_experiment_numbers() {
    let rows = final_rows(&hand_made_events(), CONFIG);
    assert_eq!(rows.len(), 2);
    let control = &rows["control"];
    let treatment = &rows["treatment"];

    for (row, users, impressions, clicks, carts, conversions, revenue, dwell) in [
        (control, 3, 6, 2, 0, 1, 10.5, 2),
        (treatment, 3, 5, 3, 1, 2, 25.25, 0),
    ] {
        assert_eq!(row["users"], users, "{row}");
        assert_eq!(row["impressions"], impressions, "{row}");
        assert_eq!(row["clicks"], clicks, "{row}");
        assert_eq!(row["add_to_carts"], carts, "{row}");
        assert_eq!(row["conversions"], conversions, "{row}");
        assert_eq!(row["dwell_events"], dwell, "{row}");
        assert_close(row, "revenue", revenue);
        assert_close(row, "expected_share", 0.5);
        assert_close(row, "srm_p_value", 1.0);
        assert_eq!(row["srm"], false);
    }
    assert_close(control, "ctr", 2.0 / 6.0);
    assert_close(control, "conversion_rate", 1.0 / 3.0);
    assert_close(control, "mean_dwell_ms", 4000.0);
    assert_null(control, &LIFT_FIELDS);

    assert_close(treatment, "ctr", 0.6);
    assert_close(treatment, "conversion_rate", 2.0 / 3.0);
    assert_null(treatment, &["mean_dwell_ms"]);
    // var(r): control 0.009259259259259264, treatment 0.1344
    assert_close(treatment, "lift", 0.8);
    assert_close(treatment, "ci_low", -1.5840768593103347);
    assert_close(treatment, "ci_high", 3.184076859310335);
    assert_close(treatment, "p_value", 0.4817060411762473);
    assert_close(treatment, "conversion_lift", 1.0);
    assert_close(treatment, "conversion_ci_low", -2.5783882874343145);
    assert_close(treatment, "conversion_ci_high", 4.578388287434315);
    assert_close(treatment, "conversion_p_value", 0.41421617824252516);
}

#[test]
fn hand_made_totals_carry_the_sums_of_squares() {
    let oracle = Oracle::new(
        &lines(&hand_made_events()),
        Params::default().with_config(CONFIG),
    );
    let events: Vec<&Stamped> = oracle.events.iter().collect();
    let mut state = experiments::State::new(&oracle.params);
    for user in ["u1", "u2", "u3", "u4", "u5", "u6", "u7"] {
        let own: Vec<&Stamped> = events
            .iter()
            .copied()
            .filter(|s| s.event.user == user)
            .collect();
        state.update_user(user, &own, i64::MAX, &oracle.params);
    }
    let totals = &state.totals()[0];
    assert_eq!(
        totals[0],
        Totals {
            users: 3,
            impressions: 6,
            clicks: 2,
            carts: 0,
            conversions: 1,
            revenue_cents: 1050,
            dwell_sum: 8000,
            dwell_n: 2,
            sii: 14,
            scc: 2,
            sci: 5,
        }
    );
    assert_eq!(
        totals[1],
        Totals {
            users: 3,
            impressions: 5,
            clicks: 3,
            carts: 1,
            conversions: 2,
            revenue_cents: 2525,
            dwell_sum: 0,
            dwell_n: 0,
            sii: 9,
            scc: 5,
            sci: 5,
        }
    );
}

#[test]
fn rows_appear_with_the_first_exposed_user_and_follow_effective_times() {
    let events = [
        on(event("u5", "click", 0), "p1"),
        rec(impression("u1", 10, &["p1"]), "r1"),
        click_from("u1", 11, "p1", "r1"),
    ];
    let oracle = Oracle::new(&lines(&events), Params::default().with_config(CONFIG));
    let at = |minute: i64| oracle.state_at(&["experiments"], T0 + minute * MINUTE);
    assert!(at(5).is_empty(), "no exposed user yet");
    let state = at(10);
    assert_eq!(state.len(), 2, "a row per variant, also with no users");
    let control = &state[&(
        "experiments".to_string(),
        common::JsonKey::new(&json!({"experiment": "strategy", "variant": "control"})),
    )]
        .0;
    assert_eq!(control["users"], 0);
    assert_null(control, &["ctr", "conversion_rate", "mean_dwell_ms"]);
    let treatment = &state[&(
        "experiments".to_string(),
        common::JsonKey::new(&json!({"experiment": "strategy", "variant": "treatment"})),
    )]
        .0;
    assert_eq!(treatment["users"], 1);
    assert_eq!(treatment["clicks"], 0);
    assert_null(treatment, &LIFT_FIELDS);
    // 1 user in treatment, 0 in control: chi2 = 1, df 1: erfc(sqrt(1/2))
    assert_close(treatment, "srm_p_value", 0.31731050786291404);
    let rows = final_rows(&events, CONFIG);
    assert_eq!(rows["treatment"]["clicks"], 1);
    assert_close(&rows["treatment"], "ctr", 1.0);
}

// ---------------------------------------------------------------------------------------
// Statistics on their own
// ---------------------------------------------------------------------------------------

#[test]
fn srm_p_values() {
    // 3 variants: chi2 = 100/20 + 100/30 + 400/50, df 2: exp(-chi2/2)
    let p = experiments::srm_p_value(&[10, 20, 70], &[0.2, 0.3, 0.5]).unwrap();
    assert!((p - 0.00028396298390325614).abs() < TOLERANCE, "{p}");
    // 2 variants, 30 vs 10: chi2 = 10, df 1: erfc(sqrt(5))
    let p = experiments::srm_p_value(&[30, 10], &[0.5, 0.5]).unwrap();
    assert!((p - 0.0015654022580025488).abs() < TOLERANCE, "{p}");
    assert_eq!(experiments::srm_p_value(&[0, 0], &[0.5, 0.5]), None);
}

#[test]
fn srm_flag_on_an_unbalanced_experiment() {
    // 12 exposed users, all in one variant of a 50/50 split: chi2 = 12, p = erfc(sqrt(6))
    let mut events = Vec::new();
    let config = parse_config(CONFIG).unwrap();
    let treated: Vec<String> = (1..200)
        .map(|i| format!("u{i}"))
        .filter(|u| config.experiments[0].assign(u) == 1)
        .take(12)
        .collect();
    for u in &treated {
        events.push(impression(u, 0, &["p1"]));
    }
    let rows = final_rows(&events, CONFIG);
    for row in rows.values() {
        assert_close(row, "srm_p_value", 0.0005320055051392503);
        assert_eq!(row["srm"], true);
    }
}

#[test]
fn ctr_and_conversion_null_rules() {
    let totals = |users, impressions, clicks, conversions, sii, scc, sci| Totals {
        users,
        impressions,
        clicks,
        conversions,
        sii,
        scc,
        sci,
        ..Totals::default()
    };
    // control without clicks: r_c = 0, no CTR lift; its conversion rate 0: no conversion
    // lift but a p-value
    let control = totals(2, 2, 0, 0, 2, 0, 0);
    let variant = totals(2, 2, 1, 1, 2, 1, 1);
    assert_eq!(experiments::ctr_stats(&variant, &control), [None; 4]);
    let conversion = experiments::conversion_stats(&variant, &control);
    assert_eq!(conversion[..3], [None; 3]);
    // pooled p = 1/4, se = sqrt(3/16), z = 0.5 / se: 2 (1 - Phi(z)) = 0.24821307898992362
    let p = conversion[3].unwrap();
    assert!((p - 0.24821307898992362).abs() < TOLERANCE, "{p}");
    // one user only: var(r) undefined
    let single = totals(1, 3, 1, 0, 9, 1, 3);
    assert_eq!(experiments::ctr_variance(&single), None);
    assert_eq!(experiments::ctr_stats(&single, &variant), [None; 4]);
    // nobody converted anywhere: se = 0
    assert_eq!(
        experiments::conversion_stats(&control, &control),
        [None; 4],
        "p_c = 0 and pooled se = 0"
    );
    // no users in the variant
    assert_eq!(
        experiments::conversion_stats(&Totals::default(), &variant),
        [None; 4]
    );
    // var(r) = 0 on both sides (every user has the same CTR): se = 0, p-value null
    let same = totals(2, 4, 2, 0, 8, 2, 4);
    let stats = experiments::ctr_stats(&same, &same);
    assert_eq!(experiments::ctr_variance(&same), Some(0.0));
    assert_eq!(stats, [Some(0.0), Some(0.0), Some(0.0), None]);
}

// ---------------------------------------------------------------------------------------
// Attribution
// ---------------------------------------------------------------------------------------

const SHORT: &str = r#"
[[experiments]]
name = "strategy"
attribution_ms = 60000
[[experiments.variants]]
name = "control"
[[experiments.variants]]
name = "treatment"
"#;

/// u1 is in treatment: its row's (clicks, add_to_carts, conversions, revenue).
fn u1_counts(events: &[Value]) -> (i64, i64, i64, f64) {
    let rows = final_rows(events, SHORT);
    let row = &rows["treatment"];
    assert_eq!(row["users"], 1, "{row}");
    (
        row["clicks"].as_i64().unwrap(),
        row["add_to_carts"].as_i64().unwrap(),
        row["conversions"].as_i64().unwrap(),
        row["revenue"].as_f64().unwrap(),
    )
}

fn at_ms(e: Value, ts: i64) -> Value {
    with(e, "ts", json!(ts))
}

#[test]
fn attribution_window_is_inclusive_at_both_ends() {
    let x = rec(impression("u1", 0, &["p1"]), "r1");
    let click = |ts| at_ms(click_from("u1", 0, "p1", "r1"), ts);
    assert_eq!(u1_counts(&[x.clone(), click(T0)]).0, 1, "same ms");
    assert_eq!(
        u1_counts(&[x.clone(), click(T0 + 60_000)]).0,
        1,
        "at x.ts + span"
    );
    assert_eq!(
        u1_counts(&[x.clone(), click(T0 + 60_001)]).0,
        0,
        "one ms later"
    );
    assert_eq!(u1_counts(&[x.clone(), click(T0 - 1)]).0, 0, "before");
    // the action came first in the input but its ts is after the impression
    assert_eq!(u1_counts(&[click(T0 + 5), x.clone()]).0, 1, "input order");
    // the same bounds for an action that is not a click (here without rec)
    let cart = |ts| at_ms(on(event("u1", "add_to_cart", 0), "p1"), ts);
    assert_eq!(u1_counts(&[x.clone(), cart(T0)]).1, 1, "cart, same ms");
    assert_eq!(u1_counts(&[x.clone(), cart(T0 + 60_000)]).1, 1, "cart, end");
    assert_eq!(
        u1_counts(&[x.clone(), cart(T0 + 60_001)]).1,
        0,
        "cart, later"
    );
    assert_eq!(u1_counts(&[x.clone(), cart(T0 - 1)]).1, 0, "cart, before");
}

#[test]
fn attribution_needs_the_item_in_the_exposed_set() {
    let x = rec(impression("u1", 0, &["p1", "p2"]), "r1");
    assert_eq!(
        u1_counts(&[x.clone(), click_from("u1", 0, "p3", "r1")]).0,
        0
    );
    assert_eq!(
        u1_counts(&[x.clone(), click_from("u1", 0, "p2", "r1")]).0,
        1
    );
    assert_eq!(
        u1_counts(&[x.clone(), on(event("u1", "add_to_cart", 0), "p3")]).1,
        0
    );
    // an action without item is never attributed
    assert_eq!(
        u1_counts(&[x.clone(), rec(event("u1", "click", 0), "r1")]).0,
        0
    );
    assert_eq!(
        u1_counts(&[
            x.clone(),
            with(event("u1", "purchase", 0), "value", json!(3))
        ]),
        (0, 0, 0, 0.0)
    );
    // only `item`, no `items`
    let only_item = on(event("u1", "impression", 0), "p7");
    assert_eq!(
        u1_counts(&[only_item.clone(), on(event("u1", "add_to_cart", 0), "p7")]),
        (0, 1, 0, 0.0)
    );
    // `item` and `items` together
    let both = rec(on(impression("u1", 0, &["p1"]), "p7"), "r1");
    assert_eq!(
        u1_counts(&[
            both.clone(),
            click_from("u1", 0, "p7", "r1"),
            click_from("u1", 0, "p1", "r1"),
        ])
        .0,
        2
    );
    // an impression with neither still counts as an impression
    let bare = rec(event("u1", "impression", 0), "r1");
    let rows = final_rows(
        &[
            bare,
            click_from("u1", 0, "p1", "r1"),
            on(event("u1", "add_to_cart", 0), "p1"),
        ],
        SHORT,
    );
    assert_eq!(rows["treatment"]["impressions"], 1);
    assert_eq!(rows["treatment"]["clicks"], 0);
    assert_eq!(rows["treatment"]["add_to_carts"], 0);
    // another user's impression does not attribute u1's action, even with its rec
    let rows = final_rows(
        &[
            rec(impression("u3", 0, &["p1"]), "r3"),
            rec(impression("u1", 0, &["p2"]), "r1"),
            click_from("u1", 0, "p1", "r3"),
            on(event("u1", "add_to_cart", 0), "p1"),
        ],
        SHORT,
    );
    assert_eq!(rows["treatment"]["clicks"], 0);
    assert_eq!(rows["treatment"]["add_to_carts"], 0);
}

#[test]
fn an_action_counts_once_however_many_impressions_match() {
    // the same list shown three times: the click-through matches each of them
    let events = [
        rec(impression("u1", 0, &["p1"]), "r1"),
        rec(impression("u1", 0, &["p1", "p1"]), "r1"),
        rec(on(impression("u1", 0, &["p1"]), "p1"), "r1"),
        click_from("u1", 0, "p1", "r1"),
        with(on(event("u1", "purchase", 0), "p1"), "value", json!(1.005)),
        with(on(event("u1", "purchase", 0), "p1"), "value", json!(2)),
    ];
    let rows = final_rows(&events, SHORT);
    let row = &rows["treatment"];
    assert_eq!(row["impressions"], 3);
    assert_eq!(row["clicks"], 1);
    // converted once; revenue round(1.005 * 100) = 100 (1.005 * 100 = 100.49999…) + 200 cents
    assert_eq!(row["conversions"], 1);
    assert_close(row, "revenue", 3.0);
}

#[test]
fn dwell_counts_on_any_attributed_action() {
    let events = [
        rec(impression("u1", 0, &["p1"]), "r1"),
        with(click_from("u1", 0, "p1", "r1"), "dwell_ms", json!(1000)),
        with(on(event("u1", "scroll", 0), "p1"), "dwell_ms", json!(0)),
        with(
            on(event("u1", "impression", 0), "p1"),
            "dwell_ms",
            json!(7000),
        ),
        // not attributed: other item, or no dwell and not an action type
        with(
            on(event("u1", "page_view", 0), "p2"),
            "dwell_ms",
            json!(9000),
        ),
        on(event("u1", "page_view", 0), "p1"),
    ];
    let rows = final_rows(&events, SHORT);
    let row = &rows["treatment"];
    assert_eq!(row["impressions"], 2);
    assert_eq!(row["clicks"], 1);
    assert_eq!(row["dwell_events"], 2);
    assert_close(row, "mean_dwell_ms", 500.0);
}

#[test]
fn clicks_count_only_as_click_throughs() {
    // r1 showed p1, r2 showed p2, both at T0; the window is 60 s
    let x1 = rec(impression("u1", 0, &["p1"]), "r1");
    let x2 = rec(impression("u1", 0, &["p2"]), "r2");
    let clicks = |click: Value| u1_counts(&[x1.clone(), x2.clone(), click]).0;
    let plain = || on(event("u1", "click", 0), "p1");
    assert_eq!(
        clicks(click_from("u1", 0, "p1", "r1")),
        1,
        "rec of its list"
    );
    assert_eq!(
        clicks(click_from("u1", 0, "p2", "r2")),
        1,
        "rec of its list"
    );
    assert_eq!(clicks(plain()), 0, "no rec");
    assert_eq!(clicks(with(plain(), "rec", json!(""))), 0, "empty rec");
    assert_eq!(clicks(with(plain(), "rec", Value::Null)), 0, "null rec");
    assert_eq!(
        clicks(click_from("u1", 0, "p1", "r2")),
        0,
        "rec of a list that did not show p1"
    );
    assert_eq!(clicks(click_from("u1", 0, "p1", "r9")), 0, "unknown rec");
    assert_eq!(
        clicks(at_ms(click_from("u1", 0, "p1", "r1"), T0 + 60_001)),
        0,
        "right rec, after the window"
    );
    assert_eq!(
        clicks(at_ms(click_from("u1", 0, "p1", "r1"), T0 - 1)),
        0,
        "right rec, before the impression"
    );
    // each click-through counts
    assert_eq!(
        u1_counts(&[
            x1.clone(),
            x2.clone(),
            click_from("u1", 0, "p1", "r1"),
            at_ms(click_from("u1", 0, "p1", "r1"), T0 + 30_000),
            click_from("u1", 0, "p2", "r2"),
            click_from("u1", 0, "p2", "r1"),
        ])
        .0,
        3
    );
    // rec and window must hold for the same impression: r1 (at T0) also showed p1 but is
    // out of the window of a click at T0 + 90 s; r3 (at T0 + 60 s) is within it
    let x3 = rec(impression("u1", 1, &["p1"]), "r3");
    let late = |id: &str| {
        u1_counts(&[
            x1.clone(),
            x3.clone(),
            at_ms(click_from("u1", 0, "p1", id), T0 + 90_000),
        ])
        .0
    };
    assert_eq!(late("r1"), 0, "its list is out of the window");
    assert_eq!(late("r3"), 1, "its list is within the window");
    // an impression without rec (absent or empty) attributes no click, with or without rec
    for bare in [
        impression("u1", 0, &["p1"]),
        rec(impression("u1", 0, &["p1"]), ""),
    ] {
        assert_eq!(u1_counts(&[bare.clone(), plain()]).0, 0, "{bare}");
        assert_eq!(
            u1_counts(&[bare.clone(), with(plain(), "rec", json!(""))]).0,
            0,
            "{bare}"
        );
        assert_eq!(
            u1_counts(&[bare.clone(), click_from("u1", 0, "p1", "r1")]).0,
            0,
            "{bare}"
        );
    }
}

#[test]
fn other_actions_follow_any_impression_whatever_their_rec() {
    let purchase = |value: f64| with(on(event("u1", "purchase", 0), "p1"), "value", json!(value));
    let cart = || on(event("u1", "add_to_cart", 0), "p1");
    // a purchase without rec after an impression without rec
    let bare = impression("u1", 0, &["p1"]);
    assert_eq!(
        u1_counts(&[bare.clone(), at_ms(purchase(4.5), T0 + 30_000)]),
        (0, 0, 1, 4.5)
    );
    // ... but not after the window
    assert_eq!(
        u1_counts(&[bare.clone(), at_ms(purchase(4.5), T0 + 60_001)]),
        (0, 0, 0, 0.0)
    );
    // actions with a rec after an impression without rec, and the other way round
    assert_eq!(
        u1_counts(&[bare.clone(), rec(cart(), "r1"), rec(purchase(2.0), "r1")]),
        (0, 1, 1, 2.0)
    );
    let x1 = rec(impression("u1", 0, &["p1"]), "r1");
    let x2 = rec(impression("u1", 0, &["p2"]), "r2");
    assert_eq!(
        u1_counts(&[x1.clone(), x2.clone(), cart(), purchase(1.25)]),
        (0, 1, 1, 1.25)
    );
    // a rec of a list that did not show the item, or of no list, does not matter either
    assert_eq!(
        u1_counts(&[
            x1.clone(),
            x2.clone(),
            rec(cart(), "r2"),
            rec(purchase(3.0), "r9")
        ]),
        (0, 1, 1, 3.0)
    );
    // while clicks with these recs do not count
    assert_eq!(
        u1_counts(&[
            bare,
            x2,
            on(event("u1", "click", 0), "p1"),
            click_from("u1", 0, "p1", "r2"),
            rec(cart(), "r2"),
        ]),
        (0, 1, 0, 0.0)
    );
}

#[test]
fn a_click_that_is_not_a_click_through_contributes_no_dwell() {
    let click = |id: Option<&str>, dwell: u64| {
        let e = with(on(event("u1", "click", 0), "p1"), "dwell_ms", json!(dwell));
        match id {
            Some(id) => rec(e, id),
            None => e,
        }
    };
    let page_view = |dwell: u64| {
        with(
            on(event("u1", "page_view", 0), "p2"),
            "dwell_ms",
            json!(dwell),
        )
    };
    let events = [
        rec(impression("u1", 0, &["p1", "p2"]), "r1"),
        rec(impression("u1", 0, &["p3"]), "r2"),
        // not click-throughs: no dwell
        click(None, 4000),
        click(Some("r2"), 6000),
        at_ms(click(Some("r1"), 8000), T0 + 60_001),
        // a click-through and two page views (with or without rec): their dwell counts
        click(Some("r1"), 3000),
        page_view(1000),
        rec(page_view(2000), "r2"),
    ];
    let rows = final_rows(&events, SHORT);
    let row = &rows["treatment"];
    assert_eq!(row["impressions"], 2);
    assert_eq!(row["clicks"], 1);
    assert_eq!(row["dwell_events"], 3);
    // (3000 + 1000 + 2000) / 3
    assert_close(row, "mean_dwell_ms", 2000.0);
    // with only the clicks that are not click-throughs: no dwell at all
    let rows = final_rows(&events[..5], SHORT);
    let row = &rows["treatment"];
    assert_eq!(row["clicks"], 0);
    assert_eq!(row["dwell_events"], 0);
    assert_null(row, &["mean_dwell_ms"]);
}

#[test]
fn items_field_validity() {
    let line =
        |items: &str| format!(r#"{{"user":"u1","type":"impression","ts":1,"items":{items}}}"#);
    let e = parse_event(1, &line(r#"["a","","b"]"#)).unwrap();
    assert_eq!(e.items, ["a", "b"]);
    assert!(parse_event(1, &line("null")).unwrap().items.is_empty());
    assert!(parse_event(1, &line("[]")).unwrap().items.is_empty());
    for bad in [r#""a""#, r#"["a",1]"#, "[null]", "{}", "3"] {
        assert_eq!(
            parse_event(1, &line(bad)).unwrap_err(),
            "\"items\" must be an array of strings",
            "{bad}"
        );
    }
    let click = r#"{"user":"u1","type":"click","ts":1,"items":["a"]}"#;
    assert_eq!(parse_event(1, click).unwrap().items, ["a"]);
}

// ---------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------

#[test]
fn experiments_config_errors_name_the_key() {
    let variants =
        "[[experiments.variants]]\nname = \"a\"\n[[experiments.variants]]\nname = \"b\"\n";
    for (config, names) in [
        (
            format!("[[experiments]]\nsalt = \"x\"\n{variants}"),
            "experiments[0].name",
        ),
        (
            format!("[[experiments]]\nname = \"\"\n{variants}"),
            "experiments[0].name",
        ),
        (
            "[[experiments]]\nname = \"e\"\n[[experiments.variants]]\nname = \"a\"\n[[experiments.variants]]\nname = \"a\"\n".to_string(),
            "experiments[0].variants[1].name",
        ),
        (
            "[[experiments]]\nname = \"e\"\n[[experiments.variants]]\nname = \"a\"\n".to_string(),
            "experiments[0].variants",
        ),
        (
            "[[experiments]]\nname = \"e\"\n".to_string(),
            "experiments[0].variants",
        ),
        (
            format!("[[experiments]]\nname = \"e\"\n{variants}weight = 0\n"),
            "experiments[0].variants[1].weight",
        ),
        (
            format!("[[experiments]]\nname = \"e\"\n{variants}weight = -1.5\n"),
            "experiments[0].variants[1].weight",
        ),
        (
            format!("[[experiments]]\nname = \"e\"\nattribution_ms = 0\n{variants}"),
            "experiments[0].attribution_ms",
        ),
        (
            format!(
                "[[experiments]]\nname = \"e\"\n{variants}[[experiments]]\nname = \"f\"\n[[experiments.variants]]\nname = \"a\"\nrecs_weights = {{ similar = 1 }}\n[[experiments.variants]]\nname = \"b\"\n"
            ),
            "experiments[1].variants[0].recs_weights",
        ),
        (
            format!("[[experiments]]\nname = \"e\"\n{variants}[[experiments]]\nname = \"e\"\n{variants}"),
            "experiments[1].name",
        ),
        (
            format!("[[experiments]]\nname = \"e\"\ncolor = \"red\"\n{variants}"),
            "experiments[0].color",
        ),
        (
            format!("[[experiments]]\nname = \"e\"\n{variants}share = 1\n"),
            "experiments[0].variants[1].share",
        ),
        (
            format!("[[experiments]]\nname = \"e\"\n{variants}recs_weights = {{ trending = 1 }}\n"),
            "experiments[0].variants[1].recs_weights.trending",
        ),
        (
            format!("[[experiments]]\nname = \"e\"\n{variants}recs_weights = {{ next = 1001 }}\n"),
            "experiments[0].variants[1].recs_weights.next",
        ),
        (
            "[experiments]\nname = \"e\"\n".to_string(),
            "experiments",
        ),
    ] {
        match parse_config(&config) {
            Ok(_) => panic!("accepted:\n{config}"),
            Err(why) => assert!(
                why.starts_with(&format!("{names}:")),
                "error {why:?} does not name {names} for:\n{config}"
            ),
        }
    }
}

#[test]
fn experiments_config_defaults_and_values() {
    let config = parse_config(
        r#"
[recs]
weights = { popular = 2 }
[[experiments]]
name = "strategy"
salt = "strategy-2026"
attribution_ms = 3600000
[[experiments.variants]]
name = "control"
weight = 0.2
[[experiments.variants]]
name = "treatment"
weight = 3
recs_weights = { similar = 0.0, next = 0.0, als = 0.0, segment = 1.0, popular = 1.0 }
"#,
    )
    .unwrap();
    let e = &config.experiments[0];
    assert_eq!(e.salt, "strategy-2026");
    assert_eq!(e.attribution_ms, 3_600_000);
    assert_eq!(e.variants[0].weight, 0.2);
    assert_eq!(e.variants[1].weight, 3.0);
    assert_eq!(e.variants[0].recs_weights_milli, [None; 5]);
    assert_eq!(
        e.variants[1].recs_weights_milli,
        [Some(0), Some(0), Some(0), Some(1000), Some(1000)]
    );
    assert_eq!(e.shares(), [0.2 / 3.2, 3.0 / 3.2]);
    assert!(parse_config("").unwrap().experiments.is_empty());
}

// ---------------------------------------------------------------------------------------
// The checker's incremental state against the view from scratch
// ---------------------------------------------------------------------------------------

const TWO_EXPERIMENTS: &str = r#"
[[experiments]]
name = "strategy"
attribution_ms = 300000
[[experiments.variants]]
name = "control"
[[experiments.variants]]
name = "treatment"
recs_weights = { similar = 0.0, next = 0.0, als = 0.0 }
[[experiments]]
name = "layout"
salt = "layout-v2"
[[experiments.variants]]
name = "a"
weight = 0.2
[[experiments.variants]]
name = "b"
weight = 0.3
[[experiments.variants]]
name = "c"
weight = 0.5
"#;

/// A random clickstream with impressions, attributed and unattributed actions, and late
/// events (ts up to 20 s out of order). Most impressions carry a rec id; a click carries the
/// rec of its user's latest impression (often on one of its items: a click-through when in
/// time), the rec of any impression, or none; other actions sometimes carry a rec too. The
/// recs come from a second generator, so the rest is the same as without them.
fn random_events(seed: u64, n: usize, users: u64) -> Vec<Value> {
    let mut rng = common::Rng::new(seed);
    let mut recs = common::Rng::new(seed ^ 0x7265_6373);
    // user → (rec, items) of their latest impression with a rec; all rec ids so far
    let mut latest: BTreeMap<String, (String, Vec<String>)> = BTreeMap::new();
    let mut ids: Vec<String> = Vec::new();
    let mut ts = T0;
    (0..n)
        .map(|i| {
            ts += rng.below(4000) as i64;
            let user = format!("u{}", rng.below(users));
            let item = format!("p{}", rng.below(8));
            let at = ts - rng.below(20_000) as i64;
            let mut e = json!({"user": user, "ts": at});
            match rng.below(10) {
                0..=2 => {
                    e["type"] = json!("impression");
                    let k = rng.below(4);
                    let mut items: Vec<String> =
                        (0..k).map(|_| format!("p{}", rng.below(8))).collect();
                    e["items"] = json!(items);
                    if rng.below(3) == 0 {
                        e["item"] = json!(item);
                        items.push(item);
                    }
                    if recs.below(5) != 0 {
                        let id = format!("r{i}");
                        e["rec"] = json!(id);
                        latest.insert(user, (id.clone(), items));
                        ids.push(id);
                    }
                }
                3..=5 => {
                    e["type"] = json!("click");
                    e["item"] = json!(item);
                    match (recs.below(4), latest.get(&user)) {
                        (0 | 1, Some((id, items))) => {
                            e["rec"] = json!(id);
                            if !items.is_empty() && recs.below(3) != 0 {
                                let k = recs.below(items.len() as u64) as usize;
                                e["item"] = json!(items[k]);
                            }
                        }
                        (2, _) if !ids.is_empty() => {
                            e["rec"] = json!(ids[recs.below(ids.len() as u64) as usize]);
                        }
                        _ => {}
                    }
                }
                6 => {
                    e["type"] = json!("add_to_cart");
                    e["item"] = json!(item);
                }
                7 => {
                    e["type"] = json!("purchase");
                    e["item"] = json!(item);
                    e["value"] = json!(rng.below(10_000) as f64 / 100.0);
                }
                _ => {
                    e["type"] = json!("page_view");
                    e["item"] = json!(item);
                    if rng.below(2) == 0 {
                        e["dwell_ms"] = json!(rng.below(60_000));
                    }
                }
            }
            if rng.below(5) == 0 {
                e["dwell_ms"] = json!(rng.below(60_000));
            }
            if e["type"] != "impression" && e["type"] != "click" && recs.below(4) == 0 {
                e["rec"] = json!(format!("r{}", recs.below(n as u64)));
            }
            e
        })
        .collect()
}

/// A change to the rows of one time: (time, edit).
type Tamper<'a> = (i64, &'a dyn Fn(&mut Value));

/// An output in the engine's protocol built from `state_at` at every change time (a
/// progress line after each), with `tamper` applied to the rows of one time.
fn synthetic_output(oracle: &Oracle, views: &[&str], tamper: Option<Tamper>) -> String {
    let mut out = String::new();
    let mut previous = common::State::new();
    for t in oracle.change_times_for(views) {
        let mut state = oracle.state_at(views, t);
        if let Some((at, f)) = tamper
            && at == t
        {
            for (value, _) in state.values_mut() {
                f(value);
            }
        }
        let line = |row: &common::RowId, value: &Value, diff: i64| {
            format!(
                "{}\n",
                json!({"view": row.0, "key": row.1.value(), "time": t, "diff": diff, "value": value})
            )
        };
        for (row, (value, _)) in &previous {
            if state.get(row).map(|(v, _)| v) != Some(value) {
                out += &line(row, value, -1);
            }
        }
        for (row, (value, _)) in &state {
            if previous.get(row).map(|(v, _)| v) != Some(value) {
                out += &line(row, value, 1);
            }
        }
        out += &format!("{}\n", json!({ "progress": t + 1 }));
        previous = state;
    }
    out + "{\"progress\":null}\n"
}

#[test]
fn checker_follows_state_at_on_random_input() {
    let events = random_events(7, 400, 40);
    let params = Params::default().with_config(TWO_EXPERIMENTS);
    let oracle = Oracle::new(&lines(&events), params);
    assert!(oracle.late_events() > 0);
    let views = ["experiments"];
    let output = common::Output::parse(&synthetic_output(&oracle, &views, None)).unwrap();
    for granularity in [
        common::Granularity::Progress,
        common::Granularity::EveryTime,
    ] {
        oracle
            .check(&output, &views, granularity)
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // rows of both experiments, with every variant
    let last = oracle.state(&views, None);
    assert_eq!(last.len(), 5);
    // some clicks are click-throughs, not all of them
    let counted: i64 = last
        .iter()
        .filter(|((_, key), _)| key.value()["experiment"] == "strategy")
        .map(|(_, (value, _))| value["clicks"].as_i64().unwrap())
        .sum();
    let all_clicks = events.iter().filter(|e| e["type"] == "click").count() as i64;
    assert!(
        0 < counted && counted < all_clicks,
        "{counted} of {all_clicks}"
    );
    // and a wrong number is caught
    let t = *oracle.change_times().iter().nth(200).unwrap();
    let bump = |v: &mut Value| {
        if v["users"].as_i64().unwrap() > 0 {
            v["clicks"] = json!(v["clicks"].as_i64().unwrap() + 1);
        }
    };
    let output =
        common::Output::parse(&synthetic_output(&oracle, &views, Some((t, &bump)))).unwrap();
    let error = oracle
        .check(&output, &views, common::Granularity::Progress)
        .unwrap_err();
    assert!(
        error.contains("experiments") && error.contains("clicks"),
        "{error}"
    );
}

#[test]
fn incremental_state_equals_the_view_from_scratch_on_20k_events() {
    let events = random_events(11, 20_000, 500);
    let params = Params::default().with_config(TWO_EXPERIMENTS);
    let oracle = Oracle::new(&lines(&events), params);
    let mut by_user: BTreeMap<&str, Vec<&Stamped>> = BTreeMap::new();
    for s in &oracle.events {
        by_user.entry(&s.event.user).or_default().push(s);
    }
    let mut order: Vec<(i64, &str)> = oracle
        .events
        .iter()
        .map(|s| (s.effective, s.event.user.as_str()))
        .collect();
    order.sort_unstable();
    let started = std::time::Instant::now();
    let mut state = experiments::State::new(&oracle.params);
    let mut steps = 0;
    let mut i = 0;
    while i < order.len() {
        let now = order[i].0;
        let mut arrived = std::collections::BTreeSet::new();
        while i < order.len() && order[i].0 == now {
            arrived.insert(order[i].1);
            i += 1;
        }
        for user in arrived {
            state.update_user(user, &by_user[user], now, &oracle.params);
        }
        let rows = state.rows(&oracle.params);
        steps += 1;
        if steps % 2000 == 0 || i == order.len() {
            let all: Vec<&Stamped> = oracle.events.iter().collect();
            let scratch = experiments::views_at(&all, now, &oracle.params);
            assert_eq!(rows, scratch["experiments"], "at {now}");
        }
    }
    eprintln!(
        "{steps} steps over {} events in {:?} (with the checks from scratch)",
        order.len(),
        started.elapsed()
    );
    assert!(steps > 1000);
}

// ---------------------------------------------------------------------------------------
// recs with variants
// ---------------------------------------------------------------------------------------

/// Each user's `recs` row at the end, by user. The input spans an hour, so `similar` and
/// `next` reach the blend as they change (`shared_refresh_ms = 1`) and popularity is
/// refreshed hourly, not once a day.
fn final_recs(events: &[Value], config: &str) -> BTreeMap<String, Value> {
    const LIVE: &str = "[recs]\nshared_refresh_ms = 1\npopular_refresh_ms = 3600000\n";
    let config = match config.strip_prefix("[recs]\n") {
        Some(rest) => format!("{LIVE}{rest}"),
        None => format!("{LIVE}{config}"),
    };
    let oracle = Oracle::new(&lines(events), Params::default().with_config(&config));
    oracle
        .state(&["recs"], None)
        .into_iter()
        .map(|((_, key), (value, _))| (key.value()["user"].as_str().unwrap().to_string(), value))
        .collect()
}

#[test]
fn recs_rows_use_the_weights_of_the_users_variant() {
    let events = random_events(3, 3000, 60);
    let with_experiments = final_recs(&events, TWO_EXPERIMENTS);
    // the same blend weights without experiments
    let plain = final_recs(&events, "");
    let personal_off = final_recs(
        &events,
        "[recs]\nweights = { similar = 0.0, next = 0.0, als = 0.0 }\n",
    );
    assert!(!plain.is_empty());
    let strategy = &parse_config(TWO_EXPERIMENTS).unwrap().experiments[0];
    let (mut control, mut treatment) = (0, 0);
    for (user, row) in &with_experiments {
        let mut row = row.clone();
        let variant = row["variant"].as_str().unwrap().to_string();
        if strategy.assign(user) == 0 {
            assert_eq!(variant, "control", "{user}");
            control += 1;
            row["variant"] = json!("default");
            assert_eq!(Some(&row), plain.get(user), "{user}");
        } else {
            assert_eq!(variant, "treatment", "{user}");
            treatment += 1;
            for entry in row["items"].as_array().unwrap() {
                assert!(
                    ["segment", "popular"].contains(&entry["reason"].as_str().unwrap()),
                    "{user}: {entry}"
                );
            }
            row["variant"] = json!("default");
            assert_eq!(Some(&row), personal_off.get(user), "{user}");
        }
    }
    assert!(control > 5 && treatment > 5, "{control} {treatment}");
    // without the experiment, treatment users do get personal candidates
    let personal_in_treatment = plain.iter().any(|(user, row)| {
        strategy.assign(user) == 1
            && row["items"]
                .as_array()
                .unwrap()
                .iter()
                .any(|e| e["reason"] == "similar" || e["reason"] == "next")
    });
    assert!(personal_in_treatment);
}
