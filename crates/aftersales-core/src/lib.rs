//! Workflow model and engine state machine. Knows no SQL, no HTTP, no platform names.
//!
//! A workflow file goes through [`parse::parse_workflow`] (TOML with positions, every
//! problem reported with file:line:column) and [`validate::validate`] (references, types,
//! saga shape, reachability, loops), which checks actions against a [`catalogue::Catalogue`]
//! handed in by the caller. [`graph`] renders a workflow as Mermaid or Graphviz.

pub mod catalogue;
pub mod diag;
pub mod duration;
pub mod engine;
pub mod expr;
pub mod graph;
pub mod model;
pub mod parse;
pub mod store;
pub mod validate;
