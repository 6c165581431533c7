//! The five adapter traits and the capability set each adapter declares.

use std::collections::BTreeSet;

use async_trait::async_trait;

use crate::catalogue::{self, System};
use crate::error::AdapterError;
use crate::key::IdempotencyKey;
use crate::types::{
    ApproveReturn, CancelOrder, CarrierIntercept, CarrierInterceptOutput, Charge, ChargeOutput,
    ClaimOutput, ClearAfterSales, CloseAfterSales, Consumption, CreateReturn, CreateReturnOutput,
    DeclineReturn, EntitlementRef, GetOrder, Grant, GrantOutput, InsuranceClaim, InterceptOutput,
    InterceptShipment, MarkAfterSales, Notification, Order, ParcelOutput, Refund, RefundLookup,
    RefundOutcome, RefundState, ReleaseStock, ReportRefund, RequestReturn, RequestReturnOutput,
    ReserveStock, ReserveStockOutput, Revoke, RmaRef, ShipReplacement,
};

/// The set of catalogue actions (`system.action`) an adapter supports.
///
/// `aftersales validate` checks that every action a business line's workflows call is in
/// the set of the adapter bound to that system.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Capabilities {
    actions: BTreeSet<&'static str>,
    /// Supported actions outside the payment system that move money themselves (Shopify's
    /// `refundCreate` on a Shopify-processed gateway behind `order.report_refund`).
    moves_money: BTreeSet<&'static str>,
}

/// Actions every adapter of a system must implement; the others are optional and default
/// to [`ErrorClass::Unsupported`](crate::ErrorClass::Unsupported).
const REQUIRED: &[&str] = &[
    "order.get",
    "order.mark_after_sales",
    "order.clear_after_sales",
    "order.report_refund",
    "order.close_after_sales",
    "warehouse.intercept_shipment",
    "warehouse.create_return",
    "warehouse.cancel_return",
    "fulfillment.get_consumption",
    "fulfillment.revoke",
    "fulfillment.regrant",
    "payment.refund",
    "payment.refund_status",
    "notify.send",
];

impl Capabilities {
    /// No action at all.
    pub fn none() -> Capabilities {
        Capabilities::default()
    }

    /// The actions every adapter of `system` must implement.
    pub fn required(system: System) -> Capabilities {
        let prefix = system.as_str();
        Capabilities {
            moves_money: BTreeSet::new(),
            actions: REQUIRED
                .iter()
                .copied()
                .filter(|a| a.split_once('.').map(|(s, _)| s) == Some(prefix))
                .collect(),
        }
    }

    /// Every catalogue action of `system`.
    pub fn all(system: System) -> Capabilities {
        let mut caps = Capabilities::none();
        for spec in catalogue::catalogue().iter().filter(|a| a.system == system) {
            caps.actions.insert(spec.full_name_static());
        }
        caps
    }

    /// Adds an action by its full name. Names outside the catalogue are ignored, so a
    /// capability set never claims an action the engine cannot dispatch.
    pub fn with(mut self, action: &str) -> Capabilities {
        if let Some(spec) = catalogue::find_full(action) {
            self.actions.insert(spec.full_name_static());
        }
        self
    }

    /// Adds an action that moves money by itself although it is not `payment.refund`, so
    /// the validator refuses a business line that would pay the buyer through it and
    /// through its payment adapter (AS-BL-0109). Names outside the catalogue are ignored.
    pub fn with_money_moving(mut self, action: &str) -> Capabilities {
        if let Some(spec) = catalogue::find_full(action) {
            self.actions.insert(spec.full_name_static());
            self.moves_money.insert(spec.full_name_static());
        }
        self
    }

    /// True when `action` is supported and moves money by itself
    /// ([`with_money_moving`](Capabilities::with_money_moving)).
    pub fn moves_money(&self, action: &str) -> bool {
        self.moves_money.contains(action)
    }

    /// True when `action` (`system.action`) is supported.
    pub fn supports(&self, action: &str) -> bool {
        self.actions.contains(action)
    }

    /// The supported actions, sorted.
    pub fn actions(&self) -> impl Iterator<Item = &'static str> + '_ {
        self.actions.iter().copied()
    }

    /// Both sets together.
    pub fn union(mut self, other: &Capabilities) -> Capabilities {
        self.actions.extend(other.actions.iter().copied());
        self.moves_money.extend(other.moves_money.iter().copied());
        self
    }

    /// The actions of `used` that are not supported, sorted and without repeats.
    pub fn missing<'a>(&self, used: impl IntoIterator<Item = &'a str>) -> Vec<&'a str> {
        let missing: BTreeSet<&'a str> = used
            .into_iter()
            .filter(|a| !self.actions.contains(a))
            .collect();
        missing.into_iter().collect()
    }
}

/// The order system: reads orders, marks lines under after-sales, reconciles refunds, and
/// (optionally) opens, approves and declines platform-side returns and cancels orders.
#[async_trait]
pub trait OrderSystem: Send + Sync {
    /// The platform name used in errors (`sim`, `shopify`).
    fn platform(&self) -> &'static str;

