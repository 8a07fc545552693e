//! intentflow's incremental views: model types plus one differential dataflow per view.
//!
//! Collections in, collections out: nothing here reads input, writes output or spawns
//! threads. The runtime (`src/`) feeds [`model::Event`]s and catalog items and renders the
//! [`ViewRow`]s this crate produces.

pub mod model;
pub mod params;
pub mod render;
pub mod scores;
pub mod sessions;

use differential_dataflow::VecCollection;
use model::{CatalogItem, Event};
use params::ViewParams;

/// Timely time throughout: event time in milliseconds, coarsened by the runtime.
pub type Time = model::Millis;

pub use render::{ViewName, ViewRow};

/// Builds every view the caller asks for from the event and catalog collections, and
/// returns their changes rendered as output rows (DESIGN.md §4).
pub fn build_views<'s>(
    events: VecCollection<'s, Time, Event>,
    _catalog: VecCollection<'s, Time, CatalogItem>,
    params: &ViewParams,
    wanted: &[ViewName],
) -> VecCollection<'s, Time, ViewRow> {
    let mut outputs = Vec::new();
    if wanted.contains(&ViewName::Sessions) {
        let rows = sessions::sessions(events.clone(), &params.sessions)
            .map(|(key, aggregate)| render::session_row(&key, &aggregate));
        outputs.push(rows);
    }
    if wanted.contains(&ViewName::Scores) {
        let rows = scores::scores(events.clone(), &params.weights)
            .map(|((user, item), score)| render::score_row(&user, &item, score));
        outputs.push(rows);
    }
    let scope = events.scope();
    differential_dataflow::collection::concatenate(scope, outputs)
}
