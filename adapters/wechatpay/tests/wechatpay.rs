//! WeChat Pay-specific behaviour against the mock: the key as `out_refund_no`, fen, signed
//! requests and answers, each error class, a lost answer settled by the status query,
//! notification signatures, decryption and replays.
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
use common::{MockWechat, OLD_PLATFORM_SERIAL, PLATFORM_SERIAL, build, keys};
use serde_json::{Value, json};

fn cny(fen: i64) -> Money {
    Money::new(fen, Currency::CNY)
}

fn refund(payment_id: &PaymentId, amount: Money) -> Refund {
    Refund {
        payment_id: payment_id.clone(),
        amount,
        reason: Some("商品已退回".into()),
        service_order_id: Some("so-88".into()),
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

async fn setup() -> (MockWechat, Arc<dyn Payment>) {
    let api = MockWechat::start().await;
    let payment = build(&api.uri()).payment.unwrap();
    (api, payment)
}

#[tokio::test]
async fn the_key_is_the_out_refund_no_and_a_repeat_returns_the_first_refund() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(10_000));
    let req = refund(&pay, cny(2_501));
    let k = key("so-88-refund-fwd-0");
    let first = payment.refund(&req, &k).await.unwrap();
    let again = payment.refund(&req, &k).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.refund_id.as_str(), "so-88-refund-fwd-0");
    assert_eq!(api.movements(&pay), vec![cny(2_501)]);
    let posts = api.refund_posts().await;
    assert_eq!(posts.len(), 2);
    for p in &posts {
        assert!(
            p.headers["authorization"]
                .to_str()
                .unwrap()
                .starts_with("WECHATPAY2-SHA256-RSA2048 mchid=\"1900000109\",")
        );
        assert_eq!(
            serde_json::from_slice::<Value>(&p.body).unwrap(),
            json!({
                "out_trade_no": pay.as_str(),
                "out_refund_no": "so-88-refund-fwd-0",
                "reason": "商品已退回",
                "notify_url": "https://shop.example.com/v1/webhooks/cn_apparel.payment",
                "amount": {"refund": 2501, "total": 10000, "currency": "CNY"},
            })
        );
    }
}

#[tokio::test]
async fn statuses_map_and_abnormal_is_not_final() {
    let (api, payment) = setup().await;
    api.set_asynchronous(true);
    let pay = api.create_payment(cny(10_000));
    let out = payment
        .refund(&refund(&pay, cny(100)), &key("k-async"))
        .await
        .unwrap();
    assert_eq!(out.status, RefundStatus::Pending);
    let by_id = RefundLookup::Id(out.refund_id.clone());
    for (wechat, ours) in [
        ("ABNORMAL", RefundStatus::RequiresAction),
        ("SUCCESS", RefundStatus::Succeeded),
        ("CLOSED", RefundStatus::Failed),
    ] {
        api.settle("k-async", wechat);
        let state = payment.refund_status(&by_id).await.unwrap();
        assert_eq!(state.status, ours, "{wechat}");
        assert_eq!(state.status.is_final(), wechat != "ABNORMAL");
    }
}

#[tokio::test]
async fn rate_limits_and_outages_are_transient_and_the_retry_pays_once() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(10_000));
    let req = refund(&pay, cny(1_000));
    let k = key("k-transient");
    api.fail_next(429, "FREQUENCY_LIMITED");
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::Transient { .. }), "{e}");
    assert_eq!(
        e.message,
        "wechatpay 429 FREQUENCY_LIMITED: 系统繁忙，请稍后重试"
    );
    api.fail_next(503, "SYSTEM_ERROR");
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert!(matches!(e.class, ErrorClass::Transient { .. }), "{e}");
    api.fail_next(500, "SYSTEM_ERROR");
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
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
    assert!(
        e.message.starts_with("wechatpay 400 INVALID_REQUEST"),
        "{e}"
    );
    api.fail_next(403, "NOT_ENOUGH");
    let e = payment
        .refund(&refund(&pay, cny(10)), &key("k-balance"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    // An unknown order is refused (as not found) before any refund is sent.
    let e = payment
        .refund(&refund(&"no-such-order".into(), cny(10)), &key("k-none"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::NotFound, "{e}");
    // Other currencies and non-positive amounts never leave.
    for (m, k) in [(Money::new(10, Currency::USD), "k-usd"), (cny(0), "k-zero")] {
        let e = payment.refund(&refund(&pay, m), &key(k)).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::Permanent);
    }
    assert!(api.movements(&pay).is_empty());
    assert_eq!(api.refund_posts().await.len(), 2);
}

#[tokio::test]
async fn a_timeout_leads_to_a_status_query_not_a_second_refund() {
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
    assert_eq!(state.refund_id.as_ref().map(|r| r.as_str()), Some("k-lost"));
    assert_eq!(
        api.refund_posts().await.len(),
        1,
        "no second refund was sent"
    );
    assert_eq!(api.movements(&pay), vec![cny(4_500)]);
    // The key belongs to that payment only.
    let other = api.create_payment(cny(10_000));
    let e = payment
        .refund_status(&RefundLookup::Key {
            payment_id: other,
            key: k,
        })
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
}

#[tokio::test]
async fn an_answer_not_signed_by_wechat_pay_is_not_believed() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(10_000));
    let k = key("k-forged");
    api.forge_next_answer();
    let e = payment
        .refund(&refund(&pay, cny(100)), &k)
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    assert!(e.message.contains("does not verify"), "{e}");
    // The genuine status settles it.
    let state = payment
        .refund_status(&RefundLookup::Key {
            payment_id: pay,
            key: k,
        })
        .await
        .unwrap();
    assert_eq!(state.status, RefundStatus::Succeeded);
}

