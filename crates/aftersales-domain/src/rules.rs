//! Eligibility: may this request become a service order under this business line's rules?

use std::collections::HashSet;
use std::fmt;

use aftersales_money::Money;
use serde::{Deserialize, Serialize};

use crate::ids::{EntitlementId, LineId, UnixMillis};
use crate::model::{AfterSalesRequest, AfterSalesType, Fault, GoodsKind, RequestLine};
use crate::params::{BASIS_POINTS, RuleParams};
use crate::refund::{covers_whole_order, line_piece};
use crate::snapshot::{LineAmounts, LineFlag, LineGoods, OrderLine, OrderSnapshot, OrderState};

/// Why the rules refuse a request, as a stable machine code.
///
/// The declaration order is the **priority** [`check`] uses to pick the one refusal it
/// reports: first the request's shape (does it name real lines of this order?), then the
/// goods and order state, then quantities, then the no-reason window and exclusions, then
/// exchanges, and the amount last.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefusalCode {
    /// The order snapshot does not add up; nothing can be decided on it.
    InconsistentOrder,
    /// The request is about another order than the snapshot.
    OrderMismatch,
    /// The request names no lines.
    NoLines,
    /// A requested line is not in the order.
    UnknownLine,
    /// A line is requested twice.
    DuplicateLine,
    /// A line is requested with quantity 0.
    ZeroQuantity,
    /// The requested amount is negative or in another currency.
    InvalidAmount,
    /// A replacement is given on a request that is not an exchange.
    ReplacementNotExpected,
    /// The after-sales type is not offered for these goods (virtual goods: no cancel, no
    /// refund only).
    TypeNotAllowedForGoods,
    /// The order's state does not allow this type (cancel only before shipment, ...).
    OrderState,
    /// Another after-sales request is still open on the line.
    OpenRequestExists,
    /// More units than bought minus already returned.
    QuantityExceedsRemaining,
    /// A virtual line asked for in part; courses are refunded whole.
    PartialVirtualLine,
    /// Past the no-reason window and the merchant is not at fault.
    OutOfWindow,
    /// Unsealed goods the business line does not take back without a merchant fault.
    UnsealedNonReturnable,
    /// Activated goods the business line does not take back without a merchant fault.
    ActivatedNonReturnable,
    /// Custom-made goods, excluded from no-reason returns.
    CustomMadeExcluded,
    /// Perishable goods, excluded from no-reason returns.
    PerishableExcluded,
    /// The line's category is excluded from no-reason returns.
    CategoryExcluded,
    /// Too many lessons consumed for a refund.
    ConsumedOverThreshold,
    /// An exchange line without a replacement.
    ExchangeReplacementMissing,
    /// The replacement is another product (exchanges stay inside one SPU).
    ExchangeNotSameSpu,
    /// The replacement has another price.
    ExchangePriceDiffers,
    /// An exchange that asks for money back.
    RefundOnExchange,
    /// More money asked for than was paid for these units and not yet refunded.
    AmountExceedsPaid,
}

impl RefusalCode {
    /// The stable snake_case code, as serialized.
    pub fn as_str(&self) -> &'static str {
        match self {
            RefusalCode::InconsistentOrder => "inconsistent_order",
            RefusalCode::OrderMismatch => "order_mismatch",
            RefusalCode::NoLines => "no_lines",
            RefusalCode::UnknownLine => "unknown_line",
            RefusalCode::DuplicateLine => "duplicate_line",
            RefusalCode::ZeroQuantity => "zero_quantity",
            RefusalCode::InvalidAmount => "invalid_amount",
            RefusalCode::ReplacementNotExpected => "replacement_not_expected",
            RefusalCode::TypeNotAllowedForGoods => "type_not_allowed_for_goods",
            RefusalCode::OrderState => "order_state",
            RefusalCode::OpenRequestExists => "open_request_exists",
            RefusalCode::QuantityExceedsRemaining => "quantity_exceeds_remaining",
            RefusalCode::PartialVirtualLine => "partial_virtual_line",
            RefusalCode::OutOfWindow => "out_of_window",
            RefusalCode::UnsealedNonReturnable => "unsealed_non_returnable",
            RefusalCode::ActivatedNonReturnable => "activated_non_returnable",
            RefusalCode::CustomMadeExcluded => "custom_made_excluded",
            RefusalCode::PerishableExcluded => "perishable_excluded",
            RefusalCode::CategoryExcluded => "category_excluded",
            RefusalCode::ConsumedOverThreshold => "consumed_over_threshold",
            RefusalCode::ExchangeReplacementMissing => "exchange_replacement_missing",
            RefusalCode::ExchangeNotSameSpu => "exchange_not_same_spu",
            RefusalCode::ExchangePriceDiffers => "exchange_price_differs",
            RefusalCode::RefundOnExchange => "refund_on_exchange",
            RefusalCode::AmountExceedsPaid => "amount_exceeds_paid",
        }
    }
}

