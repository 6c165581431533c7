//! A ShipBob-style warehouse for aftersales: a [`Warehouse`] adapter over ShipBob's dated
//! REST API and a [`WebhookVerifier`](aftersales_adapter::WebhookVerifier) for its signed
//! `return.completed` webhooks, registered as `kind = "shipbob"` by [`register`].
//!
//! Knows ShipBob's wire format and nothing of the engine. ShipBob has no idempotency header,
//! so every mutating action reads the state first and acts only when needed: an interception
//! cancels the order's shipments only while some are still cancellable (and answers
//! `intercepted` for an order already cancelled), a return is created with the engine's key
//! as its `reference_id` and looked up by that reference before any create (so a retry after
//! a lost answer finds the first return instead of opening a second), and a cancelled return
//! is not cancelled again. Our order id is the store's order id, which ShipBob keeps as the
//! order's `reference_id`; our RMA id is ShipBob's return id.
//! Layout as in `docs/adapters.md`: `config.rs`, `client.rs`, `error.rs`, `webhook.rs`.

#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod webhook;

use std::collections::BTreeMap;
use std::sync::Arc;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::types::{
    CreateReturn, CreateReturnOutput, InterceptOutput, InterceptResult, InterceptShipment, LineRef,
    RmaRef,
};
use aftersales_adapter::{
    AdapterError, Built, Capabilities, IdempotencyKey, Registry, RegistryError, Warehouse,
    WebhookVerifier,
};
use async_trait::async_trait;

use crate::client::{
    NewReturn, NewReturnInventory, SbFacility, SbOrder, SbShipment, ShipBobClient, status_is,
};
use crate::config::{RETURN_ACTIONS, ShipBobSettings, parse_duration};
use crate::error::Call;
use crate::webhook::{ShipBobWebhooks, inspection};

/// The adapter kind this crate registers under.
pub const KIND: &str = "shipbob";

/// Registers ShipBob as `kind = "shipbob"`.
///
/// Settings: `token_env` (the env var holding the Personal Access Token), `channel_id`,
/// optional `base_url`, `api_version` (`"2026-01"`), `fulfillment_center_id`,
/// `requested_action` (`"Restock"`), `timeout` (`"10s"`), `webhook_secret_env`,
/// `webhook_previous_secret_env` and `webhook_tolerance` (`"5m"`).
pub fn register(registry: &mut Registry) {
    registry.register(KIND, |cx| {
        let settings: ShipBobSettings = cx.settings()?;
        let invalid = |message: String| RegistryError::InvalidSettings {
            kind: KIND.into(),
            message,
        };
        let timeout =
            parse_duration(&settings.timeout).map_err(|e| invalid(format!("timeout: {e}")))?;
        let tolerance = parse_duration(&settings.webhook_tolerance)
            .map_err(|e| invalid(format!("webhook_tolerance: {e}")))?;
        if !RETURN_ACTIONS.contains(&settings.requested_action.as_str()) {
            return Err(invalid(format!(
                "requested_action: expected one of {}, found \"{}\"",
                RETURN_ACTIONS.join(", "),
                settings.requested_action
            )));
        }
        let client = ShipBobClient::new(
            &settings.base_url,
            &settings.api_version,
            cx.secret("token_env")?,
            settings.channel_id,
            timeout,
        )
        .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let webhooks = match settings.webhook_secret_env {
            Some(_) => {
                let mut secrets = vec![cx.secret("webhook_secret_env")?];
                if settings.webhook_previous_secret_env.is_some() {
                    secrets.push(cx.secret("webhook_previous_secret_env")?);
                }
                Some(Arc::new(ShipBobWebhooks { secrets, tolerance }) as Arc<dyn WebhookVerifier>)
            }
            None => None,
        };
        Ok(Built {
            warehouse: Some(Arc::new(ShipBobWarehouse {
                client,
                fulfillment_center_id: settings.fulfillment_center_id,
                requested_action: settings.requested_action,
            })),
            webhooks,
            ..Built::default()
        })
    });
}

/// The warehouse adapter.
#[derive(Debug)]
struct ShipBobWarehouse {
    client: ShipBobClient,
    fulfillment_center_id: Option<u64>,
    requested_action: String,
}

fn permanent(action: &'static str, message: impl Into<String>) -> AdapterError {
    AdapterError::permanent(KIND, action, message)
}

/// Our RMA id is ShipBob's numeric return id.
fn return_id(action: &'static str, rma: &RmaRef) -> Result<u64, AdapterError> {
    rma.rma_id.as_str().parse().map_err(|_| {
        permanent(
            action,
            format!("`{}` is not a ShipBob return id", rma.rma_id),
        )
    })
}

/// Units asked per SKU; several lines of one SKU add up.
fn units_by_sku(lines: &[LineRef]) -> BTreeMap<&str, u32> {
    let mut out: BTreeMap<&str, u32> = BTreeMap::new();
    for l in lines {
        let n = out.entry(l.sku.as_str()).or_default();
        *n = n.saturating_add(l.quantity);
    }
    out
}

