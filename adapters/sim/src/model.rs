//! The simulated world: orders, stock, parcels, returns, entitlements, payments, ledger.
//!
//! Every type here is a snapshot a test reads through [`Sim`](crate::Sim); changing the
//! world goes through the setup API or the adapter calls.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::SystemTime;

use aftersales_adapter::ids::{
    BuyerId, EntitlementId, LineId, OrderId, ParcelId, PaymentId, RefundId, ReservationId,
    ReturnId, RmaId, ServiceOrderId, Sku, Spu,
};
use aftersales_adapter::types::{CloseOutcome, LineRef, Notification, ShipmentState};
use aftersales_adapter::{IdempotencyKey, InboundEvent, RefundStatus};
use aftersales_money::Money;

use crate::clock::Rng;
use crate::config::Fault;

/// An order to create with [`Sim::create_order`](crate::Sim::create_order).
#[derive(Debug, Clone)]
pub struct NewOrder {
    /// The order id.
    pub order_id: OrderId,
    /// The buyer.
    pub buyer_id: BuyerId,
    /// Its lines.
    pub lines: Vec<NewLine>,
    /// The shipping fee paid (zero for virtual goods).
    pub shipping_fee: Money,
}

/// One line of a [`NewOrder`].
#[derive(Debug, Clone)]
pub struct NewLine {
    /// The line id.
    pub line_id: LineId,
    /// The SKU.
    pub sku: Sku,
    /// Its SPU.
    pub spu: Spu,
    /// Units sold.
    pub quantity: u32,
    /// List price of one unit.
    pub unit_price: Money,
    /// Paid for the whole line after discounts.
    pub paid: Money,
    /// For virtual goods: grant an entitlement of this many units (lessons).
    pub entitlement_units: Option<u32>,
}

/// A simulated order.
#[derive(Debug, Clone, PartialEq)]
pub struct SimOrder {
    /// The order id.
    pub order_id: OrderId,
    /// The buyer.
    pub buyer_id: BuyerId,
    /// The payment that paid it.
    pub payment_id: PaymentId,
    /// Its lines.
    pub lines: Vec<SimLine>,
    /// The shipping fee paid.
    pub shipping_fee: Money,
    /// Where the goods are.
    pub shipment: ShipmentState,
    /// The warehouse stopped the shipment.
    pub intercepted: bool,
    /// The carrier is bringing the parcel back.
    pub carrier_intercepted: bool,
    /// Lines under after-sales, per service order.
    pub marks: BTreeMap<ServiceOrderId, Vec<LineRef>>,
    /// Refunds reported back by after-sales.
    pub reported_refunds: Vec<(ServiceOrderId, RefundId, Money)>,
    /// Final outcomes reported, per service order.
    pub closed: BTreeMap<ServiceOrderId, (CloseOutcome, Option<String>)>,
    /// Cancelled on the order system (`order.cancel`), by this service order.
    pub cancelled_by: Option<ServiceOrderId>,
    /// The order-level coupon, when one was set with [`Sim::set_order_details`](crate::Sim::set_order_details).
    pub coupon: Option<Money>,
    /// When it was paid (the simulator's clock at creation), Unix milliseconds.
    pub paid_at: i64,
    /// When it shipped, Unix milliseconds.
    pub shipped_at: Option<i64>,
    /// When it was delivered, Unix milliseconds.
    pub delivered_at: Option<i64>,
}

/// Facts about an order beyond its lines and amounts, for the rules: set with
/// [`Sim::set_order_details`](crate::Sim::set_order_details).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OrderDetails {
    /// The order-level coupon (each line's `paid` must then be net of its share, and each
    /// line's `line_discount` set).
    pub coupon: Option<Money>,
    /// Overrides when it was paid, Unix milliseconds.
    pub paid_at: Option<i64>,
}

/// Facts about one line beyond its amounts: set with
/// [`Sim::set_line_details`](crate::Sim::set_line_details).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LineDetails {
    /// The line's own discount (not the coupon).
    pub line_discount: Option<Money>,
    /// The product category.
    pub category: Option<String>,
    /// `unsealed`, `activated`, `custom_made`, `perishable`.
    pub flags: Vec<String>,
    /// The course a virtual line sells.
    pub course_id: Option<String>,
}

/// One line of a [`SimOrder`].
#[derive(Debug, Clone, PartialEq)]
pub struct SimLine {
    /// The line id.
    pub line_id: LineId,
    /// The SKU.
    pub sku: Sku,
    /// Its SPU.
    pub spu: Spu,
    /// Units sold.
    pub quantity: u32,
    /// List price of one unit.
    pub unit_price: Money,
    /// Paid for the line after discounts.
    pub paid: Money,
    /// The entitlement it granted (virtual goods).
    pub entitlement_id: Option<EntitlementId>,
    /// Category, flags, discount and course, when set.
    pub details: LineDetails,
}

