//! The HTTP adapter against wiremock: templating, the key on every mutating call, error
//! classification, auth, and configuration errors.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::{Duration, SystemTime};

use aftersales_adapter::ids::{OrderId, RefundId, RmaId, ServiceOrderId};
use aftersales_adapter::types::{InterceptResult, InterceptShipment, LineRef, Refund, RmaRef};
use aftersales_adapter::{
    ActionOutcome, AdapterConfig, AdapterSetConfig, ErrorClass, RefundLookup, RefundStatus,
    Registry, RegistryError,
};
use common::{build, build_error, cny, key, payment, settings, warehouse};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, Request, ResponseTemplate};

const REFUND: &str = r#"
base_url = "BASE/api/"
timeout = "5s"
idempotency_header = "Idempotency-Key"
error_message = "/error/message"
headers = { "X-Merchant" = "m-42" }

[actions."payment.refund"]
method = "POST"
path = "/payments/{payment_id}/refunds"
body = { amount = "{amount.minor}", currency = "{amount.currency}", yuan = "{amount|decimal}", reason = "{reason}", note = "for {service_order_id}" }
outputs = { refund_id = "/data/id", status = { pointer = "/data/state", map = { DONE = "succeeded", PROCESSING = "pending", FAILED = "failed" } } }

[actions."payment.refund_status"]
method = "GET"
path = "/refunds/{refund_id}"
outputs = { refund_id = "/data/id", status = { pointer = "/data/state", map = { DONE = "succeeded", PROCESSING = "pending" } } }
on_status = { 404 = { status = "not_found" } }

[actions."payment.refund_status".by_key]
method = "GET"
path = "/refunds"
query = { payment = "{payment_id}", out_request_no = "{request_key}" }
"#;

fn refund_req(payment_id: &str) -> Refund {
    Refund {
        payment_id: payment_id.into(),
        amount: cny(1234),
        reason: Some("damaged".into()),
        service_order_id: Some(ServiceOrderId::new("so-1")),
    }
}

fn refund_answer(id: &str, state: &str) -> ResponseTemplate {
    ResponseTemplate::new(201).set_body_json(json!({"data": {"id": id, "state": state}}))
}

fn header_of(r: &Request, name: &str) -> Option<String> {
    r.headers.get(name).map(|v| v.to_str().unwrap().to_owned())
}

#[tokio::test]
async fn refund_builds_path_and_body_from_the_input_and_maps_the_answer() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/api/payments/pay%201/refunds"))
        .and(header("Idempotency-Key", "so-1-refund-fwd-0"))
        .and(header("X-Merchant", "m-42"))
        .and(header("Content-Type", "application/json"))
        .and(body_json(json!({
            "amount": 1234,
            "currency": "CNY",
            "yuan": "12.34",
            "reason": "damaged",
            "note": "for so-1",
        })))
        .respond_with(refund_answer("re_9", "DONE"))
        .expect(1)
        .mount(&server)
        .await;
    let p = payment(settings(REFUND, &server.uri()), &[]);
    let out = p
        .refund(&refund_req("pay 1"), &key("so-1-refund-fwd-0"))
        .await
        .unwrap();
    assert_eq!(out.refund_id, RefundId::new("re_9"));
    assert_eq!(out.status, RefundStatus::Succeeded);
}

#[tokio::test]
async fn absent_optional_inputs_are_left_out_of_the_body() {
    let server = MockServer::start().await;
    Mock::given(body_json(
        json!({"amount": 1234, "currency": "CNY", "yuan": "12.34"}),
    ))
    .respond_with(refund_answer("re_1", "DONE"))
    .expect(1)
    .mount(&server)
    .await;
    let p = payment(settings(REFUND, &server.uri()), &[]);
    let mut req = refund_req("pay_1");
    req.reason = None;
    req.service_order_id = None;
    p.refund(&req, &key("k-1")).await.unwrap();
}

