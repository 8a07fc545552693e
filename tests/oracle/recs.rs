//! The oracle's item similarity and recommendations (issue 5, semantics briefs "similar" and
//! "recs"): `similar` and `recs`, computed from scratch at any time T, written from the
//! briefs, not from the engine's dataflow. All numbers are integers: scores in thousandths
//! (as in `scores`), similarities and values in ten-thousandths ("units").
//!
//! - top items: a user's positive `scores` rows by score descending, then item, the first
//!   `[similar] recent_items`; each with an intent level 1–4 from its score (< 2, < 4, < 8,
//!   else);
//! - `similar`: computed from the top items as of R = ⌊T / refresh_ms⌋ · refresh_ms (the
//!   state at R); cosine-like `co / sqrt(norm_a · norm_b)` over the min levels of the users
//!   who have both items among their top items, pairs of fewer than `min_users` users
//!   dropped, the best `k` neighbours;
//! - `recs`: per user, candidates from `similar` (their top items' neighbours, weighted by
//!   level), `next` (from their position, the item of their latest event), `als` (when an ALS
//!   model is loaded), a segment boost (the segment's content rule), and for users with few
//!   personal candidates the most popular items of their segment as of P = ⌊T /
//!   popular_refresh_ms⌋ · popular_refresh_ms; `similar` and `next` as of S = ⌊T /
//!   shared_refresh_ms⌋ · shared_refresh_ms, the user's own state (top items, position,
//!   segment) at T; purchases and negatively scored items
//!   excluded; blended with `[recs] weights`, or with config experiments, with the weights
//!   of the user's variant of the first experiment (a source weighing 0 for the user adds
//!   no candidates, so it does not count towards cold start either).
//!
//! Segments: the `segments` view of a k-means model (`params.models.kmeans`); without one,
//! every user with a `scores` row is in the segment "all". The oracle does not read
//! `[segments] rules` (rule segments).

use super::{
    Params, Rows, Stamped, experiments, fixed_point, in_main_window, integer, mean_half_up, models,
    number, rejected_items, score_milli, sequences, to_milli,
};
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;

/// The views of this module. Their rows read all users' state (`recs` is keyed by user,
/// but reads `similar`, `next` and popularity).
pub const RECS_VIEW_NAMES: &[&str] = &["similar", "recs"];

/// The candidate sources of `recs`, in the order that breaks ties of `reason`.
pub const SOURCES: [&str; 5] = ["similar", "next", "als", "segment", "popular"];
const SIMILAR: usize = 0;
const NEXT: usize = 1;
const ALS: usize = 2;
const SEGMENT: usize = 3;
const POPULAR: usize = 4;

/// One in ten-thousandths.
const ONE: i64 = 10_000;

/// `[similar]` of the config.
#[derive(Clone, Debug, PartialEq)]
pub struct Similar {
    /// How many of a user's best scored items are their top items.
    pub recent_items: usize,
    /// How many neighbours a `similar` row lists.
    pub k: usize,
    /// Pairs shared by fewer users are dropped.
    pub min_users: usize,
    /// `similar` at T reads the state at the last multiple of this at or before T.
    pub refresh_ms: i64,
}

impl Default for Similar {
    fn default() -> Similar {
        Similar {
            recent_items: 20,
            k: 10,
            min_users: 2,
            refresh_ms: 60_000,
        }
    }
}

/// `[recs]` of the config.
#[derive(Clone, Debug, PartialEq)]
pub struct Recs {
    /// How many items a `recs` row lists (and the cold-start threshold).
    pub k: usize,
    /// How many items an `als` row lists.
    pub als_candidates: usize,
    /// How many popular items per segment cold start offers.
    pub popular_items: usize,
    /// `similar` and `next` as the blend reads them at T are those at the last multiple of
    /// this at or before T.
    pub shared_refresh_ms: i64,
    /// Popularity at T is that at the last multiple of this at or before T.
    pub popular_refresh_ms: i64,
    /// Blend weight per source (in the order of `SOURCES`), in thousandths.
    pub weights_milli: [i64; 5],
}

impl Default for Recs {
    fn default() -> Recs {
        Recs {
            k: 10,
            als_candidates: models::ALS_CANDIDATES,
            popular_items: 20,
            shared_refresh_ms: 86_400_000,
            popular_refresh_ms: 86_400_000,
            weights_milli: [1000, 500, 1000, 300, 100],
        }
    }
}

