//! The batch reference (DESIGN.md §8): every view computed from scratch in plain Rust, from
//! the decisions in the semantics brief for issue 2, with no timely or differential.
//!
//! - `parse_event`: which lines are events, and what their fields mean;
//! - `stamp_effective_times`: the time at which the engine applies each event (tick,
//!   watermark, late events applied at the watermark);
//! - one function per view (`sessions`, `scores`), each a function of a set of events;
//! - `Oracle`: the views over "all events with effective time < P", and the check of an
//!   engine run against them at every progress line.
//!
//! Include it together with `tests/common` (`mod common; mod oracle;`).
#![allow(dead_code)]

use crate::common::{
    Checkpoint, Granularity, JsonKey, Mismatch, Output, RowId, State, StateFold, compare_row,
    describe_mismatches,
};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

// ---------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------

/// One valid input event (DESIGN.md §2, semantics brief "Event validity").
#[derive(Clone, Debug)]
pub struct Event {
    /// 1-based line number in the input.
    pub line: usize,
    pub user: String,
    /// The `type` field.
    pub kind: String,
    /// Event time, ms since the epoch.
    pub ts: i64,
    pub item: Option<String>,
    /// The client's session id; `None` when absent or empty.
    pub session: Option<String>,
    pub scroll: Option<f64>,
    pub dwell_ms: Option<u64>,
    /// The whole object, for fields later views read (`page`, `value`, `rec`, …).
    pub fields: Map<String, Value>,
}

/// Parses one input line into an event, or says why it is not a valid one.
pub fn parse_event(line: usize, text: &str) -> Result<Event, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
    let Value::Object(fields) = value else {
        return Err("not a JSON object".into());
    };
    let required_string = |name: &str| match fields.get(name) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(Value::String(_)) => Err(format!("empty \"{name}\"")),
        Some(_) => Err(format!("\"{name}\" is not a string")),
        None => Err(format!("missing field \"{name}\"")),
    };
    // Optional fields: absent or null means "not given" (the brief does not mention null).
    let optional = |name: &str| fields.get(name).filter(|v| !v.is_null());
    let optional_string = |name: &str| match optional(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(format!("\"{name}\" is not a string")),
    };
    let user = required_string("user")?;
    let kind = required_string("type")?;
    let ts = match fields.get("ts") {
        None => return Err("missing field \"ts\"".into()),
        Some(Value::String(s)) => parse_rfc3339_ms(s)
            .filter(|ms| *ms >= 0)
            .ok_or_else(|| format!("\"ts\" {s:?} is not an RFC 3339 time at or after 1970"))?,
        Some(Value::Number(n)) => n
            .as_u64()
            .and_then(|ms| i64::try_from(ms).ok())
            .ok_or_else(|| format!("\"ts\" {n} is not a non-negative integer"))?,
        Some(other) => return Err(format!("\"ts\" {other} is neither ms nor RFC 3339")),
    };
    let item = optional_string("item")?;
    let session = optional_string("session")?.filter(|s| !s.is_empty());
    let scroll = match optional("scroll") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|s| (0.0..=1.0).contains(s))
                .ok_or_else(|| format!("\"scroll\" {v} is not a number in 0..1"))?,
        ),
    };
    let dwell_ms = match optional("dwell_ms") {
        None => None,
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| format!("\"dwell_ms\" {v} is not a non-negative integer"))?,
        ),
    };
    Ok(Event {
        line,
        user,
        kind,
        ts,
        item,
        session,
        scroll,
        dwell_ms,
        fields,
    })
}

/// An input split into its valid events (in input order) and its rejected lines.
#[derive(Clone, Debug, Default)]
pub struct Input {
    pub events: Vec<Event>,
    /// (line number, reason)
    pub rejected: Vec<(usize, String)>,
}

/// Reads JSON lines; blank lines are neither events nor errors.
pub fn parse_input(text: &str) -> Input {
    let mut input = Input::default();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match parse_event(i + 1, line) {
            Ok(event) => input.events.push(event),
            Err(why) => input.rejected.push((i + 1, why)),
        }
    }
    input
}

