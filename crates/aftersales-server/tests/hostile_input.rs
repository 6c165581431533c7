//! Hostile input against the HTTP API, in process, over the shipped workflows and business
//! lines with the simulator behind every line: malformed and mis-shaped JSON, wrong content
//! types, oversized and deeply nested bodies, forged and replayed webhooks, unknown and
//! malformed ids, missing and weak tokens, reused idempotency keys. Every one must answer a
//! 4xx problem that names what is wrong, and leave the store exactly as it was.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aftersales_adapter::ids::{BuyerId, LineId, OrderId, Sku};
use aftersales_adapter::{Registry, Secret, WebhookVerifier};
use aftersales_adapter_sim::{LineDetails, NewLine, NewOrder, Sim, SimConfig, SimWebhookVerifier};
use aftersales_core::diag::Source;
use aftersales_core::engine::{Clock, Engine, ManualClock, WorkerConfig};
use aftersales_core::store::ListFilter;
use aftersales_core::store::memory::MemoryStore;
use aftersales_core::validate::check_sources;
use aftersales_money::{Currency, Money};
use aftersales_runtime::AdapterDispatcher;
use aftersales_runtime::business_line::{CrossCheck, load_dir};
use aftersales_runtime::service::{AfterSales, Line};
use aftersales_server::{AppState, Auth, Scope, Token, router};
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

/// 2026-11-26T00:00:00Z: the engine's and the simulator's manual clock.
const START_MS: i64 = 1_795_651_200_000;
/// The daemon's default body limit (`[server] body_limit_bytes` in config/aftersales.toml).
const BODY_LIMIT: usize = 1024 * 1024;
const WEBHOOK_SECRET: &str = "whsec_hostile";
const ADMIN: &str = "Bearer t-admin";
const SHOP: &str = "Bearer t-shop";
const READER: &str = "Bearer t-reader";

/// A workflow for `/v1/instances`: a merchant's decision, then the parcel's arrival.
const REVIEW_WF: &str = r#"
[workflow]
name = "hostile.review"
version = 1

[input]
order_id = "string"
amount = "money"

[[step]]
id = "review"
wait = { signal = "merchant.decision", timeout = "2d", on_timeout = "closed", payload = { approved = "bool" } }
next = [
    { if = "steps.review.approved", goto = "done" },
    { goto = "rejected" },
]

[[step]]
id = "done"
end = "completed"

[[step]]
id = "rejected"
end = "rejected"
reason = "the merchant said no"

[[step]]
id = "closed"
end = "closed"
"#;

/// A workflow waiting for the warehouse's webhook from its first step.
const RETURN_WF: &str = r#"
[workflow]
name = "hostile.return"
version = 1

[input]
rma_id = "string"

[[step]]
id = "arrive"
wait = { event = "warehouse.return.received", correlate = "${input.rma_id}", timeout = "10d", on_timeout = "lost", payload = { inspection_passed = "bool" } }

[[step]]
id = "done"
end = "completed"

[[step]]
id = "lost"
end = "closed"
"#;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn cny(minor: i64) -> Money {
    Money::new(minor, Currency::CNY)
}

fn workflow_files() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for kind in ["physical", "virtual", "bundle"] {
        let mut paths: Vec<PathBuf> = std::fs::read_dir(root().join("workflows").join(kind))
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "toml"))
            .collect();
        paths.sort();
        for p in paths {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
    out.push(("hostile/review.toml".into(), REVIEW_WF.into()));
    out.push(("hostile/return.toml".into(), RETURN_WF.into()));
    out
}

/// One answer: status, content type and the body as JSON (or as a JSON string when it is
/// not JSON).
#[derive(Debug)]
struct Resp {
    status: StatusCode,
    ctype: String,
    body: Value,
}

impl Resp {
    /// Asserts a problem+json answer with this status and code whose `detail` mentions every
    /// one of `mentions` (case-insensitive): the caller can tell what to fix.
    #[track_caller]
    fn problem(&self, status: StatusCode, code: &str, mentions: &[&str]) {
        assert_eq!(self.status, status, "{self:?}");
        assert_eq!(self.ctype, "application/problem+json", "{self:?}");
        assert_eq!(self.body["code"], code, "{self:?}");
        assert_eq!(self.body["status"], status.as_u16(), "{self:?}");
        let detail = self.body["detail"]
            .as_str()
            .unwrap_or_default()
            .to_lowercase();
        for m in mentions {
            assert!(
                detail.contains(&m.to_lowercase()),
                "`{m}` not in the detail: {self:?}"
            );
        }
    }
}

/// The daemon in process: the shipped workflows and business lines, the simulator behind
/// every line, the in-memory store, tokens with each scope, one webhook endpoint.
struct World {
    app: axum::Router,
    engine: Arc<Engine>,
    sim: Sim,
    clock: ManualClock,
}

/// What [`World::seeded`] created.
struct Seeded {
    /// A service order waiting for the merchant's decision.
    service_order: String,
    /// An `hostile.review` instance waiting for `merchant.decision`.
    review: String,
    /// An `hostile.return` instance waiting for `warehouse.return.received` on `rma-9`.
    waiting_for_webhook: String,
}

impl World {
    async fn new() -> World {
        let clock = ManualClock::new(START_MS);
        let sim_clock = clock.clone();
        let sim = Sim::new(SimConfig::quiet(7), move || {
            UNIX_EPOCH + Duration::from_millis(u64::try_from(sim_clock.now_ms()).unwrap())
        });
        let files = workflow_files();
        let sources: Vec<Source> = files.iter().map(|(n, t)| Source::new(n, t)).collect();
        let report = check_sources(&sources, &aftersales_runtime::catalogue::builtin(), true);
        assert!(report.is_ok(), "{:#?}", report.diagnostics);
        let workflows: Vec<_> = report.workflows.iter().map(|(_, w)| w).collect();
        let mut registry = Registry::new();
        aftersales_adapter_sim::register(&mut registry);
        let loaded = load_dir(
            &root().join("config/business-lines"),
            &CrossCheck {
                workflows: &workflows,
                registry: &registry,
                refs_must_resolve: true,
            },
        )
        .unwrap();
        let set = Arc::new(sim.adapter_set());
        let mut dispatcher = AdapterDispatcher::new();
        let mut lines = Vec::new();
        for (_, line) in loaded.lines {
            dispatcher.bind(line.id.to_string(), set.clone());
            lines.push(Line {
                config: line,
                adapters: set.clone(),
            });
        }
        let engine = Arc::new(Engine::new(
            Arc::new(MemoryStore::new()),
            Arc::new(clock.clone()),
            Arc::new(dispatcher),
            aftersales_runtime::catalogue::builtin(),
        ));
        engine.deploy(&files).await.unwrap();
        let service = Arc::new(AfterSales::new(engine.clone(), lines));
        let app = router(AppState {
            engine: engine.clone(),
            auth: Arc::new(Auth::new(vec![
                Token::new("ops", "t-admin", vec![Scope::Admin]),
                Token::new("shop", "t-shop", vec![Scope::Submit, Scope::Read]),
                Token::new("dashboard", "t-reader", vec![Scope::Read]),
            ])),
            body_limit: BODY_LIMIT,
            metrics: None,
            webhooks: Arc::new(HashMap::from([(
                "apparel.warehouse".to_owned(),
                Arc::new(SimWebhookVerifier::new(
                    vec![Secret::new(WEBHOOK_SECRET)],
                    Duration::from_secs(300),
                )) as Arc<dyn WebhookVerifier>,
            )])),
            service: Some(service),
        });
        World {
            app,
            engine,
            sim,
            clock,
        }
    }

