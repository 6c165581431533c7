//! The real engine driving the simulator through the adapter dispatcher, on a shipped
//! workflow: a refund whose answer is lost is retried with the same key and paid once.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::sync::Arc;

use aftersales_adapter::ids::{OrderId, PaymentId};
use aftersales_adapter_sim::{Fault, ManualClock as SimClock, NewLine, NewOrder, Sim, SimConfig};
use aftersales_core::engine::{Engine, ManualClock, StartRequest, WorkerConfig};
use aftersales_core::store::InstanceStatus;
use aftersales_core::store::memory::MemoryStore;
use aftersales_money::{Currency, Money};
use aftersales_runtime::AdapterDispatcher;
use serde_json::json;

fn workflows() -> Vec<(String, String)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../workflows");
    let mut out = Vec::new();
    for kind in ["physical", "virtual", "bundle"] {
        for entry in std::fs::read_dir(root.join(kind)).unwrap() {
            let path = entry.unwrap().path();
            if path.extension().is_some_and(|e| e == "toml") {
                out.push((
                    path.display().to_string(),
                    std::fs::read_to_string(&path).unwrap(),
                ));
            }
        }
    }
    out
}

fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

async fn setup(sim: &Sim) -> (Arc<Engine>, ManualClock) {
    let mut dispatcher = AdapterDispatcher::new();
    dispatcher.bind("apparel", Arc::new(sim.adapter_set()));
    let clock = ManualClock::new(1_795_564_800_000);
    let engine = Arc::new(Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(clock.clone()),
        Arc::new(dispatcher),
        aftersales_runtime::catalogue::builtin(),
    ));
    engine.deploy(&workflows()).await.unwrap();
    (engine, clock)
}

fn order(sim: &Sim, n: u32) -> String {
    sim.create_order(NewOrder {
        order_id: OrderId::new(format!("o-{n}")),
        buyer_id: "buyer-1".into(),
        lines: vec![NewLine {
            line_id: "l1".into(),
            sku: "tshirt-m".into(),
            spu: "tshirt".into(),
            quantity: 3,
            unit_price: cny(10_000),
            paid: cny(27_000),
            entitlement_units: None,
        }],
        shipping_fee: cny(1_000),
    })
    .unwrap()
    .to_string()
}

fn cancel_request(n: u32, payment_id: &str) -> StartRequest {
    StartRequest {
        workflow: "physical.cancel_after_payment".into(),
        version: None,
        business_line: "apparel".into(),
        input: json!({
            "service_order_id": format!("so-{n}"),
            "order_id": format!("o-{n}"),
            "payment_id": payment_id,
            "lines": [{"line_id": "l1", "sku": "tshirt-m", "quantity": 3}],
            "refund_amount": {"minor": 28_000, "currency": "CNY"},
            "return_refund_amount": {"minor": 27_000, "currency": "CNY"},
        }),
        params: json!({}),
        idempotency_key: Some(format!("cancel-{n}")),
        search_key: Some(format!("o-{n}")),
        search_seen: None,
        meta: serde_json::Value::Null,
        id: None,
    }
}

#[tokio::test]
async fn a_cancellation_before_shipment_is_intercepted_and_refunded_in_full() {
    let sim = Sim::new(SimConfig::quiet(7), SimClock::at_2025());
    let (engine, _clock) = setup(&sim).await;
    let payment = order(&sim, 1);
    let started = engine.start(cancel_request(1, &payment)).await.unwrap();
    engine
        .run_until_idle(&WorkerConfig::default())
        .await
        .unwrap();
    let rec = engine.get(&started.id).await.unwrap().unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{:#}", rec.state);
    let refunds = sim.refunds_for_payment(&PaymentId::new(payment.clone()));
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, cny(28_000));
}

#[tokio::test]
async fn a_refund_whose_answer_was_lost_is_retried_with_the_same_key_and_paid_once() {
    let sim = Sim::new(SimConfig::quiet(7), SimClock::at_2025());
    let (engine, clock) = setup(&sim).await;
    let payment = order(&sim, 2);
    sim.script("payment.refund", [Fault::LostAnswer, Fault::Transient]);
    let started = engine.start(cancel_request(2, &payment)).await.unwrap();
    let cfg = WorkerConfig::default();
    for _ in 0..20 {
        engine.run_until_idle(&cfg).await.unwrap();
        clock.advance(60_000);
    }
    let rec = engine.get(&started.id).await.unwrap().unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{:#}", rec.state);
    let refunds = sim.refunds_for_payment(&PaymentId::new(payment.clone()));
    assert_eq!(refunds.len(), 1, "exactly one refund: {refunds:?}");
    assert_eq!(refunds[0].amount, cny(28_000));
    let history = engine.history(&started.id, 0, 1000).await.unwrap();
    let retries: Vec<_> = history
        .iter()
        .filter(|h| h.event.kind == "retry_scheduled")
        .collect();
    assert_eq!(retries.len(), 2);
    assert_eq!(retries[0].event.data["class"], "unknown_outcome");
}
