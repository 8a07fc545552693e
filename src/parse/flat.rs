//! The fast path of the event parser: event lines as clients and `intentflow generate`
//! write them, read in one pass over the bytes.
//!
//! It accepts a subset of JSON: one flat object whose values are strings without escapes,
//! plain numbers, `true`, `false` or `null`, and, for `items`, an array of such strings.
//! On anything else (an escape, a nested value, an exponent, a negative number, a syntax
//! error) it returns `None` and the line goes to the general serde parser, which also
//! owns every error message. Where it accepts a line it yields exactly the [`RawEvent`]
//! the general parser would (a test checks this on mutated lines), so which path read a
//! line never shows.
//!
//! Why: serde_json's generic walk (a visitor call, an escape scan and a bounds check per
//! token) was over half the parse cost, and parsing is the one stage of the pipeline that
//! cannot be spread over workers.

use super::{Field, RawEvent, RawTimestamp};
use intentflow_dataflows::name::Name;

/// Reads `line` if it is in the accepted subset; `None` sends it to the general parser.
pub(super) fn scan(line: &str) -> Option<RawEvent> {
    let mut scanner = Scanner { text: line, at: 0 };
    let mut raw = RawEvent::default();
    scanner.skip_whitespace();
    scanner.expect(b'{')?;
    scanner.skip_whitespace();
    if !scanner.eat(b'}') {
        loop {
            let key = scanner.string()?;
            scanner.skip_whitespace();
            scanner.expect(b':')?;
            scanner.skip_whitespace();
            scanner.field(key, &mut raw)?;
            scanner.skip_whitespace();
            if scanner.eat(b'}') {
                break;
            }
            scanner.expect(b',')?;
            scanner.skip_whitespace();
        }
    }
    scanner.skip_whitespace();
    (scanner.at == line.len()).then_some(raw)
}

/// A value as the fast path reads it.
enum Value<'a> {
    Text(&'a str),
    /// A non-negative number without exponent, exactly as serde_json converts it.
    Number(f64),
    Bool,
    Null,
}

struct Scanner<'a> {
    text: &'a str,
    at: usize,
}

impl<'a> Scanner<'a> {
    fn peek(&self) -> Option<u8> {
        self.text.as_bytes().get(self.at).copied()
    }

    fn eat(&mut self, byte: u8) -> bool {
        let matched = self.peek() == Some(byte);
        self.at += usize::from(matched);
        matched
    }

    fn expect(&mut self, byte: u8) -> Option<()> {
        self.eat(byte).then_some(())
    }

