//! The `features` view (seed 2a): one vector per user, the input of segmentation and
//! propensity models.
//!
//! Every feature is a sum (or a ratio of sums) over the user's session rows, affinity rows
//! and events in recency windows. So each such row or event contributes a vector of
//! numbers carried in the *difference* of a `user` record, and differential adds them up
//! in place: per user and time the state is one vector, and a change costs O(1) however
//! many sessions the user has. A row's retraction subtracts exactly what its insertion
//! added; a recency contribution is retracted when its window ends.

use crate::Time;
use crate::in_place;
use crate::model::{Category, Event, Millis, UserId};
use crate::params::{DAY_MS, WindowParams};
use crate::sessions::{Engagement, SessionAggregate, SessionKey};
use crate::windows::{deferred, sliding_with};
use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::sync::Mutex;
use timely::dataflow::operators::vec::Map;

/// The `features` view as a collection: one feature vector per user.
pub type UserFeatures<'s> = VecCollection<'s, Time, (UserId, FeatureSums)>;

/// How many `recency_days` windows a feature vector can carry.
pub const MAX_RECENCY_WINDOWS: usize = 8;

/// Features besides the `active_<N>d` flags, in [`FeatureSums::values`].
const BASE_FEATURES: usize = 10;

/// The names of the [`BASE_FEATURES`], in order.
const BASE_NAMES: [&str; BASE_FEATURES] = [
    "sessions",
    "avg_session_ms",
    "avg_dwell_ms",
    "page_views",
    "high_intent",
    "purchases",
    "categories",
    "active_share",
    "bounce_rate",
    "avg_scroll",
];

/// A user's feature values, in [`FeatureSums::names`] order; held inline (no allocation
/// for every feature change).
#[derive(Clone, Copy, Debug)]
pub struct FeatureNumbers {
    values: [FeatureValue; BASE_FEATURES + MAX_RECENCY_WINDOWS],
    len: usize,
}

impl std::ops::Deref for FeatureNumbers {
    type Target = [FeatureValue];
    fn deref(&self) -> &[FeatureValue] {
        &self.values[..self.len]
    }
}

/// A user's feature sums; also the difference type that accumulates them.
///
/// Counts are 32-bit: every session row and its scheduled expiries carry a whole
/// `FeatureSums` through the features' path, so its size is felt (144 → 88 bytes; the
/// bench's full file, 1 worker: peak RSS 1.19 → 1.13 GB, 57.5 → 56.1 s). Sums of
/// milliseconds and scroll depths can pass 2³¹ within a window and stay 64-bit. Counts
/// add wrapping: a count past 2³¹ within a window (billions of sessions of one user)
/// reads wrong but cannot stop the engine.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct FeatureSums {
    pub sessions: i32,
    pub session_ms: i64,
    pub page_views: i32,
    pub high_intent: i32,
    pub purchases: i32,
    /// Sessions classed active or high intent.
    pub engaged: i32,
    pub bounces: i32,
    /// Dwell summed over sessions.
    pub dwell_ms: i64,
    /// Each session's deepest scroll, in ten-thousandths, summed.
    pub scroll_e4: i64,
    /// Categories with a non-zero affinity.
    pub categories: i32,
    /// Events within each `recency_days` window, in order.
    pub recent: [i32; MAX_RECENCY_WINDOWS],
}

impl FeatureSums {
    fn of_session(session: &SessionAggregate) -> Self {
        let count = |n: u64| i32::try_from(n).unwrap_or(i32::MAX);
        let sum = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        FeatureSums {
            sessions: 1,
            session_ms: sum(session.duration_ms()),
            page_views: count(session.page_views),
            high_intent: count(session.high_intent),
            purchases: count(session.purchases),
            engaged: i32::from(session.engagement != Engagement::Passive),
            bounces: i32::from(session.bounce),
            dwell_ms: sum(session.dwell_ms),
            scroll_e4: i64::from(session.max_scroll.0),
            ..FeatureSums::default()
        }
    }

    /// Mean session duration, floored; 0 without sessions.
    pub fn avg_session_ms(&self) -> Millis {
        self.session_ms
            .checked_div(i64::from(self.sessions))
            .map_or(0, |ms| ms.max(0) as Millis)
    }

    /// Whether the user had an event in recency window `index`.
    pub fn active(&self, index: usize) -> bool {
        self.recent.get(index).is_some_and(|count| *count > 0)
    }

    /// The user's features, named and valued as the `features` view prints them and as
    /// models read them; `recency_days` names the `active_<N>d` flags.
    pub fn values(&self, recency_days: &[u64]) -> Vec<(Cow<'static, str>, FeatureValue)> {
        self.named(&FeatureSums::names(recency_days))
    }

