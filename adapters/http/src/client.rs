//! One HTTP call per action: build the request from templates, send it once, classify the
//! answer, map it to outputs.

use std::fmt;
use std::time::SystemTime;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::{AdapterError, Capabilities, ErrorClass, IdempotencyKey, RegistryError};
use hmac::{Hmac, KeyInit, Mac};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER};
use reqwest::{Client, Url};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};
use sha2::Sha256;

use crate::KIND;
use crate::config::{ActionPlan, Auth, OutputPlan, Plan, RequestPlan, Source};
use crate::error::{classify, lost, lost_hint, parse_retry_after};
use crate::template::{Vars, encode_segment};

/// The longest platform error message copied into an error, in characters.
const MAX_PLATFORM_MESSAGE: usize = 200;

/// The adapter: a checked plan and one HTTP client (connection pool) for all calls.
pub(crate) struct HttpAdapter {
    plan: Plan,
    client: Client,
}

impl fmt::Debug for HttpAdapter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // `Auth` holds `Secret`s, which print as `***`.
        f.debug_struct("HttpAdapter")
            .field("base_url", &self.plan.base_url)
            .field("auth", &self.plan.auth)
            .field("actions", &self.plan.actions.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Which request of an action to send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Variant {
    /// The action's own request.
    Main,
    /// `by_key`: `payment.refund_status` looked up by the refund call's key.
    ByKey,
}

impl HttpAdapter {
    pub(crate) fn new(plan: Plan) -> Result<HttpAdapter, RegistryError> {
        let client = Client::builder()
            .connect_timeout(plan.timeout)
            // A redirect is answered as it is: following one could replay a POST elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| RegistryError::InvalidSettings {
                kind: KIND.into(),
                message: format!("cannot build the HTTP client: {e}"),
            })?;
        Ok(HttpAdapter { plan, client })
    }

    /// True when at least one action of `system` is configured.
    pub(crate) fn serves(&self, system: System) -> bool {
        self.plan.actions.values().any(|a| a.spec.system == system)
    }

    /// The configured actions of `system`.
    pub(crate) fn capabilities(&self, system: System) -> Capabilities {
        self.plan
            .actions
            .iter()
            .filter(|(_, a)| a.spec.system == system)
            .fold(Capabilities::none(), |caps, (name, _)| caps.with(name))
    }

    /// Calls `action` with a typed request and decodes the typed answer.
    pub(crate) async fn call<Req, Resp>(
        &self,
        action: &'static str,
        req: &Req,
        key: Option<&IdempotencyKey>,
        variant: Variant,
    ) -> Result<Resp, AdapterError>
    where
        Req: Serialize + ?Sized,
        Resp: DeserializeOwned,
    {
        let Some(plan) = self.plan.actions.get(action) else {
            return Err(AdapterError::unsupported(KIND, action));
        };
        let input = serde_json::to_value(req).map_err(|e| {
            AdapterError::permanent(KIND, action, "cannot read the request").with_source(e)
        })?;
        let outputs = self.exchange(plan, &input, key, variant).await?;
        serde_json::from_value(Value::Object(outputs)).map_err(|e| {
            lost(
                plan,
                format!(
                    "the answer does not fit the outputs of {action} ({e}){}",
                    lost_hint(plan)
                ),
            )
        })
    }

    async fn exchange(
        &self,
        plan: &ActionPlan,
        input: &Value,
        key: Option<&IdempotencyKey>,
        variant: Variant,
    ) -> Result<Map<String, Value>, AdapterError> {
        let action = plan.spec.full_name_static();
        let mutating = plan.spec.mutating;
        let request = match variant {
            Variant::Main => &plan.request,
            Variant::ByKey => plan.by_key.as_ref().ok_or_else(|| {
                AdapterError::new(
                    ErrorClass::Unsupported,
                    KIND,
                    action,
                    "the lookup by key is not configured (`by_key`)",
                )
            })?,
        };
        let vars = Vars {
            input,
            key: key.filter(|_| mutating).map(IdempotencyKey::as_str),
        };
        let (url, body) = self.build(request, &vars).map_err(|why| {
            AdapterError::permanent(KIND, action, format!("cannot build the request: {why}"))
        })?;

        let mut headers = self.plan.headers.clone();
        headers.insert(ACCEPT, HeaderValue::from_static("application/json"));
        if body.is_some() {
            headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        if let (true, Some(name), Some(k)) = (mutating, &self.plan.idempotency_header, key) {
            // Keys are `[A-Za-z0-9_-]`, always a valid header value.
            if let Ok(v) = HeaderValue::from_str(k.as_str()) {
                headers.insert(name.clone(), v);
            }
        }
        self.authenticate(&mut headers, request, &url, body.as_deref());

        let mut builder = self
            .client
            .request(request.method.clone(), url)
            .headers(headers)
            .timeout(plan.timeout);
        if let Some(body) = body {
            builder = builder.body(body);
        }
        let response = builder.send().await.map_err(|e| self.send_error(plan, e))?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| parse_retry_after(v, SystemTime::now()));
        let bytes = response.bytes().await;
        tracing::debug!(action, method = %request.method, status = status.as_u16(), "Platform answered.");

        if !status.is_success() {
            if let Some(fixed) = plan.on_status.get(&status.as_u16()) {
                return Ok(fixed.clone());
            }
            let detail = bytes
                .as_ref()
                .ok()
                .and_then(|b| self.platform_message(b))
                .map(|m| format!(": {m}"))
                .unwrap_or_default();
            return Err(classify(plan, status, retry_after, &detail));
        }

        let bytes = bytes.map_err(|e| {
            lost(
                plan,
                format!(
                    "the connection broke while reading the {status} answer{}",
                    lost_hint(plan)
                ),
            )
            .with_source(e)
        })?;
        let needs_body = plan.outputs.iter().any(|(_, o)| o.reads_body());
        let body: Value = if needs_body || !bytes.is_empty() {
            match serde_json::from_slice(&bytes) {
                Ok(v) => v,
                Err(_) if !needs_body => Value::Null,
                Err(e) => {
                    return Err(lost(
                        plan,
                        format!(
                            "the platform answered {status} with a body that is not JSON{}",
                            lost_hint(plan)
                        ),
                    )
                    .with_source(e));
                }
            }
        } else {
            Value::Null
        };
        map_outputs(plan, &body).map_err(|why| lost(plan, format!("{why}{}", lost_hint(plan))))
    }

    fn build(
        &self,
        request: &RequestPlan,
        vars: &Vars<'_>,
    ) -> Result<(Url, Option<Vec<u8>>), String> {
        let Some(path) = request.path.render_text(vars, encode_segment)? else {
            let absent: Vec<String> = request.path.placeholders().map(|p| p.display()).collect();
            return Err(format!(
                "the path needs {} and an input is absent",
                absent.join(", ")
            ));
        };
        let mut url = Url::parse(&format!("{}{path}", self.plan.base_url))
            .map_err(|e| format!("the URL is not valid: {e}"))?;
        let mut pairs = Vec::new();
        for (name, t) in &request.query {
            if let Some(v) = t.render_text(vars, str::to_owned)? {
                pairs.push((name, v));
            }
        }
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        let body = match &request.body {
            None => None,
            Some(t) => match t.render(vars)? {
                None => None,
                Some(v) => Some(
                    serde_json::to_vec(&v)
                        .map_err(|e| format!("the body cannot be written: {e}"))?,
                ),
            },
        };
        Ok((url, body))
    }

    fn authenticate(
        &self,
        headers: &mut HeaderMap,
        request: &RequestPlan,
        url: &Url,
        body: Option<&[u8]>,
    ) {
        match &self.plan.auth {
            Auth::None => {}
            Auth::Bearer(token) => {
                insert_secret(
                    headers,
                    AUTHORIZATION,
                    &format!("Bearer {}", token.expose()),
                );
            }
            Auth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                insert_secret(
                    headers,
                    AUTHORIZATION,
                    &format!("Basic {}", base64(pair.as_bytes())),
                );
            }
            Auth::Hmac {
                secret,
                signature_header,
                timestamp_header,
            } => {
                let ts = SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0)
                    .to_string();
                let path = match url.query() {
                    Some(q) => format!("{}?{q}", url.path()),
                    None => url.path().to_owned(),
                };
                let mut signed =
                    format!("{}\n{path}\n{ts}\n", request.method.as_str()).into_bytes();
                signed.extend_from_slice(body.unwrap_or_default());
                let signature = hmac_hex(secret.expose().as_bytes(), &signed);
                if let Ok(v) = HeaderValue::from_str(&ts) {
                    headers.insert(timestamp_header.clone(), v);
                }
                insert_secret(headers, signature_header.clone(), &signature);
            }
        }
    }

    /// The platform's own error message, when `error_message` points at one.
    fn platform_message(&self, body: &[u8]) -> Option<String> {
        let pointer = self.plan.error_message.as_deref()?;
        let v: Value = serde_json::from_slice(body).ok()?;
        let text = match v.pointer(pointer)? {
            Value::String(s) => s.clone(),
            Value::Null => return None,
            other => other.to_string(),
        };
        Some(text.chars().take(MAX_PLATFORM_MESSAGE).collect())
    }

    fn send_error(&self, plan: &ActionPlan, e: reqwest::Error) -> AdapterError {
        let action = plan.spec.full_name_static();
        if e.is_builder() {
            return AdapterError::permanent(KIND, action, "cannot build the request")
                .with_source(e);
        }
        if e.is_connect() {
            // Nothing was sent: the connection was never made.
            return AdapterError::transient(KIND, action, "cannot connect to the platform")
                .with_source(e);
        }
        let what = if e.is_timeout() {
            format!("no answer within {}ms", plan.timeout.as_millis())
        } else {
            "the connection broke after the request was sent".to_owned()
        };
        lost(plan, format!("{what}{}", lost_hint(plan))).with_source(e)
    }
}

