//! One JSON line into a validated [`Event`] or [`CatalogItem`], or a reason a person can act
//! on (DESIGN.md §7).
//!
//! The event parser walks the JSON object field by field instead of deriving, so that a
//! wrong type names the field it is in, and so that ids are copied straight into inline
//! strings without building an intermediate `serde_json::Value`. Lines in the usual flat
//! shape skip serde altogether ([`flat`]), with the same results.

use intentflow_dataflows::model::{
    CatalogItem, Category, Cents, Event, EventKind, ItemId, ItemKind, Millis, ScrollDepth,
    SessionId, UserId,
};
use intentflow_dataflows::name::Name;
use serde::Deserialize;
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, Visitor};
use std::fmt;

mod flat;

/// Parses one event line (already checked to be valid UTF-8).
pub fn parse_event(line: &str) -> Result<Event, String> {
    let raw = match flat::scan(line) {
        Some(raw) => raw,
        None => serde_json::from_str(line).map_err(describe_json_error)?,
    };
    raw.validate()
}

/// Parses one catalog line.
pub fn parse_catalog_item(line: &str) -> Result<CatalogItem, String> {
    #[derive(Deserialize)]
    struct RawItem {
        item: String,
        category: String,
        kind: ItemKind,
        // Absent or null: no price, not premium.
        #[serde(default)]
        price: Option<f64>,
        #[serde(default)]
        premium: Option<bool>,
    }
    let raw: RawItem = serde_json::from_str(line).map_err(describe_json_error)?;
    if raw.item.is_empty() {
        return Err("empty \"item\"".into());
    }
    if raw.category.is_empty() {
        return Err("empty \"category\"".into());
    }
    let price = raw.price.unwrap_or(0.0);
    if !(price.is_finite() && price >= 0.0) {
        return Err(format!(
            "\"price\" must be a non-negative number, got {price}"
        ));
    }
    Ok(CatalogItem {
        item: ItemId::new(&raw.item),
        category: Category::new(&raw.category),
        kind: raw.kind,
        price: Cents::from_f64(price),
        premium: raw.premium.unwrap_or(false),
    })
}

/// serde_json appends "at line 1 column N"; the caller already reports the input line.
fn describe_json_error(error: serde_json::Error) -> String {
    let message = error.to_string();
    let message = match message.rfind(" at line ") {
        Some(at) => message[..at].to_string(),
        None => message,
    };
    if error.is_syntax() || error.is_eof() {
        format!("malformed JSON at column {}: {message}", error.column())
    } else {
        message
    }
}

/// The event as it arrives, every field optional until validated.
#[derive(Default, Debug, PartialEq)]
struct RawEvent {
    user: Option<Name>,
    kind: Option<Name>,
    ts: Option<RawTimestamp>,
    item: Option<Name>,
    session: Option<Name>,
    page: Option<Name>,
    dwell_ms: Option<f64>,
    scroll: Option<f64>,
    value: Option<f64>,
    rec: Option<Name>,
    variant: Option<Name>,
    items: Option<Vec<Name>>,
}

#[derive(Debug, PartialEq)]
enum RawTimestamp {
    Millis(f64),
    Text(String),
}

impl RawEvent {
    fn validate(self) -> Result<Event, String> {
        let user = required_text(self.user, "user")?;
        let type_name = required_text(self.kind, "type")?;
        let ts = match self.ts {
            None => return Err("missing field \"ts\"".into()),
            Some(raw) => parse_timestamp(raw)?,
        };
        let kind = EventKind::from_name(&type_name);
        let dwell_ms = match self.dwell_ms {
            Some(ms) if !(ms >= 0.0 && ms.fract() == 0.0 && ms <= u64::MAX as f64) => {
                return Err(format!(
                    "\"dwell_ms\" must be a non-negative integer, got {ms}"
                ));
            }
            dwell => dwell.map(|ms| ms as u64),
        };
        let scroll = match self.scroll {
            Some(depth) if !(0.0..=1.0).contains(&depth) => {
                return Err(format!("\"scroll\" must be between 0 and 1, got {depth}"));
            }
            scroll => scroll.map(ScrollDepth::from_fraction),
        };
        let value = match self.value {
            Some(v) if !v.is_finite() => return Err("\"value\" must be a finite number".into()),
            value => value.map(Cents::from_f64),
        };
        Ok(Event {
            user: UserId(user),
            ts,
            kind,
            custom_type: (kind == EventKind::Other).then_some(type_name),
            item: non_empty(self.item).map(ItemId),
            session: non_empty(self.session).map(SessionId),
            page: non_empty(self.page),
            dwell_ms,
            scroll,
            value,
            rec: non_empty(self.rec),
            variant: non_empty(self.variant),
            // Only impressions show lists; other events do not carry theirs through every
            // view.
            items: self
                .items
                .filter(|_| kind == EventKind::Impression)
                .unwrap_or_default()
                .into_iter()
                .filter(|item| !item.is_empty())
                .map(ItemId)
                .collect(),
        })
    }
}

