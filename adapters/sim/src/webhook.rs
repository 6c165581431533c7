//! The simulator's webhook scheme, modelled on Stripe's: header
//! `sim-signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "{t}.{body}")>`.

use std::time::{Duration, SystemTime};

use aftersales_adapter::{
    Headers, InboundEvent, Secret, WebhookError, WebhookVerifier, constant_time_eq,
};
use hmac::{Hmac, KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The signature header.
pub const SIGNATURE_HEADER: &str = "sim-signature";

/// One signed webhook delivery, as an HTTP server would receive it.
#[derive(Debug, Clone, PartialEq)]
pub struct WebhookDelivery {
    /// The request headers.
    pub headers: Headers,
    /// The raw body.
    pub body: Vec<u8>,
}

/// The JSON body of a simulator webhook.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    correlation: String,
    data: serde_json::Value,
}

fn hmac_hex(secret: &Secret, signed: &[u8]) -> String {
    // HMAC accepts keys of any length, so this cannot fail.
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

/// The `sim-signature` header value for `body` signed at `at`.
pub fn sign(secret: &Secret, body: &[u8], at: SystemTime) -> String {
    let t = unix_secs(at);
    let mut signed = format!("{t}.").into_bytes();
    signed.extend_from_slice(body);
    format!("t={t},v1={}", hmac_hex(secret, &signed))
}

/// Encodes and signs one event.
pub fn deliver(secret: &Secret, event: &InboundEvent, at: SystemTime) -> WebhookDelivery {
    let body = Body {
        id: event.dedupe_id.clone(),
        kind: event.name.clone(),
        correlation: event.correlation.clone(),
        data: event.payload.clone(),
    };
    let body = serde_json::to_vec(&body).unwrap_or_default();
    WebhookDelivery {
        headers: Headers::new().with(SIGNATURE_HEADER, sign(secret, &body, at)),
        body,
    }
}

/// Verifies simulator webhooks. Several secrets may be valid at once (rotation).
#[derive(Debug, Clone)]
pub struct SimWebhookVerifier {
    secrets: Vec<Secret>,
    tolerance: Duration,
}

impl SimWebhookVerifier {
    /// A verifier accepting signatures by any of `secrets` within `tolerance` of now.
    pub fn new(secrets: Vec<Secret>, tolerance: Duration) -> SimWebhookVerifier {
        SimWebhookVerifier { secrets, tolerance }
    }
}

impl WebhookVerifier for SimWebhookVerifier {
    fn platform(&self) -> &'static str {
        "sim"
    }

    fn verify(
        &self,
        headers: &Headers,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<InboundEvent>, WebhookError> {
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
        let Some(t) = t else {
            return Err(WebhookError::BadSignature);
        };
        let mut signed = format!("{t}.").into_bytes();
        signed.extend_from_slice(body);
        let valid = self.secrets.iter().any(|secret| {
            let expected = hmac_hex(secret, &signed);
            sigs.iter()
                .any(|sig| constant_time_eq(sig.as_bytes(), expected.as_bytes()))
        });
        if !valid {
            return Err(WebhookError::BadSignature);
        }
        let age = unix_secs(now).abs_diff(t);
        if age > self.tolerance.as_secs() {
            return Err(WebhookError::StaleTimestamp {
                age_secs: age,
                tolerance_secs: self.tolerance.as_secs(),
            });
        }
        let body: Body =
            serde_json::from_slice(body).map_err(|e| WebhookError::MalformedBody(e.to_string()))?;
        if !aftersales_adapter::catalogue::events()
            .iter()
            .any(|e| e.name == body.kind)
        {
            return Ok(None);
        }
        Ok(Some(InboundEvent {
            dedupe_id: body.id,
            name: body.kind,
            correlation: body.correlation,
            payload: body.data,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(name: &str) -> InboundEvent {
        InboundEvent {
            dedupe_id: "evt_1".into(),
            name: name.into(),
            correlation: "re_1".into(),
            payload: serde_json::json!({"refund_id": "re_1"}),
        }
    }

    #[test]
    fn signs_like_stripe_and_verifies_with_rotation() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let old = Secret::new("old");
        let new = Secret::new("new");
        let d = deliver(&old, &event("payment.refund.succeeded"), now);
        let v = SimWebhookVerifier::new(vec![new, old], Duration::from_secs(300));
        let got = v.verify(&d.headers, &d.body, now).unwrap().unwrap();
        assert_eq!(got, event("payment.refund.succeeded"));
        assert!(
            d.headers
                .get("Sim-Signature")
                .unwrap()
                .starts_with("t=1700000000,v1=")
        );
        let ignored = deliver(&Secret::new("new"), &event("payment.dispute.created"), now);
        assert_eq!(v.verify(&ignored.headers, &ignored.body, now), Ok(None));
    }

    #[test]
    fn refuses_tampering_staleness_and_garbage_distinctly() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let s = Secret::new("s");
        let v = SimWebhookVerifier::new(vec![s.clone()], Duration::from_secs(300));
        let d = deliver(&s, &event("payment.refund.succeeded"), now);
        let mut body = d.body.clone();
        body[10] ^= 1;
        assert_eq!(
            v.verify(&d.headers, &body, now),
            Err(WebhookError::BadSignature)
        );
        assert_eq!(
            v.verify(&d.headers, &d.body, now + Duration::from_secs(301)),
            Err(WebhookError::StaleTimestamp {
                age_secs: 301,
                tolerance_secs: 300
            })
        );
        assert_eq!(
            v.verify(&Headers::new(), &d.body, now),
            Err(WebhookError::MissingHeader("sim-signature".into()))
        );
        let garbage = b"not json";
        let h = Headers::new().with(SIGNATURE_HEADER, sign(&s, garbage, now));
        assert!(matches!(
            v.verify(&h, garbage, now),
            Err(WebhookError::MalformedBody(_))
        ));
    }
}
