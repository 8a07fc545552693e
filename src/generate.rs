//! `intentflow generate`: a deterministic, realistic clickstream generator.
//!
//! The model, in three steps:
//!
//! 1. **Catalog.** Products (`p1`..) and content items (`a1`.., articles and guides) spread over
//!    named categories, with Zipf-like popularity, prices and a premium flag.
//! 2. **Users.** Every user is drawn from an archetype ([`Archetype`]: buyer, browser, researcher,
//!    disengaged) with 1–3 preferred categories, a main device and an activity level; about 1% are
//!    heavy users producing about 10% of the events, and about 30% never send a session id.
//! 3. **Visits.** The exact event budget is split over users (by activity), each user's share over
//!    visits spread across the days, and each visit's length is fixed up front. Visits are
//!    simulated page by page (a funnel state machine parameterised by the archetype's
//!    [`Profile`]) when their start time comes up, and merged into one event-time-ordered stream.
//!    A small share of events is held back a few seconds to two minutes (network reordering) and a
//!    small share carries `ts` as an RFC 3339 string.
//!
//! Everything is drawn from one `ChaCha8Rng` seeded with the spec's seed, and no platform maths
//! (`ln`, `exp`, `powf`, …: libm results differ by an ulp between platforms) is used, so the same
//! spec gives byte-identical output everywhere.

use std::borrow::Cow;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::fmt;
use std::io::{self, Write};

use rand::{RngExt, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Serialize, Serializer};

/// What to generate. See DESIGN.md §6 (`intentflow generate`).
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateSpec {
    pub users: usize,
    pub items: usize,
    pub events: usize,
    pub seed: u64,
    pub days: u32,
    pub start_ms: u64,
    /// Simulate this A/B experiment: listing pages show recommendations.
    pub experiment: Option<ExperimentSim>,
}

/// An experiment to simulate (`generate --config FILE --uplift VARIANT=FRACTION`): every
/// home, search and category page shows a recommendation list (an `impression` event with
/// `items`, `rec` and the user's `variant`), and the user clicks one of its items with a
/// chance of [`BASE_REC_CTR`] times a per-user factor (0.25–1.75: some users click
/// recommendations far more than others, so clicks cluster by user) times `1 + uplift` of
/// their variant. A click leads to the item's page, so add-to-carts and purchases follow
/// through the usual funnel: conversions rise with clicks, less sharply.
#[derive(Clone, Debug, PartialEq)]
pub struct ExperimentSim {
    pub experiment: intentflow_dataflows::experiments::Experiment,
    /// The true relative CTR uplift of each variant (config order); 0 for none.
    pub uplift: Vec<f64>,
}

/// Chance that an average user clicks an item of a recommendation list they are shown.
pub const BASE_REC_CTR: f64 = 0.1;
/// Items in a simulated recommendation list.
const REC_SLOTS: usize = 4;

impl Default for GenerateSpec {
    fn default() -> Self {
        GenerateSpec {
            users: 1000,
            items: 500,
            events: 50_000,
            seed: 42,
            days: 14,
            start_ms: 1_767_225_600_000, // 2026-01-01T00:00:00Z
            experiment: None,
        }
    }
}

/// Writes events (JSON lines, DESIGN.md §2 schema) to `events`, the catalog (JSON lines,
/// {"item","category","kind","price","premium"}) to `catalog` if given, and the true archetype of every
/// user ({"user","archetype"} lines) to `truth` if given. Returns the number of events written.
pub fn generate(
    spec: &GenerateSpec,
    events: &mut dyn Write,
    catalog: Option<&mut dyn Write>,
    truth: Option<&mut dyn Write>,
) -> io::Result<u64> {
    validate(spec)?;
    let mut rng = ChaCha8Rng::seed_from_u64(spec.seed);
    let cat = Catalog::build(spec.items, &mut rng);
    let users = build_users(spec.users, &cat, &mut rng);
    if let Some(out) = catalog {
        cat.write(out)?;
    }
    if let Some(out) = truth {
        write_truth(&users, out)?;
    }
    let plan = plan_visits(spec, &users, &mut rng);
    let recs = spec
        .experiment
        .as_ref()
        .map(|sim| RecSim::new(sim, users.len()));
    Stream::new(&cat, &users, &mut rng, events, recs.as_ref()).run(&plan)
}

fn validate(spec: &GenerateSpec) -> io::Result<()> {
    let invalid = |msg: &str| Err(io::Error::new(io::ErrorKind::InvalidInput, msg.to_string()));
    if spec.days == 0 {
        return invalid("--days must be at least 1");
    }
    if spec.events > 0 && spec.users == 0 {
        return invalid("--users must be at least 1");
    }
    if spec.events > 0 && spec.items == 0 {
        return invalid("--items must be at least 1");
    }
    if spec.users > u32::MAX as usize || spec.items > u32::MAX as usize {
        return invalid("--users and --items must fit in 32 bits");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Archetypes
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Archetype {
    Buyer,
    Browser,
    Researcher,
    Disengaged,
}

const ARCHETYPES: [Archetype; 4] = [
    Archetype::Buyer,
    Archetype::Browser,
    Archetype::Researcher,
    Archetype::Disengaged,
];

impl Archetype {
    fn name(self) -> &'static str {
        self.profile().name
    }

    fn profile(self) -> &'static Profile {
        match self {
            Archetype::Buyer => &BUYER,
            Archetype::Browser => &BROWSER,
            Archetype::Researcher => &RESEARCHER,
            Archetype::Disengaged => &DISENGAGED,
        }
    }
}

/// How many events a visit has.
enum VisitLen {
    /// Log-normal around a median.
    LogNormal { median: f64, sigma: f64 },
    /// Bounce-dominated: P(1), P(2), P(3), P(4) events.
    Short([f64; 4]),
}

impl VisitLen {
    fn mean(&self) -> f64 {
        match self {
            VisitLen::LogNormal { median, sigma } => median * det_exp(sigma * sigma / 2.0),
            VisitLen::Short(p) => p.iter().enumerate().map(|(i, p)| (i + 1) as f64 * p).sum(),
        }
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> f64 {
        match self {
            VisitLen::LogNormal { median, sigma } => log_normal(rng, *median, *sigma),
            VisitLen::Short(p) => (pick_weighted(rng, p) + 1) as f64,
        }
    }
}

/// Behaviour parameters of an archetype. Probabilities are per page unless noted.
struct Profile {
    name: &'static str,
    /// Share of users with this archetype.
    share: f64,
    /// Relative event budget of a user.
    activity: f64,
    visit_len: VisitLen,
    /// Upper bound on a visit's duration; visits of a user are at least `MIN_VISIT_GAP_MS` apart.
    max_visit_ms: u64,
    /// Median dwell (ms) on listing (home/search/category), product, article, cart/checkout pages.
    dwell_listing: f64,
    dwell_product: f64,
    dwell_article: f64,
    dwell_funnel: f64,
    dwell_sigma: f64,
    /// Hard cap on dwell; keeps disengaged users' pages under 10 s.
    dwell_cap_ms: u64,
    /// Range of the maximum scroll depth reached on a page, in percent.
    scroll_pct: (u32, u32),
    /// Mean number of scroll events on a page (doubled on articles).
    scroll_events: f64,
    /// Mean number of extra clicks (filters, gallery, tiles) on a page.
    extra_clicks: f64,
    /// Chance that navigating to another page is reported as a click.
    nav_click: f64,
    /// Landing page weights: home, search, category, product, article.
    landing: [f64; 5],
    /// From a listing: chance to open an article/guide, and a product.
    to_content: f64,
    to_product: f64,
    /// From an article: chance to open a product of its category.
    article_to_product: f64,
    /// Funnel: product → add_to_cart, then → cart page, cart → checkout, checkout → purchase.
    add_to_cart: f64,
    go_to_cart: f64,
    checkout: f64,
    purchase: f64,
    wishlist: f64,
    /// Article engagement: bookmark (share and comment are rarer fractions of it).
    engage: f64,
    video: f64,
    /// Chance that a visit ends with an explicit `exit` event.
    exit: f64,
    /// Main device weights: mobile, desktop, tablet.
    devices: [f64; 3],
}

/// Goes deep in the funnel: adds to cart and buys often, long dwell on products.
const BUYER: Profile = Profile {
    name: "buyer",
    share: 0.22,
    activity: 1.5,
    visit_len: VisitLen::LogNormal {
        median: 16.0,
        sigma: 0.4,
    },
    max_visit_ms: 45 * MINUTE_MS,
    dwell_listing: 12_000.0,
    dwell_product: 45_000.0,
    dwell_article: 30_000.0,
    dwell_funnel: 20_000.0,
    dwell_sigma: 0.5,
    dwell_cap_ms: 15 * MINUTE_MS,
    scroll_pct: (25, 65),
    scroll_events: 0.4,
    extra_clicks: 0.25,
    nav_click: 0.5,
    landing: [0.35, 0.20, 0.10, 0.32, 0.03],
    to_content: 0.04,
    to_product: 0.8,
    article_to_product: 0.6,
    add_to_cart: 0.5,
    go_to_cart: 0.85,
    checkout: 0.7,
    purchase: 0.8,
    wishlist: 0.08,
    engage: 0.05,
    video: 0.06,
    exit: 0.25,
    devices: [0.40, 0.50, 0.10],
};

/// Many page views and clicks, short dwell, shallow scroll, rarely adds to cart.
const BROWSER: Profile = Profile {
    name: "browser",
    share: 0.35,
    activity: 1.3,
    visit_len: VisitLen::LogNormal {
        median: 16.0,
        sigma: 0.45,
    },
    max_visit_ms: 30 * MINUTE_MS,
    dwell_listing: 5_000.0,
    dwell_product: 8_000.0,
    dwell_article: 10_000.0,
    dwell_funnel: 6_000.0,
    dwell_sigma: 0.5,
    dwell_cap_ms: 10 * MINUTE_MS,
    scroll_pct: (5, 35),
    scroll_events: 0.3,
    extra_clicks: 0.9,
    nav_click: 0.9,
    landing: [0.50, 0.15, 0.20, 0.12, 0.03],
    to_content: 0.06,
    to_product: 0.55,
    article_to_product: 0.4,
    add_to_cart: 0.03,
    go_to_cart: 0.4,
    checkout: 0.25,
    purchase: 0.4,
    wishlist: 0.02,
    engage: 0.01,
    video: 0.03,
    exit: 0.3,
    devices: [0.65, 0.25, 0.10],
};

/// Reads articles and guides: long dwell, deep scroll, bookmarks/shares/comments, videos,
/// occasionally buys.
const RESEARCHER: Profile = Profile {
    name: "researcher",
    share: 0.18,
    activity: 1.0,
    visit_len: VisitLen::LogNormal {
        median: 12.0,
        sigma: 0.4,
    },
    max_visit_ms: 75 * MINUTE_MS,
    dwell_listing: 15_000.0,
    dwell_product: 70_000.0,
    dwell_article: 160_000.0,
    dwell_funnel: 25_000.0,
    dwell_sigma: 0.45,
    dwell_cap_ms: 20 * MINUTE_MS,
    scroll_pct: (70, 100),
    scroll_events: 0.9,
    extra_clicks: 0.2,
    nav_click: 0.5,
    landing: [0.20, 0.15, 0.05, 0.10, 0.50],
    to_content: 0.65,
    to_product: 0.25,
    article_to_product: 0.3,
    add_to_cart: 0.2,
    go_to_cart: 0.7,
    checkout: 0.6,
    purchase: 0.75,
    wishlist: 0.06,
    engage: 0.3,
    video: 0.3,
    exit: 0.2,
    devices: [0.35, 0.55, 0.10],
};

/// Few, short visits: mostly a single page under 10 s, often followed by `exit`.
const DISENGAGED: Profile = Profile {
    name: "disengaged",
    share: 0.25,
    activity: 0.12,
    visit_len: VisitLen::Short([0.35, 0.45, 0.15, 0.05]),
    max_visit_ms: 3 * MINUTE_MS,
    dwell_listing: 4_000.0,
    dwell_product: 4_500.0,
    dwell_article: 5_000.0,
    dwell_funnel: 4_000.0,
    dwell_sigma: 0.4,
    dwell_cap_ms: 9_500,
    scroll_pct: (0, 15),
    scroll_events: 0.05,
    extra_clicks: 0.1,
    nav_click: 0.5,
    landing: [0.40, 0.05, 0.10, 0.30, 0.15],
    to_content: 0.2,
    to_product: 0.4,
    article_to_product: 0.2,
    add_to_cart: 0.005,
    go_to_cart: 0.3,
    checkout: 0.2,
    purchase: 0.3,
    wishlist: 0.005,
    engage: 0.005,
    video: 0.01,
    exit: 0.85,
    devices: [0.70, 0.20, 0.10],
};

// ---------------------------------------------------------------------------------------------
// Catalog
// ---------------------------------------------------------------------------------------------

/// Category names with the median product price in dollars.
const CATEGORIES: [(&str, f64); 16] = [
    ("shoes", 80.0),
    ("outdoor", 120.0),
    ("kitchen", 40.0),
    ("electronics", 250.0),
    ("books", 15.0),
    ("beauty", 25.0),
    ("toys", 30.0),
    ("garden", 45.0),
    ("sports", 60.0),
    ("fashion", 50.0),
    ("furniture", 180.0),
    ("grocery", 8.0),
    ("health", 20.0),
    ("pets", 25.0),
    ("music", 20.0),
    ("automotive", 90.0),
];

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ItemKind {
    Product,
    Offer,
    Article,
    Guide,
}

impl ItemKind {
    fn name(self) -> &'static str {
        match self {
            ItemKind::Product => "product",
            ItemKind::Offer => "offer",
            ItemKind::Article => "article",
            ItemKind::Guide => "guide",
        }
    }
}

