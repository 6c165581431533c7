//! Typed requests and responses, one pair per catalogue action.
//!
//! Field names are the catalogue's input and output names, so the JSON form used by
//! [`AdapterSet::dispatch`](crate::AdapterSet::dispatch) is exactly what a workflow sees.
//! Requests refuse unknown fields: a misspelt optional input is an error, not a silent drop.

use aftersales_money::Money;
use serde::{Deserialize, Serialize};

use crate::ids::{
    BuyerId, ChargeId, ClaimId, EntitlementId, LineId, OrderId, ParcelId, PaymentId, RefundId,
    ReservationId, ReturnId, RmaId, ServiceOrderId, Sku, Spu,
};
use crate::key::IdempotencyKey;

// ---------------------------------------------------------------- shared

/// The lines an after-sales request concerns: a line, its SKU and a (possibly partial)
/// quantity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LineRef {
    /// The order line.
    pub line_id: LineId,
    /// The SKU on that line.
    pub sku: Sku,
    /// How many units (at most the line's quantity).
    pub quantity: u32,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An action that writes nothing back (`outputs = []` in the catalogue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Ack {}

// ---------------------------------------------------------------- order system

/// `order.get` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GetOrder {
    /// The order to read.
    pub order_id: OrderId,
}

/// The order's overall state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum OrderStatus {
    /// Paid, not yet shipped.
    Paid,
    /// Handed to the carrier.
    Shipped,
    /// Delivered to the buyer.
    Delivered,
    /// Completed (receipt confirmed).
    Completed,
    /// Cancelled.
    Cancelled,
}

/// Where the goods of an order are, in the warehouse's terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ShipmentState {
    /// Not picked yet: a warehouse interception can still stop it.
    NotShipped,
    /// Picked or packed, not handed over: too late to intercept at the warehouse.
    Picked,
    /// In transit with the carrier.
    Shipped,
    /// Delivered to the buyer.
    Delivered,
}

/// One line of an order, as the order system reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderLine {
    /// The line id.
    pub line_id: LineId,
    /// The SKU sold.
    pub sku: Sku,
    /// The product the SKU belongs to (exchanges stay within one SPU).
    pub spu: Spu,
    /// Units sold.
    pub quantity: u32,
    /// List price of one unit.
    pub unit_price: Money,
    /// What the buyer paid for the whole line, after discounts and coupons.
    pub paid: Money,
    /// For virtual goods: the entitlement this line granted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entitlement_id: Option<EntitlementId>,
    /// The line's own discount (not the order coupon), when the platform reports it. When
    /// absent, `unit_price × quantity − paid` is taken as the line's discount and the order
    /// is assumed to carry no separate coupon.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line_discount: Option<Money>,
    /// The product category (`apparel.tops`), for rule exclusions and return rates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub category: Option<String>,
    /// Facts that can make the line non-returnable: `unsealed`, `activated`, `custom_made`,
    /// `perishable`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<String>,
    /// For virtual goods: the course inside the product this line sells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub course_id: Option<String>,
}

/// `order.get` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Order {
    /// The order's state.
    pub status: OrderStatus,
    /// Its lines.
    pub lines: Vec<OrderLine>,
    /// The amount paid for the whole order (lines after discounts, plus shipping).
    pub paid: Money,
    /// The shipping fee paid.
    pub shipping_fee: Money,
    /// The payment to refund against.
    pub payment_id: PaymentId,
    /// The buyer, when the order system tells.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buyer_id: Option<BuyerId>,
    /// Where the goods are, when the order system knows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipment: Option<ShipmentState>,
    /// The order-level coupon, when the platform reports it apart from the lines (each
    /// line's `line_discount` is then given too, and `paid` is net of both).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub coupon: Option<Money>,
    /// When it was paid, in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at: Option<i64>,
    /// When it was handed to the carrier, in Unix milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shipped_at: Option<i64>,
    /// When the buyer signed for it, in Unix milliseconds (the no-reason window runs from
    /// here).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered_at: Option<i64>,
}

/// `order.mark_after_sales` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarkAfterSales {
    /// The order.
    pub order_id: OrderId,
    /// The service order that holds the lines.
    pub service_order_id: ServiceOrderId,
    /// The lines under after-sales.
    pub lines: Vec<LineRef>,
}

/// `order.clear_after_sales` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClearAfterSales {
    /// The order.
    pub order_id: OrderId,
    /// The service order whose mark is lifted.
    pub service_order_id: ServiceOrderId,
}

/// `order.report_refund` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportRefund {
    /// The order.
    pub order_id: OrderId,
    /// The service order that was refunded.
    pub service_order_id: ServiceOrderId,
    /// The amount refunded.
    pub amount: Money,
    /// The payment system's refund id.
    pub refund_id: RefundId,
}

/// The final outcome of a service order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CloseOutcome {
    /// Done as requested.
    Completed,
    /// Refused by rules or the merchant.
    Rejected,
    /// Withdrawn by the buyer or timed out.
    Closed,
    /// Stopped; a human must look.
    Failed,
}