/// A payment captured for an order.
#[derive(Debug, Clone, PartialEq)]
pub struct SimPayment {
    /// The payment id.
    pub payment_id: PaymentId,
    /// The order it paid.
    pub order_id: OrderId,
    /// The amount captured.
    pub captured: Money,
}

/// Where a return (RMA) stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReturnState {
    /// Opened, the parcel has not arrived.
    AwaitingArrival,
    /// The parcel arrived, not inspected yet.
    Received,
    /// Inspected.
    Inspected {
        /// Whether the goods are the right ones, undamaged.
        passed: bool,
        /// What the inspector wrote.
        reason: Option<String>,
    },
    /// Back in sellable stock.
    Restocked,
    /// Sent back to the buyer after a failed inspection.
    ReturnedToBuyer {
        /// The parcel sent back.
        parcel_id: ParcelId,
    },
    /// Cancelled before arrival.
    Cancelled,
}

/// A return (RMA).
#[derive(Debug, Clone, PartialEq)]
pub struct SimReturn {
    /// The warehouse's return id.
    pub rma_id: RmaId,
    /// The order the goods came from.
    pub order_id: OrderId,
    /// The service order.
    pub service_order_id: ServiceOrderId,
    /// The lines expected back.
    pub lines: Vec<LineRef>,
    /// A door-to-door pickup was booked.
    pub pickup: bool,
    /// Our reference for it: the idempotency key of the call that opened it.
    pub reference: IdempotencyKey,
    /// Where it stands.
    pub state: ReturnState,
}

/// How a received return's inspection goes, for [`Sim::receive_return`](crate::Sim::receive_return).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspection {
    /// The right goods, undamaged.
    Pass,
    /// Wrong or damaged goods.
    Fail(String),
    /// Drawn at random with the configured `wrong_item` rate.
    Random,
}

/// A stock reservation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimReservation {
    /// Its id.
    pub reservation_id: ReservationId,
    /// The SKU reserved.
    pub sku: Sku,
    /// Units reserved.
    pub quantity: u32,
    /// Whether it is still held (not released, not shipped).
    pub state: ReservationState,
}

/// Where a reservation stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReservationState {
    /// Held.
    Active,
    /// Given back to stock.
    Released,
    /// Shipped as a replacement.
    Shipped,
}

/// Why a parcel left the warehouse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParcelKind {
    /// A replacement item (exchange).
    Replacement,
    /// Goods that failed inspection, sent back to the buyer.
    ReturnToBuyer,
}

/// A parcel sent by the warehouse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimParcel {
    /// Its id.
    pub parcel_id: ParcelId,
    /// Why it was sent.
    pub kind: ParcelKind,
    /// The order concerned.
    pub order_id: OrderId,
    /// Delivered to the buyer.
    pub delivered: bool,
}

/// An entitlement (course, membership).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimEntitlement {
    /// Its id.
    pub entitlement_id: EntitlementId,
    /// Who holds it.
    pub buyer_id: BuyerId,
    /// What it is.
    pub sku: Sku,
    /// Units bought (after partial revocations).
    pub total: u32,
    /// Units used.
    pub consumed: u32,
    /// Still granted.
    pub active: bool,
    /// Units taken away by partial revocations, given back by a regrant.
    pub revoked_units: u32,
}

/// What a ledger entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LedgerKind {
    /// Money back to the buyer.
    Refund,
    /// Money taken from the buyer.
    Charge,
    /// Money from the shipping insurer to the buyer.
    InsuranceClaim,
}

/// One money movement at the simulated payment platform.
#[derive(Debug, Clone, PartialEq)]
pub struct LedgerEntry {
    /// Its place in the ledger, from 1.
    pub seq: u64,
    /// What it is.
    pub kind: LedgerKind,
    /// The platform id (refund id, charge id, claim id).
    pub id: String,
    /// The payment it is against (refunds and charges).
    pub payment_id: Option<PaymentId>,
    /// The service order it belongs to, when the caller said.
    pub service_order_id: Option<ServiceOrderId>,
    /// The amount.
    pub amount: Money,
    /// The idempotency key of the call that made it.
    pub key: IdempotencyKey,
    /// For refunds: where it stands; others are `Succeeded`.
    pub status: RefundStatus,
    /// When it was accepted.
    pub at: SystemTime,
    /// For pending refunds: when it settles.
    pub(crate) settle_at: Option<SystemTime>,
}

/// A message sent through `notify.send`.
#[derive(Debug, Clone, PartialEq)]
pub struct SentMessage {
    /// The message.
    pub notification: Notification,
    /// The key of the call that sent it.
    pub key: IdempotencyKey,
}

