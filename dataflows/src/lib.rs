//! intentflow's incremental views: model types plus one differential dataflow per view.
//!
//! Collections in, collections out: nothing here reads input, writes output or spawns
//! threads. The runtime (`src/`) feeds [`model::Event`]s and catalog items and renders the
//! [`ViewRow`]s this crate produces.

pub mod affinity;
pub mod als;
pub mod assignment;
pub mod blend;
pub mod by_session;
pub mod experiments;
pub mod features;
pub mod in_place;
pub mod model;
pub mod models;
pub mod name;
pub mod params;
pub mod propensity;
pub mod recs;
pub mod render;
pub mod scores;
pub mod segments;
pub mod sequences;
pub mod sessions;
pub mod shared;
pub mod significance;
pub mod similar;
pub mod stash;
pub mod windows;
pub mod with_model;

use differential_dataflow::VecCollection;
use model::{CatalogItem, Event};
use params::ViewParams;

/// Timely time throughout: event time in milliseconds, coarsened by the runtime.
pub type Time = model::Millis;

pub use render::{ViewName, ViewRow};

/// The engine's inputs, as collections.
pub struct Inputs<'s> {
    pub events: VecCollection<'s, Time, Event>,
    pub catalog: VecCollection<'s, Time, CatalogItem>,
    /// The current k-means model as JSON (see [`segments::segments`]).
    pub segment_models: VecCollection<'s, Time, String>,
    /// The current ALS model as JSON (see [`als::als`]).
    pub als_models: VecCollection<'s, Time, String>,
    /// Which models the run has (loaded or refitted), so views that can use them but do
    /// not need them (`recs`) build them only then.
    pub available: Available,
}

/// Whether the segment and ALS models exist for this run.
#[derive(Clone, Copy, Debug, Default)]
pub struct Available {
    /// A k-means model, rule segments, or k-means refits.
    pub segments: bool,
    /// An ALS model or ALS refits.
    pub als: bool,
}

/// What [`build_views`] gives the runtime.
pub struct Built<'s> {
    /// Every wanted view's changes, rendered as output rows (DESIGN.md §4).
    pub rows: VecCollection<'s, Time, ViewRow>,
    /// The `features` and `scores` collections when some view needed them: the runtime
    /// snapshots them to refit models.
    pub features: Option<features::UserFeatures<'s>>,
    pub scores: Option<VecCollection<'s, Time, (scores::ScoreKey, model::Score)>>,
}

