//! The 20 scenarios of DOMAIN.md, end to end: a buyer's request through the after-sales
//! service (rules, refund calculation), the real engine on a real store (SQLite; PostgreSQL
//! when `AFTERSALES_TEST_PG_URL` is set), the shipped workflows and business lines, and the
//! simulator behind every adapter. Each asserts the final state, the exact ledger (amounts,
//! once), entitlements or stock where they matter, and the history's key events.

#![allow(clippy::unwrap_used)]

mod world;

use std::sync::Arc;

use aftersales_adapter::ids::{EntitlementId, OrderId, Sku};
use aftersales_adapter_sim::{Fault, LedgerKind, LineDetails};
use aftersales_core::engine::Clock;
use aftersales_core::store::Store;
use aftersales_domain::{RefusalCode, ServiceOrderState};
use aftersales_runtime::service::ServiceError;
use serde_json::json;
use world::{DAY, HOUR, World, cny};

async fn sqlite() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("aftersales.db").display());
    (aftersales_store::open_store(&url).await.unwrap(), dir)
}

fn refused(r: Result<aftersales_runtime::service::ServiceOrderView, ServiceError>) -> RefusalCode {
    match r {
        Err(ServiceError::Refused(r)) => r.code,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

// ---------------------------------------------------------------- the scenarios

/// 1. Cancel after payment, the warehouse intercepts in time: refunded in full, shipping
///    included, at once.
async fn s01_cancel_intercepted(w: &World) {
    w.physical_order("s01", "phone-128g", 1, 399_900, 1_000);
    let so = w
        .submit(json!({"business_line": "electronics_3c", "order_id": "s01", "type": "cancel_after_payment",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}))
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    let refunds = w.refunds(&so.id);
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, cny(400_900), "goods and shipping");
    assert!(w.sim.order(&OrderId::new("s01")).unwrap().intercepted);
    assert!(w.step_done(&so.id, "intercept").await);
}

/// 2. Cancel after payment, too late: the parcel left. 3C turns it into a return and
///    refund; apparel asks the carrier to bring it back and refunds the goods.
async fn s02_cancel_too_late(w: &World) {
    // 3C: converts to a return; the buyer ships it back, the refund excludes shipping.
    // The order system still says "paid" but the warehouse has picked the parcel.
    w.physical_order("s02a", "phone-128g", 1, 399_900, 1_000);
    w.sim.mark_picked(&OrderId::new("s02a")).unwrap();
    let so = w
        .submit(json!({"business_line": "electronics_3c", "order_id": "s02a", "type": "cancel_after_payment",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}))
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::UnderReview, "{so:#?}");
    assert!(
        w.history(&so.id)
            .await
            .iter()
            .any(|h| h.event.kind == "child_started")
    );
    w.approve(&so.id).await;
    w.ship(&so.id).await;
    w.receive(&so.id, true).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    let refunds = w.refunds(&so.id);
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        refunds[0].amount,
        cny(399_900),
        "goods only: the postage is spent"
    );
    assert_eq!(so.refunded_amount.unwrap()["minor"], 399_900);

    // Apparel: the carrier intercepts; refunded without a return.
    // The request arrives while the order is paid; by the time the warehouse is asked, the
    // parcel is with the carrier.
    w.physical_order("s02b", "coat-l", 1, 59_900, 1_000);
    let so = w
        .submit_only(
            json!({"business_line": "apparel", "order_id": "s02b", "type": "cancel_after_payment",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    w.sim.mark_shipped(&OrderId::new("s02b")).unwrap();
    w.settle().await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    assert_eq!(w.refunds(&so.id)[0].amount, cny(59_900));
    assert!(
        w.sim
            .order(&OrderId::new("s02b"))
            .unwrap()
            .carrier_intercepted
    );
    assert!(w.step_done(&so.id, "carrier_intercept").await);
}

/// 3. Refund only after shipment: the carrier intercepts the parcel, the refund follows.
async fn s03_refund_only_intercepted(w: &World) {
    w.physical_order("s03", "earbuds-white", 1, 89_900, 0);
    w.sim.mark_shipped(&OrderId::new("s03")).unwrap();
    let so = w
        .submit(
            json!({"business_line": "electronics_3c", "order_id": "s03", "type": "refund_only",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    let refunds = w.refunds(&so.id);
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, cny(89_900));
    assert!(w.step_done(&so.id, "carrier_intercept").await);
}

/// 4. Return and refund: approved, shipped, received, inspection passes → refunded; the
///    goods are restocked.
async fn s04_return_refund(w: &World) {
    w.physical_order("s04", "jeans-32", 1, 29_900, 800);
    w.deliver("s04");
    let so = w
        .submit(
            json!({"business_line": "apparel", "order_id": "s04", "type": "return_refund",
            "lines": [{"line_id": "l1", "quantity": 1}], "reason": "wrong_size",
            "evidence": ["img://s04/label.jpg"]}),
        )
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::UnderReview);
    assert!(
        so.waiting
            .iter()
            .any(|wt| wt.what.as_deref() == Some("merchant.decision"))
    );
    w.approve(&so.id).await;
    assert_eq!(
        w.view(&so.id).await.state,
        ServiceOrderState::AwaitingReturnShipment
    );
    w.ship(&so.id).await;
    assert_eq!(w.view(&so.id).await.state, ServiceOrderState::InTransit);
    let stock_before = w.sim.stock(&Sku::new("jeans-32"));
    w.receive(&so.id, true).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    let refunds = w.refunds(&so.id);
    assert_eq!(refunds.len(), 1);
    assert_eq!(
        refunds[0].amount,
        cny(29_900),
        "the goods; not the outbound shipping"
    );
    assert_eq!(w.sim.stock(&Sku::new("jeans-32")), stock_before + 1);
    let h = w.history(&so.id).await;
    for step in [
        "mark_order",
        "create_return",
        "restock",
        "refund",
        "report_refund",
    ] {
        assert!(
            h.iter()
                .any(|e| e.event.kind == "step_completed" && e.event.step.as_deref() == Some(step)),
            "{step} completed"
        );
    }
}

/// 5. Inspection fails: rejected, goods sent back, no refund; the history says why.
async fn s05_inspection_fails(w: &World) {
    w.physical_order("s05", "jeans-30", 1, 29_900, 0);
    w.deliver("s05");
    let so = w
        .submit(
            json!({"business_line": "apparel", "order_id": "s05", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    w.approve(&so.id).await;
    w.ship(&so.id).await;
    w.receive(&so.id, false).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Rejected, "{so:#?}");
    assert!(w.refunds(&so.id).is_empty());
    assert!(so.outcome.unwrap().contains("inspection failed"));
    assert!(w.step_done(&so.id, "send_back").await);
}

/// 6. The buyer never ships: closed after the timeout, the return cancelled, no refund.
async fn s06_buyer_never_ships(w: &World) {
    w.physical_order("s06", "shirt-m", 1, 19_900, 0);
    w.deliver("s06");
    let so = w
        .submit(
            json!({"business_line": "apparel", "order_id": "s06", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    w.approve(&so.id).await;
    w.advance(7 * DAY + HOUR).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Closed, "{so:#?}");
    assert!(w.refunds(&so.id).is_empty());
    assert!(
        w.history(&so.id)
            .await
            .iter()
            .any(|h| h.event.kind == "wait_timed_out")
    );
    assert!(w.step_done(&so.id, "cancel_rma").await);
}

/// 7. The merchant does not answer: approved automatically when the time is up.
async fn s07_auto_approve(w: &World) {
    w.physical_order("s07", "shirt-l", 1, 19_900, 0);
    w.deliver("s07");
    let so = w
        .submit(
            json!({"business_line": "apparel", "order_id": "s07", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::UnderReview);
    w.advance(48 * HOUR + 60_000).await;
    let so = w.view(&so.id).await;
    assert_eq!(
        so.state,
        ServiceOrderState::AwaitingReturnShipment,
        "{so:#?}"
    );
    assert!(
        w.history(&so.id)
            .await
            .iter()
            .any(|h| h.event.kind == "wait_timed_out"
                && h.event.step.as_deref() == Some("merchant_review"))
    );
    w.ship(&so.id).await;
    w.receive(&so.id, true).await;
    assert_eq!(w.refunds(&so.id)[0].amount, cny(19_900));
}

/// 8. Partial return: 1 of 3 units, with an order coupon apportioned — exact to the cent,
///    and the three units returned one by one add up to exactly what was paid.
async fn s08_partial_with_coupon(w: &World) {
    // 3 × ¥99.99 = ¥299.97, coupon ¥10.00 → paid ¥289.97 for the line.
    w.sim
        .create_order(aftersales_adapter_sim::NewOrder {
            order_id: OrderId::new("s08"),
            buyer_id: "buyer-8".into(),
            lines: vec![aftersales_adapter_sim::NewLine {
                line_id: "l1".into(),
                sku: "sock-pack".into(),
                spu: "sock".into(),
                quantity: 3,
                unit_price: cny(9_999),
                paid: cny(28_997),
                entitlement_units: None,
            }],
            shipping_fee: cny(0),
        })
        .unwrap();
    w.sim
        .set_line_details(
            &OrderId::new("s08"),
            &"l1".into(),
            LineDetails {
                line_discount: Some(cny(0)),
                category: Some("apparel.socks".into()),
                ..LineDetails::default()
            },
        )
        .unwrap();
    w.coupon("s08", 1_000);
    w.deliver("s08");
    let mut paid = Vec::new();
    for _ in 0..3 {
        let so = w
            .submit(
                json!({"business_line": "apparel", "order_id": "s08", "type": "return_refund",
                "lines": [{"line_id": "l1", "quantity": 1}], "reason": "no_reason"}),
            )
            .await
            .unwrap();
        w.approve(&so.id).await;
        w.ship(&so.id).await;
        w.receive(&so.id, true).await;
        let so = w.view(&so.id).await;
        assert_eq!(so.state, ServiceOrderState::Completed);
        let line = &so.breakdown["lines"][0];
        assert_eq!(line["quantity"], 1);
        paid.push(w.refunds(&so.id)[0].amount.minor);
    }
    // floor(28997 × 1/3) = 9665, floor(28997 × 2/3) − 9665 = 9666, the rest 9666.
    assert_eq!(paid, [9_665, 9_666, 9_666]);
    assert_eq!(
        paid.iter().sum::<i64>(),
        28_997,
        "exactly what the line was paid"
    );
    // A fourth request finds nothing left to return.
    let r = w
        .submit(
            json!({"business_line": "apparel", "order_id": "s08", "type": "return_refund",
            "lines": [{"line_id": "l1", "quantity": 1}], "reason": "no_reason"}),
        )
        .await;
    assert_eq!(refused(r), RefusalCode::QuantityExceedsRemaining);
}

/// 9. Exchange: same SPU another size, the buyer pays the reshipment; when the new size is
///    out of stock it falls back to a refund.
async fn s09_exchange(w: &World) {
    w.physical_order("s09", "dress-s", 1, 49_900, 0);
    w.deliver("s09");
    w.sim.set_stock(&Sku::new("dress-m"), 5);
    let so = w
        .submit(json!({"business_line": "apparel", "order_id": "s09", "type": "exchange",
            "lines": [{"line_id": "l1", "quantity": 1, "exchange_to": "dress-m"}], "reason": "wrong_size"}))
        .await
        .unwrap();
    assert_eq!(
        so.state,
        ServiceOrderState::AwaitingReturnShipment,
        "{so:#?}"
    );
    w.ship(&so.id).await;
    w.receive(&so.id, true).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    assert!(
        w.refunds(&so.id).is_empty(),
        "an exchange moves no money back"
    );
    let charges = w.ledger(&so.id, LedgerKind::Charge);
    assert_eq!(charges.len(), 1);
    assert_eq!(
        charges[0].amount,
        cny(1_200),
        "the buyer pays the reshipment"
    );
    assert_eq!(w.sim.stock(&Sku::new("dress-m")), 4);
    assert!(w.step_done(&so.id, "ship").await);

    // Out of stock: refunded instead.
    w.physical_order("s09b", "dress-l", 1, 49_900, 0);
    w.deliver("s09b");
    w.sim.set_stock(&Sku::new("dress-xl"), 0);
    let so = w
        .submit(
            json!({"business_line": "apparel", "order_id": "s09b", "type": "exchange",
            "lines": [{"line_id": "l1", "exchange_to": "dress-xl"}], "reason": "wrong_size"}),
        )
        .await
        .unwrap();
    w.ship(&so.id).await;
    w.receive(&so.id, true).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    assert_eq!(w.refunds(&so.id)[0].amount, cny(49_900));
    assert!(w.step_done(&so.id, "refund_instead").await);
}

/// 10. A course with 3 of 10 lessons taken: refunded pro rata, the entitlement revoked.
async fn s10_course_pro_rata(w: &World) {
    let ent = w.course_order("s10", "rust-course", 99_900, 10);
    w.sim.consume(&ent, 3).unwrap();
    let so = w
        .submit(
            json!({"business_line": "online_courses", "order_id": "s10", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    let refunds = w.refunds(&so.id);
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, cny(69_930), "floor(99900 × 7/10)");
    let e = w.sim.entitlement(&ent).unwrap();
    assert!(!e.active, "{e:?}");
}

/// 11. Virtual exchange: one entitlement revoked, another granted, no logistics.
async fn s11_virtual_exchange(w: &World) {
    let ent = w.course_order("s11", "python-course", 59_900, 20);
    let so = w
        .submit(
            json!({"business_line": "online_courses", "order_id": "s11", "type": "exchange",
            "lines": [{"line_id": "l1", "exchange_to": "go-course"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    assert!(!w.sim.entitlement(&ent).unwrap().active);
    assert!(w.refunds(&so.id).is_empty());
    assert!(
        w.sim
            .returns()
            .iter()
            .all(|r| r.order_id != OrderId::new("s11"))
    );
    assert!(w.step_done(&so.id, "grant_new").await);
}

fn bundle_order(w: &World, order: &str) -> EntitlementId {
    w.sim
        .create_order(aftersales_adapter_sim::NewOrder {
            order_id: OrderId::new(order),
            buyer_id: "buyer-12".into(),
            lines: vec![
                aftersales_adapter_sim::NewLine {
                    line_id: "book".into(),
                    sku: "rust-book".into(),
                    spu: "rust-book".into(),
                    quantity: 1,
                    unit_price: cny(8_000),
                    paid: cny(8_000),
                    entitlement_units: None,
                },
                aftersales_adapter_sim::NewLine {
                    line_id: "course".into(),
                    sku: "rust-course-bundle".into(),
                    spu: "rust-course-bundle".into(),
                    quantity: 1,
                    unit_price: cny(40_000),
                    paid: cny(40_000),
                    entitlement_units: Some(20),
                },
            ],
            shipping_fee: cny(0),
        })
        .unwrap();
    w.deliver(order);
    w.sim.order(&OrderId::new(order)).unwrap().lines[1]
        .entitlement_id
        .clone()
        .unwrap()
}

/// 12. Bundle: the textbook back in the warehouse first, then the course refunded and
///     revoked; a parcel that never arrives refunds nothing.
async fn s12_bundle(w: &World) {
    let ent = bundle_order(w, "s12");
    let so = w
        .submit(json!({"business_line": "course_with_textbook", "order_id": "s12", "type": "return_refund",
            "lines": [{"line_id": "book"}, {"line_id": "course"}], "reason": "no_reason"}))
        .await
        .unwrap();
    w.approve(&so.id).await;
    w.ship(&so.id).await;
    assert!(
        w.refunds(&so.id).is_empty(),
        "nothing before the book is back"
    );
    assert!(w.sim.entitlement(&ent).unwrap().active);
    w.receive(&so.id, true).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    let mut amounts: Vec<i64> = w.refunds(&so.id).iter().map(|r| r.amount.minor).collect();
    amounts.sort_unstable();
    assert_eq!(amounts, [8_000, 40_000]);
    assert!(!w.sim.entitlement(&ent).unwrap().active);

    // The parcel never arrives: nothing refunded, the course stays.
    let ent = bundle_order(w, "s12b");
    let so = w
        .submit(json!({"business_line": "course_with_textbook", "order_id": "s12b", "type": "return_refund",
            "lines": [{"line_id": "book"}, {"line_id": "course"}], "reason": "no_reason"}))
        .await
        .unwrap();
    w.approve(&so.id).await;
    w.advance(8 * DAY).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Closed, "{so:#?}");
    assert!(w.refunds(&so.id).is_empty());
    assert!(w.sim.entitlement(&ent).unwrap().active);

    // The book is refunded, then the provider refuses the course's refund for good: the
    // course is granted back, and the service order ends failed for a person, reporting
    // the book's refund — the money that did move (found by the reliability battery).
    let ent = bundle_order(w, "s12c");
    let so = w
        .submit(json!({"business_line": "course_with_textbook", "order_id": "s12c", "type": "return_refund",
            "lines": [{"line_id": "book"}, {"line_id": "course"}], "reason": "no_reason"}))
        .await
        .unwrap();
    w.approve(&so.id).await;
    w.ship(&so.id).await;
    w.sim
        .script("payment.refund", [Fault::None, Fault::Permanent]);
    w.receive(&so.id, true).await;
    w.advance(HOUR).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Failed, "{so:#?}");
    assert!(so.needs_attention, "{so:#?}");
    assert_eq!(
        so.refunded_amount,
        Some(json!({"minor": 8_000, "currency": "CNY"}))
    );
    let paid: Vec<i64> = w
        .refunds(&so.id)
        .iter()
        .filter(|r| r.status == aftersales_adapter::RefundStatus::Succeeded)
        .map(|r| r.amount.minor)
        .collect();
    assert_eq!(paid, [8_000]);
    assert!(w.sim.entitlement(&ent).unwrap().active);
}

/// 13. The payment provider fails 5 times, then succeeds: exactly one refund.
async fn s13_transient_payment(w: &World) {
    w.physical_order("s13", "phone-256g", 1, 499_900, 0);
    w.sim.script("payment.refund", [Fault::Transient; 5]);
    let so = w
        .submit(json!({"business_line": "electronics_3c", "order_id": "s13", "type": "cancel_after_payment",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}))
        .await
        .unwrap();
    w.advance(2 * HOUR).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    let refunds = w.refunds(&so.id);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].amount, cny(499_900));
    let retries = w
        .history(&so.id)
        .await
        .iter()
        .filter(|h| h.event.kind == "retry_scheduled")
        .count();
    assert_eq!(retries, 5);
}

/// 14. The provider refuses for good: compensation (the entitlement granted back) and
///     `failed` for a person.
async fn s14_permanent_payment(w: &World) {
    let ent = w.course_order("s14", "ml-course", 129_900, 12);
    w.sim.script("payment.refund", [Fault::Permanent]);
    let so = w
        .submit(
            json!({"business_line": "online_courses", "order_id": "s14", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    w.advance(HOUR).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Failed, "{so:#?}");
    assert!(so.needs_attention || so.status == "failed");
    assert!(
        w.refunds(&so.id)
            .iter()
            .all(|r| r.status != aftersales_adapter::RefundStatus::Succeeded)
    );
    assert!(
        w.sim.entitlement(&ent).unwrap().active,
        "re-granted by compensation"
    );
    let h = w.history(&so.id).await;
    assert!(h.iter().any(|e| e.event.kind == "compensation_started"));
}

/// 15. The warehouse's "received" webhook arrives twice: processed once.
async fn s15_duplicate_webhook(w: &World) {
    w.physical_order("s15", "kettle-white", 1, 15_900, 0);
    w.deliver("s15");
    let so = w
        .submit(
            json!({"business_line": "electronics_3c", "order_id": "s15", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "damaged"}),
        )
        .await
        .unwrap();
    w.approve(&so.id).await;
    w.ship(&so.id).await;
    let rma = w
        .sim
        .returns()
        .into_iter()
        .find(|r| r.order_id == OrderId::new("s15"))
        .unwrap();
    w.sim
        .receive_return(&rma.rma_id, aftersales_adapter_sim::Inspection::Pass)
        .unwrap();
    let events = w.sim.drain_events();
    for e in events.iter().chain(events.iter()) {
        w.engine
            .event(&e.name, &e.correlation, &e.dedupe_id, e.payload.clone())
            .await
            .unwrap();
    }
    w.settle().await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    assert_eq!(w.refunds(&so.id).len(), 1);
    let received = w
        .history(&so.id)
        .await
        .iter()
        .filter(|h| h.event.kind == "event_received")
        .count();
    assert_eq!(
        received, 1,
        "the duplicate is recorded as ignored, not received"
    );
}

/// 16. The daemon dies during the refund step: the refund reached the platform but the
///     process died before it recorded the answer. A new engine on the same store retries
///     with the same idempotency key: exactly one refund. (A real kill -9 of a worker
///     process at random moments is in crates/aftersales-crashtest.)
async fn s16_crash_during_refund(w: World) {
    w.physical_order("s16", "laptop-14", 1, 899_900, 0);
    // The refund is applied but its answer never comes back: the process is as good as
    // dead after sending it.
    w.sim.script("payment.refund", [Fault::LostAnswer]);
    let so = w
        .submit(json!({"business_line": "electronics_3c", "order_id": "s16", "type": "cancel_after_payment",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}))
        .await
        .unwrap();
    assert_ne!(so.state, ServiceOrderState::Completed);
    assert_eq!(w.refunds(&so.id).len(), 1, "the platform has the refund");
    // Restart: a new engine and service over the same store; the old ones are gone.
    let w = w.restarted().await;
    w.advance(HOUR).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    let refunds = w.refunds(&so.id);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].amount, cny(899_900));
}

/// 17. Out of the window (day 9 of 7, not faulty), and unsealed non-returnable goods:
///     refused by the rules before any workflow call; nothing stored.
async fn s17_rules_refuse(w: &World) {
    w.physical_order("s17", "tablet-11", 1, 299_900, 0);
    w.deliver("s17");
    w.clock.advance(9 * DAY);
    let calls_before = w.sim.calls().len();
    let r = w
        .submit(
            json!({"business_line": "electronics_3c", "order_id": "s17", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await;
    assert_eq!(refused(r), RefusalCode::OutOfWindow);
    // A merchant fault is not bound by the window.
    w.physical_order("s17b", "tablet-12", 1, 299_900, 0);
    w.deliver("s17b");
    w.sim
        .set_line_details(
            &OrderId::new("s17b"),
            &"l1".into(),
            LineDetails {
                flags: vec!["unsealed".into()],
                ..LineDetails::default()
            },
        )
        .unwrap();
    let r = w
        .submit(
            json!({"business_line": "electronics_3c", "order_id": "s17b", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await;
    assert_eq!(refused(r), RefusalCode::UnsealedNonReturnable);
    let mutating: Vec<_> = w.sim.calls()[calls_before..]
        .iter()
        .filter(|c| !c.action.ends_with(".get") && !c.action.contains("get_consumption"))
        .cloned()
        .collect();
    assert!(mutating.is_empty(), "no workflow call: {mutating:?}");
    let (list, _) = w
        .svc
        .list(&aftersales_runtime::service::ListQuery {
            order_id: Some("s17".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(list.is_empty(), "nothing stored");
}

/// 18. Retention: the agent keeps the buyer (withdrawn), or not (the refund goes on).
async fn s18_retention(w: &World) {
    let ent = w.course_order("s18", "vip-month", 3_000, 30);
    let so = w
        .submit(
            json!({"business_line": "membership", "order_id": "s18", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::Retention, "{so:#?}");
    w.signal(
        &so.id,
        "retention.result",
        json!({"kept": true, "note": "offered a free week"}),
    )
    .await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Closed, "{so:#?}");
    assert!(w.refunds(&so.id).is_empty());
    assert!(w.sim.entitlement(&ent).unwrap().active);

    let ent = w.course_order("s18b", "vip-year", 30_000, 365);
    let so = w
        .submit(
            json!({"business_line": "membership", "order_id": "s18b", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    w.signal(&so.id, "retention.result", json!({"kept": false}))
        .await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    assert_eq!(w.refunds(&so.id)[0].amount, cny(30_000));
    assert!(!w.sim.entitlement(&ent).unwrap().active);
}

/// 19. Shipping insurance: the buyer's return postage is reimbursed by the insurer, apart
///     from the refund.
async fn s19_shipping_insurance(w: &World) {
    w.physical_order("s19", "boots-42", 1, 69_900, 0);
    w.deliver("s19");
    let so = w
        .submit(
            json!({"business_line": "apparel", "order_id": "s19", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    assert_eq!(so.breakdown["insurance"]["minor"], 1_000);
    w.approve(&so.id).await;
    w.ship(&so.id).await;
    w.receive(&so.id, true).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    assert_eq!(w.refunds(&so.id)[0].amount, cny(69_900));
    let claims = w.ledger(&so.id, LedgerKind::InsuranceClaim);
    assert_eq!(claims.len(), 1);
    assert_eq!(claims[0].amount, cny(1_000));
}

/// 20. A refund larger than paid: refused with a clear error, nothing stored.
async fn s20_refund_above_paid(w: &World) {
    w.physical_order("s20", "watch-steel", 1, 159_900, 0);
    w.deliver("s20");
    let r = w
        .submit(
            json!({"business_line": "electronics_3c", "order_id": "s20", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "damaged",
            "requested_amount": {"minor": 200_000, "currency": "CNY"}}),
        )
        .await;
    match r {
        Err(ServiceError::Refused(r)) => {
            assert_eq!(r.code, RefusalCode::AmountExceedsPaid);
            assert!(
                r.message.contains("1599.00") || r.message.contains("159900"),
                "{}",
                r.message
            );
        }
        other => panic!("{other:?}"),
    }
    let (list, _) = w
        .svc
        .list(&aftersales_runtime::service::ListQuery {
            order_id: Some("s20".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(list.is_empty());
    assert!(
        w.sim
            .ledger()
            .iter()
            .all(|e| e.payment_id != Some("pay_s20".into()))
    );
}

// ---------------------------------------------------------------- on SQLite

/// Calls `$then!` with the twenty scenarios, so SQLite and PostgreSQL run the same list.
macro_rules! for_each_scenario {
    ($then:ident) => {
        $then!(
            s01_cancel_intercepted,
            s02_cancel_too_late,
            s03_refund_only_intercepted,
            s04_return_refund,
            s05_inspection_fails,
            s06_buyer_never_ships,
            s07_auto_approve,
            s08_partial_with_coupon,
            s09_exchange,
            s10_course_pro_rata,
            s11_virtual_exchange,
            s12_bundle,
            s13_transient_payment,
            s14_permanent_payment,
            s15_duplicate_webhook,
            s16_crash_during_refund,
            s17_rules_refuse,
            s18_retention,
            s19_shipping_insurance,
            s20_refund_above_paid
        );
    };
}

/// A scenario takes the world by reference, or by value when it restarts it.
trait Run<M> {
    async fn run(self, w: World);
}

impl<F> Run<&()> for F
where
    F: AsyncFn(&World),
{
    async fn run(self, w: World) {
        self(&w).await;
    }
}

impl<F> Run<()> for F
where
    F: AsyncFn(World),
{
    async fn run(self, w: World) {
        self(w).await;
    }
}

macro_rules! on_sqlite {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test]
                async fn $name() {
                    let (store, _dir) = super::sqlite().await;
                    let w = super::World::new(store).await;
                    super::Run::run(super::$name, w).await;
                }
            )*
        }
    };
}

for_each_scenario!(on_sqlite);

// ---------------------------------------------------------------- on PostgreSQL

/// All twenty on PostgreSQL, each in a database of its own (the simulator's ids and event
/// ids start over in every world).
#[tokio::test]
async fn all_scenarios_on_postgres() {
    let Some(base) = pg_base() else { return };
    macro_rules! each {
        ($($name:ident),* $(,)?) => {
            $(
                {
                    let db = PgScratch::create(&base, stringify!($name)).await;
                    let w = World::new(db.store().await).await;
                    Run::run($name, w).await;
                    db.drop().await;
                }
            )*
        };
    }
    for_each_scenario!(each);
}

/// The PostgreSQL URL of the tests, or `None` (skipped) when unset; under CI a missing
/// PostgreSQL is a failure.
fn pg_base() -> Option<String> {
    let base = std::env::var("AFTERSALES_TEST_PG_URL").ok();
    if base.is_none() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "AFTERSALES_TEST_PG_URL is not set, and under CI a missing PostgreSQL is a failure"
        );
        eprintln!(
            "skipped: AFTERSALES_TEST_PG_URL is not set (e.g. postgres://postgres@127.0.0.1:5432/test)"
        );
    }
    base
}

/// A database of its own for one test, dropped afterwards (the simulator's ids and event
/// ids start over in every world).
struct PgScratch {
    admin: sqlx::PgPool,
    db: String,
    url: String,
}

impl PgScratch {
    async fn create(base: &str, name: &str) -> PgScratch {
        let admin = sqlx::PgPool::connect(base).await.unwrap();
        let db = format!("aftersales_{name}_{}", std::process::id());
        let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
            .execute(&admin)
            .await;
        sqlx::query(&format!("CREATE DATABASE {db}"))
            .execute(&admin)
            .await
            .unwrap();
        let url = format!("{}/{db}", base.rsplit_once('/').unwrap().0);
        PgScratch { admin, db, url }
    }

    async fn store(&self) -> Arc<dyn Store> {
        aftersales_store::open_store(&self.url).await.unwrap()
    }

    async fn drop(self) {
        let _ = sqlx::query(&format!("DROP DATABASE {} WITH (FORCE)", self.db))
            .execute(&self.admin)
            .await;
    }
}

/// Two daemons on one database, a request on the same order reaching each at the same
/// instant: the guarded start (`StartRequest::search_seen`) stores one, the other's start is
/// refused because the order's instances changed, and on reading them again it sees the
/// first as the order's open request. Without a check shared by the daemons both would pass
/// the rules.
async fn two_daemons_admit_one_request_per_order(store: Arc<dyn Store>) {
    let a = World::new(store).await;
    let b = a.another_node().await;
    // A delivered order of one tee and the return request both nodes receive for it.
    let order_and_request = |order: &str| {
        a.physical_order(order, "tee-m", 1, 9_900, 0);
        a.deliver(order);
        json!({"business_line": "apparel", "order_id": order, "type": "return_refund",
            "lines": [{"line_id": "l1", "quantity": 1}], "reason": "wrong_size"})
    };
    for round in 0..8 {
        let body = order_and_request(&format!("two-nodes-{round}"));
        let (ra, rb) = tokio::join!(a.submit_only(body.clone()), b.submit_only(body));
        let (won, lost) = match (ra, rb) {
            (Ok(so), other) | (other, Ok(so)) => (so, other),
            (ra, rb) => panic!("round {round}: neither was admitted: {ra:?} / {rb:?}"),
        };
        assert_eq!(
            refused(lost),
            RefusalCode::OpenRequestExists,
            "round {round}: {won:?}"
        );
    }
    // The same request under the same key reaching both at once (a client retrying through
    // another node): one service order, and both answer with it.
    for round in 0..4 {
        let body = order_and_request(&format!("two-nodes-key-{round}"));
        let req: aftersales_runtime::service::SubmitRequest = serde_json::from_value(body).unwrap();
        let key = format!("retry-{round}");
        let (ra, rb) = tokio::join!(
            a.svc.submit(req.clone(), Some(&key)),
            b.svc.submit(req, Some(&key))
        );
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert_eq!(ra.order.id, rb.order.id, "round {round}");
        assert!(
            ra.created != rb.created,
            "round {round}: exactly one created it"
        );
    }
}

#[tokio::test]
async fn two_daemons_on_sqlite_admit_one_request_per_order() {
    let (store, _dir) = sqlite().await;
    two_daemons_admit_one_request_per_order(store).await;
}

#[tokio::test]
async fn two_daemons_on_postgres_admit_one_request_per_order() {
    let Some(base) = pg_base() else { return };
    let db = PgScratch::create(&base, "two_nodes").await;
    two_daemons_admit_one_request_per_order(db.store().await).await;
    db.drop().await;
}

/// A platform team adds a business line with one TOML file and no Rust change: it loads,
/// validates against the shipped workflows, and runs a request end to end.
#[tokio::test]
async fn a_new_business_line_is_added_by_a_toml_file_alone() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("kids_shoes.toml"),
        r#"
[business_line]
id = "kids_shoes"
name = "Children's shoes"
goods = "physical"
retention = false

[after_sales]
return_refund = "physical.return_refund@1"

[rules]
no_reason_window_days = 15
return_shipping = { payer = "merchant", return_leg_fee = { minor = 0, currency = "CNY" }, exchange_reship_fee = { minor = 0, currency = "CNY" } }
restocking_fee = { kind = "none" }

[timeouts]
merchant_response = "12h"

[return_rate]
alert_above_bp = 1500

[adapters.order]
kind = "sim"

[adapters.warehouse]
kind = "sim"

[adapters.fulfillment]
kind = "sim"

[adapters.payment]
kind = "sim"

[adapters.notify]
kind = "sim"
"#,
    )
    .unwrap();
    let (store, _db) = sqlite().await;
    let w = World::with_lines(
        store,
        dir.path(),
        aftersales_adapter_sim::SimConfig::quiet(3),
    )
    .await;
    w.physical_order("k1", "sneaker-28", 1, 25_900, 0);
    w.deliver("k1");
    // Day 12: outside apparel's 7 days, inside this line's 15.
    w.clock.advance(12 * DAY);
    let so = w
        .submit(
            json!({"business_line": "kids_shoes", "order_id": "k1", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::UnderReview);
    // The line's own 12-hour merchant deadline approves it.
    w.advance(13 * HOUR).await;
    assert_eq!(
        w.view(&so.id).await.state,
        ServiceOrderState::AwaitingReturnShipment
    );
    w.ship(&so.id).await;
    w.receive(&so.id, true).await;
    let so = w.view(&so.id).await;
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    assert_eq!(w.refunds(&so.id)[0].amount, cny(25_900));
    // An exchange is not offered by this line.
    let r = w
        .submit(
            json!({"business_line": "kids_shoes", "order_id": "k1", "type": "exchange",
            "lines": [{"line_id": "l1", "exchange_to": "sneaker-29"}], "reason": "wrong_size"}),
        )
        .await;
    assert!(
        matches!(r, Err(ServiceError::TypeNotOffered { .. })),
        "{r:?}"
    );
}

/// The Shopify + Stripe + ShipBob line (`config/platforms/us_shopify.toml`) with the
/// simulator behind its five systems: its platform workflows keep the order system's
/// return in step with the merchant's decision, cancel the order on the order system, and
/// pay each refund once.
#[tokio::test]
async fn the_platform_line_runs_its_workflows_end_to_end() {
    use aftersales_adapter_sim::PlatformReturnState as P;
    let text =
        std::fs::read_to_string(world::root().join("config/platforms/us_shopify.toml")).unwrap();
    let (head, _) = text.split_once("[adapters.order]").unwrap();
    let mut line = head.replace("\"USD\"", "\"CNY\"");
    for system in ["order", "warehouse", "fulfillment", "payment", "notify"] {
        line.push_str(&format!("[adapters.{system}]\nkind = \"sim\"\n\n"));
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("us_shopify.toml"), line).unwrap();
    let (store, _db) = sqlite().await;
    let w = World::with_lines(
        store,
        dir.path(),
        aftersales_adapter_sim::SimConfig::quiet(5),
    )
    .await;
    let platform_return = |so: &str| {
        w.sim
            .platform_returns()
            .into_iter()
            .find(|(_, r)| r.service_order_id.as_str() == so)
            .map(|(_, r)| r.state)
    };

    // Return and refund: requested on the order system, approved there when the merchant
    // approves here, received, refunded once.
    w.physical_order("p1", "tee-m", 1, 9_900, 0);
    w.deliver("p1");
    let so = w
        .submit(
            json!({"business_line": "us_shopify", "order_id": "p1", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "quality"}),
        )
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::UnderReview);
    assert_eq!(platform_return(&so.id), Some(P::Requested));
    w.approve(&so.id).await;
    assert_eq!(platform_return(&so.id), Some(P::Approved));
    w.ship(&so.id).await;
    w.receive(&so.id, true).await;
    let done = w.view(&so.id).await;
    assert_eq!(done.state, ServiceOrderState::Completed, "{done:#?}");
    assert_eq!(w.refunds(&so.id).len(), 1);
    assert_eq!(w.refunds(&so.id)[0].amount, cny(9_900));

    // The merchant declines: declined on the order system too, nothing paid.
    w.physical_order("p2", "tee-m", 1, 9_900, 0);
    w.deliver("p2");
    let so = w
        .submit(
            json!({"business_line": "us_shopify", "order_id": "p2", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "no_reason"}),
        )
        .await
        .unwrap();
    w.signal(&so.id, "merchant.decision", json!({"approved": false}))
        .await;
    assert_eq!(w.view(&so.id).await.state, ServiceOrderState::Rejected);
    assert_eq!(platform_return(&so.id), Some(P::Declined));
    assert!(w.refunds(&so.id).is_empty());

    // Cancel before shipment: stopped at the warehouse, cancelled on the order system,
    // refunded in full once.
    w.physical_order("p3", "tee-m", 2, 9_900, 1_000);
    let so = w
        .submit(json!({"business_line": "us_shopify", "order_id": "p3",
            "type": "cancel_after_payment", "lines": [{"line_id": "l1"}], "reason": "no_reason"}))
        .await
        .unwrap();
    assert_eq!(so.state, ServiceOrderState::Completed, "{so:#?}");
    let order = w.sim.order(&OrderId::new("p3")).unwrap();
    assert_eq!(
        order.cancelled_by.as_ref().map(|s| s.as_str()),
        Some(so.id.as_str())
    );
    assert_eq!(w.refunds(&so.id).len(), 1);
    assert_eq!(w.refunds(&so.id)[0].amount, cny(20_800));
}

/// Return rates: units sold from the sales feed, units returned from the service orders that
/// paid money back; a line above its threshold raises an alert.
#[tokio::test]
async fn return_rates_by_line_category_and_sku_raise_alerts_over_the_threshold() {
    use aftersales_core::store::SaleRecord;
    let (store, _dir) = sqlite().await;
    let w = World::new(store).await;
    let sale = |id: &str, line: &str, category: &str, sku: &str, quantity: u64| SaleRecord {
        business_line: line.into(),
        category: category.into(),
        sku: sku.into(),
        quantity,
        at: world::START_MS,
        dedupe_id: id.into(),
    };
    let recorded = w
        .svc
        .record_sales(&[
            sale("a", "electronics_3c", "general", "phone-128g", 100),
            sale("b", "apparel", "general", "jeans-32", 60),
        ])
        .await
        .unwrap();
    assert_eq!(recorded, 2);
    // A record sent twice counts once; an unknown line is refused.
    assert_eq!(
        w.svc
            .record_sales(&[sale("a", "electronics_3c", "general", "phone-128g", 100)])
            .await
            .unwrap(),
        0
    );
    assert!(matches!(
        w.svc
            .record_sales(&[sale("c", "nowhere", "general", "x", 1)])
            .await,
        Err(ServiceError::UnknownBusinessLine(_))
    ));
    // Four phones come back (4% > 3C's 3%), one pair of jeans (1.67% < apparel's 25%).
    for i in 0..4 {
        let order = format!("rr{i}");
        w.physical_order(&order, "phone-128g", 1, 100_000, 0);
        let so = w
            .submit(json!({"business_line": "electronics_3c", "order_id": order, "type": "cancel_after_payment",
                "lines": [{"line_id": "l1"}], "reason": "no_reason"}))
            .await
            .unwrap();
        assert_eq!(so.state, ServiceOrderState::Completed);
    }
    w.physical_order("rj", "jeans-32", 1, 29_900, 0);
    w.deliver("rj");
    let so = w
        .submit(
            json!({"business_line": "apparel", "order_id": "rj", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "wrong_size"}),
        )
        .await
        .unwrap();
    w.approve(&so.id).await;
    w.ship(&so.id).await;
    w.receive(&so.id, true).await;
    // A rejected request returns nothing.
    w.physical_order("rk", "jeans-32", 1, 29_900, 0);
    w.deliver("rk");
    let so = w
        .submit(
            json!({"business_line": "apparel", "order_id": "rk", "type": "return_refund",
            "lines": [{"line_id": "l1"}], "reason": "wrong_size"}),
        )
        .await
        .unwrap();
    w.signal(&so.id, "merchant.decision", json!({"approved": false}))
        .await;

    let report = w
        .svc
        .return_rates(world::START_MS - DAY, w.clock.now_ms() + 1)
        .await
        .unwrap();
    let line = |id: &str| {
        report
            .rates
            .iter()
            .find(|r| {
                r.business_line.as_str() == id
                    && r.scope == aftersales_domain::RateScope::BusinessLine
            })
            .unwrap()
            .ratio
    };
    assert_eq!(
        (line("electronics_3c").returned, line("electronics_3c").sold),
        (4, 100)
    );
    assert_eq!((line("apparel").returned, line("apparel").sold), (1, 60));
    assert!(report.rates.iter().any(|r| r.scope
        == aftersales_domain::RateScope::Sku(aftersales_domain::Sku::new("jeans-32"))
        && r.ratio.returned == 1));
    assert!(
        report.rates.iter().any(|r| r.scope
            == aftersales_domain::RateScope::Reason(aftersales_domain::Reason::WrongSize))
    );
    let alerted: Vec<(&str, &aftersales_domain::RateScope)> = report
        .alerts
        .iter()
        .map(|a| (a.business_line.as_str(), &a.scope))
        .collect();
    assert!(
        alerted.contains(&(
            "electronics_3c",
            &aftersales_domain::RateScope::BusinessLine
        )),
        "{alerted:?}"
    );
    assert!(alerted.iter().all(|(l, _)| *l != "apparel"), "{alerted:?}");
}