impl fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal: a stable code for machines and a sentence for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{message}")]
pub struct Refusal {
    /// The stable code.
    pub code: RefusalCode,
    /// A human sentence (lowercase, no trailing period) naming the line and the numbers.
    pub message: String,
    /// The line the refusal is about, when it is about one line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_id: Option<LineId>,
}

impl Refusal {
    fn new(code: RefusalCode, message: String) -> Refusal {
        Refusal {
            code,
            message,
            line_id: None,
        }
    }

    fn on_line(code: RefusalCode, line: &LineId, message: String) -> Refusal {
        Refusal {
            code,
            message: format!("line {line}: {message}"),
            line_id: Some(line.clone()),
        }
    }
}

/// The verdict that a request passed every rule, with what the workflow needs to know.
///
/// Only [`check`] and [`check_all`] build it, so holding one proves the rules ran;
/// [`crate::ServiceOrder::open`] asks for it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct Eligible {
    /// The type asked for.
    pub after_sales_type: AfterSalesType,
    /// Physical, virtual or bundle, from the requested lines.
    pub goods: GoodsKind,
    /// Who is responsible, from the reason.
    pub fault: Fault,
    /// Whether physical goods have to travel back.
    pub return_leg: ReturnLeg,
    /// Whether the request, with earlier ones, takes back the whole order.
    pub coverage: Coverage,
    /// Entitlements to revoke: every virtual line is refund (or swap) and revoke.
    pub revoke: Vec<EntitlementId>,
    /// The most that may be refunded: what these units were paid, minus what was already
    /// refunded, plus the shipping fee when the whole order is cancelled before shipment.
    pub max_refund: Money,
}

/// Whether goods must be sent back before the request can finish.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReturnLeg {
    /// Physical goods come back to the warehouse (return and refund, exchange).
    Required,
    /// Nothing travels back (cancel before shipment, refund only, virtual goods).
    NotRequired,
}

/// Whether a request, together with earlier ones, covers the whole order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Coverage {
    /// After this request every unit of every line is returned or cancelled.
    WholeOrder,
    /// Some units stay with the buyer.
    PartOfOrder,
}

/// Checks a request against the order and the business line's rules and reports the first
/// refusal by [`RefusalCode`] priority (its declaration order; within one code, request
/// order).
///
/// `now` is the caller's clock; nothing here reads the time.
pub fn check(
    request: &AfterSalesRequest,
    order: &OrderSnapshot,
    params: &RuleParams,
    now: UnixMillis,
) -> Result<Eligible, Refusal> {
    check_all(request, order, params, now).map_err(|refusals| {
        refusals.into_iter().next().unwrap_or_else(|| {
            Refusal::new(
                RefusalCode::InconsistentOrder,
                "the rules refused without a reason".to_owned(),
            )
        })
    })
}

