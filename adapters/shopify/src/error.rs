//! Shopify's failures mapped to [`AdapterError`] classes.
//!
//! The Admin GraphQL API fails in three places: the HTTP status, a top-level `errors` list
//! (query errors, and `THROTTLED` when the cost bucket is empty, both with HTTP `200`), and
//! a mutation's `userErrors` (business refusals, HTTP `200`). The class comes from what can
//! have happened at Shopify, never from the text:
//!
//! | what happened | mutation | query |
//! | --- | --- | --- |
//! | could not connect | transient | transient |
//! | `429`, `THROTTLED`, `502`, `503` | transient, with `Retry-After` or the time the cost bucket needs | transient |
//! | `500`, `504`, `408`, `INTERNAL_SERVER_ERROR`, a timeout or a connection lost after sending, an unreadable `2xx` | unknown outcome | transient |
//! | `userErrors` | permanent (a concurrent request with the same idempotency key: transient) | |
//! | other top-level `errors`, other `4xx` (a bad token, a missing scope) | permanent | permanent |

use std::time::{Duration, SystemTime};

use aftersales_adapter::AdapterError;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::KIND;

/// Why a call to Shopify failed, before it is classified for the engine.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ShopifyError {
    /// The connection was never made.
    #[error("cannot connect to Shopify")]
    Connect(#[source] reqwest::Error),
    /// The request was sent and no complete answer came back.
    #[error("{0}")]
    Lost(&'static str, #[source] Option<reqwest::Error>),
    /// An HTTP status that is not a success.
    #[error("{message}")]
    Status {
        status: StatusCode,
        message: String,
        retry_after: Option<Duration>,
    },
    /// The query ran out of cost budget (`THROTTLED`).
    #[error("shopify throttled the query")]
    Throttled { retry_after: Option<Duration> },
    /// Shopify failed inside (`INTERNAL_SERVER_ERROR` in `errors`).
    #[error("shopify internal error: {0}")]
    Internal(String),
    /// Top-level GraphQL `errors`: the query itself was refused.
    #[error("shopify refused the query: {0}")]
    Query(String),
    /// A mutation's `userErrors`.
    #[error("{0}")]
    UserErrors(String, bool),
    /// A `2xx` whose body is not what the API documents.
    #[error("Shopify answered with a body we cannot read")]
    Unreadable(#[source] serde_json::Error),
}

/// Whether the call changes anything at Shopify; decides what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A mutation: Shopify may have acted even if we got no answer.
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
    pub(crate) fn classify(self, e: ShopifyError) -> AdapterError {
        let action = self.action();
        let mutating = matches!(self, Call::Mutating(_));
        let lost = |e: ShopifyError| {
            if mutating {
                let message = format!(
                    "{e}; Shopify may have acted: retry with the same key, which looks for it first"
                );
                AdapterError::unknown_outcome(KIND, action, message).with_source(e)
            } else {
                AdapterError::transient(KIND, action, e.to_string()).with_source(e)
            }
        };
        let transient = |message: String, retry_after: Option<Duration>| {
            let e = AdapterError::transient(KIND, action, message);
            match retry_after {
                Some(d) => e.with_retry_after(d),
                None => e,
            }
        };
        match e {
            ShopifyError::Connect(_) => {
                AdapterError::transient(KIND, action, e.to_string()).with_source(e)
            }
            ShopifyError::Lost(..) | ShopifyError::Unreadable(_) | ShopifyError::Internal(_) => {
                lost(e)
            }
            ShopifyError::Throttled { retry_after } => transient(e.to_string(), retry_after),
            ShopifyError::UserErrors(message, retryable) => {
                if retryable {
                    transient(message, None)
                } else {
                    AdapterError::permanent(KIND, action, message)
                }
            }
            ShopifyError::Query(_) => AdapterError::permanent(KIND, action, e.to_string()),
            ShopifyError::Status {
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
                    return transient(message, retry_after);
                }
                AdapterError::permanent(KIND, action, message)
            }
        }
    }
}

