//! The oracle's experiments (brief "experiments"): `[[experiments]]` in the config, the
//! assignment of users to variants, and the `experiments` view, written from the brief, not
//! from the engine's dataflow.
//!
//! - assignment: `bucket(salt, user)` is GrowthBook's hash version 2 times 10000; variant j
//!   owns the points `bucket / 10000` in GrowthBook's range `[c_{j-1}, c_j)` of the shares;
//! - `experiments` at T: every event effective at or before T counts (no window). A user
//!   with an impression is exposed; an action (click, add_to_cart, purchase, or any other
//!   non-impression event with `dwell_ms`, on an item) is attributed when an impression of
//!   the same user exposed its item at most `attribution_ms` before it (event times), and
//!   for a click, only when the click carries that impression's `rec` id (a click-through);
//! - per (experiment, variant): sums over the exposed users assigned to it, CTR lift by
//!   the delta method (users as units), conversion lift, two-sided normal p-values, and a
//!   chi-square sample ratio mismatch test over the experiment's variants;
//! - `recs_variant`: the variant (of the first experiment) and blend weights a user's
//!   `recs` row uses.

use super::{Params, Rows, Stamped, integer, number, recs, to_milli};
use serde_json::{Value, json};
use statrs::distribution::{ChiSquared, ContinuousCDF, Normal};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// The view of this module; its rows aggregate over all users.
pub const EXPERIMENT_VIEW_NAMES: &[&str] = &["experiments"];

/// `attribution_ms` when not configured: 24 h.
pub const DEFAULT_ATTRIBUTION_MS: i64 = 86_400_000;

/// Buckets of the assignment hash.
pub const BUCKETS: u32 = 10_000;

/// The two-sided 95 % normal quantile the brief names.
pub const Z_95: f64 = 1.959963984540054;

/// `srm` is set when `srm_p_value` is below this.
pub const SRM_THRESHOLD: f64 = 0.001;

/// The event types that are actions on their item (besides any event with `dwell_ms`).
pub const ACTION_TYPES: [&str; 3] = ["click", "add_to_cart", "purchase"];

// ---------------------------------------------------------------------------------------
// Config
// ---------------------------------------------------------------------------------------

/// One `[[experiments.variants]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub name: String,
    /// Positive, finite (default 1).
    pub weight: f64,
    /// `recs_weights`, in thousandths, per source in the order of `recs::SOURCES`; `None`
    /// for a source it does not name (that source keeps its `[recs] weights` value).
    pub recs_weights_milli: [Option<i64>; 5],
}

/// One `[[experiments]]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    pub name: String,
    /// Default: the name.
    pub salt: String,
    pub attribution_ms: i64,
    /// At least 2; the first is the control.
    pub variants: Vec<Variant>,
}