/// A segment's content rule (`[rules]`): it admits a catalog item whose kind is in `kinds`
/// and, if `premium` is set, whose premium flag equals it.
#[derive(Clone, Debug, PartialEq)]
pub struct Rule {
    pub kinds: Vec<String>,
    pub premium: Option<bool>,
}

/// The catalog kinds.
const KINDS: [&str; 4] = ["product", "article", "guide", "offer"];

/// The default rules: buyers premium products and offers; researchers articles, guides
/// and products; browsers guides and articles; disengaged offers.
pub fn default_rules() -> BTreeMap<String, Rule> {
    let rule = |kinds: &[&str], premium: Option<bool>| Rule {
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        premium,
    };
    BTreeMap::from([
        (
            "buyers".to_string(),
            rule(&["product", "offer"], Some(true)),
        ),
        (
            "researchers".to_string(),
            rule(&["article", "guide", "product"], None),
        ),
        ("browsers".to_string(), rule(&["guide", "article"], None)),
        ("disengaged".to_string(), rule(&["offer"], None)),
    ])
}

fn positive(key: &str, value: &toml::Value) -> Result<i64, String> {
    integer(key, value, 1)
}

fn positive_count(key: &str, value: &toml::Value) -> Result<usize, String> {
    let n = positive(key, value)?;
    usize::try_from(n).map_err(|_| format!("{key}: {n} is too large for this machine"))
}

/// Reads `[similar]`; an error names the key (`similar.k: …`).
pub fn parse_similar(table: &toml::Table, similar: &mut Similar) -> Result<(), String> {
    for (name, value) in table {
        let key = format!("similar.{name}");
        match name.as_str() {
            "recent_items" => similar.recent_items = positive_count(&key, value)?,
            "k" => similar.k = positive_count(&key, value)?,
            "min_users" => similar.min_users = positive_count(&key, value)?,
            "refresh_ms" => similar.refresh_ms = positive(&key, value)?,
            _ => return Err(format!("{key}: unknown key")),
        }
    }
    Ok(())
}

/// Reads `[recs]`; an error names the key (`recs.weights.next: …`).
pub fn parse_recs(table: &toml::Table, recs: &mut Recs) -> Result<(), String> {
    for (name, value) in table {
        let key = format!("recs.{name}");
        match name.as_str() {
            "k" => recs.k = positive_count(&key, value)?,
            "als_candidates" => recs.als_candidates = positive_count(&key, value)?,
            "popular_items" => recs.popular_items = positive_count(&key, value)?,
            "shared_refresh_ms" => recs.shared_refresh_ms = positive(&key, value)?,
            "popular_refresh_ms" => recs.popular_refresh_ms = positive(&key, value)?,
            "weights" => {
                let toml::Value::Table(weights) = value else {
                    return Err(format!("{key}: not a table"));
                };
                for (source, w) in weights {
                    let key = format!("{key}.{source}");
                    let Some(i) = SOURCES.iter().position(|s| s == source) else {
                        return Err(format!("{key}: unknown key"));
                    };
                    let w = number(&key, w)?;
                    if !(0.0..=1000.0).contains(&w) {
                        return Err(format!("{key}: {w} is not in [0, 1000]"));
                    }
                    recs.weights_milli[i] = to_milli(w);
                }
            }
            _ => return Err(format!("{key}: unknown key")),
        }
    }
    Ok(())
}

/// Reads `[rules]` (segment name → `{ kinds = [...], premium = bool }`, `kinds` required):
/// each named rule replaces the default rule of that name; the others stay.
pub fn parse_rules(table: &toml::Table, rules: &mut BTreeMap<String, Rule>) -> Result<(), String> {
    for (segment, value) in table {
        let key = format!("rules.{segment}");
        let toml::Value::Table(rule) = value else {
            return Err(format!("{key}: not a table"));
        };
        let mut kinds = None;
        let mut premium = None;
        for (name, value) in rule {
            let key = format!("{key}.{name}");
            match name.as_str() {
                "kinds" => {
                    let toml::Value::Array(list) = value else {
                        return Err(format!("{key}: not a list"));
                    };
                    let list: Vec<String> = list
                        .iter()
                        .map(|k| match k {
                            toml::Value::String(k) if KINDS.contains(&k.as_str()) => Ok(k.clone()),
                            other => Err(format!("{key}: {other} is not one of {KINDS:?}")),
                        })
                        .collect::<Result<_, _>>()?;
                    kinds = Some(list);
                }
                "premium" => {
                    let toml::Value::Boolean(b) = value else {
                        return Err(format!("{key}: {value} is not a boolean"));
                    };
                    premium = Some(*b);
                }
                _ => return Err(format!("{key}: unknown key")),
            }
        }
        let kinds = kinds.ok_or_else(|| format!("{key}.kinds: missing"))?;
        rules.insert(segment.clone(), Rule { kinds, premium });
    }
    Ok(())
}

