//! The oracle's sequence views (issue 5, semantics brief "sequences"): `transitions`,
//! `next`, `paths` and `funnel`, computed from scratch over the sessions of the main window,
//! written from the brief, not from the engine's dataflow.
//!
//! - sessions: exactly those of the `sessions` view (`super::session_groups`);
//! - order within a session: by `ts`, then page step (absent first, then by string), then
//!   item (absent first, then by string);
//! - page step: `"purchase"` for a `purchase`, the non-empty string `page` of a
//!   `page_view`, otherwise none; a session's page sequence keeps consecutive repeats;
//! - item step: the event's `item`; a session's item sequence collapses consecutive
//!   repeats (p1 p1 p2 p1 → p1 p2 p1).
//!
//! Unlike the per-user views, every row here aggregates over all users' sessions: the
//! checker recomputes these views in full (`views_at`) and compares every row.

use super::{
    Event, Params, Rows, Stamped, fixed_point, in_main_window, session_groups,
    share_ten_thousandths,
};
use serde_json::{Value, json};
use std::collections::BTreeMap;

/// The views of this module. Their rows aggregate over all users (keys have no `user`).
pub const SEQUENCE_VIEW_NAMES: &[&str] = &["transitions", "next", "paths", "funnel"];

/// `[sequences]` of the config.
#[derive(Clone, Debug, PartialEq)]
pub struct Sequences {
    /// How many successors a `next` row lists.
    pub next_k: usize,
    /// The longest `paths` path (in steps, the final `purchase` included).
    pub path_length: usize,
    /// The funnel's steps, in order.
    pub funnel: Vec<String>,
}

impl Default for Sequences {
    fn default() -> Sequences {
        Sequences {
            next_k: 5,
            path_length: 4,
            funnel: ["home", "category", "product", "cart", "purchase"]
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// Reads the `[sequences]` table into `sequences`; an error names the key
/// (`sequences.next_k: …`).
pub fn parse_table(table: &toml::Table, sequences: &mut Sequences) -> Result<(), String> {
    for (name, value) in table {
        let key = format!("sequences.{name}");
        let positive = |value: &toml::Value| match value {
            toml::Value::Integer(i) if *i >= 1 => {
                usize::try_from(*i).map_err(|_| format!("{key}: {i} is too large for this machine"))
            }
            other => Err(format!("{key}: {other} is not an integer >= 1")),
        };
        match name.as_str() {
            "next_k" => sequences.next_k = positive(value)?,
            "path_length" => sequences.path_length = positive(value)?,
            "funnel" => {
                let toml::Value::Array(steps) = value else {
                    return Err(format!("{key}: not a list"));
                };
                if steps.is_empty() {
                    return Err(format!("{key}: an empty list (a funnel needs a step)"));
                }
                let mut funnel: Vec<String> = Vec::new();
                for step in steps {
                    let toml::Value::String(step) = step else {
                        return Err(format!("{key}: {step} is not a string"));
                    };
                    // each step names a row (`{"step": S}`): two equal steps would clash
                    if funnel.contains(step) {
                        return Err(format!("{key}: the step {step:?} is listed twice"));
                    }
                    funnel.push(step.clone());
                }
                sequences.funnel = funnel;
            }
            _ => return Err(format!("{key}: unknown key")),
        }
    }
    Ok(())
}

/// The event's page step: `"purchase"` for a purchase; the `page` of a page view when it is
/// a non-empty string; otherwise none.
pub fn page_step(e: &Event) -> Option<&str> {
    if e.kind == "purchase" {
        return Some("purchase");
    }
    if e.kind != "page_view" {
        return None;
    }
    match e.fields.get("page") {
        Some(Value::String(page)) if !page.is_empty() => Some(page),
        _ => None,
    }
}

/// The event's item step: its `item`, if it has one.
pub fn item_step(e: &Event) -> Option<&str> {
    e.item.as_deref()
}

/// Puts a session's events in the brief's order: by `ts`, then page step, then item
/// (absent before present, strings in byte order).
pub fn order_session(events: &mut [&Event]) {
    events.sort_by(|a, b| {
        (a.ts, page_step(a), item_step(a)).cmp(&(b.ts, page_step(b), item_step(b)))
    });
}

/// The page steps of a session's ordered events (consecutive repeats kept).
pub fn page_sequence<'e>(events: &[&'e Event]) -> Vec<&'e str> {
    events.iter().copied().filter_map(page_step).collect()
}