fn required_text(text: Option<Name>, field: &str) -> Result<Name, String> {
    match text {
        None => Err(format!("missing field \"{field}\"")),
        Some(text) if text.is_empty() => Err(format!("empty \"{field}\"")),
        Some(text) => Ok(text),
    }
}

fn non_empty(text: Option<Name>) -> Option<Name> {
    text.filter(|text| !text.is_empty())
}

fn parse_timestamp(raw: RawTimestamp) -> Result<Millis, String> {
    match raw {
        RawTimestamp::Millis(ms) if ms >= 0.0 && ms.fract() == 0.0 && ms < 1e16 => Ok(ms as Millis),
        RawTimestamp::Millis(ms) => Err(format!(
            "\"ts\" must be non-negative integer milliseconds or an RFC 3339 string, got {ms}"
        )),
        RawTimestamp::Text(text) => chrono::DateTime::parse_from_rfc3339(&text)
            .ok()
            .and_then(|time| Millis::try_from(time.timestamp_millis()).ok())
            .ok_or_else(|| format!("unparseable \"ts\" {text:?}: expected RFC 3339 or integer ms")),
    }
}

impl<'de> Deserialize<'de> for RawEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_map(RawEventVisitor)
    }
}

struct RawEventVisitor;

/// The `items` of an impression. Its own visitor so that a wrong element type gets a clear
/// message while a syntax error inside the array is still reported as malformed JSON.
struct ItemList(Vec<Name>);

impl<'de> Deserialize<'de> for ItemList {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ItemListVisitor;
        impl<'de> Visitor<'de> for ItemListVisitor {
            type Value = ItemList;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("\"items\" as an array of strings")
            }
            fn visit_seq<S: de::SeqAccess<'de>>(self, mut seq: S) -> Result<ItemList, S::Error> {
                let mut items = Vec::new();
                while let Some(element) = seq.next_element::<serde_json::Value>()? {
                    match element {
                        serde_json::Value::String(item) => items.push(Name::from(item)),
                        _ => {
                            return Err(de::Error::custom("\"items\" must be an array of strings"));
                        }
                    }
                }
                Ok(ItemList(items))
            }
        }
        deserializer.deserialize_seq(ItemListVisitor)
    }
}

/// Reads the next value of `field`, naming the field if its type is wrong.
fn field_value<'de, A, T>(map: &mut A, field: &str) -> Result<Option<T>, A::Error>
where
    A: MapAccess<'de>,
    T: Deserialize<'de>,
{
    map.next_value::<Option<T>>()
        .map_err(|error| de::Error::custom(format!("field \"{field}\": {error}")))
}

impl<'de> Visitor<'de> for RawEventVisitor {
    type Value = RawEvent;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEvent, A::Error> {
        let mut raw = RawEvent::default();
        while let Some(field) = map.next_key::<Field>()? {
            match field {
                Field::User => raw.user = field_value(&mut map, "user")?,
                Field::Type => raw.kind = field_value(&mut map, "type")?,
                Field::Ts => raw.ts = field_value(&mut map, "ts")?,
                Field::Item => raw.item = field_value(&mut map, "item")?,
                Field::Session => raw.session = field_value(&mut map, "session")?,
                Field::Page => raw.page = field_value(&mut map, "page")?,
                Field::DwellMs => raw.dwell_ms = field_value(&mut map, "dwell_ms")?,
                Field::Scroll => raw.scroll = field_value(&mut map, "scroll")?,
                Field::Value => raw.value = field_value(&mut map, "value")?,
                Field::Rec => raw.rec = field_value(&mut map, "rec")?,
                Field::Variant => raw.variant = field_value(&mut map, "variant")?,
                Field::Items => {
                    raw.items = map.next_value::<Option<ItemList>>()?.map(|list| list.0)
                }
                Field::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(raw)
    }
}

/// An event's key, matched where it lies in the line (no string is built for it).
enum Field {
    User,
    Type,
    Ts,
    Item,
    Session,
    Page,
    DwellMs,
    Scroll,
    Value,
    Rec,
    Variant,
    Items,
    /// A key the engine does not read (`device`, a client's own fields): skipped.
    Other,
}

impl Field {
    /// The field a key names; both parsers read keys through this one list.
    fn of(key: &str) -> Field {
        match key {
            "user" => Field::User,
            "type" => Field::Type,
            "ts" => Field::Ts,
            "item" => Field::Item,
            "session" => Field::Session,
            "page" => Field::Page,
            "dwell_ms" => Field::DwellMs,
            "scroll" => Field::Scroll,
            "value" => Field::Value,
            "rec" => Field::Rec,
            "variant" => Field::Variant,
            "items" => Field::Items,
            _ => Field::Other,
        }
    }
}

impl<'de> Deserialize<'de> for Field {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldVisitor;
        impl Visitor<'_> for FieldVisitor {
            type Value = Field;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a field name")
            }
            fn visit_str<E>(self, key: &str) -> Result<Field, E> {
                Ok(Field::of(key))
            }
        }
        deserializer.deserialize_identifier(FieldVisitor)
    }
}

