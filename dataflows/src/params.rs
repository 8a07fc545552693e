//! The knobs the views read. The runtime fills them from the config file (DESIGN.md §2);
//! the defaults are the seed's numbers.

use crate::model::{Event, EventKind, Millis, Score, ScrollDepth};
use crate::name::Name;
use std::collections::BTreeMap;

/// Intent weight per event type: `click*1 + add_to_cart*3 + purchase*5` by default.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    known: BTreeMap<EventKind, Score>,
    /// Weights for event types the engine does not know, by their wire name.
    custom: BTreeMap<Name, Score>,
}

impl Default for Weights {
    fn default() -> Self {
        use EventKind::*;
        // Explicit actions carry intent; views, scrolls, impressions and exits count only
        // through implicit feedback (dwell, quick exits), not as raw weight.
        let known = [
            (Click, 1.0),
            (AddToCart, 3.0),
            (Purchase, 5.0),
            (Wishlist, 2.0),
            (Bookmark, 2.0),
            (Share, 2.0),
            (Comment, 1.0),
            (VideoPlay, 1.0),
            (PageView, 0.0),
            (Scroll, 0.0),
            (FormSubmit, 0.0),
            (Impression, 0.0),
            (Exit, 0.0),
        ]
        .into_iter()
        .map(|(kind, weight)| (kind, Score::from_f64(weight)))
        .collect();
        Weights {
            known,
            custom: BTreeMap::new(),
        }
    }
}

impl Weights {
    pub fn set_known(&mut self, kind: EventKind, weight: Score) {
        self.known.insert(kind, weight);
    }

    pub fn set_custom(&mut self, type_name: &str, weight: Score) {
        self.custom.insert(Name::new(type_name), weight);
    }

    pub fn known(&self, kind: EventKind) -> Score {
        self.known.get(&kind).copied().unwrap_or_default()
    }

    pub fn custom(&self) -> &BTreeMap<Name, Score> {
        &self.custom
    }

    /// The weight one event contributes to its (user, item) score.
    pub fn of(&self, event: &Event) -> Score {
        match (&event.kind, &event.custom_type) {
            (EventKind::Other, Some(name)) => self.custom.get(name).copied().unwrap_or_default(),
            (kind, _) => self.known(*kind),
        }
    }
}

/// Session derivation (seed 1a).
#[derive(Clone, Debug, PartialEq)]
pub struct SessionParams {
    /// Events of a user without a client session id that are further apart than this start
    /// a new session.
    pub inactivity_gap_ms: Millis,
}

impl Default for SessionParams {
    fn default() -> Self {
        SessionParams {
            inactivity_gap_ms: 30 * 60 * 1000,
        }
    }
}

/// Everything the views read, in one place.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ViewParams {
    pub weights: Weights,
    pub sessions: SessionParams,
    pub engagement: EngagementParams,
    pub feedback: FeedbackParams,
    pub windows: WindowParams,
    pub segments: crate::segments::SegmentParams,
    /// The loaded propensity model; without one the `propensity` view stays empty.
    pub propensity: Option<std::sync::Arc<crate::models::PropensityModel>>,
    pub recs: crate::recs::RecsParams,
    pub sequences: crate::sequences::SequenceParams,
    pub similar: crate::similar::SimilarParams,
    /// `[[experiments]]`; the first one's variants choose each user's `recs` blend.
    pub experiments: Vec<crate::experiments::Experiment>,
}

/// A set of event types named in the config: known kinds and custom type names.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TypeSet {
    known: Vec<EventKind>,
    custom: Vec<Name>,
}

impl TypeSet {
    pub fn of_kinds(kinds: &[EventKind]) -> Self {
        TypeSet {
            known: kinds.to_vec(),
            custom: Vec::new(),
        }
    }

    /// Adds a type by its wire name.
    pub fn insert(&mut self, name: &str) {
        match EventKind::from_name(name) {
            EventKind::Other => self.custom.push(Name::new(name)),
            kind => self.known.push(kind),
        }
    }

