//! Behaviour of the simulated platform: money, idempotency, faults, events, flows.

mod common;

use std::time::Duration;

use aftersales_adapter::ids::{RefundId, ServiceOrderId};
use aftersales_adapter::types::{
    CreateReturn, EntitlementRef, GetOrder, InterceptResult, InterceptShipment, Refund,
    ReleaseStock, ReserveStock, Revoke, RmaRef, ShipReplacement,
};
use aftersales_adapter::{
    ActionOutcome, AdapterConfig, AdapterSetConfig, ErrorClass, Fulfillment, OrderSystem, Payment,
    RefundLookup, RefundStatus, Registry, Warehouse, WebhookVerifier,
};
use aftersales_adapter_sim::{
    Clock, Delivery, Fault, FaultRates, Inspection, LedgerKind, RefundMode, ReturnState, SimConfig,
};
use common::{cny, key, quiet, sim_with, tshirt_order};
use serde_json::json;

fn refund(payment: &aftersales_adapter::ids::PaymentId, minor: i64, so: &str) -> Refund {
    Refund {
        payment_id: payment.clone(),
        amount: cny(minor),
        reason: None,
        service_order_id: Some(ServiceOrderId::new(so)),
    }
}

#[tokio::test]
async fn five_transient_failures_then_exactly_one_refund() {
    let (sim, _) = quiet();
    let (_, pay, _) = tshirt_order(&sim, 1);
    sim.script("payment.refund", [Fault::Transient; 5]);
    let req = refund(&pay, 9_000, "so-1");
    let k = key("so-1-refund-fwd-0");
    for attempt in 0..5 {
        let err = sim.refund(&req, &k).await.unwrap_err();
        assert!(
            matches!(err.class, ErrorClass::Transient { .. }),
            "attempt {attempt}: {err}"
        );
    }
    let out = sim.refund(&req, &k).await.unwrap();
    assert_eq!(out.status, RefundStatus::Succeeded);
    let refunds = sim.refunds_for_service_order(&"so-1".into());
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, cny(9_000));
    assert_eq!(refunds[0].id, out.refund_id.as_str());
    // Every attempt reached the platform with the engine's key, unchanged.
    let keys: Vec<_> = sim
        .calls()
        .into_iter()
        .filter(|c| c.action == "payment.refund")
        .map(|c| c.key)
        .collect();
    assert_eq!(keys, vec![Some(k.clone()); 6]);
}

#[tokio::test]
async fn a_lost_answer_never_pays_twice() {
    let (sim, _) = quiet();
    let (_, pay, _) = tshirt_order(&sim, 1);
    sim.script("payment.refund", [Fault::LostAnswer, Fault::LostAnswer]);
    let req = refund(&pay, 28_000, "so-1");
    let k = key("so-1-refund-fwd-0");
    let err = sim.refund(&req, &k).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::UnknownOutcome);
    assert_eq!(
        err.to_string(),
        "payment.refund failed on sim (unknown outcome): injected: no answer (the request may have been applied)"
    );
    // The money moved although nobody heard about it.
    assert_eq!(sim.refunded_total(&pay).unwrap(), cny(28_000));
    let again = sim.refund(&req, &k).await.unwrap_err();
    assert_eq!(again.class, ErrorClass::UnknownOutcome);
    let by_key = sim
        .refund_status(&RefundLookup::Key {
            payment_id: pay.clone(),
            key: k.clone(),
        })
        .await
        .unwrap();
    assert_eq!(by_key.status, RefundStatus::Succeeded);
    let third = sim.refund(&req, &k).await.unwrap();
    assert_eq!(Some(third.refund_id), by_key.refund_id);
    assert_eq!(sim.refunds_for_payment(&pay).len(), 1);
    assert_eq!(sim.refunded_total(&pay).unwrap(), cny(28_000));
}

