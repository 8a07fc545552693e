//! The batch reference (DESIGN.md §8): every view computed from scratch in plain Rust, from
//! the semantics briefs (issue 2: events, time, sessions, scores; issue 3: windows,
//! engagement, implicit feedback, affinity, features), with no timely or differential.
//!
//! - `parse_event`: which lines are events, and what their fields mean;
//! - `parse_config`, `Catalog::parse`: the run's config (TOML) and catalog (JSON lines);
//! - `stamp_effective_times`: the time at which the engine applies each event (tick,
//!   watermark, late events applied at the watermark);
//! - `views_at`: every per-user view at a time T, from the events in the window at T
//!   (`sessions`, `scores`, `affinity`, `features`, and the model views);
//! - `sequences::views_at`: the views over all users' sessions (issue 5: `transitions`,
//!   `next`, `paths`, `funnel`);
//! - `recs::views_at`: item similarity and recommendations (issue 5: `similar`, `recs`),
//!   which read every user's scores, the `next` view and the models;
//! - `experiments::views_at`: the `experiments` view (cumulative, no window) and the
//!   assignment of users to variants, which `recs` also reads;
//! - `Oracle`: the views after any progress line (T = P - 1) and at the end (T = the last
//!   effective time), and the check of an engine run against them.
//!
//! Include it together with `tests/common` (`mod common; mod oracle;`).
#![allow(dead_code)]

use crate::common::{
    Checkpoint, Granularity, JsonKey, Mismatch, Output, RowId, State, StateFold, compare_row,
    describe_mismatches,
};
use serde_json::{Map, Value, json};
use std::collections::{BTreeMap, BTreeSet, HashMap};

