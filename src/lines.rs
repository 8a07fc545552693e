//! Newline-delimited input: splits a byte stream into numbered lines, in batches, without
//! ever buffering more than `max_line_bytes` of one line (DESIGN.md §7).

use std::io::{self, BufRead, BufReader, Read};

/// One input line, or the fact that it was too long to keep.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LineSlot {
    /// `batch.text[start..end]`, without the newline.
    Text {
        number: u64,
        start: usize,
        end: usize,
    },
    /// The line exceeded the limit; only its length was counted.
    TooLong { number: u64, bytes: u64 },
}

/// Consecutive lines of one origin, sharing one buffer.
#[derive(Debug, Default)]
pub struct LineBatch {
    pub text: Vec<u8>,
    pub slots: Vec<LineSlot>,
}

impl LineBatch {
    pub fn bytes(&self, start: usize, end: usize) -> &[u8] {
        &self.text[start..end]
    }
}

/// Lines per batch: enough to amortise channel hand-offs, small enough for low latency.
const BATCH_LINES: usize = 4096;

/// Reads lines from `reader` and hands them to `deliver` in batches. A batch is delivered
/// when it is full or when no more input is buffered (the next read could block), so a
/// trickle of events is forwarded at once. Returns when the input ends or `deliver` says
/// stop by returning false. Returns the number of lines read.
pub fn read_lines<R: Read>(
    mut reader: BufReader<R>,
    max_line_bytes: usize,
    mut deliver: impl FnMut(LineBatch) -> bool,
) -> io::Result<u64> {
    let mut batch = LineBatch::default();
    let mut number = 0u64;
    // State of the line being read: where it starts in `batch.text`, its length so far,
    // and whether it already overflowed (then its bytes are dropped, only counted).
    let mut line_start = 0usize;
    let mut line_len = 0u64;
    let mut overflowed = false;
    loop {
        let chunk = match reader.fill_buf() {
            Ok(chunk) => chunk,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
            Err(error) => return Err(error),
        };
        if chunk.is_empty() {
            // End of input: a last line without a newline still counts.
            if line_len > 0 {
                number += 1;
                finish_line(&mut batch, number, line_start, line_len, overflowed);
            }
            if !batch.slots.is_empty() {
                deliver(batch);
            }
            return Ok(number);
        }
        let consumed = match chunk.iter().position(|&b| b == b'\n') {
            Some(newline) => {
                append(
                    &mut batch,
                    &chunk[..newline],
                    &mut line_len,
                    &mut overflowed,
                    max_line_bytes,
                );
                number += 1;
                finish_line(&mut batch, number, line_start, line_len, overflowed);
                line_start = batch.text.len();
                line_len = 0;
                overflowed = false;
                newline + 1
            }
            None => {
                append(
                    &mut batch,
                    chunk,
                    &mut line_len,
                    &mut overflowed,
                    max_line_bytes,
                );
                chunk.len()
            }
        };
        reader.consume(consumed);
        let drained = reader.buffer().is_empty();
        if batch.slots.len() >= BATCH_LINES || (drained && !batch.slots.is_empty()) {
            // Carry the partial line over into the next batch.
            let mut next = LineBatch::default();
            next.text.extend_from_slice(&batch.text[line_start..]);
            batch.text.truncate(line_start);
            line_start = 0;
            if !deliver(std::mem::replace(&mut batch, next)) {
                return Ok(number);
            }
        }
    }
}

fn append(
    batch: &mut LineBatch,
    bytes: &[u8],
    line_len: &mut u64,
    overflowed: &mut bool,
    max: usize,
) {
    *line_len += bytes.len() as u64;
    if *overflowed {
        return;
    }
    if *line_len > max as u64 {
        // Drop what we kept of this line; from here on it is only counted.
        let kept = *line_len as usize - bytes.len();
        let new_len = batch.text.len() - kept;
        batch.text.truncate(new_len);
        *overflowed = true;
    } else {
        batch.text.extend_from_slice(bytes);
    }
}

fn finish_line(batch: &mut LineBatch, number: u64, start: usize, len: u64, overflowed: bool) {
    if overflowed {
        batch.slots.push(LineSlot::TooLong { number, bytes: len });
        return;
    }
    let mut end = batch.text.len();
    // Tolerate CRLF line endings.
    if end > start && batch.text[end - 1] == b'\r' {
        end -= 1;
    }
    batch.slots.push(LineSlot::Text { number, start, end });
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufReader;

    fn collect(input: &[u8], max: usize, capacity: usize) -> Vec<(u64, Result<Vec<u8>, u64>)> {
        let mut lines = Vec::new();
        read_lines(BufReader::with_capacity(capacity, input), max, |batch| {
            for slot in &batch.slots {
                match slot {
                    LineSlot::Text { number, start, end } => {
                        lines.push((*number, Ok(batch.bytes(*start, *end).to_vec())))
                    }
                    LineSlot::TooLong { number, bytes } => lines.push((*number, Err(*bytes))),
                }
            }
            true
        })
        .unwrap();
        lines
    }

    #[test]
    fn splits_lines_across_small_reads() {
        let lines = collect(b"ab\r\ncde\n\nf", 100, 2);
        let expected: Vec<(u64, Result<Vec<u8>, u64>)> = vec![
            (1, Ok(b"ab".to_vec())),
            (2, Ok(b"cde".to_vec())),
            (3, Ok(b"".to_vec())),
            (4, Ok(b"f".to_vec())),
        ];
        assert_eq!(lines, expected);
    }

    #[test]
    fn over_long_line_is_counted_not_kept() {
        let mut input = b"ok\n".to_vec();
        input.extend(std::iter::repeat_n(b'x', 5000));
        input.extend(b"\nafter\n");
        let lines = collect(&input, 1000, 64);
        assert_eq!(lines[0], (1, Ok(b"ok".to_vec())));
        assert_eq!(lines[1], (2, Err(5000)));
        assert_eq!(lines[2], (3, Ok(b"after".to_vec())));
    }
}
