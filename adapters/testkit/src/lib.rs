//! A conformance suite that adapter authors run against their adapter, so every adapter
//! keeps the promises the engine relies on: a repeat with the same idempotency key returns
//! the first result and moves no money twice, a new key is a new operation, errors carry a
//! class, an unknown outcome is resolved by a status query rather than a second payment, and
//! webhooks with a bad signature or a stale timestamp are refused.
//!
//! Knows no platform: the author supplies a *harness* per system ([`PaymentHarness`],
//! [`WarehouseHarness`], [`FulfillmentHarness`], [`OrderHarness`], [`WebhookHarness`]) that
//! builds the adapter against a fresh mock (or the simulator) and answers questions only the
//! mock side can (which refunds really moved money). Each suite returns a [`Report`];
//! [`Report::assert_passed`] fails the test with every failed check listed.
//!
//! ```text
//! #[tokio::test]
//! async fn stripe_payment_conforms() {
//!     payment_conformance(|| StripeHarness::start()).await.assert_passed();
//! }
//! ```

#![warn(missing_docs)]

#[cfg(feature = "mock-payment")]
pub mod mock_payment;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::catalogue::{self, System};
use aftersales_adapter::ids::{EntitlementId, OrderId, PaymentId, ServiceOrderId};
use aftersales_adapter::types::{
    ClearAfterSales, CloseAfterSales, CloseOutcome, CreateReturn, EntitlementRef, GetOrder,
    InterceptResult, InterceptShipment, LineRef, MarkAfterSales, Refund, RefundLookup, Revoke,
    RmaRef,
};
use aftersales_adapter::{
    AdapterError, Capabilities, ErrorClass, Fulfillment, Headers, IdempotencyKey, OrderSystem,
    Payment, RefundStatus, Warehouse, WebhookError, WebhookVerifier,
};
use aftersales_money::{Currency, Money};
use async_trait::async_trait;

// ---------------------------------------------------------------- report

/// How one check ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The adapter behaved.
    Passed,
    /// The adapter did not; the text says how.
    Failed(String),
    /// The harness cannot set the check up (for example it cannot lose an answer).
    Skipped(String),
}

/// One named check and how it ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Check {
    /// The check's name.
    pub name: &'static str,
    /// How it ended.
    pub outcome: Outcome,
}

/// The result of one conformance suite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// The suite (`payment`, `webhook`, ...).
    pub suite: &'static str,
    /// Every check, in the order run.
    pub checks: Vec<Check>,
}

impl Report {
    fn new(suite: &'static str) -> Report {
        Report {
            suite,
            checks: Vec::new(),
        }
    }

    async fn run(&mut self, name: &'static str, check: impl Future<Output = Result<(), Problem>>) {
        self.record(name, check.await);
    }

    fn record(&mut self, name: &'static str, result: Result<(), Problem>) {
        let outcome = match result {
            Ok(()) => Outcome::Passed,
            Err(Problem::Fail(why)) => Outcome::Failed(why),
            Err(Problem::Skip(why)) => Outcome::Skipped(why),
        };
        self.checks.push(Check { name, outcome });
    }

    /// The checks that failed.
    pub fn failures(&self) -> Vec<&Check> {
        self.checks
            .iter()
            .filter(|c| matches!(c.outcome, Outcome::Failed(_)))
            .collect()
    }

    /// The names of the checks that passed.
    pub fn passed(&self) -> Vec<&'static str> {
        self.checks
            .iter()
            .filter(|c| c.outcome == Outcome::Passed)
            .map(|c| c.name)
            .collect()
    }

    /// Fails the calling test when any check failed, listing every failure.
    ///
    /// # Panics
    ///
    /// When a check failed; that is its purpose.
    #[track_caller]
    pub fn assert_passed(&self) {
        assert!(self.failures().is_empty(), "{self}");
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} conformance:", self.suite)?;
        for c in &self.checks {
            match &c.outcome {
                Outcome::Passed => writeln!(f, "  ok      {}", c.name)?,
                Outcome::Failed(why) => writeln!(f, "  FAILED  {}: {why}", c.name)?,
                Outcome::Skipped(why) => writeln!(f, "  skipped {}: {why}", c.name)?,
            }
        }
        Ok(())
    }
}

