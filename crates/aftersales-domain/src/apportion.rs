//! Exact integer splitting: the largest-remainder method and cumulative shares.
//!
//! Everything works on minor units (`i64`) with `i128` intermediates, so a product of two
//! `i64` values never overflows and nothing is ever a float.

use crate::error::DomainError;

/// Splits `total` minor units into parts proportional to `weights`, with the
/// largest-remainder (Hamilton) method, so the parts always sum exactly to `total`.
///
/// Each part starts as `floor(total × weight / Σweights)`; the units left over go one each
/// to the parts with the largest remainders, ties broken by position (earlier first), so the
/// result is deterministic. When `total ≤ Σweights`, no part exceeds its weight.
///
/// `total` and every weight must be non-negative, and the weights may sum to zero only
/// when `total` is zero (then every part is zero).
pub fn largest_remainder(total: i64, weights: &[i64]) -> Result<Vec<i64>, DomainError> {
    let weight_sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
    if total < 0 || weights.iter().any(|w| *w < 0) || (weight_sum == 0 && total != 0) {
        return Err(DomainError::Apportion { total, weight_sum });
    }
    if total == 0 {
        return Ok(vec![0; weights.len()]);
    }
    let total_wide = i128::from(total);
    let mut parts = Vec::with_capacity(weights.len());
    let mut remainders = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let product = total_wide * i128::from(*weight);
        // Both fit: each quotient is at most `total`, each remainder below `weight_sum`.
        parts.push(product / weight_sum);
        remainders.push((product % weight_sum, index));
    }
    let assigned: i128 = parts.iter().sum();
    let leftover = total_wide - assigned;
    // Largest remainder first; among equal remainders the earlier position wins.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders
        .iter()
        .take(usize::try_from(leftover).unwrap_or(0))
    {
        parts[*index] += 1;
    }
    parts
        .into_iter()
        .map(|p| i64::try_from(p).map_err(|_| DomainError::Apportion { total, weight_sum }))
        .collect()
}

/// `floor(amount × part / whole)`: the share of `amount` that belongs to the first `part`
/// of `whole` units.
///
/// Used cumulatively: the share of units `(r, r + k]` is
/// `cumulative_share(a, r + k, w) - cumulative_share(a, r, w)`, so returning a line in
/// pieces always adds up to exactly `amount` once `part` reaches `whole`, whatever the
/// pieces were. `amount` must be non-negative, `part ≤ whole` and `whole > 0`.
pub(crate) fn cumulative_share(amount: i64, part: i128, whole: i128) -> i64 {
    if whole <= 0 || part <= 0 {
        return 0;
    }
    let part = part.min(whole);
    let share = i128::from(amount) * part / whole;
    // The share lies between zero and `amount`, so it fits.
    i64::try_from(share).unwrap_or(amount)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn splits_by_largest_remainder_with_ties_to_the_earlier_part() {
        assert_eq!(largest_remainder(100, &[1, 1, 1]).unwrap(), [34, 33, 33]);
        assert_eq!(largest_remainder(10, &[1, 2, 3, 4]).unwrap(), [1, 2, 3, 4]);
        // 1000 over 300/200/100: 500, 333.33, 166.67 → the .67 gets the extra unit.
        assert_eq!(
            largest_remainder(1000, &[300, 200, 100]).unwrap(),
            [500, 333, 167]
        );
        assert_eq!(largest_remainder(0, &[0, 0]).unwrap(), [0, 0]);
        assert_eq!(largest_remainder(5, &[0, 7]).unwrap(), [0, 5]);
    }

    #[test]
    fn refuses_impossible_splits() {
        assert_eq!(
            largest_remainder(1, &[0, 0]),
            Err(DomainError::Apportion {
                total: 1,
                weight_sum: 0
            })
        );
        assert!(largest_remainder(-1, &[1]).is_err());
        assert!(largest_remainder(1, &[2, -1]).is_err());
    }

    #[test]
    fn cumulative_shares_telescope() {
        assert_eq!(cumulative_share(100, 1, 3), 33);
        assert_eq!(cumulative_share(100, 2, 3), 66);
        assert_eq!(cumulative_share(100, 3, 3), 100);
        assert_eq!(cumulative_share(100, 0, 3), 0);
        assert_eq!(cumulative_share(i64::MAX, 2, 3), 6_148_914_691_236_517_204);
    }

    proptest! {
        #[test]
        fn parts_always_sum_to_the_total(
            total in 0i64..=1_000_000_000_000,
            weights in prop::collection::vec(0i64..=1_000_000_000_000, 1..20),
        ) {
            prop_assume!(weights.iter().any(|w| *w > 0));
            let parts = largest_remainder(total, &weights).unwrap();
            prop_assert_eq!(parts.len(), weights.len());
            prop_assert_eq!(parts.iter().map(|p| i128::from(*p)).sum::<i128>(), i128::from(total));
            let weight_sum: i128 = weights.iter().map(|w| i128::from(*w)).sum();
            for (part, weight) in parts.iter().zip(&weights) {
                prop_assert!(*part >= 0);
                // Each part is within one unit of its exact proportional share.
                let exact_times_sum = i128::from(total) * i128::from(*weight);
                prop_assert!(i128::from(*part) * weight_sum >= exact_times_sum - weight_sum);
                prop_assert!(i128::from(*part) * weight_sum <= exact_times_sum + weight_sum);
                if i128::from(total) <= weight_sum {
                    prop_assert!(part <= weight);
                }
            }
        }
    }
}