#[tokio::test]
async fn a_pending_refund_is_dispatched_as_pending_with_its_correlation_and_poll() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(refund_answer("re_5", "PROCESSING"))
        .mount(&server)
        .await;
    // The HTTP adapter serves payment; the simulator serves the other systems.
    let mut registry = Registry::new();
    aftersales_adapter_sim::register(&mut registry);
    aftersales_adapter_http::register(&mut registry);
    let sim = AdapterConfig::new("sim");
    let set = registry
        .build_set(
            &AdapterSetConfig {
                order: sim.clone(),
                warehouse: sim.clone(),
                fulfillment: sim.clone(),
                payment: AdapterConfig::with_settings("http", settings(REFUND, &server.uri())),
                notify: sim,
            },
            &|_| None,
        )
        .unwrap();
    let out = set
        .dispatch(
            "payment.refund",
            &json!({"payment_id": "pay_1", "amount": {"minor": 500, "currency": "CNY"}}),
            &key("k-pending"),
        )
        .await
        .unwrap();
    let ActionOutcome::Pending {
        correlation_key,
        poll,
        ..
    } = out
    else {
        panic!("expected pending, got {out:?}");
    };
    assert_eq!(correlation_key, "re_5");
    assert_eq!(poll.unwrap().input, json!({"refund_id": "re_5"}));
    assert!(set.capabilities().supports("payment.refund_status"));
    assert!(!set.payment.capabilities().supports("payment.charge"));
}

#[tokio::test]
async fn a_retry_after_a_503_carries_the_same_key_and_honours_retry_after() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(503).insert_header("Retry-After", "7"))
        .up_to_n_times(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .respond_with(refund_answer("re_2", "DONE"))
        .mount(&server)
        .await;
    let p = payment(settings(REFUND, &server.uri()), &[]);
    let k = key("so-2-refund-fwd-0");
    let e = p.refund(&refund_req("pay_2"), &k).await.unwrap_err();
    assert_eq!(
        e.class,
        ErrorClass::Transient {
            retry_after: Some(Duration::from_secs(7))
        }
    );
    assert_eq!(
        e.to_string(),
        "payment.refund failed on http (transient, retry after 7000ms): http 503"
    );
    let out = p.refund(&refund_req("pay_2"), &k).await.unwrap();
    assert_eq!(out.refund_id, RefundId::new("re_2"));
    let requests = server.received_requests().await.unwrap();
    let keys: Vec<Option<String>> = requests
        .iter()
        .map(|r| header_of(r, "idempotency-key"))
        .collect();
    assert_eq!(keys, [Some(k.to_string()), Some(k.to_string())]);
    // The two attempts sent the same body too.
    assert_eq!(requests[0].body, requests[1].body);
}

#[tokio::test]
async fn retry_after_as_an_http_date_and_429_are_transient() {
    let server = MockServer::start().await;
    let later = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(120));
    Mock::given(path("/api/payments/pay_date/refunds"))
        .respond_with(ResponseTemplate::new(502).insert_header("Retry-After", later.as_str()))
        .mount(&server)
        .await;
    Mock::given(path("/api/payments/pay_429/refunds"))
        .respond_with(ResponseTemplate::new(429))
        .mount(&server)
        .await;
    let p = payment(settings(REFUND, &server.uri()), &[]);
    let e = p
        .refund(&refund_req("pay_date"), &key("k"))
        .await
        .unwrap_err();
    let ErrorClass::Transient {
        retry_after: Some(d),
    } = e.class
    else {
        panic!("expected transient with a delay, got {e}");
    };
    assert!(
        d > Duration::from_secs(100) && d <= Duration::from_secs(120),
        "{d:?}"
    );
    let e = p
        .refund(&refund_req("pay_429"), &key("k"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient { retry_after: None });
}

