//! The adapter kinds compiled into aftersales.
//!
//! Adding a platform touches its own crate under `adapters/`, one feature and one line here,
//! and configuration — nothing in `crates/`. Each kind sits behind a cargo feature named after
//! it, so a deployment compiles only the platforms it uses.

use aftersales_adapter::Registry;

/// The registry of every adapter kind compiled in.
pub fn builtin() -> Registry {
    #[allow(unused_mut)] // Empty when built without any adapter feature.
    let mut registry = Registry::new();
    #[cfg(feature = "sim")]
    aftersales_adapter_sim::register(&mut registry);
    #[cfg(feature = "http")]
    aftersales_adapter_http::register(&mut registry);
    #[cfg(feature = "example")]
    aftersales_adapter_example::register(&mut registry);
    #[cfg(feature = "stripe")]
    aftersales_adapter_stripe::register(&mut registry);
    #[cfg(feature = "wechatpay")]
    aftersales_adapter_wechatpay::register(&mut registry);
    #[cfg(feature = "alipay")]
    aftersales_adapter_alipay::register(&mut registry);
    #[cfg(feature = "shipbob")]
    aftersales_adapter_shipbob::register(&mut registry);
    #[cfg(feature = "shopify")]
    aftersales_adapter_shopify::register(&mut registry);
    registry
}

#[cfg(test)]
mod tests {
    #[test]
    fn default_kinds_are_registered() {
        let kinds = super::builtin().kinds();
        #[cfg(feature = "sim")]
        assert!(kinds.iter().any(|k| k == "sim"), "{kinds:?}");
        #[cfg(feature = "http")]
        assert!(kinds.iter().any(|k| k == "http"), "{kinds:?}");
        #[cfg(feature = "example")]
        assert!(kinds.iter().any(|k| k == "acme"), "{kinds:?}");
        #[cfg(feature = "stripe")]
        assert!(kinds.iter().any(|k| k == "stripe"), "{kinds:?}");
        #[cfg(feature = "wechatpay")]
        assert!(kinds.iter().any(|k| k == "wechatpay"), "{kinds:?}");
        #[cfg(feature = "alipay")]
        assert!(kinds.iter().any(|k| k == "alipay"), "{kinds:?}");
        #[cfg(feature = "shipbob")]
        assert!(kinds.iter().any(|k| k == "shipbob"), "{kinds:?}");
        #[cfg(feature = "shopify")]
        assert!(kinds.iter().any(|k| k == "shopify"), "{kinds:?}");
    }
}