/// RFC 3339 (`2026-01-01T00:00:00Z`, `2026-01-01T01:30:00.250+01:30`) to ms since the
/// epoch; sub-millisecond digits are truncated.
pub fn parse_rfc3339_ms(text: &str) -> Option<i64> {
    let b = text.as_bytes();
    let digits = |from: usize, to: usize| -> Option<i64> {
        let part = text.get(from..to)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())?
    };
    let at = |i: usize, allowed: &[u8]| b.get(i).is_some_and(|c| allowed.contains(c));
    if !(at(4, b"-") && at(7, b"-") && at(10, b"Tt ") && at(13, b":") && at(16, b":")) {
        return None;
    }
    let (year, month, day) = (digits(0, 4)?, digits(5, 7)?, digits(8, 10)?);
    let (hour, minute, second) = (digits(11, 13)?, digits(14, 16)?, digits(17, 19)?);
    let mut i = 19;
    let mut millis = 0;
    if at(i, b".") {
        let start = i + 1;
        i = start;
        while at(i, b"0123456789") {
            i += 1;
        }
        if i == start {
            return None;
        }
        let frac = format!("{:0<3}", &text[start..i.min(start + 3)]);
        millis = frac.parse::<i64>().ok()?;
    }
    let offset_minutes = match &text[i..] {
        "Z" | "z" => 0,
        zone if zone.len() == 6 && at(i + 3, b":") => {
            let sign = match zone.as_bytes()[0] {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            let (h, m) = (digits(i + 1, i + 3)?, digits(i + 4, i + 6)?);
            if h > 23 || m > 59 {
                return None;
            }
            sign * (h * 60 + m)
        }
        _ => return None,
    };
    let valid = (1..=12).contains(&month)
        && (1..=days_in_month(year, month)).contains(&day)
        && hour < 24
        && minute < 60
        && second < 60;
    if !valid {
        return None;
    }
    let seconds = days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
        - offset_minutes * 60;
    Some(seconds * 1000 + millis)
}

fn days_in_month(year: i64, month: i64) -> i64 {
    let leap = (year % 4 == 0 && year % 100 != 0) || year % 400 == 0;
    match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's `days_from_civil`).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

// ---------------------------------------------------------------------------------------
// Run parameters
// ---------------------------------------------------------------------------------------

/// The event types DESIGN.md §2 knows; `[weights]` may name these directly, others go
/// under `custom`.
pub const KNOWN_TYPES: &[&str] = &[
    "page_view",
    "click",
    "scroll",
    "video_play",
    "form_submit",
    "add_to_cart",
    "wishlist",
    "bookmark",
    "share",
    "comment",
    "purchase",
    "impression",
    "exit",
];

/// Intent weight per event type, in thousandths (the engine's fixed point). Types without
/// a weight weigh 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    milli: BTreeMap<String, i64>,
}

impl Default for Weights {
    /// The brief's defaults: click 1, add_to_cart 3, purchase 5, wishlist 2, bookmark 2,
    /// share 2, comment 1, video_play 1, everything else 0.
    fn default() -> Weights {
        let mut weights = Weights {
            milli: BTreeMap::new(),
        };
        for (kind, w) in [
            ("click", 1.0),
            ("add_to_cart", 3.0),
            ("purchase", 5.0),
            ("wishlist", 2.0),
            ("bookmark", 2.0),
            ("share", 2.0),
            ("comment", 1.0),
            ("video_play", 1.0),
        ] {
            weights.set(kind, w);
        }
        weights
    }
}

impl Weights {
    pub fn set(&mut self, kind: &str, weight: f64) {
        self.milli
            .insert(kind.to_string(), (weight * 1000.0).round() as i64);
    }

    pub fn milli(&self, kind: &str) -> i64 {
        self.milli.get(kind).copied().unwrap_or(0)
    }

