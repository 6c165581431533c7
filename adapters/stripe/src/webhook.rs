//! Stripe webhooks: header `Stripe-Signature: t=<unix seconds>,v1=<hex>,v1=<hex>,...`
//! where each `v1` is `hex(HMAC-SHA256(endpoint secret, "{t}.{raw body}"))` (several during a
//! secret rotation; other schemes such as `v0` are ignored). The body is an event
//! `{"id": "evt_...", "type": "refund.updated", "data": {"object": <the refund>}}`.
//!
//! Refund state comes from the `refund.created`, `refund.updated`, `refund.failed` and
//! `charge.refund.updated` events, whose object is the refund: `succeeded`, `failed` and
//! `canceled` become `payment.refund.succeeded|failed|canceled`, correlated by the refund id
//! and deduped by the event id. Any other event, or a refund still `pending` or
//! `requires_action`, is acknowledged and dropped.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aftersales_adapter::{
    Headers, InboundEvent, Secret, WebhookError, WebhookVerifier, constant_time_eq,
};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::amount::from_stripe;

/// The signature header.
pub(crate) const SIGNATURE_HEADER: &str = "Stripe-Signature";

/// Verifies Stripe webhooks against any of the endpoint's secrets.
#[derive(Debug)]
pub(crate) struct StripeWebhooks {
    pub(crate) secrets: Vec<Secret>,
    pub(crate) tolerance: Duration,
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Deserialize)]
struct EventData {
    object: serde_json::Value,
}

#[derive(Deserialize)]
struct EventRefund {
    id: String,
    status: String,
    amount: i64,
    currency: String,
    #[serde(default)]
    payment_intent: Option<String>,
    #[serde(default)]
    charge: Option<String>,
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

const REFUND_EVENTS: &[&str] = &[
    "refund.created",
    "refund.updated",
    "refund.failed",
    "charge.refund.updated",
];

impl WebhookVerifier for StripeWebhooks {
    fn platform(&self) -> &'static str {
        crate::KIND
    }

    fn verify(
        &self,
        headers: &Headers,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<InboundEvent>, WebhookError> {
        // 1. The signature, over the raw bytes, before anything is parsed.
        let header = headers
            .get(SIGNATURE_HEADER)
            .ok_or_else(|| WebhookError::MissingHeader(SIGNATURE_HEADER.into()))?;
        let mut t: Option<i64> = None;
        let mut sigs: Vec<&str> = Vec::new();
        for part in header.split(',') {
            match part.trim().split_once('=') {
                Some(("t", v)) => t = v.trim().parse().ok(),
                Some(("v1", v)) => sigs.push(v.trim()),
                _ => {}
            }
        }
        let t = t.ok_or(WebhookError::BadSignature)?;
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(body);
        let genuine = self.secrets.iter().any(|secret| {
            let expected = hmac_hex(secret, &signed);
            sigs.iter()
                .any(|s| constant_time_eq(s.as_bytes(), expected.as_bytes()))
        });
        if !genuine {
            return Err(WebhookError::BadSignature);
        }
        // 2. The timestamp, against the `now` passed in: a replay carries an old one.
        let age = unix_secs(now).abs_diff(t);
        if age > self.tolerance.as_secs() {
            return Err(WebhookError::StaleTimestamp {
                age_secs: age,
                tolerance_secs: self.tolerance.as_secs(),
            });
        }
        // 3. Only now, the body.
        let event: Event =
            serde_json::from_slice(body).map_err(|e| WebhookError::MalformedBody(e.to_string()))?;
        if !REFUND_EVENTS.contains(&event.kind.as_str()) {
            // A genuine event the engine does not use: acknowledge and drop it.
            return Ok(None);
        }
        let refund: EventRefund = serde_json::from_value(event.data.object)
            .map_err(|e| WebhookError::MalformedBody(format!("{}: {e}", event.kind)))?;
        let (name, status) = match refund.status.as_str() {
            "succeeded" => ("payment.refund.succeeded", "succeeded"),
            "failed" => ("payment.refund.failed", "failed"),
            "canceled" => ("payment.refund.canceled", "canceled"),
            // Still on its way: the final state comes in a later event.
            _ => return Ok(None),
        };
        let amount = from_stripe(refund.amount, &refund.currency)
            .map_err(|e| WebhookError::MalformedBody(e.to_string()))?;
        let payment_id = refund
            .payment_intent
            .or(refund.charge)
            .ok_or_else(|| WebhookError::MalformedBody("the refund names no payment".into()))?;
        let mut payload = json!({
            "refund_id": refund.id,
            "payment_id": payment_id,
            "amount": amount,
            "status": status,
        });
        if let Some(so) = refund.metadata.get(crate::SERVICE_ORDER_METADATA) {
            payload["service_order_id"] = so.clone().into();
        }
        Ok(Some(InboundEvent {
            // Stripe delivers an event more than once: the engine dedupes on its id.
            dedupe_id: event.id,
            name: name.into(),
            correlation: refund.id,
            payload,
        }))
    }
}

fn hmac_hex(secret: &Secret, signed: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    match Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes()) {
        Ok(mut mac) => {
            mac.update(signed);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
