//! ShipBob against the testkit: the warehouse suite on a stateful mock of the dated REST
//! API, and the webhook suite on signed `return.completed` deliveries.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use aftersales_adapter::{Headers, Secret, WebhookVerifier};
use aftersales_adapter_testkit::{
    Delivery, Outcome, Report, WebhookHarness, warehouse_conformance, webhook_conformance,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{MockShipBob, ShipBobHarness, WEBHOOK_SECRET, build};
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

#[tokio::test]
async fn warehouse_conforms() {
    let api = Arc::new(MockShipBob::start().await);
    let warehouse = build(&api.uri()).warehouse.unwrap();
    let next = Arc::new(Mutex::new(0));
    let report = warehouse_conformance(|| ShipBobHarness {
        api: api.clone(),
        warehouse: warehouse.clone(),
        next: next.clone(),
    })
    .await;
    assert_all_passed(&report);
}

/// ShipBob's side of a delivery (Standard Webhooks).
pub fn sign_with(secret: &str, id: &str, body: &[u8], at: SystemTime) -> Headers {
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
        .with("x-webhook-topic", "return.completed")
}

const FIXTURE: &[u8] = include_bytes!("fixtures/return_completed.json");

struct ShipBobWebhookHarness {
    verifier: Arc<dyn WebhookVerifier>,
}

impl WebhookHarness for ShipBobWebhookHarness {
    fn verifier(&self) -> Arc<dyn WebhookVerifier> {
        self.verifier.clone()
    }

    fn signed(&self, at: SystemTime) -> Delivery {
        (
            sign_with(WEBHOOK_SECRET, "msg_2tQ9kF1", FIXTURE, at),
            FIXTURE.to_vec(),
        )
    }

    fn signed_garbage(&self, at: SystemTime) -> Option<Delivery> {
        let body = br#"{"id": "not-a-return"}"#.to_vec();
        Some((sign_with(WEBHOOK_SECRET, "msg_garbage", &body, at), body))
    }

    fn tolerance(&self) -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
}

#[test]
fn webhooks_conform() {
    let verifier = build("http://127.0.0.1:9").webhooks.unwrap();
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_564_800);
    assert_all_passed(&webhook_conformance(
        &ShipBobWebhookHarness { verifier },
        now,
    ));
    // The secret type never prints.
    assert_eq!(format!("{:?}", Secret::new(WEBHOOK_SECRET)), "***");
}