/// A GraphQL answer's top-level `errors` and cost extension.
#[derive(Debug, Deserialize)]
pub(crate) struct GraphqlError {
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) extensions: Option<ErrorExtensions>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ErrorExtensions {
    #[serde(default)]
    pub(crate) code: Option<String>,
}

/// `extensions.cost` of an answer.
#[derive(Debug, Deserialize)]
pub(crate) struct Cost {
    #[serde(rename = "requestedQueryCost", default)]
    pub(crate) requested: Option<f64>,
    #[serde(rename = "throttleStatus", default)]
    pub(crate) throttle: Option<ThrottleStatus>,
}

#[derive(Debug, Deserialize)]
pub(crate) struct ThrottleStatus {
    #[serde(rename = "currentlyAvailable")]
    pub(crate) available: f64,
    #[serde(rename = "restoreRate")]
    pub(crate) restore_rate: f64,
}

/// How long until the bucket holds the query's cost again, in whole seconds (at least 1).
pub(crate) fn throttle_wait(cost: Option<&Cost>) -> Option<Duration> {
    let cost = cost?;
    let t = cost.throttle.as_ref()?;
    let needed = cost.requested? - t.available;
    if t.restore_rate <= 0.0 || !needed.is_finite() {
        return None;
    }
    // Whole seconds for the engine's scheduler; this float never touches money.
    let secs = (needed / t.restore_rate).ceil().max(1.0);
    Some(Duration::from_secs(secs as u64))
}

/// The top-level errors as one classified failure.
pub(crate) fn graphql_errors(errors: &[GraphqlError], cost: Option<&Cost>) -> ShopifyError {
    let code = |e: &GraphqlError| e.extensions.as_ref().and_then(|x| x.code.clone());
    if errors
        .iter()
        .any(|e| code(e).as_deref() == Some("THROTTLED"))
    {
        return ShopifyError::Throttled {
            retry_after: throttle_wait(cost).or(Some(Duration::from_secs(1))),
        };
    }
    let text = errors
        .iter()
        .map(|e| match code(e) {
            Some(c) => format!("{c}: {}", e.message),
            None => e.message.clone(),
        })
        .collect::<Vec<_>>()
        .join("; ");
    if errors
        .iter()
        .any(|e| code(e).as_deref() == Some("INTERNAL_SERVER_ERROR"))
    {
        return ShopifyError::Internal(truncate(&text, 200));
    }
    ShopifyError::Query(truncate(&text, 200))
}

/// One `userErrors` entry (`UserError`, `ReturnUserError`, ...).
#[derive(Debug, Clone, Deserialize)]
pub(crate) struct UserError {
    #[serde(default)]
    pub(crate) field: Option<Vec<String>>,
    pub(crate) message: String,
    #[serde(default)]
    pub(crate) code: Option<String>,
}

/// `userErrors` as one failure: permanent, unless Shopify says a concurrent request with
/// the same idempotency key is still running.
pub(crate) fn user_errors(errors: &[UserError]) -> ShopifyError {
    let retryable = errors.iter().any(|e| {
        e.code
            .as_deref()
            .is_some_and(|c| c.contains("CONCURRENT") || c == "IDEMPOTENCY_CONCURRENT_REQUEST")
    });
    let text = errors
        .iter()
        .map(|e| {
            let mut m = String::new();
            if let Some(c) = &e.code {
                m.push_str(c);
                m.push(' ');
            }
            if let Some(f) = &e.field {
                m.push_str(&f.join("."));
                m.push_str(": ");
            }
            m.push_str(&e.message);
            m
        })
        .collect::<Vec<_>>()
        .join("; ");
    ShopifyError::UserErrors(
        format!("shopify userErrors: {}", truncate(&text, 200)),
        retryable,
    )
}

