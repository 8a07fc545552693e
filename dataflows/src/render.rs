//! Output rows: each view's typed (key, value) rendered as the JSON objects DESIGN.md §4
//! names. Rendering happens on the worker that owns the key, so the single output worker
//! only consolidates and prints.

use crate::als::Candidates;
use crate::features::{FeatureSums, FeatureValue};
use crate::model::{Category, ItemId, Score, ScrollDepth, UserId};
use crate::name::Name;
use crate::propensity::Propensity;
use crate::segments::SegmentAssignment;
use crate::sequences::{FunnelStep, NextSteps, Transition};
use crate::sessions::{SessionAggregate, SessionKey};
use serde::{Deserialize, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// The views the engine can maintain, in output order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum ViewName {
    Sessions,
    Scores,
    Affinity,
    Features,
    Segments,
    Propensity,
    Als,
    Transitions,
    Next,
    Paths,
    Funnel,
    Similar,
    Recs,
    Experiments,
}

impl ViewName {
    pub const ALL: [ViewName; 14] = [
        ViewName::Sessions,
        ViewName::Scores,
        ViewName::Affinity,
        ViewName::Features,
        ViewName::Segments,
        ViewName::Propensity,
        ViewName::Als,
        ViewName::Transitions,
        ViewName::Next,
        ViewName::Paths,
        ViewName::Funnel,
        ViewName::Similar,
        ViewName::Recs,
        ViewName::Experiments,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ViewName::Sessions => "sessions",
            ViewName::Scores => "scores",
            ViewName::Affinity => "affinity",
            ViewName::Features => "features",
            ViewName::Segments => "segments",
            ViewName::Propensity => "propensity",
            ViewName::Als => "als",
            ViewName::Transitions => "transitions",
            ViewName::Next => "next",
            ViewName::Paths => "paths",
            ViewName::Funnel => "funnel",
            ViewName::Similar => "similar",
            ViewName::Recs => "recs",
            ViewName::Experiments => "experiments",
        }
    }
}

impl fmt::Display for ViewName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ViewName {
    type Err = String;
    fn from_str(name: &str) -> Result<Self, String> {
        ViewName::ALL
            .into_iter()
            .find(|view| view.as_str() == name)
            .ok_or_else(|| {
                let known: Vec<_> = ViewName::ALL.iter().map(|v| v.as_str()).collect();
                format!("unknown view {name:?} (known: {})", known.join(", "))
            })
    }
}

/// One row of a view, with its key and value already rendered as JSON objects.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct ViewRow {
    pub view: ViewName,
    pub key: String,
    pub value: String,
}

/// A fixed-point number printed as a JSON integer when it is whole, else as a decimal.
struct Fixed {
    units: i64,
    scale: i64,
}

impl Serialize for Fixed {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if self.units % self.scale == 0 {
            serializer.serialize_i64(self.units / self.scale)
        } else {
            serializer.serialize_f64(self.units as f64 / self.scale as f64)
        }
    }
}

impl From<Score> for Fixed {
    fn from(score: Score) -> Self {
        Fixed {
            units: score.0,
            scale: Score::SCALE as i64,
        }
    }
}

impl From<ScrollDepth> for Fixed {
    fn from(scroll: ScrollDepth) -> Self {
        Fixed {
            units: i64::from(scroll.0),
            scale: ScrollDepth::SCALE as i64,
        }
    }
}

fn to_json<T: Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("view rows serialize to JSON")
}

pub fn session_row(key: &SessionKey, aggregate: &SessionAggregate) -> ViewRow {
    #[derive(Serialize)]
    struct Value {
        start: u64,
        end: u64,
        duration_ms: u64,
        events: u64,
        page_views: u64,
        high_intent: u64,
        purchases: u64,
        dwell_ms: u64,
        max_scroll: Fixed,
        bounce: bool,
        engagement: &'static str,
    }
    let value = Value {
        start: aggregate.start,
        end: aggregate.end,
        duration_ms: aggregate.duration_ms(),
        events: aggregate.events,
        page_views: aggregate.page_views,
        high_intent: aggregate.high_intent,
        purchases: aggregate.purchases,
        dwell_ms: aggregate.dwell_ms,
        max_scroll: aggregate.max_scroll.into(),
        bounce: aggregate.bounce,
        engagement: aggregate.engagement.as_str(),
    };
    ViewRow {
        view: ViewName::Sessions,
        key: to_json(key),
        value: to_json(&value),
    }
}

