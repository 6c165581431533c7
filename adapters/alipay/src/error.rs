//! Alipay's failures mapped to [`AdapterError`] classes.
//!
//! Alipay answers HTTP `200` with `{"<method>_response": {"code": .., "msg": .., "sub_code":
//! .., "sub_msg": ..}, "sign": ..}`; `code = 10000` is success. The class comes from what can
//! have happened, never from the text:
//!
//! | what happened | refund (mutating) | query (read) |
//! | --- | --- | --- |
//! | could not connect | transient | transient |
//! | HTTP `429`, `502`, `503` | transient | transient |
//! | HTTP `500`, `504`, a timeout or a connection lost after sending; `code = 20000` (service unavailable); `ACQ.SYSTEM_ERROR` (Alipay asks for a retry with the same `out_request_no`) | unknown outcome | transient |
//! | an answer we cannot read, or whose `sign` does not verify | unknown outcome | transient |
//! | `code = 40004` with `sub_code = ACQ.TRADE_NOT_EXIST` (Alipay has no such trade) | not found | not found |
//! | `code = 40004` with another `sub_code` (`ACQ.REASON_TRADE_REFUND_FEE_ERR`, `ACQ.SELLER_BALANCE_NOT_ENOUGH`, ...), `20001`, `40001`, `40002`, `40006`, other HTTP `4xx` | permanent | permanent |

use aftersales_adapter::AdapterError;
use reqwest::StatusCode;

use crate::KIND;

/// Whether the call changes anything at Alipay; decides what a lost answer means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Call {
    /// A refund: Alipay may have acted even if we got no answer.
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

    /// The answer was lost (or cannot be trusted) after the request may have reached Alipay.
    pub(crate) fn lost(self, why: &str) -> AdapterError {
        match self {
            Call::Mutating(a) => AdapterError::unknown_outcome(
                KIND,
                a,
                format!(
                    "{why}; the refund may have been made: query it by out_request_no or retry with the same key"
                ),
            ),
            Call::Read(a) => AdapterError::transient(KIND, a, why.to_owned()),
        }
    }

    /// A failure to send or to read the answer.
    pub(crate) fn network_error(self, e: reqwest::Error) -> AdapterError {
        if e.is_connect() {
            return AdapterError::transient(KIND, self.action(), "cannot connect to Alipay")
                .with_source(e);
        }
        let why = if e.is_timeout() {
            "no answer before the timeout"
        } else {
            "the connection broke after sending"
        };
        self.lost(why).with_source(e)
    }

    /// A non-2xx HTTP answer (the gateway itself failed).
    pub(crate) fn http_error(self, status: StatusCode) -> AdapterError {
        let message = format!("alipay gateway http {}", status.as_u16());
        let action = self.action();
        if matches!(self, Call::Mutating(_))
            && matches!(
                status,
                StatusCode::INTERNAL_SERVER_ERROR
                    | StatusCode::GATEWAY_TIMEOUT
                    | StatusCode::REQUEST_TIMEOUT
            )
        {
            return self.lost(&message);
        }
        if status == StatusCode::TOO_MANY_REQUESTS || status.is_server_error() {
            return AdapterError::transient(KIND, action, message);
        }
        AdapterError::permanent(KIND, action, message)
    }

    /// A business answer other than `10000`.
    pub(crate) fn code_error(
        self,
        code: &str,
        msg: &str,
        sub_code: Option<&str>,
        sub_msg: Option<&str>,
    ) -> AdapterError {
        let mut message = format!("alipay {code} {msg}");
        if let Some(s) = sub_code {
            message.push(' ');
            message.push_str(s);
        }
        if let Some(s) = sub_msg {
            message.push_str(": ");
            message.push_str(&truncate(s, 200));
        }
        let retry = code == "20000" || sub_code.is_some_and(|s| s.ends_with("SYSTEM_ERROR"));
        if retry {
            return match self {
                Call::Mutating(_) => self.lost(&message),
                Call::Read(a) => AdapterError::transient(KIND, a, message),
            };
        }
        if sub_code == Some("ACQ.TRADE_NOT_EXIST") {
            // Alipay does not know the trade the call names.
            return AdapterError::not_found(KIND, self.action(), message);
        }
        AdapterError::permanent(KIND, self.action(), message)
    }
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

    #[test]
    fn classes() {
        let refund = Call::Mutating("payment.refund");
        let query = Call::Read("payment.refund_status");
        let e = refund.code_error(
            "40004",
            "Business Failed",
            Some("ACQ.REASON_TRADE_REFUND_FEE_ERR"),
            Some("退款金额无效"),
        );
        assert_eq!(e.class, ErrorClass::Permanent);
        assert_eq!(
            e.message,
            "alipay 40004 Business Failed ACQ.REASON_TRADE_REFUND_FEE_ERR: 退款金额无效"
        );
        assert_eq!(
            refund
                .code_error("40004", "Business Failed", Some("ACQ.SYSTEM_ERROR"), None)
                .class,
            ErrorClass::UnknownOutcome
        );
        assert_eq!(
            query
                .code_error("20000", "Service Currently Unavailable", None, None)
                .class,
            ErrorClass::Transient { retry_after: None }
        );
        assert_eq!(
            refund.http_error(StatusCode::SERVICE_UNAVAILABLE).class,
            ErrorClass::Transient { retry_after: None }
        );
        assert_eq!(
            refund.http_error(StatusCode::GATEWAY_TIMEOUT).class,
            ErrorClass::UnknownOutcome
        );
        assert_eq!(
            refund.http_error(StatusCode::FORBIDDEN).class,
            ErrorClass::Permanent
        );
    }
}
