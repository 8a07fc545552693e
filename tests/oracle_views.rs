//! The views `sessions` and `scores` against the batch oracle (DESIGN.md §8, semantics
//! brief for issue 2).
//!
//! - `oracle_*`: the oracle and the checking machinery on hand-made inputs with
//!   hand-computed expectations (no binary needed: `cargo test --test oracle_views oracle_`);
//! - `engine_*`: the binary against the oracle at every progress line and at the end, on the
//!   bundled example, generated data, a config with other weights and shuffled input full
//!   of late events; and worker counts 1, 2 and 4 printing the same lines.

mod common;
mod oracle;

use common::*;
use oracle::*;
use serde_json::{Value, json};
use std::collections::BTreeSet;

/// 2026-01-01T00:00:00Z in ms.
const T0: i64 = 1_767_225_600_000;
const SECOND: i64 = 1000;
const MINUTE: i64 = 60 * SECOND;

fn lines(events: &[Value]) -> String {
    events.iter().map(|e| format!("{e}\n")).collect()
}

fn event(user: &str, kind: &str, ts: i64) -> Value {
    json!({"user": user, "type": kind, "ts": ts})
}

fn on_item(mut e: Value, item: &str) -> Value {
    e["item"] = json!(item);
    e
}

fn with(mut e: Value, field: &str, value: Value) -> Value {
    e[field] = value;
    e
}

fn session_row(user: &str, id: &str, value: Value) -> (&'static str, Value, Value) {
    ("sessions", json!({"user": user, "session": id}), value)
}

fn score_row(user: &str, item: &str, score: f64) -> (&'static str, Value, Value) {
    (
        "scores",
        json!({"user": user, "item": item}),
        json!({"score": score}),
    )
}

fn auto(ts: i64) -> String {
    format!("auto-{ts}")
}

// ---------------------------------------------------------------------------------------
// 1. The oracle on hand-made inputs
// ---------------------------------------------------------------------------------------

/// A hand-made input with the parameters it is meant for; the oracle tests check the
/// oracle on it by hand, `engine_hand_made_inputs` checks the engine against the oracle.
struct Case {
    input: String,
    params: Params,
    /// Config file text, if the case needs one (its weights are in `params`).
    config: Option<&'static str>,
}

impl Case {
    fn new(events: &[Value]) -> Case {
        Case {
            input: lines(events),
            params: Params::default(),
            config: None,
        }
    }
    fn times(self, tick_ms: i64, lateness_ms: i64) -> Case {
        let weights = self.params.weights.clone();
        Case {
            params: Params::new(tick_ms, lateness_ms).with_weights(weights),
            ..self
        }
    }
    fn config(self, config: &'static str) -> Case {
        let params = self
            .params
            .clone()
            .with_weights(Weights::from_config(config));
        Case {
            params,
            config: Some(config),
            ..self
        }
    }
    fn oracle(&self) -> Oracle {
        Oracle::new(&self.input, self.params.clone())
    }
}

fn hand_made_cases() -> Vec<(&'static str, Case)> {
    vec![
        ("gap_sessions", gap_sessions_case()),
        ("gap_sessions_unsorted_input", unsorted_gap_sessions_case()),
        ("client_session_ids", client_session_ids_case()),
        ("session_counts", session_counts_case()),
        ("default_weights", default_weights_case()),
        ("config_weights", config_weights_case()),
        ("zero_score", zero_score_case()),
        ("rfc3339", rfc3339_case()),
        ("late_event", late_event_case()),
        ("minute_ticks", minute_ticks_case()),
        ("near_epoch", near_epoch_case()),
        ("late_events_two_users", small_input_with_late_events()),
        (
            "late_event_reshapes_sessions",
            late_event_reshapes_sessions_case(),
        ),
    ]
}

fn gap_sessions_case() -> Case {
    Case::new(&[
        event("u1", "page_view", T0),
        on_item(event("u1", "click", T0 + 10 * MINUTE), "p1"),
        event("u2", "page_view", T0 + 20 * MINUTE),
        // exactly 30 minutes after the previous u1 event: same session
        event("u1", "page_view", T0 + 40 * MINUTE),
        // 30 minutes and 1 ms: a new session
        event("u1", "page_view", T0 + 70 * MINUTE + 1),
        on_item(event("u1", "add_to_cart", T0 + 75 * MINUTE), "p1"),
        // u2's events are u2's: 55 minutes after its first, a new session
        event("u2", "click", T0 + 75 * MINUTE),
    ])
}

#[test]
fn oracle_gap_over_30_minutes_starts_a_new_session() {
    let state = gap_sessions_case().oracle().state(&["sessions"], None);
    let summary = |start: i64, end: i64, events: u64, page_views: u64, high_intent: u64| {
        json!({"start": start, "end": end, "events": events, "page_views": page_views,
               "high_intent": high_intent, "max_scroll": 0})
    };
    let expected = state_of([
        session_row("u1", &auto(T0), summary(T0, T0 + 40 * MINUTE, 3, 2, 0)),
        session_row(
            "u1",
            &auto(T0 + 70 * MINUTE + 1),
            summary(T0 + 70 * MINUTE + 1, T0 + 75 * MINUTE, 2, 1, 1),
        ),
        session_row(
            "u2",
            &auto(T0 + 20 * MINUTE),
            summary(T0 + 20 * MINUTE, T0 + 20 * MINUTE, 1, 1, 0),
        ),
        session_row(
            "u2",
            &auto(T0 + 75 * MINUTE),
            summary(T0 + 75 * MINUTE, T0 + 75 * MINUTE, 1, 0, 0),
        ),
    ]);
    assert_states_match(&expected, &state, "sessions");
}