impl ShipBobWarehouse {
    async fn order(&self, action: &'static str, order_id: &str) -> Result<SbOrder, AdapterError> {
        self.client
            .find_order(Call::Read(action), order_id)
            .await?
            .ok_or_else(|| {
                permanent(
                    action,
                    format!("ShipBob has no order with reference_id `{order_id}`"),
                )
            })
    }

    /// The shipment the returned lines left in, with the return's inventory.
    fn return_inventory<'a>(
        &self,
        action: &'static str,
        order: &'a SbOrder,
        lines: &[LineRef],
    ) -> Result<(&'a SbShipment, Vec<NewReturnInventory>), AdapterError> {
        let wanted = units_by_sku(lines);
        let shipment = order
            .shipments
            .iter()
            .filter(|s| !status_is(&s.status, "Cancelled"))
            .find(|s| {
                wanted
                    .keys()
                    .all(|sku| s.products.iter().any(|p| p.is_sku(sku)))
            })
            .ok_or_else(|| {
                permanent(
                    action,
                    format!(
                        "no shipment of ShipBob order {} holds all of {}",
                        order.id,
                        wanted.keys().copied().collect::<Vec<_>>().join(", ")
                    ),
                )
            })?;
        let mut inventory: BTreeMap<u64, u32> = BTreeMap::new();
        for (sku, units) in &wanted {
            let product = shipment
                .products
                .iter()
                .find(|p| p.is_sku(sku))
                .ok_or_else(|| permanent(action, format!("sku `{sku}` not in the shipment")))?;
            if product.inventory_items.is_empty() {
                return Err(permanent(
                    action,
                    format!(
                        "sku `{sku}` has no inventory item in shipment {}",
                        shipment.id
                    ),
                ));
            }
            for item in &product.inventory_items {
                // One unit of each inventory item per unit sold (a kit returns all its parts).
                let n = inventory.entry(item.id).or_default();
                *n = n.saturating_add(*units);
            }
        }
        // ShipBob refuses an inventory id listed twice: each appears once, summed.
        let inventory = inventory
            .into_iter()
            .map(|(id, quantity)| NewReturnInventory {
                id,
                quantity,
                requested_action: self.requested_action.clone(),
            })
            .collect();
        Ok((shipment, inventory))
    }
}

