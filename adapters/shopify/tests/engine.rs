//! A full return and refund through the real engine, on the shipped
//! `physical.return_refund` workflow: the Shopify adapter (against the mock) serves the order
//! system, the simulator serves the warehouse, fulfillment, payment and notifier. The order
//! is tagged while under after-sales; once the simulator's payment has refunded, the refund
//! is recorded in Shopify, whose first answer is lost: the engine retries with the same key
//! and the adapter finds the refund by its note instead of recording a second; the order
//! ends tagged as completed.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;

use aftersales_adapter::ids::OrderId;
use aftersales_adapter::{AdapterConfig, AdapterSetConfig, Registry};
use aftersales_adapter_sim::{
    Inspection, ManualClock as SimClock, NewLine, NewOrder, Sim, SimConfig,
};
use aftersales_core::engine::{Engine, ManualClock, StartRequest, WorkerConfig};
use aftersales_core::store::InstanceStatus;
use aftersales_core::store::memory::MemoryStore;
use aftersales_money::{Currency, Money};
use aftersales_runtime::AdapterDispatcher;
use common::{MOrderSpec, MockShopify};
use serde_json::json;

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD)
}

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_is_recorded_in_shopify_once() {
    // The shop: a Shopify order, shipped; the simulator holds the same order for the
    // warehouse and takes the payment.
    let api = MockShopify::start().await;
    let mut spec = MOrderSpec::simple("tshirt-m", 1, 4_500);
    spec.fulfillment = "FULFILLED";
    let order_id = api.add_order(spec);
    let sim = Sim::new(SimConfig::quiet(11), SimClock::at_2025());
    let payment = sim
        .create_order(NewOrder {
            order_id: OrderId::new(order_id.clone()),
            buyer_id: "buyer-1".into(),
            lines: vec![NewLine {
                line_id: "l1".into(),
                sku: "tshirt-m".into(),
                spu: "tshirt".into(),
                quantity: 1,
                unit_price: usd(4_500),
                paid: usd(4_500),
                entitlement_units: None,
            }],
            shipping_fee: usd(0),
        })
        .unwrap();
    sim.mark_shipped(&OrderId::new(order_id.clone())).unwrap();

    // The binary's way: registry, business-line adapter config, environment.
    let mut registry = Registry::new();
    aftersales_adapter_shopify::register(&mut registry);
    let seeded = sim.clone();
    registry.register("sim", move |_| Ok(seeded.built()));
    let line = AdapterSetConfig {
        order: common::config(&api.uri()),
        warehouse: AdapterConfig::new("sim"),
        fulfillment: AdapterConfig::new("sim"),
        payment: AdapterConfig::new("sim"),
        notify: AdapterConfig::new("sim"),
    };
    let (set, _webhooks) = registry.build_line(&line, &common::env).unwrap();
    let mut dispatcher = AdapterDispatcher::new();
    dispatcher.bind("apparel", Arc::new(set));
    let clock = ManualClock::new(1_795_564_800_000);
    let engine = Arc::new(Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(clock.clone()),
        Arc::new(dispatcher),
        aftersales_runtime::catalogue::builtin(),
    ));
    engine.deploy(&workflows()).await.unwrap();
    let cfg = WorkerConfig::default();

    let started = engine
        .start(StartRequest {
            workflow: "physical.return_refund".into(),
            version: None,
            business_line: "apparel".into(),
            input: json!({
                "service_order_id": "so-1",
                "order_id": order_id,
                "payment_id": payment.as_str(),
                "lines": [{"line_id": "l1", "sku": "tshirt-m", "quantity": 1}],
                "refund_amount": {"minor": 4_500, "currency": "USD"},
            }),
            params: json!({}),
            idempotency_key: Some("return-1".into()),
            search_key: Some(order_id.clone()),
            search_seen: None,
            meta: serde_json::Value::Null,
            id: None,
        })
        .await
        .unwrap();
    let id = started.id.clone();
    engine.run_until_idle(&cfg).await.unwrap();
    assert_eq!(api.tags(&order_id), ["aftersales:so-1"]);
    engine
        .signal(&id, "merchant.decision", "d-1", json!({"approved": true}))
        .await
        .unwrap();
    engine.run_until_idle(&cfg).await.unwrap();
    let rma = sim.returns().into_iter().next().unwrap().rma_id;
    engine
        .signal(
            &id,
            "buyer.shipped",
            "s-1",
            json!({"carrier": "UPS", "tracking_no": "1Z999"}),
        )
        .await
        .unwrap();
    engine.run_until_idle(&cfg).await.unwrap();

    // The parcel arrives and passes inspection; the simulator refunds; Shopify's answer to
    // the refund record is lost.
    api.lose_next_answer(Some("AftersalesRefund"));
    sim.receive_return(&rma, Inspection::Pass).unwrap();
    for e in sim.drain_events() {
        engine
            .event(&e.name, &e.correlation, &e.dedupe_id, e.payload)
            .await
            .unwrap();
    }
    for _ in 0..10 {
        engine.run_until_idle(&cfg).await.unwrap();
        clock.advance(5_000);
    }
    let rec = engine.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{:#}", rec.state);
    assert_eq!(sim.refunds_for_payment(&payment).len(), 1, "paid once");
    let refunds = api.refunds(&order_id);
    assert_eq!(refunds.len(), 1, "recorded once: {refunds:?}");
    assert_eq!(refunds[0].2, 4_500);
    assert_eq!(
        api.operations("AftersalesRefund").await.len(),
        1,
        "the retry found the refund instead of recording it again"
    );
    assert!(
        api.operations("AftersalesRefundable").await.len() >= 2,
        "the lost answer was retried"
    );
    assert_eq!(api.tags(&order_id), ["aftersales:so-1:completed"]);
}
