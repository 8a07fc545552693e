//! Event time to timely time (DESIGN.md §3).
//!
//! Timely time is event time coarsened to ticks. The input frontier follows a watermark,
//! the largest event time seen minus the allowed lateness; an event older than the
//! watermark is not dropped but applied at the watermark and counted as late.

use intentflow_dataflows::model::Millis;

#[derive(Clone, Debug)]
pub struct EventClock {
    tick_ms: Millis,
    lateness_ms: Millis,
    max_seen: Option<Millis>,
    watermark: Millis,
}

/// Where one event lands in timely time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stamp {
    pub time: Millis,
    pub late: bool,
}

impl EventClock {
    pub fn new(tick_ms: Millis, lateness_ms: Millis) -> Self {
        assert!(tick_ms > 0, "tick must be positive");
        EventClock {
            tick_ms,
            lateness_ms,
            max_seen: None,
            watermark: 0,
        }
    }

    fn tick(&self, t: Millis) -> Millis {
        t - t % self.tick_ms
    }

    /// The time the input frontier may advance to: nothing will be stamped below it.
    pub fn watermark(&self) -> Millis {
        self.watermark
    }

    /// Stamps one event and moves the watermark past it by the allowed lateness.
    pub fn stamp(&mut self, ts: Millis) -> Stamp {
        let tick = self.tick(ts);
        let stamp = Stamp {
            time: tick.max(self.watermark),
            late: tick < self.watermark,
        };
        let max_seen = self.max_seen.map_or(ts, |seen| seen.max(ts));
        self.max_seen = Some(max_seen);
        self.watermark = self
            .watermark
            .max(self.tick(max_seen.saturating_sub(self.lateness_ms)));
        stamp
    }

    /// Input went quiet: stop waiting for stragglers and let the frontier pass the newest
    /// tick seen, so every event received so far is final (a later event in that tick or
    /// before it is late). Returns the new watermark if it moved.
    pub fn idle(&mut self) -> Option<Millis> {
        let target = self.tick(self.max_seen?).saturating_add(self.tick_ms);
        (target > self.watermark).then(|| {
            self.watermark = target;
            target
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_coarsened_to_ticks() {
        let mut clock = EventClock::new(1000, 0);
        assert_eq!(clock.stamp(12_345).time, 12_000);
        assert_eq!(clock.watermark(), 12_000);
    }

    #[test]
    fn late_event_applied_at_watermark() {
        let mut clock = EventClock::new(1000, 5000);
        clock.stamp(100_000);
        assert_eq!(clock.watermark(), 95_000);
        let on_time = clock.stamp(96_500);
        assert_eq!(
            on_time,
            Stamp {
                time: 96_000,
                late: false
            }
        );
        let late = clock.stamp(90_000);
        assert_eq!(
            late,
            Stamp {
                time: 95_000,
                late: true
            }
        );
        assert_eq!(
            clock.watermark(),
            95_000,
            "a late event never moves the watermark back"
        );
    }

    #[test]
    fn idle_passes_the_newest_tick() {
        let mut clock = EventClock::new(1000, 60_000);
        assert_eq!(clock.idle(), None, "nothing seen, nothing to advance");
        clock.stamp(100_500);
        assert_eq!(clock.watermark(), 40_000);
        assert_eq!(
            clock.idle(),
            Some(101_000),
            "the newest event's tick is final"
        );
        assert_eq!(clock.idle(), None);
        let straggler = clock.stamp(100_900);
        assert!(straggler.late);
        assert_eq!(straggler.time, 101_000);
    }
}
