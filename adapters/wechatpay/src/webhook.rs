//! WeChat Pay refund notifications.
//!
//! A notification is a JSON `POST` with headers `Wechatpay-Timestamp`, `Wechatpay-Nonce`,
//! `Wechatpay-Signature` (base64 SHA256-with-RSA over `"{timestamp}\n{nonce}\n{raw body}\n"`)
//! and `Wechatpay-Serial` (which WeChat Pay key signed). The body is
//! `{"id": .., "event_type": "REFUND.SUCCESS", "resource": {"algorithm":
//! "AEAD_AES_256_GCM", "ciphertext": .., "nonce": .., "associated_data": ..}}`; the resource
//! decrypts with the APIv3 key into the refund (`out_refund_no`, `refund_status`, `amount`).
//!
//! Order of checks: signature over the raw bytes (the key chosen by serial), the timestamp
//! window (a replay carries an old one), then decryption and parsing. `SUCCESS` and
//! `CLOSED` become `payment.refund.succeeded` and `payment.refund.failed`, correlated by
//! `out_refund_no` (this adapter's refund id) and deduped by the notification `id`;
//! `ABNORMAL` (not final: the money is stuck until someone acts) and other events are
//! acknowledged and dropped.

use std::time::{Duration, SystemTime};

use aftersales_adapter::{Headers, InboundEvent, WebhookError, WebhookVerifier};
use aftersales_money::{Currency, Money};
use serde::Deserialize;
use serde_json::json;

use crate::config::PaymentReference;
use crate::sign::{ApiV3Key, PlatformKeys};

/// Verifies and decrypts WeChat Pay notifications.
#[derive(Debug)]
pub(crate) struct WechatWebhooks {
    pub(crate) platform: PlatformKeys,
    pub(crate) apiv3: ApiV3Key,
    pub(crate) tolerance: Duration,
    pub(crate) reference: PaymentReference,
}

const TIMESTAMP: &str = "Wechatpay-Timestamp";
const NONCE: &str = "Wechatpay-Nonce";
const SIGNATURE: &str = "Wechatpay-Signature";
const SERIAL: &str = "Wechatpay-Serial";
const SIGNATURE_TYPE: &str = "Wechatpay-Signature-Type";

#[derive(Deserialize)]
struct Notification {
    id: String,
    event_type: String,
    resource: Resource,
}

#[derive(Deserialize)]
struct Resource {
    algorithm: String,
    ciphertext: String,
    nonce: String,
    #[serde(default)]
    associated_data: String,
}

#[derive(Deserialize)]
struct RefundResource {
    #[serde(default)]
    out_trade_no: Option<String>,
    #[serde(default)]
    transaction_id: Option<String>,
    out_refund_no: String,
    refund_status: String,
    amount: RefundAmount,
}

#[derive(Deserialize)]
struct RefundAmount {
    refund: i64,
}

impl WebhookVerifier for WechatWebhooks {
    fn platform(&self) -> &'static str {
        crate::KIND
    }

    fn verify(
        &self,
        headers: &Headers,
        body: &[u8],
        now: SystemTime,
    ) -> Result<Option<InboundEvent>, WebhookError> {
        let get = |name: &str| {
            headers
                .get(name)
                .ok_or_else(|| WebhookError::MissingHeader(name.into()))
        };
        let (timestamp, nonce, signature, serial) =
            (get(TIMESTAMP)?, get(NONCE)?, get(SIGNATURE)?, get(SERIAL)?);
        if headers
            .get(SIGNATURE_TYPE)
            .is_some_and(|t| t != "WECHATPAY2-SHA256-RSA2048")
        {
            return Err(WebhookError::BadSignature);
        }
        // 1. The signature, over the raw bytes, with the key the serial names.
        if !self
            .platform
            .verify(serial, timestamp, nonce, body, signature)
        {
            return Err(WebhookError::BadSignature);
        }
        // 2. The signed time, against the `now` passed in.
        let t: i64 = timestamp
            .trim()
            .parse()
            .map_err(|_| WebhookError::BadSignature)?;
        let age = unix_secs(now).abs_diff(t);
        if age > self.tolerance.as_secs() {
            return Err(WebhookError::StaleTimestamp {
                age_secs: age,
                tolerance_secs: self.tolerance.as_secs(),
            });
        }
        // 3. The body, then the encrypted resource.
        let n: Notification =
            serde_json::from_slice(body).map_err(|e| WebhookError::MalformedBody(e.to_string()))?;
        if !n.event_type.starts_with("REFUND.") {
            return Ok(None);
        }
        if n.resource.algorithm != "AEAD_AES_256_GCM" {
            return Err(WebhookError::MalformedBody(format!(
                "unknown algorithm `{}`",
                n.resource.algorithm
            )));
        }
        let plain = self
            .apiv3
            .decrypt(
                &n.resource.ciphertext,
                &n.resource.nonce,
                &n.resource.associated_data,
            )
            .map_err(WebhookError::MalformedBody)?;
        let r: RefundResource = serde_json::from_slice(&plain)
            .map_err(|e| WebhookError::MalformedBody(format!("refund resource: {e}")))?;
        let (name, status) = match r.refund_status.as_str() {
            "SUCCESS" => ("payment.refund.succeeded", "succeeded"),
            "CLOSED" => ("payment.refund.failed", "failed"),
            // PROCESSING, and ABNORMAL which is not final.
            _ => return Ok(None),
        };
        let payment_id = match self.reference {
            PaymentReference::OutTradeNo => r.out_trade_no,
            PaymentReference::TransactionId => r.transaction_id,
        }
        .ok_or_else(|| {
            WebhookError::MalformedBody(format!(
                "the refund carries no `{}`",
                self.reference.field()
            ))
        })?;
        Ok(Some(InboundEvent {
            dedupe_id: n.id,
            name: name.into(),
            correlation: r.out_refund_no.clone(),
            payload: json!({
                "refund_id": r.out_refund_no,
                "payment_id": payment_id,
                "amount": Money::new(r.amount.refund, Currency::CNY),
                "status": status,
            }),
        }))
    }
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(SystemTime::UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}
