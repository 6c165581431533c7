//! DOMAIN.md scenarios that are pure rules or calculation, with exact amounts.

mod common;

use aftersales_domain::{
    AfterSalesType, Coverage, Fault, GoodsKind, LineFlag, LineId, OrderState, Reason,
    RefundBreakdown, RefundInput, Replacement, ReturnLeg, ReturnShippingPayer, ShippingInsurance,
    Sku, Spu, calculate_refund, check, check_all,
};
use aftersales_money::{Currency, Money};

use common::*;

#[track_caller]
fn refund(
    request: &aftersales_domain::AfterSalesRequest,
    order: &aftersales_domain::OrderSnapshot,
    params: &aftersales_domain::RuleParams,
) -> RefundBreakdown {
    match calculate_refund(&RefundInput {
        request,
        order,
        params,
    }) {
        Ok(breakdown) => breakdown,
        Err(err) => panic!("refund calculation failed: {err}"),
    }
}

/// Two lines: A = 2 × 99.00, B = 1 × 49.90 with 5.00 off; a 10.00 coupon; 8.00 shipping.
/// Nets 198.00 / 44.90; the coupon splits 8.15 / 1.85 (largest remainder: B's .85 beats
/// A's .15), so A was paid 189.85 and B 43.05; with shipping the order cost 240.90.
fn scenario_1_order() -> aftersales_domain::OrderSnapshot {
    order(
        vec![
            physical("A", 2, cny(9_900), cny(0)),
            physical("B", 1, cny(4_990), cny(500)),
        ],
        cny(1_000),
        cny(800),
        OrderState::Paid,
    )
}

#[test]
fn scenario_1_full_cancel_before_shipment_refunds_everything_including_shipping() {
    let o = scenario_1_order();
    assert_eq!(o.paid_total, cny(24_090));
    let req = request(
        AfterSalesType::CancelAfterPayment,
        &[("A", 2), ("B", 1)],
        Reason::NoReason,
        cny(24_090),
    );
    let verdict = check(&req, &o, &params(), at(HOUR)).unwrap();
    assert_eq!(verdict.coverage, Coverage::WholeOrder);
    assert_eq!(verdict.return_leg, ReturnLeg::NotRequired);
    assert_eq!(verdict.max_refund, cny(24_090));

    let b = refund(&req, &o, &params());
    let lines: Vec<(i64, i64, i64, i64)> = b
        .lines
        .iter()
        .map(|l| {
            (
                l.gross.minor,
                l.discount_share.minor,
                l.coupon_share.minor,
                l.net.minor,
            )
        })
        .collect();
    assert_eq!(lines, [(19_800, 0, 815, 18_985), (4_990, 500, 185, 4_305)]);
    assert_eq!(b.goods_refund, cny(23_290));
    assert_eq!(b.shipping_fee_refund, cny(800));
    assert_eq!(b.total, cny(24_090));
    assert_eq!(b.total, o.paid_total);
    assert_eq!(b.buyer_pays_shipping, cny(0));
}

#[test]
fn scenario_1_partial_cancel_keeps_the_shipping_fee() {
    let o = scenario_1_order();
    let req = request(
        AfterSalesType::CancelAfterPayment,
        &[("B", 1)],
        Reason::NoReason,
        cny(4_305),
    );
    let verdict = check(&req, &o, &params(), at(HOUR)).unwrap();
    assert_eq!(verdict.coverage, Coverage::PartOfOrder);
    assert_eq!(verdict.max_refund, cny(4_305));
    let b = refund(&req, &o, &params());
    assert_eq!(b.shipping_fee_refund, cny(0));
    assert_eq!(b.total, cny(4_305));

    // Asking for the shipping fee on a partial cancel is asking for more than was paid.
    let greedy = request(
        AfterSalesType::CancelAfterPayment,
        &[("B", 1)],
        Reason::NoReason,
        cny(5_105),
    );
    assert_eq!(
        check(&greedy, &o, &params(), at(HOUR))
            .unwrap_err()
            .code
            .as_str(),
        "amount_exceeds_paid"
    );
}

