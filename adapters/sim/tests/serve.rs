//! The simulator as an HTTP server (feature `serve`), driven over real HTTP: the generic
//! HTTP adapter configured by `config/examples/http-against-sim.toml` passes the payment
//! conformance suite against it and runs every catalogue action; an unknown outcome is
//! resolved by a status query by key with money moved once (read back over `/sim/ledger`);
//! the control endpoints work; bad input is a clear 4xx JSON error.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use aftersales_adapter::catalogue;
use aftersales_adapter::ids::PaymentId;
use aftersales_adapter::types::Refund;
use aftersales_adapter::{
    ActionOutcome, AdapterSet, AdapterSetConfig, ErrorClass, Headers, IdempotencyKey, Payment,
    RefundLookup, RefundStatus, Registry,
};
use aftersales_adapter_sim::serve;
use aftersales_adapter_sim::{Clock, ManualClock, RefundMode, Sim, SimConfig};
use aftersales_adapter_testkit::{Outcome, PaymentHarness, Report, payment_conformance};
use aftersales_money::{Currency, Money};
use async_trait::async_trait;
use reqwest::Method;
use serde_json::{Map, Value, json};

const EXAMPLE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../config/examples/http-against-sim.toml"
);
const EXAMPLE_BASE: &str = "http://127.0.0.1:8090";

fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::new(text).unwrap()
}

// ---------------------------------------------------------------- the server

struct Server {
    sim: Sim,
    clock: ManualClock,
    base: String,
    client: reqwest::Client,
    orders: AtomicU32,
}

/// A simulator on a manual clock, served on a free local port for the rest of the test.
async fn start(config: SimConfig) -> Arc<Server> {
    let clock = ManualClock::at_2025();
    let sim = Sim::new(config, clock.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(serve::serve(sim.clone(), listener, std::future::pending()));
    Arc::new(Server {
        sim,
        clock,
        base: format!("http://{addr}"),
        client: reqwest::Client::new(),
        orders: AtomicU32::new(0),
    })
}

/// One answer: status, `Content-Type`, `Retry-After` and the JSON body.
#[derive(Debug)]
struct Reply {
    status: u16,
    content_type: String,
    retry_after: Option<String>,
    body: Value,
}

impl Server {
    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<&str>,
        idempotency_key: Option<&str>,
    ) -> Reply {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            req = req
                .header("content-type", "application/json")
                .body(body.to_owned());
        }
        if let Some(k) = idempotency_key {
            req = req.header("Idempotency-Key", k);
        }
        let resp = req.send().await.unwrap();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .map(|v| v.to_str().unwrap().to_owned())
        };
        let (content_type, retry_after) = (header("content-type"), header("retry-after"));
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!("{path}: answer is not JSON ({e}): {bytes:?}");
        });
        Reply {
            status,
            content_type: content_type.unwrap_or_default(),
            retry_after,
            body,
        }
    }

    async fn get(&self, path: &str) -> Value {
        let r = self.send(Method::GET, path, None, None).await;
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.body
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        let r = self
            .send(Method::POST, path, Some(&body.to_string()), None)
            .await;
        assert!(
            r.status == 200 || r.status == 201,
            "POST {path}: {} {}",
            r.status,
            r.body
        );
        r.body
    }

    async fn put(&self, path: &str, body: Value) -> Value {
        let r = self
            .send(Method::PUT, path, Some(&body.to_string()), None)
            .await;
        assert_eq!(r.status, 200, "PUT {path}: {}", r.body);
        r.body
    }

    /// An order of 3 T-shirts (unit 100.00, paid 270.00) and 10.00 shipping, made over
    /// HTTP; returns the payment id (280.00 captured).
    async fn tshirt_order(&self, order_id: &str) -> String {
        let order = self
            .post(
                "/sim/orders",
                json!({
                    "order_id": order_id,
                    "buyer_id": "buyer-1",
                    "lines": [{
                        "line_id": "l1", "sku": "tshirt-m", "spu": "tshirt", "quantity": 3,
                        "unit_price": {"minor": 10_000, "currency": "CNY"},
                        "paid": {"minor": 27_000, "currency": "CNY"},
                    }],
                    "shipping_fee": {"minor": 1_000, "currency": "CNY"},
                }),
            )
            .await;
        order["payment_id"].as_str().unwrap().to_owned()
    }

    /// The refunds of a payment, as `/sim/ledger` shows them.
    async fn ledger_refunds(&self, payment_id: &str) -> Vec<Value> {
        let ledger = self.get("/sim/ledger").await;
        ledger["entries"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["kind"] == "refund" && e["payment_id"] == payment_id)
            .cloned()
            .collect()
    }
}

// ---------------------------------------------------------------- the HTTP adapter

/// The example configuration pointed at `base`, optionally with another timeout.
fn example_config(base: &str, timeout: Option<&str>) -> AdapterSetConfig {
    let text = std::fs::read_to_string(EXAMPLE)
        .unwrap()
        .replace(EXAMPLE_BASE, base);
    let mut doc: Value = toml::from_str(&text).unwrap();
    if let Some(t) = timeout {
        for system in ["order", "warehouse", "fulfillment", "payment", "notify"] {
            doc["adapters"][system]["settings"]["timeout"] = json!(t);
        }
    }
    serde_json::from_value(doc["adapters"].clone()).unwrap()
}

/// The example configuration built through the registry, as the binary builds it.
fn example_set(base: &str, timeout: Option<&str>) -> AdapterSet {
    let mut registry = Registry::new();
    aftersales_adapter_sim::register(&mut registry);
    aftersales_adapter_http::register(&mut registry);
    registry
        .build_set(&example_config(base, timeout), &|_| None)
        .unwrap()
}