/// Why a check did not pass.
enum Problem {
    Fail(String),
    Skip(String),
}

fn ensure(cond: bool, why: impl FnOnce() -> String) -> Result<(), Problem> {
    if cond {
        Ok(())
    } else {
        Err(Problem::Fail(why()))
    }
}

fn ok<T>(what: &str, r: Result<T, AdapterError>) -> Result<T, Problem> {
    r.map_err(|e| Problem::Fail(format!("{what}: unexpected error: {e}")))
}

fn err_of<T: fmt::Debug>(what: &str, r: Result<T, AdapterError>) -> Result<AdapterError, Problem> {
    match r {
        Ok(v) => Err(Problem::Fail(format!(
            "{what}: expected an error, got {v:?}"
        ))),
        Err(e) => Ok(e),
    }
}

fn key(text: &str) -> Result<IdempotencyKey, Problem> {
    IdempotencyKey::new(text).map_err(|e| Problem::Fail(format!("test key {text}: {e}")))
}

fn skip(why: &str) -> Problem {
    Problem::Skip(why.to_owned())
}

fn check_capabilities(system: System, caps: &Capabilities) -> Result<(), Problem> {
    let required = Capabilities::required(system);
    let missing: Vec<&str> = required.actions().filter(|a| !caps.supports(a)).collect();
    ensure(missing.is_empty(), || {
        format!("required actions not declared: {}", missing.join(", "))
    })?;
    let foreign: Vec<&str> = caps
        .actions()
        .filter(|a| catalogue::find_full(a).is_none_or(|s| s.system != system))
        .collect();
    ensure(foreign.is_empty(), || {
        format!("declares actions of another system: {}", foreign.join(", "))
    })
}

// ---------------------------------------------------------------- payment

/// What the payment suite needs from an adapter author, built fresh for every check.
#[async_trait]
pub trait PaymentHarness: Send + Sync {
    /// The adapter under test.
    fn payment(&self) -> Arc<dyn Payment>;

    /// Sets up, on the platform side, a captured payment of `amount` to refund against.
    async fn paid_payment(&self, amount: Money) -> PaymentId;

    /// The refunds that really moved money for a payment, as the platform side saw them.
    fn movements(&self, payment_id: &PaymentId) -> Vec<Money>;

    /// Arranges for the next refund to take effect while its answer is lost (a timeout after
    /// sending). Returns false when the harness cannot; the check is then skipped.
    fn lose_next_answer(&self) -> bool {
        false
    }

    /// Arranges for the next refund to fail transiently (a 503) without effect. Returns
    /// false when the harness cannot.
    fn fail_next_transiently(&self) -> bool {
        false
    }

    /// The currency the platform's payments are in.
    fn currency(&self) -> Currency {
        Currency::CNY
    }
}

