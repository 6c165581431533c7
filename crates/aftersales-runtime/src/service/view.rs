//! A service order as people and the API see it: the stored record, the instance's status
//! and phase, and what it waits on.

use aftersales_core::engine::Engine;
use aftersales_core::engine::state::{ExecState, Run};
use aftersales_core::store::{InstanceRecord, InstanceStatus};
use aftersales_domain::{AfterSalesType, ServiceOrderState};
use serde::Serialize;
use serde_json::Value;

use super::ServiceError;
use super::snapshot::refunded_amount;

/// One service order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct ServiceOrderView {
    /// The service order id (also its workflow instance's id).
    pub id: String,
    /// The business line.
    pub business_line: String,
    /// The after-sales type.
    #[serde(rename = "type")]
    #[schema(value_type = String, example = "return_refund")]
    pub after_sales_type: AfterSalesType,
    /// Where it stands.
    #[schema(value_type = String, example = "under_review")]
    pub state: ServiceOrderState,
    /// The workflow instance's status (`running`, `completed`, ...).
    pub status: String,
    /// The order.
    pub order_id: String,
    /// The lines asked for.
    pub lines: Vec<LineView>,
    /// Why.
    #[schema(value_type = Object)]
    pub reason: Value,
    /// Evidence references.
    #[schema(value_type = Object)]
    pub evidence: Value,
    /// What the buyer asked for.
    #[schema(value_type = Object)]
    pub requested_amount: Value,
    /// What the rules approved.
    #[schema(value_type = Object)]
    pub approved_amount: Value,
    /// What was paid back, once paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub refunded_amount: Option<Value>,
    /// How the approved amount was arrived at.
    #[schema(value_type = Object)]
    pub breakdown: Value,
    /// For a cancellation the refund should it become a return; for an exchange the refund
    /// should the replacement be out of stock.
    #[serde(skip_serializing_if = "Value::is_null")]
    #[schema(value_type = Option<Object>)]
    pub alternative: Value,
    /// The workflow and version it runs.
    pub workflow: String,
    /// What it waits on now, and until when.
    pub waiting: Vec<WaitingView>,
    /// Why it ended, once ended.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    /// A person should look at it.
    pub needs_attention: bool,
    /// Created (unix ms).
    pub created_at: i64,
    /// Last changed (unix ms).
    pub updated_at: i64,
}

/// One line of a service order.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct LineView {
    /// The order line.
    pub line_id: String,
    /// Units.
    pub quantity: u64,
    /// The SKU.
    pub sku: Option<String>,
    /// For an exchange, the SKU wanted instead.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exchange_to: Option<String>,
}

/// Something a service order waits on.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct WaitingView {
    /// The workflow step.
    pub step: String,
    /// `signal`, `event`, `timer`, `retry`, `pending`, `child`, ...
    pub kind: String,
    /// The signal, event or action name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub what: Option<String>,
    /// When it fires or times out (unix ms).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub until: Option<i64>,
}

/// Builds the view of an instance that carries a service order record.
pub(crate) async fn build(
    engine: &Engine,
    record: InstanceRecord,
) -> Result<ServiceOrderView, ServiceError> {
    let meta = &record.meta;
    let state: Option<ExecState> = serde_json::from_value(record.state.clone()).ok();
    let mut waiting = Vec::new();
    let mut phase = state.as_ref().and_then(|s| s.phase.clone());
    if let Some(st) = &state {
        for w in st.waiting_on() {
            waiting.push(WaitingView {
                step: w.step,
                kind: w.kind.to_owned(),
                what: w.what,
                until: w.until,
            });
        }
        // A step that runs a sub-workflow (a cancellation turned into a return) shows
        // where the child is.
        for f in st.fibers.values() {
            if let Run::Calling { child } = &f.run
                && let Some(c) = engine.get(child).await?
                && let Ok(cs) = serde_json::from_value::<ExecState>(c.state)
            {
                if cs.phase.is_some() {
                    phase = cs.phase.clone();
                }
                for w in cs.waiting_on() {
                    waiting.push(WaitingView {
                        step: format!("{}/{}", f.step, w.step),
                        kind: w.kind.to_owned(),
                        what: w.what,
                        until: w.until,
                    });
                }
            }
        }
    }
    let refunded = refunded_amount(&record);
    let service_state = match record.status {
        InstanceStatus::Running => phase
            .as_deref()
            .and_then(|p| serde_json::from_value(Value::String(p.to_owned())).ok())
            .unwrap_or(ServiceOrderState::Requested),
        InstanceStatus::Completed => ServiceOrderState::Completed,
        InstanceStatus::Rejected => ServiceOrderState::Rejected,
        InstanceStatus::Closed | InstanceStatus::Cancelled => ServiceOrderState::Closed,
        InstanceStatus::Failed => ServiceOrderState::Failed,
    };
    let lines = meta
        .get("lines")
        .and_then(Value::as_array)
        .map(|ls| {
            ls.iter()
                .map(|l| LineView {
                    line_id: l
                        .get("line_id")
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .to_owned(),
                    quantity: l.get("quantity").and_then(Value::as_u64).unwrap_or(0),
                    sku: l.get("sku").and_then(Value::as_str).map(str::to_owned),
                    exchange_to: l
                        .get("exchange_to")
                        .and_then(Value::as_str)
                        .map(str::to_owned),
                })
                .collect()
        })
        .unwrap_or_default();
    let currency = meta
        .get("approved_amount")
        .and_then(|m| m.get("currency"))
        .cloned()
        .unwrap_or(Value::Null);
    let after_sales_type = meta
        .get("type")
        .cloned()
        .and_then(|t| serde_json::from_value(t).ok())
        .unwrap_or(AfterSalesType::ReturnRefund);
    Ok(ServiceOrderView {
        id: record.id.clone(),
        business_line: record.business_line.clone(),
        after_sales_type,
        state: service_state,
        status: record.status.as_str().to_owned(),
        order_id: meta
            .get("order_id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        lines,
        reason: meta.get("reason").cloned().unwrap_or(Value::Null),
        evidence: meta.get("evidence").cloned().unwrap_or(Value::Null),
        requested_amount: meta.get("requested_amount").cloned().unwrap_or(Value::Null),
        approved_amount: meta.get("approved_amount").cloned().unwrap_or(Value::Null),
        refunded_amount: refunded.map(|m| serde_json::json!({"minor": m, "currency": currency})),
        breakdown: meta.get("breakdown").cloned().unwrap_or(Value::Null),
        alternative: meta.get("alternative").cloned().unwrap_or(Value::Null),
        workflow: format!("{}@{}", record.workflow, record.version),
        waiting,
        outcome: state
            .as_ref()
            .and_then(|s| s.end.as_ref())
            .map(|e| e.reason.clone()),
        needs_attention: record.needs_attention,
        created_at: record.created_at,
        updated_at: record.updated_at,
    })
}
