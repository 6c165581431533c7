//! The shipped business lines load and cross-check clean against the shipped workflows and
//! the simulator; the cross-checks catch what a file alone cannot show (adapters that lack
//! an action, adapters bound to a system they do not serve) and report every problem.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use aftersales_adapter::catalogue::System;
use aftersales_adapter::types::{Refund, RefundLookup, RefundOutcome, RefundState};
use aftersales_adapter::{AdapterError, Built, Capabilities, IdempotencyKey, Payment, Registry};
use aftersales_core::diag::{Diagnostic, Source};
use aftersales_core::model::Workflow;
use aftersales_core::validate::check_sources as check_workflows;
use aftersales_domain::{AfterSalesType, GoodsKind, RestockingFee, ShippingInsurance};
use aftersales_runtime::AdapterDispatcher;
use aftersales_runtime::business_line::{
    BusinessLineError, CrossCheck, WorkflowRef, check_sources, codes, load_dir,
};
use async_trait::async_trait;
use serde_json::json;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Every shipped workflow, parsed and validated.
fn shipped_workflows() -> Vec<Workflow> {
    let mut texts = Vec::new();
    for kind in ["physical", "virtual", "bundle"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("workflows").join(kind))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            texts.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    let sources: Vec<Source> = texts.iter().map(|(n, t)| Source::new(n, t)).collect();
    let report = check_workflows(&sources, &aftersales_runtime::catalogue::builtin(), true);
    assert!(report.is_ok(), "{:#?}", report.diagnostics);
    report.workflows.into_iter().map(|(_, w)| w).collect()
}

/// A payment adapter that refunds but cannot charge: enough to show the capability check.
struct RefundsOnly;

#[async_trait]
impl Payment for RefundsOnly {
    fn platform(&self) -> &'static str {
        "refunds_only"
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities::required(System::Payment)
    }

    async fn refund(
        &self,
        _req: &Refund,
        _key: &IdempotencyKey,
    ) -> Result<RefundOutcome, AdapterError> {
        Err(AdapterError::unsupported("refunds_only", "payment.refund"))
    }

    async fn refund_status(&self, _lookup: &RefundLookup) -> Result<RefundState, AdapterError> {
        Err(AdapterError::unsupported(
            "refunds_only",
            "payment.refund_status",
        ))
    }
}

fn registry() -> Registry {
    let mut r = Registry::new();
    aftersales_adapter_sim::register(&mut r);
    // An order system whose refund report pays the buyer itself (Shopify's
    // `refunds = "transactions"`); only its capabilities matter here.
    r.register("paying_orders", |_| {
        Ok(Built::described(
            "paying_orders",
            System::Order,
            Capabilities::all(System::Order).with_money_moving("order.report_refund"),
        ))
    });
    r.register("refunds_only", |_| {
        Ok(Built {
            payment: Some(Arc::new(RefundsOnly)),
            ..Built::default()
        })
    });
    r
}

fn codes_of(diags: &[Diagnostic]) -> Vec<&'static str> {
    diags.iter().map(|d| d.code).collect()
}

#[test]
fn shipped_lines_load_and_cross_check_clean() {
    let workflows = shipped_workflows();
    let refs: Vec<&Workflow> = workflows.iter().collect();
    let registry = registry();
    let cx = CrossCheck {
        workflows: &refs,
        registry: &registry,
        refs_must_resolve: true,
    };
    let report = load_dir(&root().join("config/business-lines"), &cx).unwrap();
    assert!(report.diagnostics.is_empty(), "{:#?}", report.diagnostics);
    let ids: Vec<&str> = report.lines.iter().map(|(_, l)| l.id.as_str()).collect();
    assert_eq!(
        ids,
        [
            "apparel",
            "course_with_textbook",
            "electronics_3c",
            "membership",
            "online_courses"
        ]
    );
    let line = |id: &str| {
        &report
            .lines
            .iter()
            .find(|(_, l)| l.id.as_str() == id)
            .unwrap()
            .1
    };

    let apparel = line("apparel");
    assert_eq!(apparel.goods, GoodsKind::Physical);
    assert_eq!(apparel.rules.no_reason_window_days, 7);
    assert_eq!(apparel.return_rate.max_bp, 2500);
    assert_eq!(apparel.return_rate.business_line.as_str(), "apparel");
    assert!(matches!(
        apparel.rules.shipping_insurance,
        ShippingInsurance::On { .. }
    ));
    assert_eq!(
        apparel.workflow(AfterSalesType::ReturnRefund),
        Some(&WorkflowRef::parse("physical.return_refund@1").unwrap())
    );
    assert_eq!(
        apparel.workflow(AfterSalesType::RefundOnly),
        Some(&WorkflowRef::parse("physical.refund_only@1").unwrap())
    );
    assert_eq!(
        apparel.instance_params(),
        json!({
            "too_late": "carrier_intercept",
            "merchant_response": "48h",
            "buyer_ship_within": "7d",
            "receipt_within": "10d",
            "retention": false,
        })
    );

    let electronics = line("electronics_3c");
    assert_eq!(electronics.return_rate.max_bp, 300);
    assert_eq!(electronics.rules.restocking_fee, RestockingFee::None);
    assert!(!electronics.rules.non_returnable.is_empty());

    let courses = line("online_courses");
    assert_eq!(courses.goods, GoodsKind::Virtual);
    assert_eq!(courses.rules.consumed_threshold_bp, 3000);
    assert_eq!(courses.instance_params(), json!({ "retention": false }));

    assert_eq!(line("membership").goods, GoodsKind::Virtual);
    let bundle = line("course_with_textbook");
    assert_eq!(bundle.goods, GoodsKind::Bundle);
    assert_eq!(
        bundle.workflow(AfterSalesType::ReturnRefund).unwrap().name,
        "bundle.return_refund"
    );

    // Every line's adapters build, so the dispatcher can serve them all.
    let mut dispatcher = AdapterDispatcher::new();
    for (_, l) in &report.lines {
        let set = l.build_adapters(&registry, &|_| None).unwrap();
        dispatcher.bind(l.id.as_str(), Arc::new(set));
    }
    assert!(dispatcher.set("membership").is_some());
}