#[tokio::test]
async fn a_lost_request_is_not_found_and_the_retry_pays_once() {
    let (sim, _) = quiet();
    let (_, pay, _) = tshirt_order(&sim, 1);
    sim.script("payment.refund", [Fault::LostRequest]);
    let req = refund(&pay, 1_000, "so-1");
    let k = key("so-1-refund-fwd-0");
    assert_eq!(
        sim.refund(&req, &k).await.unwrap_err().class,
        ErrorClass::UnknownOutcome
    );
    let status = sim
        .refund_status(&RefundLookup::Key {
            payment_id: pay.clone(),
            key: k.clone(),
        })
        .await
        .unwrap();
    assert_eq!(status.status, RefundStatus::NotFound);
    assert_eq!(status.refund_id, None);
    sim.refund(&req, &k).await.unwrap();
    assert_eq!(sim.refunds_for_payment(&pay).len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_hang_outlives_the_callers_timeout_but_the_refund_happened() {
    let (sim, _) = quiet();
    let (_, pay, _) = tshirt_order(&sim, 1);
    sim.script("payment.refund", [Fault::Hang]);
    let req = refund(&pay, 500, "so-1");
    let k = key("so-1-refund-fwd-0");
    let timed = tokio::time::timeout(Duration::from_secs(10), sim.refund(&req, &k)).await;
    assert!(timed.is_err(), "the call should hang past the timeout");
    assert_eq!(sim.refunds_for_payment(&pay).len(), 1);
    let retry = sim.refund(&req, &k).await.unwrap();
    assert_eq!(
        retry.refund_id.as_str(),
        sim.refunds_for_payment(&pay)[0].id
    );
}

#[tokio::test]
async fn over_refund_is_refused_and_nothing_is_stored() {
    let (sim, _) = quiet();
    let (_, pay, _) = tshirt_order(&sim, 1);
    sim.refund(&refund(&pay, 20_000, "so-1"), &key("a"))
        .await
        .unwrap();
    let err = sim
        .refund(&refund(&pay, 8_001, "so-2"), &key("b"))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(
        err.message,
        "refund of 80.01 CNY exceeds the 80.00 CNY left on payment `pay_o-1` (captured 280.00 CNY, refunded 200.00 CNY)"
    );
    assert_eq!(sim.ledger().len(), 1);
    // A refusal is not recorded against the key: the same key may be used once the
    // request is right.
    sim.refund(&refund(&pay, 8_000, "so-2"), &key("b"))
        .await
        .unwrap();
    assert_eq!(sim.refunded_total(&pay).unwrap(), cny(28_000));
}

#[tokio::test]
async fn a_key_reused_with_other_parameters_is_refused() {
    let (sim, _) = quiet();
    let (_, pay, _) = tshirt_order(&sim, 1);
    sim.refund(&refund(&pay, 100, "so-1"), &key("k"))
        .await
        .unwrap();
    let err = sim
        .refund(&refund(&pay, 200, "so-1"), &key("k"))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    assert_eq!(
        err.message,
        "idempotency key `k` was already used with different parameters"
    );
    assert_eq!(sim.ledger().len(), 1);
}

#[tokio::test]
async fn pending_refunds_settle_by_the_clock_and_emit_one_event() {
    let mut config = SimConfig::quiet(9);
    config.refunds = RefundMode::Pending {
        settle_after: Duration::from_secs(60),
    };
    let (sim, clock) = sim_with(config);
    let (_, pay, _) = tshirt_order(&sim, 1);
    let adapters = sim.adapter_set();
    let input = json!({
        "payment_id": pay,
        "amount": {"minor": 5000, "currency": "CNY"},
        "service_order_id": "so-1",
    });
    let out = adapters
        .dispatch("payment.refund", &input, &key("so-1-refund"))
        .await
        .unwrap();
    let ActionOutcome::Pending {
        correlation_key,
        poll,
        ..
    } = out
    else {
        panic!("expected pending, got {out:?}");
    };
    assert_eq!(sim.settle_due(), 0);
    assert!(sim.drain_events().is_empty());
    let poll = poll.unwrap();
    let status = adapters
        .dispatch(poll.action, &poll.input, &key("unused"))
        .await
        .unwrap();
    assert_eq!(
        status,
        ActionOutcome::Done(
            json!({"status": "pending", "refund_id": correlation_key})
                .as_object()
                .unwrap()
                .clone()
        )
    );
    clock.advance(Duration::from_secs(61));
    assert_eq!(sim.settle_due(), 1);
    let events = sim.drain_events();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].name, "payment.refund.succeeded");
    assert_eq!(events[0].correlation, correlation_key);
    assert_eq!(
        events[0].payload["amount"],
        json!({"minor": 5000, "currency": "CNY"})
    );
    let state = sim
        .refund_status(&RefundLookup::Id(RefundId::new(correlation_key)))
        .await
        .unwrap();
    assert_eq!(state.status, RefundStatus::Succeeded);
}

