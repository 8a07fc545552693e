//! The `k` best entries of a list, best first.

use std::cmp::Ordering;

/// Keeps the `k` first entries of `list` under `order` (a total order), sorted by it.
///
/// Selects before sorting: the lists ranked per change (an item's partners, a user's
/// candidates) run to hundreds, and only `k` (about ten) are kept.
pub fn keep_best<T>(list: &mut Vec<T>, k: usize, mut order: impl FnMut(&T, &T) -> Ordering) {
    if list.len() > k {
        if let Some(last) = k.checked_sub(1) {
            list.select_nth_unstable_by(last, &mut order);
        }
        list.truncate(k);
    }
    list.sort_unstable_by(order);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_k_best_in_order() {
        let descending = |a: &i32, b: &i32| b.cmp(a);
        for k in 0..8 {
            let mut list = vec![3, 9, 1, 7, 5, 8];
            keep_best(&mut list, k, descending);
            let mut expected = vec![9, 8, 7, 5, 3, 1];
            expected.truncate(k);
            assert_eq!(list, expected, "k = {k}");
        }
    }
}
