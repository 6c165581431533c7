//! Generic dispatch: the engine's `"system.action"` + JSON input, turned into a typed call.

use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::catalogue::{self, System};
use crate::error::{AdapterError, ErrorClass};
use crate::key::IdempotencyKey;
use crate::traits::{Capabilities, Fulfillment, Notifier, OrderSystem, Payment, Warehouse};
use crate::types::{
    Ack, ApproveReturn, CancelOrder, CarrierIntercept, Charge, ClearAfterSales, CloseAfterSales,
    CreateReturn, DeclineReturn, EntitlementRef, GetOrder, Grant, InsuranceClaim,
    InterceptShipment, MarkAfterSales, Notification, Refund, RefundLookup, RefundOutcome,
    RefundStatus, RefundStatusInput, ReleaseStock, ReportRefund, RequestReturn, ReserveStock,
    Revoke, RmaRef, ShipReplacement,
};

/// The events that finish a pending refund.
pub const REFUND_COMPLETION_EVENTS: &[&str] = &[
    "payment.refund.succeeded",
    "payment.refund.failed",
    "payment.refund.canceled",
];

/// What a dispatched action answered.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum ActionOutcome {
    /// Finished; the object holds exactly the catalogue's output fields.
    Done(Map<String, Value>),
    /// Accepted but not finished (an asynchronous refund). The final result arrives later
    /// as an [`InboundEvent`](crate::InboundEvent) whose `correlation` equals
    /// `correlation_key`, or by calling `poll`.
    Pending {
        /// What the final event will be correlated by (the refund id).
        correlation_key: String,
        /// The output known so far (for a refund: `refund_id` and `status = "pending"`).
        output: Map<String, Value>,
        /// An action to call to learn the final state, when the platform offers one.
        poll: Option<Poll>,
        /// The event names that finish this action.
        completion_events: &'static [&'static str],
    },
}

/// A read-only action the engine may call to learn how a pending action ended.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    /// The action (`payment.refund_status`).
    pub action: &'static str,
    /// Its input.
    pub input: Value,
}

/// The adapters one business line binds, one per system. The engine only talks to this.
#[derive(Clone)]
pub struct AdapterSet {
    /// The order system.
    pub order: Arc<dyn OrderSystem>,
    /// The warehouse.
    pub warehouse: Arc<dyn Warehouse>,
    /// The fulfillment system.
    pub fulfillment: Arc<dyn Fulfillment>,
    /// The payment system.
    pub payment: Arc<dyn Payment>,
    /// The notifier.
    pub notify: Arc<dyn Notifier>,
}

impl std::fmt::Debug for AdapterSet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdapterSet")
            .field("order", &self.order.platform())
            .field("warehouse", &self.warehouse.platform())
            .field("fulfillment", &self.fulfillment.platform())
            .field("payment", &self.payment.platform())
            .field("notify", &self.notify.platform())
            .finish()
    }
}

