//! An adapter that only describes itself: what a factory returns when it is built for
//! validation ([`BuildContext::validating`](crate::BuildContext::validating)).
//!
//! Validation needs each adapter's platform name and capabilities, never its secrets. A
//! factory whose secrets must parse (an RSA key in PEM, a 32-byte API key) cannot build its
//! real client from the placeholder values validation supplies, so it returns
//! [`Built::described`] instead, after checking every setting it can check without them.

use std::sync::Arc;

use async_trait::async_trait;

use crate::catalogue::System;
use crate::error::AdapterError;
use crate::key::IdempotencyKey;
use crate::registry::Built;
use crate::traits::{Capabilities, Fulfillment, Notifier, OrderSystem, Payment, Warehouse};
use crate::types::{
    ClearAfterSales, CloseAfterSales, Consumption, CreateReturn, CreateReturnOutput,
    EntitlementRef, GetOrder, InterceptOutput, InterceptShipment, MarkAfterSales, Notification,
    Order, Refund, RefundLookup, RefundOutcome, RefundState, ReportRefund, Revoke, RmaRef,
};

/// Platform name and capabilities, and nothing that acts: every call answers
/// `unsupported`. Never reaches the engine; only validation builds it.
struct Described {
    platform: &'static str,
    capabilities: Capabilities,
}

impl Built {
    /// What a factory returns when building for validation: an adapter of `system` that
    /// reports `platform` and `capabilities` and acts on nothing.
    pub fn described(platform: &'static str, system: System, capabilities: Capabilities) -> Built {
        let d = Arc::new(Described {
            platform,
            capabilities,
        });
        let mut built = Built::default();
        match system {
            System::Order => built.order = Some(d),
            System::Warehouse => built.warehouse = Some(d),
            System::Fulfillment => built.fulfillment = Some(d),
            System::Payment => built.payment = Some(d),
            System::Notify => built.notify = Some(d),
        }
        built
    }
}

impl Described {
    fn refuse(&self, action: &'static str) -> AdapterError {
        AdapterError::unsupported(self.platform, action)
    }
}

#[async_trait]
impl OrderSystem for Described {
    fn platform(&self) -> &'static str {
        self.platform
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
    async fn get(&self, _: &GetOrder) -> Result<Order, AdapterError> {
        Err(self.refuse("order.get"))
    }
    async fn mark_after_sales(
        &self,
        _: &MarkAfterSales,
        _: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        Err(self.refuse("order.mark_after_sales"))
    }
    async fn clear_after_sales(
        &self,
        _: &ClearAfterSales,
        _: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        Err(self.refuse("order.clear_after_sales"))
    }
    async fn report_refund(
        &self,
        _: &ReportRefund,
        _: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        Err(self.refuse("order.report_refund"))
    }
    async fn close_after_sales(
        &self,
        _: &CloseAfterSales,
        _: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        Err(self.refuse("order.close_after_sales"))
    }
}

#[async_trait]
impl Warehouse for Described {
    fn platform(&self) -> &'static str {
        self.platform
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
    async fn intercept_shipment(
        &self,
        _: &InterceptShipment,
        _: &IdempotencyKey,
    ) -> Result<InterceptOutput, AdapterError> {
        Err(self.refuse("warehouse.intercept_shipment"))
    }
    async fn create_return(
        &self,
        _: &CreateReturn,
        _: &IdempotencyKey,
    ) -> Result<CreateReturnOutput, AdapterError> {
        Err(self.refuse("warehouse.create_return"))
    }
    async fn cancel_return(&self, _: &RmaRef, _: &IdempotencyKey) -> Result<(), AdapterError> {
        Err(self.refuse("warehouse.cancel_return"))
    }
}

#[async_trait]
impl Fulfillment for Described {
    fn platform(&self) -> &'static str {
        self.platform
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
    async fn get_consumption(&self, _: &EntitlementRef) -> Result<Consumption, AdapterError> {
        Err(self.refuse("fulfillment.get_consumption"))
    }
    async fn revoke(&self, _: &Revoke, _: &IdempotencyKey) -> Result<(), AdapterError> {
        Err(self.refuse("fulfillment.revoke"))
    }
    async fn regrant(&self, _: &EntitlementRef, _: &IdempotencyKey) -> Result<(), AdapterError> {
        Err(self.refuse("fulfillment.regrant"))
    }
}

#[async_trait]
impl Payment for Described {
    fn platform(&self) -> &'static str {
        self.platform
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
    async fn refund(&self, _: &Refund, _: &IdempotencyKey) -> Result<RefundOutcome, AdapterError> {
        Err(self.refuse("payment.refund"))
    }
    async fn refund_status(&self, _: &RefundLookup) -> Result<RefundState, AdapterError> {
        Err(self.refuse("payment.refund_status"))
    }
}

#[async_trait]
impl Notifier for Described {
    fn platform(&self) -> &'static str {
        self.platform
    }
    fn capabilities(&self) -> Capabilities {
        self.capabilities.clone()
    }
    async fn send(&self, _: &Notification, _: &IdempotencyKey) -> Result<(), AdapterError> {
        Err(self.refuse("notify.send"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_described_adapter_reports_its_capabilities_and_acts_on_nothing() {
        let caps = Capabilities::required(System::Payment).with("payment.charge");
        let built = Built::described("alipay", System::Payment, caps.clone());
        assert!(built.order.is_none() && built.webhooks.is_none());
        let Some(payment) = built.payment else {
            panic!("payment adapter expected");
        };
        assert_eq!(payment.platform(), "alipay");
        assert_eq!(payment.capabilities(), caps);
        let lookup = RefundLookup::Id(crate::ids::RefundId::new("r1"));
        let err = payment.refund_status(&lookup).await.err();
        assert_eq!(err.map(|e| e.class()), Some(crate::ErrorClass::Unsupported));
    }
}
