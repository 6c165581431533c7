//! Shopify webhooks: `X-Shopify-Hmac-Sha256` is `base64(HMAC-SHA256(app client secret, raw
//! body))`, compared in constant time against every configured secret (the previous one
//! during a rotation). The signature covers the body only, so the replay guard is separate:
//! `X-Shopify-Triggered-At` must lie within the tolerance of now, and `X-Shopify-Webhook-Id`
//! is the dedupe id (a retried delivery keeps it).
//!
//! Topics, typed before they are mapped: `refunds/create` with successful refund
//! transactions becomes `payment.refund.succeeded`, correlated by the refund's GID, with the
//! service order read back from the note `order.report_refund` wrote. `orders/cancelled`,
//! `returns/*` and every other topic are genuine but have no catalogue event: acknowledged
//! and dropped.

use std::time::{Duration, SystemTime};

use aftersales_adapter::{
    Headers, InboundEvent, Secret, WebhookError, WebhookVerifier, constant_time_eq,
};
use aftersales_money::Money;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::money::from_shopify;

/// The signature header.
pub(crate) const HMAC_HEADER: &str = "X-Shopify-Hmac-Sha256";
/// The delivery id header.
pub(crate) const WEBHOOK_ID_HEADER: &str = "X-Shopify-Webhook-Id";
/// When Shopify triggered the delivery (RFC 3339).
pub(crate) const TRIGGERED_AT_HEADER: &str = "X-Shopify-Triggered-At";
/// The topic header.
pub(crate) const TOPIC_HEADER: &str = "X-Shopify-Topic";

/// Verifies Shopify webhooks against any of the app's secrets.
#[derive(Debug)]
pub(crate) struct ShopifyWebhooks {
    pub(crate) secrets: Vec<Secret>,
    pub(crate) tolerance: Duration,
}

/// The topics this adapter reads, typed.
#[derive(Debug)]
pub(crate) enum ShopifyEvent {
    /// `refunds/create`.
    RefundCreated(RefundPayload),
    /// A topic with no catalogue event (`orders/cancelled`, `returns/approve`, ...).
    Other,
}

/// A `refunds/create` body (the fields we read).
#[derive(Debug, Deserialize)]
pub(crate) struct RefundPayload {
    #[serde(default)]
    admin_graphql_api_id: Option<String>,
    id: u64,
    order_id: u64,
    #[serde(default)]
    note: Option<String>,
    #[serde(default)]
    transactions: Vec<RefundTransaction>,
}

#[derive(Debug, Deserialize)]
struct RefundTransaction {
    kind: String,
    status: String,
    amount: String,
    currency: String,
    #[serde(default)]
    parent_id: Option<u64>,
}

impl ShopifyEvent {
    fn parse(topic: &str, body: &[u8]) -> Result<ShopifyEvent, WebhookError> {
        match topic {
            "refunds/create" => serde_json::from_slice(body)
                .map(ShopifyEvent::RefundCreated)
                .map_err(|e| WebhookError::MalformedBody(format!("{topic}: {e}"))),
            other => {
                // Still a JSON object, or the delivery is not Shopify's.
                serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
                    .map_err(|e| WebhookError::MalformedBody(format!("{other}: {e}")))?;
                Ok(ShopifyEvent::Other)
            }
        }
    }
}

impl WebhookVerifier for ShopifyWebhooks {
    fn platform(&self) -> &'static str {
        crate::KIND
    }

    fn verify(
        &self,
        headers: &Headers,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<InboundEvent>, WebhookError> {
        let header = |name: &str| {
            headers
                .get(name)
                .ok_or_else(|| WebhookError::MissingHeader(name.to_owned()))
        };
        // 1. The signature, over the raw bytes, before anything is parsed.
        let given = header(HMAC_HEADER)?.trim();
        let genuine = self
            .secrets
            .iter()
            .any(|secret| constant_time_eq(given.as_bytes(), sign(secret, body).as_bytes()));
        if !genuine {
            return Err(WebhookError::BadSignature);
        }
        // 2. The replay guard: the delivery's time against the `now` passed in, and its id.
        let triggered = header(TRIGGERED_AT_HEADER)?;
        let at_ms = crate::time::unix_ms(triggered.trim()).ok_or_else(|| {
            WebhookError::MalformedBody(format!("{TRIGGERED_AT_HEADER} is not RFC 3339"))
        })?;
        let now_ms = unix_ms(now);
        let age = now_ms.abs_diff(at_ms) / 1000;
        if age > self.tolerance.as_secs() {
            return Err(WebhookError::StaleTimestamp {
                age_secs: age,
                tolerance_secs: self.tolerance.as_secs(),
            });
        }
        let dedupe_id = header(WEBHOOK_ID_HEADER)?.to_owned();
        let topic = header(TOPIC_HEADER)?;
        // 3. Only now, the body.
        match ShopifyEvent::parse(topic, body)? {
            ShopifyEvent::RefundCreated(r) => refund_event(dedupe_id, r),
            ShopifyEvent::Other => Ok(None),
        }
    }
}

fn refund_event(dedupe_id: String, r: RefundPayload) -> Result<Option<InboundEvent>, WebhookError> {
    let done: Vec<&RefundTransaction> = r
        .transactions
        .iter()
        .filter(|t| t.kind == "refund" && t.status == "success")
        .collect();
    let Some(first) = done.first() else {
        // Nothing refunded yet (pending or failed transactions): a later event says more.
        return Ok(None);
    };
    let mut amount: Option<Money> = None;
    for t in &done {
        let m = from_shopify(&t.amount, &t.currency)
            .map_err(|e| WebhookError::MalformedBody(format!("amount: {e}")))?;
        amount = Some(match amount {
            None => m,
            Some(a) => a
                .checked_add(&m)
                .map_err(|e| WebhookError::MalformedBody(format!("amount: {e}")))?,
        });
    }
    let refund_id = r
        .admin_graphql_api_id
        .unwrap_or_else(|| format!("gid://shopify/Refund/{}", r.id));
    let payment_id = match first.parent_id {
        Some(p) => format!("gid://shopify/OrderTransaction/{p}"),
        None => format!("gid://shopify/Order/{}", r.order_id),
    };
    let mut payload = json!({
        "refund_id": refund_id,
        "payment_id": payment_id,
        "amount": amount,
        "status": "succeeded",
    });
    if let Some(so) = r.note.as_deref().and_then(service_order) {
        payload["service_order_id"] = so.into();
    }
    Ok(Some(InboundEvent {
        dedupe_id,
        name: "payment.refund.succeeded".into(),
        correlation: refund_id,
        payload,
    }))
}

/// The service order named in a note written by `order.report_refund`.
fn service_order(note: &str) -> Option<String> {
    let start = note.find(crate::SERVICE_ORDER_MARKER)? + crate::SERVICE_ORDER_MARKER.len();
    let rest = &note[start..];
    let end = rest.find(']')?;
    Some(rest[..end].to_owned())
}

/// `base64(HMAC-SHA256(secret, body))`.
pub(crate) fn sign(secret: &Secret, body: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mut mac) => {
            mac.update(body);
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

fn unix_ms(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_millis()).unwrap_or(i64::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_orders_come_back_from_notes() {
        assert_eq!(
            service_order("aftersales refund r-1 [aftersales-so:so-42] [aftersales-key:k]"),
            Some("so-42".into())
        );
        assert_eq!(service_order("refunded by hand"), None);
    }
}