    /// Defaults overridden by the `[weights]` table of a config file:
    /// `click = 2`, `page_view = 0.5`, `custom = { newsletter_signup = 4 }`.
    pub fn from_config(toml_text: &str) -> Weights {
        let config: toml::Table =
            toml::from_str(toml_text).unwrap_or_else(|e| panic!("test config is not TOML: {e}"));
        let mut weights = Weights::default();
        let Some(table) = config.get("weights") else {
            return weights;
        };
        let number = |name: &str, v: &toml::Value| match v {
            toml::Value::Integer(i) => *i as f64,
            toml::Value::Float(f) => *f,
            other => panic!("test config: weight {name} = {other} is not a number"),
        };
        for (name, value) in table.as_table().expect("[weights] is a table") {
            if name == "custom" {
                for (kind, w) in value.as_table().expect("weights.custom is a table") {
                    assert!(
                        !KNOWN_TYPES.contains(&kind.as_str()),
                        "custom weight for built-in {kind}"
                    );
                    weights.set(kind, number(kind, w));
                }
            } else {
                assert!(
                    KNOWN_TYPES.contains(&name.as_str()),
                    "test config: unknown weight {name}"
                );
                weights.set(name, number(name, value));
            }
        }
        weights
    }
}

/// The parameters of one run that the views depend on.
#[derive(Clone, Debug)]
pub struct Params {
    pub tick_ms: i64,
    pub lateness_ms: i64,
    pub weights: Weights,
}

impl Default for Params {
    /// `intentflow run` without flags: `--tick-ms 1000 --lateness-ms 5000`, default weights.
    fn default() -> Params {
        Params {
            tick_ms: 1000,
            lateness_ms: 5000,
            weights: Weights::default(),
        }
    }
}

impl Params {
    pub fn new(tick_ms: i64, lateness_ms: i64) -> Params {
        Params {
            tick_ms,
            lateness_ms,
            ..Params::default()
        }
    }

    pub fn with_weights(self, weights: Weights) -> Params {
        Params { weights, ..self }
    }

    /// The engine flags for these times (`--tick-ms N --lateness-ms N`).
    pub fn time_flags(&self) -> Vec<String> {
        vec![
            "--tick-ms".into(),
            self.tick_ms.to_string(),
            "--lateness-ms".into(),
            self.lateness_ms.to_string(),
        ]
    }
}

// ---------------------------------------------------------------------------------------
// Time: effective time of each event (semantics brief "Time")
// ---------------------------------------------------------------------------------------

/// An event with the time at which the engine applies it.
#[derive(Clone, Debug)]
pub struct Stamped {
    pub event: Event,
    /// `max(tick(ts), watermark)`
    pub effective: i64,
    /// `tick(ts)` was below the watermark, so the event is applied at the watermark.
    pub late: bool,
}

