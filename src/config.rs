//! The config file (DESIGN.md §2): TOML, every key optional, defaults = the seed's numbers.
//! An unknown key or a bad value is an error that names it.

use intentflow_dataflows::assignment::BUCKETS;
use intentflow_dataflows::experiments::{Experiment, Variant};
use intentflow_dataflows::features::FeatureSums;
use intentflow_dataflows::model::{EventKind, ItemKind, Score, ScrollDepth};
use intentflow_dataflows::name::Name;
use intentflow_dataflows::params::DAY_MS;
use intentflow_dataflows::params::{
    BoostWindow, EngagementParams, FeedbackParams, SessionParams, TypeSet, ViewParams, Weights,
    WindowParams,
};
use intentflow_dataflows::recs::Source;
use intentflow_dataflows::segments::{Conditions, ContentRule, RuleSegment, SegmentParams};
use intentflow_dataflows::sequences::SequenceParams;
use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The full default config, with comments: what `intentflow config --print-defaults` prints.
pub const DEFAULT_CONFIG: &str = r#"# intentflow configuration. Every key is optional; the values below are the defaults.

[weights]
# Intent weight of one event of each type towards its (user, item) score.
# The seed's formula is click*1 + add_to_cart*3 + purchase*5; other explicit actions
# carry smaller weights; views, scrolls, impressions and exits count only through
# implicit feedback.
page_view = 0
click = 1
scroll = 0
video_play = 1
form_submit = 0
add_to_cart = 3
wishlist = 2
bookmark = 2
share = 2
comment = 1
purchase = 5
impression = 0
exit = 0
# Weights for event types the engine does not know (they count 0 unless named here),
# e.g. custom = { newsletter_signup = 2 }
custom = {}

[sessions]
# Events of a user that carry no client session id are split into sessions wherever two
# consecutive events are more than this many milliseconds apart (30 minutes).
inactivity_gap_ms = 1800000

[engagement]
# Session engagement classes (seed 1b). A session with any event of a `high_intent` type is
# high_intent (the sessions view's `high_intent` field counts these events); otherwise one
# with any event of an `active` type, or scrolled at least `passive_max_scroll` deep, is
# active; otherwise it is passive. Type names are event types or names in weights.custom.
high_intent = ["add_to_cart", "purchase"]
active = ["comment", "share", "wishlist", "bookmark", "form_submit"]
passive_max_scroll = 0.5

[feedback]
# Implicit feedback on scores (seeds 4b, 4c).
# An event on an item with a dwell longer than this adds long_dwell_boost to its score.
long_dwell_ms = 120000
long_dwell_boost = 1
# A page_view or exit with a dwell shorter than this is a quick exit: it subtracts
# quick_exit_penalty.
quick_exit_ms = 10000
quick_exit_penalty = 1
# A session with one page view, shorter than this (by time span and by dwell), is a bounce.
bounce_ms = 10000
# An item quickly exited after following a recommendation (events with `rec`) by at least
# rejected_min_users distinct users is rejected: every score row of it loses
# rejected_penalty.
rejected_min_users = 3
rejected_penalty = 2

[windows]
# Every view covers the events of the last span_ms of event time (30 days); an event's
# contribution is retracted exactly when it leaves.
span_ms = 2592000000
# features.active_<N>d: whether the user had an event in the last N days.
recency_days = [1, 7, 30]
# Stacked windows approximating time decay: an event younger than span_ms adds `extra`
# times its score contribution again, e.g. [{ span_ms = 86400000, extra = 1 }] makes the
# last day count double.
boost = []

[segments]
# Behavioural segments (seed 2a). `intentflow train kmeans` fits k centroids (k-means++
# from this seed) on the features view; `run --model` loads them.
k = 4
seed = 7
# Features the k-means model reads: how users behave (attention, intent, bouncing) rather
# than how much; [] reads every feature the view prints.
features = ["avg_dwell_ms", "avg_scroll", "high_intent", "bounce_rate"]
# Rename segments by id, e.g. names = { c2 = "bargain hunters" }.
names = {}
# Rule segments, checked in order before k-means: a user whose features satisfy `when`
# ("feature <op> number" joined by "and"; op: < <= > >= == !=) is in that segment, e.g.
# rules = [{ id = "vip", name = "vip", when = "purchases >= 3" }]
rules = []

[rules]
# Content each segment (by name) is offered (seed 2c): catalog items of these kinds
# (product, article, guide, offer), optionally only premium = true or false ones.
buyers = { kinds = ["product", "offer"], premium = true }
researchers = { kinds = ["article", "guide", "product"] }
browsers = { kinds = ["guide", "article"] }
disengaged = { kinds = ["offer"] }