fn apparel_with(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(root().join("config/business-lines/apparel.toml")).unwrap();
    assert!(text.contains(from), "{from}");
    text.replacen(from, to, 1)
}

fn check(text: &str, workflows: &[&Workflow]) -> Vec<Diagnostic> {
    let registry = registry();
    let cx = CrossCheck {
        workflows,
        registry: &registry,
        refs_must_resolve: true,
    };
    check_sources(&[Source::new("line.toml", text)], &cx).diagnostics
}

#[test]
fn an_adapter_lacking_an_action_a_workflow_calls_is_refused() {
    let workflows = shipped_workflows();
    let refs: Vec<&Workflow> = workflows.iter().collect();
    // physical.exchange charges the buyer's postage and physical.return_refund claims
    // shipping insurance; this payment adapter can only refund.
    let text = apparel_with(
        "[adapters.payment]\nkind = \"sim\"",
        "[adapters.payment]\nkind = \"refunds_only\"",
    );
    let diags = check(&text, &refs);
    assert_eq!(
        codes_of(&diags),
        [codes::UNSUPPORTED_ACTION, codes::UNSUPPORTED_ACTION],
        "{diags:#?}"
    );
    assert_eq!(
        diags[0].message,
        "adapter `refunds_only` does not support `payment.charge`, which \
         `physical.exchange@1` (exchange) call(s)"
    );
    assert_eq!(diags[0].source_line, "kind = \"refunds_only\"");
    assert!(
        diags[1]
            .message
            .starts_with("adapter `refunds_only` does not support `payment.insurance_claim`"),
        "{}",
        diags[1].message
    );
}

#[test]
fn an_order_system_that_pays_beside_a_refunding_payment_adapter_is_refused() {
    let workflows = shipped_workflows();
    let refs: Vec<&Workflow> = workflows.iter().collect();
    let text = apparel_with(
        "[adapters.order]\nkind = \"sim\"",
        "[adapters.order]\nkind = \"paying_orders\"",
    );
    let diags = check(&text, &refs);
    assert_eq!(codes_of(&diags), [codes::TWO_REFUND_PATHS], "{diags:#?}");
    assert_eq!(
        diags[0].message,
        "adapter `paying_orders` moves money in `order.report_refund`, and the line's \
         payment adapter refunds too (`payment.refund`): the buyer would be paid twice"
    );
    assert_eq!(diags[0].source_line, "kind = \"paying_orders\"");
}

#[test]
fn an_adapter_bound_to_a_system_it_does_not_serve_is_refused() {
    let workflows = shipped_workflows();
    let refs: Vec<&Workflow> = workflows.iter().collect();
    let text = apparel_with(
        "[adapters.order]\nkind = \"sim\"",
        "[adapters.order]\nkind = \"refunds_only\"",
    );
    let diags = check(&text, &refs);
    assert_eq!(codes_of(&diags), [codes::ADAPTER], "{diags:#?}");
    assert_eq!(
        diags[0].message,
        "[adapters.order]: adapter `refunds_only` does not serve the order system"
    );
}