    /// A paid, delivered apparel order of two T-shirts at 99.00 each.
    fn order(&self, order: &str) {
        self.sim
            .create_order(NewOrder {
                order_id: OrderId::new(order),
                buyer_id: BuyerId::new("buyer-1"),
                lines: vec![NewLine {
                    line_id: LineId::new("l1"),
                    sku: Sku::new("tee-m"),
                    spu: "tee".into(),
                    quantity: 2,
                    unit_price: cny(9_900),
                    paid: cny(19_800),
                    entitlement_units: None,
                }],
                shipping_fee: cny(1_000),
            })
            .unwrap();
        self.sim
            .set_line_details(
                &OrderId::new(order),
                &LineId::new("l1"),
                LineDetails {
                    category: Some("general".into()),
                    ..LineDetails::default()
                },
            )
            .unwrap();
        self.sim.mark_delivered(&OrderId::new(order)).unwrap();
    }

    /// A world with something in it to damage: a service order, a review instance and an
    /// instance waiting for a webhook, all parked.
    async fn seeded() -> (World, Seeded) {
        let w = World::new().await;
        w.order("ORD-1");
        w.order("ORD-2");
        let so = w
            .post("/v1/after-sales", Some("so-1"), &submit_body("ORD-1"))
            .await;
        assert_eq!(so.status, StatusCode::CREATED, "{so:?}");
        let review = w
            .post("/v1/instances", Some("inst-1"), &start_body("o-1"))
            .await;
        assert_eq!(review.status, StatusCode::CREATED, "{review:?}");
        let ret = w
            .post(
                "/v1/instances",
                Some("inst-2"),
                &json!({"workflow": "hostile.return", "business_line": "apparel", "input": {"rma_id": "rma-9"}}).to_string(),
            )
            .await;
        assert_eq!(ret.status, StatusCode::CREATED, "{ret:?}");
        w.settle().await;
        let seeded = Seeded {
            service_order: so.body["id"].as_str().unwrap().to_owned(),
            review: review.body["id"].as_str().unwrap().to_owned(),
            waiting_for_webhook: ret.body["id"].as_str().unwrap().to_owned(),
        };
        let so = w
            .get(&format!("/v1/after-sales/{}", seeded.service_order))
            .await;
        assert_eq!(so.body["state"], "under_review", "{so:?}");
        (w, seeded)
    }

    /// Runs the engine until nothing is due, handing over the simulator's events.
    async fn settle(&self) {
        let cfg = WorkerConfig::default();
        for _ in 0..50 {
            self.engine.run_until_idle(&cfg).await.unwrap();
            self.sim.settle_due();
            let events = self.sim.drain_events();
            if events.is_empty() {
                return;
            }
            for e in events {
                self.engine
                    .event(&e.name, &e.correlation, &e.dedupe_id, e.payload)
                    .await
                    .unwrap();
            }
        }
        panic!("the world did not settle in 50 rounds");
    }

    /// Everything stored, as text: every instance row (state, inbox wake-ups, due times),
    /// its history, the sales feed, the counts, and the simulator's money ledger. Two equal
    /// snapshots mean a request changed nothing.
    async fn snapshot(&self) -> String {
        let store = self.engine.store();
        let rows = store
            .list_instances(&ListFilter {
                limit: 100_000,
                ..ListFilter::default()
            })
            .await
            .unwrap();
        let mut out = format!("{rows:#?}\n");
        for r in &rows {
            let h = store.history(&r.id, 0, 100_000).await.unwrap();
            out.push_str(&format!("{h:#?}\n"));
        }
        let sales = store.sales_totals(i64::MIN, i64::MAX).await.unwrap();
        let stats = store.stats(self.clock.now_ms()).await.unwrap();
        out.push_str(&format!(
            "{sales:#?}\n{stats:#?}\n{:#?}\n",
            self.sim.ledger()
        ));
        out
    }

    /// Sends a request as it is.
    async fn send(&self, req: Request<Body>) -> Resp {
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        Resp {
            status,
            ctype,
            body,
        }
    }

    /// `POST` a JSON body with the admin token and an optional idempotency key.
    async fn post(&self, path: &str, key: Option<&str>, body: &str) -> Resp {
        self.post_bytes(path, key, body.as_bytes().to_vec()).await
    }

    async fn post_bytes(&self, path: &str, key: Option<&str>, body: Vec<u8>) -> Resp {
        let mut req = Request::post(path)
            .header("authorization", ADMIN)
            .header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        self.send(req.body(Body::from(body)).unwrap()).await
    }

    /// `GET` with the admin token.
    async fn get(&self, path: &str) -> Resp {
        self.send(
            Request::get(path)
                .header("authorization", ADMIN)
                .body(Body::empty())
                .unwrap(),
        )
        .await
    }
}

fn submit_body(order: &str) -> String {
    json!({
        "business_line": "apparel",
        "order_id": order,
        "type": "return_refund",
        "lines": [{"line_id": "l1", "quantity": 1}],
        "reason": "wrong_size",
    })
    .to_string()
}

fn start_body(order: &str) -> String {
    json!({
        "workflow": "hostile.review",
        "business_line": "apparel",
        "input": {"order_id": order, "amount": {"minor": 19_900, "currency": "CNY"}},
        "search_key": order,
    })
    .to_string()
}

/// The engine's clock as a wall-clock time: webhooks are checked against it.
fn engine_now() -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(u64::try_from(START_MS).unwrap())
}

/// A request with these headers and, when given, this body.
fn request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Request<Body> {
    let mut req = Request::builder().method(method).uri(path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(body.map_or_else(Body::empty, Body::from)).unwrap()
}

/// One endpoint that takes a body, with a body it accepts.
struct Intake {
    path: String,
    body: Value,
}

impl Intake {
    /// Its own idempotency key (or signal dedupe id), so no two endpoints share one.
    fn key(&self) -> String {
        format!("intake-{}", self.path)
    }
}

/// Every endpoint that takes a JSON body, each with a body it accepts; none of them was
/// sent before in a seeded world.
fn intakes(s: &Seeded) -> Vec<Intake> {
    let so = &s.service_order;
    let review = &s.review;
    [
        // The quote first: once the submit is taken, the order has an open request.
        ("/v1/after-sales/quote".to_owned(), serde_json::from_str(&submit_body("ORD-2")).unwrap()),
        ("/v1/after-sales".to_owned(), serde_json::from_str(&submit_body("ORD-2")).unwrap()),
        ("/v1/instances".to_owned(), serde_json::from_str(&start_body("o-2")).unwrap()),
        (
            "/v1/events".to_owned(),
            json!({"name": "warehouse.return.received", "correlation": "rma-9", "dedupe_id": "evt-intake", "payload": {"inspection_passed": true}}),
        ),
        (
            format!("/v1/instances/{review}/signals/merchant.decision"),
            json!({"payload": {"approved": true}}),
        ),
        (
            format!("/v1/after-sales/{so}/signals/merchant.decision"),
            json!({"payload": {"approved": true}}),
        ),
        (format!("/v1/instances/{review}/cancel"), json!({"reason": "buyer withdrew"})),
        (format!("/v1/after-sales/{so}/cancel"), json!({"reason": "buyer withdrew"})),
        (
            "/v1/sales".to_owned(),
            json!({"sales": [{"id": "sale-1", "business_line": "apparel", "category": "general", "sku": "tee-m", "quantity": 3, "at": "2026-11-25T00:00:00Z"}]}),
        ),
    ]
    .into_iter()
    .map(|(path, body)| Intake { path, body })
    .collect()
}

impl World {
    /// Sends every intake's accepted body once and checks each is taken: the bad requests
    /// of a test differ from these only by what the test broke.
    async fn all_accepted(&self, s: &Seeded) {
        for i in intakes(s) {
            let r = self
                .post(&i.path, Some(&i.key()), &i.body.to_string())
                .await;
            assert!(
                r.status.is_success(),
                "{} refused its good body: {r:?}",
                i.path
            );
        }
    }
}

#[tokio::test]
async fn malformed_json_is_a_400_that_says_so_and_changes_nothing() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    for i in intakes(&s) {
        let good = i.body.to_string();
        let cases: Vec<(Vec<u8>, &[&str])> = vec![
            // Broken where a key is read, so every endpoint trips on the same thing
            // before it could object to the field.
            (b"{\"busi".to_vec(), &["EOF while parsing"]),
            (b"not json".to_vec(), &["must be a JSON object"]),
            (b"".to_vec(), &["empty"]),
            (b"{'reason': 'x'}".to_vec(), &["key must be a string"]),
            (b"{\"\xff\xfe\": 1}".to_vec(), &["invalid unicode"]),
            (b"{\"a\x01b\": 1}".to_vec(), &["control character"]),
            (b"{\"a\\u0000b\": 1}".to_vec(), &["NUL"]),
            (
                format!("{{\"reason\": \"a\\u0000b\", {}", &good[1..]).into_bytes(),
                &["NUL"],
            ),
            (
                format!("{},}}", &good[..good.len() - 1]).into_bytes(),
                &["trailing comma"],
            ),
            // A good body followed by anything: once accepted and acted on.
            (
                format!("{good} garbage").into_bytes(),
                &["trailing characters"],
            ),
            (
                format!("{good}{good}").into_bytes(),
                &["trailing characters"],
            ),
            // A struct written as an array: serde would read it by position.
            (
                b"[\"apparel\", \"ORD-2\"]".to_vec(),
                &["must be a JSON object"],
            ),
            (b"\"apparel\"".to_vec(), &["must be a JSON object"]),
            (b"null".to_vec(), &["must be a JSON object"]),
        ];
        for (body, mentions) in cases {
            let r = w.post_bytes(&i.path, Some(&i.key()), body.clone()).await;
            r.problem(StatusCode::BAD_REQUEST, "AS-API-0400", mentions);
            assert_eq!(
                w.snapshot().await,
                before,
                "POST {} {:?} changed the store",
                i.path,
                String::from_utf8_lossy(&body)
            );
        }
    }
    w.all_accepted(&s).await;
}

