//! Stripe-specific behaviour against the mock: the key on the wire, each error class, a lost
//! answer resolved by a status query, webhook signatures and replays, amounts.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::types::Refund;
use aftersales_adapter::{
    AdapterConfig, ErrorClass, Headers, IdempotencyKey, Payment, RefundLookup, RefundStatus,
    Registry, WebhookError,
};
use aftersales_money::{Currency, Money};
use common::{MockStripe, OLD_WEBHOOK_SECRET, WEBHOOK_SECRET, build};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

fn usd(minor: i64) -> Money {
    Money::new(minor, Currency::USD)
}

fn refund(payment_id: &aftersales_adapter::ids::PaymentId, amount: Money) -> Refund {
    Refund {
        payment_id: payment_id.clone(),
        amount,
        reason: Some("damaged".into()),
        service_order_id: Some("so-88".into()),
    }
}

fn key(k: &str) -> IdempotencyKey {
    IdempotencyKey::new(k).unwrap()
}

async fn setup() -> (MockStripe, Arc<dyn Payment>) {
    let api = MockStripe::start().await;
    let payment = build(&api.uri()).payment.unwrap();
    (api, payment)
}

fn form(r: &wiremock::Request) -> Vec<(String, String)> {
    serde_urlencoded::from_bytes(&r.body).unwrap()
}

#[tokio::test]
async fn the_key_arrives_unchanged_and_a_repeat_returns_the_first_refund() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(usd(10_000));
    let req = refund(&pay, usd(2_500));
    let k = key("so-88-refund-fwd-0");
    let first = payment.refund(&req, &k).await.unwrap();
    let again = payment.refund(&req, &k).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(first.status, RefundStatus::Succeeded);
    assert_eq!(api.movements(&pay), vec![usd(2_500)]);
    let posts = api.refund_posts().await;
    assert_eq!(posts.len(), 2);
    for r in &posts {
        assert_eq!(r.headers["idempotency-key"], "so-88-refund-fwd-0");
        assert_eq!(r.headers["stripe-version"], "2024-10-28.acacia");
        assert_eq!(
            r.headers["content-type"],
            "application/x-www-form-urlencoded"
        );
        assert_eq!(
            form(r),
            vec![
                ("payment_intent".to_owned(), pay.to_string()),
                ("amount".to_owned(), "2500".to_owned()),
                ("reason".to_owned(), "requested_by_customer".to_owned()),
                (
                    "metadata[aftersales_key]".to_owned(),
                    "so-88-refund-fwd-0".to_owned()
                ),
                ("metadata[service_order_id]".to_owned(), "so-88".to_owned()),
                (
                    "metadata[aftersales_reason]".to_owned(),
                    "damaged".to_owned()
                ),
            ]
        );
    }
}

#[tokio::test]
async fn a_503_and_a_429_are_transient_with_retry_after_and_the_retry_pays_once() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(usd(10_000));
    let req = refund(&pay, usd(1_000));
    let k = key("k-transient");
    api.fail_next(503, None);
    api.fail_next(429, Some("7"));
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient { retry_after: None });
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert!(api.movements(&pay).is_empty());
    payment.refund(&req, &k).await.unwrap();
    assert_eq!(api.movements(&pay), vec![usd(1_000)]);
}

#[tokio::test]
async fn a_refund_of_a_payment_stripe_does_not_know_is_not_found() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(usd(1_000));
    let unknown = aftersales_adapter::ids::PaymentId::new("pi_nobody");
    let e = payment
        .refund(&refund(&unknown, usd(100)), &key("k-unknown"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::NotFound, "{e}");
    assert!(e.message.contains("resource_missing"), "{e}");
    assert!(api.movements(&pay).is_empty());
}