struct Item {
    category: u16,
    kind: ItemKind,
    price_cents: u32,
    premium: bool,
}

/// Items with popularity weights, sampled by inverse CDF.
#[derive(Default)]
struct Popularity {
    ids: Vec<u32>,
    cumulative: Vec<f64>,
}

impl Popularity {
    fn push(&mut self, id: u32, weight: f64) {
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        self.ids.push(id);
        self.cumulative.push(total + weight);
    }

    fn sample(&self, rng: &mut ChaCha8Rng) -> Option<u32> {
        let total = *self.cumulative.last()?;
        let x = uniform(rng) * total;
        let i = self.cumulative.partition_point(|&c| c <= x);
        Some(self.ids[i.min(self.ids.len() - 1)])
    }
}

/// Items `0..products` are products and offers (`p1`..), the rest content (`a1`..).
struct Catalog {
    products: u32,
    items: Vec<Item>,
    categories: Popularity,
    products_by_category: Vec<Popularity>,
    content_by_category: Vec<Popularity>,
    all_content: Popularity,
}

impl Catalog {
    fn build(items: usize, rng: &mut ChaCha8Rng) -> Catalog {
        // A fifth of the catalog is content; at least one product.
        let content = if items >= 5 { items / 5 } else { 0 };
        let products = items - content;
        let n_categories = products.div_ceil(4).clamp(1, CATEGORIES.len());

        // Category popularity is skewed but flatter than item popularity.
        let mut categories = Popularity::default();
        for c in 0..n_categories {
            categories.push(c as u32, 1.0 / (c as f64 + 2.0));
        }

        let mut cat = Catalog {
            products: products as u32,
            items: Vec::with_capacity(items),
            categories,
            products_by_category: (0..n_categories).map(|_| Popularity::default()).collect(),
            content_by_category: (0..n_categories).map(|_| Popularity::default()).collect(),
            all_content: Popularity::default(),
        };
        // Zipf popularity (weight 1/rank) over a random ranking of the items.
        let product_rank = permutation(products, rng);
        for (i, &rank) in product_rank.iter().enumerate() {
            // Round-robin first so that every category has at least one product.
            let category = if i < n_categories {
                i as u16
            } else {
                cat.sample_category(rng)
            };
            let item = product(category, rng);
            cat.products_by_category[category as usize].push(i as u32, 1.0 / (rank as f64 + 1.0));
            cat.items.push(item);
        }
        let content_rank = permutation(content, rng);
        for (i, &rank) in content_rank.iter().enumerate() {
            let category = cat.sample_category(rng);
            let kind = if chance(rng, 0.7) {
                ItemKind::Article
            } else {
                ItemKind::Guide
            };
            let id = (products + i) as u32;
            let weight = 1.0 / (rank as f64 + 1.0);
            cat.content_by_category[category as usize].push(id, weight);
            cat.all_content.push(id, weight);
            cat.items.push(Item {
                category,
                kind,
                price_cents: 0,
                premium: false,
            });
        }
        cat
    }

    fn sample_category(&self, rng: &mut ChaCha8Rng) -> u16 {
        self.categories.sample(rng).unwrap_or(0) as u16
    }

    fn has_content(&self) -> bool {
        !self.all_content.ids.is_empty()
    }

    fn product_in(&self, category: u16, rng: &mut ChaCha8Rng) -> u32 {
        // Every category has a product (round-robin in `build`).
        self.products_by_category[category as usize]
            .sample(rng)
            .unwrap_or(0)
    }

    /// Content of the category, or any content if the category has none.
    fn content_in(&self, category: u16, rng: &mut ChaCha8Rng) -> Option<u32> {
        self.content_by_category[category as usize]
            .sample(rng)
            .or_else(|| self.all_content.sample(rng))
    }

    fn id(&self, item: u32) -> ItemId {
        if item < self.products {
            ItemId('p', item + 1)
        } else {
            ItemId('a', item - self.products + 1)
        }
    }

    fn write(&self, out: &mut dyn Write) -> io::Result<()> {
        let mut buf = Vec::with_capacity(1 << 16);
        for (i, item) in self.items.iter().enumerate() {
            let line = CatalogLine {
                item: self.id(i as u32),
                category: CATEGORIES[item.category as usize].0,
                kind: item.kind.name(),
                price: cents_to_f64(item.price_cents),
                premium: item.premium,
            };
            write_line(&mut buf, &line)?;
            flush_if_full(&mut buf, out)?;
        }
        out.write_all(&buf)
    }
}

fn product(category: u16, rng: &mut ChaCha8Rng) -> Item {
    let kind = if chance(rng, 0.06) {
        ItemKind::Offer
    } else {
        ItemKind::Product
    };
    let premium = chance(rng, 0.15);
    let mut dollars = log_normal(rng, CATEGORIES[category as usize].1, 0.5);
    if premium {
        dollars *= 2.5;
    }
    if kind == ItemKind::Offer {
        dollars *= 0.7;
    }
    // Shelf prices: mostly x.99, some round.
    let whole = (dollars as u32).max(1);
    let price_cents = if chance(rng, 0.7) {
        whole * 100 - 1
    } else {
        whole * 100
    };
    Item {
        category,
        kind,
        price_cents,
        premium,
    }
}

// ---------------------------------------------------------------------------------------------
// Users
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Device {
    Mobile,
    Desktop,
    Tablet,
}

const DEVICES: [Device; 3] = [Device::Mobile, Device::Desktop, Device::Tablet];

impl Device {
    fn name(self) -> &'static str {
        match self {
            Device::Mobile => "mobile",
            Device::Desktop => "desktop",
            Device::Tablet => "tablet",
        }
    }
}

struct User {
    archetype: Archetype,
    /// 1–3 preferred categories the user mostly browses.
    prefs: [u16; 3],
    n_prefs: usize,
    device: Device,
    /// ~30% of clients never send a session id; the engine derives their sessions.
    sends_session: bool,
    /// Relative share of the event budget.
    activity: f64,
}

