//! What each (user, client session) key of the window gives the views that read sessions:
//! the `sessions` view's rows and the sequence views' facts, kept in one place.
//!
//! Both are functions of the key's events in the window, in step order, split into
//! sessions (the client session, or runs between inactivity gaps). Events mostly arrive in
//! order, so most changes append to the key's last session: then only that session's row
//! and funnel depth are retracted and re-inserted, and the appended events add their own
//! transitions and paths ([`StepScan`]), without rebuilding the session's facts. Any other
//! change (a window expiry, an event out of order) retracts everything the key gave and
//! inserts what it gives now. A key's state is its events in the window
//! ([`in_place::update_in_place_expiring`], which also expires them, so no window in front
//! keeps a second copy of each); differential's `reduce` would hold them in a trace and
//! each output in another, and rebuild the whole output at every time the key changes,
//! which makes a long session cost its length for every event added.

use crate::Time;
use crate::in_place;
use crate::model::{SessionId, UserId};
use crate::params::ViewParams;
use crate::sequences::{Fact, SequenceParams, StepScan};
use crate::sessions::{
    SessionAggregate, SessionEvent, SessionEvents, SessionKey, SessionParams, derived_session_id,
    split_runs,
};
use differential_dataflow::VecCollection;
use serde::{Deserialize, Serialize};

/// One output of a (user, client session) key.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum KeyOutput {
    Session(SessionId, SessionAggregate),
    Fact(Fact),
}

/// Which of the two outputs some view reads.
#[derive(Clone, Copy, Debug)]
pub struct Wanted {
    pub sessions: bool,
    pub facts: bool,
}

/// The changes of both outputs, split by [`BySession::sessions`] and [`BySession::facts`].
pub struct BySession<'s> {
    changes: VecCollection<'s, Time, ((UserId, Option<SessionId>), KeyOutput)>,
}

impl<'s> BySession<'s> {
    /// The `sessions` view.
    pub fn sessions(&self) -> VecCollection<'s, Time, (SessionKey, SessionAggregate)> {
        self.changes
            .clone()
            .flat_map(|((user, _client_session), output)| match output {
                KeyOutput::Session(session, aggregate) => {
                    Some((SessionKey { user, session }, aggregate))
                }
                KeyOutput::Fact(_) => None,
            })
    }

    /// Every session's facts, for the sequence views.
    pub fn facts(&self) -> VecCollection<'s, Time, Fact> {
        self.changes
            .clone()
            .flat_map(|(_key, output)| match output {
                KeyOutput::Fact(fact) => Some(fact),
                KeyOutput::Session(..) => None,
            })
    }
}

/// Maintains the wanted outputs of every (user, client session) key over the window
/// (`[windows] span_ms`) of `events`.
pub fn by_session<'s>(
    events: SessionEvents<'s>,
    params: &ViewParams,
    wanted: Wanted,
) -> BySession<'s> {
    let span = params.windows.span_ms;
    let settings = Settings {
        sessions: SessionParams::of(params),
        sequences: params.sequences.clone(),
        wanted,
    };
    // The window is kept here: an event leaves its key's events `span` after it entered.
    let changes = in_place::update_in_place_expiring(
        events,
        "BySession",
        move |event: &SessionEvent| Some(event.at.saturating_add(span)),
        move |(_user, client_session), events, updates, changes| {
            let appended = updates.iter().all(|(_, diff)| *diff > 0)
                && events
                    .last()
                    .is_none_or(|(last, _)| updates.first().is_some_and(|(first, _)| first > last));
            if appended {
                let old_len = events.len();
                events.extend_from_slice(updates);
                settings.appended(client_session, events, old_len, changes);
            } else {
                settings.outputs(client_session, events, -1, changes);
                in_place::apply(events, in_place::by_ref(updates));
                settings.outputs(client_session, events, 1, changes);
            }
        },
    );
    BySession { changes }
}

/// What a key's outputs depend on besides its events.
struct Settings {
    sessions: SessionParams,
    sequences: SequenceParams,
    wanted: Wanted,
}

/// A key's events, sorted by value (step order), with positive counts.
type Events = [(SessionEvent, isize)];

/// One session being read in step order: its aggregate and its facts so far.
struct Run<'a> {
    aggregate: SessionAggregate,
    steps: StepScan<'a>,
}

