//! `/v1/after-sales`: service orders — submit, read, list, history, signals, cancel — and
//! `/v1/business-lines`.

use aftersales_core::engine::machine::rfc3339;
use aftersales_domain::{AfterSalesType, ServiceOrderState};
use aftersales_runtime::service::{
    AfterSales, ListQuery, ReturnRatesReport, ServiceError, ServiceOrderView, SubmitRequest,
};
use axum::Json as AxumJson;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use std::sync::Arc;

use crate::api::{
    AppState, CancelBody, SignalBody, check_key, delivered, engine_problem, idempotency_key,
    instant, signal_dedupe_id,
};
use crate::auth::Scope;
use crate::json::Json;
use crate::path::Path;
use crate::problem::{Problem, codes};

/// The signals a service order's workflows wait for, with what each carries.
pub const SIGNALS: &[(&str, &str)] = &[
    (
        "merchant.decision",
        "the merchant approves or rejects: { approved: bool, reason?: string }",
    ),
    (
        "buyer.shipped",
        "the buyer shipped the return: { carrier: string, tracking_no: string }",
    ),
    (
        "retention.result",
        "the sales agent's outcome: { kept: bool, note?: string } (kept = the buyer withdrew)",
    ),
];

fn service(st: &AppState) -> Result<&Arc<AfterSales>, Problem> {
    st.service.as_ref().ok_or_else(|| {
        Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "this daemon runs no business lines",
        )
    })
}

pub(crate) fn service_problem(e: ServiceError) -> Problem {
    match e {
        ServiceError::UnknownBusinessLine(_) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::INVALID_INPUT,
            e.to_string(),
        )
        .with("field", json!("business_line")),
        ServiceError::TypeNotOffered { .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::REFUSED,
            e.to_string(),
        )
        .with(
            "rule",
            json!({"code": "type_not_offered", "message": e.to_string()}),
        ),
        ServiceError::Refused(r) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::REFUSED,
            format!("the after-sales rules refuse this request: {}", r.message),
        )
        .with(
            "rule",
            json!({"code": r.code, "message": r.message, "line_id": r.line_id}),
        ),
        ServiceError::Invalid(m) => {
            Problem::new(StatusCode::UNPROCESSABLE_ENTITY, codes::INVALID_INPUT, m)
        }
        ServiceError::IdempotencyConflict(_) => {
            Problem::new(StatusCode::CONFLICT, codes::KEY_CONFLICT, e.to_string())
        }
        ServiceError::NotFound(_) | ServiceError::OrderNotFound(_) => {
            Problem::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, e.to_string())
        }
        ServiceError::Upstream { retryable, .. } => Problem::new(
            if retryable {
                StatusCode::SERVICE_UNAVAILABLE
            } else {
                StatusCode::BAD_GATEWAY
            },
            codes::UPSTREAM,
            format!("{e}; nothing was stored"),
        ),
        ServiceError::Busy(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            e.to_string(),
        ),
        ServiceError::Engine(e) => engine_problem(e),
        other => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            other.to_string(),
        ),
    }
}

/// `POST /v1/after-sales`
#[utoipa::path(
    post,
    path = "/v1/after-sales",
    tag = "after-sales",
    request_body = SubmitRequest,
    params(("Idempotency-Key" = String, Header, description = "the same key and body give the same answer")),
    responses((status = 201, description = "created: rules passed, refund priced, workflow started", body = ServiceOrderView), (status = 200, description = "the same key and body as before: the same service order", body = ServiceOrderView), (status = 409, description = "the key was used with another body", body = Problem), (status = 422, description = "refused by the rules (`rule.code`), nothing stored", body = Problem), (status = 502, description = "the order system failed; nothing stored", body = Problem), (status = 400, description = "malformed request (the field path is named)", body = Problem), (status = 401, description = "missing or unknown token", body = Problem), (status = 403, description = "the token lacks the scope", body = Problem))
)]
pub(crate) async fn submit(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<SubmitRequest>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Submit)?;
    let svc = service(&st)?;
    let Some(key) = idempotency_key(&headers)? else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_HEADER,
            "`Idempotency-Key` header is required: resend the same key to get the same answer",
        ));
    };
    // The order id names the submit lock and the search key, both indexed.
    check_key("order_id", &body.order_id)?;
    let kind = body.after_sales_type;
    let line = body.business_line.clone();
    let out = svc.submit(body, Some(&key)).await.map_err(|e| {
        if let ServiceError::Refused(r) = &e {
            metrics::counter!(
                "aftersales_requests_refused_total",
                "business_line" => line.clone(),
                "type" => kind.as_str(),
                "rule" => r.code.as_str(),
            )
            .increment(1);
        }
        service_problem(e)
    })?;
    if out.created {
        metrics::counter!(
            "aftersales_service_orders_total",
            "business_line" => line,
            "type" => kind.as_str(),
        )
        .increment(1);
    }
    let status = if out.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, AxumJson(out.order)).into_response())
}