/// Share of users that are heavy, and the share of all events they produce.
const HEAVY_USER_SHARE: f64 = 0.01;
const HEAVY_EVENT_SHARE: f64 = 0.10;
/// Share of browsing that stays within the user's preferred categories.
const PREFERRED_CATEGORY_SHARE: f64 = 0.85;

fn build_users(n: usize, cat: &Catalog, rng: &mut ChaCha8Rng) -> Vec<User> {
    let mut archetypes = archetype_mix(n);
    shuffle(&mut archetypes, rng);
    let mut users: Vec<User> = archetypes
        .into_iter()
        .map(|archetype| new_user(archetype, cat, rng))
        .collect();
    make_heavy_users(&mut users, rng);
    users
}

/// Archetype of every user in exact proportions (before shuffling).
fn archetype_mix(n: usize) -> Vec<Archetype> {
    let shares: Vec<f64> = ARCHETYPES.iter().map(|a| a.profile().share).collect();
    let counts = apportion(n as u64, &shares);
    ARCHETYPES
        .iter()
        .zip(counts)
        .flat_map(|(&a, count)| std::iter::repeat_n(a, count as usize))
        .collect()
}

fn new_user(archetype: Archetype, cat: &Catalog, rng: &mut ChaCha8Rng) -> User {
    let profile = archetype.profile();
    let wanted = 1 + pick_weighted(rng, &[0.3, 0.45, 0.25]);
    let mut prefs = [0u16; 3];
    let mut n_prefs = 0;
    // Popular categories are preferred more often; give up on duplicates after a few tries.
    for _ in 0..wanted * 4 {
        let c = cat.sample_category(rng);
        if !prefs[..n_prefs].contains(&c) {
            prefs[n_prefs] = c;
            n_prefs += 1;
            if n_prefs == wanted {
                break;
            }
        }
    }
    User {
        archetype,
        prefs,
        n_prefs: n_prefs.max(1),
        device: DEVICES[pick_weighted(rng, &profile.devices)],
        sends_session: chance(rng, 0.7),
        activity: profile.activity * log_normal(rng, 1.0, 0.5),
    }
}

/// Picks ~1% of the engaged users and scales their activity so that they produce ~10% of events.
fn make_heavy_users(users: &mut [User], rng: &mut ChaCha8Rng) {
    let engaged: Vec<usize> = (0..users.len())
        .filter(|&u| users[u].archetype != Archetype::Disengaged)
        .collect();
    let n_heavy = ((users.len() as f64 * HEAVY_USER_SHARE).round() as usize).min(engaged.len());
    if n_heavy == 0 {
        return;
    }
    let mut heavy = vec![false; users.len()];
    let mut picked = 0;
    while picked < n_heavy {
        let u = engaged[rng.random_range(0..engaged.len() as u64) as usize];
        if !heavy[u] {
            heavy[u] = true;
            picked += 1;
        }
    }
    let (mut heavy_total, mut rest_total) = (0.0, 0.0);
    for (user, &h) in users.iter().zip(&heavy) {
        if h {
            heavy_total += user.activity;
        } else {
            rest_total += user.activity;
        }
    }
    let factor = HEAVY_EVENT_SHARE / (1.0 - HEAVY_EVENT_SHARE) * rest_total / heavy_total;
    for (user, &h) in users.iter_mut().zip(&heavy) {
        if h {
            user.activity *= factor.max(1.0);
        }
    }
}

impl User {
    fn preferred_category(&self, cat: &Catalog, rng: &mut ChaCha8Rng) -> u16 {
        if chance(rng, PREFERRED_CATEGORY_SHARE) {
            // The first preference is the strongest.
            let i = pick_weighted(rng, &[0.6, 0.25, 0.15][..self.n_prefs]);
            self.prefs[i]
        } else {
            cat.sample_category(rng)
        }
    }
}

fn write_truth(users: &[User], out: &mut dyn Write) -> io::Result<()> {
    let mut buf = Vec::with_capacity(1 << 16);
    for (i, user) in users.iter().enumerate() {
        let line = TruthLine {
            user: UserId(i as u32),
            archetype: user.archetype.name(),
        };
        write_line(&mut buf, &line)?;
        flush_if_full(&mut buf, out)?;
    }
    out.write_all(&buf)
}

// ---------------------------------------------------------------------------------------------
// Visit plan
// ---------------------------------------------------------------------------------------------

const SECOND_MS: u64 = 1_000;
const MINUTE_MS: u64 = 60 * SECOND_MS;
const DAY_MS: u64 = 86_400_000;
/// Visits of one user are at least this far apart (end to start): well above the engine's
/// 30-minute session gap.
const MIN_VISIT_GAP_MS: u64 = 60 * MINUTE_MS;

/// One visit of a user: when it starts and exactly how many events it has.
#[derive(Clone, Copy)]
struct PlannedVisit {
    start: u64,
    user: u32,
    /// 1-based visit number of the user; the session id is `s<user>-<number>`.
    number: u32,
    len: u32,
}

/// Splits the event budget over users and each user's share over visits across the days.
/// The visit lengths add up to exactly `spec.events`.
fn plan_visits(spec: &GenerateSpec, users: &[User], rng: &mut ChaCha8Rng) -> Vec<PlannedVisit> {
    let budgets = user_budgets(spec.events as u64, users);
    let mut plan = Vec::with_capacity(spec.events / 8 + users.len());
    for (u, (user, &budget)) in users.iter().zip(&budgets).enumerate() {
        if budget > 0 {
            plan_user_visits(spec, u as u32, user, budget, rng, &mut plan);
        }
    }
    plan.sort_by_key(|v| (v.start, v.user, v.number));
    plan
}

/// Every user gets at least one event (if there are enough), the rest goes by activity.
fn user_budgets(events: u64, users: &[User]) -> Vec<u64> {
    let activity: Vec<f64> = users.iter().map(|u| u.activity).collect();
    if events < users.len() as u64 {
        return apportion(events, &activity);
    }
    let mut budgets = apportion(events - users.len() as u64, &activity);
    for b in &mut budgets {
        *b += 1;
    }
    budgets
}

fn plan_user_visits(
    spec: &GenerateSpec,
    user: u32,
    profile_of: &User,
    budget: u64,
    rng: &mut ChaCha8Rng,
    plan: &mut Vec<PlannedVisit>,
) {
    let profile = profile_of.archetype.profile();
    let horizon = spec.days as u64 * DAY_MS;
    let visit_ms = profile.max_visit_ms.min(horizon / 2);
    // Visit starts lie in [0, span) so the last visit ends before the horizon.
    let span = horizon - visit_ms;
    let slot = visit_ms + MIN_VISIT_GAP_MS;
    let max_visits = span / slot + 1;
    let wanted = (budget as f64 / profile.visit_len.mean()).round() as u64;
    let visits = wanted.clamp(1, max_visits.min(budget));

    // Lengths: one event each, the rest in proportion to sampled visit lengths.
    let weights: Vec<f64> = (0..visits).map(|_| profile.visit_len.sample(rng)).collect();
    let lengths = apportion(budget - visits, &weights);

    // Starts: one slot per visit, the slack spread by exponential gaps (a Poisson-like rhythm).
    let slack = span - (visits - 1) * slot;
    let gaps: Vec<f64> = (0..=visits).map(|_| exponential(rng)).collect();
    let total: f64 = gaps.iter().sum();
    let mut cumulative = 0.0;
    for (i, extra) in lengths.iter().enumerate() {
        cumulative += gaps[i];
        let offset = i as u64 * slot + (slack as f64 * cumulative / total) as u64;
        plan.push(PlannedVisit {
            start: spec.start_ms + offset.min(span - 1),
            user,
            number: i as u32 + 1,
            len: (1 + extra) as u32,
        });
    }
}

// ---------------------------------------------------------------------------------------------
// Events
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum EventType {
    PageView,
    Click,
    Scroll,
    VideoPlay,
    FormSubmit,
    AddToCart,
    Wishlist,
    Bookmark,
    Share,
    Comment,
    Purchase,
    Exit,
    /// Only with a simulated experiment: a recommendation list was shown.
    Impression,
    /// Not a known type: the engine keeps it with weight 0.
    Hover,
}

