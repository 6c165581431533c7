//! Refund calculation with a stored, serializable breakdown.
//!
//! The rounding rules are documented on the crate root (`lib.rs`, "Rounding rules").

use aftersales_money::{Currency, Money, MoneyError};
use serde::{Deserialize, Serialize};

use crate::apportion::cumulative_share;
use crate::error::DomainError;
use crate::ids::LineId;
use crate::model::{AfterSalesRequest, AfterSalesType, Fault, GoodsKind};
use crate::params::{
    BASIS_POINTS, RestockingFee, ReturnShippingPayer, RuleParams, ShippingInsurance,
};
use crate::rules::consumed_over_threshold;
use crate::snapshot::{LineAmounts, LineGoods, OrderLine, OrderSnapshot, OrderState};

/// The version of the [`RefundBreakdown`] layout; stored with every breakdown.
pub const BREAKDOWN_VERSION: u32 = 1;

/// Everything [`calculate_refund`] needs.
#[derive(Debug, Clone, Copy)]
pub struct RefundInput<'a> {
    /// The buyer's request: type, lines and quantities, reason, requested amount.
    pub request: &'a AfterSalesRequest,
    /// The order as the order system reports it.
    pub order: &'a OrderSnapshot,
    /// The business line's rule parameters.
    pub params: &'a RuleParams,
}

/// How a refund was arrived at, line by line; stored with the service order.
///
/// `total` is what the payment system refunds on the order's payment. `insurance` is paid
/// separately by the insurer and is **not** part of `total`; `buyer_pays_shipping` is the
/// postage the buyer bears (paid to the carrier, or collected for an exchange's reshipment)
/// and is **not** deducted from `total`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundBreakdown {
    /// The layout version ([`BREAKDOWN_VERSION`]).
    pub version: u32,
    /// The order's currency.
    pub currency: Currency,
    /// The type the breakdown was calculated for.
    pub after_sales_type: AfterSalesType,
    /// Who is responsible, from the reason.
    pub fault: Fault,
    /// One entry per requested line (none for an exchange: no money moves).
    pub lines: Vec<LineRefund>,
    /// Σ `lines[].net`.
    pub goods_refund: Money,
    /// The order's shipping fee, refunded only when the whole order is cancelled before
    /// shipment; zero otherwise.
    pub shipping_fee_refund: Money,
    /// The restocking fee kept; zero when none applies.
    pub restocking_fee: Money,
    /// `goods_refund + shipping_fee_refund − restocking_fee`: what the rules allow.
    pub entitled: Money,
    /// What the buyer asked for.
    pub requested: Money,
    /// `entitled − total` when the buyer asked for less than the entitlement.
    pub waived_by_buyer: Money,
    /// The refund to pay: `min(entitled, requested)`.
    pub total: Money,
    /// Shipping insurance (运费险) reimbursement of the return postage, paid by the insurer.
    pub insurance: Money,
    /// Postage the buyer bears for the return leg and, for an exchange, the reshipment.
    pub buyer_pays_shipping: Money,
}

/// One requested line of a [`RefundBreakdown`].
///
/// `net = gross − discount_share − coupon_share − consumed_deduction − prior_refund_offset`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LineRefund {
    /// The order line.
    pub line_id: LineId,
    /// Physical or virtual.
    pub goods: GoodsKind,
    /// Units refunded.
    pub quantity: u32,
    /// The line's unit price.
    pub unit_price: Money,
    /// `unit_price × quantity`.
    pub gross: Money,
    /// These units' share of the line discount.
    pub discount_share: Money,
    /// These units' share of the line's part of the order coupon.
    pub coupon_share: Money,
    /// The value of the consumed lessons (virtual lines); zero for physical lines.
    pub consumed_deduction: Money,
    /// What earlier refunds on the line already paid beyond the units they took back.
    pub prior_refund_offset: Money,
    /// The refund for this line.
    pub net: Money,
}

