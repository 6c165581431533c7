//! Shared helpers for the simulator's integration tests.
#![allow(dead_code)]

use aftersales_adapter::IdempotencyKey;
use aftersales_adapter::ids::{OrderId, PaymentId};
use aftersales_adapter::types::LineRef;
use aftersales_adapter_sim::{ManualClock, NewLine, NewOrder, Sim, SimConfig};
use aftersales_money::{Currency, Money};

pub fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

#[track_caller]
pub fn key(text: &str) -> IdempotencyKey {
    IdempotencyKey::new(text).expect("valid test key")
}

/// A quiet simulator on a manual clock.
pub fn sim_with(config: SimConfig) -> (Sim, ManualClock) {
    let clock = ManualClock::at_2025();
    (Sim::new(config, clock.clone()), clock)
}

pub fn quiet() -> (Sim, ManualClock) {
    sim_with(SimConfig::quiet(42))
}

/// An order `o-<n>` with one line of 3 T-shirts (unit 100.00, paid 270.00 after a coupon)
/// and 10.00 shipping: 280.00 captured.
#[track_caller]
pub fn tshirt_order(sim: &Sim, n: u32) -> (OrderId, PaymentId, LineRef) {
    let order_id = OrderId::new(format!("o-{n}"));
    let payment = sim
        .create_order(NewOrder {
            order_id: order_id.clone(),
            buyer_id: "buyer-1".into(),
            lines: vec![NewLine {
                line_id: "l1".into(),
                sku: "tshirt-m".into(),
                spu: "tshirt".into(),
                quantity: 3,
                unit_price: cny(10_000),
                paid: cny(27_000),
                entitlement_units: None,
            }],
            shipping_fee: cny(1_000),
        })
        .expect("order created");
    let line = LineRef {
        line_id: "l1".into(),
        sku: "tshirt-m".into(),
        quantity: 1,
    };
    (order_id, payment, line)
}