/// Walks the events in input order: each is applied at its tick, or at the watermark if
/// that is later (a late event); then the watermark follows the max event time seen minus
/// the allowed lateness, on the tick grid, never going back.
pub fn stamp_effective_times(events: Vec<Event>, params: &Params) -> Vec<Stamped> {
    let tick = |t: i64| t - t % params.tick_ms;
    let mut max_seen: Option<i64> = None;
    let mut watermark = 0;
    events
        .into_iter()
        .map(|event| {
            let late = tick(event.ts) < watermark;
            let effective = tick(event.ts).max(watermark);
            let seen = max_seen.map_or(event.ts, |m| m.max(event.ts));
            max_seen = Some(seen);
            watermark = watermark.max(tick((seen - params.lateness_ms).max(0)));
            Stamped {
                event,
                effective,
                late,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// Views
// ---------------------------------------------------------------------------------------

/// Rows of one view: (key, value), both JSON objects.
pub type Rows = Vec<(Value, Value)>;

/// A new derived session starts after more than 30 minutes without events.
pub const SESSION_GAP_MS: i64 = 30 * 60 * 1000;

/// View `sessions` (seed 1a/1b): events with a client session id belong to (user, id);
/// a user's other events, by time, are cut into sessions at gaps over 30 minutes, each
/// named `auto-<start ms>`. Per session: start, end, events, page views, high-intent events
/// (add to cart, purchase) and the deepest scroll.
pub fn sessions(events: &[&Event]) -> Rows {
    let mut by_session: BTreeMap<(&str, String), Vec<&Event>> = BTreeMap::new();
    let mut without_id: BTreeMap<&str, Vec<&Event>> = BTreeMap::new();
    for e in events {
        match &e.session {
            Some(id) => by_session.entry((&e.user, id.clone())).or_default().push(e),
            None => without_id.entry(&e.user).or_default().push(e),
        }
    }
    for (user, mut events) in without_id {
        events.sort_by_key(|e| e.ts);
        for session in split_at_inactivity(&events) {
            let id = format!("auto-{}", session[0].ts);
            let clash = by_session.insert((user, id.clone()), session.to_vec());
            assert!(
                clash.is_none(),
                "user {user} sends session id {id:?}, which is also a derived session's id; the brief leaves this case open"
            );
        }
    }
    by_session
        .into_iter()
        .map(|((user, id), events)| {
            (
                json!({"user": user, "session": id}),
                session_summary(&events),
            )
        })
        .collect()
}

/// Cuts time-sorted events where the gap to the previous event exceeds `SESSION_GAP_MS`.
fn split_at_inactivity<'a, 'e>(sorted: &'a [&'e Event]) -> Vec<&'a [&'e Event]> {
    sorted
        .chunk_by(|a, b| b.ts - a.ts <= SESSION_GAP_MS)
        .collect()
}

fn session_summary(events: &[&Event]) -> Value {
    let count = |kinds: &[&str]| {
        events
            .iter()
            .filter(|e| kinds.contains(&e.kind.as_str()))
            .count()
    };
    let max_scroll = events
        .iter()
        .filter_map(|e| e.scroll)
        .fold(None, |m: Option<f64>, s| Some(m.map_or(s, |m| m.max(s))));
    json!({
        "start": events.iter().map(|e| e.ts).min().unwrap(),
        "end": events.iter().map(|e| e.ts).max().unwrap(),
        "events": events.len(),
        "page_views": count(&["page_view"]),
        "high_intent": count(&["add_to_cart", "purchase"]),
        "max_scroll": max_scroll.map_or(json!(0), |s| json!(s)),
    })
}

/// View `scores` (seed 1a): per (user, item), the sum of the weights of the user's events
/// on the item; a row exists only while the score is not zero.
pub fn scores(events: &[&Event], weights: &Weights) -> Rows {
    let mut milli: BTreeMap<(&str, &str), i64> = BTreeMap::new();
    for e in events {
        if let Some(item) = &e.item {
            *milli.entry((&e.user, item)).or_default() += weights.milli(&e.kind);
        }
    }
    milli
        .into_iter()
        .filter(|(_, score)| *score != 0)
        .map(|((user, item), score)| {
            (
                json!({"user": user, "item": item}),
                json!({"score": fixed_point(score, 1000)}),
            )
        })
        .collect()
}

/// A fixed-point integer as a JSON number (an integer when it is one).
fn fixed_point(units: i64, per_one: i64) -> Value {
    if units % per_one == 0 {
        json!(units / per_one)
    } else {
        json!(units as f64 / per_one as f64)
    }
}

/// A view the oracle computes.
pub struct View {
    pub name: &'static str,
    /// Every row's key has a `user` and depends only on that user's events, so a state can
    /// be updated user by user.
    pub per_user: bool,
    pub compute: fn(&[&Event], &Params) -> Rows,
}

pub const VIEWS: &[View] = &[
    View {
        name: "sessions",
        per_user: true,
        compute: |events, _| sessions(events),
    },
    View {
        name: "scores",
        per_user: true,
        compute: |events, params| scores(events, &params.weights),
    },
];

pub fn view(name: &str) -> &'static View {
    VIEWS
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("the oracle has no view {name}"))
}

