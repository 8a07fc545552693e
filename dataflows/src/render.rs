//! Output rows: each view's typed (key, value) rendered as the JSON objects DESIGN.md §4
//! names. Rendering happens on the worker that owns the key, so the single output worker
//! only forwards rows and the output thread only consolidates and prints them.

use crate::als::Candidates;
use crate::features::{FeatureSums, FeatureValue};
use crate::model::{Category, ItemId, Score, ScrollDepth, UserId};
use crate::name::Name;
use crate::propensity::Propensity;
use crate::segments::SegmentAssignment;
use crate::sequences::{FunnelStep, NextSteps, Transition};
use crate::sessions::{SessionAggregate, SessionKey};
use serde::{Deserialize, Serialize};
use std::cell::Cell;
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

/// One row of a view: its key and value as JSON objects, one after the other in one
/// buffer of the row's size. A row is made for every change of every view, so one
/// allocation instead of two is felt, as is its size: rows wait on the output thread
/// until their time is complete.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ViewRow {
    pub view: ViewName,
    key_len: u32,
    text: Box<str>,
}

impl ViewRow {
    pub fn from_parts(view: ViewName, key: &str, value: &str) -> ViewRow {
        ViewRow {
            view,
            key_len: key_len(key.len()),
            text: format!("{key}{value}").into_boxed_str(),
        }
    }

    pub fn key(&self) -> &str {
        &self.text[..self.key_len as usize]
    }

    pub fn value(&self) -> &str {
        &self.text[self.key_len as usize..]
    }
}

fn key_len(len: usize) -> u32 {
    u32::try_from(len).expect("a row's key is shorter than 4 GiB")
}

/// By view, key, value: the order the output prints a time's changes in.
impl Ord for ViewRow {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.view, self.key(), self.value()).cmp(&(other.view, other.key(), other.value()))
    }
}

impl PartialOrd for ViewRow {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

/// Writes a row: the key object's fields, [`RowWriter::value`], the value object's fields.
///
/// Written by hand rather than through serde's derived structs: field names are known
/// not to need escaping, and this runs for every change of every view. Fields print
/// exactly as `serde_json` prints them (strings escaped by it whenever they need it).
struct RowWriter {
    text: Vec<u8>,
    key_len: usize,
    empty: bool,
}

thread_local! {
    /// The buffer rows are written in, then copied from at their size: written straight
    /// into their own buffers, every row held room for the longest (256 bytes) until
    /// printed.
    static SCRATCH: Cell<Vec<u8>> = const { Cell::new(Vec::new()) };
}

impl RowWriter {
    /// A writer with room for most rows (`features` and `sessions` rows run to about 230
    /// bytes).
    fn new() -> Self {
        Self::with_capacity(256)
    }

    /// A writer for a row of about `capacity` bytes (rows with lists).
    fn with_capacity(capacity: usize) -> Self {
        let mut text = SCRATCH.take();
        text.clear();
        text.reserve(capacity);
        text.push(b'{');
        RowWriter {
            text,
            key_len: 0,
            empty: true,
        }
    }

    /// Starts a field; `name` must need no escaping.
    fn name(&mut self, name: &str) -> &mut Vec<u8> {
        start_field(&mut self.text, &mut self.empty, name);
        &mut self.text
    }

    fn str(mut self, name: &str, value: &str) -> Self {
        write_str(self.name(name), value);
        self
    }

    fn int(mut self, name: &str, value: impl itoa::Integer) -> Self {
        let mut digits = itoa::Buffer::new();
        self.name(name)
            .extend_from_slice(digits.format(value).as_bytes());
        self
    }

    fn flag(mut self, name: &str, value: bool) -> Self {
        let text: &[u8] = if value { b"true" } else { b"false" };
        self.name(name).extend_from_slice(text);
        self
    }

    fn fixed(mut self, name: &str, value: Fixed) -> Self {
        value.write(self.name(name));
        self
    }

    /// A field holding a list of objects, each entry's fields written by `write`.
    fn objects<T>(
        mut self,
        name: &str,
        entries: impl IntoIterator<Item = T>,
        mut write: impl FnMut(&mut Fields<'_>, T),
    ) -> Self {
        let text = self.name(name);
        text.push(b'[');
        for (index, entry) in entries.into_iter().enumerate() {
            if index > 0 {
                text.push(b',');
            }
            text.push(b'{');
            write(&mut Fields { text, empty: true }, entry);
            text.push(b'}');
        }
        text.push(b']');
        self
    }

    /// A field of any serializable value (lists, nested objects).
    fn serialized<T: Serialize + ?Sized>(mut self, name: &str, value: &T) -> Self {
        serde_json::to_writer(self.name(name), value).expect("view rows serialize to JSON");
        self
    }

    /// Ends the key object and starts the value object.
    fn value(mut self) -> Self {
        self.text.push(b'}');
        self.key_len = self.text.len();
        self.text.push(b'{');
        self.empty = true;
        self
    }

    fn finish(mut self, view: ViewName) -> ViewRow {
        debug_assert!(self.key_len > 0, "a row has a key and a value");
        self.text.push(b'}');
        let row = ViewRow {
            view,
            key_len: key_len(self.key_len),
            text: std::str::from_utf8(&self.text)
                .expect("rows are written as UTF-8")
                .into(),
        };
        SCRATCH.set(self.text);
        row
    }
}

/// Starts a field of an object being written: a separator unless it is the first, then
/// its name, which must need no escaping.
fn start_field(text: &mut Vec<u8>, empty: &mut bool, name: &str) {
    if !*empty {
        text.push(b',');
    }
    *empty = false;
    text.push(b'"');
    text.extend_from_slice(name.as_bytes());
    text.extend_from_slice(b"\":");
}

/// The fields of one object in a list ([`RowWriter::objects`]).
struct Fields<'a> {
    text: &'a mut Vec<u8>,
    empty: bool,
}

impl Fields<'_> {
    fn str(&mut self, name: &str, value: &str) -> &mut Self {
        start_field(self.text, &mut self.empty, name);
        write_str(self.text, value);
        self
    }

