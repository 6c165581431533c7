//! Eligibility rules beyond the DOMAIN.md scenarios, and the service order lifecycle.

mod common;

use aftersales_domain::{
    AfterSalesType, BusinessLineId, CategoryId, DomainError, GoodsKind, LineFlag, NewServiceOrder,
    OrderId, OrderState, Reason, RefundInput, RestockingFee, ServiceOrder, ServiceOrderId,
    ServiceOrderState, WorkflowInstanceId, calculate_refund, check, check_all,
};
use aftersales_money::{Currency, Money};

use common::*;

#[test]
fn order_state_decides_which_types_are_possible() {
    let cases = [
        (OrderState::Paid, AfterSalesType::CancelAfterPayment, None),
        (
            OrderState::Paid,
            AfterSalesType::RefundOnly,
            Some("order_state"),
        ),
        (
            OrderState::Paid,
            AfterSalesType::ReturnRefund,
            Some("order_state"),
        ),
        (
            OrderState::Paid,
            AfterSalesType::Exchange,
            Some("order_state"),
        ),
        (
            shipped(),
            AfterSalesType::CancelAfterPayment,
            Some("order_state"),
        ),
        (shipped(), AfterSalesType::RefundOnly, None),
        (shipped(), AfterSalesType::ReturnRefund, None),
        (shipped(), AfterSalesType::Exchange, Some("order_state")),
        (delivered(), AfterSalesType::RefundOnly, None),
        (delivered(), AfterSalesType::ReturnRefund, None),
    ];
    for (state, kind, expected) in cases {
        let o = order(
            vec![physical("A", 1, cny(1_000), cny(0))],
            cny(0),
            cny(0),
            state,
        );
        let req = request(kind, &[("A", 1)], Reason::NoReason, cny(0));
        let got = check(&req, &o, &params(), at(3 * DAY))
            .err()
            .map(|r| r.code.as_str());
        assert_eq!(got, expected, "{kind} on a {} order", state.as_str());
    }
}

#[test]
fn malformed_requests_are_all_reported_in_priority_order() {
    let o = order(
        vec![
            physical("A", 2, cny(1_000), cny(0)),
            physical("B", 1, cny(1_000), cny(0)),
        ],
        cny(0),
        cny(0),
        delivered(),
    );
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("Z", 1), ("A", 3), ("A", 1), ("B", 0)],
        Reason::NoReason,
        Money::new(-1, Currency::CNY),
    );
    let refusals = check_all(&req, &o, &params(), at(3 * DAY)).unwrap_err();
    assert_eq!(
        codes(&refusals),
        [
            "unknown_line",
            "duplicate_line",
            "zero_quantity",
            "invalid_amount",
            "quantity_exceeds_remaining"
        ]
    );
    assert_eq!(
        refusals[0].message,
        "line Z: there is no such line in order O-1"
    );
    assert_eq!(
        refusals[4].message,
        "line A: 3 units asked for but 2 of 2 bought are left (0 already returned)"
    );
    assert_eq!(
        check(&req, &o, &params(), at(3 * DAY))
            .unwrap_err()
            .code
            .as_str(),
        "unknown_line"
    );

    let empty = request(AfterSalesType::ReturnRefund, &[], Reason::NoReason, cny(0));
    assert_eq!(
        codes(&check_all(&empty, &o, &params(), at(3 * DAY)).unwrap_err()),
        ["no_lines"]
    );
    let mut elsewhere = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::NoReason,
        cny(0),
    );
    elsewhere.order_id = OrderId::new("O-2");
    assert_eq!(
        check(&elsewhere, &o, &params(), at(3 * DAY))
            .unwrap_err()
            .message,
        "the request is for order O-2 but the order snapshot is O-1"
    );
}

#[test]
fn returned_units_and_open_requests_limit_new_requests() {
    let mut line = physical("A", 3, cny(1_000), cny(0));
    line.returned_quantity = 2;
    line.refunded = cny(2_000);
    let o = order(vec![line], cny(0), cny(0), delivered());
    let two = request(
        AfterSalesType::ReturnRefund,
        &[("A", 2)],
        Reason::NoReason,
        cny(1_000),
    );
    assert_eq!(
        check(&two, &o, &params(), at(3 * DAY))
            .unwrap_err()
            .code
            .as_str(),
        "quantity_exceeds_remaining"
    );
    let one = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::NoReason,
        cny(1_000),
    );
    assert_eq!(
        check(&one, &o, &params(), at(3 * DAY)).unwrap().max_refund,
        cny(1_000)
    );

    let mut busy = o.clone();
    busy.lines[0].open_requests = vec![ServiceOrderId::new("SO-7")];
    let refusal = check(&one, &busy, &params(), at(3 * DAY)).unwrap_err();
    assert_eq!(refusal.code.as_str(), "open_request_exists");
    assert_eq!(
        refusal.message,
        "line A: service order SO-7 is still open on it"
    );
}