impl AdapterSet {
    /// The platform that serves `system`.
    pub fn platform(&self, system: System) -> &'static str {
        match system {
            System::Order => self.order.platform(),
            System::Warehouse => self.warehouse.platform(),
            System::Fulfillment => self.fulfillment.platform(),
            System::Payment => self.payment.platform(),
            System::Notify => self.notify.platform(),
        }
    }

    /// What the bound adapters support, together.
    pub fn capabilities(&self) -> Capabilities {
        self.order
            .capabilities()
            .union(&self.warehouse.capabilities())
            .union(&self.fulfillment.capabilities())
            .union(&self.payment.capabilities())
            .union(&self.notify.capabilities())
    }

    /// Calls `action` (`system.action`) with a JSON object `input`.
    ///
    /// The input is decoded into the action's typed request (a decode failure is a
    /// permanent error naming the field), the adapter is called, and its typed answer is
    /// encoded back into a JSON object with exactly the catalogue's output fields (money as
    /// `{"minor": .., "currency": ".."}`). Read-only actions ignore `key`.
    pub async fn dispatch(
        &self,
        action: &str,
        input: &Value,
        key: &IdempotencyKey,
    ) -> Result<ActionOutcome, AdapterError> {
        let Some(spec) = catalogue::find_full(action) else {
            return Err(AdapterError::permanent(
                "aftersales",
                action.to_owned(),
                format!("unknown action `{action}`"),
            ));
        };
        let name = spec.full_name_static();
        let platform = self.platform(spec.system);
        let caps = match spec.system {
            System::Order => self.order.capabilities(),
            System::Warehouse => self.warehouse.capabilities(),
            System::Fulfillment => self.fulfillment.capabilities(),
            System::Payment => self.payment.capabilities(),
            System::Notify => self.notify.capabilities(),
        };
        if !caps.supports(name) {
            return Err(AdapterError::unsupported(platform, name));
        }
        let cx = Cx {
            platform,
            action: name,
            input,
        };
        let (o, w, f, p, n) = (
            &self.order,
            &self.warehouse,
            &self.fulfillment,
            &self.payment,
            &self.notify,
        );
        match name {
            "order.get" => cx.done(&o.get(&cx.decode::<GetOrder>()?).await?),
            "order.mark_after_sales" => {
                o.mark_after_sales(&cx.decode::<MarkAfterSales>()?, key)
                    .await?;
                cx.done(&Ack {})
            }
            "order.clear_after_sales" => {
                o.clear_after_sales(&cx.decode::<ClearAfterSales>()?, key)
                    .await?;
                cx.done(&Ack {})
            }
            "order.report_refund" => {
                o.report_refund(&cx.decode::<ReportRefund>()?, key).await?;
                cx.done(&Ack {})
            }
            "order.close_after_sales" => {
                o.close_after_sales(&cx.decode::<CloseAfterSales>()?, key)
                    .await?;
                cx.done(&Ack {})
            }
            "order.request_return" => cx.done(
                &o.request_return(&cx.decode::<RequestReturn>()?, key)
                    .await?,
            ),
            "order.approve_return" => {
                o.approve_return(&cx.decode::<ApproveReturn>()?, key)
                    .await?;
                cx.done(&Ack {})
            }
            "order.decline_return" => {
                o.decline_return(&cx.decode::<DeclineReturn>()?, key)
                    .await?;
                cx.done(&Ack {})
            }
            "order.cancel" => {
                o.cancel(&cx.decode::<CancelOrder>()?, key).await?;
                cx.done(&Ack {})
            }
            "warehouse.intercept_shipment" => cx.done(
                &w.intercept_shipment(&cx.decode::<InterceptShipment>()?, key)
                    .await?,
            ),
            "warehouse.carrier_intercept" => cx.done(
                &w.carrier_intercept(&cx.decode::<CarrierIntercept>()?, key)
                    .await?,
            ),
            "warehouse.create_return" => {
                cx.done(&w.create_return(&cx.decode::<CreateReturn>()?, key).await?)
            }
            "warehouse.cancel_return" => {
                w.cancel_return(&cx.decode::<RmaRef>()?, key).await?;
                cx.done(&Ack {})
            }
            "warehouse.restock" => {
                w.restock(&cx.decode::<RmaRef>()?, key).await?;
                cx.done(&Ack {})
            }
            "warehouse.reverse_restock" => {
                w.reverse_restock(&cx.decode::<RmaRef>()?, key).await?;
                cx.done(&Ack {})
            }
            "warehouse.return_to_buyer" => {
                cx.done(&w.return_to_buyer(&cx.decode::<RmaRef>()?, key).await?)
            }
            "warehouse.reserve_stock" => {
                cx.done(&w.reserve_stock(&cx.decode::<ReserveStock>()?, key).await?)
            }
            "warehouse.release_stock" => {
                w.release_stock(&cx.decode::<ReleaseStock>()?, key).await?;
                cx.done(&Ack {})
            }
            "warehouse.ship_replacement" => cx.done(
                &w.ship_replacement(&cx.decode::<ShipReplacement>()?, key)
                    .await?,
            ),
            "fulfillment.get_consumption" => {
                cx.done(&f.get_consumption(&cx.decode::<EntitlementRef>()?).await?)
            }
            "fulfillment.revoke" => {
                f.revoke(&cx.decode::<Revoke>()?, key).await?;
                cx.done(&Ack {})
            }
            "fulfillment.regrant" => {
                f.regrant(&cx.decode::<EntitlementRef>()?, key).await?;
                cx.done(&Ack {})
            }
            "fulfillment.grant" => cx.done(&f.grant(&cx.decode::<Grant>()?, key).await?),
            "payment.refund" => {
                let req = cx.decode::<Refund>()?;
                let outcome = match p.refund(&req, key).await {
                    Ok(outcome) => outcome,
                    // Only a refusal is checked by key: `NotFound` says the platform has no
                    // such payment, so no earlier attempt can have refunded it (and asking by
                    // key about an unknown payment would fail, and be taken as unknown).
                    Err(e) if e.class() == ErrorClass::Permanent => {
                        self.refund_made_anyway(&req, key, e).await?
                    }
                    Err(e) => return Err(e),
                };
                match outcome.status {
                    RefundStatus::Succeeded => cx.done(&outcome),
                    RefundStatus::Pending | RefundStatus::RequiresAction => {
                        let refund_id = outcome.refund_id.as_str().to_owned();
                        let mut output = Map::new();
                        output.insert("refund_id".into(), Value::String(refund_id.clone()));
                        output.insert("status".into(), Value::String("pending".into()));
                        let mut poll_input = Map::new();
                        poll_input.insert("refund_id".into(), Value::String(refund_id.clone()));
                        Ok(ActionOutcome::Pending {
                            correlation_key: refund_id,
                            output,
                            poll: Some(Poll {
                                action: "payment.refund_status",
                                input: Value::Object(poll_input),
                            }),
                            completion_events: REFUND_COMPLETION_EVENTS,
                        })
                    }
                    other => Err(AdapterError::permanent(
                        platform,
                        name,
                        format!(
                            "refund {} answered {}",
                            outcome.refund_id,
                            status_name(other)
                        ),
                    )),
                }
            }
            "payment.refund_status" => {
                let lookup = cx
                    .decode::<RefundStatusInput>()?
                    .lookup()
                    .map_err(|why| AdapterError::permanent(platform, name, why))?;
                cx.done(&p.refund_status(&lookup).await?)
            }
            "payment.charge" => cx.done(&p.charge(&cx.decode::<Charge>()?, key).await?),
            "payment.insurance_claim" => cx.done(
                &p.insurance_claim(&cx.decode::<InsuranceClaim>()?, key)
                    .await?,
            ),
            "notify.send" => {
                n.send(&cx.decode::<Notification>()?, key).await?;
                cx.done(&Ack {})
            }
            _ => Err(AdapterError::unsupported(platform, name)),
        }
    }
}

