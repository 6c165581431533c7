//! The settings of a `kind = "shipbob"` adapter, as a business line writes them:
//!
//! ```toml
//! [adapters.warehouse]
//! kind = "shipbob"
//! settings = { token_env = "SHIPBOB_TOKEN", channel_id = 12345, webhook_secret_env = "SHIPBOB_WEBHOOK_SECRET" }
//! ```

use std::time::Duration;

use serde::Deserialize;

/// The settings as written. Strict: a misspelt setting is an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShipBobSettings {
    /// The API root; `https://api.shipbob.com` unless a test or the sandbox points elsewhere.
    #[serde(default = "default_base_url")]
    pub(crate) base_url: String,
    /// The dated API version, the first path segment (`2026-01`).
    #[serde(default = "default_api_version")]
    pub(crate) api_version: String,
    /// The env var holding the Personal Access Token (sent as a bearer token); read with
    /// `BuildContext::secret("token_env")`.
    #[allow(dead_code)]
    pub(crate) token_env: String,
    /// The channel with write scopes, sent as `shipbob_channel_id`.
    pub(crate) channel_id: u64,
    /// The fulfillment center returns go to; the original shipment's center when absent.
    #[serde(default)]
    pub(crate) fulfillment_center_id: Option<u64>,
    /// What ShipBob does with returned goods: `Restock` (the default), `Quarantine`,
    /// `Dispose` or `Default` (the merchant's default action).
    #[serde(default = "default_requested_action")]
    pub(crate) requested_action: String,
    /// One call's timeout, as `"10s"` or `"500ms"`.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: String,
    /// The env var holding the webhook subscription's secret (`whsec_...`); no webhooks when
    /// absent.
    #[serde(default)]
    pub(crate) webhook_secret_env: Option<String>,
    /// The env var holding the previous webhook secret while a rotation is under way.
    #[serde(default)]
    pub(crate) webhook_previous_secret_env: Option<String>,
    /// How far a webhook's `webhook-timestamp` may be from now, as `"5m"`.
    #[serde(default = "default_tolerance")]
    pub(crate) webhook_tolerance: String,
}

fn default_base_url() -> String {
    "https://api.shipbob.com".into()
}

fn default_api_version() -> String {
    "2026-01".into()
}

fn default_requested_action() -> String {
    "Restock".into()
}

fn default_timeout() -> String {
    "10s".into()
}

fn default_tolerance() -> String {
    "5m".into()
}

/// The return actions ShipBob knows.
pub(crate) const RETURN_ACTIONS: &[&str] = &["Default", "Restock", "Quarantine", "Dispose"];

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
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn settings_are_strict_and_defaulted() {
        let s: ShipBobSettings =
            serde_json::from_value(serde_json::json!({"token_env": "T", "channel_id": 7}))
                .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s.api_version, "2026-01");
        assert_eq!(s.requested_action, "Restock");
        assert!(
            serde_json::from_value::<ShipBobSettings>(
                serde_json::json!({"token_env": "T", "channel_id": 7, "chanel": 1})
            )
            .is_err()
        );
    }
}
