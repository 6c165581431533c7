//! Platform-side returns and cancellation: `order.request_return` (`returnRequest`),
//! `order.approve_return` (`returnApproveRequest`), `order.decline_return`
//! (`returnDeclineRequest`) and `order.cancel` (`orderCancel`, an asynchronous job).
//!
//! Each action reads before it writes, so a retry finds what an earlier attempt did:
//!
//! - a return request carries the engine's key in every line's `customerNote`; the order's
//!   returns are searched for it before every `returnRequest` (the API documents no
//!   `@idempotent` support for `returnRequest`, so the note is the only key);
//! - approving and declining start from the return's `status` (already `OPEN` or `DECLINED`:
//!   done), and a refused transition is read again before it is reported;
//! - a cancellation starts from the order's `cancelledAt`, and a refused `orderCancel` is read
//!   again (already cancelled: done).
//!
//! `orderCancel` never moves money here (`refundMethod.originalPaymentMethodsRefund: false`):
//! the business line's payment adapter refunds the buyer, and a second refund path would pay
//! twice.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use aftersales_adapter::ids::{LineId, OrderId, ReturnId};
use aftersales_adapter::types::{
    ApproveReturn, CancelOrder, DeclineReturn, RequestReturn, RequestReturnOutput,
};
use aftersales_adapter::{AdapterError, IdempotencyKey};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::check_user_errors;
use crate::error::{Call, UserError, user_errors};
use crate::{KIND, SERVICE_ORDER_MARKER, ShopifyOrders, key_marker, order_gid};

// ---------------------------------------------------------------- GraphQL documents

/// The order's returns: status and, per line, the note (our key) and the fulfillment line
/// item it holds. Kept apart from the fulfillments so each query stays well under
/// Shopify's 1000-point cost limit.
const RETURNS_QUERY: &str = r#"query AftersalesReturns($id: ID!) {
  order(id: $id) {
    id
    returns(first: 10) {
      nodes {
        id
        status
        returnLineItems(first: 30) {
          nodes {
            quantity
            customerNote
            ... on ReturnLineItem { fulfillmentLineItem { id } }
          }
        }
      }
    }
  }
}"#;

/// The order's fulfillments with their fulfillment line items.
const FULFILLMENTS_QUERY: &str = r#"query AftersalesFulfilled($id: ID!) {
  order(id: $id) {
    id
    fulfillments(first: 10) {
      id
      status
      fulfillmentLineItems(first: 30) {
        nodes { id quantity lineItem { id } }
      }
    }
  }
}"#;

const RETURN_REQUEST: &str = r#"mutation AftersalesReturnRequest($input: ReturnRequestInput!) {
  returnRequest(input: $input) {
    return { id status }
    userErrors { field message code }
  }
}"#;

const RETURN_QUERY: &str = r#"query AftersalesReturn($id: ID!) {
  return(id: $id) { id status }
}"#;

const RETURN_APPROVE: &str = r#"mutation AftersalesReturnApprove($input: ReturnApproveRequestInput!) {
  returnApproveRequest(input: $input) {
    return { id status }
    userErrors { field message code }
  }
}"#;

const RETURN_DECLINE: &str = r#"mutation AftersalesReturnDecline($input: ReturnDeclineRequestInput!) {
  returnDeclineRequest(input: $input) {
    return { id status }
    userErrors { field message code }
  }
}"#;

const RETURN_CANCEL: &str = r#"mutation AftersalesReturnCancel($id: ID!) {
  returnCancel(id: $id) {
    return { id status }
    userErrors { field message code }
  }
}"#;

const CANCEL_STATE: &str = r#"query AftersalesCancelState($id: ID!) {
  order(id: $id) { id cancelledAt }
}"#;

const ORDER_CANCEL: &str = r#"mutation AftersalesCancel($orderId: ID!, $reason: OrderCancelReason!, $refundMethod: OrderCancelRefundMethodInput!, $restock: Boolean!, $notifyCustomer: Boolean!, $staffNote: String!) {
  orderCancel(orderId: $orderId, reason: $reason, refundMethod: $refundMethod, restock: $restock, notifyCustomer: $notifyCustomer, staffNote: $staffNote) {
    job { id done }
    orderCancelUserErrors { field message code }
  }
}"#;