fn unsorted_gap_sessions_case() -> Case {
    // Input order is not time order (all within the allowed lateness).
    Case::new(&[
        event("u1", "page_view", T0 + 50 * MINUTE),
        event("u1", "page_view", T0),
        event("u1", "page_view", T0 + 25 * MINUTE),
    ])
    .times(1000, 3_600_000)
}

#[test]
fn oracle_gap_sessions_follow_event_time_not_input_order() {
    let state = unsorted_gap_sessions_case()
        .oracle()
        .state(&["sessions"], None);
    let expected = state_of([session_row(
        "u1",
        &auto(T0),
        json!({"start": T0, "end": T0 + 50 * MINUTE, "events": 3, "page_views": 3, "high_intent": 0, "max_scroll": 0}),
    )]);
    assert_states_match(&expected, &state, "sessions");
}

fn client_session_ids_case() -> Case {
    Case::new(&[
        with(event("u1", "page_view", T0), "session", json!("s1")),
        with(
            event("u1", "click", T0 + 120 * MINUTE),
            "session",
            json!("s1"),
        ),
        // no session field: a derived session
        event("u1", "page_view", T0 + 60 * MINUTE),
        // an empty session id counts as absent: same derived session
        with(
            event("u1", "page_view", T0 + 65 * MINUTE),
            "session",
            json!(""),
        ),
        // same client id, other user: another session
        with(
            event("u2", "purchase", T0 + 5 * MINUTE),
            "session",
            json!("s1"),
        ),
    ])
    .times(1000, 3 * 3_600_000)
}

#[test]
fn oracle_client_session_ids_are_kept_whatever_the_gap() {
    let state = client_session_ids_case()
        .oracle()
        .state(&["sessions"], None);
    let expected = state_of([
        session_row(
            "u1",
            "s1",
            json!({"start": T0, "end": T0 + 120 * MINUTE, "events": 2, "page_views": 1, "high_intent": 0, "max_scroll": 0}),
        ),
        session_row(
            "u1",
            &auto(T0 + 60 * MINUTE),
            json!({"start": T0 + 60 * MINUTE, "end": T0 + 65 * MINUTE, "events": 2, "page_views": 2, "high_intent": 0, "max_scroll": 0}),
        ),
        session_row(
            "u2",
            "s1",
            json!({"start": T0 + 5 * MINUTE, "end": T0 + 5 * MINUTE, "events": 1, "page_views": 0, "high_intent": 1, "max_scroll": 0}),
        ),
    ]);
    assert_states_match(&expected, &state, "sessions");
}

fn session_counts_case() -> Case {
    Case::new(&[
        with(event("u1", "page_view", T0), "scroll", json!(0.25)),
        with(event("u1", "scroll", T0 + MINUTE), "scroll", json!(0.8)),
        with(
            event("u1", "page_view", T0 + 2 * MINUTE),
            "scroll",
            json!(0.5),
        ),
        on_item(event("u1", "add_to_cart", T0 + 3 * MINUTE), "p1"),
        on_item(event("u1", "purchase", T0 + 4 * MINUTE), "p1"),
        on_item(event("u1", "wishlist", T0 + 5 * MINUTE), "p2"),
        with(event("u1", "exit", T0 + 6 * MINUTE), "scroll", json!(1)),
        // other fields are ignored
        with(event("u2", "page_view", T0), "device", json!("mobile")),
        with(event("u2", "page_view", T0 + SECOND), "scroll", json!(0)),
    ])
    .times(1000, 3_600_000)
}

#[test]
fn oracle_session_counts_page_views_high_intent_and_max_scroll() {
    let state = session_counts_case().oracle().state(&["sessions"], None);
    let expected = state_of([
        session_row(
            "u1",
            &auto(T0),
            json!({"start": T0, "end": T0 + 6 * MINUTE, "events": 7, "page_views": 2, "high_intent": 2, "max_scroll": 1}),
        ),
        session_row(
            "u2",
            &auto(T0),
            json!({"start": T0, "end": T0 + SECOND, "events": 2, "page_views": 2, "high_intent": 0, "max_scroll": 0}),
        ),
    ]);
    assert_states_match(&expected, &state, "sessions");
}

/// u1's events on `item`, `minute` minutes after T0.
fn u1_on(kind: &str, item: &str, minute: i64) -> Value {
    on_item(event("u1", kind, T0 + minute * MINUTE), item)
}