/// The content rule of segment `segment` admits catalog item `item` (an item not in the
/// catalog, or a segment without a rule, admits nothing).
pub fn admits(params: &Params, segment: &str, item: &str) -> bool {
    let (Some(rule), Some(kind)) = (params.rules.get(segment), params.catalog.kind.get(item))
    else {
        return false;
    };
    rule.kinds.contains(kind)
        && rule
            .premium
            .is_none_or(|p| params.catalog.premium.contains(item) == p)
}

/// The intent level of a score in thousandths: 1 below 2, 2 below 4, 3 below 8, else 4.
pub fn level(score_milli: i64) -> i64 {
    match score_milli {
        s if s < 2000 => 1,
        s if s < 4000 => 2,
        s if s < 8000 => 3,
        _ => 4,
    }
}

/// `x` rounded half up to a multiple of 100 units (two decimals).
pub fn hundredths(x: i64) -> i64 {
    (x + 50).div_euclid(100) * 100
}

/// The largest power of two at or below `n` (n >= 1).
pub fn power_of_two_step(n: usize) -> usize {
    1 << (usize::BITS - 1 - n.leading_zeros())
}

/// (user, item) → score in thousandths: the `scores` rows at `now`.
pub type Scores = BTreeMap<(String, String), i64>;

/// The `scores` rows at `now` (with the items rejected at `now`).
pub fn scores_at(events: &[&Stamped], now: i64, params: &Params) -> Scores {
    let rejected = rejected_items(events.iter().copied(), now, params);
    score_milli(events, now, params, &rejected)
}

/// Each user's top items with their levels, best first.
pub fn top_items(scores: &Scores, recent_items: usize) -> BTreeMap<String, Vec<(String, i64)>> {
    let mut by_user: BTreeMap<&str, Vec<(&str, i64)>> = BTreeMap::new();
    for ((user, item), score) in scores {
        if *score > 0 {
            by_user.entry(user).or_default().push((item, *score));
        }
    }
    by_user
        .into_iter()
        .map(|(user, mut items)| {
            items.sort_by(|(a, s), (b, t)| t.cmp(s).then(a.cmp(b)));
            items.truncate(recent_items);
            let top = items
                .into_iter()
                .map(|(item, score)| (item.to_string(), level(score)))
                .collect();
            (user.to_string(), top)
        })
        .collect()
}

/// item → its neighbours (item, similarity in ten-thousandths), best first: the `similar`
/// rows.
pub type Neighbors = BTreeMap<String, Vec<(String, i64)>>;

/// The `similar` rows over the given top items (the brief's formula, exactly).
pub fn neighbors(top: &BTreeMap<String, Vec<(String, i64)>>, similar: &Similar) -> Neighbors {
    let mut norm: BTreeMap<&str, i64> = BTreeMap::new();
    // (a, b) → (users, co)
    let mut pairs: BTreeMap<(&str, &str), (usize, i64)> = BTreeMap::new();
    for items in top.values() {
        for (a, la) in items {
            *norm.entry(a).or_default() += la;
            for (b, lb) in items {
                if a != b {
                    let pair = pairs.entry((a, b)).or_default();
                    pair.0 += 1;
                    pair.1 += la.min(lb);
                }
            }
        }
    }
    let mut rows: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for ((a, b), (users, co)) in pairs {
        if users < similar.min_users {
            continue;
        }
        let sim = (co as f64 / (norm[a] as f64 * norm[b] as f64).sqrt() * 10_000.0).round() as i64;
        rows.entry(a.to_string())
            .or_default()
            .push((b.to_string(), sim));
    }
    for list in rows.values_mut() {
        list.sort_by(|(a, s), (b, t)| t.cmp(s).then(a.cmp(b)));
        list.truncate(similar.k);
    }
    rows
}

