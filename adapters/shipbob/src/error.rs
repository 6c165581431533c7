//! ShipBob's failures mapped to [`AdapterError`] classes.
//!
//! ShipBob answers errors with an HTTP status and, usually, a problem document
//! (`{"title": "...", "detail": "...", "errors": {...}}`). The class comes from what can have
//! happened at ShipBob, never from the text:
//!
//! | what happened | mutating call (cancel, create) | read |
//! | --- | --- | --- |
//! | could not connect | transient | transient |
//! | `429`, `502`, `503` | transient, with `Retry-After` | transient |
//! | `500`, `504`, `408`, a timeout or a connection lost after sending, an unreadable `2xx` | unknown outcome | transient |
//! | other `4xx` (validation, a return that cannot be cancelled any more, bad token) | permanent | permanent |
//!
//! A lost answer to a mutating call is resolved by the next attempt, which reads the state
//! first (the order's shipments, the return found by its `reference_id`) and never creates
//! blindly.

use std::time::{Duration, SystemTime};

use aftersales_adapter::AdapterError;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::KIND;

/// Why a call to ShipBob failed, before it is classified for the engine.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShipBobError {
    /// The connection was never made.
    #[error("cannot connect to ShipBob")]
    Connect(#[source] reqwest::Error),
    /// The request was sent and no complete answer came back.
    #[error("{0}")]
    Lost(&'static str, #[source] Option<reqwest::Error>),
    /// ShipBob answered with a status that is not a success.
    #[error("{message}")]
    Status {
        /// The HTTP status.
        status: StatusCode,
        /// The status and ShipBob's own words, shortened.
        message: String,
        /// `Retry-After`, when sent.
        retry_after: Option<Duration>,
    },
    /// A `2xx` whose body is not what the API documents.
    #[error("ShipBob answered with a body we cannot read")]
    Unreadable(#[source] serde_json::Error),
}

/// Whether the call changes anything at ShipBob; decides what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A cancel or a create: ShipBob may have acted even if we got no answer.
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

    /// Classifies a failure of this call.
    pub(crate) fn classify(self, e: ShipBobError) -> AdapterError {
        let action = self.action();
        let mutating = matches!(self, Call::Mutating(_));
        match e {
            ShipBobError::Connect(_) => {
                AdapterError::transient(KIND, action, e.to_string()).with_source(e)
            }
            ShipBobError::Lost(..) | ShipBobError::Unreadable(_) => {
                if mutating {
                    let message = format!(
                        "{e}; ShipBob may have acted: retry with the same key, which reads the state first"
                    );
                    AdapterError::unknown_outcome(KIND, action, message).with_source(e)
                } else {
                    AdapterError::transient(KIND, action, e.to_string()).with_source(e)
                }
            }
            ShipBobError::Status {
                status,
                message,
                retry_after,
            } => {
                let indeterminate = status == StatusCode::INTERNAL_SERVER_ERROR
                    || status == StatusCode::GATEWAY_TIMEOUT
                    || status == StatusCode::REQUEST_TIMEOUT;
                if mutating && indeterminate {
                    return AdapterError::unknown_outcome(
                        KIND,
                        action,
                        format!("{message}; the result is indeterminate"),
                    );
                }
                if status == StatusCode::TOO_MANY_REQUESTS
                    || status.is_server_error()
                    || status == StatusCode::REQUEST_TIMEOUT
                {
                    let e = AdapterError::transient(KIND, action, message);
                    return match retry_after {
                        Some(d) => e.with_retry_after(d),
                        None => e,
                    };
                }
                AdapterError::permanent(KIND, action, message)
            }
        }
    }
}

/// The message of a non-2xx answer: the status and ShipBob's title, detail and field errors.
pub(crate) fn status_message(status: StatusCode, body: &[u8]) -> String {
    let mut m = format!("shipbob {}", status.as_u16());
    if let Ok(p) = serde_json::from_slice::<Problem>(body) {
        let mut parts: Vec<String> = Vec::new();
        parts.extend(p.title);
        parts.extend(p.detail);
        if let Some(serde_json::Value::Object(errors)) = p.errors {
            for (field, v) in errors {
                let text = match v {
                    serde_json::Value::Array(a) => a
                        .iter()
                        .filter_map(|x| x.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    serde_json::Value::String(s) => s,
                    other => other.to_string(),
                };
                parts.push(format!("{field}: {text}"));
            }
        }
        if !parts.is_empty() {
            m.push_str(": ");
            m.push_str(&truncate(&parts.join("; "), 200));
        }
    }
    m
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
struct Problem {
    #[serde(default)]
    title: Option<String>,
    #[serde(default)]
    detail: Option<String>,
    #[serde(default)]
    errors: Option<serde_json::Value>,
}

#[cfg(test)]
mod tests {
    use aftersales_adapter::ErrorClass;

    use super::*;

    const CREATE: Call = Call::Mutating("warehouse.create_return");
    const READ: Call = Call::Read("warehouse.create_return");

    fn status(code: u16, retry: Option<u64>) -> ShipBobError {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
        ShipBobError::Status {
            status,
            message: format!("shipbob {code}"),
            retry_after: retry.map(Duration::from_secs),
        }
    }

    #[test]
    fn classes_follow_what_can_have_happened() {
        assert_eq!(
            CREATE.classify(status(429, Some(2))).class,
            ErrorClass::Transient {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            CREATE.classify(status(503, None)).class,
            ErrorClass::Transient { retry_after: None }
        );
        assert_eq!(
            CREATE.classify(status(500, None)).class,
            ErrorClass::UnknownOutcome
        );
        assert_eq!(
            READ.classify(status(500, None)).class,
            ErrorClass::Transient { retry_after: None }
        );
        assert_eq!(
            CREATE.classify(status(422, None)).class,
            ErrorClass::Permanent
        );
        assert_eq!(
            CREATE.classify(status(401, None)).class,
            ErrorClass::Permanent
        );
        let unreadable = serde_json::from_slice::<u8>(b"x").map_err(ShipBobError::Unreadable);
        if let Err(e) = unreadable {
            assert_eq!(CREATE.classify(e).class, ErrorClass::UnknownOutcome);
        }
    }

    #[test]
    fn messages_carry_shipbobs_words() {
        let body = br#"{"title": "One or more validation errors occurred.", "status": 422, "errors": {"inventory[0].id": ["Inventory 9 does not exist"]}}"#;
        assert_eq!(
            status_message(StatusCode::UNPROCESSABLE_ENTITY, body),
            "shipbob 422: One or more validation errors occurred.; inventory[0].id: Inventory 9 does not exist"
        );
        assert_eq!(
            status_message(StatusCode::BAD_GATEWAY, b"<html>"),
            "shipbob 502"
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
    }
}