fn default_weights_case() -> Case {
    Case::new(&[
        u1_on("click", "p1", 0),
        u1_on("add_to_cart", "p1", 1),
        u1_on("purchase", "p1", 2),
        u1_on("wishlist", "p2", 3),
        u1_on("bookmark", "p2", 4),
        u1_on("share", "p2", 5),
        u1_on("comment", "p2", 6),
        u1_on("video_play", "p2", 7),
        // weight 0: no row
        u1_on("page_view", "p3", 8),
        u1_on("scroll", "p3", 9),
        u1_on("form_submit", "p3", 10),
        u1_on("impression", "p3", 11),
        u1_on("exit", "p3", 12),
        u1_on("never_heard_of_it", "p3", 13),
        // no item: no score
        event("u1", "click", T0 + 14 * MINUTE),
        on_item(event("u2", "click", T0), "p1"),
    ])
}

#[test]
fn oracle_scores_sum_default_weights() {
    let state = default_weights_case().oracle().state(&["scores"], None);
    let expected = state_of([
        score_row("u1", "p1", 9.0),
        score_row("u1", "p2", 8.0),
        score_row("u2", "p1", 1.0),
    ]);
    assert_states_match(&expected, &state, "scores");
}

const CONFIG_WEIGHTS: &str = "\
[weights]
click = 2
page_view = 0.5
custom = { hover = 1 }
";

fn config_weights_case() -> Case {
    Case::new(&[
        u1_on("click", "p1", 0),
        u1_on("page_view", "p1", 1),
        u1_on("hover", "p1", 2),
        u1_on("purchase", "p2", 3),
        u1_on("page_view", "p3", 4),
        u1_on("mystery", "p4", 5),
    ])
    .config(CONFIG_WEIGHTS)
}

#[test]
fn oracle_config_weights_override_defaults_and_add_custom_types() {
    let weights = Weights::from_config(CONFIG_WEIGHTS);
    assert_eq!(weights.milli("click"), 2000);
    assert_eq!(weights.milli("page_view"), 500);
    assert_eq!(weights.milli("hover"), 1000);
    assert_eq!(
        weights.milli("purchase"),
        5000,
        "weights the config does not name keep their default"
    );
    let state = config_weights_case().oracle().state(&["scores"], None);
    let expected = state_of([
        score_row("u1", "p1", 3.5),
        score_row("u1", "p2", 5.0),
        score_row("u1", "p3", 0.5),
    ]);
    assert_states_match(&expected, &state, "scores");
}

fn zero_score_case() -> Case {
    // A score can only come back to zero with a negative weight (the brief puts no sign
    // restriction on weights).
    Case::new(&[
        on_item(event("u1", "click", T0), "p1"),
        on_item(event("u1", "page_view", T0), "p2"),
        on_item(event("u1", "exit", T0 + 10 * SECOND), "p1"),
    ])
    .times(1000, 0)
    .config("[weights]\nexit = -1\n")
}

#[test]
fn oracle_zero_score_row_disappears() {
    let oracle = zero_score_case().oracle();
    assert_states_match(
        &state_of([score_row("u1", "p1", 1.0)]),
        &oracle.state(&["scores"], Some(T0 + 10 * SECOND)),
        "scores before the exit",
    );
    assert_states_match(
        &State::new(),
        &oracle.state(&["scores"], None),
        "scores after the exit",
    );
}

fn rfc3339_case() -> Case {
    Case::new(&[
        event("u1", "page_view", T0 + MINUTE),
        with(
            event("u1", "page_view", 0),
            "ts",
            json!("2026-01-01T00:00:00Z"),
        ),
        with(
            event("u1", "click", 0),
            "ts",
            json!("2026-01-01T01:02:00.500+01:00"),
        ),
    ])
    .times(1000, 3_600_000)
}

#[test]
fn oracle_rfc3339_timestamps_are_ms_since_epoch() {
    for (text, ms) in [
        ("2026-01-01T00:00:00Z", Some(T0)),
        ("2026-01-01t00:00:00z", Some(T0)),
        ("2026-01-01T01:30:00.250+01:30", Some(T0 + 250)),
        ("2025-12-31T19:00:00-05:00", Some(T0)),
        ("2026-01-01T00:00:00.1Z", Some(T0 + 100)),
        ("2026-01-01T00:00:00.123999Z", Some(T0 + 123)),
        ("1970-01-01T00:00:00Z", Some(0)),
        ("2024-02-29T12:00:00Z", Some(1_709_208_000_000)),
        ("2026-02-29T12:00:00Z", None),
        ("2026-01-01T24:00:00Z", None),
        ("2026-01-01T00:00:00", None),
        ("2026-01-01T00:00:00.Z", None),
        ("2026-1-01T00:00:00Z", None),
        ("yesterday", None),
    ] {
        assert_eq!(parse_rfc3339_ms(text), ms, "{text}");
    }
    let state = rfc3339_case().oracle().state(&["sessions"], None);
    let expected = state_of([session_row(
        "u1",
        &auto(T0),
        json!({"start": T0, "end": T0 + 2 * MINUTE + 500, "events": 3, "page_views": 2, "high_intent": 0, "max_scroll": 0}),
    )]);
    assert_states_match(&expected, &state, "sessions");
}

fn late_event_case() -> Case {
    // default times: tick 1 s, lateness 5 s
    let click = |ts: i64| on_item(event("u1", "click", ts), "p1");
    Case::new(&[
        click(T0 + 10_000),
        click(T0 + 20_500),
        click(T0 + 12_345),
        click(T0 + 15_999),
    ])
}