#[async_trait]
impl Warehouse for ShipBobWarehouse {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        // ShipBob restocks on its own when the return asks for it; `restock` confirms it
        // did. It cannot undo a restock, send goods back, reserve stock or intercept with
        // the carrier: those stay unsupported.
        Capabilities::required(System::Warehouse).with("warehouse.restock")
    }

    async fn intercept_shipment(
        &self,
        req: &InterceptShipment,
        _key: &IdempotencyKey,
    ) -> Result<InterceptOutput, AdapterError> {
        // No key field at ShipBob: the order's state makes a repeat safe instead.
        let action = "warehouse.intercept_shipment";
        let order = self.order(action, req.order_id.as_str()).await?;
        // ShipBob cancels whole shipments: stopping only some lines of one is not possible.
        let wanted = units_by_sku(&req.lines);
        if let Some(p) = order.products.iter().find(|p| {
            let asked = p
                .sku
                .as_deref()
                .or(p.reference_id.as_deref())
                .and_then(|s| wanted.get(s).copied())
                .unwrap_or(0);
            asked < p.quantity
        }) {
            return Err(permanent(
                action,
                format!(
                    "ShipBob cancels whole orders; order {} also holds {} unit(s) of `{}` not in the request",
                    order.id,
                    p.quantity,
                    p.sku
                        .as_deref()
                        .or(p.reference_id.as_deref())
                        .unwrap_or("?")
                ),
            ));
        }
        let live: Vec<&SbShipment> = order
            .shipments
            .iter()
            .filter(|s| !status_is(&s.status, "Cancelled"))
            .collect();
        if live.is_empty() {
            return if order.shipments.is_empty() {
                Err(permanent(
                    action,
                    format!("ShipBob order {} has no shipment", order.id),
                ))
            } else {
                // Cancelled already, by an earlier attempt whose answer was lost or repeated.
                Ok(InterceptOutput {
                    result: InterceptResult::Intercepted,
                })
            };
        }
        if live.iter().any(|s| status_is(&s.status, "Completed")) {
            return Ok(InterceptOutput {
                result: InterceptResult::TooLate,
            });
        }
        let answer = self.client.cancel_order(order.id).await?;
        let (ok, failed): (Vec<_>, Vec<_>) = answer
            .canceled_shipment_results
            .iter()
            .partition(|r| r.is_success);
        match (ok.is_empty(), failed.is_empty()) {
            (false, true) => Ok(InterceptOutput {
                result: InterceptResult::Intercepted,
            }),
            (true, false) => Ok(InterceptOutput {
                result: InterceptResult::TooLate,
            }),
            (true, true) => Err(AdapterError::unknown_outcome(
                KIND,
                action,
                format!(
                    "ShipBob answered the cancel of order {} without a shipment result",
                    order.id
                ),
            )),
            (false, false) => Err(permanent(
                action,
                format!(
                    "ShipBob cancelled shipment(s) {} of order {} but not {}: reconcile by hand",
                    ok.iter()
                        .map(|r| r.shipment_id.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    order.id,
                    failed
                        .iter()
                        .map(|r| format!(
                            "{} ({})",
                            r.shipment_id,
                            r.reason.as_deref().unwrap_or("no reason")
                        ))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            )),
        }
    }

    async fn create_return(
        &self,
        req: &CreateReturn,
        key: &IdempotencyKey,
    ) -> Result<CreateReturnOutput, AdapterError> {
        let action = "warehouse.create_return";
        // The key is the return's reference: a return already made with it is the answer.
        if let Some(existing) = self.client.find_return(action, key.as_str()).await? {
            return Ok(CreateReturnOutput {
                rma_id: existing.id.to_string().into(),
            });
        }
        if req.lines.is_empty() {
            return Err(permanent(action, "a return needs at least one line"));
        }
        let order = self.order(action, req.order_id.as_str()).await?;
        let (shipment, inventory) = self.return_inventory(action, &order, &req.lines)?;
        let center = self
            .fulfillment_center_id
            .or(shipment.location.as_ref().map(|l| l.id))
            .ok_or_else(|| {
                permanent(
                    action,
                    format!(
                        "shipment {} names no fulfillment center; set `fulfillment_center_id`",
                        shipment.id
                    ),
                )
            })?;
        let body = NewReturn {
            fulfillment_center: SbFacility { id: center },
            inventory,
            // The engine's key, unchanged: the lookup above finds the return by it.
            reference_id: key.as_str().to_owned(),
            original_shipment_id: shipment.id,
        };
        match self.client.create_return(&body).await {
            Ok(created) => Ok(CreateReturnOutput {
                rma_id: created.id.to_string().into(),
            }),
            // A refusal may be ShipBob saying the reference exists (a concurrent attempt):
            // the return made with it is then the answer.
            Err(e) if e.class == aftersales_adapter::ErrorClass::Permanent => {
                match self.client.find_return(action, key.as_str()).await {
                    Ok(Some(existing)) => Ok(CreateReturnOutput {
                        rma_id: existing.id.to_string().into(),
                    }),
                    _ => Err(e),
                }
            }
            Err(e) => Err(e),
        }
    }

    async fn cancel_return(&self, req: &RmaRef, _key: &IdempotencyKey) -> Result<(), AdapterError> {
        let action = "warehouse.cancel_return";
        let id = return_id(action, req)?;
        let ret = self.client.get_return(action, id).await?.ok_or_else(|| {
            AdapterError::not_found(KIND, action, format!("ShipBob has no return {id}"))
        })?;
        if status_is(&ret.status, "Cancelled") {
            return Ok(());
        }
        if !status_is(&ret.status, "AwaitingArrival") {
            return Err(permanent(
                action,
                format!(
                    "return {id} is `{}`; ShipBob cancels only returns awaiting arrival",
                    ret.status
                ),
            ));
        }
        self.client.cancel_return(id).await
    }

    async fn restock(&self, req: &RmaRef, _key: &IdempotencyKey) -> Result<(), AdapterError> {
        let action = "warehouse.restock";
        let id = return_id(action, req)?;
        let ret = self
            .client
            .get_return(action, id)
            .await?
            .ok_or_else(|| permanent(action, format!("ShipBob has no return {id}")))?;
        if !status_is(&ret.status, "Completed") {
            // ShipBob restocks when it processes the return; not done yet, so ask again later.
            return Err(AdapterError::transient(
                KIND,
                action,
                format!("return {id} is `{}`, not processed yet", ret.status),
            ));
        }
        match inspection(&ret) {
            (true, _) => Ok(()),
            (false, note) => Err(permanent(
                action,
                format!(
                    "ShipBob did not restock return {id}: {}",
                    note.unwrap_or_default()
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units_add_up_per_sku() {
        let line = |sku: &str, quantity| LineRef {
            line_id: "l".into(),
            sku: sku.into(),
            quantity,
        };
        let lines = [line("a", 1), line("b", 2), line("a", 3)];
        let units = units_by_sku(&lines);
        assert_eq!(units.get("a"), Some(&4));
        assert_eq!(units.get("b"), Some(&2));
    }

    #[test]
    fn rma_ids_are_shipbob_return_ids() {
        let ok = RmaRef {
            rma_id: "123".into(),
        };
        assert_eq!(return_id("x.y", &ok).ok(), Some(123));
        let bad = RmaRef {
            rma_id: "rma-1".into(),
        };
        assert!(return_id("x.y", &bad).is_err());
    }
}
