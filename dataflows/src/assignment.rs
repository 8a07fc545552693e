//! Deterministic experiment assignment: a user's variant is a pure function of the
//! experiment's salt and the user id, so every worker, process and restart agrees without
//! shared state.
//!
//! The hash is GrowthBook's version 2 (`fnv1a32(str(fnv1a32(salt + user))) % 10000`), so a
//! client using a GrowthBook SDK with the same seed and weights shows the same variant the
//! engine counts (for ids GrowthBook hashes by UTF-16 code unit, i.e. ASCII ids, the bytes
//! agree). Variants own consecutive bucket ranges in config order, sized by weight. As in
//! GrowthBook and Optimizely without sticky bucketing:
//! - a user keeps their variant as long as the salt and the range boundaries stay;
//! - changing weights or adding a variant moves the boundaries, and exactly the users whose
//!   bucket lies between an old and a new boundary change variant (going from two equal
//!   variants to three moves half the users), mixing exposures of two strategies in their
//!   numbers; so change a running experiment by giving it a new salt (everyone is
//!   re-randomized, and the old numbers should be read as a finished phase).

/// Buckets per experiment: weights resolve to 0.01 %.
pub const BUCKETS: u32 = 10_000;

/// Weights that sum to 1 within this are taken as given, as GrowthBook takes them.
const SUM_TOLERANCE: f64 = 1e-9;

/// 32-bit FNV-1a, continuing from `hash` (start from [`FNV_OFFSET`]).
fn fnv1a32_from(hash: u32, bytes: &[u8]) -> u32 {
    bytes.iter().fold(hash, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

const FNV_OFFSET: u32 = 0x811c_9dc5;

/// 32-bit FNV-1a.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    fnv1a32_from(FNV_OFFSET, bytes)
}

/// The user's bucket in `0..BUCKETS` (GrowthBook's hash v2, scaled to buckets). Hashing the
/// decimal text of the first hash again removes the bias one pass leaves in the low digits.
/// It runs for every `recs` update, so it does not allocate.
pub fn bucket(salt: &str, user: &str) -> u32 {
    let first = fnv1a32_from(fnv1a32(salt.as_bytes()), user.as_bytes());
    let mut digits = [0u8; 10];
    let mut start = digits.len();
    let mut rest = first;
    loop {
        start -= 1;
        digits[start] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    fnv1a32(&digits[start..]) % BUCKETS
}

/// Each variant's share of users: weights summing to 1 as given (GrowthBook's `weights`),
/// other positive weights scaled to sum to 1 (1 and 3 become 0.25 and 0.75; a GrowthBook
/// client must then be given the shares).
pub fn shares(weights: &[f64]) -> Vec<f64> {
    let total: f64 = weights.iter().sum();
    if (total - 1.0).abs() <= SUM_TOLERANCE {
        weights.to_vec()
    } else {
        weights.iter().map(|weight| weight / total).collect()
    }
}

/// Each variant's range of the unit interval, as GrowthBook's `getBucketRanges` (full
/// coverage) lays them out: consecutive `[start, start + share)`, in float arithmetic.
pub fn ranges(shares: &[f64]) -> Vec<(f64, f64)> {
    let mut cumulative = 0.0;
    shares
        .iter()
        .map(|share| {
            let start = cumulative;
            cumulative += share;
            (start, start + share)
        })
        .collect()
}

/// The variant (index) whose range holds `bucket / BUCKETS`, compared in floats exactly as
/// GrowthBook's `chooseVariation` does (so boundaries that are not whole buckets fall the
/// same way); the last variant if float sums leave the point past every range.
pub fn variant_of(ranges: &[(f64, f64)], bucket: u32) -> usize {
    let point = f64::from(bucket) / f64::from(BUCKETS);
    ranges
        .iter()
        .position(|(start, end)| point >= *start && point < *end)
        .unwrap_or(ranges.len().saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Computed with GrowthBook's JS SDK (`@growthbook/growthbook` 1.x: `hash(seed, value,
    /// 2)`, `chooseVariation(n, getBucketRanges(...))`).
    const GROWTHBOOK: [(&str, &str, u32, usize, usize); 6] = [
        ("strategy", "u1", 5606, 1, 2),
        ("strategy", "u2", 5096, 1, 2),
        ("strategy", "user-42", 9653, 1, 2),
        ("s", "a", 1044, 0, 0),
        ("exp-2026", "u99999", 2554, 0, 1),
        ("", "a", 216, 0, 0),
    ];

    /// Buckets at range boundaries, with GrowthBook's variants for weights [1/3, 1/3, 1/3]
    /// and [0.1, 0.2, 0.7] (same SDK): boundaries that are not whole buckets.
    const GROWTHBOOK_EDGES: [(u32, usize, usize); 11] = [
        (0, 0, 0),
        (999, 0, 0),
        (1000, 0, 1),
        (2999, 0, 1),
        (3000, 0, 1),
        (3332, 0, 2),
        (3333, 0, 2),
        (3334, 1, 2),
        (6666, 1, 2),
        (6667, 2, 2),
        (9999, 2, 2),
    ];

    #[test]
    fn buckets_and_variants_match_growthbook() {
        let halves = ranges(&shares(&[0.5, 0.5]));
        let mixed = ranges(&shares(&[0.2, 0.3, 0.5]));
        for (salt, user, expected, of_two, of_three) in GROWTHBOOK {
            let b = bucket(salt, user);
            assert_eq!(b, expected, "bucket({salt:?}, {user:?})");
            assert_eq!(variant_of(&halves, b), of_two);
            assert_eq!(variant_of(&mixed, b), of_three);
        }
        let thirds = ranges(&shares(&[1.0 / 3.0, 1.0 / 3.0, 1.0 / 3.0]));
        let uneven = ranges(&shares(&[0.1, 0.2, 0.7]));
        for (b, of_thirds, of_uneven) in GROWTHBOOK_EDGES {
            assert_eq!(variant_of(&thirds, b), of_thirds, "bucket {b}");
            assert_eq!(variant_of(&uneven, b), of_uneven, "bucket {b}");
        }
        // Equal weights of any scale are the same thirds.
        assert_eq!(ranges(&shares(&[2.0, 2.0, 2.0])), thirds);
    }

    #[test]
    fn weights_scale_freely_and_splits_are_near_their_weights() {
        assert_eq!(shares(&[1.0, 3.0]), [0.25, 0.75]);
        let ranges = ranges(&shares(&[1.0, 3.0]));
        let users = 40_000;
        let second = (0..users)
            .filter(|u| variant_of(&ranges, bucket("split", &format!("u{u}"))) == 1)
            .count();
        let share = second as f64 / users as f64;
        assert!((share - 0.75).abs() < 0.01, "share {share}");
    }

    #[test]
    fn moved_boundaries_move_exactly_the_users_between_them() {
        let before = ranges(&shares(&[1.0, 1.0]));
        let after = ranges(&shares(&[1.0, 1.0, 1.0]));
        let users = 20_000;
        let mut moved = 0;
        for u in 0..users {
            let b = bucket("grow", &format!("user{u}"));
            let (old, new) = (variant_of(&before, b), variant_of(&after, b));
            let between = (3_334..5_000).contains(&b) || b >= 6_667;
            assert_eq!(old != new, between, "bucket {b}: {old} -> {new}");
            moved += usize::from(old != new);
        }
        let share = moved as f64 / users as f64;
        assert!((share - 0.5).abs() < 0.02, "moved {share}");
    }
}