    /// [`FeatureSums::values`] under `names`, which [`FeatureSums::names`] gave (for
    /// callers that name every feature change and compute the names once).
    pub fn named(&self, names: &[Cow<'static, str>]) -> Vec<(Cow<'static, str>, FeatureValue)> {
        let recency = names.len() - BASE_FEATURES;
        names
            .iter()
            .cloned()
            .zip(self.numbers(recency).iter().copied())
            .collect()
    }

    /// The features' names, in [`FeatureSums::values`]'s order, under `recency_days`.
    pub fn names(recency_days: &[u64]) -> Vec<Cow<'static, str>> {
        BASE_NAMES
            .iter()
            .map(|name| Cow::Borrowed(*name))
            .chain(
                recency_days
                    .iter()
                    .map(|days| Cow::Borrowed(active_name(*days))),
            )
            .collect()
    }

    /// The values of [`FeatureSums::values`] with `recency` windows, without their names:
    /// the views that render or score every feature change look them up by position.
    pub fn numbers(&self, recency: usize) -> FeatureNumbers {
        use FeatureValue::{Count, Flag, TenThousandths};
        let sessions = i64::from(self.sessions);
        let count = |n: i32| Count(i64::from(n.max(0)));
        let per_session = |sum: i64| sum.max(0).checked_div(sessions).unwrap_or(0);
        let share = |n: i32| TenThousandths(mean_half_up(10_000 * i64::from(n), sessions));
        let base: [FeatureValue; BASE_FEATURES] = [
            count(self.sessions),
            Count(self.avg_session_ms() as i64),
            Count(per_session(self.dwell_ms)),
            count(self.page_views),
            count(self.high_intent),
            count(self.purchases),
            count(self.categories),
            share(self.engaged),
            share(self.bounces),
            TenThousandths(mean_half_up(self.scroll_e4, sessions)),
        ];
        assert!(
            recency <= MAX_RECENCY_WINDOWS,
            "at most {MAX_RECENCY_WINDOWS} recency windows (the config checks it)"
        );
        let mut numbers = FeatureNumbers {
            values: [Count(0); BASE_FEATURES + MAX_RECENCY_WINDOWS],
            len: BASE_FEATURES + recency,
        };
        numbers.values[..BASE_FEATURES].copy_from_slice(&base);
        for index in 0..recency {
            numbers.values[BASE_FEATURES + index] = Flag(self.active(index));
        }
        numbers
    }

    /// The 64-bit sums.
    fn sums_mut(&mut self) -> [&mut i64; 3] {
        [
            &mut self.session_ms,
            &mut self.dwell_ms,
            &mut self.scroll_e4,
        ]
    }

    /// The 32-bit counts.
    fn counts_mut(&mut self) -> impl Iterator<Item = &mut i32> {
        [
            &mut self.sessions,
            &mut self.page_views,
            &mut self.high_intent,
            &mut self.purchases,
            &mut self.engaged,
            &mut self.bounces,
            &mut self.categories,
        ]
        .into_iter()
        .chain(self.recent.iter_mut())
    }

    /// Applies `sum` to every 64-bit field and `count` to every 32-bit one, each with the
    /// same field of `other`.
    fn combine(
        &mut self,
        mut other: Self,
        sum: impl Fn(i64, i64) -> i64,
        count: impl Fn(i32, i32) -> i32,
    ) {
        for (mine, theirs) in self.sums_mut().into_iter().zip(other.sums_mut()) {
            *mine = sum(*mine, *theirs);
        }
        for (mine, theirs) in self.counts_mut().zip(other.counts_mut()) {
            *mine = count(*mine, *theirs);
        }
    }

    /// Applies `sum` to every 64-bit field and `count` to every 32-bit one.
    fn map(&mut self, sum: impl Fn(i64) -> i64, count: impl Fn(i32) -> i32) {
        for field in self.sums_mut() {
            *field = sum(*field);
        }
        for field in self.counts_mut() {
            *field = count(*field);
        }
    }
}

/// The name of the `active_<days>d` flag. Every feature change of every user names its
/// flags (to score and render them), so each name is built once per process and kept: the
/// names come from `[windows] recency_days`, a handful per run.
fn active_name(days: u64) -> &'static str {
    static NAMES: Mutex<BTreeMap<u64, &'static str>> = Mutex::new(BTreeMap::new());
    let mut names = NAMES
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    names
        .entry(days)
        .or_insert_with(|| Box::leak(format!("active_{days}d").into_boxed_str()))
}

/// `sum / count` rounded half up; 0 when `count` is 0.
pub(crate) fn mean_half_up(sum: i64, count: i64) -> i64 {
    if count <= 0 {
        return 0;
    }
    let (sum, count) = (i128::from(sum.max(0)), i128::from(count));
    ((2 * sum + count) / (2 * count)) as i64
}

/// One feature's value: what the view prints and what models read (as `f64`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FeatureValue {
    Count(i64),
    /// A share or mean kept to four decimals.
    TenThousandths(i64),
    Flag(bool),
}

impl FeatureValue {
    pub fn as_f64(self) -> f64 {
        match self {
            FeatureValue::Count(n) => n as f64,
            FeatureValue::TenThousandths(units) => units as f64 / 10_000.0,
            FeatureValue::Flag(flag) => f64::from(u8::from(flag)),
        }
    }
}

