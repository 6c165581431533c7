//! Wires the engine to the adapters. The core crate knows no adapters and the adapter crate
//! knows no engine; this crate sits above both.
//!
//! [`AdapterDispatcher`] implements the engine's [`Dispatcher`]: it finds the business
//! line's [`AdapterSet`], checks the idempotency key, calls
//! [`AdapterSet::dispatch`], and translates the adapter's answer into the engine's
//! [`CallResult`] — error classes included, so the engine's retry policy sees exactly what
//! the platform said.

pub mod business_line;
pub mod catalogue;
pub mod service;

use std::collections::HashMap;
use std::sync::Arc;

use aftersales_adapter::{ActionOutcome, AdapterError, AdapterSet, ErrorClass, IdempotencyKey};
use aftersales_core::engine::{ActionCall, CallResult, Dispatcher, FailureClass};
use async_trait::async_trait;
use serde_json::Value;

/// The dispatcher over every business line's adapter set.
#[derive(Clone, Default)]
pub struct AdapterDispatcher {
    lines: HashMap<String, Arc<AdapterSet>>,
}

impl AdapterDispatcher {
    /// An empty dispatcher.
    pub fn new() -> AdapterDispatcher {
        AdapterDispatcher::default()
    }

    /// Binds a business line to its adapter set.
    pub fn bind(&mut self, business_line: impl Into<String>, set: Arc<AdapterSet>) {
        self.lines.insert(business_line.into(), set);
    }

    /// The adapter set of a business line.
    pub fn set(&self, business_line: &str) -> Option<&Arc<AdapterSet>> {
        self.lines.get(business_line)
    }
}

/// Translates an adapter's failure into the engine's terms.
pub fn failure(e: &AdapterError) -> CallResult {
    let class = match &e.class {
        ErrorClass::Transient { retry_after } => FailureClass::Transient {
            retry_after_ms: retry_after.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        },
        ErrorClass::UnknownOutcome => FailureClass::UnknownOutcome,
        ErrorClass::NotFound => FailureClass::Permanent,
        // Unsupported actions, and any class added later, are not retried blindly.
        _ => FailureClass::Permanent,
    };
    CallResult::Failed {
        class,
        message: e.to_string(),
    }
}

/// Translates an adapter's answer into the engine's terms.
pub fn outcome(o: ActionOutcome) -> CallResult {
    match o {
        ActionOutcome::Done(m) => CallResult::Done(Value::Object(m)),
        ActionOutcome::Pending {
            correlation_key,
            output,
            poll,
            completion_events,
        } => CallResult::Pending {
            correlation: correlation_key,
            output: Value::Object(output),
            poll: poll.map(|p| (p.action.to_owned(), p.input)),
            events: completion_events.iter().map(|e| (*e).to_owned()).collect(),
        },
        #[allow(unreachable_patterns)]
        _ => CallResult::Failed {
            class: FailureClass::Permanent,
            message: "the adapter answered in a way this engine does not understand".to_owned(),
        },
    }
}

#[async_trait]
impl Dispatcher for AdapterDispatcher {
    async fn dispatch(&self, call: ActionCall) -> CallResult {
        let Some(set) = self.lines.get(&call.business_line) else {
            return CallResult::Failed {
                class: FailureClass::Permanent,
                message: format!(
                    "business line `{}` has no adapters configured",
                    call.business_line
                ),
            };
        };
        let key = match IdempotencyKey::new(call.key.clone()) {
            Ok(k) => k,
            Err(e) => {
                return CallResult::Failed {
                    class: FailureClass::Permanent,
                    message: format!("idempotency key refused: {e}"),
                };
            }
        };
        match set.dispatch(&call.action, &call.input, &key).await {
            Ok(o) => outcome(o),
            Err(e) => {
                tracing::debug!(instance = %call.instance_id, action = %call.action, error = %e, "adapter call failed");
                failure(&e)
            }
        }
    }
}
