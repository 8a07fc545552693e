//! The knobs the views read. The runtime fills them from the config file (DESIGN.md §2);
//! the defaults are the seed's numbers.

use crate::model::{Event, EventKind, Millis, Score};
use compact_str::CompactString;
use std::collections::BTreeMap;

/// Intent weight per event type: `click*1 + add_to_cart*3 + purchase*5` by default.
#[derive(Clone, Debug, PartialEq)]
pub struct Weights {
    known: BTreeMap<EventKind, Score>,
    /// Weights for event types the engine does not know, by their wire name.
    custom: BTreeMap<CompactString, Score>,
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
        self.custom.insert(CompactString::new(type_name), weight);
    }

    pub fn known(&self, kind: EventKind) -> Score {
        self.known.get(&kind).copied().unwrap_or_default()
    }

    pub fn custom(&self) -> &BTreeMap<CompactString, Score> {
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
}
