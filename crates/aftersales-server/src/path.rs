//! A path extractor whose rejections answer as problem+json, instead of axum's plain-text
//! ones: an id written as percent-encoded bytes that are not UTF-8 (`/v1/instances/%FF`)
//! is a malformed URL, said in the API's own error shape.

use axum::extract::FromRequestParts;
use axum::http::StatusCode;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::problem::{Problem, codes};

/// Path parameters of type `T`.
#[derive(Debug, Clone)]
pub struct Path<T>(pub T);

impl<T, S> FromRequestParts<S> for Path<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match axum::extract::Path::<T>::from_request_parts(parts, state).await {
            Ok(axum::extract::Path(v)) => Ok(Path(v)),
            Err(e) => {
                let status = e.status();
                // A client error says what is malformed; anything else is a routing bug.
                let code = if status.is_client_error() {
                    codes::BAD_QUERY
                } else {
                    codes::INTERNAL
                };
                Err(Problem::new(
                    status,
                    code,
                    format!("malformed URL: {}", e.body_text()),
                ))
            }
        }
    }
}

/// Refuses a URL holding `%00` before any handler sees it. No id, name or filter contains
/// a NUL, and PostgreSQL refuses one in text, so the lookup would fail there as "store
/// unavailable" (a 503 inviting a retry) while SQLite answered 404.
pub(crate) async fn refuse_nul(
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let has_nul = |s: &str| s.as_bytes().windows(3).any(|w| w == b"%00");
    let uri = req.uri();
    if has_nul(uri.path()) || uri.query().is_some_and(has_nul) {
        return Problem::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_QUERY,
            "malformed URL: it holds a NUL character (`%00`), which no id, name or filter may contain",
        )
        .into_response();
    }
    next.run(req).await
}
