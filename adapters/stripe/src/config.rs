//! The settings of a `kind = "stripe"` adapter, as a business line writes them:
//!
//! ```toml
//! [adapters.payment]
//! kind = "stripe"
//! settings = { api_key_env = "STRIPE_SECRET_KEY", webhook_secret_env = "STRIPE_WEBHOOK_SECRET" }
//! ```

use std::time::Duration;

use serde::Deserialize;

/// The settings as written. Strict: a misspelt setting is an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct StripeSettings {
    /// The API root; `https://api.stripe.com` unless a test points it elsewhere.
    #[serde(default = "default_base_url")]
    pub(crate) base_url: String,
    /// The env var holding the secret key (`sk_live_...`); read with
    /// `BuildContext::secret("api_key_env")`.
    #[allow(dead_code)]
    pub(crate) api_key_env: String,
    /// The API version sent as `Stripe-Version`; the account's default when absent.
    #[serde(default)]
    pub(crate) api_version: Option<String>,
    /// One call's timeout, as `"10s"` or `"500ms"`.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: String,
    /// The env var holding the endpoint's signing secret (`whsec_...`); no webhooks when
    /// absent.
    #[serde(default)]
    pub(crate) webhook_secret_env: Option<String>,
    /// The env var holding the previous signing secret while a rotation is under way.
    #[serde(default)]
    pub(crate) webhook_previous_secret_env: Option<String>,
    /// How far a webhook's signed time may be from now, as `"5m"`.
    #[serde(default = "default_tolerance")]
    pub(crate) webhook_tolerance: String,
}

fn default_base_url() -> String {
    "https://api.stripe.com".into()
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
    }
}
