//! Acme Pay webhooks: header `Acme-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
//! "{t}.{raw body}")>` (Stripe's scheme), body
//! `{"id": "evt_1", "type": "refund.succeeded", "data": <the refund object>}`.

use std::time::{Duration, SystemTime};

use aftersales_adapter::{
    Headers, InboundEvent, Secret, WebhookError, WebhookVerifier, constant_time_eq,
};
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

/// The signature header.
pub(crate) const SIGNATURE_HEADER: &str = "Acme-Signature";

/// Verifies Acme Pay webhooks against any of its secrets (several during rotation).
#[derive(Debug)]
pub(crate) struct AcmeWebhooks {
    pub(crate) secrets: Vec<Secret>,
    pub(crate) tolerance: Duration,
}

#[derive(Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventRefund,
}

#[derive(Deserialize)]
struct EventRefund {
    id: String,
    payment_id: String,
    amount: i64,
    currency: String,
    #[serde(default)]
    metadata: Option<EventMetadata>,
}

#[derive(Deserialize)]
struct EventMetadata {
    #[serde(default)]
    service_order_id: Option<String>,
}

impl WebhookVerifier for AcmeWebhooks {
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
                Some(("t", v)) => t = v.parse().ok(),
                Some(("v1", v)) => sigs.push(v),
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
        // 2. The timestamp, against the `now` passed in (a replay carries an old one).
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
        let (name, status) = match event.kind.as_str() {
            "refund.succeeded" => ("payment.refund.succeeded", "succeeded"),
            "refund.failed" => ("payment.refund.failed", "failed"),
            "refund.canceled" => ("payment.refund.canceled", "canceled"),
            // A genuine event the engine does not use: acknowledge and drop it.
            _ => return Ok(None),
        };
        let r = event.data;
        let mut payload = json!({
            "refund_id": r.id,
            "payment_id": r.payment_id,
            "amount": {"minor": r.amount, "currency": r.currency},
            "status": status,
        });
        if let Some(so) = r.metadata.and_then(|m| m.service_order_id) {
            payload["service_order_id"] = so.into();
        }
        Ok(Some(InboundEvent {
            // Acme re-sends the same event id: the engine dedupes on it.
            dedupe_id: event.id,
            name: name.into(),
            correlation: r.id,
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