#[test]
fn scenario_1_cancel_is_refused_once_shipped() {
    let mut o = scenario_1_order();
    o.state = shipped();
    let req = request(
        AfterSalesType::CancelAfterPayment,
        &[("A", 2), ("B", 1)],
        Reason::NoReason,
        cny(24_090),
    );
    let refusal = check(&req, &o, &params(), at(2 * DAY)).unwrap_err();
    assert_eq!(refusal.code.as_str(), "order_state");
    assert_eq!(
        refusal.message,
        "line A: cancel_after_payment is only possible before shipment (ask for \
         return_refund or refund_only), and the order is shipped"
    );
}

/// Line A = 3 × 100.00, line B = 1 × 50.00, a 20.00 coupon over both.
/// Coupon split by nets 300.00 : 50.00 → 17.14 / 2.86 (B's remainder .71 beats A's .29).
/// A was paid 282.86 for 3 units.
#[test]
fn scenario_8_partial_return_of_one_of_three_units_gets_its_coupon_share() {
    let mut o = order(
        vec![
            physical("A", 3, cny(10_000), cny(0)),
            physical("B", 1, cny(5_000), cny(0)),
        ],
        cny(2_000),
        cny(0),
        delivered(),
    );
    let shares: Vec<i64> = o
        .line_payments()
        .unwrap()
        .iter()
        .map(|p| p.coupon_share.minor)
        .collect();
    assert_eq!(shares, [1_714, 286]);

    let now = at(3 * DAY);
    let one = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::WrongSize,
        cny(9_428),
    );
    let verdict = check(&one, &o, &params(), now).unwrap();
    assert_eq!(verdict.coverage, Coverage::PartOfOrder);
    assert_eq!(verdict.return_leg, ReturnLeg::Required);
    assert_eq!(verdict.max_refund, cny(9_428));

    // 282.86 / 3 = 94.2866… → 94.28 for the first unit; the coupon share is 5.72.
    let first = refund(&one, &o, &params());
    let l = &first.lines[0];
    assert_eq!(l.quantity, 1);
    assert_eq!(l.gross, cny(10_000));
    assert_eq!(l.coupon_share, cny(572));
    assert_eq!(l.discount_share, cny(0));
    assert_eq!(l.net, cny(9_428));
    assert_eq!(first.total, cny(9_428));
    assert_eq!(first.shipping_fee_refund, cny(0));
    assert_eq!(first.buyer_pays_shipping, cny(1_200));

    // The other two units, one at a time, pick up the remaining cents: 94.29 each.
    let mut nets = vec![l.net.minor];
    let mut coupons = vec![l.coupon_share.minor];
    for _ in 0..2 {
        o.lines[0].returned_quantity += 1;
        o.lines[0].refunded = cny(nets.iter().sum());
        let next = request(
            AfterSalesType::ReturnRefund,
            &[("A", 1)],
            Reason::WrongSize,
            cny(100_000),
        );
        let b = refund(&next, &o, &params());
        nets.push(b.lines[0].net.minor);
        coupons.push(b.lines[0].coupon_share.minor);
    }
    assert_eq!(nets, [9_428, 9_429, 9_429]);
    assert_eq!(nets.iter().sum::<i64>(), 28_286);
    assert_eq!(coupons, [572, 571, 571]);
    assert_eq!(coupons.iter().sum::<i64>(), 1_714);
}

