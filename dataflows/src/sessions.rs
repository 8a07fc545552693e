//! The `sessions` view (seeds 1a, 1b): per (user, session) start, end, counts, dwell, maximum
//! scroll depth, bounce and engagement class, over the events in the window.
//!
//! Events carrying a client session id are grouped by it. A user's events without one are
//! split wherever two consecutive events are more than the inactivity gap apart; such a
//! session is named `auto-<start ms>`, so an event that moves its start renames it (the
//! old row is retracted, the new one inserted).
//!
//! This module defines the window's events and a session's aggregate; the rows are kept
//! by [`crate::by_session`], with the sequence views' facts of the same sessions.

use crate::Time;
use crate::model::{Event, EventKind, Millis, ScrollDepth, SessionId, UserId};
use crate::params::{EngagementParams, FeedbackParams, ViewParams};
use crate::sequences::StepEvent;
use differential_dataflow::{AsCollection, VecCollection};
use serde::{Deserialize, Serialize};
use timely::dataflow::operators::vec::Map;

/// What the session views (`sessions` and the sequence views) need to know of one event;
/// ordered by its step (time first, see [`StepEvent`]), so a reduce sees a session's events
/// in step order. The event's type is reduced to the classes the session counts, so the
/// configured type lists are applied once, where the event enters.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionEvent {
    /// Time, page step and item: all the sequence views read.
    pub step: StepEvent,
    /// The event's effective (timely) time, which can differ from `ts` by tick flooring
    /// and lateness; recency windows run on it.
    pub at: Time,
    pub class: EventClass,
    pub scroll: Option<ScrollDepth>,
    pub dwell_ms: u64,
}

/// The bits of an event's type a session aggregates.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct EventClass {
    pub page_view: bool,
    pub purchase: bool,
    pub high_intent: bool,
    pub active: bool,
}

impl EventClass {
    pub fn of(event: &Event, engagement: &EngagementParams) -> Self {
        EventClass {
            page_view: event.kind == EventKind::PageView,
            purchase: event.kind == EventKind::Purchase,
            high_intent: engagement.high_intent.contains(event),
            active: engagement.active.contains(event),
        }
    }
}

/// Identifies a session in the view's output.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionKey {
    pub user: UserId,
    pub session: SessionId,
}

/// How engaged a session is (seed 1b), in increasing order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Engagement {
    Passive,
    Active,
    HighIntent,
}

impl Engagement {
    pub fn as_str(self) -> &'static str {
        match self {
            Engagement::Passive => "passive",
            Engagement::Active => "active",
            Engagement::HighIntent => "high_intent",
        }
    }
}

/// One session's aggregate (the `sessions` view's value).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionAggregate {
    pub start: Millis,
    pub end: Millis,
    pub events: u64,
    pub page_views: u64,
    pub high_intent: u64,
    pub purchases: u64,
    pub active_actions: u64,
    pub dwell_ms: u64,
    pub max_scroll: ScrollDepth,
    pub bounce: bool,
    pub engagement: Engagement,
    /// The latest effective time of the session's events (not printed).
    pub last_at: Time,
}

impl SessionAggregate {
    pub(crate) fn starting_at(ts: Millis) -> Self {
        SessionAggregate {
            start: ts,
            end: ts,
            events: 0,
            page_views: 0,
            high_intent: 0,
            purchases: 0,
            active_actions: 0,
            dwell_ms: 0,
            max_scroll: ScrollDepth::default(),
            bounce: false,
            engagement: Engagement::Passive,
            last_at: 0,
        }
    }

    /// Folds in `count` copies of one event.
    pub(crate) fn absorb(&mut self, event: &SessionEvent, count: u64) {
        self.start = self.start.min(event.step.ts);
        self.end = self.end.max(event.step.ts);
        self.last_at = self.last_at.max(event.at);
        self.events += count;
        let class = event.class;
        self.page_views += count * u64::from(class.page_view);
        self.purchases += count * u64::from(class.purchase);
        self.high_intent += count * u64::from(class.high_intent);
        self.active_actions += count * u64::from(class.active);
        self.dwell_ms = self.dwell_ms.saturating_add(count * event.dwell_ms);
        if let Some(scroll) = event.scroll {
            self.max_scroll = self.max_scroll.max(scroll);
        }
    }

    /// Derives the classifications once every event is in.
    pub(crate) fn classify(&mut self, engagement: &EngagementParams, feedback: &FeedbackParams) {
        self.engagement = if self.high_intent > 0 {
            Engagement::HighIntent
        } else if self.active_actions > 0 || self.max_scroll >= engagement.passive_max_scroll {
            Engagement::Active
        } else {
            Engagement::Passive
        };
        self.bounce = self.page_views == 1
            && self.end - self.start < feedback.bounce_ms
            && self.dwell_ms < feedback.bounce_ms;
    }

    pub fn duration_ms(&self) -> Millis {
        self.end - self.start
    }
}

/// Splits time-ordered records into runs wherever two consecutive ones are more than
/// `gap_ms` apart: a user's session-less events into sessions.
pub fn split_runs<T>(records: &[T], ts: impl Fn(&T) -> Millis, gap_ms: Millis) -> Vec<&[T]> {
    let mut runs = Vec::new();
    let mut start = 0;
    for index in 1..records.len() {
        if ts(&records[index]) - ts(&records[index - 1]) > gap_ms {
            runs.push(&records[start..index]);
            start = index;
        }
    }
    if start < records.len() {
        runs.push(&records[start..]);
    }
    runs
}

/// The name of a session derived from an inactivity gap.
pub fn derived_session_id(start: Millis) -> SessionId {
    SessionId::new(&format!("auto-{start}"))
}

/// Each event as a [`SessionEvent`] at its time, by (user, client session): what
/// [`crate::by_session`] keeps, over the window, for each key.
pub type SessionEvents<'s> = VecCollection<'s, Time, ((UserId, Option<SessionId>), SessionEvent)>;

/// `events` as [`SessionEvents`]. Each carries the time it enters at (the effective,
/// timely time, which can differ from `ts` by tick flooring and lateness): the window's
/// expiry and the recency windows run on it.
pub fn session_events<'s>(
    events: VecCollection<'s, Time, Event>,
    params: &ViewParams,
) -> SessionEvents<'s> {
    let engagement = params.engagement.clone();
    events
        .inner
        .map(move |(event, at, diff)| {
            let summary = SessionEvent {
                step: StepEvent::of(&event),
                at,
                class: EventClass::of(&event, &engagement),
                scroll: event.scroll,
                dwell_ms: event.dwell_ms.unwrap_or(0),
            };
            (((event.user, event.session), summary), at, diff)
        })
        .as_collection()
}

/// The `sessions` view's settings.
#[derive(Clone, Debug)]
pub struct SessionParams {
    pub gap_ms: Millis,
    pub engagement: EngagementParams,
    pub feedback: FeedbackParams,
}

impl SessionParams {
    pub fn of(params: &ViewParams) -> Self {
        SessionParams {
            gap_ms: params.sessions.inactivity_gap_ms,
            engagement: params.engagement.clone(),
            feedback: params.feedback.clone(),
        }
    }
}
