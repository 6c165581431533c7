//! The settings of a `kind = "shopify"` adapter, as a business line writes them:
//!
//! ```toml
//! [adapters.order]
//! kind = "shopify"
//! settings = { shop = "example.myshopify.com", access_token_env = "SHOPIFY_ADMIN_TOKEN", webhook_secret_env = "SHOPIFY_CLIENT_SECRET" }
//! ```

use std::time::Duration;

use serde::Deserialize;

/// The settings as written. Strict: a misspelt setting is an error, not a silent default.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ShopifySettings {
    /// The shop's `*.myshopify.com` domain.
    pub(crate) shop: String,
    /// The API root; `https://{shop}` unless a test points it elsewhere.
    #[serde(default)]
    pub(crate) base_url: Option<String>,
    /// The Admin API version in the path (`2026-01`, the first with `@idempotent` on
    /// `refundCreate`).
    #[serde(default = "default_api_version")]
    pub(crate) api_version: String,
    /// The env var holding the Admin API access token (`shpat_...`), sent as
    /// `X-Shopify-Access-Token`; read with `BuildContext::secret("access_token_env")`.
    #[allow(dead_code)]
    pub(crate) access_token_env: String,
    /// The prefix of the order tags that mark after-sales (`aftersales` gives
    /// `aftersales:so-1`).
    #[serde(default = "default_tag_prefix")]
    pub(crate) tag_prefix: String,
    /// Whether Shopify emails the buyer about a refund recorded by `order.report_refund`, a
    /// return approved or declined, and an order cancelled.
    #[serde(default)]
    pub(crate) notify_customer: bool,
    /// How `order.report_refund` records a refund paid by the line's payment adapter.
    #[serde(default)]
    pub(crate) refunds: RefundMode,
    /// One call's timeout, as `"10s"` or `"500ms"`.
    #[serde(default = "default_timeout")]
    pub(crate) timeout: String,
    /// The env var holding the app's client secret, which signs webhooks; no webhooks when
    /// absent.
    #[serde(default)]
    pub(crate) webhook_secret_env: Option<String>,
    /// The env var holding the previous client secret while a rotation is under way.
    #[serde(default)]
    pub(crate) webhook_previous_secret_env: Option<String>,
    /// How far `X-Shopify-Triggered-At` may be from now, as `"5m"`.
    #[serde(default = "default_tolerance")]
    pub(crate) webhook_tolerance: String,
}

/// How `order.report_refund` records a refund.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RefundMode {
    /// A metafield on the order (`aftersales.refund-<key>`: amount, refund id, service
    /// order): no money moves. For lines whose payment adapter (Stripe, ...) pays the buyer.
    #[default]
    Record,
    /// `refundCreate` with transactions against the order's payments: on a
    /// Shopify-processed gateway this **moves money**, so the validator refuses a line that
    /// also refunds through `payment.refund` (AS-BL-0109).
    Transactions,
}

fn default_api_version() -> String {
    "2026-01".into()
}

fn default_tag_prefix() -> String {
    "aftersales".into()
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
        assert!(parse_duration("5").is_err());
    }
}
