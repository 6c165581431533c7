//! A stateful mock of a typical REST payment API, for running
//! [`payment_conformance`](crate::payment_conformance) against an adapter that speaks HTTP
//! (feature `mock-payment`).
//!
//! [`MockPaymentApi`] serves, on a local port, the *reference payment API*: the shape most
//! card and wallet platforms share (Stripe-like), small enough to read in one sitting and
//! strict where the engine's promises are at stake. The toy "Acme Pay" platform of
//! `docs/adapters.md` speaks exactly this API.
//!
//! | request | answer |
//! | --- | --- |
//! | `POST /v1/payments/{payment_id}/refunds` with header `Idempotency-Key` and body `{"amount": <minor units>, "currency": "CNY", "reason"?: .., "metadata"?: {..}}` | `201` and the refund object |
//! | `GET /v1/refunds/{refund_id}` | `200` and the refund object, or `404` |
//! | `GET /v1/payments/{payment_id}/refunds/by-key/{key}` | `200` and the refund made with that key, or `404` |
//!
//! The refund object is `{"id": "re_1", "object": "refund", "payment_id": .., "amount": ..,
//! "currency": .., "status": "succeeded" | "processing" | "failed", "reason"?: ..}`; errors
//! are `{"error": {"code": .., "message": ..}}`.
//!
//! Rules, as real platforms keep them:
//!
//! - A refund without `Idempotency-Key` is refused (`400 missing_idempotency_key`).
//! - The same key with the same payment and body replays the first answer (status code
//!   and body) and moves no money; the same key with anything else is refused
//!   (`409 idempotency_key_reused`). Keys are global to the account, as at Stripe.
//! - Refusals are not recorded, so the same key may be tried again after one.
//! - An unknown payment is `404 payment_not_found`; a currency other than the payment's is
//!   `422 currency_mismatch`; refunds adding up to more than was captured are
//!   `422 amount_too_large`; a malformed body is `400 invalid_request`.
//! - With [`MockPaymentApi::require_bearer`], requests without `Authorization: Bearer
//!   <token>` answer `401`.
//!
//! Faults are staged per refund call: [`fail_next_refund`](MockPaymentApi::fail_next_refund)
//! answers a status (`503`, `429`) without effect; [`lose_next_refund_answer`](
//! MockPaymentApi::lose_next_refund_answer) applies the refund and holds the answer for
//! [`LOST_ANSWER_DELAY`], so a client with a shorter timeout gives up after the money moved;
//! [`garble_next_refund_answer`](MockPaymentApi::garble_next_refund_answer) applies the
//! refund and answers `200` with a body that is not JSON.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use aftersales_adapter::Payment;
use aftersales_adapter::ids::PaymentId;
use aftersales_money::{Currency, Money};
use async_trait::async_trait;
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

use crate::PaymentHarness;

/// How long [`MockPaymentApi::lose_next_refund_answer`] holds an answer back. Adapters under
/// test must time out sooner (half a second is plenty on a local port).
pub const LOST_ANSWER_DELAY: Duration = Duration::from_secs(3);

/// A running mock of the reference payment API; dropping it stops the server.
pub struct MockPaymentApi {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MockPaymentApi {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockPaymentApi")
            .field("uri", &self.server.uri())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct State {
    payments: BTreeMap<String, Money>,
    refunds: Vec<RefundRecord>,
    keys: HashMap<String, Recorded>,
    next_id: u64,
    asynchronous: bool,
    faults: VecDeque<Fault>,
    bearer: Option<String>,
}

struct RefundRecord {
    id: String,
    payment_id: String,
    amount: Money,
    status: &'static str,
    reason: Option<String>,
}

/// The first answer to an idempotency key, replayed on repeats.
struct Recorded {
    payment_id: String,
    request: Value,
    refund_id: String,
    status: u16,
    body: Value,
}

enum Fault {
    Status {
        code: u16,
        retry_after: Option<String>,
    },
    LoseAnswer,
    Garble,
}

impl MockPaymentApi {
    /// Starts a mock on a free local port, with no payments, refunds that succeed at once
    /// and no authentication.
    pub async fn start() -> MockPaymentApi {
        let server = MockServer::start().await;
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any())
            .respond_with(Handler {
                state: state.clone(),
            })
            .mount(&server)
            .await;
        MockPaymentApi { server, state }
    }

    /// The base URL, such as `http://127.0.0.1:38817` (no trailing slash).
    pub fn uri(&self) -> String {
        self.server.uri()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        lock(&self.state)
    }

    /// Requires `Authorization: Bearer <token>` on every request from now on.
    pub fn require_bearer(&self, token: impl Into<String>) {
        self.lock().bearer = Some(token.into());
    }

