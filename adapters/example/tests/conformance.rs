//! Acme Pay against the testkit: the payment suite on the mock of Acme's API, the webhook
//! suite on signed deliveries, and the key forwarded unchanged.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::types::Refund;
use aftersales_adapter::{
    AdapterConfig, Built, Headers, IdempotencyKey, Payment, Registry, WebhookVerifier,
};
use aftersales_adapter_testkit::mock_payment::{MockPaymentApi, MockPaymentHarness};
use aftersales_adapter_testkit::{
    Delivery, Outcome, Report, WebhookHarness, payment_conformance, webhook_conformance,
};
use aftersales_money::{Currency, Money};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::json;
use sha2::Sha256;

const API_KEY: &str = "sk_test_acme";
const WEBHOOK_SECRET: &str = "whsec_acme";

/// Builds the adapter the way the binary does: registry, config, environment.
fn build(base_url: &str) -> Built {
    let mut registry = Registry::new();
    aftersales_adapter_example::register(&mut registry);
    let config = AdapterConfig::with_settings(
        "acme",
        json!({
            "base_url": base_url,
            "api_key_env": "ACME_PAY_KEY",
            "timeout": "1s",
            "webhook_secret_env": "ACME_PAY_WEBHOOK_SECRET",
        }),
    );
    let env = |name: &str| match name {
        "ACME_PAY_KEY" => Some(API_KEY.to_owned()),
        "ACME_PAY_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_owned()),
        _ => None,
    };
    registry.build(&config, &env).unwrap()
}

async fn payment_suite(asynchronous: bool) -> Report {
    let api = Arc::new(MockPaymentApi::start().await);
    api.require_bearer(API_KEY);
    api.set_asynchronous_refunds(asynchronous);
    let payment = build(&api.uri()).payment.unwrap();
    payment_conformance(|| MockPaymentHarness::new(api.clone(), payment.clone())).await
}

#[track_caller]
fn assert_all_passed(report: &Report) {
    report.assert_passed();
    let skipped: Vec<_> = report
        .checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .collect();
    assert!(skipped.is_empty(), "{report}");
}

#[tokio::test]
async fn payment_conforms() {
    assert_all_passed(&payment_suite(false).await);
}

#[tokio::test]
async fn payment_conforms_with_asynchronous_refunds() {
    assert_all_passed(&payment_suite(true).await);
}

#[tokio::test]
async fn the_key_arrives_unchanged_and_a_repeat_returns_the_first_refund() {
    let api = MockPaymentApi::start().await;
    let payment: Arc<dyn Payment> = build(&api.uri()).payment.unwrap();
    let pay = api.create_payment(Money::new(10_000, Currency::CNY));
    let req = Refund {
        payment_id: pay.clone(),
        amount: Money::new(2_500, Currency::CNY),
        reason: Some("damaged".into()),
        service_order_id: Some("so-88".into()),
    };
    let key = IdempotencyKey::new("so-88-refund-fwd-0").unwrap();
    let first = payment.refund(&req, &key).await.unwrap();
    let again = payment.refund(&req, &key).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(api.movements(&pay), vec![Money::new(2_500, Currency::CNY)]);
    let requests = api.requests().await;
    assert_eq!(requests.len(), 2);
    for r in &requests {
        assert_eq!(r.headers["idempotency-key"], "so-88-refund-fwd-0");
        assert_eq!(
            r.body_json::<serde_json::Value>().unwrap(),
            json!({"amount": 2500, "currency": "CNY", "reason": "damaged",
                   "metadata": {"service_order_id": "so-88"}})
        );
    }
}

// ---------------------------------------------------------------- webhooks

/// Acme's side of a delivery: `Acme-Signature: t=..,v1=hex(HMAC-SHA256(secret, "t.body"))`.
fn sign(body: &[u8], at: SystemTime) -> Headers {
    let t = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let mut mac = Hmac::<Sha256>::new_from_slice(WEBHOOK_SECRET.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    let sig = hex::encode(mac.finalize().into_bytes());
    Headers::new().with("Acme-Signature", format!("t={t},v1={sig}"))
}

const FIXTURE: &[u8] = include_bytes!("fixtures/refund_succeeded.json");

struct AcmeWebhookHarness {
    verifier: Arc<dyn WebhookVerifier>,
}

impl WebhookHarness for AcmeWebhookHarness {
    fn verifier(&self) -> Arc<dyn WebhookVerifier> {
        self.verifier.clone()
    }

    fn signed(&self, at: SystemTime) -> Delivery {
        (sign(FIXTURE, at), FIXTURE.to_vec())
    }

    fn signed_garbage(&self, at: SystemTime) -> Option<Delivery> {
        let body = br#"{"id": 1}"#.to_vec();
        Some((sign(&body, at), body))
    }

    fn tolerance(&self) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
}

#[test]
fn webhooks_conform() {
    let verifier = build("http://127.0.0.1:9").webhooks.unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    assert_all_passed(&webhook_conformance(&AcmeWebhookHarness { verifier }, now));
}

#[test]
fn a_captured_refund_event_becomes_the_catalogue_event() {
    let verifier = build("http://127.0.0.1:9").webhooks.unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    let event = verifier
        .verify(&sign(FIXTURE, now), FIXTURE, now)
        .unwrap()
        .unwrap();
    assert_eq!(event.dedupe_id, "evt_1Q2w3E");
    assert_eq!(event.name, "payment.refund.succeeded");
    assert_eq!(event.correlation, "re_41");
    assert_eq!(
        event.payload,
        json!({
            "refund_id": "re_41",
            "payment_id": "pay_17",
            "service_order_id": "so-88",
            "amount": {"minor": 2500, "currency": "CNY"},
            "status": "succeeded",
        })
    );
    // A genuine event the engine does not use is acknowledged and dropped.
    let other = br#"{"id": "evt_2", "type": "payout.paid", "data": {"id": "po_1", "payment_id": "-", "amount": 1, "currency": "CNY"}}"#;
    assert_eq!(verifier.verify(&sign(other, now), other, now), Ok(None));
}

#[test]
fn a_missing_api_key_is_a_configuration_error_naming_the_variable() {
    let mut registry = Registry::new();
    aftersales_adapter_example::register(&mut registry);
    let config = AdapterConfig::with_settings(
        "acme",
        json!({"base_url": "https://api.acmepay.example", "api_key_env": "ACME_PAY_KEY"}),
    );
    let err = registry.build(&config, &|_| None).unwrap_err();
    assert_eq!(
        err.to_string(),
        "adapter `acme`: environment variable `ACME_PAY_KEY` (named by `api_key_env`) is not set"
    );
}

/// The `kind = "acme"` blocks of the README and of `docs/adapters.md` build.
#[test]
fn the_documented_configuration_builds() {
    let mut registry = Registry::new();
    aftersales_adapter_example::register(&mut registry);
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
                if config["kind"] == "acme" {
                    let config: AdapterConfig = serde_json::from_value(config.clone()).unwrap();
                    registry.build(&config, &env).unwrap();
                    built += 1;
                }
            }
        }
    }
    assert_eq!(built, 2);
}