/// Runs the payment suite; `make` builds a fresh harness for each check.
pub async fn payment_conformance<H: PaymentHarness>(make: impl Fn() -> H) -> Report {
    let mut report = Report::new("payment");

    report
        .run("declares the required payment actions", async {
            check_capabilities(System::Payment, &make().payment().capabilities())
        })
        .await;

    report
        .run(
            "same key returns the first refund and moves money once",
            async {
                let h = make();
                let p = h.payment();
                let amount = Money::new(3000, h.currency());
                let pay = h.paid_payment(Money::new(10_000, h.currency())).await;
                let req = refund_req(&pay, amount);
                let k = key("tk-refund-same")?;
                let first = ok("first refund", p.refund(&req, &k).await)?;
                let again = ok("repeated refund", p.refund(&req, &k).await)?;
                ensure(first.refund_id == again.refund_id, || {
                    format!(
                        "repeat answered refund {} after {}",
                        again.refund_id, first.refund_id
                    )
                })?;
                let moved = h.movements(&pay);
                ensure(moved == vec![amount], || {
                    format!("expected one movement of {amount}, the platform saw {moved:?}")
                })
            },
        )
        .await;

    report
        .run("a new key is a new refund", async {
            let h = make();
            let p = h.payment();
            let amount = Money::new(3000, h.currency());
            let pay = h.paid_payment(Money::new(10_000, h.currency())).await;
            let req = refund_req(&pay, amount);
            let a = ok("refund a", p.refund(&req, &key("tk-refund-a")?).await)?;
            let b = ok("refund b", p.refund(&req, &key("tk-refund-b")?).await)?;
            ensure(a.refund_id != b.refund_id, || {
                format!("two keys gave the same refund {}", a.refund_id)
            })?;
            let moved = h.movements(&pay);
            ensure(moved.len() == 2, || {
                format!("expected two movements, the platform saw {moved:?}")
            })
        })
        .await;

    report
        .run(
            "over-refund is a permanent error and moves nothing",
            async {
                let h = make();
                let p = h.payment();
                let pay = h.paid_payment(Money::new(1000, h.currency())).await;
                let e = err_of(
                    "refund above the payment",
                    p.refund(
                        &refund_req(&pay, Money::new(1001, h.currency())),
                        &key("tk-over-1")?,
                    )
                    .await,
                )?;
                ensure(e.class == ErrorClass::Permanent, || {
                    format!("expected a permanent error, got {e}")
                })?;
                ok(
                    "first partial refund",
                    p.refund(
                        &refund_req(&pay, Money::new(600, h.currency())),
                        &key("tk-over-2")?,
                    )
                    .await,
                )?;
                let e = err_of(
                    "cumulative refund above the payment",
                    p.refund(
                        &refund_req(&pay, Money::new(600, h.currency())),
                        &key("tk-over-3")?,
                    )
                    .await,
                )?;
                ensure(e.class == ErrorClass::Permanent, || {
                    format!("expected a permanent error, got {e}")
                })?;
                let moved = h.movements(&pay);
                ensure(moved == vec![Money::new(600, h.currency())], || {
                    format!("expected one movement of 600, the platform saw {moved:?}")
                })
            },
        )
        .await;

    report
        .run(
            "transient failure is classified and the retry moves money once",
            async {
                let h = make();
                let p = h.payment();
                let pay = h.paid_payment(Money::new(1000, h.currency())).await;
                if !h.fail_next_transiently() {
                    return Err(skip("the harness cannot inject a transient failure"));
                }
                let req = refund_req(&pay, Money::new(500, h.currency()));
                let k = key("tk-transient")?;
                let e = err_of("refund during an outage", p.refund(&req, &k).await)?;
                ensure(matches!(e.class, ErrorClass::Transient { .. }), || {
                    format!("expected a transient error, got {e}")
                })?;
                ensure(h.movements(&pay).is_empty(), || {
                    "a transient failure moved money".into()
                })?;
                ok("retry", p.refund(&req, &k).await)?;
                ensure(h.movements(&pay).len() == 1, || {
                    format!("expected one movement, saw {:?}", h.movements(&pay))
                })
            },
        )
        .await;

    report
        .run(
            "unknown outcome is resolved by refund_status, not a second refund",
            async {
                let h = make();
                let p = h.payment();
                let pay = h.paid_payment(Money::new(1000, h.currency())).await;
                if !h.lose_next_answer() {
                    return Err(skip("the harness cannot lose an answer"));
                }
                let req = refund_req(&pay, Money::new(700, h.currency()));
                let k = key("tk-lost")?;
                let e = err_of("refund whose answer is lost", p.refund(&req, &k).await)?;
                ensure(e.class == ErrorClass::UnknownOutcome, || {
                    format!("expected an unknown outcome, got {e}")
                })?;
                let lookup = RefundLookup::Key {
                    payment_id: pay.clone(),
                    key: k.clone(),
                };
                let state = ok("status by key", p.refund_status(&lookup).await)?;
                ensure(
                    matches!(
                        state.status,
                        RefundStatus::Succeeded | RefundStatus::Pending
                    ),
                    || format!("expected the refund to exist, status {:?}", state.status),
                )?;
                let Some(found) = state.refund_id else {
                    return Err(Problem::Fail("status by key gave no refund id".into()));
                };
                let retried = ok("retry with the same key", p.refund(&req, &k).await)?;
                ensure(retried.refund_id == found, || {
                    format!(
                        "retry answered {} but status found {found}",
                        retried.refund_id
                    )
                })?;
                let moved = h.movements(&pay);
                ensure(moved.len() == 1, || {
                    format!("expected one movement, the platform saw {moved:?}")
                })
            },
        )
        .await;

    report
        .run(
            "status by an unused key is not_found; by id it finds the refund",
            async {
                let h = make();
                let p = h.payment();
                let pay = h.paid_payment(Money::new(1000, h.currency())).await;
                let none = ok(
                    "status by unused key",
                    p.refund_status(&RefundLookup::Key {
                        payment_id: pay.clone(),
                        key: key("tk-never-used")?,
                    })
                    .await,
                )?;
                ensure(
                    none.status == RefundStatus::NotFound && none.refund_id.is_none(),
                    || format!("expected not_found, got {none:?}"),
                )?;
                let made = ok(
                    "refund",
                    p.refund(
                        &refund_req(&pay, Money::new(100, h.currency())),
                        &key("tk-by-id")?,
                    )
                    .await,
                )?;
                let by_id = ok(
                    "status by id",
                    p.refund_status(&RefundLookup::Id(made.refund_id.clone()))
                        .await,
                )?;
                ensure(by_id.refund_id.as_ref() == Some(&made.refund_id), || {
                    format!("status by id answered {by_id:?}")
                })
            },
        )
        .await;

    report
        .run("undeclared optional actions answer unsupported", async {
            let h = make();
            let p = h.payment();
            if p.capabilities().supports("payment.charge") {
                return Err(skip("payment.charge is supported"));
            }
            let pay = h.paid_payment(Money::new(1000, h.currency())).await;
            let e = err_of(
                "charge",
                p.charge(
                    &aftersales_adapter::types::Charge {
                        payment_id: pay,
                        amount: Money::new(100, h.currency()),
                        reason: None,
                        service_order_id: None,
                    },
                    &key("tk-charge")?,
                )
                .await,
            )?;
            ensure(e.class == ErrorClass::Unsupported, || {
                format!("expected unsupported, got {e}")
            })
        })
        .await;

    report
}