#[tokio::test]
async fn business_refusals_are_permanent_and_carry_the_platform_message() {
    let server = MockServer::start().await;
    for (payment_id, status, message) in [
        (
            "pay_409",
            409,
            "idempotency key reused with other parameters",
        ),
        ("pay_422", 422, "amount exceeds the refundable balance"),
        ("pay_400", 400, "bad currency"),
        ("pay_404", 404, "no such payment"),
    ] {
        Mock::given(path(format!("/api/payments/{payment_id}/refunds")))
            .respond_with(
                ResponseTemplate::new(status)
                    .set_body_json(json!({"error": {"code": "x", "message": message}})),
            )
            .mount(&server)
            .await;
    }
    let p = payment(settings(REFUND, &server.uri()), &[]);
    let e = p
        .refund(&refund_req("pay_409"), &key("k"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert_eq!(
        e.to_string(),
        "payment.refund failed on http (permanent): http 409: idempotency key reused with other parameters"
    );
    let e = p
        .refund(&refund_req("pay_422"), &key("k"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    assert_eq!(e.message, "http 422: amount exceeds the refundable balance");
    let e = p
        .refund(&refund_req("pay_400"), &key("k"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Permanent);
    // A 404: the platform does not know what the call names; never retried either.
    let e = p
        .refund(&refund_req("pay_404"), &key("k"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::NotFound);
    assert!(!e.class.is_retryable());
    assert_eq!(e.message, "http 404: no such payment");
}

#[tokio::test]
async fn a_timeout_is_an_unknown_outcome_for_a_refund_and_transient_for_a_status_read() {
    let server = MockServer::start().await;
    let slow = refund_answer("re_3", "DONE").set_delay(Duration::from_secs(2));
    Mock::given(method("POST"))
        .respond_with(slow.clone())
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(slow)
        .mount(&server)
        .await;
    let config = REFUND.replace("timeout = \"5s\"", "timeout = \"300ms\"");
    let p = payment(settings(&config, &server.uri()), &[]);
    let e = p.refund(&refund_req("pay_3"), &key("k")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    assert_eq!(
        e.message,
        "no answer within 300ms; the call may have taken effect, so retry with the same key or query its status"
    );
    let e = p
        .refund_status(&RefundLookup::Id("re_3".into()))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient { retry_after: None }, "{e}");
}

#[tokio::test]
async fn request_timeout_and_gateway_timeout_are_unknown_outcomes() {
    let server = MockServer::start().await;
    Mock::given(path("/api/payments/pay_408/refunds"))
        .respond_with(ResponseTemplate::new(408))
        .mount(&server)
        .await;
    Mock::given(path("/api/payments/pay_504/refunds"))
        .respond_with(ResponseTemplate::new(504))
        .mount(&server)
        .await;
    let p = payment(settings(REFUND, &server.uri()), &[]);
    for pay in ["pay_408", "pay_504"] {
        let e = p.refund(&refund_req(pay), &key("k")).await.unwrap_err();
        assert_eq!(e.class, ErrorClass::UnknownOutcome, "{e}");
    }
}

#[tokio::test]
async fn a_refused_connection_is_transient_nothing_was_sent() {
    // Bind a port, then free it: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let p = payment(settings(REFUND, &format!("http://127.0.0.1:{port}")), &[]);
    let e = p.refund(&refund_req("pay_1"), &key("k")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient { retry_after: None }, "{e}");
    assert_eq!(e.message, "cannot connect to the platform");
}

#[tokio::test]
async fn a_malformed_answer_is_an_unknown_outcome_for_a_refund_and_transient_for_a_read() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("<html>ok</html>", "text/html"))
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200).set_body_raw("{\"data\":", "application/json"))
        .mount(&server)
        .await;
    let p = payment(settings(REFUND, &server.uri()), &[]);
    let e = p.refund(&refund_req("pay_1"), &key("k")).await.unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome);
    assert_eq!(
        e.message,
        "the platform answered 200 OK with a body that is not JSON; the call may have taken effect, so retry with the same key or query its status"
    );
    let e = p
        .refund_status(&RefundLookup::Id("re_1".into()))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Transient { retry_after: None });
}

#[tokio::test]
async fn an_answer_without_a_mapped_output_or_with_an_unknown_status_is_an_unknown_outcome() {
    let server = MockServer::start().await;
    Mock::given(path("/api/payments/pay_noid/refunds"))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"data": {"state": "DONE"}})))
        .mount(&server)
        .await;
    Mock::given(path("/api/payments/pay_weird/refunds"))
        .respond_with(refund_answer("re_1", "TELEPORTED"))
        .mount(&server)
        .await;
    let p = payment(settings(REFUND, &server.uri()), &[]);
    let e = p
        .refund(&refund_req("pay_noid"), &key("k"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome);
    assert!(
        e.message
            .starts_with("output `refund_id`: the answer has nothing at `/data/id`"),
        "{e}"
    );
    let e = p
        .refund(&refund_req("pay_weird"), &key("k"))
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::UnknownOutcome);
    assert!(e.message.contains("unknown variant `TELEPORTED`"), "{e}");
}