#[test]
fn oracle_late_event_applied_at_watermark() {
    let oracle = late_event_case().oracle();
    let stamps: Vec<(i64, bool)> = oracle
        .events
        .iter()
        .map(|s| (s.effective - T0, s.late))
        .collect();
    // watermark after each event: 5 000, 15 000, 15 000, 15 000
    assert_eq!(
        stamps,
        [
            (10_000, false),
            (20_000, false),
            (15_000, true),
            (15_000, false)
        ]
    );
    let score_before = |bound: i64| oracle.state(&["scores"], Some(bound));
    assert_states_match(
        &State::new(),
        &score_before(T0 + 10_000),
        "nothing before the first tick",
    );
    assert_states_match(
        &state_of([score_row("u1", "p1", 1.0)]),
        &score_before(T0 + 15_000),
        "before the watermark",
    );
    assert_states_match(
        &state_of([score_row("u1", "p1", 3.0)]),
        &score_before(T0 + 15_001),
        "at the watermark",
    );
    assert_states_match(
        &state_of([score_row("u1", "p1", 4.0)]),
        &score_before(T0 + 20_001),
        "all",
    );
    // the late event keeps its own ts in its session
    let sessions = oracle.state(&["sessions"], Some(T0 + 15_001));
    let expected = state_of([session_row(
        "u1",
        &auto(T0 + 10_000),
        json!({"start": T0 + 10_000, "end": T0 + 15_999, "events": 3, "page_views": 0, "high_intent": 0, "max_scroll": 0}),
    )]);
    assert_states_match(&expected, &sessions, "sessions at the watermark");
}

fn minute_ticks_case() -> Case {
    let page = |ts: i64| event("u1", "page_view", ts);
    Case::new(&[
        page(T0 + 90 * SECOND),  // tick T0+60s; watermark -> T0+60s
        page(T0 + 30 * SECOND),  // tick T0 < watermark: late, at T0+60s
        page(T0 + 130 * SECOND), // tick T0+120s; watermark -> T0+120s
        page(T0 + 125 * SECOND), // tick T0+120s = watermark: on time
        page(T0 + 119 * SECOND), // late, at T0+120s
    ])
    .times(60_000, 0)
}

#[test]
fn oracle_minute_ticks_without_lateness() {
    let oracle = minute_ticks_case().oracle();
    let stamps: Vec<(i64, bool)> = oracle
        .events
        .iter()
        .map(|s| (s.effective - T0, s.late))
        .collect();
    assert_eq!(
        stamps,
        [
            (60_000, false),
            (60_000, true),
            (120_000, false),
            (120_000, false),
            (120_000, true)
        ]
    );
}

fn late_event_reshapes_sessions_case() -> Case {
    let page = |user: &str, minute: i64| event(user, "page_view", T0 + minute * MINUTE);
    Case::new(&[
        page("u1", 0),
        page("u2", 20),
        page("u1", 50), // u1: two sessions, 50 minutes apart
        page("u2", 60),
        // late: bridges u1's two sessions into one
        on_item(event("u1", "click", T0 + 25 * MINUTE), "p1"),
        // late: starts u2's first session earlier, so that session's id changes
        page("u2", 15),
    ])
    .times(1000, 0)
}

#[test]
fn oracle_late_event_merges_sessions_and_moves_a_session_start() {
    let oracle = late_event_reshapes_sessions_case().oracle();
    let late: Vec<bool> = oracle.events.iter().map(|s| s.late).collect();
    assert_eq!(late, [false, false, false, false, true, true]);
    let session = |start: i64, end: i64, events: u64, page_views: u64| {
        json!({"start": T0 + start * MINUTE, "end": T0 + end * MINUTE, "events": events,
               "page_views": page_views, "high_intent": 0, "max_scroll": 0})
    };
    let before_late = oracle.state(&["sessions"], Some(T0 + 60 * MINUTE));
    let expected = state_of([
        session_row("u1", &auto(T0), session(0, 0, 1, 1)),
        session_row("u1", &auto(T0 + 50 * MINUTE), session(50, 50, 1, 1)),
        session_row("u2", &auto(T0 + 20 * MINUTE), session(20, 20, 1, 1)),
    ]);
    assert_states_match(&expected, &before_late, "before the late events");
    let expected = state_of([
        session_row("u1", &auto(T0), session(0, 50, 3, 2)),
        session_row("u2", &auto(T0 + 15 * MINUTE), session(15, 20, 2, 2)),
        session_row("u2", &auto(T0 + 60 * MINUTE), session(60, 60, 1, 1)),
    ]);
    assert_states_match(&expected, &oracle.state(&["sessions"], None), "at the end");
}

fn near_epoch_case() -> Case {
    Case::new(&[event("u1", "page_view", 1500), event("u1", "page_view", 0)])
}

#[test]
fn oracle_watermark_saturates_at_zero() {
    let oracle = near_epoch_case().oracle();
    let stamps: Vec<(i64, bool)> = oracle
        .events
        .iter()
        .map(|s| (s.effective, s.late))
        .collect();
    assert_eq!(stamps, [(1000, false), (0, false)]);
}

