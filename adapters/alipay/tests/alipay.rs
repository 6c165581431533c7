//! Alipay-specific behaviour against the mock: the key as `out_request_no`, yuan strings,
//! RSA2 on requests and answers, each error class, a lost answer settled by the refund query,
//! notification signatures and replays.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::ids::PaymentId;
use aftersales_adapter::types::Refund;
use aftersales_adapter::{
    AdapterConfig, ErrorClass, Headers, IdempotencyKey, Payment, RefundLookup, RefundStatus,
    Registry, WebhookError,
};
use aftersales_money::{Currency, Money};
use common::{MockAlipay, build, keys};
use serde_json::{Value, json};

fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::CNY)
}

fn refund(payment_id: &PaymentId, amount: Money) -> Refund {
    Refund {
        payment_id: payment_id.clone(),
        amount,
        reason: Some("退货退款".into()),
        service_order_id: Some("so-88".into()),
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

async fn setup() -> (MockAlipay, Arc<dyn Payment>) {
    let api = MockAlipay::start().await;
    let payment = build(&api.uri()).payment.unwrap();
    (api, payment)
}

#[tokio::test]
async fn the_key_is_the_out_request_no_and_a_repeat_moves_nothing() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(10_000));
    let req = refund(&pay, cny(2_501));
    let k = key("so-88-refund-fwd-0");
    let first = payment.refund(&req, &k).await.unwrap();
    assert_eq!(first.status, RefundStatus::Succeeded);
    assert_eq!(
        first.refund_id.as_str(),
        format!("{pay}:so-88-refund-fwd-0")
    );
    // Alipay answers the repeat with fund_change = N: the same refund, reported pending
    // until the query confirms it.
    let again = payment.refund(&req, &k).await.unwrap();
    assert_eq!(again.refund_id, first.refund_id);
    assert_eq!(again.status, RefundStatus::Pending);
    let state = payment
        .refund_status(&RefundLookup::Id(again.refund_id.clone()))
        .await
        .unwrap();
    assert_eq!(state.status, RefundStatus::Succeeded);
    assert_eq!(api.movements(&pay), vec![cny(2_501)]);
    let calls = api.refund_calls().await;
    assert_eq!(calls.len(), 2);
    for c in &calls {
        assert_eq!(c["app_id"], common::APP_ID);
        assert_eq!(c["sign_type"], "RSA2");
        assert_eq!(
            serde_json::from_str::<Value>(&c["biz_content"]).unwrap(),
            json!({
                "out_trade_no": pay.as_str(),
                "refund_amount": "25.01",
                "out_request_no": "so-88-refund-fwd-0",
                "refund_reason": "退货退款",
            })
        );
    }
}

#[tokio::test]
async fn amounts_are_exact_yuan_strings() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(100_000));
    for (fen, text) in [(1, "0.01"), (10, "0.10"), (100, "1.00"), (12_345, "123.45")] {
        payment
            .refund(&refund(&pay, cny(fen)), &key(&format!("k-{fen}")))
            .await
            .unwrap();
        let calls = api.refund_calls().await;
        let biz: Value = serde_json::from_str(&calls.last().unwrap()["biz_content"]).unwrap();
        assert_eq!(biz["refund_amount"], text);
    }
    assert_eq!(
        api.movements(&pay),
        vec![cny(1), cny(10), cny(100), cny(12_345)]
    );
    for (m, k) in [(Money::new(100, Currency::USD), "k-usd"), (cny(0), "k-0")] {
        let e = payment.refund(&refund(&pay, m), &key(k)).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
    }
    assert_eq!(api.refund_calls().await.len(), 4, "nothing sent for those");
}

#[tokio::test]
async fn outages_are_retryable_and_the_retry_pays_once() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(10_000));
    let req = refund(&pay, cny(1_000));
    let k = key("k-retry");
    api.fail_next_http(503);
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::Transient { .. }), "{e}");
    api.fail_next_http(429);
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::Transient { .. }), "{e}");
    // 20000 and ACQ.SYSTEM_ERROR: Alipay asks for the same request again; whether it acted
    // is not known, so the refund is an unknown outcome.
    api.unavailable_next();
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    api.system_error_next();
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    assert!(e.message.contains("ACQ.SYSTEM_ERROR"), "{e}");
    assert!(api.movements(&pay).is_empty());
    payment.refund(&req, &k).await.unwrap();
    assert_eq!(api.movements(&pay), vec![cny(1_000)]);
}