/// Like [`check`], but reports every refusal, sorted by priority.
///
/// The list is never empty. Checks that depend on a line being real (quantities, window,
/// amount) are skipped for lines that are not; the amount is checked only when every line's
/// quantity is valid, so one mistake does not produce a cascade of refusals.
pub fn check_all(
    request: &AfterSalesRequest,
    order: &OrderSnapshot,
    params: &RuleParams,
    now: UnixMillis,
) -> Result<Eligible, Vec<Refusal>> {
    let amounts = match order.amounts() {
        Ok(amounts) => amounts,
        Err(err) => {
            return Err(vec![Refusal::new(
                RefusalCode::InconsistentOrder,
                err.to_string(),
            )]);
        }
    };
    if request.order_id != order.order_id {
        return Err(vec![Refusal::new(
            RefusalCode::OrderMismatch,
            format!(
                "the request is for order {} but the order snapshot is {}",
                request.order_id, order.order_id
            ),
        )]);
    }

    let mut refusals = Vec::new();
    let currency = order.currency();
    let amount_ok = if request.requested_amount.currency != currency {
        refusals.push(Refusal::new(
            RefusalCode::InvalidAmount,
            format!(
                "the requested amount {} is not in the order's currency {currency}",
                request.requested_amount
            ),
        ));
        false
    } else if request.requested_amount.is_negative() {
        refusals.push(Refusal::new(
            RefusalCode::InvalidAmount,
            format!(
                "the requested amount {} is negative",
                request.requested_amount
            ),
        ));
        false
    } else {
        true
    };
    if request.lines.is_empty() {
        refusals.push(Refusal::new(
            RefusalCode::NoLines,
            "the request names no order lines".to_owned(),
        ));
    }

    let kind = request.after_sales_type;
    let fault = request.reason.fault();
    let mut seen = HashSet::new();
    let mut resolved: Vec<(usize, &OrderLine, &RequestLine)> = Vec::new();
    for wanted in &request.lines {
        let id = &wanted.line_id;
        if !seen.insert(id) {
            refusals.push(Refusal::on_line(
                RefusalCode::DuplicateLine,
                id,
                "it is named more than once".to_owned(),
            ));
            continue;
        }
        let Some((index, line)) = order.line(id) else {
            refusals.push(Refusal::on_line(
                RefusalCode::UnknownLine,
                id,
                format!("there is no such line in order {}", order.order_id),
            ));
            continue;
        };
        if wanted.quantity == 0 {
            refusals.push(Refusal::on_line(
                RefusalCode::ZeroQuantity,
                id,
                "the quantity asked for is 0".to_owned(),
            ));
            continue;
        }
        if wanted.replacement.is_some() && kind != AfterSalesType::Exchange {
            refusals.push(Refusal::on_line(
                RefusalCode::ReplacementNotExpected,
                id,
                format!("a replacement is given but the request is {kind}, not exchange"),
            ));
        }
        resolved.push((index, line, wanted));
    }

    let mut quantities_ok = resolved.len() == request.lines.len();
    for (_, line, wanted) in &resolved {
        let before = refusals.len();
        check_line(line, wanted, kind, fault, order, params, now, &mut refusals);
        if refusals[before..].iter().any(|r| {
            matches!(
                r.code,
                RefusalCode::QuantityExceedsRemaining | RefusalCode::PartialVirtualLine
            )
        }) {
            quantities_ok = false;
        }
    }

    let pieces: Vec<(usize, u32)> = resolved
        .iter()
        .map(|(index, _, wanted)| (*index, wanted.quantity))
        .collect();
    let coverage = if covers_whole_order(order, &pieces) {
        Coverage::WholeOrder
    } else {
        Coverage::PartOfOrder
    };
    let mut max_refund = Money::zero(currency);
    if quantities_ok && amount_ok {
        let requested = request.requested_amount;
        if kind == AfterSalesType::Exchange {
            // An exchange moves no money: `max_refund` stays zero.
            if !requested.is_zero() {
                refusals.push(Refusal::new(
                    RefusalCode::RefundOnExchange,
                    format!(
                        "an exchange refunds nothing but {requested} was requested; \
                         ask for return_refund to get money back"
                    ),
                ));
            }
        } else {
            match max_refund_of(order, &amounts, &resolved, kind, coverage) {
                Ok(max) => max_refund = max,
                Err(message) => {
                    refusals.push(Refusal::new(RefusalCode::InconsistentOrder, message));
                }
            }
            if requested.minor > max_refund.minor {
                refusals.push(Refusal::new(
                    RefusalCode::AmountExceedsPaid,
                    format!(
                        "the requested refund {requested} is more than the {max_refund} \
                         paid for these units and not yet refunded"
                    ),
                ));
            }
        }
    }

    if !refusals.is_empty() {
        refusals.sort_by_key(|r| r.code);
        return Err(refusals);
    }

    let goods = GoodsKind::of(resolved.iter().map(|(_, line, _)| line.goods_kind()));
    let has_physical = resolved
        .iter()
        .any(|(_, line, _)| line.goods_kind() == GoodsKind::Physical);
    let return_leg = match kind {
        AfterSalesType::ReturnRefund | AfterSalesType::Exchange if has_physical => {
            ReturnLeg::Required
        }
        _ => ReturnLeg::NotRequired,
    };
    let revoke = resolved
        .iter()
        .filter_map(|(_, line, _)| match &line.goods {
            LineGoods::Virtual(v) => Some(v.entitlement.clone()),
            LineGoods::Physical => None,
        })
        .collect();
    Ok(Eligible {
        after_sales_type: kind,
        goods,
        fault,
        return_leg,
        coverage,
        revoke,
        max_refund,
    })
}