/// `order.close_after_sales` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CloseAfterSales {
    /// The order.
    pub order_id: OrderId,
    /// The service order that ended.
    pub service_order_id: ServiceOrderId,
    /// How it ended.
    pub outcome: CloseOutcome,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `order.request_return` input: a return request opened on the order system, awaiting the
/// merchant's decision there. Adapters find an earlier request by the idempotency key, so a
/// repeat after a lost answer opens no second return.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestReturn {
    /// The order the goods came from.
    pub order_id: OrderId,
    /// The service order asking.
    pub service_order_id: ServiceOrderId,
    /// The lines and quantities to return.
    pub lines: Vec<LineRef>,
    /// Why the buyer returns, shown to the merchant where the platform supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `order.request_return` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RequestReturnOutput {
    /// The platform's return id.
    pub return_id: ReturnId,
}

/// `order.approve_return` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproveReturn {
    /// The requested return to approve.
    pub return_id: ReturnId,
    /// The service order it belongs to.
    pub service_order_id: ServiceOrderId,
}

/// `order.decline_return` input (also the compensation of `order.request_return`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeclineReturn {
    /// The requested return to decline.
    pub return_id: ReturnId,
    /// The service order it belongs to.
    pub service_order_id: ServiceOrderId,
    /// Why, sent to the buyer where the platform supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// `order.cancel` input: cancels the order on the order system. No money moves there; the
/// line's payment adapter refunds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelOrder {
    /// The order to cancel.
    pub order_id: OrderId,
    /// The service order asking.
    pub service_order_id: ServiceOrderId,
    /// Why, for people.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

// ---------------------------------------------------------------- warehouse

/// `warehouse.intercept_shipment` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InterceptShipment {
    /// The order whose shipment should stop.
    pub order_id: OrderId,
    /// The service order asking.
    pub service_order_id: ServiceOrderId,
    /// The lines to hold back.
    pub lines: Vec<LineRef>,
}

/// What the warehouse answered to an interception.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InterceptResult {
    /// Stopped before leaving: the goods stay in the warehouse.
    Intercepted,
    /// Already picked or shipped: fall back to a return.
    TooLate,
    /// The goods are already back in the warehouse.
    AlreadyReturned,
}

/// `warehouse.intercept_shipment` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct InterceptOutput {
    /// The answer.
    pub result: InterceptResult,
}

/// `warehouse.carrier_intercept` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CarrierIntercept {
    /// The order whose parcel is in transit.
    pub order_id: OrderId,
    /// The service order asking.
    pub service_order_id: ServiceOrderId,
}

/// What the carrier answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CarrierInterceptResult {
    /// The parcel comes back to the warehouse.
    Intercepted,
    /// The carrier could not stop it.
    Failed,
}

/// `warehouse.carrier_intercept` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CarrierInterceptOutput {
    /// The answer.
    pub result: CarrierInterceptResult,
}

/// `warehouse.create_return` input. Adapters send the idempotency key as the platform's
/// return reference (ShipBob `reference_id`), so a repeat finds the same RMA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateReturn {
    /// The order the goods came from.
    pub order_id: OrderId,
    /// The service order.
    pub service_order_id: ServiceOrderId,
    /// The lines and quantities expected back.
    pub lines: Vec<LineRef>,
    /// Book a door-to-door pickup.
    #[serde(default, skip_serializing_if = "is_false")]
    pub pickup: bool,
}

/// `warehouse.create_return` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateReturnOutput {
    /// The warehouse's return id.
    pub rma_id: RmaId,
}

/// Input of the actions that name one return: `warehouse.cancel_return`,
/// `warehouse.restock`, `warehouse.reverse_restock` and `warehouse.return_to_buyer`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RmaRef {
    /// The return.
    pub rma_id: RmaId,
}

/// Output of the actions that send a parcel: `warehouse.return_to_buyer` and
/// `warehouse.ship_replacement`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParcelOutput {
    /// The parcel sent.
    pub parcel_id: ParcelId,
}

/// `warehouse.reserve_stock` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReserveStock {
    /// The SKU to reserve.
    pub sku: Sku,
    /// How many units.
    pub quantity: u32,
}

/// `warehouse.reserve_stock` output: out of stock is an answer, not an error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReserveStockOutput {
    /// False when out of stock.
    pub reserved: bool,
    /// Present when reserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reservation_id: Option<ReservationId>,
}

impl ReserveStockOutput {
    /// A successful reservation.
    pub fn reserved(id: ReservationId) -> ReserveStockOutput {
        ReserveStockOutput {
            reserved: true,
            reservation_id: Some(id),
        }
    }

    /// Not enough stock.
    pub fn out_of_stock() -> ReserveStockOutput {
        ReserveStockOutput {
            reserved: false,
            reservation_id: None,
        }
    }
}

/// `warehouse.release_stock` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseStock {
    /// The reservation to release.
    pub reservation_id: ReservationId,
}

/// `warehouse.ship_replacement` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShipReplacement {
    /// The original order.
    pub order_id: OrderId,
    /// The service order.
    pub service_order_id: ServiceOrderId,
    /// The reservation to ship.
    pub reservation_id: ReservationId,
}

// ---------------------------------------------------------------- fulfillment

