//! The order as the rules see it: read from the order system, with what earlier service
//! orders already returned, refunded or hold open.

use std::collections::BTreeMap;

use aftersales_adapter::types::{EntitlementRef, GetOrder, Order, OrderStatus};
use aftersales_adapter::{AdapterError, AdapterSet, ErrorClass, ids as aid};
use aftersales_core::store::{InstanceRecord, InstanceStatus};
use aftersales_domain::{
    CategoryId, CourseId, EntitlementId, LineFlag, LineGoods, LineId, OrderId, OrderLine,
    OrderSnapshot, OrderState, PaymentId, ServiceOrderId, Sku, Spu, UnixMillis, VirtualLine,
    largest_remainder,
};
use aftersales_money::Money;
use backon::Retryable;
use serde_json::Value;

use super::ServiceError;

/// What the service knows about an order when a request arrives.
#[derive(Debug, Clone)]
pub struct OrderFacts {
    /// The snapshot the rules and the refund calculation run on.
    pub snapshot: OrderSnapshot,
    /// The payment refunds go back to.
    pub payment_id: String,
    /// The buyer, when the order system tells.
    pub buyer_id: Option<String>,
}

/// An earlier service order on the same order, as far as the rules care.
#[derive(Debug, Clone)]
pub struct PriorOrder {
    /// Its id.
    pub id: String,
    /// Still running, or failed and waiting for a person: its lines are taken.
    pub open: bool,
    /// The lines it names.
    pub lines: Vec<String>,
    /// Units per line that went back (returned, cancelled or refunded).
    pub returned: BTreeMap<String, u32>,
    /// Money refunded per line, in minor units.
    pub refunded: BTreeMap<String, i64>,
}

impl PriorOrder {
    /// Reads an instance and its service order record.
    pub fn from_record(r: &InstanceRecord) -> PriorOrder {
        let lines: Vec<(String, u32)> = r
            .meta
            .get("lines")
            .and_then(Value::as_array)
            .map(|ls| {
                ls.iter()
                    .filter_map(|l| {
                        let id = l.get("line_id")?.as_str()?.to_owned();
                        let q = u32::try_from(l.get("quantity")?.as_u64()?).ok()?;
                        Some((id, q))
                    })
                    .collect()
            })
            .unwrap_or_default();
        // Failed instances need a person; until one closes them their lines stay taken, so
        // a second request cannot pay what the first may already have paid.
        let open = matches!(r.status, InstanceStatus::Running | InstanceStatus::Failed);
        let refunded_total = refunded_amount(r);
        let mut returned = BTreeMap::new();
        let mut refunded = BTreeMap::new();
        if let Some(total) = refunded_total
            && total > 0
        {
            // Split what was paid over the lines in proportion to the breakdown's line
            // refunds, so the parts add up to what was paid.
            let weights: Vec<i64> = lines
                .iter()
                .map(|(id, q)| line_net(&r.meta, id).unwrap_or(i64::from(*q)))
                .collect();
            let parts = largest_remainder(total, &weights).unwrap_or_else(|_| {
                let mut v = vec![0; lines.len()];
                if let Some(first) = v.first_mut() {
                    *first = total;
                }
                v
            });
            for ((id, q), part) in lines.iter().zip(parts) {
                *returned.entry(id.clone()).or_insert(0) += q;
                *refunded.entry(id.clone()).or_insert(0) += part;
            }
        }
        PriorOrder {
            id: r.id.clone(),
            open,
            lines: lines.iter().map(|(id, _)| id.clone()).collect(),
            returned,
            refunded,
        }
    }
}

/// What an ended service order paid back, from its end output (`refunded`), in minor
/// units; `None` when nothing was paid.
pub(crate) fn refunded_amount(r: &InstanceRecord) -> Option<i64> {
    let end = r.state.get("end")?;
    let out = end.get("output")?;
    let money = out.get("refunded")?;
    let minor = money.get("minor")?.as_i64()?;
    Some(minor)
}

fn line_net(meta: &Value, line_id: &str) -> Option<i64> {
    meta.get("breakdown")?
        .get("lines")?
        .as_array()?
        .iter()
        .find(|l| l.get("line_id").and_then(Value::as_str) == Some(line_id))?
        .get("net")?
        .get("minor")?
        .as_i64()
        .map(|n| n.max(1))
}

/// Reads are retried in process a few times (they change nothing); a platform that stays
/// down answers the caller with a retryable error and nothing is stored.
fn read_retry() -> backon::ExponentialBuilder {
    backon::ExponentialBuilder::default()
        .with_min_delay(std::time::Duration::from_millis(50))
        .with_max_delay(std::time::Duration::from_secs(1))
        .with_max_times(4)
        .with_jitter()
}

fn upstream(system: &'static str, e: &AdapterError) -> ServiceError {
    ServiceError::Upstream {
        system,
        message: e.to_string(),
        retryable: e.class.is_retryable(),
    }
}

