//! Return-rate analytics: returned ÷ sold per business line, category, SKU and reason, and
//! alerts over a per-business-line threshold.
//!
//! Rates are exact ratios of integers. [`Ratio::basis_points`] rounds down for display;
//! threshold comparisons cross-multiply (`returned × 10000 > threshold × sold`) and never
//! round.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{BusinessLineId, CategoryId, Sku, UnixMillis};
use crate::model::Reason;
use crate::params::BASIS_POINTS;

/// One sales or return event, as the store records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SalesRecord {
    /// The business line that sold it.
    pub business_line: BusinessLineId,
    /// The product category.
    pub category: CategoryId,
    /// The SKU.
    pub sku: Sku,
    /// When it was sold or returned.
    pub at: UnixMillis,
    /// Sold or returned, and how many.
    pub event: SalesEvent,
}

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SalesEvent {
    /// Units sold.
    Sold {
        /// How many.
        quantity: u64,
    },
    /// Units returned or refunded.
    Returned {
        /// How many.
        quantity: u64,
        /// Why.
        reason: Reason,
    },
}

/// A half-open time window `[from, to)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    from: UnixMillis,
    to: UnixMillis,
}

impl Window {
    /// The window `[from, to)`; refuses `to < from` (an empty window `from == to` is fine).
    pub fn new(from: UnixMillis, to: UnixMillis) -> Result<Window, DomainError> {
        if to < from {
            return Err(DomainError::InvalidWindow {
                from: from.0,
                to: to.0,
            });
        }
        Ok(Window { from, to })
    }

    /// True when `at` lies in the window.
    pub fn contains(&self, at: UnixMillis) -> bool {
        self.from <= at && at < self.to
    }
}

/// Returned units over sold units, kept as the two integers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ratio {
    /// Units returned in the window.
    pub returned: u64,
    /// Units sold in the window.
    pub sold: u64,
}

impl Ratio {
    /// The rate in basis points, rounded down; `None` when nothing was sold.
    pub fn basis_points(&self) -> Option<u64> {
        if self.sold == 0 {
            return None;
        }
        let bp = u128::from(self.returned) * u128::from(BASIS_POINTS) / u128::from(self.sold);
        Some(u64::try_from(bp).unwrap_or(u64::MAX))
    }

    /// True when the rate is strictly above `threshold_bp`, compared exactly. Returns with
    /// nothing sold count as above any threshold.
    pub fn exceeds(&self, threshold_bp: u32) -> bool {
        u128::from(self.returned) * u128::from(BASIS_POINTS)
            > u128::from(threshold_bp) * u128::from(self.sold)
    }
}

/// What a rate is about, inside one business line.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(tag = "kind", content = "value", rename_all = "snake_case")]
pub enum RateScope {
    /// The whole business line.
    BusinessLine,
    /// One category.
    Category(CategoryId),
    /// One SKU.
    Sku(Sku),
    /// Returns for one reason over everything the business line sold.
    Reason(Reason),
}

/// A return rate of one scope of one business line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReturnRate {
    /// The business line.
    pub business_line: BusinessLineId,
    /// What the rate is about.
    pub scope: RateScope,
    /// Returned and sold units.
    pub ratio: Ratio,
}

/// A business line's alert threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateThreshold {
    /// The business line.
    pub business_line: BusinessLineId,
    /// Alert when a rate is strictly above this (3C: 300, women's apparel: 2500).
    pub max_bp: u32,
    /// Ignore scopes that sold fewer units than this, so one return of one sale does not
    /// alert.
    #[serde(default = "min_sold_one")]
    pub min_sold: u64,
}

fn min_sold_one() -> u64 {
    1
}

/// A rate above its business line's threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Alert {
    /// The business line.
    pub business_line: BusinessLineId,
    /// The scope whose rate is too high.
    pub scope: RateScope,
    /// Returned and sold units.
    pub ratio: Ratio,
    /// The rate in basis points, rounded down; `None` when nothing was sold.
    pub basis_points: Option<u64>,
    /// The threshold it is above.
    pub threshold_bp: u32,
}

