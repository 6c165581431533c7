//! The raw Acme Pay calls: one HTTP request each, no retries, no sleeping.

use std::time::Duration;

use aftersales_adapter::{AdapterError, IdempotencyKey, Secret};
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde::{Deserialize, Serialize};

use crate::error::Call;

/// A refund as Acme Pay returns it.
#[derive(Debug, Deserialize)]
pub(crate) struct AcmeRefund {
    pub(crate) id: String,
    pub(crate) status: String,
}

/// The body of `POST /v1/payments/{id}/refunds`. Amounts are integer minor units.
#[derive(Debug, Serialize)]
pub(crate) struct NewRefund<'a> {
    pub(crate) amount: i64,
    pub(crate) currency: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) metadata: Option<Metadata<'a>>,
}

/// Our references, stored with the refund at Acme.
#[derive(Debug, Serialize)]
pub(crate) struct Metadata<'a> {
    pub(crate) service_order_id: &'a str,
}

/// An HTTP client for one Acme Pay account.
pub(crate) struct AcmeClient {
    http: Client,
    base_url: String,
    api_key: Secret,
}

impl std::fmt::Debug for AcmeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AcmeClient")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key) // prints ***
            .finish()
    }
}

impl AcmeClient {
    pub(crate) fn new(
        base_url: &str,
        api_key: Secret,
        timeout: Duration,
    ) -> Result<AcmeClient, reqwest::Error> {
        let http = Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(AcmeClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(self.api_key.expose())
    }

    /// `POST /v1/payments/{payment_id}/refunds`, the key in `Idempotency-Key`.
    pub(crate) async fn create_refund(
        &self,
        payment_id: &str,
        refund: &NewRefund<'_>,
        key: &IdempotencyKey,
    ) -> Result<AcmeRefund, AdapterError> {
        let call = Call::Mutating("payment.refund");
        let body = serde_json::to_vec(refund).map_err(|e| {
            AdapterError::permanent(crate::KIND, "payment.refund", "cannot encode the refund")
                .with_source(e)
        })?;
        let req = self
            .request(
                Method::POST,
                &format!("/v1/payments/{}/refunds", segment(payment_id)),
            )
            // The engine's key, unchanged: a repeat returns the first refund.
            .header("Idempotency-Key", key.as_str())
            .header(CONTENT_TYPE, "application/json")
            .body(body);
        self.send(call, req).await?.ok_or_else(|| {
            AdapterError::not_found(crate::KIND, "payment.refund", "unknown payment")
        })
    }

    /// `GET /v1/refunds/{refund_id}`; `None` when Acme has no such refund.
    pub(crate) async fn get_refund(
        &self,
        refund_id: &str,
    ) -> Result<Option<AcmeRefund>, AdapterError> {
        let req = self.request(Method::GET, &format!("/v1/refunds/{}", segment(refund_id)));
        self.send(Call::Read("payment.refund_status"), req).await
    }

    /// `GET /v1/payments/{payment_id}/refunds/by-key/{key}`; `None` when Acme never saw
    /// the key.
    pub(crate) async fn find_refund_by_key(
        &self,
        payment_id: &str,
        key: &IdempotencyKey,
    ) -> Result<Option<AcmeRefund>, AdapterError> {
        let path = format!(
            "/v1/payments/{}/refunds/by-key/{}",
            segment(payment_id),
            key.as_str()
        );
        let req = self.request(Method::GET, &path);
        self.send(Call::Read("payment.refund_status"), req).await
    }

    /// Sends once and reads the refund; `Ok(None)` on `404`.
    async fn send(
        &self,
        call: Call,
        req: RequestBuilder,
    ) -> Result<Option<AcmeRefund>, AdapterError> {
        let resp = req.send().await.map_err(|e| call.network_error(e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = resp.bytes().await.map_err(|e| call.network_error(e))?;
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(call.status_error(status, &body, retry_after));
        }
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            call.lost("Acme answered with a body we cannot read")
                .with_source(e)
        })
    }
}

/// Percent-encodes an id for one path segment.
fn segment(id: &str) -> String {
    id.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
