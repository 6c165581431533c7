//! The exact refund calculation: a partial return of a two-line order with a coupon
//! apportioned by largest remainder, and a pro-rata refund of a half-consumed course.
//!
//! `cargo bench -p aftersales-domain --bench refund`

#[path = "../tests/common/mod.rs"]
mod common;

use aftersales_domain::{AfterSalesType, Reason, RefundInput, calculate_refund};
use criterion::{Criterion, criterion_group, criterion_main};
use std::hint::black_box;

use common::*;

fn bench(c: &mut Criterion) {
    let params = params();
    // Two lines: A = 2 × 99.00, B = 1 × 49.90 with 5.00 off; a 10.00 coupon; 8.00 shipping.
    let goods = order(
        vec![
            physical("A", 2, cny(9_900), cny(0)),
            physical("B", 1, cny(4_990), cny(500)),
        ],
        cny(1_000),
        cny(800),
        delivered(),
    );
    let partial = request(
        AfterSalesType::ReturnRefund,
        &[("A", 1), ("B", 1)],
        Reason::NoReason,
        cny(100_000),
    );
    let input = RefundInput {
        request: &partial,
        order: &goods,
        params: &params,
    };
    assert!(
        calculate_refund(&input).is_ok(),
        "the goods case must calculate"
    );
    c.bench_function("refund: partial return, coupon apportioned", |b| {
        b.iter(|| calculate_refund(black_box(&input)))
    });

    let courses = order(
        vec![course("C", cny(99_900), 10, 5)],
        cny(0),
        cny(0),
        delivered(),
    );
    let whole = request(
        AfterSalesType::ReturnRefund,
        &[("C", 1)],
        Reason::NoReason,
        cny(99_900),
    );
    let input = RefundInput {
        request: &whole,
        order: &courses,
        params: &params,
    };
    assert!(
        calculate_refund(&input).is_ok(),
        "the course case must calculate"
    );
    c.bench_function("refund: course, pro rata by lessons", |b| {
        b.iter(|| calculate_refund(black_box(&input)))
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