/// One call that reached the simulator, with the key it carried (or none for reads).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRecord {
    /// The action, `system.action`.
    pub action: &'static str,
    /// The idempotency key, for mutating calls.
    pub key: Option<IdempotencyKey>,
}

/// Where a return opened on the order system (`order.request_return`) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlatformReturnState {
    /// Awaiting the merchant's decision.
    Requested,
    /// Approved.
    Approved,
    /// Declined.
    Declined,
    /// Cancelled after approval (the compensation of a request).
    Cancelled,
}

/// A return opened on the order system, as Shopify keeps one beside the warehouse's RMA.
#[derive(Debug, Clone, PartialEq)]
pub struct SimPlatformReturn {
    /// The order.
    pub order_id: OrderId,
    /// The service order that asked.
    pub service_order_id: ServiceOrderId,
    /// The lines and quantities.
    pub lines: Vec<LineRef>,
    /// Where it stands.
    pub state: PlatformReturnState,
}

/// The first result recorded for a key.
#[derive(Debug, Clone)]
pub(crate) struct Recorded {
    pub(crate) action: &'static str,
    /// The request as JSON text. serde_json's maps keep their keys sorted, so the same
    /// parameters give the same text; text keeps ~100 bytes per call where a `Value` tree
    /// kept over a kilobyte (a simulator serving a long demo or a benchmark records every key).
    pub(crate) fingerprint: String,
    pub(crate) response: serde_json::Value,
}

/// The whole mutable world, behind one lock.
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) rng: Rng,
    pub(crate) next_id: u64,
    pub(crate) orders: BTreeMap<OrderId, SimOrder>,
    pub(crate) payments: BTreeMap<PaymentId, SimPayment>,
    pub(crate) stock: BTreeMap<Sku, i64>,
    pub(crate) product_units: BTreeMap<Sku, u32>,
    pub(crate) reservations: BTreeMap<ReservationId, SimReservation>,
    pub(crate) parcels: BTreeMap<ParcelId, SimParcel>,
    pub(crate) returns: BTreeMap<RmaId, SimReturn>,
    pub(crate) platform_returns: BTreeMap<ReturnId, SimPlatformReturn>,
    pub(crate) entitlements: BTreeMap<EntitlementId, SimEntitlement>,
    pub(crate) ledger: Vec<LedgerEntry>,
    pub(crate) recorded: HashMap<(&'static str, IdempotencyKey), Recorded>,
    pub(crate) scripts: HashMap<String, VecDeque<Fault>>,
    pub(crate) outbox: Vec<InboundEvent>,
    pub(crate) messages: Vec<SentMessage>,
    pub(crate) calls: Vec<CallRecord>,
}

impl State {
    pub(crate) fn new(seed: u64) -> State {
        State {
            rng: Rng::new(seed),
            next_id: 0,
            orders: BTreeMap::new(),
            payments: BTreeMap::new(),
            stock: BTreeMap::new(),
            product_units: BTreeMap::new(),
            reservations: BTreeMap::new(),
            parcels: BTreeMap::new(),
            returns: BTreeMap::new(),
            platform_returns: BTreeMap::new(),
            entitlements: BTreeMap::new(),
            ledger: Vec::new(),
            recorded: HashMap::new(),
            scripts: HashMap::new(),
            outbox: Vec::new(),
            messages: Vec::new(),
            calls: Vec::new(),
        }
    }

    /// A fresh id with a prefix: `re_1`, `rma_2`, ...
    pub(crate) fn id(&mut self, prefix: &str) -> String {
        self.next_id += 1;
        format!("{prefix}_{}", self.next_id)
    }

    /// Queues an inbound event.
    pub(crate) fn emit(&mut self, name: &str, correlation: &str, payload: serde_json::Value) {
        let dedupe_id = self.id("evt");
        self.outbox.push(InboundEvent {
            dedupe_id,
            name: name.to_owned(),
            correlation: correlation.to_owned(),
            payload,
        });
    }

    /// Refunded so far against a payment: pending, needing action or succeeded.
    pub(crate) fn refunded(
        &self,
        payment_id: &PaymentId,
        currency: aftersales_money::Currency,
    ) -> Result<Money, aftersales_money::MoneyError> {
        Money::sum(
            currency,
            self.ledger
                .iter()
                .filter(|e| {
                    e.kind == LedgerKind::Refund
                        && e.payment_id.as_ref() == Some(payment_id)
                        && matches!(
                            e.status,
                            RefundStatus::Pending
                                | RefundStatus::RequiresAction
                                | RefundStatus::Succeeded
                        )
                })
                .map(|e| &e.amount),
        )
    }
}
