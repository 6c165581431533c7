//! The simulator as a local HTTP server (cargo feature `serve`): the same [`Sim`] behind a
//! small REST API, for HTTP-level tests and the demo (`aftersales sim serve`).
//!
//! Faults, latency, idempotency and the ledger behave exactly as in process, because every
//! platform endpoint calls the same trait methods on the same [`Sim`]. The endpoints are
//! listed, with a `curl` example each, in the crate's `README.md`.
//!
//! **Platform endpoints** (`/v1/...`) are what a real platform would expose, shaped so the
//! generic HTTP adapter (`kind = "http"`) is configured against them without code
//! (`config/examples/http-against-sim.toml`):
//!
//! - the testkit's *reference payment API* (the one `MockPaymentApi` serves):
//!   `POST /v1/payments/{payment_id}/refunds` with an `Idempotency-Key` header,
//!   `GET /v1/refunds/{refund_id}` and `GET /v1/payments/{payment_id}/refunds/by-key/{key}`,
//!   answering the refund object `{"id", "object": "refund", "payment_id", "amount",
//!   "currency", "status", "metadata"?}` where `status` is `succeeded`, `processing` (the
//!   simulator's `pending`), `requires_action`, `failed` or `canceled`;
//! - `POST /v1/actions/{system.action}`: any catalogue action, its input as the JSON body
//!   and, for a mutating action, the key in `Idempotency-Key`; answers the action's output
//!   object exactly as [`AdapterSet::dispatch`] encodes it (`200`, or `202` for a refund
//!   still pending).
//!
//! A failed call answers `{"error": {"code", "message", "class"?, "action"?}}` with the
//! status the HTTP adapter maps back to the same class: transient → `503` with
//! `Retry-After`, permanent → `422` (`404` for an unknown payment or refund on the payment
//! endpoints), unknown outcome (a lost answer, a lost request) → `504`, unsupported → `501`;
//! a hang holds the answer past any client timeout. Bad input is a `400` naming the field.
//!
//! **Control endpoints** (`/sim/...`) set the world up and read it back: orders, stock,
//! shipments, returns and their inspection, parcels, entitlements, pending refunds, scripted
//! faults, the ledger, the calls with their keys, and the event outbox (plain or as signed
//! webhooks). Unknown ids are `404`, impossible changes `409`.

use std::collections::BTreeMap;
use std::future::Future;
use std::time::{Duration, SystemTime};

use aftersales_adapter::catalogue;
use aftersales_adapter::ids::{
    BuyerId, EntitlementId, LineId, OrderId, ParcelId, PaymentId, RefundId, ReservationId, RmaId,
    ServiceOrderId, Sku, Spu,
};
use aftersales_adapter::types::{
    CarrierIntercept, Charge, ClearAfterSales, CloseAfterSales, CreateReturn, EntitlementRef,
    GetOrder, Grant, InsuranceClaim, InterceptShipment, MarkAfterSales, Notification, Refund,
    RefundStatusInput, ReleaseStock, ReportRefund, ReserveStock, Revoke, RmaRef, ShipReplacement,
    ShipmentState,
};
use aftersales_adapter::{
    ActionOutcome, AdapterError, AdapterSet, ErrorClass, IdempotencyKey, Payment, RefundLookup,
    RefundStatus,
};
use aftersales_money::{Currency, Money};
use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

use crate::config::RefundMode;
use crate::model::{
    LedgerEntry, LedgerKind, ParcelKind, ReservationState, ReturnState, SimEntitlement, SimOrder,
    SimParcel, SimReservation, SimReturn,
};
use crate::{Fault, Inspection, NewLine, NewOrder, Sim, SimError};

/// The header that carries the caller's idempotency key on mutating calls.
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// The router serving `sim`: the platform endpoints (`/v1/...`) and the control endpoints
/// (`/sim/...`), described in the [module documentation](self).
pub fn router(sim: Sim) -> Router {
    let app = App {
        set: sim.adapter_set(),
        sim,
    };
    Router::new()
        // Platform: the reference payment API, and every catalogue action.
        .route("/v1/payments/{payment_id}/refunds", post(create_refund))
        .route("/v1/refunds/{refund_id}", get(get_refund))
        .route(
            "/v1/payments/{payment_id}/refunds/by-key/{key}",
            get(refund_by_key),
        )
        .route("/v1/actions/{action}", post(call_action))
        // Control: set the world up, break it, read it back.
        .route("/sim", get(info))
        .route("/sim/orders", post(create_order))
        .route("/sim/orders/{order_id}", get(get_order))
        .route("/sim/orders/{order_id}/shipment", post(set_shipment))
        .route("/sim/stock/{sku}", get(get_stock).put(put_stock))
        .route("/sim/products/{sku}", axum::routing::put(put_product))
        .route("/sim/returns", get(list_returns))
        .route("/sim/returns/{rma_id}", get(get_return))
        .route("/sim/returns/{rma_id}/receive", post(receive_return))
        .route("/sim/parcels/{parcel_id}", get(get_parcel))
        .route("/sim/parcels/{parcel_id}/deliver", post(deliver_parcel))
        .route("/sim/reservations/{reservation_id}", get(get_reservation))
        .route("/sim/entitlements", post(create_entitlement))
        .route("/sim/entitlements/{entitlement_id}", get(get_entitlement))
        .route("/sim/entitlements/{entitlement_id}/consume", post(consume))
        .route("/sim/ledger", get(ledger))
        .route("/sim/payments/{payment_id}", get(get_payment))
        .route("/sim/payments/{payment_id}/refunds", get(payment_refunds))
        .route(
            "/sim/service-orders/{service_order_id}/refunds",
            get(service_order_refunds),
        )
        .route("/sim/refunds/settle", post(settle))
        .route("/sim/refunds/{refund_id}/complete", post(complete_refund))
        .route("/sim/faults/{action}", post(script_faults))
        .route("/sim/events/drain", post(drain_events))
        .route("/sim/webhooks/drain", post(drain_webhooks))
        .route("/sim/calls", get(calls))
        .route("/sim/messages", get(messages))
        .fallback(no_route)
        .method_not_allowed_fallback(wrong_method)
        .with_state(app)
}