impl IsZero for FeatureSums {
    fn is_zero(&self) -> bool {
        *self == FeatureSums::default()
    }
}

impl Semigroup for FeatureSums {
    fn plus_equals(&mut self, rhs: &Self) {
        self.combine(*rhs, |a, b| a + b, i32::wrapping_add);
    }
}

impl Monoid for FeatureSums {
    fn zero() -> Self {
        FeatureSums::default()
    }
}

impl Abelian for FeatureSums {
    fn negate(&mut self) {
        self.map(|a| -a, i32::wrapping_neg);
    }
}

impl Multiply<isize> for FeatureSums {
    type Output = FeatureSums;
    fn multiply(mut self, rhs: &isize) -> Self {
        let (wide, narrow) = (*rhs as i64, *rhs as i32);
        self.map(|a| a * wide, |a| a.wrapping_mul(narrow));
        self
    }
}

/// Maintains the `features` view: a row per user with an event in the main window or in
/// a recency window.
///
/// A recency window no longer than the main window is tracked through session rows: a
/// session row counts as "recent" from when it appears until it is replaced or its last
/// event is older than the window, whichever comes first. The expiry is scheduled when the
/// row appears and cancelled by the row's retraction, so a user holds one pending expiry
/// per live session instead of one per event; expiries wait in [`deferred`], not in the
/// sum's batcher, which would re-sort all of them at every step. Longer windows count
/// events directly.
pub fn features<'s>(
    events: VecCollection<'s, Time, Event>,
    sessions: VecCollection<'s, Time, (SessionKey, SessionAggregate)>,
    affinity_users_categories: VecCollection<'s, Time, (UserId, Category)>,
    windows: &WindowParams,
) -> UserFeatures<'s> {
    let spans: Vec<(usize, Millis)> = windows
        .recency_days
        .iter()
        .map(|days| days.saturating_mul(DAY_MS))
        .enumerate()
        .collect();
    let (by_session, by_event): (Vec<_>, Vec<_>) = spans
        .into_iter()
        .partition(|(_, span)| *span <= windows.span_ms);
    let session_parts = sessions
        .inner
        .flat_map(move |((key, session), time, diff)| {
            let mut now = FeatureSums::of_session(&session);
            let mut expiries = Vec::with_capacity(by_session.len());
            for &(index, span) in &by_session {
                now.recent[index] = 1;
                let mut unit = FeatureSums::default();
                unit.recent[index] = 1;
                let expiry = time.max(session.last_at.saturating_add(span));
                expiries.push((key.user.clone(), expiry, unit.multiply(&-diff)));
            }
            std::iter::once((key.user, time, now.multiply(&diff))).chain(expiries)
        })
        .as_collection();
    let mut parts = vec![
        deferred(session_parts),
        affinity_users_categories.explode(|(user, _category)| {
            Some((
                user,
                FeatureSums {
                    categories: 1,
                    ..FeatureSums::default()
                },
            ))
        }),
    ];
    for (index, span) in by_event {
        let mut unit = FeatureSums::default();
        unit.recent[index] = 1;
        parts.push(sliding_with(events.clone(), span, move |event, _, diff| {
            Some((event.user, unit.multiply(&diff)))
        }));
    }
    // In place rather than differential's `count_total` (an arrangement, then the count):
    // one operator fewer between an event and the views that read features, so one
    // progress round less before an event's segment or propensity can change.
    in_place::total(
        differential_dataflow::collection::concatenate(events.scope(), parts),
        "Features",
        |user: &UserId, sums: &FeatureSums| Some((user.clone(), *sums)),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field different, so a field mixed up with another shows.
    fn distinct() -> FeatureSums {
        let mut sums = FeatureSums::default();
        let mut next = 1;
        for field in sums.sums_mut() {
            *field = 3_000_000_000 + next;
            next += 1;
        }
        for field in sums.counts_mut() {
            *field = next as i32;
            next += 1;
        }
        sums
    }

    #[test]
    fn sums_combine_field_by_field() {
        let sums = distinct();
        let mut doubled = sums;
        doubled.plus_equals(&sums);
        assert_eq!(doubled, sums.multiply(&2));
        assert_eq!(doubled.session_ms, 2 * sums.session_ms);
        assert_eq!(doubled.recent[7], 2 * sums.recent[7]);
        let mut negated = sums;
        negated.negate();
        assert_eq!(negated, sums.multiply(&-1));
        assert_eq!(negated.categories, -sums.categories);
        negated.plus_equals(&sums);
        assert!(negated.is_zero());
    }

    #[test]
    fn a_count_past_32_bits_wraps_and_comes_back() {
        let mut sums = FeatureSums {
            page_views: i32::MAX,
            ..FeatureSums::default()
        };
        let one = FeatureSums {
            page_views: 1,
            ..FeatureSums::default()
        };
        sums.plus_equals(&one);
        sums.plus_equals(&one.multiply(&-1));
        assert_eq!(sums.page_views, i32::MAX);
    }
}
