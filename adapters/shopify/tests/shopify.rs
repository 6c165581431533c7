//! The Shopify adapter against the mock: the order read exactly, tags as marks, refunds
//! recorded once per key, each error class, and webhooks.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::ids::OrderId;
use aftersales_adapter::types::{
    ClearAfterSales, CloseAfterSales, CloseOutcome, GetOrder, MarkAfterSales, OrderStatus,
    ReportRefund, ShipmentState,
};
use aftersales_adapter::{
    ErrorClass, Headers, IdempotencyKey, OrderSystem, Registry, WebhookError, WebhookVerifier,
};
use aftersales_money::{Currency, Money};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{CLIENT_SECRET, MLine, MOrderSpec, MockShopify, OLD_CLIENT_SECRET, build, decimal};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD)
}

async fn start() -> (MockShopify, Arc<dyn OrderSystem>) {
    let api = MockShopify::start().await;
    let o = build(&api.uri()).order.unwrap();
    (api, o)
}

fn report(order: &str, minor: i64) -> ReportRefund {
    ReportRefund {
        order_id: OrderId::new(order),
        service_order_id: "so-1".into(),
        amount: usd(minor),
        refund_id: "re_3Mock0001".into(),
    }
}

#[tokio::test]
async fn an_order_reads_exactly_with_discounts_taxes_and_times() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec {
        currency: "USD",
        exponent: 2,
        lines: vec![
            MLine {
                sku: "tee-m",
                quantity: 2,
                unit: 1_999,
                line_discount: 200,
                coupon_share: 379,
                tax: 281,
            },
            MLine {
                sku: "cap",
                quantity: 1,
                unit: 1_250,
                line_discount: 0,
                coupon_share: 121,
                tax: 90,
            },
        ],
        shipping: 495,
        shipping_tax: 40,
        taxes_included: false,
        fulfillment: "FULFILLED",
        delivered: true,
    });
    let order = o
        .get(&GetOrder {
            order_id: OrderId::new(id.clone()),
        })
        .await
        .unwrap();
    assert_eq!(order.status, OrderStatus::Delivered);
    assert_eq!(order.shipment, Some(ShipmentState::Delivered));
    let tee = &order.lines[0];
    assert_eq!(
        tee.line_id.as_str(),
        format!("gid://shopify/LineItem/{id}0")
    );
    assert_eq!(tee.sku.as_str(), "tee-m");
    assert_eq!(tee.unit_price, usd(1_999));
    assert_eq!(tee.line_discount, Some(usd(200)));
    // 2 × 19.99 − 2.00 line discount − 3.79 coupon share + 2.81 tax.
    assert_eq!(tee.paid, usd(3_998 - 200 - 379 + 281));
    assert_eq!(tee.category.as_deref(), Some("apparel.tops"));
    assert_eq!(order.lines[1].paid, usd(1_250 - 121 + 90));
    assert_eq!(order.coupon, Some(usd(500)));
    assert_eq!(order.shipping_fee, usd(535));
    assert_eq!(order.paid, usd(3_700 + 1_219 + 535));
    assert_eq!(
        order.payment_id.as_str(),
        format!("gid://shopify/OrderTransaction/{id}1")
    );
    assert_eq!(
        order.buyer_id.map(|b| b.to_string()).as_deref(),
        Some("gid://shopify/Customer/77")
    );
    assert_eq!(order.paid_at, Some(1_763_632_805_000));
    assert_eq!(order.shipped_at, Some(1_763_739_000_000));
    assert_eq!(order.delivered_at, Some(1_764_000_000_000));
}

