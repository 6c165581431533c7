//! The raw Admin GraphQL call: one `POST /admin/api/{version}/graphql.json` per call, no
//! retries, no sleeping. Errors in the answer (`errors`, and `userErrors` via
//! [`check_user_errors`]) are classified here.

use std::time::Duration;

use aftersales_adapter::{AdapterError, Secret};
use reqwest::Client;
use reqwest::header::{CONTENT_TYPE, RETRY_AFTER};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{
    Call, Cost, GraphqlError, ShopifyError, UserError, graphql_errors, retry_after, status_message,
    user_errors,
};

/// An HTTP client for one shop.
pub(crate) struct ShopifyClient {
    http: Client,
    endpoint: String,
    token: Secret,
}

impl std::fmt::Debug for ShopifyClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopifyClient")
            .field("endpoint", &self.endpoint)
            .field("token", &self.token) // prints ***
            .finish()
    }
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    data: Option<Value>,
    #[serde(default)]
    errors: Option<Vec<GraphqlError>>,
    #[serde(default)]
    extensions: Option<Extensions>,
}

#[derive(Deserialize)]
struct Extensions {
    #[serde(default)]
    cost: Option<Cost>,
}

impl ShopifyClient {
    pub(crate) fn new(
        base_url: &str,
        api_version: &str,
        token: Secret,
        timeout: Duration,
    ) -> Result<ShopifyClient, reqwest::Error> {
        let http = Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        Ok(ShopifyClient {
            http,
            endpoint: format!(
                "{}/admin/api/{}/graphql.json",
                base_url.trim_end_matches('/'),
                api_version.trim_matches('/')
            ),
            token,
        })
    }

    /// Runs one query or mutation and returns its `data`.
    pub(crate) async fn graphql<T: DeserializeOwned>(
        &self,
        call: Call,
        query: &str,
        variables: Value,
    ) -> Result<T, AdapterError> {
        let body = serde_json::json!({ "query": query, "variables": variables });
        let resp = self
            .http
            .post(&self.endpoint)
            .header("X-Shopify-Access-Token", self.token.expose())
            .header(CONTENT_TYPE, "application/json")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| {
                call.classify(if e.is_connect() {
                    ShopifyError::Connect(e)
                } else if e.is_timeout() {
                    ShopifyError::Lost("no answer before the timeout", Some(e))
                } else {
                    ShopifyError::Lost("the connection broke after sending", Some(e))
                })
            })?;
        let status = resp.status();
        let retry = retry_after(
            resp.headers()
                .get(RETRY_AFTER)
                .and_then(|v| v.to_str().ok()),
        );
        let bytes = resp.bytes().await.map_err(|e| {
            call.classify(ShopifyError::Lost(
                "the answer broke off while reading it",
                Some(e),
            ))
        })?;
        if !status.is_success() {
            return Err(call.classify(ShopifyError::Status {
                status,
                message: status_message(status, &bytes),
                retry_after: retry,
            }));
        }
        let answer: Answer = serde_json::from_slice(&bytes)
            .map_err(|e| call.classify(ShopifyError::Unreadable(e)))?;
        if let Some(errors) = answer.errors.filter(|e| !e.is_empty()) {
            let cost = answer.extensions.as_ref().and_then(|x| x.cost.as_ref());
            return Err(call.classify(graphql_errors(&errors, cost)));
        }
        let data = answer.data.unwrap_or(Value::Null);
        serde_json::from_value(data).map_err(|e| call.classify(ShopifyError::Unreadable(e)))
    }
}

/// Fails with the `userErrors` of a mutation payload, when there are any.
pub(crate) fn check_user_errors(call: Call, errors: &[UserError]) -> Result<(), AdapterError> {
    if errors.is_empty() {
        Ok(())
    } else {
        Err(call.classify(user_errors(errors)))
    }
}
