//! Stripe's failures mapped to [`AdapterError`] classes.
//!
//! Stripe answers errors as `{"error": {"type": "invalid_request_error", "code":
//! "amount_too_large", "message": "..."}}` with an HTTP status. The class comes from what can
//! have happened at Stripe, never from the text:
//!
//! | what happened | refund (mutating) | status query (read) |
//! | --- | --- | --- |
//! | could not connect | transient | transient |
//! | `429`, `409` (a concurrent request with the same key; nothing saved), `502`, `503` | transient, with `Retry-After` | transient |
//! | `500`: Stripe documents its result as indeterminate, and replays it for the same key | unknown outcome | transient |
//! | `504`, a timeout or a connection lost after sending | unknown outcome | transient |
//! | `2xx` with a body we cannot read | unknown outcome | transient |
//! | `404`, or `resource_missing` (Stripe has no such payment intent or refund) | not found | not found |
//! | other `4xx` (`amount_too_large`, `charge_already_refunded`, an `idempotency_error`) | permanent | permanent |

use std::time::{Duration, SystemTime};

use aftersales_adapter::AdapterError;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::KIND;

/// Whether the call changes anything at Stripe; decides what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A refund: Stripe may have acted even if we got no answer.
    Mutating(&'static str),
    /// A query: nothing changed, whatever happened.
    Read(&'static str),
}

impl Call {
    pub(crate) fn action(self) -> &'static str {
        match self {
            Call::Mutating(a) | Call::Read(a) => a,
        }
    }

    /// The answer was lost after the request may have reached Stripe.
    pub(crate) fn lost(self, why: &str) -> AdapterError {
        match self {
            Call::Mutating(a) => AdapterError::unknown_outcome(
                KIND,
                a,
                format!(
                    "{why}; the refund may have been made: query it by key or retry with the same key"
                ),
            ),
            Call::Read(a) => AdapterError::transient(KIND, a, why.to_owned()),
        }
    }

    /// A failure to send or to read the answer.
    pub(crate) fn network_error(self, e: reqwest::Error) -> AdapterError {
        if e.is_connect() {
            // The connection was never made, so nothing was sent.
            return AdapterError::transient(KIND, self.action(), "cannot connect to Stripe")
                .with_source(e);
        }
        let why = if e.is_timeout() {
            "no answer before the timeout"
        } else {
            "the connection broke after sending"
        };
        self.lost(why).with_source(e)
    }

    /// A non-2xx answer.
    pub(crate) fn status_error(
        self,
        status: StatusCode,
        body: &[u8],
        retry_after: Option<Duration>,
    ) -> AdapterError {
        let detail = serde_json::from_slice::<ErrorBody>(body)
            .ok()
            .map(|b| b.error);
        let message = match &detail {
            Some(d) => {
                let mut m = format!("stripe {} {}", status.as_u16(), d.kind);
                if let Some(code) = &d.code {
                    m.push(' ');
                    m.push_str(code);
                }
                if let Some(text) = &d.message {
                    m.push_str(": ");
                    m.push_str(&truncate(text, 200));
                }
                m
            }
            None => format!("stripe {}", status.as_u16()),
        };
        let action = self.action();
        let mutating = matches!(self, Call::Mutating(_));
        if mutating
            && (status == StatusCode::INTERNAL_SERVER_ERROR
                || status == StatusCode::GATEWAY_TIMEOUT
                || status == StatusCode::REQUEST_TIMEOUT)
        {
            return AdapterError::unknown_outcome(
                KIND,
                action,
                format!("{message}; the result is indeterminate: query the refund by key"),
            );
        }
        if status == StatusCode::TOO_MANY_REQUESTS
            || status == StatusCode::CONFLICT
            || status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
        {
            let e = AdapterError::transient(KIND, action, message);
            return match retry_after {
                Some(d) => e.with_retry_after(d),
                None => e,
            };
        }
        if status == StatusCode::NOT_FOUND
            || detail
                .as_ref()
                .is_some_and(|d| d.code.as_deref() == Some("resource_missing"))
        {
            // Stripe does not know an object the call names (a refund of an unknown
            // payment intent is a 400 `resource_missing`).
            return AdapterError::not_found(KIND, action, message);
        }
        AdapterError::permanent(KIND, action, message)
    }
}

/// Reads `Retry-After` as seconds or as an HTTP date.
pub(crate) fn retry_after(value: Option<&str>) -> Option<Duration> {
    let value = value?.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(
        at.duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

#[cfg(test)]
mod tests {
    use aftersales_adapter::ErrorClass;

    use super::*;

    const REFUND: Call = Call::Mutating("payment.refund");
    const QUERY: Call = Call::Read("payment.refund_status");

    #[test]
    fn classes_follow_what_can_have_happened() {
        let body = br#"{"error": {"type": "invalid_request_error", "code": "amount_too_large", "message": "Refund amount is greater than unrefunded amount"}}"#;
        let e = REFUND.status_error(StatusCode::BAD_REQUEST, body, None);
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(
            e.message,
            "stripe 400 invalid_request_error amount_too_large: Refund amount is greater than unrefunded amount"
        );
        let e = REFUND.status_error(
            StatusCode::TOO_MANY_REQUESTS,
            b"",
            Some(Duration::from_secs(2)),
        );
        assert_eq!(
            e.class,
            ErrorClass::Transient {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            REFUND
                .status_error(StatusCode::INTERNAL_SERVER_ERROR, b"", None)
                .class,
            ErrorClass::UnknownOutcome
        );
        assert_eq!(
            QUERY
                .status_error(StatusCode::INTERNAL_SERVER_ERROR, b"", None)
                .class,
            ErrorClass::Transient { retry_after: None }
        );
        assert_eq!(
            REFUND
                .status_error(StatusCode::SERVICE_UNAVAILABLE, b"", None)
                .class,
            ErrorClass::Transient { retry_after: None }
        );
        assert_eq!(
            REFUND.status_error(StatusCode::CONFLICT, b"", None).class,
            ErrorClass::Transient { retry_after: None }
        );
        let idem = br#"{"error": {"type": "idempotency_error", "message": "Keys for idempotent requests can only be used with the same parameters they were first used with."}}"#;
        assert_eq!(
            REFUND
                .status_error(StatusCode::BAD_REQUEST, idem, None)
                .class,
            ErrorClass::Permanent
        );
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        assert_eq!(retry_after(Some("3")), Some(Duration::from_secs(3)));
        assert_eq!(
            retry_after(Some("Thu, 01 Jan 1970 00:00:00 GMT")),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after(Some("soon")), None);
        assert_eq!(retry_after(None), None);
    }
}
