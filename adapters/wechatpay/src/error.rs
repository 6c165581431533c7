//! WeChat Pay's failures mapped to [`AdapterError`] classes.
//!
//! WeChat Pay answers errors as `{"code": "NOT_ENOUGH", "message": "..."}` with an HTTP
//! status. The class comes from what can have happened, never from the text:
//!
//! | what happened | refund (mutating) | query (read) |
//! | --- | --- | --- |
//! | could not connect | transient | transient |
//! | `429` (`FREQUENCY_LIMITED`), `502`, `503` | transient, with `Retry-After` | transient |
//! | `500` (`SYSTEM_ERROR`: WeChat asks for a retry with the same `out_refund_no`), `504`, a timeout or a connection lost after sending | unknown outcome | transient |
//! | a `2xx` we cannot read or whose signature does not verify | unknown outcome | transient |
//! | other `4xx` (`INVALID_REQUEST`, `PARAM_ERROR`, `NOT_ENOUGH`, `NO_AUTH`, `SIGN_ERROR`, ...) | permanent | permanent |

use std::time::Duration;

use aftersales_adapter::AdapterError;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::KIND;

/// Whether the call changes anything at WeChat Pay; decides what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A refund: WeChat Pay may have acted even if we got no answer.
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

    /// The answer was lost (or cannot be trusted) after the request may have reached
    /// WeChat Pay.
    pub(crate) fn lost(self, why: &str) -> AdapterError {
        match self {
            Call::Mutating(a) => AdapterError::unknown_outcome(
                KIND,
                a,
                format!(
                    "{why}; the refund may have been accepted: query it by out_refund_no or retry with the same key"
                ),
            ),
            Call::Read(a) => AdapterError::transient(KIND, a, why.to_owned()),
        }
    }

    /// A failure to send or to read the answer.
    pub(crate) fn network_error(self, e: reqwest::Error) -> AdapterError {
        if e.is_connect() {
            return AdapterError::transient(KIND, self.action(), "cannot connect to WeChat Pay")
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
        let message = match serde_json::from_slice::<ErrorBody>(body) {
            Ok(b) => format!(
                "wechatpay {} {}: {}",
                status.as_u16(),
                b.code,
                truncate(&b.message, 200)
            ),
            Err(_) => format!("wechatpay {}", status.as_u16()),
        };
        let action = self.action();
        if matches!(self, Call::Mutating(_))
            && matches!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR
                    | StatusCode::GATEWAY_TIMEOUT
                    | StatusCode::REQUEST_TIMEOUT
            )
        {
            return AdapterError::unknown_outcome(
                KIND,
                action,
                format!("{message}; retry with the same out_refund_no or query it"),
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

fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}...", &text[..i]),
        None => text.to_owned(),
    }
}

/// WeChat Pay's error code, when the body carries one.
pub(crate) fn error_code(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ErrorBody>(body)
        .ok()
        .map(|b| b.code)
}

#[derive(Deserialize)]
struct ErrorBody {
    code: String,
    #[serde(default)]
    message: String,
}

#[cfg(test)]
mod tests {
    use aftersales_adapter::ErrorClass;

    use super::*;

    #[test]
    fn classes() {
        let refund = Call::Mutating("payment.refund");
        let query = Call::Read("payment.refund_status");
        let e = refund.status_error(
            StatusCode::FORBIDDEN,
            "{\"code\":\"NOT_ENOUGH\",\"message\":\"基本账户余额不足\"}".as_bytes(),
            None,
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(e.message, "wechatpay 403 NOT_ENOUGH: 基本账户余额不足");
        assert_eq!(
            refund
                .status_error(StatusCode::TOO_MANY_REQUESTS, b"", None)
                .class,
            ErrorClass::Transient { retry_after: None }
        );
        assert_eq!(
            refund
                .status_error(StatusCode::INTERNAL_SERVER_ERROR, b"", None)
                .class,
            ErrorClass::UnknownOutcome
        );
        assert_eq!(
            query
                .status_error(StatusCode::INTERNAL_SERVER_ERROR, b"", None)
                .class,
            ErrorClass::Transient { retry_after: None }
        );
        assert_eq!(
            error_code(br#"{"code":"RESOURCE_NOT_EXISTS","message":"x"}"#).as_deref(),
            Some("RESOURCE_NOT_EXISTS")
        );
    }
}