/// Calculates the refund for a request, with its breakdown.
///
/// This is arithmetic, not eligibility: run [`crate::check`] first. It fails on an order
/// snapshot that does not add up, invalid parameters, lines that are not in the order or
/// quantities beyond what is left, and on any overflow; it never panics. The returned total
/// is never above what the requested lines were paid minus what was already refunded on
/// them (plus the shipping fee when the whole order is cancelled before shipment).
pub fn calculate_refund(input: &RefundInput<'_>) -> Result<RefundBreakdown, DomainError> {
    let RefundInput {
        request,
        order,
        params,
    } = *input;
    let amounts = order.amounts()?;
    if let Err(problems) = params.validate()
        && let Some(first) = problems.into_iter().next()
    {
        return Err(first);
    }
    let currency = order.currency();
    let money = |minor: i64| Money::new(minor, currency);
    same_currency(currency, &params.return_shipping.return_leg_fee)?;
    same_currency(currency, &request.requested_amount)?;
    if request.requested_amount.is_negative() {
        return Err(DomainError::NegativeAmount(request.requested_amount));
    }

    let kind = request.after_sales_type;
    let fault = request.reason.fault();

    // Resolve the requested lines.
    let mut resolved: Vec<(usize, &OrderLine, u32)> = Vec::with_capacity(request.lines.len());
    for wanted in &request.lines {
        let Some((index, line)) = order.line(&wanted.line_id) else {
            return Err(DomainError::UnknownLine {
                order: order.order_id.clone(),
                line: wanted.line_id.clone(),
            });
        };
        if resolved.iter().any(|(i, _, _)| *i == index) {
            return Err(DomainError::DuplicateLine {
                line: wanted.line_id.clone(),
            });
        }
        if wanted.quantity > line.remaining_quantity() {
            return Err(DomainError::QuantityExceedsRemaining {
                line: wanted.line_id.clone(),
                requested: wanted.quantity,
                remaining: line.remaining_quantity(),
            });
        }
        if matches!(line.goods, LineGoods::Virtual(_))
            && wanted.quantity != 0
            && (line.returned_quantity != 0 || wanted.quantity != line.quantity)
        {
            return Err(DomainError::PartialVirtualLine {
                line: wanted.line_id.clone(),
            });
        }
        resolved.push((index, line, wanted.quantity));
    }
    let has_physical = resolved
        .iter()
        .any(|(_, line, _)| matches!(line.goods, LineGoods::Physical));
    let buyer_bears_postage = fault == Fault::Buyer
        && params.return_shipping.payer == ReturnShippingPayer::BuyerUnlessMerchantFault;

    // Lines.
    let mut lines = Vec::new();
    let mut goods_refund: i64 = 0;
    let mut physical_refund: i64 = 0;
    let mut cap: i64 = 0;
    if kind != AfterSalesType::Exchange {
        for (index, line, quantity) in &resolved {
            let a = &amounts[*index];
            let piece = line_piece(line, a, *quantity);
            let consumed_deduction = match &line.goods {
                LineGoods::Physical => 0,
                LineGoods::Virtual(v) => {
                    let refundable = if fault == Fault::Buyer
                        && consumed_over_threshold(v.lessons_consumed, v.lessons_total, params)
                    {
                        0
                    } else {
                        cumulative_share(
                            piece.net,
                            i128::from(v.lessons_total - v.lessons_consumed),
                            i128::from(v.lessons_total),
                        )
                    };
                    piece.net - refundable
                }
            };
            let before_cap = piece.net - consumed_deduction;
            let left = a.paid - a.refunded;
            let net = before_cap.min(left);
            cap = add(cap, left)?;
            goods_refund = add(goods_refund, net)?;
            if matches!(line.goods, LineGoods::Physical) {
                physical_refund = add(physical_refund, net)?;
            }
            lines.push(LineRefund {
                line_id: line.line_id.clone(),
                goods: line.goods_kind(),
                quantity: *quantity,
                unit_price: line.unit_price,
                gross: money(piece.gross),
                discount_share: money(piece.discount),
                coupon_share: money(piece.coupon),
                consumed_deduction: money(consumed_deduction),
                prior_refund_offset: money(before_cap - net),
                net: money(net),
            });
        }
    }

    // Shipping fee: only when the whole order is cancelled before shipment.
    let pieces: Vec<(usize, u32)> = resolved.iter().map(|(i, _, q)| (*i, *q)).collect();
    let shipping_fee_refund = if kind == AfterSalesType::CancelAfterPayment
        && matches!(order.state, OrderState::Paid)
        && covers_whole_order(order, &pieces)
    {
        order.shipping_fee.minor
    } else {
        0
    };
    cap = add(cap, shipping_fee_refund)?;

    // Restocking fee: buyer-side returns of physical goods.
    let restocking_fee = if kind == AfterSalesType::ReturnRefund && fault == Fault::Buyer {
        match &params.restocking_fee {
            RestockingFee::None => 0,
            RestockingFee::BasisPoints { bp } => {
                cumulative_share(physical_refund, i128::from(*bp), i128::from(BASIS_POINTS))
            }
            RestockingFee::Fixed { amount } => amount.minor.min(physical_refund),
        }
    } else {
        0
    };

    // Postage the buyer bears, and the insurance that reimburses the return leg.
    let buyer_pays_shipping = match kind {
        AfterSalesType::ReturnRefund if has_physical && buyer_bears_postage => {
            params.return_shipping.return_leg_fee.minor
        }
        AfterSalesType::Exchange if has_physical && buyer_bears_postage => add(
            params.return_shipping.return_leg_fee.minor,
            params.return_shipping.exchange_reship_fee.minor,
        )?,
        _ => 0,
    };
    let insurance = match &params.shipping_insurance {
        ShippingInsurance::On { payout } if buyer_pays_shipping > 0 => payout.minor,
        _ => 0,
    };

    let entitled = add(goods_refund, shipping_fee_refund)? - restocking_fee;
    let total = entitled.min(request.requested_amount.minor);
    if total > cap || total < 0 {
        return Err(DomainError::RefundAboveCap {
            refund: money(total),
            cap: money(cap),
        });
    }
    Ok(RefundBreakdown {
        version: BREAKDOWN_VERSION,
        currency,
        after_sales_type: kind,
        fault,
        lines,
        goods_refund: money(goods_refund),
        shipping_fee_refund: money(shipping_fee_refund),
        restocking_fee: money(restocking_fee),
        entitled: money(entitled),
        requested: request.requested_amount,
        waived_by_buyer: money(entitled - total),
        total: money(total),
        insurance: money(insurance),
        buyer_pays_shipping: money(buyer_pays_shipping),
    })
}

