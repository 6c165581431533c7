//! The five adapter traits, implemented on the simulated world.

use aftersales_adapter::catalogue::System;
use aftersales_adapter::ids::{
    ChargeId, ClaimId, EntitlementId, ParcelId, RefundId, ReservationId, ReturnId, RmaId,
};
use aftersales_adapter::types::{
    Ack, CarrierIntercept, CarrierInterceptOutput, CarrierInterceptResult, Charge, ChargeOutput,
    ClaimOutput, ClearAfterSales, CloseAfterSales, Consumption, CreateReturn, CreateReturnOutput,
    EntitlementRef, GetOrder, Grant, GrantOutput, InsuranceClaim, InterceptOutput, InterceptResult,
    InterceptShipment, LineRef, MarkAfterSales, Notification, Order, OrderLine, OrderStatus,
    ParcelOutput, Refund, RefundLookup, RefundOutcome, RefundState, ReleaseStock, ReportRefund,
    ReserveStock, ReserveStockOutput, Revoke, RmaRef, ShipReplacement, ShipmentState,
};
use aftersales_adapter::types::{
    ApproveReturn, CancelOrder, DeclineReturn, RequestReturn, RequestReturnOutput,
};
use aftersales_adapter::{
    AdapterError, Capabilities, Fulfillment, IdempotencyKey, Notifier, OrderSystem, Payment,
    RefundStatus, Warehouse,
};
use async_trait::async_trait;

use crate::config::RefundMode;
use crate::model::{
    LedgerEntry, LedgerKind, ParcelKind, PlatformReturnState, ReservationState, ReturnState,
    SentMessage, SimEntitlement, SimOrder, SimParcel, SimPlatformReturn, SimReservation, SimReturn,
    State,
};
use crate::{Ctx, KIND, Sim, emit_refund_final, settle_due};

fn order_mut<'a>(
    state: &'a mut State,
    cx: &Ctx<'_>,
    order_id: &aftersales_adapter::ids::OrderId,
) -> Result<&'a mut SimOrder, AdapterError> {
    state
        .orders
        .get_mut(order_id)
        .ok_or_else(|| cx.not_found(format!("unknown order `{order_id}`")))
}

fn return_mut<'a>(
    state: &'a mut State,
    cx: &Ctx<'_>,
    rma_id: &RmaId,
) -> Result<&'a mut SimReturn, AdapterError> {
    state
        .returns
        .get_mut(rma_id)
        .ok_or_else(|| cx.not_found(format!("unknown return `{rma_id}`")))
}

fn key_of(cx: &Ctx<'_>) -> Result<IdempotencyKey, AdapterError> {
    cx.key
        .cloned()
        .ok_or_else(|| cx.refuse("a mutating call needs an idempotency key"))
}

/// Checks that every line exists on the order with that SKU and at most its quantity.
fn check_lines(order: &SimOrder, lines: &[LineRef], cx: &Ctx<'_>) -> Result<(), AdapterError> {
    if lines.is_empty() {
        return Err(cx.refuse("no lines given"));
    }
    for l in lines {
        let Some(line) = order.lines.iter().find(|ol| ol.line_id == l.line_id) else {
            return Err(cx.refuse(format!(
                "order `{}` has no line `{}`",
                order.order_id, l.line_id
            )));
        };
        if line.sku != l.sku {
            return Err(cx.refuse(format!(
                "line `{}` sold `{}`, not `{}`",
                l.line_id, line.sku, l.sku
            )));
        }
        if l.quantity == 0 || l.quantity > line.quantity {
            return Err(cx.refuse(format!(
                "line `{}` has {} units; {} asked",
                l.line_id, line.quantity, l.quantity
            )));
        }
    }
    Ok(())
}

fn add_stock(state: &mut State, lines: &[LineRef]) {
    for l in lines {
        *state.stock.entry(l.sku.clone()).or_insert(0) += i64::from(l.quantity);
    }
}