#[test]
fn cross_checks_report_every_problem_at_once() {
    let workflows = shipped_workflows();
    let refs: Vec<&Workflow> = workflows.iter().collect();
    let text = apparel_with(
        "return_refund = \"physical.return_refund@1\"",
        "return_refund = \"physical.return_refund@7\"",
    )
    .replacen(
        "exchange = \"physical.exchange@1\"",
        "exchange = \"virtual.exchange@1\"",
        1,
    )
    .replacen("too_late = \"carrier_intercept\"", "too_late = 42", 1)
    .replacen(
        "[adapters.notify]\nkind = \"sim\"",
        "[adapters.notify]\nkind = \"smtp\"",
        1,
    );
    let diags = check(&text, &refs);
    let mut found = codes_of(&diags);
    found.sort_unstable();
    assert_eq!(
        found,
        [
            codes::UNKNOWN_WORKFLOW,
            codes::WORKFLOW_PARAM,
            codes::GOODS_KIND_MISMATCH,
            codes::ADAPTER,
        ],
        "{diags:#?}"
    );
    for d in &diags {
        assert!(d.line > 0 && d.column > 0, "{d:#?}");
    }
}

#[test]
fn a_bundle_passes_its_parameters_to_the_workflows_it_calls() {
    let workflows = shipped_workflows();
    let refs: Vec<&Workflow> = workflows.iter().collect();
    let text =
        std::fs::read_to_string(root().join("config/business-lines/course_with_textbook.toml"))
            .unwrap()
            .replacen(
                "merchant_response = \"48h\"",
                "merchant_response = \"soon\"",
                1,
            );
    // A bad duration is refused at load, before any workflow sees it.
    let diags = check(&text, &refs);
    assert_eq!(codes_of(&diags), [codes::BAD_DURATION], "{diags:#?}");

    // With the timeout set right, the bundle's timeouts reach the physical return it calls:
    // nothing is reported as unread.
    let text =
        std::fs::read_to_string(root().join("config/business-lines/course_with_textbook.toml"))
            .unwrap();
    assert!(check(&text, &refs).is_empty());
}

#[test]
fn load_dir_refuses_a_directory_with_errors_and_renders_them() {
    let dir = std::env::temp_dir().join(format!("aftersales-bl-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let text = apparel_with("no_reason_window_days = 7", "no_reason_window_dayz = 7");
    std::fs::write(dir.join("apparel.toml"), text).unwrap();
    std::fs::write(dir.join("README.md"), "not a line").unwrap();
    let workflows = shipped_workflows();
    let refs: Vec<&Workflow> = workflows.iter().collect();
    let registry = registry();
    let cx = CrossCheck {
        workflows: &refs,
        registry: &registry,
        refs_must_resolve: true,
    };
    let err = load_dir(&dir, &cx).unwrap_err();
    let BusinessLineError::Invalid {
        count,
        diagnostics,
        rendered,
    } = &err
    else {
        panic!("{err}");
    };
    assert_eq!(*count, 1);
    assert_eq!(diagnostics[0].code, codes::UNKNOWN_FIELD);
    assert!(
        rendered.contains(
            "apparel.toml:19:1: error[AS-BL-0002]: unknown field `no_reason_window_dayz` in [rules]"
        ),
        "{rendered}"
    );
    assert!(rendered.contains("hint: did you mean `no_reason_window_days`?"));
    let _ = std::fs::remove_dir_all(&dir);

    let missing = load_dir(Path::new("/no/such/dir"), &cx).unwrap_err();
    assert!(matches!(missing, BusinessLineError::Io { .. }), "{missing}");
}

#[test]
fn a_workflow_phase_that_is_not_a_service_order_state_is_refused() {
    let text = std::fs::read_to_string(root().join("workflows/physical/return_refund.toml"))
        .unwrap()
        .replacen(
            "phase = \"under_review\"",
            "phase = \"waiting_for_merchant\"",
            1,
        );
    let sources = [Source::new("return_refund.toml", &text)];
    let report = check_workflows(&sources, &aftersales_runtime::catalogue::builtin(), true);
    assert!(report.is_ok(), "{:#?}", report.diagnostics);
    let mut workflows: Vec<Workflow> = shipped_workflows()
        .into_iter()
        .filter(|w| w.name.value != "physical.return_refund")
        .collect();
    workflows.extend(report.workflows.into_iter().map(|(_, w)| w));
    let refs: Vec<&Workflow> = workflows.iter().collect();
    let diags = check(
        &std::fs::read_to_string(root().join("config/business-lines/apparel.toml")).unwrap(),
        &refs,
    );
    let phase: Vec<&Diagnostic> = diags
        .iter()
        .filter(|d| d.code == codes::UNKNOWN_PHASE)
        .collect();
    assert!(!phase.is_empty(), "{diags:#?}");
    assert!(
        phase[0]
            .message
            .contains("step `merchant_review` declares phase `waiting_for_merchant`"),
        "{}",
        phase[0].message
    );
}