    /// When true, new refunds answer `processing` and stay so until [`settle`](Self::settle).
    pub fn set_asynchronous_refunds(&self, asynchronous: bool) {
        self.lock().asynchronous = asynchronous;
    }

    /// Creates a captured payment of `amount` (ids `pay_1`, `pay_2`, ...).
    pub fn create_payment(&self, amount: Money) -> PaymentId {
        let mut state = self.lock();
        state.next_id += 1;
        let id = format!("pay_{}", state.next_id);
        state.payments.insert(id.clone(), amount);
        PaymentId::new(id)
    }

    /// The refunds that moved (or are moving) money for a payment: every refund not
    /// `failed`, in creation order.
    pub fn movements(&self, payment_id: &PaymentId) -> Vec<Money> {
        self.lock()
            .refunds
            .iter()
            .filter(|r| r.payment_id == payment_id.as_str() && r.status != "failed")
            .map(|r| r.amount)
            .collect()
    }

    /// Finishes a `processing` refund as `succeeded` (true) or `failed` (false). Returns
    /// false when there is no such processing refund.
    pub fn settle(&self, refund_id: &str, succeeded: bool) -> bool {
        let mut state = self.lock();
        match state
            .refunds
            .iter_mut()
            .find(|r| r.id == refund_id && r.status == "processing")
        {
            Some(r) => {
                r.status = if succeeded { "succeeded" } else { "failed" };
                true
            }
            None => false,
        }
    }

    /// The next refund call answers `status` (with `Retry-After` when given) and has no
    /// effect.
    pub fn fail_next_refund(&self, status: u16, retry_after: Option<&str>) {
        self.lock().faults.push_back(Fault::Status {
            code: status,
            retry_after: retry_after.map(str::to_owned),
        });
    }

    /// The next refund call takes effect, then its answer is held for
    /// [`LOST_ANSWER_DELAY`].
    pub fn lose_next_refund_answer(&self) {
        self.lock().faults.push_back(Fault::LoseAnswer);
    }

    /// The next refund call takes effect and answers `200` with a body that is not JSON.
    pub fn garble_next_refund_answer(&self) {
        self.lock().faults.push_back(Fault::Garble);
    }

    /// Every request the mock received, in arrival order.
    pub async fn requests(&self) -> Vec<Request> {
        self.server.received_requests().await.unwrap_or_default()
    }
}

fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    // Every change is made after its checks, so a poisoned lock still holds a consistent
    // state.
    state.lock().unwrap_or_else(|p| p.into_inner())
}

struct Handler {
    state: Arc<Mutex<State>>,
}

fn error(status: u16, code: &str, message: impl Into<String>) -> ResponseTemplate {
    ResponseTemplate::new(status)
        .set_body_json(json!({"error": {"code": code, "message": message.into()}}))
}

impl Respond for Handler {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = lock(&self.state);
        if let Some(token) = &state.bearer {
            let expected = format!("Bearer {token}");
            let given = request
                .headers
                .get("authorization")
                .and_then(|v| v.to_str().ok());
            if given != Some(expected.as_str()) {
                return error(401, "unauthorized", "missing or wrong bearer token");
            }
        }
        let segments: Vec<&str> = request
            .url
            .path_segments()
            .map(|s| s.collect())
            .unwrap_or_default();
        match (request.method.as_str(), segments.as_slice()) {
            ("POST", ["v1", "payments", payment_id, "refunds"]) => {
                create_refund(&mut state, payment_id, request)
            }
            ("GET", ["v1", "refunds", refund_id]) => {
                match state.refunds.iter().find(|r| r.id == *refund_id) {
                    Some(r) => ResponseTemplate::new(200).set_body_json(refund_json(r)),
                    None => error(404, "not_found", format!("no refund `{refund_id}`")),
                }
            }
            ("GET", ["v1", "payments", payment_id, "refunds", "by-key", key]) => {
                let found = state
                    .keys
                    .get(*key)
                    .filter(|k| k.payment_id == *payment_id)
                    .and_then(|k| state.refunds.iter().find(|r| r.id == k.refund_id));
                match found {
                    Some(r) => ResponseTemplate::new(200).set_body_json(refund_json(r)),
                    None => error(404, "not_found", "no refund was made with that key"),
                }
            }
            _ => error(404, "no_route", "no such endpoint"),
        }
    }
}

fn refund_json(r: &RefundRecord) -> Value {
    let mut v = json!({
        "id": r.id,
        "object": "refund",
        "payment_id": r.payment_id,
        "amount": r.amount.minor,
        "currency": r.amount.currency.code(),
        "status": r.status,
    });
    if let Some(reason) = &r.reason {
        v["reason"] = Value::String(reason.clone());
    }
    v
}