#[tokio::test]
async fn a_failed_pending_refund_frees_the_amount_again() {
    let mut config = SimConfig::quiet(9);
    config.refunds = RefundMode::Pending {
        settle_after: Duration::from_secs(60),
    };
    let (sim, _) = sim_with(config);
    let (_, pay, _) = tshirt_order(&sim, 1);
    let first = sim
        .refund(&refund(&pay, 28_000, "so-1"), &key("a"))
        .await
        .unwrap();
    assert_eq!(first.status, RefundStatus::Pending);
    assert_eq!(sim.refunded_total(&pay).unwrap(), cny(28_000));
    sim.complete_refund(&first.refund_id, RefundStatus::Failed)
        .unwrap();
    assert_eq!(sim.refunded_total(&pay).unwrap(), cny(0));
    assert_eq!(sim.drain_events()[0].name, "payment.refund.failed");
    // A new key is needed, and now it fits.
    sim.refund(&refund(&pay, 28_000, "so-1"), &key("b"))
        .await
        .unwrap();
    assert!(
        sim.complete_refund(&first.refund_id, RefundStatus::Succeeded)
            .is_err()
    );
}

#[tokio::test]
async fn events_can_be_duplicated_and_reordered_deterministically() {
    async fn run(seed: u64) -> Vec<String> {
        let mut config = SimConfig::quiet(seed);
        config.delivery = Delivery {
            duplicate: 500,
            reorder: true,
        };
        let (sim, _) = sim_with(config);
        let (_, pay, _) = tshirt_order(&sim, 1);
        for i in 0..6 {
            sim.refund(&refund(&pay, 100, "so"), &key(&format!("k{i}")))
                .await
                .unwrap();
        }
        sim.drain_events()
            .into_iter()
            .map(|e| e.dedupe_id)
            .collect()
    }
    let a = run(11).await;
    assert_eq!(a, run(11).await, "same seed, same delivery");
    assert!(a.len() > 6, "some events delivered twice: {a:?}");
    let mut unique = a.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 6);
    let in_order: Vec<String> = {
        let mut s = a.clone();
        s.dedup();
        s
    };
    assert_ne!(in_order, unique, "reordered: {a:?}");
}

#[tokio::test]
async fn random_faults_repeat_exactly_for_a_seed() {
    async fn run(seed: u64) -> Vec<String> {
        let mut config = SimConfig::quiet(seed);
        config.default_faults = FaultRates {
            transient: 200,
            permanent: 50,
            lost_answer: 100,
            lost_request: 100,
            hang: 0,
        };
        let (sim, _) = sim_with(config);
        let (_, pay, _) = tshirt_order(&sim, 1);
        let mut seen = Vec::new();
        for i in 0..40 {
            let r = sim
                .refund(&refund(&pay, 10, "so"), &key(&format!("k{}", i % 10)))
                .await;
            seen.push(match r {
                Ok(o) => o.refund_id.to_string(),
                Err(e) => e.class.to_string(),
            });
        }
        // Never more than one refund per key, whatever failed.
        assert!(sim.refunds_for_payment(&pay).len() <= 10);
        seen
    }
    let a = run(5).await;
    assert_eq!(a, run(5).await);
    assert_ne!(a, run(6).await);
    for class in ["transient", "unknown outcome"] {
        assert!(a.iter().any(|s| s == class), "{class} never drawn: {a:?}");
    }
}

