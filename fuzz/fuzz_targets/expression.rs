//! The expression language: any text compiled as a CEL expression (the length and
//! nesting bounds, the CEL parser), the names it reads listed, and the result evaluated
//! against a scope like a running instance's; and the same text read as a value template
//! (`"${...}"`, interpolation, `$${` escapes) and built. None may panic.
//!
//! `Expr::compile` catches a panic inside the CEL parser and answers an error, as the
//! daemon relies on; libFuzzer's panic hook would abort on that caught panic all the same,
//! so the hook below lets a panic raised while compiling unwind to that catch. Any other
//! panic — in our code, or in CEL while evaluating, which nothing catches — still aborts
//! and is reported.

#![no_main]

use std::cell::Cell;
use std::sync::Once;

use aftersales_core::expr::{Expr, parse_string_template};
use aftersales_core::model::ValueType;
use libfuzzer_sys::fuzz_target;
use serde_json::{Value, json};

thread_local! {
    static COMPILING: Cell<bool> = const { Cell::new(false) };
}

fn scope() -> Value {
    json!({
        "input": {
            "order_id": "o-1",
            "amount": {"minor": 19_900, "currency": "CNY"},
            "lines": [{"line_id": "l1", "quantity": 2, "sku": "tee-m"}],
            "pickup": true,
        },
        "params": {"too_late": "carrier_intercept", "no_reason_window_days": 7},
        "steps": {
            "review": {"approved": true, "reason": null},
            "refund": {"refund_id": "rf-1", "status": "succeeded"},
        },
        "workflow": {"id": "01a23423-9262-75ac-8a2b-30e7d54fad89", "name": "physical.return_refund"},
        "now": "2026-11-26T00:00:00Z",
    })
}

fuzz_target!(|data: &[u8]| {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let abort_on_panic = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !COMPILING.with(Cell::get) {
                abort_on_panic(info);
            }
        }));
    });
    let text = String::from_utf8_lossy(data);
    let scope = scope();
    COMPILING.with(|c| c.set(true));
    let compiled = Expr::compile(&text, 0..text.len());
    COMPILING.with(|c| c.set(false));
    if let Ok(e) = compiled {
        let _ = e.references();
        let _ = e.as_path();
        let _ = e.eval(&scope);
        let _ = e.eval_bool(&scope);
    }
    COMPILING.with(|c| c.set(true));
    let template = parse_string_template(&text, 1, 0..text.len() + 2);
    COMPILING.with(|c| c.set(false));
    if let Ok(t) = template {
        let _ = t.exprs();
        let _ = t.eval(&scope);
        let _ = t.static_type(&|_| ValueType::Any);
    }
});
