//! After-sales domain rules: service orders, eligibility, exact refunds and return rates.
//!
//! Knows no workflow engine, no SQL, no HTTP, no platform names and no clock: every
//! function is pure and synchronous, takes the current time as an argument when it needs
//! one, and works on [`aftersales_money::Money`] in integer minor units, never floats.
//! Business-line config parsing lives elsewhere and fills [`RuleParams`].
//!
//! Start at [`check`] (may this request become a service order?), then
//! [`calculate_refund`] (how much, exactly, with a stored [`RefundBreakdown`]), then
//! [`ServiceOrder::open`]. [`return_rates`] and [`alerts`] measure return rates.
//!
//! The money invariants: a refund is never above what the requested units were paid minus
//! what was already refunded on them; returning a line in any number of pieces refunds
//! exactly what the line was paid, no cent lost or created; the order coupon is split over
//! the lines with the largest-remainder method so the parts sum to the coupon.
//!
//! # Rounding rules
//!
//! Every amount is an integer number of minor units; nothing is ever a float.
//!
//! 1. **Coupon over lines.** The order coupon is split over *all* order lines by their net
//!    amounts (`unit_price × quantity − line_discount`) with the largest-remainder method,
//!    ties to the earlier line ([`crate::OrderSnapshot::line_payments`]). The parts sum to the
//!    coupon exactly.
//! 2. **Units of a line.** What units `(r, r + k]` of a line of `Q` units were paid is
//!    `floor(P × (r + k) / Q) − floor(P × r / Q)`, where `P` is the line's paid amount and
//!    `r` the units already returned. Each piece is rounded down (in the merchant's favour
//!    by less than one minor unit) and the last piece takes what is left, so returning a
//!    line in any pieces adds up to exactly `P`. The piece's coupon and discount shares are
//!    split the same cumulative way, so they too add up to the line's coupon part and
//!    discount exactly, and no share is ever negative.
//! 3. **Virtual goods.** A course is refunded whole, pro rata of the unconsumed lessons:
//!    `floor(P × (total − consumed) / total)`, rounded down to the minor unit. Past the
//!    business line's consumed threshold (and without a merchant fault) nothing is refunded.
//! 4. **Restocking fee** in basis points: `floor(goods × bp / 10000)`, rounded down (in the
//!    buyer's favour); a fixed fee is capped at the goods' refund.
//! 5. **Cap.** A line never refunds more than it was paid minus what was already refunded on
//!    it; when an earlier refund without returned units (a partial refund only) used part of
//!    a line, the rest of the line is reduced by it (`prior_refund_offset`).
//! 6. **Requested amount.** The total is the smaller of the entitlement and what the buyer
//!    asked for; the difference is recorded as `waived_by_buyer`.
//!
//! # Other decisions
//!
//! - [`check`] reports the first refusal by [`RefusalCode`] priority (its declaration
//!   order); [`check_all`] reports all of them. The requested amount is checked against
//!   what was *paid* for the units; the calculation then pays at most the entitlement.
//! - No-reason window, exclusions (unsealed, activated, custom-made, perishable, excluded
//!   categories) and the consumed-lessons threshold bind only buyer-side reasons; a
//!   merchant fault (damaged, wrong item, not received, quality) is not bound by them.
//! - The window is `N × 24` hours from delivery (from payment for virtual goods).
//! - Shipping insurance is paid by the insurer, so [`RefundBreakdown::insurance`] is not
//!   part of [`RefundBreakdown::total`]; the postage the buyer bears is reported in
//!   [`RefundBreakdown::buyer_pays_shipping`] and not deducted from the refund.

mod analytics;
mod apportion;
mod error;
mod ids;
mod model;
mod params;
mod refund;
mod rules;
mod snapshot;

pub use analytics::{
    Alert, RateScope, RateThreshold, Ratio, ReturnRate, SalesEvent, SalesRecord, Window, alerts,
    return_rates,
};
pub use apportion::largest_remainder;
pub use error::DomainError;
pub use ids::{
    BusinessLineId, CategoryId, CourseId, EntitlementId, EvidenceRef, LineId, OrderId, PaymentId,
    ServiceOrderId, Sku, Spu, UnixMillis, WorkflowInstanceId,
};
pub use model::{
    AfterSalesRequest, AfterSalesType, Fault, GoodsKind, NewServiceOrder, Reason, Replacement,
    RequestLine, ServiceOrder, ServiceOrderState,
};
pub use params::{
    BASIS_POINTS, RestockingFee, ReturnShipping, ReturnShippingPayer, RuleParams, ShippingInsurance,
};
pub use refund::{BREAKDOWN_VERSION, LineRefund, RefundBreakdown, RefundInput, calculate_refund};
pub use rules::{Coverage, Eligible, Refusal, RefusalCode, ReturnLeg, check, check_all};
pub use snapshot::{
    LineFlag, LineGoods, LinePayment, OrderLine, OrderSnapshot, OrderState, VirtualLine,
};
