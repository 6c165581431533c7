//! A stateful mock of ShipBob's dated REST API (the documented shapes) and the adapter built
//! against it the way the binary builds it.
//!
//! | request | answer |
//! | --- | --- |
//! | `GET /2026-01/order?ReferenceIds=..` | `200` and the orders with that reference |
//! | `POST /2026-01/order/{id}:cancel` | `200`, `canceled_shipment_results` per shipment: only shipments not yet picked are cancelled |
//! | `GET /2026-01/return?ReferenceIds=..` | `200` and the returns with that reference |
//! | `GET /2026-01/return/{id}` | `200` and the return, or `404` |
//! | `POST /2026-01/return` | `201` and the return (`AwaitingArrival`); `422` for a reused `reference_id`, an unknown inventory id, an inventory id listed twice, a shipment not shipped |
//! | `POST /2026-01/return/{id}:cancel` | `200`; `422` unless awaiting arrival |
//!
//! Every request needs the bearer token and the `shipbob_channel_id` header. Staged faults
//! apply to the next `POST`: a status before anything happens, or a lost answer (the action
//! happens, the answer is held back longer than the adapter waits).

#![allow(dead_code)]

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aftersales_adapter::ids::OrderId;
use aftersales_adapter::types::LineRef;
use aftersales_adapter::{AdapterConfig, Built, Registry, Warehouse};
use aftersales_adapter_testkit::WarehouseHarness;
use async_trait::async_trait;
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TOKEN: &str = "pat_test_2c1f7a";
pub const CHANNEL_ID: u64 = 48_213;
/// `whsec_` and the base64 of the key bytes, as ShipBob issues subscription secrets.
pub const WEBHOOK_SECRET: &str = "whsec_c2hpcGJvYi10ZXN0LXNpZ25pbmcta2V5LTAx";
pub const OLD_WEBHOOK_SECRET: &str = "whsec_b2xkLXNoaXBib2Itc2lnbmluZy1rZXk=";
pub const VERSION: &str = "2026-01";

/// How long a lost answer is held back; the adapter's timeout in tests is shorter.
pub const LOST_ANSWER_DELAY: Duration = Duration::from_secs(3);

pub fn config(base_url: &str) -> AdapterConfig {
    AdapterConfig::with_settings(
        "shipbob",
        json!({
            "base_url": base_url,
            "token_env": "SHIPBOB_TOKEN",
            "channel_id": CHANNEL_ID,
            "timeout": "1s",
            "webhook_secret_env": "SHIPBOB_WEBHOOK_SECRET",
            "webhook_previous_secret_env": "SHIPBOB_OLD_WEBHOOK_SECRET",
        }),
    )
}

pub fn env(name: &str) -> Option<String> {
    match name {
        "SHIPBOB_TOKEN" => Some(TOKEN.to_owned()),
        "SHIPBOB_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_owned()),
        "SHIPBOB_OLD_WEBHOOK_SECRET" => Some(OLD_WEBHOOK_SECRET.to_owned()),
        _ => None,
    }
}

/// Builds the adapter the way the binary does: registry, config, environment.
pub fn build(base_url: &str) -> Built {
    let mut registry = Registry::new();
    aftersales_adapter_shipbob::register(&mut registry);
    registry.build(&config(base_url), &env).unwrap()
}

#[derive(Clone)]
struct MShipment {
    id: u64,
    status: &'static str,
    location: u64,
    /// (sku, inventory id, quantity)
    products: Vec<(String, u64, u32)>,
}

#[derive(Clone)]
struct MOrder {
    id: u64,
    reference_id: String,
    products: Vec<(String, u32)>,
    shipments: Vec<MShipment>,
}

#[derive(Clone)]
struct MReturn {
    id: u64,
    reference_id: String,
    status: &'static str,
    store_order_id: String,
    original_shipment_id: u64,
    fulfillment_center: u64,
    /// (inventory id, quantity, requested action, actions taken)
    inventory: Vec<(u64, u32, String, Vec<Value>)>,
}

enum Fault {
    Status(u16, Option<String>),
    LoseAnswer,
}

