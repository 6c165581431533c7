//! Acme Pay's failures mapped to [`AdapterError`] classes.
//!
//! Acme answers errors as `{"error": {"code": "amount_too_large", "message": "..."}}` with an
//! HTTP status. The class comes from what can have happened at Acme, never from the text:
//!
//! | what happened | refund (mutating) | status query (read) |
//! | --- | --- | --- |
//! | could not connect | transient | transient |
//! | `429`, `5xx` | transient, with `Retry-After` | transient |
//! | timeout or connection lost after sending | unknown outcome | transient |
//! | `2xx` with a body we cannot read | unknown outcome | transient |
//! | other `4xx` | permanent | permanent |

use std::time::Duration;

use aftersales_adapter::AdapterError;
use reqwest::StatusCode;
use serde::Deserialize;

use crate::KIND;

/// Whether the call changes anything at Acme; decides what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A refund: Acme may have acted even if we got no answer.
    Mutating(&'static str),
    /// A query: nothing changed, whatever happened.
    Read(&'static str),
}

impl Call {
    fn action(self) -> &'static str {
        match self {
            Call::Mutating(a) | Call::Read(a) => a,
        }
    }

    /// The answer was lost after the request may have reached Acme.
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
            return AdapterError::transient(KIND, self.action(), "cannot connect to Acme Pay")
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
                "acme {} {}: {}",
                status.as_u16(),
                b.error.code,
                b.error.message
            ),
            Err(_) => format!("acme {}", status.as_u16()),
        };
        let action = self.action();
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            let e = AdapterError::transient(KIND, action, message);
            return match retry_after {
                Some(d) => e.with_retry_after(d),
                None => e,
            };
        }
        AdapterError::permanent(KIND, action, message)
    }
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    code: String,
    message: String,
}
