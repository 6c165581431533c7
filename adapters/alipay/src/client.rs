//! The raw Alipay gateway calls: one signed form `POST` each, no retries, no sleeping. An
//! answer is believed only once its `sign` verifies under the Alipay public key.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use aftersales_adapter::AdapterError;
use reqwest::Client;
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::error::Call;
use crate::sign::{AlipayKey, AppKey, content, format_cst};

/// A business answer whose signature verified (or an unsigned refusal).
#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) code: String,
    pub(crate) msg: String,
    pub(crate) sub_code: Option<String>,
    pub(crate) sub_msg: Option<String>,
    pub(crate) body: Map<String, Value>,
}

impl Reply {
    pub(crate) fn ok(&self) -> bool {
        self.code == "10000"
    }

    /// A string field of the answer.
    pub(crate) fn field(&self, name: &str) -> Option<&str> {
        self.body
            .get(name)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The refusal as an error of the right class.
    pub(crate) fn error(&self, call: Call) -> AdapterError {
        call.code_error(
            &self.code,
            &self.msg,
            self.sub_code.as_deref(),
            self.sub_msg.as_deref(),
        )
    }
}

/// An HTTP client for one Alipay application.
#[derive(Debug)]
pub(crate) struct AlipayClient {
    pub(crate) http: Client,
    pub(crate) gateway: String,
    pub(crate) app_id: String,
    pub(crate) key: AppKey,
    pub(crate) alipay: AlipayKey,
}

impl AlipayClient {
    pub(crate) fn http(timeout: Duration) -> Result<Client, reqwest::Error> {
        Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
    }

    /// Calls `method` with `biz_content` once.
    pub(crate) async fn call(
        &self,
        call: Call,
        method: &str,
        biz_content: &Value,
    ) -> Result<Reply, AdapterError> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
            .unwrap_or(0);
        let mut params: Vec<(String, String)> = [
            ("app_id", self.app_id.as_str()),
            ("method", method),
            ("format", "JSON"),
            ("charset", "utf-8"),
            ("sign_type", "RSA2"),
            ("version", "1.0"),
        ]
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
        params.push(("timestamp".into(), format_cst(now)));
        params.push(("biz_content".into(), biz_content.to_string()));
        // Requests sign every parameter but `sign` itself (`sign_type` included).
        let signature = self.key.sign(&content(&params, &["sign"]));
        params.push(("sign".into(), signature));
        let resp = self
            .http
            .post(&self.gateway)
            .form(&params)
            .send()
            .await
            .map_err(|e| call.network_error(e))?;
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| call.network_error(e))?;
        if !status.is_success() {
            return Err(call.http_error(status));
        }
        self.read(call, method, &bytes)
    }

    /// Finds `<method>_response` (or `error_response`), checks its `sign` over the raw JSON
    /// text, and reads it.
    fn read(&self, call: Call, method: &str, bytes: &[u8]) -> Result<Reply, AdapterError> {
        let envelope: BTreeMap<String, Box<RawValue>> =
            serde_json::from_slice(bytes).map_err(|e| {
                call.lost("Alipay answered with a body we cannot read")
                    .with_source(e)
            })?;
        let name = format!("{}_response", method.replace('.', "_"));
        let Some(raw) = envelope
            .get(&name)
            .or_else(|| envelope.get("error_response"))
        else {
            return Err(call.lost("Alipay's answer holds no response object"));
        };
        let sign: Option<String> = envelope
            .get("sign")
            .and_then(|s| serde_json::from_str(s.get()).ok());
        let body: Map<String, Value> = serde_json::from_str(raw.get()).map_err(|e| {
            call.lost("Alipay's response object is not an object")
                .with_source(e)
        })?;
        let text = |k: &str| body.get(k).and_then(Value::as_str).map(str::to_owned);
        let reply = Reply {
            code: text("code").unwrap_or_default(),
            msg: text("msg").unwrap_or_default(),
            sub_code: text("sub_code"),
            sub_msg: text("sub_msg"),
            body: body.clone(),
        };
        match sign {
            Some(s) if self.alipay.verify(raw.get().as_bytes(), &s) => Ok(reply),
            Some(_) => {
                Err(call.lost("the answer's sign does not verify with the Alipay public key"))
            }
            // Alipay signs every answer it processed; only an early refusal may come unsigned,
            // and it is never believed as a success.
            None if !reply.ok() => Ok(reply),
            None => Err(call.lost("Alipay's success answer carries no sign")),
        }
    }
}
