//! Alipay asynchronous notifications (form `POST` to the `notify_url`), verified as Alipay
//! documents it: drop `sign` and `sign_type`, URL-decode the other parameters, sort them by
//! name, join as `k=v&k=v`, and check the base64 `sign` with SHA256withRSA under the Alipay
//! public key. Then `notify_time` (China Standard Time) must be within the tolerance of now,
//! and `app_id` must be ours.
//!
//! A notification carrying `refund_fee`, `gmt_refund` and `out_biz_no` (the refund's
//! `out_request_no`) reports a refund: it becomes `payment.refund.succeeded`, correlated by
//! this adapter's refund id (`{payment id}:{out_request_no}`) and deduplicated by
//! `notify_id`. Its amount is Alipay's `refund_fee`: the total refunded on the trade so far.
//! Other notifications (a payment, a trade closed unpaid) are acknowledged and dropped.
//! The acknowledgement is the plain text `success`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aftersales_adapter::{Headers, InboundEvent, WebhookError, WebhookVerifier};
use aftersales_money::{Currency, Money};
use serde_json::json;

use crate::config::PaymentReference;
use crate::sign::{AlipayKey, content, parse_cst};

/// Verifies Alipay notifications.
#[derive(Debug)]
pub(crate) struct AlipayWebhooks {
    pub(crate) alipay: AlipayKey,
    pub(crate) app_id: String,
    pub(crate) tolerance: Duration,
    pub(crate) reference: PaymentReference,
}

impl WebhookVerifier for AlipayWebhooks {
    fn platform(&self) -> &'static str {
        crate::KIND
    }

    fn verify(
        &self,
        headers: &Headers,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<InboundEvent>, WebhookError> {
        // The signature travels in the form; the header says the body is one.
        let content_type = headers
            .get("Content-Type")
            .ok_or_else(|| WebhookError::MissingHeader("Content-Type".into()))?;
        if !content_type
            .to_ascii_lowercase()
            .starts_with("application/x-www-form-urlencoded")
        {
            return Err(WebhookError::MalformedBody(format!(
                "expected a form, got `{content_type}`"
            )));
        }
        let params: Vec<(String, String)> =
            serde_urlencoded::from_bytes(body).map_err(|_| WebhookError::BadSignature)?;
        // 1. The signature, over every parameter but `sign` and `sign_type`.
        let sign = params
            .iter()
            .find(|(k, _)| k == "sign")
            .map(|(_, v)| v.as_str())
            .ok_or(WebhookError::BadSignature)?;
        if params.iter().any(|(k, v)| k == "sign_type" && v != "RSA2") {
            return Err(WebhookError::BadSignature);
        }
        let signed = content(&params, &["sign", "sign_type"]);
        if !self.alipay.verify(signed.as_bytes(), sign) {
            return Err(WebhookError::BadSignature);
        }
        let p: BTreeMap<&str, &str> = params
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let field = |name: &str| {
            p.get(name)
                .copied()
                .filter(|v| !v.is_empty())
                .ok_or_else(|| WebhookError::MalformedBody(format!("no `{name}`")))
        };
        // 2. The signed time, against the `now` passed in.
        let sent = parse_cst(field("notify_time")?)
            .ok_or_else(|| WebhookError::MalformedBody("unreadable `notify_time`".into()))?;
        let age = unix_secs(now).abs_diff(sent);
        if age > self.tolerance.as_secs() {
            return Err(WebhookError::StaleTimestamp {
                age_secs: age,
                tolerance_secs: self.tolerance.as_secs(),
            });
        }
        // 3. The notification.
        let notify_id = field("notify_id")?;
        if field("app_id")? != self.app_id {
            return Err(WebhookError::MalformedBody(
                "the notification is for another app_id".into(),
            ));
        }
        let (Some(refund_fee), Some(_), Some(request_no)) = (
            p.get("refund_fee").filter(|v| !v.is_empty()),
            p.get("gmt_refund").filter(|v| !v.is_empty()),
            p.get("out_biz_no").filter(|v| !v.is_empty()),
        ) else {
            // A payment or an unpaid trade closing: not a refund.
            return Ok(None);
        };
        let payment_id = field(self.reference.field())?;
        let amount = Money::from_decimal_str(refund_fee, Currency::CNY)
            .map_err(|e| WebhookError::MalformedBody(e.to_string()))?;
        let refund_id = crate::refund_id(payment_id, request_no);
        Ok(Some(InboundEvent {
            dedupe_id: notify_id.to_owned(),
            name: "payment.refund.succeeded".into(),
            correlation: refund_id.clone(),
            payload: json!({
                "refund_id": refund_id,
                "payment_id": payment_id,
                "amount": amount,
                "status": "succeeded",
            }),
        }))
    }

    fn ack_body(&self) -> &'static str {
        "success"
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