#[tokio::test]
async fn business_refusals_are_permanent() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(1_000));
    let e = payment
        .refund(&refund(&pay, cny(1_001)), &key("k-over"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("ACQ.REASON_TRADE_REFUND_FEE_ERR"), "{e}");
    payment
        .refund(&refund(&pay, cny(100)), &key("k-once"))
        .await
        .unwrap();
    let e = payment
        .refund(&refund(&pay, cny(200)), &key("k-once"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("ACQ.DISCORDANT_REPEAT_REQUEST"), "{e}");
    let e = payment
        .refund(&refund(&"no-such-trade".into(), cny(1)), &key("k-none"))
        .await
        .unwrap_err();
    // A trade Alipay does not know is its own class: not found, never retried either.
    assert_eq!(e.class, ErrorClass::NotFound, "{e}");
    assert!(e.message.contains("ACQ.TRADE_NOT_EXIST"), "{e}");
    assert_eq!(api.movements(&pay), vec![cny(100)]);
}

#[tokio::test]
async fn a_timeout_leads_to_a_refund_query_not_a_second_refund() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(10_000));
    let req = refund(&pay, cny(4_500));
    let k = key("k-lost");
    let lookup = RefundLookup::Key {
        payment_id: pay.clone(),
        key: k.clone(),
    };
    assert_eq!(
        payment.refund_status(&lookup).await.unwrap().status,
        RefundStatus::NotFound
    );
    api.lose_next_answer();
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    let state = payment.refund_status(&lookup).await.unwrap();
    assert_eq!(state.status, RefundStatus::Succeeded);
    assert_eq!(
        api.refund_calls().await.len(),
        1,
        "no second refund was sent"
    );
    assert_eq!(api.movements(&pay), vec![cny(4_500)]);
    // An unknown trade on a lookup by key means no refund was made either.
    let none = payment
        .refund_status(&RefundLookup::Key {
            payment_id: "no-such-trade".into(),
            key: k,
        })
        .await
        .unwrap();
    assert_eq!(none.status, RefundStatus::NotFound);
}

#[tokio::test]
async fn an_answer_not_signed_by_alipay_is_not_believed() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(10_000));
    api.forge_next_answer();
    let e = payment
        .refund(&refund(&pay, cny(100)), &key("k-forged"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    assert!(e.message.contains("does not verify"), "{e}");
}

#[tokio::test]
async fn a_foreign_refund_id_is_refused() {
    let (_api, payment) = setup().await;
    let e = payment
        .refund_status(&RefundLookup::Id("re_123".into()))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
}

// ---------------------------------------------------------------- notifications

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

#[test]
fn a_valid_notification_gives_the_catalogue_event_and_acks_success() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let (h, body) = common::notification(&keys().alipay, common::fixture_params(), now());
    let e = v.verify(&h, &body, now()).unwrap().unwrap();
    assert_eq!(e.dedupe_id, "ac05099524730693a8b330c5ecf72da9786");
    assert_eq!(e.name, "payment.refund.succeeded");
    assert_eq!(e.correlation, "70501111111S0011110001:so-88-refund-fwd-0");
    assert_eq!(
        e.payload,
        json!({
            "refund_id": "70501111111S0011110001:so-88-refund-fwd-0",
            "payment_id": "70501111111S0011110001",
            "amount": {"minor": 2500, "currency": "CNY"},
            "status": "succeeded",
        })
    );
    assert_eq!(v.ack_body(), "success");
}

#[test]
fn a_payment_notification_is_acknowledged_and_dropped() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let params: Vec<(String, String)> = common::fixture_params()
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "refund_fee" | "gmt_refund" | "out_biz_no"))
        .collect();
    let (h, body) = common::notification(&keys().alipay, params, now());
    assert_eq!(v.verify(&h, &body, now()), Ok(None));
}

#[test]
fn an_invalid_signature_is_refused() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    // Signed with a key that is not Alipay's (the classic mistake: the app's own key).
    let (h, body) = common::notification(&keys().stranger, common::fixture_params(), now());
    assert_eq!(v.verify(&h, &body, now()), Err(WebhookError::BadSignature));
    // A changed amount after signing.
    let (h, body) = common::notification(&keys().alipay, common::fixture_params(), now());
    let text = String::from_utf8(body)
        .unwrap()
        .replace("refund_fee=25.00", "refund_fee=95.00");
    assert_eq!(
        v.verify(&h, text.as_bytes(), now()),
        Err(WebhookError::BadSignature)
    );
    // No sign at all.
    let body = serde_urlencoded::to_string(common::fixture_params()).unwrap();
    assert_eq!(
        v.verify(&h, body.as_bytes(), now()),
        Err(WebhookError::BadSignature)
    );
    // Not a form.
    let (_, body) = common::notification(&keys().alipay, common::fixture_params(), now());
    assert_eq!(
        v.verify(&Headers::new(), &body, now()),
        Err(WebhookError::MissingHeader("Content-Type".into()))
    );
}

