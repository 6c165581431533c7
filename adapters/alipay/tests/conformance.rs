//! Alipay against the testkit: the payment suite on a mock of the gateway (RSA2-signed
//! both ways), and the webhook suite on signed notifications.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::WebhookVerifier;
use aftersales_adapter_testkit::{
    Delivery, Outcome, Report, WebhookHarness, payment_conformance, webhook_conformance,
};
use common::{AlipayHarness, MockAlipay, build, keys};

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
    let api = Arc::new(MockAlipay::start().await);
    let payment = build(&api.uri()).payment.unwrap();
    assert_all_passed(
        &payment_conformance(|| AlipayHarness {
            api: api.clone(),
            payment: payment.clone(),
        })
        .await,
    );
}

struct AlipayWebhookHarness {
    verifier: Arc<dyn WebhookVerifier>,
}

impl WebhookHarness for AlipayWebhookHarness {
    fn verifier(&self) -> Arc<dyn WebhookVerifier> {
        self.verifier.clone()
    }

    fn signed(&self, at: SystemTime) -> Delivery {
        common::notification(&keys().alipay, common::fixture_params(), at)
    }

    fn signed_garbage(&self, at: SystemTime) -> Option<Delivery> {
        Some(common::notification(
            &keys().alipay,
            vec![("hello".into(), "world".into())],
            at,
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
        &AlipayWebhookHarness { verifier },
        now,
    ));
}