impl EventType {
    fn name(self) -> &'static str {
        match self {
            EventType::PageView => "page_view",
            EventType::Click => "click",
            EventType::Scroll => "scroll",
            EventType::VideoPlay => "video_play",
            EventType::FormSubmit => "form_submit",
            EventType::AddToCart => "add_to_cart",
            EventType::Wishlist => "wishlist",
            EventType::Bookmark => "bookmark",
            EventType::Share => "share",
            EventType::Comment => "comment",
            EventType::Purchase => "purchase",
            EventType::Exit => "exit",
            EventType::Impression => "impression",
            EventType::Hover => "hover",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PageKind {
    Home,
    Search,
    Category,
    Product,
    Article,
    Cart,
    Checkout,
}

impl PageKind {
    fn name(self) -> &'static str {
        match self {
            PageKind::Home => "home",
            PageKind::Search => "search",
            PageKind::Category => "category",
            PageKind::Product => "product",
            PageKind::Article => "article",
            PageKind::Cart => "cart",
            PageKind::Checkout => "checkout",
        }
    }
}

/// One event, compact; ids are rendered only when written.
#[derive(Clone, Copy, Debug)]
struct Event {
    ts: u64,
    user: u32,
    /// Visit number, 0 when the client sends no session id.
    session: u32,
    device: Device,
    kind: EventType,
    page: Option<PageKind>,
    item: Option<u32>,
    dwell_ms: Option<u32>,
    scroll_pct: Option<u8>,
    value_cents: Option<u32>,
    /// The items a simulated recommendation list showed (impressions only).
    shown: [u32; REC_SLOTS],
    shown_len: u8,
    /// A simulated list's id (its time): on its impression and on clicks through it.
    rec_list: Option<u64>,
}

// ---------------------------------------------------------------------------------------------
// Simulated experiment
// ---------------------------------------------------------------------------------------------

/// Each user's variant and chance to click a recommended item.
struct RecSim {
    variant_names: Vec<String>,
    /// Per user: (variant index, click chance per list).
    users: Vec<(usize, f64)>,
}

impl RecSim {
    fn new(sim: &ExperimentSim, users: usize) -> RecSim {
        use intentflow_dataflows::assignment::fnv1a32;
        use intentflow_dataflows::model::UserId as EngineUserId;
        let experiment = &sim.experiment;
        let users = (0..users as u32)
            .map(|index| {
                let id = format!("u{}", index + 1);
                let variant = experiment.assign(&EngineUserId::new(&id));
                // A per-user taste for recommendations, from a hash rather than the main
                // generator, so users' tastes do not depend on the order they are built in.
                let taste = f64::from(fnv1a32(format!("taste:{id}").as_bytes()) % 1000) / 1000.0;
                let factor = 0.25 + 1.5 * taste;
                let uplift = sim.uplift.get(variant).copied().unwrap_or(0.0);
                (
                    variant,
                    (BASE_REC_CTR * factor * (1.0 + uplift)).clamp(0.0, 1.0),
                )
            })
            .collect();
        RecSim {
            variant_names: experiment
                .variants
                .iter()
                .map(|variant| variant.name.to_string())
                .collect(),
            users,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Visit simulation
// ---------------------------------------------------------------------------------------------

/// A page of the site, with what it is about.
#[derive(Clone, Copy, Debug)]
enum Page {
    Home,
    Search,
    Category(u16),
    Product(u32),
    Article(u32),
    Cart,
    Checkout,
}

impl Page {
    fn kind(self) -> PageKind {
        match self {
            Page::Home => PageKind::Home,
            Page::Search => PageKind::Search,
            Page::Category(_) => PageKind::Category,
            Page::Product(_) => PageKind::Product,
            Page::Article(_) => PageKind::Article,
            Page::Cart => PageKind::Cart,
            Page::Checkout => PageKind::Checkout,
        }
    }

    fn item(self) -> Option<u32> {
        match self {
            Page::Product(i) | Page::Article(i) => Some(i),
            _ => None,
        }
    }
}

/// Chance per page of a one-off click on a random (mostly unpopular) item, and of an event of
/// an unknown type.
const STRAY_CLICK_PER_PAGE: f64 = 0.012;
const HOVER_PER_PAGE: f64 = 0.005;
/// Share of page views that report the scroll depth reached.
const PAGE_VIEW_SCROLL_SHARE: f64 = 0.4;
const CART_CAPACITY: usize = 4;

/// Simulates one visit page by page until its planned number of events is reached.
struct VisitSim<'a> {
    rng: &'a mut ChaCha8Rng,
    cat: &'a Catalog,
    user: &'a User,
    p: &'static Profile,
    out: &'a mut Vec<Event>,
    /// User, session and device of every event of the visit.
    stamp: Event,
    /// Number of events at which the visit is cut off.
    limit: usize,
    /// The current page: its kind, when it was opened and left, and the time of its last event.
    page: PageKind,
    page_start: u64,
    page_end: u64,
    cursor: u64,
    /// Items added to the cart in this visit and not yet bought.
    cart: [u32; CART_CAPACITY],
    cart_len: usize,
    /// With a simulated experiment: the user's chance to click a recommendation list.
    rec_click: Option<f64>,
}

impl<'a> VisitSim<'a> {
    fn new(
        rng: &'a mut ChaCha8Rng,
        cat: &'a Catalog,
        users: &'a [User],
        visit: &PlannedVisit,
        out: &'a mut Vec<Event>,
        recs: Option<&RecSim>,
    ) -> VisitSim<'a> {
        let user = &users[visit.user as usize];
        let device = if chance(rng, 0.8) {
            user.device
        } else {
            DEVICES[rng.random_range(0..3u32) as usize]
        };
        let stamp = Event {
            ts: visit.start,
            user: visit.user,
            session: if user.sends_session { visit.number } else { 0 },
            device,
            kind: EventType::PageView,
            page: None,
            item: None,
            dwell_ms: None,
            scroll_pct: None,
            value_cents: None,
            shown: [0; REC_SLOTS],
            shown_len: 0,
            rec_list: None,
        };
        VisitSim {
            rng,
            cat,
            user,
            p: user.archetype.profile(),
            out,
            stamp,
            limit: 0,
            page: PageKind::Home,
            page_start: visit.start,
            page_end: visit.start,
            cursor: visit.start,
            cart: [0; CART_CAPACITY],
            cart_len: 0,
            rec_click: recs.map(|recs| recs.users[visit.user as usize].1),
        }
    }

    /// Fills `out` with exactly `len` events, sorted by time.
    fn run(mut self, len: usize) {
        let start = self.stamp.ts;
        let exit = len >= 2 && chance(self.rng, self.p.exit);
        self.limit = if exit { len - 1 } else { len };
        let mut page = self.landing_page();
        let mut clock = start;
        while !self.full() {
            page = self.show(page, clock);
            clock = self.page_end + self.rng.random_range(300..2_500u64);
        }
        if exit {
            self.limit = len;
            let last_item = self.out.last().and_then(|e| e.item);
            self.push_at(self.page_end, EventType::Exit, last_item);
        }
        self.out.sort_by_key(|e| e.ts);
        fit_duration(self.out, start, self.p.max_visit_ms);
    }

    fn full(&self) -> bool {
        self.out.len() >= self.limit
    }

    fn landing_page(&mut self) -> Page {
        match pick_weighted(self.rng, &self.p.landing) {
            0 => Page::Home,
            1 => Page::Search,
            2 => Page::Category(self.category()),
            3 => Page::Product(self.product(None)),
            _ => self.article(None).unwrap_or(Page::Home),
        }
    }

    /// Shows a page: its page view, the actions on it, and where the user goes next.
    fn show(&mut self, page: Page, at: u64) -> Page {
        let kind = page.kind();
        let dwell = self.dwell(kind);
        self.page = kind;
        self.page_start = at;
        self.page_end = at + dwell;
        self.cursor = at;
        let depth = self.scroll_depth();

        let mut view = self.event(EventType::PageView, at, page.item());
        view.dwell_ms = Some(dwell as u32);
        if chance(self.rng, PAGE_VIEW_SCROLL_SHARE) {
            view.scroll_pct = Some(depth);
        }
        self.push(view);
        self.noise();
        match page {
            Page::Home | Page::Search => {
                if kind == PageKind::Search {
                    self.act(EventType::FormSubmit, None);
                }
                self.browse_listing(depth);
                match self.recommendations(None) {
                    Some(clicked) => clicked,
                    None => self.leave_listing(None),
                }
            }
            Page::Category(c) => {
                self.browse_listing(depth);
                match self.recommendations(Some(c)) {
                    Some(clicked) => clicked,
                    None => self.leave_listing(Some(c)),
                }
            }
            Page::Product(item) => self.product_page(item, depth),
            Page::Article(item) => self.article_page(item, depth),
            Page::Cart => self.cart_page(),
            Page::Checkout => self.checkout_page(),
        }
    }

    fn browse_listing(&mut self, depth: u8) {
        self.scrolls(depth, self.p.scroll_events);
        // Filters, sorting, tiles: clicks without an item.
        for _ in 0..geometric(self.rng, self.p.extra_clicks, 4) {
            self.act(EventType::Click, None);
        }
    }

    /// With a simulated experiment: a recommendation list of products (from the page's
    /// category or one the user likes), and the page of the item the user clicks in it, if
    /// they do.
    fn recommendations(&mut self, category: Option<u16>) -> Option<Page> {
        let click_chance = self.rec_click?;
        let category = category.unwrap_or_else(|| self.category());
        let mut shown = [0; REC_SLOTS];
        let mut len = 0;
        for _ in 0..REC_SLOTS {
            let item = self.cat.product_in(category, self.rng);
            if !shown[..len].contains(&item) {
                shown[len] = item;
                len += 1;
            }
        }
        let ts = self.moment();
        let mut impression = self.event(EventType::Impression, ts, None);
        impression.shown = shown;
        impression.shown_len = len as u8;
        impression.rec_list = Some(ts);
        self.push(impression);
        if !chance(self.rng, click_chance) {
            return None;
        }
        let item = shown[self.rng.random_range(0..len)];
        let at = self.moment();
        let mut click = self.event(EventType::Click, at, Some(item));
        click.rec_list = Some(ts);
        self.push(click);
        Some(Page::Product(item))
    }

    /// From home, search or a category page: to content, a product, or another listing.
    fn leave_listing(&mut self, category: Option<u16>) -> Page {
        let category = category.unwrap_or_else(|| self.category());
        let r = uniform(self.rng);
        let next = if r < self.p.to_content && self.cat.has_content() {
            self.article(Some(category)).unwrap_or(Page::Home)
        } else if r < self.p.to_content + self.p.to_product {
            Page::Product(self.product(Some(category)))
        } else {
            match pick_weighted(self.rng, &[0.55, 0.25, 0.2]) {
                0 => Page::Category(self.category()),
                1 => Page::Search,
                _ => Page::Home,
            }
        };
        self.navigate(next)
    }

    fn product_page(&mut self, item: u32, depth: u8) -> Page {
        let p = self.p;
        self.scrolls(depth, p.scroll_events);
        if chance(self.rng, p.video * 0.4) {
            self.act(EventType::VideoPlay, Some(item));
        }
        // Gallery, sizes, reviews.
        for _ in 0..geometric(self.rng, p.extra_clicks, 4) {
            self.act(EventType::Click, Some(item));
        }
        if chance(self.rng, p.wishlist) {
            self.act(EventType::Wishlist, Some(item));
        }
        let added = chance(self.rng, p.add_to_cart);
        if added {
            self.act(EventType::AddToCart, Some(item));
            self.add_to_cart(item);
            if chance(self.rng, p.go_to_cart) {
                return self.navigate(Page::Cart);
            }
        }
        let category = self.cat.items[item as usize].category;
        let next = match pick_weighted(self.rng, &[p.to_content * 0.5, 0.45, 0.25, 0.1, 0.1, 0.1]) {
            0 => self
                .article(Some(category))
                .unwrap_or(Page::Category(category)),
            1 => Page::Product(self.product(Some(category))),
            2 => Page::Category(category),
            3 => Page::Search,
            4 => Page::Home,
            _ if self.cart_len > 0 => Page::Cart,
            _ => Page::Category(self.category()),
        };
        self.navigate(next)
    }

    fn article_page(&mut self, item: u32, depth: u8) -> Page {
        let p = self.p;
        self.scrolls(depth, p.scroll_events * 2.0);
        if chance(self.rng, p.video) {
            self.act(EventType::VideoPlay, Some(item));
        }
        if chance(self.rng, p.engage) {
            self.act(EventType::Bookmark, Some(item));
        }
        if chance(self.rng, p.engage * 0.5) {
            self.act(EventType::Share, Some(item));
        }
        if chance(self.rng, p.engage * 0.35) {
            self.act(EventType::Comment, Some(item));
        }
        let category = self.cat.items[item as usize].category;
        let r = uniform(self.rng);
        let next = if r < p.to_content {
            self.article(Some(category)).unwrap_or(Page::Home)
        } else if r < p.to_content + p.article_to_product {
            Page::Product(self.product(Some(category)))
        } else if chance(self.rng, 0.6) {
            Page::Category(category)
        } else {
            Page::Home
        };
        self.navigate(next)
    }

    fn cart_page(&mut self) -> Page {
        if self.cart_len == 0 {
            return self.leave_listing(None);
        }
        if chance(self.rng, self.p.checkout) {
            return self.navigate(Page::Checkout);
        }
        // Keep shopping.
        let item = self.cart[self.cart_len - 1];
        let category = self.cat.items[item as usize].category;
        let next = Page::Product(self.product(Some(category)));
        self.navigate(next)
    }

    fn checkout_page(&mut self) -> Page {
        self.act(EventType::FormSubmit, None);
        if self.cart_len == 0 || !chance(self.rng, self.p.purchase) {
            return if chance(self.rng, 0.5) {
                Page::Cart
            } else {
                Page::Home
            };
        }
        for i in 0..self.cart_len {
            let item = self.cart[i];
            let ts = self.moment();
            let mut purchase = self.event(EventType::Purchase, ts, Some(item));
            purchase.value_cents = Some(self.cat.items[item as usize].price_cents);
            self.push(purchase);
        }
        self.cart_len = 0;
        Page::Home
    }

    /// Moves to `next`, reporting a click on the link (with its item) if the client does.
    fn navigate(&mut self, next: Page) -> Page {
        if chance(self.rng, self.p.nav_click) {
            self.act(EventType::Click, next.item());
        }
        next
    }

    fn add_to_cart(&mut self, item: u32) {
        if self.cart_len < CART_CAPACITY {
            self.cart[self.cart_len] = item;
            self.cart_len += 1;
        }
    }

    /// Scroll events rising to the page's depth.
    fn scrolls(&mut self, depth: u8, mean: f64) {
        let n = geometric(self.rng, mean, 6);
        for k in 1..=n {
            let ts = self.moment();
            let mut e = self.event(EventType::Scroll, ts, None);
            e.scroll_pct = Some((depth as u32 * k / n).max(1) as u8);
            self.push(e);
        }
    }

    /// Stray clicks on random items and unknown event types.
    fn noise(&mut self) {
        if chance(self.rng, STRAY_CLICK_PER_PAGE) {
            let item = self.rng.random_range(0..self.cat.items.len() as u32);
            self.act(EventType::Click, Some(item));
        }
        if chance(self.rng, HOVER_PER_PAGE) {
            self.act(EventType::Hover, None);
        }
    }

    fn category(&mut self) -> u16 {
        self.user.preferred_category(self.cat, self.rng)
    }

    fn product(&mut self, category: Option<u16>) -> u32 {
        let category = category.unwrap_or_else(|| self.category());
        self.cat.product_in(category, self.rng)
    }

    fn article(&mut self, category: Option<u16>) -> Option<Page> {
        let category = category.unwrap_or_else(|| self.category());
        self.cat.content_in(category, self.rng).map(Page::Article)
    }

    fn dwell(&mut self, page: PageKind) -> u64 {
        let p = self.p;
        let median = match page {
            PageKind::Home | PageKind::Search | PageKind::Category => p.dwell_listing,
            PageKind::Product => p.dwell_product,
            PageKind::Article => p.dwell_article,
            PageKind::Cart | PageKind::Checkout => p.dwell_funnel,
        };
        (log_normal(self.rng, median, p.dwell_sigma) as u64).clamp(500, p.dwell_cap_ms)
    }

    fn scroll_depth(&mut self) -> u8 {
        let (lo, hi) = self.p.scroll_pct;
        self.rng.random_range(lo..=hi) as u8
    }

    /// A time on the current page after the previous action, before the page is left.
    fn moment(&mut self) -> u64 {
        let remaining = self.page_end.saturating_sub(self.cursor);
        self.cursor += (remaining as f64 * self.rng.random_range(0.1..0.5)) as u64;
        self.cursor.max(self.page_start + 1)
    }

    fn event(&self, kind: EventType, ts: u64, item: Option<u32>) -> Event {
        Event {
            ts,
            kind,
            page: Some(self.page),
            item,
            ..self.stamp
        }
    }

    fn act(&mut self, kind: EventType, item: Option<u32>) {
        let ts = self.moment();
        self.push_at(ts, kind, item);
    }

    fn push_at(&mut self, ts: u64, kind: EventType, item: Option<u32>) {
        let e = self.event(kind, ts, item);
        self.push(e);
    }

    /// Events beyond the planned length are dropped: the visit is cut off there.
    fn push(&mut self, e: Event) {
        if !self.full() {
            self.out.push(e);
        }
    }
}

/// Squeezes a visit (sorted) into `max_ms`, scaling dwell alike. Only very long visits of very
/// active users need it; it keeps every user's visits clear of each other.
fn fit_duration(events: &mut [Event], start: u64, max_ms: u64) {
    let duration = events.last().map_or(0, |e| e.ts - start);
    if duration <= max_ms {
        return;
    }
    let scale = |x: u64| (x as u128 * max_ms as u128 / duration as u128) as u64;
    for e in events {
        e.ts = start + scale(e.ts - start);
        if let Some(d) = e.dwell_ms {
            e.dwell_ms = Some(scale(d as u64) as u32);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The event stream: merging visits, late arrivals, serialization
// ---------------------------------------------------------------------------------------------

/// Share of events that arrive late, and how late (log-uniform between the bounds).
const LATE_SHARE: f64 = 0.005;
const LATE_MIN_MS: u64 = 3 * SECOND_MS;
const LATE_MAX_MS: u64 = 120 * SECOND_MS;
/// Share of item page views reached through a recommendation list (they carry `rec`, so
/// quick exits from them feed the rejected-item penalty).
const REC_SHARE: f64 = 0.2;
const REC_LIST: &str = "home-recs";
/// Share of events whose `ts` is an RFC 3339 string.
const RFC3339_SHARE: f64 = 0.02;
const BUFFER_BYTES: usize = 1 << 16;

/// An event held back until the stream passes `release`.
struct Delayed {
    release: u64,
    seq: u64,
    event: Event,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> Ordering {
        (self.release, self.seq).cmp(&(other.release, other.seq))
    }
}

struct Stream<'a> {
    cat: &'a Catalog,
    users: &'a [User],
    rng: &'a mut ChaCha8Rng,
    out: &'a mut dyn Write,
    buf: Vec<u8>,
    delayed: BinaryHeap<Reverse<Delayed>>,
    delayed_seq: u64,
    written: u64,
    recs: Option<&'a RecSim>,
}

impl<'a> Stream<'a> {
    fn new(
        cat: &'a Catalog,
        users: &'a [User],
        rng: &'a mut ChaCha8Rng,
        out: &'a mut dyn Write,
        recs: Option<&'a RecSim>,
    ) -> Stream<'a> {
        Stream {
            cat,
            users,
            rng,
            out,
            recs,
            buf: Vec::with_capacity(BUFFER_BYTES + 1024),
            delayed: BinaryHeap::new(),
            delayed_seq: 0,
            written: 0,
        }
    }

    /// Simulates each visit when its start comes up and merges the running visits by time.
    fn run(mut self, plan: &[PlannedVisit]) -> io::Result<u64> {
        // Running visits: their events, a cursor, and a heap keyed by the next event's time.
        let mut visits: Vec<Vec<Event>> = Vec::new();
        let mut cursors: Vec<usize> = Vec::new();
        let mut free: Vec<usize> = Vec::new();
        let mut running: BinaryHeap<Reverse<(u64, usize, usize)>> = BinaryHeap::new();
        let mut next = 0;
        loop {
            let due = running.peek().map(|Reverse((ts, _, _))| *ts);
            if next < plan.len() && due.is_none_or(|ts| plan[next].start <= ts) {
                let slot = free.pop().unwrap_or_else(|| {
                    visits.push(Vec::new());
                    cursors.push(0);
                    visits.len() - 1
                });
                let events = &mut visits[slot];
                events.clear();
                VisitSim::new(
                    self.rng,
                    self.cat,
                    self.users,
                    &plan[next],
                    events,
                    self.recs,
                )
                .run(plan[next].len as usize);
                cursors[slot] = 0;
                running.push(Reverse((events[0].ts, next, slot)));
                next += 1;
                continue;
            }
            let Some(Reverse((_, seq, slot))) = running.pop() else {
                break;
            };
            let event = visits[slot][cursors[slot]];
            cursors[slot] += 1;
            match visits[slot].get(cursors[slot]) {
                Some(e) => running.push(Reverse((e.ts, seq, slot))),
                None => free.push(slot),
            }
            self.emit(event)?;
        }
        self.finish()
    }

    fn emit(&mut self, event: Event) -> io::Result<()> {
        while let Some(Reverse(d)) = self.delayed.peek() {
            if d.release > event.ts {
                break;
            }
            let Reverse(d) = self.delayed.pop().expect("peeked");
            self.write(&d.event)?;
        }
        if chance(self.rng, LATE_SHARE) {
            let delay = log_uniform(self.rng, LATE_MIN_MS, LATE_MAX_MS);
            self.delayed_seq += 1;
            self.delayed.push(Reverse(Delayed {
                release: event.ts + delay,
                seq: self.delayed_seq,
                event,
            }));
            return Ok(());
        }
        self.write(&event)
    }

    fn finish(mut self) -> io::Result<u64> {
        while let Some(Reverse(d)) = self.delayed.pop() {
            self.write(&d.event)?;
        }
        self.out.write_all(&self.buf)?;
        self.out.flush()?;
        Ok(self.written)
    }

    fn write(&mut self, e: &Event) -> io::Result<()> {
        let ts = if chance(self.rng, RFC3339_SHARE) {
            Ts::Text(e.ts)
        } else {
            Ts::Millis(e.ts)
        };
        let line = EventLine {
            user: UserId(e.user),
            kind: e.kind.name(),
            ts,
            item: e.item.map(|i| self.cat.id(i)),
            session: (e.session > 0).then_some(SessionId(e.user, e.session)),
            page: e.page.map(PageKind::name),
            dwell_ms: e.dwell_ms,
            scroll: e.scroll_pct.map(|s| s as f64 / 100.0),
            device: e.device.name(),
            value: e.value_cents.map(cents_to_f64),
            rec: match e.rec_list {
                Some(list) => Some(Cow::Owned(format!("r{}-{list}", e.user + 1))),
                None => (e.kind == EventType::PageView
                    && e.item.is_some()
                    && chance(self.rng, REC_SHARE))
                .then_some(Cow::Borrowed(REC_LIST)),
            },
            items: (e.kind == EventType::Impression).then(|| {
                e.shown[..e.shown_len as usize]
                    .iter()
                    .map(|i| self.cat.id(*i))
                    .collect()
            }),
            variant: self
                .recs
                .filter(|_| e.kind == EventType::Impression)
                .map(|recs| recs.variant_names[recs.users[e.user as usize].0].as_str()),
        };
        write_line(&mut self.buf, &line)?;
        self.written += 1;
        flush_if_full(&mut self.buf, self.out)
    }
}

fn write_line<T: Serialize>(buf: &mut Vec<u8>, line: &T) -> io::Result<()> {
    serde_json::to_writer(&mut *buf, line).map_err(io::Error::other)?;
    buf.push(b'\n');
    Ok(())
}

fn flush_if_full(buf: &mut Vec<u8>, out: &mut dyn Write) -> io::Result<()> {
    if buf.len() >= BUFFER_BYTES {
        out.write_all(buf)?;
        buf.clear();
    }
    Ok(())
}

fn cents_to_f64(cents: u32) -> f64 {
    cents as f64 / 100.0
}

/// An event line; field order is the schema's (DESIGN.md §2).
#[derive(Serialize)]
struct EventLine<'a> {
    user: UserId,
    #[serde(rename = "type")]
    kind: &'static str,
    ts: Ts,
    #[serde(skip_serializing_if = "Option::is_none")]
    item: Option<ItemId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    session: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    page: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    dwell_ms: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    scroll: Option<f64>,
    device: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    value: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    rec: Option<Cow<'static, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    items: Option<Vec<ItemId>>,
    /// The user's variant, on simulated impressions (as a client echoes it).
    #[serde(skip_serializing_if = "Option::is_none")]
    variant: Option<&'a str>,
}

#[derive(Serialize)]
struct CatalogLine {
    item: ItemId,
    category: &'static str,
    kind: &'static str,
    price: f64,
    premium: bool,
}

#[derive(Serialize)]
struct TruthLine {
    user: UserId,
    archetype: &'static str,
}

/// `u<n>` for the 0-based user index n-1; rendered without allocating.
struct UserId(u32);

impl Serialize for UserId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("u{}", self.0 + 1))
    }
}