/// The last multiple of `every` at or before `now`.
pub fn refresh_time(now: i64, every: i64) -> i64 {
    now.div_euclid(every) * every
}

/// The `similar` rows at `now`: the neighbours as of the last refresh at or before `now`.
pub fn similar_at(events: &[&Stamped], now: i64, params: &Params) -> Neighbors {
    let at = refresh_time(now, params.similar.refresh_ms);
    let top = top_items(&scores_at(events, at, params), params.similar.recent_items);
    neighbors(&top, &params.similar)
}

/// Whether users have segments: a k-means model is loaded (the oracle does not read
/// `[segments] rules`).
pub fn segments_available(params: &Params) -> bool {
    params.models.kmeans.is_some()
}

/// user → segment name at `now`: the `segments` view of the k-means model, or else `"all"`
/// for every user with a `scores` row (`scores` are the rows at `now`).
pub fn segments_at(
    events: &[&Stamped],
    now: i64,
    params: &Params,
    scores: &Scores,
) -> BTreeMap<String, String> {
    if !segments_available(params) {
        return scores
            .keys()
            .map(|(user, _)| (user.clone(), "all".to_string()))
            .collect();
    }
    let only_kmeans = Params {
        models: models::Models {
            kmeans: params.models.kmeans.clone(),
            ..models::Models::default()
        },
        ..params.clone()
    };
    let rejected = rejected_items(events.iter().copied(), now, params);
    let mut views = super::views_at(events, now, &only_kmeans, &rejected);
    views
        .remove("segments")
        .unwrap_or_default()
        .into_iter()
        .map(|(key, value)| {
            let user = key["user"].as_str().unwrap().to_string();
            let name = match &value["name"] {
                Value::String(name) => name.clone(),
                other => other.to_string(),
            };
            (user, name)
        })
        .collect()
}

/// Cold-start lists of one segment: item → value (ten-thousandths) for the sources
/// `popular` (all items) and `segment` (items the segment's rule admits).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Popular {
    pub popular: BTreeMap<String, i64>,
    pub segment: BTreeMap<String, i64>,
    /// item → number of the segment's users with a positive score for it (for reports).
    pub counts: BTreeMap<String, usize>,
}

/// segment name → its cold-start lists, as of the last popularity refresh at or before
/// `now`.
pub fn popular_at(events: &[&Stamped], now: i64, params: &Params) -> BTreeMap<String, Popular> {
    let at = refresh_time(now, params.recs.popular_refresh_ms);
    let scores = scores_at(events, at, params);
    let segments = segments_at(events, at, params, &scores);
    let mut counts: BTreeMap<&str, BTreeMap<&str, usize>> = BTreeMap::new();
    for ((user, item), score) in &scores {
        if *score > 0
            && let Some(segment) = segments.get(user)
        {
            *counts.entry(segment).or_default().entry(item).or_default() += 1;
        }
    }
    let n = params.recs.popular_items;
    let ranked = |items: Vec<(&str, usize)>| -> BTreeMap<String, i64> {
        let mut items: Vec<(&str, usize)> = items
            .into_iter()
            .map(|(item, count)| (item, power_of_two_step(count)))
            .collect();
        items.sort_by(|(a, s), (b, t)| t.cmp(s).then(a.cmp(b)));
        items
            .into_iter()
            .take(n)
            .enumerate()
            .map(|(rank, (item, _))| (item.to_string(), (n - rank) as i64 * ONE / n as i64))
            .collect()
    };
    counts
        .into_iter()
        .map(|(segment, items)| {
            let all: Vec<(&str, usize)> = items.iter().map(|(i, c)| (*i, *c)).collect();
            let admitted = all
                .iter()
                .copied()
                .filter(|(item, _)| admits(params, segment, item))
                .collect();
            let lists = Popular {
                popular: ranked(all),
                segment: ranked(admitted),
                counts: items.iter().map(|(i, c)| (i.to_string(), *c)).collect(),
            };
            (segment.to_string(), lists)
        })
        .collect()
}

/// `next` lists of kind item: from → [(to, p in units)].
type ItemNext = BTreeMap<String, Vec<(String, i64)>>;

