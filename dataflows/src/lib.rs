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
pub mod gather;
pub mod in_place;
pub mod keyed_shared;
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
pub mod state_log;
pub mod top_k;
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
    // Every wanted view's changes, rendered, into one collection by one operator.
    let mut rendered = gather::Gather::new(events.scope(), "Render");
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
    // sequences; the reduce keeps the window itself.
    let by_session = (need_sessions || need_sequences).then(|| {
        let wanted = by_session::Wanted {
            sessions: need_sessions,
            facts: need_sequences,
        };
        by_session::by_session(
            sessions::session_events(events.clone(), params),
            params,
            wanted,
        )
    });
    let sessions = by_session
        .as_ref()
        .filter(|_| need_sessions)
        .map(|outputs| outputs.sessions());
    if let Some(sessions) = sessions.as_ref().filter(|_| wants(ViewName::Sessions)) {
        rendered = rendered.flat_map(sessions.clone(), |(key, aggregate)| {
            Some(render::session_row(&key, &aggregate))
        });
    }
    let scores = need_scores.then(|| scores::scores(events.clone(), params));
    if let Some(scores) = scores.as_ref().filter(|_| wants(ViewName::Scores)) {
        rendered = rendered.flat_map(scores.clone(), |((user, item), score)| {
            Some(render::score_row(&user, &item, score))
        });
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
        rendered = rendered.flat_map(als.clone(), |(user, candidates)| {
            Some(render::als_row(&user, &candidates))
        });
    }
    let top_items = scores
        .as_ref()
        .filter(|_| need_similar)
        .map(|scores| similar::top_items(scores.clone(), params.similar.recent_items));
    let similar = top_items
        .as_ref()
        .map(|top| similar::similar(top.clone(), &params.similar));
    if let Some(similar) = similar.as_ref().filter(|_| wants(ViewName::Similar)) {
        rendered = rendered.flat_map(similar.clone(), |(item, neighbors)| {
            Some(render::similar_row(&item, &neighbors))
        });
    }
    let affinity = scores
        .clone()
        .filter(|_| need_affinity)
        .map(|scores| affinity::affinity(scores, catalog.clone()));
    if let Some(affinity) = affinity.as_ref().filter(|_| wants(ViewName::Affinity)) {
        rendered = rendered.flat_map(affinity.clone(), |((user, category), score)| {
            Some(render::affinity_row(&user, &category, score))
        });
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
        rendered = rendered.flat_map(features.clone(), move |(user, sums)| {
            Some(render::features_row(&user, &sums, &layout))
        });
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
        rendered = rendered.flat_map(segments.clone(), |(user, segment)| {
            Some(render::segment_row(&user, &segment))
        });
    }
    if let (Some(features), Some(model)) = (
        features.as_ref().filter(|_| wants(ViewName::Propensity)),
        params.propensity.as_ref(),
    ) {
        rendered = rendered.flat_map(
            propensity::propensity(features.clone(), model.clone(), recency_days),
            |(user, scores)| Some(render::propensity_row(&user, &scores)),
        );
    }
    let sequences = by_session
        .filter(|_| need_sequences)
        .map(|outputs| sequences::sequences(outputs.facts(), params));
    if let Some(built) = &sequences {
        if wants(ViewName::Transitions) {
            rendered = rendered.flat_map(built.transitions.clone(), |(transition, (count, p))| {
                Some(render::transition_row(&transition, count, p))
            });
        }
        if wants(ViewName::Next) {
            rendered = rendered.flat_map(built.next.clone(), |((kind, from), next)| {
                Some(render::next_row(kind, &from, &next))
            });
        }
        if wants(ViewName::Paths) {
            rendered = rendered.flat_map(built.paths.clone(), |(path, count)| {
                Some(render::path_row(&path, count))
            });
        }
        if wants(ViewName::Funnel) {
            rendered =
                rendered.flat_map(built.funnel.clone(), |row| Some(render::funnel_row(&row)));
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
        rendered = rendered.flat_map(recs::recs(sources, params), move |(user, list)| {
            Some(render::recs_row(&user, strategies.of(&user).0, &list))
        });
    }
    if wants(ViewName::Experiments) && !params.experiments.is_empty() {
        let experiments = params.experiments.clone();
        rendered = rendered.flat_map(
            experiments::experiments(events.clone(), &params.experiments),
            move |(index, sums)| render::experiment_rows(&experiments[index as usize], &sums),
        );
    }
    Built {
        rows: rendered.finish(),
        features,
        scores,
    }
}