/// `p<n>` or `a<n>`.
struct ItemId(char, u32);

impl Serialize for ItemId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("{}{}", self.0, self.1))
    }
}

/// `s<user number>-<visit number>`, e.g. `s7-3` for the third visit of `u7`.
struct SessionId(u32, u32);

impl Serialize for SessionId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&format_args!("s{}-{}", self.0 + 1, self.1))
    }
}

/// Event time: integer milliseconds, or the same instant as an RFC 3339 string.
enum Ts {
    Millis(u64),
    Text(u64),
}

impl Serialize for Ts {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match *self {
            Ts::Millis(ms) => s.serialize_u64(ms),
            Ts::Text(ms) => s.collect_str(&Rfc3339(ms)),
        }
    }
}

/// Milliseconds since the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ`.
struct Rfc3339(u64);

impl fmt::Display for Rfc3339 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0;
        let (y, m, d) = civil_from_days((ms / DAY_MS) as i64);
        let in_day = ms % DAY_MS;
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
            in_day / 3_600_000,
            in_day / 60_000 % 60,
            in_day / 1_000 % 60,
            in_day % 1_000
        )
    }
}

/// Days since 1970-01-01 to (year, month, day) in the proleptic Gregorian calendar
/// (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

// ---------------------------------------------------------------------------------------------
// Deterministic randomness helpers (IEEE basic operations and sqrt only: portable bit for bit)
// ---------------------------------------------------------------------------------------------