pub fn score_row(user: &UserId, item: &ItemId, score: Score) -> ViewRow {
    #[derive(Serialize)]
    struct Key<'a> {
        user: &'a UserId,
        item: &'a ItemId,
    }
    #[derive(Serialize)]
    struct Value {
        score: Fixed,
    }
    ViewRow {
        view: ViewName::Scores,
        key: to_json(&Key { user, item }),
        value: to_json(&Value {
            score: score.into(),
        }),
    }
}

pub fn affinity_row(user: &UserId, category: &Category, score: Score) -> ViewRow {
    #[derive(Serialize)]
    struct Key<'a> {
        user: &'a UserId,
        category: &'a Category,
    }
    #[derive(Serialize)]
    struct Value {
        score: Fixed,
    }
    ViewRow {
        view: ViewName::Affinity,
        key: to_json(&Key { user, category }),
        value: to_json(&Value {
            score: score.into(),
        }),
    }
}

/// Renders a feature vector; `recency_days` names its `active_<N>d` flags.
/// How `features` rows are written under one `recency_days`: the fields in name order (the
/// order a JSON object of them had) with their keys already escaped. Built once per
/// dataflow: every feature change of every user renders a row twice.
#[derive(Clone, Debug)]
pub struct FeaturesLayout {
    recency_days: Vec<u64>,
    /// (position in [`FeatureSums::values`], `"name":`), by name.
    fields: Vec<(usize, String)>,
}

impl FeaturesLayout {
    pub fn new(recency_days: &[u64]) -> Self {
        let mut fields: Vec<(usize, String)> = FeatureSums::default()
            .values(recency_days)
            .into_iter()
            .enumerate()
            .map(|(position, (name, _))| (position, name.into_owned()))
            .collect();
        fields.sort_by(|a, b| a.1.cmp(&b.1));
        for (_, name) in &mut fields {
            *name = format!("{}:", to_json(name));
        }
        FeaturesLayout {
            recency_days: recency_days.to_vec(),
            fields,
        }
    }
}

pub fn features_row(user: &UserId, sums: &FeatureSums, layout: &FeaturesLayout) -> ViewRow {
    let values = sums.values(&layout.recency_days);
    let mut value = Vec::with_capacity(32 * values.len());
    value.push(b'{');
    for (index, (position, key)) in layout.fields.iter().enumerate() {
        if index > 0 {
            value.push(b',');
        }
        value.extend_from_slice(key.as_bytes());
        let written = match values[*position].1 {
            FeatureValue::Count(n) => serde_json::to_writer(&mut value, &n),
            FeatureValue::Flag(flag) => serde_json::to_writer(&mut value, &flag),
            FeatureValue::TenThousandths(units) => serde_json::to_writer(
                &mut value,
                &Fixed {
                    units,
                    scale: 10_000,
                },
            ),
        };
        written.expect("feature values serialize to JSON");
    }
    value.push(b'}');
    ViewRow {
        view: ViewName::Features,
        key: to_json(&UserKey { user }),
        value: String::from_utf8(value).expect("serde_json writes UTF-8"),
    }
}

#[derive(Serialize)]
struct UserKey<'a> {
    user: &'a UserId,
}

pub fn segment_row(user: &UserId, assignment: &SegmentAssignment) -> ViewRow {
    #[derive(Serialize)]
    struct Value<'a> {
        segment: &'a str,
        name: &'a str,
    }
    ViewRow {
        view: ViewName::Segments,
        key: to_json(&UserKey { user }),
        value: to_json(&Value {
            segment: &assignment.id,
            name: &assignment.name,
        }),
    }
}

pub fn propensity_row(user: &UserId, scores: &Propensity) -> ViewRow {
    #[derive(Serialize)]
    struct Value {
        conversion: Fixed,
        churn: Fixed,
    }
    let probability = |units: u16| Fixed {
        units: i64::from(units),
        scale: 10_000,
    };
    ViewRow {
        view: ViewName::Propensity,
        key: to_json(&UserKey { user }),
        value: to_json(&Value {
            conversion: probability(scores.conversion),
            churn: probability(scores.churn),
        }),
    }
}

