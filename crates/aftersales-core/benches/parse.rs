//! Parsing and validating a shipped workflow (physical.return_refund), and evaluating the
//! expressions a step runs: a branch condition and an input template.
//!
//! `cargo bench -p aftersales-core --bench parse`

use aftersales_core::catalogue::{ActionSig, Catalogue, FieldSig};
use aftersales_core::diag::Source;
use aftersales_core::expr::{Expr, parse_string_template};
use aftersales_core::model::ValueType;
use aftersales_core::parse::parse_workflow;
use aftersales_core::validate::check_sources;
use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use std::hint::black_box;

const RETURN_REFUND: &str = include_str!("../../../workflows/physical/return_refund.toml");

/// The actions return_refund calls, with the inputs it passes and the outputs it reads (the
/// real catalogue lives in aftersales-runtime, which this crate may not depend on).
fn catalogue() -> Catalogue {
    let f = |name: &str, ty: ValueType, required: bool| FieldSig {
        name: name.to_owned(),
        ty,
        required,
    };
    let s = |name: &str| f(name, ValueType::String, true);
    let o = |name: &str| f(name, ValueType::String, false);
    let order = || vec![s("order_id"), s("service_order_id")];
    let mut c = Catalogue::new();
    let mut add = |name: &str, inputs: Vec<FieldSig>, outputs: Vec<FieldSig>| {
        c.insert(ActionSig {
            name: name.to_owned(),
            mutating: true,
            inputs,
            outputs,
        });
    };
    let mut mark = order();
    mark.push(f("lines", ValueType::List(None), true));
    add("order.mark_after_sales", mark, vec![]);
    add("order.clear_after_sales", order(), vec![]);
    let mut close = order();
    close.extend([s("outcome"), o("reason")]);
    add("order.close_after_sales", close, vec![]);
    let mut report = order();
    report.extend([f("amount", ValueType::Money, true), s("refund_id")]);
    add("order.report_refund", report, vec![]);
    let mut create = order();
    create.extend([
        f("lines", ValueType::List(None), true),
        f("pickup", ValueType::Bool, false),
    ]);
    add("warehouse.create_return", create, vec![s("rma_id")]);
    for a in [
        "warehouse.cancel_return",
        "warehouse.restock",
        "warehouse.reverse_restock",
        "warehouse.return_to_buyer",
    ] {
        add(a, vec![s("rma_id")], vec![]);
    }
    add(
        "payment.refund",
        vec![
            s("payment_id"),
            s("service_order_id"),
            f("amount", ValueType::Money, true),
            o("reason"),
        ],
        vec![s("refund_id")],
    );
    let mut claim = order();
    claim.push(f("amount", ValueType::Money, true));
    add("payment.insurance_claim", claim, vec![]);
    c
}

fn bench(c: &mut Criterion) {
    let catalogue = catalogue();
    let source = Source::new("workflows/physical/return_refund.toml", RETURN_REFUND);
    // The benchmark measures a clean file: fail loudly if the catalogue drifted.
    let report = check_sources(std::slice::from_ref(&source), &catalogue, true);
    assert!(
        report.is_ok(),
        "{}",
        aftersales_core::diag::render_human(&report.diagnostics)
    );

    c.bench_function("parse return_refund.toml", |b| {
        b.iter(|| parse_workflow(black_box(&source)))
    });
    c.bench_function("parse+validate return_refund.toml", |b| {
        b.iter(|| check_sources(std::slice::from_ref(black_box(&source)), &catalogue, true))
    });

    let scope = json!({
        "input": {"order_id": "o-1", "service_order_id": "so-1", "insured": true,
                  "refund_amount": {"minor": 29_900, "currency": "CNY"}},
        "params": {"retention": false},
        "steps": {"refund": {"refund_id": "re_1"}, "await_receipt": {"inspection_passed": true}},
    });
    let cond = Expr::compile(
        "steps.await_receipt.inspection_passed && !params.retention",
        0..0,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    c.bench_function("eval condition", |b| {
        b.iter(|| cond.eval_bool(black_box(&scope)))
    });
    let text = "returned and refunded (refund ${steps.refund.refund_id}, order ${input.order_id})";
    let template =
        parse_string_template(text, 0, 0..text.len()).unwrap_or_else(|(e, _)| panic!("{e}"));
    c.bench_function("eval interpolated template", |b| {
        b.iter(|| template.eval(black_box(&scope)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