[propensity]
# Labels for `intentflow train propensity`: conversion = a purchase within horizon_days
# after a cutoff, churn = no event within horizon_days after it.
horizon_days = 7

[als]
# Implicit-feedback ALS (`intentflow train als`, and `run --refit-every` when the als view
# is on): factors per item, ridge penalty, confidence = 1 + alpha * score, sweeps.
factors = 16
lambda = 0.1
alpha = 2.0
iterations = 12

[sequences]
# Page steps are page_view events' page types, and "purchase" for purchases; item steps
# are events' items (repeats in a row collapsed). next lists the next_k most likely next
# steps from each position; paths are the last path_length page steps up to each
# purchase; funnel counts the sessions that pass these steps in order.
next_k = 5
path_length = 4
funnel = ["home", "category", "product", "cart", "purchase"]

[similar]
# Item-to-item collaborative filtering: each user's recent_items highest-scored items
# take part (cost per user grows with its square); a pair counts once min_users users
# share it; each item keeps k neighbours.
recent_items = 20
k = 10
min_users = 2
# Recomputed once per this much event time, from the top items at the period's start.
refresh_ms = 60000

[recs]
# Items per user in the recs view, ALS candidates per user in the als view, and items per
# segment in the segment and popular sources.
k = 10
als_candidates = 20
popular_items = 20
# Item similarity and next steps reach users' lists once per this much event time (1 day),
# as of the period's start, like a nightly model: a change of theirs re-ranks every user who
# reads them. A user's own activity re-ranks their list at once. 1: no delay.
shared_refresh_ms = 86400000
# Segment popularity is recomputed once per this much event time (1 day); it reaches
# cold-start users.
popular_refresh_ms = 86400000
# Blend: score = sum over sources of weight * value (each value 0..1); the source that
# contributes most is the item's reason.
weights = { similar = 1.0, next = 0.5, als = 1.0, segment = 0.3, popular = 0.1 }

# A/B experiments (none by default). Each user's variant is a hash of (salt, user): stable
# across restarts, worker counts and processes, and the same as GrowthBook's (hash v2).
# The first variant is the control. Actions on an item an impression showed at most
# attribution_ms before count for the variant. Only the first experiment may set
# recs_weights: its variants' recs blends (a weight of 0 turns a source off).
#
# [[experiments]]
# name = "strategy"
# salt = "strategy"                  # default: the name
# attribution_ms = 86400000          # 24 hours
# variants = [
#   { name = "control", weight = 0.5 },
#   { name = "treatment", weight = 0.5, recs_weights = { segment = 1.0, popular = 1.0 } },
# ]
"#;

/// An action counts for an impression shown at most this long before it (24 h).
const DEFAULT_ATTRIBUTION_MS: u64 = 86_400_000;

/// A loaded config: the views' parameters and the training commands' ones.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Config {
    pub views: ViewParams,
    pub train: TrainParams,
}

/// What `intentflow train` reads from the config.
#[derive(Clone, Debug, PartialEq)]
pub struct TrainParams {
    pub k: usize,
    pub seed: u64,
    /// The features k-means reads; empty: every feature.
    pub features: Vec<String>,
    pub horizon_ms: u64,
    pub als: crate::train::als::AlsSpec,
}

