//! The shared contract between the aftersales engine and the systems it drives: the order
//! system, the warehouse (WMS), fulfillment (entitlements), payment and notification.
//!
//! Adapter crates depend on this crate and nothing heavier; it knows no HTTP client, no SQL
//! and no engine internals. Start at [`catalogue::catalogue`], the list of every
//! `system.action` a workflow may call, with its typed inputs and outputs.

#![warn(missing_docs)]

pub mod catalogue;