/// A list of `{item, score}` entries, scores in ten-thousandths.
fn scored_items(items: &[(ItemId, i64)]) -> Vec<ScoredItem<'_>> {
    items
        .iter()
        .map(|(item, units)| ScoredItem {
            item,
            score: Fixed {
                units: *units,
                scale: 10_000,
            },
        })
        .collect()
}

#[derive(Serialize)]
struct ScoredItem<'a> {
    item: &'a ItemId,
    score: Fixed,
}

pub fn als_row(user: &UserId, candidates: &Candidates) -> ViewRow {
    #[derive(Serialize)]
    struct Value<'a> {
        items: Vec<ScoredItem<'a>>,
    }
    ViewRow {
        view: ViewName::Als,
        key: to_json(&UserKey { user }),
        value: to_json(&Value {
            items: scored_items(candidates),
        }),
    }
}

/// A probability or share in ten-thousandths.
fn share(units: i64) -> Fixed {
    Fixed {
        units,
        scale: 10_000,
    }
}

pub fn transition_row(transition: &Transition, count: u64, p: i64) -> ViewRow {
    let (kind, from, to) = transition;
    #[derive(Serialize)]
    struct Key<'a> {
        kind: &'static str,
        from: &'a str,
        to: &'a str,
    }
    #[derive(Serialize)]
    struct Value {
        count: u64,
        p: Fixed,
    }
    ViewRow {
        view: ViewName::Transitions,
        key: to_json(&Key {
            kind: kind.as_str(),
            from,
            to,
        }),
        value: to_json(&Value { count, p: share(p) }),
    }
}

pub fn next_row(kind: crate::sequences::StepKind, from: &str, next: &NextSteps) -> ViewRow {
    #[derive(Serialize)]
    struct Key<'a> {
        kind: &'static str,
        from: &'a str,
    }
    #[derive(Serialize)]
    struct Step<'a> {
        to: &'a str,
        p: Fixed,
    }
    #[derive(Serialize)]
    struct Value<'a> {
        next: Vec<Step<'a>>,
    }
    let next = next
        .iter()
        .map(|(to, p)| Step { to, p: share(*p) })
        .collect();
    ViewRow {
        view: ViewName::Next,
        key: to_json(&Key {
            kind: kind.as_str(),
            from,
        }),
        value: to_json(&Value { next }),
    }
}

pub fn path_row(path: &[Name], count: u64) -> ViewRow {
    #[derive(Serialize)]
    struct Key<'a> {
        path: &'a [Name],
    }
    #[derive(Serialize)]
    struct Value {
        count: u64,
    }
    ViewRow {
        view: ViewName::Paths,
        key: to_json(&Key { path }),
        value: to_json(&Value { count }),
    }
}

pub fn funnel_row(row: &FunnelStep) -> ViewRow {
    #[derive(Serialize)]
    struct Key<'a> {
        step: &'a str,
    }
    #[derive(Serialize)]
    struct Value {
        position: usize,
        reached: u64,
        rate: Fixed,
    }
    ViewRow {
        view: ViewName::Funnel,
        key: to_json(&Key { step: &row.step }),
        value: to_json(&Value {
            position: row.position,
            reached: row.reached,
            rate: share(row.rate),
        }),
    }
}

pub fn similar_row(item: &ItemId, neighbors: &crate::similar::Neighbors) -> ViewRow {
    #[derive(Serialize)]
    struct Key<'a> {
        item: &'a ItemId,
    }
    #[derive(Serialize)]
    struct Value<'a> {
        neighbors: Vec<ScoredItem<'a>>,
    }
    ViewRow {
        view: ViewName::Similar,
        key: to_json(&Key { item }),
        value: to_json(&Value {
            neighbors: scored_items(neighbors),
        }),
    }
}

pub fn recs_row(user: &UserId, variant: &str, list: &[crate::recs::Rec]) -> ViewRow {
    #[derive(Serialize)]
    struct Item<'a> {
        item: &'a ItemId,
        score: Fixed,
        reason: &'static str,
    }
    #[derive(Serialize)]
    struct Value<'a> {
        variant: &'a str,
        items: Vec<Item<'a>>,
    }
    let items = list
        .iter()
        .map(|rec| Item {
            item: &rec.item,
            score: share(rec.score),
            reason: rec.reason.as_str(),
        })
        .collect();
    ViewRow {
        view: ViewName::Recs,
        key: to_json(&UserKey { user }),
        value: to_json(&Value { variant, items }),
    }
}