/// Reads the `[[experiments]]` array; an error names the key
/// (`experiments[1].variants[0].recs_weights: …`).
pub fn parse_experiments(value: &toml::Value) -> Result<Vec<Experiment>, String> {
    let toml::Value::Array(list) = value else {
        return Err("experiments: not an array of tables ([[experiments]])".into());
    };
    let mut experiments: Vec<Experiment> = Vec::new();
    for (i, table) in list.iter().enumerate() {
        let at = format!("experiments[{i}]");
        let toml::Value::Table(table) = table else {
            return Err(format!("{at}: not a table"));
        };
        for name in table.keys() {
            if !["name", "salt", "attribution_ms", "variants"].contains(&name.as_str()) {
                return Err(format!("{at}.{name}: unknown key"));
            }
        }
        let name = required_name(&at, table)?;
        if experiments.iter().any(|e| e.name == name) {
            return Err(format!(
                "{at}.name: {name:?} is the name of an earlier experiment"
            ));
        }
        let salt = match table.get("salt") {
            None => name.clone(),
            Some(toml::Value::String(s)) => s.clone(),
            Some(other) => return Err(format!("{at}.salt: {other} is not a string")),
        };
        let attribution_ms = match table.get("attribution_ms") {
            None => DEFAULT_ATTRIBUTION_MS,
            Some(v) => integer(&format!("{at}.attribution_ms"), v, 1)?,
        };
        let key = format!("{at}.variants");
        let variants = match table.get("variants") {
            None => return Err(format!("{key}: missing (at least 2 variants)")),
            Some(toml::Value::Array(list)) => list,
            Some(_) => return Err(format!("{key}: not an array of tables")),
        };
        if variants.len() < 2 {
            return Err(format!(
                "{key}: at least 2 variants needed, found {}",
                variants.len()
            ));
        }
        let mut parsed: Vec<Variant> = Vec::new();
        for (j, variant) in variants.iter().enumerate() {
            let at = format!("{key}[{j}]");
            let toml::Value::Table(variant) = variant else {
                return Err(format!("{at}: not a table"));
            };
            for name in variant.keys() {
                if !["name", "weight", "recs_weights"].contains(&name.as_str()) {
                    return Err(format!("{at}.{name}: unknown key"));
                }
            }
            let name = required_name(&at, variant)?;
            if parsed.iter().any(|v| v.name == name) {
                return Err(format!(
                    "{at}.name: {name:?} is the name of an earlier variant"
                ));
            }
            let weight = match variant.get("weight") {
                None => 1.0,
                Some(v) => {
                    let key = format!("{at}.weight");
                    let w = number(&key, v)?;
                    if w <= 0.0 {
                        return Err(format!("{key}: {w} is not positive"));
                    }
                    w
                }
            };
            let mut recs_weights_milli = [None; 5];
            if let Some(value) = variant.get("recs_weights") {
                let key = format!("{at}.recs_weights");
                if i > 0 {
                    return Err(format!(
                        "{key}: only the first experiment may set recs_weights"
                    ));
                }
                let toml::Value::Table(weights) = value else {
                    return Err(format!("{key}: not a table"));
                };
                for (source, w) in weights {
                    let key = format!("{key}.{source}");
                    let Some(s) = recs::SOURCES.iter().position(|x| x == source) else {
                        return Err(format!("{key}: unknown key"));
                    };
                    let w = number(&key, w)?;
                    if !(0.0..=1000.0).contains(&w) {
                        return Err(format!("{key}: {w} is not in [0, 1000]"));
                    }
                    recs_weights_milli[s] = Some(to_milli(w));
                }
            }
            parsed.push(Variant {
                name,
                weight,
                recs_weights_milli,
            });
        }
        let total: f64 = parsed.iter().map(|v| v.weight).sum();
        if !total.is_finite() {
            return Err(format!("{key}: the weights' sum is not finite"));
        }
        experiments.push(Experiment {
            name,
            salt,
            attribution_ms,
            variants: parsed,
        });
    }
    Ok(experiments)
}

/// `name`: required, a non-empty string.
fn required_name(at: &str, table: &toml::Table) -> Result<String, String> {
    match table.get("name") {
        None => Err(format!("{at}.name: missing")),
        Some(toml::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        Some(other) => Err(format!("{at}.name: {other} is not a non-empty string")),
    }
}

// ---------------------------------------------------------------------------------------
// Assignment
// ---------------------------------------------------------------------------------------

/// 32-bit FNV-1a over the UTF-8 bytes.
pub fn fnv1a32(text: &str) -> u32 {
    let mut hash: u32 = 0x811c_9dc5;
    for b in text.bytes() {
        hash ^= u32::from(b);
        hash = hash.wrapping_mul(0x0100_0193);
    }
    hash
}

/// `fnv1a32(decimal(fnv1a32(salt + user))) % 10000` (GrowthBook's hash v2 × 10000).
pub fn bucket(salt: &str, user: &str) -> u32 {
    let inner = fnv1a32(&format!("{salt}{user}"));
    fnv1a32(&inner.to_string()) % BUCKETS
}

/// Each variant's interval of [0, 1), GrowthBook's `getBucketRanges` with full coverage:
/// `[c_{j-1}, c_{j-1} + s_j)` where `c` accumulates the shares in f64 (brief revised with
/// the engine to match GrowthBook at boundaries that are not whole buckets).
pub fn bucket_ranges(shares: &[f64]) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    let mut c = 0.0f64;
    for s in shares {
        out.push((c, c + s));
        c += s;
    }
    out
}

/// The variant (0-based) whose interval holds `bucket / 10000` (GrowthBook's
/// `chooseVariation`); the last variant if none does (float sums just under 1).
pub fn variant_of_bucket(ranges: &[(f64, f64)], bucket: u32) -> usize {
    let n = bucket as f64 / BUCKETS as f64;
    for (j, (lo, hi)) in ranges.iter().enumerate() {
        if n >= *lo && n < *hi {
            return j;
        }
    }
    ranges.len() - 1
}

