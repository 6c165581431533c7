//! Routes and handlers.

use std::collections::HashMap;
use std::sync::Arc;

use aftersales_adapter::{Headers, WebhookError, WebhookVerifier};

use aftersales_core::engine::machine::rfc3339;
use aftersales_core::engine::state::{ExecState, WaitingOn};
use aftersales_core::engine::{Engine, EngineError, StartRequest};
use aftersales_core::graph;
use aftersales_core::store::{
    Delivered, HistoryRecord, InstanceRecord, InstanceStatus, ListFilter, StoreError,
};
use axum::extract::{DefaultBodyLimit, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json as AxumJson, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::auth::{Auth, Scope};
use crate::json::Json;
use crate::path::Path;
use crate::problem::{Problem, codes};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Tokens and scopes.
    pub auth: Arc<Auth>,
    /// Largest accepted request body, in bytes.
    pub body_limit: usize,
    /// The Prometheus recorder's handle, when metrics are enabled (`GET /metrics`).
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Webhook verifiers by endpoint name (`apparel.payment`): `POST /v1/webhooks/{name}`.
    pub webhooks: Arc<HashMap<String, Arc<dyn WebhookVerifier>>>,
    /// The after-sales service over the business lines (`/v1/after-sales`), when the daemon
    /// runs business lines.
    pub service: Option<Arc<aftersales_runtime::service::AfterSales>>,
}

/// The API router.
pub fn router(state: AppState) -> Router {
    let limit = state.body_limit;
    Router::new()
        .route("/v1/instances", post(start).get(list))
        .route("/v1/instances/{id}", get(get_instance))
        .route("/v1/instances/{id}/history", get(history))
        .route("/v1/instances/{id}/signals/{name}", post(signal))
        .route("/v1/instances/{id}/cancel", post(cancel))
        .route("/v1/events", post(event))
        .route(
            "/v1/after-sales",
            post(crate::after_sales::submit).get(crate::after_sales::list),
        )
        .route("/v1/after-sales/quote", post(crate::after_sales::quote))
        .route("/v1/after-sales/{id}", get(crate::after_sales::get_one))
        .route(
            "/v1/after-sales/{id}/history",
            get(crate::after_sales::history),
        )
        .route(
            "/v1/after-sales/{id}/signals/{name}",
            post(crate::after_sales::signal),
        )
        .route(
            "/v1/after-sales/{id}/cancel",
            post(crate::after_sales::cancel),
        )
        .route(
            "/v1/business-lines",
            get(crate::after_sales::business_lines),
        )
        .route("/v1/sales", post(crate::after_sales::record_sales))
        .route(
            "/v1/analytics/return-rates",
            get(crate::after_sales::return_rates),
        )
        .route("/v1/webhooks/{name}", post(webhook))
        .route("/v1/workflows", get(workflows))
        .route("/v1/workflows/{name}/graph", get(workflow_graph))
        .route("/v1/openapi.json", get(crate::openapi::openapi_json))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn(crate::path::refuse_nul))
        .with_state(state)
}

async fn not_found() -> Problem {
    Problem::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, "no such route")
}

/// A known route called with a method it does not take; axum adds the `Allow` header.
async fn method_not_allowed(method: axum::http::Method) -> Problem {
    Problem::new(
        StatusCode::METHOD_NOT_ALLOWED,
        codes::METHOD_NOT_ALLOWED,
        format!("this route does not take {method}; the Allow header lists the methods it takes"),
    )
}

pub(crate) fn engine_problem(e: EngineError) -> Problem {
    match e {
        EngineError::InvalidInput(errors) => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::INVALID_INPUT,
            format!(
                "{} field(s) do not fit the workflow's declared inputs",
                errors.len()
            ),
        )
        .with_errors(
            errors
                .iter()
                .map(|e| json!({"path": e.path, "message": e.message}))
                .collect(),
        ),
        EngineError::InvalidSignalPayload { ref errors, .. } => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            codes::INVALID_INPUT,
            e.to_string(),
        )
        .with_errors(
            errors
                .iter()
                .map(|e| json!({"path": e.path, "message": e.message}))
                .collect(),
        ),
        EngineError::UnknownWorkflow { .. } => {
            Problem::new(StatusCode::NOT_FOUND, codes::NOT_FOUND, e.to_string())
        }
        EngineError::Store(s) => store_problem(s),
        other => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            codes::INTERNAL,
            other.to_string(),
        ),
    }
}

