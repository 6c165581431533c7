//! The one error type every adapter call returns, classified so the engine knows what to do.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// How the engine must treat a failed call. The engine decides from this class only, never
/// from the message text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ErrorClass {
    /// The call did not happen (network error before sending, 5xx, 429, rate limit): retry
    /// later with the same idempotency key.
    Transient {
        /// How long the platform asked us to wait (`Retry-After`), when it said.
        retry_after: Option<Duration>,
    },
    /// The platform refused the call for good (validation, business refusal such as an
    /// over-refund or a closed card): do not retry; compensate or hand over to a human.
    Permanent,
    /// The request may or may not have taken effect (timeout after sending, connection lost
    /// while waiting for the answer). Retry with the *same* key, or query the status; never
    /// issue the call again with a new key.
    UnknownOutcome,
    /// The adapter does not support this action; see its [`Capabilities`](crate::Capabilities).
    Unsupported,
    /// The platform does not know the object the call names (an order, a payment, a
    /// return; HTTP 404): do not retry. Treated as [`ErrorClass::Permanent`] in a workflow;
    /// a caller reading an order can answer "no such order" instead of blaming the
    /// platform.
    NotFound,
}

impl ErrorClass {
    /// True when the same call may be tried again with the same key (transient or unknown
    /// outcome).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ErrorClass::Transient { .. } | ErrorClass::UnknownOutcome
        )
    }
}

impl fmt::Display for ErrorClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ErrorClass::Transient { retry_after: None } => f.write_str("transient"),
            ErrorClass::Transient {
                retry_after: Some(d),
            } => write!(f, "transient, retry after {}ms", d.as_millis()),
            ErrorClass::Permanent => f.write_str("permanent"),
            ErrorClass::UnknownOutcome => f.write_str("unknown outcome"),
            ErrorClass::Unsupported => f.write_str("unsupported"),
            ErrorClass::NotFound => f.write_str("not found"),
        }
    }
}

/// The source error an adapter may attach (an HTTP client error, a JSON error, ...).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A failed adapter call: which platform, which action, how to treat it, and why.
///
/// Build one with [`AdapterError::transient`], [`AdapterError::permanent`],
/// [`AdapterError::unknown_outcome`], [`AdapterError::unsupported`] or
/// [`AdapterError::not_found`].
#[derive(Debug, thiserror::Error)]
#[error("{action} failed on {platform} ({class}): {message}")]
pub struct AdapterError {
    /// How the engine must treat the failure.
    pub class: ErrorClass,
    /// The platform (adapter kind) that failed, such as `sim` or `stripe`.
    pub platform: Cow<'static, str>,
    /// The action that failed, as `system.action` (`payment.refund`).
    pub action: Cow<'static, str>,
    /// What went wrong, for people; lowercase, no trailing period.
    pub message: String,
    /// The underlying cause, when there is one.
    #[source]
    pub source: Option<BoxError>,
}

impl AdapterError {
    /// A failure of any class.
    pub fn new(
        class: ErrorClass,
        platform: impl Into<Cow<'static, str>>,
        action: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> AdapterError {
        AdapterError {
            class,
            platform: platform.into(),
            action: action.into(),
            message: message.into(),
            source: None,
        }
    }

    /// The call did not happen; retrying with the same key is safe.
    pub fn transient(
        platform: impl Into<Cow<'static, str>>,
        action: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> AdapterError {
        AdapterError::new(
            ErrorClass::Transient { retry_after: None },
            platform,
            action,
            message,
        )
    }

    /// The platform refused the call for good.
    pub fn permanent(
        platform: impl Into<Cow<'static, str>>,
        action: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> AdapterError {
        AdapterError::new(ErrorClass::Permanent, platform, action, message)
    }

    /// The platform does not know the object the call names.
    pub fn not_found(
        platform: impl Into<Cow<'static, str>>,
        action: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> AdapterError {
        AdapterError::new(ErrorClass::NotFound, platform, action, message)
    }

    /// The call may have taken effect; the answer was lost.
    pub fn unknown_outcome(
        platform: impl Into<Cow<'static, str>>,
        action: impl Into<Cow<'static, str>>,
        message: impl Into<String>,
    ) -> AdapterError {
        AdapterError::new(ErrorClass::UnknownOutcome, platform, action, message)
    }

    /// The adapter does not support the action.
    pub fn unsupported(
        platform: impl Into<Cow<'static, str>>,
        action: impl Into<Cow<'static, str>>,
    ) -> AdapterError {
        AdapterError::new(
            ErrorClass::Unsupported,
            platform,
            action,
            "the adapter does not support this action",
        )
    }

    /// Sets the delay the platform asked for; only meaningful on a transient error.
    pub fn with_retry_after(mut self, delay: Duration) -> AdapterError {
        if let ErrorClass::Transient { retry_after } = &mut self.class {
            *retry_after = Some(delay);
        }
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> AdapterError {
        self.source = Some(source.into());
        self
    }

    /// The class, which is all the engine looks at.
    pub fn class(&self) -> ErrorClass {
        self.class
    }
}

#[cfg(test)]
mod tests {
    use std::error::Error as _;

    use super::*;

    #[test]
    fn display_names_action_platform_class_and_message() {
        let e = AdapterError::permanent("stripe", "payment.refund", "charge already refunded");
        assert_eq!(
            e.to_string(),
            "payment.refund failed on stripe (permanent): charge already refunded"
        );
        let e = AdapterError::transient("alipay", "payment.refund", "http 503")
            .with_retry_after(Duration::from_secs(2));
        assert_eq!(
            e.to_string(),
            "payment.refund failed on alipay (transient, retry after 2000ms): http 503"
        );
        let e = AdapterError::unknown_outcome("wechatpay", "payment.refund", "timed out after 10s");
        assert_eq!(
            e.to_string(),
            "payment.refund failed on wechatpay (unknown outcome): timed out after 10s"
        );
        let e = AdapterError::unsupported("sim", "payment.charge");
        assert_eq!(
            e.to_string(),
            "payment.charge failed on sim (unsupported): the adapter does not support this action"
        );
    }

    #[test]
    fn class_drives_retry_and_source_is_chained_not_formatted() {
        let io = std::io::Error::new(std::io::ErrorKind::TimedOut, "read timed out");
        let e = AdapterError::unknown_outcome("sim", "payment.refund", "no answer").with_source(io);
        assert!(e.class().is_retryable());
        assert_eq!(
            e.source().map(|s| s.to_string()).as_deref(),
            Some("read timed out")
        );
        assert!(!e.to_string().contains("read timed out"));
        assert!(!ErrorClass::Permanent.is_retryable());
        assert!(!ErrorClass::Unsupported.is_retryable());
        // A retry-after on a permanent error is ignored: it has no meaning there.
        let p =
            AdapterError::permanent("sim", "x.y", "no").with_retry_after(Duration::from_secs(1));
        assert_eq!(p.class(), ErrorClass::Permanent);
    }
}