/// The states behind `similar`, popularity and the shared sources of `recs`, kept while the
/// refresh time is the same.
#[derive(Default)]
pub struct Cache {
    similar: Option<(i64, Rc<Neighbors>)>,
    popular: Option<(i64, Rc<BTreeMap<String, Popular>>)>,
    shared: Option<(i64, Rc<Neighbors>, Rc<ItemNext>)>,
}

impl Cache {
    /// `similar` and item `next` as of `at` (a `[recs] shared_refresh_ms` boundary).
    fn shared(
        &mut self,
        events: &[&Stamped],
        at: i64,
        params: &Params,
    ) -> (Rc<Neighbors>, Rc<ItemNext>) {
        match &self.shared {
            Some((t, similar, next)) if *t == at => (similar.clone(), next.clone()),
            _ => {
                let applied: Vec<&Stamped> = events
                    .iter()
                    .copied()
                    .filter(|s| s.effective <= at)
                    .collect();
                let similar = Rc::new(similar_at(events, at, params));
                let next = Rc::new(sequences::item_next_at(&applied, at, params));
                self.shared = Some((at, similar.clone(), next.clone()));
                (similar, next)
            }
        }
    }

    fn similar(&mut self, events: &[&Stamped], now: i64, params: &Params) -> Rc<Neighbors> {
        let at = refresh_time(now, params.similar.refresh_ms);
        match &self.similar {
            Some((t, rows)) if *t == at => rows.clone(),
            _ => {
                let rows = Rc::new(similar_at(events, now, params));
                self.similar = Some((at, rows.clone()));
                rows
            }
        }
    }

    fn popular(
        &mut self,
        events: &[&Stamped],
        now: i64,
        params: &Params,
    ) -> Rc<BTreeMap<String, Popular>> {
        let at = refresh_time(now, params.recs.popular_refresh_ms);
        match &self.popular {
            Some((t, lists)) if *t == at => lists.clone(),
            _ => {
                let lists = Rc::new(popular_at(events, now, params));
                self.popular = Some((at, lists.clone()));
                lists
            }
        }
    }
}