/// The message of a non-2xx answer.
pub(crate) fn status_message(status: StatusCode, body: &[u8]) -> String {
    #[derive(Deserialize)]
    struct Body {
        errors: serde_json::Value,
    }
    let mut m = format!("shopify {}", status.as_u16());
    if let Ok(b) = serde_json::from_slice::<Body>(body) {
        let text = match b.errors {
            serde_json::Value::String(s) => s,
            other => other.to_string(),
        };
        m.push_str(": ");
        m.push_str(&truncate(&text, 200));
    }
    m
}

/// Reads `Retry-After` as seconds (Shopify sends `2.0`) or as an HTTP date.
pub(crate) fn retry_after(value: Option<&str>) -> Option<Duration> {
    let value = value?.trim();
    let whole = value.split_once('.').map_or(value, |(w, _)| w);
    if let Ok(secs) = whole.parse::<u64>() {
        return Some(Duration::from_secs(secs.max(1)));
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

#[cfg(test)]
mod tests {
    use aftersales_adapter::ErrorClass;

    use super::*;

    const MUTATION: Call = Call::Mutating("order.report_refund");
    const QUERY: Call = Call::Read("order.get");

    #[test]
    fn throttling_waits_for_the_bucket() {
        let cost: Cost = serde_json::from_value(serde_json::json!({
            "requestedQueryCost": 752, "actualQueryCost": null,
            "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 452, "restoreRate": 100.0}
        }))
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(throttle_wait(Some(&cost)), Some(Duration::from_secs(3)));
        let errors: Vec<GraphqlError> = serde_json::from_value(serde_json::json!([
            {"message": "Throttled", "extensions": {"code": "THROTTLED"}}
        ]))
        .unwrap_or_else(|e| panic!("{e}"));
        let e = MUTATION.classify(graphql_errors(&errors, Some(&cost)));
        assert_eq!(
            e.class,
            ErrorClass::Transient {
                retry_after: Some(Duration::from_secs(3))
            }
        );
    }

    #[test]
    fn user_errors_are_permanent_unless_concurrent() {
        let errs = vec![UserError {
            field: Some(vec!["transactions".into(), "0".into(), "amount".into()]),
            message: "Amount cannot be greater than the refundable amount".into(),
            code: None,
        }];
        let e = MUTATION.classify(user_errors(&errs));
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(
            e.message,
            "shopify userErrors: transactions.0.amount: Amount cannot be greater than the refundable amount"
        );
        let errs = vec![UserError {
            field: None,
            message: "A request with this idempotency key is in progress".into(),
            code: Some("IDEMPOTENCY_CONCURRENT_REQUEST".into()),
        }];
        assert!(matches!(
            MUTATION.classify(user_errors(&errs)).class,
            ErrorClass::Transient { .. }
        ));
    }

    #[test]
    fn statuses_and_internal_errors() {
        let status = |code: u16| ShopifyError::Status {
            status: StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT),
            message: format!("shopify {code}"),
            retry_after: Some(Duration::from_secs(2)),
        };
        assert_eq!(
            QUERY.classify(status(429)).class,
            ErrorClass::Transient {
                retry_after: Some(Duration::from_secs(2))
            }
        );
        assert_eq!(
            MUTATION.classify(status(500)).class,
            ErrorClass::UnknownOutcome
        );
        assert!(matches!(
            QUERY.classify(status(500)).class,
            ErrorClass::Transient { .. }
        ));
        assert_eq!(MUTATION.classify(status(401)).class, ErrorClass::Permanent);
        let internal = vec![GraphqlError {
            message: "Internal error. Looks like something went wrong on our end.".into(),
            extensions: Some(ErrorExtensions {
                code: Some("INTERNAL_SERVER_ERROR".into()),
            }),
        }];
        assert_eq!(
            MUTATION.classify(graphql_errors(&internal, None)).class,
            ErrorClass::UnknownOutcome
        );
        assert_eq!(retry_after(Some("2.0")), Some(Duration::from_secs(2)));
    }
}
