//! The ShipBob adapter against the mock: the key as `reference_id`, lookups before creates,
//! each error class, interceptions, restock confirmation and webhooks.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::ids::{OrderId, RmaId};
use aftersales_adapter::types::{
    CreateReturn, InterceptResult, InterceptShipment, LineRef, ReserveStock, RmaRef,
};
use aftersales_adapter::{
    AdapterConfig, ErrorClass, Headers, IdempotencyKey, Registry, RegistryError, Warehouse,
    WebhookError, WebhookVerifier,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{MockShipBob, OLD_WEBHOOK_SECRET, WEBHOOK_SECRET, build};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

fn line(sku: &str, quantity: u32) -> LineRef {
    LineRef {
        line_id: "line-1".into(),
        sku: sku.into(),
        quantity,
    }
}

fn return_req(order: &str, sku: &str, quantity: u32) -> CreateReturn {
    CreateReturn {
        order_id: OrderId::new(order),
        service_order_id: "so-1".into(),
        lines: vec![line(sku, quantity)],
        pickup: false,
    }
}

fn intercept_req(order: &str, lines: Vec<LineRef>) -> InterceptShipment {
    InterceptShipment {
        order_id: OrderId::new(order),
        service_order_id: "so-1".into(),
        lines,
    }
}

async fn start() -> (MockShipBob, Arc<dyn Warehouse>) {
    let api = MockShipBob::start().await;
    let w = build(&api.uri()).warehouse.unwrap();
    (api, w)
}

#[tokio::test]
async fn the_key_is_the_reference_and_a_repeat_finds_the_first_return() {
    let (api, w) = start().await;
    api.add_order("#1001", "tee-m", 2, "Completed");
    let k = key("inst_42-create_return-fwd-0");
    let first = w
        .create_return(&return_req("#1001", "tee-m", 1), &k)
        .await
        .unwrap();
    let again = w
        .create_return(&return_req("#1001", "tee-m", 1), &k)
        .await
        .unwrap();
    assert_eq!(first, again);
    let posts = api.posts("/2026-01/return").await;
    assert_eq!(posts.len(), 1, "the repeat created nothing");
    let body: serde_json::Value = serde_json::from_slice(&posts[0].body).unwrap();
    assert_eq!(
        body["reference_id"],
        json!(k.as_str()),
        "the key arrived unchanged"
    );
    assert_eq!(body["fulfillment_center"]["id"], json!(22));
    assert_eq!(body["inventory"][0]["quantity"], json!(1));
    assert_eq!(body["inventory"][0]["requested_action"], json!("Restock"));
    assert_eq!(posts[0].headers["shipbob_channel_id"], "48213");
    assert_eq!(api.returns().len(), 1);
}

#[tokio::test]
async fn a_lost_answer_is_an_unknown_outcome_and_the_retry_finds_the_return() {
    let (api, w) = start().await;
    api.add_order("#1002", "tee-m", 1, "Completed");
    let k = key("inst_43-create_return-fwd-0");
    api.lose_next_answer();
    let e = w
        .create_return(&return_req("#1002", "tee-m", 1), &k)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    // ShipBob made the return; the retry looks it up by reference and creates nothing.
    let out = w
        .create_return(&return_req("#1002", "tee-m", 1), &k)
        .await
        .unwrap();
    let returns = api.returns();
    assert_eq!(returns.len(), 1, "one return, not two");
    assert_eq!(out.rma_id.as_str(), returns[0].0.to_string());
    assert_eq!(api.posts("/2026-01/return").await.len(), 1);
}

#[tokio::test]
async fn a_503_or_429_is_transient_with_retry_after_and_moves_nothing() {
    let (api, w) = start().await;
    api.add_order("#1003", "tee-m", 1, "Completed");
    let k = key("inst_44-create_return-fwd-0");
    api.fail_next(503, Some("7"));
    let e = w
        .create_return(&return_req("#1003", "tee-m", 1), &k)
        .await
        .unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(7))
        },
        "{e}"
    );
    assert!(api.returns().is_empty());
    w.create_return(&return_req("#1003", "tee-m", 1), &k)
        .await
        .unwrap();
    assert_eq!(api.returns().len(), 1);

    api.add_order("#1004", "tee-m", 1, "Processing");
    api.fail_next(429, Some("2"));
    let e = w
        .intercept_shipment(&intercept_req("#1004", vec![line("tee-m", 1)]), &key("i-1"))
        .await
        .unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(2))
        }
    );
    assert_eq!(api.shipment_status("#1004"), ["Processing"]);
}