#[test]
fn oracle_only_valid_lines_are_events() {
    let input = [
        r#"{"user":"u1","type":"click","ts":1,"item":"p1","extra":[1,2]}"#,
        r#"{"type":"click","ts":1}"#,
        r#"{"user":"","type":"click","ts":1}"#,
        r#"{"user":"u1","type":"","ts":1}"#,
        r#"{"user":"u1","type":"click","ts":-5}"#,
        r#"{"user":"u1","type":"click","ts":1.5}"#,
        r#"{"user":"u1","type":"click","ts":"noon"}"#,
        r#"{"user":"u1","type":"click","ts":1,"scroll":1.5}"#,
        r#"{"user":"u1","type":"click","ts":1,"dwell_ms":-1}"#,
        r#"{"user":"u1","type":"click","ts":1,"item":7}"#,
        r#"[1,2]"#,
        r#"{"user":"u1","#,
        "",
        r#"{"user":"u2","type":"page_view","ts":"2026-01-01T00:00:00Z","scroll":1,"dwell_ms":0,"session":""}"#,
    ]
    .join("\n");
    let parsed = parse_input(&input);
    let lines_of = |events: &[Event]| events.iter().map(|e| e.line).collect::<Vec<_>>();
    assert_eq!(lines_of(&parsed.events), [1, 14]);
    let rejected: Vec<usize> = parsed.rejected.iter().map(|(l, _)| *l).collect();
    assert_eq!(rejected, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12]);
    assert_eq!(parsed.events[1].ts, T0);
    assert_eq!(parsed.events[1].session, None);
}

// --- the checking machinery, fed with output written from the oracle itself -------------

/// What a correct engine prints for `oracle`: per effective time the consolidated changes,
/// then a progress line just above it, then `{"progress":null}`.
fn simulated_engine_output(oracle: &Oracle, views: &[&str]) -> String {
    let times: BTreeSet<i64> = oracle.events.iter().map(|s| s.effective).collect();
    let mut out = String::new();
    let mut before = State::new();
    let change = |row: &RowId, value: &Value, time: i64, diff: i64| {
        format!(
            "{}\n",
            json!({"view": row.0, "key": row.1.value(), "time": time, "diff": diff, "value": value})
        )
    };
    for t in times {
        let after = oracle.state(views, Some(t + 1));
        for (row, (value, _)) in &before {
            if after.get(row).map(|(v, _)| v) != Some(value) {
                out += &change(row, value, t, -1);
            }
        }
        for (row, (value, _)) in &after {
            if before.get(row).map(|(v, _)| v) != Some(value) {
                out += &change(row, value, t, 1);
            }
        }
        out += &format!("{{\"progress\":{}}}\n", t + 1);
        before = after;
    }
    out + "{\"progress\":null}\n"
}

fn small_input_with_late_events() -> Case {
    let mut events = Vec::new();
    for (i, minute) in [0, 3, 1, 40, 2, 41, 95, 80, 96].into_iter().enumerate() {
        let user = if i % 3 == 0 { "u2" } else { "u1" };
        let kind = ["click", "page_view", "add_to_cart", "purchase"][i % 4];
        events.push(with(
            on_item(event(user, kind, T0 + minute * MINUTE), "p1"),
            "scroll",
            json!(0.1 * i as f64),
        ));
    }
    Case::new(&events).times(1000, 0)
}

#[test]
fn oracle_checker_accepts_a_correct_engine_output() {
    let oracle = small_input_with_late_events().oracle();
    assert!(oracle.late_events() >= 3);
    let output = Output::parse(&simulated_engine_output(&oracle, &["sessions", "scores"])).unwrap();
    output.check_consolidated().unwrap();
    oracle
        .check(&output, &["sessions", "scores"], Granularity::Progress)
        .unwrap();
    oracle
        .check(&output, &["sessions", "scores"], Granularity::EveryTime)
        .unwrap();
    assert_eq!(output.states_at_progress().len(), output.progress_count());
}