/// Builds every view the caller asks for from the input collections.
///
/// Views feed each other (features read sessions and affinity, affinity reads scores, recs
/// read nearly everything), so a view is built when it or a view that reads it is wanted;
/// only wanted ones are rendered.
pub fn build_views<'s>(inputs: Inputs<'s>, params: &ViewParams, wanted: &[ViewName]) -> Built<'s> {
    let Inputs {
        events,
        catalog,
        segment_models,
        als_models,
        available,
    } = inputs;
    let wants = |view: ViewName| wanted.contains(&view);
    let recs = wants(ViewName::Recs);
    let mut outputs = Vec::new();
    let need_segments = wants(ViewName::Segments) || (recs && available.segments);
    let need_als = wants(ViewName::Als) || (recs && available.als);
    let need_similar = wants(ViewName::Similar) || recs;
    let sequence_views = [
        ViewName::Transitions,
        ViewName::Next,
        ViewName::Paths,
        ViewName::Funnel,
    ];
    let need_sequences = sequence_views.iter().any(|view| wants(*view)) || recs;
    let need_features = wants(ViewName::Features) || wants(ViewName::Propensity) || need_segments;
    let need_affinity = wants(ViewName::Affinity) || need_features;
    let need_scores = wants(ViewName::Scores) || need_als || need_similar || need_affinity || recs;
    let need_sessions = wants(ViewName::Sessions) || need_features;

    // The window's events per (user, client session), reduced once for `sessions` and the
    // sequences.
    let by_session = (need_sessions || need_sequences).then(|| {
        let wanted = by_session::Wanted {
            sessions: need_sessions,
            facts: need_sequences,
        };
        by_session::by_session(
            sessions::window_events(events.clone(), params),
            params,
            wanted,
        )
    });
    let sessions = by_session
        .as_ref()
        .filter(|_| need_sessions)
        .map(|outputs| outputs.sessions());
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
    let als = match (&scores, need_als) {
        (Some(scores), true) => Some(als::als(
            scores.clone(),
            als_models,
            params.recs.als_candidates,
        )),
        _ => None,
    };
    if let Some(als) = als.as_ref().filter(|_| wants(ViewName::Als)) {
        outputs.push(
            als.clone()
                .map(|(user, candidates)| render::als_row(&user, &candidates)),
        );
    }
    let top_items = scores
        .as_ref()
        .filter(|_| need_similar)
        .map(|scores| similar::top_items(scores.clone(), params.similar.recent_items));
    let similar = top_items
        .as_ref()
        .map(|top| similar::similar(top.clone(), &params.similar));
    if let Some(similar) = similar.as_ref().filter(|_| wants(ViewName::Similar)) {
        outputs.push(
            similar
                .clone()
                .map(|(item, neighbors)| render::similar_row(&item, &neighbors)),
        );
    }
    let affinity = scores
        .clone()
        .filter(|_| need_affinity)
        .map(|scores| affinity::affinity(scores, catalog.clone()));
    if let Some(affinity) = affinity.as_ref().filter(|_| wants(ViewName::Affinity)) {
        outputs.push(
            affinity
                .clone()
                .map(|((user, category), score)| render::affinity_row(&user, &category, score)),
        );
    }
    let features = match (need_features, sessions, affinity) {
        (true, Some(sessions), Some(affinity)) => {
            let categories = affinity.map(|((user, category), _)| (user, category));
            Some(features::features(
                events.clone(),
                sessions,
                categories,
                &params.windows,
            ))
        }
        _ => None,
    };
    let recency_days = &params.windows.recency_days;
    if let Some(features) = features.as_ref().filter(|_| wants(ViewName::Features)) {
        let layout = render::FeaturesLayout::new(recency_days);
        outputs.push(
            features
                .clone()
                .map(move |(user, sums)| render::features_row(&user, &sums, &layout)),
        );
    }
    let segments = features.as_ref().filter(|_| need_segments).map(|features| {
        segments::segments(
            features.clone(),
            segment_models,
            &params.segments,
            recency_days,
        )
    });
    if let Some(segments) = segments.as_ref().filter(|_| wants(ViewName::Segments)) {
        outputs.push(
            segments
                .clone()
                .map(|(user, segment)| render::segment_row(&user, &segment)),
        );
    }
    if let (Some(features), Some(model)) = (
        features.as_ref().filter(|_| wants(ViewName::Propensity)),
        params.propensity.as_ref(),
    ) {
        outputs.push(
            propensity::propensity(features.clone(), model.clone(), recency_days)
                .map(|(user, scores)| render::propensity_row(&user, &scores)),
        );
    }
    let sequences = by_session
        .filter(|_| need_sequences)
        .map(|outputs| sequences::sequences(outputs.facts(), params));
    if let Some(built) = &sequences {
        if wants(ViewName::Transitions) {
            outputs.push(
                built
                    .transitions
                    .clone()
                    .map(|(transition, (count, p))| render::transition_row(&transition, count, p)),
            );
        }
        if wants(ViewName::Next) {
            outputs.push(
                built
                    .next
                    .clone()
                    .map(|((kind, from), next)| render::next_row(kind, &from, &next)),
            );
        }
        if wants(ViewName::Paths) {
            outputs.push(
                built
                    .paths
                    .clone()
                    .map(|(path, count)| render::path_row(&path, count)),
            );
        }
        if wants(ViewName::Funnel) {
            outputs.push(built.funnel.clone().map(|row| render::funnel_row(&row)));
        }
    }
    if let (true, Some(scores), Some(top_items), Some(similar), Some(sequences)) =
        (recs, &scores, top_items, similar, sequences)
    {
        let sources = recs::BlendSources {
            events: events.clone(),
            catalog,
            scores: scores.clone(),
            top_items,
            similar,
            next: sequences.next,
            als,
            segments: segments.map(|segments| segments.map(|(user, segment)| (user, segment.name))),
        };
        let strategies = recs::Strategies::new(params);
        outputs.push(
            recs::recs(sources, params)
                .map(move |(user, list)| render::recs_row(&user, strategies.of(&user).0, &list)),
        );
    }
    if wants(ViewName::Experiments) && !params.experiments.is_empty() {
        let experiments = params.experiments.clone();
        outputs.push(
            experiments::experiments(events.clone(), &params.experiments).flat_map(
                move |(index, sums)| render::experiment_rows(&experiments[index as usize], &sums),
            ),
        );
    }
    let scope = events.scope();
    Built {
        rows: differential_dataflow::collection::concatenate(scope, outputs),
        features,
        scores,
    }
}
