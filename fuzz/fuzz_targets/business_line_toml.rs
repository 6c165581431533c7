//! Business-line files: any bytes through the loader (each section decoded, then
//! cross-checked against the shipped workflows and the simulator's adapter kind, building
//! the adapters for validation) and the diagnostic renderer. None may panic.

#![no_main]

use aftersales_adapter::Registry;
use aftersales_core::diag::{Source, render_human};
use aftersales_core::model::Workflow;
use aftersales_core::validate::check_sources as check_workflows;
use aftersales_runtime::business_line::{CrossCheck, check_sources, is_business_line};
use libfuzzer_sys::fuzz_target;

/// The shipped workflows the lines refer to, compiled in so the target reads no files.
const WORKFLOWS: &[(&str, &str)] = &[
    (
        "physical/cancel_after_payment.toml",
        include_str!("../../workflows/physical/cancel_after_payment.toml"),
    ),
    (
        "physical/exchange.toml",
        include_str!("../../workflows/physical/exchange.toml"),
    ),
    (
        "physical/refund_only.toml",
        include_str!("../../workflows/physical/refund_only.toml"),
    ),
    (
        "physical/return_refund.toml",
        include_str!("../../workflows/physical/return_refund.toml"),
    ),
    (
        "virtual/exchange.toml",
        include_str!("../../workflows/virtual/exchange.toml"),
    ),
    (
        "virtual/refund_revoke.toml",
        include_str!("../../workflows/virtual/refund_revoke.toml"),
    ),
    (
        "bundle/return_refund.toml",
        include_str!("../../workflows/bundle/return_refund.toml"),
    ),
];

thread_local! {
    // Parsed once per process: libFuzzer runs the target many times on one thread.
    static SHIPPED: Vec<Workflow> = {
        let sources: Vec<Source> = WORKFLOWS.iter().map(|(n, t)| Source::new(n, t)).collect();
        check_workflows(&sources, &aftersales_runtime::catalogue::builtin(), true)
            .workflows
            .into_iter()
            .map(|(_, w)| w)
            .collect()
    };
    static REGISTRY: Registry = {
        let mut r = Registry::new();
        aftersales_adapter_sim::register(&mut r);
        r
    };
}

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let _ = is_business_line(&text);
    SHIPPED.with(|shipped| {
        REGISTRY.with(|registry| {
            let workflows: Vec<&Workflow> = shipped.iter().collect();
            let cx = CrossCheck {
                workflows: &workflows,
                registry,
                refs_must_resolve: true,
            };
            let report = check_sources(&[Source::new("fuzz-line.toml", &text)], &cx);
            let _ = render_human(&report.diagnostics);
            for (_, line) in &report.lines {
                let _ = line.instance_params();
            }
        })
    });
});