#[tokio::test]
async fn interception_in_time_restores_stock_and_too_late_after_picking() {
    let (sim, _) = quiet();
    let (order, _, line) = tshirt_order(&sim, 1);
    sim.set_stock(&"tshirt-m".into(), 5);
    let req = InterceptShipment {
        order_id: order.clone(),
        service_order_id: "so-1".into(),
        lines: vec![line.clone()],
    };
    let out = sim.intercept_shipment(&req, &key("i1")).await.unwrap();
    assert_eq!(out.result, InterceptResult::Intercepted);
    assert_eq!(sim.stock(&"tshirt-m".into()), 6);
    sim.intercept_shipment(&req, &key("i1")).await.unwrap();
    assert_eq!(
        sim.stock(&"tshirt-m".into()),
        6,
        "a repeat restocks nothing"
    );

    let (order2, _, line2) = tshirt_order(&sim, 2);
    sim.mark_picked(&order2).unwrap();
    let req2 = InterceptShipment {
        order_id: order2,
        service_order_id: "so-2".into(),
        lines: vec![line2],
    };
    let out = sim.intercept_shipment(&req2, &key("i2")).await.unwrap();
    assert_eq!(out.result, InterceptResult::TooLate);
}

#[tokio::test]
async fn a_return_that_fails_inspection_goes_back_to_the_buyer() {
    let (sim, _) = quiet();
    let (order, _, line) = tshirt_order(&sim, 1);
    sim.mark_delivered(&order).unwrap();
    let rma = sim
        .create_return(
            &CreateReturn {
                order_id: order.clone(),
                service_order_id: "so-1".into(),
                lines: vec![line],
                pickup: true,
            },
            &key("so-1-rma"),
        )
        .await
        .unwrap()
        .rma_id;
    assert_eq!(sim.return_of(&rma).unwrap().reference.as_str(), "so-1-rma");
    sim.receive_return(&rma, Inspection::Fail("wrong item returned".into()))
        .unwrap();
    let events = sim.drain_events();
    let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(
        names,
        ["warehouse.return.received", "warehouse.return.inspected"]
    );
    assert_eq!(events[0].payload["inspection_passed"], json!(false));
    assert_eq!(events[0].payload["note"], json!("wrong item returned"));
    assert_eq!(events[1].payload, events[0].payload);
    assert_eq!(events[1].correlation, rma.as_str());

    let r = RmaRef {
        rma_id: rma.clone(),
    };
    let err = sim.restock(&r, &key("restock")).await.unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    let parcel = sim
        .return_to_buyer(&r, &key("back"))
        .await
        .unwrap()
        .parcel_id;
    assert!(matches!(
        sim.return_of(&rma).unwrap().state,
        ReturnState::ReturnedToBuyer { .. }
    ));
    sim.deliver_parcel(&parcel).unwrap();
    assert_eq!(sim.drain_events()[0].name, "warehouse.parcel.delivered");
    // An arrived return cannot be cancelled.
    assert_eq!(
        sim.cancel_return(&r, &key("cancel"))
            .await
            .unwrap_err()
            .class,
        ErrorClass::Permanent
    );
}

