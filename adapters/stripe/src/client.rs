//! The raw Stripe calls: one HTTP request each, no retries, no sleeping.

use std::collections::BTreeMap;
use std::time::Duration;

use aftersales_adapter::{AdapterError, IdempotencyKey, Secret};
use reqwest::header::RETRY_AFTER;
use reqwest::{Client, Method, RequestBuilder, StatusCode};
use serde::Deserialize;

use crate::error::{Call, retry_after};

/// A refund as Stripe returns it (the fields we read).
#[derive(Debug, Deserialize)]
pub(crate) struct StripeRefund {
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) currency: String,
    #[serde(default)]
    pub(crate) metadata: BTreeMap<String, String>,
}

/// One page of `GET /v1/refunds`.
#[derive(Debug, Deserialize)]
pub(crate) struct RefundList {
    pub(crate) data: Vec<StripeRefund>,
    #[serde(default)]
    pub(crate) has_more: bool,
}

/// What a refund is made against: Stripe takes either a PaymentIntent or a Charge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Target<'a> {
    /// `pi_...`
    PaymentIntent(&'a str),
    /// `ch_...` or `py_...`
    Charge(&'a str),
}

impl<'a> Target<'a> {
    /// Our payment id: a charge when it looks like one, a PaymentIntent otherwise.
    pub(crate) fn of(payment_id: &'a str) -> Target<'a> {
        if payment_id.starts_with("ch_") || payment_id.starts_with("py_") {
            Target::Charge(payment_id)
        } else {
            Target::PaymentIntent(payment_id)
        }
    }

    /// The form parameter naming it.
    pub(crate) fn param(self) -> (&'static str, &'a str) {
        match self {
            Target::PaymentIntent(id) => ("payment_intent", id),
            Target::Charge(id) => ("charge", id),
        }
    }
}

/// An HTTP client for one Stripe account.
pub(crate) struct StripeClient {
    http: Client,
    base_url: String,
    api_key: Secret,
    api_version: Option<String>,
}

impl std::fmt::Debug for StripeClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeClient")
            .field("base_url", &self.base_url)
            .field("api_key", &self.api_key) // prints ***
            .field("api_version", &self.api_version)
            .finish()
    }
}

/// The most pages a lookup by key reads (100 refunds each).
const MAX_PAGES: usize = 10;

impl StripeClient {
    pub(crate) fn new(
        base_url: &str,
        api_key: Secret,
        api_version: Option<String>,
        timeout: Duration,
    ) -> Result<StripeClient, reqwest::Error> {
        let http = Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(StripeClient {
            http,
            base_url: base_url.trim_end_matches('/').to_owned(),
            api_key,
            api_version,
        })
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base_url))
            .bearer_auth(self.api_key.expose());
        if let Some(v) = &self.api_version {
            req = req.header("Stripe-Version", v);
        }
        req
    }

    /// `POST /v1/refunds` (form-encoded), the key in `Idempotency-Key`.
    pub(crate) async fn create_refund(
        &self,
        params: &[(String, String)],
        key: &IdempotencyKey,
    ) -> Result<StripeRefund, AdapterError> {
        let call = Call::Mutating("payment.refund");
        let req = self
            .request(Method::POST, "/v1/refunds")
            // The engine's key, unchanged: Stripe replays the first answer for it.
            .header("Idempotency-Key", key.as_str())
            .form(params);
        match self.send(call, req).await? {
            Some(r) => Ok(r),
            None => Err(AdapterError::not_found(
                crate::KIND,
                call.action(),
                "stripe 404: no such payment",
            )),
        }
    }

    /// `GET /v1/refunds/{id}`; `None` when Stripe has no such refund.
    pub(crate) async fn get_refund(
        &self,
        refund_id: &str,
    ) -> Result<Option<StripeRefund>, AdapterError> {
        let req = self.request(Method::GET, &format!("/v1/refunds/{}", segment(refund_id)));
        self.send(Call::Read("payment.refund_status"), req).await
    }

    /// The refund of `target` whose metadata carries `key`, reading `GET /v1/refunds`
    /// filtered by the payment, newest first; `None` when no refund carries it.
    pub(crate) async fn find_refund_by_key(
        &self,
        target: Target<'_>,
        key: &IdempotencyKey,
    ) -> Result<Option<StripeRefund>, AdapterError> {
        let call = Call::Read("payment.refund_status");
        let (name, id) = target.param();
        let mut after: Option<String> = None;
        for _ in 0..MAX_PAGES {
            let mut query: Vec<(&str, &str)> = vec![(name, id), ("limit", "100")];
            if let Some(a) = &after {
                query.push(("starting_after", a));
            }
            let req = self.request(Method::GET, "/v1/refunds").query(&query);
            let Some(page) = self.send::<RefundList>(call, req).await? else {
                return Ok(None);
            };
            let last = page.data.last().map(|r| r.id.clone());
            if let Some(found) = page.data.into_iter().find(|r| {
                r.metadata.get(crate::KEY_METADATA).map(String::as_str) == Some(key.as_str())
            }) {
                return Ok(Some(found));
            }
            match (page.has_more, last) {
                (true, Some(l)) => after = Some(l),
                _ => return Ok(None),
            }
        }
        Err(AdapterError::transient(
            crate::KIND,
            call.action(),
            format!(
                "more than {} refunds on one payment; the key was not among them",
                MAX_PAGES * 100
            ),
        ))
    }

    /// Sends once and reads the answer; `Ok(None)` on `404`.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        call: Call,
        req: RequestBuilder,
    ) -> Result<Option<T>, AdapterError> {
        let resp = req.send().await.map_err(|e| call.network_error(e))?;
        let status = resp.status();
        let retry_after = retry_after(
            resp.headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let body = resp.bytes().await.map_err(|e| call.network_error(e))?;
        if status == StatusCode::NOT_FOUND && matches!(call, Call::Read(_)) {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(call.status_error(status, &body, retry_after));
        }
        serde_json::from_slice(&body).map(Some).map_err(|e| {
            call.lost("Stripe answered with a body we cannot read")
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
