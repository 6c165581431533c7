//! Inbound events (webhooks and poll results) and the hook that verifies webhooks.

use std::time::SystemTime;

use serde::{Deserialize, Serialize};

/// An event from a platform that the engine correlates with a waiting instance.
///
/// Platforms deliver events more than once, late and out of order: the engine processes
/// each [`dedupe_id`](InboundEvent::dedupe_id) once and makes state transitions monotonic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InboundEvent {
    /// The platform's unique event id (Stripe `event.id`, the Shopify webhook id header,
    /// WeChat Pay notification `id`); the same delivery repeated carries the same id.
    pub dedupe_id: String,
    /// The event name from [`catalogue::events`](crate::catalogue::events), such as
    /// `payment.refund.succeeded` or `warehouse.return.received`.
    pub name: String,
    /// The id the engine correlates by: the refund id, RMA id or parcel id named by the
    /// event's [`EventSpec::correlation`](crate::catalogue::EventSpec::correlation).
    pub correlation: String,
    /// Everything else the platform said, as a JSON object.
    pub payload: serde_json::Value,
}

/// Request headers of a webhook delivery, looked up case-insensitively.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers {
    pairs: Vec<(String, String)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// Adds one header.
    pub fn with(mut self, name: impl Into<String>, value: impl Into<String>) -> Headers {
        self.pairs.push((name.into(), value.into()));
        self
    }

    /// The first value of a header, whatever the case of its name.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// Every header, in arrival order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.pairs.iter().map(|(n, v)| (n.as_str(), v.as_str()))
    }
}

impl<K: Into<String>, V: Into<String>> FromIterator<(K, V)> for Headers {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Headers {
        Headers {
            pairs: iter
                .into_iter()
                .map(|(k, v)| (k.into(), v.into()))
                .collect(),
        }
    }
}

/// Why a webhook delivery was refused. Each case is distinct so the server can answer and
/// log it precisely; none of them is retried by us (the platform re-sends on its own).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WebhookError {
    /// A header the scheme needs is absent.
    #[error("missing header `{0}`")]
    MissingHeader(String),
    /// The signature does not match the body under any configured secret.
    #[error("bad signature")]
    BadSignature,
    /// The signed timestamp is outside the tolerance window (a replay, or a clock far off).
    #[error("stale timestamp: signed {age_secs}s from now, tolerance is {tolerance_secs}s")]
    StaleTimestamp {
        /// Distance between the signed time and now, in seconds.
        age_secs: u64,
        /// The accepted distance, in seconds.
        tolerance_secs: u64,
    },
    /// The signature is valid but the body cannot be read as an event.
    #[error("malformed body: {0}")]
    MalformedBody(String),
}

/// Verifies and parses the webhooks of one platform.
///
/// An implementation checks the signature over the *raw* body bytes before parsing, compares
/// in constant time (see [`constant_time_eq`]), checks the timestamp against `now` (passed
/// in, never read from the wall clock, so tests control it), and supports several secrets
/// during rotation.
pub trait WebhookVerifier: Send + Sync {
    /// The platform name (`stripe`), for logs.
    fn platform(&self) -> &'static str;

    /// Verifies one delivery and parses it. `Ok(None)` means a genuine delivery of an event
    /// the engine does not use: acknowledge it and drop it.
    fn verify(
        &self,
        headers: &Headers,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<InboundEvent>, WebhookError>;

    /// The body to answer a verified delivery with (Alipay expects `success`).
    fn ack_body(&self) -> &'static str {
        ""
    }
}

/// Compares two byte strings in time that depends only on their lengths, for signatures.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_case_insensitive() {
        let h = Headers::new().with("Stripe-Signature", "t=1,v1=ab");
        assert_eq!(h.get("stripe-signature"), Some("t=1,v1=ab"));
        assert_eq!(h.get("x-other"), None);
        let h: Headers = [("A", "1"), ("b", "2")].into_iter().collect();
        assert_eq!(h.iter().count(), 2);
    }

    #[test]
    fn constant_time_eq_compares_exactly() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(constant_time_eq(b"", b""));
    }

    #[test]
    fn webhook_errors_display() {
        assert_eq!(WebhookError::BadSignature.to_string(), "bad signature");
        assert_eq!(
            WebhookError::StaleTimestamp {
                age_secs: 900,
                tolerance_secs: 300
            }
            .to_string(),
            "stale timestamp: signed 900s from now, tolerance is 300s"
        );
        assert_eq!(
            WebhookError::MissingHeader("sim-signature".into()).to_string(),
            "missing header `sim-signature`"
        );
        assert_eq!(
            WebhookError::MalformedBody("expected `id`".into()).to_string(),
            "malformed body: expected `id`"
        );
    }
}