impl Default for TrainParams {
    fn default() -> Self {
        TrainParams {
            k: 4,
            seed: 7,
            features: ["avg_dwell_ms", "avg_scroll", "high_intent", "bounce_rate"]
                .map(String::from)
                .to_vec(),
            horizon_ms: 7 * DAY_MS,
            als: Default::default(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ConfigFile {
    weights: WeightsTable,
    sessions: SessionsTable,
    engagement: EngagementTable,
    feedback: FeedbackTable,
    windows: WindowsTable,
    segments: SegmentsTable,
    rules: BTreeMap<String, ContentTable>,
    propensity: PropensityTable,
    als: AlsTable,
    recs: RecsTable,
    sequences: SequencesTable,
    similar: SimilarTable,
    experiments: Vec<ExperimentTable>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SimilarTable {
    recent_items: Option<usize>,
    k: Option<usize>,
    min_users: Option<usize>,
    refresh_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SequencesTable {
    next_k: Option<usize>,
    path_length: Option<usize>,
    funnel: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct AlsTable {
    factors: Option<usize>,
    lambda: Option<f64>,
    alpha: Option<f64>,
    iterations: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RecsTable {
    k: Option<usize>,
    als_candidates: Option<usize>,
    popular_items: Option<usize>,
    shared_refresh_ms: Option<u64>,
    popular_refresh_ms: Option<u64>,
    weights: RecsWeights,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExperimentTable {
    name: String,
    salt: Option<String>,
    attribution_ms: Option<u64>,
    variants: Vec<VariantTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariantTable {
    name: String,
    weight: Option<f64>,
    recs_weights: Option<RecsWeights>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RecsWeights {
    similar: Option<f64>,
    next: Option<f64>,
    als: Option<f64>,
    segment: Option<f64>,
    popular: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SegmentsTable {
    k: Option<usize>,
    seed: Option<u64>,
    features: Option<Vec<String>>,
    names: BTreeMap<String, String>,
    rules: Vec<RuleTable>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleTable {
    id: String,
    name: Option<String>,
    when: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ContentTable {
    kinds: Vec<String>,
    premium: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PropensityTable {
    horizon_days: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct EngagementTable {
    high_intent: Option<Vec<String>>,
    active: Option<Vec<String>>,
    passive_max_scroll: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct FeedbackTable {
    long_dwell_ms: Option<u64>,
    long_dwell_boost: Option<f64>,
    quick_exit_ms: Option<u64>,
    quick_exit_penalty: Option<f64>,
    bounce_ms: Option<u64>,
    rejected_min_users: Option<u64>,
    rejected_penalty: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WindowsTable {
    span_ms: Option<u64>,
    recency_days: Option<Vec<u64>>,
    boost: Option<Vec<BoostTable>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BoostTable {
    span_ms: u64,
    extra: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct WeightsTable {
    page_view: Option<f64>,
    click: Option<f64>,
    scroll: Option<f64>,
    video_play: Option<f64>,
    form_submit: Option<f64>,
    add_to_cart: Option<f64>,
    wishlist: Option<f64>,
    bookmark: Option<f64>,
    share: Option<f64>,
    comment: Option<f64>,
    purchase: Option<f64>,
    impression: Option<f64>,
    exit: Option<f64>,
    custom: BTreeMap<String, f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct SessionsTable {
    inactivity_gap_ms: Option<u64>,
}

/// Reads and validates a config file.
pub fn load(path: &Path) -> Result<Config, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read config {}: {error}", path.display()))?;
    parse(&text).map_err(|error| format!("config {}: {error}", path.display()))
}

/// Parses config text; errors name the offending key.
pub fn parse(text: &str) -> Result<Config, String> {
    let file: ConfigFile = toml::from_str(text).map_err(|error| error.to_string())?;
    let mut params = ViewParams::default();
    apply_weights(&file.weights, &mut params.weights)?;
    apply_engagement(&file.engagement, &file.weights, &mut params.engagement)?;
    apply_feedback(&file.feedback, &mut params.feedback)?;
    apply_windows(&file.windows, &mut params.windows)?;
    if let Some(gap) = file.sessions.inactivity_gap_ms {
        if gap == 0 {
            return Err("sessions.inactivity_gap_ms must be positive".into());
        }
        params.sessions = SessionParams {
            inactivity_gap_ms: gap,
        };
    }
    let feature_names = feature_names(&params.windows.recency_days);
    apply_segments(&file.segments, &feature_names, &mut params.segments)?;
    apply_content_rules(&file.rules, &mut params.segments)?;
    let mut train = TrainParams::default();
    if let Some(k) = file.segments.k {
        train.k = positive("segments.k", k as u64)? as usize;
    }
    if let Some(seed) = file.segments.seed {
        train.seed = seed;
    }
    if let Some(features) = &file.segments.features {
        for feature in features {
            if !feature_names.contains(feature) {
                return Err(unknown_feature(
                    "segments.features",
                    feature,
                    &feature_names,
                ));
            }
        }
        train.features = features.clone();
    }
    if let Some(days) = file.propensity.horizon_days {
        train.horizon_ms = positive("propensity.horizon_days", days)? * DAY_MS;
    }
    apply_als(&file.als, &mut train.als)?;
    apply_sequences(&file.sequences, &mut params.sequences)?;
    if let Some(count) = file.similar.recent_items {
        params.similar.recent_items = positive("similar.recent_items", count as u64)? as usize;
    }
    if let Some(k) = file.similar.k {
        params.similar.k = positive("similar.k", k as u64)? as usize;
    }
    if let Some(every) = file.similar.refresh_ms {
        params.similar.refresh_ms = positive("similar.refresh_ms", every)?;
    }
    if let Some(users) = file.similar.min_users {
        params.similar.min_users = positive("similar.min_users", users as u64)? as usize;
    }
    if let Some(k) = file.recs.k {
        params.recs.k = positive("recs.k", k as u64)? as usize;
    }
    if let Some(count) = file.recs.als_candidates {
        params.recs.als_candidates = positive("recs.als_candidates", count as u64)? as usize;
    }
    if let Some(count) = file.recs.popular_items {
        params.recs.popular_items = positive("recs.popular_items", count as u64)? as usize;
    }
    if let Some(every) = file.recs.shared_refresh_ms {
        params.recs.shared_refresh_ms = positive("recs.shared_refresh_ms", every)?;
    }
    if let Some(every) = file.recs.popular_refresh_ms {
        params.recs.popular_refresh_ms = positive("recs.popular_refresh_ms", every)?;
    }
    params.recs.weights = recs_weights("recs.weights", &file.recs.weights, params.recs.weights)?;
    params.experiments = experiments(&file.experiments, params.recs.weights)?;
    Ok(Config {
        views: params,
        train,
    })
}

/// Blend weights (thousandths): `defaults` with the table's overrides.
fn recs_weights(key: &str, table: &RecsWeights, defaults: [i64; 5]) -> Result<[i64; 5], String> {
    let mut weights = defaults;
    for (source, weight) in [
        (Source::Similar, table.similar),
        (Source::Next, table.next),
        (Source::Als, table.als),
        (Source::Segment, table.segment),
        (Source::Popular, table.popular),
    ] {
        if let Some(weight) = weight {
            let key = format!("{key}.{}", source.as_str());
            if !(weight.is_finite() && (0.0..=1000.0).contains(&weight)) {
                return Err(format!(
                    "{key} must be a number from 0 to 1000, not {weight}"
                ));
            }
            weights[source as usize] = (weight * 1000.0).round() as i64;
        }
    }
    Ok(weights)
}

/// `[[experiments]]`: names unique, two or more variants with positive weights; only the
/// first experiment's variants may set `recs_weights` (a user gets one blend).
fn experiments(tables: &[ExperimentTable], recs: [i64; 5]) -> Result<Vec<Experiment>, String> {
    let mut names = BTreeSet::new();
    let mut out = Vec::new();
    for (index, table) in tables.iter().enumerate() {
        let key = format!("experiments[{index}]");
        if table.name.is_empty() {
            return Err(format!("{key}.name must not be empty"));
        }
        if !names.insert(table.name.as_str()) {
            return Err(format!(
                "{key}.name: a second experiment named {:?}",
                table.name
            ));
        }
        if table.variants.len() < 2 {
            return Err(format!(
                "{key}.variants: an experiment needs at least 2 variants"
            ));
        }
        let attribution_ms = match table.attribution_ms {
            Some(ms) => positive(&format!("{key}.attribution_ms"), ms)?,
            None => DEFAULT_ATTRIBUTION_MS,
        };
        let mut variant_names = BTreeSet::new();
        let mut variants = Vec::new();
        for (v, variant) in table.variants.iter().enumerate() {
            let key = format!("{key}.variants[{v}]");
            if variant.name.is_empty() {
                return Err(format!("{key}.name must not be empty"));
            }
            if !variant_names.insert(variant.name.as_str()) {
                return Err(format!(
                    "{key}.name: a second variant named {:?}",
                    variant.name
                ));
            }
            let weight = variant.weight.unwrap_or(1.0);
            if !(weight.is_finite() && weight > 0.0) {
                return Err(format!(
                    "{key}.weight must be a positive number, not {weight}"
                ));
            }
            let recs_weights = match &variant.recs_weights {
                Some(_) if index > 0 => {
                    return Err(format!(
                        "{key}.recs_weights: only the first experiment chooses the recs blend"
                    ));
                }
                Some(table) => Some(recs_weights(&format!("{key}.recs_weights"), table, recs)?),
                None => None,
            };
            variants.push(Variant {
                name: Name::new(&variant.name),
                weight,
                recs_weights,
            });
        }
        let total: f64 = variants.iter().map(|variant| variant.weight).sum();
        if !total.is_finite() {
            return Err(format!(
                "{key}.variants: the weights' sum is not a finite number"
            ));
        }
        let salt = table.salt.as_deref().unwrap_or(&table.name);
        let experiment = Experiment::new(&table.name, salt, attribution_ms, variants);
        // Below one bucket a variant may get no users at all, and the sample-ratio check
        // would blame the traffic for a config problem.
        if let Some(v) = experiment
            .shares()
            .iter()
            .position(|share| *share < 1.0 / f64::from(BUCKETS))
        {
            return Err(format!(
                "{key}.variants[{v}].weight: a share below 1/{BUCKETS} of the users"
            ));
        }
        out.push(experiment);
    }
    Ok(out)
}

fn apply_sequences(table: &SequencesTable, params: &mut SequenceParams) -> Result<(), String> {
    if let Some(k) = table.next_k {
        params.next_k = positive("sequences.next_k", k as u64)? as usize;
    }
    if let Some(length) = table.path_length {
        params.path_length = positive("sequences.path_length", length as u64)? as usize;
    }
    if let Some(funnel) = &table.funnel {
        if funnel.is_empty() || funnel.iter().any(|step| step.is_empty()) {
            return Err("sequences.funnel must list at least one step, none empty".into());
        }
        if let Some(repeated) = funnel
            .iter()
            .enumerate()
            .find_map(|(i, step)| funnel[..i].contains(step).then_some(step))
        {
            // Each step is a row keyed by its name.
            return Err(format!(
                "sequences.funnel lists the step {repeated:?} twice"
            ));
        }
        params.funnel = funnel.iter().map(|step| Name::new(step)).collect();
    }
    Ok(())
}

fn apply_als(table: &AlsTable, spec: &mut crate::train::als::AlsSpec) -> Result<(), String> {
    if let Some(factors) = table.factors {
        spec.factors = positive("als.factors", factors as u64)? as usize;
    }
    if let Some(iterations) = table.iterations {
        spec.iterations = positive("als.iterations", iterations as u64)? as usize;
    }
    for (key, value, slot) in [
        ("als.lambda", table.lambda, &mut spec.lambda),
        ("als.alpha", table.alpha, &mut spec.alpha),
    ] {
        if let Some(value) = value {
            if !(value.is_finite() && value > 0.0) {
                return Err(format!("{key} must be a positive number, not {value}"));
            }
            *slot = value;
        }
    }
    Ok(())
}

/// The names the features view prints under these recency windows.
fn feature_names(recency_days: &[u64]) -> Vec<String> {
    FeatureSums::names(recency_days)
        .into_iter()
        .map(|name| name.into_owned())
        .collect()
}

fn unknown_feature(key: &str, feature: &str, known: &[String]) -> String {
    format!(
        "{key}: unknown feature {feature:?} (features: {})",
        known.join(", ")
    )
}

fn apply_segments(
    table: &SegmentsTable,
    feature_names: &[String],
    segments: &mut SegmentParams,
) -> Result<(), String> {
    for (index, rule) in table.rules.iter().enumerate() {
        let key = format!("segments.rules[{index}]");
        if rule.id.trim().is_empty() {
            return Err(format!("{key}.id must not be empty"));
        }
        if table.rules[..index]
            .iter()
            .any(|earlier| earlier.id == rule.id)
        {
            return Err(format!("{key}.id: segment {:?} is defined twice", rule.id));
        }
        let when: Conditions = rule
            .when
            .parse()
            .map_err(|error| format!("{key}.when: {error}"))?;
        for condition in &when.0 {
            if !feature_names.contains(&condition.feature) {
                return Err(unknown_feature(
                    &format!("{key}.when"),
                    &condition.feature,
                    feature_names,
                ));
            }
        }
        segments.rules.push(RuleSegment {
            id: rule.id.clone(),
            name: rule.name.clone().unwrap_or_else(|| rule.id.clone()),
            when,
        });
    }
    segments.names = table.names.clone();
    Ok(())
}

fn apply_content_rules(
    table: &BTreeMap<String, ContentTable>,
    segments: &mut SegmentParams,
) -> Result<(), String> {
    for (segment, rule) in table {
        let kinds = rule
            .kinds
            .iter()
            .map(|kind| {
                ItemKind::from_name(kind).ok_or_else(|| {
                    format!(
                        "rules.{segment}.kinds: unknown kind {kind:?} (product, article, guide, offer)"
                    )
                })
            })
            .collect::<Result<_, _>>()?;
        segments.content.insert(
            segment.clone(),
            ContentRule {
                kinds,
                premium: rule.premium,
            },
        );
    }
    Ok(())
}

fn weight(key: &str, value: f64) -> Result<Score, String> {
    score(&format!("weights.{key}"), value)
}

/// A score-like number; `key` is the full dotted key for the message.
fn score(key: &str, value: f64) -> Result<Score, String> {
    if value.is_finite() && value.abs() <= 1e9 {
        Ok(Score::from_f64(value))
    } else {
        Err(format!("{key} must be a finite number, got {value}"))
    }
}

fn positive(key: &str, value: u64) -> Result<u64, String> {
    if value == 0 {
        Err(format!("{key} must be positive"))
    } else {
        Ok(value)
    }
}

fn type_set(key: &str, names: &[String], weights: &WeightsTable) -> Result<TypeSet, String> {
    let mut set = TypeSet::default();
    for name in names {
        let known = EventKind::from_name(name) != EventKind::Other;
        if !known && !weights.custom.contains_key(name) {
            return Err(format!(
                "{key}: unknown event type {name:?} (a built-in type, or one named in weights.custom)"
            ));
        }
        set.insert(name);
    }
    Ok(set)
}

fn apply_engagement(
    table: &EngagementTable,
    weights: &WeightsTable,
    engagement: &mut EngagementParams,
) -> Result<(), String> {
    if let Some(names) = &table.high_intent {
        engagement.high_intent = type_set("engagement.high_intent", names, weights)?;
    }
    if let Some(names) = &table.active {
        engagement.active = type_set("engagement.active", names, weights)?;
    }
    if let Some(scroll) = table.passive_max_scroll {
        if !(0.0..=1.0).contains(&scroll) {
            return Err(format!(
                "engagement.passive_max_scroll must be between 0 and 1, got {scroll}"
            ));
        }
        engagement.passive_max_scroll = ScrollDepth::from_fraction(scroll);
    }
    Ok(())
}

fn apply_feedback(table: &FeedbackTable, feedback: &mut FeedbackParams) -> Result<(), String> {
    if let Some(ms) = table.long_dwell_ms {
        feedback.long_dwell_ms = ms;
    }
    if let Some(boost) = table.long_dwell_boost {
        feedback.long_dwell_boost = score("feedback.long_dwell_boost", boost)?;
    }
    if let Some(ms) = table.quick_exit_ms {
        feedback.quick_exit_ms = ms;
    }
    if let Some(penalty) = table.quick_exit_penalty {
        feedback.quick_exit_penalty = score("feedback.quick_exit_penalty", penalty)?;
    }
    if let Some(ms) = table.bounce_ms {
        feedback.bounce_ms = ms;
    }
    if let Some(users) = table.rejected_min_users {
        let users = positive("feedback.rejected_min_users", users)?;
        feedback.rejected_min_users = usize::try_from(users).unwrap_or(usize::MAX);
    }
    if let Some(penalty) = table.rejected_penalty {
        feedback.rejected_penalty = score("feedback.rejected_penalty", penalty)?;
    }
    Ok(())
}

fn apply_windows(table: &WindowsTable, windows: &mut WindowParams) -> Result<(), String> {
    if let Some(span) = table.span_ms {
        windows.span_ms = positive("windows.span_ms", span)?;
    }
    if let Some(days) = &table.recency_days {
        let most = intentflow_dataflows::features::MAX_RECENCY_WINDOWS;
        if days.len() > most {
            return Err(format!(
                "windows.recency_days lists {} windows; at most {most} are supported",
                days.len()
            ));
        }
        for (index, day) in days.iter().enumerate() {
            positive(&format!("windows.recency_days[{index}]"), *day)?;
            if days[..index].contains(day) {
                return Err(format!("windows.recency_days: {day} is listed twice"));
            }
        }
        windows.recency_days = days.clone();
    }
    if let Some(boosts) = &table.boost {
        windows.boost = boosts
            .iter()
            .enumerate()
            .map(|(index, boost)| {
                Ok(BoostWindow {
                    span_ms: positive(&format!("windows.boost[{index}].span_ms"), boost.span_ms)?,
                    extra: score(&format!("windows.boost[{index}].extra"), boost.extra)?,
                })
            })
            .collect::<Result<_, String>>()?;
    }
    Ok(())
}

fn apply_weights(table: &WeightsTable, weights: &mut Weights) -> Result<(), String> {
    use EventKind::*;
    let known = [
        (PageView, table.page_view),
        (Click, table.click),
        (Scroll, table.scroll),
        (VideoPlay, table.video_play),
        (FormSubmit, table.form_submit),
        (AddToCart, table.add_to_cart),
        (Wishlist, table.wishlist),
        (Bookmark, table.bookmark),
        (Share, table.share),
        (Comment, table.comment),
        (Purchase, table.purchase),
        (Impression, table.impression),
        (Exit, table.exit),
    ];
    for (kind, value) in known {
        if let Some(value) = value {
            weights.set_known(kind, weight(kind.name(), value)?);
        }
    }
    for (name, value) in &table.custom {
        if EventKind::from_name(name) != EventKind::Other {
            return Err(format!(
                "weights.custom.{name}: {name} is a built-in type; set weights.{name} instead"
            ));
        }
        weights.set_custom(name, weight(&format!("custom.{name}"), *value)?);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_defaults_are_the_defaults() {
        assert_eq!(parse(DEFAULT_CONFIG).unwrap(), Config::default());
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn weights_override() {
        let params = parse("[weights]\nclick = 2.5\ncustom = { hover = 1 }\n")
            .unwrap()
            .views;
        assert_eq!(params.weights.known(EventKind::Click), Score(2500));
        assert_eq!(params.weights.custom()["hover"], Score(1000));
    }

    #[test]
    fn typos_are_errors_naming_the_key() {
        let error = parse("[weights]\nclikc = 2\n").unwrap_err();
        assert!(error.contains("clikc"), "{error}");
        let error = parse("[weigths]\nclick = 2\n").unwrap_err();
        assert!(error.contains("weigths"), "{error}");
        let error = parse("[weights]\nclick = \"two\"\n").unwrap_err();
        assert!(error.contains("click"), "{error}");
        let error = parse("[feedback]\nlong_dwel_ms = 1\n").unwrap_err();
        assert!(error.contains("long_dwel_ms"), "{error}");
        let error = parse("[engagement]\nactive = [\"comemnt\"]\n").unwrap_err();
        assert!(error.contains("comemnt"), "{error}");
        let error = parse("[windows]\nspan_ms = 0\n").unwrap_err();
        assert!(error.contains("windows.span_ms"), "{error}");
        let error = parse("[windows]\nboost = [{ span_ms = 5, extar = 1 }]\n").unwrap_err();
        assert!(error.contains("extar"), "{error}");
        let error = parse("[engagement]\npassive_max_scroll = 1.5\n").unwrap_err();
        assert!(error.contains("passive_max_scroll"), "{error}");
        let error = parse("[segments]\nrules = [{ id = \"vip\", when = \"purchase >= 3\" }]\n")
            .unwrap_err();
        assert!(
            error.contains("segments.rules[0].when") && error.contains("\"purchase\""),
            "{error}"
        );
        let error = parse("[segments]\nfeatures = [\"dwell\"]\n").unwrap_err();
        assert!(
            error.contains("segments.features") && error.contains("dwell"),
            "{error}"
        );
        let error = parse("[rules.buyers]\nkinds = [\"produkt\"]\n").unwrap_err();
        assert!(
            error.contains("rules.buyers.kinds") && error.contains("produkt"),
            "{error}"
        );
        let error = parse("[propensity]\nhorizon_days = 0\n").unwrap_err();
        assert!(error.contains("propensity.horizon_days"), "{error}");
    }

    #[test]
    fn experiments_parse_and_their_errors_name_the_key() {
        let two = "variants = [{ name = \"a\" }, { name = \"b\", weight = 3 }]\n";
        let config = parse(&format!(
            "[recs]\nweights = {{ next = 0.2 }}\n[[experiments]]\nname = \"e\"\n\
             variants = [{{ name = \"a\" }}, {{ name = \"b\", recs_weights = {{ als = 0 }} }}]\n\
             [[experiments]]\nname = \"f\"\nsalt = \"s\"\nattribution_ms = 5\n{two}"
        ))
        .unwrap();
        let [e, f] = &config.views.experiments[..] else {
            panic!("two experiments");
        };
        assert_eq!(
            (e.salt.as_str(), e.attribution_ms),
            ("e", DEFAULT_ATTRIBUTION_MS)
        );
        assert_eq!(e.variants[0].recs_weights, None);
        // Unset sources keep the [recs] weights.
        assert_eq!(e.variants[1].recs_weights, Some([1_000, 200, 0, 300, 100]));
        assert_eq!((f.salt.as_str(), f.attribution_ms), ("s", 5));
        assert_eq!(f.shares(), [0.25, 0.75]);
        for (text, key) in [
            ("[[experiments]]\nvariants = []\n".to_string(), "name"),
            (
                "[[experiments]]\nname = \"e\"\nvariants = [{ name = \"a\" }]\n".into(),
                "experiments[0].variants",
            ),
            (
                format!("[[experiments]]\nname = \"e\"\n{two}[[experiments]]\nname = \"e\"\n{two}"),
                "experiments[1].name",
            ),
            (
                "[[experiments]]\nname = \"e\"\nvariants = [{ name = \"a\" }, { name = \"a\" }]\n"
                    .into(),
                "experiments[0].variants[1].name",
            ),
            (
                "[[experiments]]\nname = \"e\"\nvariants = [{ name = \"a\", weight = 0 }, { name = \"b\" }]\n"
                    .into(),
                "experiments[0].variants[0].weight",
            ),
            (
                format!(
                    "[[experiments]]\nname = \"e\"\n{two}[[experiments]]\nname = \"f\"\n\
                     variants = [{{ name = \"a\", recs_weights = {{ als = 1 }} }}, {{ name = \"b\" }}]\n"
                ),
                "experiments[1].variants[0].recs_weights",
            ),
            (
                format!("[[experiments]]\nname = \"e\"\nsalty = \"x\"\n{two}"),
                "salty",
            ),
            (
                format!("[[experiments]]\nname = \"e\"\nattribution_ms = 0\n{two}"),
                "experiments[0].attribution_ms",
            ),
            (
                "[[experiments]]\nname = \"e\"\nvariants = [{ name = \"a\" }, { name = \"b\", weight = 0.00001 }]\n"
                    .into(),
                "experiments[0].variants[1].weight",
            ),
        ] {
            let error = parse(&text).unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn sequence_and_model_tables_name_their_keys() {
        let config = parse(
            "[sequences]\nnext_k = 2\npath_length = 3\nfunnel = [\"product\", \"purchase\"]\n\
             [als]\nfactors = 8\n[recs]\nals_candidates = 7\n",
        )
        .unwrap();
        assert_eq!(config.views.sequences.next_k, 2);
        assert_eq!(config.views.sequences.path_length, 3);
        assert_eq!(config.views.sequences.funnel, ["product", "purchase"]);
        assert_eq!(config.train.als.factors, 8);
        assert_eq!(config.views.recs.als_candidates, 7);
        for (text, key) in [
            ("[sequences]\nnext_k = 0\n", "sequences.next_k"),
            ("[sequences]\nfunnel = []\n", "sequences.funnel"),
            ("[sequences]\nfunnel = [\"a\", \"a\"]\n", "sequences.funnel"),
            ("[sequences]\nsteps = 3\n", "steps"),
            ("[als]\nlambda = -1.0\n", "als.lambda"),
            ("[recs]\nk = 0\n", "recs.k"),
        ] {
            let error = parse(text).unwrap_err();
            assert!(error.contains(key), "{text}: {error}");
        }
    }

    #[test]
    fn new_tables_override() {
        let params = parse(
            "[weights]\ncustom = { signup = 1 }\n\
             [engagement]\nactive = [\"signup\"]\n\
             [feedback]\nrejected_min_users = 5\nquick_exit_penalty = 0.5\n\
             [windows]\nspan_ms = 86400000\nrecency_days = [1, 3]\n\
             boost = [{ span_ms = 3600000, extra = 1.5 }]\n",
        )
        .unwrap()
        .views;
        assert_eq!(params.feedback.rejected_min_users, 5);
        assert_eq!(params.feedback.quick_exit_penalty, Score(500));
        assert_eq!(params.windows.span_ms, 86_400_000);
        assert_eq!(params.windows.recency_days, vec![1, 3]);
        assert_eq!(params.windows.boost[0].extra, Score(1500));
        let mut signup = intentflow_dataflows::model::Event::new("u", EventKind::Other, 0);
        signup.custom_type = Some("signup".into());
        assert!(params.engagement.active.contains(&signup));
    }

    #[test]
    fn segment_rules_names_and_content_rules_override() {
        let config = parse(
            "[segments]\nk = 5\nnames = { c1 = \"big spenders\" }\n\
             rules = [{ id = \"vip\", when = \"purchases >= 3\" }]\n\
             [rules.vip]\nkinds = [\"offer\"]\npremium = true\n",
        )
        .unwrap();
        assert_eq!(config.train.k, 5);
        let segments = &config.views.segments;
        assert_eq!(segments.rules[0].name, "vip", "the name defaults to the id");
        assert_eq!(segments.names["c1"], "big spenders");
        assert_eq!(segments.content["vip"].premium, Some(true));
        assert!(segments.content.contains_key("buyers"), "defaults stay");
    }
}