fn store_problem(e: StoreError) -> Problem {
    match e {
        StoreError::KeyConflict { .. } => {
            Problem::new(StatusCode::CONFLICT, codes::KEY_CONFLICT, e.to_string())
        }
        StoreError::Unavailable(_) => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            codes::UNAVAILABLE,
            e.to_string(),
        ),
        other => {
            tracing::error!(error = %other, "store error");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                codes::INTERNAL,
                other.to_string(),
            )
        }
    }
}

pub(crate) fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => {
            let k = v.to_str().map_err(|_| {
                Problem::new(
                    StatusCode::BAD_REQUEST,
                    codes::BAD_HEADER,
                    "`Idempotency-Key` must be visible ASCII",
                )
            })?;
            if k.is_empty() || k.len() > 255 {
                return Err(Problem::new(
                    StatusCode::BAD_REQUEST,
                    codes::BAD_HEADER,
                    "`Idempotency-Key` must be 1 to 255 characters",
                ));
            }
            Ok(Some(k.to_owned()))
        }
    }
}

/// Longest name, key or id accepted in a body, in bytes: the `Idempotency-Key` bound.
/// These go into indexed columns, and PostgreSQL cannot index a text longer than about
/// 2.7 KB: a longer one would fail there as "store unavailable" (a 503 inviting a retry).
pub(crate) const MAX_KEY_LEN: usize = 255;

/// Checks that a body's name, key or id field is 1 to [`MAX_KEY_LEN`] bytes.
pub(crate) fn check_key(field: &str, value: &str) -> Result<(), Problem> {
    if value.is_empty() || value.len() > MAX_KEY_LEN {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_BODY,
            format!(
                "field `{field}` must be 1 to {MAX_KEY_LEN} bytes, got {}",
                value.len()
            ),
        ));
    }
    Ok(())
}

/// The body of `POST /v1/instances`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct StartBody {
    /// Workflow name.
    pub workflow: String,
    /// Version; the newest when absent.
    #[serde(default)]
    pub version: Option<u32>,
    /// Business line.
    pub business_line: String,
    /// Input.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub input: Value,
    /// Parameters.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub params: Value,
    /// Searchable key (the order id).
    #[serde(default)]
    pub search_key: Option<String>,
}

#[utoipa::path(post, path = "/v1/instances", tag = "engine", request_body = StartBody,
    params(("Idempotency-Key" = String, Header)),
    responses((status = 201, description = "started"), (status = 200, description = "the same key and body as before"), (status = 409, body = Problem), (status = 422, description = "the input does not fit the workflow", body = Problem)))]
pub(crate) async fn start(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<StartBody>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Submit)?;
    let Some(key) = idempotency_key(&headers)? else {
        return Err(Problem::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_HEADER,
            "`Idempotency-Key` header is required: resend the same key to get the same answer",
        ));
    };
    check_key("business_line", &body.business_line)?;
    if let Some(k) = &body.search_key {
        check_key("search_key", k)?;
    }
    let started = st
        .engine
        .start(StartRequest {
            workflow: body.workflow,
            version: body.version,
            business_line: body.business_line,
            input: body.input,
            params: body.params,
            idempotency_key: Some(key),
            search_key: body.search_key,
            search_seen: None,
            meta: serde_json::Value::Null,
            id: None,
        })
        .await
        .map_err(engine_problem)?;
    // A new instance is answered as stored; one its key returned is read.
    let rec = match started.record {
        Some(rec) => rec,
        None => st
            .engine
            .get(&started.id)
            .await
            .map_err(engine_problem)?
            .ok_or_else(|| {
                Problem::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    codes::INTERNAL,
                    "instance vanished",
                )
            })?,
    };
    let status = if started.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, AxumJson(view(&rec))).into_response())
}

/// An instance as the API shows it.
#[derive(Debug, Serialize)]
pub struct InstanceView {
    id: String,
    workflow: String,
    version: u32,
    business_line: String,
    status: InstanceStatus,
    needs_attention: bool,
    parent_id: Option<String>,
    search_key: Option<String>,
    input: Value,
    created_at: String,
    updated_at: String,
    next_due_at: Option<String>,
    waiting_on: Vec<WaitingView>,
    /// The phase of the last step entered that declared one.
    phase: Option<String>,
    reason: Option<String>,
    output: Option<Value>,
}

#[derive(Debug, Serialize)]
struct WaitingView {
    step: String,
    kind: &'static str,
    what: Option<String>,
    correlation: Option<String>,
    until: Option<String>,
}