async fn done(set: &AdapterSet, action: &str, input: Value, k: &str) -> Map<String, Value> {
    match set.dispatch(action, &input, &key(k)).await {
        Ok(ActionOutcome::Done(out)) => out,
        other => panic!("{action}: {other:?}"),
    }
}

// ---------------------------------------------------------------- conformance

struct ServerHarness {
    server: Arc<Server>,
    payment: Arc<dyn Payment>,
}

#[async_trait]
impl PaymentHarness for ServerHarness {
    fn payment(&self) -> Arc<dyn Payment> {
        self.payment.clone()
    }

    async fn paid_payment(&self, amount: Money) -> PaymentId {
        let n = self.server.orders.fetch_add(1, Ordering::SeqCst);
        let order = self
            .server
            .post(
                "/sim/orders",
                json!({
                    "order_id": format!("pay-order-{n}"),
                    "buyer_id": "b",
                    "lines": [{"line_id": "l1", "sku": "sku", "quantity": 1, "unit_price": amount}],
                }),
            )
            .await;
        PaymentId::new(order["payment_id"].as_str().unwrap())
    }

    fn movements(&self, payment_id: &PaymentId) -> Vec<Money> {
        // The same `Sim` the server serves: what really moved.
        self.server
            .sim
            .refunds_for_payment(payment_id)
            .into_iter()
            .filter(|e| !matches!(e.status, RefundStatus::Failed | RefundStatus::Canceled))
            .map(|e| e.amount)
            .collect()
    }

    fn lose_next_answer(&self) -> bool {
        self.server.sim.script(
            "payment.refund",
            [aftersales_adapter_sim::Fault::LostAnswer],
        );
        true
    }

    fn fail_next_transiently(&self) -> bool {
        self.server
            .sim
            .script("payment.refund", [aftersales_adapter_sim::Fault::Transient]);
        true
    }
}

async fn conformance(config: SimConfig) -> Report {
    let server = start(config).await;
    let payment = example_set(&server.base, None).payment;
    payment_conformance(|| ServerHarness {
        server: server.clone(),
        payment: payment.clone(),
    })
    .await
}

/// Every check passes, and none is skipped but the one for an undeclared `charge` (the
/// example configures `charge`).
#[track_caller]
fn assert_all_passed(report: &Report) {
    report.assert_passed();
    let skipped: Vec<_> = report
        .checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .filter(|c| c.name != "undeclared optional actions answer unsupported")
        .collect();
    assert!(skipped.is_empty(), "{report}");
    assert!(report.passed().len() >= 7, "{report}");
}

#[tokio::test]
async fn the_http_adapter_against_the_sim_server_conforms() {
    assert_all_passed(&conformance(SimConfig::quiet(1)).await);
}

#[tokio::test]
async fn the_http_adapter_against_the_sim_server_conforms_with_pending_refunds() {
    let mut config = SimConfig::quiet(2);
    config.refunds = RefundMode::Pending {
        settle_after: Duration::from_secs(60),
    };
    assert_all_passed(&conformance(config).await);
}

// ---------------------------------------------------------------- unknown outcomes

/// The issue's "done when", over HTTP: the refund's answer is lost (`504`), the status
/// query by key finds the refund, the retry with the same key returns it, and the ledger
/// read over `/sim/ledger` shows one refund of exactly 25.00.
#[tokio::test]
async fn a_lost_refund_answer_is_resolved_by_a_status_query_by_key_and_pays_once() {
    let server = start(SimConfig::quiet(11)).await;
    let payment = example_set(&server.base, None).payment;
    let pay = server.tshirt_order("o-lost").await;
    let queued = server
        .post(
            "/sim/faults/payment.refund",
            json!({"faults": ["lost_answer"]}),
        )
        .await;
    assert_eq!(queued, json!({"action": "payment.refund", "queued": 1}));

    let req = Refund {
        payment_id: PaymentId::new(pay.as_str()),
        amount: cny(2_500),
        reason: Some("damaged".into()),
        service_order_id: Some("so-lost".into()),
    };
    let k = key("so-lost-refund-fwd-0");
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    assert!(e.message.contains("504"), "{e}");
    // The money moved although the answer was lost.
    let moved = server.ledger_refunds(&pay).await;
    assert_eq!(moved.len(), 1, "{moved:?}");

    let state = payment
        .refund_status(&RefundLookup::Key {
            payment_id: req.payment_id.clone(),
            key: k.clone(),
        })
        .await
        .unwrap();
    assert_eq!(state.status, RefundStatus::Succeeded);
    let found = state.refund_id.unwrap();

    let again = payment.refund(&req, &k).await.unwrap();
    assert_eq!(again.refund_id, found);
    assert_eq!(again.status, RefundStatus::Succeeded);

    let refunds = server.ledger_refunds(&pay).await;
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0]["id"], found.as_str());
    assert_eq!(
        refunds[0]["amount"],
        json!({"minor": 2_500, "currency": "CNY"})
    );
    assert_eq!(refunds[0]["key"], "so-lost-refund-fwd-0");
    assert_eq!(refunds[0]["service_order_id"], "so-lost");
    assert_eq!(refunds[0]["status"], "succeeded");
    let per_payment = server.get(&format!("/sim/payments/{pay}")).await;
    assert_eq!(
        per_payment["refunded"],
        json!({"minor": 2_500, "currency": "CNY"})
    );
    let per_so = server.get("/sim/service-orders/so-lost/refunds").await;
    assert_eq!(per_so["refunds"].as_array().unwrap().len(), 1);

    // Both refund calls reached the platform with the engine's key, unchanged.
    let calls = server.get("/sim/calls").await;
    let keys: Vec<&Value> = calls["calls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "payment.refund")
        .map(|c| &c["key"])
        .collect();
    assert_eq!(
        keys,
        [
            &json!("so-lost-refund-fwd-0"),
            &json!("so-lost-refund-fwd-0")
        ]
    );
}

