//! The settings of a `kind = "acme"` adapter, as a business line writes them:
//!
//! ```toml
//! [adapters.payment]
//! kind = "acme"
//! settings = { base_url = "https://api.acmepay.example", api_key_env = "ACME_PAY_KEY" }
//! ```

use std::time::Duration;

use serde::Deserialize;

/// The settings as written. Strict: a misspelt setting is an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcmeSettings {
    /// The API root, such as `https://api.acmepay.example`.
    pub(crate) base_url: String,
    /// The env var holding the API key; read with `BuildContext::secret("api_key_env")`.
    #[allow(dead_code)]
    pub(crate) api_key_env: String,
    /// One call's timeout, as `"10s"` or `"500ms"`.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: String,
    /// The env var holding the webhook signing secret; no webhooks when absent.
    #[serde(default)]
    pub(crate) webhook_secret_env: Option<String>,
    /// How far a webhook's signed time may be from now, as `"5m"`.
    #[serde(default = "default_tolerance")]
    pub(crate) webhook_tolerance: String,
}

fn default_timeout() -> String {
    "10s".into()
}

fn default_tolerance() -> String {
    "5m".into()
}

/// Reads `"500ms"`, `"10s"`, `"5m"`.
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
        _ => Err(format!("expected a unit ms, s or m in \"{text}\"")),
    }
}
