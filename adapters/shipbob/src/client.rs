//! The raw ShipBob calls: one HTTP request each, no retries, no sleeping.

use std::time::Duration;

use aftersales_adapter::{AdapterError, Secret};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::{Call, ShipBobError, retry_after, status_message};

/// An order as ShipBob returns it (the fields we read).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SbOrder {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) reference_id: Option<String>,
    #[serde(default)]
    pub(crate) products: Vec<SbOrderProduct>,
    #[serde(default)]
    pub(crate) shipments: Vec<SbShipment>,
}

/// A product line of an order.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SbOrderProduct {
    #[serde(default)]
    pub(crate) reference_id: Option<String>,
    #[serde(default)]
    pub(crate) sku: Option<String>,
    #[serde(default)]
    pub(crate) quantity: u32,
}

/// A shipment of an order.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SbShipment {
    pub(crate) id: u64,
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) location: Option<SbFacility>,
    #[serde(default)]
    pub(crate) products: Vec<SbShipmentProduct>,
}

/// A fulfillment center.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct SbFacility {
    pub(crate) id: u64,
}

/// A product in a shipment, with the inventory items it consumed.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SbShipmentProduct {
    #[serde(default)]
    pub(crate) reference_id: Option<String>,
    #[serde(default)]
    pub(crate) sku: Option<String>,
    #[serde(default)]
    pub(crate) inventory_items: Vec<SbInventoryItem>,
}

/// An inventory item in a shipment product.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SbInventoryItem {
    pub(crate) id: u64,
}

impl SbShipmentProduct {
    pub(crate) fn is_sku(&self, sku: &str) -> bool {
        self.sku.as_deref() == Some(sku) || self.reference_id.as_deref() == Some(sku)
    }
}

/// The answer to an order cancel: one result per shipment.
#[derive(Debug, Deserialize)]
pub(crate) struct SbCancelOrder {
    #[serde(default)]
    pub(crate) canceled_shipment_results: Vec<SbCancelResult>,
}

/// Whether one shipment was cancelled.
#[derive(Debug, Deserialize)]
pub(crate) struct SbCancelResult {
    pub(crate) shipment_id: u64,
    pub(crate) is_success: bool,
    #[serde(default)]
    pub(crate) reason: Option<String>,
}

/// A return order as ShipBob returns it (the fields we read).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SbReturn {
    pub(crate) id: u64,
    #[serde(default)]
    pub(crate) reference_id: Option<String>,
    pub(crate) status: String,
    #[serde(default)]
    pub(crate) store_order_id: Option<String>,
    #[serde(default)]
    pub(crate) inventory: Vec<SbReturnInventory>,
}

/// One inventory item of a return and what ShipBob did with it.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SbReturnInventory {
    #[serde(default)]
    pub(crate) quantity: u32,
    #[serde(default)]
    pub(crate) action_taken: Vec<SbActionTaken>,
}

/// An action ShipBob took on returned inventory.
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct SbActionTaken {
    pub(crate) action: String,
    #[serde(default)]
    pub(crate) action_reason: Option<String>,
    #[serde(default)]
    pub(crate) quantity_processed: u32,
}

/// `POST /{version}/return`.
#[derive(Debug, Serialize)]
pub(crate) struct NewReturn {
    pub(crate) fulfillment_center: SbFacility,
    pub(crate) inventory: Vec<NewReturnInventory>,
    pub(crate) reference_id: String,
    pub(crate) original_shipment_id: u64,
}

/// One inventory item to return.
#[derive(Debug, Serialize)]
pub(crate) struct NewReturnInventory {
    pub(crate) id: u64,
    pub(crate) quantity: u32,
    pub(crate) requested_action: String,
}

/// A list answer: a bare array, or a page object holding `items`.
#[derive(Deserialize)]
#[serde(untagged)]
enum List<T> {
    Bare(Vec<T>),
    Page { items: Vec<T> },
}

impl<T> List<T> {
    fn into_vec(self) -> Vec<T> {
        match self {
            List::Bare(v) | List::Page { items: v } => v,
        }
    }
}

/// Status names compared as ShipBob spells them in different versions (`AwaitingArrival`,
/// `Awaiting Arrival`).
pub(crate) fn status_is(status: &str, name: &str) -> bool {
    let norm = |s: &str| -> String {
        s.chars()
            .filter(|c| c.is_ascii_alphanumeric())
            .map(|c| c.to_ascii_lowercase())
            .collect()
    };
    norm(status) == norm(name)
}

/// An HTTP client for one ShipBob channel.
pub(crate) struct ShipBobClient {
    http: Client,
    root: String,
    token: Secret,
    channel_id: u64,
}

impl std::fmt::Debug for ShipBobClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShipBobClient")
            .field("root", &self.root)
            .field("token", &self.token) // prints ***
            .field("channel_id", &self.channel_id)
            .finish()
    }
}

