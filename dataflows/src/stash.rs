//! [`Stash`]: updates an operator holds back until its input frontier lets them go.
//!
//! Operators that emit at a time only once their input is complete up to it (the in-place
//! reduce), or that schedule output for a future time (window retractions), keep those
//! updates by time with one capability at the earliest of them. Holding one capability, not
//! one per time, keeps the progress tracker's work independent of how many times wait.

use crate::Time;
use differential_dataflow::difference::Semigroup;
use std::collections::BTreeMap;
use timely::dataflow::operators::{Capability, InputCapability};

/// How many updates a time may hold before a full list is consolidated rather than grown.
const CONSOLIDATE_FROM: usize = 1024;

/// Updates by time, and a capability at the earliest time that has any.
pub struct Stash<T> {
    by_time: BTreeMap<Time, Vec<T>>,
    held: Option<Capability<Time>>,
}

impl<T> Default for Stash<T> {
    fn default() -> Self {
        Stash {
            by_time: BTreeMap::new(),
            held: None,
        }
    }
}

impl<D: Ord, R: Semigroup> Stash<(D, R)> {
    /// Stashes an input message's updates at their own times and holds a capability for
    /// them (every time in a message is at or after its capability's).
    pub fn take(&mut self, capability: &InputCapability<Time>, data: &mut Vec<(D, Time, R)>) {
        self.take_with(capability, data, |record| record);
    }

    /// [`Stash::take`], with each record mapped by `into` (for an operator whose inputs
    /// share one stash).
    ///
    /// A time's updates are consolidated whenever their list is full, from
    /// [`CONSOLIDATE_FROM`] updates on: a time far ahead (the next refresh of a list many
    /// readers share) can gather a day's changes, most of which cancel.
    pub fn take_with<I>(
        &mut self,
        capability: &InputCapability<Time>,
        data: &mut Vec<(I, Time, R)>,
        mut into: impl FnMut(I) -> D,
    ) {
        for (record, time, diff) in data.drain(..) {
            let updates = self.at(time);
            if updates.len() >= CONSOLIDATE_FROM && updates.len() == updates.capacity() {
                differential_dataflow::consolidation::consolidate(updates);
                // Half full still: grow, so that at least half a list of new updates
                // comes between two consolidations.
                if updates.len() > updates.capacity() / 2 {
                    updates.reserve(updates.capacity());
                }
            }
            updates.push((into(record), diff));
        }
        self.hold(capability);
    }
}

impl<T> Stash<T> {
    /// How many updates wait, at every time (walks the times: for reporting).
    pub fn len(&self) -> usize {
        self.by_time.values().map(Vec::len).sum()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.by_time.is_empty()
    }

    /// The updates waiting for `time`, to push to. Call [`Stash::hold`] with the capability
    /// of the message they came in before the operator returns.
    pub fn at(&mut self, time: Time) -> &mut Vec<T> {
        // Room for one: at sparse times (most events their own millisecond) a time holds
        // one update, and a default Vec's first push reserves four (400k events, all
        // views: peak RSS 609 → 540 MB).
        self.by_time
            .entry(time)
            .or_insert_with(|| Vec::with_capacity(1))
    }

    /// Makes sure a capability is held for the earliest stashed time, delaying the
    /// message's `capability` (for output port 0) when the one held is later. Every time
    /// stashed from the message must be at or after the message's time.
    pub fn hold(&mut self, capability: &InputCapability<Time>) {
        if let Some(&earliest) = self.by_time.keys().next()
            && self
                .held
                .as_ref()
                .is_none_or(|held| *held.time() > earliest)
        {
            self.held = Some(capability.delayed(&earliest, 0));
        }
    }

    /// Hands over, earliest first, each time `ready` accepts with its updates, stopping at
    /// the first time it refuses; then holds a capability for the earliest time left, if
    /// any.
    ///
    /// Returns the capability the handed times were released under (at or before each of
    /// them), if any were: the caller gives everything it made of them in one session at
    /// it, then drops it. The records carry their own times; a session per time would
    /// send a message per time, and at sparse times (most events their own millisecond)
    /// each one allocated a buffer sized for a full message (timely's preferred capacity)
    /// to carry a record or two.
    #[must_use = "give the output made of the released times at the returned capability"]
    pub fn release(
        &mut self,
        ready: impl Fn(&Time) -> bool,
        mut emit: impl FnMut(Time, Vec<T>),
    ) -> Option<Capability<Time>> {
        self.release_scheduling(ready, |time, updates, _| emit(time, updates))
    }

    /// [`Stash::release`], where `emit` may also stash updates for later, at or after the
    /// time it is handed (an operator that schedules its own work: a window's expiry). One
    /// scheduled at the handed time is handed over next, in the same call.
    #[must_use = "give the output made of the released times at the returned capability"]
    pub fn release_scheduling(
        &mut self,
        ready: impl Fn(&Time) -> bool,
        mut emit: impl FnMut(Time, Vec<T>, &mut Vec<(Time, T)>),
    ) -> Option<Capability<Time>> {
        let capability = self.held.take()?;
        let mut later = Vec::new();
        let mut released = false;
        while let Some(entry) = self.by_time.first_entry() {
            if !ready(entry.key()) {
                break;
            }
            let (time, updates) = entry.remove_entry();
            released = true;
            emit(time, updates, &mut later);
            for (at, update) in later.drain(..) {
                assert!(
                    at >= time,
                    "scheduled at {at}, before the time released ({time})"
                );
                self.at(at).push(update);
            }
        }
        self.held = self
            .by_time
            .keys()
            .next()
            .map(|earliest| capability.delayed(earliest));
        released.then_some(capability)
    }
}
