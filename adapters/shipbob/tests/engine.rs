//! A full return and refund through the real engine, on the shipped
//! `physical.return_refund` workflow: the simulator serves the order system, fulfillment,
//! payment and notifier; the ShipBob adapter (against the mock) serves the warehouse. The
//! return's first answer is lost, the engine retries with the same key and the adapter finds
//! the return by its reference instead of opening a second; a signed `return.completed`
//! webhook then brings the inspection result, ShipBob's restock is confirmed, and the refund
//! is paid once.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::ids::OrderId;
use aftersales_adapter::{AdapterConfig, AdapterSetConfig, Headers, Registry};
use aftersales_adapter_sim::{ManualClock as SimClock, NewLine, NewOrder, Sim, SimConfig};
use aftersales_core::engine::{Engine, ManualClock, StartRequest, WorkerConfig};
use aftersales_core::store::InstanceStatus;
use aftersales_core::store::memory::MemoryStore;
use aftersales_money::{Currency, Money};
use aftersales_runtime::AdapterDispatcher;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{MockShipBob, WEBHOOK_SECRET};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

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

fn sign(id: &str, body: &[u8], at: SystemTime) -> Headers {
    let t = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let key = STANDARD
        .decode(WEBHOOK_SECRET.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{t}.").as_bytes());
    mac.update(body);
    Headers::new()
        .with("webhook-id", id)
        .with("webhook-timestamp", t.to_string())
        .with(
            "webhook-signature",
            format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes())),
        )
        .with("x-webhook-topic", "return.completed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_goes_through_shipbob_once() {
    // The shop: an order paid and shipped, known to the simulator (orders, payment) and to
    // ShipBob, which shipped it.
    let sim = Sim::new(SimConfig::quiet(11), SimClock::at_2025());
    let payment = sim
        .create_order(NewOrder {
            order_id: OrderId::new("o-1"),
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
    sim.mark_shipped(&OrderId::new("o-1")).unwrap();
    let api = MockShipBob::start().await;
    api.add_order("o-1", "tshirt-m", 1, "Completed");

    // The binary's way: registry, business-line adapter config, environment.
    let mut registry = Registry::new();
    aftersales_adapter_shipbob::register(&mut registry);
    let seeded = sim.clone();
    registry.register("sim", move |_| Ok(seeded.built()));
    let line = AdapterSetConfig {
        order: AdapterConfig::new("sim"),
        warehouse: common::config(&api.uri()),
        fulfillment: AdapterConfig::new("sim"),
        payment: AdapterConfig::new("sim"),
        notify: AdapterConfig::new("sim"),
    };
    let (set, webhooks) = registry.build_line(&line, &common::env).unwrap();
    let verifier = webhooks
        .into_iter()
        .find(|(system, _)| *system == System::Warehouse)
        .unwrap()
        .1;
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
                "order_id": "o-1",
                "payment_id": payment.as_str(),
                "lines": [{"line_id": "l1", "sku": "tshirt-m", "quantity": 1}],
                "refund_amount": {"minor": 4_500, "currency": "USD"},
            }),
            params: json!({}),
            idempotency_key: Some("return-1".into()),
            search_key: Some("o-1".into()),
            search_seen: None,
            meta: serde_json::Value::Null,
            id: None,
        })
        .await
        .unwrap();
    let id = started.id.clone();
    engine.run_until_idle(&cfg).await.unwrap();

    // The merchant approves; ShipBob makes the return but its answer is lost.
    api.lose_next_answer();
    engine
        .signal(&id, "merchant.decision", "d-1", json!({"approved": true}))
        .await
        .unwrap();
    for _ in 0..10 {
        engine.run_until_idle(&cfg).await.unwrap();
        clock.advance(5_000);
    }
    let returns = api.returns();
    assert_eq!(returns.len(), 1, "one return, not two: {returns:?}");
    assert_eq!(
        api.posts("/2026-01/return").await.len(),
        1,
        "the retry looked the return up instead of creating it again"
    );
    let (rma, reference, _) = returns[0].clone();
    let rec = engine.get(&id).await.unwrap().unwrap();
    assert_eq!(
        rec.state["outputs"]["create_return"]["rma_id"],
        json!(rma.to_string()),
        "{:#}",
        rec.state
    );

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

    // ShipBob receives, inspects and restocks the parcel, and says so, signed.
    let object = api.complete_return(rma, None);
    assert_eq!(object["reference_id"], json!(reference));
    let body = serde_json::to_vec(&object).unwrap();
    let now = SystemTime::now();
    let event = verifier
        .verify(&sign("msg_return_1", &body, now), &body, now)
        .unwrap()
        .unwrap();
    assert_eq!(event.name, "warehouse.return.received");
    assert_eq!(event.correlation, rma.to_string());
    engine
        .event(
            &event.name,
            &event.correlation,
            &event.dedupe_id,
            event.payload.clone(),
        )
        .await
        .unwrap();
    // The same delivery again changes nothing.
    engine
        .event(
            &event.name,
            &event.correlation,
            &event.dedupe_id,
            event.payload,
        )
        .await
        .unwrap();
    for _ in 0..10 {
        engine.run_until_idle(&cfg).await.unwrap();
        clock.advance(5_000);
    }
    let rec = engine.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{:#}", rec.state);
    assert_eq!(
        sim.refunds_for_payment(&payment).len(),
        1,
        "refunded exactly once"
    );
    assert_eq!(api.returns().len(), 1);
}
