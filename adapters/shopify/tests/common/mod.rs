//! A stateful mock of the Shopify Admin GraphQL API (the documented shapes) and the adapter
//! built against it the way the binary builds it.
//!
//! `POST /admin/api/2026-01/graphql.json` with `X-Shopify-Access-Token`; the operation is
//! recognised by its name in the document:
//!
//! | operation | answer |
//! | --- | --- |
//! | `AftersalesOrder` | `order` with lines, discount allocations (line-level and `ALL`), taxes, shipping, transactions, fulfillments; `null` for an unknown id |
//! | `AftersalesTagsAdd` / `AftersalesTagsRemove` / `AftersalesClose` | the tag set changes; `userErrors` for an unknown order |
//! | `AftersalesRefundable` | `refunds { id note }` and `suggestedRefund` (what is left of the capture) |
//! | `AftersalesRefund` | `refundCreate`; the `@idempotent` key replays the first answer, a changed input is a `userErrors`; an amount over what is left is a `userErrors` |
//! | `AftersalesReturns` / `AftersalesFulfilled` | the order's returns (status, line notes, fulfillment line items) / fulfillments (status, fulfillment line items) |
//! | `AftersalesReturnRequest` | `returnRequest`: a `REQUESTED` return; `userErrors` for a fulfillment line item not on the order or not `SUCCESS`, a quantity over what is fulfilled and not held by another return, an unknown `returnReason`, a note over 300 characters |
//! | `AftersalesReturn` | `return(id:)` with its status; `null` for an unknown id |
//! | `AftersalesReturnApprove` / `AftersalesReturnDecline` | `REQUESTED` → `OPEN` / `DECLINED`; `INVALID_STATE` `userErrors` from any other status |
//! | `AftersalesCancelState` | `order { cancelledAt }` |
//! | `AftersalesCancel` | `orderCancel` (`refundMethod`, `restock`, `reason`, `notifyCustomer`, `staffNote`): a `job`, done after a set number of `job` polls, which then cancels the order; `orderCancelUserErrors` for an unknown, already cancelled or returning order; a repeat while the job runs answers the same job |
//! | `AftersalesJob` | `job(id:) { id done }`, one poll closer to done |
//!
//! Amounts are written as Shopify writes `Decimal`: `"45.0"`, `"12.5"`, `"1000.0"`. Staged
//! faults apply to the next request: an HTTP status, `THROTTLED` in a `200`, a `userErrors`
//! refusal, or a lost answer (applied, then held back longer than the adapter waits).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aftersales_adapter::ids::OrderId;
use aftersales_adapter::types::LineRef;
use aftersales_adapter::{AdapterConfig, Built, OrderSystem, Registry};
use aftersales_adapter_testkit::OrderHarness;
use async_trait::async_trait;
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const TOKEN: &str = "shpat_test_5d1e0c9a";
pub const CLIENT_SECRET: &str = "shpss_test_client_secret";
pub const OLD_CLIENT_SECRET: &str = "shpss_old_client_secret";
pub const GRAPHQL_PATH: &str = "/admin/api/2026-01/graphql.json";

/// How long a lost answer is held back; the adapter's timeout in tests is shorter.
pub const LOST_ANSWER_DELAY: Duration = Duration::from_secs(3);

pub fn config(base_url: &str) -> AdapterConfig {
    AdapterConfig::with_settings(
        "shopify",
        json!({
            "shop": "aftersales-test.myshopify.com",
            "base_url": base_url,
            "access_token_env": "SHOPIFY_ADMIN_TOKEN",
            "timeout": "1s",
            // Most tests drive `refundCreate`; `record` has its own test.
            "refunds": "transactions",
            "webhook_secret_env": "SHOPIFY_CLIENT_SECRET",
            "webhook_previous_secret_env": "SHOPIFY_OLD_CLIENT_SECRET",
        }),
    )
}

pub fn env(name: &str) -> Option<String> {
    match name {
        "SHOPIFY_ADMIN_TOKEN" => Some(TOKEN.to_owned()),
        "SHOPIFY_CLIENT_SECRET" => Some(CLIENT_SECRET.to_owned()),
        "SHOPIFY_OLD_CLIENT_SECRET" => Some(OLD_CLIENT_SECRET.to_owned()),
        _ => None,
    }
}

/// Builds the adapter the way the binary does: registry, config, environment.
pub fn build(base_url: &str) -> Built {
    let mut registry = Registry::new();
    aftersales_adapter_shopify::register(&mut registry);
    registry.build(&config(base_url), &env).unwrap()
}

/// One line of a mock order, amounts in minor units.
#[derive(Clone)]
pub struct MLine {
    pub sku: &'static str,
    pub quantity: u32,
    pub unit: i64,
    /// A discount on this line alone (`targetSelection: ENTITLED`).
    pub line_discount: i64,
    /// This line's share of an order-level code (`targetSelection: ALL`).
    pub coupon_share: i64,
    pub tax: i64,
}

/// A mock order's shape.
#[derive(Clone)]
pub struct MOrderSpec {
    pub currency: &'static str,
    pub exponent: u32,
    pub lines: Vec<MLine>,
    pub shipping: i64,
    pub shipping_tax: i64,
    pub taxes_included: bool,
    /// `UNFULFILLED`, `IN_PROGRESS`, `FULFILLED`.
    pub fulfillment: &'static str,
    pub delivered: bool,
}