/// How one user's `recs` row comes about (also for mismatch reports).
#[derive(Clone, Debug, Default)]
pub struct UserRecs {
    /// The user's variant (of the first experiment; `"default"` without experiments).
    pub variant: String,
    /// The blend weights of that variant, in thousandths, in the order of `SOURCES`.
    pub weights_milli: [i64; 5],
    /// Top items with levels, best first.
    pub top: Vec<(String, i64)>,
    /// The item of the latest event in the main window.
    pub position: Option<String>,
    pub segment: Option<String>,
    /// The number of personal candidates (from similar, next, als).
    pub personal: usize,
    /// Cold start applied (a segment and fewer than `k` personal candidates).
    pub cold_start: bool,
    /// item → value per source (ten-thousandths), in the order of `SOURCES`.
    pub candidates: BTreeMap<String, [Option<i64>; 5]>,
    /// Purchased in the window, or negatively scored.
    pub excluded: BTreeSet<String>,
    /// The row: (item, score in ten-thousandths, reason), best first.
    pub items: Vec<(String, i64, &'static str)>,
}

fn put(slot: &mut Option<i64>, value: i64) {
    *slot = Some(slot.map_or(value, |old| old.max(value)));
}

/// Everything `similar` and `recs` read at `now`, and their result per user.
pub struct Recommendations {
    pub similar: Rc<Neighbors>,
    pub users: BTreeMap<String, UserRecs>,
}

/// Computes `similar` and every user's recommendations at `now` (`cache` keeps the
/// refreshed states between calls at different times).
pub fn recommend(
    events: &[&Stamped],
    now: i64,
    params: &Params,
    cache: &mut Cache,
) -> Recommendations {
    let config = &params.recs;
    let similar = cache.similar(events, now, params);
    let applied: Vec<&Stamped> = events
        .iter()
        .copied()
        .filter(|s| s.effective <= now)
        .collect();
    let scores = scores_at(&applied, now, params);
    let top = top_items(&scores, params.similar.recent_items);
    // similar and next as of the last `[recs] shared_refresh_ms` boundary
    let shared_at = refresh_time(now, config.shared_refresh_ms);
    let (shared_similar, item_next) = cache.shared(events, shared_at, params);
    let als = params
        .models
        .als
        .as_ref()
        .map(|model| models::als_units(model, &scores, config.als_candidates))
        .unwrap_or_default();
    let segments = segments_at(&applied, now, params, &scores);
    // position (latest (ts, item)) and purchases in the main window
    let mut position: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    let mut excluded: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut users: BTreeSet<&str> = BTreeSet::new();
    for s in &applied {
        let e = &s.event;
        users.insert(&e.user);
        let Some(item) = &e.item else { continue };
        if !in_main_window(s, now, params) {
            continue;
        }
        let latest = position.entry(&e.user).or_insert((e.ts, item.as_str()));
        if (e.ts, item.as_str()) > *latest {
            *latest = (e.ts, item);
        }
        if e.kind == "purchase" {
            excluded.entry(&e.user).or_default().insert(item.clone());
        }
    }
    for ((user, item), score) in &scores {
        if *score < 0 {
            excluded.entry(user).or_default().insert(item.clone());
        }
    }
    let mut popular = None;
    let mut result = BTreeMap::new();
    for user in users {
        let (variant, weights_milli) = experiments::recs_variant(params, user);
        // a source weighing 0 for this user adds no candidates
        let uses = |source: usize| weights_milli[source] != 0;
        let mut r = UserRecs {
            variant,
            weights_milli,
            top: top.get(user).cloned().unwrap_or_default(),
            position: position.get(user).map(|(_, item)| item.to_string()),
            segment: segments.get(user).cloned(),
            excluded: excluded.remove(user).unwrap_or_default(),
            ..UserRecs::default()
        };
        let candidates = &mut r.candidates;
        // similar: the level-weighted mean over all top items of the neighbours' similarity
        let total_level: i64 = r.top.iter().map(|(_, l)| l).sum();
        let mut sums: BTreeMap<&str, i64> = BTreeMap::new();
        for (item, l) in r.top.iter().filter(|_| uses(SIMILAR)) {
            // A source value that rounds to 0 does not make a candidate.
            for (j, sim) in shared_similar.get(item).into_iter().flatten() {
                if hundredths(*sim) > 0 {
                    *sums.entry(j).or_default() += l * hundredths(*sim);
                }
            }
        }
        for (j, sum) in sums {
            put(
                &mut candidates.entry(j.to_string()).or_default()[SIMILAR],
                mean_half_up(sum, total_level),
            );
        }
        if let Some(list) = r
            .position
            .as_ref()
            .filter(|_| uses(NEXT))
            .and_then(|p| item_next.get(p))
        {
            for (to, p) in list.iter().filter(|(_, p)| hundredths(*p) > 0) {
                put(
                    &mut candidates.entry(to.clone()).or_default()[NEXT],
                    hundredths(*p),
                );
            }
        }
        for (j, units) in als
            .get(user)
            .filter(|_| uses(ALS))
            .into_iter()
            .flatten()
            .filter(|(_, units)| hundredths((*units).clamp(0, ONE)) > 0)
        {
            put(
                &mut candidates.entry(j.clone()).or_default()[ALS],
                hundredths((*units).clamp(0, ONE)),
            );
        }
        r.personal = candidates.len();
        if let Some(segment) = &r.segment {
            for (j, values) in candidates.iter_mut() {
                if uses(SEGMENT) && admits(params, segment, j) {
                    put(&mut values[SEGMENT], ONE);
                }
            }
            if r.personal < config.k {
                r.cold_start = true;
                let lists = popular.get_or_insert_with(|| cache.popular(events, now, params));
                if let Some(lists) = lists.get(segment) {
                    for (j, value) in lists.popular.iter().filter(|_| uses(POPULAR)) {
                        put(
                            &mut candidates.entry(j.clone()).or_default()[POPULAR],
                            *value,
                        );
                    }
                    for (j, value) in lists.segment.iter().filter(|_| uses(SEGMENT)) {
                        put(
                            &mut candidates.entry(j.clone()).or_default()[SEGMENT],
                            *value,
                        );
                    }
                }
            }
        }
        let mut items = Vec::new();
        for (j, values) in &r.candidates {
            if r.excluded.contains(j) {
                continue;
            }
            let mut total = 0;
            let mut best: Option<(i64, usize)> = None;
            for (source, value) in values.iter().enumerate() {
                let Some(value) = value else { continue };
                let weighted = r.weights_milli[source] * value;
                total += weighted;
                if best.is_none_or(|(w, _)| weighted > w) {
                    best = Some((weighted, source));
                }
            }
            if total > 0 {
                let (_, reason) = best.unwrap();
                items.push((j.clone(), (total + 500) / 1000, SOURCES[reason]));
            }
        }
        items.sort_by(|(a, s, _), (b, t, _)| t.cmp(s).then(a.cmp(b)));
        items.truncate(config.k);
        r.items = items;
        result.insert(user.to_string(), r);
    }
    Recommendations {
        similar,
        users: result,
    }
}

/// `similar` and `recs` at `now` over `events` (all users' events; those with effective
/// time after `now` are ignored).
pub fn views_at(
    events: &[&Stamped],
    now: i64,
    params: &Params,
    cache: &mut Cache,
) -> BTreeMap<&'static str, Rows> {
    let recommendations = recommend(events, now, params, cache);
    let similar = recommendations
        .similar
        .iter()
        .map(|(item, list)| {
            let neighbors: Vec<Value> = list
                .iter()
                .map(|(b, sim)| json!({"item": b, "score": fixed_point(*sim, ONE)}))
                .collect();
            (json!({ "item": item }), json!({ "neighbors": neighbors }))
        })
        .collect();
    let recs = recommendations
        .users
        .iter()
        .filter(|(_, r)| !r.items.is_empty())
        .map(|(user, r)| {
            let items: Vec<Value> = r
                .items
                .iter()
                .map(|(item, score, reason)| {
                    json!({"item": item, "score": fixed_point(*score, ONE), "reason": reason})
                })
                .collect();
            (
                json!({ "user": user }),
                json!({"variant": r.variant, "items": items}),
            )
        })
        .collect();
    BTreeMap::from([("similar", similar), ("recs", recs)])
}