impl AdapterSet {
    /// A refund call refused for good: was a refund under this key made anyway?
    ///
    /// An earlier attempt with the same key may have taken effect and lost its answer, and a
    /// platform does not always replay it: Stripe forgets keys after 24 hours and then refuses
    /// a refund of a charge already refunded, and any platform may refuse an amount above
    /// what is left — which that earlier refund used up. Taking such a refusal as final would
    /// tell the engine that no money moved (and, before the pivot, undo the saga) while the
    /// buyer was paid. So the payment adapter is asked by key first: a refund found is the
    /// answer; `not_found`, or no way to ask, keeps the refusal; a question that fails is an
    /// unknown outcome, retried with the same key.
    async fn refund_made_anyway(
        &self,
        req: &Refund,
        key: &IdempotencyKey,
        refusal: AdapterError,
    ) -> Result<RefundOutcome, AdapterError> {
        if !self
            .payment
            .capabilities()
            .supports("payment.refund_status")
        {
            return Err(refusal);
        }
        let lookup = RefundLookup::Key {
            payment_id: req.payment_id.clone(),
            key: key.clone(),
        };
        match self.payment.refund_status(&lookup).await {
            Ok(state) => match (state.status, state.refund_id) {
                (
                    status @ (RefundStatus::Succeeded
                    | RefundStatus::Pending
                    | RefundStatus::RequiresAction),
                    Some(refund_id),
                ) => Ok(RefundOutcome { refund_id, status }),
                _ => Err(refusal),
            },
            Err(e) => Err(AdapterError::unknown_outcome(
                self.payment.platform(),
                "payment.refund",
                format!(
                    "the refund was refused ({refusal}), but whether an earlier attempt with the same key was made could not be checked: {e}"
                ),
            )),
        }
    }
}