    /// The `order.*` actions this adapter supports.
    fn capabilities(&self) -> Capabilities;

    /// `order.get`: reads an order.
    async fn get(&self, req: &GetOrder) -> Result<Order, AdapterError>;

    /// `order.mark_after_sales`: tells the order system that lines are under after-sales.
    async fn mark_after_sales(
        &self,
        req: &MarkAfterSales,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError>;

    /// `order.clear_after_sales`: lifts the mark (compensation of `mark_after_sales`).
    async fn clear_after_sales(
        &self,
        req: &ClearAfterSales,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError>;

    /// `order.report_refund`: reports a paid refund so the order reconciles its state.
    async fn report_refund(
        &self,
        req: &ReportRefund,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError>;

    /// `order.close_after_sales`: reports the final outcome of a service order.
    async fn close_after_sales(
        &self,
        req: &CloseAfterSales,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError>;

    /// `order.request_return`: opens a return request on the order system, awaiting the
    /// merchant's decision there. A repeat with the same key answers the first return and
    /// opens no second one. Optional.
    async fn request_return(
        &self,
        _req: &RequestReturn,
        _key: &IdempotencyKey,
    ) -> Result<RequestReturnOutput, AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "order.request_return",
        ))
    }

    /// `order.approve_return`: approves a requested return; approving an approved one
    /// changes nothing. Optional.
    async fn approve_return(
        &self,
        _req: &ApproveReturn,
        _key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "order.approve_return",
        ))
    }

    /// `order.decline_return`: declines a requested return (also the compensation of
    /// `request_return`); declining a declined one changes nothing. Optional.
    async fn decline_return(
        &self,
        _req: &DeclineReturn,
        _key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "order.decline_return",
        ))
    }

    /// `order.cancel`: cancels the order on the order system. Moves no money: the line's
    /// payment adapter refunds. Cancelling a cancelled order changes nothing. Optional.
    async fn cancel(&self, _req: &CancelOrder, _key: &IdempotencyKey) -> Result<(), AdapterError> {
        Err(AdapterError::unsupported(self.platform(), "order.cancel"))
    }
}

/// The warehouse (WMS): interceptions, returns, stock and replacement shipments.
#[async_trait]
pub trait Warehouse: Send + Sync {
    /// The platform name used in errors.
    fn platform(&self) -> &'static str;

    /// The `warehouse.*` actions this adapter supports.
    fn capabilities(&self) -> Capabilities;

    /// `warehouse.intercept_shipment`: stops a shipment that has not left yet.
    async fn intercept_shipment(
        &self,
        req: &InterceptShipment,
        key: &IdempotencyKey,
    ) -> Result<InterceptOutput, AdapterError>;

    /// `warehouse.create_return`: opens a return (RMA), using the key as its reference.
    async fn create_return(
        &self,
        req: &CreateReturn,
        key: &IdempotencyKey,
    ) -> Result<CreateReturnOutput, AdapterError>;

    /// `warehouse.cancel_return`: cancels a return that has not arrived.
    async fn cancel_return(&self, req: &RmaRef, key: &IdempotencyKey) -> Result<(), AdapterError>;

    /// `warehouse.carrier_intercept`: asks the carrier to bring a parcel back. Optional.
    async fn carrier_intercept(
        &self,
        _req: &CarrierIntercept,
        _key: &IdempotencyKey,
    ) -> Result<CarrierInterceptOutput, AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "warehouse.carrier_intercept",
        ))
    }

    /// `warehouse.restock`: puts inspected goods back into sellable stock. Optional.
    async fn restock(&self, _req: &RmaRef, _key: &IdempotencyKey) -> Result<(), AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "warehouse.restock",
        ))
    }

    /// `warehouse.reverse_restock`: compensation of `restock`. Optional.
    async fn reverse_restock(
        &self,
        _req: &RmaRef,
        _key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "warehouse.reverse_restock",
        ))
    }

    /// `warehouse.return_to_buyer`: sends goods that failed inspection back. Optional.
    async fn return_to_buyer(
        &self,
        _req: &RmaRef,
        _key: &IdempotencyKey,
    ) -> Result<ParcelOutput, AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "warehouse.return_to_buyer",
        ))
    }

    /// `warehouse.reserve_stock`: reserves a replacement item. Optional.
    async fn reserve_stock(
        &self,
        _req: &ReserveStock,
        _key: &IdempotencyKey,
    ) -> Result<ReserveStockOutput, AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "warehouse.reserve_stock",
        ))
    }

    /// `warehouse.release_stock`: compensation of `reserve_stock`. Optional.
    async fn release_stock(
        &self,
        _req: &ReleaseStock,
        _key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "warehouse.release_stock",
        ))
    }

    /// `warehouse.ship_replacement`: ships a reserved replacement. Optional.
    async fn ship_replacement(
        &self,
        _req: &ShipReplacement,
        _key: &IdempotencyKey,
    ) -> Result<ParcelOutput, AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "warehouse.ship_replacement",
        ))
    }
}