#[tokio::test]
async fn restock_and_its_compensation_move_stock_once() {
    let (sim, _) = quiet();
    let (order, _, mut line) = tshirt_order(&sim, 1);
    line.quantity = 2;
    sim.mark_shipped(&order).unwrap();
    let rma = sim
        .create_return(
            &CreateReturn {
                order_id: order.clone(),
                service_order_id: "so-1".into(),
                lines: vec![line.clone()],
                pickup: false,
            },
            &key("rma"),
        )
        .await
        .unwrap()
        .rma_id;
    // Only 1 of the 3 units is left to return.
    let err = sim
        .create_return(
            &CreateReturn {
                order_id: order,
                service_order_id: "so-2".into(),
                lines: vec![line],
                pickup: false,
            },
            &key("rma-2"),
        )
        .await
        .unwrap_err();
    assert!(
        err.message
            .contains("2 of 3 units are already being returned"),
        "{err}"
    );
    sim.receive_return(&rma, Inspection::Pass).unwrap();
    let r = RmaRef { rma_id: rma };
    sim.restock(&r, &key("restock")).await.unwrap();
    sim.restock(&r, &key("restock")).await.unwrap();
    assert_eq!(sim.stock(&"tshirt-m".into()), 2);
    sim.reverse_restock(&r, &key("unrestock")).await.unwrap();
    assert_eq!(sim.stock(&"tshirt-m".into()), 0);
}

#[tokio::test]
async fn exchange_reserves_ships_or_reports_out_of_stock() {
    let (sim, _) = quiet();
    let (order, _, _) = tshirt_order(&sim, 1);
    sim.set_stock(&"tshirt-l".into(), 1);
    let want = ReserveStock {
        sku: "tshirt-l".into(),
        quantity: 1,
    };
    let res = sim.reserve_stock(&want, &key("res-1")).await.unwrap();
    assert!(res.reserved);
    assert_eq!(sim.stock(&"tshirt-l".into()), 0);
    let none = sim.reserve_stock(&want, &key("res-2")).await.unwrap();
    assert!(!none.reserved);
    assert_eq!(none.reservation_id, None);
    let reservation_id = res.reservation_id.unwrap();
    let parcel = sim
        .ship_replacement(
            &ShipReplacement {
                order_id: order,
                service_order_id: "so-1".into(),
                reservation_id: reservation_id.clone(),
            },
            &key("ship"),
        )
        .await
        .unwrap();
    assert!(sim.parcel(&parcel.parcel_id).is_some());
    let err = sim
        .release_stock(&ReleaseStock { reservation_id }, &key("release"))
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
}

#[tokio::test]
async fn virtual_course_consumption_and_revocation() {
    let (sim, _) = quiet();
    let ent = sim.grant_entitlement(&"b".into(), &"course-go".into(), 10);
    sim.consume(&ent, 3).unwrap();
    let r = EntitlementRef {
        entitlement_id: ent.clone(),
    };
    let c = sim.get_consumption(&r).await.unwrap();
    assert_eq!((c.consumed, c.total, c.active), (3, 10, true));
    let err = sim
        .revoke(
            &Revoke {
                entitlement_id: ent.clone(),
                units: Some(8),
            },
            &key("too-many"),
        )
        .await
        .unwrap_err();
    assert_eq!(err.class, ErrorClass::Permanent);
    sim.revoke(
        &Revoke {
            entitlement_id: ent.clone(),
            units: None,
        },
        &key("revoke"),
    )
    .await
    .unwrap();
    assert!(!sim.entitlement(&ent).unwrap().active);
    assert!(
        sim.consume(&ent, 1).is_err(),
        "a revoked course cannot be watched"
    );
}

#[tokio::test]
async fn dispatch_speaks_the_catalogue_json() {
    let (sim, _) = quiet();
    let (order, pay, _) = tshirt_order(&sim, 1);
    let adapters = sim.adapter_set();
    let out = adapters
        .dispatch("order.get", &json!({"order_id": order}), &key("unused"))
        .await
        .unwrap();
    let ActionOutcome::Done(map) = out else {
        panic!("{out:?}");
    };
    assert_eq!(map["paid"], json!({"minor": 28000, "currency": "CNY"}));
    assert_eq!(map["payment_id"], json!(pay));
    assert_eq!(map["shipment"], json!("not_shipped"));
    assert_eq!(
        map["lines"][0]["paid"],
        json!({"minor": 27000, "currency": "CNY"})
    );
    let err = adapters
        .dispatch("payment.refund", &json!({"payment_id": pay}), &key("r"))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "payment.refund failed on sim (permanent): invalid input: missing field `amount`"
    );
    let typed = sim.get(&GetOrder { order_id: order }).await.unwrap();
    assert_eq!(typed.paid, cny(28_000));
}

