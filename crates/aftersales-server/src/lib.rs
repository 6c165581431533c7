//! The aftersales daemon's HTTP API.
//!
//! [`router`] builds the axum router over an [`AppState`]: the engine, the auth tokens and
//! the limits. Handlers only translate HTTP to engine calls and engine answers to JSON; every
//! error is an RFC 7807 problem with a stable code ([`problem::codes`]).
//!
//! Endpoints (all JSON, under `/v1`):
//!
//! | method and path | scope | what |
//! | --- | --- | --- |
//! | `POST /v1/instances` | submit | start a workflow instance; `Idempotency-Key` required |
//! | `GET /v1/instances` | read | list, with filters and a cursor |
//! | `GET /v1/instances/{id}` | read | one instance: status, what it waits on, until when |
//! | `GET /v1/instances/{id}/history` | read | its history, oldest first |
//! | `POST /v1/instances/{id}/signals/{name}` | operate | send a signal |
//! | `POST /v1/instances/{id}/cancel` | operate | ask it to cancel (compensates) |
//! | `POST /v1/events` | operate | deliver an external event by correlation key |
//! | `POST /v1/after-sales` | submit | a buyer's request: rules, refund, workflow; `Idempotency-Key` required |
//! | `POST /v1/after-sales/quote` | submit | the rules and the refund breakdown, nothing stored |
//! | `GET /v1/after-sales` | read | service orders, filtered by state, type, line, order, time |
//! | `GET /v1/after-sales/{id}` | read | one: state, lines, money, what it waits on until when |
//! | `GET /v1/after-sales/{id}/history` | read | its history |
//! | `POST /v1/after-sales/{id}/signals/{name}` | operate | merchant decision, buyer shipped, retention result |
//! | `POST /v1/after-sales/{id}/cancel` | operate | the buyer withdraws (compensates) |
//! | `GET /v1/business-lines` | read | the loaded business lines |
//! | `POST /v1/sales` | submit | units sold (a sales feed), the denominator of return rates |
//! | `GET /v1/analytics/return-rates` | read | rates by line, category, SKU and reason over a window, with alerts |
//! | `GET /v1/workflows` | read | deployed workflow versions |
//! | `GET /v1/workflows/{name}/graph` | read | Mermaid graph of a workflow |
//! | `GET /v1/openapi.json` | none | this API as OpenAPI 3, generated from the handlers |
//! | `GET /healthz`, `GET /readyz` | none | liveness; readiness (the store answers) |
//! | `GET /metrics` | none | Prometheus text, when the recorder is installed |

pub mod after_sales;
pub mod api;
pub mod auth;
pub mod json;
pub mod openapi;
pub mod path;
pub mod problem;

pub use api::{AppState, router};
pub use auth::{Auth, Scope, Token};
pub use problem::Problem;

/// Installs the process-wide Prometheus recorder (once; later calls return the same handle)
/// with latency buckets suited to platform calls.
pub fn install_metrics() -> Result<metrics_exporter_prometheus::PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<metrics_exporter_prometheus::PrometheusHandle> =
        std::sync::OnceLock::new();
    static INIT: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let _guard = INIT
        .lock()
        .map_err(|_| "metrics init lock poisoned".to_owned())?;
    if let Some(h) = HANDLE.get() {
        return Ok(h.clone());
    }
    let handle = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
        ])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())?;
    let _ = HANDLE.set(handle.clone());
    Ok(handle)
}