impl MOrderSpec {
    /// One plain USD line, paid, unfulfilled.
    pub fn simple(sku: &'static str, quantity: u32, unit: i64) -> MOrderSpec {
        MOrderSpec {
            currency: "USD",
            exponent: 2,
            lines: vec![MLine {
                sku,
                quantity,
                unit,
                line_discount: 0,
                coupon_share: 0,
                tax: 0,
            }],
            shipping: 0,
            shipping_tax: 0,
            taxes_included: true,
            fulfillment: "UNFULFILLED",
            delivered: false,
        }
    }

    fn total(&self) -> i64 {
        let tax = |t: i64| if self.taxes_included { 0 } else { t };
        self.lines
            .iter()
            .map(|l| l.unit * i64::from(l.quantity) - l.line_discount - l.coupon_share + tax(l.tax))
            .sum::<i64>()
            + self.shipping
            + tax(self.shipping_tax)
    }
}

struct MOrder {
    num: u64,
    spec: MOrderSpec,
    captured: i64,
    tags: BTreeSet<String>,
    refunds: Vec<(String, String, i64)>,
    fulfillments: Vec<MFulfillment>,
    returns: Vec<MReturn>,
    cancelled_at: Option<String>,
    /// The variables of every `orderCancel` that started a cancellation.
    cancels: Vec<Value>,
    /// How many times the order was actually cancelled (at most once, Shopify-side).
    times_cancelled: u32,
    /// Metafields, `namespace.key` → (type, value).
    metafields: BTreeMap<String, (String, String)>,
}

struct MFulfillment {
    id: String,
    status: &'static str,
    /// `(fulfillment line item id, line index, quantity)`.
    lines: Vec<(String, usize, u32)>,
}

/// A return as the tests see it.
#[derive(Clone, Debug)]
pub struct MReturn {
    pub id: String,
    pub status: String,
    /// `(fulfillment line item id, quantity, customer note, return reason)`.
    pub lines: Vec<(String, u32, String, String)>,
    /// `(declineReason, declineNote)` once declined.
    pub decline: Option<(String, Option<String>)>,
    /// `notifyCustomer` of the last approval or decline.
    pub notified: Option<bool>,
}

struct MJob {
    order: u64,
    polls_left: u32,
}

enum Fault {
    Status(u16, Option<String>),
    Throttled,
    UserErrors,
    LoseAnswer,
    /// The order is cancelled by someone else just before `orderCancel` runs.
    CancelledMeanwhile,
}