#[test]
fn exclusions_apply_to_no_reason_returns_only() {
    let mut p = params();
    p.non_returnable = vec![
        LineFlag::CustomMade,
        LineFlag::Perishable,
        LineFlag::Activated,
    ];
    p.excluded_categories = vec![CategoryId::new("food.fresh")];
    let mut custom = physical("A", 1, cny(1_000), cny(0));
    custom.flags = vec![LineFlag::CustomMade, LineFlag::Unsealed];
    let mut fresh = physical("B", 1, cny(1_000), cny(0));
    fresh.flags = vec![LineFlag::Perishable];
    fresh.category = CategoryId::new("food.fresh");
    let o = order(vec![custom, fresh], cny(0), cny(0), delivered());
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1), ("B", 1)],
        Reason::NoReason,
        cny(2_000),
    );
    // `unsealed` is not in this business line's list, so only the others count.
    assert_eq!(
        codes(&check_all(&req, &o, &p, at(3 * DAY)).unwrap_err()),
        [
            "custom_made_excluded",
            "perishable_excluded",
            "category_excluded"
        ]
    );
    let mut wrong = req.clone();
    wrong.reason = Reason::WrongItem;
    assert!(check(&wrong, &o, &p, at(3 * DAY)).is_ok());

    // Cancelling before shipment is not a return: exclusions do not apply.
    let mut paid = o.clone();
    paid.state = OrderState::Paid;
    let cancel = request(
        AfterSalesType::CancelAfterPayment,
        &[("A", 1), ("B", 1)],
        Reason::NoReason,
        cny(2_000),
    );
    assert!(check(&cancel, &paid, &p, at(HOUR)).is_ok());
}

#[test]
fn courses_are_refunded_whole_and_revoked_and_bundles_mix_both() {
    let o = order(
        vec![
            physical("BOOK", 1, cny(5_000), cny(0)),
            course("C1", cny(20_000), 20, 4),
        ],
        cny(0),
        cny(0),
        delivered(),
    );
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("BOOK", 1), ("C1", 1)],
        Reason::NoReason,
        cny(25_000),
    );
    let verdict = check(&req, &o, &params(), at(3 * DAY)).unwrap();
    assert_eq!(verdict.goods, GoodsKind::Bundle);
    assert_eq!(verdict.revoke.len(), 1);
    let b = calculate_refund(&RefundInput {
        request: &req,
        order: &o,
        params: &params(),
    })
    .unwrap();
    // The book in full; the course 16 of 20 lessons: 200.00 × 16 / 20 = 160.00.
    let nets: Vec<i64> = b.lines.iter().map(|l| l.net.minor).collect();
    assert_eq!(nets, [5_000, 16_000]);
    assert_eq!(b.total, cny(21_000));
    // Only the book travels back.
    assert_eq!(b.buyer_pays_shipping, cny(1_200));

    let mut two_units = o.clone();
    two_units.lines[1].quantity = 2;
    two_units.paid_total = cny(45_000);
    let half = request(
        AfterSalesType::ReturnRefund,
        &[("C1", 1)],
        Reason::NoReason,
        cny(0),
    );
    assert_eq!(
        check(&half, &two_units, &params(), at(3 * DAY))
            .unwrap_err()
            .code
            .as_str(),
        "partial_virtual_line"
    );
}

#[test]
fn restocking_fee_applies_to_buyer_side_returns_of_physical_goods() {
    let o = order(
        vec![physical("A", 3, cny(3_333), cny(0))],
        cny(0),
        cny(0),
        delivered(),
    );
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 3)],
        Reason::NoReason,
        cny(9_999),
    );
    let mut p = params();
    p.restocking_fee = RestockingFee::BasisPoints { bp: 1_000 };
    let input = RefundInput {
        request: &req,
        order: &o,
        params: &p,
    };
    // 10% of 99.99 = 9.999 → 9.99 (rounded down, in the buyer's favour).
    let b = calculate_refund(&input).unwrap();
    assert_eq!(b.restocking_fee, cny(999));
    assert_eq!(b.total, cny(9_000));

    p.restocking_fee = RestockingFee::Fixed {
        amount: cny(20_000),
    };
    let b = calculate_refund(&RefundInput {
        request: &req,
        order: &o,
        params: &p,
    })
    .unwrap();
    assert_eq!(b.restocking_fee, cny(9_999));
    assert_eq!(b.total, cny(0));

    let mut faulty = req.clone();
    faulty.reason = Reason::Quality;
    let b = calculate_refund(&RefundInput {
        request: &faulty,
        order: &o,
        params: &p,
    })
    .unwrap();
    assert_eq!(b.restocking_fee, cny(0));
    assert_eq!(b.total, cny(9_999));
}

#[test]
fn buyer_may_ask_for_less_than_the_entitlement() {
    let o = order(
        vec![physical("A", 1, cny(10_000), cny(0))],
        cny(0),
        cny(0),
        delivered(),
    );
    let req = request(
        AfterSalesType::RefundOnly,
        &[("A", 1)],
        Reason::Damaged,
        cny(2_500),
    );
    assert!(check(&req, &o, &params(), at(3 * DAY)).is_ok());
    let b = calculate_refund(&RefundInput {
        request: &req,
        order: &o,
        params: &params(),
    })
    .unwrap();
    assert_eq!(b.entitled, cny(10_000));
    assert_eq!(b.total, cny(2_500));
    assert_eq!(b.waived_by_buyer, cny(7_500));
    assert_eq!(b.buyer_pays_shipping, cny(0));
}