impl Settings {
    /// Every output of `events` with multiplicity `sign`.
    fn outputs(
        &self,
        client_session: &Option<SessionId>,
        events: &Events,
        sign: isize,
        out: &mut Vec<(KeyOutput, isize)>,
    ) {
        for run in self.runs(client_session, events) {
            self.scan(client_session, run, sign, out);
        }
    }

    /// The changes when `events[old_len..]` were appended after every earlier event: the
    /// last session before them is retracted and re-read without emitting its facts, then
    /// continued with the new events; a gap in them starts new sessions.
    fn appended(
        &self,
        client_session: &Option<SessionId>,
        events: &Events,
        old_len: usize,
        out: &mut Vec<(KeyOutput, isize)>,
    ) {
        let gap_ms = self.sessions.gap_ms;
        let gap = |at: usize| {
            client_session.is_none() && events[at].0.step.ts - events[at - 1].0.step.ts > gap_ms
        };
        // Where the last old session starts, and whether the new events continue it.
        let mut start = old_len;
        while start > 0 && (start == old_len || !gap(start)) {
            start -= 1;
        }
        if old_len == 0 || gap(old_len) {
            self.outputs(client_session, &events[old_len..], 1, out);
            return;
        }
        // The last old session's state, re-read without emitting the facts it has given.
        let mut run = self.begin(&events[start].0);
        for event in &events[start..old_len] {
            self.fold(&mut run, event, |_| {});
        }
        self.close(client_session, &run, -1, out);
        let mut end = old_len;
        while end < events.len() && (end == old_len || !gap(end)) {
            self.step(&mut run, &events[end], 1, out);
            end += 1;
        }
        self.close(client_session, &run, 1, out);
        self.outputs(client_session, &events[end..], 1, out);
    }