/// A lost request did nothing: the status query by key says `not_found`, and the retry with
/// the same key pays once.
#[tokio::test]
async fn a_lost_refund_request_is_not_found_and_the_retry_pays_once() {
    let server = start(SimConfig::quiet(12)).await;
    let payment = example_set(&server.base, None).payment;
    let pay = server.tshirt_order("o-lost-req").await;
    server
        .post(
            "/sim/faults/payment.refund",
            json!({"faults": ["lost_request"]}),
        )
        .await;
    let req = Refund {
        payment_id: PaymentId::new(pay.as_str()),
        amount: cny(1_000),
        reason: None,
        service_order_id: None,
    };
    let k = key("lost-req-0");
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    let state = payment
        .refund_status(&RefundLookup::Key {
            payment_id: req.payment_id.clone(),
            key: k.clone(),
        })
        .await
        .unwrap();
    assert_eq!(state.status, RefundStatus::NotFound);
    assert_eq!(state.refund_id, None);
    payment.refund(&req, &k).await.unwrap();
    assert_eq!(server.ledger_refunds(&pay).await.len(), 1);
}

/// A hang holds the answer past the client's timeout: an unknown outcome, although the
/// refund happened.
#[tokio::test]
async fn a_hang_outlives_the_clients_timeout_but_the_refund_happened() {
    let mut config = SimConfig::quiet(13);
    config.hang = Duration::from_secs(2);
    let server = start(config).await;
    let payment = example_set(&server.base, Some("300ms")).payment;
    let pay = server.tshirt_order("o-hang").await;
    server
        .post("/sim/faults/payment.refund", json!({"faults": ["hang"]}))
        .await;
    let req = Refund {
        payment_id: PaymentId::new(pay.as_str()),
        amount: cny(500),
        reason: None,
        service_order_id: None,
    };
    let k = key("hang-0");
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    assert!(e.message.contains("no answer within 300ms"), "{e}");
    let state = payment
        .refund_status(&RefundLookup::Key {
            payment_id: req.payment_id.clone(),
            key: k,
        })
        .await
        .unwrap();
    assert_eq!(state.status, RefundStatus::Succeeded);
    assert_eq!(server.ledger_refunds(&pay).await.len(), 1);
}

