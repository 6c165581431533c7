//! The settings of a `kind = "wechatpay"` adapter, as a business line writes them:
//!
//! ```toml
//! [adapters.payment]
//! kind = "wechatpay"
//! settings = { mchid = "1900000109", merchant_serial_no = "...", private_key_env = "WECHATPAY_KEY", ... }
//! ```

use std::time::Duration;

use serde::Deserialize;

/// The settings as written. Strict: a misspelt setting is an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct WechatSettings {
    /// The API root; `https://api.mch.weixin.qq.com` unless a test points it elsewhere.
    #[serde(default = "default_base_url")]
    pub(crate) base_url: String,
    /// The merchant id (`mchid`).
    pub(crate) mchid: String,
    /// The serial number of the merchant API certificate whose private key signs requests.
    pub(crate) merchant_serial_no: String,
    /// The env var holding the merchant API private key (PKCS#8 PEM, `apiclient_key.pem`).
    #[allow(dead_code)]
    pub(crate) private_key_env: String,
    /// The env var holding the APIv3 key (32 characters) that decrypts notifications.
    #[allow(dead_code)]
    pub(crate) apiv3_key_env: String,
    /// The serial (`PUB_KEY_ID_...` or the platform certificate's serial) that
    /// `Wechatpay-Serial` names for the key below.
    pub(crate) platform_serial: String,
    /// The env var holding the WeChat Pay public key (SPKI PEM) that verifies responses and
    /// notifications.
    #[allow(dead_code)]
    pub(crate) platform_public_key_env: String,
    /// During a key rotation: the other serial WeChat Pay may sign with.
    #[serde(default)]
    pub(crate) platform_previous_serial: Option<String>,
    /// During a key rotation: the env var holding the other public key.
    #[serde(default)]
    pub(crate) platform_previous_public_key_env: Option<String>,
    /// What our payment id is at WeChat Pay: `out_trade_no` (the merchant order number) or
    /// `transaction_id` (WeChat Pay's order number).
    #[serde(default)]
    pub(crate) payment_reference: PaymentReference,
    /// The HTTPS URL WeChat Pay sends refund notifications to (no query string); the
    /// merchant platform's setting when absent.
    #[serde(default)]
    pub(crate) notify_url: Option<String>,
    /// One call's timeout, as `"10s"` or `"500ms"`.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: String,
    /// How far a notification's signed time may be from now, as `"5m"`.
    #[serde(default = "default_tolerance")]
    pub(crate) webhook_tolerance: String,
}

/// What a payment id names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum PaymentReference {
    /// The merchant's order number.
    #[default]
    OutTradeNo,
    /// WeChat Pay's order number.
    TransactionId,
}

impl PaymentReference {
    /// The field name in WeChat Pay's JSON.
    pub(crate) fn field(self) -> &'static str {
        match self {
            PaymentReference::OutTradeNo => "out_trade_no",
            PaymentReference::TransactionId => "transaction_id",
        }
    }
}

fn default_base_url() -> String {
    "https://api.mch.weixin.qq.com".into()
}

fn default_timeout() -> String {
    "10s".into()
}

fn default_tolerance() -> String {
    "5m".into()
}

/// Reads `"500ms"`, `"10s"`, `"5m"`, `"1h"`.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("expected a duration such as \"10s\", found \"{text}\""))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n.saturating_mul(60))),
        "h" => Ok(Duration::from_secs(n.saturating_mul(3600))),
        _ => Err(format!("expected a unit ms, s, m or h in \"{text}\"")),
    }
}