/// Serves `sim` on `listener` until `shutdown` completes, then lets in-flight requests
/// finish.
pub async fn serve(
    sim: Sim,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router(sim))
        .with_graceful_shutdown(shutdown)
        .await
}

#[derive(Clone)]
struct App {
    sim: Sim,
    set: AdapterSet,
}

type Answer = Result<Response, ApiError>;

fn answer(status: StatusCode, body: Value) -> Answer {
    Ok((status, Json(body)).into_response())
}

// ---------------------------------------------------------------- errors

/// An error answer: `{"error": {"code", "message", "class"?, "action"?}}`.
#[derive(Debug)]
struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// For a failed platform call: its class and action.
    call: Option<(ErrorClass, String)>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
            call: None,
        }
    }

    fn bad(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, code, message)
    }

    fn not_found(code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, code, message)
    }

    fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// A failed platform call, with the status the HTTP adapter maps back to its class.
    fn call(e: AdapterError) -> ApiError {
        let (status, code) = match e.class {
            ErrorClass::Transient { .. } => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ErrorClass::Permanent => (StatusCode::UNPROCESSABLE_ENTITY, "refused"),
            ErrorClass::UnknownOutcome => (StatusCode::GATEWAY_TIMEOUT, "no_answer"),
            ErrorClass::Unsupported => (StatusCode::NOT_IMPLEMENTED, "unsupported"),
            ErrorClass::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        ApiError {
            status,
            code,
            message: e.message,
            call: Some((e.class, e.action.into_owned())),
        }
    }

    fn sim(e: SimError) -> ApiError {
        let (status, code) = match &e {
            SimError::Unknown { .. } => (StatusCode::NOT_FOUND, "not_found"),
            SimError::InvalidState(_) => (StatusCode::CONFLICT, "conflict"),
            SimError::Money(_) => (StatusCode::UNPROCESSABLE_ENTITY, "invalid_amount"),
        };
        ApiError::new(status, code, e.to_string())
    }
}

fn class_name(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::Transient { .. } => "transient",
        ErrorClass::Permanent => "permanent",
        ErrorClass::UnknownOutcome => "unknown_outcome",
        ErrorClass::Unsupported => "unsupported",
        ErrorClass::NotFound => "not_found",
        _ => "other",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = json!({"code": self.code, "message": self.message});
        let mut retry_after = None;
        if let Some((class, action)) = &self.call {
            error["class"] = json!(class_name(*class));
            error["action"] = json!(action);
            if let ErrorClass::Transient { retry_after: after } = class {
                retry_after = Some(whole_seconds(after.unwrap_or(Duration::from_secs(1))));
            }
        }
        let mut response = (self.status, Json(json!({ "error": error }))).into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}

/// `Retry-After` takes whole seconds: round up, and never say 0.
fn whole_seconds(d: Duration) -> u64 {
    let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
    secs.max(1)
}

async fn no_route(method: Method, uri: Uri) -> ApiError {
    ApiError::not_found("no_route", format!("no endpoint {method} {}", uri.path()))
}

async fn wrong_method(method: Method, uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("{} does not take {method}", uri.path()),
    )
}

// ---------------------------------------------------------------- extractors

/// A JSON body whose errors are JSON answers naming the field path (`lines[0].quantity`).
struct Body<T>(T);

impl<T, S> FromRequest<S> for Body<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::new(
                e.status(),
                "invalid_body",
                format!("cannot read the body: {}", e.body_text()),
            )
        })?;
        parse_json(&bytes).map(Body)
    }
}

fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(ApiError::bad(
            "invalid_body",
            "the body is empty; expected a JSON object",
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if inner.is_syntax() || inner.is_eof() {
            ApiError::bad("invalid_body", format!("malformed JSON body: {inner}"))
        } else if path == "." {
            ApiError::bad("invalid_body", format!("invalid body: {inner}"))
        } else {
            ApiError::bad("invalid_body", format!("field `{path}`: {inner}"))
        }
    })?;
    de.end()
        .map_err(|e| ApiError::bad("invalid_body", format!("malformed JSON body: {e}")))?;
    Ok(value)
}

/// Path parameters whose errors are JSON answers.
struct Params<T>(T);

impl<T, S> FromRequestParts<S> for Params<T>
where
    T: DeserializeOwned + Send,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(t)| Params(t))
            .map_err(|e| ApiError::bad("invalid_path", e.body_text()))
    }
}

fn required_key(headers: &HeaderMap) -> Result<IdempotencyKey, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Err(ApiError::bad(
            "missing_idempotency_key",
            "a mutating call needs an `Idempotency-Key` header",
        ));
    };
    let text = value.to_str().map_err(|_| {
        ApiError::bad(
            "invalid_idempotency_key",
            "the `Idempotency-Key` header is not text",
        )
    })?;
    IdempotencyKey::new(text).map_err(|e| ApiError::bad("invalid_idempotency_key", e.to_string()))
}

// ---------------------------------------------------------------- platform: payment

/// `POST /v1/payments/{payment_id}/refunds`, the reference payment API's refund body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewRefund {
    /// Integer minor units.
    amount: i64,
    currency: Currency,
    #[serde(default)]
    reason: Option<String>,
    /// Free key/values; `service_order_id` is read.
    #[serde(default)]
    metadata: BTreeMap<String, String>,
}

/// The simulator's refund status as the reference payment API spells it.
fn platform_status(status: RefundStatus) -> &'static str {
    match status {
        RefundStatus::Pending => "processing",
        RefundStatus::RequiresAction => "requires_action",
        RefundStatus::Succeeded => "succeeded",
        RefundStatus::Failed => "failed",
        RefundStatus::Canceled => "canceled",
        RefundStatus::NotFound => "not_found",
        _ => "unknown",
    }
}

fn refund_object(e: &LedgerEntry) -> Value {
    let mut v = json!({
        "id": e.id,
        "object": "refund",
        "payment_id": e.payment_id,
        "amount": e.amount.minor,
        "currency": e.amount.currency.code(),
        "status": platform_status(e.status),
    });
    if let Some(so) = &e.service_order_id {
        v["metadata"] = json!({ "service_order_id": so });
    }
    v
}

fn refund_entry(sim: &Sim, refund_id: &str) -> Option<LedgerEntry> {
    sim.lock()
        .ledger
        .iter()
        .find(|e| e.kind == LedgerKind::Refund && e.id == refund_id)
        .cloned()
}

fn refund_answer(sim: &Sim, status: StatusCode, refund_id: &RefundId) -> Answer {
    match refund_entry(sim, refund_id.as_str()) {
        Some(entry) => answer(status, refund_object(&entry)),
        None => Err(ApiError::internal(format!(
            "refund `{refund_id}` is missing from the ledger"
        ))),
    }
}

async fn create_refund(
    State(app): State<App>,
    Params(payment_id): Params<String>,
    headers: HeaderMap,
    Body(body): Body<NewRefund>,
) -> Answer {
    let key = required_key(&headers)?;
    let payment_id = PaymentId::new(payment_id);
    let req = Refund {
        payment_id: payment_id.clone(),
        amount: Money::new(body.amount, body.currency),
        reason: body.reason,
        service_order_id: body
            .metadata
            .get("service_order_id")
            .map(|so| ServiceOrderId::new(so.as_str())),
    };
    match Payment::refund(&app.sim, &req, &key).await {
        Ok(outcome) => refund_answer(&app.sim, StatusCode::CREATED, &outcome.refund_id),
        Err(e) if e.class == ErrorClass::NotFound && app.sim.payment(&payment_id).is_none() => Err(
            ApiError::not_found("payment_not_found", format!("no payment `{payment_id}`")),
        ),
        Err(e) => Err(ApiError::call(e)),
    }
}

async fn get_refund(State(app): State<App>, Params(refund_id): Params<String>) -> Answer {
    let refund_id = RefundId::new(refund_id);
    match app
        .sim
        .refund_status(&RefundLookup::Id(refund_id.clone()))
        .await
    {
        Ok(_) => refund_answer(&app.sim, StatusCode::OK, &refund_id),
        Err(e)
            if e.class == ErrorClass::NotFound
                && refund_entry(&app.sim, refund_id.as_str()).is_none() =>
        {
            Err(ApiError::not_found(
                "not_found",
                format!("no refund `{refund_id}`"),
            ))
        }
        Err(e) => Err(ApiError::call(e)),
    }
}