fn refund_req(payment_id: &PaymentId, amount: Money) -> Refund {
    Refund {
        payment_id: payment_id.clone(),
        amount,
        reason: Some("conformance".into()),
        service_order_id: Some(ServiceOrderId::new("so-conformance")),
    }
}

// ---------------------------------------------------------------- warehouse

/// What the warehouse suite needs, built fresh for every check.
#[async_trait]
pub trait WarehouseHarness: Send + Sync {
    /// The adapter under test.
    fn warehouse(&self) -> Arc<dyn Warehouse>;

    /// An order whose shipment has not been picked; its line has at least 2 units.
    async fn unshipped_order(&self) -> (OrderId, LineRef);

    /// An order already handed to the carrier; its line has at least 2 units.
    async fn shipped_order(&self) -> (OrderId, LineRef);
}

/// Runs the warehouse suite.
pub async fn warehouse_conformance<H: WarehouseHarness>(make: impl Fn() -> H) -> Report {
    let mut report = Report::new("warehouse");
    let so = ServiceOrderId::new("so-conformance");

    report
        .run("declares the required warehouse actions", async {
            check_capabilities(System::Warehouse, &make().warehouse().capabilities())
        })
        .await;

    report
        .run(
            "interception answers the same when repeated with its key",
            async {
                let h = make();
                let w = h.warehouse();
                let (order_id, line) = h.unshipped_order().await;
                let req = InterceptShipment {
                    order_id,
                    service_order_id: so.clone(),
                    lines: vec![line],
                };
                let k = key("tk-intercept")?;
                let first = ok("intercept", w.intercept_shipment(&req, &k).await)?;
                ensure(first.result == InterceptResult::Intercepted, || {
                    format!("an unpicked shipment answered {:?}", first.result)
                })?;
                let again = ok("repeat", w.intercept_shipment(&req, &k).await)?;
                ensure(again == first, || format!("repeat answered {again:?}"))
            },
        )
        .await;

    report
        .run("interception of a shipped order is too late", async {
            let h = make();
            let w = h.warehouse();
            let (order_id, line) = h.shipped_order().await;
            let req = InterceptShipment {
                order_id,
                service_order_id: so.clone(),
                lines: vec![line],
            };
            let out = ok(
                "intercept",
                w.intercept_shipment(&req, &key("tk-too-late")?).await,
            )?;
            ensure(out.result == InterceptResult::TooLate, || {
                format!("a shipped order answered {:?}", out.result)
            })
        })
        .await;

    report
        .run(
            "create_return is idempotent per key and new per key",
            async {
                let h = make();
                let w = h.warehouse();
                let (order_id, mut line) = h.shipped_order().await;
                line.quantity = 1;
                let req = CreateReturn {
                    order_id,
                    service_order_id: so.clone(),
                    lines: vec![line],
                    pickup: false,
                };
                let k = key("tk-rma-1")?;
                let a = ok("create_return", w.create_return(&req, &k).await)?;
                let again = ok("repeat", w.create_return(&req, &k).await)?;
                ensure(a.rma_id == again.rma_id, || {
                    format!("repeat opened {} after {}", again.rma_id, a.rma_id)
                })?;
                let b = ok(
                    "second return",
                    w.create_return(&req, &key("tk-rma-2")?).await,
                )?;
                ensure(a.rma_id != b.rma_id, || {
                    format!("a new key reused return {}", a.rma_id)
                })?;
                let cancel = RmaRef { rma_id: b.rma_id };
                let ck = key("tk-rma-cancel")?;
                ok("cancel_return", w.cancel_return(&cancel, &ck).await)?;
                ok(
                    "repeated cancel_return",
                    w.cancel_return(&cancel, &ck).await,
                )
            },
        )
        .await;

    report
}