    pub fn contains(&self, event: &Event) -> bool {
        match (&event.kind, &event.custom_type) {
            (EventKind::Other, Some(name)) => self.custom.contains(name),
            (kind, _) => self.known.contains(kind),
        }
    }
}

/// Session engagement classes (seed 1b).
#[derive(Clone, Debug, PartialEq)]
pub struct EngagementParams {
    /// A session with any of these is `high_intent`; `high_intent` counts them.
    pub high_intent: TypeSet,
    /// Otherwise a session with any of these is `active`.
    pub active: TypeSet,
    /// Otherwise a session scrolled at least this deep is `active`, else `passive`.
    pub passive_max_scroll: ScrollDepth,
}

impl Default for EngagementParams {
    fn default() -> Self {
        use EventKind::*;
        EngagementParams {
            high_intent: TypeSet::of_kinds(&[AddToCart, Purchase]),
            active: TypeSet::of_kinds(&[Comment, Share, Wishlist, Bookmark, FormSubmit]),
            passive_max_scroll: ScrollDepth::from_fraction(0.5),
        }
    }
}

/// Implicit feedback (seed 4b, 4c): dwell and quick exits adjust scores.
#[derive(Clone, Debug, PartialEq)]
pub struct FeedbackParams {
    /// An event on an item with a longer dwell adds `long_dwell_boost`.
    pub long_dwell_ms: u64,
    pub long_dwell_boost: Score,
    /// A page view or exit with a shorter dwell is a quick exit and subtracts
    /// `quick_exit_penalty`.
    pub quick_exit_ms: u64,
    pub quick_exit_penalty: Score,
    /// A single-page session shorter than this is a bounce.
    pub bounce_ms: u64,
    /// An item quickly exited from a recommendation by at least this many distinct users
    /// is rejected: every user's score for it loses `rejected_penalty`.
    pub rejected_min_users: usize,
    pub rejected_penalty: Score,
}

impl Default for FeedbackParams {
    fn default() -> Self {
        FeedbackParams {
            long_dwell_ms: 120_000,
            long_dwell_boost: Score::from_f64(1.0),
            quick_exit_ms: 10_000,
            quick_exit_penalty: Score::from_f64(1.0),
            bounce_ms: 10_000,
            rejected_min_users: 3,
            rejected_penalty: Score::from_f64(2.0),
        }
    }
}

impl FeedbackParams {
    /// Whether the event is a page left within `quick_exit_ms`.
    pub fn is_quick_exit(&self, event: &Event) -> bool {
        matches!(event.kind, EventKind::PageView | EventKind::Exit)
            && event
                .dwell_ms
                .is_some_and(|dwell| dwell < self.quick_exit_ms)
    }

    /// The implicit-feedback adjustment one event makes to its item's score.
    pub fn adjustment(&self, event: &Event) -> Score {
        let mut adjustment = 0;
        if event
            .dwell_ms
            .is_some_and(|dwell| dwell > self.long_dwell_ms)
        {
            adjustment += self.long_dwell_boost.0;
        }
        if self.is_quick_exit(event) {
            adjustment -= self.quick_exit_penalty.0;
        }
        Score(adjustment)
    }
}

/// A stacked window: events younger than `span_ms` count `extra` times more.
#[derive(Clone, Debug, PartialEq)]
pub struct BoostWindow {
    pub span_ms: Millis,
    pub extra: Score,
}

/// Event-time windows (DESIGN.md §3): contributions are retracted when they leave.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowParams {
    /// Every view is computed over the events of the last `span_ms`.
    pub span_ms: Millis,
    /// `features.active_<N>d`: whether the user had an event in the last N days.
    pub recency_days: Vec<u64>,
    pub boost: Vec<BoostWindow>,
}

pub const DAY_MS: Millis = 86_400_000;

impl Default for WindowParams {
    fn default() -> Self {
        WindowParams {
            span_ms: 30 * DAY_MS,
            recency_days: vec![1, 7, 30],
            boost: Vec::new(),
        }
    }
}