/// Maps the answer to the action's outputs.
fn map_outputs(plan: &ActionPlan, body: &Value) -> Result<Map<String, Value>, String> {
    let mut out = Map::new();
    for (name, o) in &plan.outputs {
        let found = match &o.source {
            Source::Pointer(p) => body.pointer(p).filter(|v| !v.is_null()).cloned(),
            Source::Value(v) => Some(v.clone()),
        };
        let Some(value) = found.or_else(|| o.default.clone()) else {
            let required = plan
                .spec
                .outputs
                .iter()
                .any(|f| f.name == *name && f.required);
            if required {
                let at = match &o.source {
                    Source::Pointer(p) => p.as_str(),
                    Source::Value(_) => "",
                };
                return Err(format!("output `{name}`: the answer has nothing at `{at}`"));
            }
            continue;
        };
        out.insert((*name).to_owned(), translate(o, value));
    }
    Ok(out)
}

/// Applies an output's value map: the platform's value (as text) to ours.
fn translate(o: &OutputPlan, value: Value) -> Value {
    if o.map.is_empty() {
        return value;
    }
    let key = match &value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    o.map.get(&key).cloned().unwrap_or(value)
}

fn insert_secret(headers: &mut HeaderMap, name: reqwest::header::HeaderName, value: &str) {
    if let Ok(mut v) = HeaderValue::from_str(value) {
        // Sensitive values are left out of reqwest's and hyper's debug output.
        v.set_sensitive(true);
        headers.insert(name, v);
    }
}

fn hmac_hex(secret: &[u8], signed: &[u8]) -> String {
    // HMAC takes keys of any length, so this cannot fail.
    match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(mut mac) => {
            mac.update(signed);
            hex::encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Standard base64 with padding, for basic auth.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                let idx = usize::try_from((n >> (18 - 6 * i)) & 63).unwrap_or(0);
                out.push(char::from(ALPHABET[idx]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_matches_rfc_4648_vectors() {
        let cases = [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ];
        for (input, want) in cases {
            assert_eq!(base64(input.as_bytes()), want, "{input}");
        }
    }
}