fn create_refund(state: &mut State, payment_id: &str, request: &Request) -> ResponseTemplate {
    let Some(key) = request
        .headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return error(
            400,
            "missing_idempotency_key",
            "refunds need an Idempotency-Key header",
        );
    };
    let fault = state.faults.pop_front();
    if let Some(Fault::Status { code, retry_after }) = &fault {
        let mut t = error(*code, "unavailable", "try again later");
        if let Some(after) = retry_after {
            t = t.insert_header("Retry-After", after.as_str());
        }
        return t;
    }
    let Ok(body) = serde_json::from_slice::<Value>(&request.body) else {
        return error(400, "invalid_request", "the body is not JSON");
    };
    let answer = match state.keys.get(&key) {
        Some(first) if first.payment_id == payment_id && first.request == body => {
            ResponseTemplate::new(first.status).set_body_json(first.body.clone())
        }
        Some(_) => {
            return error(
                409,
                "idempotency_key_reused",
                format!("key `{key}` was used for another request"),
            );
        }
        None => match apply_refund(state, payment_id, &key, body) {
            Ok(answer) => answer,
            Err(Refusal(status, code, message)) => return error(status, code, message),
        },
    };
    match fault {
        Some(Fault::LoseAnswer) => answer.set_delay(LOST_ANSWER_DELAY),
        Some(Fault::Garble) => {
            ResponseTemplate::new(200).set_body_raw("{\"id\": \"re_", "application/json")
        }
        _ => answer,
    }
}

/// A refused refund: status, error code and message. Nothing is recorded.
struct Refusal(u16, &'static str, String);

fn apply_refund(
    state: &mut State,
    payment_id: &str,
    key: &str,
    body: Value,
) -> Result<ResponseTemplate, Refusal> {
    let Some(captured) = state.payments.get(payment_id).copied() else {
        return Err(Refusal(
            404,
            "payment_not_found",
            format!("no payment `{payment_id}`"),
        ));
    };
    let minor = body.get("amount").and_then(Value::as_i64);
    let currency = body
        .get("currency")
        .and_then(Value::as_str)
        .map(Currency::new);
    let (Some(minor), Some(Ok(currency))) = (minor, currency) else {
        return Err(Refusal(
            400,
            "invalid_request",
            "`amount` (integer minor units) and `currency` are required".into(),
        ));
    };
    if minor <= 0 {
        return Err(Refusal(
            400,
            "invalid_request",
            "`amount` must be positive".into(),
        ));
    }
    if currency != captured.currency {
        return Err(Refusal(
            422,
            "currency_mismatch",
            format!("the payment is in {}", captured.currency),
        ));
    }
    let refunded: i64 = state
        .refunds
        .iter()
        .filter(|r| r.payment_id == payment_id && r.status != "failed")
        .map(|r| r.amount.minor)
        .sum();
    if refunded.saturating_add(minor) > captured.minor {
        return Err(Refusal(
            422,
            "amount_too_large",
            format!(
                "{} of {} already refunded",
                Money::new(refunded, currency),
                captured
            ),
        ));
    }
    state.next_id += 1;
    let record = RefundRecord {
        id: format!("re_{}", state.next_id),
        payment_id: payment_id.to_owned(),
        amount: Money::new(minor, currency),
        status: if state.asynchronous {
            "processing"
        } else {
            "succeeded"
        },
        reason: body
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let answer = refund_json(&record);
    state.keys.insert(
        key.to_owned(),
        Recorded {
            payment_id: payment_id.to_owned(),
            request: body,
            refund_id: record.id.clone(),
            status: 201,
            body: answer.clone(),
        },
    );
    state.refunds.push(record);
    Ok(ResponseTemplate::new(201).set_body_json(answer))
}

/// A [`PaymentHarness`] for any payment adapter pointed at a [`MockPaymentApi`]: payments
/// are created on the mock, movements read from it, and faults staged on it. The adapter's
/// timeout must be shorter than [`LOST_ANSWER_DELAY`].
///
/// ```text
/// let api = Arc::new(MockPaymentApi::start().await);
/// let payment = build_my_adapter(&api.uri());
/// payment_conformance(|| MockPaymentHarness::new(api.clone(), payment.clone()))
///     .await
///     .assert_passed();
/// ```
pub struct MockPaymentHarness {
    api: Arc<MockPaymentApi>,
    payment: Arc<dyn Payment>,
}

impl MockPaymentHarness {
    /// A harness for `payment`, which talks to `api`.
    pub fn new(api: Arc<MockPaymentApi>, payment: Arc<dyn Payment>) -> MockPaymentHarness {
        MockPaymentHarness { api, payment }
    }
}

#[async_trait]
impl PaymentHarness for MockPaymentHarness {
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
        self.api.lose_next_refund_answer();
        true
    }

    fn fail_next_transiently(&self) -> bool {
        self.api.fail_next_refund(503, Some("1"));
        true
    }
}