#[async_trait]
impl OrderSystem for Sim {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all(System::Order)
    }

    async fn get(&self, req: &GetOrder) -> Result<Order, AdapterError> {
        self.call("order.get", None, req, |state, cx| {
            let o = order_mut(state, cx, &req.order_id)?;
            let paid = aftersales_money::Money::sum(
                o.shipping_fee.currency,
                o.lines.iter().map(|l| &l.paid),
            )
            .and_then(|m| m.checked_add(&o.shipping_fee))
            .map_err(|e| cx.refuse("order amounts do not add up").with_source(e))?;
            let status = if o.intercepted || o.cancelled_by.is_some() {
                OrderStatus::Cancelled
            } else {
                match o.shipment {
                    ShipmentState::Shipped => OrderStatus::Shipped,
                    ShipmentState::Delivered => OrderStatus::Delivered,
                    _ => OrderStatus::Paid,
                }
            };
            Ok(Order {
                status,
                lines: o
                    .lines
                    .iter()
                    .map(|l| OrderLine {
                        line_id: l.line_id.clone(),
                        sku: l.sku.clone(),
                        spu: l.spu.clone(),
                        quantity: l.quantity,
                        unit_price: l.unit_price,
                        paid: l.paid,
                        entitlement_id: l.entitlement_id.clone(),
                        line_discount: l.details.line_discount,
                        category: l.details.category.clone(),
                        flags: l.details.flags.clone(),
                        course_id: l.details.course_id.clone(),
                    })
                    .collect(),
                paid,
                shipping_fee: o.shipping_fee,
                payment_id: o.payment_id.clone(),
                buyer_id: Some(o.buyer_id.clone()),
                shipment: Some(o.shipment),
                coupon: o.coupon,
                paid_at: Some(o.paid_at),
                shipped_at: o.shipped_at,
                delivered_at: o.delivered_at,
            })
        })
        .await
    }

    async fn mark_after_sales(
        &self,
        req: &MarkAfterSales,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call("order.mark_after_sales", Some(key), req, |state, cx| {
            let o = order_mut(state, cx, &req.order_id)?;
            check_lines(o, &req.lines, cx)?;
            o.marks
                .insert(req.service_order_id.clone(), req.lines.clone());
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }

    async fn clear_after_sales(
        &self,
        req: &ClearAfterSales,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call("order.clear_after_sales", Some(key), req, |state, cx| {
            let o = order_mut(state, cx, &req.order_id)?;
            o.marks.remove(&req.service_order_id);
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }

    async fn report_refund(
        &self,
        req: &ReportRefund,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call("order.report_refund", Some(key), req, |state, cx| {
            let o = order_mut(state, cx, &req.order_id)?;
            o.reported_refunds.push((
                req.service_order_id.clone(),
                req.refund_id.clone(),
                req.amount,
            ));
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }

    async fn close_after_sales(
        &self,
        req: &CloseAfterSales,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call("order.close_after_sales", Some(key), req, |state, cx| {
            let o = order_mut(state, cx, &req.order_id)?;
            o.marks.remove(&req.service_order_id);
            o.closed.insert(
                req.service_order_id.clone(),
                (req.outcome, req.reason.clone()),
            );
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }

    async fn request_return(
        &self,
        req: &RequestReturn,
        key: &IdempotencyKey,
    ) -> Result<RequestReturnOutput, AdapterError> {
        self.call("order.request_return", Some(key), req, |state, cx| {
            let o = order_mut(state, cx, &req.order_id)?;
            check_lines(o, &req.lines, cx)?;
            if o.shipment == ShipmentState::NotShipped {
                return Err(cx.refuse(format!(
                    "order `{}` has not shipped; nothing to return",
                    req.order_id
                )));
            }
            let return_id = ReturnId::new(state.id("ret"));
            state.platform_returns.insert(
                return_id.clone(),
                SimPlatformReturn {
                    order_id: req.order_id.clone(),
                    service_order_id: req.service_order_id.clone(),
                    lines: req.lines.clone(),
                    state: PlatformReturnState::Requested,
                },
            );
            Ok(RequestReturnOutput { return_id })
        })
        .await
    }

    async fn approve_return(
        &self,
        req: &ApproveReturn,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call("order.approve_return", Some(key), req, |state, cx| {
            let r = platform_return_mut(state, cx, &req.return_id)?;
            match r.state {
                PlatformReturnState::Requested | PlatformReturnState::Approved => {
                    r.state = PlatformReturnState::Approved;
                    Ok(Ack {})
                }
                other => Err(cx.refuse(format!(
                    "return `{}` is {other:?}; only a requested return is approved",
                    req.return_id
                ))),
            }
        })
        .await
        .map(|_| ())
    }

    async fn decline_return(
        &self,
        req: &DeclineReturn,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call("order.decline_return", Some(key), req, |state, cx| {
            let r = platform_return_mut(state, cx, &req.return_id)?;
            // A requested return is declined; an approved one (the compensation of a request
            // after approval) is cancelled; a finished one stays as it is.
            r.state = match r.state {
                PlatformReturnState::Requested => PlatformReturnState::Declined,
                PlatformReturnState::Approved => PlatformReturnState::Cancelled,
                done => done,
            };
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }

    async fn cancel(&self, req: &CancelOrder, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call("order.cancel", Some(key), req, |state, cx| {
            let o = order_mut(state, cx, &req.order_id)?;
            if matches!(
                o.shipment,
                ShipmentState::Shipped | ShipmentState::Delivered
            ) && !o.intercepted
            {
                return Err(cx.refuse(format!(
                    "order `{}` has shipped; it can no longer be cancelled",
                    req.order_id
                )));
            }
            if o.cancelled_by.is_none() {
                o.cancelled_by = Some(req.service_order_id.clone());
            }
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }
}

fn platform_return_mut<'a>(
    state: &'a mut State,
    cx: &Ctx<'_>,
    return_id: &ReturnId,
) -> Result<&'a mut SimPlatformReturn, AdapterError> {
    state
        .platform_returns
        .get_mut(return_id)
        .ok_or_else(|| cx.not_found(format!("unknown return `{return_id}`")))
}

#[async_trait]
impl Warehouse for Sim {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all(System::Warehouse)
    }

    async fn intercept_shipment(
        &self,
        req: &InterceptShipment,
        key: &IdempotencyKey,
    ) -> Result<InterceptOutput, AdapterError> {
        self.call(
            "warehouse.intercept_shipment",
            Some(key),
            req,
            |state, cx| {
                let too_late_rate = cx.config.business.intercept_too_late;
                let returned = state.returns.values().any(|r| {
                    r.order_id == req.order_id
                        && matches!(
                            r.state,
                            ReturnState::Received
                                | ReturnState::Inspected { .. }
                                | ReturnState::Restocked
                        )
                });
                let o = order_mut(state, cx, &req.order_id)?;
                check_lines(o, &req.lines, cx)?;
                let result = if returned {
                    InterceptResult::AlreadyReturned
                } else if o.intercepted {
                    InterceptResult::Intercepted
                } else if o.shipment != ShipmentState::NotShipped {
                    InterceptResult::TooLate
                } else if state.rng.chance(too_late_rate) {
                    // The rate only applies to a shipment that could still be stopped: the
                    // parcel was picked in the meantime, and is on its way from now on.
                    order_mut(state, cx, &req.order_id)?.shipment = ShipmentState::Picked;
                    InterceptResult::TooLate
                } else {
                    InterceptResult::Intercepted
                };
                if result == InterceptResult::Intercepted {
                    let o = order_mut(state, cx, &req.order_id)?;
                    if !o.intercepted {
                        o.intercepted = true;
                        add_stock(state, &req.lines);
                    }
                }
                Ok(InterceptOutput { result })
            },
        )
        .await
    }

    async fn carrier_intercept(
        &self,
        req: &CarrierIntercept,
        key: &IdempotencyKey,
    ) -> Result<CarrierInterceptOutput, AdapterError> {
        self.call(
            "warehouse.carrier_intercept",
            Some(key),
            req,
            |state, cx| {
                let fail_rate = cx.config.business.carrier_intercept_fails;
                let shipment = order_mut(state, cx, &req.order_id)?.shipment;
                let result = if shipment == ShipmentState::Shipped && !state.rng.chance(fail_rate) {
                    order_mut(state, cx, &req.order_id)?.carrier_intercepted = true;
                    CarrierInterceptResult::Intercepted
                } else {
                    CarrierInterceptResult::Failed
                };
                Ok(CarrierInterceptOutput { result })
            },
        )
        .await
    }

    async fn create_return(
        &self,
        req: &CreateReturn,
        key: &IdempotencyKey,
    ) -> Result<CreateReturnOutput, AdapterError> {
        self.call("warehouse.create_return", Some(key), req, |state, cx| {
            let reference = key_of(cx)?;
            let o = order_mut(state, cx, &req.order_id)?;
            check_lines(o, &req.lines, cx)?;
            if o.shipment == ShipmentState::NotShipped {
                return Err(cx.refuse(format!(
                    "order `{}` has not shipped; intercept it instead",
                    req.order_id
                )));
            }
            let order = o.clone();
            for l in &req.lines {
                let already: u32 = state
                    .returns
                    .values()
                    .filter(|r| r.order_id == req.order_id && r.state != ReturnState::Cancelled)
                    .flat_map(|r| r.lines.iter())
                    .filter(|rl| rl.line_id == l.line_id)
                    .map(|rl| rl.quantity)
                    .sum();
                let sold = order
                    .lines
                    .iter()
                    .find(|ol| ol.line_id == l.line_id)
                    .map_or(0, |ol| ol.quantity);
                if already.saturating_add(l.quantity) > sold {
                    return Err(cx.refuse(format!(
                        "line `{}`: {} of {} units are already being returned",
                        l.line_id, already, sold
                    )));
                }
            }
            let rma_id = RmaId::new(state.id("rma"));
            state.returns.insert(
                rma_id.clone(),
                SimReturn {
                    rma_id: rma_id.clone(),
                    order_id: req.order_id.clone(),
                    service_order_id: req.service_order_id.clone(),
                    lines: req.lines.clone(),
                    pickup: req.pickup,
                    reference,
                    state: ReturnState::AwaitingArrival,
                },
            );
            Ok(CreateReturnOutput { rma_id })
        })
        .await
    }

    async fn cancel_return(&self, req: &RmaRef, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call("warehouse.cancel_return", Some(key), req, |state, cx| {
            let r = return_mut(state, cx, &req.rma_id)?;
            match r.state {
                ReturnState::AwaitingArrival | ReturnState::Cancelled => {
                    r.state = ReturnState::Cancelled;
                    Ok(Ack {})
                }
                _ => Err(cx.refuse(format!(
                    "return `{}` has arrived and can no longer be cancelled",
                    req.rma_id
                ))),
            }
        })
        .await
        .map(|_| ())
    }

    async fn restock(&self, req: &RmaRef, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call("warehouse.restock", Some(key), req, |state, cx| {
            let r = return_mut(state, cx, &req.rma_id)?;
            if !matches!(r.state, ReturnState::Inspected { passed: true, .. }) {
                return Err(cx.refuse(format!(
                    "return `{}` is not inspected and passed; it cannot be restocked",
                    req.rma_id
                )));
            }
            r.state = ReturnState::Restocked;
            let lines = r.lines.clone();
            add_stock(state, &lines);
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }

    async fn reverse_restock(
        &self,
        req: &RmaRef,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call("warehouse.reverse_restock", Some(key), req, |state, cx| {
            let r = return_mut(state, cx, &req.rma_id)?;
            if r.state != ReturnState::Restocked {
                return Err(cx.refuse(format!("return `{}` is not restocked", req.rma_id)));
            }
            let lines = r.lines.clone();
            for l in &lines {
                if state.stock.get(&l.sku).copied().unwrap_or(0) < i64::from(l.quantity) {
                    return Err(
                        cx.refuse(format!("not enough stock of `{}` left to take back", l.sku))
                    );
                }
            }
            for l in &lines {
                *state.stock.entry(l.sku.clone()).or_insert(0) -= i64::from(l.quantity);
            }
            return_mut(state, cx, &req.rma_id)?.state = ReturnState::Inspected {
                passed: true,
                reason: None,
            };
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }

    async fn return_to_buyer(
        &self,
        req: &RmaRef,
        key: &IdempotencyKey,
    ) -> Result<ParcelOutput, AdapterError> {
        self.call("warehouse.return_to_buyer", Some(key), req, |state, cx| {
            let r = return_mut(state, cx, &req.rma_id)?;
            if !matches!(
                r.state,
                ReturnState::Received | ReturnState::Inspected { .. }
            ) {
                return Err(cx.refuse(format!("return `{}` is not in the warehouse", req.rma_id)));
            }
            let order_id = r.order_id.clone();
            let parcel_id = ParcelId::new(state.id("parcel"));
            return_mut(state, cx, &req.rma_id)?.state = ReturnState::ReturnedToBuyer {
                parcel_id: parcel_id.clone(),
            };
            state.parcels.insert(
                parcel_id.clone(),
                SimParcel {
                    parcel_id: parcel_id.clone(),
                    kind: ParcelKind::ReturnToBuyer,
                    order_id,
                    delivered: false,
                },
            );
            Ok(ParcelOutput { parcel_id })
        })
        .await
    }

    async fn reserve_stock(
        &self,
        req: &ReserveStock,
        key: &IdempotencyKey,
    ) -> Result<ReserveStockOutput, AdapterError> {
        self.call("warehouse.reserve_stock", Some(key), req, |state, cx| {
            if req.quantity == 0 {
                return Err(cx.refuse("quantity must be at least 1"));
            }
            let available = state.stock.get(&req.sku).copied().unwrap_or(0);
            let forced_out = state.rng.chance(cx.config.business.out_of_stock);
            if forced_out || available < i64::from(req.quantity) {
                return Ok(ReserveStockOutput::out_of_stock());
            }
            state
                .stock
                .insert(req.sku.clone(), available - i64::from(req.quantity));
            let id = ReservationId::new(state.id("res"));
            state.reservations.insert(
                id.clone(),
                SimReservation {
                    reservation_id: id.clone(),
                    sku: req.sku.clone(),
                    quantity: req.quantity,
                    state: ReservationState::Active,
                },
            );
            Ok(ReserveStockOutput::reserved(id))
        })
        .await
    }

    async fn release_stock(
        &self,
        req: &ReleaseStock,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call("warehouse.release_stock", Some(key), req, |state, cx| {
            let r = state
                .reservations
                .get_mut(&req.reservation_id)
                .ok_or_else(|| {
                    cx.not_found(format!("unknown reservation `{}`", req.reservation_id))
                })?;
            match r.state {
                ReservationState::Released => Ok(Ack {}),
                ReservationState::Shipped => Err(cx.refuse(format!(
                    "reservation `{}` was shipped and cannot be released",
                    req.reservation_id
                ))),
                ReservationState::Active => {
                    r.state = ReservationState::Released;
                    let (sku, q) = (r.sku.clone(), r.quantity);
                    *state.stock.entry(sku).or_insert(0) += i64::from(q);
                    Ok(Ack {})
                }
            }
        })
        .await
        .map(|_| ())
    }

    async fn ship_replacement(
        &self,
        req: &ShipReplacement,
        key: &IdempotencyKey,
    ) -> Result<ParcelOutput, AdapterError> {
        self.call("warehouse.ship_replacement", Some(key), req, |state, cx| {
            order_mut(state, cx, &req.order_id)?;
            let r = state
                .reservations
                .get_mut(&req.reservation_id)
                .ok_or_else(|| {
                    cx.not_found(format!("unknown reservation `{}`", req.reservation_id))
                })?;
            if r.state != ReservationState::Active {
                return Err(cx.refuse(format!(
                    "reservation `{}` is not active",
                    req.reservation_id
                )));
            }
            r.state = ReservationState::Shipped;
            let parcel_id = ParcelId::new(state.id("parcel"));
            state.parcels.insert(
                parcel_id.clone(),
                SimParcel {
                    parcel_id: parcel_id.clone(),
                    kind: ParcelKind::Replacement,
                    order_id: req.order_id.clone(),
                    delivered: false,
                },
            );
            Ok(ParcelOutput { parcel_id })
        })
        .await
    }
}

fn entitlement_mut<'a>(
    state: &'a mut State,
    cx: &Ctx<'_>,
    id: &EntitlementId,
) -> Result<&'a mut SimEntitlement, AdapterError> {
    state
        .entitlements
        .get_mut(id)
        .ok_or_else(|| cx.not_found(format!("unknown entitlement `{id}`")))
}

#[async_trait]
impl Fulfillment for Sim {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all(System::Fulfillment)
    }

    async fn get_consumption(&self, req: &EntitlementRef) -> Result<Consumption, AdapterError> {
        self.call("fulfillment.get_consumption", None, req, |state, cx| {
            let e = entitlement_mut(state, cx, &req.entitlement_id)?;
            Ok(Consumption {
                consumed: e.consumed,
                total: e.total,
                active: e.active,
            })
        })
        .await
    }

    async fn revoke(&self, req: &Revoke, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call("fulfillment.revoke", Some(key), req, |state, cx| {
            let e = entitlement_mut(state, cx, &req.entitlement_id)?;
            match req.units {
                None => e.active = false,
                Some(units) => {
                    let left = e.total - e.consumed;
                    if units == 0 || units > left {
                        return Err(cx.refuse(format!(
                            "entitlement `{}` has {left} unused units; cannot revoke {units}",
                            req.entitlement_id
                        )));
                    }
                    e.total -= units;
                    e.revoked_units += units;
                }
            }
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }

    async fn regrant(
        &self,
        req: &EntitlementRef,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        self.call("fulfillment.regrant", Some(key), req, |state, cx| {
            let e = entitlement_mut(state, cx, &req.entitlement_id)?;
            e.active = true;
            e.total += e.revoked_units;
            e.revoked_units = 0;
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }

    async fn grant(&self, req: &Grant, key: &IdempotencyKey) -> Result<GrantOutput, AdapterError> {
        self.call("fulfillment.grant", Some(key), req, |state, _cx| {
            let total = state.product_units.get(&req.sku).copied().unwrap_or(1);
            let id = EntitlementId::new(state.id("ent"));
            state.entitlements.insert(
                id.clone(),
                SimEntitlement {
                    entitlement_id: id.clone(),
                    buyer_id: req.buyer_id.clone(),
                    sku: req.sku.clone(),
                    total,
                    consumed: 0,
                    active: true,
                    revoked_units: 0,
                },
            );
            Ok(GrantOutput { entitlement_id: id })
        })
        .await
    }
}

#[async_trait]
impl Payment for Sim {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all(System::Payment)
    }

    async fn refund(
        &self,
        req: &Refund,
        key: &IdempotencyKey,
    ) -> Result<RefundOutcome, AdapterError> {
        let outcome = self
            .call("payment.refund", Some(key), req, |state, cx| {
                let key = key_of(cx)?;
                let payment = state
                    .payments
                    .get(&req.payment_id)
                    .cloned()
                    .ok_or_else(|| cx.not_found(format!("unknown payment `{}`", req.payment_id)))?;
                if req.amount.currency != payment.captured.currency {
                    return Err(cx.refuse(format!(
                        "payment `{}` is in {}, not {}",
                        req.payment_id, payment.captured.currency, req.amount.currency
                    )));
                }
                if req.amount.minor <= 0 {
                    return Err(cx.refuse("refund amount must be positive"));
                }
                let refunded = state
                    .refunded(&req.payment_id, payment.captured.currency)
                    .map_err(|e| cx.refuse("ledger amounts do not add up").with_source(e))?;
                let left = payment
                    .captured
                    .checked_sub(&refunded)
                    .map_err(|e| cx.refuse("ledger amounts do not add up").with_source(e))?;
                if req.amount.minor > left.minor {
                    return Err(cx.refuse(format!(
                        "refund of {} exceeds the {} left on payment `{}` (captured {}, refunded {})",
                        req.amount, left, req.payment_id, payment.captured, refunded
                    )));
                }
                let (status, settle_at) = match cx.config.refunds {
                    RefundMode::Immediate => (RefundStatus::Succeeded, None),
                    RefundMode::Pending { settle_after } => {
                        (RefundStatus::Pending, Some(cx.now + settle_after))
                    }
                };
                let refund_id = RefundId::new(state.id("re"));
                let seq = state.ledger.len() as u64 + 1;
                state.ledger.push(LedgerEntry {
                    seq,
                    kind: LedgerKind::Refund,
                    id: refund_id.as_str().to_owned(),
                    payment_id: Some(req.payment_id.clone()),
                    service_order_id: req.service_order_id.clone(),
                    amount: req.amount,
                    key,
                    status,
                    at: cx.now,
                    settle_at,
                });
                if status == RefundStatus::Succeeded {
                    emit_refund_final(state, refund_id.as_str());
                }
                Ok(RefundOutcome { refund_id, status })
            })
            .await?;
        // A replay answers with the refund as it stands now, as Alipay does.
        let now = self.now();
        let fail_rate = self.config().business.pending_refund_fails;
        let mut state = self.lock();
        settle_due(&mut state, now, fail_rate);
        let status = state
            .ledger
            .iter()
            .find(|e| e.kind == LedgerKind::Refund && e.id == outcome.refund_id.as_str())
            .map_or(outcome.status, |e| e.status);
        Ok(RefundOutcome {
            refund_id: outcome.refund_id,
            status,
        })
    }

    async fn refund_status(&self, lookup: &RefundLookup) -> Result<RefundState, AdapterError> {
        let input = match lookup {
            RefundLookup::Id(id) => serde_json::json!({"refund_id": id}),
            RefundLookup::Key { payment_id, key } => {
                serde_json::json!({"payment_id": payment_id, "request_key": key})
            }
        };
        self.call("payment.refund_status", None, &input, |state, cx| {
            let fail_rate = cx.config.business.pending_refund_fails;
            settle_due(state, cx.now, fail_rate);
            let found = state.ledger.iter().find(|e| {
                e.kind == LedgerKind::Refund
                    && match lookup {
                        RefundLookup::Id(id) => e.id == id.as_str(),
                        RefundLookup::Key { payment_id, key } => {
                            e.payment_id.as_ref() == Some(payment_id) && &e.key == key
                        }
                    }
            });
            match (found, lookup) {
                (Some(e), _) => Ok(RefundState {
                    status: e.status,
                    refund_id: Some(RefundId::new(e.id.clone())),
                }),
                (None, RefundLookup::Key { .. }) => Ok(RefundState {
                    status: RefundStatus::NotFound,
                    refund_id: None,
                }),
                (None, RefundLookup::Id(id)) => Err(cx.not_found(format!("unknown refund `{id}`"))),
            }
        })
        .await
    }

    async fn charge(
        &self,
        req: &Charge,
        key: &IdempotencyKey,
    ) -> Result<ChargeOutput, AdapterError> {
        self.call("payment.charge", Some(key), req, |state, cx| {
            let key = key_of(cx)?;
            let payment = state
                .payments
                .get(&req.payment_id)
                .ok_or_else(|| cx.not_found(format!("unknown payment `{}`", req.payment_id)))?;
            if req.amount.currency != payment.captured.currency || req.amount.minor <= 0 {
                return Err(cx.refuse(format!(
                    "cannot charge {} on payment `{}`",
                    req.amount, req.payment_id
                )));
            }
            let charge_id = ChargeId::new(state.id("ch"));
            let seq = state.ledger.len() as u64 + 1;
            state.ledger.push(LedgerEntry {
                seq,
                kind: LedgerKind::Charge,
                id: charge_id.as_str().to_owned(),
                payment_id: Some(req.payment_id.clone()),
                service_order_id: req.service_order_id.clone(),
                amount: req.amount,
                key,
                status: RefundStatus::Succeeded,
                at: cx.now,
                settle_at: None,
            });
            Ok(ChargeOutput { charge_id })
        })
        .await
    }

    async fn insurance_claim(
        &self,
        req: &InsuranceClaim,
        key: &IdempotencyKey,
    ) -> Result<ClaimOutput, AdapterError> {
        self.call("payment.insurance_claim", Some(key), req, |state, cx| {
            let key = key_of(cx)?;
            order_mut(state, cx, &req.order_id)?;
            if req.amount.minor <= 0 {
                return Err(cx.refuse("claim amount must be positive"));
            }
            let claim_id = ClaimId::new(state.id("claim"));
            let seq = state.ledger.len() as u64 + 1;
            state.ledger.push(LedgerEntry {
                seq,
                kind: LedgerKind::InsuranceClaim,
                id: claim_id.as_str().to_owned(),
                payment_id: None,
                service_order_id: Some(req.service_order_id.clone()),
                amount: req.amount,
                key,
                status: RefundStatus::Succeeded,
                at: cx.now,
                settle_at: None,
            });
            Ok(ClaimOutput { claim_id })
        })
        .await
    }
}

#[async_trait]
impl Notifier for Sim {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::all(System::Notify)
    }

    async fn send(&self, req: &Notification, key: &IdempotencyKey) -> Result<(), AdapterError> {
        self.call("notify.send", Some(key), req, |state, cx| {
            let key = key_of(cx)?;
            state.messages.push(SentMessage {
                notification: req.clone(),
                key,
            });
            Ok(Ack {})
        })
        .await
        .map(|_| ())
    }
}
