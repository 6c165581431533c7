//! Property tests of the money invariants: exact apportionment, never above paid, no cent
//! lost or created when a line is returned in pieces, in every kind of currency.

mod common;

use aftersales_domain::{
    AfterSalesType, OrderLine, OrderSnapshot, OrderState, Reason, RefundInput, RestockingFee,
    RuleParams, calculate_refund, check, largest_remainder,
};
use aftersales_money::{Currency, Money};
use proptest::prelude::*;

use common::*;

/// Two-decimal, zero-decimal (JPY) and three-decimal (BHD) currencies.
fn currency() -> impl Strategy<Value = Currency> {
    let bhd = match Currency::new("BHD") {
        Ok(bhd) => bhd,
        Err(err) => panic!("{err}"),
    };
    prop::sample::select(vec![Currency::CNY, Currency::JPY, bhd, Currency::USD])
}

/// One physical line: (quantity, unit price, line discount as a share of gross in bp).
fn line_spec() -> impl Strategy<Value = (u32, i64, u32)> {
    (1u32..=7, 0i64..=2_000_000, 0u32..=10_000)
}

/// An order that adds up, in `currency`, with a coupon up to the lines' net amounts and a
/// shipping fee, delivered.
fn snapshot() -> impl Strategy<Value = OrderSnapshot> {
    (
        currency(),
        prop::collection::vec(line_spec(), 1..5),
        0u32..=10_000,
        0i64..=5_000,
    )
        .prop_map(|(currency, specs, coupon_bp, shipping)| {
            let money = |minor| Money::new(minor, currency);
            let lines: Vec<OrderLine> = specs
                .iter()
                .enumerate()
                .map(|(i, (quantity, unit, discount_bp))| {
                    let gross = unit * i64::from(*quantity);
                    let discount = gross * i64::from(*discount_bp) / 10_000;
                    physical(&format!("L{i}"), *quantity, money(*unit), money(discount))
                })
                .collect();
            let nets: i64 = lines
                .iter()
                .map(|l| l.unit_price.minor * i64::from(l.quantity) - l.line_discount.minor)
                .sum();
            let coupon = nets * i64::from(coupon_bp) / 10_000 / 2;
            order(lines, money(coupon), money(shipping), delivered())
        })
}

fn params_in(currency: Currency, restocking: RestockingFee) -> RuleParams {
    let mut p = params();
    p.return_shipping.return_leg_fee = Money::new(1_200, currency);
    p.return_shipping.exchange_reship_fee = Money::new(800, currency);
    p.restocking_fee = restocking;
    p
}