pub mod check;
pub mod experiments;
pub mod models;
pub mod recs;
pub mod sequences;

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
    /// The recommendation list the event came from; `None` when absent, null or empty
    /// (as for `session`).
    pub rec: Option<String>,
    /// The recommended items an impression showed (`items`, an array of strings; empty
    /// strings dropped; empty when absent or null).
    pub items: Vec<String>,
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
    let rec = optional_string("rec")?.filter(|s| !s.is_empty());
    let scroll = match optional("scroll") {
        None => None,
        Some(v) => Some(
            v.as_f64()
                .filter(|s| (0.0..=1.0).contains(s))
                .ok_or_else(|| format!("\"scroll\" {v} is not a number in 0..1"))?,
        ),
    };
    let items = match optional("items") {
        None => Vec::new(),
        Some(Value::Array(list)) if list.iter().all(Value::is_string) => list
            .iter()
            .filter_map(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
        Some(_) => return Err("\"items\" must be an array of strings".into()),
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
        rec,
        items,
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

impl Event {
    /// The event carries a `rec` field: a non-empty string (`"rec":""` and `"rec":null`
    /// count as absent, like an empty `session`; a `rec` that is not a string makes the
    /// line bad).
    pub fn has_rec(&self) -> bool {
        self.rec.is_some()
    }

    /// `scroll` in the engine's fixed point, ten-thousandths (rounded half away from 0).
    pub fn scroll_e4(&self) -> Option<i64> {
        self.scroll.map(|s| (s * 10_000.0).round() as i64)
    }
}

// ---------------------------------------------------------------------------------------
// Run parameters: config (TOML) and catalog
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

/// One day in ms (recency windows are `N` days).
pub const DAY_MS: i64 = 86_400_000;

/// A configured number `x` in fixed point: `round(x * 1000)` (half away from zero).
pub fn to_milli(x: f64) -> i64 {
    (x * 1000.0).round() as i64
}

/// Intent weight per event type, in thousandths (the engine's fixed point). Types without
/// a weight weigh 0.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    milli: BTreeMap<String, i64>,
    /// The names under `weights.custom` (types the engine does not know).
    custom: BTreeSet<String>,
}

impl Default for Weights {
    /// The brief's defaults: click 1, add_to_cart 3, purchase 5, wishlist 2, bookmark 2,
    /// share 2, comment 1, video_play 1, everything else 0.
    fn default() -> Weights {
        let mut weights = Weights {
            milli: BTreeMap::new(),
            custom: BTreeSet::new(),
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
        self.milli.insert(kind.to_string(), to_milli(weight));
    }

    pub fn milli(&self, kind: &str) -> i64 {
        self.milli.get(kind).copied().unwrap_or(0)
    }

    /// A known event type or a name under `weights.custom`.
    pub fn names_type(&self, kind: &str) -> bool {
        KNOWN_TYPES.contains(&kind) || self.custom.contains(kind)
    }

    /// Defaults overridden by the `[weights]` table of a config file:
    /// `click = 2`, `page_view = 0.5`, `custom = { newsletter_signup = 4 }`.
    pub fn from_config(toml_text: &str) -> Weights {
        parse_config(toml_text)
            .unwrap_or_else(|e| panic!("test config: {e}"))
            .weights
    }
}

/// `[engagement]`: which sessions are passive, active or high intent.
#[derive(Clone, Debug, PartialEq)]
pub struct Engagement {
    /// Event types that make a session `high_intent` (and are counted in `high_intent`).
    pub high_intent: Vec<String>,
    /// Event types that make a session `active`.
    pub active: Vec<String>,
    /// A session scrolled at least this deep is `active`.
    pub passive_max_scroll: f64,
}

impl Default for Engagement {
    fn default() -> Engagement {
        let names = |list: &[&str]| list.iter().map(|s| s.to_string()).collect();
        Engagement {
            high_intent: names(&["add_to_cart", "purchase"]),
            active: names(&["comment", "share", "wishlist", "bookmark", "form_submit"]),
            passive_max_scroll: 0.5,
        }
    }
}

/// `[feedback]`: implicit feedback (dwell, quick exits, bounces, rejected items).
#[derive(Clone, Debug, PartialEq)]
pub struct Feedback {
    pub long_dwell_ms: u64,
    pub long_dwell_boost_milli: i64,
    pub quick_exit_ms: u64,
    pub quick_exit_penalty_milli: i64,
    pub bounce_ms: u64,
    pub rejected_min_users: usize,
    pub rejected_penalty_milli: i64,
}

impl Default for Feedback {
    fn default() -> Feedback {
        Feedback {
            long_dwell_ms: 120_000,
            long_dwell_boost_milli: 1000,
            quick_exit_ms: 10_000,
            quick_exit_penalty_milli: 1000,
            bounce_ms: 10_000,
            rejected_min_users: 3,
            rejected_penalty_milli: 2000,
        }
    }
}

/// One stacked boost window: an event adds `trunc(c * extra)` more while `T < t + span_ms`.
#[derive(Clone, Debug, PartialEq)]
pub struct Boost {
    pub span_ms: i64,
    pub extra_milli: i64,
}

/// `[windows]`
#[derive(Clone, Debug, PartialEq)]
pub struct Windows {
    /// The main window W: an event is in the views from t to t + W (exclusive).
    pub span_ms: i64,
    /// `active_<N>d` features.
    pub recency_days: Vec<i64>,
    pub boost: Vec<Boost>,
}

impl Default for Windows {
    fn default() -> Windows {
        Windows {
            span_ms: 30 * DAY_MS,
            recency_days: vec![1, 7, 30],
            boost: Vec::new(),
        }
    }
}

/// A new derived session starts after more than 30 minutes without events (default of
/// `[sessions] inactivity_gap_ms`).
pub const SESSION_GAP_MS: i64 = 30 * 60 * 1000;

/// Everything a config file sets.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub weights: Weights,
    pub engagement: Engagement,
    pub feedback: Feedback,
    pub windows: Windows,
    /// `[sessions] inactivity_gap_ms`
    pub session_gap_ms: i64,
    pub sequences: sequences::Sequences,
    /// `[similar]`
    pub similar: recs::Similar,
    /// `[recs]`
    pub recs: recs::Recs,
    /// `[rules]`: the content rule of each segment name (the defaults, overridden by name).
    pub rules: BTreeMap<String, recs::Rule>,
    /// `[[experiments]]`, in config order.
    pub experiments: Vec<experiments::Experiment>,
}

impl Default for Config {
    fn default() -> Config {
        Config {
            weights: Weights::default(),
            engagement: Engagement::default(),
            feedback: Feedback::default(),
            windows: Windows::default(),
            session_gap_ms: SESSION_GAP_MS,
            sequences: sequences::Sequences::default(),
            similar: recs::Similar::default(),
            recs: recs::Recs::default(),
            rules: recs::default_rules(),
            experiments: Vec::new(),
        }
    }
}

/// Parses a config file (semantics brief "config"): every key optional; an unknown table or
/// key, or a bad value, is an error that names it (`feedback.bounce_ms: …`).
pub fn parse_config(toml_text: &str) -> Result<Config, String> {
    let root: toml::Table = toml::from_str(toml_text).map_err(|e| format!("not TOML: {e}"))?;
    let mut config = Config::default();
    let table = |name: &str| -> Result<Option<&toml::Table>, String> {
        match root.get(name) {
            None => Ok(None),
            Some(toml::Value::Table(t)) => Ok(Some(t)),
            Some(_) => Err(format!("{name}: not a table")),
        }
    };
    let tables = [
        "weights",
        "engagement",
        "feedback",
        "windows",
        "sessions",
        "sequences",
        "similar",
        "recs",
        "rules",
        "experiments",
    ];
    for name in root.keys() {
        if !tables.contains(&name.as_str()) {
            return Err(format!(
                "{name}: unknown table (the oracle knows [weights], [engagement], [feedback], [windows], [sessions], [sequences], [similar], [recs], [rules], [[experiments]])"
            ));
        }
    }
    if let Some(value) = root.get("experiments") {
        config.experiments = experiments::parse_experiments(value)?;
    }
    // [weights] first: [engagement] may name its custom types.
    if let Some(weights) = table("weights")? {
        for (name, value) in weights {
            let key = format!("weights.{name}");
            if name == "custom" {
                let toml::Value::Table(custom) = value else {
                    return Err(format!("{key}: not a table"));
                };
                for (kind, w) in custom {
                    let key = format!("weights.custom.{kind}");
                    if KNOWN_TYPES.contains(&kind.as_str()) {
                        return Err(format!("{key}: {kind} is a built-in type"));
                    }
                    config.weights.set(kind, number(&key, w)?);
                    config.weights.custom.insert(kind.clone());
                }
            } else if KNOWN_TYPES.contains(&name.as_str()) {
                config.weights.set(name, number(&key, value)?);
            } else {
                return Err(format!("{key}: unknown key"));
            }
        }
    }
    if let Some(sessions) = table("sessions")? {
        for (name, value) in sessions {
            let key = format!("sessions.{name}");
            match name.as_str() {
                "inactivity_gap_ms" => config.session_gap_ms = integer(&key, value, 1)?,
                _ => return Err(format!("{key}: unknown key")),
            }
        }
    }
    if let Some(table) = table("sequences")? {
        sequences::parse_table(table, &mut config.sequences)?;
    }
    if let Some(table) = table("similar")? {
        recs::parse_similar(table, &mut config.similar)?;
    }
    if let Some(table) = table("recs")? {
        recs::parse_recs(table, &mut config.recs)?;
    }
    if let Some(table) = table("rules")? {
        recs::parse_rules(table, &mut config.rules)?;
    }
    if let Some(engagement) = table("engagement")? {
        for (name, value) in engagement {
            let key = format!("engagement.{name}");
            let e = &mut config.engagement;
            match name.as_str() {
                "high_intent" => e.high_intent = type_list(&key, value, &config.weights)?,
                "active" => e.active = type_list(&key, value, &config.weights)?,
                "passive_max_scroll" => {
                    let x = number(&key, value)?;
                    if !(0.0..=1.0).contains(&x) {
                        return Err(format!("{key}: {x} is not in [0, 1]"));
                    }
                    e.passive_max_scroll = x;
                }
                _ => return Err(format!("{key}: unknown key")),
            }
        }
    }
    if let Some(feedback) = table("feedback")? {
        for (name, value) in feedback {
            let key = format!("feedback.{name}");
            let f = &mut config.feedback;
            match name.as_str() {
                "long_dwell_ms" => f.long_dwell_ms = integer(&key, value, 0)? as u64,
                "long_dwell_boost" => f.long_dwell_boost_milli = to_milli(number(&key, value)?),
                "quick_exit_ms" => f.quick_exit_ms = integer(&key, value, 0)? as u64,
                "quick_exit_penalty" => f.quick_exit_penalty_milli = to_milli(number(&key, value)?),
                "bounce_ms" => f.bounce_ms = integer(&key, value, 0)? as u64,
                "rejected_min_users" => f.rejected_min_users = integer(&key, value, 1)? as usize,
                "rejected_penalty" => f.rejected_penalty_milli = to_milli(number(&key, value)?),
                _ => return Err(format!("{key}: unknown key")),
            }
        }
    }
    if let Some(windows) = table("windows")? {
        for (name, value) in windows {
            let key = format!("windows.{name}");
            let w = &mut config.windows;
            match name.as_str() {
                "span_ms" => w.span_ms = integer(&key, value, 1)?,
                "recency_days" => {
                    let toml::Value::Array(days) = value else {
                        return Err(format!("{key}: not a list"));
                    };
                    w.recency_days = days
                        .iter()
                        .map(|d| integer(&key, d, 1))
                        .collect::<Result<_, _>>()?;
                    // each N names a feature `active_<N>d`
                    let distinct: BTreeSet<i64> = w.recency_days.iter().copied().collect();
                    if distinct.len() != w.recency_days.len() {
                        return Err(format!("{key}: a number of days is listed twice"));
                    }
                }
                "boost" => {
                    let toml::Value::Array(boosts) = value else {
                        return Err(format!("{key}: not a list"));
                    };
                    w.boost.clear();
                    for b in boosts {
                        let toml::Value::Table(b) = b else {
                            return Err(format!("{key}: an element is not a table"));
                        };
                        for name in b.keys() {
                            if name != "span_ms" && name != "extra" {
                                return Err(format!("{key}.{name}: unknown key"));
                            }
                        }
                        let field = |name: &str| {
                            b.get(name).ok_or_else(|| format!("{key}.{name}: missing"))
                        };
                        w.boost.push(Boost {
                            span_ms: integer(&format!("{key}.span_ms"), field("span_ms")?, 1)?,
                            extra_milli: to_milli(number(
                                &format!("{key}.extra"),
                                field("extra")?,
                            )?),
                        });
                    }
                }
                _ => return Err(format!("{key}: unknown key")),
            }
        }
    }
    Ok(config)
}

/// An integer or a float (finite).
fn number(key: &str, value: &toml::Value) -> Result<f64, String> {
    match value {
        toml::Value::Integer(i) => Ok(*i as f64),
        toml::Value::Float(f) if f.is_finite() => Ok(*f),
        other => Err(format!("{key}: {other} is not a number")),
    }
}

/// An integer >= `min` (times in ms, counts, days: floats are not accepted).
fn integer(key: &str, value: &toml::Value, min: i64) -> Result<i64, String> {
    match value {
        toml::Value::Integer(i) if *i >= min => Ok(*i),
        other => Err(format!("{key}: {other} is not an integer >= {min}")),
    }
}

/// A list of event type names, each a known type or a name in `weights.custom`.
fn type_list(key: &str, value: &toml::Value, weights: &Weights) -> Result<Vec<String>, String> {
    let toml::Value::Array(list) = value else {
        return Err(format!("{key}: not a list"));
    };
    list.iter()
        .map(|v| match v {
            toml::Value::String(kind) if weights.names_type(kind) => Ok(kind.clone()),
            toml::Value::String(kind) => Err(format!(
                "{key}: {kind:?} is neither a known event type nor in weights.custom"
            )),
            other => Err(format!("{key}: {other} is not a string")),
        })
        .collect()
}

/// The catalog (`--catalog`): item → category, kind and premium flag. A line is an item iff it is a JSON object
/// with a non-empty string `item`, a non-empty string `category` and a `kind` (one of
/// product/article/guide/offer), and `price`, `premium`, when present and not null, are a
/// non-negative number and a boolean. The first such line for an item id
/// wins; a later one is a bad line ("duplicate catalog item"); a bad line claims no id.
/// The catalog holds at every time (it is read before any event applies).
#[derive(Clone, Debug, Default)]
pub struct Catalog {
    pub category: HashMap<String, String>,
    /// `product`, `article`, `guide` or `offer`
    pub kind: HashMap<String, String>,
    /// The items whose `premium` is `true` (absent or null counts as `false`).
    pub premium: BTreeSet<String>,
    /// (line number, reason)
    pub rejected: Vec<(usize, String)>,
    /// The text it was parsed from (for `--catalog FILE`).
    pub text: Option<String>,
}

impl Catalog {
    pub fn parse(text: &str) -> Catalog {
        let mut catalog = Catalog {
            text: Some(text.to_string()),
            ..Catalog::default()
        };
        for (i, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let parsed = serde_json::from_str::<Value>(line)
                .map_err(|e| format!("not JSON: {e}"))
                .and_then(|v| {
                    let string = |name: &str| match v.get(name) {
                        Some(Value::String(s)) if !s.is_empty() => Ok(s.clone()),
                        _ => Err(format!("\"{name}\" is missing or not a non-empty string")),
                    };
                    let present = |name: &str| v.get(name).filter(|x| !x.is_null());
                    let kind = present("kind").ok_or("\"kind\" is missing")?;
                    if !["product", "article", "guide", "offer"]
                        .iter()
                        .any(|k| kind == k)
                    {
                        return Err(format!("\"kind\" {kind} is not a known kind"));
                    }
                    if present("price").is_some_and(|p| !p.as_f64().is_some_and(|p| p >= 0.0)) {
                        return Err("\"price\" is not a non-negative number".into());
                    }
                    if present("premium").is_some_and(|p| !p.is_boolean()) {
                        return Err("\"premium\" is not a boolean".into());
                    }
                    let kind = kind.as_str().unwrap().to_string();
                    let premium = present("premium").is_some_and(|p| p == true);
                    Ok((string("item")?, string("category")?, kind, premium))
                });
            match parsed {
                Ok((item, ..)) if catalog.category.contains_key(&item) => catalog
                    .rejected
                    .push((i + 1, "duplicate catalog item".into())),
                Ok((item, category, kind, premium)) => {
                    if premium {
                        catalog.premium.insert(item.clone());
                    }
                    catalog.kind.insert(item.clone(), kind);
                    catalog.category.insert(item, category);
                }
                Err(why) => catalog.rejected.push((i + 1, why)),
            }
        }
        catalog
    }
}

/// The parameters of one run that the views depend on.
#[derive(Clone, Debug)]
pub struct Params {
    pub tick_ms: i64,
    pub lateness_ms: i64,
    pub weights: Weights,
    pub engagement: Engagement,
    pub feedback: Feedback,
    pub windows: Windows,
    pub session_gap_ms: i64,
    /// `[sequences]`
    pub sequences: sequences::Sequences,
    /// `[similar]`
    pub similar: recs::Similar,
    /// `[recs]`
    pub recs: recs::Recs,
    /// `[rules]`
    pub rules: BTreeMap<String, recs::Rule>,
    /// `[[experiments]]`
    pub experiments: Vec<experiments::Experiment>,
    pub catalog: Catalog,
    /// The config file text the run gets with `--config`, if any.
    pub config_text: Option<String>,
    /// Trained models the run loads with `--model`.
    pub models: models::Models,
}

impl Default for Params {
    /// `intentflow run` without flags: `--tick-ms 1000 --lateness-ms 5000`, default
    /// config, no catalog.
    fn default() -> Params {
        Params::from_config(Config::default(), None)
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

    fn from_config(config: Config, text: Option<String>) -> Params {
        Params {
            tick_ms: 1000,
            lateness_ms: 5000,
            weights: config.weights,
            engagement: config.engagement,
            feedback: config.feedback,
            windows: config.windows,
            session_gap_ms: config.session_gap_ms,
            sequences: config.sequences,
            similar: config.similar,
            recs: config.recs,
            rules: config.rules,
            experiments: config.experiments,
            catalog: Catalog::default(),
            config_text: text,
            models: models::Models::default(),
        }
    }

    pub fn times(self, tick_ms: i64, lateness_ms: i64) -> Params {
        Params {
            tick_ms,
            lateness_ms,
            ..self
        }
    }

    /// Only the weights (the config file, if any, is kept as it is).
    pub fn with_weights(self, weights: Weights) -> Params {
        Params { weights, ..self }
    }

    /// Everything from a config file (which the engine gets as `--config`); panics if the
    /// oracle finds it invalid.
    pub fn with_config(self, toml_text: &str) -> Params {
        let config = parse_config(toml_text).unwrap_or_else(|e| panic!("test config: {e}"));
        Params {
            tick_ms: self.tick_ms,
            lateness_ms: self.lateness_ms,
            catalog: self.catalog,
            ..Params::from_config(config, Some(toml_text.to_string()))
        }
    }

    /// The catalog (which the engine gets as `--catalog`); its bad lines are in
    /// `catalog.rejected`.
    pub fn with_catalog(self, jsonl: &str) -> Params {
        Params {
            catalog: Catalog::parse(jsonl),
            ..self
        }
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
// Views at a time T (semantics brief for issue 3)
// ---------------------------------------------------------------------------------------

/// Rows of one view: (key, value), both JSON objects.
pub type Rows = Vec<(Value, Value)>;

/// The per-user views the oracle computes (`views_at`). Every row's key has a `user`, and
/// the rows of a user depend only on that user's events, except through the set of rejected
/// items. The views whose rows aggregate over all users are in `GLOBAL_VIEW_NAMES`.
pub const VIEW_NAMES: &[&str] = &[
    "sessions",
    "scores",
    "affinity",
    "features",
    "segments",
    "propensity",
    "als",
];

/// The views whose rows aggregate over all users (keys without `user`): a row may depend
/// on any user's events, so the checker recomputes them in full (`sequences::views_at`,
/// `recs::views_at`, `experiments::views_at`).
pub const GLOBAL_VIEW_NAMES: &[&str] = &[
    "transitions",
    "next",
    "paths",
    "funnel",
    "similar",
    "recs",
    "experiments",
];

/// `t <= now < t + span`: an event with effective time `t` is in a window of `span` ms at
/// `now`.
pub fn in_window(t: i64, now: i64, span_ms: i64) -> bool {
    t <= now && now < t.saturating_add(span_ms)
}

/// The event is in the main window at `now`.
pub fn in_main_window(s: &Stamped, now: i64, params: &Params) -> bool {
    in_window(s.effective, now, params.windows.span_ms)
}

/// The event is in the main window or in a recency window at `now`: its user has a
/// `features` row.
pub fn keeps_user_alive(s: &Stamped, now: i64, params: &Params) -> bool {
    in_main_window(s, now, params)
        || params
            .windows
            .recency_days
            .iter()
            .any(|n| in_window(s.effective, now, n.saturating_mul(DAY_MS)))
}

/// One row of `sessions`.
#[derive(Clone, Debug, PartialEq)]
pub struct Session {
    pub user: String,
    pub id: String,
    pub start: i64,
    pub end: i64,
    pub events: usize,
    pub page_views: usize,
    pub high_intent: usize,
    pub purchases: usize,
    pub dwell_ms: u64,
    /// The deepest scroll, in ten-thousandths (0 without scroll).
    pub max_scroll_e4: i64,
    pub bounce: bool,
    /// `passive`, `active` or `high_intent`
    pub engagement: &'static str,
}

impl Session {
    pub fn key(&self) -> Value {
        json!({"user": self.user, "session": self.id})
    }

    pub fn value(&self) -> Value {
        json!({
            "start": self.start,
            "end": self.end,
            "events": self.events,
            "page_views": self.page_views,
            "high_intent": self.high_intent,
            "purchases": self.purchases,
            "dwell_ms": self.dwell_ms,
            "max_scroll": fixed_point(self.max_scroll_e4, 10_000),
            "bounce": self.bounce,
            "engagement": self.engagement,
        })
    }
}

/// Sessions of a set of events (already cut to the window): events with a client session
/// id belong to (user, id); a user's other events, by time, are cut into sessions at gaps
/// over `params.session_gap_ms`, each named `auto-<start ms>`.
pub fn session_list(events: &[&Event], params: &Params) -> Vec<Session> {
    session_groups(events, params)
        .into_iter()
        .map(|((user, id), events)| summarize_session(user, id, &events, params))
        .collect()
}

/// The events of each session of `session_list`, by (user, session id): in input order
/// for a client session id, by `ts` (input order on ties) for a derived one.
pub fn session_groups<'e>(
    events: &[&'e Event],
    params: &Params,
) -> BTreeMap<(&'e str, String), Vec<&'e Event>> {
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
        let parts: Vec<&[&Event]> = events
            .chunk_by(|a, b| b.ts - a.ts <= params.session_gap_ms)
            .collect();
        for session in parts {
            let id = format!("auto-{}", session[0].ts);
            let clash = by_session.insert((user, id.clone()), session.to_vec());
            assert!(
                clash.is_none(),
                "user {user} sends session id {id:?}, which is also a derived session's id; the brief leaves this case open"
            );
        }
    }
    by_session
}

fn summarize_session(user: &str, id: String, events: &[&Event], params: &Params) -> Session {
    let engagement = &params.engagement;
    let has_type = |kinds: &[String], e: &Event| kinds.contains(&e.kind);
    let count = |pred: &dyn Fn(&Event) -> bool| events.iter().filter(|e| pred(e)).count();
    let max_scroll_e4 = events
        .iter()
        .filter_map(|e| e.scroll_e4())
        .max()
        .unwrap_or(0);
    let start = events.iter().map(|e| e.ts).min().unwrap();
    let end = events.iter().map(|e| e.ts).max().unwrap();
    let page_views = count(&|e| e.kind == "page_view");
    let high_intent = count(&|e| has_type(&engagement.high_intent, e));
    let dwell_ms: u64 = events.iter().filter_map(|e| e.dwell_ms).sum();
    let bounce_ms = params.feedback.bounce_ms;
    let bounce = page_views == 1 && ((end - start) as u64) < bounce_ms && dwell_ms < bounce_ms;
    let engagement = if high_intent > 0 {
        "high_intent"
    } else if count(&|e| has_type(&engagement.active, e)) > 0
        || max_scroll_e4 >= (engagement.passive_max_scroll * 10_000.0).round() as i64
    {
        "active"
    } else {
        "passive"
    };
    Session {
        user: user.to_string(),
        id,
        start,
        end,
        events: events.len(),
        page_views,
        high_intent,
        purchases: count(&|e| e.kind == "purchase"),
        dwell_ms,
        max_scroll_e4,
        bounce,
        engagement,
    }
}

/// A page view or exit with `dwell_ms` present and below `quick_exit_ms`.
pub fn is_quick_exit(e: &Event, params: &Params) -> bool {
    matches!(e.kind.as_str(), "page_view" | "exit")
        && e.dwell_ms
            .is_some_and(|d| d < params.feedback.quick_exit_ms)
}

/// `c(e)` in thousandths: the type's weight, plus the long-dwell boost, minus the
/// quick-exit penalty.
pub fn contribution_milli(e: &Event, params: &Params) -> i64 {
    let feedback = &params.feedback;
    let mut c = params.weights.milli(&e.kind);
    if e.dwell_ms.is_some_and(|d| d > feedback.long_dwell_ms) {
        c += feedback.long_dwell_boost_milli;
    }
    if is_quick_exit(e, params) {
        c -= feedback.quick_exit_penalty_milli;
    }
    c
}

/// `c(e)` plus, for each boost window still open at `now`, `trunc(c * extra)` (integer
/// division truncating toward zero), in thousandths.
pub fn boosted_milli(s: &Stamped, now: i64, params: &Params) -> i64 {
    let c = contribution_milli(&s.event, params);
    let extra: i64 = params
        .windows
        .boost
        .iter()
        .filter(|b| in_window(s.effective, now, b.span_ms))
        .map(|b| (c as i128 * b.extra_milli as i128 / 1000) as i64)
        .sum();
    c + extra
}

/// Items with at least `rejected_min_users` distinct users having, in the main window at
/// `now`, a quick exit on the item that carries a `rec` field (seed 4b).
pub fn rejected_items<'a>(
    events: impl IntoIterator<Item = &'a Stamped>,
    now: i64,
    params: &Params,
) -> BTreeSet<String> {
    let mut users: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    for s in events {
        let e = &s.event;
        if let Some(item) = &e.item
            && in_main_window(s, now, params)
            && is_rejection(e, params)
        {
            users.entry(item).or_default().insert(&e.user);
        }
    }
    users
        .into_iter()
        .filter(|(_, users)| users.len() >= params.feedback.rejected_min_users)
        .map(|(item, _)| item.to_string())
        .collect()
}

/// An event that counts towards rejecting its item (when in the window).
pub fn is_rejection(e: &Event, params: &Params) -> bool {
    e.item.is_some() && is_quick_exit(e, params) && e.has_rec()
}

/// `scores` in thousandths, per (user, item), over the events in the main window at `now`;
/// only the rows that exist (base != 0 and score != 0).
pub fn score_milli(
    events: &[&Stamped],
    now: i64,
    params: &Params,
    rejected: &BTreeSet<String>,
) -> BTreeMap<(String, String), i64> {
    let mut base: BTreeMap<(String, String), i64> = BTreeMap::new();
    for s in events {
        if let Some(item) = &s.event.item
            && in_main_window(s, now, params)
        {
            *base
                .entry((s.event.user.clone(), item.clone()))
                .or_default() += boosted_milli(s, now, params);
        }
    }
    base.into_iter()
        .filter(|(_, b)| *b != 0)
        .map(|((user, item), b)| {
            let penalty = if rejected.contains(&item) {
                params.feedback.rejected_penalty_milli
            } else {
                0
            };
            ((user, item), b - penalty)
        })
        .filter(|(_, score)| *score != 0)
        .collect()
}

/// `affinity` in thousandths, per (user, category): the sum of the user's scores rows on
/// items of the category; items not in the catalog are ignored; only non-zero sums.
pub fn affinity_milli(
    scores: &BTreeMap<(String, String), i64>,
    catalog: &Catalog,
) -> BTreeMap<(String, String), i64> {
    let mut sums: BTreeMap<(String, String), i64> = BTreeMap::new();
    for ((user, item), score) in scores {
        if let Some(category) = catalog.category.get(item) {
            *sums.entry((user.clone(), category.clone())).or_default() += score;
        }
    }
    sums.retain(|_, sum| *sum != 0);
    sums
}

/// `round half up (10000 * part / whole)` in ten-thousandths; 0 if `whole` is 0.
pub fn share_ten_thousandths(part: usize, whole: usize) -> i64 {
    if whole == 0 {
        return 0;
    }
    let (part, whole) = (part as i64, whole as i64);
    (20_000 * part + whole) / (2 * whole)
}

/// `sum / count` rounded half up; 0 if `count` is 0.
pub fn mean_half_up(sum: i64, count: i64) -> i64 {
    if count == 0 {
        return 0;
    }
    (2 * sum + count) / (2 * count)
}

/// The `features` row of one user at `now`, or `None` if the user has no event in the
/// main window nor in any recency window. `events` are the user's events (any times).
pub fn features_value(
    events: &[&Stamped],
    sessions: &[&Session],
    categories: usize,
    now: i64,
    params: &Params,
) -> Option<Value> {
    if !events.iter().any(|s| keeps_user_alive(s, now, params)) {
        return None;
    }
    let n = sessions.len();
    let total_ms: i64 = sessions.iter().map(|s| s.end - s.start).sum();
    let engaged = sessions
        .iter()
        .filter(|s| s.engagement != "passive")
        .count();
    let bounced = sessions.iter().filter(|s| s.bounce).count();
    let mut value = json!({
        "sessions": n,
        "avg_session_ms": if n == 0 { 0 } else { total_ms.div_euclid(n as i64) },
        "page_views": sessions.iter().map(|s| s.page_views).sum::<usize>(),
        "high_intent": sessions.iter().map(|s| s.high_intent).sum::<usize>(),
        "purchases": sessions.iter().map(|s| s.purchases).sum::<usize>(),
        "active_share": fixed_point(share_ten_thousandths(engaged, n), 10_000),
        "bounce_rate": fixed_point(share_ten_thousandths(bounced, n), 10_000),
        "categories": categories,
        "avg_dwell_ms": if n == 0 { 0 } else { sessions.iter().map(|s| s.dwell_ms).sum::<u64>() / n as u64 },
        "avg_scroll": fixed_point(mean_half_up(sessions.iter().map(|s| s.max_scroll_e4).sum(), n as i64), 10_000),
    });
    for days in &params.windows.recency_days {
        let active = events
            .iter()
            .any(|s| in_window(s.effective, now, days.saturating_mul(DAY_MS)));
        value[format!("active_{days}d")] = json!(active);
    }
    Some(value)
}

/// A fixed-point integer as a JSON number (an integer when it is one).
pub fn fixed_point(units: i64, per_one: i64) -> Value {
    if units % per_one == 0 {
        json!(units / per_one)
    } else {
        json!(units as f64 / per_one as f64)
    }
}

/// Every view at `now` over `events` (any set of users; events with effective time after
/// `now` are ignored), given the items rejected at `now` (which depend on all users).
pub fn views_at(
    events: &[&Stamped],
    now: i64,
    params: &Params,
    rejected: &BTreeSet<String>,
) -> BTreeMap<&'static str, Rows> {
    let applied: Vec<&Stamped> = events
        .iter()
        .copied()
        .filter(|s| s.effective <= now)
        .collect();
    let window: Vec<&Event> = applied
        .iter()
        .filter(|s| in_main_window(s, now, params))
        .map(|s| &s.event)
        .collect();
    let sessions = session_list(&window, params);
    let scores = score_milli(&applied, now, params, rejected);
    let affinity = affinity_milli(&scores, &params.catalog);

    let mut by_user: BTreeMap<&str, Vec<&Stamped>> = BTreeMap::new();
    for s in &applied {
        by_user.entry(&s.event.user).or_default().push(s);
    }
    let features = by_user
        .iter()
        .filter_map(|(user, events)| {
            let own: Vec<&Session> = sessions.iter().filter(|s| s.user == *user).collect();
            let categories = affinity.keys().filter(|(u, _)| u == user).count();
            let value = features_value(events, &own, categories, now, params)?;
            Some((json!({ "user": user }), value))
        })
        .collect();

    let milli_rows = |rows: &BTreeMap<(String, String), i64>, field: &str| -> Rows {
        rows.iter()
            .map(|((user, x), milli)| {
                (
                    json!({"user": user, field: x}),
                    json!({"score": fixed_point(*milli, 1000)}),
                )
            })
            .collect()
    };
    let mut views = BTreeMap::from([
        (
            "sessions",
            sessions.iter().map(|s| (s.key(), s.value())).collect(),
        ),
        ("scores", milli_rows(&scores, "item")),
        ("affinity", milli_rows(&affinity, "category")),
    ]);
    if let Some(model) = &params.models.kmeans {
        views.insert("segments", models::segment_rows(model, &features));
    }
    if let Some(model) = &params.models.propensity {
        views.insert("propensity", models::propensity_rows(model, &features));
    }
    if let Some(model) = &params.models.als {
        views.insert(
            "als",
            models::als_rows(model, &scores, params.recs.als_candidates),
        );
    }
    views.insert("features", features);
    views
}

/// Checks that the oracle knows a view.
pub fn check_view_name(name: &str) {
    assert!(
        VIEW_NAMES.contains(&name) || GLOBAL_VIEW_NAMES.contains(&name),
        "the oracle has no view {name} (it has {VIEW_NAMES:?} and {GLOBAL_VIEW_NAMES:?})"
    );
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

    /// The greatest effective time of any event: the time of the final state.
    pub fn last_time(&self) -> Option<i64> {
        self.events.iter().map(|s| s.effective).max()
    }

    /// The time T whose state the engine shows after a progress line `bound` (`None`: the
    /// final `{"progress":null}`): `bound - 1`, but never after the last effective time,
    /// since changes after it are never printed. `None` when there are no events.
    pub fn time_of(&self, bound: Option<i64>) -> Option<i64> {
        let last = self.last_time()?;
        Some(bound.map_or(last, |b| (b - 1).min(last)))
    }

    /// The views after progress line `bound` (`None`: at the end), as the engine shows them.
    pub fn state(&self, views: &[&str], bound: Option<i64>) -> State {
        match self.time_of(bound) {
            Some(now) => self.state_at(views, now),
            None => State::new(),
        }
    }

    /// The views at time `now` exactly as the brief defines them (also after the last
    /// event: what the state would become if the input went on without events).
    pub fn state_at(&self, views: &[&str], now: i64) -> State {
        for name in views {
            check_view_name(name);
        }
        let events: Vec<&Stamped> = self.events.iter().collect();
        let mut all = BTreeMap::new();
        if views.iter().any(|v| VIEW_NAMES.contains(v)) {
            all.append(&mut views_at(
                &events,
                now,
                &self.params,
                &self.rejected_at(now),
            ));
        }
        if views
            .iter()
            .any(|v| sequences::SEQUENCE_VIEW_NAMES.contains(v))
        {
            all.append(&mut sequences::views_at(&events, now, &self.params));
        }
        if views.iter().any(|v| recs::RECS_VIEW_NAMES.contains(v)) {
            let mut cache = recs::Cache::default();
            all.append(&mut recs::views_at(&events, now, &self.params, &mut cache));
        }
        if views
            .iter()
            .any(|v| experiments::EXPERIMENT_VIEW_NAMES.contains(v))
        {
            all.append(&mut experiments::views_at(&events, now, &self.params));
        }
        let mut state = State::new();
        for (name, rows) in all {
            if !views.contains(&name) {
                continue;
            }
            for (key, value) in rows {
                state.insert((name.to_string(), JsonKey::new(&key)), (value, 1));
            }
        }
        state
    }

    /// The items rejected at `now`.
    pub fn rejected_at(&self, now: i64) -> BTreeSet<String> {
        rejected_items(&self.events, now, &self.params)
    }

    /// Each event's times at which it may change a view: when it enters (t), when it leaves
    /// the main window, a recency window or a boost window. Per entry: (time, user, the
    /// item whose rejection it may change).
    fn boundaries(&self) -> Vec<(i64, &str, Option<&str>)> {
        let w = &self.params.windows;
        let mut out = Vec::new();
        for s in &self.events {
            let e = &s.event;
            let t = s.effective;
            let item = e.item.as_deref().filter(|_| is_rejection(e, &self.params));
            out.push((t, e.user.as_str(), item));
            out.push((t.saturating_add(w.span_ms), &e.user, item));
            for n in &w.recency_days {
                out.push((t.saturating_add(n.saturating_mul(DAY_MS)), &e.user, None));
            }
            for b in &w.boost {
                out.push((t.saturating_add(b.span_ms), &e.user, None));
            }
        }
        out.sort();
        out
    }

    /// Every time (up to the last effective time) at which some view may change.
    pub fn change_times(&self) -> BTreeSet<i64> {
        let Some(last) = self.last_time() else {
            return BTreeSet::new();
        };
        self.boundaries()
            .into_iter()
            .map(|(t, _, _)| t)
            .filter(|t| *t <= last)
            .collect()
    }

    /// `change_times`, and for `similar` and `recs` among `views` also every multiple of
    /// `[similar] refresh_ms`, `[recs] shared_refresh_ms` and `[recs] popular_refresh_ms`
    /// from the first to the last effective time (when they read a newer state of all
    /// users; a period of 1 ms adds nothing).
    pub fn change_times_for(&self, views: &[&str]) -> BTreeSet<i64> {
        let mut times = self.change_times();
        if let (Some(first), Some(last)) = (times.first().copied(), self.last_time())
            && views.iter().any(|v| recs::RECS_VIEW_NAMES.contains(v))
        {
            for every in [
                self.params.similar.refresh_ms,
                self.params.recs.shared_refresh_ms,
                self.params.recs.popular_refresh_ms,
            ]
            .into_iter()
            .filter(|every| *every > 1)
            {
                let mut t = first.div_euclid(every) * every;
                while t <= last {
                    if t >= first {
                        times.insert(t);
                    }
                    t += every;
                }
            }
        }
        times
    }

    /// Checks an engine run against the oracle: at every checkpoint of `granularity` the
    /// engine's rows of `views` must equal the views at T = checkpoint - 1 (never after the
    /// last effective time), and at the end they must equal the views at the last
    /// effective time. With `Granularity::EveryTime` the replay also stops at every time
    /// the oracle expects a change (events entering and leaving windows; refreshes of
    /// `similar` and of the popularity behind `recs`).
    ///
    /// At each checkpoint the users whose rows may have changed (an event of theirs entered
    /// or left a window, or an item they touched became rejected or stopped being so) are
    /// recomputed from scratch and compared on the rows that changed on either side; the
    /// final state is also compared in full. The error is a short diff: the checkpoint,
    /// the first rows that differ, and the events of the first differing user.
    pub fn check(
        &self,
        output: &Output,
        views: &[&str],
        granularity: Granularity,
    ) -> Result<(), String> {
        for name in views {
            check_view_name(name);
        }
        let output = output.only_views(views);
        let mut checker = Checker::new(self, views);
        let mut step = |cp: Checkpoint, fold: &StateFold, touched: &BTreeSet<RowId>| {
            let now = self.time_of(cp.bound().map(|b| i64::try_from(b).unwrap()));
            let mut dirty = touched.clone();
            if let Some(now) = now {
                checker.advance_to(now, &mut dirty);
            }
            checker.add_global_rows(fold, touched, &mut dirty);
            let mismatches: Vec<Mismatch> = dirty
                .iter()
                .filter_map(|row| compare_row(row, checker.expected(row), fold.get(row)))
                .collect();
            if mismatches.is_empty() {
                return Ok(());
            }
            let applied = now.map_or(0, |now| {
                self.events.iter().filter(|s| s.effective <= now).count()
            });
            Err(format!(
                "engine and oracle disagree at {cp}, the state at T = {} ({applied} of {} events applied):\n{}{}",
                now.map_or("-".to_string(), |t| t.to_string()),
                self.events.len(),
                describe_mismatches(&mismatches, 6),
                self.describe_events(&mismatches, now)
            ))
        };
        match granularity {
            Granularity::Progress => output.replay(granularity, &mut step)?,
            Granularity::EveryTime => {
                let times = self
                    .change_times_for(views)
                    .into_iter()
                    .map(|t| u64::try_from(t).unwrap())
                    .collect();
                output.replay_at_times(&times, &mut step)?
            }
        }
        let expected = self.state(views, None);
        let actual = output.final_state();
        let mismatches = crate::common::compare_states(&expected, &actual);
        if !mismatches.is_empty() {
            return Err(format!(
                "final state differs from the oracle at the last effective time {}:\n{}{}",
                self.last_time().map_or("-".to_string(), |t| t.to_string()),
                describe_mismatches(&mismatches, 6),
                self.describe_events(&mismatches, self.last_time())
            ));
        }
        Ok(())
    }

    /// The events behind the first mismatches: those of the first mismatching row's user
    /// applied at `now`, and the sessions behind the first mismatching global row.
    fn describe_events(&self, mismatches: &[Mismatch], now: Option<i64>) -> String {
        let mut text = self.describe_user_events(mismatches, now);
        if let (Some(m), Some(now)) = (
            mismatches
                .iter()
                .find(|m| GLOBAL_VIEW_NAMES.contains(&m.row.0.as_str())),
            now,
        ) {
            let events: Vec<&Stamped> = self.events.iter().collect();
            text += &if recs::RECS_VIEW_NAMES.contains(&m.row.0.as_str()) {
                recs::describe(&m.row.0, &m.row.1.value(), &events, now, &self.params)
            } else if experiments::EXPERIMENT_VIEW_NAMES.contains(&m.row.0.as_str()) {
                experiments::describe(&m.row.1.value(), &events, now, &self.params)
            } else {
                sequences::describe_sessions(&m.row.0, &m.row.1.value(), &events, now, &self.params)
            };
        }
        text
    }

    /// The events of the first mismatching row's user that are applied at `now`.
    fn describe_user_events(&self, mismatches: &[Mismatch], now: Option<i64>) -> String {
        let Some(user) = mismatches.iter().find_map(|m| m.row.1.field("user")) else {
            return String::new();
        };
        let Some(now) = now else {
            return String::new();
        };
        let events: Vec<&Stamped> = self
            .events
            .iter()
            .filter(|s| s.event.user == user && s.effective <= now)
            .collect();
        let rejected = self.rejected_at(now);
        let mut text = format!(
            "  events of user {user} applied by T = {now} ({}, first 20; tick {} ms, lateness {} ms, window {} ms; rejected items then: {}):\n",
            events.len(),
            self.params.tick_ms,
            self.params.lateness_ms,
            self.params.windows.span_ms,
            if rejected.is_empty() {
                "none".to_string()
            } else {
                rejected.into_iter().collect::<Vec<_>>().join(",")
            }
        );
        for s in events.iter().take(20) {
            let e = &s.event;
            text.push_str(&format!(
                "    line {}: ts {} effective {}{}{} type {} item {} session {} scroll {} dwell {}{}\n",
                e.line,
                e.ts,
                s.effective,
                if s.late { " (late)" } else { "" },
                if in_main_window(s, now, &self.params) {
                    ""
                } else {
                    " (out of the window)"
                },
                e.kind,
                e.item.as_deref().unwrap_or("-"),
                e.session.as_deref().unwrap_or("-"),
                e.scroll.map_or("-".to_string(), |s| s.to_string()),
                e.dwell_ms.map_or("-".to_string(), |d| d.to_string()),
                e.rec.as_ref().map_or(String::new(), |r| format!(" rec {r}")),
            ));
        }
        text
    }
}

/// The oracle's state, brought forward in time for `Oracle::check`. Rows of per-user views
/// are kept per (view, user) and recomputed from scratch for the users whose events crossed
/// a window boundary, or who have events on an item whose rejection changed. Rows of global
/// views are recomputed in full whenever an event entered or left the main window (the
/// sequence views), or any event crossed any boundary or a refresh time passed (`similar`
/// and `recs`); `experiments` is updated for the users with an event that became
/// effective (it has no window), and all of them (the oracle's rows and the engine's) are compared again
/// whenever either side may have changed one.
struct Checker<'o> {
    oracle: &'o Oracle,
    views: Vec<&'static str>,
    /// The time of the current state (`None`: before any checkpoint).
    now: Option<i64>,
    /// Per user, all events (any time).
    user_events: HashMap<&'o str, Vec<&'o Stamped>>,
    /// Per item, the users with any event on it.
    item_users: HashMap<&'o str, BTreeSet<&'o str>>,
    /// Per item, the events that count towards rejecting it.
    item_rejections: HashMap<&'o str, Vec<&'o Stamped>>,
    /// Sorted (time, user, item whose rejection may change); `next` is the first not
    /// yet passed.
    boundaries: Vec<(i64, &'o str, Option<&'o str>)>,
    next: usize,
    rejected: BTreeSet<String>,
    partitions: HashMap<(&'static str, String), BTreeMap<JsonKey, Value>>,
    /// The checked views among `GLOBAL_VIEW_NAMES`.
    global_views: Vec<&'static str>,
    /// All their rows at `now`.
    global: BTreeMap<RowId, Value>,
    /// Sorted times at which an event enters or leaves the main window (the only times the
    /// global views may change); `next_window` is the first not yet passed.
    window_times: Vec<i64>,
    next_window: usize,
    /// The rows of global views the engine's output holds at the current checkpoint.
    engine_global: BTreeSet<RowId>,
    /// The states at refresh times behind `similar` and `recs`, kept while they hold.
    recs_cache: recs::Cache,
    /// `now` divided by `[similar] refresh_ms`, `[recs] shared_refresh_ms` and `[recs]
    /// popular_refresh_ms` when `similar` and `recs` were last computed.
    recs_refreshes: Option<(i64, i64, i64)>,
    /// Neither the oracle's nor the engine's rows of global views changed since they
    /// were all compared.
    global_compared: bool,
    /// (effective time, user) of every event, sorted, when `experiments` is checked;
    /// `next_effective` is the first not yet applied.
    effective_times: Vec<(i64, &'o str)>,
    next_effective: usize,
    /// The `experiments` view, updated user by user as their events become effective.
    experiments: experiments::State,
}

impl<'o> Checker<'o> {
    fn new(oracle: &'o Oracle, views: &[&str]) -> Checker<'o> {
        let mut user_events: HashMap<&str, Vec<&Stamped>> = HashMap::new();
        let mut item_users: HashMap<&str, BTreeSet<&str>> = HashMap::new();
        let mut item_rejections: HashMap<&str, Vec<&Stamped>> = HashMap::new();
        for s in &oracle.events {
            let e = &s.event;
            user_events.entry(&e.user).or_default().push(s);
            if let Some(item) = &e.item {
                item_users.entry(item).or_default().insert(&e.user);
                if is_rejection(e, &oracle.params) {
                    item_rejections.entry(item).or_default().push(s);
                }
            }
        }
        let global_views: Vec<&'static str> = GLOBAL_VIEW_NAMES
            .iter()
            .copied()
            .filter(|v| views.contains(v))
            .collect();
        let mut window_times = Vec::new();
        if !global_views.is_empty() {
            for s in &oracle.events {
                window_times.push(s.effective);
                window_times.push(s.effective.saturating_add(oracle.params.windows.span_ms));
            }
            window_times.sort_unstable();
        }
        let mut effective_times = Vec::new();
        if global_views.contains(&"experiments") {
            effective_times = oracle
                .events
                .iter()
                .map(|s| (s.effective, s.event.user.as_str()))
                .collect();
            effective_times.sort_unstable();
        }
        Checker {
            oracle,
            effective_times,
            next_effective: 0,
            experiments: experiments::State::new(&oracle.params),
            views: VIEW_NAMES
                .iter()
                .copied()
                .filter(|v| views.contains(v))
                .collect(),
            global_views,
            global: BTreeMap::new(),
            window_times,
            next_window: 0,
            engine_global: BTreeSet::new(),
            recs_cache: recs::Cache::default(),
            recs_refreshes: None,
            global_compared: false,
            now: None,
            user_events,
            item_users,
            item_rejections,
            boundaries: oracle.boundaries(),
            next: 0,
            rejected: BTreeSet::new(),
            partitions: HashMap::new(),
        }
    }

    fn expected(&self, row: &RowId) -> Option<&Value> {
        let (view_name, key) = row;
        if GLOBAL_VIEW_NAMES.contains(&view_name.as_str()) {
            return self.global.get(row);
        }
        let user = key.field("user")?;
        let view: &'static str = VIEW_NAMES.iter().find(|v| **v == view_name)?;
        self.partitions.get(&(view, user))?.get(key)
    }

    /// Moves the state to `now` (not before the current time), adding every row whose
    /// value changed to `dirty`.
    fn advance_to(&mut self, now: i64, dirty: &mut BTreeSet<RowId>) {
        if self.now.is_some_and(|t| now <= t) {
            return;
        }
        self.now = Some(now);
        let mut users: BTreeSet<&str> = BTreeSet::new();
        let mut items: BTreeSet<&str> = BTreeSet::new();
        while let Some(&(t, user, item)) = self.boundaries.get(self.next) {
            if t > now {
                break;
            }
            users.insert(user);
            items.extend(item);
            self.next += 1;
        }
        let params = &self.oracle.params;
        let window_changed = self.window_times[self.next_window..]
            .iter()
            .take_while(|t| **t <= now)
            .count();
        self.next_window += window_changed;
        let checked = |names: &[&str]| self.global_views.iter().any(|v| names.contains(v));
        let mut recomputed = BTreeMap::new();
        let events = || -> Vec<&Stamped> { self.oracle.events.iter().collect() };
        if window_changed > 0 && checked(sequences::SEQUENCE_VIEW_NAMES) {
            recomputed.append(&mut sequences::views_at(&events(), now, params));
        }
        let refreshes = (
            now.div_euclid(params.similar.refresh_ms),
            now.div_euclid(params.recs.shared_refresh_ms),
            now.div_euclid(params.recs.popular_refresh_ms),
        );
        // any boundary: scores change with boosts, segments with recency windows
        let crossed = !users.is_empty() || window_changed > 0;
        if checked(recs::RECS_VIEW_NAMES) && (crossed || self.recs_refreshes != Some(refreshes)) {
            self.recs_refreshes = Some(refreshes);
            recomputed.append(&mut recs::views_at(
                &events(),
                now,
                params,
                &mut self.recs_cache,
            ));
        }
        // experiments: only the users with an event that became effective
        let mut arrived: BTreeSet<&str> = BTreeSet::new();
        while let Some(&(t, user)) = self.effective_times.get(self.next_effective) {
            if t > now {
                break;
            }
            arrived.insert(user);
            self.next_effective += 1;
        }
        if !arrived.is_empty() {
            for user in arrived {
                self.experiments
                    .update_user(user, &self.user_events[user], now, params);
            }
            recomputed.insert("experiments", self.experiments.rows(params));
        }
        for (view, rows) in recomputed {
            if !self.global_views.contains(&view) {
                continue;
            }
            self.global.retain(|(v, _), _| v != view);
            self.global.extend(
                rows.into_iter()
                    .map(|(key, value)| ((view.to_string(), JsonKey::new(&key)), value)),
            );
            self.global_compared = false;
        }
        if self.views.is_empty() {
            return;
        }
        for item in items {
            let rejected_now =
                !rejected_items(self.item_rejections[item].iter().copied(), now, params).is_empty();
            if rejected_now != self.rejected.contains(item) {
                if rejected_now {
                    self.rejected.insert(item.to_string());
                } else {
                    self.rejected.remove(item);
                }
                users.extend(self.item_users[item].iter().copied());
            }
        }
        for user in users {
            let rows = views_at(&self.user_events[user], now, params, &self.rejected);
            for (view, rows) in rows {
                if self.views.contains(&view) {
                    self.replace((view, user.to_string()), rows, dirty);
                }
            }
        }
    }

    /// Follows the engine's rows of global views that `touched` holds, and adds every row
    /// of the global views (the oracle's and the engine's) to `dirty` unless neither side
    /// changed since they were last all compared.
    fn add_global_rows(
        &mut self,
        fold: &StateFold,
        touched: &BTreeSet<RowId>,
        dirty: &mut BTreeSet<RowId>,
    ) {
        if self.global_views.is_empty() {
            return;
        }
        for row in touched {
            if GLOBAL_VIEW_NAMES.contains(&row.0.as_str()) {
                self.global_compared = false;
                if matches!(fold.get(row), Ok(None)) {
                    self.engine_global.remove(row);
                } else {
                    self.engine_global.insert(row.clone());
                }
            }
        }
        if self.global_compared {
            return;
        }
        self.global_compared = true;
        dirty.extend(self.global.keys().cloned());
        dirty.extend(self.engine_global.iter().cloned());
    }

    fn replace(
        &mut self,
        partition: (&'static str, String),
        rows: Rows,
        dirty: &mut BTreeSet<RowId>,
    ) {
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
