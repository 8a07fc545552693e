//! intentflow's incremental views: model types plus one differential dataflow per view.
//!
//! Collections in, collections out: nothing here reads input, writes output or spawns
//! threads. The runtime (`src/`) feeds [`model::Event`]s and catalog items and renders the
//! [`ViewRow`]s this crate produces.

pub mod affinity;
pub mod features;
pub mod model;
pub mod params;
pub mod render;
pub mod scores;
pub mod sessions;
pub mod windows;

use differential_dataflow::VecCollection;
use model::{CatalogItem, Event};
use params::ViewParams;

/// Timely time throughout: event time in milliseconds, coarsened by the runtime.
pub type Time = model::Millis;

pub use render::{ViewName, ViewRow};

/// Builds every view the caller asks for from the event and catalog collections, and
/// returns their changes rendered as output rows (DESIGN.md §4).
///
/// Views feed each other (features read sessions and affinity, affinity reads scores), so a
/// view is built when it or a view that reads it is wanted; only wanted ones are rendered.
pub fn build_views<'s>(
    events: VecCollection<'s, Time, Event>,
    catalog: VecCollection<'s, Time, CatalogItem>,
    params: &ViewParams,
    wanted: &[ViewName],
) -> VecCollection<'s, Time, ViewRow> {
    let wants = |view: ViewName| wanted.contains(&view);
    let mut outputs = Vec::new();
    let need_features = wants(ViewName::Features);
    let need_affinity = wants(ViewName::Affinity) || need_features;
    let need_scores = wants(ViewName::Scores) || need_affinity;
    let need_sessions = wants(ViewName::Sessions) || need_features;

    let sessions = need_sessions.then(|| sessions::sessions(events.clone(), params));
    if let Some(sessions) = sessions.as_ref().filter(|_| wants(ViewName::Sessions)) {
        outputs.push(
            sessions
                .clone()
                .map(|(key, aggregate)| render::session_row(&key, &aggregate)),
        );
    }
    let scores = need_scores.then(|| scores::scores(events.clone(), params));
    if let Some(scores) = scores.as_ref().filter(|_| wants(ViewName::Scores)) {
        outputs.push(
            scores
                .clone()
                .map(|((user, item), score)| render::score_row(&user, &item, score)),
        );
    }
    let affinity = scores
        .filter(|_| need_affinity)
        .map(|scores| affinity::affinity(scores, catalog));
    if let Some(affinity) = affinity.as_ref().filter(|_| wants(ViewName::Affinity)) {
        outputs.push(
            affinity
                .clone()
                .map(|((user, category), score)| render::affinity_row(&user, &category, score)),
        );
    }
    if let (true, Some(sessions), Some(affinity)) = (need_features, sessions, affinity) {
        let categories = affinity.map(|((user, category), _)| (user, category));
        let recency_days = params.windows.recency_days.clone();
        outputs.push(
            features::features(events.clone(), sessions, categories, &params.windows)
                .map(move |(user, features)| render::features_row(&user, &features, &recency_days)),
        );
    }
    let scope = events.scope();
    differential_dataflow::collection::concatenate(scope, outputs)
}