#[tokio::test]
async fn zero_decimal_currencies_arrive_with_a_point_zero() {
    let (api, o) = start().await;
    let mut spec = MOrderSpec::simple("yukata", 1, 12_800);
    spec.currency = "JPY";
    spec.exponent = 0;
    spec.shipping = 800;
    let id = api.add_order(spec);
    assert_eq!(decimal(12_800, 0), "12800.0");
    let order = o
        .get(&GetOrder {
            order_id: OrderId::new(id),
        })
        .await
        .unwrap();
    assert_eq!(order.paid, Money::new(13_600, Currency::JPY));
    assert_eq!(order.status, OrderStatus::Paid);
    assert_eq!(order.shipment, Some(ShipmentState::NotShipped));
    assert_eq!(order.shipped_at, None);
}

#[tokio::test]
async fn marks_are_tags_and_repeats_change_nothing() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 2_000));
    let mark = MarkAfterSales {
        order_id: OrderId::new(id.clone()),
        service_order_id: "so-9".into(),
        lines: vec![],
    };
    o.mark_after_sales(&mark, &key("m-1")).await.unwrap();
    o.mark_after_sales(&mark, &key("m-1")).await.unwrap();
    assert_eq!(api.tags(&id), ["aftersales:so-9"]);
    o.clear_after_sales(
        &ClearAfterSales {
            order_id: OrderId::new(id.clone()),
            service_order_id: "so-9".into(),
        },
        &key("c-1"),
    )
    .await
    .unwrap();
    assert!(api.tags(&id).is_empty());
    o.mark_after_sales(&mark, &key("m-2")).await.unwrap();
    let close = CloseAfterSales {
        order_id: OrderId::new(id.clone()),
        service_order_id: "so-9".into(),
        outcome: CloseOutcome::Rejected,
        reason: None,
    };
    o.close_after_sales(&close, &key("x-1")).await.unwrap();
    o.close_after_sales(&close, &key("x-1")).await.unwrap();
    assert_eq!(api.tags(&id), ["aftersales:so-9:rejected"]);
}

#[tokio::test]
async fn a_refund_is_recorded_once_per_key() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 2, 2_250));
    let k = key("inst_42-report_refund-fwd-0");
    o.report_refund(&report(&id, 2_250), &k).await.unwrap();
    o.report_refund(&report(&id, 2_250), &k).await.unwrap();
    let refunds = api.refunds(&id);
    assert_eq!(refunds.len(), 1, "{refunds:?}");
    assert_eq!(refunds[0].2, 2_250);
    let calls = api.operations("AftersalesRefund").await;
    assert_eq!(calls.len(), 1, "the repeat found the refund by its note");
    assert_eq!(
        calls[0]["variables"]["key"],
        json!(k.as_str()),
        "the key arrived unchanged"
    );
    let input = &calls[0]["variables"]["input"];
    assert_eq!(input["transactions"][0]["amount"], json!("22.50"));
    assert_eq!(input["transactions"][0]["kind"], json!("REFUND"));
    assert_eq!(input["notify"], json!(false));
    assert!(input["note"].as_str().unwrap().contains(k.as_str()));
    // A new key is a new refund, up to what is left.
    o.report_refund(&report(&id, 2_250), &key("second"))
        .await
        .unwrap();
    assert_eq!(api.refunds(&id).len(), 2);
    let e = o
        .report_refund(&report(&id, 1), &key("third"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent, "{e}");
    assert_eq!(
        api.operations("AftersalesRefund").await.len(),
        2,
        "nothing sent"
    );
}

#[tokio::test]
async fn a_lost_refund_answer_is_resolved_without_a_second_refund() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    let k = key("inst_43-report_refund-fwd-0");
    api.lose_next_answer(Some("AftersalesRefund"));
    let e = o.report_refund(&report(&id, 4_500), &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    // Shopify made the refund; the retry finds it by its note and sends nothing.
    o.report_refund(&report(&id, 4_500), &k).await.unwrap();
    assert_eq!(api.refunds(&id).len(), 1);
    assert_eq!(api.operations("AftersalesRefund").await.len(), 1);
}