/// Reads the order and builds the snapshot the rules run on.
pub(crate) async fn read_order(
    adapters: &AdapterSet,
    order_id: &str,
    prior: &[PriorOrder],
    now: i64,
) -> Result<OrderFacts, ServiceError> {
    let get = GetOrder {
        order_id: aid::OrderId::new(order_id),
    };
    let order: Order = (|| adapters.order.get(&get))
        .retry(read_retry())
        .when(|e: &AdapterError| e.class.is_retryable())
        .await
        .map_err(|e| match e.class {
            ErrorClass::NotFound => ServiceError::OrderNotFound(order_id.to_owned()),
            _ => upstream("order", &e),
        })?;
    let currency = order.paid.currency;
    let mut lines = Vec::with_capacity(order.lines.len());
    let mut line_discounts_given = false;
    for l in &order.lines {
        let gross = l
            .unit_price
            .checked_mul(i64::from(l.quantity))
            .map_err(|e| ServiceError::Invalid(format!("order line {}: {e}", l.line_id)))?;
        let line_discount = match l.line_discount {
            Some(d) => {
                line_discounts_given = true;
                d
            }
            None => gross
                .checked_sub(&l.paid)
                .map_err(|e| ServiceError::Invalid(format!("order line {}: {e}", l.line_id)))?,
        };
        let goods = match &l.entitlement_id {
            None => LineGoods::Physical,
            Some(ent) => {
                let r = EntitlementRef {
                    entitlement_id: ent.clone(),
                };
                let c = (|| adapters.fulfillment.get_consumption(&r))
                    .retry(read_retry())
                    .when(|e: &AdapterError| e.class.is_retryable())
                    .await
                    .map_err(|e| upstream("fulfillment", &e))?;
                LineGoods::Virtual(VirtualLine {
                    course: CourseId::new(l.course_id.clone().unwrap_or_else(|| l.sku.to_string())),
                    lessons_total: c.total.max(1),
                    lessons_consumed: c.consumed,
                    entitlement: EntitlementId::new(ent.as_str()),
                })
            }
        };
        let mut flags = Vec::new();
        for f in &l.flags {
            let flag = match f.as_str() {
                "unsealed" => LineFlag::Unsealed,
                "activated" => LineFlag::Activated,
                "custom_made" => LineFlag::CustomMade,
                "perishable" => LineFlag::Perishable,
                // A fact this version does not know binds no rule.
                _ => continue,
            };
            flags.push(flag);
        }
        let id = l.line_id.to_string();
        let returned_quantity: u32 = prior
            .iter()
            .filter_map(|p| p.returned.get(&id))
            .copied()
            .sum();
        let refunded: i64 = prior.iter().filter_map(|p| p.refunded.get(&id)).sum();
        let open_requests = prior
            .iter()
            .filter(|p| p.open && p.lines.contains(&id))
            .map(|p| ServiceOrderId::new(p.id.clone()))
            .collect();
        lines.push(OrderLine {
            line_id: LineId::new(id),
            sku: Sku::new(l.sku.as_str()),
            spu: Spu::new(l.spu.as_str()),
            category: CategoryId::new(l.category.clone().unwrap_or_else(|| "uncategorized".into())),
            goods,
            quantity: l.quantity,
            unit_price: l.unit_price,
            line_discount,
            flags,
            returned_quantity: returned_quantity.min(l.quantity),
            refunded: Money::new(refunded, currency),
            open_requests,
        });
    }
    let coupon = match order.coupon {
        Some(c) if line_discounts_given => c,
        _ => Money::zero(currency),
    };
    let state = match order.status {
        OrderStatus::Paid => OrderState::Paid,
        OrderStatus::Shipped => OrderState::Shipped {
            shipped_at: UnixMillis(order.shipped_at.unwrap_or(now)),
        },
        OrderStatus::Delivered | OrderStatus::Completed => OrderState::Delivered {
            shipped_at: UnixMillis(order.shipped_at.unwrap_or(now)),
            delivered_at: UnixMillis(order.delivered_at.unwrap_or(now)),
        },
        _ => {
            return Err(ServiceError::Refused(aftersales_domain::Refusal {
                code: aftersales_domain::RefusalCode::OrderState,
                message: format!("order {order_id} is cancelled"),
                line_id: None,
            }));
        }
    };
    let snapshot = OrderSnapshot {
        order_id: OrderId::new(order_id),
        payment_id: PaymentId::new(order.payment_id.as_str()),
        state,
        paid_at: UnixMillis(order.paid_at.unwrap_or(now)),
        lines,
        coupon,
        shipping_fee: order.shipping_fee,
        paid_total: order.paid,
    };
    Ok(OrderFacts {
        snapshot,
        payment_id: order.payment_id.to_string(),
        buyer_id: order.buyer_id.as_ref().map(|b| b.to_string()),
    })
}