// ---------------------------------------------------------------------------------------
// The oracle: views of an input at any time
// ---------------------------------------------------------------------------------------

pub struct Oracle {
    pub params: Params,
    /// Valid events in input order, with effective times.
    pub events: Vec<Stamped>,
    pub rejected: Vec<(usize, String)>,
}

impl Oracle {
    pub fn new(input_text: &str, params: Params) -> Oracle {
        let input = parse_input(input_text);
        let events = stamp_effective_times(input.events, &params);
        Oracle {
            params,
            events,
            rejected: input.rejected,
        }
    }

    pub fn late_events(&self) -> usize {
        self.events.iter().filter(|e| e.late).count()
    }

    /// Events with effective time < `bound` (all for `None`).
    pub fn events_before(&self, bound: Option<i64>) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|s| bound.is_none_or(|b| s.effective < b))
            .map(|s| &s.event)
            .collect()
    }

    /// The views, from scratch, over the events with effective time < `bound`.
    pub fn state(&self, views: &[&str], bound: Option<i64>) -> State {
        let events = self.events_before(bound);
        let mut state = State::new();
        for name in views {
            for (key, value) in (view(name).compute)(&events, &self.params) {
                state.insert((name.to_string(), JsonKey::new(&key)), (value, 1));
            }
        }
        state
    }

    /// Checks an engine run against the oracle: at every checkpoint of `granularity` the
    /// engine's rows of `views` must equal the views over the events with effective time
    /// below the checkpoint, and at the end they must equal the views over all events.
    ///
    /// At each checkpoint the partitions with new events are recomputed from scratch (per
    /// user for per-user views, whole otherwise) and compared on the rows that changed on
    /// either side; the final state is also compared in full. The error is a short diff:
    /// the checkpoint, the first rows that differ, and the events of the first differing user.
    pub fn check(
        &self,
        output: &Output,
        views: &[&str],
        granularity: Granularity,
    ) -> Result<(), String> {
        let output = output.only_views(views);
        let mut order: Vec<usize> = (0..self.events.len()).collect();
        order.sort_by_key(|i| (self.events[*i].effective, *i));
        let mut checker = Checker::new(self, views);
        let mut step = |cp: Checkpoint, fold: &StateFold, touched: &BTreeSet<RowId>| {
            let bound = cp.bound().map(|b| i64::try_from(b).unwrap());
            let mut new_events = Vec::new();
            while let Some(&i) = order.get(checker.applied) {
                if bound.is_some_and(|b| self.events[i].effective >= b) {
                    break;
                }
                new_events.push(i);
                checker.applied += 1;
            }
            let mut dirty = touched.clone();
            checker.advance(&new_events, &mut dirty);
            let mismatches: Vec<Mismatch> = dirty
                .iter()
                .filter_map(|row| compare_row(row, checker.expected(row), fold.get(row)))
                .collect();
            if mismatches.is_empty() {
                return Ok(());
            }
            Err(format!(
                "engine and oracle disagree at {cp} ({} of {} events applied):\n{}{}",
                checker.applied,
                self.events.len(),
                describe_mismatches(&mismatches, 6),
                self.describe_user_events(&mismatches, bound)
            ))
        };
        match granularity {
            Granularity::Progress => output.replay(granularity, &mut step)?,
            Granularity::EveryTime => {
                let times = self.events.iter().map(|s| s.effective as u64).collect();
                output.replay_at_times(&times, &mut step)?
            }
        }
        let expected = self.state(views, None);
        let actual = output.final_state();
        let mismatches = crate::common::compare_states(&expected, &actual);
        if !mismatches.is_empty() {
            return Err(format!(
                "final state differs from the oracle over all events:\n{}",
                describe_mismatches(&mismatches, 6)
            ));
        }
        Ok(())
    }

    /// The events of the first mismatching row's user that are applied by `bound`.
    fn describe_user_events(&self, mismatches: &[Mismatch], bound: Option<i64>) -> String {
        let Some(user) = mismatches.iter().find_map(|m| m.row.1.field("user")) else {
            return String::new();
        };
        let events: Vec<&Stamped> = self
            .events
            .iter()
            .filter(|s| s.event.user == user && bound.is_none_or(|b| s.effective < b))
            .collect();
        let mut text = format!(
            "  events of user {user} applied by then ({}, first 15; tick {} ms, lateness {} ms):\n",
            events.len(),
            self.params.tick_ms,
            self.params.lateness_ms
        );
        for s in events.iter().take(15) {
            let e = &s.event;
            text.push_str(&format!(
                "    line {}: ts {} effective {}{} type {} item {} session {} scroll {}\n",
                e.line,
                e.ts,
                s.effective,
                if s.late { " (late)" } else { "" },
                e.kind,
                e.item.as_deref().unwrap_or("-"),
                e.session.as_deref().unwrap_or("-"),
                e.scroll.map_or("-".to_string(), |s| s.to_string()),
            ));
        }
        text
    }
}