    fn skip_whitespace(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t' | b'\n' | b'\r')) {
            self.at += 1;
        }
    }

    /// A string without escapes or control characters, as the slice between its quotes.
    fn string(&mut self) -> Option<&'a str> {
        self.expect(b'"')?;
        let start = self.at;
        let bytes = self.text.as_bytes();
        loop {
            match *bytes.get(self.at)? {
                b'"' => break,
                b'\\' | 0..=0x1f => return None,
                _ => self.at += 1,
            }
        }
        // Both ends sit next to an ASCII quote, so they are character boundaries.
        let text = &self.text[start..self.at];
        self.at += 1;
        Some(text)
    }

    /// `0`, or digits without a leading zero, then optionally `.` and digits; at most 15
    /// digits in all. Within those bounds the mantissa and the power of ten are exact in an
    /// f64, so one division is correctly rounded, as serde_json's own fast path is.
    fn number(&mut self) -> Option<f64> {
        const MAX_DIGITS: u32 = 15;
        let bytes = self.text.as_bytes();
        let mut mantissa: u64 = 0;
        let mut digits = 0u32;
        let mut take_digits = |at: &mut usize| {
            let start = *at;
            while let Some(digit @ b'0'..=b'9') = bytes.get(*at).copied() {
                mantissa = mantissa * 10 + u64::from(digit - b'0');
                digits += 1;
                *at += 1;
                if digits > MAX_DIGITS {
                    return None;
                }
            }
            Some(*at - start)
        };
        let leading_zero = self.peek() == Some(b'0');
        let whole = take_digits(&mut self.at)?;
        if whole == 0 || (leading_zero && whole > 1) {
            return None;
        }
        let mut fraction = 0;
        if self.eat(b'.') {
            fraction = take_digits(&mut self.at)?;
            if fraction == 0 {
                return None;
            }
        }
        if matches!(self.peek(), Some(b'e' | b'E')) {
            return None;
        }
        const POW10: [f64; MAX_DIGITS as usize + 1] = [
            1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15,
        ];
        Some(mantissa as f64 / POW10[fraction])
    }

    /// A literal: `true`, `false` or `null`.
    fn literal(&mut self, word: &str) -> Option<()> {
        let rest = self.text.as_bytes().get(self.at..)?;
        rest.starts_with(word.as_bytes())
            .then(|| self.at += word.len())
    }

    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => self.string().map(Value::Text),
            b'0'..=b'9' => self.number().map(Value::Number),
            b't' => self.literal("true").map(|()| Value::Bool),
            b'f' => self.literal("false").map(|()| Value::Bool),
            b'n' => self.literal("null").map(|()| Value::Null),
            _ => None,
        }
    }

    /// `items`: `null` or an array of strings.
    fn items(&mut self) -> Option<Option<Vec<Name>>> {
        if self.peek() == Some(b'n') {
            return self.literal("null").map(|()| None);
        }
        self.expect(b'[')?;
        let mut items = Vec::new();
        self.skip_whitespace();
        if self.eat(b']') {
            return Some(Some(items));
        }
        loop {
            items.push(Name::new(self.string()?));
            self.skip_whitespace();
            if self.eat(b']') {
                return Some(Some(items));
            }
            self.expect(b',')?;
            self.skip_whitespace();
        }
    }

    /// Reads the value of `key` into `raw`; `None` where only the general parser can say
    /// what it is (or what is wrong with it).
    fn field(&mut self, key: &str, raw: &mut RawEvent) -> Option<()> {
        let text = |value| match value {
            Value::Text(text) => Some(Some(Name::new(text))),
            Value::Null => Some(None),
            Value::Number(_) | Value::Bool => None,
        };
        let number = |value| match value {
            Value::Number(number) => Some(Some(number)),
            Value::Null => Some(None),
            Value::Text(_) | Value::Bool => None,
        };
        match Field::of(key) {
            Field::User => raw.user = text(self.value()?)?,
            Field::Type => raw.kind = text(self.value()?)?,
            Field::Item => raw.item = text(self.value()?)?,
            Field::Session => raw.session = text(self.value()?)?,
            Field::Page => raw.page = text(self.value()?)?,
            Field::Rec => raw.rec = text(self.value()?)?,
            Field::Variant => raw.variant = text(self.value()?)?,
            Field::DwellMs => raw.dwell_ms = number(self.value()?)?,
            Field::Scroll => raw.scroll = number(self.value()?)?,
            Field::Value => raw.value = number(self.value()?)?,
            Field::Ts => {
                raw.ts = match self.value()? {
                    Value::Number(ms) => Some(RawTimestamp::Millis(ms)),
                    Value::Text(text) => Some(RawTimestamp::Text(text.to_string())),
                    Value::Null => None,
                    Value::Bool => return None,
                }
            }
            Field::Items => raw.items = self.items()?,
            Field::Other => {
                self.value()?;
            }
        }
        Some(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{RngExt, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// The general parser's reading of a line, for comparison.
    fn general(line: &str) -> Option<RawEvent> {
        serde_json::from_str(line).ok()
    }

    /// Lines near the edges of the accepted subset, each in and out of it.
    const EDGES: &[&str] = &[
        r#"{"user":"u1","type":"click","ts":1000,"item":"p1"}"#,
        r#" { "user" : "u1" ,	"type":"click",
"ts":1000 } "#,
        r#"{}"#,
        r#"{"user":null,"type":"click","ts":null,"items":null}"#,
        r#"{"user":"u","type":"impression","ts":1,"items":["p1","","p2"]}"#,
        r#"{"user":"u","type":"impression","ts":1,"items":[ ]}"#,
        r#"{"user":"u","type":"impression","ts":1,"items":["p1",2]}"#,
        r#"{"user":"u","type":"impression","ts":1,"items":"p1"}"#,
        r#"{"user":"u","type":"click","ts":"2026-01-01T00:00:01.250Z"}"#,
        r#"{"user":"u","type":"click","ts":1,"scroll":0.41,"value":9.99,"dwell_ms":0}"#,
        r#"{"user":"u","type":"click","ts":1,"value":123456789012345}"#,
        r#"{"user":"u","type":"click","ts":1,"value":1234567890123456}"#,
        r#"{"user":"u","type":"click","ts":1,"value":0.000000000000001}"#,
        r#"{"user":"u","type":"click","ts":1,"value":1e3}"#,
        r#"{"user":"u","type":"click","ts":1,"value":-3}"#,
        r#"{"user":"u","type":"click","ts":1,"value":-0}"#,
        r#"{"user":"u","type":"click","ts":01}"#,
        r#"{"user":"u","type":"click","ts":1.}"#,
        r#"{"user":"u","type":"click","ts":.5}"#,
        r#"{"user":"u","type":"click","ts":true}"#,
        r#"{"user":5,"type":"click","ts":1}"#,
        r#"{"user":"a\"b","type":"click","ts":1}"#,
        r#"{"user":"é✓","type":"click","ts":1,"page":"ü"}"#,
        r#"{"user":"u","type":"click","ts":1,"extra":[1,2],"more":{"a":1}}"#,
        r#"{"user":"u","type":"click","ts":1,"flag":true,"other":false,"n":null,"x":"y","k":12.5}"#,
        r#"{"user":"u","user":"v","type":"click","ts":1,"ts":2}"#,
        r#"{"user":"u","type":"click","ts":1}x"#,
        r#"{"user":"u","type":"click","ts":1,}"#,
        r#"{"user":"u","type":"click","ts":1"#,
        r#"{"user":"u" "type":"click"}"#,
        r#"[1,2]"#,
        "",
    ];

    /// Where the fast path accepts a line, it must read what the general parser reads.
    fn check(line: &str) -> bool {
        match scan(line) {
            Some(fast) => {
                assert_eq!(Some(fast), general(line), "{line:?}");
                true
            }
            None => false,
        }
    }

    #[test]
    fn agrees_with_the_general_parser_on_edge_cases() {
        for line in EDGES {
            check(line);
        }
        assert!(check(EDGES[0]) && check(EDGES[1]) && check(EDGES[9]));
        assert!(
            !check(r#"{"user":"a\"b","type":"click","ts":1}"#),
            "escapes go to serde"
        );
    }

    #[test]
    fn reads_every_bundled_example_line() {
        let lines = include_str!("../../examples/events.jsonl").lines();
        for line in lines {
            assert!(check(line), "the fast path should take {line:?}");
        }
    }

    /// Random edits of real lines: every line the fast path takes, it reads as serde does.
    #[test]
    fn agrees_with_the_general_parser_on_mutated_lines() {
        const PIECES: &[&str] = &[
            "\"", "\\", ",", ":", "{", "}", "[", "]", " ", "\t", "\n", "-", ".", "e", "E", "0",
            "1", "9", "n", "t", "f", "null", "true", "\u{1}", "é", "\"x\"", "\"ts\":", "[\"p\"]",
        ];
        let lines: Vec<&str> = include_str!("../../examples/events.jsonl")
            .lines()
            .chain(EDGES.iter().copied())
            .collect();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        let (mut taken, mut tried) = (0, 0);
        for _ in 0..40_000 {
            let mut line = lines[rng.random_range(0..lines.len())].to_string();
            for _ in 0..rng.random_range(1..4) {
                let at = rng.random_range(0..=line.len());
                if !line.is_char_boundary(at) {
                    continue;
                }
                match rng.random_range(0..3) {
                    0 => line.insert_str(at, PIECES[rng.random_range(0..PIECES.len())]),
                    1 => {
                        let end = (at + rng.random_range(1..4)).min(line.len());
                        if line.is_char_boundary(end) {
                            line.replace_range(at..end, "");
                        }
                    }
                    _ => {
                        let end = (at + 1).min(line.len());
                        if line.is_char_boundary(end) {
                            let piece = PIECES[rng.random_range(0..PIECES.len())];
                            line.replace_range(at..end, piece);
                        }
                    }
                }
            }
            tried += 1;
            taken += usize::from(check(&line));
        }
        // The edits must leave both readable and unreadable lines, or the test shows little.
        assert!(
            taken > tried / 10 && taken < tried * 9 / 10,
            "{taken} of {tried}"
        );
    }
}