#[tokio::test]
async fn charges_and_insurance_claims_are_in_the_ledger() {
    let (sim, _) = quiet();
    let (order, pay, _) = tshirt_order(&sim, 1);
    let adapters = sim.adapter_set();
    adapters
        .dispatch(
            "payment.charge",
            &json!({"payment_id": pay, "amount": {"minor": 800, "currency": "CNY"}}),
            &key("ship-fee"),
        )
        .await
        .unwrap();
    adapters
        .dispatch(
            "payment.insurance_claim",
            &json!({"order_id": order, "service_order_id": "so-1",
                    "amount": {"minor": 1200, "currency": "CNY"}}),
            &key("claim"),
        )
        .await
        .unwrap();
    let kinds: Vec<LedgerKind> = sim.ledger().iter().map(|e| e.kind).collect();
    assert_eq!(kinds, [LedgerKind::Charge, LedgerKind::InsuranceClaim]);
    assert_eq!(sim.refunded_total(&pay).unwrap(), cny(0));
}

#[tokio::test]
async fn the_registry_builds_one_sim_for_all_systems() {
    let mut registry = Registry::new();
    aftersales_adapter_sim::register(&mut registry);
    let sim = AdapterConfig::with_settings(
        "sim",
        json!({"seed": 3, "action_faults": {"payment.refund": {"transient": 1000}}}),
    );
    let set = registry
        .build_set(
            &AdapterSetConfig {
                order: sim.clone(),
                warehouse: sim.clone(),
                fulfillment: sim.clone(),
                payment: sim.clone(),
                notify: sim.clone(),
            },
            &|_| None,
        )
        .unwrap();
    let err = set
        .dispatch(
            "payment.refund",
            &json!({"payment_id": "p", "amount": {"minor": 1, "currency": "CNY"}}),
            &key("k"),
        )
        .await
        .unwrap_err();
    assert!(matches!(err.class, ErrorClass::Transient { .. }), "{err}");
    assert_eq!(set.capabilities().actions().count(), 28);

    // The same build also yields each system's webhook verifier: one simulator, one verifier.
    let line = AdapterSetConfig {
        order: sim.clone(),
        warehouse: sim.clone(),
        fulfillment: sim.clone(),
        payment: sim.clone(),
        notify: sim.clone(),
    };
    let (_, verifiers) = registry.build_line(&line, &|_| None).unwrap();
    let systems: Vec<&str> = verifiers.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(
        systems,
        ["order", "warehouse", "fulfillment", "payment", "notify"]
    );
    assert!(
        verifiers
            .iter()
            .all(|(_, v)| std::sync::Arc::ptr_eq(v, &verifiers[0].1))
    );

    let bad = AdapterConfig::with_settings("sim", json!({"webhook_secret_env": "SIM_SECRET"}));
    let err = registry.build(&bad, &|_| None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "adapter `sim`: environment variable `SIM_SECRET` (named by `webhook_secret_env`) is not set"
    );
    let built = registry
        .build(&bad, &|name| {
            (name == "SIM_SECRET").then(|| "s3cret".to_owned())
        })
        .unwrap();
    assert!(built.webhooks.is_some());
    let err = registry
        .build(
            &AdapterConfig::with_settings("sim", json!({"refunds": "later"})),
            &|_| None,
        )
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "adapter `sim`: invalid settings: refunds: expected \"immediate\" or \"pending\", found \"later\""
    );
}

