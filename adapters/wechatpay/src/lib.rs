//! WeChat Pay API v3 domestic refunds for aftersales: a [`Payment`] adapter and a
//! [`WebhookVerifier`](aftersales_adapter::WebhookVerifier) for refund notifications,
//! registered as `kind = "wechatpay"` by [`register`].
//!
//! Knows WeChat Pay's wire format and nothing of the engine. Requests are signed with the
//! merchant's private key (`Authorization: WECHATPAY2-SHA256-RSA2048 ...`); answers and
//! notifications are believed only once their `Wechatpay-Signature` verifies under the WeChat
//! Pay public key named by `Wechatpay-Serial`, and notification resources are decrypted with
//! the APIv3 key (AEAD_AES_256_GCM). The engine's idempotency key is the `out_refund_no`,
//! unchanged: WeChat Pay refunds one number once, and the status query is by that number, so
//! the adapter's refund id *is* the `out_refund_no`. Amounts are integer fen, CNY only.
//!
//! A refund needs the order's total (`amount.total`), which the engine's refund request does
//! not carry: the adapter reads it from the order query before refunding.

#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod sign;
mod webhook;

use std::sync::Arc;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::types::{Refund, RefundOutcome, RefundState};
use aftersales_adapter::{
    AdapterError, Built, Capabilities, IdempotencyKey, Payment, RefundLookup, RefundStatus,
    Registry, RegistryError, WebhookVerifier,
};
use aftersales_money::Currency;
use async_trait::async_trait;

use crate::client::{NewRefund, NewRefundAmount, WechatClient, WechatRefund};
use crate::config::{PaymentReference, WechatSettings, parse_duration};
use crate::sign::{ApiV3Key, MerchantKey, PlatformKeys};
use crate::webhook::WechatWebhooks;

/// The adapter kind this crate registers under.
pub const KIND: &str = "wechatpay";

/// Registers WeChat Pay as `kind = "wechatpay"`.
///
/// Settings: `mchid`, `merchant_serial_no`, `private_key_env`, `apiv3_key_env`,
/// `platform_serial`, `platform_public_key_env`, optional `platform_previous_serial` with
/// `platform_previous_public_key_env`, `payment_reference` (`out_trade_no` or
/// `transaction_id`), `notify_url`, `base_url`, `timeout` and `webhook_tolerance`.
pub fn register(registry: &mut Registry) {
    registry.register(KIND, |cx| {
        let settings: WechatSettings = cx.settings()?;
        let invalid = |message: String| RegistryError::InvalidSettings {
            kind: KIND.into(),
            message,
        };
        let timeout =
            parse_duration(&settings.timeout).map_err(|e| invalid(format!("timeout: {e}")))?;
        let tolerance = parse_duration(&settings.webhook_tolerance)
            .map_err(|e| invalid(format!("webhook_tolerance: {e}")))?;
        if let Some(url) = &settings.notify_url
            && (!url.starts_with("https://") || url.contains('?'))
        {
            return Err(invalid(
                "notify_url must be an https URL without a query string".into(),
            ));
        }
        if settings.platform_previous_serial.is_some()
            != settings.platform_previous_public_key_env.is_some()
        {
            return Err(invalid(
                "platform_previous_serial and platform_previous_public_key_env go together".into(),
            ));
        }
        if cx.validating() {
            // The keys are PEM and the API v3 key has a fixed length; placeholders would not
            // parse. Check that each is named.
            cx.secret("private_key_env")?;
            cx.secret("apiv3_key_env")?;
            cx.secret("platform_public_key_env")?;
            if settings.platform_previous_public_key_env.is_some() {
                cx.secret("platform_previous_public_key_env")?;
            }
            return Ok(Built::described(KIND, System::Payment, capabilities()));
        }
        let key = MerchantKey::from_pem(&cx.secret("private_key_env")?)
            .map_err(|e| invalid(format!("private_key_env: {e}")))?;
        let apiv3 = ApiV3Key::new(&cx.secret("apiv3_key_env")?)
            .map_err(|e| invalid(format!("apiv3_key_env: {e}")))?;
        let mut platform = PlatformKeys::new();
        platform
            .add(
                &settings.platform_serial,
                &cx.secret("platform_public_key_env")?,
            )
            .map_err(|e| invalid(format!("platform_public_key_env: {e}")))?;
        match (
            &settings.platform_previous_serial,
            &settings.platform_previous_public_key_env,
        ) {
            (Some(serial), Some(_)) => platform
                .add(serial, &cx.secret("platform_previous_public_key_env")?)
                .map_err(|e| invalid(format!("platform_previous_public_key_env: {e}")))?,
            (None, None) => {}
            _ => {
                return Err(invalid(
                    "platform_previous_serial and platform_previous_public_key_env go together"
                        .into(),
                ));
            }
        }
        let http = WechatClient::http(timeout)
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let client = WechatClient {
            http,
            base_url: settings.base_url.trim_end_matches('/').to_owned(),
            mchid: settings.mchid.clone(),
            serial_no: settings.merchant_serial_no.clone(),
            key,
            platform: platform.clone(),
        };
        Ok(Built {
            payment: Some(Arc::new(WechatPay {
                client,
                reference: settings.payment_reference,
                notify_url: settings.notify_url,
            })),
            webhooks: Some(Arc::new(WechatWebhooks {
                platform,
                apiv3,
                tolerance,
                reference: settings.payment_reference,
            }) as Arc<dyn WebhookVerifier>),
            ..Built::default()
        })
    });
}

