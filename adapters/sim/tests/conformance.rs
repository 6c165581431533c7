//! The adapter conformance suite, run against the simulator.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, SystemTime};

use aftersales_adapter::ids::{EntitlementId, OrderId, PaymentId};
use aftersales_adapter::types::LineRef;
use aftersales_adapter::{
    Fulfillment, InboundEvent, OrderSystem, Payment, RefundStatus, Warehouse, WebhookVerifier,
};
use aftersales_adapter_sim::{Fault, NewLine, NewOrder, RefundMode, Sim, SimConfig, deliver, sign};
use aftersales_adapter_testkit::{
    Delivery, FulfillmentHarness, OrderHarness, Outcome, PaymentHarness, WarehouseHarness,
    WebhookHarness, fulfillment_conformance, order_conformance, payment_conformance,
    warehouse_conformance, webhook_conformance,
};
use aftersales_money::Money;
use async_trait::async_trait;
use common::{quiet, sim_with, tshirt_order};

struct SimHarness {
    sim: Sim,
    orders: AtomicU32,
}

impl SimHarness {
    fn new(config: SimConfig) -> SimHarness {
        SimHarness {
            sim: sim_with(config).0,
            orders: AtomicU32::new(0),
        }
    }

    fn next(&self) -> u32 {
        self.orders.fetch_add(1, Ordering::SeqCst)
    }
}

#[async_trait]
impl PaymentHarness for SimHarness {
    fn payment(&self) -> Arc<dyn Payment> {
        Arc::new(self.sim.clone())
    }

    async fn paid_payment(&self, amount: Money) -> PaymentId {
        let n = self.next();
        self.sim
            .create_order(NewOrder {
                order_id: OrderId::new(format!("pay-order-{n}")),
                buyer_id: "b".into(),
                lines: vec![NewLine {
                    line_id: "l1".into(),
                    sku: "sku".into(),
                    spu: "spu".into(),
                    quantity: 1,
                    unit_price: amount,
                    paid: amount,
                    entitlement_units: None,
                }],
                shipping_fee: Money::zero(amount.currency),
            })
            .expect("payment created")
    }

    fn movements(&self, payment_id: &PaymentId) -> Vec<Money> {
        self.sim
            .refunds_for_payment(payment_id)
            .into_iter()
            .filter(|e| !matches!(e.status, RefundStatus::Failed | RefundStatus::Canceled))
            .map(|e| e.amount)
            .collect()
    }

    fn lose_next_answer(&self) -> bool {
        self.sim.script("payment.refund", [Fault::LostAnswer]);
        true
    }

    fn fail_next_transiently(&self) -> bool {
        self.sim.script("payment.refund", [Fault::Transient]);
        true
    }
}

#[async_trait]
impl WarehouseHarness for SimHarness {
    fn warehouse(&self) -> Arc<dyn Warehouse> {
        Arc::new(self.sim.clone())
    }

    async fn unshipped_order(&self) -> (OrderId, LineRef) {
        let (order, _, line) = tshirt_order(&self.sim, self.next());
        (order, line)
    }

    async fn shipped_order(&self) -> (OrderId, LineRef) {
        let (order, _, line) = tshirt_order(&self.sim, self.next());
        self.sim.mark_shipped(&order).expect("shipped");
        (order, line)
    }
}

#[async_trait]
impl FulfillmentHarness for SimHarness {
    fn fulfillment(&self) -> Arc<dyn Fulfillment> {
        Arc::new(self.sim.clone())
    }

    async fn entitlement(&self, total: u32, consumed: u32) -> EntitlementId {
        let id = self
            .sim
            .grant_entitlement(&"b".into(), &"course".into(), total);
        self.sim.consume(&id, consumed).expect("consumed");
        id
    }
}

#[async_trait]
impl OrderHarness for SimHarness {
    fn order(&self) -> Arc<dyn OrderSystem> {
        Arc::new(self.sim.clone())
    }

    async fn paid_order(&self) -> (OrderId, LineRef) {
        let (order, _, line) = tshirt_order(&self.sim, self.next());
        (order, line)
    }
}

impl WebhookHarness for SimHarness {
    fn verifier(&self) -> Arc<dyn WebhookVerifier> {
        Arc::new(self.sim.webhook_verifier())
    }

    fn signed(&self, at: SystemTime) -> Delivery {
        let event = InboundEvent {
            dedupe_id: "evt_7".into(),
            name: "warehouse.return.received".into(),
            correlation: "rma_3".into(),
            payload: serde_json::json!({"rma_id": "rma_3"}),
        };
        let d = deliver(&self.sim.config().webhook_secret, &event, at);
        (d.headers, d.body)
    }