/// One row per variant of an experiment: its sums, rates and, against the control (the
/// first variant), lift, interval and p-values; the sample-ratio check on every row.
pub fn experiment_rows(
    experiment: &crate::experiments::Experiment,
    sums: &[crate::experiments::VariantSums],
) -> Vec<ViewRow> {
    use crate::significance::{
        Comparison, RatioSample, SRM_THRESHOLD, compare_proportions, compare_ratios, srm_p_value,
    };
    #[derive(Serialize)]
    struct Key<'a> {
        experiment: &'a str,
        variant: &'a str,
    }
    #[derive(Serialize)]
    struct Value {
        users: i128,
        impressions: i128,
        clicks: i128,
        ctr: Option<f64>,
        add_to_carts: i128,
        conversions: i128,
        conversion_rate: Option<f64>,
        dwell_events: i128,
        mean_dwell_ms: Option<f64>,
        revenue: f64,
        lift: Option<f64>,
        ci_low: Option<f64>,
        ci_high: Option<f64>,
        p_value: Option<f64>,
        conversion_lift: Option<f64>,
        conversion_ci_low: Option<f64>,
        conversion_ci_high: Option<f64>,
        conversion_p_value: Option<f64>,
        control: bool,
        expected_share: f64,
        srm_p_value: Option<f64>,
        srm: bool,
    }
    let ratio = |s: &crate::experiments::VariantSums| RatioSample {
        n: s.users as f64,
        numerator: s.clicks as f64,
        denominator: s.impressions as f64,
        numerator_sq: s.clicks_sq as f64,
        denominator_sq: s.impressions_sq as f64,
        cross: s.clicks_impressions as f64,
    };
    let converted = |s: &crate::experiments::VariantSums| (s.conversions as f64, s.users as f64);
    let fraction = |part: i128, whole: i128| (whole > 0).then(|| part as f64 / whole as f64);
    let shares = experiment.shares();
    let users: Vec<f64> = sums.iter().map(|s| s.users as f64).collect();
    let srm_p = srm_p_value(&users, shares);
    let control = &sums[0];
    let split = |c: Comparison| match c.lift {
        Some(l) => (Some(l.lift), Some(l.ci_low), Some(l.ci_high), c.p_value),
        None => (None, None, None, c.p_value),
    };
    experiment
        .variants
        .iter()
        .zip(sums)
        .enumerate()
        .map(|(index, (variant, s))| {
            let (ctr_vs, conversion_vs) = if index == 0 {
                (Comparison::default(), Comparison::default())
            } else {
                (
                    compare_ratios(&ratio(s), &ratio(control)),
                    compare_proportions(converted(s), converted(control)),
                )
            };
            let (lift, ci_low, ci_high, p_value) = split(ctr_vs);
            let (conversion_lift, conversion_ci_low, conversion_ci_high, conversion_p_value) =
                split(conversion_vs);
            ViewRow {
                view: ViewName::Experiments,
                key: to_json(&Key {
                    experiment: &experiment.name,
                    variant: &variant.name,
                }),
                value: to_json(&Value {
                    users: s.users,
                    impressions: s.impressions,
                    clicks: s.clicks,
                    ctr: fraction(s.clicks, s.impressions),
                    add_to_carts: s.add_to_carts,
                    conversions: s.conversions,
                    conversion_rate: fraction(s.conversions, s.users),
                    dwell_events: s.dwell_events,
                    mean_dwell_ms: fraction(s.dwell_sum, s.dwell_events),
                    revenue: s.revenue as f64 / 100.0,
                    lift,
                    ci_low,
                    ci_high,
                    p_value,
                    conversion_lift,
                    conversion_ci_low,
                    conversion_ci_high,
                    conversion_p_value,
                    control: index == 0,
                    expected_share: shares[index],
                    srm_p_value: srm_p,
                    srm: srm_p.is_some_and(|p| p < SRM_THRESHOLD),
                }),
            }
        })
        .collect()
}