/// The per-line rules, in priority order.
#[allow(clippy::too_many_arguments)]
fn check_line(
    line: &OrderLine,
    wanted: &RequestLine,
    kind: AfterSalesType,
    fault: Fault,
    order: &OrderSnapshot,
    params: &RuleParams,
    now: UnixMillis,
    refusals: &mut Vec<Refusal>,
) {
    let id = &line.line_id;
    let mut refuse = |code, message: String| refusals.push(Refusal::on_line(code, id, message));

    // Goods kind and order state.
    match (&line.goods, kind) {
        (
            LineGoods::Virtual(_),
            AfterSalesType::CancelAfterPayment | AfterSalesType::RefundOnly,
        ) => refuse(
            RefusalCode::TypeNotAllowedForGoods,
            format!(
                "it is a virtual course, which is delivered at payment: {kind} is not \
                 offered for virtual goods, ask for return_refund (refund and revoke)"
            ),
        ),
        (LineGoods::Virtual(_), _) => {}
        (LineGoods::Physical, _) => {
            let allowed = match kind {
                AfterSalesType::CancelAfterPayment => matches!(order.state, OrderState::Paid),
                AfterSalesType::RefundOnly | AfterSalesType::ReturnRefund => matches!(
                    order.state,
                    OrderState::Shipped { .. } | OrderState::Delivered { .. }
                ),
                AfterSalesType::Exchange => matches!(order.state, OrderState::Delivered { .. }),
            };
            if !allowed {
                let needs = match kind {
                    AfterSalesType::CancelAfterPayment => {
                        "is only possible before shipment (ask for return_refund or refund_only)"
                    }
                    AfterSalesType::RefundOnly | AfterSalesType::ReturnRefund => {
                        "needs the order shipped (ask for cancel_after_payment before shipment)"
                    }
                    AfterSalesType::Exchange => "needs the goods delivered",
                };
                refuse(
                    RefusalCode::OrderState,
                    format!("{kind} {needs}, and the order is {}", order.state.as_str()),
                );
            }
        }
    }

    if let Some(open) = line.open_requests.first() {
        refuse(
            RefusalCode::OpenRequestExists,
            format!("service order {open} is still open on it"),
        );
    }

    let remaining = line.remaining_quantity();
    if wanted.quantity > remaining {
        refuse(
            RefusalCode::QuantityExceedsRemaining,
            format!(
                "{} units asked for but {} of {} bought are left ({} already returned)",
                wanted.quantity, remaining, line.quantity, line.returned_quantity
            ),
        );
    } else if matches!(line.goods, LineGoods::Virtual(_))
        && (line.returned_quantity != 0 || wanted.quantity != line.quantity)
    {
        refuse(
            RefusalCode::PartialVirtualLine,
            format!(
                "a course is refunded whole: ask for all {} units",
                line.quantity
            ),
        );
    }

    if fault == Fault::Buyer {
        let window_start = match (&line.goods, order.state) {
            (LineGoods::Virtual(_), _) => Some((order.paid_at, "payment")),
            (LineGoods::Physical, OrderState::Delivered { delivered_at, .. }) => {
                Some((delivered_at, "delivery"))
            }
            (LineGoods::Physical, _) => None,
        };
        if let Some((start, since)) = window_start {
            let day = now.day_number_since(start);
            let window = i64::from(params.no_reason_window_days);
            if day > window {
                refuse(
                    RefusalCode::OutOfWindow,
                    format!(
                        "day {day} after {since} is past the {window}-day no-reason return \
                         window, and the reason is not the merchant's fault"
                    ),
                );
            }
        }

        if matches!(
            kind,
            AfterSalesType::ReturnRefund | AfterSalesType::Exchange
        ) {
            for flag in &line.flags {
                if params.non_returnable.contains(flag) {
                    let (code, what) = match flag {
                        LineFlag::Unsealed => (RefusalCode::UnsealedNonReturnable, "unsealed"),
                        LineFlag::Activated => (RefusalCode::ActivatedNonReturnable, "activated"),
                        LineFlag::CustomMade => (RefusalCode::CustomMadeExcluded, "custom-made"),
                        LineFlag::Perishable => (RefusalCode::PerishableExcluded, "perishable"),
                    };
                    refuse(
                        code,
                        format!(
                            "the goods are {what}, and this business line takes {what} goods \
                             back only when the merchant is at fault"
                        ),
                    );
                }
            }
            if params.excluded_categories.contains(&line.category) {
                refuse(
                    RefusalCode::CategoryExcluded,
                    format!(
                        "category {} is excluded from no-reason returns",
                        line.category
                    ),
                );
            }
        }

        if let (LineGoods::Virtual(v), AfterSalesType::ReturnRefund) = (&line.goods, kind)
            && consumed_over_threshold(v.lessons_consumed, v.lessons_total, params)
        {
            refuse(
                RefusalCode::ConsumedOverThreshold,
                format!(
                    "{} of {} lessons are consumed, more than the {} bp after which \
                     nothing is refunded",
                    v.lessons_consumed, v.lessons_total, params.consumed_threshold_bp
                ),
            );
        }
    }

    if kind == AfterSalesType::Exchange {
        match &wanted.replacement {
            None => refuse(
                RefusalCode::ExchangeReplacementMissing,
                "an exchange needs the SKU to swap it for".to_owned(),
            ),
            Some(replacement) => {
                if replacement.spu != line.spu {
                    refuse(
                        RefusalCode::ExchangeNotSameSpu,
                        format!(
                            "the replacement {} belongs to product {}, not {}; an exchange \
                             stays inside one product",
                            replacement.sku, replacement.spu, line.spu
                        ),
                    );
                }
                if replacement.unit_price != line.unit_price {
                    refuse(
                        RefusalCode::ExchangePriceDiffers,
                        format!(
                            "the replacement {} costs {} but the line's unit price is {}",
                            replacement.sku, replacement.unit_price, line.unit_price
                        ),
                    );
                }
            }
        }
    }
}