#[tokio::test]
async fn status_by_id_by_key_and_not_found() {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/api/refunds/re_7"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"id": "re_7", "state": "PROCESSING"}})),
        )
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/refunds"))
        .and(query_param("payment", "pay_7"))
        .and(query_param("out_request_no", "so-7-refund-fwd-0"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({"data": {"id": "re_7", "state": "DONE"}})),
        )
        .mount(&server)
        .await;
    let p = payment(settings(REFUND, &server.uri()), &[]);
    let by_id = p
        .refund_status(&RefundLookup::Id("re_7".into()))
        .await
        .unwrap();
    assert_eq!(by_id.status, RefundStatus::Pending);
    let by_key = p
        .refund_status(&RefundLookup::Key {
            payment_id: "pay_7".into(),
            key: key("so-7-refund-fwd-0"),
        })
        .await
        .unwrap();
    assert_eq!(by_key.status, RefundStatus::Succeeded);
    assert_eq!(by_key.refund_id, Some(RefundId::new("re_7")));
    // Nothing mounted answers 404: the platform never saw the key.
    let none = p
        .refund_status(&RefundLookup::Key {
            payment_id: "pay_8".into(),
            key: key("never-used"),
        })
        .await
        .unwrap();
    assert_eq!(none.status, RefundStatus::NotFound);
    assert_eq!(none.refund_id, None);
    // Reads carry no idempotency key.
    for r in server.received_requests().await.unwrap() {
        assert_eq!(header_of(&r, "idempotency-key"), None);
    }
}

#[tokio::test]
async fn hmac_signature_is_verifiable_by_the_platform() {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .respond_with(refund_answer("re_4", "DONE"))
        .mount(&server)
        .await;
    let config = REFUND.replace(
        "headers = ",
        "auth = \"hmac\"\nsecret_env = \"PAY_HMAC\"\nsignature_header = \"X-Acme-Signature\"\nheaders = ",
    );
    let p = payment(
        settings(&config, &server.uri()),
        &[("PAY_HMAC", "whsec_123")],
    );
    p.refund(&refund_req("pay_4"), &key("k-4")).await.unwrap();
    let r = &server.received_requests().await.unwrap()[0];
    let ts = header_of(r, "x-timestamp").unwrap();
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(ts.parse::<u64>().unwrap()) < 60);
    // The platform's side: HMAC-SHA256 over "METHOD\npath?query\ntimestamp\nbody".
    let mut mac = Hmac::<Sha256>::new_from_slice(b"whsec_123").unwrap();
    mac.update(format!("POST\n/api/payments/pay_4/refunds\n{ts}\n").as_bytes());
    mac.update(&r.body);
    let expected = hex::encode(mac.finalize().into_bytes());
    assert_eq!(header_of(r, "x-acme-signature"), Some(expected));
}

#[tokio::test]
async fn bearer_and_basic_auth_headers() {
    let server = MockServer::start().await;
    Mock::given(header("Authorization", "Bearer tok_1"))
        .respond_with(refund_answer("re_b", "DONE"))
        .mount(&server)
        .await;
    // "shop:pa55" in base64.
    Mock::given(header("Authorization", "Basic c2hvcDpwYTU1"))
        .respond_with(refund_answer("re_c", "DONE"))
        .mount(&server)
        .await;
    let bearer = REFUND.replace(
        "headers = ",
        "auth = \"bearer\"\ntoken_env = \"T\"\nheaders = ",
    );
    let p = payment(settings(&bearer, &server.uri()), &[("T", "tok_1")]);
    assert_eq!(
        p.refund(&refund_req("p"), &key("k"))
            .await
            .unwrap()
            .refund_id,
        RefundId::new("re_b")
    );
    let basic = REFUND.replace(
        "headers = ",
        "auth = \"basic\"\nusername = \"shop\"\npassword_env = \"PW\"\nheaders = ",
    );
    let p = payment(settings(&basic, &server.uri()), &[("PW", "pa55")]);
    assert_eq!(
        p.refund(&refund_req("p"), &key("k"))
            .await
            .unwrap()
            .refund_id,
        RefundId::new("re_c")
    );
}

const WAREHOUSE: &str = r#"
base_url = "BASE"
idempotency_header = "X-Request-Id"

[actions."warehouse.intercept_shipment"]
method = "POST"
path = "/orders/{order_id}/intercept"
body = { reference = "{service_order_id}", skus = ["{lines.0.sku}"] }
outputs = { result = { pointer = "/outcome", map = { STOPPED = "intercepted", SHIPPED = "too_late" } } }
on_status = { 409 = { result = "too_late" } }