/// The actions this adapter supports.
fn capabilities() -> Capabilities {
    Capabilities::required(System::Payment)
}

/// The payment adapter.
#[derive(Debug)]
struct WechatPay {
    client: WechatClient,
    reference: PaymentReference,
    notify_url: Option<String>,
}

/// WeChat Pay's refund states, in ours.
fn status(refund: &WechatRefund, action: &'static str) -> Result<RefundStatus, AdapterError> {
    match refund.status.as_str() {
        "SUCCESS" => Ok(RefundStatus::Succeeded),
        "PROCESSING" => Ok(RefundStatus::Pending),
        // The original route failed (a closed card): someone must act; not final.
        "ABNORMAL" => Ok(RefundStatus::RequiresAction),
        // Closed: a new out_refund_no is needed to try again.
        "CLOSED" => Ok(RefundStatus::Failed),
        other => Err(AdapterError::unknown_outcome(
            KIND,
            action,
            format!(
                "refund {} is in unknown state `{other}`",
                refund.out_refund_no
            ),
        )),
    }
}

/// WeChat Pay shows at most 80 characters of reason.
fn reason(text: &str) -> &str {
    match text.char_indices().nth(80) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

#[async_trait]
impl Payment for WechatPay {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        capabilities()
    }

    async fn refund(
        &self,
        req: &Refund,
        key: &IdempotencyKey,
    ) -> Result<RefundOutcome, AdapterError> {
        let action = "payment.refund";
        // Checked before anything is sent.
        if req.amount.currency != Currency::CNY {
            return Err(AdapterError::permanent(
                KIND,
                action,
                format!(
                    "WeChat Pay refunds in CNY only, not {}",
                    req.amount.currency
                ),
            ));
        }
        if req.amount.minor <= 0 {
            return Err(AdapterError::permanent(
                KIND,
                action,
                format!("the amount {} is not positive", req.amount),
            ));
        }
        let payment_id = req.payment_id.as_str();
        let order = self
            .client
            .get_transaction(self.reference, payment_id)
            .await?;
        if order.amount.currency.as_deref().is_some_and(|c| c != "CNY") {
            return Err(AdapterError::permanent(
                KIND,
                action,
                format!("order `{payment_id}` is not in CNY"),
            ));
        }
        let (transaction_id, out_trade_no) = match self.reference {
            PaymentReference::OutTradeNo => (None, Some(payment_id)),
            PaymentReference::TransactionId => (Some(payment_id), None),
        };
        let body = NewRefund {
            transaction_id,
            out_trade_no,
            // The engine's key, unchanged: WeChat Pay refunds one number once.
            out_refund_no: key.as_str(),
            reason: req.reason.as_deref().map(reason),
            notify_url: self.notify_url.as_deref(),
            amount: NewRefundAmount {
                refund: req.amount.minor,
                total: order.amount.total,
                currency: "CNY",
            },
        };
        let refund = self.client.create_refund(&body).await?;
        Ok(RefundOutcome {
            status: status(&refund, action)?,
            refund_id: refund.out_refund_no.into(),
        })
    }

    async fn refund_status(&self, lookup: &RefundLookup) -> Result<RefundState, AdapterError> {
        let action = "payment.refund_status";
        let found = match lookup {
            RefundLookup::Id(id) => match self.client.get_refund(id.as_str()).await? {
                Some(r) => r,
                None => {
                    return Err(AdapterError::permanent(
                        KIND,
                        action,
                        format!("WeChat Pay has no refund `{id}`"),
                    ));
                }
            },
            RefundLookup::Key { payment_id, key } => {
                match self.client.get_refund(key.as_str()).await? {
                    Some(r) => {
                        let of = match self.reference {
                            PaymentReference::OutTradeNo => r.out_trade_no.as_deref(),
                            PaymentReference::TransactionId => r.transaction_id.as_deref(),
                        };
                        if of.is_some_and(|p| p != payment_id.as_str()) {
                            return Err(AdapterError::permanent(
                                KIND,
                                action,
                                format!(
                                    "out_refund_no `{key}` belongs to another payment than `{payment_id}`"
                                ),
                            ));
                        }
                        r
                    }
                    // WeChat Pay never saw the number: the refund was never made.
                    None => {
                        return Ok(RefundState {
                            status: RefundStatus::NotFound,
                            refund_id: None,
                        });
                    }
                }
            }
        };
        Ok(RefundState {
            status: status(&found, action)?,
            refund_id: Some(found.out_refund_no.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_are_cut_at_80_characters() {
        assert_eq!(reason(&"退".repeat(100)).chars().count(), 80);
        assert_eq!(reason("damaged"), "damaged");
    }
}