/// True when more lessons are consumed than the threshold allows:
/// `consumed / total > threshold_bp / 10000`, compared exactly.
pub(crate) fn consumed_over_threshold(consumed: u32, total: u32, params: &RuleParams) -> bool {
    u64::from(consumed) * u64::from(BASIS_POINTS)
        > u64::from(params.consumed_threshold_bp) * u64::from(total)
}

/// Σ over the requested lines of min(what these units were paid, what is left unrefunded
/// on the line), plus the shipping fee when the whole order is cancelled before shipment.
fn max_refund_of(
    order: &OrderSnapshot,
    amounts: &[LineAmounts],
    resolved: &[(usize, &OrderLine, &RequestLine)],
    kind: AfterSalesType,
    coverage: Coverage,
) -> Result<Money, String> {
    let mut max: i64 = 0;
    for (index, line, wanted) in resolved {
        let a = &amounts[*index];
        let piece = line_piece(line, a, wanted.quantity);
        let left = a.paid - a.refunded;
        max = max
            .checked_add(piece.net.min(left))
            .ok_or_else(|| "the refundable amount overflows".to_owned())?;
    }
    if kind == AfterSalesType::CancelAfterPayment
        && coverage == Coverage::WholeOrder
        && matches!(order.state, OrderState::Paid)
    {
        max = max
            .checked_add(order.shipping_fee.minor)
            .ok_or_else(|| "the refundable amount overflows".to_owned())?;
    }
    Ok(Money::new(max, order.currency()))
}