#[derive(Default)]
struct State {
    orders: Vec<MOrder>,
    keys: HashMap<String, (Value, Value)>,
    next: u64,
    faults: VecDeque<(Option<String>, Fault)>,
    jobs: HashMap<String, MJob>,
    /// `job` polls until a new cancel job is done (0: done at once).
    cancel_job_polls: u32,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// Shopify's `Decimal` text: at least one decimal, trailing zeros dropped (`"45.0"`).
pub fn decimal(minor: i64, exponent: u32) -> String {
    let scale = 10i64.pow(exponent);
    let mut s = format!(
        "{}{}.{:0w$}",
        if minor < 0 { "-" } else { "" },
        minor.abs() / scale,
        minor.abs() % scale,
        w = exponent as usize
    );
    if exponent == 0 {
        s.push('0');
    }
    while s.ends_with('0') && !s.ends_with(".0") {
        s.pop();
    }
    s
}

/// A running mock; dropping it stops the server.
pub struct MockShopify {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl MockShopify {
    pub async fn start() -> MockShopify {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Handler {
                state: state.clone(),
            })
            .mount(&server)
            .await;
        MockShopify { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// A paid order; returns its numeric id (our order id).
    pub fn add_order(&self, spec: MOrderSpec) -> String {
        let mut s = lock(&self.state);
        s.next += 1;
        let num = 5_500_000 + s.next;
        let captured = spec.total();
        let fulfillments = if spec.fulfillment == "FULFILLED" {
            vec![MFulfillment {
                id: format!("gid://shopify/Fulfillment/{num}1"),
                status: "SUCCESS",
                lines: spec
                    .lines
                    .iter()
                    .enumerate()
                    .map(|(i, l)| {
                        (
                            format!("gid://shopify/FulfillmentLineItem/{num}{i}"),
                            i,
                            l.quantity,
                        )
                    })
                    .collect(),
            }]
        } else {
            Vec::new()
        };
        s.orders.push(MOrder {
            num,
            spec,
            captured,
            tags: BTreeSet::new(),
            refunds: Vec::new(),
            fulfillments,
            returns: Vec::new(),
            cancelled_at: None,
            cancels: Vec::new(),
            times_cancelled: 0,
            metafields: BTreeMap::new(),
        });
        num.to_string()
    }

    /// Adds a fulfillment (`SUCCESS`, `CANCELLED`, ...) of `(line index, quantity)` pairs;
    /// returns its fulfillment line item ids.
    pub fn add_fulfillment(
        &self,
        order: &str,
        status: &'static str,
        lines: &[(usize, u32)],
    ) -> Vec<String> {
        let mut s = lock(&self.state);
        s.next += 1;
        let n = s.next;
        let o = s
            .orders
            .iter_mut()
            .find(|o| o.num.to_string() == order)
            .unwrap();
        let lines: Vec<(String, usize, u32)> = lines
            .iter()
            .enumerate()
            .map(|(k, (i, q))| (format!("gid://shopify/FulfillmentLineItem/{n}{k}"), *i, *q))
            .collect();
        let ids = lines.iter().map(|l| l.0.clone()).collect();
        o.fulfillments.push(MFulfillment {
            id: format!("gid://shopify/Fulfillment/{n}"),
            status,
            lines,
        });
        ids
    }

    /// An order's metafields, `namespace.key` → (type, value).
    pub fn metafields(&self, order: &str) -> BTreeMap<String, (String, String)> {
        lock(&self.state)
            .orders
            .iter()
            .find(|o| o.num.to_string() == order)
            .map(|o| o.metafields.clone())
            .unwrap_or_default()
    }

    /// An order's returns.
    pub fn returns(&self, order: &str) -> Vec<MReturn> {
        lock(&self.state)
            .orders
            .iter()
            .find(|o| o.num.to_string() == order)
            .map(|o| o.returns.clone())
            .unwrap_or_default()
    }

    /// Moves a return to `status` behind the adapter's back (the merchant in the admin).
    pub fn set_return_status(&self, return_id: &str, status: &str) {
        let mut s = lock(&self.state);
        for o in &mut s.orders {
            for r in &mut o.returns {
                if r.id == return_id {
                    r.status = status.to_owned();
                }
            }
        }
    }

    /// How many `job` polls a new cancel job needs before it is done (0: done at once).
    pub fn set_cancel_job_polls(&self, polls: u32) {
        lock(&self.state).cancel_job_polls = polls;
    }

    /// Cancels an order in the admin, outside the adapter.
    pub fn cancel_in_admin(&self, order: &str) {
        let mut s = lock(&self.state);
        if let Some(o) = s.orders.iter_mut().find(|o| o.num.to_string() == order) {
            o.cancelled_at = Some("2025-11-22T08:00:00Z".into());
            o.times_cancelled += 1;
        }
    }

    /// Whether the order is cancelled, how many times it was, and the variables of each
    /// `orderCancel` that started a cancellation.
    pub fn cancellation(&self, order: &str) -> (bool, u32, Vec<Value>) {
        lock(&self.state)
            .orders
            .iter()
            .find(|o| o.num.to_string() == order)
            .map(|o| {
                (
                    o.cancelled_at.is_some(),
                    o.times_cancelled,
                    o.cancels.clone(),
                )
            })
            .unwrap_or_default()
    }

    /// The next `orderCancel` finds the order cancelled by someone else meanwhile.
    pub fn cancel_meanwhile_next(&self) {
        self.stage(Some("AftersalesCancel"), Fault::CancelledMeanwhile);
    }

    pub fn tags(&self, order: &str) -> Vec<String> {
        lock(&self.state)
            .orders
            .iter()
            .find(|o| o.num.to_string() == order)
            .map(|o| o.tags.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// `(refund id, note, amount in minor units)` of an order's refunds.
    pub fn refunds(&self, order: &str) -> Vec<(String, String, i64)> {
        lock(&self.state)
            .orders
            .iter()
            .find(|o| o.num.to_string() == order)
            .map(|o| o.refunds.clone())
            .unwrap_or_default()
    }

    fn stage(&self, operation: Option<&str>, fault: Fault) {
        lock(&self.state)
            .faults
            .push_back((operation.map(str::to_owned), fault));
    }

    /// The next request (naming `operation`, when given) answers `status`.
    pub fn fail_next(&self, operation: Option<&str>, status: u16, retry_after: Option<&str>) {
        self.stage(
            operation,
            Fault::Status(status, retry_after.map(str::to_owned)),
        );
    }

    pub fn throttle_next(&self, operation: Option<&str>) {
        self.stage(operation, Fault::Throttled);
    }

    pub fn refuse_next(&self, operation: Option<&str>) {
        self.stage(operation, Fault::UserErrors);
    }

    pub fn lose_next_answer(&self, operation: Option<&str>) {
        self.stage(operation, Fault::LoseAnswer);
    }

    /// The bodies of the requests whose document names `operation`.
    pub async fn operations(&self, operation: &str) -> Vec<Value> {
        self.server
            .received_requests()
            .await
            .unwrap_or_default()
            .into_iter()
            .filter_map(|r| serde_json::from_slice::<Value>(&r.body).ok())
            .filter(|b| {
                b["query"]
                    .as_str()
                    .is_some_and(|q| q.contains(&format!(" {operation}(")))
            })
            .collect()
    }
}

fn bag(minor: i64, spec: &MOrderSpec) -> Value {
    json!({"shopMoney": {"amount": decimal(minor, spec.exponent), "currencyCode": spec.currency}})
}

fn order_json(o: &MOrder) -> Value {
    let spec = &o.spec;
    let gid = format!("gid://shopify/Order/{}", o.num);
    let lines: Vec<Value> = spec
        .lines
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let mut allocations = Vec::new();
            if l.line_discount > 0 {
                allocations.push(json!({
                    "allocatedAmountSet": bag(l.line_discount, spec),
                    "discountApplication": {"targetSelection": "ENTITLED"},
                }));
            }
            if l.coupon_share > 0 {
                allocations.push(json!({
                    "allocatedAmountSet": bag(l.coupon_share, spec),
                    "discountApplication": {"targetSelection": "ALL"},
                }));
            }
            json!({
                "id": format!("gid://shopify/LineItem/{}{i}", o.num),
                "sku": l.sku,
                "quantity": l.quantity,
                "variant": {"id": format!("gid://shopify/ProductVariant/{}{i}", o.num)},
                "product": {"id": format!("gid://shopify/Product/{}", l.sku.len()), "productType": "apparel.tops"},
                "originalUnitPriceSet": bag(l.unit, spec),
                "taxLines": if l.tax > 0 { json!([{"priceSet": bag(l.tax, spec)}]) } else { json!([]) },
                "discountAllocations": allocations,
            })
        })
        .collect();
    let shipping = if spec.shipping > 0 {
        json!([{
            "discountedPriceSet": bag(spec.shipping, spec),
            "taxLines": if spec.shipping_tax > 0 { json!([{"priceSet": bag(spec.shipping_tax, spec)}]) } else { json!([]) },
        }])
    } else {
        json!([])
    };
    let fulfillments = match spec.fulfillment {
        "FULFILLED" => json!([{
            "createdAt": "2025-11-21T09:00:00Z",
            "inTransitAt": "2025-11-21T15:30:00Z",
            "deliveredAt": if spec.delivered { json!("2025-11-24T16:00:00Z") } else { Value::Null },
            "displayStatus": if spec.delivered { "DELIVERED" } else { "IN_TRANSIT" },
        }]),
        _ => json!([]),
    };
    json!({
        "id": gid,
        "cancelledAt": o.cancelled_at,
        "closedAt": null,
        "processedAt": "2025-11-20T10:00:00Z",
        "taxesIncluded": spec.taxes_included,
        "displayFulfillmentStatus": spec.fulfillment,
        "customer": {"id": "gid://shopify/Customer/77"},
        "transactions": [
            {"id": format!("gid://shopify/OrderTransaction/{}1", o.num), "kind": "SALE", "status": "SUCCESS", "processedAt": "2025-11-20T10:00:05Z"},
        ],
        "fulfillments": fulfillments,
        "shippingLines": {"nodes": shipping},
        "lineItems": {"nodes": lines},
    })
}

struct Handler {
    state: Arc<Mutex<State>>,
}

fn user_errors(op: &str, field: &[&str], message: &str) -> Value {
    json!({"data": {op: {"userErrors": [{"field": field, "message": message}]}}})
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut s = lock(&self.state);
        if request.url.path() != GRAPHQL_PATH || request.method.as_str() != "POST" {
            return ResponseTemplate::new(404).set_body_json(json!({"errors": "Not Found"}));
        }
        let token = request
            .headers
            .get("x-shopify-access-token")
            .and_then(|v| v.to_str().ok());
        if token != Some(TOKEN) {
            return ResponseTemplate::new(401).set_body_json(json!({
                "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
            }));
        }
        let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
            return ResponseTemplate::new(400).set_body_json(json!({"errors": "Bad Request"}));
        };
        let query = body["query"].as_str().unwrap_or("").to_owned();
        let vars = body["variables"].clone();
        let fault = s
            .faults
            .iter()
            .position(|(op, _)| {
                op.as_ref()
                    .is_none_or(|op| query.contains(&format!(" {op}(")))
            })
            .and_then(|i| s.faults.remove(i))
            .map(|(_, f)| f);
        match &fault {
            Some(Fault::Status(code, after)) => {
                let mut t = ResponseTemplate::new(*code)
                    .set_body_json(json!({"errors": "Exceeded 2 calls per second for api client. Reduce request rates to resume uninterrupted service."}));
                if let Some(a) = after {
                    t = t.insert_header("Retry-After", a.as_str());
                }
                return t;
            }
            Some(Fault::Throttled) => {
                return ResponseTemplate::new(200).set_body_json(json!({
                    "errors": [{"message": "Throttled", "extensions": {"code": "THROTTLED", "documentation": "https://shopify.dev/api/usage/rate-limits"}}],
                    "extensions": {"cost": {"requestedQueryCost": 752, "actualQueryCost": null,
                        "throttleStatus": {"maximumAvailable": 2000.0, "currentlyAvailable": 452, "restoreRate": 100.0}}}
                }));
            }
            Some(Fault::UserErrors) => {
                if query.contains("orderCancel(") {
                    return ResponseTemplate::new(200).set_body_json(json!({"data": {"orderCancel": {
                        "job": null,
                        "orderCancelUserErrors": [{"field": ["orderId"], "message": "Order is archived and cannot be edited", "code": "INVALID"}],
                    }}}));
                }
                let op = [
                    "refundCreate",
                    "returnRequest",
                    "returnApproveRequest",
                    "returnDeclineRequest",
                ]
                .into_iter()
                .find(|op| query.contains(&format!("{op}(")))
                .unwrap_or("tagsAdd");
                return ResponseTemplate::new(200).set_body_json(user_errors(
                    op,
                    &["orderId"],
                    "Order is archived and cannot be edited",
                ));
            }
            Some(Fault::CancelledMeanwhile) => {
                if let Some(o) = find(&mut s, &vars["orderId"]) {
                    o.cancelled_at = Some("2025-11-22T08:00:00Z".into());
                    o.times_cancelled += 1;
                }
                return ResponseTemplate::new(200).set_body_json(json!({"data": {"orderCancel": {
                    "job": null,
                    "orderCancelUserErrors": [{"field": ["orderId"], "message": "Cannot cancel an order that has already been cancelled", "code": "INVALID"}],
                }}}));
            }
            _ => {}
        }
        let answer = if query.contains(" AftersalesOrder(") {
            let id = vars["id"].as_str().unwrap_or("");
            let order = s
                .orders
                .iter()
                .find(|o| format!("gid://shopify/Order/{}", o.num) == id);
            json!({"data": {"order": order.map(order_json)}})
        } else if query.contains(" AftersalesTagsAdd(") || query.contains(" AftersalesTagsRemove(")
        {
            let add = query.contains("AftersalesTagsAdd");
            let op = if add { "tagsAdd" } else { "tagsRemove" };
            let tags: Vec<String> =
                serde_json::from_value(vars["tags"].clone()).unwrap_or_default();
            match find(&mut s, &vars["id"]) {
                None => user_errors(op, &["id"], "Order does not exist"),
                Some(o) => {
                    for t in tags {
                        if add {
                            o.tags.insert(t);
                        } else {
                            o.tags.remove(&t);
                        }
                    }
                    json!({"data": {op: {"node": {"id": vars["id"]}, "userErrors": []}}})
                }
            }
        } else if query.contains(" AftersalesRefundRecord(") {
            metafields_set(&mut s, &vars)
        } else if query.contains(" AftersalesClose(") {
            let add: Vec<String> = serde_json::from_value(vars["add"].clone()).unwrap_or_default();
            let remove: Vec<String> =
                serde_json::from_value(vars["remove"].clone()).unwrap_or_default();
            match find(&mut s, &vars["id"]) {
                None => json!({"data": {
                    "closed": {"node": null, "userErrors": [{"field": ["id"], "message": "Order does not exist"}]},
                    "open": {"node": null, "userErrors": [{"field": ["id"], "message": "Order does not exist"}]},
                }}),
                Some(o) => {
                    o.tags.extend(add);
                    for t in remove {
                        o.tags.remove(&t);
                    }
                    json!({"data": {
                        "closed": {"node": {"id": vars["id"]}, "userErrors": []},
                        "open": {"node": {"id": vars["id"]}, "userErrors": []},
                    }})
                }
            }
        } else if query.contains(" AftersalesRefundable(") {
            match find(&mut s, &vars["id"]) {
                None => json!({"data": {"order": null}}),
                Some(o) => {
                    let left = o.captured - o.refunds.iter().map(|r| r.2).sum::<i64>();
                    let suggested = if left > 0 {
                        json!([{
                            "gateway": "shopify_payments",
                            "amountSet": bag(left, &o.spec),
                            "parentTransaction": {"id": format!("gid://shopify/OrderTransaction/{}1", o.num)},
                        }])
                    } else {
                        json!([])
                    };
                    json!({"data": {"order": {
                        "id": vars["id"],
                        "refunds": o.refunds.iter().map(|(id, note, _)| json!({"id": id, "note": note})).collect::<Vec<_>>(),
                        "suggestedRefund": {
                            "maximumRefundableSet": bag(left, &o.spec),
                            "suggestedTransactions": suggested,
                        },
                    }}})
                }
            }
        } else if query.contains(" AftersalesRefund(") {
            refund_create(&mut s, &query, &vars)
        } else if query.contains(" AftersalesReturns(") {
            match find(&mut s, &vars["id"]) {
                None => json!({"data": {"order": null}}),
                Some(o) => json!({"data": {"order": {
                    "id": vars["id"],
                    "returns": {"nodes": o.returns.iter().map(|r| json!({
                        "id": r.id,
                        "status": r.status,
                        "returnLineItems": {"nodes": r.lines.iter().map(|(fli, q, note, _)| json!({
                            "quantity": q,
                            "customerNote": note,
                            "fulfillmentLineItem": {"id": fli},
                        })).collect::<Vec<_>>()},
                    })).collect::<Vec<_>>()},
                }}}),
            }
        } else if query.contains(" AftersalesFulfilled(") {
            match find(&mut s, &vars["id"]) {
                None => json!({"data": {"order": null}}),
                Some(o) => {
                    let num = o.num;
                    json!({"data": {"order": {
                        "id": vars["id"],
                        "fulfillments": o.fulfillments.iter().map(|f| json!({
                            "id": f.id,
                            "status": f.status,
                            "fulfillmentLineItems": {"nodes": f.lines.iter().map(|(id, i, q)| json!({
                                "id": id,
                                "quantity": q,
                                "lineItem": {"id": format!("gid://shopify/LineItem/{num}{i}")},
                            })).collect::<Vec<_>>()},
                        })).collect::<Vec<_>>(),
                    }}})
                }
            }
        } else if query.contains(" AftersalesReturnRequest(") {
            return_request(&mut s, &vars)
        } else if query.contains(" AftersalesReturn(") {
            let id = vars["id"].as_str().unwrap_or("");
            let found = s
                .orders
                .iter()
                .flat_map(|o| o.returns.iter())
                .find(|r| r.id == id)
                .map(|r| json!({"id": r.id, "status": r.status}));
            json!({"data": {"return": found}})
        } else if query.contains(" AftersalesReturnApprove(") {
            return_transition(&mut s, &vars, "returnApproveRequest", "OPEN")
        } else if query.contains(" AftersalesReturnDecline(") {
            return_transition(&mut s, &vars, "returnDeclineRequest", "DECLINED")
        } else if query.contains(" AftersalesReturnCancel(") {
            return_cancel(&mut s, &vars)
        } else if query.contains(" AftersalesCancelState(") {
            match find(&mut s, &vars["id"]) {
                None => json!({"data": {"order": null}}),
                Some(o) => {
                    json!({"data": {"order": {"id": vars["id"], "cancelledAt": o.cancelled_at}}})
                }
            }
        } else if query.contains(" AftersalesCancel(") {
            order_cancel(&mut s, &vars)
        } else if query.contains(" AftersalesJob(") {
            job(&mut s, &vars)
        } else {
            json!({"errors": [{"message": "Field 'unknown' doesn't exist", "extensions": {"code": "undefinedField"}}]})
        };
        let t = ResponseTemplate::new(200).set_body_json(answer);
        match fault {
            Some(Fault::LoseAnswer) => t.set_delay(LOST_ANSWER_DELAY),
            _ => t,
        }
    }
}

fn find<'a>(s: &'a mut State, id: &Value) -> Option<&'a mut MOrder> {
    let id = id.as_str()?;
    s.orders
        .iter_mut()
        .find(|o| format!("gid://shopify/Order/{}", o.num) == id)
}