impl Experiment {
    pub fn weights(&self) -> Vec<f64> {
        self.variants.iter().map(|v| v.weight).collect()
    }

    pub fn bounds(&self) -> Vec<(f64, f64)> {
        bucket_ranges(&self.shares())
    }

    /// The variant index of `user`.
    pub fn assign(&self, user: &str) -> usize {
        variant_of_bucket(&self.bounds(), bucket(&self.salt, user))
    }

    /// Each variant's share: the weights themselves when they sum to 1 (within 1e-9), as
    /// GrowthBook takes them; else `w_v / W`.
    pub fn shares(&self) -> Vec<f64> {
        let total: f64 = self.variants.iter().map(|v| v.weight).sum();
        if (total - 1.0).abs() <= 1e-9 {
            return self.weights();
        }
        self.variants.iter().map(|v| v.weight / total).collect()
    }
}

/// The variant name and blend weights (thousandths, in the order of `recs::SOURCES`) of a
/// user's `recs` row: their variant of the first experiment, its `recs_weights` over
/// `[recs] weights`; `"default"` and `[recs] weights` without experiments.
pub fn recs_variant(params: &Params, user: &str) -> (String, [i64; 5]) {
    let base = params.recs.weights_milli;
    let Some(first) = params.experiments.first() else {
        return ("default".to_string(), base);
    };
    let variant = &first.variants[first.assign(user)];
    let mut weights = base;
    for (w, over) in weights.iter_mut().zip(variant.recs_weights_milli) {
        if let Some(over) = over {
            *w = over;
        }
    }
    (variant.name.clone(), weights)
}

// ---------------------------------------------------------------------------------------
// Per-user numbers
// ---------------------------------------------------------------------------------------

/// An event that is an action on its item (not an impression; a click, add to cart or
/// purchase, or any other type with `dwell_ms`); its item.
pub fn action_item(s: &Stamped) -> Option<&str> {
    let e = &s.event;
    if e.kind == "impression" {
        return None;
    }
    let item = e.item.as_deref()?;
    (ACTION_TYPES.contains(&e.kind.as_str()) || e.dwell_ms.is_some()).then_some(item)
}

/// A purchase's `value` in cents, `round(value · 100)` (half away from zero); 0 when
/// absent or not a number.
pub fn value_cents(s: &Stamped) -> i64 {
    let value = s
        .event
        .fields
        .get("value")
        .and_then(Value::as_f64)
        .unwrap_or(0.0);
    (value * 100.0).round() as i64
}

/// One exposed user's numbers in one experiment at T.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserStats {
    pub impressions: i64,
    pub clicks: i64,
    pub carts: i64,
    /// 1 with an attributed purchase, else 0.
    pub converted: i64,
    pub revenue_cents: i128,
    pub dwell_sum: i128,
    pub dwell_n: i64,
}

/// A user's numbers at `now` for each attribution span in `spans` (one per experiment),
/// from their events (any times; those effective after `now` are ignored). `None` when the
/// user has no impression by `now` (not exposed).
pub fn user_stats(events: &[&Stamped], now: i64, spans: &[i64]) -> Option<Vec<UserStats>> {
    let applied: Vec<&Stamped> = events
        .iter()
        .copied()
        .filter(|s| s.effective <= now)
        .collect();
    // item → (ts, rec id) of the impressions exposing it
    let mut exposed: HashMap<&str, Vec<(i64, Option<&str>)>> = HashMap::new();
    let mut impressions = 0;
    for s in &applied {
        let e = &s.event;
        if e.kind != "impression" {
            continue;
        }
        impressions += 1;
        let set: BTreeSet<&str> = e
            .items
            .iter()
            .map(String::as_str)
            .chain(e.item.as_deref())
            .collect();
        for item in set {
            exposed
                .entry(item)
                .or_default()
                .push((e.ts, e.rec.as_deref()));
        }
    }
    if impressions == 0 {
        return None;
    }
    let stats = spans
        .iter()
        .map(|span| {
            let mut u = UserStats {
                impressions,
                ..UserStats::default()
            };
            for s in &applied {
                let Some(item) = action_item(s) else { continue };
                let ts = s.event.ts;
                // A click counts only as a click-through: it carries the `rec` id of an
                // impression that showed the item (brief revised with the engine: clicks on an
                // item reached some other way are not the list's clicks). Other actions count
                // after any impression that showed the item.
                let click_rec = (s.event.kind == "click").then_some(s.event.rec.as_deref());
                let attributed = exposed.get(item).is_some_and(|list| {
                    list.iter().any(|(x, rec)| {
                        *x <= ts
                            && ts <= x.saturating_add(*span)
                            && click_rec.is_none_or(|wanted| wanted.is_some() && wanted == *rec)
                    })
                });
                if !attributed {
                    continue;
                }
                match s.event.kind.as_str() {
                    "click" => u.clicks += 1,
                    "add_to_cart" => u.carts += 1,
                    "purchase" => {
                        u.converted = 1;
                        u.revenue_cents += i128::from(value_cents(s));
                    }
                    _ => {}
                }
                if let Some(d) = s.event.dwell_ms {
                    u.dwell_sum += i128::from(d);
                    u.dwell_n += 1;
                }
            }
            u
        })
        .collect();
    Some(stats)
}