/// The item steps of a session's ordered events, consecutive repeats collapsed.
pub fn item_sequence<'e>(events: &[&'e Event]) -> Vec<&'e str> {
    let mut items: Vec<&str> = events.iter().copied().filter_map(item_step).collect();
    items.dedup();
    items
}

/// The sessions in the main window at `now` (events with effective time after `now` are
/// ignored), by (user, session id), each with its events in order.
pub fn ordered_sessions<'e>(
    events: &[&'e Stamped],
    now: i64,
    params: &Params,
) -> BTreeMap<(&'e str, String), Vec<&'e Event>> {
    let window: Vec<&Event> = events
        .iter()
        .filter(|s| in_main_window(s, now, params))
        .map(|s| &s.event)
        .collect();
    let mut sessions = session_groups(&window, params);
    for session in sessions.values_mut() {
        order_session(session);
    }
    sessions
}

/// The page and item sequences of every session in the main window at `now`.
pub fn session_sequences<'e>(
    events: &[&'e Stamped],
    now: i64,
    params: &Params,
) -> Vec<(Vec<&'e str>, Vec<&'e str>)> {
    ordered_sessions(events, now, params)
        .into_values()
        .map(|session| (page_sequence(&session), item_sequence(&session)))
        .collect()
}

/// The number of leading funnel steps that occur in `pages` as an ordered subsequence
/// (matched greedily from the left).
pub fn funnel_depth(pages: &[&str], funnel: &[String]) -> usize {
    let mut depth = 0;
    for page in pages {
        if depth < funnel.len() && *page == funnel[depth] {
            depth += 1;
        }
    }
    depth
}

/// `p` of a share: ten-thousandths rounded half up, as a JSON number.
fn share(part: usize, whole: usize) -> Value {
    fixed_point(share_ten_thousandths(part, whole), 10_000)
}

/// (kind, from) → to → the number of steps from `from` to `to` in the sessions' page
/// (`"page"`) and item (`"item"`) sequences.
fn transition_counts<'e>(
    sessions: &[(Vec<&'e str>, Vec<&'e str>)],
) -> BTreeMap<(&'static str, &'e str), BTreeMap<&'e str, usize>> {
    let mut counts: BTreeMap<(&str, &str), BTreeMap<&str, usize>> = BTreeMap::new();
    for (pages, items) in sessions {
        for (kind, steps) in [("page", pages), ("item", items)] {
            for pair in steps.windows(2) {
                *counts
                    .entry((kind, pair[0]))
                    .or_default()
                    .entry(pair[1])
                    .or_default() += 1;
            }
        }
    }
    counts
}

/// A `next` list: the first `next_k` successors by count descending, then `to`, each with
/// `p` (its share of all steps out of `from`) in ten-thousandths.
fn ranked_next<'e>(tos: &BTreeMap<&'e str, usize>, next_k: usize) -> Vec<(&'e str, i64)> {
    let total: usize = tos.values().sum();
    let mut ranked: Vec<(&str, usize)> = tos.iter().map(|(to, n)| (*to, *n)).collect();
    ranked.sort_by(|(a, m), (b, n)| n.cmp(m).then(a.cmp(b)));
    ranked
        .into_iter()
        .take(next_k)
        .map(|(to, count)| (to, share_ten_thousandths(count, total)))
        .collect()
}

/// The `next` rows of kind `"item"` at `now`, as `from` → [(to, p in ten-thousandths)]
/// (the same lists `views_at` prints).
pub fn item_next_at(
    events: &[&Stamped],
    now: i64,
    params: &Params,
) -> BTreeMap<String, Vec<(String, i64)>> {
    let sessions = session_sequences(events, now, params);
    transition_counts(&sessions)
        .iter()
        .filter(|((kind, _), _)| *kind == "item")
        .map(|((_, from), tos)| {
            let list = ranked_next(tos, params.sequences.next_k)
                .into_iter()
                .map(|(to, p)| (to.to_string(), p))
                .collect();
            (from.to_string(), list)
        })
        .collect()
}