fn status_name(status: RefundStatus) -> String {
    match serde_json::to_value(status) {
        Ok(Value::String(s)) => s,
        _ => format!("{status:?}"),
    }
}

/// The context of one dispatch, for decoding, encoding and errors.
struct Cx<'a> {
    platform: &'static str,
    action: &'static str,
    input: &'a Value,
}

impl Cx<'_> {
    fn decode<T: DeserializeOwned>(&self) -> Result<T, AdapterError> {
        if !self.input.is_object() {
            return Err(AdapterError::permanent(
                self.platform,
                self.action,
                "invalid input: expected a JSON object",
            ));
        }
        T::deserialize(self.input).map_err(|e| {
            AdapterError::permanent(self.platform, self.action, format!("invalid input: {e}"))
        })
    }

    fn done<T: Serialize>(&self, output: &T) -> Result<ActionOutcome, AdapterError> {
        match serde_json::to_value(output) {
            Ok(Value::Object(map)) => Ok(ActionOutcome::Done(map)),
            Ok(_) => Err(AdapterError::permanent(
                self.platform,
                self.action,
                "adapter output is not a JSON object",
            )),
            Err(e) => Err(AdapterError::permanent(
                self.platform,
                self.action,
                "could not encode the adapter output",
            )
            .with_source(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use aftersales_money::{Currency, Money};
    use async_trait::async_trait;
    use serde_json::json;

    use super::*;
    use crate::catalogue::FieldType;
    use crate::error::ErrorClass;
    use crate::ids::*;
    use crate::types::*;

    /// One stub that implements every trait and fills every optional output.
    struct Stub {
        refund_status: RefundStatus,
        caps: Option<Capabilities>,
        /// Refund calls are refused for good.
        refuse_refunds: bool,
        /// What a status query by key finds; `None`: the query itself fails.
        by_key: Option<RefundStatus>,
    }

    fn cny(minor: i64) -> Money {
        Money::new(minor, Currency::CNY)
    }

    impl Stub {
        fn caps(&self, system: System) -> Capabilities {
            self.caps
                .clone()
                .unwrap_or_else(|| Capabilities::all(system))
        }
    }

    #[async_trait]
    impl OrderSystem for Stub {
        fn platform(&self) -> &'static str {
            "stub"
        }
        fn capabilities(&self) -> Capabilities {
            self.caps(System::Order)
        }
        async fn get(&self, req: &GetOrder) -> Result<Order, AdapterError> {
            Ok(Order {
                status: OrderStatus::Paid,
                lines: vec![OrderLine {
                    line_id: "l1".into(),
                    sku: "sku-1".into(),
                    spu: "spu-1".into(),
                    quantity: 1,
                    unit_price: cny(100),
                    paid: cny(90),
                    entitlement_id: None,
                    line_discount: None,
                    category: None,
                    flags: Vec::new(),
                    course_id: None,
                }],
                paid: cny(100),
                shipping_fee: cny(10),
                payment_id: PaymentId::new(format!("pay-{}", req.order_id)),
                buyer_id: Some("b1".into()),
                shipment: Some(ShipmentState::NotShipped),
                coupon: Some(cny(0)),
                paid_at: Some(1_795_564_800_000),
                shipped_at: Some(1_795_564_900_000),
                delivered_at: Some(1_795_565_000_000),
            })
        }
        async fn mark_after_sales(
            &self,
            _: &MarkAfterSales,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn clear_after_sales(
            &self,
            _: &ClearAfterSales,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn report_refund(
            &self,
            _: &ReportRefund,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn close_after_sales(
            &self,
            _: &CloseAfterSales,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn request_return(
            &self,
            _: &RequestReturn,
            _: &IdempotencyKey,
        ) -> Result<RequestReturnOutput, AdapterError> {
            Ok(RequestReturnOutput {
                return_id: "ret-1".into(),
            })
        }
        async fn approve_return(
            &self,
            _: &ApproveReturn,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn decline_return(
            &self,
            _: &DeclineReturn,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn cancel(&self, _: &CancelOrder, _: &IdempotencyKey) -> Result<(), AdapterError> {
            Ok(())
        }
    }

    #[async_trait]
    impl Warehouse for Stub {
        fn platform(&self) -> &'static str {
            "stub"
        }
        fn capabilities(&self) -> Capabilities {
            self.caps(System::Warehouse)
        }
        async fn intercept_shipment(
            &self,
            _: &InterceptShipment,
            _: &IdempotencyKey,
        ) -> Result<InterceptOutput, AdapterError> {
            Ok(InterceptOutput {
                result: InterceptResult::TooLate,
            })
        }
        async fn create_return(
            &self,
            _: &CreateReturn,
            _: &IdempotencyKey,
        ) -> Result<CreateReturnOutput, AdapterError> {
            Ok(CreateReturnOutput {
                rma_id: "rma-1".into(),
            })
        }
        async fn cancel_return(&self, _: &RmaRef, _: &IdempotencyKey) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn carrier_intercept(
            &self,
            _: &CarrierIntercept,
            _: &IdempotencyKey,
        ) -> Result<CarrierInterceptOutput, AdapterError> {
            Ok(CarrierInterceptOutput {
                result: CarrierInterceptResult::Intercepted,
            })
        }
        async fn restock(&self, _: &RmaRef, _: &IdempotencyKey) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn reverse_restock(
            &self,
            _: &RmaRef,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn return_to_buyer(
            &self,
            _: &RmaRef,
            _: &IdempotencyKey,
        ) -> Result<ParcelOutput, AdapterError> {
            Ok(ParcelOutput {
                parcel_id: "p1".into(),
            })
        }
        async fn reserve_stock(
            &self,
            _: &ReserveStock,
            _: &IdempotencyKey,
        ) -> Result<ReserveStockOutput, AdapterError> {
            Ok(ReserveStockOutput::reserved("res-1".into()))
        }
        async fn release_stock(
            &self,
            _: &ReleaseStock,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn ship_replacement(
            &self,
            _: &ShipReplacement,
            _: &IdempotencyKey,
        ) -> Result<ParcelOutput, AdapterError> {
            Ok(ParcelOutput {
                parcel_id: "p2".into(),
            })
        }
    }

    #[async_trait]
    impl Fulfillment for Stub {
        fn platform(&self) -> &'static str {
            "stub"
        }
        fn capabilities(&self) -> Capabilities {
            self.caps(System::Fulfillment)
        }
        async fn get_consumption(&self, _: &EntitlementRef) -> Result<Consumption, AdapterError> {
            Ok(Consumption {
                consumed: 3,
                total: 10,
                active: true,
            })
        }
        async fn revoke(&self, _: &Revoke, _: &IdempotencyKey) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn regrant(
            &self,
            _: &EntitlementRef,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn grant(&self, _: &Grant, _: &IdempotencyKey) -> Result<GrantOutput, AdapterError> {
            Ok(GrantOutput {
                entitlement_id: "e2".into(),
            })
        }
    }

    #[async_trait]
    impl Payment for Stub {
        fn platform(&self) -> &'static str {
            "stub"
        }
        fn capabilities(&self) -> Capabilities {
            self.caps(System::Payment)
        }
        async fn refund(
            &self,
            _: &Refund,
            _: &IdempotencyKey,
        ) -> Result<RefundOutcome, AdapterError> {
            if self.refuse_refunds {
                return Err(AdapterError::permanent(
                    "stub",
                    "payment.refund",
                    "charge already refunded",
                ));
            }
            Ok(RefundOutcome {
                refund_id: "re-1".into(),
                status: self.refund_status,
            })
        }
        async fn refund_status(&self, lookup: &RefundLookup) -> Result<RefundState, AdapterError> {
            let status = match lookup {
                RefundLookup::Id(_) => RefundStatus::Succeeded,
                RefundLookup::Key { .. } => self.by_key.ok_or_else(|| {
                    AdapterError::transient("stub", "payment.refund_status", "timed out")
                })?,
            };
            Ok(RefundState {
                status,
                refund_id: (status != RefundStatus::NotFound).then(|| "re-1".into()),
            })
        }
        async fn charge(
            &self,
            _: &Charge,
            _: &IdempotencyKey,
        ) -> Result<ChargeOutput, AdapterError> {
            Ok(ChargeOutput {
                charge_id: "ch-1".into(),
            })
        }
        async fn insurance_claim(
            &self,
            _: &InsuranceClaim,
            _: &IdempotencyKey,
        ) -> Result<ClaimOutput, AdapterError> {
            Ok(ClaimOutput {
                claim_id: "cl-1".into(),
            })
        }
    }

    #[async_trait]
    impl Notifier for Stub {
        fn platform(&self) -> &'static str {
            "stub"
        }
        fn capabilities(&self) -> Capabilities {
            self.caps(System::Notify)
        }
        async fn send(&self, _: &Notification, _: &IdempotencyKey) -> Result<(), AdapterError> {
            Ok(())
        }
    }

    fn set(stub: Stub) -> AdapterSet {
        let stub = Arc::new(stub);
        AdapterSet {
            order: stub.clone(),
            warehouse: stub.clone(),
            fulfillment: stub.clone(),
            payment: stub.clone(),
            notify: stub,
        }
    }

    fn stub() -> AdapterSet {
        set(Stub {
            refund_status: RefundStatus::Succeeded,
            caps: None,
            refuse_refunds: false,
            by_key: Some(RefundStatus::Succeeded),
        })
    }

    fn key() -> IdempotencyKey {
        IdempotencyKey::new("i1-step-fwd-0").unwrap()
    }

    /// A sample value for a declared input field; enumerations get a valid member.
    fn sample(name: &str, ty: FieldType) -> Value {
        match (name, ty) {
            ("to", _) => json!("buyer"),
            ("outcome", _) => json!("completed"),
            ("request_key", _) => json!("i1-refund-fwd-0"),
            (_, FieldType::String) => json!("x-1"),
            (_, FieldType::Int) => json!(2),
            (_, FieldType::Bool) => json!(true),
            (_, FieldType::Money) => json!({"minor": 1234, "currency": "CNY"}),
            (_, FieldType::List) => json!([{"line_id": "l1", "sku": "sku-1", "quantity": 1}]),
            (_, FieldType::Object) => json!({"k": "v"}),
            _ => json!(null),
        }
    }

    /// Inputs with every declared field, except for `refund_status` whose fields are
    /// alternatives.
    fn full_input(spec: &catalogue::ActionSpec) -> Value {
        let mut m = Map::new();
        for f in spec.inputs {
            if spec.name == "refund_status" && f.name != "refund_id" {
                continue;
            }
            m.insert(f.name.into(), sample(f.name, f.ty));
        }
        Value::Object(m)
    }

    #[tokio::test]
    async fn every_action_encodes_exactly_its_declared_outputs() {
        let adapters = stub();
        for spec in catalogue::catalogue() {
            let name = spec.full_name();
            let out = adapters
                .dispatch(&name, &full_input(spec), &key())
                .await
                .unwrap_or_else(|e| panic!("{name}: {e}"));
            let ActionOutcome::Done(map) = out else {
                panic!("{name}: not done");
            };
            let got: BTreeSet<&str> = map.keys().map(String::as_str).collect();
            let declared: BTreeSet<&str> = spec.outputs.iter().map(|f| f.name).collect();
            assert_eq!(got, declared, "{name}");
            for f in spec.outputs {
                let v = &map[f.name];
                let ok = match f.ty {
                    FieldType::String => v.is_string(),
                    FieldType::Int => v.is_i64(),
                    FieldType::Bool => v.is_boolean(),
                    FieldType::Money => v["minor"].is_i64() && v["currency"].is_string(),
                    FieldType::List => v.is_array(),
                    FieldType::Object => v.is_object(),
                    _ => true,
                };
                assert!(ok, "{name}.{}: {v}", f.name);
            }
        }
    }

    #[test]
    fn typed_requests_use_only_catalogue_input_names() {
        // Decoding a full input and encoding it back gives the same fields: the typed
        // request neither drops nor invents a field.
        fn round<T: DeserializeOwned + Serialize>(spec: &catalogue::ActionSpec) {
            let input = full_input(spec);
            let typed: T = serde_json::from_value(input.clone()).unwrap();
            let back = serde_json::to_value(&typed).unwrap();
            assert_eq!(back, input, "{}", spec.full_name());
        }
        for spec in catalogue::catalogue() {
            match spec.full_name_static() {
                "order.get" => round::<GetOrder>(spec),
                "order.mark_after_sales" => round::<MarkAfterSales>(spec),
                "order.clear_after_sales" => round::<ClearAfterSales>(spec),
                "order.report_refund" => round::<ReportRefund>(spec),
                "order.close_after_sales" => round::<CloseAfterSales>(spec),
                "order.request_return" => round::<RequestReturn>(spec),
                "order.approve_return" => round::<ApproveReturn>(spec),
                "order.decline_return" => round::<DeclineReturn>(spec),
                "order.cancel" => round::<CancelOrder>(spec),
                "warehouse.intercept_shipment" => round::<InterceptShipment>(spec),
                "warehouse.carrier_intercept" => round::<CarrierIntercept>(spec),
                "warehouse.create_return" => round::<CreateReturn>(spec),
                "warehouse.cancel_return"
                | "warehouse.restock"
                | "warehouse.reverse_restock"
                | "warehouse.return_to_buyer" => round::<RmaRef>(spec),
                "warehouse.reserve_stock" => round::<ReserveStock>(spec),
                "warehouse.release_stock" => round::<ReleaseStock>(spec),
                "warehouse.ship_replacement" => round::<ShipReplacement>(spec),
                "fulfillment.get_consumption" | "fulfillment.regrant" => {
                    round::<EntitlementRef>(spec)
                }
                "fulfillment.revoke" => round::<Revoke>(spec),
                "fulfillment.grant" => round::<Grant>(spec),
                "payment.refund" => round::<Refund>(spec),
                "payment.refund_status" => round::<RefundStatusInput>(spec),
                "payment.charge" => round::<Charge>(spec),
                "payment.insurance_claim" => round::<InsuranceClaim>(spec),
                "notify.send" => round::<Notification>(spec),
                other => panic!("no typed request for {other}"),
            }
        }
    }

    #[tokio::test]
    async fn decode_failures_are_permanent_and_name_the_field() {
        let adapters = stub();
        let err = adapters
            .dispatch("payment.refund", &json!({"payment_id": "p1"}), &key())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
        assert_eq!(
            err.to_string(),
            "payment.refund failed on stub (permanent): invalid input: missing field `amount`"
        );
        let err = adapters
            .dispatch(
                "payment.refund",
                &json!({"payment_id": "p1", "amount": {"minor": 1, "currency": "CNY"}, "reson": "typo"}),
                &key(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
        assert!(err.message.contains("unknown field `reson`"), "{err}");
        let err = adapters
            .dispatch("payment.refund", &json!([1]), &key())
            .await
            .unwrap_err();
        assert_eq!(err.message, "invalid input: expected a JSON object");
        let err = adapters
            .dispatch(
                "payment.refund_status",
                &json!({"payment_id": "p1"}),
                &key(),
            )
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
        assert!(err.message.contains("request_key"), "{err}");
        let err = adapters
            .dispatch("payment.teleport", &json!({}), &key())
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "payment.teleport failed on aftersales (permanent): unknown action `payment.teleport`"
        );
    }

    #[tokio::test]
    async fn pending_refund_names_its_correlation_and_poll() {
        let adapters = set(Stub {
            refund_status: RefundStatus::Pending,
            caps: None,
            refuse_refunds: false,
            by_key: Some(RefundStatus::Succeeded),
        });
        let input = json!({"payment_id": "p1", "amount": {"minor": 500, "currency": "CNY"}});
        let out = adapters
            .dispatch("payment.refund", &input, &key())
            .await
            .unwrap();
        let ActionOutcome::Pending {
            correlation_key,
            output,
            poll,
            completion_events,
        } = out
        else {
            panic!("expected pending, got {out:?}");
        };
        assert_eq!(correlation_key, "re-1");
        assert_eq!(
            Value::Object(output),
            json!({"refund_id": "re-1", "status": "pending"})
        );
        let poll = poll.unwrap();
        assert_eq!(poll.action, "payment.refund_status");
        assert_eq!(poll.input, json!({"refund_id": "re-1"}));
        assert!(completion_events.contains(&"payment.refund.succeeded"));
        for e in completion_events {
            assert!(catalogue::events().iter().any(|s| s.name == *e), "{e}");
        }

        let failed = set(Stub {
            refund_status: RefundStatus::Failed,
            caps: None,
            refuse_refunds: false,
            by_key: Some(RefundStatus::Succeeded),
        });
        let err = failed
            .dispatch("payment.refund", &input, &key())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
        assert_eq!(err.message, "refund re-1 answered failed");
    }

    /// An order system with only the required actions: the optional ones answer through the
    /// trait's defaults.
    struct RequiredOnly;

    #[async_trait]
    impl OrderSystem for RequiredOnly {
        fn platform(&self) -> &'static str {
            "minimal"
        }
        fn capabilities(&self) -> Capabilities {
            // Claims everything, to reach the defaults through dispatch.
            Capabilities::all(System::Order)
        }
        async fn get(&self, _: &GetOrder) -> Result<Order, AdapterError> {
            Err(AdapterError::permanent("minimal", "order.get", "no orders"))
        }
        async fn mark_after_sales(
            &self,
            _: &MarkAfterSales,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn clear_after_sales(
            &self,
            _: &ClearAfterSales,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn report_refund(
            &self,
            _: &ReportRefund,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
        async fn close_after_sales(
            &self,
            _: &CloseAfterSales,
            _: &IdempotencyKey,
        ) -> Result<(), AdapterError> {
            Ok(())
        }
    }

    #[tokio::test]
    async fn optional_order_actions_default_to_unsupported() {
        let mut adapters = stub();
        adapters.order = Arc::new(RequiredOnly);
        assert!(
            !Capabilities::required(System::Order).supports("order.request_return"),
            "returns and cancellation are optional"
        );
        for spec in catalogue::catalogue().iter().filter(|s| {
            s.system == System::Order
                && !Capabilities::required(System::Order).supports(s.full_name_static())
        }) {
            let name = spec.full_name_static();
            let err = adapters
                .dispatch(name, &full_input(spec), &key())
                .await
                .unwrap_err();
            assert_eq!(err.class, ErrorClass::Unsupported, "{name}");
            assert_eq!(err.action, name);
            assert_eq!(err.platform, "minimal");
        }
    }

    #[tokio::test]
    async fn actions_outside_the_capabilities_are_unsupported() {
        let adapters = set(Stub {
            refund_status: RefundStatus::Succeeded,
            caps: Some(Capabilities::required(System::Payment)),
            refuse_refunds: false,
            by_key: Some(RefundStatus::Succeeded),
        });
        let input = json!({"payment_id": "p1", "amount": {"minor": 1, "currency": "CNY"}});
        let err = adapters
            .dispatch("payment.charge", &input, &key())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Unsupported);
        assert!(adapters.capabilities().supports("payment.refund"));
        assert!(!adapters.capabilities().supports("payment.charge"));
    }

    /// A refusal after an earlier attempt took effect (its answer lost) is not taken as
    /// final: the refund found by key is the answer; none found keeps the refusal; a lookup
    /// that fails is an unknown outcome.
    #[tokio::test]
    async fn a_refused_refund_is_checked_by_key_before_it_counts_as_not_made() {
        let input = json!({"payment_id": "p1", "amount": {"minor": 500, "currency": "CNY"}});
        let refused = |by_key| {
            set(Stub {
                refund_status: RefundStatus::Succeeded,
                caps: None,
                refuse_refunds: true,
                by_key,
            })
        };
        let made = refused(Some(RefundStatus::Succeeded))
            .dispatch("payment.refund", &input, &key())
            .await
            .unwrap();
        let ActionOutcome::Done(output) = made else {
            panic!("expected done, got {made:?}");
        };
        assert_eq!(
            Value::Object(output),
            json!({"refund_id": "re-1", "status": "succeeded"})
        );

        let err = refused(Some(RefundStatus::NotFound))
            .dispatch("payment.refund", &input, &key())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::Permanent);
        assert_eq!(err.message, "charge already refunded");

        let err = refused(None)
            .dispatch("payment.refund", &input, &key())
            .await
            .unwrap_err();
        assert_eq!(err.class, ErrorClass::UnknownOutcome);
        assert!(
            err.message.contains("charge already refunded"),
            "{}",
            err.message
        );
    }
}
