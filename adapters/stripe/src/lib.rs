//! Stripe refunds for aftersales: a [`Payment`] adapter over Stripe's Refunds API and a
//! [`WebhookVerifier`](aftersales_adapter::WebhookVerifier) for its signed refund events,
//! registered as `kind = "stripe"` by [`register`].
//!
//! Knows Stripe's wire format and nothing of the engine. The engine's idempotency key goes,
//! unchanged, into the `Idempotency-Key` header of `POST /v1/refunds` (Stripe replays the first
//! answer for a key) and into the refund's metadata (`aftersales_key`), so that a status query
//! by key after a lost answer finds the refund by listing the payment's refunds, and answers
//! `not_found` when Stripe never made one. Amounts are converted exactly between ISO minor
//! units and Stripe's units (zero-decimal and three-decimal currencies, ISK) in `amount.rs`.
//! Layout as in `docs/adapters.md`: `config.rs`, `client.rs`, `error.rs`, `webhook.rs`.

#![warn(missing_docs)]

mod amount;
mod client;
mod config;
mod error;
mod webhook;

use std::sync::Arc;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::types::{Refund, RefundOutcome, RefundState};
use aftersales_adapter::{
    AdapterError, Built, Capabilities, IdempotencyKey, Payment, RefundLookup, RefundStatus,
    Registry, RegistryError, WebhookVerifier,
};
use async_trait::async_trait;

use crate::amount::to_stripe;
use crate::client::{StripeClient, StripeRefund, Target};
use crate::config::{StripeSettings, parse_duration};
use crate::webhook::StripeWebhooks;

/// The adapter kind this crate registers under.
pub const KIND: &str = "stripe";

/// The refund metadata entry holding the engine's idempotency key.
pub(crate) const KEY_METADATA: &str = "aftersales_key";
/// The refund metadata entry holding the service order.
pub(crate) const SERVICE_ORDER_METADATA: &str = "service_order_id";
/// The refund metadata entry holding our free-text reason.
pub(crate) const REASON_METADATA: &str = "aftersales_reason";

/// Registers Stripe as `kind = "stripe"`.
///
/// Settings: `api_key_env` (the env var holding the secret key), optional `base_url`,
/// `api_version`, `timeout` (`"10s"`), `webhook_secret_env`, `webhook_previous_secret_env`
/// and `webhook_tolerance` (`"5m"`).
pub fn register(registry: &mut Registry) {
    registry.register(KIND, |cx| {
        let settings: StripeSettings = cx.settings()?;
        let invalid = |message: String| RegistryError::InvalidSettings {
            kind: KIND.into(),
            message,
        };
        let timeout =
            parse_duration(&settings.timeout).map_err(|e| invalid(format!("timeout: {e}")))?;
        let tolerance = parse_duration(&settings.webhook_tolerance)
            .map_err(|e| invalid(format!("webhook_tolerance: {e}")))?;
        let client = StripeClient::new(
            &settings.base_url,
            cx.secret("api_key_env")?,
            settings.api_version.clone(),
            timeout,
        )
        .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let webhooks = match settings.webhook_secret_env {
            Some(_) => {
                let mut secrets = vec![cx.secret("webhook_secret_env")?];
                if settings.webhook_previous_secret_env.is_some() {
                    secrets.push(cx.secret("webhook_previous_secret_env")?);
                }
                Some(Arc::new(StripeWebhooks { secrets, tolerance }) as Arc<dyn WebhookVerifier>)
            }
            None => None,
        };
        Ok(Built {
            payment: Some(Arc::new(StripePay { client })),
            webhooks,
            ..Built::default()
        })
    });
}

/// The payment adapter.
#[derive(Debug)]
struct StripePay {
    client: StripeClient,
}

/// Stripe's refund states, in ours.
fn status(refund: &StripeRefund, action: &'static str) -> Result<RefundStatus, AdapterError> {
    match refund.status.as_str() {
        "pending" => Ok(RefundStatus::Pending),
        "requires_action" => Ok(RefundStatus::RequiresAction),
        "succeeded" => Ok(RefundStatus::Succeeded),
        "failed" => Ok(RefundStatus::Failed),
        "canceled" => Ok(RefundStatus::Canceled),
        // A state we do not know: the refund exists, but we cannot say how it stands.
        other => Err(AdapterError::unknown_outcome(
            KIND,
            action,
            format!("refund {} is in unknown state `{other}`", refund.id),
        )),
    }
}

/// Stripe's `reason` is an enum; a free-text reason travels in metadata instead.
fn stripe_reason(reason: Option<&str>) -> &'static str {
    match reason {
        Some("duplicate") => "duplicate",
        Some("fraudulent") => "fraudulent",
        _ => "requested_by_customer",
    }
}

/// Stripe metadata values hold at most 500 characters.
fn metadata_value(text: &str) -> String {
    match text.char_indices().nth(500) {
        Some((i, _)) => text[..i].to_owned(),
        None => text.to_owned(),
    }
}

#[async_trait]
impl Payment for StripePay {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::required(System::Payment)
    }

    async fn refund(
        &self,
        req: &Refund,
        key: &IdempotencyKey,
    ) -> Result<RefundOutcome, AdapterError> {
        let action = "payment.refund";
        // Checked before anything is sent: an amount Stripe cannot carry exactly is refused.
        let amount = to_stripe(&req.amount)
            .map_err(|e| AdapterError::permanent(KIND, action, e.to_string()))?;
        let (target, id) = Target::of(req.payment_id.as_str()).param();
        let mut params = vec![
            (target.to_owned(), id.to_owned()),
            ("amount".to_owned(), amount.to_string()),
            (
                "reason".to_owned(),
                stripe_reason(req.reason.as_deref()).to_owned(),
            ),
            (format!("metadata[{KEY_METADATA}]"), key.as_str().to_owned()),
        ];
        if let Some(so) = &req.service_order_id {
            params.push((
                format!("metadata[{SERVICE_ORDER_METADATA}]"),
                metadata_value(so.as_str()),
            ));
        }
        if let Some(reason) = &req.reason {
            params.push((
                format!("metadata[{REASON_METADATA}]"),
                metadata_value(reason),
            ));
        }
        let refund = self.client.create_refund(&params, key).await?;
        if !refund
            .currency
            .eq_ignore_ascii_case(req.amount.currency.code())
        {
            return Err(AdapterError::permanent(
                KIND,
                action,
                format!(
                    "refund {} was made in {} but {} was asked: check it by hand",
                    refund.id, refund.currency, req.amount.currency
                ),
            ));
        }
        Ok(RefundOutcome {
            status: status(&refund, action)?,
            refund_id: refund.id.into(),
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
                        format!("Stripe has no refund `{id}`"),
                    ));
                }
            },
            RefundLookup::Key { payment_id, key } => {
                match self
                    .client
                    .find_refund_by_key(Target::of(payment_id.as_str()), key)
                    .await?
                {
                    Some(r) => r,
                    // No refund of this payment carries the key: it was never made.
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
            refund_id: Some(found.id.into()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_fit_stripes_enum() {
        assert_eq!(stripe_reason(Some("duplicate")), "duplicate");
        assert_eq!(stripe_reason(Some("damaged")), "requested_by_customer");
        assert_eq!(stripe_reason(None), "requested_by_customer");
        assert_eq!(metadata_value(&"é".repeat(600)).chars().count(), 500);
    }
}