// ---------------------------------------------------------------- fulfillment

/// What the fulfillment suite needs, built fresh for every check.
#[async_trait]
pub trait FulfillmentHarness: Send + Sync {
    /// The adapter under test.
    fn fulfillment(&self) -> Arc<dyn Fulfillment>;

    /// An active entitlement of `total` units with `consumed` used.
    async fn entitlement(&self, total: u32, consumed: u32) -> EntitlementId;
}

/// Runs the fulfillment suite.
pub async fn fulfillment_conformance<H: FulfillmentHarness>(make: impl Fn() -> H) -> Report {
    let mut report = Report::new("fulfillment");

    report
        .run("declares the required fulfillment actions", async {
            check_capabilities(System::Fulfillment, &make().fulfillment().capabilities())
        })
        .await;

    report
        .run("consumption reads what was used", async {
            let h = make();
            let f = h.fulfillment();
            let id = h.entitlement(10, 3).await;
            let c = ok(
                "get_consumption",
                f.get_consumption(&EntitlementRef { entitlement_id: id })
                    .await,
            )?;
            ensure((c.consumed, c.total, c.active) == (3, 10, true), || {
                format!("expected 3 of 10 used and active, got {c:?}")
            })
        })
        .await;

    report
        .run("partial revoke with a repeated key revokes once", async {
            let h = make();
            let f = h.fulfillment();
            let id = h.entitlement(10, 3).await;
            let req = Revoke {
                entitlement_id: id.clone(),
                units: Some(2),
            };
            let k = key("tk-revoke-units")?;
            ok("revoke", f.revoke(&req, &k).await)?;
            ok("repeated revoke", f.revoke(&req, &k).await)?;
            let c = ok(
                "get_consumption",
                f.get_consumption(&EntitlementRef { entitlement_id: id })
                    .await,
            )?;
            ensure(c.total == 8, || {
                format!("expected 8 units left after revoking 2 once, got {c:?}")
            })
        })
        .await;

    report
        .run("revoke then regrant restores the entitlement", async {
            let h = make();
            let f = h.fulfillment();
            let id = h.entitlement(10, 3).await;
            let r = EntitlementRef {
                entitlement_id: id.clone(),
            };
            ok(
                "revoke",
                f.revoke(
                    &Revoke {
                        entitlement_id: id,
                        units: None,
                    },
                    &key("tk-revoke")?,
                )
                .await,
            )?;
            let c = ok("get_consumption", f.get_consumption(&r).await)?;
            ensure(!c.active, || format!("still active after revoke: {c:?}"))?;
            ok("regrant", f.regrant(&r, &key("tk-regrant")?).await)?;
            let c = ok("get_consumption", f.get_consumption(&r).await)?;
            ensure(c.active && c.total == 10, || {
                format!("not restored after regrant: {c:?}")
            })
        })
        .await;

    report
}