fn view(rec: &InstanceRecord) -> InstanceView {
    let state: Option<ExecState> = serde_json::from_value(rec.state.clone()).ok();
    let waiting: Vec<WaitingOn> = state
        .as_ref()
        .map(ExecState::waiting_on)
        .unwrap_or_default();
    let end = state.as_ref().and_then(|s| s.end.clone());
    InstanceView {
        id: rec.id.clone(),
        workflow: rec.workflow.clone(),
        version: rec.version,
        business_line: rec.business_line.clone(),
        status: rec.status,
        needs_attention: rec.needs_attention,
        parent_id: rec.parent_id.clone(),
        search_key: rec.search_key.clone(),
        input: rec.input.clone(),
        created_at: rfc3339(rec.created_at),
        updated_at: rfc3339(rec.updated_at),
        next_due_at: rec.due_at.map(rfc3339),
        waiting_on: waiting
            .into_iter()
            .map(|w| WaitingView {
                step: w.step,
                kind: w.kind,
                what: w.what,
                correlation: w.correlation,
                until: w.until.map(rfc3339),
            })
            .collect(),
        phase: state.as_ref().and_then(|s| s.phase.clone()),
        reason: end.as_ref().map(|e| e.reason.clone()),
        output: end.map(|e| e.output),
    }
}

#[utoipa::path(get, path = "/v1/instances/{id}", tag = "engine", params(("id" = String, Path)),
    responses((status = 200, description = "the instance, what it waits on and until when"), (status = 404, body = Problem)))]
pub(crate) async fn get_instance(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<AxumJson<InstanceView>, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    match st.engine.get(&id).await.map_err(engine_problem)? {
        Some(rec) => Ok(AxumJson(view(&rec))),
        None => Err(Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("no instance `{id}`"),
        )),
    }
}

/// Query of `GET /v1/instances`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    status: Option<String>,
    business_line: Option<String>,
    workflow: Option<String>,
    search_key: Option<String>,
    created_from: Option<String>,
    created_to: Option<String>,
    needs_attention: Option<bool>,
    cursor: Option<String>,
    limit: Option<usize>,
}

pub(crate) fn instant(name: &str, v: &Option<String>) -> Result<Option<i64>, Problem> {
    match v {
        None => Ok(None),
        Some(s) => chrono_parse(s).map(Some).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_QUERY,
                format!(
                    "`{name}` must be an RFC 3339 instant such as 2026-11-25T00:00:00Z, got `{s}`"
                ),
            )
        }),
    }
}

