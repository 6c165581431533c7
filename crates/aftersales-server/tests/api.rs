//! The HTTP API over an engine on the in-memory store: idempotent starts, signals, history,
//! cancel, auth scopes, and problem+json errors for every bad input.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use aftersales_adapter::{InboundEvent, Secret};
use aftersales_adapter_sim::{SimWebhookVerifier, deliver};

use aftersales_core::catalogue::{ActionSig, Catalogue, FieldSig};
use aftersales_core::engine::{
    ActionCall, CallResult, Dispatcher, Engine, ManualClock, WorkerConfig,
};
use aftersales_core::model::ValueType;
use aftersales_core::store::memory::MemoryStore;
use aftersales_server::{AppState, Auth, Scope, Token, router};
use async_trait::async_trait;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use tower::ServiceExt;

const WEBHOOK_SECRET: &str = "whsec_test";

const WF: &str = r#"
[workflow]
name = "api.review"
version = 1

[input]
order_id = "string"
amount = "money"

[[step]]
id = "review"
wait = { signal = "merchant.decision", timeout = "2d", on_timeout = "refund", payload = { approved = "bool" } }
next = [
    { if = "steps.review.approved", goto = "refund" },
    { goto = "rejected" },
]

[[step]]
id = "refund"
action = "pay.refund"
input = { order_id = "${input.order_id}", amount = "${input.amount}" }

[[step]]
id = "done"
end = "completed"
output = { refund_id = "${steps.refund.refund_id}" }

[[step]]
id = "rejected"
end = "rejected"
reason = "the merchant said no"
"#;

struct Pay;

#[async_trait]
impl Dispatcher for Pay {
    async fn dispatch(&self, _call: ActionCall) -> CallResult {
        CallResult::Done(json!({"refund_id": "rf-1"}))
    }
}

fn catalogue() -> Catalogue {
    let mut c = Catalogue::new();
    c.insert(ActionSig {
        name: "pay.refund".into(),
        mutating: true,
        inputs: vec![
            FieldSig {
                name: "order_id".into(),
                ty: ValueType::String,
                required: true,
            },
            FieldSig {
                name: "amount".into(),
                ty: ValueType::Money,
                required: true,
            },
        ],
        outputs: vec![FieldSig {
            name: "refund_id".into(),
            ty: ValueType::String,
            required: true,
        }],
    });
    c
}

struct Api {
    app: axum::Router,
    engine: Arc<Engine>,
}

async fn api(auth: Auth) -> Api {
    let engine = Arc::new(Engine::new(
        Arc::new(MemoryStore::new()),
        Arc::new(ManualClock::new(1_795_564_800_000)),
        Arc::new(Pay),
        catalogue(),
    ));
    engine
        .deploy(&[("wf.toml".into(), WF.into())])
        .await
        .unwrap();
    let app = router(AppState {
        engine: engine.clone(),
        auth: Arc::new(auth),
        body_limit: 64 * 1024,
        metrics: Some(aftersales_server::install_metrics().unwrap()),
        webhooks: Arc::new(HashMap::from([(
            "apparel.warehouse".to_owned(),
            Arc::new(SimWebhookVerifier::new(
                vec![Secret::new(WEBHOOK_SECRET)],
                Duration::from_secs(300),
            )) as Arc<dyn aftersales_adapter::WebhookVerifier>,
        )])),
        service: None,
    });
    Api { app, engine }
}

impl Api {
    async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&str>,
    ) -> (StatusCode, String, Value) {
        let mut req = Request::builder().method(method).uri(path);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = match body {
            Some(b) => req
                .header("content-type", "application/json")
                .body(Body::from(b.to_owned())),
            None => req.body(Body::empty()),
        }
        .unwrap();
        let resp = self.app.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let ctype = resp
            .headers()
            .get("content-type")
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        let value = serde_json::from_slice(&bytes)
            .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
        (status, ctype, value)
    }

    async fn run(&self) {
        self.engine
            .run_until_idle(&WorkerConfig::default())
            .await
            .unwrap();
    }
}

