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

/// 32-bit FNV-1a.
pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

/// The user's bucket in `0..BUCKETS` (GrowthBook's hash v2, scaled to buckets). Hashing the
/// decimal text of the first hash again removes the bias one pass leaves in the low digits.
pub fn bucket(salt: &str, user: &str) -> u32 {
    let mut seeded = Vec::with_capacity(salt.len() + user.len());
    seeded.extend_from_slice(salt.as_bytes());
    seeded.extend_from_slice(user.as_bytes());
    let first = fnv1a32(&seeded);
    fnv1a32(first.to_string().as_bytes()) % BUCKETS
}

/// The exclusive upper bucket of each variant, from weights (positive, any scale): variant
/// `j` owns `[bounds[j-1], bounds[j])`, and the last bound is `BUCKETS`.
pub fn bucket_bounds(weights: &[f64]) -> Vec<u32> {
    let total: f64 = weights.iter().sum();
    let mut cumulative = 0.0;
    let mut bounds: Vec<u32> = weights
        .iter()
        .map(|weight| {
            cumulative += weight;
            (f64::from(BUCKETS) * cumulative / total).round() as u32
        })
        .collect();
    if let Some(last) = bounds.last_mut() {
        *last = BUCKETS;
    }
    bounds
}

/// The variant (index) owning `bucket`.
pub fn variant_of(bounds: &[u32], bucket: u32) -> usize {
    bounds
        .iter()
        .position(|bound| bucket < *bound)
        .unwrap_or(bounds.len().saturating_sub(1))
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

    #[test]
    fn buckets_and_variants_match_growthbook() {
        let halves = bucket_bounds(&[0.5, 0.5]);
        let thirds = bucket_bounds(&[0.2, 0.3, 0.5]);
        assert_eq!(halves, [5_000, 10_000]);
        assert_eq!(thirds, [2_000, 5_000, 10_000]);
        for (salt, user, expected, of_two, of_three) in GROWTHBOOK {
            let b = bucket(salt, user);
            assert_eq!(b, expected, "bucket({salt:?}, {user:?})");
            assert_eq!(variant_of(&halves, b), of_two);
            assert_eq!(variant_of(&thirds, b), of_three);
        }
    }

    #[test]
    fn weights_scale_freely_and_splits_are_near_their_weights() {
        assert_eq!(bucket_bounds(&[1.0, 1.0]), bucket_bounds(&[50.0, 50.0]));
        let bounds = bucket_bounds(&[1.0, 3.0]);
        let users = 40_000;
        let second = (0..users)
            .filter(|u| variant_of(&bounds, bucket("split", &format!("u{u}"))) == 1)
            .count();
        let share = second as f64 / users as f64;
        assert!((share - 0.75).abs() < 0.01, "share {share}");
    }

    #[test]
    fn moved_boundaries_move_exactly_the_users_between_them() {
        let before = bucket_bounds(&[1.0, 1.0]);
        let after = bucket_bounds(&[1.0, 1.0, 1.0]);
        assert_eq!(after, [3_333, 6_667, 10_000]);
        let users = 20_000;
        let mut moved = 0;
        for u in 0..users {
            let b = bucket("grow", &format!("user{u}"));
            let (old, new) = (variant_of(&before, b), variant_of(&after, b));
            let between = (3_333..5_000).contains(&b) || b >= 6_667;
            assert_eq!(old != new, between, "bucket {b}: {old} -> {new}");
            moved += usize::from(old != new);
        }
        let share = moved as f64 / users as f64;
        assert!((share - 0.5).abs() < 0.02, "moved {share}");
    }
}
