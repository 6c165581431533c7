//! The crate's one error type.

use aftersales_money::{Money, MoneyError};

use crate::ids::{LineId, OrderId, ServiceOrderId};
use crate::model::ServiceOrderState;

/// Errors from the domain's calculations and state changes.
///
/// A buyer's request that the rules refuse is not an error but a [`crate::Refusal`]; these
/// errors mean the inputs themselves are inconsistent (an order snapshot whose lines do not
/// add up to what was paid, a line that is not in the order) or that arithmetic would leave
/// the `i64` range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DomainError {
    /// Money arithmetic failed (overflow or mixed currencies).
    #[error("money arithmetic failed")]
    Money(#[from] MoneyError),
    /// The order snapshot contradicts itself.
    #[error("order {order} is inconsistent: {why}")]
    InconsistentOrder {
        /// The order.
        order: OrderId,
        /// What does not add up.
        why: String,
    },
    /// A rule parameter is out of range.
    #[error("invalid rule parameter `{field}`: {why}")]
    InvalidParams {
        /// The parameter's name as written in config.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The request names a line the order does not have.
    #[error("line {line} is not in order {order}")]
    UnknownLine {
        /// The order.
        order: OrderId,
        /// The line that was asked for.
        line: LineId,
    },
    /// The request names the same line twice.
    #[error("line {line} appears more than once in the request")]
    DuplicateLine {
        /// The repeated line.
        line: LineId,
    },
    /// More units were asked for than are left on the line.
    #[error("line {line}: {requested} units requested but only {remaining} remain")]
    QuantityExceedsRemaining {
        /// The line.
        line: LineId,
        /// Units asked for.
        requested: u32,
        /// Units bought minus units already returned.
        remaining: u32,
    },
    /// A virtual line can only be refunded whole.
    #[error("line {line}: a virtual line is refunded whole, not in part")]
    PartialVirtualLine {
        /// The line.
        line: LineId,
    },
    /// The calculated refund would exceed what was paid and not yet refunded.
    ///
    /// The calculation is built so this cannot happen; the check is kept as a last guard
    /// before money moves.
    #[error("refund {refund} would exceed the {cap} paid and not yet refunded")]
    RefundAboveCap {
        /// The refund that was calculated.
        refund: Money,
        /// The most that may be refunded.
        cap: Money,
    },
    /// An amount that must not be negative is.
    #[error("amount {0} must not be negative")]
    NegativeAmount(Money),
    /// A largest-remainder split was asked for with invalid inputs.
    #[error("cannot apportion {total} over weights summing to {weight_sum}")]
    Apportion {
        /// The amount to split, in minor units.
        total: i64,
        /// The sum of the weights.
        weight_sum: i128,
    },
    /// A service order cannot move between these states.
    #[error("service order {id} cannot move from {from} to {to}")]
    InvalidTransition {
        /// The service order.
        id: ServiceOrderId,
        /// Its current state.
        from: ServiceOrderState,
        /// The state that was asked for.
        to: ServiceOrderState,
    },
    /// The approved amount is above what the buyer asked for.
    #[error("approved amount {approved} is above the requested {requested}")]
    ApprovalAboveRequest {
        /// The amount the merchant approved.
        approved: Money,
        /// The amount the buyer asked for.
        requested: Money,
    },
    /// An analytics window ends before it starts.
    #[error("window end {to} is before its start {from}")]
    InvalidWindow {
        /// Window start, inclusive.
        from: i64,
        /// Window end, exclusive.
        to: i64,
    },
}

#[cfg(test)]
mod tests {
    use aftersales_money::Currency;

    use super::*;

    #[test]
    fn messages_are_lowercase_without_trailing_period() {
        let err = DomainError::RefundAboveCap {
            refund: Money::new(12_001, Currency::CNY),
            cap: Money::new(12_000, Currency::CNY),
        };
        assert_eq!(
            err.to_string(),
            "refund 120.01 CNY would exceed the 120.00 CNY paid and not yet refunded"
        );
        let err = DomainError::from(MoneyError::Overflow);
        assert_eq!(err.to_string(), "money arithmetic failed");
        assert_eq!(
            std::error::Error::source(&err).map(ToString::to_string),
            Some("amount overflow".to_owned())
        );
    }
}
