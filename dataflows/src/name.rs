//! [`Name`]: the string type of every id and label inside the dataflow.
//!
//! Differential dataflow sorts, merges and seeks records all the time, and nearly every
//! record is keyed by ids. With `CompactString` ids, comparing them (a branch on the
//! representation, then a call to `memcmp`) and the string moves around it were about a
//! fifth of the pipeline's cycles. A `Name` of up to [`INLINE`] bytes, which covers the ids
//! and labels real traffic mostly has, is stored inline, zero-padded, with its length in
//! the last byte: compared as two big-endian words, that is exactly the order of the bytes,
//! i.e. `str`'s order. Longer names are shared on the heap (a clone is a reference count)
//! and compare as `str`.
//!
//! A `Name` is 16 bytes, as is an `Option<Name>`: the length byte only takes the values
//! 0..=15, and the heap form is one thin pointer (to a shared `Box<str>`), so the enum
//! keeps its tag in the length byte's other values. Ids are in nearly every record the
//! engine keeps; at 24 bytes (a fat pointer beside the inline bytes needs a tag of its
//! own) they were a third bigger.
//!
//! Order, equality, hashing and serde are those of `str`, so swapping `Name` for a string
//! type changes no output.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::cmp::Ordering;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The longest name stored inline.
pub const INLINE: usize = 15;

/// An immutable string with a fast total order; see the module docs.
#[derive(Clone)]
pub struct Name(Repr);

#[derive(Clone)]
enum Repr {
    /// Only for `len <= INLINE`.
    Inline(Inline),
    /// Only for names longer than `INLINE`. A thin pointer: see the module docs.
    Heap(Arc<Box<str>>),
}

/// Bytes `0..len`, zeros up to `INLINE`, then the length.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(C)]
struct Inline {
    bytes: [u8; INLINE],
    len: Len,
}

impl Inline {
    #[inline]
    fn new(text: &[u8]) -> Self {
        Inline {
            bytes: pad(text),
            len: LENS[text.len()],
        }
    }

    #[inline]
    fn text(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }

    /// The bytes and the length as two big-endian words: their order is the bytes' order.
    #[inline]
    fn words(&self) -> (u64, u64) {
        let mut low = [0u8; 8];
        low[..INLINE - 8].copy_from_slice(&self.bytes[8..]);
        low[INLINE - 8] = self.len as u8;
        (
            u64::from_be_bytes(self.bytes[..8].try_into().expect("8 bytes")),
            u64::from_be_bytes(low),
        )
    }
}

/// An inline length: a type with 16 values, so the other 240 of its byte are free for the
/// enum's tag.
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum Len {
    L0,
    L1,
    L2,
    L3,
    L4,
    L5,
    L6,
    L7,
    L8,
    L9,
    L10,
    L11,
    L12,
    L13,
    L14,
    L15,
}

/// Each length's `Len`, by index.
const LENS: [Len; INLINE + 1] = {
    use Len::*;
    [
        L0, L1, L2, L3, L4, L5, L6, L7, L8, L9, L10, L11, L12, L13, L14, L15,
    ]
};

impl Name {
    pub fn new(text: &str) -> Self {
        let bytes = text.as_bytes();
        if bytes.len() <= INLINE {
            Name(Repr::Inline(Inline::new(bytes)))
        } else {
            Name(Repr::Heap(Arc::new(Box::from(text))))
        }
    }

    #[inline]
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Inline(inline) => {
                // SAFETY: the bytes were copied from a `&str` in `new` and never change;
                // a checked conversion here would re-validate on every hash and render.
                unsafe { std::str::from_utf8_unchecked(inline.text()) }
            }
            Repr::Heap(text) => text,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.as_str().is_empty()
    }
}

/// `bytes` (at most [`INLINE`]) zero-padded.
///
/// Two overlapping fixed-size copies instead of one of variable length: ids are parsed
/// into names on every event, and a variable `copy_from_slice` is a call to `memmove`.
#[inline]
fn pad(bytes: &[u8]) -> [u8; INLINE] {
    let len = bytes.len();
    debug_assert!(len <= INLINE);
    let mut inline = [0u8; INLINE];
    if len >= 8 {
        inline[..8].copy_from_slice(&bytes[..8]);
        inline[len - 8..len].copy_from_slice(&bytes[len - 8..]);
    } else if len >= 4 {
        inline[..4].copy_from_slice(&bytes[..4]);
        inline[len - 4..len].copy_from_slice(&bytes[len - 4..]);
    } else {
        for (slot, byte) in inline.iter_mut().zip(bytes) {
            *slot = *byte;
        }
    }
    inline
}

