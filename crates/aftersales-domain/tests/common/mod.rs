//! Builders shared by the integration tests.

#![allow(dead_code)]

use aftersales_domain::{
    AfterSalesRequest, AfterSalesType, CategoryId, CourseId, EntitlementId, LineGoods, LineId,
    OrderId, OrderLine, OrderSnapshot, OrderState, PaymentId, Reason, RequestLine, RestockingFee,
    ReturnShipping, ReturnShippingPayer, RuleParams, ShippingInsurance, Sku, Spu, UnixMillis,
    VirtualLine,
};
use aftersales_money::{Currency, Money};

/// Paid at noon, 1 March 2025 UTC.
pub const PAID_AT: UnixMillis = UnixMillis(1_740_830_400_000);
pub const DAY: i64 = UnixMillis::DAY;
pub const HOUR: i64 = 3_600_000;

pub fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

pub fn at(offset_millis: i64) -> UnixMillis {
    after(PAID_AT, offset_millis)
}

pub fn after(start: UnixMillis, millis: i64) -> UnixMillis {
    UnixMillis(start.0 + millis)
}

/// Shipped one day after payment.
pub fn shipped() -> OrderState {
    OrderState::Shipped {
        shipped_at: at(DAY),
    }
}

/// Shipped one day after payment, delivered two days after payment.
pub fn delivered() -> OrderState {
    OrderState::Delivered {
        shipped_at: at(DAY),
        delivered_at: delivered_at(),
    }
}

pub fn delivered_at() -> UnixMillis {
    at(2 * DAY)
}

/// A physical line of `quantity` units at `unit` minor units with a line discount.
pub fn physical(id: &str, quantity: u32, unit: Money, discount: Money) -> OrderLine {
    OrderLine {
        line_id: LineId::new(id),
        sku: Sku::new(format!("{id}-sku")),
        spu: Spu::new(format!("{id}-spu")),
        category: CategoryId::new("apparel.women"),
        goods: LineGoods::Physical,
        quantity,
        unit_price: unit,
        line_discount: discount,
        flags: vec![],
        returned_quantity: 0,
        refunded: Money::zero(unit.currency),
        open_requests: vec![],
    }
}

/// A course line of one unit.
pub fn course(id: &str, price: Money, lessons_total: u32, lessons_consumed: u32) -> OrderLine {
    OrderLine {
        line_id: LineId::new(id),
        sku: Sku::new(format!("{id}-sku")),
        spu: Spu::new("course-bundle"),
        category: CategoryId::new("education.courses"),
        goods: LineGoods::Virtual(VirtualLine {
            course: CourseId::new(format!("{id}-course")),
            lessons_total,
            lessons_consumed,
            entitlement: EntitlementId::new(format!("{id}-entitlement")),
        }),
        quantity: 1,
        unit_price: price,
        line_discount: Money::zero(price.currency),
        flags: vec![],
        returned_quantity: 0,
        refunded: Money::zero(price.currency),
        open_requests: vec![],
    }
}

/// An order whose paid total is computed so the snapshot adds up.
pub fn order(
    lines: Vec<OrderLine>,
    coupon: Money,
    shipping: Money,
    state: OrderState,
) -> OrderSnapshot {
    let nets: i64 = lines
        .iter()
        .map(|l| l.unit_price.minor * i64::from(l.quantity) - l.line_discount.minor)
        .sum();
    OrderSnapshot {
        order_id: OrderId::new("O-1"),
        payment_id: PaymentId::new("PAY-1"),
        state,
        paid_at: PAID_AT,
        lines,
        coupon,
        shipping_fee: shipping,
        paid_total: Money::new(nets - coupon.minor + shipping.minor, coupon.currency),
    }
}

/// A typical apparel business line: 7 days no reason, no return once unsealed, buyer pays
/// 12.00 return postage and 8.00 reshipment unless the merchant is at fault.
pub fn params() -> RuleParams {
    RuleParams {
        no_reason_window_days: 7,
        non_returnable: vec![aftersales_domain::LineFlag::Unsealed],
        excluded_categories: vec![],
        consumed_threshold_bp: 10_000,
        return_shipping: ReturnShipping {
            payer: ReturnShippingPayer::BuyerUnlessMerchantFault,
            return_leg_fee: cny(1_200),
            exchange_reship_fee: cny(800),
        },
        shipping_insurance: ShippingInsurance::Off,
        restocking_fee: RestockingFee::None,
    }
}

/// A request for `(line, quantity)` pairs.
pub fn request(
    kind: AfterSalesType,
    lines: &[(&str, u32)],
    reason: Reason,
    requested: Money,
) -> AfterSalesRequest {
    AfterSalesRequest {
        order_id: OrderId::new("O-1"),
        after_sales_type: kind,
        lines: lines
            .iter()
            .map(|(id, quantity)| RequestLine {
                line_id: LineId::new(*id),
                quantity: *quantity,
                replacement: None,
            })
            .collect(),
        reason,
        evidence: vec![],
        requested_amount: requested,
    }
}

/// The stable codes of a list of refusals.
#[track_caller]
pub fn codes(refusals: &[aftersales_domain::Refusal]) -> Vec<&'static str> {
    refusals.iter().map(|r| r.code.as_str()).collect()
}
