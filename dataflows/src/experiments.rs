//! The `experiments` view (seed 4a): per experiment and variant, the exposed users, their
//! impressions, clicks, add-to-carts, conversions, dwell and revenue attributed to the
//! recommendations they were shown, with the lift over the control and a sample-ratio check.
//!
//! - Exposure: an `impression` event shows its `items` (and its `item`) to its user.
//! - Attribution: an add-to-cart or purchase of an item, or any event with dwell on it,
//!   counts for the user's variant when an impression showed them that item at most
//!   `attribution_ms` before (or at the same time). A click counts only as a click-through:
//!   it carries the `rec` id of such an impression (clicks on the item reached some other
//!   way are not the list's). One action counts once, however many impressions showed the
//!   item.
//! - Users: users with at least one impression; conversions: those with an attributed
//!   purchase.
//!
//! Three steps, each touching only what changed: a reduce per (attribution window, user,
//! item) attributes actions to exposures; a reduce per (experiment, user) totals the user;
//! and the user's totals (and their squares, which the delta-method variance needs) are
//! added into per-variant sums as a difference type, so a user's change costs O(1) there.
//! The statistics are derived from those integer sums when rows are rendered
//! ([`crate::significance`]).

use crate::Time;
use crate::assignment::{bucket, ranges, shares, variant_of};
use crate::model::{Cents, Event, EventKind, ItemId, Millis, UserId};
use crate::name::Name;
use differential_dataflow::VecCollection;
use differential_dataflow::difference::{Abelian, IsZero, Monoid, Multiply, Semigroup};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

/// One `[[experiments]]` entry.
#[derive(Clone, Debug, PartialEq)]
pub struct Experiment {
    pub name: Name,
    pub salt: Name,
    /// An action counts for an impression shown at most this long before it.
    pub attribution_ms: Millis,
    /// The first variant is the control.
    pub variants: Vec<Variant>,
    /// Each variant's share of users and range of the unit interval ([`ranges`]).
    shares: Vec<f64>,
    ranges: Vec<(f64, f64)>,
}

/// One variant of an experiment.
#[derive(Clone, Debug, PartialEq)]
pub struct Variant {
    pub name: Name,
    /// Traffic weight (positive; any scale).
    pub weight: f64,
    /// The `recs` blend weights (thousandths, [`crate::recs::Source::ALL`] order) this
    /// variant's users get; `None`: the `[recs]` weights.
    pub recs_weights: Option<[i64; 5]>,
}

impl Experiment {
    /// An experiment; the caller validates names, weights (positive) and the variant count.
    pub fn new(
        name: &str,
        salt: &str,
        attribution_ms: Millis,
        variants: Vec<Variant>,
    ) -> Experiment {
        let weights: Vec<f64> = variants.iter().map(|variant| variant.weight).collect();
        let shares = shares(&weights);
        Experiment {
            name: Name::new(name),
            salt: Name::new(salt),
            attribution_ms,
            ranges: ranges(&shares),
            shares,
            variants,
        }
    }

    /// The index of the user's variant.
    pub fn assign(&self, user: &UserId) -> usize {
        variant_of(&self.ranges, bucket(&self.salt, user.as_str()))
    }

    /// Each variant's configured share of users.
    pub fn shares(&self) -> &[f64] {
        &self.shares
    }
}

/// What an event is to attribution, ordered so that an exposure at the same time as an
/// action precedes it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum Touch {
    /// An impression showed the item, from the list with this `rec` id.
    Exposure(Option<Name>),
    Action(Action),
}

/// An event on an item that counts once an exposure explains it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct Action {
    kind: EventKind,
    value: Cents,
    dwell_ms: Option<u64>,
    /// The list a click came from: a click counts only as a click-through.
    rec: Option<Name>,
}

impl Action {
    fn of(event: &Event) -> Option<Action> {
        let counted = matches!(
            event.kind,
            EventKind::Click | EventKind::AddToCart | EventKind::Purchase
        );
        (event.kind != EventKind::Impression && (counted || event.dwell_ms.is_some())).then(|| {
            Action {
                kind: event.kind,
                value: event.value.unwrap_or_default(),
                dwell_ms: event.dwell_ms,
                rec: event.rec.clone().filter(|_| event.kind == EventKind::Click),
            }
        })
    }
}

/// The attributed actions of one user on one item, or of one user in total.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Attributed {
    pub clicks: i128,
    pub add_to_carts: i128,
    pub purchases: i128,
    pub revenue: i128,
    pub dwell_sum: i128,
    pub dwell_events: i128,
}