#[test]
fn scenario_9_exchange_same_spu_buyer_pays_both_legs_when_not_faulty() {
    let o = order(
        vec![physical("A", 1, cny(25_900), cny(0))],
        cny(0),
        cny(0),
        delivered(),
    );
    let mut req = request(
        AfterSalesType::Exchange,
        &[("A", 1)],
        Reason::WrongSize,
        cny(0),
    );
    req.lines[0].replacement = Some(Replacement {
        sku: Sku::new("A-sku-L"),
        spu: Spu::new("A-spu"),
        unit_price: cny(25_900),
    });
    let verdict = check(&req, &o, &params(), at(4 * DAY)).unwrap();
    assert_eq!(verdict.return_leg, ReturnLeg::Required);
    assert_eq!(verdict.fault, Fault::Buyer);
    assert_eq!(verdict.max_refund, cny(0));

    let b = refund(&req, &o, &params());
    assert_eq!(b.total, cny(0));
    assert!(b.lines.is_empty());
    // 12.00 back to the warehouse plus 8.00 to ship the new size.
    assert_eq!(b.buyer_pays_shipping, cny(2_000));

    // Faulty goods: the merchant pays the postage.
    let mut faulty = req.clone();
    faulty.reason = Reason::Quality;
    assert_eq!(refund(&faulty, &o, &params()).buyer_pays_shipping, cny(0));

    // The new size is out of stock: the workflow falls back to a refund.
    let mut fallback = req.clone();
    fallback.after_sales_type = AfterSalesType::ReturnRefund;
    fallback.lines[0].replacement = None;
    fallback.requested_amount = cny(25_900);
    let b = refund(&fallback, &o, &params());
    assert_eq!(b.total, cny(25_900));
    assert_eq!(b.buyer_pays_shipping, cny(1_200));
}

#[test]
fn scenario_9_exchange_must_stay_in_the_spu_at_the_same_price() {
    let o = order(
        vec![physical("A", 1, cny(25_900), cny(0))],
        cny(0),
        cny(0),
        delivered(),
    );
    let mut req = request(
        AfterSalesType::Exchange,
        &[("A", 1)],
        Reason::WrongSize,
        cny(100),
    );
    req.lines[0].replacement = Some(Replacement {
        sku: Sku::new("other"),
        spu: Spu::new("other-spu"),
        unit_price: cny(29_900),
    });
    let refusals = check_all(&req, &o, &params(), at(4 * DAY)).unwrap_err();
    assert_eq!(
        codes(&refusals),
        [
            "exchange_not_same_spu",
            "exchange_price_differs",
            "refund_on_exchange"
        ]
    );
    assert_eq!(
        refusals[1].message,
        "line A: the replacement other costs 299.00 CNY but the line's unit price is 259.00 CNY"
    );
    req.lines[0].replacement = None;
    req.requested_amount = cny(0);
    assert_eq!(
        check(&req, &o, &params(), at(4 * DAY))
            .unwrap_err()
            .code
            .as_str(),
        "exchange_replacement_missing"
    );
}

#[test]
fn scenario_10_course_with_3_of_10_lessons_consumed_is_refunded_pro_rata() {
    let o = order(
        vec![course("C1", cny(199_999), 10, 3)],
        cny(0),
        cny(0),
        OrderState::Paid,
    );
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("C1", 1)],
        Reason::NoReason,
        cny(199_999),
    );
    let verdict = check(&req, &o, &params(), at(2 * DAY)).unwrap();
    assert_eq!(verdict.goods, GoodsKind::Virtual);
    assert_eq!(verdict.return_leg, ReturnLeg::NotRequired);
    assert_eq!(verdict.revoke.len(), 1);
    assert_eq!(verdict.revoke[0].as_str(), "C1-entitlement");

    // 1999.99 × 7 / 10 = 1399.993 → 1399.99, rounded down.
    let b = refund(&req, &o, &params());
    assert_eq!(b.lines[0].consumed_deduction, cny(60_000));
    assert_eq!(b.lines[0].net, cny(139_999));
    assert_eq!(b.entitled, cny(139_999));
    assert_eq!(b.total, cny(139_999));
    assert_eq!(b.buyer_pays_shipping, cny(0));
    assert_eq!(b.insurance, cny(0));
}

#[test]
fn scenario_10_past_the_consumed_threshold_nothing_is_refunded() {
    let mut p = params();
    p.consumed_threshold_bp = 5_000;
    let at_threshold = order(
        vec![course("C1", cny(199_999), 10, 5)],
        cny(0),
        cny(0),
        OrderState::Paid,
    );
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("C1", 1)],
        Reason::NoReason,
        cny(199_999),
    );
    // Exactly half consumed is not over a 50% threshold.
    assert!(check(&req, &at_threshold, &p, at(DAY)).is_ok());
    assert_eq!(refund(&req, &at_threshold, &p).total, cny(99_999));

    let over = order(
        vec![course("C1", cny(199_999), 10, 6)],
        cny(0),
        cny(0),
        OrderState::Paid,
    );
    let refusal = check(&req, &over, &p, at(DAY)).unwrap_err();
    assert_eq!(refusal.code.as_str(), "consumed_over_threshold");
    assert_eq!(
        refusal.message,
        "line C1: 6 of 10 lessons are consumed, more than the 5000 bp after which nothing is refunded"
    );
    let b = refund(&req, &over, &p);
    assert_eq!(b.lines[0].consumed_deduction, cny(199_999));
    assert_eq!(b.total, cny(0));
}