async fn refund_by_key(
    State(app): State<App>,
    Params((payment_id, key)): Params<(String, String)>,
) -> Answer {
    let key = IdempotencyKey::new(key)
        .map_err(|e| ApiError::bad("invalid_idempotency_key", e.to_string()))?;
    let state = app
        .sim
        .refund_status(&RefundLookup::Key {
            payment_id: PaymentId::new(payment_id),
            key,
        })
        .await
        .map_err(ApiError::call)?;
    match state.refund_id {
        Some(id) if state.status != RefundStatus::NotFound => {
            refund_answer(&app.sim, StatusCode::OK, &id)
        }
        _ => Err(ApiError::not_found(
            "not_found",
            "no refund was made with that key",
        )),
    }
}

// ---------------------------------------------------------------- platform: any action

/// `POST /v1/actions/{system.action}`: the action's input in, its output out.
async fn call_action(
    State(app): State<App>,
    Params(action): Params<String>,
    headers: HeaderMap,
    Body(input): Body<Value>,
) -> Answer {
    let Some(spec) = catalogue::find_full(&action) else {
        return Err(ApiError::not_found(
            "unknown_action",
            format!("no action `{action}` in the catalogue"),
        ));
    };
    let name = spec.full_name_static();
    let key = if spec.mutating {
        required_key(&headers)?
    } else {
        // Reads carry no key; dispatch ignores this one.
        IdempotencyKey::new("read").map_err(|e| ApiError::internal(e.to_string()))?
    };
    check_input(name, &input)?;
    match app.set.dispatch(name, &input, &key).await {
        Ok(ActionOutcome::Done(output)) => answer(StatusCode::OK, Value::Object(output)),
        Ok(ActionOutcome::Pending { output, .. }) => {
            answer(StatusCode::ACCEPTED, Value::Object(output))
        }
        Ok(other) => Err(ApiError::internal(format!(
            "unexpected outcome of {name}: {other:?}"
        ))),
        Err(e) => Err(ApiError::call(e)),
    }
}

/// Decodes the input into the action's typed request, so bad input is a `400` naming the
/// field, before the simulator sees the call (and before any fault is drawn).
fn check_input(action: &str, input: &Value) -> Result<(), ApiError> {
    if !input.is_object() {
        return Err(ApiError::bad(
            "invalid_input",
            format!("the body must be a JSON object: the input of {action}"),
        ));
    }
    match action {
        "order.get" => decode::<GetOrder>(input),
        "order.mark_after_sales" => decode::<MarkAfterSales>(input),
        "order.clear_after_sales" => decode::<ClearAfterSales>(input),
        "order.report_refund" => decode::<ReportRefund>(input),
        "order.close_after_sales" => decode::<CloseAfterSales>(input),
        "warehouse.intercept_shipment" => decode::<InterceptShipment>(input),
        "warehouse.carrier_intercept" => decode::<CarrierIntercept>(input),
        "warehouse.create_return" => decode::<CreateReturn>(input),
        "warehouse.cancel_return"
        | "warehouse.restock"
        | "warehouse.reverse_restock"
        | "warehouse.return_to_buyer" => decode::<RmaRef>(input),
        "warehouse.reserve_stock" => decode::<ReserveStock>(input),
        "warehouse.release_stock" => decode::<ReleaseStock>(input),
        "warehouse.ship_replacement" => decode::<ShipReplacement>(input),
        "fulfillment.get_consumption" | "fulfillment.regrant" => decode::<EntitlementRef>(input),
        "fulfillment.revoke" => decode::<Revoke>(input),
        "fulfillment.grant" => decode::<Grant>(input),
        "payment.refund" => decode::<Refund>(input),
        "payment.refund_status" => {
            let parsed: RefundStatusInput = typed(input)?;
            parsed
                .lookup()
                .map(drop)
                .map_err(|why| ApiError::bad("invalid_input", why))
        }
        "payment.charge" => decode::<Charge>(input),
        "payment.insurance_claim" => decode::<InsuranceClaim>(input),
        "notify.send" => decode::<Notification>(input),
        // Dispatch decodes whatever a newer catalogue adds.
        _ => Ok(()),
    }
}

fn decode<T: DeserializeOwned>(input: &Value) -> Result<(), ApiError> {
    typed::<T>(input).map(drop)
}

fn typed<T: DeserializeOwned>(input: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            ApiError::bad("invalid_input", format!("invalid input: {inner}"))
        } else {
            ApiError::bad("invalid_input", format!("field `{path}`: {inner}"))
        }
    })
}

// ---------------------------------------------------------------- control: views

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