#[tokio::test]
async fn a_body_not_declared_as_json_is_a_415() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    for i in intakes(&s) {
        let key = i.key();
        for ctype in [
            None,
            Some("text/plain"),
            Some("application/x-www-form-urlencoded"),
            Some("multipart/form-data; boundary=x"),
            Some("application/xml"),
        ] {
            let mut headers = vec![("authorization", ADMIN), ("idempotency-key", key.as_str())];
            if let Some(c) = ctype {
                headers.push(("content-type", c));
            }
            let r = w
                .send(request(
                    "POST",
                    &i.path,
                    &headers,
                    Some(i.body.to_string().into_bytes()),
                ))
                .await;
            r.problem(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "AS-API-0406",
                &["Content-Type: application/json"],
            );
        }
    }
    assert_eq!(w.snapshot().await, before);
    w.all_accepted(&s).await;
}

/// A body with one field changed or removed.
fn with(body: &Value, pointer: &str, value: Option<Value>) -> String {
    let mut b = body.clone();
    let (parent, last) = pointer.rsplit_once('/').unwrap();
    let target = b.pointer_mut(parent).unwrap();
    match (target, value) {
        (Value::Object(m), Some(v)) => {
            m.insert(last.to_owned(), v);
        }
        (Value::Object(m), None) => {
            m.remove(last);
        }
        (Value::Array(a), Some(v)) => a[last.parse::<usize>().unwrap()] = v,
        (other, _) => panic!("cannot change {pointer} in {other}"),
    }
    b.to_string()
}

