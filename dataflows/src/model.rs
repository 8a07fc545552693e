//! The model types every view shares: ids, events, catalog items and fixed-point numbers.
//!
//! Everything here is `Ord` and serde-serializable, because differential dataflow sorts and
//! consolidates records and timely ships them between processes. Floats are neither `Ord` nor
//! associative, so scores, scroll depth and money are fixed-point integers (DESIGN.md §4).

use crate::name::Name;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Event time and timely time alike: milliseconds since the Unix epoch.
pub type Millis = u64;

macro_rules! string_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        ///
        /// Ids up to 15 bytes are stored inline and compare as two words (see [`Name`]).
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub Name);

        impl $name {
            pub fn new(id: &str) -> Self {
                $name(Name::new(id))
            }
            pub fn as_str(&self) -> &str {
                self.0.as_str()
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

string_id!(
    /// A stable user id, as the client sends it.
    UserId
);
string_id!(
    /// A content or product id.
    ItemId
);
string_id!(
    /// A session id: the client's, or one derived from an inactivity gap.
    SessionId
);
string_id!(
    /// A catalog category.
    Category
);

/// The event types DESIGN.md §2 names, plus `Other` for any type the engine does not know.
///
/// Unknown types are kept (they may carry a configured weight); their name travels
/// in [`Event::custom_type`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum EventKind {
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
    Impression,
    Exit,
    Other,
}

impl EventKind {
    /// Every known kind with its wire name, in declaration order.
    pub const KNOWN: [(EventKind, &'static str); 13] = [
        (EventKind::PageView, "page_view"),
        (EventKind::Click, "click"),
        (EventKind::Scroll, "scroll"),
        (EventKind::VideoPlay, "video_play"),
        (EventKind::FormSubmit, "form_submit"),
        (EventKind::AddToCart, "add_to_cart"),
        (EventKind::Wishlist, "wishlist"),
        (EventKind::Bookmark, "bookmark"),
        (EventKind::Share, "share"),
        (EventKind::Comment, "comment"),
        (EventKind::Purchase, "purchase"),
        (EventKind::Impression, "impression"),
        (EventKind::Exit, "exit"),
    ];

    /// The kind for a wire name; `Other` for names the engine does not know.
    pub fn from_name(name: &str) -> EventKind {
        EventKind::KNOWN
            .iter()
            .find(|(_, known)| *known == name)
            .map_or(EventKind::Other, |(kind, _)| *kind)
    }

    pub fn name(self) -> &'static str {
        EventKind::KNOWN
            .iter()
            .find(|(kind, _)| *kind == self)
            .map_or("other", |(_, name)| name)
    }

    /// Seed 1b: adding to cart and purchasing are the high-intent actions.
    pub fn is_high_intent(self) -> bool {
        matches!(self, EventKind::AddToCart | EventKind::Purchase)
    }
}

/// Scroll depth in ten-thousandths: 0 ..= 10_000 stands for 0.0 ..= 1.0.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct ScrollDepth(pub u16);

impl ScrollDepth {
    pub const SCALE: f64 = 10_000.0;

    /// From a fraction in 0..=1 (the caller validates the range).
    pub fn from_fraction(fraction: f64) -> Self {
        ScrollDepth((fraction * Self::SCALE).round() as u16)
    }

    pub fn as_fraction(self) -> f64 {
        f64::from(self.0) / Self::SCALE
    }
}

/// An intent score or weight in thousandths, exact and associative inside the dataflow.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Score(pub i64);

impl Score {
    pub const SCALE: f64 = 1_000.0;

    pub fn from_f64(value: f64) -> Self {
        Score((value * Self::SCALE).round() as i64)
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE
    }
}

/// A money amount in cents (order values).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
pub struct Cents(pub i64);

impl Cents {
    pub fn from_f64(value: f64) -> Self {
        Cents((value * 100.0).round() as i64)
    }

    pub fn as_f64(self) -> f64 {
        self.0 as f64 / 100.0
    }
}

/// One validated behaviour event (DESIGN.md §2). Fields the views do not use (`url`,
/// `device`) are not carried, to keep records small.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Event {
    pub user: UserId,
    pub ts: Millis,
    pub kind: EventKind,
    /// The type's name when `kind` is `Other`.
    pub custom_type: Option<Name>,
    pub item: Option<ItemId>,
    pub session: Option<SessionId>,
    pub page: Option<Name>,
    pub dwell_ms: Option<u64>,
    pub scroll: Option<ScrollDepth>,
    pub value: Option<Cents>,
    pub rec: Option<Name>,
    pub variant: Option<Name>,
    /// The items an `impression` showed (besides `item`); empty for other events (the
    /// parser drops theirs).
    pub items: Vec<ItemId>,
}

impl Event {
    /// A minimal event; tests and generators fill in the optional fields they need.
    pub fn new(user: &str, kind: EventKind, ts: Millis) -> Self {
        Event {
            user: UserId::new(user),
            ts,
            kind,
            custom_type: None,
            item: None,
            session: None,
            page: None,
            dwell_ms: None,
            scroll: None,
            value: None,
            rec: None,
            variant: None,
            items: Vec::new(),
        }
    }
}

/// The kind of a catalog item (DESIGN.md §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemKind {
    Product,
    Article,
    Guide,
    Offer,
}

impl ItemKind {
    pub const ALL: [ItemKind; 4] = [
        ItemKind::Product,
        ItemKind::Article,
        ItemKind::Guide,
        ItemKind::Offer,
    ];

    pub fn name(self) -> &'static str {
        match self {
            ItemKind::Product => "product",
            ItemKind::Article => "article",
            ItemKind::Guide => "guide",
            ItemKind::Offer => "offer",
        }
    }

    pub fn from_name(name: &str) -> Option<ItemKind> {
        ItemKind::ALL.into_iter().find(|kind| kind.name() == name)
    }
}

/// One catalog entry.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CatalogItem {
    pub item: ItemId,
    pub category: Category,
    pub kind: ItemKind,
    pub price: Cents,
    pub premium: bool,
}