#[tokio::test]
async fn business_refusals_are_permanent() {
    let (api, w) = start().await;
    // ShipBob refuses a return against a shipment that never left.
    api.add_order("#1005", "tee-m", 1, "Processing");
    let e = w
        .create_return(&return_req("#1005", "tee-m", 1), &key("r-1"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("shipbob 422"), "{e}");
    assert!(e.message.contains("has not shipped"), "{e}");
    // A return that arrived can no longer be cancelled.
    api.add_order("#1006", "tee-m", 1, "Completed");
    let rma = w
        .create_return(&return_req("#1006", "tee-m", 1), &key("r-2"))
        .await
        .unwrap()
        .rma_id;
    api.arrive(rma.as_str().parse().unwrap());
    let e = w
        .cancel_return(&RmaRef { rma_id: rma }, &key("c-1"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    // Unknown orders, SKUs and return ids.
    let e = w
        .create_return(&return_req("#nope", "tee-m", 1), &key("r-3"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    let e = w
        .create_return(&return_req("#1006", "hat", 1), &key("r-4"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    let e = w
        .cancel_return(
            &RmaRef {
                rma_id: RmaId::new("999"),
            },
            &key("c-2"),
        )
        .await
        .unwrap_err();
    // A return ShipBob does not know: not found, not retried either.
    assert_eq!(e.class, ErrorClass::NotFound, "{e}");
    // The token is checked by ShipBob, and a bad one is not retried.
    let mut registry = Registry::new();
    aftersales_adapter_shipbob::register(&mut registry);
    let wrong = |name: &str| (name == "SHIPBOB_TOKEN").then(|| "pat_wrong".to_owned());
    let bad = registry
        .build(&common::config(&api.uri()), &|n| {
            wrong(n).or_else(|| common::env(n))
        })
        .unwrap()
        .warehouse
        .unwrap();
    let e = bad
        .create_return(&return_req("#1006", "tee-m", 1), &key("r-5"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.starts_with("shipbob 401"), "{e}");
}

#[tokio::test]
async fn interception_depends_on_how_far_the_shipment_got() {
    let (api, w) = start().await;
    api.add_order("#1010", "tee-m", 2, "Processing");
    api.add_order("#1011", "tee-m", 2, "LabeledCreated");
    api.add_order("#1012", "tee-m", 2, "Completed");
    api.add_two_line_order("#1013", "Processing");
    let i = |order: &str, qty| intercept_req(order, vec![line("tee-m", qty)]);
    let out = w
        .intercept_shipment(&i("#1010", 2), &key("i-1"))
        .await
        .unwrap();
    assert_eq!(out.result, InterceptResult::Intercepted);
    assert_eq!(api.shipment_status("#1010"), ["Cancelled"]);
    // Packed: ShipBob refuses the cancel, which is too late for us.
    let out = w
        .intercept_shipment(&i("#1011", 2), &key("i-2"))
        .await
        .unwrap();
    assert_eq!(out.result, InterceptResult::TooLate);
    // Shipped: known from the order, nothing is sent.
    let before = api.posts(":cancel").await.len();
    let out = w
        .intercept_shipment(&i("#1012", 2), &key("i-3"))
        .await
        .unwrap();
    assert_eq!(out.result, InterceptResult::TooLate);
    assert_eq!(api.posts(":cancel").await.len(), before);
    // ShipBob cancels whole orders: one line of two cannot be stopped alone.
    let e = w
        .intercept_shipment(&intercept_req("#1013", vec![line("sku-a", 1)]), &key("i-4"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert_eq!(api.shipment_status("#1013"), ["Processing"]);
}

#[tokio::test]
async fn a_lost_cancel_answer_is_resolved_by_reading_the_order() {
    let (api, w) = start().await;
    api.add_order("#1020", "tee-m", 1, "Processing");
    let req = intercept_req("#1020", vec![line("tee-m", 1)]);
    api.lose_next_answer();
    let e = w.intercept_shipment(&req, &key("i-1")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    let out = w.intercept_shipment(&req, &key("i-1")).await.unwrap();
    assert_eq!(out.result, InterceptResult::Intercepted);
    assert_eq!(api.posts(":cancel").await.len(), 1, "no second cancel");
}

#[tokio::test]
async fn restock_confirms_what_shipbob_did() {
    let (api, w) = start().await;
    api.add_order("#1030", "tee-m", 2, "Completed");
    let rma = w
        .create_return(&return_req("#1030", "tee-m", 2), &key("r-1"))
        .await
        .unwrap()
        .rma_id;
    let id: u64 = rma.as_str().parse().unwrap();
    let r = RmaRef {
        rma_id: rma.clone(),
    };
    let e = w.restock(&r, &key("s-1")).await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::Transient { .. }), "{e}");
    api.complete_return(id, None);
    w.restock(&r, &key("s-1")).await.unwrap();

    api.add_order("#1031", "tee-m", 1, "Completed");
    let rma = w
        .create_return(&return_req("#1031", "tee-m", 1), &key("r-2"))
        .await
        .unwrap()
        .rma_id;
    api.complete_return(rma.as_str().parse().unwrap(), Some(("Dispose", "broken")));
    let e = w
        .restock(&RmaRef { rma_id: rma }, &key("s-2"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("Dispose: broken"), "{e}");
}

#[tokio::test]
async fn what_shipbob_cannot_do_is_unsupported() {
    let (_api, w) = start().await;
    let caps = w.capabilities();
    assert!(caps.supports("warehouse.restock"));
    assert!(!caps.supports("warehouse.reserve_stock"));
    assert!(!caps.supports("warehouse.reverse_restock"));
    let e = w
        .reserve_stock(
            &ReserveStock {
                sku: "tee-m".into(),
                quantity: 1,
            },
            &key("x"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Unsupported);
}

#[test]
fn settings_are_checked_and_secrets_come_from_the_environment() {
    let mut registry = Registry::new();
    aftersales_adapter_shipbob::register(&mut registry);
    let c = AdapterConfig::with_settings(
        "shipbob",
        json!({"token_env": "SHIPBOB_TOKEN", "channel_id": 1, "requested_action": "Burn"}),
    );
    let e = registry.build(&c, &common::env).unwrap_err();
    assert!(matches!(e, RegistryError::InvalidSettings { .. }), "{e}");
    let c = AdapterConfig::with_settings(
        "shipbob",
        json!({"token_env": "SHIPBOB_TOKEN", "channel_id": 1}),
    );
    let e = registry.build(&c, &|_| None).unwrap_err();
    assert_eq!(
        e.to_string(),
        "adapter `shipbob`: environment variable `SHIPBOB_TOKEN` (named by `token_env`) is not set"
    );
    // No webhook secret configured: no verifier.
    assert!(registry.build(&c, &common::env).unwrap().webhooks.is_none());
}

// ---------------------------------------------------------------- webhooks

fn sign(secret: &str, id: &str, body: &[u8], at: SystemTime, topic: &str) -> Headers {
    let t = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let key = STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{t}.").as_bytes());
    mac.update(body);
    let sig = STANDARD.encode(mac.finalize().into_bytes());
    Headers::new()
        .with("webhook-id", id)
        .with("webhook-timestamp", t.to_string())
        .with("webhook-signature", format!("v1,{sig}"))
        .with("x-webhook-topic", topic)
}

const PASSED: &[u8] = include_bytes!("fixtures/return_completed.json");
const QUARANTINED: &[u8] = include_bytes!("fixtures/return_completed_quarantined.json");

fn verifier() -> Arc<dyn WebhookVerifier> {
    build("http://127.0.0.1:9").webhooks.unwrap()
}

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_564_800)
}

#[test]
fn a_completed_return_is_the_return_received_event() {
    let v = verifier();
    let e = v
        .verify(
            &sign(WEBHOOK_SECRET, "msg_1", PASSED, now(), "return.completed"),
            PASSED,
            now(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(e.name, "warehouse.return.received");
    assert_eq!(e.correlation, "310042");
    assert_eq!(e.dedupe_id, "msg_1");
    assert_eq!(
        e.payload,
        json!({
            "rma_id": "310042",
            "inspection_passed": true,
            "order_id": "#1042",
            "reference_id": "inst-7f3a-create_return-fwd-0",
        })
    );
    let e = v
        .verify(
            &sign(
                WEBHOOK_SECRET,
                "msg_2",
                QUARANTINED,
                now(),
                "return.completed",
            ),
            QUARANTINED,
            now(),
        )
        .unwrap()
        .unwrap();
    assert_eq!(e.payload["inspection_passed"], json!(false));
    assert_eq!(
        e.payload["note"],
        json!("Quarantine: stained, tags removed")
    );
}

#[test]
fn signatures_are_checked_against_every_secret() {
    let v = verifier();
    // The previous secret during a rotation, among several signatures.
    let mut h = sign(
        OLD_WEBHOOK_SECRET,
        "msg_3",
        PASSED,
        now(),
        "return.completed",
    );
    let sig = h.get("webhook-signature").unwrap().to_owned();
    h = Headers::new()
        .with("webhook-id", "msg_3")
        .with("webhook-timestamp", h.get("webhook-timestamp").unwrap())
        .with("webhook-signature", format!("v1,AAAA {sig}"))
        .with("x-webhook-topic", "return.completed");
    assert!(v.verify(&h, PASSED, now()).unwrap().is_some());
    // Another secret, or a body changed after signing.
    let h = sign(
        "whsec_b3RoZXItc2VjcmV0",
        "msg_4",
        PASSED,
        now(),
        "return.completed",
    );
    assert_eq!(v.verify(&h, PASSED, now()), Err(WebhookError::BadSignature));
    let h = sign(WEBHOOK_SECRET, "msg_5", PASSED, now(), "return.completed");
    let mut tampered = PASSED.to_vec();
    let at = tampered.iter().position(|b| *b == b't').unwrap();
    tampered[at] = b'T';
    assert_eq!(
        v.verify(&h, &tampered, now()),
        Err(WebhookError::BadSignature)
    );
    // The id is signed too: a delivery replayed under a new id does not verify.
    let h = sign(WEBHOOK_SECRET, "msg_6", PASSED, now(), "return.completed");
    let forged = Headers::new()
        .with("webhook-id", "msg_7")
        .with("webhook-timestamp", h.get("webhook-timestamp").unwrap())
        .with("webhook-signature", h.get("webhook-signature").unwrap())
        .with("x-webhook-topic", "return.completed");
    assert_eq!(
        v.verify(&forged, PASSED, now()),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        v.verify(&Headers::new().with("webhook-id", "x"), PASSED, now()),
        Err(WebhookError::MissingHeader("webhook-timestamp".into()))
    );
}

#[test]
fn a_replayed_delivery_is_deduped_or_refused() {
    let v = verifier();
    let h = sign(WEBHOOK_SECRET, "msg_8", PASSED, now(), "return.completed");
    let a = v.verify(&h, PASSED, now()).unwrap().unwrap();
    let b = v.verify(&h, PASSED, now()).unwrap().unwrap();
    assert_eq!(a.dedupe_id, b.dedupe_id, "the engine processes it once");
    let later = now() + Duration::from_secs(301);
    assert!(matches!(
        v.verify(&h, PASSED, later),
        Err(WebhookError::StaleTimestamp {
            age_secs: 301,
            tolerance_secs: 300
        })
    ));
}

#[test]
fn other_topics_are_acknowledged_and_dropped() {
    let v = verifier();
    let body = br#"{"id": 1, "status": "Completed"}"#;
    let h = sign(WEBHOOK_SECRET, "msg_9", body, now(), "order.shipped");
    assert_eq!(v.verify(&h, body, now()), Ok(None));
}