/// `POST /v1/after-sales/quote`: the rules and the refund, nothing stored.
#[utoipa::path(
    post,
    path = "/v1/after-sales/quote",
    tag = "after-sales",
    request_body = SubmitRequest,
    responses((status = 200, description = "eligible, with the refund breakdown"), (status = 422, description = "refused by the rules", body = Problem))
)]
pub(crate) async fn quote(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<SubmitRequest>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Submit)?;
    let b = service(&st)?.quote(&body).await.map_err(service_problem)?;
    Ok(AxumJson(json!({ "eligible": true, "breakdown": b })).into_response())
}

/// `GET /v1/after-sales/{id}`
#[utoipa::path(
    get,
    path = "/v1/after-sales/{id}",
    tag = "after-sales",
    params(("id" = String, Path, description = "the service order id")),
    responses((status = 200, body = ServiceOrderView), (status = 404, body = Problem))
)]
pub(crate) async fn get_one(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    match service(&st)?.get(&id).await.map_err(service_problem)? {
        Some(v) => Ok(AxumJson(v).into_response()),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("no service order `{id}`"),
        )),
    }
}

/// Query of `GET /v1/after-sales`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListParams {
    state: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    business_line: Option<String>,
    order_id: Option<String>,
    created_from: Option<String>,
    created_to: Option<String>,
    cursor: Option<String>,
    limit: Option<usize>,
}

/// `GET /v1/after-sales`
#[utoipa::path(
    get,
    path = "/v1/after-sales",
    tag = "after-sales",
    params(
        ("state" = Option<String>, Query, description = "a service order state"),
        ("type" = Option<String>, Query, description = "an after-sales type"),
        ("business_line" = Option<String>, Query),
        ("order_id" = Option<String>, Query),
        ("created_from" = Option<String>, Query, description = "RFC 3339"),
        ("created_to" = Option<String>, Query, description = "RFC 3339"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
        ("limit" = Option<usize>, Query, description = "1 to 500, 50 by default"),
    ),
    responses((status = 200, description = "`{ items: [ServiceOrderView], next_cursor }`"), (status = 400, body = Problem))
)]
pub(crate) async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    let Query(q) = query
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, codes::BAD_QUERY, e.body_text()))?;
    let state = match &q.state {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<ServiceOrderState>(Value::String(s.clone())).map_err(
                |_| {
                    Problem::new(
                        StatusCode::BAD_REQUEST,
                        codes::BAD_QUERY,
                        format!("unknown state `{s}`; one of requested, under_review, retention, approved, rejected, awaiting_return_shipment, in_transit, received, inspected, refunding, refunded, reshipping, delivered, completed, closed, failed"),
                    )
                },
            )?,
        ),
    };
    let after_sales_type = match &q.kind {
        None => None,
        Some(s) => Some(
            serde_json::from_value::<AfterSalesType>(Value::String(s.clone())).map_err(|_| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    codes::BAD_QUERY,
                    format!("unknown type `{s}`; one of cancel_after_payment, refund_only, return_refund, exchange"),
                )
            })?,
        ),
    };
    let (items, next) = service(&st)?
        .list(&ListQuery {
            state,
            after_sales_type,
            business_line: q.business_line,
            order_id: q.order_id,
            created_from: instant("created_from", &q.created_from)?,
            created_to: instant("created_to", &q.created_to)?,
            after: q.cursor,
            limit: q.limit.unwrap_or(50),
        })
        .await
        .map_err(service_problem)?;
    Ok(AxumJson(json!({"items": items, "next_cursor": next})).into_response())
}