fn refund_create(s: &mut State, query: &str, vars: &Value) -> Value {
    if !query.contains("@idempotent(key: $key)") {
        return json!({"errors": [{"message": "The @idempotent directive is required for this mutation", "extensions": {"code": "BAD_REQUEST"}}]});
    }
    let key = vars["key"].as_str().unwrap_or("").to_owned();
    let input = vars["input"].clone();
    if let Some((saved_input, saved)) = s.keys.get(&key) {
        if *saved_input != input {
            return json!({"data": {"refundCreate": {"refund": null, "userErrors": [
                {"field": ["idempotencyKey"], "message": "The idempotency key was already used with different parameters", "code": "IDEMPOTENCY_KEY_PARAMETER_MISMATCH"}
            ]}}});
        }
        return saved.clone();
    }
    s.next += 1;
    let refund_no = s.next;
    let answer = match find(s, &input["orderId"]) {
        None => {
            json!({"data": {"refundCreate": {"refund": null, "userErrors": [{"field": ["orderId"], "message": "Order does not exist"}]}}})
        }
        Some(o) => {
            let exp = o.spec.exponent;
            let mut total = 0i64;
            let mut bad = None;
            for t in input["transactions"]
                .as_array()
                .cloned()
                .unwrap_or_default()
            {
                let text = t["amount"].as_str().unwrap_or("x");
                let minor = parse_decimal(text, exp);
                let parent_ok = t["parentId"].as_str()
                    == Some(format!("gid://shopify/OrderTransaction/{}1", o.num).as_str());
                match minor {
                    Some(m) if parent_ok && t["kind"] == "REFUND" => total += m,
                    _ => bad = Some(text.to_owned()),
                }
            }
            let left = o.captured - o.refunds.iter().map(|r| r.2).sum::<i64>();
            if let Some(text) = bad {
                json!({"data": {"refundCreate": {"refund": null, "userErrors": [{"field": ["transactions", "0"], "message": format!("Transaction {text} is invalid")}]}}})
            } else if total > left || total <= 0 {
                json!({"data": {"refundCreate": {"refund": null, "userErrors": [{"field": ["transactions", "0", "amount"], "message": format!("Amount {} cannot be greater than the refundable amount of {}", decimal(total, exp), decimal(left, exp))}]}}})
            } else {
                let id = format!("gid://shopify/Refund/{}", 9_000 + refund_no);
                let note = input["note"].as_str().unwrap_or("").to_owned();
                o.refunds.push((id.clone(), note, total));
                json!({"data": {"refundCreate": {"refund": {"id": id}, "userErrors": []}}})
            }
        }
    };
    s.keys.insert(key, (input, answer.clone()));
    answer
}

