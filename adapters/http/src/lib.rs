//! A generic REST adapter: any catalogue action (`payment.refund`,
//! `warehouse.intercept_shipment`, ...) mapped to one HTTP call by configuration alone, for
//! platforms with a plain JSON API and no adapter crate of their own.
//!
//! Knows no platform, no engine and no retries: it makes one call per action with a timeout
//! and classifies the failure, as every adapter does. Register it with [`register`], then
//! configure `kind = "http"` with `base_url`, auth, `idempotency_header` and one table per
//! action (method, path template, body template, JSON pointers into the answer). The full
//! reference is in this crate's README and in `docs/adapters.md`.
//!
//! How a call goes:
//!
//! 1. The typed request is turned back into the action's JSON input (the catalogue's field
//!    names), and the action's templates build the path, query and body from it:
//!    `path = "/v1/payments/{payment_id}/refunds"`,
//!    `body = { amount = "{amount.minor}", currency = "{amount.currency}" }`.
//! 2. Mutating calls carry the engine's idempotency key in `idempotency_header` (or wherever
//!    `{idempotency_key}` is written); a configuration that forwards no key for a mutating
//!    action is refused when the adapter is built.
//! 3. The answer's JSON is mapped to the action's outputs by JSON pointers (RFC 6901), with
//!    optional value maps (`processing` → `pending`, which is how an asynchronous refund is
//!    detected), and decoded into the typed output.
//!
//! Failures are classified from the HTTP exchange alone: `429` and `5xx` are transient
//! (`Retry-After` in seconds or as an HTTP date is honoured); `408`, `504`, a timeout or a
//! connection lost after sending are an unknown outcome for mutating calls (the platform may
//! have acted: the engine retries with the same key or asks the status) and transient for
//! reads; other `4xx` are permanent; a `2xx` whose body cannot be read is an unknown outcome
//! for mutating calls and transient for reads. Secrets never reach logs or `Debug` output.

#![warn(missing_docs)]

mod client;
mod config;
mod error;
mod impls;
mod template;

use std::sync::Arc;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::{Built, Registry};

use crate::client::HttpAdapter;

/// The adapter kind this crate registers under.
pub const KIND: &str = "http";

/// Registers the generic REST adapter as `kind = "http"`.
///
/// The adapter serves each system for which at least one action is configured; binding it
/// to a system with no configured action is a build error (`MissingSystem`). Settings
/// errors name the setting and the action (`actions."payment.refund".body: {amont.minor}
/// names no input of payment.refund`), and are all reported at once.
pub fn register(registry: &mut Registry) {
    registry.register(KIND, |cx| {
        let plan = config::plan(cx)?;
        let adapter = Arc::new(HttpAdapter::new(plan)?);
        let serves = |system: System| adapter.serves(system);
        Ok(Built {
            order: serves(System::Order).then(|| adapter.clone() as _),
            warehouse: serves(System::Warehouse).then(|| adapter.clone() as _),
            fulfillment: serves(System::Fulfillment).then(|| adapter.clone() as _),
            payment: serves(System::Payment).then(|| adapter.clone() as _),
            notify: serves(System::Notify).then(|| adapter.clone() as _),
            webhooks: None,
        })
    });
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use aftersales_adapter::{AdapterConfig, Registry};

    use super::*;

    #[test]
    fn debug_output_never_shows_secrets() {
        let seen = Arc::new(Mutex::new(String::new()));
        let slot = seen.clone();
        let mut registry = Registry::new();
        registry.register("probe", move |cx| {
            let adapter = HttpAdapter::new(config::plan(cx)?)?;
            *slot.lock().unwrap() = format!("{adapter:?}");
            Ok(Built::default())
        });
        for (auth, env_setting) in [
            ("bearer", "token_env"),
            ("hmac", "secret_env"),
            ("basic", "password_env"),
        ] {
            let mut settings = serde_json::json!({
                "base_url": "https://pay.example",
                "auth": auth,
                "idempotency_header": "Idempotency-Key",
                "actions": {"notify.send": {"method": "POST", "path": "/n"}},
            });
            settings[env_setting] = "SECRET_VAR".into();
            if auth == "basic" {
                settings["username"] = "shop".into();
            }
            let env = |_: &str| Some("hunter2-very-secret".to_owned());
            registry
                .build(&AdapterConfig::with_settings("probe", settings), &env)
                .unwrap();
            let debug = seen.lock().unwrap().clone();
            assert!(!debug.contains("hunter2"), "{debug}");
            assert!(debug.contains("***"), "{debug}");
        }
    }
}