/// What some units of a line were paid, and how their gross splits into discount, coupon
/// and net. All in minor units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) gross: i64,
    pub(crate) discount: i64,
    pub(crate) coupon: i64,
    pub(crate) net: i64,
}

/// The next `quantity` units of `line` after the ones already returned (rounding rule 2).
///
/// With `P` the paid amount, `Q` the units bought and `T` the line discount plus coupon
/// part, cumulatively over the first `m` units: `net(m) = floor(P·m/Q)`,
/// `deductions(m) = unit_price·m − net(m)` and `coupon(m) = floor(C·deductions(m)/T)`. Each
/// is non-decreasing in `m` and reaches `P`, `T` and `C` at `m = Q`, so a piece is the
/// difference of two cumulative values and the pieces of a line always add up exactly.
/// `quantity` is clamped to the units left.
pub(crate) fn line_piece(line: &OrderLine, amounts: &LineAmounts, quantity: u32) -> Piece {
    let whole = i128::from(line.quantity);
    let before = i128::from(line.returned_quantity.min(line.quantity));
    let after = (before + i128::from(quantity)).min(whole);
    let unit = i128::from(line.unit_price.minor);
    let deductions_total = i128::from(amounts.discount) + i128::from(amounts.coupon);
    let net_upto = |m: i128| i128::from(cumulative_share(amounts.paid, m, whole));
    let deductions_upto = |m: i128| unit * m - net_upto(m);
    let coupon_upto = |m: i128| {
        i128::from(cumulative_share(
            amounts.coupon,
            deductions_upto(m),
            deductions_total,
        ))
    };
    let gross = unit * (after - before);
    let net = net_upto(after) - net_upto(before);
    let coupon = coupon_upto(after) - coupon_upto(before);
    let discount = (deductions_upto(after) - deductions_upto(before)) - coupon;
    // Every value lies between zero and the line's gross amount, which fits in an i64.
    let narrow = |v: i128| i64::try_from(v).unwrap_or(0);
    Piece {
        gross: narrow(gross),
        discount: narrow(discount),
        coupon: narrow(coupon),
        net: narrow(net),
    }
}