fn order_view(o: &SimOrder) -> Value {
    let lines: Vec<Value> = o
        .lines
        .iter()
        .map(|l| {
            json!({
                "line_id": l.line_id,
                "sku": l.sku,
                "spu": l.spu,
                "quantity": l.quantity,
                "unit_price": l.unit_price,
                "paid": l.paid,
                "entitlement_id": l.entitlement_id,
            })
        })
        .collect();
    let reported: Vec<Value> = o
        .reported_refunds
        .iter()
        .map(|(so, refund_id, amount)| {
            json!({"service_order_id": so, "refund_id": refund_id, "amount": amount})
        })
        .collect();
    let closed: Map<String, Value> = o
        .closed
        .iter()
        .map(|(so, (outcome, reason))| {
            (
                so.as_str().to_owned(),
                json!({"outcome": outcome, "reason": reason}),
            )
        })
        .collect();
    json!({
        "order_id": o.order_id,
        "buyer_id": o.buyer_id,
        "payment_id": o.payment_id,
        "lines": lines,
        "shipping_fee": o.shipping_fee,
        "shipment": o.shipment,
        "intercepted": o.intercepted,
        "carrier_intercepted": o.carrier_intercepted,
        "after_sales": o.marks,
        "reported_refunds": reported,
        "closed": closed,
    })
}

fn ledger_view(e: &LedgerEntry) -> Value {
    let kind = match e.kind {
        LedgerKind::Refund => "refund",
        LedgerKind::Charge => "charge",
        LedgerKind::InsuranceClaim => "insurance_claim",
    };
    json!({
        "seq": e.seq,
        "kind": kind,
        "id": e.id,
        "payment_id": e.payment_id,
        "service_order_id": e.service_order_id,
        "amount": e.amount,
        "key": e.key,
        "status": e.status,
        "at_unix_ms": unix_ms(e.at),
    })
}

fn entries(list: &[LedgerEntry]) -> Vec<Value> {
    list.iter().map(ledger_view).collect()
}

fn return_view(r: &SimReturn) -> Value {
    let mut v = json!({
        "rma_id": r.rma_id,
        "order_id": r.order_id,
        "service_order_id": r.service_order_id,
        "lines": r.lines,
        "pickup": r.pickup,
        "reference": r.reference,
    });
    let state = match &r.state {
        ReturnState::AwaitingArrival => "awaiting_arrival",
        ReturnState::Received => "received",
        ReturnState::Inspected { passed, reason } => {
            v["inspection_passed"] = json!(passed);
            if let Some(note) = reason {
                v["note"] = json!(note);
            }
            "inspected"
        }
        ReturnState::Restocked => "restocked",
        ReturnState::ReturnedToBuyer { parcel_id } => {
            v["parcel_id"] = json!(parcel_id);
            "returned_to_buyer"
        }
        ReturnState::Cancelled => "cancelled",
    };
    v["state"] = json!(state);
    v
}

fn parcel_view(p: &SimParcel) -> Value {
    let kind = match p.kind {
        ParcelKind::Replacement => "replacement",
        ParcelKind::ReturnToBuyer => "return_to_buyer",
    };
    json!({
        "parcel_id": p.parcel_id,
        "kind": kind,
        "order_id": p.order_id,
        "delivered": p.delivered,
    })
}

fn reservation_view(r: &SimReservation) -> Value {
    let state = match r.state {
        ReservationState::Active => "active",
        ReservationState::Released => "released",
        ReservationState::Shipped => "shipped",
    };
    json!({
        "reservation_id": r.reservation_id,
        "sku": r.sku,
        "quantity": r.quantity,
        "state": state,
    })
}

fn entitlement_view(e: &SimEntitlement) -> Value {
    json!({
        "entitlement_id": e.entitlement_id,
        "buyer_id": e.buyer_id,
        "sku": e.sku,
        "total": e.total,
        "consumed": e.consumed,
        "active": e.active,
        "revoked_units": e.revoked_units,
    })
}

fn found<T>(what: &str, id: &str, value: Option<T>, view: impl FnOnce(&T) -> Value) -> Answer {
    match value {
        Some(v) => answer(StatusCode::OK, view(&v)),
        None => Err(ApiError::not_found(
            "not_found",
            format!("unknown {what} `{id}`"),
        )),
    }
}

// ---------------------------------------------------------------- control: handlers

async fn info(State(app): State<App>) -> Answer {
    let config = app.sim.config();
    let refunds = match config.refunds {
        RefundMode::Immediate => json!({"mode": "immediate"}),
        RefundMode::Pending { settle_after } => json!({
            "mode": "pending",
            "settle_after_ms": u64::try_from(settle_after.as_millis()).unwrap_or(u64::MAX),
        }),
    };
    answer(
        StatusCode::OK,
        json!({"kind": crate::KIND, "seed": config.seed, "refunds": refunds}),
    )
}

/// `POST /sim/orders`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OrderBody {
    order_id: OrderId,
    buyer_id: BuyerId,
    lines: Vec<LineBody>,
    /// Zero in the lines' currency when absent.
    #[serde(default)]
    shipping_fee: Option<Money>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LineBody {
    line_id: LineId,
    sku: Sku,
    /// The SKU when absent.
    #[serde(default)]
    spu: Option<Spu>,
    quantity: u32,
    unit_price: Money,
    /// `unit_price × quantity` when absent.
    #[serde(default)]
    paid: Option<Money>,
    #[serde(default)]
    entitlement_units: Option<u32>,
}

