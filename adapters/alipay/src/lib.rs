//! Alipay refunds for aftersales: a [`Payment`] adapter over the open-platform gateway
//! (`alipay.trade.refund`, `alipay.trade.fastpay.refund.query`) and a
//! [`WebhookVerifier`](aftersales_adapter::WebhookVerifier) for its asynchronous
//! notifications, registered as `kind = "alipay"` by [`register`].
//!
//! Knows Alipay's wire format and nothing of the engine. Requests are RSA2-signed with the
//! application private key; answers and notifications are believed only once their `sign`
//! verifies under the Alipay public key. The engine's idempotency key is the
//! `out_request_no`, unchanged: Alipay refunds one request number once per trade, and a
//! repeat answers success with `fund_change = N`. The refund query needs the trade and the
//! request number, so this adapter's refund id is `{payment id}:{out_request_no}`. Amounts go
//! out as yuan strings with exactly two decimals, converted exactly from fen (`1` → `"0.01"`).

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
use aftersales_money::{Currency, Money};
use async_trait::async_trait;
use serde_json::json;

use crate::client::AlipayClient;
use crate::config::{AlipaySettings, PaymentReference, parse_duration};
use crate::error::Call;
use crate::sign::{AlipayKey, AppKey};
use crate::webhook::AlipayWebhooks;

/// The adapter kind this crate registers under.
pub const KIND: &str = "alipay";