/// The sums over the exposed users of one (experiment, variant).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Totals {
    pub users: i64,
    pub impressions: i64,
    pub clicks: i64,
    pub carts: i64,
    pub conversions: i64,
    pub revenue_cents: i128,
    pub dwell_sum: i128,
    pub dwell_n: i64,
    /// Σ impressions_u²
    pub sii: i128,
    /// Σ clicks_u²
    pub scc: i128,
    /// Σ clicks_u · impressions_u
    pub sci: i128,
}

impl Totals {
    /// Adds (`sign` 1) or removes (`sign` -1) one user.
    pub fn add(&mut self, u: &UserStats, sign: i64) {
        let (i, c) = (i128::from(u.impressions), i128::from(u.clicks));
        let s128 = i128::from(sign);
        self.users += sign;
        self.impressions += sign * u.impressions;
        self.clicks += sign * u.clicks;
        self.carts += sign * u.carts;
        self.conversions += sign * u.converted;
        self.revenue_cents += s128 * u.revenue_cents;
        self.dwell_sum += s128 * u.dwell_sum;
        self.dwell_n += sign * u.dwell_n;
        self.sii += s128 * i * i;
        self.scc += s128 * c * c;
        self.sci += s128 * c * i;
    }
}

// ---------------------------------------------------------------------------------------
// Statistics
// ---------------------------------------------------------------------------------------

/// `2 · (1 − Φ(|z|))` (computed as the upper tail).
pub fn two_sided_p(z: f64) -> f64 {
    let normal = Normal::new(0.0, 1.0).unwrap();
    2.0 * normal.sf(z.abs())
}

/// `var(r)` of a variant's CTR r = C/I by the delta method with users as units; `None`
/// unless n ≥ 2 and I > 0.
pub fn ctr_variance(t: &Totals) -> Option<f64> {
    if t.users < 2 || t.impressions <= 0 {
        return None;
    }
    let n = t.users as f64;
    let (sii, scc, sci) = (t.sii as f64, t.scc as f64, t.sci as f64);
    let mi = t.impressions as f64 / n;
    let mc = t.clicks as f64 / n;
    let r = t.clicks as f64 / t.impressions as f64;
    let vi = (sii - n * mi * mi) / (n - 1.0);
    let vc = (scc - n * mc * mc) / (n - 1.0);
    let cov = (sci - n * mc * mi) / (n - 1.0);
    // A variance is never negative; float rounding can leave a hair below 0 when every
    // user has the same CTR (brief clarified with the engine: clamp at 0).
    Some(((vc - 2.0 * r * cov + r * r * vi) / (n * mi * mi)).max(0.0))
}

/// A lift with its 95 % interval and p-value: `[lift, ci_low, ci_high, p_value]`.
pub type LiftStats = [Option<f64>; 4];

/// CTR of variant `v` against the control `c`: lift, interval, p-value (brief's null
/// rules).
pub fn ctr_stats(v: &Totals, c: &Totals) -> LiftStats {
    let (Some(var_v), Some(var_c)) = (ctr_variance(v), ctr_variance(c)) else {
        return [None; 4];
    };
    let r_v = v.clicks as f64 / v.impressions as f64;
    let r_c = c.clicks as f64 / c.impressions as f64;
    if r_c <= 0.0 {
        return [None; 4];
    }
    let lift = r_v / r_c - 1.0;
    let var_lift = var_v / (r_c * r_c) + r_v * r_v * var_c / r_c.powi(4);
    let half = Z_95 * var_lift.sqrt();
    let se = (var_v + var_c).sqrt();
    let p = (se > 0.0).then(|| two_sided_p((r_v - r_c).abs() / se));
    [Some(lift), Some(lift - half), Some(lift + half), p]
}