/// The oracle's state, brought forward event by event for `Oracle::check`. Rows are kept
/// per partition: per (view, user) for per-user views, per view for the others.
struct Checker<'o> {
    oracle: &'o Oracle,
    views: Vec<&'static View>,
    /// How many events (in effective-time order) the state includes.
    applied: usize,
    /// Per user, the applied events.
    user_events: HashMap<&'o str, Vec<&'o Event>>,
    partitions: HashMap<Partition, BTreeMap<JsonKey, Value>>,
}

/// (view, user), or (view, "") for a view that is not per user.
type Partition = (&'static str, String);

impl<'o> Checker<'o> {
    fn new(oracle: &'o Oracle, views: &[&str]) -> Checker<'o> {
        Checker {
            oracle,
            views: views.iter().map(|name| view(name)).collect(),
            applied: 0,
            user_events: HashMap::new(),
            partitions: HashMap::new(),
        }
    }

    fn expected(&self, (view_name, key): &RowId) -> Option<&Value> {
        let view = view(view_name);
        let owner = if view.per_user {
            key.field("user")?
        } else {
            String::new()
        };
        self.partitions.get(&(view.name, owner))?.get(key)
    }

    /// Adds events (indices into the oracle's events), recomputes the partitions they
    /// affect from scratch, and adds every row whose value changed to `dirty`.
    fn advance(&mut self, new_events: &[usize], dirty: &mut BTreeSet<RowId>) {
        if new_events.is_empty() {
            return;
        }
        let mut users = BTreeSet::new();
        for &i in new_events {
            let event = &self.oracle.events[i].event;
            self.user_events.entry(&event.user).or_default().push(event);
            users.insert(event.user.as_str());
        }
        for view in self.views.clone() {
            if view.per_user {
                for user in &users {
                    let rows = (view.compute)(&self.user_events[user], &self.oracle.params);
                    self.replace((view.name, user.to_string()), rows, dirty);
                }
            } else {
                let all: Vec<&Event> = self.user_events.values().flatten().copied().collect();
                let rows = (view.compute)(&all, &self.oracle.params);
                self.replace((view.name, String::new()), rows, dirty);
            }
        }
    }

    fn replace(&mut self, partition: Partition, rows: Rows, dirty: &mut BTreeSet<RowId>) {
        let new: BTreeMap<JsonKey, Value> = rows
            .into_iter()
            .map(|(key, value)| (JsonKey::new(&key), value))
            .collect();
        let old = self.partitions.remove(&partition).unwrap_or_default();
        let view = partition.0.to_string();
        for (key, value) in &old {
            if new.get(key) != Some(value) {
                dirty.insert((view.clone(), key.clone()));
            }
        }
        for (key, value) in &new {
            if old.get(key) != Some(value) {
                dirty.insert((view.clone(), key.clone()));
            }
        }
        self.partitions.insert(partition, new);
    }
}