impl ShipBobClient {
    pub(crate) fn new(
        base_url: &str,
        api_version: &str,
        token: Secret,
        channel_id: u64,
        timeout: Duration,
    ) -> Result<ShipBobClient, reqwest::Error> {
        let http = Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ShipBobClient {
            http,
            root: format!(
                "{}/{}",
                base_url.trim_end_matches('/'),
                api_version.trim_matches('/')
            ),
            token,
            channel_id,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.root))
            .bearer_auth(self.token.expose())
            .header("shipbob_channel_id", self.channel_id.to_string())
    }

    /// `GET /order?ReferenceIds={reference}`: the order the store knows by `reference`.
    pub(crate) async fn find_order(
        &self,
        call: Call,
        reference: &str,
    ) -> Result<Option<SbOrder>, AdapterError> {
        let req = self
            .request(Method::GET, "/order")
            .query(&[("ReferenceIds", reference)]);
        let list: Option<List<SbOrder>> = self.send(Call::Read(call.action()), req).await?;
        Ok(list
            .map(List::into_vec)
            .unwrap_or_default()
            .into_iter()
            .find(|o| o.reference_id.as_deref() == Some(reference)))
    }

    /// `POST /order/{id}:cancel`: cancels every shipment of the order that can still be.
    pub(crate) async fn cancel_order(&self, order_id: u64) -> Result<SbCancelOrder, AdapterError> {
        let call = Call::Mutating("warehouse.intercept_shipment");
        let req = self.request(Method::POST, &format!("/order/{order_id}:cancel"));
        self.send(call, req).await?.ok_or_else(|| {
            AdapterError::not_found(crate::KIND, call.action(), "shipbob 404: no such order")
        })
    }

    /// `GET /return?ReferenceIds={reference}`: the return made with that reference.
    pub(crate) async fn find_return(
        &self,
        action: &'static str,
        reference: &str,
    ) -> Result<Option<SbReturn>, AdapterError> {
        let req = self
            .request(Method::GET, "/return")
            .query(&[("ReferenceIds", reference)]);
        let list: Option<List<SbReturn>> = self.send(Call::Read(action), req).await?;
        Ok(list
            .map(List::into_vec)
            .unwrap_or_default()
            .into_iter()
            .find(|r| r.reference_id.as_deref() == Some(reference)))
    }

    /// `GET /return/{id}`; `None` when ShipBob has no such return.
    pub(crate) async fn get_return(
        &self,
        action: &'static str,
        id: u64,
    ) -> Result<Option<SbReturn>, AdapterError> {
        let req = self.request(Method::GET, &format!("/return/{id}"));
        self.send(Call::Read(action), req).await
    }

    /// `POST /return`.
    pub(crate) async fn create_return(&self, body: &NewReturn) -> Result<SbReturn, AdapterError> {
        let call = Call::Mutating("warehouse.create_return");
        let body = serde_json::to_vec(body).map_err(|e| {
            AdapterError::permanent(crate::KIND, call.action(), "cannot encode the return")
                .with_source(e)
        })?;
        let req = self
            .request(Method::POST, "/return")
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        self.send(call, req).await?.ok_or_else(|| {
            AdapterError::permanent(crate::KIND, call.action(), "shipbob 404 on create")
        })
    }

    /// `POST /return/{id}:cancel`.
    pub(crate) async fn cancel_return(&self, id: u64) -> Result<(), AdapterError> {
        let call = Call::Mutating("warehouse.cancel_return");
        let req = self.request(Method::POST, &format!("/return/{id}:cancel"));
        self.send::<serde_json::Value>(call, req)
            .await?
            .map(|_| ())
            .ok_or_else(|| {
                AdapterError::not_found(crate::KIND, call.action(), "shipbob 404: no such return")
            })
    }

    /// Sends once and reads the answer; `Ok(None)` on `404`.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        call: Call,
        req: RequestBuilder,
    ) -> Result<Option<T>, AdapterError> {
        let resp = req.send().await.map_err(|e| {
            call.classify(if e.is_connect() {
                ShipBobError::Connect(e)
            } else if e.is_timeout() {
                ShipBobError::Lost("no answer before the timeout", Some(e))
            } else {
                ShipBobError::Lost("the connection broke after sending", Some(e))
            })
        })?;
        let status = resp.status();
        let retry = retry_after(
            resp.headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let body = resp.bytes().await.map_err(|e| {
            call.classify(ShipBobError::Lost(
                "the answer broke off while reading it",
                Some(e),
            ))
        })?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(call.classify(ShipBobError::Status {
                status,
                message: status_message(status, &body),
                retry_after: retry,
            }));
        }
        if body.is_empty() {
            // `204` and friends: nothing to read; callers that need a body ask for a Value.
            return serde_json::from_slice(b"null")
                .map(Some)
                .map_err(|e| call.classify(ShipBobError::Unreadable(e)));
        }
        serde_json::from_slice(&body)
            .map(Some)
            .map_err(|e| call.classify(ShipBobError::Unreadable(e)))
    }
}