/// Query of `GET /v1/after-sales/{id}/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryParams {
    after: Option<i64>,
    limit: Option<usize>,
}

/// `GET /v1/after-sales/{id}/history`
#[utoipa::path(
    get,
    path = "/v1/after-sales/{id}/history",
    tag = "after-sales",
    params(("id" = String, Path), ("after" = Option<i64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{ events: [{ seq, at, kind, step, attempt, data }], next_after }`"), (status = 404, body = Problem))
)]
pub(crate) async fn history(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<HistoryParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    let Query(q) = query
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, codes::BAD_QUERY, e.body_text()))?;
    let limit = q.limit.unwrap_or(500).clamp(1, 5000);
    let events = service(&st)?
        .history(&id, q.after.unwrap_or(0), limit)
        .await
        .map_err(service_problem)?;
    let next = if events.len() == limit {
        events.last().map(|h| h.seq)
    } else {
        None
    };
    let events: Vec<Value> = events
        .into_iter()
        .map(|h| {
            json!({
                "seq": h.seq,
                "at": rfc3339(h.event.at),
                "kind": h.event.kind,
                "step": h.event.step,
                "attempt": h.event.attempt,
                "data": h.event.data,
            })
        })
        .collect();
    Ok(AxumJson(json!({"events": events, "next_after": next})).into_response())
}

/// `POST /v1/after-sales/{id}/signals/{name}`
#[utoipa::path(
    post,
    path = "/v1/after-sales/{id}/signals/{name}",
    tag = "after-sales",
    request_body = SignalBody,
    params(("id" = String, Path), ("name" = String, Path, description = "merchant.decision, buyer.shipped or retention.result")),
    responses((status = 202, description = "accepted"), (status = 200, description = "a duplicate, recorded once"), (status = 404, body = Problem), (status = 409, description = "the service order has ended", body = Problem))
)]
pub(crate) async fn signal(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    Json(body): Json<SignalBody>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Operate)?;
    if !SIGNALS.iter().any(|(n, _)| *n == name) {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!(
                "unknown signal `{name}`; one of {}",
                SIGNALS
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let svc = service(&st)?;
    if svc.get(&id).await.map_err(service_problem)?.is_none() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("no service order `{id}`"),
        ));
    }
    let dedupe = signal_dedupe_id(body.dedupe_id, &headers)?;
    // A cancellation that became a return waits in its child: deliver there.
    let target = svc.signal_target(&id).await.map_err(service_problem)?;
    let d = svc
        .engine()
        .signal(&target, &name, &dedupe, body.payload)
        .await
        .map_err(engine_problem)?;
    delivered(d, &id)
}

/// `POST /v1/after-sales/{id}/cancel`: the buyer withdraws; what was done is undone.
#[utoipa::path(
    post,
    path = "/v1/after-sales/{id}/cancel",
    tag = "after-sales",
    request_body = CancelBody,
    params(("id" = String, Path)),
    responses((status = 202, description = "accepted"), (status = 404, body = Problem), (status = 409, body = Problem))
)]
pub(crate) async fn cancel(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<CancelBody>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Operate)?;
    let svc = service(&st)?;
    if svc.get(&id).await.map_err(service_problem)?.is_none() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("no service order `{id}`"),
        ));
    }
    let d = svc
        .engine()
        .cancel(&id, &body.reason)
        .await
        .map_err(engine_problem)?;
    delivered(d, &id)
}

/// `GET /v1/business-lines`
#[utoipa::path(
    get,
    path = "/v1/business-lines",
    tag = "business-lines",
    responses((status = 200, description = "`{ items: [...], signals: [...] }`"))
)]
pub(crate) async fn business_lines(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    let svc = service(&st)?;
    let items: Vec<Value> = svc
        .lines()
        .map(|l| {
            let c = &l.config;
            let workflows: serde_json::Map<String, Value> = c
                .workflows
                .iter()
                .map(|(k, w)| {
                    (
                        k.as_str().to_owned(),
                        json!(format!("{}@{}", w.name, w.version)),
                    )
                })
                .collect();
            json!({
                "id": c.id,
                "name": c.name,
                "description": c.description,
                "goods": c.goods,
                "retention": c.retention,
                "after_sales": workflows,
                "rules": c.rules,
                "params": c.instance_params(),
                "return_rate": c.return_rate,
                "adapters": {
                    "order": l.adapters.order.platform(),
                    "warehouse": l.adapters.warehouse.platform(),
                    "fulfillment": l.adapters.fulfillment.platform(),
                    "payment": l.adapters.payment.platform(),
                    "notify": l.adapters.notify.platform(),
                },
            })
        })
        .collect();
    Ok(AxumJson(json!({"items": items, "signals": SIGNALS.iter().map(|(n, d)| json!({"name": n, "payload": d})).collect::<Vec<_>>()})).into_response())
}

/// One record of `POST /v1/sales`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SaleBody {
    /// The feed's id for the record; a record sent twice is counted once.
    pub id: String,
    /// A loaded business line.
    pub business_line: String,
    /// The product category.
    pub category: String,
    /// The SKU.
    pub sku: String,
    /// Units sold.
    pub quantity: u64,
    /// When (RFC 3339).
    pub at: String,
}

/// The body of `POST /v1/sales`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SalesBody {
    /// Up to 10,000 records.
    pub sales: Vec<SaleBody>,
}

/// `POST /v1/sales`: units sold, the denominator of return rates.
#[utoipa::path(
    post,
    path = "/v1/sales",
    tag = "analytics",
    request_body = SalesBody,
    responses((status = 200, description = "`{ recorded, duplicates }`"), (status = 422, body = Problem))
)]
pub(crate) async fn record_sales(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<SalesBody>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Submit)?;
    if body.sales.len() > 10_000 {
        return Err(Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::INVALID_INPUT,
            format!(
                "{} sales records in one request; send at most 10000",
                body.sales.len()
            ),
        ));
    }
    let mut records = Vec::with_capacity(body.sales.len());
    for (i, s) in body.sales.into_iter().enumerate() {
        check_key(&format!("sales[{i}].id"), &s.id)?;
        let at = instant(&format!("sales[{i}].at"), &Some(s.at))?.unwrap_or_default();
        records.push(aftersales_core::store::SaleRecord {
            business_line: s.business_line,
            category: s.category,
            sku: s.sku,
            quantity: s.quantity,
            at,
            dedupe_id: s.id,
        });
    }
    let total = records.len() as u64;
    let new = service(&st)?
        .record_sales(&records)
        .await
        .map_err(service_problem)?;
    Ok(AxumJson(json!({"recorded": new, "duplicates": total - new})).into_response())
}

/// Query of `GET /v1/analytics/return-rates`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatesParams {
    from: String,
    to: String,
    business_line: Option<String>,
}

/// `GET /v1/analytics/return-rates?from=…&to=…[&business_line=…]`
#[utoipa::path(
    get,
    path = "/v1/analytics/return-rates",
    tag = "analytics",
    params(("from" = String, Query, description = "RFC 3339"), ("to" = String, Query, description = "RFC 3339"), ("business_line" = Option<String>, Query)),
    responses((status = 200, body = ReturnRatesReport), (status = 400, body = Problem))
)]
pub(crate) async fn return_rates(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<RatesParams>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    let Query(q) = query
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, codes::BAD_QUERY, e.body_text()))?;
    let from = instant("from", &Some(q.from))?.unwrap_or_default();
    let to = instant("to", &Some(q.to))?.unwrap_or_default();
    let mut report = service(&st)?
        .return_rates(from, to)
        .await
        .map_err(service_problem)?;
    if let Some(line) = &q.business_line {
        report.rates.retain(|r| r.business_line.as_str() == line);
        report.alerts.retain(|a| a.business_line.as_str() == line);
    }
    Ok(AxumJson(report).into_response())
}