#[test]
fn oracle_checker_reports_a_wrong_value_with_key_and_time() {
    let oracle = small_input_with_late_events().oracle();
    let good = simulated_engine_output(&oracle, &["sessions", "scores"]);
    // the first score line printed goes wrong
    let (n, line) = good
        .lines()
        .enumerate()
        .find(|(_, l)| l.contains("\"scores\""))
        .unwrap();
    let bad: String = good
        .lines()
        .enumerate()
        .map(|(i, l)| {
            if i == n {
                format!("{}\n", l.replace("\"score\":1}", "\"score\":1.5}"))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    assert_ne!(bad, good, "{line}");
    let error = oracle
        .check(
            &Output::parse(&bad).unwrap(),
            &["sessions", "scores"],
            Granularity::Progress,
        )
        .unwrap_err();
    let progress = serde_json::from_str::<Value>(line).unwrap()["time"]
        .as_i64()
        .unwrap()
        + 1;
    assert!(error.contains(&format!("progress {progress}")), "{error}");
    assert!(
        error.contains(r#"scores {"item":"p1","user":"u2"}"#),
        "{error}"
    );
    assert!(error.contains("score: 1.5, expected 1"), "{error}");
    assert!(error.contains("events of user u2"), "{error}");
}

#[test]
fn oracle_checker_catches_a_change_printed_at_a_later_time() {
    let oracle = small_input_with_late_events().oracle();
    let views = ["sessions", "scores"];
    // One progress line at the end only, and every change one second late: the state at
    // the end is right, the state at each change time is not.
    let shifted: String = simulated_engine_output(&oracle, &views)
        .lines()
        .filter(|l| !l.starts_with("{\"progress\""))
        .map(|l| {
            let mut change: Value = serde_json::from_str(l).unwrap();
            change["time"] = json!(change["time"].as_i64().unwrap() + SECOND);
            format!("{change}\n")
        })
        .collect::<String>()
        + "{\"progress\":null}\n";
    let output = Output::parse(&shifted).unwrap();
    oracle
        .check(&output, &views, Granularity::Progress)
        .unwrap();
    let error = oracle
        .check(&output, &views, Granularity::EveryTime)
        .unwrap_err();
    assert!(error.contains("disagree at change time"), "{error}");
}

#[test]
fn oracle_output_parser_rejects_lines_outside_the_protocol() {
    for bad in [
        "hello",
        "[1]",
        r#"{"foo":1}"#,
        r#"{"progress":-1}"#,
        r#"{"progress":5,"view":"x"}"#,
        r#"{"view":"scores","key":"u1","time":1,"diff":1,"value":{}}"#,
        r#"{"view":"scores","key":{},"time":1,"diff":1}"#,
        r#"{"view":"scores","key":{},"time":-1,"diff":1,"value":{}}"#,
        r#"{"view":"scores","key":{},"time":1,"diff":0,"value":{}}"#,
        r#"{"view":"scores","key":{},"time":1,"deleted":false}"#,
    ] {
        assert!(parse_line(bad).is_err(), "accepted {bad}");
    }
    let error = Output::parse("{\"progress\":1}\nnonsense\n").unwrap_err();
    assert!(error.contains("stdout line 2"), "{error}");

    let change = |time: u64, diff: i64, score: u64| {
        format!(
            r#"{{"view":"scores","key":{{"user":"u","item":"i"}},"time":{time},"diff":{diff},"value":{{"score":{score}}}}}"#
        )
    };
    let replay = |text: &str| {
        Output::parse(text)
            .unwrap()
            .replay(Granularity::Progress, |_, _, _| Ok(()))
    };
    let upsert = r#"{"view":"scores","key":{"user":"u","item":"i"},"time":3,"value":{"score":2}}"#;
    assert!(
        replay(&format!(
            "{}\n{upsert}\n{{\"progress\":null}}\n",
            change(3, 1, 1)
        ))
        .is_ok()
    );
    for (text, complaint) in [
        (format!("{}\n", change(3, 1, 1)), "does not end with"),
        (
            format!(
                "{{\"progress\":5}}\n{}\n{{\"progress\":null}}\n",
                change(3, 1, 1)
            ),
            "promised none below",
        ),
        (
            format!(
                "{}\n{{\"progress\":3}}\n{{\"progress\":null}}\n",
                change(3, 1, 1)
            ),
            "covers only times below 3",
        ),
        (
            "{\"progress\":5}\n{\"progress\":4}\n{\"progress\":null}\n".to_string(),
            "goes back",
        ),
        (
            "{\"progress\":null}\n{\"progress\":null}\n".to_string(),
            "comes after",
        ),
    ] {
        let error = replay(&text).unwrap_err();
        assert!(error.contains(complaint), "{text}: {error}");
    }

    let unconsolidated = format!(
        "{}\n{}\n{{\"progress\":null}}\n",
        change(3, 1, 1),
        change(3, -1, 1)
    );
    assert!(
        Output::parse(&unconsolidated)
            .unwrap()
            .check_consolidated()
            .is_err()
    );
    let two_values = format!(
        "{}\n{}\n{{\"progress\":null}}\n",
        change(3, 1, 1),
        change(3, 1, 2)
    );
    let error = Output::parse(&two_values)
        .unwrap()
        .replay(Granularity::Progress, |_, fold, _| {
            fold.snapshot().map(drop)
        })
        .unwrap_err();
    assert!(error.contains("holds 2 values"), "{error}");
}

#[test]
fn oracle_value_comparison_uses_tolerance_and_expected_fields_only() {
    let expected = json!({"score": 0.5, "start": T0, "nested": [{"p": 0.25}]});
    let close = json!({"score": 0.5004, "start": T0, "nested": [{"p": 0.2501, "extra": 1}], "engagement": "active"});
    assert_eq!(value_difference(&expected, &close), None);
    let far = json!({"score": 0.502, "start": T0, "nested": [{"p": 0.25}]});
    assert_eq!(
        value_difference(&expected, &far).unwrap(),
        "score: 0.502, expected 0.5"
    );
    let off_by_one_ms = json!({"score": 0.5, "start": T0 + 1, "nested": [{"p": 0.25}]});
    assert!(value_difference(&expected, &off_by_one_ms).is_some());
    let missing = json!({"start": T0, "nested": [{"p": 0.25}]});
    assert!(
        value_difference(&expected, &missing)
            .unwrap()
            .contains("score: missing")
    );
}

// ---------------------------------------------------------------------------------------
// 2.–5. The engine against the oracle
// ---------------------------------------------------------------------------------------

const VIEWS: [&str; 2] = ["sessions", "scores"];

/// The bundled example, a required file.
fn example_input() -> String {
    let path = repo_path("examples/events.jsonl");
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("required file {} cannot be read: {e}", path.display()))
}

/// `intentflow generate --users 300 --items 200 --events 20000 --seed 7`
fn generated_input() -> String {
    generate(300, 200, 20_000, 7).to_string()
}

/// Runs the engine on `input` (`--views sessions,scores`, `flags`, and `config` as
/// `--config FILE`), checks the output protocol, and checks it against the oracle with
/// `params` at every checkpoint of `granularity`. Returns the final state.
fn check_engine(
    input: &str,
    params: Params,
    flags: &[&str],
    config: Option<&str>,
    granularity: Granularity,
) -> State {
    let oracle = Oracle::new(input, params);
    assert!(
        oracle.rejected.is_empty(),
        "the test input has invalid lines (first: {:?}); this test is for valid input",
        oracle.rejected.first()
    );
    let input_file = temp_file(".jsonl", input);
    let config_file = config.map(|text| temp_file(".toml", text));
    let views = VIEWS.join(",");
    let mut args = vec!["--views", &views];
    if let Some(file) = &config_file {
        args.extend(["--config", file.path().to_str().unwrap()]);
    }
    args.extend_from_slice(flags);
    let run = run_engine(input_file.path(), &args);
    let output = run.output();
    output
        .check_consolidated()
        .unwrap_or_else(|e| panic!("`{}`: {e}", run.command));
    oracle
        .check(&output, &VIEWS, granularity)
        .unwrap_or_else(|e| panic!("`{}`:\n{e}", run.command));
    let final_state = output.final_state();
    eprintln!(
        "`{}`: {} events ({} late), {} changes, {} progress lines, {} rows at the end, {:.1?}",
        run.command,
        oracle.events.len(),
        oracle.late_events(),
        output.change_count(),
        output.progress_count(),
        final_state.len(),
        run.elapsed
    );
    final_state
}

/// Guards a large test against proving nothing: every view has rows at the end.
fn assert_every_view_has_rows(state: &State) {
    for view in VIEWS {
        assert!(
            state.keys().any(|(v, _)| v == view),
            "no {view} rows at the end"
        );
    }
}

/// Events of a custom type (`hover`, weighted by `CONFIG_WEIGHTS`) and of an unknown type,
/// copied from some item events of `input`.
fn with_custom_type_events(input: &str) -> String {
    let mut out = String::new();
    for (i, line) in input.lines().enumerate() {
        out.push_str(line);
        out.push('\n');
        let Ok(mut event) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if event.get("item").is_none() {
            continue;
        }
        let kind = match i % 97 {
            0 | 40 => "hover",
            70 => "mystery",
            _ => continue,
        };
        event["type"] = json!(kind);
        out.push_str(&format!("{event}\n"));
    }
    out
}

/// `input` reordered: each event moves back by up to `max_shift_ms` of event time (the
/// order is by ts plus a random delay), so with no allowed lateness many come late.
fn shuffled_within(input: &str, max_shift_ms: u64, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut keyed: Vec<(i64, usize, &str)> = input
        .lines()
        .enumerate()
        .map(|(i, line)| {
            let event =
                parse_event(i + 1, line).unwrap_or_else(|e| panic!("input line {}: {e}", i + 1));
            (event.ts + rng.below(max_shift_ms) as i64, i, line)
        })
        .collect();
    keyed.sort();
    keyed
        .into_iter()
        .map(|(_, _, line)| format!("{line}\n"))
        .collect()
}

/// Many users whose gaps sit on the 30-minute boundary (30 min - 1 ms, 30 min, 30 min +
/// 1 ms) or far from it, some client session ids, sent out of order (each event delayed by
/// up to 10 minutes): late events bridge derived sessions and move their starts.
fn session_boundary_input(users: u64, events_per_user: u64, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let kinds = [
        "page_view",
        "page_view",
        "click",
        "scroll",
        "add_to_cart",
        "purchase",
        "hover",
        "exit",
    ];
    let gaps = [
        SECOND,
        4 * MINUTE,
        30 * MINUTE - 1,
        30 * MINUTE,
        30 * MINUTE + 1,
        2 * 60 * MINUTE,
    ];
    let mut arrivals = Vec::new();
    for user in 0..users {
        let mut ts = T0 + rng.below(3_600_000) as i64;
        for _ in 0..events_per_user {
            ts += gaps[rng.below(gaps.len() as u64) as usize];
            let mut e = event(
                &format!("u{user}"),
                kinds[rng.below(kinds.len() as u64) as usize],
                ts,
            );
            if rng.below(10) < 6 {
                e["item"] = json!(format!("p{}", rng.below(20)));
            }
            if rng.below(10) < 3 {
                e["scroll"] = json!(rng.below(10_001) as f64 / 10_000.0);
            }
            if rng.below(100) < 15 {
                e["session"] = json!(format!("c{}", rng.below(3)));
            }
            arrivals.push((ts + rng.below(10 * MINUTE as u64) as i64, e.to_string()));
        }
    }
    arrivals.sort();
    arrivals.into_iter().map(|(_, line)| line + "\n").collect()
}

#[test]
fn engine_session_boundaries_with_late_events() {
    let input = session_boundary_input(200, 15, 3);
    let params = Params::new(1000, 0);
    assert!(Oracle::new(&input, params.clone()).late_events() > 300);
    assert_every_view_has_rows(&check_engine(
        &input,
        params,
        &["--lateness-ms", "0", "--workers", "2"],
        None,
        Granularity::EveryTime,
    ));
}

#[test]
fn engine_example_default_flags() {
    assert_every_view_has_rows(&check_engine(
        &example_input(),
        Params::default(),
        &[],
        None,
        Granularity::Progress,
    ));
}

#[test]
fn engine_example_minute_ticks_no_lateness() {
    let params = Params::new(60_000, 0);
    let flags = params.time_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    assert_every_view_has_rows(&check_engine(
        &example_input(),
        params,
        &flags,
        None,
        Granularity::Progress,
    ));
}

#[test]
fn engine_generated_default_flags() {
    assert_every_view_has_rows(&check_engine(
        &generated_input(),
        Params::default(),
        &[],
        None,
        Granularity::Progress,
    ));
}

#[test]
fn engine_generated_config_weights_two_workers() {
    let input = with_custom_type_events(&generated_input());
    let params = Params::default().with_weights(Weights::from_config(CONFIG_WEIGHTS));
    assert_every_view_has_rows(&check_engine(
        &input,
        params,
        &["--workers", "2"],
        Some(CONFIG_WEIGHTS),
        Granularity::Progress,
    ));
}

#[test]
fn engine_shuffled_input_with_late_events() {
    let input = shuffled_within(&generated_input(), 3 * MINUTE as u64, 11);
    let params = Params::new(1000, 0);
    let late = Oracle::new(&input, params.clone()).late_events();
    let events = input.lines().count();
    assert!(
        late * 10 >= events,
        "only {late} of {events} events are late; shuffle harder"
    );
    assert_every_view_has_rows(&check_engine(
        &input,
        params,
        &["--lateness-ms", "0"],
        None,
        Granularity::Progress,
    ));
}

/// Stronger than the promise at progress lines: changes carry the effective time of the
/// events that cause them, so the state after every change time is also the oracle's.
#[test]
fn engine_change_times_are_effective_times() {
    let input = shuffled_within(&example_input(), 3 * MINUTE as u64, 5);
    let params = Params::new(1000, 0);
    check_engine(
        &input,
        params,
        &["--lateness-ms", "0"],
        None,
        Granularity::EveryTime,
    );
}

#[test]
fn engine_hand_made_inputs() {
    for (name, case) in hand_made_cases() {
        eprintln!("case {name}");
        let flags = case.params.time_flags();
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        check_engine(
            &case.input,
            case.params.clone(),
            &flags,
            case.config,
            Granularity::EveryTime,
        );
    }
}

fn assert_workers_agree(input: &str) {
    let file = temp_file(".jsonl", input);
    let runs: Vec<Run> = ["1", "2", "4"]
        .into_iter()
        .map(|workers| run_engine(file.path(), &["--workers", workers]))
        .collect();
    assert!(
        runs[0].output().change_count() > 0,
        "`{}` printed no changes",
        runs[0].command
    );
    // Change lines must agree byte for byte after sorting. Progress lines are heartbeats
    // whose placement depends on scheduling (README: the state at each one is exact, which
    // the oracle tests check); only the final `{"progress":null}` is common to all runs.
    let changes_only = |stdout: &str| -> String {
        stdout
            .lines()
            .filter(|line| !line.starts_with("{\"progress\":") || *line == "{\"progress\":null}")
            .map(|line| format!("{line}\n"))
            .collect()
    };
    for other in &runs[1..] {
        assert_same_sorted_lines(
            &runs[0].command,
            &changes_only(&runs[0].stdout),
            &other.command,
            &changes_only(&other.stdout),
        );
    }
}

#[test]
fn engine_workers_agree_on_example() {
    assert_workers_agree(&example_input());
}

#[test]
fn engine_workers_agree_on_generated() {
    assert_workers_agree(&generated_input());
}

/// Any input against the oracle, for investigating a mismatch:
/// `INTENTFLOW_TEST_INPUT=events.jsonl [INTENTFLOW_TEST_TICK_MS=1000]
/// [INTENTFLOW_TEST_LATENESS_MS=5000] [INTENTFLOW_TEST_CONFIG=config.toml]
/// cargo test --test oracle_views engine_input_from_env -- --ignored --nocapture`
#[test]
#[ignore = "needs INTENTFLOW_TEST_INPUT"]
fn engine_input_from_env() {
    let var = |name: &str| std::env::var(name).ok();
    let path =
        var("INTENTFLOW_TEST_INPUT").expect("set INTENTFLOW_TEST_INPUT to a JSON lines file");
    let input = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let number = |name: &str, default: i64| var(name).map_or(default, |v| v.parse().expect(name));
    let mut params = Params::new(
        number("INTENTFLOW_TEST_TICK_MS", 1000),
        number("INTENTFLOW_TEST_LATENESS_MS", 5000),
    );
    let config = var("INTENTFLOW_TEST_CONFIG").map(|path| {
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        params.weights = Weights::from_config(&text);
        &*text.leak()
    });
    let flags = params.time_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    check_engine(&input, params, &flags, config, Granularity::EveryTime);
}