    /// The sessions of a key's events: the one client session, or runs between gaps.
    fn runs<'a>(&self, client_session: &Option<SessionId>, events: &'a Events) -> Vec<&'a Events> {
        match client_session {
            _ if events.is_empty() => Vec::new(),
            Some(_) => vec![events],
            None => split_runs(events, |(event, _)| event.step.ts, self.sessions.gap_ms),
        }
    }

    /// Every output of one session with multiplicity `sign`.
    fn scan(
        &self,
        client_session: &Option<SessionId>,
        run: &Events,
        sign: isize,
        out: &mut Vec<(KeyOutput, isize)>,
    ) {
        let mut session = self.begin(&run[0].0);
        for event in run {
            self.step(&mut session, event, sign, out);
        }
        self.close(client_session, &session, sign, out);
    }

    /// A session whose first event is `first`, with nothing read yet.
    fn begin(&self, first: &SessionEvent) -> Run<'_> {
        Run {
            aggregate: SessionAggregate::starting_at(first.step.ts),
            steps: StepScan::new(&self.sequences),
        }
    }

    /// Folds one event into `run`, pushing the facts it adds with multiplicity `sign`.
    fn step<'a>(
        &self,
        run: &mut Run<'a>,
        event: &'a (SessionEvent, isize),
        sign: isize,
        out: &mut Vec<(KeyOutput, isize)>,
    ) {
        self.fold(run, event, |fact| out.push((KeyOutput::Fact(fact), sign)));
    }

    /// Folds one event into `run`, passing the facts it adds to `emit`.
    fn fold<'a>(
        &self,
        run: &mut Run<'a>,
        (event, count): &'a (SessionEvent, isize),
        emit: impl FnMut(Fact),
    ) {
        run.aggregate.absorb(event, *count as u64);
        if self.wanted.facts {
            run.steps.step(&event.step, *count as usize, emit);
        }
    }

    /// The outputs known only once a session is read: its row and its funnel depth.
    fn close(
        &self,
        client_session: &Option<SessionId>,
        run: &Run,
        sign: isize,
        out: &mut Vec<(KeyOutput, isize)>,
    ) {
        if self.wanted.sessions {
            let mut aggregate = run.aggregate.clone();
            aggregate.classify(&self.sessions.engagement, &self.sessions.feedback);
            let id = match client_session {
                Some(id) => id.clone(),
                None => derived_session_id(aggregate.start),
            };
            out.push((KeyOutput::Session(id, aggregate), sign));
        }
        if self.wanted.facts {
            out.push((KeyOutput::Fact(run.steps.depth_fact()), sign));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ItemId;
    use crate::name::Name;
    use crate::sequences::StepEvent;
    use crate::sessions::EventClass;
    use differential_dataflow::AsCollection;
    use differential_dataflow::input::InputSession;
    use std::sync::{Arc, Mutex};
    use timely::dataflow::operators::vec::Map;

    type Key = (UserId, Option<SessionId>);
    type Change = ((Key, KeyOutput), Time, isize);
    type Changes = Arc<Mutex<Vec<Change>>>;

    fn event(ts: u64, page: u64, item: u64) -> SessionEvent {
        let pages = ["home", "category", "product", "cart", "purchase"];
        SessionEvent {
            step: StepEvent {
                ts,
                page: (page < 5).then(|| Name::new(pages[page as usize])),
                item: (item < 3).then(|| ItemId::new(["a", "b", "c"][item as usize])),
            },
            at: ts,
            class: EventClass {
                page_view: page < 4,
                purchase: page == 4,
                high_intent: item == 2,
                active: item < 2,
            },
            scroll: None,
            dwell_ms: ts % 7_000,
        }
    }

    /// How long an event stays in the window, against the test input's 800 time units.
    const SPAN: Time = 150;

    /// Runs random events (mostly appends, also events out of order, repeats, and gaps that
    /// split session-less keys) through [`by_session`], which keeps the window itself, and
    /// through a window in front of differential's `reduce` rebuilding every output of a
    /// key from its events, and returns both outputs, consolidated.
    fn run(workers: usize, seed: u64) -> [Vec<Change>; 2] {
        let outputs: [Changes; 2] = Default::default();
        let shared = outputs.clone();
        timely::execute(timely::Config::process(workers), move |worker| {
            let mut input = InputSession::<Time, (Key, SessionEvent), isize>::new();
            let [ours, theirs] = shared.clone();
            let probe = worker.dataflow(|scope| {
                // Each event stamped with the time it enters at, as `session_events` does.
                let events = input
                    .to_collection(scope)
                    .inner
                    .map(|((key, event), at, diff)| ((key, SessionEvent { at, ..event }), at, diff))
                    .as_collection();
                let wanted = Wanted {
                    sessions: true,
                    facts: true,
                };
                let mut params = ViewParams::default();
                params.windows.span_ms = SPAN;
                by_session(events.clone(), &params, wanted)
                    .changes
                    .inspect(move |update| ours.lock().unwrap().push(update.clone()));
                let settings = Settings {
                    sessions: SessionParams::of(&params),
                    sequences: params.sequences.clone(),
                    wanted,
                };
                let window = crate::windows::sliding_with(events, SPAN, |record, _, diff| {
                    Some((record, diff))
                });
                let (probe, _) = window
                    .reduce(move |key: &Key, input, output| {
                        let events: Vec<(SessionEvent, isize)> =
                            input.iter().map(|(e, c)| ((*e).clone(), *c)).collect();
                        settings.outputs(&key.1, &events, 1, output);
                        differential_dataflow::consolidation::consolidate(output);
                    })
                    .inspect(move |update| theirs.lock().unwrap().push(update.clone()))
                    .probe();
                probe
            });
            if worker.index() != 0 {
                return;
            }
            let mut next = crate::in_place::tests::random(seed);
            let keys: Vec<Key> = (0..4)
                .map(|k| {
                    (
                        UserId::new(&format!("u{}", k % 2)),
                        (k >= 2).then(|| SessionId::new("s")),
                    )
                })
                .collect();
            let mut clocks = [0u64; 4];
            for round in 0..80u64 {
                let now = round * 10;
                input.advance_to(now);
                for _ in 0..next(6) {
                    let time = now + next(10);
                    // A burst of a key's events at one time: an append can hold a gap.
                    let k = next(4) as usize;
                    for _ in 0..1 + next(3) {
                        // Mostly forward in time, sometimes past the 30-minute gap,
                        // sometimes back before the key's latest event.
                        let ts = match next(10) {
                            0 => clocks[k].saturating_sub(next(120_000)),
                            1 => clocks[k] + 2_000_000,
                            _ => clocks[k] + next(60_000),
                        };
                        clocks[k] = clocks[k].max(ts);
                        let record = (keys[k].clone(), event(ts, next(6), next(4)));
                        let copies = 1 + isize::from(next(8) == 0);
                        input.update_at(record, time, copies);
                    }
                }
            }
            input.close();
            while !probe.done() {
                worker.step();
            }
        })
        .unwrap();
        outputs.map(|changes| crate::in_place::tests::consolidated(&changes))
    }

    #[test]
    fn matches_rebuilding_every_output_time_by_time() {
        crate::in_place::tests::assert_runs_agree(0..4, 200, run);
    }
}