[actions."warehouse.create_return"]
method = "POST"
path = "/returns"
body = { order = "{order_id}", lines = "{lines}", pickup = "{pickup}", reference = "{idempotency_key}" }
outputs = { rma_id = "/rma" }

[actions."warehouse.cancel_return"]
method = "DELETE"
path = "/returns/{rma_id}"
on_status = { 404 = {} }
"#;

fn intercept(order: &str) -> InterceptShipment {
    InterceptShipment {
        order_id: OrderId::new(order),
        service_order_id: ServiceOrderId::new("so-9"),
        lines: vec![LineRef {
            line_id: "l1".into(),
            sku: "tshirt-m".into(),
            quantity: 1,
        }],
    }
}

#[tokio::test]
async fn warehouse_actions_map_values_statuses_and_empty_answers() {
    let server = MockServer::start().await;
    Mock::given(path("/orders/o-1/intercept"))
        .and(header("X-Request-Id", "k-int"))
        .and(body_json(
            json!({"reference": "so-9", "skus": ["tshirt-m"]}),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({"outcome": "STOPPED"})))
        .mount(&server)
        .await;
    Mock::given(path("/orders/o-2/intercept"))
        .respond_with(ResponseTemplate::new(409))
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/returns"))
        .and(body_json(json!({
            "order": "o-1",
            "lines": [{"line_id": "l1", "sku": "tshirt-m", "quantity": 1}],
            "pickup": true,
            "reference": "k-rma",
        })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({"rma": "rma-1"})))
        .mount(&server)
        .await;
    Mock::given(method("DELETE"))
        .and(path("/returns/rma-1"))
        .respond_with(ResponseTemplate::new(204))
        .mount(&server)
        .await;
    let w = warehouse(settings(WAREHOUSE, &server.uri()));
    let caps: Vec<&str> = w.capabilities().actions().collect();
    assert_eq!(
        caps,
        [
            "warehouse.cancel_return",
            "warehouse.create_return",
            "warehouse.intercept_shipment"
        ]
    );
    let out = w
        .intercept_shipment(&intercept("o-1"), &key("k-int"))
        .await
        .unwrap();
    assert_eq!(out.result, InterceptResult::Intercepted);
    let out = w
        .intercept_shipment(&intercept("o-2"), &key("k"))
        .await
        .unwrap();
    assert_eq!(out.result, InterceptResult::TooLate);
    let rma = w
        .create_return(
            &aftersales_adapter::types::CreateReturn {
                order_id: "o-1".into(),
                service_order_id: "so-9".into(),
                lines: intercept("o-1").lines,
                pickup: true,
            },
            &key("k-rma"),
        )
        .await
        .unwrap();
    assert_eq!(rma.rma_id, RmaId::new("rma-1"));
    w.cancel_return(
        &RmaRef {
            rma_id: "rma-1".into(),
        },
        &key("k-c"),
    )
    .await
    .unwrap();
    // 404 on cancel is configured as done (already gone).
    w.cancel_return(
        &RmaRef {
            rma_id: "rma-gone".into(),
        },
        &key("k-c"),
    )
    .await
    .unwrap();
    // Unconfigured actions are unsupported.
    let e = w
        .restock(
            &RmaRef {
                rma_id: "rma-1".into(),
            },
            &key("k"),
        )
        .await
        .unwrap_err();
    assert_eq!(e.class, ErrorClass::Unsupported);
}

#[test]
fn the_adapter_serves_only_systems_with_configured_actions() {
    let built = build(settings(WAREHOUSE, "http://localhost"), &[]).unwrap();
    assert!(built.warehouse.is_some());
    assert!(built.payment.is_none() && built.order.is_none() && built.notify.is_none());
    assert!(built.webhooks.is_none());
}

// ---------------------------------------------------------------- configuration errors

fn minimal(action: &str) -> String {
    format!("base_url = \"BASE\"\nidempotency_header = \"Idempotency-Key\"\n{action}")
}

#[test]
fn an_unknown_action_is_named_with_a_suggestion() {
    let e = build_error(
        settings(
            &minimal("[actions.\"payment.refnd\"]\nmethod = \"POST\"\npath = \"/r\"\n"),
            "http://x",
        ),
        &[],
    );
    assert_eq!(
        e,
        "adapter `http`: invalid settings: actions: unknown action `payment.refnd`; did you mean `payment.refund`?"
    );
}

