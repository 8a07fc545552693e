//! The `features` view (seed 2a): one vector per user, the input of segmentation and
//! propensity models.
//!
//! Everything a user's vector needs arrives as a small "part" keyed by user: one per session
//! row, one per category with a non-zero affinity, and one per recency window the user is
//! active in. A single reduce per user folds the parts, so the per-user state is a handful
//! of records and a change to any part recomputes only that user's vector.

use crate::Time;
use crate::model::{Category, Event, Millis, UserId};
use crate::params::{DAY_MS, WindowParams};
use crate::sessions::{Engagement, SessionAggregate, SessionKey};
use crate::windows::sliding;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

/// One contribution to a user's feature vector.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Part {
    Session {
        duration_ms: Millis,
        page_views: u64,
        high_intent: u64,
        purchases: u64,
        engaged: bool,
        bounce: bool,
    },
    Category(Category),
    /// Active within `recency_days[index]` days.
    Recent(usize),
}

/// A user's feature vector (the `features` view's value).
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Features {
    pub sessions: u64,
    pub avg_session_ms: Millis,
    pub page_views: u64,
    pub high_intent: u64,
    pub purchases: u64,
    /// Sessions classed active or high intent, and bounces; shares are derived on output.
    pub engaged_sessions: u64,
    pub bounces: u64,
    pub categories: u64,
    /// Per `recency_days` entry, in order.
    pub active: Vec<bool>,
}

/// Maintains the `features` view.
pub fn features<'s>(
    events: VecCollection<'s, Time, Event>,
    sessions: VecCollection<'s, Time, (SessionKey, SessionAggregate)>,
    affinity_users_categories: VecCollection<'s, Time, (UserId, Category)>,
    windows: &WindowParams,
) -> VecCollection<'s, Time, (UserId, Features)> {
    let mut parts = vec![
        sessions.map(|(key, session)| {
            let part = Part::Session {
                duration_ms: session.duration_ms(),
                page_views: session.page_views,
                high_intent: session.high_intent,
                purchases: session.purchases,
                engaged: session.engagement != Engagement::Passive,
                bounce: session.bounce,
            };
            (key.user, part)
        }),
        affinity_users_categories.map(|(user, category)| (user, Part::Category(category))),
    ];
    for (index, days) in windows.recency_days.iter().enumerate() {
        let activity = events
            .clone()
            .map(move |event| (event.user, Part::Recent(index)));
        parts.push(sliding(activity, days.saturating_mul(DAY_MS)));
    }
    let recency_windows = windows.recency_days.len();
    differential_dataflow::collection::concatenate(events.scope(), parts).reduce_named(
        "Features",
        move |_user, parts, output: &mut Vec<(Features, isize)>| {
            let mut features = Features {
                active: vec![false; recency_windows],
                ..Features::default()
            };
            let mut total_duration: u64 = 0;
            for (part, count) in parts {
                let count = *count as u64;
                match part {
                    Part::Session {
                        duration_ms,
                        page_views,
                        high_intent,
                        purchases,
                        engaged,
                        bounce,
                    } => {
                        features.sessions += count;
                        total_duration = total_duration.saturating_add(count * duration_ms);
                        features.page_views += count * page_views;
                        features.high_intent += count * high_intent;
                        features.purchases += count * purchases;
                        features.engaged_sessions += count * u64::from(*engaged);
                        features.bounces += count * u64::from(*bounce);
                    }
                    Part::Category(_) => features.categories += 1,
                    Part::Recent(index) => features.active[*index] = true,
                }
            }
            features.avg_session_ms = total_duration.checked_div(features.sessions).unwrap_or(0);
            output.push((features, 1));
        },
    )
}
