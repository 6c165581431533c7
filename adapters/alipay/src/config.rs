//! The settings of a `kind = "alipay"` adapter, as a business line writes them:
//!
//! ```toml
//! [adapters.payment]
//! kind = "alipay"
//! settings = { app_id = "2021000000000000", private_key_env = "ALIPAY_APP_PRIVATE_KEY", alipay_public_key_env = "ALIPAY_PUBLIC_KEY" }
//! ```

use std::time::Duration;

use serde::Deserialize;

/// The settings as written. Strict: a misspelt setting is an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AlipaySettings {
    /// The gateway; `https://openapi.alipay.com/gateway.do` unless a test points it elsewhere.
    #[serde(default = "default_gateway")]
    pub(crate) gateway_url: String,
    /// The application id (`app_id`).
    pub(crate) app_id: String,
    /// The env var holding the application private key (PEM, or bare base64 DER as the
    /// Alipay key tool writes it); it signs requests (RSA2).
    #[allow(dead_code)]
    pub(crate) private_key_env: String,
    /// The env var holding the Alipay public key (PEM or bare base64 DER); it verifies
    /// answers and notifications. Not the application's own public key.
    #[allow(dead_code)]
    pub(crate) alipay_public_key_env: String,
    /// What our payment id is at Alipay: `out_trade_no` (the merchant order number) or
    /// `trade_no` (Alipay's trade number).
    #[serde(default)]
    pub(crate) payment_reference: PaymentReference,
    /// One call's timeout, as `"10s"` or `"500ms"`.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: String,
    /// How far a notification's `notify_time` may be from now. Alipay re-sends an
    /// unacknowledged notification for about a day, so the default is `"25h"`; repeats
    /// within it are deduplicated by `notify_id`.
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
    /// Alipay's trade number.
    TradeNo,
}

impl PaymentReference {
    /// The field name in Alipay's parameters.
    pub(crate) fn field(self) -> &'static str {
        match self {
            PaymentReference::OutTradeNo => "out_trade_no",
            PaymentReference::TradeNo => "trade_no",
        }
    }
}

fn default_gateway() -> String {
    "https://openapi.alipay.com/gateway.do".into()
}

fn default_timeout() -> String {
    "10s".into()
}

fn default_tolerance() -> String {
    "25h".into()
}

/// Reads `"500ms"`, `"10s"`, `"5m"`, `"25h"`.
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