#[test]
fn a_missing_env_var_names_the_variable_not_the_value() {
    let config = REFUND.replace(
        "headers = ",
        "auth = \"bearer\"\ntoken_env = \"ACME_TOKEN\"\nheaders = ",
    );
    let e = build(settings(&config, "http://x"), &[]).unwrap_err();
    assert_eq!(
        e,
        RegistryError::MissingEnv {
            kind: "http".into(),
            setting: "token_env".into(),
            var: "ACME_TOKEN".into(),
        }
    );
    let config = REFUND.replace("headers = ", "auth = \"hmac\"\nheaders = ");
    assert_eq!(
        build_error(settings(&config, "http://x"), &[]),
        "adapter `http`: setting `secret_env` must name an environment variable"
    );
}

#[test]
fn template_mistakes_name_the_action_and_the_field() {
    let e = build_error(
        settings(
            &minimal(
                r#"
[actions."payment.refund"]
method = "POST"
path = "/payments/{payment}/refunds/{reason}"
body = { amount = "{amont.minor}", cur = "{amount.curency}", dec = "{amount.minor|decimal}", x = "{reason" }
outputs = { refund_id = "/id", status = "status", colour = "/c" }
"#,
            ),
            "http://x",
        ),
        &[],
    );
    let want = [
        "actions.\"payment.refund\".path: {payment} names no input of payment.refund (inputs here: payment_id, amount, reason, service_order_id)",
        "actions.\"payment.refund\".path: {reason}: input `reason` is optional and a path segment cannot be left out; use `query` or `body`",
        "actions.\"payment.refund\".body.x: `{reason`: unclosed `{` (write `{{` for a brace)",
        "actions.\"payment.refund\".outputs.colour: payment.refund has no output `colour` (outputs: refund_id, status)",
        "actions.\"payment.refund\".outputs.status: `status` is not a JSON pointer; pointers start with `/` (\"/data/id\")",
    ];
    for w in want {
        assert!(e.contains(w), "missing {w:?} in:\n{e}");
    }
    // The body's parse error stops its placeholder checks; fix it and they are reported.
    let e = build_error(
        settings(
            &minimal(
                r#"
[actions."payment.refund"]
method = "POST"
path = "/r"
body = { amount = "{amont.minor}", cur = "{amount.curency}", dec = "{amount.minor|decimal}" }
outputs = { refund_id = "/id", status = "/status" }
"#,
            ),
            "http://x",
        ),
        &[],
    );
    for w in [
        "actions.\"payment.refund\".body: {amont.minor} names no input of payment.refund",
        "actions.\"payment.refund\".body: {amount.curency}: input `amount` has no `curency` (money has `minor` and `currency`)",
        "actions.\"payment.refund\".body: {amount.minor|decimal}: `decimal` applies to a money input as a whole, such as `{amount|decimal}`",
    ] {
        assert!(e.contains(w), "missing {w:?} in:\n{e}");
    }
}

#[test]
fn mutating_actions_must_forward_the_key_and_map_required_outputs() {
    let e = build_error(
        settings(
            r#"
base_url = "BASE"
[actions."payment.refund"]
method = "POST"
path = "/r"
outputs = { refund_id = "/id" }
"#,
            "http://x",
        ),
        &[],
    );
    assert!(
        e.contains("payment.refund changes state at the platform but does not forward the idempotency key; set `idempotency_header` or use `{idempotency_key}` in its path, query or body"),
        "{e}"
    );
    assert!(
        e.contains("actions.\"payment.refund\".outputs: required output `status` is not mapped"),
        "{e}"
    );
    // `{idempotency_key}` in the body forwards it too (Alipay's `out_request_no` style).
    let ok = settings(
        r#"
base_url = "BASE"
[actions."payment.refund"]
method = "POST"
path = "/r"
body = { out_request_no = "{idempotency_key}" }
outputs = { refund_id = "/id", status = { value = "succeeded" } }
"#,
        "http://x",
    );
    assert!(build(ok, &[]).is_ok());
}