/// Registers Alipay as `kind = "alipay"`.
///
/// Settings: `app_id`, `private_key_env` (the application private key), `alipay_public_key_env`
/// (the Alipay public key), optional `payment_reference` (`out_trade_no` or `trade_no`),
/// `gateway_url`, `timeout` and `webhook_tolerance`.
pub fn register(registry: &mut Registry) {
    registry.register(KIND, |cx| {
        let settings: AlipaySettings = cx.settings()?;
        let invalid = |message: String| RegistryError::InvalidSettings {
            kind: KIND.into(),
            message,
        };
        let timeout =
            parse_duration(&settings.timeout).map_err(|e| invalid(format!("timeout: {e}")))?;
        let tolerance = parse_duration(&settings.webhook_tolerance)
            .map_err(|e| invalid(format!("webhook_tolerance: {e}")))?;
        if cx.validating() {
            // The keys are PEM; placeholders would not parse. Check that both are named.
            cx.secret("private_key_env")?;
            cx.secret("alipay_public_key_env")?;
            return Ok(Built::described(KIND, System::Payment, capabilities()));
        }
        let key = AppKey::new(&cx.secret("private_key_env")?)
            .map_err(|e| invalid(format!("private_key_env: {e}")))?;
        let alipay = AlipayKey::new(&cx.secret("alipay_public_key_env")?)
            .map_err(|e| invalid(format!("alipay_public_key_env: {e}")))?;
        let http = AlipayClient::http(timeout)
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let client = AlipayClient {
            http,
            gateway: settings.gateway_url.clone(),
            app_id: settings.app_id.clone(),
            key,
            alipay: alipay.clone(),
        };
        Ok(Built {
            payment: Some(Arc::new(AlipayPay {
                client,
                reference: settings.payment_reference,
            })),
            webhooks: Some(Arc::new(AlipayWebhooks {
                alipay,
                app_id: settings.app_id,
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

/// This adapter's refund id: the trade and the request number, which the query needs.
pub(crate) fn refund_id(payment_id: &str, out_request_no: &str) -> String {
    format!("{payment_id}:{out_request_no}")
}

/// Money as Alipay's `refund_amount`: yuan with exactly two decimals (`1` fen → `"0.01"`).
fn yuan(amount: &Money) -> Result<String, String> {
    if amount.currency != Currency::CNY {
        return Err(format!(
            "Alipay refunds in CNY only, not {}",
            amount.currency
        ));
    }
    if amount.minor <= 0 {
        return Err(format!("the amount {amount} is not positive"));
    }
    Ok(amount.to_decimal_string())
}

/// Alipay shows at most 256 characters of reason.
fn reason(text: &str) -> &str {
    match text.char_indices().nth(256) {
        Some((i, _)) => &text[..i],
        None => text,
    }
}

/// The payment adapter.
#[derive(Debug)]
struct AlipayPay {
    client: AlipayClient,
    reference: PaymentReference,
}

impl AlipayPay {
    /// `alipay.trade.fastpay.refund.query`: `Some(Succeeded)` when Alipay shows the refund,
    /// `None` when it shows nothing for that request number.
    async fn query(
        &self,
        payment_id: &str,
        out_request_no: &str,
    ) -> Result<Option<RefundStatus>, AdapterError> {
        let call = Call::Read("payment.refund_status");
        let biz = json!({
            self.reference.field(): payment_id,
            "out_request_no": out_request_no,
        });
        let reply = self
            .client
            .call(call, "alipay.trade.fastpay.refund.query", &biz)
            .await?;
        if !reply.ok() {
            if reply.sub_code.as_deref() == Some("ACQ.TRADE_NOT_EXIST") {
                return Ok(None);
            }
            return Err(reply.error(call));
        }
        // `code = 10000` only means the query ran: the refund exists when Alipay returns it
        // (`refund_status = REFUND_SUCCESS`, or, in older answers, a `refund_amount`).
        match (reply.field("refund_status"), reply.field("refund_amount")) {
            (Some("REFUND_SUCCESS"), _) | (None, Some(_)) => Ok(Some(RefundStatus::Succeeded)),
            (None, None) => Ok(None),
            (Some(other), _) => Err(AdapterError::unknown_outcome(
                KIND,
                call.action(),
                format!("refund {out_request_no} is in unknown state `{other}`"),
            )),
        }
    }
}

#[async_trait]
impl Payment for AlipayPay {
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
        let call = Call::Mutating("payment.refund");
        // Checked before anything is sent.
        let amount =
            yuan(&req.amount).map_err(|e| AdapterError::permanent(KIND, call.action(), e))?;
        let mut biz = json!({
            self.reference.field(): req.payment_id.as_str(),
            "refund_amount": amount,
            // The engine's key, unchanged: Alipay refunds one request number once.
            "out_request_no": key.as_str(),
        });
        if let Some(r) = &req.reason {
            biz["refund_reason"] = reason(r).into();
        }
        let reply = self.client.call(call, "alipay.trade.refund", &biz).await?;
        if !reply.ok() {
            return Err(reply.error(call));
        }
        // `fund_change = Y`: money moved now. `N`: a repeat of a request already applied, or
        // money not moved yet; the refund query settles which, so report it pending.
        let status = match reply.field("fund_change") {
            Some("Y") => RefundStatus::Succeeded,
            _ => RefundStatus::Pending,
        };
        Ok(RefundOutcome {
            refund_id: refund_id(req.payment_id.as_str(), key.as_str()).into(),
            status,
        })
    }

    async fn refund_status(&self, lookup: &RefundLookup) -> Result<RefundState, AdapterError> {
        let action = "payment.refund_status";
        match lookup {
            RefundLookup::Id(id) => {
                let Some((payment_id, request_no)) = id
                    .as_str()
                    .rsplit_once(':')
                    .filter(|(_, k)| IdempotencyKey::new(*k).is_ok())
                else {
                    return Err(AdapterError::permanent(
                        KIND,
                        action,
                        format!("`{id}` is not an Alipay refund id of this adapter"),
                    ));
                };
                // A refund Alipay accepted but does not show yet is still on its way.
                let status = self
                    .query(payment_id, request_no)
                    .await?
                    .unwrap_or(RefundStatus::Pending);
                Ok(RefundState {
                    status,
                    refund_id: Some(id.clone()),
                })
            }
            RefundLookup::Key { payment_id, key } => {
                Ok(match self.query(payment_id.as_str(), key.as_str()).await? {
                    Some(status) => RefundState {
                        status,
                        refund_id: Some(refund_id(payment_id.as_str(), key.as_str()).into()),
                    },
                    // Alipay never saw the request number: the refund was never made.
                    None => RefundState {
                        status: RefundStatus::NotFound,
                        refund_id: None,
                    },
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yuan_strings_are_exact() {
        let cny = |fen| Money::new(fen, Currency::CNY);
        assert_eq!(yuan(&cny(1)), Ok("0.01".into()));
        assert_eq!(yuan(&cny(10)), Ok("0.10".into()));
        assert_eq!(yuan(&cny(100)), Ok("1.00".into()));
        assert_eq!(yuan(&cny(123_456_789)), Ok("1234567.89".into()));
        assert_eq!(yuan(&cny(i64::MAX)), Ok("92233720368547758.07".into()));
        assert!(yuan(&cny(0)).is_err());
        assert!(yuan(&cny(-1)).is_err());
        assert!(yuan(&Money::new(100, Currency::USD)).is_err());
        assert_eq!(refund_id("T1", "k-1"), "T1:k-1");
    }
}