/// Each fault answers the status the HTTP adapter maps back to the fault's class.
#[tokio::test]
async fn faults_answer_statuses_the_http_adapter_classifies_back() {
    let server = start(SimConfig::quiet(14)).await;
    let set = example_set(&server.base, None);
    server.put("/sim/stock/tshirt-l", json!({"units": 5})).await;
    server
        .post(
            "/sim/faults/warehouse.reserve_stock",
            json!({"faults": ["transient", "permanent", "lost_request", "lost_answer", "none"]}),
        )
        .await;
    let body = json!({"sku": "tshirt-l", "quantity": 1}).to_string();
    let reserve = || {
        server.send(
            Method::POST,
            "/v1/actions/warehouse.reserve_stock",
            Some(&body),
            Some("reserve-1"),
        )
    };
    let r = reserve().await;
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.retry_after.as_deref(), Some("1"));
    assert_eq!(r.body["error"]["class"], "transient");
    assert_eq!(r.body["error"]["action"], "warehouse.reserve_stock");
    let r = reserve().await;
    assert_eq!(
        (r.status, &r.body["error"]["class"]),
        (422, &json!("permanent"))
    );
    let r = reserve().await;
    assert_eq!(
        (r.status, &r.body["error"]["class"]),
        (504, &json!("unknown_outcome"))
    );
    assert_eq!(server.get("/sim/stock/tshirt-l").await["units"], 5);
    // A lost answer took effect; the repeat with the same key replays it.
    let r = reserve().await;
    assert_eq!(r.status, 504, "{r:?}");
    assert_eq!(server.get("/sim/stock/tshirt-l").await["units"], 4);
    let r = reserve().await;
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.body["reserved"], true);
    assert_eq!(server.get("/sim/stock/tshirt-l").await["units"], 4);

    // Through the HTTP adapter: a read's lost answer is transient, a write's unknown.
    server.tshirt_order("o-faults").await;
    server
        .post(
            "/sim/faults/order.get",
            json!({"faults": ["transient", "permanent", "lost_answer"]}),
        )
        .await;
    let get = json!({"order_id": "o-faults"});
    let mut seen = Vec::new();
    for _ in 0..3 {
        let e = set
            .dispatch("order.get", &get, &key("unused"))
            .await
            .unwrap_err();
        seen.push(e.class);
    }
    assert_eq!(
        seen,
        [
            ErrorClass::Transient {
                retry_after: Some(Duration::from_secs(1))
            },
            ErrorClass::Permanent,
            ErrorClass::Transient { retry_after: None },
        ]
    );
    server
        .post(
            "/sim/faults/order.mark_after_sales",
            json!({"faults": ["lost_answer"]}),
        )
        .await;
    let e = set
        .dispatch(
            "order.mark_after_sales",
            &json!({"order_id": "o-faults", "service_order_id": "so-f",
                    "lines": [{"line_id": "l1", "sku": "tshirt-m", "quantity": 1}]}),
            &key("mark-f"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
}

// ---------------------------------------------------------------- the example, every action

/// `config/examples/http-against-sim.toml` builds through the registry, serves every
/// catalogue action, and runs them all against the server: a return and refund, a failed
/// inspection, a cancelled return, an interception, an exchange, a charge, an insurance
/// claim, and a course's consumption, revocation and grants.
#[tokio::test]
async fn the_example_configuration_runs_every_catalogue_action_against_the_server() {
    let server = start(SimConfig::quiet(21)).await;
    let set = example_set(&server.base, None);
    for spec in catalogue::catalogue() {
        let name = spec.full_name_static();
        assert!(set.capabilities().supports(name), "{name} not configured");
        assert_eq!(set.platform(spec.system), "http");
    }
    let pay = server.tshirt_order("o-1").await;
    server.tshirt_order("o-2").await;
    let line = json!([{"line_id": "l1", "sku": "tshirt-m", "quantity": 1}]);

    // Order system reads and marks.
    let order = done(&set, "order.get", json!({"order_id": "o-1"}), "r").await;
    assert_eq!(order["status"], "paid");
    assert_eq!(order["payment_id"], pay.as_str());
    assert_eq!(order["paid"], json!({"minor": 28_000, "currency": "CNY"}));
    assert_eq!(order["shipment"], "not_shipped");
    let so1 = json!({"order_id": "o-1", "service_order_id": "so-1", "lines": line});
    done(&set, "order.mark_after_sales", so1.clone(), "k-mark-1").await;

    // Cancel before shipment on o-2: the warehouse stops it; the carrier has nothing.
    let stop = done(
        &set,
        "warehouse.intercept_shipment",
        json!({"order_id": "o-2", "service_order_id": "so-9", "lines": line}),
        "k-intercept",
    )
    .await;
    assert_eq!(stop["result"], "intercepted");
    let carrier = done(
        &set,
        "warehouse.carrier_intercept",
        json!({"order_id": "o-2", "service_order_id": "so-9"}),
        "k-carrier",
    )
    .await;
    assert_eq!(carrier["result"], "failed");

    // Return and refund on o-1.
    server
        .post("/sim/orders/o-1/shipment", json!({"state": "delivered"}))
        .await;
    let mut create = so1.clone();
    create["pickup"] = json!(true);
    let rma = done(&set, "warehouse.create_return", create, "k-return-1").await["rma_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let received = server
        .post(
            &format!("/sim/returns/{rma}/receive"),
            json!({"inspection": "pass"}),
        )
        .await;
    assert_eq!(received["state"], "inspected");
    assert_eq!(received["inspection_passed"], true);
    assert_eq!(received["reference"], "k-return-1");
    let stock_before = server.get("/sim/stock/tshirt-m").await["units"]
        .as_i64()
        .unwrap();
    done(
        &set,
        "warehouse.restock",
        json!({"rma_id": rma}),
        "k-restock",
    )
    .await;
    done(
        &set,
        "warehouse.reverse_restock",
        json!({"rma_id": rma}),
        "k-unrestock",
    )
    .await;
    assert_eq!(
        server.get("/sim/stock/tshirt-m").await["units"],
        stock_before
    );
    let refund = done(
        &set,
        "payment.refund",
        json!({"payment_id": pay, "amount": {"minor": 9_000, "currency": "CNY"},
               "reason": "no reason", "service_order_id": "so-1"}),
        "k-refund-1",
    )
    .await;
    assert_eq!(refund["status"], "succeeded");
    let refund_id = refund["refund_id"].as_str().unwrap().to_owned();
    let by_id = done(
        &set,
        "payment.refund_status",
        json!({"refund_id": refund_id}),
        "r",
    )
    .await;
    assert_eq!(by_id["status"], "succeeded");
    let by_key = done(
        &set,
        "payment.refund_status",
        json!({"payment_id": pay, "request_key": "k-refund-1"}),
        "r",
    )
    .await;
    assert_eq!(by_key["refund_id"], refund_id.as_str());
    done(
        &set,
        "order.report_refund",
        json!({"order_id": "o-1", "service_order_id": "so-1",
               "amount": {"minor": 9_000, "currency": "CNY"}, "refund_id": refund_id}),
        "k-report",
    )
    .await;
    let claim = done(
        &set,
        "payment.insurance_claim",
        json!({"order_id": "o-1", "service_order_id": "so-1",
               "amount": {"minor": 1_000, "currency": "CNY"}}),
        "k-claim",
    )
    .await;
    assert!(claim["claim_id"].is_string());
    done(
        &set,
        "order.close_after_sales",
        json!({"order_id": "o-1", "service_order_id": "so-1", "outcome": "completed"}),
        "k-close",
    )
    .await;
    done(
        &set,
        "notify.send",
        json!({"to": "buyer", "template": "refund_done", "data": {"amount": "90.00"}}),
        "k-notify",
    )
    .await;

    // A second return fails inspection and goes back to the buyer.
    let so2 = json!({"order_id": "o-1", "service_order_id": "so-2", "lines": line});
    done(&set, "order.mark_after_sales", so2.clone(), "k-mark-2").await;
    let rma2 = done(&set, "warehouse.create_return", so2, "k-return-2").await["rma_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let failed = server
        .post(
            &format!("/sim/returns/{rma2}/receive"),
            json!({"inspection": "fail", "note": "wrong item"}),
        )
        .await;
    assert_eq!(failed["inspection_passed"], false);
    assert_eq!(failed["note"], "wrong item");
    let back = done(
        &set,
        "warehouse.return_to_buyer",
        json!({"rma_id": rma2}),
        "k-back",
    )
    .await;
    let parcel = back["parcel_id"].as_str().unwrap().to_owned();
    assert_eq!(
        server.get(&format!("/sim/returns/{rma2}")).await["state"],
        "returned_to_buyer"
    );
    done(
        &set,
        "order.clear_after_sales",
        json!({"order_id": "o-1", "service_order_id": "so-2"}),
        "k-clear",
    )
    .await;

    // A third return is cancelled before it arrives.
    let rma3 = done(
        &set,
        "warehouse.create_return",
        json!({"order_id": "o-1", "service_order_id": "so-3", "lines": line}),
        "k-return-3",
    )
    .await["rma_id"]
        .as_str()
        .unwrap()
        .to_owned();
    done(
        &set,
        "warehouse.cancel_return",
        json!({"rma_id": rma3}),
        "k-cancel",
    )
    .await;
    assert_eq!(
        server.get(&format!("/sim/returns/{rma3}")).await["state"],
        "cancelled"
    );
    assert_eq!(
        server.get("/sim/returns").await["returns"]
            .as_array()
            .unwrap()
            .len(),
        3
    );

    // Exchange: reserve, ship, and release a second reservation; the buyer pays postage.
    server.put("/sim/stock/tshirt-l", json!({"units": 2})).await;
    let reserve = |k: &'static str| {
        done(
            &set,
            "warehouse.reserve_stock",
            json!({"sku": "tshirt-l", "quantity": 1}),
            k,
        )
    };
    let first = reserve("k-reserve-1").await;
    assert_eq!(first["reserved"], true);
    let reservation = first["reservation_id"].as_str().unwrap().to_owned();
    let shipped = done(
        &set,
        "warehouse.ship_replacement",
        json!({"order_id": "o-1", "service_order_id": "so-4", "reservation_id": reservation}),
        "k-ship",
    )
    .await;
    let replacement = shipped["parcel_id"].as_str().unwrap().to_owned();
    let second = reserve("k-reserve-2").await["reservation_id"]
        .as_str()
        .unwrap()
        .to_owned();
    done(
        &set,
        "warehouse.release_stock",
        json!({"reservation_id": second}),
        "k-release",
    )
    .await;
    assert_eq!(server.get("/sim/stock/tshirt-l").await["units"], 1);
    assert_eq!(
        server
            .get(&format!("/sim/reservations/{reservation}"))
            .await["state"],
        "shipped"
    );
    assert_eq!(
        server.get(&format!("/sim/reservations/{second}")).await["state"],
        "released"
    );
    let delivered = server
        .post(&format!("/sim/parcels/{replacement}/deliver"), json!({}))
        .await;
    assert_eq!(delivered["delivered"], true);
    assert_eq!(delivered["kind"], "replacement");
    assert_eq!(
        server.get(&format!("/sim/parcels/{parcel}")).await["kind"],
        "return_to_buyer"
    );
    let charge = done(
        &set,
        "payment.charge",
        json!({"payment_id": pay, "amount": {"minor": 1_200, "currency": "CNY"},
               "service_order_id": "so-4"}),
        "k-charge",
    )
    .await;
    assert!(charge["charge_id"].is_string());

    // A course: consumption, partial revocation, regrant, full revocation, a new grant.
    let course = server
        .post(
            "/sim/orders",
            json!({
                "order_id": "o-3", "buyer_id": "buyer-1",
                "lines": [{"line_id": "l1", "sku": "course-1", "quantity": 1,
                           "unit_price": {"minor": 50_000, "currency": "CNY"},
                           "entitlement_units": 10}],
            }),
        )
        .await;
    assert_eq!(
        course["shipping_fee"],
        json!({"minor": 0, "currency": "CNY"})
    );
    let ent = course["lines"][0]["entitlement_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .post(
            &format!("/sim/entitlements/{ent}/consume"),
            json!({"units": 3}),
        )
        .await;
    let used = done(
        &set,
        "fulfillment.get_consumption",
        json!({"entitlement_id": ent}),
        "r",
    )
    .await;
    assert_eq!(
        Value::Object(used),
        json!({"consumed": 3, "total": 10, "active": true})
    );
    done(
        &set,
        "fulfillment.revoke",
        json!({"entitlement_id": ent, "units": 7}),
        "k-revoke-part",
    )
    .await;
    assert_eq!(
        server.get(&format!("/sim/entitlements/{ent}")).await["total"],
        3
    );
    done(
        &set,
        "fulfillment.regrant",
        json!({"entitlement_id": ent}),
        "k-regrant",
    )
    .await;
    done(
        &set,
        "fulfillment.revoke",
        json!({"entitlement_id": ent}),
        "k-revoke-all",
    )
    .await;
    let revoked = server.get(&format!("/sim/entitlements/{ent}")).await;
    assert_eq!(
        (revoked["total"].as_i64(), revoked["active"].as_bool()),
        (Some(10), Some(false))
    );
    server
        .put("/sim/products/course-2", json!({"units": 12}))
        .await;
    let granted = done(
        &set,
        "fulfillment.grant",
        json!({"buyer_id": "buyer-1", "sku": "course-2"}),
        "k-grant",
    )
    .await;
    let new_ent = granted["entitlement_id"].as_str().unwrap();
    assert_eq!(
        server.get(&format!("/sim/entitlements/{new_ent}")).await["total"],
        12
    );

    // A return kept on the order system: requested, approved, then cancelled by a decline
    // (the compensation after an approval); and the stopped order o-2 cancelled there.
    let ret = done(
        &set,
        "order.request_return",
        json!({"order_id": "o-1", "service_order_id": "so-1", "lines": line, "reason": "too big"}),
        "k-request-return",
    )
    .await["return_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let so1_return = json!({"return_id": ret, "service_order_id": "so-1"});
    done(
        &set,
        "order.approve_return",
        so1_return.clone(),
        "k-approve",
    )
    .await;
    let mut decline = so1_return.clone();
    decline["reason"] = json!("withdrawn");
    done(&set, "order.decline_return", decline, "k-decline").await;
    done(
        &set,
        "order.cancel",
        json!({"order_id": "o-2", "service_order_id": "so-9", "reason": "buyer cancelled"}),
        "k-cancel-order",
    )
    .await;
    let o2 = done(&set, "order.get", json!({"order_id": "o-2"}), "r").await;
    assert_eq!(o2["status"], "cancelled");

    // Every action reached the simulator, every mutating one with its key unchanged.
    let calls = server.get("/sim/calls").await;
    let calls = calls["calls"].as_array().unwrap();
    let reached: BTreeSet<&str> = calls
        .iter()
        .map(|c| c["action"].as_str().unwrap())
        .collect();
    let all: BTreeSet<&str> = catalogue::catalogue()
        .iter()
        .map(|a| a.full_name_static())
        .collect();
    assert_eq!(reached, all);
    for c in calls {
        let spec = catalogue::find_full(c["action"].as_str().unwrap()).unwrap();
        if spec.mutating {
            assert!(c["key"].as_str().unwrap().starts_with("k-"), "{c}");
        } else {
            assert!(c["key"].is_null(), "{c}");
        }
    }

    // What the platform side recorded.
    let o1 = server.get("/sim/orders/o-1").await;
    assert_eq!(
        o1["closed"]["so-1"],
        json!({"outcome": "completed", "reason": null})
    );
    assert_eq!(o1["reported_refunds"][0]["refund_id"], refund_id.as_str());
    assert_eq!(o1["after_sales"], json!({}));
    assert_eq!(server.get("/sim/orders/o-2").await["intercepted"], true);
    let ledger = server.get("/sim/ledger").await;
    let kinds: Vec<(&str, i64)> = ledger["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap(),
                e["amount"]["minor"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("refund", 9_000),
            ("insurance_claim", 1_000),
            ("charge", 1_200)
        ]
    );
    let messages = server.get("/sim/messages").await;
    assert_eq!(
        messages["messages"],
        json!([{
            "notification": {"to": "buyer", "template": "refund_done", "data": {"amount": "90.00"}},
            "key": "k-notify",
        }])
    );
}

// ---------------------------------------------------------------- control endpoints

#[tokio::test]
async fn control_endpoints_set_up_settle_and_drain() {
    let mut config = SimConfig::quiet(31);
    config.refunds = RefundMode::Pending {
        settle_after: Duration::from_secs(60),
    };
    let server = start(config).await;
    assert_eq!(
        server.get("/sim").await,
        json!({"kind": "sim", "seed": 31, "refunds": {"mode": "pending", "settle_after_ms": 60_000}})
    );

    // An order with defaults: spu = sku, paid = unit × quantity, no shipping.
    let order = server
        .post(
            "/sim/orders",
            json!({"order_id": "o-9", "buyer_id": "b-9", "lines": [
                {"line_id": "l1", "sku": "mug", "quantity": 2,
                 "unit_price": {"minor": 1_500, "currency": "CNY"}}]}),
        )
        .await;
    assert_eq!(order["lines"][0]["spu"], "mug");
    assert_eq!(
        order["lines"][0]["paid"],
        json!({"minor": 3_000, "currency": "CNY"})
    );
    assert_eq!(order["payment_id"], "pay_o-9");
    for state in ["picked", "shipped", "delivered"] {
        let o = server
            .post("/sim/orders/o-9/shipment", json!({"state": state}))
            .await;
        assert_eq!(o["shipment"], state);
    }
    assert_eq!(
        server.put("/sim/stock/mug", json!({"units": 7})).await,
        json!({"sku": "mug", "units": 7})
    );
    assert_eq!(server.get("/sim/stock/mug").await["units"], 7);
    let ent = server
        .post(
            "/sim/entitlements",
            json!({"buyer_id": "b-9", "sku": "course", "total": 4}),
        )
        .await;
    assert_eq!(
        (ent["total"].as_i64(), ent["consumed"].as_i64()),
        (Some(4), Some(0))
    );

    // Two pending refunds over the payment API: `processing` until settled.
    let refund = |k: &'static str, minor: i64| {
        let body = json!({"amount": minor, "currency": "CNY"}).to_string();
        let server = server.clone();
        async move {
            server
                .send(
                    Method::POST,
                    "/v1/payments/pay_o-9/refunds",
                    Some(&body),
                    Some(k),
                )
                .await
        }
    };
    let first = refund("settle-1", 1_000).await;
    assert_eq!(first.status, 201, "{first:?}");
    assert_eq!(first.body["status"], "processing");
    assert_eq!(first.body["object"], "refund");
    let first_id = first.body["id"].as_str().unwrap().to_owned();
    let second = refund("settle-2", 500).await;
    let second_id = second.body["id"].as_str().unwrap().to_owned();
    let got = server.get(&format!("/v1/refunds/{first_id}")).await;
    assert_eq!(got, first.body);
    let by_key = server
        .get("/v1/payments/pay_o-9/refunds/by-key/settle-2")
        .await;
    assert_eq!(by_key["id"], second_id.as_str());
    let refunds = server.get("/sim/payments/pay_o-9/refunds").await;
    assert_eq!(refunds["refunds"].as_array().unwrap().len(), 2);

    // Forced completion, then the clock settles the other.
    let completed = server
        .post(
            &format!("/sim/refunds/{first_id}/complete"),
            json!({"status": "succeeded"}),
        )
        .await;
    assert_eq!(completed["status"], "succeeded");
    assert_eq!(
        server.post("/sim/refunds/settle", json!({})).await,
        json!({"settled": 0})
    );
    server.clock.advance(Duration::from_secs(61));
    assert_eq!(
        server.post("/sim/refunds/settle", json!({})).await,
        json!({"settled": 1})
    );
    assert_eq!(
        server.get(&format!("/v1/refunds/{second_id}")).await["status"],
        "succeeded"
    );

    // The outbox, as signed webhooks the sim's verifier accepts, then as plain events.
    let drained = server.post("/sim/webhooks/drain", json!({})).await;
    let webhooks = drained["webhooks"].as_array().unwrap();
    assert_eq!(webhooks.len(), 2, "{drained}");
    let verifier = server.sim.webhook_verifier();
    let mut names = Vec::new();
    for w in webhooks {
        let headers: Headers = w["headers"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_owned()))
            .collect();
        let body = w["body"].as_str().unwrap().as_bytes();
        let event = aftersales_adapter::WebhookVerifier::verify(
            &verifier,
            &headers,
            body,
            server.clock.now(),
        )
        .unwrap()
        .unwrap();
        names.push((event.name, event.correlation));
    }
    assert_eq!(
        names,
        [
            ("payment.refund.succeeded".to_owned(), first_id.clone()),
            ("payment.refund.succeeded".to_owned(), second_id.clone()),
        ]
    );
    assert_eq!(
        server.post("/sim/events/drain", json!({})).await,
        json!({"events": []})
    );
    let so = server.tshirt_order("o-10").await;
    assert_eq!(so, "pay_o-10");
    server
        .post("/sim/orders/o-10/shipment", json!({"state": "shipped"}))
        .await;
    let set = example_set(&server.base, None);
    let rma = done(
        &set,
        "warehouse.create_return",
        json!({"order_id": "o-10", "service_order_id": "so-10",
               "lines": [{"line_id": "l1", "sku": "tshirt-m", "quantity": 1}]}),
        "k-ret",
    )
    .await["rma_id"]
        .as_str()
        .unwrap()
        .to_owned();
    server
        .post(
            &format!("/sim/returns/{rma}/receive"),
            json!({"inspection": "random"}),
        )
        .await;
    let events = server.post("/sim/events/drain", json!({})).await;
    let names: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["warehouse.return.received", "warehouse.return.inspected"]
    );
    assert_eq!(events["events"][0]["correlation"], rma.as_str());
    assert_eq!(events["events"][0]["payload"]["inspection_passed"], true);
}