#[derive(Default)]
struct State {
    orders: Vec<MOrder>,
    returns: Vec<MReturn>,
    next: u64,
    faults: VecDeque<Fault>,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// A running mock; dropping it stops the server.
pub struct MockShipBob {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl MockShipBob {
    pub async fn start() -> MockShipBob {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Handler {
                state: state.clone(),
            })
            .mount(&server)
            .await;
        MockShipBob { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// An order of `quantity` units of `sku` whose one shipment is in `status`
    /// (`Processing` = not picked, `LabeledCreated` = packed, `Completed` = shipped).
    pub fn add_order(&self, reference: &str, sku: &str, quantity: u32, status: &'static str) {
        let mut s = lock(&self.state);
        s.next += 1;
        let n = s.next;
        s.orders.push(MOrder {
            id: 700_000 + n,
            reference_id: reference.to_owned(),
            products: vec![(sku.to_owned(), quantity)],
            shipments: vec![MShipment {
                id: 900_000 + n,
                status,
                location: 22,
                products: vec![(sku.to_owned(), 5_000_000 + n, quantity)],
            }],
        });
    }

    /// An order of two SKUs in one shipment.
    pub fn add_two_line_order(&self, reference: &str, status: &'static str) {
        self.add_order(reference, "sku-a", 1, status);
        let mut s = lock(&self.state);
        s.next += 1;
        let n = s.next;
        let o = s.orders.last_mut().unwrap();
        o.products.push(("sku-b".into(), 1));
        o.shipments[0]
            .products
            .push(("sku-b".into(), 5_000_000 + n, 1));
    }

    pub fn shipment_status(&self, reference: &str) -> Vec<&'static str> {
        lock(&self.state)
            .orders
            .iter()
            .filter(|o| o.reference_id == reference)
            .flat_map(|o| o.shipments.iter().map(|s| s.status))
            .collect()
    }

    /// `(return id, reference_id, status)` of every return, oldest first.
    pub fn returns(&self) -> Vec<(u64, String, &'static str)> {
        lock(&self.state)
            .returns
            .iter()
            .map(|r| (r.id, r.reference_id.clone(), r.status))
            .collect()
    }

    /// The warehouse processes a return: every unit restocked, or one action with a reason.
    /// Returns the return as ShipBob would show it (the `return.completed` payload).
    pub fn complete_return(&self, id: u64, action: Option<(&str, &str)>) -> Value {
        let mut s = lock(&self.state);
        let r = s.returns.iter_mut().find(|r| r.id == id).unwrap();
        r.status = "Completed";
        for (_, qty, _, taken) in &mut r.inventory {
            *taken = vec![match action {
                None => {
                    json!({"action": "Restock", "action_reason": null, "quantity_processed": qty})
                }
                Some((a, why)) => {
                    json!({"action": a, "action_reason": why, "quantity_processed": qty})
                }
            }];
        }
        return_json(r)
    }

    pub fn arrive(&self, id: u64) {
        let mut s = lock(&self.state);
        let r = s.returns.iter_mut().find(|r| r.id == id).unwrap();
        r.status = "Arrived";
    }

    pub fn fail_next(&self, status: u16, retry_after: Option<&str>) {
        lock(&self.state)
            .faults
            .push_back(Fault::Status(status, retry_after.map(str::to_owned)));
    }

    pub fn lose_next_answer(&self) {
        lock(&self.state).faults.push_back(Fault::LoseAnswer);
    }

    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// The `POST` requests whose path ends with `suffix`.
    pub async fn posts(&self, suffix: &str) -> Vec<Request> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path().ends_with(suffix))
            .collect()
    }
}

fn shipment_json(s: &MShipment) -> Value {
    json!({
        "id": s.id,
        "status": s.status,
        "location": {"id": s.location, "name": "Cicero (IL)"},
        "products": s.products.iter().map(|(sku, inv, qty)| json!({
            "id": inv + 1,
            "reference_id": sku,
            "sku": sku,
            "name": sku,
            "inventory_items": [{"id": inv, "name": sku, "quantity": qty}],
        })).collect::<Vec<_>>(),
    })
}

fn order_json(o: &MOrder) -> Value {
    json!({
        "id": o.id,
        "reference_id": o.reference_id,
        "order_number": o.reference_id,
        "status": "Processing",
        "channel": {"id": CHANNEL_ID, "name": "test-store"},
        "products": o.products.iter().map(|(sku, qty)| json!({
            "id": 1, "reference_id": sku, "sku": sku, "quantity": qty,
        })).collect::<Vec<_>>(),
        "shipments": o.shipments.iter().map(shipment_json).collect::<Vec<_>>(),
    })
}

fn return_json(r: &MReturn) -> Value {
    json!({
        "id": r.id,
        "reference_id": r.reference_id,
        "status": r.status,
        "store_order_id": r.store_order_id,
        "original_shipment_id": r.original_shipment_id,
        "fulfillment_center": {"id": r.fulfillment_center, "name": "Cicero (IL)"},
        "channel": {"id": CHANNEL_ID, "name": "test-store"},
        "return_type": "Regular",
        "inventory": r.inventory.iter().map(|(id, qty, action, taken)| json!({
            "id": id,
            "quantity": qty,
            "action_requested": {"action": action, "action_type": action, "instructions": null},
            "action_taken": taken,
        })).collect::<Vec<_>>(),
        "transactions": [],
        "invoice_amount": null,
    })
}

