//! How a failed HTTP exchange maps to an [`AdapterError`] class.
//!
//! The rule of thumb: if nothing can have reached the platform, the failure is transient; if
//! the platform may have acted and the answer was lost, a mutating call is an unknown outcome
//! (the engine retries with the same key or asks the status) while a read is transient; if
//! the platform said no, it is permanent.

use std::time::{Duration, SystemTime};

use aftersales_adapter::AdapterError;
use reqwest::StatusCode;

use crate::KIND;
use crate::config::ActionPlan;

/// A failure after the request may have reached the platform: an unknown outcome for a
/// mutating call (it may have acted), transient for a read (nothing changed).
pub(crate) fn lost(plan: &ActionPlan, message: String) -> AdapterError {
    let action = plan.spec.full_name_static();
    if plan.spec.mutating {
        AdapterError::unknown_outcome(KIND, action, message)
    } else {
        AdapterError::transient(KIND, action, message)
    }
}

pub(crate) fn lost_hint(plan: &ActionPlan) -> &'static str {
    if plan.spec.mutating {
        "; the call may have taken effect, so retry with the same key or query its status"
    } else {
        ""
    }
}

pub(crate) fn classify(
    plan: &ActionPlan,
    status: StatusCode,
    retry_after: Option<Duration>,
    detail: &str,
) -> AdapterError {
    let action = plan.spec.full_name_static();
    let code = status.as_u16();
    match code {
        // The request (or the gateway's wait for the platform) timed out after sending.
        408 | 504 => lost(plan, format!("http {code}{detail}{}", lost_hint(plan))),
        429 | 500..=599 => {
            let e = AdapterError::transient(KIND, action, format!("http {code}{detail}"));
            match retry_after {
                Some(d) => e.with_retry_after(d),
                None => e,
            }
        }
        // The platform does not know the object the call names (REST's convention).
        404 => AdapterError::not_found(KIND, action, format!("http {code}{detail}")),
        _ => AdapterError::permanent(KIND, action, format!("http {code}{detail}")),
    }
}

/// Reads `Retry-After`: seconds, or an HTTP date (a date in the past means now).
pub(crate) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
