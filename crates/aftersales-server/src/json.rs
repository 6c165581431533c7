//! A JSON body extractor whose errors name the field path (`input.amount.minor`) and
//! answer as problem+json, instead of axum's plain-text rejections.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use serde::de::DeserializeOwned;
use serde_json::error::Category;

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

/// Parses a JSON object, naming the path of the first field that does not fit.
///
/// Stricter than `serde_json::from_slice` in three ways, each a body that would otherwise
/// be acted on although no client means it:
/// - the top level must be an object: serde reads a struct from an array too, by position;
/// - nothing may follow the object (a second object, garbage): the deserializer only
///   checks that when asked;
/// - no string may hold a NUL (`\u0000`): PostgreSQL refuses it in text and JSONB, so it
///   would fail as "store unavailable" there while SQLite stored it.
pub fn parse<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, Problem> {
    let malformed = |detail: String| Problem::new(StatusCode::BAD_REQUEST, codes::BAD_BODY, detail);
    match bytes.iter().find(|b| !b" \t\r\n".contains(b)) {
        Some(b'{') => {}
        None => {
            return Err(malformed(
                "the body is empty: send a JSON object".to_owned(),
            ));
        }
        Some(_) => {
            return Err(malformed(
                "malformed JSON body: the body must be a JSON object (`{...}`)".to_owned(),
            ));
        }
    }
    if has_nul_escape(bytes) {
        return Err(malformed(
            "malformed JSON body: a string holds a NUL character (`\\u0000`), which no field may contain"
                .to_owned(),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        // `?` is the path of a key that could not be read: the text is not JSON there.
        let at_top = path == "." || path == "?" || path.is_empty();
        let detail = match inner.classify() {
            Category::Syntax | Category::Eof if at_top => format!("malformed JSON body: {inner}"),
            // A missing or unknown field of the body itself says so on its own.
            _ if at_top => inner.to_string(),
            _ => format!("field `{path}`: {inner}"),
        };
        malformed(detail)
    })?;
    de.end()
        .map_err(|e| malformed(format!("malformed JSON body: {e} after the object")))?;
    Ok(value)
}

/// True when a JSON text holds the escape `\u0000`. A backslash only occurs inside strings
/// in valid JSON, and every escape is a backslash and one more character, so stepping over
/// escapes pair by pair cannot mistake `\\u0000` (a backslash, then text) for a NUL.
fn has_nul_escape(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes[i + 1..].starts_with(b"u0000") {
                return true;
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)] // Read through Debug only.
    struct Body {
        name: String,
    }

    fn detail(body: &str) -> String {
        match parse::<Body>(body.as_bytes()) {
            Ok(b) => panic!("accepted {body:?} as {b:?}"),
            Err(p) => p.detail,
        }
    }

    #[test]
    fn a_body_must_be_exactly_one_object() {
        assert!(parse::<Body>(b" {\"name\": \"a\"}\n").is_ok());
        assert!(detail(r#"{"name": "a"} {"name": "b"}"#).contains("trailing characters"));
        assert!(detail(r#"{"name": "a"} garbage"#).contains("trailing characters"));
        assert!(detail(r#"["a"]"#).contains("must be a JSON object"));
        assert!(detail("  ").contains("empty"));
    }

    #[test]
    fn nul_is_refused_but_an_escaped_backslash_before_u0000_is_text() {
        assert!(detail(r#"{"name": "a\u0000b"}"#).contains("NUL"));
        let ok = parse::<Body>(br#"{"name": "a\\u0000"}"#).unwrap();
        assert_eq!(ok.name, "a\\u0000");
        assert!(!has_nul_escape(br#"\\u0000"#));
        assert!(has_nul_escape(br#"\\\u0000"#));
        // A lone backslash at the very end is not an out-of-bounds read.
        assert!(!has_nul_escape(b"\\"));
    }
}