fn uniform(rng: &mut ChaCha8Rng) -> f64 {
    rng.random::<f64>()
}

fn chance(rng: &mut ChaCha8Rng, p: f64) -> bool {
    uniform(rng) < p
}

/// Index drawn in proportion to `weights`.
fn pick_weighted(rng: &mut ChaCha8Rng, weights: &[f64]) -> usize {
    let total: f64 = weights.iter().sum();
    let mut x = uniform(rng) * total;
    for (i, &w) in weights.iter().enumerate() {
        if x < w {
            return i;
        }
        x -= w;
    }
    weights.len() - 1
}

/// Geometric count with the given mean, capped.
fn geometric(rng: &mut ChaCha8Rng, mean: f64, cap: u32) -> u32 {
    let p = mean / (1.0 + mean);
    let mut n = 0;
    while n < cap && chance(rng, p) {
        n += 1;
    }
    n
}

fn exponential(rng: &mut ChaCha8Rng) -> f64 {
    -det_ln(1.0 - uniform(rng))
}

fn standard_normal(rng: &mut ChaCha8Rng) -> f64 {
    // Marsaglia's polar method: needs ln and sqrt, no trigonometry.
    loop {
        let u = 2.0 * uniform(rng) - 1.0;
        let v = 2.0 * uniform(rng) - 1.0;
        let s = u * u + v * v;
        if s > 0.0 && s < 1.0 {
            return u * (-2.0 * det_ln(s) / s).sqrt();
        }
    }
}

fn log_normal(rng: &mut ChaCha8Rng, median: f64, sigma: f64) -> f64 {
    median * det_exp(sigma * standard_normal(rng))
}

fn log_uniform(rng: &mut ChaCha8Rng, lo: u64, hi: u64) -> u64 {
    let span = det_ln(hi as f64 / lo as f64);
    ((lo as f64 * det_exp(uniform(rng) * span)) as u64).clamp(lo, hi)
}

/// Fisher–Yates over 0..n with u64 draws (portable, unlike usize ranges).
fn permutation(n: usize, rng: &mut ChaCha8Rng) -> Vec<u32> {
    let mut v: Vec<u32> = (0..n as u32).collect();
    shuffle(&mut v, rng);
    v
}

fn shuffle<T>(v: &mut [T], rng: &mut ChaCha8Rng) {
    for i in (1..v.len()).rev() {
        let j = rng.random_range(0..=i as u64) as usize;
        v.swap(i, j);
    }
}

/// Splits `total` into integer parts proportional to `weights` that add up to exactly `total`
/// (cumulative rounding: no sorting, stable under tiny weight changes).
fn apportion(total: u64, weights: &[f64]) -> Vec<u64> {
    let sum: f64 = weights.iter().sum();
    let mut parts = Vec::with_capacity(weights.len());
    let (mut cumulative, mut given) = (0.0, 0u64);
    for (i, w) in weights.iter().enumerate() {
        cumulative += w;
        let upto = if i + 1 == weights.len() || sum <= 0.0 {
            if i + 1 == weights.len() { total } else { 0 }
        } else {
            ((total as f64 * cumulative / sum) as u64).clamp(given, total)
        };
        parts.push(upto - given);
        given = upto;
    }
    parts
}

const LN_2: f64 = std::f64::consts::LN_2;

/// Natural logarithm from basic operations: x = m·2^e, ln m by the atanh series.
fn det_ln(x: f64) -> f64 {
    debug_assert!(x > 0.0 && x.is_normal());
    let bits = x.to_bits();
    let mut e = ((bits >> 52) & 0x7ff) as i64 - 1023;
    let mut m = f64::from_bits((bits & ((1u64 << 52) - 1)) | (1023u64 << 52));
    if m > std::f64::consts::SQRT_2 {
        m /= 2.0;
        e += 1;
    }
    let z = (m - 1.0) / (m + 1.0);
    let z2 = z * z;
    let (mut term, mut sum) = (z, 0.0);
    for k in 0..14 {
        sum += term / (2 * k + 1) as f64;
        term *= z2;
    }
    2.0 * sum + e as f64 * LN_2
}