/// Conversion of variant `v` against the control `c`: lift, interval (null when the
/// control's rate is 0), pooled two-proportion p-value (null when its se is 0); all null
/// unless both have users.
pub fn conversion_stats(v: &Totals, c: &Totals) -> LiftStats {
    if v.users < 1 || c.users < 1 {
        return [None; 4];
    }
    let (n_v, n_c) = (v.users as f64, c.users as f64);
    let p_v = v.conversions as f64 / n_v;
    let p_c = c.conversions as f64 / n_c;
    let mut out = [None; 4];
    if p_c > 0.0 {
        let lift = p_v / p_c - 1.0;
        let var_v = p_v * (1.0 - p_v) / n_v;
        let var_c = p_c * (1.0 - p_c) / n_c;
        let var_lift = var_v / (p_c * p_c) + p_v * p_v * var_c / p_c.powi(4);
        let half = Z_95 * var_lift.sqrt();
        out[0] = Some(lift);
        out[1] = Some(lift - half);
        out[2] = Some(lift + half);
    }
    let p = (v.conversions + c.conversions) as f64 / (n_v + n_c);
    let se = (p * (1.0 - p) * (1.0 / n_v + 1.0 / n_c)).sqrt();
    if se > 0.0 {
        out[3] = Some(two_sided_p((p_v - p_c).abs() / se));
    }
    out
}

/// The sample ratio mismatch p-value: the chi-square upper tail (k − 1 degrees of freedom)
/// of the users per variant against the expected shares. `None` when there are no users.
pub fn srm_p_value(users: &[i64], shares: &[f64]) -> Option<f64> {
    let total: i64 = users.iter().sum();
    if total <= 0 {
        return None;
    }
    let n = total as f64;
    let chi2: f64 = users
        .iter()
        .zip(shares)
        .map(|(u, s)| {
            let expected = n * s;
            (*u as f64 - expected).powi(2) / expected
        })
        .sum();
    let dist = ChiSquared::new((users.len() - 1) as f64).unwrap();
    Some(dist.sf(chi2))
}

