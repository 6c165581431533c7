//! A full return and refund through the real engine, on the shipped
//! `physical.return_refund` workflow: the simulator serves the order system, warehouse and
//! notifier, the Stripe adapter (against the mock) serves payment. The refund's first answer
//! is lost, the engine retries with the same key, Stripe answers `pending`, and a signed
//! `refund.updated` webhook finishes it: one refund, paid once.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::ids::OrderId;
use aftersales_adapter::{AdapterConfig, AdapterSetConfig, Headers, Registry};
use aftersales_adapter_sim::{
    Inspection, ManualClock as SimClock, NewLine, NewOrder, Sim, SimConfig,
};
use aftersales_core::engine::{Engine, ManualClock, StartRequest, WorkerConfig};
use aftersales_core::store::InstanceStatus;
use aftersales_core::store::memory::MemoryStore;
use aftersales_money::{Currency, Money};
use aftersales_runtime::AdapterDispatcher;
use common::{MockStripe, WEBHOOK_SECRET};
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

fn sign(body: &[u8], at: SystemTime) -> Headers {
    let t = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let sig = hex::encode(mac.finalize().into_bytes());
    Headers::new().with("Stripe-Signature", format!("t={t},v1={sig}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_return_is_refunded_once_through_stripe() {
    // The shop: an order shipped from the simulated warehouse, paid through Stripe.
    let sim = Sim::new(SimConfig::quiet(11), SimClock::at_2025());
    sim.create_order(NewOrder {
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
    let api = MockStripe::start().await;
    api.set_asynchronous(true);
    let payment = api.create_payment(usd(4_500));

    // The binary's way: registry, business-line adapter config, environment.
    let mut registry = Registry::new();
    aftersales_adapter_stripe::register(&mut registry);
    let seeded = sim.clone();
    registry.register("sim", move |_| Ok(seeded.built()));
    let line = AdapterSetConfig {
        order: AdapterConfig::new("sim"),
        warehouse: AdapterConfig::new("sim"),
        fulfillment: AdapterConfig::new("sim"),
        payment: common::config(&api.uri()),
        notify: AdapterConfig::new("sim"),
    };
    let (set, webhooks) = registry.build_line(&line, &common::env).unwrap();
    let verifier = webhooks
        .into_iter()
        .find(|(system, _)| *system == System::Payment)
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

    // The parcel arrives and passes inspection; the refund's first answer is lost.
    api.lose_next_answer();
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
    assert_eq!(rec.status, InstanceStatus::Running, "{:#}", rec.state);
    assert_eq!(api.movements(&payment), vec![usd(4_500)]);
    let posts = api.refund_posts().await;
    assert!(posts.len() >= 2, "the lost answer was retried");
    assert!(
        posts
            .iter()
            .all(|p| p.headers["idempotency-key"] == posts[0].headers["idempotency-key"]),
        "every retry carried the same key"
    );

    // Stripe finishes the refund and says so, signed.
    let refund_id = api.refunds_of(&payment).pop().unwrap();
    let object = api.settle(&refund_id, "succeeded");
    let body = serde_json::to_vec(&json!({
        "id": "evt_1Finish",
        "object": "event",
        "type": "refund.updated",
        "data": {"object": object},
    }))
    .unwrap();
    let now = SystemTime::now();
    let event = verifier
        .verify(&sign(&body, now), &body, now)
        .unwrap()
        .unwrap();
    assert_eq!(event.correlation, refund_id);
    engine
        .event(
            &event.name,
            &event.correlation,
            &event.dedupe_id,
            event.payload,
        )
        .await
        .unwrap();
    for _ in 0..5 {
        engine.run_until_idle(&cfg).await.unwrap();
        clock.advance(5_000);
    }
    let rec = engine.get(&id).await.unwrap().unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{:#}", rec.state);
    assert_eq!(rec.state["end"]["output"]["refund_id"], json!(refund_id));
    assert_eq!(
        api.movements(&payment),
        vec![usd(4_500)],
        "paid exactly once"
    );
}
