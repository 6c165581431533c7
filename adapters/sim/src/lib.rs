//! An in-memory simulated platform that implements every aftersales adapter trait (order
//! system, warehouse, fulfillment, payment, notifier) from one shared, seeded state.
//!
//! Knows no database and no engine, and no HTTP outside the `serve` feature: it is what
//! the engine's tests, the demo and the adapter conformance suite run against. It keeps the promises real adapters must keep and
//! lets tests break everything else on purpose:
//!
//! - **Idempotency.** A repeat with the same key returns the first result and never moves
//!   money twice, including after an answer was lost; a key reused with other parameters is
//!   refused, as Stripe does.
//! - **Money.** A [ledger](Sim::ledger) records every refund, charge and insurance claim;
//!   refunds above what is left of a payment are refused as permanent errors.
//! - **Faults.** Latency, random and scripted transient / permanent / lost-answer /
//!   lost-request / hang faults per action, and business outcomes (interception too late,
//!   wrong item returned, out of stock, pending refund failing), all drawn from one seeded
//!   generator so a run repeats exactly.
//! - **Events.** An outbox of [`InboundEvent`]s (refund settled, return received and
//!   inspected, parcel delivered) that a test drains, optionally duplicated and reordered,
//!   or as signed webhooks for [`SimWebhookVerifier`].
//! - **Time** comes from a [`Clock`] passed in; tokio is used only to sleep for latency.
//!
//! Start at [`Sim::new`], the setup API ([`Sim::create_order`], [`Sim::set_stock`],
//! [`Sim::mark_shipped`], [`Sim::receive_return`], ...), and [`Sim::adapter_set`].
//!
//! With the cargo feature `serve`, the `serve` module puts the same world behind a local
//! HTTP server (`aftersales sim serve`): platform endpoints the generic HTTP adapter is
//! configured against, and control endpoints for tests and the demo.

#![warn(missing_docs)]

mod clock;
mod config;
mod impls;
mod model;
#[cfg(feature = "serve")]
pub mod serve;
mod webhook;

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::SystemTime;

use aftersales_adapter::ids::{
    BuyerId, EntitlementId, LineId, OrderId, ParcelId, PaymentId, RefundId, ReservationId,
    ReturnId, RmaId, ServiceOrderId, Sku,
};
use aftersales_adapter::types::ShipmentState;
use aftersales_adapter::{
    AdapterError, AdapterSet, Built, IdempotencyKey, InboundEvent, RefundStatus, Registry,
};
use aftersales_money::{Money, MoneyError};
use serde::Serialize;
use serde::de::DeserializeOwned;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{BusinessFaults, Delivery, Fault, FaultRates, Permille, RefundMode, SimConfig};
pub use model::{
    CallRecord, Inspection, LedgerEntry, LedgerKind, LineDetails, NewLine, NewOrder, OrderDetails,
    ParcelKind, PlatformReturnState, ReservationState, ReturnState, SentMessage, SimEntitlement,
    SimLine, SimOrder, SimParcel, SimPayment, SimPlatformReturn, SimReservation, SimReturn,
};
pub use webhook::{SIGNATURE_HEADER, SimWebhookVerifier, WebhookDelivery, deliver, sign};

use model::{LedgerKind as Lk, Recorded, State};

/// The adapter kind the simulator registers under.
pub const KIND: &str = "sim";

/// Registers the simulator as `kind = "sim"`.
///
/// Settings (all optional): `seed` (int), `refunds` (`"immediate"` | `"pending"`),
/// `settle_after` (`"30s"`), `latency` (`"20ms"`), `faults` and `action_faults`
/// (`{ transient, permanent, lost_answer, lost_request, hang }` in permille), `business`
/// (`{ intercept_too_late, carrier_intercept_fails, wrong_item, out_of_stock,
/// pending_refund_fails }` in permille), `webhook_secret_env` (env var name).
pub fn register(registry: &mut Registry) {
    registry.register(KIND, |cx| {
        let settings: config::SimSettings = cx.settings()?;
        let config = settings.into_config(&|setting: &str| cx.secret(setting))?;
        let sim = Sim::new(config, SystemClock);
        Ok(sim.built())
    });
}

