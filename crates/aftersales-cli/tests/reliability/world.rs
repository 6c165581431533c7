//! The simulated world of a reliability run: the orders seeded in the simulator over
//! `/sim/...`, and the buyers' after-sales requests planned for them. A mix of business
//! lines (apparel and 3C electronics: physical; online courses and memberships: virtual; a
//! course with its textbook: a bundle) and of types (cancellation after payment, refund
//! only, return and refund, exchange).

use serde_json::{Value, json};

/// xorshift64*, seeded: the same seed gives the same mix.
#[derive(Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    pub fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.below(1000) < per_mille
    }
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len() as u64) as usize]
    }
}

/// A stable hash of a string with the seed: the same service order always gets the same
/// decision, however many times an actor looks at it.
pub fn decide(seed: u64, id: &str, role: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ seed;
    for b in id.bytes().chain([0]).chain(role.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h % 1000
}

/// One request to send, with the order it needs.
pub struct Planned {
    /// `POST /sim/orders`.
    pub order: Value,
    /// `POST /sim/orders/{id}/shipment`, when the goods have left.
    pub shipment: Option<&'static str>,
    /// Units of the entitlement already used (virtual goods).
    pub consumed: u32,
    /// The body of `POST /v1/after-sales`.
    pub request: Value,
    /// The parcel leaves right after the request is accepted (a cancellation too late).
    pub ship_after_submit: bool,
}

fn cny(minor: i64) -> Value {
    json!({"minor": minor, "currency": "CNY"})
}

/// The SKUs an exchange can ask for: in stock, or sold out (the exchange becomes a refund).
pub const SOLD_OUT_SIZE: &str = "xxs";
pub const SIZES: &[&str] = &["s", "m", "l", "xl"];
pub const APPAREL: &[(&str, i64)] = &[
    ("tshirt", 9_900),
    ("jeans", 29_900),
    ("dress", 49_900),
    ("sneakers", 59_900),
];
pub const ELECTRONICS: &[(&str, i64)] =
    &[("phone", 399_900), ("earbuds", 89_900), ("charger", 12_900)];

/// Plans request `i` of run `run` (the run's name keeps order ids unique per run).
pub fn plan(rng: &mut Rng, run: &str, i: usize) -> Planned {
    let order_id = format!("{run}-{i:06}");
    let buyer = format!("buyer-{}", rng.below(500));
    let roll = rng.below(100);
    let (line, kind) = match roll {
        0..=5 => ("apparel", "cancel_after_payment"),
        6..=7 => ("apparel", "refund_only"),
        8..=27 => ("apparel", "return_refund"),
        28..=37 => ("apparel", "exchange"),
        38..=44 => ("electronics_3c", "cancel_after_payment"),
        45..=49 => ("electronics_3c", "refund_only"),
        50..=59 => ("electronics_3c", "return_refund"),
        60..=63 => ("electronics_3c", "exchange"),
        64..=75 => ("online_courses", "return_refund"),
        76..=79 => ("online_courses", "exchange"),
        80..=89 => ("membership", "return_refund"),
        _ => ("course_with_textbook", "return_refund"),
    };
    match line {
        "apparel" | "electronics_3c" => {
            let (spu, price) = if line == "apparel" {
                *rng.pick(APPAREL)
            } else {
                *rng.pick(ELECTRONICS)
            };
            let size = if line == "apparel" {
                *rng.pick(SIZES)
            } else {
                "std"
            };
            let sku = format!("{spu}-{size}");
            let quantity: i64 = if line == "apparel" && rng.chance(250) {
                3
            } else {
                1
            };
            let shipping = if rng.chance(500) { 0 } else { 800 };
            let order = json!({
                "order_id": order_id, "buyer_id": buyer, "shipping_fee": cny(shipping),
                "lines": [{"line_id": "l1", "sku": sku, "spu": spu, "quantity": quantity,
                           "unit_price": cny(price)}],
            });
            let (shipment, ship_after_submit) = match kind {
                "cancel_after_payment" => (None, rng.chance(100)),
                "refund_only" => (Some("shipped"), false),
                _ => (Some("delivered"), false),
            };
            let mut line_req = json!({"line_id": "l1"});
            if quantity > 1 && rng.chance(500) {
                line_req["quantity"] = json!(1);
            }
            let reason = if kind == "exchange" {
                "wrong_size"
            } else if rng.chance(200) {
                *rng.pick(&["damaged", "quality"])
            } else {
                *rng.pick(&["no_reason", "other"])
            };
            if kind == "exchange" {
                let to = if line == "electronics_3c" {
                    sku.clone()
                } else if rng.chance(150) {
                    format!("{spu}-{SOLD_OUT_SIZE}")
                } else {
                    format!("{spu}-{}", rng.pick(SIZES))
                };
                line_req["exchange_to"] = json!(to);
            }
            let evidence = if matches!(reason, "damaged" | "quality") {
                json!([format!("img://{order_id}/1.jpg")])
            } else {
                json!([])
            };
            Planned {
                order,
                shipment,
                consumed: 0,
                request: json!({
                    "business_line": line, "order_id": order_id, "type": kind,
                    "lines": [line_req], "reason": reason, "evidence": evidence,
                }),
                ship_after_submit,
            }
        }
        "online_courses" | "membership" => {
            let (sku, price, units) = if line == "membership" {
                (
                    format!("vip-{}", rng.pick(&["month", "year"])),
                    3_000,
                    30_u32,
                )
            } else {
                (
                    format!("course-{}", rng.pick(&["rust", "go", "ml", "design"])),
                    99_900,
                    10,
                )
            };
            let order = json!({
                "order_id": order_id, "buyer_id": buyer,
                "lines": [{"line_id": "l1", "sku": sku, "quantity": 1, "unit_price": cny(price),
                           "entitlement_units": units}],
            });
            let mut line_req = json!({"line_id": "l1"});
            if kind == "exchange" {
                line_req["exchange_to"] = json!("course-data");
            }
            Planned {
                order,
                shipment: None,
                consumed: rng.below(u64::from(units) / 2) as u32,
                request: json!({
                    "business_line": line, "order_id": order_id, "type": kind,
                    "lines": [line_req], "reason": "no_reason",
                }),
                ship_after_submit: false,
            }
        }
        _ => Planned {
            order: json!({
                "order_id": order_id, "buyer_id": buyer,
                "lines": [
                    {"line_id": "book", "sku": "rust-book", "quantity": 1, "unit_price": cny(8_000)},
                    {"line_id": "course", "sku": "rust-course-bundle", "quantity": 1,
                     "unit_price": cny(40_000), "entitlement_units": 20},
                ],
            }),
            shipment: Some("delivered"),
            consumed: 0,
            request: json!({
                "business_line": line, "order_id": order_id, "type": kind,
                "lines": [{"line_id": "book"}, {"line_id": "course"}], "reason": "no_reason",
            }),
            ship_after_submit: false,
        },
    }
}

/// The SKUs exchanges ask for, with the stock to give them.
pub fn stock() -> Vec<(String, i64)> {
    let mut out = Vec::new();
    for (spu, _) in APPAREL {
        for size in SIZES {
            out.push((format!("{spu}-{size}"), 1_000_000));
        }
        out.push((format!("{spu}-{SOLD_OUT_SIZE}"), 0));
    }
    for (spu, _) in ELECTRONICS {
        out.push((format!("{spu}-std"), 1_000_000));
    }
    out
}