fn new_order(body: OrderBody) -> Result<NewOrder, ApiError> {
    let bad = |message: String| ApiError::bad("invalid_order", message);
    if body.order_id.as_str().is_empty() {
        return Err(bad("`order_id` is empty".into()));
    }
    let Some(first) = body.lines.first() else {
        return Err(bad("an order needs at least one line".into()));
    };
    let currency = first.unit_price.currency;
    let shipping_fee = body.shipping_fee.unwrap_or(Money::zero(currency));
    if shipping_fee.minor < 0 {
        return Err(bad("`shipping_fee` is negative".into()));
    }
    let mut lines = Vec::with_capacity(body.lines.len());
    for (i, l) in body.lines.into_iter().enumerate() {
        if l.quantity == 0 {
            return Err(bad(format!("`lines[{i}].quantity` must be at least 1")));
        }
        let paid = match l.paid {
            Some(paid) => paid,
            None => l
                .unit_price
                .checked_mul(i64::from(l.quantity))
                .map_err(|e| bad(format!("`lines[{i}]`: {e}")))?,
        };
        if l.unit_price.minor < 0 || paid.minor < 0 {
            return Err(bad(format!("`lines[{i}]`: amounts cannot be negative")));
        }
        lines.push(NewLine {
            spu: l.spu.unwrap_or_else(|| Spu::new(l.sku.as_str())),
            line_id: l.line_id,
            sku: l.sku,
            quantity: l.quantity,
            unit_price: l.unit_price,
            paid,
            entitlement_units: l.entitlement_units,
        });
    }
    Ok(NewOrder {
        order_id: body.order_id,
        buyer_id: body.buyer_id,
        lines,
        shipping_fee,
    })
}

async fn create_order(State(app): State<App>, Body(body): Body<OrderBody>) -> Answer {
    let order = new_order(body)?;
    let order_id = order.order_id.clone();
    app.sim.create_order(order).map_err(ApiError::sim)?;
    let created = app
        .sim
        .order(&order_id)
        .ok_or_else(|| ApiError::internal("the order vanished"))?;
    answer(StatusCode::CREATED, order_view(&created))
}