/// Input of `fulfillment.get_consumption` and `fulfillment.regrant`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntitlementRef {
    /// The entitlement.
    pub entitlement_id: EntitlementId,
}

/// `fulfillment.get_consumption` output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consumption {
    /// Units used (lessons watched, days used).
    pub consumed: u32,
    /// Units bought.
    pub total: u32,
    /// Whether the entitlement is still granted.
    pub active: bool,
}

/// `fulfillment.revoke` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revoke {
    /// The entitlement.
    pub entitlement_id: EntitlementId,
    /// Units to revoke; all when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub units: Option<u32>,
}

/// `fulfillment.grant` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// Who receives it.
    pub buyer_id: BuyerId,
    /// What is granted.
    pub sku: Sku,
}

/// `fulfillment.grant` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantOutput {
    /// The new entitlement.
    pub entitlement_id: EntitlementId,
}

// ---------------------------------------------------------------- payment

/// `payment.refund` input. The idempotency key travels beside it (Stripe
/// `Idempotency-Key`, Alipay `out_request_no`, WeChat Pay `out_refund_no`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refund {
    /// The payment to refund.
    pub payment_id: PaymentId,
    /// The amount to refund; the platform refuses more than what is left.
    pub amount: Money,
    /// Shown to the buyer where the platform supports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The service order paying it (sent as metadata where the platform supports it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_order_id: Option<ServiceOrderId>,
}

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum RefundStatus {
    /// Accepted, money not yet moved (Stripe `pending`, WeChat `PROCESSING`).
    Pending,
    /// Stuck until someone acts (Stripe `requires_action`, WeChat `ABNORMAL`); not final.
    RequiresAction,
    /// The money went back.
    Succeeded,
    /// The refund failed (Stripe `failed`, WeChat `CLOSED`); a new key is needed to try again.
    Failed,
    /// The refund was cancelled.
    Canceled,
    /// Only from a status query by key: the platform has no refund for that key, so the
    /// refund was never made and may be retried with the same key.
    NotFound,
}

impl RefundStatus {
    /// True for states that will not change any more.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            RefundStatus::Succeeded | RefundStatus::Failed | RefundStatus::Canceled
        )
    }
}

/// `payment.refund` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundOutcome {
    /// The platform's refund id.
    pub refund_id: RefundId,
    /// `succeeded` or `pending` (anything not final is reported as pending by dispatch).
    pub status: RefundStatus,
}

/// Which refund a `payment.refund_status` query asks about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RefundLookup {
    /// By the platform's refund id.
    Id(RefundId),
    /// By the idempotency key of the refund call, after an unknown outcome (Alipay
    /// `out_request_no` with the trade, WeChat Pay `out_refund_no`).
    Key {
        /// The payment the refund was made against.
        payment_id: PaymentId,
        /// The key the refund call carried.
        key: IdempotencyKey,
    },
}

/// `payment.refund_status` input, JSON form: either `refund_id`, or `payment_id` with
/// `request_key`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundStatusInput {
    /// The refund id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<RefundId>,
    /// The payment, for a query by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payment_id: Option<PaymentId>,
    /// The idempotency key of the refund call, for a query by key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_key: Option<IdempotencyKey>,
}

impl RefundStatusInput {
    /// The lookup this input names, or a message saying what is missing.
    pub fn lookup(self) -> Result<RefundLookup, &'static str> {
        match (self.refund_id, self.payment_id, self.request_key) {
            (Some(id), None, None) => Ok(RefundLookup::Id(id)),
            (None, Some(payment_id), Some(key)) => Ok(RefundLookup::Key { payment_id, key }),
            _ => Err("give either `refund_id`, or both `payment_id` and `request_key`"),
        }
    }
}

/// `payment.refund_status` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundState {
    /// Where the refund stands.
    pub status: RefundStatus,
    /// The refund id; absent only when the status is `not_found`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<RefundId>,
}

/// `payment.charge` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Charge {
    /// The original payment, for its payment method.
    pub payment_id: PaymentId,
    /// The amount to charge.
    pub amount: Money,
    /// Shown to the buyer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The service order charging it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_order_id: Option<ServiceOrderId>,
}

/// `payment.charge` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChargeOutput {
    /// The new charge.
    pub charge_id: ChargeId,
}

/// `payment.insurance_claim` input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InsuranceClaim {
    /// The order.
    pub order_id: OrderId,
    /// The service order whose return postage is reimbursed.
    pub service_order_id: ServiceOrderId,
    /// The postage to reimburse.
    pub amount: Money,
}

/// `payment.insurance_claim` output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimOutput {
    /// The insurer's claim id.
    pub claim_id: ClaimId,
}

// ---------------------------------------------------------------- notify

/// Who a message goes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Recipient {
    /// The buyer.
    Buyer,
    /// The merchant.
    Merchant,
    /// A sales or service agent.
    Agent,
}

/// `notify.send` input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Notification {
    /// Who receives it.
    pub to: Recipient,
    /// The message template.
    pub template: String,
    /// Values for the template.
    #[serde(default, skip_serializing_if = "serde_json::Map::is_empty")]
    pub data: serde_json::Map<String, serde_json::Value>,
}