impl Ord for Name {
    #[inline]
    fn cmp(&self, other: &Self) -> Ordering {
        match (&self.0, &other.0) {
            (Repr::Inline(a), Repr::Inline(b)) => a.words().cmp(&b.words()),
            _ => self.as_str().cmp(other.as_str()),
        }
    }
}

impl PartialOrd for Name {
    #[inline]
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Name {
    #[inline]
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Repr::Inline(a), Repr::Inline(b)) => a == b,
            (Repr::Heap(a), Repr::Heap(b)) => a == b,
            // The representation follows the length, so these lengths differ.
            _ => false,
        }
    }
}

impl Eq for Name {}

impl PartialEq<str> for Name {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Name {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl Hash for Name {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As `str` hashes: workers own the same keys as with any string type.
        self.as_str().hash(state)
    }
}

impl std::ops::Deref for Name {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Name {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for Name {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<&str> for Name {
    fn from(text: &str) -> Self {
        Name::new(text)
    }
}

impl From<String> for Name {
    fn from(text: String) -> Self {
        Name::new(&text)
    }
}

impl Default for Name {
    fn default() -> Self {
        Name::new("")
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Serialize for Name {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NameVisitor;
        impl serde::de::Visitor<'_> for NameVisitor {
            type Value = Name;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Name, E> {
                Ok(Name::new(text))
            }
        }
        deserializer.deserialize_str(NameVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::hash_map::DefaultHasher;

    /// Lengths around the inline limit, NUL and high bytes, shared prefixes.
    fn samples() -> Vec<String> {
        let mut texts = vec![
            String::new(),
            "\0".into(),
            "\0\0".into(),
            "a".into(),
            "a\0".into(),
            "a\0b".into(),
            "ab".into(),
            "é".into(),
            "\u{10FFFF}".into(),
            "u2752".into(),
            "u27520".into(),
            "s2752-1".into(),
            "p17".into(),
        ];
        for len in [INLINE - 1, INLINE, INLINE + 1, INLINE + 2, 36] {
            for last in ['\0', 'a', 'z', 'é'] {
                let mut text = "x".repeat(len - 1);
                text.push(last);
                texts.push(text.clone());
                texts.push(format!("{text}\0"));
                texts.push(text[..text.len() - last.len_utf8()].to_string());
            }
        }
        texts
    }

    #[test]
    fn orders_equals_and_hashes_as_str() {
        let texts = samples();
        let hash = |value: &dyn Fn(&mut DefaultHasher)| {
            let mut hasher = DefaultHasher::new();
            value(&mut hasher);
            hasher.finish()
        };
        for a in &texts {
            let name_a = Name::new(a);
            assert_eq!(name_a.as_str(), a);
            assert_eq!(
                hash(&|h| name_a.hash(h)),
                hash(&|h| a.as_str().hash(h)),
                "{a:?}"
            );
            for b in &texts {
                let name_b = Name::new(b);
                assert_eq!(name_a.cmp(&name_b), a.cmp(b), "{a:?} vs {b:?}");
                assert_eq!(name_a == name_b, a == b, "{a:?} vs {b:?}");
            }
        }
    }

    #[test]
    fn pads_every_inline_length_with_zeros() {
        let text = "abcdefghijklmnopq";
        for len in 0..=INLINE {
            let mut expected = [0u8; INLINE];
            expected[..len].copy_from_slice(&text.as_bytes()[..len]);
            let inline = Inline::new(&text.as_bytes()[..len]);
            assert_eq!(inline.bytes, expected, "length {len}");
            assert_eq!(inline.len as usize, len, "length {len}");
            assert_eq!(Name::new(&text[..len]).as_str(), &text[..len]);
        }
    }

    #[test]
    fn round_trips_through_json() {
        for text in samples() {
            let name = Name::new(&text);
            let json = serde_json::to_string(&name).unwrap();
            assert_eq!(json, serde_json::to_string(&text).unwrap());
            let back: Name = serde_json::from_str(&json).unwrap();
            assert_eq!(back, name);
        }
    }

    #[test]
    fn is_two_words() {
        assert_eq!(std::mem::size_of::<Name>(), 16);
        assert_eq!(std::mem::size_of::<Option<Name>>(), 16);
    }
}