#[test]
fn inconsistent_orders_are_refused_before_any_rule() {
    let mut o = order(
        vec![physical("A", 1, cny(10_000), cny(0))],
        cny(0),
        cny(0),
        delivered(),
    );
    o.paid_total = cny(10_001);
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::Damaged,
        cny(10_000),
    );
    let refusal = check(&req, &o, &params(), at(3 * DAY)).unwrap_err();
    assert_eq!(refusal.code.as_str(), "inconsistent_order");
    let err = calculate_refund(&RefundInput {
        request: &req,
        order: &o,
        params: &params(),
    })
    .unwrap_err();
    assert!(
        matches!(err, DomainError::InconsistentOrder { .. }),
        "{err}"
    );
}

#[test]
fn calculation_refuses_params_in_another_currency() {
    let o = order(
        vec![physical("A", 1, cny(10_000), cny(0))],
        cny(0),
        cny(0),
        delivered(),
    );
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::Damaged,
        cny(10_000),
    );
    let mut p = params();
    p.return_shipping.return_leg_fee = Money::new(500, Currency::USD);
    p.return_shipping.exchange_reship_fee = Money::new(500, Currency::USD);
    let err = calculate_refund(&RefundInput {
        request: &req,
        order: &o,
        params: &p,
    })
    .unwrap_err();
    assert_eq!(err.to_string(), "money arithmetic failed");
}

#[test]
fn a_service_order_opens_only_with_a_verdict_and_never_leaves_a_final_state() {
    let o = order(
        vec![physical("A", 1, cny(10_000), cny(0))],
        cny(0),
        cny(0),
        delivered(),
    );
    let req = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1)],
        Reason::Quality,
        cny(10_000),
    );
    let verdict = check(&req, &o, &params(), at(3 * DAY)).unwrap();
    let mut so = ServiceOrder::open(
        NewServiceOrder {
            id: ServiceOrderId::new("SO-1"),
            business_line: BusinessLineId::new("apparel"),
            workflow_instance: WorkflowInstanceId::new("wf-1"),
            created_at: at(3 * DAY),
        },
        req,
        &verdict,
    );
    assert_eq!(so.state(), ServiceOrderState::Requested);
    assert_eq!(so.goods(), GoodsKind::Physical);
    assert_eq!(so.after_sales_type(), AfterSalesType::ReturnRefund);
    assert_eq!(so.approved_amount(), None);

    assert_eq!(
        so.approve(cny(10_001)).unwrap_err().to_string(),
        "approved amount 100.01 CNY is above the requested 100.00 CNY"
    );
    so.approve(cny(9_000)).unwrap();
    assert_eq!(so.approved_amount(), Some(cny(9_000)));
    assert_eq!(so.state(), ServiceOrderState::Approved);
    assert!(so.approve(cny(9_000)).is_err());

    for next in [
        ServiceOrderState::AwaitingReturnShipment,
        ServiceOrderState::InTransit,
        ServiceOrderState::Received,
        ServiceOrderState::Inspected,
        ServiceOrderState::Refunding,
        ServiceOrderState::Refunded,
        ServiceOrderState::Completed,
    ] {
        so.transition(next).unwrap();
    }
    assert_eq!(
        so.transition(ServiceOrderState::Refunding)
            .unwrap_err()
            .to_string(),
        "service order SO-1 cannot move from completed to refunding"
    );

    let json = serde_json::to_value(&so).unwrap();
    assert_eq!(json["state"], "completed");
    assert_eq!(json["after_sales_type"], "return_refund");
    assert_eq!(json["approved_amount"]["minor"], 9_000);
    let back: ServiceOrder = serde_json::from_value(json).unwrap();
    assert_eq!(back, so);
}

#[test]
fn a_virtual_exchange_swaps_entitlements_without_logistics_or_money() {
    let o = order(
        vec![course("C1", cny(30_000), 12, 2)],
        cny(0),
        cny(0),
        OrderState::Paid,
    );
    let mut req = request(
        AfterSalesType::Exchange,
        &[("C1", 1)],
        Reason::NoReason,
        cny(0),
    );
    req.lines[0].replacement = Some(aftersales_domain::Replacement {
        sku: aftersales_domain::Sku::new("C2-sku"),
        spu: aftersales_domain::Spu::new("course-bundle"),
        unit_price: cny(30_000),
    });
    let verdict = check(&req, &o, &params(), at(DAY)).unwrap();
    assert_eq!(verdict.revoke.len(), 1);
    assert_eq!(verdict.revoke[0].as_str(), "C1-entitlement");
    assert_eq!(verdict.max_refund, cny(0));
    let b = calculate_refund(&RefundInput {
        request: &req,
        order: &o,
        params: &params(),
    })
    .unwrap();
    assert_eq!(
        (b.total, b.buyer_pays_shipping, b.insurance),
        (cny(0), cny(0), cny(0))
    );
    assert!(b.lines.is_empty());
}
