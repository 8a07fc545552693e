//! The views `sessions`, `scores`, `affinity` and `features` (and the model, sequence,
//! `similar` and `recs` views) against the batch oracle (DESIGN.md §8, semantics briefs for
//! issues 2–5).
//!
//! - `oracle_*`: the oracle and the checking machinery on hand-made inputs with
//!   hand-computed expectations (no binary needed: `cargo test --test oracle_views oracle_`);
//! - `engine_*`: the binary against the oracle at every progress line and at the end, on the
//!   bundled example (with its catalog), generated data, configs with other weights,
//!   feedback, engagement and window values (events leaving the window mid-stream), and
//!   shuffled input full of late events; and worker counts 1, 2 and 4 printing the same
//!   lines.

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
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

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

fn dwell(e: Value, ms: u64) -> Value {
    with(e, "dwell_ms", json!(ms))
}

/// The event came from recommendation list `list`.
fn rec(e: Value, list: &str) -> Value {
    with(e, "rec", json!(list))
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

fn affinity_row(user: &str, category: &str, score: f64) -> (&'static str, Value, Value) {
    (
        "affinity",
        json!({"user": user, "category": category}),
        json!({"score": score}),
    )
}

fn features_row(user: &str, value: Value) -> (&'static str, Value, Value) {
    ("features", json!({ "user": user }), value)
}

fn auto(ts: i64) -> String {
    format!("auto-{ts}")
}

// ---------------------------------------------------------------------------------------
// 1. The oracle on hand-made inputs
// ---------------------------------------------------------------------------------------

/// A hand-made input with the parameters it is meant for (times, config, catalog); the
/// oracle tests check the oracle on it by hand, `engine_hand_made_inputs` checks the engine
/// against the oracle.
struct Case {
    input: String,
    params: Params,
}

impl Case {
    fn new(events: &[Value]) -> Case {
        Case {
            input: lines(events),
            params: Params::default(),
        }
    }
    fn times(self, tick_ms: i64, lateness_ms: i64) -> Case {
        Case {
            params: self.params.times(tick_ms, lateness_ms),
            ..self
        }
    }
    /// The config file the engine gets (`--config`) and the oracle reads.
    fn config(self, config: &str) -> Case {
        Case {
            params: self.params.with_config(config),
            ..self
        }
    }
    /// The catalog the engine gets (`--catalog`) and the oracle reads.
    fn catalog(self, lines: &[Value]) -> Case {
        let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
        Case {
            params: self.params.with_catalog(&text),
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
        ("engagement", engagement_case()),
        ("deep_scroll", deep_scroll_case()),
        ("bounce", bounce_case()),
        ("long_dwell", long_dwell_case()),
        ("quick_exit", quick_exit_case()),
        ("boost", boost_case()),
        ("rejected_item", rejected_item_case()),
        ("affinity", affinity_case()),
        ("features", features_case()),
        ("recency", recency_case()),
        ("window", window_case()),
        ("config_overrides", config_overrides_case()),
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
        // `rec` is a string; empty or null means no rec
        r#"{"user":"u1","type":"exit","ts":1,"item":"p1","dwell_ms":5,"rec":7}"#,
        r#"{"user":"u1","type":"exit","ts":1,"item":"p1","dwell_ms":5,"rec":""}"#,
        r#"{"user":"u1","type":"exit","ts":1,"item":"p1","dwell_ms":5,"rec":null}"#,
        r#"{"user":"u1","type":"exit","ts":1,"item":"p1","dwell_ms":5,"rec":"home-top"}"#,
    ]
    .join("\n");
    let parsed = parse_input(&input);
    let lines_of = |events: &[Event]| events.iter().map(|e| e.line).collect::<Vec<_>>();
    assert_eq!(lines_of(&parsed.events), [1, 14, 16, 17, 18]);
    let rejected: Vec<usize> = parsed.rejected.iter().map(|(l, _)| *l).collect();
    assert_eq!(rejected, [2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 15]);
    assert_eq!(parsed.events[1].ts, T0);
    assert_eq!(parsed.events[1].session, None);
    let recs: Vec<bool> = parsed.events[2..].iter().map(Event::has_rec).collect();
    assert_eq!(recs, [false, false, true]);
}

// --- issue 3: engagement, implicit feedback, affinity, features, windows ---------------

/// `features` values compare only the fields named here (the oracle's rows have all).
fn assert_view_at(oracle: &Oracle, view: &str, now: i64, expected: State, context: &str) {
    let actual = oracle.state_at(&[view], now);
    assert_states_match(&expected, &actual, &format!("{view} at {context}"));
}

fn engagement_case() -> Case {
    let s1 = |e: Value| with(e, "session", json!("s1"));
    Case::new(&[
        s1(with(event("u1", "page_view", T0), "scroll", json!(0.2))),
        s1(event("u1", "comment", T0 + MINUTE)),
        s1(on_item(event("u1", "add_to_cart", T0 + 2 * MINUTE), "p1")),
        s1(on_item(event("u1", "purchase", T0 + 3 * MINUTE), "p1")),
    ])
}

#[test]
fn oracle_engagement_goes_passive_active_high_intent_within_a_session() {
    let oracle = engagement_case().oracle();
    let session = |events: u64, engagement: &str, high_intent: u64, purchases: u64| {
        state_of([session_row(
            "u1",
            "s1",
            json!({"events": events, "engagement": engagement, "high_intent": high_intent,
                   "purchases": purchases, "max_scroll": 0.2, "page_views": 1}),
        )])
    };
    let at = |minute: i64| T0 + minute * MINUTE;
    let view = "sessions";
    assert_view_at(
        &oracle,
        view,
        at(0),
        session(1, "passive", 0, 0),
        "page view",
    );
    assert_view_at(&oracle, view, at(1), session(2, "active", 0, 0), "comment");
    assert_view_at(
        &oracle,
        view,
        at(2),
        session(3, "high_intent", 1, 0),
        "cart",
    );
    assert_view_at(
        &oracle,
        view,
        at(3),
        session(4, "high_intent", 2, 1),
        "purchase",
    );
}

fn deep_scroll_case() -> Case {
    let scrolled =
        |user: &str, kind: &str, depth: f64| with(event(user, kind, T0), "scroll", json!(depth));
    Case::new(&[
        scrolled("u1", "page_view", 0.5),
        scrolled("u2", "page_view", 0.49),
        // a scroll event without a depth is not deep
        event("u3", "scroll", T0),
        scrolled("u4", "scroll", 0.2),
        scrolled("u4", "scroll", 1.0),
        // clicks are not active by default
        on_item(event("u5", "click", T0), "p1"),
        // scroll is kept in ten-thousandths, rounded: 0.49996 is 0.5, 0.49994 is 0.4999
        scrolled("u6", "page_view", 0.49996),
        scrolled("u7", "page_view", 0.49994),
    ])
}

#[test]
fn oracle_deep_scroll_makes_a_session_active() {
    let state = deep_scroll_case().oracle().state(&["sessions"], None);
    let engagement = |user: &str, e: &str| session_row(user, &auto(T0), json!({ "engagement": e }));
    let expected = state_of([
        engagement("u1", "active"),
        engagement("u2", "passive"),
        engagement("u3", "passive"),
        engagement("u4", "active"),
        engagement("u5", "passive"),
        session_row(
            "u6",
            &auto(T0),
            json!({"engagement": "active", "max_scroll": 0.5}),
        ),
        session_row(
            "u7",
            &auto(T0),
            json!({"engagement": "passive", "max_scroll": 0.4999}),
        ),
    ]);
    assert_states_match(&expected, &state, "sessions");
}

fn bounce_case() -> Case {
    let page = |user: &str, dt: i64| event(user, "page_view", T0 + dt);
    let click = |user: &str, dt: i64| event(user, "click", T0 + dt);
    Case::new(&[
        dwell(page("b1", 0), 9_999),
        dwell(page("b2", 0), 10_000),
        page("b3", 0),
        click("b3", 9_999),
        page("b4", 0),
        click("b4", 10_000),
        page("b5", 0),
        page("b5", SECOND),
        click("b6", 0),
        dwell(page("b7", 0), 4_000),
        dwell(click("b7", SECOND), 5_999),
        dwell(page("b8", 0), 4_000),
        dwell(click("b8", SECOND), 6_000),
    ])
    .times(1, 60_000)
}

#[test]
fn oracle_bounce_is_one_page_view_short_in_time_and_dwell() {
    let state = bounce_case().oracle().state(&["sessions"], None);
    let row = |user: &str, bounce: bool, dwell_ms: u64, page_views: u64| {
        session_row(
            user,
            &auto(T0),
            json!({"bounce": bounce, "dwell_ms": dwell_ms, "page_views": page_views}),
        )
    };
    let expected = state_of([
        row("b1", true, 9_999, 1),
        row("b2", false, 10_000, 1),
        row("b3", true, 0, 1),
        row("b4", false, 0, 1),
        row("b5", false, 0, 2),
        row("b6", false, 0, 0),
        row("b7", true, 9_999, 1),
        row("b8", false, 10_000, 1),
    ]);
    assert_states_match(&expected, &state, "sessions");
}

fn long_dwell_case() -> Case {
    Case::new(&[
        dwell(u1_on("page_view", "p1", 0), 120_001),
        dwell(u1_on("page_view", "p2", 1), 120_000),
        dwell(u1_on("click", "p3", 2), 200_000),
        u1_on("page_view", "p4", 3),
    ])
}

#[test]
fn oracle_long_dwell_boosts_the_score() {
    let state = long_dwell_case().oracle().state(&["scores"], None);
    let expected = state_of([score_row("u1", "p1", 1.0), score_row("u1", "p3", 2.0)]);
    assert_states_match(&expected, &state, "scores");
}

fn quick_exit_case() -> Case {
    Case::new(&[
        dwell(u1_on("page_view", "p1", 0), 9_999),
        dwell(u1_on("exit", "p2", 1), 0),
        dwell(u1_on("page_view", "p3", 2), 10_000),
        // only page views and exits are quick exits
        dwell(u1_on("click", "p4", 3), 100),
        // without dwell_ms, no quick exit
        u1_on("exit", "p5", 4),
        dwell(u1_on("page_view", "p6", 5), 5_000),
        u1_on("add_to_cart", "p6", 6),
        // no item: no score
        dwell(event("u1", "page_view", T0 + 7 * MINUTE), 100),
    ])
}

#[test]
fn oracle_quick_exit_penalises_the_score() {
    let state = quick_exit_case().oracle().state(&["scores"], None);
    let expected = state_of([
        score_row("u1", "p1", -1.0),
        score_row("u1", "p2", -1.0),
        score_row("u1", "p4", 1.0),
        score_row("u1", "p6", 2.0),
    ]);
    assert_states_match(&expected, &state, "scores");
}

const BOOST_CONFIG: &str = "\
[weights]
click = 0.003
exit = -0.003
[windows]
boost = [{ span_ms = 60000, extra = 0.5 }, { span_ms = 120000, extra = 0.25 }]
";

fn boost_case() -> Case {
    Case::new(&[
        u1_on("click", "p1", 0),
        u1_on("exit", "p2", 0),
        u1_on("purchase", "p3", 0),
        // late (ts 30 s before the watermark): applied at T0, boosted from T0 on
        on_item(event("u3", "click", T0 - 30 * SECOND), "p9"),
        // later events, so that a run sees the boosts end
        event("u2", "page_view", T0 + 130 * SECOND),
    ])
    .times(1000, 0)
    .config(BOOST_CONFIG)
}

#[test]
fn oracle_boost_windows_stack_and_truncate_toward_zero() {
    let oracle = boost_case().oracle();
    assert!(oracle.events[3].late);
    let scores = |p1: f64, p2: f64, p3: f64| {
        state_of([
            score_row("u1", "p1", p1),
            score_row("u1", "p2", p2),
            score_row("u1", "p3", p3),
            score_row("u3", "p9", p1),
        ])
    };
    // c = 3 milli: 3 + trunc(1.5) + trunc(0.75) = 4; c = -3: -3 - 1 - 0 = -4 (not -6);
    // c = 5000: 5000 + 2500 + 1250.
    assert_view_at(&oracle, "scores", T0, scores(0.004, -0.004, 8.75), "t");
    let both = T0 + 59_999;
    assert_view_at(
        &oracle,
        "scores",
        both,
        scores(0.004, -0.004, 8.75),
        "t + 60 s - 1",
    );
    let second = T0 + 60_000;
    assert_view_at(
        &oracle,
        "scores",
        second,
        scores(0.003, -0.003, 6.25),
        "t + 60 s",
    );
    let none = T0 + 120_000;
    assert_view_at(
        &oracle,
        "scores",
        none,
        scores(0.003, -0.003, 5.0),
        "t + 120 s",
    );
    assert_states_match(
        &scores(0.003, -0.003, 5.0),
        &oracle.state(&["scores"], None),
        "scores at the end",
    );
}

/// Item p1 collects quick exits with `rec` from u1, u2 (twice) and, later, u5; other
/// events on p1 do not count. p2 gets quick exits without `rec` only. The window is one
/// hour, so u1's rejection leaves it at T0 + 1 h.
fn rejected_item_case() -> Case {
    let at =
        |user: &str, kind: &str, item: &str, dt: i64| on_item(event(user, kind, T0 + dt), item);
    Case::new(&[
        rec(dwell(at("u1", "page_view", "p1", 0), 3_000), "r1"),
        rec(dwell(at("u2", "exit", "p1", SECOND), 500), "r1"),
        rec(dwell(at("u2", "page_view", "p1", 2 * SECOND), 1_000), "r2"),
        // no rec: does not count
        dwell(at("u3", "page_view", "p1", 3 * SECOND), 2_000),
        // not a quick exit: does not count
        rec(at("u4", "click", "p1", 4 * SECOND), "r1"),
        at("u6", "click", "p1", 5 * SECOND),
        at("u6", "click", "p1", 6 * SECOND),
        at("u8", "click", "p1", 7 * SECOND),
        dwell(at("u8", "page_view", "p1", 8 * SECOND), 100),
        dwell(at("u1", "page_view", "p2", 9 * SECOND), 100),
        dwell(at("u2", "page_view", "p2", 10 * SECOND), 100),
        dwell(at("u3", "page_view", "p2", 11 * SECOND), 100),
        // an empty rec is no rec: p7 is not rejected
        rec(dwell(at("u1", "page_view", "p7", 12 * SECOND), 100), ""),
        rec(dwell(at("u2", "page_view", "p7", 12 * SECOND), 100), ""),
        rec(dwell(at("u3", "page_view", "p7", 12 * SECOND), 100), ""),
        at("u9", "click", "p3", 12 * SECOND),
        dwell(at("u9", "page_view", "p3", 13 * SECOND), 100),
        // the third distinct user
        rec(dwell(at("u5", "page_view", "p1", 10 * MINUTE), 9_999), "r3"),
        event("u7", "page_view", T0 + 2 * HOUR),
    ])
    .times(1000, 0)
    .config("[windows]\nspan_ms = 3600000\n")
}

#[test]
fn oracle_rejected_item_needs_min_distinct_users_with_rec_quick_exits() {
    let oracle = rejected_item_case().oracle();
    let rejected = |now: i64| -> Vec<String> { oracle.rejected_at(now).into_iter().collect() };
    let before = T0 + 10 * MINUTE - 1;
    let after = T0 + 10 * MINUTE;
    assert!(rejected(before).is_empty(), "two users are not enough");
    assert_eq!(rejected(after), ["p1"]);
    assert_eq!(rejected(T0 + HOUR - 1), ["p1"]);
    assert!(
        rejected(T0 + HOUR).is_empty(),
        "u1's quick exit left the window"
    );
    let p2 = [
        score_row("u1", "p2", -1.0),
        score_row("u2", "p2", -1.0),
        score_row("u3", "p2", -1.0),
        score_row("u1", "p7", -1.0),
        score_row("u2", "p7", -1.0),
        score_row("u3", "p7", -1.0),
    ];
    let mut expected = state_of([
        score_row("u1", "p1", -1.0),
        score_row("u2", "p1", -2.0),
        score_row("u3", "p1", -1.0),
        score_row("u4", "p1", 1.0),
        score_row("u6", "p1", 2.0),
    ]);
    expected.extend(state_of(p2.clone()));
    assert_view_at(&oracle, "scores", before, expected, "before the third user");
    let mut expected = state_of([
        score_row("u1", "p1", -3.0),
        score_row("u2", "p1", -4.0),
        score_row("u3", "p1", -3.0),
        score_row("u4", "p1", -1.0),
        score_row("u5", "p1", -3.0),
    ]);
    expected.extend(state_of(p2.clone()));
    assert_view_at(&oracle, "scores", after, expected, "after the third user");
    // at T0 + 1 h the first events leave: u1's p1, then u2's first exit
    let expected = state_of([
        score_row("u2", "p1", -2.0),
        score_row("u3", "p1", -1.0),
        score_row("u4", "p1", 1.0),
        score_row("u5", "p1", -1.0),
        score_row("u6", "p1", 2.0),
    ]);
    let mut expected = expected;
    expected.extend(state_of(p2));
    assert_view_at(&oracle, "scores", T0 + HOUR, expected, "T0 + 1 h");
}

#[test]
fn oracle_score_row_exists_iff_base_and_score_are_not_zero() {
    let oracle = rejected_item_case().oracle();
    let rows = oracle.state_at(&["scores"], T0 + 10 * MINUTE);
    let has = |user: &str, item: &str| {
        rows.contains_key(&(
            "scores".to_string(),
            JsonKey::new(&json!({"user": user, "item": item})),
        ))
    };
    // u6: base 2 on rejected p1, minus the penalty 2: score 0, no row
    assert!(!has("u6", "p1"));
    // u8: click + quick exit = base 0 on rejected p1: no row (not -2)
    assert!(!has("u8", "p1"));
    // u9: base 0 on p3 (not rejected): no row
    assert!(!has("u9", "p3"));
    assert!(has("u4", "p1") && has("u5", "p1"));
}

fn affinity_case() -> Case {
    let item = |id: &str, category: &str| json!({"item": id, "category": category, "kind": "product", "price": 10.0, "premium": false});
    Case::new(&[
        u1_on("purchase", "p1", 0),
        u1_on("click", "p2", 1),
        u1_on("click", "p3", 2),
        // not in the catalog: ignored
        u1_on("click", "p9", 3),
        // outdoor sums to 0: no row
        u1_on("click", "p4", 4),
        dwell(u1_on("page_view", "p5", 5), 100),
        on_item(event("u2", "click", T0), "p9"),
    ])
    .catalog(&[
        item("p1", "shoes"),
        item("p2", "shoes"),
        item("p3", "kitchen"),
        item("p4", "outdoor"),
        item("p5", "outdoor"),
        // a later line for p1 is a bad line; the first wins
        item("p1", "toys"),
    ])
}

#[test]
fn oracle_affinity_sums_scores_by_category_and_ignores_unknown_items() {
    let oracle = affinity_case().oracle();
    assert_eq!(oracle.params.catalog.rejected.len(), 1);
    let state = oracle.state(&["affinity", "features"], None);
    let expected = state_of([
        affinity_row("u1", "shoes", 6.0),
        affinity_row("u1", "kitchen", 1.0),
        features_row("u1", json!({ "categories": 2 })),
        features_row("u2", json!({ "categories": 0 })),
    ]);
    assert_states_match(&expected, &state, "affinity and features");
}

#[test]
fn oracle_catalog_first_line_for_an_item_wins() {
    let catalog = Catalog::parse(
        &[
            r#"{"item":"p1","category":"shoes","kind":"product","price":1.5,"premium":false}"#,
            r#"{"item":"p1","category":"toys","kind":"product","price":2.5,"premium":true}"#,
            "not json",
            r#"{"item":"p2","kind":"offer","price":1.0,"premium":false}"#,
            "",
            r#"{"item":"p3","category":"kitchen","kind":"spaceship","price":1.0,"premium":false}"#,
            // a bad line claims no id: this one is p3's first
            r#"{"item":"p3","category":"kitchen","kind":"guide","price":1.0,"premium":false}"#,
            r#"{"item":"p4","category":"toys","kind":"article","price":"cheap","premium":false}"#,
        ]
        .join("\n"),
    );
    assert_eq!(catalog.category.len(), 2);
    assert_eq!(catalog.category["p1"], "shoes");
    assert_eq!(catalog.category["p3"], "kitchen");
    let rejected: Vec<usize> = catalog.rejected.iter().map(|(l, _)| *l).collect();
    assert_eq!(rejected, [2, 3, 4, 6, 8]);
    assert_eq!(catalog.rejected[0].1, "duplicate catalog item");
}

/// u1: an active session (60 s), a bounce (0 s), a high-intent session with a purchase
/// (31 s). u2: 32 sessions of 11 s, half an hour apart, one of them a bounce (0 s), 3 active.
fn features_case() -> Case {
    let s = |e: Value, id: &str| with(e, "session", json!(id));
    let mut events = vec![
        s(dwell(event("u1", "page_view", T0), 20_000), "s1"),
        s(event("u1", "comment", T0 + MINUTE), "s1"),
        s(
            with(
                dwell(event("u1", "page_view", T0 + HOUR), 1_000),
                "scroll",
                json!(0.25),
            ),
            "s2",
        ),
        s(
            with(
                event("u1", "page_view", T0 + 2 * HOUR),
                "scroll",
                json!(0.5),
            ),
            "s3",
        ),
        s(u1_on("add_to_cart", "p1", 120), "s3"),
        s(u1_on("purchase", "p1", 120), "s3"),
    ];
    // the purchase 31 s into s3
    events[5]["ts"] = json!(T0 + 2 * HOUR + 31 * SECOND);
    events[4]["ts"] = json!(T0 + 2 * HOUR + 30 * SECOND);
    for k in 0..32 {
        let id = format!("x{k}");
        let start = T0 + k * 30 * MINUTE;
        events.push(s(event("u2", "page_view", start), &id));
        if k > 0 {
            events.push(s(event("u2", "click", start + 11 * SECOND), &id));
        }
        if (1..=3).contains(&k) {
            events.push(s(event("u2", "comment", start + 5 * SECOND), &id));
        }
    }
    events.sort_by_key(|e| e["ts"].as_i64().unwrap());
    Case::new(&events)
}

#[test]
fn oracle_features_sum_sessions_and_round_shares_half_up() {
    assert_eq!(share_ten_thousandths(2, 3), 6667);
    assert_eq!(share_ten_thousandths(1, 3), 3333);
    assert_eq!(share_ten_thousandths(1, 32), 313, "312.5 rounds up");
    assert_eq!(share_ten_thousandths(3, 32), 938, "937.5 rounds up");
    assert_eq!(share_ten_thousandths(0, 0), 0);
    let state = features_case().oracle().state(&["features"], None);
    let expected = state_of([
        features_row(
            "u1",
            json!({"sessions": 3, "avg_session_ms": 30_333, "page_views": 3, "high_intent": 2,
                   "purchases": 1, "active_share": 0.6667, "bounce_rate": 0.3333,
                   "categories": 0, "avg_dwell_ms": 7_000, "avg_scroll": 0.25,
                   "active_1d": true, "active_7d": true, "active_30d": true}),
        ),
        features_row(
            "u2",
            json!({"sessions": 32, "avg_session_ms": 10_656, "page_views": 32, "high_intent": 0,
                   "purchases": 0, "active_share": 0.0938, "bounce_rate": 0.0313,
                   "categories": 0, "avg_dwell_ms": 0, "avg_scroll": 0,
                   "active_1d": true, "active_7d": true, "active_30d": true}),
        ),
    ]);
    assert_states_match(&expected, &state, "features");
    // exactly the rounded values, not within the tolerance
    let u2 = &state[&("features".to_string(), JsonKey::new(&json!({"user": "u2"})))].0;
    assert_eq!(u2["bounce_rate"], json!(0.0313));
    assert_eq!(u2["active_share"], json!(0.0938));
    let fields: BTreeSet<&str> = u2.as_object().unwrap().keys().map(String::as_str).collect();
    let expected_fields: BTreeSet<&str> = [
        "sessions",
        "avg_session_ms",
        "page_views",
        "high_intent",
        "purchases",
        "active_share",
        "bounce_rate",
        "categories",
        "avg_dwell_ms",
        "avg_scroll",
        "active_1d",
        "active_7d",
        "active_30d",
    ]
    .into();
    assert_eq!(fields, expected_fields);
}

const SHORT_WINDOWS: &str = "\
[windows]
span_ms = 172800000
recency_days = [1, 3]
";

fn recency_case() -> Case {
    Case::new(&[
        on_item(event("u1", "click", T0), "p1"),
        // a later event, so that a run sees u1 go
        event("u9", "page_view", T0 + 4 * DAY),
    ])
    .config(SHORT_WINDOWS)
}

#[test]
fn oracle_recency_flags_switch_off_exactly_at_t_plus_n_days() {
    let oracle = recency_case().oracle();
    let features = |sessions: u64, d1: bool, d3: bool| {
        state_of([features_row(
            "u1",
            json!({"sessions": sessions, "active_1d": d1, "active_3d": d3}),
        )])
    };
    let at = |now: i64| -> State {
        oracle
            .state_at(&["features"], now)
            .into_iter()
            .filter(|((_, key), _)| key.field("user").as_deref() == Some("u1"))
            .collect()
    };
    assert_states_match(&features(1, true, true), &at(T0), "t");
    assert_states_match(&features(1, true, true), &at(T0 + DAY - 1), "t + 1 d - 1");
    assert_states_match(&features(1, false, true), &at(T0 + DAY), "t + 1 d");
    assert_states_match(
        &features(1, false, true),
        &at(T0 + 2 * DAY - 1),
        "t + 2 d - 1",
    );
    // out of the 2-day main window, still active in the last 3 days: a row without sessions
    let expected = state_of([features_row(
        "u1",
        json!({"sessions": 0, "avg_session_ms": 0, "page_views": 0, "high_intent": 0,
               "purchases": 0, "active_share": 0, "bounce_rate": 0, "categories": 0,
               "active_1d": false, "active_3d": true}),
    )]);
    assert_states_match(&expected, &at(T0 + 2 * DAY), "t + 2 d");
    assert_states_match(&expected, &at(T0 + 3 * DAY - 1), "t + 3 d - 1");
    assert_states_match(&State::new(), &at(T0 + 3 * DAY), "t + 3 d");
    let row = &at(T0)[&("features".to_string(), JsonKey::new(&json!({"user": "u1"})))].0;
    assert!(
        row.get("active_7d").is_none(),
        "only the configured flags: {row}"
    );
    let scores = |now: i64| oracle.state_at(&["scores", "sessions"], now).len();
    assert_eq!(scores(T0 + 2 * DAY - 1), 2);
    assert_eq!(scores(T0 + 2 * DAY), 0);
}

/// A one-hour window. u1: one derived session of three events, which shrinks (and is
/// renamed) as they leave. u3: a late event (applied at T0 + 40 min, ts T0) outlives the
/// event that bridged it to the next, so the session splits in two.
fn window_case() -> Case {
    Case::new(&[
        event("u1", "page_view", T0),
        on_item(event("u1", "click", T0 + 10 * MINUTE), "p1"),
        event("u3", "page_view", T0 + 20 * MINUTE),
        event("u1", "page_view", T0 + 35 * MINUTE),
        event("u3", "page_view", T0 + 40 * MINUTE),
        event("u3", "page_view", T0),
        event("u2", "page_view", T0 + 3 * HOUR),
    ])
    .times(1000, 0)
    .config("[windows]\nspan_ms = 3600000\n")
}

#[test]
fn oracle_events_leave_the_main_window_exactly_at_t_plus_w() {
    let oracle = window_case().oracle();
    assert!(oracle.events[5].late);
    assert_eq!(oracle.events[5].effective, T0 + 40 * MINUTE);
    let session = |user: &str, start: i64, end: i64, events: u64| {
        session_row(
            user,
            &auto(T0 + start * MINUTE),
            json!({"start": T0 + start * MINUTE, "end": T0 + end * MINUTE, "events": events}),
        )
    };
    let u1_at = |now: i64| -> State {
        oracle
            .state_at(&["sessions", "scores"], now)
            .into_iter()
            .filter(|((_, key), _)| key.field("user").as_deref() == Some("u1"))
            .collect()
    };
    let p1 = score_row("u1", "p1", 1.0);
    assert_states_match(
        &state_of([session("u1", 0, 35, 3), p1.clone()]),
        &u1_at(T0 + HOUR - 1),
        "u1 at t + W - 1",
    );
    assert_states_match(
        &state_of([session("u1", 10, 35, 2), p1]),
        &u1_at(T0 + HOUR),
        "u1 at t + W: the first event left, the session starts later",
    );
    assert_states_match(
        &state_of([session("u1", 35, 35, 1)]),
        &u1_at(T0 + HOUR + 10 * MINUTE),
        "u1: the click left, no score",
    );
    assert_states_match(
        &State::new(),
        &u1_at(T0 + HOUR + 50 * MINUTE),
        "u1: all left",
    );
    // u1 is still active in the last day: a features row without sessions
    let features = oracle.state_at(&["features"], T0 + HOUR + 50 * MINUTE);
    assert_states_match(
        &state_of([
            features_row("u1", json!({"sessions": 0, "active_1d": true})),
            features_row("u3", json!({"sessions": 0, "active_1d": true})),
        ]),
        &features,
        "features when all events left the window",
    );

    let u3_at = |now: i64| -> State {
        oracle
            .state_at(&["sessions"], now)
            .into_iter()
            .filter(|((_, key), _)| key.field("user").as_deref() == Some("u3"))
            .collect()
    };
    let bridged = state_of([session("u3", 0, 40, 3)]);
    assert_states_match(&bridged, &u3_at(T0 + 40 * MINUTE), "u3 with the late event");
    let before = T0 + 80 * MINUTE - 1;
    assert_states_match(&bridged, &u3_at(before), "u3 before the bridge leaves");
    assert_states_match(
        &state_of([session("u3", 0, 0, 1), session("u3", 40, 40, 1)]),
        &u3_at(T0 + 80 * MINUTE),
        "u3 after the bridge left",
    );
    assert_states_match(&State::new(), &u3_at(T0 + 100 * MINUTE), "u3: all left");
}

#[test]
fn oracle_final_state_is_at_the_last_effective_time() {
    let oracle = window_case().oracle();
    let views = ["sessions", "scores", "affinity", "features"];
    let last = T0 + 3 * HOUR;
    assert_eq!(oracle.last_time(), Some(last));
    let at_last = oracle.state_at(&views, last);
    assert_states_match(&at_last, &oracle.state(&views, None), "the end");
    // a progress line past the last event shows the same state: nothing expires later
    assert_states_match(
        &at_last,
        &oracle.state(&views, Some(last + 40 * DAY)),
        "progress past the end",
    );
    assert!(oracle.state_at(&views, last + 40 * DAY).is_empty());
    assert!(
        at_last.keys().any(|(v, _)| v == "sessions"),
        "u2's session is in the window at the end"
    );
    assert_eq!(
        oracle.state(&views, Some(T0)).len(),
        0,
        "progress T0: nothing applied"
    );
}

const FEEDBACK_CONFIG: &str = "\
[weights]
click = 0.5
custom = { hover = 0.25 }

[engagement]
high_intent = [\"purchase\", \"hover\"]
active = [\"click\"]
passive_max_scroll = 0.3

[feedback]
long_dwell_ms = 5000
long_dwell_boost = 0.25
quick_exit_ms = 2000
quick_exit_penalty = 0.5
bounce_ms = 3000
rejected_min_users = 1
rejected_penalty = 0.75

[windows]
span_ms = 7200000
recency_days = [2]
boost = [{ span_ms = 60000, extra = 1.5 }]
";

fn config_overrides_case() -> Case {
    let s = |e: Value, id: &str| with(e, "session", json!(id));
    Case::new(&[
        // scrolled to 0.3: active; one page view, 2.5 s dwell: a bounce
        s(
            with(
                dwell(on_item(event("u1", "page_view", T0), "p1"), 2_500),
                "scroll",
                json!(0.3),
            ),
            "s1",
        ),
        // a quick exit (< 2 s) from a recommendation: p2 is rejected (1 user is enough)
        s(
            rec(
                dwell(on_item(event("u2", "page_view", T0), "p2"), 1_999),
                "r1",
            ),
            "s2",
        ),
        s(on_item(event("u4", "click", T0), "p5"), "s4"),
        s(on_item(event("u3", "hover", T0), "p3"), "s3"),
        s(
            dwell(on_item(event("u3", "click", T0 + SECOND), "p3"), 6_000),
            "s3",
        ),
        s(
            on_item(event("u3", "purchase", T0 + 2 * SECOND), "p4"),
            "s3",
        ),
        event("u9", "page_view", T0 + 3 * HOUR),
    ])
    .times(1000, 0)
    .config(FEEDBACK_CONFIG)
}

#[test]
fn oracle_config_overrides_feedback_engagement_and_windows() {
    let config = parse_config(FEEDBACK_CONFIG).unwrap();
    assert_eq!(config.weights.milli("hover"), 250);
    assert_eq!(
        config.engagement.high_intent,
        ["purchase".to_string(), "hover".to_string()]
    );
    assert_eq!(config.engagement.passive_max_scroll, 0.3);
    assert_eq!(
        config.feedback,
        Feedback {
            long_dwell_ms: 5000,
            long_dwell_boost_milli: 250,
            quick_exit_ms: 2000,
            quick_exit_penalty_milli: 500,
            bounce_ms: 3000,
            rejected_min_users: 1,
            rejected_penalty_milli: 750,
        }
    );
    assert_eq!(config.windows.span_ms, 2 * HOUR);
    assert_eq!(config.windows.recency_days, [2]);
    assert_eq!(
        config.windows.boost,
        [Boost {
            span_ms: 60_000,
            extra_milli: 1500
        }]
    );
    let defaults = parse_config("").unwrap();
    assert_eq!(defaults, Config::default());
    assert_eq!(defaults.windows.span_ms, 2_592_000_000);
    assert_eq!(
        parse_config("[sessions]\ninactivity_gap_ms = 600000\n")
            .unwrap()
            .session_gap_ms,
        600_000
    );

    let oracle = config_overrides_case().oracle();
    let sessions = oracle.state_at(&["sessions"], T0 + 2 * SECOND);
    let expected = state_of([
        session_row(
            "u1",
            "s1",
            json!({"engagement": "active", "bounce": true, "dwell_ms": 2_500, "high_intent": 0}),
        ),
        session_row(
            "u2",
            "s2",
            json!({"engagement": "passive", "bounce": true, "dwell_ms": 1_999}),
        ),
        session_row(
            "u3",
            "s3",
            json!({"engagement": "high_intent", "bounce": false, "high_intent": 2,
                   "purchases": 1, "dwell_ms": 6_000}),
        ),
        session_row("u4", "s4", json!({"engagement": "active", "bounce": false})),
    ]);
    assert_states_match(&expected, &sessions, "sessions");
    // u1 p1: weight 0, 2.5 s is neither long (> 5 s) nor quick (< 2 s): no row.
    // u2 p2: -0.5 - trunc(0.75) in the boost window, rejected: -0.5 - 0.75 - 0.75 = -2.
    // u3 p3: hover 0.25 * 2.5 + click (0.5 + 0.25 long dwell) * 2.5 = 2.5; p4 5 * 2.5.
    // u4 p5: 0.5 * 2.5.
    let boosted = state_of([
        score_row("u2", "p2", -2.0),
        score_row("u3", "p3", 2.5),
        score_row("u3", "p4", 12.5),
        score_row("u4", "p5", 1.25),
    ]);
    assert_view_at(&oracle, "scores", T0 + 2 * SECOND, boosted, "all boosted");
    let plain = state_of([
        score_row("u2", "p2", -1.25),
        score_row("u3", "p3", 1.0),
        score_row("u3", "p4", 5.0),
        score_row("u4", "p5", 0.5),
    ]);
    assert_view_at(&oracle, "scores", T0 + 62 * SECOND, plain, "boosts over");
    // the 2-hour window is over, the 2-day recency window is not
    let expected = state_of([features_row(
        "u3",
        json!({"sessions": 0, "high_intent": 0, "active_2d": true}),
    )]);
    let features: State = oracle
        .state_at(&["features"], T0 + 2 * HOUR + 2 * SECOND)
        .into_iter()
        .filter(|((_, key), _)| key.field("user").as_deref() == Some("u3"))
        .collect();
    assert_states_match(&expected, &features, "features of u3 after the window");
    let u3 = &features[&("features".to_string(), JsonKey::new(&json!({"user": "u3"})))].0;
    assert!(u3.get("active_1d").is_none(), "{u3}");
}

#[test]
fn oracle_config_errors_name_the_key() {
    for (config, key) in [
        ("[feedback]\nbogus = 1\n", "feedback.bogus"),
        ("[nonsense]\nx = 1\n", "nonsense"),
        ("[weights]\nteleport = 1\n", "weights.teleport"),
        (
            "[engagement]\npassive_max_scroll = 1.5\n",
            "engagement.passive_max_scroll",
        ),
        (
            "[engagement]\nactive = [\"teleport\"]\n",
            "engagement.active",
        ),
        (
            "[engagement]\nhigh_intent = \"purchase\"\n",
            "engagement.high_intent",
        ),
        (
            "[feedback]\nrejected_min_users = 0\n",
            "feedback.rejected_min_users",
        ),
        (
            "[feedback]\nquick_exit_ms = \"fast\"\n",
            "feedback.quick_exit_ms",
        ),
        (
            "[feedback]\nrejected_penalty = \"high\"\n",
            "feedback.rejected_penalty",
        ),
        ("[windows]\nspan_ms = 0\n", "windows.span_ms"),
        ("[windows]\nrecency_days = [1, 0]\n", "windows.recency_days"),
        ("[windows]\nrecency_days = [7, 7]\n", "windows.recency_days"),
        (
            "[sessions]\ninactivity_gap_ms = 0\n",
            "sessions.inactivity_gap_ms",
        ),
        (
            "[windows]\nboost = [{ span_ms = 1000 }]\n",
            "windows.boost.extra",
        ),
        (
            "[windows]\nboost = [{ span_ms = 1000, extra = 1, x = 2 }]\n",
            "windows.boost.x",
        ),
    ] {
        let error = parse_config(config).expect_err(config);
        assert!(error.contains(key), "{config}: {error}");
    }
    // a custom type may be named in the engagement lists
    let ok = "[weights]\ncustom = { hover = 1 }\n[engagement]\nactive = [\"hover\"]\n";
    assert_eq!(parse_config(ok).unwrap().engagement.active, ["hover"]);
}

// --- the checking machinery, fed with output written from the oracle itself -------------

/// What a correct engine prints for `oracle`: at every time a view changes (events
/// entering and leaving windows, refreshes of `similar` and `recs`, up to the last
/// effective time) the consolidated changes,
/// then a progress line just above it, then `{"progress":null}`.
fn simulated_engine_output(oracle: &Oracle, views: &[&str]) -> String {
    let times = oracle.change_times_for(views);
    let mut out = String::new();
    let mut before = State::new();
    let change = |row: &RowId, value: &Value, time: i64, diff: i64| {
        format!(
            "{}\n",
            json!({"view": row.0, "key": row.1.value(), "time": time, "diff": diff, "value": value})
        )
    };
    for t in times {
        let after = oracle.state_at(views, t);
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

const ALL_VIEWS: [&str; 4] = ["sessions", "scores", "affinity", "features"];

#[test]
fn oracle_checker_follows_windows_rejections_and_boosts() {
    for (name, case) in [
        ("window", window_case()),
        ("rejected_item", rejected_item_case()),
        ("recency", recency_case()),
        ("boost", boost_case()),
        ("affinity", affinity_case()),
        ("config_overrides", config_overrides_case()),
    ] {
        let oracle = case.oracle();
        let output = Output::parse(&simulated_engine_output(&oracle, &ALL_VIEWS)).unwrap();
        output.check_consolidated().unwrap();
        for granularity in [Granularity::Progress, Granularity::EveryTime] {
            oracle
                .check(&output, &ALL_VIEWS, granularity)
                .unwrap_or_else(|e| panic!("case {name}, {granularity:?}: {e}"));
        }
    }
}

#[test]
fn oracle_checker_catches_a_missing_expiry() {
    let oracle = window_case().oracle();
    // at T0 + 1 h u1's first event leaves the window
    let expiry = T0 + HOUR;
    assert!(oracle.change_times().contains(&expiry));
    let good = simulated_engine_output(&oracle, &ALL_VIEWS);
    let bad: String = good
        .lines()
        .filter(|l| !l.contains(&format!("\"time\":{expiry},")))
        .map(|l| format!("{l}\n"))
        .collect();
    assert_ne!(bad, good);
    let error = oracle
        .check(
            &Output::parse(&bad).unwrap(),
            &ALL_VIEWS,
            Granularity::Progress,
        )
        .unwrap_err();
    assert!(
        error.contains(&format!("progress {}", expiry + 1)),
        "{error}"
    );
    assert!(error.contains("\"user\":\"u1\""), "{error}");
    assert!(error.contains("out of the window"), "{error}");
}

#[test]
fn oracle_checker_rejects_expiries_after_the_last_event() {
    let oracle = window_case().oracle();
    let good = simulated_engine_output(&oracle, &ALL_VIEWS);
    // an engine that goes on expiring rows after the last event (T0 + 3 h)
    let later = T0 + 3 * HOUR + 2 * HOUR;
    let end = oracle.state(&ALL_VIEWS, None);
    let after = oracle.state_at(&ALL_VIEWS, later);
    let mut bad = good
        .strip_suffix("{\"progress\":null}\n")
        .unwrap()
        .to_string();
    for (row, (value, _)) in &end {
        if after.get(row).map(|(v, _)| v) != Some(value) {
            bad += &format!(
                "{}\n",
                json!({"view": row.0, "key": row.1.value(), "time": later, "diff": -1, "value": value})
            );
        }
    }
    bad += "{\"progress\":null}\n";
    assert_ne!(bad, good);
    let error = oracle
        .check(
            &Output::parse(&bad).unwrap(),
            &ALL_VIEWS,
            Granularity::Progress,
        )
        .unwrap_err();
    assert!(error.contains("the end"), "{error}");
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
    let close = json!({"score": 0.500_000_1, "start": T0, "nested": [{"p": 0.250_04, "extra": 1}], "engagement": "active"});
    assert_eq!(value_difference(&expected, &close), None);
    // one unit of the last printed decimal (a thousandth of a score, a ten-thousandth of
    // a share) is a difference, also on large values
    let far = json!({"score": 0.501, "start": T0, "nested": [{"p": 0.25}]});
    assert_eq!(
        value_difference(&expected, &far).unwrap(),
        "score: 0.501, expected 0.5"
    );
    let share = json!({"score": 0.5, "start": T0, "nested": [{"p": 0.2501}]});
    assert!(value_difference(&expected, &share).is_some());
    assert!(value_difference(&json!({"s": 123_456.789}), &json!({"s": 123_456.788})).is_some());
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

const VIEWS: [&str; 4] = ALL_VIEWS;

/// The bundled example, a required file.
fn example_input() -> String {
    read_required("examples/events.jsonl")
}

/// The catalog that goes with the bundled example.
fn example_catalog() -> String {
    read_required("examples/catalog.jsonl")
}

fn read_required(relative: &str) -> String {
    let path = repo_path(relative);
    std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("required file {} cannot be read: {e}", path.display()))
}

/// `intentflow generate --users 300 --items 200 --events 20000 --seed 7`
fn generated_input() -> String {
    generate(300, 200, 20_000, 7).to_string()
}

/// `intentflow generate ARGS --catalog-out FILE`: (events, catalog).
fn generated_with_catalog(args: &[&str]) -> (String, String) {
    let generated = generate_with_catalog(args);
    (generated.0.clone(), generated.1.clone())
}

/// Runs the engine on `input` (`--views sessions,scores,affinity,features`, plus the view
/// of each model in `params`, the config and catalog of `params` as `--config FILE` and
/// `--catalog FILE`, and `flags`), checks the output protocol, and checks it against the
/// oracle with `params` at every checkpoint of `granularity`. Returns the final state.
fn check_engine(input: &str, params: Params, flags: &[&str], granularity: Granularity) -> State {
    let mut views: Vec<&str> = VIEWS.to_vec();
    for (view, model) in [
        ("segments", &params.models.kmeans),
        ("propensity", &params.models.propensity),
        ("als", &params.models.als),
    ] {
        if model.is_some() {
            views.push(view);
        }
    }
    check_engine_views(input, params, &views, flags, granularity)
}

/// `check_engine` with the views the caller picks (`--views`); the models of `params`
/// are loaded (`--model`) whatever the views.
fn check_engine_views(
    input: &str,
    params: Params,
    views: &[&str],
    flags: &[&str],
    granularity: Granularity,
) -> State {
    check::engine_against_oracle(input, params, views, flags, granularity).final_state
}

/// Guards a large test against proving nothing: each of `views` has rows at the end.
fn assert_views_have_rows(state: &State, views: &[&str]) {
    for view in views {
        assert!(
            state.keys().any(|(v, _)| v == view),
            "no {view} rows at the end"
        );
    }
}

/// All four views have rows (the run had a catalog).
fn assert_every_view_has_rows(state: &State) {
    assert_views_have_rows(state, &VIEWS);
}

/// Without a catalog there is no affinity, and every user has 0 categories.
fn assert_no_affinity_without_catalog(state: &State) {
    assert_views_have_rows(state, &["sessions", "scores", "features"]);
    for ((view, key), (value, _)) in state {
        assert_ne!(view, "affinity", "an affinity row without a catalog: {key}");
        if view == "features" {
            assert_eq!(value["categories"], json!(0), "{key}: {value}");
        }
    }
}

/// `input` with recommendation ids and more quick exits: half of the page views and exits
/// on an item get a `rec`, and after some clicks the user leaves the item quickly from a
/// recommendation (an `exit` with a short dwell and a `rec`), so that items get rejected.
fn with_recs(input: &str, seed: u64) -> String {
    let mut rng = Rng::new(seed);
    let mut out = String::new();
    for (i, line) in input.lines().enumerate() {
        let ts = parse_event(i + 1, line)
            .unwrap_or_else(|e| panic!("input line {}: {e}", i + 1))
            .ts;
        let mut event: Value = serde_json::from_str(line).expect("generated JSON");
        let kind = event["type"].as_str().unwrap_or_default().to_string();
        let has_item = event.get("item").is_some_and(Value::is_string);
        if has_item && (kind == "page_view" || kind == "exit") && rng.below(2) == 0 {
            event["rec"] = json!(format!("r{}", rng.below(5)));
        }
        out.push_str(&format!("{event}\n"));
        if has_item && kind == "click" && rng.below(4) == 0 {
            let mut exit = json!({
                "user": event["user"],
                "type": "exit",
                "ts": ts + 500,
                "item": event["item"],
                "dwell_ms": 300 + rng.below(9_000),
                "rec": format!("r{}", rng.below(5)),
            });
            if let Some(session) = event.get("session") {
                exit["session"] = session.clone();
            }
            out.push_str(&format!("{exit}\n"));
        }
    }
    out
}

/// Guards a feedback test against proving nothing: some item is rejected at some time.
fn assert_some_item_rejected(oracle: &Oracle) {
    let times: Vec<i64> = oracle.change_times().into_iter().collect();
    let step = (times.len() / 40).max(1);
    assert!(
        times
            .iter()
            .step_by(step)
            .any(|t| !oracle.rejected_at(*t).is_empty()),
        "no item is ever rejected; the input needs more quick exits from recommendations"
    );
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
    assert_no_affinity_without_catalog(&check_engine(
        &input,
        params,
        &["--lateness-ms", "0", "--workers", "2"],
        Granularity::EveryTime,
    ));
}

#[test]
fn engine_example_with_catalog_default_flags() {
    let params = Params::default().with_catalog(&example_catalog());
    assert!(params.catalog.rejected.is_empty());
    assert_every_view_has_rows(&check_engine(
        &example_input(),
        params,
        &[],
        Granularity::Progress,
    ));
}

#[test]
fn engine_example_with_catalog_four_workers() {
    let params = Params::default().with_catalog(&example_catalog());
    assert_every_view_has_rows(&check_engine(
        &example_input(),
        params,
        &["--workers", "4"],
        Granularity::EveryTime,
    ));
}

#[test]
fn engine_example_minute_ticks_no_lateness_no_catalog() {
    let params = Params::new(60_000, 0);
    let flags = params.time_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    assert_no_affinity_without_catalog(&check_engine(
        &example_input(),
        params,
        &flags,
        Granularity::Progress,
    ));
}

#[test]
fn engine_generated_default_flags() {
    assert_no_affinity_without_catalog(&check_engine(
        &generated_input(),
        Params::default(),
        &[],
        Granularity::Progress,
    ));
}

#[test]
fn engine_generated_config_weights_two_workers() {
    let input = with_custom_type_events(&generated_input());
    let params = Params::default().with_config(CONFIG_WEIGHTS);
    assert_no_affinity_without_catalog(&check_engine(
        &input,
        params,
        &["--workers", "2"],
        Granularity::Progress,
    ));
}

/// Seven days of generated events (with recommendation ids) and their catalog.
fn week_with_catalog() -> (String, String) {
    let (events, catalog) = generated_with_catalog(&[
        "--users", "150", "--items", "80", "--events", "4000", "--seed", "5", "--days", "7",
    ]);
    (with_recs(&events, 5), catalog)
}

/// A window of 2 days over 7 days of events: events leave the window, recency flags
/// (1 and 3 days) switch off and rejections end in the middle of the stream.
fn check_short_window(workers: &str) {
    let (input, catalog) = week_with_catalog();
    let params = Params::default()
        .with_config(SHORT_WINDOWS)
        .with_catalog(&catalog);
    let oracle = Oracle::new(&input, params.clone());
    let (first, last) = (
        oracle.events.iter().map(|s| s.effective).min().unwrap(),
        oracle.last_time().unwrap(),
    );
    assert!(
        last - first > 2 * 2 * DAY,
        "the input spans {} ms, not more than two windows",
        last - first
    );
    assert_some_item_rejected(&oracle);
    assert_every_view_has_rows(&check_engine(
        &input,
        params,
        &["--workers", workers],
        Granularity::EveryTime,
    ));
}

#[test]
fn engine_generated_short_window_one_worker() {
    check_short_window("1");
}

#[test]
fn engine_generated_short_window_four_workers() {
    check_short_window("4");
}

/// Other values for every weight, engagement, feedback and window setting.
const OTHER_FEEDBACK_CONFIG: &str = "\
[weights]
click = 1.5
page_view = 0.1
custom = { hover = 0.7 }

[engagement]
high_intent = [\"purchase\", \"add_to_cart\", \"wishlist\"]
active = [\"click\", \"video_play\", \"hover\"]
passive_max_scroll = 0.35

[feedback]
long_dwell_ms = 45000
long_dwell_boost = 0.75
quick_exit_ms = 8000
quick_exit_penalty = 1.25
bounce_ms = 20000
rejected_min_users = 2
rejected_penalty = 0.5

[windows]
span_ms = 345600000
recency_days = [2, 5]
boost = [{ span_ms = 3600000, extra = 0.5 }, { span_ms = 86400000, extra = 0.333 }]
";

#[test]
fn engine_generated_other_feedback_engagement_and_boosts_two_workers() {
    let (events, catalog) = generated_with_catalog(&[
        "--users", "120", "--items", "60", "--events", "4000", "--seed", "9", "--days", "6",
    ]);
    let input = with_custom_type_events(&with_recs(&events, 9));
    let params = Params::default()
        .with_config(OTHER_FEEDBACK_CONFIG)
        .with_catalog(&catalog);
    assert_some_item_rejected(&Oracle::new(&input, params.clone()));
    assert_every_view_has_rows(&check_engine(
        &input,
        params,
        &["--workers", "2"],
        Granularity::EveryTime,
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
    assert_no_affinity_without_catalog(&check_engine(
        &input,
        params,
        &["--lateness-ms", "0"],
        Granularity::Progress,
    ));
}

/// Stronger than the promise at progress lines: changes carry the effective time of the
/// events that cause them (or of the window boundary they cross), so the state after every
/// change time is also the oracle's.
#[test]
fn engine_change_times_are_effective_times() {
    let input = shuffled_within(&example_input(), 3 * MINUTE as u64, 5);
    let params = Params::new(1000, 0).with_catalog(&example_catalog());
    check_engine(
        &input,
        params,
        &["--lateness-ms", "0"],
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
            Granularity::EveryTime,
        );
    }
}

/// Runs `intentflow run` on `input` with `flags` at 1, 2 and 4 workers (all views, the
/// engine's default) and compares the change lines.
fn assert_workers_agree(input: &str, flags: &[&str]) {
    let file = temp_file(".jsonl", input);
    let runs: Vec<Run> = ["1", "2", "4"]
        .into_iter()
        .map(|workers| {
            let mut args = vec!["--workers", workers];
            args.extend_from_slice(flags);
            run_engine(file.path(), &args)
        })
        .collect();
    let output = runs[0].output();
    assert!(
        output.change_count() > 0,
        "`{}` printed no changes",
        runs[0].command
    );
    let views: BTreeSet<&str> = output
        .lines
        .iter()
        .filter_map(|(_, line)| match line {
            Line::Change(c) => Some(c.view.as_str()),
            _ => None,
        })
        .collect();
    for view in VIEWS {
        assert!(
            views.contains(view),
            "`{}` printed no {view} changes (views: {views:?})",
            runs[0].command
        );
    }
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
    let catalog = temp_file(".jsonl", &example_catalog());
    let catalog = catalog.path().to_str().unwrap();
    assert_workers_agree(&example_input(), &["--catalog", catalog]);
}

#[test]
fn engine_workers_agree_on_generated_short_window() {
    let (input, catalog) = week_with_catalog();
    let catalog = temp_file(".jsonl", &catalog);
    let config = temp_file(".toml", SHORT_WINDOWS);
    assert_workers_agree(
        &input,
        &[
            "--catalog",
            catalog.path().to_str().unwrap(),
            "--config",
            config.path().to_str().unwrap(),
        ],
    );
}

/// The brief: an unknown key or a bad value in the config is an error that names it.
#[test]
fn engine_config_errors_name_the_key() {
    let input = temp_jsonl(&[event("u1", "click", T0).to_string()]);
    for (config, key) in [
        ("[feedback]\nbogus = 1\n", "bogus"),
        ("[windows]\nspan_ms = 0\n", "span_ms"),
        ("[windows]\nrecency_days = [0]\n", "recency_days"),
        (
            "[engagement]\npassive_max_scroll = 1.5\n",
            "passive_max_scroll",
        ),
        ("[engagement]\nactive = [\"teleport\"]\n", "active"),
        ("[feedback]\nrejected_min_users = 0\n", "rejected_min_users"),
    ] {
        assert!(parse_config(config).is_err(), "the oracle accepts {config}");
        let file = temp_file(".toml", config);
        let run = intentflow(&[
            "run",
            "--input",
            input.path().to_str().unwrap(),
            "--config",
            file.path().to_str().unwrap(),
        ]);
        assert!(
            !run.status.success(),
            "`{}` accepted the config {config:?}",
            run.command
        );
        assert!(
            run.stderr.contains(key),
            "`{}` with {config:?}: stderr does not name {key}:\n{}",
            run.command,
            tail(&run.stderr, 10)
        );
    }
}

/// Any input against the oracle, for investigating a mismatch:
/// `INTENTFLOW_TEST_INPUT=events.jsonl [INTENTFLOW_TEST_TICK_MS=1000]
/// [INTENTFLOW_TEST_LATENESS_MS=5000] [INTENTFLOW_TEST_CONFIG=config.toml]
/// [INTENTFLOW_TEST_CATALOG=catalog.jsonl]
/// cargo test --test oracle_views engine_input_from_env -- --ignored --nocapture`
#[test]
#[ignore = "needs INTENTFLOW_TEST_INPUT"]
fn engine_input_from_env() {
    let var = |name: &str| std::env::var(name).ok();
    let read =
        |path: String| std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let path =
        var("INTENTFLOW_TEST_INPUT").expect("set INTENTFLOW_TEST_INPUT to a JSON lines file");
    let input = read(path);
    let number = |name: &str, default: i64| var(name).map_or(default, |v| v.parse().expect(name));
    let mut params = Params::default();
    if let Some(path) = var("INTENTFLOW_TEST_CONFIG") {
        params = params.with_config(&read(path));
    }
    if let Some(path) = var("INTENTFLOW_TEST_CATALOG") {
        params = params.with_catalog(&read(path));
    }
    let params = params.times(
        number("INTENTFLOW_TEST_TICK_MS", 1000),
        number("INTENTFLOW_TEST_LATENESS_MS", 5000),
    );
    let flags = params.time_flags();
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    check_engine(&input, params, &flags, Granularity::EveryTime);
}

// --- issue 4: models applied to the features view ---------------------------------------

/// `intentflow train KIND` on `events` (with `catalog` and training `config`): the model.
fn train(kind: &str, events: &str, catalog: &str, config: &str) -> Value {
    let events = temp_file(".jsonl", events);
    let catalog = temp_file(".jsonl", catalog);
    let config = temp_file(".toml", config);
    let out = tempfile::Builder::new().suffix(".json").tempfile().unwrap();
    intentflow(&[
        "train",
        kind,
        "--events",
        events.path().to_str().unwrap(),
        "--catalog",
        catalog.path().to_str().unwrap(),
        "--config",
        config.path().to_str().unwrap(),
        "--out",
        out.path().to_str().unwrap(),
    ])
    .success();
    serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap()
}

/// Trained k-means, propensity and ALS models, applied by the engine and by the oracle to
/// the features (and scores) at every progress line, for 1 and 4 workers.
#[test]
fn engine_model_views_match_the_oracle_one_and_four_workers() {
    let (input, catalog) = week_with_catalog();
    // A week of events: 2-day horizons leave room for a training and a held-out slice.
    let training = "[propensity]\nhorizon_days = 2\n";
    let mut params = Params::default().with_catalog(&catalog);
    params.models.kmeans = Some(train("kmeans", &input, &catalog, training));
    params.models.propensity = Some(train("propensity", &input, &catalog, training));
    params.models.als = Some(train("als", &input, &catalog, training));
    for workers in ["1", "4"] {
        let state = check_engine(
            &input,
            params.clone(),
            &["--workers", workers],
            Granularity::Progress,
        );
        let segments: BTreeSet<String> = state
            .iter()
            .filter(|((view, _), _)| view == "segments")
            .map(|(_, (value, _))| value["segment"].to_string())
            .collect();
        assert!(
            segments.len() >= 3,
            "users fall in few segments: {segments:?}"
        );
        assert_views_have_rows(&state, &["propensity", "als"]);
    }
}

/// `--refit-every` with the `als` view: ALS is refitted inside the engine at fixed event
/// counts. The output is the same for 1 and 4 workers, and the final `als` rows are the
/// oracle's fold-in of the final scores into the last refitted model.
#[test]
fn als_refits_in_the_engine_are_deterministic_and_match_the_oracle() {
    let (input, catalog) = week_with_catalog();
    let input_file = temp_file(".jsonl", &input);
    let catalog_file = temp_file(".jsonl", &catalog);
    let mut outputs = Vec::new();
    for workers in ["1", "4"] {
        let refit_dir = tempfile::tempdir().unwrap();
        let run = run_engine(
            input_file.path(),
            &[
                "--catalog",
                catalog_file.path().to_str().unwrap(),
                "--views",
                "scores,als",
                "--refit-every",
                "1500",
                "--refit-out",
                refit_dir.path().to_str().unwrap(),
                "--workers",
                workers,
            ],
        );
        let refits = run
            .stderr
            .lines()
            .filter(|l| l.starts_with("intentflow: refitted ALS at "))
            .count();
        assert_eq!(
            refits, 2,
            "4000 events, a refit every 1500:\n{}",
            run.stderr
        );
        let model: Value = serde_json::from_str(
            &std::fs::read_to_string(refit_dir.path().join("als.json")).unwrap(),
        )
        .unwrap();
        let mut params = Params::default().with_catalog(&catalog);
        params.models.als = Some(model);
        let oracle = Oracle::new(&input, params);
        let output = run.output();
        let expected = oracle.state(&["als"], None);
        let actual = output.only_views(&["als"]).final_state();
        assert!(!expected.is_empty());
        let mismatches = compare_states(&expected, &actual);
        assert!(
            mismatches.is_empty(),
            "`{}`: final als rows differ from the oracle's: {:?}",
            run.command,
            mismatches.first()
        );
        let mut lines: Vec<String> = run
            .stdout
            .lines()
            .filter(|l| l.contains("\"view\""))
            .map(String::from)
            .collect();
        lines.sort();
        outputs.push(lines);
    }
    assert!(
        outputs[0] == outputs[1],
        "1 and 4 workers print different changes"
    );
}

// --- issue 5: sequences -----------------------------------------------------------------

const SEQUENCE_VIEWS: [&str; 4] = ["transitions", "next", "paths", "funnel"];

/// A page view of page type `page`.
fn page(user: &str, page: &str, ts: i64) -> Value {
    with(event(user, "page_view", ts), "page", json!(page))
}

/// The event belongs to client session `id`.
fn in_session(e: Value, id: &str) -> Value {
    with(e, "session", json!(id))
}

fn transition_row(
    kind: &str,
    from: &str,
    to: &str,
    count: u64,
    p: f64,
) -> (&'static str, Value, Value) {
    (
        "transitions",
        json!({"kind": kind, "from": from, "to": to}),
        json!({"count": count, "p": p}),
    )
}

fn next_row(kind: &str, from: &str, next: &[(&str, f64)]) -> (&'static str, Value, Value) {
    let list: Vec<Value> = next
        .iter()
        .map(|(to, p)| json!({"to": to, "p": p}))
        .collect();
    (
        "next",
        json!({"kind": kind, "from": from}),
        json!({ "next": list }),
    )
}

fn path_row(path: &[&str], count: u64) -> (&'static str, Value, Value) {
    ("paths", json!({ "path": path }), json!({ "count": count }))
}

fn funnel_row(step: &str, position: u64, reached: u64, rate: f64) -> (&'static str, Value, Value) {
    (
        "funnel",
        json!({ "step": step }),
        json!({"position": position, "reached": reached, "rate": rate}),
    )
}

/// Rows of views that repeat the `transitions` rows of one (kind, from): the `next` row
/// with every successor (fewer than `next_k`).
fn transitions_and_next(
    kind: &str,
    from: &str,
    counts: &[(&str, u64, f64)],
) -> Vec<(&'static str, Value, Value)> {
    let mut rows: Vec<_> = counts
        .iter()
        .map(|(to, n, p)| transition_row(kind, from, to, *n, *p))
        .collect();
    let next: Vec<(&str, f64)> = counts.iter().map(|(to, _, p)| (*to, *p)).collect();
    rows.push(next_row(kind, from, &next));
    rows
}

/// The four sequence views at `now` are exactly `expected` (every field of every row).
fn assert_sequences_at(oracle: &Oracle, now: i64, expected: State, context: &str) {
    let actual = oracle.state_at(&SEQUENCE_VIEWS, now);
    assert_states_match(&expected, &actual, context);
    // `assert_states_match` looks only at the expected fields: no field more either
    for (row, (value, _)) in &actual {
        assert_eq!(
            value.as_object().unwrap().len(),
            expected[row].0.as_object().unwrap().len(),
            "{context}: {row:?} has other fields: {value}"
        );
    }
}

/// Page steps only from page views with a non-empty `page` and from purchases, whatever
/// `page` other types carry; items from any type, consecutive repeats collapsed; a session
/// without page steps counts in the funnel's first rate.
fn page_and_item_steps_case() -> Case {
    let s1 = |e: Value| in_session(e, "s1");
    Case::new(&[
        s1(page("u1", "home", T0)),
        // not a page view: no page step, but an item step
        s1(on_item(
            with(event("u1", "click", T0 + SECOND), "page", json!("category")),
            "p1",
        )),
        s1(on_item(page("u1", "category", T0 + 2 * SECOND), "p1")),
        // a page view without `page`, and with an empty one: no page step
        s1(on_item(event("u1", "page_view", T0 + 3 * SECOND), "p2")),
        s1(on_item(page("u1", "", T0 + 4 * SECOND), "p2")),
        s1(on_item(page("u1", "product", T0 + 5 * SECOND), "p1")),
        s1(on_item(
            with(
                event("u1", "add_to_cart", T0 + 6 * SECOND),
                "page",
                json!("cart"),
            ),
            "p1",
        )),
        // a purchase is the step "purchase", whatever its `page`
        s1(on_item(
            with(
                event("u1", "purchase", T0 + 7 * SECOND),
                "page",
                json!("checkout"),
            ),
            "p1",
        )),
        s1(page("u1", "home", T0 + 8 * SECOND)),
        in_session(page("u2", "home", T0), "s2"),
        in_session(page("u2", "home", T0 + SECOND), "s2"),
        in_session(page("u2", "product", T0 + 2 * SECOND), "s2"),
        on_item(event("u3", "click", T0 + 5 * SECOND), "p9"),
    ])
}

#[test]
fn oracle_sequences_page_steps_item_collapse_and_funnel_rates() {
    let oracle = page_and_item_steps_case().oracle();
    // pages: u1 home category product purchase home; u2 home home product; u3 none.
    // items: u1 p1 p1 p2 p2 p1 p1 p1 → p1 p2 p1; u2 none; u3 p9.
    let third = 0.3333;
    let mut rows = Vec::new();
    rows.extend(transitions_and_next(
        "page",
        "home",
        &[
            ("category", 1, third),
            ("home", 1, third),
            ("product", 1, third),
        ],
    ));
    rows.extend(transitions_and_next(
        "page",
        "category",
        &[("product", 1, 1.0)],
    ));
    rows.extend(transitions_and_next(
        "page",
        "product",
        &[("purchase", 1, 1.0)],
    ));
    rows.extend(transitions_and_next(
        "page",
        "purchase",
        &[("home", 1, 1.0)],
    ));
    rows.extend(transitions_and_next("item", "p1", &[("p2", 1, 1.0)]));
    rows.extend(transitions_and_next("item", "p2", &[("p1", 1, 1.0)]));
    rows.push(path_row(&["home", "category", "product", "purchase"], 1));
    // depths: u1 3 (home, category, product; no cart), u2 1, u3 0; 3 sessions
    rows.extend([
        funnel_row("home", 1, 2, 0.6667),
        funnel_row("category", 2, 1, 0.5),
        funnel_row("product", 3, 1, 1.0),
        funnel_row("cart", 4, 0, 0.0),
        funnel_row("purchase", 5, 0, 0.0),
    ]);
    assert_sequences_at(&oracle, T0 + 8 * SECOND, state_of(rows), "at the end");
    // no session at all: no rows, not even funnel rows
    assert_sequences_at(&oracle, T0 - 1, State::new(), "before any event");
    assert_sequences_at(&oracle, T0 + 31 * DAY, State::new(), "after the window");
    // the rates print as integers when whole
    let funnel = oracle.state_at(&["funnel"], T0 + 8 * SECOND);
    let product = &funnel[&(
        "funnel".to_string(),
        JsonKey::new(&json!({"step": "product"})),
    )]
        .0;
    assert_eq!(product["rate"].to_string(), "1");
}

/// Events of one session at the same `ts`, in an input order that is not the brief's
/// order, and an earlier one last in the input.
fn ts_ties_case() -> Case {
    let s1 = |e: Value| in_session(e, "s1");
    Case::new(&[
        s1(on_item(event("u1", "purchase", T0), "p2")),
        s1(on_item(page("u1", "product", T0), "p5")),
        s1(on_item(page("u1", "product", T0), "p4")),
        s1(on_item(event("u1", "click", T0), "p0")),
        s1(page("u1", "home", T0)),
        s1(page("u1", "category", T0 - SECOND)),
    ])
}

#[test]
fn oracle_sequences_order_ts_ties_by_page_step_then_item() {
    let oracle = ts_ties_case().oracle();
    assert_eq!(oracle.late_events(), 0);
    // order: category (T0 - 1 s); then at T0: click p0 (no page step first), home,
    // product p4, product p5 (same page step: by item), purchase p2.
    // pages: category home product product purchase; items: p0 p4 p5 p2.
    let mut rows = Vec::new();
    rows.extend(transitions_and_next(
        "page",
        "category",
        &[("home", 1, 1.0)],
    ));
    rows.extend(transitions_and_next("page", "home", &[("product", 1, 1.0)]));
    // a tie on count: "product" < "purchase"
    rows.extend(transitions_and_next(
        "page",
        "product",
        &[("product", 1, 0.5), ("purchase", 1, 0.5)],
    ));
    rows.extend(transitions_and_next("item", "p0", &[("p4", 1, 1.0)]));
    rows.extend(transitions_and_next("item", "p4", &[("p5", 1, 1.0)]));
    rows.extend(transitions_and_next("item", "p5", &[("p2", 1, 1.0)]));
    // at most 4 steps: the first (category) is cut
    rows.push(path_row(&["home", "product", "product", "purchase"], 1));
    // depth 1: category comes before home only
    rows.extend([
        funnel_row("home", 1, 1, 1.0),
        funnel_row("category", 2, 0, 0.0),
        funnel_row("product", 3, 0, 0.0),
        funnel_row("cart", 4, 0, 0.0),
        funnel_row("purchase", 5, 0, 0.0),
    ]);
    assert_sequences_at(&oracle, T0, state_of(rows), "at the end");
}

/// Derived sessions split at gaps over 30 minutes (a gap of exactly 30 minutes does not
/// split), a client session id keeps its events together whatever the gap, and users
/// never share a session.
fn sequence_sessions_case() -> Case {
    Case::new(&[
        on_item(page("u1", "home", T0), "p1"),
        page("u2", "home", T0 + 5 * MINUTE),
        event("u2", "purchase", T0 + 6 * MINUTE),
        in_session(page("u1", "category", T0 + 10 * MINUTE), "s1"),
        on_item(page("u1", "product", T0 + 30 * MINUTE), "p2"),
        on_item(page("u1", "cart", T0 + 61 * MINUTE), "p1"),
        on_item(event("u1", "purchase", T0 + 62 * MINUTE), "p3"),
        in_session(on_item(page("u1", "product", T0 + 3 * HOUR), "p2"), "s1"),
    ])
}

#[test]
fn oracle_sequences_follow_the_sessions_view() {
    let oracle = sequence_sessions_case().oracle();
    // sessions: u1 auto-T0 [home p1, product p2]; u1 auto-(T0+61m) [cart p1, purchase p3];
    // u1 s1 [category, product p2]; u2 auto-(T0+5m) [home, purchase].
    let mut rows = Vec::new();
    rows.extend(transitions_and_next(
        "page",
        "home",
        &[("product", 1, 0.5), ("purchase", 1, 0.5)],
    ));
    rows.extend(transitions_and_next(
        "page",
        "cart",
        &[("purchase", 1, 1.0)],
    ));
    rows.extend(transitions_and_next(
        "page",
        "category",
        &[("product", 1, 1.0)],
    ));
    rows.extend(transitions_and_next(
        "item",
        "p1",
        &[("p2", 1, 0.5), ("p3", 1, 0.5)],
    ));
    // paths shorter than 4 steps
    rows.push(path_row(&["cart", "purchase"], 1));
    rows.push(path_row(&["home", "purchase"], 1));
    // depths 1, 0, 0, 1 of 4 sessions
    rows.extend([
        funnel_row("home", 1, 2, 0.5),
        funnel_row("category", 2, 0, 0.0),
        funnel_row("product", 3, 0, 0.0),
        funnel_row("cart", 4, 0, 0.0),
        funnel_row("purchase", 5, 0, 0.0),
    ]);
    assert_sequences_at(&oracle, T0 + 3 * HOUR, state_of(rows), "at the end");
    let sessions = oracle.state_at(&["sessions"], T0 + 3 * HOUR);
    assert_eq!(sessions.len(), 4, "{sessions:?}");
}

/// One derived session per user, each a list of page steps one minute apart from T0
/// (`"purchase"` is a purchase event, `"-"` a click on an item, without page step). The
/// users come one after the other in the input, so most events of the later users arrive
/// late (applied at the watermark).
fn page_sessions_case(sessions: &[&[&str]]) -> Case {
    let mut events = Vec::new();
    for (u, steps) in sessions.iter().enumerate() {
        let user = format!("u{}", u + 1);
        for (i, step) in steps.iter().enumerate() {
            let ts = T0 + i as i64 * MINUTE;
            events.push(match *step {
                "purchase" => event(&user, "purchase", ts),
                "-" => on_item(event(&user, "click", ts), "p1"),
                _ => page(&user, step, ts),
            });
        }
    }
    Case::new(&events)
}

const CUSTOM_SEQUENCES: &str = "[sequences]\nnext_k = 2\npath_length = 2\nfunnel = [\"category\", \"product\", \"purchase\"]\n";

fn paths_case() -> Case {
    page_sessions_case(&[
        &[
            "home", "category", "product", "cart", "product", "purchase", "home", "purchase",
        ],
        &["product", "cart", "product", "purchase"],
        &["purchase"],
        &["home", "purchase"],
    ])
}

#[test]
fn oracle_paths_end_at_each_purchase_with_at_most_path_length_steps() {
    let end = T0 + 7 * MINUTE;
    let oracle = paths_case().oracle();
    let expected = state_of([
        path_row(&["product", "cart", "product", "purchase"], 2),
        path_row(&["product", "purchase", "home", "purchase"], 1),
        path_row(&["purchase"], 1),
        path_row(&["home", "purchase"], 1),
    ]);
    assert_view_at(&oracle, "paths", end, expected, "path_length 4");
    let oracle = paths_case().config(CUSTOM_SEQUENCES).oracle();
    let expected = state_of([
        path_row(&["product", "purchase"], 2),
        path_row(&["home", "purchase"], 2),
        path_row(&["purchase"], 1),
    ]);
    assert_view_at(&oracle, "paths", end, expected, "path_length 2");
}

fn funnel_case() -> Case {
    page_sessions_case(&[
        &[
            "home", "article", "category", "home", "product", "cart", "checkout", "purchase",
        ],
        &["category", "home", "product"],
        &["home", "category", "cart", "product"],
        &["-"],
        &["product", "purchase"],
    ])
}

#[test]
fn oracle_funnel_matches_ordered_subsequences_and_rates_share_the_previous_step() {
    let end = T0 + 7 * MINUTE;
    let oracle = funnel_case().oracle();
    // depths 5, 1, 3, 0, 0; the first rate is over all 5 sessions (u4 has no page step)
    let expected = state_of([
        funnel_row("home", 1, 3, 0.6),
        funnel_row("category", 2, 2, 0.6667),
        funnel_row("product", 3, 2, 1.0),
        funnel_row("cart", 4, 1, 0.5),
        funnel_row("purchase", 5, 1, 1.0),
    ]);
    assert_view_at(&oracle, "funnel", end, expected, "default funnel");
    let oracle = funnel_case().config(CUSTOM_SEQUENCES).oracle();
    // depths 3, 2, 2, 0, 0
    let expected = state_of([
        funnel_row("category", 1, 3, 0.6),
        funnel_row("product", 2, 3, 1.0),
        funnel_row("purchase", 3, 1, 0.3333),
    ]);
    assert_view_at(&oracle, "funnel", end, expected, "custom funnel");
}

fn next_ties_case() -> Case {
    page_sessions_case(&[
        &["home", "product"],
        &["home", "product"],
        &["home", "cart"],
        &["home", "category"],
        &["home", "article"],
    ])
}

#[test]
fn oracle_next_ranks_by_count_then_to_and_keeps_next_k() {
    let end = T0 + MINUTE;
    let oracle = next_ties_case().oracle();
    let mut expected = transitions_and_next(
        "page",
        "home",
        &[
            ("product", 2, 0.4),
            ("article", 1, 0.2),
            ("cart", 1, 0.2),
            ("category", 1, 0.2),
        ],
    );
    let next = expected.pop().unwrap();
    assert_view_at(&oracle, "next", end, state_of([next]), "next_k 5");
    assert_view_at(
        &oracle,
        "transitions",
        end,
        state_of(expected.clone()),
        "transitions",
    );
    // next_k 2: the first two, with p over all successors
    let oracle = next_ties_case().config(CUSTOM_SEQUENCES).oracle();
    let next = next_row("page", "home", &[("product", 0.4), ("article", 0.2)]);
    assert_view_at(&oracle, "next", end, state_of([next]), "next_k 2");
    assert_view_at(
        &oracle,
        "transitions",
        end,
        state_of(expected),
        "transitions, next_k 2",
    );
}

#[test]
fn oracle_sequences_config() {
    let defaults = parse_config("").unwrap().sequences;
    assert_eq!(defaults.next_k, 5);
    assert_eq!(defaults.path_length, 4);
    assert_eq!(
        defaults.funnel,
        ["home", "category", "product", "cart", "purchase"]
    );
    let custom = parse_config(CUSTOM_SEQUENCES).unwrap().sequences;
    assert_eq!(
        (custom.next_k, custom.path_length, custom.funnel),
        (
            2,
            2,
            vec!["category".to_string(), "product".into(), "purchase".into()]
        )
    );
    let params = Params::default().with_config("[sequences]\nnext_k = 3\n");
    assert_eq!(params.sequences.next_k, 3);
    assert_eq!(params.sequences.path_length, 4);
    for (config, key) in [
        ("[sequences]\nbogus = 1\n", "sequences.bogus"),
        ("[sequences]\nnext_k = 0\n", "sequences.next_k"),
        ("[sequences]\nnext_k = 2.5\n", "sequences.next_k"),
        ("[sequences]\npath_length = 0\n", "sequences.path_length"),
        (
            "[sequences]\npath_length = \"4\"\n",
            "sequences.path_length",
        ),
        ("[sequences]\nfunnel = []\n", "sequences.funnel"),
        ("[sequences]\nfunnel = \"home\"\n", "sequences.funnel"),
        ("[sequences]\nfunnel = [\"home\", 1]\n", "sequences.funnel"),
        (
            "[sequences]\nfunnel = [\"home\", \"home\"]\n",
            "sequences.funnel",
        ),
        ("sequences = 1\n", "sequences"),
    ] {
        let error = parse_config(config).expect_err(config);
        assert!(error.contains(key), "{config}: {error}");
    }
}

/// A one-hour window: u1's and u2's sessions leave it before u3's events.
fn sequence_window_case() -> Case {
    Case::new(&[
        in_session(page("u1", "home", T0), "s1"),
        in_session(on_item(page("u1", "category", T0 + MINUTE), "p1"), "s1"),
        in_session(
            on_item(event("u1", "purchase", T0 + 2 * MINUTE), "p2"),
            "s1",
        ),
        page("u2", "home", T0 + 30 * MINUTE),
        on_item(page("u2", "product", T0 + 31 * MINUTE), "p3"),
        page("u3", "home", T0 + 2 * HOUR),
        event("u3", "purchase", T0 + 2 * HOUR + MINUTE),
    ])
    .config("[windows]\nspan_ms = 3600000\n")
}

#[test]
fn oracle_sequences_follow_the_window() {
    let oracle = sequence_window_case().oracle();
    let mut rows = Vec::new();
    rows.extend(transitions_and_next(
        "page",
        "home",
        &[("category", 1, 0.5), ("product", 1, 0.5)],
    ));
    rows.extend(transitions_and_next(
        "page",
        "category",
        &[("purchase", 1, 1.0)],
    ));
    rows.extend(transitions_and_next("item", "p1", &[("p2", 1, 1.0)]));
    rows.push(path_row(&["home", "category", "purchase"], 1));
    rows.extend([
        funnel_row("home", 1, 2, 1.0),
        funnel_row("category", 2, 1, 0.5),
        funnel_row("product", 3, 0, 0.0),
        funnel_row("cart", 4, 0, 0.0),
        funnel_row("purchase", 5, 0, 0.0),
    ]);
    assert_sequences_at(&oracle, T0 + 40 * MINUTE, state_of(rows), "both sessions");
    // u1's home leaves at T0 + 1 h exactly: its session is category, purchase
    let mut rows = Vec::new();
    rows.extend(transitions_and_next("page", "home", &[("product", 1, 1.0)]));
    rows.extend(transitions_and_next(
        "page",
        "category",
        &[("purchase", 1, 1.0)],
    ));
    rows.extend(transitions_and_next("item", "p1", &[("p2", 1, 1.0)]));
    rows.push(path_row(&["category", "purchase"], 1));
    rows.extend([
        funnel_row("home", 1, 1, 0.5),
        funnel_row("category", 2, 0, 0.0),
        funnel_row("product", 3, 0, 0.0),
        funnel_row("cart", 4, 0, 0.0),
        funnel_row("purchase", 5, 0, 0.0),
    ]);
    assert_sequences_at(&oracle, T0 + HOUR, state_of(rows), "u1's first event left");
    let mut rows = transitions_and_next("page", "home", &[("purchase", 1, 1.0)]);
    rows.push(path_row(&["home", "purchase"], 1));
    rows.extend([
        funnel_row("home", 1, 1, 1.0),
        funnel_row("category", 2, 0, 0.0),
        funnel_row("product", 3, 0, 0.0),
        funnel_row("cart", 4, 0, 0.0),
        funnel_row("purchase", 5, 0, 0.0),
    ]);
    assert_sequences_at(&oracle, T0 + 2 * HOUR + MINUTE, state_of(rows), "only u3");
}

/// The hand-made sequence inputs, for the checker tests and the engine.
fn sequence_cases() -> Vec<(&'static str, Case)> {
    vec![
        ("page_and_item_steps", page_and_item_steps_case()),
        ("ts_ties", ts_ties_case()),
        ("sequence_sessions", sequence_sessions_case()),
        ("paths", paths_case()),
        ("paths_custom", paths_case().config(CUSTOM_SEQUENCES)),
        ("funnel", funnel_case()),
        ("funnel_custom", funnel_case().config(CUSTOM_SEQUENCES)),
        ("next_ties", next_ties_case()),
        (
            "next_ties_custom",
            next_ties_case().config(CUSTOM_SEQUENCES),
        ),
        ("sequence_window", sequence_window_case()),
    ]
}

#[test]
fn oracle_checker_accepts_correct_sequence_output_and_catches_a_stale_row() {
    let mut views = SEQUENCE_VIEWS.to_vec();
    views.push("sessions");
    for (name, case) in sequence_cases() {
        let oracle = case.oracle();
        let text = simulated_engine_output(&oracle, &views);
        let output = Output::parse(&text).unwrap();
        output.check_consolidated().unwrap();
        for granularity in [Granularity::Progress, Granularity::EveryTime] {
            oracle
                .check(&output, &views, granularity)
                .unwrap_or_else(|e| panic!("{name}, {granularity:?}: {e}"));
        }
    }
    // an engine that stops retracting transitions when events leave the window
    let oracle = sequence_window_case().oracle();
    let text: String = simulated_engine_output(&oracle, &views)
        .lines()
        .filter(|l| {
            let line: Value = serde_json::from_str(l).unwrap();
            !(line["view"] == "transitions"
                && line["diff"] == -1
                && line["time"].as_i64().unwrap() >= T0 + HOUR)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let output = Output::parse(&text).unwrap();
    let error = oracle
        .check(&output, &views, Granularity::Progress)
        .expect_err("a stale transitions row");
    assert!(
        error.contains(&format!("disagree at progress {}", T0 + HOUR + 1))
            && error.contains("transitions")
            && error.contains("sessions in the window"),
        "{error}"
    );
    // and one that prints a wrong count for the item transition p1 → p2
    let text: String = simulated_engine_output(&oracle, &views)
        .lines()
        .map(|l| {
            if l.contains("\"view\":\"transitions\"") && l.contains("\"from\":\"p1\"") {
                format!("{}\n", l.replace("\"count\":1", "\"count\":2"))
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    let output = Output::parse(&text).unwrap();
    let error = oracle
        .check(&output, &views, Granularity::EveryTime)
        .expect_err("a wrong count");
    assert!(
        error.contains(&format!("T = {}", T0 + 2 * MINUTE))
            && error.contains("count: 2, expected 1"),
        "{error}"
    );
}

/// The sequence views of a week of generated events at every progress line, for 1 and 4
/// workers; and of the hand-made sequence inputs at every change time.
#[test]
fn engine_sequence_views_match_the_oracle_one_and_four_workers() {
    let (input, catalog) = week_with_catalog();
    let params = Params::default().with_catalog(&catalog);
    let expected = Oracle::new(&input, params.clone()).state(&SEQUENCE_VIEWS, None);
    assert_views_have_rows(&expected, &SEQUENCE_VIEWS);
    for workers in ["1", "4"] {
        let state = check_engine_views(
            &input,
            params.clone(),
            &SEQUENCE_VIEWS,
            &["--workers", workers],
            Granularity::Progress,
        );
        assert_views_have_rows(&state, &SEQUENCE_VIEWS);
    }
    for workers in ["1", "4"] {
        for (name, case) in sequence_cases() {
            eprintln!("case {name}, {workers} workers");
            let mut flags = case.params.time_flags();
            flags.extend(["--workers".to_string(), workers.to_string()]);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            check_engine_views(
                &case.input,
                case.params.clone(),
                &SEQUENCE_VIEWS,
                &flags,
                Granularity::EveryTime,
            );
        }
    }
}

/// `[sequences]` with other `next_k`, `path_length` and funnel, on the same week, 2 workers.
#[test]
fn engine_sequence_views_with_a_custom_config_two_workers() {
    let (input, catalog) = week_with_catalog();
    let params = Params::default()
        .with_config(CUSTOM_SEQUENCES)
        .with_catalog(&catalog);
    let state = check_engine_views(
        &input,
        params,
        &SEQUENCE_VIEWS,
        &["--workers", "2"],
        Granularity::Progress,
    );
    assert_views_have_rows(&state, &SEQUENCE_VIEWS);
    let mut funnel_steps = Vec::new();
    for ((view, key), (value, _)) in &state {
        match view.as_str() {
            "next" => assert!(
                value["next"].as_array().unwrap().len() <= 2,
                "{key}: {value}"
            ),
            "paths" => assert!(key.value()["path"].as_array().unwrap().len() <= 2, "{key}"),
            "funnel" => funnel_steps.push(key.field("step").unwrap()),
            _ => {}
        }
    }
    funnel_steps.sort();
    assert_eq!(funnel_steps, ["category", "product", "purchase"]);
}

// --- issue 5: similar and recs ----------------------------------------------------------

const RECS_VIEWS: [&str; 2] = ["similar", "recs"];

fn similar_row(item: &str, neighbors: &[(&str, f64)]) -> (&'static str, Value, Value) {
    let list: Vec<Value> = neighbors
        .iter()
        .map(|(b, score)| json!({"item": b, "score": score}))
        .collect();
    (
        "similar",
        json!({ "item": item }),
        json!({ "neighbors": list }),
    )
}

fn recs_row(user: &str, items: &[(&str, f64, &str)]) -> (&'static str, Value, Value) {
    let list: Vec<Value> = items
        .iter()
        .map(|(item, score, reason)| json!({"item": item, "score": score, "reason": reason}))
        .collect();
    (
        "recs",
        json!({ "user": user }),
        json!({"variant": "default", "items": list}),
    )
}

/// `views` at `now` are exactly `expected` (every field of every row, at any depth).
fn assert_views_exactly_at(
    oracle: &Oracle,
    views: &[&str],
    now: i64,
    expected: State,
    context: &str,
) {
    fn same_shape(expected: &Value, actual: &Value) -> bool {
        match (expected, actual) {
            (Value::Object(e), Value::Object(a)) => {
                e.len() == a.len() && e.iter().all(|(k, v)| same_shape(v, &a[k]))
            }
            (Value::Array(e), Value::Array(a)) => {
                e.len() == a.len() && e.iter().zip(a).all(|(e, a)| same_shape(e, a))
            }
            _ => true,
        }
    }
    let actual = oracle.state_at(views, now);
    assert_states_match(&expected, &actual, context);
    for (row, (value, _)) in &actual {
        assert!(
            same_shape(&expected[row].0, value),
            "{context}: {row:?} has other fields: {value}"
        );
    }
}

/// Four users on p1–p4 (default config), one event a second from T0 + 10 s, one more
/// click at T0 + 90 s, and a page view without item (of u5) at T0 + 3 min. Scores at T0 + 60 s (level):
/// u1 p1 1 (1), p2 3 (2), p3 8 (4; bought); u2 p1 4 (3), p2 1 (1), p3 2 (2);
/// u3 p1 1 (1), p4 1 (1); u4 p4 5 (3, bought). At T0 + 90 s u3 clicks p2.
/// Item sequences: u1 p1 p2 p3, u2 p1 p2 p3, u3 p1 p4 (then p2), u4 p4.
fn similar_case() -> Case {
    let at = |s: i64| T0 + s * SECOND;
    Case::new(&[
        on_item(event("u1", "click", at(10)), "p1"),
        on_item(event("u1", "add_to_cart", at(11)), "p2"),
        on_item(event("u1", "add_to_cart", at(12)), "p3"),
        on_item(event("u1", "purchase", at(13)), "p3"),
        on_item(event("u2", "add_to_cart", at(14)), "p1"),
        on_item(event("u2", "click", at(15)), "p1"),
        on_item(event("u2", "click", at(16)), "p2"),
        on_item(event("u2", "wishlist", at(17)), "p3"),
        on_item(event("u3", "click", at(18)), "p1"),
        on_item(event("u3", "click", at(19)), "p4"),
        on_item(event("u4", "purchase", at(20)), "p4"),
        on_item(event("u3", "click", at(90)), "p2"),
        // takes the input past the second refresh (T0 + 120 s)
        event("u5", "page_view", T0 + 3 * MINUTE),
    ])
    .config(LIVE_SHARED_SOURCES)
}

/// `recs` reads `similar` and `next` as they change (no `shared_refresh_ms` delay), and
/// popularity is refreshed hourly: the hand-made recs cases follow each source's own
/// refreshes at a scale of minutes.
const LIVE_SHARED_SOURCES: &str = "[recs]\nshared_refresh_ms = 1\npopular_refresh_ms = 3600000\n";

#[test]
#[allow(clippy::approx_constant)] // 0.7071 is 3/√18 as printed, to four decimals
fn oracle_similar_levels_min_users_and_refresh() {
    let oracle = similar_case().oracle();
    // norms (sums of levels): p1 1+3+1 = 5, p2 2+1 = 3, p3 4+2 = 6, p4 1+3 = 4.
    // co: (p1,p2) min(1,2)+min(3,1) = 2 → 2/√15 = 0.5164; (p1,p3) 1+2 = 3 → 3/√30 =
    // 0.5477; (p2,p3) 2+1 = 3 → 3/√18 = 0.7071; (p1,p4) only u3: below min_users.
    let first = state_of([
        similar_row("p1", &[("p3", 0.5477), ("p2", 0.5164)]),
        similar_row("p2", &[("p3", 0.7071), ("p1", 0.5164)]),
        similar_row("p3", &[("p2", 0.7071), ("p1", 0.5477)]),
    ]);
    // the last refresh before T0 + 60 s is T0, before every event
    assert_views_exactly_at(
        &oracle,
        &["similar"],
        T0 + 59_999,
        State::new(),
        "before the first refresh",
    );
    assert_views_exactly_at(
        &oracle,
        &["similar"],
        T0 + MINUTE,
        first.clone(),
        "T0 + 60 s",
    );
    // u3's click on p2 at T0 + 90 s shows only from the next refresh
    assert_views_exactly_at(
        &oracle,
        &["similar"],
        T0 + 2 * MINUTE - 1,
        first,
        "before the second refresh",
    );
    // norm p2 = 4; (p1,p2) has u1, u2, u3: 1+1+1 = 3 → 3/√20 = 0.6708; (p2,p3) 3/√24 =
    // 0.6124; (p2,p4) only u3.
    let second = state_of([
        similar_row("p1", &[("p2", 0.6708), ("p3", 0.5477)]),
        similar_row("p2", &[("p1", 0.6708), ("p3", 0.6124)]),
        similar_row("p3", &[("p2", 0.6124), ("p1", 0.5477)]),
    ]);
    assert_views_exactly_at(&oracle, &["similar"], T0 + 2 * MINUTE, second, "T0 + 120 s");

    // recent_items = 2: top items u1 p3 (4) p2 (2); u2 p1 (3) p3 (2); u3 p1 p4 (a tie on
    // score: by item); u4 p4. Norms p1 4, p2 2, p3 6, p4 4; every pair has one user.
    let config = "[similar]\nrecent_items = 2\nmin_users = 1\n";
    let oracle = similar_case().config(config).oracle();
    let expected = state_of([
        // (p1,p3) min(3,2) = 2 → 2/√24; (p1,p4) 1/√16
        similar_row("p1", &[("p3", 0.4082), ("p4", 0.25)]),
        // (p2,p3) min(2,4) = 2 → 2/√12
        similar_row("p2", &[("p3", 0.5774)]),
        similar_row("p3", &[("p2", 0.5774), ("p1", 0.4082)]),
        similar_row("p4", &[("p1", 0.25)]),
    ]);
    assert_views_exactly_at(
        &oracle,
        &["similar"],
        T0 + MINUTE,
        expected,
        "recent_items 2",
    );
}

/// Three items clicked by the same two users: every similarity is 1, ties go to the
/// smaller item, and `k` keeps the first.
#[test]
fn oracle_similar_ties_and_k() {
    let mut events = Vec::new();
    for (i, user) in ["u1", "u2"].into_iter().enumerate() {
        for (j, item) in ["c", "a", "b"].into_iter().enumerate() {
            let ts = T0 + (10 + 3 * i as i64 + j as i64) * SECOND;
            events.push(on_item(event(user, "click", ts), item));
        }
    }
    let oracle = Case::new(&events).config("[similar]\nk = 1\n").oracle();
    let expected = state_of([
        similar_row("a", &[("b", 1.0)]),
        similar_row("b", &[("a", 1.0)]),
        similar_row("c", &[("a", 1.0)]),
    ]);
    assert_views_exactly_at(&oracle, &["similar"], T0 + MINUTE, expected, "k 1");
    let similar = oracle.state_at(&["similar"], T0 + MINUTE);
    let row = &similar[&("similar".to_string(), JsonKey::new(&json!({"item": "a"})))].0;
    assert_eq!(row["neighbors"][0]["score"].to_string(), "1");
}

#[test]
fn oracle_recs_average_similar_by_level_and_follow_next() {
    let oracle = similar_case().oracle();
    // T0 + 60 s (similar of the first refresh; no popularity before T0 + 1 h; segment
    // "all" has no content rule). Values are means of level · sim (to two decimals) over
    // the sum of the levels, e.g. u1 (levels p3 4, p2 2, p1 1; L = 7):
    // p1 = (4·0.55 + 2·0.52) / 7 = 0.4629; p2 = (4·0.71 + 1·0.52) / 7 = 0.48 (0.48000);
    // p3 (bought) is excluded. u3 (p1 1, p4 1; L = 2): p3 0.55 / 2 = 0.275, p2 0.26.
    // u2 (p1 3, p3 2, p2 1; L = 6): p1 (2·0.55 + 0.52) / 6 = 0.27; p2 (3·0.52 + 2·0.71)
    // / 6 = 0.4967; p3 (3·0.55 + 0.71) / 6 = 0.3933. u4: p4 has no neighbours, and
    // nothing follows p4 yet.
    let at_60 = state_of([
        recs_row("u1", &[("p2", 0.48, "similar"), ("p1", 0.4629, "similar")]),
        recs_row(
            "u2",
            &[
                ("p2", 0.4967, "similar"),
                ("p3", 0.3933, "similar"),
                ("p1", 0.27, "similar"),
            ],
        ),
        recs_row("u3", &[("p3", 0.275, "similar"), ("p2", 0.26, "similar")]),
    ]);
    assert_views_exactly_at(&oracle, &["recs"], T0 + MINUTE, at_60.clone(), "T0 + 60 s");
    // T0 + 90 s: u3 now has p1, p2, p4 (level 1 each, L = 3) but similar is still the
    // first one: p3 (0.55 + 0.71) / 3 = 0.42, p1 = p2 = 0.52 / 3 = 0.1733. u3's position
    // is p2, and p2 → p3 in both u1's and u2's sessions: next p3 = 1; 0.5 · 1 beats
    // 1.0 · 0.42. u4's position p4 now leads to p2 (u3's session p1 p4 p2).
    let mut at_90 = at_60;
    at_90.extend(state_of([
        recs_row(
            "u3",
            &[
                ("p3", 0.92, "next"),
                ("p1", 0.1733, "similar"),
                ("p2", 0.1733, "similar"),
            ],
        ),
        recs_row("u4", &[("p2", 0.5, "next")]),
    ]));
    assert_views_exactly_at(&oracle, &["recs"], T0 + 90 * SECOND, at_90, "T0 + 90 s");
    // T0 + 120 s: the second similar. u1: p1 (4·0.55 + 2·0.67) / 7 = 0.5057, p2 (4·0.61
    // + 0.67) / 7 = 0.4443; u2: p1 (2·0.55 + 0.67) / 6 = 0.295, p2 (3·0.67 + 2·0.61) / 6
    // = 0.5383, p3 (3·0.55 + 0.61) / 6 = 0.3767; u3: p3 (0.55 + 0.61) / 3 = 0.3867 + 0.5,
    // p1 = p2 = 0.67 / 3 = 0.2233.
    let at_120 = state_of([
        recs_row(
            "u1",
            &[("p1", 0.5057, "similar"), ("p2", 0.4443, "similar")],
        ),
        recs_row(
            "u2",
            &[
                ("p2", 0.5383, "similar"),
                ("p3", 0.3767, "similar"),
                ("p1", 0.295, "similar"),
            ],
        ),
        recs_row(
            "u3",
            &[
                ("p3", 0.8867, "next"),
                ("p1", 0.2233, "similar"),
                ("p2", 0.2233, "similar"),
            ],
        ),
        recs_row("u4", &[("p2", 0.5, "next")]),
    ]);
    assert_views_exactly_at(&oracle, &["recs"], T0 + 2 * MINUTE, at_120, "T0 + 120 s");
}

/// Seven users on articles a1, a2 and products p1, p2 (one event a second from T0 + 10 s),
/// popularity refreshed every 10 minutes, 3 popular items, the segment "all" offered
/// articles, and no similar pairs (min_users 10).
/// Positive scores: a1 u1 u2 (2 users: step 2), a2 u1 u3 u4 (3: step 2), p1 u1 u2 u6 u7
/// (4: step 4), p2 u7 (1). u5 left a1 quickly (score -1); u6 bought p1; u7 clicked p2
/// and p1 at the same ts.
/// Item sequences: u1 a1 a2 p1, u2 a1 p1, u3 a2, u4 a2, u5 a1, u6 p1, u7 p1 p2 (ts tie:
/// by item). next: a1 → a2 0.5, p1 0.5; a2 → p1 1; p1 → p2 1.
/// Positions: u1 u2 u6 p1, u3 u4 a2, u5 a1, u7 p2 (ts tie: the greater item).
fn cold_start_case(extra_config: &str) -> Case {
    let at = |s: i64| T0 + s * SECOND;
    let config = format!(
        "[similar]\nmin_users = 10\n[recs]\nshared_refresh_ms = 1\npopular_refresh_ms = 600000\npopular_items = 3\n{extra_config}\n[rules]\nall = {{ kinds = [\"article\"] }}\n"
    );
    Case::new(&[
        on_item(event("u1", "click", at(10)), "a1"),
        on_item(event("u1", "click", at(11)), "a2"),
        on_item(event("u1", "click", at(12)), "p1"),
        on_item(event("u2", "click", at(13)), "a1"),
        on_item(event("u2", "click", at(14)), "p1"),
        on_item(event("u3", "click", at(15)), "a2"),
        on_item(event("u4", "click", at(16)), "a2"),
        dwell(on_item(event("u5", "page_view", at(17)), "a1"), 2000),
        on_item(event("u6", "purchase", at(18)), "p1"),
        on_item(event("u7", "click", at(19)), "p2"),
        on_item(event("u7", "click", at(19)), "p1"),
        // takes the input past two popularity refreshes; u8 has no score: no segment
        event("u8", "page_view", T0 + 25 * MINUTE),
    ])
    .config(&config)
    .catalog(&[
        json!({"item": "a1", "category": "news", "kind": "article"}),
        json!({"item": "a2", "category": "news", "kind": "article"}),
        json!({"item": "p1", "category": "shoes", "kind": "product"}),
        json!({"item": "p2", "category": "shoes", "kind": "product"}),
    ])
}

#[test]
fn oracle_recs_cold_start_popularity_segment_boost_and_exclusions() {
    let oracle = cold_start_case("").oracle();
    // before the first popularity refresh with events (T0 + 10 min): personal candidates
    // only. u3, u4: next p1 (0.5 · 1). u5: a2 (next 0.5, and the segment's rule admits
    // it: 0.5 · 0.5 + 0.3 · 1 = 0.55), p1 (0.5 · 0.5); a1 is excluded (negative score).
    // u1, u2, u6: next p2 (0.5 · 1); u7's position p2 leads nowhere.
    let before = state_of([
        recs_row("u1", &[("p2", 0.5, "next")]),
        recs_row("u2", &[("p2", 0.5, "next")]),
        recs_row("u3", &[("p1", 0.5, "next")]),
        recs_row("u4", &[("p1", 0.5, "next")]),
        recs_row("u5", &[("a2", 0.55, "segment"), ("p1", 0.25, "next")]),
        recs_row("u6", &[("p2", 0.5, "next")]),
    ]);
    assert_views_exactly_at(
        &oracle,
        &["recs"],
        T0 + 10 * MINUTE - 1,
        before,
        "T0 + 10 min - 1",
    );
    // from T0 + 10 min: popular p1 (step 4) 1, a1 (step 2) 2/3, a2 (step 2, a tie: by
    // item) 1/3, p2 cut; segment (articles only) a1 1, a2 2/3. Everyone is a cold-start
    // user (fewer than 10 personal candidates). a1: 0.1 · 0.6666 + 0.3 · 1 = 0.3667;
    // a2: 0.1 · 0.3333 + 0.3 · 0.6666 = 0.2333; p1: 0.1.
    let after = state_of([
        recs_row(
            "u1",
            &[
                ("p2", 0.5, "next"),
                ("a1", 0.3667, "segment"),
                ("a2", 0.2333, "segment"),
                ("p1", 0.1, "popular"),
            ],
        ),
        recs_row(
            "u2",
            &[
                ("p2", 0.5, "next"),
                ("a1", 0.3667, "segment"),
                ("a2", 0.2333, "segment"),
                ("p1", 0.1, "popular"),
            ],
        ),
        // p1: 0.5 · 1 + 0.1 · 1
        recs_row(
            "u3",
            &[
                ("p1", 0.6, "next"),
                ("a1", 0.3667, "segment"),
                ("a2", 0.2333, "segment"),
            ],
        ),
        recs_row(
            "u4",
            &[
                ("p1", 0.6, "next"),
                ("a1", 0.3667, "segment"),
                ("a2", 0.2333, "segment"),
            ],
        ),
        // a2: 0.5 · 0.5 + 0.3 · 1 (the boost beats the list's 2/3) + 0.1 · 0.3333;
        // p1: 0.5 · 0.5 + 0.1 · 1; a1 excluded
        recs_row("u5", &[("a2", 0.5833, "segment"), ("p1", 0.35, "next")]),
        // p1 bought: excluded
        recs_row(
            "u6",
            &[
                ("p2", 0.5, "next"),
                ("a1", 0.3667, "segment"),
                ("a2", 0.2333, "segment"),
            ],
        ),
        recs_row(
            "u7",
            &[
                ("a1", 0.3667, "segment"),
                ("a2", 0.2333, "segment"),
                ("p1", 0.1, "popular"),
            ],
        ),
    ]);
    assert_views_exactly_at(
        &oracle,
        &["recs"],
        T0 + 10 * MINUTE,
        after.clone(),
        "T0 + 10 min",
    );
    assert_views_exactly_at(
        &oracle,
        &["recs"],
        T0 + 20 * MINUTE - 1,
        after,
        "T0 + 20 min - 1",
    );
}

#[test]
fn oracle_recs_blend_weights_reason_ties_and_k() {
    // popular weighs 0.5: u3's p1 has next 0.5 · 1 and popular 0.5 · 1, a tie that goes
    // to next; a1 popular 0.5 · 0.6666 = 0.3333 beats segment 0.3; a2 segment 0.2 beats
    // popular 0.1667 (sum 0.36663: 0.3666). u1's p1 and p2 tie on score: by item.
    let oracle = cold_start_case("weights = { popular = 0.5 }").oracle();
    let expected = state_of([
        recs_row(
            "u1",
            &[
                ("a1", 0.6333, "popular"),
                ("p1", 0.5, "popular"),
                ("p2", 0.5, "next"),
                ("a2", 0.3666, "segment"),
            ],
        ),
        recs_row(
            "u3",
            &[
                ("p1", 1.0, "next"),
                ("a1", 0.6333, "popular"),
                ("a2", 0.3666, "segment"),
            ],
        ),
    ]);
    let recs = oracle.state_at(&["recs"], T0 + 10 * MINUTE);
    assert_states_match(&expected, &only_rows(&recs, &expected), "popular 0.5");
    let u3 = &recs[&("recs".to_string(), JsonKey::new(&json!({"user": "u3"})))].0;
    assert_eq!(u3["items"][0]["score"].to_string(), "1");
    // k = 2: u5 has 2 personal candidates (a2, p1), no longer a cold-start user; u3 has
    // one (p1) and keeps the popular lists, cut to 2 items
    let oracle = cold_start_case("k = 2").oracle();
    let expected = state_of([
        recs_row("u5", &[("a2", 0.55, "segment"), ("p1", 0.25, "next")]),
        recs_row("u3", &[("p1", 0.6, "next"), ("a1", 0.3667, "segment")]),
        recs_row("u1", &[("p2", 0.5, "next"), ("a1", 0.3667, "segment")]),
    ]);
    let recs = oracle.state_at(&["recs"], T0 + 10 * MINUTE);
    assert_states_match(&expected, &only_rows(&recs, &expected), "k 2");
}

/// The rows of `state` that `rows` has.
fn only_rows(state: &State, rows: &State) -> State {
    state
        .iter()
        .filter(|(row, _)| rows.contains_key(*row))
        .map(|(row, value)| (row.clone(), value.clone()))
        .collect()
}

/// A k-means model over one feature (`purchases`, unscaled): centres 0 (browsers) and 1
/// (buyers).
fn purchases_kmeans() -> Value {
    json!({
        "kind": "kmeans",
        "transform": {"features": [{"feature": "purchases", "log": false, "mean": 0.0, "std": 0.0}]},
        "segments": [
            {"id": "c0", "name": "browsers", "center": [0.0]},
            {"id": "c1", "name": "buyers", "center": [1.0]},
        ],
        "trained": {"k": 2, "seed": 7, "users": 6},
    })
}

/// Buyers b1–b3 (one purchase each) and browsers w1–w3 (none; w3 has no item event at
/// all), one event a second from T0 + 10 s (and a page view of w4 at T0 + 61 min), with
/// default rules: buyers are offered premium
/// products and offers (p1 only: p2 is not premium, o1 has no `premium`), browsers guides
/// and articles.
/// Item sequences: b1 p2 p1, b2 o1 p1, b3 o1 p2, w1 g1 a1, w2 a1 p2. No similar pairs.
fn segments_case(config: &str) -> Case {
    let at = |s: i64| T0 + s * SECOND;
    let mut case = Case::new(&[
        on_item(event("b1", "purchase", at(10)), "p2"),
        on_item(event("b1", "click", at(11)), "p1"),
        on_item(event("b2", "purchase", at(12)), "o1"),
        on_item(event("b2", "click", at(13)), "p1"),
        on_item(event("b3", "purchase", at(14)), "o1"),
        on_item(event("b3", "click", at(15)), "p2"),
        on_item(event("w1", "click", at(16)), "g1"),
        on_item(event("w1", "click", at(17)), "a1"),
        on_item(event("w2", "click", at(18)), "a1"),
        on_item(event("w2", "click", at(19)), "p2"),
        event("w3", "page_view", at(20)),
        // takes the input past the popularity refresh at T0 + 1 h
        event("w4", "page_view", T0 + 61 * MINUTE),
    ])
    .config(&format!("{LIVE_SHARED_SOURCES}{config}"))
    .catalog(&[
        json!({"item": "g1", "category": "c", "kind": "guide"}),
        json!({"item": "a1", "category": "c", "kind": "article"}),
        json!({"item": "p1", "category": "c", "kind": "product", "premium": true}),
        json!({"item": "p2", "category": "c", "kind": "product", "premium": false}),
        json!({"item": "o1", "category": "c", "kind": "offer"}),
    ]);
    case.params.models.kmeans = Some(purchases_kmeans());
    case
}

#[test]
fn oracle_recs_segments_from_a_kmeans_model_and_content_rules() {
    let oracle = segments_case("").oracle();
    let segments = oracle.state_at(&["segments"], T0 + HOUR);
    let names: Vec<String> = segments
        .values()
        .map(|(v, _)| v["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(
        names,
        [
            "buyers", "buyers", "buyers", "browsers", "browsers", "browsers"
        ]
    );
    // at T0 + 1 h (the popularity of all events): buyers p1 (2 users), o1 (2), p2 (2): all
    // step 2, by item: o1 1, p1 0.95, p2 0.9; admitted: p1 1. Browsers a1 (2) 1, g1 (1)
    // 0.95, p2 (1) 0.9; admitted a1 1, g1 0.95.
    // b1: p2 bought; p1 0.1 · 0.95 + 0.3 · 1; o1 0.1 · 1.
    // b3: position p2 → p1 (next 1), a premium product: boosted; o1 bought.
    // w1: position a1 → p2 (next 1): 0.5 + 0.1 · 0.9.
    // w2: position p2 → p1 (next 1), not for browsers.
    // w3: no position, no score: popularity only (a segment from its features).
    let expected = state_of([
        recs_row("b1", &[("p1", 0.395, "segment"), ("o1", 0.1, "popular")]),
        recs_row("b2", &[("p1", 0.395, "segment"), ("p2", 0.09, "popular")]),
        recs_row("b3", &[("p1", 0.895, "next"), ("p2", 0.09, "popular")]),
        recs_row(
            "w1",
            &[
                ("p2", 0.59, "next"),
                ("a1", 0.4, "segment"),
                ("g1", 0.38, "segment"),
            ],
        ),
        recs_row(
            "w2",
            &[
                ("p1", 0.5, "next"),
                ("a1", 0.4, "segment"),
                ("g1", 0.38, "segment"),
                ("p2", 0.09, "popular"),
            ],
        ),
        recs_row(
            "w3",
            &[
                ("a1", 0.4, "segment"),
                ("g1", 0.38, "segment"),
                ("p2", 0.09, "popular"),
            ],
        ),
    ]);
    assert_views_exactly_at(&oracle, &RECS_VIEWS, T0 + HOUR, expected, "T0 + 1 h");
    // before T0 + 1 h there is no popularity: personal candidates only
    let expected = state_of([
        recs_row("b3", &[("p1", 0.8, "next")]),
        recs_row("w1", &[("p2", 0.5, "next")]),
        recs_row("w2", &[("p1", 0.5, "next")]),
    ]);
    assert_views_exactly_at(
        &oracle,
        &RECS_VIEWS,
        T0 + HOUR - 1,
        expected,
        "T0 + 1 h - 1",
    );
}

/// `[rules]` naming buyers only: buyers are offered offers (o1), browsers keep their
/// default rule.
const BUYERS_OFFERS: &str = "[rules]\nbuyers = { kinds = [\"offer\"] }\n";

#[test]
fn oracle_recs_a_configured_rule_replaces_only_its_segments_default() {
    let oracle = segments_case(BUYERS_OFFERS).oracle();
    // buyers: popular o1 1, p1 0.95, p2 0.9; admitted o1 1. b3's next p1 is no longer
    // boosted. Browsers as with the default rules.
    let expected = state_of([
        recs_row("b1", &[("o1", 0.4, "segment"), ("p1", 0.095, "popular")]),
        recs_row("b2", &[("p1", 0.095, "popular"), ("p2", 0.09, "popular")]),
        recs_row("b3", &[("p1", 0.595, "next"), ("p2", 0.09, "popular")]),
        recs_row(
            "w1",
            &[
                ("p2", 0.59, "next"),
                ("a1", 0.4, "segment"),
                ("g1", 0.38, "segment"),
            ],
        ),
        recs_row(
            "w2",
            &[
                ("p1", 0.5, "next"),
                ("a1", 0.4, "segment"),
                ("g1", 0.38, "segment"),
                ("p2", 0.09, "popular"),
            ],
        ),
        recs_row(
            "w3",
            &[
                ("a1", 0.4, "segment"),
                ("g1", 0.38, "segment"),
                ("p2", 0.09, "popular"),
            ],
        ),
    ]);
    assert_views_exactly_at(&oracle, &RECS_VIEWS, T0 + HOUR, expected, "T0 + 1 h");
}

/// An ALS model with one factor: p1 1, p2 0.5, p3 -1, p4 6; lambda 0.1, alpha 40. u1 clicked
/// p1 (c = 41): x = 41 / (38.25 + 40 + 0.1) = 0.52329; preferences p1 0.5233, p2 0.2616,
/// p3 -0.5233, p4 3.1398.
fn one_factor_als() -> Value {
    let items: Vec<Value> = [("p1", 1.0), ("p2", 0.5), ("p3", -1.0), ("p4", 6.0)]
        .iter()
        .map(|(item, y)| json!({"item": item, "factors": [y]}))
        .collect();
    json!({
        "kind": "als",
        "factors": 1,
        "lambda": 0.1,
        "alpha": 40.0,
        "items": items,
        "trained": {"cutoff": T0, "held_out_users": 0, "hit_rate_at_10": 0.0, "most_popular_hit_rate_at_10": 0.0},
    })
}

/// u1 clicks p1 at T0 + 10 s; u2 views a page at T0 + 1 h (past the popularity refresh).
/// With `one_factor_als` and `config`.
fn als_case(config: &str) -> Case {
    let config = match config.strip_prefix("[recs]\n") {
        Some(rest) => format!("{LIVE_SHARED_SOURCES}{rest}"),
        None => format!("{LIVE_SHARED_SOURCES}{config}"),
    };
    let mut case = Case::new(&[
        on_item(event("u1", "click", T0 + 10 * SECOND), "p1"),
        event("u2", "page_view", T0 + HOUR),
    ])
    .config(&config);
    case.params.models.als = Some(one_factor_als());
    case
}

#[test]
fn oracle_recs_als_candidates_are_clamped_and_rounded() {
    let oracle = als_case("").oracle();
    let als = oracle.state_at(&["als"], T0 + HOUR);
    let items = &als[&("als".to_string(), JsonKey::new(&json!({"user": "u1"})))].0["items"];
    assert_eq!(
        items,
        &json!([
            {"item": "p4", "score": 3.1398},
            {"item": "p1", "score": 0.5233},
            {"item": "p2", "score": 0.2616},
            {"item": "p3", "score": -0.5233},
        ])
    );
    // als values: p4 1 (clamped), p1 0.52, p2 0.26, p3 0 (clamped: worth nothing, so no
    // candidate). At T0 + 1 h u1 is a cold-start user (3 candidates) of segment "all": p1
    // popular 1 (0.1 · 1).
    let expected = state_of([recs_row(
        "u1",
        &[("p4", 1.0, "als"), ("p1", 0.62, "als"), ("p2", 0.26, "als")],
    )]);
    assert_views_exactly_at(&oracle, &["recs"], T0 + HOUR, expected, "T0 + 1 h");
    // before the refresh: no popularity
    let expected = state_of([recs_row(
        "u1",
        &[("p4", 1.0, "als"), ("p1", 0.52, "als"), ("p2", 0.26, "als")],
    )]);
    assert_views_exactly_at(&oracle, &["recs"], T0 + HOUR - 1, expected, "T0 + 1 h - 1");
    // k = 3: p4, p1 and p2 are 3 personal candidates (p3, worth 0, is none), so u1 is no
    // cold-start user: no popularity for p1
    let oracle = als_case("[recs]\nk = 3\n").oracle();
    let expected = state_of([recs_row(
        "u1",
        &[("p4", 1.0, "als"), ("p1", 0.52, "als"), ("p2", 0.26, "als")],
    )]);
    assert_views_exactly_at(&oracle, &["recs"], T0 + HOUR, expected, "k 3");
    // als_candidates = 2 keeps p4 and p1
    let oracle = als_case("[recs]\nals_candidates = 2\n").oracle();
    let expected = state_of([recs_row("u1", &[("p4", 1.0, "als"), ("p1", 0.62, "als")])]);
    assert_views_exactly_at(&oracle, &["recs"], T0 + HOUR, expected, "als_candidates 2");
}

#[test]
fn oracle_similar_and_recs_config() {
    let defaults = parse_config("").unwrap();
    assert_eq!(
        (
            defaults.similar.recent_items,
            defaults.similar.k,
            defaults.similar.min_users,
            defaults.similar.refresh_ms
        ),
        (20, 10, 2, 60_000)
    );
    let recs = &defaults.recs;
    assert_eq!(
        (
            recs.k,
            recs.als_candidates,
            recs.popular_items,
            recs.popular_refresh_ms
        ),
        (10, 20, 20, 86_400_000)
    );
    assert_eq!(recs.weights_milli, [1000, 500, 1000, 300, 100]);
    assert_eq!(recs.shared_refresh_ms, 86_400_000);
    assert_eq!(defaults.rules.len(), 4);
    assert_eq!(defaults.rules["buyers"].premium, Some(true));
    let config = parse_config(
        "[similar]\nk = 3\nrefresh_ms = 1000\n[recs]\nk = 5\nals_candidates = 7\nweights = { next = 2, popular = 0.25 }\n[rules]\nbuyers = { kinds = [\"offer\"] }\nall = { kinds = [\"guide\"], premium = false }\n",
    )
    .unwrap();
    assert_eq!((config.similar.k, config.similar.refresh_ms), (3, 1000));
    assert_eq!((config.recs.k, config.recs.als_candidates), (5, 7));
    assert_eq!(config.recs.weights_milli, [1000, 2000, 1000, 300, 250]);
    assert_eq!(config.rules["buyers"].kinds, ["offer"]);
    assert_eq!(config.rules["buyers"].premium, None);
    assert_eq!(config.rules["all"].premium, Some(false));
    assert_eq!(config.rules["browsers"].kinds, ["guide", "article"]);
    for (config, key) in [
        ("[similar]\nk = 0\n", "similar.k"),
        ("[similar]\nmin_users = 1.5\n", "similar.min_users"),
        ("[similar]\nbogus = 1\n", "similar.bogus"),
        (
            "[recs]\npopular_refresh_ms = 0\n",
            "recs.popular_refresh_ms",
        ),
        ("[recs]\nshared_refresh_ms = 0\n", "recs.shared_refresh_ms"),
        ("[recs]\nweights = { bogus = 1 }\n", "recs.weights.bogus"),
        ("[recs]\nweights = { next = -1 }\n", "recs.weights.next"),
        ("[recs]\nweights = { next = 1001 }\n", "recs.weights.next"),
        ("[recs]\nweights = 1\n", "recs.weights"),
        (
            "[rules]\nbuyers = { kinds = [\"shoe\"] }\n",
            "rules.buyers.kinds",
        ),
        (
            "[rules]\nbuyers = { premium = true }\n",
            "rules.buyers.kinds",
        ),
        (
            "[rules]\nbuyers = { kinds = [], premium = 1 }\n",
            "rules.buyers.premium",
        ),
    ] {
        let error = parse_config(config).expect_err(config);
        assert!(error.contains(key), "{config}: {error}");
    }
}

/// 51 users buy a (a purchase and an add-to-cart: level 4), 51 others b, and s clicks a,
/// then b (level 1 each): norms 205, and the one pair (min_users 1) has co 1: similarity
/// 1/205 = 0.0049, worth 0 at two decimals. One event every 100 ms from T0; popularity
/// and similar refresh every minute; z views a page at T0 + 2 min. With `[recs] k = 2`.
fn zero_similarity_case() -> Case {
    zero_similarity_events()
        .config("[similar]\nmin_users = 1\n[recs]\nk = 2\nshared_refresh_ms = 1\npopular_refresh_ms = 60000\n")
}

/// `zero_similarity_case` with the default k, a and b products, and the segment "all"
/// offered products.
fn zero_similarity_boost_case() -> Case {
    zero_similarity_events()
        .config("[similar]\nmin_users = 1\n[recs]\nshared_refresh_ms = 1\npopular_refresh_ms = 60000\n[rules]\nall = { kinds = [\"product\"] }\n")
        .catalog(&[
            json!({"item": "a", "category": "c", "kind": "product"}),
            json!({"item": "b", "category": "c", "kind": "product"}),
        ])
}

fn zero_similarity_events() -> Case {
    let mut events = Vec::new();
    let mut ts = T0;
    for (prefix, item) in [("x", "a"), ("y", "b")] {
        for i in 1..=51 {
            let user = format!("{prefix}{i}");
            for kind in ["add_to_cart", "purchase"] {
                ts += 100;
                events.push(on_item(event(&user, kind, ts), item));
            }
        }
    }
    events.push(on_item(event("s", "click", ts + 100), "a"));
    events.push(on_item(event("s", "click", ts + 200), "b"));
    events.push(event("z", "page_view", T0 + 2 * MINUTE));
    Case::new(&events)
}

#[test]
fn oracle_recs_candidates_worth_nothing_do_not_count() {
    let oracle = zero_similarity_case().oracle();
    let now = T0 + MINUTE;
    let similar = state_of([
        similar_row("a", &[("b", 0.0049)]),
        similar_row("b", &[("a", 0.0049)]),
    ]);
    assert_views_exactly_at(&oracle, &["similar"], now, similar, "similar");
    // popularity ("all"): a and b 52 users each (step 32): a 1, b 0.95.
    // s: a and b from similar, both worth 0 at two decimals, so no personal candidate:
    // a cold-start user (k = 2) offered the popular items.
    // x1: b from next (a → b in s's session: 1); cold start; a bought.
    // y1: no personal candidate; cold start; b bought.
    let recs = oracle.state_at(&["recs"], now);
    let expected = state_of([
        recs_row("s", &[("a", 0.1, "popular"), ("b", 0.095, "popular")]),
        recs_row("x1", &[("b", 0.595, "next")]),
        recs_row("y1", &[("a", 0.1, "popular")]),
    ]);
    assert_states_match(&expected, &only_rows(&recs, &expected), "s, x1, y1");
    assert_eq!(recs.len(), 103);
    // With k = 10 all are cold-start users; s's a and b are not personal candidates, so
    // not boosted: their values come from the segment's list of products (a 1, b 0.95).
    let oracle = zero_similarity_boost_case().oracle();
    let recs = oracle.state_at(&["recs"], now);
    let expected = state_of([recs_row(
        "s",
        &[("a", 0.4, "segment"), ("b", 0.38, "segment")],
    )]);
    assert_states_match(&expected, &only_rows(&recs, &expected), "s, boosted");
}

/// u1 clicks x and y, u2 clicks x, then y at T0 + 60 s exactly, the time of a refresh of
/// similar and (every minute here) of popularity; z views a page at T0 + 3 min.
fn refresh_boundary_case() -> Case {
    Case::new(&[
        on_item(event("u1", "click", T0 + 10 * SECOND), "x"),
        on_item(event("u1", "click", T0 + 11 * SECOND), "y"),
        on_item(event("u2", "click", T0 + 12 * SECOND), "x"),
        on_item(event("u2", "click", T0 + MINUTE), "y"),
        event("z", "page_view", T0 + 3 * MINUTE),
    ])
    .config("[recs]\nshared_refresh_ms = 1\npopular_refresh_ms = 60000\n")
}

#[test]
fn oracle_similar_and_popularity_at_a_refresh_include_the_events_of_that_time() {
    let oracle = refresh_boundary_case().oracle();
    // just before: no similar, no popularity; u2's position x leads to y (u1's session)
    let expected = state_of([recs_row("u2", &[("y", 0.5, "next")])]);
    assert_views_exactly_at(
        &oracle,
        &RECS_VIEWS,
        T0 + MINUTE - 1,
        expected,
        "T0 + 60 s - 1",
    );
    // at T0 + 60 s: (x, y) has both users (level 1 each): similarity 1. Both users have
    // x and y as top items: similar values 1 · 1 / 2 = 0.5; popularity x 1, y 0.95 (2
    // users each, a tie on step: by item).
    let expected = state_of([
        similar_row("x", &[("y", 1.0)]),
        similar_row("y", &[("x", 1.0)]),
        recs_row("u1", &[("x", 0.6, "similar"), ("y", 0.595, "similar")]),
        recs_row("u2", &[("x", 0.6, "similar"), ("y", 0.595, "similar")]),
    ]);
    assert_views_exactly_at(&oracle, &RECS_VIEWS, T0 + MINUTE, expected, "T0 + 60 s");
}

/// Three users click one product each: p1 (no `premium`), p2 (premium false), p3 (premium
/// true); the segment "all" is offered non-premium products; popularity every minute.
fn premium_case() -> Case {
    Case::new(&[
        on_item(event("u1", "click", T0 + 10 * SECOND), "p1"),
        on_item(event("u2", "click", T0 + 11 * SECOND), "p2"),
        on_item(event("u3", "click", T0 + 12 * SECOND), "p3"),
        event("z", "page_view", T0 + 3 * MINUTE),
    ])
    .config(
        "[recs]\nshared_refresh_ms = 1\npopular_refresh_ms = 60000\n[rules]\nall = { kinds = [\"product\"], premium = false }\n",
    )
    .catalog(&[
        json!({"item": "p1", "category": "c", "kind": "product"}),
        json!({"item": "p2", "category": "c", "kind": "product", "premium": false}),
        json!({"item": "p3", "category": "c", "kind": "product", "premium": true}),
    ])
}

#[test]
fn oracle_recs_an_item_without_premium_is_not_premium() {
    let oracle = premium_case().oracle();
    // popular p1 1, p2 0.95, p3 0.9 (one user each); admitted p1 (no premium: false) 1,
    // p2 0.95. p1: 0.1 + 0.3; p2: 0.095 + 0.285.
    let list = [
        ("p1", 0.4, "segment"),
        ("p2", 0.38, "segment"),
        ("p3", 0.09, "popular"),
    ];
    let expected = state_of(["u1", "u2", "u3"].map(|user| recs_row(user, &list)));
    assert_views_exactly_at(&oracle, &RECS_VIEWS, T0 + MINUTE, expected, "T0 + 60 s");
}

/// The hand-made similar and recs inputs without models.
fn recs_cases() -> Vec<(&'static str, Case)> {
    vec![
        ("premium", premium_case()),
        ("refresh_boundary", refresh_boundary_case()),
        ("similar", similar_case()),
        (
            "similar_recent_items",
            similar_case().config("[similar]\nrecent_items = 2\nmin_users = 1\n"),
        ),
        ("cold_start", cold_start_case("")),
        (
            "cold_start_weights",
            cold_start_case("weights = { popular = 0.5 }"),
        ),
        ("cold_start_k", cold_start_case("k = 2")),
    ]
}

#[test]
fn oracle_checker_accepts_correct_recs_output_and_catches_an_early_refresh() {
    let mut views = RECS_VIEWS.to_vec();
    views.push("scores");
    let cases = recs_cases().into_iter().chain(recs_model_cases()).chain([
        ("zero_similarity", zero_similarity_case()),
        ("zero_similarity_boost", zero_similarity_boost_case()),
    ]);
    for (name, case) in cases {
        let oracle = case.oracle();
        let text = simulated_engine_output(&oracle, &views);
        let output = Output::parse(&text).unwrap();
        output.check_consolidated().unwrap();
        for granularity in [Granularity::Progress, Granularity::EveryTime] {
            oracle
                .check(&output, &views, granularity)
                .unwrap_or_else(|e| panic!("{name}, {granularity:?}: {e}"));
        }
    }
    // an engine that refreshes similar every second: the first pair (p1, p2 of u1 and u2)
    // shows at T0 + 16 s instead of T0 + 60 s
    let oracle = similar_case().oracle();
    let eager = similar_case()
        .config("[similar]\nrefresh_ms = 1000\n")
        .oracle();
    let output = Output::parse(&simulated_engine_output(&eager, &["similar"])).unwrap();
    let error = oracle
        .check(&output, &["similar"], Granularity::EveryTime)
        .expect_err("similar refreshed too early");
    assert!(
        error.contains(&format!("the state at T = {}", T0 + 16 * SECOND))
            && error.contains(&format!("similar reads the top items at T = {T0}")),
        "{error}"
    );
    // and one that forgets the popularity refresh
    let oracle = cold_start_case("").oracle();
    let text: String = simulated_engine_output(&oracle, &views)
        .lines()
        .filter(|l| !l.contains(&format!("\"time\":{}", T0 + 10 * MINUTE)))
        .map(|l| format!("{l}\n"))
        .collect();
    let output = Output::parse(&text).unwrap();
    let error = oracle
        .check(&output, &views, Granularity::EveryTime)
        .expect_err("no popularity refresh");
    assert!(
        error.contains(&format!("T = {}", T0 + 10 * MINUTE))
            && error.contains("recs")
            && error.contains("cold start"),
        "{error}"
    );
}

/// `similar` and `recs` of a week of generated events at every progress line, for 1 and 4
/// workers.
#[test]
fn engine_similar_and_recs_match_the_oracle_one_and_four_workers() {
    let (input, catalog) = week_with_catalog();
    let params = Params::default().with_catalog(&catalog);
    for workers in ["1", "4"] {
        let state = check_engine_views(
            &input,
            params.clone(),
            &RECS_VIEWS,
            &["--workers", workers],
            Granularity::Progress,
        );
        assert_views_have_rows(&state, &RECS_VIEWS);
    }
}

/// The same with trained ALS and k-means models: `als` candidates and segment boosts and
/// popularity per segment.
#[test]
fn engine_similar_and_recs_with_als_and_kmeans_match_the_oracle_one_and_four_workers() {
    let (input, catalog) = week_with_catalog();
    let training = "[propensity]\nhorizon_days = 2\n";
    let mut params = Params::default().with_catalog(&catalog);
    params.models.kmeans = Some(train("kmeans", &input, &catalog, training));
    params.models.als = Some(train("als", &input, &catalog, training));
    let views = ["similar", "recs", "als", "segments"];
    for workers in ["1", "4"] {
        let state = check_engine_views(
            &input,
            params.clone(),
            &views,
            &["--workers", workers],
            Granularity::Progress,
        );
        assert_views_have_rows(&state, &views);
        let reasons: BTreeSet<String> = state
            .iter()
            .filter(|((view, _), _)| view == "recs")
            .flat_map(|(_, (value, _))| value["items"].as_array().unwrap().clone())
            .map(|item| item["reason"].as_str().unwrap().to_string())
            .collect();
        assert!(reasons.contains("als"), "reasons at the end: {reasons:?}");
    }
}

/// The hand-made similar and recs inputs with models (a hand-made k-means and ALS model).
fn recs_model_cases() -> Vec<(&'static str, Case)> {
    vec![
        ("segments", segments_case("")),
        ("segments_rules", segments_case(BUYERS_OFFERS)),
        ("als", als_case("")),
        ("als_k", als_case("[recs]\nk = 3\n")),
        ("als_candidates", als_case("[recs]\nals_candidates = 2\n")),
    ]
}

/// The hand-made similar and recs inputs at every change time (and every refresh), for 1
/// and 4 workers.
#[test]
fn engine_similar_and_recs_hand_made_cases() {
    for workers in ["1", "4"] {
        for (name, case) in recs_cases().into_iter().chain(recs_model_cases()) {
            eprintln!("case {name}, {workers} workers");
            let mut flags = case.params.time_flags();
            flags.extend(["--workers".to_string(), workers.to_string()]);
            let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
            check_engine_views(
                &case.input,
                case.params.clone(),
                &RECS_VIEWS,
                &flags,
                Granularity::EveryTime,
            );
        }
    }
}

/// A short window with a boost, quick refreshes, few top items and neighbours, other
/// weights and rules, k-means and ALS models, and late events: three days of a small generated
/// input (with rejected items), at every change time and refresh, 2 workers.
const RECS_CONFIG: &str = "\
[windows]
span_ms = 21600000
recency_days = [1]
boost = [{ span_ms = 3600000, extra = 1.0 }]
[similar]
recent_items = 4
k = 3
min_users = 1
refresh_ms = 600000
[recs]
k = 5
popular_items = 4
popular_refresh_ms = 1800000
weights = { similar = 0.7, next = 1.0, segment = 0.5, popular = 0.2 }
[rules]
buyers = { kinds = [\"product\", \"offer\"], premium = false }
browsers = { kinds = [\"article\", \"product\"] }
";

#[test]
fn engine_similar_and_recs_every_time_with_a_custom_config() {
    let (events, catalog) = generated_with_catalog(&[
        "--users", "40", "--items", "30", "--events", "1500", "--seed", "11", "--days", "3",
    ]);
    let input = shuffled_within(&with_recs(&events, 11), 20 * MINUTE as u64, 11);
    let training = "[propensity]\nhorizon_days = 1\n";
    let mut params = Params::default()
        .with_config(RECS_CONFIG)
        .with_catalog(&catalog);
    params.models.kmeans = Some(train("kmeans", &input, &catalog, training));
    params.models.als = Some(train("als", &input, &catalog, training));
    let oracle = Oracle::new(&input, params.clone());
    assert!(oracle.late_events() > 100, "{} late", oracle.late_events());
    assert_some_item_rejected(&oracle);
    let state = check_engine_views(
        &input,
        params,
        &RECS_VIEWS,
        &["--workers", "2"],
        Granularity::EveryTime,
    );
    assert_views_have_rows(&state, &RECS_VIEWS);
}

/// `zero_similarity_case`: `similar` candidates worth 0 (similarity 0.0049, 0 at two
/// decimals) are no candidates, so their user is a cold-start user.
#[test]
fn engine_recs_ignores_similar_candidates_worth_nothing() {
    check_engine_recs_case(&zero_similarity_case());
}

/// `zero_similarity_boost_case`: a similar candidate worth 0 is no personal candidate, so
/// the segment boost does not apply to it; the segment's popular list does.
#[test]
fn engine_recs_does_not_boost_similar_candidates_worth_nothing() {
    check_engine_recs_case(&zero_similarity_boost_case());
}

/// `similar` and `recs` of `case` at every change time and refresh, 1 and 4 workers.
fn check_engine_recs_case(case: &Case) {
    for workers in ["1", "4"] {
        let mut flags = case.params.time_flags();
        flags.extend(["--workers".to_string(), workers.to_string()]);
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        check_engine_views(
            &case.input,
            case.params.clone(),
            &RECS_VIEWS,
            &flags,
            Granularity::EveryTime,
        );
    }
}