fn start_body(order: &str) -> String {
    json!({
        "workflow": "api.review",
        "business_line": "apparel",
        "input": {"order_id": order, "amount": {"minor": 19_900, "currency": "CNY"}},
        "search_key": order,
    })
    .to_string()
}

#[tokio::test]
async fn a_request_goes_from_submit_through_a_signal_to_its_refund_and_history() {
    let api = api(Auth::default()).await;
    let (s, _, first) = api
        .call(
            "POST",
            "/v1/instances",
            &[("idempotency-key", "req-1")],
            Some(&start_body("o-1")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{first}");
    let id = first["id"].as_str().unwrap().to_owned();
    // The same key and body: the same answer.
    let (s, _, again) = api
        .call(
            "POST",
            "/v1/instances",
            &[("idempotency-key", "req-1")],
            Some(&start_body("o-1")),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(again["id"], first["id"]);
    // The same key, another body: 409.
    let (s, ctype, p) = api
        .call(
            "POST",
            "/v1/instances",
            &[("idempotency-key", "req-1")],
            Some(&start_body("o-2")),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(ctype, "application/problem+json");
    assert_eq!(p["code"], "AS-API-0409");

    api.run().await;
    let (s, _, inst) = api
        .call("GET", &format!("/v1/instances/{id}"), &[], None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(inst["status"], "running");
    assert_eq!(inst["waiting_on"][0]["kind"], "signal");
    assert_eq!(inst["waiting_on"][0]["what"], "merchant.decision");
    assert_eq!(inst["waiting_on"][0]["until"], "2026-11-27T00:00:00.000Z");

    let (s, _, d) = api
        .call(
            "POST",
            &format!("/v1/instances/{id}/signals/merchant.decision"),
            &[("idempotency-key", "approve-1")],
            Some(r#"{"payload": {"approved": true}}"#),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{d}");
    let (s, _, d) = api
        .call(
            "POST",
            &format!("/v1/instances/{id}/signals/merchant.decision"),
            &[("idempotency-key", "approve-1")],
            Some(r#"{"payload": {"approved": true}}"#),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(d["delivered"], "duplicate");
    api.run().await;

    let (_, _, inst) = api
        .call("GET", &format!("/v1/instances/{id}"), &[], None)
        .await;
    assert_eq!(inst["status"], "completed");
    assert_eq!(inst["output"]["refund_id"], "rf-1");
    let (s, _, h) = api
        .call("GET", &format!("/v1/instances/{id}/history"), &[], None)
        .await;
    assert_eq!(s, StatusCode::OK);
    let kinds: Vec<&str> = h["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "instance_started",
            "wait_started",
            "signal_ignored",
            "signal_received",
            "branch_taken",
            "step_scheduled",
            "step_completed",
            "instance_completed"
        ]
    );
    // Finished: a cancel changes nothing and says so.
    let (s, _, p) = api
        .call(
            "POST",
            &format!("/v1/instances/{id}/cancel"),
            &[],
            Some(r#"{"reason": "late"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT);
    assert_eq!(p["code"], "AS-API-0410");

    let (s, _, page) = api
        .call(
            "GET",
            "/v1/instances?status=completed&search_key=o-1",
            &[],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_cancel_and_list_pagination() {
    let api = api(Auth::default()).await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let (_, _, v) = api
            .call(
                "POST",
                "/v1/instances",
                &[("idempotency-key", &format!("k-{i}"))],
                Some(&start_body(&format!("o-{i}"))),
            )
            .await;
        ids.push(v["id"].as_str().unwrap().to_owned());
    }
    api.run().await;
    let (s, _, _) = api
        .call(
            "POST",
            &format!("/v1/instances/{}/cancel", ids[0]),
            &[],
            Some(r#"{"reason": "buyer withdrew"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    api.run().await;
    let (_, _, inst) = api
        .call("GET", &format!("/v1/instances/{}", ids[0]), &[], None)
        .await;
    assert_eq!(inst["status"], "cancelled");
    assert!(inst["reason"].as_str().unwrap().contains("buyer withdrew"));

    let (_, _, p1) = api.call("GET", "/v1/instances?limit=2", &[], None).await;
    assert_eq!(p1["items"].as_array().unwrap().len(), 2);
    let cursor = p1["next_cursor"].as_str().unwrap();
    let (_, _, p2) = api
        .call(
            "GET",
            &format!("/v1/instances?limit=2&cursor={cursor}"),
            &[],
            None,
        )
        .await;
    assert_eq!(p2["items"].as_array().unwrap().len(), 1);
    assert_eq!(p2["next_cursor"], Value::Null);
}

#[tokio::test]
async fn bad_input_gets_a_problem_naming_what_and_where_and_changes_nothing() {
    let api = api(Auth::default()).await;
    // No idempotency key.
    let (s, _, p) = api
        .call("POST", "/v1/instances", &[], Some(&start_body("o-1")))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("Idempotency-Key"));
    // Malformed JSON.
    let (s, _, p) = api
        .call(
            "POST",
            "/v1/instances",
            &[("idempotency-key", "a")],
            Some("{\"workflow\": "),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(p["code"], "AS-API-0400");
    // A field of the wrong type, named by its path.
    let (s, _, p) = api
        .call(
            "POST",
            "/v1/instances",
            &[("idempotency-key", "b")],
            Some(r#"{"workflow": "api.review", "business_line": 7}"#),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(
        p["detail"].as_str().unwrap().contains("business_line"),
        "{p}"
    );
    // Input that does not fit the workflow: 422 with every field.
    let body = json!({"workflow": "api.review", "business_line": "apparel", "input": {"amount": {"minor": 1.5, "currency": "CNY"}}}).to_string();
    let (s, _, p) = api
        .call(
            "POST",
            "/v1/instances",
            &[("idempotency-key", "c")],
            Some(&body),
        )
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY);
    let paths: Vec<&str> = p["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["path"].as_str().unwrap())
        .collect();
    assert_eq!(paths, ["input.order_id", "input.amount"]);
    // Unknown workflow, unknown instance, unknown route.
    let body = json!({"workflow": "nope", "business_line": "apparel"}).to_string();
    let (s, _, _) = api
        .call(
            "POST",
            "/v1/instances",
            &[("idempotency-key", "d")],
            Some(&body),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, _) = api
        .call("GET", "/v1/instances/does-not-exist", &[], None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, _, p) = api
        .call(
            "POST",
            "/v1/instances/does-not-exist/signals/x",
            &[("idempotency-key", "e")],
            Some("{}"),
        )
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{p}");
    let (s, ctype, _) = api.call("GET", "/v2/nothing", &[], None).await;
    assert_eq!(
        (s, ctype.as_str()),
        (StatusCode::NOT_FOUND, "application/problem+json")
    );
    // A known route, a method it does not take: a problem, not an empty body.
    let (s, ctype, p) = api.call("DELETE", "/v1/instances", &[], None).await;
    assert_eq!(
        (s, ctype.as_str()),
        (StatusCode::METHOD_NOT_ALLOWED, "application/problem+json")
    );
    assert_eq!(p["code"], "AS-API-0405", "{p}");
    assert!(p["detail"].as_str().unwrap().contains("DELETE"), "{p}");
    // Bad query.
    let (s, _, p) = api
        .call("GET", "/v1/instances?status=sleepy", &[], None)
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert!(p["detail"].as_str().unwrap().contains("sleepy"));
    // Too large.
    let huge = format!(r#"{{"workflow": "{}"}}"#, "x".repeat(100 * 1024));
    let (s, _, _) = api
        .call(
            "POST",
            "/v1/instances",
            &[("idempotency-key", "f")],
            Some(&huge),
        )
        .await;
    assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
    // Nothing was stored by any of these.
    let (_, _, page) = api.call("GET", "/v1/instances", &[], None).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 0);
}

#[tokio::test]
async fn tokens_and_scopes_are_enforced() {
    let api = api(Auth::new(vec![
        Token::new("shop", "s3cret-submit", vec![Scope::Submit, Scope::Read]),
        Token::new("ops", "s3cret-admin", vec![Scope::Admin]),
    ]))
    .await;
    let (s, _, p) = api.call("GET", "/v1/instances", &[], None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(p["code"], "AS-API-0401");
    let (s, _, _) = api
        .call(
            "GET",
            "/v1/instances",
            &[("authorization", "Bearer wrong")],
            None,
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let (s, _, v) = api
        .call(
            "POST",
            "/v1/instances",
            &[
                ("authorization", "Bearer s3cret-submit"),
                ("idempotency-key", "k"),
            ],
            Some(&start_body("o-1")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED);
    let id = v["id"].as_str().unwrap();
    let (s, _, p) = api
        .call(
            "POST",
            &format!("/v1/instances/{id}/cancel"),
            &[("authorization", "Bearer s3cret-submit")],
            Some(r#"{"reason": "x"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    assert!(p["detail"].as_str().unwrap().contains("operate"));
    assert!(
        !p.to_string().contains("s3cret"),
        "a secret leaked into a problem: {p}"
    );
    let (s, _, _) = api
        .call(
            "POST",
            &format!("/v1/instances/{id}/cancel"),
            &[("authorization", "Bearer s3cret-admin")],
            Some(r#"{"reason": "x"}"#),
        )
        .await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Health needs no token.
    let (s, _, _) = api.call("GET", "/healthz", &[], None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, r) = api.call("GET", "/readyz", &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(r["running"], 1);
}

#[tokio::test]
async fn workflows_and_their_graphs() {
    let api = api(Auth::default()).await;
    let (s, _, v) = api.call("GET", "/v1/workflows", &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(v["items"][0]["name"], "api.review");
    let (s, _, g) = api
        .call("GET", "/v1/workflows/api.review/graph", &[], None)
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(g.as_str().unwrap().contains("flowchart TD"), "{g}");
    let (s, _, _) = api
        .call("GET", "/v1/workflows/api.review/graph?version=9", &[], None)
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn metrics_are_exposed_for_prometheus() {
    let api = api(Auth::default()).await;
    let (s, _, v) = api
        .call(
            "POST",
            "/v1/instances",
            &[("idempotency-key", "m-1")],
            Some(&start_body("o-m")),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    api.run().await;
    let (s, ctype, text) = api.call("GET", "/metrics", &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("text/plain"), "{ctype}");
    let text = text.as_str().unwrap();
    assert!(
        text.contains("aftersales_instances_started_total"),
        "{text}"
    );
    assert!(text.contains("aftersales_due_queue_depth"), "{text}");
    assert!(text.contains("aftersales_history_events_total"), "{text}");
}

const RETURN_WF: &str = r#"
[workflow]
name = "api.return"
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

fn signed(event: &InboundEvent, secret: &str, at: SystemTime) -> (Vec<(String, String)>, String) {
    let d = deliver(&Secret::new(secret), event, at);
    let headers = d
        .headers
        .iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    (headers, String::from_utf8(d.body).unwrap())
}

#[tokio::test]
async fn webhooks_are_verified_before_anything_is_trusted_then_delivered_once() {
    let api = api(Auth::new(vec![Token::new("ops", "t", vec![Scope::Admin])])).await;
    api.engine
        .deploy(&[("ret.toml".into(), RETURN_WF.into())])
        .await
        .unwrap();
    let body =
        json!({"workflow": "api.return", "business_line": "apparel", "input": {"rma_id": "rma-9"}})
            .to_string();
    let (s, _, v) = api
        .call(
            "POST",
            "/v1/instances",
            &[("authorization", "Bearer t"), ("idempotency-key", "w-1")],
            Some(&body),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{v}");
    let id = v["id"].as_str().unwrap().to_owned();
    api.run().await;

    let event = InboundEvent {
        dedupe_id: "evt_1".into(),
        name: "warehouse.return.received".into(),
        correlation: "rma-9".into(),
        payload: json!({"inspection_passed": true}),
    };
    let send = |headers: Vec<(String, String)>, body: String| {
        let api = &api;
        async move {
            let h: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            api.call("POST", "/v1/webhooks/apparel.warehouse", &h, Some(&body))
                .await
        }
    };
    // Wrong secret: 401, nothing changes. No token is needed for webhooks: the signature is.
    let (h, b) = signed(&event, "whsec_wrong", engine_now());
    let (s, _, p) = send(h, b).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{p}");
    // A replay from an hour ago: 401.
    let (h, b) = signed(
        &event,
        WEBHOOK_SECRET,
        engine_now() - Duration::from_secs(3600),
    );
    let (s, _, p) = send(h, b).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert!(p["detail"].as_str().unwrap().contains("stale"), "{p}");
    // A tampered body: 401.
    let (h, b) = signed(&event, WEBHOOK_SECRET, engine_now());
    let (s, _, _) = send(h.clone(), b.replace("true", "false")).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    api.run().await;
    let (_, _, inst) = api
        .call(
            "GET",
            &format!("/v1/instances/{id}"),
            &[("authorization", "Bearer t")],
            None,
        )
        .await;
    assert_eq!(inst["status"], "running", "nothing changed");
    // The genuine delivery, twice: accepted once.
    let (s, _, _) = send(h.clone(), b.clone()).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _, _) = send(h, b).await;
    assert_eq!(s, StatusCode::OK);
    api.run().await;
    let (_, _, inst) = api
        .call(
            "GET",
            &format!("/v1/instances/{id}"),
            &[("authorization", "Bearer t")],
            None,
        )
        .await;
    assert_eq!(inst["status"], "completed");
    // Unknown endpoint.
    let (s, _, _) = api
        .call("POST", "/v1/webhooks/nobody.payment", &[], Some("{}"))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// The engine's (manual) clock in these tests: webhooks are checked against it.
fn engine_now() -> SystemTime {
    std::time::UNIX_EPOCH + Duration::from_millis(1_795_564_800_000)
}

#[tokio::test]
async fn the_openapi_description_covers_every_route() {
    let api = api(Auth::default()).await;
    let (s, ctype, doc) = api.call("GET", "/v1/openapi.json", &[], None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(ctype.starts_with("application/json"), "{ctype}");
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().unwrap();
    for (path, method) in [
        ("/v1/after-sales", "post"),
        ("/v1/after-sales", "get"),
        ("/v1/after-sales/quote", "post"),
        ("/v1/after-sales/{id}", "get"),
        ("/v1/after-sales/{id}/history", "get"),
        ("/v1/after-sales/{id}/signals/{name}", "post"),
        ("/v1/after-sales/{id}/cancel", "post"),
        ("/v1/business-lines", "get"),
        ("/v1/sales", "post"),
        ("/v1/analytics/return-rates", "get"),
        ("/v1/instances", "post"),
        ("/v1/instances", "get"),
        ("/v1/instances/{id}", "get"),
        ("/v1/instances/{id}/history", "get"),
        ("/v1/instances/{id}/signals/{name}", "post"),
        ("/v1/instances/{id}/cancel", "post"),
        ("/v1/events", "post"),
        ("/v1/webhooks/{name}", "post"),
        ("/v1/workflows", "get"),
        ("/v1/workflows/{name}/graph", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ] {
        assert!(
            paths.get(path).and_then(|p| p.get(method)).is_some(),
            "{method} {path} is not described"
        );
    }
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for name in ["SubmitRequest", "ServiceOrderView", "Problem", "SalesBody"] {
        assert!(schemas.contains_key(name), "{name} missing");
    }
    // The submit body's required fields are the ones the handler requires.
    let required: Vec<&str> = schemas["SubmitRequest"]["required"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for f in ["business_line", "order_id", "type", "lines", "reason"] {
        assert!(required.contains(&f), "{f} in {required:?}");
    }
}