#[tokio::test]
async fn json_of_the_wrong_shape_names_the_field_and_changes_nothing() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    let all = intakes(&s);
    let body = |path_start: &str| {
        all.iter()
            .find(|i| i.path.starts_with(path_start))
            .unwrap()
            .body
            .clone()
    };
    let submit = body("/v1/after-sales");
    let start = body("/v1/instances");
    let event = body("/v1/events");
    let signal = json!({"payload": {"approved": true}});
    let cancel = json!({"reason": "x"});
    let sales = body("/v1/sales");
    let long = "x".repeat(256);
    let review_signal = format!("/v1/instances/{}/signals/merchant.decision", s.review);
    let so_signal = format!(
        "/v1/after-sales/{}/signals/merchant.decision",
        s.service_order
    );
    let review_cancel = format!("/v1/instances/{}/cancel", s.review);
    let so_cancel = format!("/v1/after-sales/{}/cancel", s.service_order);
    let bad = StatusCode::BAD_REQUEST;
    let cases: Vec<(&str, String, StatusCode, &str, Vec<&str>)> = vec![
        // A buyer's request.
        (
            "/v1/after-sales",
            with(&submit, "/order_id", None),
            bad,
            "AS-API-0400",
            vec!["missing field `order_id`"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/lines", Some(json!("l1"))),
            bad,
            "AS-API-0400",
            vec!["field `lines`", "expected a sequence"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/lines/0/quantity", Some(json!(-1))),
            bad,
            "AS-API-0400",
            vec!["field `lines[0].quantity`"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/lines/0/quantity", Some(json!("1"))),
            bad,
            "AS-API-0400",
            vec!["field `lines[0].quantity`"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/lines/0/quantity", Some(json!(1u64 << 40))),
            bad,
            "AS-API-0400",
            vec!["field `lines[0].quantity`"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/type", Some(json!("refund_everything"))),
            bad,
            "AS-API-0400",
            vec!["field `type`", "unknown variant"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/reason", Some(json!("bored"))),
            bad,
            "AS-API-0400",
            vec!["field `reason`", "unknown variant"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/priority", Some(json!(1))),
            bad,
            "AS-API-0400",
            vec!["unknown field `priority`"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/business_line", Some(json!(7))),
            bad,
            "AS-API-0400",
            vec!["field `business_line`"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/evidence", Some(json!({"photo": 1}))),
            bad,
            "AS-API-0400",
            vec!["field `evidence`"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/order_id", Some(json!(""))),
            bad,
            "AS-API-0400",
            vec!["field `order_id`", "1 to 255 bytes"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/order_id", Some(json!(long))),
            bad,
            "AS-API-0400",
            vec!["field `order_id`", "got 256"],
        ),
        (
            "/v1/after-sales",
            with(&submit, "/business_line", Some(json!("shoes"))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AS-API-0422",
            vec!["unknown business line `shoes`"],
        ),
        (
            "/v1/after-sales/quote",
            with(&submit, "/lines/0/line_id", None),
            bad,
            "AS-API-0400",
            vec!["field `lines[0]`", "missing field `line_id`"],
        ),
        // An engine start.
        (
            "/v1/instances",
            with(&start, "/workflow", None),
            bad,
            "AS-API-0400",
            vec!["missing field `workflow`"],
        ),
        (
            "/v1/instances",
            with(&start, "/version", Some(json!("1"))),
            bad,
            "AS-API-0400",
            vec!["field `version`"],
        ),
        (
            "/v1/instances",
            with(&start, "/version", Some(json!(-1))),
            bad,
            "AS-API-0400",
            vec!["field `version`"],
        ),
        (
            "/v1/instances",
            with(&start, "/business_line", Some(json!(long))),
            bad,
            "AS-API-0400",
            vec!["field `business_line`"],
        ),
        (
            "/v1/instances",
            with(&start, "/search_key", Some(json!("x".repeat(4096)))),
            bad,
            "AS-API-0400",
            vec!["field `search_key`"],
        ),
        (
            "/v1/instances",
            with(&start, "/input", Some(json!([1, 2]))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AS-API-0422",
            vec!["declared inputs"],
        ),
        (
            "/v1/instances",
            with(&start, "/workflow", Some(json!("nope"))),
            StatusCode::NOT_FOUND,
            "AS-API-0404",
            vec!["nope"],
        ),
        // An event.
        (
            "/v1/events",
            with(&event, "/dedupe_id", None),
            bad,
            "AS-API-0400",
            vec!["missing field `dedupe_id`"],
        ),
        (
            "/v1/events",
            with(&event, "/correlation", Some(json!(5))),
            bad,
            "AS-API-0400",
            vec!["field `correlation`"],
        ),
        (
            "/v1/events",
            with(&event, "/name", Some(json!(""))),
            bad,
            "AS-API-0400",
            vec!["field `name`", "1 to 255 bytes"],
        ),
        (
            "/v1/events",
            with(&event, "/dedupe_id", Some(json!("e".repeat(4096)))),
            bad,
            "AS-API-0400",
            vec!["field `dedupe_id`"],
        ),
        (
            "/v1/events",
            with(&event, "/correlation", Some(json!(""))),
            bad,
            "AS-API-0400",
            vec!["field `correlation`"],
        ),
        // Signals and cancels.
        (
            &review_signal,
            with(&signal, "/dedupe_id", Some(json!(5))),
            bad,
            "AS-API-0400",
            vec!["field `dedupe_id`"],
        ),
        (
            &review_signal,
            with(&signal, "/dedupe_id", Some(json!(""))),
            bad,
            "AS-API-0400",
            vec!["field `dedupe_id`"],
        ),
        (
            &review_signal,
            with(&signal, "/payloads", Some(json!({}))),
            bad,
            "AS-API-0400",
            vec!["unknown field `payloads`"],
        ),
        (
            &so_signal,
            with(&signal, "/dedupe_id", Some(json!(long))),
            bad,
            "AS-API-0400",
            vec!["field `dedupe_id`"],
        ),
        // A payload that does not fit what the service order's wait declares: accepted, it
        // would fail the workflow when its branch condition reads the field.
        (
            &so_signal,
            with(&signal, "/payload", Some(json!(1.5))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AS-API-0422",
            vec!["payload of `merchant.decision`", "merchant_review"],
        ),
        (
            &so_signal,
            with(&signal, "/payload/approved", Some(json!("yes"))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AS-API-0422",
            vec!["merchant_review"],
        ),
        (
            &so_signal,
            with(&signal, "/payload/approved", None),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AS-API-0422",
            vec!["merchant_review"],
        ),
        (
            &so_signal,
            with(&signal, "/payload/reason", Some(json!(5))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AS-API-0422",
            vec!["merchant_review"],
        ),
        (
            &review_signal,
            with(&signal, "/payload/approved", Some(json!(null))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AS-API-0422",
            vec!["step `review` of `hostile.review`"],
        ),
        // Fields the wait does not declare are the workflow's business: kept as sent.
        (
            &so_signal,
            with(&signal, "/payload/note", Some(json!({"any": [1.5]}))),
            StatusCode::ACCEPTED,
            "",
            vec![],
        ),
        (
            &review_cancel,
            with(&cancel, "/reason", None),
            bad,
            "AS-API-0400",
            vec!["missing field `reason`"],
        ),
        (
            &so_cancel,
            with(&cancel, "/reason", Some(json!(["x"]))),
            bad,
            "AS-API-0400",
            vec!["field `reason`"],
        ),
        // The sales feed.
        (
            "/v1/sales",
            with(&sales, "/sales/0/quantity", Some(json!(-3))),
            bad,
            "AS-API-0400",
            vec!["field `sales[0].quantity`"],
        ),
        (
            "/v1/sales",
            with(&sales, "/sales/0/id", Some(json!(""))),
            bad,
            "AS-API-0400",
            vec!["field `sales[0].id`"],
        ),
        (
            "/v1/sales",
            with(&sales, "/sales/0/at", Some(json!("yesterday"))),
            bad,
            "AS-API-0402",
            vec!["sales[0].at", "RFC 3339"],
        ),
        (
            "/v1/sales",
            with(&sales, "/sales/0/business_line", Some(json!("shoes"))),
            StatusCode::UNPROCESSABLE_ENTITY,
            "AS-API-0422",
            vec!["shoes"],
        ),
    ];
    let mut snapshot = before;
    for (n, (path, body, status, code, mentions)) in cases.into_iter().enumerate() {
        let r = w.post(path, Some(&format!("shape-{n}")), &body).await;
        if status.is_success() {
            // A payload is the workflow's business: any JSON is taken, and kept as sent.
            assert_eq!(r.status, status, "{r:?}");
            snapshot = w.snapshot().await;
            continue;
        }
        r.problem(status, code, &mentions);
        assert_eq!(
            w.snapshot().await,
            snapshot,
            "POST {path} {body} changed the store"
        );
    }
    let r = w
        .post(
            &so_signal,
            Some("shape-x"),
            r#"{"payload": {"approved": "yes", "reason": 5}}"#,
        )
        .await;
    assert_eq!(
        r.body["errors"],
        json!([
            {"path": "payload.approved", "message": "expected bool, got a string"},
            {"path": "payload.reason", "message": "expected string, got an integer"},
        ]),
        "{r:?}"
    );
}

#[tokio::test]
async fn money_as_a_float_is_refused_never_rounded() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    let submit: Value = serde_json::from_str(&submit_body("ORD-2")).unwrap();
    for (amount, mentions) in [
        (
            json!({"minor": 12.5, "currency": "CNY"}),
            vec!["field `requested_amount.minor`", "floating point"],
        ),
        (
            json!({"minor": 1250.0, "currency": "CNY"}),
            vec!["field `requested_amount.minor`", "floating point"],
        ),
        (
            json!({"minor": 1e3, "currency": "CNY"}),
            vec!["field `requested_amount.minor`"],
        ),
        (
            json!({"minor": "1250", "currency": "CNY"}),
            vec!["field `requested_amount.minor`"],
        ),
        (
            json!({"minor": 9_223_372_036_854_775_808u64, "currency": "CNY"}),
            vec!["field `requested_amount.minor`"],
        ),
        (json!(12.5), vec!["field `requested_amount`"]),
        (json!("12.50"), vec!["field `requested_amount`"]),
        (
            json!({"minor": 1250}),
            vec!["field `requested_amount`", "currency"],
        ),
    ] {
        for path in ["/v1/after-sales", "/v1/after-sales/quote"] {
            let body = with(&submit, "/requested_amount", Some(amount.clone()));
            let r = w.post(path, Some("float-1"), &body).await;
            r.problem(StatusCode::BAD_REQUEST, "AS-API-0400", &mentions);
        }
    }
    // Money in an engine start is checked against the workflow's `money` input.
    let start: Value = serde_json::from_str(&start_body("o-2")).unwrap();
    for amount in [
        json!({"minor": 199.5, "currency": "CNY"}),
        json!(199.5),
        json!({"minor": 19_950, "currency": "CNY", "exponent": 2}),
    ] {
        let body = with(&start, "/input/amount", Some(amount));
        let r = w.post("/v1/instances", Some("float-2"), &body).await;
        r.problem(
            StatusCode::UNPROCESSABLE_ENTITY,
            "AS-API-0422",
            &["declared inputs"],
        );
        let paths: Vec<&str> = r.body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["path"].as_str().unwrap())
            .collect();
        assert_eq!(paths, ["input.amount"], "{r:?}");
    }
    assert_eq!(w.snapshot().await, before);
    w.all_accepted(&s).await;
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_even_when_streamed() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    for i in intakes(&s) {
        // The good body padded with whitespace (still valid JSON) to one byte over.
        let mut body = i.body.to_string().into_bytes();
        body.resize(BODY_LIMIT + 1, b' ');
        let r = w.post_bytes(&i.path, Some(&i.key()), body).await;
        r.problem(StatusCode::PAYLOAD_TOO_LARGE, "AS-API-0413", &["limit"]);
        // Streamed in chunks with no length announced: the limit counts what arrives.
        let (mut tx, rx) = http_body_util::Channel::<axum::body::Bytes>::new(4);
        let key = i.key();
        let req = Request::post(&i.path)
            .header("authorization", ADMIN)
            .header("content-type", "application/json")
            .header("idempotency-key", key.as_str())
            .body(Body::new(rx))
            .unwrap();
        let feeder = tokio::spawn(async move {
            let chunk = axum::body::Bytes::from(vec![b' '; 64 * 1024]);
            for _ in 0..(BODY_LIMIT / chunk.len() + 2) {
                if tx.send_data(chunk.clone()).await.is_err() {
                    break; // The server stopped reading: what the limit is for.
                }
            }
        });
        let r = w.send(req).await;
        feeder.await.unwrap();
        r.problem(StatusCode::PAYLOAD_TOO_LARGE, "AS-API-0413", &["limit"]);
    }
    // The webhook endpoint reads its raw body under the same limit.
    let r = w
        .send(request(
            "POST",
            "/v1/webhooks/apparel.warehouse",
            &[("content-type", "application/json")],
            Some(vec![b'{'; BODY_LIMIT + 1]),
        ))
        .await;
    r.problem(StatusCode::PAYLOAD_TOO_LARGE, "AS-API-0413", &["limit"]);
    assert_eq!(w.snapshot().await, before);
    // Exactly at the limit is read.
    let i = intakes(&s)
        .into_iter()
        .find(|i| i.path == "/v1/events")
        .unwrap();
    let mut body = i.body.to_string().into_bytes();
    body.resize(BODY_LIMIT, b' ');
    let r = w.post_bytes(&i.path, None, body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
}

#[tokio::test]
async fn an_order_the_order_system_does_not_know_is_a_404_naming_it_and_stores_nothing() {
    let (w, _) = World::seeded().await;
    let before = w.snapshot().await;
    let r = w
        .post(
            "/v1/after-sales",
            Some("k-unknown-order"),
            &submit_body("no-such-order"),
        )
        .await;
    r.problem(StatusCode::NOT_FOUND, "AS-API-0404", &["no-such-order"]);
    let quote = w
        .post("/v1/after-sales/quote", None, &submit_body("no-such-order"))
        .await;
    quote.problem(StatusCode::NOT_FOUND, "AS-API-0404", &["no-such-order"]);
    assert_eq!(w.snapshot().await, before);
}

#[tokio::test]
async fn deeply_nested_json_is_a_400_not_a_stack_overflow() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    let depth = 100_000;
    let open = "[".repeat(depth);
    let balanced = format!("{open}{}", "]".repeat(depth));
    let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
    for i in intakes(&s) {
        let top_level = [open.clone(), balanced.clone()];
        for body in top_level {
            let r = w.post(&i.path, Some(&i.key()), &body).await;
            r.problem(
                StatusCode::BAD_REQUEST,
                "AS-API-0400",
                &["must be a JSON object"],
            );
        }
        // A field nested without end, and nested and closed: a field that takes any JSON
        // (a payload, an input) reads down to the parser's depth limit; any other stops at
        // the first bracket, which is not its type.
        let fields = i.body.as_object().unwrap();
        let (field, mentions): (&str, &[&str]) = if fields.contains_key("payload") {
            ("payload", &["field `payload", "recursion limit exceeded"])
        } else if fields.contains_key("input") {
            ("input", &["field `input", "recursion limit exceeded"])
        } else {
            (fields.keys().next().unwrap().as_str(), &["invalid type"])
        };
        for nested in [&open, &balanced, &objects] {
            let body = format!("{{\"{field}\": {nested}}}");
            let r = w.post(&i.path, Some(&i.key()), &body).await;
            r.problem(StatusCode::BAD_REQUEST, "AS-API-0400", mentions);
        }
    }
    assert_eq!(w.snapshot().await, before);
    // As deep as the parser takes is carried through the engine, which stores and runs it
    // without overflowing either.
    let deep = format!("{}true{}", "[".repeat(120), "]".repeat(120));
    let r = w
        .post(
            &format!("/v1/instances/{}/signals/merchant.decision", s.review),
            Some("deep-1"),
            &format!("{{\"payload\": {{\"approved\": true, \"note\": {deep}}}}}"),
        )
        .await;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{r:?}");
    w.settle().await;
    let r = w.get(&format!("/v1/instances/{}", s.review)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["status"], "completed", "{r:?}");
    let r = w.get(&format!("/v1/instances/{}/history", s.review)).await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
}

/// The warehouse's webhook body for the parcel `hostile.return` waits for.
fn webhook_body(passed: bool) -> Vec<u8> {
    json!({
        "id": "evt_1",
        "type": "warehouse.return.received",
        "correlation": "rma-9",
        "data": {"inspection_passed": passed},
    })
    .to_string()
    .into_bytes()
}

impl World {
    async fn webhook(&self, name: &str, headers: &[(&str, &str)], body: Vec<u8>) -> Resp {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.send(request(
            "POST",
            &format!("/v1/webhooks/{name}"),
            &all,
            Some(body),
        ))
        .await
    }
}

#[tokio::test]
async fn webhooks_with_a_bad_missing_or_replayed_signature_change_nothing() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    let secret = Secret::new(WEBHOOK_SECRET);
    let body = webhook_body(true);
    let now = engine_now();
    let genuine = aftersales_adapter_sim::sign(&secret, &body, now);
    let sig = aftersales_adapter_sim::SIGNATURE_HEADER;
    let wrong_secret = aftersales_adapter_sim::sign(&Secret::new("whsec_wrong"), &body, now);
    let hour = Duration::from_secs(3600);
    let replayed = aftersales_adapter_sim::sign(&secret, &body, now - hour);
    let from_the_future = aftersales_adapter_sim::sign(&secret, &body, now + hour);
    let garbled = b"{\"id\": \"evt_1\", \"type\": ".to_vec();
    let garbled_signed = aftersales_adapter_sim::sign(&secret, &garbled, now);
    let empty_signed = aftersales_adapter_sim::sign(&secret, b"", now);
    let timestamp_only = genuine.split(',').next().unwrap().to_owned();
    let unauthorized = StatusCode::UNAUTHORIZED;
    // What is wrong, the headers, the body, and the answer: status, code, words.
    type Case<'a> = (
        &'a str,
        Vec<(&'a str, &'a str)>,
        Vec<u8>,
        StatusCode,
        &'a str,
        &'a [&'a str],
    );
    let cases: Vec<Case> = vec![
        (
            "signed with another secret",
            vec![(sig, &wrong_secret)],
            body.clone(),
            unauthorized,
            "AS-API-0401",
            &["bad signature"],
        ),
        (
            "no signature",
            vec![],
            body.clone(),
            unauthorized,
            "AS-API-0401",
            &["missing header `sim-signature`"],
        ),
        (
            "no signature but a valid token",
            vec![("authorization", ADMIN)],
            body.clone(),
            unauthorized,
            "AS-API-0401",
            &["missing header"],
        ),
        (
            "a timestamp and no signature",
            vec![(sig, &timestamp_only)],
            body.clone(),
            unauthorized,
            "AS-API-0401",
            &["bad signature"],
        ),
        (
            "a header of nonsense",
            vec![(sig, "nonsense")],
            body.clone(),
            unauthorized,
            "AS-API-0401",
            &["bad signature"],
        ),
        (
            "replayed an hour later",
            vec![(sig, &replayed)],
            body.clone(),
            unauthorized,
            "AS-API-0401",
            &["stale timestamp"],
        ),
        (
            "dated an hour ahead",
            vec![(sig, &from_the_future)],
            body.clone(),
            unauthorized,
            "AS-API-0401",
            &["stale timestamp"],
        ),
        (
            "tampered after signing",
            vec![(sig, &genuine)],
            webhook_body(false),
            unauthorized,
            "AS-API-0401",
            &["bad signature"],
        ),
        (
            "garbled, unsigned",
            vec![],
            garbled.clone(),
            unauthorized,
            "AS-API-0401",
            &["missing header"],
        ),
        (
            "garbled, correctly signed",
            vec![(sig, &garbled_signed)],
            garbled.clone(),
            StatusCode::BAD_REQUEST,
            "AS-API-0400",
            &["malformed body"],
        ),
        (
            "empty, correctly signed",
            vec![(sig, &empty_signed)],
            Vec::new(),
            StatusCode::BAD_REQUEST,
            "AS-API-0400",
            &["malformed body"],
        ),
    ];
    for (what, headers, body, status, code, mentions) in cases {
        let r = w.webhook("apparel.warehouse", &headers, body).await;
        assert_eq!(r.status, status, "{what}: {r:?}");
        r.problem(status, code, mentions);
        assert_eq!(w.snapshot().await, before, "{what} changed the store");
    }
    // An endpoint that does not exist, with a genuine delivery.
    for name in [
        "nobody.payment",
        "apparel",
        "apparel.warehouse.x",
        "APPAREL.WAREHOUSE",
    ] {
        let r = w.webhook(name, &[(sig, &genuine)], body.clone()).await;
        r.problem(
            StatusCode::NOT_FOUND,
            "AS-API-0404",
            &[&format!("`{name}`")],
        );
    }
    assert_eq!(w.snapshot().await, before);

    // The genuine delivery differs from the refused ones only by what each broke: it is
    // taken, and the waiting instance completes.
    let r = w
        .webhook("apparel.warehouse", &[(sig, &genuine)], body.clone())
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    w.settle().await;
    let inst = w
        .get(&format!("/v1/instances/{}", s.waiting_for_webhook))
        .await;
    assert_eq!(inst.body["status"], "completed", "{inst:?}");
    // Replayed inside the window: acknowledged (the platform stops resending) and not
    // delivered twice.
    let after = w.snapshot().await;
    let r = w
        .webhook("apparel.warehouse", &[(sig, &genuine)], body)
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    w.settle().await;
    assert_eq!(w.snapshot().await, after);
}

#[tokio::test]
async fn unknown_and_malformed_ids_are_4xx_problems_that_name_them() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    let signal = r#"{"payload": {"approved": true}}"#;
    let cancel = r#"{"reason": "x"}"#;
    // Unknown ids, including an engine instance asked for as a service order.
    for (id, shown) in [
        (
            "01a23423-0000-7000-8000-000000000000",
            "01a23423-0000-7000-8000-000000000000",
        ),
        ("does-not-exist", "does-not-exist"),
        ("a%2Fb", "a/b"),
        ("..%2F..%2Fetc%2Fpasswd", "../../etc/passwd"),
        ("%E2%98%83", "\u{2603}"),
        ("%20", " "),
        (
            "'%3B%20DROP%20TABLE%20instances%3B--",
            "'; DROP TABLE instances;--",
        ),
    ] {
        for (method, path, body) in [
            ("GET", format!("/v1/instances/{id}"), None),
            ("GET", format!("/v1/instances/{id}/history"), None),
            (
                "POST",
                format!("/v1/instances/{id}/signals/merchant.decision"),
                Some(signal),
            ),
            ("POST", format!("/v1/instances/{id}/cancel"), Some(cancel)),
        ] {
            let r = w.call(method, &path, body).await;
            r.problem(
                StatusCode::NOT_FOUND,
                "AS-API-0404",
                &["no instance", &format!("`{shown}`")],
            );
        }
    }
    let long = "x".repeat(10_000);
    for id in ["01a23423-0000-7000-8000-000000000000", &s.review, &long] {
        for (method, path, body) in [
            ("GET", format!("/v1/after-sales/{id}"), None),
            ("GET", format!("/v1/after-sales/{id}/history"), None),
            (
                "POST",
                format!("/v1/after-sales/{id}/signals/merchant.decision"),
                Some(signal),
            ),
            ("POST", format!("/v1/after-sales/{id}/cancel"), Some(cancel)),
        ] {
            let r = w.call(method, &path, body).await;
            r.problem(StatusCode::NOT_FOUND, "AS-API-0404", &["no service order"]);
        }
    }
    // A signal a service order never waits for.
    let r = w
        .call(
            "POST",
            &format!("/v1/after-sales/{}/signals/merchant.mood", s.service_order),
            Some(signal),
        )
        .await;
    r.problem(
        StatusCode::NOT_FOUND,
        "AS-API-0404",
        &["unknown signal `merchant.mood`", "merchant.decision"],
    );
    // Ids that are not text at all: bytes that are not UTF-8, and NUL.
    for id in ["%FF", "%C3%28", "abc%80", "%00", "a%00b"] {
        for (method, path, body) in [
            ("GET", format!("/v1/instances/{id}"), None),
            ("GET", format!("/v1/instances/{id}/history"), None),
            (
                "POST",
                format!("/v1/instances/{id}/signals/merchant.decision"),
                Some(signal),
            ),
            (
                "POST",
                format!("/v1/instances/{}/signals/{id}", s.review),
                Some(signal),
            ),
            ("POST", format!("/v1/instances/{id}/cancel"), Some(cancel)),
            ("GET", format!("/v1/after-sales/{id}"), None),
            ("GET", format!("/v1/after-sales/{id}/history"), None),
            (
                "POST",
                format!("/v1/after-sales/{id}/signals/merchant.decision"),
                Some(signal),
            ),
            ("POST", format!("/v1/after-sales/{id}/cancel"), Some(cancel)),
            ("GET", format!("/v1/workflows/{id}/graph"), None),
            ("POST", format!("/v1/webhooks/{id}"), Some("{}")),
        ] {
            let r = w.call(method, &path, body).await;
            r.problem(StatusCode::BAD_REQUEST, "AS-API-0402", &["malformed URL"]);
        }
    }
    // Malformed query parameters.
    for path in [
        "/v1/instances?limit=-1",
        "/v1/instances?limit=many",
        "/v1/instances?status=sleepy",
        "/v1/instances?created_from=yesterday",
        "/v1/instances?cursor=%00",
        "/v1/instances?colour=red",
        "/v1/after-sales?state=lost",
        "/v1/after-sales?type=refund_everything",
        "/v1/after-sales?order_id=a%00",
        "/v1/analytics/return-rates?from=2026-11-01T00:00:00Z",
        "/v1/workflows/hostile.review/graph?format=svg",
    ] {
        let r = w.get(path).await;
        r.problem(StatusCode::BAD_REQUEST, "AS-API-0402", &[]);
    }
    let r = w
        .get(&format!(
            "/v1/after-sales/{}/history?after=first",
            s.service_order
        ))
        .await;
    r.problem(StatusCode::BAD_REQUEST, "AS-API-0402", &["after"]);
    let r = w.get("/v1/workflows/nope/graph").await;
    r.problem(StatusCode::NOT_FOUND, "AS-API-0404", &["nope"]);
    assert_eq!(w.snapshot().await, before);
}

impl World {
    /// A request with the admin token and, when there is a body, a dedupe key.
    async fn call(&self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let mut headers = vec![("authorization", ADMIN)];
        if body.is_some() {
            headers.push(("content-type", "application/json"));
            headers.push(("idempotency-key", "call-1"));
        }
        self.send(request(
            method,
            path,
            &headers,
            body.map(|b| b.as_bytes().to_vec()),
        ))
        .await
    }
}

#[tokio::test]
async fn missing_wrong_or_weak_tokens_change_nothing() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    for i in intakes(&s) {
        let key = i.key();
        let body = i.body.to_string();
        let send = |auth: Option<&'static str>| {
            let mut headers = vec![
                ("content-type", "application/json"),
                ("idempotency-key", key.as_str()),
            ];
            if let Some(a) = auth {
                headers.push(("authorization", a));
            }
            w.send(request(
                "POST",
                &i.path,
                &headers,
                Some(body.clone().into_bytes()),
            ))
        };
        send(None).await.problem(
            StatusCode::UNAUTHORIZED,
            "AS-API-0401",
            &["missing `Authorization: Bearer <token>`"],
        );
        for bad in [
            "Bearer wrong",
            "Bearer t-admin ",
            "Bearer  t-admin",
            "Bearer t-admi",
            "Bearer t-admin-and-more",
            "Bearer ",
        ] {
            send(Some(bad)).await.problem(
                StatusCode::UNAUTHORIZED,
                "AS-API-0401",
                &["unknown token"],
            );
        }
        for bad in ["t-admin", "Basic dC1hZG1pbjo=", "Token t-admin", "bearer"] {
            send(Some(bad)).await.problem(
                StatusCode::UNAUTHORIZED,
                "AS-API-0401",
                &["missing `Authorization: Bearer <token>`"],
            );
        }
        // A read-only token may change nothing; the shop's token may submit but not operate.
        let r = send(Some(READER)).await;
        r.problem(
            StatusCode::FORBIDDEN,
            "AS-API-0403",
            &["token `dashboard`", "scope"],
        );
        let operates =
            i.path.contains("/signals/") || i.path.ends_with("/cancel") || i.path == "/v1/events";
        if operates {
            let r = send(Some(SHOP)).await;
            r.problem(
                StatusCode::FORBIDDEN,
                "AS-API-0403",
                &["token `shop`", "`operate` scope"],
            );
        }
        assert!(!r.body.to_string().contains("t-"), "a secret leaked: {r:?}");
    }
    for path in [
        "/v1/instances",
        "/v1/after-sales",
        &format!("/v1/instances/{}", s.review),
    ] {
        let r = w.send(request("GET", path, &[], None)).await;
        r.problem(StatusCode::UNAUTHORIZED, "AS-API-0401", &[]);
    }
    assert_eq!(w.snapshot().await, before);
    // The shop's token may submit what it is allowed to.
    let r = w
        .send(request(
            "POST",
            "/v1/after-sales",
            &[
                ("authorization", SHOP),
                ("content-type", "application/json"),
                ("idempotency-key", "shop-1"),
            ],
            Some(submit_body("ORD-2").into_bytes()),
        ))
        .await;
    assert_eq!(r.status, StatusCode::CREATED, "{r:?}");
}

#[tokio::test]
async fn a_reused_idempotency_key_with_another_body_is_409_and_the_first_is_untouched() {
    let (w, s) = World::seeded().await;
    let before = w.snapshot().await;
    let so_before = w.get(&format!("/v1/after-sales/{}", s.service_order)).await;
    let review_before = w.get(&format!("/v1/instances/{}", s.review)).await;
    let mut other_reason: Value = serde_json::from_str(&submit_body("ORD-1")).unwrap();
    other_reason["reason"] = json!("damaged");
    let mut more: Value = serde_json::from_str(&submit_body("ORD-1")).unwrap();
    more["lines"][0]["quantity"] = json!(2);
    for (path, key, body) in [
        // The key of the seeded service order, with another request.
        ("/v1/after-sales", "so-1", other_reason.to_string()),
        ("/v1/after-sales", "so-1", more.to_string()),
        ("/v1/after-sales", "so-1", submit_body("ORD-2")),
        // The key of the seeded engine instance, with another start.
        ("/v1/instances", "inst-1", start_body("o-2")),
        // A key is one namespace: used by one endpoint, it is taken for the other.
        ("/v1/after-sales", "inst-1", submit_body("ORD-2")),
        ("/v1/instances", "so-1", start_body("o-2")),
    ] {
        let r = w.post(path, Some(key), &body).await;
        r.problem(
            StatusCode::CONFLICT,
            "AS-API-0409",
            &[&format!("`{key}`"), "different request"],
        );
        assert_eq!(
            w.snapshot().await,
            before,
            "{path} with `{key}` changed the store"
        );
    }
    // The same key and the same body: the same answer, nothing new.
    let r = w
        .post("/v1/after-sales", Some("so-1"), &submit_body("ORD-1"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["id"], json!(s.service_order));
    let r = w
        .post("/v1/instances", Some("inst-1"), &start_body("o-1"))
        .await;
    assert_eq!(r.status, StatusCode::OK, "{r:?}");
    assert_eq!(r.body["id"], json!(s.review));
    assert_eq!(w.snapshot().await, before);
    let so_after = w.get(&format!("/v1/after-sales/{}", s.service_order)).await;
    assert_eq!(so_after.body, so_before.body);
    assert_eq!(so_after.body["reason"], "wrong_size");
    let review_after = w.get(&format!("/v1/instances/{}", s.review)).await;
    assert_eq!(review_after.body, review_before.body);
    // Malformed keys are refused before anything is looked up.
    let long = "k".repeat(256);
    for (key, mention) in [("", "1 to 255"), (long.as_str(), "1 to 255")] {
        let r = w
            .post("/v1/after-sales", Some(key), &submit_body("ORD-2"))
            .await;
        r.problem(
            StatusCode::BAD_REQUEST,
            "AS-API-0406",
            &["Idempotency-Key", mention],
        );
    }
    let r = w
        .send(
            Request::post("/v1/after-sales")
                .header("authorization", ADMIN)
                .header("content-type", "application/json")
                .header(
                    "idempotency-key",
                    axum::http::HeaderValue::from_bytes("clé".as_bytes()).unwrap(),
                )
                .body(Body::from(submit_body("ORD-2")))
                .unwrap(),
        )
        .await;
    r.problem(StatusCode::BAD_REQUEST, "AS-API-0406", &["visible ASCII"]);
    for path in ["/v1/after-sales", "/v1/instances"] {
        let body = if path == "/v1/instances" {
            start_body("o-2")
        } else {
            submit_body("ORD-2")
        };
        let r = w.post(path, None, &body).await;
        r.problem(
            StatusCode::BAD_REQUEST,
            "AS-API-0406",
            &["Idempotency-Key` header is required"],
        );
    }
    assert_eq!(w.snapshot().await, before);
}

// ---------------------------------------------------------------------------------------
// Properties: whatever arrives, the answer is never a 5xx, and an answer that is not a
// success leaves the store as it was.
// ---------------------------------------------------------------------------------------

mod props {
    use std::cell::RefCell;

    use proptest::prelude::*;
    use proptest::test_runner::{Config, TestRunner};

    use super::*;

    /// Names the bodies use, so random objects sometimes hit a real field.
    const FIELDS: &[&str] = &[
        "business_line",
        "order_id",
        "type",
        "lines",
        "line_id",
        "quantity",
        "reason",
        "requested_amount",
        "minor",
        "currency",
        "evidence",
        "pickup",
        "exchange_to",
        "workflow",
        "version",
        "input",
        "params",
        "search_key",
        "name",
        "correlation",
        "dedupe_id",
        "payload",
        "sales",
        "id",
        "category",
        "sku",
        "at",
        "approved",
    ];

    /// Values the bodies use, so random values sometimes fit.
    const WORDS: &[&str] = &[
        "apparel",
        "ORD-1",
        "ORD-2",
        "l1",
        "return_refund",
        "exchange",
        "refund_only",
        "wrong_size",
        "damaged",
        "CNY",
        "USD",
        "merchant.decision",
        "hostile.review",
        "warehouse.return.received",
        "rma-9",
        "tee-m",
        "2026-11-25T00:00:00Z",
        "",
        "\u{0}",
    ];

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (0i64..100).prop_map(|n| json!(n)),
            any::<f64>().prop_filter_map("finite", |f| {
                serde_json::Number::from_f64(f).map(Value::Number)
            }),
            ".{0,24}".prop_map(Value::String),
            prop::sample::select(WORDS).prop_map(|s| json!(s)),
        ];
        leaf.prop_recursive(4, 48, 6, |inner| {
            let key = prop_oneof![
                prop::sample::select(FIELDS).prop_map(str::to_owned),
                ".{0,10}",
            ];
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(key, inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    /// Every place in a value below the top: JSON pointers to each member and element.
    fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    pointers(x, format!("{at}/{k}"), out);
                }
            }
            Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    pointers(x, format!("{at}/{i}"), out);
                }
            }
            _ => {}
        }
        if !at.is_empty() {
            out.push(at);
        }
    }

    /// One change to a good body.
    #[derive(Debug, Clone)]
    enum Change {
        /// Replace the value at one place.
        Replace(prop::sample::Index, Value),
        /// Remove one member or element.
        Remove(prop::sample::Index),
        /// Add a member at the top.
        Add(String, Value),
    }

    /// A value that often fits where it lands: a known word, a small number, a flag.
    fn plausible() -> impl Strategy<Value = Value> {
        prop_oneof![
            prop::sample::select(WORDS).prop_map(|s| json!(s)),
            (-2i64..5).prop_map(|n| json!(n)),
            any::<bool>().prop_map(Value::Bool),
            Just(json!({"minor": 500, "currency": "CNY"})),
            Just(Value::Null),
        ]
    }

    fn change() -> impl Strategy<Value = Change> {
        prop_oneof![
            3 => (any::<prop::sample::Index>(), plausible()).prop_map(|(i, v)| Change::Replace(i, v)),
            1 => (any::<prop::sample::Index>(), json_value()).prop_map(|(i, v)| Change::Replace(i, v)),
            1 => any::<prop::sample::Index>().prop_map(Change::Remove),
            1 => (
                prop::sample::select(FIELDS).prop_map(str::to_owned),
                json_value()
            )
                .prop_map(|(k, v)| Change::Add(k, v)),
        ]
    }

    fn apply(body: &Value, changes: &[Change]) -> Value {
        let mut b = body.clone();
        for c in changes {
            let mut places = Vec::new();
            pointers(&b, String::new(), &mut places);
            match c {
                Change::Replace(..) | Change::Remove(_) if places.is_empty() => {}
                Change::Replace(i, v) => {
                    let p = i.get(&places).clone();
                    if let Some(slot) = b.pointer_mut(&p) {
                        *slot = v.clone();
                    }
                }
                Change::Remove(i) => {
                    let p = i.get(&places).clone();
                    if let Some((parent, last)) = p.rsplit_once('/') {
                        match b.pointer_mut(parent) {
                            Some(Value::Object(m)) => {
                                m.remove(last);
                            }
                            Some(Value::Array(a)) => {
                                if let Ok(n) = last.parse::<usize>()
                                    && n < a.len()
                                {
                                    a.remove(n);
                                }
                            }
                            _ => {}
                        }
                    }
                }
                Change::Add(k, v) => {
                    if let Value::Object(m) = &mut b {
                        m.insert(k.clone(), v.clone());
                    }
                }
            }
        }
        b
    }

    /// What a body sent to an intake can be.
    #[derive(Debug, Clone)]
    enum Sent {
        /// A good body with a few changes.
        Changed(Vec<Change>),
        /// Any JSON value at all.
        Any(Value),
        /// Any bytes, some of them looking like JSON.
        Bytes(Vec<u8>),
    }

    fn sent() -> impl Strategy<Value = Sent> {
        let jsonish = prop::collection::vec(
            prop::sample::select(b"{}[]\":,0123456789.-+eEtrufalsn \\u\x00\xff".to_vec()),
            0..64,
        );
        prop_oneof![
            4 => prop::collection::vec(change(), 1..3).prop_map(Sent::Changed),
            1 => json_value().prop_map(Sent::Any),
            1 => prop::collection::vec(any::<u8>(), 0..256).prop_map(Sent::Bytes),
            1 => jsonish.prop_map(|mut b| { b.insert(0, b'{'); Sent::Bytes(b) }),
        ]
    }

    fn runner(cases: u32) -> TestRunner {
        TestRunner::new(Config {
            cases,
            failure_persistence: None,
            ..Config::default()
        })
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn any_body_to_any_intake_is_never_a_5xx_and_a_refusal_stores_nothing() {
        let rt = runtime();
        let (w, s) = rt.block_on(World::seeded());
        let all = intakes(&s);
        let last = RefCell::new(rt.block_on(w.snapshot()));
        let n = std::cell::Cell::new(0u64);
        runner(128)
            .run(
                // Now and then without an idempotency key (or a signal's dedupe id).
                &(0..all.len(), sent(), 0u8..8),
                |(which, sent, keyed)| {
                    let intake = &all[which];
                    let body = match &sent {
                        Sent::Changed(c) => apply(&intake.body, c).to_string().into_bytes(),
                        Sent::Any(v) => v.to_string().into_bytes(),
                        Sent::Bytes(b) => b.clone(),
                    };
                    n.set(n.get() + 1);
                    let key = format!("prop-{}", n.get());
                    let r = rt.block_on(w.post_bytes(
                        &intake.path,
                        (keyed != 0).then_some(key.as_str()),
                        body.clone(),
                    ));
                    let shown = String::from_utf8_lossy(&body);
                    prop_assert!(
                        !r.status.is_server_error(),
                        "POST {} {shown} -> {r:?}",
                        intake.path
                    );
                    let now = rt.block_on(w.snapshot());
                    if r.status.is_success() {
                        *last.borrow_mut() = now;
                    } else {
                        prop_assert_eq!(r.ctype.as_str(), "application/problem+json", "{:?}", r);
                        prop_assert!(
                            now == *last.borrow(),
                            "POST {} {shown} -> {r:?} changed the store",
                            intake.path
                        );
                    }
                    Ok(())
                },
            )
            .unwrap();
    }

    /// Percent-encodes every byte but the unreserved ones, so any bytes make a valid URI
    /// whose segment decodes back to exactly those bytes.
    fn encode(bytes: &[u8]) -> String {
        bytes
            .iter()
            .map(|&b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    #[test]
    fn any_id_or_name_in_a_path_is_a_4xx_problem_and_stores_nothing() {
        let rt = runtime();
        let (w, _) = rt.block_on(World::seeded());
        let before = rt.block_on(w.snapshot());
        let segment = prop_oneof![
            ".{1,40}".prop_map(String::into_bytes),
            prop::collection::vec(any::<u8>(), 1..40),
        ];
        runner(96)
            .run(&(segment.clone(), segment), |(id, name)| {
                let (id, name) = (encode(&id), encode(&name));
                let signal = r#"{"payload": {"approved": true}}"#;
                let cancel = r#"{"reason": "x"}"#;
                for (method, path, body) in [
                    ("GET", format!("/v1/instances/{id}"), None),
                    ("GET", format!("/v1/instances/{id}/history"), None),
                    (
                        "POST",
                        format!("/v1/instances/{id}/signals/{name}"),
                        Some(signal),
                    ),
                    ("POST", format!("/v1/instances/{id}/cancel"), Some(cancel)),
                    ("GET", format!("/v1/after-sales/{id}"), None),
                    ("GET", format!("/v1/after-sales/{id}/history"), None),
                    (
                        "POST",
                        format!("/v1/after-sales/{id}/signals/{name}"),
                        Some(signal),
                    ),
                    ("POST", format!("/v1/after-sales/{id}/cancel"), Some(cancel)),
                    ("GET", format!("/v1/workflows/{name}/graph"), None),
                    ("POST", format!("/v1/webhooks/{name}"), Some("{}")),
                ] {
                    let r = rt.block_on(w.call(method, &path, body));
                    prop_assert!(r.status.is_client_error(), "{method} {path} -> {r:?}");
                    prop_assert_eq!(
                        r.ctype.as_str(),
                        "application/problem+json",
                        "{} {} -> {:?}",
                        method,
                        path,
                        r
                    );
                }
                prop_assert!(
                    rt.block_on(w.snapshot()) == before,
                    "/{id}/{name} changed the store"
                );
                Ok(())
            })
            .unwrap();
    }
}