fn problem(status: u16, title: &str, errors: Option<Value>) -> ResponseTemplate {
    let mut body = json!({"type": "https://tools.ietf.org/html/rfc4918#section-11.2", "title": title, "status": status});
    if let Some(e) = errors {
        body["errors"] = e;
    }
    ResponseTemplate::new(status).set_body_json(body)
}

struct Handler {
    state: Arc<Mutex<State>>,
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut s = lock(&self.state);
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        if header("authorization") != Some(format!("Bearer {TOKEN}")) {
            return problem(401, "Unauthorized", None);
        }
        if header("shipbob_channel_id") != Some(CHANNEL_ID.to_string()) {
            return problem(403, "Channel is missing or has no write scope", None);
        }
        let path: Vec<String> = request
            .url
            .path_segments()
            .map(|p| p.map(str::to_owned).collect())
            .unwrap_or_default();
        let path: Vec<&str> = path.iter().map(String::as_str).collect();
        let query = |name: &str| {
            request
                .url
                .query_pairs()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.into_owned())
        };
        let fault = if request.method.as_str() == "POST" {
            s.faults.pop_front()
        } else {
            None
        };
        if let Some(Fault::Status(code, after)) = &fault {
            let mut t = problem(*code, "Service temporarily unavailable", None);
            if let Some(a) = after {
                t = t.insert_header("Retry-After", a.as_str());
            }
            return t;
        }
        let answer = match (request.method.as_str(), path.as_slice()) {
            ("GET", [VERSION, "order"]) => {
                let refs: HashSet<String> = query("ReferenceIds")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                let list: Vec<Value> = s
                    .orders
                    .iter()
                    .filter(|o| refs.contains(&o.reference_id))
                    .map(order_json)
                    .collect();
                ResponseTemplate::new(200).set_body_json(list)
            }
            ("POST", [VERSION, "order", target]) if target.ends_with(":cancel") => {
                let id: u64 = target.trim_end_matches(":cancel").parse().unwrap_or(0);
                match s.orders.iter_mut().find(|o| o.id == id) {
                    None => problem(404, "Order not found", None),
                    Some(o) => {
                        let results: Vec<Value> = o
                            .shipments
                            .iter_mut()
                            .map(|sh| {
                                let (ok, reason) = match sh.status {
                                    "Processing" | "None" | "OnHold" | "Exception" => {
                                        sh.status = "Cancelled";
                                        (true, None)
                                    }
                                    "Cancelled" => (false, Some("Shipment is already cancelled")),
                                    _ => (false, Some("Shipment is already picked, packed or shipped")),
                                };
                                json!({"action": "Cancel", "shipment_id": sh.id, "is_success": ok, "reason": reason})
                            })
                            .collect();
                        ResponseTemplate::new(200).set_body_json(
                            json!({"canceled_shipment_results": results, "order": order_json(o)}),
                        )
                    }
                }
            }
            ("GET", [VERSION, "return"]) => {
                let refs: HashSet<String> = query("ReferenceIds")
                    .unwrap_or_default()
                    .split(',')
                    .map(str::to_owned)
                    .collect();
                let list: Vec<Value> = s
                    .returns
                    .iter()
                    .filter(|r| refs.contains(&r.reference_id))
                    .map(return_json)
                    .collect();
                ResponseTemplate::new(200).set_body_json(list)
            }
            ("GET", [VERSION, "return", id]) => {
                match s.returns.iter().find(|r| r.id.to_string() == *id) {
                    Some(r) => ResponseTemplate::new(200).set_body_json(return_json(r)),
                    None => problem(404, "Return not found", None),
                }
            }
            ("POST", [VERSION, "return"]) => create_return(&mut s, request),
            ("POST", [VERSION, "return", target]) if target.ends_with(":cancel") => {
                let id = target.trim_end_matches(":cancel");
                match s.returns.iter_mut().find(|r| r.id.to_string() == id) {
                    None => problem(404, "Return not found", None),
                    Some(r) if r.status == "AwaitingArrival" => {
                        r.status = "Cancelled";
                        ResponseTemplate::new(200).set_body_json(return_json(r))
                    }
                    Some(r) => problem(
                        422,
                        &format!(
                            "Return {} is {} and can no longer be cancelled",
                            r.id, r.status
                        ),
                        None,
                    ),
                }
            }
            _ => problem(404, "Not Found", None),
        };
        match fault {
            Some(Fault::LoseAnswer) => answer.set_delay(LOST_ANSWER_DELAY),
            _ => answer,
        }
    }
}

