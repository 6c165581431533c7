//! The raw WeChat Pay v3 calls: one signed HTTP request each, no retries, no sleeping.
//! Every `2xx` answer's signature is verified before it is believed.

use std::time::{Duration, SystemTime};

use aftersales_adapter::AdapterError;
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, RETRY_AFTER, USER_AGENT};
use reqwest::{Client, Method, StatusCode};
use serde::{Deserialize, Serialize};

use crate::config::PaymentReference;
use crate::error::{Call, error_code};
use crate::sign::{MerchantKey, PlatformKeys};

/// A refund as WeChat Pay returns it (the fields we read).
#[derive(Debug, Deserialize)]
pub(crate) struct WechatRefund {
    pub(crate) out_refund_no: String,
    #[serde(default)]
    pub(crate) transaction_id: Option<String>,
    #[serde(default)]
    pub(crate) out_trade_no: Option<String>,
    pub(crate) status: String,
}

/// A paid order as WeChat Pay returns it (the fields we read).
#[derive(Debug, Deserialize)]
pub(crate) struct Transaction {
    pub(crate) amount: TransactionAmount,
}

/// An order's amounts, in fen.
#[derive(Debug, Deserialize)]
pub(crate) struct TransactionAmount {
    pub(crate) total: i64,
    #[serde(default)]
    pub(crate) currency: Option<String>,
}

/// The body of `POST /v3/refund/domestic/refunds`. Amounts are integer fen.
#[derive(Debug, Serialize)]
pub(crate) struct NewRefund<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) transaction_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) out_trade_no: Option<&'a str>,
    pub(crate) out_refund_no: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) reason: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) notify_url: Option<&'a str>,
    pub(crate) amount: NewRefundAmount,
}

/// The refund's amount block: what to refund and the order's total, in fen.
#[derive(Debug, Serialize)]
pub(crate) struct NewRefundAmount {
    pub(crate) refund: i64,
    pub(crate) total: i64,
    pub(crate) currency: &'static str,
}

/// An HTTP client for one merchant.
#[derive(Debug)]
pub(crate) struct WechatClient {
    pub(crate) http: Client,
    pub(crate) base_url: String,
    pub(crate) mchid: String,
    pub(crate) serial_no: String,
    pub(crate) key: MerchantKey,
    pub(crate) platform: PlatformKeys,
}

impl WechatClient {
    pub(crate) fn http(timeout: Duration) -> Result<Client, reqwest::Error> {
        Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
    }

    /// `GET /v3/pay/transactions/{out-trade-no/..|id/..}?mchid=..`: the order being refunded.
    pub(crate) async fn get_transaction(
        &self,
        reference: PaymentReference,
        payment_id: &str,
    ) -> Result<Transaction, AdapterError> {
        let kind = match reference {
            PaymentReference::OutTradeNo => "out-trade-no",
            PaymentReference::TransactionId => "id",
        };
        let path = format!(
            "/v3/pay/transactions/{kind}/{}?mchid={}",
            segment(payment_id),
            segment(&self.mchid)
        );
        // A read that precedes the refund: nothing has happened if it fails.
        let call = Call::Read("payment.refund");
        match self.send(call, Method::GET, &path, None).await? {
            Some(t) => Ok(t),
            None => Err(AdapterError::not_found(
                crate::KIND,
                "payment.refund",
                format!("WeChat Pay has no order `{payment_id}`"),
            )),
        }
    }

    /// `POST /v3/refund/domestic/refunds`, the engine's key as `out_refund_no`.
    pub(crate) async fn create_refund(
        &self,
        refund: &NewRefund<'_>,
    ) -> Result<WechatRefund, AdapterError> {
        let call = Call::Mutating("payment.refund");
        let body = serde_json::to_vec(refund).map_err(|e| {
            AdapterError::permanent(crate::KIND, call.action(), "cannot encode the refund")
                .with_source(e)
        })?;
        match self
            .send(
                call,
                Method::POST,
                "/v3/refund/domestic/refunds",
                Some(body),
            )
            .await?
        {
            Some(r) => Ok(r),
            None => Err(AdapterError::not_found(
                crate::KIND,
                call.action(),
                "WeChat Pay has no such order",
            )),
        }
    }

    /// `GET /v3/refund/domestic/refunds/{out_refund_no}`; `None` when WeChat Pay has no
    /// refund with that number.
    pub(crate) async fn get_refund(
        &self,
        out_refund_no: &str,
    ) -> Result<Option<WechatRefund>, AdapterError> {
        let path = format!("/v3/refund/domestic/refunds/{}", segment(out_refund_no));
        self.send(
            Call::Read("payment.refund_status"),
            Method::GET,
            &path,
            None,
        )
        .await
    }

    /// Signs and sends once; `Ok(None)` on a `404` to a read.
    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        call: Call,
        method: Method,
        path_and_query: &str,
        body: Option<Vec<u8>>,
    ) -> Result<Option<T>, AdapterError> {
        let timestamp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
            .to_string();
        let nonce = uuid::Uuid::now_v7()
            .simple()
            .to_string()
            .to_ascii_uppercase();
        let body_text = body.as_deref().unwrap_or_default();
        let mut message =
            format!("{method}\n{path_and_query}\n{timestamp}\n{nonce}\n").into_bytes();
        message.extend_from_slice(body_text);
        message.push(b'\n');
        let authorization = format!(
            "WECHATPAY2-SHA256-RSA2048 mchid=\"{}\",nonce_str=\"{nonce}\",signature=\"{}\",timestamp=\"{timestamp}\",serial_no=\"{}\"",
            self.mchid,
            self.key.sign(&message),
            self.serial_no
        );
        let mut req = self
            .http
            .request(method, format!("{}{path_and_query}", self.base_url))
            .header(AUTHORIZATION, authorization)
            .header(ACCEPT, "application/json")
            .header(
                USER_AGENT,
                concat!("aftersales-adapter-wechatpay/", env!("CARGO_PKG_VERSION")),
            );
        if let Some(b) = body {
            req = req.header(CONTENT_TYPE, "application/json").body(b);
        }
        let resp = req.send().await.map_err(|e| call.network_error(e))?;
        let status = resp.status();
        let header = |name: &str| {
            resp.headers()
                .get(name)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        };
        let retry_after = header(RETRY_AFTER.as_str())
            .trim()
            .parse::<u64>()
            .ok()
            .map(Duration::from_secs);
        let (ts, nonce, sig, serial) = (
            header("Wechatpay-Timestamp"),
            header("Wechatpay-Nonce"),
            header("Wechatpay-Signature"),
            header("Wechatpay-Serial"),
        );
        let bytes = resp.bytes().await.map_err(|e| call.network_error(e))?;
        if status == StatusCode::NOT_FOUND
            && matches!(call, Call::Read(_))
            && matches!(
                error_code(&bytes).as_deref(),
                Some("RESOURCE_NOT_EXISTS" | "ORDER_NOT_EXIST" | "NOT_FOUND")
            )
        {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(call.status_error(status, &bytes, retry_after));
        }
        // Only a signed answer is believed: an unsigned "SUCCESS" could come from anyone.
        if !self.platform.verify(&serial, &ts, &nonce, &bytes, &sig) {
            return Err(call.lost("the answer's Wechatpay-Signature does not verify"));
        }
        serde_json::from_slice(&bytes).map(Some).map_err(|e| {
            call.lost("WeChat Pay answered with a body we cannot read")
                .with_source(e)
        })
    }
}

/// Percent-encodes an id for one path segment or query value.
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