/// True when, after taking `pieces` (line position, units), every unit of every line of the
/// order is returned or cancelled.
pub(crate) fn covers_whole_order(order: &OrderSnapshot, pieces: &[(usize, u32)]) -> bool {
    order.lines.iter().enumerate().all(|(index, line)| {
        let taken: u64 = pieces
            .iter()
            .filter(|(i, _)| *i == index)
            .map(|(_, q)| u64::from(*q))
            .sum();
        u64::from(line.returned_quantity) + taken >= u64::from(line.quantity)
    })
}

fn add(a: i64, b: i64) -> Result<i64, DomainError> {
    a.checked_add(b)
        .ok_or(DomainError::Money(MoneyError::Overflow))
}

fn same_currency(currency: Currency, m: &Money) -> Result<(), DomainError> {
    if m.currency == currency {
        Ok(())
    } else {
        Err(DomainError::Money(MoneyError::CurrencyMismatch {
            left: currency,
            right: m.currency,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{CategoryId, OrderId, PaymentId, Sku, Spu, UnixMillis};

    fn line(quantity: u32, unit: i64) -> OrderLine {
        OrderLine {
            line_id: LineId::new("L"),
            sku: Sku::new("S"),
            spu: Spu::new("P"),
            category: CategoryId::new("c"),
            goods: LineGoods::Physical,
            quantity,
            unit_price: Money::new(unit, Currency::CNY),
            line_discount: Money::zero(Currency::CNY),
            flags: vec![],
            returned_quantity: 0,
            refunded: Money::zero(Currency::CNY),
            open_requests: vec![],
        }
    }

    #[test]
    fn pieces_of_a_line_add_up_and_stay_non_negative() {
        // The troublesome case for naive per-component rounding: unit 1, two units, one
        // minor unit of discount and one of coupon, nothing paid.
        let mut l = line(2, 1);
        let a = LineAmounts {
            gross: 2,
            discount: 1,
            coupon: 1,
            paid: 0,
            refunded: 0,
        };
        let first = line_piece(&l, &a, 1);
        l.returned_quantity = 1;
        let second = line_piece(&l, &a, 1);
        for p in [first, second] {
            assert!(p.net >= 0 && p.discount >= 0 && p.coupon >= 0, "{p:?}");
            assert_eq!(p.gross, p.discount + p.coupon + p.net);
        }
        assert_eq!(first.net + second.net, 0);
        assert_eq!(first.coupon + second.coupon, 1);
        assert_eq!(first.discount + second.discount, 1);
    }

    #[test]
    fn one_of_three_units_rounds_down_and_the_last_takes_the_rest() {
        let mut l = line(3, 100);
        let a = LineAmounts {
            gross: 300,
            discount: 0,
            coupon: 1,
            paid: 299,
            refunded: 0,
        };
        let nets: Vec<i64> = (0..3)
            .map(|r| {
                l.returned_quantity = r;
                line_piece(&l, &a, 1).net
            })
            .collect();
        assert_eq!(nets, [99, 100, 100]);
    }

    #[test]
    fn whole_order_coverage_counts_earlier_returns() {
        let mut a = line(2, 100);
        a.returned_quantity = 1;
        let mut b = line(1, 100);
        b.line_id = LineId::new("M");
        let order = OrderSnapshot {
            order_id: OrderId::new("O"),
            payment_id: PaymentId::new("P"),
            state: OrderState::Paid,
            paid_at: UnixMillis(0),
            lines: vec![a, b],
            coupon: Money::zero(Currency::CNY),
            shipping_fee: Money::zero(Currency::CNY),
            paid_total: Money::new(300, Currency::CNY),
        };
        assert!(covers_whole_order(&order, &[(0, 1), (1, 1)]));
        assert!(!covers_whole_order(&order, &[(1, 1)]));
    }
}