const JOB_QUERY: &str = r#"query AftersalesJob($id: ID!) {
  job(id: $id) { id done }
}"#;

/// `ReturnRequestLineItemInput.customerNote` holds at most 300 characters.
const CUSTOMER_NOTE_MAX: usize = 300;
/// `ReturnDeclineRequestInput.declineNote` holds at most 500 characters.
const DECLINE_NOTE_MAX: usize = 500;
/// The staff note of a cancellation is kept short (Shopify shows it in the order timeline).
const STAFF_NOTE_MAX: usize = 255;
/// How many times `job(id:)` is asked after `orderCancel`.
const JOB_POLLS: u32 = 4;

// ---------------------------------------------------------------- answers

#[derive(Debug, Deserialize)]
struct Nodes<T> {
    nodes: Vec<T>,
}

#[derive(Debug, Deserialize)]
struct Id {
    id: String,
}

#[derive(Debug, Deserialize)]
struct ReturnsData {
    order: Option<SReturns>,
}

#[derive(Debug, Deserialize)]
struct SReturns {
    returns: Nodes<SReturn>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SReturn {
    id: String,
    status: String,
    return_line_items: Nodes<SReturnLine>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SReturnLine {
    quantity: u32,
    #[serde(default)]
    customer_note: Option<String>,
    #[serde(default)]
    fulfillment_line_item: Option<Id>,
}

#[derive(Debug, Deserialize)]
struct FulfilledData {
    order: Option<SFulfilled>,
}

#[derive(Debug, Deserialize)]
struct SFulfilled {
    #[serde(default)]
    fulfillments: Vec<SFulfillment>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SFulfillment {
    status: String,
    fulfillment_line_items: Nodes<SFulfillmentLine>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SFulfillmentLine {
    id: String,
    #[serde(default)]
    quantity: Option<u32>,
    line_item: Id,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReturnRequestData {
    return_request: Option<ReturnPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReturnApproveData {
    return_approve_request: Option<ReturnPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReturnDeclineData {
    return_decline_request: Option<ReturnPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReturnCancelData {
    return_cancel: Option<ReturnPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ReturnPayload {
    #[serde(default, rename = "return")]
    ret: Option<SReturnState>,
    #[serde(default)]
    user_errors: Vec<UserError>,
}

#[derive(Debug, Deserialize)]
struct ReturnData {
    #[serde(rename = "return")]
    ret: Option<SReturnState>,
}

#[derive(Debug, Deserialize)]
struct SReturnState {
    id: String,
    status: String,
}

#[derive(Debug, Deserialize)]
struct CancelStateData {
    order: Option<SCancelState>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SCancelState {
    #[serde(default)]
    cancelled_at: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderCancelData {
    order_cancel: Option<OrderCancelPayload>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderCancelPayload {
    #[serde(default)]
    job: Option<SJob>,
    #[serde(default)]
    order_cancel_user_errors: Vec<UserError>,
}

#[derive(Debug, Deserialize)]
struct JobData {
    job: Option<SJob>,
}

#[derive(Debug, Deserialize)]
struct SJob {
    id: String,
    done: bool,
}

// ---------------------------------------------------------------- helpers

/// A `LineItem` GID: `gid://shopify/LineItem/1` as is, `1` completed.
fn line_gid(id: &LineId) -> String {
    gid("LineItem", id.as_str())
}

/// A `Return` GID: `gid://shopify/Return/1` as is, `1` completed.
fn return_gid(id: &ReturnId) -> String {
    gid("Return", id.as_str())
}

fn gid(kind: &str, text: &str) -> String {
    if text.starts_with("gid://") {
        text.to_owned()
    } else {
        format!("gid://shopify/{kind}/{text}")
    }
}

/// The first `max` characters of `text`.
fn clip(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// A note that ends with `markers` whole, preceded by as much of `text` as fits in `max`
/// characters; `None` when the markers alone do not fit.
fn note_with_markers(text: Option<&str>, markers: &str, max: usize) -> Option<String> {
    let room = max.checked_sub(markers.chars().count())?;
    match text.map(str::trim).filter(|t| !t.is_empty()) {
        Some(t) if room > 1 => Some(format!("{} {markers}", clip(t, room - 1))),
        _ => Some(markers.to_owned()),
    }
}

/// Returns that still hold their units: requested, open (approved) or closed.
fn holds_units(status: &str) -> bool {
    !matches!(status, "DECLINED" | "CANCELED")
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// The cancel jobs this process started and has not seen finish, by idempotency key, so a
/// retry polls the same job instead of asking Shopify to cancel again.
#[derive(Debug, Default)]
pub(crate) struct PendingCancels(Mutex<HashMap<String, String>>);

impl PendingCancels {
    fn get(&self, key: &str) -> Option<String> {
        lock(&self.0).get(key).cloned()
    }

    fn put(&self, key: &str, job: &str) {
        lock(&self.0).insert(key.to_owned(), job.to_owned());
    }

    fn forget(&self, key: &str) {
        lock(&self.0).remove(key);
    }
}

/// How the job poll ended.
enum JobState {
    Done,
    Running,
    Unknown,
}

// ---------------------------------------------------------------- the actions

impl ShopifyOrders {
    /// `order.request_return`: `returnRequest`, once per key.
    pub(crate) async fn request_return_impl(
        &self,
        req: &RequestReturn,
        key: &IdempotencyKey,
    ) -> Result<RequestReturnOutput, AdapterError> {
        let action = "order.request_return";
        let gid = order_gid(&req.order_id);
        let marker = key_marker(key.as_str());
        let no_order = || {
            AdapterError::not_found(
                KIND,
                action,
                format!("Shopify has no order `{}`", req.order_id),
            )
        };

        // 1. An earlier attempt whose answer was lost: its return carries the key.
        let returns: ReturnsData = self
            .client
            .graphql(Call::Read(action), RETURNS_QUERY, json!({ "id": gid }))
            .await?;
        let returns = returns.order.ok_or_else(no_order)?.returns.nodes;
        if let Some(found) = returns.iter().find(|r| {
            r.return_line_items.nodes.iter().any(|l| {
                l.customer_note
                    .as_deref()
                    .is_some_and(|n| n.contains(&marker))
            })
        }) {
            return Ok(RequestReturnOutput {
                return_id: ReturnId::new(found.id.clone()),
            });
        }

        // 2. Map our lines to fulfilled fulfillment line items, net of what other returns
        //    already hold.
        if req.lines.is_empty() {
            return Err(AdapterError::permanent(
                KIND,
                action,
                "a return request needs at least one line",
            ));
        }
        let fulfilled: FulfilledData = self
            .client
            .graphql(Call::Read(action), FULFILLMENTS_QUERY, json!({ "id": gid }))
            .await?;
        let fulfillments = fulfilled.order.ok_or_else(no_order)?.fulfillments;
        let mut held: HashMap<String, u32> = HashMap::new();
        for r in returns.iter().filter(|r| holds_units(&r.status)) {
            for l in &r.return_line_items.nodes {
                if let Some(f) = &l.fulfillment_line_item {
                    *held.entry(f.id.clone()).or_insert(0) += l.quantity;
                }
            }
        }
        let markers = format!(
            "{marker} {SERVICE_ORDER_MARKER}{}]",
            req.service_order_id.as_str()
        );
        let note = note_with_markers(req.reason.as_deref(), &markers, CUSTOMER_NOTE_MAX)
            .ok_or_else(|| {
                AdapterError::permanent(
                    KIND,
                    action,
                    format!(
                        "the service order id `{}` is too long for a return's note",
                        req.service_order_id
                    ),
                )
            })?;
        let mut items = Vec::new();
        for line in &req.lines {
            if line.quantity == 0 {
                return Err(AdapterError::permanent(
                    KIND,
                    action,
                    format!("line {}: a return needs a positive quantity", line.line_id),
                ));
            }
            let wanted = line_gid(&line.line_id);
            let mut left = line.quantity;
            let mut fulfilled_total = 0u32;
            for f in fulfillments.iter().filter(|f| f.status == "SUCCESS") {
                for fli in f
                    .fulfillment_line_items
                    .nodes
                    .iter()
                    .filter(|fli| fli.line_item.id == wanted)
                {
                    let quantity = fli.quantity.unwrap_or(0);
                    fulfilled_total = fulfilled_total.saturating_add(quantity);
                    let taken = held.entry(fli.id.clone()).or_insert(0);
                    let free = quantity.saturating_sub(*taken);
                    let take = free.min(left);
                    if take == 0 {
                        continue;
                    }
                    *taken += take;
                    left -= take;
                    items.push(json!({
                        "fulfillmentLineItemId": fli.id,
                        "quantity": take,
                        "returnReason": "OTHER",
                        "customerNote": note,
                    }));
                }
            }
            if left > 0 {
                return Err(AdapterError::permanent(
                    KIND,
                    action,
                    format!(
                        "line {}: {} unit(s) asked, {} fulfilled, {} of them free of other returns",
                        line.line_id,
                        line.quantity,
                        fulfilled_total,
                        line.quantity - left
                    ),
                ));
            }
        }

        // 3. The request.
        let call = Call::Mutating(action);
        let data: ReturnRequestData = self
            .client
            .graphql(
                call,
                RETURN_REQUEST,
                json!({ "input": { "orderId": gid, "returnLineItems": items } }),
            )
            .await?;
        let payload = data.return_request.ok_or_else(|| {
            AdapterError::unknown_outcome(KIND, action, "Shopify answered without a payload")
        })?;
        check_user_errors(call, &payload.user_errors)?;
        match payload.ret {
            Some(r) => Ok(RequestReturnOutput {
                return_id: ReturnId::new(r.id),
            }),
            None => Err(AdapterError::unknown_outcome(
                KIND,
                action,
                "Shopify answered without the return: the retry looks for it by its note",
            )),
        }
    }

    /// The return's status, or a permanent error when Shopify has no such return.
    async fn return_status(
        &self,
        action: &'static str,
        id: &ReturnId,
    ) -> Result<String, AdapterError> {
        let data: ReturnData = self
            .client
            .graphql(
                Call::Read(action),
                RETURN_QUERY,
                json!({ "id": return_gid(id) }),
            )
            .await?;
        data.ret.map(|r| r.status).ok_or_else(|| {
            AdapterError::permanent(KIND, action, format!("Shopify has no return `{id}`"))
        })
    }

    /// After a refused transition: done when the return reached `target` meanwhile (a
    /// concurrent or earlier attempt), otherwise the refusal.
    async fn settle_refusal(
        &self,
        call: Call,
        id: &ReturnId,
        target: &str,
        errors: &[UserError],
    ) -> Result<(), AdapterError> {
        if self.return_status(call.action(), id).await? == target {
            Ok(())
        } else {
            Err(call.classify(user_errors(errors)))
        }
    }

    /// `order.approve_return`: `returnApproveRequest` from `REQUESTED`; `OPEN` is done.
    pub(crate) async fn approve_return_impl(
        &self,
        req: &ApproveReturn,
    ) -> Result<(), AdapterError> {
        let action = "order.approve_return";
        match self.return_status(action, &req.return_id).await?.as_str() {
            "OPEN" => return Ok(()),
            "REQUESTED" => {}
            other => {
                return Err(AdapterError::permanent(
                    KIND,
                    action,
                    format!(
                        "return {} is {other}: only a REQUESTED return can be approved",
                        req.return_id
                    ),
                ));
            }
        }
        let call = Call::Mutating(action);
        let data: ReturnApproveData = self
            .client
            .graphql(
                call,
                RETURN_APPROVE,
                json!({ "input": {
                    "id": return_gid(&req.return_id),
                    "notifyCustomer": self.notify_customer,
                } }),
            )
            .await?;
        self.transition_answer(call, &req.return_id, "OPEN", data.return_approve_request)
            .await
    }

    /// `order.decline_return`: `returnDeclineRequest` from `REQUESTED`; `DECLINED` (or
    /// `CANCELED`) is done. An approved (`OPEN`) return is cancelled with `returnCancel`
    /// instead: that is the compensation of `request_return` after an approval, and Shopify
    /// cancels a return only before any work is done on it (nothing received or refunded).
    pub(crate) async fn decline_return_impl(
        &self,
        req: &DeclineReturn,
    ) -> Result<(), AdapterError> {
        let action = "order.decline_return";
        match self.return_status(action, &req.return_id).await?.as_str() {
            "DECLINED" | "CANCELED" => return Ok(()),
            "OPEN" => {
                let call = Call::Mutating(action);
                let data: ReturnCancelData = self
                    .client
                    .graphql(
                        call,
                        RETURN_CANCEL,
                        json!({ "id": return_gid(&req.return_id) }),
                    )
                    .await?;
                return self
                    .transition_answer(call, &req.return_id, "CANCELED", data.return_cancel)
                    .await;
            }
            "REQUESTED" => {}
            other => {
                return Err(AdapterError::permanent(
                    KIND,
                    action,
                    format!(
                        "return {} is {other}: Shopify declines only a REQUESTED return \
                         and cancels only an OPEN one",
                        req.return_id
                    ),
                ));
            }
        }
        let mut input = json!({
            "id": return_gid(&req.return_id),
            "declineReason": "OTHER",
            "notifyCustomer": self.notify_customer,
        });
        if let Some(reason) = req
            .reason
            .as_deref()
            .map(str::trim)
            .filter(|r| !r.is_empty())
        {
            input["declineNote"] = Value::String(clip(reason, DECLINE_NOTE_MAX));
        }
        let call = Call::Mutating(action);
        let data: ReturnDeclineData = self
            .client
            .graphql(call, RETURN_DECLINE, json!({ "input": input }))
            .await?;
        self.transition_answer(
            call,
            &req.return_id,
            "DECLINED",
            data.return_decline_request,
        )
        .await
    }

    async fn transition_answer(
        &self,
        call: Call,
        id: &ReturnId,
        target: &str,
        payload: Option<ReturnPayload>,
    ) -> Result<(), AdapterError> {
        let action = call.action();
        let payload = payload.ok_or_else(|| {
            AdapterError::unknown_outcome(KIND, action, "Shopify answered without a payload")
        })?;
        if !payload.user_errors.is_empty() {
            return self
                .settle_refusal(call, id, target, &payload.user_errors)
                .await;
        }
        match payload.ret {
            Some(r) if r.status == target => Ok(()),
            Some(r) => Err(AdapterError::unknown_outcome(
                KIND,
                action,
                format!(
                    "Shopify answered return {} as {}, not {target}: the retry reads it again",
                    r.id, r.status
                ),
            )),
            None => Err(AdapterError::unknown_outcome(
                KIND,
                action,
                "Shopify answered without the return: the retry reads its status",
            )),
        }
    }

    /// Whether the order is cancelled (`cancelledAt` set).
    async fn is_cancelled(
        &self,
        action: &'static str,
        order: &OrderId,
    ) -> Result<bool, AdapterError> {
        let data: CancelStateData = self
            .client
            .graphql(
                Call::Read(action),
                CANCEL_STATE,
                json!({ "id": order_gid(order) }),
            )
            .await?;
        let order = data.order.ok_or_else(|| {
            AdapterError::not_found(KIND, action, format!("Shopify has no order `{order}`"))
        })?;
        Ok(order.cancelled_at.is_some())
    }

    /// Polls `job(id:)` up to [`JOB_POLLS`] times, the whole wait bounded by the timeout.
    async fn wait_for_job(
        &self,
        action: &'static str,
        job: &str,
        mut done: bool,
    ) -> Result<JobState, AdapterError> {
        let delay = self.job_poll_delay();
        let mut polls = 0;
        while !done && polls < JOB_POLLS {
            tokio::time::sleep(delay).await;
            polls += 1;
            let data: JobData = self
                .client
                .graphql(Call::Read(action), JOB_QUERY, json!({ "id": job }))
                .await?;
            match data.job {
                Some(j) => done = j.done,
                None => return Ok(JobState::Unknown),
            }
        }
        Ok(if done {
            JobState::Done
        } else {
            JobState::Running
        })
    }

    fn job_poll_delay(&self) -> Duration {
        (self.timeout / JOB_POLLS).min(Duration::from_millis(500))
    }

    /// After the job: cancelled is done; a job still running is transient (the retry
    /// starts from `cancelledAt` and polls the same job); a finished job that did not cancel
    /// is permanent.
    async fn after_job(
        &self,
        action: &'static str,
        req: &CancelOrder,
        key: &IdempotencyKey,
        job: &str,
        state: JobState,
    ) -> Result<(), AdapterError> {
        if self.is_cancelled(action, &req.order_id).await? {
            self.pending.forget(key.as_str());
            return Ok(());
        }
        match state {
            JobState::Running => Err(AdapterError::transient(
                KIND,
                action,
                format!("Shopify's cancel job {job} is still running"),
            )),
            JobState::Unknown => {
                self.pending.forget(key.as_str());
                Err(AdapterError::transient(
                    KIND,
                    action,
                    format!(
                        "Shopify does not know the cancel job {job}; the order is not cancelled yet"
                    ),
                ))
            }
            JobState::Done => {
                self.pending.forget(key.as_str());
                Err(AdapterError::permanent(
                    KIND,
                    action,
                    format!(
                        "Shopify's cancel job {job} finished but the order {} is not cancelled",
                        req.order_id
                    ),
                ))
            }
        }
    }

    /// `order.cancel`: `orderCancel` without a refund, then its job.
    pub(crate) async fn cancel_impl(
        &self,
        req: &CancelOrder,
        key: &IdempotencyKey,
    ) -> Result<(), AdapterError> {
        let action = "order.cancel";
        if self.is_cancelled(action, &req.order_id).await? {
            self.pending.forget(key.as_str());
            return Ok(());
        }
        // A job this process started for the same key: wait for it, do not cancel again.
        if let Some(job) = self.pending.get(key.as_str()) {
            let state = self.wait_for_job(action, &job, false).await?;
            return self.after_job(action, req, key, &job, state).await;
        }
        let markers = format!(
            "{} {SERVICE_ORDER_MARKER}{}]",
            key_marker(key.as_str()),
            req.service_order_id.as_str()
        );
        let text = format!(
            "aftersales cancel for service order {}{}",
            req.service_order_id,
            req.reason
                .as_deref()
                .map(str::trim)
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
        let staff_note =
            note_with_markers(Some(&text), &markers, STAFF_NOTE_MAX).unwrap_or_else(|| {
                // Markers too long to fit: the note is only for people; keep the key.
                clip(&key_marker(key.as_str()), STAFF_NOTE_MAX)
            });
        let call = Call::Mutating(action);
        let data: OrderCancelData = self
            .client
            .graphql(
                call,
                ORDER_CANCEL,
                json!({
                    "orderId": order_gid(&req.order_id),
                    "reason": "CUSTOMER",
                    // Never a refund here: the line's payment adapter pays the buyer back.
                    "refundMethod": { "originalPaymentMethodsRefund": false },
                    "restock": true,
                    "notifyCustomer": self.notify_customer,
                    "staffNote": staff_note,
                }),
            )
            .await?;
        let payload = data.order_cancel.ok_or_else(|| {
            AdapterError::unknown_outcome(KIND, action, "Shopify answered without a payload")
        })?;
        if !payload.order_cancel_user_errors.is_empty() {
            // "Already cancelled" and its kin: the order tells.
            if self.is_cancelled(action, &req.order_id).await? {
                return Ok(());
            }
            return Err(call.classify(user_errors(&payload.order_cancel_user_errors)));
        }
        let Some(job) = payload.job else {
            if self.is_cancelled(action, &req.order_id).await? {
                return Ok(());
            }
            return Err(AdapterError::unknown_outcome(
                KIND,
                action,
                "Shopify answered without a cancel job: the retry reads the order first",
            ));
        };
        self.pending.put(key.as_str(), &job.id);
        let state = self.wait_for_job(action, &job.id, job.done).await?;
        self.after_job(action, req, key, &job.id, state).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notes_keep_the_markers_whole() {
        let markers = "[aftersales-key:k-1] [aftersales-so:so-1]";
        assert_eq!(
            note_with_markers(Some("  too small "), markers, 300).as_deref(),
            Some("too small [aftersales-key:k-1] [aftersales-so:so-1]")
        );
        assert_eq!(
            note_with_markers(None, markers, 300).as_deref(),
            Some(markers)
        );
        let long = "x".repeat(400);
        let note = note_with_markers(Some(&long), markers, 300).unwrap_or_default();
        assert_eq!(note.chars().count(), 300);
        assert!(note.ends_with(markers));
        assert_eq!(note_with_markers(Some("a"), markers, 10), None);
    }

    #[test]
    fn ids_become_gids() {
        assert_eq!(line_gid(&LineId::new("12")), "gid://shopify/LineItem/12");
        assert_eq!(
            return_gid(&ReturnId::new("gid://shopify/Return/9")),
            "gid://shopify/Return/9"
        );
        assert!(holds_units("REQUESTED") && holds_units("OPEN") && holds_units("CLOSED"));
        assert!(!holds_units("DECLINED") && !holds_units("CANCELED"));
    }
}