#[test]
fn scenario_10_virtual_goods_have_no_cancel_and_no_refund_only() {
    let o = order(
        vec![course("C1", cny(10_000), 10, 0)],
        cny(0),
        cny(0),
        OrderState::Paid,
    );
    for kind in [
        AfterSalesType::CancelAfterPayment,
        AfterSalesType::RefundOnly,
    ] {
        let req = request(kind, &[("C1", 1)], Reason::NoReason, cny(10_000));
        let refusal = check(&req, &o, &params(), at(HOUR)).unwrap_err();
        assert_eq!(refusal.code.as_str(), "type_not_allowed_for_goods");
        assert_eq!(refusal.line_id, Some(LineId::new("C1")));
    }
}

/// Delivered two days after payment; day 9 after delivery starts 8 × 24 h later.
#[test]
fn scenario_17_day_9_of_a_7_day_window_is_refused_unless_the_merchant_is_at_fault() {
    let o = order(
        vec![physical("A", 1, cny(10_000), cny(0))],
        cny(0),
        cny(0),
        delivered(),
    );
    let day_9 = after(delivered_at(), 8 * DAY + HOUR);
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::NoReason,
        cny(10_000),
    );
    let refusal = check(&req, &o, &params(), day_9).unwrap_err();
    assert_eq!(refusal.code.as_str(), "out_of_window");
    assert_eq!(
        refusal.message,
        "line A: day 9 after delivery is past the 7-day no-reason return window, and the \
         reason is not the merchant's fault"
    );

    // Day 7 (the last hour of it) is still inside; day 8 is out.
    let last_hour_of_day_7 = after(delivered_at(), 7 * DAY - 1);
    assert!(check(&req, &o, &params(), last_hour_of_day_7).is_ok());
    let day_8 = after(delivered_at(), 7 * DAY);
    assert_eq!(
        check(&req, &o, &params(), day_8).unwrap_err().code.as_str(),
        "out_of_window"
    );

    // A faulty item is not bound by the no-reason window.
    let mut faulty = req.clone();
    faulty.reason = Reason::Quality;
    assert!(check(&faulty, &o, &params(), day_9).is_ok());
}

#[test]
fn scenario_17_unsealed_goods_are_not_returnable_without_a_merchant_fault() {
    let mut line = physical("A", 1, cny(10_000), cny(0));
    line.flags = vec![LineFlag::Unsealed];
    let o = order(vec![line], cny(0), cny(0), delivered());
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::NoReason,
        cny(10_000),
    );
    let refusal = check(&req, &o, &params(), at(3 * DAY)).unwrap_err();
    assert_eq!(refusal.code.as_str(), "unsealed_non_returnable");
    assert_eq!(
        refusal.message,
        "line A: the goods are unsealed, and this business line takes unsealed goods back \
         only when the merchant is at fault"
    );

    let mut damaged = req.clone();
    damaged.reason = Reason::Damaged;
    assert!(check(&damaged, &o, &params(), at(3 * DAY)).is_ok());

    // Out of window and unsealed: `check` reports the window first, `check_all` both.
    let day_9 = after(delivered_at(), 8 * DAY);
    assert_eq!(
        check(&req, &o, &params(), day_9).unwrap_err().code.as_str(),
        "out_of_window"
    );
    assert_eq!(
        codes(&check_all(&req, &o, &params(), day_9).unwrap_err()),
        ["out_of_window", "unsealed_non_returnable"]
    );
}