const RETURN_REASONS: &[&str] = &[
    "COLOR",
    "DEFECTIVE",
    "NOT_AS_DESCRIBED",
    "OTHER",
    "SIZE_TOO_LARGE",
    "SIZE_TOO_SMALL",
    "STYLE",
    "UNKNOWN",
    "UNWANTED",
    "WRONG_ITEM",
];

fn return_errors(op: &str, field: Value, message: String, code: &str) -> Value {
    json!({"data": {op: {"return": null, "userErrors": [{"field": field, "message": message, "code": code}]}}})
}

fn return_request(s: &mut State, vars: &Value) -> Value {
    let op = "returnRequest";
    let input = &vars["input"];
    s.next += 1;
    let n = s.next;
    let Some(o) = find(s, &input["orderId"]) else {
        return return_errors(
            op,
            json!(["input", "orderId"]),
            "Order does not exist".into(),
            "NOT_FOUND",
        );
    };
    let items = input["returnLineItems"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if items.is_empty() {
        return return_errors(
            op,
            json!(["input", "returnLineItems"]),
            "Return line items can't be blank".into(),
            "BLANK",
        );
    }
    // What each fulfillment line item has left: fulfilled minus what returns still hold.
    let mut free: HashMap<String, i64> = HashMap::new();
    for f in o.fulfillments.iter().filter(|f| f.status == "SUCCESS") {
        for (id, _, q) in &f.lines {
            free.insert(id.clone(), i64::from(*q));
        }
    }
    for r in o
        .returns
        .iter()
        .filter(|r| r.status != "DECLINED" && r.status != "CANCELED")
    {
        for (fli, q, _, _) in &r.lines {
            *free.entry(fli.clone()).or_insert(0) -= i64::from(*q);
        }
    }
    let mut lines = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let field = json!(["input", "returnLineItems", i.to_string()]);
        let fli = item["fulfillmentLineItemId"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let quantity = item["quantity"].as_i64().unwrap_or(0);
        let reason = item["returnReason"].as_str().unwrap_or("").to_owned();
        let note = item["customerNote"].as_str().unwrap_or("").to_owned();
        let Some(left) = free.get_mut(&fli) else {
            return return_errors(
                op,
                field,
                format!("Fulfillment line item {fli} is not returnable"),
                "INVALID",
            );
        };
        if quantity <= 0 || quantity > *left {
            return return_errors(
                op,
                field,
                format!("Quantity {quantity} is greater than the returnable quantity {left}"),
                "GREATER_THAN",
            );
        }
        if !RETURN_REASONS.contains(&reason.as_str()) {
            return json!({"errors": [{"message": format!("Variable $input of type ReturnRequestInput! was provided invalid value for returnLineItems.{i}.returnReason"), "extensions": {"code": "INVALID_VARIABLE"}}]});
        }
        if note.chars().count() > 300 {
            return return_errors(
                op,
                field,
                "Customer note is too long (maximum is 300 characters)".into(),
                "TOO_LONG",
            );
        }
        *left -= quantity;
        lines.push((fli, quantity as u32, note, reason));
    }
    let id = format!("gid://shopify/Return/{}", 7_000 + n);
    o.returns.push(MReturn {
        id: id.clone(),
        status: "REQUESTED".into(),
        lines,
        decline: None,
        notified: None,
    });
    json!({"data": {op: {"return": {"id": id, "status": "REQUESTED"}, "userErrors": []}}})
}

/// `metafieldsSet`: every input needs an owner, namespace, key, type and value; the key
/// is 2 to 64 characters of `[A-Za-z0-9_-]`; a JSON value must parse.
fn metafields_set(s: &mut State, vars: &Value) -> Value {
    let inputs = vars["metafields"].as_array().cloned().unwrap_or_default();
    let mut keys = Vec::new();
    for (i, m) in inputs.iter().enumerate() {
        let field = |f: &str| m[f].as_str().unwrap_or("").to_owned();
        let (owner, namespace, key, ty, value) = (
            m["ownerId"].clone(),
            field("namespace"),
            field("key"),
            field("type"),
            field("value"),
        );
        let key_ok = (2..=64).contains(&key.len())
            && key
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
        let bad = if !key_ok {
            Some(("key", "Key is invalid"))
        } else if ty == "json" && serde_json::from_str::<Value>(&value).is_err() {
            Some(("value", "Value is invalid JSON"))
        } else if namespace.len() < 3 {
            Some(("namespace", "Namespace is too short"))
        } else {
            None
        };
        if let Some((f, message)) = bad {
            return json!({"data": {"metafieldsSet": {"metafields": null, "userErrors": [
                {"field": ["metafields", i.to_string(), f], "message": message, "code": "INVALID"}]}}});
        }
        let Some(o) = find(s, &owner) else {
            return json!({"data": {"metafieldsSet": {"metafields": null, "userErrors": [
                {"field": ["metafields", i.to_string(), "ownerId"], "message": "Owner does not exist", "code": "INVALID"}]}}});
        };
        o.metafields
            .insert(format!("{namespace}.{key}"), (ty, value));
        keys.push(json!({"key": key}));
    }
    json!({"data": {"metafieldsSet": {"metafields": keys, "userErrors": []}}})
}

/// `returnCancel`: only an `OPEN` return with nothing received (the mock receives nothing)
/// is cancelled; its units are free to return again.
fn return_cancel(s: &mut State, vars: &Value) -> Value {
    let id = vars["id"].as_str().unwrap_or("");
    let Some(r) = s
        .orders
        .iter_mut()
        .flat_map(|o| o.returns.iter_mut())
        .find(|r| r.id == id)
    else {
        return return_errors(
            "returnCancel",
            json!(["id"]),
            "Return does not exist".into(),
            "NOT_FOUND",
        );
    };
    if r.status != "OPEN" {
        return return_errors(
            "returnCancel",
            json!(["id"]),
            format!("Return is not cancelable. Current status: {}", r.status),
            "INVALID_STATE",
        );
    }
    r.status = "CANCELED".into();
    json!({"data": {"returnCancel": {"return": {"id": r.id, "status": r.status}, "userErrors": []}}})
}

fn return_transition(s: &mut State, vars: &Value, op: &str, to: &str) -> Value {
    let input = &vars["input"];
    let id = input["id"].as_str().unwrap_or("");
    let Some(r) = s
        .orders
        .iter_mut()
        .flat_map(|o| o.returns.iter_mut())
        .find(|r| r.id == id)
    else {
        return return_errors(
            op,
            json!(["input", "id"]),
            "Return does not exist".into(),
            "NOT_FOUND",
        );
    };
    if r.status != "REQUESTED" {
        let verb = if to == "OPEN" { "approved" } else { "declined" };
        return return_errors(
            op,
            json!(["input", "id"]),
            format!(
                "Return is not {verb}able. Only returns with status REQUESTED can be {verb}. Current status: {}",
                r.status
            ),
            "INVALID_STATE",
        );
    }
    if to == "DECLINED" {
        let reason = input["declineReason"].as_str().unwrap_or("").to_owned();
        if !["FINAL_SALE", "OTHER", "RETURN_PERIOD_ENDED"].contains(&reason.as_str()) {
            return json!({"errors": [{"message": "Variable $input of type ReturnDeclineRequestInput! was provided invalid value for declineReason", "extensions": {"code": "INVALID_VARIABLE"}}]});
        }
        let note = input["declineNote"].as_str().map(str::to_owned);
        if note.as_ref().is_some_and(|n| n.chars().count() > 500) {
            return return_errors(
                op,
                json!(["input", "declineNote"]),
                "Decline note is too long (maximum is 500 characters)".into(),
                "TOO_LONG",
            );
        }
        r.decline = Some((reason, note));
    }
    r.status = to.to_owned();
    r.notified = input["notifyCustomer"].as_bool();
    json!({"data": {op: {"return": {"id": r.id, "status": r.status}, "userErrors": []}}})
}

fn cancel_errors(field: &str, message: &str, code: &str) -> Value {
    json!({"data": {"orderCancel": {"job": null, "orderCancelUserErrors": [{"field": [field], "message": message, "code": code}]}}})
}

fn order_cancel(s: &mut State, vars: &Value) -> Value {
    if vars.get("refund").is_some() {
        return json!({"errors": [{"message": "Field 'orderCancel' doesn't accept argument 'refund'", "extensions": {"code": "argumentNotAccepted"}}]});
    }
    let reasons = [
        "CUSTOMER",
        "DECLINED",
        "FRAUD",
        "INVENTORY",
        "OTHER",
        "STAFF",
    ];
    if !reasons.contains(&vars["reason"].as_str().unwrap_or(""))
        || !vars["restock"].is_boolean()
        || !vars["refundMethod"].is_object()
    {
        return json!({"errors": [{"message": "Variable $reason, $restock or $refundMethod is invalid", "extensions": {"code": "INVALID_VARIABLE"}}]});
    }
    s.next += 1;
    let n = s.next;
    let polls = s.cancel_job_polls;
    let Some(o) = find(s, &vars["orderId"]) else {
        return cancel_errors("orderId", "Order does not exist", "NOT_FOUND");
    };
    if o.cancelled_at.is_some() {
        return cancel_errors(
            "orderId",
            "Cannot cancel an order that has already been cancelled",
            "INVALID",
        );
    }
    if o.returns
        .iter()
        .any(|r| r.status == "REQUESTED" || r.status == "OPEN")
    {
        return cancel_errors(
            "orderId",
            "Cannot cancel an order with returns in progress",
            "INVALID",
        );
    }
    let num = o.num;
    // A cancellation already under way: the same job.
    if let Some((id, _)) = s
        .jobs
        .iter()
        .find(|(_, j)| j.order == num && j.polls_left > 0)
    {
        return json!({"data": {"orderCancel": {"job": {"id": id, "done": false}, "orderCancelUserErrors": []}}});
    }
    let Some(o) = find(s, &vars["orderId"]) else {
        return cancel_errors("orderId", "Order does not exist", "NOT_FOUND");
    };
    o.cancels.push(vars.clone());
    let id = format!("gid://shopify/Job/{}", 8_000 + n);
    if polls == 0 {
        o.cancelled_at = Some("2025-11-22T09:00:00Z".into());
        o.times_cancelled += 1;
    }
    s.jobs.insert(
        id.clone(),
        MJob {
            order: num,
            polls_left: polls,
        },
    );
    json!({"data": {"orderCancel": {"job": {"id": id, "done": polls == 0}, "orderCancelUserErrors": []}}})
}

fn job(s: &mut State, vars: &Value) -> Value {
    let id = vars["id"].as_str().unwrap_or("").to_owned();
    let Some(j) = s.jobs.get_mut(&id) else {
        return json!({"data": {"job": null}});
    };
    let was_running = j.polls_left > 0;
    j.polls_left = j.polls_left.saturating_sub(1);
    let done = j.polls_left == 0;
    let order = j.order;
    if done
        && was_running
        && let Some(o) = s.orders.iter_mut().find(|o| o.num == order)
    {
        o.cancelled_at = Some("2025-11-22T09:00:00Z".into());
        o.times_cancelled += 1;
    }
    json!({"data": {"job": {"id": id, "done": done}}})
}

/// Reads a decimal exactly, as Shopify does; `None` for anything else.
fn parse_decimal(text: &str, exponent: u32) -> Option<i64> {
    let (int, frac) = text.split_once('.').unwrap_or((text, ""));
    if frac.len() > exponent as usize || int.is_empty() {
        return None;
    }
    let int: i64 = int.parse().ok()?;
    let mut f = frac.to_owned();
    while f.len() < exponent as usize {
        f.push('0');
    }
    let frac: i64 = if f.is_empty() { 0 } else { f.parse().ok()? };
    Some(int * 10i64.pow(exponent) + frac)
}

/// The conformance harness: a fresh adapter per check against a shared mock.
pub struct ShopifyHarness {
    pub api: Arc<MockShopify>,
    pub order: Arc<dyn OrderSystem>,
}

#[async_trait]
impl OrderHarness for ShopifyHarness {
    fn order(&self) -> Arc<dyn OrderSystem> {
        self.order.clone()
    }

    async fn paid_order(&self) -> (OrderId, LineRef) {
        let mut spec = MOrderSpec::simple("tee-m", 2, 2_250);
        spec.shipping = 500;
        spec.lines[0].coupon_share = 300;
        let id = self.api.add_order(spec);
        (
            OrderId::new(id.clone()),
            LineRef {
                line_id: format!("gid://shopify/LineItem/{id}0").into(),
                sku: "tee-m".into(),
                quantity: 2,
            },
        )
    }
}