/// The four views at `now` over `events` (all users' events; those with effective time
/// after `now` or outside the main window at `now` are ignored).
pub fn views_at(events: &[&Stamped], now: i64, params: &Params) -> BTreeMap<&'static str, Rows> {
    let config = &params.sequences;
    let sessions = session_sequences(events, now, params);
    let counts = transition_counts(&sessions);
    let mut transitions = Rows::new();
    let mut next = Rows::new();
    for ((kind, from), tos) in &counts {
        let total: usize = tos.values().sum();
        for (to, count) in tos {
            transitions.push((
                json!({"kind": kind, "from": from, "to": to}),
                json!({"count": count, "p": share(*count, total)}),
            ));
        }
        let list: Vec<Value> = ranked_next(tos, config.next_k)
            .into_iter()
            .map(|(to, p)| json!({"to": to, "p": fixed_point(p, 10_000)}))
            .collect();
        next.push((json!({"kind": kind, "from": from}), json!({ "next": list })));
    }

    let mut path_counts: BTreeMap<&[&str], usize> = BTreeMap::new();
    for (pages, _) in &sessions {
        for (k, step) in pages.iter().enumerate() {
            if *step == "purchase" {
                let from = (k + 1).saturating_sub(config.path_length);
                *path_counts.entry(&pages[from..=k]).or_default() += 1;
            }
        }
    }
    let paths = path_counts
        .into_iter()
        .map(|(path, count)| (json!({ "path": path }), json!({ "count": count })))
        .collect();

    let mut funnel = Rows::new();
    if !sessions.is_empty() {
        let depths: Vec<usize> = sessions
            .iter()
            .map(|(pages, _)| funnel_depth(pages, &config.funnel))
            .collect();
        let mut previous = sessions.len();
        for (k, step) in config.funnel.iter().enumerate() {
            let reached = depths.iter().filter(|d| **d > k).count();
            funnel.push((
                json!({ "step": step }),
                json!({"position": k + 1, "reached": reached, "rate": share(reached, previous)}),
            ));
            previous = reached;
        }
    }

    BTreeMap::from([
        ("transitions", transitions),
        ("next", next),
        ("paths", paths),
        ("funnel", funnel),
    ])
}

/// For a mismatch report: how many sessions the window holds at `now`, and the first few
/// sessions behind row `key` of `view` (those holding the transition, the `from` step or
/// the path; any session for `funnel`), with their events in order.
pub fn describe_sessions(
    view: &str,
    key: &Value,
    events: &[&Stamped],
    now: i64,
    params: &Params,
) -> String {
    const SHOWN: usize = 5;
    const EVENTS_SHOWN: usize = 12;
    let sessions = ordered_sessions(events, now, params);
    let field = |name: &str| key[name].as_str().unwrap_or_default().to_string();
    let path: Vec<&str> = key["path"]
        .as_array()
        .map(|p| p.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let (from, to) = (field("from"), field("to"));
    let behind = |pages: &[&str], items: &[&str]| {
        let steps = if key["kind"] == "item" { items } else { pages };
        match view {
            "transitions" => steps.windows(2).any(|w| w[0] == from && w[1] == to),
            "next" => steps.windows(2).any(|w| w[0] == from),
            "paths" => !path.is_empty() && pages.windows(path.len()).any(|w| w == path),
            _ => true,
        }
    };
    let mut text = format!(
        "  {} sessions in the window at T = {now}; the first sessions behind {view} {key} (of {SHOWN}, events in order, first {EVENTS_SHOWN}):\n",
        sessions.len()
    );
    let shown = sessions
        .iter()
        .map(|(id, session)| (id, session, page_sequence(session), item_sequence(session)))
        .filter(|(_, _, pages, items)| behind(pages, items))
        .take(SHOWN);
    for ((user, id), session, pages, items) in shown {
        text += &format!("    user {user} session {id}: pages {pages:?}, items {items:?}\n");
        for e in session.iter().take(EVENTS_SHOWN) {
            text += &format!(
                "      line {}: ts {} type {} page {} item {}\n",
                e.line,
                e.ts,
                e.kind,
                e.fields
                    .get("page")
                    .map_or("-".to_string(), Value::to_string),
                e.item.as_deref().unwrap_or("-"),
            );
        }
    }
    text
}