fn create_return(s: &mut State, request: &Request) -> ResponseTemplate {
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return problem(400, "The request body is not JSON", None);
    };
    let Some(reference) = body["reference_id"].as_str().map(str::to_owned) else {
        return problem(
            422,
            "One or more validation errors occurred.",
            Some(json!({"reference_id": ["The reference_id field is required."]})),
        );
    };
    if s.returns.iter().any(|r| r.reference_id == reference) {
        return problem(
            422,
            "One or more validation errors occurred.",
            Some(
                json!({"reference_id": [format!("A return with reference id {reference} already exists.")]}),
            ),
        );
    }
    let shipment_id = body["original_shipment_id"].as_u64().unwrap_or(0);
    let Some((order, shipment)) = s.orders.iter().find_map(|o| {
        o.shipments
            .iter()
            .find(|sh| sh.id == shipment_id)
            .map(|sh| (o.clone(), sh.clone()))
    }) else {
        return problem(
            422,
            "One or more validation errors occurred.",
            Some(json!({"original_shipment_id": ["Shipment not found."]})),
        );
    };
    if shipment.status != "Completed" {
        return problem(
            422,
            "One or more validation errors occurred.",
            Some(json!({"original_shipment_id": ["The shipment has not shipped."]})),
        );
    }
    let Some(fc) = body["fulfillment_center"]["id"].as_u64() else {
        return problem(
            422,
            "One or more validation errors occurred.",
            Some(json!({"fulfillment_center": ["The fulfillment_center field is required."]})),
        );
    };
    let mut seen = HashSet::new();
    let mut inventory = Vec::new();
    for item in body["inventory"].as_array().cloned().unwrap_or_default() {
        let id = item["id"].as_u64().unwrap_or(0);
        if !seen.insert(id) {
            return problem(
                422,
                "One or more validation errors occurred.",
                Some(json!({"inventory": [format!("Inventory {id} is listed more than once.")]})),
            );
        }
        if !shipment.products.iter().any(|(_, inv, _)| *inv == id) {
            return problem(
                422,
                "One or more validation errors occurred.",
                Some(
                    json!({"inventory": [format!("Inventory {id} was not in shipment {shipment_id}.")]}),
                ),
            );
        }
        let qty = item["quantity"].as_u64().unwrap_or(0) as u32;
        let action = item["requested_action"]
            .as_str()
            .unwrap_or("Default")
            .to_owned();
        inventory.push((id, qty, action, Vec::new()));
    }
    if inventory.is_empty() {
        return problem(
            422,
            "One or more validation errors occurred.",
            Some(json!({"inventory": ["At least one inventory item is required."]})),
        );
    }
    s.next += 1;
    let r = MReturn {
        id: 310_000 + s.next,
        reference_id: reference,
        status: "AwaitingArrival",
        store_order_id: order.reference_id.clone(),
        original_shipment_id: shipment_id,
        fulfillment_center: fc,
        inventory,
    };
    let body = return_json(&r);
    s.returns.push(r);
    ResponseTemplate::new(201).set_body_json(body)
}

/// The conformance harness: a fresh adapter per check against a shared mock.
pub struct ShipBobHarness {
    pub api: Arc<MockShipBob>,
    pub warehouse: Arc<dyn Warehouse>,
    pub next: Arc<Mutex<u32>>,
}

impl ShipBobHarness {
    fn order(&self, status: &'static str) -> (OrderId, LineRef) {
        let n = {
            let mut n = self.next.lock().unwrap();
            *n += 1;
            *n
        };
        let reference = format!("#10{n:02}");
        let sku = format!("tee-{n}");
        self.api.add_order(&reference, &sku, 2, status);
        (
            OrderId::new(reference),
            LineRef {
                line_id: format!("gid://shopify/LineItem/{n}").into(),
                sku: sku.into(),
                quantity: 2,
            },
        )
    }
}

#[async_trait]
impl WarehouseHarness for ShipBobHarness {
    fn warehouse(&self) -> Arc<dyn Warehouse> {
        self.warehouse.clone()
    }

    async fn unshipped_order(&self) -> (OrderId, LineRef) {
        self.order("Processing")
    }

    async fn shipped_order(&self) -> (OrderId, LineRef) {
        self.order("Completed")
    }
}
