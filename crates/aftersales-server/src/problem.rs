//! Errors as RFC 7807 `application/problem+json`, each with a stable code.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::Value;

/// One problem response.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Problem {
    /// A URI naming the problem type (`/problems/<code>`).
    #[serde(rename = "type")]
    pub kind: String,
    /// Short, human.
    pub title: &'static str,
    /// HTTP status.
    pub status: u16,
    /// Stable machine code (`AS-API-0400`).
    pub code: &'static str,
    /// What exactly went wrong.
    pub detail: String,
    /// Per-field problems, when there are several.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    #[schema(value_type = Vec<Object>)]
    pub errors: Vec<Value>,
    /// Extension members (RFC 7807 §3.2), such as the refused rule.
    #[serde(flatten)]
    #[schema(value_type = Object)]
    pub extensions: Box<serde_json::Map<String, Value>>,
}

impl Problem {
    /// A problem with a status, a stable code and a detail.
    pub fn new(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Problem {
        Problem {
            kind: format!("/problems/{code}"),
            title: status.canonical_reason().unwrap_or("error"),
            status: status.as_u16(),
            code,
            detail: detail.into(),
            errors: Vec::new(),
            extensions: Box::default(),
        }
    }

    /// Adds an extension member.
    pub fn with(mut self, key: &str, value: Value) -> Problem {
        self.extensions.insert(key.to_owned(), value);
        self
    }

    /// Adds per-field problems.
    pub fn with_errors(mut self, errors: Vec<Value>) -> Problem {
        self.errors = errors;
        self
    }
}

/// Stable codes of the API's problems.
pub mod codes {
    /// The body is not valid JSON, or a field has the wrong shape.
    pub const BAD_BODY: &str = "AS-API-0400";
    /// A required header is missing or malformed.
    pub const BAD_HEADER: &str = "AS-API-0406";
    /// The URL is malformed: a query parameter, or a path segment that is not UTF-8 or
    /// holds a NUL.
    pub const BAD_QUERY: &str = "AS-API-0402";
    /// No or an unknown bearer token.
    pub const UNAUTHENTICATED: &str = "AS-API-0401";
    /// The token lacks the scope the endpoint needs.
    pub const FORBIDDEN: &str = "AS-API-0403";
    /// No such instance, workflow or route.
    pub const NOT_FOUND: &str = "AS-API-0404";
    /// The route exists but does not take this method (the `Allow` header lists those it
    /// takes).
    pub const METHOD_NOT_ALLOWED: &str = "AS-API-0405";
    /// The idempotency key was used for a different request.
    pub const KEY_CONFLICT: &str = "AS-API-0409";
    /// The instance has ended; the signal or cancel changes nothing.
    pub const FINISHED: &str = "AS-API-0410";
    /// The input does not fit the workflow's declarations.
    pub const INVALID_INPUT: &str = "AS-API-0422";
    /// The body is larger than the limit.
    pub const TOO_LARGE: &str = "AS-API-0413";
    /// The store is unavailable; retry.
    pub const UNAVAILABLE: &str = "AS-API-0503";
    /// A bug or corrupted data.
    pub const INTERNAL: &str = "AS-API-0500";
    /// The after-sales rules refused the request (the `rule` member names which).
    pub const REFUSED: &str = "AS-API-0423";
    /// An upstream platform (order system, fulfillment) failed; nothing was stored.
    pub const UPSTREAM: &str = "AS-API-0502";
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&self).unwrap_or_default();
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        resp
    }
}
