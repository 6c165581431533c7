//! What the order system tells us about an order, and what each line was really paid.

use std::collections::HashSet;

use aftersales_money::{Currency, Money};
use serde::{Deserialize, Serialize};

use crate::apportion::largest_remainder;
use crate::error::DomainError;
use crate::ids::{
    CategoryId, CourseId, EntitlementId, LineId, OrderId, PaymentId, ServiceOrderId, Sku, Spu,
    UnixMillis,
};
use crate::model::GoodsKind;

/// A snapshot of one paid order, as the order system reports it.
///
/// The snapshot must add up: `Σ(unit_price × quantity − line_discount) − coupon +
/// shipping_fee = paid_total`, in one currency. [`OrderSnapshot::validate`] checks this and
/// every other invariant; the rule check and the refund calculation both call it and refuse
/// an order that does not add up, so no money moves on inconsistent data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderSnapshot {
    /// The order.
    pub order_id: OrderId,
    /// The payment that paid it (refunds go back to it).
    pub payment_id: PaymentId,
    /// Paid, shipped or delivered, with the times.
    pub state: OrderState,
    /// When it was paid; virtual goods are delivered at payment.
    pub paid_at: UnixMillis,
    /// The order lines.
    pub lines: Vec<OrderLine>,
    /// The order-level coupon, apportioned across all lines (zero when none).
    pub coupon: Money,
    /// The shipping fee the buyer paid for the whole order (zero when free).
    pub shipping_fee: Money,
    /// What the buyer paid in total.
    pub paid_total: Money,
}

/// How far the order got. Only paid orders reach after-sales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum OrderState {
    /// Paid, not shipped yet.
    Paid,
    /// Handed to the carrier.
    Shipped {
        /// When it shipped.
        shipped_at: UnixMillis,
    },
    /// Signed for by the buyer; the no-reason window runs from `delivered_at`.
    Delivered {
        /// When it shipped.
        shipped_at: UnixMillis,
        /// When the buyer signed for it.
        delivered_at: UnixMillis,
    },
}

impl OrderState {
    /// `paid`, `shipped` or `delivered`.
    pub fn as_str(&self) -> &'static str {
        match self {
            OrderState::Paid => "paid",
            OrderState::Shipped { .. } => "shipped",
            OrderState::Delivered { .. } => "delivered",
        }
    }
}

/// One order line: a SKU and a quantity, or a course inside a virtual product.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The line.
    pub line_id: LineId,
    /// The SKU sold on this line (for a course line, the course's SKU).
    pub sku: Sku,
    /// The SKU's product; the lines of one virtual product share it.
    pub spu: Spu,
    /// The category, used by exclusions and analytics.
    pub category: CategoryId,
    /// Physical goods, or a virtual course with its lessons.
    pub goods: LineGoods,
    /// Units bought (at least 1).
    pub quantity: u32,
    /// Price of one unit before any discount.
    pub unit_price: Money,
    /// Discount on the whole line (not per unit), before the order coupon.
    pub line_discount: Money,
    /// Facts that can make the line non-returnable.
    #[serde(default)]
    pub flags: Vec<LineFlag>,
    /// Units already returned or cancelled by earlier after-sales.
    #[serde(default)]
    pub returned_quantity: u32,
    /// Money already refunded on this line by earlier after-sales.
    pub refunded: Money,
    /// After-sales requests still open on this line.
    #[serde(default)]
    pub open_requests: Vec<ServiceOrderId>,
}

impl OrderLine {
    /// Physical or virtual.
    pub fn goods_kind(&self) -> GoodsKind {
        match self.goods {
            LineGoods::Physical => GoodsKind::Physical,
            LineGoods::Virtual(_) => GoodsKind::Virtual,
        }
    }

    /// Units bought minus units already returned.
    pub fn remaining_quantity(&self) -> u32 {
        self.quantity.saturating_sub(self.returned_quantity)
    }

    /// True when the line carries `flag`.
    pub fn has_flag(&self, flag: LineFlag) -> bool {
        self.flags.contains(&flag)
    }
}

