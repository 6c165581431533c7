//! WeChat Pay against the testkit: the payment suite on a mock of API v3 (signed both
//! ways), synchronous and asynchronous, and the webhook suite on signed, encrypted
//! notifications.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::WebhookVerifier;
use aftersales_adapter_testkit::{
    Delivery, Outcome, Report, WebhookHarness, payment_conformance, webhook_conformance,
};
use common::{MockWechat, PLATFORM_SERIAL, WechatHarness, build, keys};

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

async fn payment_suite(asynchronous: bool) -> Report {
    let api = Arc::new(MockWechat::start().await);
    api.set_asynchronous(asynchronous);
    let payment = build(&api.uri()).payment.unwrap();
    payment_conformance(|| WechatHarness {
        api: api.clone(),
        payment: payment.clone(),
    })
    .await
}

#[tokio::test]
async fn payment_conforms() {
    assert_all_passed(&payment_suite(false).await);
}

#[tokio::test]
async fn payment_conforms_with_processing_refunds() {
    assert_all_passed(&payment_suite(true).await);
}

const RESOURCE: &[u8] = include_bytes!("fixtures/refund_success_resource.json");

struct WechatWebhookHarness {
    verifier: Arc<dyn WebhookVerifier>,
}

impl WebhookHarness for WechatWebhookHarness {
    fn verifier(&self) -> Arc<dyn WebhookVerifier> {
        self.verifier.clone()
    }

    fn signed(&self, at: SystemTime) -> Delivery {
        let resource = serde_json::from_slice(RESOURCE).unwrap();
        let body = common::notification_body("EV-2018022511223320873", "REFUND.SUCCESS", &resource);
        (
            common::notification_headers(&keys().platform, PLATFORM_SERIAL, &body, at),
            body,
        )
    }

    fn signed_garbage(&self, at: SystemTime) -> Option<Delivery> {
        let body = br#"{"id": 1}"#.to_vec();
        Some((
            common::notification_headers(&keys().platform, PLATFORM_SERIAL, &body, at),
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
    let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_767_225_600);
    assert_all_passed(&webhook_conformance(
        &WechatWebhookHarness { verifier },
        now,
    ));
}