#[test]
fn a_replayed_notification_is_refused_once_stale() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let (h, body) = common::notification(&keys().alipay, common::fixture_params(), now());
    let a = v
        .verify(&h, &body, now() + Duration::from_secs(200))
        .unwrap();
    let b = v
        .verify(&h, &body, now() + Duration::from_secs(250))
        .unwrap();
    assert_eq!(a.unwrap().dedupe_id, b.unwrap().dedupe_id);
    assert_eq!(
        v.verify(&h, &body, now() + Duration::from_secs(3600)),
        Err(WebhookError::StaleTimestamp {
            age_secs: 3600,
            tolerance_secs: 300
        })
    );
}

#[test]
fn the_default_window_covers_alipays_resends() {
    let mut registry = Registry::new();
    aftersales_adapter_alipay::register(&mut registry);
    let mut settings = common::config("http://127.0.0.1:9").settings;
    settings
        .as_object_mut()
        .unwrap()
        .remove("webhook_tolerance");
    let v = registry
        .build(
            &AdapterConfig::with_settings("alipay", settings),
            &common::env,
        )
        .unwrap()
        .webhooks
        .unwrap();
    let (h, body) = common::notification(&keys().alipay, common::fixture_params(), now());
    assert!(
        v.verify(&h, &body, now() + Duration::from_secs(24 * 3600))
            .is_ok()
    );
    assert!(matches!(
        v.verify(&h, &body, now() + Duration::from_secs(26 * 3600)),
        Err(WebhookError::StaleTimestamp { .. })
    ));
}

#[test]
fn keys_are_read_as_pem_or_bare_base64_and_errors_hide_them() {
    let mut registry = Registry::new();
    aftersales_adapter_alipay::register(&mut registry);
    let config = common::config("http://127.0.0.1:9");
    // The application's own public key, in PEM, where Alipay's belongs: it builds (a public
    // key is a public key) but then refuses Alipay's genuine notifications.
    let wrong = registry
        .build(&config, &|name| match name {
            "ALIPAY_PUBLIC_KEY" => Some(keys().app_public_pem.clone()),
            other => common::env(other),
        })
        .unwrap()
        .webhooks
        .unwrap();
    let (h, body) = common::notification(&keys().alipay, common::fixture_params(), now());
    assert_eq!(
        wrong.verify(&h, &body, now()),
        Err(WebhookError::BadSignature)
    );
    let err = registry
        .build(&config, &|name| match name {
            "ALIPAY_APP_PRIVATE_KEY" => Some("MIIEvQIBADAN-not-a-key".into()),
            other => common::env(other),
        })
        .unwrap_err();
    assert!(err.to_string().contains("private_key_env"), "{err}");
    assert!(!err.to_string().contains("MIIEvQIBADAN"), "{err}");
}

/// The `kind = "alipay"` blocks of the README and of `docs/adapters.md` build.
#[test]
fn the_documented_configuration_builds() {
    let mut registry = Registry::new();
    aftersales_adapter_alipay::register(&mut registry);
    let env = |name: &str| {
        if name.contains("PRIVATE") {
            Some(keys().app_private_b64.clone())
        } else if name.contains("PUBLIC") {
            Some(keys().alipay_public_b64.clone())
        } else {
            None
        }
    };
    let mut built = 0;
    for doc in [
        include_str!("../README.md"),
        include_str!("../../../docs/adapters.md"),
    ] {
        for block in doc.split("```toml\n").skip(1) {
            let text = &block[..block.find("```").unwrap()];
            let Ok(value) = toml::from_str::<serde_json::Value>(text) else {
                continue;
            };
            for config in value["adapters"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(_, c)| c)
            {
                if config["kind"] == "alipay" {
                    let config: AdapterConfig = serde_json::from_value(config.clone()).unwrap();
                    let b = registry.build(&config, &env).unwrap();
                    assert!(b.payment.is_some() && b.webhooks.is_some());
                    built += 1;
                }
            }
        }
    }
    assert_eq!(built, 2);
}