/// What a line sells.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LineGoods {
    /// Goods that ship.
    Physical,
    /// A course (or other lesson-counted entitlement) inside a virtual product.
    Virtual(VirtualLine),
}

/// The entitlement side of a virtual line.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VirtualLine {
    /// The course.
    pub course: CourseId,
    /// Lessons the course holds (at least 1).
    pub lessons_total: u32,
    /// Lessons the buyer already took.
    pub lessons_consumed: u32,
    /// The entitlement to revoke on refund.
    pub entitlement: EntitlementId,
}

/// A fact about a line that a business line may declare non-returnable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LineFlag {
    /// The packaging seal was broken (拆封).
    Unsealed,
    /// The device or entitlement was activated.
    Activated,
    /// Made to the buyer's order.
    CustomMade,
    /// Fresh or perishable food.
    Perishable,
}

impl LineFlag {
    /// The snake_case name used in config and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            LineFlag::Unsealed => "unsealed",
            LineFlag::Activated => "activated",
            LineFlag::CustomMade => "custom_made",
            LineFlag::Perishable => "perishable",
        }
    }
}

/// What one line was paid, after its own discount and its share of the order coupon.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LinePayment {
    /// The line.
    pub line_id: LineId,
    /// `unit_price × quantity`.
    pub gross: Money,
    /// The line's own discount.
    pub line_discount: Money,
    /// The line's part of the order coupon (largest remainder over the lines' net amounts).
    pub coupon_share: Money,
    /// `gross − line_discount − coupon_share`.
    pub paid: Money,
}

/// A line's amounts in minor units, all in the order's currency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct LineAmounts {
    pub(crate) gross: i64,
    pub(crate) discount: i64,
    pub(crate) coupon: i64,
    pub(crate) paid: i64,
    pub(crate) refunded: i64,
}

impl OrderSnapshot {
    /// The order's currency: the currency of `paid_total`.
    pub fn currency(&self) -> Currency {
        self.paid_total.currency
    }

    /// The line with this id, with its position.
    pub fn line(&self, id: &LineId) -> Option<(usize, &OrderLine)> {
        self.lines
            .iter()
            .enumerate()
            .find(|(_, line)| &line.line_id == id)
    }

    /// Checks that the snapshot adds up (see the type's documentation).
    pub fn validate(&self) -> Result<(), DomainError> {
        self.amounts().map(|_| ())
    }

    /// What each line was paid: its gross, its discount, its coupon share and the rest.
    ///
    /// The coupon is split over **all** lines of the order by their net amounts
    /// (`gross − line_discount`) with the largest-remainder method, so the shares sum to the
    /// coupon exactly and never exceed a line's net amount. Fails when the snapshot does not
    /// add up.
    pub fn line_payments(&self) -> Result<Vec<LinePayment>, DomainError> {
        let currency = self.currency();
        let money = |minor| Money::new(minor, currency);
        Ok(self
            .lines
            .iter()
            .zip(self.amounts()?)
            .map(|(line, a)| LinePayment {
                line_id: line.line_id.clone(),
                gross: money(a.gross),
                line_discount: money(a.discount),
                coupon_share: money(a.coupon),
                paid: money(a.paid),
            })
            .collect())
    }

