//! ShipBob webhooks, in the Standard Webhooks scheme ShipBob uses for dated-API
//! subscriptions: headers `webhook-id`, `webhook-timestamp` (Unix seconds) and
//! `webhook-signature` (space-separated `v1,<base64>` values), each signature being
//! `base64(HMAC-SHA256(key, "{webhook-id}.{webhook-timestamp}.{raw body}"))` where the key is
//! the base64-decoded part of the subscription secret after `whsec_`. The topic arrives in
//! `x-webhook-topic`.
//!
//! `return.completed` (ShipBob received, inspected and processed a return) becomes
//! `warehouse.return.received`, correlated by the return id (our RMA id) and deduped by
//! `webhook-id`; the payload says whether inspection passed: every item restocked. Any other
//! topic is acknowledged and dropped.

use std::time::{Duration, SystemTime};

use aftersales_adapter::{
    Headers, InboundEvent, Secret, WebhookError, WebhookVerifier, constant_time_eq,
};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use serde::Deserialize;
use serde_json::json;
use sha2::Sha256;

use crate::client::{SbReturn, status_is};

/// The delivery id header.
pub(crate) const ID_HEADER: &str = "webhook-id";
/// The signed time header.
pub(crate) const TIMESTAMP_HEADER: &str = "webhook-timestamp";
/// The signature header.
pub(crate) const SIGNATURE_HEADER: &str = "webhook-signature";
/// The topic header.
pub(crate) const TOPIC_HEADER: &str = "x-webhook-topic";

/// The topic that carries an inspected return.
pub(crate) const RETURN_COMPLETED: &str = "return.completed";

/// Verifies ShipBob webhooks against any of the subscription's secrets.
#[derive(Debug)]
pub(crate) struct ShipBobWebhooks {
    pub(crate) secrets: Vec<Secret>,
    pub(crate) tolerance: Duration,
}

/// A body that wraps the resource in `data`, or the resource itself.
#[derive(Deserialize)]
struct Envelope {
    #[serde(default)]
    topic: Option<String>,
    #[serde(default)]
    data: Option<serde_json::Value>,
}

impl WebhookVerifier for ShipBobWebhooks {
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
        let id = header(ID_HEADER)?;
        let timestamp = header(TIMESTAMP_HEADER)?;
        let signatures = header(SIGNATURE_HEADER)?;
        // 1. The signature, over the raw bytes, before anything is parsed.
        let mut signed = format!("{id}.{timestamp}.").into_bytes();
        signed.extend_from_slice(body);
        let given: Vec<&str> = signatures
            .split_whitespace()
            .filter_map(|s| s.strip_prefix("v1,"))
            .collect();
        let genuine = self.secrets.iter().any(|secret| {
            let expected = sign(secret, &signed);
            given
                .iter()
                .any(|g| constant_time_eq(g.as_bytes(), expected.as_bytes()))
        });
        if !genuine {
            return Err(WebhookError::BadSignature);
        }
        // 2. The timestamp, against the `now` passed in: a replay carries an old one.
        let t: i64 = timestamp.trim().parse().map_err(|_| {
            WebhookError::MalformedBody(format!("{TIMESTAMP_HEADER} is not a number"))
        })?;
        let age = unix_secs(now).abs_diff(t);
        if age > self.tolerance.as_secs() {
            return Err(WebhookError::StaleTimestamp {
                age_secs: age,
                tolerance_secs: self.tolerance.as_secs(),
            });
        }
        // 3. Only now, the body.
        let value: serde_json::Value =
            serde_json::from_slice(body).map_err(|e| WebhookError::MalformedBody(e.to_string()))?;
        let envelope: Envelope = serde_json::from_value(value.clone())
            .map_err(|e| WebhookError::MalformedBody(e.to_string()))?;
        let topic = headers
            .get(TOPIC_HEADER)
            .map(str::to_owned)
            .or(envelope.topic);
        if topic.as_deref() != Some(RETURN_COMPLETED) {
            // A genuine event the engine does not use: acknowledge and drop it.
            return Ok(None);
        }
        let resource = envelope.data.unwrap_or(value);
        let ret: SbReturn = serde_json::from_value(resource)
            .map_err(|e| WebhookError::MalformedBody(format!("{RETURN_COMPLETED}: {e}")))?;
        if !status_is(&ret.status, "Completed") {
            return Err(WebhookError::MalformedBody(format!(
                "{RETURN_COMPLETED} for return {} in status `{}`",
                ret.id, ret.status
            )));
        }
        let (passed, note) = inspection(&ret);
        let rma_id = ret.id.to_string();
        let mut payload = json!({
            "rma_id": rma_id,
            "inspection_passed": passed,
        });
        if let Some(note) = note {
            payload["note"] = note.into();
        }
        if let Some(order) = &ret.store_order_id {
            payload["order_id"] = order.clone().into();
        }
        if let Some(reference) = &ret.reference_id {
            payload["reference_id"] = reference.clone().into();
        }
        Ok(Some(InboundEvent {
            // The same delivery retried keeps its `webhook-id`: the engine dedupes on it.
            dedupe_id: id.to_owned(),
            name: "warehouse.return.received".into(),
            correlation: rma_id,
            payload,
        }))
    }
}

/// Inspection passed when ShipBob restocked everything it processed; otherwise the note
/// lists what it did instead (`Quarantine: damaged`).
pub(crate) fn inspection(ret: &SbReturn) -> (bool, Option<String>) {
    let mut notes: Vec<String> = Vec::new();
    let mut any = false;
    for item in &ret.inventory {
        let mut restocked: u32 = 0;
        for a in &item.action_taken {
            any = true;
            if status_is(&a.action, "Restock") {
                restocked = restocked.saturating_add(a.quantity_processed);
            } else {
                notes.push(match &a.action_reason {
                    Some(r) if !r.is_empty() => format!("{}: {r}", a.action),
                    _ => a.action.clone(),
                });
            }
        }
        if notes.is_empty() && restocked < item.quantity {
            notes.push(format!(
                "{restocked} of {} unit(s) restocked",
                item.quantity
            ));
        }
    }
    if !any {
        return (
            false,
            Some("ShipBob reported no action on the return".into()),
        );
    }
    if notes.is_empty() {
        (true, None)
    } else {
        (false, Some(notes.join("; ")))
    }
}

/// `base64(HMAC-SHA256(key, signed))`, the key being the secret after `whsec_`, base64-decoded
/// (the raw secret bytes when it is not base64).
pub(crate) fn sign(secret: &Secret, signed: &[u8]) -> String {
    let text = secret.expose();
    let encoded = text.strip_prefix("whsec_").unwrap_or(text);
    let key = STANDARD
        .decode(encoded)
        .unwrap_or_else(|_| text.as_bytes().to_vec());
    // HMAC takes keys of any length, so this cannot fail.
    match Hmac::<Sha256>::new_from_slice(&key) {
        Ok(mut mac) => {
            mac.update(signed);
            STANDARD.encode(mac.finalize().into_bytes())
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
