//! Stripe against the testkit: the payment suite on a mock of the Refunds API (synchronous,
//! asynchronous and zero-decimal), and the webhook suite on signed deliveries.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::{Headers, WebhookVerifier};
use aftersales_adapter_testkit::{
    Delivery, Outcome, Report, WebhookHarness, payment_conformance, webhook_conformance,
};
use aftersales_money::Currency;
use common::{MockStripe, StripeHarness, WEBHOOK_SECRET, build};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

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

async fn payment_suite(asynchronous: bool, currency: Currency) -> Report {
    let api = Arc::new(MockStripe::start().await);
    api.set_asynchronous(asynchronous);
    let payment = build(&api.uri()).payment.unwrap();
    payment_conformance(|| StripeHarness {
        api: api.clone(),
        payment: payment.clone(),
        currency,
    })
    .await
}

#[tokio::test]
async fn payment_conforms() {
    assert_all_passed(&payment_suite(false, Currency::USD).await);
}

#[tokio::test]
async fn payment_conforms_with_pending_refunds() {
    assert_all_passed(&payment_suite(true, Currency::USD).await);
}

#[tokio::test]
async fn payment_conforms_in_a_zero_decimal_currency() {
    assert_all_passed(&payment_suite(false, Currency::JPY).await);
}

/// Stripe's side of a delivery.
pub fn sign_with(secret: &str, body: &[u8], at: SystemTime) -> String {
    let t = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

fn sign(body: &[u8], at: SystemTime) -> Headers {
    let t = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs();
    let sig = sign_with(WEBHOOK_SECRET, body, at);
    Headers::new().with("Stripe-Signature", format!("t={t},v1={sig},v0=ignored"))
}

const FIXTURE: &[u8] = include_bytes!("fixtures/refund_updated_succeeded.json");

struct StripeWebhookHarness {
    verifier: Arc<dyn WebhookVerifier>,
}

impl WebhookHarness for StripeWebhookHarness {
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
    assert_all_passed(&webhook_conformance(
        &StripeWebhookHarness { verifier },
        now,
    ));
}