/// A setup call on the simulator that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// No such thing in the simulated world.
    #[error("unknown {what} `{id}`")]
    Unknown {
        /// What was looked for (`order`, `return`, ...).
        what: &'static str,
        /// Its id.
        id: String,
    },
    /// The thing exists but is not in a state that allows the change.
    #[error("{0}")]
    InvalidState(String),
    /// Amounts do not add up (mixed currencies, overflow).
    #[error("invalid amount")]
    Money(#[from] MoneyError),
}

fn unknown(what: &'static str, id: impl ToString) -> SimError {
    SimError::Unknown {
        what,
        id: id.to_string(),
    }
}

struct Inner {
    config: SimConfig,
    clock: Arc<dyn Clock>,
    state: Mutex<State>,
}

/// The simulated platform. Clones share one world.
#[derive(Clone)]
pub struct Sim {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Sim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sim")
            .field("seed", &self.inner.config.seed)
            .finish_non_exhaustive()
    }
}

/// What one call carries into the world while the lock is held.
pub(crate) struct Ctx<'a> {
    pub(crate) now: SystemTime,
    pub(crate) config: &'a SimConfig,
    pub(crate) action: &'static str,
    pub(crate) key: Option<&'a IdempotencyKey>,
}

impl Ctx<'_> {
    pub(crate) fn refuse(&self, message: impl Into<String>) -> AdapterError {
        AdapterError::permanent(KIND, self.action, message)
    }

    /// The call names an object the simulator does not hold.
    pub(crate) fn not_found(&self, message: impl Into<String>) -> AdapterError {
        AdapterError::not_found(KIND, self.action, message)
    }
}