#[tokio::test]
async fn fen_amounts_go_out_as_integers() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(cny(1));
    payment
        .refund(&refund(&pay, cny(1)), &key("k-one-fen"))
        .await
        .unwrap();
    let body: Value = serde_json::from_slice(&api.refund_posts().await[0].body).unwrap();
    assert_eq!(
        body["amount"],
        json!({"refund": 1, "total": 1, "currency": "CNY"})
    );
    assert_eq!(api.movements(&pay), vec![cny(1)]);
}

// ---------------------------------------------------------------- notifications

const RESOURCE: &[u8] = include_bytes!("fixtures/refund_success_resource.json");

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn resource() -> Value {
    serde_json::from_slice(RESOURCE).unwrap()
}

#[test]
fn a_valid_notification_decrypts_into_the_catalogue_event() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let body = common::notification_body("EV-1", "REFUND.SUCCESS", &resource());
    let h = common::notification_headers(&keys().platform, PLATFORM_SERIAL, &body, now());
    let e = v.verify(&h, &body, now()).unwrap().unwrap();
    assert_eq!(e.dedupe_id, "EV-1");
    assert_eq!(e.name, "payment.refund.succeeded");
    assert_eq!(e.correlation, "so-88-refund-fwd-0");
    assert_eq!(
        e.payload,
        json!({
            "refund_id": "so-88-refund-fwd-0",
            "payment_id": "1217752501201407033233368018",
            "amount": {"minor": 2500, "currency": "CNY"},
            "status": "succeeded",
        })
    );
    // The previous WeChat Pay key still verifies during a rotation.
    let h = common::notification_headers(&keys().old_platform, OLD_PLATFORM_SERIAL, &body, now());
    assert!(v.verify(&h, &body, now()).unwrap().is_some());
}

#[test]
fn closed_fails_and_abnormal_is_dropped() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let mut r = resource();
    r["refund_status"] = "CLOSED".into();
    let body = common::notification_body("EV-2", "REFUND.CLOSED", &r);
    let h = common::notification_headers(&keys().platform, PLATFORM_SERIAL, &body, now());
    assert_eq!(
        v.verify(&h, &body, now()).unwrap().unwrap().name,
        "payment.refund.failed"
    );
    r["refund_status"] = "ABNORMAL".into();
    let body = common::notification_body("EV-3", "REFUND.ABNORMAL", &r);
    let h = common::notification_headers(&keys().platform, PLATFORM_SERIAL, &body, now());
    assert_eq!(v.verify(&h, &body, now()), Ok(None));
    let body = common::notification_body("EV-4", "TRANSACTION.SUCCESS", &r);
    let h = common::notification_headers(&keys().platform, PLATFORM_SERIAL, &body, now());
    assert_eq!(v.verify(&h, &body, now()), Ok(None));
}

#[test]
fn an_invalid_signature_is_refused() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let body = common::notification_body("EV-1", "REFUND.SUCCESS", &resource());
    // Signed by a key WeChat Pay does not own.
    let h = common::notification_headers(&keys().stranger, PLATFORM_SERIAL, &body, now());
    assert_eq!(v.verify(&h, &body, now()), Err(WebhookError::BadSignature));
    // A genuine signature under a serial we do not know.
    let h = common::notification_headers(&keys().platform, "PUB_KEY_ID_UNKNOWN", &body, now());
    assert_eq!(v.verify(&h, &body, now()), Err(WebhookError::BadSignature));
    // The old key's signature presented as the new serial.
    let h = common::notification_headers(&keys().old_platform, PLATFORM_SERIAL, &body, now());
    assert_eq!(v.verify(&h, &body, now()), Err(WebhookError::BadSignature));
    // A missing header is named.
    let h: Headers = common::notification_headers(&keys().platform, PLATFORM_SERIAL, &body, now())
        .iter()
        .filter(|(n, _)| *n != "Wechatpay-Nonce")
        .collect();
    assert_eq!(
        v.verify(&h, &body, now()),
        Err(WebhookError::MissingHeader("Wechatpay-Nonce".into()))
    );
}

