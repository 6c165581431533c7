//! The five adapter traits, each method one configured HTTP call.

use aftersales_adapter::catalogue::System;
use aftersales_adapter::types::{
    Ack, ApproveReturn, CancelOrder, CarrierIntercept, CarrierInterceptOutput, Charge,
    ChargeOutput, ClaimOutput, ClearAfterSales, CloseAfterSales, Consumption, CreateReturn,
    CreateReturnOutput, EntitlementRef, GetOrder, Grant, GrantOutput, InsuranceClaim,
    InterceptOutput, InterceptShipment, MarkAfterSales, Notification, Order, ParcelOutput, Refund,
    RefundOutcome, RefundState, RefundStatusInput, ReleaseStock, ReportRefund, ReserveStock,
    ReserveStockOutput, Revoke, RmaRef, ShipReplacement,
};
use aftersales_adapter::types::{DeclineReturn, RequestReturn, RequestReturnOutput};
use aftersales_adapter::{
    AdapterError, Capabilities, Fulfillment, IdempotencyKey, Notifier, OrderSystem, Payment,
    RefundLookup, Warehouse,
};
use async_trait::async_trait;

use crate::KIND;
use crate::client::{HttpAdapter, Variant};

#[async_trait]
impl OrderSystem for HttpAdapter {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        HttpAdapter::capabilities(self, System::Order)
    }

    async fn get(&self, req: &GetOrder) -> Result<Order, AdapterError> {
        self.call("order.get", req, None, Variant::Main).await
    }

    async fn mark_after_sales(
        &self,
        req: &MarkAfterSales,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call::<_, Ack>("order.mark_after_sales", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn clear_after_sales(
        &self,
        req: &ClearAfterSales,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call::<_, Ack>("order.clear_after_sales", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn report_refund(
        &self,
        req: &ReportRefund,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call::<_, Ack>("order.report_refund", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn close_after_sales(
        &self,
        req: &CloseAfterSales,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call::<_, Ack>("order.close_after_sales", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn request_return(
        &self,
        req: &RequestReturn,
        key: &IdempotencyKey,
    ) -> Result<RequestReturnOutput, AdapterError> {
        self.call("order.request_return", req, Some(key), Variant::Main)
            .await
    }

    async fn approve_return(
        &self,
        req: &ApproveReturn,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call::<_, Ack>("order.approve_return", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn decline_return(
        &self,
        req: &DeclineReturn,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call::<_, Ack>("order.decline_return", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn cancel(&self, req: &CancelOrder, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call::<_, Ack>("order.cancel", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }
}

#[async_trait]
impl Warehouse for HttpAdapter {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        HttpAdapter::capabilities(self, System::Warehouse)
    }

    async fn intercept_shipment(
        &self,
        req: &InterceptShipment,
        key: &IdempotencyKey,
    ) -> Result<InterceptOutput, AdapterError> {
        self.call(
            "warehouse.intercept_shipment",
            req,
            Some(key),
            Variant::Main,
        )
        .await
    }

    async fn create_return(
        &self,
        req: &CreateReturn,
        key: &IdempotencyKey,
    ) -> Result<CreateReturnOutput, AdapterError> {
        self.call("warehouse.create_return", req, Some(key), Variant::Main)
            .await
    }

    async fn cancel_return(&self, req: &RmaRef, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call::<_, Ack>("warehouse.cancel_return", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn carrier_intercept(
        &self,
        req: &CarrierIntercept,
        key: &IdempotencyKey,
    ) -> Result<CarrierInterceptOutput, AdapterError> {
        self.call("warehouse.carrier_intercept", req, Some(key), Variant::Main)
            .await
    }

    async fn restock(&self, req: &RmaRef, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call::<_, Ack>("warehouse.restock", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn reverse_restock(
        &self,
        req: &RmaRef,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call::<_, Ack>("warehouse.reverse_restock", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn return_to_buyer(
        &self,
        req: &RmaRef,
        key: &IdempotencyKey,
    ) -> Result<ParcelOutput, AdapterError> {
        self.call("warehouse.return_to_buyer", req, Some(key), Variant::Main)
            .await
    }

    async fn reserve_stock(
        &self,
        req: &ReserveStock,
        key: &IdempotencyKey,
    ) -> Result<ReserveStockOutput, AdapterError> {
        self.call("warehouse.reserve_stock", req, Some(key), Variant::Main)
            .await
    }

    async fn release_stock(
        &self,
        req: &ReleaseStock,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call::<_, Ack>("warehouse.release_stock", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn ship_replacement(
        &self,
        req: &ShipReplacement,
        key: &IdempotencyKey,
    ) -> Result<ParcelOutput, AdapterError> {
        self.call("warehouse.ship_replacement", req, Some(key), Variant::Main)
            .await
    }
}

#[async_trait]
impl Fulfillment for HttpAdapter {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        HttpAdapter::capabilities(self, System::Fulfillment)
    }

    async fn get_consumption(&self, req: &EntitlementRef) -> Result<Consumption, AdapterError> {
        self.call("fulfillment.get_consumption", req, None, Variant::Main)
            .await
    }

    async fn revoke(&self, req: &Revoke, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call::<_, Ack>("fulfillment.revoke", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn regrant(
        &self,
        req: &EntitlementRef,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call::<_, Ack>("fulfillment.regrant", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }

    async fn grant(&self, req: &Grant, key: &IdempotencyKey) -> Result<GrantOutput, AdapterError> {
        self.call("fulfillment.grant", req, Some(key), Variant::Main)
            .await
    }
}

#[async_trait]
impl Payment for HttpAdapter {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        HttpAdapter::capabilities(self, System::Payment)
    }

    async fn refund(
        &self,
        req: &Refund,
        key: &IdempotencyKey,
    ) -> Result<RefundOutcome, AdapterError> {
        self.call("payment.refund", req, Some(key), Variant::Main)
            .await
    }

    async fn charge(
        &self,
        req: &Charge,
        key: &IdempotencyKey,
    ) -> Result<ChargeOutput, AdapterError> {
        self.call("payment.charge", req, Some(key), Variant::Main)
            .await
    }

    async fn insurance_claim(
        &self,
        req: &InsuranceClaim,
        key: &IdempotencyKey,
    ) -> Result<ClaimOutput, AdapterError> {
        self.call("payment.insurance_claim", req, Some(key), Variant::Main)
            .await
    }

    async fn refund_status(&self, lookup: &RefundLookup) -> Result<RefundState, AdapterError> {
        let (input, variant) = match lookup {
            RefundLookup::Id(id) => (
                RefundStatusInput {
                    refund_id: Some(id.clone()),
                    payment_id: None,
                    request_key: None,
                },
                Variant::Main,
            ),
            RefundLookup::Key { payment_id, key } => (
                RefundStatusInput {
                    refund_id: None,
                    payment_id: Some(payment_id.clone()),
                    request_key: Some(key.clone()),
                },
                Variant::ByKey,
            ),
        };
        self.call("payment.refund_status", &input, None, variant)
            .await
    }
}

#[async_trait]
impl Notifier for HttpAdapter {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        HttpAdapter::capabilities(self, System::Notify)
    }

    async fn send(&self, req: &Notification, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call::<_, Ack>("notify.send", req, Some(key), Variant::Main)
            .await
            .map(|_| ())
    }
}