#[test]
fn scenario_19_shipping_insurance_reimburses_the_return_postage_separately() {
    let mut p = params();
    p.shipping_insurance = ShippingInsurance::On { payout: cny(1_000) };
    let o = order(
        vec![physical("A", 2, cny(15_000), cny(1_000))],
        cny(0),
        cny(0),
        delivered(),
    );
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 2)],
        Reason::NoReason,
        cny(29_000),
    );
    assert!(check(&req, &o, &p, at(3 * DAY)).is_ok());
    let b = refund(&req, &o, &p);
    assert_eq!(b.total, cny(29_000));
    assert_eq!(b.buyer_pays_shipping, cny(1_200));
    assert_eq!(b.insurance, cny(1_000));

    // Merchant at fault: the merchant pays the postage, so there is nothing to insure.
    let mut damaged = req.clone();
    damaged.reason = Reason::Damaged;
    let b = refund(&damaged, &o, &p);
    assert_eq!((b.buyer_pays_shipping, b.insurance), (cny(0), cny(0)));

    // Free returns: the same.
    p.return_shipping.payer = ReturnShippingPayer::Merchant;
    let b = refund(&req, &o, &p);
    assert_eq!((b.buyer_pays_shipping, b.insurance), (cny(0), cny(0)));
}

#[test]
fn scenario_20_refund_larger_than_paid_is_refused_with_a_clear_error() {
    let mut o = order(
        vec![physical("A", 1, cny(10_000), cny(0))],
        cny(0),
        cny(0),
        delivered(),
    );
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::Quality,
        cny(12_000),
    );
    let refusal = check(&req, &o, &params(), at(3 * DAY)).unwrap_err();
    assert_eq!(refusal.code.as_str(), "amount_exceeds_paid");
    assert_eq!(
        refusal.to_string(),
        "the requested refund 120.00 CNY is more than the 100.00 CNY paid for these units \
         and not yet refunded"
    );
    assert_eq!(
        serde_json::to_value(&refusal).unwrap(),
        serde_json::json!({
            "code": "amount_exceeds_paid",
            "message": refusal.message,
        })
    );

    // After a 30.00 refund-only on the line, at most 70.00 is left.
    o.lines[0].refunded = cny(3_000);
    let mut rest = req.clone();
    rest.requested_amount = cny(7_001);
    assert_eq!(
        check(&rest, &o, &params(), at(3 * DAY))
            .unwrap_err()
            .code
            .as_str(),
        "amount_exceeds_paid"
    );
    rest.requested_amount = cny(7_000);
    assert_eq!(
        check(&rest, &o, &params(), at(3 * DAY)).unwrap().max_refund,
        cny(7_000)
    );

    // The calculation on its own never pays more than what is left either.
    let b = refund(&req, &o, &params());
    assert_eq!(b.lines[0].prior_refund_offset, cny(3_000));
    assert_eq!(b.total, cny(7_000));
}

#[test]
fn zero_decimal_currency_works_end_to_end() {
    let yen = |minor| Money::new(minor, Currency::JPY);
    let mut p = params();
    p.return_shipping.return_leg_fee = yen(800);
    p.return_shipping.exchange_reship_fee = yen(600);
    let o = order(
        vec![
            physical("A", 3, yen(1_000), yen(0)),
            physical("B", 1, yen(500), yen(0)),
        ],
        yen(100),
        yen(0),
        delivered(),
    );
    // Coupon ¥100 over ¥3000 : ¥500 → 85.71 / 14.29 → ¥86 / ¥14.
    let shares: Vec<i64> = o
        .line_payments()
        .unwrap()
        .iter()
        .map(|l| l.coupon_share.minor)
        .collect();
    assert_eq!(shares, [86, 14]);
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::NoReason,
        yen(971),
    );
    assert_eq!(
        check(&req, &o, &p, at(3 * DAY)).unwrap().max_refund,
        yen(971)
    );
    // ¥2914 / 3 = 971.33 → ¥971.
    let b = refund(&req, &o, &p);
    assert_eq!(b.total, yen(971));
    assert_eq!(b.total.to_decimal_string(), "971");
    assert_eq!(b.buyer_pays_shipping, yen(800));
}