#[test]
fn settings_errors_are_all_reported_at_once() {
    let e = build_error(
        settings(
            r#"
base_url = "ftp://BASE"
timeout = "10"
token_env = "X"
[actions."payment.refund_status"]
method = "FETCH"
path = "refunds"
body = { a = 1 }
on_status = { 200 = {} }
[actions."warehouse.restock"]
method = "POST"
path = "/r"
by_key = { method = "GET", path = "/x" }
"#,
            "x",
        ),
        &[],
    );
    for w in [
        "base_url: `ftp://x` must be an http or https URL",
        "timeout: expected a unit ms, s or m in \"10\"",
        "token_env: only used with auth = \"bearer\"",
        "actions.\"payment.refund_status\".method: `FETCH` is not one of GET, POST, PUT, PATCH, DELETE",
        "actions.\"payment.refund_status\".path: `refunds` must start with `/`",
        "actions.\"payment.refund_status\".on_status.200: expected an HTTP status from 400 to 599",
        "actions.\"warehouse.restock\".by_key: only `payment.refund_status` has a lookup by key",
        "actions.\"warehouse.restock\": warehouse.restock changes state",
    ] {
        assert!(e.contains(w), "missing {w:?} in:\n{e}");
    }
    let e = build_error(
        settings(
            "base_url = \"BASE\"\nactions = {}\nsecret = 1\n",
            "http://x",
        ),
        &[],
    );
    assert!(e.contains("unknown field `secret`"), "{e}");
    let e = build_error(
        settings(
            "base_url = \"BASE\"\n[actions.\"notify.send\"]\nmethod = \"POST\"\npath = \"/n\"\nmethd = \"x\"\n",
            "http://x",
        ),
        &[],
    );
    assert!(
        e.starts_with(
            "adapter `http`: invalid settings: actions.\"notify.send\": unknown field `methd`"
        ),
        "{e}"
    );
}

#[test]
fn read_only_actions_cannot_use_the_key_and_get_has_no_body() {
    let e = build_error(
        settings(
            r#"
base_url = "BASE"
[actions."payment.refund_status"]
method = "GET"
path = "/r/{refund_id}"
query = { k = "{idempotency_key}", p = "{payment_id}" }
outputs = { status = "/s" }
"#,
            "http://x",
        ),
        &[],
    );
    assert!(
        e.contains(
            "{idempotency_key}: payment.refund_status is read-only and carries no idempotency key"
        ),
        "{e}"
    );
    assert!(
        e.contains("{payment_id} names no input of payment.refund_status (inputs here: refund_id)"),
        "{e}"
    );
}

#[test]
fn the_example_in_the_readme_builds() {
    let readme = include_str!("../README.md");
    let start = readme.find("```toml\n").unwrap() + "```toml\n".len();
    let end = start + readme[start..].find("```").unwrap();
    let doc: Value = toml::from_str(&readme[start..end]).unwrap();
    let mut registry = Registry::new();
    aftersales_adapter_http::register(&mut registry);
    let config: AdapterConfig = serde_json::from_value(doc["adapters"]["payment"].clone()).unwrap();
    let env = |name: &str| (name == "ACME_PAY_TOKEN").then(|| "sk_test".to_owned());
    let built = registry.build(&config, &env).unwrap();
    let caps: Vec<&str> = built.payment.unwrap().capabilities().actions().collect();
    assert_eq!(caps, ["payment.refund", "payment.refund_status"]);
}

/// Every `kind = "http"` block of `docs/adapters.md` builds.
#[test]
fn the_examples_in_docs_adapters_md_build() {
    let doc = include_str!("../../../docs/adapters.md");
    let mut registry = Registry::new();
    aftersales_adapter_http::register(&mut registry);
    let env = |_: &str| Some("secret-for-tests".to_owned());
    let mut built = 0;
    for block in doc.split("```toml\n").skip(1) {
        let text = &block[..block.find("```").unwrap()];
        let value: Value = toml::from_str(text).unwrap();
        for (system, config) in value["adapters"].as_object().into_iter().flatten() {
            if config["kind"] != "http" {
                continue;
            }
            let config: AdapterConfig = serde_json::from_value(config.clone()).unwrap();
            if let Err(e) = registry.build(&config, &env) {
                panic!("docs/adapters.md, adapters.{system}: {e}");
            }
            built += 1;
        }
    }
    assert_eq!(built, 2, "expected the payment and warehouse examples");
}