#[tokio::test]
async fn drained_webhooks_verify_with_the_sims_verifier() {
    let (sim, clock) = quiet();
    let (_, pay, _) = tshirt_order(&sim, 1);
    sim.refund(&refund(&pay, 100, "so-1"), &key("k"))
        .await
        .unwrap();
    let deliveries = sim.drain_webhooks();
    assert_eq!(deliveries.len(), 1);
    let v = sim.webhook_verifier();
    let event = v
        .verify(&deliveries[0].headers, &deliveries[0].body, clock.now())
        .unwrap()
        .unwrap();
    assert_eq!(event.name, "payment.refund.succeeded");
    clock.advance(Duration::from_secs(600));
    assert!(
        v.verify(&deliveries[0].headers, &deliveries[0].body, clock.now())
            .is_err()
    );
}

#[test]
fn setup_refuses_impossible_worlds() {
    let (sim, _) = quiet();
    tshirt_order(&sim, 1);
    let err = sim
        .create_order(aftersales_adapter_sim::NewOrder {
            order_id: "o-1".into(),
            buyer_id: "b".into(),
            lines: vec![],
            shipping_fee: cny(0),
        })
        .unwrap_err();
    assert_eq!(err.to_string(), "order `o-1` already exists");
    assert_eq!(
        sim.mark_shipped(&"nope".into()).unwrap_err().to_string(),
        "unknown order `nope`"
    );
}

#[tokio::test]
async fn every_emitted_event_matches_the_event_catalogue() {
    let mut config = SimConfig::quiet(1);
    config.refunds = RefundMode::Pending {
        settle_after: Duration::from_secs(1),
    };
    let (sim, _) = sim_with(config);
    let (order, pay, line) = tshirt_order(&sim, 1);
    for (i, status) in [
        RefundStatus::Succeeded,
        RefundStatus::Failed,
        RefundStatus::Canceled,
    ]
    .into_iter()
    .enumerate()
    {
        let so = if i == 0 {
            None
        } else {
            Some(ServiceOrderId::new("so"))
        };
        let req = Refund {
            service_order_id: so,
            ..refund(&pay, 100, "so")
        };
        let out = sim.refund(&req, &key(&format!("k{i}"))).await.unwrap();
        sim.complete_refund(&out.refund_id, status).unwrap();
    }
    sim.mark_shipped(&order).unwrap();
    let rma = sim
        .create_return(
            &CreateReturn {
                order_id: order,
                service_order_id: "so".into(),
                lines: vec![line],
                pickup: false,
            },
            &key("rma"),
        )
        .await
        .unwrap()
        .rma_id;
    sim.receive_return(&rma, Inspection::Pass).unwrap();
    let parcel = sim
        .return_to_buyer(&RmaRef { rma_id: rma }, &key("back"))
        .await
        .unwrap()
        .parcel_id;
    sim.deliver_parcel(&parcel).unwrap();

    let events = sim.drain_events();
    let mut names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
    names.sort();
    let mut all: Vec<&str> = aftersales_adapter::catalogue::events()
        .iter()
        .map(|e| e.name)
        .collect();
    all.sort();
    assert_eq!(names, all, "every catalogue event is emitted once");
    for e in &events {
        let spec = aftersales_adapter::catalogue::events()
            .iter()
            .find(|s| s.name == e.name)
            .unwrap();
        let payload = e.payload.as_object().unwrap();
        assert_eq!(
            payload[spec.correlation],
            json!(e.correlation),
            "{}",
            e.name
        );
        for f in spec.payload.iter().filter(|f| f.required) {
            assert!(
                payload.contains_key(f.name),
                "{}: missing {}",
                e.name,
                f.name
            );
        }
        for k in payload.keys() {
            assert!(
                spec.payload.iter().any(|f| f.name == k),
                "{}: undeclared {k}",
                e.name
            );
        }
    }
}