/// Return rates over `window`, by business line, category, SKU and reason.
///
/// Records outside `[from, to)` are ignored. A reason's rate is its returns over everything
/// the business line sold. The result is sorted by business line, then scope (business line,
/// categories, SKUs, reasons), so it is deterministic.
pub fn return_rates(records: &[SalesRecord], window: Window) -> Vec<ReturnRate> {
    let mut rates: BTreeMap<(BusinessLineId, RateScope), Ratio> = BTreeMap::new();
    let mut reasons: BTreeMap<(BusinessLineId, Reason), u64> = BTreeMap::new();
    for record in records.iter().filter(|r| window.contains(r.at)) {
        let line = &record.business_line;
        let scopes = [
            RateScope::BusinessLine,
            RateScope::Category(record.category.clone()),
            RateScope::Sku(record.sku.clone()),
        ];
        for scope in scopes {
            let ratio = rates.entry((line.clone(), scope)).or_default();
            match record.event {
                SalesEvent::Sold { quantity } => ratio.sold = ratio.sold.saturating_add(quantity),
                SalesEvent::Returned { quantity, .. } => {
                    ratio.returned = ratio.returned.saturating_add(quantity);
                }
            }
        }
        if let SalesEvent::Returned { quantity, reason } = record.event {
            let returned = reasons.entry((line.clone(), reason)).or_default();
            *returned = returned.saturating_add(quantity);
        }
    }
    for ((line, reason), returned) in reasons {
        let sold = rates
            .get(&(line.clone(), RateScope::BusinessLine))
            .map_or(0, |r| r.sold);
        rates.insert((line, RateScope::Reason(reason)), Ratio { returned, sold });
    }
    rates
        .into_iter()
        .map(|((business_line, scope), ratio)| ReturnRate {
            business_line,
            scope,
            ratio,
        })
        .collect()
}

/// Alerts for the business-line, category and SKU rates above their business line's
/// threshold. Reason rates only explain an alert (they add up to the business line's rate)
/// and never raise one; business lines without a threshold never alert.
pub fn alerts(rates: &[ReturnRate], thresholds: &[RateThreshold]) -> Vec<Alert> {
    rates
        .iter()
        .filter(|rate| !matches!(rate.scope, RateScope::Reason(_)))
        .filter_map(|rate| {
            let threshold = thresholds
                .iter()
                .find(|t| t.business_line == rate.business_line)?;
            (rate.ratio.sold >= threshold.min_sold && rate.ratio.exceeds(threshold.max_bp)).then(
                || Alert {
                    business_line: rate.business_line.clone(),
                    scope: rate.scope.clone(),
                    ratio: rate.ratio,
                    basis_points: rate.ratio.basis_points(),
                    threshold_bp: threshold.max_bp,
                },
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ratios_are_exact() {
        let r = Ratio {
            returned: 1,
            sold: 3,
        };
        assert_eq!(r.basis_points(), Some(3333));
        assert!(r.exceeds(3333));
        assert!(!r.exceeds(3334));
        let exact = Ratio {
            returned: 3,
            sold: 100,
        };
        assert_eq!(exact.basis_points(), Some(300));
        assert!(!exact.exceeds(300));
        let none_sold = Ratio {
            returned: 1,
            sold: 0,
        };
        assert_eq!(none_sold.basis_points(), None);
        assert!(none_sold.exceeds(10_000));
        assert!(!Ratio::default().exceeds(0));
    }

    #[test]
    fn windows_are_half_open() {
        let w = Window::new(UnixMillis(10), UnixMillis(20)).unwrap();
        assert!(w.contains(UnixMillis(10)));
        assert!(w.contains(UnixMillis(19)));
        assert!(!w.contains(UnixMillis(20)));
        assert!(!w.contains(UnixMillis(9)));
        assert_eq!(
            Window::new(UnixMillis(2), UnixMillis(1))
                .unwrap_err()
                .to_string(),
            "window end 1 is before its start 2"
        );
    }
}
