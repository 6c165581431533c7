//! A JSON body extractor whose errors name the field path (`input.amount.minor`) and
//! answer as problem+json, instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;

use crate::problem::{Problem, codes};

/// A JSON request body of type `T`.
#[derive(Debug, Clone)]
pub struct Json<T>(pub T);

impl<T, S> FromRequest<S> for Json<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json") || v.contains("+json"));
        if !is_json {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                codes::BAD_HEADER,
                "the body must be JSON (`Content-Type: application/json`)",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                Problem::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    codes::TOO_LARGE,
                    "the body is larger than the limit",
                )
            } else {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    codes::BAD_BODY,
                    format!("could not read the body: {e}"),
                )
            }
        })?;
        parse(&bytes).map(Json)
    }
}

/// Parses JSON, naming the path of the first field that does not fit.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let detail = if path == "." || path.is_empty() {
            format!("malformed JSON body: {inner}")
        } else {
            format!("field `{path}`: {inner}")
        };
        Problem::new(StatusCode::BAD_REQUEST, codes::BAD_BODY, detail)
    })
}