fn chrono_parse(s: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

#[utoipa::path(get, path = "/v1/instances", tag = "engine",
    params(("status" = Option<String>, Query), ("business_line" = Option<String>, Query), ("workflow" = Option<String>, Query), ("search_key" = Option<String>, Query), ("created_from" = Option<String>, Query), ("created_to" = Option<String>, Query), ("needs_attention" = Option<bool>, Query), ("cursor" = Option<String>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{ items, next_cursor }`"), (status = 400, body = Problem)))]
pub(crate) async fn list(
    State(st): State<AppState>,
    headers: HeaderMap,
    query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<AxumJson<Value>, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    let Query(q) = query
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, codes::BAD_QUERY, e.body_text()))?;
    let status = match &q.status {
        None => None,
        Some(s) => Some(InstanceStatus::parse(s).ok_or_else(|| {
            Problem::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_QUERY,
                format!("unknown status `{s}`; one of running, completed, rejected, closed, failed, cancelled"),
            )
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, 500);
    let filter = ListFilter {
        status,
        business_line: q.business_line.clone(),
        workflow: q.workflow.clone(),
        search_key: q.search_key.clone(),
        created_from: instant("created_from", &q.created_from)?,
        created_to: instant("created_to", &q.created_to)?,
        needs_attention: q.needs_attention,
        after_id: q.cursor.clone(),
        limit,
    };
    let items = st
        .engine
        .store()
        .list_instances(&filter)
        .await
        .map_err(store_problem)?;
    let next_cursor = if items.len() == limit {
        items.last().map(|r| r.id.clone())
    } else {
        None
    };
    let items: Vec<InstanceView> = items.iter().map(view).collect();
    Ok(AxumJson(
        json!({"items": items, "next_cursor": next_cursor}),
    ))
}

/// Query of `GET /v1/instances/{id}/history`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    after: Option<i64>,
    limit: Option<usize>,
}

#[derive(Debug, Serialize)]
struct HistoryView {
    seq: i64,
    at: String,
    kind: String,
    step: Option<String>,
    attempt: Option<u32>,
    data: Value,
}

#[utoipa::path(get, path = "/v1/instances/{id}/history", tag = "engine", params(("id" = String, Path), ("after" = Option<i64>, Query), ("limit" = Option<usize>, Query)),
    responses((status = 200, description = "`{ events, next_after }`"), (status = 404, body = Problem)))]
pub(crate) async fn history(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    query: Result<Query<HistoryQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<AxumJson<Value>, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    let Query(q) = query
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, codes::BAD_QUERY, e.body_text()))?;
    if st.engine.get(&id).await.map_err(engine_problem)?.is_none() {
        return Err(Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("no instance `{id}`"),
        ));
    }
    let limit = q.limit.unwrap_or(500).clamp(1, 5000);
    let events: Vec<HistoryRecord> = st
        .engine
        .history(&id, q.after.unwrap_or(0), limit)
        .await
        .map_err(engine_problem)?;
    let next = if events.len() == limit {
        events.last().map(|h| h.seq)
    } else {
        None
    };
    let events: Vec<HistoryView> = events
        .into_iter()
        .map(|h| HistoryView {
            seq: h.seq,
            at: rfc3339(h.event.at),
            kind: h.event.kind,
            step: h.event.step,
            attempt: h.event.attempt,
            data: h.event.data,
        })
        .collect();
    Ok(AxumJson(json!({"events": events, "next_after": next})))
}

/// A signal's dedupe id: `dedupe_id` in the body, else the `Idempotency-Key` header.
pub(crate) fn signal_dedupe_id(
    in_body: Option<String>,
    headers: &HeaderMap,
) -> Result<String, Problem> {
    match (in_body, idempotency_key(headers)?) {
        (Some(d), _) => check_key("dedupe_id", &d).map(|()| d),
        (None, Some(d)) => Ok(d),
        (None, None) => Err(Problem::new(
            StatusCode::BAD_REQUEST,
            codes::BAD_HEADER,
            "a signal needs a dedupe id: `dedupe_id` in the body or an `Idempotency-Key` header",
        )),
    }
}

/// The body of a signal.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SignalBody {
    /// The sender's dedupe id; the `Idempotency-Key` header may carry it instead.
    #[serde(default)]
    pub dedupe_id: Option<String>,
    /// The payload.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

pub(crate) fn delivered(d: Delivered, id: &str) -> Result<Response, Problem> {
    match d {
        Delivered::Accepted(ids) => Ok((
            StatusCode::ACCEPTED,
            AxumJson(json!({"delivered": "accepted", "instances": ids})),
        )
            .into_response()),
        Delivered::Buffered => Ok((
            StatusCode::ACCEPTED,
            AxumJson(json!({"delivered": "buffered"})),
        )
            .into_response()),
        Delivered::Duplicate => {
            Ok((StatusCode::OK, AxumJson(json!({"delivered": "duplicate"}))).into_response())
        }
        Delivered::UnknownInstance => Err(Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("no instance `{id}`"),
        )),
        Delivered::Finished(s) => Err(Problem::new(
            StatusCode::CONFLICT,
            codes::FINISHED,
            format!(
                "instance `{id}` has ended ({}); nothing changed",
                s.as_str()
            ),
        )),
    }
}

#[utoipa::path(post, path = "/v1/instances/{id}/signals/{name}", tag = "engine", request_body = SignalBody, params(("id" = String, Path), ("name" = String, Path)),
    responses((status = 202, description = "accepted"), (status = 200, description = "a duplicate"), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn signal(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path((id, name)): Path<(String, String)>,
    Json(body): Json<SignalBody>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Operate)?;
    let dedupe = signal_dedupe_id(body.dedupe_id, &headers)?;
    let d = st
        .engine
        .signal(&id, &name, &dedupe, body.payload)
        .await
        .map_err(engine_problem)?;
    delivered(d, &id)
}

/// The body of a cancel.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CancelBody {
    /// Why, for the history.
    pub reason: String,
}

#[utoipa::path(post, path = "/v1/instances/{id}/cancel", tag = "engine", request_body = CancelBody, params(("id" = String, Path)),
    responses((status = 202, description = "accepted"), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn cancel(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Json(body): Json<CancelBody>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Operate)?;
    let d = st
        .engine
        .cancel(&id, &body.reason)
        .await
        .map_err(engine_problem)?;
    delivered(d, &id)
}

/// The body of `POST /v1/events`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EventBody {
    /// Event name (`warehouse.return.received`).
    pub name: String,
    /// Correlation key.
    pub correlation: String,
    /// The sender's event id.
    pub dedupe_id: String,
    /// Payload.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub payload: Value,
}

#[utoipa::path(post, path = "/v1/events", tag = "engine", request_body = EventBody,
    responses((status = 202, description = "delivered or buffered"), (status = 200, description = "a duplicate")))]
pub(crate) async fn event(
    State(st): State<AppState>,
    headers: HeaderMap,
    Json(body): Json<EventBody>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Operate)?;
    check_key("name", &body.name)?;
    check_key("correlation", &body.correlation)?;
    check_key("dedupe_id", &body.dedupe_id)?;
    let d = st
        .engine
        .event(&body.name, &body.correlation, &body.dedupe_id, body.payload)
        .await
        .map_err(engine_problem)?;
    delivered(d, "")
}

#[utoipa::path(get, path = "/v1/workflows", tag = "engine", responses((status = 200, description = "deployed workflow versions")))]
pub(crate) async fn workflows(
    State(st): State<AppState>,
    headers: HeaderMap,
) -> Result<AxumJson<Value>, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    let all = st.engine.workflows().await.map_err(engine_problem)?;
    let items: Vec<Value> = all
        .iter()
        .map(|w| {
            json!({
                "name": w.name.value,
                "version": w.version.value,
                "description": w.description,
                "inputs": w.inputs.iter().map(|f| json!({"name": f.name.value, "type": f.ty.to_string(), "required": f.required})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(AxumJson(json!({"items": items})))
}

/// Query of the graph endpoint.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GraphQuery {
    version: Option<u32>,
    format: Option<String>,
}

#[utoipa::path(get, path = "/v1/workflows/{name}/graph", tag = "engine", params(("name" = String, Path)), responses((status = 200, description = "a Mermaid flowchart", content_type = "text/plain"), (status = 404, body = Problem)))]
pub(crate) async fn workflow_graph(
    State(st): State<AppState>,
    headers: HeaderMap,
    Path(name): Path<String>,
    query: Result<Query<GraphQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, Problem> {
    st.auth.check(&headers, Scope::Read)?;
    let Query(q) = query
        .map_err(|e| Problem::new(StatusCode::BAD_REQUEST, codes::BAD_QUERY, e.body_text()))?;
    let format = match q.format.as_deref() {
        None | Some("mermaid") => graph::Format::Mermaid,
        Some("dot") => graph::Format::Dot,
        Some(other) => {
            return Err(Problem::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_QUERY,
                format!("unknown format `{other}`; mermaid or dot"),
            ));
        }
    };
    let wf = st
        .engine
        .definition(&name, q.version)
        .await
        .map_err(engine_problem)?;
    Ok((
        [("content-type", "text/plain; charset=utf-8")],
        graph::render(&wf, format),
    )
        .into_response())
}

#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "alive")))]
pub(crate) async fn healthz() -> AxumJson<Value> {
    AxumJson(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations", responses((status = 200, description = "the store answers"), (status = 503, description = "not ready")))]
pub(crate) async fn readyz(State(st): State<AppState>) -> Response {
    let now = st.engine.clock().now_ms();
    match st.engine.store().stats(now).await {
        Ok(s) => AxumJson(json!({"status": "ready", "running": s.running, "due": s.due, "needs_attention": s.needs_attention}))
            .into_response(),
        Err(e) => Problem::new(StatusCode::SERVICE_UNAVAILABLE, codes::UNAVAILABLE, format!("store not ready: {e}")).into_response(),
    }
}

/// Prometheus text: the engine's counters and histograms, plus gauges read from the store at
/// scrape time (running instances, the due-queue depth, instances flagged for a person).
#[utoipa::path(get, path = "/metrics", tag = "operations", responses((status = 200, description = "Prometheus text", content_type = "text/plain")))]
pub(crate) async fn metrics_text(State(st): State<AppState>) -> Response {
    let Some(handle) = &st.metrics else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            "metrics are not enabled in this process",
        )
        .into_response();
    };
    let now = st.engine.clock().now_ms();
    match st.engine.store().stats(now).await {
        Ok(s) => {
            metrics::gauge!("aftersales_instances_running").set(s.running as f64);
            metrics::gauge!("aftersales_due_queue_depth").set(s.due as f64);
            metrics::gauge!("aftersales_instances_needing_attention").set(s.needs_attention as f64);
            metrics::gauge!("aftersales_store_up").set(1.0);
        }
        Err(e) => {
            tracing::warn!(error = %e, "store stats unavailable for /metrics");
            metrics::gauge!("aftersales_store_up").set(0.0);
        }
    }
    (
        [("content-type", "text/plain; version=0.0.4; charset=utf-8")],
        handle.render(),
    )
        .into_response()
}

/// A platform's webhook: verified (signature, timestamp window) by the adapter before
/// anything is trusted, then delivered as an event, deduplicated by the platform's event id.
/// A bad signature is 401 and changes nothing. Authenticated by signature, not by token.
#[utoipa::path(post, path = "/v1/webhooks/{name}", tag = "engine", params(("name" = String, Path, description = "`<business line>.<system>`")),
    request_body(content = String, description = "the platform's raw body, verified by its adapter", content_type = "application/octet-stream"),
    responses((status = 200, description = "verified and delivered"), (status = 401, description = "bad or stale signature; nothing changed", body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn webhook(
    State(st): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<axum::body::Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let Some(verifier) = st.webhooks.get(&name) else {
        return Problem::new(
            StatusCode::NOT_FOUND,
            codes::NOT_FOUND,
            format!("no webhook endpoint `{name}`; endpoints are named <business line>.<system>"),
        )
        .into_response();
    };
    // The raw body is read here rather than by `Json`, so its rejections (over the size
    // limit, a broken stream) are turned into problems here too.
    let body = match body {
        Ok(b) => b,
        Err(e) if e.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return Problem::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                codes::TOO_LARGE,
                "the body is larger than the limit",
            )
            .into_response();
        }
        Err(e) => {
            return Problem::new(
                StatusCode::BAD_REQUEST,
                codes::BAD_BODY,
                format!("could not read the body: {e}"),
            )
            .into_response();
        }
    };
    let pairs: Headers = headers
        .iter()
        .filter_map(|(k, v)| {
            v.to_str()
                .ok()
                .map(|v| (k.as_str().to_owned(), v.to_owned()))
        })
        .collect();
    // The engine's clock: the system clock in production, the same manual clock as the
    // simulator's in tests and the demo.
    let now = std::time::UNIX_EPOCH
        + std::time::Duration::from_millis(u64::try_from(st.engine.clock().now_ms()).unwrap_or(0));
    let verified = verifier.verify(&pairs, &body, now);
    let event = match verified {
        Ok(Some(ev)) => ev,
        Ok(None) => return (StatusCode::OK, verifier.ack_body()).into_response(),
        Err(e) => {
            let reason = match &e {
                WebhookError::BadSignature => "bad_signature",
                WebhookError::StaleTimestamp { .. } => "stale_timestamp",
                WebhookError::MissingHeader(_) => "missing_header",
                WebhookError::MalformedBody(_) => "malformed_body",
                _ => "other",
            };
            metrics::counter!("aftersales_webhook_rejections_total", "endpoint" => name.clone(), "reason" => reason)
                .increment(1);
            tracing::warn!(endpoint = %name, reason, "webhook rejected");
            let status = if matches!(e, WebhookError::MalformedBody(_)) {
                StatusCode::BAD_REQUEST
            } else {
                StatusCode::UNAUTHORIZED
            };
            let code = if status == StatusCode::BAD_REQUEST {
                codes::BAD_BODY
            } else {
                codes::UNAUTHENTICATED
            };
            return Problem::new(status, code, format!("webhook rejected: {e}")).into_response();
        }
    };
    match st
        .engine
        .event(
            &event.name,
            &event.correlation,
            &event.dedupe_id,
            event.payload,
        )
        .await
    {
        Ok(d) => {
            let outcome = match d {
                Delivered::Accepted(_) => "accepted",
                Delivered::Buffered => "buffered",
                Delivered::Duplicate => "duplicate",
                Delivered::UnknownInstance => "unknown_instance",
                Delivered::Finished(_) => "finished",
            };
            metrics::counter!("aftersales_webhook_events_total", "endpoint" => name, "outcome" => outcome).increment(1);
            (StatusCode::OK, verifier.ack_body()).into_response()
        }
        // Not acknowledged: the platform will deliver it again.
        Err(e) => engine_problem(e).into_response(),
    }
}
