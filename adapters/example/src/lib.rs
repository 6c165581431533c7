//! The worked example of `docs/adapters.md`: a payment adapter for Acme Pay, a toy card
//! platform with a Stripe-like REST API (the reference payment API that the testkit's
//! `MockPaymentApi` serves).
//!
//! Knows Acme Pay's wire format and nothing of the engine: it implements
//! [`Payment`] (`payment.refund`, `payment.refund_status`) and
//! a [`WebhookVerifier`](aftersales_adapter::WebhookVerifier) for Acme's signed refund
//! events, and registers both as `kind = "acme"` with [`register`]. Copy this crate to start
//! an adapter for a real platform: `config.rs` (settings), `client.rs` (one HTTP call per
//! platform endpoint), `error.rs` (failures to error classes), `webhook.rs` (signature,
//! timestamp, event), and `tests/` running the testkit's conformance suites.

#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod webhook;

use std::sync::Arc;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::types::{Refund, RefundOutcome, RefundState};
use aftersales_adapter::{
    AdapterError, Built, Capabilities, IdempotencyKey, Payment, RefundLookup, RefundStatus,
    Registry, RegistryError,
};
use async_trait::async_trait;

use crate::client::{AcmeClient, AcmeRefund, Metadata, NewRefund};
use crate::config::{AcmeSettings, parse_duration};
use crate::webhook::AcmeWebhooks;

/// The adapter kind this crate registers under.
pub const KIND: &str = "acme";

/// Registers Acme Pay as `kind = "acme"`.
///
/// Settings: `base_url`, `api_key_env` (the env var holding the API key), optional
/// `timeout` (`"10s"`), `webhook_secret_env` and `webhook_tolerance` (`"5m"`).
pub fn register(registry: &mut Registry) {
    registry.register(KIND, |cx| {
        let settings: AcmeSettings = cx.settings()?;
        let invalid = |message: String| RegistryError::InvalidSettings {
            kind: KIND.into(),
            message,
        };
        let timeout =
            parse_duration(&settings.timeout).map_err(|e| invalid(format!("timeout: {e}")))?;
        let tolerance = parse_duration(&settings.webhook_tolerance)
            .map_err(|e| invalid(format!("webhook_tolerance: {e}")))?;
        let client = AcmeClient::new(&settings.base_url, cx.secret("api_key_env")?, timeout)
            .map_err(|e| invalid(format!("cannot build the HTTP client: {e}")))?;
        let webhooks = match settings.webhook_secret_env {
            Some(_) => Some(Arc::new(AcmeWebhooks {
                secrets: vec![cx.secret("webhook_secret_env")?],
                tolerance,
            })
                as Arc<dyn aftersales_adapter::WebhookVerifier>),
            None => None,
        };
        Ok(Built {
            payment: Some(Arc::new(AcmePay { client })),
            webhooks,
            ..Built::default()
        })
    });
}

/// The payment adapter.
#[derive(Debug)]
struct AcmePay {
    client: AcmeClient,
}

/// Acme's refund states, in ours.
fn status(refund: &AcmeRefund, action: &'static str) -> Result<RefundStatus, AdapterError> {
    match refund.status.as_str() {
        "succeeded" => Ok(RefundStatus::Succeeded),
        "processing" => Ok(RefundStatus::Pending),
        "failed" => Ok(RefundStatus::Failed),
        // A state we do not know: the refund exists, but we cannot say how it stands.
        other => Err(AdapterError::unknown_outcome(
            KIND,
            action,
            format!("refund {} is in unknown state `{other}`", refund.id),
        )),
    }
}

#[async_trait]
impl Payment for AcmePay {
    fn platform(&self) -> &'static str {
        KIND
    }

    fn capabilities(&self) -> Capabilities {
        // The two required payment actions; `charge` and `insurance_claim` keep their
        // default `Unsupported` answer.
        Capabilities::required(System::Payment)
    }

    async fn refund(
        &self,
        req: &Refund,
        key: &IdempotencyKey,
    ) -> Result<RefundOutcome, AdapterError> {
        let body = NewRefund {
            amount: req.amount.minor,
            currency: req.amount.currency.code(),
            reason: req.reason.as_deref(),
            metadata: req.service_order_id.as_ref().map(|so| Metadata {
                service_order_id: so.as_str(),
            }),
        };
        let refund = self
            .client
            .create_refund(req.payment_id.as_str(), &body, key)
            .await?;
        Ok(RefundOutcome {
            status: status(&refund, "payment.refund")?,
            refund_id: refund.id.into(),
        })
    }

    async fn refund_status(&self, lookup: &RefundLookup) -> Result<RefundState, AdapterError> {
        let found = match lookup {
            RefundLookup::Id(id) => match self.client.get_refund(id.as_str()).await? {
                Some(r) => r,
                None => {
                    return Err(AdapterError::permanent(
                        KIND,
                        "payment.refund_status",
                        format!("Acme has no refund `{id}`"),
                    ));
                }
            },
            RefundLookup::Key { payment_id, key } => {
                match self
                    .client
                    .find_refund_by_key(payment_id.as_str(), key)
                    .await?
                {
                    Some(r) => r,
                    // Acme never saw the key: the refund was never made.
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
            status: status(&found, "payment.refund_status")?,
            refund_id: Some(found.id.into()),
        })
    }
}
