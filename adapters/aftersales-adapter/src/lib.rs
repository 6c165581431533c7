//! The shared contract between the aftersales engine and the systems it drives: the order
//! system, the warehouse (WMS), fulfillment (entitlements), payment and notification.
//!
//! Adapter crates depend on this crate and nothing heavier; it knows no HTTP client, no SQL,
//! no async runtime and no engine internals. It holds:
//!
//! - the five traits ([`OrderSystem`], [`Warehouse`], [`Fulfillment`], [`Payment`],
//!   [`Notifier`]) with typed requests and responses ([`types`]), optional actions
//!   defaulting to an `Unsupported` error, and the [`Capabilities`] each adapter declares;
//! - [`IdempotencyKey`], which every mutating call carries and every adapter forwards to
//!   the platform, so a repeat returns the first result and never moves money twice;
//! - [`AdapterError`], classified as transient, permanent, unknown outcome or unsupported:
//!   the engine decides retries from the class alone;
//! - [`InboundEvent`] and [`WebhookVerifier`] for answers that arrive later (asynchronous
//!   refunds, returns received at the warehouse);
//! - [`AdapterSet::dispatch`], the engine's only entry point: `"system.action"` and a JSON
//!   object in, [`ActionOutcome`] out, with fields exactly as in [`catalogue`];
//! - [`Registry`], which builds adapters from `{ kind, settings }` configuration.
//!
//! Start at [`catalogue::catalogue`], the list of every `system.action` a workflow may call,
//! then [`AdapterSet::dispatch`].
//!
//! Why one trait per system rather than one per platform: a business line binds each system
//! to a different platform (Shopify orders, ShipBob warehouse, Alipay payment), and the
//! validator checks capabilities per binding. Why JSON at the dispatch boundary: workflows
//! are data (TOML), so the engine cannot name Rust types; the typed layer underneath keeps
//! every adapter honest, and a unit test pins the JSON field names to the catalogue.

#![warn(missing_docs)]

pub mod catalogue;
mod described;
mod dispatch;
mod error;
mod event;
pub mod ids;
mod key;
mod registry;
mod traits;
pub mod types;

pub use dispatch::{ActionOutcome, AdapterSet, Poll, REFUND_COMPLETION_EVENTS};
pub use error::{AdapterError, BoxError, ErrorClass};
pub use event::{Headers, InboundEvent, WebhookError, WebhookVerifier, constant_time_eq};
pub use key::{IdempotencyKey, InvalidKey, MAX_KEY_LEN};
pub use registry::{
    AdapterConfig, AdapterSetConfig, BuildContext, Built, Factory, LineAdapters, Registry,
    RegistryError, Secret, VALIDATION_PLACEHOLDER,
};
pub use traits::{Capabilities, Fulfillment, Notifier, OrderSystem, Payment, Warehouse};
pub use types::{RefundLookup, RefundStatus};