// ---------------------------------------------------------------- order system

/// What the order suite needs, built fresh for every check.
#[async_trait]
pub trait OrderHarness: Send + Sync {
    /// The adapter under test.
    fn order(&self) -> Arc<dyn OrderSystem>;

    /// A paid order with at least one line.
    async fn paid_order(&self) -> (OrderId, LineRef);
}

/// Runs the order suite.
pub async fn order_conformance<H: OrderHarness>(make: impl Fn() -> H) -> Report {
    let mut report = Report::new("order");
    let so = ServiceOrderId::new("so-conformance");

    report
        .run("declares the required order actions", async {
            check_capabilities(System::Order, &make().order().capabilities())
        })
        .await;

    report
        .run("get returns the order with consistent amounts", async {
            let h = make();
            let o = h.order();
            let (order_id, line) = h.paid_order().await;
            let order = ok("get", o.get(&GetOrder { order_id }).await)?;
            ensure(
                order.lines.iter().any(|l| l.line_id == line.line_id),
                || format!("line {} missing from {:?}", line.line_id, order.lines),
            )?;
            let lines = Money::sum(order.paid.currency, order.lines.iter().map(|l| &l.paid))
                .and_then(|m| m.checked_add(&order.shipping_fee));
            ensure(lines == Ok(order.paid), || {
                format!(
                    "paid {} is not the lines' paid amounts plus shipping ({lines:?})",
                    order.paid
                )
            })
        })
        .await;

    report
        .run(
            "marks, clears and closes accept repeats of their key",
            async {
                let h = make();
                let o = h.order();
                let (order_id, line) = h.paid_order().await;
                let mark = MarkAfterSales {
                    order_id: order_id.clone(),
                    service_order_id: so.clone(),
                    lines: vec![line],
                };
                let k = key("tk-mark")?;
                ok("mark", o.mark_after_sales(&mark, &k).await)?;
                ok("repeated mark", o.mark_after_sales(&mark, &k).await)?;
                let clear = ClearAfterSales {
                    order_id: order_id.clone(),
                    service_order_id: so.clone(),
                };
                ok(
                    "clear",
                    o.clear_after_sales(&clear, &key("tk-clear")?).await,
                )?;
                let close = CloseAfterSales {
                    order_id,
                    service_order_id: so.clone(),
                    outcome: CloseOutcome::Closed,
                    reason: Some("conformance".into()),
                };
                let k = key("tk-close")?;
                ok("close", o.close_after_sales(&close, &k).await)?;
                ok("repeated close", o.close_after_sales(&close, &k).await)
            },
        )
        .await;

    report
        .run("an unknown order is a not-found error", async {
            let h = make();
            let e = err_of(
                "get unknown order",
                h.order()
                    .get(&GetOrder {
                        order_id: OrderId::new("tk-no-such-order"),
                    })
                    .await,
            )?;
            ensure(e.class == ErrorClass::NotFound, || {
                format!("expected a not-found error (the service answers 404), got {e}")
            })
        })
        .await;

    report
}