/// Exponential from basic operations: e^x = 2^k·e^r with |r| ≤ ln2/2, e^r by Taylor series.
fn det_exp(x: f64) -> f64 {
    let x = x.clamp(-700.0, 700.0);
    let k = (x / LN_2).round();
    let r = x - k * LN_2;
    let (mut term, mut sum) = (1.0, 1.0);
    for i in 1..=16 {
        term *= r / i as f64;
        sum += term;
    }
    sum * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;
    use std::collections::{HashMap, HashSet};

    struct Output {
        events: Vec<u8>,
        catalog: Vec<u8>,
        truth: Vec<u8>,
        written: u64,
    }

    fn run(spec: &GenerateSpec) -> Output {
        let (mut events, mut catalog, mut truth) = (Vec::new(), Vec::new(), Vec::new());
        let written = generate(spec, &mut events, Some(&mut catalog), Some(&mut truth)).unwrap();
        Output {
            events,
            catalog,
            truth,
            written,
        }
    }

    fn spec(users: usize, items: usize, events: usize) -> GenerateSpec {
        GenerateSpec {
            users,
            items,
            events,
            ..GenerateSpec::default()
        }
    }

    fn lines(bytes: &[u8]) -> Vec<Value> {
        std::str::from_utf8(bytes)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
            .collect()
    }

    /// Event time in ms, whether written as an integer or as RFC 3339.
    fn ts_ms(e: &Value) -> u64 {
        match &e["ts"] {
            Value::Number(n) => n.as_u64().expect("integer ts"),
            Value::String(s) => parse_rfc3339(s),
            other => panic!("bad ts {other}"),
        }
    }

    /// Independent check of the formatter: days from civil (Hinnant), then the clock.
    fn parse_rfc3339(s: &str) -> u64 {
        assert_eq!(s.len(), 24, "{s}");
        assert!(s.ends_with('Z') && &s[10..11] == "T", "{s}");
        let n = |r: std::ops::Range<usize>| s[r].parse::<i64>().unwrap();
        let (y, m, d) = (n(0..4), n(5..7), n(8..10));
        let y = if m <= 2 { y - 1 } else { y };
        let era = y.div_euclid(400);
        let yoe = y - era * 400;
        let mp = (m + 9) % 12;
        let doy = (153 * mp + 2) / 5 + d - 1;
        let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
        let days = era * 146_097 + doe - 719_468;
        let ms = ((days * 24 + n(11..13)) * 60 + n(14..16)) * 60_000 + n(17..19) * 1000 + n(20..23);
        ms as u64
    }

    #[test]
    fn same_seed_same_bytes_other_seed_other_bytes() {
        let s = spec(200, 100, 5_000);
        let (a, b) = (run(&s), run(&s));
        assert_eq!(a.events, b.events);
        assert_eq!(a.catalog, b.catalog);
        assert_eq!(a.truth, b.truth);
        let c = run(&GenerateSpec { seed: 7, ..s });
        assert_ne!(a.events, c.events);
        assert_ne!(a.truth, c.truth);
    }

    #[test]
    fn exact_event_count() {
        for (users, items, events) in [
            (10, 10, 100),
            (1000, 50, 10),
            (3, 1, 1),
            (50, 7, 0),
            (10, 20, 30_000),
            (2_000, 300, 20_001),
        ] {
            let out = run(&spec(users, items, events));
            assert_eq!(out.written, events as u64, "{users} {items} {events}");
            assert_eq!(lines(&out.events).len(), events);
            assert_eq!(lines(&out.truth).len(), users);
            assert_eq!(lines(&out.catalog).len(), items);
        }
    }

    #[test]
    fn rejects_impossible_specs() {
        let mut sink = Vec::new();
        for s in [
            spec(0, 10, 10),
            spec(10, 0, 10),
            GenerateSpec {
                days: 0,
                ..spec(10, 10, 10)
            },
        ] {
            let err = generate(&s, &mut sink, None, None).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        }
    }

    const KNOWN: [&str; 12] = [
        "page_view",
        "click",
        "scroll",
        "video_play",
        "form_submit",
        "add_to_cart",
        "wishlist",
        "bookmark",
        "share",
        "comment",
        "purchase",
        "exit",
    ];

    #[test]
    fn every_line_is_a_valid_event() {
        let s = spec(500, 200, 30_000);
        let out = run(&s);
        let end = s.start_ms + s.days as u64 * DAY_MS;
        let catalog: HashSet<String> = lines(&out.catalog)
            .iter()
            .map(|c| c["item"].as_str().unwrap().to_string())
            .collect();
        let pages = [
            "home", "search", "category", "product", "article", "cart", "checkout",
        ];
        let (mut text_ts, mut hover) = (0, 0);
        for e in lines(&out.events) {
            let obj = e.as_object().unwrap();
            let user = e["user"].as_str().unwrap();
            let n: usize = user.strip_prefix('u').unwrap().parse().unwrap();
            assert!((1..=s.users).contains(&n));
            let kind = e["type"].as_str().unwrap();
            assert!(!kind.is_empty());
            if !KNOWN.contains(&kind) {
                assert_eq!(kind, "hover");
                hover += 1;
            }
            assert_ne!(kind, "impression");
            if e["ts"].is_string() {
                text_ts += 1;
            }
            let ts = ts_ms(&e);
            assert!(ts >= s.start_ms && ts < end, "{e}");
            if let Some(item) = obj.get("item") {
                assert!(catalog.contains(item.as_str().unwrap()), "{e}");
            }
            if let Some(session) = obj.get("session") {
                let prefix = format!("s{n}-");
                assert!(session.as_str().unwrap().starts_with(&prefix), "{e}");
            }
            if let Some(page) = obj.get("page") {
                assert!(pages.contains(&page.as_str().unwrap()), "{e}");
            }
            if let Some(d) = obj.get("dwell_ms") {
                assert!(d.is_u64(), "{e}");
            }
            if let Some(sc) = obj.get("scroll") {
                let sc = sc.as_f64().unwrap();
                assert!((0.0..=1.0).contains(&sc), "{e}");
            }
            assert!(["mobile", "desktop", "tablet"].contains(&e["device"].as_str().unwrap()));
            match kind {
                "purchase" => assert!(e["value"].as_f64().unwrap() > 0.0, "{e}"),
                "page_view" => assert!(obj.contains_key("dwell_ms"), "{e}"),
                "scroll" => assert!(obj.contains_key("scroll"), "{e}"),
                _ => assert!(!obj.contains_key("value"), "{e}"),
            }
        }
        let total = s.events as f64;
        assert!(
            (0.01..0.03).contains(&(text_ts as f64 / total)),
            "{text_ts}"
        );
        assert!((0.0005..0.005).contains(&(hover as f64 / total)), "{hover}");
    }

    /// Keys of a JSON line in the order written (values here never contain `":`).
    fn raw_keys(line: &str) -> Vec<&str> {
        let parts: Vec<&str> = line.split("\":").collect();
        parts[..parts.len() - 1]
            .iter()
            .map(|part| part.rsplit_once('"').expect("quoted key").1)
            .collect()
    }

    fn in_order(keys: &[&str], order: &[&str]) -> bool {
        let positions: Vec<Option<usize>> = keys
            .iter()
            .map(|k| order.iter().position(|o| o == k))
            .collect();
        positions.iter().all(Option::is_some) && positions.windows(2).all(|w| w[0] < w[1])
    }

    #[test]
    fn field_order_is_the_schemas() {
        let out = run(&spec(50, 50, 5_000));
        let event_order = [
            "user", "type", "ts", "item", "session", "page", "dwell_ms", "scroll", "device",
            "value", "rec",
        ];
        for line in std::str::from_utf8(&out.events).unwrap().lines() {
            let keys = raw_keys(line);
            assert!(keys[..3] == ["user", "type", "ts"], "{line}");
            assert!(in_order(&keys, &event_order), "{line}");
        }
        let catalog_order = ["item", "category", "kind", "price", "premium"];
        for line in std::str::from_utf8(&out.catalog).unwrap().lines() {
            assert_eq!(raw_keys(line), catalog_order, "{line}");
        }
        for line in std::str::from_utf8(&out.truth).unwrap().lines() {
            assert_eq!(raw_keys(line), ["user", "archetype"], "{line}");
        }
    }

    #[test]
    fn rfc3339_round_trips() {
        for ms in [
            0,
            1_767_225_600_000,
            1_767_225_600_000 + 10 * 3_600_000 + 250,
            951_782_400_000 + 86_399_999, // 2000-02-29T23:59:59.999Z
            4_102_444_800_000,
        ] {
            assert_eq!(parse_rfc3339(&Rfc3339(ms).to_string()), ms);
        }
        assert_eq!(
            Rfc3339(1_767_225_600_000 + 10 * 3_600_000 + 250).to_string(),
            "2026-01-01T10:00:00.250Z"
        );
    }

    #[test]
    fn time_ordered_except_a_few_late_events() {
        let s = spec(1_000, 300, 100_000);
        let out = run(&s);
        let (mut max_seen, mut late) = (0u64, 0usize);
        for e in lines(&out.events) {
            let ts = ts_ms(&e);
            if ts < max_seen {
                late += 1;
                assert!(max_seen - ts <= LATE_MAX_MS, "{} ms late", max_seen - ts);
            }
            max_seen = max_seen.max(ts);
        }
        let share = late as f64 / s.events as f64;
        assert!((0.002..0.008).contains(&share), "late share {share}");
    }

    #[test]
    fn catalog_covers_items_and_has_the_promised_shape() {
        let s = spec(300, 500, 20_000);
        let out = run(&s);
        let catalog = lines(&out.catalog);
        let ids: HashSet<&str> = catalog
            .iter()
            .map(|c| c["item"].as_str().unwrap())
            .collect();
        assert_eq!(ids.len(), s.items);
        let used: HashSet<String> = lines(&out.events)
            .iter()
            .filter_map(|e| e.get("item").map(|i| i.as_str().unwrap().to_string()))
            .collect();
        assert!(used.iter().all(|i| ids.contains(i.as_str())));
        let categories: HashSet<&str> = catalog
            .iter()
            .map(|c| c["category"].as_str().unwrap())
            .collect();
        assert!((8..=20).contains(&categories.len()), "{categories:?}");
        let mut products = 0;
        let mut premium = 0;
        for c in &catalog {
            let id = c["item"].as_str().unwrap();
            let price = c["price"].as_f64().unwrap();
            match c["kind"].as_str().unwrap() {
                "product" | "offer" => {
                    assert!(id.starts_with('p') && price > 0.0, "{c}");
                    products += 1;
                    premium += c["premium"].as_bool().unwrap() as usize;
                }
                "article" | "guide" => assert!(id.starts_with('a') && price == 0.0, "{c}"),
                other => panic!("kind {other}"),
            }
        }
        let premium_share = premium as f64 / products as f64;
        assert!((0.1..0.2).contains(&premium_share), "{premium_share}");
    }

    #[test]
    fn item_popularity_is_skewed() {
        let out = run(&spec(1_000, 1_000, 50_000));
        let mut views: HashMap<String, usize> = HashMap::new();
        for e in lines(&out.events) {
            if e["type"] == "page_view" && e["page"] == "product" {
                *views
                    .entry(e["item"].as_str().unwrap().to_string())
                    .or_default() += 1;
            }
        }
        let mut counts: Vec<usize> = views.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let total: usize = counts.iter().sum();
        let top: usize = counts.iter().take(counts.len() / 10).sum();
        assert!(
            top as f64 > 0.4 * total as f64,
            "top 10% of items: {top} of {total}"
        );
    }

    /// Per-user visits: sessions from the id where sent, else by a 30-minute gap.
    #[test]
    fn visits_are_well_separated_and_session_ids_consistent() {
        let out = run(&spec(500, 200, 40_000));
        let mut by_user: HashMap<String, Vec<(u64, Option<String>)>> = HashMap::new();
        for e in lines(&out.events) {
            let session = e.get("session").map(|s| s.as_str().unwrap().to_string());
            by_user
                .entry(e["user"].as_str().unwrap().to_string())
                .or_default()
                .push((ts_ms(&e), session));
        }
        let mut silent = 0;
        for events in by_user.values_mut() {
            events.sort();
            let with_id = events.iter().filter(|e| e.1.is_some()).count();
            assert!(with_id == 0 || with_id == events.len(), "mixed session ids");
            silent += (with_id == 0) as usize;
            for w in events.windows(2) {
                let gap = w[1].0 - w[0].0;
                if with_id > 0 {
                    // Same id ⇔ within a visit (under 30 min); new id ⇔ long gap.
                    assert_eq!(w[0].1 == w[1].1, gap < 30 * MINUTE_MS, "{w:?}");
                } else {
                    assert!(!(30 * MINUTE_MS..MIN_VISIT_GAP_MS).contains(&gap), "{w:?}");
                }
            }
        }
        let silent_share = silent as f64 / by_user.len() as f64;
        assert!((0.2..0.4).contains(&silent_share), "{silent_share}");
    }

    #[test]
    fn heavy_users_produce_about_a_tenth_of_events() {
        let out = run(&spec(2_000, 300, 100_000));
        let mut per_user: HashMap<String, usize> = HashMap::new();
        for e in lines(&out.events) {
            *per_user
                .entry(e["user"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        assert_eq!(per_user.len(), 2_000, "every user has activity");
        let mut counts: Vec<usize> = per_user.into_values().collect();
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top: usize = counts[..20].iter().sum();
        let share = top as f64 / 100_000.0;
        assert!((0.08..0.2).contains(&share), "top 1% share {share}");
    }

    #[derive(Default, Debug)]
    struct Stats {
        users: usize,
        events: usize,
        sessions: usize,
        purchases: usize,
        carts: usize,
        page_views: usize,
        dwell_sum: u64,
        dwells: usize,
        scroll_sum: f64,
        scrolls: usize,
        article_views: usize,
        session_ms: u64,
    }

    impl Stats {
        fn per(&self, x: f64, n: usize) -> f64 {
            x / n.max(1) as f64
        }
        fn events_per_user(&self) -> f64 {
            self.per(self.events as f64, self.users)
        }
        fn events_per_session(&self) -> f64 {
            self.per(self.events as f64, self.sessions)
        }
        fn purchase_share(&self) -> f64 {
            self.per(self.purchases as f64, self.events)
        }
        fn cart_share(&self) -> f64 {
            self.per(self.carts as f64, self.events)
        }
        fn mean_dwell(&self) -> f64 {
            self.per(self.dwell_sum as f64, self.dwells)
        }
        fn mean_scroll(&self) -> f64 {
            self.per(self.scroll_sum, self.scrolls)
        }
        fn article_share(&self) -> f64 {
            self.per(self.article_views as f64, self.page_views)
        }
        fn session_secs(&self) -> f64 {
            self.per(self.session_ms as f64 / 1000.0, self.sessions)
        }
    }

    /// Behaviour statistics per true archetype; sessions by a 30-minute gap.
    fn archetype_stats(out: &Output) -> HashMap<String, Stats> {
        let truth: HashMap<String, String> = lines(&out.truth)
            .iter()
            .map(|t| {
                let s = |k: &str| t[k].as_str().unwrap().to_string();
                (s("user"), s("archetype"))
            })
            .collect();
        let mut stats: HashMap<String, Stats> = HashMap::new();
        for archetype in truth.values() {
            stats.entry(archetype.clone()).or_default().users += 1;
        }
        let mut times: HashMap<String, Vec<u64>> = HashMap::new();
        for e in lines(&out.events) {
            let user = e["user"].as_str().unwrap();
            let s = stats.get_mut(&truth[user]).unwrap();
            times.entry(user.to_string()).or_default().push(ts_ms(&e));
            s.events += 1;
            match e["type"].as_str().unwrap() {
                "purchase" => s.purchases += 1,
                "add_to_cart" => s.carts += 1,
                "page_view" => {
                    s.page_views += 1;
                    s.article_views += (e["page"] == "article") as usize;
                }
                _ => {}
            }
            if let Some(d) = e.get("dwell_ms") {
                s.dwell_sum += d.as_u64().unwrap();
                s.dwells += 1;
            }
            if let Some(sc) = e.get("scroll") {
                s.scroll_sum += sc.as_f64().unwrap();
                s.scrolls += 1;
            }
        }
        for (user, mut ts) in times {
            ts.sort_unstable();
            let s = stats.get_mut(&truth[&user]).unwrap();
            let mut start = ts[0];
            s.sessions += 1;
            for w in ts.windows(2) {
                if w[1] - w[0] >= 30 * MINUTE_MS {
                    s.session_ms += w[0] - start;
                    s.sessions += 1;
                    start = w[1];
                }
            }
            s.session_ms += ts[ts.len() - 1] - start;
        }
        stats
    }

    #[test]
    fn archetypes_behave_clearly_differently() {
        let out = run(&spec(1_000, 500, 100_000));
        let stats = archetype_stats(&out);
        let [buyer, browser, researcher, disengaged] =
            ["buyer", "browser", "researcher", "disengaged"].map(|a| &stats[a]);
        // Buyers buy; browsers hardly do; the disengaged don't.
        assert!(buyer.purchase_share() > 5.0 * browser.purchase_share());
        assert!(buyer.cart_share() > 5.0 * browser.cart_share());
        assert!(researcher.purchase_share() > browser.purchase_share());
        assert!(buyer.purchase_share() > 2.0 * researcher.purchase_share());
        // Researchers dwell longest and scroll deepest, and read content.
        assert!(researcher.mean_dwell() > 2.0 * buyer.mean_dwell());
        assert!(buyer.mean_dwell() > 2.0 * browser.mean_dwell());
        assert!(researcher.mean_scroll() > 2.0 * browser.mean_scroll());
        assert!(researcher.article_share() > 3.0 * buyer.article_share());
        // Disengaged users: few, short, bouncing sessions.
        assert!(disengaged.events_per_session() < 3.0);
        assert!(disengaged.session_secs() < 15.0);
        assert!(disengaged.mean_dwell() < 10_000.0);
        assert!(disengaged.events_per_user() < 0.25 * browser.events_per_user());
        assert!(browser.events_per_session() > buyer.events_per_session());
        assert!(researcher.session_secs() > 1.5 * buyer.session_secs());
    }

    /// `cargo test --release -- --ignored --nocapture print_archetype_stats`
    #[test]
    #[ignore]
    fn print_archetype_stats() {
        let out = run(&spec(4_000, 2_000, 200_000));
        let stats = archetype_stats(&out);
        println!(
            "{:<11} {:>6} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "archetype",
            "users",
            "ev/user",
            "ev/sess",
            "sess_s",
            "purchase",
            "cart",
            "dwell_s",
            "scroll",
            "article"
        );
        for a in ["buyer", "browser", "researcher", "disengaged"] {
            let s = &stats[a];
            println!(
                "{a:<11} {:>6} {:>9.1} {:>9.1} {:>9.0} {:>8.2}% {:>8.2}% {:>9.1} {:>9.2} {:>8.0}%",
                s.users,
                s.events_per_user(),
                s.events_per_session(),
                s.session_secs(),
                100.0 * s.purchase_share(),
                100.0 * s.cart_share(),
                s.mean_dwell() / 1000.0,
                s.mean_scroll(),
                100.0 * s.article_share()
            );
        }
    }

    #[test]
    fn deterministic_maths_is_accurate() {
        for x in [1e-12, 0.001, 0.5, 1.0, 1.5, 2.0, 10.0, 12345.678] {
            assert!(
                (det_ln(x) - x.ln()).abs() <= 1e-14 * x.ln().abs().max(1.0),
                "{x}"
            );
        }
        for x in [-30.0, -1.0, -1e-3, 0.0, 0.3, 1.0, 5.0, 30.0] {
            assert!((det_exp(x) / x.exp() - 1.0).abs() < 1e-14, "{x}");
        }
        assert_eq!(apportion(10, &[1.0, 1.0, 1.0]).iter().sum::<u64>(), 10);
        assert_eq!(apportion(0, &[1.0, 2.0]), vec![0, 0]);
        assert_eq!(apportion(5, &[0.0, 0.0]), vec![0, 5]);
    }
}