async fn get_order(State(app): State<App>, Params(order_id): Params<String>) -> Answer {
    let order = app.sim.order(&OrderId::new(order_id.as_str()));
    found("order", &order_id, order, order_view)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShipmentBody {
    /// `not_shipped`, `picked`, `shipped` or `delivered`.
    state: ShipmentState,
}

async fn set_shipment(
    State(app): State<App>,
    Params(order_id): Params<String>,
    Body(body): Body<ShipmentBody>,
) -> Answer {
    let order_id = OrderId::new(order_id);
    app.sim
        .set_shipment(&order_id, body.state)
        .map_err(ApiError::sim)?;
    found(
        "order",
        order_id.as_str(),
        app.sim.order(&order_id),
        order_view,
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StockBody {
    units: i64,
}

async fn put_stock(
    State(app): State<App>,
    Params(sku): Params<String>,
    Body(body): Body<StockBody>,
) -> Answer {
    if body.units < 0 {
        return Err(ApiError::bad("invalid_stock", "`units` cannot be negative"));
    }
    let sku = Sku::new(sku);
    app.sim.set_stock(&sku, body.units);
    answer(
        StatusCode::OK,
        json!({"sku": sku, "units": app.sim.stock(&sku)}),
    )
}

async fn get_stock(State(app): State<App>, Params(sku): Params<String>) -> Answer {
    let sku = Sku::new(sku);
    answer(
        StatusCode::OK,
        json!({"sku": sku, "units": app.sim.stock(&sku)}),
    )
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductBody {
    /// Units one `fulfillment.grant` of the SKU gives.
    units: u32,
}

async fn put_product(
    State(app): State<App>,
    Params(sku): Params<String>,
    Body(body): Body<ProductBody>,
) -> Answer {
    let sku = Sku::new(sku);
    app.sim.set_product_units(&sku, body.units);
    answer(StatusCode::OK, json!({"sku": sku, "units": body.units}))
}

async fn list_returns(State(app): State<App>) -> Answer {
    let returns: Vec<Value> = app.sim.returns().iter().map(return_view).collect();
    answer(StatusCode::OK, json!({ "returns": returns }))
}

async fn get_return(State(app): State<App>, Params(rma_id): Params<String>) -> Answer {
    let found_return = app.sim.return_of(&RmaId::new(rma_id.as_str()));
    found("return", &rma_id, found_return, return_view)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "snake_case")]
enum InspectionName {
    Pass,
    Fail,
    Random,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ReceiveBody {
    inspection: InspectionName,
    /// The inspector's note; only with `fail`.
    #[serde(default)]
    note: Option<String>,
}

async fn receive_return(
    State(app): State<App>,
    Params(rma_id): Params<String>,
    Body(body): Body<ReceiveBody>,
) -> Answer {
    let inspection = match (body.inspection, body.note) {
        (InspectionName::Fail, note) => {
            Inspection::Fail(note.unwrap_or_else(|| "failed inspection".to_owned()))
        }
        (_, Some(_)) => {
            return Err(ApiError::bad(
                "invalid_body",
                "`note` is only for a failed inspection",
            ));
        }
        (InspectionName::Pass, None) => Inspection::Pass,
        (InspectionName::Random, None) => Inspection::Random,
    };
    let rma_id = RmaId::new(rma_id);
    app.sim
        .receive_return(&rma_id, inspection)
        .map_err(ApiError::sim)?;
    found(
        "return",
        rma_id.as_str(),
        app.sim.return_of(&rma_id),
        return_view,
    )
}

async fn get_parcel(State(app): State<App>, Params(parcel_id): Params<String>) -> Answer {
    let parcel = app.sim.parcel(&ParcelId::new(parcel_id.as_str()));
    found("parcel", &parcel_id, parcel, parcel_view)
}

async fn deliver_parcel(State(app): State<App>, Params(parcel_id): Params<String>) -> Answer {
    let parcel_id = ParcelId::new(parcel_id);
    app.sim.deliver_parcel(&parcel_id).map_err(ApiError::sim)?;
    found(
        "parcel",
        parcel_id.as_str(),
        app.sim.parcel(&parcel_id),
        parcel_view,
    )
}

async fn get_reservation(State(app): State<App>, Params(id): Params<String>) -> Answer {
    let reservation = app.sim.reservation(&ReservationId::new(id.as_str()));
    found("reservation", &id, reservation, reservation_view)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EntitlementBody {
    buyer_id: BuyerId,
    sku: Sku,
    total: u32,
}

async fn create_entitlement(State(app): State<App>, Body(body): Body<EntitlementBody>) -> Answer {
    let id = app
        .sim
        .grant_entitlement(&body.buyer_id, &body.sku, body.total);
    match app.sim.entitlement(&id) {
        Some(e) => answer(StatusCode::CREATED, entitlement_view(&e)),
        None => Err(ApiError::internal("the entitlement vanished")),
    }
}

async fn get_entitlement(State(app): State<App>, Params(id): Params<String>) -> Answer {
    let entitlement = app.sim.entitlement(&EntitlementId::new(id.as_str()));
    found("entitlement", &id, entitlement, entitlement_view)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConsumeBody {
    units: u32,
}

async fn consume(
    State(app): State<App>,
    Params(id): Params<String>,
    Body(body): Body<ConsumeBody>,
) -> Answer {
    let id = EntitlementId::new(id);
    app.sim.consume(&id, body.units).map_err(ApiError::sim)?;
    found(
        "entitlement",
        id.as_str(),
        app.sim.entitlement(&id),
        entitlement_view,
    )
}

async fn ledger(State(app): State<App>) -> Answer {
    answer(
        StatusCode::OK,
        json!({ "entries": entries(&app.sim.ledger()) }),
    )
}

async fn get_payment(State(app): State<App>, Params(payment_id): Params<String>) -> Answer {
    let payment_id = PaymentId::new(payment_id);
    let Some(payment) = app.sim.payment(&payment_id) else {
        return Err(ApiError::not_found(
            "not_found",
            format!("unknown payment `{payment_id}`"),
        ));
    };
    let refunded = app.sim.refunded_total(&payment_id).map_err(ApiError::sim)?;
    answer(
        StatusCode::OK,
        json!({
            "payment_id": payment.payment_id,
            "order_id": payment.order_id,
            "captured": payment.captured,
            "refunded": refunded,
            "refunds": entries(&app.sim.refunds_for_payment(&payment_id)),
        }),
    )
}

async fn payment_refunds(State(app): State<App>, Params(payment_id): Params<String>) -> Answer {
    let payment_id = PaymentId::new(payment_id);
    if app.sim.payment(&payment_id).is_none() {
        return Err(ApiError::not_found(
            "not_found",
            format!("unknown payment `{payment_id}`"),
        ));
    }
    answer(
        StatusCode::OK,
        json!({ "refunds": entries(&app.sim.refunds_for_payment(&payment_id)) }),
    )
}

async fn service_order_refunds(State(app): State<App>, Params(so): Params<String>) -> Answer {
    let so = ServiceOrderId::new(so);
    answer(
        StatusCode::OK,
        json!({ "refunds": entries(&app.sim.refunds_for_service_order(&so)) }),
    )
}

async fn settle(State(app): State<App>) -> Answer {
    answer(StatusCode::OK, json!({ "settled": app.sim.settle_due() }))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CompleteBody {
    /// `succeeded`, `failed`, `canceled` or `requires_action`.
    status: RefundStatus,
}

async fn complete_refund(
    State(app): State<App>,
    Params(refund_id): Params<String>,
    Body(body): Body<CompleteBody>,
) -> Answer {
    if matches!(body.status, RefundStatus::Pending | RefundStatus::NotFound) {
        return Err(ApiError::bad(
            "invalid_body",
            "`status` must be succeeded, failed, canceled or requires_action",
        ));
    }
    let refund_id = RefundId::new(refund_id);
    app.sim
        .complete_refund(&refund_id, body.status)
        .map_err(ApiError::sim)?;
    found(
        "refund",
        refund_id.as_str(),
        refund_entry(&app.sim, refund_id.as_str()),
        ledger_view,
    )
}

#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(rename_all = "snake_case")]
enum FaultName {
    Transient,
    Permanent,
    LostAnswer,
    LostRequest,
    Hang,
    None,
}

impl From<FaultName> for Fault {
    fn from(f: FaultName) -> Fault {
        match f {
            FaultName::Transient => Fault::Transient,
            FaultName::Permanent => Fault::Permanent,
            FaultName::LostAnswer => Fault::LostAnswer,
            FaultName::LostRequest => Fault::LostRequest,
            FaultName::Hang => Fault::Hang,
            FaultName::None => Fault::None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct FaultsBody {
    /// Applied to the next calls of the action, in order, before any random fault.
    faults: Vec<FaultName>,
}

async fn script_faults(
    State(app): State<App>,
    Params(action): Params<String>,
    Body(body): Body<FaultsBody>,
) -> Answer {
    let Some(spec) = catalogue::find_full(&action) else {
        return Err(ApiError::not_found(
            "unknown_action",
            format!("no action `{action}` in the catalogue"),
        ));
    };
    let name = spec.full_name_static();
    app.sim
        .script(name, body.faults.iter().map(|f| Fault::from(*f)));
    answer(
        StatusCode::OK,
        json!({"action": name, "queued": body.faults.len()}),
    )
}

async fn drain_events(State(app): State<App>) -> Answer {
    answer(StatusCode::OK, json!({ "events": app.sim.drain_events() }))
}

async fn drain_webhooks(State(app): State<App>) -> Answer {
    let webhooks: Vec<Value> = app
        .sim
        .drain_webhooks()
        .iter()
        .map(|d| {
            let headers: Map<String, Value> = d
                .headers
                .iter()
                .map(|(k, v)| (k.to_owned(), json!(v)))
                .collect();
            json!({
                "headers": headers,
                "body": String::from_utf8_lossy(&d.body),
            })
        })
        .collect();
    answer(StatusCode::OK, json!({ "webhooks": webhooks }))
}

async fn calls(State(app): State<App>) -> Answer {
    let calls: Vec<Value> = app
        .sim
        .calls()
        .iter()
        .map(|c| json!({"action": c.action, "key": c.key}))
        .collect();
    answer(StatusCode::OK, json!({ "calls": calls }))
}

async fn messages(State(app): State<App>) -> Answer {
    let messages: Vec<Value> = app
        .sim
        .messages()
        .iter()
        .map(|m| json!({"notification": m.notification, "key": m.key}))
        .collect();
    answer(StatusCode::OK, json!({ "messages": messages }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_is_whole_seconds_rounded_up() {
        assert_eq!(whole_seconds(Duration::ZERO), 1);
        assert_eq!(whole_seconds(Duration::from_millis(1500)), 2);
        assert_eq!(whole_seconds(Duration::from_secs(30)), 30);
    }

    #[test]
    fn bodies_name_the_bad_field() {
        let e = parse_json::<OrderBody>(br#"{"order_id": "o", "buyer_id": "b", "lines": [{"line_id": "l", "sku": "s", "quantity": -1, "unit_price": {"minor": 1, "currency": "CNY"}}]}"#)
            .unwrap_err();
        assert_eq!(e.status, StatusCode::BAD_REQUEST);
        assert!(
            e.message.starts_with("field `lines[0].quantity`"),
            "{}",
            e.message
        );
        let e = parse_json::<Value>(b"{} x").unwrap_err();
        assert!(
            e.message.starts_with("malformed JSON body"),
            "{}",
            e.message
        );
        let e = parse_json::<Value>(b"  ").unwrap_err();
        assert!(e.message.contains("empty"), "{}", e.message);
    }

    #[test]
    fn action_inputs_are_checked_against_the_typed_request() {
        let e = check_input(
            "payment.refund",
            &json!({"payment_id": "p", "amount": 12.5}),
        )
        .unwrap_err();
        assert!(e.message.starts_with("field `amount`"), "{}", e.message);
        let e = check_input(
            "payment.refund_status",
            &json!({"refund_id": "r", "payment_id": "p"}),
        )
        .unwrap_err();
        assert!(e.message.contains("either `refund_id`"), "{}", e.message);
        assert!(check_input("order.get", &json!(["o-1"])).is_err());
        assert!(check_input("order.get", &json!({"order_id": "o-1"})).is_ok());
    }
}