#[test]
fn a_replayed_notification_is_refused_once_stale() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let body = common::notification_body("EV-1", "REFUND.SUCCESS", &resource());
    let h = common::notification_headers(&keys().platform, PLATFORM_SERIAL, &body, now());
    let a = v
        .verify(&h, &body, now() + Duration::from_secs(60))
        .unwrap()
        .unwrap();
    let b = v
        .verify(&h, &body, now() + Duration::from_secs(120))
        .unwrap()
        .unwrap();
    assert_eq!(a.dedupe_id, b.dedupe_id);
    assert_eq!(
        v.verify(&h, &body, now() + Duration::from_secs(600)),
        Err(WebhookError::StaleTimestamp {
            age_secs: 600,
            tolerance_secs: 300
        })
    );
}

#[test]
fn a_resource_that_does_not_decrypt_is_malformed() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let mut envelope: Value = serde_json::from_slice(&common::notification_body(
        "EV-9",
        "REFUND.SUCCESS",
        &resource(),
    ))
    .unwrap();
    envelope["resource"]["associated_data"] = "tampered".into();
    let body = serde_json::to_vec(&envelope).unwrap();
    let h = common::notification_headers(&keys().platform, PLATFORM_SERIAL, &body, now());
    assert!(matches!(
        v.verify(&h, &body, now()),
        Err(WebhookError::MalformedBody(_))
    ));
}

#[test]
fn configuration_errors_name_the_setting_not_the_secret() {
    let mut registry = Registry::new();
    aftersales_adapter_wechatpay::register(&mut registry);
    let config = common::config("http://127.0.0.1:9");
    let err = registry
        .build(&config, &|name| match name {
            "WECHATPAY_APIV3_KEY" => Some("too-short-secret".into()),
            other => common::env(other),
        })
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "adapter `wechatpay`: invalid settings: apiv3_key_env: the APIv3 key must be 32 bytes"
    );
    let err = registry
        .build(&config, &|name| match name {
            "WECHATPAY_MERCHANT_KEY" => Some("not a key".into()),
            other => common::env(other),
        })
        .unwrap_err();
    assert!(err.to_string().contains("private_key_env"), "{err}");
    assert!(!err.to_string().contains("not a key"));
    let mut settings = config.settings.clone();
    settings["notify_url"] = "http://shop.example.com/notify?x=1".into();
    let err = registry
        .build(
            &AdapterConfig::with_settings("wechatpay", settings),
            &common::env,
        )
        .unwrap_err();
    assert!(err.to_string().contains("notify_url"), "{err}");
}

/// The `kind = "wechatpay"` blocks of the README and of `docs/adapters.md` build.
#[test]
fn the_documented_configuration_builds() {
    let mut registry = Registry::new();
    aftersales_adapter_wechatpay::register(&mut registry);
    let env = |name: &str| {
        if name.contains("PRIVATE_KEY") {
            Some(keys().merchant_private_pem.clone())
        } else if name.contains("APIV3") {
            Some(common::APIV3_KEY.to_owned())
        } else if name.contains("PUBLIC_KEY") {
            Some(keys().platform_public_pem.clone())
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
                if config["kind"] == "wechatpay" {
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

#[test]
fn validation_builds_without_keys_and_reports_the_capabilities() {
    let mut registry = aftersales_adapter::Registry::new();
    aftersales_adapter_wechatpay::register(&mut registry);
    // No key is in the environment and none is parsed: validation needs none.
    let built = registry
        .build_for_validation(&common::config("http://127.0.0.1:9"))
        .unwrap();
    let payment = built.payment.unwrap();
    assert_eq!(payment.platform(), "wechatpay");
    assert!(payment.capabilities().supports("payment.refund"));
    assert!(built.webhooks.is_none());
    // Settings that need no secret are still checked.
    let mut bad = common::config("http://127.0.0.1:9");
    bad.settings["notify_url"] = "http://plain.example.com/hook".into();
    let err = registry.build_for_validation(&bad).err().unwrap();
    assert!(err.to_string().contains("notify_url"), "{err}");
}