/// For a mismatch report: what the row of `view` at `key` is computed from at `now` (for
/// `similar`, the users with the item among their top items at the refresh time; for
/// `recs`, the user's top items, position, segment and every candidate's values).
pub fn describe(view: &str, key: &Value, events: &[&Stamped], now: i64, params: &Params) -> String {
    const SHOWN: usize = 8;
    let units = |u: i64| fixed_point(u, ONE).to_string();
    match view {
        "similar" => {
            let Some(item) = key["item"].as_str() else {
                return String::new();
            };
            let at = refresh_time(now, params.similar.refresh_ms);
            let top = top_items(&scores_at(events, at, params), params.similar.recent_items);
            let holders: Vec<(&String, &Vec<(String, i64)>)> = top
                .iter()
                .filter(|(_, items)| items.iter().any(|(i, _)| i == item))
                .collect();
            let mut text = format!(
                "  similar reads the top items at T = {at} ({} users have {item} among theirs; first {SHOWN}, item:level):\n",
                holders.len()
            );
            for (user, items) in holders.iter().take(SHOWN) {
                let list: Vec<String> = items.iter().map(|(i, l)| format!("{i}:{l}")).collect();
                text += &format!("    {user}: {}\n", list.join(" "));
            }
            text
        }
        "recs" => {
            let Some(user) = key["user"].as_str() else {
                return String::new();
            };
            let recommendations = recommend(events, now, params, &mut Cache::default());
            let Some(r) = recommendations.users.get(user) else {
                return format!("  recs: user {user} has no events by T = {now}\n");
            };
            let top: Vec<String> = r.top.iter().map(|(i, l)| format!("{i}:{l}")).collect();
            let mut text = format!(
                "  recs of {user} at T = {now} (variant {} with weights {:?} thousandths; similar and next as of {}, popularity as of {}): top items (item:level) {}; position {}; segment {}; {} personal candidates{}; excluded {:?}\n  candidates (values in units of 1e-4: similar next als segment popular):\n",
                r.variant,
                r.weights_milli,
                refresh_time(now, params.recs.shared_refresh_ms),
                refresh_time(now, params.recs.popular_refresh_ms),
                top.join(" "),
                r.position.as_deref().unwrap_or("-"),
                r.segment.as_deref().unwrap_or("-"),
                r.personal,
                if r.cold_start { ", cold start" } else { "" },
                r.excluded,
            );
            for (item, values) in &r.candidates {
                let values: Vec<String> = values
                    .iter()
                    .map(|v| v.map_or("-".to_string(), units))
                    .collect();
                text += &format!("    {item}: {}\n", values.join(" "));
            }
            text
        }
        _ => String::new(),
    }
}
