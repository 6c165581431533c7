//! The service order (售后服务单) and the vocabulary it is made of.

use std::fmt;

use aftersales_money::Money;
use serde::{Deserialize, Serialize};

use crate::error::DomainError;
use crate::ids::{
    BusinessLineId, EvidenceRef, LineId, OrderId, ServiceOrderId, Sku, Spu, UnixMillis,
    WorkflowInstanceId,
};
use crate::rules::Eligible;

/// The four kinds of after-sales request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AfterSalesType {
    /// Cancel after payment, before shipment (支付后取消): intercept the shipment, refund.
    CancelAfterPayment,
    /// Money back, no goods back (仅退款).
    RefundOnly,
    /// Goods back, then money back (退货退款); for virtual goods, refund and revoke.
    ReturnRefund,
    /// Swap for the same SPU at the same price (换货).
    Exchange,
}

impl AfterSalesType {
    /// The snake_case name used in config and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            AfterSalesType::CancelAfterPayment => "cancel_after_payment",
            AfterSalesType::RefundOnly => "refund_only",
            AfterSalesType::ReturnRefund => "return_refund",
            AfterSalesType::Exchange => "exchange",
        }
    }
}

impl fmt::Display for AfterSalesType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What kind of goods a line, a request or a business line deals in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GoodsKind {
    /// Goods that ship (实体商品); the after-sales unit is an order line and a quantity.
    Physical,
    /// Entitlements delivered in minutes (虚拟商品); the after-sales unit is a course line.
    Virtual,
    /// Physical and virtual lines sold together.
    Bundle,
}

impl GoodsKind {
    /// The kind of a set of lines: all physical, all virtual, or a mix (bundle).
    ///
    /// An empty set counts as physical.
    pub fn of(kinds: impl IntoIterator<Item = GoodsKind>) -> GoodsKind {
        let mut physical = false;
        let mut virtual_ = false;
        for kind in kinds {
            match kind {
                GoodsKind::Physical => physical = true,
                GoodsKind::Virtual => virtual_ = true,
                GoodsKind::Bundle => return GoodsKind::Bundle,
            }
        }
        match (physical, virtual_) {
            (true, true) => GoodsKind::Bundle,
            (false, true) => GoodsKind::Virtual,
            _ => GoodsKind::Physical,
        }
    }
}

/// Who is responsible for the after-sales request, which decides the no-reason window,
/// the exclusions and who pays shipping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// The buyer changed their mind or chose wrongly; includes "no reason".
    Buyer,
    /// The merchant sent something wrong, damaged, faulty, or nothing at all.
    Merchant,
}

/// Why the buyer asks for after-sales.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reason {
    /// Seven days, no reason (七天无理由).
    NoReason,
    /// The buyer ordered the wrong size.
    WrongSize,
    /// The goods arrived damaged.
    Damaged,
    /// The merchant sent another item.
    WrongItem,
    /// The goods never arrived.
    NotReceived,
    /// The goods are faulty or not as described.
    Quality,
    /// Anything else; treated as the buyer's responsibility until a human decides otherwise.
    Other,
}

impl Reason {
    /// Whether the merchant is at fault for this reason.
    pub fn fault(&self) -> Fault {
        match self {
            Reason::Damaged | Reason::WrongItem | Reason::NotReceived | Reason::Quality => {
                Fault::Merchant
            }
            Reason::NoReason | Reason::WrongSize | Reason::Other => Fault::Buyer,
        }
    }
}

/// The states a service order goes through (DOMAIN.md, "States a service order goes through").
///
/// Business-line workflows may skip states; the only rules kept here are that a final
/// state is never left and nothing goes back to `requested`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ServiceOrderState {
    /// Stored, nothing decided yet.
    Requested,
    /// Waiting for the merchant's decision.
    UnderReview,
    /// A sales agent is trying to keep the sale (挽留).
    Retention,
    /// The merchant (or a timeout) approved the request.
    Approved,
    /// The request was refused. Final.
    Rejected,
    /// Waiting for the buyer to ship the goods back.
    AwaitingReturnShipment,
    /// The return parcel is on its way.
    InTransit,
    /// The warehouse received the return.
    Received,
    /// The warehouse inspected the return.
    Inspected,
    /// The refund is being paid.
    Refunding,
    /// The refund was paid.
    Refunded,
    /// The exchange item is being shipped.
    Reshipping,
    /// The exchange item was delivered.
    Delivered,
    /// Done. Final.
    Completed,
    /// The buyer withdrew or a timeout closed it. Final.
    Closed,
    /// Needs a human. Final for the workflow.
    Failed,
}

impl ServiceOrderState {
    /// True for the end states: rejected, completed, closed and failed.
    pub fn is_final(&self) -> bool {
        matches!(
            self,
            ServiceOrderState::Rejected
                | ServiceOrderState::Completed
                | ServiceOrderState::Closed
                | ServiceOrderState::Failed
        )
    }