    fn fixed(&mut self, name: &str, value: Fixed) -> &mut Self {
        start_field(self.text, &mut self.empty, name);
        value.write(self.text);
        self
    }
}

/// A JSON string, escaped exactly as `serde_json` escapes it (quotes, backslashes and
/// control characters; only such strings go through it).
fn write_str(out: &mut Vec<u8>, text: &str) {
    if text.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(out, text).expect("strings serialize to JSON");
    }
}

/// A fixed-point number printed as a JSON integer when it is whole, else as a decimal.
/// `scale` is a power of ten.
struct Fixed {
    units: i64,
    scale: i64,
}

impl Fixed {
    /// Writes the number as the decimal it is (the fraction's trailing zeros dropped): the
    /// text `serde_json` gives the quotient as an `f64` (a test holds it to that), without
    /// formatting a float for every field of every row.
    fn write(&self, out: &mut Vec<u8>) {
        let mut digits = itoa::Buffer::new();
        let fraction = (self.units % self.scale).unsigned_abs();
        if fraction == 0 {
            out.extend_from_slice(digits.format(self.units / self.scale).as_bytes());
            return;
        }
        if self.units < 0 {
            out.push(b'-');
        }
        out.extend_from_slice(
            digits
                .format((self.units / self.scale).unsigned_abs())
                .as_bytes(),
        );
        out.push(b'.');
        // The fraction zero-padded to the scale's width, then without trailing zeros.
        let width = self.scale.ilog10() as usize;
        let mut padded = [b'0'; 19];
        let text = digits.format(fraction).as_bytes();
        padded[width - text.len()..width].copy_from_slice(text);
        let end = padded[..width]
            .iter()
            .rposition(|digit| *digit != b'0')
            .map_or(0, |last| last + 1);
        out.extend_from_slice(&padded[..end]);
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
    RowWriter::new()
        .str("user", key.user.as_str())
        .str("session", key.session.as_str())
        .value()
        .int("start", aggregate.start)
        .int("end", aggregate.end)
        .int("duration_ms", aggregate.duration_ms())
        .int("events", aggregate.events)
        .int("page_views", aggregate.page_views)
        .int("high_intent", aggregate.high_intent)
        .int("purchases", aggregate.purchases)
        .int("dwell_ms", aggregate.dwell_ms)
        .fixed("max_scroll", aggregate.max_scroll.into())
        .flag("bounce", aggregate.bounce)
        .str("engagement", aggregate.engagement.as_str())
        .finish(ViewName::Sessions)
}

pub fn score_row(user: &UserId, item: &ItemId, score: Score) -> ViewRow {
    RowWriter::new()
        .str("user", user.as_str())
        .str("item", item.as_str())
        .value()
        .fixed("score", score.into())
        .finish(ViewName::Scores)
}

pub fn affinity_row(user: &UserId, category: &Category, score: Score) -> ViewRow {
    RowWriter::new()
        .str("user", user.as_str())
        .str("category", category.as_str())
        .value()
        .fixed("score", score.into())
        .finish(ViewName::Affinity)
}

/// Renders a feature vector; `recency_days` names its `active_<N>d` flags.
/// How `features` rows are written under one `recency_days`: the fields in name order (the
/// order a JSON object of them had) with their keys already escaped. Built once per
/// dataflow: every feature change of every user renders a row twice.
#[derive(Clone, Debug)]
pub struct FeaturesLayout {
    /// How many `active_<N>d` flags there are.
    recency: usize,
    /// (position in [`FeatureSums::numbers`], name), by name. Names need no escaping.
    fields: Vec<(usize, String)>,
}

impl FeaturesLayout {
    pub fn new(recency_days: &[u64]) -> Self {
        let mut fields: Vec<(usize, String)> = FeatureSums::names(recency_days)
            .into_iter()
            .enumerate()
            .map(|(position, name)| (position, name.into_owned()))
            .collect();
        fields.sort_by(|a, b| a.1.cmp(&b.1));
        debug_assert!(
            fields
                .iter()
                .all(|(_, name)| to_json(name) == format!("\"{name}\""))
        );
        FeaturesLayout {
            recency: recency_days.len(),
            fields,
        }
    }
}

pub fn features_row(user: &UserId, sums: &FeatureSums, layout: &FeaturesLayout) -> ViewRow {
    let values = sums.numbers(layout.recency);
    let mut row = RowWriter::new().str("user", user.as_str()).value();
    for (position, name) in &layout.fields {
        row = match values[*position] {
            FeatureValue::Count(n) => row.int(name, n),
            FeatureValue::Flag(flag) => row.flag(name, flag),
            FeatureValue::TenThousandths(units) => row.fixed(
                name,
                Fixed {
                    units,
                    scale: 10_000,
                },
            ),
        };
    }
    row.finish(ViewName::Features)
}

pub fn segment_row(user: &UserId, assignment: &SegmentAssignment) -> ViewRow {
    RowWriter::new()
        .str("user", user.as_str())
        .value()
        .str("segment", &assignment.id)
        .str("name", &assignment.name)
        .finish(ViewName::Segments)
}

pub fn propensity_row(user: &UserId, scores: &Propensity) -> ViewRow {
    let probability = |units: u16| Fixed {
        units: i64::from(units),
        scale: 10_000,
    };
    RowWriter::new()
        .str("user", user.as_str())
        .value()
        .fixed("conversion", probability(scores.conversion))
        .fixed("churn", probability(scores.churn))
        .finish(ViewName::Propensity)
}

/// A list of `{item, score}` entries, scores in ten-thousandths.
fn scored_items(fields: &mut Fields<'_>, (item, units): &(ItemId, i64)) {
    fields
        .str("item", item.as_str())
        .fixed("score", share(*units));
}

pub fn als_row(user: &UserId, candidates: &Candidates) -> ViewRow {
    RowWriter::with_capacity(64 + 40 * candidates.len())
        .str("user", user.as_str())
        .value()
        .objects("items", candidates, scored_items)
        .finish(ViewName::Als)
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
    RowWriter::new()
        .str("kind", kind.as_str())
        .str("from", from)
        .str("to", to)
        .value()
        .int("count", count)
        .fixed("p", share(p))
        .finish(ViewName::Transitions)
}

pub fn next_row(kind: crate::sequences::StepKind, from: &str, next: &NextSteps) -> ViewRow {
    RowWriter::with_capacity(64 + 40 * next.len())
        .str("kind", kind.as_str())
        .str("from", from)
        .value()
        .objects("next", next, |fields, (to, p)| {
            fields.str("to", to).fixed("p", share(*p));
        })
        .finish(ViewName::Next)
}

pub fn path_row(path: &[Name], count: u64) -> ViewRow {
    RowWriter::new()
        .serialized("path", path)
        .value()
        .int("count", count)
        .finish(ViewName::Paths)
}

pub fn funnel_row(row: &FunnelStep) -> ViewRow {
    RowWriter::new()
        .str("step", &row.step)
        .value()
        .int("position", row.position)
        .int("reached", row.reached)
        .fixed("rate", share(row.rate))
        .finish(ViewName::Funnel)
}

pub fn similar_row(item: &ItemId, neighbors: &crate::similar::Neighbors) -> ViewRow {
    RowWriter::with_capacity(64 + 40 * neighbors.len())
        .str("item", item.as_str())
        .value()
        .objects("neighbors", neighbors, scored_items)
        .finish(ViewName::Similar)
}

pub fn recs_row(user: &UserId, variant: &str, list: &[crate::recs::Rec]) -> ViewRow {
    RowWriter::with_capacity(64 + 64 * list.len())
        .str("user", user.as_str())
        .value()
        .str("variant", variant)
        .objects("items", list, |fields, rec| {
            fields
                .str("item", rec.item.as_str())
                .fixed("score", share(rec.score))
                .str("reason", rec.reason.as_str());
        })
        .finish(ViewName::Recs)
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
            ViewRow::from_parts(
                ViewName::Experiments,
                &to_json(&Key {
                    experiment: &experiment.name,
                    variant: &variant.name,
                }),
                &to_json(&Value {
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
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_prints_as_serde_json_prints_the_quotient() {
        let around_zero = -120_000..=120_000;
        let wide = (-4_000_000_000i64..=4_000_000_000).step_by(7_919);
        let edges = [
            i64::from(i32::MAX),
            i64::from(i32::MIN),
            999_999_999_999,
            -1,
        ];
        for scale in [1_000, 10_000] {
            for units in around_zero.clone().chain(wide.clone()).chain(edges) {
                let value = Fixed { units, scale };
                let mut ours = Vec::new();
                value.write(&mut ours);
                // As the rows printed it: an integer when whole, else the quotient as f64.
                let theirs = if units % scale == 0 {
                    serde_json::to_string(&(units / scale)).unwrap()
                } else {
                    serde_json::to_string(&(units as f64 / scale as f64)).unwrap()
                };
                assert_eq!(
                    String::from_utf8(ours).unwrap(),
                    theirs,
                    "{units} / {scale}"
                );
            }
        }
    }
}
