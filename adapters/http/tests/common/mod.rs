//! Shared helpers for the HTTP adapter's integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use aftersales_adapter::{
    AdapterConfig, Built, IdempotencyKey, Payment, Registry, RegistryError, Warehouse,
};
use aftersales_money::{Currency, Money};
use serde_json::Value;

pub fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

#[track_caller]
pub fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::new(text).expect("valid test key")
}

/// Reads TOML settings into the JSON value `AdapterConfig` carries, replacing `BASE` with
/// `base_url`.
#[track_caller]
pub fn settings(toml_text: &str, base_url: &str) -> Value {
    let text = toml_text.replace("BASE", base_url);
    toml::from_str::<Value>(&text).expect("test settings are TOML")
}

/// Builds a `kind = "http"` adapter from settings, with `env` as the environment.
pub fn build(settings: Value, env: &[(&str, &str)]) -> Result<Built, RegistryError> {
    let mut registry = Registry::new();
    aftersales_adapter_http::register(&mut registry);
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    let lookup = move |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());
    registry.build(&AdapterConfig::with_settings("http", settings), &lookup)
}

#[track_caller]
pub fn payment(settings: Value, env: &[(&str, &str)]) -> Arc<dyn Payment> {
    build(settings, env)
        .unwrap()
        .payment
        .expect("the adapter serves payment")
}

#[track_caller]
pub fn warehouse(settings: Value) -> Arc<dyn Warehouse> {
    build(settings, &[])
        .unwrap()
        .warehouse
        .expect("the adapter serves the warehouse")
}

/// The error message of a build that must fail.
#[track_caller]
pub fn build_error(settings: Value, env: &[(&str, &str)]) -> String {
    match build(settings, env) {
        Ok(b) => panic!("expected a configuration error, built {b:?}"),
        Err(e) => e.to_string(),
    }
}

/// The payment settings of the reference payment API (the testkit's `MockPaymentApi`),
/// as `docs/adapters.md` shows them.
pub const REFERENCE_PAYMENT: &str = r#"
base_url = "BASE"
timeout = "1s"
idempotency_header = "Idempotency-Key"
auth = "bearer"
token_env = "ACME_TOKEN"
error_message = "/error/message"

[actions."payment.refund"]
method = "POST"
path = "/v1/payments/{payment_id}/refunds"
body = { amount = "{amount.minor}", currency = "{amount.currency}", reason = "{reason}", metadata = { service_order_id = "{service_order_id}" } }
outputs = { refund_id = "/id", status = { pointer = "/status", map = { processing = "pending" } } }

[actions."payment.refund_status"]
method = "GET"
path = "/v1/refunds/{refund_id}"
outputs = { refund_id = "/id", status = { pointer = "/status", map = { processing = "pending" } } }
on_status = { 404 = { status = "not_found" } }

[actions."payment.refund_status".by_key]
method = "GET"
path = "/v1/payments/{payment_id}/refunds/by-key/{request_key}"
"#;