    /// The snake_case name used in config and JSON.
    pub fn as_str(&self) -> &'static str {
        match self {
            ServiceOrderState::Requested => "requested",
            ServiceOrderState::UnderReview => "under_review",
            ServiceOrderState::Retention => "retention",
            ServiceOrderState::Approved => "approved",
            ServiceOrderState::Rejected => "rejected",
            ServiceOrderState::AwaitingReturnShipment => "awaiting_return_shipment",
            ServiceOrderState::InTransit => "in_transit",
            ServiceOrderState::Received => "received",
            ServiceOrderState::Inspected => "inspected",
            ServiceOrderState::Refunding => "refunding",
            ServiceOrderState::Refunded => "refunded",
            ServiceOrderState::Reshipping => "reshipping",
            ServiceOrderState::Delivered => "delivered",
            ServiceOrderState::Completed => "completed",
            ServiceOrderState::Closed => "closed",
            ServiceOrderState::Failed => "failed",
        }
    }

    /// Every state, in the order of the typical flow.
    pub const ALL: [ServiceOrderState; 16] = [
        ServiceOrderState::Requested,
        ServiceOrderState::UnderReview,
        ServiceOrderState::Retention,
        ServiceOrderState::Approved,
        ServiceOrderState::Rejected,
        ServiceOrderState::AwaitingReturnShipment,
        ServiceOrderState::InTransit,
        ServiceOrderState::Received,
        ServiceOrderState::Inspected,
        ServiceOrderState::Refunding,
        ServiceOrderState::Refunded,
        ServiceOrderState::Reshipping,
        ServiceOrderState::Delivered,
        ServiceOrderState::Completed,
        ServiceOrderState::Closed,
        ServiceOrderState::Failed,
    ];
}

impl fmt::Display for ServiceOrderState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The item an exchange line should be swapped for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Replacement {
    /// The SKU the buyer wants instead (another size or colour; may be the same SKU).
    pub sku: Sku,
    /// Its SPU, which must be the original line's SPU.
    pub spu: Spu,
    /// Its unit price, which must equal the original line's unit price.
    pub unit_price: Money,
}

/// One line of a request: which order line, how many units, and for an exchange what to
/// swap them for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestLine {
    /// The order line.
    pub line_id: LineId,
    /// Units asked for. Physical lines allow part of the bought quantity; virtual (course)
    /// lines are always taken whole.
    pub quantity: u32,
    /// For exchanges only: the replacement. Must be absent for every other type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replacement: Option<Replacement>,
}

/// What a buyer asks for, before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AfterSalesRequest {
    /// The order the request is about.
    pub order_id: OrderId,
    /// Cancel, refund only, return and refund, or exchange.
    pub after_sales_type: AfterSalesType,
    /// The lines and quantities.
    pub lines: Vec<RequestLine>,
    /// Why.
    pub reason: Reason,
    /// Photos and text the buyer attached, kept elsewhere.
    #[serde(default)]
    pub evidence: Vec<EvidenceRef>,
    /// The refund the buyer asks for; zero for an exchange. The refund paid is the smaller of
    /// this and what the rules entitle the buyer to.
    pub requested_amount: Money,
}

/// A stored after-sales service order (售后服务单).
///
/// Built only through [`ServiceOrder::open`], which takes the [`Eligible`] verdict of
/// [`crate::check`] as proof that the rules passed. Fields are read through getters; the
/// state changes through [`ServiceOrder::transition`] and [`ServiceOrder::approve`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceOrder {
    id: ServiceOrderId,
    business_line: BusinessLineId,
    after_sales_type: AfterSalesType,
    goods: GoodsKind,
    order_id: OrderId,
    lines: Vec<RequestLine>,
    reason: Reason,
    evidence: Vec<EvidenceRef>,
    requested_amount: Money,
    approved_amount: Option<Money>,
    state: ServiceOrderState,
    workflow_instance: WorkflowInstanceId,
    created_at: UnixMillis,
}

/// What [`ServiceOrder::open`] needs besides the request and the verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewServiceOrder {
    /// The id to store it under.
    pub id: ServiceOrderId,
    /// The business line whose rules were applied.
    pub business_line: BusinessLineId,
    /// The workflow instance that will drive it.
    pub workflow_instance: WorkflowInstanceId,
    /// When it was created (the caller's clock).
    pub created_at: UnixMillis,
}

impl ServiceOrder {
    /// Opens a service order in state `requested` for a request the rules accepted.
    pub fn open(new: NewServiceOrder, request: AfterSalesRequest, verdict: &Eligible) -> Self {
        ServiceOrder {
            id: new.id,
            business_line: new.business_line,
            after_sales_type: request.after_sales_type,
            goods: verdict.goods,
            order_id: request.order_id,
            lines: request.lines,
            reason: request.reason,
            evidence: request.evidence,
            requested_amount: request.requested_amount,
            approved_amount: None,
            state: ServiceOrderState::Requested,
            workflow_instance: new.workflow_instance,
            created_at: new.created_at,
        }
    }