// ---------------------------------------------------------------- bad input

/// One bad request: method, path, body, key, then the status, error code and a part of the
/// message expected.
type Case<'a> = (
    Method,
    String,
    Option<String>,
    Option<&'a str>,
    u16,
    &'a str,
    &'a str,
);

/// Every kind of bad input is a 4xx with a JSON `{"error": {"code", "message"}}` body that
/// says what is wrong.
#[tokio::test]
async fn bad_input_to_any_endpoint_is_a_clear_4xx_json_error() {
    let server = start(SimConfig::quiet(41)).await;
    let pay = server.tshirt_order("o-1").await;
    let refunds = format!("/v1/payments/{pay}/refunds");
    let good_refund = r#"{"amount": 100, "currency": "CNY"}"#;
    let line = r#"{"line_id": "l", "sku": "s", "quantity": 1, "unit_price": {"minor": 1, "currency": "CNY"}}"#;
    #[rustfmt::skip]
    let cases: Vec<Case<'_>> = vec![
        // Control endpoints.
        (Method::POST, "/sim/orders".into(), Some("not json".into()), None, 400, "invalid_body", "malformed JSON body"),
        (Method::POST, "/sim/orders".into(), Some(format!(r#"{{"order_id": "o-2", "buyer_id": "b", "lines": [{line}]}} x"#)), None, 400, "invalid_body", "malformed JSON body: trailing characters"),
        (Method::POST, "/sim/orders".into(), None, None, 400, "invalid_body", "the body is empty"),
        (Method::POST, "/sim/orders".into(), Some("{}".into()), None, 400, "invalid_body", "missing field `order_id`"),
        (Method::POST, "/sim/orders".into(), Some(r#"{"order_id": "o-2", "buyer_id": "b", "lines": [{"line_id": "l", "sku": "s", "quantity": -1, "unit_price": {"minor": 1, "currency": "CNY"}}]}"#.into()), None, 400, "invalid_body", "field `lines[0].quantity`"),
        (Method::POST, "/sim/orders".into(), Some(r#"{"order_id": "o-2", "buyer_id": "b", "lines": [{"line_id": "l", "sku": "s", "quantity": 1, "unit_price": {"minor": 1.5, "currency": "CNY"}}]}"#.into()), None, 400, "invalid_body", "field `lines[0].unit_price.minor`"),
        (Method::POST, "/sim/orders".into(), Some(r#"{"order_id": "o-2", "buyer_id": "b", "lines": []}"#.into()), None, 400, "invalid_order", "at least one line"),
        (Method::POST, "/sim/orders".into(), Some(format!(r#"{{"order_id": "o-2", "buyer_id": "b", "lines": [{line}], "colour": "red"}}"#)), None, 400, "invalid_body", "unknown field `colour`"),
        (Method::POST, "/sim/orders".into(), Some(format!(r#"{{"order_id": "o-1", "buyer_id": "b", "lines": [{line}]}}"#)), None, 409, "conflict", "already exists"),
        (Method::POST, "/sim/orders".into(), Some(format!(r#"{{"order_id": "o-2", "buyer_id": "b", "lines": [{line}], "shipping_fee": {{"minor": 1, "currency": "USD"}}}}"#)), None, 422, "invalid_amount", "invalid amount"),
        (Method::GET, "/sim/orders/nope".into(), None, None, 404, "not_found", "unknown order `nope`"),
        (Method::POST, "/sim/orders/nope/shipment".into(), Some(r#"{"state": "shipped"}"#.into()), None, 404, "not_found", "unknown order `nope`"),
        (Method::POST, "/sim/orders/o-1/shipment".into(), Some(r#"{"state": "teleported"}"#.into()), None, 400, "invalid_body", "field `state`: unknown variant `teleported`"),
        (Method::PUT, "/sim/stock/s".into(), Some(r#"{"units": -1}"#.into()), None, 400, "invalid_stock", "negative"),
        (Method::POST, "/sim/returns/nope/receive".into(), Some(r#"{"inspection": "pass"}"#.into()), None, 404, "not_found", "unknown return `nope`"),
        (Method::POST, "/sim/returns/nope/receive".into(), Some(r#"{"inspection": "pass", "note": "x"}"#.into()), None, 400, "invalid_body", "only for a failed inspection"),
        (Method::POST, "/sim/refunds/re_0/complete".into(), Some(r#"{"status": "pending"}"#.into()), None, 400, "invalid_body", "`status` must be"),
        (Method::POST, "/sim/refunds/re_0/complete".into(), Some(r#"{"status": "succeeded"}"#.into()), None, 404, "not_found", "unknown refund `re_0`"),
        (Method::POST, "/sim/faults/payment.refnd".into(), Some(r#"{"faults": ["transient"]}"#.into()), None, 404, "unknown_action", "no action `payment.refnd`"),
        (Method::POST, "/sim/faults/payment.refund".into(), Some(r#"{"faults": ["explode"]}"#.into()), None, 400, "invalid_body", "field `faults[0]`: unknown variant `explode`"),
        (Method::POST, "/sim/entitlements/nope/consume".into(), Some(r#"{"units": 1}"#.into()), None, 404, "not_found", "unknown entitlement `nope`"),
        (Method::GET, "/sim/payments/nope".into(), None, None, 404, "not_found", "unknown payment `nope`"),
        (Method::POST, "/sim/parcels/nope/deliver".into(), None, None, 404, "not_found", "unknown parcel `nope`"),
        (Method::GET, "/nowhere".into(), None, None, 404, "no_route", "no endpoint GET /nowhere"),
        (Method::DELETE, "/sim/ledger".into(), None, None, 405, "method_not_allowed", "/sim/ledger does not take DELETE"),
        // The payment API.
        (Method::POST, refunds.clone(), Some(good_refund.into()), None, 400, "missing_idempotency_key", "Idempotency-Key"),
        (Method::POST, refunds.clone(), Some(good_refund.into()), Some("a.b"), 400, "invalid_idempotency_key", "contains '.'"),
        (Method::POST, refunds.clone(), Some(r#"{"amount": 1.5, "currency": "CNY"}"#.into()), Some("k1"), 400, "invalid_body", "field `amount`"),
        (Method::POST, refunds.clone(), Some(r#"{"amount": 100, "currency": "XX"}"#.into()), Some("k1"), 400, "invalid_body", "field `currency`"),
        (Method::POST, refunds.clone(), Some(r#"{"amount": 100, "currency": "CNY", "amont": 1}"#.into()), Some("k1"), 400, "invalid_body", "unknown field `amont`"),
        (Method::POST, refunds.clone(), Some(r#"{"amount": 100000, "currency": "CNY"}"#.into()), Some("k1"), 422, "refused", "exceeds"),
        (Method::POST, refunds.clone(), Some(r#"{"amount": 100, "currency": "USD"}"#.into()), Some("k1"), 422, "refused", "is in CNY"),
        (Method::POST, "/v1/payments/nope/refunds".into(), Some(good_refund.into()), Some("k1"), 404, "payment_not_found", "no payment `nope`"),
        (Method::GET, "/v1/refunds/nope".into(), None, None, 404, "not_found", "no refund `nope`"),
        (Method::GET, format!("/v1/payments/{pay}/refunds/by-key/a.b"), None, None, 400, "invalid_idempotency_key", "contains '.'"),
        (Method::GET, format!("/v1/payments/{pay}/refunds/by-key/never"), None, None, 404, "not_found", "no refund was made with that key"),
        // Any action.
        (Method::POST, "/v1/actions/payment.refnd".into(), Some("{}".into()), Some("k1"), 404, "unknown_action", "no action `payment.refnd`"),
        (Method::POST, "/v1/actions/order.get".into(), Some(r#"["o-1"]"#.into()), None, 400, "invalid_input", "must be a JSON object"),
        (Method::POST, "/v1/actions/order.get".into(), Some(r#"{"order": "o-1"}"#.into()), None, 400, "invalid_input", "unknown field `order`"),
        (Method::POST, "/v1/actions/warehouse.create_return".into(), Some(r#"{"order_id": "o-1", "service_order_id": "s", "lines": [{"line_id": "l1", "sku": "tshirt-m", "quantity": "one"}]}"#.into()), Some("k2"), 400, "invalid_input", "field `lines[0].quantity`"),
        (Method::POST, "/v1/actions/payment.refund_status".into(), Some(r#"{"payment_id": "p"}"#.into()), None, 400, "invalid_input", "give either `refund_id`"),
        (Method::POST, "/v1/actions/warehouse.restock".into(), Some(r#"{"rma_id": "r"}"#.into()), None, 400, "missing_idempotency_key", "Idempotency-Key"),
        (Method::POST, "/v1/actions/warehouse.restock".into(), Some(r#"{"rma_id": "r"}"#.into()), Some("k3"), 404, "not_found", "unknown return `r`"),
        (Method::POST, "/v1/actions/order.get".into(), Some(r#"{"order_id": "nope"}"#.into()), None, 404, "not_found", "unknown order `nope`"),
    ];
    for (method, path, body, k, status, code, says) in cases {
        let what = format!("{method} {path} {body:?}");
        let r = server.send(method, &path, body.as_deref(), k).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        assert!(
            r.content_type.starts_with("application/json"),
            "{what}: {r:?}"
        );
        assert_eq!(r.body["error"]["code"], code, "{what}: {r:?}");
        let message = r.body["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{what}: {message}");
    }
    // Nothing above moved money.
    assert_eq!(server.get("/sim/ledger").await, json!({"entries": []}));
}
