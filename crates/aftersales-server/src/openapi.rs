//! The OpenAPI 3 description of the API, generated from the handlers' and bodies'
//! annotations (utoipa) and served at `GET /v1/openapi.json`.

use axum::Json;
use utoipa::OpenApi;

use crate::after_sales::{SaleBody, SalesBody};
use crate::api::{CancelBody, EventBody, SignalBody, StartBody};
use crate::problem::Problem;
use aftersales_runtime::service::{
    LineView, ReturnRatesReport, ServiceOrderView, SubmitLine, SubmitRequest, WaitingView,
};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "aftersales",
        description = "E-commerce after-sales: service orders checked against each business line's rules, priced exactly, and run as durable workflows. Errors are RFC 7807 problems with a stable `code`; money is `{ minor, currency }` in integer minor units. Authenticate with `Authorization: Bearer <token>` (scopes read, submit, operate, admin); webhooks are authenticated by their signatures.",
        license(name = "Apache-2.0")
    ),
    paths(
        crate::after_sales::submit,
        crate::after_sales::quote,
        crate::after_sales::list,
        crate::after_sales::get_one,
        crate::after_sales::history,
        crate::after_sales::signal,
        crate::after_sales::cancel,
        crate::after_sales::business_lines,
        crate::after_sales::record_sales,
        crate::after_sales::return_rates,
        crate::api::start,
        crate::api::list,
        crate::api::get_instance,
        crate::api::history,
        crate::api::signal,
        crate::api::cancel,
        crate::api::event,
        crate::api::webhook,
        crate::api::workflows,
        crate::api::workflow_graph,
        crate::api::healthz,
        crate::api::readyz,
        crate::api::metrics_text,
    ),
    components(schemas(
        SubmitRequest,
        SubmitLine,
        ServiceOrderView,
        LineView,
        WaitingView,
        ReturnRatesReport,
        SaleBody,
        SalesBody,
        SignalBody,
        CancelBody,
        EventBody,
        StartBody,
        Problem,
    )),
    tags(
        (name = "after-sales", description = "service orders: submit, follow, act on"),
        (name = "analytics", description = "sales feed and return rates"),
        (name = "business-lines", description = "what is configured"),
        (name = "engine", description = "the workflow engine underneath"),
        (name = "operations", description = "health, readiness, metrics"),
    )
)]
pub struct ApiDoc;

/// `GET /v1/openapi.json`
pub(crate) async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
