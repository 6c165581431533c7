//! The adapter kinds this binary can build: one line per platform, each behind its
//! `adapter-<name>` feature. Adding a platform adds a line here and nothing else.

use aftersales_adapter::Registry;

/// The registry of every adapter kind compiled in.
pub fn registry() -> Registry {
    #[allow(unused_mut)] // Empty when built without any adapter feature.
    let mut registry = Registry::new();
    #[cfg(feature = "adapter-sim")]
    aftersales_adapter_sim::register(&mut registry);
    #[cfg(feature = "adapter-http")]
    aftersales_adapter_http::register(&mut registry);
    registry
}
