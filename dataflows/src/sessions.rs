//! The `sessions` view (seed 1a): per (user, session) start, end, event and page-view counts,
//! high-intent actions and maximum scroll depth.
//!
//! Events carrying a client session id are grouped by it. A user's events without one are
//! split wherever two consecutive events are more than the inactivity gap apart; such a
//! session is named `auto-<start ms>`, so an event that moves its start renames it (the
//! old row is retracted, the new one inserted).

use crate::Time;
use crate::model::{Event, EventKind, Millis, ScrollDepth, SessionId, UserId};
use crate::params::SessionParams;
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

/// What a session needs to know of one event; ordered by time first, so a reduce sees a
/// group's events in time order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionEvent {
    pub ts: Millis,
    pub kind: EventKind,
    pub scroll: Option<ScrollDepth>,
}

/// Identifies a session in the view's output.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionKey {
    pub user: UserId,
    pub session: SessionId,
}

/// One session's aggregate (the `sessions` view's value).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct SessionAggregate {
    pub start: Millis,
    pub end: Millis,
    pub events: u64,
    pub page_views: u64,
    pub high_intent: u64,
    pub max_scroll: ScrollDepth,
}

impl SessionAggregate {
    fn starting_at(ts: Millis) -> Self {
        SessionAggregate {
            start: ts,
            end: ts,
            events: 0,
            page_views: 0,
            high_intent: 0,
            max_scroll: ScrollDepth::default(),
        }
    }

    /// Folds in `count` copies of one event.
    fn absorb(&mut self, event: &SessionEvent, count: u64) {
        self.start = self.start.min(event.ts);
        self.end = self.end.max(event.ts);
        self.events += count;
        if event.kind == EventKind::PageView {
            self.page_views += count;
        }
        if event.kind.is_high_intent() {
            self.high_intent += count;
        }
        if let Some(scroll) = event.scroll {
            self.max_scroll = self.max_scroll.max(scroll);
        }
    }
}

/// Splits one user's time-ordered, session-less events into gap-separated sessions.
pub fn split_by_gap<'a>(
    events: impl IntoIterator<Item = (&'a SessionEvent, u64)>,
    gap_ms: Millis,
) -> Vec<SessionAggregate> {
    let mut sessions: Vec<SessionAggregate> = Vec::new();
    for (event, count) in events {
        match sessions.last_mut() {
            Some(open) if event.ts - open.end <= gap_ms => open.absorb(event, count),
            _ => {
                let mut session = SessionAggregate::starting_at(event.ts);
                session.absorb(event, count);
                sessions.push(session);
            }
        }
    }
    sessions
}

/// The name of a session derived from an inactivity gap.
pub fn derived_session_id(start: Millis) -> SessionId {
    SessionId::new(&format!("auto-{start}"))
}

/// Maintains the `sessions` view.
pub fn sessions<'s>(
    events: VecCollection<'s, Time, Event>,
    params: &SessionParams,
) -> VecCollection<'s, Time, (SessionKey, SessionAggregate)> {
    let gap_ms = params.inactivity_gap_ms;
    events
        .map(|event| {
            let group = (event.user, event.session);
            let summary = SessionEvent {
                ts: event.ts,
                kind: event.kind,
                scroll: event.scroll,
            };
            (group, summary)
        })
        .reduce_named(
            "Sessions",
            move |(_user, client_session),
                  input,
                  output: &mut Vec<((SessionId, SessionAggregate), isize)>| {
                // `input` is sorted by value, i.e. by time, with positive multiplicities.
                let events = input.iter().map(|(event, count)| (*event, *count as u64));
                match client_session {
                    Some(id) => {
                        let mut aggregate = SessionAggregate::starting_at(input[0].0.ts);
                        for (event, count) in events {
                            aggregate.absorb(event, count);
                        }
                        output.push(((id.clone(), aggregate), 1));
                    }
                    None => {
                        for aggregate in split_by_gap(events, gap_ms) {
                            output.push(((derived_session_id(aggregate.start), aggregate), 1));
                        }
                    }
                }
            },
        )
        .map(|((user, _client_session), (session, aggregate))| {
            (SessionKey { user, session }, aggregate)
        })
}