// ---------------------------------------------------------------- webhooks

/// A webhook delivery: headers and the raw body.
pub type Delivery = (Headers, Vec<u8>);

/// What the webhook suite needs.
pub trait WebhookHarness {
    /// The verifier under test.
    fn verifier(&self) -> Arc<dyn WebhookVerifier>;

    /// A genuine delivery of an event the engine uses, signed at `at`.
    fn signed(&self, at: SystemTime) -> Delivery;

    /// A correctly signed delivery whose body is not an event, when the scheme allows one.
    fn signed_garbage(&self, at: SystemTime) -> Option<Delivery>;

    /// The timestamp tolerance, or `None` when the scheme signs no timestamp (Shopify).
    fn tolerance(&self) -> Option<Duration>;
}

/// Runs the webhook suite with "now" = `now`.
pub fn webhook_conformance<H: WebhookHarness>(harness: &H, now: SystemTime) -> Report {
    let mut report = Report::new("webhook");
    let v = harness.verifier();

    report.record("a genuine delivery parses into an event", {
        let (headers, body) = harness.signed(now);
        match v.verify(&headers, &body, now) {
            Ok(Some(e)) => ensure(
                !e.dedupe_id.is_empty()
                    && !e.correlation.is_empty()
                    && catalogue::events().iter().any(|s| s.name == e.name),
                || format!("event lacks an id, a correlation or a catalogue name: {e:?}"),
            ),
            Ok(None) => Err(Problem::Fail("the genuine delivery was ignored".into())),
            Err(e) => Err(Problem::Fail(format!("refused: {e}"))),
        }
    });

    report.record("the same delivery twice gives the same dedupe id", {
        let (headers, body) = harness.signed(now);
        let a = v.verify(&headers, &body, now).ok().flatten();
        let b = v.verify(&headers, &body, now).ok().flatten();
        ensure(
            a.is_some() && a.as_ref().map(|e| &e.dedupe_id) == b.as_ref().map(|e| &e.dedupe_id),
            || format!("{a:?} vs {b:?}"),
        )
    });

    report.record("a tampered body is a bad signature", {
        let (headers, mut body) = harness.signed(now);
        match body.iter_mut().rev().find(|b| b.is_ascii_alphanumeric()) {
            Some(b) => *b = if *b == b'0' { b'1' } else { b'0' },
            None => body.push(b' '),
        }
        let got = v.verify(&headers, &body, now);
        ensure(got == Err(WebhookError::BadSignature), || {
            format!("expected bad signature, got {got:?}")
        })
    });

    report.record("a delivery without headers is refused", {
        let (_, body) = harness.signed(now);
        let got = v.verify(&Headers::new(), &body, now);
        ensure(
            matches!(
                got,
                Err(WebhookError::MissingHeader(_) | WebhookError::BadSignature)
            ),
            || format!("expected a missing header, got {got:?}"),
        )
    });

    report.record("a stale timestamp is refused", {
        match harness.tolerance() {
            None => Err(skip("the scheme signs no timestamp")),
            Some(tolerance) => {
                let then = now - tolerance - Duration::from_secs(60);
                let (headers, body) = harness.signed(then);
                let got = v.verify(&headers, &body, now);
                ensure(
                    matches!(got, Err(WebhookError::StaleTimestamp { .. })),
                    || format!("expected a stale timestamp, got {got:?}"),
                )
            }
        }
    });

    report.record("a signed body that is not an event is malformed", {
        match harness.signed_garbage(now) {
            None => Err(skip("the harness cannot sign a malformed body")),
            Some((headers, body)) => {
                let got = v.verify(&headers, &body, now);
                ensure(matches!(got, Err(WebhookError::MalformedBody(_))), || {
                    format!("expected a malformed body, got {got:?}")
                })
            }
        }
    });

    report
}