/// The rows of one experiment from its totals per variant (none without exposed users).
pub fn experiment_rows(experiment: &Experiment, totals: &[Totals]) -> Rows {
    let users: Vec<i64> = totals.iter().map(|t| t.users).collect();
    let Some(srm_p) = srm_p_value(&users, &experiment.shares()) else {
        return Vec::new();
    };
    let ratio = |a: f64, b: f64| (b != 0.0).then(|| a / b);
    let control = &totals[0];
    experiment
        .variants
        .iter()
        .zip(totals)
        .zip(experiment.shares())
        .enumerate()
        .map(|(j, ((variant, t), share))| {
            let (ctr, conversion) = if j == 0 {
                ([None; 4], [None; 4])
            } else {
                (ctr_stats(t, control), conversion_stats(t, control))
            };
            let value = json!({
                "users": t.users,
                "impressions": t.impressions,
                "clicks": t.clicks,
                "add_to_carts": t.carts,
                "conversions": t.conversions,
                "revenue": t.revenue_cents as f64 / 100.0,
                "dwell_events": t.dwell_n,
                "ctr": ratio(t.clicks as f64, t.impressions as f64),
                "conversion_rate": ratio(t.conversions as f64, t.users as f64),
                "mean_dwell_ms": ratio(t.dwell_sum as f64, t.dwell_n as f64),
                "expected_share": share,
                "control": j == 0,
                "lift": ctr[0],
                "ci_low": ctr[1],
                "ci_high": ctr[2],
                "p_value": ctr[3],
                "conversion_lift": conversion[0],
                "conversion_ci_low": conversion[1],
                "conversion_ci_high": conversion[2],
                "conversion_p_value": conversion[3],
                "srm_p_value": srm_p,
                "srm": srm_p < SRM_THRESHOLD,
            });
            (
                json!({"experiment": experiment.name, "variant": variant.name}),
                value,
            )
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// The view
// ---------------------------------------------------------------------------------------

/// The attribution span of each experiment.
fn spans(params: &Params) -> Vec<i64> {
    params
        .experiments
        .iter()
        .map(|e| e.attribution_ms)
        .collect()
}

/// The `experiments` view at `now` over `events` (all users' events; those effective after
/// `now` are ignored), from scratch.
pub fn views_at(events: &[&Stamped], now: i64, params: &Params) -> BTreeMap<&'static str, Rows> {
    let mut by_user: BTreeMap<&str, Vec<&Stamped>> = BTreeMap::new();
    for s in events {
        by_user.entry(&s.event.user).or_default().push(s);
    }
    let mut state = State::new(params);
    for (user, events) in by_user {
        state.update_user(user, &events, now, params);
    }
    BTreeMap::from([("experiments", state.rows(params))])
}

/// The view's state kept up to date user by user (for the checker): each exposed user's
/// numbers and variants, and the totals per (experiment, variant).
pub struct State {
    /// user → (variant per experiment, numbers per experiment)
    users: HashMap<String, (Vec<usize>, Vec<UserStats>)>,
    /// per experiment, per variant
    totals: Vec<Vec<Totals>>,
}

impl State {
    pub fn new(params: &Params) -> State {
        State {
            users: HashMap::new(),
            totals: params
                .experiments
                .iter()
                .map(|e| vec![Totals::default(); e.variants.len()])
                .collect(),
        }
    }

    /// Recomputes one user's numbers at `now` from all their events.
    pub fn update_user(&mut self, user: &str, events: &[&Stamped], now: i64, params: &Params) {
        if let Some((variants, stats)) = self.users.remove(user) {
            for (e, (v, u)) in variants.iter().zip(&stats).enumerate() {
                self.totals[e][*v].add(u, -1);
            }
        }
        let Some(stats) = user_stats(events, now, &spans(params)) else {
            return;
        };
        let variants: Vec<usize> = params.experiments.iter().map(|e| e.assign(user)).collect();
        for (e, (v, u)) in variants.iter().zip(&stats).enumerate() {
            self.totals[e][*v].add(u, 1);
        }
        self.users.insert(user.to_string(), (variants, stats));
    }

    pub fn totals(&self) -> &[Vec<Totals>] {
        &self.totals
    }

    pub fn rows(&self, params: &Params) -> Rows {
        params
            .experiments
            .iter()
            .zip(&self.totals)
            .flat_map(|(e, totals)| experiment_rows(e, totals))
            .collect()
    }
}

/// For a mismatch report: the exposed users of the row's (experiment, variant) at `now`
/// with their numbers (first few).
pub fn describe(key: &Value, events: &[&Stamped], now: i64, params: &Params) -> String {
    const SHOWN: usize = 8;
    let (Some(name), Some(variant)) = (key["experiment"].as_str(), key["variant"].as_str()) else {
        return String::new();
    };
    let Some((e, experiment)) = params
        .experiments
        .iter()
        .enumerate()
        .find(|(_, x)| x.name == name)
    else {
        return format!("  experiments: the config has no experiment {name:?}\n");
    };
    let Some(v) = experiment.variants.iter().position(|x| x.name == variant) else {
        return format!("  experiments: {name:?} has no variant {variant:?}\n");
    };
    let mut by_user: BTreeMap<&str, Vec<&Stamped>> = BTreeMap::new();
    for s in events {
        by_user.entry(&s.event.user).or_default().push(s);
    }
    let mut lines = Vec::new();
    let mut count = 0;
    for (user, events) in by_user {
        if experiment.assign(user) != v {
            continue;
        }
        let Some(stats) = user_stats(&events, now, &spans(params)) else {
            continue;
        };
        count += 1;
        if lines.len() < SHOWN {
            let u = &stats[e];
            lines.push(format!(
                "    {user} (bucket {}): impressions {} clicks {} carts {} converted {} revenue {}c dwell {}/{}\n",
                bucket(&experiment.salt, user),
                u.impressions,
                u.clicks,
                u.carts,
                u.converted,
                u.revenue_cents,
                u.dwell_sum,
                u.dwell_n
            ));
        }
    }
    format!(
        "  experiment {name} variant {variant} at T = {now} (attribution {} ms, bounds {:?}): {count} exposed users, first {SHOWN}:\n{}",
        experiment.attribution_ms,
        experiment.bounds(),
        lines.concat()
    )
}