fn everything(currency: Currency) -> Money {
    Money::new(i64::MAX / 4, currency)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn apportioned_parts_sum_exactly_to_the_whole(
        total in 0i64..=i64::MAX / 2,
        weights in prop::collection::vec(0i64..=i64::MAX / 64, 1..30),
    ) {
        prop_assume!(weights.iter().any(|w| *w > 0));
        let parts = largest_remainder(total, &weights).unwrap();
        prop_assert_eq!(parts.iter().map(|p| i128::from(*p)).sum::<i128>(), i128::from(total));
        prop_assert!(parts.iter().all(|p| *p >= 0));
    }

    #[test]
    fn coupon_shares_sum_to_the_coupon_and_lines_to_the_paid_total(o in snapshot()) {
        let payments = o.line_payments().unwrap();
        let coupons: i64 = payments.iter().map(|p| p.coupon_share.minor).sum();
        prop_assert_eq!(coupons, o.coupon.minor);
        let paid: i64 = payments.iter().map(|p| p.paid.minor).sum();
        prop_assert_eq!(paid + o.shipping_fee.minor, o.paid_total.minor);
        prop_assert!(payments.iter().all(|p| p.paid.minor >= 0));
    }

    /// Return every unit of every line in random pieces: each line refunds exactly what it
    /// was paid, its discount and coupon shares add up to its discount and coupon part, and
    /// no piece has a negative component.
    #[test]
    fn returning_all_units_in_pieces_refunds_exactly_what_was_paid(
        mut o in snapshot(),
        cuts in prop::collection::vec(1u32..=3, 1..40),
    ) {
        let currency = o.currency();
        let p = params_in(currency, RestockingFee::None);
        let payments = o.line_payments().unwrap();
        let mut cut = cuts.iter().cycle();
        let mut refunded_total: i64 = 0;
        for (index, payment) in payments.iter().enumerate() {
            let (mut net, mut discount, mut coupon, mut gross) = (0i64, 0i64, 0i64, 0i64);
            while o.lines[index].remaining_quantity() > 0 {
                let k = (*cut.next().unwrap()).min(o.lines[index].remaining_quantity());
                let line_id = o.lines[index].line_id.as_str().to_owned();
                let req = request(
                    AfterSalesType::ReturnRefund,
                    &[(line_id.as_str(), k)],
                    Reason::Quality,
                    everything(currency),
                );
                let b = calculate_refund(&RefundInput { request: &req, order: &o, params: &p })
                    .unwrap();
                let l = &b.lines[0];
                prop_assert!(l.net.minor >= 0 && l.discount_share.minor >= 0);
                prop_assert!(l.coupon_share.minor >= 0);
                prop_assert_eq!(
                    l.gross.minor,
                    l.discount_share.minor + l.coupon_share.minor + l.net.minor
                );
                prop_assert_eq!(b.total, l.net);
                net += l.net.minor;
                discount += l.discount_share.minor;
                coupon += l.coupon_share.minor;
                gross += l.gross.minor;
                o.lines[index].returned_quantity += k;
                o.lines[index].refunded = Money::new(net, currency);
            }
            prop_assert_eq!(net, payment.paid.minor);
            prop_assert_eq!(discount, payment.line_discount.minor);
            prop_assert_eq!(coupon, payment.coupon_share.minor);
            prop_assert_eq!(gross, payment.gross.minor);
            refunded_total += net;
        }
        prop_assert_eq!(refunded_total + o.shipping_fee.minor, o.paid_total.minor);
    }

    /// Whatever was returned or refunded before, whatever the type, fee and requested amount:
    /// the refund never exceeds what the requested lines were paid minus what was already
    /// refunded on them (plus shipping on a whole cancel), nor what was requested, and the
    /// rule check's `max_refund` is never below it.
    #[test]
    fn refunds_never_exceed_what_was_paid(
        mut o in snapshot(),
        history in prop::collection::vec((0u32..=7, 0u32..=10_000), 4),
        picks in prop::collection::vec(0u32..=7, 4),
        kind in prop::sample::select(vec![
            AfterSalesType::CancelAfterPayment,
            AfterSalesType::RefundOnly,
            AfterSalesType::ReturnRefund,
        ]),
        reason in prop::sample::select(vec![Reason::NoReason, Reason::Quality]),
        restocking_bp in 0u32..=10_000,
        requested_bp in 0u32..=12_000,
    ) {
        let currency = o.currency();
        let payments = o.line_payments().unwrap();
        for (i, line) in o.lines.iter_mut().enumerate() {
            let (returned, refunded_bp) = history[i % history.len()];
            // The first line always keeps at least one unit, so every case requests something.
            let keep = if i == 0 { 1 } else { 0 };
            line.returned_quantity = returned.min(line.quantity - keep);
            let refunded = payments[i].paid.minor * i64::from(refunded_bp) / 10_000;
            line.refunded = Money::new(refunded, currency);
        }
        if kind == AfterSalesType::CancelAfterPayment {
            o.state = OrderState::Paid;
        }
        let lines: Vec<(String, u32)> = o
            .lines
            .iter()
            .enumerate()
            .map(|(i, l)| {
                let pick = if i == 0 { picks[0].max(1) } else { picks[i % picks.len()] };
                (l.line_id.as_str().to_owned(), pick.min(l.remaining_quantity()))
            })
            .filter(|(_, k)| *k > 0)
            .collect();
        prop_assert!(!lines.is_empty());
        let named: Vec<(&str, u32)> = lines.iter().map(|(id, k)| (id.as_str(), *k)).collect();

        let mut cap: i64 = 0;
        for (id, _) in &named {
            let (i, line) = o.line(&aftersales_domain::LineId::new(*id)).unwrap();
            cap += payments[i].paid.minor - line.refunded.minor;
        }
        let whole = kind == AfterSalesType::CancelAfterPayment
            && o.lines.iter().all(|l| {
                named.iter().find(|(id, _)| *id == l.line_id.as_str()).map_or(0, |(_, k)| *k)
                    + l.returned_quantity == l.quantity
            });
        if whole {
            cap += o.shipping_fee.minor;
        }
        let requested = Money::new(cap * i64::from(requested_bp) / 10_000, currency);
        let req = request(kind, &named, reason, requested);
        let p = params_in(currency, RestockingFee::BasisPoints { bp: restocking_bp });
        let b = calculate_refund(&RefundInput { request: &req, order: &o, params: &p }).unwrap();

        prop_assert!(b.total.minor >= 0);
        prop_assert!(b.total.minor <= cap, "total {} above cap {}", b.total, cap);
        prop_assert!(b.total.minor <= requested.minor);
        prop_assert_eq!(b.total.minor + b.waived_by_buyer.minor, b.entitled.minor);
        let nets: i64 = b.lines.iter().map(|l| l.net.minor).sum();
        prop_assert_eq!(nets, b.goods_refund.minor);
        prop_assert_eq!(b.shipping_fee_refund.minor > 0, whole && o.shipping_fee.minor > 0);

        if let Ok(verdict) = check(&req, &o, &p, at(3 * DAY)) {
            prop_assert!(verdict.max_refund.minor <= cap);
            prop_assert!(b.total.minor <= verdict.max_refund.minor);
        }
    }

    /// A course refund is `floor(paid × unconsumed / total)` and never more than paid.
    #[test]
    fn course_refunds_are_pro_rata_and_rounded_down(
        currency in currency(),
        price in 0i64..=100_000_000,
        total in 1u32..=500,
        consumed_bp in 0u32..=10_000,
    ) {
        let consumed = (u64::from(total) * u64::from(consumed_bp) / 10_000) as u32;
        let o = order(
            vec![course("C", Money::new(price, currency), total, consumed)],
            Money::zero(currency),
            Money::zero(currency),
            OrderState::Paid,
        );
        let req = request(AfterSalesType::ReturnRefund, &[("C", 1)], Reason::NoReason, everything(currency));
        let p = params_in(currency, RestockingFee::None);
        let b = calculate_refund(&RefundInput { request: &req, order: &o, params: &p }).unwrap();
        let expected = i128::from(price) * i128::from(total - consumed) / i128::from(total);
        prop_assert_eq!(i128::from(b.total.minor), expected);
        prop_assert!(b.total.minor <= price);
        prop_assert_eq!(b.lines[0].consumed_deduction.minor + b.total.minor, price);
    }
}