/// The fulfillment system for virtual goods: entitlements and their consumption.
#[async_trait]
pub trait Fulfillment: Send + Sync {
    /// The platform name used in errors.
    fn platform(&self) -> &'static str;

    /// The `fulfillment.*` actions this adapter supports.
    fn capabilities(&self) -> Capabilities;

    /// `fulfillment.get_consumption`: how much of an entitlement was used.
    async fn get_consumption(&self, req: &EntitlementRef) -> Result<Consumption, AdapterError>;

    /// `fulfillment.revoke`: revokes an entitlement, fully or some units.
    async fn revoke(&self, req: &Revoke, key: &IdempotencyKey) -> Result<(), AdapterError>;

    /// `fulfillment.regrant`: restores a revoked entitlement (compensation of `revoke`).
    async fn regrant(&self, req: &EntitlementRef, key: &IdempotencyKey)
    -> Result<(), AdapterError>;

    /// `fulfillment.grant`: grants a new entitlement (virtual exchange). Optional.
    async fn grant(
        &self,
        _req: &Grant,
        _key: &IdempotencyKey,
    ) -> Result<GrantOutput, AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "fulfillment.grant",
        ))
    }
}

/// The payment system: refunds (possibly asynchronous), charges and insurance claims.
#[async_trait]
pub trait Payment: Send + Sync {
    /// The platform name used in errors.
    fn platform(&self) -> &'static str;

    /// The `payment.*` actions this adapter supports.
    fn capabilities(&self) -> Capabilities;

    /// `payment.refund`: refunds an amount against a payment.
    ///
    /// The key goes to the platform's idempotency field; a repeat with the same key returns
    /// the first refund and moves no money. The answer may be
    /// [`RefundStatus::Pending`](crate::RefundStatus::Pending); the final state then arrives
    /// as an inbound event correlated by the refund id, or through
    /// [`refund_status`](Payment::refund_status).
    async fn refund(
        &self,
        req: &Refund,
        key: &IdempotencyKey,
    ) -> Result<RefundOutcome, AdapterError>;

    /// `payment.refund_status`: where a refund stands, by id or by the refund call's key.
    async fn refund_status(&self, lookup: &RefundLookup) -> Result<RefundState, AdapterError>;

    /// `payment.charge`: charges the buyer (exchange shipping). Optional.
    async fn charge(
        &self,
        _req: &Charge,
        _key: &IdempotencyKey,
    ) -> Result<ChargeOutput, AdapterError> {
        Err(AdapterError::unsupported(self.platform(), "payment.charge"))
    }

    /// `payment.insurance_claim`: claims shipping insurance. Optional.
    async fn insurance_claim(
        &self,
        _req: &InsuranceClaim,
        _key: &IdempotencyKey,
    ) -> Result<ClaimOutput, AdapterError> {
        Err(AdapterError::unsupported(
            self.platform(),
            "payment.insurance_claim",
        ))
    }
}

/// Notifications to buyers, merchants and agents.
#[async_trait]
pub trait Notifier: Send + Sync {
    /// The platform name used in errors.
    fn platform(&self) -> &'static str;

    /// The `notify.*` actions this adapter supports.
    fn capabilities(&self) -> Capabilities;

    /// `notify.send`: sends one message; a repeat with the same key sends nothing new.
    async fn send(&self, req: &Notification, key: &IdempotencyKey) -> Result<(), AdapterError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_actions_are_catalogue_actions() {
        for a in REQUIRED {
            assert!(catalogue::find_full(a).is_some(), "{a}");
        }
        let pay = Capabilities::required(System::Payment);
        assert_eq!(
            pay.actions().collect::<Vec<_>>(),
            ["payment.refund", "payment.refund_status"]
        );
        assert!(Capabilities::all(System::Payment).supports("payment.charge"));
    }

    #[test]
    fn missing_lists_unsupported_actions_once() {
        let caps = Capabilities::required(System::Warehouse).with("warehouse.restock");
        assert!(caps.supports("warehouse.restock"));
        assert!(
            !caps
                .clone()
                .with("warehouse.teleport")
                .supports("warehouse.teleport")
        );
        assert_eq!(
            caps.missing([
                "warehouse.restock",
                "warehouse.reserve_stock",
                "warehouse.reserve_stock",
                "payment.refund"
            ]),
            ["payment.refund", "warehouse.reserve_stock"]
        );
    }

    #[test]
    fn a_money_moving_action_is_supported_and_marked() {
        let caps = Capabilities::required(System::Order).with_money_moving("order.report_refund");
        assert!(caps.supports("order.report_refund") && caps.moves_money("order.report_refund"));
        assert!(!caps.moves_money("order.get"));
        let plain = Capabilities::required(System::Order);
        assert!(!plain.moves_money("order.report_refund"));
        assert!(plain.union(&caps).moves_money("order.report_refund"));
    }
}