impl Sim {
    /// A simulator with `config`, reading time from `clock`.
    pub fn new(config: SimConfig, clock: impl Clock + 'static) -> Sim {
        let state = State::new(config.seed);
        Sim {
            inner: Arc::new(Inner {
                config,
                clock: Arc::new(clock),
                state: Mutex::new(state),
            }),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &SimConfig {
        &self.inner.config
    }

    /// All five systems served by this simulator.
    pub fn adapter_set(&self) -> AdapterSet {
        let me = Arc::new(self.clone());
        AdapterSet {
            order: me.clone(),
            warehouse: me.clone(),
            fulfillment: me.clone(),
            payment: me.clone(),
            notify: me,
        }
    }

    /// What the registry factory returns: all five systems and the webhook verifier.
    pub fn built(&self) -> Built {
        let me = Arc::new(self.clone());
        Built {
            order: Some(me.clone()),
            warehouse: Some(me.clone()),
            fulfillment: Some(me.clone()),
            payment: Some(me.clone()),
            notify: Some(me),
            webhooks: Some(Arc::new(self.webhook_verifier())),
        }
    }

    /// A verifier for the webhooks [`drain_webhooks`](Sim::drain_webhooks) produces.
    pub fn webhook_verifier(&self) -> SimWebhookVerifier {
        SimWebhookVerifier::new(
            vec![self.inner.config.webhook_secret.clone()],
            self.inner.config.webhook_tolerance,
        )
    }

    pub(crate) fn now(&self) -> SystemTime {
        self.inner.clock.now()
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a consistent world: every change is made
        // after its checks, so a poisoned lock is still usable.
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Runs one adapter call: latency, fault draw, idempotent replay or `apply`, then the
    /// fault's effect on the answer.
    pub(crate) async fn call<Req, Resp>(
        &self,
        action: &'static str,
        key: Option<&IdempotencyKey>,
        req: &Req,
        apply: impl FnOnce(&mut State, &Ctx<'_>) -> Result<Resp, AdapterError>,
    ) -> Result<Resp, AdapterError>
    where
        Req: Serialize,
        Resp: Serialize + DeserializeOwned,
    {
        let config = &self.inner.config;
        let latency = config.latency_of(action);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        let fault = {
            let mut state = self.lock();
            state.calls.push(CallRecord {
                action,
                key: key.cloned(),
            });
            draw_fault(&mut state, config, action)
        };
        match fault {
            Fault::Transient => {
                return Err(AdapterError::transient(
                    KIND,
                    action,
                    "injected: service unavailable",
                ));
            }
            Fault::Permanent => {
                return Err(AdapterError::permanent(
                    KIND,
                    action,
                    "injected: request refused",
                ));
            }
            Fault::LostRequest => {
                return Err(AdapterError::unknown_outcome(
                    KIND,
                    action,
                    "injected: no answer (request lost)",
                ));
            }
            Fault::LostAnswer | Fault::Hang | Fault::None => {}
        }
        let fingerprint = match key {
            Some(_) => Some(serde_json::to_string(req).map_err(|e| {
                AdapterError::permanent(KIND, action, "cannot read the request").with_source(e)
            })?),
            None => None,
        };
        let result = {
            let mut state = self.lock();
            let cx = Ctx {
                now: self.now(),
                config,
                action,
                key,
            };
            apply_once(&mut state, &cx, fingerprint, apply)
        };
        match fault {
            Fault::LostAnswer => Err(AdapterError::unknown_outcome(
                KIND,
                action,
                "injected: no answer (the request may have been applied)",
            )),
            Fault::Hang => {
                tokio::time::sleep(config.hang).await;
                Err(AdapterError::unknown_outcome(
                    KIND,
                    action,
                    "injected: no answer before the timeout",
                ))
            }
            _ => result,
        }
    }

    // ------------------------------------------------------------ setup API

    /// Creates a paid order, its payment (`pay_<order_id>`, capturing the lines' paid
    /// amounts plus shipping) and, for lines with `entitlement_units`, their entitlements.
    /// The order starts not shipped. Returns the payment id.
    pub fn create_order(&self, order: NewOrder) -> Result<PaymentId, SimError> {
        let now_ms = unix_ms(self.now());
        let mut state = self.lock();
        if state.orders.contains_key(&order.order_id) {
            return Err(SimError::InvalidState(format!(
                "order `{}` already exists",
                order.order_id
            )));
        }
        let currency = order.shipping_fee.currency;
        let captured = Money::sum(currency, order.lines.iter().map(|l| &l.paid))?
            .checked_add(&order.shipping_fee)?;
        for l in &order.lines {
            l.unit_price.checked_cmp(&order.shipping_fee)?;
        }
        let payment_id = PaymentId::new(format!("pay_{}", order.order_id));
        let mut lines = Vec::new();
        for l in order.lines {
            let entitlement_id = match l.entitlement_units {
                Some(total) => {
                    let id = EntitlementId::new(state.id("ent"));
                    state.entitlements.insert(
                        id.clone(),
                        SimEntitlement {
                            entitlement_id: id.clone(),
                            buyer_id: order.buyer_id.clone(),
                            sku: l.sku.clone(),
                            total,
                            consumed: 0,
                            active: true,
                            revoked_units: 0,
                        },
                    );
                    Some(id)
                }
                None => None,
            };
            lines.push(SimLine {
                line_id: l.line_id,
                sku: l.sku,
                spu: l.spu,
                quantity: l.quantity,
                unit_price: l.unit_price,
                paid: l.paid,
                entitlement_id,
                details: LineDetails::default(),
            });
        }
        state.payments.insert(
            payment_id.clone(),
            SimPayment {
                payment_id: payment_id.clone(),
                order_id: order.order_id.clone(),
                captured,
            },
        );
        state.orders.insert(
            order.order_id.clone(),
            SimOrder {
                order_id: order.order_id,
                buyer_id: order.buyer_id,
                payment_id: payment_id.clone(),
                lines,
                shipping_fee: order.shipping_fee,
                shipment: ShipmentState::NotShipped,
                intercepted: false,
                carrier_intercepted: false,
                marks: Default::default(),
                reported_refunds: Vec::new(),
                closed: Default::default(),
                cancelled_by: None,
                coupon: None,
                paid_at: now_ms,
                shipped_at: None,
                delivered_at: None,
            },
        );
        Ok(payment_id)
    }

    /// Sets an order's coupon and payment time. The lines' `paid` amounts are not touched:
    /// they must already be net of the coupon.
    pub fn set_order_details(
        &self,
        order_id: &OrderId,
        details: OrderDetails,
    ) -> Result<(), SimError> {
        let mut state = self.lock();
        let order = state
            .orders
            .get_mut(order_id)
            .ok_or_else(|| unknown("order", order_id))?;
        order.coupon = details.coupon;
        if let Some(at) = details.paid_at {
            order.paid_at = at;
        }
        Ok(())
    }

    /// Sets a line's category, flags, own discount and course.
    pub fn set_line_details(
        &self,
        order_id: &OrderId,
        line_id: &LineId,
        details: LineDetails,
    ) -> Result<(), SimError> {
        let mut state = self.lock();
        let order = state
            .orders
            .get_mut(order_id)
            .ok_or_else(|| unknown("order", order_id))?;
        let line = order
            .lines
            .iter_mut()
            .find(|l| &l.line_id == line_id)
            .ok_or_else(|| unknown("order line", line_id))?;
        line.details = details;
        Ok(())
    }

    /// Moves an order's goods along: picked, shipped (in transit), delivered.
    pub fn set_shipment(
        &self,
        order_id: &OrderId,
        shipment: ShipmentState,
    ) -> Result<(), SimError> {
        let mut state = self.lock();
        let order = state
            .orders
            .get_mut(order_id)
            .ok_or_else(|| unknown("order", order_id))?;
        if order.intercepted {
            return Err(SimError::InvalidState(format!(
                "order `{order_id}` was intercepted and cannot ship"
            )));
        }
        let now = unix_ms(self.now());
        match shipment {
            ShipmentState::Shipped => {
                order.shipped_at.get_or_insert(now);
            }
            ShipmentState::Delivered => {
                order.shipped_at.get_or_insert(now);
                order.delivered_at.get_or_insert(now);
            }
            _ => {}
        }
        order.shipment = shipment;
        Ok(())
    }

    /// Marks an order picked: too late for a warehouse interception.
    pub fn mark_picked(&self, order_id: &OrderId) -> Result<(), SimError> {
        self.set_shipment(order_id, ShipmentState::Picked)
    }

    /// Marks an order shipped: its parcel is in transit.
    pub fn mark_shipped(&self, order_id: &OrderId) -> Result<(), SimError> {
        self.set_shipment(order_id, ShipmentState::Shipped)
    }

    /// Marks an order delivered.
    pub fn mark_delivered(&self, order_id: &OrderId) -> Result<(), SimError> {
        self.set_shipment(order_id, ShipmentState::Delivered)
    }

    /// Sets the sellable stock of a SKU.
    pub fn set_stock(&self, sku: &Sku, units: i64) {
        self.lock().stock.insert(sku.clone(), units);
    }

    /// The sellable stock of a SKU (reservations excluded).
    pub fn stock(&self, sku: &Sku) -> i64 {
        self.lock().stock.get(sku).copied().unwrap_or(0)
    }

    /// How many units a `fulfillment.grant` of this SKU gives (1 when not set).
    pub fn set_product_units(&self, sku: &Sku, units: u32) {
        self.lock().product_units.insert(sku.clone(), units);
    }

    /// Grants an entitlement outside any order.
    pub fn grant_entitlement(&self, buyer_id: &BuyerId, sku: &Sku, total: u32) -> EntitlementId {
        let mut state = self.lock();
        let id = EntitlementId::new(state.id("ent"));
        state.entitlements.insert(
            id.clone(),
            SimEntitlement {
                entitlement_id: id.clone(),
                buyer_id: buyer_id.clone(),
                sku: sku.clone(),
                total,
                consumed: 0,
                active: true,
                revoked_units: 0,
            },
        );
        id
    }

    /// The buyer uses `units` more of an entitlement (watches lessons).
    pub fn consume(&self, entitlement_id: &EntitlementId, units: u32) -> Result<(), SimError> {
        let mut state = self.lock();
        let e = state
            .entitlements
            .get_mut(entitlement_id)
            .ok_or_else(|| unknown("entitlement", entitlement_id))?;
        let consumed = e.consumed.saturating_add(units);
        if !e.active || consumed > e.total {
            return Err(SimError::InvalidState(format!(
                "entitlement `{entitlement_id}` cannot consume {units} more units"
            )));
        }
        e.consumed = consumed;
        Ok(())
    }

    /// The buyer's return parcel arrives at the warehouse and is inspected: emits
    /// `warehouse.return.received` then `warehouse.return.inspected`, both carrying
    /// `inspection_passed` and, when it failed, `note`.
    pub fn receive_return(&self, rma_id: &RmaId, inspection: Inspection) -> Result<(), SimError> {
        let mut state = self.lock();
        let wrong_item = self.inner.config.business.wrong_item;
        let (passed, reason) = match inspection {
            Inspection::Pass => (true, None),
            Inspection::Fail(reason) => (false, Some(reason)),
            Inspection::Random => {
                if state.rng.chance(wrong_item) {
                    (false, Some("wrong item returned".to_owned()))
                } else {
                    (true, None)
                }
            }
        };
        let rma = state
            .returns
            .get_mut(rma_id)
            .ok_or_else(|| unknown("return", rma_id))?;
        if rma.state != ReturnState::AwaitingArrival {
            return Err(SimError::InvalidState(format!(
                "return `{rma_id}` is not awaiting arrival"
            )));
        }
        rma.state = ReturnState::Inspected {
            passed,
            reason: reason.clone(),
        };
        let (order_id, so) = (rma.order_id.clone(), rma.service_order_id.clone());
        let mut payload = serde_json::json!({
            "rma_id": rma_id,
            "order_id": order_id,
            "service_order_id": so,
            "inspection_passed": passed,
        });
        if let Some(note) = reason {
            payload["note"] = serde_json::Value::String(note);
        }
        state.emit(
            "warehouse.return.received",
            rma_id.as_str(),
            payload.clone(),
        );
        state.emit("warehouse.return.inspected", rma_id.as_str(), payload);
        Ok(())
    }

    /// A parcel the warehouse sent reaches the buyer: emits `warehouse.parcel.delivered`.
    pub fn deliver_parcel(&self, parcel_id: &ParcelId) -> Result<(), SimError> {
        let mut state = self.lock();
        let parcel = state
            .parcels
            .get_mut(parcel_id)
            .ok_or_else(|| unknown("parcel", parcel_id))?;
        if parcel.delivered {
            return Err(SimError::InvalidState(format!(
                "parcel `{parcel_id}` was already delivered"
            )));
        }
        parcel.delivered = true;
        let order_id = parcel.order_id.clone();
        state.emit(
            "warehouse.parcel.delivered",
            parcel_id.as_str(),
            serde_json::json!({"parcel_id": parcel_id, "order_id": order_id}),
        );
        Ok(())
    }

    /// Queues faults for the next calls of `action` (`payment.refund`), before any random
    /// fault: `sim.script("payment.refund", [Fault::Transient; 5])`.
    pub fn script(&self, action: &str, faults: impl IntoIterator<Item = Fault>) {
        self.lock()
            .scripts
            .entry(action.to_owned())
            .or_default()
            .extend(faults);
    }

    /// Settles every pending refund whose time has come (by the clock), emitting
    /// `payment.refund.succeeded` or `payment.refund.failed`. Returns how many settled.
    pub fn settle_due(&self) -> usize {
        let now = self.now();
        let fail_rate = self.inner.config.business.pending_refund_fails;
        let mut state = self.lock();
        settle_due(&mut state, now, fail_rate)
    }

    /// Ends a pending refund now, as `Succeeded`, `Failed`, `Canceled` or `RequiresAction`.
    pub fn complete_refund(
        &self,
        refund_id: &RefundId,
        status: RefundStatus,
    ) -> Result<(), SimError> {
        let mut state = self.lock();
        let entry = state
            .ledger
            .iter_mut()
            .find(|e| e.kind == Lk::Refund && e.id == refund_id.as_str())
            .ok_or_else(|| unknown("refund", refund_id))?;
        if entry.status.is_final() {
            return Err(SimError::InvalidState(format!(
                "refund `{refund_id}` is already final"
            )));
        }
        entry.status = status;
        entry.settle_at = None;
        if status.is_final() {
            emit_refund_final(&mut state, refund_id.as_str());
        }
        Ok(())
    }

    /// Takes the queued events, applying the configured delivery (duplicates, reordering).
    pub fn drain_events(&self) -> Vec<InboundEvent> {
        let delivery = self.inner.config.delivery;
        let mut state = self.lock();
        let drained = std::mem::take(&mut state.outbox);
        let mut out = Vec::with_capacity(drained.len());
        for e in drained {
            let twice = state.rng.chance(delivery.duplicate);
            if twice {
                out.push(e.clone());
            }
            out.push(e);
        }
        if delivery.reorder {
            for i in (1..out.len()).rev() {
                let j = state.rng.below(i as u64 + 1) as usize;
                out.swap(i, j);
            }
        }
        out
    }

    /// Takes the queued events as signed webhook deliveries, signed at the clock's now.
    pub fn drain_webhooks(&self) -> Vec<WebhookDelivery> {
        let now = self.now();
        let secret = self.inner.config.webhook_secret.clone();
        self.drain_events()
            .iter()
            .map(|e| webhook::deliver(&secret, e, now))
            .collect()
    }

    // ------------------------------------------------------------ inspection API

    /// A snapshot of an order.
    pub fn order(&self, order_id: &OrderId) -> Option<SimOrder> {
        self.lock().orders.get(order_id).cloned()
    }

    /// A snapshot of a payment.
    pub fn payment(&self, payment_id: &PaymentId) -> Option<SimPayment> {
        self.lock().payments.get(payment_id).cloned()
    }

    /// A snapshot of a return.
    pub fn return_of(&self, rma_id: &RmaId) -> Option<SimReturn> {
        self.lock().returns.get(rma_id).cloned()
    }

    /// Every return, in id order.
    pub fn returns(&self) -> Vec<SimReturn> {
        self.lock().returns.values().cloned().collect()
    }

    /// Every return opened on the order system (`order.request_return`), in id order.
    pub fn platform_returns(&self) -> Vec<(ReturnId, SimPlatformReturn)> {
        self.lock()
            .platform_returns
            .iter()
            .map(|(id, r)| (id.clone(), r.clone()))
            .collect()
    }

    /// A snapshot of a reservation.
    pub fn reservation(&self, id: &ReservationId) -> Option<SimReservation> {
        self.lock().reservations.get(id).cloned()
    }

    /// A snapshot of a parcel.
    pub fn parcel(&self, id: &ParcelId) -> Option<SimParcel> {
        self.lock().parcels.get(id).cloned()
    }

    /// A snapshot of an entitlement.
    pub fn entitlement(&self, id: &EntitlementId) -> Option<SimEntitlement> {
        self.lock().entitlements.get(id).cloned()
    }

    /// Every money movement, in order.
    pub fn ledger(&self) -> Vec<LedgerEntry> {
        self.lock().ledger.clone()
    }

    /// The refunds made for a service order (any status).
    pub fn refunds_for_service_order(&self, so: &ServiceOrderId) -> Vec<LedgerEntry> {
        self.lock()
            .ledger
            .iter()
            .filter(|e| e.kind == Lk::Refund && e.service_order_id.as_ref() == Some(so))
            .cloned()
            .collect()
    }

    /// The refunds made against a payment (any status).
    pub fn refunds_for_payment(&self, payment_id: &PaymentId) -> Vec<LedgerEntry> {
        self.lock()
            .ledger
            .iter()
            .filter(|e| e.kind == Lk::Refund && e.payment_id.as_ref() == Some(payment_id))
            .cloned()
            .collect()
    }

    /// What is refunded or on its way back against a payment (pending, needing action or
    /// succeeded; failed and cancelled refunds do not count).
    pub fn refunded_total(&self, payment_id: &PaymentId) -> Result<Money, SimError> {
        let state = self.lock();
        let payment = state
            .payments
            .get(payment_id)
            .ok_or_else(|| unknown("payment", payment_id))?;
        Ok(state.refunded(payment_id, payment.captured.currency)?)
    }

    /// Messages sent through `notify.send`.
    pub fn messages(&self) -> Vec<SentMessage> {
        self.lock().messages.clone()
    }

    /// Every call that reached the simulator, with its key, in order (faulted ones too).
    pub fn calls(&self) -> Vec<CallRecord> {
        self.lock().calls.clone()
    }
}

/// Picks the fault for one call: a scripted one first, else a random draw.
fn draw_fault(state: &mut State, config: &SimConfig, action: &str) -> Fault {
    if let Some(f) = state.scripts.get_mut(action).and_then(|q| q.pop_front()) {
        return f;
    }
    let r = config.faults_of(action);
    let rng = &mut state.rng;
    if rng.chance(r.transient) {
        Fault::Transient
    } else if rng.chance(r.permanent) {
        Fault::Permanent
    } else if rng.chance(r.lost_answer) {
        Fault::LostAnswer
    } else if rng.chance(r.lost_request) {
        Fault::LostRequest
    } else if rng.chance(r.hang) {
        Fault::Hang
    } else {
        Fault::None
    }
}

/// Replays the first result for the key, or applies the call and records its result.
/// Refusals are not recorded: nothing happened, so the same key may be tried again.
/// `fingerprint` is the request's JSON text, present when the call has a key.
fn apply_once<Resp>(
    state: &mut State,
    cx: &Ctx<'_>,
    fingerprint: Option<String>,
    apply: impl FnOnce(&mut State, &Ctx<'_>) -> Result<Resp, AdapterError>,
) -> Result<Resp, AdapterError>
where
    Resp: Serialize + DeserializeOwned,
{
    let (Some(key), Some(fingerprint)) = (cx.key, fingerprint) else {
        return apply(state, cx);
    };
    let scope = cx.action.split_once('.').map_or(cx.action, |(s, _)| s);
    if let Some(first) = state.recorded.get(&(scope, key.clone())) {
        if first.action != cx.action {
            return Err(cx.refuse(format!(
                "idempotency key `{key}` was already used for {}",
                first.action
            )));
        }
        if first.fingerprint != fingerprint {
            return Err(cx.refuse(format!(
                "idempotency key `{key}` was already used with different parameters"
            )));
        }
        return serde_json::from_value(first.response.clone()).map_err(|e| {
            cx.refuse("cannot replay the recorded answer")
                .with_source(e)
        });
    }
    let resp = apply(state, cx)?;
    let response = serde_json::to_value(&resp)
        .map_err(|e| cx.refuse("cannot record the answer").with_source(e))?;
    state.recorded.insert(
        (scope, key.clone()),
        Recorded {
            action: cx.action,
            fingerprint,
            response,
        },
    );
    Ok(resp)
}

pub(crate) fn settle_due(state: &mut State, now: SystemTime, fail_rate: Permille) -> usize {
    let due: Vec<usize> = state
        .ledger
        .iter()
        .enumerate()
        .filter(|(_, e)| {
            e.kind == Lk::Refund
                && e.status == RefundStatus::Pending
                && e.settle_at.is_some_and(|t| t <= now)
        })
        .map(|(i, _)| i)
        .collect();
    for &i in &due {
        let failed = state.rng.chance(fail_rate);
        let Some(entry) = state.ledger.get_mut(i) else {
            continue;
        };
        entry.status = if failed {
            RefundStatus::Failed
        } else {
            RefundStatus::Succeeded
        };
        entry.settle_at = None;
        let id = entry.id.clone();
        emit_refund_final(state, &id);
    }
    due.len()
}

pub(crate) fn emit_refund_final(state: &mut State, refund_id: &str) {
    let Some(entry) = state
        .ledger
        .iter()
        .find(|e| e.kind == Lk::Refund && e.id == refund_id)
    else {
        return;
    };
    let name = match entry.status {
        RefundStatus::Succeeded => "payment.refund.succeeded",
        RefundStatus::Failed => "payment.refund.failed",
        RefundStatus::Canceled => "payment.refund.canceled",
        _ => return,
    };
    let mut payload = serde_json::json!({
        "refund_id": entry.id,
        "payment_id": entry.payment_id,
        "amount": entry.amount,
        "status": entry.status,
    });
    if let Some(so) = &entry.service_order_id {
        payload["service_order_id"] = serde_json::Value::String(so.as_str().to_owned());
    }
    state.emit(name, refund_id, payload);
}

/// Milliseconds since the Unix epoch (zero before it).
fn unix_ms(t: SystemTime) -> i64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