    /// Moves to `to`.
    ///
    /// Refuses to leave a final state and to go back to `requested`; every other move is the
    /// workflow's business, so business lines can skip or add states.
    pub fn transition(&mut self, to: ServiceOrderState) -> Result<(), DomainError> {
        if self.state.is_final() || to == ServiceOrderState::Requested {
            return Err(DomainError::InvalidTransition {
                id: self.id.clone(),
                from: self.state,
                to,
            });
        }
        self.state = to;
        Ok(())
    }

    /// Approves the request for `amount` and moves to `approved`.
    ///
    /// The amount may be below the requested amount (the merchant agreed to less) but never
    /// above it, never negative, and in the request's currency. Approval is possible only
    /// from `requested`, `under_review` or `retention`.
    pub fn approve(&mut self, amount: Money) -> Result<(), DomainError> {
        if !matches!(
            self.state,
            ServiceOrderState::Requested
                | ServiceOrderState::UnderReview
                | ServiceOrderState::Retention
        ) {
            return Err(DomainError::InvalidTransition {
                id: self.id.clone(),
                from: self.state,
                to: ServiceOrderState::Approved,
            });
        }
        if amount.is_negative() {
            return Err(DomainError::NegativeAmount(amount));
        }
        if amount.checked_cmp(&self.requested_amount)? == std::cmp::Ordering::Greater {
            return Err(DomainError::ApprovalAboveRequest {
                approved: amount,
                requested: self.requested_amount,
            });
        }
        self.approved_amount = Some(amount);
        self.state = ServiceOrderState::Approved;
        Ok(())
    }

    /// The service order's id.
    pub fn id(&self) -> &ServiceOrderId {
        &self.id
    }

    /// The business line whose rules apply.
    pub fn business_line(&self) -> &BusinessLineId {
        &self.business_line
    }

    /// Cancel, refund only, return and refund, or exchange.
    pub fn after_sales_type(&self) -> AfterSalesType {
        self.after_sales_type
    }

    /// Physical, virtual or bundle, from the requested lines.
    pub fn goods(&self) -> GoodsKind {
        self.goods
    }

    /// The order.
    pub fn order_id(&self) -> &OrderId {
        &self.order_id
    }

    /// The requested lines and quantities.
    pub fn lines(&self) -> &[RequestLine] {
        &self.lines
    }

    /// Why the buyer asked.
    pub fn reason(&self) -> Reason {
        self.reason
    }

    /// References to the buyer's evidence.
    pub fn evidence(&self) -> &[EvidenceRef] {
        &self.evidence
    }

    /// The refund the buyer asked for.
    pub fn requested_amount(&self) -> Money {
        self.requested_amount
    }

    /// The refund approved so far; `None` until approval.
    pub fn approved_amount(&self) -> Option<Money> {
        self.approved_amount
    }

    /// The current state.
    pub fn state(&self) -> ServiceOrderState {
        self.state
    }

    /// The workflow instance driving it.
    pub fn workflow_instance(&self) -> &WorkflowInstanceId {
        &self.workflow_instance
    }

    /// When it was created.
    pub fn created_at(&self) -> UnixMillis {
        self.created_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_know_who_is_at_fault() {
        assert_eq!(Reason::NoReason.fault(), Fault::Buyer);
        assert_eq!(Reason::WrongSize.fault(), Fault::Buyer);
        assert_eq!(Reason::Other.fault(), Fault::Buyer);
        assert_eq!(Reason::Damaged.fault(), Fault::Merchant);
        assert_eq!(Reason::WrongItem.fault(), Fault::Merchant);
        assert_eq!(Reason::NotReceived.fault(), Fault::Merchant);
        assert_eq!(Reason::Quality.fault(), Fault::Merchant);
    }

    #[test]
    fn final_states_are_the_four_end_states() {
        let finals: Vec<&str> = ServiceOrderState::ALL
            .iter()
            .filter(|s| s.is_final())
            .map(|s| s.as_str())
            .collect();
        assert_eq!(finals, ["rejected", "completed", "closed", "failed"]);
    }

    #[test]
    fn state_names_match_serde() {
        for state in ServiceOrderState::ALL {
            let json = serde_json::to_string(&state).unwrap();
            assert_eq!(json, format!("\"{}\"", state.as_str()));
        }
        let t: AfterSalesType = serde_json::from_str(r#""cancel_after_payment""#).unwrap();
        assert_eq!(t, AfterSalesType::CancelAfterPayment);
        assert_eq!(t.to_string(), "cancel_after_payment");
    }

    #[test]
    fn goods_kind_of_lines() {
        assert_eq!(GoodsKind::of([]), GoodsKind::Physical);
        assert_eq!(GoodsKind::of([GoodsKind::Virtual]), GoodsKind::Virtual);
        assert_eq!(
            GoodsKind::of([GoodsKind::Physical, GoodsKind::Virtual]),
            GoodsKind::Bundle
        );
        assert_eq!(
            GoodsKind::of([GoodsKind::Physical, GoodsKind::Physical]),
            GoodsKind::Physical
        );
    }
}