#[tokio::test]
async fn rate_limits_and_server_errors_are_retryable() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    let get = GetOrder {
        order_id: OrderId::new(id.clone()),
    };
    api.fail_next(None, 429, Some("2.0"));
    let e = o.get(&get).await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(2))
        },
        "{e}"
    );
    // THROTTLED in a 200: wait until the bucket holds the query's cost again.
    api.throttle_next(None);
    let e = o.get(&get).await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(3))
        },
        "{e}"
    );
    api.fail_next(None, 503, None);
    assert!(matches!(
        o.get(&get).await.unwrap_err().class,
        ErrorClass::Transient { .. }
    ));
    // A 500 on the mutation may have acted: unknown outcome, and the retry finds nothing
    // made, so it records the refund once.
    api.fail_next(Some("AftersalesRefund"), 500, None);
    let e = o
        .report_refund(&report(&id, 4_500), &key("r-1"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome);
    o.report_refund(&report(&id, 4_500), &key("r-1"))
        .await
        .unwrap();
    assert_eq!(api.refunds(&id).len(), 1);
    assert!(o.get(&get).await.is_ok());
}

#[tokio::test]
async fn user_errors_in_a_200_are_permanent() {
    let (api, o) = start().await;
    let id = api.add_order(MOrderSpec::simple("tee-m", 1, 4_500));
    api.refuse_next(Some("AftersalesRefund"));
    let e = o
        .report_refund(&report(&id, 1_000), &key("r-1"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert_eq!(
        e.message,
        "shopify userErrors: orderId: Order is archived and cannot be edited"
    );
    api.refuse_next(Some("AftersalesTagsAdd"));
    let e = o
        .mark_after_sales(
            &MarkAfterSales {
                order_id: OrderId::new(id.clone()),
                service_order_id: "so-1".into(),
                lines: vec![],
            },
            &key("m-1"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    // Unknown orders, and a token Shopify does not accept.
    let e = o
        .report_refund(&report("404", 1_000), &key("r-2"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    let mut registry = Registry::new();
    aftersales_adapter_shopify::register(&mut registry);
    let env = |n: &str| {
        if n == "SHOPIFY_ADMIN_TOKEN" {
            Some("shpat_wrong".to_owned())
        } else {
            common::env(n)
        }
    };
    let bad = registry
        .build(&common::config(&api.uri()), &env)
        .unwrap()
        .order
        .unwrap();
    let e = bad
        .get(&GetOrder {
            order_id: OrderId::new(id),
        })
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.starts_with("shopify 401"), "{e}");
    assert!(!e.to_string().contains("shpat_wrong"));
}

#[test]
fn a_missing_token_names_the_variable_not_the_value() {
    let mut registry = Registry::new();
    aftersales_adapter_shopify::register(&mut registry);
    let e = registry
        .build(&common::config("http://127.0.0.1:9"), &|_| None)
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "adapter `shopify`: environment variable `SHOPIFY_ADMIN_TOKEN` (named by `access_token_env`) is not set"
    );
}

// ---------------------------------------------------------------- webhooks

const REFUND: &[u8] = include_bytes!("fixtures/refunds_create.json");

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_564_800)
}

fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    // 2026-11-25T00:00:00Z is 1_795_564_800; the tests stay within that day.
    let rem = secs - 1_795_564_800;
    format!(
        "2026-11-25T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn signed(secret: &str, id: &str, topic: &str, body: &[u8], at: SystemTime) -> Headers {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    Headers::new()
        .with(
            "X-Shopify-Hmac-Sha256",
            STANDARD.encode(mac.finalize().into_bytes()),
        )
        .with("X-Shopify-Webhook-Id", id)
        .with("X-Shopify-Triggered-At", rfc3339(at))
        .with("X-Shopify-Topic", topic)
}

fn verifier() -> Arc<dyn WebhookVerifier> {
    build("http://127.0.0.1:9").webhooks.unwrap()
}

#[test]
fn a_refund_webhook_is_a_typed_event() {
    let v = verifier();
    let at = now() + Duration::from_secs(60);
    let e = v
        .verify(
            &signed(CLIENT_SECRET, "wh-1", "refunds/create", REFUND, at),
            REFUND,
            at,
        )
        .unwrap()
        .unwrap();
    assert_eq!(e.name, "payment.refund.succeeded");
    assert_eq!(e.dedupe_id, "wh-1");
    assert_eq!(e.correlation, "gid://shopify/Refund/890088186047892319");
    assert_eq!(
        e.payload,
        json!({
            "refund_id": "gid://shopify/Refund/890088186047892319",
            "payment_id": "gid://shopify/OrderTransaction/55000011",
            "amount": {"minor": 4_500, "currency": "USD"},
            "status": "succeeded",
            "service_order_id": "so-42",
        })
    );
}

#[test]
fn signatures_are_base64_hmacs_of_the_raw_body() {
    let v = verifier();
    let at = now();
    // The previous secret during a rotation.
    let h = signed(OLD_CLIENT_SECRET, "wh-2", "refunds/create", REFUND, at);
    assert!(v.verify(&h, REFUND, at).unwrap().is_some());
    // Another secret; a hex signature; a body re-serialised after signing.
    let h = signed("shpss_other", "wh-3", "refunds/create", REFUND, at);
    assert_eq!(v.verify(&h, REFUND, at), Err(WebhookError::BadSignature));
    let mut mac = Hmac::<Sha256>::new_from_slice(CLIENT_SECRET.as_bytes()).unwrap();
    mac.update(REFUND);
    let hex_sig: String = mac
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let h = Headers::new()
        .with("X-Shopify-Hmac-Sha256", hex_sig)
        .with("X-Shopify-Webhook-Id", "wh-4")
        .with("X-Shopify-Triggered-At", rfc3339(at))
        .with("X-Shopify-Topic", "refunds/create");
    assert_eq!(v.verify(&h, REFUND, at), Err(WebhookError::BadSignature));
    let reserialised =
        serde_json::to_vec(&serde_json::from_slice::<serde_json::Value>(REFUND).unwrap()).unwrap();
    let h = signed(CLIENT_SECRET, "wh-5", "refunds/create", REFUND, at);
    assert_eq!(
        v.verify(&h, &reserialised, at),
        Err(WebhookError::BadSignature)
    );
    assert_eq!(
        v.verify(&Headers::new(), REFUND, at),
        Err(WebhookError::MissingHeader("X-Shopify-Hmac-Sha256".into()))
    );
}

#[test]
fn a_replayed_webhook_is_deduped_or_refused() {
    let v = verifier();
    let h = signed(CLIENT_SECRET, "wh-6", "refunds/create", REFUND, now());
    let a = v.verify(&h, REFUND, now()).unwrap().unwrap();
    let b = v.verify(&h, REFUND, now()).unwrap().unwrap();
    assert_eq!(a.dedupe_id, b.dedupe_id, "the engine processes it once");
    let later = now() + Duration::from_secs(301);
    assert_eq!(
        v.verify(&h, REFUND, later),
        Err(WebhookError::StaleTimestamp {
            age_secs: 301,
            tolerance_secs: 300
        })
    );
}

#[test]
fn other_topics_are_acknowledged_and_dropped() {
    let v = verifier();
    let body = br#"{"id": 450789469, "admin_graphql_api_id": "gid://shopify/Order/450789469", "cancel_reason": "customer"}"#;
    let h = signed(CLIENT_SECRET, "wh-7", "orders/cancelled", body, now());
    assert_eq!(v.verify(&h, body, now()), Ok(None));
    let body = br#"{"id": 1, "order_id": 2, "transactions": [{"kind": "refund", "status": "pending", "amount": "1.0", "currency": "USD"}]}"#;
    let h = signed(CLIENT_SECRET, "wh-8", "refunds/create", body, now());
    assert_eq!(v.verify(&h, body, now()), Ok(None), "nothing refunded yet");
}