impl Attributed {
    fn add(&mut self, action: &Action, times: i128) {
        match action.kind {
            EventKind::Click => self.clicks += times,
            EventKind::AddToCart => self.add_to_carts += times,
            EventKind::Purchase => {
                self.purchases += times;
                self.revenue += i128::from(action.value.0) * times;
            }
            _ => {}
        }
        if let Some(dwell) = action.dwell_ms {
            self.dwell_sum += i128::from(dwell) * times;
            self.dwell_events += times;
        }
    }

    fn plus(&mut self, other: &Attributed, times: i128) {
        self.clicks += other.clicks * times;
        self.add_to_carts += other.add_to_carts * times;
        self.purchases += other.purchases * times;
        self.revenue += other.revenue * times;
        self.dwell_sum += other.dwell_sum * times;
        self.dwell_events += other.dwell_events * times;
    }
}

/// One exposed user's totals in an experiment.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
struct UserTotals {
    impressions: i128,
    attributed: Attributed,
}

/// Sums over a variant's exposed users: the difference type that per-variant totals
/// accumulate in, so adding or changing a user is one update, not a pass over all users.
/// 128 bits, so no input (a dwell or an order value near the 64-bit limit) can overflow
/// them.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct VariantSums {
    pub users: i128,
    pub impressions: i128,
    pub clicks: i128,
    pub add_to_carts: i128,
    pub conversions: i128,
    pub revenue: i128,
    pub dwell_sum: i128,
    pub dwell_events: i128,
    pub impressions_sq: i128,
    pub clicks_sq: i128,
    pub clicks_impressions: i128,
}

impl VariantSums {
    fn of_user(user: &UserTotals) -> VariantSums {
        let (impressions, a) = (user.impressions, &user.attributed);
        VariantSums {
            users: 1,
            impressions,
            clicks: a.clicks,
            add_to_carts: a.add_to_carts,
            conversions: i128::from(a.purchases > 0),
            revenue: a.revenue,
            dwell_sum: a.dwell_sum,
            dwell_events: a.dwell_events,
            impressions_sq: impressions * impressions,
            clicks_sq: a.clicks * a.clicks,
            clicks_impressions: a.clicks * impressions,
        }
    }

    fn fields(&self) -> [i128; 11] {
        [
            self.users,
            self.impressions,
            self.clicks,
            self.add_to_carts,
            self.conversions,
            self.revenue,
            self.dwell_sum,
            self.dwell_events,
            self.impressions_sq,
            self.clicks_sq,
            self.clicks_impressions,
        ]
    }

    fn fields_mut(&mut self) -> [&mut i128; 11] {
        [
            &mut self.users,
            &mut self.impressions,
            &mut self.clicks,
            &mut self.add_to_carts,
            &mut self.conversions,
            &mut self.revenue,
            &mut self.dwell_sum,
            &mut self.dwell_events,
            &mut self.impressions_sq,
            &mut self.clicks_sq,
            &mut self.clicks_impressions,
        ]
    }
}

impl IsZero for VariantSums {
    fn is_zero(&self) -> bool {
        self.fields().iter().all(|field| *field == 0)
    }
}

impl Semigroup for VariantSums {
    fn plus_equals(&mut self, rhs: &Self) {
        for (field, add) in self.fields_mut().into_iter().zip(rhs.fields()) {
            *field += add;
        }
    }
}

impl Monoid for VariantSums {
    fn zero() -> Self {
        VariantSums::default()
    }
}

impl Abelian for VariantSums {
    fn negate(&mut self) {
        for field in self.fields_mut() {
            *field = -*field;
        }
    }
}

impl Multiply<isize> for VariantSums {
    type Output = VariantSums;
    fn multiply(mut self, times: &isize) -> VariantSums {
        for field in self.fields_mut() {
            *field *= *times as i128;
        }
        self
    }
}

/// One experiment's state: each configured variant's sums, in config order.
pub type ExperimentSums = Vec<VariantSums>;

/// What the per-user reduce reads.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
enum UserInput {
    Impression,
    Item(Attributed),
}

