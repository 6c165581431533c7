//! A stateful mock of the Stripe Refunds API (the documented shapes), and the adapter built
//! against it the way the binary builds it.
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /v1/refunds` (form: `payment_intent`, `amount`, `reason`, `metadata[...]`) | `200` and the refund |
//! | `GET /v1/refunds/{id}` | `200` and the refund, or `404 resource_missing` |
//! | `GET /v1/refunds?payment_intent=..&limit=..&starting_after=..` | `200` and a list, newest first |
//!
//! Idempotency as Stripe keeps it: the same `Idempotency-Key` with the same parameters
//! replays the saved status and body (a saved `500` included); with other parameters it is
//! `400 idempotency_error`. Rate limits and `503`s happen before the idempotency layer and
//! are not saved.

#![allow(dead_code)]

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aftersales_adapter::ids::PaymentId;
use aftersales_adapter::{AdapterConfig, Built, Payment, Registry};
use aftersales_adapter_testkit::PaymentHarness;
use aftersales_money::{Currency, Money};
use async_trait::async_trait;
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

pub const API_KEY: &str = "sk_test_4eC39HqLyjWDarjtT1zdp7dc";
pub const WEBHOOK_SECRET: &str = "whsec_test_secret";
pub const OLD_WEBHOOK_SECRET: &str = "whsec_old_secret";

/// How long a lost answer is held back; the adapter's timeout in tests is shorter.
pub const LOST_ANSWER_DELAY: Duration = Duration::from_secs(3);

/// Builds the adapter the way the binary does: registry, config, environment.
pub fn build(base_url: &str) -> Built {
    let mut registry = Registry::new();
    aftersales_adapter_stripe::register(&mut registry);
    registry.build(&config(base_url), &env).unwrap()
}

pub fn config(base_url: &str) -> AdapterConfig {
    AdapterConfig::with_settings(
        "stripe",
        json!({
            "base_url": base_url,
            "api_key_env": "STRIPE_SECRET_KEY",
            "api_version": "2024-10-28.acacia",
            "timeout": "1s",
            "webhook_secret_env": "STRIPE_WEBHOOK_SECRET",
            "webhook_previous_secret_env": "STRIPE_OLD_WEBHOOK_SECRET",
        }),
    )
}

pub fn env(name: &str) -> Option<String> {
    match name {
        "STRIPE_SECRET_KEY" => Some(API_KEY.to_owned()),
        "STRIPE_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_owned()),
        "STRIPE_OLD_WEBHOOK_SECRET" => Some(OLD_WEBHOOK_SECRET.to_owned()),
        _ => None,
    }
}

/// Our money in Stripe's units, for the currencies the tests use (not the adapter's code).
pub fn stripe_units(m: Money) -> (i64, String) {
    (m.minor, m.currency.code().to_ascii_lowercase())
}

/// A running mock; dropping it stops the server.
pub struct MockStripe {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

#[derive(Default)]
struct State {
    payments: BTreeMap<String, (i64, String)>,
    refunds: Vec<Rec>,
    keys: HashMap<String, Saved>,
    next: u64,
    asynchronous: bool,
    faults: VecDeque<Fault>,
}

#[derive(Clone)]
struct Rec {
    id: String,
    payment_intent: String,
    amount: i64,
    currency: String,
    status: &'static str,
    reason: String,
    metadata: BTreeMap<String, String>,
    created: u64,
}

struct Saved {
    params: Vec<(String, String)>,
    status: u16,
    body: Value,
}

enum Fault {
    /// Answered before the idempotency layer: nothing happens, nothing is saved.
    Status(u16, Option<String>),
    /// The refund is made, then the answer is held for `LOST_ANSWER_DELAY`.
    LoseAnswer,
    /// The refund is made, but Stripe answers (and saves) a `500`.
    ServerErrorAfterApplying,
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

fn error(status: u16, kind: &str, code: Option<&str>, message: &str) -> (u16, Value) {
    let mut e = json!({"type": kind, "message": message});
    if let Some(c) = code {
        e["code"] = c.into();
    }
    (status, json!({ "error": e }))
}

fn respond((status, body): (u16, Value)) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .insert_header("Request-Id", "req_mock")
        .set_body_json(body)
}

impl MockStripe {
    pub async fn start() -> MockStripe {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Handler {
                state: state.clone(),
            })
            .mount(&server)
            .await;
        MockStripe { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// A succeeded PaymentIntent of `amount`.
    pub fn create_payment(&self, amount: Money) -> PaymentId {
        let mut s = lock(&self.state);
        s.next += 1;
        let id = format!("pi_3Mock{:04}", s.next);
        s.payments.insert(id.clone(), stripe_units(amount));
        PaymentId::new(id)
    }

    /// The ids of a payment's refunds, oldest first.
    pub fn refunds_of(&self, payment: &PaymentId) -> Vec<String> {
        lock(&self.state)
            .refunds
            .iter()
            .filter(|r| r.payment_intent == payment.as_str())
            .map(|r| r.id.clone())
            .collect()
    }

    pub fn set_asynchronous(&self, on: bool) {
        lock(&self.state).asynchronous = on;
    }

    /// Refunds that moved (or are moving) money: every one not failed or canceled.
    pub fn movements(&self, payment: &PaymentId) -> Vec<Money> {
        lock(&self.state)
            .refunds
            .iter()
            .filter(|r| {
                r.payment_intent == payment.as_str()
                    && r.status != "failed"
                    && r.status != "canceled"
            })
            .map(|r| {
                Money::new(
                    r.amount,
                    Currency::new(&r.currency.to_ascii_uppercase()).unwrap(),
                )
            })
            .collect()
    }

    /// Moves a pending refund to `status` and returns the refund object, as an event would
    /// carry it.
    pub fn settle(&self, refund_id: &str, status: &'static str) -> Value {
        let mut s = lock(&self.state);
        let r = s.refunds.iter_mut().find(|r| r.id == refund_id).unwrap();
        r.status = status;
        refund_json(r)
    }

    pub fn fail_next(&self, status: u16, retry_after: Option<&str>) {
        lock(&self.state)
            .faults
            .push_back(Fault::Status(status, retry_after.map(str::to_owned)));
    }

    pub fn lose_next_answer(&self) {
        lock(&self.state).faults.push_back(Fault::LoseAnswer);
    }

    pub fn server_error_after_applying_next(&self) {
        lock(&self.state)
            .faults
            .push_back(Fault::ServerErrorAfterApplying);
    }

    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }

    /// The `POST /v1/refunds` requests received.
    pub async fn refund_posts(&self) -> Vec<Request> {
        self.requests()
            .await
            .into_iter()
            .filter(|r| r.method.as_str() == "POST" && r.url.path() == "/v1/refunds")
            .collect()
    }
}

fn refund_json(r: &Rec) -> Value {
    json!({
        "id": r.id,
        "object": "refund",
        "amount": r.amount,
        "balance_transaction": Value::Null,
        "charge": format!("ch_{}", &r.payment_intent[3..]),
        "created": r.created,
        "currency": r.currency,
        "destination_details": {"type": "card", "card": {"type": "refund"}},
        "metadata": r.metadata,
        "payment_intent": r.payment_intent,
        "reason": r.reason,
        "receipt_number": Value::Null,
        "source_transfer_reversal": Value::Null,
        "status": r.status,
        "transfer_reversal": Value::Null,
    })
}

struct Handler {
    state: Arc<Mutex<State>>,
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut s = lock(&self.state);
        let auth = request
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(format!("Bearer {API_KEY}").as_str()) {
            return respond(error(
                401,
                "invalid_request_error",
                None,
                "Invalid API Key provided",
            ));
        }
        let path: Vec<&str> = request
            .url
            .path_segments()
            .map(|p| p.collect())
            .unwrap_or_default();
        match (request.method.as_str(), path.as_slice()) {
            ("POST", ["v1", "refunds"]) => create(&mut s, request),
            ("GET", ["v1", "refunds", id]) => match s.refunds.iter().find(|r| r.id == *id) {
                Some(r) => respond((200, refund_json(r))),
                None => respond(error(
                    404,
                    "invalid_request_error",
                    Some("resource_missing"),
                    &format!("No such refund: '{id}'"),
                )),
            },
            ("GET", ["v1", "refunds"]) => list(&s, request),
            _ => respond(error(
                404,
                "invalid_request_error",
                None,
                "Unrecognized request URL",
            )),
        }
    }
}

fn list(s: &State, request: &Request) -> ResponseTemplate {
    let q: HashMap<String, String> = request.url.query_pairs().into_owned().collect();
    let limit: usize = q.get("limit").and_then(|l| l.parse().ok()).unwrap_or(10);
    let mut all: Vec<&Rec> = s
        .refunds
        .iter()
        .filter(|r| {
            q.get("payment_intent")
                .is_none_or(|p| *p == r.payment_intent)
        })
        .collect();
    all.reverse();
    if let Some(after) = q.get("starting_after") {
        match all.iter().position(|r| r.id == *after) {
            Some(i) => all.drain(..=i),
            None => all.drain(..),
        };
    }
    let has_more = all.len() > limit;
    let data: Vec<Value> = all.iter().take(limit).map(|r| refund_json(r)).collect();
    respond((
        200,
        json!({"object": "list", "data": data, "has_more": has_more, "url": "/v1/refunds"}),
    ))
}

fn create(s: &mut State, request: &Request) -> ResponseTemplate {
    let key = request
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let fault = s.faults.pop_front();
    if let Some(Fault::Status(code, after)) = &fault {
        let mut t = respond(error(
            *code,
            "api_error",
            None,
            "Stripe is temporarily unavailable",
        ));
        if let Some(a) = after {
            t = t.insert_header("Retry-After", a.as_str());
        }
        return t;
    }
    let mut params: Vec<(String, String)> =
        serde_urlencoded::from_bytes(&request.body).unwrap_or_default();
    params.sort();
    if let Some(k) = &key
        && let Some(saved) = s.keys.get(k)
    {
        if saved.params != params {
            return respond(error(
                400,
                "idempotency_error",
                None,
                "Keys for idempotent requests can only be used with the same parameters they were first used with.",
            ));
        }
        return respond((saved.status, saved.body.clone()))
            .insert_header("Idempotent-Replayed", "true");
    }
    let p: HashMap<&str, &str> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // Validation happens before execution starts: nothing is saved.
    let Some(pi) = p.get("payment_intent").map(|s| (*s).to_owned()) else {
        return respond(error(
            400,
            "invalid_request_error",
            Some("parameter_missing"),
            "One of the following params should be provided for this request: payment_intent or charge.",
        ));
    };
    let Some(amount) = p.get("amount").and_then(|a| a.parse::<i64>().ok()) else {
        return respond(error(
            400,
            "invalid_request_error",
            Some("parameter_invalid_integer"),
            "Invalid integer: amount",
        ));
    };
    let reason = p.get("reason").copied().unwrap_or("requested_by_customer");
    if !["duplicate", "fraudulent", "requested_by_customer"].contains(&reason) {
        return respond(error(400, "invalid_request_error", None, "Invalid reason"));
    }
    let Some((captured, currency)) = s.payments.get(&pi).cloned() else {
        return respond(error(
            400,
            "invalid_request_error",
            Some("resource_missing"),
            &format!("No such payment_intent: '{pi}'"),
        ));
    };
    let refunded: i64 = s
        .refunds
        .iter()
        .filter(|r| r.payment_intent == pi && r.status != "failed" && r.status != "canceled")
        .map(|r| r.amount)
        .sum();
    // Execution has begun: from here on the answer is saved under the key.
    let answer = if refunded >= captured {
        error(
            400,
            "invalid_request_error",
            Some("charge_already_refunded"),
            "Charge has already been refunded.",
        )
    } else if refunded + amount > captured {
        error(
            400,
            "invalid_request_error",
            Some("amount_too_large"),
            &format!(
                "Refund amount ({amount}) is greater than unrefunded amount on charge ({})",
                captured - refunded
            ),
        )
    } else {
        s.next += 1;
        let metadata: BTreeMap<String, String> = params
            .iter()
            .filter_map(|(k, v)| {
                k.strip_prefix("metadata[")
                    .and_then(|k| k.strip_suffix(']'))
                    .map(|k| (k.to_owned(), v.clone()))
            })
            .collect();
        let rec = Rec {
            id: format!("re_3Mock{:04}", s.next),
            payment_intent: pi,
            amount,
            currency,
            status: if s.asynchronous {
                "pending"
            } else {
                "succeeded"
            },
            reason: reason.to_owned(),
            metadata,
            created: 1_767_225_600 + s.next,
        };
        let body = refund_json(&rec);
        s.refunds.push(rec);
        (200, body)
    };
    let answer = match fault {
        Some(Fault::ServerErrorAfterApplying) => {
            error(500, "api_error", None, "An unknown error occurred")
        }
        _ => answer,
    };
    if let Some(k) = key {
        s.keys.insert(
            k,
            Saved {
                params,
                status: answer.0,
                body: answer.1.clone(),
            },
        );
    }
    let t = respond(answer);
    match fault {
        Some(Fault::LoseAnswer) => t.set_delay(LOST_ANSWER_DELAY),
        _ => t,
    }
}

/// The conformance harness: a fresh adapter per check against a shared mock.
pub struct StripeHarness {
    pub api: Arc<MockStripe>,
    pub payment: Arc<dyn Payment>,
    pub currency: Currency,
}

#[async_trait]
impl PaymentHarness for StripeHarness {
    fn payment(&self) -> Arc<dyn Payment> {
        self.payment.clone()
    }

    async fn paid_payment(&self, amount: Money) -> PaymentId {
        self.api.create_payment(amount)
    }

    fn movements(&self, payment_id: &PaymentId) -> Vec<Money> {
        self.api.movements(payment_id)
    }

    fn lose_next_answer(&self) -> bool {
        self.api.lose_next_answer();
        true
    }

    fn fail_next_transiently(&self) -> bool {
        self.api.fail_next(503, Some("1"));
        true
    }

    fn currency(&self) -> Currency {
        self.currency
    }
}
