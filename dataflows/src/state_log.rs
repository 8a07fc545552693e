//! How much state an operator of ours keeps, for `--arrangement-stats`.
//!
//! Differential reports what its arrangements hold on its own log; the operators here that
//! keep state themselves (the in-place reduce and totals, window stashes, the blend) hold
//! it in hash maps and stashes that log knows nothing about. Each reports its record count
//! on [`STATE_LOG`] when it changes, so that one file shows every operator's state, and a
//! window that stops expiring shows up whichever kind of operator keeps it.

use std::time::Duration;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::Scope;
use timely::dataflow::operators::generic::OperatorInfo;
use timely::logging_core::Logger;

/// The log's name in the worker's log registry.
pub const STATE_LOG: &str = "intentflow/state";

/// An operator's record count after an activation that changed it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateEvent {
    /// The operator's worker-unique id (timely's `Operates` event names it).
    pub operator: usize,
    /// Records held: stashed updates plus the values kept per key.
    pub records: usize,
}

/// Container builder for [`StateEvent`]s.
pub type StateEventBuilder = CapacityContainerBuilder<Vec<(Duration, StateEvent)>>;

/// One operator's reporter: does nothing (and counts nothing) unless a listener is
/// registered for [`STATE_LOG`] when the operator is built.
pub struct StateLog {
    logger: Option<Logger<StateEventBuilder>>,
    operator: usize,
    last: usize,
}

impl StateLog {
    /// The reporter for the operator `info` describes; call it in the operator's
    /// constructor.
    pub fn new<T: timely::progress::Timestamp>(scope: Scope<'_, T>, info: &OperatorInfo) -> Self {
        StateLog {
            logger: scope.worker().logger_for(STATE_LOG),
            operator: info.global_id,
            last: 0,
        }
    }

    /// Reports the count `records` computes, if it changed. Counting may walk the state,
    /// so it runs only when someone listens.
    pub fn report(&mut self, records: impl FnOnce() -> usize) {
        let Some(logger) = &self.logger else {
            return;
        };
        let records = records();
        if records != self.last {
            self.last = records;
            logger.log(StateEvent {
                operator: self.operator,
                records,
            });
        }
    }
}