/// Maintains the `experiments` view: per experiment (by index in `experiments`), the sums
/// of every variant, once some user of it is exposed.
pub fn experiments<'s>(
    events: VecCollection<'s, Time, Event>,
    experiments: &[Experiment],
) -> VecCollection<'s, Time, (u32, ExperimentSums)> {
    // Experiments with the same attribution window share one attribution.
    let windows: Vec<Millis> = experiments
        .iter()
        .map(|experiment| experiment.attribution_ms)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    // The experiments each window serves, by window index.
    let experiments_of_window: Vec<Vec<u32>> = windows
        .iter()
        .map(|window| {
            (0..experiments.len() as u32)
                .filter(|e| experiments[*e as usize].attribution_ms == *window)
                .collect()
        })
        .collect();

    let window_count = windows.len() as u32;
    let touches = events.clone().flat_map(move |event| {
        let user = event.user.clone();
        let ts = event.ts;
        let touched: Vec<(ItemId, Touch)> = if event.kind == EventKind::Impression {
            let shown: BTreeSet<ItemId> = event.items.iter().chain(&event.item).cloned().collect();
            let rec = event.rec.clone();
            shown
                .into_iter()
                .map(|item| (item, Touch::Exposure(rec.clone())))
                .collect()
        } else {
            match (&event.item, Action::of(&event)) {
                (Some(item), Some(action)) => vec![(item.clone(), Touch::Action(action))],
                _ => Vec::new(),
            }
        };
        (0..window_count).flat_map(move |window| {
            let user = user.clone();
            touched
                .clone()
                .into_iter()
                .map(move |(item, touch)| ((window, user.clone(), item), (ts, touch)))
        })
    });
    let attributed = touches.reduce_named("Attribute", move |(window, _, _), input, output| {
        let span = windows[*window as usize];
        let within = |shown: Option<Millis>, ts: Millis| shown.is_some_and(|at| ts - at <= span);
        // Latest exposure so far, overall and per list.
        let mut last_exposure: Option<Millis> = None;
        let mut last_by_list: BTreeMap<&Name, Millis> = BTreeMap::new();
        let mut total = Attributed::default();
        for ((ts, touch), times) in input {
            match touch {
                Touch::Exposure(rec) => {
                    last_exposure = Some(*ts);
                    if let Some(rec) = rec {
                        last_by_list.insert(rec, *ts);
                    }
                }
                Touch::Action(action) => {
                    let attributed = match (action.kind, &action.rec) {
                        (EventKind::Click, None) => false,
                        (EventKind::Click, Some(rec)) => {
                            within(last_by_list.get(rec).copied(), *ts)
                        }
                        _ => within(last_exposure, *ts),
                    };
                    if attributed {
                        total.add(action, *times as i128);
                    }
                }
            }
        }
        if total != Attributed::default() {
            output.push((total, 1));
        }
    });

    // Per (experiment, user): one record per impression (consolidated into a count) and one
    // per attributed item.
    let user_items = attributed.flat_map(move |((window, user, _item), total)| {
        experiments_of_window[window as usize]
            .iter()
            .map(|experiment| ((*experiment, user.clone()), UserInput::Item(total)))
            .collect::<Vec<_>>()
    });
    let experiment_count = experiments.len() as u32;
    let impressions = events
        .filter(|event| event.kind == EventKind::Impression)
        .flat_map(move |event| {
            let user = event.user;
            (0..experiment_count)
                .map(move |experiment| ((experiment, user.clone()), UserInput::Impression))
        });
    let users =
        impressions
            .concat(user_items)
            .reduce_named("ExperimentUser", |_key, input, output| {
                let mut totals = UserTotals {
                    impressions: 0,
                    attributed: Attributed::default(),
                };
                for (entry, times) in input {
                    match entry {
                        UserInput::Impression => totals.impressions += *times as i128,
                        UserInput::Item(item) => totals.attributed.plus(item, *times as i128),
                    }
                }
                if totals.impressions > 0 {
                    output.push((totals, 1));
                }
            });

    let assignments = experiments.to_vec();
    let variant_count: Vec<usize> = experiments.iter().map(|e| e.variants.len()).collect();
    users
        .explode(move |((experiment, user), totals)| {
            let variant = assignments[experiment as usize].assign(&user) as u32;
            Some(((experiment, variant), VariantSums::of_user(&totals)))
        })
        .count()
        .map(|((experiment, variant), sums)| (experiment, (variant, sums)))
        .reduce_named("ExperimentSums", move |experiment, input, output| {
            let mut variants = vec![VariantSums::default(); variant_count[*experiment as usize]];
            for ((variant, sums), _) in input {
                variants[*variant as usize] = *sums;
            }
            output.push((variants, 1));
        })
}
