//! The payment conformance suite, run against the HTTP adapter pointed at the testkit's
//! mock of a REST payment API (idempotent refunds by key, status by id and by key).
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use aftersales_adapter::types::Refund;
use aftersales_adapter::{ErrorClass, RefundLookup, RefundStatus};
use aftersales_adapter_testkit::mock_payment::{MockPaymentApi, MockPaymentHarness};
use aftersales_adapter_testkit::{Outcome, Report, payment_conformance};
use common::{REFERENCE_PAYMENT, cny, key, payment, settings};

const TOKEN: &str = "sk_test_acme";

async fn run(asynchronous: bool) -> Report {
    let api = Arc::new(MockPaymentApi::start().await);
    api.require_bearer(TOKEN);
    api.set_asynchronous_refunds(asynchronous);
    let adapter = payment(
        settings(REFERENCE_PAYMENT, &api.uri()),
        &[("ACME_TOKEN", TOKEN)],
    );
    payment_conformance(|| MockPaymentHarness::new(api.clone(), adapter.clone())).await
}

/// Every check passes and none is skipped but the optional `charge`, which is not
/// configured.
#[track_caller]
fn assert_all_passed(report: &Report) {
    report.assert_passed();
    let skipped: Vec<_> = report
        .checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .filter(|c| c.name != "undeclared optional actions answer unsupported")
        .collect();
    assert!(skipped.is_empty(), "{report}");
    assert!(report.passed().len() >= 7, "{report}");
}

#[tokio::test]
async fn payment_conforms() {
    assert_all_passed(&run(false).await);
}

#[tokio::test]
async fn payment_conforms_with_asynchronous_refunds() {
    assert_all_passed(&run(true).await);
}

/// The "done when": a refund whose answer is unreadable is an unknown outcome, the
/// status query by key finds it, and the retry with the same key returns the same refund.
/// Money moves once.
#[tokio::test]
async fn an_unreadable_refund_answer_is_resolved_by_a_status_query_never_by_paying_twice() {
    let api = MockPaymentApi::start().await;
    let adapter = payment(
        settings(REFERENCE_PAYMENT, &api.uri()),
        &[("ACME_TOKEN", TOKEN)],
    );
    let pay = api.create_payment(cny(10_000));
    let req = Refund {
        payment_id: pay.clone(),
        amount: cny(2_500),
        reason: None,
        service_order_id: None,
    };
    let k = key("so-7-refund-fwd-0");

    api.garble_next_refund_answer();
    let e = adapter.refund(&req, &k).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    assert!(e.message.contains("not JSON"), "{e}");

    let state = adapter
        .refund_status(&RefundLookup::Key {
            payment_id: pay.clone(),
            key: k.clone(),
        })
        .await
        .unwrap();
    assert_eq!(state.status, RefundStatus::Succeeded);
    let found = state.refund_id.unwrap();

    let again = adapter.refund(&req, &k).await.unwrap();
    assert_eq!(again.refund_id, found);
    assert_eq!(api.movements(&pay), vec![cny(2_500)]);

    // Every refund call carried the same key.
    let keys: Vec<String> = api
        .requests()
        .await
        .iter()
        .filter(|r| r.method.as_str() == "POST")
        .map(|r| r.headers["idempotency-key"].to_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys, ["so-7-refund-fwd-0", "so-7-refund-fwd-0"]);
}