#[tokio::test]
async fn an_over_refund_is_permanent_and_names_stripes_code() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(usd(1_000));
    let e = payment
        .refund(&refund(&pay, usd(1_001)), &key("k-over"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(
        e.message
            .starts_with("stripe 400 invalid_request_error amount_too_large:"),
        "{e}"
    );
    // The same key with other parameters is Stripe's idempotency error, also permanent.
    payment
        .refund(&refund(&pay, usd(100)), &key("k-reuse"))
        .await
        .unwrap();
    let e = payment
        .refund(&refund(&pay, usd(200)), &key("k-reuse"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("idempotency_error"), "{e}");
    assert_eq!(api.movements(&pay), vec![usd(100)]);
}

#[tokio::test]
async fn a_timeout_leads_to_a_status_query_by_key_not_a_second_refund() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(usd(10_000));
    let req = refund(&pay, usd(4_500));
    let k = key("k-lost");
    // Before anything: the key is unknown.
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
    assert_eq!(api.movements(&pay), vec![usd(4_500)]);
    assert_eq!(
        api.refund_posts().await.len(),
        1,
        "no second refund was sent"
    );
    // The status by id finds the same refund.
    let by_id = payment
        .refund_status(&RefundLookup::Id(state.refund_id.clone().unwrap()))
        .await
        .unwrap();
    assert_eq!(by_id, state);
}

#[tokio::test]
async fn a_500_is_an_unknown_outcome_and_stripe_replays_it_so_the_query_settles_it() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(usd(10_000));
    let req = refund(&pay, usd(3_000));
    let k = key("k-500");
    api.server_error_after_applying_next();
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    // A retry with the same key gets the saved 500 again, and moves nothing.
    let e = payment.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome);
    let state = payment
        .refund_status(&RefundLookup::Key {
            payment_id: pay.clone(),
            key: k.clone(),
        })
        .await
        .unwrap();
    assert_eq!(state.status, RefundStatus::Succeeded);
    assert_eq!(api.movements(&pay), vec![usd(3_000)]);
}

#[tokio::test]
async fn the_key_lookup_pages_through_many_refunds() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(usd(1_000_000));
    for i in 0..105 {
        payment
            .refund(&refund(&pay, usd(1)), &key(&format!("k-many-{i}")))
            .await
            .unwrap();
    }
    // The first refund is the oldest: on the second page, newest first.
    let state = payment
        .refund_status(&RefundLookup::Key {
            payment_id: pay.clone(),
            key: key("k-many-0"),
        })
        .await
        .unwrap();
    assert_eq!(state.status, RefundStatus::Succeeded);
    let lists = api
        .requests()
        .await
        .into_iter()
        .filter(|r| r.method.as_str() == "GET")
        .count();
    assert_eq!(lists, 2);
}

#[tokio::test]
async fn pending_refunds_finish_by_query() {
    let (api, payment) = setup().await;
    api.set_asynchronous(true);
    let pay = api.create_payment(usd(10_000));
    let out = payment
        .refund(&refund(&pay, usd(500)), &key("k-pending"))
        .await
        .unwrap();
    assert_eq!(out.status, RefundStatus::Pending);
    let by_id = RefundLookup::Id(out.refund_id.clone());
    api.settle(out.refund_id.as_str(), "requires_action");
    assert_eq!(
        payment.refund_status(&by_id).await.unwrap().status,
        RefundStatus::RequiresAction
    );
    api.settle(out.refund_id.as_str(), "canceled");
    assert_eq!(
        payment.refund_status(&by_id).await.unwrap().status,
        RefundStatus::Canceled
    );
    let e = payment
        .refund_status(&RefundLookup::Id("re_missing".into()))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
}

