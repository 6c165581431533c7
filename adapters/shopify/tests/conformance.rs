//! Shopify against the testkit: the order suite on a stateful mock of the Admin GraphQL API,
//! and the webhook suite on signed `refunds/create` deliveries.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::{Headers, WebhookVerifier};
use aftersales_adapter_testkit::{
    Delivery, Outcome, Report, WebhookHarness, order_conformance, webhook_conformance,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::{CLIENT_SECRET, MockShopify, ShopifyHarness, build};
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
async fn order_system_conforms() {
    let api = Arc::new(MockShopify::start().await);
    let order = build(&api.uri()).order.unwrap();
    let report = order_conformance(|| ShopifyHarness {
        api: api.clone(),
        order: order.clone(),
    })
    .await;
    assert_all_passed(&report);
}

/// RFC 3339 in UTC for a Unix time, as Shopify writes `X-Shopify-Triggered-At`.
pub fn rfc3339(at: SystemTime) -> String {
    let secs = at.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Civil date from days (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.000Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Shopify's side of a delivery.
pub fn sign_with(secret: &str, id: &str, topic: &str, body: &[u8], at: SystemTime) -> Headers {
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
        .with("X-Shopify-Shop-Domain", "aftersales-test.myshopify.com")
        .with("X-Shopify-API-Version", "2026-01")
}

const FIXTURE: &[u8] = include_bytes!("fixtures/refunds_create.json");

struct ShopifyWebhookHarness {
    verifier: Arc<dyn WebhookVerifier>,
}

impl WebhookHarness for ShopifyWebhookHarness {
    fn verifier(&self) -> Arc<dyn WebhookVerifier> {
        self.verifier.clone()
    }

    fn signed(&self, at: SystemTime) -> Delivery {
        (
            sign_with(
                CLIENT_SECRET,
                "b54557e4-bdd9-4b37-8a5f-bf7d70bcd043",
                "refunds/create",
                FIXTURE,
                at,
            ),
            FIXTURE.to_vec(),
        )
    }

    fn signed_garbage(&self, at: SystemTime) -> Option<Delivery> {
        let body = br#"{"id": "not a refund"}"#.to_vec();
        Some((
            sign_with(CLIENT_SECRET, "garbage-1", "refunds/create", &body, at),
            body,
        ))
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
        &ShopifyWebhookHarness { verifier },
        now,
    ));
}

#[test]
fn rfc3339_helper_is_right() {
    assert_eq!(
        rfc3339(SystemTime::UNIX_EPOCH + Duration::from_secs(1_764_000_000)),
        "2025-11-24T16:00:00.000Z"
    );
}