    fn signed_garbage(&self, at: SystemTime) -> Option<Delivery> {
        let body = b"{\"id\": 1}".to_vec();
        let header = sign(&self.sim.config().webhook_secret, &body, at);
        Some((
            aftersales_adapter::Headers::new().with("sim-signature", header),
            body,
        ))
    }

    fn tolerance(&self) -> Option<Duration> {
        Some(self.sim.config().webhook_tolerance)
    }
}

/// Every check must pass, and none may be skipped: the simulator can stage them all.
#[track_caller]
fn assert_all_passed(report: &aftersales_adapter_testkit::Report) {
    report.assert_passed();
    let skipped: Vec<_> = report
        .checks
        .iter()
        .filter(|c| matches!(c.outcome, Outcome::Skipped(_)))
        .filter(|c| c.name != "undeclared optional actions answer unsupported")
        .collect();
    assert!(skipped.is_empty(), "{report}");
}

#[tokio::test]
async fn payment_conforms() {
    let report = payment_conformance(|| SimHarness::new(SimConfig::quiet(1))).await;
    assert_all_passed(&report);
    assert!(report.passed().len() >= 7, "{report}");
}

#[tokio::test]
async fn payment_conforms_with_pending_refunds() {
    let report = payment_conformance(|| {
        let mut config = SimConfig::quiet(2);
        config.refunds = RefundMode::Pending {
            settle_after: Duration::from_secs(60),
        };
        SimHarness::new(config)
    })
    .await;
    assert_all_passed(&report);
}

#[tokio::test]
async fn warehouse_conforms() {
    assert_all_passed(&warehouse_conformance(|| SimHarness::new(SimConfig::quiet(3))).await);
}

#[tokio::test]
async fn fulfillment_conforms() {
    assert_all_passed(&fulfillment_conformance(|| SimHarness::new(SimConfig::quiet(4))).await);
}

#[tokio::test]
async fn order_conforms() {
    assert_all_passed(&order_conformance(|| SimHarness::new(SimConfig::quiet(5))).await);
}

#[test]
fn webhooks_conform() {
    let h = SimHarness::new(SimConfig::quiet(6));
    let (_, clock) = quiet();
    let report = webhook_conformance(&h, aftersales_adapter_sim::Clock::now(&clock));
    assert_all_passed(&report);
}

/// The suite must catch a broken adapter, or it proves nothing: a payment adapter that
/// forgets the key and pays again on every call fails the idempotency checks.
#[tokio::test]
async fn the_suite_catches_an_adapter_that_ignores_the_key() {
    struct Forgetful(Sim);

    #[async_trait]
    impl Payment for Forgetful {
        fn platform(&self) -> &'static str {
            "forgetful"
        }
        fn capabilities(&self) -> aftersales_adapter::Capabilities {
            Payment::capabilities(&self.0)
        }
        async fn refund(
            &self,
            req: &aftersales_adapter::types::Refund,
            _key: &aftersales_adapter::IdempotencyKey,
        ) -> Result<aftersales_adapter::types::RefundOutcome, aftersales_adapter::AdapterError>
        {
            // A fresh key per call: exactly the bug the engine's promise forbids.
            let n = self.0.ledger().len();
            let fresh = aftersales_adapter::IdempotencyKey::new(format!("fresh-{n}")).unwrap();
            self.0.refund(req, &fresh).await
        }
        async fn refund_status(
            &self,
            lookup: &aftersales_adapter::RefundLookup,
        ) -> Result<aftersales_adapter::types::RefundState, aftersales_adapter::AdapterError>
        {
            self.0.refund_status(lookup).await
        }
    }

    struct ForgetfulHarness(SimHarness);

    #[async_trait]
    impl PaymentHarness for ForgetfulHarness {
        fn payment(&self) -> Arc<dyn Payment> {
            Arc::new(Forgetful(self.0.sim.clone()))
        }
        async fn paid_payment(&self, amount: Money) -> PaymentId {
            self.0.paid_payment(amount).await
        }
        fn movements(&self, payment_id: &PaymentId) -> Vec<Money> {
            self.0.movements(payment_id)
        }
        fn lose_next_answer(&self) -> bool {
            self.0.lose_next_answer()
        }
    }

    let report =
        payment_conformance(|| ForgetfulHarness(SimHarness::new(SimConfig::quiet(7)))).await;
    let failed: Vec<&str> = report.failures().iter().map(|c| c.name).collect();
    assert!(
        failed.contains(&"same key returns the first refund and moves money once"),
        "{report}"
    );
    assert!(
        failed.contains(&"unknown outcome is resolved by refund_status, not a second refund"),
        "{report}"
    );
}