impl<'de> Deserialize<'de> for RawTimestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TimestampVisitor;
        impl Visitor<'_> for TimestampVisitor {
            type Value = RawTimestamp;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("integer milliseconds or an RFC 3339 string")
            }
            fn visit_u64<E>(self, v: u64) -> Result<RawTimestamp, E> {
                Ok(RawTimestamp::Millis(v as f64))
            }
            fn visit_i64<E>(self, v: i64) -> Result<RawTimestamp, E> {
                Ok(RawTimestamp::Millis(v as f64))
            }
            fn visit_f64<E>(self, v: f64) -> Result<RawTimestamp, E> {
                Ok(RawTimestamp::Millis(v))
            }
            fn visit_str<E>(self, v: &str) -> Result<RawTimestamp, E> {
                Ok(RawTimestamp::Text(v.to_string()))
            }
        }
        deserializer.deserialize_any(TimestampVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_event_parses() {
        let event = parse_event(
            r#"{"user":"u1","type":"add_to_cart","ts":1000,"item":"p1","session":"s1","page":"product","dwell_ms":4000,"scroll":0.5,"value":9.99,"device":"mobile","extra":[1,2]}"#,
        )
        .unwrap();
        assert_eq!(event.user.as_str(), "u1");
        assert_eq!(event.kind, EventKind::AddToCart);
        assert_eq!(event.ts, 1000);
        assert_eq!(event.item.unwrap().as_str(), "p1");
        assert_eq!(event.scroll, Some(ScrollDepth(5000)));
        assert_eq!(event.value, Some(Cents(999)));
    }

    #[test]
    fn rfc3339_timestamp_parses() {
        let event =
            parse_event(r#"{"user":"u","type":"click","ts":"2026-01-01T00:00:01.250Z"}"#).unwrap();
        assert_eq!(event.ts, 1_767_225_601_250);
    }

    #[test]
    fn unknown_type_is_kept_with_its_name() {
        let event = parse_event(r#"{"user":"u","type":"hover","ts":5}"#).unwrap();
        assert_eq!(event.kind, EventKind::Other);
        assert_eq!(event.custom_type.as_deref(), Some("hover"));
    }

    #[test]
    fn impression_items_parse_without_empty_ids() {
        let event = parse_event(
            r#"{"user":"u","type":"impression","ts":1,"items":["p1","","p2"],"rec":"r"}"#,
        )
        .unwrap();
        let items: Vec<&str> = event.items.iter().map(|item| item.as_str()).collect();
        assert_eq!(items, ["p1", "p2"]);
        let none = parse_event(r#"{"user":"u","type":"impression","ts":1,"items":null}"#).unwrap();
        assert!(none.items.is_empty());
    }

    #[test]
    fn bad_events_say_why() {
        let cases = [
            (r#"{"type":"click","ts":1}"#, "missing field \"user\""),
            (r#"{"user":"","type":"click","ts":1}"#, "empty \"user\""),
            (r#"{"user":"u","type":"click"}"#, "missing field \"ts\""),
            (
                r#"{"user":5,"type":"click","ts":1}"#,
                "field \"user\": invalid type",
            ),
            (
                r#"{"user":"u","type":"click","ts":"yesterday"}"#,
                "unparseable \"ts\"",
            ),
            (
                r#"{"user":"u","type":"click","ts":-5}"#,
                "\"ts\" must be non-negative",
            ),
            (
                r#"{"user":"u","type":"click","ts":1,"scroll":1.5}"#,
                "\"scroll\" must be between 0 and 1",
            ),
            (
                r#"{"user":"u","type":"click","ts":1,"dwell_ms":-3}"#,
                "\"dwell_ms\" must be a non-negative integer",
            ),
            (
                r#"{"user":"u","type":"impression","ts":1,"items":"p1"}"#,
                "expected \"items\" as an array of strings",
            ),
            (
                r#"{"user":"u","type":"impression","ts":1,"items":["p1""#,
                "malformed JSON",
            ),
            (
                r#"{"user":"u","type":"impression","ts":1,"items":["p1",2]}"#,
                "\"items\" must be an array of strings",
            ),
            (r#"[1,2]"#, "expected a JSON object"),
            (r#"{"user":"u","#, "malformed JSON"),
        ];
        for (line, expected) in cases {
            let error = parse_event(line).unwrap_err();
            assert!(
                error.contains(expected),
                "{line}: got {error:?}, want {expected:?}"
            );
        }
    }
}
