//! The issue's promise: a workflow step calling `payment.refund` works through the
//! simulator or through the generic HTTP adapter, chosen by configuration alone — same
//! workflow, same engine — and an unknown-outcome refund is settled without paying twice.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use aftersales_adapter::{AdapterConfig, AdapterSetConfig, Registry};
use aftersales_adapter_sim::{ManualClock as SimClock, NewLine, NewOrder, Sim, SimConfig};
use aftersales_adapter_testkit::mock_payment::MockPaymentApi;
use aftersales_core::engine::{Engine, ManualClock, StartRequest, WorkerConfig};
use aftersales_core::store::InstanceStatus;
use aftersales_core::store::memory::MemoryStore;
use aftersales_money::{Currency, Money};
use aftersales_runtime::AdapterDispatcher;
use serde_json::{Value, json};

const REFUND: &str = r#"
[workflow]
name = "t.refund"
version = 1

[input]
payment_id = "string"
amount = "money"

[[step]]
id = "refund"
action = "payment.refund"
input = { payment_id = "${input.payment_id}", amount = "${input.amount}", reason = "returned" }
pivot = true
retry = { max_attempts = 5, initial = "1s", jitter = "none" }

[[step]]
id = "done"
end = "completed"
output = { refund_id = "${steps.refund.refund_id}" }
"#;

const HTTP_PAYMENT: &str = r#"
base_url = "BASE"
timeout = "1s"
idempotency_header = "Idempotency-Key"
auth = "none"
error_message = "/error/message"

[actions."payment.refund"]
method = "POST"
path = "/v1/payments/{payment_id}/refunds"
body = { amount = "{amount.minor}", currency = "{amount.currency}", reason = "{reason}" }
outputs = { refund_id = "/id", status = { pointer = "/status", map = { processing = "pending" } } }

[actions."payment.refund_status"]
method = "GET"
path = "/v1/refunds/{refund_id}"
outputs = { refund_id = "/id", status = { pointer = "/status", map = { processing = "pending" } } }
on_status = { 404 = { status = "not_found" } }

[actions."payment.refund_status".by_key]
method = "GET"
path = "/v1/payments/{payment_id}/refunds/by-key/{request_key}"
"#;

fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

/// The binary's registry, except that `sim` hands out one pre-seeded world the test can
/// look into (a registry-built simulator starts empty).
fn registry(sim: &Sim) -> Registry {
    let mut r = Registry::new();
    aftersales_adapter_http::register(&mut r);
    let sim = sim.clone();
    r.register("sim", move |_| Ok(sim.built()));
    r
}

fn config(payment: AdapterConfig) -> AdapterSetConfig {
    AdapterSetConfig {
        order: AdapterConfig::new("sim"),
        warehouse: AdapterConfig::new("sim"),
        fulfillment: AdapterConfig::new("sim"),
        payment,
        notify: AdapterConfig::new("sim"),
    }
}

async fn run_refund(
    sim: &Sim,
    payment: AdapterConfig,
    payment_id: &str,
    clock_steps: usize,
) -> Value {
    let set = registry(sim)
        .build_set(&config(payment), &|_| None)
        .unwrap();
    let mut dispatcher = AdapterDispatcher::new();
    dispatcher.bind("shop", Arc::new(set));
    let clock = ManualClock::new(1_795_564_800_000);
    let engine = Arc::new(Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(clock.clone()),
        Arc::new(dispatcher),
        aftersales_runtime::catalogue::builtin(),
    ));
    engine
        .deploy(&[("refund.toml".into(), REFUND.into())])
        .await
        .unwrap();
    let started = engine
        .start(StartRequest {
            workflow: "t.refund".into(),
            version: None,
            business_line: "shop".into(),
            input: json!({"payment_id": payment_id, "amount": {"minor": 4_500, "currency": "CNY"}}),
            params: json!({}),
            idempotency_key: Some("r-1".into()),
            search_key: None,
            search_seen: None,
            meta: serde_json::Value::Null,
            id: None,
        })
        .await
        .unwrap();
    let cfg = WorkerConfig::default();
    engine.run_until_idle(&cfg).await.unwrap();
    for _ in 0..clock_steps {
        clock.advance(2_000);
        engine.run_until_idle(&cfg).await.unwrap();
    }
    let rec = engine.get(&started.id).await.unwrap().unwrap();
    assert_eq!(rec.status, InstanceStatus::Completed, "{:#}", rec.state);
    let history = engine.history(&started.id, 0, 100).await.unwrap();
    json!({
        "output": rec.state["end"]["output"],
        "retries": history.iter().filter(|h| h.event.kind == "retry_scheduled").map(|h| h.event.data["class"].clone()).collect::<Vec<_>>(),
    })
}

fn seeded_sim() -> (Sim, String) {
    let sim = Sim::new(SimConfig::quiet(3), SimClock::at_2025());
    let payment = sim
        .create_order(NewOrder {
            order_id: "o-1".into(),
            buyer_id: "b-1".into(),
            lines: vec![NewLine {
                line_id: "l1".into(),
                sku: "sku-1".into(),
                spu: "spu-1".into(),
                quantity: 1,
                unit_price: cny(4_500),
                paid: cny(4_500),
                entitlement_units: None,
            }],
            shipping_fee: cny(0),
        })
        .unwrap();
    (sim, payment.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_refund_step_runs_through_the_simulator_by_config() {
    let (sim, payment) = seeded_sim();
    let out = run_refund(&sim, AdapterConfig::new("sim"), &payment, 0).await;
    assert!(out["output"]["refund_id"].is_string());
    let refunds = sim.refunds_for_payment(&payment.as_str().into());
    assert_eq!(refunds.len(), 1);
    assert_eq!(refunds[0].amount, cny(4_500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_refund_step_runs_through_the_http_adapter_by_config() {
    let (sim, _) = seeded_sim();
    let api = MockPaymentApi::start().await;
    let payment = api.create_payment(cny(10_000));
    let settings: Value = toml::from_str(&HTTP_PAYMENT.replace("BASE", &api.uri())).unwrap();
    let out = run_refund(
        &sim,
        AdapterConfig::with_settings("http", settings),
        payment.as_str(),
        0,
    )
    .await;
    assert!(out["output"]["refund_id"].is_string());
    assert_eq!(api.movements(&payment), vec![cny(4_500)]);
    // Nothing went through the simulator's payments.
    assert!(sim.ledger().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_refund_whose_answer_is_lost_is_retried_with_its_key_and_paid_once() {
    let (sim, _) = seeded_sim();
    let api = MockPaymentApi::start().await;
    let payment = api.create_payment(cny(10_000));
    api.lose_next_refund_answer();
    let settings: Value = toml::from_str(&HTTP_PAYMENT.replace("BASE", &api.uri())).unwrap();
    let out = run_refund(
        &sim,
        AdapterConfig::with_settings("http", settings),
        payment.as_str(),
        3,
    )
    .await;
    assert_eq!(out["retries"], json!(["unknown_outcome"]), "{out}");
    assert_eq!(
        api.movements(&payment),
        vec![cny(4_500)],
        "paid exactly once"
    );
}