#[tokio::test]
async fn zero_decimal_and_special_currencies_go_out_in_stripes_units() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(Money::new(10_000, Currency::JPY));
    payment
        .refund(&refund(&pay, Money::new(500, Currency::JPY)), &key("k-jpy"))
        .await
        .unwrap();
    let posts = api.refund_posts().await;
    assert!(form(&posts[0]).contains(&("amount".to_owned(), "500".to_owned())));
    // An amount Stripe cannot carry exactly is refused before anything is sent.
    let e = payment
        .refund(
            &refund(&pay, Money::new(5_124, Currency::new("KWD").unwrap())),
            &key("k-kwd"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    let e = payment
        .refund(&refund(&pay, Money::new(0, Currency::JPY)), &key("k-zero"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert_eq!(api.refund_posts().await.len(), 1);
}

#[tokio::test]
async fn a_refund_in_another_currency_than_asked_is_flagged() {
    let (api, payment) = setup().await;
    let pay = api.create_payment(usd(10_000));
    let e = payment
        .refund(&refund(&pay, Money::new(100, Currency::EUR)), &key("k-eur"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(e.message.contains("check it by hand"), "{e}");
}

#[tokio::test]
async fn a_wrong_api_key_is_permanent() {
    let api = MockStripe::start().await;
    let mut registry = Registry::new();
    aftersales_adapter_stripe::register(&mut registry);
    let config = AdapterConfig::with_settings(
        "stripe",
        json!({"base_url": api.uri(), "api_key_env": "K", "timeout": "1s"}),
    );
    let payment = registry
        .build(&config, &|_| Some("sk_test_wrong".into()))
        .unwrap()
        .payment
        .unwrap();
    let pay = api.create_payment(usd(100));
    let e = payment
        .refund(&refund(&pay, usd(1)), &key("k-auth"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert!(!format!("{e:?}").contains("sk_test_wrong"));
}

#[tokio::test]
async fn nothing_listening_is_transient() {
    let payment = build("http://127.0.0.1:9").payment.unwrap();
    let e = payment
        .refund(&refund(&"pi_x".into(), usd(1)), &key("k-refused"))
        .await
        .unwrap_err();
    assert!(matches!(e.class, ErrorClass::Transient { .. }), "{e}");
}

// ---------------------------------------------------------------- webhooks

const FIXTURE: &[u8] = include_bytes!("fixtures/refund_updated_succeeded.json");
const CHARGE_REFUNDED: &[u8] = include_bytes!("fixtures/charge_refunded.json");

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600)
}

fn sig(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn header(value: String) -> Headers {
    Headers::new().with("stripe-signature", value)
}

#[test]
fn a_valid_signature_gives_the_catalogue_event() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let t = 1_767_225_600;
    let h = header(format!("t={t},v1={}", sig(WEBHOOK_SECRET, t, FIXTURE)));
    let e = v.verify(&h, FIXTURE, now()).unwrap().unwrap();
    assert_eq!(e.dedupe_id, "evt_1QAbCdEfGhIjKlMn");
    assert_eq!(e.name, "payment.refund.succeeded");
    assert_eq!(e.correlation, "re_3QAbCdEfGhIjKlMn0");
    assert_eq!(
        e.payload,
        json!({
            "refund_id": "re_3QAbCdEfGhIjKlMn0",
            "payment_id": "pi_3QAbCdEfGhIjKlMn",
            "service_order_id": "so-88",
            "amount": {"minor": 2500, "currency": "USD"},
            "status": "succeeded",
        })
    );
}

#[test]
fn any_of_several_v1_values_and_the_previous_secret_are_accepted() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let t = 1_767_225_600;
    let good = sig(WEBHOOK_SECRET, t, FIXTURE);
    let h = header(format!("t={t},v1={},v1={good}", "0".repeat(64)));
    assert!(v.verify(&h, FIXTURE, now()).unwrap().is_some());
    let old = sig(OLD_WEBHOOK_SECRET, t, FIXTURE);
    let h = header(format!("t={t},v1={old}"));
    assert!(v.verify(&h, FIXTURE, now()).unwrap().is_some());
}

#[test]
fn an_invalid_signature_is_refused() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let t = 1_767_225_600;
    for value in [
        format!("t={t},v1={}", sig("whsec_other", t, FIXTURE)),
        // The right signature under another scheme does not count.
        format!("t={t},v0={}", sig(WEBHOOK_SECRET, t, FIXTURE)),
        // Signed for another time.
        format!("t={},v1={}", t + 1, sig(WEBHOOK_SECRET, t, FIXTURE)),
        format!("v1={}", sig(WEBHOOK_SECRET, t, FIXTURE)),
        "garbage".to_owned(),
    ] {
        assert_eq!(
            v.verify(&header(value.clone()), FIXTURE, now()),
            Err(WebhookError::BadSignature),
            "{value}"
        );
    }
    assert_eq!(
        v.verify(&Headers::new(), FIXTURE, now()),
        Err(WebhookError::MissingHeader("Stripe-Signature".into()))
    );
}

#[test]
fn a_replayed_delivery_is_refused_once_stale() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let t = 1_767_225_600;
    let h = header(format!("t={t},v1={}", sig(WEBHOOK_SECRET, t, FIXTURE)));
    // Within five minutes, a repeat parses to the same dedupe id (the engine drops it).
    let a = v.verify(&h, FIXTURE, now()).unwrap().unwrap();
    let b = v
        .verify(&h, FIXTURE, now() + Duration::from_secs(299))
        .unwrap()
        .unwrap();
    assert_eq!(a.dedupe_id, b.dedupe_id);
    // Later, the same bytes are a replay.
    assert_eq!(
        v.verify(&h, FIXTURE, now() + Duration::from_secs(301)),
        Err(WebhookError::StaleTimestamp {
            age_secs: 301,
            tolerance_secs: 300
        })
    );
}

#[test]
fn events_the_engine_does_not_use_are_acknowledged_and_dropped() {
    let v = build("http://127.0.0.1:9").webhooks.unwrap();
    let t = 1_767_225_600;
    let h = header(format!(
        "t={t},v1={}",
        sig(WEBHOOK_SECRET, t, CHARGE_REFUNDED)
    ));
    assert_eq!(v.verify(&h, CHARGE_REFUNDED, now()), Ok(None));
    let pending = String::from_utf8(FIXTURE.to_vec())
        .unwrap()
        .replace("\"status\": \"succeeded\"", "\"status\": \"pending\"");
    let h = header(format!(
        "t={t},v1={}",
        sig(WEBHOOK_SECRET, t, pending.as_bytes())
    ));
    assert_eq!(v.verify(&h, pending.as_bytes(), now()), Ok(None));
    let failed = String::from_utf8(FIXTURE.to_vec())
        .unwrap()
        .replace("\"status\": \"succeeded\"", "\"status\": \"failed\"")
        .replace("\"currency\": \"usd\"", "\"currency\": \"jpy\"");
    let h = header(format!(
        "t={t},v1={}",
        sig(WEBHOOK_SECRET, t, failed.as_bytes())
    ));
    let e = v.verify(&h, failed.as_bytes(), now()).unwrap().unwrap();
    assert_eq!(e.name, "payment.refund.failed");
    assert_eq!(
        e.payload["amount"],
        json!({"minor": 2500, "currency": "JPY"})
    );
}

#[test]
fn a_missing_api_key_is_a_configuration_error_naming_the_variable() {
    let mut registry = Registry::new();
    aftersales_adapter_stripe::register(&mut registry);
    let config =
        AdapterConfig::with_settings("stripe", json!({"api_key_env": "STRIPE_SECRET_KEY"}));
    let err = registry.build(&config, &|_| None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "adapter `stripe`: environment variable `STRIPE_SECRET_KEY` (named by `api_key_env`) is not set"
    );
    let config =
        AdapterConfig::with_settings("stripe", json!({"api_key_env": "K", "api_kye": "typo"}));
    assert!(registry.build(&config, &|_| Some("x".into())).is_err());
}

/// The `kind = "stripe"` blocks of the README and of `docs/adapters.md` build.
#[test]
fn the_documented_configuration_builds() {
    let mut registry = Registry::new();
    aftersales_adapter_stripe::register(&mut registry);
    let env = |_: &str| Some("secret-for-tests".to_owned());
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
                if config["kind"] == "stripe" {
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