    /// Validates the snapshot and returns every line's amounts in minor units.
    pub(crate) fn amounts(&self) -> Result<Vec<LineAmounts>, DomainError> {
        let bad = |why: String| DomainError::InconsistentOrder {
            order: self.order_id.clone(),
            why,
        };
        let currency = self.currency();
        let in_currency = |what: &str, m: &Money| -> Result<i64, DomainError> {
            if m.currency != currency {
                return Err(bad(format!(
                    "{what} is in {} but the order was paid in {currency}",
                    m.currency
                )));
            }
            if m.is_negative() {
                return Err(bad(format!("{what} is negative ({m})")));
            }
            Ok(m.minor)
        };
        let coupon = in_currency("the coupon", &self.coupon)?;
        let shipping = in_currency("the shipping fee", &self.shipping_fee)?;
        let paid_total = in_currency("the paid total", &self.paid_total)?;
        if self.lines.is_empty() {
            return Err(bad("the order has no lines".to_owned()));
        }
        match self.state {
            OrderState::Paid => {}
            OrderState::Shipped { shipped_at } | OrderState::Delivered { shipped_at, .. }
                if shipped_at < self.paid_at =>
            {
                return Err(bad("it shipped before it was paid".to_owned()));
            }
            OrderState::Delivered {
                shipped_at,
                delivered_at,
            } if delivered_at < shipped_at => {
                return Err(bad("it was delivered before it shipped".to_owned()));
            }
            OrderState::Shipped { .. } | OrderState::Delivered { .. } => {}
        }

        let mut seen = HashSet::new();
        let mut nets = Vec::with_capacity(self.lines.len());
        let mut partial = Vec::with_capacity(self.lines.len());
        for line in &self.lines {
            let id = &line.line_id;
            if !seen.insert(id) {
                return Err(bad(format!("line {id} appears twice")));
            }
            if line.quantity == 0 {
                return Err(bad(format!("line {id} has quantity 0")));
            }
            if line.returned_quantity > line.quantity {
                return Err(bad(format!(
                    "line {id} has {} units returned out of {}",
                    line.returned_quantity, line.quantity
                )));
            }
            if let LineGoods::Virtual(v) = &line.goods {
                if v.lessons_total == 0 {
                    return Err(bad(format!("course line {id} has no lessons")));
                }
                if v.lessons_consumed > v.lessons_total {
                    return Err(bad(format!(
                        "course line {id} has {} of {} lessons consumed",
                        v.lessons_consumed, v.lessons_total
                    )));
                }
            }
            let unit = in_currency(&format!("the unit price of line {id}"), &line.unit_price)?;
            let discount = in_currency(&format!("the discount of line {id}"), &line.line_discount)?;
            let refunded =
                in_currency(&format!("the refunded amount of line {id}"), &line.refunded)?;
            let gross = unit
                .checked_mul(i64::from(line.quantity))
                .ok_or_else(|| bad(format!("the gross amount of line {id} overflows")))?;
            let net = gross
                .checked_sub(discount)
                .filter(|n| *n >= 0)
                .ok_or_else(|| {
                    bad(format!(
                        "the discount of line {id} is larger than its gross amount"
                    ))
                })?;
            nets.push(net);
            partial.push((gross, discount, refunded));
        }

        let net_sum: i128 = nets.iter().map(|n| i128::from(*n)).sum();
        if i128::from(coupon) > net_sum {
            return Err(bad(format!(
                "the coupon {} is larger than the lines' net amounts",
                self.coupon
            )));
        }
        let shares = largest_remainder(coupon, &nets)?;

        let mut amounts = Vec::with_capacity(self.lines.len());
        let mut paid_sum: i128 = i128::from(shipping);
        for ((line, (gross, discount, refunded)), (net, share)) in
            self.lines.iter().zip(partial).zip(nets.iter().zip(shares))
        {
            // The share never exceeds the net amount (largest remainder with coupon ≤ Σnet).
            let paid = net - share;
            if refunded > paid {
                return Err(bad(format!(
                    "line {} has {} refunded but only {} paid",
                    line.line_id,
                    Money::new(refunded, currency),
                    Money::new(paid, currency)
                )));
            }
            paid_sum += i128::from(paid);
            amounts.push(LineAmounts {
                gross,
                discount,
                coupon: share,
                paid,
                refunded,
            });
        }
        if paid_sum != i128::from(paid_total) {
            return Err(bad(format!(
                "the lines and shipping add up to {} minor units but the paid total is {}",
                paid_sum, self.paid_total
            )));
        }
        Ok(amounts)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cny(minor: i64) -> Money {
        Money::new(minor, Currency::CNY)
    }

    fn line(id: &str, quantity: u32, unit: i64, discount: i64) -> OrderLine {
        OrderLine {
            line_id: LineId::new(id),
            sku: Sku::new(format!("sku-{id}")),
            spu: Spu::new("spu"),
            category: CategoryId::new("apparel"),
            goods: LineGoods::Physical,
            quantity,
            unit_price: cny(unit),
            line_discount: cny(discount),
            flags: vec![],
            returned_quantity: 0,
            refunded: cny(0),
            open_requests: vec![],
        }
    }

    fn order(lines: Vec<OrderLine>, coupon: i64, shipping: i64, paid: i64) -> OrderSnapshot {
        OrderSnapshot {
            order_id: OrderId::new("O1"),
            payment_id: PaymentId::new("P1"),
            state: OrderState::Paid,
            paid_at: UnixMillis(0),
            lines,
            coupon: cny(coupon),
            shipping_fee: cny(shipping),
            paid_total: cny(paid),
        }
    }

    #[test]
    fn coupon_is_apportioned_over_all_lines_by_net_amount() {
        // Nets 300.00 / 200.00 / 100.00, coupon 10.00: 5.00 / 3.33 / 1.67.
        let o = order(
            vec![
                line("A", 3, 10_000, 0),
                line("B", 1, 20_000, 0),
                line("C", 2, 6_000, 2_000),
            ],
            1_000,
            800,
            60_000 - 1_000 + 800,
        );
        let paid = o.line_payments().unwrap();
        let shares: Vec<i64> = paid.iter().map(|p| p.coupon_share.minor).collect();
        assert_eq!(shares, [500, 333, 167]);
        let paid_minor: Vec<i64> = paid.iter().map(|p| p.paid.minor).collect();
        assert_eq!(paid_minor, [29_500, 19_667, 9_833]);
    }

    #[test]
    fn snapshots_that_do_not_add_up_are_refused() {
        let o = order(vec![line("A", 1, 1_000, 0)], 0, 0, 999);
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "order O1 is inconsistent: the lines and shipping add up to 1000 minor units but the paid total is 9.99 CNY"
        );
        let o = order(vec![line("A", 1, 1_000, 1_001)], 0, 0, 0);
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("discount of line A")
        );
        let o = order(vec![line("A", 1, 1_000, 0)], 1_001, 0, 0);
        assert!(o.validate().unwrap_err().to_string().contains("coupon"));
        let mut o = order(vec![line("A", 1, 1_000, 0)], 0, 0, 1_000);
        o.lines[0].refunded = cny(1_001);
        assert!(o.validate().unwrap_err().to_string().contains("refunded"));
        let mut o = order(vec![line("A", 1, 1_000, 0)], 0, 0, 1_000);
        o.lines[0].unit_price = Money::new(1_000, Currency::USD);
        assert_eq!(
            o.validate().unwrap_err().to_string(),
            "order O1 is inconsistent: the unit price of line A is in USD but the order was paid in CNY"
        );
        let o = order(
            vec![line("A", 1, 1_000, 0), line("A", 1, 1_000, 0)],
            0,
            0,
            2_000,
        );
        assert!(
            o.validate()
                .unwrap_err()
                .to_string()
                .contains("appears twice")
        );
    }

    #[test]
    fn snapshot_reads_from_json() {
        let json = r#"{
            "order_id": "O1", "payment_id": "P1",
            "state": {"kind": "delivered", "shipped_at": 10, "delivered_at": 20},
            "paid_at": 5,
            "lines": [{
                "line_id": "L1", "sku": "S1", "spu": "P", "category": "courses",
                "goods": {"kind": "virtual", "course": "C1", "lessons_total": 10,
                          "lessons_consumed": 3, "entitlement": "E1"},
                "quantity": 1,
                "unit_price": {"minor": 100000, "currency": "CNY"},
                "line_discount": {"minor": 0, "currency": "CNY"},
                "flags": ["activated"],
                "refunded": {"minor": 0, "currency": "CNY"}
            }],
            "coupon": {"minor": 0, "currency": "CNY"},
            "shipping_fee": {"minor": 0, "currency": "CNY"},
            "paid_total": {"minor": 100000, "currency": "CNY"}
        }"#;
        let o: OrderSnapshot = serde_json::from_str(json).unwrap();
        assert_eq!(o.state.as_str(), "delivered");
        assert!(o.lines[0].has_flag(LineFlag::Activated));
        assert_eq!(o.lines[0].goods_kind(), GoodsKind::Virtual);
        assert_eq!(o.line_payments().unwrap()[0].paid, cny(100_000));
    }
}
